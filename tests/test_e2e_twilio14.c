/* SPDX-License-Identifier: MIT */
/*
 * How a Twilio call ends, end to end (build/voxbridge, build/vb-sim,
 * build/vb-fake-gemini): after the model's end_call the caller hears
 * nothing more, with REST credentials that fail or with none (the
 * <Connect action> answers <Hangup/>); after a failure the caller hears
 * the fallback text through the same action; at --max-calls the call is
 * rejected busy (vb-sim reports what the caller would hear).
 */
#include "tests/e2e.h"

#define FALLBACK "The assistant is unavailable right now. Goodbye."

/* voxbridge as rig_vb starts it, but with `token` NULL: no Twilio
 * credentials at all (no REST, no signatures). */
static void vb_start(rig_t *r, const char *const *extra, bool creds)
{
    char bin[400], listen[64], pub[64], gurl[256];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    r->vb_port = proc_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", r->vb_port);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r->vb_port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, r->fake_port);
    const char *argv[48] = {bin,           "--listen",
                            listen,        "--public-url",
                            pub,           "--gemini-url",
                            gurl,          "--fallback-say",
                            FALLBACK,      "--metrics-listen",
                            "127.0.0.1:0", "--drain-grace",
                            "0",           "--no-gemini-startup-check"};
    int n = 14;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 47; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    const char *env_creds[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                               "VOXBRIDGE_STREAM_SECRET=" SECRET,
                               "GEMINI_API_KEY=" API_KEY, NULL};
    const char *env_none[] = {"VOXBRIDGE_STREAM_SECRET=" SECRET,
                              "GEMINI_API_KEY=" API_KEY, NULL};
    r->vb = proc_spawn(argv, creds ? env_creds : env_none, r->vb_log);
    ASSERT_EQ(proc_wait_port(r->vb_log, r->vb, proc_ms(10000)), r->vb_port);
    r->vb_admin_port = rig_admin_port(r->vb_log, r->vb, proc_ms(10000));
}

/* Stops voxbridge; it must exit 0 without sanitizer reports (error lines
 * may be expected: a model that failed). */
static char *vb_stop(rig_t *r)
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

/* Polls voxbridge's metrics until series `name`{labels} reaches `want`
 * (a deadline, not a sleep); returns the last value seen. */
static double await_metric(const rig_t *r, const char *name, const char *labels,
                           double want)
{
    double v = -1;
    for (int i = 0; i < 100; i++) {
        char *m = metrics(r);
        v = msum(m, name, labels);
        free(m);
        if (v >= want)
            break;
        usleep(50000 * (useconds_t)vb_test_slowdown());
    }
    return v;
}

/* A model that says an 800 ms goodbye and calls end_call; returns the
 * caller's audio (8 s of silence). */
static const char *goodbye_fake(rig_t *r)
{
    const char *audio = path_in(r, "quiet.wav");
    make_sox(audio, "trim 0 8");
    write_file(r->script,
               "{\"at_ms\":300,\"type\":\"audio\",\"ms\":800,\"hz\":600}\n"
               "{\"at_ms\":400,\"type\":\"toolCall\",\"name\":\"end_call\","
               "\"id\":\"call-1\"}\n"
               "{\"at_ms\":700,\"type\":\"turnComplete\"}\n");
    rig_fake(r, (const char *const[]){"--mode", "script", "--script", r->script,
                                      NULL});
    return audio;
}

typedef enum { END_NO_CREDS, END_REST_DEAD } end_how_t;

/* The model says goodbye and calls end_call: the caller hears the goodbye
 * and then nothing (no fallback <Say>), the stream closed 1000 and the
 * <Connect action> answered <Hangup/>. */
