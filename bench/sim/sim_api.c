/* SPDX-License-Identifier: MIT */
/*
 * vb-sim REST server: the one Twilio API call voxbridge makes (spec §6),
 * POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json with HTTP
 * Basic auth AccountSid:AuthToken or ApiKeySid:ApiKeySecret (a key of the
 * account in the path) and a form body; anything else is 401 (Twilio error
 * 20003), counted. Status=completed (or
 * canceled) hangs the call up; Twiml= (validated like a webhook's answer,
 * at most 4000 characters) replaces its TwiML: the stream ends and the new
 * document runs (its <Say> texts are reported as heard); Url= ends the
 * stream and the call (fetching it is not simulated). Answers Twilio-shaped
 * JSON (the Call resource, or {code, message, more_info, status}). One request
 * per connection.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/base64.h>

#include "bench/sim/sim.h"
#include "llhttp.h"
#include "net/twilio_sig.h"

#define API_MAX_REQ (64 * 1024)
#define TWIML_MAX   4000 /* Twilio's limit on the Twiml parameter */

typedef struct reg {
    char sid[40];
    sim_call_t *call;
} reg_t;

struct sim_api {
    uv_loop_t *loop;
    uv_tcp_t srv;
    int port;
    char token[128];
    /* An API key (SK...) and its secret; key_account "": any account. */
    char key_sid[64], key_secret[128], key_account[64];
    reg_t *regs;
    size_t nregs, cap;
    uint64_t requests, auth_failures;
    bool closing;
    sim_outbound_t *outbound; /* Calls.json creates; NULL: 404 */
};

void sim_api_set_outbound(sim_api_t *api, sim_outbound_t *ob)
{
    api->outbound = ob;
}

typedef struct conn {
    uv_tcp_t h;
    sim_api_t *api;
    llhttp_t parser;
    llhttp_settings_t settings;
    char url[1024];
    size_t url_len;
    char hname[64];
    size_t hname_len;
    bool in_auth;
    char auth[512];
    size_t auth_len;
    char *body;
    size_t body_len;
    size_t total;
    bool done;
} conn_t;

void sim_api_register(sim_api_t *api, sim_call_t *c, const char *call_sid)
{
    if (api->nregs == api->cap) {
        size_t cap = api->cap ? api->cap * 2 : 16;
        reg_t *r = realloc(api->regs, cap * sizeof *r);
        if (r == NULL)
            return;
        api->regs = r;
        api->cap = cap;
    }
    reg_t *r = &api->regs[api->nregs++];
    snprintf(r->sid, sizeof r->sid, "%s", call_sid);
    r->call = c;
}

void sim_api_unregister(sim_api_t *api, sim_call_t *c)
{
    for (size_t i = 0; i < api->nregs; i++)
        if (api->regs[i].call == c) {
            api->regs[i] = api->regs[--api->nregs];
            return;
        }
}

sim_call_t *sim_api_find(sim_api_t *api, const char *call_sid)
{
    for (size_t i = 0; i < api->nregs; i++)
        if (strcmp(api->regs[i].sid, call_sid) == 0)
            return api->regs[i].call;
    return NULL;
}

static void conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    free(c->body);
    free(c);
}

static void write_done(uv_write_t *w, int status)
{
    (void)status;
    uv_close((uv_handle_t *)w->handle, conn_closed);
    free(w);
}

static void respond(conn_t *c, int status, const char *reason, const char *json)
{
    size_t jl = strlen(json);
    size_t cap = jl + 256;
    uv_write_t *w = malloc(sizeof *w + cap);
    if (w == NULL) {
        uv_close((uv_handle_t *)&c->h, conn_closed);
        return;
    }
    char *buf = (char *)(w + 1);
    int n = snprintf(buf, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason, jl, json);
    uv_buf_t b = uv_buf_init(buf, (unsigned)n);
    if (uv_write(w, (uv_stream_t *)&c->h, &b, 1, write_done) != 0) {
        free(w);
        uv_close((uv_handle_t *)&c->h, conn_closed);
    }
}

