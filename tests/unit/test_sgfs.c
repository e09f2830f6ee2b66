/*  Unit tests for common/rf_sgfs (a bucket's path space over local
 *  directories) and the storgate section of the configuration that
 *  declares it: mount resolution (an explicit mountPoint wins, then the
 *  first declared root mount; hidden mounts), refused keys and escapes,
 *  atomic writes with their MD5 ETag and metadata, listings in S3's key
 *  order across mounts with prefixes, delimiters and pages, deletes that
 *  prune empty directories, and multipart uploads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rf_config.h"
#include "rf_sgconf.h"
#include "rf_sgfs.h"

typedef struct {
    char root[64];
    char a[96], b[96], h[96], outside[96];
    rf_config_t *cfg;
    const rf_sg_bucket_t *bk;
} s_fix_t;

static void s_write(const char *path, const char *text)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", path);
    for (char *p = dir + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(dir, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int s_setup(void **state)
{
    s_fix_t *f = calloc(1, sizeof(*f));
    snprintf(f->root, sizeof(f->root), "/tmp/refract-sgfs-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->a, sizeof(f->a), "%s/a", f->root);
    snprintf(f->b, sizeof(f->b), "%s/b", f->root);
    snprintf(f->h, sizeof(f->h), "%s/h", f->root);
    snprintf(f->outside, sizeof(f->outside), "%s/outside", f->root);
    mkdir(f->a, 0755);
    mkdir(f->b, 0755);
    mkdir(f->h, 0755);
    mkdir(f->outside, 0755);
    char yaml[2048], *err = NULL;
    /* two root mounts (a first), a mounted directory "/m" (b's "m" is under
     * the same name: the mount shadows it) and a hidden one */
    snprintf(yaml, sizeof(yaml),
             "gateway: {listen: 1}\nbus: {endpoint: 'tcp://127.0.0.1:1'}\n"
             "storgate:\n  buckets:\n    - meta: {name: bk}\n      mounts:\n"
             "        - {originPath: %s}\n        - {originPath: '%s/'}\n"
             "        - {mountPoint: /m, originPath: %s/mnt}\n"
             "        - {mountPoint: /hid, originPath: %s, expose: false}\n",
             f->a, f->b, f->root, f->h);
    f->cfg = rf_config_load_string(yaml, strlen(yaml), "t.yaml", &err);
    if (f->cfg == NULL)
        fail_msg("config: %s", err);
    f->bk = rf_sgconf_bucket(f->cfg->storgate, "bk", 2);
    assert_non_null(f->bk);
    char mnt[128];
    snprintf(mnt, sizeof(mnt), "%s/mnt", f->root);
    mkdir(mnt, 0755);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fix_t *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    rf_config_destroy(&f->cfg);
    free(f);
    return 0;
}

static void test_keys(void **state)
{
    (void)state;
    const char *why;
    static const char *const bad[] = {"", "/a", "a//b", "a/./b", "a/../b", "..", ".", "a/..", NULL};
    for (int i = 0; bad[i]; i++) {
        why = NULL;
        assert_int_equal(rf_sgfs_key_check(bad[i], strlen(bad[i]), &why), -1);
        assert_non_null(why);
    }
    assert_int_equal(rf_sgfs_key_check("a\0b", 3, &why), -1);
    char longk[1100];
    memset(longk, 'x', sizeof(longk));
    assert_int_equal(rf_sgfs_key_check(longk, 1025, &why), -1);
    assert_int_equal(rf_sgfs_key_check(longk, 1024, &why), 0);
    static const char *const good[] = {"a", "a/b.jpg", "dir/", "a b+c~d=e", "..a/.b", "\xed\x95\x9c.jpg", NULL};
    for (int i = 0; good[i]; i++)
        assert_int_equal(rf_sgfs_key_check(good[i], strlen(good[i]), &why), 0);
}

