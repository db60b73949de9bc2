/* SPDX-License-Identifier: MIT */
/*
 * TwiML documents for the voice webhook (spec §2): `<Say>`, `<Hangup/>` and
 * `<Connect><Stream url=…>` with `<Parameter>`s. Every attribute value and
 * text node is XML-escaped (`& < > " '`); bytes XML 1.0 cannot carry
 * (control characters other than tab, CR, LF) are dropped and invalid UTF-8
 * becomes U+FFFD, so whatever a caller's number or a configured text holds,
 * the document parses.
 *
 * A builder is error-sticky: after a failed allocation every call is a
 * no-op and vb_twiml_finish() reports VB_ENOMEM.
 */
#ifndef VB_NET_TWIML_H
#define VB_NET_TWIML_H

#include <stddef.h>

typedef struct vb_twiml {
    char *_buf;
    size_t _len, _cap;
    int _err;
} vb_twiml_t;

typedef struct vb_twiml_param {
    const char *name;
    const char *value;
} vb_twiml_param_t;

/* Starts a document: XML declaration and `<Response>`. */
void vb_twiml_init(vb_twiml_t *t);

/* Appends `<Say>text</Say>`; nothing when `text` is NULL or empty. */
void vb_twiml_say(vb_twiml_t *t, const char *text);

/* Appends `<Hangup/>`. */
void vb_twiml_hangup(vb_twiml_t *t);

/* Appends `<Reject reason="reason"/>` ("busy" or "rejected"): the call is
 * not answered and the caller hears a busy tone (or "not in service"). */
void vb_twiml_reject(vb_twiml_t *t, const char *reason);

/* Appends `<Dial>number</Dial>`, or `<Dial><Sip>uri</Sip></Dial>` when
 * `target` starts with "sip:" (XML-escaped either way). */
void vb_twiml_dial(vb_twiml_t *t, const char *target);

/* Appends `<Connect><Stream url="url"><Parameter name= value=/>…</Stream>
 * </Connect>` with `n` parameters (entries with a NULL value are skipped). */
void vb_twiml_connect_stream(vb_twiml_t *t, const char *url,
                             const vb_twiml_param_t *params, size_t n);

/* The same inside `<Connect action="action">` (NULL or "": none). Twilio
 * requests the action when the stream ends and runs the TwiML it answers
 * instead of the verbs after `</Connect>`. */
void vb_twiml_connect_stream_action(vb_twiml_t *t, const char *url,
                                    const char *action,
                                    const vb_twiml_param_t *params, size_t n);

/* The same with `<Stream statusCallback="status_cb">` (NULL or "": none):
 * Twilio posts the stream's events (stream-started, stream-stopped,
 * stream-error with StreamError) there. */
void vb_twiml_connect_stream_cb(vb_twiml_t *t, const char *url,
                                const char *action, const char *status_cb,
                                const vb_twiml_param_t *params, size_t n);

/* Closes `</Response>` and moves the document to *out (malloc'd,
 * NUL-terminated, caller frees; *len bytes). Returns 0 or VB_ENOMEM; `t` is
 * empty afterwards either way. */
int vb_twiml_finish(vb_twiml_t *t, char **out, size_t *len);

/* Frees an unfinished builder; accepts NULL. */
void vb_twiml_free(vb_twiml_t *t);

/* Writes the XML-escaped form of `len` bytes of `s` into `dst` (`dstsz`
 * bytes with the NUL) and returns the escaped length, which may exceed
 * dstsz - 1 (then the output is cut, snprintf-style). At most 8 bytes of
 * output per input byte. Any thread. */
size_t vb_twiml_escape(char *dst, size_t dstsz, const char *s, size_t len);

#endif
