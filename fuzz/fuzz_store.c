/*  libFuzzer target for common/rf_store's object files: what a crash, a
 *  bad disk or a stray copy leaves in the cache directory is read back at
 *  start and at the first lookup. Whatever the file holds, opening the
 *  store and looking the key up must not crash or leak, and a HIT must
 *  give exactly the bytes a fill wrote whole.
 *
 *  Input: [mode][key len][meta len][8 parameter bytes] key | meta | body.
 *  Modes (the first byte modulo 6):
 *    0 raw      the rest of the input is the object file of a fixed key;
 *    1 flip     a valid object (written by a fill of key/meta/body) with
 *               1..3 bits flipped: a miss unless the flips cancel;
 *    2 resize   the valid object truncated or extended: a miss;
 *    3 move     the valid object renamed (a miss) or copied (the original
 *               still a hit) to another key's name or a wrong directory;
 *    4 craft    a header built from the input with its header CRC made
 *               right, so the length and body checks are what decides;
 *    5 restart  the valid object, untouched, with leftovers in tmp/: a hit
 *               with the same body, headers and meta.
 *  The object file layout (host byte order) is mirrored below and checked
 *  against every file a fill writes, so the mirror cannot go stale. */
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "rf_store.h"

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t head_len;
    uint32_t key_len;
    uint32_t meta_len;
    uint64_t body_len;
    uint32_t body_crc;
    int32_t status;
    int64_t stored_at, expires_at, age;
    int64_t lifetime;
    int32_t ttl_source;
    uint32_t flags;
    uint32_t head_crc;
    uint32_t pad; /* rf_obj_disk_t's trailing padding, zero in files */
} s_disk_t;

#define S_VERSION 2u

#define S_MAGIC "RFOBJ\r\n\x1a"
#define S_RAW_KEY "fuzz/raw"

static char s_dir[256];

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_store: %s:%d: %s\n", __FILE__, __LINE__, #cond);                                     \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static int s_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type;
    if (ftw->level > 0)
        remove(path);
    return 0;
}

