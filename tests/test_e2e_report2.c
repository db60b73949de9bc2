/* SPDX-License-Identifier: MIT */
/*
 * More post-call reports end to end (build/voxbridge, build/vb-sim,
 * build/vb-fake-gemini, build/vb-example-app as the receiver): a call
 * that was answered but never streamed still gets its one signed report,
 * at its final status callback or at its pending slot's expiry; a report
 * lists the HTTP tool call the model made, with its arguments, status and
 * latency, signed with both keys while they rotate; an assistant's
 * max_call_s is reported as a timeout.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ingress.h"
#include "tests/e2e.h"
#include "tests/example_app.h"
#include "tests/report_rig.h"

#define APP_SECRET "e2e-webhook-secret-2"

static void ctx_vb(ctx_t *c, const char *const *more)
{
    ctx_vb_reporting(c, APP_SECRET, "200", more);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return s ? s : "";
}

/* Raw bytes of delivery `n` for `sid` with their signature, checked with
 * the test's own HMAC. */
static void check_signed(const ctx_t *c, int n, const char *sid)
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
    free(body);
}

/* Polls the admin /metrics until `name{labels}` sums to `want`. */
static void wait_metric(rig_t *r, const char *name, const char *labels,
                        double want, int ms)
{
    double end = tc_now_ms() + ms, v = 0;
    for (;;) {
        char *m = metrics(r);
        v = msum(m, name, labels);
        free(m);
        if (v == want)
            return;
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "%s{%s} = %g, not %g", name,
                         labels ? labels : "", v, want);
        usleep(20000);
    }
}

static const char script_talk[] =
    "{\"at_ms\":200,\"type\":\"inputTranscription\",\"text\":\"Hello?\"}\n"
    "{\"at_ms\":300,\"type\":\"audio\",\"ms\":400,\"hz\":500}\n"
    "{\"at_ms\":800,\"type\":\"turnComplete\"}\n";

/* Answered, then the caller hangs up before the stream comes; the
 * number's status callback says so: the report still arrives, once,
 * signed, with what the webhook told and an empty transcript. */
TEST_T(a_call_that_never_streams_gets_one_signed_report, 90)
{
    ctx_t c;
    ctx_init(&c, script_talk);
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    ctx_vb(&c, NULL);
    char status_cb[128];
    snprintf(status_cb, sizeof(status_cb), "http://127.0.0.1:%d/webhook/status",
             c.r.vb_port);
    const char *audio = path_in(&c.r, "quiet.wav");
    make_sox(audio, "trim 0 2");
    sim_t s;
    sim_start(&c.r, &s, 0, audio, NULL,
              (const char *const[]){"--hangup-before-stream", "1",
                                    "--status-callback", status_cb, NULL});
    char *out = sim_wait(&c.r, &s);
    ASSERT_EQ(field(out, "hung_up_before_stream"), 1);
    ASSERT_EQ(field(out, "frames_sent"), 0);
    ASSERT_STR_CONTAINS(out, "call_status_last=completed call_status_http=204");
    char sid[64] = "";
    sscanf(strstr(out, "call_sid=") + 9, "%63s", sid);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(10000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    ASSERT_STR_EQ(jstr(rep, "event"), "call.ended");
    const cJSON *call = cJSON_GetObjectItem(rep, "call");
    ASSERT_STR_EQ(jstr(call, "sid"), sid);
    ASSERT_TRUE(strncmp(jstr(call, "account_sid"), "AC", 2) == 0);
    ASSERT_TRUE(jstr(call, "from")[0] == '+');
    ASSERT_TRUE(jstr(call, "to")[0] == '+');
    ASSERT_STR_EQ(jstr(call, "stream_sid"), "");
    ASSERT_STR_EQ(jstr(call, "direction"), "inbound");
    ASSERT_STR_EQ(jstr(rep, "assistant"), "default");
    ASSERT_STR_EQ(jstr(rep, "outcome"), "caller_hangup");
    ASSERT_STR_EQ(jstr(rep, "reason"), "completed");
    ASSERT_EQ((int)strlen(jstr(rep, "started_at")), 24);
    ASSERT_TRUE(strcmp(jstr(rep, "started_at"), jstr(rep, "ended_at")) <= 0);
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "transcript")), 0);
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "tool_calls")), 0);
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(rep, "recording")));
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(
        cJSON_GetObjectItem(rep, "latency"), "first_audio_ms")));
    check_signed(&c, 1, sid);
    wait_metric(&c.r, "vb_events_delivered_total", NULL, 1, proc_ms(5000));
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    /* Once: nothing more came (the pending entry's expiry is past the
     * stop, but the callback already took it). */
    cJSON_Delete(reps);
    reps = app_get(&c.app, "/reports");
    ASSERT_EQ(cJSON_GetArraySize(reps), 1);
    ASSERT_STR_CONTAINS(vblog, "report of a call without its stream");
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}

