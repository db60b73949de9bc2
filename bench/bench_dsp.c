/* SPDX-License-Identifier: MIT */
/*
 * DSP benchmark (`make bench-dsp`): what the per-call audio path costs and
 * how much it delays, on this machine, through the project's own APIs.
 *
 *   1. G.711 kernels: ns per sample, 160-sample frames.
 *   2. Resamplers, each backend/quality and direction, streamed in 20 ms
 *      frames: ns per OUTPUT sample, heap per state, and the cost of a
 *      reset (what a barge-in's clear costs).
 *   3. The whole per-call DSP (vb_dsp_t) at full duplex, 20 ms frames both
 *      ways: CPU per call-second and calls per core, for 1 call and for 100
 *      calls served round-robin (states no longer all in cache).
 *   4. Delay per direction, measured with a pulse through vb_dsp_t.
 *
 * Times are thread CPU time (CLOCK_THREAD_CPUTIME_ID), so time the shared
 * machine gives to other processes is not counted; each figure is the
 * median of several runs. Output is Markdown, ready for docs/dsp.md.
 * Usage: bench_dsp [seconds-of-audio-per-run [runs]]   (default 10 5)
 */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "core/clock.h"
#include "dsp/dsp.h"
#include "dsp/g711.h"
#include "dsp/resampler.h"

#define MAX_RUNS 31

static double audio_s = 10; /* seconds of audio per run */
static int runs = 5;

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double urand(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Speech-like test signal at `rate`: a voiced harmonic series on a gliding
 * pitch plus noise, under a 4 Hz syllable envelope, at -23 dBFS rms. The
 * codecs and resamplers here cost the same for any content; this just keeps
 * the numbers honest about level-dependent branches. */
static int16_t *speechlike(unsigned rate, size_t n)
{
    double *v = malloc(n * sizeof(*v));
    int16_t *x = malloc(n * sizeof(*x));
    if (v == NULL || x == NULL) {
        fprintf(stderr, "bench_dsp: out of memory\n");
        exit(1);
    }
    double phase = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double f0 = 140 + 50 * sin(2 * M_PI * 0.7 * t);
        phase += 2 * M_PI * f0 / rate;
        double s = 0;
        for (int h = 1; h * f0 < rate / 2.0 && h <= 30; h++)
            s += sin(h * phase) / h;
        s += 0.3 * (urand() - 0.5);
        v[i] = s * (0.55 + 0.45 * sin(2 * M_PI * 4 * t));
        e += v[i] * v[i];
    }
    double k = 32767 * pow(10, -23 / 20.0) / sqrt(e / (double)n);
    for (size_t i = 0; i < n; i++)
        x[i] = (int16_t)lrint(v[i] * k);
    free(v);
    return x;
}

/* ---- 1. G.711 -------------------------------------------------------- */

static void bench_g711(void)
{
    size_t n = (size_t)(audio_s * 8000) * 4;
    int16_t *x = speechlike(8000, n);
    uint8_t *c = malloc(n);
    int16_t *y = malloc(n * sizeof(*y));
    struct {
        const char *name;
        int op;
    } k[] = {{"μ-law encode", 0},
             {"μ-law decode", 1},
             {"A-law encode", 2},
             {"A-law decode", 3}};
    printf("## G.711 (ns per sample, %zu samples per run, 160-sample "
           "frames)\n\n",
           n);
    printf("| kernel | ns/sample | CPU per call-second |\n|---|---|---|\n");
    for (size_t j = 0; j < sizeof(k) / sizeof(k[0]); j++) {
        double v[MAX_RUNS];
        /* Run r = -1 is an untimed warm-up (page faults, caches). */
        for (int r = -1; r < runs; r++) {
            double t0 = cpu_ns();
            for (size_t off = 0; off + 160 <= n; off += 160) {
                switch (k[j].op) {
                case 0:
                    vb_g711_ulaw_encode(c + off, x + off, 160);
                    break;
                case 1:
                    vb_g711_ulaw_decode(y + off, c + off, 160);
                    break;
                case 2:
                    vb_g711_alaw_encode(c + off, x + off, 160);
                    break;
                default:
                    vb_g711_alaw_decode(y + off, c + off, 160);
                    break;
                }
            }
            if (r >= 0)
                v[r] = (cpu_ns() - t0) / (double)n;
        }
        double ns = median(v, runs);
        printf("| %s | %.2f | %.1f µs |\n", k[j].name, ns, ns * 8000 / 1e3);
    }
    printf("\n");
    free(x);
    free(c);
    free(y);
}

