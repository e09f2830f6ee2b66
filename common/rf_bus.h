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
} rf_bus_cmd_t;

typedef struct {
    const void *data;
    size_t len;
} rf_frame_t;

typedef struct {
    uint8_t cmd;
    char service[RF_BUS_MAX_SERVICE + 1]; /* READY */
    uint64_t job_id;                      /* JOB, REPLY, CANCEL */
    json_t *header;                       /* READY, JOB, REPLY: owned reference */
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

#endif
