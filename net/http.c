/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 session and libuv server (design in http.h).
 *
 * The session answers each request from llhttp's on_message_complete, so
 * pipelined responses are queued in order without any buffering of parsed
 * requests. It pauses the parser when a response ends the connection
 * (close or upgrade); the pause position is where the bytes for the next
 * owner of the socket begin.
 *
 * Request heads are copied into one per-session buffer (URL, then each
 * header name and value, NUL-terminated), so a head split across any number
 * of reads reassembles; offsets, not pointers, are kept until the request
 * is complete because the buffer may move while it grows.
 */
#include "net/http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/hash.h"

void vb_http_limits_default(vb_http_limits_t *l)
{
    l->max_head_bytes = 16384;
    l->max_headers = 100;
    l->max_body_bytes = 65536;
    l->header_timeout_ms = 10000;
    l->idle_timeout_ms = 60000;
    l->request_timeout_ms = VB_HTTP_REQUEST_TIMEOUT_MS;
    l->min_body_rate = VB_HTTP_MIN_BODY_RATE;
    l->body_grace_ms = VB_HTTP_BODY_GRACE_MS;
    l->max_conns = VB_HTTP_MAX_CONNS;
    l->max_conns_per_peer = 0;
    l->max_output_bytes = VB_HTTP_MAX_OUTPUT_BYTES;
    l->linger_ms = 2000;
    l->accept_pause_ms = VB_HTTP_ACCEPT_PAUSE_MS;
}

/* ---------------------------------------------------------------------- */
/* helpers                                                                */

const char *vb_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 201:
        return "Created";
    case 401:
        return "Unauthorized";
    case 429:
        return "Too Many Requests";
    case 502:
        return "Bad Gateway";
    default:
        return "Unknown";
    }
}

int vb_http_resp_header(vb_http_resp_t *r, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
        return VB_EINVAL;
    size_t room = sizeof(r->headers) - r->headers_len;
    int n =
        snprintf(r->headers + r->headers_len, room, "%s: %s\r\n", name, value);
    if (n < 0 || (size_t)n >= room) {
        r->headers[r->headers_len] = '\0';
        return VB_ENOSPC;
    }
    r->headers_len += (size_t)n;
    return 0;
}

const char *vb_http_req_header(const vb_http_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

bool vb_http_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p != NULL && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p += n;
    }
    return false;
}

/* ---------------------------------------------------------------------- */
/* session                                                                */

enum phase { PH_HEAD, PH_BODY, PH_IDLE };

typedef struct hdr_off {
    size_t name_off, name_len, value_off, value_len;
} hdr_off_t;

#define NO_OFF ((size_t)-1)

struct vb_http_session {
    llhttp_t parser;
    vb_http_limits_t lim;
    vb_http_handler_fn handler;
    vb_http_error_fn on_error;
    void *ud;
    int listener;
    char peer[64];
    void *conn;

    /* A response the handler will give later (vb_http_resp_t.defer), and
     * how to write it then. */
    bool deferred, def_head_only, def_close, def_http10;
    void *defer_arg;

    /* Current request head. */
    char *head;
    size_t head_len, head_cap, head_bytes;
    size_t url_len;
    bool url_done;
    hdr_off_t *hdrs;
    size_t nhdrs, hdrs_cap;
    bool in_field; /* a header name is being received */
    vb_http_header_t *hview;
    size_t hview_cap;
    char *body;
    size_t body_len, body_cap;
    uint64_t t_start;

    /* Timers: deadlines are computed from these (core/clock.h ns). */
    enum phase phase;
    uint32_t timer_gen;
    uint64_t phase_start; /* accept, request's first byte, head end, idle */

    /* Outcome of the current feed. */
    int err_status;
    const char *err_reason;
    vb_http_action_t action;
    void *detach_arg;
    char *leftover;
    size_t leftover_len;

    /* Input held back while too much output is queued. */
    char *pending;
    size_t pending_len;
    bool out_full;

    /* Output. */
    char *out;
    size_t out_len, out_cap;
    bool oom;
};

static vb_http_session_t *session_of(llhttp_t *p)
{
    return (vb_http_session_t *)p->data;
}

static bool grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL)
        return false;
    *buf = b;
    *cap = c;
    return true;
}

static void out_put(vb_http_session_t *s, const char *data, size_t len)
{
    if (s->oom || len == 0)
        return;
    if (!grow(&s->out, &s->out_cap, s->out_len + len + 1)) {
        s->oom = true;
        return;
    }
    memcpy(s->out + s->out_len, data, len);
    s->out_len += len;
}