static void respond_error(conn_t *c, int status, const char *reason, int code,
                          const char *message)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"code\":%d,\"message\":\"%s\",\"more_info\":\"https://"
             "www.twilio.com/docs/errors/%d\",\"status\":%d}",
             code, message, code, status);
    respond(c, status, reason, json);
}

static int hexv(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Finds form field `name` in body and URL-decodes it into out. */
static bool form_get(const char *body, size_t len, const char *name, char *out,
                     size_t outsz)
{
    size_t nl = strlen(name);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fe = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fe - p));
        if (eq != NULL && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
            size_t o = 0;
            for (const char *q = eq + 1; q < fe && o + 1 < outsz; q++) {
                if (*q == '+') {
                    out[o++] = ' ';
                } else if (*q == '%' && fe - q >= 3 && hexv(q[1]) >= 0 &&
                           hexv(q[2]) >= 0) {
                    out[o++] = (char)(hexv(q[1]) * 16 + hexv(q[2]));
                    q += 2;
                } else {
                    out[o++] = *q;
                }
            }
            out[o] = '\0';
            return true;
        }
        p = fe + 1;
    }
    return false;
}

/* Whether the Authorization header is Basic `user:pass`, compared in
 * constant time over the decoded credentials. */
static bool basic_is(const char *header, const char *user, const char *pass)
{
    if (strncasecmp(header, "Basic ", 6) != 0)
        return false;
    const char *b64 = header + 6;
    while (*b64 == ' ')
        b64++;
    unsigned char got[400];
    size_t gl = 0;
    if (mbedtls_base64_decode(got, sizeof got - 1, &gl,
                              (const unsigned char *)b64, strlen(b64)) != 0)
        return false;
    char want[400];
    int wl = snprintf(want, sizeof want, "%s:%s", user, pass);
    if (wl < 0 || (size_t)wl >= sizeof want)
        return false;
    return vb_twilio_sig_equal(got, gl, want, (size_t)wl);
}

/* Twilio's REST auth: AccountSid:AuthToken, or ApiKeySid:ApiKeySecret for
 * a key of the account in the path. Anything else (a wrong secret, a key
 * SID with the auth token, the account SID with the key secret, no or a
 * malformed header) is refused and counted. */
static bool auth_ok(conn_t *c, const char *acct)
{
    sim_api_t *api = c->api;
    if (api->token[0] == '\0' && api->key_sid[0] == '\0')
        return true;
    c->auth[c->auth_len] = '\0';
    bool ok = api->token[0] != '\0' && basic_is(c->auth, acct, api->token);
    if (!ok && api->key_sid[0] != '\0' &&
        (api->key_account[0] == '\0' || strcmp(api->key_account, acct) == 0))
        ok = basic_is(c->auth, api->key_sid, api->key_secret);
    if (!ok)
        api->auth_failures++;
    return ok;
}

static void respond_unauthorized(conn_t *c)
{
    respond_error(c, 401, "Unauthorized", 20003, "Authenticate");
}

/* Calls.json: create a call (sim_outbound.c). */
static void handle_create(conn_t *c, const char *acct)
{
    if (llhttp_get_method(&c->parser) != HTTP_POST) {
        respond_error(c, 405, "Method Not Allowed", 20004,
                      "Method not allowed");
        return;
    }
    if (!auth_ok(c, acct)) {
        respond_unauthorized(c);
        return;
    }
    char *json = NULL, msg[300];
    int code = 0;
    int st = sim_outbound_create(c->api->outbound, acct,
                                 c->body != NULL ? c->body : "", c->body_len,
                                 &json, &code, msg, sizeof msg);
    if (json == NULL) {
        respond_error(c, 500, "Internal Server Error", 20500, "out of memory");
        return;
    }
    respond(c, st,
            st == 201   ? "Created"
            : st == 400 ? "Bad Request"
            : st == 429 ? "Too Many Requests"
                        : "Internal Server Error",
            json);
    free(json);
}

