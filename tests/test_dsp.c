/* SPDX-License-Identifier: MIT */
/*
 * Per-call DSP: inbound μ-law 8k -> PCM16 16k with exact counts; outbound
 * PCM16 24k chunks of any size -> exact 160-byte μ-law frames, independent
 * of chunking; flush at end of turn; clear at barge-in leaving nothing
 * stale; the delay of each direction against docs/dsp.md. Run on both
 * backends (speexdsp is the default).
 */
#include "core/err.h"
#include "dsp/dsp.h"
#include "dsp/g711.h"
#include "tests/test.h"
#include "tests/test_dsp_signal.h"

static const vb_dsp_config_t SPEEX = {VB_RESAMPLER_SPEEXDSP,
                                      VB_RESAMPLER_QUALITY_DEFAULT};
static const vb_dsp_config_t LSR = {VB_RESAMPLER_LIBSAMPLERATE,
                                    VB_RESAMPLER_QUALITY_DEFAULT};

static vb_dsp_t *make(const vb_dsp_config_t *cfg)
{
    vb_dsp_t *d = NULL;
    ASSERT_EQ(vb_dsp_create(&d, cfg), 0);
    ASSERT_NOT_NULL(d);
    return d;
}

/* Collected outbound μ-law, frame after frame. */
typedef struct sink {
    uint8_t *buf;
    size_t n, cap;
} sink_t;

static void sink_add(sink_t *s, const uint8_t *frames, size_t nf)
{
    size_t bytes = nf * VB_DSP_FRAME_BYTES;
    if (bytes == 0)
        return;
    if (s->n + bytes > s->cap) {
        s->cap = (s->n + bytes) * 2;
        s->buf = realloc(s->buf, s->cap);
        ASSERT_NOT_NULL(s->buf);
    }
    memcpy(s->buf + s->n, frames, bytes);
    s->n += bytes;
}

/* One vb_dsp_outbound call with exactly VB_DSP_OUT_FRAMES_MAX(n) frames of
 * room (heap, so ASan sees any overrun); frames go to the sink. Returns the
 * frame count. */
static size_t push(vb_dsp_t *d, sink_t *s, const int16_t *pcm, size_t n)
{
    size_t max = VB_DSP_OUT_FRAMES_MAX(n), nf = 99;
    uint8_t *frames = malloc(max * VB_DSP_FRAME_BYTES + 1);
    ASSERT_NOT_NULL(frames);
    ASSERT_EQ(vb_dsp_outbound(d, pcm, n, frames, max, &nf), 0);
    ASSERT_LE(nf, max);
    sink_add(s, frames, nf);
    free(frames);
    return nf;
}

static size_t flush(vb_dsp_t *d, sink_t *s)
{
    uint8_t *frames = malloc(VB_DSP_FLUSH_FRAMES_MAX * VB_DSP_FRAME_BYTES);
    ASSERT_NOT_NULL(frames);
    size_t nf = 99;
    ASSERT_EQ(vb_dsp_flush(d, frames, VB_DSP_FLUSH_FRAMES_MAX, &nf), 0);
    ASSERT_LE(nf, VB_DSP_FLUSH_FRAMES_MAX);
    sink_add(s, frames, nf);
    free(frames);
    return nf;
}

/* Speech-band content plus some above 4 kHz (which must be filtered). */
static int16_t *signal24k(size_t n, uint64_t seed)
{
    int16_t *x = malloc(n * sizeof(*x));
    ASSERT_NOT_NULL(x);
    for (size_t i = 0; i < n; i++) {
        double t = i / 24000.0;
        x[i] = sig_clip(7000 * sin(2 * M_PI * 310 * t) +
                        5000 * sin(2 * M_PI * 2200 * t + 1) +
                        2000 * sin(2 * M_PI * 6100 * t) +
                        (double)(sig_rand(&seed) % 1001) - 500);
    }
    return x;
}

/* ---- creation --------------------------------------------------------- */

