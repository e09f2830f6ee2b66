/*  rf_bus — codec of the RFB/1 bus protocol (proto/rfb.md).
 *
 *  rf_bus_decode works on plain (pointer, length) frames so that it can be
 *  unit-tested and fuzzed without sockets; rf_bus_recv/rf_bus_send are the
 *  thin czmq glue both the broker and the workers use.
 */
#ifndef RF_BUS_H
#define RF_BUS_H

#include <czmq.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define RF_BUS_PROTOCOL "RFB1"
#define RF_BUS_MAX_BODY 16
#define RF_BUS_MAX_JSON 65536
#define RF_BUS_MAX_SERVICE 32

typedef enum {
    RF_BUS_READY = 0x01,
    RF_BUS_JOB = 0x02,
    RF_BUS_REPLY = 0x03,
    RF_BUS_HEARTBEAT = 0x04,
    RF_BUS_DISCONNECT = 0x05,
    RF_BUS_CANCEL = 0x06,
    RF_BUS_DEMAND = 0x07, /* RFB/1.1: broker -> worker, credit-based dispatch */
} rf_bus_cmd_t;

typedef struct {
    const void *data;
    size_t len;
} rf_frame_t;

typedef struct {
    uint8_t cmd;
    char service[RF_BUS_MAX_SERVICE + 1]; /* READY */
    uint64_t job_id;                      /* JOB, REPLY, CANCEL */
    json_t *header;                       /* READY, JOB, REPLY, DEMAND: owned reference */
    size_t n_body;
    rf_frame_t body[RF_BUS_MAX_BODY]; /* borrowed from the decoded frames */
    size_t body_len;                  /* sum of body frame lengths */
} rf_bus_msg_t;

/* Decodes n frames (without any routing identity) into *out. Body frames
 * borrow from `frames`. Returns 0, or -1 with a one-line reason in why.
 * On success the caller releases out->header with rf_bus_msg_clear. */
int rf_bus_decode(const rf_frame_t *frames, size_t n, rf_bus_msg_t *out, char *why, size_t why_len);

/* Releases the header reference; safe on a zeroed or cleared message. */
void rf_bus_msg_clear(rf_bus_msg_t *msg);

/* Builds a message with the protocol frame, command and the command's
 * fixed frames. `service` is used by READY, `job_id` by JOB/REPLY/CANCEL,
 * `header` (borrowed, serialised compactly) by READY/JOB/REPLY. Body frames
 * are appended by the caller. Returns a new zmsg (caller owns) or NULL on
 * invalid arguments or allocation failure. */
zmsg_t *rf_bus_encode(rf_bus_cmd_t cmd, const char *service, uint64_t job_id, const json_t *header);

/* Receives one message from `sock`. When `identity` is not NULL (ROUTER
 * side) the first frame is popped into *identity (caller owns). On success
 * returns the raw zmsg that backs out's body frames (caller owns and must
 * keep it alive while using them), with *out decoded; returns NULL when
 * interrupted or when the message did not decode (logged, message dropped;
 * *identity is then NULL). */
zmsg_t *rf_bus_recv(zsock_t *sock, zframe_t **identity, rf_bus_msg_t *out);

/* Sends *msg_p (consumed, set to NULL), prefixed by a copy of `identity`
 * when not NULL. Returns 0 or -1 (e.g. peer gone with ROUTER_MANDATORY). */
int rf_bus_send(zsock_t *sock, const zframe_t *identity, zmsg_t **msg_p);

/* Builds frames from a byte string, for tests and the fuzzer: each frame is
 * a 2-byte big-endian length followed by that many bytes. Returns the count
 * of frames written into frames[max]. */
size_t rf_bus_split_test_frames(const uint8_t *data, size_t len, rf_frame_t *frames, size_t max);

const char *rf_bus_cmd_name(uint8_t cmd);

/* ---- typed JSON frames (proto/rfb.md 2.1-2.4) ------------------------------
 *
 * The only code that builds or reads READY, JOB, REPLY and DEMAND JSON.
 * Encoders return a new JSON object (caller owns) or NULL on allocation
 * failure or invalid fields; decoders fill *out from a decoded message's
 * header (borrowed) and return 0, or -1 with a one-line reason in why
 * (out is then cleared). Unknown members are ignored (forward
 * compatibility); decoders copy what they keep. */

