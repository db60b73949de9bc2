/* SPDX-License-Identifier: MIT */
#include "core/err.h"
#include "net/form.h"
#include "net/twilio_sig.h"
#include "tests/test.h"

/* Spec §5.5 vectors. */
#define V2_PARAMS                                                       \
    "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=" \
    "%2B14158675309&To=%2B18005551212"

static vb_form_t form(const char *s)
{
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, s, strlen(s), 0), 0);
    return f;
}

/* Valid: computes to `sig` and verifies exactly. Then each single-byte
 * change (signature, URL, a parameter value) is rejected. */
static void check_vector(const char *url, const char *params, const char *sig)
{
    vb_form_t f = form(params);
    char out[VB_TWILIO_SIG_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_compute("12345", url, &f, out), 0);
    ASSERT_STR_EQ(out, sig);
    ASSERT_EQ(vb_twilio_sig_verify("12345", url, &f, sig, strlen(sig), 0), 0);
    ASSERT_EQ(vb_twilio_sig_verify("12345", url, &f, sig, strlen(sig),
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              0);

    char bad[VB_TWILIO_SIG_LEN + 1];
    for (size_t i = 0; i < VB_TWILIO_SIG_LEN; i++) {
        memcpy(bad, sig, sizeof(bad));
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        ASSERT_EQ(vb_twilio_sig_verify("12345", url, &f, bad, strlen(bad),
                                       VB_TWILIO_SIG_PORT_VARIANTS),
                  VB_EAUTH);
    }
    ASSERT_EQ(vb_twilio_sig_verify("12345", url, &f, sig, strlen(sig) - 1, 0),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify("12346", url, &f, sig, strlen(sig), 0),
              VB_EAUTH);

    char *u = strdup(url);
    u[strlen(u) - 1] ^= 1;
    ASSERT_EQ(vb_twilio_sig_verify("12345", u, &f, sig, strlen(sig),
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              VB_EAUTH);
    free(u);

    if (f.n > 0) {
        /* The decoded bytes are ours to change (form.h: f owns them). */
        f._buf[f.pairs[f.n - 1].value - f._buf] ^= 1;
        ASSERT_EQ(vb_twilio_sig_verify("12345", url, &f, sig, strlen(sig),
                                       VB_TWILIO_SIG_PORT_VARIANTS),
                  VB_EAUTH);
    }
    vb_form_free(&f);
}

TEST(sig_v1_official_example)
{
    check_vector("https://example.com/myapp.php?foo=1&bar=2",
                 "CallSid=CA1234567890ABCDE&Caller=%2B14158675310&Digits=1234&"
                 "From=%2B14158675310&To=%2B18005551212",
                 "L/OH5YylLD5NRKLltdqwSvS0BnU=");
}

TEST(sig_v1_param_order_does_not_matter)
{
    /* Posted in another order; the signature sorts. */
    check_vector("https://example.com/myapp.php?foo=1&bar=2",
                 "To=%2B18005551212&From=%2B14158675310&Digits=1234&"
                 "Caller=%2B14158675310&CallSid=CA1234567890ABCDE",
                 "L/OH5YylLD5NRKLltdqwSvS0BnU=");
}

TEST(sig_v2_sdk_urls)
{
    static const char *const v[][2] = {
        {"https://mycompany.com/myapp.php?foo=1&bar=2",
         "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
        {"https://mycompany.com:443/myapp.php?foo=1&bar=2",
         "kvajT1Ptam85bY51eRf/AJRuM3w="},
        {"http://mycompany.com:1234/myapp.php?foo=1&bar=2",
         "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="},
        {"http://mycompany.com:80/myapp.php?foo=1&bar=2",
         "0ZXoZLH/DfblKGATFgpif+LLRf4="},
        {"https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
         "CukzLTc1tT5dXEDIHm/tKBanW10="},
        {"https://user:pass@mycompany.com:443/myapp.php?foo=1&bar=2",
         "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="},
        {"https://mycompany.com/myapp.php?foo=1&bar=2&Body=It%27s+amazing",
         "TfZzewPq8wqrGlMfyAud8+/IvJ0="},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        check_vector(v[i][0], V2_PARAMS, v[i][1]);
}

TEST(sig_v2_port_variants)
{
    vb_form_t f = form(V2_PARAMS);
    const char *rs = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const char *kv = "kvajT1Ptam85bY51eRf/AJRuM3w=";
    const char *zx = "0ZXoZLH/DfblKGATFgpif+LLRf4=";
    /* Port stripped. */
    const char *u1 = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
    ASSERT_EQ(vb_twilio_sig_verify("12345", u1, &f, rs, 28, 0), VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify("12345", u1, &f, rs, 28,
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              0);
    /* :443 added. */
    const char *u2 = "https://mycompany.com/myapp.php?foo=1&bar=2";
    ASSERT_EQ(vb_twilio_sig_verify("12345", u2, &f, kv, 28, 0), VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify("12345", u2, &f, kv, 28,
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              0);
    /* :80 added. */
    const char *u3 = "http://mycompany.com/myapp.php?foo=1&bar=2";
    ASSERT_EQ(vb_twilio_sig_verify("12345", u3, &f, zx, 28,
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              0);
    vb_form_free(&f);
}

TEST(sig_port_variant_rewrites)
{
    char out[128];
    ASSERT_EQ(vb_twilio_sig_port_variant("https://a.b/x?y=1", out, 128), 0);
    ASSERT_STR_EQ(out, "https://a.b:443/x?y=1");
    ASSERT_EQ(vb_twilio_sig_port_variant("https://a.b:8443/x", out, 128), 0);
    ASSERT_STR_EQ(out, "https://a.b/x");
    ASSERT_EQ(vb_twilio_sig_port_variant("wss://a.b/m", out, 128), 0);
    ASSERT_STR_EQ(out, "wss://a.b:443/m");
    ASSERT_EQ(vb_twilio_sig_port_variant("ws://a.b", out, 128), 0);
    ASSERT_STR_EQ(out, "ws://a.b:80");
    ASSERT_EQ(vb_twilio_sig_port_variant("https://u:p@a.b/x", out, 128), 0);
    ASSERT_STR_EQ(out, "https://u:p@a.b:443/x");
    ASSERT_EQ(vb_twilio_sig_port_variant("https://u:p@a.b:443/x", out, 128), 0);
    ASSERT_STR_EQ(out, "https://u:p@a.b/x");
    ASSERT_EQ(vb_twilio_sig_port_variant("http://[::1]:8080/x", out, 128), 0);
    ASSERT_STR_EQ(out, "http://[::1]/x");
    ASSERT_EQ(vb_twilio_sig_port_variant("http://[::1]/x", out, 128), 0);
    ASSERT_STR_EQ(out, "http://[::1]:80/x");
    ASSERT_EQ(vb_twilio_sig_port_variant("no-scheme", out, 128), VB_EINVAL);
    ASSERT_EQ(vb_twilio_sig_port_variant("https://a.b/x", out, 8), VB_ENOSPC);
}

TEST(sig_v3_repeated_keys)
{
    check_vector("https://mycompany.com/myapp.php?foo=1&bar=2",
                 "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits="
                 "1234",
                 "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
}

TEST(sig_v4_body_sha256_urls)
{
    check_vector("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256="
                 "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96"
                 "e6620",
                 "", "a9nBmqA0ju/hNViExpshrM61xv4=");
    check_vector("https://mycompany.com/myapp.php?bodySHA256="
                 "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96"
                 "e6620",
                 "", "y77kIzt2vzLz71DgmJGsen2scGs=");
    /* NODE signs the :443 form of the empty-body URL; the port variant of
     * the plain URL matches it. */
    const char *u = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256="
                    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f6"
                    "1caaff8a";
    const char *s = "Ldidvp12m26NI7eqEvxnEpkd9Hc=";
    ASSERT_EQ(vb_twilio_sig_verify("12345", u, NULL, s, 28, 0), VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify("12345", u, NULL, s, 28,
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              0);
}

TEST(sig_v5_websocket_handshake)
{
    check_vector("wss://example.com/media-stream", "",
                 "XFfwGS2Ev7f9qAP9MmRoMS7C724=");
    check_vector("wss://example.com/media-stream/", "",
                 "7J0iz81itFhCXVuZK8EmM4YZwLA=");
    check_vector("https://example.com/media-stream", "",
                 "+Nt/WUHH2g+0+t2rLN3k9fNhfEw=");
    /* Slash variants: either form of the URL accepts either signature. */
    unsigned fl = VB_TWILIO_SIG_PORT_VARIANTS | VB_TWILIO_SIG_SLASH_VARIANTS;
    ASSERT_EQ(vb_twilio_sig_verify("12345", "wss://example.com/media-stream",
                                   NULL, "7J0iz81itFhCXVuZK8EmM4YZwLA=", 28,
                                   fl),
              0);
    ASSERT_EQ(vb_twilio_sig_verify("12345", "wss://example.com/media-stream/",
                                   NULL, "XFfwGS2Ev7f9qAP9MmRoMS7C724=", 28,
                                   fl),
              0);
    ASSERT_EQ(vb_twilio_sig_verify("12345", "wss://example.com/media-stream",
                                   NULL, "7J0iz81itFhCXVuZK8EmM4YZwLA=", 28,
                                   VB_TWILIO_SIG_PORT_VARIANTS),
              VB_EAUTH);
    /* The https:// value a naive server computes is not the wss one. */
    ASSERT_EQ(vb_twilio_sig_verify("12345", "wss://example.com/media-stream",
                                   NULL, "+Nt/WUHH2g+0+t2rLN3k9fNhfEw=", 28,
                                   fl),
              VB_EAUTH);
}

TEST(sig_missing_or_invalid_arguments)
{
    ASSERT_EQ(vb_twilio_sig_verify("t", "https://a/", NULL, NULL, 0, 0),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify(NULL, "https://a/", NULL, "x", 1, 0),
              VB_EINVAL);
    char out[VB_TWILIO_SIG_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_compute("t", NULL, NULL, out), VB_EINVAL);
    ASSERT_EQ(vb_twilio_sig_verify("t", "https://a/", NULL, "", 0, 0),
              VB_EAUTH);
}

TEST(sig_equal_is_exact)
{
    ASSERT_TRUE(vb_twilio_sig_equal("abc", 3, "abc", 3));
    ASSERT_TRUE(!vb_twilio_sig_equal("abc", 3, "abd", 3));
    ASSERT_TRUE(!vb_twilio_sig_equal("abc", 3, "abcd", 4));
    ASSERT_TRUE(vb_twilio_sig_equal("", 0, "", 0));
}

/* ---- stream tokens ---- */

TEST(token_round_trip)
{
    vb_twilio_sig_key_t k;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, "shared secret"), 0);
    char tok[VB_TWILIO_TOKEN_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA0123", 3, 1000, tok), 0);
    ASSERT_EQ(strlen(tok), VB_TWILIO_TOKEN_LEN);
    for (const char *p = tok; *p; p++)
        ASSERT_TRUE(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789-_",
                   *p) != NULL);
    int lane = -2;
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, "CA0123", 3, 999, &lane), 3);
    ASSERT_EQ(lane, 3);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, "CA0123", -1, 1000, NULL), 3);
    ASSERT_STR_EQ(vb_twilio_sig_token_reason(3), "ok");

    /* Another instance with the same secret verifies it. */
    vb_twilio_sig_key_t k2;
    ASSERT_EQ(vb_twilio_sig_key_init(&k2, "shared secret"), 0);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k2, tok, "CA0123", 3, 999, NULL), 3);
}

TEST(token_errors_are_distinguished)
{
    vb_twilio_sig_key_t k, other;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, "s1"), 0);
    ASSERT_EQ(vb_twilio_sig_key_init(&other, "s2"), 0);
    char tok[VB_TWILIO_TOKEN_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA77", 1, 5000, tok), 0);
    int lane;

    ASSERT_EQ(vb_twilio_sig_token_verify(&k, NULL, "CA77", 1, 0, &lane),
              VB_TWILIO_TOKEN_MISSING);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, "", "CA77", 1, 0, &lane),
              VB_TWILIO_TOKEN_MISSING);
    ASSERT_STR_EQ(vb_twilio_sig_token_reason(VB_TWILIO_TOKEN_MISSING),
                  "missing");

    /* Expired, still telling its lane. */
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, "CA77", 1, 5001, &lane),
              VB_TWILIO_TOKEN_EXPIRED);
    ASSERT_EQ(lane, 1);
    ASSERT_STR_EQ(vb_twilio_sig_token_reason(VB_TWILIO_TOKEN_EXPIRED),
                  "expired");

    /* Wrong lane. */
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, "CA77", 2, 10, &lane),
              VB_TWILIO_TOKEN_WRONG_LANE);
    ASSERT_EQ(lane, 1);
    ASSERT_STR_EQ(vb_twilio_sig_token_reason(VB_TWILIO_TOKEN_WRONG_LANE),
                  "wrong_lane");

    /* Forged: other secret, other call, any changed character, wrong
     * length, foreign alphabet. */
    ASSERT_EQ(vb_twilio_sig_token_verify(&other, tok, "CA77", 1, 10, &lane),
              VB_TWILIO_TOKEN_FORGED);
    ASSERT_EQ(lane, -1);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, "CA78", 1, 10, &lane),
              VB_TWILIO_TOKEN_FORGED);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, NULL, 1, 10, &lane),
              VB_TWILIO_TOKEN_FORGED);
    for (size_t i = 0; i < VB_TWILIO_TOKEN_LEN; i++) {
        char bad[VB_TWILIO_TOKEN_LEN + 1];
        memcpy(bad, tok, sizeof(bad));
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        ASSERT_EQ(vb_twilio_sig_token_verify(&k, bad, "CA77", 1, 10, NULL),
                  VB_TWILIO_TOKEN_FORGED);
    }
    char longer[VB_TWILIO_TOKEN_LEN + 2];
    snprintf(longer, sizeof(longer), "%sA", tok);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, longer, "CA77", 1, 10, NULL),
              VB_TWILIO_TOKEN_FORGED);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, "abc", "CA77", 1, 10, NULL),
              VB_TWILIO_TOKEN_FORGED);
    char plus[VB_TWILIO_TOKEN_LEN + 1];
    memcpy(plus, tok, sizeof(plus));
    plus[5] = '+';
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, plus, "CA77", 1, 10, NULL),
              VB_TWILIO_TOKEN_FORGED);
    ASSERT_STR_EQ(vb_twilio_sig_token_reason(VB_TWILIO_TOKEN_FORGED), "forged");
}

