/* SPDX-License-Identifier: MIT */
/*
 * The asynchronous HTTP client against a real HTTP and HTTPS server on
 * loopback, run on the test's loop: keep-alive reuse (counted accepts),
 * chunked and EOF-delimited bodies, the body cap, the time limit, a server
 * that closes mid-response, refused connections, cancellation, a bad
 * certificate, many requests at once. And the X-Voxbridge-Signature
 * signer and verifier against vectors computed by `openssl dgst`.
 */
#include "core/err.h"
#include "llhttp.h"
#include "net/http_client.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "net/vbsig.h"
#include "tests/test.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- certificates (as tests/test_tls.c makes them) ---- */

static char dir[256];

static void sh(const char *cmd)
{
    char full[4096];
    snprintf(full, sizeof(full), "cd '%s' && (%s) >>openssl.log 2>&1", dir,
             cmd);
    if (system(full) != 0)
        vb_test_fail(__FILE__, __LINE__, "command failed: %s (see %s)", cmd,
                     dir);
}

static const char *file(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
    return buf[i];
}

static void make_certs(void)
{
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 %s -keyout ca.key -out ca.crt -days 30 "
             "-subj /CN=voxbridge-test-ca",
             ec);
    sh(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 %s -keyout other.key -out other.crt -days 30 "
             "-subj /CN=other-ca",
             ec);
    sh(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req %s -keyout srv.key -out srv.csr -subj /CN=localhost",
             ec);
    sh(cmd);
    sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext");
    sh("openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key "
       "-CAcreateserial -days 30 -extfile ext -out good.crt");
    sh("openssl x509 -req -in srv.csr -CA other.crt -CAkey other.key "
       "-CAcreateserial -days 30 -extfile ext -out bad.crt");
}

/* ---- a scripted HTTP(S) server on the test's loop ---- */

#define MAX_SCONNS 256

typedef struct sconn sconn_t;

typedef struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    vb_tls_config_t *tls; /* NULL: plain HTTP */
    int port;
    int accepts;
    int requests;
    sconn_t *conns[MAX_SCONNS];
    char last_target[256];
    char last_head[4096];
    char last_body[4096];
} server_t;

struct sconn {
    server_t *s;
    vb_transport_t *t;
    llhttp_t p;
    llhttp_settings_t set;
    char target[256];
    size_t target_len;
    char head[4096];
    size_t head_len;
    char body[4096];
    size_t body_len;
    uv_timer_t timer; /* delayed answers */
    bool timer_used;
    bool drop;
    int slot;
};

static void sconn_freed(uv_handle_t *h)
{
    free(h->data);
}

static void sconn_close(sconn_t *k)
{
    if (k->t == NULL)
        return;
    vb_transport_close(k->t);
    k->t = NULL;
    k->s->conns[k->slot] = NULL;
    if (k->timer_used)
        uv_close((uv_handle_t *)&k->timer, sconn_freed);
    else
        free(k);
}

static void put(sconn_t *k, const char *s)
{
    ASSERT_EQ(vb_transport_write(k->t, s, strlen(s)), 0);
}

static const char *ok_reply = "HTTP/1.1 200 OK\r\nContent-Type: "
                              "application/json\r\nContent-Length: 11\r\n"
                              "\r\n{\"ok\":true}";

static void on_delay(uv_timer_t *t)
{
    sconn_t *k = t->data;
    if (k->t != NULL)
        put(k, ok_reply);
}

