/*  refract-gateway — the HTTP edge and bus broker.
 *
 *    refract-gateway -c conf/refract.yaml       run
 *    refract-gateway -t -c conf/refract.yaml    validate the config and exit
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw.h"
#include "gw_origin_tls.h"
#include "rf_log.h"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: refract-gateway [-t] -c FILE\n"
                 "  -c FILE  the refract YAML configuration (see conf/refract.yaml)\n"
                 "  -t       validate the configuration and exit (0 = valid, 1 = invalid)\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int test_only = 0, opt;
    while ((opt = getopt(argc, argv, "c:th")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': test_only = 1; break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (path == NULL) {
        s_usage(stderr);
        return 2;
    }
    rf_log_init("gateway");
    char *err = NULL;
    rf_config_t *cfg = rf_config_load(path, &err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err ? err : "invalid configuration");
        free(err);
        return 1;
    }
    if (cfg->gateway.listen.port == 0) {
        fprintf(stderr, "%s:1:1: gateway.listen is required\n", path);
        rf_config_destroy(&cfg);
        return 1;
    }
    if (cfg->n_vhosts == 0) {
        fprintf(stderr, "%s:1:1: the gateway needs at least one entry in vhosts\n", path);
        rf_config_destroy(&cfg);
        return 1;
    }
    if (test_only) {
        /* Load what a start would: https origins' TLS files (CA, client
         * certificate and key), then the vhost table with the gateway's
         * own certificates. */
        for (size_t i = 0; i < cfg->n_vhosts; i++) {
            const rf_vhost_conf_t *vh = &cfg->vhosts[i];
            const char *why = NULL;
            if (vh->origin.https && gw_origin_tls_get(&vh->origin, &why) == NULL) {
                fprintf(stderr, "%s: vhost '%s': origin %s\n", path, vh->name, why ? why : "cannot be set up");
                rf_config_destroy(&cfg);
                return 1;
            }
        }
        size_t n = cfg->n_vhosts;
        gw_vhosts_t *v = gw_vhosts_new(&cfg, &err);
        if (v == NULL) {
            fprintf(stderr, "%s: %s\n", path, err ? err : "invalid configuration");
            free(err);
            return 1;
        }
        gw_vhosts_unref(&v);
        printf("%s: configuration OK (%zu vhost%s)\n", path, n, n == 1 ? "" : "s");
        return 0;
    }
    rf_log_set_level(cfg->log.level);
    return gw_server_run(path, &cfg);
}
