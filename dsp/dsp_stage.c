/* SPDX-License-Identifier: MIT */
/* The lane's DSP thread; see dsp_stage.h for the design. */
#include "dsp/dsp_stage.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/msg.h"
#include "core/stage.h"

#define OUT_FRAMES_CAP 8

typedef struct call {
    vb_dsp_t *dsp;
    uint32_t gen;
    bool open;
    uint32_t seq_in, seq_out;
} call_t;

struct vb_dsp_stage {
    vb_dsp_stage_config_t cfg;
    vb_stage_t st;
    call_t *calls;
    size_t in_chunk;        /* μ-law bytes per message toward gemini */
    bool held_in, held_out; /* a message is held: counted once */
    vb_metric_t m_lat_in, m_lat_out, m_stale, m_dsp_err;
    int16_t pcm[VB_MSG_DATA_MAX / 2];
    uint8_t frames[OUT_FRAMES_CAP * VB_DSP_FRAME_BYTES];
};

/* Writes one message to `out` (room was checked by the caller). */
static void emit(vb_dsp_stage_t *s, vb_chan_t *out, const vb_msg_t *like,
                 uint8_t kind, const void *data, size_t len, uint32_t *seq,
                 vb_metric_t lat)
{
    vb_msg_t *o = vb_chan_begin(out, kind, like->flags, like->call, (*seq)++,
                                like->t_origin);
    if (o == NULL)
        return; /* not reached: room was checked and this stage never spills */
    if (len > out->data_max)
        len = out->data_max;
    if (len > 0)
        memcpy(o->data, data, len);
    o->len = (uint16_t)len;
    vb_chan_end(out, o);
    uint64_t now = o->t_enqueue;
    if (like->t_origin != 0 && now > like->t_origin)
        vb_metrics_observe_ns(s->st.shard, lat, now - like->t_origin);
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
        vb_metrics_counter_add(s->st.shard, s->m_stale, 1);
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
        vb_metrics_counter_add(s->st.shard, s->m_dsp_err, 1);
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

/* Inbound: one message from twilio-io. Returns false when the output
 * channel lacks room (nothing consumed: the message is held). */
static bool inbound_one(void *ud, const vb_msg_t *m)
{
    vb_dsp_stage_t *s = ud;
    vb_chan_t *out = s->cfg.in_to_gemini;
    uint32_t need = m->kind == VB_MSG_AUDIO
                        ? (uint32_t)((m->len + s->in_chunk - 1) / s->in_chunk)
                        : 1;
    if (vb_chan_room(out) < need) {
        if (!s->held_in)
            vb_chan_full(out);
        s->held_in = true;
        return false;
    }
    s->held_in = false;
    if (m->kind == VB_MSG_CALL_OPEN)
        call_open(s, m);
    call_t *c = lookup(s, m->call);
    if (m->kind == VB_MSG_AUDIO) {
        if (c == NULL) {
            vb_metrics_counter_add(s->st.shard, s->m_stale, 1);
            return true;
        }
        for (size_t off = 0; off < m->len; off += s->in_chunk) {
            size_t k = m->len - off < s->in_chunk ? m->len - off : s->in_chunk,
                   n;
            /* Resampled straight into the reserved slot (room was checked;
             * slot payloads are 16-byte aligned). */
            vb_msg_t *o = vb_chan_begin(out, VB_MSG_AUDIO, m->flags, m->call,
                                        c->seq_in, m->t_origin);
            if (o == NULL)
                break; /* not reached: this stage never spills */
            int rc = vb_dsp_inbound(c->dsp, m->data + off, k,
                                    (int16_t *)(void *)o->data,
                                    out->data_max / sizeof(int16_t), &n);
            if (rc != 0) {
                vb_metrics_counter_add(s->st.shard, s->m_dsp_err, 1);
                VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                                   "inbound dsp failed", "lane=%d err=%s",
                                   s->cfg.lane, vb_err_name(rc));
                vb_dsp_reset(c->dsp);
                break; /* the slot is abandoned, never published */
            }
            o->len = (uint16_t)(n * sizeof(int16_t));
            c->seq_in++;
            vb_chan_end(out, o);
            if (m->t_origin != 0 && o->t_enqueue > m->t_origin)
                vb_metrics_observe_ns(s->st.shard, s->m_lat_in,
                                      o->t_enqueue - m->t_origin);
        }
    } else {
        uint32_t seq0 = 0;
        emit(s, out, m, m->kind, m->data, m->len, c ? &c->seq_in : &seq0,
             s->m_lat_in);
    }
    if (m->kind == VB_MSG_CALL_CLOSE)
        call_close(s, m);
    return true;
}

static void emit_frames(vb_dsp_stage_t *s, call_t *c, const vb_msg_t *m,
                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        emit(s, s->cfg.out_to_twilio, m, VB_MSG_AUDIO,
             s->frames + i * VB_DSP_FRAME_BYTES, VB_DSP_FRAME_BYTES,
             &c->seq_out, s->m_lat_out);
}

/* Outbound: one message from gemini. Returns false when the output
 * channel lacks room (nothing consumed: the message is held). */