TEST(token_lane_and_expiry_are_authenticated)
{
    vb_twilio_sig_key_t k;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, "s"), 0);
    char a[VB_TWILIO_TOKEN_LEN + 1], b[VB_TWILIO_TOKEN_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA1", 0, 100, a), 0);
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA1", 1, 100, b), 0);
    ASSERT_TRUE(strcmp(a, b) != 0);
    /* Splicing the header of one onto the MAC of the other fails. */
    char spliced[VB_TWILIO_TOKEN_LEN + 1];
    memcpy(spliced, b, 8);
    memcpy(spliced + 8, a + 8, VB_TWILIO_TOKEN_LEN + 1 - 8);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, spliced, "CA1", -1, 0, NULL),
              VB_TWILIO_TOKEN_FORGED);
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA1", 65536, 100, a), VB_EINVAL);
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA1", 65535, 100, a), 0);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, a, "CA1", 65535, 0, NULL), 65535);
}

TEST(token_random_key_differs_per_process)
{
    vb_twilio_sig_key_t a, b;
    ASSERT_EQ(vb_twilio_sig_key_init(&a, NULL), 0);
    ASSERT_EQ(vb_twilio_sig_key_init(&b, ""), 0);
    ASSERT_EQ(a.len, 32);
    ASSERT_TRUE(memcmp(a.bytes, b.bytes, 32) != 0);
    char tok[VB_TWILIO_TOKEN_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_token_create(&a, "CA1", 0, 100, tok), 0);
    ASSERT_EQ(vb_twilio_sig_token_verify(&b, tok, "CA1", 0, 0, NULL),
              VB_TWILIO_TOKEN_FORGED);
}