__attribute__((format(printf, 2, 3))) static void
out_printf(vb_http_session_t *s, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        out_put(s, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void set_phase(vb_http_session_t *s, enum phase ph)
{
    s->phase = ph;
    s->phase_start = vb_clock_now_ns();
    s->timer_gen++;
}

#define MS_NS 1000000ull

/* Deadline of the whole request, from its first byte. */
static uint64_t request_deadline(const vb_http_session_t *s)
{
    return s->t_start + (uint64_t)s->lim.request_timeout_ms * MS_NS;
}

/* The body must keep up min_body_rate after a grace: by the time the
 * deadline passes, fewer than rate * (elapsed - grace) bytes arrived. */
static uint64_t body_rate_deadline(const vb_http_session_t *s)
{
    if (s->lim.min_body_rate == 0)
        return UINT64_MAX;
    return s->phase_start + (uint64_t)s->lim.body_grace_ms * MS_NS +
           (uint64_t)s->body_len * 1000000000ull / s->lim.min_body_rate;
}

/* When the current phase ends the connection, and why (NULL: silently). */
static uint64_t session_deadline(const vb_http_session_t *s,
                                 const char **reason)
{
    uint64_t d, req = request_deadline(s);
    if (s->deferred) {
        /* The handler bounds its own wait; this is the safety net. */
        *reason = NULL;
        return s->phase_start + (uint64_t)s->lim.request_timeout_ms * MS_NS;
    }
    switch (s->phase) {
    case PH_HEAD:
        d = s->phase_start + (uint64_t)s->lim.header_timeout_ms * MS_NS;
        *reason = "request head timed out";
        break;
    case PH_BODY:
        d = body_rate_deadline(s);
        *reason = "request body too slow";
        break;
    default:
        *reason = NULL;
        return s->phase_start + (uint64_t)s->lim.idle_timeout_ms * MS_NS;
    }
    if (req < d) {
        d = req;
        *reason = "request timed out";
    }
    return d;
}

/* Fails the request in progress with `status`; the response is written
 * when the parser stops. Returns the llhttp callback error. */
static int fail(vb_http_session_t *s, int status, const char *reason)
{
    if (s->err_status == 0) {
        s->err_status = status;
        s->err_reason = reason;
    }
    return HPE_USER;
}

/* Appends to the head buffer, enforcing max_head_bytes. */
static int head_put(vb_http_session_t *s, const char *at, size_t len,
                    size_t overhead)
{
    s->head_bytes += len + overhead;
    if (s->head_bytes > s->lim.max_head_bytes)
        return fail(s, 431, "request head too large");
    if (!grow(&s->head, &s->head_cap, s->head_len + len + 1))
        return fail(s, 500, "out of memory");
    memcpy(s->head + s->head_len, at, len);
    s->head_len += len;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    vb_http_session_t *s = session_of(p);
    s->head_len = 0;
    s->head_bytes = 0;
    s->url_len = 0;
    s->url_done = false;
    s->nhdrs = 0;
    s->in_field = false;
    s->body_len = 0;
    s->t_start = vb_clock_now_ns();
    /* The first request's head is timed from the accept, later ones from
     * their first byte. */
    if (s->phase != PH_HEAD)
        set_phase(s, PH_HEAD);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    vb_http_session_t *s = session_of(p);
    /* The request line's method, spaces, version and CRLF: ~16 bytes. */
    int rc = head_put(s, at, len, s->url_len == 0 ? 16 : 0);
    s->url_len += len;
    return rc;
}

static int on_url_complete(llhttp_t *p)
{
    vb_http_session_t *s = session_of(p);
    if (!grow(&s->head, &s->head_cap, s->head_len + 1))
        return fail(s, 500, "out of memory");
    s->head[s->head_len++] = '\0';
    s->url_done = true;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    vb_http_session_t *s = session_of(p);
    if (!s->in_field) {
        if (s->nhdrs >= s->lim.max_headers)
            return fail(s, 431, "too many header fields");
        if (s->nhdrs == s->hdrs_cap) {
            size_t c = s->hdrs_cap ? 2 * s->hdrs_cap : 16;
            hdr_off_t *h = realloc(s->hdrs, c * sizeof(*h));
            if (h == NULL)
                return fail(s, 500, "out of memory");
            s->hdrs = h;
            s->hdrs_cap = c;
        }
        hdr_off_t *h = &s->hdrs[s->nhdrs++];
        h->name_off = s->head_len;
        h->name_len = 0;
        h->value_off = NO_OFF;
        h->value_len = 0;
        s->in_field = true;
        /* ": " and CRLF of this line. */
        if (head_put(s, "", 0, 4) != 0)
            return HPE_USER;
    }
    s->hdrs[s->nhdrs - 1].name_len += len;
    return head_put(s, at, len, 0);
}

static int on_header_field_complete(llhttp_t *p)
{
    vb_http_session_t *s = session_of(p);
    if (!grow(&s->head, &s->head_cap, s->head_len + 1))
        return fail(s, 500, "out of memory");
    s->head[s->head_len++] = '\0';
    s->in_field = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    vb_http_session_t *s = session_of(p);
    hdr_off_t *h = &s->hdrs[s->nhdrs - 1];
    if (h->value_off == NO_OFF)
        h->value_off = s->head_len;
    h->value_len += len;
    return head_put(s, at, len, 0);
}

static int on_header_value_complete(llhttp_t *p)
{
    vb_http_session_t *s = session_of(p);
    hdr_off_t *h = &s->hdrs[s->nhdrs - 1];
    if (h->value_off == NO_OFF)
        h->value_off = s->head_len;
    while (h->value_len > 0 &&
           (s->head[h->value_off + h->value_len - 1] == ' ' ||
            s->head[h->value_off + h->value_len - 1] == '\t'))
        h->value_len--;
    if (!grow(&s->head, &s->head_cap, s->head_len + 1))
        return fail(s, 500, "out of memory");
    s->head_len = h->value_off + h->value_len;
    s->head[s->head_len++] = '\0';
    return 0;
}

static const char *head_header(vb_http_session_t *s, const char *name)
{
    for (size_t i = 0; i < s->nhdrs; i++)
        if (s->hdrs[i].value_off != NO_OFF &&
            strcasecmp(s->head + s->hdrs[i].name_off, name) == 0)
            return s->head + s->hdrs[i].value_off;
    return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    vb_http_session_t *s = session_of(p);
    if ((p->flags & F_CONTENT_LENGTH) &&
        p->content_length > s->lim.max_body_bytes)
        return fail(s, 413, "request body too large");
    bool has_body = (p->flags & F_CHUNKED) ||
                    ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    if (has_body) {
        const char *expect = head_header(s, "Expect");
        if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
            p->http_major == 1 && p->http_minor >= 1)
            out_printf(s, "HTTP/1.1 100 Continue\r\n\r\n");
        set_phase(s, PH_BODY);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    vb_http_session_t *s = session_of(p);
    if (s->body_len + len > s->lim.max_body_bytes)
        return fail(s, 413, "request body too large");
    if (!grow(&s->body, &s->body_cap, s->body_len + len + 1))
        return fail(s, 500, "out of memory");
    memcpy(s->body + s->body_len, at, len);
    s->body_len += len;
    /* Each byte buys 1 / min_body_rate seconds, no more: the deadline
     * moves, so the transport must restart its timer. */
    s->timer_gen++;
    return 0;
}

static bool has_body_status(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* Serialises `r` as the response to a request of `method`. */
static void write_response(vb_http_session_t *s, const vb_http_resp_t *r,
                           bool head_only, bool close, bool http10_ka)
{
    const char *body = r->body_owned ? r->body_owned : r->body;
    size_t blen = body ? r->body_len : 0;
    out_printf(s, "HTTP/1.1 %d %s\r\n", r->status,
               vb_http_status_text(r->status));
    if (r->content_type != NULL && has_body_status(r->status))
        out_printf(s, "Content-Type: %s\r\n", r->content_type);
    if (has_body_status(r->status))
        out_printf(s, "Content-Length: %zu\r\n", blen);
    if (r->status != 101) {
        if (close)
            out_printf(s, "Connection: close\r\n");
        else if (http10_ka)
            out_printf(s, "Connection: keep-alive\r\n");
    }
    out_put(s, r->headers, r->headers_len);
    out_put(s, "\r\n", 2);
    if (!head_only && has_body_status(r->status))
        out_put(s, body, blen);
}

/* Answers a request the session refuses itself. */
static void write_error(vb_http_session_t *s, int status, const char *reason)
{
    vb_http_resp_t r;
    memset(&r, 0, sizeof(r));
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", status,
                     vb_http_status_text(status));
    r.status = status;
    r.content_type = "text/plain; charset=utf-8";
    r.body = body;
    r.body_len = (size_t)n;
    write_response(s, &r, false, true, false);
    if (s->on_error != NULL) {
        vb_http_error_t e = {
            .status = status,
            .reason = reason,
            .target = s->url_done ? s->head : NULL,
            .peer = s->peer,
            .listener = s->listener,
            .t_start_ns = s->t_start,
        };
        s->on_error(s->ud, &e);
    }
}

/* Reduces an absolute-form target ("http://host/p?q") to origin form. */
static const char *origin_form(const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0 ||
        strncasecmp(url, "https://", 8) == 0) {
        const char *p = strstr(url, "://") + 3;
        p += strcspn(p, "/?");
        return *p == '/' ? p : "/";
    }
    return url;
}

static int on_message_complete(llhttp_t *p)
{
    vb_http_session_t *s = session_of(p);
    if (s->nhdrs > s->hview_cap) {
        vb_http_header_t *v = realloc(s->hview, s->nhdrs * sizeof(*v));
        if (v == NULL)
            return fail(s, 500, "out of memory");
        s->hview = v;
        s->hview_cap = s->nhdrs;
    }
    for (size_t i = 0; i < s->nhdrs; i++) {
        hdr_off_t *h = &s->hdrs[i];
        s->hview[i].name = s->head + h->name_off;
        s->hview[i].name_len = h->name_len;
        s->hview[i].value =
            h->value_off == NO_OFF ? "" : s->head + h->value_off;
        s->hview[i].value_len = h->value_len;
    }
    if (!grow(&s->body, &s->body_cap, s->body_len + 1))
        return fail(s, 500, "out of memory");
    s->body[s->body_len] = '\0';

    vb_http_req_t req;
    memset(&req, 0, sizeof(req));
    req.method = p->method;
    req.method_name = llhttp_method_name((llhttp_method_t)p->method);
    req.target = s->url_done ? origin_form(s->head) : "/";
    req.target_len = strlen(req.target);
    const char *q = strchr(req.target, '?');
    req.path_len = q ? (size_t)(q - req.target) : req.target_len;
    req.query = q ? q + 1 : NULL;
    req.headers = s->hview;
    req.nheaders = s->nhdrs;
    req.body = s->body;
    req.body_len = s->body_len;
    req.http_major = p->http_major;
    req.http_minor = p->http_minor;
    req.keep_alive = llhttp_should_keep_alive(p);
    req.upgrade = p->upgrade;
    req.listener = s->listener;
    req.peer = s->peer;
    req.t_start_ns = s->t_start;
    req.conn = s->conn;

    vb_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = 500;
    s->handler(s->ud, &req, &resp);

    if (resp.defer && s->conn != NULL && !resp.upgrade) {
        /* Nothing is written now; what follows this request waits behind
         * it (out_full keeps it, as for a full output). */
        free(resp.body_owned);
        s->deferred = true;
        s->defer_arg = resp.defer_arg;
        s->def_head_only = p->method == HTTP_HEAD;
        s->def_close = !req.keep_alive || req.upgrade;
        s->def_http10 =
            req.keep_alive && p->http_major == 1 && p->http_minor == 0;
        set_phase(s, PH_IDLE); /* with deferred: request_timeout_ms */
        s->out_full = true;
        return HPE_PAUSED;
    }

    bool upgrade = resp.upgrade && resp.status == 101;
    /* An upgrade the handler refused: the client may already be sending
     * the other protocol, so the connection cannot continue as HTTP. */
    bool close = !upgrade && (resp.close || !req.keep_alive || req.upgrade);
    write_response(s, &resp, p->method == HTTP_HEAD, close,
                   req.keep_alive && p->http_major == 1 && p->http_minor == 0);
    free(resp.body_owned);
    if (upgrade) {
        s->action = VB_HTTP_DETACH;
        s->detach_arg = resp.detach_arg;
        return HPE_PAUSED;
    }
    if (close) {
        s->action = VB_HTTP_CLOSE;
        return HPE_PAUSED;
    }
    set_phase(s, PH_IDLE);
    if (s->out_len >= s->lim.max_output_bytes) {
        /* Answering the rest of this read now would only pile up output
         * (small requests can have large answers): stop, and keep the
         * remaining bytes until the transport has written these. */
        s->out_full = true;
        return HPE_PAUSED;
    }
    return 0;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int vb_http_session_create(const vb_http_session_cfg_t *cfg,
                           vb_http_session_t **out)
{
    *out = NULL;
    if (cfg == NULL || cfg->handler == NULL)
        return VB_EINVAL;
    vb_http_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return VB_ENOMEM;
    s->lim = cfg->limits;
    s->handler = cfg->handler;
    s->conn = cfg->conn;
    s->on_error = cfg->on_error;
    s->ud = cfg->ud;
    s->listener = cfg->listener;
    snprintf(s->peer, sizeof(s->peer), "%s", cfg->peer ? cfg->peer : "");
    llhttp_init(&s->parser, HTTP_REQUEST, &settings);
    s->parser.data = s;
    s->phase = PH_HEAD;
    s->timer_gen = 1;
    s->t_start = vb_clock_now_ns();
    s->phase_start = s->t_start;
    *out = s;
    return 0;
}

void vb_http_session_destroy(vb_http_session_t *s)
{
    if (s == NULL)
        return;
    free(s->head);
    free(s->hdrs);
    free(s->hview);
    free(s->body);
    free(s->leftover);
    free(s->pending);
    free(s->out);
    free(s);
}

/* Runs the parser over `len` bytes and turns its outcome into an action. */
static vb_http_action_t execute(vb_http_session_t *s, const char *data,
                                size_t len)
{
    llhttp_errno_t e = llhttp_execute(&s->parser, data, len);
    if (e == HPE_OK)
        goto done;
    if (e == HPE_PAUSED && s->out_full) {
        s->out_full = false;
        llhttp_resume(&s->parser);
        const char *pos = llhttp_get_error_pos(&s->parser);
        size_t n = pos ? len - (size_t)(pos - data) : 0;
        if (n > 0) {
            /* `data` may be the old pending buffer: copy before it goes. */
            char *keep = malloc(n);
            if (keep == NULL) {
                s->oom = true;
                goto done;
            }
            memcpy(keep, pos, n);
            s->pending = keep;
            s->pending_len = n;
        }
        goto done;
    }
    if (e == HPE_PAUSED && s->action == VB_HTTP_DETACH) {
        const char *pos = llhttp_get_error_pos(&s->parser);
        size_t n = pos ? len - (size_t)(pos - data) : 0;
        if (n > 0) {
            s->leftover = malloc(n);
            if (s->leftover == NULL) {
                /* The 101 is queued but the bytes after it are lost: the
                 * stream would start corrupted, so drop the connection. */
                vb_log_error(NULL, "out of memory keeping upgrade bytes",
                             "peer=%s bytes=%zu", s->peer, n);
                s->action = VB_HTTP_CLOSE;
                goto done;
            }
            memcpy(s->leftover, pos, n);
            s->leftover_len = n;
        }
        goto done;
    }
    if (e == HPE_PAUSED && s->action == VB_HTTP_CLOSE)
        goto done;
    if (e == HPE_PAUSED_UPGRADE) {
        /* on_message_complete closes refused upgrades; not reached. */
        s->action = VB_HTTP_CLOSE;
        goto done;
    }
    /* A parse error, or one of our limits (err_status). */
    if (s->err_status != 0) {
        write_error(s, s->err_status, s->err_reason);
    } else {
        char reason[96];
        snprintf(reason, sizeof(reason), "malformed request: %s",
                 llhttp_errno_name(e));
        write_error(s, 400, reason);
    }
    s->action = VB_HTTP_CLOSE;
done:
    if (s->oom) {
        vb_log_error(NULL, "out of memory in an HTTP session", "peer=%s",
                     s->peer);
        s->action = VB_HTTP_CLOSE;
    }
    return s->action;
}

vb_http_action_t vb_http_session_feed(vb_http_session_t *s, const char *data,
                                      size_t len)
{
    if (s->action != VB_HTTP_CONTINUE || len == 0)
        return s->action;
    if (s->pending_len > 0 || s->deferred) {
        /* Blocked: queue behind what is held back. */
        char *p = realloc(s->pending, s->pending_len + len);
        if (p == NULL) {
            s->action = VB_HTTP_CLOSE;
            return s->action;
        }
        memcpy(p + s->pending_len, data, len);
        s->pending = p;
        s->pending_len += len;
        return s->action;
    }
    return execute(s, data, len);
}

bool vb_http_session_blocked(const vb_http_session_t *s)
{
    return s->action == VB_HTTP_CONTINUE && (s->pending_len > 0 || s->deferred);
}

bool vb_http_session_deferred(const vb_http_session_t *s)
{
    return s->deferred;
}

void *vb_http_session_defer_arg(const vb_http_session_t *s)
{
    return s->defer_arg;
}

vb_http_action_t vb_http_session_answer(vb_http_session_t *s,
                                        vb_http_resp_t *resp)
{
    if (!s->deferred) {
        free(resp->body_owned);
        resp->body_owned = NULL;
        return s->action;
    }
    s->deferred = false;
    s->defer_arg = NULL;
    set_phase(s, PH_IDLE); /* the idle time starts now */
    bool close = s->def_close || resp->close;
    write_response(s, resp, s->def_head_only, close, s->def_http10);
    free(resp->body_owned);
    resp->body_owned = NULL;
    if (close && s->action == VB_HTTP_CONTINUE)
        s->action = VB_HTTP_CLOSE;
    return s->action;
}

vb_http_action_t vb_http_session_resume(vb_http_session_t *s)
{
    if (s->action != VB_HTTP_CONTINUE || s->pending_len == 0 || s->deferred)
        return s->action;
    char *p = s->pending;
    size_t n = s->pending_len;
    s->pending = NULL;
    s->pending_len = 0;
    vb_http_action_t a = execute(s, p, n);
    free(p);
    return a;
}

vb_http_action_t vb_http_session_timeout(vb_http_session_t *s)
{
    if (s->action != VB_HTTP_CONTINUE)
        return s->action;
    const char *reason;
    session_deadline(s, &reason);
    if (reason != NULL)
        write_error(s, 408, reason);
    s->action = VB_HTTP_CLOSE;
    return s->action;
}

uint32_t vb_http_session_timer(const vb_http_session_t *s, uint32_t *ms)
{
    const char *reason;
    uint64_t d = session_deadline(s, &reason), now = vb_clock_now_ns();
    uint64_t left = d > now ? (d - now + MS_NS - 1) / MS_NS : 0;
    *ms = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
    return s->timer_gen;
}

char *vb_http_session_take_output(vb_http_session_t *s, size_t *len)
{
    char *o = s->out;
    *len = s->out_len;
    if (o == NULL || s->out_len == 0)
        return NULL;
    s->out = NULL;
    s->out_len = 0;
    s->out_cap = 0;
    return o;
}

const char *vb_http_session_leftover(const vb_http_session_t *s, size_t *len)
{
    *len = s->leftover_len;
    return s->leftover;
}

void *vb_http_session_detach_arg(const vb_http_session_t *s)
{
    return s->detach_arg;
}

/* ---------------------------------------------------------------------- */
/* server                                                                 */

#define MAX_LISTENERS 4
#define READ_BUF_SIZE 65536
#define ACCEPT_BATCH  64   /* accepts per poll callback, for fairness */
#define PEER_BUCKETS  1024 /* hash buckets of the per-peer table */

typedef enum { C_OPEN, C_CLOSING, C_DETACHING, C_DEAD } conn_state_t;

typedef struct conn conn_t;
typedef struct listener_box listener_box_t;

/* Connections of one peer address (an IPv6 peer: its /64), oldest first.
 * Exists while the peer has connections. */
typedef struct peer {
    uint8_t key[17]; /* family, then 4 or 8 address bytes */
    uint32_t n;
    conn_t *oldest, *newest;
    struct peer *next; /* hash chain */
} peer_t;

struct vb_http_server {
    uv_loop_t *loop;
    vb_http_server_cfg_t cfg;
    listener_box_t *listeners[MAX_LISTENERS];
    int nlisteners;
    conn_t *conns; /* doubly linked */
    /* Written by the loop thread only; atomic so that other threads may
     * read it (vb_http_server_connections). */
    _Atomic size_t nconns;
    bool closing;
    bool accept_paused;
    uv_timer_t accept_timer; /* resumes accepting after a pause */
    peer_t *peers[PEER_BUCKETS];
    char readbuf[READ_BUF_SIZE];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shut;
    vb_http_server_t *srv;
    vb_http_session_t *sess;
    conn_t *prev, *next;
    peer_t *pr;
    conn_t *pprev, *pnext; /* in pr's list */
    conn_state_t state;
    uint32_t timer_gen;
    size_t writes_pending;
    bool read_paused;
    bool peer_eof;
    bool shutdown_sent;
    int open_handles;
    int listener;
    char peer[64];
};

struct listener_box {
    vb_http_server_t *srv;
    int tag;
    int fd;
    uv_poll_t poll;
};

typedef struct wreq {
    uv_write_t req;
    conn_t *c;
    char *data;
} wreq_t;

static void conn_close(conn_t *c);
static void accept_resume_cb(uv_timer_t *t);
static void conn_after_write(conn_t *c);
static void conn_apply(conn_t *c, vb_http_action_t a);

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[64] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)ss, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
        snprintf(out, n, "[%s]:%d", ip, port);
        return;
    }
    if (ss->ss_family == AF_INET) {
        uv_ip4_name((const struct sockaddr_in *)ss, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    }
    snprintf(out, n, "%s:%d", ip, port);
}

