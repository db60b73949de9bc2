/* SPDX-License-Identifier: MIT */
/*
 * Streaming resampler: configuration checks, frequency response, alias
 * rejection, THD+N, exact sample counts over 10 minutes of 20 ms frames,
 * delay (measured with a pulse, compared with vb_resampler_delay() and with
 * the figures docs/dsp.md states), chunking and reset invariance. Quality
 * tests run on both backends' defaults, which is what calls use.
 */
#include "core/err.h"
#include "dsp/resampler.h"
#include "tests/test.h"
#include "tests/test_dsp_signal.h"

typedef struct backend {
    const char *doc_row; /* first cell of the delay table in docs/dsp.md */
    vb_resampler_backend_t backend;
    int quality;
} backend_t;

static const backend_t SPEEX = {"speexdsp 5", VB_RESAMPLER_SPEEXDSP,
                                VB_RESAMPLER_QUALITY_DEFAULT};
static const backend_t LSR = {"libsamplerate 1", VB_RESAMPLER_LIBSAMPLERATE,
                              VB_RESAMPLER_QUALITY_DEFAULT};

static vb_resampler_t *make(const backend_t *b, unsigned in, unsigned out)
{
    vb_resampler_config_t cfg = {b->backend, b->quality, in, out};
    vb_resampler_t *r = NULL;
    ASSERT_EQ(vb_resampler_create(&r, &cfg), 0);
    ASSERT_NOT_NULL(r);
    return r;
}

/* Streams x[0..n) through r in chunks of `frame` samples; returns the
 * output (malloc'd) and its length in *n_out. */
static int16_t *stream(vb_resampler_t *r, const int16_t *x, size_t n,
                       size_t frame, size_t *n_out)
{
    size_t cap = vb_resampler_max_out(r, n) + 16;
    int16_t *y = malloc(cap * sizeof(*y));
    ASSERT_NOT_NULL(y);
    size_t total = 0;
    for (size_t off = 0; off < n; off += frame) {
        size_t k = n - off < frame ? n - off : frame, got;
        ASSERT_EQ(
            vb_resampler_process(r, x + off, k, y + total, cap - total, &got),
            0);
        total += got;
    }
    *n_out = total;
    return y;
}

/* Gain in dB and THD+N of a -6 dBFS tone at f through in -> out, streamed
 * in 20 ms frames for 0.5 s; analysed from 0.1 s to 0.45 s of output, past
 * the start-up transient. */
static double tone_gain(const backend_t *b, unsigned in, unsigned out, double f,
                        double *thdn_db)
{
    size_t n = in / 2;
    int16_t *x = sig_tone(f, SIG_AMP, in, n);
    vb_resampler_t *r = make(b, in, out);
    size_t ny;
    int16_t *y = stream(r, x, n, in / 50, &ny);
    size_t a = out / 10, e = out * 45 / 100;
    ASSERT_GE(ny, e);
    double amp = sig_fit(y + a, e - a, f, out, thdn_db);
    vb_resampler_destroy(r);
    free(x);
    free(y);
    return 20 * log10(amp / SIG_AMP);
}

static void tone_response(const backend_t *b, unsigned in, unsigned out)
{
    for (int f = 300; f <= 3400; f += 100) {
        double g = tone_gain(b, in, out, f, NULL);
        if (fabs(g) > 1.0)
            vb_test_fail(__FILE__, __LINE__, "%s %u->%u: %d Hz at %+.2f dB",
                         b->doc_row, in, out, f, g);
    }
}

static void thdn(const backend_t *b, unsigned in, unsigned out)
{
    double thdn_db;
    double g = tone_gain(b, in, out, 1000, &thdn_db);
    ASSERT_NEAR(g, 0, 0.1);
    ASSERT_DBL_OP(thdn_db, <, -60);
}

/* A tone above 4 kHz at 24 kHz must not fold into the 8 kHz output: its
 * output rms re the input rms, past the start-up transient. */
