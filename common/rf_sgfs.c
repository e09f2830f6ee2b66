/*  rf_sgfs — a bucket's path space over local directories (rf_sgfs.h).
 */
#include "rf_sgfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "rf_log.h"
#include "rf_s3c.h"

#define S_XATTR "user.refract.s3"
#define S_DEPTH_MAX 256

/* ---- keys and mounts ---------------------------------------------------------- */

int rf_sgfs_key_check(const char *key, size_t len, const char **why)
{
    if (len == 0 || len > RF_SGFS_KEY_MAX)
        return *why = "a key is 1 to 1024 bytes", -1;
    if (memchr(key, '\0', len) != NULL)
        return *why = "a key may not hold a NUL byte", -1;
    if (key[0] == '/')
        return *why = "a key may not start with '/' here (an empty path segment)", -1;
    size_t s = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && key[i] != '/')
            continue;
        size_t n = i - s;
        if (i == len && n == 0) /* a trailing '/': a folder marker */
            break;
        if (n == 0)
            return *why = "a key may not hold an empty path segment ('//')", -1;
        if ((n == 1 && key[s] == '.') || (n == 2 && key[s] == '.' && key[s + 1] == '.'))
            return *why = "a key may not hold a '.' or '..' segment", -1;
        s = i + 1;
    }
    return 0;
}

/* Whether bucket path "/"+key[0..len) lies under mount point mp ("" never). */
static bool s_under(const char *mp, const char *key, size_t len)
{
    size_t ml = strlen(mp);
    if (ml == 0)
        return false;
    size_t n = ml - 1; /* the mount point without its leading '/' */
    if (len < n || memcmp(mp + 1, key, n) != 0)
        return false;
    return len == n || key[n] == '/';
}

static int s_openat2(int dirfd, const char *rel, int flags, mode_t mode)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .mode = (flags & O_CREAT) ? mode : 0,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
}

