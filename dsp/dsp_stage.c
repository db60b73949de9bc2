/* SPDX-License-Identifier: MIT */
/* The lane's DSP thread; see dsp_stage.h for the design. */
#include "dsp/dsp_stage.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/msg.h"
#include "core/thread.h"

/* Messages taken from one input ring before looking at the other, so a
 * burst in one direction cannot starve the other. */
#define DRAIN_BUDGET 64
/* Inbound μ-law bytes converted per output message: 256 bytes give 512
 * samples = 1024 bytes at 16 kHz, one full slot. */
#define IN_CHUNK       256
#define OUT_FRAMES_CAP 8

typedef struct call {
    vb_dsp_t *dsp;
    uint32_t gen;
    bool open;
    uint32_t seq_in, seq_out;
} call_t;

struct vb_dsp_stage {
    vb_dsp_stage_config_t cfg;
    uv_loop_t loop;
    uv_async_t bell;
    uv_async_t stop;
    uv_timer_t retry;
    vb_thread_t thread;
    call_t *calls;
    vb_metrics_shard_t *shard;
    vb_metric_t m_lat_in, m_lat_out, m_wait_in, m_wait_out;
    vb_metric_t m_full_in, m_full_out, m_stale, m_dsp_err;
    int16_t pcm[IN_CHUNK * 2];
    uint8_t frames[OUT_FRAMES_CAP * VB_DSP_FRAME_BYTES];
};

static uint32_t ring_room(vb_ring_t *r)
{
    /* From the producer side tail is exact and head can only be stale
     * (older), so this never overstates the room. */
    return vb_ring_capacity(r) - vb_ring_count(r);
}

static void ring_bell(vb_ring_t *r, uint32_t pushed, uv_async_t *bell)
{
    if (pushed > 0 && bell != NULL && vb_ring_wake_needed(r, pushed))
        uv_async_send(bell);
}

/* Writes one message to `r` (room was checked by the caller). */
static void emit(vb_dsp_stage_t *s, vb_ring_t *r, const vb_msg_t *like,
                 uint8_t kind, const void *data, size_t len, uint32_t *seq,
                 vb_metric_t lat)
{
    vb_msg_t *o = vb_ring_reserve(r);
    uint64_t now = vb_clock_now_ns();
    o->kind = kind;
    o->flags = like->flags;
    o->len = (uint16_t)len;
    o->seq = (*seq)++;
    o->call = like->call;
    o->t_origin = like->t_origin;
    o->t_enqueue = now;
    if (len > 0)
        memcpy(o->data, data, len);
    vb_ring_commit(r);
    if (like->t_origin != 0 && now > like->t_origin)
        vb_metrics_observe_ns(s->shard, lat, now - like->t_origin);
}

static call_t *lookup(vb_dsp_stage_t *s, vb_call_id_t id)
{
    if (id.slot >= s->cfg.max_calls)
        return NULL;
    call_t *c = &s->calls[id.slot];
    return c->open && c->gen == id.gen ? c : NULL;
}

static void call_open(vb_dsp_stage_t *s, const vb_msg_t *m)
{
    if (m->call.slot >= s->cfg.max_calls) {
        vb_metrics_counter_add(s->shard, s->m_stale, 1);
        vb_log_error(NULL, "call slot beyond the dsp call table",
                     "lane=%d slot=%u max_calls=%u", s->cfg.lane, m->call.slot,
                     s->cfg.max_calls);
        return;
    }
    call_t *c = &s->calls[m->call.slot];
    vb_dsp_destroy(c->dsp); /* a slot reused without a close: start over */
    memset(c, 0, sizeof(*c));
    int rc = vb_dsp_create(&c->dsp, &s->cfg.dsp);
    if (rc != 0) {
        vb_metrics_counter_add(s->shard, s->m_dsp_err, 1);
        vb_log_error(NULL, "dsp state for a call could not be created",
                     "lane=%d slot=%u err=%s", s->cfg.lane, m->call.slot,
                     vb_err_name(rc));
        return;
    }
    c->gen = m->call.gen;
    c->open = true;
}

