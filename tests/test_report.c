/* SPDX-License-Identifier: MIT */
/*
 * The post-call report (ai/report.h) and its delivery (ai/events.h): the
 * collection caps, the JSON, the outcome mapping, the signature and the
 * backoff; then the delivery thread against a real receiver on loopback
 * (build/vb-example-app): spooled before the first attempt, retried with
 * backoff through 500s and a receiver that is down, delivered after a
 * restart with exactly the stored bytes, dead-lettered on a 4xx, refused
 * and counted beyond the spool's bounds.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ai/events.h"
#include "ai/report.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/metrics.h"
#include "tests/example_app.h"
#include "tests/http_client.h"
#include "tests/proc.h"
#include "tests/test.h"

#define APP_SECRET "report-test-secret"

#if defined(VB_SANITIZE_THREAD)
/* libuv closes its sockets with a raw close(2) system call that
 * ThreadSanitizer does not see, so when this thread later gets the same
 * descriptor number (opendir, a test socket) and closes it, the close is
 * reported as racing with the events thread's socket(). Only races whose
 * stack holds a descriptor close are left out; every other race stands. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:closedir\nrace:^close$\nrace:fclose\n";
}
#endif

static vb_msg_open_t open_msg(void)
{
    vb_msg_open_t o;
    memset(&o, 0, sizeof(o));
    snprintf(o.call_sid, sizeof(o.call_sid), "CA0123456789abcdef");
    snprintf(o.stream_sid, sizeof(o.stream_sid), "MZ42");
    snprintf(o.account_sid, sizeof(o.account_sid), "AC7");
    snprintf(o.from, sizeof(o.from), "+14155550100");
    snprintf(o.to, sizeof(o.to), "+18005550199");
    return o;
}

TEST(report_renders_every_field)
{
    static vb_report_t r;
    vb_msg_open_t o = open_msg();
    uint64_t t0 = 1000000000ull;
    vb_report_init(&r, &o, "front-desk", t0);
    ASSERT_TRUE(vb_report_line(&r, VB_REPORT_ASSISTANT, " Hello there.",
                               t0 + 500000000ull));
    ASSERT_TRUE(vb_report_line(&r, VB_REPORT_CALLER, "Where is A1001?",
                               t0 + 200000000ull));
    ASSERT_TRUE(vb_report_line(&r, VB_REPORT_CALLER, "   ", t0));
    ASSERT_TRUE(vb_report_tool_begin(&r, "fc-1", "lookup_order",
                                     "{\"order_id\":\"A1001\"}",
                                     t0 + 600000000ull));
    vb_report_tool_end(&r, "fc-1", "ok", t0 + 650000000ull);
    ASSERT_TRUE(
        vb_report_tool_begin(&r, "fc-2", "end_call", NULL, t0 + 700000000ull));
    vb_report_usage(&r, 100, 20, -1, 120);
    vb_report_usage(&r, 10, 5, 3, 18);
    vb_msg_close_t cl = {.reason = "stop",
                         .started_unix_ms = 1764648000123,
                         .duration_ms = 12345,
                         .first_audio_ms = 310,
                         .response_p50_ms = 420,
                         .response_p95_ms = 900,
                         .responses = 7};
    size_t len = 0;
    char *s = vb_report_render(&r, &cl, NULL, t0, &len);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(len, strlen(s));
    cJSON *j = cJSON_Parse(s);
    ASSERT_NOT_NULL(j);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "event")),
                  "call.ended");
    cJSON *call = cJSON_GetObjectItem(j, "call");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "sid")),
                  "CA0123456789abcdef");
    ASSERT_STR_EQ(
        cJSON_GetStringValue(cJSON_GetObjectItem(call, "account_sid")), "AC7");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "from")),
                  "+14155550100");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "to")),
                  "+18005550199");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "direction")),
                  "inbound");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "assistant")),
                  "front-desk");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "started_at")),
                  "2025-12-02T04:00:00.123Z");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "ended_at")),
                  "2025-12-02T04:00:12.468Z");
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "duration_s")),
                12.3, 1e-9);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "outcome")),
                  "caller_hangup");
    /* Lines in the order they began, blanks dropped. */
    cJSON *tr = cJSON_GetObjectItem(j, "transcript");
    ASSERT_EQ(cJSON_GetArraySize(tr), 2);
    cJSON *l0 = cJSON_GetArrayItem(tr, 0), *l1 = cJSON_GetArrayItem(tr, 1);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(l0, "role")),
                  "caller");
    ASSERT_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItem(l0, "t_ms")), 200);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(l1, "text")),
                  "Hello there.");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(l1, "role")),
                  "assistant");
    ASSERT_TRUE(cJSON_IsFalse(cJSON_GetObjectItem(j, "truncated")));
    cJSON *tools = cJSON_GetObjectItem(j, "tool_calls");
    ASSERT_EQ(cJSON_GetArraySize(tools), 2);
    cJSON *t0j = cJSON_GetArrayItem(tools, 0);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(t0j, "name")),
                  "lookup_order");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                      cJSON_GetObjectItem(t0j, "arguments"), "order_id")),
                  "A1001");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(t0j, "status")),
                  "ok");
    ASSERT_EQ((int)cJSON_GetNumberValue(cJSON_GetObjectItem(t0j, "latency_ms")),
              50);
    cJSON *t1j = cJSON_GetArrayItem(tools, 1);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(t1j, "status")),
                  "pending");
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(t1j, "latency_ms")));
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(u, "promptTokenCount")),
        110);
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(u, "thoughtsTokenCount")),
        3);
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(u, "totalTokenCount")),
        138);
    cJSON *lat = cJSON_GetObjectItem(j, "latency");
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "first_audio_ms")),
        310);
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "response_ms_p50")),
        420);
    ASSERT_EQ(
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(lat, "response_ms_p95")),
        900);
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(j, "recording")));
    cJSON_Delete(j);
    free(s);
}

