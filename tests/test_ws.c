/* SPDX-License-Identifier: MIT */
/*
 * net/ws: scripted byte feeds through the sans-I/O endpoint (every chunk
 * size, fragmentation, control frames between fragments, each protocol
 * violation and the close code it must produce), the handshake helpers,
 * and the transport glue over real loopback TCP.
 */
#include "net/ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "net/tcp.h"
#include "tests/test.h"
#include "tests/ws_frames.h"

/* ---- sans-I/O fixture ---- */

typedef struct msgrec {
    bool text;
    size_t len;
    uint8_t data[1 << 17];
} msgrec_t;

typedef struct fx {
    vb_ws_t *ws;
    uint8_t out[1 << 18];
    size_t out_len;
    msgrec_t msgs[8];
    int nmsgs;
    int closes;
    vb_ws_close_info_t info;
    int pongs;
    bool destroy_in_message;
} fx_t;

static fx_t *fx_alloc(void)
{
    fx_t *f = calloc(1, sizeof *f);
    ASSERT_NOT_NULL(f);
    return f;
}

static void on_msg(vb_ws_t *ws, bool text, const uint8_t *d, size_t n, void *ud)
{
    fx_t *f = ud;
    if (f->nmsgs < 8) {
        f->msgs[f->nmsgs].text = text;
        f->msgs[f->nmsgs].len = n;
        memcpy(f->msgs[f->nmsgs].data, d, n);
    }
    f->nmsgs++;
    if (f->destroy_in_message) {
        vb_ws_destroy(ws);
        f->ws = NULL;
    }
}

static void on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    (void)ws;
    fx_t *f = ud;
    f->closes++;
    f->info = *info;
}

static void on_pong(vb_ws_t *ws, const uint8_t *d, size_t n, void *ud)
{
    (void)ws;
    (void)d;
    (void)n;
    ((fx_t *)ud)->pongs++;
}

static int on_out(vb_ws_t *ws, const uint8_t *d, size_t n, void *ud)
{
    (void)ws;
    fx_t *f = ud;
    if (f->out_len + n > sizeof f->out)
        return VB_ENOSPC;
    memcpy(f->out + f->out_len, d, n);
    f->out_len += n;
    return 0;
}

static fx_t *fx_new(vb_ws_role_t role, size_t max_message)
{
    fx_t *f = fx_alloc();
    vb_ws_config_t cfg = {.role = role, .max_message = max_message};
    vb_ws_callbacks_t cb = {.on_message = on_msg,
                            .on_close = on_close,
                            .on_pong = on_pong,
                            .on_output = on_out};
    ASSERT_EQ(vb_ws_create(&cfg, &cb, f, &f->ws), 0);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_OPEN);
    return f;
}

static void fx_free(fx_t *f)
{
    vb_ws_destroy(f->ws);
    free(f);
}

/* Feeds `n` bytes in chunks of `chunk` bytes. */
static void feed_chunked(fx_t *f, const uint8_t *p, size_t n, size_t chunk)
{
    for (size_t off = 0; off < n && f->ws != NULL; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        if (vb_ws_state(f->ws) == VB_WS_CLOSED)
            break;
        vb_ws_feed(f->ws, p + off, k);
    }
}

/* The n-th frame the endpoint wrote. */
static bool out_frame(const fx_t *f, int index, tf_parsed_t *pf)
{
    size_t off = 0;
    for (int i = 0; i <= index; i++) {
        size_t used = tf_parse(f->out + off, f->out_len - off, pf);
        if (used == 0)
            return false;
        off += used;
    }
    return true;
}

static tf_parsed_t *pf_alloc(void)
{
    tf_parsed_t *p = malloc(sizeof *p);
    ASSERT_NOT_NULL(p);
    return p;
}

/* Asserts that the endpoint failed the connection with `code`. */
static void expect_fail(fx_t *f, uint16_t code, int err, const char *reason)
{
    tf_parsed_t *pf = pf_alloc();
    ASSERT_TRUE(out_frame(f, 0, pf));
    ASSERT_EQ(pf->op, 0x8);
    ASSERT_EQ(tf_close_code(pf), code);
    ASSERT_TRUE(!pf->masked);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSED);
    ASSERT_EQ(f->closes, 1);
    ASSERT_EQ(f->info.code_sent, code);
    ASSERT_EQ(f->info.code_received, VB_WS_CLOSE_ABNORMAL);
    ASSERT_EQ(f->info.err, err);
    if (reason != NULL)
        ASSERT_STR_EQ(f->info.reason, reason);
    ASSERT_EQ(f->nmsgs, 0);
    free(pf);
}

/* ---- handshake helpers ---- */

TEST(accept_key_rfc6455_vector)
{
    char out[64];
    /* RFC 6455 §1.3. */
    ASSERT_EQ(vb_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out, sizeof out), 0);
    ASSERT_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ASSERT_EQ(vb_ws_accept_key("short", out, sizeof out), VB_EINVAL);
    ASSERT_EQ(vb_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=!", out, sizeof out),
              VB_EINVAL);
    ASSERT_EQ(vb_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out, 10), VB_EINVAL);
    /* Not base64 of exactly 16 bytes. */
    ASSERT_EQ(vb_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", out, sizeof out),
              VB_EINVAL);
    ASSERT_EQ(vb_ws_accept_key("dGhlIHNhbXBsZSBub25jZXg=", out, sizeof out),
              VB_EINVAL);
    ASSERT_EQ(vb_ws_accept_key("!!!!!!!!!!!!!!!!!!!!!!==", out, sizeof out),
              VB_EINVAL);
    ASSERT_EQ(vb_ws_accept_key(NULL, out, sizeof out), VB_EINVAL);
}

TEST(client_key_is_random_base64)
{
    char a[32], b[32], acc[64];
    ASSERT_EQ(vb_ws_client_key(a, sizeof a), 0);
    ASSERT_EQ(vb_ws_client_key(b, sizeof b), 0);
    ASSERT_EQ(strlen(a), VB_WS_KEY_LEN);
    ASSERT_TRUE(strcmp(a, b) != 0);
    ASSERT_EQ(vb_ws_accept_key(a, acc, sizeof acc), 0);
}