/* Answers by path. */
static void respond(sconn_t *k)
{
    server_t *s = k->s;
    const char *tg = k->target;
    s->requests++;
    snprintf(s->last_target, sizeof(s->last_target), "%s", tg);
    memcpy(s->last_head, k->head, k->head_len);
    s->last_head[k->head_len] = '\0';
    memcpy(s->last_body, k->body, k->body_len);
    s->last_body[k->body_len] = '\0';
    if (strcmp(tg, "/ok") == 0) {
        put(k, ok_reply);
    } else if (strcmp(tg, "/echo") == 0) {
        char buf[8192];
        snprintf(buf, sizeof(buf),
                 "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 k->body_len, s->last_body);
        put(k, buf);
    } else if (strcmp(tg, "/interim") == 0) {
        put(k, "HTTP/1.1 100 Continue\r\n\r\n");
        put(k, ok_reply);
    } else if (strcmp(tg, "/chunked") == 0) {
        /* A 13-letter header after Content-Type leaves it alone. */
        put(k, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
               "Content-Type: application/json\r\n"
               "Cache-Control: no-cache\r\n\r\n"
               "5\r\n{\"a\":\r\n3;ext=1\r\n\"b\"\r\n1\r\n}\r\n0\r\n\r\n");
    } else if (strcmp(tg, "/close") == 0) {
        put(k, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
               "2\r\n\r\nhi");
        vb_transport_shutdown(k->t);
    } else if (strcmp(tg, "/eof") == 0) {
        put(k, "HTTP/1.1 200 OK\r\n\r\nuntil the end");
        vb_transport_shutdown(k->t);
    } else if (strcmp(tg, "/big") == 0) {
        static char big[8192 + 256];
        int n = snprintf(big, sizeof(big),
                         "HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n");
        memset(big + n, 'x', 8192);
        big[n + 8192] = '\0';
        put(k, big);
    } else if (strcmp(tg, "/cut") == 0) {
        put(k, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..");
        vb_transport_shutdown(k->t);
    } else if (strcmp(tg, "/garbage") == 0) {
        put(k, "SMTP ready\r\n\r\n");
    } else if (strcmp(tg, "/extra") == 0) {
        /* a response, then bytes nobody asked for */
        char buf[512];
        snprintf(buf, sizeof(buf), "%sHTTP/1.1 200 OK\r\n", ok_reply);
        put(k, buf);
    } else if (strcmp(tg, "/delay") == 0) {
        if (!k->timer_used) {
            uv_timer_init(s->loop, &k->timer);
            k->timer.data = k;
            k->timer_used = true;
        }
        uv_timer_start(&k->timer, on_delay, 100, 0);
    } else if (strcmp(tg, "/hang") == 0) {
        /* never answers */
    } else if (strcmp(tg, "/drop") == 0) {
        k->drop = true; /* closed once the parser returns */
    } else {
        put(k, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
}

static int s_on_url(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *k = p->data;
    if (k->target_len + n < sizeof(k->target)) {
        memcpy(k->target + k->target_len, at, n);
        k->target_len += n;
        k->target[k->target_len] = '\0';
    }
    return 0;
}

static int s_on_body(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *k = p->data;
    if (k->body_len + n < sizeof(k->body)) {
        memcpy(k->body + k->body_len, at, n);
        k->body_len += n;
    }
    return 0;
}

static int s_on_begin(llhttp_t *p)
{
    sconn_t *k = p->data;
    k->target_len = k->body_len = 0;
    k->target[0] = '\0';
    return 0;
}

static int s_on_done(llhttp_t *p)
{
    sconn_t *k = p->data;
    respond(k);
    if (k->drop)
        return HPE_PAUSED;
    k->head_len = 0;
    return 0;
}

static void s_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    (void)t;
    sconn_t *k = ud;
    /* keep the raw head of the current request for header checks */
    size_t room = sizeof(k->head) - 1 - k->head_len;
    size_t c = n < room ? n : room;
    memcpy(k->head + k->head_len, d, c);
    k->head_len += c;
    llhttp_execute(&k->p, (const char *)d, n);
    if (k->drop)
        sconn_close(k);
}

static void s_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                    void *ud)
{
    (void)t;
    (void)err;
    if (ev == VB_TRANSPORT_EOF || ev == VB_TRANSPORT_ERROR)
        sconn_close(ud);
}

static void s_on_conn(uv_stream_t *l, int status)
{
    server_t *s = l->data;
    ASSERT_EQ(status, 0);
    uv_tcp_t *tmp = malloc(sizeof(*tmp));
    uv_tcp_init(s->loop, tmp);
    ASSERT_EQ(uv_accept(l, (uv_stream_t *)tmp), 0);
    uv_os_fd_t fd;
    ASSERT_EQ(uv_fileno((uv_handle_t *)tmp, &fd), 0);
    int dupfd = dup(fd);
    uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
    s->accepts++;
    sconn_t *k = calloc(1, sizeof(*k));
    k->s = s;
    k->slot = -1;
    for (int i = 0; i < MAX_SCONNS; i++)
        if (s->conns[i] == NULL) {
            s->conns[i] = k;
            k->slot = i;
            break;
        }
    ASSERT_GE(k->slot, 0);
    vb_transport_t *tcp = NULL;
    ASSERT_EQ(vb_tcp_adopt(s->loop, dupfd, &tcp), 0);
    if (s->tls != NULL)
        ASSERT_EQ(vb_tls_wrap(s->loop, s->tls, tcp, NULL, "srv", &k->t), 0);
    else
        k->t = tcp;
    llhttp_settings_init(&k->set);
    k->set.on_url = s_on_url;
    k->set.on_body = s_on_body;
    k->set.on_message_begin = s_on_begin;
    k->set.on_message_complete = s_on_done;
    llhttp_init(&k->p, HTTP_REQUEST, &k->set);
    k->p.data = k;
    vb_transport_set_handler(k->t, s_read, s_event, k);
}

static void server_start(server_t *s, uv_loop_t *loop, const char *cert)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    if (cert != NULL)
        ASSERT_EQ(vb_tls_config_server(file(cert), file("srv.key"), &s->tls),
                  0);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    ASSERT_EQ(uv_tcp_bind(&s->listener, (struct sockaddr *)&a, 0), 0);
    ASSERT_EQ(uv_listen((uv_stream_t *)&s->listener, 128, s_on_conn), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
}

static void server_stop(server_t *s)
{
    for (int i = 0; i < MAX_SCONNS; i++)
        if (s->conns[i] != NULL)
            sconn_close(s->conns[i]);
    uv_close((uv_handle_t *)&s->listener, NULL);
    vb_tls_config_destroy(s->tls);
}

/* ---- client side ---- */

typedef struct result {
    int calls;
    int err;
    int status;
    char body[16384];
    size_t body_len;
    char ctype[128];
} result_t;

static void on_done(int err, const vb_http_response_t *r, void *ud)
{
    result_t *res = ud;
    res->calls++;
    res->err = err;
    if (err == 0) {
        ASSERT_NOT_NULL(r);
        res->status = r->status;
        ASSERT_LT(r->body_len, sizeof(res->body));
        memcpy(res->body, r->body, r->body_len + 1);
        res->body_len = r->body_len;
        snprintf(res->ctype, sizeof(res->ctype), "%s", r->content_type);
    } else {
        ASSERT_NULL(r);
    }
}

static void run_until_calls(uv_loop_t *loop, const int *calls, int want,
                            int timeout_ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double limit = timeout_ms * vb_test_slowdown();
    while (*calls < want) {
        uv_run(loop, UV_RUN_ONCE);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                    (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (ms > limit)
            vb_test_fail(__FILE__, __LINE__, "timed out: %d of %d callbacks",
                         *calls, want);
    }
}

static void finish_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(loop), 0);
}

static void url_for(char *buf, size_t cap, const char *scheme, int port,
                    const char *path)
{
    snprintf(buf, cap, "%s://%s:%d%s", scheme,
             strcmp(scheme, "https") == 0 ? "localhost" : "127.0.0.1", port,
             path);
}

static void get(vb_http_client_t *c, server_t *s, const char *scheme,
                const char *path, result_t *res, uint32_t timeout_ms)
{
    char url[128];
    url_for(url, sizeof(url), scheme, s->port, path);
    vb_http_request_t rq = {
        .method = "GET", .url = url, .timeout_ms = timeout_ms};
    memset(res, 0, sizeof(*res));
    ASSERT_EQ(vb_http_client_request(c, &rq, on_done, res, NULL), 0);
    ASSERT_EQ(res->calls, 0); /* never from inside the request call */
}

TEST(http_client_post_keeps_the_connection_alive)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t s;
    server_start(&s, &loop, NULL);
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, NULL, &c), 0);
    char url[128];
    url_for(url, sizeof(url), "http", s.port, "/echo");
    const char body[] = "{\"order_id\":\"A-1\"}";
    vb_http_header_t hd[] = {{"Content-Type", "application/json"},
                             {"X-Test", "yes"}};
    for (int i = 0; i < 5; i++) {
        vb_http_request_t rq = {.method = "POST",
                                .url = url,
                                .headers = hd,
                                .n_headers = 2,
                                .body = body,
                                .body_len = strlen(body)};
        static result_t res;
        memset(&res, 0, sizeof(res));
        ASSERT_EQ(vb_http_client_request(c, &rq, on_done, &res, NULL), 0);
        run_until_calls(&loop, &res.calls, 1, 5000);
        ASSERT_EQ(res.err, 0);
        ASSERT_EQ(res.status, 201);
        ASSERT_STR_EQ(res.body, body);
        ASSERT_STR_EQ(res.ctype, "text/plain");
        ASSERT_EQ(vb_http_client_idle_count(c), 1);
    }
    /* five requests, one connection */
    ASSERT_EQ(s.accepts, 1);
    ASSERT_EQ(s.requests, 5);
    ASSERT_UEQ(vb_http_client_connections_opened(c), 1);
    ASSERT_STR_CONTAINS(s.last_head, "POST /echo HTTP/1.1\r\n");
    char host[64];
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", s.port);
    ASSERT_STR_CONTAINS(s.last_head, host);
    ASSERT_STR_CONTAINS(s.last_head, "\r\nContent-Length: 18\r\n");
    ASSERT_STR_CONTAINS(s.last_head, "\r\nX-Test: yes\r\n");
    vb_http_client_destroy(c);
    server_stop(&s);
    finish_loop(&loop);
}

