/* SPDX-License-Identifier: MIT */
/*
 * HTTP session driven without sockets (whole buffers, single bytes, every
 * split), then the libuv server over loopback: keep-alive, limits, and the
 * detach of an upgraded socket.
 */
#include <fcntl.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "core/err.h"
#include "core/log.h"
#include "net/http.h"
#include "tests/http_client.h"
#include "tests/test.h"

/* ---- a recording handler ---- */

typedef struct rec {
    int calls;
    char paths[16][128];
    char bodies[16][256];
    char last_query[128];
    char last_host[64];
    int last_method;
    bool last_upgrade;
    int errors[8];
    int nerrors;
    char last_reason[64];
    bool do_upgrade;
    bool do_close;
} rec_t;

static void rec_handler(void *ud, const vb_http_req_t *req,
                        vb_http_resp_t *resp)
{
    rec_t *r = ud;
    int i = r->calls++ % 16;
    snprintf(r->paths[i], sizeof(r->paths[i]), "%.*s", (int)req->path_len,
             req->target);
    snprintf(r->bodies[i], sizeof(r->bodies[i]), "%s", req->body);
    snprintf(r->last_query, sizeof(r->last_query), "%s",
             req->query ? req->query : "(none)");
    const char *host = vb_http_req_header(req, "host");
    snprintf(r->last_host, sizeof(r->last_host), "%s", host ? host : "");
    r->last_method = req->method;
    r->last_upgrade = req->upgrade;
    if (r->do_upgrade && req->upgrade) {
        resp->status = 101;
        resp->upgrade = true;
        resp->detach_arg = r;
        vb_http_resp_header(resp, "Upgrade", "websocket");
        vb_http_resp_header(resp, "Connection", "Upgrade");
        return;
    }
    static char body[160];
    int n = snprintf(body, sizeof(body), "path=%.*s", (int)req->path_len,
                     req->target);
    resp->status = 200;
    resp->content_type = "text/plain";
    resp->body = body;
    resp->body_len = (size_t)n;
    resp->close = r->do_close;
}

static void rec_error(void *ud, const vb_http_error_t *e)
{
    rec_t *r = ud;
    if (r->nerrors < 8)
        r->errors[r->nerrors++] = e->status;
    snprintf(r->last_reason, sizeof(r->last_reason), "%s", e->reason);
}

static vb_http_session_t *session(rec_t *r, const vb_http_limits_t *lim)
{
    vb_http_session_cfg_t cfg = {.handler = rec_handler,
                                 .on_error = rec_error,
                                 .ud = r,
                                 .listener = 7,
                                 .peer = "127.0.0.1:9"};
    if (lim)
        cfg.limits = *lim;
    else
        vb_http_limits_default(&cfg.limits);
    vb_http_session_t *s;
    ASSERT_EQ(vb_http_session_create(&cfg, &s), 0);
    return s;
}

/* Output accumulated over feeds. */
typedef struct outbuf {
    char b[65536];
    size_t len;
} outbuf_t;

static void drain(vb_http_session_t *s, outbuf_t *o)
{
    size_t n;
    char *d = vb_http_session_take_output(s, &n);
    if (d == NULL)
        return;
    ASSERT_LT(o->len + n, sizeof(o->b));
    memcpy(o->b + o->len, d, n);
    o->len += n;
    o->b[o->len] = '\0';
    free(d);
}

/* Feeds `in` in chunks of `chunk` bytes, collecting output. */
static vb_http_action_t feed_chunks(vb_http_session_t *s, const char *in,
                                    size_t chunk, outbuf_t *o)
{
    size_t len = strlen(in);
    vb_http_action_t a = VB_HTTP_CONTINUE;
    for (size_t i = 0; i < len && a == VB_HTTP_CONTINUE; i += chunk) {
        size_t n = len - i < chunk ? len - i : chunk;
        a = vb_http_session_feed(s, in + i, n);
        drain(s, o);
    }
    return a;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static const char pipelined[] =
    "GET /one?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    "POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello"
    "POST /three HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";

TEST(http_session_pipelined_in_order_any_split)
{
    /* Whole, 1 byte at a time, and every chunk size up to 40. */
    for (size_t chunk = 1; chunk <= 41; chunk++) {
        size_t step = chunk == 41 ? sizeof(pipelined) : chunk;
        rec_t r = {0};
        outbuf_t o = {0};
        vb_http_session_t *s = session(&r, NULL);
        ASSERT_EQ(feed_chunks(s, pipelined, step, &o), VB_HTTP_CONTINUE);
        ASSERT_EQ(r.calls, 3);
        ASSERT_STR_EQ(r.paths[0], "/one");
        ASSERT_STR_EQ(r.paths[1], "/two");
        ASSERT_STR_EQ(r.paths[2], "/three");
        ASSERT_STR_EQ(r.bodies[0], "");
        ASSERT_STR_EQ(r.bodies[1], "hello");
        ASSERT_STR_EQ(r.bodies[2], "abcde");
        ASSERT_STR_EQ(r.last_host, "c");
        ASSERT_EQ(count(o.b, "HTTP/1.1 200 OK\r\n"), 3);
        const char *p1 = strstr(o.b, "path=/one");
        const char *p2 = strstr(o.b, "path=/two");
        const char *p3 = strstr(o.b, "path=/three");
        ASSERT_TRUE(p1 && p2 && p3 && p1 < p2 && p2 < p3);
        ASSERT_TRUE(strstr(o.b, "Connection: close") == NULL);
        vb_http_session_destroy(s);
    }
}

TEST(http_session_blocks_when_one_read_answers_too_much)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_output_bytes = 1000;
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, &lim);
    char in[8192];
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(in + len, sizeof(in) - len,
                                "GET /r%d HTTP/1.1\r\n\r\n", i);
    ASSERT_EQ(vb_http_session_feed(s, in, len), VB_HTTP_CONTINUE);
    ASSERT_TRUE(vb_http_session_blocked(s));
    int first = r.calls;
    ASSERT_LT(first, 100);
    drain(s, &o);
    ASSERT_LE(o.len, 1000 + 200);
    /* More input while blocked waits behind the held bytes. */
    static const char last[] = "GET /last HTTP/1.1\r\n\r\n";
    ASSERT_EQ(vb_http_session_feed(s, last, strlen(last)), VB_HTTP_CONTINUE);
    ASSERT_EQ(r.calls, first);
    int rounds = 0;
    while (vb_http_session_blocked(s)) {
        ASSERT_EQ(vb_http_session_resume(s), VB_HTTP_CONTINUE);
        drain(s, &o);
        rounds++;
    }
    ASSERT_GT(rounds, 3);
    ASSERT_EQ(r.calls, 101);
    ASSERT_EQ(count(o.b, "HTTP/1.1 200 OK\r\n"), 101);
    /* In order. */
    const char *prev = o.b;
    for (int i = 0; i < 100; i++) {
        char want[32];
        snprintf(want, sizeof(want), "path=/r%d", i);
        const char *p = strstr(prev, want);
        ASSERT_NOT_NULL(p);
        prev = p;
    }
    ASSERT_TRUE(strstr(prev, "path=/last") != NULL);
    ASSERT_EQ(vb_http_session_resume(s), VB_HTTP_CONTINUE); /* no-op */
    vb_http_session_destroy(s);
}