static void test_resolve(void **state)
{
    s_fix_t *f = *state;
    rf_sgfs_loc_t loc;
    const char *why = NULL;
    /* a write to a root path goes to the first root mount */
    assert_int_equal(rf_sgfs_resolve(f->bk, "x/y.txt", 7, true, false, &loc, &why), 0);
    assert_string_equal(loc.mount->dir, f->a);
    assert_string_equal(loc.rel, "x/y.txt");
    /* a read finds the file in the second root mount when the first lacks it */
    char p[256];
    snprintf(p, sizeof(p), "%s/only-b.txt", f->b);
    s_write(p, "b");
    assert_int_equal(rf_sgfs_resolve(f->bk, "only-b.txt", 10, false, false, &loc, &why), 0);
    assert_string_equal(loc.mount->dir, f->b);
    /* an explicit mountPoint wins */
    assert_int_equal(rf_sgfs_resolve(f->bk, "m/z", 3, false, false, &loc, &why), 0);
    assert_string_equal(loc.mount->mount_point, "/m");
    assert_string_equal(loc.rel, "z");
    /* "mx" is not under "/m" */
    assert_int_equal(rf_sgfs_resolve(f->bk, "mx", 2, true, false, &loc, &why), 0);
    assert_string_equal(loc.mount->dir, f->a);
    /* the mount point itself names no object */
    assert_int_equal(rf_sgfs_resolve(f->bk, "m", 1, false, false, &loc, &why), -1);
    /* hidden: refused to clients, allowed inside (savePath) */
    assert_int_equal(rf_sgfs_resolve(f->bk, "hid/s.txt", 9, false, false, &loc, &why), -2);
    assert_int_equal(rf_sgfs_resolve(f->bk, "hid/s.txt", 9, true, true, &loc, &why), 0);
    assert_string_equal(loc.mount->dir, f->h);
    /* the reserved directory */
    assert_int_equal(rf_sgfs_resolve(f->bk, ".refract-s3/tmp/x", 17, true, false, &loc, &why), -1);
}

static rf_sgfs_stat_t s_put(s_fix_t *f, const char *key, const char *body, const char *ctype, const char *meta)
{
    rf_sgfs_loc_t loc;
    const char *why;
    assert_int_equal(rf_sgfs_resolve(f->bk, key, strlen(key), true, false, &loc, &why), 0);
    rf_sgfs_put_t *w = rf_sgfs_put_begin(&loc, ctype, meta);
    assert_non_null(w);
    assert_int_equal(rf_sgfs_put_write(w, body, strlen(body)), 0);
    rf_sgfs_stat_t st;
    assert_int_equal(rf_sgfs_put_commit(&w, NULL, &st), 0);
    assert_null(w);
    return st;
}

static void test_put_stat(void **state)
{
    s_fix_t *f = *state;
    rf_sgfs_stat_t st = s_put(f, "d1/d2/hello.txt", "hello\n", "text/plain", "x-amz-meta-a: 1\n");
    assert_string_equal(st.etag, "b1946ac92492d2347c6235b4d2611184"); /* md5("hello\n") */
    rf_sgfs_loc_t loc;
    const char *why;
    assert_int_equal(rf_sgfs_resolve(f->bk, "d1/d2/hello.txt", 15, false, false, &loc, &why), 0);
    rf_sgfs_stat_t st2;
    int fd = rf_sgfs_open(&loc, &st2);
    assert_true(fd >= 0);
    char buf[16] = {0};
    assert_int_equal(read(fd, buf, sizeof(buf)), 6);
    close(fd);
    assert_string_equal(buf, "hello\n");
    assert_string_equal(st2.etag, st.etag);
    assert_string_equal(st2.content_type, "text/plain");
    assert_string_equal(st2.meta, "x-amz-meta-a: 1\n");
    assert_int_equal(st2.size, 6);
    /* nothing is left in the temporary directory */
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s/.refract-s3/tmp", f->a);
    int n = 0;
    FILE *ls = NULL;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", tmp);
    ls = popen(cmd, "r");
    assert_int_equal(fscanf(ls, "%d", &n), 1);
    pclose(ls);
    assert_int_equal(n, 0);
    /* a file changed behind our back loses its stored ETag */
    char p[256];
    snprintf(p, sizeof(p), "%s/d1/d2/hello.txt", f->a);
    s_write(p, "changed\n");
    assert_int_equal(rf_sgfs_stat(&loc, &st2), 0);
    assert_true(strlen(st2.etag) > 2 && strcmp(st2.etag + strlen(st2.etag) - 2, "-1") == 0);
    assert_string_equal(st2.content_type, "");
}