TEST(http_client_bodies_chunked_interim_eof_and_close)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t s;
    server_start(&s, &loop, NULL);
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, NULL, &c), 0);
    static result_t r;
    get(c, &s, "http", "/chunked", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "{\"a\":\"b\"}");
    ASSERT_STR_EQ(r.ctype, "application/json");
    ASSERT_EQ(vb_http_client_idle_count(c), 1);

    get(c, &s, "http", "/interim", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, "{\"ok\":true}");
    ASSERT_EQ(s.accepts, 1); /* reused after the chunked answer */

    /* Connection: close: answered, and not pooled */
    get(c, &s, "http", "/close", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, 0);
    ASSERT_STR_EQ(r.body, "hi");
    ASSERT_EQ(vb_http_client_idle_count(c), 0);

    /* a body that ends when the server closes */
    get(c, &s, "http", "/eof", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, 0);
    ASSERT_STR_EQ(r.body, "until the end");
    ASSERT_EQ(vb_http_client_idle_count(c), 0);
    ASSERT_EQ(s.accepts, 2);

    /* bytes after the response: answered, the connection is not reused */
    get(c, &s, "http", "/extra", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, 0);
    ASSERT_EQ(vb_http_client_idle_count(c), 0);
    vb_http_client_destroy(c);
    server_stop(&s);
    finish_loop(&loop);
}

