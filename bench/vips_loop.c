/*  bench-vips-loop — the in-process floor of the resize benchmark.
 *
 *    bench-vips-loop [-t THREADS] [-d SECONDS] [-c VIPS_CONCURRENCY]
 *                    [-w WIDTH] [-H HEIGHT] [-f jpeg|webp|avif] [-q Q]
 *                    [-o FIRST_OUTPUT] FILE...
 *
 *  Reads every FILE into memory, then THREADS threads each repeatedly run
 *  vips_thumbnail_buffer(buf, len, &out, WIDTH, "height", HEIGHT, "size",
 *  VIPS_SIZE_DOWN, "option_string", "fail_on=truncated") and a save in the
 *  format -f on those buffers (rotating over the files, each thread from its
 *  own offset) for SECONDS seconds: what refract's image worker does per job
 *  of /dims/resize/WxH[/format/F], minus the bus and HTTP. -c 0 keeps
 *  libvips's default concurrency; -c N calls vips_concurrency_set(N) (the
 *  worker's vips_concurrency). The operation cache is off, as in the worker.
 *
 *  The save is exactly the worker's (services/image-worker/img_core.c,
 *  s_save, for a chain with no quality, strip or optimize op):
 *    jpeg  vips_jpegsave_buffer  Q 75, strip off, optimize_coding off
 *    webp  vips_webpsave_buffer  Q 75, strip off, effort 4
 *    avif  vips_heifsave_buffer  compression AV1, Q 50, effort 3 (S_AVIF_EFFORT),
 *                                bitdepth 8, strip off
 *  -q overrides Q (default: 75, or 50 for avif).
 *
 *  Prints one line:
 *    VIPSLOOP images=N seconds=S images_per_s=R threads=T concurrency=C format=F q=Q out_bytes_avg=B
 *             cpu_ms_per_image=M
 *  (cpu_ms_per_image: user + system CPU of the timed part, per image)
 *  -o writes the first result to a file (to check it is a WIDTH-wide image
 *  of the format).
 *  Exit status 0, or 1 when an image fails or nothing completes.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

typedef struct {
    void *data;
    size_t len;
    const char *name;
} src_t;

static src_t *s_src;
static int s_nsrc;
static int s_width = 500, s_height = 500;
static double s_seconds = 10;

typedef enum { F_JPEG, F_WEBP, F_AVIF } s_format_t;
static s_format_t s_format = F_JPEG;
static int s_q = 0; /* 0: the worker's default for s_format */

/* The worker's defaults (img_core.c: S_DEFAULT_Q, S_DEFAULT_AVIF_Q, S_AVIF_EFFORT) */
#define S_DEFAULT_Q 75
#define S_DEFAULT_AVIF_Q 50
#define S_AVIF_EFFORT 3

static atomic_int s_stop;
static atomic_int s_failed;
static atomic_long s_done;
static atomic_long s_out_bytes;

typedef struct {
    int index;
    pthread_t tid;
} worker_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The save of img_core.c's s_save for a chain with no quality, strip or
 * optimize op. */
static int s_save(VipsImage *img, void **buf, size_t *len)
{
    switch (s_format) {
    case F_JPEG: return vips_jpegsave_buffer(img, buf, len, "Q", s_q, "strip", FALSE, "optimize_coding", FALSE, NULL);
    case F_WEBP: return vips_webpsave_buffer(img, buf, len, "Q", s_q, "strip", FALSE, "effort", 4, NULL);
    case F_AVIF:
        return vips_heifsave_buffer(img, buf, len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q", s_q, "effort",
                                    S_AVIF_EFFORT, "bitdepth", 8, "strip", FALSE, NULL);
    }
    return -1;
}

static const char *s_format_name(s_format_t f)
{
    return f == F_WEBP ? "webp" : f == F_AVIF ? "avif" : "jpeg";
}

/* One thumbnail + save. Returns the output size, or -1. */
static long s_one(const src_t *src, void **keep)
{
    VipsImage *out = NULL;
    void *buf = NULL;
    size_t len = 0;
    /* as img_core.c's s_resize for resize/WxH, the first pixel operation */
    if (vips_thumbnail_buffer(src->data, src->len, &out, s_width, "height", s_height, "size", VIPS_SIZE_DOWN,
                              "option_string", "fail_on=truncated", NULL) != 0) {
        fprintf(stderr, "bench-vips-loop: %s: thumbnail: %s", src->name, vips_error_buffer());
        return -1;
    }
    int rc = s_save(out, &buf, &len);
    g_object_unref(out);
    if (rc != 0) {
        fprintf(stderr, "bench-vips-loop: %s: %ssave: %s", src->name, s_format_name(s_format), vips_error_buffer());
        return -1;
    }
    if (keep != NULL)
        *keep = buf, buf = NULL;
    g_free(buf);
    return (long)len;
}