TEST(report_caps_say_truncated)
{
    static vb_report_t r;
    vb_report_init(&r, NULL, NULL, 0);
    char line[1000];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    uint32_t fit = 0;
    while (vb_report_line(&r, VB_REPORT_CALLER, line, 0))
        fit++;
    ASSERT_TRUE(r.truncated);
    ASSERT_EQ(fit, VB_REPORT_TEXT_BYTES / 999);
    /* A short line still fits after a long one was refused. */
    ASSERT_TRUE(vb_report_line(&r, VB_REPORT_CALLER, "ok", 0));
    for (uint32_t i = 0; i < VB_REPORT_TOOLS; i++)
        ASSERT_TRUE(vb_report_tool_begin(&r, "id", "t", "{}", 0));
    ASSERT_TRUE(!vb_report_tool_begin(&r, "id", "t", "{}", 0));
    ASSERT_TRUE(r.tools_truncated);
    char *s = vb_report_render(&r, NULL, "shutdown", 0, NULL);
    cJSON *j = cJSON_Parse(s);
    ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
    ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(j, "tool_calls_truncated")));
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "transcript")),
              (int)fit + 1);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "outcome")),
                  "shutdown");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "assistant")),
                  "default");
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(
        cJSON_GetObjectItem(j, "latency"), "first_audio_ms")));
    cJSON_Delete(j);
    free(s);
}

TEST(report_outcomes)
{
    static vb_report_t r;
    vb_report_init(&r, NULL, NULL, 0);
    ASSERT_STR_EQ(vb_report_outcome(&r, "stop"), "caller_hangup");
    ASSERT_STR_EQ(vb_report_outcome(&r, "disconnect"), "caller_hangup");
    ASSERT_STR_EQ(vb_report_outcome(&r, "hangup"), "assistant_hangup");
    ASSERT_STR_EQ(vb_report_outcome(&r, "timeout"), "timeout");
    ASSERT_STR_EQ(vb_report_outcome(&r, "max_duration"), "timeout");
    ASSERT_STR_EQ(vb_report_outcome(&r, "shutdown"), "shutdown");
    ASSERT_STR_EQ(vb_report_outcome(&r, "error"), "failed");
    ASSERT_STR_EQ(vb_report_outcome(&r, "fallback"), "failed");
    ASSERT_STR_EQ(vb_report_outcome(&r, "transfer"), "transferred");
    r.model_hangup = true; /* end_call, then Twilio's stop came first */
    ASSERT_STR_EQ(vb_report_outcome(&r, "stop"), "assistant_hangup");
    r.failure = 2;
    ASSERT_STR_EQ(vb_report_outcome(&r, "hangup"), "failed");
    /* A call without its stream, by its final CallStatus. */
    vb_report_init(&r, NULL, NULL, 0);
    ASSERT_STR_EQ(vb_report_outcome(&r, "completed"), "caller_hangup");
    ASSERT_STR_EQ(vb_report_outcome(&r, "canceled"), "caller_hangup");
    ASSERT_STR_EQ(vb_report_outcome(&r, "busy"), "failed");
    ASSERT_STR_EQ(vb_report_outcome(&r, "expired"), "failed");
}

