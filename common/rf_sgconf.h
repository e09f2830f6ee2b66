/*  rf_sgconf — the `storgate` section of the one YAML file (seed 003).
 *
 *  The seed writes storgate's settings as JSON (setting.json); JSON is
 *  YAML's flow syntax, so the seed's text pastes under `storgate:` as it is
 *  and errors still point at file:line:col. Keys keep the seed's spelling
 *  (mountPoint, originPath, chunkSize, savePath, whenExist, …) and its
 *  defaults. `storage:` (the seed's landing-zone example) is accepted as
 *  another name of the section.
 */
#ifndef RF_SGCONF_H
#define RF_SGCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rf_config.h"

/* An `aws_s3` endpoint: a bucket on an S3 service that mounts name as
 * "NAME@aws_s3[/skip/path]" and the leader lease names as authEndpoint. */
typedef rf_s3ep_t rf_sg_s3ep_t; /* rf_config.h */

typedef enum { RF_SG_MOUNT_LOCAL, RF_SG_MOUNT_S3 } rf_sg_mount_kind_t;

typedef struct {
    char *mount_point; /* "/image1", "" = the bucket's root (seed: null) */
    char *origin_path; /* as written */
    rf_sg_mount_kind_t kind;
    char *dir;  /* LOCAL: absolute directory, no trailing '/' */
    int s3;     /* S3: index into aws_s3 */
    const rf_sg_s3ep_t *ep; /* S3: that endpoint (resolved at load) */
    char *skip; /* S3: key prefix inside that bucket, no leading or trailing '/', may be "" */
    bool expose;
} rf_sg_mount_t;

typedef enum { RF_SG_FILE, RF_SG_DIRECTORY, RF_SG_ANY } rf_sg_filetype_t;

/* Ansible find's criteria (seed: filter). age/size: the sign says the side,
 * as in find: "2d" = at least 2 days old, "-2d" = younger; "1m" = at least 1 MiB, "-1m" = smaller. */
typedef struct {
    char **patterns; /* fnmatch on the file name; none = every name */
    size_t n_patterns;
    char **excludes;
    size_t n_excludes;
    rf_sg_filetype_t filetype; /* default file */
    bool recursive;            /* default false, as in find */
    bool has_age, has_size;
    int64_t age_s;  /* negative: younger than -age_s */
    int64_t size_b; /* negative: smaller than -size_b */
} rf_sg_filter_t;

typedef struct {
    bool enable;
    bool has_filter;
    rf_sg_filter_t filter;
    char *workflow; /* trigger.workflow; NULL = none */
    bool pre;       /* trigger.timing: pre (before the client's answer) or post (default) */
    char *on_item_completed, *on_item_aborted;      /* webhook targets */
    char *on_chunk_extracted, *on_chunk_completed; /* onBatch only */
    /* onBatch only */
    int chunk_size;     /* default 1000 */
    char *path;         /* bucket path scanned */
    bool breadth;       /* traverse: depth (default) or breadth */
    bool cursor_reset;  /* cursor: continue (default) or reset */
    char *schedule;     /* 5-field cron */
} rf_sg_event_t;

typedef enum { RF_SG_OVERWRITE, RF_SG_SKIP, RF_SG_DIFF } rf_sg_when_exist_t;
typedef enum { RF_SG_SRC_NONE, RF_SG_SRC_DELETE, RF_SG_SRC_MOVE } rf_sg_src_op_t;

typedef struct {
    char *function;     /* a chain (/dims/…; /hyperdims/… is an alias); NULL = copy */
    char *save_path;    /* Nunjucks template over item.* */
    char *path_pattern; /* regex whose groups #1… savePath may use; NULL = none */
    rf_sg_when_exist_t when_exist;
    int timeout_s; /* default 60 */
} rf_sg_task_t;

typedef struct {
    char *name;
    bool enable;
    rf_sg_task_t *tasks;
    size_t n_tasks;
    rf_sg_src_op_t src_op; /* onComplete.src.op */
    char *src_path;        /* for move: a template */
} rf_sg_workflow_t;

typedef struct {
    bool enable;  /* meta.enable, default true */
    char *name;   /* meta.name: 3..63 of [a-z0-9._-] (S3) — or with '_' as the seed's example does */
    char *region; /* default ap-northeast-2 */
    bool expose;  /* meta.expose: served by the S3 API; default true */
    rf_sg_mount_t *mounts;
    size_t n_mounts;
    bool get, put, del; /* access.*.enable, default true */
    rf_sg_event_t *on_batch;
    size_t n_on_batch;
    rf_sg_event_t on_get, on_put, on_delete;
    rf_sg_workflow_t *workflows;
    size_t n_workflows;
} rf_sg_bucket_t;

typedef struct {
    char *access_key;
    char *secret_key;
} rf_sg_cred_t;

typedef struct rf_sg_conf_t {
    rf_listen_t listen; /* the S3 API (served by the gateway); port 0 = none */
    size_t max_put;     /* largest single PUT or part body; default 5GB (S3's own limit) */
    rf_sg_cred_t *credentials;
    size_t n_credentials;
    rf_sg_s3ep_t *aws_s3;
    size_t n_aws_s3;
    rf_sg_bucket_t *buckets;
    size_t n_buckets;
    struct {
        bool meta_enable;   /* false: every node is its own leader */
        char *leader_url;   /* file://…, redis://…, https://… */
        char *auth_endpoint;
        int term_ms;        /* default 5 min */
    } distribution;
    struct {
        bool enable; /* default true */
        int deactive, reactive;
        int window_ms; /* the average's window (the seed: changeable globally); default 30s */
    } throttling;
} rf_sg_conf_t;

/* Frees everything conf holds and conf itself; NULL-safe. */
void rf_sgconf_destroy(rf_sg_conf_t **conf_p);

/* The bucket named `name` (length len), or NULL. */
const rf_sg_bucket_t *rf_sgconf_bucket(const rf_sg_conf_t *conf, const char *name, size_t len);

/* The workflow of a bucket by name, or NULL. */
const rf_sg_workflow_t *rf_sgconf_workflow(const rf_sg_bucket_t *b, const char *name);

#endif
