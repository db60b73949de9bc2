/* SPDX-License-Identifier: MIT */
/*
 * dsp/recorder: a recorder thread fed through its channel by this thread
 * (the producer side twilio-io uses), files decoded back with libopusfile.
 * Run again under ThreadSanitizer (THREADED_TESTS).
 */
#include <errno.h>
#include <math.h>
#include <opus/opusfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/msg.h"
#include "dsp/g711.h"
#include "dsp/recorder.h"
#include "tests/test.h"

#define NS_PER_SMP 125000ull

typedef struct fx {
    vb_metrics_t *m;
    vb_recorder_t *r;
    vb_chan_t *ch;
    char dir[300];
} fx_t;

static bool want_loud(void *ud, const vb_msg_open_t *o)
{
    (void)ud;
    return strcmp(o->assistant, "quiet") != 0;
}

static void fx_up_want(fx_t *f, uint32_t slots, bool with_want);

static void fx_up(fx_t *f, uint32_t slots)
{
    fx_up_want(f, slots, false);
}

static void fx_up_want(fx_t *f, uint32_t slots, bool with_want)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "%s", vb_test_tmpdir());
    f->m = vb_metrics_create();
    ASSERT_NOT_NULL(f->m);
    vb_recorder_config_t c = {.dir = f->dir,
                              .lane = 0,
                              .max_calls = 4,
                              .slots = slots,
                              .backend = VB_RESAMPLER_SPEEXDSP,
                              .quality = VB_RESAMPLER_QUALITY_DEFAULT,
                              .bitrate = 48000,
                              .metrics = f->m,
                              .want = with_want ? want_loud : NULL};
    ASSERT_EQ(vb_recorder_create(&f->r, &c), 0);
    f->ch = vb_recorder_chan(f->r);
    ASSERT_EQ(vb_recorder_start(f->r), 0);
}

static void fx_down(fx_t *f)
{
    vb_recorder_destroy(f->r);
    vb_metrics_destroy(f->m);
}

static int64_t metric(fx_t *f, const char *name, const char *reason)
{
    vb_metric_t id;
    int rc = reason
                 ? vb_metrics_add(f->m, VB_METRIC_COUNTER, name, "",
                                  VB_LABELS("reason", reason), &id)
                 : vb_metrics_add(f->m, VB_METRIC_COUNTER, name, "", NULL, &id);
    ASSERT_EQ(rc, 0);
    return vb_metrics_value(f->m, id);
}

static void push(fx_t *f, uint8_t kind, uint8_t flags, uint32_t slot,
                 uint64_t t, const void *data, size_t len)
{
    vb_call_id_t id = {slot, 7};
    /* A producer without a stage: wait for room, ring at once. */
    uint64_t end = vb_clock_now_ns() + 10 * VB_NS_PER_SEC;
    while (vb_chan_send(f->ch, kind, flags, id, 0, t, data, len) != 0) {
        ASSERT_LT(vb_clock_now_ns(), end);
        usleep(1000);
    }
    vb_chan_flush(f->ch);
}

static void open_as(fx_t *f, uint32_t slot, const char *sid, uint64_t t0,
                    const char *assistant)
{
    vb_msg_open_t o;
    memset(&o, 0, sizeof(o));
    snprintf(o.call_sid, sizeof(o.call_sid), "%s", sid);
    snprintf(o.assistant, sizeof(o.assistant), "%s", assistant);
    snprintf(o.stream_sid, sizeof(o.stream_sid), "MZ%s", sid);
    push(f, VB_MSG_CALL_OPEN, 0, slot, t0, &o, sizeof(o));
}

static void open_call(fx_t *f, uint32_t slot, const char *sid, uint64_t t0)
{
    open_as(f, slot, sid, t0, "");
}

/* `secs` of a sine at `hz` as μ-law frames on `flags`'s channel from
 * position `from_s`. */
