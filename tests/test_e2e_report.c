/* SPDX-License-Identifier: MIT */
/*
 * Post-call reports end to end: build/voxbridge with --events-url pointed
 * at build/vb-example-app, calls from build/vb-sim, the model played by
 * build/vb-fake-gemini from a script (transcriptions, usage, end_call).
 * Each report is checked against the call: its sid, the transcript the
 * fake sent, the duration vb-sim measured, the outcome, a valid signature
 * (the test's own HMAC over the raw bytes). Then the receiver is down:
 * the report waits in the spool, is retried, and after a voxbridge
 * restart (SIGTERM, and SIGKILL) is delivered with exactly the stored
 * bytes, once. Beyond the spool's bound the refusal is counted and logged.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/e2e.h"
#include "tests/example_app.h"
#include "tests/report_rig.h"

#define APP_SECRET "e2e-webhook-secret"

static const char script_end_call[] =
    "{\"at_ms\":200,\"type\":\"inputTranscription\",\"text\":\"Where is my "
    "order A1001?\"}\n"
    "{\"at_ms\":300,\"type\":\"audio\",\"ms\":800,\"hz\":500}\n"
    "{\"at_ms\":350,\"type\":\"outputTranscription\",\"text\":\"It shipped "
    "yesterday. Goodbye!\"}\n"
    "{\"at_ms\":400,\"type\":\"toolCall\",\"name\":\"end_call\",\"id\":"
    "\"call-1\"}\n"
    "{\"at_ms\":900,\"type\":\"turnComplete\"}\n";

static const char script_talk[] =
    "{\"at_ms\":200,\"type\":\"inputTranscription\",\"text\":\"Hi, just "
    "checking in.\"}\n"
    "{\"at_ms\":300,\"type\":\"audio\",\"ms\":400,\"hz\":500}\n"
    "{\"at_ms\":350,\"type\":\"outputTranscription\",\"text\":\"Happy to "
    "help.\"}\n"
    "{\"at_ms\":800,\"type\":\"turnComplete\"}\n";

static void ctx_vb(ctx_t *c, const char *const *more)
{
    ctx_vb_reporting(c, APP_SECRET, "400", more);
}

/* One call of `secs` seconds of quiet audio; returns vb-sim's output. */
static char *one_call(ctx_t *c, int idx, int secs)
{
    char name[32], eff[32];
    snprintf(name, sizeof(name), "quiet-%d.wav", idx);
    snprintf(eff, sizeof(eff), "trim 0 %d", secs);
    const char *audio = path_in(&c->r, name);
    make_sox(audio, eff);
    sim_t s;
    sim_start(&c->r, &s, idx, audio, NULL, NULL);
    return sim_wait(&c->r, &s);
}

static int count_json(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != '.' && l > 5 &&
            strcmp(de->d_name + l - 5, ".json") == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* The one spooled report's bytes (the spool must hold exactly one). */
static char *spooled_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    ASSERT_NOT_NULL(d);
    char path[700] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != '.' && l > 5 &&
            strcmp(de->d_name + l - 5, ".json") == 0)
            snprintf(path, sizeof(path), "%s/%.200s", dir, de->d_name);
    }
    closedir(d);
    ASSERT_TRUE(path[0] != '\0');
    return proc_read_file(path);
}

static void wait_spooled(const char *dir, int n, int ms)
{
    double end = tc_now_ms() + ms;
    while (count_json(dir) != n) {
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "spool %s holds %d, not %d", dir,
                         count_json(dir), n);
        usleep(20000);
    }
}

static const char *jstr(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return s ? s : "";
}