TEST(url_parse_http)
{
    vb_ws_url_t u;
    ASSERT_EQ(vb_ws_url_parse_http("https://api.twilio.com/2010-04-01", &u), 0);
    ASSERT_TRUE(u.secure);
    ASSERT_STR_EQ(u.host, "api.twilio.com");
    ASSERT_EQ(u.port, 443);
    ASSERT_STR_EQ(u.target, "/2010-04-01");
    ASSERT_EQ(vb_ws_url_parse_http("http://127.0.0.1:8080", &u), 0);
    ASSERT_TRUE(!u.secure);
    ASSERT_EQ(u.port, 8080);
    ASSERT_TRUE(u.port_explicit);
    ASSERT_STR_EQ(u.target, "/");
    ASSERT_EQ(vb_ws_url_parse_http("ws://h/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse_http("http://", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse_http("http://h:99999/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse_http(NULL, &u), VB_EINVAL);
}

TEST(url_parse)
{
    vb_ws_url_t u;
    ASSERT_EQ(vb_ws_url_parse("wss://generativelanguage.googleapis.com/ws/"
                              "x.y?key=1",
                              &u),
              0);
    ASSERT_TRUE(u.secure);
    ASSERT_STR_EQ(u.host, "generativelanguage.googleapis.com");
    ASSERT_EQ(u.port, 443);
    ASSERT_TRUE(!u.port_explicit);
    ASSERT_STR_EQ(u.target, "/ws/x.y?key=1");
    ASSERT_EQ(vb_ws_url_parse("ws://127.0.0.1:8080", &u), 0);
    ASSERT_TRUE(!u.secure);
    ASSERT_EQ(u.port, 8080);
    ASSERT_STR_EQ(u.target, "/");
    ASSERT_EQ(vb_ws_url_parse("WS://[::1]:9/a", &u), 0);
    ASSERT_STR_EQ(u.host, "::1");
    ASSERT_EQ(u.port, 9);
    ASSERT_EQ(vb_ws_url_parse("ws://h?q", &u), 0);
    ASSERT_STR_EQ(u.target, "/?q");
    ASSERT_EQ(vb_ws_url_parse("http://h/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws:///x", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://h:0/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://h:70000/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://h:/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://u:p@h/", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://h/a b", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://h/#f", &u), VB_EINVAL);
    ASSERT_EQ(vb_ws_url_parse("ws://[::1/", &u), VB_EINVAL);
}

TEST(client_request_has_host_path_and_extra_headers)
{
    vb_ws_url_t u;
    char buf[1024];
    size_t len = 0;
    const char *hdrs[] = {"x-goog-api-key: secret", "X-Other: 1", NULL};
    ASSERT_EQ(vb_ws_url_parse("ws://example.com:8443/v1/live?alt=x", &u), 0);
    ASSERT_EQ(vb_ws_client_request(&u, "dGhlIHNhbXBsZSBub25jZQ==", hdrs, buf,
                                   sizeof buf, &len),
              0);
    ASSERT_EQ(len, strlen(buf));
    ASSERT_TRUE(strncmp(buf, "GET /v1/live?alt=x HTTP/1.1\r\n", 29) == 0);
    ASSERT_STR_CONTAINS(buf, "\r\nHost: example.com:8443\r\n");
    ASSERT_STR_CONTAINS(buf, "\r\nUpgrade: websocket\r\n");
    ASSERT_STR_CONTAINS(buf, "\r\nConnection: Upgrade\r\n");
    ASSERT_STR_CONTAINS(buf,
                        "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    ASSERT_STR_CONTAINS(buf, "\r\nSec-WebSocket-Version: 13\r\n");
    ASSERT_STR_CONTAINS(buf, "\r\nx-goog-api-key: secret\r\nX-Other: 1\r\n");
    ASSERT_TRUE(len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0);
    /* Default port is omitted; IPv6 gets brackets. */
    ASSERT_EQ(vb_ws_url_parse("wss://[::1]/", &u), 0);
    ASSERT_EQ(vb_ws_client_request(&u, "k", NULL, buf, sizeof buf, &len), 0);
    ASSERT_STR_CONTAINS(buf, "\r\nHost: [::1]\r\n");
    const char *bad1[] = {"no colon", NULL};
    const char *bad2[] = {"X: a\r\nInjected: 1", NULL};
    ASSERT_EQ(vb_ws_client_request(&u, "k", bad1, buf, sizeof buf, &len),
              VB_EINVAL);
    ASSERT_EQ(vb_ws_client_request(&u, "k", bad2, buf, sizeof buf, &len),
              VB_EINVAL);
    ASSERT_EQ(vb_ws_client_request(&u, "k", NULL, buf, 20, &len), VB_ENOSPC);
}

TEST(client_check_response)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\n"
                     "upgrade: WebSocket\r\n"
                     "Connection: keep-alive, Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "\r\n\x81\x02hi";
    size_t used = 0;
    int st = 0;
    ASSERT_EQ(vb_ws_client_check_response(ok, strlen(ok), key, &used, &st), 0);
    ASSERT_EQ(st, 101);
    ASSERT_EQ(used, strlen(ok) - 4);
    /* Incomplete head at every cut. */
    size_t head = used;
    for (size_t cut = 0; cut < head; cut++)
        ASSERT_EQ(vb_ws_client_check_response(ok, cut, key, &used, &st),
                  VB_EAGAIN);
    const char *wrong = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
                        "\r\n";
    ASSERT_EQ(
        vb_ws_client_check_response(wrong, strlen(wrong), key, &used, &st),
        VB_EPROTO);
    const char *unauth = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                         "\r\n";
    ASSERT_EQ(
        vb_ws_client_check_response(unauth, strlen(unauth), key, &used, &st),
        VB_EAUTH);
    ASSERT_EQ(st, 401);
    const char *nf = "HTTP/1.1 404 Not Found\r\n\r\n";
    ASSERT_EQ(vb_ws_client_check_response(nf, strlen(nf), key, &used, &st),
              VB_EPROTO);
    ASSERT_EQ(st, 404);
    const char *ext = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
    ASSERT_EQ(vb_ws_client_check_response(ext, strlen(ext), key, &used, &st),
              VB_EPROTO);
    const char *noup = "HTTP/1.1 101 OK\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                       "\r\n";
    ASSERT_EQ(vb_ws_client_check_response(noup, strlen(noup), key, &used, &st),
              VB_EPROTO);
    const char *garbage = "SSH-2.0-OpenSSH\r\n\r\n";
    ASSERT_EQ(
        vb_ws_client_check_response(garbage, strlen(garbage), key, &used, &st),
        VB_EPROTO);
    char *big = malloc(20000);
    ASSERT_NOT_NULL(big);
    memcpy(big, "HTTP/1.1 101 OK\r\n", 17);
    memset(big + 17, 'a', 20000 - 17);
    ASSERT_EQ(vb_ws_client_check_response(big, 20000, key, &used, &st),
              VB_EMSGSIZE);
    free(big);
}

/* The response head as llhttp parses it: header names in any case,
 * repeated headers, a head split at every byte, statuses other than 101. */
TEST(client_check_response_headers)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    size_t used = 0;
    int st = 0;
    const char *caps = "HTTP/1.1 101 Switching Protocols\r\n"
                       "UPGRADE: WEBSOCKET\r\n"
                       "connection: UPGRADE\r\n"
                       "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                       "\r\n";
    ASSERT_EQ(vb_ws_client_check_response(caps, strlen(caps), key, &used, &st),
              0);
    ASSERT_EQ(used, strlen(caps));
    /* Repeated Connection and Upgrade headers form one list. */
    const char *dup = "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: h2c\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: keep-alive\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                      "X-Other: 1\r\n"
                      "\r\n";
    ASSERT_EQ(vb_ws_client_check_response(dup, strlen(dup), key, &used, &st),
              0);
    ASSERT_EQ(used, strlen(dup));
    /* Two accept values are ambiguous, even when both are right. */
    const char *two = "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                      "\r\n";
    ASSERT_EQ(vb_ws_client_check_response(two, strlen(two), key, &used, &st),
              VB_EPROTO);
    /* A folded (obs-fold) Connection header reads as one value, as a user
     * agent may unfold it (RFC 9112 §5.2). */
    const char *fold = "HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: keep-alive,\r\n"
                       " Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                       "\r\n";
    ASSERT_EQ(vb_ws_client_check_response(fold, strlen(fold), key, &used, &st),
              0);
    ASSERT_EQ(used, strlen(fold));
    /* A value too long to judge is refused for the headers we check. */
    char longv[600];
    snprintf(longv, sizeof longv,
             "HTTP/1.1 101 Switching Protocols\r\n"
             "Upgrade: websocket\r\n"
             "Connection: %0300d, Upgrade\r\n"
             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
             "\r\n",
             0);
    ASSERT_EQ(
        vb_ws_client_check_response(longv, strlen(longv), key, &used, &st),
        VB_EPROTO);
    /* Split anywhere: more bytes are needed until the blank line, and the
     * status is known once its line is complete. */
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "\r\n";
    size_t line = strlen("HTTP/1.1 101 Switching Protocols\r\n");
    for (size_t cut = 0; cut < strlen(ok); cut++) {
        ASSERT_EQ(vb_ws_client_check_response(ok, cut, key, &used, &st),
                  VB_EAGAIN);
        ASSERT_EQ(st, cut >= line ? 101 : 0);
    }
    ASSERT_EQ(vb_ws_client_check_response(ok, strlen(ok), key, &used, &st), 0);
    /* Statuses other than 101, with and without a body. */
    const char *ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    ASSERT_EQ(
        vb_ws_client_check_response(ok200, strlen(ok200), key, &used, &st),
        VB_EPROTO);
    ASSERT_EQ(st, 200);
    const char *forb = "HTTP/1.1 403 Forbidden\r\n\r\n";
    ASSERT_EQ(vb_ws_client_check_response(forb, strlen(forb), key, &used, &st),
              VB_EAUTH);
    ASSERT_EQ(st, 403);
    const char *redir = "HTTP/1.1 301 Moved Permanently\r\n"
                        "Location: wss://elsewhere/\r\n\r\n";
    ASSERT_EQ(
        vb_ws_client_check_response(redir, strlen(redir), key, &used, &st),
        VB_EPROTO);
    ASSERT_EQ(st, 301);
    /* The handshake is HTTP/1.1; a bad status line fails at once. */
    const char *v10 = "HTTP/1.0 101 Switching Protocols\r\n";
    ASSERT_EQ(vb_ws_client_check_response(v10, strlen(v10), key, &used, &st),
              VB_EPROTO);
    const char *bad = "HTTP/1.1 1O1 Switching";
    ASSERT_EQ(vb_ws_client_check_response(bad, strlen(bad), key, &used, &st),
              VB_EPROTO);
    ASSERT_EQ(vb_ws_client_check_response(NULL, 0, key, &used, &st), VB_EINVAL);
}

/* The server's "101 Switching Protocols" for a client key into buf
 * (NUL-terminated); *len gets its length. Returns 0, what
 * vb_ws_accept_key() refuses, or VB_ENOSPC. */
static int server_101(const char *client_key, char *buf, size_t cap,
                      size_t *len)
{
    char acc[VB_WS_ACCEPT_LEN + 1];
    int r = vb_ws_accept_key(client_key, acc, sizeof acc);
    if (r < 0)
        return r;
    char head[160];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     acc);
    if (n < 0 || (size_t)n >= cap)
        return VB_ENOSPC;
    memcpy(buf, head, (size_t)n + 1);
    *len = (size_t)n;
    return 0;
}

TEST(server_response)
{
    char buf[256];
    size_t len;
    ASSERT_EQ(server_101("dGhlIHNhbXBsZSBub25jZQ==", buf, sizeof buf, &len), 0);
    ASSERT_STR_EQ(buf, "HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                       "\r\n\r\n");
    ASSERT_EQ(len, strlen(buf));
    ASSERT_EQ(server_101("bad", buf, sizeof buf, &len), VB_EINVAL);
    ASSERT_EQ(server_101("dGhlIHNhbXBsZSBub25jZQ==", buf, 30, &len), VB_ENOSPC);
}

TEST(utf8_validation)
{
    ASSERT_TRUE(vb_ws_utf8_valid((const uint8_t *)"", 0));
    ASSERT_TRUE(vb_ws_utf8_valid((const uint8_t *)"h\xc3\xa9llo", 6));
    ASSERT_TRUE(vb_ws_utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4));
    ASSERT_TRUE(vb_ws_utf8_valid((const uint8_t *)"\xef\xbf\xbf", 3));
    ASSERT_TRUE(!vb_ws_utf8_valid((const uint8_t *)"\xc0\xaf", 2));
    ASSERT_TRUE(!vb_ws_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));
    ASSERT_TRUE(!vb_ws_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));
    ASSERT_TRUE(!vb_ws_utf8_valid((const uint8_t *)"\xe2\x82", 2));
    ASSERT_TRUE(!vb_ws_utf8_valid((const uint8_t *)"\x80", 1));
    ASSERT_TRUE(!vb_ws_utf8_valid((const uint8_t *)"\xff", 1));
    ASSERT_TRUE(vb_ws_close_code_valid(1000));
    ASSERT_TRUE(vb_ws_close_code_valid(4999));
    ASSERT_TRUE(!vb_ws_close_code_valid(1005));
    ASSERT_TRUE(!vb_ws_close_code_valid(999));
    ASSERT_TRUE(!vb_ws_close_code_valid(2000));
}