static void call_close(vb_dsp_stage_t *s, const vb_msg_t *m)
{
    call_t *c = lookup(s, m->call);
    if (c == NULL)
        return;
    vb_dsp_destroy(c->dsp);
    memset(c, 0, sizeof(*c));
}

/* Inbound: one message from twilio-io. Returns false when the output ring
 * lacks room (nothing consumed). */
static bool inbound_one(vb_dsp_stage_t *s, const vb_msg_t *m)
{
    vb_ring_t *out = s->cfg.in_to_gemini;
    uint32_t need =
        m->kind == VB_MSG_AUDIO ? (m->len + IN_CHUNK - 1) / IN_CHUNK : 1;
    if (ring_room(out) < need) {
        vb_metrics_counter_add(s->shard, s->m_full_in, 1);
        return false;
    }
    if (m->kind == VB_MSG_CALL_OPEN)
        call_open(s, m);
    call_t *c = lookup(s, m->call);
    uint32_t pushed = 0;
    if (m->kind == VB_MSG_AUDIO) {
        if (c == NULL) {
            vb_metrics_counter_add(s->shard, s->m_stale, 1);
            return true;
        }
        for (size_t off = 0; off < m->len; off += IN_CHUNK) {
            size_t k = m->len - off < IN_CHUNK ? m->len - off : IN_CHUNK, n;
            int rc = vb_dsp_inbound(c->dsp, m->data + off, k, s->pcm,
                                    IN_CHUNK * 2, &n);
            if (rc != 0) {
                vb_metrics_counter_add(s->shard, s->m_dsp_err, 1);
                VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                                   "inbound dsp failed", "lane=%d err=%s",
                                   s->cfg.lane, vb_err_name(rc));
                vb_dsp_reset(c->dsp);
                break;
            }
            emit(s, out, m, VB_MSG_AUDIO, s->pcm, n * sizeof(int16_t),
                 &c->seq_in, s->m_lat_in);
            pushed++;
        }
    } else {
        uint32_t seq0 = 0;
        emit(s, out, m, m->kind, m->data, m->len, c ? &c->seq_in : &seq0,
             s->m_lat_in);
        pushed++;
    }
    if (m->kind == VB_MSG_CALL_CLOSE)
        call_close(s, m);
    ring_bell(out, pushed, s->cfg.gemini_bell);
    return true;
}

static uint32_t emit_frames(vb_dsp_stage_t *s, call_t *c, const vb_msg_t *m,
                            size_t n)
{
    for (size_t i = 0; i < n; i++)
        emit(s, s->cfg.out_to_twilio, m, VB_MSG_AUDIO,
             s->frames + i * VB_DSP_FRAME_BYTES, VB_DSP_FRAME_BYTES,
             &c->seq_out, s->m_lat_out);
    return (uint32_t)n;
}

/* Outbound: one message from gemini. Returns false when the output ring
 * lacks room (nothing consumed). */
static bool outbound_one(vb_dsp_stage_t *s, const vb_msg_t *m)
{
    vb_ring_t *out = s->cfg.out_to_twilio;
    size_t samples = m->len / sizeof(int16_t);
    uint32_t need = 1;
    if (m->kind == VB_MSG_AUDIO)
        need = (uint32_t)VB_DSP_OUT_FRAMES_MAX(samples);
    else if (m->kind == VB_MSG_TURN_END)
        need = VB_DSP_FLUSH_FRAMES_MAX + 1;
    if (ring_room(out) < need) {
        vb_metrics_counter_add(s->shard, s->m_full_out, 1);
        return false;
    }
    call_t *c = lookup(s, m->call);
    uint32_t pushed = 0, seq0 = 0;
    size_t n = 0;
    int rc = 0;
    switch (m->kind) {
    case VB_MSG_AUDIO:
        if (c == NULL) {
            vb_metrics_counter_add(s->shard, s->m_stale, 1);
            return true;
        }
        /* The payload is PCM16 at an aligned offset; copy to be strict about
         * aliasing (at most 1 KiB). */
        memcpy(s->pcm, m->data, samples * sizeof(int16_t));
        rc = vb_dsp_outbound(c->dsp, s->pcm, samples, s->frames, OUT_FRAMES_CAP,
                             &n);
        if (rc == 0)
            pushed += emit_frames(s, c, m, n);
        break;
    case VB_MSG_TURN_END:
        if (c != NULL &&
            (rc = vb_dsp_flush(c->dsp, s->frames, OUT_FRAMES_CAP, &n)) == 0)
            pushed += emit_frames(s, c, m, n);
        break;
    case VB_MSG_CLEAR:
        if (c != NULL)
            rc = vb_dsp_clear(c->dsp);
        break;
    default:
        break;
    }
    if (rc != 0) {
        vb_metrics_counter_add(s->shard, s->m_dsp_err, 1);
        VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL, "outbound dsp failed",
                           "lane=%d kind=%s err=%s", s->cfg.lane,
                           vb_msg_kind_name(m->kind), vb_err_name(rc));
        vb_dsp_reset(c->dsp);
    }
    if (m->kind != VB_MSG_AUDIO) {
        emit(s, out, m, m->kind, m->data, m->len, c ? &c->seq_out : &seq0,
             s->m_lat_out);
        pushed++;
    }
    ring_bell(out, pushed, s->cfg.twilio_bell);
    return true;
}