/* JOB JSON. Strings are owned by the struct (malloc'd); rf_job_spec_clear
 * frees them and zeroes the struct (safe twice). */
typedef struct {
    char *request_id;    /* REQUIRED */
    int64_t deadline_ms; /* ms left when the broker sent it; -1 = absent */
    json_t *chain;       /* owned reference to the chain array; NULL = absent */
    struct {
        char *path;         /* NULL = absent */
        int64_t size;       /* -1 = absent */
        char *content_type; /* NULL = absent */
        char *ref;          /* e.g. file:///abs/path or edge:/path; NULL = absent */
        char *host;         /* the vhost an edge: ref is read from (its Host); NULL = absent */
        int64_t offset;     /* a file:// ref: where the source starts in the file (with size); 0 = absent */
    } source;
    /* "file:///abs/path": an empty file in bus.spool_dir the worker writes its result into as it makes
     * it, for the gateway to stream (proto/rfb.md 2.2 "out"); NULL = absent */
    char *out;
} rf_job_spec_t;

/* REPLY JSON. */
typedef struct {
    int status;             /* REQUIRED, HTTP-like */
    char content_type[128]; /* "" = absent; encoded only with status 200 */
    char error[256];        /* "" = absent; encoded only with status != 200 ("failed" if empty) */
    char note[128];         /* "" = absent; with status 200: what the client should know about the result
                               (the gateway sends it as X-Refract-Note), e.g. frames dropped */
    double elapsed_ms;      /* < 0 = absent */
    char ref[512];          /* "" = absent; with status 200: "file:///abs/path", the result in a file of
                               bus.spool_dir that the gateway now owns (no body frames) */
    /* With status 200, for sources the worker read itself (refs): the
     * source's freshness as its origin stated it, so that the result is
     * cached no longer than the source may be (REPLY "source" object;
     * "" = absent). */
    char src_cache_control[160];
    char src_expires[64];
    char src_last_modified[64];
} rf_reply_t;

/* READY JSON. credit >= 0 (RFB/1.1) opts the connection into credit-based
 * dispatch and grants that many jobs; -1 = absent (RFB/1.0 worker). A
 * READY repeated on a live connection grants more and may reclaim. */
typedef struct {
    int capacity; /* REQUIRED, 1..256: job threads */
    int credit;   /* -1, or 0..capacity */
    int reclaim;  /* RFB/1.1: asks the broker to give back up to this much unused credit; 0 = none */
    int pid;      /* 0 = absent */
    char host[128];
    char version[32];
} rf_ready_t;

/* DEMAND JSON (RFB/1.1, broker -> worker). */
typedef struct {
    int queued;   /* jobs of the service waiting at the broker */
    int returned; /* credits the broker gives back (it will not use them) */
} rf_demand_t;

/* Sets the absent markers (-1) and NULLs; call before filling a spec. */
void rf_job_spec_init(rf_job_spec_t *spec);
void rf_job_spec_clear(rf_job_spec_t *spec);
json_t *rf_job_spec_encode(const rf_job_spec_t *spec);
int rf_job_spec_decode(const json_t *header, rf_job_spec_t *out, char *why, size_t why_len);

json_t *rf_reply_encode(const rf_reply_t *reply);
int rf_reply_decode(const json_t *header, rf_reply_t *out, char *why, size_t why_len);

json_t *rf_ready_encode(const rf_ready_t *ready);
int rf_ready_decode(const json_t *header, rf_ready_t *out, char *why, size_t why_len);

json_t *rf_demand_encode(const rf_demand_t *demand);
int rf_demand_decode(const json_t *header, rf_demand_t *out, char *why, size_t why_len);

/* Whole messages from typed values: like rf_bus_encode with the JSON frame
 * encoded from the struct. Returns a new zmsg (caller owns) or NULL. */
zmsg_t *rf_bus_encode_job(uint64_t job_id, const rf_job_spec_t *spec);
zmsg_t *rf_bus_encode_reply(uint64_t job_id, const rf_reply_t *reply);
zmsg_t *rf_bus_encode_ready(const char *service, const rf_ready_t *ready);
zmsg_t *rf_bus_encode_demand(const rf_demand_t *demand);

#endif