static double alias_db(const backend_t *b, double f)
{
    size_t n = 24000 / 2;
    int16_t *x = sig_tone(f, SIG_AMP, 24000, n);
    vb_resampler_t *r = make(b, 24000, 8000);
    size_t ny;
    int16_t *y = stream(r, x, n, 480, &ny);
    ASSERT_GE(ny, 3600);
    double db =
        20 * log10((sig_rms(y + 800, 2800) + 1e-9) / (SIG_AMP / M_SQRT2));
    vb_resampler_destroy(r);
    free(x);
    free(y);
    return db;
}

static void alias_rejection(const backend_t *b)
{
    ASSERT_DBL_OP(alias_db(b, 6000), <=, -60);
    /* And across the stop band: 4.5 kHz folds to 3.5, 11.9 kHz to 0.1. */
    static const double fs[] = {4500, 5000, 7000, 8000, 10000, 11900};
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
        double db = alias_db(b, fs[i]);
        if (db > -60)
            vb_test_fail(__FILE__, __LINE__, "%s: %.0f Hz aliased at %.1f dB",
                         b->doc_row, fs[i], db);
    }
}

/* 10 minutes of 20 ms frames: every frame gives exactly 20 ms out. */
static void exact_counts(const backend_t *b, unsigned in, unsigned out)
{
    const size_t frames = 10 * 60 * 50, fin = in / 50, fout = out / 50;
    int16_t *x = sig_tone(1000, SIG_AMP, in, fin); /* 20 whole periods */
    int16_t *y = malloc(fout * sizeof(*y));
    vb_resampler_t *r = make(b, in, out);
    ASSERT_EQ(vb_resampler_max_out(r, fin) >= fout, 1);
    uint64_t total = 0;
    for (size_t i = 0; i < frames; i++) {
        size_t got;
        ASSERT_EQ(vb_resampler_process(r, x, fin, y,
                                       vb_resampler_max_out(r, fin), &got),
                  0);
        if (got != fout)
            vb_test_fail(__FILE__, __LINE__, "frame %zu: %zu samples, not %zu",
                         i, got, fout);
        total += got;
    }
    ASSERT_UEQ(total, (uint64_t)frames * fout);
    vb_resampler_destroy(r);
    free(x);
    free(y);
}

/* Pulse delay through in -> out, in ms: the shift of the energy centroid. */
static double measured_delay_ms(vb_resampler_t *r, unsigned in, unsigned out)
{
    size_t n = in / 2;
    int16_t *x = malloc(n * sizeof(*x));
    ASSERT_NOT_NULL(x);
    sig_pulse(x, n, in, 0.25, 20000);
    size_t ny;
    int16_t *y = stream(r, x, n, in / 50, &ny);
    double d = (sig_centroid(y, ny, out) - sig_centroid(x, n, in)) * 1e3;
    free(x);
    free(y);
    return d;
}

static void delay_matches(const backend_t *b)
{
    double doc_in, doc_out;
    sig_doc_delay(b->doc_row, &doc_in, &doc_out);
    static const unsigned dirs[2][2] = {{8000, 16000}, {24000, 8000}};
    for (int i = 0; i < 2; i++) {
        vb_resampler_t *r = make(b, dirs[i][0], dirs[i][1]);
        double m = measured_delay_ms(r, dirs[i][0], dirs[i][1]);
        double rep = vb_resampler_delay_ns(r) / 1e6;
        double doc = i == 0 ? doc_in : doc_out;
        /* The API is exact; the docs must be within half a millisecond. */
        ASSERT_NEAR(m, rep, 0.02);
        ASSERT_NEAR(m, doc, 0.5);
        ASSERT_NEAR(vb_resampler_delay(r) / dirs[i][1] * 1e3, rep, 1e-6);
        vb_resampler_destroy(r);
    }
}

/* A signal with content across the band, plus a little noise. */
static int16_t *test_signal(unsigned rate, size_t n, uint64_t seed)
{
    int16_t *x = malloc(n * sizeof(*x));
    ASSERT_NOT_NULL(x);
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double v = 6000 * sin(2 * M_PI * 440 * t) +
                   4000 * sin(2 * M_PI * 1870 * t + 1) +
                   3000 * sin(2 * M_PI * 3300 * t + 2) +
                   (double)(sig_rand(&seed) % 2001) - 1000;
        if (rate > 8000)
            v += 3000 * sin(2 * M_PI * 5100 * t);
        x[i] = sig_clip(v);
    }
    return x;
}

