/* SPDX-License-Identifier: MIT */
/*
 * Gemini faults end to end: vb-fake-gemini --fault (a connection that
 * stalls at setup or mid-call, dies after every setup, or sends only
 * garbage; a key refused at the upgrade) or no Gemini at all, with
 * vb-sim as the caller. A lost connection is replaced and the caller
 * hears the model again; a model
 * that cannot be reached has the caller hear the fallback text (through
 * vb-sim's REST API, or by the TwiML after <Connect>) and the call end.
 * Times are reported; the assertions use deadlines several times the
 * documented bounds, never tight timings.
 */
#include "tests/e2e.h"

#define FALLBACK "The assistant is unavailable right now. Goodbye."
/* Documented bounds (docs/gemini.md): a stalled connection is found within
 * ping interval + pong timeout (3 s), a call with no working connection
 * ends within --gemini-recover-timeout-ms (5 s) and the fallback REST
 * update gets 2 s. Checked with room for loaded sanitizer runs. */
#define GENEROUS_S 20.0

/* Stops voxbridge and checks it exits 0 without sanitizer reports. Unlike
 * rig_vb_stop, error lines are expected here (the model failed). */
static char *stop_vb(rig_t *r)
{
    kill(r->vb, SIGTERM);
    int st = proc_reap(r->vb, proc_ms(30000));
    char *text = proc_read_file(r->vb_log);
    ASSERT_NOT_NULL(text);
    if (st != 0 || strstr(text, "Sanitizer") != NULL ||
        strstr(text, "runtime error") != NULL)
        vb_test_fail(__FILE__, __LINE__, "voxbridge exited %d:\n%s", st, text);
    return text;
}

/* voxbridge as rig_vb starts it but without Twilio credentials: no REST
 * API, so a hang-up closes the stream (signatures are not checked). */
static void vb_without_rest(rig_t *r)
{
    char bin[400], listen[64], pub[64], gurl[256];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    r->vb_port = proc_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", r->vb_port);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r->vb_port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, r->fake_port);
    const char *argv[] = {
        bin,      "--listen",         listen,        "--public-url",
        pub,      "--gemini-url",     gurl,          "--fallback-say",
        FALLBACK, "--metrics-listen", "127.0.0.1:0", NULL};
    const char *env[] = {"VOXBRIDGE_STREAM_SECRET=" SECRET,
                         "GEMINI_API_KEY=" API_KEY, NULL};
    r->vb = proc_spawn(argv, env, r->vb_log);
    ASSERT_EQ(proc_wait_port(r->vb_log, r->vb, proc_ms(10000)), r->vb_port);
    r->vb_admin_port = rig_admin_port(r->vb_log, r->vb, proc_ms(10000));
}

/* 1 s tone bursts with 1 s gaps: each burst is an utterance the echo
 * model answers. */
static const char *bursts(const rig_t *r, int seconds)
{
    const char *audio = path_in(r, "bursts.wav");
    char fx[128];
    snprintf(fx, sizeof(fx), "synth 1 sine 400 vol 0.3 pad 0 1 repeat %d",
             seconds / 2 - 1);
    make_sox(audio, fx);
    return audio;
}

static double dfield(const char *text, const char *key)
{
    char v[64];
    sfield(text, key, v, sizeof(v));
    return v[0] ? atof(v) : -1;
}

/* A connection that goes bad right after its setup (the first one only)
 * is replaced with the handle, and the caller hears the model again. */
