/*  rf_sgconf — parses and checks the `storgate` section (rf_sgconf.h).
 *
 *  Walks the YAML nodes with the loader's kit (rf_config_yaml.h), so every
 *  error reads "file:line:col: message". Cross-references (a mount's
 *  aws_s3 name, a trigger's workflow) are resolved after the whole section
 *  is read, since JSON objects have no order.
 */
#include "rf_sgconf.h"

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rf_config_yaml.h"
#include "rf_sgfunc.h"

#define K(name, fn, type, field)                                                                                       \
    {                                                                                                                  \
        name, fn, offsetof(type, field)                                                                                \
    }

/* ---- freeing ---------------------------------------------------------------- */

static void s_strs_free(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static void s_event_clear(rf_sg_event_t *e)
{
    s_strs_free(e->filter.patterns, e->filter.n_patterns);
    s_strs_free(e->filter.excludes, e->filter.n_excludes);
    free(e->workflow);
    free(e->on_item_completed);
    free(e->on_item_aborted);
    free(e->on_chunk_extracted);
    free(e->on_chunk_completed);
    free(e->path);
    free(e->schedule);
}

static void s_bucket_clear(rf_sg_bucket_t *b)
{
    free(b->name);
    free(b->region);
    for (size_t i = 0; i < b->n_mounts; i++) {
        free(b->mounts[i].mount_point);
        free(b->mounts[i].origin_path);
        free(b->mounts[i].dir);
        free(b->mounts[i].skip);
    }
    free(b->mounts);
    for (size_t i = 0; i < b->n_on_batch; i++)
        s_event_clear(&b->on_batch[i]);
    free(b->on_batch);
    s_event_clear(&b->on_get);
    s_event_clear(&b->on_put);
    s_event_clear(&b->on_delete);
    for (size_t i = 0; i < b->n_workflows; i++) {
        rf_sg_workflow_t *w = &b->workflows[i];
        for (size_t t = 0; t < w->n_tasks; t++) {
            free(w->tasks[t].function);
            free(w->tasks[t].save_path);
            free(w->tasks[t].path_pattern);
        }
        free(w->tasks);
        free(w->name);
        free(w->src_path);
    }
    free(b->workflows);
}

void rf_sgconf_destroy(rf_sg_conf_t **conf_p)
{
    if (conf_p == NULL || *conf_p == NULL)
        return;
    rf_sg_conf_t *sc = *conf_p;
    free(sc->listen.host);
    for (size_t i = 0; i < sc->n_credentials; i++) {
        free(sc->credentials[i].access_key);
        free(sc->credentials[i].secret_key);
    }
    free(sc->credentials);
    for (size_t i = 0; i < sc->n_aws_s3; i++) {
        rf_s3ep_clear(&sc->aws_s3[i]);
    }
    free(sc->aws_s3);
    for (size_t i = 0; i < sc->n_buckets; i++)
        s_bucket_clear(&sc->buckets[i]);
    free(sc->buckets);
    free(sc->distribution.leader_url);
    free(sc->distribution.auth_endpoint);
    free(sc);
    *conf_p = NULL;
}

const rf_sg_bucket_t *rf_sgconf_bucket(const rf_sg_conf_t *conf, const char *name, size_t len)
{
    for (size_t i = 0; conf != NULL && i < conf->n_buckets; i++)
        if (strlen(conf->buckets[i].name) == len && memcmp(conf->buckets[i].name, name, len) == 0)
            return &conf->buckets[i];
    return NULL;
}

const rf_sg_workflow_t *rf_sgconf_workflow(const rf_sg_bucket_t *b, const char *name)
{
    for (size_t i = 0; name != NULL && i < b->n_workflows; i++)
        if (strcmp(b->workflows[i].name, name) == 0)
            return &b->workflows[i];
    return NULL;
}

/* ---- small value handlers --------------------------------------------------- */

static const char *s_text(yaml_node_t *v)
{
    return (const char *)v->data.scalar.value;
}

/* A string that may be null (JSON null, or absent): NULL then. */
static int s_nstr(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    char **dst = t;
    free(*dst);
    *dst = NULL;
    if (rf_cfg_is_null(v))
        return 0;
    return rf_cfg_str(c, v, t);
}

/* {"enable": bool} */
static int s_enable_map(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {{"enable", rf_cfg_bool, 0}, {0}};
    return rf_cfg_walk(c, v, keys, t, "an access rule");
}

/* Items of sequence `v` are parsed by `item` into a new array of `size`-byte
 * elements at *(void **)t, its count at *(size_t *)(t + sizeof(void *)),
 * each element set up by `init` first (NULL: zeroed). */
typedef struct {
    void *items;
    size_t n;
} s_array_t;

static int s_seq(rf_cfgctx_t *c, yaml_node_t *v, void *t, size_t size, const char *what,
                 int (*item)(rf_cfgctx_t *, yaml_node_t *, void *), void (*init)(void *))
{
    s_array_t *a = t;
    if (rf_cfg_is_null(v))
        return 0;
    if (v->type != YAML_SEQUENCE_NODE)
        return rf_cfg_fail(c, v, "%s must be a list", what);
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n > 10000)
        return rf_cfg_fail(c, v, "%s: at most 10000 entries", what);
    a->items = calloc(n ? n : 1, size);
    if (a->items == NULL)
        return rf_cfg_fail(c, v, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = rf_cfg_node(c, v->data.sequence.items.start[i]);
        void *el = (char *)a->items + i * size;
        if (init)
            init(el);
        a->n = i + 1; /* counted before parsing, so a failure frees it too */
        if (item(c, it, el) < 0)
            return -1;
    }
    return 0;
}

