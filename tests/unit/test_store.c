/*  Unit tests for common/rf_store: a fill read by cursors while it runs
 *  (waits, wake-ups, EOF), the memory tier, what survives a restart and
 *  what a torn, flipped or misplaced file turns into (a miss, and the file
 *  gone), failed and short fills, the SHARE/SOLO/MEMORY keep modes (the
 *  SOLO window and its resume callback), disk eviction under a budget,
 *  purges during a fill, replacing a complete object, descriptor leaks,
 *  and one filler with eight reader threads. Every test works in its own
 *  temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rf_store.h"

/* ---- helpers --------------------------------------------------------------------- */

static const char s_hdrs[] = "content-type\0text/plain\0etag\0\"v1\"\0";
#define S_HDRS_LEN (sizeof(s_hdrs) - 1)

/* Body byte i of pattern `seed`: depends on the offset, so a misplaced
 * read shows. */
static unsigned char s_pat(uint64_t i, unsigned seed)
{
    uint32_t x = (uint32_t)i * 0x9E3779B1u + seed * 0x85EBCA77u + (uint32_t)(i >> 32);
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    return (unsigned char)x;
}

static char *s_body(size_t len, unsigned seed)
{
    char *b = malloc(len ? len : 1);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++)
        b[i] = (char)s_pat(i, seed);
    return b;
}

static rf_meta_t s_meta(int64_t length)
{
    return (rf_meta_t){.status = 200,
                       .stored_at = 1700000000,
                       .expires_at = 1700003600,
                       .age = 7,
                       .lifetime = 3600,
                       .ttl_source = 2,
                       .flags = RF_META_MUST_REVALIDATE,
                       .length = length};
}

static char s_dir[256];

static int s_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

static void s_rmrf(const char *dir)
{
    nftw(dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int s_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(s_dir, sizeof(s_dir), "%s/rf-store-XXXXXX", t != NULL && t[0] != '\0' ? t : "/tmp");
    return mkdtemp(s_dir) != NULL ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    s_rmrf(s_dir);
    return 0;
}

static rf_store_t *s_open(uint64_t memory, uint64_t disk, uint64_t object_max)
{
    rf_store_opts_t o = {.dir = s_dir, .memory = memory, .disk = disk, .memory_object_max = object_max};
    char *err = NULL;
    rf_store_t *s = rf_store_new(&o, &err);
    if (s == NULL)
        fail_msg("rf_store_new: %s", err ? err : "?");
    assert_null(err);
    return s;
}

static size_t s_nfiles;
static int s_count_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (type == FTW_F && S_ISREG(st->st_mode))
        s_nfiles++;
    return 0;
}

/* Regular files under s_dir/sub ("": objects and tmp; the lock file is
 * not counted). */
static size_t s_files(const char *sub)
{
    if (sub[0] == '\0')
        return s_files("objects") + s_files("tmp");
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", s_dir, sub);
    s_nfiles = 0;
    nftw(p, s_count_one, 16, FTW_PHYS);
    return s_nfiles;
}

static int s_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

static bool s_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static off_t s_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void s_path(rf_store_t *s, const char *key, char *buf)
{
    rf_store_path(s, key, strlen(key), buf, 4096);
}

