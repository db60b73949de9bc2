/* SPDX-License-Identifier: MIT */
/*
 * --assistant-url: the per-call assistant request (docs/assistants.md).
 * For each new call the voice webhook POSTs
 * {"event":"call.incoming","call":{"sid","account_sid","from","to",
 * "direction"}} (signed with X-Voxbridge-Signature when --webhook-secret is
 * set) and waits at most --assistant-timeout-ms for the answer: an
 * assistant object (fields not given come from the number's assistant), or
 * {"assistant":"<name>"} (one of the file's), or 204 (the number's
 * assistant). A timeout, a failure, a status other than 2xx or an answer
 * that does not validate fall back to the number's assistant.
 *
 * DESIGN. The requests run on the caller's libuv loop (the ingress) through
 * net/http_client.h; nothing blocks. Each request ends in exactly one
 * callback unless cancelled. This module keeps net/http.h out of the HTTP
 * client's way (both name a header type).
 */
#ifndef VB_NET_ASSISTANT_URL_H
#define VB_NET_ASSISTANT_URL_H

#include <stdint.h>
#include <uv.h>

#include "core/assistant.h"
#include "core/config.h"

/* How a request ended (the `outcome` label of vb_assistant_requests_total);
 * from VB_AURL_TIMEOUT on, the number's assistant answers. */
enum {
    VB_AURL_ASSISTANT, /* an assistant object */
    VB_AURL_NAMED,     /* {"assistant": "<name>"} */
    VB_AURL_DEFAULT,   /* 204 */
    VB_AURL_TIMEOUT,   /* no answer within --assistant-timeout-ms */
    VB_AURL_ERROR,     /* connection failed, or a status not 2xx */
    VB_AURL_INVALID,   /* not JSON, an unknown name, a field refused */
    VB_AURL_COUNT
};

/* "assistant", "named", "default", "timeout", "error", "invalid". */
const char *vb_assistant_url_outcome(int outcome);

#define VB_AURL_MAX_ANSWER (256u * 1024u) /* answer body bytes */

typedef struct vb_assistant_url vb_assistant_url_t;
typedef struct vb_assistant_url_req vb_assistant_url_req_t;

/* `chosen` is a new reference the callee owns, or NULL: the number's
 * assistant. `why` says what failed ("" when nothing did). */
typedef void (*vb_assistant_url_cb)(void *ud, int outcome,
                                    vb_assistant_t *chosen, const char *why);

/* Creates the requester on `loop` from --assistant-url,
 * --assistant-timeout-ms, --webhook-secret and --webhook-ca-file (`cfg`
 * must outlive it). Returns 0 (and *out NULL when no URL is set),
 * VB_ECONFIG (not http(s)://, CA bundle; logged), VB_ENOMEM. Loop thread
 * (or before the loop runs). */
int vb_assistant_url_create(uv_loop_t *loop, const vb_config_t *cfg,
                            vb_assistant_url_t **out);

/* Cancels every request (no callbacks) and frees; accepts NULL. Loop
 * thread, not from inside a callback. */
void vb_assistant_url_destroy(vb_assistant_url_t *u);

/* Starts the request for the call in `ctx` (copied). `set` (a reference is
 * taken) is where a name is looked up, `number` (from `set`) the assistant
 * fields default to. `cb` runs once, later, unless cancelled. Returns 0
 * and *h, VB_ENOMEM, or the HTTP client's error (nothing started). */
int vb_assistant_url_request(vb_assistant_url_t *u, const vb_call_ctx_t *ctx,
                             vb_assistants_t *set, const vb_assistant_t *number,
                             vb_assistant_url_cb cb, void *ud,
                             vb_assistant_url_req_t **h);

/* Abandons a request: no callback. Accepts NULL; not after the callback. */
void vb_assistant_url_cancel(vb_assistant_url_req_t *h);

#endif