/* "2d", "-3h", "90" (seconds): Ansible find's age (s m h d w). */
static int s_age(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    if (v->type != YAML_SCALAR_NODE)
        return rf_cfg_fail(c, v, "age must be a scalar such as 2d");
    const char *p = s_text(v);
    int neg = *p == '-';
    p += neg;
    char *end;
    long long n = strtoll(p, &end, 10);
    static const char units[] = "smhdw";
    static const int64_t mult[] = {1, 60, 3600, 86400, 604800};
    int64_t m = 1;
    if (*end != '\0') {
        const char *u = strchr(units, tolower((unsigned char)*end));
        if (u == NULL || end[1] != '\0')
            return rf_cfg_fail(c, v, "age '%s': a number with s, m, h, d or w", s_text(v));
        m = mult[u - units];
    }
    if (end == p || n < 0 || n > INT64_MAX / m / 2)
        return rf_cfg_fail(c, v, "age '%s': a number with s, m, h, d or w", s_text(v));
    *(int64_t *)t = (neg ? -1 : 1) * n * m;
    return 0;
}

/* "1m", "-500k", "100" (bytes): Ansible find's size (b k m g t, 1024-based). */
static int s_fsize(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    if (v->type != YAML_SCALAR_NODE)
        return rf_cfg_fail(c, v, "size must be a scalar such as 1m");
    const char *p = s_text(v);
    int neg = *p == '-';
    p += neg;
    char *end;
    long long n = strtoll(p, &end, 10);
    static const char units[] = "bkmgt";
    int64_t m = 1;
    if (*end != '\0') {
        const char *u = strchr(units, tolower((unsigned char)*end));
        if (u == NULL || end[1] != '\0')
            return rf_cfg_fail(c, v, "size '%s': a number with b, k, m, g or t", s_text(v));
        m = (int64_t)1 << (10 * (u - units));
    }
    if (end == p || n < 0 || n > INT64_MAX / m / 2)
        return rf_cfg_fail(c, v, "size '%s': a number with b, k, m, g or t", s_text(v));
    *(int64_t *)t = (neg ? -1 : 1) * n * m;
    return 0;
}