static void chunks_equal_one_shot(const backend_t *b, unsigned in, unsigned out)
{
    size_t n = in; /* 1 s */
    int16_t *x = test_signal(in, n, 42);
    vb_resampler_t *r1 = make(b, in, out), *r2 = make(b, in, out);
    size_t n1;
    int16_t *y1 = stream(r1, x, n, n, &n1);

    size_t cap = vb_resampler_max_out(r2, n) + 16, n2 = 0;
    int16_t *y2 = malloc(cap * sizeof(*y2));
    uint64_t seed = 7;
    for (size_t off = 0; off < n;) {
        size_t k = sig_rand_range(&seed, 0, 700), got;
        if (k > n - off)
            k = n - off;
        ASSERT_EQ(vb_resampler_process(r2, x + off, k, y2 + n2, cap - n2, &got),
                  0);
        ASSERT_LE(got, vb_resampler_max_out(r2, k));
        n2 += got;
        off += k;
    }
    ASSERT_EQ(n1, n2);
    ASSERT_EQ(n1, n * out / in);
    ASSERT_MEM_EQ(y1, y2, n1 * sizeof(*y1));
    vb_resampler_destroy(r1);
    vb_resampler_destroy(r2);
    free(x);
    free(y1);
    free(y2);
}

static void reset_equals_fresh(const backend_t *b, unsigned in, unsigned out)
{
    size_t n = in / 5;
    int16_t *a = test_signal(in, n, 1), *c = test_signal(in, n, 2);
    vb_resampler_t *used = make(b, in, out), *fresh = make(b, in, out);
    size_t na, n1, n2;
    free(stream(used, a, n, 77, &na));
    ASSERT_EQ(vb_resampler_reset(used), 0);
    int16_t *y1 = stream(used, c, n, in / 50, &n1);
    int16_t *y2 = stream(fresh, c, n, in / 50, &n2);
    ASSERT_EQ(n1, n2);
    ASSERT_MEM_EQ(y1, y2, n1 * sizeof(*y1));
    ASSERT_DBL_OP(vb_resampler_delay(used), ==, vb_resampler_delay(fresh));
    vb_resampler_destroy(used);
    vb_resampler_destroy(fresh);
    free(a);
    free(c);
    free(y1);
    free(y2);
}

/* Too small an output buffer is refused before anything is consumed, and a
 * NULL input is read as zeros. */
static void enospc_and_null_input(const backend_t *b)
{
    vb_resampler_t *r = make(b, 24000, 8000), *fresh = make(b, 24000, 8000);
    int16_t *x = test_signal(24000, 480, 3);
    int16_t y1[200], y2[200];
    size_t got = 99, got2;
    size_t need = vb_resampler_max_out(r, 480);
    ASSERT_EQ(need, 162u);
    ASSERT_EQ(vb_resampler_process(r, x, 480, y1, need - 1, &got), VB_ENOSPC);
    ASSERT_EQ(got, 0);
    ASSERT_EQ(vb_resampler_process(r, x, 480, y1, need, &got), 0);
    ASSERT_EQ(vb_resampler_process(fresh, x, 480, y2, need, &got2), 0);
    ASSERT_EQ(got, got2);
    ASSERT_MEM_EQ(y1, y2, got * sizeof(*y1));

    static const int16_t zeros[480];
    ASSERT_EQ(vb_resampler_process(r, NULL, 480, y1, need, &got), 0);
    ASSERT_EQ(vb_resampler_process(fresh, zeros, 480, y2, need, &got2), 0);
    ASSERT_EQ(got, got2);
    ASSERT_MEM_EQ(y1, y2, got * sizeof(*y1));
    ASSERT_EQ(vb_resampler_process(r, x, 0, y1, 0, &got), 0);
    ASSERT_EQ(got, 0);
    ASSERT_EQ(vb_resampler_process(NULL, x, 1, y1, 10, &got), VB_EINVAL);
    ASSERT_EQ(vb_resampler_process(r, x, 1, NULL, 10, &got), VB_EINVAL);
    vb_resampler_destroy(r);
    vb_resampler_destroy(fresh);
    free(x);
}

