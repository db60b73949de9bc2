/* SPDX-License-Identifier: MIT */
/*
 * HTTP tools and transfer through the real binaries: vb-fake-gemini
 * scripts the model's tool calls, voxbridge posts them to a business app
 * run here (a small threaded HTTP/1.1 server with keep-alive), and vb-sim
 * plays the caller and Twilio's REST API. Checked: the app gets the right
 * body with a valid X-Voxbridge-Signature (recomputed by `openssl dgst`),
 * its answer reaches the fake as the toolResponse with the same id, several
 * calls of one toolCall come back in one toolResponse, a timeout, a 500, a
 * body that is not JSON, one over the size cap, an unknown function and a
 * cancelled call each give the stated outcome; transfer_call redirects the
 * call to <Dial> after the sentence before it has played, an unknown target
 * is refused, and transfer targets without REST credentials stop the
 * server at start.
 */
#include "tests/e2e.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WEBHOOK_SECRET "whsec-e2e-tools"

/* ---- the business app ---- */

#define APP_MAX_REQ 64

typedef struct app_req {
    char path[128];
    char sig[160];
    char body[4096];
    time_t at;
} app_req_t;

typedef struct app {
    int lfd, port;
    pthread_mutex_t mu;
    app_req_t req[APP_MAX_REQ];
    int nreq;
    atomic_int accepts;
} app_t;

static app_t app;

static void reply(int fd, int status, const char *ctype, const char *body)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, ctype, strlen(body));
    send(fd, head, (size_t)n, MSG_NOSIGNAL);
    send(fd, body, strlen(body), MSG_NOSIGNAL);
}

/* One connection: requests one after another (keep-alive). */
static void *app_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static __thread char buf[65536];
    size_t got = 0;
    for (;;) {
        char *end = NULL;
        while ((end = memmem(buf, got, "\r\n\r\n", 4)) == NULL) {
            ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (k <= 0)
                goto out;
            got += (size_t)k;
        }
        buf[got] = '\0';
        size_t head = (size_t)(end + 4 - buf);
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        size_t blen = cl != NULL && cl < end ? (size_t)atol(cl + 17) : 0;
        while (got < head + blen) {
            ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (k <= 0)
                goto out;
            got += (size_t)k;
        }
        app_req_t r;
        memset(&r, 0, sizeof r);
        r.at = time(NULL);
        sscanf(buf, "POST %127s ", r.path);
        const char *sg = strcasestr(buf, "\r\nX-Voxbridge-Signature: ");
        if (sg != NULL && sg < end)
            snprintf(r.sig, sizeof r.sig, "%.*s", (int)strcspn(sg + 25, "\r\n"),
                     sg + 25);
        snprintf(r.body, sizeof r.body, "%.*s", (int)blen, buf + head);
        memmove(buf, buf + head + blen, got - head - blen);
        got -= head + blen;
        pthread_mutex_lock(&app.mu);
        if (app.nreq < APP_MAX_REQ)
            app.req[app.nreq++] = r;
        pthread_mutex_unlock(&app.mu);
        if (strcmp(r.path, "/tools/lookup_order") == 0) {
            cJSON *b = cJSON_Parse(r.body);
            const char *oid = cJSON_GetStringValue(cJSON_GetObjectItem(
                cJSON_GetObjectItem(cJSON_GetObjectItem(b, "tool"),
                                    "arguments"),
                "order_id"));
            char out[256];
            snprintf(out, sizeof out,
                     "{\"order_id\":\"%s\",\"status\":\"shipped\","
                     "\"eta_days\":2}",
                     oid ? oid : "?");
            cJSON_Delete(b);
            reply(fd, 200, "application/json", out);
        } else if (strcmp(r.path, "/tools/fail") == 0) {
            reply(fd, 500, "application/json", "{\"message\":\"db down\"}");
        } else if (strcmp(r.path, "/tools/text") == 0) {
            reply(fd, 200, "text/plain", "shipped, I think");
        } else if (strcmp(r.path, "/tools/list") == 0) {
            reply(fd, 200, "application/json", "[1,2,3]");
        } else if (strcmp(r.path, "/tools/big") == 0) {
            static char big[4200];
            memset(big, 'x', sizeof big - 3);
            big[0] = '"';
            big[sizeof big - 3] = '"';
            big[sizeof big - 2] = '\0';
            reply(fd, 200, "application/json", big);
        } else if (strcmp(r.path, "/tools/wait") == 0) {
            usleep(1500 * 1000); /* within its timeout: answered late */
            reply(fd, 200, "application/json", "{\"waited_ms\":1500}");
        } else if (strcmp(r.path, "/tools/slow") == 0 ||
                   strcmp(r.path, "/tools/cancel_me") == 0) {
            usleep(2500 * 1000); /* past the tool's timeout / the cancel */
            reply(fd, 200, "application/json", "{\"late\":true}");
        } else {
            reply(fd, 404, "application/json", "{}");
        }
    }
