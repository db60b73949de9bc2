/* SPDX-License-Identifier: MIT */
/*
 * Signal helpers shared by the DSP tests (test_resampler.c, test_dsp.c,
 * test_dsp_tool.c): tone and pulse generators, a least-squares sine fit at a
 * known frequency (gain, THD+N), an energy-centroid delay estimate, a seeded
 * PRNG, and the delay figures docs/dsp.md states, read from the document
 * itself so the tests check what the docs claim.
 */
#ifndef VB_TEST_DSP_SIGNAL_H
#define VB_TEST_DSP_SIGNAL_H

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* -6 dBFS: the test tone level, as the measurements in specs use. */
#define SIG_AMP (32767.0 * 0.5011872336272722)

/* xorshift64*: reproducible random numbers without libc state. */
static inline uint64_t sig_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Uniform integer in [lo, hi]. */
static inline size_t sig_rand_range(uint64_t *s, size_t lo, size_t hi)
{
    return lo + (size_t)(sig_rand(s) % (uint64_t)(hi - lo + 1));
}

static inline int16_t sig_clip(double v)
{
    long r = lround(v);
    if (r > INT16_MAX)
        r = INT16_MAX;
    if (r < INT16_MIN)
        r = INT16_MIN;
    return (int16_t)r;
}

/* n samples of amp * sin(2 pi f t) at `rate`, rounded to int16. */
static inline int16_t *sig_tone(double f, double amp, unsigned rate, size_t n)
{
    int16_t *x = malloc(n * sizeof(*x));
    ASSERT_NOT_NULL(x);
    for (size_t i = 0; i < n; i++)
        x[i] = sig_clip(amp * sin(2 * M_PI * f * (double)i / rate));
    return x;
}

/* Least-squares fit of y ~ a cos(wt) + b sin(wt) + c over y[0..n), w known.
 * Returns the amplitude sqrt(a^2 + b^2); *resid_db (if not NULL) gets the
 * residual energy re the fitted sine's energy in dB: THD+N. */
static inline double sig_fit(const int16_t *y, size_t n, double f,
                             unsigned rate, double *resid_db)
{
    double m[3][3] = {{0}}, v[3] = {0};
    double w = 2 * M_PI * f / rate;
    for (size_t i = 0; i < n; i++) {
        double b[3] = {cos(w * (double)i), sin(w * (double)i), 1.0};
        for (int r = 0; r < 3; r++) {
            v[r] += b[r] * y[i];
            for (int c = 0; c < 3; c++)
                m[r][c] += b[r] * b[c];
        }
    }
    /* Gaussian elimination on the 3x3 normal equations. */
    for (int p = 0; p < 3; p++) {
        for (int r = p + 1; r < 3; r++) {
            double k = m[r][p] / m[p][p];
            for (int c = p; c < 3; c++)
                m[r][c] -= k * m[p][c];
            v[r] -= k * v[p];
        }
    }
    double s[3];
    for (int r = 2; r >= 0; r--) {
        double acc = v[r];
        for (int c = r + 1; c < 3; c++)
            acc -= m[r][c] * s[c];
        s[r] = acc / m[r][r];
    }
    if (resid_db) {
        double e_fit = 0, e_res = 0;
        for (size_t i = 0; i < n; i++) {
            double fit = s[0] * cos(w * (double)i) + s[1] * sin(w * (double)i);
            double res = y[i] - fit - s[2];
            e_fit += fit * fit;
            e_res += res * res;
        }
        *resid_db = 10 * log10((e_res + 1e-30) / (e_fit + 1e-30));
    }
    return sqrt(s[0] * s[0] + s[1] * s[1]);
}

/* Root mean square of y[0..n). */
static inline double sig_rms(const int16_t *y, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e += (double)y[i] * y[i];
    return sqrt(e / (double)n);
}

/* Writes a 2 ms Hann pulse of peak `amp` centred at `at` seconds into x
 * (zeroed first, n samples at `rate`). A 2 ms pulse keeps its energy below
 * ~1.5 kHz, inside every passband, so a linear-phase filter shifts it
 * without reshaping it. */
static inline void sig_pulse(int16_t *x, size_t n, unsigned rate, double at,
                             double amp)
{
    memset(x, 0, n * sizeof(*x));
    double half = 0.001;
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate - at;
        if (t > -half && t < half)
            x[i] = sig_clip(amp * 0.5 * (1 + cos(M_PI * t / half)));
    }
}

/* Energy centroid of y[0..n) in seconds at `rate`. */
static inline double sig_centroid(const int16_t *y, size_t n, unsigned rate)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double p = (double)y[i] * y[i];
        e += p;
        m += p * (double)i;
    }
    ASSERT_DBL_OP(e, >, 0);
    return m / e / rate;
}

/* Finds docs/dsp.md by walking up from the test binary's directory
 * (build/tests or build/asan/tests) to the repository root. */
static inline FILE *sig_open_doc(void)
{
    char path[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", path, sizeof(path) - 1);
    ASSERT_GT(len, 0);
    path[len] = '\0';
    for (int up = 0; up < 6; up++) {
        char *slash = strrchr(path, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
        char doc[PATH_MAX + 16];
        snprintf(doc, sizeof(doc), "%s/docs/dsp.md", path);
        FILE *f = fopen(doc, "r");
        if (f)
            return f;
    }
    vb_test_fail(__FILE__, __LINE__, "docs/dsp.md not found above %s", path);
}

/* The delays docs/dsp.md states for a backend/quality, from its delay
 * table: the row whose first cell is exactly `row` (e.g. "speexdsp 5"),
 * whose next two cells start with the inbound and outbound delay in ms. */
static inline void sig_doc_delay(const char *row, double *in_ms, double *out_ms)
{
    FILE *f = sig_open_doc();
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) {
        char *cell[4];
        int nc = 0;
        char *p = line;
        /* | row | in ms ... | out ms ... | */
        while (nc < 4 && (p = strchr(p, '|')) != NULL)
            cell[nc++] = ++p;
        if (nc < 4)
            continue;
        char name[128];
        size_t l = (size_t)(cell[1] - cell[0] - 1);
        if (l >= sizeof(name))
            continue;
        memcpy(name, cell[0], l);
        name[l] = '\0';
        char *b = name, *e = name + strlen(name);
        while (*b == ' ')
            b++;
        while (e > b && e[-1] == ' ')
            *--e = '\0';
        if (strcmp(b, row) != 0)
            continue;
        char unit1[8] = "", unit2[8] = "";
        if (sscanf(cell[1], " %lf %7s", in_ms, unit1) == 2 &&
            sscanf(cell[2], " %lf %7s", out_ms, unit2) == 2 &&
            strcmp(unit1, "ms") == 0 && strcmp(unit2, "ms") == 0)
            found = 1;
    }
    fclose(f);
    if (!found)
        vb_test_fail(__FILE__, __LINE__,
                     "docs/dsp.md has no delay row \"| %s | N ms | N ms |\"",
                     row);
}

#endif