/* ---- configuration -------------------------------------------------- */

TEST(config_check_accepts_and_refuses)
{
    static const struct {
        vb_resampler_config_t cfg;
        int rc;
        const char *why;
    } cases[] = {
        {{VB_RESAMPLER_SPEEXDSP, -1, 8000, 16000}, 0, NULL},
        {{VB_RESAMPLER_SPEEXDSP, 0, 24000, 8000}, 0, NULL},
        {{VB_RESAMPLER_SPEEXDSP, 10, 24000, 8000}, 0, NULL},
        {{VB_RESAMPLER_SPEEXDSP, 11, 24000, 8000}, VB_ECONFIG, "0..10"},
        {{VB_RESAMPLER_SPEEXDSP, -2, 24000, 8000}, VB_ECONFIG, "0..10"},
        {{VB_RESAMPLER_LIBSAMPLERATE, -1, 24000, 8000}, 0, NULL},
        {{VB_RESAMPLER_LIBSAMPLERATE, 0, 24000, 8000}, 0, NULL},
        {{VB_RESAMPLER_LIBSAMPLERATE, 2, 24000, 8000}, 0, NULL},
        /* LINEAR and ZERO_ORDER_HOLD: fine up, refused down. */
        {{VB_RESAMPLER_LIBSAMPLERATE, 4, 8000, 16000}, 0, NULL},
        {{VB_RESAMPLER_LIBSAMPLERATE, 3, 8000, 16000}, 0, NULL},
        {{VB_RESAMPLER_LIBSAMPLERATE, 4, 24000, 8000},
         VB_ECONFIG,
         "cannot downsample"},
        {{VB_RESAMPLER_LIBSAMPLERATE, 3, 24000, 8000},
         VB_ECONFIG,
         "cannot downsample"},
        {{VB_RESAMPLER_LIBSAMPLERATE, 5, 8000, 16000},
         VB_ECONFIG,
         "libsamplerate quality"},
        {{VB_RESAMPLER_SPEEXDSP, -1, 999, 8000}, VB_ECONFIG, "sample rates"},
        {{VB_RESAMPLER_SPEEXDSP, -1, 8000, 384001}, VB_ECONFIG, "sample rates"},
        {{VB_RESAMPLER_SPEEXDSP, -1, 1000, 256000}, 0, NULL},
        {{VB_RESAMPLER_SPEEXDSP, -1, 1000, 256001}, VB_ECONFIG, "1:256"},
        {{VB_RESAMPLER_SPEEXDSP, -1, 300000, 1000}, VB_ECONFIG, "1:256"},
        {{(vb_resampler_backend_t)7, -1, 8000, 16000},
         VB_ECONFIG,
         "unknown resampler backend"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = "unset";
        int rc = vb_resampler_config_check(&cases[i].cfg, &why);
        if (rc != cases[i].rc)
            vb_test_fail(__FILE__, __LINE__, "case %zu: rc %d, want %d", i, rc,
                         cases[i].rc);
        if (cases[i].why)
            ASSERT_STR_CONTAINS(why, cases[i].why);
        else
            ASSERT_NULL(why);
        /* create agrees with the check */
        vb_resampler_t *r = (vb_resampler_t *)&rc;
        ASSERT_EQ(vb_resampler_create(&r, &cases[i].cfg), cases[i].rc);
        if (cases[i].rc)
            ASSERT_NULL(r);
        vb_resampler_destroy(r);
    }
    ASSERT_EQ(vb_resampler_config_check(NULL, NULL), VB_ECONFIG);
}

TEST(create_rejects_null_and_resolves_defaults)
{
    vb_resampler_config_t cfg = {VB_RESAMPLER_SPEEXDSP, -1, 8000, 16000};
    vb_resampler_t *r = NULL;
    ASSERT_EQ(vb_resampler_create(NULL, &cfg), VB_EINVAL);
    ASSERT_EQ(vb_resampler_create(&r, NULL), VB_EINVAL);
    vb_resampler_destroy(NULL);
    ASSERT_EQ(vb_resampler_create(&r, &cfg), 0);
    ASSERT_EQ(vb_resampler_config(r)->quality, VB_RESAMPLER_SPEEX_DEFAULT);
    vb_resampler_destroy(r);
    cfg.backend = VB_RESAMPLER_LIBSAMPLERATE;
    ASSERT_EQ(vb_resampler_create(&r, &cfg), 0);
    ASSERT_EQ(vb_resampler_config(r)->quality, VB_RESAMPLER_SRC_DEFAULT);
    ASSERT_EQ(vb_resampler_config(r)->in_rate, 8000);
    vb_resampler_destroy(r);
}

TEST(backend_names)
{
    vb_resampler_backend_t b;
    ASSERT_EQ(vb_resampler_backend_parse("speexdsp", &b), 0);
    ASSERT_EQ(b, VB_RESAMPLER_SPEEXDSP);
    ASSERT_EQ(vb_resampler_backend_parse("libsamplerate", &b), 0);
    ASSERT_EQ(b, VB_RESAMPLER_LIBSAMPLERATE);
    ASSERT_EQ(vb_resampler_backend_parse("soxr", &b), VB_EINVAL);
    ASSERT_EQ(vb_resampler_backend_parse(NULL, &b), VB_EINVAL);
}

TEST(max_out_bounds)
{
    vb_resampler_t *up = make(&SPEEX, 8000, 16000);
    vb_resampler_t *down = make(&SPEEX, 24000, 8000);
    ASSERT_EQ(vb_resampler_max_out(up, 160), 320);
    ASSERT_EQ(vb_resampler_max_out(up, 0), 0);
    ASSERT_EQ(vb_resampler_max_out(down, 480), 162);
    ASSERT_EQ(vb_resampler_max_out(down, 1), 3);
    ASSERT_UEQ(vb_resampler_max_out(up, SIZE_MAX / 2), SIZE_MAX);
    vb_resampler_destroy(up);
    vb_resampler_destroy(down);
}

/* ---- default backend: speexdsp quality 5 ---------------------------- */

TEST(speexdsp_tone_response_up)
{
    tone_response(&SPEEX, 8000, 16000);
}

TEST(speexdsp_tone_response_down)
{
    tone_response(&SPEEX, 24000, 8000);
}

TEST(speexdsp_alias_rejection_down)
{
    alias_rejection(&SPEEX);
}

TEST(speexdsp_thdn_1k)
{
    thdn(&SPEEX, 8000, 16000);
    thdn(&SPEEX, 24000, 8000);
}

TEST(speexdsp_exact_counts_10_minutes_up)
{
    exact_counts(&SPEEX, 8000, 16000);
}

TEST(speexdsp_exact_counts_10_minutes_down)
{
    exact_counts(&SPEEX, 24000, 8000);
}

TEST(speexdsp_delay_matches_docs)
{
    delay_matches(&SPEEX);
}

TEST(speexdsp_random_chunks_equal_one_shot)
{
    chunks_equal_one_shot(&SPEEX, 8000, 16000);
    chunks_equal_one_shot(&SPEEX, 24000, 8000);
}

TEST(speexdsp_reset_equals_fresh)
{
    reset_equals_fresh(&SPEEX, 8000, 16000);
    reset_equals_fresh(&SPEEX, 24000, 8000);
}

TEST(speexdsp_enospc_and_null_input)
{
    enospc_and_null_input(&SPEEX);
}

/* ---- selectable backend: libsamplerate SINC_MEDIUM ------------------ */

TEST(libsamplerate_tone_response_up)
{
    tone_response(&LSR, 8000, 16000);
}

TEST(libsamplerate_tone_response_down)
{
    tone_response(&LSR, 24000, 8000);
}

TEST(libsamplerate_alias_rejection_down)
{
    alias_rejection(&LSR);
}

TEST(libsamplerate_thdn_1k)
{
    thdn(&LSR, 8000, 16000);
    thdn(&LSR, 24000, 8000);
}

TEST(libsamplerate_exact_counts_10_minutes_up)
{
    exact_counts(&LSR, 8000, 16000);
}

TEST(libsamplerate_exact_counts_10_minutes_down)
{
    exact_counts(&LSR, 24000, 8000);
}

TEST(libsamplerate_delay_matches_docs)
{
    delay_matches(&LSR);
}

TEST(libsamplerate_random_chunks_equal_one_shot)
{
    chunks_equal_one_shot(&LSR, 8000, 16000);
    chunks_equal_one_shot(&LSR, 24000, 8000);
}

TEST(libsamplerate_reset_equals_fresh)
{
    reset_equals_fresh(&LSR, 8000, 16000);
    reset_equals_fresh(&LSR, 24000, 8000);
}

TEST(libsamplerate_enospc_and_null_input)
{
    enospc_and_null_input(&LSR);
}

/* ---- other qualities ------------------------------------------------ */

/* Every quality docs/dsp.md lists: its stated delays hold, and counts stay
 * exact with odd chunk sizes. */
TEST(all_documented_qualities_delay_and_counts)
{
    static const backend_t all[] = {
        {"speexdsp 0", VB_RESAMPLER_SPEEXDSP, 0},
        {"speexdsp 3", VB_RESAMPLER_SPEEXDSP, 3},
        {"speexdsp 5", VB_RESAMPLER_SPEEXDSP, 5},
        {"speexdsp 8", VB_RESAMPLER_SPEEXDSP, 8},
        {"speexdsp 10", VB_RESAMPLER_SPEEXDSP, 10},
        {"libsamplerate 0", VB_RESAMPLER_LIBSAMPLERATE, 0},
        {"libsamplerate 1", VB_RESAMPLER_LIBSAMPLERATE, 1},
        {"libsamplerate 2", VB_RESAMPLER_LIBSAMPLERATE, 2},
    };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        delay_matches(&all[i]);
        vb_resampler_t *r = make(&all[i], 24000, 8000);
        int16_t *x = test_signal(24000, 24000, 9);
        size_t ny;
        int16_t *y = stream(r, x, 24000, 481, &ny);
        ASSERT_EQ(ny, 8000);
        free(x);
        free(y);
        vb_resampler_destroy(r);
    }
}

