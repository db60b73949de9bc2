/* SPDX-License-Identifier: MIT */
/*
 * The ingress thread over real loopback sockets: routing, limits, Twilio
 * signatures and TwiML, readiness, metrics (checked by promtool), CORS,
 * the admin listener, and the WebSocket hand-off to a lane consumer thread
 * that proves the bytes written after the 101 arrive intact.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "net/form.h"
#include "net/http.h"
#include "net/ingress.h"
#include "net/twilio_sig.h"
#include "tests/http_client.h"
#include "tests/test.h"

#define TOKEN  "test-auth-token"
#define PUBLIC "https://voice.example.test"
#define SECRET "test-stream-secret"
#define MS     5000 /* generous per-step deadline */

extern char **environ;

/* ---- a lane consumer: the stand-in for the twilio-io thread ---- */

typedef struct got {
    uint32_t lane, flags;
    char data[8192];
    size_t len, extra_len;
} got_t;

typedef struct consumer {
    uv_loop_t loop;
    uv_async_t stop;
    uint32_t n;
    vb_chan_t rings[4];
    uv_async_t wakes[4];
    vb_ingress_lane_t sinks[4];
    pthread_t thr;
    bool running;
    bool hold; /* leave messages in the ring (ring-full test) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t expect; /* bytes to read per connection, extra included */
    got_t got[8];
    int ngot;
} consumer_t;

static void consume_one(consumer_t *c, const vb_msg_t *m)
{
    vb_msg_conn_t conn;
    ASSERT_EQ(vb_msg_conn_get(m, &conn), 0);
    got_t g;
    memset(&g, 0, sizeof(g));
    g.lane = conn.lane;
    g.flags = conn.flags;
    g.extra_len = conn.extra_len;
    if (conn.extra_len > 0)
        memcpy(g.data, conn.extra, conn.extra_len);
    g.len = conn.extra_len;
    pthread_mutex_lock(&c->mu);
    size_t expect = c->expect;
    pthread_mutex_unlock(&c->mu);
    double end = tc_now_ms() + MS;
    while (g.len < expect && tc_now_ms() < end) {
        ssize_t k =
            tc_recv_some(conn.fd, g.data + g.len, sizeof(g.data) - g.len, MS);
        if (k <= 0)
            break;
        g.len += (size_t)k;
    }
    /* Prove the other direction too. */
    char ack[8300];
    memcpy(ack, "ACK:", 4);
    memcpy(ack + 4, g.data, g.len); /* binary: no string functions */
    ssize_t n = (ssize_t)g.len + 4;
    ASSERT_EQ(send(conn.fd, ack, (size_t)n, MSG_NOSIGNAL), n);
    vb_msg_conn_release(&conn);
    pthread_mutex_lock(&c->mu);
    if (c->ngot < 8)
        c->got[c->ngot++] = g;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void wake_cb(uv_async_t *a)
{
    consumer_t *c = a->loop->data;
    vb_ring_t *r = &((vb_chan_t *)a->data)->ring;
    if (c->hold)
        return;
    vb_msg_t *m;
    while ((m = vb_ring_peek(r)) != NULL) {
        consume_one(c, m);
        vb_ring_release(r);
    }
}

static void cstop_cb(uv_async_t *a)
{
    consumer_t *c = a->data;
    for (uint32_t i = 0; i < c->n; i++)
        uv_close((uv_handle_t *)&c->wakes[i], NULL);
    uv_close((uv_handle_t *)&c->stop, NULL);
}

static void *consumer_main(void *arg)
{
    consumer_t *c = arg;
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void consumer_start(consumer_t *c, uint32_t n, uint32_t slots)
{
    c->n = n;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    ASSERT_EQ(uv_loop_init(&c->loop), 0);
    c->loop.data = c;
    for (uint32_t i = 0; i < n; i++) {
        vb_chan_config_t cc = {"ingress_to_twilio", slots, VB_MSG_DATA_MAX, 0,
                               NULL};
        ASSERT_EQ(vb_chan_init(&c->rings[i], &cc), 0);
        ASSERT_EQ(uv_async_init(&c->loop, &c->wakes[i], wake_cb), 0);
        c->wakes[i].data = &c->rings[i];
        c->rings[i].bell = &c->wakes[i]; /* consumed without a stage */
        c->sinks[i].conn = &c->rings[i];
    }
    ASSERT_EQ(uv_async_init(&c->loop, &c->stop, cstop_cb), 0);
    c->stop.data = c;
    ASSERT_EQ(pthread_create(&c->thr, NULL, consumer_main, c), 0);
    c->running = true;
}

/* After the producer stopped: stop the thread, then release leftovers. */
static void consumer_stop(consumer_t *c)
{
    if (!c->running)
        return;
    uv_async_send(&c->stop);
    ASSERT_EQ(pthread_join(c->thr, NULL), 0);
    ASSERT_EQ(uv_loop_close(&c->loop), 0);
    for (uint32_t i = 0; i < c->n; i++) {
        vb_msg_t *m;
        while ((m = vb_chan_peek(&c->rings[i])) != NULL) {
            vb_msg_conn_t conn;
            ASSERT_EQ(vb_msg_conn_get(m, &conn), 0);
            vb_msg_conn_release(&conn);
            vb_chan_release(&c->rings[i]);
        }
        vb_chan_destroy(&c->rings[i]);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    c->running = false;
}

static got_t consumer_wait(consumer_t *c, int k)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += MS / 1000 + 1;
    pthread_mutex_lock(&c->mu);
    while (c->ngot < k)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0)
            break;
    int have = c->ngot;
    got_t g = have >= k ? c->got[k - 1] : (got_t){0};
    pthread_mutex_unlock(&c->mu);
    ASSERT_GE(have, k);
    return g;
}

/* ---- the fixture: config, metrics, key, ingress, consumer ---- */

typedef struct fx {
    vb_config_t cfg;
    vb_metrics_t *m;
    vb_twilio_sig_key_t key;
    vb_ingress_t *g;
    consumer_t cons;
    int port, admin_port;
    char log_path[512];
} fx_t;

static void clear_env(void)
{
    for (;;) {
        char *victim = NULL;
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "VOXBRIDGE_", 10) == 0 ||
                strncmp(*e, "TWILIO_", 7) == 0 ||
                strncmp(*e, "GEMINI_", 7) == 0) {
                victim = *e;
                break;
            }
        if (victim == NULL)
            return;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(victim, "="), victim);
        unsetenv(name);
    }
}

typedef struct fx_opts {
    const char *args[24]; /* extra flags, NULL-terminated */
    uint32_t ring_slots;  /* 0: 16 */
    bool no_lanes;
    bool hold;
    bool no_admin; /* no --metrics-listen unless args give one */
} fx_opts_t;

static fx_t *fx_start(const fx_opts_t *o)
{
    fx_t *f = calloc(1, sizeof(*f));
    ASSERT_NOT_NULL(f);
    clear_env();
    snprintf(f->log_path, sizeof(f->log_path), "%s/log.txt", vb_test_tmpdir());
    int lfd = open(f->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    ASSERT_GE(lfd, 0);
    vb_log_set_fd(lfd);
    const char *argv[40] = {"voxbridge", "--listen", "127.0.0.1:0",
                            "--instance-id", "i1"};
    int argc = 5;
    bool admin = false;
    for (int i = 0; o && o->args[i]; i++) {
        admin = admin || strcmp(o->args[i], "--metrics-listen") == 0;
        argv[argc++] = o->args[i];
    }
    /* The admin endpoints are private by default: tests read them from an
     * admin listener. */
    if (!admin && !(o && o->no_admin)) {
        argv[argc++] = "--metrics-listen";
        argv[argc++] = "127.0.0.1:0";
    }
    char err[256];
    ASSERT_EQ(vb_config_load(&f->cfg, argc, argv, err, sizeof(err)), 0);
    f->m = vb_metrics_create();
    ASSERT_NOT_NULL(f->m);
    ASSERT_EQ(vb_twilio_sig_key_init(&f->key, SECRET), 0);
    f->cons.hold = o && o->hold;
    if (!(o && o->no_lanes))
        consumer_start(&f->cons, (uint32_t)f->cfg.lanes,
                       o && o->ring_slots ? o->ring_slots : 16);
    vb_ingress_opts_t io = {
        .cfg = &f->cfg,
        .metrics = f->m,
        .stream_key = &f->key,
        .lanes = (o && o->no_lanes) ? NULL : f->cons.sinks,
    };
    ASSERT_EQ(vb_ingress_create(&io, &f->g), 0);
    ASSERT_EQ(vb_ingress_start(f->g), 0);
    ASSERT_EQ(vb_ingress_start(f->g), VB_EBUSY);
    f->port = vb_ingress_port(f->g, false);
    f->admin_port = vb_ingress_port(f->g, true);
    ASSERT_GT(f->port, 0);
    return f;
}

static void fx_stop(fx_t *f)
{
    vb_ingress_stop(f->g);
    vb_ingress_stop(f->g); /* idempotent */
    consumer_stop(&f->cons);
    vb_ingress_destroy(f->g);
    vb_metrics_destroy(f->m);
    vb_config_free(&f->cfg);
    free(f);
}

static bool log_contains(fx_t *f, const char *needle)
{
    FILE *fp = fopen(f->log_path, "r");
    if (fp == NULL)
        return false;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return strstr(buf, needle) != NULL;
}

/* ---- request builders ---- */

/* A signed webhook POST for `path` with form `body`; `sig` overrides the
 * signature ("" = no header, NULL = correct). */
static char *webhook(const char *path, const char *body, const char *sig)
{
    char url[512], good[VB_TWILIO_SIG_LEN + 1];
    snprintf(url, sizeof(url), "%s%s", PUBLIC, path);
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, body, strlen(body), 0), 0);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, &f, good), 0);
    vb_form_free(&f);
    const char *use = sig ? sig : good;
    char hdr[128] = "";
    if (*use)
        snprintf(hdr, sizeof(hdr), "X-Twilio-Signature: %s\r\n", use);
    size_t cap = strlen(body) + 1024;
    char *req = malloc(cap);
    snprintf(req, cap,
             "POST %s HTTP/1.1\r\nHost: internal:8080\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "%sContent-Length: %zu\r\n\r\n%s",
             path, hdr, strlen(body), body);
    return req;
}

