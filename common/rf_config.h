/*  rf_config — the one YAML file of the whole constellation (libyaml).
 *
 *  Every binary loads the same file and reads its own section. Unknown keys
 *  are errors, and every error is reported as `file:line:col: message` so an
 *  operator can jump straight to it. Values are validated here, once:
 *  callers get typed, defaulted, range-checked fields.
 *  See conf/refract.yaml for the commented reference of every key.
 */
#ifndef RF_CONFIG_H
#define RF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "rf_chain.h"
#include "rf_sign.h"
#include "rf_ttl.h"

/* TLS 1.2 ciphers when gateway.tls.ciphers is not set: forward secrecy and
 * AEAD only (Mozilla's "intermediate" list). */
#define RF_TLS_DEFAULT_CIPHERS                                                                                         \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                         \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

typedef struct {
    char *host; /* "" means any address */
    int port;   /* 0 = not configured */
} rf_listen_t;

typedef enum { RF_ORIGIN_HTTP, RF_ORIGIN_FILE } rf_origin_kind_t;

/* TLS to an https:// origin: the vhost's `origin_tls` mapping. */
typedef struct {
    char *ca_file;     /* PEM certificates to trust; NULL = the system CA bundle */
    bool verify;       /* check the chain and the name (default true) */
    char *sni;         /* name sent (SNI) and checked; NULL = the origin host */
    char *client_cert; /* PEM chain for mutual TLS; NULL = none */
    char *client_key;  /* its private key (set with client_cert) */
} rf_origin_tls_t;

typedef struct {
    char *url; /* as written */
    rf_origin_kind_t kind;
    bool https;          /* http: over TLS (https://) */
    char *host;          /* http: host name or address */
    int port;            /* http: port (default 80, https 443) */
    char *prefix;        /* http: path prefix without trailing '/', may be "" */
    char *dir;           /* file: absolute directory without trailing '/' */
    rf_origin_tls_t tls; /* https only */
    bool public_only;    /* named by a client (a /src/ URL): connect to public addresses only (SSRF guard) */
} rf_origin_t;

typedef struct {
    char name[64];
    rf_origin_t origin;
} rf_named_source_t;

typedef struct {
    bool active;            /* <Dims Status="Active"> */
    char *keyword;          /* URL keyword, default "dims" */
    size_t max_source_size; /* bytes; 0 = unlimited; default 10 MB */
    rf_preset_t *presets;   /* dims.presets: names and chains malloc'd, checked at load */
    size_t n_presets;
    rf_byorig_t *byorig; /* dims.byoriginal (seed <ByOriginal>), checked at load */
    size_t n_byorig;
    rf_sign_conf_t signing; /* dims.signing: keys (secrets malloc'd); none = URLs need no signature */
    /* dims.sources: /KEYWORD/CHAIN/src/SOURCE URLs (seed Appendix C) */
    char **source_hosts; /* fnmatch patterns of the hosts an http(s) SOURCE may name; none = URL sources off */
    size_t n_source_hosts;
    bool source_private;      /* URL sources may reach loopback, private and link-local addresses */
    rf_named_source_t *named; /* NAME/PATH sources: NAME -> origin (http(s)); operator-chosen, not guarded */
    size_t n_named;
} rf_dims_conf_t;

/* A vhost's `mp4hls` mapping (seed <MP4HLS Status Keyword><Index Ver
 * Alternates>index.m3u8</Index><Sequence>0</Sequence><Duration>10
 * </Duration><AlternatesName>playlist.m3u8</AlternatesName></MP4HLS>):
 * /VIDEO.mp4/KEYWORD/INDEX and its segments. Fixed-size names, so the
 * struct copies from vhost_defaults by assignment. */
