/*  rf_sgfs — one bucket's path space over its local-directory mounts
 *  (seed 003 "mounts": one path system over several back ends).
 *
 *  A key ("photos/a.jpg") is the bucket path "/photos/a.jpg". It belongs to
 *  the mount whose mountPoint is its longest prefix; a path under no
 *  mountPoint belongs to the root mounts (mountPoint null): the first
 *  declared that holds it, for reads and writes alike (a PUT replaces the
 *  object where it is), else the first declared — "an explicit mountPoint
 *  wins, then the first declared". A key several root mounts hold is the
 *  first one's; DELETE removes it from each (gw_s3_ops).
 *
 *  Every file is opened with openat2(RESOLVE_BENEATH) from the mount's
 *  directory, so neither ".." nor a symlink can reach outside it. Writes go
 *  to a temporary file in the mount's ".refract-s3/" directory and are
 *  renamed into place, so a reader never sees a partial object; that
 *  directory is not part of the bucket (not listed, not addressable).
 *
 *  Object metadata (ETag, Content-Type, x-amz-meta-*) lives in the file's
 *  user.refract.s3 extended attribute, written with the file and trusted
 *  only while size and mtime still match. Files put there by other means
 *  get an ETag derived from inode, size and mtime, written "HEX-1" so that
 *  clients do not take it for an MD5 of the content.
 *
 *  S3-backed mounts (NAME@aws_s3[/skip]) are reached through rf_s3c for
 *  internal callers (hidden_ok / internal: the scheduler): a read downloads
 *  the object into an anonymous temporary file whose fd it returns, a write
 *  spools into one and uploads it at commit (multipart above 64 MiB,
 *  aborted on failure). The S3 API does not serve them yet.
 *
 *  No h2o here: the gateway's S3 API (gw_s3.c) and the storgate scheduler
 *  both use it, and tests/unit/test_sgfs.c drives it directly.
 */
#ifndef RF_SGFS_H
#define RF_SGFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rf_sgconf.h"

#define RF_SGFS_KEY_MAX 1024
#define RF_SGFS_META_MAX 2048 /* bytes of x-amz-meta-* kept per object */
#define RF_SGFS_RESERVED ".refract-s3"

/* Where a key lives: its mount and the path relative to the mount's directory. */
typedef struct {
    const rf_sg_mount_t *mount;
    char rel[RF_SGFS_KEY_MAX + 2];
} rf_sgfs_loc_t;

/* What a stored object says about itself. */
typedef struct {
    uint64_t size;
    int64_t mtime_ns;
    char etag[48];               /* without quotes: 32 hex, or 32 hex + "-N" */
    char content_type[128];      /* "" when none was stored */
    char meta[RF_SGFS_META_MAX]; /* "name: value\n" lines of x-amz-meta-*, as stored */
    bool is_dir;                 /* a key ending in '/': a directory (folder marker) */
    bool stored;                 /* storgate wrote it as it is now: its metadata describes it (a local file
                                    written through the S3 API or by a workflow), or an S3-backed mount's
                                    object; false: a local file written or changed beside storgate */
} rf_sgfs_stat_t;

/* Whether key[0..len) can name an object: 1..1024 bytes, no NUL, no empty,
 * "." or ".." segment, not under .refract-s3. 0 = fine, -1 with *why. A
 * trailing '/' (a folder marker) is allowed. */
int rf_sgfs_key_check(const char *key, size_t len, const char **why);

/* rf_sgfs_resolve's flags. */
#define RF_SGFS_INTERNAL 1 /* an internal caller (the scheduler): hidden and S3-backed mounts resolve */
#define RF_SGFS_S3_OK 2    /* S3-backed mounts resolve (the S3 API's object GET, HEAD, PUT and DELETE) */

/* Resolves key (checked) for reading or writing (`write` is kept for
 * callers: both take the first root mount that holds the path, else the
 * first root mount). flags: RF_SGFS_* (0 = a client: exposed local mounts
 * only). Returns 0, -1 (no mount holds the path, an S3-backed mount
 * without RF_SGFS_S3_OK, or a key segment longer than a file name can be,
 * 255 bytes: *why), or -2 (the mount is hidden: expose false, without
 * RF_SGFS_INTERNAL). */
int rf_sgfs_resolve(const rf_sg_bucket_t *b, const char *key, size_t len, bool write, int flags, rf_sgfs_loc_t *loc,
                    const char **why);