TEST(create_and_config_errors)
{
    vb_dsp_t *d = NULL;
    ASSERT_EQ(vb_dsp_create(NULL, &SPEEX), VB_EINVAL);
    ASSERT_EQ(vb_dsp_create(&d, NULL), VB_EINVAL);
    vb_dsp_destroy(NULL);
    /* libsamplerate LINEAR / ZERO_ORDER_HOLD cannot do 24k -> 8k. */
    for (int q = 3; q <= 4; q++) {
        vb_dsp_config_t bad = {VB_RESAMPLER_LIBSAMPLERATE, q};
        ASSERT_EQ(vb_dsp_create(&d, &bad), VB_ECONFIG);
        ASSERT_NULL(d);
    }
    vb_dsp_config_t badq = {VB_RESAMPLER_SPEEXDSP, 11};
    ASSERT_EQ(vb_dsp_create(&d, &badq), VB_ECONFIG);
    for (int q = 0; q <= 10; q++) {
        vb_dsp_config_t ok = {VB_RESAMPLER_SPEEXDSP, q};
        d = make(&ok);
        vb_dsp_destroy(d);
    }
    for (int q = 0; q <= 2; q++) {
        vb_dsp_config_t ok = {VB_RESAMPLER_LIBSAMPLERATE, q};
        d = make(&ok);
        vb_dsp_destroy(d);
    }
}

/* ---- inbound ---------------------------------------------------------- */

static void inbound_10_minutes(const vb_dsp_config_t *cfg)
{
    vb_dsp_t *d = make(cfg);
    int16_t *tone = sig_tone(1000, SIG_AMP, 8000, 160); /* 20 periods */
    uint8_t ulaw[160];
    vb_g711_ulaw_encode(ulaw, tone, 160);
    int16_t pcm[VB_DSP_FRAME_SAMPLES];
    uint64_t total = 0;
    for (int i = 0; i < 10 * 60 * 50; i++) {
        size_t n = 0;
        ASSERT_EQ(vb_dsp_inbound(d, ulaw, 160, pcm, VB_DSP_FRAME_SAMPLES, &n),
                  0);
        if (n != VB_DSP_FRAME_SAMPLES)
            vb_test_fail(__FILE__, __LINE__, "frame %d gave %zu samples", i, n);
        total += n;
    }
    ASSERT_UEQ(total, 10ull * 60 * 16000);
    free(tone);
    vb_dsp_destroy(d);
}

TEST(speexdsp_inbound_320_per_frame_10_minutes)
{
    inbound_10_minutes(&SPEEX);
}

TEST(libsamplerate_inbound_320_per_frame_10_minutes)
{
    inbound_10_minutes(&LSR);
}

TEST(inbound_any_size_and_enospc)
{
    vb_dsp_t *d = make(&SPEEX), *fresh = make(&SPEEX);
    uint8_t ulaw[1000];
    for (size_t i = 0; i < sizeof(ulaw); i++)
        ulaw[i] = (uint8_t)(i * 37);
    int16_t a[2000], b[2000];
    size_t na = 0, nb = 0, n;
    /* Too little room: refused, nothing consumed. */
    ASSERT_EQ(vb_dsp_inbound(d, ulaw, 7, a, 13, &n), VB_ENOSPC);
    ASSERT_EQ(n, 0);
    static const size_t sizes[] = {1, 7, 0, 160, 333, 499};
    size_t off = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ASSERT_EQ(
            vb_dsp_inbound(d, ulaw + off, sizes[i], a + na, 2 * sizes[i], &n),
            0);
        ASSERT_EQ(n, 2 * sizes[i]);
        na += n;
        off += sizes[i];
    }
    ASSERT_EQ(vb_dsp_inbound(fresh, ulaw, off, b, sizeof(b) / 2, &nb), 0);
    ASSERT_EQ(na, nb);
    ASSERT_MEM_EQ(a, b, na * sizeof(a[0]));
    ASSERT_EQ(vb_dsp_inbound(d, NULL, 1, a, 2, &n), VB_EINVAL);
    ASSERT_EQ(vb_dsp_inbound(d, NULL, 0, NULL, 0, &n), 0);
    vb_dsp_destroy(d);
    vb_dsp_destroy(fresh);
}

/* Through μ-law and the resampler: in-band tones keep their level (μ-law's
 * ~37 dB SNR limits THD+N here, not the resampler). */