typedef struct {
    bool active;              /* status, default true */
    char keyword[32];         /* URL keyword, default "mp4hls" */
    char index[64];           /* the media playlist's name, default "index.m3u8" */
    int version;              /* #EXT-X-VERSION, 3..7, default 3 */
    bool alternates;          /* a master playlist too, default false */
    char alternates_name[64]; /* its name, default "playlist.m3u8" */
    int sequence;             /* #EXT-X-MEDIA-SEQUENCE of the first segment, default 0 */
    int duration;             /* target segment duration in seconds, 1..60, default 10 */
    bool fmp4;                /* fMP4 (CMAF) segments for every video, default false:
                               * MPEG-TS for H.264/AAC, fMP4 for the codecs TS lacks */
} rf_mp4hls_conf_t;

/* A vhost's `thumbnail` mapping (seed: https://{domain}/{endpoint}/{time}/{origin URL}):
 * /VIDEO/KEYWORD/TIME[/WxH][/FORMAT][/keyframe] and /KEYWORD/TIME/VIDEO. */
typedef struct {
    bool active;             /* status, default true */
    char keyword[32];        /* URL keyword (the seed's endpoint), default "thumbnail" */
    int quality;             /* JPEG and WebP quality 1..100, default 85 */
    char sprite_keyword[32]; /* /VIDEO/KEYWORD/EVERY/CxR/WxH/N.jpg|sprite.vtt, default "sprite" */
    bool sprites;            /* sprite sheets on (with status on), default true */
} rf_thumb_conf_t;

/* A vhost's `trimming` mapping (seed <MP4Trimming MultiParam="trimming"
 * MaxRatio="50">ON</MP4Trimming> and <M4ATrimming>): ?trimming=A-B[,C-D…]
 * and ?start=A&end=B on .mp4, .m4v, .mov and .m4a paths. */
typedef struct {
    bool active;    /* status, default true */
    char param[32]; /* the query parameter of the ranges (MultiParam), default "trimming" */
    int max_ratio;  /* percent: ranges longer in all than this share of the source get the original; 0 = none */
    bool m4a;       /* <M4ATrimming>: .m4a paths trimmed too, default true */
    bool accurate;  /* cuts on the frames asked (partial groups re-encoded), default true; ?accurate=0|1 per URL */
} rf_trim_conf_t;

void rf_trim_default(rf_trim_conf_t *t);

/* A rung of a renditions ladder: an output height and its bit-rate cap. */
#define RF_PHLS_MAX_RUNGS 8
typedef struct {
    int height; /* output height (never enlarged) */
    int kbps;   /* the video's bit-rate cap; 0: none */
} rf_rung_t;

/* A vhost's `transcode` mapping (seed: real-time transcoding, wmv/mov ->
 * mp4): /VIDEO.EXT/KEYWORD[/HEIGHTp] for the extensions listed. */
typedef struct {
    bool active;      /* status, default true */
    char keyword[32]; /* default "mp4" */
    char inputs[160]; /* extensions transcoded, comma-separated, lower case */
    int max_height;   /* the output is fitted into max_height (and 16:9 of it) at most; default 1080 */
    int max_duration; /* seconds; longer sources are refused; default 300 */
    int crf;          /* x264 quality, default 23 */
    bool stream;      /* sent as fragmented MP4 while it is made (needs bus.spool_dir); default true */
    int n_rungs;      /* the ladder (rungs[0..n_rungs), highest first): HEIGHTp must be one, and the
                         rung's kbps caps it; none (default): any height up to max_height, CRF only */
    rf_rung_t rungs[RF_PHLS_MAX_RUNGS];
} rf_transcode_conf_t;

void rf_transcode_default(rf_transcode_conf_t *t);

/* A vhost's `hls` mapping (seed 002: progressive HLS transcoding):
 * /VIDEO.EXT/KEYWORD/index.m3u8 (the master playlist of the ladder),
 * /VIDEO.EXT/KEYWORD/Hp/index.m3u8 and …/Hp/seg-N.ts, each segment
 * transcoded when first asked for, for the extensions listed. */