/* The same caller without a status callback: nothing tells voxbridge the
 * call is over, so its pending slot expires (VB_INGRESS_PENDING_MS) and
 * the next request the ingress serves (here a health check) sends the
 * report: outcome failed, reason expired. */
TEST_T(a_call_whose_stream_never_comes_is_reported_at_the_expiry, 120)
{
    ctx_t c;
    ctx_init(&c, script_talk);
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    ctx_vb(&c, NULL);
    const char *audio = path_in(&c.r, "quiet.wav");
    make_sox(audio, "trim 0 2");
    sim_t s;
    sim_start(&c.r, &s, 0, audio, NULL,
              (const char *const[]){"--hangup-before-stream", "1", NULL});
    char *out = sim_wait(&c.r, &s);
    ASSERT_EQ(field(out, "hung_up_before_stream"), 1);
    char sid[64] = "";
    sscanf(strstr(out, "call_sid=") + 9, "%63s", sid);
    double t0 = tc_now_ms();
    /* Nothing before the expiry. */
    usleep(500 * 1000);
    cJSON *reps = app_get(&c.app, "/reports");
    ASSERT_EQ(cJSON_GetArraySize(reps), 0);
    cJSON_Delete(reps);
    double end = t0 + VB_INGRESS_PENDING_MS + proc_ms(20000);
    /* No request reaches voxbridge meanwhile: the expiry comes by
     * itself. */
    for (;;) {
        reps = app_get(&c.app, "/reports");
        if (cJSON_GetArraySize(reps) > 0)
            break;
        cJSON_Delete(reps);
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "no report after the expiry");
        usleep(500 * 1000);
    }
    ASSERT_GE(tc_now_ms() - t0, VB_INGRESS_PENDING_MS - 2000);
    ASSERT_EQ(cJSON_GetArraySize(reps), 1);
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    ASSERT_STR_EQ(jstr(cJSON_GetObjectItem(rep, "call"), "sid"), sid);
    ASSERT_STR_EQ(jstr(rep, "outcome"), "failed");
    ASSERT_STR_EQ(jstr(rep, "reason"), "expired");
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "transcript")), 0);
    check_signed(&c, 1, sid);
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}

/* The model looks an order up through the example app's HTTP tool; the
 * report lists that call: its arguments, status and latency. Signed while
 * the key rotates: the app still on the old key accepts the tool request
 * and the report, each header carrying both keys' v1 over one t. */