TEST(http_session_request_fields)
{
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, NULL);
    feed_chunks(s,
                "GET http://proxy.example/abs/path?q=%20x HTTP/1.1\r\n"
                "HOST:   spaced.example  \r\nX-Empty:\r\n\r\n",
                1000, &o);
    ASSERT_EQ(r.calls, 1);
    ASSERT_STR_EQ(r.paths[0], "/abs/path");
    ASSERT_STR_EQ(r.last_query, "q=%20x");
    ASSERT_STR_EQ(r.last_host, "spaced.example");
    ASSERT_EQ(r.last_method, HTTP_GET);
    ASSERT_STR_CONTAINS(o.b, "Content-Type: text/plain\r\n");
    ASSERT_STR_CONTAINS(o.b, "Content-Length: 14\r\n");
    vb_http_session_destroy(s);
}

TEST(http_session_head_has_no_body)
{
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, NULL);
    feed_chunks(s, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", 100, &o);
    ASSERT_STR_CONTAINS(o.b, "Content-Length: 7\r\n");
    ASSERT_TRUE(strstr(o.b, "path=") == NULL);
    vb_http_session_destroy(s);
}

TEST(http_session_http10_and_connection_close)
{
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, NULL);
    ASSERT_EQ(feed_chunks(s, "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
                          100, &o),
              VB_HTTP_CLOSE);
    ASSERT_EQ(r.calls, 1); /* nothing after a closing response */
    ASSERT_STR_CONTAINS(o.b, "Connection: close\r\n");
    vb_http_session_destroy(s);

    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, NULL);
    ASSERT_EQ(feed_chunks(s,
                          "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                          100, &o),
              VB_HTTP_CONTINUE);
    ASSERT_STR_CONTAINS(o.b, "Connection: keep-alive\r\n");
    vb_http_session_destroy(s);

    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, NULL);
    ASSERT_EQ(feed_chunks(s,
                          "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
                          "GET /b HTTP/1.1\r\n\r\n",
                          100, &o),
              VB_HTTP_CLOSE);
    ASSERT_EQ(r.calls, 1);
    vb_http_session_destroy(s);

    /* The handler may close too. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    r.do_close = true;
    s = session(&r, NULL);
    ASSERT_EQ(feed_chunks(s, "GET /a HTTP/1.1\r\n\r\n", 100, &o),
              VB_HTTP_CLOSE);
    ASSERT_STR_CONTAINS(o.b, "Connection: close\r\n");
    vb_http_session_destroy(s);
}

TEST(http_session_head_limit_431)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_head_bytes = 1024;
    /* A long header value, fed in small pieces. */
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'v', 1100);
    snprintf(req + n + 1100, sizeof(req) - (size_t)n - 1100, "\r\n\r\n");
    for (size_t chunk = 1; chunk <= 2048; chunk *= 8) {
        rec_t r = {0};
        outbuf_t o = {0};
        vb_http_session_t *s = session(&r, &lim);
        ASSERT_EQ(feed_chunks(s, req, chunk, &o), VB_HTTP_CLOSE);
        ASSERT_EQ(r.calls, 0);
        ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 431 ");
        ASSERT_STR_CONTAINS(o.b, "Connection: close\r\n");
        ASSERT_EQ(r.nerrors, 1);
        ASSERT_EQ(r.errors[0], 431);
        vb_http_session_destroy(s);
    }
    /* A long URL too. */
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, &lim);
    memset(req, 'a', 2000);
    memcpy(req, "GET /", 5);
    snprintf(req + 2000, 100, " HTTP/1.1\r\n\r\n");
    ASSERT_EQ(feed_chunks(s, req, 64, &o), VB_HTTP_CLOSE);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 431 ");
    vb_http_session_destroy(s);
    /* Just under the limit passes. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, &lim);
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'v', 900);
    snprintf(req + n + 900, 100, "\r\n\r\n");
    ASSERT_EQ(feed_chunks(s, req, 64, &o), VB_HTTP_CONTINUE);
    ASSERT_EQ(r.calls, 1);
    vb_http_session_destroy(s);
}

TEST(http_session_header_count_limit_431)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_headers = 10;
    char req[2048];
    size_t len = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 11; i++)
        len += (size_t)snprintf(req + len, sizeof(req) - len, "H%d: v\r\n", i);
    snprintf(req + len, sizeof(req) - len, "\r\n");
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, &lim);
    ASSERT_EQ(feed_chunks(s, req, 7, &o), VB_HTTP_CLOSE);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 431 ");
    ASSERT_EQ(r.calls, 0);
    vb_http_session_destroy(s);
}

TEST(http_session_body_limit_413)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_body_bytes = 1024;
    /* Declared too large: refused before the body arrives. */
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, &lim);
    ASSERT_EQ(feed_chunks(s, "POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
                          100, &o),
              VB_HTTP_CLOSE);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 413 ");
    ASSERT_EQ(r.calls, 0);
    ASSERT_EQ(r.errors[0], 413);
    vb_http_session_destroy(s);
    /* Chunked past the limit. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, &lim);
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "400\r\n");
    memset(req + n, 'x', 1024);
    snprintf(req + n + 1024, 64, "\r\n1\r\ny\r\n0\r\n\r\n");
    ASSERT_EQ(feed_chunks(s, req, 100, &o), VB_HTTP_CLOSE);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 413 ");
    ASSERT_EQ(r.calls, 0);
    vb_http_session_destroy(s);
    /* Exactly the limit passes. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, &lim);
    n = snprintf(req, sizeof(req),
                 "POST / HTTP/1.1\r\nContent-Length: 1024\r\n\r\n");
    memset(req + n, 'x', 1024);
    req[n + 1024] = '\0';
    ASSERT_EQ(feed_chunks(s, req, 100, &o), VB_HTTP_CONTINUE);
    ASSERT_EQ(r.calls, 1);
    vb_http_session_destroy(s);
}

TEST(http_session_malformed_400_then_nothing)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rec_t r = {0};
        outbuf_t o = {0};
        vb_http_session_t *s = session(&r, NULL);
        ASSERT_EQ(feed_chunks(s, bad[i], 3, &o), VB_HTTP_CLOSE);
        ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 400 Bad Request\r\n");
        ASSERT_EQ(r.calls, 0);
        ASSERT_EQ(vb_http_session_feed(s, "GET / HTTP/1.1\r\n\r\n", 18),
                  VB_HTTP_CLOSE);
        vb_http_session_destroy(s);
    }
}

TEST(http_session_timeouts)
{
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.header_timeout_ms = 111;
    lim.idle_timeout_ms = 222;
    vb_http_session_t *s = session(&r, &lim);
    uint32_t ms;
    uint32_t g0 = vb_http_session_timer(s, &ms);
    ASSERT_LE(ms, 111); /* what is left of it */
    ASSERT_GT(ms, 0);
    /* Head bytes do not restart the head timer. */
    feed_chunks(s, "GET / HT", 100, &o);
    ASSERT_EQ(vb_http_session_timer(s, &ms), g0);
    feed_chunks(s, "TP/1.1\r\n\r\n", 100, &o);
    uint32_t g1 = vb_http_session_timer(s, &ms);
    ASSERT_NE(g1, g0);
    ASSERT_LE(ms, 222); /* idle */
    ASSERT_GT(ms, 111);
    /* The next request's first byte starts a new head timer. */
    feed_chunks(s, "G", 100, &o);
    ASSERT_NE(vb_http_session_timer(s, &ms), g1);
    ASSERT_LE(ms, 111);
    o.len = 0;
    ASSERT_EQ(vb_http_session_timeout(s), VB_HTTP_CLOSE);
    drain(s, &o);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 408 Request Timeout\r\n");
    ASSERT_EQ(r.errors[0], 408);
    vb_http_session_destroy(s);

    /* Idle: closes silently. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, &lim);
    feed_chunks(s, "GET / HTTP/1.1\r\n\r\n", 100, &o);
    o.len = 0;
    o.b[0] = '\0';
    ASSERT_EQ(vb_http_session_timeout(s), VB_HTTP_CLOSE);
    drain(s, &o);
    ASSERT_EQ(o.len, 0);
    vb_http_session_destroy(s);

    /* A body is held to min_body_rate after its grace: a byte buys
     * 1 / rate of time, no more, so a trickle cannot restart a timer. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    lim.min_body_rate = 1000; /* 1 ms per byte */
    lim.body_grace_ms = 300;
    s = session(&r, &lim);
    feed_chunks(s, "POST / HTTP/1.1\r\nContent-Length: 400\r\n\r\n", 100, &o);
    uint32_t b0 = vb_http_session_timer(s, &ms);
    ASSERT_LE(ms, 300);
    ASSERT_GT(ms, 0);
    feed_chunks(s, "ab", 100, &o);
    ASSERT_NE(vb_http_session_timer(s, &ms), b0);
    ASSERT_LE(ms, 302);
    static char many[200];
    memset(many, 'x', sizeof(many) - 1);
    feed_chunks(s, many, 1000, &o);
    vb_http_session_timer(s, &ms);
    ASSERT_GT(ms, 302); /* 201 bytes bought 201 ms */
    ASSERT_LE(ms, 501);
    ASSERT_EQ(vb_http_session_timeout(s), VB_HTTP_CLOSE);
    drain(s, &o);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 408 ");
    ASSERT_STR_EQ(r.last_reason, "request body too slow");
    vb_http_session_destroy(s);

    /* The whole request, head and body, has request_timeout_ms from its
     * first byte, however fast the body comes. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    lim.header_timeout_ms = 10000;
    lim.request_timeout_ms = 150;
    lim.min_body_rate = 1000000;
    s = session(&r, &lim);
    feed_chunks(s, "POST / HTTP/1.1\r\nContent-Length: 400\r\n\r\n", 100, &o);
    feed_chunks(s, many, 1000, &o);
    vb_http_session_timer(s, &ms);
    ASSERT_LE(ms, 150);
    ASSERT_EQ(vb_http_session_timeout(s), VB_HTTP_CLOSE);
    drain(s, &o);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 408 ");
    ASSERT_STR_EQ(r.last_reason, "request timed out");
    vb_http_session_destroy(s);
}

TEST(http_session_expect_continue)
{
    rec_t r = {0};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, NULL);
    feed_chunks(s,
                "POST /e HTTP/1.1\r\nExpect: 100-continue\r\n"
                "Content-Length: 2\r\n\r\n",
                100, &o);
    ASSERT_STR_EQ(o.b, "HTTP/1.1 100 Continue\r\n\r\n");
    feed_chunks(s, "ok", 100, &o);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 200 OK");
    ASSERT_STR_EQ(r.bodies[0], "ok");
    vb_http_session_destroy(s);
}

TEST(http_session_upgrade_detach_keeps_trailing_bytes)
{
    static const char up[] =
        "GET /ws HTTP/1.1\r\nHost: h\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    /* Bytes after the head in the same read are kept for the new owner. */
    rec_t r = {.do_upgrade = true};
    outbuf_t o = {0};
    vb_http_session_t *s = session(&r, NULL);
    char in[256];
    snprintf(in, sizeof(in), "%s\x81\x02hiGET / HTTP/1.1\r\n\r\n", up);
    ASSERT_EQ(feed_chunks(s, in, 1000, &o), VB_HTTP_DETACH);
    ASSERT_EQ(r.calls, 1);
    ASSERT_TRUE(r.last_upgrade);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 101 Switching Protocols\r\n");
    ASSERT_TRUE(strstr(o.b, "Content-Length") == NULL);
    size_t n;
    const char *left = vb_http_session_leftover(s, &n);
    ASSERT_EQ(n, 4 + 18);
    ASSERT_MEM_EQ(left, "\x81\x02hiGET / HTTP/1.1\r\n\r\n", n);
    ASSERT_TRUE(vb_http_session_detach_arg(s) == &r);
    ASSERT_EQ(vb_http_session_feed(s, "x", 1), VB_HTTP_DETACH);
    vb_http_session_destroy(s);

    /* Refused upgrade: answered, then the connection closes. */
    memset(&r, 0, sizeof(r));
    memset(&o, 0, sizeof(o));
    s = session(&r, NULL);
    ASSERT_EQ(feed_chunks(s, in, 1000, &o), VB_HTTP_CLOSE);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 200 OK");
    ASSERT_STR_CONTAINS(o.b, "Connection: close");
    vb_http_session_destroy(s);
}

