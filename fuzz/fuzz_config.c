/*  libFuzzer target for common/rf_config: any byte string given as the
 *  configuration must either load or fail with a "name:line:col: message"
 *  error, without crashing or leaking. The value parsers are run on the
 *  input as well. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rf_config.h"

#define NAME "fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *err = NULL;
    rf_config_t *cfg = rf_config_load_string((const char *)data, size, NAME, &err);
    if (cfg != NULL) {
        /* what every caller relies on after a successful load */
        if (cfg->bus.endpoint == NULL || cfg->bus.n_connect == 0 || (cfg->n_vhosts > 0) != (cfg->vhosts != NULL) ||
            cfg->gateway.cache_dir == NULL || cfg->image_worker.jobs < 0 || cfg->image_worker.jobs > 256)
            abort();
        for (size_t i = 0; i < cfg->n_vhosts; i++)
            if (cfg->vhosts[i].name == NULL || cfg->vhosts[i].dims.keyword == NULL || cfg->vhosts[i].origin.url == NULL)
                abort();
        rf_config_destroy(&cfg);
        if (cfg != NULL)
            abort();
    } else {
        if (err == NULL || strncmp(err, NAME ":", sizeof(NAME)) != 0)
            abort();
        free(err);
    }

    /* the value parsers take NUL-terminated text */
    if (size <= 512) {
        char text[513];
        memcpy(text, data, size);
        text[size] = '\0';
        size_t bytes;
        int ms;
        rf_size_parse(text, &bytes);
        rf_duration_parse(text, &ms);
        rf_listen_t l = {NULL, 0};
        if (rf_listen_parse(text, &l) == 0 && (l.host == NULL || l.port < 0 || l.port > 65535))
            abort();
        free(l.host);
        rf_origin_t o;
        const char *why = NULL;
        if (rf_origin_parse(text, &o, &why) == 0) {
            if (o.url == NULL || (o.kind == RF_ORIGIN_HTTP && (o.host == NULL || o.prefix == NULL)) ||
                (o.kind == RF_ORIGIN_FILE && (o.dir == NULL || o.dir[0] != '/')))
                abort();
            rf_origin_clear(&o);
        } else if (why == NULL) {
            abort();
        }
    }
    return 0;
}