#define CALL_BODY(sid)                                                   \
    "AccountSid=AC0&ApiVersion=2010-04-01&CallSid=" sid                  \
    "&CallStatus=ringing&Called=%2B18005550100&Caller=%2B14155550123"    \
    "&Direction=inbound&From=%2B14155550123&FromCity=&To=%2B18005550100" \
    "&ToCity=SAN+FRANCISCO"

/* Upgrade request for `path`; sig: NULL = correct wss signature,
 * "" = none. */
static void upgrade_req(char *out, size_t n, const char *path, const char *sig,
                        const char *extra_headers)
{
    char url[512], good[VB_TWILIO_SIG_LEN + 1];
    snprintf(url, sizeof(url), "wss://voice.example.test%s", path);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, NULL, good), 0);
    const char *use = sig ? sig : good;
    char hdr[128] = "";
    if (*use)
        snprintf(hdr, sizeof(hdr), "X-Twilio-Signature: %s\r\n", use);
    snprintf(out, n,
             "GET %s HTTP/1.1\r\nHost: voice.example.test\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n%s%s\r\n",
             path, hdr, extra_headers ? extra_headers : "");
}

/* Pulls `attr="..."` following `after` out of a TwiML document. */
static bool twiml_attr(const char *doc, const char *after, const char *attr,
                       char *out, size_t n)
{
    const char *p = strstr(doc, after);
    if (p == NULL)
        return false;
    char key[64];
    snprintf(key, sizeof(key), "%s=\"", attr);
    p = strstr(p, key);
    if (p == NULL)
        return false;
    p += strlen(key);
    size_t len = strcspn(p, "\"");
    if (len >= n)
        return false;
    memcpy(out, p, len);
    out[len] = '\0';
    return true;
}

static char *get_metrics(int port)
{
    tc_resp_t r;
    ASSERT_EQ(tc_request(port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS), 200);
    return r.body; /* caller frees */
}

static int promtool_check(const char *text, char *log, size_t logsz)
{
    char path[512], cmd[1200];
    snprintf(path, sizeof(path), "%s/metrics.txt", vb_test_tmpdir());
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    ASSERT_NOT_NULL(p);
    size_t n = fread(log, 1, logsz - 1, p);
    log[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const fx_opts_t secure = {.args = {"--public-url", PUBLIC,
                                          "--twilio-auth-token", TOKEN,
                                          "--stream-secret", SECRET, NULL}};

static void healthz_ok(int port)
{
    tc_resp_t r;
    ASSERT_EQ(tc_request(port, "GET /healthz HTTP/1.1\r\n\r\n", &r, MS), 200);
    ASSERT_STR_EQ(r.body, "ok\n");
    tc_free_resp(&r);
}

/* ---- tests ---- */

TEST_T(ingress_pipelined_requests, 30)
{
    fx_t *f = fx_start(&secure);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                       "HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /test/system HTTP/1.1\r\nHost: a\r\n\r\n");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "ok\n");
    tc_free_resp(&r);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "ready\n");
    tc_free_resp(&r);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 404);
    tc_free_resp(&r);
    ASSERT_EQ(tc_read_resp_ex(c, &r, MS, true), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_CONTAINS(r.head, "Content-Length: 3\r\n");
    tc_free_resp(&r);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 404); /* admin endpoints are not public */
    tc_free_resp(&r);
    tc_close(c);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.body, "\"signatures\":{\"state\":\"verified\"");
    /* The effective connection limits: derived, per peer 1/8 (>= 16). */
    ASSERT_STR_CONTAINS(r.body, "\"admin_on_public\":false");
    ASSERT_STR_CONTAINS(r.body, "\"request_timeout_ms\":30000");
    ASSERT_STR_CONTAINS(r.body, "\"min_body_rate\":1024");
    ASSERT_TRUE(strstr(r.body, "\"max_connections\":0,") == NULL);
    tc_free_resp(&r);
    fx_stop(f);
}

TEST_T(ingress_bytewise_signed_webhook, 60)
{
    fx_t *f = fx_start(&secure);
    char *req = webhook("/webhook/voice", CALL_BODY("CA1234"), NULL);
    tc_conn_t *c = tc_open(f->port);
    /* Two requests, one byte at a time. */
    tc_send_bytewise(c->fd, req);
    tc_send_bytewise(c->fd, "GET /healthz HTTP/1.1\r\n\r\n");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_CONTAINS(r.head, "Content-Type: text/xml");
    ASSERT_STR_CONTAINS(r.body, "\"><Stream url=\"wss://");
    tc_free_resp(&r);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 200);
    tc_free_resp(&r);
    tc_close(c);
    free(req);
    fx_stop(f);
}

TEST_T(ingress_signed_webhook_twiml_and_token, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC "/", "--twilio-auth-token",
                            TOKEN, "--say", "Hello & <welcome>",
                            "--fallback-say", "Bye \"now\"", NULL}};
    fx_t *f = fx_start(&o);
    /* From carries every XML special; it must come back escaped. */
    const char *body = "CallSid=CAfeed01&From=%26%3C%3E%22%27&To=%2B1";
    char *req = webhook("/webhook/voice", body, NULL);
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Response><Say>Hello &amp; &lt;welcome&gt;"
                                "</Say><Connect action=\"https://"
                                "voice.example.test/webhook/voice/"
                                "stream-ended/i1\"><Stream");
    ASSERT_STR_CONTAINS(r.body, "<Parameter name=\"From\" "
                                "value=\"&amp;&lt;&gt;&quot;&apos;\"/>");
    ASSERT_STR_CONTAINS(r.body, "<Parameter name=\"CallSid\" "
                                "value=\"CAfeed01\"/>");
    /* What follows the stream is the action's answer, never verbs after
     * </Connect>. */
    ASSERT_STR_CONTAINS(r.body, "</Stream></Connect></Response>");
    ASSERT_TRUE(strstr(r.body, "Bye") == NULL);
    char url[256], token[128];
    ASSERT_TRUE(twiml_attr(r.body, "<Stream", "url", url, sizeof(url)));
    ASSERT_STR_EQ(url, "wss://voice.example.test/media-stream/i1/0");
    ASSERT_TRUE(twiml_attr(r.body, "name=\"streamToken\"", "value", token,
                           sizeof(token)));
    int64_t now = (int64_t)vb_clock_wall_s();
    ASSERT_EQ(
        vb_twilio_sig_token_verify(&f->key, token, "CAfeed01", 0, now, NULL),
        0);
    /* Valid for --stream-token-ttl (300 s), not beyond. */
    ASSERT_EQ(vb_twilio_sig_token_verify(&f->key, token, "CAfeed01", 0,
                                         now + 310, NULL),
              VB_TWILIO_TOKEN_EXPIRED);
    ASSERT_EQ(
        vb_twilio_sig_token_verify(&f->key, token, "CAother", 0, now, NULL),
        VB_TWILIO_TOKEN_FORGED);
    tc_free_resp(&r);
    free(req);
    ASSERT_TRUE(log_contains(f, "msg=\"call answered\" call=CAfeed01 lane=0"));
    fx_stop(f);
}

/* The <Connect action>: <Hangup/> alone after an end this instance
 * intended, the fallback text after a failure or for a call it does not
 * know; signed like every webhook. */
