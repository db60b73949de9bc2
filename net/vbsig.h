/* SPDX-License-Identifier: MIT */
/*
 * X-Voxbridge-Signature: what voxbridge puts on every request it sends to a
 * business's URLs (assistant request, tool calls, post-call report) so the
 * receiver can tell the request came from this deployment and is fresh:
 *
 *   X-Voxbridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
 *
 * where the HMAC is keyed by --webhook-secret over the bytes
 * "<t>.<raw body>" (the decimal t as sent, a dot, then the body exactly as
 * sent). A receiver recomputes it, compares in constant time, and refuses
 * a `t` older (or further ahead) than its tolerance, which bounds replays.
 * While keys are rotated (--webhook-secret-previous) the header carries a
 * second v1= made with the previous key: a receiver still on the old key
 * and one already on the new accept it. The verifier here accepts any of
 * several v1= values and ignores other keys.
 *
 * Pure functions; any thread.
 */
#ifndef VB_NET_VBSIG_H
#define VB_NET_VBSIG_H

#include <stddef.h>
#include <stdint.h>

#define VB_SIG_HEADER "X-Voxbridge-Signature"
/* "t=" + up to 20 digits + twice ",v1=" + 64 hex digits (a second v1=
 * while rotating keys) + NUL. */
#define VB_SIG_MAX 160u
/* Tolerance the docs recommend to receivers, and the verifier's default. */
#define VB_SIG_DEFAULT_MAX_AGE_S 300u

/* Writes the header value for `body` signed at unix time `t` with
 * `secret` (secret_len bytes) into out (at least VB_SIG_MAX). Returns 0,
 * VB_EINVAL (NULL secret or out, empty secret, t < 0, body NULL with
 * len > 0), VB_ENOSPC (cap too small), VB_EIO (mbedTLS failed). */
int vb_sig_sign(const void *secret, size_t secret_len, int64_t t,
                const void *body, size_t len, char *out, size_t cap);

/* vb_sig_sign with NUL-terminated keys, and while rotating (`previous`
 * neither NULL nor "") a second v1= made with `previous` after the first:
 * "t=<t>,v1=<secret's>,v1=<previous's>". Same returns. */
int vb_sig_sign_rotating(const char *secret, const char *previous, int64_t t,
                         const void *body, size_t len, char *out, size_t cap);

/* Checks a header value against `body`. `now` is the receiver's unix
 * time; a `t` more than `max_age_s` away from it (either side) is refused.
 * Returns 0 (a v1 matches and t is fresh), VB_EINVAL (malformed: no t, no
 * v1, not digits, wrong hex length), VB_ERANGE (t too old or in the
 * future), VB_EAUTH (no v1 matches), VB_EIO. */
int vb_sig_verify(const void *secret, size_t secret_len, const char *header,
                  const void *body, size_t len, int64_t now,
                  uint32_t max_age_s);

#endif
