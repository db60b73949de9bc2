/* SPDX-License-Identifier: MIT */
/*
 * net/twilio_stream: the twilio-io stage on its own thread, with the test
 * owning the other end of every ring. Each case plays the ingress (accepts
 * a real loopback TCP connection, writes the 101, hands the socket over)
 * and Twilio (a blocking client socket that speaks WebSocket frames built
 * by tests/ws_frames.h), and the DSP stage (pops the inbound ring, pushes
 * the outbound ring and rings the stage's doorbell).
 */
#include "net/twilio_stream.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/base64.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/lane.h"
#include "core/log.h"
#include "net/tcp.h"
#include "net/twilio_msg.h"
#include "tests/test.h"
#include "tests/ws_frames.h"

#define CALL_SID   "CA0123456789abcdef0123456789abcdef"
#define STREAM_SID "MZ0123456789abcdef0123456789abcdef"
#define ACCT_SID   "AC0123456789abcdef0123456789abcdef"

typedef struct fixture {
    vb_chan_t conn, in, out;
    _Atomic int calls; /* via the calls_changed hook */
    vb_metrics_t *m;
    vb_twilio_sig_key_t key;
    vb_twilio_stream_t *st;
    int lfd;
    uint32_t out_seq;
} fixture_t;

typedef struct client {
    int fd;
    uint8_t buf[1 << 18];
    size_t len;
    uint64_t seq; /* Twilio's sequenceNumber */
    uint64_t chunk;
} client_t;

static void calls_changed(void *ud, int lane, int delta)
{
    fixture_t *f = ud;
    (void)lane;
    f->calls += delta;
}

/* Settings a case may set before fx_start (zero: the stage's default). */
static struct {
    uint32_t max_preauth, per_peer, media_timeout_ms, max_call_s;
    uint32_t media_gap_fill_ms;
} fx_over;

static fixture_t *fx_start(int lane, uint32_t max_calls, uint32_t batch,
                           uint32_t in_cap, uint32_t start_ms)
{
    fixture_t *f = calloc(1, sizeof *f);
    ASSERT_NOT_NULL(f);
    vb_log_set_level(getenv("VB_TEST_LOG") ? VB_LOG_DEBUG : VB_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    f->m = vb_metrics_create();
    ASSERT_NOT_NULL(f->m);
    /* Channels as a lane has them (core/lane.h). */
    vb_chan_config_t cc = {"ingress_to_twilio", 16, VB_MSG_DATA_MAX, 0, f->m};
    vb_chan_config_t ic = {"twilio_to_dsp", in_cap, VB_LANE_TW_TO_DSP_DATA,
                           VB_LANE_SPILL_MAX, f->m};
    vb_chan_config_t oc = {"dsp_to_twilio", 256, VB_MSG_DATA_MAX, 0, f->m};
    ASSERT_EQ(vb_chan_init(&f->conn, &cc), 0);
    ASSERT_EQ(vb_chan_init(&f->in, &ic), 0);
    ASSERT_EQ(vb_chan_init(&f->out, &oc), 0);
    ASSERT_EQ(vb_twilio_sig_key_init(&f->key, "test stream secret"), 0);
    vb_twilio_stream_config_t cfg = {
        .lane = lane,
        .max_calls = max_calls,
        .media_batch = batch,
        .start_timeout_ms = start_ms,
        .max_errors = 20,
        .token_key = &f->key,
        .conn_in = &f->conn,
        .in_to_dsp = &f->in,
        .out_from_dsp = &f->out,
        .metrics = f->m,
        .hangup_grace_ms = 60000, /* hang-ups here wait for echoes */
        .max_preauth = fx_over.max_preauth,
        .max_preauth_per_peer = fx_over.per_peer,
        .media_timeout_ms = fx_over.media_timeout_ms,
        .max_call_s = fx_over.max_call_s,
        .media_gap_fill_ms = fx_over.media_gap_fill_ms,
        .calls_changed = calls_changed,
        .calls_ud = f,
    };
    ASSERT_EQ(vb_twilio_stream_create(&f->st, &cfg), 0);
    ASSERT_EQ(vb_twilio_stream_start(f->st), 0);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(f->lfd, 16), 0);
    return f;
}

static void fx_stop(fixture_t *f)
{
    vb_twilio_stream_stop(f->st);
    vb_twilio_stream_destroy(f->st);
    close(f->lfd);
    vb_chan_destroy(&f->conn);
    vb_chan_destroy(&f->in);
    vb_chan_destroy(&f->out);
    vb_metrics_destroy(f->m);
    free(f);
}

static int64_t metric(fixture_t *f, const char *reason)
{
    vb_metric_t id;
    ASSERT_EQ(vb_twilio_stream_error_metric(f->m, reason, &id), 0);
    return vb_metrics_value(f->m, id);
}

/* Waits until the calls_changed hook has brought f->calls to `want`: the
 * stage calls it after pushing CALL_OPEN / CALL_CLOSE, so a test that has
 * popped one of those may still be ahead of it. */
