/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for core/b64, differential against mbedTLS: the input
 * is both text to decode and bytes to encode.
 *
 * Decode: whatever core/b64 accepts, mbedTLS accepts with the same bytes;
 * for a length that is a multiple of 4 without whitespace, mbedTLS accepts
 * nothing that core/b64 rejects; any other length or any whitespace is
 * rejected (the two deliberate differences, core/b64.h). A decode with a
 * cap one byte short must give VB_ENOSPC and write nothing past it.
 * Encode: the text equals mbedTLS's, and decodes back to the input.
 * Buffers are allocated at their exact size so ASan sees any overrun.
 */
#include <mbedtls/base64.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/b64.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool has_space(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' || s[i] == '\n' || s[i] == '\r')
            return true;
    return false;
}

static void check_decode(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    size_t cap = vb_b64_decoded_max(size) + 1;
    uint8_t *ours = malloc(cap), *theirs = malloc(size + 1);
    if (in == NULL || ours == NULL || theirs == NULL)
        abort();
    memcpy(in, data, size);
    size_t n = 0, m = 0;
    int rc = vb_b64_decode(ours, cap, in, size, &n);
    int mrc = mbedtls_base64_decode(theirs, size + 1, &m,
                                    (const unsigned char *)in, size);
    if (rc != 0 && rc != VB_EINVAL)
        abort();
    if (rc == 0) {
        if (mrc != 0 || m != n || memcmp(ours, theirs, n) != 0)
            abort();
        if (n > 0) {
            /* One byte short: refused before anything is written. */
            uint8_t *tight = malloc(n);
            if (tight == NULL)
                abort();
            memset(tight, 0xA5, n);
            tight[n - 1] = 0x5A;
            size_t got = 7;
            if (vb_b64_decode(tight, n - 1, in, size, &got) != VB_ENOSPC ||
                got != 7 || tight[n - 1] != 0x5A)
                abort();
            free(tight);
        }
    } else if (size % 4 == 0 && !has_space(data, size) && mrc == 0) {
        abort();
    }
    free(in);
    free(ours);
    free(theirs);
}

static void check_encode(const uint8_t *data, size_t size)
{
    size_t len = vb_b64_encoded_len(size);
    char *ours = malloc(len + 1);
    unsigned char *theirs = malloc(len + 1);
    uint8_t *back = malloc(size + 1);
    if (ours == NULL || theirs == NULL || back == NULL)
        abort();
    size_t m = 0, n = 0;
    if (vb_b64_encode(ours, data, size) != len ||
        mbedtls_base64_encode(theirs, len + 1, &m, data, size) != 0 ||
        m != len || memcmp(ours, theirs, len) != 0)
        abort();
    if (vb_b64_decode(back, size, ours, len, &n) != 0 || n != size ||
        (size > 0 && memcmp(back, data, size) != 0))
        abort();
    free(ours);
    free(theirs);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size);
    check_encode(data, size);
    return 0;
}
