/* SPDX-License-Identifier: MIT */
/*
 * Base64 for audio payloads: the tables and the two loops (design and
 * contract in core/b64.h).
 */
#include "core/b64.h"

#include <string.h>

#include "core/err.h"

/* The alphabet as an integer constant expression, so that the tables below
 * are built by the compiler rather than at startup. */
#define CH(v)                     \
    ((v) < 26    ? 'A' + (v)      \
     : (v) < 52  ? 'a' + ((v)-26) \
     : (v) < 62  ? '0' + ((v)-52) \
     : (v) == 62 ? '+'            \
                 : '/')

/* enc12[2 * x] and enc12[2 * x + 1] are the characters for the 12-bit
 * value x. */
#define PAIR(h, l) (char)CH(h), (char)CH(l)
#define ROW4(h, l) \
    PAIR(h, l), PAIR(h, (l) + 1), PAIR(h, (l) + 2), PAIR(h, (l) + 3)
#define ROW16(h, l) \
    ROW4(h, l), ROW4(h, (l) + 4), ROW4(h, (l) + 8), ROW4(h, (l) + 12)
#define ROW64(h)  ROW16(h, 0), ROW16(h, 16), ROW16(h, 32), ROW16(h, 48)
#define ROWS4(h)  ROW64(h), ROW64((h) + 1), ROW64((h) + 2), ROW64((h) + 3)
#define ROWS16(h) ROWS4(h), ROWS4((h) + 4), ROWS4((h) + 8), ROWS4((h) + 12)

static const char enc12[2 * 4096] = {ROWS16(0), ROWS16(16), ROWS16(32),
                                     ROWS16(48)};

/* dec[c] is the 6-bit value of the byte c, or BAD (bit 7) for a byte outside
 * the alphabet, '=' included. */
#define BAD 0x80
#define DV(c)                                    \
    ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'      \
     : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26 \
     : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52 \
     : (c) == '+'               ? 62             \
     : (c) == '/'               ? 63             \
                                : BAD)
/* The cast: every arm of DV is evaluated as a constant, and those not taken
 * may not fit a byte (clang warns). */
#define DVB(c)  ((uint8_t)(DV(c)))
#define DV4(c)  DVB(c), DVB((c) + 1), DVB((c) + 2), DVB((c) + 3)
#define DV16(c) DV4(c), DV4((c) + 4), DV4((c) + 8), DV4((c) + 12)
#define DV64(c) DV16(c), DV16((c) + 16), DV16((c) + 32), DV16((c) + 48)

static const uint8_t dec[256] = {DV64(0), DV64(64), DV64(128), DV64(192)};

size_t vb_b64_encode(char *dst, const uint8_t *src, size_t n)
{
    if (n == 0)
        return 0; /* src may be NULL, and NULL + 0 is undefined */
    char *d = dst;
    const uint8_t *end = src + n / 3 * 3;
    for (; src != end; src += 3, d += 4) {
        uint32_t w = (uint32_t)src[0] << 16 | (uint32_t)src[1] << 8 | src[2];
        memcpy(d, enc12 + 2 * (w >> 12), 2);
        memcpy(d + 2, enc12 + 2 * (w & 0xfff), 2);
    }
    if (n % 3 != 0) {
        uint32_t w = (uint32_t)src[0] << 16;
        if (n % 3 == 2)
            w |= (uint32_t)src[1] << 8;
        memcpy(d, enc12 + 2 * (w >> 12), 2);
        d[2] = n % 3 == 2 ? enc12[2 * (w & 0xfff)] : '=';
        d[3] = '=';
        d += 4;
    }
    return (size_t)(d - dst);
}

int vb_b64_decode(uint8_t *dst, size_t cap, const char *src, size_t n,
                  size_t *out)
{
    if ((src == NULL && n > 0) || (dst == NULL && cap > 0) || out == NULL ||
        n % 4 != 0)
        return VB_EINVAL;
    if (n == 0) {
        *out = 0;
        return 0;
    }
    const unsigned char *s = (const unsigned char *)src;
    /* Only the last group may be padded. A '=' anywhere else, or a third
     * one ("A==="), is left to the table, which maps '=' to BAD. */
    size_t pad = s[n - 1] != '=' ? 0 : s[n - 2] != '=' ? 1 : 2;
    size_t len = n / 4 * 3 - pad;
    if (len > cap)
        return VB_ENOSPC;
    /* Invalid characters are only looked at once, after the loop: until
     * then they make garbage bytes, all within `len`, hence within cap. */
    unsigned bad = 0;
    uint8_t *d = dst;
    const unsigned char *last = s + n - 4;
    for (; s != last; s += 4, d += 3) {
        unsigned a = dec[s[0]], b = dec[s[1]], c = dec[s[2]], e = dec[s[3]];
        bad |= a | b | c | e;
        uint32_t w =
            (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | e;
        d[0] = (uint8_t)(w >> 16);
        d[1] = (uint8_t)(w >> 8);
        d[2] = (uint8_t)w;
    }
    unsigned a = dec[s[0]], b = dec[s[1]];
    unsigned c = pad < 2 ? dec[s[2]] : 0, e = pad < 1 ? dec[s[3]] : 0;
    bad |= a | b | c | e;
    if (bad & BAD)
        return VB_EINVAL;
    uint32_t w = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | e;
    d[0] = (uint8_t)(w >> 16);
    if (pad < 2)
        d[1] = (uint8_t)(w >> 8);
    if (pad < 1)
        d[2] = (uint8_t)w;
    *out = len;
    return 0;
}
