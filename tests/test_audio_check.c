/* SPDX-License-Identifier: MIT */
/*
 * dsp/audio_check (POST /test/audio): each format through the calls' DSP
 * path with levels checked against a known sine, and each bad input's 400.
 * Ogg/Opus uploads are made here with libopusenc; the endpoint's own body
 * limit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <opus/opusenc.h>

#include "core/b64.h"
#include "dsp/audio_check.h"
#include "dsp/g711.h"
#include "tests/test.h"

static const vb_audio_check_config_t CFG = {
    {VB_RESAMPLER_SPEEXDSP, VB_RESAMPLER_QUALITY_DEFAULT}, 0, 0};

static char *b64(const uint8_t *p, size_t n)
{
    char *s = malloc(vb_b64_encoded_len(n) + 1);
    ASSERT_NOT_NULL(s);
    s[vb_b64_encode(s, p, n)] = '\0';
    return s;
}

/* Runs a request; returns the status and the parsed answer. */
static int run(const vb_audio_check_config_t *cfg, const char *body,
               cJSON **out)
{
    char *json = NULL;
    size_t n = 0;
    int st = vb_audio_check_run(cfg, body, strlen(body), &json, &n);
    ASSERT_NOT_NULL(json);
    ASSERT_EQ(strlen(json), n);
    *out = cJSON_Parse(json);
    if (*out == NULL)
        vb_test_fail(__FILE__, __LINE__, "not JSON: %s", json);
    free(json);
    return st;
}

static int run_audio(const char *fmt, int rate, const uint8_t *p, size_t n,
                     const char *extra, cJSON **out)
{
    char *a = b64(p, n);
    size_t cap = strlen(a) + 256;
    char *body = malloc(cap);
    ASSERT_NOT_NULL(body);
    if (rate > 0)
        snprintf(body, cap,
                 "{\"audioData\":\"%s\",\"format\":\"%s\",\"sampleRate\":%d%s}",
                 a, fmt, rate, extra ? extra : "");
    else
        snprintf(body, cap, "{\"audioData\":\"%s\",\"format\":\"%s\"%s}", a,
                 fmt, extra ? extra : "");
    int st = run(&CFG, body, out);
    free(body);
    free(a);
    return st;
}

static double num(const cJSON *o, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    const cJSON *cur = o;
    for (char *k = strtok(buf, "."); k; k = strtok(NULL, ".")) {
        cur = cJSON_GetObjectItemCaseSensitive(cur, k);
        if (cur == NULL)
            vb_test_fail(__FILE__, __LINE__, "no %s", path);
    }
    if (!cJSON_IsNumber(cur))
        vb_test_fail(__FILE__, __LINE__, "%s is not a number", path);
    return cur->valuedouble;
}

static void sine(int16_t *s, size_t n, int rate, double hz, double amp)
{
    for (size_t i = 0; i < n; i++)
        s[i] =
            (int16_t)lrint(amp * 32767 * sin(2 * M_PI * hz * (double)i / rate));
}

/* The stated fields, with a sine of amplitude `amp` in and out. */
static void check_answer(const cJSON *a, double dur_ms, double amp)
{
    ASSERT_NEAR(num(a, "input.duration_ms"), dur_ms, 25);
    ASSERT_GT(num(a, "input.samples"), 0);
    ASSERT_NEAR(num(a, "input.peak"), amp, 0.05);
    ASSERT_NEAR(num(a, "input.rms"), amp / sqrt(2), 0.04);
    ASSERT_NEAR(num(a, "input.rms_dbfs"), 20 * log10(amp / sqrt(2)), 1.0);
    ASSERT_EQ(num(a, "input.clipped"), 0);
    /* Caller -> model: 2 samples of 16 kHz per μ-law byte. */
    double frames = ceil(dur_ms / 20 - 0.01);
    ASSERT_NEAR(num(a, "inbound.frames"), frames, 2);
    ASSERT_NEAR(num(a, "inbound.samples"), dur_ms * 16, 16 * 25);
    ASSERT_GT(num(a, "inbound.frame_us.mean"), 0);
    ASSERT_DBL_OP(num(a, "inbound.frame_us.p99"), >=,
                  num(a, "inbound.frame_us.mean") * 0.5);
    ASSERT_DBL_OP(num(a, "inbound.frame_us.p99"), <, 20000); /* real time */
    ASSERT_NEAR(num(a, "inbound.delay_ms"), 5, 4.9);
    ASSERT_NEAR(num(a, "inbound.rms"), amp / sqrt(2), 0.06);
    /* Model -> caller: 160-byte frames, the last padded by the flush. */
    ASSERT_NEAR(num(a, "outbound.frames"), frames, 2);
    ASSERT_EQ(num(a, "outbound.samples"), num(a, "outbound.frames") * 160);
    ASSERT_GT(num(a, "outbound.frame_us.mean"), 0);
    ASSERT_DBL_OP(num(a, "outbound.frame_us.p99"), <, 20000);
    ASSERT_GT(num(a, "outbound.delay_ms"), 0);
    ASSERT_NEAR(num(a, "outbound.rms"), amp / sqrt(2), 0.06);
    ASSERT_NEAR(num(a, "outbound.peak"), amp, 0.08);
}