out:
    close(fd);
    return NULL;
}

static void *app_accept(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(app.lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        atomic_fetch_add(&app.accepts, 1);
        pthread_t th;
        pthread_create(&th, NULL, app_conn, (void *)(intptr_t)fd);
        pthread_detach(th);
    }
}

static void app_start(void)
{
    memset(&app, 0, sizeof app);
    pthread_mutex_init(&app.mu, NULL);
    app.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(app.lfd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(app.lfd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(app.lfd, (struct sockaddr *)&a, &al);
    app.port = ntohs(a.sin_port);
    pthread_t th;
    pthread_create(&th, NULL, app_accept, NULL);
    pthread_detach(th);
}

static const app_req_t *app_find(const char *path)
{
    for (int i = 0; i < app.nreq; i++)
        if (strcmp(app.req[i].path, path) == 0)
            return &app.req[i];
    return NULL;
}

/* HMAC-SHA256 of "<t>.<body>" by openssl, compared with the header. */
static void assert_signed(const rig_t *r, const app_req_t *q)
{
    char t[32] = "", v1[80] = "";
    ASSERT_EQ(sscanf(q->sig, "t=%31[0-9],v1=%79s", t, v1), 2);
    ASSERT_EQ(strlen(v1), 64);
    long long ts = atoll(t);
    ASSERT_LE(llabs(ts - (long long)q->at), 5);
    char path[400];
    snprintf(path, sizeof path, "%s/signed.txt", r->dir);
    FILE *f = fopen(path, "wb");
    ASSERT_NOT_NULL(f);
    fprintf(f, "%s.%s", t, q->body);
    fclose(f);
    char cmd[800];
    snprintf(cmd, sizeof cmd,
             "openssl dgst -sha256 -hmac '" WEBHOOK_SECRET "' -r < '%s'", path);
    FILE *p = popen(cmd, "r");
    ASSERT_NOT_NULL(p);
    char want[128] = "";
    ASSERT_NOT_NULL(fgets(want, sizeof want, p));
    pclose(p);
    want[64] = '\0';
    ASSERT_STR_EQ(v1, want);
}

/* ---- the fake's toolResponses ---- */

/* The functionResponse for `id` over all toolResponse events, and the
 * number of function responses in its message (*batch). */
static const cJSON *fn_response(const cJSON *evs, const char *id, int *batch,
                                int *seen)
{
    const cJSON *found = NULL;
    *seen = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        if (strcmp(ev_type(e), "toolResponse") != 0)
            continue;
        const cJSON *frs = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "msg"),
                                               "functionResponses");
        const cJSON *fr;
        cJSON_ArrayForEach(fr, frs)
        {
            const char *fid =
                cJSON_GetStringValue(cJSON_GetObjectItem(fr, "id"));
            if (fid != NULL && strcmp(fid, id) == 0) {
                (*seen)++;
                found = cJSON_GetObjectItem(fr, "response");
                *batch = cJSON_GetArraySize(frs);
            }
        }
    }
    return found;
}

static char *resp_text(const cJSON *evs, const char *id, int want_batch)
{
    int batch = 0, seen = 0;
    const cJSON *r = fn_response(evs, id, &batch, &seen);
    if (r == NULL || seen != 1 || (want_batch > 0 && batch != want_batch))
        vb_test_fail(__FILE__, __LINE__,
                     "function response %s: seen %d times, batch %d (want "
                     "%d)",
                     id, seen, batch, want_batch);
    return cJSON_PrintUnformatted(r);
}