static int s_one_of(rf_cfgctx_t *c, yaml_node_t *v, const char *const *words, const char *what)
{
    if (v->type != YAML_SCALAR_NODE)
        return rf_cfg_fail(c, v, "%s must be a scalar", what);
    for (int i = 0; words[i]; i++)
        if (strcmp(s_text(v), words[i]) == 0)
            return i;
    char list[200] = "";
    for (int i = 0; words[i]; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", words[i]);
    return rf_cfg_fail(c, v, "%s is one of %s, got '%s'", what, list, s_text(v));
}

/* ---- events ------------------------------------------------------------------ */

static int s_filetype(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const char *const w[] = {"file", "directory", "any", NULL};
    int i = s_one_of(c, v, w, "filetype");
    if (i < 0)
        return -1;
    *(rf_sg_filetype_t *)t = (rf_sg_filetype_t)i;
    return 0;
}

static int s_filter(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    rf_sg_event_t *e = t;
    if (rf_cfg_is_null(v))
        return 0;
    static const rf_cfg_key_t keys[] = {K("patterns", rf_cfg_strlist, rf_sg_filter_t, patterns),
                                        K("excludes", rf_cfg_strlist, rf_sg_filter_t, excludes),
                                        K("filetype", s_filetype, rf_sg_filter_t, filetype),
                                        K("recursive", rf_cfg_bool, rf_sg_filter_t, recursive),
                                        K("age", s_age, rf_sg_filter_t, age_s),
                                        K("size", s_fsize, rf_sg_filter_t, size_b),
                                        {0}};
    e->has_filter = true;
    e->filter.age_s = INT64_MIN;
    e->filter.size_b = INT64_MIN;
    if (rf_cfg_walk(c, v, keys, &e->filter, "filter") < 0)
        return -1;
    e->filter.has_age = e->filter.age_s != INT64_MIN;
    e->filter.has_size = e->filter.size_b != INT64_MIN;
    if (!e->filter.has_age)
        e->filter.age_s = 0;
    if (!e->filter.has_size)
        e->filter.size_b = 0;
    return 0;
}

static int s_timing(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const char *const w[] = {"post", "pre", NULL};
    int i = s_one_of(c, v, w, "trigger.timing");
    if (i < 0)
        return -1;
    *(bool *)t = i == 1;
    return 0;
}

static int s_trigger(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    if (rf_cfg_is_null(v))
        return 0;
    static const rf_cfg_key_t keys[] = {
        K("workflow", s_nstr, rf_sg_event_t, workflow), K("timing", s_timing, rf_sg_event_t, pre), {0}};
    return rf_cfg_walk(c, v, keys, t, "trigger");
}

static int s_webhook(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    if (rf_cfg_is_null(v))
        return 0;
    static const rf_cfg_key_t keys[] = {K("onItemCompleted", s_nstr, rf_sg_event_t, on_item_completed),
                                        K("onItemAborted", s_nstr, rf_sg_event_t, on_item_aborted),
                                        K("onChunkExtracted", s_nstr, rf_sg_event_t, on_chunk_extracted),
                                        K("onChunkCompleted", s_nstr, rf_sg_event_t, on_chunk_completed),
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "webhook");
}

static int s_traverse(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const char *const w[] = {"depth", "breadth", NULL};
    int i = s_one_of(c, v, w, "traverse");
    return i < 0 ? -1 : (*(bool *)t = i == 1, 0);
}

static int s_cursor(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const char *const w[] = {"continue", "reset", NULL};
    int i = s_one_of(c, v, w, "cursor");
    return i < 0 ? -1 : (*(bool *)t = i == 1, 0);
}

static int s_event(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("enable", rf_cfg_bool, rf_sg_event_t, enable),
                                        {"filter", s_filter, 0},
                                        {"trigger", s_trigger, 0},
                                        {"webhook", s_webhook, 0},
                                        {0}};
    if (rf_cfg_is_null(v))
        return 0;
    return rf_cfg_walk(c, v, keys, t, "an event");
}

static int s_batch_item(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("enable", rf_cfg_bool, rf_sg_event_t, enable),
                                        {"filter", s_filter, 0},
                                        {"trigger", s_trigger, 0},
                                        {"webhook", s_webhook, 0},
                                        K("chunkSize", rf_cfg_int, rf_sg_event_t, chunk_size),
                                        K("path", s_nstr, rf_sg_event_t, path),
                                        K("traverse", s_traverse, rf_sg_event_t, breadth),
                                        K("cursor", s_cursor, rf_sg_event_t, cursor_reset),
                                        K("schedule", s_nstr, rf_sg_event_t, schedule),
                                        {0}};
    rf_sg_event_t *e = t;
    if (rf_cfg_walk(c, v, keys, t, "onBatch") < 0)
        return -1;
    if (e->chunk_size < 1 || e->chunk_size > 100000)
        return rf_cfg_fail(c, v, "onBatch.chunkSize must be 1..100000, got %d", e->chunk_size);
    if (e->path == NULL)
        return rf_cfg_fail(c, v, "onBatch needs a path (a directory of the bucket, \"/\" for all)");
    if (e->schedule == NULL)
        return rf_cfg_fail(c, v, "onBatch needs a schedule (5-field cron, e.g. \"*/5 * * * *\")");
    return 0;
}