static bool wait_calls(fixture_t *f, int want, int ms)
{
    uint64_t deadline = vb_clock_now_ns() + (uint64_t)ms * 1000000ull *
                                                (uint64_t)vb_test_slowdown();
    while (f->calls != want) {
        if (vb_clock_now_ns() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

/* Waits until the protocol error counter for `reason` is above zero; false
 * when `ms` (scaled) pass first. */
static bool wait_metric(fixture_t *f, const char *reason, int ms)
{
    uint64_t deadline = vb_clock_now_ns() + (uint64_t)ms * 1000000ull *
                                                (uint64_t)vb_test_slowdown();
    while (metric(f, reason) == 0) {
        if (vb_clock_now_ns() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

/* Waits until Twilio's mark echoes handled reach `n`
 * (vb_twilio_marks_echoed_total): they no longer go down the lane, so this
 * is how a case knows the stage has read one. */
static bool wait_echoed(fixture_t *f, int64_t n, int ms)
{
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER,
                             "vb_twilio_marks_echoed_total", "", NULL, &id),
              0);
    uint64_t deadline = vb_clock_now_ns() + (uint64_t)ms * 1000000ull *
                                                (uint64_t)vb_test_slowdown();
    while (vb_metrics_value(f->m, id) < n) {
        if (vb_clock_now_ns() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

static int64_t rejected(fixture_t *f, const char *reason)
{
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER,
                             "vb_twilio_stream_rejected_total", "",
                             VB_LABELS("reason", reason), &id),
              0);
    return vb_metrics_value(f->m, id);
}

/* Connects a client, writes the 101 on the server side as the ingress
 * would, and hands the server socket over with `pre` bytes. */
static client_t *connect_pre(fixture_t *f, const uint8_t *pre, size_t pre_len)
{
    client_t *c = calloc(1, sizeof *c);
    ASSERT_NOT_NULL(c);
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    ASSERT_EQ(getsockname(f->lfd, (struct sockaddr *)&a, &sl), 0);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    int sfd = accept(f->lfd, NULL, NULL);
    ASSERT_TRUE(sfd >= 0);
    const char *resp = "HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                       "\r\n\r\n";
    ASSERT_EQ(write(sfd, resp, strlen(resp)), (ssize_t)strlen(resp));
    ASSERT_EQ(vb_twilio_stream_handoff(&f->conn, sfd, pre, pre_len), 0);
    /* Skip the 101 on the client side. */
    char head[512];
    size_t got = 0;
    while (got < strlen(resp)) {
        ssize_t r = read(c->fd, head + got, strlen(resp) - got);
        ASSERT_GT(r, 0);
        got += (size_t)r;
    }
    c->seq = 1;
    return c;
}

static client_t *connect_client(fixture_t *f)
{
    return connect_pre(f, NULL, 0);
}

static void client_close(client_t *c)
{
    close(c->fd);
    free(c);
}

static void send_raw(client_t *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(c->fd, b, n);
        ASSERT_GT(w, 0);
        b += w;
        n -= (size_t)w;
    }
}

static void send_text(client_t *c, const char *json)
{
    size_t n = strlen(json);
    uint8_t *w = malloc(n + 16);
    size_t k = tf_frame(w, n + 16, true, 0x1, true, json, n);
    send_raw(c, w, k);
    free(w);
}

static void send_start_for(client_t *c, const char *token, const char *encoding,
                           const char *call_sid)
{
    char json[1024];
    char params[256] = "";
    if (token != NULL)
        snprintf(params, sizeof params, "\"streamToken\":\"%s\",", token);
    snprintf(json, sizeof json,
             "{\"event\":\"start\",\"sequenceNumber\":\"%llu\","
             "\"start\":{\"accountSid\":\"" ACCT_SID
             "\",\"streamSid\":\"" STREAM_SID "\",\"callSid\":\"%s"
             "\",\"tracks\":[\"inbound\"],"
             "\"mediaFormat\":{\"encoding\":\"%s\",\"sampleRate\":8000,"
             "\"channels\":1},\"customParameters\":{%s\"FirstName\":\"Jane\"}},"
             "\"streamSid\":\"" STREAM_SID "\"}",
             (unsigned long long)c->seq++, call_sid, encoding, params);
    send_text(c, json);
}

static void send_start(client_t *c, const char *token, const char *encoding)
{
    send_start_for(c, token, encoding, CALL_SID);
}

static void send_media(client_t *c, const uint8_t *mulaw, size_t n)
{
    char b64[2048];
    size_t bl = 0;
    ASSERT_EQ(
        mbedtls_base64_encode((unsigned char *)b64, sizeof b64, &bl, mulaw, n),
        0);
    b64[bl] = '\0';
    char json[4096];
    c->chunk++;
    snprintf(json, sizeof json,
             "{\"event\":\"media\",\"sequenceNumber\":\"%llu\",\"media\":{"
             "\"track\":\"inbound\",\"chunk\":\"%llu\",\"timestamp\":\"%llu\","
             "\"payload\":\"%s\"},\"streamSid\":\"" STREAM_SID "\"}",
             (unsigned long long)c->seq++, (unsigned long long)c->chunk,
             (unsigned long long)(c->chunk * 20 + 135), b64);
    send_text(c, json);
}

static char *make_token(fixture_t *f, int lane, int64_t expiry, const char *sid)
{
    static char tok[VB_TWILIO_TOKEN_LEN + 1];
    ASSERT_EQ(
        vb_twilio_sig_token_create(&f->key, sid, (uint32_t)lane, expiry, tok),
        0);
    return tok;
}

static void start_call_for(fixture_t *f, client_t *c, int lane, const char *sid)
{
    send_text(c, "{\"event\":\"connected\",\"protocol\":\"Call\","
                 "\"version\":\"1.0.0\"}");
    send_start_for(c, make_token(f, lane, (int64_t)time(NULL) + 60, sid),
                   "audio/x-mulaw", sid);
}

static void start_call(fixture_t *f, client_t *c, int lane)
{
    start_call_for(f, c, lane, CALL_SID);
}

/* Reads one frame, waiting up to `ms`; false on timeout or EOF. */
static bool read_frame(client_t *c, tf_parsed_t *pf, int ms)
{
    uint64_t deadline = vb_clock_now_ns() + (uint64_t)ms * 1000000ull *
                                                (uint64_t)vb_test_slowdown();
    for (;;) {
        size_t used = tf_parse(c->buf, c->len, pf);
        if (used > 0) {
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            return true;
        }
        uint64_t now = vb_clock_now_ns();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1) <= 0)
            return false;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r <= 0)
            return false;
        c->len += (size_t)r;
    }
}

/* Expects a close frame with `code` whose reason contains `reason`. */
static void expect_close(client_t *c, uint16_t code, const char *reason)
{
    tf_parsed_t *pf = malloc(sizeof *pf);
    for (;;) {
        ASSERT_TRUE(read_frame(c, pf, 5000));
        if (pf->op == 0x8)
            break;
    }
    ASSERT_TRUE(!pf->masked);
    ASSERT_EQ(tf_close_code(pf), code);
    if (reason != NULL) {
        char r[128] = {0};
        memcpy(r, pf->payload + 2, pf->len - 2);
        ASSERT_STR_CONTAINS(r, reason);
    }
    free(pf);
}

/* Pops the next inbound message, waiting up to 5 s. */
static bool pop_in(fixture_t *f, vb_msg_t *m, int ms)
{
    uint64_t deadline = vb_clock_now_ns() + (uint64_t)ms * 1000000ull *
                                                (uint64_t)vb_test_slowdown();
    while (vb_ring_try_pop(&f->in.ring, m) != 0) {
        if (vb_clock_now_ns() > deadline)
            return false;
        usleep(500);
    }
    return true;
}

static void push_out(fixture_t *f, vb_call_id_t call, uint8_t kind,
                     const void *data, size_t len, bool ring)
{
    vb_msg_t m;
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.call = call;
    m.seq = f->out_seq++;
    m.len = (uint16_t)len;
    m.t_origin = m.t_enqueue = vb_clock_now_ns();
    if (len > 0)
        memcpy(m.data, data, len);
    /* Straight into the ring, so a case can push a batch and ring once
     * (the wake-up protocol itself is covered by test_ring/test_chan). */
    ASSERT_EQ(vb_ring_try_push(&f->out.ring, &m, sizeof m), 0);
    if (ring)
        uv_async_send(f->out.bell);
}

static void ring_out(fixture_t *f)
{
    uv_async_send(f->out.bell);
}

static cJSON *read_json(client_t *c)
{
    tf_parsed_t *pf = malloc(sizeof *pf);
    ASSERT_TRUE(read_frame(c, pf, 5000));
    ASSERT_EQ(pf->op, 0x1);
    ASSERT_TRUE(!pf->masked);
    cJSON *j = cJSON_ParseWithLength((const char *)pf->payload, pf->len);
    ASSERT_NOT_NULL(j);
    free(pf);
    return j;
}

static int nkeys(const cJSON *o)
{
    int n = 0;
    for (const cJSON *k = o->child; k != NULL; k = k->next)
        n++;
    return n;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ASSERT_TRUE(cJSON_IsString(v));
    return v->valuestring;
}

static void mulaw_pattern(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((seed * 131 + i * 7 + (i >> 3)) & 0xFF);
}

/* Pops CALL_OPEN and checks its payload; returns the call id. */
static vb_call_id_t expect_open(fixture_t *f)
{
    vb_msg_t m;
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_CALL_OPEN);
    ASSERT_EQ(m.len, sizeof(vb_msg_open_t));
    vb_msg_open_t o;
    memcpy(&o, m.data, sizeof o);
    ASSERT_STR_EQ(o.call_sid, CALL_SID);
    ASSERT_STR_EQ(o.stream_sid, STREAM_SID);
    ASSERT_STR_EQ(o.account_sid, ACCT_SID);
    return m.call;
}

/* ---- inbound ---- */

TEST_T(valid_stream_reaches_ring_byte_exact_and_in_order, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 1024, 0);
    /* `connected` arrives with the hand-off bytes, as if the ingress had
     * read it together with the upgrade request. */
    uint8_t pre[256];
    const char *conn = "{\"event\":\"connected\",\"protocol\":\"Call\","
                       "\"version\":\"1.0.0\"}";
    size_t pre_len =
        tf_frame(pre, sizeof pre, true, 0x1, true, conn, strlen(conn));
    client_t *c = connect_pre(f, pre, pre_len);
    send_start(c, make_token(f, 0, (int64_t)time(NULL) + 60, CALL_SID),
               "audio/x-mulaw");
    vb_call_id_t id = expect_open(f);
    ASSERT_TRUE(wait_calls(f, 1, 5000));
    uint64_t before = vb_clock_now_ns();
    enum { N = 150 };
    for (unsigned i = 0; i < N; i++) {
        uint8_t mu[160];
        mulaw_pattern(mu, sizeof mu, i);
        send_media(c, mu, sizeof mu);
    }
    send_text(c, "{\"event\":\"dtmf\",\"streamSid\":\"" STREAM_SID
                 "\",\"sequenceNumber\":\"152\",\"dtmf\":{\"track\":"
                 "\"inbound_track\",\"digit\":\"5\"}}");
    send_text(c, "{\"event\":\"stop\",\"sequenceNumber\":\"153\","
                 "\"streamSid\":\"" STREAM_SID "\",\"stop\":{\"accountSid\":"
                 "\"" ACCT_SID "\",\"callSid\":\"" CALL_SID "\"}}");
    uint32_t last_seq = 0;
    for (unsigned i = 0; i < N; i++) {
        vb_msg_t m;
        ASSERT_TRUE(pop_in(f, &m, 5000));
        ASSERT_EQ(m.kind, VB_MSG_AUDIO);
        ASSERT_TRUE(vb_call_id_eq(m.call, id));
        ASSERT_EQ(m.len, 160);
        uint8_t mu[160];
        mulaw_pattern(mu, sizeof mu, i);
        ASSERT_MEM_EQ(m.data, mu, 160);
        ASSERT_GT(m.seq, last_seq);
        last_seq = m.seq;
        ASSERT_GE(m.t_origin, before);
        ASSERT_GE(m.t_enqueue, m.t_origin);
    }
    vb_msg_t m;
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_DTMF);
    ASSERT_EQ(m.len, 1);
    ASSERT_EQ(m.data[0], '5');
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_CALL_CLOSE);
    ASSERT_TRUE(vb_call_id_eq(m.call, id));
    ASSERT_MEM_EQ(m.data, "stop", 4);
    expect_close(c, 1000, NULL);
    ASSERT_TRUE(!pop_in(f, &m, 50));
    ASSERT_TRUE(wait_calls(f, 0, 5000));
    vb_twilio_call_stats_t st;
    ASSERT_EQ(vb_twilio_stream_last_stats(f->st, &st), 1);
    ASSERT_EQ(st.frames_in, N);
    ASSERT_EQ(st.bytes_in, N * 160);
    ASSERT_EQ(st.seq_gaps, 0);
    ASSERT_EQ(st.chunk_gaps, 0);
    ASSERT_EQ(st.dtmf, 1);
    ASSERT_EQ(st.protocol_errors, 0);
    for (int i = 0; vb_twilio_error_reasons[i] != NULL; i++)
        ASSERT_EQ(metric(f, vb_twilio_error_reasons[i]), 0);
    client_close(c);
    fx_stop(f);
}

