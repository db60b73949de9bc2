/* SPDX-License-Identifier: MIT */
/*
 * Twilio request signatures and voxbridge's per-call stream tokens.
 *
 * X-Twilio-Signature (spec §5): base64(HMAC-SHA1(auth token, URL + the form
 * parameters sorted byte-wise by name then value, duplicates dropped, each
 * appended as name + value)). The URL is the one Twilio called, rebuilt from
 * configuration (--public-url) rather than from what the socket sees.
 * Because Twilio is inconsistent about default ports, verification also
 * tries the URL with its port removed, or with :443/:80 added (§5.3); for
 * the Media Streams upgrade, with and without a trailing slash (§5.4). The
 * comparison is constant-time.
 *
 * Stream tokens: the webhook hands each call a token in a `<Parameter>` of
 * its `<Stream>`; the stream stage checks it on `start`. A token is
 * base64url (no padding) of
 *
 *     version (1 byte, 1) | lane (2 bytes BE) | expiry (8 bytes BE, Unix s)
 *     | HMAC-SHA256(secret, "vb-stream-v1" 0 CallSid 0 lane expiry)
 *
 * so any instance holding the same secret verifies it without state, and
 * learns the lane the webhook chose.
 */
#ifndef VB_NET_TWILIO_SIG_H
#define VB_NET_TWILIO_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "net/form.h"

/* base64 of a 20-byte SHA-1 MAC: 28 characters. */
#define VB_TWILIO_SIG_LEN 28

/* Flags for vb_twilio_sig_verify(). */
#define VB_TWILIO_SIG_PORT_VARIANTS  1u /* also with the port removed/added */
#define VB_TWILIO_SIG_SLASH_VARIANTS 2u /* also with/without a trailing '/' */
/* also the SDK's re-encodings of the URL: as its URL parser serialises it
 * (' in the query as %27...), and its legacy querystring round trip
 * (+ as %20...); twilio-node validateRequest() tries both */
#define VB_TWILIO_SIG_QUERY_VARIANTS 4u

/* Signature algorithms. The Auth Token signs with HMAC-SHA1. A Webhook
 * Setting with a SharedKey signs with that key and the algorithm named in
 * X-Twilio-Webhooks-Signature-Settings (the signed string is the same). */
#define VB_TWILIO_SIG_HMAC_SHA1       1
#define VB_TWILIO_SIG_HMAC_SHA256     2
#define VB_TWILIO_SIG_SETTINGS_HEADER "X-Twilio-Webhooks-Signature-Settings"

/* Checks `sig` (the header value, `sig_len` bytes) against `url` and
 * `params`, and against the URL variants `flags` ask for. Returns 0 when
 * one matches, VB_EAUTH when none does (or `sig` is NULL), VB_EINVAL
 * (NULL token or url), VB_ENOMEM, VB_EIO (HMAC failed). Constant-time in the
 * signature bytes. Any thread. */
int vb_twilio_sig_verify(const char *token, const char *url,
                         const vb_form_t *params, const char *sig,
                         size_t sig_len, unsigned flags);

/* Checks `sig` made with `alg` and `key` against each of `urls` (the
 * public URLs the request may have been made to, each with the request's
 * path and query) and the variants `flags` ask for. Returns 0 when one
 * matches, VB_EAUTH when none does (or `sig` is NULL), VB_EINVAL (NULL key,
 * no URL, unknown alg), VB_ENOMEM, VB_EIO. Constant-time in the signature
 * bytes. Any thread. */
int vb_twilio_sig_verify_urls(int alg, const char *key, const char *const *urls,
                              size_t n_urls, const vb_form_t *params,
                              const char *sig, size_t sig_len, unsigned flags);