static void inbound_tones(const vb_dsp_config_t *cfg)
{
    static const double fs[] = {300, 1000, 2000, 3400};
    for (size_t k = 0; k < sizeof(fs) / sizeof(fs[0]); k++) {
        vb_dsp_t *d = make(cfg);
        int16_t *x = sig_tone(fs[k], SIG_AMP, 8000, 4000);
        uint8_t u[4000];
        vb_g711_ulaw_encode(u, x, 4000);
        int16_t *y = malloc(8000 * sizeof(*y));
        size_t n;
        ASSERT_EQ(vb_dsp_inbound(d, u, 4000, y, 8000, &n), 0);
        ASSERT_EQ(n, 8000);
        double thdn_db;
        double g = 20 * log10(sig_fit(y + 1600, 5600, fs[k], 16000, &thdn_db) /
                              SIG_AMP);
        ASSERT_NEAR(g, 0, 1.0);
        ASSERT_DBL_OP(thdn_db, <, -30);
        free(x);
        free(y);
        vb_dsp_destroy(d);
    }
}

TEST(inbound_tones_keep_level)
{
    inbound_tones(&SPEEX);
    inbound_tones(&LSR);
}

/* ---- outbound --------------------------------------------------------- */

static void outbound_10_minutes(const vb_dsp_config_t *cfg)
{
    vb_dsp_t *d = make(cfg);
    int16_t *tone = sig_tone(1000, SIG_AMP, 24000, 480);
    uint8_t frames[2 * VB_DSP_FRAME_BYTES];
    uint64_t total = 0;
    for (int i = 0; i < 10 * 60 * 50; i++) {
        size_t nf = 0;
        ASSERT_EQ(vb_dsp_outbound(d, tone, 480, frames, 2, &nf), 0);
        /* 480 samples at 24 kHz are exactly one 160-byte frame. */
        if (nf != 1 || vb_dsp_pending(d) != 0)
            vb_test_fail(__FILE__, __LINE__, "chunk %d: %zu frames, %zu left",
                         i, nf, vb_dsp_pending(d));
        total += nf;
    }
    ASSERT_UEQ(total, 10ull * 60 * 50);
    free(tone);
    vb_dsp_destroy(d);
}

TEST(speexdsp_outbound_one_frame_per_20ms_10_minutes)
{
    outbound_10_minutes(&SPEEX);
}

TEST(libsamplerate_outbound_one_frame_per_20ms_10_minutes)
{
    outbound_10_minutes(&LSR);
}

static void chunks_equal_one_shot(const vb_dsp_config_t *cfg, uint64_t seed)
{
    const size_t n = 3 * 24000;
    int16_t *x = signal24k(n, seed);
    vb_dsp_t *one = make(cfg), *many = make(cfg);
    sink_t a = {0}, b = {0};
    push(one, &a, x, n);
    size_t off = 0;
    while (off < n) {
        /* 0 to 1.5 chunks of 20 ms, with some tiny ones. */
        size_t k = sig_rand(&seed) % 4 == 0 ? sig_rand_range(&seed, 0, 5)
                                            : sig_rand_range(&seed, 0, 1500);
        if (k > n - off)
            k = n - off;
        push(many, &b, x + off, k);
        ASSERT_LT(vb_dsp_pending(many), VB_DSP_FRAME_BYTES);
        off += k;
    }
    /* Frames only: 3 s = 150 frames, all out (nothing left pending). */
    ASSERT_EQ(a.n % VB_DSP_FRAME_BYTES, 0);
    ASSERT_EQ(a.n, 150 * VB_DSP_FRAME_BYTES);
    ASSERT_EQ(a.n, b.n);
    ASSERT_MEM_EQ(a.buf, b.buf, a.n);
    ASSERT_EQ(flush(one, &a), flush(many, &b));
    ASSERT_EQ(a.n, b.n);
    ASSERT_MEM_EQ(a.buf, b.buf, a.n);
    free(a.buf);
    free(b.buf);
    free(x);
    vb_dsp_destroy(one);
    vb_dsp_destroy(many);
}

