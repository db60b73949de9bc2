/* SPDX-License-Identifier: MIT */
/*
 * The ingress thread (design in ingress.h): routes, Twilio webhooks,
 * health and metrics endpoints, and the WebSocket hand-off to lanes.
 *
 * Everything below the readiness API runs on the ingress thread: the
 * pending-call table, the in-flight hand-off counts, the metrics shard and
 * the lazily registered request-counter series are its alone.
 */
#include "net/ingress.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/assistant_url.h"
#include "net/form.h"
#include "net/hash.h"
#include "net/outbound.h"
#include "net/twiml.h"
#include "net/ws.h"

enum route {
    R_VOICE,
    R_STATUS,
    R_STREAM,
    R_ENDED,
    R_STREAM_STATUS,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_SYSTEM,
    R_AUDIO,
    R_CALLS,
    R_OTHER,
    R_COUNT
};
static const char *const route_names[R_COUNT] = {
    "voice",         "status",     "stream", "stream_ended",
    "stream_status", "healthz",    "readyz", "metrics",
    "test_system",   "test_audio", "calls",  "other"};

static const int codes[] = {101, 200, 201, 204, 400, 401, 403, 404, 405,
                            408, 413, 415, 426, 429, 431, 500, 502, 503};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

static const char *const call_statuses[] = {
    "queued", "initiated", "ringing",   "in-progress", "completed",
    "busy",   "failed",    "no-answer", "canceled",    "other"};
#define NSTATUSES (sizeof(call_statuses) / sizeof(call_statuses[0]))

/* <Stream statusCallback> StreamEvent values (the last: anything else). */
static const char *const stream_events[] = {"stream-started", "stream-stopped",
                                            "stream-error", "other"};
#define NSTREAM_EVENTS (sizeof(stream_events) / sizeof(stream_events[0]))

/* The <Connect action> path under --webhook-path. */
#define ENDED_SEG "/stream-ended/"
/* The <Stream statusCallback> path under --status-path. */
#define STREAM_STATUS_SEG "/stream"

enum handoff_result { H_OK, H_RING_FULL, H_NO_LANES, H_FAILED, H_COUNT };
static const char *const handoff_names[H_COUNT] = {"ok", "ring_full",
                                                   "no_lanes", "failed"};

#define LISTENER_PUBLIC            0
#define LISTENER_ADMIN             1
#define CONSUMED                   UINT32_MAX
#define VB_INGRESS_MAX_ALIASES     8 /* --public-url-aliases */
#define VB_INGRESS_MAX_SHARED_KEYS 8 /* TWILIO_WEBHOOK_SHARED_KEYS */

enum { DRAIN_NONE, DRAIN_GRACE, DRAIN_CLOSING };
enum { GM_NONE, GM_OK, GM_REJECTED, GM_UNREACHABLE };
enum { INST_NONE = -1, INST_OURS = 0, INST_OTHER = 1 };

typedef struct pend {
    uint32_t lane; /* CONSUMED once its stream arrived */
    uint64_t pushed_ns, expiry_ns;
    uint64_t sid_hash; /* the call's */
    /* For the report of a call whose stream never comes (opts.unstreamed):
     * what the webhook told, the number's assistant, when it was answered. */
    vb_msg_open_t ids;
    char direction[32];
    int64_t answered_unix_ms;
} pend_t;

struct vb_ingress {
    const vb_config_t *cfg;
    vb_metrics_t *m;
    vb_metrics_shard_t *shard;
    vb_twilio_sig_key_t own_key;
    const vb_twilio_sig_key_t *key;
    vb_assistant_store_t *assistants; /* borrowed, or NULL */
    /* --assistant-url: the client on this loop (and its TLS), outcomes. */
    vb_assistant_url_t *aurl;
    vb_metric_t asst_outcome[VB_AURL_COUNT];
    vb_outbound_t *outbound;  /* POST /v1/calls; outbound webhooks */
    vb_ingress_lane_t *lanes; /* NULL: no sinks */
    uint32_t nlanes;
    bool verify;
    char *public_base; /* public URL without trailing '/', or NULL */
    /* Signatures: the public URL and its aliases (no trailing '/'), and
     * the SharedKey secrets (sid "" matches any key). */
    char *sig_base[VB_INGRESS_MAX_ALIASES + 1];
    size_t n_sig_base;
    struct {
        char *sid, *secret;
    } shared[VB_INGRESS_MAX_SHARED_KEYS];
    size_t n_shared;
    char *stream_base; /* its ws(s):// form, or NULL */
    bool admin_split;
    int (*test_audio)(void *ud, const char *body, size_t len, char **json,
                      size_t *json_len);
    void *test_audio_ud;
    uint64_t started_ns;

    /* Shared with other threads. Relaxed: plain counters and a flag, no
     * data is published through them. */
    _Atomic int drain_phase;        /* DRAIN_* */
    _Atomic int64_t *active;        /* per lane */
    _Atomic int64_t pending_shared; /* pend_total, for other threads */
    _Atomic bool listening;
    /* Calls ended here during the drain whose <Connect action>
     * (stream-ended) has not come yet, and when the last one ended: the
     * public listener waits for them. */
    _Atomic int64_t actions_awaited;
    _Atomic uint64_t last_end_ns;
    /* Gemini verdicts: consecutive rejections (0: ready), the last
     * outcome (GM_*) and when (Unix s); the reason under gm_mu. */
    _Atomic uint32_t gm_rejects;
    _Atomic int gm_last;
    _Atomic int64_t gm_last_s;
    pthread_mutex_t gm_mu;
    bool gm_mu_ok;
    char gm_why[200];
    char instance[64];

    /* Ingress thread only. */
    uint32_t *lane_pending;
    uint32_t *lane_inflight;
    /* When a stream last took a pending entry of the lane: an entry pushed
     * after it that is still there at its end is surely its own call's
     * (streams take the oldest entry of their lane, whichever call's). */
    uint64_t *lane_consumed_ns;
    void (*report_unstreamed)(void *ud, const vb_ingress_unstreamed_t *u);
    void *report_ud;
    pend_t *pend;
    uint32_t pend_cap, pend_head, pend_n, pend_total;
    /* Calls answered within a stream-token lifetime, by CallSid hash
     * (direct-mapped: a collision forgets the older call): a replayed
     * webhook gets the same answer and takes no more capacity. */
    struct answered {
        uint64_t hash;
        int64_t expiry_s; /* of the stream token */
        uint32_t lane;
    } * ans;
    uint32_t ans_cap;
    vb_metric_t replays;
    uint32_t rr;
    /* How calls that ran here ended, by CallSid hash (direct-mapped,
     * written by the twilio-io threads): hash with bit 0 set, bit 1 when
     * the end was intended. Read by the <Connect action> route. */
    _Atomic uint64_t *ended;
    uint32_t ended_cap;
    vb_metric_t ended_answer[2]; /* nothing more, fallback */
    vb_metric_t unstreamed;      /* calls over before their stream came */
    vb_metric_t stream_event[4]; /* by stream_events[] */

    uv_loop_t loop;
    bool loop_ok;
    uv_async_t stop_async;
    bool async_ok;
    uv_async_t wake_async; /* the drain phase changed */
    uv_timer_t drain_timer;
    uv_timer_t pend_timer; /* expires pending calls while there are any */
    bool wake_ok, unlistened;
    char readyz_body[256];
    vb_http_server_t *http;
    pthread_t thread;
    bool started, stopped;
    int port_public, port_admin;

    /* Metric series. */
    vb_metric_t req_id[R_COUNT][NCODES];
    bool req_reg[R_COUNT][NCODES];
    vb_metric_t dur[R_COUNT];
    vb_metric_t sigfail[5]; /* voice .. stream_status */
    vb_metric_t status_id[NSTATUSES];
    vb_metric_t rejected_busy, rejected_draining;
    vb_metric_t g_ready, g_draining, g_max_calls; /* set at each scrape */
    vb_metric_t g_gemini_ready, rerouted[2];      /* instance, lane */
    vb_metric_t insecure, stream_unsigned;
    vb_metric_t handoff[H_COUNT];
    vb_metric_t conn_event[VB_HTTP_EV_COUNT];

    /* HTTP connection limits, derived at create. */
    uint32_t max_conns, max_conns_per_peer;
    uint64_t fd_limit;
};

/* ---------------------------------------------------------------------- */
/* messages                                                               */

/* ---------------------------------------------------------------------- */
/* readiness                                                              */

static void wake(vb_ingress_t *g)
{
    if (g->wake_ok)
        uv_async_send(&g->wake_async);
}

void vb_ingress_set_draining(vb_ingress_t *g, bool draining)
{
    int want = draining ? DRAIN_GRACE : DRAIN_NONE;
    int cur = atomic_load(&g->drain_phase);
    /* Never back from closing to grace. */
    if (draining && cur == DRAIN_CLOSING)
        return;
    atomic_store(&g->drain_phase, want);
    wake(g);
}

void vb_ingress_stop_accepting(vb_ingress_t *g)
{
    atomic_store(&g->drain_phase, DRAIN_CLOSING);
    wake(g);
}

bool vb_ingress_draining(const vb_ingress_t *g)
{
    return atomic_load_explicit(&g->drain_phase, memory_order_relaxed) !=
           DRAIN_NONE;
}

bool vb_ingress_listening(const vb_ingress_t *g)
{
    return atomic_load_explicit(&g->listening, memory_order_relaxed);
}

int64_t vb_ingress_calls_pending(const vb_ingress_t *g)
{
    return atomic_load_explicit(&g->pending_shared, memory_order_relaxed);
}

void vb_ingress_gemini_verdict(vb_ingress_t *g, bool ok, const char *why)
{
    int64_t now = (int64_t)vb_clock_wall_s();
    atomic_store_explicit(&g->gm_last_s, now, memory_order_relaxed);
    if (ok && atomic_load_explicit(&g->gm_rejects, memory_order_relaxed) == 0 &&
        atomic_load_explicit(&g->gm_last, memory_order_relaxed) == GM_OK)
        return; /* the common case: nothing changes, no lock */
    pthread_mutex_lock(&g->gm_mu);
    uint32_t was = atomic_load(&g->gm_rejects);
    if (ok) {
        atomic_store(&g->gm_rejects, 0);
        atomic_store(&g->gm_last, GM_OK);
        snprintf(g->gm_why, sizeof(g->gm_why), "setupComplete");
    } else {
        atomic_store(&g->gm_rejects, was + 1);
        atomic_store(&g->gm_last, GM_REJECTED);
        snprintf(g->gm_why, sizeof(g->gm_why), "%s", why ? why : "rejected");
    }
    pthread_mutex_unlock(&g->gm_mu);
    if (ok && was > 0)
        vb_log_info(NULL, "gemini accepts sessions again: ready",
                    "rejected_before=%u", was);
    else if (!ok && was == 0)
        vb_log_error(NULL, "gemini rejects sessions: not ready", "reason=%s",
                     why ? why : "rejected");
}

void vb_ingress_gemini_unreachable(vb_ingress_t *g, const char *why)
{
    pthread_mutex_lock(&g->gm_mu);
    atomic_store(&g->gm_last_s, (int64_t)vb_clock_wall_s());
    atomic_store(&g->gm_last, GM_UNREACHABLE);
    snprintf(g->gm_why, sizeof(g->gm_why), "%s", why ? why : "unreachable");
    pthread_mutex_unlock(&g->gm_mu);
}

bool vb_ingress_gemini_rejected(const vb_ingress_t *g)
{
    return atomic_load_explicit(&g->gm_rejects, memory_order_relaxed) > 0;
}

const char *vb_ingress_instance(const vb_ingress_t *g)
{
    return g->instance;
}

static void gemini_why(vb_ingress_t *g, char *out, size_t n)
{
    pthread_mutex_lock(&g->gm_mu);
    snprintf(out, n, "%s", g->gm_why);
    pthread_mutex_unlock(&g->gm_mu);
}

/* An ended[] entry: the CallSid's hash with its low bits for these. */
#define ENDED_VALID    1u
#define ENDED_INTENDED 2u
#define ENDED_DUE      4u /* a drain awaits its stream-ended request */
#define ENDED_BITS     ((uint64_t)7)

void vb_ingress_call_ended(vb_ingress_t *g, const char *call_sid, bool intended)
{
    if (g == NULL || g->ended == NULL || call_sid == NULL)
        return;
    uint64_t h = vb_hash_fnv1a64(call_sid, strlen(call_sid));
    /* Its action comes while the listener is open anyway, unless this is
     * a drain: then it is due here, and awaited (ENDED_DUE). */
    bool due = vb_ingress_draining(g);
    if (due)
        atomic_fetch_add_explicit(&g->actions_awaited, 1, memory_order_relaxed);
    atomic_store_explicit(&g->ended[h % g->ended_cap],
                          (h & ~ENDED_BITS) | ENDED_VALID |
                              (intended ? ENDED_INTENDED : 0u) |
                              (due ? ENDED_DUE : 0u),
                          memory_order_relaxed);
    if (!due)
        return;
    atomic_store_explicit(&g->last_end_ns, vb_clock_now_ns(),
                          memory_order_relaxed);
}

/* How a call that ran here ended: 1 intended, 0 not, -1 unknown here. */
static int ended_get(const vb_ingress_t *g, const char *call_sid)
{
    uint64_t h = vb_hash_fnv1a64(call_sid, strlen(call_sid));
    uint64_t v =
        atomic_load_explicit(&g->ended[h % g->ended_cap], memory_order_relaxed);
    if ((v & ENDED_VALID) == 0 || (v & ~ENDED_BITS) != (h & ~ENDED_BITS))
        return -1;
    return (v & ENDED_INTENDED) != 0;
}

/* The stream-ended request of a call whose action a drain awaits: it is
 * no longer awaited. Once per call, however often Twilio asks. */
