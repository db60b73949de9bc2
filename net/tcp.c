/* SPDX-License-Identifier: MIT */
/*
 * Plain TCP transport over libuv (see net/tcp.h, net/transport.h).
 *
 * DESIGN. Writes first try uv_try_write(); whatever the kernel does not take
 * is appended to a pending buffer. At most one uv_write() is in flight, over
 * a second buffer; when it completes the buffers swap. Both buffers keep
 * their capacity, so a connection that has warmed up writes without
 * allocating. States: RESOLVING -> CONNECTING -> OPEN, or FAILED. A closed
 * transport (vb_transport_close) stays allocated until libuv has closed the
 * socket, the timer and any name lookup; it fires no callbacks after close.
 * After a shutdown, close waits for the flush and FIN (the shutdown request
 * completing) for at most VB_TCP_LINGER_MS before it drops the socket.
 */
#include "net/tcp.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

#define VB_TCP_LINGER_MS 5000
#define TCP_READ_BUF     (64u * 1024u)

typedef struct tcp_buf {
    uint8_t *data;
    size_t len, cap;
} tcp_buf_t;

typedef enum {
    TCP_RESOLVING,
    TCP_CONNECTING,
    TCP_OPEN,
    TCP_FAILED,
} tcp_state_t;

typedef struct tcp {
    vb_transport_t base;
    uv_loop_t *loop;
    uv_tcp_t h;
    uv_timer_t linger;
    uv_getaddrinfo_t gai;
    uv_connect_t conn;
    uv_write_t wr;
    uv_shutdown_t sd;
    tcp_state_t st;
    bool want_read, reading, in_flight;
    bool shutdown_req, shutdown_started, shutdown_done;
    bool closing, handles_closing, gai_active;
    int refs; /* handles and requests libuv still owns */
    tcp_buf_t pend, fly;
    uint16_t port;
    char host[256];
    uint8_t *rbuf;
} tcp_t;

static const vb_transport_ops_t tcp_ops;

/* Maps a libuv error code to a VB_E* code. */
static int tcp_err_from_uv(int e)
{
    switch (e) {
    case 0:
        return 0;
    case UV_ECONNREFUSED:
        return VB_ECONNREFUSED;
    case UV_ETIMEDOUT:
        return VB_ETIMEDOUT;
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_EOF:
        return VB_ECLOSED;
    case UV_ENOMEM:
    case UV_ENOBUFS:
        return VB_ENOMEM;
    case UV_EAI_NONAME:
    case UV_EAI_NODATA:
    case UV_EAI_FAMILY:
        return VB_ENOENT;
    case UV_ECANCELED:
        return VB_ECANCELED;
    case UV_EINVAL:
    case UV_EBADF:
    case UV_ENOTSOCK:
        return VB_EINVAL;
    default:
        return VB_EIO;
    }
}

static void tcp_unref(tcp_t *c)
{
    if (--c->refs == 0) {
        free(c->pend.data);
        free(c->fly.data);
        free(c->rbuf);
        free(c);
    }
}

static void tcp_handle_closed(uv_handle_t *h)
{
    tcp_unref(h->data);
}

static void tcp_close_handles(tcp_t *c)
{
    if (c->handles_closing)
        return;
    c->handles_closing = true;
    if (c->gai_active)
        uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->h, tcp_handle_closed);
    uv_close((uv_handle_t *)&c->linger, tcp_handle_closed);
}

/* Fails the connection once and tells the handler (unless closed). */
static void tcp_fail(tcp_t *c, int err)
{
    if (c->st == TCP_FAILED)
        return;
    c->st = TCP_FAILED;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->h);
        c->reading = false;
    }
    if (c->closing) {
        tcp_close_handles(c);
        return;
    }
    vb_transport_emit_event(&c->base, VB_TRANSPORT_ERROR, err);
}