/* ---- framing: scripted feeds ---- */

TEST(text_message_in_every_chunk_size)
{
    static const char text[] = "{\"event\":\"media\",\"x\":\"h\xc3\xa9\"}";
    uint8_t wire[256];
    size_t n = tf_frame(wire, sizeof wire, true, 0x1, true, text, strlen(text));
    for (size_t chunk = 1; chunk <= n; chunk++) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        feed_chunked(f, wire, n, chunk);
        ASSERT_EQ(f->nmsgs, 1);
        ASSERT_TRUE(f->msgs[0].text);
        ASSERT_EQ(f->msgs[0].len, strlen(text));
        ASSERT_MEM_EQ(f->msgs[0].data, text, strlen(text));
        ASSERT_EQ(f->out_len, 0);
        ASSERT_EQ(f->closes, 0);
        fx_free(f);
    }
}

TEST(binary_and_lengths_16_and_64_bit)
{
    size_t sizes[] = {0, 125, 126, 65535, 65536, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t len = sizes[i];
        uint8_t *p = malloc(len + 1), *wire = malloc(len + 16);
        for (size_t k = 0; k < len; k++)
            p[k] = (uint8_t)(k * 7);
        size_t n = tf_frame(wire, len + 16, true, 0x2, true, p, len);
        fx_t *f = fx_new(VB_WS_SERVER, 128 * 1024);
        feed_chunked(f, wire, n, 4093);
        ASSERT_EQ(f->nmsgs, 1);
        ASSERT_TRUE(!f->msgs[0].text);
        ASSERT_EQ(f->msgs[0].len, len);
        ASSERT_MEM_EQ(f->msgs[0].data, p, len);
        fx_free(f);
        free(p);
        free(wire);
    }
}

