/* SPDX-License-Identifier: MIT */
/*
 * Monotonic time in nanoseconds. One clock for every latency figure in the
 * process (message origin, ring enqueue, stage exit), so differences are
 * always meaningful. CLOCK_MONOTONIC is vDSO-backed on Linux: no syscall.
 */
#ifndef VB_CORE_CLOCK_H
#define VB_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

#define VB_NS_PER_US  1000ull
#define VB_NS_PER_MS  1000000ull
#define VB_NS_PER_SEC 1000000000ull

/* Monotonic nanoseconds since an arbitrary epoch; any thread. */
static inline uint64_t vb_clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * VB_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Wall-clock seconds since the Unix epoch, for logs and tokens; any thread. */
static inline double vb_clock_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