static void s_flip(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void s_copy(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(in >= 0 && out >= 0);
    char buf[8192];
    for (ssize_t n; (n = read(in, buf, sizeof(buf))) > 0;)
        assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

static rf_lookup_t s_lookup(rf_store_t *s, const char *key, bool claim, bool replace, rf_obj_t **o)
{
    return rf_store_lookup(s, key, strlen(key), claim, replace, o);
}

/* A reader whose wake-ups are counted (single-threaded tests). */
typedef struct {
    rf_cursor_t c;
    int wakes;
} s_rd_t;

static void s_rd_wake(rf_waiter_t *w)
{
    s_rd_t *r = (s_rd_t *)(void *)((char *)w - offsetof(s_rd_t, c.waiter));
    r->wakes++;
}

/* Reads until anything but DATA, appending to out[*got..cap) (chunks of
 * an odd size); returns that last result. */
static rf_read_t s_drain(rf_cursor_t *c, char *out, size_t cap, size_t *got)
{
    static char chunk[7777];
    for (;;) {
        size_t n = 12345;
        rf_read_t r = rf_cursor_read(c, chunk, sizeof(chunk), &n);
        if (r != RF_READ_DATA) {
            assert_int_equal(n, 0);
            return r;
        }
        assert_true(n > 0 && n <= sizeof(chunk));
        if (*got + n > cap)
            fail_msg("read %zu bytes past the %zu expected", *got + n - cap, cap);
        memcpy(out + *got, chunk, n);
        *got += n;
    }
}

/* Attaches a cursor to o and reads all of it; asserts the body is exactly
 * `body` and the read ends with EOF. */
static void s_read_whole(rf_obj_t *o, const char *body, size_t len)
{
    rf_cursor_t c;
    assert_int_equal(rf_cursor_init(&c, o, false, NULL), 0);
    char *out = malloc(len + 1);
    size_t got = 0;
    assert_int_equal(s_drain(&c, out, len + 1, &got), RF_READ_EOF);
    assert_int_equal(got, len);
    assert_memory_equal(out, body, len);
    size_t n = 1;
    assert_int_equal(rf_cursor_read(&c, out, len + 1, &n), RF_READ_EOF); /* stays at EOF */
    assert_int_equal(n, 0);
    free(out);
    rf_cursor_close(&c);
    assert_null(c.obj);
}

/* Claims key, sets the head and appends body in pieces; does not finish.
 * Returns the claimed object (caller owns). */
static rf_obj_t *s_start(rf_store_t *s, const char *key, size_t len, rf_keep_t keep, bool known)
{
    rf_obj_t *o = NULL;
    assert_int_equal(s_lookup(s, key, true, false, &o), RF_LOOKUP_CLAIM);
    assert_non_null(o);
    rf_meta_t m = s_meta(known ? (int64_t)len : -1);
    assert_int_equal(rf_obj_set_head(o, &m, s_hdrs, S_HDRS_LEN, keep), 0);
    return o;
}

static void s_append(rf_obj_t *o, const char *body, size_t len)
{
    for (size_t off = 0, piece = 1000; off < len; off += piece, piece = piece * 3 % 20011 + 1)
        assert_int_equal(rf_obj_append(o, body + off, off + piece <= len ? piece : len - off), 0);
}

/* A whole fill of key, finished ok. */
static void s_put(rf_store_t *s, const char *key, const char *body, size_t len, rf_keep_t keep, bool known)
{
    rf_obj_t *o = s_start(s, key, len, keep, known);
    s_append(o, body, len);
    rf_obj_finish(o, true);
    assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
    rf_obj_unref(&o);
    assert_null(o);
}

static void s_expect_hit(rf_store_t *s, const char *key, const char *body, size_t len)
{
    rf_obj_t *o = NULL;
    assert_int_equal(s_lookup(s, key, false, false, &o), RF_LOOKUP_HIT);
    assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
    assert_int_equal(rf_obj_length(o), len);
    s_read_whole(o, body, len);
    rf_obj_unref(&o);
}

static void s_expect_miss(rf_store_t *s, const char *key)
{
    rf_obj_t *o = (rf_obj_t *)&o;
    assert_int_equal(s_lookup(s, key, false, false, &o), RF_LOOKUP_MISS);
    assert_null(o);
}

/* ---- fill and read ------------------------------------------------------------------ */

static void test_fill_read_while_filling(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 100000; /* above memory_object_max: read back from the file */
    char *body = s_body(len, 1);
    const char *key = "example.com/a.bin";

    rf_obj_t *o = NULL, *o2 = NULL;
    assert_int_equal(s_lookup(s, key, true, false, &o), RF_LOOKUP_CLAIM);
    assert_int_equal(rf_obj_state(o), RF_OBJ_FILLING);
    assert_false(rf_obj_has_head(o));
    size_t klen;
    const char *k = rf_obj_key(o, &klen);
    assert_int_equal(klen, strlen(key));
    assert_memory_equal(k, key, klen);

    /* a concurrent miss joins the same fill */
    assert_int_equal(s_lookup(s, key, true, false, &o2), RF_LOOKUP_BUSY);
    assert_ptr_equal(o2, o);
    rf_obj_unref(&o2);
    assert_int_equal(s_lookup(s, key, false, false, &o2), RF_LOOKUP_BUSY);
    assert_ptr_equal(o2, o);

    /* a reader attached before the head waits for it */
    s_rd_t r = {0};
    assert_int_equal(rf_cursor_init(&r.c, o2, false, s_rd_wake), 0);
    rf_obj_unref(&o2);
    assert_int_equal(rf_obj_readers(o), 1);
    assert_int_equal(rf_cursor_head(&r.c), RF_READ_WAIT);
    char buf[4096];
    size_t n = 99;
    assert_int_equal(rf_cursor_read(&r.c, buf, sizeof(buf), &n), RF_READ_WAIT);
    assert_int_equal(n, 0);
    assert_int_equal(r.wakes, 0);

    rf_meta_t m = s_meta((int64_t)len);
    assert_int_equal(rf_obj_set_head(o, &m, s_hdrs, S_HDRS_LEN, RF_KEEP_DISK), 0);
    assert_int_equal(r.wakes, 1);
    assert_true(rf_obj_has_head(o));
    assert_int_equal(rf_obj_keep(o), RF_KEEP_DISK);
    assert_int_equal(rf_cursor_head(&r.c), RF_READ_DATA);
    const rf_meta_t *mm = rf_obj_meta(o);
    assert_int_equal(mm->status, 200);
    assert_int_equal(mm->stored_at, 1700000000);
    assert_int_equal(mm->expires_at, 1700003600);
    assert_int_equal(mm->age, 7);
    assert_int_equal(mm->flags, RF_META_MUST_REVALIDATE);
    assert_int_equal(mm->length, (int64_t)len);
    size_t hl;
    const char *h = rf_obj_headers(o, &hl);
    assert_int_equal(hl, S_HDRS_LEN);
    assert_memory_equal(h, s_hdrs, hl);
    assert_int_equal(rf_cursor_read(&r.c, buf, sizeof(buf), &n), RF_READ_WAIT); /* head, no body yet */

    /* data arrives: the waiter is woken and reads exactly the new bytes */
    assert_int_equal(rf_obj_append(o, body, 1000), 0);
    assert_int_equal(r.wakes, 2);
    assert_int_equal(rf_obj_length(o), 1000);
    assert_int_equal(rf_cursor_read(&r.c, buf, sizeof(buf), &n), RF_READ_DATA);
    assert_int_equal(n, 1000);
    assert_memory_equal(buf, body, 1000);
    assert_int_equal(rf_cursor_read(&r.c, buf, sizeof(buf), &n), RF_READ_WAIT);
    assert_int_equal(rf_obj_append(o, body + 1000, 3000), 0);
    assert_int_equal(r.wakes, 3);
    assert_int_equal(rf_obj_append(o, body + 4000, 0), 0); /* empty append: fine */
    assert_int_equal(rf_cursor_read(&r.c, buf, 1500, &n), RF_READ_DATA);
    assert_int_equal(n, 1500);
    assert_memory_equal(buf, body + 1000, 1500);
    assert_int_equal(rf_cursor_read(&r.c, buf, sizeof(buf), &n), RF_READ_DATA);
    assert_int_equal(n, 1500);
    assert_memory_equal(buf, body + 2500, 1500);
    assert_int_equal(r.c.off, 4000);
    assert_int_equal(rf_cursor_read(&r.c, buf, sizeof(buf), &n), RF_READ_WAIT);

    /* while filling: a temporary file, nothing under the object's name */
    char path[4096];
    s_path(s, key, path);
    assert_false(s_exists(path));
    assert_int_equal(s_files("tmp"), 1);
    assert_int_equal(s_files("objects"), 0);
    s_expect_miss(s, "example.com/other");

    char *out = malloc(len);
    memcpy(out, body, 4000);
    size_t got = 4000;
    s_append(o, body + 4000, len - 4000);
    assert_int_equal(s_drain(&r.c, out, len, &got), RF_READ_WAIT); /* all read: not complete yet */
    assert_int_equal(got, len);
    int wakes = r.wakes;
    rf_obj_finish(o, true);
    assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
    assert_int_equal(rf_obj_length(o), len);
    assert_true(r.wakes > wakes); /* the armed waiter learns about the end */
    assert_true(s_exists(path));
    assert_int_equal(s_files("tmp"), 0);
    assert_int_equal(s_files("objects"), 1);
    assert_int_equal(rf_store_verify_file(path), 0);
    assert_true(s_size(path) > (off_t)(len + strlen(key) + S_HDRS_LEN));

    assert_int_equal(s_drain(&r.c, out, len, &got), RF_READ_EOF);
    assert_int_equal(got, len);
    assert_memory_equal(out, body, len);
    free(out);
    rf_cursor_close(&r.c);
    assert_int_equal(rf_obj_readers(o), 0);
    rf_obj_unref(&o);

    /* a later lookup is a hit with the same bytes, head and meta */
    assert_int_equal(s_lookup(s, key, true, false, &o), RF_LOOKUP_HIT);
    assert_int_equal(rf_obj_meta(o)->status, 200);
    assert_int_equal(rf_obj_meta(o)->expires_at, 1700003600);
    h = rf_obj_headers(o, &hl);
    assert_int_equal(hl, S_HDRS_LEN);
    assert_memory_equal(h, s_hdrs, hl);
    assert_null(rf_obj_body(o));
    s_read_whole(o, body, len);
    /* a range [off, end) */
    rf_cursor_t c;
    assert_int_equal(rf_cursor_init(&c, o, false, NULL), 0);
    c.off = 50000;
    c.end = 50010;
    assert_int_equal(rf_cursor_read(&c, buf, sizeof(buf), &n), RF_READ_DATA);
    assert_int_equal(n, 10);
    assert_memory_equal(buf, body + 50000, 10);
    assert_int_equal(rf_cursor_read(&c, buf, sizeof(buf), &n), RF_READ_EOF);
    rf_cursor_close(&c);
    rf_cursor_close(&c); /* twice is safe */
    rf_obj_unref(&o);

    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.objects, 1);
    assert_true(st.disk_bytes >= len && st.disk_bytes < len + 4096);
    assert_int_equal(st.memory_bytes, 0);
    rf_store_destroy(&s);
    assert_null(s);
    rf_store_destroy(&s);
    free(body);
}

/* ---- memory tier ------------------------------------------------------------------- */

static void test_memory_tier(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t small = 1000, grown = 40000, big = 100000;
    char *b1 = s_body(small, 2), *b2 = s_body(grown, 3), *b3 = s_body(big, 4);
    s_put(s, "small", b1, small, RF_KEEP_DISK, true);
    s_put(s, "grown", b2, grown, RF_KEEP_DISK, false); /* unknown length: the buffer grows */
    s_put(s, "big", b3, big, RF_KEEP_DISK, true);
    s_put(s, "big-unknown", b3, big, RF_KEEP_DISK, false);

    const struct {
        const char *key;
        const char *body;
        size_t len;
        bool in_memory;
    } cases[] = {
        {"small", b1, small, true},
        {"grown", b2, grown, true},
        {"big", b3, big, false},
        {"big-unknown", b3, big, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rf_obj_t *o = NULL;
        assert_int_equal(s_lookup(s, cases[i].key, false, false, &o), RF_LOOKUP_HIT);
        rf_buf_t *b = rf_obj_body(o);
        if (cases[i].in_memory) {
            assert_non_null(b);
            assert_int_equal(b->len, cases[i].len);
            assert_memory_equal(b->data, cases[i].body, cases[i].len);
            rf_buf_unref(&b);
            assert_null(b);
        } else {
            assert_null(b);
        }
        s_read_whole(o, cases[i].body, cases[i].len);
        rf_obj_unref(&o);
        char path[4096];
        s_path(s, cases[i].key, path);
        assert_true(s_exists(path)); /* DISK: on disk whether or not in memory */
    }
    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.objects, 4);
    assert_true(st.memory_bytes >= small + grown && st.memory_bytes < small + grown + 4096);
    assert_true(st.disk_bytes >= small + grown + 2 * big);
    rf_store_destroy(&s);
    free(b1), free(b2), free(b3);
}

/* ---- restart ------------------------------------------------------------------------- */

static void test_restart(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 100000, slen = 500;
    char *body = s_body(len, 5), *sb = s_body(slen, 6);
    const char *keys[] = {"keep", "trunc", "bodyflip", "headflip", "metaflip", "moved", "keep-small"};
    for (int i = 0; i < 6; i++)
        s_put(s, keys[i], body, len, RF_KEEP_DISK, i % 2 == 0);
    s_put(s, "keep-small", sb, slen, RF_KEEP_DISK, true);
    char p[7][4096], target[4096];
    for (int i = 0; i < 7; i++)
        s_path(s, keys[i], p[i]);
    s_path(s, "never-stored", target);
    /* file = header | key | meta | body */
    off_t head = s_size(p[0]) - (off_t)(strlen(keys[0]) + S_HDRS_LEN + len);
    assert_true(head > 16 && head < 1024);
    rf_store_destroy(&s);

    /* what a crash or a bad disk leaves */
    char junk[512];
    snprintf(junk, sizeof(junk), "%s/tmp/123-4.tmp", s_dir);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fputs("half a fill", f);
    fclose(f);
    assert_int_equal(truncate(p[1], s_size(p[1]) - 1), 0);
    s_flip(p[2], s_size(p[2]) - 1);                  /* the last body byte */
    s_flip(p[3], head - 20);                         /* a header field */
    s_flip(p[4], head + (off_t)strlen(keys[4]) + 3); /* inside the stored headers */
    assert_int_equal(rf_store_verify_file(p[0]), 0);
    assert_int_equal(rf_store_verify_file(p[2]), -1);
    assert_int_equal(rf_store_verify_file(p[3]), -1);
    char tdir[4096];
    snprintf(tdir, sizeof(tdir), "%s", target);
    *strrchr(tdir, '/') = '\0';
    mkdir(tdir, 0700);
    assert_int_equal(rename(p[5], target), 0);

    s = s_open(1 << 20, 64 << 20, 64 << 10);
    assert_false(s_exists(junk));
    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.dropped_at_load, 4); /* truncated, header, meta, moved */

    /* the intact ones: same bytes, head and meta */
    rf_obj_t *o = NULL;
    assert_int_equal(s_lookup(s, "keep", true, false, &o), RF_LOOKUP_HIT);
    const rf_meta_t *m = rf_obj_meta(o);
    assert_int_equal(m->status, 200);
    assert_int_equal(m->stored_at, 1700000000);
    assert_int_equal(m->expires_at, 1700003600);
    assert_int_equal(m->age, 7);
    assert_int_equal(m->flags, RF_META_MUST_REVALIDATE);
    assert_int_equal(m->lifetime, 3600);
    assert_int_equal(m->ttl_source, 2);
    assert_int_equal(m->length, (int64_t)len);
    size_t hl;
    const char *h = rf_obj_headers(o, &hl);
    assert_int_equal(hl, S_HDRS_LEN);
    assert_memory_equal(h, s_hdrs, hl);
    size_t kl;
    assert_memory_equal(rf_obj_key(o, &kl), "keep", 4);
    assert_int_equal(kl, 4);
    s_read_whole(o, body, len);
    rf_obj_unref(&o);
    s_expect_hit(s, "keep-small", sb, slen);

    /* the damaged ones: misses, and their files are gone */
    s_expect_miss(s, "trunc");
    assert_false(s_exists(p[1]));
    assert_true(s_exists(p[2])); /* only its body is bad: found at the first lookup */
    s_expect_miss(s, "bodyflip");
    assert_false(s_exists(p[2]));
    s_expect_miss(s, "bodyflip");
    s_expect_miss(s, "headflip");
    assert_false(s_exists(p[3]));
    s_expect_miss(s, "metaflip");
    assert_false(s_exists(p[4]));
    s_expect_miss(s, "never-stored");
    s_expect_miss(s, "moved");
    assert_false(s_exists(target));
    assert_int_equal(s_files("objects"), 2);
    assert_int_equal(s_files("tmp"), 0);

    /* a miss claims as usual and refills over the damaged name */
    assert_int_equal(s_lookup(s, "bodyflip", true, false, &o), RF_LOOKUP_CLAIM);
    rf_meta_t mm = s_meta((int64_t)slen);
    assert_int_equal(rf_obj_set_head(o, &mm, s_hdrs, S_HDRS_LEN, RF_KEEP_DISK), 0);
    assert_int_equal(rf_obj_append(o, sb, slen), 0);
    rf_obj_finish(o, true);
    rf_obj_unref(&o);
    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_hit(s, "bodyflip", sb, slen);
    s_expect_hit(s, "keep", body, len);
    rf_store_stats(s, &st);
    assert_int_equal(st.loaded, 3);
    assert_int_equal(st.dropped_at_load, 0);
    assert_int_equal(st.objects, 3);
    rf_store_destroy(&s);
    free(body), free(sb);
}

