/* SPDX-License-Identifier: MIT */
/*
 * The ingress thread: the public HTTP listener (and an optional admin one)
 * serving Twilio's voice webhook (TwiML), call-status callbacks,
 * /healthz, /readyz, the Media Streams WebSocket upgrade, whose socket it
 * hands to a lane, and the admin endpoints /metrics, /test/system and
 * /test/audio:
 * those only on the admin listener (--metrics-listen), and on the public
 * one only with --admin-on-public (404 there otherwise).
 *
 * DESIGN. One thread owns one uv_loop_t and everything on it (listeners,
 * connections, timers); no other thread touches them. Other threads reach
 * the ingress in three ways only: the atomics of the readiness API below
 * (draining flag, active calls per lane), a uv_async_t to stop it, and the
 * per-lane SPSC rings it produces into.
 *
 * Routing of a call to a lane. The webhook picks the lane with the fewest
 * calls (active + answered but not yet streaming), writes it into the
 * call's stream token, and also into the stream URL, after the instance
 * (`wss://HOST/media-stream/<instance>/<lane>`, --instance-id), because
 * Twilio cannot carry a query string there and the token itself only
 * arrives inside the stream, after the hand-off. The instance segment lets
 * a proxy send the stream to the instance that answered the webhook and
 * holds the pre-connected Gemini session (docs/operations.md). A stream
 * naming another instance is still served (a fresh Gemini session at
 * start; counted as vb_streams_rerouted_total{reason="instance"}); a lane
 * this process does not have maps onto lane % --lanes (counted as
 * reason="lane"; the stream stage accepts the token there). The older
 * forms `/media-stream/<lane>` and the bare path still work; the bare path
 * goes to the least loaded lane and the token check decides.
 *
 * Drain (core/main.c drives it). Phase 1, from SIGTERM: /readyz 503,
 * webhooks still answered as usual, so calls a proxy sends before its
 * health check notices are not lost. Phase 2 (vb_ingress_stop_accepting,
 * after --drain-grace): a new call's webhook gets 503 with Connection:
 * close, which a proxy retries on another instance (nginx:
 * `proxy_next_upstream ... http_503 non_idempotent`), and so does every
 * other public request except this instance's stream upgrades, its
 * stream-ended route and the status callbacks (/healthz, /readyz and the
 * admin routes answer as ever). The public listener stays open while this
 * instance still has a call: one answered whose stream is awaited, one live, or
 * one ended whose <Connect action> has not come (VB_INGRESS_ACTION_WAIT_MS at
 * most): Twilio requests /stream-ended/<instance> of a live call here,
 * and an instance that refused it would leave the caller to the wrong
 * TwiML. Then it closes, so connections are refused and proxies fail
 * over at once.
 *
 * Gemini readiness. vb_ingress_gemini_verdict() takes the outcome of each
 * Gemini session (the start-up check session, the periodic probe, and the
 * calls' own sessions): after one rejected for auth or configuration,
 * /readyz answers 503 "gemini: <reason>" until a session succeeds.
 *
 * Hand-off. After the 101 is written the socket is dup()ed and the libuv
 * handle closed (net/http.h); the new fd and the bytes already read after
 * the upgrade request travel as a VB_MSG_CONN message (payload
 * vb_msg_conn_t) on the lane's conn ring, and the lane's doorbell is
 * rung when the ring may have been empty. The ring's free space is checked
 * before answering 101, counting hand-offs still in flight, so a 101 is
 * never followed by a full ring: a full ring answers 503 instead.
 *
 * Signatures are verified against --public-url + the request target, never
 * the Host the socket sees. Without TWILIO_AUTH_TOKEN nothing is verified:
 * logged once at creation and exported as vb_insecure_mode 1.
 */
#ifndef VB_NET_INGRESS_H
#define VB_NET_INGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/assistant.h"
#include "core/chan.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "net/http.h"
#include "net/twilio_sig.h"

/* Webhook answers reserve a lane slot for this long while the stream has
 * not arrived (counts toward --max-calls and lane choice). */