static void ended_action_came(vb_ingress_t *g, const char *call_sid)
{
    uint64_t h = vb_hash_fnv1a64(call_sid, strlen(call_sid));
    _Atomic uint64_t *e = &g->ended[h % g->ended_cap];
    uint64_t v = atomic_load_explicit(e, memory_order_relaxed);
    if ((v & ENDED_DUE) == 0 || (v & ~ENDED_BITS) != (h & ~ENDED_BITS))
        return;
    if (atomic_compare_exchange_strong(e, &v, v & ~(uint64_t)ENDED_DUE))
        atomic_fetch_sub(&g->actions_awaited, 1);
}

void vb_ingress_calls_add(vb_ingress_t *g, uint32_t lane, int delta)
{
    if (lane < g->nlanes)
        atomic_fetch_add_explicit(&g->active[lane], delta,
                                  memory_order_relaxed);
}

int64_t vb_ingress_lane_calls(const vb_ingress_t *g, uint32_t lane)
{
    if (lane >= g->nlanes)
        return 0;
    return atomic_load_explicit(&g->active[lane], memory_order_relaxed);
}

int64_t vb_ingress_calls_active(const vb_ingress_t *g)
{
    int64_t n = 0;
    for (uint32_t i = 0; i < g->nlanes; i++)
        n += vb_ingress_lane_calls(g, i);
    return n;
}

/* ---------------------------------------------------------------------- */
/* pending calls (ingress thread)                                         */

static uint64_t sid_hash(const char *sid);
static int ended_get(const vb_ingress_t *g, const char *call_sid);

/* The post-call report of an answered call whose stream did not come here
 * (`status`: Twilio's final CallStatus, or "expired"), sent only when the
 * entry surely is that call's: no stream took an entry of its lane since
 * it was pushed, and the call did not run here. */
static void report_unstreamed(vb_ingress_t *g, const pend_t *p,
                              const char *status)
{
    if (g->report_unstreamed == NULL || ended_get(g, p->ids.call_sid) >= 0)
        return;
    if (g->lane_consumed_ns[p->lane] > p->pushed_ns) {
        vb_log_warn(p->ids.call_sid,
                    "no report for a call without its stream: a stream of "
                    "its lane came meanwhile, which call's is unknown",
                    "status=%s lane=%u", status, p->lane);
        return;
    }
    vb_ingress_unstreamed_t u = {.call = &p->ids,
                                 .direction = p->direction,
                                 .status = status,
                                 .answered_unix_ms = p->answered_unix_ms,
                                 .ended_unix_ms =
                                     (int64_t)(vb_clock_wall_s() * 1000.0)};
    g->report_unstreamed(g->report_ud, &u);
}

static void pend_prune(vb_ingress_t *g, uint64_t now)
{
    while (g->pend_n > 0) {
        pend_t *p = &g->pend[g->pend_head];
        if (p->lane != CONSUMED && p->expiry_ns > now)
            break;
        if (p->lane != CONSUMED) {
            report_unstreamed(g, p, "expired");
            g->lane_pending[p->lane]--;
            g->pend_total--;
        }
        g->pend_head = (g->pend_head + 1) % g->pend_cap;
        g->pend_n--;
    }
    atomic_store_explicit(&g->pending_shared, g->pend_total,
                          memory_order_relaxed);
}

/* While calls await their streams: their expiry (and its report) comes
 * on time even when no request arrives to prune them. */
static void pend_tick(uv_timer_t *t)
{
    vb_ingress_t *g = t->data;
    pend_prune(g, vb_clock_now_ns());
    if (g->pend_n == 0)
        uv_timer_stop(t);
}

/* Returns the new entry, for its caller to describe the call. */
static pend_t *pend_push(vb_ingress_t *g, uint32_t lane, uint64_t now,
                         uint64_t sid_hash)
{
    if (g->wake_ok && !uv_is_active((uv_handle_t *)&g->pend_timer))
        uv_timer_start(&g->pend_timer, pend_tick, 1000, 1000);
    if (g->pend_n == g->pend_cap) {
        /* Full of old entries: forget the oldest. */
        pend_t *p = &g->pend[g->pend_head];
        if (p->lane != CONSUMED) {
            g->lane_pending[p->lane]--;
            g->pend_total--;
        }
        g->pend_head = (g->pend_head + 1) % g->pend_cap;
        g->pend_n--;
    }
    pend_t *p = &g->pend[(g->pend_head + g->pend_n) % g->pend_cap];
    p->lane = lane;
    p->sid_hash = sid_hash;
    p->pushed_ns = now;
    p->expiry_ns = now + VB_INGRESS_PENDING_MS * VB_NS_PER_MS;
    g->pend_n++;
    g->lane_pending[lane]++;
    g->pend_total++;
    atomic_store_explicit(&g->pending_shared, g->pend_total,
                          memory_order_relaxed);
    return p;
}

/* The oldest call answered on `lane` has its stream now. */
static void pend_consume(vb_ingress_t *g, uint32_t lane)
{
    for (uint32_t i = 0; i < g->pend_n; i++) {
        pend_t *p = &g->pend[(g->pend_head + i) % g->pend_cap];
        if (p->lane == lane) {
            p->lane = CONSUMED;
            g->lane_consumed_ns[lane] = vb_clock_now_ns();
            g->lane_pending[lane]--;
            g->pend_total--;
            atomic_store_explicit(&g->pending_shared, g->pend_total,
                                  memory_order_relaxed);
            return;
        }
    }
}

static uint64_t sid_hash(const char *sid)
{
    return vb_hash_fnv1a64(sid, strlen(sid));
}

/* The call is over before its stream came: its pending entry, if no
 * stream took it yet, frees its capacity now, and is reported with Twilio's
 * final `status` (NULL: never answered, no report). Returns whether it
 * did. (A
 * stream takes the oldest entry of its lane, whichever call's: then this
 * call's slot goes at the expiry, never early.) */
static bool pend_forget(vb_ingress_t *g, uint64_t h, const char *status)
{
    for (uint32_t i = 0; i < g->pend_n; i++) {
        pend_t *p = &g->pend[(g->pend_head + i) % g->pend_cap];
        if (p->lane != CONSUMED && p->sid_hash == h) {
            if (status != NULL)
                report_unstreamed(g, p, status);
            g->lane_pending[p->lane]--;
            g->pend_total--;
            p->lane = CONSUMED;
            atomic_store_explicit(&g->pending_shared, g->pend_total,
                                  memory_order_relaxed);
            return true;
        }
    }
    return false;
}

/* The answer already given to this CallSid, while its token is valid. */
static struct answered *answered_find(vb_ingress_t *g, const char *sid,
                                      int64_t now_s)
{
    uint64_t h = sid_hash(sid);
    struct answered *a = &g->ans[h % g->ans_cap];
    return a->hash == h && a->expiry_s > now_s ? a : NULL;
}

static void answered_put(vb_ingress_t *g, const char *sid, uint32_t lane,
                         int64_t expiry_s)
{
    uint64_t h = sid_hash(sid);
    g->ans[h % g->ans_cap] =
        (struct answered){.hash = h, .expiry_s = expiry_s, .lane = lane};
}

/* The answer to `sid` never reached Twilio: a repeat is a new call. */
static void answered_forget(vb_ingress_t *g, const char *sid)
{
    uint64_t h = sid_hash(sid);
    struct answered *a = &g->ans[h % g->ans_cap];
    if (a->hash == h)
        memset(a, 0, sizeof(*a));
}

static int64_t lane_load(const vb_ingress_t *g, uint32_t lane)
{
    return vb_ingress_lane_calls(g, lane) + g->lane_pending[lane];
}

/* Fewest active + pending calls; ties rotate so lanes fill evenly. */
static uint32_t least_loaded(vb_ingress_t *g)
{
    uint32_t best = g->rr % g->nlanes;
    int64_t best_load = lane_load(g, best);
    for (uint32_t k = 1; k < g->nlanes; k++) {
        uint32_t l = (g->rr + k) % g->nlanes;
        int64_t load = lane_load(g, l);
        if (load < best_load) {
            best = l;
            best_load = load;
        }
    }
    g->rr++;
    return best;
}

static int64_t total_load(vb_ingress_t *g)
{
    return vb_ingress_calls_active(g) + g->pend_total;
}

/* ---------------------------------------------------------------------- */
/* metrics                                                                */

static int code_index(int status)
{
    for (size_t i = 0; i < NCODES; i++)
        if (codes[i] == status)
            return (int)i;
    return code_index(500);
}

static int reg_request_series(vb_ingress_t *g, int route, int ci)
{
    if (g->req_reg[route][ci])
        return 0;
    char code[8];
    snprintf(code, sizeof(code), "%d", codes[ci]);
    int rc =
        vb_metrics_add(g->m, VB_METRIC_COUNTER, "vb_http_requests_total",
                       "HTTP requests answered, by route and status code.",
                       VB_LABELS("route", route_names[route], "code", code),
                       &g->req_id[route][ci]);
    if (rc == 0)
        g->req_reg[route][ci] = true;
    return rc;
}

static void count_request(vb_ingress_t *g, int route, int status,
                          uint64_t t_start)
{
    int ci = code_index(status);
    if (reg_request_series(g, route, ci) == 0)
        vb_metrics_counter_add(g->shard, g->req_id[route][ci], 1);
    uint64_t now = vb_clock_now_ns();
    vb_metrics_observe_ns(g->shard, g->dur[route],
                          now > t_start ? now - t_start : 0);
}

static int register_metrics(vb_ingress_t *g)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < VB_AURL_COUNT; i++)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_assistant_requests_total",
            "call.incoming requests to --assistant-url, by outcome "
            "(timeout, error and invalid fall back to the number's "
            "assistant).",
            VB_LABELS("outcome", vb_assistant_url_outcome(i)),
            &g->asst_outcome[i]);
    /* The series every deployment sees, so they exist at 0 from start. */
    static const struct {
        int route, code;
    } initial[] = {{R_VOICE, 200},   {R_STATUS, 204}, {R_STREAM, 101},
                   {R_HEALTHZ, 200}, {R_READYZ, 200}, {R_READYZ, 503},
                   {R_METRICS, 200}, {R_SYSTEM, 200}, {R_OTHER, 404},
                   {R_VOICE, 403}};
    for (size_t i = 0; rc == 0 && i < sizeof(initial) / sizeof(initial[0]); i++)
        rc = reg_request_series(g, initial[i].route,
                                code_index(initial[i].code));
    for (int r = 0; rc == 0 && r < R_COUNT; r++)
        rc = vb_metrics_add(
            g->m, VB_METRIC_HISTOGRAM, "vb_http_request_duration_seconds",
            "Time from a request's first byte to its response, by route.",
            VB_LABELS("route", route_names[r]), &g->dur[r]);
    for (int r = 0; rc == 0 && r < 5; r++)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_twilio_signature_failures_total",
            "Requests refused for a missing or wrong X-Twilio-Signature.",
            VB_LABELS("route", route_names[r]), &g->sigfail[r]);
    if (rc == 0)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_twilio_stream_unsigned_total",
            "Stream upgrades accepted without an X-Twilio-Signature (the "
            "stream token decides; --stream-require-signature refuses "
            "them).",
            NULL, &g->stream_unsigned);
    for (size_t i = 0; rc == 0 && i < NSTATUSES; i++)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_twilio_call_status_total",
            "Call-status callbacks received, by CallStatus.",
            VB_LABELS("status", call_statuses[i]), &g->status_id[i]);
    if (rc == 0)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_calls_rejected_total",
            "Calls refused (<Reject reason=\"busy\"/> or the busy "
            "message), by reason.",
            VB_LABELS("reason", "busy"), &g->rejected_busy);
    if (rc == 0)
        rc =
            vb_metrics_add(g->m, VB_METRIC_COUNTER, "vb_calls_unstreamed_total",
                           "Calls answered here whose final status callback "
                           "came before their stream: capacity and the "
                           "pre-connected Gemini session freed at once.",
                           NULL, &g->unstreamed);
    for (size_t i = 0; rc == 0 && i < NSTREAM_EVENTS; i++)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_twilio_stream_events_total",
            "<Stream statusCallback> events from Twilio, by "
            "StreamEvent (stream-error logs StreamError).",
            VB_LABELS("event", stream_events[i]), &g->stream_event[i]);
    static const char *const ea_names[2] = {"hangup", "fallback"};
    for (int i = 0; rc == 0 && i < 2; i++)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_stream_ended_answers_total",
            "<Connect action> requests answered, by answer: "
            "hangup (the end was intended here) or fallback "
            "(--fallback-say: a failure, or a call whose "
            "stream did not run here).",
            VB_LABELS("answer", ea_names[i]), &g->ended_answer[i]);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_COUNTER, "vb_webhook_replays_total",
                            "Voice webhooks for a CallSid already answered "
                            "(retried or replayed): the same answer again, "
                            "no new capacity.",
                            NULL, &g->replays);
    if (rc == 0)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_calls_rejected_total",
            "Calls refused (<Reject reason=\"busy\"/> or the busy "
            "message), by reason.",
            VB_LABELS("reason", "draining"), &g->rejected_draining);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_GAUGE, "vb_ready",
                            "1 while /readyz answers 200 (not draining, "
                            "below --max-calls).",
                            NULL, &g->g_ready);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_GAUGE, "vb_draining",
                            "1 from SIGTERM until the process exits.", NULL,
                            &g->g_draining);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_GAUGE, "vb_gemini_ready",
                            "0 while Gemini rejects this configuration "
                            "(auth or setup; /readyz 503 \"gemini\"), else "
                            "1.",
                            NULL, &g->g_gemini_ready);
    static const char *const rr_names[2] = {"instance", "lane"};
    for (int i = 0; rc == 0 && i < 2; i++)
        rc =
            vb_metrics_add(g->m, VB_METRIC_COUNTER, "vb_streams_rerouted_total",
                           "Media streams served here although their URL "
                           "names another instance (a fresh Gemini "
                           "session) or a lane this process lacks.",
                           VB_LABELS("reason", rr_names[i]), &g->rerouted[i]);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_GAUGE, "vb_max_calls",
                            "--max-calls: the capacity vb_calls_active is "
                            "measured against.",
                            NULL, &g->g_max_calls);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_GAUGE, "vb_insecure_mode",
                            "1 when Twilio signatures are not verified "
                            "(TWILIO_AUTH_TOKEN unset).",
                            NULL, &g->insecure);
    for (int i = 0; rc == 0 && i < H_COUNT; i++)
        rc = vb_metrics_add(g->m, VB_METRIC_COUNTER, "vb_stream_handoffs_total",
                            "Media stream upgrades handed to a lane, or "
                            "refused/failed, by result.",
                            VB_LABELS("result", handoff_names[i]),
                            &g->handoff[i]);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_COUNTER,
                            "vb_http_accept_paused_total",
                            "Times accepting paused because accept failed "
                            "for lack of file descriptors or memory.",
                            NULL, &g->conn_event[VB_HTTP_EV_ACCEPT_PAUSED]);
    if (rc == 0)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_http_connections_refused_total",
            "HTTP connections answered 503 and closed at accept, by limit.",
            VB_LABELS("reason", "max_connections"),
            &g->conn_event[VB_HTTP_EV_REFUSED_MAX_CONNS]);
    if (rc == 0)
        rc = vb_metrics_add(
            g->m, VB_METRIC_COUNTER, "vb_http_connections_refused_total",
            "HTTP connections answered 503 and closed at accept, by limit.",
            VB_LABELS("reason", "per_peer"),
            &g->conn_event[VB_HTTP_EV_REFUSED_PER_PEER]);
    if (rc == 0)
        rc = vb_metrics_add(g->m, VB_METRIC_COUNTER,
                            "vb_http_connections_evicted_total",
                            "HTTP connections of the busiest peer closed to "
                            "admit another peer at --max-connections.",
                            NULL, &g->conn_event[VB_HTTP_EV_EVICTED]);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* request helpers                                                        */

