/* SPDX-License-Identifier: MIT */
/*
 * Twilio request signatures and stream tokens (see twilio_sig.h), on
 * mbedTLS's message-digest layer. The signed string is never built: the
 * HMAC is fed the URL and then each sorted parameter in turn.
 */
#include "net/twilio_sig.h"

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/log.h"

bool vb_twilio_sig_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    const volatile unsigned char *x = a, *y = b;
    unsigned char acc = 0;
    for (size_t i = 0; i < alen; i++)
        acc |= (unsigned char)(x[i] ^ y[i]);
    return acc == 0;
}

/* Byte-wise order of (name, value): the "Unix" sort of spec §5.1, with a
 * shorter string before any longer one it prefixes. */
static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl;
}

static int pair_cmp(const void *pa, const void *pb)
{
    const vb_form_pair_t *a = *(const vb_form_pair_t *const *)pa;
    const vb_form_pair_t *b = *(const vb_form_pair_t *const *)pb;
    int c = bytes_cmp(a->name, a->name_len, b->name, b->name_len);
    return c ? c : bytes_cmp(a->value, a->value_len, b->value, b->value_len);
}

/* Raw HMAC (SHA-1: 20 bytes, SHA-256: 32) of url + sorted params. */
static int sig_mac_alg(int alg, const char *token, const char *url,
                       const vb_form_pair_t *const *sorted, size_t n,
                       unsigned char *mac)
{
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc = mbedtls_md_setup(
        &ctx,
        mbedtls_md_info_from_type(alg == VB_TWILIO_SIG_HMAC_SHA256
                                      ? MBEDTLS_MD_SHA256
                                      : MBEDTLS_MD_SHA1),
        1);
    if (rc == 0)
        rc = mbedtls_md_hmac_starts(&ctx, (const unsigned char *)token,
                                    strlen(token));
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)url,
                                    strlen(url));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        /* Duplicated (name, value) pairs count once, as in Twilio's SDKs. */
        if (i > 0 && pair_cmp(&sorted[i - 1], &sorted[i]) == 0)
            continue;
        rc = mbedtls_md_hmac_update(
            &ctx, (const unsigned char *)sorted[i]->name, sorted[i]->name_len);
        if (rc == 0)
            rc = mbedtls_md_hmac_update(&ctx,
                                        (const unsigned char *)sorted[i]->value,
                                        sorted[i]->value_len);
    }
    if (rc == 0)
        rc = mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    if (rc != 0) {
        vb_log_error(NULL, "webhook HMAC failed", "mbedtls=-0x%04x", -rc);
        return rc == MBEDTLS_ERR_MD_ALLOC_FAILED ? VB_ENOMEM : VB_EIO;
    }
    return 0;
}

static int sig_mac(const char *token, const char *url,
                   const vb_form_pair_t *const *sorted, size_t n,
                   unsigned char mac[20])
{
    return sig_mac_alg(VB_TWILIO_SIG_HMAC_SHA1, token, url, sorted, n, mac);
}

static int sort_params(const vb_form_t *params, const vb_form_pair_t ***out,
                       size_t *n)
{
    *out = NULL;
    *n = params ? params->n : 0;
    if (*n == 0)
        return 0;
    const vb_form_pair_t **v = malloc(*n * sizeof(*v));
    if (v == NULL)
        return VB_ENOMEM;
    for (size_t i = 0; i < *n; i++)
        v[i] = &params->pairs[i];
    qsort(v, *n, sizeof(*v), pair_cmp);
    *out = v;
    return 0;
}

static void b64_sha1(const unsigned char mac[20],
                     char out[VB_TWILIO_SIG_LEN + 1])
{
    size_t olen = 0;
    /* 20 bytes always fit 28 characters and a NUL. */
    mbedtls_base64_encode((unsigned char *)out, VB_TWILIO_SIG_LEN + 1, &olen,
                          mac, 20);
    out[VB_TWILIO_SIG_LEN] = '\0';
}