static void test_escape(void **state)
{
    s_fix_t *f = *state;
    char p[256], l[256];
    snprintf(p, sizeof(p), "%s/secret.txt", f->outside);
    s_write(p, "secret");
    snprintf(l, sizeof(l), "%s/link.txt", f->a);
    assert_int_equal(symlink(p, l), 0);
    snprintf(l, sizeof(l), "%s/linkdir", f->a);
    assert_int_equal(symlink(f->outside, l), 0);
    rf_sgfs_loc_t loc;
    rf_sgfs_stat_t st;
    const char *why;
    assert_int_equal(rf_sgfs_resolve(f->bk, "link.txt", 8, false, false, &loc, &why), 0);
    assert_true(rf_sgfs_open(&loc, &st) < 0);
    assert_int_equal(rf_sgfs_resolve(f->bk, "linkdir/secret.txt", 18, false, false, &loc, &why), 0);
    assert_true(rf_sgfs_open(&loc, &st) < 0);
    /* a write through the link's directory does not land outside */
    assert_int_equal(rf_sgfs_resolve(f->bk, "linkdir/new.txt", 15, true, false, &loc, &why), 0);
    rf_sgfs_put_t *w = rf_sgfs_put_begin(&loc, NULL, NULL);
    assert_non_null(w);
    assert_int_equal(rf_sgfs_put_write(w, "x", 1), 0);
    assert_int_equal(rf_sgfs_put_commit(&w, NULL, NULL), -1);
    snprintf(p, sizeof(p), "%s/new.txt", f->outside);
    assert_int_equal(access(p, F_OK), -1);
    /* neither link is listed */
    rf_sgfs_list_t ls;
    assert_int_equal(rf_sgfs_list(f->bk, "link", NULL, "", 100, &ls), 0);
    assert_int_equal(ls.n, 0);
    rf_sgfs_list_clear(&ls);
}

static char *s_keys(const rf_sgfs_list_t *l)
{
    static char out[4096];
    out[0] = '\0';
    for (size_t i = 0; i < l->n; i++)
        snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s%s", i ? " " : "", l->e[i].key,
                 l->e[i].prefix ? "(P)" : "");
    return out;
}

static void test_list_order(void **state)
{
    s_fix_t *f = *state;
    char p[256];
    static const char *const in_a[] = {"a-b", "a/b", "a0", "z/1/2.txt", "dup.txt", NULL};
    for (int i = 0; in_a[i]; i++) {
        snprintf(p, sizeof(p), "%s/%s", f->a, in_a[i]);
        s_write(p, "A");
    }
    snprintf(p, sizeof(p), "%s/dup.txt", f->b); /* shadowed by a's */
    s_write(p, "BB");
    snprintf(p, sizeof(p), "%s/m/shadowed.txt", f->b); /* under the mount point "/m": hidden by it */
    s_write(p, "B");
    snprintf(p, sizeof(p), "%s/mnt/in-m.txt", f->root);
    s_write(p, "M");
    snprintf(p, sizeof(p), "%s/h.txt", f->h); /* hidden mount */
    s_write(p, "H");
    rf_sgfs_list_t l;
    assert_int_equal(rf_sgfs_list(f->bk, "", NULL, "", 1000, &l), 0);
    /* S3's byte order: '-' < '/' < '0' */
    assert_string_equal(s_keys(&l), "a-b a/b a0 dup.txt m/in-m.txt z/1/2.txt");
    assert_false(l.truncated);
    for (size_t i = 0; i < l.n; i++)
        if (strcmp(l.e[i].key, "dup.txt") == 0)
            assert_int_equal(l.e[i].size, 1); /* the first declared mount's */
    rf_sgfs_list_clear(&l);
    assert_int_equal(rf_sgfs_list(f->bk, "", "/", "", 1000, &l), 0);
    assert_string_equal(s_keys(&l), "a-b a/(P) a0 dup.txt m/(P) z/(P)");
    rf_sgfs_list_clear(&l);
    assert_int_equal(rf_sgfs_list(f->bk, "z/", "/", "", 1000, &l), 0);
    assert_string_equal(s_keys(&l), "z/1/(P)");
    rf_sgfs_list_clear(&l);
    assert_int_equal(rf_sgfs_list(f->bk, "a", NULL, "", 1000, &l), 0);
    assert_string_equal(s_keys(&l), "a-b a/b a0");
    rf_sgfs_list_clear(&l);
    /* pages of 2: every key once, in order */
    char seen[4096] = "", after[1100] = "";
    for (int page = 0; page < 10; page++) {
        assert_int_equal(rf_sgfs_list(f->bk, "", NULL, after, 2, &l), 0);
        snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "%s%s", seen[0] ? " " : "", s_keys(&l));
        bool more = l.truncated;
        if (l.n > 0)
            snprintf(after, sizeof(after), "%s", l.e[l.n - 1].key);
        rf_sgfs_list_clear(&l);
        if (!more)
            break;
    }
    assert_string_equal(seen, "a-b a/b a0 dup.txt m/in-m.txt z/1/2.txt");
    /* after a common prefix, nothing under it comes again */
    assert_int_equal(rf_sgfs_list(f->bk, "", "/", "a/", 1000, &l), 0);
    assert_string_equal(s_keys(&l), "a0 dup.txt m/(P) z/(P)");
    rf_sgfs_list_clear(&l);
}

