/* SPDX-License-Identifier: MIT */
/*
 * G.711 against an independent oracle: the ITU-T G.191 STL reference
 * algorithms (ulaw_compress, ulaw_expand, alaw_compress, alaw_expand),
 * re-implemented here step by step from their description, with their short
 * arithmetic, loops and one's complements, rather than with the library's
 * tables or bit tricks. Every one of the 65536 inputs and 256 codes is
 * checked.
 */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsp/g711.h"
#include "tests/g711_sample.h"
#include "tests/test.h"

/* ---- G.191 oracle -------------------------------------------------- */

/* ulaw_compress: 16-bit linear (14 significant bits, left justified) ->
 * μ-law. Negative samples are one's-complemented before the shift. */
static short g191_ulaw_compress(short lin)
{
    short absno =
        lin < 0 ? (short)(((~lin) >> 2) + 33) : (short)((lin >> 2) + 33);
    if (absno > 0x1FFF)
        absno = 0x1FFF;
    short i = (short)(absno >> 6);
    short segno = 1;
    while (i != 0) {
        segno++;
        i >>= 1;
    }
    short high_nibble = (short)(0x0008 - segno);
    short low_nibble = (short)((absno >> segno) & 0x000F);
    low_nibble = (short)(0x000F - low_nibble);
    short code = (short)((high_nibble << 4) | low_nibble);
    if (lin >= 0)
        code = (short)(code | 0x0080);
    return code;
}

/* ulaw_expand: μ-law -> 16-bit linear, the middle of each interval. */
static short g191_ulaw_expand(short code)
{
    short sign = code < 0x0080 ? -1 : 1;
    short mantissa = (short)~code;
    short exponent = (short)((mantissa >> 4) & 0x0007);
    short segment = (short)(exponent + 1);
    mantissa = (short)(mantissa & 0x000F);
    short step = (short)(4 << segment);
    return (short)(sign * ((0x0080 << exponent) + step * mantissa + step / 2 -
                           4 * 33));
}

/* alaw_compress: 16-bit linear (12 significant magnitude bits) -> A-law. */
static short g191_alaw_compress(short lin)
{
    short ix = lin < 0 ? (short)((~lin) >> 4) : (short)(lin >> 4);
    if (ix > 15) {
        short iexp = 1;
        while (ix > 16 + 15) {
            ix >>= 1;
            iexp++;
        }
        ix = (short)(ix - 16);
        ix = (short)(ix + (iexp << 4));
    }
    if (lin >= 0)
        ix = (short)(ix | 0x0080);
    return (short)(ix ^ 0x0055);
}

/* alaw_expand: A-law -> 16-bit linear. */
static short g191_alaw_expand(short code)
{
    short ix = (short)(code ^ 0x0055);
    ix &= 0x007F;
    short iexp = (short)(ix >> 4);
    short mant = (short)(ix & 0x000F);
    if (iexp > 0)
        mant = (short)(mant + 16);
    mant = (short)((mant << 4) + 0x0008);
    if (iexp > 1)
        mant = (short)(mant << (iexp - 1));
    return code > 127 ? mant : (short)-mant;
}

/* ---- helpers -------------------------------------------------------- */

typedef uint8_t (*enc_fn)(int16_t);
typedef short (*oracle_fn)(short);

/* The contract for any encoder: each input gets the G.191 code, or the code
 * of the adjacent level, and then only within one grid step (4 for μ-law's
 * 14-bit grid, 16 for A-law's 12-bit grid) of the G.191 decision threshold
 * between the two. Returns the number of inputs that differ from G.191. */
static long check_encoder(enc_fn enc, oracle_fn compress, oracle_fn expand,
                          int grid)
{
    long differ = 0;
    for (int x = INT16_MIN; x <= INT16_MAX; x++) {
        int ref = compress((short)x) & 0xFF;
        int got = enc((int16_t)x);
        if (got == ref)
            continue;
        differ++;
        int lr = expand((short)ref), lg = expand((short)got);
        /* Adjacent levels: no level strictly between them. */
        int lo = lr < lg ? lr : lg, hi = lr < lg ? lg : lr;
        for (int c = 0; c < 256; c++) {
            int l = expand((short)c);
            if (l > lo && l < hi)
                vb_test_fail(__FILE__, __LINE__,
                             "x=%d: code %#x, G.191 %#x: not adjacent", x, got,
                             ref);
        }
        /* The G.191 threshold between them: the first input mapped up. */
        int t = x;
        while (t > INT16_MIN &&
               expand((short)(compress((short)(t - 1)) & 0xFF)) >= hi)
            t--;
        while (t < INT16_MAX && expand((short)(compress((short)t) & 0xFF)) < hi)
            t++;
        if (abs(x - t) > grid)
            vb_test_fail(__FILE__, __LINE__,
                         "x=%d: code %#x, G.191 %#x, %d from the threshold %d",
                         x, got, ref, abs(x - t), t);
    }
    return differ;
}