int vb_twilio_sig_compute(const char *token, const char *url,
                          const vb_form_t *params,
                          char out[VB_TWILIO_SIG_LEN + 1])
{
    if (token == NULL || url == NULL)
        return VB_EINVAL;
    const vb_form_pair_t **sorted;
    size_t n;
    int rc = sort_params(params, &sorted, &n);
    unsigned char mac[20];
    if (rc == 0 && (rc = sig_mac(token, url, sorted, n, mac)) == 0)
        b64_sha1(mac, out);
    free(sorted);
    return rc;
}

int vb_twilio_sig_port_variant(const char *url, char *out, size_t outsz)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url)
        return VB_EINVAL;
    size_t scheme_len = (size_t)(sep - url);
    const char *auth = sep + 3;
    size_t auth_len = strcspn(auth, "/?#");
    const char *end = auth + auth_len;
    /* Host starts after the last '@' of the authority (user:pass@host). */
    const char *host = auth;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            host = p + 1;
    const char *colon = NULL;
    const char *h = host;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        h = rb ? rb + 1 : end;
    }
    for (const char *p = h; p < end; p++)
        if (*p == ':') {
            colon = p;
            break;
        }
    int n;
    if (colon != NULL) {
        n = snprintf(out, outsz, "%.*s%s", (int)(colon - url), url, end);
    } else {
        bool secure = (scheme_len == 5 && strncmp(url, "https", 5) == 0) ||
                      (scheme_len == 3 && strncmp(url, "wss", 3) == 0);
        n = snprintf(out, outsz, "%.*s:%s%s", (int)(end - url), url,
                     secure ? "443" : "80", end);
    }
    return n < 0 || (size_t)n >= outsz ? VB_ENOSPC : 0;
}

/* Adds or removes a trailing '/' (only for URLs without a query). */
static int slash_variant(const char *url, char *out, size_t outsz)
{
    size_t n = strlen(url);
    if (strchr(url, '?') != NULL || n == 0 || n + 2 > outsz)
        return VB_EINVAL;
    memcpy(out, url, n + 1);
    if (out[n - 1] == '/')
        out[n - 1] = '\0';
    else {
        out[n] = '/';
        out[n + 1] = '\0';
    }
    return 0;
}

int vb_twilio_sig_verify(const char *token, const char *url,
                         const vb_form_t *params, const char *sig,
                         size_t sig_len, unsigned flags)
{
    if (token == NULL || url == NULL)
        return VB_EINVAL;
    if (sig == NULL)
        return VB_EAUTH;
    size_t ulen = strlen(url);
    size_t cap = ulen + 16;
    char *buf = malloc(4 * cap);
    const vb_form_pair_t **sorted = NULL;
    size_t n;
    int rc = buf ? sort_params(params, &sorted, &n) : VB_ENOMEM;
    if (rc != 0)
        goto out;
    const char *cand[4];
    size_t nc = 0;
    cand[nc++] = url;
    if ((flags & VB_TWILIO_SIG_PORT_VARIANTS) &&
        vb_twilio_sig_port_variant(url, buf, cap) == 0)
        cand[nc++] = buf;
    if (flags & VB_TWILIO_SIG_SLASH_VARIANTS) {
        size_t have = nc;
        for (size_t i = 0; i < have; i++)
            if (slash_variant(cand[i], buf + (1 + i) * cap, cap) == 0)
                cand[nc++] = buf + (1 + i) * cap;
    }
    bool ok = false;
    for (size_t i = 0; i < nc; i++) {
        unsigned char mac[20];
        char want[VB_TWILIO_SIG_LEN + 1];
        if ((rc = sig_mac(token, cand[i], sorted, n, mac)) != 0)
            goto out;
        b64_sha1(mac, want);
        /* Every candidate is compared, match or not, so timing does not
         * reveal which variant matched. */
        ok |= vb_twilio_sig_equal(want, VB_TWILIO_SIG_LEN, sig, sig_len);
    }
    rc = ok ? 0 : VB_EAUTH;
out:
    free(sorted);
    free(buf);
    return rc;
}