/* A copy of an object file in the wrong subdirectory (under its right
 * name) must neither be indexed nor cost the real file. */
static void test_restart_stray_copy(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 3000;
    char *body = s_body(len, 7);
    s_put(s, "k", body, len, RF_KEEP_DISK, true);
    char path[4096], stray[4200];
    s_path(s, "k", path);
    rf_store_destroy(&s);
    const char *name = strrchr(path, '/') + 1;
    snprintf(stray, sizeof(stray), "%s/objects/zz", s_dir); /* never a hex prefix */
    assert_int_equal(mkdir(stray, 0700), 0);
    snprintf(stray + strlen(stray), sizeof(stray) - strlen(stray), "/%s", name);
    s_copy(path, stray);

    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_hit(s, "k", body, len);
    assert_true(s_exists(path));
    assert_false(s_exists(stray));
    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_hit(s, "k", body, len);
    rf_store_destroy(&s);
    free(body);
}

/* ---- failed fills ------------------------------------------------------------------- */

static void test_failed_fill(void **state)
{
    (void)state;
    int fds = s_fds();
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 100000;
    char *body = s_body(len, 8);
    char *out = malloc(len);
    for (int small = 0; small < 2; small++) {
        size_t part = small ? 2000 : 60000; /* small: held in memory too */
        rf_obj_t *o = s_start(s, "fails", small ? 5000 : len, RF_KEEP_DISK, true);
        s_rd_t early = {0}, late = {0};
        assert_int_equal(rf_cursor_init(&early.c, o, false, s_rd_wake), 0);
        assert_int_equal(rf_cursor_init(&late.c, o, false, s_rd_wake), 0);
        s_append(o, body, part);
        size_t got = 0;
        assert_int_equal(s_drain(&early.c, out, len, &got), RF_READ_WAIT);
        assert_int_equal(got, part);
        assert_memory_equal(out, body, part);
        assert_int_equal(s_files("tmp"), 1);
        const char *why = NULL;
        assert_int_equal(rf_obj_error(o, &why), 0);
        assert_string_equal(why, "");
        rf_obj_set_error(o, 504, small ? "origin timed out" : "origin closed");
        int w = early.wakes;
        rf_obj_finish(o, false);
        assert_int_equal(rf_obj_error(o, &why), 504);
        assert_string_equal(why, small ? "origin timed out" : "origin closed");
        assert_true(early.wakes > w); /* a waiting reader is told */
        assert_int_equal(rf_obj_state(o), RF_OBJ_FAILED);
        assert_int_equal(s_drain(&early.c, out, len, &got), RF_READ_FAILED);
        assert_int_equal(got, part);
        got = 0;
        rf_read_t r = s_drain(&late.c, out, len, &got);
        assert_int_equal(r, RF_READ_FAILED);
        assert_true(got <= part);
        assert_memory_equal(out, body, got);
        rf_obj_finish(o, true); /* too late: changes nothing */
        assert_int_equal(rf_obj_state(o), RF_OBJ_FAILED);
        assert_int_equal(rf_obj_append(o, body, 10), -1);
        rf_cursor_close(&early.c);
        rf_cursor_close(&late.c);
        s_expect_miss(s, "fails");
        assert_int_equal(s_files(""), 0);
        rf_obj_unref(&o);
    }

    /* failed before the head: a reader waiting for it is woken and told */
    rf_obj_t *o = NULL;
    assert_int_equal(s_lookup(s, "nohead", true, false, &o), RF_LOOKUP_CLAIM);
    s_rd_t r = {0};
    assert_int_equal(rf_cursor_init(&r.c, o, false, s_rd_wake), 0);
    assert_int_equal(rf_cursor_head(&r.c), RF_READ_WAIT);
    rf_obj_finish(o, false);
    assert_int_equal(r.wakes, 1);
    assert_int_equal(rf_cursor_head(&r.c), RF_READ_FAILED);
    size_t n;
    assert_int_equal(rf_cursor_read(&r.c, out, 10, &n), RF_READ_FAILED);
    rf_cursor_close(&r.c);
    rf_obj_unref(&o);
    s_expect_miss(s, "nohead");

    /* finishing ok without a head is a failure */
    assert_int_equal(s_lookup(s, "nohead", true, false, &o), RF_LOOKUP_CLAIM);
    rf_obj_finish(o, true);
    assert_int_equal(rf_obj_state(o), RF_OBJ_FAILED);
    rf_obj_unref(&o);
    s_expect_miss(s, "nohead");

    assert_int_equal(s_files(""), 0);
    rf_store_destroy(&s);
    assert_int_equal(s_fds(), fds);
    free(body), free(out);
}