static int buf_append(tcp_buf_t *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (p == NULL)
            return VB_ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static void tcp_write_cb(uv_write_t *req, int status);

static void tcp_shutdown_cb(uv_shutdown_t *req, int status)
{
    tcp_t *c = req->data;
    c->shutdown_done = true;
    if (c->closing)
        tcp_close_handles(c);
    else if (status < 0 && status != UV_ECANCELED)
        tcp_fail(c, tcp_err_from_uv(status));
    tcp_unref(c);
}

static void tcp_maybe_shutdown(tcp_t *c)
{
    if (!c->shutdown_req || c->shutdown_started || c->st != TCP_OPEN ||
        c->in_flight || c->pend.len > 0)
        return;
    c->shutdown_started = true;
    c->sd.data = c;
    int r = uv_shutdown(&c->sd, (uv_stream_t *)&c->h, tcp_shutdown_cb);
    if (r < 0) {
        c->shutdown_done = true;
        if (c->closing)
            tcp_close_handles(c);
        return;
    }
    c->refs++;
}

static void tcp_flush(tcp_t *c)
{
    if (c->in_flight || c->pend.len == 0 || c->st != TCP_OPEN)
        return;
    tcp_buf_t t = c->fly;
    c->fly = c->pend;
    c->pend = t;
    c->pend.len = 0;
    uv_buf_t b = uv_buf_init((char *)c->fly.data, (unsigned)c->fly.len);
    c->wr.data = c;
    int r = uv_write(&c->wr, (uv_stream_t *)&c->h, &b, 1, tcp_write_cb);
    if (r < 0) {
        c->fly.len = 0;
        tcp_fail(c, tcp_err_from_uv(r));
        return;
    }
    c->in_flight = true;
    c->refs++;
}

static void tcp_write_cb(uv_write_t *req, int status)
{
    tcp_t *c = req->data;
    c->in_flight = false;
    c->fly.len = 0;
    if (status < 0) {
        if (c->closing)
            tcp_close_handles(c);
        else if (status != UV_ECANCELED)
            tcp_fail(c, tcp_err_from_uv(status));
    } else if (c->pend.len > 0) {
        tcp_flush(c);
    } else {
        tcp_maybe_shutdown(c);
        if (!c->closing && c->st == TCP_OPEN)
            vb_transport_emit_event(&c->base, VB_TRANSPORT_DRAINED, 0);
    }
    tcp_unref(c);
}

static int tcp_write(vb_transport_t *t, const void *data, size_t len)
{
    tcp_t *c = (tcp_t *)t;
    if (c->closing || c->shutdown_req || c->st == TCP_FAILED)
        return VB_ECLOSED;
    if (len == 0)
        return 0;
    if (c->pend.len + c->fly.len + len > VB_TCP_MAX_QUEUED)
        return VB_ENOSPC;
    const uint8_t *p = data;
    if (c->st == TCP_OPEN && !c->in_flight && c->pend.len == 0) {
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->h, &b, 1);
        if (n == UV_EAGAIN || n == UV_ENOSYS)
            n = 0;
        if (n < 0) {
            int err = tcp_err_from_uv(n);
            tcp_fail(c, err);
            return VB_ECLOSED;
        }
        p += n;
        len -= (size_t)n;
        if (len == 0)
            return 0;
    }
    int r = buf_append(&c->pend, p, len);
    if (r < 0)
        return r;
    tcp_flush(c);
    return 0;
}

static void tcp_alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    tcp_t *c = h->data;
    *b = uv_buf_init((char *)c->rbuf, TCP_READ_BUF);
}

static void tcp_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    tcp_t *c = s->data;
    if (c->closing)
        return;
    if (n > 0) {
        vb_transport_emit_read(&c->base, c->rbuf, (size_t)n);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(s);
    c->reading = false;
    if (n == UV_EOF) {
        c->want_read = false;
        vb_transport_emit_event(&c->base, VB_TRANSPORT_EOF, 0);
        return;
    }
    tcp_fail(c, tcp_err_from_uv((int)n));
}

static int tcp_read_start(vb_transport_t *t)
{
    tcp_t *c = (tcp_t *)t;
    if (c->closing || c->st == TCP_FAILED)
        return VB_ECLOSED;
    c->want_read = true;
    if (c->st != TCP_OPEN || c->reading)
        return 0;
    int r = uv_read_start((uv_stream_t *)&c->h, tcp_alloc_cb, tcp_read_cb);
    if (r < 0)
        return tcp_err_from_uv(r);
    c->reading = true;
    return 0;
}

static int tcp_read_stop(vb_transport_t *t)
{
    tcp_t *c = (tcp_t *)t;
    c->want_read = false;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->h);
        c->reading = false;
    }
    return 0;
}

static void tcp_shutdown(vb_transport_t *t)
{
    tcp_t *c = (tcp_t *)t;
    if (c->shutdown_req || c->closing)
        return;
    c->shutdown_req = true;
    tcp_maybe_shutdown(c);
}

static void tcp_linger_cb(uv_timer_t *h)
{
    tcp_close_handles(h->data);
}

static void tcp_close(vb_transport_t *t)
{
    tcp_t *c = (tcp_t *)t;
    if (c->closing)
        return;
    c->closing = true;
    c->base._on_read = NULL;
    c->base._on_event = NULL;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->h);
        c->reading = false;
    }
    if (c->shutdown_req && !c->shutdown_done && c->st == TCP_OPEN) {
        /* Let the queued bytes and the FIN go out, but not forever. */
        uv_timer_start(&c->linger, tcp_linger_cb, VB_TCP_LINGER_MS, 0);
        return;
    }
    tcp_close_handles(c);
}

static size_t tcp_pending(const vb_transport_t *t)
{
    const tcp_t *c = (const tcp_t *)t;
    return c->pend.len + c->fly.len;
}

static int tcp_peer_name(const vb_transport_t *t, char *buf, size_t cap)
{
    const tcp_t *c = (const tcp_t *)t;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (cap == 0)
        return VB_EINVAL;
    int r = uv_tcp_getpeername(&c->h, (struct sockaddr *)&ss, &len);
    if (r < 0)
        return tcp_err_from_uv(r);
    char ip[64];
    int port;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(buf, cap, "[%s]:%d", ip, port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(buf, cap, "%s:%d", ip, port);
    }
    return 0;
}

