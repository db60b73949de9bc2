/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the stream-token decoder and verifier and the
 * request-signature check (net/twilio_sig.c): what a caller puts in the
 * `streamToken` parameter of `start`, and in X-Twilio-Signature.
 *
 * The first byte picks the mode. Raw: the rest of the input is the token
 * (up to its first NUL), checked for a fixed call; it may verify only if it
 * is exactly the token the key makes for the lane and expiry it carries
 * (decoded here independently), since nobody can forge the MAC. Mutated:
 * a genuine token for a lane and expiry taken from the input has input
 * bytes XORed into it; it must verify as it was made when unchanged, and
 * never verify once changed. Signature: the input is split into a URL, a
 * form body and a header value; the check must give 0 or VB_EAUTH, and the
 * signature computed for that URL and body must verify.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "net/form.h"
#include "net/twilio_sig.h"

#define CALL_SID "CA0123456789abcdef0123456789abcdef"
#define NOW_S    1767225600 /* 2026-01-01 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vb_twilio_sig_key_t key;

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* The lane and expiry a well-formed token claims: its first 11 bytes. */
static bool claims(const char *tok, int *lane, int64_t *expiry)
{
    uint8_t raw[12];
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < 16 && tok[i] != '\0'; i++) {
        int v = b64url_val(tok[i]);
        if (v < 0)
            return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            raw[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (o < 11)
        return false;
    *lane = raw[1] << 8 | raw[2];
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = e << 8 | raw[3 + i];
    *expiry = (int64_t)e;
    return true;
}

static void check_raw(const uint8_t *data, size_t size)
{
    char tok[VB_TWILIO_TOKEN_LEN * 2 + 1];
    size_t n = size < sizeof(tok) - 1 ? size : sizeof(tok) - 1;
    memcpy(tok, data, n);
    tok[n] = '\0';
    int tl;
    int rc = vb_twilio_sig_token_verify(&key, tok, CALL_SID, -1, NOW_S, &tl);
    if (rc >= 0 || tl >= 0) {
        /* Verified (or expired/wrong lane with a good MAC): it must be the
         * key's own token. */
        int lane;
        int64_t expiry;
        char want[VB_TWILIO_TOKEN_LEN + 1];
        if (!claims(tok, &lane, &expiry) || lane != tl ||
            vb_twilio_sig_token_create(&key, CALL_SID, (uint32_t)lane, expiry,
                                       want) != 0 ||
            strcmp(want, tok) != 0)
            abort();
        if (rc >= 0 && (rc != lane || expiry < NOW_S))
            abort();
    } else if (rc != VB_TWILIO_TOKEN_MISSING && rc != VB_TWILIO_TOKEN_FORGED) {
        abort();
    }
    if (strcmp(vb_twilio_sig_token_reason(rc), "error") == 0)
        abort();
}

static void check_mutated(const uint8_t *data, size_t size)
{
    if (size < 10)
        return;
    uint32_t lane = (uint32_t)(data[0] << 8 | data[1]);
    int64_t expiry = NOW_S - 128 + (int64_t)(int8_t)data[2] * 2;
    int expect = (data[3] & 1) ? (int)(lane ^ data[4]) : -1;
    const char *sid = (data[3] & 2) ? "" : CALL_SID;
    char tok[VB_TWILIO_TOKEN_LEN + 1];
    if (vb_twilio_sig_token_create(&key, sid, lane, expiry, tok) != 0)
        abort();
    int want = expiry < NOW_S                       ? VB_TWILIO_TOKEN_EXPIRED
               : expect >= 0 && expect != (int)lane ? VB_TWILIO_TOKEN_WRONG_LANE
                                                    : (int)lane;
    int tl;
    if (vb_twilio_sig_token_verify(&key, tok, sid, expect, NOW_S, &tl) !=
            want ||
        tl != (int)lane)
        abort();
    /* The same token for another call never verifies. */
    if (vb_twilio_sig_token_verify(&key, tok, sid[0] ? "" : CALL_SID, -1, NOW_S,
                                   &tl) != VB_TWILIO_TOKEN_FORGED)
        abort();
    /* XOR the remaining bytes into the token, as positions and values. */
    char orig[VB_TWILIO_TOKEN_LEN + 1];
    memcpy(orig, tok, sizeof(orig));
    for (size_t i = 5; i + 1 < size; i += 2) {
        size_t at = data[i] % VB_TWILIO_TOKEN_LEN;
        char c = (char)(tok[at] ^ data[i + 1]);
        if (c != '\0')
            tok[at] = c;
    }
    bool changed = strcmp(orig, tok) != 0;
    int rc = vb_twilio_sig_token_verify(&key, tok, sid, expect, NOW_S, &tl);
    if (changed && (rc >= 0 || rc == VB_TWILIO_TOKEN_EXPIRED ||
                    rc == VB_TWILIO_TOKEN_WRONG_LANE || tl != -1))
        abort();
}

static void check_signature(const uint8_t *data, size_t size)
{
    /* url \n body \n signature */
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *url = buf;
    char *body = strchr(url, '\n');
    char *sig = NULL;
    if (body != NULL) {
        *body++ = '\0';
        sig = strchr(body, '\n');
        if (sig != NULL)
            *sig++ = '\0';
    }
    vb_form_t form = {0};
    if (body != NULL)
        (void)vb_form_parse(&form, body, strlen(body), 64);
    const char *s = sig != NULL ? sig : "";
    int rc = vb_twilio_sig_verify("fuzz-token", url, &form, s, strlen(s),
                                  VB_TWILIO_SIG_PORT_VARIANTS |
                                      VB_TWILIO_SIG_SLASH_VARIANTS);
    if (rc != 0 && rc != VB_EAUTH && rc != VB_ENOMEM)
        abort();
    char good[VB_TWILIO_SIG_LEN + 1];
    if (vb_twilio_sig_compute("fuzz-token", url, &form, good) == 0 &&
        vb_twilio_sig_verify("fuzz-token", url, &form, good, strlen(good), 0) !=
            0)
        abort();
    char variant[512];
    (void)vb_twilio_sig_port_variant(url, variant, sizeof(variant));
    /* The SDK's re-encodings, and every form together, both algorithms. */
    (void)vb_twilio_sig_whatwg_variant(url, variant, sizeof(variant));
    (void)vb_twilio_sig_legacy_query_variant(url, variant, sizeof(variant));
    const char *urls[] = {url, "https://alias.test/p?x=1"};
    rc = vb_twilio_sig_verify_urls(
        strlen(s) & 1 ? VB_TWILIO_SIG_HMAC_SHA256 : VB_TWILIO_SIG_HMAC_SHA1,
        "fuzz-key", urls, 2, &form, s, strlen(s),
        VB_TWILIO_SIG_PORT_VARIANTS | VB_TWILIO_SIG_QUERY_VARIANTS |
            VB_TWILIO_SIG_SLASH_VARIANTS);
    if (rc != 0 && rc != VB_EAUTH && rc != VB_ENOMEM)
        abort();
    char key_sid[64];
    int alg;
    (void)vb_twilio_sig_settings_parse(s, key_sid, sizeof key_sid, &alg);
    vb_form_free(&form);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (key.len == 0) {
        vb_log_set_level(VB_LOG_OFF);
        if (vb_twilio_sig_key_init(&key, "fuzz stream secret") != 0)
            abort();
    }
    if (size == 0 || size > 4096)
        return 0;
    switch (data[0] % 3) {
    case 0:
        check_raw(data + 1, size - 1);
        break;
    case 1:
        check_mutated(data + 1, size - 1);
        break;
    default:
        check_signature(data + 1, size - 1);
        break;
    }
    return 0;
}