static void *s_worker(void *arg)
{
    worker_t *w = arg;
    for (long i = w->index; !atomic_load(&s_stop); i++) {
        long n = s_one(&s_src[i % s_nsrc], NULL);
        if (n < 0) {
            atomic_store(&s_failed, 1);
            atomic_store(&s_stop, 1);
            break;
        }
        atomic_fetch_add(&s_done, 1);
        atomic_fetch_add(&s_out_bytes, n);
    }
    vips_thread_shutdown();
    return NULL;
}

static int s_read_file(const char *path, src_t *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return -1;
    }
    long size = ftell(f);
    rewind(f);
    out->data = size > 0 ? malloc((size_t)size) : NULL;
    int ok = out->data != NULL && fread(out->data, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    out->len = (size_t)size;
    out->name = path;
    return ok ? 0 : -1;
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench-vips-loop [-t THREADS] [-d SECONDS] [-c VIPS_CONCURRENCY] [-w WIDTH] [-H HEIGHT]\n"
               "                       [-f jpeg|webp|avif] [-q Q] [-o FIRST_OUTPUT] FILE...\n");
}

int main(int argc, char **argv)
{
    int threads = 2, concurrency = 1, opt;
    const char *first_out = NULL;
    while ((opt = getopt(argc, argv, "t:d:c:w:H:f:q:o:h")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'd': s_seconds = atof(optarg); break;
        case 'c': concurrency = atoi(optarg); break;
        case 'w': s_width = atoi(optarg); break;
        case 'H': s_height = atoi(optarg); break;
        case 'f':
            if (strcmp(optarg, "jpeg") == 0 || strcmp(optarg, "jpg") == 0)
                s_format = F_JPEG;
            else if (strcmp(optarg, "webp") == 0)
                s_format = F_WEBP;
            else if (strcmp(optarg, "avif") == 0)
                s_format = F_AVIF;
            else {
                fprintf(stderr, "bench-vips-loop: -f %s: expected jpeg, webp or avif\n", optarg);
                return 2;
            }
            break;
        case 'q': s_q = atoi(optarg); break;
        case 'o': first_out = optarg; break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (s_q == 0)
        s_q = s_format == F_AVIF ? S_DEFAULT_AVIF_Q : S_DEFAULT_Q;
    if (optind >= argc || threads < 1 || threads > 256 || s_seconds <= 0 || s_width < 1 || s_height < 1 || s_q < 1 ||
        s_q > 100) {
        s_usage(stderr);
        return 2;
    }
    if (VIPS_INIT(argv[0]) != 0) {
        fprintf(stderr, "bench-vips-loop: libvips failed to start: %s", vips_error_buffer());
        return 1;
    }
    if (concurrency > 0)
        vips_concurrency_set(concurrency);
    vips_cache_set_max(0);

    s_nsrc = argc - optind;
    s_src = calloc((size_t)s_nsrc, sizeof(*s_src));
    if (s_src == NULL)
        return 1;
    for (int i = 0; i < s_nsrc; i++)
        if (s_read_file(argv[optind + i], &s_src[i]) != 0) {
            fprintf(stderr, "bench-vips-loop: cannot read %s\n", argv[optind + i]);
            return 1;
        }

    /* One untimed pass: checks every source and warms libvips up. */
    for (int i = 0; i < s_nsrc; i++) {
        void *keep = NULL;
        long n = s_one(&s_src[i], i == 0 && first_out ? &keep : NULL);
        if (n < 0)
            return 1;
        if (keep != NULL) {
            FILE *f = fopen(first_out, "wb");
            if (f == NULL || fwrite(keep, 1, (size_t)n, f) != (size_t)n || fclose(f) != 0) {
                fprintf(stderr, "bench-vips-loop: cannot write %s\n", first_out);
                return 1;
            }
            g_free(keep);
        }
    }

    worker_t *w = calloc((size_t)threads, sizeof(*w));
    if (w == NULL)
        return 1;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = s_now();
    for (int i = 0; i < threads; i++) {
        w[i].index = i * (s_nsrc > threads ? s_nsrc / threads : 1);
        if (pthread_create(&w[i].tid, NULL, s_worker, &w[i]) != 0) {
            fprintf(stderr, "bench-vips-loop: pthread_create failed\n");
            return 1;
        }
    }
    while (!atomic_load(&s_stop) && s_now() - t0 < s_seconds)
        usleep(10000);
    atomic_store(&s_stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(w[i].tid, NULL);
    /* Every image that started before the deadline is counted, and so is
     * the time it took to finish. */
    double secs = s_now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    long done = atomic_load(&s_done);
    if (atomic_load(&s_failed) || done == 0)
        return 1;
    double cpu =
        (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
        (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("VIPSLOOP images=%ld seconds=%.3f images_per_s=%.2f threads=%d concurrency=%d format=%s q=%d "
           "out_bytes_avg=%ld cpu_ms_per_image=%.1f\n",
           done, secs, (double)done / secs, threads, concurrency > 0 ? concurrency : vips_concurrency_get(),
           s_format_name(s_format), s_q, atomic_load(&s_out_bytes) / done, cpu * 1000 / (double)done);
    for (int i = 0; i < s_nsrc; i++)
        free(s_src[i].data);
    free(s_src);
    free(w);
    vips_shutdown();
    return 0;
}