/* ---- the SDK's URL re-encodings ---- */

/* Appends to a growing string; false when it would not fit. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static bool sb_putc(sbuf_t *b, char c)
{
    if (b->len + 1 >= b->cap)
        return false;
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
    return true;
}

static bool sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n >= b->cap)
        return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static bool sb_pct(sbuf_t *b, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    char e[3] = {'%', hex[c >> 4], hex[c & 15]};
    return sb_put(b, e, 3);
}

/* The bytes WHATWG URL serialisation percent-encodes in a special URL's
 * path and query (controls, space, non-ASCII and a few more); '%' itself
 * is kept, so an existing escape stays as it is. */
static bool whatwg_encodes(unsigned char c, bool query)
{
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>')
        return true;
    return query ? c == '\'' : (c == '`' || c == '{' || c == '}');
}

int vb_twilio_sig_whatwg_variant(const char *url, char *out, size_t outsz)
{
    sbuf_t b = {out, 0, outsz};
    if (outsz == 0)
        return VB_ENOSPC;
    out[0] = '\0';
    const char *sep = strstr(url, "://");
    if (sep == NULL)
        return VB_EINVAL;
    const char *path = sep + 3 + strcspn(sep + 3, "/?#");
    if (!sb_put(&b, url, (size_t)(path - url)))
        return VB_ENOSPC;
    bool query = false;
    for (const char *p = path; *p != '\0' && *p != '#'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '?' && !query) {
            query = true;
            if (!sb_putc(&b, '?'))
                return VB_ENOSPC;
            continue;
        }
        if (whatwg_encodes(c, query) ? !sb_pct(&b, c) : !sb_putc(&b, (char)c))
            return VB_ENOSPC;
    }
    return 0;
}

/* querystring.unescape: '+' is a space, %XX a byte, a bad escape kept. */
static size_t qs_unescape(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[k++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && vb_hexval(s[i + 1]) >= 0 &&
                   vb_hexval(s[i + 2]) >= 0) {
            out[k++] = (char)(vb_hexval(s[i + 1]) * 16 + vb_hexval(s[i + 2]));
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    return k;
}

/* querystring.escape keeps letters, digits and -_.!~*'() only. */
static bool qs_escape(sbuf_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || strchr("-_.!~*'()", c) != NULL;
        if (c == 0 || !(keep ? sb_putc(b, (char)c) : sb_pct(b, c)))
            return false;
    }
    return true;
}

typedef struct qs_pair {
    char *key, *val;
    size_t klen, vlen;
    int group; /* index of the first pair with this key */
} qs_pair_t;

/* A JavaScript object's integer-like keys ("0".."4294967294", no leading
 * zero) come first, in numeric order; the others keep insertion order. */
static bool js_index(const char *k, size_t n, uint64_t *v)
{
    if (n == 0 || n > 10 || (n > 1 && k[0] == '0'))
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < '0' || k[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(k[i] - '0');
    }
    *v = x;
    return x < 4294967295u;
}

#define QS_MAX_KEYS 1000 /* querystring.parse's default maxKeys */