static bool outbound_one(void *ud, const vb_msg_t *m)
{
    vb_dsp_stage_t *s = ud;
    vb_chan_t *out = s->cfg.out_to_twilio;
    size_t samples = m->len / sizeof(int16_t);
    uint32_t need = 1;
    if (m->kind == VB_MSG_AUDIO)
        need = (uint32_t)VB_DSP_OUT_FRAMES_MAX(samples);
    else if (m->kind == VB_MSG_TURN_END)
        need = VB_DSP_FLUSH_FRAMES_MAX + 1;
    if (vb_chan_room(out) < need) {
        if (!s->held_out)
            vb_chan_full(out);
        s->held_out = true;
        return false;
    }
    s->held_out = false;
    call_t *c = lookup(s, m->call);
    uint32_t seq0 = 0;
    size_t n = 0;
    int rc = 0;
    switch (m->kind) {
    case VB_MSG_AUDIO:
        if (c == NULL) {
            vb_metrics_counter_add(s->st.shard, s->m_stale, 1);
            return true;
        }
        /* The payload is PCM16 at an aligned offset; copy to be strict about
         * aliasing (at most 1 KiB). */
        memcpy(s->pcm, m->data, samples * sizeof(int16_t));
        rc = vb_dsp_outbound(c->dsp, s->pcm, samples, s->frames, OUT_FRAMES_CAP,
                             &n);
        if (rc == 0)
            emit_frames(s, c, m, n);
        break;
    case VB_MSG_TURN_END:
        if (c != NULL &&
            (rc = vb_dsp_flush(c->dsp, s->frames, OUT_FRAMES_CAP, &n)) == 0)
            emit_frames(s, c, m, n);
        break;
    case VB_MSG_CLEAR:
        if (c != NULL)
            rc = vb_dsp_clear(c->dsp);
        break;
    default:
        break;
    }
    if (rc != 0) {
        vb_metrics_counter_add(s->st.shard, s->m_dsp_err, 1);
        VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL, "outbound dsp failed",
                           "lane=%d kind=%s err=%s", s->cfg.lane,
                           vb_msg_kind_name(m->kind), vb_err_name(rc));
        vb_dsp_reset(c->dsp);
    }
    if (m->kind != VB_MSG_AUDIO)
        emit(s, out, m, m->kind, m->data, m->len, c ? &c->seq_out : &seq0,
             s->m_lat_out);
    return true;
}

static int add_series(vb_dsp_stage_t *s)
{
    vb_metrics_t *m = s->cfg.metrics;
    static const char lat_help[] =
        "Time from a message's origin (its bytes reaching the process) to "
        "its exit from a stage.";
    int rc = 0;
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
                             lat_help, VB_LABELS("stage", "dsp_in"),
                             &s->m_lat_in);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
                             lat_help, VB_LABELS("stage", "dsp_out"),
                             &s->m_lat_out);
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

/* Kinds each direction carries (core/msg.h); anything else is a bug. */
static const uint8_t in_kinds[] = {VB_MSG_CALL_OPEN, VB_MSG_AUDIO, VB_MSG_DTMF,
                                   VB_MSG_CALL_CLOSE};
static const uint8_t out_kinds[] = {VB_MSG_AUDIO, VB_MSG_CLEAR, VB_MSG_TURN_END,
                                    VB_MSG_HANGUP};

int vb_dsp_stage_create(vb_dsp_stage_t **out, const vb_dsp_stage_config_t *cfg)
{
    if (out == NULL || cfg == NULL || cfg->max_calls == 0 ||
        cfg->in_from_twilio == NULL || cfg->in_to_gemini == NULL ||
        cfg->out_from_gemini == NULL || cfg->out_to_twilio == NULL ||
        cfg->metrics == NULL || cfg->in_to_gemini->data_max < 4 ||
        cfg->out_to_twilio->data_max < VB_DSP_FRAME_BYTES)
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
    /* Each μ-law byte becomes two 16 kHz samples (4 bytes). */
    s->in_chunk = cfg->in_to_gemini->data_max / 4;
    if (s->in_chunk > sizeof(s->pcm) / 4)
        s->in_chunk = sizeof(s->pcm) / 4;
    s->calls = calloc(cfg->max_calls, sizeof(call_t));
    if (s->calls == NULL) {
        rc = VB_ENOMEM;
        goto fail;
    }
    if ((rc = add_series(s)) != 0)
        goto fail;
    char name[16];
    snprintf(name, sizeof(name), "vb-dsp-%d", cfg->lane);
    if ((rc = vb_stage_init(&s->st, name, cfg->metrics, NULL, s)) != 0)
        goto fail;
    vb_stage_fn in_on[VB_MSG_KIND_COUNT] = {0}, out_on[VB_MSG_KIND_COUNT] = {0};
    for (size_t i = 0; i < sizeof(in_kinds); i++)
        in_on[in_kinds[i]] = inbound_one;
    for (size_t i = 0; i < sizeof(out_kinds); i++)
        out_on[out_kinds[i]] = outbound_one;
    if ((rc = vb_stage_listen(&s->st, cfg->in_from_twilio, in_on)) != 0 ||
        (rc = vb_stage_listen(&s->st, cfg->out_from_gemini, out_on)) != 0 ||
        (rc = vb_stage_produce(&s->st, cfg->in_to_gemini)) != 0 ||
        (rc = vb_stage_produce(&s->st, cfg->out_to_twilio)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    vb_stage_destroy(&s->st);
    free(s->calls);
    free(s);
    return rc;
}

int vb_dsp_stage_start(vb_dsp_stage_t *s)
{
    return vb_stage_start(&s->st);
}

void vb_dsp_stage_stop(vb_dsp_stage_t *s)
{
    if (s != NULL)
        vb_stage_stop(&s->st);
}

void vb_dsp_stage_destroy(vb_dsp_stage_t *s)
{
    if (s == NULL)
        return;
    vb_stage_destroy(&s->st);
    for (uint32_t i = 0; i < s->cfg.max_calls; i++)
        vb_dsp_destroy(s->calls[i].dsp);
    free(s->calls);
    free(s);
}