TEST(report_of_a_call_without_its_stream)
{
    vb_msg_open_t o = open_msg();
    o.stream_sid[0] = '\0';
    size_t len = 0;
    char *s = vb_report_render_unstreamed(&o, "outbound-api", "expired",
                                          1764633600000, 1764633630500, &len);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(len, strlen(s));
    cJSON *j = cJSON_Parse(s);
    ASSERT_NOT_NULL(j);
    const cJSON *call = cJSON_GetObjectItem(j, "call");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "sid")),
                  o.call_sid);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "direction")),
                  "outbound-api");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "outcome")),
                  "failed");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason")),
                  "expired");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "started_at")),
                  "2025-12-02T00:00:00.000Z");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "ended_at")),
                  "2025-12-02T00:00:30.500Z");
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "duration_s")), 30.5);
    ASSERT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "transcript")), 0);
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(j, "recording")));
    cJSON_Delete(j);
    free(s);
}

TEST(events_signature_is_hmac_sha256_of_t_dot_body)
{
    char sig[VB_EVENTS_SIG_MAX];
    ASSERT_EQ(
        vb_events_sign("k", NULL, 1700000000, "{\"a\":1}", 7, sig, sizeof(sig)),
        0);
    /* python3: hmac.new(b'k', b'1700000000.{"a":1}', sha256).hexdigest() */
    ASSERT_STR_EQ(sig, "t=1700000000,v1=1b6ad1bc9bf48c52ce01939866d5877c6cc4"
                       "e87ddad27e16673cb8c4964394a3");
    ASSERT_EQ(vb_events_sign("k", NULL, 1, "x", 1, sig, 10), VB_EINVAL);
}

TEST(events_backoff_doubles_with_jitter_and_caps)
{
    ASSERT_EQ(vb_events_backoff_ms(1, 1000, 60000, UINT32_MAX), 1000);
    ASSERT_EQ(vb_events_backoff_ms(1, 1000, 60000, 0), 500);
    ASSERT_EQ(vb_events_backoff_ms(2, 1000, 60000, UINT32_MAX), 2000);
    ASSERT_EQ(vb_events_backoff_ms(4, 1000, 60000, UINT32_MAX), 8000);
    ASSERT_EQ(vb_events_backoff_ms(30, 1000, 60000, UINT32_MAX), 60000);
    ASSERT_EQ(vb_events_backoff_ms(30, 1000, 60000, 0), 30000);
    for (uint32_t f = 1; f < 40; f++) {
        uint32_t v = vb_events_backoff_ms(f, 1000, 60000, 0x9e3779b9u * f);
        ASSERT_LE(v, 60000);
        ASSERT_GE(v, 500);
    }
}

/* ---- the delivery thread against vb-example-app ---- */

typedef struct rig {
    char dir[300], spool[400], store[400], app_out[400];
    int port;
    app_t app;
    vb_metrics_t *m;
    vb_events_t *e;
} rig_t;

static void rig_init(rig_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s", vb_test_tmpdir());
    snprintf(r->spool, sizeof(r->spool), "%s/spool", r->dir);
    snprintf(r->store, sizeof(r->store), "%s/store", r->dir);
    snprintf(r->app_out, sizeof(r->app_out), "%s/app.out", r->dir);
    r->port = proc_free_port();
    r->m = vb_metrics_create();
    ASSERT_NOT_NULL(r->m);
}