/* The per-peer key: an IPv4 address (also when IPv4-mapped), or the /64 of
 * an IPv6 one, since one IPv6 host usually holds a whole /64. */
static void peer_key(const struct sockaddr_storage *ss, uint8_t key[17])
{
    memset(key, 0, 17);
    if (ss->ss_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                           0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a, 8);
        }
    } else if (ss->ss_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
}

static peer_t **peer_slot(vb_http_server_t *s, const uint8_t key[17])
{
    peer_t **pp = &s->peers[vb_hash_fnv1a64(key, 17) % PEER_BUCKETS];
    while (*pp != NULL && memcmp((*pp)->key, key, 17) != 0)
        pp = &(*pp)->next;
    return pp;
}

static uint32_t peer_count(vb_http_server_t *s, const uint8_t key[17])
{
    peer_t *p = *peer_slot(s, key);
    return p ? p->n : 0;
}

/* Links `c` as the newest connection of its peer. Returns false on OOM. */
static bool peer_add(vb_http_server_t *s, conn_t *c, const uint8_t key[17])
{
    peer_t **pp = peer_slot(s, key);
    if (*pp == NULL) {
        if ((*pp = calloc(1, sizeof(peer_t))) == NULL)
            return false;
        memcpy((*pp)->key, key, 17);
    }
    peer_t *p = *pp;
    c->pr = p;
    c->pprev = p->newest;
    c->pnext = NULL;
    if (p->newest)
        p->newest->pnext = c;
    else
        p->oldest = c;
    p->newest = c;
    p->n++;
    return true;
}