TEST(mulaw_sine_gives_every_field_with_its_levels)
{
    int16_t pcm[8000];
    uint8_t ul[8000];
    sine(pcm, 8000, 8000, 440, 0.5);
    vb_g711_ulaw_encode(ul, pcm, 8000);
    cJSON *a;
    ASSERT_EQ(run_audio("mulaw", 8000, ul, sizeof(ul), NULL, &a), 200);
    check_answer(a, 1000, 0.5);
    ASSERT_EQ(num(a, "input.samples"), 8000);
    ASSERT_EQ(num(a, "inbound.samples"), 16000);
    ASSERT_NULL(
        cJSON_GetObjectItem(cJSON_GetObjectItem(a, "inbound"), "audio"));
    cJSON_Delete(a);
    /* sampleRate may be left out for μ-law. */
    ASSERT_EQ(run_audio("mulaw", 0, ul, sizeof(ul), NULL, &a), 200);
    cJSON_Delete(a);
}

TEST(linear16_returns_the_processed_audio_when_asked)
{
    int16_t pcm[16000 * 3 / 2];
    sine(pcm, 24000, 16000, 300, 0.25);
    uint8_t le[sizeof(pcm)];
    for (size_t i = 0; i < 24000; i++) {
        le[2 * i] = (uint8_t)((uint16_t)pcm[i] & 0xff);
        le[2 * i + 1] = (uint8_t)((uint16_t)pcm[i] >> 8);
    }
    cJSON *a;
    ASSERT_EQ(run_audio("linear16", 16000, le, sizeof(le),
                        ",\"returnAudio\":true", &a),
              200);
    check_answer(a, 1500, 0.25);
    ASSERT_EQ(num(a, "input.samples"), 24000);
    const char *in = cJSON_GetStringValue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(a, "inbound"), "audio"));
    const char *out = cJSON_GetStringValue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(a, "outbound"), "audio"));
    ASSERT_NOT_NULL(in);
    ASSERT_NOT_NULL(out);
    uint8_t *buf = malloc(strlen(in));
    size_t n = 0;
    ASSERT_EQ(vb_b64_decode(buf, strlen(in), in, strlen(in), &n), 0);
    ASSERT_EQ(n, num(a, "inbound.samples") * 2); /* PCM16 16 kHz */
    ASSERT_EQ(vb_b64_decode(buf, strlen(in), out, strlen(out), &n), 0);
    ASSERT_EQ(n, num(a, "outbound.samples")); /* μ-law 8 kHz */
    free(buf);
    cJSON_Delete(a);
}

TEST(clipping_is_counted)
{
    int16_t pcm[8000];
    for (size_t i = 0; i < 8000; i++)
        pcm[i] = (i / 20) % 2 ? 32767 : -32768; /* a full-scale square */
    cJSON *a;
    ASSERT_EQ(run_audio("linear16", 8000, (const uint8_t *)pcm, sizeof(pcm),
                        NULL, &a),
              200);
    ASSERT_EQ(num(a, "input.clipped"), 8000);
    ASSERT_NEAR(num(a, "input.peak"), 1.0, 0.001);
    ASSERT_GT(num(a, "inbound.clipped"), 0);
    cJSON_Delete(a);
}

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf_t;

static int mem_write(void *ud, const unsigned char *p, opus_int32 len)
{
    membuf_t *m = ud;
    if (m->n + (size_t)len > m->cap) {
        m->cap = (m->n + (size_t)len) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, p, (size_t)len);
    m->n += (size_t)len;
    return 0;
}

static int mem_close(void *ud)
{
    (void)ud;
    return 0;
}

/* An Ogg/Opus stream of `secs` of a sine at 48 kHz mono. */
static void make_opus(membuf_t *m, double secs, double amp)
{
    memset(m, 0, sizeof(*m));
    OpusEncCallbacks cb = {mem_write, mem_close};
    OggOpusComments *c = ope_comments_create();
    int err = 0;
    OggOpusEnc *e = ope_encoder_create_callbacks(&cb, m, c, 48000, 1, 0, &err);
    ASSERT_NOT_NULL(e);
    ope_encoder_ctl(e, OPUS_SET_BITRATE(64000));
    size_t n = (size_t)(secs * 48000);
    int16_t *pcm = malloc(n * sizeof(int16_t));
    sine(pcm, n, 48000, 440, amp);
    ASSERT_EQ(ope_encoder_write(e, pcm, (int)n), OPE_OK);
    ASSERT_EQ(ope_encoder_drain(e), OPE_OK);
    ope_encoder_destroy(e);
    ope_comments_destroy(c);
    free(pcm);
}