static const vb_transport_ops_t tcp_ops = {
    .write = tcp_write,
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .pending = tcp_pending,
    .peer_name = tcp_peer_name,
};

/* Every connection, in and out, gets TCP keepalive: a peer that vanished
 * without a FIN or RST (a NAT that forgot us, a host that lost power) is
 * found within VB_TCP_KEEPALIVE_IDLE_S + INTVL_S * CNT seconds instead of
 * holding its call and sockets until the kernel's two-hour default. */
static void tcp_keepalive(tcp_t *c)
{
    uv_os_fd_t fd;
    if (uv_tcp_keepalive(&c->h, 1, VB_TCP_KEEPALIVE_IDLE_S) < 0 ||
        uv_fileno((uv_handle_t *)&c->h, &fd) < 0)
        return; /* not a TCP socket (socketpair in tests): nothing to probe */
    int intvl = VB_TCP_KEEPALIVE_INTVL_S, cnt = VB_TCP_KEEPALIVE_CNT;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static tcp_t *tcp_new(uv_loop_t *loop)
{
    tcp_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->rbuf = malloc(TCP_READ_BUF);
    if (c->rbuf == NULL) {
        free(c);
        return NULL;
    }
    c->base.ops = &tcp_ops;
    c->loop = loop;
    if (uv_tcp_init(loop, &c->h) < 0) {
        free(c->rbuf);
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->linger);
    c->h.data = c;
    c->linger.data = c;
    c->refs = 2;
    return c;
}

int vb_tcp_adopt(uv_loop_t *loop, int fd, vb_transport_t **out)
{
    if (out == NULL)
        return VB_EINVAL;
    *out = NULL;
    if (loop == NULL || fd < 0) {
        if (fd >= 0)
            close(fd);
        return VB_EINVAL;
    }
    tcp_t *c = tcp_new(loop);
    if (c == NULL) {
        close(fd);
        return VB_ENOMEM;
    }
    int r = uv_tcp_open(&c->h, fd);
    if (r < 0) {
        vb_log_warn(NULL, "uv_tcp_open failed", "fd=%d uv=%s", fd,
                    uv_err_name(r));
        close(fd);
        c->closing = true;
        tcp_close_handles(c);
        return tcp_err_from_uv(r);
    }
    uv_tcp_nodelay(&c->h, 1);
    tcp_keepalive(c);
    c->st = TCP_OPEN;
    *out = &c->base;
    return 0;
}

static void tcp_connect_cb(uv_connect_t *req, int status)
{
    tcp_t *c = req->data;
    if (c->closing) {
        tcp_close_handles(c);
    } else if (status < 0) {
        tcp_fail(c, tcp_err_from_uv(status));
    } else {
        c->st = TCP_OPEN;
        uv_tcp_nodelay(&c->h, 1);
        tcp_keepalive(c);
        if (c->want_read)
            tcp_read_start(&c->base);
        tcp_flush(c);
        tcp_maybe_shutdown(c);
        if (!c->closing && c->st == TCP_OPEN)
            vb_transport_emit_event(&c->base, VB_TRANSPORT_CONNECTED, 0);
    }
    tcp_unref(c);
}

static void tcp_gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    tcp_t *c = req->data;
    c->gai_active = false;
    if (c->closing) {
        tcp_close_handles(c);
    } else if (status < 0 || res == NULL) {
        tcp_fail(c, status < 0 ? tcp_err_from_uv(status) : VB_ENOENT);
    } else {
        c->st = TCP_CONNECTING;
        c->conn.data = c;
        int r = uv_tcp_connect(&c->conn, &c->h, res->ai_addr, tcp_connect_cb);
        if (r < 0)
            tcp_fail(c, tcp_err_from_uv(r));
        else
            c->refs++;
    }
    uv_freeaddrinfo(res);
    tcp_unref(c);
}

int vb_tcp_connect(uv_loop_t *loop, const char *host, uint16_t port,
                   vb_transport_t **out)
{
    if (out == NULL)
        return VB_EINVAL;
    *out = NULL;
    if (loop == NULL || host == NULL || port == 0 ||
        strlen(host) >= sizeof((tcp_t *)0)->host)
        return VB_EINVAL;
    tcp_t *c = tcp_new(loop);
    if (c == NULL)
        return VB_ENOMEM;
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    c->st = TCP_RESOLVING;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    c->gai.data = c;
    int r = uv_getaddrinfo(loop, &c->gai, tcp_gai_cb, c->host, portstr, &hints);
    if (r < 0) {
        c->closing = true;
        tcp_close_handles(c);
        return tcp_err_from_uv(r);
    }
    c->gai_active = true;
    c->refs++;
    *out = &c->base;
    return 0;
}
