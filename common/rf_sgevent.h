/*  rf_sgevent — storgate's bucket events between the gateway and the
 *  scheduler (seed 003 events: onPut, onGet, onDelete).
 *
 *  The gateway raises an event after the S3 operation succeeded (timing
 *  post), if the bucket's event is enabled and its filter passes, by
 *  writing one small JSON file into STATE/events/ (storgate_scheduler.
 *  state_dir): written, fsynced, renamed in, so it waits for a scheduler
 *  that is down. The scheduler (sg_events.c) runs the event's workflow on
 *  it and removes the file when the workflow is over.
 *
 *      {"id": "...", "event": "onPut", "bucket": "b", "key": "a/b.jpg",
 *       "time": 1764680000, "size": 1234, "etag": "..."}
 */
#ifndef RF_SGEVENT_H
#define RF_SGEVENT_H

#include <stdbool.h>
#include <stdint.h>

#include "rf_sgconf.h"

#define RF_SGEVENT_DIR "events"

/* Whether the event's filter (Ansible find's criteria) passes for the
 * object `key` of `size` bytes modified at mtime_s (unix seconds), at
 * `now`; size or mtime_s < 0: unknown, those criteria pass. No filter:
 * true. Directories (filetype directory) never match: items are files. */
bool rf_sgevent_filter_ok(const rf_sg_event_t *ev, const char *key, int64_t size, int64_t mtime_s, int64_t now);

/* Writes an event file into STATE_DIR/events/ (created, with its parents, if missing). id_out
 * (id_len bytes, may be NULL) receives the event's id, which the
 * scheduler's logs and webhooks carry. 0, or -1 with errno. */
int rf_sgevent_write(const char *state_dir, const char *kind, const char *bucket, const char *key, int64_t size,
                     const char *etag, char *id_out, size_t id_len);

/* Where other processes (the gateway's storage uploads) leave webhooks
 * for the scheduler's persistent outbox: STATE/outbox-in/. A scheduler
 * moves each file into its own outbox (a rename: one node takes it) and
 * delivers it at least once, like its own (sg_outbox.c). */
#define RF_OUTBOX_IN_DIR "outbox-in"

/* Writes one outbox file "TARGET\nKEY\nPAYLOAD" into dir (created with
 * its parents if missing): written, fsynced, renamed in, named so that
 * files sort by time. target: an http(s) URL, kafka://HOST:PORT[,…]/TOPIC
 * or an absolute .js hook; key: the idempotency key. 0, or -1 with errno. */
int rf_outbox_write(const char *dir, const char *target, const char *key, const char *payload);
/* The same, its name ending in suffix (".json" is delivered; another, such
 * as ".hold", waits to be renamed), the name into name (cap ≥ 80). */
int rf_outbox_write_as(const char *dir, const char *target, const char *key, const char *payload, const char *suffix,
                       char *name, size_t cap);

#endif