int vb_twilio_sig_legacy_query_variant(const char *url, char *out, size_t outsz)
{
    if (outsz == 0)
        return VB_ENOSPC;
    out[0] = '\0';
    const char *q = strchr(url, '?');
    if (q == NULL || q[1] == '\0' || q[1] == '#')
        return VB_EINVAL; /* no query: the SDK uses the URL as it is */
    size_t qlen = strcspn(q + 1, "#");
    qs_pair_t *v = calloc(QS_MAX_KEYS, sizeof(*v));
    char *dec = malloc(2 * qlen + 2);
    int rc = v && dec ? 0 : VB_ENOMEM;
    size_t n = 0, used = 0;
    for (const char *p = q + 1, *end = q + 1 + qlen; rc == 0 && p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop > p && n < QS_MAX_KEYS) {
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            const char *kend = eq ? eq : stop;
            qs_pair_t *x = &v[n];
            x->key = dec + used;
            x->klen = qs_unescape(p, (size_t)(kend - p), x->key);
            used += x->klen + 1;
            x->val = dec + used;
            x->vlen =
                eq ? qs_unescape(eq + 1, (size_t)(stop - eq - 1), x->val) : 0;
            used += x->vlen + 1;
            x->group = (int)n;
            for (size_t j = 0; j < n; j++)
                if (v[j].klen == x->klen &&
                    memcmp(v[j].key, x->key, x->klen) == 0) {
                    x->group = v[j].group;
                    break;
                }
            n++;
        }
        p = stop + 1;
    }
    sbuf_t b = {out, 0, outsz};
    if (rc == 0 && !sb_put(&b, url, (size_t)(q - url) + 1))
        rc = VB_ENOSPC;
    /* Key order as the object holds them: integer-like keys by value, then
     * the rest in first-seen order; each key's values in arrival order. */
    bool first = true;
    for (int pass = 0; rc == 0 && pass < 2; pass++) {
        size_t left = n;
        uint64_t last = 0;
        bool have_last = false;
        while (rc == 0 && left-- > 0) {
            int pick = -1;
            uint64_t best = 0;
            for (size_t i = 0; i < n; i++) {
                if (v[i].group != (int)i)
                    continue;
                uint64_t idx;
                bool is_idx = js_index(v[i].key, v[i].klen, &idx);
                if (pass == 0) {
                    if (!is_idx || (have_last && idx <= last) ||
                        (pick >= 0 && idx >= best))
                        continue;
                    pick = (int)i;
                    best = idx;
                } else if (!is_idx && v[i].klen != (size_t)-1) {
                    pick = (int)i;
                    break;
                }
            }
            if (pick < 0)
                break;
            if (pass == 0) {
                last = best;
                have_last = true;
            }
            for (size_t j = (size_t)pick; rc == 0 && j < n; j++) {
                if (v[j].group != pick)
                    continue;
                if ((!first && !sb_putc(&b, '&')) ||
                    !qs_escape(&b, v[pick].key, v[pick].klen) ||
                    !sb_putc(&b, '=') || !qs_escape(&b, v[j].val, v[j].vlen))
                    rc = VB_ENOSPC;
                first = false;
            }
            if (pass == 1)
                v[pick].klen = (size_t)-1; /* emitted */
        }
    }
    free(v);
    free(dec);
    if (rc != 0)
        out[0] = '\0';
    return rc;
}

/* ---- several URLs, both algorithms ---- */

int vb_twilio_sig_settings_parse(const char *header, char *key, size_t keysz,
                                 int *alg)
{
    if (header == NULL || alg == NULL || key == NULL || keysz == 0)
        return VB_EINVAL;
    key[0] = '\0';
    *alg = 0;
    bool have_alg = false;
    for (const char *p = header; *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        if (eq != NULL) {
            size_t kl = (size_t)(eq - p);
            const char *val = eq + 1;
            size_t vl = n - kl - 1;
            while (vl > 0 && val[vl - 1] == ' ')
                vl--;
            if (kl == 3 && strncmp(p, "key", 3) == 0) {
                if (vl >= keysz)
                    return VB_EINVAL;
                memcpy(key, val, vl);
                key[vl] = '\0';
            } else if (kl == 9 && strncmp(p, "algorithm", 9) == 0) {
                have_alg = true;
                if (vl == 9 && strncmp(val, "HMAC_SHA1", 9) == 0)
                    *alg = VB_TWILIO_SIG_HMAC_SHA1;
                else if (vl == 11 && strncmp(val, "HMAC_SHA256", 11) == 0)
                    *alg = VB_TWILIO_SIG_HMAC_SHA256;
            }
        }
        p += n;
    }
    if (!have_alg)
        *alg = VB_TWILIO_SIG_HMAC_SHA1;
    return *alg != 0 ? 0 : VB_ENOTSUP;
}