typedef struct {
    bool active;      /* status, default true */
    char keyword[32]; /* default "hls"; not the vhost's mp4hls keyword while both are on */
    char inputs[160]; /* extensions, comma-separated, lower case; default transcode's list */
    int duration;     /* segment seconds, 1..60, default 6 */
    int n_rungs;      /* the ladder: rungs[0..n_rungs), highest first */
    rf_rung_t rungs[RF_PHLS_MAX_RUNGS];
    int crf;          /* x264 quality, default 23 */
    int audio_kbps;   /* AAC, default 128 */
    int prefetch;     /* segments made ahead of the one asked, 0..4, default 2 */
    int max_duration; /* seconds; longer sources are refused, default 14400 */
} rf_phls_conf_t;

void rf_phls_default(rf_phls_conf_t *t);

/* The built-in thumbnail settings. */
void rf_thumb_default(rf_thumb_conf_t *t);

/* The built-in mp4hls settings (the seed's). */
void rf_mp4hls_default(rf_mp4hls_conf_t *h);

/* What a dims chain of this vhost may name (presets, byoriginal rule sets). */
rf_chain_ctx_t rf_dims_ctx(const rf_dims_conf_t *d);

/* A certificate chain and its private key (PEM files). */
typedef struct {
    char *cert;
    char *key;
} rf_tls_cert_t;

typedef enum {
    RF_QUERY_ALL,  /* the whole query is part of the key (default) */
    RF_QUERY_NONE, /* the query is ignored: one object per path */
    RF_QUERY_KEEP, /* only the listed parameters, in request order */
} rf_query_mode_t;

typedef enum { RF_CE_NONE = 0, RF_CE_GZIP = 1, RF_CE_BR = 2 } rf_ce_t;

/* One line of the seed's compression.txt: "{pattern}, {method|no}, {level}"
 * (method and level may be empty: the vhost's defaults). */
typedef struct {
    char *pattern; /* fnmatch over the canonical path ('*' crosses '/') */
    int method;    /* rf_ce_t, or -1 for the default; RF_CE_NONE = "no" */
    int level;     /* -1: the default */
} rf_compress_rule_t;

/* A vhost's `compression` mapping (seed <Compression Method Level
 * SourceSize> + compression.txt). */
typedef struct {
    bool enable;
    rf_ce_t method;  /* default gzip */
    int level;       /* default 6 (gzip 1-9, br 0-11) */
    size_t min_size; /* source_size "2-2048" (KB): bodies outside are sent as they are */
    size_t max_size;
    rf_compress_rule_t *rules; /* in order, first match wins; none: by content type */
    size_t n_rules;
} rf_compress_conf_t;

/* One line of the seed's bypass.txt: "pattern[, cache|bypass]". */
typedef struct {
    char *pattern; /* fnmatch over the canonical path */
    bool cache;    /* ", cache": an exception to bypassing */
} rf_bypass_rule_t;

/* A vhost's `bypass` mapping (seed BypassGetRequest + bypass.txt). */
typedef struct {
    bool get; /* every GET/HEAD goes to the origin uncached, except "cache" rules */
    rf_bypass_rule_t *rules;
    size_t n_rules;
} rf_bypass_conf_t;

/* A vhost's edge cache: the `cache` mapping. */
typedef struct {
    bool enable;       /* default true: http(s) origins and function results are cached */
    bool memory_only;  /* volatile content: kept in memory, never written to disk */
    bool sources;      /* function sources from http(s) origins go through the cache and reach workers by file */
    rf_ttl_conf_t ttl; /* ttl.* and override_origin */
    rf_query_mode_t query;
    char **query_keep; /* RF_QUERY_KEEP: parameter names (owned) */
    size_t n_query_keep;
} rf_cache_conf_t;

/* Content chain (seed <VhostLink Condition="404">): on these origin
 * statuses, the same path is asked of another vhost's origin. */