TEST_T(ingress_connect_action_answers_how_the_stream_ended, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--instance-id", "i1", "--fallback-say",
                            "Bye now", NULL}};
    fx_t *f = fx_start(&o);
    const char *path = "/webhook/voice/stream-ended/i1";
    tc_resp_t r;
    /* Unknown here (its stream never ran on this instance): fallback. */
    char *req = webhook(path, CALL_BODY("CA301"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.head, "Content-Type: text/xml");
    ASSERT_STR_CONTAINS(r.body,
                        "<Response><Say>Bye now</Say><Hangup/></Response>");
    tc_free_resp(&r);
    /* The model ended it: nothing more. */
    vb_ingress_call_ended(f->g, "CA301", true);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Response><Hangup/></Response>");
    ASSERT_TRUE(strstr(r.body, "Bye") == NULL);
    tc_free_resp(&r);
    free(req);
    /* A failure: the fallback; another instance's name is answered the
     * same way (the state is the CallSid's here). */
    vb_ingress_call_ended(f->g, "CA302", false);
    req =
        webhook("/webhook/voice/stream-ended/other", CALL_BODY("CA302"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Say>Bye now</Say><Hangup/>");
    tc_free_resp(&r);
    free(req);
    /* Unsigned: 403, counted. */
    req = webhook(path, CALL_BODY("CA301"), "bad");
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 403);
    tc_free_resp(&r);
    free(req);
    req = webhook("/webhook/voice/stream-ended/", CALL_BODY("CA301"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 404);
    tc_free_resp(&r);
    free(req);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m,
                        "vb_stream_ended_answers_total{answer=\"hangup\"} 1\n");
    ASSERT_STR_CONTAINS(
        m, "vb_stream_ended_answers_total{answer=\"fallback\"} 2\n");
    ASSERT_STR_CONTAINS(
        m, "vb_twilio_signature_failures_total{route=\"stream_ended\"} 1\n");
    free(m);
    fx_stop(f);
}

/* A final status callback for a call whose stream never came frees its
 * capacity at once; one for a call that streamed, or that this instance
 * never answered, frees nothing. */
TEST_T(ingress_final_status_before_the_stream_frees_the_slot, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-calls", "1", NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char *req = webhook("/webhook/voice", CALL_BODY("CA501"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Connect ");
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    tc_free_resp(&r);
    /* Another call's completion, and a non-final status: still full. */
    req = webhook("/webhook/status",
                  "CallSid=CA999&CallStatus=completed&AccountSid=AC0", NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
    tc_free_resp(&r);
    free(req);
    req = webhook("/webhook/status",
                  "CallSid=CA501&CallStatus=in-progress&AccountSid=AC0", NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    tc_free_resp(&r);
    /* The caller hung up during the greeting. */
    req = webhook("/webhook/status",
                  "CallSid=CA501&CallStatus=completed&AccountSid=AC0", NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    /* Repeated: counted once. */
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(vb_ingress_calls_pending(f->g), 0);
    /* A call that streamed here (its end recorded) frees nothing more. */
    req = webhook("/webhook/voice", CALL_BODY("CA502"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    tc_free_resp(&r);
    free(req);
    vb_ingress_call_ended(f->g, "CA502", true);
    req = webhook("/webhook/status",
                  "CallSid=CA502&CallStatus=completed&AccountSid=AC0", NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(vb_ingress_calls_pending(f->g), 1);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_calls_unstreamed_total 1\n");
    free(m);
    ASSERT_TRUE(log_contains(f, "capacity freed"));
    fx_stop(f);
}

/* A stream URL Twilio cannot use is a start-up warning that says what to
 * do; a usable one is none. */
TEST_T(ingress_warns_at_start_of_a_stream_url_twilio_cannot_use, 30)
{
    static const struct {
        const char *url, *needle;
    } cases[] = {
        {"http://voice.example.test", "--public-url is http://"},
        {"https://voice.example.test:8443", "port other than 443"},
        {"", "no --public-url"},
        {"https://voice.example.test:443/", NULL},
        {PUBLIC, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_opts_t o = {.args = {"--public-url", cases[i].url, NULL}};
        fx_t *f = fx_start(&o);
        bool warned = log_contains(f, "level=warn") &&
                      (log_contains(f, "Twilio cannot stream to") ||
                       log_contains(f, "Twilio streams only"));
        if (cases[i].needle != NULL) {
            ASSERT_TRUE(warned);
            ASSERT_TRUE(log_contains(f, cases[i].needle));
        } else if (warned) {
            vb_test_fail(__FILE__, __LINE__, "warned for %s", cases[i].url);
        }
        fx_stop(f);
    }
    /* Behind a TLS proxy without --trust-proxy: the first webhook says
     * so. */
    fx_opts_t o = {.args = {"--public-url", "", NULL}};
    fx_t *f = fx_start(&o);
    const char *req = "POST /webhook/voice HTTP/1.1\r\nHost: voice.example.test"
                      "\r\nX-Forwarded-Proto: https\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      "Content-Length: 12\r\n\r\nCallSid=CA77";
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "url=\"ws://voice.example.test/");
    tc_free_resp(&r);
    ASSERT_TRUE(log_contains(f, "came through a TLS proxy but --trust-proxy "
                                "is off"));
    fx_stop(f);
}

/* The <Stream statusCallback>: named in the TwiML, its events logged
 * (an error with Twilio's text, at warn) and counted, signed like every
 * webhook. */
TEST_T(ingress_stream_status_callback_logs_and_counts, 30)
{
    fx_opts_t o = {
        .args = {"--public-url", PUBLIC, "--twilio-auth-token", TOKEN, NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char *req = webhook("/webhook/voice", CALL_BODY("CA601"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    char cb[256];
    ASSERT_TRUE(
        twiml_attr(r.body, "<Stream", "statusCallback", cb, sizeof(cb)));
    ASSERT_STR_EQ(cb, PUBLIC "/webhook/status/stream");
    tc_free_resp(&r);
    free(req);
    static const char *const bodies[] = {
        "AccountSid=AC0&CallSid=CA601&StreamSid=MZ1&StreamEvent=stream-started"
        "&Timestamp=2026-12-02T05%3A00%3A00Z",
        "AccountSid=AC0&CallSid=CA601&StreamSid=MZ1&StreamEvent=stream-error"
        "&StreamError=Stream+-+Protocol+-+Invalid+Message",
        "AccountSid=AC0&CallSid=CA601&StreamSid=MZ1&StreamEvent=stream-stopped",
        "AccountSid=AC0&CallSid=CA601&StreamSid=MZ1&StreamEvent=stream-new",
    };
    for (size_t i = 0; i < 4; i++) {
        req = webhook("/webhook/status/stream", bodies[i], NULL);
        ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
        tc_free_resp(&r);
        free(req);
    }
    req = webhook("/webhook/status/stream", bodies[0], "bad");
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 403);
    tc_free_resp(&r);
    free(req);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(
        m, "vb_twilio_stream_events_total{event=\"stream-started\"} 1\n");
    ASSERT_STR_CONTAINS(
        m, "vb_twilio_stream_events_total{event=\"stream-error\"} 1\n");
    ASSERT_STR_CONTAINS(
        m, "vb_twilio_stream_events_total{event=\"stream-stopped\"} 1\n");
    ASSERT_STR_CONTAINS(m,
                        "vb_twilio_stream_events_total{event=\"other\"} 1\n");
    ASSERT_STR_CONTAINS(
        m, "vb_twilio_signature_failures_total{route=\"stream_status\"} 1\n");
    free(m);
    ASSERT_TRUE(log_contains(f, "level=warn msg=\"twilio stream error\" "
                                "call=CA601"));
    ASSERT_TRUE(log_contains(f, "Stream - Protocol - Invalid Message"));
    fx_stop(f);
}

/* --busy-answer say keeps the spoken busy message. */
TEST_T(ingress_busy_answer_say_speaks_the_busy_message, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-calls", "1", "--busy-answer", "say",
                            "--busy-say", "All busy & sorry", NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char *req = webhook("/webhook/voice", CALL_BODY("CA401"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    tc_free_resp(&r);
    free(req);
    req = webhook("/webhook/voice", CALL_BODY("CA402"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Response><Say>All busy &amp; sorry</Say>"
                                "<Hangup/></Response>");
    tc_free_resp(&r);
    free(req);
    fx_stop(f);
}

/* A POST to `path` signed with `alg` and `key` over `signed_url`, with
 * `extra` header lines. */
static char *signed_post(const char *path, const char *body,
                         const char *signed_url, int alg, const char *key,
                         const char *extra)
{
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, body, strlen(body), 0), 0);
    /* The signed string, built here: URL then name+value sorted. */
    char data[4096];
    size_t n = (size_t)snprintf(data, sizeof data, "%s", signed_url);
    const vb_form_pair_t *v[64];
    ASSERT_LE(f.n, 64);
    for (size_t i = 0; i < f.n; i++)
        v[i] = &f.pairs[i];
    for (size_t i = 1; i < f.n; i++)
        for (size_t j = i; j > 0 && strcmp(v[j - 1]->name, v[j]->name) > 0;
             j--) {
            const vb_form_pair_t *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    for (size_t i = 0; i < f.n; i++)
        n += (size_t)snprintf(data + n, sizeof data - n, "%s%s", v[i]->name,
                              v[i]->value);
    vb_form_free(&f);
    unsigned char mac[32];
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(
        alg == VB_TWILIO_SIG_HMAC_SHA256 ? MBEDTLS_MD_SHA256 : MBEDTLS_MD_SHA1);
    ASSERT_EQ(mbedtls_md_hmac(md, (const unsigned char *)key, strlen(key),
                              (const unsigned char *)data, n, mac),
              0);
    char sig[64];
    size_t olen;
    ASSERT_EQ(mbedtls_base64_encode((unsigned char *)sig, sizeof sig, &olen,
                                    mac, mbedtls_md_get_size(md)),
              0);
    size_t cap = strlen(body) + 2048;
    char *req = malloc(cap);
    snprintf(req, cap,
             "POST %s HTTP/1.1\r\nHost: internal:8080\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\n%sContent-Length: %zu\r\n\r\n%s",
             path, sig, extra ? extra : "", strlen(body), body);
    return req;
}

#define SHARED_SID "KS0123456789abcdef0123456789abcdef"
#define SETTINGS_256                                        \
    "X-Twilio-Webhooks-Signature-Settings: key=" SHARED_SID \
    ",algorithm=HMAC_SHA256\r\n"

TEST_T(ingress_every_signature_form_the_sdk_accepts, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--public-url-aliases",
                            "https://second.example.test/, "
                            "https://third.example.test",
                            "--twilio-shared-keys",
                            SHARED_SID ":shared-one,KSffffffffffffffffffffffff"
                                       "ffffffff:shared-two",
                            NULL}};
    fx_t *f = fx_start(&o);
    const char *body = CALL_BODY("CA5");
    tc_resp_t r;
    struct {
        const char *path, *signed_url, *key, *extra;
        int alg, status;
    } v[] = {
        /* The Auth Token, HMAC-SHA1, over the public URL. */
        {"/webhook/voice", PUBLIC "/webhook/voice", TOKEN, NULL,
         VB_TWILIO_SIG_HMAC_SHA1, 200},
        /* A second hostname on the number. */
        {"/webhook/voice", "https://second.example.test/webhook/voice", TOKEN,
         NULL, VB_TWILIO_SIG_HMAC_SHA1, 200},
        {"/webhook/voice", "https://third.example.test:443/webhook/voice",
         TOKEN, NULL, VB_TWILIO_SIG_HMAC_SHA1, 200},
        {"/webhook/voice", "https://fourth.example.test/webhook/voice", TOKEN,
         NULL, VB_TWILIO_SIG_HMAC_SHA1, 403},
        /* A webhook URL configured with a trailing '/'. */
        {"/webhook/voice/", PUBLIC "/webhook/voice/", TOKEN, NULL,
         VB_TWILIO_SIG_HMAC_SHA1, 200},
        /* The query as the SDK's URL parser writes it (' as %27), and as
         * its legacy querystring does ('+' as %20). */
        {"/webhook/voice?n=It's+here", PUBLIC "/webhook/voice?n=It%27s+here",
         TOKEN, NULL, VB_TWILIO_SIG_HMAC_SHA1, 200},
        {"/webhook/voice?n=It's+here", PUBLIC "/webhook/voice?n=It's%20here",
         TOKEN, NULL, VB_TWILIO_SIG_HMAC_SHA1, 200},
        /* A Webhook Setting's SharedKey with HMAC-SHA256. */
        {"/webhook/voice", PUBLIC "/webhook/voice", "shared-one", SETTINGS_256,
         VB_TWILIO_SIG_HMAC_SHA256, 200},
        /* ... only with the key the header names. */
        {"/webhook/voice", PUBLIC "/webhook/voice", "shared-two", SETTINGS_256,
         VB_TWILIO_SIG_HMAC_SHA256, 403},
        /* ... and not with the Auth Token once the header is there. */
        {"/webhook/voice", PUBLIC "/webhook/voice", TOKEN, SETTINGS_256,
         VB_TWILIO_SIG_HMAC_SHA256, 403},
        {"/webhook/voice", PUBLIC "/webhook/voice", "shared-one",
         "X-Twilio-Webhooks-Signature-Settings: key=" SHARED_SID
         ",algorithm=HMAC_SHA512\r\n",
         VB_TWILIO_SIG_HMAC_SHA256, 403},
        /* Status callbacks take the same forms. */
        {"/webhook/status/", PUBLIC "/webhook/status/", "shared-one",
         SETTINGS_256, VB_TWILIO_SIG_HMAC_SHA256, 204},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        const char *b = strncmp(v[i].path, "/webhook/status", 15) == 0
                            ? "CallSid=CA5&CallStatus=completed&AccountSid=AC0"
                            : body;
        char *req = signed_post(v[i].path, b, v[i].signed_url, v[i].alg,
                                v[i].key, v[i].extra);
        int st = tc_request(f->port, req, &r, MS);
        if (st != v[i].status)
            fprintf(stderr, "case %zu: %s signed over %s\n", i, v[i].path,
                    v[i].signed_url);
        ASSERT_EQ(st, v[i].status);
        tc_free_resp(&r);
        free(req);
    }
    /* The first refusal is logged with its reason (the rest are within
     * the same second, rate-limited). */
    ASSERT_TRUE(log_contains(f, "route=voice reason=mismatch"));
    fx_stop(f);
}

TEST_T(ingress_bad_signature_403_counted, 30)
{
    fx_t *f = fx_start(&secure);
    tc_resp_t r;
    char *bad = webhook("/webhook/voice", CALL_BODY("CA1"),
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    ASSERT_EQ(tc_request(f->port, bad, &r, MS), 403);
    tc_free_resp(&r);
    char *none = webhook("/webhook/voice", CALL_BODY("CA1"), "");
    ASSERT_EQ(tc_request(f->port, none, &r, MS), 403);
    tc_free_resp(&r);
    /* Signed over the URL the socket saw instead of --public-url. */
    char url[128], sig[VB_TWILIO_SIG_LEN + 1];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/webhook/voice", f->port);
    vb_form_t form;
    ASSERT_EQ(
        vb_form_parse(&form, CALL_BODY("CA1"), strlen(CALL_BODY("CA1")), 0), 0);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, &form, sig), 0);
    vb_form_free(&form);
    char *local = webhook("/webhook/voice", CALL_BODY("CA1"), sig);
    ASSERT_EQ(tc_request(f->port, local, &r, MS), 403);
    tc_free_resp(&r);
    /* One changed byte in the body. */
    char *tampered = webhook("/webhook/voice", CALL_BODY("CA1"), NULL);
    char *p = strstr(tampered, "CallSid=CA1");
    p[10] = '2';
    ASSERT_EQ(tc_request(f->port, tampered, &r, MS), 403);
    tc_free_resp(&r);
    /* Status callbacks are checked too. */
    char *st = webhook("/webhook/status", "CallSid=CA1&CallStatus=completed",
                       "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    ASSERT_EQ(tc_request(f->port, st, &r, MS), 403);
    tc_free_resp(&r);
    healthz_ok(f->port);

    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_twilio_signature_failures_total{route=\"voice\"}"
                           " 4\n");
    ASSERT_STR_CONTAINS(m,
                        "vb_twilio_signature_failures_total{route=\"status\"}"
                        " 1\n");
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"voice\",code="
                           "\"403\"} 4\n");
    ASSERT_STR_CONTAINS(m, "vb_insecure_mode 0\n");
    free(m);
    free(bad);
    free(none);
    free(local);
    free(tampered);
    free(st);
    fx_stop(f);
}

TEST_T(ingress_status_callback, 30)
{
    fx_t *f = fx_start(&secure);
    tc_resp_t r;
    const char *statuses[] = {"ringing", "in-progress", "completed",
                              "completed", "weird"};
    for (size_t i = 0; i < 5; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "CallSid=CA9&CallStatus=%s&SequenceNumber=%zu&CallDuration=7",
                 statuses[i], i);
        char *req = webhook("/webhook/status", body, NULL);
        ASSERT_EQ(tc_request(f->port, req, &r, MS), 204);
        ASSERT_EQ(r.body_len, 0);
        tc_free_resp(&r);
        free(req);
    }
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_twilio_call_status_total{status=\"completed\"}"
                           " 2\n");
    ASSERT_STR_CONTAINS(m, "vb_twilio_call_status_total{status=\"in-progress\"}"
                           " 1\n");
    ASSERT_STR_CONTAINS(m, "vb_twilio_call_status_total{status=\"other\"} 1\n");
    free(m);
    ASSERT_TRUE(log_contains(f, "call=CA9 status=completed seq=3"));
    fx_stop(f);
}

TEST_T(ingress_limits_and_errors, 60)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-header-bytes", "1024",
                            "--max-body-bytes", "1024", "--header-timeout-ms",
                            "300", NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;

    /* Oversized head. */
    char big[4096];
    int n = snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nX-Pad: ");
    memset(big + n, 'p', 2000);
    snprintf(big + n + 2000, 64, "\r\n\r\n");
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, big);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 431);
    ASSERT_STR_CONTAINS(r.head, "Connection: close");
    tc_free_resp(&r);
    ASSERT_TRUE(tc_wait_closed(c, MS));
    tc_close(c);
    healthz_ok(f->port);

    /* Oversized body, declared. */
    c = tc_open(f->port);
    tc_send_str(c->fd, "POST /webhook/voice HTTP/1.1\r\nContent-Type: "
                       "application/x-www-form-urlencoded\r\n"
                       "Content-Length: 5000\r\n\r\n");
    memset(big, 'b', 4096);
    tc_send(c->fd, big, 4096);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 413);
    tc_free_resp(&r);
    ASSERT_TRUE(tc_wait_closed(c, MS));
    tc_close(c);
    healthz_ok(f->port);

    /* Slow head: closed after the timeout with 408. */
    c = tc_open(f->port);
    tc_send_str(c->fd, "GET /healthz HTTP/1.1\r\nHost: slow\r\n");
    double t0 = tc_now_ms();
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    double waited = tc_now_ms() - t0;
    ASSERT_EQ(r.status, 408);
    ASSERT_GE(waited, 250);
    tc_free_resp(&r);
    ASSERT_TRUE(tc_wait_closed(c, MS));
    tc_close(c);
    healthz_ok(f->port);

    /* Garbage. */
    ASSERT_EQ(tc_request(f->port, "HELLO\r\n\r\n", &r, MS), 400);
    tc_free_resp(&r);

    /* Unknown route, wrong methods. */
    ASSERT_EQ(tc_request(f->port, "GET /nowhere HTTP/1.1\r\n\r\n", &r, MS),
              404);
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->port,
                         "POST /healthz HTTP/1.1\r\n"
                         "Content-Length: 0\r\n\r\n",
                         &r, MS),
              405);
    ASSERT_STR_CONTAINS(r.head, "Allow: GET, HEAD\r\n");
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->port, "DELETE /webhook/voice HTTP/1.1\r\n\r\n", &r, MS),
        405);
    ASSERT_STR_CONTAINS(r.head, "Allow: POST, GET\r\n");
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->port,
                         "POST /media-stream HTTP/1.1\r\n"
                         "Content-Length: 0\r\n\r\n",
                         &r, MS),
              405);
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "PUT /metrics HTTP/1.1\r\n\r\n", &r, MS),
        405);
    tc_free_resp(&r);
    /* Wrong content type. */
    ASSERT_EQ(tc_request(f->port,
                         "POST /webhook/voice HTTP/1.1\r\n"
                         "Content-Type: application/json\r\n"
                         "Content-Length: 2\r\n\r\n{}",
                         &r, MS),
              415);
    tc_free_resp(&r);

    /* Still answering everyone, including on a kept-alive connection. */
    c = tc_open(f->port);
    for (int i = 0; i < 3; i++) {
        tc_send_str(c->fd, "GET /healthz HTTP/1.1\r\n\r\n");
        ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
        ASSERT_EQ(r.status, 200);
        tc_free_resp(&r);
    }
    tc_close(c);

    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"other\",code="
                           "\"431\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"other\",code="
                           "\"413\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"other\",code="
                           "\"408\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"other\",code="
                           "\"404\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"healthz\",code="
                           "\"405\"} 1\n");
    free(m);
    fx_stop(f);
}