static void intended_end_case(end_how_t how)
{
    rig_t r;
    rig_init(&r);
    const char *audio = goodbye_fake(&r);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", proc_free_port());
    if (how == END_REST_DEAD)
        vb_start(&r, (const char *const[]){"--twilio-api-url", dead, NULL},
                 true);
    else
        vb_start(&r, NULL, false);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    /* Twilio's stream events reached the <Stream statusCallback>. */
    ASSERT_EQ(field(out, "stream_events_sent"), 2);
    ASSERT_EQ(await_metric(&r, "vb_twilio_stream_events_total",
                           "event=\"stream-started\"", 1),
              1);
    ASSERT_EQ(await_metric(&r, "vb_twilio_stream_events_total",
                           "event=\"stream-stopped\"", 1),
              1);
    char *m = metrics(&r);
    char *vblog = vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    if (field(out, "says_after_stream") != 0 ||
        field(out, "action_requests") != 1 ||
        field(out, "action_status") != 200)
        vb_test_fail(__FILE__, __LINE__,
                     "after end_call the caller heard more:\n%s\n%s", out,
                     vblog);
    ASSERT_EQ(field(out, "close_code"), 1000);
    /* The goodbye played before the hang-up. */
    ASSERT_GE(field(out, "bytes_heard"), 8000 * 7 / 10);
    ASSERT_EQ(msum(m, "vb_stream_ended_answers_total", "answer=\"hangup\""), 1);
    ASSERT_EQ(msum(m, "vb_stream_ended_answers_total", "answer=\"fallback\""),
              0);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"hangup\""), 1);
    ASSERT_STR_CONTAINS(vblog, "answer=hangup ended=intended");
    free(m);
    free(vblog);
    free(out);
}

TEST_T(end_call_without_rest_credentials_caller_hears_nothing_more, 90)
{
    intended_end_case(END_NO_CREDS);
}

TEST_T(end_call_with_rest_failing_caller_hears_nothing_more, 90)
{
    intended_end_case(END_REST_DEAD);
}

/* The model cannot be reached and there is no REST: the stream closes and
 * the <Connect action> answers the fallback text, which the caller hears
 * once. */
TEST_T(model_unreachable_without_rest_caller_hears_the_fallback, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 8");
    r.fake_port = proc_free_port(); /* nobody listens there */
    vb_start(&r, NULL, false);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = vb_stop(&r);
    assert_sim_ok(out, vblog);
    if (field(out, "says_after_stream") != 1 ||
        strstr(out, "said=\"" FALLBACK "\"") == NULL ||
        field(out, "action_requests") != 1)
        vb_test_fail(__FILE__, __LINE__, "fallback not heard:\n%s\n%s", out,
                     vblog);
    ASSERT_EQ(msum(m, "vb_stream_ended_answers_total", "answer=\"fallback\""),
              1);
    ASSERT_STR_CONTAINS(vblog, "answer=fallback ended=failure");
    free(m);
    free(vblog);
    free(out);
}

/* At --max-calls the next call is rejected busy: vb-sim reports the busy
 * tone (no <Say>, nothing answered) and a busy status callback. A caller
 * who hangs up before the stream (vb-sim --hangup-before-stream; its
 * completed status callback reaches voxbridge) frees the slot and the
 * pre-connected Gemini session at once. */