static void s_batch_init(void *el)
{
    rf_sg_event_t *e = el;
    e->chunk_size = 1000;
    e->enable = false;
}

static int s_on_batch(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_event_t), "onBatch", s_batch_item, s_batch_init);
}

static int s_events(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("onBatch", s_on_batch, rf_sg_bucket_t, on_batch),
                                        K("onGet", s_event, rf_sg_bucket_t, on_get),
                                        K("onPut", s_event, rf_sg_bucket_t, on_put),
                                        K("onDelete", s_event, rf_sg_bucket_t, on_delete),
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "events");
}

/* ---- workflows ----------------------------------------------------------------- */

static int s_when_exist(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const char *const w[] = {"overwrite", "skip", "diff", NULL};
    int i = s_one_of(c, v, w, "whenExist");
    return i < 0 ? -1 : (*(rf_sg_when_exist_t *)t = (rf_sg_when_exist_t)i, 0);
}

static int s_save_path(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    if (rf_cfg_is_null(v))
        return rf_cfg_fail(c, v, "savePath may not be null: write \"{{ item.path }}\" to overwrite the source");
    return rf_cfg_str(c, v, t);
}

static int s_task(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {
        K("function", s_nstr, rf_sg_task_t, function),        K("savePath", s_save_path, rf_sg_task_t, save_path),
        K("pathPattern", s_nstr, rf_sg_task_t, path_pattern), K("whenExist", s_when_exist, rf_sg_task_t, when_exist),
        K("timeout", rf_cfg_int, rf_sg_task_t, timeout_s),    {0}};
    rf_sg_task_t *k = t;
    if (rf_cfg_walk(c, v, keys, t, "a task") < 0)
        return -1;
    if (k->save_path == NULL)
        return rf_cfg_fail(c, v, "a task needs a savePath (\"{{ item.path }}\" overwrites the source)");
    if (k->timeout_s < 1 || k->timeout_s > 86400)
        return rf_cfg_fail(c, v, "task timeout must be 1..86400 seconds, got %d", k->timeout_s);
    if (k->function != NULL) { /* parsed as the scheduler will run it */
        const char *service;
        json_t *chain = NULL;
        char why[300];
        int rc = rf_sgfunc_job(k->function, "item", &service, &chain, why, sizeof(why));
        json_decref(chain);
        if (rc < 0)
            return rf_cfg_fail(c, v, "task function: %s", why);
    }
    return 0;
}

static void s_task_init(void *el)
{
    ((rf_sg_task_t *)el)->timeout_s = 60;
}

static int s_tasks(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_task_t), "tasks", s_task, s_task_init);
}

static int s_src_op(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const char *const w[] = {"none", "delete", "move", NULL};
    int i = s_one_of(c, v, w, "onComplete.src.op");
    return i < 0 ? -1 : (*(rf_sg_src_op_t *)t = (rf_sg_src_op_t)i, 0);
}

static int s_src(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {
        K("op", s_src_op, rf_sg_workflow_t, src_op), K("path", s_nstr, rf_sg_workflow_t, src_path), {0}};
    return rf_cfg_walk(c, v, keys, t, "onComplete.src");
}

static int s_on_complete(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {{"src", s_src, 0}, {0}};
    return rf_cfg_walk(c, v, keys, t, "onComplete");
}

static int s_workflow(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("name", s_nstr, rf_sg_workflow_t, name),
                                        K("enable", rf_cfg_bool, rf_sg_workflow_t, enable),
                                        K("tasks", s_tasks, rf_sg_workflow_t, tasks),
                                        {"onComplete", s_on_complete, 0},
                                        {0}};
    rf_sg_workflow_t *w = t;
    if (rf_cfg_walk(c, v, keys, t, "a workflow") < 0)
        return -1;
    if (w->name == NULL)
        return rf_cfg_fail(c, v, "a workflow needs a name");
    if (w->src_op == RF_SG_SRC_MOVE && w->src_path == NULL)
        return rf_cfg_fail(c, v, "workflow '%s': onComplete.src.op move needs a path", w->name);
    return 0;
}

