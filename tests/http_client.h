/* SPDX-License-Identifier: MIT */
/*
 * A small blocking HTTP/1.1 client for tests over loopback: connect, send,
 * read one response (status, headers, Content-Length body), read until the
 * peer closes, all with deadlines so a broken server fails a test instead
 * of hanging it. Header-only (static inline) so each test binary takes
 * what it uses.
 */
#ifndef VB_TESTS_HTTP_CLIENT_H
#define VB_TESTS_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/test.h"

static inline double tc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Connects to 127.0.0.1:port; fails the test on error. */
static inline int tc_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static inline void tc_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        ASSERT_GT(n, 0);
        p += n;
        len -= (size_t)n;
    }
}

static inline void tc_send_str(int fd, const char *s)
{
    tc_send(fd, s, strlen(s));
}

/* Sends one byte at a time. */
static inline void tc_send_bytewise(int fd, const char *s)
{
    for (size_t i = 0; s[i]; i++)
        tc_send(fd, s + i, 1);
}

/* Reads up to `cap` bytes, waiting at most `ms`. Returns bytes read, 0 on
 * EOF, -1 on timeout, -2 on error (e.g. reset). */
static inline ssize_t tc_recv_some(int fd, char *buf, size_t cap, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, ms);
    if (r == 0)
        return -1;
    if (r < 0)
        return -2;
    ssize_t n = recv(fd, buf, cap, 0);
    return n < 0 ? -2 : n;
}

/* Reads until the peer closes (or `ms` passes). Returns total bytes read
 * into buf (NUL-terminated) and sets *closed. */
static inline size_t tc_recv_until_close(int fd, char *buf, size_t cap, int ms,
                                         bool *closed)
{
    size_t len = 0;
    double end = tc_now_ms() + ms;
    *closed = false;
    while (len + 1 < cap) {
        int left = (int)(end - tc_now_ms());
        if (left <= 0)
            break;
        ssize_t n = tc_recv_some(fd, buf + len, cap - 1 - len, left);
        if (n == 0 || n == -2) {
            *closed = true;
            break;
        }
        if (n < 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

typedef struct tc_resp {
    int status;
    char head[8192];
    char *body; /* malloc'd, NUL-terminated */
    size_t body_len;
} tc_resp_t;

/* Per-connection read buffer so pipelined responses can be split. */
typedef struct tc_conn {
    int fd;
    char buf[262144];
    size_t len;
} tc_conn_t;

static inline tc_conn_t *tc_open(int port)
{
    tc_conn_t *c = calloc(1, sizeof(*c));
    ASSERT_NOT_NULL(c);
    c->fd = tc_connect(port);
    return c;
}

static inline void tc_close(tc_conn_t *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c);
}

/* Value of header `name` in a response head, copied into out; false if
 * absent. */
static inline bool tc_header(const char *head, const char *name, char *out,
                             size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p != NULL && p[2] != '\0') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= outsz)
                n = outsz - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = strstr(p, "\r\n");
    }
    return false;
}

static inline void tc_free_resp(tc_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* Reads one response (head + Content-Length body; no body for 101, 1xx,
 * 204 or when `no_body`). Returns 0, or -1 if the connection closed or
 * timed out first. */
static inline int tc_read_resp_ex(tc_conn_t *c, tc_resp_t *r, int ms,
                                  bool no_body)
{
    memset(r, 0, sizeof(*r));
    double end = tc_now_ms() + ms;
    for (;;) {
        char *eoh = NULL;
        if (c->len > 0) {
            c->buf[c->len] = '\0';
            eoh = strstr(c->buf, "\r\n\r\n");
        }
        if (eoh != NULL) {
            size_t hl = (size_t)(eoh - c->buf) + 4;
            size_t need = hl;
            int status = atoi(c->buf + 9);
            char cl[32];
            size_t blen = 0;
            size_t keep = hl < sizeof(r->head) ? hl : sizeof(r->head) - 1;
            memcpy(r->head, c->buf, keep);
            r->head[keep] = '\0';
            if (!no_body && status >= 200 && status != 204 &&
                tc_header(r->head, "Content-Length", cl, sizeof(cl)))
                blen = (size_t)atol(cl);
            need += blen;
            if (c->len >= need) {
                r->status = status;
                r->body = malloc(blen + 1);
                memcpy(r->body, c->buf + hl, blen);
                r->body[blen] = '\0';
                r->body_len = blen;
                memmove(c->buf, c->buf + need, c->len - need);
                c->len -= need;
                return 0;
            }
        }
        int left = (int)(end - tc_now_ms());
        if (left <= 0 || c->len + 1 >= sizeof(c->buf))
            return -1;
        ssize_t n = tc_recv_some(c->fd, c->buf + c->len,
                                 sizeof(c->buf) - 1 - c->len, left);
        if (n <= 0)
            return -1;
        c->len += (size_t)n;
    }
}

static inline int tc_read_resp(tc_conn_t *c, tc_resp_t *r, int ms)
{
    return tc_read_resp_ex(c, r, ms, false);
}

/* True when the peer has closed: EOF or reset within `ms` (after any
 * buffered bytes). */
static inline bool tc_wait_closed(tc_conn_t *c, int ms)
{
    char tmp[4096];
    double end = tc_now_ms() + ms;
    for (;;) {
        int left = (int)(end - tc_now_ms());
        if (left <= 0)
            return false;
        ssize_t n = tc_recv_some(c->fd, tmp, sizeof(tmp), left);
        if (n == 0 || n == -2)
            return true;
        if (n < 0)
            return false;
    }
}

/* One request on a fresh connection; returns the status (or -1) and fills
 * r (caller frees with tc_free_resp). */
static inline int tc_request(int port, const char *raw, tc_resp_t *r, int ms)
{
    tc_conn_t *c = tc_open(port);
    tc_send_str(c->fd, raw);
    int rc = tc_read_resp(c, r, ms);
    tc_close(c);
    return rc == 0 ? r->status : -1;
}

#endif