TEST(speexdsp_random_chunks_equal_one_shot)
{
    for (uint64_t seed = 1; seed <= 5; seed++)
        chunks_equal_one_shot(&SPEEX, seed);
}

TEST(libsamplerate_random_chunks_equal_one_shot)
{
    for (uint64_t seed = 1; seed <= 5; seed++)
        chunks_equal_one_shot(&LSR, seed);
}

TEST(outbound_enospc_consumes_nothing)
{
    vb_dsp_t *d = make(&SPEEX), *fresh = make(&SPEEX);
    int16_t *x = signal24k(1000, 5);
    uint8_t f1[4 * VB_DSP_FRAME_BYTES], f2[4 * VB_DSP_FRAME_BYTES];
    size_t n1 = 99, n2;
    ASSERT_EQ(VB_DSP_OUT_FRAMES_MAX(1000), 3);
    ASSERT_EQ(vb_dsp_outbound(d, x, 1000, f1, 2, &n1), VB_ENOSPC);
    ASSERT_EQ(n1, 0);
    ASSERT_EQ(vb_dsp_pending(d), 0);
    ASSERT_EQ(vb_dsp_outbound(d, x, 1000, f1, 3, &n1), 0);
    ASSERT_EQ(vb_dsp_outbound(fresh, x, 1000, f2, 3, &n2), 0);
    ASSERT_EQ(n1, 2); /* 334 samples: two frames, 14 bytes pending */
    ASSERT_EQ(vb_dsp_pending(d), 14);
    ASSERT_EQ(n1, n2);
    ASSERT_MEM_EQ(f1, f2, n1 * VB_DSP_FRAME_BYTES);
    ASSERT_EQ(vb_dsp_outbound(d, NULL, 5, f1, 4, &n1), VB_EINVAL);
    ASSERT_EQ(vb_dsp_outbound(d, x, 5, NULL, 4, &n1), VB_EINVAL);
    ASSERT_EQ(vb_dsp_outbound(d, NULL, 0, f1, 4, &n1), 0);
    ASSERT_EQ(n1, 0);
    free(x);
    vb_dsp_destroy(d);
    vb_dsp_destroy(fresh);
}

/* ---- flush ------------------------------------------------------------ */

static void check_flush(const vb_dsp_config_t *cfg)
{
    vb_dsp_t *d = make(cfg);
    sink_t s = {0};
    /* Nothing sent yet: flush is a no-op. */
    ASSERT_EQ(flush(d, &s), 0);
    /* 110 ms at 24 kHz -> 880 samples at 8 kHz: 5 frames and 80 pending
     * (the first `delay` of them the resampler's leading silence). */
    int16_t *x = sig_tone(1000, SIG_AMP, 24000, 2640);
    ASSERT_EQ(push(d, &s, x, 2640), 5);
    ASSERT_EQ(vb_dsp_pending(d), 80);
    size_t delay = (size_t)llround(vb_dsp_delay_ns(d, VB_DSP_OUTBOUND) * 8e-6);
    ASSERT_EQ(flush(d, &s), 1);
    ASSERT_EQ(s.n, 6 * VB_DSP_FRAME_BYTES);
    ASSERT_EQ(vb_dsp_pending(d), 0);
    /* The last frame: 80 pending + the drained tail (the tone's last
     * `delay` samples), then μ-law silence up to 160. */
    const uint8_t *last = s.buf + 5 * VB_DSP_FRAME_BYTES;
    size_t audio = 80 + delay;
    ASSERT_LT(audio, VB_DSP_FRAME_BYTES);
    for (size_t i = audio; i < VB_DSP_FRAME_BYTES; i++)
        ASSERT_EQ(last[i], VB_G711_ULAW_SILENCE);
    /* The tone runs to the end of the audio: the tail came out. */
    int16_t tail[VB_DSP_FRAME_BYTES];
    vb_g711_ulaw_decode(tail, last, VB_DSP_FRAME_BYTES);
    ASSERT_DBL_OP(sig_rms(tail + 80, delay - 2), >, SIG_AMP / M_SQRT2 / 2);
    /* A second flush without new audio emits nothing. */
    ASSERT_EQ(flush(d, &s), 0);
    /* The next turn continues normally. */
    ASSERT_EQ(push(d, &s, x, 480), 1);
    free(x);
    free(s.buf);
    vb_dsp_destroy(d);
}