TEST(http_helpers)
{
    ASSERT_TRUE(vb_http_has_token("keep-alive, Upgrade", "upgrade"));
    ASSERT_TRUE(vb_http_has_token("Upgrade", "upgrade"));
    ASSERT_TRUE(vb_http_has_token(" a ,\tupgrade\t", "upgrade"));
    ASSERT_TRUE(!vb_http_has_token("upgraded", "upgrade"));
    ASSERT_TRUE(!vb_http_has_token("", "upgrade"));

    vb_http_resp_t r;
    memset(&r, 0, sizeof(r));
    ASSERT_EQ(vb_http_resp_header(&r, "A", "b"), 0);
    ASSERT_EQ(vb_http_resp_header(&r, "Bad", "x\r\nInjected: 1"), VB_EINVAL);
    ASSERT_EQ(vb_http_resp_header(&r, "Ba:d", "x"), VB_EINVAL);
    ASSERT_STR_EQ(r.headers, "A: b\r\n");
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ASSERT_EQ(vb_http_resp_header(&r, "Big", big), VB_ENOSPC);
    ASSERT_STR_EQ(r.headers, "A: b\r\n");
    ASSERT_STR_EQ(vb_http_status_text(431), "Request Header Fields Too Large");
}

/* ---- the libuv server over loopback ---- */