static void set_text(vb_http_resp_t *resp, int status, const char *text)
{
    resp->status = status;
    resp->content_type = "text/plain; charset=utf-8";
    resp->body = text;
    resp->body_len = strlen(text);
}

static bool path_is(const vb_http_req_t *req, const char *path)
{
    size_t n = strlen(path);
    return req->path_len == n && memcmp(req->target, path, n) == 0;
}

/* The path, or the path and a trailing '/' (a webhook URL configured
 * either way reaches the same route). */
static bool path_is_or_slash(const vb_http_req_t *req, const char *path)
{
    size_t n = strlen(path);
    return path_is(req, path) ||
           (req->path_len == n + 1 && memcmp(req->target, path, n) == 0 &&
            req->target[n] == '/');
}

static bool seg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* Parses up to 5 digits; -1 when `p` (n bytes) is not a lane number. */
static long lane_number(const char *p, size_t n)
{
    if (n == 0 || n > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* Stream path, optionally followed by "/<lane>", "/<instance>/<lane>" (or
 * a bare "/"). Sets *lane to the lane number or -1, and *inst to
 * INST_NONE, INST_OURS or INST_OTHER. */
static bool stream_path_match(const vb_ingress_t *g, const vb_http_req_t *req,
                              long *lane, int *inst)
{
    const char *sp = g->cfg->stream_path;
    size_t n = strlen(sp);
    *lane = -1;
    *inst = INST_NONE;
    if (req->path_len < n || memcmp(req->target, sp, n) != 0)
        return false;
    if (req->path_len == n)
        return true;
    if (req->target[n] != '/')
        return false;
    const char *rest = req->target + n + 1;
    size_t left = req->path_len - n - 1;
    if (left == 0)
        return true;
    const char *slash = memchr(rest, '/', left);
    if (slash == NULL) {
        *lane = lane_number(rest, left);
        return *lane >= 0;
    }
    size_t il = (size_t)(slash - rest);
    if (il == 0 || il >= sizeof(g->instance))
        return false;
    for (size_t i = 0; i < il; i++)
        if (!seg_char(rest[i]))
            return false;
    *lane = lane_number(slash + 1, left - il - 1);
    if (*lane < 0)
        return false;
    *inst = strlen(g->instance) == il && memcmp(rest, g->instance, il) == 0
                ? INST_OURS
                : INST_OTHER;
    return true;
}

/* --webhook-path + "/stream-ended/<instance>" (any instance: *inst says
 * whether it is this one), the <Connect action> of the TwiML. */
static bool ended_path_match(const vb_ingress_t *g, const vb_http_req_t *req,
                             int *inst)
{
    const char *wp = g->cfg->webhook_path;
    size_t n = strlen(wp), m = strlen(ENDED_SEG);
    if (req->path_len <= n + m || memcmp(req->target, wp, n) != 0 ||
        memcmp(req->target + n, ENDED_SEG, m) != 0)
        return false;
    const char *rest = req->target + n + m;
    size_t left = req->path_len - n - m;
    if (left > 0 && rest[left - 1] == '/')
        left--;
    if (left == 0 || left >= sizeof(g->instance))
        return false;
    for (size_t i = 0; i < left; i++)
        if (!seg_char(rest[i]))
            return false;
    *inst = strlen(g->instance) == left && memcmp(rest, g->instance, left) == 0
                ? INST_OURS
                : INST_OTHER;
    return true;
}

/* --status-path + "/stream": the <Stream statusCallback>. */
static bool stream_status_path_match(const vb_ingress_t *g,
                                     const vb_http_req_t *req)
{
    const char *sp = g->cfg->status_path;
    size_t n = strlen(sp), m = strlen(STREAM_STATUS_SEG);
    size_t len = req->path_len;
    if (len == n + m + 1 && req->target[len - 1] == '/')
        len--;
    return len == n + m && memcmp(req->target, sp, n) == 0 &&
           memcmp(req->target + n, STREAM_STATUS_SEG, m) == 0;
}

static int match_route(const vb_ingress_t *g, const vb_http_req_t *req,
                       long *lane, int *inst)
{
    bool admin = req->listener == LISTENER_ADMIN;
    /* Private by default: on the admin listener, and on the public one
     * only when the operator asks for it. */
    bool adminish = admin || g->cfg->admin_on_public;
    *lane = -1;
    *inst = INST_NONE;
    if (path_is(req, "/healthz"))
        return R_HEALTHZ;
    if (path_is(req, "/readyz"))
        return R_READYZ;
    if (path_is(req, "/metrics"))
        return adminish ? R_METRICS : R_OTHER;
    if (path_is(req, "/test/system"))
        return adminish ? R_SYSTEM : R_OTHER;
    if (path_is(req, "/test/audio"))
        return adminish && g->test_audio != NULL ? R_AUDIO : R_OTHER;
    if (path_is(req, "/v1/calls"))
        return adminish && vb_outbound_enabled(g->outbound) ? R_CALLS : R_OTHER;
    if (admin && g->admin_split)
        return R_OTHER;
    if (path_is_or_slash(req, g->cfg->webhook_path))
        return R_VOICE;
    if (path_is_or_slash(req, g->cfg->status_path))
        return R_STATUS;
    if (ended_path_match(g, req, inst))
        return R_ENDED;
    if (stream_status_path_match(g, req))
        return R_STREAM_STATUS;
    if (stream_path_match(g, req, lane, inst))
        return R_STREAM;
    return R_OTHER;
}

static bool method_in(const vb_http_req_t *req, int a, int b)
{
    return req->method == a || req->method == b;
}

static void method_not_allowed(vb_http_resp_t *resp, const char *allow)
{
    set_text(resp, 405, "method not allowed\n");
    vb_http_resp_header(resp, "Allow", allow);
}

/* Client address for logs: X-Forwarded-For's first hop when trusted. */
static void client_addr(const vb_ingress_t *g, const vb_http_req_t *req,
                        char *out, size_t n)
{
    const char *xff =
        g->cfg->trust_proxy ? vb_http_req_header(req, "X-Forwarded-For") : NULL;
    if (xff != NULL && *xff) {
        while (*xff == ' ')
            xff++;
        size_t len = strcspn(xff, ", ");
        if (len >= n)
            len = n - 1;
        memcpy(out, xff, len);
        out[len] = '\0';
        return;
    }
    snprintf(out, n, "%s", req->peer);
}

/* A CallSid fit for logs and tokens: 1..63 ASCII letters and digits. */
static bool sid_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= sizeof(((vb_msg_prepare_t *)0)->call_sid))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]))
            return false;
    return true;
}

/* Decodes the request's parameters: the form body of a POST, the query of
 * a GET. Signed parameters are the POST body's only (spec §5.1). */
static int read_params(const vb_http_req_t *req, vb_form_t *f,
                       vb_http_resp_t *resp, bool *posted)
{
    *posted = req->method == HTTP_POST;
    int rc;
    if (*posted) {
        const char *ct = vb_http_req_header(req, "Content-Type");
        if (ct != NULL &&
            strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0) {
            set_text(resp, 415, "expected application/x-www-form-urlencoded\n");
            return VB_EPROTO;
        }
        rc = vb_form_parse(f, req->body, req->body_len, 0);
    } else {
        const char *q = req->query ? req->query : "";
        rc = vb_form_parse(f, q, strlen(q), 0);
    }
    if (rc != 0) {
        set_text(resp, 400,
                 rc == VB_EMSGSIZE ? "too many parameters\n"
                                   : "cannot decode parameters\n");
        return rc;
    }
    return 0;
}

/* The key and algorithm a webhook was signed with: the Auth Token and
 * HMAC-SHA1, unless X-Twilio-Webhooks-Signature-Settings names a SharedKey
 * and its algorithm. Returns the number of keys in keys[] (0: none fits;
 * *why says so), or -1 for an algorithm not implemented. */
static int signing_keys(const vb_ingress_t *g, const vb_http_req_t *req,
                        const char **keys, int *alg, const char **why)
{
    const char *settings =
        vb_http_req_header(req, VB_TWILIO_SIG_SETTINGS_HEADER);
    *alg = VB_TWILIO_SIG_HMAC_SHA1;
    if (settings == NULL) {
        keys[0] = g->cfg->twilio_auth_token;
        return 1;
    }
    char sid[64];
    if (vb_twilio_sig_settings_parse(settings, sid, sizeof sid, alg) != 0) {
        *why = "unsupported signature settings";
        return -1;
    }
    int n = 0;
    for (size_t i = 0; i < g->n_shared; i++)
        if (*g->shared[i].sid == '\0' || strcmp(g->shared[i].sid, sid) == 0)
            keys[n++] = g->shared[i].secret;
    if (n == 0)
        *why = g->n_shared == 0 ? "shared key not configured"
                                : "unknown shared key";
    return n;
}

/* Verifies X-Twilio-Signature of a webhook; answers 403 when it fails. */
static bool check_signature(vb_ingress_t *g, int route,
                            const vb_http_req_t *req, const vb_form_t *f,
                            bool posted, vb_http_resp_t *resp, const char *call,
                            const char *client)
{
    if (!g->verify)
        return true;
    const char *sig = vb_http_req_header(req, "X-Twilio-Signature");
    const char *keys[VB_INGRESS_MAX_SHARED_KEYS];
    const char *why = sig == NULL ? "missing" : "mismatch";
    int alg;
    int nk = sig == NULL ? 0 : signing_keys(g, req, keys, &alg, &why);
    char *urls[VB_INGRESS_MAX_ALIASES + 1];
    size_t nu = 0;
    int rc = VB_EAUTH;
    for (size_t i = 0; nk > 0 && i < g->n_sig_base; i++) {
        urls[nu] = malloc(strlen(g->sig_base[i]) + req->target_len + 1);
        if (urls[nu] == NULL)
            break;
        sprintf(urls[nu], "%s%s", g->sig_base[i], req->target);
        nu++;
    }
    if (nk > 0 && nu < g->n_sig_base) {
        rc = VB_ENOMEM;
    } else {
        for (int k = 0; k < nk && rc != 0; k++)
            rc = vb_twilio_sig_verify_urls(
                alg, keys[k], (const char *const *)urls, nu, posted ? f : NULL,
                sig, strlen(sig),
                VB_TWILIO_SIG_PORT_VARIANTS | VB_TWILIO_SIG_QUERY_VARIANTS);
    }
    for (size_t i = 0; i < nu; i++)
        free(urls[i]);
    if (rc == 0)
        return true;
    if (rc == VB_ENOMEM) {
        set_text(resp, 500, "out of memory\n");
        return false;
    }
    vb_metrics_counter_add(g->shard, g->sigfail[route], 1);
    VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call, "twilio signature rejected",
                       "route=%s reason=%s client=%s", route_names[route], why,
                       client);
    set_text(resp, 403, "invalid X-Twilio-Signature\n");
    return false;
}

/* ---------------------------------------------------------------------- */
/* routes                                                                 */

static void busy_twiml(vb_ingress_t *g, vb_http_resp_t *resp)
{
    vb_twiml_t t;
    vb_twiml_init(&t);
    if (strcmp(g->cfg->busy_answer, "say") == 0) {
        vb_twiml_say(&t, g->cfg->busy_say);
        vb_twiml_hangup(&t);
    } else {
        /* Not answered: the caller hears a busy tone, nothing is billed. */
        vb_twiml_reject(&t, "busy");
    }
    size_t len;
    if (vb_twiml_finish(&t, &resp->body_owned, &len) != 0) {
        set_text(resp, 500, "out of memory\n");
        return;
    }
    resp->status = 200;
    resp->content_type = "text/xml";
    resp->body_len = len;
}

/* ws(s)://host of the stream URL: from --public-url, else (local setups
 * without one) from the Host header. */
