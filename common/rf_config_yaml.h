/*  rf_config_yaml — the loader's walking kit, for sections parsed in files
 *  of their own (rf_sgconf.c: storgate). Internal to the configuration
 *  loader: callers of the configuration use rf_config.h only.
 *
 *  A handler gets the context, the YAML value node and a pointer into the
 *  struct it fills; it returns 0, or -1 after rf_cfg_fail has recorded the
 *  first error as "file:line:col: message".
 */
#ifndef RF_CONFIG_YAML_H
#define RF_CONFIG_YAML_H

#include <stddef.h>
#include <yaml.h>

#include "rf_config.h"

typedef struct {
    yaml_document_t doc;
    const char *name;
    char *err; /* the first error, malloc'd */
    rf_config_t *cfg;
} rf_cfgctx_t;

typedef int(rf_cfg_key_fn)(rf_cfgctx_t *c, yaml_node_t *value, void *target);

typedef struct {
    const char *key;
    rf_cfg_key_fn *fn;
    size_t offset; /* into the target struct the handler writes */
} rf_cfg_key_t;

/* Records the first error at `at` (NULL: line 1). Always returns -1. */
int rf_cfg_fail(rf_cfgctx_t *c, yaml_node_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Dispatches each pair of mapping `map` to its handler in `keys` (ended by
 * a zero row, at most 64 rows); unknown or repeated keys are errors. */
int rf_cfg_walk(rf_cfgctx_t *c, yaml_node_t *map, const rf_cfg_key_t *keys, void *target, const char *section);

/* The node of an item (sequence) or pair member (mapping) id. */
yaml_node_t *rf_cfg_node(rf_cfgctx_t *c, int id);

/* A plain (unquoted) null, ~ or empty scalar: YAML's and JSON's null. */
bool rf_cfg_is_null(yaml_node_t *v);

/* Typed handlers (targets: char **, int *, bool *, size_t *, int * ms,
 * rf_listen_t *, and {char **list; size_t n}). Strings are malloc'd and
 * replace what the target held. */
rf_cfg_key_fn rf_cfg_str, rf_cfg_int, rf_cfg_bool, rf_cfg_size, rf_cfg_duration, rf_cfg_listen, rf_cfg_strlist;

/* The storgate section (rf_sgconf.c): parses `v` into a new *out. */
int rf_sgconf_parse(rf_cfgctx_t *c, yaml_node_t *v, struct rf_sg_conf_t **out);

#endif