static void bad_token_case(const char *token_kind)
{
    fixture_t *f = fx_start(2, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    send_text(c, "{\"event\":\"connected\",\"protocol\":\"Call\","
                 "\"version\":\"1.0.0\"}");
    int64_t now = (int64_t)time(NULL);
    const char *tok = NULL;
    const char *label = token_kind;
    if (strcmp(token_kind, "forged") == 0) {
        char *t = make_token(f, 2, now + 60, CALL_SID);
        t[10] = t[10] == 'A' ? 'B' : 'A';
        tok = t;
    } else if (strcmp(token_kind, "other_call") == 0) {
        tok = make_token(f, 2, now + 60, "CAffffffffffffffffffffffffffffffff");
        label = "forged";
    } else if (strcmp(token_kind, "expired") == 0) {
        tok = make_token(f, 2, now - 5, CALL_SID);
    } else if (strcmp(token_kind, "wrong_lane") == 0) {
        tok = make_token(f, 3, now + 60, CALL_SID);
    } else if (strcmp(token_kind, "garbage") == 0) {
        tok = "not-a-token";
        label = "forged";
    }
    send_start(c, tok, "audio/x-mulaw");
    uint8_t mu[160] = {0};
    send_media(c, mu, sizeof mu);
    expect_close(c, 1008, "stream token");
    vb_msg_t m;
    ASSERT_TRUE(!pop_in(f, &m, 200));
    ASSERT_EQ(rejected(f, label), 1);
    ASSERT_EQ(vb_twilio_stream_last_stats(f->st, NULL), 0);
    client_close(c);
    fx_stop(f);
}

TEST_T(missing_token_closes_1008_nothing_downstream, 20)
{
    bad_token_case("missing");
}
TEST_T(forged_token_closes_1008_nothing_downstream, 20)
{
    bad_token_case("forged");
}
TEST_T(token_of_other_call_closes_1008, 20)
{
    bad_token_case("other_call");
}
TEST_T(garbage_token_closes_1008, 20)
{
    bad_token_case("garbage");
}
TEST_T(expired_token_closes_1008_nothing_downstream, 20)
{
    bad_token_case("expired");
}
TEST_T(wrong_lane_token_closes_1008_nothing_downstream, 20)
{
    bad_token_case("wrong_lane");
}

TEST_T(malformed_messages_are_counted_and_survived, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 1024, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    vb_call_id_t id = expect_open(f);
    struct {
        const char *json;
        const char *reason;
    } cases[] = {
        {"{\"event\":\"media\",", "invalid_json"},
        {"[1,2,3]", "invalid_json"},
        {"{\"event\":\"media\"} x", "invalid_json"},
        {"{\"event\":\"bogus\",\"streamSid\":\"" STREAM_SID "\"}",
         "unknown_event"},
        {"{\"streamSid\":\"" STREAM_SID "\"}", "missing_field"},
        {"{\"event\":\"media\",\"sequenceNumber\":\"9\",\"streamSid\":"
         "\"" STREAM_SID
         "\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\",\"timestamp\":"
         "\"5\"}}",
         "missing_field"},
        {"{\"event\":\"media\",\"sequenceNumber\":9,\"streamSid\":\"" STREAM_SID
         "\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\",\"timestamp\":"
         "\"5\",\"payload\":\"AAAA\"}}",
         "invalid_field"},
        {"{\"event\":\"media\",\"sequenceNumber\":\"9\",\"streamSid\":"
         "\"MZwrong\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\","
         "\"timestamp\":\"5\",\"payload\":\"AAAA\"}}",
         "wrong_stream_sid"},
        {"{\"event\":\"media\",\"sequenceNumber\":\"9\",\"streamSid\":"
         "\"" STREAM_SID
         "\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\",\"timestamp\":"
         "\"5\",\"payload\":\"@@@@\"}}",
         "bad_base64"},
        {"{\"event\":\"start\",\"sequenceNumber\":\"9\",\"streamSid\":"
         "\"" STREAM_SID "\",\"start\":{\"accountSid\":\"" ACCT_SID
         "\",\"streamSid\":\"" STREAM_SID "\",\"callSid\":\"" CALL_SID
         "\",\"mediaFormat\":{\"encoding\":\"audio/"
         "x-mulaw\",\"sampleRate\":8000,\"channels\":1}}}",
         "unexpected_event"},
        {"{\"event\":\"mark\",\"sequenceNumber\":\"9\",\"streamSid\":"
         "\"" STREAM_SID "\",\"mark\":{\"name\":\"never-sent\"}}",
         "unexpected_mark"},
        {"{\"event\":\"dtmf\",\"sequenceNumber\":\"9\",\"streamSid\":"
         "\"" STREAM_SID
         "\",\"dtmf\":{\"track\":\"inbound_track\",\"digit\":\"55\"}}",
         "invalid_field"},
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < ncases; i++)
        send_text(c, cases[i].json);
    /* A binary frame. */
    uint8_t w[64];
    size_t n = tf_frame(w, sizeof w, true, 0x2, true, "\x01\x02", 2);
    send_raw(c, w, n);
    /* The call survives: valid media still arrives. */
    c->seq = 20;
    uint8_t mu[160];
    mulaw_pattern(mu, sizeof mu, 7);
    send_media(c, mu, sizeof mu);
    vb_msg_t m;
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_AUDIO);
    ASSERT_TRUE(vb_call_id_eq(m.call, id));
    ASSERT_MEM_EQ(m.data, mu, 160);
    /* Nothing else reached the ring. */
    ASSERT_TRUE(!pop_in(f, &m, 100));
    int64_t want[16] = {0};
    const char *const *r = vb_twilio_error_reasons;
    for (size_t i = 0; i < ncases; i++)
        for (int k = 0; r[k] != NULL; k++)
            if (strcmp(r[k], cases[i].reason) == 0)
                want[k]++;
    for (int k = 0; r[k] != NULL; k++) {
        if (strcmp(r[k], "binary_frame") == 0)
            want[k] = 1;
        ASSERT_EQ(metric(f, r[k]), want[k]);
    }
    /* Then a clean hang-up by Twilio. */
    send_text(c, "{\"event\":\"stop\",\"sequenceNumber\":\"30\","
                 "\"streamSid\":\"" STREAM_SID "\"}");
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_CALL_CLOSE);
    vb_twilio_call_stats_t st;
    ASSERT_EQ(vb_twilio_stream_last_stats(f->st, &st), 1);
    /* Every case and the binary frame, less the unknown event, which is
     * counted apart: it never ends a call. */
    ASSERT_EQ(st.protocol_errors, ncases);
    ASSERT_EQ(st.unknown_events, 1);
    ASSERT_GT(st.seq_gaps, 0);
    client_close(c);
    fx_stop(f);
}