TEST(fragmented_message_with_control_frames_between)
{
    /* "héllo world" in three fragments, the é split across two of them,
     * with a ping and a pong in between. */
    const char *a = "h\xc3", *b = "\xa9llo ", *c = "world";
    uint8_t wire[512];
    size_t n = 0;
    n += tf_frame(wire + n, sizeof wire - n, false, 0x1, true, a, strlen(a));
    n += tf_frame(wire + n, sizeof wire - n, true, 0x9, true, "p1", 2);
    n += tf_frame(wire + n, sizeof wire - n, false, 0x0, true, b, strlen(b));
    n += tf_frame(wire + n, sizeof wire - n, true, 0xA, true, "x", 1);
    n += tf_frame(wire + n, sizeof wire - n, true, 0x0, true, c, strlen(c));
    for (size_t chunk = 1; chunk <= n; chunk += 3) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        feed_chunked(f, wire, n, chunk);
        ASSERT_EQ(f->nmsgs, 1);
        ASSERT_EQ(f->msgs[0].len, 12);
        ASSERT_MEM_EQ(f->msgs[0].data, "h\xc3\xa9llo world", 12);
        ASSERT_EQ(f->pongs, 1);
        tf_parsed_t *pf = pf_alloc();
        ASSERT_TRUE(out_frame(f, 0, pf));
        ASSERT_EQ(pf->op, 0xA);
        ASSERT_EQ(pf->len, 2);
        ASSERT_MEM_EQ(pf->payload, "p1", 2);
        free(pf);
        vb_ws_stats_t st;
        vb_ws_get_stats(f->ws, &st);
        ASSERT_EQ(st.msgs_in, 1);
        ASSERT_EQ(st.pings_in, 1);
        fx_free(f);
    }
}

TEST(unmasked_client_frame_closes_1002)
{
    for (size_t chunk = 1; chunk <= 3; chunk++) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        uint8_t wire[64];
        size_t n = tf_frame(wire, sizeof wire, true, 0x1, false, "hi", 2);
        feed_chunked(f, wire, n, chunk);
        expect_fail(f, 1002, VB_EPROTO, "unmasked client frame");
        ASSERT_EQ(vb_ws_feed(f->ws, wire, n), VB_ECLOSED);
        fx_free(f);
    }
}

TEST(masked_server_frame_closes_1002_for_client)
{
    fx_t *f = fx_new(VB_WS_CLIENT, 0);
    uint8_t wire[64];
    size_t n = tf_frame(wire, sizeof wire, true, 0x1, true, "hi", 2);
    vb_ws_feed(f->ws, wire, n);
    tf_parsed_t *pf = pf_alloc();
    ASSERT_TRUE(out_frame(f, 0, pf));
    ASSERT_TRUE(pf->masked); /* clients mask everything, close too */
    ASSERT_EQ(tf_close_code(pf), 1002);
    ASSERT_EQ(f->info.err, VB_EPROTO);
    free(pf);
    fx_free(f);
}

TEST(too_large_payload_closes_1009)
{
    /* One frame over the limit. */
    fx_t *f = fx_new(VB_WS_SERVER, 1024);
    uint8_t *big = calloc(1, 2048), *wire = malloc(4096);
    size_t n = tf_frame(wire, 4096, true, 0x2, true, big, 1025);
    feed_chunked(f, wire, n, 7);
    expect_fail(f, 1009, VB_EMSGSIZE, "message too big");
    fx_free(f);
    /* Exactly at the limit is fine. */
    f = fx_new(VB_WS_SERVER, 1024);
    n = tf_frame(wire, 4096, true, 0x2, true, big, 1024);
    vb_ws_feed(f->ws, wire, n);
    ASSERT_EQ(f->nmsgs, 1);
    fx_free(f);
    /* Fragments that add up to more. */
    f = fx_new(VB_WS_SERVER, 1024);
    n = tf_frame(wire, 4096, false, 0x1, true, big, 600);
    n += tf_frame(wire + n, 4096 - n, true, 0x0, true, big, 600);
    vb_ws_feed(f->ws, wire, n);
    expect_fail(f, 1009, VB_EMSGSIZE, "message too big");
    fx_free(f);
    /* A 64-bit length far beyond the limit never allocates. */
    f = fx_new(VB_WS_SERVER, 0);
    uint8_t hdr[] = {0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
    vb_ws_feed(f->ws, hdr, sizeof hdr);
    expect_fail(f, 1009, VB_EMSGSIZE, NULL);
    fx_free(f);
    free(big);
    free(wire);
}

TEST(bad_close_codes_close_1002)
{
    uint16_t bad[] = {0, 999, 1004, 1005, 1006, 1016, 2000, 2999, 5000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        uint8_t wire[64];
        size_t n;
        if (bad[i] == 0) {
            /* A one-byte close payload cannot hold a code. */
            n = tf_frame(wire, sizeof wire, true, 0x8, true, "\x03", 1);
        } else {
            n = tf_close(wire, sizeof wire, true, bad[i], "r");
        }
        vb_ws_feed(f->ws, wire, n);
        tf_parsed_t *pf = pf_alloc();
        ASSERT_TRUE(out_frame(f, 0, pf));
        ASSERT_EQ(tf_close_code(pf), 1002);
        ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSED);
        ASSERT_EQ(f->info.err, VB_EPROTO);
        free(pf);
        fx_free(f);
    }
}

TEST(peer_close_is_echoed_and_reported)
{
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    uint8_t wire[64];
    size_t n = tf_close(wire, sizeof wire, true, 4001, "bye now");
    feed_chunked(f, wire, n, 1);
    tf_parsed_t *pf = pf_alloc();
    ASSERT_TRUE(out_frame(f, 0, pf));
    ASSERT_EQ(tf_close_code(pf), 4001);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSED);
    ASSERT_EQ(f->closes, 1);
    ASSERT_TRUE(f->info.by_peer);
    ASSERT_EQ(f->info.err, 0);
    ASSERT_EQ(f->info.code_received, 4001);
    ASSERT_STR_EQ(f->info.reason, "bye now");
    ASSERT_EQ(vb_ws_send_text(f->ws, "x", 1), VB_ECLOSED);
    free(pf);
    fx_free(f);
    /* No status code at all: 1005 received, echoed without a code. */
    f = fx_new(VB_WS_SERVER, 0);
    n = tf_close(wire, sizeof wire, true, 0, NULL);
    vb_ws_feed(f->ws, wire, n);
    ASSERT_EQ(f->info.code_received, VB_WS_CLOSE_NO_STATUS);
    ASSERT_EQ(f->info.err, 0);
    fx_free(f);
}

TEST(local_close_handshake)
{
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    ASSERT_EQ(vb_ws_close(f->ws, 1005, NULL), VB_EINVAL);
    ASSERT_EQ(vb_ws_close(f->ws, 1008, "stream token expired"), 0);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSING);
    ASSERT_EQ(vb_ws_close(f->ws, 1000, NULL), VB_ECLOSED);
    ASSERT_EQ(vb_ws_send_text(f->ws, "x", 1), VB_ECLOSED);
    tf_parsed_t *pf = pf_alloc();
    ASSERT_TRUE(out_frame(f, 0, pf));
    ASSERT_EQ(tf_close_code(pf), 1008);
    ASSERT_EQ(pf->len, 2 + strlen("stream token expired"));
    ASSERT_MEM_EQ(pf->payload + 2, "stream token expired", pf->len - 2);
    /* Messages after our close are not delivered. */
    uint8_t wire[64];
    size_t n = tf_frame(wire, sizeof wire, true, 0x1, true, "late", 4);
    vb_ws_feed(f->ws, wire, n);
    ASSERT_EQ(f->nmsgs, 0);
    ASSERT_EQ(f->closes, 0);
    n = tf_close(wire, sizeof wire, true, 1008, NULL);
    vb_ws_feed(f->ws, wire, n);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSED);
    ASSERT_EQ(f->closes, 1);
    ASSERT_TRUE(!f->info.by_peer);
    ASSERT_EQ(f->info.err, 0);
    ASSERT_EQ(f->info.code_sent, 1008);
    ASSERT_EQ(f->info.code_received, 1008);
    /* Only our close frame went out: no echo of theirs. */
    ASSERT_TRUE(!out_frame(f, 1, pf));
    free(pf);
    fx_free(f);
}