static void s_workflow_init(void *el)
{
    ((rf_sg_workflow_t *)el)->enable = true;
}

static int s_workflows(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_workflow_t), "workflows", s_workflow, s_workflow_init);
}

/* ---- buckets and mounts ------------------------------------------------------- */

/* "/a/b" made of non-empty segments other than . and .., or "" (the root). */
static bool s_bucket_path_ok(const char *p)
{
    if (*p == '\0')
        return true;
    if (*p != '/' || strlen(p) > 1024)
        return false;
    for (const char *s = p + 1;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        if (e == NULL)
            return true;
        s = e + 1;
    }
}

static int s_mount(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("mountPoint", s_nstr, rf_sg_mount_t, mount_point),
                                        K("originPath", s_nstr, rf_sg_mount_t, origin_path),
                                        K("expose", rf_cfg_bool, rf_sg_mount_t, expose),
                                        {0}};
    rf_sg_mount_t *m = t;
    if (rf_cfg_walk(c, v, keys, t, "a mount") < 0)
        return -1;
    if (m->origin_path == NULL)
        return rf_cfg_fail(c, v, "a mount needs an originPath (/local/dir or NAME@aws_s3[/skip/path])");
    if (m->mount_point == NULL && (m->mount_point = strdup("")) == NULL)
        return rf_cfg_fail(c, v, "out of memory");
    size_t ml = strlen(m->mount_point);
    if (ml > 1 && m->mount_point[ml - 1] == '/')
        m->mount_point[ml - 1] = '\0';
    if (strcmp(m->mount_point, "/") == 0)
        m->mount_point[0] = '\0';
    if (!s_bucket_path_ok(m->mount_point))
        return rf_cfg_fail(c, v, "mountPoint '%s' must be an absolute path without '.', '..' or '//' segments",
                           m->mount_point);
    const char *o = m->origin_path;
    if (o[0] == '/') {
        m->kind = RF_SG_MOUNT_LOCAL;
        size_t n = strlen(o);
        while (n > 1 && o[n - 1] == '/')
            n--;
        if ((m->dir = strndup(o, n)) == NULL)
            return rf_cfg_fail(c, v, "out of memory");
        if (strcmp(m->dir, "/") != 0 && !s_bucket_path_ok(m->dir))
            return rf_cfg_fail(c, v, "originPath '%s' must be a clean absolute directory", o);
        return 0;
    }
    const char *at = strstr(o, "@aws_s3");
    if (at == NULL || at == o || (at[7] != '\0' && at[7] != '/'))
        return rf_cfg_fail(c, v, "originPath '%s': a local directory (/…) or NAME@aws_s3[/skip/path]", o);
    m->kind = RF_SG_MOUNT_S3;
    m->s3 = -1; /* resolved once aws_s3 is read */
    const char *skip = at[7] == '/' ? at + 8 : at + 7;
    size_t sl = strlen(skip);
    while (sl > 0 && skip[sl - 1] == '/')
        sl--;
    if ((m->skip = strndup(skip, sl)) == NULL)
        return rf_cfg_fail(c, v, "out of memory");
    if (sl > 0) {
        char probe[1100];
        snprintf(probe, sizeof(probe), "/%s", m->skip);
        if (!s_bucket_path_ok(probe))
            return rf_cfg_fail(c, v, "originPath '%s': the path to skip has empty, '.' or '..' segments", o);
    }
    return 0;
}

static void s_mount_init(void *el)
{
    ((rf_sg_mount_t *)el)->expose = true;
}

static int s_mounts(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_mount_t), "mounts", s_mount, s_mount_init);
}

static int s_meta(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("enable", rf_cfg_bool, rf_sg_bucket_t, enable),
                                        K("name", s_nstr, rf_sg_bucket_t, name),
                                        K("region", s_nstr, rf_sg_bucket_t, region),
                                        K("expose", rf_cfg_bool, rf_sg_bucket_t, expose),
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "meta");
}

static int s_access(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("get", s_enable_map, rf_sg_bucket_t, get),
                                        K("put", s_enable_map, rf_sg_bucket_t, put),
                                        K("delete", s_enable_map, rf_sg_bucket_t, del),
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "access");
}

static bool s_bucket_name_ok(const char *n)
{
    size_t l = strlen(n);
    if (l < 1 || l > 63)
        return false;
    for (size_t i = 0; i < l; i++)
        if (!isalnum((unsigned char)n[i]) && n[i] != '.' && n[i] != '-' && n[i] != '_')
            return false;
    return true;
}