static void rig_events(rig_t *r, uint32_t max_files, uint64_t max_bytes)
{
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/events", r->port);
    vb_events_opts_t o = {.url = url,
                          .spool_dir = r->spool,
                          .secret = APP_SECRET,
                          .max_files = max_files,
                          .max_bytes = max_bytes,
                          .timeout_ms = 3000,
                          .backoff_min_ms = 50,
                          .backoff_max_ms = 400,
                          .max_rejections = 3,
                          .metrics = r->m};
    ASSERT_EQ(vb_events_create(&o, &r->e), 0);
    ASSERT_EQ(vb_events_start(r->e), 0);
}

static void rig_free(rig_t *r)
{
    vb_events_destroy(r->e);
    r->e = NULL;
    app_stop(&r->app);
    vb_metrics_destroy(r->m);
}

static double metric(rig_t *r, const char *name, const char *labels)
{
    char *text = NULL;
    size_t len;
    ASSERT_EQ(vb_metrics_render(r->m, &text, &len), 0);
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n')) {
        if (*p == '\n')
            p++;
        if (strncmp(p, name, nl) != 0 || (p[nl] != '{' && p[nl] != ' '))
            continue;
        const char *sp = strchr(p, ' ');
        if (labels != NULL) {
            const char *l = strstr(p, labels);
            if (l == NULL || l > sp)
                continue;
        }
        sum += atof(sp + 1);
    }
    free(text);
    return sum;
}

static void wait_metric(rig_t *r, const char *name, const char *labels,
                        double at_least, int ms)
{
    double end = tc_now_ms() + ms;
    while (metric(r, name, labels) < at_least) {
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "%s{%s} stayed at %g < %g", name,
                         labels ? labels : "", metric(r, name, labels),
                         at_least);
        usleep(10000);
    }
}

static void wait_metric_eq(rig_t *r, const char *name, double want, int ms)
{
    double end = tc_now_ms() + ms;
    while (metric(r, name, NULL) != want) {
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "%s stayed at %g, not %g", name,
                         metric(r, name, NULL), want);
        usleep(10000);
    }
}

/* Files named *.json in `dir`. */
static int count_json(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0 &&
            de->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

static char *report_for(const char *sid)
{
    static vb_report_t r;
    vb_msg_open_t o = open_msg();
    snprintf(o.call_sid, sizeof(o.call_sid), "%s", sid);
    vb_report_init(&r, &o, NULL, vb_clock_now_ns());
    vb_report_line(&r, VB_REPORT_CALLER, "hello", vb_clock_now_ns());
    return vb_report_render(&r, NULL, "stop", vb_clock_now_ns(), NULL);
}

static void submit(rig_t *r, const char *sid)
{
    char *s = report_for(sid);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(vb_events_submit(r->e, sid, s, strlen(s)), 0);
}

TEST_T(events_deliver_signed_and_delete_the_file, 60)
{
    rig_t r;
    rig_init(&r);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out, NULL);
    rig_events(&r, 0, 0);
    submit(&r, "CAaaa1");
    submit(&r, "CAaaa2");
    cJSON *rep = app_wait_reports(&r.app, 2, proc_ms(10000));
    wait_metric(&r, "vb_events_delivered_total", NULL, 2, proc_ms(5000));
    ASSERT_EQ(count_json(r.spool), 0);
    wait_metric_eq(&r, "vb_events_spooled", 0, proc_ms(5000));
    /* The app checked the signature (401 otherwise); check it here too,
     * with the test's own HMAC over the raw bytes it received. */
    char path[600];
    snprintf(path, sizeof(path), "%s/1-CAaaa1.json", r.store);
    char *body = proc_read_file(path);
    snprintf(path, sizeof(path), "%s/1-CAaaa1.sig", r.store);
    char *sig = proc_read_file(path);
    if (body == NULL) { /* the two may arrive in either order */
        snprintf(path, sizeof(path), "%s/2-CAaaa1.json", r.store);
        body = proc_read_file(path);
        snprintf(path, sizeof(path), "%s/2-CAaaa1.sig", r.store);
        free(sig);
        sig = proc_read_file(path);
    }
    ASSERT_NOT_NULL(body);
    ASSERT_NOT_NULL(sig);
    ASSERT_TRUE(sig_valid(sig, APP_SECRET, body, strlen(body), 60));
    ASSERT_TRUE(!sig_valid(sig, "another-secret", body, strlen(body), 60));
    ASSERT_EQ(app_stat(&r.app, "rejected_signature"), 0);
    ASSERT_EQ(cJSON_GetArraySize(rep), 2);
    cJSON_Delete(rep);
    free(body);
    free(sig);
    rig_free(&r);
}