TEST(token_long_secret_hashed_like_hmac)
{
    char secret[200];
    memset(secret, 'z', sizeof(secret) - 1);
    secret[sizeof(secret) - 1] = '\0';
    vb_twilio_sig_key_t k;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, secret), 0);
    ASSERT_EQ(k.len, 32);
    char tok[VB_TWILIO_TOKEN_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_token_create(&k, "CA1", 2, 100, tok), 0);
    ASSERT_EQ(vb_twilio_sig_token_verify(&k, tok, "CA1", 2, 0, NULL), 2);
}

/* ---- the SDK's re-encodings, SharedKey signatures ---- */

TEST(sig_whatwg_variant_encodes_as_the_sdk_url_parser)
{
    char out[256];
    ASSERT_EQ(vb_twilio_sig_whatwg_variant("https://a.test/p?Body=It's+amazing",
                                           out, sizeof out),
              0);
    ASSERT_STR_EQ(out, "https://a.test/p?Body=It%27s+amazing");
    /* Path: a space and braces are encoded, ' is not; a query's " and <
     * are; an existing escape and the fragment's removal as the parser
     * does. */
    ASSERT_EQ(vb_twilio_sig_whatwg_variant(
                  "https://a.test/a b/{x}'?q=\"<%41>#frag", out, sizeof out),
              0);
    ASSERT_STR_EQ(out, "https://a.test/a%20b/%7Bx%7D'?q=%22%3C%41%3E");
    ASSERT_EQ(vb_twilio_sig_whatwg_variant("https://a.test/\xc3\xa9", out,
                                           sizeof out),
              0);
    ASSERT_STR_EQ(out, "https://a.test/%C3%A9");
    ASSERT_EQ(vb_twilio_sig_whatwg_variant("no-scheme", out, sizeof out),
              VB_EINVAL);
    /* "https://a.test/'?%27": 20 characters and the NUL. */
    ASSERT_EQ(vb_twilio_sig_whatwg_variant("https://a.test/'?'", out, 21), 0);
    ASSERT_EQ(vb_twilio_sig_whatwg_variant("https://a.test/'?'", out, 20),
              VB_ENOSPC);
}

