/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the Twilio Media Streams message parser
 * (net/twilio_msg.c): arbitrary bytes must parse or fail cleanly, every
 * string the parser returns must lie inside the input buffer and be
 * NUL-terminated, and a mark name escaped by vb_twilio_json_escape() must
 * parse back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/twilio_msg.h"

static void check_str(const vb_twilio_str_t *s, const char *buf, size_t len)
{
    if (s->p == NULL)
        return;
    if (s->p < buf || s->p + s->len > buf + len || s->p[s->len] != '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    vb_twilio_msg_t m;
    vb_twilio_msg_error_t err;
    int rc = vb_twilio_msg_parse(buf, size, &m, &err);
    if (rc == 0) {
        const vb_twilio_str_t *all[] = {
            &m.event_name,         &m.stream_sid,        &m.sequence_number,
            &m.connected.protocol, &m.connected.version, &m.start.account_sid,
            &m.start.call_sid,     &m.start.stream_sid,  &m.start.encoding,
            &m.media.track,        &m.media.chunk,       &m.media.timestamp,
            &m.media.payload,      &m.dtmf.track,        &m.dtmf.digit,
            &m.mark.name,          &m.stop.account_sid,  &m.stop.call_sid,
        };
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            check_str(all[i], buf, size);
        if (m.start.nparams > VB_TWILIO_MAX_PARAMS)
            abort();
        for (size_t i = 0; i < m.start.nparams; i++) {
            check_str(&m.start.param_name[i], buf, size);
            check_str(&m.start.param_value[i], buf, size);
        }
        (void)vb_twilio_msg_param(&m, "streamToken");
    } else if (err.reason == NULL || err.field == NULL) {
        abort();
    }
    free(buf);

    /* Round trip: any bytes as a mark name. */
    if (size <= 4096 && memchr(data, 0, size) == NULL) {
        size_t cap = size * 6 + 128;
        char *json = malloc(cap + 1);
        if (json == NULL)
            return 0;
        const char *pre = "{\"event\":\"mark\",\"sequenceNumber\":\"1\","
                          "\"streamSid\":\"MZ1\",\"mark\":{\"name\":\"";
        size_t o = strlen(pre);
        memcpy(json, pre, o);
        size_t e = vb_twilio_json_escape((const char *)data, size, json + o,
                                         cap - o - 4);
        if (e == 0 && size > 0)
            abort();
        o += e;
        memcpy(json + o, "\"}}", 3);
        o += 3;
        rc = vb_twilio_msg_parse(json, o, &m, &err);
        if (rc != 0 || m.event != VB_TWILIO_EV_MARK ||
            m.mark.name.len != size || memcmp(m.mark.name.p, data, size) != 0)
            abort();
        free(json);
    }
    return 0;
}