typedef struct srv_fixture {
    rec_t rec; /* first: the handler's ud is the fixture */
    uv_loop_t loop;
    uv_async_t stop;
    vb_http_server_t *srv;
    pthread_t thr;
    int port;
    /* detach results, read by the test after the join or via the pipe */
    int detach_pipe[2];
    _Atomic int events[VB_HTTP_EV_COUNT]; /* on_event counts */
} srv_fixture_t;

static void on_event(void *ud, vb_http_event_t ev)
{
    srv_fixture_t *f = ud;
    atomic_fetch_add(&f->events[ev], 1);
}

static void on_detach(void *ud, int fd, const char *extra, size_t n, void *arg,
                      const char *peer)
{
    srv_fixture_t *f = ud;
    (void)arg;
    (void)peer;
    /* Hand the fd and trailing bytes to the test thread. */
    char msg[128];
    int len = snprintf(msg, sizeof(msg), "%d %zu %.*s", fd, n, (int)n, extra);
    ASSERT_EQ(write(f->detach_pipe[1], msg, (size_t)len), len);
}

static void stop_cb(uv_async_t *a)
{
    srv_fixture_t *f = a->data;
    vb_http_server_close(f->srv);
    uv_close((uv_handle_t *)&f->stop, NULL);
}

static void *loop_main(void *arg)
{
    srv_fixture_t *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static srv_fixture_t *srv_start(const vb_http_limits_t *lim, bool upgrade)
{
    srv_fixture_t *f = calloc(1, sizeof(*f));
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(pipe(f->detach_pipe), 0);
    f->rec.do_upgrade = upgrade;
    ASSERT_EQ(uv_loop_init(&f->loop), 0);
    vb_http_server_cfg_t cfg = {.handler = rec_handler,
                                .on_detach = on_detach,
                                .on_event = on_event,
                                .ud = f};
    if (lim)
        cfg.limits = *lim;
    else
        vb_http_limits_default(&cfg.limits);
    ASSERT_EQ(vb_http_server_create(&f->loop, &cfg, &f->srv), 0);
    ASSERT_EQ(vb_http_server_listen(f->srv, "127.0.0.1", 0, 1, &f->port), 0);
    ASSERT_GT(f->port, 0);
    ASSERT_EQ(uv_async_init(&f->loop, &f->stop, stop_cb), 0);
    f->stop.data = f;
    ASSERT_EQ(pthread_create(&f->thr, NULL, loop_main, f), 0);
    return f;
}

static void srv_stop(srv_fixture_t *f)
{
    uv_async_send(&f->stop);
    ASSERT_EQ(pthread_join(f->thr, NULL), 0);
    ASSERT_EQ(uv_loop_close(&f->loop), 0);
    vb_http_server_destroy(f->srv);
    close(f->detach_pipe[0]);
    close(f->detach_pipe[1]);
    free(f);
}

TEST_T(http_server_keepalive_and_limits, 30)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_body_bytes = 2048;
    lim.header_timeout_ms = 300;
    srv_fixture_t *f = srv_start(&lim, false);

    tc_conn_t *c = tc_open(f->port);
    tc_resp_t r;
    for (int i = 0; i < 3; i++) {
        tc_send_str(c->fd, "GET /ka HTTP/1.1\r\nHost: x\r\n\r\n");
        ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STR_EQ(r.body, "path=/ka");
        tc_free_resp(&r);
    }
    tc_close(c);

    /* 413 reaches a client that keeps sending its body. */
    c = tc_open(f->port);
    tc_send_str(c->fd, "POST /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    char chunk[4096];
    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < 8; i++)
        send(c->fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 413);
    tc_free_resp(&r);
    ASSERT_TRUE(tc_wait_closed(c, 5000));
    tc_close(c);

    /* Slow head: 408 and closed. */
    c = tc_open(f->port);
    tc_send_str(c->fd, "GET /slow HTTP/1.1\r\n");
    double t0 = tc_now_ms();
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 408);
    ASSERT_GE(tc_now_ms() - t0, 250);
    tc_free_resp(&r);
    ASSERT_TRUE(tc_wait_closed(c, 5000));
    tc_close(c);

    /* Still serving. */
    ASSERT_EQ(tc_request(f->port, "GET /after HTTP/1.1\r\n\r\n", &r, 5000),
              200);
    tc_free_resp(&r);
    srv_stop(f);
}

