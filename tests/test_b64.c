/* SPDX-License-Identifier: MIT */
/*
 * core/b64: the RFC 4648 vectors; every length 0..4096 against mbedTLS both
 * ways; every byte value at every position of an encoding; padding and
 * length errors; random mutations judged against mbedTLS; a cap too small.
 * Buffers are allocated at their exact size, so under ASan a read past `n`
 * or a write past `cap` is caught as well as checked with guard bytes.
 */
#include <mbedtls/base64.h>
#include <stdbool.h>

#include "core/b64.h"
#include "core/err.h"
#include "tests/test.h"

#define GUARD 0xA5

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() >> 56);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    ASSERT_NOT_NULL(p);
    return p;
}

static bool has_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' || s[i] == '\n' || s[i] == '\r')
            return true;
    return false;
}

/* Decodes `s` with both codecs and checks they agree as core/b64.h says:
 * whatever we accept, mbedTLS accepts with the same bytes; for a length
 * that is a multiple of 4 without whitespace, mbedTLS rejects whatever we
 * reject; otherwise we reject. Returns our result. The input is copied to
 * a buffer of exactly n bytes. */
static int judge(const char *s, size_t n)
{
    char *in = xmalloc(n);
    memcpy(in, s, n);
    size_t cap = n + 4, ours_n = 0, theirs_n = 0;
    uint8_t *ours = xmalloc(cap), *theirs = xmalloc(cap);
    int rc = vb_b64_decode(ours, cap, in, n, &ours_n);
    int mrc = mbedtls_base64_decode(theirs, cap, &theirs_n,
                                    (const unsigned char *)in, n);
    ASSERT_TRUE(rc == 0 || rc == VB_EINVAL);
    if (rc == 0) {
        ASSERT_EQ(mrc, 0);
        ASSERT_UEQ(ours_n, theirs_n);
        ASSERT_MEM_EQ(ours, theirs, ours_n);
    } else if (n % 4 == 0 && !has_space(in, n)) {
        ASSERT_EQ(mrc, MBEDTLS_ERR_BASE64_INVALID_CHARACTER);
    }
    free(in);
    free(ours);
    free(theirs);
    return rc;
}

TEST(rfc4648_vectors)
{
    static const char *const v[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char enc[16];
        uint8_t dec[16];
        size_t n = strlen(v[i][0]), m = strlen(v[i][1]), got = 99;
        ASSERT_UEQ(vb_b64_encoded_len(n), m);
        ASSERT_UEQ(vb_b64_encode(enc, (const uint8_t *)v[i][0], n), m);
        ASSERT_MEM_EQ(enc, v[i][1], m);
        ASSERT_EQ(vb_b64_decode(dec, n, v[i][1], m, &got), 0);
        ASSERT_UEQ(got, n);
        ASSERT_MEM_EQ(dec, v[i][0], n);
        ASSERT_UEQ(vb_b64_decoded_max(m), (n + 2) / 3 * 3);
    }
    /* The whole alphabet, in order, both directions. */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "abcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t raw[48];
    size_t got = 0;
    ASSERT_EQ(judge(alphabet, 64), 0);
    ASSERT_EQ(vb_b64_decode(raw, sizeof(raw), alphabet, 64, &got), 0);
    ASSERT_UEQ(got, 48);
    char enc[64];
    ASSERT_UEQ(vb_b64_encode(enc, raw, 48), 64);
    ASSERT_MEM_EQ(enc, alphabet, 64);
}

TEST(every_length_to_4096_matches_mbedtls)
{
    for (size_t n = 0; n <= 4096; n++) {
        uint8_t *src = xmalloc(n);
        fill_random(src, n);
        size_t m = vb_b64_encoded_len(n);
        ASSERT_UEQ(m, (n + 2) / 3 * 4);
        /* Ours writes exactly m characters and no NUL. */
        char *enc = xmalloc(m + 1);
        enc[m] = (char)GUARD;
        ASSERT_UEQ(vb_b64_encode(enc, src, n), m);
        ASSERT_EQ((uint8_t)enc[m], GUARD);
        unsigned char *ref = xmalloc(m + 1);
        size_t ref_n = 0;
        ASSERT_EQ(mbedtls_base64_encode(ref, m + 1, &ref_n, src, n), 0);
        ASSERT_UEQ(ref_n, m);
        ASSERT_MEM_EQ(enc, ref, m);
        /* Decoding into exactly the bytes it needs, from exactly m. */
        char *in = xmalloc(m);
        memcpy(in, enc, m);
        uint8_t *back = xmalloc(n), *theirs = xmalloc(n);
        size_t got = 0, theirs_n = 0;
        ASSERT_UEQ(vb_b64_decoded_max(m), m / 4 * 3);
        ASSERT_GE(vb_b64_decoded_max(m), n);
        ASSERT_EQ(vb_b64_decode(back, n, in, m, &got), 0);
        ASSERT_UEQ(got, n);
        ASSERT_MEM_EQ(back, src, n);
        ASSERT_EQ(mbedtls_base64_decode(theirs, n, &theirs_n,
                                        (const unsigned char *)in, m),
                  0);
        ASSERT_UEQ(theirs_n, n);
        ASSERT_MEM_EQ(theirs, back, n);
        free(src);
        free(enc);
        free(ref);
        free(in);
        free(back);
        free(theirs);
    }
}