static void test_length_mismatch(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    char *body = s_body(200, 9), out[512];
    for (int keep = RF_KEEP_DISK; keep <= RF_KEEP_SHARE; keep++) {
        for (int longer = 0; longer < 2; longer++) {
            rf_obj_t *o = NULL;
            assert_int_equal(s_lookup(s, "len", true, false, &o), RF_LOOKUP_CLAIM);
            rf_meta_t m = s_meta(100);
            assert_int_equal(rf_obj_set_head(o, &m, s_hdrs, S_HDRS_LEN, (rf_keep_t)keep), 0);
            rf_cursor_t c;
            assert_int_equal(rf_cursor_init(&c, o, false, NULL), 0);
            size_t n = longer ? 150 : 50, got = 0;
            assert_int_equal(rf_obj_append(o, body, n), 0);
            rf_obj_finish(o, true);
            assert_int_equal(rf_obj_state(o), RF_OBJ_FAILED);
            assert_int_equal(s_drain(&c, out, sizeof(out), &got), RF_READ_FAILED);
            assert_true(got <= n);
            rf_cursor_close(&c);
            rf_obj_unref(&o);
            s_expect_miss(s, "len");
            assert_int_equal(s_files(""), 0);
        }
    }
    /* and the right length is kept */
    s_put(s, "len", body, 100, RF_KEEP_DISK, true);
    s_expect_hit(s, "len", body, 100);
    rf_store_destroy(&s);
    free(body);
}

/* ---- keep modes ------------------------------------------------------------------- */

static void test_share(void **state)
{
    (void)state;
    int fds = s_fds();
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 300000;
    char *body = s_body(len, 10), *out = malloc(len);
    rf_obj_t *o = s_start(s, "shared", len, RF_KEEP_SHARE, true);
    assert_int_equal(rf_obj_keep(o), RF_KEEP_SHARE);
    s_rd_t r1 = {0}, r2 = {0};
    assert_int_equal(rf_cursor_init(&r1.c, o, true, s_rd_wake), 0);
    assert_int_equal(rf_obj_append(o, body, 100000), 0);
    /* others join while it fills */
    rf_obj_t *j = NULL;
    assert_int_equal(s_lookup(s, "shared", true, false, &j), RF_LOOKUP_BUSY);
    assert_ptr_equal(j, o);
    assert_int_equal(rf_cursor_init(&r2.c, j, false, s_rd_wake), 0);
    rf_obj_unref(&j);
    assert_int_equal(rf_cursor_head(&r2.c), RF_READ_DATA);
    assert_int_equal(rf_obj_readers(o), 2);
    size_t got1 = 0, got2 = 0;
    assert_int_equal(s_drain(&r1.c, out, len, &got1), RF_READ_WAIT);
    assert_int_equal(got1, 100000);
    assert_int_equal(s_files(""), 0); /* nothing kept: no named file at all */
    s_append(o, body + 100000, len - 100000);
    rf_obj_finish(o, true);
    assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
    assert_true(r1.wakes >= 1);
    assert_int_equal(s_drain(&r1.c, out, len, &got1), RF_READ_EOF);
    assert_int_equal(got1, len);
    assert_memory_equal(out, body, len);
    memset(out, 0, len);
    assert_int_equal(s_drain(&r2.c, out, len, &got2), RF_READ_EOF);
    assert_int_equal(got2, len);
    assert_memory_equal(out, body, len);
    rf_cursor_close(&r1.c);
    rf_cursor_close(&r2.c);
    /* gone from the index; a holder can still read it */
    s_expect_miss(s, "shared");
    assert_null(rf_obj_body(o));
    s_read_whole(o, body, len);
    rf_obj_unref(&o);
    assert_int_equal(s_files(""), 0);
    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.objects, 0);
    assert_int_equal(st.disk_bytes, 0);
    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_miss(s, "shared");
    rf_store_destroy(&s);
    assert_int_equal(s_fds(), fds);
    free(body), free(out);
}