static void tone(fx_t *f, uint32_t slot, uint8_t flags, uint64_t t0,
                 double from_s, double secs, double hz)
{
    size_t n = (size_t)(secs * 8000);
    for (size_t off = 0; off < n; off += 160) {
        int16_t pcm[160];
        uint8_t ul[160];
        for (size_t i = 0; i < 160; i++)
            pcm[i] = (int16_t)(8000 *
                               sin(2 * M_PI * hz * (double)(off + i) / 8000.0));
        vb_g711_ulaw_encode(ul, pcm, 160);
        uint64_t t = t0 + (uint64_t)(from_s * 1e9) + off * NS_PER_SMP;
        push(f, VB_MSG_AUDIO, flags, slot, t, ul, 160);
    }
}

typedef struct dec {
    int channels;
    uint32_t input_rate;
    size_t n; /* samples per channel at 48 kHz */
    int16_t *pcm;
} dec_t;

static void decode(const char *path, dec_t *d)
{
    int err = 0;
    OggOpusFile *of = op_open_file(path, &err);
    if (of == NULL)
        vb_test_fail(__FILE__, __LINE__, "op_open_file(%s): %d", path, err);
    d->channels = op_head(of, -1)->channel_count;
    d->input_rate = op_head(of, -1)->input_sample_rate;
    size_t cap = 48000 * 8;
    d->pcm = malloc(cap * 2 * sizeof(int16_t));
    d->n = 0;
    for (;;) {
        if (d->n + 5760 > cap) {
            cap *= 2;
            d->pcm = realloc(d->pcm, cap * 2 * sizeof(int16_t));
        }
        int k = op_read_stereo(of, d->pcm + 2 * d->n, 5760 * 2);
        if (k == OP_HOLE)
            continue;
        if (k <= 0)
            break;
        d->n += (size_t)k;
    }
    op_free(of);
}

/* RMS of channel `c` over [from_s, to_s). */
static double rms(const dec_t *d, int c, double from_s, double to_s)
{
    size_t a = (size_t)(from_s * 48000), b = (size_t)(to_s * 48000);
    if (b > d->n)
        b = d->n;
    double e = 0;
    for (size_t i = a; i < b; i++)
        e += (double)d->pcm[2 * i + (size_t)c] * d->pcm[2 * i + (size_t)c];
    return b > a ? sqrt(e / (double)(b - a)) : 0;
}

TEST(path_is_dir_callsid_opus_and_refuses_unusable_sids)
{
    char p[64];
    ASSERT_EQ(vb_recorder_path("/rec", "CA0123abc", p, sizeof(p)), 0);
    ASSERT_STR_EQ(p, "/rec/CA0123abc.opus");
    ASSERT_EQ(vb_recorder_path("/rec", "../etc", p, sizeof(p)), VB_EINVAL);
    ASSERT_EQ(vb_recorder_path("/rec", "", p, sizeof(p)), VB_EINVAL);
    ASSERT_EQ(vb_recorder_path("/rec", "CA 1", p, sizeof(p)), VB_EINVAL);
    ASSERT_EQ(vb_recorder_path("/a/very/long/dir", "CA1", p, 8), VB_EINVAL);
}