static void peer_remove(vb_http_server_t *s, conn_t *c)
{
    peer_t *p = c->pr;
    if (p == NULL)
        return;
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        p->oldest = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
    else
        p->newest = c->pprev;
    c->pr = NULL;
    if (--p->n == 0) {
        peer_t **pp = peer_slot(s, p->key);
        *pp = p->next;
        free(p);
    }
}

/* The peer holding the most connections (scanned only at the cap). */
static peer_t *busiest_peer(vb_http_server_t *s)
{
    peer_t *best = NULL;
    for (int i = 0; i < PEER_BUCKETS; i++)
        for (peer_t *p = s->peers[i]; p != NULL; p = p->next)
            if (best == NULL || p->n > best->n)
                best = p;
    return best;
}

static void conn_free_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles == 0) {
        vb_http_session_destroy(c->sess);
        free(c);
    }
}

static void conn_unlink(conn_t *c)
{
    vb_http_server_t *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->nconns--;
    peer_remove(s, c);
}

static void conn_close(conn_t *c)
{
    if (c->state == C_DEAD)
        return;
    if (c->state == C_DETACHING && c->srv->cfg.on_detach != NULL)
        c->srv->cfg.on_detach(c->srv->cfg.ud, -1, NULL, 0,
                              vb_http_session_detach_arg(c->sess), c->peer);
    if (c->sess != NULL && vb_http_session_deferred(c->sess) &&
        c->srv->cfg.on_abandon != NULL) {
        void *arg = vb_http_session_defer_arg(c->sess);
        /* Answered by nobody now. */
        c->sess->deferred = false;
        c->sess->defer_arg = NULL;
        c->srv->cfg.on_abandon(c->srv->cfg.ud, arg);
    }
    c->state = C_DEAD;
    conn_unlink(c);
    uv_close((uv_handle_t *)&c->timer, conn_free_cb);
    uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
    /* A descriptor is about to be free: try accepting again now. */
    if (c->srv->accept_paused && !c->srv->closing)
        uv_timer_start(&c->srv->accept_timer, accept_resume_cb, 0, 0);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *c = h->data;
    /* One buffer per server: libuv calls read_cb right after each read on
     * this thread, so no two reads use it at once. */
    buf->base = c->srv->readbuf;
    buf->len = sizeof(c->srv->readbuf);
}

