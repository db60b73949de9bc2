/* SPDX-License-Identifier: MIT */
/*
 * Base64 (RFC 4648 §4, standard alphabet, '=' padding) for audio payloads:
 * Twilio media frames and Gemini realtime audio, both ways, at every frame
 * of every call.
 *
 * DESIGN. Table driven, one 3-byte <-> 4-character group per step. Encoding
 * looks up each 12-bit half of a 24-bit group in a table of character pairs
 * (8 KiB), so a group costs two loads and two 2-byte stores. Decoding maps
 * each character through a 256-entry table to its 6-bit value, or to a value
 * with bit 7 set when the character is not in the alphabet; four values make
 * a 24-bit word, and the values are ORed into one accumulator checked once
 * after the loop, so the loop carries no per-character branch. Padding and
 * length are checked before the loop. Both tables are constant: there is
 * nothing to initialise and any thread may call any function.
 *
 * NOT FOR SECRETS. The time taken and the memory touched depend on the data
 * (table lookups indexed by it). Keys, tokens, signatures and passwords keep
 * using mbedTLS's constant-time codec (net/twilio_sig.c, net/http.c,
 * net/twilio_rest.c).
 *
 * What decoding accepts: the empty string, or a multiple of 4 characters
 * from A-Z a-z 0-9 + / whose last group may end in "=" or "==", and nothing
 * else. Bits below the last full byte of a padded group are ignored ("AAF="
 * decodes like "AAE="), as mbedTLS does. Everything this accepts, mbedTLS
 * 2.28's mbedtls_base64_decode() accepts and decodes to the same bytes;
 * for input of a multiple of 4 characters without whitespace, both accept
 * exactly the same strings. This codec is stricter in two ways, on purpose:
 *   - no whitespace at all (mbedTLS skips '\n', "\r\n" and spaces at line
 *     ends, which PEM needs and JSON payloads never contain);
 *   - a length that is not a multiple of 4 is an error (mbedTLS drops a
 *     trailing partial group without a word, and accepts "=" or "AAAA==",
 *     so a truncated frame would lose audio silently).
 */
#ifndef VB_CORE_B64_H
#define VB_CORE_B64_H

#include <stddef.h>
#include <stdint.h>

/* Characters that encoding `n` bytes produces: 4 * ceil(n / 3), with no NUL.
 * `n` must not exceed SIZE_MAX / 4 * 3. Any thread. */
static inline size_t vb_b64_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 != 0 ? 4 : 0);
}

/* Most bytes that `n` characters of valid input decode to: 3 * (n / 4).
 * Any thread. */
static inline size_t vb_b64_decoded_max(size_t n)
{
    return n / 4 * 3;
}

/* Encodes the `n` bytes at `src` into `dst`, which must have room for
 * vb_b64_encoded_len(n) characters; writes no NUL. `src` may be NULL when `n`
 * is 0. Returns the characters written, vb_b64_encoded_len(n). The caller
 * owns both buffers; they must not overlap. Any thread; no allocation. */
size_t vb_b64_encode(char *dst, const uint8_t *src, size_t n);

/* Decodes the `n` characters at `src` (no NUL needed; never read past `n`)
 * into `dst`, writing at most `cap` bytes; on success *out is the byte count.
 * Returns:
 *   0          success (`n` == 0 decodes to 0 bytes);
 *   VB_EINVAL  not canonical base64 as described above: a length that is not
 *              a multiple of 4, a character outside the alphabet (NUL,
 *              whitespace, bytes >= 0x80, '-', '_'), '=' anywhere but the
 *              last one or two places, or a NULL pointer;
 *   VB_ENOSPC  the decoded bytes would not fit in `cap`. Length and padding
 *              are checked first, then the size, then the characters: an
 *              input both too long and invalid gives VB_ENOSPC.
 * On an error *out is untouched and `dst` holds unspecified bytes within
 * `cap`. `dst` may be NULL only when `cap` is 0. Any thread; no allocation. */
int vb_b64_decode(uint8_t *dst, size_t cap, const char *src, size_t n,
                  size_t *out);

#endif
