/*  libFuzzer target for common/rf_path: request paths come straight from
 *  clients. Besides memory safety it checks the properties the gateway
 *  relies on, and abort()s when one breaks:
 *    - the canonical form is never longer than the input and is a fixed
 *      point (canonicalising it again changes nothing);
 *    - it begins with '/', holds no control byte, no backslash, no "."
 *      or ".." segment and no %2F / %5C, so no spelling climbs a prefix;
 *    - decoding it yields no NUL, control byte or new '/' separator. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rf_path.h"

static void s_check_segments(const char *p, size_t n)
{
    size_t start = 1;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t l = i - start;
            if ((l == 1 && p[start] == '.') || (l == 2 && p[start] == '.' && p[start + 1] == '.'))
                abort();
            start = i + 1;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > RF_PATH_MAX + 16)
        return 0;
    char *out = malloc(size + 1), *again = malloc(size + 1), *dec = malloc(size + 1);
    const char *why = NULL;
    ssize_t n = rf_path_canon((const char *)data, size, out, &why);
    if (n < 0) {
        if (why == NULL || why[0] == '\0')
            abort();
        goto done;
    }
    if ((size_t)n > size || out[0] != '/' || out[n] != '\0' || strlen(out) != (size_t)n)
        abort();
    for (ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            abort();
        if (c == '%' && (i + 2 >= n || (out[i + 1] == '2' && out[i + 2] == 'F') || (out[i + 1] == '5' && out[i + 2] == 'C')))
            abort();
    }
    s_check_segments(out, (size_t)n);
    ssize_t m = rf_path_canon(out, (size_t)n, again, &why);
    if (m != n || memcmp(out, again, (size_t)n) != 0)
        abort();
    size_t slashes = 0, dslashes = 0;
    for (ssize_t i = 0; i < n; i++)
        slashes += out[i] == '/';
    size_t d = rf_path_decode(out, (size_t)n, dec);
    for (size_t i = 0; i < d; i++) {
        unsigned char c = (unsigned char)dec[i];
        if (c < 0x20 || c == 0x7f)
            abort();
        dslashes += c == '/';
    }
    if (dslashes != slashes)
        abort();
done:
    free(out);
    free(again);
    free(dec);
    return 0;
}