TEST(opus_is_decoded_from_ogg_and_processed)
{
    membuf_t m;
    make_opus(&m, 1.0, 0.5);
    cJSON *a;
    ASSERT_EQ(run_audio("opus", 48000, m.p, m.n, NULL, &a), 200);
    check_answer(a, 1000, 0.5);
    ASSERT_EQ(num(a, "input.sample_rate"), 48000);
    cJSON_Delete(a);
    ASSERT_EQ(run_audio("opus", 0, m.p, m.n, NULL, &a), 200);
    cJSON_Delete(a);
    free(m.p);
}

/* A 400 whose reason names `word`. */
static void refused(int st, cJSON **ap, const char *word)
{
    cJSON *a = *ap;
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItem(a, "error"));
    if (st != 400 || e == NULL || strstr(e, word) == NULL)
        vb_test_fail(__FILE__, __LINE__, "status %d error %s, wanted 400 %s",
                     st, e ? e : "(none)", word);
    cJSON_Delete(a);
}

TEST(each_bad_input_gets_a_400_with_its_reason)
{
    cJSON *a;
    uint8_t ul[1600];
    memset(ul, 0xFF, sizeof(ul));
    refused(run(&CFG, "not json", &a), &a, "JSON");
    refused(run(&CFG, "[1,2]", &a), &a, "JSON");
    refused(run(&CFG, "{\"format\":\"mulaw\"}", &a), &a, "audioData");
    refused(run(&CFG, "{\"audioData\":\"ab$=\",\"format\":\"mulaw\"}", &a), &a,
            "base64");
    refused(run(&CFG, "{\"audioData\":\"\",\"format\":\"mulaw\"}", &a), &a,
            "no audio");
    refused(run_audio("wav", 8000, ul, sizeof(ul), NULL, &a), &a, "format");
    refused(run_audio("mulaw", 16000, ul, sizeof(ul), NULL, &a), &a,
            "sampleRate");
    refused(run_audio("linear16", 0, ul, sizeof(ul), NULL, &a), &a,
            "sampleRate");
    refused(run_audio("linear16", 4000, ul, sizeof(ul), NULL, &a), &a,
            "sampleRate");
    refused(run_audio("linear16", 8000, ul, 1599, NULL, &a), &a, "even");
    refused(run_audio("opus", 44100, ul, sizeof(ul), NULL, &a), &a,
            "sampleRate");
    refused(run_audio("mulaw", 8000, ul, sizeof(ul), ",\"returnAudio\":1", &a),
            &a, "returnAudio");
    refused(run_audio("opus", 0, ul, sizeof(ul), NULL, &a), &a, "Ogg");
    membuf_t m;
    make_opus(&m, 1.0, 0.5);
    refused(run_audio("opus", 0, m.p, m.n - 100, NULL, &a), &a, "truncated");
    /* A whole Ogg stream that is not Opus: its head page says something
     * else. */
    uint8_t *o = malloc(m.n);
    memcpy(o, m.p, m.n);
    memcpy(o + 28, "NotOpus!", 8); /* the first packet's magic */
    refused(run_audio("opus", 0, o, m.n, NULL, &a), &a, "Ogg");
    free(o);
    free(m.p);
    /* Over the limit: 2 s against a 1 s bound, in each format. */
    vb_audio_check_config_t small = CFG;
    small.max_ms = 1000;
    uint8_t big[16000];
    memset(big, 0xFF, sizeof(big));
    char *b = b64(big, sizeof(big));
    char *body = malloc(strlen(b) + 128);
    sprintf(body, "{\"audioData\":\"%s\",\"format\":\"mulaw\"}", b);
    refused(run(&small, body, &a), &a, "longer than 1000 ms");
    free(body);
    free(b);
    make_opus(&m, 2.0, 0.5);
    b = b64(m.p, m.n);
    body = malloc(strlen(b) + 128);
    sprintf(body, "{\"audioData\":\"%s\",\"format\":\"opus\"}", b);
    refused(run(&small, body, &a), &a, "longer than 1000 ms");
    free(body);
    free(b);
    free(m.p);
    /* Over the endpoint's body limit: a 400 with the reason, before the
     * JSON is even parsed; at the limit it is taken. */
    vb_audio_check_config_t tight = CFG;
    tight.max_body = VB_AUDIO_CHECK_MAX_BODY(4096);
    ASSERT_EQ(tight.max_body, 3072);
    body = malloc(4096);
    memset(body, ' ', 4095);
    body[4095] = '\0';
    const char *small_req = "{\"audioData\":\"/w==\",\"format\":\"mulaw\"}";
    memcpy(body, small_req, strlen(small_req));
    body[3072] = '\0';
    ASSERT_EQ(run(&tight, body, &a), 200);
    cJSON_Delete(a);
    body[3072] = ' ';
    body[3073] = '\0';
    refused(run(&tight, body, &a), &a,
            "body: 3073 bytes, over this endpoint's limit of 3072");
    free(body);
}