static void timer_cb(uv_timer_t *t);

/* Restarts the timer if the session asks for it. */
static void sync_timer(conn_t *c)
{
    uint32_t ms;
    uint32_t gen = vb_http_session_timer(c->sess, &ms);
    if (gen != c->timer_gen) {
        c->timer_gen = gen;
        uv_timer_start(&c->timer, timer_cb, ms, 0);
    }
}

static void write_cb(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *c = w->c;
    free(w->data);
    free(w);
    c->writes_pending--;
    if (c->state == C_DEAD)
        return;
    if (status < 0) {
        vb_log_debug(NULL, "http write failed", "peer=%s err=%s", c->peer,
                     uv_strerror(status));
        conn_close(c);
        return;
    }
    conn_after_write(c);
}

/* Queues the session's output. Returns false if the connection died. */
static bool flush_output(conn_t *c)
{
    size_t len;
    char *data = vb_http_session_take_output(c->sess, &len);
    if (data == NULL)
        return true;
    wreq_t *w = malloc(sizeof(*w));
    if (w == NULL) {
        free(data);
        conn_close(c);
        return false;
    }
    w->c = c;
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (rc < 0) {
        free(data);
        free(w);
        conn_close(c);
        return false;
    }
    c->writes_pending++;
    return true;
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    (void)status;
    if (c->state == C_DEAD)
        return;
    if (c->peer_eof || status < 0)
        conn_close(c);
}