TEST_T(ingress_metrics_pass_promtool, 30)
{
    fx_t *f = fx_start(&secure);
    tc_resp_t r;
    char *req = webhook("/webhook/voice", CALL_BODY("CA77"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(tc_request(f->port, "GET /x HTTP/1.1\r\n\r\n", &r, MS), 404);
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.head, "Content-Type: text/plain; version=0.0.4; "
                                "charset=utf-8\r\n");
    ASSERT_STR_CONTAINS(r.body, "# TYPE vb_http_requests_total counter\n");
    ASSERT_STR_CONTAINS(r.body,
                        "# TYPE vb_http_request_duration_seconds histogram\n");
    ASSERT_STR_CONTAINS(
        r.body, "vb_http_request_duration_seconds_count{route=\"voice\"} 1\n");
    ASSERT_STR_CONTAINS(r.body,
                        "vb_http_requests_total{route=\"voice\",code=\"200\"}"
                        " 1\n");
    ASSERT_STR_CONTAINS(r.body, "vb_calls_rejected_total{reason=\"busy\"} 0\n");
    ASSERT_STR_CONTAINS(r.body, "vb_stream_handoffs_total{result=\"ok\"} 0\n");
    char log[8192];
    int st = promtool_check(r.body, log, sizeof(log));
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "promtool: %s", log);
    tc_free_resp(&r);
    fx_stop(f);
}