static void test_delete_prunes(void **state)
{
    s_fix_t *f = *state;
    s_put(f, "p/q/r.txt", "r", NULL, NULL);
    rf_sgfs_loc_t loc;
    const char *why;
    assert_int_equal(rf_sgfs_resolve(f->bk, "p/q/r.txt", 9, false, false, &loc, &why), 0);
    assert_int_equal(rf_sgfs_delete(&loc), 0);
    char p[256];
    snprintf(p, sizeof(p), "%s/p", f->a);
    assert_int_equal(access(p, F_OK), -1); /* p/q and p went with their last file */
    assert_int_equal(access(f->a, F_OK), 0);
    assert_int_equal(rf_sgfs_delete(&loc), 0); /* deleting what is gone succeeds */
}

static void test_multipart(void **state)
{
    s_fix_t *f = *state;
    rf_sgfs_loc_t loc;
    const char *why, *code;
    assert_int_equal(rf_sgfs_resolve(f->bk, "mp/obj.bin", 10, true, false, &loc, &why), 0);
    char id[33];
    assert_int_equal(rf_sgfs_mpu_create(&loc, "mp/obj.bin", "application/x-test", NULL, id), 0);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "mp/obj.bin", id), 0);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "mp/other", id), -1);
    char etags[2][33];
    static const char *const parts[] = {"first-part|", "second"};
    for (int i = 0; i < 2; i++) {
        rf_sgfs_put_t *w = rf_sgfs_mpu_part_begin(&loc, id, i + 1);
        assert_non_null(w);
        assert_int_equal(rf_sgfs_put_write(w, parts[i], strlen(parts[i])), 0);
        rf_sgfs_stat_t st;
        assert_int_equal(rf_sgfs_put_commit(&w, NULL, &st), 0);
        snprintf(etags[i], 33, "%.32s", st.etag);
    }
    rf_sgfs_part_t *pl;
    size_t n;
    assert_int_equal(rf_sgfs_mpu_parts(&loc, id, &pl, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(pl[0].number, 1);
    assert_int_equal(pl[1].size, 6);
    free(pl);
    int nums[2] = {1, 2};
    const char *tags[2] = {etags[0], etags[1]};
    rf_sgfs_stat_t st;
    /* S3's 5 MiB minimum for parts but the last */
    assert_int_equal(rf_sgfs_mpu_complete(&loc, id, nums, tags, 2, 1000, &st, &code), -1);
    assert_string_equal(code, "EntityTooSmall");
    const char *bad[2] = {etags[0], "00000000000000000000000000000000"};
    assert_int_equal(rf_sgfs_mpu_complete(&loc, id, nums, bad, 2, 0, &st, &code), -1);
    assert_string_equal(code, "InvalidPart");
    assert_int_equal(rf_sgfs_mpu_complete(&loc, id, nums, tags, 2, 0, &st, &code), 0);
    assert_int_equal(st.size, strlen(parts[0]) + strlen(parts[1]));
    assert_true(strlen(st.etag) == 34 && strcmp(st.etag + 32, "-2") == 0);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "mp/obj.bin", id), -1); /* the upload is gone */
    int fd = rf_sgfs_open(&loc, &st);
    char buf[64] = {0};
    assert_int_equal(read(fd, buf, sizeof(buf)), 17);
    close(fd);
    assert_string_equal(buf, "first-part|second");
    assert_string_equal(st.content_type, "application/x-test");
    /* abort */
    assert_int_equal(rf_sgfs_mpu_create(&loc, "mp/obj.bin", NULL, NULL, id), 0);
    rf_sgfs_upload_t *ups;
    bool trunc;
    assert_int_equal(rf_sgfs_mpu_list(f->bk, "mp/", 100, &ups, &n, &trunc), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ups[0].id, id);
    rf_sgfs_uploads_free(ups, n);
    assert_int_equal(rf_sgfs_mpu_abort(&loc, id), 0);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "mp/obj.bin", id), -1);
    assert_int_equal(rf_sgfs_mpu_abort(&loc, id), -1);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "mp/obj.bin", "../../../../etc"), -1);
}

