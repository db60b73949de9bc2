/* SPDX-License-Identifier: MIT */
/*
 * The REST hang-up request: build the request text up front, connect over
 * the transport seam (TCP or TLS), write it once, parse the response head
 * with llhttp, report the status. A timer bounds the whole exchange. The
 * request object frees itself after the callback.
 */
#include "net/twilio_rest.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "core/err.h"
#include "core/log.h"
#include "llhttp.h"
#include "net/tcp.h"
#include "net/ws.h"

#define DEFAULT_TIMEOUT_MS 10000u

typedef struct rest {
    uv_loop_t *loop;
    uv_timer_t timer;
    vb_transport_t *t;
    llhttp_t parser;
    llhttp_settings_t settings;
    vb_twilio_rest_cb cb;
    void *ud;
    char *request;
    size_t request_len;
    char call_sid[64];
    int status;
    size_t received; /* response bytes so far */
    bool done;
} rest_t;

static bool sid_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]))
            return false;
    return true;
}

static void timer_closed(uv_handle_t *h)
{
    rest_t *r = h->data;
    free(r->request);
    free(r);
}

/* Reports once, then tears everything down. */
static void finish(rest_t *r, int status)
{
    if (r->done)
        return;
    r->done = true;
    uv_timer_stop(&r->timer);
    vb_transport_close(r->t);
    r->t = NULL;
    if (status == 200)
        vb_log_info(r->call_sid, "call ended through the REST API", NULL);
    else if (status > 0)
        vb_log_warn(r->call_sid, "REST hang-up refused", "http_status=%d",
                    status);
    else
        vb_log_warn(r->call_sid, "REST hang-up failed", "err=%s",
                    vb_err_name(status));
    r->cb(status, r->ud);
    uv_close((uv_handle_t *)&r->timer, timer_closed);
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, VB_ETIMEDOUT);
}

static int on_headers_complete(llhttp_t *p)
{
    rest_t *r = p->data;
    int status = llhttp_get_status_code(p);
    /* llhttp takes any digits as a status; only three make one. */
    if (status < 100 || status > 999)
        return -1;
    r->status = status;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    rest_t *r = p->data;
    /* An interim 1xx response is followed by the real one. */
    if (r->status < 200) {
        r->status = 0;
        return 0;
    }
    finish(r, r->status);
    return HPE_PAUSED;
}

static void on_read(vb_transport_t *t, const uint8_t *data, size_t len,
                    void *ud)
{
    (void)t;
    rest_t *r = ud;
    if (r->done)
        return;
    r->received += len;
    if (r->received > VB_TWILIO_REST_MAX_RESPONSE) {
        /* The status, if it came, is the answer; the rest is not read. */
        vb_log_warn(r->call_sid, "REST response too large", "bytes=%zu cap=%u",
                    r->received, (unsigned)VB_TWILIO_REST_MAX_RESPONSE);
        finish(r, r->status >= 200 ? r->status : VB_EMSGSIZE);
        return;
    }
    enum llhttp_errno e = llhttp_execute(&r->parser, (const char *)data, len);
    if (r->done)
        return;
    if (e != HPE_OK) {
        vb_log_warn(r->call_sid, "REST response malformed", "llhttp=%s",
                    llhttp_errno_name(e));
        finish(r, VB_EPROTO);
    }
}

static void on_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                     void *ud)
{
    (void)t;
    rest_t *r = ud;
    switch (ev) {
    case VB_TRANSPORT_CONNECTED:
        break; /* the request was queued before the connection was up */
    case VB_TRANSPORT_EOF:
        /* A response without a length ends at EOF. */
        if (llhttp_finish(&r->parser) == HPE_OK && r->status > 0)
            finish(r, r->status);
        else
            finish(r, r->status > 0 ? r->status : VB_ECLOSED);
        break;
    case VB_TRANSPORT_ERROR:
        finish(r, err);
        break;
    case VB_TRANSPORT_DRAINED:
        break;
    }
}

/* application/x-www-form-urlencoded: unreserved bytes as they are, space
 * as '+', everything else %XX. *out is malloc'd. */
static int form_body(const vb_twilio_rest_req_t *req, char **out, size_t *len)
{
    static const char status[] = "Status=completed";
    static const char hex[] = "0123456789ABCDEF";
    if (req->twiml == NULL) {
        *out = strdup(status);
        *len = sizeof(status) - 1;
        return *out != NULL ? 0 : VB_ENOMEM;
    }
    size_t n = strlen(req->twiml);
    if (n > VB_TWILIO_REST_TWIML_MAX)
        return VB_EINVAL;
    char *b = malloc(sizeof("Twiml=") + 3 * n);
    if (b == NULL)
        return VB_ENOMEM;
    size_t w = 0;
    memcpy(b, "Twiml=", 6);
    w = 6;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)req->twiml[i];
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            b[w++] = (char)ch;
        } else if (ch == ' ') {
            b[w++] = '+';
        } else {
            b[w++] = '%';
            b[w++] = hex[ch >> 4];
            b[w++] = hex[ch & 15];
        }
    }
    b[w] = '\0';
    *out = b;
    *len = w;
    return 0;
}

