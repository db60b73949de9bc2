/* SPDX-License-Identifier: MIT */
/*
 * Latency histogram: log-linear buckets (32 per power of two) covering 64 ns
 * to 68 s, so any quantile between 100 ns and 60 s comes back within 1.6 %
 * (half a bucket) of an observed value; plus exact counts for a fixed set of
 * Prometheus `le` bounds.
 *
 * DESIGN. One writer per instance (the thread that owns it): updates are a
 * relaxed load and a relaxed store per counter, no read-modify-write and no
 * fence. Readers on other threads (the scraper) take relaxed snapshots with
 * vb_hist_merge(); a snapshot may miss the observation in flight, never
 * tears a counter. Instances are embeddable; 8 KiB each.
 */
#ifndef VB_CORE_HIST_H
#define VB_CORE_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define VB_HIST_SUB_BITS 5
#define VB_HIST_SUB      (1u << VB_HIST_SUB_BITS)
#define VB_HIST_MIN_BITS 6  /* values below 2^6 ns share bucket 0 */
#define VB_HIST_MAX_BITS 36 /* values at or above 2^36 ns (68.7 s) overflow */
#define VB_HIST_NBUCKETS \
    (2 + (VB_HIST_MAX_BITS - VB_HIST_MIN_BITS) * VB_HIST_SUB)
#define VB_HIST_NLE 25 /* finite Prometheus bounds, see vb_hist_le_seconds */

typedef struct vb_hist {
    _Atomic uint64_t _count;
    _Atomic uint64_t _sum_ns;
    _Atomic uint64_t _min_ns;
    _Atomic uint64_t _max_ns;
    _Atomic uint64_t _le[VB_HIST_NLE + 1]; /* per bound, last is +Inf only */
    _Atomic uint64_t _b[VB_HIST_NBUCKETS];
} vb_hist_t;

/* Empties `h`. Call before first use, with no writer running. */
void vb_hist_init(vb_hist_t *h);

/* Records one observation of `ns` nanoseconds. Owner thread only. */
void vb_hist_record(vb_hist_t *h, uint64_t ns);

/* Adds `src` into `dst`. `dst` must be private to the caller; `src` may be
 * written concurrently by its owner (relaxed snapshot). */
void vb_hist_merge(vb_hist_t *dst, vb_hist_t *src);

uint64_t vb_hist_count(vb_hist_t *h);
uint64_t vb_hist_sum_ns(vb_hist_t *h);

/* Value at quantile q in [0, 1] (0.5 median, 0.99 p99) in ns, within half a
 * bucket; 0 when empty. Not for use on a histogram being written unless a
 * slightly stale answer is fine. */
uint64_t vb_hist_quantile(vb_hist_t *h, double q);

/* The fixed finite `le` bounds in seconds, ascending; *n gets VB_HIST_NLE. */
const double *vb_hist_le_seconds(size_t *n);

/* Cumulative counts: cum[i] = observations <= bound i, cum[VB_HIST_NLE] =
 * all observations (+Inf). */
void vb_hist_cumulative(vb_hist_t *h, uint64_t cum[VB_HIST_NLE + 1]);

/* Bucket index of a value, and the bucket's [lower, upper) bounds in ns;
 * exposed for tests. */
unsigned vb_hist_bucket_of(uint64_t ns);
void vb_hist_bucket_bounds(unsigned idx, uint64_t *lower, uint64_t *upper);

#endif
