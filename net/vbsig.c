/* SPDX-License-Identifier: MIT */
/* X-Voxbridge-Signature signing and checking (net/vbsig.h). */
#include "net/vbsig.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/md.h>

#include "core/err.h"

static int mac(const void *secret, size_t secret_len, const char *t,
               size_t tlen, const void *body, size_t len, unsigned char out[32])
{
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc =
        mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_starts(&ctx, secret, secret_len);
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)t, tlen);
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)".", 1);
    if (rc == 0 && len > 0)
        rc = mbedtls_md_hmac_update(&ctx, body, len);
    if (rc == 0)
        rc = mbedtls_md_hmac_finish(&ctx, out);
    mbedtls_md_free(&ctx);
    return rc == 0 ? 0 : VB_EIO;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int vb_sig_sign(const void *secret, size_t secret_len, int64_t t,
                const void *body, size_t len, char *out, size_t cap)
{
    if (secret == NULL || secret_len == 0 || out == NULL || t < 0 ||
        (body == NULL && len > 0))
        return VB_EINVAL;
    char ts[24];
    int tl = snprintf(ts, sizeof(ts), "%" PRId64, t);
    unsigned char m[32];
    int rc = mac(secret, secret_len, ts, (size_t)tl, body, len, m);
    if (rc != 0)
        return rc;
    char h[65];
    hex(m, sizeof(m), h);
    int n = snprintf(out, cap, "t=%s,v1=%s", ts, h);
    if (n < 0 || (size_t)n >= cap)
        return VB_ENOSPC;
    return 0;
}

int vb_sig_sign_rotating(const char *secret, const char *previous, int64_t t,
                         const void *body, size_t len, char *out, size_t cap)
{
    if (secret == NULL)
        return VB_EINVAL;
    int rc = vb_sig_sign(secret, strlen(secret), t, body, len, out, cap);
    if (rc != 0 || previous == NULL || *previous == '\0')
        return rc;
    char second[VB_SIG_MAX];
    rc = vb_sig_sign(previous, strlen(previous), t, body, len, second,
                     sizeof(second));
    if (rc != 0)
        return rc;
    /* The same t: append the second signature's ",v1=..." part. */
    const char *v1 = strchr(second, ',');
    size_t have = strlen(out), add = strlen(v1);
    if (have + add >= cap)
        return VB_ENOSPC;
    memcpy(out + have, v1, add + 1);
    return 0;
}

static bool ct_eq(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int vb_sig_verify(const void *secret, size_t secret_len, const char *header,
                  const void *body, size_t len, int64_t now, uint32_t max_age_s)
{
    if (secret == NULL || secret_len == 0 || header == NULL ||
        (body == NULL && len > 0))
        return VB_EINVAL;
    const char *ts = NULL;
    size_t tlen = 0;
    const char *v1[8];
    size_t nv = 0;
    for (const char *p = header; *p != '\0';) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 2 && strncmp(p, "t=", 2) == 0 && ts == NULL) {
            ts = p + 2;
            tlen = n - 2;
        } else if (n > 3 && strncmp(p, "v1=", 3) == 0) {
            if (n - 3 != 64)
                return VB_EINVAL;
            if (nv < sizeof(v1) / sizeof(v1[0]))
                v1[nv++] = p + 3;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    if (ts == NULL || nv == 0 || tlen > 18) /* no int64_t overflow */
        return VB_EINVAL;
    int64_t t = 0;
    for (size_t i = 0; i < tlen; i++) {
        if (ts[i] < '0' || ts[i] > '9')
            return VB_EINVAL;
        t = t * 10 + (ts[i] - '0');
    }
    if (t > now + (int64_t)max_age_s || t < now - (int64_t)max_age_s)
        return VB_ERANGE;
    unsigned char m[32];
    int rc = mac(secret, secret_len, ts, tlen, body, len, m);
    if (rc != 0)
        return rc;
    char want[65];
    hex(m, sizeof(m), want);
    bool ok = false;
    for (size_t i = 0; i < nv; i++) {
        char got[65];
        for (size_t j = 0; j < 64; j++) {
            char ch = v1[i][j];
            got[j] = (ch >= 'A' && ch <= 'F') ? (char)(ch - 'A' + 'a') : ch;
        }
        ok |= ct_eq(got, want, 64);
    }
    return ok ? 0 : VB_EAUTH;
}