/* Checks a bucket once read: its name, mounts and the workflows its events name. */
static int s_bucket_check(rf_cfgctx_t *c, yaml_node_t *v, rf_sg_bucket_t *b)
{
    if (b->name == NULL)
        return rf_cfg_fail(c, v, "a bucket needs a name (meta.name)");
    if (!s_bucket_name_ok(b->name))
        return rf_cfg_fail(c, v, "bucket name '%s': 1..63 letters, digits, '.', '-' or '_'", b->name);
    if (b->region == NULL && (b->region = strdup("ap-northeast-2")) == NULL)
        return rf_cfg_fail(c, v, "out of memory");
    if (b->n_mounts == 0)
        return rf_cfg_fail(c, v, "bucket '%s' needs at least one mount", b->name);
    for (size_t i = 0; i < b->n_mounts; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(b->mounts[i].mount_point, b->mounts[j].mount_point) == 0 && b->mounts[i].mount_point[0])
                return rf_cfg_fail(c, v, "bucket '%s': mountPoint '%s' is declared twice", b->name,
                                   b->mounts[i].mount_point);
    for (size_t i = 0; i < b->n_workflows; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(b->workflows[i].name, b->workflows[j].name) == 0)
                return rf_cfg_fail(c, v, "bucket '%s': workflow '%s' is declared twice", b->name, b->workflows[i].name);
    rf_sg_event_t *ev[3] = {&b->on_get, &b->on_put, &b->on_delete};
    for (size_t i = 0; i < 3 + b->n_on_batch; i++) {
        rf_sg_event_t *e = i < 3 ? ev[i] : &b->on_batch[i - 3];
        if (e->workflow != NULL && rf_sgconf_workflow(b, e->workflow) == NULL)
            return rf_cfg_fail(c, v, "bucket '%s': trigger names workflow '%s', which is not in its workflows", b->name,
                               e->workflow);
        if (i >= 3) {
            size_t pl = strlen(e->path);
            if (pl > 1 && e->path[pl - 1] == '/')
                e->path[pl - 1] = '\0';
            if (strcmp(e->path, "/") != 0 && !s_bucket_path_ok(e->path))
                return rf_cfg_fail(c, v, "bucket '%s': onBatch path '%s' must be an absolute path of the bucket",
                                   b->name, e->path);
        }
    }
    return 0;
}

static int s_bucket(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    /* name/region/expose/enable also at the bucket's top, as the seed's
     * landing-zone example writes them. */
    static const rf_cfg_key_t keys[] = {{"meta", s_meta, 0},
                                        K("enable", rf_cfg_bool, rf_sg_bucket_t, enable),
                                        K("name", s_nstr, rf_sg_bucket_t, name),
                                        K("region", s_nstr, rf_sg_bucket_t, region),
                                        K("expose", rf_cfg_bool, rf_sg_bucket_t, expose),
                                        K("mounts", s_mounts, rf_sg_bucket_t, mounts),
                                        {"access", s_access, 0},
                                        {"events", s_events, 0},
                                        K("workflows", s_workflows, rf_sg_bucket_t, workflows),
                                        {0}};
    rf_sg_bucket_t *b = t;
    if (rf_cfg_walk(c, v, keys, t, "a bucket") < 0)
        return -1;
    return s_bucket_check(c, v, b);
}

static void s_bucket_init(void *el)
{
    rf_sg_bucket_t *b = el;
    b->enable = b->expose = b->get = b->put = b->del = true;
}

static int s_buckets(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_bucket_t), "buckets", s_bucket, s_bucket_init);
}

/* ---- credentials, endpoints, distribution, throttling ------------------------- */

static int s_cred(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {
        K("access_key", s_nstr, rf_sg_cred_t, access_key), K("secret_key", s_nstr, rf_sg_cred_t, secret_key), {0}};
    rf_sg_cred_t *k = t;
    if (rf_cfg_walk(c, v, keys, t, "a credential") < 0)
        return -1;
    if (k->access_key == NULL || k->secret_key == NULL || strlen(k->access_key) > 128 || !k->access_key[0])
        return rf_cfg_fail(c, v, "a credential needs access_key (1..128 characters) and secret_key");
    return 0;
}

