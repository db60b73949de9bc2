/* SPDX-License-Identifier: MIT */
/* Log-linear latency histogram; the layout and threading are in hist.h. */
#include "core/hist.h"

#include <string.h>

/* Prometheus bounds: from 10 µs (a stage's median is tens of µs), dense
 * where bridge-added latency lives (sub-ms to a few hundred ms), sparse out
 * to the 60 s ceiling. Written in ns so the comparison in the hot path is
 * integer-only. */
static const uint64_t le_ns[VB_HIST_NLE] = {
    10000,      25000,      50000,       100000,      250000,
    500000,     1000000,    2000000,     5000000,     10000000,
    20000000,   40000000,   60000000,    80000000,    100000000,
    150000000,  200000000,  300000000,   500000000,   1000000000,
    2000000000, 5000000000, 10000000000, 30000000000, 60000000000,
};
static const double le_s[VB_HIST_NLE] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005,
    0.01,    0.02,     0.04,    0.06,   0.08,    0.1,    0.15,  0.2,   0.3,
    0.5,     1,        2,       5,      10,      30,     60,
};

/* Single-writer increment: no RMW needed, only untorn 64-bit accesses. */
static inline void bump(_Atomic uint64_t *a, uint64_t n)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t get(_Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

void vb_hist_init(vb_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    atomic_store_explicit(&h->_min_ns, UINT64_MAX, memory_order_relaxed);
}

unsigned vb_hist_bucket_of(uint64_t ns)
{
    if (ns < (1ull << VB_HIST_MIN_BITS))
        return 0;
    if (ns >= (1ull << VB_HIST_MAX_BITS))
        return VB_HIST_NBUCKETS - 1;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    unsigned sub =
        (unsigned)(ns >> (msb - VB_HIST_SUB_BITS)) & (VB_HIST_SUB - 1);
    return 1 + (msb - VB_HIST_MIN_BITS) * VB_HIST_SUB + sub;
}

void vb_hist_bucket_bounds(unsigned idx, uint64_t *lower, uint64_t *upper)
{
    if (idx == 0) {
        *lower = 0;
        *upper = 1ull << VB_HIST_MIN_BITS;
        return;
    }
    if (idx >= VB_HIST_NBUCKETS - 1) {
        *lower = 1ull << VB_HIST_MAX_BITS;
        *upper = UINT64_MAX;
        return;
    }
    unsigned octave = (idx - 1) / VB_HIST_SUB, sub = (idx - 1) % VB_HIST_SUB;
    unsigned shift = octave + VB_HIST_MIN_BITS - VB_HIST_SUB_BITS;
    *lower = (uint64_t)(VB_HIST_SUB + sub) << shift;
    *upper = (uint64_t)(VB_HIST_SUB + sub + 1) << shift;
}

static unsigned le_index(uint64_t ns)
{
    unsigned lo = 0, hi = VB_HIST_NLE; /* first bound >= ns, or NLE */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (le_ns[mid] < ns)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void vb_hist_record(vb_hist_t *h, uint64_t ns)
{
    bump(&h->_count, 1);
    bump(&h->_sum_ns, ns);
    if (ns < get(&h->_min_ns))
        atomic_store_explicit(&h->_min_ns, ns, memory_order_relaxed);
    if (ns > get(&h->_max_ns))
        atomic_store_explicit(&h->_max_ns, ns, memory_order_relaxed);
    bump(&h->_le[le_index(ns)], 1);
    bump(&h->_b[vb_hist_bucket_of(ns)], 1);
}

void vb_hist_merge(vb_hist_t *dst, vb_hist_t *src)
{
    bump(&dst->_count, get(&src->_count));
    bump(&dst->_sum_ns, get(&src->_sum_ns));
    uint64_t mn = get(&src->_min_ns), mx = get(&src->_max_ns);
    if (mn < get(&dst->_min_ns))
        atomic_store_explicit(&dst->_min_ns, mn, memory_order_relaxed);
    if (mx > get(&dst->_max_ns))
        atomic_store_explicit(&dst->_max_ns, mx, memory_order_relaxed);
    for (unsigned i = 0; i <= VB_HIST_NLE; i++)
        bump(&dst->_le[i], get(&src->_le[i]));
    for (unsigned i = 0; i < VB_HIST_NBUCKETS; i++)
        bump(&dst->_b[i], get(&src->_b[i]));
}

uint64_t vb_hist_count(vb_hist_t *h)
{
    return get(&h->_count);
}

uint64_t vb_hist_sum_ns(vb_hist_t *h)
{
    return get(&h->_sum_ns);
}

uint64_t vb_hist_quantile(vb_hist_t *h, double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < VB_HIST_NBUCKETS; i++)
        total += get(&h->_b[i]);
    if (total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    /* Rank of the wanted observation, 1-based, as "nearest rank". */
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    unsigned i = 0;
    for (; i < VB_HIST_NBUCKETS; i++) {
        seen += get(&h->_b[i]);
        if (seen >= rank)
            break;
    }
    uint64_t lower, upper, v;
    vb_hist_bucket_bounds(i, &lower, &upper);
    if (i == VB_HIST_NBUCKETS - 1)
        v = get(&h->_max_ns);
    else
        v = lower + (upper - lower) / 2;
    /* The true value lies within [min, max]: clamping can only help. */
    uint64_t mn = get(&h->_min_ns), mx = get(&h->_max_ns);
    if (v < mn)
        v = mn;
    if (v > mx)
        v = mx;
    return v;
}

const double *vb_hist_le_seconds(size_t *n)
{
    *n = VB_HIST_NLE;
    return le_s;
}

void vb_hist_cumulative(vb_hist_t *h, uint64_t cum[VB_HIST_NLE + 1])
{
    uint64_t run = 0;
    for (unsigned i = 0; i <= VB_HIST_NLE; i++) {
        run += get(&h->_le[i]);
        cum[i] = run;
    }
}