TEST(bad_padding_and_length_are_einval)
{
    static const char *const bad[] = {
        "=",        "==",       "===",     "====",     "A===",     "AA=A",
        "A=AA",     "=AAA",     "A",       "AA",       "AAA",      "AA=",
        "AAAAA",    "AAAA=",    "AAAA==",  "AAA==",    "AA==AAAA", "AAA=AAAA",
        "AAAA====", "Zm9v=Zm9", "Zm9vYg=", "Zm9vY===", "-_-_",     "Zm9v\n",
        "Zm\n9v",   "Zm9v\r\n", " Zm9v",   "Zm 9v",    "Zm9v    ", "Zm9\r",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = strlen(bad[i]);
        if (judge(bad[i], n) != VB_EINVAL)
            vb_test_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
    }
    /* Embedded NUL and bytes >= 0x80, in each place of a group. */
    ASSERT_EQ(judge("AA\0A", 4), VB_EINVAL);
    ASSERT_EQ(judge("\0AAA", 4), VB_EINVAL);
    ASSERT_EQ(judge("AAA\0", 4), VB_EINVAL);
    ASSERT_EQ(judge("AA\0=", 4), VB_EINVAL);
    ASSERT_EQ(judge("Zm\xc3\xa9", 4), VB_EINVAL);
    ASSERT_EQ(judge("\xffm9v", 4), VB_EINVAL);
    ASSERT_EQ(judge("Zm9vYg\x80=", 8), VB_EINVAL);
    /* What mbedTLS 2.28 lets through and we do not (core/b64.h): a
     * dropped partial group, padding after a full one, line breaks. */
    uint8_t out[8];
    size_t mn = 0;
    ASSERT_EQ(mbedtls_base64_decode(out, sizeof(out), &mn,
                                    (const unsigned char *)"Zm9vY", 5),
              0);
    ASSERT_UEQ(mn, 3);
    ASSERT_EQ(mbedtls_base64_decode(out, sizeof(out), &mn,
                                    (const unsigned char *)"Zm9v==", 6),
              0);
    ASSERT_EQ(mbedtls_base64_decode(out, sizeof(out), &mn,
                                    (const unsigned char *)"Zm\n9v", 5),
              0);
    /* Non-zero bits under the padding are ignored, as mbedTLS does. */
    size_t n = 0;
    ASSERT_EQ(judge("AAF=", 4), 0);
    ASSERT_EQ(vb_b64_decode(out, sizeof(out), "AAF=", 4, &n), 0);
    ASSERT_UEQ(n, 2);
    ASSERT_EQ(out[0], 0);
    ASSERT_EQ(out[1], 1);
    ASSERT_EQ(judge("AB==", 4), 0);
    ASSERT_EQ(judge("", 0), 0);
}

TEST(every_byte_at_every_position_agrees_with_mbedtls)
{
    /* 47 and 46 bytes end in "=" and "==", 48 in a full group. */
    for (size_t len = 46; len <= 48; len++) {
        uint8_t src[48];
        fill_random(src, len);
        char enc[64];
        size_t m = vb_b64_encode(enc, src, len);
        size_t rejected = 0;
        for (size_t pos = 0; pos < m; pos++) {
            for (int v = 0; v < 256; v++) {
                char s[64];
                memcpy(s, enc, m);
                s[pos] = (char)v;
                bool alpha = (v >= 'A' && v <= 'Z') || (v >= 'a' && v <= 'z') ||
                             (v >= '0' && v <= '9') || v == '+' || v == '/';
                int rc = judge(s, m);
                /* A character of the alphabet in place of a '=', or a '='
                 * in the last two places, may form a valid string;
                 * anything else is invalid. */
                if (!alpha && !(v == '=' && pos >= m - 2))
                    ASSERT_EQ(rc, VB_EINVAL);
                if (alpha && enc[pos] != '=')
                    ASSERT_EQ(rc, 0);
                rejected += rc != 0;
            }
        }
        ASSERT_GE(rejected, m * (256 - 64 - 1));
    }
}

