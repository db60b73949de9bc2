/* SPDX-License-Identifier: MIT */
/* The DSP stage thread between real rings: conversion, ordering, control
 * forwarding, back-pressure without loss, stale-call drops. */
#include "core/chan.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/msg.h"
#include "dsp/dsp_stage.h"
#include "dsp/g711.h"
#include "tests/g711_sample.h"
#include "tests/test.h"

#include <time.h>

typedef struct rig {
    vb_chan_t tw_in, gm_in, gm_out, tw_out;
    vb_metrics_t *metrics;
    vb_dsp_stage_t *stage;
} rig_t;

static rig_t rig;

/* A channel as a lane has it (core/lane.h sizes), without metrics. */
static int chan_up(vb_chan_t *c, const char *name, uint32_t cap,
                   uint32_t data_max)
{
    vb_chan_config_t cfg = {name, cap, data_max, 0, NULL};
    return vb_chan_init(c, &cfg);
}

static void rig_up(uint32_t out_cap)
{
    rig.metrics = vb_metrics_create();
    ASSERT_EQ(chan_up(&rig.tw_in, "twilio_to_dsp", 256, 256), 0);
    ASSERT_EQ(chan_up(&rig.gm_in, "dsp_to_gemini", out_cap, 640), 0);
    ASSERT_EQ(chan_up(&rig.gm_out, "gemini_to_dsp", 256, VB_MSG_DATA_MAX), 0);
    vb_chan_config_t tw = {"dsp_to_twilio", out_cap, VB_MSG_DATA_MAX, 0,
                           rig.metrics};
    ASSERT_EQ(vb_chan_init(&rig.tw_out, &tw), 0);
    vb_dsp_stage_config_t cfg = {
        .lane = 0,
        .max_calls = 8,
        .dsp = {VB_RESAMPLER_SPEEXDSP, VB_RESAMPLER_QUALITY_DEFAULT},
        .in_from_twilio = &rig.tw_in,
        .in_to_gemini = &rig.gm_in,
        .out_from_gemini = &rig.gm_out,
        .out_to_twilio = &rig.tw_out,
        .metrics = rig.metrics,
    };
    ASSERT_EQ(vb_dsp_stage_create(&rig.stage, &cfg), 0);
    ASSERT_EQ(vb_dsp_stage_start(rig.stage), 0);
}

static void rig_down(void)
{
    vb_dsp_stage_destroy(rig.stage);
    vb_metrics_destroy(rig.metrics);
    vb_chan_destroy(&rig.tw_in);
    vb_chan_destroy(&rig.gm_in);
    vb_chan_destroy(&rig.gm_out);
    vb_chan_destroy(&rig.tw_out);
}

/* Pushes as a producer without a stage: each push rings the stage. Waits
 * up to 10 s (scaled) for room. */
static void push(vb_chan_t *c, uint8_t kind, vb_call_id_t call, uint32_t seq,
                 const void *data, size_t len)
{
    uint64_t deadline =
        vb_clock_now_ns() + (uint64_t)(10e9 * vb_test_slowdown());
    while (vb_chan_send(c, kind, 0, call, seq, vb_clock_now_ns(), data, len) !=
           0) {
        if (vb_clock_now_ns() > deadline)
            vb_test_fail(__FILE__, __LINE__, "timed out waiting for room");
        nanosleep(&(struct timespec){0, 100000}, NULL);
    }
}

/* Pops one message, waiting up to 10 s (scaled). */
static void pop(vb_chan_t *c, vb_msg_t *out)
{
    vb_ring_t *r = &c->ring;
    uint64_t deadline =
        vb_clock_now_ns() + (uint64_t)(10e9 * vb_test_slowdown());
    while (vb_ring_try_pop(r, out) != 0) {
        if (vb_clock_now_ns() > deadline)
            vb_test_fail(__FILE__, __LINE__, "timed out waiting for a message");
        nanosleep(&(struct timespec){0, 100000}, NULL);
    }
}

static const vb_call_id_t CALL = {3, 7};