TEST_T(unknown_events_and_track_names_never_end_a_call, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 1024, 0);
    client_t *c = connect_client(f);
    send_text(c, "{\"event\":\"connected\",\"protocol\":\"Call\","
                 "\"version\":\"1.0.0\"}");
    /* A track name added later is not a malformed start. */
    char json[1024];
    snprintf(
        json, sizeof json,
        "{\"event\":\"start\",\"sequenceNumber\":\"1\","
        "\"start\":{\"accountSid\":\"" ACCT_SID "\",\"streamSid\":\"" STREAM_SID
        "\",\"callSid\":\"" CALL_SID
        "\",\"tracks\":[\"inbound\",\"inbound_v2\"],"
        "\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\",\"sampleRate\":"
        "8000,\"channels\":1},\"customParameters\":{\"streamToken\":\"%s\"}"
        "},\"streamSid\":\"" STREAM_SID "\"}",
        make_token(f, 0, (int64_t)time(NULL) + 60, CALL_SID));
    send_text(c, json);
    vb_call_id_t id = expect_open(f);
    /* More events nobody knows than the protocol-error limit. */
    for (int k = 0; k < 150; k++)
        send_text(c, "{\"event\":\"futureEvent\",\"sequenceNumber\":\"2\","
                     "\"streamSid\":\"" STREAM_SID "\",\"futureEvent\":{}}");
    c->seq = 3;
    uint8_t mu[160];
    mulaw_pattern(mu, sizeof mu, 3);
    send_media(c, mu, sizeof mu);
    vb_msg_t m;
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_AUDIO);
    ASSERT_TRUE(vb_call_id_eq(m.call, id));
    ASSERT_MEM_EQ(m.data, mu, 160);
    send_text(c, "{\"event\":\"stop\",\"sequenceNumber\":\"4\","
                 "\"streamSid\":\"" STREAM_SID "\"}");
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_CALL_CLOSE);
    /* The stats are recorded just after CALL_CLOSE is pushed: wait. */
    vb_twilio_call_stats_t st;
    uint64_t end =
        vb_clock_now_ns() + 5000000000ull * (uint64_t)vb_test_slowdown();
    while (vb_twilio_stream_last_stats(f->st, &st) < 1 &&
           vb_clock_now_ns() < end)
        usleep(1000);
    ASSERT_EQ(vb_twilio_stream_last_stats(f->st, &st), 1);
    ASSERT_EQ(st.unknown_events, 150);
    ASSERT_EQ(st.protocol_errors, 0);
    ASSERT_EQ(metric(f, "unknown_event"), 150);
    client_close(c);
    fx_stop(f);
}

TEST_T(messages_before_start_open_nothing, 20)
{
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    uint8_t mu[160] = {1};
    send_media(c, mu, sizeof mu);
    send_text(c, "{\"event\":\"stop\",\"sequenceNumber\":\"3\","
                 "\"streamSid\":\"" STREAM_SID "\"}");
    /* Then a valid start still works. */
    start_call(f, c, 0);
    expect_open(f);
    ASSERT_EQ(metric(f, "unexpected_event"), 2);
    client_close(c);
    fx_stop(f);
}

TEST_T(fatal_cases_close_with_codes, 30)
{
    struct {
        int kind;
        uint16_t code;
        const char *reason;
        const char *metric;
    } cases[] = {
        {0, 1009, NULL, "oversized"},
        {1, 1007, NULL, "invalid_utf8"},
        {2, 1008, "unsupported media format", "unsupported_format"},
        {3, 1008, "malformed start", "missing_field"},
        {4, 1002, NULL, "ws_protocol"},
        {5, 1008, "too many protocol errors", "invalid_json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture_t *f = fx_start(0, 4, 1, 64, 0);
        client_t *c = connect_client(f);
        switch (cases[i].kind) {
        case 0: {
            size_t n = 70000;
            char *big = malloc(n + 1);
            memset(big, ' ', n);
            big[0] = '{';
            big[n - 1] = '}';
            big[n] = '\0';
            send_text(c, big);
            free(big);
            break;
        }
        case 1:
            send_text(c, "{\"event\":\"conn\xc3\x28\"}");
            break;
        case 2:
            send_start(c, make_token(f, 0, (int64_t)time(NULL) + 60, CALL_SID),
                       "audio/l16");
            break;
        case 3:
            send_text(c, "{\"event\":\"start\",\"sequenceNumber\":\"1\","
                         "\"streamSid\":\"" STREAM_SID "\",\"start\":{}}");
            break;
        case 4: {
            uint8_t w[16];
            size_t n = tf_frame(w, sizeof w, true, 0x1, false, "{}", 2);
            send_raw(c, w, n);
            break;
        }
        case 5:
            for (int k = 0; k < 25; k++)
                send_text(c, "[1]");
            break;
        }
        expect_close(c, cases[i].code, cases[i].reason);
        vb_msg_t m;
        ASSERT_TRUE(!pop_in(f, &m, 100));
        /* The metric is written by the stage thread just before or after
         * the close frame leaves. */
        ASSERT_TRUE(wait_metric(f, cases[i].metric, 5000));
        client_close(c);
        fx_stop(f);
    }
}

TEST_T(no_start_times_out_1008, 20)
{
    fixture_t *f = fx_start(0, 4, 1, 64, 300);
    client_t *c = connect_client(f);
    send_text(c, "{\"event\":\"connected\",\"protocol\":\"Call\","
                 "\"version\":\"1.0.0\"}");
    expect_close(c, 1008, "no start");
    client_close(c);
    fx_stop(f);
}

TEST_T(lane_full_refuses_with_1013, 20)
{
    fixture_t *f = fx_start(0, 1, 1, 64, 0);
    client_t *a = connect_client(f);
    start_call(f, a, 0);
    expect_open(f);
    /* An unauthenticated stream does not take a call slot: it waits in
     * the pre-auth pool, and only its verified `start` finds none. */
    client_t *b = connect_client(f);
    start_call_for(f, b, 0, "CA00000000000000000000000000000002");
    expect_close(b, 1013, "lane full");
    ASSERT_EQ(rejected(f, "lane_full"), 1);
    client_close(a);
    client_close(b);
    fx_stop(f);
}

TEST_T(inbound_ring_full_pushes_back_without_loss, 30)
{
    /* A tiny inbound ring that the "DSP" does not drain while Twilio
     * sends: the stage must park, stop reading and lose nothing. */
    fixture_t *f = fx_start(0, 4, 1, 4, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    enum { N = 120 }; /* 2.4 s of audio at once: within the rate burst */
    for (unsigned i = 0; i < N; i++) {
        uint8_t mu[160];
        mulaw_pattern(mu, sizeof mu, i);
        send_media(c, mu, sizeof mu);
    }
    /* Nothing is read until the stage has filled the ring and parked. */
    uint64_t deadline =
        vb_clock_now_ns() + 5000000000ull * (uint64_t)vb_test_slowdown();
    while (vb_ring_count(&f->in.ring) < vb_ring_capacity(&f->in.ring)) {
        ASSERT_LT(vb_clock_now_ns(), deadline);
        usleep(1000);
    }
    vb_call_id_t id = expect_open(f);
    /* Audio may come coalesced; the byte stream must be exact. */
    size_t total = 0;
    uint8_t *all = malloc(N * 160);
    while (total < N * 160) {
        vb_msg_t m;
        ASSERT_TRUE(pop_in(f, &m, 5000));
        ASSERT_EQ(m.kind, VB_MSG_AUDIO);
        ASSERT_TRUE(vb_call_id_eq(m.call, id));
        ASSERT_LE(total + m.len, N * 160);
        memcpy(all + total, m.data, m.len);
        total += m.len;
    }
    for (unsigned i = 0; i < N; i++) {
        uint8_t mu[160];
        mulaw_pattern(mu, sizeof mu, i);
        ASSERT_MEM_EQ(all + i * 160, mu, 160);
    }
    free(all);
    vb_metric_t full;
    ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER, "vb_ring_full_total", "",
                             VB_LABELS("ring", "twilio_to_dsp"), &full),
              0);
    ASSERT_GT(vb_metrics_value(f->m, full), 0);
    client_close(c);
    fx_stop(f);
}

/* ---- outbound ---- */

