/* SPDX-License-Identifier: MIT */
/*
 * The HTTP/1.1 client (net/http_client.h): requests, a keep-alive pool per
 * scheme://host:port, and a response parser over llhttp that is also run
 * alone by the fuzz target.
 */
#include "net/http_client.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/log.h"
#include "llhttp.h"
#include "net/tcp.h"
#include "net/ws.h"

/* ---- the response parser ---- */

typedef struct resp {
    llhttp_t p;
    llhttp_settings_t s;
    int status;
    char *body;
    size_t len, cap, max;
    size_t head_bytes;
    char field[16];
    size_t field_len;
    bool field_is_ctype;
    bool in_ctype; /* appending to the Content-Type value */
    bool discard;  /* the body is dropped (vb_http_client_config_t) */
    char ctype[VB_HTTP_CLIENT_MAX_CONTENT_TYPE];
    size_t ctype_len;
    bool head_only; /* a response to HEAD has no body */
    bool complete;
    int err;
} resp_t;

static resp_t *resp_of(llhttp_t *p)
{
    return p->data;
}

static int head_count(resp_t *r, size_t n)
{
    r->head_bytes += n;
    if (r->head_bytes > VB_HTTP_CLIENT_MAX_HEAD) {
        r->err = VB_EMSGSIZE;
        return -1;
    }
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    return head_count(resp_of(p), n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    resp_t *r = resp_of(p);
    for (size_t i = 0; i < n && r->field_len < sizeof(r->field); i++)
        r->field[r->field_len++] = at[i];
    if (n > sizeof(r->field))
        r->field_len = sizeof(r->field); /* too long to be Content-Type */
    return head_count(r, n);
}

static int on_header_field_complete(llhttp_t *p)
{
    resp_t *r = resp_of(p);
    r->field_is_ctype =
        r->field_len == 12 && strncasecmp(r->field, "content-type", 12) == 0;
    r->in_ctype = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    resp_t *r = resp_of(p);
    if (r->field_is_ctype) {
        r->ctype_len = 0; /* a repeated Content-Type: the last one counts */
        r->field_is_ctype = false;
        r->in_ctype = true; /* its value may come in pieces */
    }
    if (r->in_ctype)
        for (size_t i = 0; i < n && r->ctype_len + 1 < sizeof(r->ctype); i++)
            r->ctype[r->ctype_len++] = at[i];
    r->ctype[r->ctype_len] = '\0';
    return head_count(r, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    resp_t *r = resp_of(p);
    r->field_len = 0;
    r->field_is_ctype = r->in_ctype = false;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    resp_t *r = resp_of(p);
    int status = llhttp_get_status_code(p);
    /* llhttp takes any digits as a status; only three make one. */
    if (status < 100 || status > 999)
        return -1;
    r->status = status;
    return r->head_only && status >= 200 ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    resp_t *r = resp_of(p);
    if (r->discard)
        return 0;
    if (n > r->max - r->len) {
        r->err = VB_EMSGSIZE;
        return -1;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL) {
            r->err = VB_ENOMEM;
            return -1;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, at, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    resp_t *r = resp_of(p);
    if (r->status < 200) {
        /* An interim 1xx answer; the real one follows. */
        r->status = 0;
        r->ctype_len = 0;
        r->ctype[0] = '\0';
        return 0;
    }
    r->complete = true;
    return HPE_PAUSED;
}

static void resp_init(resp_t *r, size_t max, bool head_only)
{
    memset(r, 0, sizeof(*r));
    llhttp_settings_init(&r->s);
    r->s.on_status = on_status;
    r->s.on_header_field = on_header_field;
    r->s.on_header_field_complete = on_header_field_complete;
    r->s.on_header_value = on_header_value;
    r->s.on_header_value_complete = on_header_value_complete;
    r->s.on_headers_complete = on_headers_complete;
    r->s.on_body = on_body;
    r->s.on_message_complete = on_message_complete;
    llhttp_init(&r->p, HTTP_RESPONSE, &r->s);
    r->p.data = r;
    r->max = max;
    r->head_only = head_only;
}

static void resp_free(resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* Feeds bytes. Returns 0 (more needed), 1 (complete; *extra = bytes after
 * the response) or a VB_E* code. */
static int resp_feed(resp_t *r, const char *d, size_t n, size_t *extra)
{
    enum llhttp_errno e = llhttp_execute(&r->p, d, n);
    if (r->complete) {
        const char *pos = llhttp_get_error_pos(&r->p);
        *extra =
            pos != NULL && pos >= d && pos <= d + n ? n - (size_t)(pos - d) : 0;
        return 1;
    }
    if (e == HPE_OK)
        return 0;
    return r->err != 0 ? r->err : VB_EPROTO;
}

/* The peer closed: 1 when that ends the response, else a VB_E* code. */
static int resp_eof(resp_t *r)
{
    if (r->complete)
        return 1;
    enum llhttp_errno e = llhttp_finish(&r->p);
    if (r->complete)
        return 1;
    if (e != HPE_OK && r->err != 0)
        return r->err;
    return VB_ECLOSED;
}

/* ---- the client ---- */

typedef struct conn conn_t;

struct vb_http_client {
    uv_loop_t *loop;
    vb_tls_config_t *tls;
    uint32_t max_idle;
    uint32_t idle_ms;
    size_t max_body;
    bool discard_body;
    conn_t *idle; /* newest first */
    vb_http_call_t *active;
    uint64_t opened;
    size_t n_idle;
};

#define KEY_CAP 300

struct conn {
    vb_http_client_t *c; /* NULL once closing */
    conn_t *prev, *next; /* in c->idle while idle */
    char key[KEY_CAP];
    vb_transport_t *t;
    uv_timer_t idle_timer;
    vb_http_call_t *call; /* NULL: idle */
    bool reused;          /* served a response before this request */
};

struct vb_http_call {
    vb_http_client_t *c;
    vb_http_call_t *prev, *next;
    conn_t *conn;
    uv_timer_t timer;
    vb_http_cb cb;
    void *ud;
    char *req;
    size_t req_len;
    char host[256];
    uint16_t port;
    bool secure;
    char key[KEY_CAP];
    char log_id[64];
    bool idempotent;
    bool retried;
    bool head;
    size_t got; /* response bytes read on the current connection */
    resp_t r;
    bool done;
};

static void conn_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud);
static void conn_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                       void *ud);
static int call_send(vb_http_call_t *h);

static void conn_freed(uv_handle_t *h)
{
    free(h->data);
}

static void idle_unlink(conn_t *k)
{
    vb_http_client_t *c = k->c;
    if (k->prev)
        k->prev->next = k->next;
    else if (c->idle == k)
        c->idle = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    c->n_idle--;
}

/* Closes a connection for good (idle or not). */
static void conn_close(conn_t *k)
{
    if (k->c != NULL && k->call == NULL)
        idle_unlink(k);
    k->c = NULL;
    k->call = NULL;
    vb_transport_close(k->t);
    k->t = NULL;
    uv_timer_stop(&k->idle_timer);
    uv_close((uv_handle_t *)&k->idle_timer, conn_freed);
}

static void on_idle_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static size_t idle_for_key(vb_http_client_t *c, const char *key)
{
    size_t n = 0;
    for (conn_t *k = c->idle; k != NULL; k = k->next)
        if (strcmp(k->key, key) == 0)
            n++;
    return n;
}

/* After a complete response: into the pool, or closed. */
static void conn_release(conn_t *k, bool keep)
{
    vb_http_client_t *c = k->c;
    k->call = NULL;
    if (!keep || idle_for_key(c, k->key) >= c->max_idle) {
        k->c = NULL; /* not in the idle list */
        conn_close(k);
        return;
    }
    k->reused = true;
    k->prev = NULL;
    k->next = c->idle;
    if (c->idle)
        c->idle->prev = k;
    c->idle = k;
    c->n_idle++;
    uv_timer_start(&k->idle_timer, on_idle_timeout, c->idle_ms, 0);
}

static void call_unlink(vb_http_call_t *h)
{
    vb_http_client_t *c = h->c;
    if (h->prev)
        h->prev->next = h->next;
    else if (c->active == h)
        c->active = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

static void call_freed(uv_handle_t *t)
{
    vb_http_call_t *h = t->data;
    resp_free(&h->r);
    free(h->req);
    free(h);
}

/* Detaches the request from its connection and closes that connection. */
static void call_drop_conn(vb_http_call_t *h)
{
    conn_t *k = h->conn;
    h->conn = NULL;
    if (k != NULL) {
        k->c = NULL; /* busy, so not in the idle list */
        conn_close(k);
    }
}

static void call_end(vb_http_call_t *h)
{
    h->done = true;
    call_unlink(h);
    uv_timer_stop(&h->timer);
}

static void call_fail(vb_http_call_t *h, int err)
{
    if (h->done)
        return;
    call_end(h);
    call_drop_conn(h);
    vb_log_debug(h->log_id[0] ? h->log_id : NULL, "HTTP request failed",
                 "host=%s port=%u err=%s", h->host, h->port, vb_err_name(err));
    h->cb(err, NULL, h->ud);
    uv_close((uv_handle_t *)&h->timer, call_freed);
}

static void call_succeed(vb_http_call_t *h, bool keep)
{
    call_end(h);
    conn_t *k = h->conn;
    h->conn = NULL;
    if (k != NULL)
        conn_release(k, keep);
    vb_http_response_t resp = {
        .status = h->r.status,
        .body = h->r.body != NULL ? h->r.body : "",
        .body_len = h->r.len,
        .content_type = h->r.ctype,
    };
    h->cb(0, &resp, h->ud);
    uv_close((uv_handle_t *)&h->timer, call_freed);
}

static void on_call_timeout(uv_timer_t *t)
{
    call_fail(t->data, VB_ETIMEDOUT);
}

/* A reused connection died before any byte of the answer: once more on a
 * fresh connection, for idempotent methods only. */
static bool call_retry(vb_http_call_t *h)
{
    if (!h->conn->reused || h->got != 0 || !h->idempotent || h->retried)
        return false;
    h->retried = true;
    call_drop_conn(h);
    resp_free(&h->r);
    resp_init(&h->r, h->c->max_body, h->head);
    h->r.discard = h->c->discard_body;
    int rc = call_send(h);
    if (rc != 0)
        call_fail(h, rc);
    return true;
}

static void conn_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    (void)t;
    conn_t *k = ud;
    vb_http_call_t *h = k->call;
    if (h == NULL) {
        /* Unasked bytes on an idle connection: it cannot be reused. */
        conn_close(k);
        return;
    }
    h->got += n;
    size_t extra = 0;
    int rc = resp_feed(&h->r, (const char *)d, n, &extra);
    if (rc == 0)
        return;
    if (rc < 0) {
        call_fail(h, rc);
        return;
    }
    call_succeed(h, extra == 0 && llhttp_should_keep_alive(&h->r.p));
}

static void conn_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                       void *ud)
{
    (void)t;
    conn_t *k = ud;
    vb_http_call_t *h = k->call;
    if (ev == VB_TRANSPORT_CONNECTED || ev == VB_TRANSPORT_DRAINED)
        return;
    if (h == NULL) {
        conn_close(k); /* an idle connection ended */
        return;
    }
    if (call_retry(h))
        return;
    if (ev == VB_TRANSPORT_EOF) {
        int rc = resp_eof(&h->r);
        if (rc == 1)
            call_succeed(h, false);
        else
            call_fail(h, rc);
    } else {
        call_fail(h, err != 0 ? err : VB_EIO);
    }
}

static conn_t *pool_take(vb_http_client_t *c, const char *key)
{
    for (conn_t *k = c->idle; k != NULL; k = k->next)
        if (strcmp(k->key, key) == 0) {
            idle_unlink(k);
            uv_timer_stop(&k->idle_timer);
            return k;
        }
    return NULL;
}

static int conn_open(vb_http_call_t *h, conn_t **out)
{
    vb_http_client_t *c = h->c;
    conn_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return VB_ENOMEM;
    int rc;
    if (h->secure)
        rc = vb_tls_connect(c->loop, c->tls, h->host, h->port, NULL,
                            h->log_id[0] ? h->log_id : NULL, &k->t);
    else
        rc = vb_tcp_connect(c->loop, h->host, h->port, &k->t);
    if (rc != 0) {
        free(k);
        return rc;
    }
    snprintf(k->key, sizeof(k->key), "%s", h->key);
    uv_timer_init(c->loop, &k->idle_timer);
    k->idle_timer.data = k;
    c->opened++;
    *out = k;
    return 0;
}

/* Puts the request on a pooled or new connection and writes it. */
static int call_send(vb_http_call_t *h)
{
    vb_http_client_t *c = h->c;
    h->got = 0;
    conn_t *k = pool_take(c, h->key);
    if (k != NULL) {
        k->c = c;
        k->call = h;
        h->conn = k;
        if (vb_transport_write(k->t, h->req, h->req_len) == 0)
            return 0;
        call_drop_conn(h); /* a dead pooled connection: a fresh one */
    }
    int rc = conn_open(h, &k);
    if (rc != 0)
        return rc;
    k->c = c;
    k->call = h;
    h->conn = k;
    rc = vb_transport_write(k->t, h->req, h->req_len);
    if (rc == 0)
        rc = vb_transport_set_handler(k->t, conn_read, conn_event, k);
    if (rc != 0) {
        call_drop_conn(h);
        return rc;
    }
    return 0;
}

static bool token_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (n >= max || ch <= 32 || ch >= 127 ||
            strchr("()<>@,;:\\\"/[]?={}", ch) != NULL)
            return false;
    }
    return n > 0;
}