TEST(dsp_stage_inbound_converts_in_order)
{
    rig_up(256);
    vb_msg_t m;
    const char sid[] = "CA0001";
    push(&rig.tw_in, VB_MSG_CALL_OPEN, CALL, 0, sid, sizeof(sid));
    /* A reference state run on this thread gives the expected samples. */
    vb_dsp_t *ref;
    vb_dsp_config_t dc = {VB_RESAMPLER_SPEEXDSP, VB_RESAMPLER_QUALITY_DEFAULT};
    ASSERT_EQ(vb_dsp_create(&ref, &dc), 0);
    uint8_t ulaw[160];
    int16_t want[320];
    pop(&rig.gm_in, &m);
    ASSERT_EQ(m.kind, VB_MSG_CALL_OPEN);
    ASSERT_STR_EQ((const char *)m.data, "CA0001");
    ASSERT_EQ(m.seq, 0);
    for (uint32_t f = 0; f < 50; f++) {
        for (int i = 0; i < 160; i++)
            ulaw[i] = ulaw_encode1(
                (int16_t)(8000 * sin(2 * M_PI * 440 * (f * 160 + i) / 8000.0)));
        push(&rig.tw_in, VB_MSG_AUDIO, CALL, f + 1, ulaw, sizeof(ulaw));
        size_t n;
        ASSERT_EQ(vb_dsp_inbound(ref, ulaw, 160, want, 320, &n), 0);
        ASSERT_EQ(n, 320);
        pop(&rig.gm_in, &m);
        ASSERT_EQ(m.kind, VB_MSG_AUDIO);
        ASSERT_EQ(m.len, 640);
        ASSERT_EQ(m.seq, f + 1);
        ASSERT_TRUE(vb_call_id_eq(m.call, CALL));
        ASSERT_MEM_EQ(m.data, want, 640);
        ASSERT_GT(m.t_enqueue, 0);
        ASSERT_UINT_OP(m.t_enqueue, >=, m.t_origin);
    }
    const char digit[] = "5";
    push(&rig.tw_in, VB_MSG_DTMF, CALL, 51, digit, 2);
    push(&rig.tw_in, VB_MSG_CALL_CLOSE, CALL, 52, NULL, 0);
    pop(&rig.gm_in, &m);
    ASSERT_EQ(m.kind, VB_MSG_DTMF);
    ASSERT_STR_EQ((const char *)m.data, "5");
    pop(&rig.gm_in, &m);
    ASSERT_EQ(m.kind, VB_MSG_CALL_CLOSE);
    /* Audio after the close belongs to no call: dropped and counted. */
    push(&rig.tw_in, VB_MSG_AUDIO, CALL, 53, ulaw, sizeof(ulaw));
    push(&rig.tw_in, VB_MSG_AUDIO, (vb_call_id_t){3, 6}, 0, ulaw, 160);
    push(&rig.tw_in, VB_MSG_DTMF, CALL, 54, digit, 2); /* a marker */
    pop(&rig.gm_in, &m);
    ASSERT_EQ(m.kind, VB_MSG_DTMF);
    vb_dsp_destroy(ref);
    rig_down();
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

TEST(dsp_stage_outbound_frames_flush_clear_with_backpressure)
{
    /* A 4-slot output ring and a slow reader force the stage to hold
     * messages back; nothing may be lost or reordered. */
    rig_up(4);
    vb_msg_t m;
    push(&rig.tw_in, VB_MSG_CALL_OPEN, CALL, 0, NULL, 0);
    pop(&rig.gm_in, &m);
    static int16_t pcm[24000];
    for (size_t i = 0; i < 24000; i++)
        pcm[i] = (int16_t)(6000 * sin(2 * M_PI * 1000 * i / 24000.0));
    /* Reference: the whole second in one go, then flush. */
    vb_dsp_t *ref;
    vb_dsp_config_t dc = {VB_RESAMPLER_SPEEXDSP, VB_RESAMPLER_QUALITY_DEFAULT};
    ASSERT_EQ(vb_dsp_create(&ref, &dc), 0);
    static uint8_t want[60 * 160];
    size_t nw = 0, n;
    for (size_t off = 0; off < 24000; off += 480) {
        ASSERT_EQ(vb_dsp_outbound(ref, pcm + off, 480, want + nw * 160, 4, &n),
                  0);
        nw += n;
    }
    ASSERT_EQ(vb_dsp_flush(ref, want + nw * 160, 4, &n), 0);
    nw += n;
    vb_dsp_destroy(ref);

    /* Feed in random chunk sizes from this thread while reading slowly. */
    size_t off = 0;
    uint32_t seq = 1;
    static uint8_t got[60 * 160];
    size_t ng = 0;
    bool turn_end = false;
    uint64_t deadline =
        vb_clock_now_ns() + (uint64_t)(20e9 * vb_test_slowdown());
    while (!turn_end) {
        if (vb_clock_now_ns() > deadline)
            vb_test_fail(__FILE__, __LINE__, "no TURN_END after %zu frames",
                         ng);
        if (off < 24000 && vb_ring_count(&rig.gm_out.ring) < 200) {
            size_t k = 1 + rng() % 512;
            if (k > 24000 - off)
                k = 24000 - off;
            push(&rig.gm_out, VB_MSG_AUDIO, CALL, seq++, pcm + off, k * 2);
            off += k;
            if (off == 24000)
                push(&rig.gm_out, VB_MSG_TURN_END, CALL, seq++, NULL, 0);
        }
        if (rng() % 3 == 0 && vb_ring_try_pop(&rig.tw_out.ring, &m) == 0) {
            if (m.kind == VB_MSG_TURN_END) {
                turn_end = true;
            } else {
                ASSERT_EQ(m.kind, VB_MSG_AUDIO);
                ASSERT_EQ(m.len, 160);
                ASSERT_LT(ng, 60);
                memcpy(got + ng * 160, m.data, 160);
                ng++;
            }
        }
        nanosleep(&(struct timespec){0, 20000}, NULL);
    }
    ASSERT_EQ(ng, nw);
    ASSERT_MEM_EQ(got, want, nw * 160);

    /* Barge-in: audio, clear, more audio. After the CLEAR message nothing
     * from before it may come out. Mark the two parts by amplitude. */
    static int16_t loud[480], quiet[480];
    for (int i = 0; i < 480; i++) {
        loud[i] = (int16_t)(20000 * sin(2 * M_PI * 1000 * i / 24000.0));
        quiet[i] = 0;
    }
    for (int k = 0; k < 3; k++)
        push(&rig.gm_out, VB_MSG_AUDIO, CALL, seq++, loud, 100 * 2);
    push(&rig.gm_out, VB_MSG_CLEAR, CALL, seq++, NULL, 0);
    for (int k = 0; k < 6; k++)
        push(&rig.gm_out, VB_MSG_AUDIO, CALL, seq++, quiet, 480 * 2);
    push(&rig.gm_out, VB_MSG_TURN_END, CALL, seq++, NULL, 0);
    bool cleared = false;
    int after = 0;
    for (;;) {
        pop(&rig.tw_out, &m);
        if (m.kind == VB_MSG_CLEAR) {
            cleared = true;
            continue;
        }
        if (m.kind == VB_MSG_TURN_END)
            break;
        ASSERT_TRUE(cleared); /* 300 loud samples make < 1 frame: held */
        for (int i = 0; i < 160; i++) {
            int16_t v = ulaw_decode1(m.data[i]);
            ASSERT_LT(abs(v), 64);
        }
        after++;
    }
    ASSERT_TRUE(cleared);
    ASSERT_EQ(after, 6 * 160 / 160 + 1); /* 6 x 160 samples out, + flush */
    /* The hold-backs were counted. */
    char *text;
    size_t len;
    ASSERT_EQ(vb_metrics_render(rig.metrics, &text, &len), 0);
    const char *p = strstr(text, "vb_ring_full_total{ring=\"dsp_to_twilio\"} ");
    ASSERT_NOT_NULL(p);
    ASSERT_GT(atol(p + strlen("vb_ring_full_total{ring=\"dsp_to_twilio\"} ")),
              0);
    free(text);
    rig_down();
}

TEST(dsp_stage_refuses_bad_config)
{
    vb_chan_t r;
    ASSERT_EQ(chan_up(&r, "any", 4, VB_MSG_DATA_MAX), 0);
    vb_metrics_t *m = vb_metrics_create();
    vb_dsp_stage_t *s = NULL;
    vb_dsp_stage_config_t cfg = {
        .max_calls = 1,
        .dsp = {VB_RESAMPLER_SPEEXDSP, 42},
        .in_from_twilio = &r,
        .in_to_gemini = &r,
        .out_from_gemini = &r,
        .out_to_twilio = &r,
        .metrics = m,
    };
    ASSERT_EQ(vb_dsp_stage_create(&s, &cfg), VB_ECONFIG);
    cfg.max_calls = 0;
    ASSERT_EQ(vb_dsp_stage_create(&s, &cfg), VB_EINVAL);
    vb_dsp_stage_destroy(NULL);
    vb_metrics_destroy(m);
    vb_chan_destroy(&r);
}
