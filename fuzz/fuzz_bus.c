/*  libFuzzer target for the RFB/1 decoder (common/rf_bus): the input is a
 *  message in the test frame format (each frame a 2-byte big-endian length
 *  and its bytes). Whatever decodes must re-encode into a message that
 *  decodes to the same fields; whatever does not must say why and hold
 *  nothing. The typed JOB/REPLY/READY/DEMAND codecs get the same round
 *  trip on every header that decodes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_bus.h"

/* The typed JSON of a decoded header: whatever the typed decoder accepts
 * must encode again and decode to the same values; what it refuses must
 * say why. */
static void s_typed_roundtrip(int cmd, const json_t *header)
{
    char why[160] = "";
    json_t *again = NULL;
    if (cmd == RF_BUS_JOB) {
        rf_job_spec_t a, b;
        if (rf_job_spec_decode(header, &a, why, sizeof(why)) != 0) {
            if (why[0] == '\0')
                abort();
            return;
        }
        if ((again = rf_job_spec_encode(&a)) == NULL || rf_job_spec_decode(again, &b, why, sizeof(why)) != 0)
            abort();
        if (strcmp(a.request_id ? a.request_id : "", b.request_id ? b.request_id : "") != 0 ||
            a.deadline_ms != b.deadline_ms || a.source.size != b.source.size ||
            (a.chain == NULL) != (b.chain == NULL) || (a.chain != NULL && !json_equal(a.chain, b.chain)))
            abort();
        rf_job_spec_clear(&a);
        rf_job_spec_clear(&b);
    } else if (cmd == RF_BUS_REPLY) {
        rf_reply_t a, b;
        if (rf_reply_decode(header, &a, why, sizeof(why)) != 0) {
            if (why[0] == '\0')
                abort();
            return;
        }
        if ((again = rf_reply_encode(&a)) == NULL || rf_reply_decode(again, &b, why, sizeof(why)) != 0 ||
            a.status != b.status)
            abort();
    } else if (cmd == RF_BUS_READY) {
        rf_ready_t a, b;
        if (rf_ready_decode(header, &a, why, sizeof(why)) != 0) {
            if (why[0] == '\0')
                abort();
            return;
        }
        if ((again = rf_ready_encode(&a)) == NULL || rf_ready_decode(again, &b, why, sizeof(why)) != 0 ||
            a.capacity != b.capacity || a.credit != b.credit || a.reclaim != b.reclaim)
            abort();
    } else if (cmd == RF_BUS_DEMAND) {
        rf_demand_t a, b;
        if (rf_demand_decode(header, &a, why, sizeof(why)) != 0) {
            if (why[0] == '\0')
                abort();
            return;
        }
        if ((again = rf_demand_encode(&a)) == NULL || rf_demand_decode(again, &b, why, sizeof(why)) != 0 ||
            a.queued != b.queued || a.returned != b.returned)
            abort();
    }
    json_decref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rf_frame_t frames[2 + 2 + RF_BUS_MAX_BODY + 4];
    size_t n = rf_bus_split_test_frames(data, size, frames, sizeof(frames) / sizeof(frames[0]));
    rf_bus_msg_t m;
    char why[160];
    why[0] = '\0';
    if (rf_bus_decode(frames, n, &m, why, sizeof(why)) != 0) {
        if (why[0] == '\0' || m.header != NULL)
            abort();
        rf_bus_msg_clear(&m);
        return 0;
    }

    /* invariants of a decoded message */
    if (m.cmd < RF_BUS_READY || m.cmd > RF_BUS_DEMAND || m.n_body > RF_BUS_MAX_BODY)
        abort();
    int has_header = m.cmd == RF_BUS_READY || m.cmd == RF_BUS_JOB || m.cmd == RF_BUS_REPLY || m.cmd == RF_BUS_DEMAND;
    s_typed_roundtrip(m.cmd, m.header);
    if (has_header != json_is_object(m.header))
        abort();
    size_t sum = 0;
    for (size_t i = 0; i < m.n_body; i++) {
        const uint8_t *p = m.body[i].data;
        if (m.body[i].len > 0 && (p < data || p + m.body[i].len > data + size))
            abort(); /* body frames borrow from the input */
        sum += m.body[i].len;
    }
    if (sum != m.body_len)
        abort();

    /* re-encode and decode again */
    zmsg_t *msg = rf_bus_encode((rf_bus_cmd_t)m.cmd, m.service, m.job_id, m.header);
    if (msg == NULL) {
        /* only allowed when the compact form outgrew the JSON limit
         * (e.g. 1e5 is written back as 100000.0) */
        char *text = has_header ? json_dumps(m.header, JSON_COMPACT) : NULL;
        if (text == NULL || strlen(text) <= RF_BUS_MAX_JSON)
            abort();
        free(text);
        rf_bus_msg_clear(&m);
        return 0;
    }
    for (size_t i = 0; i < m.n_body; i++)
        if (zmsg_addmem(msg, m.body[i].data, m.body[i].len) < 0)
            abort();
    rf_frame_t again[2 + 2 + RF_BUS_MAX_BODY];
    size_t k = 0;
    for (zframe_t *f = zmsg_first(msg); f != NULL; f = zmsg_next(msg)) {
        if (k == sizeof(again) / sizeof(again[0]))
            abort();
        again[k].data = zframe_data(f);
        again[k].len = zframe_size(f);
        k++;
    }
    rf_bus_msg_t m2;
    if (rf_bus_decode(again, k, &m2, why, sizeof(why)) != 0) {
        fprintf(stderr, "re-encoded %s does not decode: %s\n", rf_bus_cmd_name(m.cmd), why);
        abort();
    }
    if (m2.cmd != m.cmd || m2.job_id != m.job_id || strcmp(m2.service, m.service) != 0 || m2.n_body != m.n_body ||
        m2.body_len != m.body_len || (has_header && !json_equal(m.header, m2.header)))
        abort();
    for (size_t i = 0; i < m.n_body; i++)
        if (m2.body[i].len != m.body[i].len ||
            (m.body[i].len > 0 && memcmp(m2.body[i].data, m.body[i].data, m.body[i].len) != 0))
            abort();
    rf_bus_msg_clear(&m2);
    zmsg_destroy(&msg);
    rf_bus_msg_clear(&m);
    return 0;
}