/* A crash's leftovers go, what is fresh stays. */
static void test_sweep(void **state)
{
    s_fix_t *f = *state;
    rf_sgfs_loc_t loc;
    const char *why;
    assert_int_equal(rf_sgfs_resolve(f->bk, "s/x", 3, true, false, &loc, &why), 0);
    char old_id[33], new_id[33];
    assert_int_equal(rf_sgfs_mpu_create(&loc, "s/x", NULL, NULL, old_id), 0);
    assert_int_equal(rf_sgfs_mpu_create(&loc, "s/x", NULL, NULL, new_id), 0);
    char p[300];
    snprintf(p, sizeof(p), "%s/.refract-s3/tmp/stale", f->a);
    s_write(p, "partial");
    snprintf(p, sizeof(p), "%s/.refract-s3/tmp/fresh", f->a);
    s_write(p, "partial");
    struct timespec old[2] = {{.tv_sec = time(NULL) - 8 * 86400}, {.tv_sec = time(NULL) - 8 * 86400}};
    snprintf(p, sizeof(p), "%s/.refract-s3/tmp/stale", f->a);
    assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
    snprintf(p, sizeof(p), "%s/.refract-s3/uploads/%s", f->a, old_id);
    assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
    assert_int_equal(rf_sgfs_sweep(f->bk, 3600, 7 * 86400), 2);
    snprintf(p, sizeof(p), "%s/.refract-s3/tmp/stale", f->a);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/.refract-s3/tmp/fresh", f->a);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "s/x", old_id), -1);
    assert_int_equal(rf_sgfs_mpu_check(&loc, "s/x", new_id), 0);
}

