/*  libFuzzer target for common/rf_http: Range values and token lists come
 *  straight from clients and origins. Besides memory safety it checks that
 *  a Range the policy forwards really is sane — at most RF_RANGE_MAX ranges,
 *  "bytes=" — that every refusal says why, and that a token found in a list
 *  is one of its elements. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rf_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *v = (const char *)data, *why = "unset";
    rf_range_verdict_t r = rf_http_range_check(v, size, &why);
    if (r == RF_RANGE_FORWARD) {
        if (why != NULL)
            abort();
        size_t i = 0;
        while (i < size && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (size - i < 6 || strncasecmp(v + i, "bytes=", 6) != 0)
            abort();
        size_t n = rf_http_count_tokens(v + i + 6, size - i - 6);
        if (n == 0 || n > RF_RANGE_MAX)
            abort();
    } else if (r != RF_RANGE_IGNORE || why == NULL || why[0] == '\0') {
        abort();
    }
    /* a token found must be exactly an element: present as a substring */
    if (rf_http_has_token(v, size, "chunked")) {
        int seen = 0;
        for (size_t i = 0; i + 7 <= size; i++)
            seen |= strncasecmp(v + i, "chunked", 7) == 0;
        if (!seen)
            abort();
    }
    return 0;
}
