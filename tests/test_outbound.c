/* SPDX-License-Identifier: MIT */
/*
 * net/outbound: the webhook side of an outbound call. The `vbo` value
 * (base64url of the assistant, variables and machine choice) is taken
 * only with its `vbm` MAC under the stream secret: an altered value, an
 * altered or missing MAC, another instance's secret, or a value moved
 * between calls' URLs with the wrong MAC is VB_EAUTH, so the ingress
 * answers with the number's assistant (tests/test_e2e_outbound.c shows
 * that end to end).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "core/err.h"
#include "net/outbound.h"
#include "net/twilio_sig.h"
#include "tests/test.h"

/* base64url without padding, as voxbridge writes `vbo`. */
static void b64url(const char *json, char *out, size_t n)
{
    size_t olen = 0;
    ASSERT_EQ(mbedtls_base64_encode((unsigned char *)out, n, &olen,
                                    (const unsigned char *)json, strlen(json)),
              0);
    while (olen > 0 && out[olen - 1] == '=')
        olen--;
    for (size_t i = 0; i < olen; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[olen] = '\0';
}

/* A webhook query with `json` as vbo and its MAC under `k`. */
static void query_for(const vb_twilio_sig_key_t *k, const char *json, char *q,
                      size_t n)
{
    char v[1024], mac[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    b64url(json, v, sizeof v);
    ASSERT_EQ(vb_twilio_sig_assistant_mac(k, "vb-outbound-v1", "", v, mac), 0);
    snprintf(q, n, "%s=%s&%s=%s", VB_OUTBOUND_PARAM, v, VB_OUTBOUND_MAC_PARAM,
             mac);
}

static vb_twilio_sig_key_t key_of(const char *secret)
{
    vb_twilio_sig_key_t k;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, secret), 0);
    return k;
}

static const char sales[] =
    "{\"a\":\"sales\",\"v\":{\"name\":\"Ann\"},\"m\":\"voicemail\"}";

TEST(a_genuine_value_gives_the_assistant_variables_and_machine_choice)
{
    vb_twilio_sig_key_t k = key_of("outbound-secret");
    char q[2048];
    query_for(&k, sales, q, sizeof q);
    vb_outbound_call_t oc;
    ASSERT_EQ(vb_outbound_from_query(&k, q, &oc), 0);
    ASSERT_STR_EQ(oc.assistant, "sales");
    ASSERT_STR_EQ(oc.variables, "{\"name\":\"Ann\"}");
    ASSERT_STR_EQ(oc.on_machine, "voicemail");
    free(oc.variables);
    /* Not an outbound call of ours: no vbo at all. */
    ASSERT_EQ(vb_outbound_from_query(&k, NULL, &oc), VB_ENOENT);
    ASSERT_EQ(vb_outbound_from_query(&k, "a=1&b=2", &oc), VB_ENOENT);
}

TEST(a_forged_or_altered_value_is_refused)
{
    vb_twilio_sig_key_t k = key_of("outbound-secret");
    vb_outbound_call_t oc;
    char q[2048], other[2048];
    query_for(&k, sales, q, sizeof q);
    char *vbm = strstr(q, "&" VB_OUTBOUND_MAC_PARAM "=");
    ASSERT_NOT_NULL(vbm);

    /* Another assistant written in, the MAC kept. */
    char v[1024];
    b64url("{\"a\":\"vip\",\"v\":{\"name\":\"Ann\"},\"m\":\"voicemail\"}", v,
           sizeof v);
    snprintf(other, sizeof other, "%s=%s%s", VB_OUTBOUND_PARAM, v, vbm);
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);
    ASSERT_STR_EQ(oc.assistant, "");
    ASSERT_NULL(oc.variables);

    /* One character of the value changed, then of the MAC. */
    snprintf(other, sizeof other, "%s", q);
    size_t at = strlen(VB_OUTBOUND_PARAM) + 1 + 3;
    other[at] = other[at] == 'A' ? 'B' : 'A';
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);
    snprintf(other, sizeof other, "%s", q);
    char *last = other + strlen(other) - 1;
    *last = *last == 'A' ? 'B' : 'A';
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);

    /* The MAC cut short, left out, or empty. */
    snprintf(other, sizeof other, "%s", q);
    other[strlen(other) - 1] = '\0';
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);
    snprintf(other, sizeof other, "%.*s", (int)(vbm - q), q);
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);
    snprintf(other, sizeof other, "%.*s&%s=", (int)(vbm - q), q,
             VB_OUTBOUND_MAC_PARAM);
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);

    /* Made under another secret: not this instance's. */
    vb_twilio_sig_key_t k2 = key_of("another-secret");
    query_for(&k2, sales, other, sizeof other);
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);

    /* A stream's assistant MAC, made for a CallSid, does not pass for
     * it. */
    char mac[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    b64url(sales, v, sizeof v);
    ASSERT_EQ(vb_twilio_sig_assistant_mac(&k, "CA0123", "", v, mac), 0);
    snprintf(other, sizeof other, "%s=%s&%s=%s", VB_OUTBOUND_PARAM, v,
             VB_OUTBOUND_MAC_PARAM, mac);
    ASSERT_EQ(vb_outbound_from_query(&k, other, &oc), VB_EAUTH);
}

TEST(a_genuine_mac_over_a_malformed_value_is_a_protocol_error)
{
    vb_twilio_sig_key_t k = key_of("outbound-secret");
    vb_outbound_call_t oc;
    char q[2048];
    query_for(&k, "[1,2]", q, sizeof q);
    ASSERT_EQ(vb_outbound_from_query(&k, q, &oc), VB_EPROTO);
    query_for(&k, "{\"a\":7}", q, sizeof q);
    ASSERT_EQ(vb_outbound_from_query(&k, q, &oc), VB_EPROTO);
    query_for(&k, "{\"a\":\"x\",\"v\":[]}", q, sizeof q);
    ASSERT_EQ(vb_outbound_from_query(&k, q, &oc), VB_EPROTO);
}
