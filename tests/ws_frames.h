/* SPDX-License-Identifier: MIT */
/*
 * WebSocket frame helpers for tests: an independent, minimal encoder and
 * decoder (RFC 6455 §5.2), so tests can script exactly the bytes a peer
 * sends, including invalid ones, and check what the endpoint wrote.
 */
#ifndef VB_TESTS_WS_FRAMES_H
#define VB_TESTS_WS_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Appends one frame to out (cap bytes); returns its length or 0. `mask`
 * uses a fixed key, which is all a test needs. `len7_override` >= 0 forces
 * the 7-bit length field (for non-minimal encodings). */
static inline size_t tf_frame_ex(uint8_t *out, size_t cap, bool fin,
                                 uint8_t rsv, uint8_t op, bool mask,
                                 const void *payload, size_t len,
                                 int len7_override)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 0;
    if (cap < len + 14)
        return 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | (rsv << 4) | op);
    uint8_t m = mask ? 0x80 : 0;
    if (len7_override >= 0) {
        out[h++] = (uint8_t)(m | len7_override);
        if (len7_override == 126) {
            out[h++] = (uint8_t)(len >> 8);
            out[h++] = (uint8_t)len;
        } else if (len7_override == 127) {
            for (int i = 7; i >= 0; i--)
                out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
        }
    } else if (len < 126) {
        out[h++] = (uint8_t)(m | len);
    } else if (len < 65536) {
        out[h++] = m | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(out + h, key, 4);
        h += 4;
    }
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = mask ? (uint8_t)(p[i] ^ key[i & 3]) : p[i];
    return h + len;
}

static inline size_t tf_frame(uint8_t *out, size_t cap, bool fin, uint8_t op,
                              bool mask, const void *payload, size_t len)
{
    return tf_frame_ex(out, cap, fin, 0, op, mask, payload, len, -1);
}

/* A close frame payload: code (0 = none) and reason. */
static inline size_t tf_close(uint8_t *out, size_t cap, bool mask,
                              uint16_t code, const char *reason)
{
    uint8_t p[128];
    size_t n = 0;
    if (code != 0) {
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        n = 2;
        if (reason != NULL) {
            memcpy(p + 2, reason, strlen(reason));
            n += strlen(reason);
        }
    }
    return tf_frame(out, cap, true, 0x8, mask, p, n);
}

typedef struct tf_parsed {
    bool fin, masked;
    uint8_t op;
    uint8_t payload[1 << 17];
    size_t len;
} tf_parsed_t;

/* Decodes one frame from buf; returns bytes used, 0 if incomplete. */
static inline size_t tf_parse(const uint8_t *buf, size_t n, tf_parsed_t *f)
{
    if (n < 2)
        return 0;
    f->fin = buf[0] & 0x80;
    f->op = buf[0] & 0x0f;
    f->masked = buf[1] & 0x80;
    uint64_t len = buf[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)buf[2] << 8) | buf[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | buf[2 + i];
        h = 10;
    }
    uint8_t key[4] = {0};
    if (f->masked) {
        if (n < h + 4)
            return 0;
        memcpy(key, buf + h, 4);
        h += 4;
    }
    if (len > sizeof f->payload || n < h + len)
        return 0;
    for (size_t i = 0; i < len; i++)
        f->payload[i] =
            f->masked ? (uint8_t)(buf[h + i] ^ key[i & 3]) : buf[h + i];
    f->len = (size_t)len;
    return h + (size_t)len;
}

static inline uint16_t tf_close_code(const tf_parsed_t *f)
{
    if (f->op != 0x8 || f->len < 2)
        return 0;
    return (uint16_t)((f->payload[0] << 8) | f->payload[1]);
}

#endif