TEST(a_call_is_stereo_on_one_timeline_and_a_clear_cuts_the_model_track)
{
    fx_t f;
    fx_up(&f, 1024);
    uint64_t t0 = vb_clock_now_ns();
    open_call(&f, 1, "CAtimeline", t0);
    /* Caller: 440 Hz for 0.0-2.0 s. Model: 1 kHz queued to play from
     * 0.5 s for 3 s, cleared at 1.5 s; the call ends at 2.5 s. */
    tone(&f, 1, VB_RECORDER_CALLER, t0, 0.0, 2.0, 440);
    tone(&f, 1, VB_RECORDER_MODEL, t0, 0.5, 3.0, 1000);
    push(&f, VB_MSG_CLEAR, 0, 1, t0 + 1500 * VB_NS_PER_MS, NULL, 0);
    push(&f, VB_MSG_CALL_CLOSE, 0, 1, t0 + 2500 * VB_NS_PER_MS, "stop", 4);
    vb_recorder_stop(f.r);

    char path[400];
    snprintf(path, sizeof(path), "%s/CAtimeline.opus", f.dir);
    dec_t d;
    decode(path, &d);
    ASSERT_EQ(d.channels, 2);
    ASSERT_EQ(d.input_rate, VB_RECORDER_RATE);
    ASSERT_NEAR((double)d.n / 48000.0, 2.5, 0.03);
    /* Left: the caller for 2 s, then silence. */
    ASSERT_DBL_OP(rms(&d, 0, 0.1, 1.9), >, 3000);
    ASSERT_DBL_OP(rms(&d, 0, 2.1, 2.5), <, 100);
    /* Right: nothing before 0.5 s, the model from 0.5 s to the clear at
     * 1.5 s, nothing of the cleared rest. */
    ASSERT_DBL_OP(rms(&d, 1, 0.0, 0.45), <, 100);
    ASSERT_DBL_OP(rms(&d, 1, 0.6, 1.4), >, 3000);
    ASSERT_DBL_OP(rms(&d, 1, 1.6, 2.5), <, 100);
    ASSERT_EQ(metric(&f, "vb_recording_files_total", NULL), 1);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(metric(&f, "vb_recording_bytes_total", NULL), st.st_size);
    /* The report's question: this call's file, not a later one's. */
    char named[400];
    ASSERT_EQ(vb_recorder_file(f.r, (vb_call_id_t){1, 7}, "CAtimeline", named,
                               sizeof(named)),
              0);
    ASSERT_STR_EQ(named, path);
    ASSERT_EQ(vb_recorder_file(f.r, (vb_call_id_t){1, 8}, "CAtimeline", named,
                               sizeof(named)),
              VB_ENOENT);
    ASSERT_EQ(vb_recorder_file(f.r, (vb_call_id_t){2, 7}, "CAtimeline", named,
                               sizeof(named)),
              VB_ENOENT);
    ASSERT_EQ(vb_recorder_file(NULL, (vb_call_id_t){1, 7}, "CAtimeline", named,
                               sizeof(named)),
              VB_ENOENT);
    free(d.pcm);
    fx_down(&f);
}

TEST(two_calls_at_once_get_their_own_files)
{
    fx_t f;
    fx_up(&f, 1024);
    uint64_t t0 = vb_clock_now_ns();
    open_call(&f, 0, "CAfirst", t0);
    open_call(&f, 2, "CAsecond", t0);
    tone(&f, 0, VB_RECORDER_CALLER, t0, 0.0, 1.0, 440);
    tone(&f, 2, VB_RECORDER_MODEL, t0, 0.0, 1.0, 700);
    push(&f, VB_MSG_CALL_CLOSE, 0, 0, t0 + VB_NS_PER_SEC, "stop", 4);
    push(&f, VB_MSG_CALL_CLOSE, 0, 2, t0 + VB_NS_PER_SEC, "stop", 4);
    vb_recorder_stop(f.r);
    char path[400];
    dec_t a, b;
    snprintf(path, sizeof(path), "%s/CAfirst.opus", f.dir);
    decode(path, &a);
    snprintf(path, sizeof(path), "%s/CAsecond.opus", f.dir);
    decode(path, &b);
    ASSERT_DBL_OP(rms(&a, 0, 0.1, 0.9), >, 3000);
    ASSERT_DBL_OP(rms(&a, 1, 0.1, 0.9), <, 100);
    ASSERT_DBL_OP(rms(&b, 0, 0.1, 0.9), <, 100);
    ASSERT_DBL_OP(rms(&b, 1, 0.1, 0.9), >, 3000);
    free(a.pcm);
    free(b.pcm);
    fx_down(&f);
}