TEST(flush_pads_and_drains)
{
    check_flush(&SPEEX);
    check_flush(&LSR);
}

TEST(flush_enospc)
{
    vb_dsp_t *d = make(&SPEEX);
    int16_t *x = sig_tone(1000, SIG_AMP, 24000, 450);
    uint8_t f[2 * VB_DSP_FRAME_BYTES];
    size_t nf;
    ASSERT_EQ(vb_dsp_outbound(d, x, 450, f, 2, &nf), 0);
    ASSERT_EQ(vb_dsp_pending(d), 150); /* + 40 drained > 160 */
    ASSERT_EQ(vb_dsp_flush(d, f, 1, &nf), VB_ENOSPC);
    ASSERT_EQ(vb_dsp_pending(d), 150);
    ASSERT_EQ(vb_dsp_flush(d, f, 2, &nf), 0);
    ASSERT_EQ(nf, 2);
    ASSERT_EQ(f[2 * VB_DSP_FRAME_BYTES - 1], VB_G711_ULAW_SILENCE);
    free(x);
    vb_dsp_destroy(d);
}

/* ---- clear (barge-in) ------------------------------------------------- */

/* Loud audio, leaving a partial frame and a full filter; then `clear` (or
 * not), then silence. Returns the μ-law emitted after the loud part. */
static sink_t after_loud(const vb_dsp_config_t *cfg, int do_clear)
{
    vb_dsp_t *d = make(cfg);
    sink_t before = {0}, after = {0};
    int16_t *loud = sig_tone(1200, 30000, 24000, 24000 / 5 + 123);
    push(d, &before, loud, 24000 / 5 + 123);
    ASSERT_GT(vb_dsp_pending(d), 0);
    if (do_clear) {
        ASSERT_EQ(vb_dsp_clear(d), 0);
        ASSERT_EQ(vb_dsp_pending(d), 0);
        /* Nothing left to flush either. */
        ASSERT_EQ(flush(d, &after), 0);
    }
    int16_t *quiet = calloc(4800, sizeof(*quiet));
    push(d, &after, quiet, 4800);
    flush(d, &after);
    free(loud);
    free(quiet);
    free(before.buf);
    vb_dsp_destroy(d);
    return after;
}

static void clear_leaves_nothing(const vb_dsp_config_t *cfg)
{
    sink_t with = after_loud(cfg, 1), without = after_loud(cfg, 0);
    /* With clear: pure digital silence, every byte μ-law zero. */
    ASSERT_GT(with.n, 0);
    for (size_t i = 0; i < with.n; i++)
        if (with.buf[i] != VB_G711_ULAW_SILENCE)
            vb_test_fail(__FILE__, __LINE__, "byte %zu after clear: %#x", i,
                         with.buf[i]);
    /* Without it the stale partial frame and filter tail do play: the
     * check above can see them. */
    size_t stale = 0;
    for (size_t i = 0; i < without.n; i++)
        stale += without.buf[i] != VB_G711_ULAW_SILENCE;
    ASSERT_GT(stale, 40);
    free(with.buf);
    free(without.buf);

    /* And new audio after a clear comes out exactly as from a new call. */
    vb_dsp_t *d = make(cfg), *fresh = make(cfg);
    sink_t junk = {0}, a = {0}, b = {0};
    int16_t *x = signal24k(24000, 11), *y = signal24k(12000, 12);
    push(d, &junk, x, 24000 - 77);
    ASSERT_EQ(vb_dsp_clear(d), 0);
    push(d, &a, y, 12000);
    flush(d, &a);
    push(fresh, &b, y, 12000);
    flush(fresh, &b);
    ASSERT_EQ(a.n, b.n);
    ASSERT_MEM_EQ(a.buf, b.buf, a.n);
    free(x);
    free(y);
    free(junk.buf);
    free(a.buf);
    free(b.buf);
    vb_dsp_destroy(d);
    vb_dsp_destroy(fresh);
}

