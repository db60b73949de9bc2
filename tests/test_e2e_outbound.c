/* SPDX-License-Identifier: MIT */
/*
 * Outbound calls end to end: POST /v1/calls on build/voxbridge's admin
 * listener places the call through `build/vb-sim serve` (Twilio's
 * Calls.json), which calls voxbridge back as the callee; the model is
 * build/vb-fake-gemini and the post-call report goes to
 * build/vb-example-app. Checked: the named assistant answers with its
 * variables substituted (the setup the fake received), the report says
 * outbound-api; the endpoint's 401/400/404/502 answers; the
 * answering-machine paths (voicemail, hang-up, human, a fax, an early
 * machine_start); a tampered vbo answered by the number's assistant; and
 * vb-sim's
 * Calls.json refusing what Twilio refuses, with Twilio's error codes.
 */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/b64.h"
#include "net/outbound.h"
#include "tests/e2e.h"
#include "tests/example_app.h"
#include "tests/http_client.h"

#define ADMIN      "e2e-admin-token"
#define ACCOUNT    "AC0123456789abcdef0123456789abcdef"
#define APP_SECRET "e2e-webhook-secret"

static const char assistants_json[] =
    "{\"default\": \"desk\",\n"
    " \"assistants\": {\n"
    "  \"desk\": {\"instructions\": \"You are the front desk.\"},\n"
    "  \"sales\": {\"instructions\": \"Call {{name}} about order {{order}}; "
    "{{unknown}} stays.\",\n"
    "            \"greeting\": \"Hello {{name}}!\",\n"
    "            \"voicemail\": \"Sorry we missed you, please call back.\"}}}"
    "\n";

typedef struct ctx {
    rig_t r;
    app_t app;
    int app_port, sim_port;
    char store[400], app_out[400], spool[400], url[96], api[96];
} ctx_t;

static void ctx_start(ctx_t *c)
{
    memset(c, 0, sizeof(*c));
    rig_init(&c->r);
    snprintf(c->store, sizeof(c->store), "%s/store", c->r.dir);
    snprintf(c->app_out, sizeof(c->app_out), "%s/app.out", c->r.dir);
    snprintf(c->spool, sizeof(c->spool), "%s/spool", c->r.dir);
    c->app_port = proc_free_port();
    c->sim_port = proc_free_port();
    snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d/events", c->app_port);
    snprintf(c->api, sizeof(c->api), "http://127.0.0.1:%d", c->sim_port);
    const char *file = path_in(&c->r, "assistants.json");
    write_file(file, assistants_json);
    rig_fake(&c->r, (const char *const[]){"--mode", "echo", NULL});
    app_start(&c->app, c->app_port, APP_SECRET, c->store, c->app_out, NULL);
    rig_vb(&c->r,
           (const char *const[]){"--assistants", file, "--admin-token", ADMIN,
                                 "--twilio-account-sid", ACCOUNT,
                                 "--twilio-api-url", c->api, "--events-url",
                                 c->url, "--events-spool", c->spool,
                                 "--webhook-secret", APP_SECRET, NULL},
           NULL);
}

static void ctx_stop(ctx_t *c)
{
    free(rig_vb_stop(&c->r));
    rig_stop(&c->r);
    app_stop(&c->app);
}

/* Starts `vb-sim serve` on the rig's API port with `extra` arguments. */
static void serve_start(ctx_t *c, sim_t *s, int idx, const char *const *extra)
{
    char bin[400], listen[64];
    snprintf(bin, sizeof(bin), "%s/vb-sim", proc_build_dir());
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", c->sim_port);
    const char *audio = path_in(&c->r, "callee.wav");
    make_speech(&c->r, "Hello, who is this?", audio);
    snprintf(s->out, sizeof(s->out), "%s/serve-%d.out", c->r.dir, idx);
    const char *argv[40] = {
        bin,   "serve",   "--api-listen", listen,      "--auth-token",
        TOKEN, "--audio", audio,          "--timeout", "30",
        "-v"};
    int n = 11;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 39; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s->pid = proc_spawn(argv, NULL, s->out);
    char *text;
    proc_wait_log(s->out, "REST API on", s->pid, proc_ms(10000), &text);
    free(text);
}