TEST_T(ingress_websocket_handoff_bytes_intact, 30)
{
    fx_opts_t o = secure;
    o.args[6] = "--lanes";
    o.args[7] = "2";
    o.args[8] = NULL;
    fx_t *f = fx_start(&o);
    /* What a Twilio stream sends first, plus binary bytes of every value. */
    char payload[600];
    size_t plen = 0;
    const char *json = "{\"event\":\"connected\",\"protocol\":\"Call\"}";
    memcpy(payload, json, strlen(json));
    plen = strlen(json);
    for (int i = 0; i < 256; i++)
        payload[plen++] = (char)i;
    pthread_mutex_lock(&f->cons.mu);
    f->cons.expect = plen;
    pthread_mutex_unlock(&f->cons.mu);

    char up[1024];
    upgrade_req(up, sizeof(up), "/media-stream/1", NULL, NULL);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, up);
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 101);
    char acc[64];
    ASSERT_TRUE(tc_header(r.head, "Sec-WebSocket-Accept", acc, sizeof(acc)));
    ASSERT_STR_EQ(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ASSERT_STR_CONTAINS(r.head, "Upgrade: websocket\r\n");
    ASSERT_STR_CONTAINS(r.head, "Connection: Upgrade\r\n");
    tc_free_resp(&r);
    /* Written after the 101, in two pieces. */
    tc_send(c->fd, payload, 100);
    usleep(20000);
    tc_send(c->fd, payload + 100, plen - 100);
    got_t g = consumer_wait(&f->cons, 1);
    ASSERT_EQ(g.lane, 1);
    ASSERT_EQ(g.flags & VB_MSG_CONN_SIGNED, VB_MSG_CONN_SIGNED);
    ASSERT_EQ(g.len, plen);
    ASSERT_MEM_EQ(g.data, payload, plen);
    /* The lane thread answers on the same socket. */
    char ack[1024];
    size_t got = 0;
    while (got < plen + 4) {
        ssize_t k = tc_recv_some(c->fd, ack + got, sizeof(ack) - got, MS);
        ASSERT_GT(k, 0);
        got += (size_t)k;
    }
    ASSERT_MEM_EQ(ack, "ACK:", 4);
    ASSERT_MEM_EQ(ack + 4, payload, plen);
    ASSERT_TRUE(tc_wait_closed(c, MS));
    tc_close(c);

    /* Bytes sent in the same write as the upgrade travel with the fd. */
    char both[2048];
    upgrade_req(up, sizeof(up), "/media-stream/0", "", NULL);
    size_t ul = strlen(up);
    memcpy(both, up, ul);
    memcpy(both + ul, payload, plen);
    c = tc_open(f->port);
    tc_send(c->fd, both, ul + plen);
    ASSERT_EQ(tc_read_resp_ex(c, &r, MS, true), 0);
    ASSERT_EQ(r.status, 101);
    tc_free_resp(&r);
    g = consumer_wait(&f->cons, 2);
    ASSERT_EQ(g.lane, 0);
    ASSERT_EQ(g.flags, 0); /* no signature header: the token decides */
    ASSERT_EQ(g.len, plen);
    ASSERT_MEM_EQ(g.data, payload, plen);
    tc_close(c);

    healthz_ok(f->port);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_stream_handoffs_total{result=\"ok\"} 2\n");
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"stream\",code="
                           "\"101\"} 2\n");
    free(m);
    fx_stop(f);
}

/* By default the stream token authenticates a stream: an upgrade whose
 * signature does not verify is counted and logged, and still upgraded
 * (without the signed flag). */
TEST_T(ingress_upgrade_bad_signature_counted_not_refused_by_default, 30)
{
    fx_t *f = fx_start(&secure);
    tc_resp_t r;
    char up[1024];
    upgrade_req(up, sizeof(up), "/media-stream/0",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, up);
    ASSERT_EQ(tc_read_resp_ex(c, &r, MS, true), 0);
    ASSERT_EQ(r.status, 101);
    tc_free_resp(&r);
    got_t g = consumer_wait(&f->cons, 1);
    ASSERT_EQ(g.lane, 0);
    ASSERT_EQ(g.flags, 0); /* not signed */
    tc_close(c);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_twilio_signature_failures_total{route="
                           "\"stream\"} 1\n");
    free(m);
    ASSERT_TRUE(log_contains(f, "action=\"token decides\""));
    fx_stop(f);
}

TEST_T(ingress_websocket_upgrade_validation, 30)
{
    fx_opts_t strict = secure;
    for (int i = 0;; i++)
        if (strict.args[i] == NULL) {
            strict.args[i] = "--stream-require-signature";
            break;
        }
    fx_t *f = fx_start(&strict);
    tc_resp_t r;
    char up[1024];
    /* Bad signature over the upgrade. */
    upgrade_req(up, sizeof(up), "/media-stream",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL);
    ASSERT_EQ(tc_request(f->port, up, &r, MS), 403);
    tc_free_resp(&r);
    /* None at all, when signatures are required. */
    upgrade_req(up, sizeof(up), "/media-stream", "", NULL);
    ASSERT_EQ(tc_request(f->port, up, &r, MS), 403);
    tc_free_resp(&r);
    /* Trailing-slash variant of a good signature is accepted. */
    char url[128], sig[VB_TWILIO_SIG_LEN + 1];
    snprintf(url, sizeof(url), "wss://voice.example.test/media-stream/");
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, NULL, sig), 0);
    upgrade_req(up, sizeof(up), "/media-stream", sig, NULL);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, up);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 101);
    tc_free_resp(&r);
    tc_close(c);
    /* An https:// signature (the naive one) is not. */
    snprintf(url, sizeof(url), "https://voice.example.test/media-stream");
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, NULL, sig), 0);
    upgrade_req(up, sizeof(up), "/media-stream", sig, NULL);
    ASSERT_EQ(tc_request(f->port, up, &r, MS), 403);
    tc_free_resp(&r);

    static const char *const bad[][2] = {
        {"GET /media-stream HTTP/1.1\r\nHost: h\r\n\r\n", "426"},
        {"GET /media-stream HTTP/1.1\r\nUpgrade: websocket\r\n"
         "Connection: keep-alive\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
         "400"},
        {"GET /media-stream HTTP/1.1\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
         "426"},
        {"GET /media-stream HTTP/1.1\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Key: short\r\n\r\n",
         "400"},
        {"GET /media-stream HTTP/1.1\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "400"},
        {"GET /media-stream/x1 HTTP/1.1\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
         "404"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = tc_request(f->port, bad[i][0], &r, MS);
        if (st != atoi(bad[i][1]))
            vb_test_fail(__FILE__, __LINE__, "case %zu: %d, want %s", i, st,
                         bad[i][1]);
        tc_free_resp(&r);
    }
    healthz_ok(f->port);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_twilio_signature_failures_total{route="
                           "\"stream\"} 3\n");
    free(m);
    fx_stop(f);
}

TEST_T(ingress_ring_full_answers_503, 30)
{
    fx_opts_t o = secure;
    o.ring_slots = 2;
    o.hold = true; /* the lane never drains */
    fx_t *f = fx_start(&o);
    char up[1024];
    upgrade_req(up, sizeof(up), "/media-stream/0", NULL, NULL);
    tc_conn_t *cs[3];
    tc_resp_t r;
    for (int i = 0; i < 2; i++) {
        cs[i] = tc_open(f->port);
        tc_send_str(cs[i]->fd, up);
        ASSERT_EQ(tc_read_resp(cs[i], &r, MS), 0);
        ASSERT_EQ(r.status, 101);
        tc_free_resp(&r);
    }
    cs[2] = tc_open(f->port);
    tc_send_str(cs[2]->fd, up);
    ASSERT_EQ(tc_read_resp(cs[2], &r, MS), 0);
    ASSERT_EQ(r.status, 503);
    ASSERT_STR_CONTAINS(r.head, "Retry-After: 1\r\n");
    tc_free_resp(&r);
    healthz_ok(f->port);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_stream_handoffs_total{result=\"ring_full\"} "
                           "1\n");
    free(m);
    for (int i = 0; i < 3; i++)
        tc_close(cs[i]);
    fx_stop(f); /* releases the two held connections */
}

TEST_T(ingress_no_lanes_answers_503, 30)
{
    fx_opts_t o = secure;
    o.no_lanes = true;
    fx_t *f = fx_start(&o);
    char up[1024];
    upgrade_req(up, sizeof(up), "/media-stream/0", NULL, NULL);
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, up, &r, MS), 503);
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.body, "\"state\":\"not_attached\"");
    tc_free_resp(&r);
    fx_stop(f);
}