static int s_resumed;
static void s_resume(void *arg)
{
    (void)arg;
    s_resumed++;
}

#define S_WINDOW (512 * 1024)
#define S_CHUNK (64 * 1024)

static void test_solo(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 28 * S_CHUNK + 123;
    char *body = s_body(len, 11), *out = malloc(len);
    rf_obj_t *o = NULL;
    assert_int_equal(s_lookup(s, "private", true, false, &o), RF_LOOKUP_CLAIM);
    s_rd_t first = {0}, other = {0};
    assert_int_equal(rf_cursor_init(&first.c, o, true, s_rd_wake), 0);
    rf_obj_t *j = NULL;
    assert_int_equal(s_lookup(s, "private", false, false, &j), RF_LOOKUP_BUSY); /* joined before the head */
    assert_int_equal(rf_cursor_init(&other.c, j, false, s_rd_wake), 0);
    rf_obj_unref(&j);
    assert_int_equal(rf_cursor_head(&other.c), RF_READ_WAIT);
    rf_meta_t m = s_meta((int64_t)len);
    assert_int_equal(rf_obj_set_head(o, &m, s_hdrs, S_HDRS_LEN, RF_KEEP_SOLO), 0);
    assert_int_equal(rf_obj_keep(o), RF_KEEP_SOLO);
    assert_true(other.wakes >= 1);
    /* not shareable: later requests miss at once, joined ones pass */
    s_expect_miss(s, "private");
    assert_int_equal(rf_cursor_head(&other.c), RF_READ_PASS);
    size_t n;
    assert_int_equal(rf_cursor_read(&other.c, out, len, &n), RF_READ_PASS);
    assert_int_equal(rf_cursor_head(&first.c), RF_READ_DATA);

    /* the window: append says pause once 512 KiB wait for the reader */
    size_t off = 0;
    for (int i = 0; i < S_WINDOW / S_CHUNK - 1; i++, off += S_CHUNK)
        assert_int_equal(rf_obj_append(o, body + off, S_CHUNK), 0);
    assert_int_equal(rf_obj_append(o, body + off, S_CHUNK), 1);
    off += S_CHUNK;
    s_resumed = 0;
    rf_obj_on_drain(o, s_resume, NULL);
    assert_int_equal(s_resumed, 0);
    size_t got = 0;
    for (int i = 0; i < 4; i++) { /* 256 KiB still waiting: not yet */
        assert_int_equal(rf_cursor_read(&first.c, out + got, S_CHUNK, &n), RF_READ_DATA);
        assert_int_equal(n, S_CHUNK);
        got += n;
    }
    assert_int_equal(s_resumed, 0);
    assert_int_equal(rf_cursor_read(&first.c, out + got, S_CHUNK, &n), RF_READ_DATA);
    got += n;
    assert_int_equal(s_resumed, 1);
    assert_int_equal(s_drain(&first.c, out, len, &got), RF_READ_WAIT);
    assert_int_equal(got, off);
    assert_int_equal(s_resumed, 1); /* once per pause */
    assert_memory_equal(out, body, got);

    /* a second pause: resumed again; then without a callback (the filler
     * gave up) a drained pause calls nothing */
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            rf_obj_on_drain(o, NULL, NULL);
        for (int i = 0; i < S_WINDOW / S_CHUNK - 1; i++, off += S_CHUNK)
            assert_int_equal(rf_obj_append(o, body + off, S_CHUNK), 0);
        assert_int_equal(rf_obj_append(o, body + off, S_CHUNK), 1);
        off += S_CHUNK;
        assert_int_equal(s_resumed, 1 + round);
        assert_int_equal(s_drain(&first.c, out, len, &got), RF_READ_WAIT);
        assert_int_equal(got, off);
        assert_int_equal(s_resumed, 2);
    }
    rf_obj_on_drain(o, s_resume, NULL);
    assert_int_equal(s_resumed, 2); /* registering resumes nothing by itself */

    /* the rest; small appends after a drain do not pause */
    int w = first.wakes;
    assert_int_equal(rf_obj_append(o, body + off, len - off), 0);
    assert_true(first.wakes > w);
    rf_obj_finish(o, true);
    assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
    assert_int_equal(s_drain(&first.c, out, len, &got), RF_READ_EOF);
    assert_int_equal(got, len);
    assert_memory_equal(out, body, len);
    assert_int_equal(s_resumed, 2);
    rf_cursor_close(&first.c);
    rf_cursor_close(&other.c);
    rf_obj_unref(&o);
    s_expect_miss(s, "private");
    assert_int_equal(s_files(""), 0);

    /* a small private response complete before its reader attached */
    o = s_start(s, "private", 1000, RF_KEEP_SOLO, true);
    assert_int_equal(rf_obj_append(o, body, 1000), 0);
    rf_obj_finish(o, true);
    rf_cursor_t c;
    assert_int_equal(rf_cursor_init(&c, o, true, NULL), 0);
    got = 0;
    assert_int_equal(s_drain(&c, out, len, &got), RF_READ_EOF);
    assert_int_equal(got, 1000);
    assert_memory_equal(out, body, 1000);
    rf_cursor_close(&c);
    rf_obj_unref(&o);
    rf_store_destroy(&s);
    free(body), free(out);
}