/* POST /v1/calls with `auth` (NULL: no Authorization) and `body`. */
static int post_calls(const ctx_t *c, int port, const char *auth,
                      const char *body, tc_resp_t *r)
{
    char raw[4096];
    snprintf(raw, sizeof(raw),
             "POST /v1/calls HTTP/1.1\r\nHost: x\r\n%s%s%s"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             auth ? "Authorization: " : "", auth ? auth : "",
             auth ? "\r\n" : "", strlen(body), body);
    (void)c;
    return tc_request(port, raw, r, proc_ms(15000));
}

static const char *setup_prompt(const cJSON *s)
{
    const cJSON *si = cJSON_GetObjectItem(s, "systemInstruction");
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(si, "parts"), 0);
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(p, "text"));
    return t ? t : "";
}

static int count_setups(const rig_t *r, const char *prompt)
{
    cJSON *evs = fake_events(r);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        if (strcmp(ev_type(e), "setup") == 0 &&
            strcmp(setup_prompt(cJSON_GetObjectItem(e, "msg")), prompt) == 0)
            n++;
    }
    cJSON_Delete(evs);
    return n;
}

static const char sales_prompt[] =
    "Call Ann about order A-42; {{unknown}} stays.";

TEST_T(outbound_call_runs_the_named_assistant_with_its_variables, 120)
{
    ctx_t c;
    ctx_start(&c);
    sim_t s;
    serve_start(
        &c, &s, 0,
        (const char *const[]){"--calls", "1", "--hangup-after", "3", NULL});
    tc_resp_t r;
    int st = post_calls(&c, c.r.vb_admin_port, "Bearer " ADMIN,
                        "{\"to\": \"+14155550111\", \"from\": "
                        "\"+14155550100\", \"assistant\": \"sales\", "
                        "\"variables\": {\"name\": \"Ann\", \"order\": "
                        "\"A-42\"}}",
                        &r);
    ASSERT_EQ(st, 201);
    cJSON *j = cJSON_Parse(r.body);
    const char *sid = cJSON_GetStringValue(cJSON_GetObjectItem(j, "call_sid"));
    ASSERT_NOT_NULL(sid);
    ASSERT_EQ(strncmp(sid, "CA", 2), 0);
    char *out = sim_wait(&c.r, &s);
    char got[64];
    snprintf(got, sizeof got, "call_sid=%s ", sid);
    ASSERT_NOT_NULL(strstr(out, got));
    sfield(out, "result", got, sizeof(got));
    ASSERT_STR_EQ(got, "ok");
    ASSERT_GT(field(out, "media_received"), 0);
    /* Status callbacks reached voxbridge, signed: the last, completed,
     * was taken. */
    sfield(out, "call_status_last", got, sizeof(got));
    ASSERT_STR_EQ(got, "completed");
    ASSERT_EQ(field(out, "call_status_http"), 204);
    ASSERT_EQ(field(out, "call_status_callbacks"), 4);
    /* The model got the assistant's text with the variables in it. */
    ASSERT_EQ(count_setups(&c.r, sales_prompt), 1);
    /* And the greeting, substituted too. */
    char *flog = proc_read_file(c.r.fake_log);
    ASSERT_NOT_NULL(flog);
    ASSERT_STR_CONTAINS(flog, "Hello Ann!");
    ASSERT_TRUE(strstr(flog, "{{name}}") == NULL);
    free(flog);
    cJSON *reps = app_wait_reports(&c.app, 1, proc_ms(15000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    const cJSON *call = cJSON_GetObjectItem(rep, "call");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "sid")), sid);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "direction")),
                  "outbound-api");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(rep, "assistant")),
                  "sales");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "to")),
                  "+14155550111");
    char *m = metrics(&c.r);
    ASSERT_GE(msum(m, "vb_http_requests_total", "route=\"calls\",code=\"201\""),
              1);
    free(m);
    cJSON_Delete(reps);
    cJSON_Delete(j);
    tc_free_resp(&r);
    free(out);
    ctx_stop(&c);
}