static void expect_media(client_t *c, const uint8_t *want, size_t n)
{
    cJSON *j = read_json(c);
    ASSERT_STR_EQ(jstr(j, "event"), "media");
    ASSERT_STR_EQ(jstr(j, "streamSid"), STREAM_SID);
    ASSERT_EQ(nkeys(j), 3);
    const cJSON *media = cJSON_GetObjectItemCaseSensitive(j, "media");
    ASSERT_TRUE(cJSON_IsObject(media));
    ASSERT_EQ(nkeys(media), 1);
    const char *p = jstr(media, "payload");
    uint8_t dec[8192];
    size_t dl = 0;
    ASSERT_EQ(mbedtls_base64_decode(dec, sizeof dec, &dl,
                                    (const unsigned char *)p, strlen(p)),
              0);
    ASSERT_EQ(dl, n);
    ASSERT_MEM_EQ(dec, want, n);
    cJSON_Delete(j);
}

static void expect_event(client_t *c, const char *event, const char *mark)
{
    cJSON *j = read_json(c);
    ASSERT_STR_EQ(jstr(j, "event"), event);
    ASSERT_STR_EQ(jstr(j, "streamSid"), STREAM_SID);
    if (mark != NULL) {
        ASSERT_EQ(nkeys(j), 3);
        const cJSON *mk = cJSON_GetObjectItemCaseSensitive(j, "mark");
        ASSERT_TRUE(cJSON_IsObject(mk));
        ASSERT_EQ(nkeys(mk), 1);
        ASSERT_STR_EQ(jstr(mk, "name"), mark);
    } else {
        ASSERT_EQ(nkeys(j), 2);
    }
    cJSON_Delete(j);
}

/* ---- strangers, duplicates, floods and silence ---- */

static int64_t counter(fixture_t *f, const char *name)
{
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER, name, "", NULL, &id), 0);
    return vb_metrics_value(f->m, id);
}

static bool pop_kind(fixture_t *f, vb_msg_t *m, int kind, int ms)
{
    while (pop_in(f, m, ms))
        if (m->kind == kind)
            return true;
    return false;
}

TEST_T(unauthenticated_streams_take_no_call_slot, 30)
{
    /* Twice as many strangers as call slots, holding their sockets open
     * without `start`: a signed call still gets a slot. */
    fixture_t *f = fx_start(0, 2, 1, 64, 20000);
    client_t *idle[4];
    for (int i = 0; i < 4; i++) {
        idle[i] = connect_client(f);
        send_text(idle[i], "{\"event\":\"connected\",\"protocol\":"
                           "\"Call\",\"version\":\"1.0.0\"}");
    }
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    ASSERT_TRUE(wait_calls(f, 1, 5000));
    ASSERT_EQ(counter(f, "vb_twilio_streams_unauthenticated_total"), 5);
    ASSERT_EQ(rejected(f, "lane_full"), 0);
    client_close(c);
    for (int i = 0; i < 4; i++)
        client_close(idle[i]);
    fx_stop(f);
}

TEST_T(full_preauth_pool_evicts_the_oldest_stranger, 30)
{
    fx_over.max_preauth = 3;
    fixture_t *f = fx_start(0, 2, 1, 64, 20000);
    client_t *idle[3];
    for (int i = 0; i < 3; i++)
        idle[i] = connect_client(f);
    /* Strangers younger than 250 ms are never evicted: let these age. */
    usleep(300000);
    /* The fourth stranger pushes out the first. */
    client_t *late = connect_client(f);
    expect_close(idle[0], 1013, "waiting for start");
    ASSERT_EQ(rejected(f, "preauth_full"), 1);
    /* A real stream arriving into the full pool evicts one more and
     * opens its call. */
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    expect_close(idle[1], 1013, "waiting for start");
    ASSERT_EQ(rejected(f, "preauth_full"), 2);
    client_close(c);
    client_close(late);
    for (int i = 0; i < 3; i++)
        client_close(idle[i]);
    fx_stop(f);
    fx_over.max_preauth = 0;
}

TEST_T(per_peer_bound_evicts_that_peers_oldest, 30)
{
    fx_over.per_peer = 2; /* every test connection has the same peer */
    fixture_t *f = fx_start(0, 2, 1, 64, 20000);
    client_t *a = connect_client(f), *b = connect_client(f);
    usleep(300000); /* past the minimum age of a victim */
    client_t *c = connect_client(f);
    expect_close(a, 1013, "waiting for start");
    ASSERT_EQ(rejected(f, "preauth_full"), 1);
    client_close(a);
    client_close(b);
    client_close(c);
    fx_stop(f);
    fx_over.per_peer = 0;
}

TEST_T(too_much_data_before_start_closes, 20)
{
    fixture_t *f = fx_start(0, 2, 1, 64, 20000);
    /* One message over the pre-auth message limit: 1009. */
    client_t *a = connect_client(f);
    static char big[VB_TWILIO_PREAUTH_MAX_MESSAGE + 64];
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    send_text(a, big);
    expect_close(a, 1009, NULL);
    /* Small messages adding up past the byte budget: 1008. */
    client_t *b = connect_client(f);
    static char mid[VB_TWILIO_PREAUTH_MAX_MESSAGE / 2];
    memset(mid, ' ', sizeof mid - 1);
    mid[0] = '{';
    mid[sizeof mid - 2] = '}';
    for (unsigned i = 0; i <= VB_TWILIO_PREAUTH_MAX_BYTES / (sizeof mid - 1);
         i++)
        send_text(b, mid);
    expect_close(b, 1008, "too much data before start");
    ASSERT_EQ(rejected(f, "preauth_limit"), 1);
    vb_msg_t m;
    ASSERT_TRUE(!pop_in(f, &m, 100)); /* nothing opened downstream */
    client_close(a);
    client_close(b);
    fx_stop(f);
}

TEST_T(one_stream_per_call_and_token_single_use, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *a = connect_client(f);
    start_call(f, a, 0);
    expect_open(f);
    /* Same token, same call, while the first is live. */
    client_t *b = connect_client(f);
    start_call(f, b, 0);
    expect_close(b, 1008, "already used");
    ASSERT_EQ(rejected(f, "duplicate"), 1);
    ASSERT_TRUE(wait_calls(f, 1, 5000));
    /* After the call ended, the token does not open another. */
    send_text(a,
              "{\"event\":\"stop\",\"sequenceNumber\":\"9\","
              "\"streamSid\":\"" STREAM_SID "\",\"stop\":{"
              "\"accountSid\":\"" ACCT_SID "\",\"callSid\":\"" CALL_SID "\"}}");
    vb_msg_t m;
    ASSERT_TRUE(pop_kind(f, &m, VB_MSG_CALL_CLOSE, 5000));
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_close(c, 1008, "already used");
    ASSERT_EQ(rejected(f, "duplicate"), 2);
    ASSERT_TRUE(!pop_kind(f, &m, VB_MSG_CALL_OPEN, 200));
    client_close(a);
    client_close(b);
    client_close(c);
    fx_stop(f);
}

TEST_T(media_faster_than_real_time_is_dropped_then_closed, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 4096, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    /* 20 s of audio at once: far past 2x real time. */
    enum { N = 1000 };
    uint8_t mu[160];
    memset(mu, 0x7f, sizeof mu);
    uint64_t t0 = vb_clock_now_ns();
    for (unsigned i = 0; i < N; i++)
        send_media(c, mu, sizeof mu);
    expect_close(c, 1008, "faster than real time");
    uint64_t secs = (vb_clock_now_ns() - t0) / 1000000000ull + 1;
    /* What reached dsp is at most the burst plus what the rate allowed
     * while the frames arrived. */
    size_t got = 0;
    vb_msg_t m;
    while (pop_in(f, &m, 200))
        if (m.kind == VB_MSG_AUDIO)
            got += m.len;
    size_t bound = 8u * VB_TWILIO_RATE_BURST_MS +
                   (size_t)secs * 8000u * VB_TWILIO_RATE_X + 160;
    if (got > bound)
        vb_test_fail(__FILE__, __LINE__, "%zu bytes passed, bound %zu", got,
                     bound);
    ASSERT_GT(got, 0);
    ASSERT_GT(counter(f, "vb_twilio_inbound_throttled_bytes_total"), 0);
    client_close(c);
    fx_stop(f);
}