static void test_keep_memory(void **state)
{
    (void)state;
    int fds = s_fds();
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t small = 5000, big = 200000;
    char *sb = s_body(small, 12), *bb = s_body(big, 13), *out = malloc(big);

    rf_obj_t *o = s_start(s, "vol", small, RF_KEEP_MEMORY, false);
    s_rd_t r = {0};
    assert_int_equal(rf_cursor_init(&r.c, o, false, s_rd_wake), 0);
    s_append(o, sb, 3000);
    assert_int_equal(s_files(""), 0);
    size_t got = 0;
    assert_int_equal(s_drain(&r.c, out, big, &got), RF_READ_WAIT);
    s_append(o, sb + 3000, small - 3000);
    rf_obj_finish(o, true);
    assert_int_equal(s_drain(&r.c, out, big, &got), RF_READ_EOF);
    assert_int_equal(got, small);
    assert_memory_equal(out, sb, small);
    rf_cursor_close(&r.c);
    rf_obj_unref(&o);
    assert_int_equal(s_files(""), 0); /* never on disk */

    assert_int_equal(s_lookup(s, "vol", false, false, &o), RF_LOOKUP_HIT);
    assert_int_equal(rf_obj_keep(o), RF_KEEP_MEMORY);
    rf_buf_t *b = rf_obj_body(o);
    assert_non_null(b);
    assert_int_equal(b->len, small);
    assert_memory_equal(b->data, sb, small);
    rf_buf_unref(&b);
    s_read_whole(o, sb, small);
    rf_obj_unref(&o);
    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.disk_bytes, 0);
    assert_true(st.memory_bytes >= small);

    /* larger than memory_object_max: degrades (not kept), read in full */
    for (int known = 0; known < 2; known++) {
        o = s_start(s, "vol-big", big, RF_KEEP_MEMORY, known);
        assert_int_equal(rf_cursor_init(&r.c, o, false, s_rd_wake), 0);
        got = 0;
        s_append(o, bb, 30000);
        assert_int_equal(s_drain(&r.c, out, big, &got), RF_READ_WAIT);
        assert_int_equal(got, 30000);
        s_append(o, bb + 30000, big - 30000);
        assert_int_equal(rf_obj_keep(o), RF_KEEP_SHARE);
        assert_int_equal(s_files(""), 0);
        rf_obj_finish(o, true);
        assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
        assert_int_equal(s_drain(&r.c, out, big, &got), RF_READ_EOF);
        assert_int_equal(got, big);
        assert_memory_equal(out, bb, big);
        rf_cursor_close(&r.c);
        assert_null(rf_obj_body(o));
        s_read_whole(o, bb, big);
        rf_obj_unref(&o);
        s_expect_miss(s, "vol-big");
        assert_int_equal(s_files(""), 0);
    }
    s_expect_hit(s, "vol", sb, small);

    /* not kept across a restart */
    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_miss(s, "vol");
    rf_store_destroy(&s);
    assert_int_equal(s_fds(), fds); /* no descriptor left behind */
    free(sb), free(bb), free(out);
}

/* ---- eviction ------------------------------------------------------------------------ */

static void test_eviction(void **state)
{
    (void)state;
    const size_t len = 10000, per = len + 512; /* a body and room for its head */
    const uint64_t budget = 5 * per;
    rf_store_t *s = s_open(0, budget, 0); /* disk only */
    char key[32], *bodies[20];
    for (int i = 0; i < 20; i++)
        bodies[i] = s_body(len, 100 + (unsigned)i);

    /* k0's cursors come from the claimer's reference: a lookup hit would
     * make k0 hot, and S3-FIFO would then keep it */
    rf_obj_t *o = s_start(s, "k0", len, RF_KEEP_DISK, true);
    s_append(o, bodies[0], len);
    rf_obj_finish(o, true);
    rf_cursor_t c, c2; /* c2: one that has read nothing yet */
    assert_int_equal(rf_cursor_init(&c, o, false, NULL), 0);
    assert_int_equal(rf_cursor_init(&c2, o, false, NULL), 0);
    rf_obj_unref(&o);
    char *out = malloc(len);
    size_t n, got = 0;
    assert_int_equal(rf_cursor_read(&c, out, 4000, &n), RF_READ_DATA);
    got = n;

    for (int i = 1; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        s_put(s, key, bodies[i], len, RF_KEEP_DISK, true);
        rf_store_stats_t st;
        rf_store_stats(s, &st);
        assert_true(st.disk_bytes <= budget);
        assert_true(st.objects <= 5);
        assert_int_equal(s_files("objects"), st.objects);
    }
    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.evicted_disk, 20 - st.objects);
    assert_true(st.evicted_disk >= 15);
    char path[4096];
    s_path(s, "k0", path);
    assert_false(s_exists(path));
    s_expect_miss(s, "k0");
    s_expect_hit(s, "k19", bodies[19], len); /* the newest stays */
    int hits = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        s_path(s, key, path);
        rf_obj_t *x = NULL;
        rf_lookup_t l = s_lookup(s, key, false, false, &x);
        assert_int_equal(s_exists(path), l == RF_LOOKUP_HIT);
        hits += l == RF_LOOKUP_HIT;
        rf_obj_unref(&x);
    }
    assert_int_equal(hits, st.objects);

    /* cursors opened before the eviction read the whole old body */
    assert_int_equal(s_drain(&c, out, len, &got), RF_READ_EOF);
    assert_int_equal(got, len);
    assert_memory_equal(out, bodies[0], len);
    rf_cursor_close(&c);
    got = 0;
    assert_int_equal(s_drain(&c2, out, len, &got), RF_READ_EOF);
    assert_int_equal(got, len);
    assert_memory_equal(out, bodies[0], len);
    rf_cursor_close(&c2);

    /* larger than the whole budget: readers get it, it is not kept */
    const size_t huge = budget + 1000;
    char *hb = s_body(huge, 77), *hout = malloc(huge);
    o = s_start(s, "huge", huge, RF_KEEP_DISK, true);
    s_rd_t r = {0};
    assert_int_equal(rf_cursor_init(&r.c, o, false, s_rd_wake), 0);
    s_append(o, hb, huge);
    rf_obj_finish(o, true);
    got = 0;
    assert_int_equal(s_drain(&r.c, hout, huge, &got), RF_READ_EOF);
    assert_int_equal(got, huge);
    assert_memory_equal(hout, hb, huge);
    rf_cursor_close(&r.c);
    rf_obj_unref(&o);
    s_expect_miss(s, "huge");
    s_path(s, "huge", path);
    assert_false(s_exists(path));
    rf_store_stats(s, &st);
    assert_true(st.disk_bytes <= budget);
    assert_int_equal(s_files("objects"), st.objects);
    assert_int_equal(s_files("tmp"), 0);
    s_expect_hit(s, "k19", bodies[19], len);
    rf_store_destroy(&s);

    /* a smaller budget after a restart: the index keeps within it */
    s = s_open(0, 2 * per, 0);
    rf_store_stats(s, &st);
    assert_true(st.disk_bytes <= 2 * per);
    assert_true(st.objects <= 2);
    assert_int_equal(s_files("objects"), st.objects);
    assert_true(st.objects >= 1);
    rf_store_destroy(&s);
    /* ... even one smaller than any object */
    s = s_open(0, per / 2, 0);
    rf_store_stats(s, &st);
    assert_int_equal(st.objects, 0);
    assert_int_equal(st.disk_bytes, 0);
    assert_int_equal(s_files("objects"), 0);
    s_expect_miss(s, "k19");
    rf_store_destroy(&s);

    /* a memory tier smaller than memory_object_max admits nothing larger */
    s = s_open(4000, 64 << 20, 1 << 20);
    s_put(s, "m", bodies[1], len, RF_KEEP_DISK, true);
    assert_int_equal(s_lookup(s, "m", false, false, &o), RF_LOOKUP_HIT);
    assert_null(rf_obj_body(o));
    s_read_whole(o, bodies[1], len);
    rf_obj_unref(&o);
    s_put(s, "mm", bodies[2], len, RF_KEEP_MEMORY, true);
    s_expect_miss(s, "mm");
    rf_store_stats(s, &st);
    assert_true(st.memory_bytes <= 4000);
    rf_store_destroy(&s);

    for (int i = 0; i < 20; i++)
        free(bodies[i]);
    free(out), free(hb), free(hout);
}