static void stream_base(vb_ingress_t *g, const vb_http_req_t *req, char *out,
                        size_t n)
{
    if (g->stream_base != NULL) {
        snprintf(out, n, "%s", g->stream_base);
        return;
    }
    const char *host = NULL, *proto = NULL;
    if (g->cfg->trust_proxy) {
        host = vb_http_req_header(req, "X-Forwarded-Host");
        proto = vb_http_req_header(req, "X-Forwarded-Proto");
    }
    if (host == NULL)
        host = vb_http_req_header(req, "Host");
    bool tls = proto != NULL && strcasecmp(proto, "https") == 0;
    const char *fwd = vb_http_req_header(req, "X-Forwarded-Proto");
    if (!g->cfg->trust_proxy && fwd != NULL && strcasecmp(fwd, "https") == 0)
        VB_LOG_RATELIMITED(VB_LOG_WARN, 60000, NULL,
                           "webhook came through a TLS proxy but "
                           "--trust-proxy is off: the stream URL is ws://, "
                           "which Twilio cannot stream to; set --public-url "
                           "or --trust-proxy",
                           "host=%.200s", host ? host : "-");
    snprintf(out, n, "%s://%s", tls ? "wss" : "ws",
             host && *host ? host : "localhost");
}

/* http(s)://host of the <Connect action> URL: --public-url, else the
 * Host header (as stream_base()). */
static void action_base(vb_ingress_t *g, const vb_http_req_t *req, char *out,
                        size_t n)
{
    if (g->public_base != NULL) {
        snprintf(out, n, "%s", g->public_base);
        return;
    }
    char ws[512];
    stream_base(g, req, ws, sizeof(ws));
    bool tls = strncmp(ws, "wss://", 6) == 0;
    snprintf(out, n, "%s://%.400s", tls ? "https" : "http", ws + (tls ? 6 : 5));
}

/* Hands the call's context (owned from here on) to the lane's gemini
 * stage with the PREPARE. */
static void push_prepare(vb_ingress_t *g, uint32_t lane, const char *sid,
                         int64_t expiry, uint64_t t_start, vb_call_ctx_t *ctx)
{
    vb_ingress_lane_t *l = g->lanes ? &g->lanes[lane] : NULL;
    if (l == NULL || l->prepare == NULL) {
        vb_call_ctx_destroy(ctx);
        return;
    }
    vb_msg_t *m = vb_chan_begin(l->prepare, VB_MSG_PREPARE, 0,
                                (vb_call_id_t){0, 0}, 0, t_start);
    if (m == NULL) {
        /* Only an optimisation: the stream opens its session at start,
         * with the assistant its parameters name. */
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, sid, "prepare ring full",
                           "lane=%u", lane);
        vb_call_ctx_destroy(ctx);
        return;
    }
    vb_msg_prepare_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.call_sid, sizeof(p.call_sid), "%s", sid);
    p.lane = lane;
    p.expiry_s = expiry;
    p.ctx = ctx;
    m->len = sizeof(p);
    memcpy(m->data, &p, sizeof(p));
    vb_chan_end(l->prepare, m);
}

/* The call ended before its stream came: the lane's gemini stage drops
 * the session it pre-connected for it. */
static void push_cancel(vb_ingress_t *g, uint32_t lane, const char *sid)
{
    vb_ingress_lane_t *l = g->lanes ? &g->lanes[lane] : NULL;
    if (l == NULL || l->prepare == NULL)
        return;
    vb_msg_t *m =
        vb_chan_begin(l->prepare, VB_MSG_PREPARE, VB_MSG_PREPARE_CANCEL,
                      (vb_call_id_t){0, 0}, 0, vb_clock_now_ns());
    if (m == NULL) {
        /* The session still goes at its TTL. */
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, sid, "prepare ring full",
                           "lane=%u cancel=1", lane);
        return;
    }
    vb_msg_prepare_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.call_sid, sizeof(p.call_sid), "%s", sid);
    p.lane = lane;
    m->len = sizeof(p);
    memcpy(m->data, &p, sizeof(p));
    vb_chan_end(l->prepare, m);
}

/* What the TwiML and the PREPARE of one answered call need. */
typedef struct call_info {
    char call[64], account[64], from[64], to[64], direction[32];
    char client[64];
    char url[1024];
    char action[1024];
    char stream_cb[1024];
    char token[VB_TWILIO_TOKEN_LEN + 1];
    uint32_t lane;
    int64_t expiry;
    uint64_t t_start;
} call_info_t;

/* What the report of a call without its stream says about it. */
static void pend_describe(pend_t *p, const call_info_t *ci,
                          const vb_assistant_t *asst)
{
    memset(&p->ids, 0, sizeof(p->ids));
    snprintf(p->ids.call_sid, sizeof(p->ids.call_sid), "%s", ci->call);
    snprintf(p->ids.account_sid, sizeof(p->ids.account_sid), "%s", ci->account);
    snprintf(p->ids.from, sizeof(p->ids.from), "%.31s", ci->from);
    snprintf(p->ids.to, sizeof(p->ids.to), "%.31s", ci->to);
    snprintf(p->ids.assistant, sizeof(p->ids.assistant), "%.63s",
             asst != NULL ? asst->name : "");
    snprintf(p->direction, sizeof(p->direction), "%s",
             ci->direction[0] ? ci->direction : "inbound");
    p->answered_unix_ms = (int64_t)(vb_clock_wall_s() * 1000.0);
}

/* The TwiML connecting the stream, its parameters naming `aname` (NULL:
 * none) under the assistant MAC, marked `from_url` when an --assistant-url
 * answer was built on it. Returns 0, or -1 with a 500 in `resp`. */
static int twiml_for(vb_ingress_t *g, const call_info_t *ci, const char *aname,
                     bool from_url, vb_http_resp_t *resp)
{
    char amac[VB_TWILIO_ASSISTANT_MAC_LEN + 1] = "";
    if (aname != NULL && (from_url ? vb_twilio_sig_assistant_url_mac
                                   : vb_twilio_sig_assistant_mac)(
                             g->key, ci->call, ci->token, aname, amac) != 0)
        aname = NULL;
    /* The mark, and the Direction the repeated call.incoming carries. */
    size_t np = aname == NULL ? 4 : from_url ? 8 : 6;
    vb_twiml_param_t params[] = {
        {VB_TWILIO_TOKEN_PARAM, ci->token},
        {"CallSid", ci->call},
        {"From", ci->from[0] ? ci->from : NULL},
        {"To", ci->to[0] ? ci->to : NULL},
        {VB_TWILIO_ASSISTANT_PARAM, aname},
        {VB_TWILIO_ASSISTANT_MAC_PARAM, amac},
        {VB_TWILIO_ASSISTANT_FROM_PARAM, VB_TWILIO_ASSISTANT_FROM_URL},
        {"Direction", ci->direction[0] ? ci->direction : NULL},
    };
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_say(&t, g->cfg->say);
    /* Twilio requests the action when the stream ends and runs what it
     * answers; the verbs after </Connect> would never run. */
    vb_twiml_connect_stream_cb(&t, ci->url, ci->action, ci->stream_cb, params,
                               np);
    size_t len;
    if (vb_twiml_finish(&t, &resp->body_owned, &len) != 0) {
        set_text(resp, 500, "out of memory\n");
        return -1;
    }
    resp->status = 200;
    resp->content_type = "text/xml";
    resp->body_len = len;
    return 0;
}

/* The assistant is known: the gemini stage pre-connects with it. */
static void call_prepare(vb_ingress_t *g, const call_info_t *ci,
                         const vb_assistant_t *asst, bool listed,
                         const char *source)
{
    vb_call_ctx_t *ctx = NULL;
    if (asst != NULL &&
        (ctx = vb_call_ctx_create(ci->call, ci->account, ci->from, ci->to,
                                  ci->direction, asst)) == NULL)
        vb_log_warn(ci->call,
                    "out of memory for the call context: the stream "
                    "brings the assistant",
                    NULL);
    push_prepare(g, ci->lane, ci->call, ci->expiry, ci->t_start, ctx);
    vb_log_info(ci->call, "call answered",
                "lane=%u client=%s assistant=%s listed=%d source=%s", ci->lane,
                ci->client, asst ? asst->name : "-", listed, source);
}

/* ---- --assistant-url ---- */

typedef struct asst_req {
    vb_ingress_t *g;
    void *conn; /* the webhook's connection, answered when this ends */
    vb_assistant_url_req_t *h;
    call_info_t ci;
    vb_assistants_t *set;         /* a reference */
    const vb_assistant_t *number; /* the number's, from `set` */
    bool listed;
} asst_req_t;

static void asst_req_free(asst_req_t *r)
{
    vb_assistants_unref(r->set);
    free(r);
}

/* The assistant request ended: answers the deferred webhook with
 * `chosen` (a reference, or NULL: the number's assistant) and starts the
 * pre-connect with it. */
static void asst_done(void *ud, int outcome, vb_assistant_t *chosen,
                      const char *why)
{
    asst_req_t *r = ud;
    vb_ingress_t *g = r->g;
    r->h = NULL;
    const vb_assistant_t *a = chosen != NULL ? chosen : r->number;
    double ms = (double)(vb_clock_now_ns() - r->ci.t_start) / 1e6;
    vb_metrics_counter_add(g->shard, g->asst_outcome[outcome], 1);
    if (outcome >= VB_AURL_TIMEOUT)
        vb_log_warn(r->ci.call,
                    "assistant request failed: the number's assistant "
                    "answers",
                    "outcome=%s why=%s assistant=%s webhook_ms=%.1f",
                    vb_assistant_url_outcome(outcome), why, a->name, ms);
    else
        vb_log_info(r->ci.call, "assistant request answered",
                    "outcome=%s assistant=%s webhook_ms=%.1f",
                    vb_assistant_url_outcome(outcome), a->name, ms);
    vb_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = 500;
    /* The stream names the assistant the answer was built on, marked when
     * the answer chose it: an instance that did not answer this webhook
     * asks --assistant-url again (docs/assistants.md). */
    twiml_for(g, &r->ci, a->name, outcome == VB_AURL_ASSISTANT, &resp);
    count_request(g, R_VOICE, resp.status, r->ci.t_start);
    if (vb_http_server_answer(r->conn, &resp) == 0) {
        call_prepare(g, &r->ci, a, r->listed,
                     outcome < VB_AURL_TIMEOUT ? "assistant_url" : "number");
    } else {
        /* The connection went first (closed, timed out): Twilio has no
         * TwiML for this call, so it holds no capacity here. */
        vb_log_warn(r->ci.call,
                    "voice webhook connection gone before its answer", NULL);
        pend_forget(g, sid_hash(r->ci.call), NULL);
        answered_forget(g, r->ci.call);
    }
    vb_assistant_unref(chosen);
    asst_req_free(r);
}

/* Starts the call.incoming request and defers the webhook's answer.
 * Returns 0 (the request holds a reference on `set`), or -1: answer at
 * once with the number's assistant. */
static int asst_request(vb_ingress_t *g, const vb_http_req_t *req,
                        vb_http_resp_t *resp, const call_info_t *ci,
                        vb_assistants_t *set, const vb_assistant_t *number,
                        bool listed)
{
    if (req->conn == NULL)
        return -1;
    asst_req_t *r = calloc(1, sizeof(*r));
    vb_call_ctx_t *ctx = vb_call_ctx_create(ci->call, ci->account, ci->from,
                                            ci->to, ci->direction, NULL);
    int rc = VB_ENOMEM;
    if (r != NULL && ctx != NULL) {
        r->g = g;
        r->conn = req->conn;
        r->ci = *ci;
        r->set = vb_assistants_ref(set);
        r->number = number;
        r->listed = listed;
        rc = vb_assistant_url_request(g->aurl, ctx, set, number, asst_done, r,
                                      &r->h);
    }
    vb_call_ctx_destroy(ctx);
    if (rc != 0) {
        vb_metrics_counter_add(g->shard, g->asst_outcome[VB_AURL_ERROR], 1);
        vb_log_warn(ci->call,
                    "assistant request not sent: the number's assistant "
                    "answers",
                    "err=%s", vb_err_name(rc));
        if (r != NULL)
            asst_req_free(r);
        return -1;
    }
    resp->defer = true;
    resp->defer_arg = r;
    return 0;
}

/* The webhook's connection closed before the answer: nobody waits. */
static void on_abandon(void *ud, void *arg)
{
    vb_ingress_t *g = ud;
    asst_req_t *r = arg;
    if (r == NULL || vb_outbound_abandon(g->outbound, arg))
        return;
    /* After stop the requester is gone, and its requests with it. */
    if (g->aurl != NULL)
        vb_assistant_url_cancel(r->h);
    vb_log_warn(r->ci.call,
                "voice webhook connection closed while the assistant "
                "request was pending",
                NULL);
    pend_forget(g, sid_hash(r->ci.call), NULL);
    answered_forget(g, r->ci.call);
    asst_req_free(r);
}

/* The webhook of an outbound call placed by POST /v1/calls names its
 * assistant and variables in its query (net/outbound.h): returns that
 * assistant (in *own when built for the variables; a reference) instead
 * of the number's `asst`, and sets *outbound. Other webhooks: `asst`. */
static const vb_assistant_t *
outbound_assistant(vb_ingress_t *g, const vb_http_req_t *req, const char *call,
                   const vb_assistants_t *set, const vb_assistant_t *asst,
                   vb_assistant_t **own, bool *outbound)
{
    vb_outbound_call_t oc;
    int rc = vb_outbound_from_query(g->key, req->query, &oc);
    if (rc == VB_ENOENT)
        return asst;
    if (rc != 0) {
        vb_log_warn(call,
                    "outbound call parameters refused: the number's "
                    "assistant answers",
                    "err=%s", vb_err_name(rc));
        return asst;
    }
    *outbound = true;
    const vb_assistant_t *named = oc.assistant[0]
                                      ? vb_assistants_find(set, oc.assistant)
                                      : vb_assistants_default(set);
    if (named == NULL)
        vb_log_warn(call,
                    "outbound call's assistant is gone (reloaded?): the "
                    "number's answers",
                    "assistant=%s", oc.assistant);
    else
        asst = named;
    if (oc.variables != NULL && asst != NULL) {
        char err[256] = "";
        if (vb_assistant_with_variables(asst, oc.variables, own, err,
                                        sizeof err) != 0)
            vb_log_warn(call,
                        "outbound call's variables not applied: the "
                        "assistant's own text answers",
                        "assistant=%s why=%s", asst->name, err);
        else
            asst = *own;
    }
    free(oc.variables);
    return asst;
}

