/*  libFuzzer target for common/rf_chain: the request path and the chain text
 *  come straight from clients. Besides memory safety it checks the two
 *  round trips the gateway and the worker rely on:
 *    parse → to_json → from_json  gives the same chain, and
 *    parse → format  → parse      gives the same chain (canonical text),
 *  and abort()s when either breaks. Presets and a byoriginal rule set are
 *  configured, so their expansion is fuzzed too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_chain.h"


/* Names the fuzzer's chains may use. */
static const rf_preset_t s_presets[] = {{"card", "thumbnail/300x200/gravity/smart/format/webp"},
                                        {"bad", "resize/0"},
                                        {"deep", "preset/card"}};
static rf_byorig_t s_sets[1];
static rf_chain_ctx_t s_ctx;

static void s_init(void)
{
    if (s_ctx.n_byorig != 0)
        return;
    rf_byorig_t *b = &s_sets[0];
    snprintf(b->name, sizeof(b->name), "limit-1200");
    b->n = 2;
    b->rules[0].max_width = 1200;
    snprintf(b->rules[0].chain, sizeof(b->rules[0].chain), "/optimize");
    snprintf(b->rules[1].chain, sizeof(b->rules[1].chain), "/resize/1024x768/optimize");
    s_ctx = (rf_chain_ctx_t){.presets = s_presets, .n_presets = 3, .byorig = s_sets, .n_byorig = 1};
}

static void s_check(const char *text, size_t len)
{
    rf_chain_t c;
    char why[512];
    why[0] = '\0';
    if (rf_chain_parse(text, len, &s_ctx, &c, why, sizeof(why)) != 0) {
        if (why[0] == '\0') /* every rejection says why */
            abort();
        return;
    }
    if (c.n == 0 || c.n > RF_CHAIN_MAX_OPS)
        abort();

    json_t *j = rf_chain_to_json(&c);
    if (j == NULL)
        abort();
    rf_chain_t from_json;
    if (rf_chain_from_json(j, &from_json, why, sizeof(why)) != 0) {
        fprintf(stderr, "from_json rejected to_json's output: %s\n", why);
        abort();
    }
    json_decref(j);
    if (!rf_chain_equal(&c, &from_json))
        abort();

    char buf[1024], again[1024];
    if (rf_chain_format(&c, buf, sizeof(buf)) != 0)
        abort();
    rf_chain_t reparsed;
    if (rf_chain_parse(buf, strlen(buf), &s_ctx, &reparsed, why, sizeof(why)) != 0) {
        fprintf(stderr, "canonical text '%s' does not parse: %s\n", buf, why);
        abort();
    }
    if (!rf_chain_equal(&c, &reparsed))
        abort();
    /* negotiating format/auto keeps every property above */
    if (rf_chain_has_auto(&c)) {
        rf_chain_negotiate(&c, text, len);
        if (rf_chain_format(&c, buf, sizeof(buf)) != 0 ||
            rf_chain_parse(buf, strlen(buf), &s_ctx, &reparsed, why, sizeof(why)) != 0 || !rf_chain_equal(&c, &reparsed))
            abort();
    }
    /* the canonical form is a fixed point */
    if (rf_chain_format(&reparsed, again, sizeof(again)) != 0 || strcmp(buf, again) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *src, *chain;
    s_init();
    size_t src_len, chain_len;

    /* the input as a request path */
    if (rf_chain_split(text, size, "dims", &src, &src_len, &chain, &chain_len)) {
        if (src != text || src_len == 0 || src_len >= size || chain < text || chain + chain_len != text + size)
            abort();
        if (chain_len > 0 && chain[-1] != '/')
            abort();
        s_check(chain, chain_len);
    }
    /* and as a chain on its own */
    s_check(text, size);
    return 0;
}