static bool value_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

static int build(vb_http_call_t *h, const vb_ws_url_t *u,
                 const vb_http_request_t *req)
{
    char head[VB_HTTP_CLIENT_MAX_REQUEST_HEAD];
    size_t w = 0;
    char host[300];
    bool v6 = strchr(u->host, ':') != NULL;
    if (u->port_explicit)
        snprintf(host, sizeof(host), v6 ? "[%s]:%u" : "%s:%u", u->host,
                 u->port);
    else
        snprintf(host, sizeof(host), v6 ? "[%s]" : "%s", u->host);
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: voxbridge\r\n",
                     req->method, u->target, host);
    if (n < 0 || (size_t)n >= sizeof(head))
        return VB_EMSGSIZE;
    w = (size_t)n;
    bool want_len = req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
                    strcmp(req->method, "PUT") == 0 ||
                    strcmp(req->method, "PATCH") == 0;
    if (want_len) {
        n = snprintf(head + w, sizeof(head) - w, "Content-Length: %zu\r\n",
                     req->body_len);
        if (n < 0 || (size_t)n >= sizeof(head) - w)
            return VB_EMSGSIZE;
        w += (size_t)n;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const vb_http_header_t *hd = &req->headers[i];
        if (hd->name == NULL || hd->value == NULL || !token_ok(hd->name, 256) ||
            !value_ok(hd->value))
            return VB_EINVAL;
        n = snprintf(head + w, sizeof(head) - w, "%s: %s\r\n", hd->name,
                     hd->value);
        if (n < 0 || (size_t)n >= sizeof(head) - w)
            return VB_EMSGSIZE;
        w += (size_t)n;
    }
    if (w + 2 >= sizeof(head))
        return VB_EMSGSIZE;
    memcpy(head + w, "\r\n", 2);
    w += 2;
    h->req = malloc(w + req->body_len);
    if (h->req == NULL)
        return VB_ENOMEM;
    memcpy(h->req, head, w);
    if (req->body_len > 0)
        memcpy(h->req + w, req->body, req->body_len);
    h->req_len = w + req->body_len;
    return 0;
}