TEST(invalid_utf8_closes_1007)
{
    const char *cases[] = {"\xc0\xaf", "ok\xff", "\xed\xa0\x80", "\xe2\x82"};
    for (size_t i = 0; i < 4; i++) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        uint8_t wire[64];
        size_t n = tf_frame(wire, sizeof wire, true, 0x1, true, cases[i],
                            strlen(cases[i]));
        feed_chunked(f, wire, n, 1);
        tf_parsed_t *pf = pf_alloc();
        ASSERT_TRUE(out_frame(f, 0, pf));
        ASSERT_EQ(tf_close_code(pf), 1007);
        ASSERT_EQ(f->nmsgs, 0);
        ASSERT_EQ(f->info.err, VB_EPROTO);
        ASSERT_STR_EQ(f->info.reason, "invalid UTF-8");
        free(pf);
        fx_free(f);
    }
    /* Invalid UTF-8 in a close reason too. */
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    uint8_t wire[64];
    size_t n = tf_close(wire, sizeof wire, true, 1000, "\xff");
    vb_ws_feed(f->ws, wire, n);
    tf_parsed_t *pf = pf_alloc();
    ASSERT_TRUE(out_frame(f, 0, pf));
    ASSERT_EQ(tf_close_code(pf), 1007);
    free(pf);
    fx_free(f);
}

TEST(framing_violations_close_1002)
{
    struct {
        bool fin;
        uint8_t rsv, op;
        size_t len;
        int len7;
        const char *reason;
    } cases[] = {
        {true, 1, 0x1, 1, -1, "reserved bits set"},
        {true, 0, 0x3, 1, -1, "unknown opcode"},
        {true, 0, 0xB, 1, -1, "unknown opcode"},
        {false, 0, 0x9, 1, -1, "fragmented control frame"},
        {true, 0, 0x9, 126, -1, "control frame too long"},
        {true, 0, 0x0, 1, -1, "continuation frame without a message"},
        {true, 0, 0x1, 5, 126, "non-minimal payload length"},
        {true, 0, 0x1, 300, 127, "non-minimal payload length"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        uint8_t payload[400] = {0}, wire[512];
        memset(payload, 'a', sizeof payload);
        size_t n = tf_frame_ex(wire, sizeof wire, cases[i].fin, cases[i].rsv,
                               cases[i].op, true, payload, cases[i].len,
                               cases[i].len7);
        feed_chunked(f, wire, n, 1);
        expect_fail(f, 1002, VB_EPROTO, cases[i].reason);
        fx_free(f);
    }
    /* A new data message while a fragmented one is open. */
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    uint8_t wire[64];
    size_t n = tf_frame(wire, sizeof wire, false, 0x1, true, "a", 1);
    n += tf_frame(wire + n, sizeof wire - n, true, 0x1, true, "b", 1);
    vb_ws_feed(f->ws, wire, n);
    expect_fail(f, 1002, VB_EPROTO, "new message inside a fragmented message");
    fx_free(f);
}

TEST(server_output_framing)
{
    size_t sizes[] = {0, 5, 125, 126, 65535, 65536};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fx_t *f = fx_new(VB_WS_SERVER, 0);
        char *p = malloc(sizes[i] + 1);
        memset(p, 'z', sizes[i]);
        ASSERT_EQ(vb_ws_send_text(f->ws, p, sizes[i]), 0);
        ASSERT_EQ(vb_ws_send_binary(f->ws, p, sizes[i]), 0);
        tf_parsed_t *pf = pf_alloc();
        ASSERT_TRUE(out_frame(f, 0, pf));
        ASSERT_TRUE(pf->fin && !pf->masked);
        ASSERT_EQ(pf->op, 0x1);
        ASSERT_EQ(pf->len, sizes[i]);
        ASSERT_MEM_EQ(pf->payload, p, sizes[i]);
        ASSERT_TRUE(out_frame(f, 1, pf));
        ASSERT_EQ(pf->op, 0x2);
        size_t hdr = sizes[i] < 126 ? 2 : sizes[i] < 65536 ? 4 : 10;
        ASSERT_EQ(f->out_len, 2 * (hdr + sizes[i]));
        free(pf);
        free(p);
        fx_free(f);
    }
}

TEST(client_output_is_masked_and_roundtrips)
{
    fx_t *c = fx_new(VB_WS_CLIENT, 0);
    fx_t *s = fx_new(VB_WS_SERVER, 0);
    ASSERT_EQ(vb_ws_send_text(c->ws, "hello", 5), 0);
    ASSERT_EQ(vb_ws_send_ping(c->ws, "pp", 2), 0);
    tf_parsed_t *pf = pf_alloc();
    ASSERT_TRUE(out_frame(c, 0, pf));
    ASSERT_TRUE(pf->masked);
    ASSERT_MEM_EQ(pf->payload, "hello", 5);
    free(pf);
    /* Server gets the client's bytes, client gets the server's pong. */
    vb_ws_feed(s->ws, c->out, c->out_len);
    ASSERT_EQ(s->nmsgs, 1);
    ASSERT_MEM_EQ(s->msgs[0].data, "hello", 5);
    vb_ws_feed(c->ws, s->out, s->out_len);
    ASSERT_EQ(c->pongs, 1);
    ASSERT_EQ(vb_ws_send_ping(c->ws, NULL, 126), VB_EINVAL);
    /* Full close handshake between the two. */
    size_t cmark = c->out_len, smark = s->out_len;
    ASSERT_EQ(vb_ws_close(c->ws, 1000, "done"), 0);
    vb_ws_feed(s->ws, c->out + cmark, c->out_len - cmark);
    ASSERT_EQ(vb_ws_state(s->ws), VB_WS_CLOSED);
    ASSERT_TRUE(s->info.by_peer);
    ASSERT_STR_EQ(s->info.reason, "done");
    vb_ws_feed(c->ws, s->out + smark, s->out_len - smark);
    ASSERT_EQ(vb_ws_state(c->ws), VB_WS_CLOSED);
    ASSERT_EQ(c->info.err, 0);
    ASSERT_EQ(c->info.code_received, 1000);
    fx_free(c);
    fx_free(s);
}

TEST(destroy_inside_message_callback)
{
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    f->destroy_in_message = true;
    uint8_t wire[64];
    size_t n = tf_frame(wire, sizeof wire, true, 0x1, true, "a", 1);
    n += tf_frame(wire + n, sizeof wire - n, true, 0x1, true, "b", 1);
    ASSERT_EQ(vb_ws_feed(f->ws, wire, n), VB_ECLOSED);
    ASSERT_EQ(f->nmsgs, 1);
    ASSERT_NULL(f->ws);
    free(f);
}