/* The report's fields against the call vb-sim made. */
static void check_report(const cJSON *rep, const char *sim_out,
                         const char *outcome, const char *caller_text,
                         const char *model_text)
{
    char sid[64], dur[32];
    sfield(sim_out, "call_sid", sid, sizeof(sid));
    if (strncmp(sim_out, "call_sid=", 9) == 0 || strstr(sim_out, "\ncall_sid="))
        sscanf(strstr(sim_out, "call_sid=") + 9, "%63s", sid);
    sfield(sim_out, "duration_s", dur, sizeof(dur));
    ASSERT_STR_EQ(jstr(rep, "event"), "call.ended");
    const cJSON *call = cJSON_GetObjectItem(rep, "call");
    ASSERT_STR_EQ(jstr(call, "sid"), sid);
    ASSERT_TRUE(strncmp(jstr(call, "account_sid"), "AC", 2) == 0);
    ASSERT_TRUE(jstr(call, "from")[0] == '+');
    ASSERT_TRUE(jstr(call, "to")[0] == '+');
    ASSERT_STR_EQ(jstr(call, "direction"), "inbound");
    ASSERT_STR_EQ(jstr(rep, "assistant"), "default");
    ASSERT_EQ((int)strlen(jstr(rep, "started_at")), 24);
    ASSERT_EQ((int)strlen(jstr(rep, "ended_at")), 24);
    ASSERT_TRUE(strcmp(jstr(rep, "started_at"), jstr(rep, "ended_at")) < 0);
    double d = cJSON_GetNumberValue(cJSON_GetObjectItem(rep, "duration_s"));
    ASSERT_NEAR(d, atof(dur), 0.6);
    ASSERT_STR_EQ(jstr(rep, "outcome"), outcome);
    /* The transcript is what the fake sent, in order, with roles. */
    const cJSON *tr = cJSON_GetObjectItem(rep, "transcript");
    ASSERT_EQ(cJSON_GetArraySize(tr), 2);
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tr, 0), "role"), "caller");
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tr, 0), "text"), caller_text);
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tr, 1), "role"), "assistant");
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tr, 1), "text"), model_text);
    double t0 = cJSON_GetNumberValue(
        cJSON_GetObjectItem(cJSON_GetArrayItem(tr, 0), "t_ms"));
    ASSERT_GE(t0, 0);
    ASSERT_LE(t0, d * 1000);
    ASSERT_TRUE(cJSON_IsFalse(cJSON_GetObjectItem(rep, "truncated")));
    const cJSON *u = cJSON_GetObjectItem(rep, "usage");
    ASSERT_GT(cJSON_GetNumberValue(cJSON_GetObjectItem(u, "totalTokenCount")),
              0);
    const cJSON *lat = cJSON_GetObjectItem(rep, "latency");
    double fa =
        cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "first_audio_ms"));
    ASSERT_GT(fa, 0);
    ASSERT_LT(fa, d * 1000);
    ASSERT_NOT_NULL(cJSON_GetObjectItem(lat, "response_ms_p50"));
    ASSERT_NOT_NULL(cJSON_GetObjectItem(lat, "response_ms_p95"));
    ASSERT_TRUE(cJSON_IsArray(cJSON_GetObjectItem(rep, "tool_calls")));
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(rep, "recording")));
}

/* Raw bytes and signature of delivery `n` for `sid`, checked with the
 * test's own HMAC; returns the bytes. */
static char *check_signed(const ctx_t *c, int n, const char *sid)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%d-%s.json", c->store, n, sid);
    char *body = proc_read_file(path);
    ASSERT_NOT_NULL(body);
    snprintf(path, sizeof(path), "%s/%d-%s.sig", c->store, n, sid);
    char *sig = proc_read_file(path);
    ASSERT_NOT_NULL(sig);
    if (!sig_valid(sig, APP_SECRET, body, strlen(body), 60))
        vb_test_fail(__FILE__, __LINE__, "bad signature %s", sig);
    free(sig);
    return body;
}