/* Drains one input ring by up to DRAIN_BUDGET messages. Returns 1 if it made
 * progress, 0 if the ring was empty, -1 if blocked by a full output. */
static int drain(vb_dsp_stage_t *s, vb_ring_t *in, vb_metric_t wait,
                 bool (*one)(vb_dsp_stage_t *, const vb_msg_t *))
{
    int progress = 0;
    for (int i = 0; i < DRAIN_BUDGET; i++) {
        const vb_msg_t *m = vb_ring_peek(in);
        if (m == NULL)
            return progress;
        uint64_t now = vb_clock_now_ns();
        if (!one(s, m))
            return -1;
        if (m->t_enqueue != 0 && now > m->t_enqueue)
            vb_metrics_observe_ns(s->shard, wait, now - m->t_enqueue);
        vb_ring_release(in);
        progress = 1;
    }
    return progress;
}

static void on_retry(uv_timer_t *t);

static void run(vb_dsp_stage_t *s)
{
    for (;;) {
        int a = drain(s, s->cfg.in_from_twilio, s->m_wait_in, inbound_one);
        int b = drain(s, s->cfg.out_from_gemini, s->m_wait_out, outbound_one);
        if (a < 0 || b < 0) {
            /* A consumer is behind: try again shortly rather than spin. */
            if (!uv_is_active((uv_handle_t *)&s->retry))
                uv_timer_start(&s->retry, on_retry, 1, 0);
            if (a <= 0 && b <= 0)
                return;
        } else if (a == 0 && b == 0) {
            return;
        }
    }
}

static void on_retry(uv_timer_t *t)
{
    run(t->data);
}

static void on_bell(uv_async_t *a)
{
    run(a->data);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void on_stop(uv_async_t *a)
{
    vb_dsp_stage_t *s = a->data;
    uv_close((uv_handle_t *)&s->bell, close_cb);
    uv_close((uv_handle_t *)&s->stop, close_cb);
    uv_close((uv_handle_t *)&s->retry, close_cb);
}

static void thread_main(void *arg)
{
    vb_dsp_stage_t *s = arg;
    char name[16];
    snprintf(name, sizeof(name), "vb-dsp-%d", s->cfg.lane);
    pthread_setname_np(pthread_self(), name);
    s->shard = vb_metrics_shard_create(s->cfg.metrics);
    if (s->shard == NULL) {
        vb_log_error(NULL, "dsp stage could not get a metrics shard", "lane=%d",
                     s->cfg.lane);
        abort();
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

static int add_series(vb_dsp_stage_t *s)
{
    vb_metrics_t *m = s->cfg.metrics;
    static const char lat_help[] =
        "Time from a message's origin (its bytes reaching the process) to "
        "its exit from a stage.";
    static const char wait_help[] = "Time messages wait in a ring.";
    static const char full_help[] =
        "Times a producer found a ring full and held its message back.";
    int rc = 0;
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
                             lat_help, VB_LABELS("stage", "dsp_in"),
                             &s->m_lat_in);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
                             lat_help, VB_LABELS("stage", "dsp_out"),
                             &s->m_lat_out);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_ring_wait_seconds",
                             wait_help, VB_LABELS("ring", "twilio_to_dsp"),
                             &s->m_wait_in);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_ring_wait_seconds",
                             wait_help, VB_LABELS("ring", "gemini_to_dsp"),
                             &s->m_wait_out);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_COUNTER, "vb_ring_full_total",
                             full_help, VB_LABELS("ring", "dsp_to_gemini"),
                             &s->m_full_in);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_COUNTER, "vb_ring_full_total",
                             full_help, VB_LABELS("ring", "dsp_to_twilio"),
                             &s->m_full_out);
    rc =
        rc ? rc
           : vb_metrics_add(m, VB_METRIC_COUNTER, "vb_dsp_stale_messages_total",
                            "Audio for a call the DSP stage does not know "
                            "(ended, or never opened), dropped.",
                            NULL, &s->m_stale);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_COUNTER, "vb_dsp_errors_total",
                             "DSP failures (state creation or processing).",
                             NULL, &s->m_dsp_err);
    return rc;
}