static void write_assistants(const rig_t *r, const char *extra)
{
    char text[8192];
    int p = app.port;
    snprintf(text, sizeof text,
             "{\"default\":\"desk\",\"assistants\":{\"desk\":{"
             "\"instructions\":\"You help callers with orders.\","
             "\"tools\":["
             "{\"name\":\"lookup_order\",\"description\":\"Finds an order\","
             "\"parameters\":{\"type\":\"object\",\"properties\":{\"order_id\":"
             "{\"type\":\"string\"}},\"required\":[\"order_id\"]},"
             "\"url\":\"http://127.0.0.1:%d/tools/lookup_order\","
             "\"timeout_ms\":4000},"
             "{\"name\":\"fail\",\"url\":\"http://127.0.0.1:%d/tools/fail\"},"
             "{\"name\":\"text\",\"url\":\"http://127.0.0.1:%d/tools/text\"},"
             "{\"name\":\"list\",\"url\":\"http://127.0.0.1:%d/tools/list\"},"
             "{\"name\":\"big\",\"url\":\"http://127.0.0.1:%d/tools/big\"},"
             "{\"name\":\"slow\",\"url\":\"http://127.0.0.1:%d/tools/slow\","
             "\"timeout_ms\":300},"
             "{\"name\":\"cancel_me\",\"url\":\"http://127.0.0.1:%d/tools/"
             "cancel_me\",\"timeout_ms\":5000},"
             "{\"name\":\"wait\",\"url\":\"http://127.0.0.1:%d/tools/wait\","
             "\"timeout_ms\":5000}]%s}}}",
             p, p, p, p, p, p, p, p, extra);
    write_file(path_in(r, "assistants.json"), text);
}

