/*  libFuzzer target for common/rf_cron: schedules come from the storgate
 *  configuration. The input is 8 bytes of start time (little-endian; bit 63
 *  selects local time, here Europe/Berlin, bit 62 the whole range to 9999
 *  instead of 1970-2100) followed by the expression text. Besides memory
 *  safety it checks that every refusal has a one-line printable reason,
 *  that the NUL-terminated and (pointer, length) parsers agree, that the
 *  sets stay in their ranges, and that rf_cron_next(after) is later than
 *  after, matches, and — when under 3 days away — has no matching minute
 *  before it (brute force); with no next run, nothing matches in 3 days. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rf_cron.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("TZ", "Europe/Berlin", 1);
    tzset();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)data[i] << (8 * i);
    bool utc = !(v >> 63);
    uint64_t rest = v & ((UINT64_C(1) << 62) - 1);
    int64_t after = (int64_t)(v >> 62 & 1 ? rest % (uint64_t)(RF_CRON_TIME_MAX + 1) : rest % UINT64_C(4102444800));
    const char *text = (const char *)data + 8;
    size_t len = size - 8;

    rf_cron_t c, c2;
    char why[200], why2[200];
    memset(why, 'Z', sizeof(why));
    int rc = rf_cron_parse_n(text, len, &c, why, sizeof(why));
    if (rc != 0) {
        size_t n = strnlen(why, sizeof(why));
        if (rc != -1 || n == 0 || n == sizeof(why))
            abort();
        for (size_t i = 0; i < n; i++)
            if (why[i] < 0x20 || why[i] > 0x7e)
                abort();
    }
    /* the NUL-terminated entry point agrees when there is no NUL inside */
    if (memchr(text, '\0', len) == NULL) {
        char *z = malloc(len + 1);
        memcpy(z, text, len);
        z[len] = '\0';
        int rc2 = rf_cron_parse(z, &c2, why2, sizeof(why2));
        free(z);
        if (rc2 != rc || (rc == 0 && memcmp(&c, &c2, sizeof(c)) != 0) || (rc != 0 && strcmp(why, why2) != 0))
            abort();
    }
    if (rc != 0)
        return 0;
    if ((c.minute >> 60) != 0 || (c.hour >> 24) != 0 || (c.dom & 1) != 0 || (c.month & ~UINT32_C(0x1ffe)) != 0 ||
        (c.dow & 0x80) != 0 || c.minute == 0 || c.hour == 0 || c.dom == 0 || c.month == 0 || c.dow == 0)
        abort();

    int64_t next = rf_cron_next(&c, after, utc);
    const int64_t three_days = 3 * 86400;
    if (next != -1) {
        if (next <= after || next > RF_CRON_TIME_MAX || !rf_cron_matches(&c, next, utc))
            abort();
        if (rf_cron_next(&c, next - 1, utc) != next) /* stable */
            abort();
        if (next - after < three_days)
            for (int64_t t = after - after % 60 + 60; t < next; t += 60)
                if (rf_cron_matches(&c, t, utc))
                    abort();
    } else if (after + three_days <= RF_CRON_TIME_MAX) {
        for (int64_t t = after - after % 60 + 60; t <= after + three_days; t += 60)
            if (rf_cron_matches(&c, t, utc))
                abort();
    }
    return 0;
}