TEST_T(report_lists_the_http_tool_call_signed_with_both_keys, 120)
{
    ctx_t c;
    ctx_init(&c,
             "{\"at_ms\":200,\"type\":\"inputTranscription\",\"text\":"
             "\"Where is A1001?\"}\n"
             "{\"at_ms\":300,\"type\":\"toolCall\",\"name\":\"lookup_order\","
             "\"args\":{\"order_id\":\"A1001\"},\"id\":\"fc-1\"}\n"
             "{\"at_ms\":900,\"type\":\"audio\",\"ms\":300,\"hz\":500}\n"
             "{\"at_ms\":1300,\"type\":\"turnComplete\"}\n");
    app_start(&c.app, c.app_port, "whsec-old", c.store, c.app_out, NULL);
    char assistants[1024];
    snprintf(assistants, sizeof(assistants),
             "{\"assistants\":{\"desk\":{\"tools\":[{\"name\":"
             "\"lookup_order\",\"parameters\":{\"type\":\"object\","
             "\"properties\":{\"order_id\":{\"type\":\"string\"}}},"
             "\"url\":\"http://127.0.0.1:%d/tools/lookup_order\"}]}}}",
             c.app_port);
    const char *file = path_in(&c.r, "assistants.json");
    write_file(file, assistants);
    const char *args[] = {"--events-url",
                          c.url,
                          "--events-spool",
                          c.spool,
                          "--webhook-secret",
                          "whsec-new",
                          "--webhook-secret-previous",
                          "whsec-old",
                          "--assistants",
                          file,
                          NULL};
    rig_vb(&c.r, args, NULL);
    const char *audio = path_in(&c.r, "quiet.wav");
    make_sox(audio, "trim 0 3");
    sim_t s;
    sim_start(&c.r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&c.r, &s);
    char sid[64] = "";
    sscanf(strstr(out, "call_sid=") + 9, "%63s", sid);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(10000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    ASSERT_STR_EQ(jstr(rep, "assistant"), "desk");
    const cJSON *tools = cJSON_GetObjectItem(rep, "tool_calls");
    ASSERT_EQ(cJSON_GetArraySize(tools), 1);
    const cJSON *t = cJSON_GetArrayItem(tools, 0);
    ASSERT_STR_EQ(jstr(t, "id"), "fc-1");
    ASSERT_STR_EQ(jstr(t, "name"), "lookup_order");
    ASSERT_STR_EQ(jstr(cJSON_GetObjectItem(t, "arguments"), "order_id"),
                  "A1001");
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(t, "arguments")), 1);
    ASSERT_STR_EQ(jstr(t, "status"), "ok");
    const cJSON *lat = cJSON_GetObjectItem(t, "latency_ms");
    ASSERT_TRUE(cJSON_IsNumber(lat));
    ASSERT_GE(cJSON_GetNumberValue(lat), 0);
    ASSERT_LT(cJSON_GetNumberValue(lat), 3000);
    /* The app took the tool request (signature checked on the old key). */
    ASSERT_EQ(app_stat(&c.app, "rejected_signature"), 0);
    ASSERT_GE(app_stat(&c.app, "accepted"), 2);
    /* The report's header: t, the new key's v1, the old key's v1. */
    char path[600];
    snprintf(path, sizeof(path), "%s/1-%s.json", c.store, sid);
    char *body = proc_read_file(path);
    ASSERT_NOT_NULL(body);
    snprintf(path, sizeof(path), "%s/1-%s.sig", c.store, sid);
    char *sig = proc_read_file(path);
    ASSERT_NOT_NULL(sig);
    sig[strcspn(sig, "\r\n")] = '\0';
    char t_part[32], first[80], second[80], one[200];
    ASSERT_EQ(sscanf(sig, "%31[^,],v1=%79[0-9a-f],v1=%79[0-9a-f]", t_part,
                     first, second),
              3);
    snprintf(one, sizeof(one), "%s,v1=%s", t_part, first);
    ASSERT_TRUE(sig_valid(one, "whsec-new", body, strlen(body), 60));
    snprintf(one, sizeof(one), "%s,v1=%s", t_part, second);
    ASSERT_TRUE(sig_valid(one, "whsec-old", body, strlen(body), 60));
    ASSERT_TRUE(!sig_valid(one, "whsec-new", body, strlen(body), 60));
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(sig);
    free(body);
    free(vblog);
    free(out);
}

/* The assistant's max_call_s ends the call: a time limit, so the report
 * (and vb_calls_total) says timeout, not assistant_hangup. */
TEST_T(max_call_s_is_reported_as_timeout, 90)
{
    ctx_t c;
    ctx_init(&c, script_talk);
    app_start(&c.app, c.app_port, APP_SECRET, c.store, c.app_out, NULL);
    const char *file = path_in(&c.r, "assistants.json");
    write_file(file, "{\"assistants\":{\"brief\":{\"max_call_s\":2}}}");
    ctx_vb(&c, (const char *const[]){"--assistants", file, NULL});
    const char *audio = path_in(&c.r, "quiet.wav");
    make_sox(audio, "trim 0 6");
    sim_t s;
    sim_start(&c.r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&c.r, &s);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(10000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    ASSERT_STR_EQ(jstr(rep, "assistant"), "brief");
    ASSERT_STR_EQ(jstr(rep, "outcome"), "timeout");
    ASSERT_STR_EQ(jstr(rep, "reason"), "max_duration");
    double d = cJSON_GetNumberValue(cJSON_GetObjectItem(rep, "duration_s"));
    ASSERT_GE(d, 1.9);
    ASSERT_LT(d, 5);
    char *m = metrics(&c.r);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"max_duration\""), 1);
    free(m);
    char *vblog = rig_vb_stop(&c.r);
    rig_stop(&c.r);
    app_stop(&c.app);
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}