TEST(http_client_failures_are_reported_once)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t s;
    server_start(&s, &loop, NULL);
    vb_http_client_config_t cfg = {.max_body_bytes = 4096};
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, &cfg, &c), 0);
    static result_t r;

    get(c, &s, "http", "/big", &r, 5000); /* 8192 > 4096 */
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, VB_EMSGSIZE);
    ASSERT_EQ(vb_http_client_idle_count(c), 0);

    /* A client that wants only the status reads any body and drops it. */
    vb_http_client_config_t dcfg = {.max_body_bytes = 4096,
                                    .discard_body = true};
    vb_http_client_t *dc = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, &dcfg, &dc), 0);
    static result_t dr;
    get(dc, &s, "http", "/big", &dr, 5000);
    run_until_calls(&loop, &dr.calls, 1, 5000);
    ASSERT_EQ(dr.err, 0);
    ASSERT_EQ(dr.status, 200);
    ASSERT_EQ(strlen(dr.body), 0);
    vb_http_client_destroy(dc);

    get(c, &s, "http", "/cut", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, VB_ECLOSED);

    get(c, &s, "http", "/garbage", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, VB_EPROTO);

    get(c, &s, "http", "/drop", &r, 5000);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, VB_ECLOSED);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    get(c, &s, "http", "/hang", &r, 300);
    run_until_calls(&loop, &r.calls, 1, 5000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ASSERT_EQ(r.err, VB_ETIMEDOUT);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    ASSERT_DBL_OP(ms, >=, 290);

    /* refused: a port that was just free */
    uv_tcp_t tmp;
    uv_tcp_init(&loop, &tmp);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    ASSERT_EQ(uv_tcp_bind(&tmp, (struct sockaddr *)&a, 0), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&a, &len);
    int dead = ntohs(a.sin_port);
    uv_close((uv_handle_t *)&tmp, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", dead);
    vb_http_request_t rq = {.method = "POST", .url = url};
    memset(&r, 0, sizeof(r));
    ASSERT_EQ(vb_http_client_request(c, &rq, on_done, &r, NULL), 0);
    run_until_calls(&loop, &r.calls, 1, 5000);
    ASSERT_EQ(r.err, VB_ECONNREFUSED);

    /* refused up front */
    vb_http_request_t bad = {.method = "GET", .url = "ftp://x/"};
    ASSERT_EQ(vb_http_client_request(c, &bad, on_done, &r, NULL), VB_EINVAL);
    bad.url = "https://localhost/";
    ASSERT_EQ(vb_http_client_request(c, &bad, on_done, &r, NULL), VB_ECONFIG);
    vb_http_header_t evil[] = {{"X-A", "1\r\nX-Injected: 1"}};
    bad.url = url;
    bad.headers = evil;
    bad.n_headers = 1;
    ASSERT_EQ(vb_http_client_request(c, &bad, on_done, &r, NULL), VB_EINVAL);
    vb_http_header_t evil2[] = {{"X A", "1"}};
    bad.headers = evil2;
    ASSERT_EQ(vb_http_client_request(c, &bad, on_done, &r, NULL), VB_EINVAL);
    bad.headers = NULL;
    bad.n_headers = 0;
    bad.method = "get";
    ASSERT_EQ(vb_http_client_request(c, &bad, on_done, &r, NULL), VB_EINVAL);

    /* every callback ran exactly once: nothing more arrives */
    ASSERT_EQ(r.calls, 1);
    vb_http_client_destroy(c);
    server_stop(&s);
    finish_loop(&loop);
}

TEST(http_client_cancel_calls_nothing_and_closes)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t s;
    server_start(&s, &loop, NULL);
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, NULL, &c), 0);
    static result_t r, r2;
    char url[128];
    url_for(url, sizeof(url), "http", s.port, "/delay");
    vb_http_request_t rq = {.method = "POST", .url = url, .timeout_ms = 2000};
    vb_http_call_t *h = NULL;
    ASSERT_EQ(vb_http_client_request(c, &rq, on_done, &r, &h), 0);
    ASSERT_NOT_NULL(h);
    /* let the request reach the server, then cancel */
    while (s.requests < 1)
        uv_run(&loop, UV_RUN_ONCE);
    vb_http_cancel(h);
    /* the server sees the connection close */
    while (s.conns[0] != NULL)
        uv_run(&loop, UV_RUN_ONCE);
    /* a request that is answered meanwhile proves the loop ran on */
    get(c, &s, "http", "/ok", &r2, 5000);
    run_until_calls(&loop, &r2.calls, 1, 5000);
    ASSERT_EQ(r2.status, 200);
    ASSERT_EQ(r.calls, 0);
    ASSERT_EQ(s.accepts, 2); /* the cancelled connection was not reused */

    /* destroy with a request in flight: no callback either */
    ASSERT_EQ(vb_http_client_request(c, &rq, on_done, &r, NULL), 0);
    while (s.requests < 3)
        uv_run(&loop, UV_RUN_ONCE);
    vb_http_client_destroy(c);
    server_stop(&s);
    finish_loop(&loop);
    ASSERT_EQ(r.calls, 0);
}