TEST(sig_legacy_query_variant_round_trips_as_node_querystring)
{
    static const char *const v[][2] = {
        /* '+' is a space, encoded %20; ' is kept. */
        {"https://a.test/p?foo=1&bar=2&Body=It%27s+amazing",
         "https://a.test/p?foo=1&bar=2&Body=It's%20amazing"},
        /* Integer-like keys first, by value; a repeated key's values go
         * together at its first place. */
        {"https://a.test/p?b=1&2=x&1=y&b=3&01=z",
         "https://a.test/p?1=y&2=x&b=1&b=3&01=z"},
        /* A bad escape stays, its '%' then encoded; no '=' is an empty
         * value; empty pairs vanish. */
        {"https://a.test/p?a=%zz&flag&&c=%2B",
         "https://a.test/p?a=%25zz&flag=&c=%2B"},
        {"https://a.test/p?x=a/b:c@d", "https://a.test/p?x=a%2Fb%3Ac%40d"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        ASSERT_EQ(vb_twilio_sig_legacy_query_variant(v[i][0], out, sizeof out),
                  0);
        ASSERT_STR_EQ(out, v[i][1]);
    }
    ASSERT_EQ(
        vb_twilio_sig_legacy_query_variant("https://a.test/p", out, sizeof out),
        VB_EINVAL);
}

static void v2_verify(const char *url, const char *sig, unsigned flags,
                      int want)
{
    vb_form_t f = form(V2_PARAMS);
    const char *urls[] = {url};
    ASSERT_EQ(vb_twilio_sig_verify_urls(VB_TWILIO_SIG_HMAC_SHA1, "12345", urls,
                                        1, &f, sig, strlen(sig), flags),
              want);
    vb_form_free(&f);
}

TEST(sig_sdk_reencodings_verify)
{
    /* The SDK's test passes the raw ' and validates a hash made over %27
     * (spec §5.5, V2's last row). */
    const char *raw = "https://mycompany.com/myapp.php?foo=1&bar=2&Body="
                      "It's+amazing";
    v2_verify(raw, "TfZzewPq8wqrGlMfyAud8+/IvJ0=", 0, VB_EAUTH);
    v2_verify(raw, "TfZzewPq8wqrGlMfyAud8+/IvJ0=", VB_TWILIO_SIG_QUERY_VARIANTS,
              0);
    /* With the port too. */
    v2_verify("https://mycompany.com:443/myapp.php?foo=1&bar=2&Body="
              "It's+amazing",
              "TfZzewPq8wqrGlMfyAud8+/IvJ0=",
              VB_TWILIO_SIG_QUERY_VARIANTS | VB_TWILIO_SIG_PORT_VARIANTS, 0);
    /* A hash over the legacy form (%20 for the '+') verifies for the URL as
     * received. */
    vb_form_t f = form(V2_PARAMS);
    char sig[VB_TWILIO_SIG_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_compute("12345",
                                    "https://mycompany.com/myapp.php?foo=1&"
                                    "bar=2&Body=It's%20amazing",
                                    &f, sig),
              0);
    vb_form_free(&f);
    v2_verify(raw, sig, 0, VB_EAUTH);
    v2_verify(raw, sig, VB_TWILIO_SIG_QUERY_VARIANTS, 0);
    /* Several public URLs: any one may be the one called. */
    const char *urls[] = {"https://other.test/myapp.php?foo=1&bar=2",
                          "https://mycompany.com/myapp.php?foo=1&bar=2"};
    f = form(V2_PARAMS);
    const char *good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    ASSERT_EQ(vb_twilio_sig_verify_urls(VB_TWILIO_SIG_HMAC_SHA1, "12345", urls,
                                        2, &f, good, strlen(good), 0),
              0);
    ASSERT_EQ(vb_twilio_sig_verify_urls(VB_TWILIO_SIG_HMAC_SHA1, "12345", urls,
                                        1, &f, good, strlen(good), 0),
              VB_EAUTH);
    vb_form_free(&f);
}

/* HMAC-SHA256 of `data` keyed by `key`, base64, from openssl (independent
 * of the code under test). */
static void openssl_sha256(const char *key, const char *data, char *out,
                           size_t n)
{
    char path[512], cmd[1024];
    snprintf(path, sizeof path, "%s/data", vb_test_tmpdir());
    FILE *fp = fopen(path, "w");
    ASSERT_TRUE(fp != NULL);
    fputs(data, fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd,
             "openssl dgst -sha256 -hmac '%s' -binary < '%s' | base64", key,
             path);
    FILE *p = popen(cmd, "r");
    ASSERT_TRUE(p != NULL);
    ASSERT_TRUE(fgets(out, (int)n, p) != NULL);
    pclose(p);
    out[strcspn(out, "\n")] = '\0';
}

TEST(sig_shared_key_hmac_sha256)
{
    const char *url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    char want[64];
    /* The signed string is the same: URL then the sorted parameters. */
    openssl_sha256("shared-secret",
                   "https://mycompany.com/myapp.php?foo=1&bar=2CallSid"
                   "CA1234567890ABCDECaller+14158675309Digits1234From"
                   "+14158675309To+18005551212",
                   want, sizeof want);
    ASSERT_EQ(strlen(want), 44);
    vb_form_t f = form(V2_PARAMS);
    const char *urls[] = {url};
    ASSERT_EQ(vb_twilio_sig_verify_urls(VB_TWILIO_SIG_HMAC_SHA256,
                                        "shared-secret", urls, 1, &f, want,
                                        strlen(want), 0),
              0);
    ASSERT_EQ(vb_twilio_sig_verify_urls(VB_TWILIO_SIG_HMAC_SHA1,
                                        "shared-secret", urls, 1, &f, want,
                                        strlen(want), 0),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify_urls(VB_TWILIO_SIG_HMAC_SHA256, "other",
                                        urls, 1, &f, want, strlen(want), 0),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_verify_urls(7, "shared-secret", urls, 1, &f, want,
                                        strlen(want), 0),
              VB_EINVAL);
    vb_form_free(&f);
}

TEST(sig_settings_header_parse)
{
    char key[64];
    int alg;
    ASSERT_EQ(
        vb_twilio_sig_settings_parse(
            "key=KS0123456789abcdef0123456789abcdef,algorithm=HMAC_SHA256", key,
            sizeof key, &alg),
        0);
    ASSERT_STR_EQ(key, "KS0123456789abcdef0123456789abcdef");
    ASSERT_EQ(alg, VB_TWILIO_SIG_HMAC_SHA256);
    ASSERT_EQ(vb_twilio_sig_settings_parse("algorithm=HMAC_SHA1, key=KS1", key,
                                           sizeof key, &alg),
              0);
    ASSERT_STR_EQ(key, "KS1");
    ASSERT_EQ(alg, VB_TWILIO_SIG_HMAC_SHA1);
    ASSERT_EQ(vb_twilio_sig_settings_parse("key=KS1,algorithm=HMAC_SHA512", key,
                                           sizeof key, &alg),
              VB_ENOTSUP);
    ASSERT_EQ(vb_twilio_sig_settings_parse("key=KS1", key, 3, &alg), VB_EINVAL);
}

TEST(assistant_mac_binds_name_call_and_token)
{
    vb_twilio_sig_key_t k, other;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, "shared"), 0);
    ASSERT_EQ(vb_twilio_sig_key_init(&other, "not-shared"), 0);
    char mac[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_assistant_mac(&k, "CA1", "tok", "front-desk", mac),
              0);
    ASSERT_EQ(strlen(mac), VB_TWILIO_ASSISTANT_MAC_LEN);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "front-desk",
                                             false, mac),
              0);
    /* Another name, call, token or key, or no MAC: refused. */
    ASSERT_EQ(
        vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "sales", false, mac),
        VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA2", "tok", "front-desk",
                                             false, mac),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok2", "front-desk",
                                             false, mac),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&other, "CA1", "tok", "front-desk",
                                             false, mac),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "front-desk",
                                             false, NULL),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "front-desk",
                                             false, ""),
              VB_EAUTH);
    /* The split between the parts is part of the MAC. */
    char m2[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    ASSERT_EQ(vb_twilio_sig_assistant_mac(&k, "CA1", "to", "kfront-desk", m2),
              0);
    ASSERT_TRUE(strcmp(mac, m2) != 0);
    ASSERT_EQ(vb_twilio_sig_assistant_mac(NULL, "CA1", "t", "a", mac),
              VB_EINVAL);
}

TEST(assistant_url_mark_is_under_the_mac)
{
    vb_twilio_sig_key_t k;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, "shared"), 0);
    char named[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    char marked[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    ASSERT_EQ(
        vb_twilio_sig_assistant_mac(&k, "CA1", "tok", "front-desk", named), 0);
    ASSERT_EQ(
        vb_twilio_sig_assistant_url_mac(&k, "CA1", "tok", "front-desk", marked),
        0);
    ASSERT_EQ(strlen(marked), VB_TWILIO_ASSISTANT_MAC_LEN);
    ASSERT_TRUE(strcmp(named, marked) != 0);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "front-desk",
                                             true, marked),
              0);
    /* The mark cleared, or set on a MAC made without it: refused. */
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "front-desk",
                                             false, marked),
              VB_EAUTH);
    ASSERT_EQ(vb_twilio_sig_assistant_verify(&k, "CA1", "tok", "front-desk",
                                             true, named),
              VB_EAUTH);
    /* No name spells the mark. */
    ASSERT_EQ(vb_twilio_sig_assistant_verify(
                  &k, "CA1", "tok", "front-desk\001url", false, marked),
              VB_EAUTH);
}