TEST_T(v1_calls_refuses_what_it_cannot_place, 120)
{
    ctx_t c;
    ctx_start(&c);
    tc_resp_t r;
    char head[256];
    /* No bearer, a wrong one, another scheme: 401 with the challenge. */
    const char *auths[] = {NULL, "Bearer nope", "Basic " ADMIN,
                           "Bearer " ADMIN "x"};
    for (size_t i = 0; i < sizeof(auths) / sizeof(auths[0]); i++) {
        ASSERT_EQ(post_calls(&c, c.r.vb_admin_port, auths[i],
                             "{\"to\":\"+14155550111\",\"from\":"
                             "\"+14155550100\"}",
                             &r),
                  401);
        ASSERT_TRUE(tc_header(r.head, "WWW-Authenticate", head, sizeof head));
        ASSERT_EQ(strncmp(head, "Bearer", 6), 0);
        tc_free_resp(&r);
    }
    /* Not on the public listener. */
    ASSERT_EQ(post_calls(&c, c.r.vb_port, "Bearer " ADMIN,
                         "{\"to\":\"+14155550111\",\"from\":\"+14155550100\"}",
                         &r),
              404);
    tc_free_resp(&r);
    /* Malformed bodies: 400, each with its reason. */
    static const struct {
        const char *body, *reason;
    } bad[] = {
        {"not json", "body: not valid JSON"},
        {"[1]", "body: must be a JSON object"},
        {"{\"from\":\"+14155550100\"}", "to: required"},
        {"{\"to\":\"4155550111\",\"from\":\"+14155550100\"}", "to: must be"},
        {"{\"to\":\"+14155550111\"}", "from: required"},
        {"{\"to\":\"+14155550111\",\"from\":\"+1 415\"}", "from: must be"},
        {"{\"to\":\"sip:bob\",\"from\":\"+14155550100\"}", "to: must be"},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\",\"assistant\":"
         "\"nobody\"}",
         "assistant: no assistant named \"nobody\""},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\",\"variables\":"
         "[]}",
         "variables: must be an object"},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\",\"variables\":"
         "{\"n\":1}}",
         "variables.n: must be a string"},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\",\"variables\":"
         "{\"a b\":\"x\"}}",
         "variables.a b: name must be"},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\",\"colour\":1}",
         "colour: unknown field"},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\","
         "\"machine_detection\":{\"mode\":\"sync\",\"on_machine\":"
         "\"hangup\"}}",
         "machine_detection.mode: must be \"async\""},
        {"{\"to\":\"+14155550111\",\"from\":\"+14155550100\","
         "\"machine_detection\":{\"mode\":\"async\",\"on_machine\":"
         "\"voicemail\"}}",
         "assistant \"desk\" has no voicemail text"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st =
            post_calls(&c, c.r.vb_admin_port, "Bearer " ADMIN, bad[i].body, &r);
        cJSON *e = cJSON_Parse(r.body);
        const char *why =
            cJSON_GetStringValue(cJSON_GetObjectItem(e, "reason"));
        if (st != 400 || why == NULL || strstr(why, bad[i].reason) == NULL)
            vb_test_fail(__FILE__, __LINE__, "body %s: %d %s (want 400 %s)",
                         bad[i].body, st, r.body ? r.body : "", bad[i].reason);
        cJSON_Delete(e);
        tc_free_resp(&r);
    }
    /* Too many variables, and one too long. */
    char big[8192];
    size_t n = (size_t)snprintf(big, sizeof big,
                                "{\"to\":\"+14155550111\",\"from\":"
                                "\"+14155550100\",\"variables\":{");
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%s\"v%d\":\"x\"",
                              i ? "," : "", i);
    snprintf(big + n, sizeof big - n, "}}");
    ASSERT_EQ(post_calls(&c, c.r.vb_admin_port, "Bearer " ADMIN, big, &r), 400);
    ASSERT_NOT_NULL(strstr(r.body, "variables: more than 32"));
    tc_free_resp(&r);
    /* Twilio is not there at all: 502. */
    ASSERT_EQ(post_calls(&c, c.r.vb_admin_port, "Bearer " ADMIN,
                         "{\"to\":\"+14155550111\",\"from\":\"+14155550100\"}",
                         &r),
              502);
    tc_free_resp(&r);
    /* Twilio refusing: 502 with its code and message. */
    sim_t s;
    serve_start(&c, &s, 0,
                (const char *const[]){"--calls", "0", "--unreachable",
                                      "+14155550222", NULL});
    ASSERT_EQ(post_calls(&c, c.r.vb_admin_port, "Bearer " ADMIN,
                         "{\"to\":\"+14155550222\",\"from\":\"+14155550100\"}",
                         &r),
              502);
    cJSON *j = cJSON_Parse(r.body);
    ASSERT_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "code")), 21215);
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "twilio_status")),
        400);
    ASSERT_NOT_NULL(
        strstr(cJSON_GetStringValue(cJSON_GetObjectItem(j, "message")),
               "+14155550222"));
    cJSON_Delete(j);
    tc_free_resp(&r);
    kill(s.pid, SIGTERM);
    ASSERT_EQ(proc_reap(s.pid, proc_ms(10000)), 0);
    /* Nothing reached the model. */
    cJSON *evs = fake_events(&c.r);
    ASSERT_EQ(count_type(evs, "setup"), 0);
    cJSON_Delete(evs);
    char *m = metrics(&c.r);
    ASSERT_GE(msum(m, "vb_http_requests_total", "route=\"calls\",code=\"401\""),
              4);
    ASSERT_GE(msum(m, "vb_http_requests_total", "route=\"calls\",code=\"400\""),
              15);
    ASSERT_GE(msum(m, "vb_http_requests_total", "route=\"calls\",code=\"502\""),
              2);
    free(m);
    ctx_stop(&c);
}