/* ---- decode --------------------------------------------------------- */

TEST(ulaw_decode_matches_g191_all_codes)
{
    for (int c = 0; c < 256; c++) {
        ASSERT_EQ(ulaw_decode1((uint8_t)c), g191_ulaw_expand((short)c));
    }
}

TEST(alaw_decode_matches_g191_all_codes)
{
    for (int c = 0; c < 256; c++) {
        ASSERT_EQ(alaw_decode1((uint8_t)c), g191_alaw_expand((short)c));
    }
}

TEST(decode_extremes_and_zeros)
{
    ASSERT_EQ(ulaw_decode1(0xFF), 0);
    ASSERT_EQ(ulaw_decode1(0x7F), 0);
    ASSERT_EQ(ulaw_decode1(0x80), 32124);
    ASSERT_EQ(ulaw_decode1(0x00), -32124);
    ASSERT_EQ(ulaw_decode1(VB_G711_ULAW_SILENCE), 0);
    /* A-law has no zero: its silence is the smallest positive level. */
    ASSERT_EQ(alaw_decode1(VB_G711_ALAW_SILENCE), 8);
    ASSERT_EQ(alaw_decode1(0x55), -8);
    ASSERT_EQ(alaw_decode1(0xAA), 32256);
    ASSERT_EQ(alaw_decode1(0x2A), -32256);
    /* Only the two μ-law zero codes decode to 0; A-law never does. */
    int uzero = 0, azero = 0;
    for (int c = 0; c < 256; c++) {
        uzero += ulaw_decode1((uint8_t)c) == 0;
        azero += alaw_decode1((uint8_t)c) == 0;
    }
    ASSERT_EQ(uzero, 2);
    ASSERT_EQ(azero, 0);
}

/* ---- encode --------------------------------------------------------- */

TEST(ulaw_encode_matches_g191_all_inputs)
{
    long differ =
        check_encoder(ulaw_encode1, g191_ulaw_compress, g191_ulaw_expand, 4);
    /* Our rounding is G.191's own (g711.h), so there is no boundary case
     * at all. */
    ASSERT_EQ(differ, 0);
}

TEST(alaw_encode_matches_g191_all_inputs)
{
    long differ =
        check_encoder(alaw_encode1, g191_alaw_compress, g191_alaw_expand, 16);
    ASSERT_EQ(differ, 0);
}

/* The boundary checker itself must reject a wrong encoder and accept a
 * rounding one, or the test above would prove nothing about it. */
static uint8_t ulaw_rounding_encoder(int16_t x)
{
    /* sox's choice: round to the 14-bit grid first, (x + 2) >> 2. */
    int r = x >= 32766 ? 32764 : x + 2;
    return (uint8_t)g191_ulaw_compress((short)(r & ~3));
}

/* Two wrong encoders: a code two levels off, and the adjacent code far
 * from any threshold (x = 1000 lies mid-interval: its level is 988, and
 * the thresholds around it are 956 and 1020). */
static uint8_t ulaw_two_levels_off(int16_t x)
{
    int c = g191_ulaw_compress(x) & 0xFF;
    return (uint8_t)(x == 1000 ? c - 2 : c);
}

static uint8_t ulaw_adjacent_off_boundary(int16_t x)
{
    int c = g191_ulaw_compress(x) & 0xFF;
    return (uint8_t)(x == 1000 ? c - 1 : c);
}

static void expect_rejected(enc_fn enc)
{
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        /* vb_test_fail exits 1 from inside the checker; keep its report
         * out of the test log. */
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        check_encoder(enc, g191_ulaw_compress, g191_ulaw_expand, 4);
        _exit(0);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 1);
}

TEST(encoder_contract_checker_is_sensitive)
{
    long differ = check_encoder(ulaw_rounding_encoder, g191_ulaw_compress,
                                g191_ulaw_expand, 4);
    ASSERT_GT(differ, 100); /* differs at boundaries, and passes */
    expect_rejected(ulaw_two_levels_off);
    expect_rejected(ulaw_adjacent_off_boundary);
}