TEST_T(at_capacity_reject_busy_and_a_call_without_stream_frees_its_slot, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 2");
    rig_fake(&r, NULL);
    vb_start(&r, (const char *const[]){"--max-calls", "1", NULL}, false);
    char status_cb[128];
    snprintf(status_cb, sizeof(status_cb), "http://127.0.0.1:%d/webhook/status",
             r.vb_port);
    /* Answered; the caller hangs up before its stream comes, and the
     * number's status callback says so. */
    sim_t a;
    sim_start(&r, &a, 2, audio, NULL,
              (const char *const[]){"--hangup-before-stream", "8",
                                    "--status-callback", status_cb, NULL});
    /* The pre-connect reached the model. */
    char *text = NULL;
    proc_wait_log(r.fake_log, "\"setup\"", r.fake, proc_ms(10000), &text);
    free(text);
    /* Full: vb-sim's call is rejected busy, and its callback says busy. */
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--status-callback", status_cb, NULL});
    int st = proc_reap(s.pid, proc_ms(60000));
    char *out = proc_read_file(s.out);
    ASSERT_NOT_NULL(out);
    ASSERT_NE(st, 0);
    ASSERT_STR_CONTAINS(out, "rejected=busy");
    ASSERT_STR_CONTAINS(out, "call_status_last=busy call_status_http=204");
    ASSERT_EQ(field(out, "says_after_stream"), 0);
    ASSERT_EQ(field(out, "frames_sent"), 0);
    free(out);
    /* The first caller hung up; its completed callback was taken. */
    out = sim_wait(&r, &a);
    ASSERT_EQ(field(out, "hung_up_before_stream"), 1);
    ASSERT_EQ(field(out, "frames_sent"), 0);
    ASSERT_EQ(field(out, "call_status_callbacks"), 1);
    ASSERT_STR_CONTAINS(out, "call_status_last=completed call_status_http=204");
    free(out);
    text = NULL;
    ASSERT_NOT_NULL(proc_wait_log(r.vb_log,
                                  "pre-connected gemini session dropped", r.vb,
                                  proc_ms(10000), &text));
    free(text);
    /* Room again: a whole call goes through. */
    sim_start(&r, &s, 1, audio, NULL, NULL);
    out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_GT(field(out, "frames_sent"), 0);
    ASSERT_EQ(field(out, "says_after_stream"), 0);
    ASSERT_EQ(msum(m, "vb_calls_rejected_total", "reason=\"busy\""), 1);
    ASSERT_EQ(msum(m, "vb_calls_unstreamed_total", NULL), 1);
    ASSERT_STR_CONTAINS(vblog, "call ended before its stream: capacity freed");
    /* Both callbacks were signed: voxbridge took them (none refused). */
    ASSERT_EQ(msum(m, "vb_twilio_call_status_total", "status=\"busy\""), 1);
    ASSERT_EQ(msum(m, "vb_twilio_call_status_total", "status=\"completed\""),
              1);
    free(m);
    free(vblog);
    free(out);
}

/* One utterance, then a leg that sends nothing while the caller is
 * silent (vb-sim --suppress-silence): the model's turn detection needs
 * the silence, which voxbridge sends in its place (--media-gap-fill-ms).
 * With the fill off the turn never ends and the caller hears nothing:
 * the case the test guards against. Returns the bytes the caller heard. */
static long long suppressed_case(const char *fill_ms)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "one.wav");
    make_sox(audio, "synth 1 sine 400 vol 0.3");
    rig_fake(&r, NULL);
    vb_start(&r, (const char *const[]){"--media-gap-fill-ms", fill_ms, NULL},
             false);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--suppress-silence", "--tail", "4", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    /* The silence after the tone was not sent. */
    ASSERT_GE(field(out, "frames_suppressed"), 150);
    ASSERT_LE(field(out, "frames_sent"), 60);
    long long heard = field(out, "bytes_heard");
    printf("  fill %s ms: %lld bytes heard, %.0f silence frames sent\n",
           fill_ms, heard, msum(m, "vb_twilio_silence_frames_total", NULL));
    if (strcmp(fill_ms, "0") != 0)
        ASSERT_GE(msum(m, "vb_twilio_silence_frames_total", NULL), 25);
    free(m);
    free(vblog);
    free(out);
    return heard;
}

TEST_T(silence_suppressed_leg_turns_still_end, 90)
{
    /* The echo model answers the 1 s tone once the silence is seen. */
    ASSERT_GE(suppressed_case("400"), 8000 / 2);
}

TEST_T(silence_suppressed_leg_without_the_fill_never_answers, 90)
{
    ASSERT_EQ(suppressed_case("0"), 0);
}