static int s_creds(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_cred_t), "credentials", s_cred, NULL);
}

static int s_s3ep(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {K("name", s_nstr, rf_sg_s3ep_t, name),
                                        K("endpoint", s_nstr, rf_sg_s3ep_t, endpoint),
                                        K("region", s_nstr, rf_sg_s3ep_t, region),
                                        K("access_key", s_nstr, rf_sg_s3ep_t, access_key),
                                        K("secret_key", s_nstr, rf_sg_s3ep_t, secret_key),
                                        K("bucket", s_nstr, rf_sg_s3ep_t, bucket),
                                        K("path_style", rf_cfg_bool, rf_sg_s3ep_t, path_style),
                                        {0}};
    rf_sg_s3ep_t *e = t;
    if (rf_cfg_walk(c, v, keys, t, "an aws_s3 endpoint") < 0)
        return -1;
    if (e->name == NULL || e->endpoint == NULL || e->bucket == NULL)
        return rf_cfg_fail(c, v, "an aws_s3 endpoint needs name, endpoint (http(s)://host[:port]) and bucket");
    if (strncmp(e->endpoint, "http://", 7) != 0 && strncmp(e->endpoint, "https://", 8) != 0)
        return rf_cfg_fail(c, v, "aws_s3 '%s': endpoint must start with http:// or https://", e->name);
    if ((e->access_key == NULL) != (e->secret_key == NULL))
        return rf_cfg_fail(c, v, "aws_s3 '%s': access_key and secret_key go together", e->name);
    if (e->region == NULL && (e->region = strdup("ap-northeast-2")) == NULL)
        return rf_cfg_fail(c, v, "out of memory");
    return 0;
}

static void s_s3ep_init(void *el)
{
    ((rf_sg_s3ep_t *)el)->path_style = true;
}

static int s_aws_s3(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    return s_seq(c, v, t, sizeof(rf_sg_s3ep_t), "aws_s3", s_s3ep, s_s3ep_init);
}

static int s_dist_meta(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {{"enable", rf_cfg_bool, 0}, {0}};
    return rf_cfg_walk(c, v, keys, t, "distribution.meta");
}

static int s_leader(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {{"url", s_nstr, offsetof(rf_sg_conf_t, distribution.leader_url)},
                                        {"authEndpoint", s_nstr, offsetof(rf_sg_conf_t, distribution.auth_endpoint)},
                                        {"term", rf_cfg_duration, offsetof(rf_sg_conf_t, distribution.term_ms)},
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "distribution.leader");
}

static int s_distribution(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {
        {"meta", s_dist_meta, offsetof(rf_sg_conf_t, distribution.meta_enable)}, {"leader", s_leader, 0}, {0}};
    return rf_cfg_walk(c, v, keys, t, "distribution");
}

static int s_cpu(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {{"deactive", rf_cfg_int, offsetof(rf_sg_conf_t, throttling.deactive)},
                                        {"reactive", rf_cfg_int, offsetof(rf_sg_conf_t, throttling.reactive)},
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "throttling.cpu");
}

static int s_throttling(rf_cfgctx_t *c, yaml_node_t *v, void *t)
{
    static const rf_cfg_key_t keys[] = {{"enable", rf_cfg_bool, offsetof(rf_sg_conf_t, throttling.enable)},
                                        {"cpu", s_cpu, 0},
                                        {"window", rf_cfg_duration, offsetof(rf_sg_conf_t, throttling.window_ms)},
                                        {0}};
    return rf_cfg_walk(c, v, keys, t, "throttling");
}

/* After the walk: mounts name aws_s3 endpoints, the leader's authEndpoint
 * too; bucket names are unique; throttling bounds as the seed states. */
