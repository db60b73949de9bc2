/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the twilio-io per-call state machine
 * (net/twilio_stream.c): the real stage on its own thread, fed one
 * connection per input over a loopback TCP socket, as Twilio (or anyone
 * who reaches /media-stream) would, while this thread plays the DSP stage
 * on the other end of the rings.
 *
 * The input is a list of records, [kind][len lo][len hi][len bytes]:
 * raw text, well-formed `connected`, `start` (with a valid stream token, a
 * wrong one, or an unsupported encoding), `media`, `mark`, `dtmf` and
 * `stop` built around the record's bytes, arbitrary WebSocket frames
 * (control, binary, unmasked, fragmented), and messages the DSP side sends
 * back once the call is open (audio, mark, clear, turn end, hang-up). The
 * first byte says how many of the frame bytes go with the hand-off (read
 * before the upgrade completed) rather than over the socket.
 *
 * Each run ends with the client closing its write side. The stage must
 * then close the connection, and a call it opened must be closed
 * downstream (CALL_CLOSE) exactly once; every inbound message must belong
 * to the call that was opened. A stage that does neither within
 * RUN_DEADLINE_MS aborts the run (a hang).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/base64.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/lane.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "net/twilio_msg.h"
#include "net/twilio_sig.h"
#include "net/twilio_stream.h"
#include "tests/ws_frames.h"

#define STREAM_SID      "MZ0123456789abcdef0123456789abcdef"
#define ACCT_SID        "AC0123456789abcdef0123456789abcdef"
#define NOW_S           1767225600 /* the stage's clock: 2026-01-01 */
#define RUN_DEADLINE_MS 8000
#define MAX_OUT_ACTIONS 200
#define WIRE_CAP        (256 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    REC_RAW_TEXT,
    REC_CONNECTED,
    REC_START,
    REC_MEDIA,
    REC_MARK,
    REC_DTMF,
    REC_STOP,
    REC_FRAME,
    REC_OUTBOUND,
    REC_FRAGMENTED,
    REC_KINDS
};

static struct {
    vb_chan_t conn, in, out;
    vb_metrics_t *m;
    vb_twilio_sig_key_t key;
    vb_twilio_stream_t *st;
    int lfd;
    struct sockaddr_in addr;
    /* A fresh CallSid each run: a stream token opens one stream, so a
     * CallSid that already streamed would be refused ("already used"). */
    char sid[40];
    uint64_t runs;
    char token[VB_TWILIO_TOKEN_LEN + 1], token_lane1[VB_TWILIO_TOKEN_LEN + 1],
        token_expired[VB_TWILIO_TOKEN_LEN + 1];
} g;

typedef struct out_action {
    uint8_t kind;
    uint16_t len;
    uint8_t data[160];
} out_action_t;

typedef struct run {
    uint8_t *wire;
    size_t len;
    uint64_t seq, chunk;
    out_action_t out[MAX_OUT_ACTIONS];
    size_t nout;
} run_t;

static int64_t fixed_now(void)
{
    return NOW_S;
}

static void setup(void)
{
    vb_log_set_level(VB_LOG_OFF);
    signal(SIGPIPE, SIG_IGN);
    vb_chan_config_t cc = {"ingress_to_twilio", 16, VB_MSG_DATA_MAX, 0, NULL};
    vb_chan_config_t ic = {"twilio_to_dsp", 256, VB_LANE_TW_TO_DSP_DATA,
                           VB_LANE_SPILL_MAX, NULL};
    vb_chan_config_t oc = {"dsp_to_twilio", 256, VB_MSG_DATA_MAX, 0, NULL};
    if (vb_chan_init(&g.conn, &cc) != 0 || vb_chan_init(&g.in, &ic) != 0 ||
        vb_chan_init(&g.out, &oc) != 0)
        abort();
    g.m = vb_metrics_create();
    if (g.m == NULL || vb_twilio_sig_key_init(&g.key, "fuzz secret") != 0)
        abort();
    vb_twilio_stream_config_t cfg = {
        .lane = 0,
        .max_calls = 4,
        .media_batch = 2,
        .start_timeout_ms = 2000,
        .max_errors = 20,
        .max_pending = 64 * 1024,
        .token_key = &g.key,
        .now_s = fixed_now,
        .conn_in = &g.conn,
        .in_to_dsp = &g.in,
        .out_from_dsp = &g.out,
        .metrics = g.m,
        .hangup_grace_ms = 200,
    };
    if (vb_twilio_stream_create(&g.st, &cfg) != 0 ||
        vb_twilio_stream_start(g.st) != 0)
        abort();
    g.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g.addr.sin_family = AF_INET;
    g.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(g.addr);
    if (bind(g.lfd, (struct sockaddr *)&g.addr, sizeof(g.addr)) != 0 ||
        listen(g.lfd, 16) != 0 ||
        getsockname(g.lfd, (struct sockaddr *)&g.addr, &sl) != 0)
        abort();
}