/* ---- 2. resamplers -------------------------------------------------- */

typedef struct variant {
    const char *name;
    vb_resampler_backend_t backend;
    int quality;
} variant_t;

static const variant_t variants[] = {
    {"speexdsp 3", VB_RESAMPLER_SPEEXDSP, 3},
    {"speexdsp 5 (default)", VB_RESAMPLER_SPEEXDSP, 5},
    {"speexdsp 8", VB_RESAMPLER_SPEEXDSP, 8},
    {"speexdsp 10", VB_RESAMPLER_SPEEXDSP, 10},
    {"libsamplerate 0 (SINC_BEST)", VB_RESAMPLER_LIBSAMPLERATE, 0},
    {"libsamplerate 1 (SINC_MEDIUM)", VB_RESAMPLER_LIBSAMPLERATE, 1},
    {"libsamplerate 2 (SINC_FASTEST)", VB_RESAMPLER_LIBSAMPLERATE, 2},
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

static vb_resampler_t *make_rs(const variant_t *v, unsigned in, unsigned out,
                               size_t *heap)
{
    vb_resampler_config_t cfg = {v->backend, v->quality, in, out};
    vb_resampler_t *r = NULL;
    struct mallinfo2 a = mallinfo2();
    int rc = vb_resampler_create(&r, &cfg);
    struct mallinfo2 b = mallinfo2();
    if (rc != 0) {
        fprintf(stderr, "bench_dsp: %s: create failed (%d)\n", v->name, rc);
        exit(1);
    }
    if (heap)
        *heap = (b.uordblks + b.hblkhd) - (a.uordblks + a.hblkhd);
    return r;
}

/* ns per output sample streaming `x` in 20 ms frames through a new state;
 * the first 0.5 s warms up and is not timed. */
static double rs_ns_per_out(const variant_t *v, unsigned in, unsigned out,
                            const int16_t *x, size_t n)
{
    vb_resampler_t *r = make_rs(v, in, out, NULL);
    size_t frame = in / 50, warm = in / 2;
    int16_t y[2048];
    size_t got, produced = 0;
    for (size_t off = 0; off + frame <= warm; off += frame)
        vb_resampler_process(r, x + off, frame, y, sizeof(y) / 2, &got);
    double t0 = cpu_ns();
    for (size_t off = warm; off + frame <= n; off += frame) {
        if (vb_resampler_process(r, x + off, frame, y, sizeof(y) / 2, &got)) {
            fprintf(stderr, "bench_dsp: %s: process failed\n", v->name);
            exit(1);
        }
        produced += got;
    }
    double ns = (cpu_ns() - t0) / (double)produced;
    vb_resampler_destroy(r);
    return ns;
}

/* CPU µs of one vb_resampler_reset(): what a barge-in's clear costs on
 * the outbound state (libsamplerate re-primes). */
static double rs_reset_us(const variant_t *v, unsigned in, unsigned out)
{
    vb_resampler_t *r = make_rs(v, in, out, NULL);
    double t0 = cpu_ns();
    for (int i = 0; i < 100; i++)
        vb_resampler_reset(r);
    double us = (cpu_ns() - t0) / 100 / 1e3;
    vb_resampler_destroy(r);
    return us;
}

static void bench_resamplers(void)
{
    size_t n8 = (size_t)((audio_s + 0.5) * 8000);
    size_t n24 = (size_t)((audio_s + 0.5) * 24000);
    int16_t *x8 = speechlike(8000, n8), *x24 = speechlike(24000, n24);
    printf("## Resamplers (ns per output sample, 20 ms frames, %.0f s of "
           "audio per run, median of %d)\n\n",
           audio_s, runs);
    printf("| backend quality | 8k→16k ns/out | 24k→8k ns/out | "
           "CPU per call-second (both) | heap per state (up / down) | "
           "reset µs (up / down) |\n"
           "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < NVARIANTS; i++) {
        double up[MAX_RUNS], down[MAX_RUNS], rup[MAX_RUNS], rdown[MAX_RUNS];
        for (int r = 0; r < runs; r++) {
            up[r] = rs_ns_per_out(&variants[i], 8000, 16000, x8, n8);
            down[r] = rs_ns_per_out(&variants[i], 24000, 8000, x24, n24);
            rup[r] = rs_reset_us(&variants[i], 8000, 16000);
            rdown[r] = rs_reset_us(&variants[i], 24000, 8000);
        }
        double u = median(up, runs), d = median(down, runs);
        size_t hu, hd;
        vb_resampler_destroy(make_rs(&variants[i], 8000, 16000, &hu));
        vb_resampler_destroy(make_rs(&variants[i], 24000, 8000, &hd));
        printf("| %s | %.1f | %.1f | %.3f ms | %.1f KiB / %.1f KiB | "
               "%.2f / %.2f |\n",
               variants[i].name, u, d, (u * 16000 + d * 8000) / 1e6,
               hu / 1024.0, hd / 1024.0, median(rup, runs),
               median(rdown, runs));
    }
    printf("\n");
    free(x8);
    free(x24);
}

/* ---- 3. whole per-call DSP ------------------------------------------ */

/* CPU ns per call-second running `ncalls` states round-robin, each fed
 * 20 ms in (160 μ-law bytes) and 20 ms out (480 samples) per step. */
static double dsp_cpu_per_call_s(const vb_dsp_config_t *cfg, int ncalls,
                                 const uint8_t *ulaw, const int16_t *pcm,
                                 size_t frames)
{
    vb_dsp_t **d = calloc((size_t)ncalls, sizeof(*d));
    for (int c = 0; c < ncalls; c++) {
        if (vb_dsp_create(&d[c], cfg) != 0) {
            fprintf(stderr, "bench_dsp: vb_dsp_create failed\n");
            exit(1);
        }
    }
    int16_t up[VB_DSP_FRAME_SAMPLES];
    uint8_t out[2 * VB_DSP_FRAME_BYTES];
    size_t n, nf;
    /* Steps: `frames` 20 ms frames shared across the calls, so the total
     * work is the same whatever ncalls is; 25 warm-up steps per call. */
    size_t steps = frames / (size_t)ncalls;
    for (int c = 0; c < ncalls; c++) {
        for (size_t i = 0; i < 25; i++) {
            vb_dsp_inbound(d[c], ulaw + 160 * i, 160, up, 320, &n);
            vb_dsp_outbound(d[c], pcm + 480 * i, 480, out, 2, &nf);
        }
    }
    double t0 = cpu_ns();
    for (size_t i = 0; i < steps; i++) {
        for (int c = 0; c < ncalls; c++) {
            if (vb_dsp_inbound(d[c], ulaw + 160 * i, 160, up, 320, &n) ||
                vb_dsp_outbound(d[c], pcm + 480 * i, 480, out, 2, &nf)) {
                fprintf(stderr, "bench_dsp: vb_dsp failed\n");
                exit(1);
            }
        }
    }
    double ns = cpu_ns() - t0;
    for (int c = 0; c < ncalls; c++)
        vb_dsp_destroy(d[c]);
    free(d);
    return ns / ((double)steps * ncalls * 0.02);
}

static void bench_pipeline(void)
{
    /* 5x the audio of the other sections: 100 calls share it. */
    size_t frames = (size_t)(audio_s * 50) * 5;
    int16_t *x8 = speechlike(8000, frames * 160);
    int16_t *x24 = speechlike(24000, frames * 480);
    uint8_t *ulaw = malloc(frames * 160);
    vb_g711_ulaw_encode(ulaw, x8, frames * 160);
    printf("## Whole per-call DSP, full duplex (vb_dsp_t: μ-law decode + "
           "8k→16k in, 24k→8k + μ-law encode + framing out)\n\n");
    printf("| backend quality | CPU per call-second, 1 call | 100 calls "
           "round-robin | calls per core (DSP only) |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NVARIANTS; i++) {
        vb_dsp_config_t cfg = {variants[i].backend, variants[i].quality};
        double one[MAX_RUNS], hundred[MAX_RUNS];
        for (int r = 0; r < runs; r++) {
            one[r] = dsp_cpu_per_call_s(&cfg, 1, ulaw, x24, frames);
            hundred[r] = dsp_cpu_per_call_s(&cfg, 100, ulaw, x24, frames);
        }
        double a = median(one, runs), b = median(hundred, runs);
        printf("| %s | %.3f ms | %.3f ms | %.0f (%.0f) |\n", variants[i].name,
               a / 1e6, b / 1e6, 1e9 / a, 1e9 / b);
    }
    printf("\nCalls per core = 1 s of CPU / CPU per call-second, for 1 call "
           "(for 100). DSP alone: no WebSocket, TLS, JSON or base64.\n\n");
    free(x8);
    free(x24);
    free(ulaw);
}

/* ---- 4. delay ------------------------------------------------------- */

static double centroid(const int16_t *y, size_t n, unsigned rate)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double p = (double)y[i] * y[i];
        e += p;
        m += p * (double)i;
    }
    return e > 0 ? m / e / rate : NAN;
}