TEST_T(events_retry_500s_then_deliver_once, 60)
{
    rig_t r;
    rig_init(&r);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out,
              (const char *const[]){"--fail-first", "3", NULL});
    rig_events(&r, 0, 0);
    double t0 = tc_now_ms();
    submit(&r, "CAbbb1");
    cJSON *rep = app_wait_reports(&r.app, 1, proc_ms(15000));
    double took = tc_now_ms() - t0;
    wait_metric(&r, "vb_events_delivered_total", NULL, 1, proc_ms(5000));
    ASSERT_EQ((int)metric(&r, "vb_events_failed_total", "reason=\"http_5xx\""),
              3);
    /* Three waits of at least 25, 50 and 100 ms (half of 50, 100, 200). */
    ASSERT_GE(took, 175);
    ASSERT_EQ(app_stat(&r.app, "failed_on_purpose"), 3);
    ASSERT_EQ(count_json(r.spool), 0);
    /* Acknowledged once, sent once more never. */
    usleep(300000);
    cJSON_Delete(rep);
    rep = app_get(&r.app, "/reports");
    ASSERT_EQ(cJSON_GetArraySize(rep), 1);
    cJSON_Delete(rep);
    rig_free(&r);
}

TEST_T(events_receiver_down_then_back, 60)
{
    rig_t r;
    rig_init(&r);
    rig_events(&r, 0, 0); /* nobody listens on r.port yet */
    submit(&r, "CAccc1");
    wait_metric(&r, "vb_events_failed_total", "reason=\"connect\"", 2,
                proc_ms(10000));
    /* Stored before the first attempt, and still there. */
    ASSERT_EQ(count_json(r.spool), 1);
    ASSERT_EQ((int)metric(&r, "vb_events_spooled", NULL), 1);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out, NULL);
    cJSON *rep = app_wait_reports(&r.app, 1, proc_ms(10000));
    ASSERT_STR_EQ(
        cJSON_GetStringValue(cJSON_GetObjectItem(
            cJSON_GetObjectItem(cJSON_GetArrayItem(rep, 0), "call"), "sid")),
        "CAccc1");
    wait_metric(&r, "vb_events_delivered_total", NULL, 1, proc_ms(5000));
    ASSERT_EQ(count_json(r.spool), 0);
    cJSON_Delete(rep);
    rig_free(&r);
}

TEST_T(events_spool_survives_a_restart_with_the_stored_bytes, 60)
{
    rig_t r;
    rig_init(&r);
    rig_events(&r, 0, 0);
    submit(&r, "CAddd1");
    double end = tc_now_ms() + proc_ms(5000);
    while (count_json(r.spool) < 1 && tc_now_ms() < end)
        usleep(10000);
    ASSERT_EQ(count_json(r.spool), 1);
    vb_events_destroy(r.e); /* the process goes; the file stays */
    r.e = NULL;
    ASSERT_EQ(count_json(r.spool), 1);
    DIR *d = opendir(r.spool);
    struct dirent *de;
    char stored[600] = "";
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".json") && de->d_name[0] != '.')
            snprintf(stored, sizeof(stored), "%s/%.150s", r.spool, de->d_name);
    closedir(d);
    char *bytes = proc_read_file(stored);
    ASSERT_NOT_NULL(bytes);
    /* A write cut by a crash: removed at start, never sent. */
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s/.tmp-123-CAcut.json.1", r.spool);
    FILE *f = fopen(tmp, "w");
    fputs("{\"event\":", f);
    fclose(f);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out, NULL);
    rig_events(&r, 0, 0);
    cJSON *rep = app_wait_reports(&r.app, 1, proc_ms(10000));
    char got_path[600];
    snprintf(got_path, sizeof(got_path), "%s/1-CAddd1.json", r.store);
    char *got = proc_read_file(got_path);
    ASSERT_NOT_NULL(got);
    ASSERT_STR_EQ(got, bytes);
    ASSERT_TRUE(access(tmp, F_OK) != 0);
    wait_metric(&r, "vb_events_delivered_total", NULL, 1, proc_ms(5000));
    ASSERT_EQ(count_json(r.spool), 0);
    ASSERT_EQ(cJSON_GetArraySize(rep), 1);
    cJSON_Delete(rep);
    free(got);
    free(bytes);
    rig_free(&r);
}