/* Parses X-Twilio-Webhooks-Signature-Settings ("key=KS...,algorithm=
 * HMAC_SHA256"): the key's SID into `key` ("" if absent), the algorithm
 * into *alg (HMAC_SHA1 when the header names none). Returns 0, VB_ENOTSUP
 * for an algorithm this does not implement, VB_EINVAL (NULL argument, a key
 * SID longer than `keysz`). Any thread. */
int vb_twilio_sig_settings_parse(const char *header, char *key, size_t keysz,
                                 int *alg);

/* The SDK's re-encodings of `url` into `out`: as its URL parser serialises
 * it (path and query bytes outside the allowed set percent-encoded, the
 * fragment dropped), and its legacy querystring round trip (the query
 * decoded, '+' as space, and encoded again; integer-like keys first, as a
 * JavaScript object orders them). Return 0, VB_EINVAL (no "scheme://";
 * for the second, no query), VB_ENOSPC, VB_ENOMEM. Exposed for tests. */
int vb_twilio_sig_whatwg_variant(const char *url, char *out, size_t outsz);
int vb_twilio_sig_legacy_query_variant(const char *url, char *out,
                                       size_t outsz);

/* Writes the port variant of `url` into `out` (`outsz` bytes): without its
 * port if it has one, else with the scheme's default port (443 for https
 * and wss, 80 for http and ws). Returns 0, VB_EINVAL for a URL without
 * "scheme://", VB_ENOSPC. Exposed for tests. */
int vb_twilio_sig_port_variant(const char *url, char *out, size_t outsz);

/* ---- stream tokens ---- */

/* The `<Parameter>` name carrying the token. */
#define VB_TWILIO_TOKEN_PARAM "streamToken"
/* Encoded token length (43 bytes in base64url without padding). */
#define VB_TWILIO_TOKEN_LEN      58
#define VB_TWILIO_TOKEN_MAX_LANE 65535

/* Results of vb_twilio_sig_token_verify() besides a lane. */
#define VB_TWILIO_TOKEN_MISSING    VB_ENOENT    /* no token at all */
#define VB_TWILIO_TOKEN_FORGED     VB_EAUTH     /* malformed or bad MAC */
#define VB_TWILIO_TOKEN_EXPIRED    VB_ETIMEDOUT /* MAC fine, past expiry */
#define VB_TWILIO_TOKEN_WRONG_LANE VB_ERANGE    /* valid, for another lane */

typedef struct vb_twilio_sig_key {
    uint8_t bytes[64];
    size_t len;
} vb_twilio_sig_key_t;

/* Sets up the stream-token key from `secret` (its bytes; longer than 64
 * are hashed with SHA-256 as HMAC itself would), or 32 random bytes from
 * getrandom(2) when `secret` is NULL or empty (then tokens verify only in
 * this process). Returns 0, VB_ESYS (no randomness) or VB_EIO (hashing a
 * long secret failed). Any thread; the key
 * is read-only afterwards and may be shared by threads. */
int vb_twilio_sig_key_init(vb_twilio_sig_key_t *k, const char *secret);

/* Writes the token for `call_sid` on `lane` (0..VB_TWILIO_TOKEN_MAX_LANE)
 * valid until `expiry_s` (Unix seconds) into `out`
 * (VB_TWILIO_TOKEN_LEN + 1 bytes). Returns 0, VB_EINVAL (NULL key or
 * call_sid, lane out of range) or VB_EIO (HMAC failed; logged). Any
 * thread. */
int vb_twilio_sig_token_create(const vb_twilio_sig_key_t *k,
                               const char *call_sid, uint32_t lane,
                               int64_t expiry_s,
                               char out[VB_TWILIO_TOKEN_LEN + 1]);

/* Verifies `token` (NUL-terminated; NULL or "" means missing) for
 * `call_sid` at time `now_s`. `expect_lane` < 0 accepts any lane. Returns
 * the token's lane (>= 0), or VB_TWILIO_TOKEN_MISSING, _FORGED, _EXPIRED or
 * _WRONG_LANE. When `token_lane` is not NULL it receives the lane of any
 * token whose MAC verified (-1 otherwise), so a caller can tell where a
 * wrong-lane or expired stream belonged. Constant-time in the MAC. Any
 * thread. */
