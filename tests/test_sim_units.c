/* SPDX-License-Identifier: MIT */
/*
 * vb-sim's building blocks, compiled into this test directly: the strict
 * TwiML reader, the validator of server messages, request signing (spec
 * §5.5 vectors), strict base64, μ-law and WAV handling.
 */
#include "bench/sim/sim_audio.c"
#include "bench/sim/sim_sign.c"
#include "bench/sim/sim_twiml.c"
#include "bench/sim/sim_validate.c"

#include "dsp/g711.h"
#include "net/twilio_sig.h"
#include "tests/g711_sample.h"
#include "tests/test.h"

static int twiml(const char *doc, sim_twiml_t *t, char *err, size_t n)
{
    return sim_twiml_parse(doc, strlen(doc), t, err, n);
}

TEST(twiml_dial_as_twilio_takes_it)
{
    sim_twiml_t t;
    char err[256];
    ASSERT_EQ(twiml("<Response><Dial>+14155550100</Dial></Response>", &t, err,
                    sizeof err),
              0);
    ASSERT_EQ(t.verbs[0].kind, SIM_VERB_DIAL);
    ASSERT_STR_EQ(t.verbs[0].text, "+14155550100");
    sim_twiml_free(&t);
    ASSERT_EQ(twiml("<Response><Dial timeout=\"20\"><Sip>sip:a@b.example.com"
                    "</Sip></Dial></Response>",
                    &t, err, sizeof err),
              0);
    ASSERT_STR_EQ(t.verbs[0].text, "sip:a@b.example.com");
    sim_twiml_free(&t);
    /* what Twilio refuses */
    static const char *const bad[] = {
        "<Response><Dial></Dial></Response>",
        "<Response><Dial>sales</Dial></Response>",
        "<Response><Dial>+1415555010012345678</Dial></Response>",
        "<Response><Dial><Sip>help@pbx</Sip></Dial></Response>",
        "<Response><Dial><Number>abc</Number></Dial></Response>",
        "<Response><Dial><Say>x</Say></Dial></Response>",
        "<Response><Dial colour=\"red\">+14155550100</Dial></Response>",
        "<Response><Dial>+1<Number>+14155550100</Number></Dial></Response>",
        NULL};
    for (int i = 0; bad[i] != NULL; i++) {
        err[0] = '\0';
        if (twiml(bad[i], &t, err, sizeof err) == 0)
            vb_test_fail(__FILE__, __LINE__, "accepted: %s", bad[i]);
        ASSERT_STR_CONTAINS(err, "TwiML:");
    }
}

TEST(twiml_accepts_voxbridge_shapes)
{
    sim_twiml_t t;
    char err[256];
    const char *doc =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<Response>\n  <Say>Hello &amp; welcome &#233;</Say>\n"
        "  <Pause length=\"2\"/>\n  <!-- c -->\n"
        "  <Connect><Stream url=\"wss://voice.example.com/media-stream/3\">"
        "<Parameter name=\"streamToken\" value=\"a&quot;b\"/>"
        "</Stream></Connect>\n  <Say>Bye</Say>\n</Response>\n";
    ASSERT_EQ(twiml(doc, &t, err, sizeof err), 0);
    ASSERT_EQ(t.nverbs, 4);
    ASSERT_EQ(t.verbs[0].kind, SIM_VERB_SAY);
    ASSERT_STR_EQ(t.verbs[0].text, "Hello & welcome \xc3\xa9");
    ASSERT_EQ(t.verbs[1].kind, SIM_VERB_PAUSE);
    ASSERT_NEAR(t.verbs[1].pause_s, 2, 0);
    ASSERT_EQ(t.verbs[2].kind, SIM_VERB_CONNECT);
    ASSERT_STR_EQ(t.verbs[2].stream_url,
                  "wss://voice.example.com/media-stream/3");
    ASSERT_EQ(t.verbs[2].nparams, 1);
    ASSERT_STR_EQ(t.verbs[2].pvalue[0], "a\"b");
    sim_twiml_free(&t);
    ASSERT_EQ(twiml("<Response><Say>Busy</Say><Hangup/></Response>", &t, err,
                    sizeof err),
              0);
    ASSERT_EQ(t.verbs[1].kind, SIM_VERB_HANGUP);
    sim_twiml_free(&t);
    /* ws:// on loopback is the simulator's one allowance. */
    ASSERT_EQ(twiml("<Response><Connect><Stream url=\"ws://127.0.0.1:9/s\"/>"
                    "</Connect></Response>",
                    &t, err, sizeof err),
              0);
    sim_twiml_free(&t);
}