TEST_T(tools_reach_the_app_signed_and_answer_the_model, 120)
{
    rig_t r;
    rig_init(&r);
    app_start();
    write_assistants(&r, "");
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 6");
    /* One toolCall with two calls, then one each: timeout, not JSON, not
     * an object, too large, unknown; a call cancelled while in flight. */
    write_file(
        r.script,
        "{\"at_ms\":300,\"type\":\"toolCall\",\"calls\":["
        "{\"name\":\"lookup_order\",\"args\":{\"order_id\":\"A-17\"},"
        "\"id\":\"t1\"},{\"name\":\"fail\",\"args\":{},\"id\":\"t2\"}]}\n"
        "{\"at_ms\":400,\"type\":\"toolCall\",\"name\":\"slow\",\"id\":\"t3\"}"
        "\n"
        "{\"at_ms\":500,\"type\":\"toolCall\",\"name\":\"text\",\"id\":\"t4\"}"
        "\n"
        "{\"at_ms\":600,\"type\":\"toolCall\",\"name\":\"big\",\"id\":\"t5\"}\n"
        "{\"at_ms\":700,\"type\":\"toolCall\",\"name\":\"nosuch\",\"id\":"
        "\"t6\"}"
        "\n"
        "{\"at_ms\":800,\"type\":\"toolCall\",\"name\":\"list\",\"id\":\"t8\"}"
        "\n"
        "{\"at_ms\":900,\"type\":\"toolCall\",\"calls\":["
        "{\"name\":\"cancel_me\",\"id\":\"t7\"},"
        "{\"name\":\"lookup_order\",\"args\":{\"order_id\":\"B-2\"},"
        "\"id\":\"t9\"}]}\n"
        "{\"at_ms\":1200,\"type\":\"toolCallCancellation\",\"ids\":[\"t7\"]}"
        "\n"
        /* More calls in one toolCall than can run at once (16). */
        "{\"at_ms\":1400,\"type\":\"toolCall\",\"calls\":["
        "{\"name\":\"nosuch\",\"id\":\"m1\"},{\"name\":\"nosuch\",\"id\":"
        "\"m2\"},{\"name\":\"nosuch\",\"id\":\"m3\"},"
        "{\"name\":\"nosuch\",\"id\":\"m4\"},{\"name\":\"nosuch\",\"id\":"
        "\"m5\"},{\"name\":\"nosuch\",\"id\":\"m6\"},"
        "{\"name\":\"nosuch\",\"id\":\"m7\"},{\"name\":\"nosuch\",\"id\":"
        "\"m8\"},{\"name\":\"nosuch\",\"id\":\"m9\"},"
        "{\"name\":\"nosuch\",\"id\":\"m10\"},{\"name\":\"nosuch\",\"id\":"
        "\"m11\"},{\"name\":\"nosuch\",\"id\":\"m12\"},"
        "{\"name\":\"nosuch\",\"id\":\"m13\"},{\"name\":\"nosuch\",\"id\":"
        "\"m14\"},{\"name\":\"nosuch\",\"id\":\"m15\"},"
        "{\"name\":\"nosuch\",\"id\":\"m16\"},{\"name\":\"nosuch\",\"id\":"
        "\"m17\"},{\"name\":\"nosuch\",\"id\":\"m18\"}"
        "]}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r,
           (const char *const[]){"--assistants", path_in(&r, "assistants.json"),
                                 "--webhook-secret", WEBHOOK_SECRET,
                                 "--tool-max-response-bytes", "1024", NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    char sid[64];
    const char *cs = strstr(out, "call_sid=");
    ASSERT_NOT_NULL(cs);
    snprintf(sid, sizeof sid, "%.*s", (int)strcspn(cs + 9, " \n"), cs + 9);

    /* The app: the right body, signed. */
    pthread_mutex_lock(&app.mu);
    const app_req_t *q = app_find("/tools/lookup_order");
    ASSERT_NOT_NULL(q);
    cJSON *b = cJSON_Parse(q->body);
    ASSERT_NOT_NULL(b);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(b, "event")),
                  "tool.call");
    const cJSON *call = cJSON_GetObjectItem(b, "call");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(call, "sid")), sid);
    ASSERT_NOT_NULL(cJSON_GetObjectItem(call, "account_sid"));
    ASSERT_NOT_NULL(cJSON_GetObjectItem(call, "from"));
    ASSERT_NOT_NULL(cJSON_GetObjectItem(call, "to"));
    ASSERT_NOT_NULL(cJSON_GetObjectItem(call, "direction"));
    const cJSON *tool = cJSON_GetObjectItem(b, "tool");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(tool, "id")), "t1");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(tool, "name")),
                  "lookup_order");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                      cJSON_GetObjectItem(tool, "arguments"), "order_id")),
                  "A-17");
    cJSON_Delete(b);
    for (int i = 0; i < app.nreq; i++)
        assert_signed(&r, &app.req[i]);
    ASSERT_NOT_NULL(app_find("/tools/cancel_me"));
    ASSERT_EQ(app_find("/tools/nosuch"), NULL);
    int nreq = app.nreq;
    pthread_mutex_unlock(&app.mu);
    ASSERT_EQ(nreq, 8); /* t1 t2 t3 t4 t5 t8 t7 t9 */
    /* keep-alive: fewer connections than requests (the slow, cancelled
     * and oversized ones are not reused) */
    ASSERT_LT(atomic_load(&app.accepts), nreq);

    /* The model: each answer once, with its id; a toolCall's calls in one
     * toolResponse; nothing for the cancelled call; no problem seen. */
    cJSON *evs = fake_events(&r);
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "toolResponse") == 0 &&
                                   cJSON_GetObjectItem(e, "problem") != NULL)
        vb_test_fail(__FILE__, __LINE__, "fake: %s",
                     cJSON_GetStringValue(cJSON_GetObjectItem(e, "problem")));
    char *t1 = resp_text(evs, "t1", 2);
    ASSERT_STR_EQ(t1, "{\"order_id\":\"A-17\",\"status\":\"shipped\","
                      "\"eta_days\":2}");
    char *t2 = resp_text(evs, "t2", 2);
    ASSERT_STR_EQ(t2, "{\"error\":\"the tool failed (HTTP 500)\"}");
    char *t3 = resp_text(evs, "t3", 1);
    ASSERT_STR_EQ(t3, "{\"error\":\"the tool did not answer in time (300 "
                      "ms)\"}");
    char *t4 = resp_text(evs, "t4", 1);
    ASSERT_STR_EQ(t4, "{\"error\":\"the tool's answer was not JSON\"}");
    char *t5 = resp_text(evs, "t5", 1);
    ASSERT_STR_EQ(t5, "{\"error\":\"the tool's answer was too large (over "
                      "1024 bytes)\"}");
    char *t6 = resp_text(evs, "t6", 1);
    ASSERT_STR_EQ(t6, "{\"error\":\"unknown function nosuch\"}");
    char *t8 = resp_text(evs, "t8", 1);
    ASSERT_STR_EQ(t8, "{\"output\":[1,2,3]}");
    /* t9 shared its toolCall with the cancelled t7: answered alone */
    char *t9 = resp_text(evs, "t9", 1);
    ASSERT_STR_CONTAINS(t9, "\"order_id\":\"B-2\"");
    int batch = 0, seen = 0;
    ASSERT_NULL(fn_response(evs, "t7", &batch, &seen));
    /* 18 calls in one toolCall: one toolResponse answers all 18, the two
     * past the limit with an error of their own. */
    char *m1 = resp_text(evs, "m1", 18);
    ASSERT_STR_EQ(m1, "{\"error\":\"unknown function nosuch\"}");
    char *m18 = resp_text(evs, "m18", 18);
    ASSERT_STR_CONTAINS(m18, "too many function calls in one toolCall");
    free(m1);
    free(m18);
    ASSERT_EQ(count_type(evs, "toolResponse"), 8);

    /* Metrics per tool and outcome; the log names the failures. */
    ASSERT_EQ(msum(m, "vb_tool_requests_total",
                   "tool=\"lookup_order\",outcome=\"ok\""),
              2);
    ASSERT_EQ(msum(m, "vb_tool_requests_total",
                   "tool=\"fail\",outcome=\"http_error\""),
              1);
    ASSERT_EQ(
        msum(m, "vb_tool_requests_total", "tool=\"slow\",outcome=\"timeout\""),
        1);
    ASSERT_EQ(
        msum(m, "vb_tool_requests_total", "tool=\"text\",outcome=\"not_json\""),
        1);
    ASSERT_EQ(
        msum(m, "vb_tool_requests_total", "tool=\"big\",outcome=\"too_large\""),
        1);
    ASSERT_EQ(msum(m, "vb_tool_requests_total",
                   "tool=\"cancel_me\",outcome=\"cancelled\""),
              1);
    /* t6, and the 16 of the big toolCall that ran (the 2 past the limit
     * never started). */
    ASSERT_EQ(
        msum(m, "vb_tool_requests_total", "tool=\"other\",outcome=\"unknown\""),
        17);
    ASSERT_EQ(msum(m, "vb_tool_latency_seconds_count", "tool=\"lookup_order\""),
              2);
    ASSERT_STR_CONTAINS(vblog, "msg=\"tool failed: the model is told\"");
    ASSERT_STR_CONTAINS(vblog, "outcome=timeout");
    free(t1);
    free(t2);
    free(t3);
    free(t4);
    free(t5);
    free(t6);
    free(t8);
    free(t9);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
    close(app.lfd);
}

