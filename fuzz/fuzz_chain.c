/*  libFuzzer target for common/rf_chain: the request path and the chain text
 *  come straight from clients. Besides memory safety it checks the two
 *  round trips the gateway and the worker rely on:
 *    parse → to_json → from_json  gives the same chain, and
 *    parse → format  → parse      gives the same chain (canonical text),
 *  and abort()s when either breaks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_chain.h"

static int s_same(const rf_chain_t *a, const rf_chain_t *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const rf_op_t *x = &a->ops[i], *y = &b->ops[i];
        if (x->kind != y->kind || x->w != y->w || x->h != y->h || x->format != y->format || x->quality != y->quality)
            return 0;
    }
    return 1;
}

static void s_check(const char *text, size_t len)
{
    rf_chain_t c;
    char why[128];
    why[0] = '\0';
    if (rf_chain_parse(text, len, &c, why, sizeof(why)) != 0) {
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
    if (!s_same(&c, &from_json))
        abort();

    char buf[1024], again[1024];
    if (rf_chain_format(&c, buf, sizeof(buf)) != 0)
        abort();
    rf_chain_t reparsed;
    if (rf_chain_parse(buf, strlen(buf), &reparsed, why, sizeof(why)) != 0) {
        fprintf(stderr, "canonical text '%s' does not parse: %s\n", buf, why);
        abort();
    }
    if (!s_same(&c, &reparsed))
        abort();
    /* the canonical form is a fixed point */
    if (rf_chain_format(&reparsed, again, sizeof(again)) != 0 || strcmp(buf, again) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *src, *chain;
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