int vb_dsp_stage_create(vb_dsp_stage_t **out, const vb_dsp_stage_config_t *cfg)
{
    if (out == NULL || cfg == NULL || cfg->max_calls == 0 ||
        cfg->in_from_twilio == NULL || cfg->in_to_gemini == NULL ||
        cfg->out_from_gemini == NULL || cfg->out_to_twilio == NULL ||
        cfg->metrics == NULL)
        return VB_EINVAL;
    /* Refuse a configuration that cannot run before any call tries it. */
    vb_dsp_t *probe;
    int rc = vb_dsp_create(&probe, &cfg->dsp);
    if (rc != 0) {
        vb_log_error(NULL, "dsp configuration refused", "err=%s",
                     vb_err_name(rc));
        return rc == VB_ENOMEM ? rc : VB_ECONFIG;
    }
    vb_dsp_destroy(probe);
    vb_dsp_stage_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return VB_ENOMEM;
    s->cfg = *cfg;
    s->calls = calloc(cfg->max_calls, sizeof(call_t));
    if (s->calls == NULL) {
        rc = VB_ENOMEM;
        goto fail;
    }
    if ((rc = add_series(s)) != 0)
        goto fail;
    if (uv_loop_init(&s->loop) != 0) {
        rc = VB_ESYS;
        goto fail;
    }
    uv_async_init(&s->loop, &s->bell, on_bell);
    uv_async_init(&s->loop, &s->stop, on_stop);
    uv_timer_init(&s->loop, &s->retry);
    s->bell.data = s->stop.data = s->retry.data = s;
    *out = s;
    return 0;
fail:
    free(s->calls);
    free(s);
    return rc;
}

uv_async_t *vb_dsp_stage_bell(vb_dsp_stage_t *s)
{
    return &s->bell;
}

void vb_dsp_stage_set_bells(vb_dsp_stage_t *s, uv_async_t *gemini_bell,
                            uv_async_t *twilio_bell)
{
    s->cfg.gemini_bell = gemini_bell;
    s->cfg.twilio_bell = twilio_bell;
}

int vb_dsp_stage_start(vb_dsp_stage_t *s)
{
    return vb_thread_start(&s->thread, thread_main, s);
}

void vb_dsp_stage_stop(vb_dsp_stage_t *s)
{
    if (s != NULL)
        vb_thread_stop(&s->thread, &s->stop);
}

void vb_dsp_stage_destroy(vb_dsp_stage_t *s)
{
    if (s == NULL)
        return;
    vb_dsp_stage_stop(s);
    if (!uv_is_closing((uv_handle_t *)&s->bell)) {
        /* Never started: close the handles on this thread. */
        on_stop(&s->stop);
        uv_run(&s->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&s->loop);
    for (uint32_t i = 0; i < s->cfg.max_calls; i++)
        vb_dsp_destroy(s->calls[i].dsp);
    free(s->calls);
    free(s);
}