/* All output of a closing connection is written: send FIN, then keep
 * reading (and discarding) for a moment, so a client still sending gets
 * our answer instead of a reset. */
static void start_linger(conn_t *c)
{
    if (c->shutdown_sent)
        return;
    c->shutdown_sent = true;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        conn_close(c);
        return;
    }
    if (c->peer_eof)
        return; /* shutdown_cb closes */
    if (c->read_paused) {
        c->read_paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
    uv_timer_start(&c->timer, timer_cb, c->srv->cfg.limits.linger_ms, 0);
}

static void do_detach(conn_t *c)
{
    vb_http_server_t *s = c->srv;
    uv_os_fd_t fd = -1;
    int dupfd = -1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dupfd < 0) {
        vb_log_error(NULL, "cannot detach upgraded socket", "peer=%s", c->peer);
        conn_close(c); /* reports fd -1 */
        return;
    }
    size_t n;
    const char *extra = vb_http_session_leftover(c->sess, &n);
    void *arg = vb_http_session_detach_arg(c->sess);
    /* Closing the handle closes only our descriptor; the socket lives on in
     * dupfd. libuv removes its epoll registration before closing. */
    c->state = C_CLOSING; /* so conn_close does not report a failure */
    conn_close(c);
    s->cfg.on_detach(s->cfg.ud, dupfd, extra, n, arg, c->peer);
}