int vb_twilio_sig_verify_urls(int alg, const char *key, const char *const *urls,
                              size_t n_urls, const vb_form_t *params,
                              const char *sig, size_t sig_len, unsigned flags)
{
    if (key == NULL || urls == NULL || n_urls == 0 ||
        (alg != VB_TWILIO_SIG_HMAC_SHA1 && alg != VB_TWILIO_SIG_HMAC_SHA256))
        return VB_EINVAL;
    if (sig == NULL)
        return VB_EAUTH;
    const vb_form_pair_t **sorted = NULL;
    size_t n;
    int rc = sort_params(params, &sorted, &n);
    if (rc != 0)
        return rc;
    size_t maxlen = 0;
    for (size_t i = 0; i < n_urls; i++) {
        if (urls[i] == NULL) {
            free(sorted);
            return VB_EINVAL;
        }
        if (strlen(urls[i]) > maxlen)
            maxlen = strlen(urls[i]);
    }
    /* Per URL: as given, re-encoded as the SDK's URL parser does, and the
     * SDK's legacy query re-encoding of that; each with and without its
     * port, each with and without a trailing '/' when asked. */
    size_t cap = 3 * maxlen + 32;
    char *buf = malloc(12 * cap);
    if (buf == NULL) {
        free(sorted);
        return VB_ENOMEM;
    }
    bool ok = false;
    size_t maclen = alg == VB_TWILIO_SIG_HMAC_SHA256 ? 32 : 20;
    for (size_t u = 0; rc == 0 && u < n_urls; u++) {
        const char *cand[12];
        size_t nc = 0;
        cand[nc++] = urls[u];
        if (flags & VB_TWILIO_SIG_QUERY_VARIANTS) {
            char *w = buf + nc * cap;
            if (vb_twilio_sig_whatwg_variant(urls[u], w, cap) == 0 &&
                strcmp(w, urls[u]) != 0)
                cand[nc++] = w;
            char *l = buf + nc * cap;
            if (vb_twilio_sig_legacy_query_variant(cand[nc - 1], l, cap) == 0 &&
                strcmp(l, cand[nc - 1]) != 0)
                cand[nc++] = l;
        }
        if (flags & VB_TWILIO_SIG_PORT_VARIANTS) {
            size_t have = nc;
            for (size_t i = 0; i < have; i++)
                if (vb_twilio_sig_port_variant(cand[i], buf + nc * cap, cap) ==
                    0) {
                    cand[nc] = buf + nc * cap;
                    nc++;
                }
        }
        if (flags & VB_TWILIO_SIG_SLASH_VARIANTS) {
            size_t have = nc;
            for (size_t i = 0; i < have && nc < 12; i++)
                if (slash_variant(cand[i], buf + nc * cap, cap) == 0) {
                    cand[nc] = buf + nc * cap;
                    nc++;
                }
        }
        for (size_t i = 0; rc == 0 && i < nc; i++) {
            unsigned char mac[32];
            char want[48];
            size_t olen = 0;
            if ((rc = sig_mac_alg(alg, key, cand[i], sorted, n, mac)) != 0)
                break;
            mbedtls_base64_encode((unsigned char *)want, sizeof want, &olen,
                                  mac, maclen);
            /* Every candidate is compared, so timing does not tell which
             * one matched. */
            ok |= vb_twilio_sig_equal(want, olen, sig, sig_len);
        }
    }
    free(buf);
    free(sorted);
    if (rc != 0)
        return rc;
    return ok ? 0 : VB_EAUTH;
}

/* ---- stream tokens ---- */

#define TOKEN_RAW_LEN 43 /* 1 + 2 + 8 + 32 */
static const char token_label[] = "vb-stream-v1";

int vb_twilio_sig_key_init(vb_twilio_sig_key_t *k, const char *secret)
{
    memset(k, 0, sizeof(*k));
    if (secret == NULL || *secret == '\0') {
        size_t got = 0;
        while (got < 32) {
            ssize_t r = getrandom(k->bytes + got, 32 - got, 0);
            if (r < 0) {
                vb_log_error(NULL, "getrandom failed", NULL);
                return VB_ESYS;
            }
            got += (size_t)r;
        }
        k->len = 32;
        return 0;
    }
    size_t n = strlen(secret);
    if (n <= sizeof(k->bytes)) {
        memcpy(k->bytes, secret, n);
        k->len = n;
        return 0;
    }
    /* HMAC hashes a key longer than the block the same way. */
    if (mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                   (const unsigned char *)secret, n, k->bytes) != 0)
        return VB_EIO;
    k->len = 32;
    return 0;
}