static void route_voice(vb_ingress_t *g, const vb_http_req_t *req,
                        vb_http_resp_t *resp)
{
    if (!method_in(req, HTTP_POST, HTTP_GET)) {
        method_not_allowed(resp, "POST, GET");
        return;
    }
    char client[64];
    client_addr(g, req, client, sizeof(client));
    vb_form_t f = {0};
    vb_assistants_t *set = NULL;
    vb_assistant_t *own = NULL; /* an outbound call's, with its variables */
    bool posted;
    if (read_params(req, &f, resp, &posted) != 0)
        goto out;
    const char *sid = vb_form_get(&f, "CallSid");
    const char *call = sid_ok(sid) ? sid : NULL;
    if (!check_signature(g, R_VOICE, req, &f, posted, resp, call, client))
        goto out;
    if (call == NULL) {
        vb_log_warn(NULL, "voice webhook without a valid CallSid", "client=%s",
                    client);
        set_text(resp, 400, "missing or invalid CallSid\n");
        goto out;
    }
    uint64_t now = vb_clock_now_ns();
    pend_prune(g, now);
    int64_t now_s = (int64_t)vb_clock_wall_s();
    struct answered *prev = answered_find(g, call, now_s);
    if (prev == NULL && atomic_load(&g->drain_phase) == DRAIN_CLOSING) {
        /* Past the grace: a status the proxy retries elsewhere, and the
         * connection closed so it is not reused for the next call. */
        vb_metrics_counter_add(g->shard, g->rejected_draining, 1);
        vb_log_info(call, "call refused", "reason=%s status=%d", "draining",
                    503);
        set_text(resp, 503, "draining: try another instance\n");
        vb_http_resp_header(resp, "Retry-After", "1");
        resp->close = true;
        goto out;
    }
    if (prev == NULL && total_load(g) >= g->cfg->max_calls) {
        vb_metrics_counter_add(g->shard, g->rejected_busy, 1);
        vb_log_info(call, "call refused", "reason=busy calls=%lld max=%lld",
                    (long long)total_load(g), (long long)g->cfg->max_calls);
        busy_twiml(g, resp);
        goto out;
    }
    /* A replay (Twilio retrying, or someone repeating a signed request)
     * gets the first answer: same lane, same token lifetime. */
    uint32_t lane = prev ? prev->lane : least_loaded(g);
    int64_t expiry = prev ? prev->expiry_s : now_s + g->cfg->stream_token_ttl;
    char token[VB_TWILIO_TOKEN_LEN + 1];
    if (vb_twilio_sig_token_create(g->key, call, lane, expiry, token) != 0) {
        set_text(resp, 500, "cannot create stream token\n");
        goto out;
    }
    char base[512], url[1024];
    stream_base(g, req, base, sizeof(base));
    snprintf(url, sizeof(url), "%s%s/%s/%u", base, g->cfg->stream_path,
             g->instance, lane);
    char abase[512];
    action_base(g, req, abase, sizeof(abase));
    /* The called number picks the assistant (or --assistant-url, below);
     * its name travels in the stream's parameters, bound to the call and
     * token by a MAC, so an instance that did not answer this webhook
     * answers with the same one (docs/assistants.md). */
    call_info_t ci;
    memset(&ci, 0, sizeof ci);
    snprintf(ci.call, sizeof ci.call, "%s", call);
    snprintf(ci.account, sizeof ci.account, "%s",
             vb_form_get(&f, "AccountSid") ? vb_form_get(&f, "AccountSid")
                                           : "");
    snprintf(ci.from, sizeof ci.from, "%s",
             vb_form_get(&f, "From") ? vb_form_get(&f, "From") : "");
    snprintf(ci.to, sizeof ci.to, "%s",
             vb_form_get(&f, "To") ? vb_form_get(&f, "To") : "");
    snprintf(ci.direction, sizeof ci.direction, "%s",
             vb_form_get(&f, "Direction") ? vb_form_get(&f, "Direction") : "");
    snprintf(ci.client, sizeof ci.client, "%s", client);
    snprintf(ci.url, sizeof ci.url, "%s", url);
    snprintf(ci.action, sizeof ci.action, "%s%s" ENDED_SEG "%s", abase,
             g->cfg->webhook_path, g->instance);
    snprintf(ci.stream_cb, sizeof ci.stream_cb, "%s%s" STREAM_STATUS_SEG, abase,
             g->cfg->status_path);
    snprintf(ci.token, sizeof ci.token, "%s", token);
    ci.lane = lane;
    ci.expiry = expiry;
    ci.t_start = req->t_start_ns;
    set = vb_assistant_store_get(g->assistants);
    bool matched = false;
    const vb_assistant_t *asst = vb_assistants_for_number(set, ci.to, &matched);
    bool outbound = false;
    asst = outbound_assistant(g, req, call, set, asst, &own, &outbound);
    if (prev == NULL && !outbound && g->aurl != NULL && asst != NULL &&
        asst_request(g, req, resp, &ci, set, asst, matched) == 0) {
        pend_describe(pend_push(g, lane, now, sid_hash(call)), &ci, asst);
        answered_put(g, call, lane, expiry);
        goto out;
    }
    if (twiml_for(g, &ci, asst ? asst->name : NULL, false, resp) != 0)
        goto out;
    if (prev != NULL) {
        vb_metrics_counter_add(g->shard, g->replays, 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call,
                           "voice webhook repeated: same answer, no new "
                           "capacity",
                           "lane=%u client=%s", lane, client);
        goto out;
    }
    pend_describe(pend_push(g, lane, now, sid_hash(call)), &ci, asst);
    answered_put(g, call, lane, expiry);
    call_prepare(g, &ci, asst, matched || outbound,
                 outbound ? "outbound" : "number");
out:
    vb_assistant_unref(own);
    vb_assistants_unref(set);
    vb_form_free(&f);
}

/* The start every Twilio callback shares: POST or GET, its parameters
 * decoded, its CallSid (*call: NULL when absent or invalid) and its
 * signature checked. Returns false when `resp` holds the answer already;
 * `f` is the caller's to free either way. */
static bool callback_begin(vb_ingress_t *g, int route, const vb_http_req_t *req,
                           vb_http_resp_t *resp, vb_form_t *f,
                           const char **call, char *client, size_t client_sz)
{
    *call = NULL;
    client_addr(g, req, client, client_sz);
    if (!method_in(req, HTTP_POST, HTTP_GET)) {
        method_not_allowed(resp, "POST, GET");
        return false;
    }
    bool posted;
    if (read_params(req, f, resp, &posted) != 0)
        return false;
    const char *sid = vb_form_get(f, "CallSid");
    *call = sid_ok(sid) ? sid : NULL;
    return check_signature(g, route, req, f, posted, resp, *call, client);
}

static void route_status(vb_ingress_t *g, const vb_http_req_t *req,
                         vb_http_resp_t *resp)
{
    char client[64];
    vb_form_t f = {0};
    const char *call;
    if (!callback_begin(g, R_STATUS, req, resp, &f, &call, client,
                        sizeof(client)))
        goto out;
    const char *st = vb_form_get(&f, "CallStatus");
    size_t i = 0;
    while (i + 1 < NSTATUSES && (st == NULL || strcmp(st, call_statuses[i])))
        i++;
    vb_metrics_counter_add(g->shard, g->status_id[i], 1);
    const char *seq = vb_form_get(&f, "SequenceNumber");
    const char *dur = vb_form_get(&f, "CallDuration");
    /* The status is logged as sent (bounded), the label as counted. */
    char stbuf[32];
    snprintf(stbuf, sizeof(stbuf), "%s", st ? st : "");
    vb_log_info(call, "call status", "status=%s seq=%.16s duration=%.16s",
                stbuf, seq ? seq : "", dur ? dur : "");
    /* An outbound call's machine-detection result (docs/outbound.md). */
    if (call != NULL)
        vb_outbound_on_status(g->outbound, req, &f);
    /* A final status for a call answered here whose stream never came
     * (the caller hung up during the greeting, the stream URL failed):
     * its capacity and its pre-connected session go now, not at the
     * expiry. */
    bool final = st != NULL &&
                 (strcmp(st, "completed") == 0 || strcmp(st, "canceled") == 0 ||
                  strcmp(st, "failed") == 0 || strcmp(st, "busy") == 0 ||
                  strcmp(st, "no-answer") == 0);
    int64_t now_s = (int64_t)vb_clock_wall_s();
    struct answered *a =
        final && call != NULL ? answered_find(g, call, now_s) : NULL;
    if (a != NULL && ended_get(g, call) < 0 &&
        pend_forget(g, sid_hash(call), stbuf)) {
        vb_metrics_counter_add(g->shard, g->unstreamed, 1);
        vb_log_info(call, "call ended before its stream: capacity freed",
                    "status=%s lane=%u", stbuf, a->lane);
        push_cancel(g, a->lane, call);
    }
    resp->status = 204;
out:
    vb_form_free(&f);
}

/* Twilio's <Connect action> request, once the stream ended: nothing more
 * after an end this instance intended (end_call, a transfer: `<Hangup/>`),
 * the fallback text after any other end, or for a call whose stream did
 * not run here (it never connected, or its instance is gone). */
static void route_ended(vb_ingress_t *g, const vb_http_req_t *req,
                        vb_http_resp_t *resp)
{
    char client[64];
    vb_form_t f = {0};
    const char *call;
    if (!callback_begin(g, R_ENDED, req, resp, &f, &call, client,
                        sizeof(client)))
        goto out;
    if (call == NULL) {
        vb_log_warn(NULL, "stream-ended request without a valid CallSid",
                    "client=%s", client);
        set_text(resp, 400, "missing or invalid CallSid\n");
        goto out;
    }
    int how = ended_get(g, call);
    ended_action_came(g, call);
    vb_twiml_t t;
    vb_twiml_init(&t);
    if (how != 1)
        vb_twiml_say(&t, g->cfg->fallback_say);
    vb_twiml_hangup(&t);
    size_t len;
    if (vb_twiml_finish(&t, &resp->body_owned, &len) != 0) {
        set_text(resp, 500, "out of memory\n");
        goto out;
    }
    resp->status = 200;
    resp->content_type = "text/xml";
    resp->body_len = len;
    vb_metrics_counter_add(g->shard, g->ended_answer[how == 1 ? 0 : 1], 1);
    vb_log_info(call, "stream ended: answering the <Connect> action",
                "answer=%s ended=%s client=%s",
                how == 1 ? "hangup" : "fallback",
                how == 1   ? "intended"
                : how == 0 ? "failure"
                           : "not_here",
                client);
out:
    vb_form_free(&f);
}

/* Twilio's <Stream statusCallback>: the stream's events, logged (an
 * error at warn, with Twilio's StreamError text) and counted. */
static void route_stream_status(vb_ingress_t *g, const vb_http_req_t *req,
                                vb_http_resp_t *resp)
{
    char client[64];
    vb_form_t f = {0};
    const char *call;
    if (!callback_begin(g, R_STREAM_STATUS, req, resp, &f, &call, client,
                        sizeof(client)))
        goto out;
    const char *ev = vb_form_get(&f, "StreamEvent");
    const char *ss = vb_form_get(&f, "StreamSid");
    const char *er = vb_form_get(&f, "StreamError");
    size_t i = 0;
    while (i + 1 < NSTREAM_EVENTS &&
           (ev == NULL || strcmp(ev, stream_events[i]) != 0))
        i++;
    vb_metrics_counter_add(g->shard, g->stream_event[i], 1);
    if (i == 2)
        vb_log_warn(call, "twilio stream error",
                    "stream=%.64s error=\"%.300s\"", ss ? ss : "",
                    er ? er : "");
    else
        vb_log_info(call, "twilio stream event", "event=%.32s stream=%.64s",
                    ev ? ev : "", ss ? ss : "");
    resp->status = 204;
out:
    vb_form_free(&f);
}