TEST(an_existing_file_is_never_overwritten_and_a_bad_sid_is_refused)
{
    fx_t f;
    fx_up(&f, 1024);
    char path[400];
    snprintf(path, sizeof(path), "%s/CAtaken.opus", f.dir);
    FILE *old = fopen(path, "w");
    ASSERT_NOT_NULL(old);
    fputs("precious", old);
    fclose(old);
    uint64_t t0 = vb_clock_now_ns();
    open_call(&f, 0, "CAtaken", t0);
    open_call(&f, 1, "CA../x", t0);
    tone(&f, 0, VB_RECORDER_CALLER, t0, 0.0, 0.2, 440);
    push(&f, VB_MSG_CALL_CLOSE, 0, 0, t0 + VB_NS_PER_SEC / 2, "stop", 4);
    push(&f, VB_MSG_CALL_CLOSE, 0, 1, t0 + VB_NS_PER_SEC / 2, "stop", 4);
    vb_recorder_stop(f.r);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_size, 8); /* untouched */
    /* Not opened here, so not named in the report. */
    char named[400];
    ASSERT_EQ(vb_recorder_file(f.r, (vb_call_id_t){0, 7}, "CAtaken", named,
                               sizeof(named)),
              VB_ENOENT);
    ASSERT_EQ(metric(&f, "vb_recording_errors_total", "open"), 1);
    ASSERT_EQ(metric(&f, "vb_recording_errors_total", "bad_callsid"), 1);
    ASSERT_EQ(metric(&f, "vb_recording_files_total", NULL), 0);
    fx_down(&f);
}

TEST(stop_finishes_an_open_call_into_a_complete_file)
{
    fx_t f;
    fx_up(&f, 1024);
    uint64_t t0 = vb_clock_now_ns();
    open_call(&f, 3, "CAdrained", t0);
    /* Audio as it comes in real time for 0.6 s, and no CALL_CLOSE. */
    for (int k = 0; k < 30; k++) {
        uint8_t ul[160];
        memset(ul, 0x10, sizeof(ul)); /* a loud constant */
        push(&f, VB_MSG_AUDIO, VB_RECORDER_CALLER, 3,
             t0 + (uint64_t)k * 20 * VB_NS_PER_MS, ul, 160);
        while (vb_clock_now_ns() < t0 + (uint64_t)(k + 1) * 20 * VB_NS_PER_MS)
            usleep(1000);
    }
    vb_recorder_stop(f.r);
    char path[400];
    snprintf(path, sizeof(path), "%s/CAdrained.opus", f.dir);
    dec_t d;
    decode(path, &d);
    ASSERT_EQ(d.channels, 2);
    /* Up to the last message seen, less nothing: the watermark. */
    ASSERT_DBL_OP((double)d.n / 48000.0, >=, 0.5);
    ASSERT_DBL_OP((double)d.n / 48000.0, <=, 0.8);
    free(d.pcm);
    fx_down(&f);
}

TEST(the_assistant_decides_which_calls_are_recorded)
{
    fx_t f;
    fx_up_want(&f, 1024, true);
    uint64_t t0 = vb_clock_now_ns();
    open_as(&f, 0, "CAquiet", t0, "quiet");
    open_as(&f, 1, "CAsales", t0, "sales");
    tone(&f, 0, VB_RECORDER_CALLER, t0, 0.0, 0.4, 440);
    tone(&f, 1, VB_RECORDER_CALLER, t0, 0.0, 0.4, 440);
    push(&f, VB_MSG_CALL_CLOSE, 0, 0, t0 + VB_NS_PER_SEC / 2, "stop", 4);
    push(&f, VB_MSG_CALL_CLOSE, 0, 1, t0 + VB_NS_PER_SEC / 2, "stop", 4);
    vb_recorder_stop(f.r);
    char path[400];
    struct stat st;
    snprintf(path, sizeof(path), "%s/CAquiet.opus", f.dir);
    ASSERT_NE(stat(path, &st), 0);
    snprintf(path, sizeof(path), "%s/CAsales.opus", f.dir);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(vb_recorder_file(f.r, (vb_call_id_t){0, 7}, "CAquiet", path,
                               sizeof(path)),
              VB_ENOENT);
    ASSERT_EQ(vb_recorder_file(f.r, (vb_call_id_t){1, 7}, "CAsales", path,
                               sizeof(path)),
              0);
    ASSERT_EQ(metric(&f, "vb_recording_files_total", NULL), 1);
    fx_down(&f);
}