TEST_T(http_server_detach_hands_over_the_socket, 30)
{
    srv_fixture_t *f = srv_start(NULL, true);
    tc_conn_t *c = tc_open(f->port);
    /* Bytes right behind the head arrive in the same segment. */
    static const char up[] = "GET /ws HTTP/1.1\r\nHost: h\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                             "EARLY";
    tc_send(c->fd, up, sizeof(up) - 1);
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 101);
    tc_free_resp(&r);

    char msg[128] = {0};
    struct pollfd p = {.fd = f->detach_pipe[0], .events = POLLIN};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_GT(read(f->detach_pipe[0], msg, sizeof(msg) - 1), 0);
    int fd = -1;
    size_t n = 0;
    char extra[64] = {0};
    ASSERT_GE(sscanf(msg, "%d %zu %63s", &fd, &n, extra), 2);
    ASSERT_GE(fd, 0);
    /* Depending on segmentation the early bytes are either handed over or
     * still in the socket; together they are intact. */
    char got[64] = {0};
    memcpy(got, extra, n);
    size_t have = n;
    while (have < 5) {
        struct pollfd q = {.fd = fd, .events = POLLIN};
        ASSERT_EQ(poll(&q, 1, 5000), 1);
        ssize_t k = read(fd, got + have, sizeof(got) - 1 - have);
        ASSERT_GT(k, 0);
        have += (size_t)k;
    }
    ASSERT_STR_EQ(got, "EARLY");
    /* Both directions work on the new descriptor, and the old owner no
     * longer reads it. */
    tc_send_str(c->fd, "after-101");
    memset(got, 0, sizeof(got));
    have = 0;
    while (have < 9) {
        struct pollfd q = {.fd = fd, .events = POLLIN};
        ASSERT_EQ(poll(&q, 1, 5000), 1);
        ssize_t k = read(fd, got + have, sizeof(got) - 1 - have);
        ASSERT_GT(k, 0);
        have += (size_t)k;
    }
    ASSERT_STR_EQ(got, "after-101");
    ASSERT_EQ(write(fd, "pong", 4), 4);
    char back[8] = {0};
    ASSERT_EQ(tc_recv_some(c->fd, back, 4, 5000), 4);
    ASSERT_STR_EQ(back, "pong");
    close(fd);
    ASSERT_TRUE(tc_wait_closed(c, 5000));
    tc_close(c);
    srv_stop(f);
}

TEST_T(http_server_close_with_open_connections, 30)
{
    srv_fixture_t *f = srv_start(NULL, false);
    tc_conn_t *a = tc_open(f->port);
    tc_conn_t *b = tc_open(f->port);
    tc_send_str(a->fd, "GET /partial HTTP/1.1\r\nHo");
    tc_send_str(b->fd, "GET /x HTTP/1.1\r\n\r\n");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(b, &r, 5000), 0);
    tc_free_resp(&r);
    srv_stop(f); /* closes both; no leaks under ASan */
    ASSERT_TRUE(tc_wait_closed(a, 5000));
    ASSERT_TRUE(tc_wait_closed(b, 5000));
    tc_close(a);
    tc_close(b);
}

TEST(http_server_listen_errors)
{
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    rec_t rec = {0};
    vb_http_server_cfg_t cfg = {.handler = rec_handler, .ud = &rec};
    vb_http_limits_default(&cfg.limits);
    vb_http_server_t *s;
    ASSERT_EQ(vb_http_server_create(&loop, &cfg, &s), 0);
    int port;
    ASSERT_EQ(vb_http_server_listen(s, "127.0.0.1", 0, 0, &port), 0);
    ASSERT_EQ(vb_http_server_listen(s, "127.0.0.1", port, 0, NULL), VB_EIO);
    vb_http_server_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    vb_http_server_destroy(s);
    vb_http_server_cfg_t bad = {0};
    ASSERT_EQ(vb_http_server_create(&loop, &bad, &s), VB_EINVAL);
}

typedef struct flood {
    int fd;
    int n;
} flood_t;