TEST(eof_without_close_is_abnormal)
{
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    vb_ws_feed_eof(f->ws);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSED);
    ASSERT_EQ(f->info.err, VB_ECLOSED);
    ASSERT_EQ(f->info.code_received, VB_WS_CLOSE_ABNORMAL);
    ASSERT_EQ(f->info.code_sent, VB_WS_CLOSE_ABNORMAL);
    fx_free(f);
}

TEST(output_failure_fails_endpoint)
{
    fx_t *f = fx_new(VB_WS_SERVER, 0);
    f->out_len = sizeof f->out - 4; /* the sink is full */
    ASSERT_EQ(vb_ws_send_text(f->ws, "0123456789", 10), VB_ENOSPC);
    ASSERT_EQ(vb_ws_state(f->ws), VB_WS_CLOSED);
    ASSERT_EQ(f->info.err, VB_ENOSPC);
    fx_free(f);
}

/* ---- transport glue over loopback TCP ---- */

typedef struct net {
    uv_loop_t loop;
    int lfd;
    uv_poll_t lpoll;
    char request[4096];
    const char *reply; /* NULL: a proper 101 */
    vb_ws_t *srv, *cli;
    fx_t *sf, *cf;
    bool opened, poll_closed;
    int srv_msgs;
} net_t;

static net_t *g_net;

static void srv_on_msg(vb_ws_t *ws, bool text, const uint8_t *d, size_t n,
                       void *ud)
{
    net_t *nt = ud;
    nt->srv_msgs++;
    /* Echo, then close after the second message. */
    if (text)
        ASSERT_EQ(vb_ws_send_text(ws, (const char *)d, n), 0);
    if (nt->srv_msgs == 2)
        ASSERT_EQ(vb_ws_close(ws, 1000, "enough"), 0);
}

static void srv_on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    net_t *nt = ud;
    nt->sf->closes++;
    nt->sf->info = *info;
    vb_ws_destroy(ws);
    nt->srv = NULL;
}

static void cli_on_open(vb_ws_t *ws, void *ud)
{
    net_t *nt = ud;
    nt->opened = true;
    ASSERT_EQ(vb_ws_send_text(ws, "one", 3), 0);
    ASSERT_EQ(vb_ws_send_text(ws, "two", 3), 0);
}

static void cli_on_msg(vb_ws_t *ws, bool text, const uint8_t *d, size_t n,
                       void *ud)
{
    (void)ws;
    net_t *nt = ud;
    on_msg(NULL, text, d, n, nt->cf);
}

static void cli_on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    net_t *nt = ud;
    nt->cf->closes++;
    nt->cf->info = *info;
    vb_ws_destroy(ws);
    nt->cli = NULL;
}

static void hs_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    net_t *nt = ud;
    size_t got = strlen(nt->request);
    ASSERT_LT(got + n, sizeof nt->request);
    memcpy(nt->request + got, d, n);
    nt->request[got + n] = '\0';
    if (strstr(nt->request, "\r\n\r\n") == NULL)
        return;
    if (nt->reply != NULL) {
        ASSERT_EQ(vb_transport_write(t, nt->reply, strlen(nt->reply)), 0);
        vb_transport_shutdown(t);
        vb_transport_close(t);
        return;
    }
    const char *k = strstr(nt->request, "Sec-WebSocket-Key: ");
    ASSERT_NOT_NULL(k);
    char key[32] = {0};
    memcpy(key, k + 19, VB_WS_KEY_LEN);
    char resp[256];
    size_t len;
    ASSERT_EQ(server_101(key, resp, sizeof resp, &len), 0);
    ASSERT_EQ(vb_transport_write(t, resp, len), 0);
    vb_ws_config_t cfg = {.role = VB_WS_SERVER};
    vb_ws_callbacks_t cb = {.on_message = srv_on_msg, .on_close = srv_on_close};
    ASSERT_EQ(vb_ws_attach(&nt->loop, t, &cfg, &cb, nt, NULL, 0, &nt->srv), 0);
}

static void accept_cb(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    net_t *nt = p->data;
    int fd = accept(nt->lfd, NULL, NULL);
    ASSERT_TRUE(fd >= 0);
    uv_poll_stop(p);
    vb_transport_t *t;
    ASSERT_EQ(vb_tcp_adopt(&nt->loop, fd, &t), 0);
    char peer[64];
    ASSERT_EQ(vb_transport_peer_name(t, peer, sizeof peer), 0);
    ASSERT_TRUE(strncmp(peer, "127.0.0.1:", 10) == 0);
    vb_transport_set_handler(t, hs_read, NULL, nt);
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_TRUE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(fd, 8), 0);
    socklen_t sl = sizeof a;
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static net_t *net_setup(const char *reply, uint16_t *port)
{
    net_t *nt = calloc(1, sizeof *nt);
    ASSERT_NOT_NULL(nt);
    nt->sf = fx_alloc();
    nt->cf = fx_alloc();
    nt->reply = reply;
    ASSERT_EQ(uv_loop_init(&nt->loop), 0);
    nt->lfd = listen_any(port);
    ASSERT_EQ(uv_poll_init(&nt->loop, &nt->lpoll, nt->lfd), 0);
    nt->lpoll.data = nt;
    uv_poll_start(&nt->lpoll, UV_READABLE, accept_cb);
    g_net = nt;
    return nt;
}

static void net_teardown(net_t *nt)
{
    if (!nt->poll_closed)
        uv_close((uv_handle_t *)&nt->lpoll, NULL);
    uv_run(&nt->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&nt->loop), 0);
    close(nt->lfd);
    free(nt->sf);
    free(nt->cf);
    free(nt);
}

static void connect_client(net_t *nt, uint16_t port)
{
    vb_transport_t *t;
    ASSERT_EQ(vb_tcp_connect(&nt->loop, "127.0.0.1", port, &t), 0);
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/v1/live?x=1", (unsigned)port);
    const char *hdrs[] = {"x-goog-api-key: test-key", NULL};
    vb_ws_config_t cfg = {.role = VB_WS_CLIENT, .handshake_timeout_ms = 5000};
    vb_ws_callbacks_t cb = {.on_message = cli_on_msg,
                            .on_close = cli_on_close,
                            .on_open = cli_on_open};
    ASSERT_EQ(vb_ws_connect(&nt->loop, t, &cfg, &cb, nt, url, hdrs, &nt->cli),
              0);
    ASSERT_EQ(vb_ws_state(nt->cli), VB_WS_CONNECTING);
    ASSERT_EQ(vb_ws_send_text(nt->cli, "early", 5), VB_EAGAIN);
}