typedef struct {
    char *vhost; /* the target vhost's name; NULL: no link */
    struct {
        int lo, hi;
    } when[16]; /* statuses, as inclusive ranges ("404" or "5xx") */
    size_t n_when;
} rf_link_conf_t;

/* An S3 endpoint: a bucket on an S3 service (storgate's aws_s3 entries,
 * a vhost's storage tier and backup pipe). */
typedef struct {
    char *name;
    char *endpoint;   /* http(s)://host[:port] */
    char *region;     /* default ap-northeast-2 */
    char *access_key; /* may be NULL: unsigned requests */
    char *secret_key;
    char *bucket;
    bool path_style; /* default true: http://host/bucket/key */
} rf_s3ep_t;

/* A vhost's object-storage tier or backup pipe: where objects go in S3.
 * `s3` names a storgate.aws_s3 entry, or is the seed's module string
 * "aws_access_key=…;aws_secret_key=…;bucket=…;s3_url=…;region=…;";
 * either way `ep` is the vhost's own resolved copy once loaded. */
typedef struct {
    char *s3;        /* as written; NULL: off */
    char *prefix;    /* key prefix (storage default: "VHOST/"; backup default: "") */
    char *cdn_purge; /* storage only: a URL POSTed {"vhost","urls"} after each URL purge, or NULL */
    char *events;    /* where each upload's completion or failure event goes (the scheduler's outbox), or NULL */
    rf_s3ep_t ep;
} rf_s3tier_conf_t;

typedef struct {
    char *name;     /* exact host, or "*.example.com" */
    char **aliases; /* same forms as name */
    size_t n_aliases;
    bool is_default;    /* serves requests whose Host matches nothing */
    rf_origin_t origin; /* the first (or only) origin */
    /* More http(s) origins (`origin` as a list), chosen per request by
     * `balance`, skipping those passive health marks down. */
    rf_origin_t *more_origins;
    size_t n_more_origins;
    bool balance_hash; /* balance: hash (by cache key, rendezvous) or round_robin */
    /* Sibling distribution (seed: n:n peers): every key has one owner among
     * `siblings` (rendezvous hash); a request for a key another sibling owns
     * is fetched from that sibling (which serves it from its cache or its
     * origin), unless the owner is down. `sibling_self` names this gateway
     * in the list. */
    rf_origin_t *siblings;
    size_t n_siblings;
    size_t sibling_self;
    /* byclient (seed <Origin ByClient="ON" ByClientKeyword Protocol>): a
     * path "/KEYWORD/host[:port]/path" is fetched from that host — only
     * hosts the allow list names (fnmatch, lower case). */
    struct {
        char *keyword; /* NULL: off */
        bool https;
        char **allow;
        size_t n_allow;
    } byclient;
    int connect_timeout_ms; /* timeouts.connect: 0 = gateway.origin.connect_timeout */
    int read_timeout_ms;    /* timeouts.read: 0 = gateway.origin.read_timeout */
    int health_fails;       /* health.fails: failures in a row that mark an origin down (default 3) */
    int health_down_ms;     /* health.down: how long it stays down before a request tries it (default 10s) */
    rf_dims_conf_t dims;
    rf_mp4hls_conf_t mp4hls;
    rf_thumb_conf_t thumbnail;
    rf_trim_conf_t trimming;
    rf_transcode_conf_t transcode;
    rf_phls_conf_t hls;
    rf_cache_conf_t cache;
    rf_compress_conf_t compression;
    rf_link_conf_t link;
    rf_bypass_conf_t bypass;
    rf_tls_cert_t tls;        /* served to clients whose SNI names this vhost; NULLs = the default */
    rf_s3tier_conf_t storage; /* the object-storage tier (docs/storage.md); .s3 NULL = none */
    rf_s3tier_conf_t backup;  /* the backup pipe (seed aws_s3-backup); .s3 NULL = none */
} rf_vhost_conf_t;

