/*  sg_snap — the file a batch scan keeps of what its last run listed
 *  (sg_scan.c): one record per key, "SIZE MTIME_NS KEYLEN KEY\n".
 *
 *  The key is preceded by its length because a local file name may hold
 *  any byte but '/' and NUL — spaces first or last, newlines — and must
 *  come back as it was. The file is the scheduler's own, but a damaged or
 *  planted one must only ever read as "damaged": reading is a pure
 *  function over a FILE (no other I/O), so tests/unit/test_sgsnap.c and
 *  fuzz/fuzz_sgsnap.c reach it through fmemopen.
 */
#ifndef SG_SNAP_H
#define SG_SNAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Called per record read, key borrowed (NUL-terminated, 1..key_max
 * bytes, no NUL inside). Returns 0, or -1 to stop the read (an error). */
typedef int(sg_snap_add_fn)(void *arg, const char *key, uint64_t size, int64_t mtime_ns);

/* Reads records from f (borrowed) until its end, handing each to add.
 * Returns the count read, or -1 when the file is damaged (a record not
 * of the form, a key longer than key_max, more than max records) or add
 * failed: the records handed out so far are then not to be used. */
long sg_snap_read(FILE *f, size_t key_max, size_t max, sg_snap_add_fn *add, void *arg);

/* Writes one record to f (borrowed); key NUL-terminated, not empty.
 * Returns 0, or -1 on a write error. */
int sg_snap_write(FILE *f, const char *key, uint64_t size, int64_t mtime_ns);

#endif
