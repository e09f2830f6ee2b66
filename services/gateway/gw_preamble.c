#include "gw_preamble.h"

#include <jansson.h>
#include <string.h>

/* Copies o[name] into dst[cap] as one printable line: control bytes
 * become spaces (a worker's value must not split the header). Missing or
 * not a string: dst stays "". */
static void s_copy(char *dst, size_t cap, const json_t *o, const char *name)
{
    dst[0] = '\0';
    const char *v = json_string_value(json_object_get(o, name));
    if (v == NULL)
        return;
    size_t i = 0;
    for (; v[i] != '\0' && i + 1 < cap; i++)
        dst[i] = (unsigned char)v[i] < 0x20 || v[i] == 0x7f ? ' ' : v[i];
    dst[i] = '\0';
}

int gw_preamble_read(const char *buf, size_t n, uint64_t size, gw_preamble_t *out)
{
    if (n > GW_PREAMBLE_MAX)
        n = GW_PREAMBLE_MAX;
    const char *nl = memchr(buf, '\n', n);
    if (nl == NULL) /* the line may still be coming, unless it is already too long */
        return size >= GW_PREAMBLE_MAX ? -1 : 0;
    json_t *j = json_loadb(buf, (size_t)(nl - buf), 0, NULL); /* JSON_ALLOW_NUL not set: no NUL in a value */
    int rc = -1;
    if (!json_is_object(j))
        goto done;
    s_copy(out->ctype, sizeof(out->ctype), j, "content_type");
    if (out->ctype[0] == '\0' || out->ctype[0] == ' ')
        goto done;
    const json_t *src = json_object_get(j, "source"); /* NULL or not an object: no freshness given */
    s_copy(out->cc, sizeof(out->cc), src, "cache_control");
    s_copy(out->ex, sizeof(out->ex), src, "expires");
    s_copy(out->lm, sizeof(out->lm), src, "last_modified");
    out->body_at = (uint64_t)(nl - buf) + 1;
    rc = 1;
done:
    json_decref(j);
    return rc;
}