#define VB_INGRESS_PENDING_MS 30000

/* Draining, the public listener waits this long after the last call
 * ended for its <Connect action> request (stream-ended) when it has not
 * come: Twilio sends it as the stream closes, unless the caller hung up. */
#define VB_INGRESS_ACTION_WAIT_MS 5000

/* HTTP connection caps derived from the fd limit (net/ingress.c): each
 * call holds a Twilio stream, a Gemini connection and, while pending, a
 * pre-connect; the process keeps a reserve for everything else. */
#define VB_INGRESS_FDS_PER_CALL 3
#define VB_INGRESS_FD_RESERVE   64
#define VB_INGRESS_MIN_CONNS    16 /* floor of the derived --max-connections */
#define VB_INGRESS_MIN_PER_PEER 16 /* floor of the derived per-peer limit */

/* Where one lane takes handed-off work (core/chan.h channels with room
 * for the payloads below; the ingress is their only producer, and each
 * push rings the consumer at once). */
typedef struct vb_ingress_lane {
    vb_chan_t *conn;    /* VB_MSG_CONN to the lane's twilio-io */
    vb_chan_t *prepare; /* optional: VB_MSG_PREPARE to gemini */
} vb_ingress_lane_t;

/* The payloads this module sends (CONN, PREPARE) are in core/msg.h. */

/* A call answered here that ended before its stream came: its final
 * status callback arrived first, or no stream by VB_INGRESS_PENDING_MS.
 * Everything borrowed for the callback's duration. */
typedef struct vb_ingress_unstreamed {
    const vb_msg_open_t *call; /* from the webhook; the number's assistant */
    const char *direction;     /* Twilio's Direction ("inbound" if none) */
    const char *status;        /* the final CallStatus, or "expired" */
    int64_t answered_unix_ms, ended_unix_ms;
} vb_ingress_unstreamed_t;

typedef struct vb_ingress_opts {
    const vb_config_t *cfg; /* borrowed; must outlive the ingress */
    vb_metrics_t *metrics;  /* borrowed registry */
    /* Stream-token key, shared with the stream stage (borrowed, read-only).
     * NULL: made from cfg->stream_secret (random when empty). */
    const vb_twilio_sig_key_t *stream_key;
    /* cfg->lanes sinks, or NULL: upgrades are answered 503. Copied. */
    const vb_ingress_lane_t *lanes;
    /* Assistants (borrowed, may be NULL): the webhook picks one by `To`
     * (else the default), names it in the stream's parameters and sends
     * it with the PREPARE. NULL: no assistant travels (the lanes' own
     * settings answer). */
    vb_assistant_store_t *assistants;
    /* Tests and the fuzzer: do not bind any listener. */
    bool no_listen;
    /* POST /test/audio (admin, like /test/system; CORS the same): runs the
     * body on the ingress thread and returns the HTTP status with a
     * malloc'd JSON answer (dsp/audio_check.h). NULL: 404. */
    int (*test_audio)(void *ud, const char *body, size_t len, char **json,
                      size_t *json_len);
    void *test_audio_ud;
    /* Called on the ingress thread, once per answered call that ends
     * without its stream, when this instance can tell it is that call
     * (a stream takes the oldest entry of its lane, whichever call's: a
     * stream of the same lane arriving meanwhile leaves it unknown,
     * logged). NULL: nothing (capacity is still freed). */
    void (*unstreamed)(void *ud, const vb_ingress_unstreamed_t *u);
    void *unstreamed_ud;
} vb_ingress_opts_t;

typedef struct vb_ingress vb_ingress_t;

/* Creates the ingress: validates the settings it uses, registers its
 * metrics, binds --listen (and --metrics-listen) so a bad address fails
 * here, synchronously. Nothing runs until vb_ingress_start(). Returns 0,
 * VB_EINVAL (missing cfg or metrics, a lane channel whose data_max is too
 * small), VB_ECONFIG (logged: bad address, auth token without
 * --public-url), VB_EIO (bind failed, or hashing the stream secret),
 * VB_ENOSPC (metrics registry full), VB_ENOMEM, VB_ESYS (loop, or no
 * randomness for the stream key). Main thread. */