/* ---- REST with an API key; the upgrade signature's forms ---- */

#define E2E_KEY_SID    "SKe2e0000000000000000000000000000"
#define E2E_KEY_SECRET "e2e-key-secret"

/* end_call with voxbridge hanging up through vb-sim's REST API with an API
 * key (`secret` the one it sends; vb-sim knows E2E_KEY_SECRET). Returns
 * vb-sim's output (summary and its REST account on stderr); *log and *m
 * get voxbridge's log and metrics. */
static char *api_key_case(const char *secret, char **log, char **m)
{
    rig_t r;
    rig_init(&r);
    const char *audio = goodbye_fake(&r);
    int api_port = proc_free_port();
    char api_url[64], api_listen[64];
    snprintf(api_url, sizeof(api_url), "http://127.0.0.1:%d", api_port);
    snprintf(api_listen, sizeof(api_listen), "127.0.0.1:%d", api_port);
    vb_start(&r,
             (const char *const[]){"--twilio-api-url", api_url,
                                   "--twilio-api-key", E2E_KEY_SID,
                                   "--twilio-api-secret", secret, NULL},
             true);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--api-listen", api_listen, "--api-key",
                                    E2E_KEY_SID, "--api-secret", E2E_KEY_SECRET,
                                    NULL});
    char *out = sim_wait(&r, &s);
    ASSERT_EQ(await_metric(&r, "vb_calls_total", NULL, 1), 1);
    *m = metrics(&r);
    *log = vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, *log);
    /* Whichever way it ended, the caller heard nothing after the goodbye. */
    if (field(out, "says_after_stream") != 0)
        vb_test_fail(__FILE__, __LINE__, "the caller heard more:\n%s\n%s", out,
                     *log);
    ASSERT_GE(field(out, "bytes_heard"), 8000 * 7 / 10);
    return out;
}

TEST_T(end_call_hangs_up_through_rest_with_an_api_key, 90)
{
    char *log, *m;
    char *out = api_key_case(E2E_KEY_SECRET, &log, &m);
    /* vb-sim took the REST hang-up: nothing ran after it. */
    char ended[16];
    ASSERT_STR_EQ(sfield(out, "ended_by", ended, sizeof(ended)), "rest");
    ASSERT_EQ(field(out, "rest_requests"), 1);
    ASSERT_EQ(field(out, "action_requests"), 0);
    ASSERT_STR_CONTAINS(out, "REST API: requests=1 auth_failures=0");
    ASSERT_STR_CONTAINS(log, "call ended through the REST API");
    ASSERT_EQ(msum(m, "vb_stream_ended_answers_total", NULL), 0);
    /* Twilio's stop or the REST answer's 200, whichever reaches the stage
     * first, ended the stream (they come on two sockets). */
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"stop\"") +
                  msum(m, "vb_calls_total", "outcome=\"hangup\""),
              1);
    ASSERT_EQ(msum(m, "vb_twilio_rest_updates_total", "outcome=\"ok\""), 1);
    ASSERT_EQ(msum(m, "vb_twilio_rest_updates_total", "outcome=\"auth\""), 0);
    free(m);
    free(log);
    free(out);
}

TEST_T(end_call_with_a_wrong_api_secret_is_refused_and_ends_cleanly, 90)
{
    char *log, *m;
    char *out = api_key_case("not-the-secret", &log, &m);
    /* vb-sim refused the key (401, counted, the call untouched); voxbridge
     * closed the stream and the <Connect action> answered <Hangup/>. */
    ASSERT_STR_CONTAINS(out, "REST API: requests=1 auth_failures=1");
    ASSERT_EQ(field(out, "rest_requests"), 0);
    char ended[16];
    ASSERT_STR_EQ(sfield(out, "ended_by", ended, sizeof(ended)), "server");
    ASSERT_EQ(field(out, "close_code"), 1000);
    ASSERT_EQ(field(out, "action_requests"), 1);
    ASSERT_EQ(field(out, "action_status"), 200);
    ASSERT_STR_CONTAINS(log, "REST hang-up refused");
    ASSERT_STR_CONTAINS(log, "http_status=401");
    ASSERT_EQ(msum(m, "vb_stream_ended_answers_total", "answer=\"hangup\""), 1);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"hangup\""), 1);
    /* The refused update is counted as the credentials' fault. */
    ASSERT_EQ(msum(m, "vb_twilio_rest_updates_total", "outcome=\"auth\""), 1);
    ASSERT_EQ(msum(m, "vb_twilio_rest_updates_total", "outcome=\"ok\""), 0);
    free(m);
    free(log);
    free(out);
}