TEST(encode_extremes_and_zero_codes)
{
    ASSERT_EQ(ulaw_encode1(INT16_MAX), 0x80);
    ASSERT_EQ(ulaw_encode1(INT16_MIN), 0x00);
    ASSERT_EQ(alaw_encode1(INT16_MAX), 0xAA);
    ASSERT_EQ(alaw_encode1(INT16_MIN), 0x2A);
    /* 0..3 -> +0 (0xFF); -4..-1 -> -0 (0x7F), mirror images about -1/2. */
    for (int x = 0; x <= 3; x++)
        ASSERT_EQ(ulaw_encode1((int16_t)x), 0xFF);
    for (int x = -4; x <= -1; x++)
        ASSERT_EQ(ulaw_encode1((int16_t)x), 0x7F);
    ASSERT_EQ(ulaw_encode1(4), 0xFE);
    ASSERT_EQ(ulaw_encode1(-5), 0x7E);
    ASSERT_EQ(alaw_encode1(0), VB_G711_ALAW_SILENCE);
    ASSERT_EQ(alaw_encode1(-1), 0x55);
}

TEST(encoders_are_symmetric_about_minus_half)
{
    /* x and -1-x get codes that differ only in the sign bit. */
    for (int x = 0; x <= INT16_MAX; x++) {
        int16_t p = (int16_t)x, n = (int16_t)(-1 - x);
        ASSERT_EQ(ulaw_encode1(p) ^ 0x80, ulaw_encode1(n));
        ASSERT_EQ(alaw_encode1(p) ^ 0x80, alaw_encode1(n));
    }
}

TEST(ulaw_round_trip_is_identity_for_255_codes)
{
    int identical = 0;
    for (int c = 0; c < 256; c++) {
        int16_t lin = ulaw_decode1((uint8_t)c);
        uint8_t back = ulaw_encode1(lin);
        if (back == c)
            identical++;
        else
            /* Only -0 changes, to +0: same sound. */
            ASSERT_TRUE(c == 0x7F && back == 0xFF);
    }
    ASSERT_EQ(identical, 255);
}

TEST(alaw_round_trip_is_identity_for_all_codes)
{
    for (int c = 0; c < 256; c++) {
        int16_t lin = alaw_decode1((uint8_t)c);
        ASSERT_EQ(alaw_encode1(lin), c);
    }
}

TEST(buffer_forms_equal_sample_forms)
{
    static int16_t lin[65536];
    static uint8_t ucodes[65536], acodes[65536];
    for (int i = 0; i < 65536; i++)
        lin[i] = (int16_t)(i - 32768);
    vb_g711_ulaw_encode(ucodes, lin, 65536);
    vb_g711_alaw_encode(acodes, lin, 65536);
    for (int i = 0; i < 65536; i++) {
        ASSERT_EQ(ucodes[i], ulaw_encode1(lin[i]));
        ASSERT_EQ(acodes[i], alaw_encode1(lin[i]));
    }
    uint8_t codes[256];
    int16_t u[256], a[256];
    for (int c = 0; c < 256; c++)
        codes[c] = (uint8_t)c;
    vb_g711_ulaw_decode(u, codes, 256);
    vb_g711_alaw_decode(a, codes, 256);
    for (int c = 0; c < 256; c++) {
        ASSERT_EQ(u[c], ulaw_decode1((uint8_t)c));
        ASSERT_EQ(a[c], alaw_decode1((uint8_t)c));
    }
    vb_g711_ulaw_encode(ucodes, lin, 0); /* n = 0 is a no-op */
}

/* The encode tables are built on first use: several threads racing to be
 * first must all see complete tables. Each case runs in a fresh process,
 * so nothing has built them yet. */
static int16_t all_inputs[65536];

static void *encode_all(void *arg)
{
    vb_g711_ulaw_encode(arg, all_inputs, 65536);
    return NULL;
}

TEST(first_use_from_many_threads)
{
    enum { N = 4 };
    static uint8_t out[N][65536];
    pthread_t t[N];
    for (int i = 0; i < 65536; i++)
        all_inputs[i] = (int16_t)(i - 32768);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, encode_all, out[i]), 0);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < N; i++)
        for (int x = 0; x < 65536; x++)
            ASSERT_EQ(out[i][x], g191_ulaw_compress((short)(x - 32768)) & 0xFF);
}