/* ---- building the client's bytes ---- */

static void put_frame(run_t *r, bool fin, uint8_t op, bool mask, const void *p,
                      size_t n)
{
    size_t k =
        tf_frame(r->wire + r->len, WIRE_CAP - r->len, fin, op, mask, p, n);
    r->len += k; /* 0 when full: the rest is dropped */
}

static void put_text(run_t *r, const char *json, size_t n)
{
    put_frame(r, true, 0x1, true, json, n);
}

/* The record's bytes as a JSON string body, at most `max` input bytes. */
static size_t esc(const uint8_t *p, size_t n, size_t max, char *out, size_t cap)
{
    return vb_twilio_json_escape((const char *)p, n < max ? n : max, out, cap);
}

static void rec_start(run_t *r, const uint8_t *p, size_t n)
{
    uint8_t flags = n > 0 ? p[0] : 0;
    const char *tok = g.token;
    if (flags & 2)
        tok = (flags & 4) ? g.token_lane1 : g.token_expired;
    char name[600];
    size_t nl = n > 1 ? esc(p + 1, n - 1, 96, name, sizeof(name)) : 0;
    char params[800];
    if (flags & 1) /* no token */
        snprintf(params, sizeof(params), "\"FirstName\":\"%.*s\"", (int)nl,
                 name);
    else
        snprintf(params, sizeof(params),
                 "\"streamToken\":\"%s\",\"FirstName\":\"%.*s\"", tok, (int)nl,
                 name);
    char json[1400];
    int k = snprintf(
        json, sizeof(json),
        "{\"event\":\"start\",\"sequenceNumber\":\"%llu\",\"start\":{"
        "\"accountSid\":\"" ACCT_SID "\",\"streamSid\":\"" STREAM_SID
        "\",\"callSid\":\"%s\",\"tracks\":[\"inbound\"],\"mediaFormat\":{"
        "\"encoding\":\"%s\",\"sampleRate\":%d,\"channels\":1},"
        "\"customParameters\":{%s}},\"streamSid\":\"" STREAM_SID "\"}",
        (unsigned long long)r->seq++, (flags & 8) ? "CA1" : g.sid,
        (flags & 16) ? "audio/l16" : "audio/x-mulaw",
        (flags & 32) ? 16000 : 8000, params);
    put_text(r, json, (size_t)k);
}

static void rec_media(run_t *r, const uint8_t *p, size_t n)
{
    uint8_t flags = n > 0 ? p[0] : 0;
    if (n > 0) {
        p++;
        n--;
    }
    if (n > 400)
        n = 400;
    char b64[600];
    size_t bl = 0;
    if (mbedtls_base64_encode((unsigned char *)b64, sizeof(b64), &bl, p, n) !=
        0)
        bl = 0;
    r->chunk += (flags & 1) ? 2 : 1; /* a gap now and then */
    char json[900];
    int k = snprintf(
        json, sizeof(json),
        "{\"event\":\"media\",\"sequenceNumber\":\"%llu\",\"media\":{"
        "\"track\":\"%s\",\"chunk\":\"%llu\",\"timestamp\":\"%llu\","
        "\"payload\":\"%.*s\"},\"streamSid\":\"" STREAM_SID "\"}",
        (unsigned long long)r->seq++, (flags & 2) ? "outbound" : "inbound",
        (unsigned long long)r->chunk, (unsigned long long)(r->chunk * 20 + 135),
        (int)bl, b64);
    put_text(r, json, (size_t)k);
}

static void rec_named(run_t *r, int kind, const uint8_t *p, size_t n)
{
    char v[600];
    size_t vl = esc(p, n, 96, v, sizeof(v));
    char json[900];
    int k;
    if (kind == REC_MARK)
        k = snprintf(json, sizeof(json),
                     "{\"event\":\"mark\",\"sequenceNumber\":\"%llu\","
                     "\"streamSid\":\"" STREAM_SID "\",\"mark\":{\"name\":"
                     "\"%.*s\"}}",
                     (unsigned long long)r->seq++, (int)vl, v);
    else
        k = snprintf(json, sizeof(json),
                     "{\"event\":\"dtmf\",\"streamSid\":\"" STREAM_SID
                     "\",\"sequenceNumber\":\"%llu\",\"dtmf\":{\"track\":"
                     "\"inbound_track\",\"digit\":\"%.*s\"}}",
                     (unsigned long long)r->seq++, (int)vl, v);
    put_text(r, json, (size_t)k);
}