static void *flood_sender(void *arg)
{
    flood_t *fl = arg;
    static const char req[] = "GET /f HTTP/1.1\r\nHost: x\r\n\r\n";
    char batch[64 * (sizeof(req) - 1)];
    for (int i = 0; i < 64; i++)
        memcpy(batch + i * (sizeof(req) - 1), req, sizeof(req) - 1);
    for (int i = 0; i < fl->n / 64; i++)
        tc_send(fl->fd, batch, sizeof(batch));
    return NULL;
}

TEST_T(http_server_backpressure_on_unread_responses, 60)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_output_bytes = 16384; /* pause reading early */
    srv_fixture_t *f = srv_start(&lim, false);
    /* A small receive window keeps the kernel from absorbing it all. */
    tc_conn_t *c = calloc(1, sizeof(*c));
    ASSERT_NOT_NULL(c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    ASSERT_EQ(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)),
              0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)f->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    flood_t fl = {.fd = c->fd, .n = 64 * 1000};
    pthread_t thr;
    ASSERT_EQ(pthread_create(&thr, NULL, flood_sender, &fl), 0);
    /* Let the server fill its output and stop reading before we read. */
    usleep(200000);
    int got = 0;
    tc_resp_t r;
    while (got < fl.n && tc_read_resp(c, &r, 10000) == 0) {
        ASSERT_EQ(r.status, 200);
        tc_free_resp(&r);
        got++;
    }
    ASSERT_EQ(got, fl.n);
    ASSERT_EQ(pthread_join(thr, NULL), 0);
    tc_close(c);
    srv_stop(f);
}

TEST_T(http_server_idle_keepalive_closes_silently, 30)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.idle_timeout_ms = 200;
    srv_fixture_t *f = srv_start(&lim, false);
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, "GET /a HTTP/1.1\r\n\r\n");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    tc_free_resp(&r);
    double t0 = tc_now_ms();
    char buf[256];
    bool closed;
    size_t n = tc_recv_until_close(c->fd, buf, sizeof(buf), 5000, &closed);
    ASSERT_TRUE(closed);
    ASSERT_EQ(n, 0); /* no 408 on an idle connection */
    ASSERT_GE(tc_now_ms() - t0, 150);
    tc_close(c);
    srv_stop(f);
}

/* A loopback connection from source address `from` (all of 127/8 is
 * loopback on Linux), so tests can play several peers. */
static tc_conn_t *tc_open_from(int port, const char *from)
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

/* Waits until the server holds `n` connections. */
static bool wait_conns(srv_fixture_t *f, size_t n, int ms)
{
    double end = tc_now_ms() + ms;
    while (tc_now_ms() < end) {
        if (vb_http_server_connections(f->srv) == n)
            return true;
        usleep(5000);
    }
    return false;
}

/* Sends one body byte at a time every `gap_ms` until the server answers;
 * returns the status (or -1), and the bytes sent in *sent. */
static int trickle_until_answer(tc_conn_t *c, int gap_ms, int max_ms, int *sent)
{
    tc_resp_t r;
    double end = tc_now_ms() + max_ms;
    *sent = 0;
    while (tc_now_ms() < end) {
        if (send(c->fd, "x", 1, MSG_NOSIGNAL) == 1)
            (*sent)++;
        if (tc_read_resp(c, &r, gap_ms) == 0) {
            int st = r.status;
            tc_free_resp(&r);
            return st;
        }
    }
    return -1;
}

TEST_T(http_server_request_deadline_ends_a_trickling_body_408, 30)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.request_timeout_ms = 600;
    lim.min_body_rate = 0; /* only the whole-request deadline */
    srv_fixture_t *f = srv_start(&lim, false);
    tc_conn_t *c = tc_open(f->port);
    double t0 = tc_now_ms();
    tc_send_str(c->fd, "POST /t HTTP/1.1\r\nContent-Length: 60000\r\n\r\n");
    int sent;
    ASSERT_EQ(trickle_until_answer(c, 50, 10000, &sent), 408);
    double took = tc_now_ms() - t0;
    ASSERT_GE(took, 550); /* not before the deadline */
    printf("  408 after %.0f ms and %d body bytes\n", took, sent);
    ASSERT_TRUE(tc_wait_closed(c, 5000));
    tc_close(c);
    srv_stop(f);
}

TEST_T(http_server_min_body_rate, 30)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.request_timeout_ms = 60000;
    lim.min_body_rate = 100; /* 10 ms per byte */
    lim.body_grace_ms = 300;
    srv_fixture_t *f = srv_start(&lim, false);
    /* One byte per 100 ms is 10 B/s: closed, long before the deadline. */
    tc_conn_t *c = tc_open(f->port);
    tc_send_str(c->fd, "POST /t HTTP/1.1\r\nContent-Length: 60000\r\n\r\n");
    int sent;
    ASSERT_EQ(trickle_until_answer(c, 100, 20000, &sent), 408);
    ASSERT_LT(sent, 100);
    printf("  408 after %d body bytes\n", sent);
    tc_close(c);
    /* A body that keeps up (two halves, a pause inside the grace) passes. */
    c = tc_open(f->port);
    tc_send_str(c->fd, "POST /ok HTTP/1.1\r\nContent-Length: 2000\r\n\r\n");
    static char half[1001];
    memset(half, 'y', 1000);
    tc_send_str(c->fd, half);
    usleep(100000);
    tc_send_str(c->fd, half);
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 200);
    tc_free_resp(&r);
    tc_close(c);
    srv_stop(f);
}