/* One URL rewrite rule (seed <URLRewrite AccessLog="Replace"><Pattern>
 * <Replace>): PCRE2 `pattern` over "host/path?query"; the subject is
 * replaced by `replace` with #1..#9 for its groups, and the result routes
 * as "newhost/newpath?query". */
typedef struct {
    char *pattern;
    char *replace;
    bool log_replaced; /* access_log: replace (log the new URL) or original */
} rf_rewrite_t;

typedef struct {
    char *path; /* the file it was loaded from (or the name given) */

    struct {
        rf_listen_t listen;
        rf_listen_t admin_listen;
        int threads; /* event-loop threads; 0 = one per core */
        char *cache_dir;
        char *admin_token; /* NULL: the purge endpoints are off */
        char *name;        /* Via pseudonym; NULL: hostname:port */
        char *meta_backend, *meta_redis, *meta_prefix, *meta_advertise, *meta_password; /* gateway.metadata */
        size_t cache_memory, cache_disk, cache_memory_object_max;                       /* bytes */
        int connect_timeout_ms;                                                         /* origin connect */
        int read_timeout_ms;                                                            /* origin idle read/write */
        int keepalive_max;        /* idle origin connections kept per origin per thread */
        int keepalive_timeout_ms; /* how long an idle origin connection is kept */
        int resolve_ttl_ms;       /* how long a resolved origin address is used before a new lookup */
        int drain_timeout_ms;     /* SIGTERM: how long in-flight requests may finish */
        int client_timeout_ms;    /* idle client connection */
        bool access_log;          /* one log line per request */
        struct {
            rf_listen_t listen; /* port 0 = no TLS listener */
            rf_tls_cert_t def;  /* certificate for clients without (or with unknown) SNI */
            char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 suites are OpenSSL's */
            int min_version;    /* 0x0303 = TLS 1.2, 0x0304 = TLS 1.3 */
        } tls;
    } gateway;

    struct {
        char *endpoint; /* gateway binds it (ROUTER) */
        char **connect; /* workers connect to each (default: endpoint) */
        size_t n_connect;
        int heartbeat_ms;       /* heartbeat interval both ways */
        int liveness;           /* missed heartbeats before a peer is dead */
        int queue_max;          /* waiting jobs per service before 503 */
        int job_timeout_ms;     /* job deadline from submission */
        int retries;            /* re-dispatches after a worker died */
        int no_worker_grace_ms; /* queued jobs of a service without workers wait this long, then 503 */
        bool file_refs;         /* file:// sources go to workers as paths, not bytes */
        char *spool_dir;        /* http sources are written here and sent as paths; NULL: as bytes */
    } bus;

    rf_vhost_conf_t *vhosts;
    size_t n_vhosts;

    rf_rewrite_t *rewrites; /* url_rewrite, in order: the first match applies */
    size_t n_rewrites;

    struct {
        rf_listen_t metrics_listen;
        int jobs;                  /* jobs run at once (capacity announced) */
        int vips_concurrency;      /* libvips threads per job; 0 = libvips default */
        int64_t max_pixels;        /* refuse to decode larger sources; 0 = no limit */
        int64_t max_output_pixels; /* refuse larger results (enlargement budget); 0 = no limit */
        int max_frames;            /* animated sources keep at most this many frames */
    } image_worker;

    struct {
        rf_listen_t metrics_listen;
        int jobs;          /* jobs run at once (capacity announced) */
        char *gateway_url; /* where edge: sources are read by range; NULL = http://127.0.0.1:<gateway.listen port> */
        int index_cache;   /* parsed MP4 indexes kept per worker */
        size_t read_ahead; /* bytes asked at least per range read of an edge: source */
    } video_worker;

    struct {
        int level; /* rf_log_level_t */
    } log;

    struct rf_sg_conf_t *storgate; /* the storgate section (rf_sgconf.h); NULL when absent */

    struct {
        rf_listen_t metrics_listen;
        char *name;         /* this node; NULL = HOSTNAME */
        char *state_dir;    /* events/, outbox/, cursors/ */
        int jobs;           /* items at once; 0 = one per CPU */
        char *bus_endpoint; /* its own broker for function tasks; NULL = none */
    } storgate_scheduler;

    struct {
        char *brokers;           /* bootstrap list; NULL = not configured */
        char *topic;             /* pre-warm messages */
        char *group;             /* consumer group id */
        char *dead_letter_topic; /* NULL = TOPIC.dead-letter */
        char *events_topic;      /* completion/failure events; NULL = none */
        char *events_webhook;    /* the same events through storgate's outbox; NULL = none */
        char *gateway_url;       /* NULL = http://127.0.0.1:<gateway.listen port> */
        int concurrency;         /* messages at once (distinct partitions) */
        int retries;             /* retries of a failed request */
        int timeout_ms;          /* one request to the gateway */
        int session_timeout_ms;  /* Kafka session.timeout.ms */
        rf_listen_t metrics_listen;
    } prewarm;
} rf_config_t;