static int s_resolve(rf_cfgctx_t *c, yaml_node_t *v, rf_sg_conf_t *sc)
{
    for (size_t i = 0; i < sc->n_aws_s3; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(sc->aws_s3[i].name, sc->aws_s3[j].name) == 0)
                return rf_cfg_fail(c, v, "aws_s3 '%s' is declared twice", sc->aws_s3[i].name);
    for (size_t i = 0; i < sc->n_buckets; i++) {
        rf_sg_bucket_t *b = &sc->buckets[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(b->name, sc->buckets[j].name) == 0)
                return rf_cfg_fail(c, v, "bucket '%s' is declared twice", b->name);
        size_t roots = 0, s3_roots = 0;
        for (size_t m = 0; m < b->n_mounts; m++) {
            roots += b->mounts[m].mount_point[0] == '\0';
            s3_roots += b->mounts[m].mount_point[0] == '\0' && b->mounts[m].kind == RF_SG_MOUNT_S3;
        }
        /* which of several root mounts holds a key is looked up on each;
         * an endpoint cannot be asked that on an event loop */
        if (s3_roots > 0 && roots > 1)
            return rf_cfg_fail(c, v,
                               "bucket '%s': an S3-backed root mount (mountPoint null) must be the bucket's only "
                               "root mount; give the others a mountPoint",
                               b->name);
        for (size_t m = 0; m < b->n_mounts; m++) {
            rf_sg_mount_t *mt = &b->mounts[m];
            if (mt->kind != RF_SG_MOUNT_S3)
                continue;
            size_t nl = (size_t)(strstr(mt->origin_path, "@aws_s3") - mt->origin_path);
            for (size_t e = 0; e < sc->n_aws_s3; e++)
                if (strlen(sc->aws_s3[e].name) == nl && memcmp(sc->aws_s3[e].name, mt->origin_path, nl) == 0)
                    mt->s3 = (int)e, mt->ep = &sc->aws_s3[e];
            if (mt->s3 < 0)
                return rf_cfg_fail(c, v, "bucket '%s': originPath '%s' names an aws_s3 endpoint that is not declared",
                                   b->name, mt->origin_path);
        }
    }
    const char *a = sc->distribution.auth_endpoint;
    bool found = a == NULL;
    for (size_t e = 0; !found && e < sc->n_aws_s3; e++)
        found = strcmp(sc->aws_s3[e].name, a) == 0;
    if (!found)
        return rf_cfg_fail(c, v, "distribution.leader.authEndpoint '%s' is not an aws_s3 name", a);
    const char *u = sc->distribution.leader_url;
    if (u != NULL && strncmp(u, "file://", 7) != 0 && strncmp(u, "redis://", 8) != 0 &&
        strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0)
        return rf_cfg_fail(c, v, "distribution.leader.url '%s': file://, redis:// or http(s)://", u);
    if (sc->distribution.term_ms < 1000)
        return rf_cfg_fail(c, v, "distribution.leader.term must be at least 1s");
    if (sc->throttling.window_ms < 1000 || sc->throttling.window_ms > 3600000)
        return rf_cfg_fail(c, v, "throttling.window must be 1s..1h");
    if (sc->throttling.deactive < 0 || sc->throttling.deactive > 100)
        return rf_cfg_fail(c, v, "throttling.cpu.deactive must be 0..100, got %d", sc->throttling.deactive);
    if (sc->throttling.reactive < 0 || sc->throttling.reactive > sc->throttling.deactive)
        sc->throttling.reactive = sc->throttling.deactive * 2 / 3; /* the seed's fallback */
    return 0;
}

int rf_sgconf_parse(rf_cfgctx_t *c, yaml_node_t *v, rf_sg_conf_t **out)
{
    static const rf_cfg_key_t keys[] = {K("listen", rf_cfg_listen, rf_sg_conf_t, listen),
                                        K("max_put", rf_cfg_size, rf_sg_conf_t, max_put),
                                        K("credentials", s_creds, rf_sg_conf_t, credentials),
                                        K("aws_s3", s_aws_s3, rf_sg_conf_t, aws_s3),
                                        K("buckets", s_buckets, rf_sg_conf_t, buckets),
                                        {"distribution", s_distribution, 0},
                                        {"throttling", s_throttling, 0},
                                        {0}};
    rf_sg_conf_t *sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return rf_cfg_fail(c, v, "out of memory");
    sc->max_put = (size_t)5 << 30;
    sc->distribution.meta_enable = true;
    sc->distribution.term_ms = 5 * 60 * 1000;
    sc->throttling.enable = true;
    sc->throttling.deactive = 60;
    sc->throttling.reactive = 40;
    sc->throttling.window_ms = 30000;
    *out = sc; /* the config owns it from here, also on failure */
    if (rf_cfg_walk(c, v, keys, sc, "storgate") < 0)
        return -1;
    return s_resolve(c, v, sc);
}