/* ---- purge and replace -------------------------------------------------------------- */

static int s_prefix(const char *key, size_t len, void *arg)
{
    size_t pl = strlen(arg);
    return len >= pl && memcmp(key, arg, pl) == 0;
}

static void test_purge(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 100000;
    char *body = s_body(len, 14), *out = malloc(len);
    for (int small = 0; small < 2; small++) {
        size_t l = small ? 3000 : len; /* small: held in memory too */
        rf_obj_t *o = s_start(s, "purged", l, RF_KEEP_DISK, true);
        s_rd_t r = {0};
        assert_int_equal(rf_cursor_init(&r.c, o, false, s_rd_wake), 0);
        s_append(o, body, l / 2);
        size_t got = 0;
        assert_int_equal(s_drain(&r.c, out, l, &got), RF_READ_WAIT);
        assert_int_equal(rf_store_remove(s, "purged", 6), 1);
        assert_int_equal(rf_store_remove(s, "purged", 6), 0);
        s_expect_miss(s, "purged");
        rf_cursor_t late; /* joins after the purge through its reference */
        assert_int_equal(rf_cursor_init(&late, o, false, NULL), 0);
        s_append(o, body + l / 2, l - l / 2);
        rf_obj_finish(o, true);
        assert_int_equal(rf_obj_state(o), RF_OBJ_COMPLETE);
        assert_int_equal(s_drain(&r.c, out, l, &got), RF_READ_EOF);
        assert_int_equal(got, l);
        assert_memory_equal(out, body, l);
        got = 0;
        assert_int_equal(s_drain(&late, out, l, &got), RF_READ_EOF);
        assert_int_equal(got, l);
        assert_memory_equal(out, body, l);
        rf_cursor_close(&r.c);
        rf_cursor_close(&late);
        rf_obj_unref(&o);
        s_expect_miss(s, "purged");
        assert_int_equal(s_files(""), 0);
    }
    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_miss(s, "purged");

    /* a complete one: its file goes */
    char path[4096];
    s_put(s, "gone", body, len, RF_KEEP_DISK, true);
    s_path(s, "gone", path);
    assert_true(s_exists(path));
    assert_int_equal(rf_store_remove(s, "gone", 4), 1);
    assert_false(s_exists(path));
    s_expect_miss(s, "gone");
    assert_int_equal(rf_store_remove(s, "never", 5), 0);

    /* by prefix */
    const char *keys[] = {"/a/1", "/a/2", "/a/3/x", "/b/1", "/ab", "/b/a/1"};
    for (int i = 0; i < 6; i++)
        s_put(s, keys[i], body, 1000 + (size_t)i, RF_KEEP_DISK, true);
    assert_int_equal(rf_store_remove_if(s, s_prefix, "/a/"), 3);
    assert_int_equal(rf_store_remove_if(s, s_prefix, "/a/"), 0);
    for (int i = 0; i < 6; i++) {
        s_path(s, keys[i], path);
        if (i < 3) {
            s_expect_miss(s, keys[i]);
            assert_false(s_exists(path));
        } else {
            s_expect_hit(s, keys[i], body, 1000 + (size_t)i);
            assert_true(s_exists(path));
        }
    }
    rf_store_stats_t st;
    rf_store_stats(s, &st);
    assert_int_equal(st.objects, 3);
    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_miss(s, "/a/1");
    s_expect_hit(s, "/ab", body, 1004);
    assert_int_equal(s_files("objects"), 3);
    rf_store_destroy(&s);
    free(body), free(out);
}

static void test_replace(void **state)
{
    (void)state;
    rf_store_t *s = s_open(1 << 20, 64 << 20, 64 << 10);
    const size_t len = 100000, small = 2000;
    char *old = s_body(len, 15), *neu = s_body(len + 7, 16), *out = malloc(len + 7);
    s_put(s, "r", old, len, RF_KEEP_DISK, true);
    s_put(s, "rs", old, small, RF_KEEP_DISK, true);

    rf_obj_t *held = NULL, *held_small = NULL, *held_late = NULL, *o = NULL;
    assert_int_equal(s_lookup(s, "r", true, false, &held), RF_LOOKUP_HIT);        /* claim alone does not replace */
    assert_int_equal(s_lookup(s, "rs", false, true, &held_small), RF_LOOKUP_HIT); /* nor replace alone */
    assert_int_equal(s_lookup(s, "r", false, false, &held_late), RF_LOOKUP_HIT);  /* no cursor yet */
    rf_cursor_t c;
    assert_int_equal(rf_cursor_init(&c, held, false, NULL), 0);
    size_t n, got = 0;
    assert_int_equal(rf_cursor_read(&c, out, 1000, &n), RF_READ_DATA);
    got = n;

    assert_int_equal(s_lookup(s, "r", true, true, &o), RF_LOOKUP_CLAIM);
    assert_ptr_not_equal(o, held);
    rf_obj_t *b = NULL;
    assert_int_equal(s_lookup(s, "r", true, true, &b), RF_LOOKUP_BUSY); /* a fill is never replaced */
    assert_ptr_equal(b, o);
    rf_obj_t *prev = rf_obj_replaced(b); /* what stale-while-revalidate serves meanwhile */
    assert_ptr_equal(prev, held);
    rf_obj_unref(&prev);
    rf_obj_unref(&b);
    assert_int_equal(rf_obj_state(held), RF_OBJ_COMPLETE);
    rf_meta_t m = s_meta((int64_t)len + 7);
    m.status = 203;
    assert_int_equal(rf_obj_set_head(o, &m, "x\0y\0", 4, RF_KEEP_DISK), 0);
    s_append(o, neu, len + 7);
    rf_obj_finish(o, true);
    assert_null(rf_obj_replaced(o)); /* finished: the old one is let go */
    rf_obj_unref(&o);

    assert_int_equal(s_lookup(s, "r", false, false, &o), RF_LOOKUP_HIT);
    assert_ptr_not_equal(o, held);
    assert_int_equal(rf_obj_meta(o)->status, 203);
    s_read_whole(o, neu, len + 7);
    rf_obj_unref(&o);
    /* the old one, still held, reads as it was */
    assert_int_equal(rf_obj_meta(held)->status, 200);
    assert_int_equal(rf_obj_length(held), len);
    assert_int_equal(s_drain(&c, out, len, &got), RF_READ_EOF);
    assert_int_equal(got, len);
    assert_memory_equal(out, old, len);
    rf_cursor_close(&c);
    rf_obj_unref(&held);
    /* a holder attaching only now: the old bytes, or -1 (gone: a miss),
     * never the new file read as the old object */
    if (rf_cursor_init(&c, held_late, false, NULL) == 0) {
        got = 0;
        rf_read_t r = s_drain(&c, out, len, &got);
        assert_memory_equal(out, old, got); /* no byte of another object */
        assert_int_equal(r, RF_READ_EOF);
        assert_int_equal(got, len);
    }
    rf_cursor_close(&c);
    rf_obj_unref(&held_late);

    /* small: held by reference only, in memory */
    assert_int_equal(s_lookup(s, "rs", true, true, &o), RF_LOOKUP_CLAIM);
    m = s_meta((int64_t)small);
    assert_int_equal(rf_obj_set_head(o, &m, s_hdrs, S_HDRS_LEN, RF_KEEP_DISK), 0);
    s_append(o, neu, small);
    rf_obj_finish(o, true);
    rf_obj_unref(&o);
    s_read_whole(held_small, old, small);
    rf_buf_t *buf = rf_obj_body(held_small);
    assert_non_null(buf);
    assert_memory_equal(buf->data, old, small);
    rf_buf_unref(&buf);
    rf_obj_unref(&held_small);
    s_expect_hit(s, "rs", neu, small);

    /* a replacement that fails leaves nothing (the old one was already out) */
    assert_int_equal(s_lookup(s, "rs", true, true, &o), RF_LOOKUP_CLAIM);
    rf_obj_finish(o, false);
    rf_obj_unref(&o);
    s_expect_miss(s, "rs");

    rf_store_destroy(&s);
    s = s_open(1 << 20, 64 << 20, 64 << 10);
    s_expect_hit(s, "r", neu, len + 7);
    s_expect_miss(s, "rs");
    assert_int_equal(s_files(""), 1);
    rf_store_destroy(&s);
    free(old), free(neu), free(out);
}