static void replaced_case(const char *fault, const char *reason_label,
                          const char *log_why)
{
    rig_t r;
    rig_init(&r);
    const char *audio = bursts(&r, 12);
    rig_fake(&r, (const char *const[]){"--mode", "echo", "--fault", fault,
                                       "--fault-conn", "1", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = stop_vb(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    ASSERT_GE(count_type(evs, "setup"), 2);
    int resumed = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0) resumed +=
        cJSON_IsTrue(cJSON_GetObjectItem(e, "resumed"));
    ASSERT_GE(resumed, 1);
    /* The first connection never answered anything, so the first model
     * audio the caller heard came through its replacement. */
    double first = dfield(out, "first_audio_ms");
    printf("  %s: model audio heard %.0f ms after the stream started "
           "(fault at setup)\n",
           fault, first);
    ASSERT_DBL_OP(first, >, 0);
    ASSERT_DBL_OP(first, <, GENEROUS_S * 1000);
    ASSERT_GT(field(out, "bytes_heard"), 8000);
    char lbl[64];
    snprintf(lbl, sizeof(lbl), "reason=\"%s\"", reason_label);
    ASSERT_GE(msum(m, "vb_gemini_reconnects_total", lbl), 1);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", NULL), 0);
    ASSERT_STR_CONTAINS(vblog, "gemini connection unresponsive, replacing it");
    ASSERT_STR_CONTAINS(vblog, log_why);
    ASSERT_STR_CONTAINS(vblog, "outcome=stop");
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(stalled_gemini_connection_is_replaced_and_the_caller_hears_it, 90)
{
    replaced_case("stall", "unresponsive", "why=\"ping unanswered\"");
}

TEST_T(gemini_sending_only_garbage_is_replaced, 90)
{
    replaced_case("garbage", "invalid", "why=\"only unusable messages\"");
}

/* How voxbridge reaches Twilio's REST API in a fallback case. */
typedef enum {
    REST_SIM,  /* vb-sim's API: the call is updated with Twiml= */
    REST_NONE, /* no credentials: the stream is closed */
    REST_DEAD, /* credentials, but nobody answers: closed after the error */
} rest_t;

/* The model cannot be reached: the caller hears FALLBACK and the call
 * ends. `fake_args` NULL: no Gemini at all (a closed port). Returns the
 * voxbridge log (for the caller's checks). */
static char *fallback_case(const char *const *fake_args, rest_t how,
                           const char *failure, int *setups)
{
    bool rest = how == REST_SIM;
    rig_t r;
    rig_init(&r);
    const char *audio = bursts(&r, 20);
    if (fake_args != NULL)
        rig_fake(&r, fake_args);
    else
        r.fake_port = proc_free_port(); /* nobody listens there */
    char api[64], apil[64];
    int api_port = proc_free_port();
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", api_port);
    snprintf(apil, sizeof(apil), "127.0.0.1:%d", api_port);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", proc_free_port());
    if (how == REST_NONE)
        vb_without_rest(&r);
    else
        rig_vb(&r,
               (const char *const[]){"--twilio-api-url",
                                     how == REST_SIM ? api : dead,
                                     "--fallback-say", FALLBACK, NULL},
               NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--api-listen", apil, NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = stop_vb(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    double said = dfield(out, "said_after_s");
    printf("  fallback heard %.2f s after the stream started (%s, %s)\n", said,
           failure,
           rest               ? "REST Twiml update"
           : how == REST_DEAD ? "REST failed, TwiML after <Connect>"
                              : "TwiML after <Connect>");
    if (field(out, "says_after_stream") != 1 ||
        strstr(out, "said=\"" FALLBACK "\"") == NULL)
        vb_test_fail(__FILE__, __LINE__, "fallback not heard:\n%s\n%s", out,
                     vblog);
    ASSERT_DBL_OP(said, >=, 0);
    ASSERT_DBL_OP(said, <, GENEROUS_S);
    /* The call ended long before the caller's 20 s of audio. */
    ASSERT_LT(field(out, "frames_sent"), (long long)(GENEROUS_S * 50));
    ASSERT_EQ(field(out, "twiml_replaced"), rest ? 1 : 0);
    ASSERT_EQ(field(out, "rest_requests"), rest ? 1 : 0);
    char lbl[64];
    snprintf(lbl, sizeof(lbl), "reason=\"%s\"", failure);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", lbl), 1);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"fallback\""), 1);
    ASSERT_STR_CONTAINS(vblog, "outcome=fallback");
    char fl[80];
    snprintf(fl, sizeof(fl), "failure=%s", failure);
    ASSERT_STR_CONTAINS(vblog, fl);
    if (setups != NULL) {
        cJSON *evs = fake_events(&r);
        *setups = count_type(evs, "setup");
        cJSON_Delete(evs);
    }
    free(m);
    free(out);
    return vblog;
}

TEST_T(gemini_down_caller_hears_the_fallback_through_rest, 90)
{
    free(fallback_case(NULL, REST_SIM, "gemini_retries_exhausted", NULL));
}

TEST_T(gemini_down_caller_hears_the_fallback_without_rest, 90)
{
    free(fallback_case(NULL, REST_NONE, "gemini_retries_exhausted", NULL));
}

TEST_T(gemini_down_and_rest_unreachable_the_stream_close_says_it, 90)
{
    char *vblog =
        fallback_case(NULL, REST_DEAD, "gemini_retries_exhausted", NULL);
    ASSERT_STR_CONTAINS(vblog, "REST hang-up failed");
    free(vblog);
}

TEST_T(gemini_dying_after_every_setup_ends_the_call_after_bounded_tries, 90)
{
    int setups = 0;
    char *vblog =
        fallback_case((const char *const[]){"--mode", "echo", "--fault",
                                            "die-after-setup", NULL},
                      REST_SIM, "gemini_retries_exhausted", &setups);
    /* Pre-connect and stream each get reconnect_max (3) + 1 connections
     * at most: the budget does not come back on setupComplete. */
    printf("  %d connections set up before the call ended\n", setups);
    ASSERT_GE(setups, 4);
    ASSERT_LE(setups, 8);
    free(vblog);
}

TEST_T(gemini_refusing_the_key_ends_the_call_at_once, 90)
{
    char *vblog = fallback_case(
        (const char *const[]){"--mode", "echo", "--fault", "reject-401", NULL},
        REST_NONE, "gemini_rejected", NULL);
    ASSERT_STR_CONTAINS(vblog, "http_status=401");
    /* Not retried. */
    ASSERT_NULL(strstr(vblog, "gemini reconnect scheduled"));
    free(vblog);
}

/* Gemini accepts the connection and the setup but never completes it: the
 * call ends at --gemini-recover-timeout-ms (5 s), long before the 10 s
 * connect timeout would even start a retry. */
TEST_T(gemini_never_ready_ends_the_call_at_the_recovery_deadline, 90)
{
    char *vblog =
        fallback_case((const char *const[]){"--mode", "echo",
                                            "--setup-delay-ms", "60000", NULL},
                      REST_SIM, "gemini_recovery_timeout", NULL);
    ASSERT_STR_CONTAINS(vblog, "no working gemini connection for 5000 ms");
    free(vblog);
}

/* Fake time (ms) of the first event of `type` on connection `conn` whose
 * `key` is `val` (NULL: any); -1 when none. `after`: only events later
 * than that. */
static double fake_t(const cJSON *evs, int conn, const char *type,
                     const char *key, const char *val, double after)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        double t = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "t"));
        if (cJSON_GetNumberValue(cJSON_GetObjectItem(e, "conn")) != conn ||
            strcmp(ev_type(e), type) != 0 || t <= after)
            continue;
        const char *v =
            key ? cJSON_GetStringValue(cJSON_GetObjectItem(e, key)) : NULL;
        if (key == NULL || (v != NULL && strcmp(v, val) == 0))
            return t;
    }
    return -1;
}

