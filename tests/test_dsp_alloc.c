/* SPDX-License-Identifier: MIT */
/*
 * The per-call DSP must not allocate once the call's state exists
 * (STYLE.md: the audio hot path does not allocate). This binary replaces
 * malloc and friends with counting wrappers around glibc's own entry points
 * (__libc_malloc...), which also catches allocations inside speexdsp and
 * libsamplerate, and runs every per-call operation with counting on.
 *
 * Sanitizer builds replace malloc themselves, so there the wrappers are
 * left out and the case only exercises the same calls.
 */
#include <stdatomic.h>

#include "dsp/dsp.h"
#include "dsp/g711.h"
#include "tests/test.h"
#include "tests/test_dsp_signal.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define COUNTING 0
#endif
#endif
#ifndef COUNTING
#define COUNTING 1
#endif

static atomic_long allocations;
static atomic_int counting;

#if COUNTING
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

static void count(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    count();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    count();
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n);
void *memalign(size_t align, size_t n)
{
    count();
    return __libc_memalign(align, n);
}

int posix_memalign(void **p, size_t align, size_t n)
{
    count();
    *p = __libc_memalign(align, n);
    return *p ? 0 : 12 /* ENOMEM */;
}

void free(void *p)
{
    __libc_free(p);
}
#endif

/* Every per-call operation, on one state, with varied chunk sizes. */
static void one_call(const vb_dsp_config_t *cfg, int check)
{
    /* Setup may allocate. */
    vb_dsp_t *d = NULL;
    ASSERT_EQ(vb_dsp_create(&d, cfg), 0);
    int16_t *pcm = sig_tone(700, SIG_AMP, 24000, 24000);
    uint8_t ulaw[4000];
    for (int i = 0; i < 4000; i++)
        ulaw[i] = (uint8_t)(i * 29);
    static int16_t in16[8000];
    static uint8_t frames[64 * VB_DSP_FRAME_BYTES];

    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    size_t n, nf;
    uint64_t seed = 3;
    size_t off = 0;
    for (int turn = 0; turn < 3; turn++) {
        for (int i = 0; i < 25; i++) {
            ASSERT_EQ(vb_dsp_inbound(d, ulaw + 160 * i, 160, in16, 8000, &n),
                      0);
            size_t k = sig_rand_range(&seed, 0, 2000);
            if (off + k > 24000)
                off = 0;
            ASSERT_EQ(vb_dsp_outbound(d, pcm + off, k, frames, 64, &nf), 0);
            off += k;
        }
        ASSERT_EQ(vb_dsp_inbound(d, ulaw, 4000, in16, 8000, &n), 0);
        ASSERT_EQ(vb_dsp_flush(d, frames, 64, &nf), 0);
        ASSERT_EQ(vb_dsp_outbound(d, pcm, 1000, frames, 64, &nf), 0);
        ASSERT_EQ(vb_dsp_clear(d), 0); /* barge-in */
    }
    ASSERT_EQ(vb_dsp_reset(d), 0);
    atomic_store(&counting, 0);
    long allocs = atomic_load(&allocations);
    if (check)
        ASSERT_EQ(allocs, 0);

    free(pcm);
    vb_dsp_destroy(d);
}

TEST(counting_allocator_sees_allocations)
{
    if (!COUNTING)
        return;
    /* The wrappers are live, including for calls made from libraries
     * (fopen allocates its FILE inside libc). */
    void *(*volatile m)(size_t) = malloc;
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    void *p = m(10);
    FILE *f = fopen("/dev/null", "r");
    atomic_store(&counting, 0);
    ASSERT_NOT_NULL(p);
    ASSERT_NOT_NULL(f);
    fclose(f);
    free(p);
    long allocs = atomic_load(&allocations);
    ASSERT_GE(allocs, 2);
}

TEST(speexdsp_per_call_processing_does_not_allocate)
{
    vb_dsp_config_t cfg = {VB_RESAMPLER_SPEEXDSP, VB_RESAMPLER_QUALITY_DEFAULT};
    one_call(&cfg, COUNTING);
}

TEST(libsamplerate_per_call_processing_does_not_allocate)
{
    for (int q = 0; q <= 2; q++) {
        vb_dsp_config_t cfg = {VB_RESAMPLER_LIBSAMPLERATE, q};
        one_call(&cfg, COUNTING);
    }
}