TEST_T(http_server_per_peer_limit, 30)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_conns_per_peer = 3;
    srv_fixture_t *f = srv_start(&lim, false);
    tc_conn_t *held[3];
    for (int i = 0; i < 3; i++) {
        held[i] = tc_open_from(f->port, "127.0.0.2");
        tc_send_str(held[i]->fd, "GET /held HTTP/1.1\r\n");
    }
    ASSERT_TRUE(wait_conns(f, 3, 5000));
    /* The fourth from the same address: 503 and closed. */
    tc_conn_t *c = tc_open_from(f->port, "127.0.0.2");
    tc_resp_t r;
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 503);
    tc_free_resp(&r);
    ASSERT_TRUE(tc_wait_closed(c, 5000));
    tc_close(c);
    ASSERT_EQ(atomic_load(&f->events[VB_HTTP_EV_REFUSED_PER_PEER]), 1);
    /* Another address is served. */
    c = tc_open_from(f->port, "127.0.0.3");
    tc_send_str(c->fd, "GET /other HTTP/1.1\r\n\r\n");
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 200);
    tc_free_resp(&r);
    tc_close(c);
    /* The held ones still work, and a freed slot is usable again. */
    tc_send_str(held[0]->fd, "\r\n");
    ASSERT_EQ(tc_read_resp(held[0], &r, 5000), 0);
    ASSERT_EQ(r.status, 200);
    tc_free_resp(&r);
    tc_close(held[0]);
    ASSERT_TRUE(wait_conns(f, 2, 5000));
    c = tc_open_from(f->port, "127.0.0.2");
    tc_send_str(c->fd, "GET /again HTTP/1.1\r\n\r\n");
    ASSERT_EQ(tc_read_resp(c, &r, 5000), 0);
    ASSERT_EQ(r.status, 200);
    tc_free_resp(&r);
    tc_close(c);
    for (int i = 1; i < 3; i++)
        tc_close(held[i]);
    srv_stop(f);
}

/* Slow-body connections from two addresses fill the connection cap; other
 * addresses are still served, each taking the place of the busiest peer's
 * oldest connection. */
TEST_T(http_server_slow_bodies_at_the_cap_do_not_lock_out_others, 60)
{
    enum { CAP = 24, PER_PEER = 12, OTHERS = 40 };
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_conns = CAP;
    lim.max_conns_per_peer = PER_PEER;
    srv_fixture_t *f = srv_start(&lim, false);
    static const char *const attackers[] = {"127.0.0.2", "127.0.0.3"};
    tc_conn_t *slow[CAP];
    for (int i = 0; i < CAP; i++) {
        slow[i] = tc_open_from(f->port, attackers[i % 2]);
        tc_send_str(slow[i]->fd,
                    "POST /webhook/voice HTTP/1.1\r\nContent-Length: 60000"
                    "\r\n\r\nx");
    }
    ASSERT_TRUE(wait_conns(f, CAP, 5000));
    int ok = 0;
    for (int i = 0; i < OTHERS; i++) {
        char from[32];
        snprintf(from, sizeof(from), "127.0.%d.%d", 1 + i / 200, 10 + i % 200);
        tc_conn_t *c = tc_open_from(f->port, from);
        tc_send_str(c->fd, i % 2 ? "GET /healthz HTTP/1.1\r\n\r\n"
                                 : "POST /webhook/voice HTTP/1.1\r\n"
                                   "Content-Length: 5\r\n\r\nA=b&c");
        tc_resp_t r;
        if (tc_read_resp(c, &r, 5000) == 0 && r.status == 200)
            ok++;
        tc_free_resp(&r);
        tc_close(c);
    }
    ASSERT_EQ(ok, OTHERS);
    ASSERT_LE(vb_http_server_connections(f->srv), CAP);
    int ev = atomic_load(&f->events[VB_HTTP_EV_EVICTED]);
    ASSERT_GE(ev, 1);
    printf("  %d of %d served, %d slow connections evicted\n", ok, OTHERS, ev);
    for (int i = 0; i < CAP; i++)
        tc_close(slow[i]);
    srv_stop(f);
}

/* Out of descriptors: accepting pauses (a log line, an event), the waiting
 * connections stay in the backlog, and every one is served once the
 * answered ones close. The case runs in its own process, so the lowered
 * RLIMIT_NOFILE touches nothing else. */
TEST_T(http_server_emfile_pauses_and_resumes_accepting, 60)
{
    enum { CLIENTS = 32, SPARE = 4 };
    int logp[2];
    ASSERT_EQ(pipe(logp), 0);
    fcntl(logp[0], F_SETFL, O_NONBLOCK);
    vb_log_set_fd(logp[1]);
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.accept_pause_ms = 100;
    srv_fixture_t *f = srv_start(&lim, false);
    int fds[CLIENTS];
    int top = 0;
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fds[i], 0);
        if (fds[i] > top)
            top = fds[i];
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
        tc_send_str(fds[i], "GET /fd HTTP/1.1\r\nConnection: close\r\n\r\n");
    }
    double end = tc_now_ms() + 10000;
    while (atomic_load(&f->events[VB_HTTP_EV_ACCEPT_PAUSED]) == 0 &&
           tc_now_ms() < end)
        usleep(5000);
    ASSERT_GE(atomic_load(&f->events[VB_HTTP_EV_ACCEPT_PAUSED]), 1);
    /* Read each answer and hang up, which frees the server's descriptor
     * for the next connection still waiting in the backlog. */
    int ok = 0;
    for (int i = 0; i < CLIENTS; i++) {
        tc_conn_t *c = calloc(1, sizeof(*c));
        ASSERT_NOT_NULL(c);
        c->fd = fds[i];
        tc_resp_t r;
        if (tc_read_resp(c, &r, 15000) == 0 && r.status == 200)
            ok++;
        tc_free_resp(&r);
        tc_close(c);
    }
    ASSERT_EQ(ok, CLIENTS);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    int pauses = atomic_load(&f->events[VB_HTTP_EV_ACCEPT_PAUSED]);
    srv_stop(f);
    vb_log_set_fd(2);
    static char logbuf[65536];
    ssize_t n = read(logp[0], logbuf, sizeof(logbuf) - 1);
    ASSERT_GT(n, 0);
    logbuf[n] = '\0';
    ASSERT_STR_CONTAINS(logbuf, "msg=\"accept failed, accepting paused\" "
                                "err=\"Too many open files\"");
    ASSERT_STR_CONTAINS(logbuf, "msg=\"accepting resumed\"");
    printf("  %d of %d served, %d pauses\n", ok, CLIENTS, pauses);
    close(logp[0]);
    close(logp[1]);
}