static void conn_after_write(conn_t *c)
{
    vb_http_server_t *s = c->srv;
    if (c->writes_pending > 0)
        goto backpressure;
    if (c->state == C_CLOSING) {
        start_linger(c);
        return;
    }
    if (c->state == C_DETACHING) {
        do_detach(c);
        return;
    }
backpressure:
    if (c->state == C_OPEN && c->read_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <
            s->cfg.limits.max_output_bytes / 4) {
        if (vb_http_session_blocked(c->sess)) {
            /* Answer what was held back; conn_apply decides on reading. */
            conn_apply(c, vb_http_session_resume(c->sess));
            return;
        }
        c->read_paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
}

/* Acts on what the session decided after a feed or a timeout. */
static void conn_apply(conn_t *c, vb_http_action_t a)
{
    if (!flush_output(c))
        return;
    if (a == VB_HTTP_CLOSE) {
        c->state = C_CLOSING;
        /* A client that never reads its answer cannot hold us forever. */
        uv_timer_start(&c->timer, timer_cb, c->srv->cfg.limits.idle_timeout_ms,
                       0);
        if (c->writes_pending == 0)
            start_linger(c);
        return;
    }
    if (a == VB_HTTP_DETACH) {
        c->state = C_DETACHING;
        uv_timer_start(&c->timer, timer_cb, c->srv->cfg.limits.idle_timeout_ms,
                       0);
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (c->writes_pending == 0)
            do_detach(c);
        return;
    }
    sync_timer(c);
    bool hold = vb_http_session_blocked(c->sess) ||
                uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >
                    c->srv->cfg.limits.max_output_bytes;
    if (hold && !c->read_paused) {
        c->read_paused = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    } else if (!hold && c->read_paused) {
        c->read_paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    if (nread == 0 || c->state == C_DEAD)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            conn_close(c);
            return;
        }
        c->peer_eof = true;
        uv_read_stop(st);
        if (c->state == C_OPEN) {
            /* Answer what is complete, then close. */
            conn_apply(c, VB_HTTP_CLOSE);
        } else if (c->state == C_CLOSING && c->shutdown_sent) {
            conn_close(c);
        }
        return;
    }
    if (c->state != C_OPEN)
        return; /* lingering: discard */
    conn_apply(c, vb_http_session_feed(c->sess, buf->base, (size_t)nread));
}

static void timer_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->state == C_OPEN)
        conn_apply(c, vb_http_session_timeout(c->sess));
    else if (c->state == C_CLOSING || c->state == C_DETACHING)
        conn_close(c); /* linger over, or the output never drained */
}

int vb_http_server_answer(void *conn, vb_http_resp_t *resp)
{
    conn_t *c = conn;
    if (c == NULL || c->state != C_OPEN || c->sess == NULL ||
        !vb_http_session_deferred(c->sess)) {
        /* Going (closing, lingering): nobody will be answered, and the
         * caller keeps what it deferred with, so on_abandon must not run
         * for it later. */
        if (c != NULL && c->sess != NULL && vb_http_session_deferred(c->sess)) {
            c->sess->deferred = false;
            c->sess->defer_arg = NULL;
        }
        free(resp->body_owned);
        resp->body_owned = NULL;
        return VB_ESTALE;
    }
    conn_apply(c, vb_http_session_answer(c->sess, resp));
    /* Reading resumes, and held-back requests are answered, once this
     * answer is written (conn_after_write). */
    return 0;
}

static void emit(vb_http_server_t *s, vb_http_event_t ev)
{
    if (s->cfg.on_event != NULL)
        s->cfg.on_event(s->cfg.ud, ev);
}

/* Answers a connection refused before it had a session, and closes it.
 * The client has sent nothing yet, so closing does not reset the 503. */
static void refuse(int fd)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 24\r\n"
                               "Connection: close\r\n\r\n"
                               "503 Service Unavailable\n";
    ssize_t n = send(fd, resp, sizeof(resp) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)n;
    close(fd);
}

/* Makes room for one more connection from a peer holding `mine`: at the
 * cap, the busiest peer's oldest connection goes if that peer holds more
 * than `mine` + 1. Returns false when the newcomer must be refused. */
static bool admit(vb_http_server_t *s, uint32_t mine, const char *peer)
{
    const vb_http_limits_t *l = &s->cfg.limits;
    if (l->max_conns_per_peer > 0 && mine >= l->max_conns_per_peer) {
        emit(s, VB_HTTP_EV_REFUSED_PER_PEER);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                           "per-peer connection limit reached, refusing",
                           "peer=%s limit=%u", peer, l->max_conns_per_peer);
        return false;
    }
    if (s->nconns < l->max_conns)
        return true;
    peer_t *b = l->max_conns_per_peer > 0 ? busiest_peer(s) : NULL;
    if (b == NULL || b->n < 2 || b->n <= mine + 1) {
        emit(s, VB_HTTP_EV_REFUSED_MAX_CONNS);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                           "connection limit reached, refusing",
                           "peer=%s limit=%u", peer, l->max_conns);
        return false;
    }
    conn_t *victim = b->oldest;
    emit(s, VB_HTTP_EV_EVICTED);
    VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                       "connection limit reached, closing the busiest "
                       "peer's oldest connection",
                       "peer=%s victim=%s victim_connections=%u limit=%u", peer,
                       victim->peer, b->n, l->max_conns);
    conn_close(victim);
    return true;
}