TEST(speexdsp_clear_leaves_nothing_from_before)
{
    clear_leaves_nothing(&SPEEX);
}

TEST(libsamplerate_clear_leaves_nothing_from_before)
{
    clear_leaves_nothing(&LSR);
}

TEST(reset_returns_both_directions_to_fresh)
{
    vb_dsp_t *d = make(&SPEEX), *fresh = make(&SPEEX);
    sink_t junk = {0}, a = {0}, b = {0};
    int16_t *x = signal24k(2000, 1);
    uint8_t u[400];
    int16_t pa[800], pb[800];
    size_t n;
    for (int i = 0; i < 400; i++)
        u[i] = (uint8_t)(i * 13);
    push(d, &junk, x, 2000);
    ASSERT_EQ(vb_dsp_inbound(d, u, 400, pa, 800, &n), 0);
    ASSERT_EQ(vb_dsp_reset(d), 0);
    ASSERT_EQ(vb_dsp_inbound(d, u, 400, pa, 800, &n), 0);
    ASSERT_EQ(vb_dsp_inbound(fresh, u, 400, pb, 800, &n), 0);
    ASSERT_MEM_EQ(pa, pb, sizeof(pa));
    push(d, &a, x, 2000);
    push(fresh, &b, x, 2000);
    ASSERT_EQ(a.n, b.n);
    ASSERT_MEM_EQ(a.buf, b.buf, a.n);
    free(x);
    free(junk.buf);
    free(a.buf);
    free(b.buf);
    vb_dsp_destroy(d);
    vb_dsp_destroy(fresh);
}

/* ---- delay ------------------------------------------------------------ */

static void delay_matches_docs(const vb_dsp_config_t *cfg, const char *row)
{
    double doc_in, doc_out;
    sig_doc_delay(row, &doc_in, &doc_out);
    vb_dsp_t *d = make(cfg);

    /* Inbound: a pulse in μ-law at 8 kHz, out at 16 kHz. */
    int16_t x8[4000], y16[8000];
    uint8_t u[4000];
    sig_pulse(x8, 4000, 8000, 0.25, 20000);
    vb_g711_ulaw_encode(u, x8, 4000);
    vb_g711_ulaw_decode(x8, u, 4000); /* the reference is what was sent */
    size_t n, total = 0;
    for (int off = 0; off < 4000; off += 160) {
        ASSERT_EQ(vb_dsp_inbound(d, u + off, 160, y16 + total, 320, &n), 0);
        total += n;
    }
    ASSERT_EQ(total, 8000);
    double m_in =
        (sig_centroid(y16, 8000, 16000) - sig_centroid(x8, 4000, 8000)) * 1e3;

    /* Outbound: a pulse at 24 kHz, out as μ-law frames at 8 kHz. */
    int16_t *x24 = malloc(12000 * sizeof(*x24));
    sig_pulse(x24, 12000, 24000, 0.25, 20000);
    sink_t s = {0};
    for (int off = 0; off < 12000; off += 480)
        push(d, &s, x24 + off, 480);
    ASSERT_EQ(s.n, 4000);
    int16_t y8[4000];
    vb_g711_ulaw_decode(y8, s.buf, 4000);
    double m_out =
        (sig_centroid(y8, 4000, 8000) - sig_centroid(x24, 12000, 24000)) * 1e3;

    ASSERT_NEAR(m_in, doc_in, 0.5);
    ASSERT_NEAR(m_out, doc_out, 0.5);
    ASSERT_NEAR(m_in, vb_dsp_delay_ns(d, VB_DSP_INBOUND) / 1e6, 0.05);
    ASSERT_NEAR(m_out, vb_dsp_delay_ns(d, VB_DSP_OUTBOUND) / 1e6, 0.05);
    free(x24);
    free(s.buf);
    vb_dsp_destroy(d);
}

TEST(speexdsp_delay_matches_docs)
{
    delay_matches_docs(&SPEEX, "speexdsp 5");
}

TEST(libsamplerate_delay_matches_docs)
{
    delay_matches_docs(&LSR, "libsamplerate 1");
}
