/*  libFuzzer target for services/storgate-scheduler/sg_snap.c: the file a
 *  batch scan keeps of what its last run listed. A damaged file (a crash
 *  mid-write on a filesystem without ordered writes, a hand edit) must
 *  read as damaged, never as a different list.
 *
 *  Input: the file's bytes, read with a key bound of 64 and at most 256
 *  records. Besides memory safety (and leaks) it abort()s when:
 *    - the count is below -1, or does not match the records handed out;
 *    - a key handed out is empty, longer than 64 or holds a NUL;
 *    - a file read whole (count >= 0), written again record by record,
 *      is not byte-identical to the input (the format has one spelling
 *      per list, so anything else accepted is a second reading of it);
 *    - reading again gives another answer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_snap.h"

#define KEY_MAX 64
#define MAX 256

typedef struct {
    FILE *out; /* the records written again */
    long n;
} s_state_t;

static int s_add(void *arg, const char *key, uint64_t size, int64_t mtime_ns)
{
    s_state_t *st = arg;
    size_t klen = strlen(key);
    if (klen == 0 || klen > KEY_MAX)
        abort();
    st->n++;
    return sg_snap_write(st->out, key, size, mtime_ns);
}

static long s_read(const uint8_t *data, size_t size, char **again, size_t *again_len, long *handed)
{
    FILE *f = fmemopen((void *)data, size, "r");
    if (f == NULL)
        abort();
    s_state_t st = {.out = open_memstream(again, again_len)};
    if (st.out == NULL)
        abort();
    long n = sg_snap_read(f, KEY_MAX, MAX, s_add, &st);
    fclose(f);
    fclose(st.out);
    *handed = st.n;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) /* fmemopen needs a size */
        return 0;
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    long ha, hb;
    long n = s_read(data, size, &a, &alen, &ha);
    if (n < -1 || (n >= 0 && n != ha))
        abort();
    if (n >= 0 && (alen != size || memcmp(a, data, size) != 0))
        abort();
    long m = s_read(data, size, &b, &blen, &hb);
    if (m != n || hb != ha)
        abort();
    free(a);
    free(b);
    return 0;
}