TEST_T(transfer_dials_after_the_sentence_and_refuses_unknown_targets, 120)
{
    rig_t r;
    rig_init(&r);
    app_start();
    write_assistants(&r, ",\"transfer\":{\"sales\":\"+14155550100\","
                         "\"support\":\"sip:help@pbx.example.com\"}");
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 8");
    /* An unknown target first (refused, the call goes on), then a 1.5 s
     * sentence and transfer_call(sales); the turn completes at 1.2 s,
     * long before the sentence has played at real time. */
    write_file(r.script,
               "{\"at_ms\":200,\"type\":\"toolCall\",\"name\":"
               "\"transfer_call\",\"args\":{\"target\":\"nobody\"},"
               "\"id\":\"x1\"}\n"
               "{\"at_ms\":300,\"type\":\"audio\",\"ms\":1500,\"hz\":600}\n"
               "{\"at_ms\":500,\"type\":\"toolCall\",\"name\":"
               "\"transfer_call\",\"args\":{\"target\":\"sales\"},"
               "\"id\":\"x2\"}\n"
               "{\"at_ms\":1100,\"type\":\"generationComplete\"}\n"
               "{\"at_ms\":1200,\"type\":\"turnComplete\"}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    char api[64], apil[64];
    int api_port = proc_free_port();
    snprintf(api, sizeof api, "http://127.0.0.1:%d", api_port);
    snprintf(apil, sizeof apil, "127.0.0.1:%d", api_port);
    rig_vb(&r,
           (const char *const[]){"--assistants", path_in(&r, "assistants.json"),
                                 "--webhook-secret", WEBHOOK_SECRET,
                                 "--twilio-api-url", api, NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--api-listen", apil, NULL});
    char *out = sim_wait(&r, &s);
    /* The call's end is counted once voxbridge has seen the stream go. */
    char *m = NULL;
    double until = tc_now_ms() + proc_ms(10000);
    for (;;) {
        m = metrics(&r);
        if (msum(m, "vb_calls_total", NULL) >= 1 || tc_now_ms() > until)
            break;
        free(m);
        usleep(20000);
    }
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    /* The setup declared transfer_call with the targets' names. */
    cJSON *evs = fake_events(&r);
    char *setup = NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (setup == NULL &&
                                   strcmp(ev_type(e), "setup") == 0) setup =
        cJSON_PrintUnformatted(e);
    ASSERT_NOT_NULL(setup);
    ASSERT_STR_CONTAINS(setup, "\"name\":\"transfer_call\"");
    ASSERT_STR_CONTAINS(setup, "\"sales\"");
    char *x1 = resp_text(evs, "x1", 1);
    ASSERT_STR_EQ(x1, "{\"error\":\"unknown transfer target nobody; known: "
                      "sales, support\"}");
    char *x2 = resp_text(evs, "x2", 1);
    ASSERT_STR_CONTAINS(x2, "\"output\":\"Transferring the caller to sales");
    /* REST replaced the TwiML with <Dial>, once, after the sentence: the
     * 1.5 s played in full (mark echoed) and the call left the stream
     * long before the caller's 8 s ran out. */
    char dialed[64];
    if (strcmp(sfield(out, "dialed", dialed, sizeof dialed), "+14155550100") !=
        0)
        vb_test_fail(__FILE__, __LINE__, "dialed=%s\n%s\n%s", dialed, out,
                     vblog);
    ASSERT_EQ(field(out, "rest_requests"), 1);
    ASSERT_EQ(field(out, "twiml_replaced"), 1);
    ASSERT_GE(field(out, "bytes_heard"), 8000 * 14 / 10);
    ASSERT_GE(field(out, "marks_echoed"), 1);
    ASSERT_LT(field(out, "frames_sent"), 6 * 50);
    char after[32];
    ASSERT_GE(atof(sfield(out, "dialed_after_s", after, sizeof after)), 1.5);
    ASSERT_STR_CONTAINS(vblog, "msg=\"call transferred\"");
    ASSERT_STR_CONTAINS(vblog, "msg=\"transfer refused\"");
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"transferred\""), 1);
    free(setup);
    free(x1);
    free(x2);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
    close(app.lfd);
}

TEST(transfer_targets_without_rest_credentials_stop_the_server)
{
    rig_t r;
    rig_init(&r);
    app_start();
    write_assistants(&r, ",\"transfer\":{\"sales\":\"+14155550100\"}");
    char bin[400], listen[64];
    snprintf(bin, sizeof bin, "%s/voxbridge", proc_build_dir());
    snprintf(listen, sizeof listen, "127.0.0.1:%d", proc_free_port());
    const char *argv[] = {bin,
                          "--listen",
                          listen,
                          "--assistants",
                          path_in(&r, "assistants.json"),
                          "--webhook-secret",
                          WEBHOOK_SECRET,
                          NULL};
    const char *env[] = {"GEMINI_API_KEY=" API_KEY, NULL};
    pid_t pid = proc_spawn(argv, env, r.vb_log);
    ASSERT_EQ(proc_reap(pid, proc_ms(10000)), 1);
    char *log = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(log, "assistant \"desk\" has transfer targets");
    ASSERT_STR_CONTAINS(log, "TWILIO_AUTH_TOKEN");
    free(log);
    close(app.lfd);
}

/* The REST client also takes an API key and its secret instead of the
 * auth token: transfer targets with those start. */
TEST(transfer_targets_with_an_api_key_start)
{
    rig_t r;
    rig_init(&r);
    app_start();
    write_assistants(&r, ",\"transfer\":{\"sales\":\"+14155550100\"}");
    char bin[400], listen[64];
    snprintf(bin, sizeof bin, "%s/voxbridge", proc_build_dir());
    int port = proc_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[] = {bin,
                          "--listen",
                          listen,
                          "--assistants",
                          path_in(&r, "assistants.json"),
                          "--webhook-secret",
                          WEBHOOK_SECRET,
                          "--no-gemini-startup-check",
                          "--drain-grace",
                          "0",
                          NULL};
    const char *env[] = {"GEMINI_API_KEY=" API_KEY,
                         "TWILIO_API_KEY=SKe2e0123456789",
                         "TWILIO_API_SECRET=e2e-api-secret", NULL};
    pid_t pid = proc_spawn(argv, env, r.vb_log);
    ASSERT_EQ(proc_wait_port(r.vb_log, pid, proc_ms(10000)), port);
    kill(pid, SIGTERM);
    ASSERT_EQ(proc_reap(pid, proc_ms(30000)), 0);
    char *log = proc_read_file(r.vb_log);
    ASSERT_NOT_NULL(log);
    ASSERT_NULL(strstr(log, "has transfer targets"));
    free(log);
    close(app.lfd);
}

/* The fake's log time ("t", ms) of the first event of `type` whose `k` is
 * `v` (k NULL: any); -1 when none. */
static double ev_time(const cJSON *evs, const char *type, const char *k,
                      const char *v)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        if (strcmp(ev_type(e), type) != 0)
            continue;
        const char *got =
            k ? cJSON_GetStringValue(cJSON_GetObjectItem(e, k)) : NULL;
        if (k == NULL || (got != NULL && strcmp(got, v) == 0))
            return cJSON_GetNumberValue(cJSON_GetObjectItem(e, "t"));
    }
    return -1;
}