/* What twilio-node 6.x emits, and what Twilio takes: the <Stream>
 * attributes of the current SDK, an explicit :443, a <Connect action>
 * (absolute or a path), <Reject>. */
TEST(twiml_accepts_what_the_sdk_emits)
{
    sim_twiml_t t;
    char err[256] = "";
    ASSERT_EQ(twiml("<Response><Connect action=\"https://h/after\"><Stream "
                    "url=\"wss://h.example.com:443/s\" name=\"n\" "
                    "track=\"inbound_track\" connectorName=\"c\" "
                    "audioFormat=\"audio/x-mulaw\" sampleRate=\"8000\" "
                    "statusCallback=\"https://h/cb\" "
                    "statusCallbackMethod=\"POST\"/></Connect></Response>",
                    &t, err, sizeof err),
              0);
    ASSERT_EQ(t.nverbs, 1);
    ASSERT_STR_EQ(t.verbs[0].action, "https://h/after");
    ASSERT_STR_EQ(t.verbs[0].status_cb, "https://h/cb");
    sim_twiml_free(&t);
    ASSERT_EQ(twiml("<Response><Connect action=\"/after\"><Stream "
                    "url=\"wss://127.0.0.1:8443/s\"/></Connect></Response>",
                    &t, err, sizeof err),
              0);
    sim_twiml_free(&t);
    ASSERT_EQ(twiml("<Response><Reject reason=\"busy\"/></Response>", &t, err,
                    sizeof err),
              0);
    ASSERT_EQ(t.verbs[0].kind, SIM_VERB_REJECT);
    ASSERT_STR_EQ(t.verbs[0].text, "busy");
    sim_twiml_free(&t);
    ASSERT_EQ(twiml("<Response><Reject/></Response>", &t, err, sizeof err), 0);
    ASSERT_STR_EQ(t.verbs[0].text, "rejected");
    sim_twiml_free(&t);
}

