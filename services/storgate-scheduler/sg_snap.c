#include "sg_snap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The longest number a record holds: 2^64 has 20 digits. */
#define SG_SNAP_DIGITS 20

/* Reads a decimal number ended by one space: [-]digits (the sign only
 * where neg), as printf writes it: no leading zero, no "-0", so that a
 * list has one spelling. 1 read into *v, 0 at a clean end of file (nothing read),
 * -1 malformed (no digit, too many, an overflow, another byte). */
static int s_num(FILE *f, bool neg, uint64_t max, uint64_t *v, bool *minus)
{
    int c = getc(f);
    if (c == EOF)
        return 0;
    *minus = false;
    if (neg && c == '-') {
        *minus = true;
        c = getc(f);
    }
    uint64_t n = 0;
    int digits = 0;
    for (; c >= '0' && c <= '9'; c = getc(f)) {
        uint64_t d = (uint64_t)(c - '0');
        if ((digits == 1 && n == 0) || ++digits > SG_SNAP_DIGITS || d > max || n > (max - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    if (digits == 0 || c != ' ' || (*minus && n == 0))
        return -1;
    *v = n;
    return 1;
}

/* One record: 1 read, 0 at the end, -1 damaged. key holds key_max + 2. */
static int s_record(FILE *f, size_t key_max, char *key, uint64_t *size, int64_t *mtime_ns)
{
    uint64_t mt, klen;
    bool unused, minus;
    int r = s_num(f, false, UINT64_MAX, size, &unused);
    if (r <= 0)
        return r;
    if (s_num(f, true, (uint64_t)INT64_MAX, &mt, &minus) != 1 || s_num(f, false, key_max, &klen, &unused) != 1)
        return -1;
    if (klen == 0 || fread(key, 1, (size_t)klen + 1, f) != klen + 1 || key[klen] != '\n' ||
        memchr(key, '\0', (size_t)klen) != NULL)
        return -1;
    key[klen] = '\0';
    *mtime_ns = minus ? -(int64_t)mt : (int64_t)mt;
    return 1;
}

long sg_snap_read(FILE *f, size_t key_max, size_t max, sg_snap_add_fn *add, void *arg)
{
    char *key = malloc(key_max + 2);
    if (key == NULL)
        return -1;
    long count = 0;
    for (;;) {
        uint64_t size = 0;
        int64_t mtime_ns = 0; /* set when r == 1 (gcc -O1 cannot tell) */
        int r = s_record(f, key_max, key, &size, &mtime_ns);
        if (r == 0)
            break;
        if (r < 0 || (size_t)count >= max || add(arg, key, size, mtime_ns) < 0) {
            count = -1;
            break;
        }
        count++;
    }
    if (ferror(f))
        count = -1;
    free(key);
    return count;
}

int sg_snap_write(FILE *f, const char *key, uint64_t size, int64_t mtime_ns)
{
    size_t klen = strlen(key);
    if (fprintf(f, "%llu %lld %zu ", (unsigned long long)size, (long long)mtime_ns, klen) < 0 ||
        fwrite(key, 1, klen, f) != klen || putc('\n', f) == EOF)
        return -1;
    return 0;
}