int vb_http_client_create(uv_loop_t *loop, const vb_http_client_config_t *cfg,
                          vb_http_client_t **out)
{
    if (loop == NULL || out == NULL)
        return VB_EINVAL;
    vb_http_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return VB_ENOMEM;
    c->loop = loop;
    c->tls = cfg ? cfg->tls : NULL;
    c->max_idle = cfg && cfg->max_idle_per_host
                      ? cfg->max_idle_per_host
                      : VB_HTTP_CLIENT_DEFAULT_MAX_IDLE;
    c->idle_ms = cfg && cfg->idle_timeout_ms ? cfg->idle_timeout_ms
                                             : VB_HTTP_CLIENT_DEFAULT_IDLE_MS;
    c->max_body = cfg && cfg->max_body_bytes ? cfg->max_body_bytes
                                             : VB_HTTP_CLIENT_DEFAULT_MAX_BODY;
    c->discard_body = cfg != NULL && cfg->discard_body;
    *out = c;
    return 0;
}

void vb_http_client_destroy(vb_http_client_t *c)
{
    if (c == NULL)
        return;
    while (c->active != NULL)
        vb_http_cancel(c->active);
    while (c->idle != NULL)
        conn_close(c->idle);
    free(c);
}

int vb_http_client_request(vb_http_client_t *c, const vb_http_request_t *req,
                           vb_http_cb cb, void *ud, vb_http_call_t **handle)
{
    if (c == NULL || req == NULL || cb == NULL || req->url == NULL ||
        req->method == NULL || (req->body == NULL && req->body_len > 0) ||
        (req->headers == NULL && req->n_headers > 0))
        return VB_EINVAL;
    size_t ml = strlen(req->method);
    if (ml == 0 || ml > 16)
        return VB_EINVAL;
    for (size_t i = 0; i < ml; i++)
        if (!isupper((unsigned char)req->method[i]))
            return VB_EINVAL;
    vb_ws_url_t u;
    int rc = vb_ws_url_parse_http(req->url, &u);
    if (rc != 0)
        return rc == VB_EMSGSIZE ? VB_EMSGSIZE : VB_EINVAL;
    if (u.secure && c->tls == NULL)
        return VB_ECONFIG;
    vb_http_call_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return VB_ENOMEM;
    if ((rc = build(h, &u, req)) != 0) {
        free(h->req);
        free(h);
        return rc;
    }
    h->c = c;
    h->cb = cb;
    h->ud = ud;
    h->secure = u.secure;
    h->port = u.port;
    snprintf(h->host, sizeof(h->host), "%s", u.host);
    snprintf(h->key, sizeof(h->key), "%s|%s|%u", u.secure ? "s" : "p", u.host,
             u.port);
    snprintf(h->log_id, sizeof(h->log_id), "%s",
             req->log_id != NULL ? req->log_id : "");
    const char *m = req->method;
    h->head = strcmp(m, "HEAD") == 0;
    h->idempotent = h->head || strcmp(m, "GET") == 0 || strcmp(m, "PUT") == 0 ||
                    strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0;
    resp_init(&h->r, c->max_body, h->head);
    h->r.discard = c->discard_body;
    if ((rc = call_send(h)) != 0) {
        resp_free(&h->r);
        free(h->req);
        free(h);
        return rc;
    }
    uv_timer_init(c->loop, &h->timer);
    h->timer.data = h;
    uv_timer_start(&h->timer, on_call_timeout,
                   req->timeout_ms ? req->timeout_ms
                                   : VB_HTTP_CLIENT_DEFAULT_TIMEOUT_MS,
                   0);
    h->next = c->active;
    if (c->active)
        c->active->prev = h;
    c->active = h;
    if (handle != NULL)
        *handle = h;
    return 0;
}

void vb_http_cancel(vb_http_call_t *h)
{
    if (h == NULL || h->done)
        return;
    call_end(h);
    call_drop_conn(h);
    uv_close((uv_handle_t *)&h->timer, call_freed);
}

uint64_t vb_http_client_connections_opened(const vb_http_client_t *c)
{
    return c->opened;
}

size_t vb_http_client_idle_count(const vb_http_client_t *c)
{
    return c->n_idle;
}

int vb_http_client_parse_response(const char *data, size_t len, size_t chunk,
                                  size_t max_body, size_t *body_len)
{
    resp_t *r = malloc(sizeof(*r));
    if (r == NULL)
        return VB_ENOMEM;
    resp_init(r, max_body, false);
    if (chunk == 0)
        chunk = len > 0 ? len : 1;
    int rc = 0;
    size_t extra = 0;
    for (size_t off = 0; off < len && rc == 0; off += chunk)
        rc = resp_feed(r, data + off, len - off < chunk ? len - off : chunk,
                       &extra);
    if (rc == 0)
        rc = resp_eof(r);
    int out = rc == 1 ? r->status : rc;
    if (body_len != NULL)
        *body_len = r->len;
    resp_free(r);
    free(r);
    return out;
}