static void build(run_t *r, const uint8_t *data, size_t size)
{
    r->seq = 1;
    size_t i = 0;
    while (i < size) {
        uint8_t kind = data[i++] % REC_KINDS;
        size_t n = 0;
        if (i < size)
            n = data[i++];
        if (i < size)
            n |= (size_t)data[i++] << 8;
        if (n > size - i)
            n = size - i;
        const uint8_t *p = data + i;
        i += n;
        char json[300];
        int k;
        switch (kind) {
        case REC_RAW_TEXT:
            put_text(r, (const char *)p, n);
            break;
        case REC_CONNECTED:
            k = snprintf(json, sizeof(json),
                         "{\"event\":\"connected\",\"protocol\":\"Call\","
                         "\"version\":\"1.0.0\"}");
            put_text(r, json, (size_t)k);
            break;
        case REC_START:
            rec_start(r, p, n);
            break;
        case REC_MEDIA:
            rec_media(r, p, n);
            break;
        case REC_MARK:
        case REC_DTMF:
            rec_named(r, kind, p, n);
            break;
        case REC_STOP:
            k = snprintf(json, sizeof(json),
                         "{\"event\":\"stop\",\"sequenceNumber\":\"%llu\","
                         "\"streamSid\":\"" STREAM_SID "\",\"stop\":{"
                         "\"accountSid\":\"" ACCT_SID "\",\"callSid\":"
                         "\"%s\"}}",
                         (unsigned long long)r->seq++, g.sid);
            put_text(r, json, (size_t)k);
            break;
        case REC_FRAME: /* [fin|rsv|op][mask?] payload */
            if (n >= 2)
                put_frame(r, p[0] & 0x80, p[0] & 0x0f, !(p[1] & 1), p + 2,
                          n - 2);
            break;
        case REC_FRAGMENTED:
            put_frame(r, false, 0x1, true, p, n / 2);
            if (n > 0 && p[0] & 1) /* a ping in between is allowed */
                put_frame(r, true, 0x9, true, "p", 1);
            put_frame(r, true, 0x0, true, p + n / 2, n - n / 2);
            break;
        case REC_OUTBOUND:
            if (r->nout < MAX_OUT_ACTIONS && n > 0) {
                out_action_t *a = &r->out[r->nout++];
                static const uint8_t kinds[] = {VB_MSG_AUDIO,  VB_MSG_MARK,
                                                VB_MSG_CLEAR,  VB_MSG_TURN_END,
                                                VB_MSG_HANGUP, VB_MSG_AUDIO};
                a->kind = kinds[p[0] % sizeof(kinds)];
                a->len = (uint16_t)(n - 1 < sizeof(a->data) ? n - 1
                                                            : sizeof(a->data));
                memcpy(a->data, p + 1, a->len);
            }
            break;
        }
    }
}

/* ---- playing the DSP stage ---- */

static void push_outbound(run_t *r, vb_call_id_t call)
{
    for (size_t i = 0; i < r->nout; i++) {
        vb_msg_t m;
        memset(&m, 0, sizeof(m));
        m.kind = r->out[i].kind;
        m.call = call;
        m.seq = (uint32_t)i;
        m.len = r->out[i].len;
        memcpy(m.data, r->out[i].data, m.len);
        m.t_origin = m.t_enqueue = vb_clock_now_ns();
        if (vb_ring_try_push(&g.out.ring, &m, sizeof(m)) != 0)
            break; /* full: what did not fit is not sent */
    }
    uv_async_send(g.out.bell);
}

typedef struct seen {
    bool open, closed;
    vb_call_id_t call;
} seen_t;

static void pop_inbound(run_t *r, seen_t *s)
{
    vb_msg_t m;
    while (vb_ring_try_pop(&g.in.ring, &m) == 0) {
        if (m.kind == VB_MSG_CALL_OPEN) {
            if (s->open) /* one connection, one call */
                abort();
            s->open = true;
            s->call = m.call;
            push_outbound(r, m.call);
            continue;
        }
        /* Nothing but CALL_OPEN may come before the call opens, nothing
         * after it closes, and nothing for another call. */
        if (!s->open || s->closed || !vb_call_id_eq(m.call, s->call)) {
            fprintf(stderr,
                    "twilio stream: %s for call %u/%u (open=%d closed=%d "
                    "call %u/%u)\n",
                    vb_msg_kind_name(m.kind), m.call.slot, m.call.gen, s->open,
                    s->closed, s->call.slot, s->call.gen);
            abort();
        }
        if (m.kind == VB_MSG_CALL_CLOSE)
            s->closed = true;
        else if (m.len > VB_MSG_DATA_MAX)
            abort();
    }
}

