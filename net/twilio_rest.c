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

#include <cjson/cJSON.h>
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
    /* A create request: its callback, and the response body so far. */
    vb_twilio_rest_create_cb create_cb;
    char *body;
    size_t body_len;
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
    free(r->body);
    free(r);
}

void vb_twilio_rest_created_parse(const char *body, size_t len,
                                  vb_twilio_rest_created_t *res)
{
    res->sid[0] = '\0';
    res->code = 0;
    res->message[0] = '\0';
    cJSON *j = body != NULL ? cJSON_ParseWithLength(body, len) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return;
    }
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(j, "sid");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (cJSON_IsString(sid) && sid_ok(sid->valuestring))
        snprintf(res->sid, sizeof(res->sid), "%s", sid->valuestring);
    if (cJSON_IsNumber(code) && code->valuedouble >= 0 &&
        code->valuedouble < 1e9)
        res->code = (int)code->valuedouble;
    if (cJSON_IsString(msg))
        snprintf(res->message, sizeof(res->message), "%s", msg->valuestring);
    cJSON_Delete(j);
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
    if (r->create_cb != NULL) {
        vb_twilio_rest_created_t res;
        memset(&res, 0, sizeof(res));
        res.status = status;
        if (status > 0)
            vb_twilio_rest_created_parse(r->body, r->body_len, &res);
        if (status >= 200 && status < 300 && res.sid[0] != '\0')
            vb_log_info(res.sid, "call created through the REST API",
                        "http_status=%d", status);
        else if (status > 0)
            vb_log_warn(NULL, "REST call create refused",
                        "http_status=%d code=%d message=%.200s", status,
                        res.code, res.message);
        else
            vb_log_warn(NULL, "REST call create failed", "err=%s",
                        vb_err_name(status));
        r->create_cb(&res, r->ud);
        uv_close((uv_handle_t *)&r->timer, timer_closed);
        return;
    }
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

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    rest_t *r = p->data;
    if (r->create_cb == NULL || len == 0)
        return 0;
    /* Bounded by VB_TWILIO_REST_MAX_RESPONSE through on_read(). */
    char *b = realloc(r->body, r->body_len + len + 1);
    if (b == NULL)
        return -1;
    memcpy(b + r->body_len, at, len);
    r->body_len += len;
    b[r->body_len] = '\0';
    r->body = b;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    rest_t *r = p->data;
    /* An interim 1xx response is followed by the real one. */
    if (r->status < 200) {
        r->status = 0;
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
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
                         const vb_twilio_rest_req_t *req, const char *form)
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
    int brc = 0;
    if (form != NULL) {
        body_len = strlen(form);
        body = strdup(form);
        if (body == NULL)
            brc = VB_ENOMEM;
    } else {
        brc = form_body(req, &body, &body_len);
    }
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
    char resource[80];
    if (form != NULL)
        snprintf(resource, sizeof(resource), "Calls.json");
    else
        snprintf(resource, sizeof(resource), "Calls/%s.json", req->call_sid);
    size_t cap = blen + strlen(host) + alen + body_len + 512;
    r->request = malloc(cap);
    if (r->request == NULL) {
        free(body);
        memset(auth, 0, sizeof(auth));
        return VB_ENOMEM;
    }
    n = snprintf(r->request, cap,
                 "POST %.*s/2010-04-01/Accounts/%s/%s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "Authorization: Basic %s\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n"
                 "Accept: application/json\r\n"
                 "User-Agent: voxbridge\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 (int)blen, u->target, req->account_sid, resource, host, auth,
                 body_len, body);
    memset(auth, 0, sizeof(auth));
    free(body);
    if (n < 0 || (size_t)n >= cap)
        return VB_EINVAL;
    r->request_len = (size_t)n;
    return 0;
}

static void settings_init(rest_t *r)
{
    llhttp_settings_init(&r->settings);
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_body = on_body;
    r->settings.on_message_complete = on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;
}

static int start(uv_loop_t *loop, const vb_twilio_rest_req_t *req,
                 const char *form, vb_twilio_rest_cb cb,
                 vb_twilio_rest_create_cb create_cb, void *ud)
{
    if (loop == NULL || req == NULL || (cb == NULL && create_cb == NULL) ||
        req->api_url == NULL || !sid_ok(req->account_sid) ||
        (form == NULL && !sid_ok(req->call_sid)) ||
        (form != NULL && strlen(form) > VB_TWILIO_REST_FORM_MAX) ||
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
    int rc = build_request(r, &u, req, form);
    if (rc != 0)
        goto fail;
    r->loop = loop;
    r->cb = cb;
    r->create_cb = create_cb;
    r->ud = ud;
    snprintf(r->call_sid, sizeof(r->call_sid), "%s",
             form == NULL ? req->call_sid : "-");
    settings_init(r);
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

int vb_twilio_rest_hangup(uv_loop_t *loop, const vb_twilio_rest_req_t *req,
                          vb_twilio_rest_cb cb, void *ud)
{
    if (cb == NULL)
        return VB_EINVAL;
    return start(loop, req, NULL, cb, NULL, ud);
}

int vb_twilio_rest_create_call(uv_loop_t *loop, const vb_twilio_rest_req_t *req,
                               const char *form, vb_twilio_rest_create_cb cb,
                               void *ud)
{
    if (cb == NULL || form == NULL)
        return VB_EINVAL;
    return start(loop, req, form, NULL, cb, ud);
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
    settings_init(r);
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