/* A call whose upgrade vb-sim signs as `mode`, voxbridge requiring the
 * signature or not. Returns vb-sim's output; *st its exit status and *m
 * voxbridge's metrics. */
static char *upgrade_case(const char *mode, bool require, int *st, char **m)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "tone.wav");
    make_sox(audio, "synth 1 sine 400 vol 0.3");
    rig_fake(&r, NULL);
    /* A refused stream leaves its call awaited: the drain gives up on it
     * after a second, not 30. */
    vb_start(&r,
             require ? (const char *const[]){"--stream-require-signature",
                                             "--drain-timeout", "1", NULL}
                     : NULL,
             true);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--upgrade-signature", mode, "--tail", "1",
                                    NULL});
    *st = proc_reap(s.pid, proc_ms(60000));
    char *out = proc_read_file(s.out);
    ASSERT_NOT_NULL(out);
    *m = metrics(&r);
    char *log = vb_stop(&r);
    rig_stop(&r);
    if (*st == 0)
        assert_sim_ok(out, log);
    free(log);
    return out;
}

static void upgrade_completes(const char *mode, bool require)
{
    int st;
    char *m;
    char *out = upgrade_case(mode, require, &st, &m);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "--upgrade-signature %s failed:\n%s",
                     mode, out);
    ASSERT_GE(field(out, "frames_sent"), 50);
    ASSERT_EQ(msum(m, "vb_twilio_signature_failures_total", "route=\"stream\""),
              0);
    ASSERT_EQ(msum(m, "vb_twilio_stream_unsigned_total", NULL),
              strcmp(mode, "none") == 0 ? 1 : 0);
    free(m);
    free(out);
}

TEST_T(required_upgrade_signature_exact_completes, 90)
{
    upgrade_completes("exact", true);
}

TEST_T(required_upgrade_signature_with_trailing_slash_completes, 90)
{
    upgrade_completes("slash", true);
}

/* The stream URL here has a port (ws://127.0.0.1:P/...), which the port
 * form keeps as it is: tests/test_sim_units.c checks the :443/:80 forms
 * against voxbridge's verifier. */
TEST_T(required_upgrade_signature_port_form_completes, 90)
{
    upgrade_completes("port", true);
}

TEST_T(required_upgrade_signature_missing_is_refused, 90)
{
    int st;
    char *m;
    char *out = upgrade_case("none", true, &st, &m);
    ASSERT_NE(st, 0);
    ASSERT_STR_CONTAINS(out, "result=fail");
    ASSERT_STR_CONTAINS(out, "stream upgrade failed");
    ASSERT_STR_CONTAINS(out, "HTTP 403");
    ASSERT_EQ(field(out, "frames_sent"), 0);
    ASSERT_EQ(msum(m, "vb_twilio_signature_failures_total", "route=\"stream\""),
              1);
    ASSERT_EQ(msum(m, "vb_twilio_stream_unsigned_total", NULL), 0);
    free(m);
    free(out);
}

/* Without --stream-require-signature the stream token decides: an
 * unsigned upgrade completes the call and is counted. */
TEST_T(unsigned_upgrade_completes_and_is_counted, 90)
{
    upgrade_completes("none", false);
}