TEST_T(silent_stream_is_closed_after_the_media_timeout, 30)
{
    fx_over.media_timeout_ms = 1000;
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    expect_close(c, 1008, "no media");
    vb_msg_t m;
    ASSERT_TRUE(pop_kind(f, &m, VB_MSG_CALL_CLOSE, 5000));
    ASSERT_TRUE(wait_calls(f, 0, 5000));
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER, "vb_calls_total", "",
                             VB_LABELS("outcome", "timeout"), &id),
              0);
    ASSERT_EQ(vb_metrics_value(f->m, id), 1);
    client_close(c);
    fx_stop(f);
    fx_over.media_timeout_ms = 0;
}

/* Only media (or the echo of a mark it sent) keeps a stream alive: one
 * that sends DTMF and unknown events every 200 ms but no media is closed
 * at the media timeout all the same. */
TEST_T(events_without_media_do_not_keep_a_stream_alive, 30)
{
    fx_over.media_timeout_ms = 1000;
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    uint64_t t0 = vb_clock_now_ns();
    tf_parsed_t *pf = malloc(sizeof *pf);
    bool closed = false;
    for (unsigned seq = 3; seq < 60 && !closed; seq += 2) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "{\"event\":\"dtmf\",\"streamSid\":\"" STREAM_SID
                 "\",\"sequenceNumber\":\"%u\",\"dtmf\":{\"track\":"
                 "\"inbound_track\",\"digit\":\"1\"}}",
                 seq);
        send_text(c, msg);
        snprintf(msg, sizeof msg,
                 "{\"event\":\"keepalive\",\"streamSid\":\"" STREAM_SID
                 "\",\"sequenceNumber\":\"%u\"}",
                 seq + 1);
        send_text(c, msg);
        while (read_frame(c, pf, 200))
            if (pf->op == 0x8) {
                closed = true;
                break;
            }
    }
    ASSERT_TRUE(closed);
    ASSERT_EQ(tf_close_code(pf), 1008);
    char r[128] = {0};
    memcpy(r, pf->payload + 2, pf->len - 2);
    ASSERT_STR_CONTAINS(r, "no media");
    free(pf);
    /* Not before the timeout. */
    ASSERT_GE((vb_clock_now_ns() - t0) / 1000000ull, 900);
    vb_msg_t m;
    ASSERT_TRUE(pop_kind(f, &m, VB_MSG_CALL_CLOSE, 5000));
    ASSERT_TRUE(wait_calls(f, 0, 5000));
    client_close(c);
    fx_stop(f);
    fx_over.media_timeout_ms = 0;
}

/* A media message at `ts_ms` on Twilio's timeline. */
static void send_media_at(client_t *c, const uint8_t *mulaw, size_t n,
                          uint64_t ts_ms)
{
    char b64[2048];
    size_t bl = 0;
    ASSERT_EQ(
        mbedtls_base64_encode((unsigned char *)b64, sizeof b64, &bl, mulaw, n),
        0);
    b64[bl] = '\0';
    char json[4096];
    c->chunk++;
    snprintf(json, sizeof json,
             "{\"event\":\"media\",\"sequenceNumber\":\"%llu\",\"media\":{"
             "\"track\":\"inbound\",\"chunk\":\"%llu\",\"timestamp\":\"%llu\","
             "\"payload\":\"%s\"},\"streamSid\":\"" STREAM_SID "\"}",
             (unsigned long long)c->seq++, (unsigned long long)c->chunk,
             (unsigned long long)ts_ms, b64);
    send_text(c, json);
}

/* Pops AUDIO until one equal to `want` (160 bytes); returns how many
 * all-silence frames came before it, failing on anything else. */
static int silence_before(fixture_t *f, const uint8_t *want)
{
    int quiet = 0;
    vb_msg_t m;
    for (;;) {
        ASSERT_TRUE(pop_kind(f, &m, VB_MSG_AUDIO, 5000));
        ASSERT_EQ(m.len, 160);
        if (memcmp(m.data, want, 160) == 0)
            return quiet;
        for (int i = 0; i < 160; i++)
            ASSERT_EQ(m.data[i], 0xFF);
        quiet++;
    }
}

/* A jump in media.timestamp (a leg that sent nothing while the caller was
 * silent) reaches the model as that much μ-law silence, bounded; media
 * that keeps time gets none. */
TEST_T(media_timestamp_gap_reaches_the_model_as_silence, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 512, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    uint8_t a[160], b[160], d[160], e[160];
    mulaw_pattern(a, 160, 1);
    mulaw_pattern(b, 160, 2);
    mulaw_pattern(d, 160, 3);
    mulaw_pattern(e, 160, 4);
    send_media_at(c, a, 160, 0);
    send_media_at(c, b, 160, 20);    /* on time */
    send_media_at(c, d, 160, 1020);  /* 980 ms missing */
    send_media_at(c, e, 160, 60000); /* a minute: capped */
    ASSERT_EQ(silence_before(f, a), 0);
    ASSERT_EQ(silence_before(f, b), 0);
    ASSERT_EQ(silence_before(f, d), 49);
    ASSERT_EQ(silence_before(f, e), (int)(VB_TWILIO_GAP_FILL_MAX_MS / 20));
    ASSERT_EQ(counter(f, "vb_twilio_silence_frames_total"),
              49 + VB_TWILIO_GAP_FILL_MAX_MS / 20);
    client_close(c);
    fx_stop(f);
}

/* No media at all for media_gap_fill_ms: silence goes to the model in
 * real time meanwhile (so the turn can end before the caller speaks
 * again), at most VB_TWILIO_GAP_FILL_MAX_MS; the next media's timestamp
 * gap is not filled twice. */
TEST_T(no_media_for_a_while_sends_silence_in_real_time, 30)
{
    fx_over.media_gap_fill_ms = 200;
    fixture_t *f = fx_start(0, 4, 1, 512, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    uint8_t a[160], b[160];
    mulaw_pattern(a, 160, 5);
    mulaw_pattern(b, 160, 6);
    send_media_at(c, a, 160, 0);
    ASSERT_EQ(silence_before(f, a), 0);
    /* Silence comes without any further media. */
    uint64_t t0 = vb_clock_now_ns();
    vb_msg_t m;
    ASSERT_TRUE(pop_kind(f, &m, VB_MSG_AUDIO, 5000));
    ASSERT_EQ(m.data[0], 0xFF);
    ASSERT_GE(vb_clock_now_ns() - t0, 100 * 1000000ull);
    /* Bounded: after the cap nothing more comes. */
    int64_t want = VB_TWILIO_GAP_FILL_MAX_MS / 20;
    uint64_t end = vb_clock_now_ns() + 10000ull * 1000000ull;
    while (counter(f, "vb_twilio_silence_frames_total") < want &&
           vb_clock_now_ns() < end)
        usleep(10000);
    usleep(300000);
    ASSERT_EQ(counter(f, "vb_twilio_silence_frames_total"), want);
    /* The caller speaks again 5 s later on Twilio's timeline: the gap is
     * already filled to the cap. */
    send_media_at(c, b, 160, 5000);
    ASSERT_EQ(silence_before(f, b), (int)want - 1);
    ASSERT_EQ(counter(f, "vb_twilio_silence_frames_total"), want);
    client_close(c);
    fx_stop(f);
    fx_over.media_gap_fill_ms = 0;
}

TEST_T(max_call_duration_hangs_up, 30)
{
    fx_over.max_call_s = 1;
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    /* As for end_call: a "hangup" mark, and once Twilio echoes it the
     * stream closes normally (no REST credentials here). */
    expect_event(c, "mark", "hangup");
    send_text(c, "{\"event\":\"mark\",\"sequenceNumber\":\"3\","
                 "\"streamSid\":\"" STREAM_SID "\",\"mark\":{\"name\":"
                 "\"hangup\"}}");
    expect_close(c, 1000, "hangup");
    /* A time limit: the outcome is max_duration, not the model's
     * hang-up. */
    vb_msg_t m;
    ASSERT_TRUE(pop_kind(f, &m, VB_MSG_CALL_CLOSE, 5000));
    ASSERT_STR_EQ((const char *)m.data, "max_duration");
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER, "vb_calls_total", "",
                             VB_LABELS("outcome", "max_duration"), &id),
              0);
    ASSERT_TRUE(wait_calls(f, 0, 5000));
    ASSERT_EQ(vb_metrics_value(f->m, id), 1);
    client_close(c);
    fx_stop(f);
    fx_over.max_call_s = 0;
}