TEST(random_mutations_agree_with_mbedtls)
{
    static const char pick[] = "AZaz09+/====\n\r -_\0\x80\xff";
    size_t accepted = 0, rejected = 0;
    for (int round = 0; round < 5000; round++) {
        size_t len = (size_t)(rng() % 40);
        uint8_t src[40];
        fill_random(src, len);
        char s[64];
        size_t m = vb_b64_encode(s, src, len);
        int muts = (int)(rng() % 4);
        for (int k = 0; k < muts && m > 0; k++) {
            size_t pos = (size_t)(rng() % m);
            uint64_t r = rng();
            s[pos] =
                r & 1 ? (char)(r >> 8) : pick[(r >> 8) % (sizeof(pick) - 1)];
        }
        switch (rng() % 8) {
        case 0: /* truncate */
            m = m > 0 ? (size_t)(rng() % m) : 0;
            break;
        case 1: /* extend with padding or a character */
            if (m < sizeof(s))
                s[m++] = rng() & 1 ? '=' : 'A';
            break;
        default:
            break;
        }
        if (judge(s, m) == 0)
            accepted++;
        else
            rejected++;
    }
    /* Both outcomes were exercised in earnest. */
    ASSERT_GE(accepted, 1000);
    ASSERT_GE(rejected, 1000);
}

TEST(cap_too_small_is_enospc_and_writes_nothing_past_cap)
{
    for (size_t n = 1; n <= 64; n++) {
        uint8_t src[64];
        fill_random(src, n);
        char enc[88];
        size_t m = vb_b64_encode(enc, src, n);
        for (size_t cap = 0; cap <= n; cap++) {
            uint8_t *dst = xmalloc(n + 8);
            memset(dst, GUARD, n + 8);
            size_t got = 12345;
            int rc = vb_b64_decode(dst, cap, enc, m, &got);
            if (cap < n) {
                ASSERT_EQ(rc, VB_ENOSPC);
                ASSERT_UEQ(got, 12345);
            } else {
                ASSERT_EQ(rc, 0);
                ASSERT_UEQ(got, n);
                ASSERT_MEM_EQ(dst, src, n);
            }
            for (size_t i = cap; i < n + 8; i++)
                ASSERT_EQ(dst[i], GUARD);
            free(dst);
        }
        /* An invalid character still writes only within the decoded size,
         * and leaves *out alone. */
        uint8_t dst[72];
        memset(dst, GUARD, sizeof(dst));
        enc[0] = '*';
        size_t got = 12345;
        ASSERT_EQ(vb_b64_decode(dst, sizeof(dst), enc, m, &got), VB_EINVAL);
        ASSERT_UEQ(got, 12345);
        for (size_t i = n; i < sizeof(dst); i++)
            ASSERT_EQ(dst[i], GUARD);
    }
    /* A zero cap with no buffer is fine for empty input only. */
    size_t got = 1;
    ASSERT_EQ(vb_b64_decode(NULL, 0, NULL, 0, &got), 0);
    ASSERT_UEQ(got, 0);
    ASSERT_EQ(vb_b64_decode(NULL, 0, "AA==", 4, &got), VB_ENOSPC);
}

TEST(null_arguments_are_einval)
{
    uint8_t out[4];
    size_t got;
    ASSERT_EQ(vb_b64_decode(out, sizeof(out), NULL, 4, &got), VB_EINVAL);
    ASSERT_EQ(vb_b64_decode(NULL, 4, "AAAA", 4, &got), VB_EINVAL);
    ASSERT_EQ(vb_b64_decode(out, sizeof(out), "AAAA", 4, NULL), VB_EINVAL);
    ASSERT_UEQ(vb_b64_encode(NULL, NULL, 0), 0);
    ASSERT_UEQ(vb_b64_encoded_len(0), 0);
    ASSERT_UEQ(vb_b64_decoded_max(3), 0);
}
