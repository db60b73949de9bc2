/* SPDX-License-Identifier: MIT */
/*
 * vb-sim request signing (spec §5.1): base64(HMAC-SHA1(auth token, URL +
 * each form parameter as name + value, sorted byte-wise by name, then by
 * value)). Written independently of net/twilio_sig.c so that the
 * simulator checks voxbridge's validator rather than agreeing with it by
 * construction. Also the form encoder for webhook bodies.
 */
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>

#include "bench/sim/sim.h"

static int cmp_param(const void *a, const void *b)
{
    const sim_param_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->value, y->value);
}

int sim_sign(const char *token, const char *url, const sim_param_t *params,
             size_t n, char *out, size_t outsz)
{
    sim_param_t *sorted = NULL;
    if (n > 0) {
        sorted = malloc(n * sizeof *sorted);
        if (sorted == NULL)
            return -1;
        memcpy(sorted, params, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, cmp_param);
    }
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA1);
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    unsigned char mac[20];
    int rc = mbedtls_md_setup(&ctx, md, 1);
    rc = rc ? rc
            : mbedtls_md_hmac_starts(&ctx, (const unsigned char *)token,
                                     strlen(token));
    rc = rc ? rc
            : mbedtls_md_hmac_update(&ctx, (const unsigned char *)url,
                                     strlen(url));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        /* Duplicates (same name and value) count once, as the SDKs do. */
        if (i > 0 && cmp_param(&sorted[i - 1], &sorted[i]) == 0)
            continue;
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)sorted[i].name,
                                    strlen(sorted[i].name));
        rc = rc ? rc
                : mbedtls_md_hmac_update(&ctx,
                                         (const unsigned char *)sorted[i].value,
                                         strlen(sorted[i].value));
    }
    rc = rc ? rc : mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    free(sorted);
    if (rc != 0)
        return -1;
    size_t ol = 0;
    if (mbedtls_base64_encode((unsigned char *)out, outsz, &ol, mac, 20) != 0)
        return -1;
    out[ol] = '\0';
    return 0;
}

static size_t enc_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                    c == '.' || c == '*' || c == ' ';
        n += keep ? 1 : 3;
    }
    return n;
}

static char *enc(char *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
            c == '*') {
            *o++ = (char)c;
        } else if (c == ' ') {
            *o++ = '+';
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    return o;
}

char *sim_form_encode(const sim_param_t *params, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += enc_len(params[i].name) + enc_len(params[i].value) + 2;
    char *out = malloc(len), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = '&';
        o = enc(o, params[i].name);
        *o++ = '=';
        o = enc(o, params[i].value);
    }
    *o = '\0';
    return out;
}

int sim_upgrade_sig_url(sim_upgrade_sig_t mode, const char *url, char *out,
                        size_t outsz)
{
    size_t n = strlen(url);
    const char *sep = strstr(url, "://");
    if (sep == NULL || n + 8 > outsz)
        return -1;
    memcpy(out, url, n + 1);
    if (mode == SIM_UPGRADE_SIG_SLASH) {
        if (n == 0 || url[n - 1] != '/') {
            out[n] = '/';
            out[n + 1] = '\0';
        }
    } else if (mode == SIM_UPGRADE_SIG_PORT) {
        const char *host = sep + 3;
        const char *end = host + strcspn(host, "/?#");
        const char *h = host;
        if (*h == '[') {
            const char *rb = memchr(h, ']', (size_t)(end - h));
            h = rb != NULL ? rb + 1 : end;
        }
        if (memchr(h, ':', (size_t)(end - h)) == NULL) {
            size_t scheme = (size_t)(sep - url);
            bool secure = (scheme == 3 && strncmp(url, "wss", 3) == 0) ||
                          (scheme == 5 && strncmp(url, "https", 5) == 0);
            snprintf(out, outsz, "%.*s:%s%s", (int)(end - url), url,
                     secure ? "443" : "80", end);
        }
    }
    return 0;
}
