/* SPDX-License-Identifier: MIT */
/*
 * Outbound calls (docs/outbound.md): POST /v1/calls on the admin listener
 * places a call through Twilio's REST API (net/twilio_rest.h) whose voice
 * webhook is voxbridge's own, and the webhook of that call then answers
 * with the assistant and variables given when it was created.
 *
 * DESIGN. Nothing is kept per call between the create request and the
 * webhook: the assistant's name and the variables travel in the `Url`
 * Twilio is given, as one query parameter (`vbo`, base64url of a compact
 * JSON object) with its MAC (`vbm`, HMAC-SHA256 under the stream secret).
 * Twilio signs the whole URL, query included, so the webhook's
 * X-Twilio-Signature covers them too; the MAC says voxbridge wrote them.
 * Any instance sharing --stream-secret rebuilds the call from its
 * webhook alone, and no table has to be bounded or expired.
 *
 * Everything here runs on the ingress loop. The REST request is
 * asynchronous: the HTTP answer is deferred until Twilio answers.
 */
#ifndef VB_NET_OUTBOUND_H
#define VB_NET_OUTBOUND_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/assistant.h"
#include "core/config.h"
#include "net/http.h"
#include "net/twilio_sig.h"

/* Limits (docs/outbound.md). */
#define VB_OUTBOUND_MAX_VARS      32   /* variables per call */
#define VB_OUTBOUND_VAR_VALUE_MAX 512  /* bytes of one value */
#define VB_OUTBOUND_VARS_MAX      2048 /* bytes of the variables as JSON */
#define VB_OUTBOUND_TARGET_MAX    256  /* bytes of a `to` / `from` */
#define VB_OUTBOUND_PENDING_MAX   64   /* create requests waiting on Twilio */
#define VB_OUTBOUND_VOICEMAIL_MAX 1000 /* bytes of voicemail text */

/* The query parameters of the webhook URL. */
#define VB_OUTBOUND_PARAM     "vbo"
#define VB_OUTBOUND_MAC_PARAM "vbm"

typedef struct vb_outbound vb_outbound_t;

/* Called once per answered request (deferred ones included), for the
 * request metrics. */
typedef void (*vb_outbound_answered_fn)(void *ud, int status,
                                        uint64_t t_start_ns);

/* Creates the endpoint on `loop` (the ingress loop). `cfg`, `store`,
 * `key` are borrowed and outlive it. Loads a TLS client config when
 * --twilio-api-url is https://. Returns 0, VB_ENOMEM, or the TLS error. */
int vb_outbound_create(uv_loop_t *loop, const vb_config_t *cfg,
                       vb_assistant_store_t *store,
                       const vb_twilio_sig_key_t *key,
                       vb_outbound_answered_fn answered, void *answered_ud,
                       vb_outbound_t **out);

/* Frees it; requests still waiting on Twilio answer nobody when they end.
 * Accepts NULL. Loop thread. */
void vb_outbound_destroy(vb_outbound_t *o);

/* True when --admin-token is set (the endpoint exists). */
bool vb_outbound_enabled(const vb_outbound_t *o);

/* Handles POST /v1/calls. Either fills `resp`, or defers it (then
 * answered through vb_http_server_answer() when Twilio answers). */
void vb_outbound_route(vb_outbound_t *o, const vb_http_req_t *req,
                       vb_http_resp_t *resp);

/* The HTTP connection of a deferred create request closed first: returns
 * true when `defer_arg` was one of ours (then forgotten). */
bool vb_outbound_abandon(vb_outbound_t *o, void *defer_arg);

/* What the webhook of an outbound call carries. */
typedef struct vb_outbound_call {
    char assistant[VB_ASSISTANT_NAME_MAX + 1]; /* "" : the default */
    char *variables;                           /* JSON object text, or NULL */
    /* Answering-machine detection: "" off, else "voicemail" or "hangup". */
    char on_machine[16];
} vb_outbound_call_t;

/* Reads the outbound parameters from a webhook's query (`query` may be
 * NULL). Returns 0 (fill `out`; free its variables with free()),
 * VB_ENOENT (none: not an outbound call of ours), VB_EAUTH (a MAC that
 * does not verify), VB_EPROTO (malformed), VB_ENOMEM. Any thread. */
int vb_outbound_from_query(const vb_twilio_sig_key_t *key, const char *query,
                           vb_outbound_call_t *out);

/* A status callback (already authenticated) of an outbound call: when it
 * is the answering-machine-detection result (`AnsweredBy`) and the call
 * asked for it, leaves the voicemail or hangs up through the REST API.
 * Returns true when it acted. `f` holds the callback's parameters. */
struct vb_form;
bool vb_outbound_on_status(vb_outbound_t *o, const vb_http_req_t *req,
                           const struct vb_form *f);

#endif
