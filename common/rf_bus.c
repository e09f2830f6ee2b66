#include "rf_bus.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_log.h"

const char *rf_bus_cmd_name(uint8_t cmd)
{
    static const char *const names[] = {"?", "READY", "JOB", "REPLY", "HEARTBEAT", "DISCONNECT", "CANCEL", "DEMAND"};
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
    case RF_BUS_DEMAND: fixed = 1; break;
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
    if (cmd == RF_BUS_DEMAND) {
        if ((out->header = s_parse_object(&f[0], why, why_len)) == NULL)
            return -1;
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
    int needs_header = cmd == RF_BUS_READY || cmd == RF_BUS_JOB || cmd == RF_BUS_REPLY || cmd == RF_BUS_DEMAND;
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
        /* Default precision: a real must come back as the same double. */
        text = json_dumps(header, JSON_COMPACT);
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

/* ---- typed JSON frames ----------------------------------------------------- */

/* Returns a malloc'd copy of the string member `key`, NULL when absent;
 * -1 in *bad when present but not a string or out of memory. */
static char *s_dup_member(const json_t *obj, const char *key, int *bad)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    char *copy = strndup(json_string_value(v), json_string_length(v));
    if (copy == NULL)
        *bad = 1;
    return copy;
}

/* Copies the string member `key` into dst (truncated); "" when absent.
 * Returns 0, or -1 when present but not a string. */
static int s_copy_member(const json_t *obj, const char *key, char *dst, size_t len)
{
    json_t *v = json_object_get(obj, key);
    dst[0] = '\0';
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    snprintf(dst, len, "%s", json_string_value(v));
    return 0;
}

/* Sets a string member when s is not NULL or empty. Returns 0 or -1. */
static int s_set_str(json_t *obj, const char *key, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    return json_object_set_new(obj, key, json_string(s));
}

void rf_job_spec_init(rf_job_spec_t *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->deadline_ms = -1;
    spec->source.size = -1;
}

void rf_job_spec_clear(rf_job_spec_t *spec)
{
    free(spec->request_id);
    json_decref(spec->chain);
    free(spec->source.path);
    free(spec->source.content_type);
    free(spec->source.ref);
    free(spec->source.host);
    free(spec->out);
    rf_job_spec_init(spec);
}

json_t *rf_job_spec_encode(const rf_job_spec_t *spec)
{
    if (spec->request_id == NULL || (spec->chain != NULL && !json_is_array(spec->chain)))
        return NULL;
    json_t *h = json_object(), *src = json_object();
    if (h == NULL || src == NULL)
        goto fail;
    int rc = json_object_set_new(h, "request_id", json_string(spec->request_id));
    if (spec->deadline_ms >= 0)
        rc |= json_object_set_new(h, "deadline_ms", json_integer(spec->deadline_ms));
    if (spec->chain != NULL)
        rc |= json_object_set(h, "chain", spec->chain);
    rc |= s_set_str(h, "out", spec->out);
    rc |= s_set_str(src, "path", spec->source.path);
    if (spec->source.size >= 0)
        rc |= json_object_set_new(src, "size", json_integer(spec->source.size));
    rc |= s_set_str(src, "content_type", spec->source.content_type);
    rc |= s_set_str(src, "ref", spec->source.ref);
    rc |= s_set_str(src, "host", spec->source.host);
    if (spec->source.offset > 0)
        rc |= json_object_set_new(src, "offset", json_integer(spec->source.offset));
    if (rc != 0)
        goto fail;
    if (json_object_size(src) > 0 && json_object_set(h, "source", src) != 0)
        goto fail;
    json_decref(src);
    return h;
fail:
    json_decref(src);
    json_decref(h);
    return NULL;
}

int rf_job_spec_decode(const json_t *header, rf_job_spec_t *out, char *why, size_t why_len)
{
    rf_job_spec_init(out);
    int bad = 0;
    if (!json_is_object(header))
        return rf_why(why, why_len, "JOB JSON is not an object");
    if (!json_is_string(json_object_get(header, "request_id")))
        return rf_why(why, why_len, "JOB needs a request_id string");
    out->request_id = s_dup_member(header, "request_id", &bad);
    json_t *dl = json_object_get(header, "deadline_ms");
    if (dl != NULL) {
        if (!json_is_number(dl)) {
            rf_job_spec_clear(out);
            return rf_why(why, why_len, "JOB deadline_ms must be a number");
        }
        double left = json_number_value(dl);
        out->deadline_ms = left > 0 ? (left < 1e12 ? (int64_t)left : (int64_t)1e12) : 0;
    }
    json_t *chain = json_object_get(header, "chain");
    if (chain != NULL && !json_is_null(chain)) {
        if (!json_is_array(chain)) {
            rf_job_spec_clear(out);
            return rf_why(why, why_len, "JOB chain must be an array");
        }
        out->chain = json_incref(chain);
    }
    out->out = s_dup_member(header, "out", &bad);
    if (out->out != NULL &&
        (strncmp(out->out, "file:///", 8) != 0 || strstr(out->out, "/../") != NULL || strlen(out->out) > 511)) {
        rf_job_spec_clear(out);
        return rf_why(why, why_len, "JOB out must be a file:/// path of at most 511 bytes without /../");
    }
    json_t *src = json_object_get(header, "source");
    if (src != NULL && !json_is_null(src)) {
        if (!json_is_object(src)) {
            rf_job_spec_clear(out);
            return rf_why(why, why_len, "JOB source must be an object");
        }
        out->source.path = s_dup_member(src, "path", &bad);
        out->source.content_type = s_dup_member(src, "content_type", &bad);
        out->source.ref = s_dup_member(src, "ref", &bad);
        out->source.host = s_dup_member(src, "host", &bad);
        json_t *size = json_object_get(src, "size");
        if (json_is_integer(size) && json_integer_value(size) >= 0)
            out->source.size = json_integer_value(size);
        else if (size != NULL && !json_is_null(size))
            bad = 1;
        json_t *off = json_object_get(src, "offset");
        if (json_is_integer(off) && json_integer_value(off) >= 0 && out->source.size >= 0)
            out->source.offset = json_integer_value(off);
        else if (off != NULL && !json_is_null(off))
            bad = 1; /* an offset needs a size: the source is a slice of the file */
    }
    if (bad || out->request_id == NULL) {
        rf_job_spec_clear(out);
        return rf_why(why, why_len, "JOB source members must be strings and a size >= 0");
    }
    return 0;
}

json_t *rf_reply_encode(const rf_reply_t *reply)
{
    int status = reply->status > 0 ? reply->status : 500;
    json_t *h = json_object();
    if (h == NULL)
        return NULL;
    int rc = json_object_set_new(h, "status", json_integer(status));
    if (status == 200) {
        rc |= s_set_str(h, "content_type", reply->content_type);
        if (reply->note[0] != '\0')
            rc |= s_set_str(h, "note", reply->note);
        if (reply->ref[0] != '\0')
            rc |= s_set_str(h, "ref", reply->ref);
        if (reply->src_cache_control[0] || reply->src_expires[0] || reply->src_last_modified[0]) {
            json_t *src = json_object();
            rc |= src == NULL;
            if (src != NULL) {
                rc |= s_set_str(src, "cache_control", reply->src_cache_control);
                rc |= s_set_str(src, "expires", reply->src_expires);
                rc |= s_set_str(src, "last_modified", reply->src_last_modified);
                rc |= json_object_set_new(h, "source", src);
            }
        }
    } else
        rc |= s_set_str(h, "error", reply->error[0] ? reply->error : "failed");
    if (reply->elapsed_ms >= 0)
        rc |= json_object_set_new(h, "elapsed_ms", json_real(reply->elapsed_ms));
    if (rc != 0) {
        json_decref(h);
        return NULL;
    }
    return h;
}

int rf_reply_decode(const json_t *header, rf_reply_t *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    out->elapsed_ms = -1;
    json_t *st = json_object_get(header, "status");
    if (!json_is_integer(st) || json_integer_value(st) < 100 || json_integer_value(st) > 599)
        return rf_why(why, why_len, "REPLY needs an integer status 100..599");
    out->status = (int)json_integer_value(st);
    if (s_copy_member(header, "content_type", out->content_type, sizeof(out->content_type)) < 0 ||
        s_copy_member(header, "error", out->error, sizeof(out->error)) < 0 ||
        s_copy_member(header, "note", out->note, sizeof(out->note)) < 0 ||
        s_copy_member(header, "ref", out->ref, sizeof(out->ref)) < 0) {
        memset(out, 0, sizeof(*out));
        return rf_why(why, why_len, "REPLY content_type, error, note and ref must be strings");
    }
    if (out->ref[0] != '\0' && (strncmp(out->ref, "file:///", 8) != 0 || strstr(out->ref, "/../") != NULL)) {
        memset(out, 0, sizeof(*out));
        return rf_why(why, why_len, "REPLY ref must be an absolute file:/// path");
    }
    json_t *src = json_object_get(header, "source");
    if (src != NULL &&
        (!json_is_object(src) ||
         s_copy_member(src, "cache_control", out->src_cache_control, sizeof(out->src_cache_control)) < 0 ||
         s_copy_member(src, "expires", out->src_expires, sizeof(out->src_expires)) < 0 ||
         s_copy_member(src, "last_modified", out->src_last_modified, sizeof(out->src_last_modified)) < 0)) {
        memset(out, 0, sizeof(*out));
        return rf_why(why, why_len, "REPLY source must be an object of strings");
    }
    /* they become header values: one printable line each */
    char *lines[] = {out->note, out->src_cache_control, out->src_expires, out->src_last_modified};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        for (char *c = lines[i]; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                *c = ' ';
    json_t *el = json_object_get(header, "elapsed_ms");
    if (json_is_number(el))
        out->elapsed_ms = json_number_value(el);
    return 0;
}

json_t *rf_ready_encode(const rf_ready_t *ready)
{
    if (ready->capacity < 1 || ready->capacity > 256 || ready->credit > ready->capacity || ready->reclaim < 0 ||
        ready->reclaim > ready->capacity)
        return NULL;
    json_t *h = json_object();
    if (h == NULL)
        return NULL;
    int rc = json_object_set_new(h, "capacity", json_integer(ready->capacity));
    if (ready->credit >= 0)
        rc |= json_object_set_new(h, "credit", json_integer(ready->credit));
    if (ready->reclaim > 0)
        rc |= json_object_set_new(h, "reclaim", json_integer(ready->reclaim));
    if (ready->pid > 0)
        rc |= json_object_set_new(h, "pid", json_integer(ready->pid));
    rc |= s_set_str(h, "host", ready->host);
    rc |= s_set_str(h, "version", ready->version);
    if (rc != 0) {
        json_decref(h);
        return NULL;
    }
    return h;
}

int rf_ready_decode(const json_t *header, rf_ready_t *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    out->credit = -1;
    json_t *cap = json_object_get(header, "capacity");
    if (!json_is_integer(cap) || json_integer_value(cap) < 1 || json_integer_value(cap) > 256)
        return rf_why(why, why_len, "READY needs capacity 1..256");
    out->capacity = (int)json_integer_value(cap);
    json_t *credit = json_object_get(header, "credit");
    if (credit != NULL) {
        if (!json_is_integer(credit) || json_integer_value(credit) < 0 || json_integer_value(credit) > out->capacity) {
            memset(out, 0, sizeof(*out));
            return rf_why(why, why_len, "READY credit must be 0..capacity");
        }
        out->credit = (int)json_integer_value(credit);
    }
    json_t *reclaim = json_object_get(header, "reclaim");
    if (reclaim != NULL) {
        if (!json_is_integer(reclaim) || json_integer_value(reclaim) < 0 ||
            json_integer_value(reclaim) > out->capacity) {
            memset(out, 0, sizeof(*out));
            return rf_why(why, why_len, "READY reclaim must be 0..capacity");
        }
        out->reclaim = (int)json_integer_value(reclaim);
    }
    json_t *pid = json_object_get(header, "pid");
    if (json_is_integer(pid) && json_integer_value(pid) > 0 && json_integer_value(pid) <= INT32_MAX)
        out->pid = (int)json_integer_value(pid);
    s_copy_member(header, "host", out->host, sizeof(out->host));
    s_copy_member(header, "version", out->version, sizeof(out->version));
    return 0;
}

json_t *rf_demand_encode(const rf_demand_t *demand)
{
    if (demand->queued < 0 || demand->returned < 0)
        return NULL;
    return json_pack("{s:i, s:i}", "queued", demand->queued, "returned", demand->returned);
}

int rf_demand_decode(const json_t *header, rf_demand_t *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    json_t *q = json_object_get(header, "queued"), *r = json_object_get(header, "returned");
    if ((q != NULL && (!json_is_integer(q) || json_integer_value(q) < 0 || json_integer_value(q) > INT32_MAX)) ||
        (r != NULL && (!json_is_integer(r) || json_integer_value(r) < 0 || json_integer_value(r) > 256)))
        return rf_why(why, why_len, "DEMAND queued and returned must be integers >= 0 (returned <= 256)");
    out->queued = q != NULL ? (int)json_integer_value(q) : 0;
    out->returned = r != NULL ? (int)json_integer_value(r) : 0;
    return 0;
}

/* Encodes a message whose JSON frame is `h` (consumed). */
static zmsg_t *s_encode_owned(rf_bus_cmd_t cmd, const char *service, uint64_t job_id, json_t *h)
{
    if (h == NULL)
        return NULL;
    zmsg_t *msg = rf_bus_encode(cmd, service, job_id, h);
    json_decref(h);
    return msg;
}

zmsg_t *rf_bus_encode_job(uint64_t job_id, const rf_job_spec_t *spec)
{
    return s_encode_owned(RF_BUS_JOB, NULL, job_id, rf_job_spec_encode(spec));
}

zmsg_t *rf_bus_encode_reply(uint64_t job_id, const rf_reply_t *reply)
{
    return s_encode_owned(RF_BUS_REPLY, NULL, job_id, rf_reply_encode(reply));
}

zmsg_t *rf_bus_encode_ready(const char *service, const rf_ready_t *ready)
{
    return s_encode_owned(RF_BUS_READY, service, 0, rf_ready_encode(ready));
}

zmsg_t *rf_bus_encode_demand(const rf_demand_t *demand)
{
    return s_encode_owned(RF_BUS_DEMAND, NULL, 0, rf_demand_encode(demand));
}