/* One outbound call with machine detection `on_machine` whose callee is
 * `answered_by`; returns vb-sim's output. */
static char *amd_call(ctx_t *c, int idx, const char *on_machine,
                      const char *answered_by, char *sid, size_t sn)
{
    sim_t s;
    serve_start(c, &s, idx,
                (const char *const[]){"--calls", "1", "--answered-by",
                                      answered_by, "--amd-after", "1",
                                      "--hangup-after", "4", NULL});
    char body[512];
    snprintf(body, sizeof body,
             "{\"to\":\"+14155550111\",\"from\":\"+14155550100\","
             "\"assistant\":\"sales\",\"variables\":{\"name\":\"Ann\","
             "\"order\":\"A-42\"},\"machine_detection\":{\"mode\":\"async\","
             "\"on_machine\":\"%s\"}}",
             on_machine);
    tc_resp_t r;
    ASSERT_EQ(post_calls(c, c->r.vb_admin_port, "Bearer " ADMIN, body, &r),
              201);
    cJSON *j = cJSON_Parse(r.body);
    snprintf(sid, sn, "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(j, "call_sid")));
    cJSON_Delete(j);
    tc_free_resp(&r);
    return sim_wait(&c->r, &s);
}

TEST_T(machine_detection_takes_the_configured_path, 180)
{
    ctx_t c;
    ctx_start(&c);
    char sid[64], got[128];
    /* A machine, voicemail: the text is said after the beep, then the
     * call hangs up (the REST update's TwiML). */
    char *out =
        amd_call(&c, 0, "voicemail", "machine_end_beep", sid, sizeof sid);
    sfield(out, "twiml_replaced", got, sizeof got);
    ASSERT_STR_EQ(got, "1");
    ASSERT_NOT_NULL(strstr(out, "said=\"Sorry we missed you, please call "
                                "back.\""));
    ASSERT_LT(field(out, "duration_s"), 4);
    free(out);
    /* A machine, hang-up: Status=completed through the REST API. */
    out = amd_call(&c, 1, "hangup", "machine_start", sid, sizeof sid);
    sfield(out, "ended_by", got, sizeof got);
    ASSERT_STR_EQ(got, "rest");
    ASSERT_EQ(field(out, "says_after_stream"), 0);
    free(out);
    /* A person: the assistant goes on until the callee hangs up. */
    out = amd_call(&c, 2, "voicemail", "human", sid, sizeof sid);
    sfield(out, "ended_by", got, sizeof got);
    ASSERT_STR_EQ(got, "caller");
    sfield(out, "twiml_replaced", got, sizeof got);
    ASSERT_STR_EQ(got, "0");
    ASSERT_EQ(field(out, "rest_requests"), 0);
    ASSERT_GT(field(out, "media_received"), 0);
    free(out);
    ASSERT_EQ(count_setups(&c.r, sales_prompt), 3);
    char *log = proc_read_file(c.r.vb_log);
    ASSERT_NOT_NULL(strstr(log, "machine: leaving the voicemail"));
    ASSERT_NOT_NULL(strstr(log, "machine: hanging up"));
    ASSERT_NOT_NULL(strstr(log, "answered_by=human"));
    free(log);
    ctx_stop(&c);
}

/* POST Calls.json to `vb-sim serve` with `form` (Basic auth as the
 * account when `auth`); returns the status and the parsed answer. */
static int calls_json(const ctx_t *c, bool auth, const char *form, cJSON **out)
{
    char cred[160], b64[256], raw[4096];
    snprintf(cred, sizeof cred, "%s:%s", ACCOUNT, TOKEN);
    b64[vb_b64_encode(b64, (const uint8_t *)cred, strlen(cred))] = '\0';
    snprintf(raw, sizeof(raw),
             "POST /2010-04-01/Accounts/%s/Calls.json HTTP/1.1\r\nHost: x\r\n"
             "%s%s%sContent-Type: application/x-www-form-urlencoded\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             ACCOUNT, auth ? "Authorization: Basic " : "", auth ? b64 : "",
             auth ? "\r\n" : "", strlen(form), form);
    tc_resp_t r;
    int st = tc_request(c->sim_port, raw, &r, proc_ms(10000));
    *out = cJSON_Parse(r.body);
    tc_free_resp(&r);
    ASSERT_NOT_NULL(*out);
    return st;
}

TEST_T(vb_sim_calls_json_refuses_what_twilio_refuses, 60)
{
    ctx_t c;
    memset(&c, 0, sizeof(c));
    rig_init(&c.r);
    c.sim_port = proc_free_port();
    sim_t s;
    serve_start(&c, &s, 0, (const char *const[]){"--calls", "0", NULL});
#define TO   "To=%2B14155550111"
#define FROM "&From=%2B14155550100"
#define URL  "&Url=http%3A%2F%2F127.0.0.1%3A9%2Fwebhook%2Fvoice"
    /* Each refusal with Twilio's status, code and a message; nothing is
     * placed. */
    static const struct {
        const char *form;
        int code;
        const char *says;
    } bad[] = {
        {FROM URL, 21201, "No 'To' number"},
        {"To=" FROM URL, 21201, "No 'To' number"},
        {"To=4155550111" FROM URL, 21211, "Invalid 'To' Phone Number"},
        {"To=%2B1415555011100000000" FROM URL, 21211, "Invalid 'To'"},
        {"To=sip%3Abob" FROM URL, 21211, "Invalid 'To'"},
        {TO URL, 21213, "No 'From' number"},
        {TO "&From=%2B04155550100" URL, 21212, "Invalid From Number"},
        {TO "&From=%2B1415x" URL, 21212, "Invalid From Number"},
        {TO FROM, 21205, "Url parameter is required"},
        {TO FROM "&Url=", 21205, "Url parameter is required"},
        {TO FROM "&Url=ftp%3A%2F%2Fh%2F", 21205, "Url is not a valid URL"},
        {TO FROM URL "&StatusCallbackEvent=ringing%20bogus", 21626,
         "Invalid StatusCallbackEvent: bogus"},
        {TO FROM URL "&StatusCallbackEvent=answered&StatusCallbackEvent=done",
         21626, "Invalid StatusCallbackEvent: done"},
        {TO FROM URL "&MachineDetection=Maybe", 21650,
         "MachineDetection must be"},
        {TO FROM URL "&MachineDetection=enable", 21650,
         "MachineDetection must be"},
        {TO FROM URL "&MachineDetection=Enable&AsyncAmd=yes", 21651,
         "AsyncAmd must be true or false"},
    };
#undef TO
#undef FROM
#undef URL
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *j;
        int st = calls_json(&c, true, bad[i].form, &j);
        int code = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "code"));
        const char *msg =
            cJSON_GetStringValue(cJSON_GetObjectItem(j, "message"));
        if (st != 400 || code != bad[i].code || msg == NULL ||
            strstr(msg, bad[i].says) == NULL ||
            (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "status")) != 400)
            vb_test_fail(__FILE__, __LINE__,
                         "%s: %d code %d \"%s\" (want 400 %d \"%s\")",
                         bad[i].form, st, code, msg ? msg : "", bad[i].code,
                         bad[i].says);
        cJSON_Delete(j);
    }
    /* Without credentials: 401 (20003), before the body is looked at. */
    cJSON *j;
    ASSERT_EQ(calls_json(&c, false, "To=", &j), 401);
    ASSERT_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "code")), 20003);
    cJSON_Delete(j);
    kill(s.pid, SIGTERM);
    ASSERT_EQ(proc_reap(s.pid, proc_ms(10000)), 0);
    char *out = proc_read_file(s.out);
    ASSERT_NOT_NULL(out);
    ASSERT_NULL(strstr(out, "call_sid="));
    free(out);
}