/* Opens the object for reading (O_RDONLY|O_CLOEXEC; the caller closes the
 * fd) and fills *st. Returns the fd, or -1 with errno (ENOENT: no such
 * object; ELOOP/EXDEV: an escape was refused; EISDIR: a directory). */
int rf_sgfs_open(const rf_sgfs_loc_t *loc, rf_sgfs_stat_t *st);

/* Reads len bytes from offset first of an S3-backed mount's object into
 * buf, only while its ETag is `etag` (from rf_sgfs_stat): a GET streamed a
 * range at a time reads one object, never a mix. 0, or -1 with errno
 * (ESTALE: the object changed or went; EIO: the endpoint failed or ignored
 * the range; ENOTSUP: not an S3-backed mount). */
int rf_sgfs_read_range(const rf_sgfs_loc_t *loc, const char *etag, uint64_t first, void *buf, size_t len);

/* Reads the metadata of an object without keeping it open. 0 or -1 (errno). */
int rf_sgfs_stat(const rf_sgfs_loc_t *loc, rf_sgfs_stat_t *st);

/* ---- writing: a new object is written to a temporary file, then published ---- */

typedef struct rf_sgfs_put_t rf_sgfs_put_t;

/* Starts writing the object at loc. content_type and meta (lines as in
 * rf_sgfs_stat_t) may be NULL. Returns a writer (owned by the caller:
 * commit or abort it) or NULL with errno. */
rf_sgfs_put_t *rf_sgfs_put_begin(const rf_sgfs_loc_t *loc, const char *content_type, const char *meta);
/* Appends data; 0 or -1 (errno). */
int rf_sgfs_put_write(rf_sgfs_put_t *p, const void *data, size_t n);
/* A condition the commit checks against what the name holds, atomically
 * with the publishing (under an flock of the directory, which every
 * conditional commit of every process takes): if_match (borrowed, copied)
 * an ETag without quotes, "*" = any object; if_none_match: no object may
 * be there. The commit then fails with EEXIST (an object is there),
 * ENOENT (If-Match, and none is) or ECANCELED (another ETag); on an
 * S3-backed mount with ENOTSUP (the backend's PUT would not check it). A
 * folder marker's commit ignores it. Unconditional commits do not lock:
 * they may land between, as a plain PUT does in S3. */
void rf_sgfs_put_require(rf_sgfs_put_t *p, const char *if_match, bool if_none_match);
/* Bytes written so far. */
uint64_t rf_sgfs_put_size(const rf_sgfs_put_t *p);
/* The hex MD5 of what was written (valid after every write). */
void rf_sgfs_put_md5(rf_sgfs_put_t *p, char hex[33]);
/* Publishes the object under its name (creating parent directories),
 * replacing any previous one atomically; etag NULL = the MD5 of the data.
 * Fills *st when given. Frees p. 0 or -1 (errno; nothing published). */
int rf_sgfs_put_commit(rf_sgfs_put_t **p_p, const char *etag, rf_sgfs_stat_t *st);
/* Whether an object can be published at loc, checked before its body is
 * read: every directory of its path that exists already is a directory
 * beneath the mount (the missing ones are created as real directories at
 * commit). 0, or -1 with errno: EXDEV or ELOOP (a symlink leaves the
 * mount), ENOTDIR (a file holds a directory's name), EISDIR (a directory
 * holds the object's name), or what opening failed with. The commit checks
 * again (openat2 beneath): this is for a clear early answer, not safety. */
int rf_sgfs_put_check(const rf_sgfs_loc_t *loc);
/* Discards the temporary file and frees p; NULL-safe. */
void rf_sgfs_put_abort(rf_sgfs_put_t **p_p);

/* Removes an object (a folder marker: its directory, when empty) and the
 * directories it leaves empty up to the mount's root. Deleting what does
 * not exist succeeds, as in S3. 0 or -1 (errno). */
int rf_sgfs_delete(const rf_sgfs_loc_t *loc);

/* ---- listing ---- */

typedef struct {
    char *key;   /* malloc'd */
    bool prefix; /* a common prefix (CommonPrefixes), not an object */
    uint64_t size;
    int64_t mtime_ns;
    char etag[48];
    uint32_t seq; /* internal: the order found in, for the merge */
} rf_sgfs_entry_t;

typedef struct {
    rf_sgfs_entry_t *e;
    size_t n;
    bool truncated;
} rf_sgfs_list_t;