TEST_T(outbound_media_marks_clear_and_hangup_arrive_as_sent, 30)
{
    fixture_t *f = fx_start(0, 4, 1, 1024, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    vb_call_id_t id = expect_open(f);
    uint8_t frames[5][160];
    for (int i = 0; i < 5; i++) {
        mulaw_pattern(frames[i], 160, 100 + (unsigned)i);
        push_out(f, id, VB_MSG_AUDIO, frames[i], 160, false);
    }
    const char *name = "resp-1 \"quoted\"";
    push_out(f, id, VB_MSG_MARK, name, strlen(name), true);
    for (int i = 0; i < 5; i++)
        expect_media(c, frames[i], 160);
    expect_event(c, "mark", name);
    /* Twilio echoes the mark: a played (not cleared) MARK goes inbound. */
    char echo[256];
    snprintf(echo, sizeof echo,
             "{\"event\":\"mark\",\"sequenceNumber\":\"3\",\"streamSid\":"
             "\"" STREAM_SID
             "\",\"mark\":{\"name\":\"resp-1 \\\"quoted\\\"\"}}");
    send_text(c, echo);
    vb_msg_t m;
    /* Echoes are handled here, not sent down the lane: wait until it is
     * read, so it is not taken for one cleared by what follows. */
    ASSERT_TRUE(wait_echoed(f, 1, 5000));
    /* A mark, then clear: its echo counts as cleared. */
    push_out(f, id, VB_MSG_AUDIO, frames[0], 160, false);
    push_out(f, id, VB_MSG_MARK, "m2", 2, false);
    push_out(f, id, VB_MSG_CLEAR, NULL, 0, false);
    push_out(f, id, VB_MSG_TURN_END, NULL, 0, true);
    expect_media(c, frames[0], 160);
    expect_event(c, "mark", "m2");
    expect_event(c, "clear", NULL);
    expect_event(c, "mark", "turn-1");
    send_text(c, "{\"event\":\"mark\",\"sequenceNumber\":\"4\",\"streamSid\":"
                 "\"" STREAM_SID "\",\"mark\":{\"name\":\"m2\"}}");
    ASSERT_TRUE(wait_echoed(f, 2, 5000));
    /* Hang-up: a "hangup" mark goes out behind the audio; the stream
     * closes (1000) only once every mark up to it is echoed, i.e. the
     * goodbye has played; then CALL_CLOSE goes downstream. */
    push_out(f, id, VB_MSG_HANGUP, NULL, 0, true);
    expect_event(c, "mark", "hangup");
    tf_parsed_t early;
    ASSERT_TRUE(!read_frame(c, &early, 150)); /* still open: turn-1 unplayed */
    send_text(c, "{\"event\":\"mark\",\"sequenceNumber\":\"5\",\"streamSid\":"
                 "\"" STREAM_SID "\",\"mark\":{\"name\":\"turn-1\"}}");
    ASSERT_TRUE(!read_frame(c, &early, 150));
    send_text(c, "{\"event\":\"mark\",\"sequenceNumber\":\"6\",\"streamSid\":"
                 "\"" STREAM_SID "\",\"mark\":{\"name\":\"hangup\"}}");
    expect_close(c, 1000, "hangup");
    ASSERT_TRUE(pop_in(f, &m, 5000));
    ASSERT_EQ(m.kind, VB_MSG_CALL_CLOSE);
    ASSERT_MEM_EQ(m.data, "hangup", 6);
    vb_twilio_call_stats_t st;
    ASSERT_EQ(vb_twilio_stream_last_stats(f->st, &st), 1);
    ASSERT_EQ(st.frames_out, 6);
    ASSERT_EQ(st.bytes_out, 6 * 160);
    ASSERT_EQ(st.marks_sent, 4); /* resp-1, m2, turn-1, hangup */
    ASSERT_EQ(st.marks_echoed, 4);
    ASSERT_EQ(st.marks_cleared, 1);
    ASSERT_EQ(st.clears, 1);
    ASSERT_EQ(st.bytes_played + st.bytes_cleared, st.bytes_out);
    /* Messages for the ended call are dropped as stale. */
    push_out(f, id, VB_MSG_AUDIO, frames[0], 160, true);
    client_close(c);
    fx_stop(f);
}

TEST_T(outbound_batching_cuts_media_in_frame_multiples, 30)
{
    fixture_t *f = fx_start(0, 4, 3, 1024, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    vb_call_id_t id = expect_open(f);
    uint8_t all[7 * 160];
    mulaw_pattern(all, sizeof all, 9);
    for (int i = 0; i < 7; i++)
        push_out(f, id, VB_MSG_AUDIO, all + i * 160, 160, false);
    ring_out(f);
    /* One doorbell for all seven frames: 3 + 3 + the tail at ring end. */
    expect_media(c, all, 480);
    expect_media(c, all + 480, 480);
    expect_media(c, all + 960, 160);
    client_close(c);
    fx_stop(f);
}

/* ---- the message parser (net/twilio_msg.c) ---- */

static int parse(const char *json, vb_twilio_msg_t *m, vb_twilio_msg_error_t *e)
{
    static char buf[8192];
    size_t n = strlen(json);
    ASSERT_LT(n, sizeof buf);
    memcpy(buf, json, n);
    return vb_twilio_msg_parse(buf, n, m, e);
}

TEST(msg_parses_the_captured_messages)
{
    vb_twilio_msg_t m;
    vb_twilio_msg_error_t e;
    ASSERT_EQ(parse("{\"event\":\"connected\",\"protocol\":\"Call\","
                    "\"version\":\"1.0.0\"}",
                    &m, &e),
              0);
    ASSERT_EQ(m.event, VB_TWILIO_EV_CONNECTED);
    ASSERT_STR_EQ(m.connected.protocol.p, "Call");
    /* Key order differs between messages: never relied on. */
    ASSERT_EQ(parse("{\"streamSid\":\"MZ1\",\"start\":{\"customParameters\":{"
                    "\"streamToken\":\"t\\u00e9\",\"x\":\"\"},\"mediaFormat\":"
                    "{\"channels\":1,\"sampleRate\":8000,\"encoding\":"
                    "\"audio/x-mulaw\"},\"tracks\":[\"inbound\"],\"callSid\":"
                    "\"CA1\",\"streamSid\":\"MZ1\",\"accountSid\":\"AC1\"},"
                    "\"sequenceNumber\":\"1\",\"event\":\"start\"}",
                    &m, &e),
              0);
    ASSERT_EQ(m.event, VB_TWILIO_EV_START);
    ASSERT_EQ(m.seq, 1);
    ASSERT_STR_EQ(m.start.call_sid.p, "CA1");
    ASSERT_EQ(m.start.sample_rate, 8000);
    ASSERT_EQ(m.start.channels, 1);
    ASSERT_EQ(m.start.tracks, VB_TWILIO_TRACK_INBOUND);
    ASSERT_EQ(m.start.nparams, 2);
    ASSERT_STR_EQ(vb_twilio_msg_param(&m, "streamToken"), "t\xc3\xa9");
    ASSERT_STR_EQ(vb_twilio_msg_param(&m, "x"), "");
    ASSERT_NULL(vb_twilio_msg_param(&m, "nope"));
    /* customParameters may be missing entirely (older captures). */
    ASSERT_EQ(parse("{\"event\":\"start\",\"sequenceNumber\":\"1\","
                    "\"streamSid\":\"MZ1\",\"start\":{\"callSid\":\"CA1\","
                    "\"streamSid\":\"MZ1\",\"accountSid\":\"AC1\","
                    "\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\","
                    "\"sampleRate\":8000,\"channels\":1}}}",
                    &m, &e),
              0);
    ASSERT_EQ(m.start.nparams, 0);
    ASSERT_EQ(parse("{\"event\":\"media\",\"sequenceNumber\":\"2\",\"media\":{"
                    "\"track\":\"inbound\",\"chunk\":\"1\",\"timestamp\":"
                    "\"155\",\"payload\":\"f39/\\/w==\"},\"streamSid\":"
                    "\"MZ1\"}",
                    &m, &e),
              0);
    ASSERT_EQ(m.media.chunk_n, 1);
    ASSERT_EQ(m.media.timestamp_ms, 155);
    ASSERT_STR_EQ(m.media.payload.p, "f39//w==");
    ASSERT_EQ(parse("{\"event\":\"mark\",\"sequenceNumber\":\"4\","
                    "\"streamSid\":\"MZ1\",\"mark\":{\"name\":"
                    "\"a\\\"b\\\\c\\n\\ud83d\\ude00\"}}",
                    &m, &e),
              0);
    ASSERT_STR_EQ(m.mark.name.p, "a\"b\\c\n\xf0\x9f\x98\x80");
    ASSERT_EQ(parse("{\"event\":\"stop\",\"sequenceNumber\":\"378\","
                    "\"streamSid\":\"MZ1\",\"stop\":{\"accountSid\":\"AC1\","
                    "\"callSid\":\"CA1\"}}",
                    &m, &e),
              0);
    ASSERT_EQ(m.event, VB_TWILIO_EV_STOP);
    ASSERT_EQ(
        parse(" {\"event\":\"whatever\",\"extra\":[1,{\"a\":null}]} ", &m, &e),
        0);
    ASSERT_EQ(m.event, VB_TWILIO_EV_UNKNOWN);
}

TEST(msg_rejects_bad_input_with_reasons)
{
    vb_twilio_msg_t m;
    vb_twilio_msg_error_t e;
    const char *bad_json[] = {
        "",
        "{",
        "{}x",
        "[]",
        "\"s\"",
        "{\"event\":\"media\",}",
        "{\"event\":'x'}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":-}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\x01\"}",
        "{\"a\":tru}",
        "{\"a\" 1}",
        "{\"a\":[1,]}",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        ASSERT_EQ(parse(bad_json[i], &m, &e), VB_EPROTO);
        ASSERT_STR_EQ(e.reason, "invalid_json");
    }
    /* Nesting limit. */
    char deep[256] = "{\"a\":";
    for (int i = 0; i < 20; i++)
        strcat(deep, "[");
    ASSERT_EQ(parse(deep, &m, &e), VB_EPROTO);
    ASSERT_EQ(parse("{\"protocol\":\"Call\"}", &m, &e), VB_ENOENT);
    ASSERT_STR_EQ(e.field, "event");
    ASSERT_EQ(parse("{\"event\":5}", &m, &e), VB_EINVAL);
    ASSERT_EQ(parse("{\"event\":\"media\",\"streamSid\":\"MZ\","
                    "\"sequenceNumber\":\"1\",\"media\":{\"track\":\"inbound\","
                    "\"chunk\":\"1\",\"timestamp\":\"1\"}}",
                    &m, &e),
              VB_ENOENT);
    ASSERT_STR_EQ(e.reason, "missing_field");
    ASSERT_STR_EQ(e.field, "media.payload");
    ASSERT_EQ(parse("{\"event\":\"media\",\"streamSid\":\"MZ\","
                    "\"sequenceNumber\":\"x1\",\"media\":{}}",
                    &m, &e),
              VB_EINVAL);
    ASSERT_STR_EQ(e.field, "sequenceNumber");
    ASSERT_EQ(parse("{\"event\":\"media\",\"streamSid\":\"MZ\","
                    "\"sequenceNumber\":\"1\",\"media\":\"x\"}",
                    &m, &e),
              VB_EINVAL);
    ASSERT_STR_EQ(e.field, "media");
    ASSERT_EQ(parse("{\"event\":\"start\",\"streamSid\":\"MZ\","
                    "\"sequenceNumber\":\"1\",\"start\":{\"mediaFormat\":{"
                    "\"sampleRate\":\"8000\"}}}",
                    &m, &e),
              VB_EINVAL);
    ASSERT_STR_EQ(e.field, "start.mediaFormat.sampleRate");
    ASSERT_EQ(m.event, VB_TWILIO_EV_START);
    /* More custom parameters than kept. */
    char many[2048] = "{\"event\":\"start\",\"streamSid\":\"MZ\","
                      "\"sequenceNumber\":\"1\",\"start\":{"
                      "\"customParameters\":{";
    for (int i = 0; i < VB_TWILIO_MAX_PARAMS + 1; i++) {
        char kv[32];
        snprintf(kv, sizeof kv, "%s\"k%d\":\"v\"", i ? "," : "", i);
        strcat(many, kv);
    }
    strcat(many, "}}}");
    ASSERT_EQ(parse(many, &m, &e), VB_EINVAL);
    ASSERT_STR_EQ(e.field, "start.customParameters");
}

TEST(msg_json_escape)
{
    char out[64];
    size_t n = vb_twilio_json_escape("a\"b\\\n\x01", 6, out, sizeof out);
    ASSERT_EQ(n, strlen("a\\\"b\\\\\\n\\u0001"));
    ASSERT_MEM_EQ(out, "a\\\"b\\\\\\n\\u0001", n);
    ASSERT_EQ(vb_twilio_json_escape("\"\"\"", 3, out, 5), 0);
}

/* This process's TCP socket whose peer is 127.0.0.1:`port`; -1 if none. */
static int socket_with_peer_port(int port)
{
    for (int fd = 3; fd < 4096; fd++) {
        struct sockaddr_in a;
        socklen_t sl = sizeof a;
        if (getpeername(fd, (struct sockaddr *)&a, &sl) == 0 &&
            a.sin_family == AF_INET && ntohs(a.sin_port) == port)
            return fd;
    }
    return -1;
}

/* The adopted stream socket gets TCP keepalive (net/tcp.c): a Twilio edge
 * that vanished without a FIN is found in 30 s, not two hours. Adoption
 * happens on the lane's thread: polled. */
TEST_T(adopted_stream_socket_has_tcp_keepalive, 20)
{
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    struct sockaddr_in me;
    socklen_t sl = sizeof me;
    ASSERT_EQ(getsockname(c->fd, (struct sockaddr *)&me, &sl), 0);
    int fd = socket_with_peer_port(ntohs(me.sin_port));
    ASSERT_GE(fd, 0);
    /* The stage sets the options one after the other on its thread:
     * wait until all four are in place. */
    int on = 0, idle = 0, intvl = 0, cnt = 0;
    uint64_t end = vb_clock_now_ns() + 5000000000ull;
    for (;;) {
        socklen_t ol = sizeof(int);
        ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &ol), 0);
        ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &ol), 0);
        ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &ol), 0);
        ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &ol), 0);
        if ((on == 1 && idle == VB_TCP_KEEPALIVE_IDLE_S &&
             intvl == VB_TCP_KEEPALIVE_INTVL_S &&
             cnt == VB_TCP_KEEPALIVE_CNT) ||
            vb_clock_now_ns() > end)
            break;
        usleep(1000);
    }
    ASSERT_EQ(on, 1);
    ASSERT_EQ(idle, VB_TCP_KEEPALIVE_IDLE_S);
    ASSERT_EQ(intvl, VB_TCP_KEEPALIVE_INTVL_S);
    ASSERT_EQ(cnt, VB_TCP_KEEPALIVE_CNT);
    client_close(c);
    fx_stop(f);
}