static void s_clean(void)
{
    nftw(s_dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void s_atexit(void)
{
    s_clean();
    rmdir(s_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *t = getenv("TMPDIR");
    snprintf(s_dir, sizeof(s_dir), "%s/fuzz-store-XXXXXX", t != NULL && t[0] != '\0' ? t : "/tmp");
    CHECK(mkdtemp(s_dir) != NULL);
    atexit(s_atexit);
    return 0;
}

static rf_store_t *s_open(uint64_t object_max)
{
    rf_store_opts_t o = {.dir = s_dir, .memory = 1 << 20, .disk = 64 << 20, .memory_object_max = object_max};
    char *err = NULL;
    rf_store_t *s = rf_store_new(&o, &err);
    if (s == NULL)
        fprintf(stderr, "fuzz_store: rf_store_new: %s\n", err ? err : "?");
    CHECK(s != NULL && err == NULL);
    return s;
}

static char *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    CHECK(b != NULL && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void s_spit(const char *path, const void *data, size_t len)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = '\0';
    mkdir(dir, 0700);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(len == 0 || fwrite(data, 1, len, f) == len);
    fclose(f);
}

static bool s_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static uint32_t s_head_crc(s_disk_t d, const char *key, const char *meta)
{
    d.head_crc = 0;
    uLong c = crc32(0L, (const Bytef *)&d, sizeof(d));
    c = crc32(c, (const Bytef *)key, d.key_len);
    c = crc32(c, (const Bytef *)meta, d.meta_len);
    return (uint32_t)c;
}

/* Reads all of o through a cursor into a new buffer; *r gets the result
 * that ended the read. */
static char *s_read(rf_obj_t *o, size_t *len, rf_read_t *r)
{
    rf_cursor_t c;
    *len = 0;
    size_t cap = 4096;
    char *out = malloc(cap);
    CHECK(out != NULL);
    if (rf_cursor_init(&c, o, false, NULL) < 0) {
        *r = RF_READ_FAILED;
        rf_cursor_close(&c);
        return out;
    }
    for (;;) {
        if (*len == cap)
            CHECK((out = realloc(out, cap *= 2)) != NULL);
        size_t n;
        *r = rf_cursor_read(&c, out + *len, cap - *len, &n);
        if (*r != RF_READ_DATA)
            break;
        CHECK(n > 0);
        *len += n;
    }
    rf_cursor_close(&c);
    return out;
}

/* What a fill wrote. */
typedef struct {
    const char *key, *meta, *body;
    size_t key_len, meta_len, body_len;
    rf_meta_t m;
} s_obj_t;

/* Looks x up; on a HIT checks every byte, head and meta against x (a
 * HIT of anything else aborts). Returns whether it was a HIT. */
static bool s_check(rf_store_t *s, const s_obj_t *x)
{
    rf_obj_t *o = NULL;
    rf_lookup_t l = rf_store_lookup(s, x->key, x->key_len, false, false, &o);
    if (l == RF_LOOKUP_MISS) {
        CHECK(o == NULL);
        return false;
    }
    CHECK(l == RF_LOOKUP_HIT && o != NULL);
    CHECK(rf_obj_state(o) == RF_OBJ_COMPLETE);
    size_t kl, hl, n;
    const char *k = rf_obj_key(o, &kl);
    CHECK(kl == x->key_len && memcmp(k, x->key, kl) == 0);
    const char *h = rf_obj_headers(o, &hl);
    CHECK(hl == x->meta_len && memcmp(h, x->meta, hl) == 0);
    const rf_meta_t *m = rf_obj_meta(o);
    CHECK(m->status == x->m.status && m->stored_at == x->m.stored_at && m->expires_at == x->m.expires_at &&
          m->age == x->m.age && m->lifetime == x->m.lifetime && m->ttl_source == x->m.ttl_source &&
          m->flags == x->m.flags);
    CHECK(rf_obj_length(o) == x->body_len);
    rf_read_t r;
    char *got = s_read(o, &n, &r);
    CHECK(r == RF_READ_EOF);
    CHECK(n == x->body_len && memcmp(got, x->body, n) == 0);
    free(got);
    rf_buf_t *b = rf_obj_body(o);
    if (b != NULL)
        CHECK(b->len == x->body_len && memcmp(b->data, x->body, b->len) == 0);
    rf_buf_unref(&b);
    rf_obj_unref(&o);
    return true;
}

/* Fills x through the API (in pieces, known or unknown length), checks
 * the file against the mirrored layout, and closes the store. */
static void s_fill(const s_obj_t *x, uint64_t p, char *path)
{
    rf_store_t *s = s_open(p & 1 ? 1024 : 64 << 10);
    rf_obj_t *o = NULL;
    CHECK(rf_store_lookup(s, x->key, x->key_len, true, false, &o) == RF_LOOKUP_CLAIM);
    rf_meta_t m = x->m;
    m.length = p & 2 ? -1 : (int64_t)x->body_len;
    CHECK(rf_obj_set_head(o, &m, x->meta, x->meta_len, RF_KEEP_DISK) == 0);
    size_t piece = 1 + (p >> 8) % 977;
    for (size_t off = 0; off < x->body_len; off += piece)
        CHECK(rf_obj_append(o, x->body + off, off + piece <= x->body_len ? piece : x->body_len - off) == 0);
    rf_obj_finish(o, true);
    CHECK(rf_obj_state(o) == RF_OBJ_COMPLETE);
    rf_obj_unref(&o);
    CHECK(s_check(s, x));
    rf_store_path(s, x->key, x->key_len, path, 4096);
    rf_store_destroy(&s);

    size_t len;
    char *f = s_slurp(path, &len);
    s_disk_t d;
    CHECK(len >= sizeof(d));
    memcpy(&d, f, sizeof(d));
    CHECK(memcmp(d.magic, S_MAGIC, 8) == 0 && d.version == S_VERSION && d.pad == 0);
    CHECK(d.key_len == x->key_len && d.meta_len == x->meta_len && d.body_len == x->body_len);
    CHECK(d.head_len == sizeof(d) + x->key_len + x->meta_len && len == d.head_len + x->body_len);
    CHECK(memcmp(f + sizeof(d), x->key, x->key_len) == 0);
    CHECK(memcmp(f + sizeof(d) + x->key_len, x->meta, x->meta_len) == 0);
    CHECK(memcmp(f + d.head_len, x->body, x->body_len) == 0);
    CHECK(d.body_crc == (uint32_t)crc32(0L, (const Bytef *)x->body, (uInt)x->body_len));
    CHECK(d.head_crc == s_head_crc(d, f + sizeof(d), f + sizeof(d) + x->key_len));
    CHECK(d.status == x->m.status && d.stored_at == x->m.stored_at && d.expires_at == x->m.expires_at &&
          d.age == x->m.age && d.lifetime == x->m.lifetime && d.ttl_source == x->m.ttl_source && d.flags == x->m.flags);
    free(f);
}

/* Mode 0/4: a file not written by a fill. A HIT must be a whole object:
 * its body the file's tail with the CRC its header gives. */
static void s_check_raw(const char *key, size_t key_len, const char *file, size_t len)
{
    rf_store_t *s = s_open(64 << 10);
    for (int round = 0; round < 2; round++) {
        rf_obj_t *o = NULL;
        rf_lookup_t l = rf_store_lookup(s, key, key_len, false, false, &o);
        if (l == RF_LOOKUP_MISS)
            break;
        CHECK(l == RF_LOOKUP_HIT);
        s_disk_t d;
        CHECK(len >= sizeof(d));
        memcpy(&d, file, sizeof(d));
        size_t n, kl, hl;
        rf_read_t r;
        char *got = s_read(o, &n, &r);
        CHECK(r == RF_READ_EOF);
        CHECK(n == d.body_len && n <= len && memcmp(got, file + len - n, n) == 0);
        CHECK(d.body_crc == (uint32_t)crc32(0L, (const Bytef *)got, (uInt)n));
        const char *k = rf_obj_key(o, &kl);
        CHECK(kl == key_len && memcmp(k, key, kl) == 0 && kl == d.key_len);
        const char *h = rf_obj_headers(o, &hl);
        CHECK(hl == d.meta_len && len >= n + hl && memcmp(h, file + len - n - hl, hl) == 0);
        free(got);
        rf_obj_unref(&o);
    }
    rf_store_destroy(&s);
}

static uint64_t s_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* <= 8 KiB: CRC-32 then detects every error of up to 3 bits (Hamming
     * distance 4), so 1..3 flips must always read as a miss */
    if (size < 11 || size > 8 * 1024)
        return 0;
    int mode = data[0] % 6;
    uint64_t p = s_u64(data + 3);
    const char *rest = (const char *)data + 11;
    size_t rest_len = size - 11;
    s_obj_t x = {0};
    x.key = rest;
    x.key_len = data[1] % 48 < rest_len ? data[1] % 48 : rest_len;
    x.meta = rest + x.key_len;
    x.meta_len = data[2] < rest_len - x.key_len ? data[2] : rest_len - x.key_len;
    x.body = x.meta + x.meta_len;
    x.body_len = rest_len - x.key_len - x.meta_len;
    x.m = (rf_meta_t){.status = 200 + (int)(p % 300),
                      .stored_at = (int64_t)(p >> 16),
                      .expires_at = (int64_t)(p >> 8),
                      .age = (int64_t)(p % 1000),
                      .lifetime = (int64_t)(p >> 24),
                      .ttl_source = (int)(p >> 56) % 8,
                      .flags = (uint32_t)(p >> 60),
                      .length = -1};
    char path[4096], other[4200], junk[512] = "";
    s_clean();

    if (mode == 0) {
        rf_store_t *s = s_open(64 << 10);
        rf_store_path(s, S_RAW_KEY, strlen(S_RAW_KEY), path, sizeof(path));
        rf_store_destroy(&s);
        s_spit(path, data + 1, size - 1);
        s_check_raw(S_RAW_KEY, strlen(S_RAW_KEY), (const char *)data + 1, size - 1);
        return 0;
    }
    if (mode == 4) {
        /* header fields from the parameters and the body; lengths made
         * consistent or not by parameter bits */
        s_disk_t d;
        memset(&d, 0, sizeof(d));
        memcpy(d.magic, S_MAGIC, 8);
        d.version = p & 1 ? S_VERSION : (uint32_t)(p >> 1);
        d.key_len = (uint32_t)x.key_len;
        d.meta_len = (uint32_t)x.meta_len;
        d.head_len = (uint32_t)(sizeof(d) + x.key_len + x.meta_len);
        if (p & 2)
            d.head_len += (uint32_t)(p >> 8) % 16 - 8;
        d.body_len = x.body_len;
        if (p & 4)
            d.body_len = p & 8 ? d.body_len + (p >> 16) : UINT64_MAX - (p >> 20) % 512;
        d.body_crc = p & 16 ? (uint32_t)(p >> 32) : (uint32_t)crc32(0L, (const Bytef *)x.body, (uInt)x.body_len);
        d.status = x.m.status;
        d.head_crc = s_head_crc(d, x.key, x.meta);
        size_t len = sizeof(d) + rest_len;
        char *file = malloc(len);
        CHECK(file != NULL);
        memcpy(file, &d, sizeof(d));
        memcpy(file + sizeof(d), rest, rest_len);
        rf_store_t *s = s_open(64 << 10);
        rf_store_path(s, x.key, x.key_len, path, sizeof(path));
        rf_store_destroy(&s);
        s_spit(path, file, len);
        s_check_raw(x.key, x.key_len, file, len);
        free(file);
        return 0;
    }

    s_fill(&x, p, path);
    size_t len;
    char *orig = s_slurp(path, &len);
    bool whole = true; /* the file is still the object as written */
    if (mode == 1) {
        int flips = 1 + (int)(p >> 62);
        char *f = malloc(len);
        memcpy(f, orig, len);
        for (int i = 0; i < flips && i < 3; i++) {
            uint64_t at = (p >> (i * 20)) & 0xfffff;
            f[at % len] ^= (char)(1u << ((p >> (i * 3 + 40)) & 7));
        }
        whole = memcmp(f, orig, len) == 0;
        s_spit(path, f, len);
        free(f);
        CHECK(rf_store_verify_file(path) == (whole ? 0 : -1));
    } else if (mode == 2) {
        whole = false;
        if (p & 1) {
            CHECK(truncate(path, (off_t)((p >> 1) % len)) == 0);
        } else {
            char *f = malloc(len + 16);
            memcpy(f, orig, len);
            memset(f + len, (int)(p >> 8), 16);
            s_spit(path, f, len + 1 + (p >> 1) % 16);
            free(f);
        }
    } else if (mode == 3) {
        rf_store_t *s = s_open(64 << 10);
        char *okey = malloc(x.key_len + 1);
        memcpy(okey, x.key, x.key_len);
        okey[x.key_len] = '~';
        rf_store_path(s, okey, x.key_len + 1, other, sizeof(other));
        rf_store_destroy(&s);
        if (p & 2) /* the right name in a directory that is not its own */
            snprintf(other, sizeof(other), "%s/objects/zz/%s", s_dir, strrchr(path, '/') + 1);
        if (p & 1) {
            s_spit(other, orig, len); /* a copy */
        } else {
            char dir[4096];
            snprintf(dir, sizeof(dir), "%s", other);
            *strrchr(dir, '/') = '\0';
            mkdir(dir, 0700);
            CHECK(rename(path, other) == 0);
            whole = false;
        }
        s_obj_t y = x;
        y.key = okey;
        y.key_len = x.key_len + 1;
        s = s_open(64 << 10);
        CHECK(!s_check(s, &y));  /* never under another key */
        CHECK(!s_exists(other)); /* deleted at start */
        rf_store_destroy(&s);
        free(okey);
    } else {
        snprintf(junk, sizeof(junk), "%s/tmp/%u-%u.tmp", s_dir, (unsigned)(p % 100000), (unsigned)(p >> 40));
        s_spit(junk, x.body, x.body_len);
    }

    rf_store_t *s = s_open(p & 4 ? 0 : 64 << 10);
    bool hit = s_check(s, &x);
    CHECK(hit == whole);
    CHECK(s_check(s, &x) == hit); /* the same answer once verified */
    CHECK(s_exists(path) == hit); /* a bad file is deleted */
    rf_store_destroy(&s);
    CHECK(junk[0] == '\0' || !s_exists(junk)); /* leftovers in tmp/ are gone */
    free(orig);
    return 0;
}
