#include "rf_bus.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rf_log.h"

const char *rf_bus_cmd_name(uint8_t cmd)
{
    static const char *const names[] = {"?", "READY", "JOB", "REPLY", "HEARTBEAT", "DISCONNECT", "CANCEL"};
    return cmd < sizeof(names) / sizeof(names[0]) ? names[cmd] : "?";
}

static int s_service_ok(const rf_frame_t *f)
{
    if (f->len == 0 || f->len > RF_BUS_MAX_SERVICE)
        return 0;
    const char *s = f->data;
    for (size_t i = 0; i < f->len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int s_service_name_ok(const char *s)
{
    rf_frame_t f = {s, strlen(s)};
    return s_service_ok(&f);
}

static uint64_t s_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void s_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static json_t *s_parse_object(const rf_frame_t *f, char *why, size_t why_len)
{
    if (f->len == 0 || f->len > RF_BUS_MAX_JSON) {
        rf_why(why, why_len, "JSON frame of %zu bytes (1..%d allowed)", f->len, RF_BUS_MAX_JSON);
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(f->data, f->len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        rf_why(why, why_len, "bad JSON: %s", e.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        rf_why(why, why_len, "JSON frame is not an object");
        return NULL;
    }
    return j;
}

int rf_bus_decode(const rf_frame_t *frames, size_t n, rf_bus_msg_t *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    if (n < 2)
        return rf_why(why, why_len, "message has %zu frames, needs at least 2", n);
    if (frames[0].len != 4 || memcmp(frames[0].data, RF_BUS_PROTOCOL, 4) != 0)
        return rf_why(why, why_len, "not an RFB1 message");
    if (frames[1].len != 1)
        return rf_why(why, why_len, "command frame must be one octet");
    uint8_t cmd = *(const uint8_t *)frames[1].data;
    size_t fixed; /* frames after the command that every message of this kind has */
    switch (cmd) {
    case RF_BUS_READY: fixed = 2; break;
    case RF_BUS_JOB:
    case RF_BUS_REPLY: fixed = 2; break;
    case RF_BUS_CANCEL: fixed = 1; break;
    case RF_BUS_HEARTBEAT:
    case RF_BUS_DISCONNECT: fixed = 0; break;
    default: return rf_why(why, why_len, "unknown command 0x%02x", cmd);
    }
    int has_body = cmd == RF_BUS_JOB || cmd == RF_BUS_REPLY;
    if (n - 2 < fixed || (!has_body && n - 2 != fixed))
        return rf_why(why, why_len, "%s with %zu frames", rf_bus_cmd_name(cmd), n);
    if (has_body && n - 2 - fixed > RF_BUS_MAX_BODY)
        return rf_why(why, why_len, "%s with %zu body frames (max %d)", rf_bus_cmd_name(cmd), n - 2 - fixed,
                      RF_BUS_MAX_BODY);
    out->cmd = cmd;
    const rf_frame_t *f = frames + 2;
    if (cmd == RF_BUS_READY) {
        if (!s_service_ok(&f[0]))
            return rf_why(why, why_len, "bad service name");
        memcpy(out->service, f[0].data, f[0].len);
        out->service[f[0].len] = '\0';
        if ((out->header = s_parse_object(&f[1], why, why_len)) == NULL)
            return -1;
        json_t *cap = json_object_get(out->header, "capacity");
        if (!json_is_integer(cap) || json_integer_value(cap) < 1 || json_integer_value(cap) > 256) {
            rf_bus_msg_clear(out);
            return rf_why(why, why_len, "READY needs capacity 1..256");
        }
        return 0;
    }
    if (fixed >= 1) {
        if (f[0].len != 8)
            return rf_why(why, why_len, "job id must be 8 octets, got %zu", f[0].len);
        out->job_id = s_get_u64(f[0].data);
    }
    if (has_body) {
        if ((out->header = s_parse_object(&f[1], why, why_len)) == NULL)
            return -1;
        if (cmd == RF_BUS_REPLY && !json_is_integer(json_object_get(out->header, "status"))) {
            rf_bus_msg_clear(out);
            return rf_why(why, why_len, "REPLY needs an integer status");
        }
        if (cmd == RF_BUS_JOB && !json_is_string(json_object_get(out->header, "request_id"))) {
            rf_bus_msg_clear(out);
            return rf_why(why, why_len, "JOB needs a request_id string");
        }
        for (size_t i = 2 + fixed; i < n; i++) {
            out->body[out->n_body++] = frames[i];
            out->body_len += frames[i].len;
        }
    }
    return 0;
}

void rf_bus_msg_clear(rf_bus_msg_t *msg)
{
    if (msg->header != NULL)
        json_decref(msg->header);
    msg->header = NULL;
}

zmsg_t *rf_bus_encode(rf_bus_cmd_t cmd, const char *service, uint64_t job_id, const json_t *header)
{
    int needs_header = cmd == RF_BUS_READY || cmd == RF_BUS_JOB || cmd == RF_BUS_REPLY;
    if (needs_header && !json_is_object(header))
        return NULL;
    if (cmd == RF_BUS_READY && (service == NULL || !s_service_name_ok(service)))
        return NULL;
    zmsg_t *msg = zmsg_new();
    char *text = NULL;
    uint8_t c = (uint8_t)cmd, id[8];
    if (msg == NULL)
        return NULL;
    if (zmsg_addmem(msg, RF_BUS_PROTOCOL, 4) < 0 || zmsg_addmem(msg, &c, 1) < 0)
        goto fail;
    if (cmd == RF_BUS_READY && zmsg_addstr(msg, service) < 0)
        goto fail;
    if (cmd == RF_BUS_JOB || cmd == RF_BUS_REPLY || cmd == RF_BUS_CANCEL) {
        s_put_u64(id, job_id);
        if (zmsg_addmem(msg, id, 8) < 0)
            goto fail;
    }
    if (needs_header) {
        text = json_dumps(header, JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (text == NULL || strlen(text) > RF_BUS_MAX_JSON || zmsg_addstr(msg, text) < 0)
            goto fail;
        free(text);
    }
    return msg;
fail:
    free(text);
    zmsg_destroy(&msg);
    return NULL;
}

zmsg_t *rf_bus_recv(zsock_t *sock, zframe_t **identity, rf_bus_msg_t *out)
{
    if (identity != NULL)
        *identity = NULL;
    zmsg_t *msg = zmsg_recv(sock);
    if (msg == NULL)
        return NULL;
    if (identity != NULL)
        *identity = zmsg_pop(msg);
    rf_frame_t frames[2 + 2 + RF_BUS_MAX_BODY + 1];
    size_t n = 0;
    for (zframe_t *f = zmsg_first(msg); f != NULL; f = zmsg_next(msg)) {
        if (n == sizeof(frames) / sizeof(frames[0])) {
            n++; /* too many: let decode reject it */
            break;
        }
        frames[n].data = zframe_data(f);
        frames[n].len = zframe_size(f);
        n++;
    }
    char why[160];
    if (n > sizeof(frames) / sizeof(frames[0]) || rf_bus_decode(frames, n, out, why, sizeof(why)) < 0) {
        rf_warn("bus: dropped a message that does not decode: %s",
                n > sizeof(frames) / sizeof(frames[0]) ? "too many frames" : why);
        zmsg_destroy(&msg);
        if (identity != NULL)
            zframe_destroy(identity);
        return NULL;
    }
    return msg;
}

int rf_bus_send(zsock_t *sock, const zframe_t *identity, zmsg_t **msg_p)
{
    if (identity != NULL) {
        zframe_t *copy = zframe_dup((zframe_t *)identity);
        if (copy == NULL || zmsg_prepend(*msg_p, &copy) < 0) {
            zframe_destroy(&copy);
            zmsg_destroy(msg_p);
            return -1;
        }
    }
    int rc = zmsg_send(msg_p, sock);
    if (rc < 0)
        zmsg_destroy(msg_p);
    return rc;
}

size_t rf_bus_split_test_frames(const uint8_t *data, size_t len, rf_frame_t *frames, size_t max)
{
    size_t n = 0, off = 0;
    while (n < max && off + 2 <= len) {
        size_t fl = ((size_t)data[off] << 8) | data[off + 1];
        off += 2;
        if (fl > len - off)
            fl = len - off;
        frames[n].data = data + off;
        frames[n].len = fl;
        n++;
        off += fl;
    }
    return n;
}