/* Two 1.5 s tools in one toolCall run at once: their one toolResponse
 * comes after about the slower one's time, not the sum (bounded loosely:
 * under 2.6 s, the sum being 3 s). */
TEST_T(a_batch_of_slow_tools_takes_the_slowest_not_the_sum, 90)
{
    rig_t r;
    rig_init(&r);
    app_start();
    write_assistants(&r, "");
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 5");
    write_file(r.script, "{\"at_ms\":300,\"type\":\"toolCall\",\"calls\":["
                         "{\"name\":\"wait\",\"id\":\"w1\"},"
                         "{\"name\":\"wait\",\"id\":\"w2\"}]}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r,
           (const char *const[]){"--assistants", path_in(&r, "assistants.json"),
                                 "--webhook-secret", WEBHOOK_SECRET, NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    char *w1 = resp_text(evs, "w1", 2);
    ASSERT_STR_EQ(w1, "{\"waited_ms\":1500}");
    char *w2 = resp_text(evs, "w2", 2);
    ASSERT_STR_EQ(w2, "{\"waited_ms\":1500}");
    double sent = ev_time(evs, "sent", "what", "toolCall");
    double answered = ev_time(evs, "toolResponse", NULL, NULL);
    ASSERT_GE(sent, 0);
    ASSERT_GE(answered - sent, 1500);
    /* The sum would be 3000; sanitizers stretch the overhead only. */
    ASSERT_LT(answered - sent, 1500 + proc_ms(1100));
    free(w1);
    free(w2);
    cJSON_Delete(evs);
    free(vblog);
    free(out);
    close(app.lfd);
}
