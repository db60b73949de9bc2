/* SPDX-License-Identifier: MIT */
#include "core/hist.h"
#include "tests/test.h"

static vb_hist_t h, h2, merged;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Exact nearest-rank quantile of sorted data. */
static uint64_t exact_q(const uint64_t *v, size_t n, double q)
{
    size_t rank = (size_t)(q * (double)n + 0.999999999);
    if (rank == 0)
        rank = 1;
    return v[rank - 1];
}

static void check_quantiles(vb_hist_t *hh, uint64_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    const double qs[] = {0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double want = (double)exact_q(v, n, qs[i]);
        double got = (double)vb_hist_quantile(hh, qs[i]);
        if (fabs(got - want) > 0.03 * want)
            vb_test_fail(__FILE__, __LINE__, "q%.3f: got %.0f want %.0f", qs[i],
                         got, want);
    }
}

TEST(hist_bucket_bounds_cover_range_with_3pct_error)
{
    /* Every bucket from 100 ns to 60 s is narrower than 3 % of its lower
     * bound, and the buckets tile the line without gaps. */
    uint64_t prev_upper = 0;
    for (unsigned i = 0; i < VB_HIST_NBUCKETS; i++) {
        uint64_t lo, hi;
        vb_hist_bucket_bounds(i, &lo, &hi);
        ASSERT_UEQ(lo, prev_upper);
        prev_upper = hi;
        if (lo >= 100 && hi <= 60000000000ull)
            ASSERT_DBL_OP((double)(hi - lo) / 2, <=, 0.03 * (double)lo);
    }
    for (uint64_t v = 1; v < 70000000000ull; v = v * 3 / 2 + 1) {
        uint64_t lo, hi;
        unsigned b = vb_hist_bucket_of(v);
        vb_hist_bucket_bounds(b, &lo, &hi);
        ASSERT_TRUE(v >= lo && v < hi);
    }
    ASSERT_EQ(vb_hist_bucket_of(0), 0);
    ASSERT_EQ(vb_hist_bucket_of(UINT64_MAX), VB_HIST_NBUCKETS - 1);
}

TEST(hist_quantiles_match_sorted_data)
{
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof(*v));
    ASSERT_NOT_NULL(v);
    /* Log-uniform over 100 ns .. 60 s: every octave exercised. */
    vb_hist_init(&h);
    for (size_t i = 0; i < N; i++) {
        double e = 2.0 + (double)(rng() % 1000000) / 1000000.0 * 8.778;
        v[i] = (uint64_t)pow(10.0, e);
        vb_hist_record(&h, v[i]);
    }
    ASSERT_UEQ(vb_hist_count(&h), N);
    check_quantiles(&h, v, N);
    /* A tight latency-like cluster: 20 ms +- 2 ms with a 1 % tail. */
    vb_hist_init(&h);
    for (size_t i = 0; i < N; i++) {
        v[i] = 18000000 + rng() % 4000000;
        if (i % 100 == 0)
            v[i] = 150000000 + rng() % 50000000;
        vb_hist_record(&h, v[i]);
    }
    check_quantiles(&h, v, N);
    free(v);
}

TEST(hist_merge_equals_single)
{
    enum { N = 50000 };
    uint64_t *v = malloc(2 * N * sizeof(*v));
    vb_hist_init(&h);
    vb_hist_init(&h2);
    vb_hist_init(&merged);
    uint64_t sum = 0;
    for (size_t i = 0; i < 2 * N; i++) {
        v[i] = 1000 + rng() % 5000000;
        sum += v[i];
        vb_hist_record(i < N ? &h : &h2, v[i]);
    }
    vb_hist_merge(&merged, &h);
    vb_hist_merge(&merged, &h2);
    ASSERT_UEQ(vb_hist_count(&merged), 2 * N);
    ASSERT_UEQ(vb_hist_sum_ns(&merged), sum);
    check_quantiles(&merged, v, 2 * N);
    free(v);
}

TEST(hist_prometheus_buckets_are_exact)
{
    size_t n;
    const double *le = vb_hist_le_seconds(&n);
    ASSERT_EQ(n, VB_HIST_NLE);
    ASSERT_NEAR(le[0], 0.00001, 1e-12);
    ASSERT_NEAR(le[3], 0.0001, 1e-12);
    ASSERT_NEAR(le[n - 1], 60, 1e-9);
    vb_hist_init(&h);
    /* Values right at and just above bounds land on the correct side. */
    vb_hist_record(&h, 100000);         /* le 0.0001 */
    vb_hist_record(&h, 100001);         /* le 0.00025 */
    vb_hist_record(&h, 1000000);        /* le 0.001 */
    vb_hist_record(&h, 60000000000ull); /* le 60 */
    vb_hist_record(&h, 60000000001ull); /* +Inf only */
    uint64_t cum[VB_HIST_NLE + 1];
    vb_hist_cumulative(&h, cum);
    ASSERT_UEQ(cum[0], 0); /* le 10 µs */
    ASSERT_UEQ(cum[2], 0); /* le 50 µs */
    ASSERT_UEQ(cum[3], 1);
    ASSERT_UEQ(cum[4], 2);
    ASSERT_UEQ(cum[5], 2);
    ASSERT_UEQ(cum[6], 3);
    ASSERT_UEQ(cum[VB_HIST_NLE - 2], 3);
    ASSERT_UEQ(cum[VB_HIST_NLE - 1], 4);
    ASSERT_UEQ(cum[VB_HIST_NLE], 5);
    for (size_t i = 1; i <= VB_HIST_NLE; i++)
        ASSERT_UINT_OP(cum[i], >=, cum[i - 1]);
}

TEST(hist_empty_and_extremes)
{
    vb_hist_init(&h);
    ASSERT_UEQ(vb_hist_quantile(&h, 0.5), 0);
    vb_hist_record(&h, 5);
    ASSERT_UEQ(vb_hist_quantile(&h, 0.5), 5);
    vb_hist_init(&h);
    vb_hist_record(&h, 100000000000ull);
    ASSERT_UEQ(vb_hist_quantile(&h, 0.99), 100000000000ull);
}
