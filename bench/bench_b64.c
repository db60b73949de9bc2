/* SPDX-License-Identifier: MIT */
/*
 * Base64 benchmark (`make bench-b64`): core/b64 against mbedTLS's
 * constant-time codec, encode and decode, for the two payload sizes on the
 * audio path: 160 bytes (one 20 ms Twilio mu-law frame) and 1 KiB (a Gemini
 * audio chunk). MB/s counts raw bytes (the decoded side) per second of
 * thread CPU time, the median of several runs; each result is checked
 * against the other codec's once before timing.
 * Usage: bench_b64 [milliseconds-per-run [runs]]   (default 200 7)
 */
#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/b64.h"

#define MAX_RUNS 31
#define MAX_LEN  1024

static double run_ms = 200;
static int runs = 7;
static volatile size_t sink; /* keeps the loops from being optimised out */

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

static uint8_t raw[MAX_LEN], back[MAX_LEN];
static char text[MAX_LEN / 3 * 4 + 8];

typedef size_t (*op_fn)(size_t n, size_t m);

static size_t ours_encode(size_t n, size_t m)
{
    (void)m;
    return vb_b64_encode(text, raw, n);
}

static size_t ours_decode(size_t n, size_t m)
{
    size_t got = 0;
    (void)vb_b64_decode(back, n, text, m, &got);
    return got;
}

static size_t mbed_encode(size_t n, size_t m)
{
    size_t got = 0;
    (void)mbedtls_base64_encode((unsigned char *)text, sizeof(text), &got, raw,
                                n);
    (void)m;
    return got;
}

static size_t mbed_decode(size_t n, size_t m)
{
    size_t got = 0;
    (void)mbedtls_base64_decode(back, n, &got, (const unsigned char *)text, m);
    return got;
}

/* Median MB/s of `op` over `runs` runs of about run_ms each. */
static double measure(op_fn op, size_t n, size_t m)
{
    /* Calibrate the iteration count to roughly run_ms per run. */
    size_t iters = 64;
    for (;;) {
        double t0 = cpu_ns();
        for (size_t i = 0; i < iters; i++)
            sink += op(n, m);
        double dt = cpu_ns() - t0;
        if (dt > 20e6 || iters > ((size_t)1 << 30))
            break;
        iters *= 2;
    }
    double t0 = cpu_ns();
    for (size_t i = 0; i < iters; i++)
        sink += op(n, m);
    double per = (cpu_ns() - t0) / (double)iters;
    iters = (size_t)(run_ms * 1e6 / per) + 1;
    double v[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        t0 = cpu_ns();
        for (size_t i = 0; i < iters; i++)
            sink += op(n, m);
        double ns = (cpu_ns() - t0) / (double)iters;
        v[r] = (double)n / ns * 1e3; /* bytes per ns -> MB/s */
    }
    qsort(v, (size_t)runs, sizeof(v[0]), cmp_double);
    return v[runs / 2];
}

static void check(size_t n)
{
    char ref[sizeof(text)];
    size_t rn = 0, got = 0;
    size_t m = vb_b64_encode(text, raw, n);
    if (mbedtls_base64_encode((unsigned char *)ref, sizeof(ref), &rn, raw, n) !=
            0 ||
        rn != m || memcmp(ref, text, m) != 0 ||
        vb_b64_decode(back, n, text, m, &got) != 0 || got != n ||
        memcmp(back, raw, n) != 0) {
        fprintf(stderr, "bench_b64: codecs disagree at %zu bytes\n", n);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1)
        run_ms = atof(argv[1]);
    if (argc > 2)
        runs = atoi(argv[2]);
    if (!(run_ms > 0) || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_b64 [ms-per-run [runs (1..%d)]]\n",
                MAX_RUNS);
        return 2;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof(raw); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        raw[i] = (uint8_t)(x >> 56);
    }
    static const size_t sizes[] = {160, 1024};
    printf("| payload | op | core/b64 MB/s | mbedTLS MB/s | speed-up |\n");
    printf("|---|---|---:|---:|---:|\n");
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k], m = vb_b64_encoded_len(n);
        check(n);
        double oe = measure(ours_encode, n, m);
        double me = measure(mbed_encode, n, m);
        vb_b64_encode(text, raw, n);
        double od = measure(ours_decode, n, m);
        double md = measure(mbed_decode, n, m);
        printf("| %zu B | encode | %.0f | %.0f | %.1fx |\n", n, oe, me,
               oe / me);
        printf("| %zu B | decode | %.0f | %.0f | %.1fx |\n", n, od, md,
               od / md);
    }
    return 0;
}