TEST_T(loopback_client_server_echo_and_close, 20)
{
    uint16_t port;
    net_t *nt = net_setup(NULL, &port);
    connect_client(nt, port);
    uv_run(&nt->loop, UV_RUN_DEFAULT);
    ASSERT_TRUE(nt->opened);
    ASSERT_NULL(nt->cli);
    ASSERT_NULL(nt->srv);
    ASSERT_STR_CONTAINS(nt->request, "GET /v1/live?x=1 HTTP/1.1\r\n");
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%u\r\n", (unsigned)port);
    ASSERT_STR_CONTAINS(nt->request, host);
    ASSERT_STR_CONTAINS(nt->request, "\r\nx-goog-api-key: test-key\r\n");
    ASSERT_EQ(nt->srv_msgs, 2);
    ASSERT_EQ(nt->cf->nmsgs, 2);
    ASSERT_MEM_EQ(nt->cf->msgs[0].data, "one", 3);
    ASSERT_MEM_EQ(nt->cf->msgs[1].data, "two", 3);
    /* The server closed; the client saw its code and reason. */
    ASSERT_EQ(nt->cf->closes, 1);
    ASSERT_EQ(nt->cf->info.err, 0);
    ASSERT_TRUE(nt->cf->info.by_peer);
    ASSERT_EQ(nt->cf->info.code_received, 1000);
    ASSERT_STR_EQ(nt->cf->info.reason, "enough");
    ASSERT_EQ(nt->sf->closes, 1);
    ASSERT_EQ(nt->sf->info.err, 0);
    ASSERT_TRUE(!nt->sf->info.by_peer);
    net_teardown(nt);
}

TEST_T(loopback_client_handshake_refused, 20)
{
    uint16_t port;
    net_t *nt = net_setup("HTTP/1.1 401 Unauthorized\r\n"
                          "Content-Length: 0\r\n\r\n",
                          &port);
    connect_client(nt, port);
    uv_run(&nt->loop, UV_RUN_DEFAULT);
    ASSERT_TRUE(!nt->opened);
    ASSERT_EQ(nt->cf->closes, 1);
    ASSERT_EQ(nt->cf->info.err, VB_EAUTH);
    ASSERT_EQ(nt->cf->info.http_status, 401);
    net_teardown(nt);
}

TEST_T(loopback_connect_refused, 20)
{
    uint16_t port;
    net_t *nt = net_setup(NULL, &port);
    /* Close the listener so the port refuses connections. */
    uv_close((uv_handle_t *)&nt->lpoll, NULL);
    nt->poll_closed = true;
    uv_run(&nt->loop, UV_RUN_NOWAIT);
    close(nt->lfd);
    nt->lfd = socket(AF_INET, SOCK_STREAM, 0);
    connect_client(nt, port);
    uv_run(&nt->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(nt->cf->closes, 1);
    ASSERT_EQ(nt->cf->info.err, VB_ECONNREFUSED);
    net_teardown(nt);
}

/* ---- output back-pressure over loopback TCP ----
 *
 * The peer is a raw non-blocking socket with a small receive buffer; the
 * endpoint's socket has a small send buffer, so the kernel absorbs little
 * and the endpoint's own queue is what a peer that never reads would grow.
 * The flood interleaves pings (answered by pongs) and text messages (the
 * handler echoes each one), all numbered, so every answer can be checked
 * in order once the peer reads. */

#define BP_CAP   (32u * 1024u)
#define BP_ITEMS 5000
#define BP_PAY   125 /* ping payload and text length: the largest pong */
#define BP_FRAME (BP_PAY + 4) /* an answer frame on the wire, at most */

typedef struct bp {
    uv_loop_t loop;
    int peer, sfd;
    vb_ws_t *ws;
    uint8_t *flood;
    size_t flood_len, woff;
    bool write_blocked;
    uint8_t *rx;
    size_t rx_len;
    tf_parsed_t *fr;
    int answered; /* items answered, checked in order */
    size_t max_pending;
    int closes;
    vb_ws_close_info_t info;
} bp_t;

static uint64_t bp_now_ms(void)
{
    return vb_clock_now_ns() / 1000000ull;
}

static void bp_item_payload(int i, uint8_t *p)
{
    memset(p, 'a' + i % 26, BP_PAY);
    char num[16];
    int n = snprintf(num, sizeof num, "%08d", i);
    memcpy(p, num, (size_t)n);
}

static bool bp_is_text(int i)
{
    return i % 10 == 9;
}

static void bp_sample(bp_t *b)
{
    if (b->ws == NULL)
        return;
    size_t p = vb_ws_pending(b->ws);
    if (p > b->max_pending)
        b->max_pending = p;
}

static void bp_on_msg(vb_ws_t *ws, bool text, const uint8_t *d, size_t n,
                      void *ud)
{
    bp_t *b = ud;
    ASSERT_TRUE(text);
    ASSERT_EQ(vb_ws_send_text(ws, (const char *)d, n), 0);
    bp_sample(b);
}

static void bp_on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    bp_t *b = ud;
    b->closes++;
    b->info = *info;
    vb_ws_destroy(ws);
    b->ws = NULL;
}

static bp_t *bp_setup(void)
{
    bp_t *b = calloc(1, sizeof *b);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ(uv_loop_init(&b->loop), 0);
    uint16_t port;
    int lfd = listen_any(&port);
    b->peer = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_TRUE(b->peer >= 0);
    int small = 8192;
    ASSERT_EQ(setsockopt(b->peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small),
              0);
    ASSERT_EQ(setsockopt(b->peer, SOL_SOCKET, SO_SNDBUF, &small, sizeof small),
              0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(b->peer, (struct sockaddr *)&a, sizeof a), 0);
    b->sfd = accept(lfd, NULL, NULL);
    ASSERT_TRUE(b->sfd >= 0);
    close(lfd);
    ASSERT_EQ(setsockopt(b->sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small),
              0);
    ASSERT_EQ(setsockopt(b->sfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small),
              0);
    ASSERT_EQ(fcntl(b->peer, F_SETFL, O_NONBLOCK), 0);
    vb_transport_t *t;
    ASSERT_EQ(vb_tcp_adopt(&b->loop, b->sfd, &t), 0);
    vb_ws_config_t cfg = {.role = VB_WS_SERVER, .max_pending_out = BP_CAP};
    vb_ws_callbacks_t cb = {.on_message = bp_on_msg, .on_close = bp_on_close};
    ASSERT_EQ(vb_ws_attach(&b->loop, t, &cfg, &cb, b, NULL, 0, &b->ws), 0);

    b->flood = malloc((size_t)BP_ITEMS * (BP_PAY + 14));
    ASSERT_NOT_NULL(b->flood);
    for (int i = 0; i < BP_ITEMS; i++) {
        uint8_t p[BP_PAY];
        bp_item_payload(i, p);
        size_t n = tf_frame(b->flood + b->flood_len, BP_PAY + 14, true,
                            bp_is_text(i) ? 0x1 : 0x9, true, p, BP_PAY);
        ASSERT_GT(n, 0);
        b->flood_len += n;
    }
    b->rx = malloc((size_t)BP_ITEMS * BP_FRAME + 4096);
    b->fr = malloc(sizeof *b->fr);
    ASSERT_NOT_NULL(b->rx);
    ASSERT_NOT_NULL(b->fr);
    return b;
}

/* Writes as much of the flood as the kernel takes. */
static void bp_pump_write(bp_t *b)
{
    b->write_blocked = false;
    while (b->woff < b->flood_len) {
        ssize_t n = write(b->peer, b->flood + b->woff, b->flood_len - b->woff);
        if (n < 0) {
            ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
            b->write_blocked = true;
            return;
        }
        b->woff += (size_t)n;
    }
}