static int token_mac(const vb_twilio_sig_key_t *k, const char *call_sid,
                     const unsigned char hdr[11], unsigned char mac[32])
{
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc =
        mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_starts(&ctx, k->bytes, k->len);
    if (rc == 0) /* with its NUL */
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)token_label,
                                    sizeof(token_label));
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)call_sid,
                                    strlen(call_sid) + 1);
    if (rc == 0) /* lane and expiry, the version byte is in the label */
        rc = mbedtls_md_hmac_update(&ctx, hdr + 1, 10);
    if (rc == 0)
        rc = mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    if (rc != 0) {
        vb_log_error(NULL, "HMAC-SHA256 failed", "mbedtls=-0x%04x", -rc);
        return VB_EIO;
    }
    return 0;
}

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v =
            (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = '\0';
}

static int b64url_val(char c)
{
    const char *p = c ? strchr(b64url, c) : NULL;
    return p ? (int)(p - b64url) : -1;
}

/* Decodes exactly VB_TWILIO_TOKEN_LEN characters into TOKEN_RAW_LEN bytes;
 * rejects any other alphabet and non-canonical trailing bits. */
static bool token_decode(const char *s, unsigned char out[TOKEN_RAW_LEN])
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < VB_TWILIO_TOKEN_LEN; i++) {
        int v = b64url_val(s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < TOKEN_RAW_LEN)
                out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o == TOKEN_RAW_LEN && (acc & ((1u << bits) - 1)) == 0;
}

static void put_header(unsigned char hdr[11], uint32_t lane, int64_t expiry)
{
    uint64_t e = (uint64_t)expiry;
    hdr[0] = 1;
    hdr[1] = (unsigned char)(lane >> 8);
    hdr[2] = (unsigned char)lane;
    for (int i = 0; i < 8; i++)
        hdr[3 + i] = (unsigned char)(e >> (56 - 8 * i));
}

int vb_twilio_sig_token_create(const vb_twilio_sig_key_t *k,
                               const char *call_sid, uint32_t lane,
                               int64_t expiry_s,
                               char out[VB_TWILIO_TOKEN_LEN + 1])
{
    if (k == NULL || call_sid == NULL || lane > VB_TWILIO_TOKEN_MAX_LANE)
        return VB_EINVAL;
    unsigned char raw[TOKEN_RAW_LEN];
    put_header(raw, lane, expiry_s);
    int rc = token_mac(k, call_sid, raw, raw + 11);
    if (rc == 0)
        b64url_encode(raw, sizeof(raw), out);
    return rc;
}

int vb_twilio_sig_token_verify(const vb_twilio_sig_key_t *k, const char *token,
                               const char *call_sid, int expect_lane,
                               int64_t now_s, int *token_lane)
{
    unsigned char raw[TOKEN_RAW_LEN], mac[32];
    if (token_lane != NULL)
        *token_lane = -1;
    if (token == NULL || *token == '\0')
        return VB_TWILIO_TOKEN_MISSING;
    if (k == NULL ||
        strnlen(token, VB_TWILIO_TOKEN_LEN + 1) != VB_TWILIO_TOKEN_LEN ||
        !token_decode(token, raw) || raw[0] != 1)
        return VB_TWILIO_TOKEN_FORGED;
    if (token_mac(k, call_sid ? call_sid : "", raw, mac) != 0 ||
        !vb_twilio_sig_equal(mac, sizeof(mac), raw + 11, 32))
        return VB_TWILIO_TOKEN_FORGED;
    int lane = raw[1] << 8 | raw[2];
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = e << 8 | raw[3 + i];
    if (token_lane != NULL)
        *token_lane = lane;
    if ((int64_t)e < now_s)
        return VB_TWILIO_TOKEN_EXPIRED;
    if (expect_lane >= 0 && lane != expect_lane)
        return VB_TWILIO_TOKEN_WRONG_LANE;
    return lane;
}