/* The outbound parameters in the webhook URL are taken only with their
 * MAC: the URL voxbridge gave Twilio for a "sales" call, replayed with
 * one character of `vbo` changed (and so signed by vb-sim as Twilio
 * would sign any URL it is given), is answered by the number's assistant,
 * not by the one written in, and without its variables. */
TEST_T(a_tampered_outbound_parameter_gets_the_numbers_assistant, 120)
{
    ctx_t c;
    ctx_start(&c);
    sim_t s;
    serve_start(
        &c, &s, 0,
        (const char *const[]){"--calls", "1", "--hangup-after", "2", NULL});
    tc_resp_t r;
    ASSERT_EQ(post_calls(&c, c.r.vb_admin_port, "Bearer " ADMIN,
                         "{\"to\": \"+14155550111\", \"from\": "
                         "\"+14155550100\", \"assistant\": \"sales\", "
                         "\"variables\": {\"name\": \"Ann\", \"order\": "
                         "\"A-42\"}}",
                         &r),
              201);
    tc_free_resp(&r);
    char *out = sim_wait(&c.r, &s);
    ASSERT_EQ(count_setups(&c.r, sales_prompt), 1);
    /* The voice webhook's URL, as vb-sim (-v) posted it. */
    const char *p = strstr(out, "/webhook/voice?");
    ASSERT_NOT_NULL(p);
    while (p > out && p[-1] != ' ')
        p--;
    char url[2048];
    snprintf(url, sizeof url, "%.*s", (int)strcspn(p, " \r\n"), p);
    ASSERT_EQ(strncmp(url, "http://", 7), 0);
    free(out);
    char *v = strstr(url, "?" VB_OUTBOUND_PARAM "=");
    ASSERT_NOT_NULL(v);
    ASSERT_NOT_NULL(strstr(url, "&" VB_OUTBOUND_MAC_PARAM "="));
    v += strlen("?" VB_OUTBOUND_PARAM "=") + 2;
    *v = *v == 'A' ? 'B' : 'A';

    const char *audio = path_in(&c.r, "caller.wav");
    make_sox(audio, "synth 2 sine 300 vol 0.3");
    sim_start(&c.r, &s, 1, audio, NULL,
              (const char *const[]){"--webhook", url, "--tail", "1", NULL});
    out = sim_wait(&c.r, &s);
    char got[64];
    sfield(out, "result", got, sizeof got);
    ASSERT_STR_EQ(got, "ok");
    /* The default ("desk") answered; "sales" was not set up again. */
    ASSERT_EQ(count_setups(&c.r, "You are the front desk."), 1);
    ASSERT_EQ(count_setups(&c.r, sales_prompt), 1);
    char *log = proc_read_file(c.r.vb_log);
    ASSERT_NOT_NULL(log);
    const char *w = strstr(log, "msg=\"outbound call parameters refused: "
                                "the number's assistant answers\"");
    ASSERT_NOT_NULL(w);
    ASSERT_STR_CONTAINS(w, "err=EAUTH");
    free(log);
    free(out);
    ctx_stop(&c);
}