/* Reads what the endpoint sent and checks each answer in order. */
static void bp_pump_read(bp_t *b)
{
    for (;;) {
        ssize_t n = read(b->peer, b->rx + b->rx_len, 65536);
        if (n <= 0) {
            ASSERT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            break;
        }
        b->rx_len += (size_t)n;
    }
    size_t off = 0, used;
    while ((used = tf_parse(b->rx + off, b->rx_len - off, b->fr)) > 0) {
        off += used;
        ASSERT_LT(b->answered, BP_ITEMS);
        int i = b->answered++;
        ASSERT_EQ(b->fr->op, bp_is_text(i) ? 0x1 : 0xA);
        ASSERT_TRUE(!b->fr->masked);
        uint8_t p[BP_PAY];
        bp_item_payload(i, p);
        ASSERT_EQ(b->fr->len, BP_PAY);
        ASSERT_MEM_EQ(b->fr->payload, p, BP_PAY);
    }
    memmove(b->rx, b->rx + off, b->rx_len - off);
    b->rx_len -= off;
}

static void bp_step(bp_t *b)
{
    uv_run(&b->loop, UV_RUN_NOWAIT);
    bp_sample(b);
}

static int bp_kernel_unread(const bp_t *b)
{
    int n = 0;
    ASSERT_EQ(ioctl(b->sfd, FIONREAD, &n), 0);
    return n;
}

/* Floods without reading until back-pressure has stopped the endpoint and
 * the kernel buffers are full. */
static void bp_flood_until_stalled(bp_t *b)
{
    uint64_t deadline = bp_now_ms() + (uint64_t)(10000 * vb_test_slowdown());
    for (;;) {
        bp_pump_write(b);
        bp_step(b);
        if (vb_ws_out_stalled(b->ws) && b->write_blocked &&
            bp_kernel_unread(b) > 0)
            break;
        if (bp_now_ms() >= deadline)
            fprintf(stderr, "stalled=%d blocked=%d unread=%d woff=%zu\n",
                    vb_ws_out_stalled(b->ws), b->write_blocked,
                    bp_kernel_unread(b), b->woff);
        ASSERT_LT(bp_now_ms(), deadline);
    }
    ASSERT_LT(b->woff, b->flood_len); /* the peer could not send it all */
}

/* True if the endpoint reads nothing over `iters` loop iterations while
 * the kernel holds bytes for it: libuv reads a readable socket on the next
 * non-blocking iteration when reading is on. */
static bool bp_not_reading(bp_t *b, int iters)
{
    vb_ws_stats_t st0, st;
    vb_ws_get_stats(b->ws, &st0);
    for (int k = 0; k < iters; k++) {
        bp_step(b);
        if (bp_kernel_unread(b) == 0)
            return false;
    }
    vb_ws_get_stats(b->ws, &st);
    return st.bytes_in == st0.bytes_in;
}

/* Reads and keeps sending until every item is answered. */
static void bp_drain_all(bp_t *b)
{
    /* Tiny windows make loopback slow; widen them for the catch-up. */
    int big = 1 << 20;
    setsockopt(b->peer, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(b->peer, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(b->sfd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(b->sfd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    uint64_t deadline = bp_now_ms() + (uint64_t)(20000 * vb_test_slowdown());
    while (b->answered < BP_ITEMS) {
        bp_pump_write(b);
        bp_step(b);
        bp_pump_read(b);
        if (bp_now_ms() >= deadline)
            fprintf(stderr,
                    "answered=%d woff=%zu stalled=%d pending=%zu unread=%d\n",
                    b->answered, b->woff, vb_ws_out_stalled(b->ws),
                    vb_ws_pending(b->ws), bp_kernel_unread(b));
        ASSERT_LT(bp_now_ms(), deadline);
    }
    ASSERT_EQ(b->woff, b->flood_len);
    ASSERT_EQ(b->rx_len, 0);
}

static void bp_close_and_free(bp_t *b)
{
    uint8_t fr[64];
    size_t n = tf_close(fr, sizeof fr, true, 1000, "done");
    ASSERT_EQ(write(b->peer, fr, n), (ssize_t)n);
    uint64_t deadline = bp_now_ms() + (uint64_t)(10000 * vb_test_slowdown());
    while (b->closes == 0) {
        bp_step(b);
        ASSERT_LT(bp_now_ms(), deadline);
    }
    ASSERT_EQ(b->info.err, 0);
    ASSERT_EQ(b->info.code_received, 1000);
    close(b->peer);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&b->loop), 0);
    free(b->flood);
    free(b->rx);
    free(b->fr);
    free(b);
}

TEST_T(ping_and_echo_flood_without_reading_is_bounded_and_lossless, 60)
{
    bp_t *b = bp_setup();
    bp_flood_until_stalled(b);
    /* Bounded: the cap plus the answer to the one frame that crossed it. */
    ASSERT_LE(b->max_pending, BP_CAP + BP_FRAME);
    ASSERT_TRUE(bp_not_reading(b, 50));
    vb_ws_stats_t st;
    vb_ws_get_stats(b->ws, &st);
    ASSERT_GE(st.out_stalls, 1);
    ASSERT_LT(st.msgs_in + st.pings_in, BP_ITEMS);
    fprintf(stderr,
            "  back-pressure: cap %u, max pending %zu, items parsed at "
            "stall %llu of %d\n",
            BP_CAP, b->max_pending,
            (unsigned long long)(st.msgs_in + st.pings_in), BP_ITEMS);
    /* The peer reads: reading resumes and every item is answered, in
     * order, with the bound holding throughout. */
    bp_drain_all(b);
    ASSERT_LE(b->max_pending, BP_CAP + BP_FRAME);
    vb_ws_get_stats(b->ws, &st);
    ASSERT_EQ(st.pings_in, BP_ITEMS - BP_ITEMS / 10);
    ASSERT_EQ(st.msgs_in, BP_ITEMS / 10);
    ASSERT_TRUE(!vb_ws_out_stalled(b->ws));
    bp_close_and_free(b);
}

TEST_T(owner_pause_and_back_pressure_compose, 60)
{
    bp_t *b = bp_setup();
    bp_flood_until_stalled(b);
    /* The owner resuming does not restart reading while output is over
     * the cap. */
    ASSERT_EQ(vb_ws_read_pause(b->ws, false), 0);
    ASSERT_TRUE(vb_ws_out_stalled(b->ws));
    ASSERT_TRUE(bp_not_reading(b, 50));
    /* The owner pauses; the peer reads until the output drains. The held
     * input is parsed (and answered) but the socket stays unread. */
    ASSERT_EQ(vb_ws_read_pause(b->ws, true), 0);
    uint64_t deadline = bp_now_ms() + (uint64_t)(10000 * vb_test_slowdown());
    while (vb_ws_out_stalled(b->ws) || vb_ws_pending(b->ws) > 0) {
        bp_step(b);
        bp_pump_read(b);
        ASSERT_LT(bp_now_ms(), deadline);
    }
    ASSERT_TRUE(bp_not_reading(b, 50));
    int before = b->answered;
    /* The owner resumes: now both allow it, and everything is answered. */
    ASSERT_EQ(vb_ws_read_pause(b->ws, false), 0);
    bp_drain_all(b);
    ASSERT_GT(b->answered, before);
    ASSERT_LE(b->max_pending, BP_CAP + BP_FRAME);
    bp_close_and_free(b);
}