static int build_request(rest_t *r, const vb_ws_url_t *u,
                         const vb_twilio_rest_req_t *req)
{
    char cred[256], auth[400];
    size_t alen;
    bool key = req->api_key != NULL && *req->api_key != '\0';
    int n = snprintf(cred, sizeof(cred), "%s:%s",
                     key ? req->api_key : req->account_sid, req->auth_token);
    if (n < 0 || (size_t)n >= sizeof(cred) ||
        mbedtls_base64_encode((unsigned char *)auth, sizeof(auth), &alen,
                              (const unsigned char *)cred, (size_t)n) != 0)
        return VB_EINVAL;
    memset(cred, 0, sizeof(cred));
    /* The base path of the API URL, without a trailing slash. */
    size_t blen = strlen(u->target);
    while (blen > 0 && u->target[blen - 1] == '/')
        blen--;
    char *body = NULL;
    size_t body_len = 0;
    int brc = form_body(req, &body, &body_len);
    if (brc != 0) {
        memset(auth, 0, sizeof(auth));
        return brc;
    }
    char host[300];
    if (u->port_explicit)
        snprintf(host, sizeof(host), strchr(u->host, ':') ? "[%s]:%u" : "%s:%u",
                 u->host, u->port);
    else
        snprintf(host, sizeof(host), strchr(u->host, ':') ? "[%s]" : "%s",
                 u->host);
    size_t cap = blen + strlen(host) + alen + body_len + 512;
    r->request = malloc(cap);
    if (r->request == NULL) {
        free(body);
        memset(auth, 0, sizeof(auth));
        return VB_ENOMEM;
    }
    n = snprintf(r->request, cap,
                 "POST %.*s/2010-04-01/Accounts/%s/Calls/%s.json HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "Authorization: Basic %s\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n"
                 "Accept: application/json\r\n"
                 "User-Agent: voxbridge\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 (int)blen, u->target, req->account_sid, req->call_sid, host,
                 auth, body_len, body);
    memset(auth, 0, sizeof(auth));
    free(body);
    if (n < 0 || (size_t)n >= cap)
        return VB_EINVAL;
    r->request_len = (size_t)n;
    return 0;
}

int vb_twilio_rest_hangup(uv_loop_t *loop, const vb_twilio_rest_req_t *req,
                          vb_twilio_rest_cb cb, void *ud)
{
    if (loop == NULL || req == NULL || cb == NULL || req->api_url == NULL ||
        !sid_ok(req->account_sid) || !sid_ok(req->call_sid) ||
        (req->api_key != NULL && *req->api_key != '\0' &&
         !sid_ok(req->api_key)) ||
        req->auth_token == NULL || *req->auth_token == '\0')
        return VB_EINVAL;
    vb_ws_url_t u;
    if (vb_ws_url_parse_http(req->api_url, &u) != 0)
        return VB_EINVAL;
    if (u.secure && req->tls == NULL)
        return VB_ECONFIG;
    rest_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return VB_ENOMEM;
    int rc = build_request(r, &u, req);
    if (rc != 0)
        goto fail;
    r->loop = loop;
    r->cb = cb;
    r->ud = ud;
    snprintf(r->call_sid, sizeof(r->call_sid), "%s", req->call_sid);
    llhttp_settings_init(&r->settings);
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_message_complete = on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;
    if (u.secure)
        rc = vb_tls_connect(loop, req->tls, u.host, u.port, NULL, r->call_sid,
                            &r->t);
    else
        rc = vb_tcp_connect(loop, u.host, u.port, &r->t);
    if (rc != 0)
        goto fail;
    if ((rc = vb_transport_write(r->t, r->request, r->request_len)) != 0) {
        vb_transport_close(r->t);
        goto fail;
    }
    vb_transport_set_handler(r->t, on_read, on_event, r);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timeout,
                   req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS, 0);
    return 0;
fail:
    free(r->request);
    free(r);
    return rc;
}

/* ---- the response handling alone ---- */

static void parse_only_done(int status, void *ud)
{
    *(int *)ud = status;
}

int vb_twilio_rest_parse_response(const char *data, size_t len, size_t chunk)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return VB_ESYS;
    rest_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        uv_loop_close(&loop);
        return VB_ENOMEM;
    }
    int status = VB_ECLOSED;
    /* As vb_twilio_rest_hangup() sets a request up, without a transport
     * (closing none is a no-op). */
    r->loop = &loop;
    r->cb = parse_only_done;
    r->ud = &status;
    snprintf(r->call_sid, sizeof(r->call_sid), "-");
    llhttp_settings_init(&r->settings);
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_message_complete = on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;
    uv_timer_init(&loop, &r->timer);
    r->timer.data = r;
    if (chunk == 0)
        chunk = len > 0 ? len : 1;
    for (size_t off = 0; off < len && !r->done; off += chunk)
        on_read(NULL, (const uint8_t *)data + off,
                len - off < chunk ? len - off : chunk, r);
    if (!r->done)
        on_event(NULL, VB_TRANSPORT_EOF, 0, r);
    /* finish() has closed the timer; its close callback frees r. */
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return status;
}
