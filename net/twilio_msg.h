/* SPDX-License-Identifier: MIT */
/*
 * Parser for the JSON messages Twilio sends on a Media Stream (spec §3):
 * connected, start, media, dtmf, mark, stop.
 *
 * The parser is a strict, non-allocating JSON reader that works in place:
 * it validates the whole text (RFC 8259 grammar, nesting limit), unescapes
 * the strings it keeps inside the caller's buffer and NUL-terminates them,
 * and then checks the fields each event requires and their types. It runs
 * for every 20 ms media frame, so it does no allocation and no copying of
 * the payload. Unknown keys are skipped (Twilio adds fields over time);
 * an unknown event parses fine with event VB_TWILIO_EV_UNKNOWN so that the
 * caller can count it.
 */
#ifndef VB_NET_TWILIO_MSG_H
#define VB_NET_TWILIO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum vb_twilio_event {
    VB_TWILIO_EV_UNKNOWN,
    VB_TWILIO_EV_CONNECTED,
    VB_TWILIO_EV_START,
    VB_TWILIO_EV_MEDIA,
    VB_TWILIO_EV_DTMF,
    VB_TWILIO_EV_MARK,
    VB_TWILIO_EV_STOP,
} vb_twilio_event_t;

/* A string inside the parsed buffer, NUL-terminated at p[len]; p is NULL
 * when the key was absent. */
typedef struct vb_twilio_str {
    const char *p;
    size_t len;
} vb_twilio_str_t;

#define VB_TWILIO_MAX_PARAMS 16 /* customParameters kept; more is an error */
#define VB_TWILIO_MAX_DEPTH  16 /* JSON nesting limit */

#define VB_TWILIO_TRACK_INBOUND  1u
#define VB_TWILIO_TRACK_OUTBOUND 2u
#define VB_TWILIO_TRACK_OTHER    4u /* a name this does not know */

typedef struct vb_twilio_msg {
    vb_twilio_event_t event;
    vb_twilio_str_t event_name;
    vb_twilio_str_t stream_sid;      /* top-level streamSid */
    vb_twilio_str_t sequence_number; /* digits */
    uint64_t seq;                    /* sequence_number's value */
    struct {
        vb_twilio_str_t protocol, version;
    } connected;
    struct {
        vb_twilio_str_t account_sid, call_sid, stream_sid;
        unsigned tracks; /* VB_TWILIO_TRACK_* bits */
        vb_twilio_str_t encoding;
        double sample_rate, channels;
        size_t nparams;
        vb_twilio_str_t param_name[VB_TWILIO_MAX_PARAMS];
        vb_twilio_str_t param_value[VB_TWILIO_MAX_PARAMS];
    } start;
    struct {
        vb_twilio_str_t track, chunk, timestamp, payload;
        uint64_t chunk_n, timestamp_ms;
    } media;
    struct {
        vb_twilio_str_t track, digit;
    } dtmf;
    struct {
        vb_twilio_str_t name;
    } mark;
    struct {
        vb_twilio_str_t account_sid, call_sid;
    } stop;
} vb_twilio_msg_t;

/* Why a message was refused; `reason` is a metric label value. */
typedef struct vb_twilio_msg_error {
    const char *reason; /* "invalid_json", "missing_field", "invalid_field" */
    const char *field;  /* the field concerned ("media.payload"), or "" */
    size_t offset;      /* byte offset for invalid_json */
} vb_twilio_msg_error_t;

/* Parses the `len` bytes at `buf` (modified in place: strings are unescaped
 * and NUL-terminated; buf[len] must be writable and is set to NUL, so the
 * buffer needs len + 1 bytes). On success fills *m (its strings point into
 * buf) and returns 0. Errors, with *err filled: VB_EPROTO (not JSON, not an
 * object, nesting too deep, trailing bytes), VB_ENOENT (a required field is
 * missing), VB_EINVAL (a field has the wrong type or format, too many
 * customParameters; also, with *err empty, a NULL buf or m). Unknown
 * events return 0 with m->event == VB_TWILIO_EV_UNKNOWN. Any thread;
 * reentrant. */
int vb_twilio_msg_parse(char *buf, size_t len, vb_twilio_msg_t *m,
                        vb_twilio_msg_error_t *err);

/* Returns the value of customParameters[name], or NULL. */
const char *vb_twilio_msg_param(const vb_twilio_msg_t *m, const char *name);

/* Writes `s` (len bytes) as a JSON string body (no quotes) into out,
 * escaping '"', '\\' and control characters. Returns the bytes written, or
 * 0 if `cap` is too small for the result (a non-empty input always writes
 * something). Does not NUL-terminate. */
size_t vb_twilio_json_escape(const char *s, size_t len, char *out, size_t cap);

#endif
