/* SPDX-License-Identifier: MIT */
/*
 * Ends a live call through Twilio's REST API (spec §6):
 *
 *   POST {api}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json
 *   Authorization: Basic base64(AccountSid:AuthToken), or with an API key
 *   base64(SK...:secret) (the account SID stays in the path)
 *   Status=completed                 (hang up now), or
 *   Twiml=<Response>...</Response>   (replace the call's TwiML: the media
 *                                     stream ends and the new TwiML runs,
 *                                     e.g. a <Say> then <Hangup/>)
 *
 * over HTTPS (mbedTLS, net/tls.h) for https:// base URLs, or plain HTTP for
 * http:// (the simulator on loopback). One request per call, asynchronous
 * on the caller's loop, with a time limit; the result (HTTP status, or a
 * negative VB_E*) goes to a callback. The auth token is never logged.
 */
#ifndef VB_NET_TWILIO_REST_H
#define VB_NET_TWILIO_REST_H

#include <stdint.h>
#include <uv.h>

#include "net/tls.h"

/* `status`: the HTTP status (200 means the call was ended), or a negative
 * VB_E* when no response came (VB_ETIMEDOUT, VB_ECONNREFUSED, VB_ECERT,
 * VB_EPROTO for a malformed response...). Runs on the loop thread. */
typedef void (*vb_twilio_rest_cb)(int status, void *ud);

typedef struct vb_twilio_rest_req {
    const char *api_url;     /* "https://api.twilio.com" or http://host:port */
    const char *account_sid; /* AC... (also the Basic auth user) */
    const char *auth_token;  /* Basic auth password (the auth token, or the
                                API key's secret); never logged */
    const char *api_key;     /* NULL/"": none; else SK..., the Basic auth
                                user in place of the account SID */
    const char *call_sid;    /* CA... */
    vb_tls_config_t *tls;    /* client config for https://; borrowed */
    uint32_t timeout_ms;     /* whole request; 0 = 10000 */
    /* NULL: Status=completed. Else a TwiML document sent as Twiml= (form
     * encoded here; at most VB_TWILIO_REST_TWIML_MAX bytes, Twilio's own
     * limit is 4000 characters). */
    const char *twiml;
} vb_twilio_rest_req_t;

#define VB_TWILIO_REST_TWIML_MAX 4000u

/* Most response bytes read (head and body; Twilio's call resource is a few
 * KB). Beyond it the request ends: with the status if one came, else
 * VB_EMSGSIZE; the connection is closed. */
#define VB_TWILIO_REST_MAX_RESPONSE (64u * 1024u)

/* Starts the request on `loop`; `cb` fires exactly once, later, unless this
 * returns an error. Strings are copied. Errors (nothing started, no
 * callback): VB_EINVAL (missing field, bad URL, SIDs with characters other
 * than letters and digits, TwiML longer than VB_TWILIO_REST_TWIML_MAX),
 * VB_ECONFIG (https:// without a TLS config), VB_ENOMEM, VB_ETLS (TLS
 * session setup failed), or the transport's write error. Loop thread. */
int vb_twilio_rest_hangup(uv_loop_t *loop, const vb_twilio_rest_req_t *req,
                          vb_twilio_rest_cb cb, void *ud);

/* Runs `len` bytes through the response handling of a request, as if the
 * server had sent them in pieces of `chunk` bytes (0: all at once) and then
 * closed the connection, and returns what the callback would get: the HTTP
 * status, or VB_EPROTO (malformed), VB_ECLOSED (no status before EOF) or
 * VB_EMSGSIZE (over VB_TWILIO_REST_MAX_RESPONSE before a status).
 * VB_ESYS or VB_ENOMEM when it cannot run. Runs its own short-lived loop;
 * any thread. Exposed for the fuzz target (tests/fuzz/fuzz_twilio_rest.c)
 * and tests. */
int vb_twilio_rest_parse_response(const char *data, size_t len, size_t chunk);

/* ---- creating a call (outbound calls, docs/outbound.md) ----
 *
 *   POST {api}/2010-04-01/Accounts/{AccountSid}/Calls.json
 *   To=...&From=...&Url=...&StatusCallback=...   (`form`, encoded)
 *
 * The response body (within VB_TWILIO_REST_MAX_RESPONSE) is read as JSON:
 * a 201 names the new call in `sid`; an error carries Twilio's `code` and
 * `message`. */
typedef struct vb_twilio_rest_created {
    int status;        /* HTTP status, or a negative VB_E* (no response) */
    char sid[64];      /* the Call resource's sid on a 2xx ("" if absent) */
    int code;          /* Twilio's error code (0: none given) */
    char message[256]; /* Twilio's error message ("" if none; cut) */
} vb_twilio_rest_created_t;

typedef void (*vb_twilio_rest_create_cb)(const vb_twilio_rest_created_t *res,
                                         void *ud);

/* Most bytes of the form body of a create request. */
#define VB_TWILIO_REST_FORM_MAX (16u * 1024u)

/* Starts a create request with `req` (its call_sid and twiml are not
 * used) and the encoded form body `form` (at most VB_TWILIO_REST_FORM_MAX
 * bytes); `cb` fires exactly once, later, unless this returns an error
 * (the same errors as vb_twilio_rest_hangup()). Loop thread. */
int vb_twilio_rest_create_call(uv_loop_t *loop, const vb_twilio_rest_req_t *req,
                               const char *form, vb_twilio_rest_create_cb cb,
                               void *ud);

/* Reads a create response body as above into `res` (its status is left
 * as it is). Exposed for tests. */
void vb_twilio_rest_created_parse(const char *body, size_t len,
                                  vb_twilio_rest_created_t *res);

#endif