TEST(http_client_idle_connections_expire_and_are_bounded)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t s;
    server_start(&s, &loop, NULL);
    vb_http_client_config_t cfg = {.max_idle_per_host = 2,
                                   .idle_timeout_ms = 200};
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, &cfg, &c), 0);
    enum { N = 5 };
    static result_t r[N];
    for (int i = 0; i < N; i++)
        get(c, &s, "http", "/delay", &r[i], 5000);
    for (int i = 0; i < N; i++)
        run_until_calls(&loop, &r[i].calls, 1, 5000);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(r[i].status, 200);
    ASSERT_EQ(s.accepts, N);
    ASSERT_EQ(vb_http_client_idle_count(c), 2); /* the rest were closed */
    /* idle past the timeout: closed, the next request connects anew */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (vb_http_client_idle_count(c) > 0) {
        uv_run(&loop, UV_RUN_ONCE);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ASSERT_LT(t1.tv_sec - t0.tv_sec, 10);
    }
    get(c, &s, "http", "/ok", &r[0], 5000);
    run_until_calls(&loop, &r[0].calls, 1, 5000);
    ASSERT_EQ(r[0].status, 200);
    ASSERT_EQ(s.accepts, N + 1);

    /* a server that closes an idle connection: a GET goes out again on a
     * new connection; the pool loses the dead one */
    for (int i = 0; i < MAX_SCONNS; i++)
        if (s.conns[i] != NULL)
            sconn_close(s.conns[i]);
    get(c, &s, "http", "/ok", &r[1], 5000);
    run_until_calls(&loop, &r[1].calls, 1, 5000);
    ASSERT_EQ(r[1].err, 0);
    ASSERT_EQ(r[1].status, 200);
    vb_http_client_destroy(c);
    server_stop(&s);
    finish_loop(&loop);
}