static void route_stream(vb_ingress_t *g, const vb_http_req_t *req,
                         vb_http_resp_t *resp, long want_lane, int inst)
{
    if (req->method != HTTP_GET) {
        method_not_allowed(resp, "GET");
        return;
    }
    char client[64];
    client_addr(g, req, client, sizeof(client));
    const char *upgrade = vb_http_req_header(req, "Upgrade");
    const char *conn = vb_http_req_header(req, "Connection");
    const char *ver = vb_http_req_header(req, "Sec-WebSocket-Version");
    const char *key = vb_http_req_header(req, "Sec-WebSocket-Key");
    if (upgrade == NULL || !vb_http_has_token(upgrade, "websocket")) {
        set_text(resp, 426, "WebSocket upgrade required\n");
        vb_http_resp_header(resp, "Upgrade", "websocket");
        resp->close = true;
        return;
    }
    if (conn == NULL || !vb_http_has_token(conn, "upgrade")) {
        set_text(resp, 400, "Connection: Upgrade required\n");
        return;
    }
    if (ver == NULL || strcmp(ver, "13") != 0) {
        set_text(resp, 426, "unsupported WebSocket version\n");
        vb_http_resp_header(resp, "Sec-WebSocket-Version", "13");
        return;
    }
    char accept[VB_WS_ACCEPT_LEN + 1];
    if (vb_ws_accept_key(key, accept, sizeof accept) != 0) {
        set_text(resp, 400, "invalid Sec-WebSocket-Key\n");
        return;
    }
    /* Twilio signs the upgrade over the wss:// URL of the TwiML (spec
     * §5.4), but sources disagree on whether every upgrade carries it, so
     * the stream token in `start` is what authenticates a stream. A
     * signature that does not verify is logged and counted, and refused
     * only with --stream-require-signature (which also refuses none). */
    uint32_t flags = 0;
    const char *sig = vb_http_req_header(req, "X-Twilio-Signature");
    bool require = g->verify && g->cfg->stream_require_signature;
    int sig_rc = sig == NULL ? VB_ENOENT : 0;
    if (g->verify && sig != NULL) {
        char *url = malloc(strlen(g->stream_base) + req->target_len + 1);
        if (url == NULL) {
            set_text(resp, 500, "out of memory\n");
            return;
        }
        sprintf(url, "%s%s", g->stream_base, req->target);
        sig_rc = vb_twilio_sig_verify(
            g->cfg->twilio_auth_token, url, NULL, sig, strlen(sig),
            VB_TWILIO_SIG_PORT_VARIANTS | VB_TWILIO_SIG_SLASH_VARIANTS);
        free(url);
        if (sig_rc != 0) {
            vb_metrics_counter_add(g->shard, g->sigfail[R_STREAM], 1);
            VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                               "twilio signature rejected",
                               "route=stream reason=mismatch client=%s "
                               "action=%s",
                               client, require ? "refused" : "token decides");
        } else {
            flags |= VB_MSG_CONN_SIGNED;
        }
    }
    if (require && sig_rc != 0) {
        if (sig == NULL) {
            vb_metrics_counter_add(g->shard, g->sigfail[R_STREAM], 1);
            VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                               "twilio signature rejected",
                               "route=stream reason=missing client=%s "
                               "action=refused",
                               client);
        }
        set_text(resp, 403, "invalid X-Twilio-Signature\n");
        return;
    }
    if (g->verify && sig == NULL)
        vb_metrics_counter_add(g->shard, g->stream_unsigned, 1);
    if (g->lanes == NULL) {
        vb_metrics_counter_add(g->shard, g->handoff[H_NO_LANES], 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                           "stream refused: no media stream stage", "client=%s",
                           client);
        set_text(resp, 503, "no media stream stage\n");
        return;
    }
    uint32_t lane;
    if (want_lane >= 0 && (uint64_t)want_lane < g->nlanes) {
        lane = (uint32_t)want_lane;
    } else if (want_lane >= 0) {
        /* An instance with more lanes answered the webhook; the stream
         * stage accepts that token on lane % --lanes. */
        lane = (uint32_t)((uint64_t)want_lane % g->nlanes);
        vb_metrics_counter_add(g->shard, g->rerouted[1], 1);
    } else {
        lane = least_loaded(g);
    }
    if (inst == INST_OTHER) {
        vb_metrics_counter_add(g->shard, g->rerouted[0], 1);
        VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL,
                           "stream for another instance served here",
                           "path=%.*s instance=%s client=%s",
                           (int)(req->path_len < 200 ? req->path_len : 200),
                           req->target, g->instance, client);
    }
    vb_ring_t *r = &g->lanes[lane].conn->ring;
    uint32_t used = vb_ring_count(r) + g->lane_inflight[lane];
    if (used >= vb_ring_capacity(r)) {
        vb_metrics_counter_add(g->shard, g->handoff[H_RING_FULL], 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                           "stream refused: lane ring full",
                           "lane=%u client=%s", lane, client);
        set_text(resp, 503, "lane busy\n");
        vb_http_resp_header(resp, "Retry-After", "1");
        return;
    }
    g->lane_inflight[lane]++;
    pend_prune(g, vb_clock_now_ns());
    pend_consume(g, lane);
    resp->status = 101;
    resp->upgrade = true;
    /* Lane and flags ride to on_detach in the pointer itself. */
    resp->detach_arg =
        (void *)(uintptr_t)(((uintptr_t)lane << 8) | flags | 0x80u);
    vb_http_resp_header(resp, "Upgrade", "websocket");
    vb_http_resp_header(resp, "Connection", "Upgrade");
    vb_http_resp_header(resp, "Sec-WebSocket-Accept", accept);
}

static void on_detach(void *ud, int fd, const char *extra, size_t n, void *arg,
                      const char *peer)
{
    vb_ingress_t *g = ud;
    uintptr_t a = (uintptr_t)arg;
    uint32_t lane = (uint32_t)(a >> 8);
    uint32_t flags = (uint32_t)(a & 0x7fu);
    if (g->lanes == NULL || lane >= g->nlanes) {
        if (fd >= 0)
            close(fd);
        return;
    }
    g->lane_inflight[lane]--;
    if (fd < 0) {
        vb_metrics_counter_add(g->shard, g->handoff[H_FAILED], 1);
        vb_log_info(NULL, "stream connection lost before hand-off",
                    "lane=%u peer=%s", lane, peer);
        return;
    }
    vb_ingress_lane_t *l = &g->lanes[lane];
    vb_msg_conn_t c;
    memset(&c, 0, sizeof(c));
    c.fd = fd;
    c.lane = lane;
    c.flags = flags;
    c.extra_len = (uint32_t)n;
    snprintf(c.peer, sizeof(c.peer), "%s", peer);
    if (n > 0 && (c.extra = malloc(n)) == NULL) {
        vb_metrics_counter_add(g->shard, g->handoff[H_FAILED], 1);
        vb_log_error(NULL, "out of memory handing off a stream", "lane=%u",
                     lane);
        close(fd);
        return;
    }
    if (n > 0)
        memcpy(c.extra, extra, n);
    uint64_t now = vb_clock_now_ns();
    vb_msg_t *m =
        vb_chan_begin(l->conn, VB_MSG_CONN, 0, (vb_call_id_t){0, 0}, 0, now);
    if (m == NULL) {
        /* Space was checked before the 101 (in-flight included), so this
         * means a second producer: our invariant is broken. */
        vb_metrics_counter_add(g->shard, g->handoff[H_RING_FULL], 1);
        vb_log_error(NULL, "lane ring full after 101", "lane=%u", lane);
        vb_msg_conn_release(&c);
        return;
    }
    m->len = sizeof(c);
    memcpy(m->data, &c, sizeof(c));
    vb_chan_end(l->conn, m);
    vb_metrics_counter_add(g->shard, g->handoff[H_OK], 1);
    /* Every upgrade, a stranger's too, gets here: at most one line a
     * second, so a flood of upgrades does not flood the log (the handoff
     * counter has them all). */
    VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL, "stream handed off",
                       "lane=%u peer=%s early_bytes=%zu", lane, c.peer, n);
}

static char *system_json(vb_ingress_t *g)
{
    const vb_config_t *c = g->cfg;
    cJSON *root = cJSON_CreateObject();
    cJSON *comp = cJSON_AddObjectToObject(root, "components");
    cJSON *cfg = cJSON_AddObjectToObject(comp, "config");
    cJSON *sig = cJSON_AddObjectToObject(comp, "signatures");
    cJSON *gem = cJSON_AddObjectToObject(comp, "gemini");
    cJSON *lanes = cJSON_AddObjectToObject(comp, "lanes");
    cJSON *calls = cJSON_AddObjectToObject(comp, "calls");
    cJSON *per = cJSON_AddArrayToObject(lanes, "active_calls");
    if (root == NULL || comp == NULL || cfg == NULL || sig == NULL ||
        gem == NULL || lanes == NULL || calls == NULL || per == NULL) {
        cJSON_Delete(root);
        return NULL;
    }
    bool draining = vb_ingress_draining(g);
    int64_t load = total_load(g);
    bool full = load >= c->max_calls;
    bool gm_bad = vb_ingress_gemini_rejected(g);
    cJSON_AddStringToObject(root, "status",
                            draining ? "draining"
                            : gm_bad ? "gemini_rejected"
                            : full   ? "at_capacity"
                                     : "ok");
    cJSON_AddStringToObject(root, "instance", g->instance);
    cJSON_AddNumberToObject(root, "uptime_s",
                            (double)(vb_clock_now_ns() - g->started_ns) /
                                VB_NS_PER_SEC);

    cJSON_AddStringToObject(cfg, "state", "ok");
    cJSON_AddStringToObject(cfg, "listen", c->listen);
    cJSON_AddStringToObject(cfg, "metrics_listen", c->metrics_listen);
    cJSON_AddStringToObject(cfg, "public_url", c->public_url);
    cJSON_AddStringToObject(cfg, "webhook_path", c->webhook_path);
    cJSON_AddStringToObject(cfg, "status_path", c->status_path);
    cJSON_AddStringToObject(cfg, "stream_path", c->stream_path);
    cJSON_AddBoolToObject(cfg, "trust_proxy", c->trust_proxy);
    cJSON_AddBoolToObject(cfg, "admin_on_public", c->admin_on_public);
    cJSON_AddNumberToObject(cfg, "max_connections", g->max_conns);
    cJSON_AddNumberToObject(cfg, "max_connections_per_peer",
                            g->max_conns_per_peer);
    cJSON_AddNumberToObject(cfg, "request_timeout_ms",
                            (double)c->request_timeout_ms);
    cJSON_AddNumberToObject(cfg, "min_body_rate", (double)c->min_body_rate);

    cJSON_AddStringToObject(sig, "state", g->verify ? "verified" : "insecure");
    cJSON_AddBoolToObject(sig, "stream_secret_shared", *c->stream_secret);

    /* The endpoint without any query (a key could hide there). */
    char ep[512];
    snprintf(ep, sizeof(ep), "%.*s", (int)strcspn(c->gemini_url, "?#"),
             c->gemini_url);
    int last = atomic_load(&g->gm_last);
    cJSON_AddStringToObject(gem, "state",
                            gm_bad                ? "rejected"
                            : !*c->gemini_api_key ? "no_api_key"
                            : last == GM_OK       ? "ok"
                                                  : "configured");
    char why[200];
    gemini_why(g, why, sizeof(why));
    cJSON_AddStringToObject(gem, "last_outcome",
                            last == GM_OK            ? "ok"
                            : last == GM_REJECTED    ? "rejected"
                            : last == GM_UNREACHABLE ? "unreachable"
                                                     : "none");
    cJSON_AddStringToObject(gem, "last_reason", why);
    cJSON_AddNumberToObject(gem, "last_at", (double)atomic_load(&g->gm_last_s));
    cJSON_AddNumberToObject(gem, "consecutive_rejections",
                            (double)atomic_load(&g->gm_rejects));
    cJSON_AddStringToObject(gem, "endpoint", ep);
    cJSON_AddStringToObject(gem, "model", c->gemini_model);

    cJSON_AddStringToObject(lanes, "state", g->lanes ? "ok" : "not_attached");
    cJSON_AddNumberToObject(lanes, "count", g->nlanes);
    for (uint32_t i = 0; i < g->nlanes; i++)
        cJSON_AddItemToArray(
            per, cJSON_CreateNumber((double)vb_ingress_lane_calls(g, i)));

    cJSON_AddStringToObject(calls, "state",
                            draining ? "draining"
                            : full   ? "at_capacity"
                                     : "ok");
    cJSON_AddNumberToObject(calls, "active",
                            (double)vb_ingress_calls_active(g));
    cJSON_AddNumberToObject(calls, "pending", g->pend_total);
    cJSON_AddNumberToObject(calls, "max", (double)c->max_calls);
    cJSON_AddBoolToObject(calls, "draining", draining);
    cJSON_AddBoolToObject(calls, "accepting", vb_ingress_listening(g));

    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void cors(vb_ingress_t *g, vb_http_resp_t *resp)
{
    if (*g->cfg->cors_origin == '\0')
        return;
    vb_http_resp_header(resp, "Access-Control-Allow-Origin",
                        g->cfg->cors_origin);
    vb_http_resp_header(resp, "Vary", "Origin");
}

static void route_system(vb_ingress_t *g, const vb_http_req_t *req,
                         vb_http_resp_t *resp)
{
    if (req->method == HTTP_OPTIONS) {
        resp->status = 204;
        vb_http_resp_header(resp, "Allow", "GET, HEAD, OPTIONS");
        if (*g->cfg->cors_origin) {
            cors(g, resp);
            vb_http_resp_header(resp, "Access-Control-Allow-Methods",
                                "GET, OPTIONS");
            vb_http_resp_header(resp, "Access-Control-Allow-Headers",
                                "Content-Type");
            vb_http_resp_header(resp, "Access-Control-Max-Age", "600");
        }
        return;
    }
    if (!method_in(req, HTTP_GET, HTTP_HEAD)) {
        method_not_allowed(resp, "GET, HEAD, OPTIONS");
        return;
    }
    char *json = system_json(g);
    if (json == NULL) {
        set_text(resp, 500, "out of memory\n");
        return;
    }
    /* cJSON allocates with malloc: the session may free() it. */
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body_owned = json;
    resp->body_len = strlen(json);
    cors(g, resp);
}

/* POST /test/audio: the audio through the calls' DSP path, here on the
 * ingress loop; bounded by VB_AUDIO_CHECK_MAX_BODY (400 with a reason,
 * dsp/audio_check.h), --max-body-bytes (413) and VB_AUDIO_CHECK_MAX_MS. */
static void route_audio(vb_ingress_t *g, const vb_http_req_t *req,
                        vb_http_resp_t *resp)
{
    if (req->method == HTTP_OPTIONS) {
        resp->status = 204;
        vb_http_resp_header(resp, "Allow", "POST, OPTIONS");
        if (*g->cfg->cors_origin) {
            cors(g, resp);
            vb_http_resp_header(resp, "Access-Control-Allow-Methods",
                                "POST, OPTIONS");
            vb_http_resp_header(resp, "Access-Control-Allow-Headers",
                                "Content-Type");
            vb_http_resp_header(resp, "Access-Control-Max-Age", "600");
        }
        return;
    }
    if (req->method != HTTP_POST) {
        method_not_allowed(resp, "POST, OPTIONS");
        return;
    }
    char *json = NULL;
    size_t n = 0;
    int status = g->test_audio(g->test_audio_ud, req->body ? req->body : "",
                               req->body_len, &json, &n);
    if (json == NULL) {
        set_text(resp, 500, "out of memory\n");
        return;
    }
    if (status != 200) {
        VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL, "test audio refused",
                           "status=%d answer=%.*s peer=%s", status,
                           (int)(n < 200 ? n : 200), json, req->peer);
    }
    resp->status = status;
    resp->content_type = "application/json";
    resp->body_owned = json;
    resp->body_len = n;
    cors(g, resp);
}

