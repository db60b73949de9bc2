/* SPDX-License-Identifier: MIT */
/*
 * Media as a real leg delivers it, end to end (build/voxbridge,
 * build/vb-sim, build/vb-fake-gemini): frames jittered, a network stall
 * followed by a burst of everything held, a gap in the timeline. Nothing
 * the leg sent is lost or throttled, the model gets all of it plus
 * silence for the gap, and the caller's turn still ends (the echo model
 * answers).
 */
#include "tests/e2e.h"

typedef struct timing_run {
    char *out, *m;
    double model_bytes; /* PCM 16 kHz the model received */
} timing_run_t;

static void timing_call(timing_run_t *t, const char *const *sim_extra)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "tone.wav");
    make_sox(audio, "synth 2 sine 400 vol 0.3");
    rig_fake(&r, NULL);
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, sim_extra);
    t->out = sim_wait(&r, &s);
    t->m = metrics(&r);
    cJSON *evs = fake_events(&r);
    t->model_bytes = sum_audio_bytes(evs);
    cJSON_Delete(evs);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(t->out, vblog);
    assert_nothing_lost(t->m);
    free(vblog);
}

static void timing_free(timing_run_t *t)
{
    free(t->out);
    free(t->m);
}

/* 60 ms of jitter, a 1 s stall in the middle of the caller's speech (50
 * frames then go at once), a 400 ms gap just after it. */
TEST_T(jitter_stall_burst_and_gap_lose_nothing_and_the_turn_ends, 90)
{
    timing_run_t t;
    timing_call(&t,
                (const char *const[]){"--jitter", "60", "--stall", "0.4:1000",
                                      "--gap", "1.6:400", "--tail", "3", NULL});
    long long sent = field(t.out, "frames_sent");
    long long gapped = field(t.out, "frames_gapped");
    printf("  sent %lld, gapped %lld, held %lld (max %.0f ms), heard %lld "
           "bytes, silence frames %.0f\n",
           sent, gapped, field(t.out, "frames_held"),
           (double)field(t.out, "max_hold_ms"), field(t.out, "bytes_heard"),
           msum(t.m, "vb_twilio_silence_frames_total", NULL));
    /* The leg behaved as asked: the stall held about 50 frames for up to
     * a second, the gap dropped 20. */
    ASSERT_GE(field(t.out, "frames_held"), 40);
    ASSERT_GE(field(t.out, "max_hold_ms"), 900);
    ASSERT_EQ(gapped, 20);
    /* Every frame sent arrived, none throttled as a flood: a burst after
     * a stall is not an attack. */
    ASSERT_EQ(msum(t.m, "vb_twilio_media_in_total", NULL), (double)sent);
    ASSERT_EQ(msum(t.m, "vb_twilio_inbound_throttled_bytes_total", NULL), 0);
    /* The gap went to the model as silence (the timestamp jump), and so
     * did the model get all the audio: 4 bytes of PCM16 at 16 kHz for
     * each μ-law byte. */
    ASSERT_GE(msum(t.m, "vb_twilio_silence_frames_total", NULL),
              (double)gapped);
    ASSERT_GE(t.model_bytes, (double)(sent + gapped) * FRAME * 4 * 0.98);
    /* The turn ended: the echo model answered the tone. */
    ASSERT_GE(field(t.out, "bytes_heard"), 8000);
    timing_free(&t);
}

/* The same leg without jitter, stall or gap: the baseline holds nothing
 * back, so the counts above come from the timing and not the call. */
TEST_T(steady_leg_holds_and_gaps_nothing, 60)
{
    timing_run_t t;
    timing_call(&t, (const char *const[]){"--tail", "3", NULL});
    /* A loaded machine may run a tick late, never by a stall's second. */
    ASSERT_LE(field(t.out, "frames_held"), 10);
    ASSERT_EQ(field(t.out, "frames_gapped"), 0);
    ASSERT_LE(field(t.out, "max_hold_ms"), 500);
    ASSERT_EQ(msum(t.m, "vb_twilio_media_in_total", NULL),
              (double)field(t.out, "frames_sent"));
    ASSERT_GE(field(t.out, "bytes_heard"), 8000);
    timing_free(&t);
}