/* libsamplerate's LINEAR may upsample (it is refused only for
 * downsampling); it keeps exact counts and its stated delay. */
TEST(libsamplerate_linear_upsampling)
{
    backend_t lin = {"-", VB_RESAMPLER_LIBSAMPLERATE, 4};
    vb_resampler_t *r = make(&lin, 8000, 16000);
    ASSERT_NEAR(measured_delay_ms(r, 8000, 16000),
                vb_resampler_delay_ns(r) / 1e6, 0.02);
    vb_resampler_destroy(r);
    exact_counts(&lin, 8000, 16000);
}

/* The measurements above can fail: they see what the spec measured for
 * converters that are not good enough (SINC_FASTEST's 80 % bandwidth cuts
 * 3.4 kHz by ~9 dB; LINEAR leaves images at -28 dB). */
TEST(measurements_detect_poor_converters)
{
    backend_t fastest = {"-", VB_RESAMPLER_LIBSAMPLERATE, 2};
    backend_t linear = {"-", VB_RESAMPLER_LIBSAMPLERATE, 4};
    ASSERT_DBL_OP(tone_gain(&fastest, 8000, 16000, 3400, NULL), <, -3);
    ASSERT_DBL_OP(tone_gain(&fastest, 24000, 8000, 3400, NULL), <, -3);
    double thdn_db;
    tone_gain(&linear, 8000, 16000, 1000, &thdn_db);
    ASSERT_DBL_OP(thdn_db, >, -40);
}