TEST_T(report_after_end_call_has_every_field, 120)
{
    ctx_t c;
    ctx_init(&c, script_end_call);
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    ctx_vb(&c, NULL);
    char *out = one_call(&c, 0, 6);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(10000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    check_report(rep, out, "assistant_hangup", "Where is my order A1001?",
                 "It shipped yesterday. Goodbye!");
    const cJSON *tools = cJSON_GetObjectItem(rep, "tool_calls");
    ASSERT_EQ(cJSON_GetArraySize(tools), 1);
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tools, 0), "name"), "end_call");
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tools, 0), "id"), "call-1");
    ASSERT_STR_EQ(jstr(cJSON_GetArrayItem(tools, 0), "status"), "ok");
    char *body =
        check_signed(&c, 1, jstr(cJSON_GetObjectItem(rep, "call"), "sid"));
    free(body);
    /* The app has it; voxbridge deletes its copy once the 2xx is in. */
    wait_spooled(c.spool, 0, proc_ms(5000));
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    /* Once per call: nothing more arrived, nothing left in the spool. */
    cJSON_Delete(reps);
    reps = app_get(&c.app, "/reports");
    ASSERT_EQ(cJSON_GetArraySize(reps), 1);
    ASSERT_EQ(count_json(c.spool), 0);
    ASSERT_STR_CONTAINS(vblog, "msg=\"report delivered\"");
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}

TEST_T(report_after_caller_hangup, 120)
{
    ctx_t c;
    ctx_init(&c, script_talk);
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    ctx_vb(&c, NULL);
    char *out = one_call(&c, 0, 3);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(10000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    check_report(rep, out, "caller_hangup", "Hi, just checking in.",
                 "Happy to help.");
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "tool_calls")), 0);
    ASSERT_GE(cJSON_GetNumberValue(cJSON_GetObjectItem(rep, "duration_s")),
              2.5);
    /* The app has it; voxbridge counts it once the 2xx is in. */
    double end = tc_now_ms() + proc_ms(5000);
    for (;;) {
        char *m = metrics(&c.r);
        double d = msum(m, "vb_events_delivered_total", NULL);
        double sp = msum(m, "vb_events_spooled", NULL);
        free(m);
        if (d == 1 && sp == 0)
            break;
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "delivered=%g spooled=%g", d, sp);
        usleep(20000);
    }
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}

/* The receiver is down for the call: the report waits in the spool and is
 * retried; voxbridge goes (`sig`) and comes back with the same spool, the
 * receiver too; the stored bytes are delivered, once. */
static void restart_case(int sig)
{
    ctx_t c;
    ctx_init(&c, script_talk);
    ctx_vb(&c, NULL);
    char *out = one_call(&c, 0, 3);
    wait_spooled(c.spool, 1, proc_ms(10000));
    /* Retried with backoff while the receiver is down. */
    double end = tc_now_ms() + proc_ms(10000);
    for (;;) {
        char *m = metrics(&c.r);
        double f = msum(m, "vb_events_failed_total", "reason=\"connect\"");
        double sp = msum(m, "vb_events_spooled", NULL);
        free(m);
        if (f >= 2 && sp == 1)
            break;
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "no retries seen: failed=%g", f);
        usleep(50000);
    }
    char *stored = spooled_bytes(c.spool);
    ASSERT_NOT_NULL(stored);
    if (sig == SIGTERM) {
        char *vblog = rig_vb_stop(&c.r);
        ASSERT_STR_CONTAINS(vblog, "undelivered reports stay in the spool");
        free(vblog);
    } else {
        kill(c.r.vb, SIGKILL);
        proc_reap(c.r.vb, proc_ms(10000));
    }
    ASSERT_EQ(count_json(c.spool), 1);
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    snprintf(c.r.vb_log, sizeof(c.r.vb_log), "%s/voxbridge-2.log", c.r.dir);
    ctx_vb(&c, NULL);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(15000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    const char *sid = jstr(cJSON_GetObjectItem(rep, "call"), "sid");
    char *got = check_signed(&c, 1, sid);
    ASSERT_STR_EQ(got, stored);
    check_report(rep, out, "caller_hangup", "Hi, just checking in.",
                 "Happy to help.");
    wait_spooled(c.spool, 0, proc_ms(5000));
    char *vblog = rig_vb_stop(&c.r);
    ASSERT_STR_CONTAINS(vblog, "reports from before the start");
    rig_stop(&c.r);
    /* Acknowledged, so never sent again. */
    cJSON_Delete(reps);
    reps = app_get(&c.app, "/reports");
    ASSERT_EQ(cJSON_GetArraySize(reps), 1);
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(got);
    free(stored);
    free(out);
}

