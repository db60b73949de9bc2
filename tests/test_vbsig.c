/* SPDX-License-Identifier: MIT */
/*
 * X-Voxbridge-Signature while keys rotate (net/vbsig.h): with a previous
 * key the header carries a second v1= over the same t, each HMAC checked
 * against `openssl dgst`, and a receiver holding either key accepts it.
 */
#include "net/vbsig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tests/test.h"

/* HMAC-SHA256 of `msg` keyed by `key`, by openssl: the independent check. */
static void openssl_hmac(const char *key, const char *msg, char *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/msg", vb_test_tmpdir());
    FILE *f = fopen(path, "wb");
    ASSERT_NOT_NULL(f);
    fwrite(msg, 1, strlen(msg), f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl dgst -sha256 -hmac '%s' -r < '%s' | cut -d' ' -f1", key,
             path);
    FILE *p = popen(cmd, "r");
    ASSERT_NOT_NULL(p);
    ASSERT_NOT_NULL(fgets(out, 80, p));
    pclose(p);
    out[strcspn(out, "\r\n")] = '\0';
    ASSERT_EQ(strlen(out), 64);
}

TEST(rotating_signs_with_both_keys_over_one_t)
{
    const char *body = "{\"event\":\"call.ended\",\"call\":{\"sid\":\"CA1\"}}";
    int64_t t = 1764633600;
    char sig[VB_SIG_MAX];
    ASSERT_EQ(vb_sig_sign_rotating("whsec_new", "whsec_old", t, body,
                                   strlen(body), sig, sizeof(sig)),
              0);
    char msg[256], a[80], b[80], want[VB_SIG_MAX + 64];
    snprintf(msg, sizeof(msg), "%lld.%s", (long long)t, body);
    openssl_hmac("whsec_new", msg, a);
    openssl_hmac("whsec_old", msg, b);
    snprintf(want, sizeof(want), "t=%lld,v1=%s,v1=%s", (long long)t, a, b);
    ASSERT_STR_EQ(sig, want);
    ASSERT_EQ(strlen(sig) + 1 <= VB_SIG_MAX, 1);
    /* A receiver on either key accepts it; one on neither refuses it. */
    ASSERT_EQ(vb_sig_verify("whsec_new", 9, sig, body, strlen(body), t, 300),
              0);
    ASSERT_EQ(vb_sig_verify("whsec_old", 9, sig, body, strlen(body), t, 300),
              0);
    ASSERT_EQ(vb_sig_verify("whsec_xyz", 9, sig, body, strlen(body), t, 300),
              VB_EAUTH);
}

TEST(rotating_without_a_previous_key_is_one_v1)
{
    char one[VB_SIG_MAX], plain[VB_SIG_MAX];
    ASSERT_EQ(vb_sig_sign_rotating("k", NULL, 1, "", 0, one, sizeof(one)), 0);
    ASSERT_EQ(vb_sig_sign("k", 1, 1, "", 0, plain, sizeof(plain)), 0);
    ASSERT_STR_EQ(one, plain);
    ASSERT_EQ(vb_sig_sign_rotating("k", "", 1, "", 0, one, sizeof(one)), 0);
    ASSERT_STR_EQ(one, plain);
    /* The largest t still fits both. */
    ASSERT_EQ(
        vb_sig_sign_rotating("k", "old", INT64_MAX, "x", 1, one, sizeof(one)),
        0);
    ASSERT_EQ(vb_sig_sign_rotating("k", "old", 1, "x", 1, one, 90), VB_ENOSPC);
    ASSERT_EQ(vb_sig_sign_rotating(NULL, "old", 1, "x", 1, one, sizeof(one)),
              VB_EINVAL);
}