TEST_T(events_401_is_retried_until_the_2xx, 60)
{
    rig_t r;
    rig_init(&r);
    /* A receiver refusing for a while (its key not yet rotated, say). */
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out,
              (const char *const[]){"--fail-first", "2", "--fail-status", "401",
                                    NULL});
    rig_events(&r, 0, 0);
    submit(&r, "CAeee0");
    cJSON *rep = app_wait_reports(&r.app, 1, proc_ms(10000));
    wait_metric(&r, "vb_events_delivered_total", NULL, 1, proc_ms(5000));
    ASSERT_EQ((int)metric(&r, "vb_events_failed_total", "reason=\"http_4xx\""),
              2);
    ASSERT_EQ((int)metric(&r, "vb_events_failed_total", "reason=\"rejected\""),
              0);
    ASSERT_EQ(app_stat(&r.app, "failed_on_purpose"), 2);
    ASSERT_EQ(count_json(r.spool), 0);
    char dead[600];
    snprintf(dead, sizeof(dead), "%s/dead", r.spool);
    ASSERT_EQ(count_json(dead), 0);
    cJSON_Delete(rep);
    rig_free(&r);
}

TEST_T(events_4xx_is_dead_lettered_after_the_bound_and_counted, 60)
{
    rig_t r;
    rig_init(&r);
    app_start(&r.app, r.port, "a-different-secret", r.store, r.app_out, NULL);
    rig_events(&r, 0, 0);
    submit(&r, "CAeee1");
    wait_metric(&r, "vb_events_failed_total", "reason=\"rejected\"", 1,
                proc_ms(10000));
    /* Three 401s (.max_rejections): two retried, the third dead-letters. */
    ASSERT_EQ(app_stat(&r.app, "rejected_signature"), 3);
    ASSERT_EQ((int)metric(&r, "vb_events_failed_total", "reason=\"http_4xx\""),
              2);
    ASSERT_EQ(count_json(r.spool), 0);
    char dead[600];
    snprintf(dead, sizeof(dead), "%s/dead", r.spool);
    ASSERT_EQ(count_json(dead), 1);
    ASSERT_EQ((int)metric(&r, "vb_events_delivered_total", NULL), 0);
    rig_free(&r);
}

TEST_T(events_beyond_the_spool_bound_refused_and_counted, 60)
{
    rig_t r;
    rig_init(&r);
    rig_events(&r, 2, 0); /* receiver down: nothing leaves the spool */
    submit(&r, "CAfff1");
    submit(&r, "CAfff2");
    submit(&r, "CAfff3");
    wait_metric(&r, "vb_events_failed_total", "reason=\"spool_full\"", 1,
                proc_ms(5000));
    ASSERT_EQ(count_json(r.spool), 2);
    /* The gauge follows the store on the events thread: wait for it. */
    wait_metric(&r, "vb_events_spooled", NULL, 2, proc_ms(5000));
    ASSERT_EQ((int)metric(&r, "vb_events_spooled", NULL), 2);
    ASSERT_EQ(
        (int)metric(&r, "vb_events_failed_total", "reason=\"spool_full\""), 1);
    /* Bytes bound too (the same registry: the count goes on). */
    vb_events_destroy(r.e);
    r.e = NULL;
    char *one = report_for("CAggg1");
    size_t each = strlen(one);
    free(one);
    rig_events(&r, 100, (uint64_t)(each * 2 + each / 2)); /* 2 already */
    submit(&r, "CAggg1");
    wait_metric(&r, "vb_events_failed_total", "reason=\"spool_full\"", 2,
                proc_ms(5000));
    ASSERT_EQ(count_json(r.spool), 2);
    rig_free(&r);
}

/* ---- vb-example-app itself (the tools and assistant tests use it too) ---- */

