/* SPDX-License-Identifier: MIT */
/*
 * The model's tool calls on the gemini thread (docs/assistants.md, "Tools"
 * and "Transfer"): HTTP tools posted to the business's URLs, the built-in
 * end_call and transfer_call answered here, and the per-call tool log the
 * post-call report reads.
 *
 * DESIGN. A stage has one vb_tools_t: an HTTP client on the stage's loop
 * (net/http_client.h, keep-alive per host), the webhook secret, the metric
 * series per tool name. A call has one vb_call_tools_t. Every functionCall
 * of one toolCall message joins one batch; an HTTP tool's request starts at
 * once (all of a batch run concurrently), a built-in or unknown function is
 * resolved at once. When the message has been parsed the batch is closed
 * (vb_call_tools_end_batch); when a closed batch has every call resolved,
 * ONE toolResponse with all their functionResponses goes to the model, in
 * the order of the calls, through the `send` callback. A
 * toolCallCancellation cancels the named calls' requests; they are left
 * out of the response (a batch whose every call was cancelled sends
 * nothing). Nothing blocks: requests are asynchronous on the loop.
 *
 * What the model is told (the `response` of its call):
 *   2xx with a JSON object body      that object, as it is
 *   2xx with other JSON (array, ...) {"output": <that value>}
 *   2xx, not JSON                    {"error":"the tool's answer was not JSON"}
 *   non-2xx                          {"error":"the tool failed (HTTP <n>)"}
 *   over --tool-max-response-bytes   {"error":"the tool's answer was too
 *                                     large (over <n> bytes)"}
 *   no answer within timeout_ms      {"error":"the tool did not answer in
 *                                     time (<n> ms)"}
 *   connection failed                {"error":"the tool could not be
 *                                     reached"}
 *   not a tool of the assistant      {"error":"unknown function <name>"}
 * The call goes on in every case.
 *
 * Metrics: vb_tool_requests_total{tool,outcome} (outcome: ok, http_error,
 * not_json, too_large, timeout, unreachable, cancelled, unknown) and
 * vb_tool_latency_seconds{tool}. Tool names come from the assistants file;
 * past VB_TOOLS_MAX_SERIES distinct names the label is "other", so the
 * series stay bounded whatever reloads bring.
 *
 * Threads: everything here runs on the gemini stage's thread.
 */
#ifndef VB_AI_TOOLS_H
#define VB_AI_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/assistant.h"
#include "core/metrics.h"
#include "net/http_client.h"

#define VB_TOOLS_MAX_SERIES   48u  /* distinct tool names with own series */
#define VB_TOOLS_MAX_INFLIGHT 16u  /* function calls unresolved per call */
#define VB_TOOLS_LOG_MAX      256u /* tool log entries kept per call */
#define VB_TOOLS_ARGS_MAX     (16u * 1024u) /* arguments kept in the log */

typedef struct vb_tools vb_tools_t;
typedef struct vb_call_tools vb_call_tools_t;

typedef struct vb_tools_config {
    const char *secret; /* --webhook-secret; NULL/"": unsigned */
    /* --webhook-secret-previous: a second v1= while rotating; NULL/"" */
    const char *secret_previous;
    const char *ca_file;   /* --webhook-ca-file; NULL/"": system bundle */
    size_t max_response;   /* --tool-max-response-bytes; 0: 65536 */
    vb_metrics_t *metrics; /* series registered here */
    /* where the stage thread's shard is (it exists once the thread runs) */
    vb_metrics_shard_t *const *shard;
} vb_tools_config_t;

/* Creates the stage's tool runner on `loop`. Errors: VB_EINVAL, VB_ENOMEM,
 * VB_ENOENT / VB_ECERT / VB_ETLS (the CA bundle), VB_ENOSPC (metrics). The
 * stage's thread must be the only user afterwards. */
int vb_tools_create(uv_loop_t *loop, const vb_tools_config_t *cfg,
                    vb_tools_t **out);
/* Cancels what is in flight and frees; accepts NULL. Loop thread. */
void vb_tools_destroy(vb_tools_t *t);

/* ---- per call ---- */

/* Sends a finished toolResponse (JSON text) to the call's model session;
 * returns 0 when it went out (else the text is kept and offered again by
 * vb_call_tools_flush()). */
typedef int (*vb_call_tools_send_cb)(void *ud, const char *json, size_t len);

/* The call's identifiers, as the tool.call body carries them. */
typedef struct vb_call_ids {
    const char *sid, *account_sid, *from, *to, *direction; /* NULL: "" */
} vb_call_ids_t;

/* Returns NULL when out of memory. Strings are copied. */
vb_call_tools_t *vb_call_tools_new(vb_tools_t *t, const vb_call_ids_t *ids,
                                   vb_call_tools_send_cb send, void *ud);
/* Fills in identifiers learnt later (CALL_OPEN's account SID); NULL
 * fields are left as they are. */
void vb_call_tools_set_ids(vb_call_tools_t *ct, const vb_call_ids_t *ids);
/* Cancels the call's requests (no response is sent) and frees; accepts
 * NULL. */
void vb_call_tools_free(vb_call_tools_t *ct);

/* How the gemini stage resolves a built-in: the response object text
 * (copied) and the outcome for the log ("ok", "error"). */
typedef struct vb_tool_builtin {
    const char *response_json;
    const char *status;
} vb_tool_builtin_t;

/* One functionCall of the current toolCall message. `a` is the call's
 * assistant (NULL: no HTTP tools). If `builtin` is not NULL the call is
 * resolved with it; else an HTTP tool of `a` named `name` is requested,
 * else it is answered as an unknown function. `args_json` is the call's
 * arguments (NULL: {}). Returns 0, or VB_ENOSPC (too many calls in flight:
 * answered with an error at once). */
int vb_call_tools_call(vb_call_tools_t *ct, const vb_assistant_t *a,
                       const char *id, const char *name, const char *args_json,
                       const vb_tool_builtin_t *builtin);
/* The toolCall message has been parsed: its batch may be answered. */
void vb_call_tools_end_batch(vb_call_tools_t *ct);
/* toolCallCancellation for `id`: its request is abandoned and it is not
 * answered. Returns true when it was in flight here. */
bool vb_call_tools_cancel(vb_call_tools_t *ct, const char *id);
/* Offers responses that `send` could not take (the session was not ready)
 * again. */
void vb_call_tools_flush(vb_call_tools_t *ct);

/* ---- the per-call tool log, for the post-call report ---- */

typedef struct vb_tool_log_entry {
    char id[64];
    char name[VB_ASSISTANT_TOOL_NAME_MAX + 1];
    char *arguments; /* JSON text as the model sent it ("{}" when none) */
    /* ok, http_error, not_json, too_large, timeout, unreachable,
     * cancelled, unknown, error (a built-in refused), pending */
    const char *status;
    int http_status;     /* 0 when no HTTP answer */
    uint32_t latency_ms; /* from the toolCall to the result */
} vb_tool_log_entry_t;

/* The call's tool calls in the order the model made them (at most
 * VB_TOOLS_LOG_MAX; later ones are counted in *dropped, may be NULL).
 * Valid until the next call into `ct`. */
const vb_tool_log_entry_t *vb_call_tools_log(const vb_call_tools_t *ct,
                                             size_t *n, size_t *dropped);

#endif