int vb_twilio_sig_token_verify(const vb_twilio_sig_key_t *k, const char *token,
                               const char *call_sid, int expect_lane,
                               int64_t now_s, int *token_lane);

/* A short reason for a vb_twilio_sig_token_verify() result, usable as a log
 * field or metric label: "ok", "missing", "forged", "expired",
 * "wrong_lane". Static; any thread. */
const char *vb_twilio_sig_token_reason(int rc);

/* ---- the assistant a stream carries (docs/assistants.md) ---- */

/* `<Parameter>` names: the assistant's name, its MAC, and where the
 * assistant came from: VB_TWILIO_ASSISTANT_FROM_URL when --assistant-url
 * answered the webhook (the name is then the one its answer was built on;
 * absent otherwise). */
#define VB_TWILIO_ASSISTANT_PARAM      "assistant"
#define VB_TWILIO_ASSISTANT_MAC_PARAM  "assistantMac"
#define VB_TWILIO_ASSISTANT_FROM_PARAM "assistantFrom"
#define VB_TWILIO_ASSISTANT_FROM_URL   "url"
#define VB_TWILIO_ASSISTANT_MAC_LEN    43 /* base64url of 32 bytes */

/* Writes base64url(HMAC-SHA256(key, "vb-assistant-v1" 0 CallSid 0 token 0
 * value)) into `out` (VB_TWILIO_ASSISTANT_MAC_LEN + 1 bytes): binds the
 * assistant `value` to the call and to its stream token (so to the token's
 * expiry). Returns 0, VB_EINVAL (a NULL argument), VB_EIO. Any thread. */
int vb_twilio_sig_assistant_mac(const vb_twilio_sig_key_t *k,
                                const char *call_sid, const char *token,
                                const char *value,
                                char out[VB_TWILIO_ASSISTANT_MAC_LEN + 1]);

/* The same with 0 VB_TWILIO_ASSISTANT_FROM_URL after `value`: marks the
 * assistant as the --assistant-url answer's, so that a caller can neither
 * set nor clear the mark without the key. */
int vb_twilio_sig_assistant_url_mac(const vb_twilio_sig_key_t *k,
                                    const char *call_sid, const char *token,
                                    const char *value,
                                    char out[VB_TWILIO_ASSISTANT_MAC_LEN + 1]);

/* Checks `mac` (NUL-terminated, may be NULL) for `value` as above, with
 * the --assistant-url mark when `from_url`. Returns 0, VB_EAUTH (missing
 * or wrong), VB_EINVAL, VB_EIO. Constant-time in the MAC. Any thread. */
int vb_twilio_sig_assistant_verify(const vb_twilio_sig_key_t *k,
                                   const char *call_sid, const char *token,
                                   const char *value, bool from_url,
                                   const char *mac);

/* Constant-time comparison of two byte strings; lengths are not secret.
 * Returns true when equal. */
bool vb_twilio_sig_equal(const void *a, size_t alen, const void *b,
                         size_t blen);

/* ---- for tests and tools ---- */
/* Used by tests and the fuzz target to sign requests, not by the server,
 * which only verifies; it stays here because it shares the HMAC over the
 * sorted parameters with vb_twilio_sig_verify(). */

/* Computes the signature of `url` and `params` (NULL: none) with `token`
 * into `out` (VB_TWILIO_SIG_LEN characters and a NUL). Returns 0,
 * VB_EINVAL (NULL token or url), VB_ENOMEM, VB_EIO (HMAC failed; logged).
 * Any thread. */
int vb_twilio_sig_compute(const char *token, const char *url,
                          const vb_form_t *params,
                          char out[VB_TWILIO_SIG_LEN + 1]);

#endif