/* ---- threads --------------------------------------------------------------------------- */

#define S_READERS 8
#define S_TOTAL (4u << 20)
#define S_TCHUNK (64u << 10)

typedef struct {
    rf_store_t *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
    rf_cursor_t c;
    rf_lookup_t lookup;
    rf_read_t last;
    size_t got;
    size_t bad; /* first mismatching offset + 1, 0 none */
    int waits;
} s_thr_t;

static void s_thr_wake(rf_waiter_t *w)
{
    s_thr_t *t = (s_thr_t *)(void *)((char *)w - offsetof(s_thr_t, c.waiter));
    pthread_mutex_lock(&t->mu);
    t->woken = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void *s_reader(void *arg)
{
    s_thr_t *t = arg;
    rf_obj_t *o = NULL;
    t->lookup = s_lookup(t->s, "threads", false, false, &o);
    if (o == NULL || rf_cursor_init(&t->c, o, false, s_thr_wake) < 0) {
        t->last = RF_READ_FAILED;
        rf_obj_unref(&o);
        return NULL;
    }
    rf_obj_unref(&o);
    static _Thread_local char buf[10007];
    for (;;) {
        size_t n;
        rf_read_t r = rf_cursor_read(&t->c, buf, sizeof(buf), &n);
        if (r == RF_READ_DATA) {
            for (size_t i = 0; i < n && t->bad == 0; i++)
                if ((unsigned char)buf[i] != s_pat(t->got + i, 17))
                    t->bad = t->got + i + 1;
            t->got += n;
        } else if (r == RF_READ_WAIT) {
            t->waits++;
            pthread_mutex_lock(&t->mu);
            while (!t->woken)
                pthread_cond_wait(&t->cv, &t->mu);
            t->woken = false;
            pthread_mutex_unlock(&t->mu);
        } else {
            t->last = r;
            break;
        }
    }
    rf_cursor_close(&t->c);
    return NULL;
}

typedef struct {
    rf_obj_t *o;
    int rc;
} s_filler_t;

static void *s_filler(void *arg)
{
    s_filler_t *f = arg;
    rf_meta_t m = s_meta(S_TOTAL);
    char *chunk = malloc(S_TCHUNK);
    if (rf_obj_set_head(f->o, &m, s_hdrs, S_HDRS_LEN, RF_KEEP_DISK) < 0)
        f->rc = -1;
    for (size_t off = 0; off < S_TOTAL && f->rc == 0; off += S_TCHUNK) {
        for (size_t i = 0; i < S_TCHUNK; i++)
            chunk[i] = (char)s_pat(off + i, 17);
        if (rf_obj_append(f->o, chunk, S_TCHUNK) != 0)
            f->rc = -1;
        if (off / S_TCHUNK % 4 == 0)
            sched_yield();
    }
    rf_obj_finish(f->o, f->rc == 0);
    free(chunk);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    /* disk only, then with the body in the memory tier */
    const uint64_t object_max[2] = {64 << 10, 8 << 20};
    for (int round = 0; round < 2; round++) {
        rf_store_t *s = s_open(16 << 20, 64 << 20, object_max[round]);
        s_filler_t f = {0};
        assert_int_equal(s_lookup(s, "threads", true, false, &f.o), RF_LOOKUP_CLAIM);
        s_thr_t *t = calloc(S_READERS, sizeof(*t));
        pthread_t ft, th[S_READERS];
        for (int i = 0; i < S_READERS; i++) {
            t[i].s = s;
            pthread_mutex_init(&t[i].mu, NULL);
            pthread_cond_init(&t[i].cv, NULL);
        }
        for (int i = 0; i < S_READERS / 2; i++)
            assert_int_equal(pthread_create(&th[i], NULL, s_reader, &t[i]), 0);
        assert_int_equal(pthread_create(&ft, NULL, s_filler, &f), 0);
        for (int i = S_READERS / 2; i < S_READERS; i++)
            assert_int_equal(pthread_create(&th[i], NULL, s_reader, &t[i]), 0);
        pthread_join(ft, NULL);
        for (int i = 0; i < S_READERS; i++)
            pthread_join(th[i], NULL);
        assert_int_equal(f.rc, 0);
        assert_int_equal(rf_obj_state(f.o), RF_OBJ_COMPLETE);
        for (int i = 0; i < S_READERS; i++) {
            assert_true(t[i].lookup == RF_LOOKUP_BUSY || t[i].lookup == RF_LOOKUP_HIT);
            assert_int_equal(t[i].last, RF_READ_EOF);
            assert_int_equal(t[i].got, S_TOTAL);
            assert_int_equal(t[i].bad, 0);
            pthread_mutex_destroy(&t[i].mu);
            pthread_cond_destroy(&t[i].cv);
        }
        assert_int_equal(rf_obj_readers(f.o), 0);
        rf_obj_unref(&f.o);
        char *body = s_body(S_TOTAL, 17);
        s_expect_hit(s, "threads", body, S_TOTAL);
        rf_obj_t *o = NULL;
        assert_int_equal(s_lookup(s, "threads", false, false, &o), RF_LOOKUP_HIT);
        rf_buf_t *b = rf_obj_body(o);
        assert_true((b != NULL) == (round == 1));
        rf_buf_unref(&b);
        rf_obj_unref(&o);
        free(body);
        free(t);
        rf_store_destroy(&s);
        s_rmrf(s_dir);
        assert_int_equal(mkdir(s_dir, 0700), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fill_read_while_filling, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_memory_tier, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_restart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_restart_stray_copy, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_failed_fill, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_length_mismatch, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_share, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_solo, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_keep_memory, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_eviction, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_purge, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_replace, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_threads, s_setup, s_teardown),
    };
    return cmocka_run_group_tests_name("rf_store", tests, NULL, NULL);
}