static void conn_start(vb_http_server_t *s, int tag, int fd,
                       const struct sockaddr_storage *ss)
{
    char name[64];
    uint8_t key[17];
    peer_name(ss, name, sizeof(name));
    peer_key(ss, key);
    if (!admit(s, peer_count(s, key), name)) {
        refuse(fd);
        return;
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->srv = s;
    c->listener = tag;
    memcpy(c->peer, name, sizeof(c->peer));
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    /* Linked first so conn_close can always unlink. */
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (!peer_add(s, c, key) || uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd); /* the handle did not take it */
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    vb_http_session_cfg_t sc = {
        .limits = s->cfg.limits,
        .handler = s->cfg.handler,
        .on_error = s->cfg.on_error,
        .ud = s->cfg.ud,
        .listener = tag,
        .peer = c->peer,
        .conn = c,
    };
    if (vb_http_session_create(&sc, &c->sess) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
        conn_close(c);
        return;
    }
    sync_timer(c);
}

static void accept_cb(uv_poll_t *h, int status, int events);

static void accept_pause(vb_http_server_t *s, int err)
{
    s->accept_paused = true;
    for (int i = 0; i < s->nlisteners; i++)
        uv_poll_stop(&s->listeners[i]->poll);
    uv_timer_start(&s->accept_timer, accept_resume_cb,
                   s->cfg.limits.accept_pause_ms, 0);
    emit(s, VB_HTTP_EV_ACCEPT_PAUSED);
    VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                       "accept failed, accepting paused",
                       "err=%s connections=%zu pause_ms=%u", strerror(err),
                       s->nconns, s->cfg.limits.accept_pause_ms);
}

static void accept_resume_cb(uv_timer_t *t)
{
    vb_http_server_t *s = t->data;
    if (!s->accept_paused || s->closing)
        return;
    s->accept_paused = false;
    for (int i = 0; i < s->nlisteners; i++)
        uv_poll_start(&s->listeners[i]->poll, UV_READABLE, accept_cb);
    VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL, "accepting resumed",
                       "connections=%zu", s->nconns);
}

static void accept_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    listener_box_t *box = h->data;
    vb_http_server_t *s = box->srv;
    if (status < 0 || s->closing)
        return;
    for (int i = 0; i < ACCEPT_BATCH && !s->accept_paused; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(box->fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                accept_pause(s, errno);
                return;
            }
            /* EAGAIN: nothing more; anything else (ECONNABORTED...) was
             * about one connection that is gone. */
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            continue;
        }
        conn_start(s, box->tag, fd, &ss);
    }
}

int vb_http_server_create(uv_loop_t *loop, const vb_http_server_cfg_t *cfg,
                          vb_http_server_t **out)
{
    *out = NULL;
    if (loop == NULL || cfg == NULL || cfg->handler == NULL)
        return VB_EINVAL;
    vb_http_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return VB_ENOMEM;
    s->loop = loop;
    s->cfg = *cfg;
    uv_timer_init(loop, &s->accept_timer);
    s->accept_timer.data = s;
    *out = s;
    return 0;
}

static void listener_free_cb(uv_handle_t *h)
{
    listener_box_t *box = h->data;
    close(box->fd);
    free(box);
}

int vb_http_server_listen(vb_http_server_t *s, const char *host, int port,
                          int tag, int *bound_port)
{
    if (s->nlisteners == MAX_LISTENERS)
        return VB_ENOSPC;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        vb_log_error(NULL, "cannot resolve listen address", "host=%s err=%s",
                     host, gai_strerror(gai));
        return VB_ECONFIG;
    }
    listener_box_t *box = calloc(1, sizeof(*box));
    if (box == NULL) {
        freeaddrinfo(ai);
        return VB_ENOMEM;
    }
    box->srv = s;
    box->tag = tag;
    box->fd =
        socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = box->fd < 0 ? -errno : 0, one = 1;
    if (rc == 0)
        setsockopt(box->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rc == 0 && bind(box->fd, ai->ai_addr, ai->ai_addrlen) != 0)
        rc = -errno;
    freeaddrinfo(ai);
    if (rc == 0 && listen(box->fd, 511) != 0)
        rc = -errno;
    if (rc == 0)
        rc = uv_poll_init(s->loop, &box->poll, box->fd);
    if (rc == 0) {
        box->poll.data = box;
        rc = uv_poll_start(&box->poll, UV_READABLE, accept_cb);
        if (rc != 0)
            uv_close((uv_handle_t *)&box->poll, listener_free_cb);
    } else if (box->fd >= 0) {
        close(box->fd);
        free(box);
    } else {
        free(box);
    }
    if (rc != 0) {
        vb_log_error(NULL, "cannot listen", "host=%s port=%d err=%s", host,
                     port, uv_strerror(rc));
        return VB_EIO;
    }
    if (bound_port != NULL) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(box->fd, (struct sockaddr *)&ss, &len);
        *bound_port = ntohs(ss.ss_family == AF_INET6
                                ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                : ((struct sockaddr_in *)&ss)->sin_port);
    }
    if (s->accept_paused)
        uv_poll_stop(&box->poll);
    s->listeners[s->nlisteners] = box;
    s->nlisteners++;
    return 0;
}

size_t vb_http_server_connections(const vb_http_server_t *s)
{
    return atomic_load_explicit(&s->nconns, memory_order_relaxed);
}

int vb_http_server_unlisten(vb_http_server_t *s, int tag)
{
    int closed = 0, kept = 0;
    for (int i = 0; i < s->nlisteners; i++) {
        listener_box_t *box = s->listeners[i];
        if (box->tag == tag) {
            uv_close((uv_handle_t *)&box->poll, listener_free_cb);
            closed++;
        } else {
            s->listeners[kept++] = box;
        }
    }
    s->nlisteners = kept;
    return closed;
}

void vb_http_server_close(vb_http_server_t *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = true;
    for (int i = 0; i < s->nlisteners; i++)
        uv_close((uv_handle_t *)&s->listeners[i]->poll, listener_free_cb);
    s->nlisteners = 0;
    uv_close((uv_handle_t *)&s->accept_timer, NULL);
    while (s->conns != NULL)
        conn_close(s->conns);
}

void vb_http_server_destroy(vb_http_server_t *s)
{
    free(s);
}