TEST_T(report_kept_across_a_sigterm_restart, 150)
{
    restart_case(SIGTERM);
}

TEST_T(report_kept_across_a_sigkill_restart, 150)
{
    restart_case(SIGKILL);
}

TEST_T(report_beyond_the_spool_bound_is_refused_and_counted, 150)
{
    ctx_t c;
    ctx_init(&c, script_talk);
    ctx_vb(&c, (const char *const[]){"--events-max-files", "1", NULL});
    char *out1 = one_call(&c, 0, 2);
    wait_spooled(c.spool, 1, proc_ms(10000));
    char *out2 = one_call(&c, 1, 2);
    double end = tc_now_ms() + proc_ms(10000);
    for (;;) {
        char *m = metrics(&c.r);
        double f = msum(m, "vb_events_failed_total", "reason=\"spool_full\"");
        free(m);
        if (f == 1)
            break;
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "spool_full not counted");
        usleep(50000);
    }
    char sid2[64] = "";
    sscanf(strstr(out2, "call_sid=") + 9, "%63s", sid2);
    char needle[128];
    snprintf(needle, sizeof(needle),
             "events spool full: report refused\" call=%s", sid2);
    char *text;
    proc_wait_log(c.r.vb_log, needle, c.r.vb, proc_ms(5000), &text);
    free(text);
    ASSERT_STR_CONTAINS(text = proc_read_file(c.r.vb_log), "level=error");
    free(text);
    ASSERT_EQ(count_json(c.spool), 1);
    kill(c.r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(c.r.vb, proc_ms(30000)), 0);
    rig_stop(&c.r);
    free(out1);
    free(out2);
}

/* The report's latency is the call's: with the echo model the caller's
 * sentence is answered once; the report's response time is the one
 * vb_response_latency_seconds observed, its first audio before it. */
TEST_T(report_latency_is_the_calls, 120)
{
    ctx_t c;
    memset(&c, 0, sizeof(c));
    rig_init(&c.r);
    snprintf(c.spool, sizeof(c.spool), "%s/spool", c.r.dir);
    snprintf(c.store, sizeof(c.store), "%s/store", c.r.dir);
    snprintf(c.app_out, sizeof(c.app_out), "%s/app.out", c.r.dir);
    c.app_port = proc_free_port();
    snprintf(c.url, sizeof(c.url), "http://127.0.0.1:%d/events", c.app_port);
    rig_fake(&c.r, (const char *const[]){"--mode", "echo", NULL});
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    ctx_vb(&c, NULL);
    const char *speech = path_in(&c.r, "speech.wav");
    make_speech(&c.r, "Hello, this is a test call through the voice bridge",
                speech);
    sim_t s;
    sim_start(&c.r, &s, 0, speech, NULL,
              (const char *const[]){"--tail", "6", NULL});
    char *out = sim_wait(&c.r, &s);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(10000));
    char *m = metrics(&c.r);
    double n = msum(m, "vb_response_latency_seconds_count", NULL);
    double sum = msum(m, "vb_response_latency_seconds_sum", NULL);
    free(m);
    const cJSON *lat =
        cJSON_GetObjectItem(cJSON_GetArrayItem(reps, 0), "latency");
    double responses =
        cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "responses"));
    ASSERT_GE(n, 1);
    ASSERT_EQ((int)responses, (int)n);
    double p50 =
        cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "response_ms_p50"));
    double p95 =
        cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "response_ms_p95"));
    double first =
        cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "first_audio_ms"));
    ASSERT_LE(p50, p95);
    if (n == 1)
        ASSERT_NEAR(p50, sum * 1000.0, 1.0);
    ASSERT_GT(p50, 0);
    ASSERT_GT(first, 0);
    char fa[32];
    sfield(out, "first_audio_ms", fa, sizeof(fa));
    /* vb-sim's first audio counts from its own `start`: within 0.5 s. */
    ASSERT_NEAR(first, atof(fa), 500);
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}