const char *vb_twilio_sig_token_reason(int rc)
{
    if (rc >= 0)
        return "ok";
    switch (rc) {
    case VB_TWILIO_TOKEN_MISSING:
        return "missing";
    case VB_TWILIO_TOKEN_FORGED:
        return "forged";
    case VB_TWILIO_TOKEN_EXPIRED:
        return "expired";
    case VB_TWILIO_TOKEN_WRONG_LANE:
        return "wrong_lane";
    default:
        return "error";
    }
}

/* ---- the assistant a stream carries ---- */

static const char assistant_label[] = "vb-assistant-v1";
static const char assistant_url_mark[] = "\0" VB_TWILIO_ASSISTANT_FROM_URL;

static int assistant_mac(const vb_twilio_sig_key_t *k, const char *call_sid,
                         const char *token, const char *value, bool from_url,
                         unsigned char mac[32])
{
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc =
        mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_starts(&ctx, k->bytes, k->len);
    /* Each part with its NUL, so no two splits of the text agree. */
    if (rc == 0)
        rc =
            mbedtls_md_hmac_update(&ctx, (const unsigned char *)assistant_label,
                                   sizeof(assistant_label));
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)call_sid,
                                    strlen(call_sid) + 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)token,
                                    strlen(token) + 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)value,
                                    strlen(value));
    /* A name holds no NUL: no name's MAC is the one of its --assistant-url
     * mark. */
    if (rc == 0 && from_url)
        rc = mbedtls_md_hmac_update(&ctx,
                                    (const unsigned char *)assistant_url_mark,
                                    sizeof(assistant_url_mark));
    if (rc == 0)
        rc = mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    if (rc != 0) {
        vb_log_error(NULL, "HMAC-SHA256 failed", "mbedtls=-0x%04x", -rc);
        return VB_EIO;
    }
    return 0;
}

static int assistant_mac_b64(const vb_twilio_sig_key_t *k, const char *call_sid,
                             const char *token, const char *value,
                             bool from_url,
                             char out[VB_TWILIO_ASSISTANT_MAC_LEN + 1])
{
    if (k == NULL || call_sid == NULL || token == NULL || value == NULL ||
        out == NULL)
        return VB_EINVAL;
    unsigned char mac[32];
    int rc = assistant_mac(k, call_sid, token, value, from_url, mac);
    if (rc != 0)
        return rc;
    b64url_encode(mac, sizeof mac, out);
    return 0;
}

int vb_twilio_sig_assistant_mac(const vb_twilio_sig_key_t *k,
                                const char *call_sid, const char *token,
                                const char *value,
                                char out[VB_TWILIO_ASSISTANT_MAC_LEN + 1])
{
    return assistant_mac_b64(k, call_sid, token, value, false, out);
}

int vb_twilio_sig_assistant_url_mac(const vb_twilio_sig_key_t *k,
                                    const char *call_sid, const char *token,
                                    const char *value,
                                    char out[VB_TWILIO_ASSISTANT_MAC_LEN + 1])
{
    return assistant_mac_b64(k, call_sid, token, value, true, out);
}

int vb_twilio_sig_assistant_verify(const vb_twilio_sig_key_t *k,
                                   const char *call_sid, const char *token,
                                   const char *value, bool from_url,
                                   const char *mac)
{
    if (k == NULL || call_sid == NULL || token == NULL || value == NULL)
        return VB_EINVAL;
    if (mac == NULL)
        return VB_EAUTH;
    char want[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    int rc = assistant_mac_b64(k, call_sid, token, value, from_url, want);
    if (rc != 0)
        return rc;
    return vb_twilio_sig_equal(want, strlen(want), mac, strlen(mac)) ? 0
                                                                     : VB_EAUTH;
}