/* The rest of the answering-machine table (docs/outbound.md): a fax is
 * hung up on even when the call asked for the voicemail, and a first
 * verdict of machine_start in voicemail mode leaves the voicemail at once
 * (DetectMessageEnd normally waits for the beep; voxbridge does not wait
 * for a second verdict). */
TEST_T(machine_detection_fax_hangs_up_and_machine_start_leaves_voicemail, 150)
{
    ctx_t c;
    ctx_start(&c);
    char sid_fax[64], sid_start[64], got[128];
    char *out = amd_call(&c, 0, "voicemail", "fax", sid_fax, sizeof sid_fax);
    sfield(out, "ended_by", got, sizeof got);
    ASSERT_STR_EQ(got, "rest");
    sfield(out, "twiml_replaced", got, sizeof got);
    ASSERT_STR_EQ(got, "0");
    ASSERT_EQ(field(out, "says_after_stream"), 0);
    ASSERT_NULL(strstr(out, "Sorry we missed you"));
    free(out);
    out = amd_call(&c, 1, "voicemail", "machine_start", sid_start,
                   sizeof sid_start);
    sfield(out, "twiml_replaced", got, sizeof got);
    ASSERT_STR_EQ(got, "1");
    ASSERT_NOT_NULL(strstr(out, "said=\"Sorry we missed you, please call "
                                "back.\""));
    ASSERT_LT(field(out, "duration_s"), 4);
    free(out);
    /* Each logged with its CallSid and verdict, on one line. */
    char *log = proc_read_file(c.r.vb_log);
    ASSERT_NOT_NULL(log);
    char line[1024];
    const char *l = strstr(log, "msg=\"machine: hanging up\"");
    ASSERT_NOT_NULL(l);
    snprintf(line, sizeof line, "%.*s", (int)strcspn(l, "\n"), l);
    ASSERT_STR_CONTAINS(line, "answered_by=fax");
    ASSERT_STR_CONTAINS(line, sid_fax);
    l = strstr(log, "msg=\"machine: leaving the voicemail\"");
    ASSERT_NOT_NULL(l);
    snprintf(line, sizeof line, "%.*s", (int)strcspn(l, "\n"), l);
    ASSERT_STR_CONTAINS(line, "answered_by=machine_start");
    ASSERT_STR_CONTAINS(line, sid_start);
    free(log);
    ctx_stop(&c);
}