/* Drains the outbound ring's leftovers of the previous call: the stage
 * drops them (generation mismatch) but they must not fill the ring. */
static void wait_out_empty(void)
{
    uint64_t deadline = vb_clock_now_ns() + 2000000000ull;
    while (vb_ring_count(&g.out.ring) > 0 && vb_clock_now_ns() < deadline) {
        uv_async_send(g.out.bell);
        usleep(200);
    }
}

/* libFuzzer's timeout alarm may interrupt connect(); the connection then
 * completes on its own. */
static int connect_client(int fd)
{
    if (connect(fd, (struct sockaddr *)&g.addr, sizeof(g.addr)) == 0)
        return 0;
    if (errno != EINTR)
        return -1;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t el = sizeof(err);
    while (poll(&p, 1, 1000) < 0 && errno == EINTR)
        ;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        errno = err ? err : errno;
        return -1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static run_t *r;
    if (r == NULL) {
        setup();
        r = calloc(1, sizeof(*r));
        r->wire = malloc(WIRE_CAP);
        if (r->wire == NULL)
            abort();
    }
    if (size == 0)
        return 0;
    snprintf(g.sid, sizeof(g.sid), "CA%032llx", (unsigned long long)g.runs++);
    if (vb_twilio_sig_token_create(&g.key, g.sid, 0, NOW_S + 300, g.token) !=
            0 ||
        vb_twilio_sig_token_create(&g.key, g.sid, 1, NOW_S + 300,
                                   g.token_lane1) != 0 ||
        vb_twilio_sig_token_create(&g.key, g.sid, 0, NOW_S - 1,
                                   g.token_expired) != 0)
        abort();
    uint8_t pre_sel = data[0];
    r->len = 0;
    r->nout = 0;
    r->chunk = 0;
    build(r, data + 1, size - 1);
    size_t pre = pre_sel < r->len ? pre_sel : r->len;
    if (pre_sel >= 0xf0)
        pre = 0;

    wait_out_empty();
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || connect_client(cfd) != 0) {
        perror("twilio stream: connect");
        abort();
    }
    int sfd;
    while ((sfd = accept4(g.lfd, NULL, NULL, SOCK_CLOEXEC)) < 0 &&
           errno == EINTR)
        ;
    if (sfd < 0)
        abort();
    if (vb_twilio_stream_handoff(&g.conn, sfd, r->wire, pre) != 0)
        abort();

    seen_t s = {0};
    size_t off = pre;
    bool wr_closed = false, eof = false;
    uint64_t deadline = vb_clock_now_ns() + RUN_DEADLINE_MS * 1000000ull;
    uint8_t sink[16384];
    for (;;) {
        /* Popped after EOF was seen too: the stage queues what a call
         * sends downstream before it closes the socket. */
        pop_inbound(r, &s);
        if (eof && (!s.open || s.closed))
            break;
        if (vb_clock_now_ns() > deadline) {
            fprintf(stderr,
                    "twilio stream: no close within %d ms "
                    "(eof=%d open=%d closed=%d)\n",
                    RUN_DEADLINE_MS, eof, s.open, s.closed);
            abort();
        }
        if (!wr_closed && off == r->len) {
            shutdown(cfd, SHUT_WR);
            wr_closed = true;
        }
        struct pollfd pf = {.fd = cfd,
                            .events =
                                (eof ? 0 : POLLIN) | (wr_closed ? 0 : POLLOUT)};
        if (pf.events == 0) {
            usleep(200);
            continue;
        }
        if (poll(&pf, 1, 1) <= 0)
            continue;
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(cfd, sink, sizeof(sink), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                eof = true;
                wr_closed = true; /* the stage is gone: stop writing */
            }
        }
        if (!wr_closed && (pf.revents & POLLOUT)) {
            ssize_t n = send(cfd, r->wire + off, r->len - off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                wr_closed = true;
        }
    }
    /* The stage closed first; a reset ends its side at once instead of
     * leaving it in TIME_WAIT, or thousands of runs a second would use up
     * the loopback's ephemeral ports. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(cfd);
    return 0;
}