static void route_metrics(vb_ingress_t *g, const vb_http_req_t *req,
                          vb_http_resp_t *resp)
{
    if (!method_in(req, HTTP_GET, HTTP_HEAD)) {
        method_not_allowed(resp, "GET, HEAD");
        return;
    }
    char *text;
    size_t len;
    pend_prune(g, vb_clock_now_ns());
    bool draining = vb_ingress_draining(g);
    vb_metrics_gauge_set(g->shard, g->g_draining, draining);
    vb_metrics_gauge_set(g->shard, g->g_ready,
                         !draining && !vb_ingress_gemini_rejected(g) &&
                             total_load(g) < (int64_t)g->cfg->max_calls);
    vb_metrics_gauge_set(g->shard, g->g_gemini_ready,
                         !vb_ingress_gemini_rejected(g));
    vb_metrics_gauge_set(g->shard, g->g_max_calls, g->cfg->max_calls);
    if (vb_metrics_render(g->m, &text, &len) != 0) {
        set_text(resp, 500, "out of memory\n");
        return;
    }
    if (vb_metrics_append_process(&text, &len) != 0) {
        free(text);
        set_text(resp, 500, "out of memory\n");
        return;
    }
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp->body_owned = text;
    resp->body_len = len;
}

static void outbound_answered(void *ud, int status, uint64_t t_start_ns)
{
    count_request(ud, R_CALLS, status, t_start_ns);
}

/* Phase 2 while the public listener stays open for this instance's live
 * calls (DESIGN): what is not theirs gets 503, which a proxy retries on
 * another instance. Voice webhooks decide for themselves (a call
 * answered here is answered again); status callbacks are about calls
 * (they end a reservation here sooner); probes and scrapes see the
 * truth. */
static bool drain_refuses(const vb_ingress_t *g, const vb_http_req_t *req,
                          int route, int inst)
{
    if (req->listener != LISTENER_PUBLIC ||
        atomic_load(&g->drain_phase) != DRAIN_CLOSING)
        return false;
    switch (route) {
    case R_VOICE:
    case R_STATUS:
    case R_STREAM_STATUS:
    case R_HEALTHZ:
    case R_READYZ:
    case R_METRICS:
    case R_SYSTEM:
        return false;
    case R_STREAM:
    case R_ENDED:
        return inst == INST_OTHER;
    default:
        return true;
    }
}

static void dispatch(vb_ingress_t *g, const vb_http_req_t *req,
                     vb_http_resp_t *resp, int route, long lane, int inst)
{
    switch (route) {
    case R_VOICE:
        route_voice(g, req, resp);
        break;
    case R_STATUS:
        route_status(g, req, resp);
        break;
    case R_ENDED:
        route_ended(g, req, resp);
        break;
    case R_STREAM_STATUS:
        route_stream_status(g, req, resp);
        break;
    case R_STREAM:
        route_stream(g, req, resp, lane, inst);
        break;
    case R_HEALTHZ:
        if (method_in(req, HTTP_GET, HTTP_HEAD))
            set_text(resp, 200, "ok\n");
        else
            method_not_allowed(resp, "GET, HEAD");
        break;
    case R_READYZ:
        if (!method_in(req, HTTP_GET, HTTP_HEAD)) {
            method_not_allowed(resp, "GET, HEAD");
        } else {
            pend_prune(g, vb_clock_now_ns());
            if (vb_ingress_draining(g)) {
                set_text(resp, 503, "draining\n");
            } else if (vb_ingress_gemini_rejected(g)) {
                char why[200];
                gemini_why(g, why, sizeof(why));
                snprintf(g->readyz_body, sizeof(g->readyz_body), "gemini: %s\n",
                         why);
                set_text(resp, 503, g->readyz_body);
            } else if (total_load(g) >= g->cfg->max_calls)
                set_text(resp, 503, "at capacity\n");
            else
                set_text(resp, 200, "ready\n");
        }
        break;
    case R_METRICS:
        route_metrics(g, req, resp);
        break;
    case R_SYSTEM:
        route_system(g, req, resp);
        break;
    case R_AUDIO:
        route_audio(g, req, resp);
        break;
    case R_CALLS:
        vb_outbound_route(g->outbound, req, resp);
        break;
    default:
        set_text(resp, 404, "not found\n");
        break;
    }
}

static void handle(void *ud, const vb_http_req_t *req, vb_http_resp_t *resp)
{
    vb_ingress_t *g = ud;
    long lane;
    int inst;
    int route = match_route(g, req, &lane, &inst);
    if (drain_refuses(g, req, route, inst)) {
        VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL,
                           "draining: request refused, the proxy retries",
                           "path=%.*s status=503 peer=%s",
                           (int)(req->path_len < 200 ? req->path_len : 200),
                           req->target, req->peer);
        set_text(resp, 503, "draining: try another instance\n");
        vb_http_resp_header(resp, "Retry-After", "1");
        resp->close = true;
    } else {
        dispatch(g, req, resp, route, lane, inst);
    }
    if (resp->defer)
        return; /* counted when answered */
    count_request(g, route, resp->status, req->t_start_ns);
    vb_log_debug(NULL, "http request", "method=%s path=%.*s status=%d peer=%s",
                 req->method_name,
                 (int)(req->path_len < 200 ? req->path_len : 200), req->target,
                 resp->status, req->peer);
}

static void on_http_error(void *ud, const vb_http_error_t *e)
{
    vb_ingress_t *g = ud;
    count_request(g, R_OTHER, e->status, e->t_start_ns);
    VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL, "http request refused",
                       "status=%d reason=%s peer=%s", e->status, e->reason,
                       e->peer);
}

static void on_http_event(void *ud, vb_http_event_t ev)
{
    vb_ingress_t *g = ud;
    if ((int)ev >= 0 && ev < VB_HTTP_EV_COUNT)
        vb_metrics_counter_add(g->shard, g->conn_event[ev], 1);
}

/* The connection caps. Every call holds VB_INGRESS_FDS_PER_CALL
 * descriptors outside the HTTP server, and the process needs
 * VB_INGRESS_FD_RESERVE more (listeners, loops, rings' doorbells, logs,
 * TLS files); what is left of the soft RLIMIT_NOFILE is for HTTP
 * connections, at most VB_HTTP_MAX_CONNS unless set explicitly. */
static void derive_conn_limits(vb_ingress_t *g)
{
    const vb_config_t *c = g->cfg;
    struct rlimit rl;
    g->fd_limit =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 1024;
    if (c->max_connections > 0) {
        g->max_conns = (uint32_t)c->max_connections;
    } else {
        uint64_t need = (uint64_t)c->max_calls * VB_INGRESS_FDS_PER_CALL +
                        VB_INGRESS_FD_RESERVE;
        uint64_t left = g->fd_limit > need ? g->fd_limit - need : 0;
        if (left < VB_INGRESS_MIN_CONNS)
            vb_log_warn(NULL,
                        "the fd limit leaves almost nothing for HTTP "
                        "connections: raise RLIMIT_NOFILE or lower --max-calls",
                        "fd_limit=%llu max_calls=%lld fds_per_call=%d "
                        "reserve=%d",
                        (unsigned long long)g->fd_limit,
                        (long long)c->max_calls, VB_INGRESS_FDS_PER_CALL,
                        VB_INGRESS_FD_RESERVE);
        g->max_conns = left < VB_INGRESS_MIN_CONNS ? VB_INGRESS_MIN_CONNS
                       : left > VB_HTTP_MAX_CONNS  ? VB_HTTP_MAX_CONNS
                                                   : (uint32_t)left;
    }
    if (c->max_connections_per_peer >= 0)
        g->max_conns_per_peer = (uint32_t)c->max_connections_per_peer;
    else if (c->trust_proxy)
        g->max_conns_per_peer = 0; /* every socket comes from the proxy */
    else
        g->max_conns_per_peer = g->max_conns / 8 > VB_INGRESS_MIN_PER_PEER
                                    ? g->max_conns / 8
                                    : VB_INGRESS_MIN_PER_PEER;
}

void vb_ingress_http_callbacks(vb_ingress_t *g, vb_http_server_cfg_t *out)
{
    memset(out, 0, sizeof(*out));
    vb_http_limits_default(&out->limits);
    const vb_config_t *c = g->cfg;
    out->limits.max_head_bytes = (uint32_t)c->max_header_bytes;
    out->limits.max_headers = (uint32_t)c->max_headers;
    out->limits.max_body_bytes = (uint32_t)c->max_body_bytes;
    out->limits.header_timeout_ms = (uint32_t)c->header_timeout_ms;
    out->limits.idle_timeout_ms = (uint32_t)c->idle_timeout_ms;
    out->limits.request_timeout_ms = (uint32_t)c->request_timeout_ms;
    out->limits.min_body_rate = (uint32_t)c->min_body_rate;
    out->limits.max_conns = g->max_conns;
    out->limits.max_conns_per_peer = g->max_conns_per_peer;
    out->handler = handle;
    out->on_error = on_http_error;
    out->on_detach = on_detach;
    out->on_event = on_http_event;
    out->on_abandon = on_abandon;
    out->ud = g;
}

/* ---------------------------------------------------------------------- */
/* lifecycle                                                              */

/* Phase 2: the public listener goes once no answered call's stream is
 * awaited (they expire after VB_INGRESS_PENDING_MS at the latest), no
 * call is live here, and the calls that ended have had their <Connect
 * action> (or VB_INGRESS_ACTION_WAIT_MS since the last ended). */
static void drain_tick(uv_timer_t *t)
{
    vb_ingress_t *g = t->data;
    uint64_t now = vb_clock_now_ns();
    pend_prune(g, now);
    if (atomic_load(&g->drain_phase) != DRAIN_CLOSING || g->unlistened)
        return;
    if (g->pend_total > 0 || vb_ingress_calls_active(g) > 0)
        return;
    /* The clock read after the last end's time: never behind it. */
    uint64_t last_end = atomic_load(&g->last_end_ns);
    if (atomic_load(&g->actions_awaited) > 0 &&
        vb_clock_now_ns() <
            last_end + (uint64_t)VB_INGRESS_ACTION_WAIT_MS * VB_NS_PER_MS)
        return;
    g->unlistened = true;
    vb_http_server_unlisten(g->http, LISTENER_PUBLIC);
    atomic_store(&g->listening, false);
    uv_timer_stop(&g->drain_timer);
    vb_log_info(NULL, "public listener closed: new connections are refused",
                "addr=%s calls=%lld", g->cfg->listen,
                (long long)vb_ingress_calls_active(g));
}

static void wake_cb(uv_async_t *a)
{
    vb_ingress_t *g = a->data;
    if (atomic_load(&g->drain_phase) == DRAIN_NONE) {
        uv_timer_stop(&g->drain_timer);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&g->drain_timer) && !g->unlistened)
        uv_timer_start(&g->drain_timer, drain_tick, 0, 100);
}

static void stop_cb(uv_async_t *a)
{
    vb_ingress_t *g = a->data;
    /* Requests in flight are cancelled (no callbacks); their webhooks'
     * connections close next and are abandoned. */
    vb_assistant_url_destroy(g->aurl);
    g->aurl = NULL;
    vb_http_server_close(g->http);
    atomic_store(&g->listening, false);
    uv_close((uv_handle_t *)&g->stop_async, NULL);
    if (g->wake_ok) {
        /* wake_ok stays set (other threads read it): a late wake() on the
         * closing handle is harmless until the loop ends, and none comes
         * after vb_ingress_stop(). */
        uv_close((uv_handle_t *)&g->wake_async, NULL);
        uv_close((uv_handle_t *)&g->drain_timer, NULL);
        uv_close((uv_handle_t *)&g->pend_timer, NULL);
    }
}