/* Lists the exposed mounts of b in key order: keys starting with prefix,
 * after `after` (exclusive; "" = from the start), objects and, with a
 * non-empty delimiter, common prefixes, at most max (1..1000) entries.
 * Directories are walked in key order and pruned by prefix and `after`, so
 * a page costs the directories it touches, not the whole tree. 0, or -1
 * (errno) — out fully freed then. Strings borrowed. */
int rf_sgfs_list(const rf_sg_bucket_t *b, const char *prefix, const char *delim, const char *after, size_t max,
                 rf_sgfs_list_t *out);
void rf_sgfs_list_clear(rf_sgfs_list_t *l);

/* The same with flags (rf_sgfs_resolve's): RF_SGFS_S3_OK lists exposed
 * S3-backed mounts too (ListObjectsV2 of their endpoint: blocking), and
 * RF_SGFS_INTERNAL (the scheduler) hidden mounts as well. */
int rf_sgfs_list_opts(const rf_sg_bucket_t *b, const char *prefix, const char *delim, const char *after, size_t max,
                      int flags, rf_sgfs_list_t *out);
/* Whether b has an exposed S3-backed mount (whose listing blocks). */
bool rf_sgfs_lists_s3(const rf_sg_bucket_t *b);

/* Removes what crashes leave in the local mounts' .refract-s3/ and in the
 * staging directories of S3-backed ones: temporary files older than
 * tmp_age_s (a writer killed mid-object) and multipart uploads not touched
 * for upload_age_s (never completed nor aborted). Returns how many went. */
int rf_sgfs_sweep(const rf_sg_bucket_t *b, int64_t tmp_age_s, int64_t upload_age_s);

/* Frees the calling thread's S3 clients (one per endpoint, made on first
 * use by an S3-backed mount); call before a thread that used them ends. */
void rf_sgfs_thread_end(void);

/* ---- multipart uploads, kept under the mount's .refract-s3/uploads/ID/ ---- */

/* Creates an upload for the key at loc; writes its id (32 hex) into id.
 * content_type and meta as for rf_sgfs_put_begin. 0 or -1 (errno). */
int rf_sgfs_mpu_create(const rf_sgfs_loc_t *loc, const char *key, const char *content_type, const char *meta,
                       char id[33]);
/* Whether upload id exists for this key; 0, or -1 (ENOENT: NoSuchUpload). */
int rf_sgfs_mpu_check(const rf_sgfs_loc_t *loc, const char *key, const char *id);
/* Starts writing part `number` (1..10000): a writer whose commit
 * publishes the part (etag: its MD5) inside the upload. */
rf_sgfs_put_t *rf_sgfs_mpu_part_begin(const rf_sgfs_loc_t *loc, const char *id, int number);

typedef struct {
    int number;
    uint64_t size;
    int64_t mtime_ns;
    char etag[33];
} rf_sgfs_part_t;

/* The parts stored so far, in number order (malloc'd array; caller frees). */
int rf_sgfs_mpu_parts(const rf_sgfs_loc_t *loc, const char *id, rf_sgfs_part_t **parts, size_t *n);

/* Joins the listed parts (numbers ascending, etags as the client has them,
 * without quotes) into the object: every part but the last at least
 * min_part bytes. 0; -1 with *code set: "InvalidPart" (missing or etag
 * mismatch), "EntityTooSmall", "NoSuchUpload", "InternalError" (errno).
 * The upload is removed on success. */
int rf_sgfs_mpu_complete(const rf_sgfs_loc_t *loc, const char *id, const int *numbers, const char *const *etags,
                         size_t n, uint64_t min_part, rf_sgfs_stat_t *st, const char **code);
/* Removes an upload and its parts. 0 or -1 (ENOENT). */
int rf_sgfs_mpu_abort(const rf_sgfs_loc_t *loc, const char *id);

typedef struct {
    char *key; /* malloc'd */
    char id[33];
    int64_t initiated_ns;
} rf_sgfs_upload_t;

/* Uploads in progress on the exposed mounts of b whose key starts with
 * prefix, sorted by key then id; at most max. Caller frees with
 * rf_sgfs_uploads_free. */
int rf_sgfs_mpu_list(const rf_sg_bucket_t *b, const char *prefix, size_t max, rf_sgfs_upload_t **out, size_t *n,
                     bool *truncated);
void rf_sgfs_uploads_free(rf_sgfs_upload_t *u, size_t n);

#endif