/* A client that pipelines requests and never reads: once the answers
 * queued for it pass max_output_bytes the server stops reading, so the
 * client's own sends block (the kernel buffers fill) instead of the server
 * queueing answers without bound; all of them arrive once it reads. */
TEST_T(http_server_unread_pipelined_responses_stop_reading, 90)
{
    vb_http_limits_t lim;
    vb_http_limits_default(&lim);
    lim.max_output_bytes = 8192;
    srv_fixture_t *f = srv_start(&lim, false);
    /* Small socket buffers, set before connecting so the window is small
     * too: the kernel cannot absorb much of either direction. */
    tc_conn_t *c = calloc(1, sizeof(*c));
    ASSERT_NOT_NULL(c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    ASSERT_EQ(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)),
              0);
    ASSERT_EQ(setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)),
              0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)f->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static const char req[] = "GET /p HTTP/1.1\r\nHost: x\r\n\r\n";
    const size_t rl = sizeof(req) - 1;
    long sent = 0; /* whole requests */
    size_t partial = 0;
    bool blocked = false;
    double end = tc_now_ms() + 20000 * vb_test_slowdown();
    while (!blocked && tc_now_ms() < end) {
        ssize_t n = send(c->fd, req + partial, rl - partial,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            partial += (size_t)n;
            if (partial == rl) {
                partial = 0;
                sent++;
            }
            continue;
        }
        ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
        /* Blocked: give the server time to read more if it still would. */
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        blocked = poll(&p, 1, (int)(500 * vb_test_slowdown())) == 0;
    }
    ASSERT_TRUE(blocked);
    printf("  sends blocked after %ld requests\n", sent);
    /* Every whole request is answered once the client reads (a request
     * cut by the last send stays unanswered). */
    long got = 0;
    tc_resp_t r;
    while (got < sent && tc_read_resp(c, &r, 10000) == 0) {
        ASSERT_EQ(r.status, 200);
        tc_free_resp(&r);
        got++;
    }
    ASSERT_EQ(got, sent);
    tc_close(c);
    srv_stop(f);
}

/* A handler that defers /later and answers the rest at once. */
static void defer_handler(void *ud, const vb_http_req_t *req,
                          vb_http_resp_t *resp)
{
    int *n = ud;
    (*n)++;
    if (req->path_len == 6 && memcmp(req->target, "/later", 6) == 0) {
        resp->defer = true;
        resp->defer_arg = n;
        return;
    }
    resp->status = 200;
    resp->body = "now";
    resp->body_len = 3;
}

TEST(http_session_deferred_answer_keeps_order)
{
    int calls = 0, conn = 0;
    vb_http_session_cfg_t cfg = {.handler = defer_handler,
                                 .ud = &calls,
                                 .peer = "127.0.0.1:9",
                                 .conn = &conn};
    vb_http_limits_default(&cfg.limits);
    vb_http_session_t *s;
    ASSERT_EQ(vb_http_session_create(&cfg, &s), 0);
    outbuf_t o = {.len = 0};
    /* A deferred request with a pipelined one behind it, in one read. */
    const char in[] = "GET /later HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT_EQ(vb_http_session_feed(s, in, strlen(in)), VB_HTTP_CONTINUE);
    drain(s, &o);
    ASSERT_EQ(o.len, 0);
    ASSERT_EQ(calls, 1);
    ASSERT_TRUE(vb_http_session_deferred(s));
    ASSERT_TRUE(vb_http_session_blocked(s));
    ASSERT_TRUE(vb_http_session_defer_arg(s) == &calls);
    /* More input and a resume change nothing while it is deferred. */
    const char more[] = "GET /third HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT_EQ(vb_http_session_feed(s, more, strlen(more)), VB_HTTP_CONTINUE);
    ASSERT_EQ(vb_http_session_resume(s), VB_HTTP_CONTINUE);
    drain(s, &o);
    ASSERT_EQ(o.len, 0);
    ASSERT_EQ(calls, 1);
    /* The answer goes out first, then the held requests are answered. */
    vb_http_resp_t r;
    memset(&r, 0, sizeof r);
    r.status = 200;
    r.body_owned = strdup("later");
    r.body_len = 5;
    ASSERT_EQ(vb_http_session_answer(s, &r), VB_HTTP_CONTINUE);
    ASSERT_NULL(r.body_owned);
    ASSERT_TRUE(!vb_http_session_deferred(s));
    ASSERT_EQ(vb_http_session_resume(s), VB_HTTP_CONTINUE);
    drain(s, &o);
    ASSERT_EQ(calls, 3);
    ASSERT_EQ(count(o.b, "HTTP/1.1 200"), 3);
    const char *a = strstr(o.b, "later"), *b = strstr(o.b, "now");
    ASSERT_TRUE(a != NULL && b != NULL && a < b);
    /* Answering again: nothing. */
    memset(&r, 0, sizeof r);
    ASSERT_EQ(vb_http_session_answer(s, &r), VB_HTTP_CONTINUE);
    vb_http_session_destroy(s);

    /* Without a server (no conn) a deferral is ignored: 500 at once. */
    cfg.conn = NULL;
    calls = 0;
    ASSERT_EQ(vb_http_session_create(&cfg, &s), 0);
    o.len = 0;
    const char one[] = "GET /later HTTP/1.1\r\nHost: a\r\n\r\n";
    vb_http_session_feed(s, one, strlen(one));
    drain(s, &o);
    ASSERT_STR_CONTAINS(o.b, "HTTP/1.1 500");
    vb_http_session_destroy(s);
}