/* Loads and validates a YAML file. Returns a new config (caller owns;
 * rf_config_destroy) or NULL with *err set to a malloc'd
 * "file:line:col: message" (caller frees). */
rf_config_t *rf_config_load(const char *path, char **err);

/* Same from memory; `name` is used in messages. `text` need not be
 * NUL-terminated. */
rf_config_t *rf_config_load_string(const char *text, size_t len, const char *name, char **err);

/* Writes the markdown table of one schema section ("gateway", "bus",
 * "image_worker", "log"; nested keys appear as "origin.read_timeout") from
 * common/rf_config.def: docs/configuration.md embeds these tables, and a
 * unit test keeps them equal. */
void rf_config_write_reference(FILE *out, const char *section);

/* Whether a GET to canonical path `path` (NUL-terminated) bypasses the
 * cache on this vhost: the first matching rule decides, else `get`. */
bool rf_bypass_matches(const rf_bypass_conf_t *b, const char *path);

/* Whether `status` is one of the link's conditions. */
bool rf_link_matches(const rf_link_conf_t *l, int status);

/* Frees an endpoint's strings (the struct itself is the caller's). */
void rf_s3ep_clear(rf_s3ep_t *e);
/* A deep copy of src into dst. 0, or -1 out of memory (dst cleared). */
int rf_s3ep_copy(rf_s3ep_t *dst, const rf_s3ep_t *src);
/* The seed's module string "aws_access_key=…;aws_secret_key=…;bucket=…;
 * s3_url=…;region=…;" into e (owned by the caller: rf_s3ep_clear), named
 * name. 0, or -1 with *why (static text). */
int rf_s3ep_parse_module(const char *text, const char *name, rf_s3ep_t *e, const char **why);

/* Frees the config; safe on NULL and twice. */
void rf_config_destroy(rf_config_t **self_p);

/* Parses "host:port", ":port" or "port" into out (host malloc'd).
 * Returns 0 or -1 (out untouched). */
int rf_listen_parse(const char *text, rf_listen_t *out);

/* Parses an origin URL (http://host[:port][/prefix],
 * https://host[:port][/prefix] or file:///dir) into out (strings malloc'd;
 * free with rf_origin_clear). An https origin gets tls.verify = true and
 * no other TLS setting. Returns 0, or -1 with a static reason in *why. */
int rf_origin_parse(const char *url, rf_origin_t *out, const char **why);
void rf_origin_clear(rf_origin_t *o);

/* Parses "10MB", "512k", "1GiB", "0", "123" (bytes) into *out. 0 or -1. */
int rf_size_parse(const char *text, size_t *out);

/* Parses "10s", "500ms", "2m", "3" (seconds) into milliseconds. 0 or -1. */
int rf_duration_parse(const char *text, int *out_ms);

#endif