static void pulse(int16_t *x, size_t n, unsigned rate)
{
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate - 0.25;
        x[i] = fabs(t) < 0.001
                   ? (int16_t)lrint(20000 * 0.5 * (1 + cos(M_PI * t / 0.001)))
                   : 0;
    }
}

static void bench_delay(void)
{
    printf("## Delay (pulse through vb_dsp_t, energy-centroid shift; "
           "reported = vb_dsp_delay_ns)\n\n");
    printf("| backend quality | inbound measured | reported | outbound "
           "measured | reported | round trip |\n|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < NVARIANTS; i++) {
        vb_dsp_config_t cfg = {variants[i].backend, variants[i].quality};
        vb_dsp_t *d;
        if (vb_dsp_create(&d, &cfg) != 0)
            exit(1);
        static int16_t x8[4000], y16[8000], x24[12000], y8[4000];
        static uint8_t u[4000], f[4000 + 2 * VB_DSP_FRAME_BYTES];
        size_t n, nf, total = 0, bytes = 0;
        pulse(x8, 4000, 8000);
        vb_g711_ulaw_encode(u, x8, 4000);
        vb_g711_ulaw_decode(x8, u, 4000);
        for (int off = 0; off < 4000; off += 160) {
            vb_dsp_inbound(d, u + off, 160, y16 + total, 320, &n);
            total += n;
        }
        double din = (centroid(y16, total, 16000) - centroid(x8, 4000, 8000));
        pulse(x24, 12000, 24000);
        for (int off = 0; off < 12000; off += 480) {
            vb_dsp_outbound(d, x24 + off, 480, f + bytes, 2, &nf);
            bytes += nf * VB_DSP_FRAME_BYTES;
        }
        vb_g711_ulaw_decode(y8, f, bytes);
        double dout = centroid(y8, bytes, 8000) - centroid(x24, 12000, 24000);
        printf("| %s | %.3f ms | %.3f ms | %.3f ms | %.3f ms | %.3f ms |\n",
               variants[i].name, din * 1e3,
               vb_dsp_delay_ns(d, VB_DSP_INBOUND) / 1e6, dout * 1e3,
               vb_dsp_delay_ns(d, VB_DSP_OUTBOUND) / 1e6, (din + dout) * 1e3);
        vb_dsp_destroy(d);
    }
    printf("\nAdd one 20 ms frame per direction for framing/packetisation; "
           "G.711 adds none.\n\n");
}

static void machine(void)
{
    struct utsname u;
    char model[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
                    snprintf(model, sizeof(model), "%s", p + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        }
        fclose(f);
    }
    uname(&u);
    printf("# bench_dsp\n\n%s %s %s; CPU: %s; %.0f s of audio per run, "
           "median of %d runs; thread CPU time.\n\n",
           u.sysname, u.release, u.machine, model, audio_s, runs);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        audio_s = atof(argv[1]);
    if (argc > 2)
        runs = atoi(argv[2]);
    if (audio_s < 1 || audio_s > 600 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_dsp [seconds 1..600 [runs 1..%d]]\n",
                MAX_RUNS);
        return 2;
    }
    uint64_t t0 = vb_clock_now_ns();
    machine();
    bench_g711();
    bench_resamplers();
    bench_pipeline();
    bench_delay();
    printf("(wall time %.1f s)\n", (vb_clock_now_ns() - t0) / 1e9);
    return 0;
}