/* Makes dir and its parents (0700), as `mkdir -p`. */
static int s_mkdirs(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
        return errno = ENAMETOOLONG, -1;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* The directory of a mount: a local mount's files, or an S3 mount's local
 * staging directory (its multipart uploads' parts; made when first
 * needed; rf_config.c names it under storgate_scheduler.state_dir). */
static int s_root(const rf_sg_mount_t *m)
{
    if (m->dir == NULL)
        return errno = ENOTSUP, -1;
    if (m->kind == RF_SG_MOUNT_S3 && s_mkdirs(m->dir) < 0)
        return -1;
    return open(m->dir, O_DIRECTORY | O_PATH | O_CLOEXEC);
}

/* Whether rel exists under m (any type, escapes refused). */
static bool s_exists(const rf_sg_mount_t *m, const char *rel)
{
    int root = s_root(m);
    if (root < 0)
        return false;
    int fd = s_openat2(root, rel, O_PATH, 0);
    close(root);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

int rf_sgfs_resolve(const rf_sg_bucket_t *b, const char *key, size_t len, bool write, int flags, rf_sgfs_loc_t *loc,
                    const char **why)
{
    (void)write; /* reads and writes resolve alike (rf_sgfs.h) */
    if (rf_sgfs_key_check(key, len, why) < 0)
        return -1;
    /* S3 takes any segment length; here each segment is a file name */
    for (size_t i = 0, s = 0; i <= len; i++) {
        if (i < len && key[i] != '/')
            continue;
        if (i - s > NAME_MAX)
            return *why = "a key's path segment is at most 255 bytes here (a file name)", -1;
        s = i + 1;
    }
    const rf_sg_mount_t *best = NULL;
    for (size_t i = 0; i < b->n_mounts; i++) {
        const rf_sg_mount_t *m = &b->mounts[i];
        if (s_under(m->mount_point, key, len) && (best == NULL || strlen(m->mount_point) > strlen(best->mount_point)))
            best = m;
    }
    size_t skip = best ? strlen(best->mount_point) : 0; /* "/mp" + "/" covers the key's "mp/" */
    if (best != NULL && len <= skip - 1 + 1)
        return *why = "the key names a mount point itself", -1;
    const char *rel = key + skip;
    size_t rl = len - skip;
    if (best == NULL) {
        for (size_t i = 0; i < b->n_mounts && best == NULL; i++) {
            const rf_sg_mount_t *m = &b->mounts[i];
            if (m->mount_point[0] != '\0' || m->kind != RF_SG_MOUNT_LOCAL)
                continue;
            memcpy(loc->rel, rel, rl);
            loc->rel[rl] = '\0';
            /* writes too: replacing a key another root mount holds must
             * replace it there, not shadow it with a copy in the first
             * (which a DELETE would then uncover) */
            if (s_exists(m, loc->rel))
                best = m;
        }
        if (best == NULL) {
            /* the first root mount: a local one (a read then finds nothing
             * there), or the bucket's one root mount when it is S3-backed
             * (the configuration allows no other root mount beside it, so
             * no key needs looking up in the endpoint to place it) */
            for (size_t i = 0; i < b->n_mounts && best == NULL; i++)
                if (b->mounts[i].mount_point[0] == '\0')
                    best = &b->mounts[i];
            if (best == NULL)
                return *why = "no mount of the bucket holds this path", -1;
        }
    }
    /* S3-backed mounts serve the scheduler (RF_SGFS_INTERNAL) and the S3
     * API's object operations that pass RF_SGFS_S3_OK */
    if (best->kind != RF_SG_MOUNT_LOCAL && !(flags & (RF_SGFS_INTERNAL | RF_SGFS_S3_OK)))
        return *why = "S3-backed mounts are served by the S3 API's object, listing and multipart operations only", -1;
    size_t seg = strcspn(rel, "/");
    if (seg == strlen(RF_SGFS_RESERVED) && memcmp(rel, RF_SGFS_RESERVED, seg) == 0)
        return *why = "the .refract-s3 directory is reserved", -1;
    loc->mount = best;
    memcpy(loc->rel, rel, rl);
    loc->rel[rl] = '\0';
    if (!best->expose && !(flags & RF_SGFS_INTERNAL))
        return *why = "the path is in a hidden mount", -2;
    return 0;
}

/* ---- S3-backed mounts ------------------------------------------------------------ */

/* One client per endpoint per thread (a client is one curl handle). */
#define S_S3_CACHE 8
static __thread struct {
    const rf_sg_s3ep_t *ep;
    rf_s3c_t *c;
} s_s3[S_S3_CACHE];

static rf_s3c_t *s_s3c(const rf_sg_mount_t *m)
{
    for (int i = 0; i < S_S3_CACHE; i++)
        if (s_s3[i].ep == m->ep)
            return s_s3[i].c;
    char why[128];
    for (int i = 0; i < S_S3_CACHE; i++)
        if (s_s3[i].ep == NULL) {
            s_s3[i].c = rf_s3c_new(m->ep, why, sizeof(why));
            if (s_s3[i].c != NULL)
                s_s3[i].ep = m->ep;
            return s_s3[i].c;
        }
    return NULL;
}

void rf_sgfs_thread_end(void)
{
    for (int i = 0; i < S_S3_CACHE; i++) {
        rf_s3c_destroy(&s_s3[i].c);
        s_s3[i].ep = NULL;
    }
}

/* The backend key of a mount-relative path: skip + "/" + rel. */
static void s_s3_key(const rf_sg_mount_t *m, const char *rel, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", m->skip, m->skip[0] ? "/" : "", rel);
}

/* An anonymous temporary file (gone when closed). */
static int s_tmpfile(void)
{
    const char *dir = getenv("TMPDIR");
    return open(dir && dir[0] ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

static void s_s3_stat(const rf_s3c_obj_t *o, rf_sgfs_stat_t *st)
{
    memset(st, 0, sizeof(*st));
    st->size = o->size;
    st->mtime_ns = o->mtime_s * 1000000000;
    snprintf(st->etag, sizeof(st->etag), "%.47s", o->etag);
    snprintf(st->content_type, sizeof(st->content_type), "%s", o->content_type);
    st->stored = true;
}

/* GET into a temporary file: its fd (the caller closes it), or -1 (errno). */
static int s_s3_open(const rf_sgfs_loc_t *loc, rf_sgfs_stat_t *st)
{
    rf_s3c_t *c = s_s3c(loc->mount);
    char key[RF_SGFS_KEY_MAX * 2 + 4], why[256];
    s_s3_key(loc->mount, loc->rel, key, sizeof(key));
    int fd = c ? s_tmpfile() : -1;
    if (fd < 0)
        return -1;
    rf_s3c_obj_t o;
    int rc = rf_s3c_get_fd(c, key, fd, &o, why, sizeof(why));
    if (rc != 0) {
        if (rc < 0)
            rf_warn("storgate: %s: %s", key, why);
        close(fd);
        return errno = rc == 1 ? ENOENT : EIO, -1;
    }
    s_s3_stat(&o, st);
    struct stat sb;
    if (fstat(fd, &sb) == 0)
        st->size = (uint64_t)sb.st_size;
    return fd;
}

int rf_sgfs_read_range(const rf_sgfs_loc_t *loc, const char *etag, uint64_t first, void *buf, size_t len)
{
    if (loc->mount->kind != RF_SG_MOUNT_S3)
        return errno = ENOTSUP, -1;
    rf_s3c_t *c = s_s3c(loc->mount);
    char key[RF_SGFS_KEY_MAX * 2 + 4], why[256];
    s_s3_key(loc->mount, loc->rel, key, sizeof(key));
    int rc = c ? rf_s3c_get_range(c, key, first, len, etag, buf, why, sizeof(why)) : -1;
    if (rc < 0 && c != NULL)
        rf_warn("storgate: %s: %s", key, why);
    return rc == 0 ? 0 : (errno = rc == 1 ? ESTALE : EIO, -1);
}

/* ---- metadata ------------------------------------------------------------------- */

static int64_t s_mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* The ETag of a file with no (valid) stored metadata. */
static void s_pseudo_etag(const struct stat *st, char out[48])
{
    uint64_t v[3] = {(uint64_t)st->st_ino, (uint64_t)st->st_size, (uint64_t)s_mtime_ns(st)};
    XXH128_hash_t h = XXH3_128bits(v, sizeof(v));
    snprintf(out, 48, "%016llx%016llx-1", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

/* Fills st from fd's stat and its xattr when that still describes it. */
static int s_fill_stat(int fd, rf_sgfs_stat_t *st)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -1;
    memset(st, 0, sizeof(*st));
    st->is_dir = S_ISDIR(sb.st_mode);
    st->size = st->is_dir ? 0 : (uint64_t)sb.st_size;
    st->mtime_ns = s_mtime_ns(&sb);
    if (st->is_dir) { /* a folder marker's content is empty: the MD5 of nothing, as its PUT answered */
        snprintf(st->etag, sizeof(st->etag), "d41d8cd98f00b204e9800998ecf8427e");
        return 0;
    }
    char buf[RF_SGFS_META_MAX + 512];
    ssize_t n = fgetxattr(fd, S_XATTR, buf, sizeof(buf) - 1);
    if (n > 0) {
        buf[n] = '\0';
        /* "v1\nETAG\nSIZE MTIME_NS\nCONTENT_TYPE\nMETA..." */
        char etag[48], ctype[128];
        unsigned long long size;
        long long mt;
        int off = 0;
        if (sscanf(buf, "v1\n%47[^\n]\n%llu %lld\n%n", etag, &size, &mt, &off) == 3 && off > 0 &&
            size == (unsigned long long)st->size && mt == st->mtime_ns) {
            memcpy(st->etag, etag, sizeof(etag));
            st->stored = true;
            const char *rest = buf + off, *nl = strchr(rest, '\n');
            size_t cl = nl ? (size_t)(nl - rest) : strlen(rest);
            if (cl < sizeof(ctype)) {
                memcpy(st->content_type, rest, cl);
                st->content_type[cl] = '\0';
            }
            if (nl != NULL)
                snprintf(st->meta, sizeof(st->meta), "%s", nl + 1);
            return 0;
        }
    }
    s_pseudo_etag(&sb, st->etag);
    return 0;
}

int rf_sgfs_open(const rf_sgfs_loc_t *loc, rf_sgfs_stat_t *st)
{
    if (loc->mount->kind == RF_SG_MOUNT_S3)
        return s_s3_open(loc, st);
    int root = s_root(loc->mount);
    if (root < 0)
        return -1;
    size_t rl = strlen(loc->rel);
    bool marker = rl > 0 && loc->rel[rl - 1] == '/';
    int fd = s_openat2(root, loc->rel, marker ? O_RDONLY | O_DIRECTORY : O_RDONLY, 0);
    int e = errno;
    close(root);
    if (fd < 0) {
        errno = e == ENOTDIR ? ENOENT : e;
        return -1;
    }
    if (s_fill_stat(fd, st) < 0 || (st->is_dir && !marker)) {
        e = st->is_dir ? EISDIR : errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int rf_sgfs_stat(const rf_sgfs_loc_t *loc, rf_sgfs_stat_t *st)
{
    if (loc->mount->kind == RF_SG_MOUNT_S3) {
        rf_s3c_t *c = s_s3c(loc->mount);
        char key[RF_SGFS_KEY_MAX * 2 + 4], why[256];
        s_s3_key(loc->mount, loc->rel, key, sizeof(key));
        rf_s3c_obj_t o;
        int rc = c ? rf_s3c_head(c, key, &o, why, sizeof(why)) : -1;
        if (rc != 0)
            return errno = rc == 1 ? ENOENT : EIO, -1;
        s_s3_stat(&o, st);
        return 0;
    }
    int fd = rf_sgfs_open(loc, st);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* ---- writing -------------------------------------------------------------------- */

struct rf_sgfs_put_t {
    rf_sgfs_loc_t loc;
    int root, tmpdir, fd;
    char tmpname[40];
    EVP_MD_CTX *md5;
    uint64_t size;
    char *content_type, *meta;
    /* a part of a multipart upload: published as PART inside the upload's directory */
    int part;
    char upload[33];
    /* rf_sgfs_put_require: checked at commit under the directory's flock */
    bool if_none, if_match;
    char match[48];
};

/* Opens (creating) ".refract-s3/SUB" under the mount root. */
static int s_reserved_dir(int root, const char *sub)
{
    char p[96];
    mkdirat(root, RF_SGFS_RESERVED, 0700);
    snprintf(p, sizeof(p), RF_SGFS_RESERVED "/%s", sub);
    if (strchr(sub, '/') != NULL) { /* uploads/ID: the parent first */
        char parent[96];
        snprintf(parent, sizeof(parent), "%.*s", (int)(strrchr(p, '/') - p), p);
        mkdirat(root, parent, 0700);
    }
    mkdirat(root, p, 0700);
    return s_openat2(root, p, O_DIRECTORY | O_PATH, 0);
}

static void s_random_hex(char *out, size_t bytes)
{
    unsigned char r[32];
    if (bytes > sizeof(r))
        bytes = sizeof(r);
    if (getrandom(r, bytes, 0) != (ssize_t)bytes) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t v[2] = {(uint64_t)ts.tv_nsec ^ (uint64_t)getpid(), (uint64_t)(uintptr_t)out};
        XXH128_hash_t h = XXH3_128bits(v, sizeof(v));
        memcpy(r, &h, bytes < sizeof(h) ? bytes : sizeof(h));
    }
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", r[i]);
}

/* A write at loc. On an S3 mount it is spooled to a temporary file and
 * uploaded at commit, unless `staged` (a multipart upload's part: kept in
 * the mount's staging directory, as on a local mount). */
static rf_sgfs_put_t *s_put_new(const rf_sgfs_loc_t *loc, const char *content_type, const char *meta, bool staged)
{
    rf_sgfs_put_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loc = *loc;
    p->root = p->tmpdir = p->fd = -1;
    p->md5 = EVP_MD_CTX_new();
    if (p->md5 == NULL || EVP_DigestInit_ex(p->md5, EVP_md5(), NULL) != 1)
        goto fail;
    if ((content_type && (p->content_type = strdup(content_type)) == NULL) ||
        (meta && (p->meta = strdup(meta)) == NULL))
        goto fail;
    if (loc->mount->kind == RF_SG_MOUNT_S3 && !staged) { /* spooled here, uploaded at commit */
        if ((p->fd = s_tmpfile()) < 0)
            goto fail;
        return p;
    }
    if ((p->root = s_root(loc->mount)) < 0 || (p->tmpdir = s_reserved_dir(p->root, "tmp")) < 0)
        goto fail;
    s_random_hex(p->tmpname, 16);
    p->fd = openat(p->tmpdir, p->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (p->fd < 0)
        goto fail;
    return p;
fail:;
    int e = errno ? errno : ENOMEM;
    rf_sgfs_put_abort(&p);
    errno = e;
    return NULL;
}

rf_sgfs_put_t *rf_sgfs_put_begin(const rf_sgfs_loc_t *loc, const char *content_type, const char *meta)
{
    return s_put_new(loc, content_type, meta, false);
}

int rf_sgfs_put_write(rf_sgfs_put_t *p, const void *data, size_t n)
{
    const char *d = data;
    EVP_DigestUpdate(p->md5, d, n);
    p->size += n;
    while (n > 0) {
        ssize_t w = write(p->fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

void rf_sgfs_put_require(rf_sgfs_put_t *p, const char *if_match, bool if_none_match)
{
    p->if_none = if_none_match;
    p->if_match = if_match != NULL;
    snprintf(p->match, sizeof(p->match), "%s", if_match ? if_match : "");
}

/* Whether the name base in parent holds what p requires, checked with the
 * directory's flock held (*lock_fd receives it; the caller closes it after
 * the rename): 0, or -1 with errno EEXIST (If-None-Match: an object is
 * there), ENOENT (If-Match: none is), ECANCELED (If-Match: another ETag). */
static int s_put_condition(const rf_sgfs_put_t *p, int parent, const char *base, int *lock_fd)
{
    *lock_fd = openat(parent, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX) != 0)
        return -1;
    int fd = openat(parent, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno != ENOENT)
        return -1;
    rf_sgfs_stat_t cur;
    int rc = 0;
    if (fd >= 0 && s_fill_stat(fd, &cur) < 0)
        rc = -1;
    else if (p->if_none && fd >= 0)
        rc = -1, errno = EEXIST;
    else if (p->if_match && fd < 0)
        rc = -1, errno = ENOENT;
    else if (p->if_match && strcmp(p->match, "*") != 0 && strcmp(p->match, cur.etag) != 0)
        rc = -1, errno = ECANCELED;
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return rc;
}

uint64_t rf_sgfs_put_size(const rf_sgfs_put_t *p)
{
    return p->size;
}

void rf_sgfs_put_md5(rf_sgfs_put_t *p, char hex[33])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char d[16];
    unsigned int dl = 0;
    if (c != NULL && EVP_MD_CTX_copy_ex(c, p->md5) == 1 && EVP_DigestFinal_ex(c, d, &dl) == 1 && dl == 16) {
        for (int i = 0; i < 16; i++)
            sprintf(hex + 2 * i, "%02x", d[i]);
    } else {
        hex[0] = '\0';
    }
    EVP_MD_CTX_free(c);
}

/* Writes the metadata xattr of fd (whose content is final). */
static int s_write_meta(int fd, const char *etag, const char *ctype, const char *meta)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -1;
    char buf[RF_SGFS_META_MAX + 512];
    int n = snprintf(buf, sizeof(buf), "v1\n%s\n%llu %lld\n%s\n%s", etag, (unsigned long long)sb.st_size,
                     (long long)s_mtime_ns(&sb), ctype ? ctype : "", meta ? meta : "");
    if (n < 0 || (size_t)n >= sizeof(buf))
        return errno = E2BIG, -1;
    return fsetxattr(fd, S_XATTR, buf, (size_t)n, 0);
}

/* Opens the directory that is to hold rel's last segment, creating the
 * missing ones (each opened beneath the previous, so none can escape).
 * Sets *base to the last segment. Returns a dir fd or -1. */
static int s_parent(int root, char *rel, const char **base, bool create)
{
    int cur = dup(root);
    char *s = rel;
    for (char *slash; cur >= 0 && (slash = strchr(s, '/')) != NULL && slash[1] != '\0'; s = slash + 1) {
        *slash = '\0';
        if (create && mkdirat(cur, s, 0755) != 0 && errno != EEXIST) {
            *slash = '/';
            close(cur);
            return -1;
        }
        int next = s_openat2(cur, s, O_DIRECTORY | O_PATH, 0);
        *slash = '/';
        int e = errno;
        close(cur);
        errno = e;
        cur = next;
    }
    *base = s;
    return cur;
}

/* Copies loc's path into rel (sizeof loc->rel) without a folder marker's
 * trailing '/'; returns whether there was one. */
static bool s_rel_dir(const rf_sgfs_loc_t *loc, char *rel)
{
    size_t rl = strlen(loc->rel);
    memcpy(rel, loc->rel, rl + 1);
    bool marker = rl > 0 && rel[rl - 1] == '/';
    if (marker)
        rel[rl - 1] = '\0';
    return marker;
}

int rf_sgfs_put_check(const rf_sgfs_loc_t *loc)
{
    if (loc->mount->kind == RF_SG_MOUNT_S3)
        return 0; /* keys are plain names there */
    int root = s_root(loc->mount);
    if (root < 0)
        return -1;
    char rel[sizeof(loc->rel)];
    bool marker = s_rel_dir(loc, rel);
    const char *base = NULL;
    int rc = 0, parent = s_parent(root, rel, &base, false);
    if (parent < 0) {
        rc = errno == ENOENT ? 0 : -1; /* a missing directory is created at commit */
    } else {
        /* the name itself: a file for an object, a directory for a marker */
        int fd = s_openat2(parent, base, O_PATH | O_NOFOLLOW, 0);
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode) != marker && !S_ISLNK(sb.st_mode))
            rc = -1, errno = marker ? ENOTDIR : EISDIR;
        if (fd >= 0)
            close(fd);
        close(parent);
    }
    int e = errno;
    close(root);
    errno = e;
    return rc;
}

/* Commit to an S3-backed mount: the spooled file goes up as one PUT (or a
 * multipart upload, aborted on failure: nothing partial is visible). */
static int s_s3_commit(rf_sgfs_put_t **p_p, rf_sgfs_stat_t *st)
{
    rf_sgfs_put_t *p = *p_p;
    rf_s3c_t *c = s_s3c(p->loc.mount);
    char key[RF_SGFS_KEY_MAX * 2 + 4], why[256], etag[80] = "";
    s_s3_key(p->loc.mount, p->loc.rel, key, sizeof(key));
    int rc = c ? rf_s3c_put_fd(c, key, p->fd, p->size, p->content_type, etag, why, sizeof(why)) : -1;
    if (rc < 0 && c != NULL)
        rf_warn("storgate: PUT %s: %s", key, why);
    if (rc == 0 && st != NULL) {
        memset(st, 0, sizeof(*st));
        st->size = p->size;
        st->mtime_ns = (int64_t)time(NULL) * 1000000000;
        snprintf(st->etag, sizeof(st->etag), "%.47s", etag);
    }
    rf_sgfs_put_abort(p_p);
    return rc < 0 ? (errno = EIO, -1) : 0;
}

int rf_sgfs_put_commit(rf_sgfs_put_t **p_p, const char *etag, rf_sgfs_stat_t *st)
{
    rf_sgfs_put_t *p = *p_p;
    if (p->loc.mount->kind == RF_SG_MOUNT_S3 && p->part == 0) {
        if (p->if_none || p->if_match) { /* the backend's PUT would not check it */
            rf_sgfs_put_abort(p_p);
            errno = ENOTSUP;
            return -1;
        }
        return s_s3_commit(p_p, st);
    }
    char md5[33], name[16];
    rf_sgfs_put_md5(p, md5);
    int rc = -1, parent = -1, lock = -1;
    const char *base = NULL;
    char rel[sizeof(p->loc.rel)];
    if (s_write_meta(p->fd, etag ? etag : md5, p->content_type, p->meta) != 0 && errno != ENOTSUP)
        goto done;
    if (p->part > 0) { /* a part: into its upload's directory */
        char sub[64];
        snprintf(sub, sizeof(sub), "uploads/%s", p->upload);
        parent = s_openat2(p->root, RF_SGFS_RESERVED "/uploads", O_DIRECTORY | O_PATH, 0);
        int up = parent >= 0 ? s_openat2(parent, p->upload, O_DIRECTORY | O_PATH, 0) : -1;
        if (parent >= 0)
            close(parent);
        parent = up;
        snprintf(name, sizeof(name), "%05d", p->part);
        base = name;
        if (parent < 0) {
            errno = ENOENT;
            goto done;
        }
    } else {
        size_t rl = strlen(p->loc.rel);
        memcpy(rel, p->loc.rel, rl + 1);
        if (rl > 0 && rel[rl - 1] == '/') { /* a folder marker: a directory */
            rel[rl - 1] = '\0';
            parent = s_parent(p->root, rel, &base, true);
            if (parent < 0 || (mkdirat(parent, base, 0755) != 0 && errno != EEXIST))
                goto done;
            rc = 0;
            if (st != NULL) {
                memset(st, 0, sizeof(*st));
                st->is_dir = true;
                snprintf(st->etag, sizeof(st->etag), "%s", md5);
            }
            goto done;
        }
        parent = s_parent(p->root, rel, &base, true);
        if (parent < 0)
            goto done;
        if ((p->if_none || p->if_match) && s_put_condition(p, parent, base, &lock) < 0)
            goto done;
    }
    if (st != NULL && s_fill_stat(p->fd, st) < 0)
        goto done;
    if (renameat(p->tmpdir, p->tmpname, parent, base) != 0) {
        /* a concurrent delete pruned the directory between mkdir and rename
         * (not under a condition: what it checked is gone with it) */
        if (errno != ENOENT || p->part > 0 || lock >= 0)
            goto done;
        close(parent);
        if ((parent = s_parent(p->root, rel, &base, true)) < 0 || renameat(p->tmpdir, p->tmpname, parent, base) != 0)
            goto done;
    }
    p->tmpname[0] = '\0'; /* published: nothing to remove */
    rc = 0;
done:;
    int e = errno;
    if (lock >= 0)
        close(lock); /* drops the flock */
    if (parent >= 0)
        close(parent);
    rf_sgfs_put_abort(p_p);
    errno = e;
    return rc;
}

void rf_sgfs_put_abort(rf_sgfs_put_t **p_p)
{
    if (p_p == NULL || *p_p == NULL)
        return;
    rf_sgfs_put_t *p = *p_p;
    if (p->fd >= 0)
        close(p->fd);
    if (p->tmpdir >= 0) {
        if (p->tmpname[0])
            unlinkat(p->tmpdir, p->tmpname, 0);
        close(p->tmpdir);
    }
    if (p->root >= 0)
        close(p->root);
    EVP_MD_CTX_free(p->md5);
    free(p->content_type);
    free(p->meta);
    free(p);
    *p_p = NULL;
}

/* ---- deleting ------------------------------------------------------------------- */

int rf_sgfs_delete(const rf_sgfs_loc_t *loc)
{
    if (loc->mount->kind == RF_SG_MOUNT_S3) {
        rf_s3c_t *c = s_s3c(loc->mount);
        char key[RF_SGFS_KEY_MAX * 2 + 4], why[256];
        s_s3_key(loc->mount, loc->rel, key, sizeof(key));
        if (c != NULL && rf_s3c_delete(c, key, why, sizeof(why)) == 0)
            return 0;
        rf_warn("storgate: DELETE %s: %s", key, c ? why : "no client");
        return errno = EIO, -1;
    }
    int root = s_root(loc->mount);
    if (root < 0)
        return -1;
    char rel[sizeof(loc->rel)];
    bool marker = s_rel_dir(loc, rel);
    const char *base;
    int parent = s_parent(root, rel, &base, false);
    int rc = 0;
    if (parent >= 0) {
        if (unlinkat(parent, base, marker ? AT_REMOVEDIR : 0) != 0 && errno != ENOENT && errno != ENOTEMPTY &&
            errno != EISDIR && errno != ENOTDIR)
            rc = -1;
        close(parent);
    }
    /* Directories are implied by keys: prune the ones this left empty. */
    for (char *slash; rc == 0 && (slash = strrchr(rel, '/')) != NULL;) {
        *slash = '\0';
        const char *b2;
        int p2 = s_parent(root, rel, &b2, false);
        if (p2 < 0)
            break;
        int r = unlinkat(p2, b2, AT_REMOVEDIR);
        close(p2);
        if (r != 0)
            break;
    }
    int e = errno;
    close(root);
    errno = e;
    return rc;
}

/* ---- listing -------------------------------------------------------------------- */

typedef struct {
    const char *prefix, *delim, *after;
    size_t plen, dlen, max;
    const rf_sg_bucket_t *b;
    const rf_sg_mount_t *m;
    rf_sgfs_list_t *out;
    int err;
} s_walk_t;

typedef struct {
    char *name;
    size_t len;
    unsigned char type; /* DT_DIR or DT_REG */
} s_dent_t;

/* The i-th byte of an entry's name as it sorts: a directory as "name/". -1 past the end. */
static int s_vchar(const s_dent_t *d, size_t i)
{
    if (i < d->len)
        return (unsigned char)d->name[i];
    return i == d->len && d->type == DT_DIR ? '/' : -1;
}

static int s_dent_cmp(const void *a, const void *b)
{
    for (size_t i = 0;; i++) {
        int c1 = s_vchar(a, i), c2 = s_vchar(b, i);
        if (c1 != c2)
            return c1 - c2;
        if (c1 < 0)
            return 0;
    }
}

static bool s_starts(const char *s, const char *p, size_t pl)
{
    return strncmp(s, p, pl) == 0;
}

static int s_emit(s_walk_t *w, const char *key, bool prefix, const struct stat *sb, int fd_for_meta)
{
    rf_sgfs_list_t *o = w->out;
    if (o->n > 0 && o->e[o->n - 1].prefix && prefix && strcmp(o->e[o->n - 1].key, key) == 0)
        return 0; /* the same common prefix again */
    if (o->n >= w->max) {
        o->truncated = true;
        return 1;
    }
    rf_sgfs_entry_t *e = &o->e[o->n];
    memset(e, 0, sizeof(*e));
    if ((e->key = strdup(key)) == NULL)
        return w->err = ENOMEM, -1;
    e->prefix = prefix;
    if (!prefix && sb != NULL) {
        e->size = S_ISDIR(sb->st_mode) ? 0 : (uint64_t)sb->st_size;
        e->mtime_ns = s_mtime_ns(sb);
        rf_sgfs_stat_t st;
        if (fd_for_meta >= 0 && s_fill_stat(fd_for_meta, &st) == 0)
            memcpy(e->etag, st.etag, sizeof(e->etag));
        else
            s_pseudo_etag(sb, e->etag);
    }
    o->n++;
    return 0;
}

/* The common prefix key falls in (delimiter after the prefix), or 0. */
static size_t s_cp_len(s_walk_t *w, const char *key)
{
    if (w->dlen == 0 || !s_starts(key, w->prefix, w->plen))
        return 0;
    const char *d = strstr(key + w->plen, w->delim);
    return d ? (size_t)(d - key) + w->dlen : 0;
}

/* Whether a key under a non-root mount point shadows this root-mount key. */
static bool s_shadowed(s_walk_t *w, const char *key)
{
    if (w->m->mount_point[0] != '\0')
        return false;
    for (size_t i = 0; i < w->b->n_mounts; i++) {
        const char *mp = w->b->mounts[i].mount_point;
        size_t ml = strlen(mp);
        if (ml > 0 && s_starts(key, mp + 1, ml - 1) && (key[ml - 1] == '/' || key[ml - 1] == '\0'))
            return true;
    }
    return false;
}

/* Emits the common prefix of a key if it is past `after`; 1 when full. */
static int s_emit_cp(s_walk_t *w, const char *key, size_t cpl)
{
    char cp[RF_SGFS_KEY_MAX + 2];
    if (cpl >= sizeof(cp))
        return 0;
    memcpy(cp, key, cpl);
    cp[cpl] = '\0';
    if (strcmp(cp, w->after) <= 0 || s_starts(w->after, cp, cpl))
        return 0;
    return s_emit(w, cp, true, NULL, -1);
}

static int s_walk_dir(s_walk_t *w, int dfd, char *key, size_t klen, int depth);

/* One directory entry (key holds its full key). */
static int s_walk_entry(s_walk_t *w, int dfd, s_dent_t *d, char *key, size_t klen, int depth)
{
    if (s_shadowed(w, key))
        return 0;
    if (d->type == DT_DIR) {
        key[klen] = '/';
        key[klen + 1] = '\0';
        size_t dl = klen + 1;
        /* prune: no key under it can start with the prefix, or all are <= after */
        if (!s_starts(key, w->prefix, dl < w->plen ? dl : w->plen))
            return 0;
        if (strncmp(key, w->after, dl) < 0 && !s_starts(w->after, key, dl))
            return 0;
        size_t cpl = s_cp_len(w, key);
        if (cpl > 0)
            return s_emit_cp(w, key, cpl);
        int sub = s_openat2(dfd, d->name, O_RDONLY | O_DIRECTORY, 0);
        if (sub < 0)
            return 0;
        return s_walk_dir(w, sub, key, dl, depth + 1); /* closes sub */
    }
    if (!s_starts(key, w->prefix, w->plen))
        return 0;
    size_t cpl = s_cp_len(w, key);
    if (cpl > 0)
        return s_emit_cp(w, key, cpl);
    if (strcmp(key, w->after) <= 0)
        return 0;
    int fd = s_openat2(dfd, d->name, O_RDONLY, 0);
    struct stat sb;
    int rc = 0;
    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
        rc = s_emit(w, key, false, &sb, fd);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Walks directory dfd (closed here) whose key is key[0..klen) ("" or ending
 * in '/'), in key order. Returns 0, 1 (full) or -1. */
static int s_walk_dir(s_walk_t *w, int dfd, char *key, size_t klen, int depth)
{
    DIR *dir = depth < S_DEPTH_MAX ? fdopendir(dfd) : NULL;
    if (dir == NULL) {
        close(dfd);
        return 0;
    }
    s_dent_t *ents = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(dir)) != NULL;) {
        const char *nm = de->d_name;
        if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0 || (depth == 0 && strcmp(nm, RF_SGFS_RESERVED) == 0))
            continue;
        unsigned char t = de->d_type;
        if (t == DT_UNKNOWN || t == DT_LNK) { /* follow only what stays beneath */
            int fd = s_openat2(dirfd(dir), nm, O_PATH, 0);
            struct stat sb;
            t = 0;
            if (fd >= 0 && fstat(fd, &sb) == 0)
                t = S_ISDIR(sb.st_mode) ? DT_DIR : S_ISREG(sb.st_mode) ? DT_REG : 0;
            if (fd >= 0)
                close(fd);
        }
        if (t != DT_DIR && t != DT_REG)
            continue;
        /* a file's key is at most KEY_MAX; a directory's "name/" must leave
         * room for one more byte, or it holds no key */
        if (klen + strlen(nm) + (t == DT_DIR ? 2 : 0) > RF_SGFS_KEY_MAX)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            s_dent_t *ne = realloc(ents, cap * sizeof(*ents));
            if (ne == NULL) {
                w->err = ENOMEM, rc = -1;
                goto done;
            }
            ents = ne;
        }
        if ((ents[n].name = strdup(nm)) == NULL) {
            w->err = ENOMEM, rc = -1;
            goto done;
        }
        ents[n].len = strlen(nm);
        ents[n++].type = t;
    }
    if (n > 1)
        qsort(ents, n, sizeof(*ents), s_dent_cmp);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t nl = strlen(ents[i].name);
        memcpy(key + klen, ents[i].name, nl + 1);
        rc = s_walk_entry(w, dirfd(dir), &ents[i], key, klen + nl, depth);
        key[klen] = '\0';
    }
done:
    for (size_t i = 0; i < n; i++)
        free(ents[i].name);
    free(ents);
    closedir(dir);
    return rc;
}

/* Lists one mount into out (at most max entries). */
/* A mount with a mount point is the directory "mp/": whether the listing
 * can reach into it. 1 = go on (key holds "mp/", *klen its length), 0 =
 * nothing here (pruned, or its common prefix emitted), -1 error. */
static int s_mount_gate(s_walk_t *w, char *key, size_t *klen)
{
    const rf_sg_mount_t *m = w->m;
    size_t kl = strlen(m->mount_point) - 1;
    memcpy(key, m->mount_point + 1, kl);
    key[kl++] = '/';
    key[kl] = '\0';
    *klen = kl;
    if (!s_starts(key, w->prefix, kl < w->plen ? kl : w->plen))
        return 0;
    if (strncmp(key, w->after, kl) < 0 && !s_starts(w->after, key, kl))
        return 0;
    size_t cpl = s_cp_len(w, key);
    if (cpl > 0 && cpl <= kl)
        return s_emit_cp(w, key, cpl) < 0 ? -1 : 0;
    return 1;
}

static int s_list_mount(s_walk_t *w)
{
    const rf_sg_mount_t *m = w->m;
    char key[RF_SGFS_KEY_MAX + 4];
    size_t klen = 0;
    key[0] = '\0';
    if (m->mount_point[0] != '\0') { /* the mount is the directory "mp/" */
        int g = s_mount_gate(w, key, &klen);
        if (g <= 0)
            return g;
    }
    int fd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* a mount whose directory is missing holds nothing */
    return s_walk_dir(w, fd, key, klen, 0) < 0 ? -1 : 0;
}

/* An S3-backed mount: ListObjectsV2 pages of the backend, its keys mapped
 * into the bucket (under its mount point, or as they are for a root mount). */
static int s_list_s3(s_walk_t *w)
{
    const rf_sg_mount_t *m = w->m;
    char key[RF_SGFS_KEY_MAX + 4], why[256];
    size_t klen = 0;
    key[0] = '\0';
    if (m->mount_point[0] != '\0') {
        int g = s_mount_gate(w, key, &klen);
        if (g <= 0)
            return g;
    }
    rf_s3c_t *c = s_s3c(m);
    if (c == NULL)
        return w->err = ENOMEM, -1;
    char base[RF_SGFS_KEY_MAX + 4], bp[RF_SGFS_KEY_MAX * 2 + 8], ba[RF_SGFS_KEY_MAX * 2 + 8];
    snprintf(base, sizeof(base), "%s%s", m->skip, m->skip[0] ? "/" : "");
    size_t bl = strlen(base);
    snprintf(bp, sizeof(bp), "%s%s", base, w->plen > klen ? w->prefix + klen : "");
    if (s_starts(w->after, key, klen))
        snprintf(ba, sizeof(ba), "%s%s", base, w->after + klen);
    else
        ba[0] = '\0'; /* `after` sorts before the mount: from its start */
    for (;;) {
        rf_s3c_entry_t *e = NULL;
        size_t n = 0;
        bool more = false;
        if (rf_s3c_list(c, bp, w->dlen ? w->delim : NULL, ba, 1000, &e, &n, &more, why, sizeof(why)) < 0) {
            rf_warn("storgate: listing %s: %s", bp, why);
            return w->err = EIO, -1;
        }
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            snprintf(ba, sizeof(ba), "%s", e[i].key);
            if (strncmp(e[i].key, base, bl) != 0 || klen + strlen(e[i].key) - bl > RF_SGFS_KEY_MAX)
                continue;
            char k[RF_SGFS_KEY_MAX + 4];
            snprintf(k, sizeof(k), "%s%s", key, e[i].key + bl);
            if (strcmp(k, w->after) <= 0 || s_shadowed(w, k)) /* a root mount's keys under a mount point are not its */
                continue;
            rc = s_emit(w, k, e[i].prefix, NULL, -1);
            if (rc == 0 && !e[i].prefix) {
                rf_sgfs_entry_t *en = &w->out->e[w->out->n - 1];
                en->size = e[i].size;
                en->mtime_ns = e[i].mtime_s * 1000000000;
                snprintf(en->etag, sizeof(en->etag), "%.47s", e[i].etag);
            }
        }
        rf_s3c_entries_free(e, n);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
        if (!more)
            return 0;
    }
}

static int s_entry_cmp(const void *a, const void *b)
{
    const rf_sgfs_entry_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

int rf_sgfs_list(const rf_sg_bucket_t *b, const char *prefix, const char *delim, const char *after, size_t max,
                 rf_sgfs_list_t *out)
{
    return rf_sgfs_list_opts(b, prefix, delim, after, max, false, out);
}

bool rf_sgfs_lists_s3(const rf_sg_bucket_t *b)
{
    for (size_t i = 0; i < b->n_mounts; i++)
        if (b->mounts[i].expose && b->mounts[i].kind != RF_SG_MOUNT_LOCAL)
            return true;
    return false;
}

int rf_sgfs_list_opts(const rf_sg_bucket_t *b, const char *prefix, const char *delim, const char *after, size_t max,
                      int flags, rf_sgfs_list_t *out)
{
    memset(out, 0, sizeof(*out));
    if (max < 1)
        max = 1;
    if (max > 1000)
        max = 1000;
    /* Each mount gives its first max+1 entries; the merge keeps the first max. */
    size_t cap = (max + 1) * (b->n_mounts ? b->n_mounts : 1);
    rf_sgfs_list_t all = {.e = calloc(cap, sizeof(rf_sgfs_entry_t))};
    if (all.e == NULL)
        return errno = ENOMEM, -1;
    for (size_t i = 0; i < b->n_mounts; i++) {
        const rf_sg_mount_t *m = &b->mounts[i];
        bool s3 = m->kind != RF_SG_MOUNT_LOCAL;
        if (!(flags & RF_SGFS_INTERNAL) && (!m->expose || (s3 && !(flags & RF_SGFS_S3_OK))))
            continue;
        rf_sgfs_list_t one = {.e = all.e + all.n};
        s_walk_t w = {.prefix = prefix,
                      .delim = delim ? delim : "",
                      .after = after ? after : "",
                      .plen = strlen(prefix),
                      .dlen = delim ? strlen(delim) : 0,
                      .max = max + 1,
                      .b = b,
                      .m = m,
                      .out = &one};
        if ((m->kind == RF_SG_MOUNT_S3 ? s_list_s3(&w) : s_list_mount(&w)) < 0) {
            all.n += one.n;
            rf_sgfs_list_clear(&all);
            return errno = w.err ? w.err : EIO, -1;
        }
        all.n += one.n;
    }
    /* Merge: by key; the first declared mount's entry wins a tie. */
    for (size_t i = 0; i < all.n; i++)
        all.e[i].seq = (uint32_t)i;
    qsort(all.e, all.n, sizeof(rf_sgfs_entry_t), s_entry_cmp);
    size_t k = 0;
    for (size_t i = 0; i < all.n; i++) {
        if (k > 0 && strcmp(all.e[k - 1].key, all.e[i].key) == 0) {
            free(all.e[i].key);
            continue;
        }
        all.e[k++] = all.e[i];
    }
    all.n = k;
    if (all.n > max) {
        for (size_t i = max; i < all.n; i++)
            free(all.e[i].key);
        all.n = max;
        all.truncated = true;
    }
    *out = all;
    return 0;
}

void rf_sgfs_list_clear(rf_sgfs_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].key);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

/* ---- multipart uploads ------------------------------------------------------------ */

static bool s_id_ok(const char *id)
{
    if (strlen(id) != 32)
        return false;
    for (int i = 0; i < 32; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

/* Opens the upload's directory under the mount (O_PATH), or -1 (ENOENT). */
static int s_upload_dir(int root, const char *id)
{
    if (!s_id_ok(id))
        return errno = ENOENT, -1;
    char p[96];
    snprintf(p, sizeof(p), RF_SGFS_RESERVED "/uploads/%s", id);
    return s_openat2(root, p, O_DIRECTORY | O_RDONLY, 0);
}

/* An upload's "info" file: KEY NUL CONTENT-TYPE "\n" META. A key never
 * holds a NUL but may hold "\n" (S3 allows it), so the key ends at the
 * NUL; info written by the first format, "KEY\nCT\nMETA", still reads (an
 * upload begun before an upgrade), its key ending at the first "\n". */
typedef struct {
    char *key, *content_type, *meta; /* into the buffer; content_type and meta "" when none */
} s_info_t;

/* Reads the upload's info into buf and splits it into *in. */
static int s_upload_info(int updir, char *buf, size_t cap, s_info_t *in)
{
    int fd = openat(updir, "info", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return errno = ENOENT, -1;
    buf[n] = '\0';
    in->key = buf;
    in->content_type = in->meta = buf + n; /* "" */
    char *sep = memchr(buf, '\0', (size_t)n);
    if (sep == NULL)
        sep = strchr(buf, '\n'); /* the first format */
    if (sep != NULL) {
        *sep = '\0';
        in->content_type = sep + 1;
        char *nl = strchr(in->content_type, '\n');
        if (nl != NULL) {
            *nl = '\0';
            in->meta = nl + 1;
        }
    }
    return 0;
}

int rf_sgfs_mpu_create(const rf_sgfs_loc_t *loc, const char *key, const char *content_type, const char *meta,
                       char id[33])
{
    int root = s_root(loc->mount), up = -1, rc = -1;
    if (root < 0)
        return -1;
    s_random_hex(id, 16);
    char sub[64];
    snprintf(sub, sizeof(sub), "uploads/%s", id);
    if ((up = s_reserved_dir(root, sub)) < 0)
        goto done;
    close(up);
    up = s_upload_dir(root, id);
    int fd = up >= 0 ? openat(up, "info", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (fd < 0)
        goto done;
    char buf[RF_SGFS_KEY_MAX + RF_SGFS_META_MAX + 256];
    int n = snprintf(buf, sizeof(buf), "%s%c%s\n%s", key, '\0', content_type ? content_type : "", meta ? meta : "");
    rc = n > 0 && (size_t)n < sizeof(buf) && write(fd, buf, (size_t)n) == n ? 0 : -1;
    close(fd);
done:;
    int e = errno;
    if (up >= 0)
        close(up);
    close(root);
    errno = e;
    return rc;
}

int rf_sgfs_mpu_check(const rf_sgfs_loc_t *loc, const char *key, const char *id)
{
    int root = s_root(loc->mount);
    if (root < 0)
        return -1;
    int up = s_upload_dir(root, id), rc = -1;
    char buf[RF_SGFS_KEY_MAX + RF_SGFS_META_MAX + 256];
    s_info_t in;
    if (up >= 0 && s_upload_info(up, buf, sizeof(buf), &in) == 0) {
        rc = strcmp(in.key, key) == 0 ? 0 : (errno = ENOENT, -1);
    } else {
        errno = ENOENT;
    }
    if (up >= 0)
        close(up);
    close(root);
    return rc;
}

rf_sgfs_put_t *rf_sgfs_mpu_part_begin(const rf_sgfs_loc_t *loc, const char *id, int number)
{
    if (number < 1 || number > 10000 || !s_id_ok(id))
        return errno = EINVAL, NULL;
    rf_sgfs_put_t *p = s_put_new(loc, NULL, NULL, true);
    if (p == NULL)
        return NULL;
    p->part = number;
    memcpy(p->upload, id, 33);
    return p;
}

static int s_part_cmp(const void *a, const void *b)
{
    return ((const rf_sgfs_part_t *)a)->number - ((const rf_sgfs_part_t *)b)->number;
}

int rf_sgfs_mpu_parts(const rf_sgfs_loc_t *loc, const char *id, rf_sgfs_part_t **parts, size_t *n)
{
    *parts = NULL;
    *n = 0;
    int root = s_root(loc->mount);
    if (root < 0)
        return -1;
    int up = s_upload_dir(root, id);
    close(root);
    if (up < 0)
        return -1;
    DIR *d = fdopendir(up);
    if (d == NULL) {
        close(up);
        return -1;
    }
    size_t cap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (strlen(de->d_name) != 5 || strspn(de->d_name, "0123456789") != 5)
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
        rf_sgfs_stat_t st;
        if (fd < 0 || s_fill_stat(fd, &st) < 0) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        close(fd);
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            rf_sgfs_part_t *np = realloc(*parts, cap * sizeof(**parts));
            if (np == NULL) {
                rc = -1;
                break;
            }
            *parts = np;
        }
        rf_sgfs_part_t *pt = &(*parts)[(*n)++];
        pt->number = atoi(de->d_name);
        pt->size = st.size;
        pt->mtime_ns = st.mtime_ns;
        snprintf(pt->etag, sizeof(pt->etag), "%.32s", st.etag);
    }
    closedir(d);
    if (rc == 0 && *n > 1)
        qsort(*parts, *n, sizeof(**parts), s_part_cmp);
    if (rc < 0) {
        free(*parts);
        *parts = NULL;
        *n = 0;
        errno = ENOMEM;
    }
    return rc;
}

/* Removes every file of an upload's directory, then the directory. */
static void s_upload_remove(int root, const char *id)
{
    int up = s_upload_dir(root, id);
    if (up < 0)
        return;
    DIR *d = fdopendir(up);
    if (d == NULL) {
        close(up);
        return;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    char p[96];
    snprintf(p, sizeof(p), RF_SGFS_RESERVED "/uploads/%s", id);
    unlinkat(root, p, AT_REMOVEDIR);
}

int rf_sgfs_mpu_abort(const rf_sgfs_loc_t *loc, const char *id)
{
    int root = s_root(loc->mount);
    if (root < 0)
        return -1;
    int up = s_upload_dir(root, id);
    if (up < 0) {
        close(root);
        return errno = ENOENT, -1;
    }
    close(up);
    s_upload_remove(root, id);
    close(root);
    return 0;
}

/* Hex MD5 text (32) to 16 bytes; false when it is not one. */
static bool s_hex16(const char *hex, unsigned char out[16])
{
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = (unsigned char)v;
    }
    return true;
}

/* Opens part `number` of the upload and checks it against the client's
 * etag; the fd (caller closes) and its stat, or -1 (InvalidPart). */
static int s_part_open(int up, int number, const char *etag, rf_sgfs_stat_t *ps, unsigned char bin[16])
{
    char name[16];
    snprintf(name, sizeof(name), "%05d", number);
    int fd = openat(up, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || s_fill_stat(fd, ps) < 0 || strncmp(ps->etag, etag, 32) != 0 || etag[32] != '\0' ||
        !s_hex16(ps->etag, bin)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Appends len bytes of in (from its start) to out: in the kernel where it
 * can (a local mount's parts and object share a file system), else
 * through a buffer (an S3 mount's staged parts into its upload spool,
 * which may be on another one). 0, or -1 (errno). */
static int s_copy_all(int in, int out, uint64_t len)
{
    loff_t off_in = 0;
    uint64_t left = len;
    while (left > 0) {
        ssize_t c = copy_file_range(in, &off_in, out, NULL, left, 0);
        if (c > 0) {
            left -= (uint64_t)c;
            continue;
        }
        if (c == 0 || (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP))
            return c == 0 ? (errno = EIO, -1) : -1;
        char buf[65536];
        while (left > 0) {
            ssize_t n = pread(in, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf), off_in);
            if (n <= 0)
                return n == 0 ? (errno = EIO, -1) : -1;
            for (ssize_t w = 0; w < n;) {
                ssize_t k = write(out, buf + w, (size_t)(n - w));
                if (k < 0)
                    return -1;
                w += k;
            }
            off_in += n;
            left -= (uint64_t)n;
        }
    }
    return 0;
}

int rf_sgfs_mpu_complete(const rf_sgfs_loc_t *loc, const char *id, const int *numbers, const char *const *etags,
                         size_t n, uint64_t min_part, rf_sgfs_stat_t *st, const char **code)
{
    *code = "InternalError";
    int root = s_root(loc->mount), up = -1, rc = -1;
    rf_sgfs_put_t *p = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (root < 0 || md == NULL || EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1)
        goto done;
    if ((up = s_upload_dir(root, id)) < 0) {
        *code = "NoSuchUpload";
        goto done;
    }
    char info[RF_SGFS_KEY_MAX + RF_SGFS_META_MAX + 256];
    s_info_t in;
    if (s_upload_info(up, info, sizeof(info), &in) < 0) {
        *code = "NoSuchUpload";
        goto done;
    }
    const char *ct = in.content_type, *meta = in.meta;
    /* Every part checked before a byte is copied: a bad last part must not
     * cost a copy of all the others (nor report EntityTooSmall for an
     * earlier part when the list names a part that is not there). */
    bool too_small = false;
    for (size_t i = 0; i < n; i++) {
        rf_sgfs_stat_t ps;
        unsigned char bin[16];
        int fd = s_part_open(up, numbers[i], etags[i], &ps, bin);
        if (fd < 0) {
            *code = "InvalidPart";
            goto done;
        }
        close(fd);
        too_small |= i + 1 < n && ps.size < min_part;
    }
    if (too_small) {
        *code = "EntityTooSmall";
        goto done;
    }
    if ((p = s_put_new(loc, ct && *ct ? ct : NULL, meta && *meta ? meta : NULL, false)) == NULL)
        goto done;
    for (size_t i = 0; i < n; i++) {
        rf_sgfs_stat_t ps;
        unsigned char bin[16];
        /* again: a part re-uploaded since the check no longer matches */
        int fd = s_part_open(up, numbers[i], etags[i], &ps, bin);
        if (fd < 0) {
            *code = "InvalidPart";
            goto done;
        }
        EVP_DigestUpdate(md, bin, 16);
        int cr = s_copy_all(fd, p->fd, ps.size);
        close(fd);
        if (cr < 0)
            goto done;
        p->size += ps.size;
    }
    unsigned char d[16];
    unsigned int dl = 0;
    if (EVP_DigestFinal_ex(md, d, &dl) != 1)
        goto done;
    char etag[48];
    for (int i = 0; i < 16; i++)
        sprintf(etag + 2 * i, "%02x", d[i]);
    snprintf(etag + 32, sizeof(etag) - 32, "-%zu", n);
    if (rf_sgfs_put_commit(&p, etag, st) < 0)
        goto done;
    s_upload_remove(root, id);
    rc = 0;
done:;
    int e = errno;
    rf_sgfs_put_abort(&p);
    EVP_MD_CTX_free(md);
    if (up >= 0)
        close(up);
    if (root >= 0)
        close(root);
    errno = e;
    return rc;
}

static int s_upload_cmp(const void *a, const void *b)
{
    const rf_sgfs_upload_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->id, y->id);
}

void rf_sgfs_uploads_free(rf_sgfs_upload_t *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(u[i].key);
    free(u);
}

int rf_sgfs_mpu_list(const rf_sg_bucket_t *b, const char *prefix, size_t max, rf_sgfs_upload_t **out, size_t *n,
                     bool *truncated)
{
    *out = NULL;
    *n = 0;
    *truncated = false;
    size_t cap = 0, pl = strlen(prefix);
    for (size_t i = 0; i < b->n_mounts; i++) {
        const rf_sg_mount_t *m = &b->mounts[i];
        if (!m->expose || m->dir == NULL)
            continue;
        int root = s_root(m);
        int ud = root >= 0 ? s_openat2(root, RF_SGFS_RESERVED "/uploads", O_DIRECTORY | O_RDONLY, 0) : -1;
        if (root >= 0)
            close(root);
        DIR *d = ud >= 0 ? fdopendir(ud) : NULL;
        if (d == NULL) {
            if (ud >= 0)
                close(ud);
            continue;
        }
        for (struct dirent *de; (de = readdir(d)) != NULL;) {
            if (!s_id_ok(de->d_name))
                continue;
            int up = s_openat2(dirfd(d), de->d_name, O_DIRECTORY | O_RDONLY, 0);
            char info[RF_SGFS_KEY_MAX + RF_SGFS_META_MAX + 256];
            struct stat sb;
            s_info_t in;
            int ok = up >= 0 && s_upload_info(up, info, sizeof(info), &in) == 0 && fstat(up, &sb) == 0;
            if (up >= 0)
                close(up);
            if (!ok || strncmp(in.key, prefix, pl) != 0)
                continue;
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                rf_sgfs_upload_t *nu = realloc(*out, cap * sizeof(**out));
                if (nu == NULL)
                    break;
                *out = nu;
            }
            rf_sgfs_upload_t *u = &(*out)[*n];
            if ((u->key = strdup(in.key)) == NULL)
                break;
            memcpy(u->id, de->d_name, 33);
            u->initiated_ns = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec;
            (*n)++;
        }
        closedir(d);
    }
    if (*n > 1)
        qsort(*out, *n, sizeof(**out), s_upload_cmp);
    if (*n > max) {
        for (size_t i = max; i < *n; i++)
            free((*out)[i].key);
        *n = max;
        *truncated = true;
    }
    return 0;
}

/* ---- sweeping what crashes leave ---------------------------------------------------------- */

/* Removes the entries of dir (under root) older than max_age_s: files, and
 * (recursively, one level: uploads) directories. Returns how many. */
static int s_sweep_dir(int root, const char *dir, int64_t max_age_s, bool dirs)
{
    int fd = s_openat2(root, dir, O_DIRECTORY | O_RDONLY, 0);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    int n = 0;
    time_t now = time(NULL);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        struct stat sb;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
            now - sb.st_mtim.tv_sec < max_age_s)
            continue;
        if (S_ISDIR(sb.st_mode) && dirs) {
            char sub[600];
            snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
            s_sweep_dir(root, sub, -1, false); /* an upload's parts and info, whatever their age */
            n += unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) == 0;
        } else if (!S_ISDIR(sb.st_mode)) {
            n += unlinkat(dirfd(d), de->d_name, 0) == 0;
        }
    }
    closedir(d);
    return n;
}

int rf_sgfs_sweep(const rf_sg_bucket_t *b, int64_t tmp_age_s, int64_t upload_age_s)
{
    int n = 0;
    for (size_t i = 0; i < b->n_mounts; i++) {
        const rf_sg_mount_t *m = &b->mounts[i];
        /* an S3-backed mount's staging directory holds its multipart
         * uploads' parts and the joined file of a completion: swept alike,
         * but not made here when no upload ever did */
        if (m->kind != RF_SG_MOUNT_LOCAL && !(m->kind == RF_SG_MOUNT_S3 && m->dir != NULL))
            continue;
        int root = m->kind == RF_SG_MOUNT_S3 ? open(m->dir, O_DIRECTORY | O_PATH | O_CLOEXEC) : s_root(m);
        if (root < 0)
            continue;
        n += s_sweep_dir(root, RF_SGFS_RESERVED "/tmp", tmp_age_s, false);
        n += s_sweep_dir(root, RF_SGFS_RESERVED "/uploads", upload_age_s, true);
        close(root);
    }
    return n;
}