/* The storgate section: defaults, the seed's fallbacks, and refusals with their line. */
static void test_config(void **state)
{
    (void)state;
    const char *head = "gateway: {listen: 1}\nbus: {endpoint: 'tcp://127.0.0.1:1'}\n";
    char y[2048], *err = NULL;
    snprintf(y, sizeof(y),
             "%sstorgate:\n  throttling: {cpu: {deactive: 90, reactive: 95}}\n  buckets:\n"
             "    - {name: b1, mounts: [{originPath: /tmp}]}\n",
             head);
    rf_config_t *c = rf_config_load_string(y, strlen(y), "t.yaml", &err);
    if (c == NULL)
        fail_msg("%s", err);
    const rf_sg_conf_t *sc = c->storgate;
    assert_int_equal(sc->throttling.deactive, 90);
    assert_int_equal(sc->throttling.reactive, 60); /* over deactive: 2/3 of it */
    assert_int_equal(sc->distribution.term_ms, 300000);
    assert_true(sc->distribution.meta_enable);
    assert_string_equal(sc->buckets[0].region, "ap-northeast-2");
    assert_true(sc->buckets[0].expose && sc->buckets[0].get && sc->buckets[0].put && sc->buckets[0].del);
    assert_string_equal(sc->buckets[0].mounts[0].mount_point, "");
    rf_config_destroy(&c);
    static const struct {
        const char *body, *want;
    } bad[] = {
        {"  buckets:\n    - {name: b1}\n", "needs at least one mount"},
        {"  buckets:\n    - {name: 'b 1', mounts: [{originPath: /tmp}]}\n", "bucket name"},
        {"  buckets:\n    - {name: b1, mounts: [{originPath: 'x@aws_s3'}]}\n", "not declared"},
        {"  buckets:\n    - {name: b1, mounts: [{originPath: relative}]}\n", "originPath"},
        {"  buckets:\n    - {name: b1, mounts: [{mountPoint: /a/../b, originPath: /tmp}]}\n", "mountPoint"},
        {"  buckets:\n    - {name: b1, mounts: [{originPath: /tmp}], events: {onPut: {trigger: {workflow: nope}}}}\n",
         "workflow 'nope'"},
        {"  buckets:\n    - {name: b1, mounts: [{originPath: /tmp}], workflows: [{name: w, tasks: [{savePath: null}]}]}\n",
         "savePath may not be null"},
        {"  buckets:\n    - {name: b1, mounts: [{originPath: /tmp}], events: {onBatch: [{path: /x}]}}\n",
         "schedule"},
        {"  buckets:\n    - {name: b1, mounts: [{originPath: /tmp}], events: {onGet: {filter: {age: 2x}}}}\n", "age"},
        {"  throttling: {cpu: {deactive: 101}}\n", "deactive"},
        {"  distribution: {leader: {url: 'ftp://x'}}\n", "leader.url"},
        {"  bogus: 1\n", "unknown key 'bogus'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(y, sizeof(y), "%sstorgate:\n%s", head, bad[i].body);
        err = NULL;
        c = rf_config_load_string(y, strlen(y), "t.yaml", &err);
        assert_null(c);
        if (err == NULL || strstr(err, bad[i].want) == NULL || strncmp(err, "t.yaml:", 7) != 0)
            fail_msg("case %zu: wanted '%s' in '%s'", i, bad[i].want, err ? err : "(null)");
        free(err);
    }
}

/* The seed's NFS landing-zone example as conf/refract.yaml carries it (the
 * seed's JSON under storgate:, two missing commas added) means what the seed
 * says. The tests run from the repository's root (make unit). */
static void test_landing_zone_example(void **state)
{
    (void)state;
    char *err = NULL;
    rf_config_t *c = rf_config_load("conf/refract.yaml", &err);
    if (c == NULL)
        fail_msg("%s", err);
    const rf_sg_bucket_t *b = rf_sgconf_bucket(c->storgate, "image_landing_bucket", 20);
    assert_non_null(b);
    assert_true(b->expose);
    assert_int_equal(b->n_mounts, 2);
    assert_string_equal(b->mounts[0].mount_point, "/image_landing");
    assert_true(b->mounts[0].expose);
    assert_false(b->mounts[1].expose);
    assert_int_equal(b->n_on_batch, 1);
    assert_true(b->on_batch[0].enable);
    assert_int_equal(b->on_batch[0].chunk_size, 1000);
    assert_string_equal(b->on_batch[0].schedule, "*/5 * * * *");
    assert_false(b->on_batch[0].breadth);      /* traverse: depth by default */
    assert_false(b->on_batch[0].cursor_reset); /* cursor: continue */
    assert_string_equal(b->on_batch[0].workflow, "migrate_tmpimg");
    assert_false(b->on_batch[0].pre); /* timing: post by default */
    const rf_sg_workflow_t *w = rf_sgconf_workflow(b, "migrate_tmpimg");
    assert_non_null(w);
    assert_true(w->enable);
    assert_int_equal(w->n_tasks, 1);
    assert_null(w->tasks[0].function); /* null: a copy */
    assert_string_equal(w->tasks[0].save_path, "/image_service/{{ item.path }}");
    assert_int_equal(w->tasks[0].when_exist, RF_SG_OVERWRITE);
    assert_int_equal(w->tasks[0].timeout_s, 60);
    assert_int_equal(w->src_op, RF_SG_SRC_DELETE);
    rf_config_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test_setup_teardown(test_resolve, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_put_stat, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_escape, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_list_order, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_delete_prunes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_multipart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sweep, s_setup, s_teardown),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_landing_zone_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