TEST(http_client_many_concurrent_requests)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t s;
    server_start(&s, &loop, NULL);
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, NULL, &c), 0);
    enum { N = 100 };
    static result_t r[N];
    static int total;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++)
            get(c, &s, "http", i % 2 ? "/delay" : "/chunked", &r[i], 10000);
        for (int i = 0; i < N; i++)
            run_until_calls(&loop, &r[i].calls, 1, 20000);
        for (int i = 0; i < N; i++) {
            ASSERT_EQ(r[i].err, 0);
            ASSERT_EQ(r[i].status, 200);
            ASSERT_STR_EQ(r[i].body, i % 2 ? "{\"ok\":true}" : "{\"a\":\"b\"}");
            total++;
        }
    }
    ASSERT_EQ(total, 2 * N);
    ASSERT_EQ(s.requests, 2 * N);
    /* the second round reused the four pooled connections */
    ASSERT_LE(s.accepts, 2 * N - 4);
    vb_http_client_destroy(c);
    server_stop(&s);
    finish_loop(&loop);
}

TEST(http_client_https_verifies_the_server)
{
    snprintf(dir, sizeof(dir), "%s", vb_test_tmpdir());
    make_certs();
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_t good, bad;
    server_start(&good, &loop, "good.crt");
    server_start(&bad, &loop, "bad.crt");
    vb_tls_config_t *tls = NULL;
    ASSERT_EQ(vb_tls_config_client(file("ca.crt"), &tls), 0);
    vb_http_client_config_t cfg = {.tls = tls};
    vb_http_client_t *c = NULL;
    ASSERT_EQ(vb_http_client_create(&loop, &cfg, &c), 0);
    static result_t r;
    for (int i = 0; i < 3; i++) {
        get(c, &good, "https", "/chunked", &r, 10000);
        run_until_calls(&loop, &r.calls, 1, 10000);
        ASSERT_EQ(r.err, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STR_EQ(r.body, "{\"a\":\"b\"}");
    }
    ASSERT_EQ(good.accepts, 1); /* keep-alive over TLS too */

    get(c, &bad, "https", "/ok", &r, 10000);
    run_until_calls(&loop, &r.calls, 1, 10000);
    ASSERT_EQ(r.err, VB_ECERT);
    ASSERT_EQ(bad.requests, 0);

    /* https and http to the same port are different pools */
    get(c, &good, "http", "/ok", &r, 3000);
    run_until_calls(&loop, &r.calls, 1, 10000);
    ASSERT_NE(r.err, 0);
    vb_http_client_destroy(c);
    server_stop(&good);
    server_stop(&bad);
    finish_loop(&loop);
    vb_tls_config_destroy(tls);
}

TEST(http_client_parser_alone)
{
    size_t bl = 0;
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    for (size_t ch = 0; ch < 5; ch++) {
        ASSERT_EQ(vb_http_client_parse_response(ok, strlen(ok), ch, 100, &bl),
                  200);
        ASSERT_UEQ(bl, 3);
    }
    ASSERT_EQ(vb_http_client_parse_response(ok, strlen(ok), 1, 2, NULL),
              VB_EMSGSIZE);
    ASSERT_EQ(vb_http_client_parse_response(ok, 20, 0, 100, NULL), VB_ECLOSED);
    const char *st = "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n";
    ASSERT_EQ(vb_http_client_parse_response(st, strlen(st), 0, 100, NULL),
              VB_EPROTO);
    ASSERT_EQ(vb_http_client_parse_response("", 0, 0, 100, NULL), VB_ECLOSED);
    /* a head over the cap */
    static char huge[VB_HTTP_CLIENT_MAX_HEAD + 256];
    int n = snprintf(huge, sizeof(huge), "HTTP/1.1 200 OK\r\nX: ");
    memset(huge + n, 'a', sizeof(huge) - (size_t)n - 1);
    ASSERT_EQ(
        vb_http_client_parse_response(huge, sizeof(huge) - 1, 0, 100, NULL),
        VB_EMSGSIZE);
}

/* ---- X-Voxbridge-Signature ---- */

/* HMAC-SHA256 by openssl, the independent check. */
static void openssl_hmac(const char *key, const char *msg, char *out)
{
    snprintf(dir, sizeof(dir), "%s", vb_test_tmpdir());
    FILE *f = fopen(file("msg"), "wb");
    ASSERT_NOT_NULL(f);
    fwrite(msg, 1, strlen(msg), f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl dgst -sha256 -hmac '%s' -r < '%s' | cut -d' ' -f1", key,
             file("msg"));
    FILE *p = popen(cmd, "r");
    ASSERT_NOT_NULL(p);
    ASSERT_NOT_NULL(fgets(out, 80, p));
    pclose(p);
    out[strcspn(out, "\r\n")] = '\0';
    ASSERT_EQ(strlen(out), 64);
}

TEST(vbsig_matches_openssl_and_verifies)
{
    const char *key = "whsec_test";
    const char *body = "{\"event\":\"tool.call\",\"x\":\"\\u00e9\"}";
    char sig[VB_SIG_MAX];
    ASSERT_EQ(vb_sig_sign(key, strlen(key), 1764633600, body, strlen(body), sig,
                          sizeof(sig)),
              0);
    char msg[256], want[80], hdr[160];
    snprintf(msg, sizeof(msg), "1764633600.%s", body);
    openssl_hmac(key, msg, want);
    snprintf(hdr, sizeof(hdr), "t=1764633600,v1=%s", want);
    ASSERT_STR_EQ(sig, hdr);
    /* a fixed vector, so a change in the scheme shows here too:
     * printf '1.' | openssl dgst -sha256 -hmac k */
    ASSERT_EQ(vb_sig_sign("k", 1, 1, "", 0, sig, sizeof(sig)), 0);
    openssl_hmac("k", "1.", want);
    snprintf(hdr, sizeof(hdr), "t=1,v1=%s", want);
    ASSERT_STR_EQ(sig, hdr);

    int64_t now = 1764633600;
    ASSERT_EQ(vb_sig_sign(key, strlen(key), now, body, strlen(body), sig,
                          sizeof(sig)),
              0);
    ASSERT_EQ(
        vb_sig_verify(key, strlen(key), sig, body, strlen(body), now + 10, 300),
        0);
    /* old t, t from the future */
    ASSERT_EQ(vb_sig_verify(key, strlen(key), sig, body, strlen(body),
                            now + 301, 300),
              VB_ERANGE);
    ASSERT_EQ(vb_sig_verify(key, strlen(key), sig, body, strlen(body),
                            now - 301, 300),
              VB_ERANGE);
    /* wrong key, tampered body */
    ASSERT_EQ(
        vb_sig_verify("whsec_other", 11, sig, body, strlen(body), now, 300),
        VB_EAUTH);
    char tampered[128];
    snprintf(tampered, sizeof(tampered), "%s", body);
    tampered[3] ^= 1;
    ASSERT_EQ(
        vb_sig_verify(key, strlen(key), sig, tampered, strlen(body), now, 300),
        VB_EAUTH);
    ASSERT_EQ(
        vb_sig_verify(key, strlen(key), sig, body, strlen(body) - 1, now, 300),
        VB_EAUTH);
    /* a t changed without the MAC */
    char moved[VB_SIG_MAX + 8];
    snprintf(moved, sizeof(moved), "t=%lld%s", (long long)now + 1,
             strchr(sig, ','));
    ASSERT_EQ(
        vb_sig_verify(key, strlen(key), moved, body, strlen(body), now, 300),
        VB_EAUTH);
    /* rotation: any v1 may match */
    char two[256];
    snprintf(two, sizeof(two), "t=%lld,v1=%064d,%s", (long long)now, 0,
             strchr(sig, ',') + 1);
    ASSERT_EQ(
        vb_sig_verify(key, strlen(key), two, body, strlen(body), now, 300), 0);
    /* malformed */
    ASSERT_EQ(vb_sig_verify(key, 10, "v1=abc", body, 3, now, 300), VB_EINVAL);
    ASSERT_EQ(vb_sig_verify(key, 10, "t=12", body, 3, now, 300), VB_EINVAL);
    ASSERT_EQ(vb_sig_verify(key, 10, "t=1x,v1=00", body, 3, now, 300),
              VB_EINVAL);
    ASSERT_EQ(vb_sig_sign("", 0, now, body, 3, sig, sizeof(sig)), VB_EINVAL);
    ASSERT_EQ(vb_sig_sign(key, 3, now, body, 3, sig, 20), VB_ENOSPC);
}
