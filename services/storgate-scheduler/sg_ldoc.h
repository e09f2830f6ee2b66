/*  sg_ldoc — the object an https:// leader lease keeps on S3 (sg_leader.c):
 *  who holds the lease, its fencing token and end, and every batch's
 *  progress, in one object so that one conditional PUT writes them
 *  together.
 *
 *      refract-lease 1\n
 *      lease NODE TOKEN EXPIRES_MS\n          (NODE "-": given up)
 *      progress NAME LEN\n LEN bytes \n        (one per batch, any order)
 *
 *  The object sits on a service others may write to, so reading it is a
 *  pure, strict function (one spelling per document, every count and
 *  length bounded): tests/unit/test_sgldoc.c and fuzz/fuzz_sgldoc.c.
 */
#ifndef SG_LDOC_H
#define SG_LDOC_H

#include <stddef.h>
#include <stdint.h>

#define SG_LDOC_MAX (1 << 20)   /* the whole object */
#define SG_LDOC_ENTRIES 1024    /* progress records */
#define SG_LDOC_TEXT (64 << 10) /* one record's text */
#define SG_LDOC_NAME 127        /* a node's or a batch's name */

typedef struct {
    char node[SG_LDOC_NAME + 1];
    uint64_t token;
    int64_t expires; /* ms since the epoch; 0: given up */
    size_t n;
    char *name[SG_LDOC_ENTRIES], *text[SG_LDOC_ENTRIES]; /* owned */
} sg_ldoc_t;

/* Frees the records and empties d. */
void sg_ldoc_clear(sg_ldoc_t *d);
/* Sets batch name's progress to text (both copied): name 1..127 bytes
 * with no space, newline or NUL; text at most SG_LDOC_TEXT bytes.
 * 0, or -1 (errno E2BIG: a bound, EINVAL: the name, ENOMEM). */
int sg_ldoc_set(sg_ldoc_t *d, const char *name, const char *text);
/* Batch name's progress (borrowed), or NULL. */
const char *sg_ldoc_get(const sg_ldoc_t *d, const char *name);
/* The object's bytes (malloc'd, *len), or NULL (ENOMEM). */
char *sg_ldoc_text(const sg_ldoc_t *d, size_t *len);
/* Reads len bytes into d (empty; sg_ldoc_clear it after, either way).
 * 0, or -1: not a document of this form (d then holds nothing usable). */
int sg_ldoc_parse(const char *text, size_t len, sg_ldoc_t *d);

#endif