static void *thread_main(void *arg)
{
    vb_ingress_t *g = arg;
    pthread_setname_np(pthread_self(), "ingress");
    uv_run(&g->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int listen_on(vb_ingress_t *g, const char *addr, int tag, int *port)
{
    char host[256];
    int p;
    if (vb_config_split_hostport(addr, host, sizeof(host), &p) != 0) {
        vb_log_error(NULL, "invalid listen address", "addr=%s", addr);
        return VB_ECONFIG;
    }
    int rc = vb_http_server_listen(g->http, host, p, tag, port);
    if (rc == 0)
        vb_log_info(NULL, "listening", "addr=%s port=%d role=%s", host, *port,
                    tag == LISTENER_ADMIN ? "admin" : "public");
    return rc;
}

/* Splits a comma-separated list into trimmed, non-empty items; calls
 * `each` with each. Returns the first error `each` gives. */
static int split_list(const char *list,
                      int (*each)(vb_ingress_t *, const char *, size_t),
                      vb_ingress_t *g)
{
    for (const char *p = list; *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        int rc = m > 0 ? each(g, p, m) : 0;
        if (rc != 0)
            return rc;
        p += n;
    }
    return 0;
}

static int add_sig_base(vb_ingress_t *g, const char *u, size_t n)
{
    while (n > 0 && u[n - 1] == '/')
        n--;
    if (!(n > 8 && strncmp(u, "https://", 8) == 0) &&
        !(n > 7 && strncmp(u, "http://", 7) == 0)) {
        vb_log_error(NULL, "invalid --public-url-aliases entry",
                     "url=\"%.*s\" want=\"http(s)://host[:port][/path]\"",
                     (int)n, u);
        return VB_ECONFIG;
    }
    if (g->n_sig_base >= VB_INGRESS_MAX_ALIASES + 1) {
        vb_log_error(NULL, "too many --public-url-aliases", "max=%d",
                     VB_INGRESS_MAX_ALIASES);
        return VB_ECONFIG;
    }
    if ((g->sig_base[g->n_sig_base] = strndup(u, n)) == NULL)
        return VB_ENOMEM;
    g->n_sig_base++;
    return 0;
}

static int add_shared_key(vb_ingress_t *g, const char *s, size_t n)
{
    if (g->n_shared >= VB_INGRESS_MAX_SHARED_KEYS) {
        vb_log_error(NULL, "too many TWILIO_WEBHOOK_SHARED_KEYS", "max=%d",
                     VB_INGRESS_MAX_SHARED_KEYS);
        return VB_ECONFIG;
    }
    /* "KS<32 hex>:secret" names its key; anything else is a bare secret. */
    const char *colon = memchr(s, ':', n);
    size_t sl = colon && colon - s == 34 && s[0] == 'K' && s[1] == 'S'
                    ? (size_t)(colon - s)
                    : 0;
    g->shared[g->n_shared].sid = strndup(s, sl);
    g->shared[g->n_shared].secret =
        strndup(sl ? colon + 1 : s, sl ? n - sl - 1 : n);
    if (g->shared[g->n_shared].sid == NULL ||
        g->shared[g->n_shared].secret == NULL) {
        free(g->shared[g->n_shared].sid);
        free(g->shared[g->n_shared].secret);
        return VB_ENOMEM;
    }
    g->n_shared++;
    return 0;
}

/* --instance-id, checked, or the hostname made a safe path segment. */
static int instance_name(const char *want, char *out, size_t n)
{
    if (*want != '\0') {
        size_t len = strlen(want);
        bool ok = len < n && strcmp(want, ".") != 0 && strcmp(want, "..") != 0;
        for (size_t i = 0; ok && i < len; i++)
            ok = seg_char(want[i]);
        if (!ok) {
            vb_log_error(NULL,
                         "invalid --instance-id (VOXBRIDGE_INSTANCE_ID): use "
                         "1-63 letters, digits, '.', '_' or '-'",
                         "value=%.80s", want);
            return VB_ECONFIG;
        }
        snprintf(out, n, "%s", want);
        return 0;
    }
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    host[sizeof(host) - 1] = '\0';
    size_t k = 0;
    for (size_t i = 0; host[i] != '\0' && k + 1 < n; i++)
        out[k++] = seg_char(host[i]) ? host[i] : '-';
    out[k] = '\0';
    if (k == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, n, "voxbridge");
    return 0;
}

/* "https://h/x/" -> "https://h/x"; the ws form replaces the scheme. */
static int derive_urls(vb_ingress_t *g)
{
    const char *pu = g->cfg->public_url;
    int rc = split_list(g->cfg->twilio_shared_keys, add_shared_key, g);
    if (rc != 0)
        return rc;
    if (*pu == '\0')
        return 0;
    if ((rc = add_sig_base(g, pu, strlen(pu))) != 0 ||
        (rc = split_list(g->cfg->public_url_aliases, add_sig_base, g)) != 0)
        return rc;
    size_t n = strlen(pu);
    while (n > 0 && pu[n - 1] == '/')
        n--;
    g->public_base = strndup(pu, n);
    bool tls = strncmp(pu, "https://", 8) == 0;
    size_t skip = tls ? 8 : 7;
    g->stream_base = malloc(n + 8);
    if (g->public_base == NULL || g->stream_base == NULL)
        return VB_ENOMEM;
    snprintf(g->stream_base, n + 8, "%s://%.*s", tls ? "wss" : "ws",
             (int)(n - skip), pu + skip);
    return 0;
}

/* Twilio streams only to wss:// on port 443: a start-up warning when
 * the stream URL the TwiML will carry cannot work (docs/ingress.md). */
static void warn_stream_url(const vb_ingress_t *g)
{
    const char *pu = g->cfg->public_url;
    if (*pu == '\0') {
        if (!g->cfg->trust_proxy)
            vb_log_warn(NULL,
                        "no --public-url: stream URLs are built from each "
                        "webhook's Host header as ws://, which Twilio cannot "
                        "stream to; set --public-url https://HOST (or, "
                        "behind a TLS proxy, --trust-proxy)",
                        NULL);
        return;
    }
    vb_ws_url_t u;
    if (vb_ws_url_parse_http(pu, &u) != 0)
        return; /* the config check reports it */
    if (!u.secure)
        vb_log_warn(NULL,
                    "--public-url is http://: the stream URL is ws://, which "
                    "Twilio cannot stream to; use https:// (a TLS proxy in "
                    "front, port 443)",
                    "public_url=%s stream_url=%s", pu, g->stream_base);
    else if (u.port != 443)
        vb_log_warn(NULL,
                    "--public-url names a port other than 443: Twilio "
                    "streams only to wss:// on 443; serve TLS on 443 and "
                    "drop the port",
                    "public_url=%s port=%u", pu, (unsigned)u.port);
}

int vb_ingress_create(const vb_ingress_opts_t *o, vb_ingress_t **out)
{
    *out = NULL;
    if (o == NULL || o->cfg == NULL || o->metrics == NULL)
        return VB_EINVAL;
    const vb_config_t *c = o->cfg;
    int rc = VB_ENOMEM;
    vb_ingress_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return VB_ENOMEM;
    g->cfg = c;
    g->assistants = o->assistants;
    g->m = o->metrics;
    g->nlanes = c->lanes > 0 ? (uint32_t)c->lanes : 1;
    g->verify = *c->twilio_auth_token != '\0';
    g->admin_split = *c->metrics_listen != '\0';
    g->test_audio = o->test_audio;
    g->test_audio_ud = o->test_audio_ud;
    g->report_unstreamed = o->unstreamed;
    g->report_ud = o->unstreamed_ud;
    g->started_ns = vb_clock_now_ns();
    atomic_init(&g->drain_phase, DRAIN_NONE);
    atomic_init(&g->pending_shared, 0);
    atomic_init(&g->listening, false);
    atomic_init(&g->actions_awaited, 0);
    atomic_init(&g->last_end_ns, 0);
    atomic_init(&g->gm_rejects, 0);
    atomic_init(&g->gm_last, GM_NONE);
    atomic_init(&g->gm_last_s, 0);
    if (pthread_mutex_init(&g->gm_mu, NULL) != 0) {
        rc = VB_ESYS;
        goto fail;
    }
    g->gm_mu_ok = true;
    if ((rc = instance_name(c->instance_id, g->instance,
                            sizeof(g->instance))) != 0)
        goto fail;
    rc = VB_ENOMEM;
    if (g->verify && *c->public_url == '\0') {
        vb_log_error(NULL,
                     "TWILIO_AUTH_TOKEN is set but --public-url is empty: "
                     "signatures are checked against the public URL",
                     NULL);
        rc = VB_ECONFIG;
        goto fail;
    }
    g->active = calloc(g->nlanes, sizeof(*g->active));
    g->lane_pending = calloc(g->nlanes, sizeof(*g->lane_pending));
    g->lane_inflight = calloc(g->nlanes, sizeof(*g->lane_inflight));
    g->lane_consumed_ns = calloc(g->nlanes, sizeof(*g->lane_consumed_ns));
    g->pend_cap = (uint32_t)c->max_calls + 1;
    g->pend = calloc(g->pend_cap, sizeof(*g->pend));
    g->ans_cap = (uint32_t)c->max_calls * 4 + 64;
    g->ans = calloc(g->ans_cap, sizeof(*g->ans));
    if (g->active == NULL || g->lane_pending == NULL ||
        g->lane_inflight == NULL || g->lane_consumed_ns == NULL ||
        g->pend == NULL || g->ans == NULL)
        goto fail;
    g->ended_cap = (uint32_t)c->max_calls * 4 + 256;
    g->ended = calloc(g->ended_cap, sizeof(*g->ended));
    if (g->ended == NULL)
        goto fail;
    for (uint32_t i = 0; i < g->ended_cap; i++)
        atomic_init(&g->ended[i], 0);
    for (uint32_t i = 0; i < g->nlanes; i++)
        atomic_init(&g->active[i], 0);
    if (o->lanes != NULL) {
        g->lanes = calloc(g->nlanes, sizeof(*g->lanes));
        if (g->lanes == NULL)
            goto fail;
        memcpy(g->lanes, o->lanes, g->nlanes * sizeof(*g->lanes));
        for (uint32_t i = 0; i < g->nlanes; i++)
            if (g->lanes[i].conn == NULL ||
                g->lanes[i].conn->data_max < sizeof(vb_msg_conn_t) ||
                (g->lanes[i].prepare != NULL &&
                 g->lanes[i].prepare->data_max < sizeof(vb_msg_prepare_t))) {
                rc = VB_EINVAL;
                goto fail;
            }
    }
    if ((rc = derive_urls(g)) != 0)
        goto fail;
    warn_stream_url(g);
    if (o->stream_key != NULL) {
        g->key = o->stream_key;
    } else {
        if ((rc = vb_twilio_sig_key_init(&g->own_key, c->stream_secret)) != 0)
            goto fail;
        g->key = &g->own_key;
    }
    if ((rc = register_metrics(g)) != 0)
        goto fail;
    rc = VB_ENOMEM;
    if ((g->shard = vb_metrics_shard_create(g->m)) == NULL)
        goto fail;
    vb_metrics_gauge_set(g->shard, g->insecure, g->verify ? 0 : 1);
    if (uv_loop_init(&g->loop) != 0) {
        rc = VB_ESYS;
        goto fail;
    }
    g->loop_ok = true;
    if ((rc = vb_assistant_url_create(&g->loop, c, &g->aurl)) != 0)
        goto fail;
    if ((rc = vb_outbound_create(&g->loop, c, g->assistants, g->key,
                                 outbound_answered, g, &g->outbound)) != 0)
        goto fail;
    if (uv_async_init(&g->loop, &g->stop_async, stop_cb) != 0) {
        rc = VB_ESYS;
        goto fail;
    }
    g->async_ok = true;
    g->stop_async.data = g;
    if (uv_async_init(&g->loop, &g->wake_async, wake_cb) != 0) {
        rc = VB_ESYS;
        goto fail;
    }
    uv_timer_init(&g->loop, &g->drain_timer);
    uv_timer_init(&g->loop, &g->pend_timer);
    g->wake_async.data = g;
    g->drain_timer.data = g;
    g->pend_timer.data = g;
    g->wake_ok = true;
    derive_conn_limits(g);
    vb_http_server_cfg_t hc;
    vb_ingress_http_callbacks(g, &hc);
    if ((rc = vb_http_server_create(&g->loop, &hc, &g->http)) != 0)
        goto fail;
    if (!o->no_listen) {
        if ((rc = listen_on(g, c->listen, LISTENER_PUBLIC, &g->port_public)))
            goto fail;
        atomic_store(&g->listening, true);
        vb_log_info(NULL, "instance", "id=%s stream_url_path=%s/%s/<lane>",
                    g->instance, c->stream_path, g->instance);
        if (g->admin_split && (rc = listen_on(g, c->metrics_listen,
                                              LISTENER_ADMIN, &g->port_admin)))
            goto fail;
        vb_log_info(NULL, "http connection limits",
                    "max_connections=%u per_peer=%u fd_limit=%llu "
                    "request_timeout_ms=%lld min_body_rate=%lld",
                    g->max_conns, g->max_conns_per_peer,
                    (unsigned long long)g->fd_limit,
                    (long long)c->request_timeout_ms,
                    (long long)c->min_body_rate);
        if (g->admin_split || c->admin_on_public)
            vb_log_info(NULL, "admin endpoints served",
                        "paths=/metrics,/test/system%s%s on=%s%s%s",
                        g->test_audio != NULL ? ",/test/audio" : "",
                        vb_outbound_enabled(g->outbound) ? ",/v1/calls" : "",
                        g->admin_split ? c->metrics_listen : "",
                        g->admin_split && c->admin_on_public ? "," : "",
                        c->admin_on_public ? c->listen : "");
        else
            vb_log_info(
                NULL,
                "admin endpoints not served: /metrics, "
                "/test/system and /test/audio need --metrics-listen (or "
                "--admin-on-public)",
                NULL);
    }
    if (!g->verify)
        vb_log_warn(NULL,
                    "Twilio request signatures are NOT verified: "
                    "TWILIO_AUTH_TOKEN is unset, anyone can place calls",
                    NULL);
    *out = g;
    return 0;
fail:
    vb_ingress_destroy(g);
    return rc;
}

int vb_ingress_start(vb_ingress_t *g)
{
    if (g->started)
        return VB_EBUSY;
    if (pthread_create(&g->thread, NULL, thread_main, g) != 0) {
        vb_log_error(NULL, "cannot start the ingress thread", NULL);
        return VB_ESYS;
    }
    g->started = true;
    return 0;
}

int vb_ingress_port(const vb_ingress_t *g, bool admin)
{
    return admin ? g->port_admin : g->port_public;
}

void vb_ingress_stop(vb_ingress_t *g)
{
    if (g == NULL || !g->started || g->stopped)
        return;
    uv_async_send(&g->stop_async);
    pthread_join(g->thread, NULL);
    g->stopped = true;
}

void vb_ingress_destroy(vb_ingress_t *g)
{
    if (g == NULL)
        return;
    vb_ingress_stop(g);
    if (g->loop_ok) {
        if (!g->started) {
            /* Never ran: close what create opened, on this thread. */
            vb_assistant_url_destroy(g->aurl);
            g->aurl = NULL;
            vb_http_server_close(g->http);
            if (g->async_ok)
                uv_close((uv_handle_t *)&g->stop_async, NULL);
            if (g->wake_ok) {
                uv_close((uv_handle_t *)&g->wake_async, NULL);
                uv_close((uv_handle_t *)&g->drain_timer, NULL);
                uv_close((uv_handle_t *)&g->pend_timer, NULL);
            }
            uv_run(&g->loop, UV_RUN_DEFAULT);
        }
        if (uv_loop_close(&g->loop) != 0)
            vb_log_error(NULL, "ingress loop still has handles", NULL);
    }
    vb_outbound_destroy(g->outbound);
    vb_http_server_destroy(g->http);
    free(g->lanes);
    free(g->active);
    free(g->lane_pending);
    free(g->lane_inflight);
    free(g->lane_consumed_ns);
    free(g->pend);
    free(g->ans);
    free(g->ended);
    free(g->public_base);
    free(g->stream_base);
    for (size_t i = 0; i < g->n_sig_base; i++)
        free(g->sig_base[i]);
    for (size_t i = 0; i < g->n_shared; i++) {
        free(g->shared[i].sid);
        free(g->shared[i].secret);
    }
    if (g->gm_mu_ok)
        pthread_mutex_destroy(&g->gm_mu);
    free(g);
}
