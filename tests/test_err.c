/* SPDX-License-Identifier: MIT */
#include "core/clock.h"
#include "core/err.h"
#include "tests/test.h"

TEST(err_codes_are_negative_and_distinct)
{
    int codes[] = {
#define C(name, msg) VB_##name,
        VB_ERR_MAP(C)
#undef C
    };
    size_t n = sizeof(codes) / sizeof(codes[0]);
    ASSERT_EQ(n, VB__ERR_COUNT);
    for (size_t i = 0; i < n; i++) {
        ASSERT_LT(codes[i], 0);
        for (size_t j = i + 1; j < n; j++)
            ASSERT_NE(codes[i], codes[j]);
    }
}

TEST(err_names_and_messages)
{
    ASSERT_STR_EQ(vb_err_name(VB_EINVAL), "EINVAL");
    ASSERT_STR_EQ(vb_err_name(VB_ESYS), "ESYS");
    ASSERT_STR_EQ(vb_err_name(0), "OK");
    ASSERT_STR_EQ(vb_err_name(-9999), "EUNKNOWN");
    ASSERT_STR_EQ(vb_err_name(5), "EUNKNOWN");
    ASSERT_STR_EQ(vb_strerror(VB_ENOSPC),
                  "no space left (ring or buffer full)");
    ASSERT_STR_EQ(vb_strerror(0), "success");
    ASSERT_STR_EQ(vb_strerror(-9999), "unknown error");
#define C(name, msg) ASSERT_STR_EQ(vb_strerror(VB_##name), msg);
    VB_ERR_MAP(C)
#undef C
}

TEST(clock_is_monotonic)
{
    uint64_t prev = vb_clock_now_ns();
    ASSERT_GT(prev, 0);
    for (int i = 0; i < 100000; i++) {
        uint64_t now = vb_clock_now_ns();
        ASSERT_UINT_OP(now, >=, prev);
        prev = now;
    }
    struct timespec ts = {0, 2000000};
    uint64_t a = vb_clock_now_ns();
    nanosleep(&ts, NULL);
    ASSERT_UINT_OP(vb_clock_now_ns() - a, >=, 2000000u);
    ASSERT_GT(vb_clock_wall_s(), 1.7e9);
}