/* A call hung up at --max-call-duration ends "max_duration", told apart
 * from a media timeout in vb_calls_total (the call report says
 * "timeout" for both). */
TEST_T(max_call_duration_ends_with_its_own_outcome, 30)
{
    fx_over.max_call_s = 1;
    fixture_t *f = fx_start(0, 4, 1, 64, 0);
    client_t *c = connect_client(f);
    start_call(f, c, 0);
    expect_open(f);
    expect_event(c, "mark", "hangup");
    send_text(c, "{\"event\":\"mark\",\"sequenceNumber\":\"3\","
                 "\"streamSid\":\"" STREAM_SID "\",\"mark\":{\"name\":"
                 "\"hangup\"}}");
    expect_close(c, 1000, "hangup");
    vb_msg_t m;
    ASSERT_TRUE(pop_kind(f, &m, VB_MSG_CALL_CLOSE, 5000));
    vb_msg_close_t cl;
    ASSERT_EQ(vb_msg_close_get(&m, &cl), 0);
    ASSERT_STR_EQ(cl.reason, "max_duration");
    ASSERT_TRUE(wait_calls(f, 0, 5000));
    static const char *const want[][2] = {
        {"max_duration", "1"}, {"hangup", "0"}, {"timeout", "0"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        vb_metric_t id;
        ASSERT_EQ(vb_metrics_add(f->m, VB_METRIC_COUNTER, "vb_calls_total", "",
                                 VB_LABELS("outcome", want[i][0]), &id),
                  0);
        ASSERT_EQ(vb_metrics_value(f->m, id), atoi(want[i][1]));
    }
    client_close(c);
    fx_stop(f);
    fx_over.max_call_s = 0;
}
