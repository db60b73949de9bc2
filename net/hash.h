/* SPDX-License-Identifier: MIT */
/*
 * FNV-1a, 64-bit: the one non-cryptographic hash for in-process tables
 * keyed by bytes a peer may choose (CallSids, peer addresses), where the
 * table is bounded and a collision costs a false match at worst. Not for
 * anything an attacker gains from colliding: tokens and signatures use
 * HMAC (net/twilio_sig.h).
 *
 * Header-only; any thread.
 */
#ifndef VB_NET_HASH_H
#define VB_NET_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a of `len` bytes at `p` (p may be NULL when len is 0). */
static inline uint64_t vb_hash_fnv1a64(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#endif