int vb_ingress_create(const vb_ingress_opts_t *o, vb_ingress_t **out);

/* Starts the ingress thread. Returns 0, VB_EBUSY (already started) or
 * VB_ESYS. Main thread. */
int vb_ingress_start(vb_ingress_t *g);

/* Stops the thread: closes listeners and connections, ends the loop,
 * joins. Connections already handed off are not affected. Idempotent.
 * Any thread but the ingress thread. */
void vb_ingress_stop(vb_ingress_t *g);

/* Stops if needed and frees everything; accepts NULL. */
void vb_ingress_destroy(vb_ingress_t *g);

/* ---- readiness inputs: any thread, lock-free ---- */

/* While draining, /readyz answers 503 and new calls get the busy TwiML;
 * streams of calls already answered are still accepted. */
void vb_ingress_set_draining(vb_ingress_t *g, bool draining);
bool vb_ingress_draining(const vb_ingress_t *g);

/* Phase 2 of the drain (see DESIGN): webhooks for new calls get 503 and
 * the public listener closes once no call here needs it. Implies
 * draining. Any thread, after start. */
void vb_ingress_stop_accepting(vb_ingress_t *g);

/* True while the public listener accepts connections. */
bool vb_ingress_listening(const vb_ingress_t *g);

/* Calls answered whose stream has not arrived yet (reserved for
 * VB_INGRESS_PENDING_MS at most). */
int64_t vb_ingress_calls_pending(const vb_ingress_t *g);

/* One Gemini session's verdict on the configuration: `ok` at
 * setupComplete, else rejected for auth/config with `why` (copied). Any
 * thread; takes a mutex only when the state changes or on a rejection,
 * never on the audio path. */
void vb_ingress_gemini_verdict(vb_ingress_t *g, bool ok, const char *why);

/* A check session that could not reach the service (network, TLS,
 * timeout, 5xx): recorded for /test/system (last_outcome "unreachable",
 * its reason and time) without changing readiness. Any thread. */
void vb_ingress_gemini_unreachable(vb_ingress_t *g, const char *why);

/* True while Gemini rejects this configuration (/readyz 503 "gemini"). */
bool vb_ingress_gemini_rejected(const vb_ingress_t *g);

/* The instance name used in stream URLs (--instance-id or the hostname,
 * made a safe path segment). */
const char *vb_ingress_instance(const vb_ingress_t *g);

/* The lane's active-call count moves by `delta` (+1 when a call starts on
 * it, -1 when it ends); out-of-range lanes are ignored. */
void vb_ingress_calls_add(vb_ingress_t *g, uint32_t lane, int delta);

/* An opened call ended on this instance (any thread, lock-free): whether
 * the end was intended (the model's end_call, a transfer) decides the
 * answer to Twilio's <Connect action> request for it: nothing more, or
 * the --fallback-say text (docs/twilio-stream.md, "How a call ends"). */
void vb_ingress_call_ended(vb_ingress_t *g, const char *call_sid,
                           bool intended);

/* Active calls on one lane, and over all lanes (answered-but-not-yet-
 * streaming calls are not included). */
int64_t vb_ingress_lane_calls(const vb_ingress_t *g, uint32_t lane);
int64_t vb_ingress_calls_active(const vb_ingress_t *g);

/* ---- for tests and the fuzzer ---- */

/* The HTTP callbacks (handler, on_error, on_detach, ud) the ingress gives
 * its server, for driving a vb_http_session_t without the thread. Call
 * them only on one thread, and never while the ingress thread runs. */
void vb_ingress_http_callbacks(vb_ingress_t *g, vb_http_server_cfg_t *out);

/* ---- for tests and tools ---- */
/* Used by tests, not by the server; it stays here because the ingress
 * is opaque. */

/* Bound port of the public (admin = false) or admin listener; 0 if none.
 * Any thread after create. */
int vb_ingress_port(const vb_ingress_t *g, bool admin);

#endif