TEST_T(ingress_replayed_webhook_takes_no_more_capacity, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-calls", "2", "--lanes", "2", NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char first[256], url[256];
    char *req = webhook("/webhook/voice", CALL_BODY("CA200"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_TRUE(twiml_attr(r.body, "<Stream", "url", first, sizeof(first)));
    tc_free_resp(&r);
    /* The same signed request 50 more times: the same stream URL, and
     * still room for one other call. */
    for (int i = 0; i < 50; i++) {
        ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
        ASSERT_TRUE(twiml_attr(r.body, "<Stream", "url", url, sizeof(url)));
        ASSERT_STR_EQ(url, first);
        tc_free_resp(&r);
    }
    free(req);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    req = webhook("/webhook/voice", CALL_BODY("CA201"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Connect ");
    tc_free_resp(&r);
    free(req);
    /* Now at --max-calls: a third call is busy, a replay of the first is
     * still answered as before. */
    req = webhook("/webhook/voice", CALL_BODY("CA202"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_TRUE(strstr(r.body, "<Connect") == NULL);
    tc_free_resp(&r);
    free(req);
    req = webhook("/webhook/voice", CALL_BODY("CA200"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Connect ");
    tc_free_resp(&r);
    free(req);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_webhook_replays_total 51\n");
    free(m);
    fx_stop(f);
}

TEST_T(ingress_capacity_draining_and_lane_choice, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-calls", "3", "--lanes", "2",
                            "--busy-say", "All busy & sorry", NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char url[256];
    /* Lane 0 already has a call: the first webhook goes to lane 1, the
     * next (1 active + 1 pending each) to either. */
    vb_ingress_calls_add(f->g, 0, 1);
    ASSERT_EQ(vb_ingress_calls_active(f->g), 1);
    ASSERT_EQ(vb_ingress_lane_calls(f->g, 0), 1);
    char *req = webhook("/webhook/voice", CALL_BODY("CA100"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_TRUE(twiml_attr(r.body, "<Stream", "url", url, sizeof(url)));
    ASSERT_STR_EQ(url, "wss://voice.example.test/media-stream/i1/1");
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    req = webhook("/webhook/voice", CALL_BODY("CA101"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Connect ");
    tc_free_resp(&r);
    free(req);
    /* 1 active + 2 pending = 3 = --max-calls. */
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    ASSERT_STR_EQ(r.body, "at capacity\n");
    tc_free_resp(&r);
    req = webhook("/webhook/voice", CALL_BODY("CA102"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    /* Rejected busy: not answered, a busy tone, no spoken message. */
    ASSERT_STR_CONTAINS(r.body, "<Response><Reject reason=\"busy\"/>"
                                "</Response>");
    ASSERT_TRUE(strstr(r.body, "All busy") == NULL);
    ASSERT_TRUE(strstr(r.body, "<Connect") == NULL);
    tc_free_resp(&r);
    free(req);
    /* The call ends: room again. */
    vb_ingress_calls_add(f->g, 0, -1);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    /* Draining, phase 1 (the grace): readyz 503, webhooks still answered
     * as usual. */
    vb_ingress_set_draining(f->g, true);
    ASSERT_TRUE(vb_ingress_draining(f->g));
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    ASSERT_STR_EQ(r.body, "draining\n");
    tc_free_resp(&r);
    req = webhook("/webhook/voice", CALL_BODY("CA103"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Connect ");
    tc_free_resp(&r);
    free(req);
    /* Phase 2: a new call gets 503 and the connection closes, so a proxy
     * retries it elsewhere; a repeated webhook still gets its answer. */
    vb_ingress_stop_accepting(f->g);
    req = webhook("/webhook/voice", CALL_BODY("CA104"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 503);
    ASSERT_STR_EQ(r.body, "draining: try another instance\n");
    ASSERT_STR_CONTAINS(r.head, "Connection: close");
    ASSERT_STR_CONTAINS(r.head, "Retry-After: 1");
    tc_free_resp(&r);
    free(req);
    req = webhook("/webhook/voice", CALL_BODY("CA103"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "<Connect ");
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.body, "\"status\":\"draining\"");
    ASSERT_STR_CONTAINS(r.body, "\"pending\":3");
    /* Three streams are awaited: the listener stays open for them. */
    ASSERT_STR_CONTAINS(r.body, "\"accepting\":true");
    tc_free_resp(&r);
    ASSERT_EQ(vb_ingress_calls_pending(f->g), 3);
    ASSERT_TRUE(vb_ingress_listening(f->g));
    vb_ingress_set_draining(f->g, false);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    ASSERT_STR_EQ(r.body, "at capacity\n");
    tc_free_resp(&r);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_calls_rejected_total{reason=\"busy\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_calls_rejected_total{reason=\"draining\"} 1\n");
    free(m);
    vb_ingress_calls_add(f->g, 99, 1); /* ignored */
    ASSERT_EQ(vb_ingress_calls_active(f->g), 0);
    fx_stop(f);
}

TEST_T(ingress_drain_closes_the_public_listener_once_streams_arrived, 30)
{
    fx_opts_t o = {
        .args = {"--public-url", PUBLIC, "--twilio-auth-token", TOKEN, NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char *req = webhook("/webhook/voice", CALL_BODY("CA200"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    tc_free_resp(&r);
    free(req);
    vb_ingress_stop_accepting(f->g);
    /* CA200's stream is awaited: the listener stays; its stream is
     * served. */
    usleep(300 * 1000);
    ASSERT_TRUE(vb_ingress_listening(f->g));
    char up[1024];
    upgrade_req(up, sizeof(up), "/media-stream/i1/0", NULL, NULL);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, up);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 101);
    tc_free_resp(&r);
    got_t g = consumer_wait(&f->cons, 1);
    ASSERT_EQ(g.lane, 0);
    /* Nothing awaited any more: connections are refused, the admin
     * listener still answers. */
    bool refused = false;
    for (double end = tc_now_ms() + 5000; !refused && tc_now_ms() < end;
         usleep(20000)) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)f->port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        refused = connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 &&
                  errno == ECONNREFUSED;
        close(fd);
    }
    ASSERT_TRUE(refused);
    ASSERT_TRUE(!(vb_ingress_listening(f->g)));
    ASSERT_EQ(tc_request(f->admin_port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS),
              503);
    tc_free_resp(&r);
    tc_close(c);
    ASSERT_TRUE(log_contains(f, "public listener closed"));
    fx_stop(f);
}

TEST_T(ingress_streams_for_other_instances_and_lanes_are_served, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--lanes", "2", NULL}};
    fx_t *f = fx_start(&o);
    tc_resp_t r;
    char up[1024];
    static const struct {
        const char *path;
        int status;
        uint32_t lane;
    } cases[] = {
        {"/media-stream/other-host.x_1/1", 101, 1}, /* another instance */
        {"/media-stream/i1/7", 101, 1},             /* 7 % 2 lanes */
        {"/media-stream/1", 101, 1},                /* the older form */
        {"/media-stream/bad%2Fname/0", 404, 0},
        {"/media-stream/i1/x", 404, 0},
        {"/media-stream//0", 404, 0},
    };
    int got_n = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upgrade_req(up, sizeof(up), cases[i].path, NULL, NULL);
        tc_conn_t *c = tc_open(f->port);
        tc_send_str(c->fd, up);
        ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
        if (r.status != cases[i].status)
            vb_test_fail(__FILE__, __LINE__, "%s: %d", cases[i].path, r.status);
        tc_free_resp(&r);
        if (cases[i].status == 101) {
            got_t g = consumer_wait(&f->cons, ++got_n);
            ASSERT_EQ(g.lane, cases[i].lane);
        }
        tc_close(c);
    }
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m,
                        "vb_streams_rerouted_total{reason=\"instance\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_streams_rerouted_total{reason=\"lane\"} 1\n");
    free(m);
    fx_stop(f);
}

TEST_T(ingress_gemini_rejections_make_readyz_503_until_a_success, 30)
{
    fx_t *f = fx_start(&secure);
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    vb_ingress_gemini_verdict(f->g, true, NULL);
    ASSERT_TRUE(!(vb_ingress_gemini_rejected(f->g)));
    vb_ingress_gemini_verdict(f->g, false, "close 1007 (API key not valid)");
    ASSERT_TRUE(vb_ingress_gemini_rejected(f->g));
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    ASSERT_STR_EQ(r.body, "gemini: close 1007 (API key not valid)\n");
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.body, "\"status\":\"gemini_rejected\"");
    ASSERT_STR_CONTAINS(r.body, "\"state\":\"rejected\"");
    ASSERT_STR_CONTAINS(r.body, "\"last_outcome\":\"rejected\"");
    ASSERT_STR_CONTAINS(r.body,
                        "\"last_reason\":\"close 1007 (API key not valid)\"");
    ASSERT_STR_CONTAINS(r.body, "\"consecutive_rejections\":1");
    tc_free_resp(&r);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_gemini_ready 0\n");
    ASSERT_STR_CONTAINS(m, "vb_ready 0\n");
    free(m);
    vb_ingress_gemini_verdict(f->g, false, "HTTP 401 on the upgrade");
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.body, "\"consecutive_rejections\":2");
    tc_free_resp(&r);
    vb_ingress_gemini_verdict(f->g, true, NULL);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.body, "\"status\":\"ok\"");
    ASSERT_STR_CONTAINS(r.body, "\"last_outcome\":\"ok\"");
    tc_free_resp(&r);
    m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_gemini_ready 1\n");
    free(m);
    fx_stop(f);
}

TEST(ingress_instance_id_is_checked)
{
    static const char *const bad[] = {"a/b", "..", "with space",
                                      "0123456789012345678901234567890123456"
                                      "789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vb_config_t cfg;
        char err[256];
        const char *argv[] = {"voxbridge", "--instance-id", bad[i]};
        ASSERT_EQ(vb_config_load(&cfg, 3, argv, err, sizeof(err)), 0);
        vb_metrics_t *m = vb_metrics_create();
        vb_ingress_t *g = NULL;
        vb_ingress_opts_t io = {.cfg = &cfg, .metrics = m, .no_listen = true};
        ASSERT_EQ(vb_ingress_create(&io, &g), VB_ECONFIG);
        vb_metrics_destroy(m);
        vb_config_free(&cfg);
    }
    /* Empty: the hostname, made a safe segment. */
    vb_config_t cfg;
    char err[256];
    const char *argv[] = {"voxbridge"};
    ASSERT_EQ(vb_config_load(&cfg, 1, argv, err, sizeof(err)), 0);
    vb_metrics_t *m = vb_metrics_create();
    vb_ingress_t *g = NULL;
    vb_ingress_opts_t io = {.cfg = &cfg, .metrics = m, .no_listen = true};
    ASSERT_EQ(vb_ingress_create(&io, &g), 0);
    const char *id = vb_ingress_instance(g);
    ASSERT_GT(strlen(id), 0);
    ASSERT_EQ(strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789._-"),
              strlen(id));
    vb_ingress_destroy(g);
    vb_metrics_destroy(m);
    vb_config_free(&cfg);
}

TEST_T(ingress_stream_consumes_pending_reservation, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-calls", "1", NULL}};
    fx_t *f = fx_start(&o);
    pthread_mutex_lock(&f->cons.mu);
    f->cons.expect = 0;
    pthread_mutex_unlock(&f->cons.mu);
    tc_resp_t r;
    char *req = webhook("/webhook/voice", CALL_BODY("CA5"), NULL);
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    tc_free_resp(&r);
    free(req);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 503);
    tc_free_resp(&r);
    /* The stream arrives: the reservation is released (the lane counts the
     * call from now on). */
    char up[1024];
    upgrade_req(up, sizeof(up), "/media-stream/0", NULL, NULL);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, up);
    ASSERT_EQ(tc_read_resp(c, &r, MS), 0);
    ASSERT_EQ(r.status, 101);
    tc_free_resp(&r);
    consumer_wait(&f->cons, 1);
    ASSERT_EQ(tc_request(f->port, "GET /readyz HTTP/1.1\r\n\r\n", &r, MS), 200);
    tc_free_resp(&r);
    tc_close(c);
    fx_stop(f);
}

TEST_T(ingress_insecure_mode, 30)
{
    fx_t *f = fx_start(NULL); /* no token, no public URL */
    tc_resp_t r;
    /* Unsigned webhooks are taken; the stream URL comes from Host. */
    const char *req = "POST /webhook/voice HTTP/1.1\r\nHost: dev.local:8080\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      "Content-Length: 11\r\n\r\nCallSid=CA1";
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body,
                        "url=\"ws://dev.local:8080/media-stream/i1/0\"");
    tc_free_resp(&r);
    /* A CallSid is still required. */
    req = "POST /webhook/voice HTTP/1.1\r\nContent-Length: 7\r\n\r\nFrom=x&";
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 400);
    tc_free_resp(&r);
    req = "POST /webhook/voice HTTP/1.1\r\nContent-Length: 13\r\n\r\n"
          "CallSid=C%3CA";
    ASSERT_EQ(tc_request(f->port, req, &r, MS), 400);
    tc_free_resp(&r);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_insecure_mode 1\n");
    free(m);
    ASSERT_TRUE(log_contains(f, "signatures are NOT verified"));
    fx_stop(f);
}

TEST_T(ingress_admin_listener_and_cors, 30)
{
    fx_opts_t o = {.args = {"--metrics-listen", "127.0.0.1:0", "--cors-origin",
                            "https://dash.example", NULL}};
    fx_t *f = fx_start(&o);
    ASSERT_GT(f->admin_port, 0);
    ASSERT_NE(f->admin_port, f->port);
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
              404);
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
              404);
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
        200);
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->admin_port,
                         "POST /webhook/voice HTTP/1.1\r\n"
                         "Content-Length: 0\r\n\r\n",
                         &r, MS),
              404);
    tc_free_resp(&r);
    healthz_ok(f->admin_port);
    healthz_ok(f->port);
    /* CORS on /test/system. */
    ASSERT_EQ(tc_request(f->admin_port,
                         "OPTIONS /test/system HTTP/1.1\r\n"
                         "Origin: https://dash.example\r\n"
                         "Access-Control-Request-Method: GET\r\n\r\n",
                         &r, MS),
              204);
    ASSERT_STR_CONTAINS(r.head, "Access-Control-Allow-Origin: "
                                "https://dash.example\r\n");
    ASSERT_STR_CONTAINS(r.head, "Access-Control-Allow-Methods: GET, OPTIONS");
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_STR_CONTAINS(r.head, "Content-Type: application/json\r\n");
    ASSERT_STR_CONTAINS(r.head, "Access-Control-Allow-Origin: "
                                "https://dash.example\r\n");
    ASSERT_STR_CONTAINS(r.body, "\"signatures\":{\"state\":\"insecure\"");
    ASSERT_STR_CONTAINS(r.body, "\"gemini\":{\"state\":\"no_api_key\"");
    ASSERT_STR_CONTAINS(r.body, "\"active_calls\":[0]");
    tc_free_resp(&r);
    fx_stop(f);

    /* CORS off by default. */
    f = fx_start(NULL);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    ASSERT_TRUE(strstr(r.head, "Access-Control") == NULL);
    tc_free_resp(&r);
    fx_stop(f);
}

TEST_T(ingress_trust_proxy_for_logs_only, 30)
{
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--trust-proxy", NULL}};
    fx_t *f = fx_start(&o);
    char *req = webhook("/webhook/voice", CALL_BODY("CA42"), NULL);
    /* Forwarded headers may not change what the signature covers. */
    char *p = strstr(req, "Host:");
    size_t cap = strlen(req) + 256;
    char *fwd = malloc(cap);
    snprintf(fwd, cap,
             "%.*sX-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n"
             "X-Forwarded-Proto: http\r\nX-Forwarded-Host: evil.example\r\n%s",
             (int)(p - req), req, p);
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, fwd, &r, MS), 200);
    ASSERT_STR_CONTAINS(r.body, "url=\"wss://voice.example.test/");
    tc_free_resp(&r);
    ASSERT_TRUE(log_contains(f, "client=203.0.113.9"));
    free(fwd);
    free(req);
    fx_stop(f);
}

TEST_T(ingress_create_errors, 30)
{
    clear_env();
    vb_log_set_level(VB_LOG_OFF);
    vb_config_t c;
    char err[256];
    const char *a1[] = {"x", "--twilio-auth-token", "t", "--listen",
                        "127.0.0.1:0"};
    ASSERT_EQ(vb_config_load(&c, 5, a1, err, sizeof(err)), 0);
    vb_metrics_t *m = vb_metrics_create();
    vb_ingress_opts_t o = {.cfg = &c, .metrics = m};
    vb_ingress_t *g;
    ASSERT_EQ(vb_ingress_create(&o, &g), VB_ECONFIG);
    ASSERT_NULL(g);
    vb_config_free(&c);

    /* A port in use. */
    const char *a2[] = {"x", "--listen", "127.0.0.1:0"};
    ASSERT_EQ(vb_config_load(&c, 3, a2, err, sizeof(err)), 0);
    vb_ingress_t *first;
    ASSERT_EQ(vb_ingress_create(&o, &first), 0);
    char busy[64];
    snprintf(busy, sizeof(busy), "127.0.0.1:%d", vb_ingress_port(first, false));
    vb_config_t c2;
    const char *a3[] = {"x", "--listen", busy};
    ASSERT_EQ(vb_config_load(&c2, 3, a3, err, sizeof(err)), 0);
    vb_ingress_opts_t o2 = {.cfg = &c2, .metrics = m};
    ASSERT_EQ(vb_ingress_create(&o2, &g), VB_EIO);
    vb_config_free(&c2);
    vb_ingress_destroy(first); /* never started */
    vb_ingress_destroy(NULL);
    vb_config_free(&c);
    vb_metrics_destroy(m);
}

TEST_T(ingress_stop_with_open_connections, 30)
{
    fx_t *f = fx_start(&secure);
    tc_conn_t *idle = tc_open(f->port);
    tc_conn_t *partial = tc_open(f->port);
    tc_send_str(partial->fd, "POST /webhook/voice HTTP/1.1\r\nContent-Le");
    tc_send_str(idle->fd, "GET /healthz HTTP/1.1\r\n\r\n");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(idle, &r, MS), 0);
    tc_free_resp(&r);
    int port = f->port;
    fx_stop(f);
    ASSERT_TRUE(tc_wait_closed(idle, MS));
    ASSERT_TRUE(tc_wait_closed(partial, MS));
    tc_close(idle);
    tc_close(partial);
    /* The port is released. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_NE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

TEST_T(ingress_admin_endpoints_private_by_default, 30)
{
    /* No admin listener: not served anywhere, and the log says so. */
    fx_opts_t o = {.no_admin = true};
    fx_t *f = fx_start(&o);
    ASSERT_EQ(f->admin_port, 0);
    tc_resp_t r;
    ASSERT_EQ(tc_request(f->port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
              404);
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
              404);
    tc_free_resp(&r);
    healthz_ok(f->port);
    ASSERT_TRUE(log_contains(f, "msg=\"admin endpoints not served: "));
    fx_stop(f);

    /* --admin-on-public puts them on the public listener. */
    fx_opts_t pub = {.args = {"--admin-on-public", NULL}, .no_admin = true};
    f = fx_start(&pub);
    ASSERT_EQ(tc_request(f->port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
              200);
    ASSERT_STR_CONTAINS(r.body, "# TYPE vb_http_requests_total counter\n");
    tc_free_resp(&r);
    ASSERT_EQ(tc_request(f->port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
              200);
    tc_free_resp(&r);
    ASSERT_TRUE(log_contains(f, "msg=\"admin endpoints served\" "
                                "paths=/metrics,/test/system on=127.0.0.1:0"));
    fx_stop(f);

    /* Both: the admin listener and the public one. */
    fx_opts_t both = {.args = {"--admin-on-public", NULL}};
    f = fx_start(&both);
    ASSERT_EQ(tc_request(f->port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
              200);
    tc_free_resp(&r);
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /metrics HTTP/1.1\r\n\r\n", &r, MS),
        200);
    tc_free_resp(&r);
    fx_stop(f);
}

static tc_conn_t *open_from(int port, const char *from)
{
    tc_conn_t *c = calloc(1, sizeof(*c));
    ASSERT_NOT_NULL(c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(c->fd, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    ASSERT_EQ(inet_pton(AF_INET, from, &src.sin_addr), 1);
    ASSERT_EQ(bind(c->fd, (struct sockaddr *)&src, sizeof(src)), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return c;
}

/* Slow-body connections from two addresses hold the whole connection cap
 * (the attack: POST heads announcing 60000 bytes, then a byte now and
 * then); health checks and signed webhooks from other addresses are all
 * answered, and the limits show in the metrics. */
TEST_T(ingress_slow_bodies_at_the_cap_do_not_stop_others, 60)
{
    enum { CAP = 24, PER_PEER = 12, OTHERS = 30 };
    fx_opts_t o = {.args = {"--public-url", PUBLIC, "--twilio-auth-token",
                            TOKEN, "--max-connections", "24",
                            "--max-connections-per-peer", "12", NULL}};
    fx_t *f = fx_start(&o);
    static const char *const attackers[] = {"127.0.0.2", "127.0.0.3"};
    tc_conn_t *slow[CAP];
    for (int i = 0; i < CAP; i++) {
        slow[i] = open_from(f->port, attackers[i % 2]);
        tc_send_str(slow[i]->fd, "POST /webhook/voice HTTP/1.1\r\n"
                                 "Content-Type: application/"
                                 "x-www-form-urlencoded\r\n"
                                 "Content-Length: 60000\r\n\r\nA");
    }
    /* One more from an attacker address: over its per-peer limit. */
    tc_conn_t *extra = open_from(f->port, "127.0.0.2");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(extra, &r, MS), 0);
    ASSERT_EQ(r.status, 503);
    tc_free_resp(&r);
    tc_close(extra);
    int ok = 0;
    for (int i = 0; i < OTHERS; i++) {
        char from[32], sid[32];
        snprintf(from, sizeof(from), "127.0.2.%d", 10 + i);
        tc_conn_t *c = open_from(f->port, from);
        char *req = NULL;
        if (i % 2) {
            tc_send_str(c->fd, "GET /healthz HTTP/1.1\r\n\r\n");
        } else {
            char body[512];
            snprintf(sid, sizeof(sid), "CA%d", 500 + i);
            snprintf(body, sizeof(body), "%s%s%s",
                     "AccountSid=AC0&ApiVersion=2010-04-01&CallSid=", sid,
                     "&CallStatus=ringing&Called=%2B18005550100"
                     "&Caller=%2B14155550123&Direction=inbound"
                     "&From=%2B14155550123&To=%2B18005550100");
            req = webhook("/webhook/voice", body, NULL);
            tc_send_str(c->fd, req);
        }
        if (tc_read_resp(c, &r, MS) == 0 && r.status == 200)
            ok++;
        tc_free_resp(&r);
        free(req);
        tc_close(c);
    }
    ASSERT_EQ(ok, OTHERS);
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_http_connections_refused_total{reason="
                           "\"per_peer\"} 1\n");
    ASSERT_TRUE(strstr(m, "vb_http_connections_evicted_total 0\n") == NULL);
    free(m);
    for (int i = 0; i < CAP; i++)
        tc_close(slow[i]);
    fx_stop(f);
}

/* The request deadline and the body rate are settings of the server. */
TEST_T(ingress_request_timeout_and_min_body_rate_settings, 30)
{
    fx_opts_t o = {
        .args = {"--request-timeout-ms", "1000", "--min-body-rate", "0", NULL}};
    fx_t *f = fx_start(&o);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, "POST /webhook/voice HTTP/1.1\r\n"
                       "Content-Length: 60000\r\n\r\n");
    tc_resp_t r;
    int status = -1;
    for (int i = 0; i < 100 && status < 0; i++) {
        send(c->fd, "A", 1, MSG_NOSIGNAL);
        if (tc_read_resp(c, &r, 100) == 0) {
            status = r.status;
            tc_free_resp(&r);
        }
    }
    ASSERT_EQ(status, 408);
    tc_close(c);
    ASSERT_TRUE(log_contains(f, "reason=\"request timed out\""));
    char *m = get_metrics(f->admin_port);
    ASSERT_STR_CONTAINS(m, "vb_http_requests_total{route=\"other\",code="
                           "\"408\"} 1\n");
    ASSERT_STR_CONTAINS(m, "vb_http_accept_paused_total 0\n");
    free(m);
    fx_stop(f);
}

static char *system_report(fx_t *f)
{
    tc_resp_t r;
    ASSERT_EQ(
        tc_request(f->admin_port, "GET /test/system HTTP/1.1\r\n\r\n", &r, MS),
        200);
    return r.body;
}

/* --max-connections 0 is what the soft fd limit leaves after 3 per call of
 * --max-calls and a reserve of 64; the per-peer limit is 1/8 of it, off
 * behind a trusted proxy unless set. (The case runs in its own process:
 * the lowered limit touches nothing else.) */
TEST_T(ingress_connection_cap_from_the_fd_limit, 30)
{
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ASSERT_GE(rl.rlim_max, 1000);
    rl.rlim_cur = 1000;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    fx_opts_t o = {.args = {"--max-calls", "100", NULL}};
    fx_t *f = fx_start(&o);
    char *j = system_report(f);
    ASSERT_STR_CONTAINS(j, "\"max_connections\":636,"); /* 1000-300-64 */
    ASSERT_STR_CONTAINS(j, "\"max_connections_per_peer\":79,");
    free(j);
    ASSERT_TRUE(log_contains(f, "msg=\"http connection limits\" "
                                "max_connections=636 per_peer=79 "
                                "fd_limit=1000"));
    fx_stop(f);

    fx_opts_t px = {.args = {"--max-calls", "100", "--trust-proxy", NULL}};
    f = fx_start(&px);
    j = system_report(f);
    ASSERT_STR_CONTAINS(j, "\"max_connections_per_peer\":0,");
    free(j);
    fx_stop(f);

    /* Too many calls for the limit: the floor, and a warning. */
    fx_opts_t big = {.args = {"--max-calls", "400", NULL}};
    f = fx_start(&big);
    j = system_report(f);
    ASSERT_STR_CONTAINS(j, "\"max_connections\":16,");
    ASSERT_STR_CONTAINS(j, "\"max_connections_per_peer\":16,");
    free(j);
    ASSERT_TRUE(log_contains(f, "the fd limit leaves almost nothing"));
    fx_stop(f);

    /* Explicit settings win. */
    fx_opts_t ex = {.args = {"--max-connections", "50",
                             "--max-connections-per-peer", "5", "--trust-proxy",
                             NULL}};
    f = fx_start(&ex);
    j = system_report(f);
    ASSERT_STR_CONTAINS(j, "\"max_connections\":50,");
    ASSERT_STR_CONTAINS(j, "\"max_connections_per_peer\":5,");
    free(j);
    fx_stop(f);
}

/* Out of descriptors at accept: accepting pauses and resumes, the log says
 * so (rate-limited) and vb_http_accept_paused_total counts it; every
 * waiting client is answered once descriptors free up. */
TEST_T(ingress_emfile_is_logged_counted_and_recovers, 60)
{
    enum { CLIENTS = 24, SPARE = 3 };
    fx_t *f = fx_start(NULL);
    int fds[CLIENTS], top = 0;
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fds[i], 0);
        top = fds[i] > top ? fds[i] : top;
    }
    struct rlimit old, rl;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    rl = old;
    rl.rlim_cur = (rlim_t)top + 1 + SPARE;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)f->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < CLIENTS; i++) {
        ASSERT_EQ(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
        tc_send_str(fds[i],
                    "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    }
    /* The server holds at most SPARE of them at once (and this process,
     * which shares the limit, opens nothing until they are answered). */
    int ok = 0;
    for (int i = 0; i < CLIENTS; i++) {
        tc_conn_t *c = calloc(1, sizeof(*c));
        ASSERT_NOT_NULL(c);
        c->fd = fds[i];
        tc_resp_t r;
        if (tc_read_resp(c, &r, MS * 3) == 0 && r.status == 200)
            ok++;
        tc_free_resp(&r);
        tc_close(c);
    }
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    ASSERT_EQ(ok, CLIENTS);
    ASSERT_TRUE(log_contains(f, "msg=\"accept failed, accepting paused\" "
                                "err=\"Too many open files\""));
    ASSERT_TRUE(log_contains(f, "msg=\"accepting resumed\""));
    char *m = get_metrics(f->admin_port);
    ASSERT_TRUE(strstr(m, "vb_http_accept_paused_total 0\n") == NULL);
    ASSERT_STR_CONTAINS(m, "vb_http_accept_paused_total ");
    free(m);
    fx_stop(f);
}