/* The connection stalls mid-call (vb-fake-gemini --fault stall-after:MS),
 * after the caller has heard the model: the stall is found by the ping
 * deadline, the session resumed with the handle on a new connection, and
 * the caller hears the model again. */
TEST_T(gemini_stalling_mid_call_is_replaced_and_heard_again, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = bursts(&r, 16);
    const char *heard = path_in(&r, "heard.wav");
    rig_fake(&r, (const char *const[]){"--mode", "echo", "--fault",
                                       "stall-after:5000", "--fault-conn", "1",
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, heard,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = stop_vb(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    /* Connection 1 sent model audio, then stalled; connection 2 resumed
     * the session and sent model audio too. */
    double audio1 = fake_t(evs, 1, "sent", "what", "audio", -1);
    double stall = fake_t(evs, 1, "fault", "mode", "stall-after", -1);
    double setup2 = fake_t(evs, 2, "setup", NULL, NULL, -1);
    double audio2 = fake_t(evs, 2, "sent", "what", "audio", -1);
    ASSERT_DBL_OP(audio1, >=, 0);
    ASSERT_DBL_OP(stall, >, audio1);
    ASSERT_DBL_OP(setup2, >, stall);
    ASSERT_DBL_OP(audio2, >, setup2);
    const cJSON *e;
    bool resumed = false;
    cJSON_ArrayForEach(
        e, evs) if (strcmp(ev_type(e), "setup") == 0 &&
                    cJSON_GetNumberValue(cJSON_GetObjectItem(e, "conn")) == 2)
        resumed = cJSON_IsTrue(cJSON_GetObjectItem(e, "resumed"));
    ASSERT_TRUE(resumed);
    /* On the caller's clock (the heard WAV, from the stream start): the
     * fake's first audio was heard at first_audio_ms, so the stall came
     * at about first_audio_ms + (stall - audio1). Model audio was heard
     * before it and again after the replacement. */
    double first = dfield(out, "first_audio_ms");
    ASSERT_DBL_OP(first, >, 0);
    double stall_at = first + (stall - audio1);
    /* Connection 2's audio cannot be heard before it was sent (200 ms for
     * the two clocks' offsets). */
    double again_from = first + (audio2 - audio1) - 200;
    size_t n;
    int16_t *pcm = read_wav(heard, &n);
    double before = -1, after = -1, gap = 0, last = -1;
    for (size_t k = 0; k < n / FRAME; k++) {
        if (block_rms(pcm, n, k) < 1000)
            continue;
        double t = (double)k * 20;
        if (t < stall_at)
            before = t;
        else if (after < 0 && t >= again_from)
            after = t;
        if (last >= 0 && t - last > gap)
            gap = t - last;
        last = t;
    }
    free(pcm);
    printf("  stall %.0f ms into the stream; model heard again %.0f ms "
           "later (longest silence heard %.0f ms)\n",
           stall_at, after - stall_at, gap);
    ASSERT_DBL_OP(before, >=, 0);
    ASSERT_DBL_OP(after, >, stall_at);
    ASSERT_DBL_OP(after - stall_at, <, GENEROUS_S * 1000);
    ASSERT_STR_CONTAINS(vblog, "why=\"ping unanswered\"");
    ASSERT_GE(msum(m, "vb_gemini_reconnects_total", "reason=\"unresponsive\""),
              1);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", NULL), 0);
    ASSERT_STR_CONTAINS(vblog, "gemini connection unresponsive, replacing it");
    ASSERT_STR_CONTAINS(vblog, "outcome=stop");
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}