static int app_post(int port, const char *secret, int64_t t, const char *body,
                    tc_resp_t *resp)
{
    char sig[VB_EVENTS_SIG_MAX], req[4096];
    ASSERT_EQ(
        vb_events_sign(secret, NULL, t, body, strlen(body), sig, sizeof(sig)),
        0);
    snprintf(req, sizeof(req),
             "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: "
             "application/json\r\nX-Voxbridge-Signature: %s\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             sig, strlen(body), body);
    return tc_request(port, req, resp, proc_ms(5000));
}

TEST_T(example_app_answers_each_event, 60)
{
    rig_t r;
    rig_init(&r);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out,
              (const char *const[]){"--incoming", "name:front-desk", NULL});
    int64_t now = (int64_t)time(NULL);
    tc_resp_t resp;
    ASSERT_EQ(
        app_post(r.port, APP_SECRET, now,
                 "{\"event\":\"call.incoming\",\"call\":{\"sid\":\"CA1\"}}",
                 &resp),
        200);
    ASSERT_STR_CONTAINS(resp.body, "\"assistant\":\"front-desk\"");
    tc_free_resp(&resp);
    ASSERT_EQ(app_post(r.port, APP_SECRET, now,
                       "{\"event\":\"tool.call\",\"call\":{\"sid\":\"CA1\"},"
                       "\"tool\":{\"id\":\"fc-1\",\"name\":\"lookup_order\","
                       "\"arguments\":{\"order_id\":\"A1002\"}}}",
                       &resp),
              200);
    cJSON *o = cJSON_Parse(resp.body);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(o, "status")),
                  "processing");
    cJSON_Delete(o);
    tc_free_resp(&resp);
    ASSERT_EQ(app_post(r.port, APP_SECRET, now,
                       "{\"event\":\"tool.call\",\"tool\":{\"name\":"
                       "\"lookup_order\",\"arguments\":{\"order_id\":\"Z9\"}}}",
                       &resp),
              404);
    ASSERT_STR_CONTAINS(resp.body, "\"error\":\"order not found\"");
    tc_free_resp(&resp);
    /* Wrong key, old t, no header: 401 each, nothing kept. */
    ASSERT_EQ(
        app_post(r.port, "wrong", now, "{\"event\":\"call.ended\"}", &resp),
        401);
    tc_free_resp(&resp);
    ASSERT_EQ(app_post(r.port, APP_SECRET, now - 301,
                       "{\"event\":\"call.ended\"}", &resp),
              401);
    ASSERT_STR_CONTAINS(resp.body, "too old");
    tc_free_resp(&resp);
    ASSERT_EQ(tc_request(r.port,
                         "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         "2\r\n\r\n{}",
                         &resp, proc_ms(5000)),
              401);
    tc_free_resp(&resp);
    ASSERT_EQ(app_stat(&r.app, "rejected_signature"), 3);
    cJSON *reps = app_get(&r.app, "/reports");
    ASSERT_EQ(cJSON_GetArraySize(reps), 0);
    cJSON_Delete(reps);
    rig_free(&r);

    /* 204 and an assistant object from a file. */
    rig_init(&r);
    char file[600];
    snprintf(file, sizeof(file), "%s/assistant.json", r.dir);
    FILE *f = fopen(file, "w");
    fputs("{\"voice\":\"Kore\",\"instructions\":\"Be brief.\"}", f);
    fclose(f);
    char arg[700];
    snprintf(arg, sizeof(arg), "file:%s", file);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out,
              (const char *const[]){"--incoming", arg, NULL});
    ASSERT_EQ(app_post(r.port, APP_SECRET, now, "{\"event\":\"call.incoming\"}",
                       &resp),
              200);
    ASSERT_STR_CONTAINS(resp.body, "\"voice\":\"Kore\"");
    tc_free_resp(&resp);
    rig_free(&r);
    rig_init(&r);
    app_start(&r.app, r.port, APP_SECRET, r.store, r.app_out, NULL);
    ASSERT_EQ(app_post(r.port, APP_SECRET, now, "{\"event\":\"call.incoming\"}",
                       &resp),
              204);
    tc_free_resp(&resp);
    rig_free(&r);
}