static void handle(conn_t *c)
{
    sim_api_t *api = c->api;
    api->requests++;
    c->url[c->url_len] = '\0';
    char acct[64], sid[64];
    int n = 0;
    if (sscanf(c->url, "/2010-04-01/Accounts/%63[^/]/Calls.json%n", acct, &n) ==
            1 &&
        n > 0 && c->url[n] == '\0' && api->outbound != NULL) {
        handle_create(c, acct);
        return;
    }
    n = 0;
    if (sscanf(c->url, "/2010-04-01/Accounts/%63[^/]/Calls/%63[^./].json%n",
               acct, sid, &n) != 2 ||
        c->url[n] != '\0') {
        respond_error(c, 404, "Not Found", 20404,
                      "The requested resource was not found");
        return;
    }
    if (llhttp_get_method(&c->parser) != HTTP_POST) {
        respond_error(c, 405, "Method Not Allowed", 20004,
                      "Method not allowed");
        return;
    }
    if (!auth_ok(c, acct)) {
        respond_unauthorized(c);
        return;
    }
    sim_call_t *call = sim_api_find(api, sid);
    if (call == NULL || strcmp(sim_call_account_sid(call), acct) != 0) {
        respond_error(c, 404, "Not Found", 20404,
                      "The requested resource was not found");
        return;
    }
    char status[64] = "", twiml[4096] = "", url[1024] = "";
    const char *b = c->body != NULL ? c->body : "";
    bool has_status = form_get(b, c->body_len, "Status", status, sizeof status);
    bool has_twiml = form_get(b, c->body_len, "Twiml", twiml, sizeof twiml);
    bool has_url = form_get(b, c->body_len, "Url", url, sizeof url);
    /* Status=canceled ends only a queued or ringing call: an answered one
     * goes on, the resource unchanged. */
    bool cancel_noop = has_status && strcmp(status, "canceled") == 0 &&
                       sim_call_answered(call);
    if (has_twiml && has_url) {
        respond_error(c, 400, "Bad Request", 21220,
                      "Twiml and Url are mutually exclusive");
        return;
    }
    if (has_status && strcmp(status, "completed") != 0 &&
        strcmp(status, "canceled") != 0) {
        respond_error(c, 400, "Bad Request", 20001,
                      "Status must be completed or canceled");
        return;
    }
    if (!has_status && !has_twiml && !has_url) {
        respond_error(c, 400, "Bad Request", 20001,
                      "Nothing to update (Status, Twiml or Url)");
        return;
    }
    if (has_twiml && strlen(twiml) > TWIML_MAX) {
        respond_error(c, 400, "Bad Request", 21220,
                      "Twiml exceeds 4000 characters");
        return;
    }
    if (cancel_noop) {
        /* Nothing to do: answered below as in-progress. */
    } else if (has_twiml && !has_status) {
        /* Twilio validates the document before it touches the call. */
        sim_twiml_t t;
        char err[256];
        if (sim_twiml_parse(twiml, strlen(twiml), &t, err, sizeof err) != 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "Document parse failure: %s", err);
            respond_error(c, 400, "Bad Request", 12100, msg);
            return;
        }
        sim_call_rest_twiml(call, &t);
    } else {
        sim_call_rest_update(call, has_status ? status : "", has_url);
    }
    char json[512];
    snprintf(json, sizeof json,
             "{\"sid\":\"%s\",\"account_sid\":\"%s\",\"status\":\"%s\","
             "\"direction\":\"inbound\",\"uri\":\"/2010-04-01/Accounts/%s/"
             "Calls/%s.json\"}",
             sid, acct,
             has_status && !cancel_noop ? "completed" : "in-progress", acct,
             sid);
    respond(c, 200, "OK", json);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->url_len + len >= sizeof c->url)
        return -1;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->hname_len + len >= sizeof c->hname)
        len = sizeof c->hname - 1 - c->hname_len;
    memcpy(c->hname + c->hname_len, at, len);
    c->hname_len += len;
    return 0;
}