TEST(twiml_rejects_what_twilio_would)
{
    struct {
        const char *doc, *why;
    } cases[] = {
        {"<Response><Connect><Stream url=\"wss://h/s?token=1\"/></Connect>"
         "</Response>",
         "query string"},
        {"<Response><Connect><Stream url=\"ws://example.com/s\"/></Connect>"
         "</Response>",
         "not wss"},
        {"<Response><Connect><Stream url=\"https://h/s\"/></Connect>"
         "</Response>",
         "wss://"},
        {"<Response><Connect><Stream url=\"/relative\"/></Connect>"
         "</Response>",
         "wss://"},
        {"<Response><Connect><Stream/></Connect></Response>", "without url"},
        {"<Response><Connect/></Response>", "exactly one <Stream>"},
        {"<Response><say>x</say></Response>", "unknown verb"},
        {"<response/>", "not <Response>"},
        {"<Response><Say>a & b</Say></Response>", "raw '&'"},
        {"<Response><Say>a</Saying></Response>", "mismatched"},
        {"<Response><Pause length=\"x\"/></Response>", "Pause length"},
        {"<Response><Say voice=\"a\" voice=\"b\">x</Say></Response>",
         "duplicate attribute"},
        {"<Response><Say bogus=\"1\">x</Say></Response>", "unknown attribute"},
        {"<Response><Connect><Stream url=\"wss://h/s\"><Parameter "
         "name=\"a\"/></Stream></Connect></Response>",
         "name and value"},
        {"<!DOCTYPE x><Response/>", "DOCTYPE"},
        {"<Response></Response><Response/>", "after the root"},
        {"<Response>", "not closed"},
        {"<Response><Connect><Stream url=\"wss://h/s\" track=\"both_tracks\"/>"
         "</Connect></Response>",
         "only inbound_track"},
        {"<Response><Connect><Stream url=\"wss://h.example.com:8443/s\"/>"
         "</Connect></Response>",
         "port 443 only"},
        {"<Response><Connect action=\"ftp://h/x\"><Stream url=\"wss://h/s\"/>"
         "</Connect></Response>",
         "not an http(s) URL"},
        {"<Response><Reject reason=\"later\"/></Response>", "Reject reason"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sim_twiml_t t;
        char err[256] = "";
        ASSERT_EQ(twiml(cases[i].doc, &t, err, sizeof err), -1);
        ASSERT_STR_CONTAINS(err, cases[i].why);
    }
    /* Parameter name + value must stay under 500 characters. */
    char big[1200];
    snprintf(big, sizeof big,
             "<Response><Connect><Stream url=\"wss://h/s\"><Parameter "
             "name=\"n\" value=\"%0500d\"/></Stream></Connect></Response>",
             0);
    sim_twiml_t t;
    char err[256];
    ASSERT_EQ(twiml(big, &t, err, sizeof err), -1);
    ASSERT_STR_CONTAINS(err, "500");
}

TEST(validator_accepts_exact_messages_only)
{
    sim_out_msg_t m;
    char err[256];
    const char *sid = "MZ1";
    const char *ok = "{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":"
                     "{\"payload\":\"AAEC\"}}";
    ASSERT_EQ(sim_validate_outbound(ok, strlen(ok), sid, &m, err, sizeof err),
              0);
    ASSERT_EQ(m.kind, SIM_OUT_MEDIA);
    ASSERT_EQ(m.audio_len, 3);
    ASSERT_EQ(m.audio[2], 2);
    free(m.audio);
    const char *mk = "{\"event\":\"mark\",\"streamSid\":\"MZ1\",\"mark\":"
                     "{\"name\":\"x\"}}";
    ASSERT_EQ(sim_validate_outbound(mk, strlen(mk), sid, &m, err, sizeof err),
              0);
    ASSERT_STR_EQ(m.mark, "x");
    free(m.mark);
    const char *cl = "{\"event\":\"clear\",\"streamSid\":\"MZ1\"}";
    ASSERT_EQ(sim_validate_outbound(cl, strlen(cl), sid, &m, err, sizeof err),
              0);
    ASSERT_EQ(m.kind, SIM_OUT_CLEAR);
    const char *bad[] = {
        "{\"event\":\"media\",\"streamSid\":\"MZ2\",\"media\":{\"payload\":"
        "\"AAEC\"}}",
        "{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":{\"payload\":"
        "\"AAEC\",\"track\":\"outbound\"}}",
        "{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":{\"payload\":"
        "\"AAE\"}}",
        "{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":{\"payload\":"
        "\"\"}}",
        "{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":{\"payload\":"
        "\"AA=C\"}}",
        "{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":{\"payload\":"
        "\"AAB=\"}}",
        "{\"event\":\"mark\",\"streamSid\":\"MZ1\",\"mark\":{}}",
        "{\"event\":\"mark\",\"streamSid\":\"MZ1\",\"mark\":{\"name\":1}}",
        "{\"event\":\"clear\",\"streamSid\":\"MZ1\",\"x\":1}",
        "{\"event\":\"stop\",\"streamSid\":\"MZ1\"}",
        "{\"event\":\"media\"}",
        "{\"streamSid\":\"MZ1\"}",
        "not json",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ(sim_validate_outbound(bad[i], strlen(bad[i]), sid, &m, err,
                                        sizeof err),
                  -1);
        ASSERT_TRUE(err[0] != '\0');
        ASSERT_NULL(m.audio);
    }
}

TEST(signatures_match_spec_vectors)
{
    char sig[64];
    /* V1 (Twilio's worked example). */
    sim_param_t v1[] = {{"CallSid", "CA1234567890ABCDE"},
                        {"Caller", "+14158675310"},
                        {"Digits", "1234"},
                        {"From", "+14158675310"},
                        {"To", "+18005551212"}};
    ASSERT_EQ(sim_sign("12345", "https://example.com/myapp.php?foo=1&bar=2", v1,
                       5, sig, sizeof sig),
              0);
    ASSERT_STR_EQ(sig, "L/OH5YylLD5NRKLltdqwSvS0BnU=");
    /* V2, parameters in a different order. */
    sim_param_t v2[] = {{"To", "+18005551212"},
                        {"From", "+14158675309"},
                        {"Digits", "1234"},
                        {"Caller", "+14158675309"},
                        {"CallSid", "CA1234567890ABCDE"}};
    ASSERT_EQ(sim_sign("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                       v2, 5, sig, sizeof sig),
              0);
    ASSERT_STR_EQ(sig, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    /* V3: repeated keys, values sorted, duplicates once. */
    sim_param_t v3[] = {{"Sid", "CA123"},
                        {"SidAccount", "AC123"},
                        {"Digits", "5678"},
                        {"Digits", "1234"},
                        {"Digits", "1234"}};
    ASSERT_EQ(sim_sign("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                       v3, 5, sig, sizeof sig),
              0);
    ASSERT_STR_EQ(sig, "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    /* V5: the WebSocket upgrade, no parameters. */
    ASSERT_EQ(sim_sign("12345", "wss://example.com/media-stream", NULL, 0, sig,
                       sizeof sig),
              0);
    ASSERT_STR_EQ(sig, "XFfwGS2Ev7f9qAP9MmRoMS7C724=");
}

/* --upgrade-signature: the URL each form signs, and voxbridge's stream
 * upgrade check (the flags net/ingress.c passes) accepting each. */
TEST(upgrade_signature_forms)
{
    static const struct {
        sim_upgrade_sig_t mode;
        const char *url, *want;
    } cases[] = {
        {SIM_UPGRADE_SIG_EXACT, "wss://example.com/media-stream",
         "wss://example.com/media-stream"},
        {SIM_UPGRADE_SIG_SLASH, "wss://example.com/media-stream",
         "wss://example.com/media-stream/"},
        {SIM_UPGRADE_SIG_SLASH, "wss://example.com/", "wss://example.com/"},
        {SIM_UPGRADE_SIG_PORT, "wss://example.com/media-stream",
         "wss://example.com:443/media-stream"},
        {SIM_UPGRADE_SIG_PORT, "ws://127.0.0.1/s/0", "ws://127.0.0.1:80/s/0"},
        {SIM_UPGRADE_SIG_PORT, "ws://[::1]/s", "ws://[::1]:80/s"},
        {SIM_UPGRADE_SIG_PORT, "wss://example.com:8443/s",
         "wss://example.com:8443/s"},
        {SIM_UPGRADE_SIG_NONE, "wss://example.com/s", "wss://example.com/s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256], sig[64];
        ASSERT_EQ(
            sim_upgrade_sig_url(cases[i].mode, cases[i].url, out, sizeof out),
            0);
        ASSERT_STR_EQ(out, cases[i].want);
        ASSERT_EQ(sim_sign("12345", out, NULL, 0, sig, sizeof sig), 0);
        ASSERT_EQ(vb_twilio_sig_verify("12345", cases[i].url, NULL, sig,
                                       strlen(sig),
                                       VB_TWILIO_SIG_PORT_VARIANTS |
                                           VB_TWILIO_SIG_SLASH_VARIANTS),
                  0);
    }
    char small[16];
    ASSERT_EQ(sim_upgrade_sig_url(SIM_UPGRADE_SIG_PORT, "no-scheme/x", small,
                                  sizeof small),
              -1);
    ASSERT_EQ(sim_upgrade_sig_url(SIM_UPGRADE_SIG_EXACT,
                                  "wss://a-rather-long-host.example/x", small,
                                  sizeof small),
              -1);
}

TEST(form_encoding)
{
    sim_param_t p[] = {{"From", "+1 415"}, {"A&B", "x=y/é"}, {"E", ""}};
    char *s = sim_form_encode(p, 3);
    ASSERT_STR_EQ(s, "From=%2B1+415&A%26B=x%3Dy%2F%C3%A9&E=");
    free(s);
}

TEST(mulaw_matches_g711_both_ways)
{
    for (int u = 0; u < 256; u++)
        ASSERT_EQ(sim_mulaw_decode((uint8_t)u), ulaw_decode1((uint8_t)u));
    for (int x = -32768; x <= 32767; x += 7)
        ASSERT_EQ(sim_mulaw_encode((int16_t)x), ulaw_encode1((int16_t)x));
}

TEST(wav_round_trip_and_format_errors)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/a.wav", vb_test_tmpdir());
    int16_t s[5] = {0, 1, -1, 32767, -32768};
    ASSERT_EQ(sim_wav_write(path, s, 5), 0);
    int16_t *r = NULL;
    size_t n = 0;
    ASSERT_EQ(sim_wav_read(path, &r, &n, err, sizeof err), 0);
    ASSERT_EQ(n, 5);
    ASSERT_MEM_EQ(r, s, sizeof s);
    free(r);
    /* A 16 kHz file is refused with a clear message. */
    FILE *f = fopen(path, "r+b");
    ASSERT_NOT_NULL(f);
    uint8_t rate[4] = {0x80, 0x3e, 0, 0}; /* 16000 */
    fseek(f, 24, SEEK_SET);
    fwrite(rate, 1, 4, f);
    fclose(f);
    ASSERT_EQ(sim_wav_read(path, &r, &n, err, sizeof err), -1);
    ASSERT_STR_CONTAINS(err, "need 8000 Hz mono 16-bit PCM");
    ASSERT_STR_CONTAINS(err, "16000 Hz");
    ASSERT_EQ(sim_wav_read("/nonexistent.wav", &r, &n, err, sizeof err), -1);
}