static int on_hfield_done(llhttp_t *p)
{
    conn_t *c = p->data;
    c->hname[c->hname_len] = '\0';
    c->in_auth = strcasecmp(c->hname, "Authorization") == 0;
    c->hname_len = 0;
    return 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->in_auth) {
        if (c->auth_len + len >= sizeof c->auth)
            return -1;
        memcpy(c->auth + c->auth_len, at, len);
        c->auth_len += len;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    char *b = realloc(c->body, c->body_len + len + 1);
    if (b == NULL)
        return -1;
    memcpy(b + c->body_len, at, len);
    c->body = b;
    c->body_len += len;
    b[c->body_len] = '\0';
    return 0;
}

static int on_done(llhttp_t *p)
{
    conn_t *c = p->data;
    c->done = true;
    return HPE_PAUSED;
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)h;
    b->base = malloc(sz);
    b->len = b->base != NULL ? sz : 0;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (n < 0) {
        free(b->base);
        uv_close((uv_handle_t *)s, conn_closed);
        return;
    }
    c->total += (size_t)n;
    if (n > 0 && !c->done) {
        llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)n);
        if (c->done) {
            uv_read_stop(s);
            handle(c);
        } else if (e != HPE_OK || c->total > API_MAX_REQ) {
            uv_read_stop(s);
            respond_error(c, 400, "Bad Request", 20001, "Malformed request");
        }
    }
    free(b->base);
}

static void on_conn(uv_stream_t *srv, int status)
{
    sim_api_t *api = srv->data;
    if (status < 0)
        return;
    conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->api = api;
    uv_tcp_init(api->loop, &c->h);
    c->h.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->h) != 0) {
        uv_close((uv_handle_t *)&c->h, conn_closed);
        return;
    }
    llhttp_settings_init(&c->settings);
    c->settings.on_url = on_url;
    c->settings.on_header_field = on_hfield;
    c->settings.on_header_field_complete = on_hfield_done;
    c->settings.on_header_value = on_hvalue;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_done;
    llhttp_init(&c->parser, HTTP_REQUEST, &c->settings);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->h, alloc_cb, read_cb);
}

int sim_api_start(uv_loop_t *loop, const char *host, int port,
                  const char *auth_token, sim_api_t **out)
{
    sim_api_t *api = calloc(1, sizeof *api);
    if (api == NULL)
        return -1;
    api->loop = loop;
    snprintf(api->token, sizeof api->token, "%s",
             auth_token != NULL ? auth_token : "");
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        free(api);
        return -1;
    }
    uv_tcp_init(loop, &api->srv);
    api->srv.data = api;
    if (uv_tcp_bind(&api->srv, (struct sockaddr *)&ss, 0) != 0 ||
        uv_listen((uv_stream_t *)&api->srv, 64, on_conn) != 0) {
        uv_close((uv_handle_t *)&api->srv, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(api);
        return -1;
    }
    int len = sizeof ss;
    uv_tcp_getsockname(&api->srv, (struct sockaddr *)&ss, &len);
    api->port =
        ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
    *out = api;
    return 0;
}

int sim_api_port(const sim_api_t *api)
{
    return api->port;
}

uint64_t sim_api_requests(const sim_api_t *api)
{
    return api->requests;
}

uint64_t sim_api_auth_failures(const sim_api_t *api)
{
    return api->auth_failures;
}

void sim_api_set_api_key(sim_api_t *api, const char *account,
                         const char *key_sid, const char *secret)
{
    snprintf(api->key_sid, sizeof api->key_sid, "%s",
             key_sid != NULL ? key_sid : "");
    snprintf(api->key_secret, sizeof api->key_secret, "%s",
             secret != NULL ? secret : "");
    snprintf(api->key_account, sizeof api->key_account, "%s",
             account != NULL ? account : "");
    if (api->key_secret[0] == '\0')
        api->key_sid[0] = '\0';
}

static void api_closed(uv_handle_t *h)
{
    sim_api_t *api = h->data;
    free(api->regs);
    free(api);
}

void sim_api_stop(sim_api_t *api)
{
    if (api == NULL || api->closing)
        return;
    api->closing = true;
    uv_close((uv_handle_t *)&api->srv, api_closed);
}
