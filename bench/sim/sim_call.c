/* SPDX-License-Identifier: MIT */
/*
 * vb-sim: one simulated Twilio call (see bench/sim/sim.h for the DESIGN
 * paragraph and the state machine).
 *
 * Timing. Media ticks run on an absolute schedule: tick n is due at
 * stream start + n * 20 ms and each timer is set for the next due time, so
 * the cadence never drifts; a tick that fires more than 5 ms late is
 * counted (late_ticks). Each tick sends one 160-byte `media` message and
 * plays 160 bytes out of the playout FIFO (silence when it is empty), as
 * Twilio's 8000 bytes/s playout would.
 *
 * Playout model (spec §4.4). Received audio is appended to a byte FIFO;
 * a received mark is stamped with the FIFO's total input at that moment
 * and echoed once playback passes that point (at once if nothing is
 * queued). `clear` drops all queued audio and echoes every pending mark,
 * in order.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <mbedtls/base64.h>

#include "bench/sim/sim.h"
#include "core/clock.h"
#include "core/err.h"
#include "llhttp.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "net/ws.h"

#define TICK_NS        20000000ull
#define FRAME          160
#define MAX_RESP       (256 * 1024)
#define LATE_NS        5000000ull
#define MAX_STREAM_MSG (1024 * 1024)
#define HELD_MAX       1024 /* frames held back (jitter, stalls): 20 s */

typedef enum { S_WEBHOOK, S_TWIML, S_STREAM, S_AFTER, S_DONE } sim_state_t;

typedef struct pending_mark {
    char *name;
    uint64_t pos; /* FIFO input total when it arrived */
} pending_mark_t;

struct sim_call {
    uv_loop_t *loop;
    sim_api_t *api;
    sim_call_opts_t o;
    char *webhook, *token, *account, *from, *to, *ca_file;
    char *status_cb; /* the call status callback (o.status_cb, copied) */
    sim_call_done_cb done;
    void *ud;
    sim_call_result_t r;
    sim_state_t st;
    uint64_t t_begin;
    bool finished, freeing;
    bool cb_wait; /* finished, a status callback still in flight */
    int open_handles;
    uv_timer_t timer, deadline;

    /* Webhook. */
    vb_tls_config_t *tls;
    vb_transport_t *http;
    llhttp_t parser;
    llhttp_settings_t settings;
    char *resp;
    size_t resp_len;
    char hname[64];
    size_t hname_len;
    bool in_ctype;
    char ctype[128];
    size_t ctype_len;
    bool resp_done;
    /* <Stream statusCallback> requests in flight (their answers are
     * read and dropped). */
    struct cb_req {
        sim_call_t *c;
        vb_transport_t *t;
        char first[32]; /* the answer's first bytes: its status line */
        size_t nfirst;
        unsigned call_seq; /* a call status callback: its number (1..) */
        char what[16];
    } cbs[8];
    uint64_t t_answer; /* when the call was answered; 0: not (yet) */
    /* The request under way is the <Connect action>, not the webhook. */
    bool in_action;
    char action_url[1024];

    /* TwiML; the one a REST update replaced stays until the call is freed
     * (`connect` points into it). */
    sim_twiml_t twiml, twiml_old;
    size_t verb;

    /* Stream. */
    vb_ws_t *ws;
    const sim_verb_t *connect;
    uint64_t t_start;
    uint64_t tick;
    uint64_t seq;
    size_t dtmf_next;
    bool hanging_up;
    uint64_t hangup_tick;
    /* Media held back (jitter, stalls), in order: a ring of ticks and
     * when each may go. */
    struct held_frame {
        uint64_t tick, release_ns;
    } held[HELD_MAX];
    size_t held_head, held_len;
    uint64_t last_release_ns;
    uint32_t rng;

    /* Playout FIFO. */
    uint8_t *fifo;
    size_t fifo_head, fifo_len, fifo_cap;
    uint64_t in_total, out_total;
    pending_mark_t *marks;
    size_t nmarks, marks_cap;

    uint8_t *heard;
    size_t heard_len, heard_cap;
};

static void next_verb(sim_call_t *c);
static void post_call_status(sim_call_t *c, unsigned event, const char *status);
static void finish(sim_call_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void vlog(sim_call_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vlog(sim_call_t *c, const char *fmt, ...)
{
    if (!c->o.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    double t = (double)(vb_clock_now_ns() - c->t_begin) / 1e9;
    fprintf(stderr, "[vb-sim %s %8.3f] ", c->r.call_sid, t);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void random_sid(char *out, const char *prefix)
{
    uint8_t b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        memset(b, 0x5a, sizeof b);
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    for (int i = 0; i < 16; i++) {
        out[n + 2 * i] = hex[b[i] >> 4];
        out[n + 2 * i + 1] = hex[b[i] & 15];
    }
    out[n + 32] = '\0';
}

static void protocol_error(sim_call_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void protocol_error(sim_call_t *c, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->r.protocol_errors++;
    if (c->r.error[0] == '\0')
        snprintf(c->r.error, sizeof c->r.error, "protocol error: %s", msg);
    fprintf(stderr, "vb-sim %s: protocol error: %s\n", c->r.call_sid, msg);
}

/* ---- lifecycle ---- */

static void handle_closed(uv_handle_t *h)
{
    sim_call_t *c = h->data;
    if (--c->open_handles == 0 && c->freeing) {
        free(c->webhook);
        free(c->token);
        free(c->account);
        free(c->from);
        free(c->to);
        free(c->ca_file);
        free(c->status_cb);
        free(c->resp);
        free(c->fifo);
        for (size_t i = 0; i < c->nmarks; i++)
            free(c->marks[i].name);
        free(c->marks);
        free(c->heard);
        sim_twiml_free(&c->twiml);
        sim_twiml_free(&c->twiml_old);
        free(c);
    }
}

#define CB_WAIT_MS 2000 /* longest wait for a status callback at the end */

static bool cbs_in_flight(const sim_call_t *c)
{
    for (size_t i = 0; i < sizeof c->cbs / sizeof c->cbs[0]; i++)
        if (c->cbs[i].t != NULL)
            return true;
    return false;
}

static void cbs_close(sim_call_t *c)
{
    for (size_t i = 0; i < sizeof c->cbs / sizeof c->cbs[0]; i++)
        if (c->cbs[i].t != NULL) {
            vb_transport_close(c->cbs[i].t);
            c->cbs[i].t = NULL;
        }
}

static void finish_report(sim_call_t *c);

static void cb_wait_over(uv_timer_t *t)
{
    finish_report(t->data);
}

static void finish(sim_call_t *c, const char *fmt, ...)
{
    if (c->finished)
        return;
    if (fmt != NULL && c->r.error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->r.error, sizeof c->r.error, fmt, ap);
        va_end(ap);
    }
    c->finished = true;
    c->st = S_DONE;
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->deadline);
    if (c->ws != NULL) {
        vb_ws_destroy(c->ws);
        c->ws = NULL;
    }
    if (c->http != NULL) {
        vb_transport_close(c->http);
        c->http = NULL;
    }
    if (c->api != NULL)
        sim_api_unregister(c->api, c);
    c->r.duration_s = (double)(vb_clock_now_ns() - c->t_begin) / 1e9;
    /* The call's final status: not answered (rejected, the webhook
     * failed), or answered and over. */
    if (c->done != NULL)
        post_call_status(
            c, SIM_CALL_EV_COMPLETED,
            c->r.rejected[0] != '\0'
                ? (strcmp(c->r.rejected, "busy") == 0 ? "busy" : "no-answer")
            : c->t_answer == 0 ? "failed"
                               : "completed");
    /* Twilio's status callbacks do not die with the call: one in flight
     * is given a moment to be delivered before the call is reported. */
    if (cbs_in_flight(c) && c->done != NULL) {
        c->cb_wait = true;
        uv_timer_start(&c->deadline, cb_wait_over, CB_WAIT_MS, 0);
        return;
    }
    finish_report(c);
}

/* Reports the finished call (its callbacks delivered or given up). */
static void finish_report(sim_call_t *c)
{
    c->cb_wait = false;
    cbs_close(c);
    c->r.ok = c->r.error[0] == '\0' && c->r.protocol_errors == 0 &&
              (c->r.stream_opened || c->r.hung_up_before_stream);
    if (c->r.ok == false && c->r.error[0] == '\0')
        snprintf(c->r.error, sizeof c->r.error, "no stream was opened");
    vlog(c, "done: %s", c->r.ok ? "ok" : c->r.error);
    if (c->done != NULL)
        c->done(c, c->ud);
}

void sim_call_free(sim_call_t *c)
{
    if (c == NULL)
        return;
    if (!c->finished) {
        c->done = NULL;
        finish(c, "aborted");
    }
    cbs_close(c);
    vb_tls_config_destroy(c->tls);
    c->tls = NULL;
    c->freeing = true;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->deadline, handle_closed);
}

const sim_call_result_t *sim_call_result(const sim_call_t *c)
{
    return &c->r;
}

const uint8_t *sim_call_heard(const sim_call_t *c, size_t *len)
{
    *len = c->heard_len;
    return c->heard;
}

const char *sim_call_account_sid(const sim_call_t *c)
{
    return c->account;
}

/* ---- transports ---- */

static int open_transport(sim_call_t *c, bool secure, const char *host,
                          uint16_t port, vb_transport_t **out)
{
    if (!secure)
        return vb_tcp_connect(c->loop, host, port, out);
    if (c->tls == NULL) {
        int rc = vb_tls_config_client(c->ca_file, &c->tls);
        if (rc < 0)
            return rc;
    }
    return vb_tls_connect(c->loop, c->tls, host, port, host, c->r.call_sid,
                          out);
}

/* ---- webhook ---- */

static int h_on_body(llhttp_t *p, const char *at, size_t len)
{
    sim_call_t *c = p->data;
    if (c->resp_len + len > MAX_RESP)
        return -1;
    char *b = realloc(c->resp, c->resp_len + len + 1);
    if (b == NULL)
        return -1;
    memcpy(b + c->resp_len, at, len);
    c->resp = b;
    c->resp_len += len;
    b[c->resp_len] = '\0';
    return 0;
}

static int h_on_hfield(llhttp_t *p, const char *at, size_t len)
{
    sim_call_t *c = p->data;
    if (c->hname_len + len >= sizeof c->hname)
        len = sizeof c->hname - 1 - c->hname_len;
    memcpy(c->hname + c->hname_len, at, len);
    c->hname_len += len;
    return 0;
}

static int h_on_hfield_done(llhttp_t *p)
{
    sim_call_t *c = p->data;
    c->hname[c->hname_len] = '\0';
    c->in_ctype = strcasecmp(c->hname, "Content-Type") == 0;
    c->hname_len = 0;
    return 0;
}

static int h_on_hvalue(llhttp_t *p, const char *at, size_t len)
{
    sim_call_t *c = p->data;
    if (c->in_ctype) {
        if (c->ctype_len + len >= sizeof c->ctype)
            len = sizeof c->ctype - 1 - c->ctype_len;
        memcpy(c->ctype + c->ctype_len, at, len);
        c->ctype_len += len;
        c->ctype[c->ctype_len] = '\0';
    }
    return 0;
}

static int h_on_done(llhttp_t *p)
{
    sim_call_t *c = p->data;
    c->resp_done = true;
    return HPE_PAUSED;
}

/* The <Connect action> answered: its TwiML replaces what was left. */
static void run_action_twiml(sim_call_t *c, int status)
{
    c->r.action_status = status;
    vlog(c, "<Connect action> answered %d (%s)", status, c->ctype);
    if (status != 200) {
        finish(c, "<Connect action> answered HTTP %d", status);
        return;
    }
    sim_twiml_t t;
    char err[256];
    if (sim_twiml_parse(c->resp != NULL ? c->resp : "", c->resp_len, &t, err,
                        sizeof err) != 0) {
        finish(c, "<Connect action>: %s", err);
        return;
    }
    /* `connect` points into the TwiML it came from: keep that one. */
    sim_twiml_free(&c->twiml_old);
    c->twiml_old = c->twiml;
    c->twiml = t;
    c->verb = 0;
    next_verb(c);
}

static void run_twiml(sim_call_t *c)
{
    int status = c->r.webhook_status;
    if (c->in_action) {
        run_action_twiml(c, status);
        return;
    }
    vlog(c, "webhook answered %d (%s)", status, c->ctype);
    if (status != 200) {
        finish(c, "webhook answered HTTP %d", status);
        return;
    }
    char ct[128];
    snprintf(ct, sizeof ct, "%s", c->ctype);
    ct[strcspn(ct, "; \t")] = '\0';
    if (strcasecmp(ct, "text/xml") != 0 &&
        strcasecmp(ct, "application/xml") != 0 &&
        strcasecmp(ct, "text/html") != 0) {
        finish(c, "webhook Content-Type \"%s\" is not TwiML (text/xml)",
               c->ctype);
        return;
    }
    char err[256];
    if (sim_twiml_parse(c->resp != NULL ? c->resp : "", c->resp_len, &c->twiml,
                        err, sizeof err) != 0) {
        finish(c, "%s", err);
        return;
    }
    if (c->twiml.nverbs > 0 && c->twiml.verbs[0].kind == SIM_VERB_REJECT) {
        /* Not answered: the caller hears a busy tone (or "not in
         * service"), nothing else runs. */
        snprintf(c->r.rejected, sizeof c->r.rejected, "%s",
                 c->twiml.verbs[0].text);
        finish(c, "call rejected (%s)", c->r.rejected);
        return;
    }
    if (c->t_answer == 0) {
        /* An inbound call is answered when its TwiML runs. */
        c->t_answer = vb_clock_now_ns();
        post_call_status(c, SIM_CALL_EV_ANSWERED, "in-progress");
    }
    bool has_connect = false;
    for (size_t i = 0; i < c->twiml.nverbs; i++)
        has_connect |= c->twiml.verbs[i].kind == SIM_VERB_CONNECT;
    if (!has_connect) {
        const char *say = "";
        for (size_t i = 0; i < c->twiml.nverbs; i++)
            if (c->twiml.verbs[i].kind == SIM_VERB_SAY) {
                say = c->twiml.verbs[i].text;
                break;
            }
        finish(c, "TwiML has no <Connect><Stream> (said: \"%.120s\")", say);
        return;
    }
    c->st = S_TWIML;
    c->verb = 0;
    next_verb(c);
}

static void h_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    (void)t;
    sim_call_t *c = ud;
    if (c->resp_done)
        return;
    llhttp_errno_t e = llhttp_execute(&c->parser, (const char *)d, n);
    if (c->resp_done) {
        c->r.webhook_status = llhttp_get_status_code(&c->parser);
        vb_transport_close(c->http);
        c->http = NULL;
        run_twiml(c);
    } else if (e != HPE_OK) {
        finish(c, "webhook response malformed: %s",
               llhttp_get_error_reason(&c->parser));
    }
}

static void h_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                    void *ud)
{
    (void)t;
    sim_call_t *c = ud;
    if (ev == VB_TRANSPORT_ERROR) {
        finish(c, "webhook: %s", vb_strerror(err));
    } else if (ev == VB_TRANSPORT_EOF && !c->resp_done) {
        /* A response without Content-Length ends at EOF. */
        if (llhttp_finish(&c->parser) == HPE_OK && c->resp_done) {
            c->r.webhook_status = llhttp_get_status_code(&c->parser);
            vb_transport_close(c->http);
            c->http = NULL;
            run_twiml(c);
        } else {
            finish(c, "webhook: connection closed before a full response");
        }
    }
}

/* Posts the call's parameters to `url` (the voice webhook, or the
 * <Connect action> with `status` in-progress), signed as Twilio signs. */
static int post_form(sim_call_t *c, const char *url, const char *status)
{
    vb_ws_url_t u;
    if (vb_ws_url_parse_http(url, &u) != 0) {
        finish(c, "bad webhook URL %s (need http:// or https://)", url);
        return -1;
    }
    char calltoken[64], city[] = "", country[] = "US";
    random_sid(calltoken, "CT");
    sim_param_t p[] = {
        {"AccountSid", c->account},
        {"ApiVersion", "2010-04-01"},
        {"CallSid", c->r.call_sid},
        /* An outbound call is answered before its webhook. */
        {"CallStatus", c->o.direction != NULL && strcmp(status, "ringing") == 0
                           ? "in-progress"
                           : status},
        {"CallToken", calltoken},
        {"Called", c->to},
        {"CalledCity", city},
        {"CalledCountry", country},
        {"CalledState", "CA"},
        {"CalledZip", ""},
        {"Caller", c->from},
        {"CallerCity", "SAN FRANCISCO"},
        {"CallerCountry", country},
        {"CallerState", "CA"},
        {"CallerZip", "94105"},
        {"Direction", c->o.direction != NULL ? c->o.direction : "inbound"},
        {"From", c->from},
        {"FromCity", "SAN FRANCISCO"},
        {"FromCountry", country},
        {"FromState", "CA"},
        {"FromZip", "94105"},
        {"StirVerstat", "TN-Validation-Passed-A"},
        {"To", c->to},
        {"ToCity", city},
        {"ToCountry", country},
        {"ToState", "CA"},
        {"ToZip", ""},
    };
    size_t np = sizeof p / sizeof p[0];
    char *body = sim_form_encode(p, np);
    char sig[64] = "";
    if (body == NULL ||
        (c->token[0] != '\0' &&
         sim_sign(c->token, url, p, np, sig, sizeof sig) != 0)) {
        free(body);
        finish(c, "out of memory");
        return -1;
    }
    size_t cap = strlen(body) + 4096;
    char *req = malloc(cap);
    if (req == NULL) {
        free(body);
        finish(c, "out of memory");
        return -1;
    }
    bool defport = u.port == (u.secure ? 443 : 80);
    char hostport[300];
    if (defport)
        snprintf(hostport, sizeof hostport, "%s", u.host);
    else
        snprintf(hostport, sizeof hostport, "%s:%u", u.host, (unsigned)u.port);
    int n = snprintf(req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s\r\n"
                     "User-Agent: TwilioProxy/1.1\r\nAccept: */*\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: %zu\r\n%s%s%s"
                     "I-Twilio-Idempotency-Token: %s\r\n"
                     "Connection: close\r\n\r\n%s",
                     u.target, hostport, strlen(body),
                     sig[0] ? "X-Twilio-Signature: " : "", sig,
                     sig[0] ? "\r\n" : "", c->r.call_sid, body);
    free(body);
    int rc = open_transport(c, u.secure, u.host, u.port, &c->http);
    if (rc == 0)
        rc = vb_transport_write(c->http, req, (size_t)n);
    free(req);
    if (rc < 0) {
        finish(c, "webhook: cannot connect to %s:%u: %s", u.host,
               (unsigned)u.port, vb_strerror(rc));
        return -1;
    }
    llhttp_settings_init(&c->settings);
    c->settings.on_body = h_on_body;
    c->settings.on_header_field = h_on_hfield;
    c->settings.on_header_field_complete = h_on_hfield_done;
    c->settings.on_header_value = h_on_hvalue;
    c->settings.on_message_complete = h_on_done;
    llhttp_init(&c->parser, HTTP_RESPONSE, &c->settings);
    c->parser.data = c;
    vb_transport_set_handler(c->http, h_read, h_event, c);
    vlog(c, "POST %s", url);
    return 0;
}

static void cb_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    (void)t;
    struct cb_req *q = ud;
    size_t room = sizeof q->first - 1 - q->nfirst;
    size_t k = n < room ? n : room;
    memcpy(q->first + q->nfirst, d, k);
    q->nfirst += k;
    q->first[q->nfirst] = '\0';
}

static void cb_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                     void *ud)
{
    struct cb_req *q = ud;
    if ((ev == VB_TRANSPORT_ERROR || ev == VB_TRANSPORT_EOF) && q->t == t) {
        vb_transport_close(t);
        q->t = NULL;
        sim_call_t *c = q->c;
        int status = 0;
        sscanf(q->first, "HTTP/1.%*d %d", &status);
        if (q->call_seq > 0 && q->call_seq == c->r.call_status_callbacks)
            c->r.call_status_http = status;
        /* Twilio logs a callback that was not taken (a debugger event);
         * so does vb-sim, verbose or not. */
        if (status < 200 || status > 299)
            fprintf(stderr, "vb-sim: %s %s callback answered %d%s%s\n",
                    c->r.call_sid, q->what, status, err ? ": " : "",
                    err ? vb_strerror(err) : "");
        else
            vlog(c, "%s callback answered %d", q->what, status);
        if (c->cb_wait && !cbs_in_flight(c)) {
            uv_timer_stop(&c->deadline);
            finish_report(c);
        }
    }
}

/* One of Twilio's callbacks (a call or stream status): the parameters
 * signed as Twilio signs them, POSTed as a form or, with `get`, in the
 * query of a GET; answered or not, the call goes on. Returns the request's
 * slot, or NULL when it could not be sent. */
static struct cb_req *post_callback(sim_call_t *c, const char *url, bool get,
                                    const sim_param_t *p, size_t np,
                                    const char *what)
{
    struct cb_req *q = NULL;
    for (size_t i = 0; i < sizeof c->cbs / sizeof c->cbs[0] && q == NULL; i++)
        if (c->cbs[i].t == NULL)
            q = &c->cbs[i];
    vb_ws_url_t u;
    if (q == NULL || vb_ws_url_parse_http(url, &u) != 0) {
        vlog(c, "%s callback not sent (%s)", what,
             q == NULL ? "too many in flight" : "bad URL");
        return NULL;
    }
    char *form = sim_form_encode(p, np);
    if (form == NULL)
        return NULL;
    /* A GET carries the parameters in its URL, and is signed over it. */
    size_t cap = strlen(url) + strlen(form) + 2048;
    char *full = malloc(cap), *req = malloc(cap);
    char sig[64] = "";
    int n = -1;
    if (full != NULL && req != NULL) {
        snprintf(full, cap, "%s%s%s", url,
                 get ? (strchr(url, '?') != NULL ? "&" : "?") : "",
                 get ? form : "");
        const char *target = u.target;
        char *qtarget = NULL;
        if (get) {
            size_t tl = strlen(u.target) + strlen(form) + 2;
            qtarget = malloc(tl);
            if (qtarget != NULL) {
                snprintf(qtarget, tl, "%s%s%s", u.target,
                         strchr(u.target, '?') != NULL ? "&" : "?", form);
                target = qtarget;
            }
        }
        bool signed_ok =
            c->token[0] == '\0' ||
            (get ? sim_sign(c->token, full, NULL, 0, sig, sizeof sig)
                 : sim_sign(c->token, url, p, np, sig, sizeof sig)) == 0;
        char hostport[300];
        if (u.port == (u.secure ? 443 : 80))
            snprintf(hostport, sizeof hostport, "%s", u.host);
        else
            snprintf(hostport, sizeof hostport, "%s:%u", u.host,
                     (unsigned)u.port);
        if (signed_ok && (!get || qtarget != NULL)) {
            if (get)
                n = snprintf(req, cap,
                             "GET %s HTTP/1.1\r\nHost: %s\r\n"
                             "User-Agent: TwilioProxy/1.1\r\nAccept: */*\r\n"
                             "%s%s%sConnection: close\r\n\r\n",
                             target, hostport,
                             sig[0] ? "X-Twilio-Signature: " : "", sig,
                             sig[0] ? "\r\n" : "");
            else
                n = snprintf(
                    req, cap,
                    "POST %s HTTP/1.1\r\nHost: %s\r\n"
                    "User-Agent: TwilioProxy/1.1\r\nAccept: */*\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    "Content-Length: %zu\r\n%s%s%sConnection: close\r\n\r\n"
                    "%s",
                    target, hostport, strlen(form),
                    sig[0] ? "X-Twilio-Signature: " : "", sig,
                    sig[0] ? "\r\n" : "", form);
        }
        free(qtarget);
    }
    free(form);
    free(full);
    if (n < 0 || (size_t)n >= cap ||
        open_transport(c, u.secure, u.host, u.port, &q->t) != 0) {
        free(req);
        q->t = NULL;
        vlog(c, "%s callback not sent (cannot connect)", what);
        return NULL;
    }
    q->c = c;
    q->nfirst = 0;
    q->first[0] = '\0';
    q->call_seq = 0;
    snprintf(q->what, sizeof q->what, "%s", what);
    vb_transport_set_handler(q->t, cb_read, cb_event, q);
    int rc = vb_transport_write(q->t, req, (size_t)n);
    free(req);
    if (rc < 0) {
        vb_transport_close(q->t);
        q->t = NULL;
        return NULL;
    }
    vlog(c, "%s callback %s %s", what, get ? "GET" : "POST", url);
    return q;
}

/* Twilio's <Stream statusCallback> request for `event` (stream-started,
 * stream-stopped). */
static void post_stream_event(sim_call_t *c, const char *event)
{
    const sim_verb_t *v = c->connect;
    if (v == NULL || v->status_cb == NULL)
        return;
    char ts[32];
    snprintf(ts, sizeof ts, "%.3f", (double)vb_clock_now_ns() / 1e9);
    sim_param_t p[] = {
        {"AccountSid", c->account},     {"CallSid", c->r.call_sid},
        {"StreamEvent", event},         {"StreamName", c->r.stream_sid},
        {"StreamSid", c->r.stream_sid}, {"Timestamp", ts},
    };
    if (post_callback(c, v->status_cb, v->status_cb_get, p,
                      sizeof p / sizeof p[0], event) != NULL)
        c->r.stream_events_sent++;
}

static const char *const call_events[] = {"initiated", "ringing", "answered",
                                          "completed"};

int sim_call_events_parse(const char *s, unsigned *out, char *bad, size_t badsz)
{
    unsigned ev = 0;
    const char *p = s;
    while (*p != '\0') {
        size_t n = strcspn(p, " ,");
        size_t k = 0;
        while (
            n > 0 && k < 4 &&
            (strlen(call_events[k]) != n || strncmp(p, call_events[k], n) != 0))
            k++;
        if (n > 0 && k == 4) {
            snprintf(bad, badsz, "%.*s", (int)(n < 32 ? n : 32), p);
            return -1;
        }
        if (n > 0)
            ev |= 1u << k;
        p += n;
        p += strspn(p, " ,");
    }
    *out = ev;
    return 0;
}

/* The call's status callback for `event` (SIM_CALL_EV_*) with CallStatus
 * `status`, when the options ask for that event. */
static void post_call_status(sim_call_t *c, unsigned event, const char *status)
{
    unsigned want = c->o.status_cb_events != 0 ? c->o.status_cb_events
                                               : SIM_CALL_EV_COMPLETED;
    if (c->status_cb == NULL || (want & event) == 0)
        return;
    int k = __builtin_ctz(event);
    char seq[16], ts[64], secs[24], mins[24];
    snprintf(seq, sizeof seq, "%u", c->r.call_status_callbacks);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    /* Seconds from the answer; Duration is in (started) minutes. */
    uint64_t d = c->t_answer != 0
                     ? (vb_clock_now_ns() - c->t_answer) / 1000000000ull
                     : 0;
    snprintf(secs, sizeof secs, "%llu", (unsigned long long)d);
    snprintf(
        mins, sizeof mins, "%llu",
        (unsigned long long)(c->t_answer != 0 ? (d + 59) / 60 + (d == 0) : 0));
    bool done = event == SIM_CALL_EV_COMPLETED;
    const char *dir = c->o.direction != NULL ? c->o.direction : "inbound";
    sim_param_t p[16] = {
        {"AccountSid", c->account},
        {"ApiVersion", "2010-04-01"},
        {"CallSid", c->r.call_sid},
        {"CallStatus", status},
        {"Called", c->to},
        {"Caller", c->from},
        {"CallbackSource", "call-progress-events"},
        {"Direction", dir},
        {"From", c->from},
        {"SequenceNumber", seq},
        {"Timestamp", ts},
        {"To", c->to},
    };
    size_t np = 12;
    if (done) {
        p[np++] = (sim_param_t){"CallDuration", secs};
        p[np++] = (sim_param_t){"Duration", mins};
    }
    struct cb_req *q = post_callback(c, c->status_cb, c->o.status_cb_get, p, np,
                                     call_events[k]);
    if (q == NULL)
        return;
    c->r.call_status_callbacks++;
    q->call_seq = c->r.call_status_callbacks;
    snprintf(c->r.call_status_last, sizeof c->r.call_status_last, "%s", status);
}

static int post_webhook(sim_call_t *c)
{
    return post_form(c, c->webhook, "ringing");
}

/* Twilio requests the <Connect action> once the stream is over (an
 * absolute path is taken relative to the webhook's origin). */
static void post_action(sim_call_t *c, const char *action)
{
    if (action[0] == '/') {
        const char *w = c->webhook;
        const char *hs = strstr(w, "://");
        size_t ol = hs != NULL ? (size_t)(hs + 3 - w) : 0;
        ol += strcspn(w + ol, "/?");
        snprintf(c->action_url, sizeof c->action_url, "%.*s%s", (int)ol, w,
                 action);
    } else {
        snprintf(c->action_url, sizeof c->action_url, "%s", action);
    }
    free(c->resp);
    c->resp = NULL;
    c->resp_len = 0;
    c->resp_done = false;
    c->ctype[0] = '\0';
    c->ctype_len = 0;
    c->hname_len = 0;
    c->in_action = true;
    c->r.action_requests++;
    post_form(c, c->action_url, "in-progress");
}

/* ---- stream: sending ---- */

static void send_json(sim_call_t *c, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL || c->ws == NULL) {
        free(s);
        return;
    }
    int rc = vb_ws_send_text(c->ws, s, strlen(s));
    free(s);
    if (rc < 0 && rc != VB_ECLOSED)
        finish(c, "stream send failed: %s", vb_strerror(rc));
}

static void add_seq(sim_call_t *c, cJSON *j)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)c->seq++);
    cJSON_AddStringToObject(j, "sequenceNumber", seq);
}

static void send_mark_echo(sim_call_t *c, const char *name)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "mark");
    add_seq(c, j);
    cJSON_AddStringToObject(j, "streamSid", c->r.stream_sid);
    cJSON *m = cJSON_AddObjectToObject(j, "mark");
    cJSON_AddStringToObject(m, "name", name);
    send_json(c, j);
    c->r.marks_echoed++;
}

static void echo_due_marks(sim_call_t *c, bool all)
{
    size_t k = 0;
    while (k < c->nmarks && (all || c->marks[k].pos <= c->out_total)) {
        send_mark_echo(c, c->marks[k].name);
        free(c->marks[k].name);
        k++;
    }
    if (k > 0) {
        memmove(c->marks, c->marks + k, (c->nmarks - k) * sizeof *c->marks);
        c->nmarks -= k;
    }
}

static void send_stop_and_close(sim_call_t *c, const char *why)
{
    if (c->hanging_up || c->ws == NULL)
        return;
    c->hanging_up = true;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "stop");
    add_seq(c, j);
    cJSON_AddStringToObject(j, "streamSid", c->r.stream_sid);
    cJSON *s = cJSON_AddObjectToObject(j, "stop");
    cJSON_AddStringToObject(s, "accountSid", c->account);
    cJSON_AddStringToObject(s, "callSid", c->r.call_sid);
    send_json(c, j);
    vlog(c, "stop (%s)", why);
    if (c->ws != NULL)
        vb_ws_close(c->ws, 1000, "");
    /* on_close of the endpoint ends the stream; if the server never
     * answers, the endpoint's close timeout does. */
}

static void tick_cb(uv_timer_t *t);

static void schedule_tick(sim_call_t *c)
{
    uint64_t due = c->t_start + (c->tick + 1) * TICK_NS;
    if (c->held_len > 0 && c->held[c->held_head].release_ns < due)
        due = c->held[c->held_head].release_ns;
    uint64_t now = vb_clock_now_ns();
    uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
    uv_update_time(c->loop);
    uv_timer_start(&c->timer, tick_cb, ms, 0);
}

/* The caller's frame for `tick` (silence after the audio ends); true
 * when it is quiet throughout. */
static bool frame_at(const sim_call_t *c, uint64_t tick, uint8_t *frame)
{
    size_t off = (size_t)(tick - 1) * FRAME;
    bool quiet = true;
    for (size_t i = 0; i < FRAME; i++) {
        frame[i] = off + i < c->o.mulaw_len ? c->o.mulaw[off + i] : 0xFF;
        int16_t v = sim_mulaw_decode(frame[i]);
        quiet &= v > -64 && v < 64;
    }
    return quiet;
}

/* Sends the media message of `tick`, its sequence number the next one
 * (Twilio numbers messages as they go). */
static void send_frame(sim_call_t *c, uint64_t tick, uint64_t now)
{
    uint8_t frame[FRAME];
    frame_at(c, tick, frame);
    unsigned char b64[FRAME * 2];
    size_t bl = 0;
    if (mbedtls_base64_encode(b64, sizeof b64, &bl, frame, FRAME) != 0) {
        finish(c, "base64 encoding failed");
        return;
    }
    /* Formatted in place (no allocation per frame), in the field order
     * Twilio uses. */
    char msg[FRAME * 2 + 256];
    int ml = snprintf(msg, sizeof msg,
                      "{\"event\":\"media\",\"sequenceNumber\":\"%llu\","
                      "\"media\":{\"track\":\"inbound\",\"chunk\":\"%llu\","
                      "\"timestamp\":\"%llu\",\"payload\":\"%s\"},"
                      "\"streamSid\":\"%s\"}",
                      (unsigned long long)c->seq++, (unsigned long long)tick,
                      (unsigned long long)(tick * 20), (const char *)b64,
                      c->r.stream_sid);
    int src = vb_ws_send_text(c->ws, msg, (size_t)ml);
    if (src < 0 && src != VB_ECLOSED)
        finish(c, "stream send failed: %s", vb_strerror(src));
    if (c->finished)
        return;
    if (c->o.timing != NULL) {
        sim_timing_t *tm = c->o.timing;
        if (tm->nsent < tm->cap_sent)
            tm->sent[tm->nsent] = vb_clock_now_ns();
        tm->nsent++;
    }
    uint64_t due = c->t_start + tick * TICK_NS;
    if (now > due) {
        double held = (double)(now - due) / 1e6;
        if (now - due >= TICK_NS)
            c->r.frames_held++;
        if (held > c->r.max_hold_ms)
            c->r.max_hold_ms = held;
    }
    c->r.frames_sent++;
}

static void send_oldest_held(sim_call_t *c, uint64_t now)
{
    uint64_t tick = c->held[c->held_head].tick;
    c->held_head = (c->held_head + 1) % HELD_MAX;
    c->held_len--;
    send_frame(c, tick, now);
}

/* Sends the held frames whose time has come (all of them: `all`). */
static void release_held(sim_call_t *c, uint64_t now, bool all)
{
    while (c->held_len > 0 && !c->finished &&
           (all || c->held[c->held_head].release_ns <= now))
        send_oldest_held(c, now);
}

static bool in_window(const sim_window_t *w, size_t n, double at_s,
                      double *end_s)
{
    for (size_t i = 0; i < n; i++)
        if (at_s >= w[i].at_s - 1e-9 && at_s < w[i].at_s + w[i].ms / 1000.0) {
            if (end_s != NULL)
                *end_s = w[i].at_s + w[i].ms / 1000.0;
            return true;
        }
    return false;
}

/* When the frame of `tick`, due at `due`, may go: after its jitter, after
 * the stall it falls in, never before the one before it. */
static uint64_t release_time(sim_call_t *c, uint64_t tick, uint64_t due)
{
    uint64_t at = due;
    if (c->o.jitter_ms > 0) {
        c->rng ^= c->rng << 13; /* xorshift32 */
        c->rng ^= c->rng >> 17;
        c->rng ^= c->rng << 5;
        at += (uint64_t)((double)c->rng / 4294967296.0 * c->o.jitter_ms * 1e6);
    }
    double end_s;
    if (in_window(c->o.stalls, c->o.nstalls, (double)(tick - 1) * 0.02,
                  &end_s)) {
        uint64_t end = c->t_start + (uint64_t)(end_s * 1e9);
        if (at < end)
            at = end;
    }
    if (at < c->last_release_ns)
        at = c->last_release_ns;
    c->last_release_ns = at;
    return at;
}

static void tick_cb(uv_timer_t *t)
{
    sim_call_t *c = t->data;
    if (c->st != S_STREAM || c->ws == NULL || c->hanging_up)
        return;
    uint64_t now = vb_clock_now_ns();
    uint64_t due = c->t_start + (c->tick + 1) * TICK_NS;
    if (now < due) {
        release_held(c, now, false);
        if (!c->finished)
            schedule_tick(c); /* timers have ms resolution: not yet */
        return;
    }
    c->tick++;
    if (now - due > LATE_NS)
        c->r.late_ticks++;
    /* Caller audio (silence after the file ends), sent now or held; the
     * frame is made here only to see whether a suppressing leg skips it. */
    uint8_t frame[FRAME];
    if (c->o.suppress_silence && frame_at(c, c->tick, frame)) {
        c->r.frames_suppressed++;
    } else if (in_window(c->o.gaps, c->o.ngaps, (double)(c->tick - 1) * 0.02,
                         NULL)) {
        c->r.frames_gapped++;
    } else {
        uint64_t at = release_time(c, c->tick, due);
        if (c->held_len == HELD_MAX) /* full: the oldest goes now */
            send_oldest_held(c, now);
        size_t k = (c->held_head + c->held_len) % HELD_MAX;
        c->held[k].tick = c->tick;
        c->held[k].release_ns = at;
        c->held_len++;
    }
    release_held(c, now, false);
    if (c->finished)
        return;
    /* Playout: 160 bytes per 20 ms. */
    size_t avail = c->fifo_len < FRAME ? c->fifo_len : FRAME;
    if (c->o.record_heard) {
        if (c->heard_len + FRAME > c->heard_cap) {
            size_t cap = c->heard_cap ? c->heard_cap * 2 : 64 * 1024;
            uint8_t *h = realloc(c->heard, cap);
            if (h != NULL) {
                c->heard = h;
                c->heard_cap = cap;
            }
        }
        if (c->heard_len + FRAME <= c->heard_cap) {
            if (avail > 0)
                memcpy(c->heard + c->heard_len, c->fifo + c->fifo_head, avail);
            memset(c->heard + c->heard_len + avail, 0xFF, FRAME - avail);
            c->heard_len += FRAME;
        }
    }
    c->fifo_head += avail;
    c->fifo_len -= avail;
    c->out_total += avail;
    c->r.bytes_played += avail;
    echo_due_marks(c, false);
    /* DTMF due by now. */
    double t_s = (double)c->tick * 0.02;
    while (c->dtmf_next < c->o.ndtmf &&
           c->o.dtmf[c->dtmf_next].at_s <= t_s + 1e-9) {
        char d[2] = {c->o.dtmf[c->dtmf_next].digit, 0};
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "event", "dtmf");
        cJSON_AddStringToObject(e, "streamSid", c->r.stream_sid);
        add_seq(c, e);
        cJSON *dd = cJSON_AddObjectToObject(e, "dtmf");
        cJSON_AddStringToObject(dd, "track", "inbound_track");
        cJSON_AddStringToObject(dd, "digit", d);
        send_json(c, e);
        c->r.dtmf_sent++;
        c->dtmf_next++;
        vlog(c, "dtmf %s", d);
    }
    if (c->tick >= c->hangup_tick) {
        release_held(c, now, true); /* what the leg still holds goes first */
        if (c->finished)
            return;
        c->r.hung_up_by_sim = true;
        send_stop_and_close(c, "caller hangs up");
        return;
    }
    schedule_tick(c);
}

/* ---- stream: receiving ---- */

static void fifo_push(sim_call_t *c, const uint8_t *d, size_t n)
{
    if (c->fifo_head > 0 && c->fifo_head + c->fifo_len + n > c->fifo_cap) {
        memmove(c->fifo, c->fifo + c->fifo_head, c->fifo_len);
        c->fifo_head = 0;
    }
    if (c->fifo_len + n > c->fifo_cap) {
        size_t cap = c->fifo_cap ? c->fifo_cap * 2 : 64 * 1024;
        while (cap < c->fifo_len + n)
            cap *= 2;
        uint8_t *f = realloc(c->fifo, cap);
        if (f == NULL) {
            finish(c, "out of memory");
            return;
        }
        c->fifo = f;
        c->fifo_cap = cap;
    }
    memcpy(c->fifo + c->fifo_head + c->fifo_len, d, n);
    c->fifo_len += n;
    c->in_total += n;
}

static void ws_message(vb_ws_t *ws, bool text, const uint8_t *d, size_t n,
                       void *ud)
{
    (void)ws;
    sim_call_t *c = ud;
    if (c->finished)
        return;
    if (!text) {
        protocol_error(c,
                       "binary frame (%zu bytes); Twilio accepts text "
                       "frames only (31950)",
                       n);
        return;
    }
    sim_out_msg_t m;
    char err[256];
    if (sim_validate_outbound((const char *)d, n, c->r.stream_sid, &m, err,
                              sizeof err) != 0) {
        protocol_error(c, "%s", err);
        return;
    }
    switch (m.kind) {
    case SIM_OUT_MEDIA:
        if (c->o.timing != NULL) {
            sim_timing_t *tm = c->o.timing;
            uint64_t now = vb_clock_now_ns();
            if (now - tm->last_media >= 200000000u) {
                if (tm->nonset < tm->cap_onset)
                    tm->onset[tm->nonset] = now;
                tm->nonset++;
            }
            tm->last_media = now;
        }
        if (c->r.media_received == 0) {
            c->r.first_audio_ms =
                (double)(vb_clock_now_ns() - c->t_start) / 1e6;
            vlog(c, "first audio after %.1f ms", c->r.first_audio_ms);
        }
        c->r.media_received++;
        c->r.bytes_received += m.audio_len;
        if (m.audio_len % FRAME != 0)
            c->r.odd_sized_media++;
        fifo_push(c, m.audio, m.audio_len);
        break;
    case SIM_OUT_MARK:
        c->r.marks_received++;
        if (c->nmarks == c->marks_cap) {
            size_t cap = c->marks_cap ? c->marks_cap * 2 : 16;
            pending_mark_t *p = realloc(c->marks, cap * sizeof *p);
            if (p == NULL) {
                free(m.mark);
                finish(c, "out of memory");
                return;
            }
            c->marks = p;
            c->marks_cap = cap;
        }
        c->marks[c->nmarks].name = m.mark;
        c->marks[c->nmarks].pos = c->in_total;
        c->nmarks++;
        m.mark = NULL;
        /* Nothing buffered ahead of it: echo at once. */
        echo_due_marks(c, false);
        break;
    case SIM_OUT_CLEAR:
        if (c->o.timing != NULL) {
            sim_timing_t *tm = c->o.timing;
            if (tm->nclear < tm->cap_clear)
                tm->clear[tm->nclear] = vb_clock_now_ns();
            tm->nclear++;
        }
        c->r.clears_received++;
        c->r.bytes_cleared += c->fifo_len;
        c->out_total += c->fifo_len;
        c->fifo_head = c->fifo_len = 0;
        echo_due_marks(c, true);
        vlog(c, "clear");
        break;
    }
    free(m.audio);
    free(m.mark);
}

static void after_stream(sim_call_t *c)
{
    uv_timer_stop(&c->timer);
    c->st = S_AFTER;
    post_stream_event(c, "stream-stopped");
    /* With an action Twilio runs what it answers, never the verbs after
     * </Connect>; not when the caller hung up or a REST update ended or
     * redirected the call. */
    if (c->connect != NULL && c->connect->action != NULL &&
        !c->r.twiml_replaced && !c->r.hung_up_by_sim && !c->r.hung_up_by_rest &&
        c->r.action_requests == 0) {
        post_action(c, c->connect->action);
        return;
    }
    next_verb(c);
}

static void ws_closed(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    sim_call_t *c = ud;
    vb_ws_destroy(ws);
    c->ws = NULL;
    if (c->finished)
        return;
    if (c->st != S_STREAM) {
        /* The upgrade failed. */
        finish(c, "stream upgrade failed: %s (HTTP %d) %s",
               vb_strerror(info->err), info->http_status, info->reason);
        return;
    }
    if (!c->hanging_up) {
        c->r.closed_by_server = true;
        c->r.close_code = info->code_received;
        snprintf(c->r.close_reason, sizeof c->r.close_reason, "%s",
                 info->reason);
        vlog(c, "server closed the stream: %d %s", info->code_received,
             info->reason);
        if (info->err == VB_EPROTO)
            protocol_error(c, "WebSocket protocol violation: %s", info->reason);
        else if (info->code_received != 1000 &&
                 info->code_received != VB_WS_CLOSE_NO_STATUS)
            finish(c, "server closed the stream with %d (%s)",
                   info->code_received, info->reason);
        else if (info->err != 0 && info->err != VB_ECLOSED)
            finish(c, "stream failed: %s", vb_strerror(info->err));
        if (c->finished)
            return;
    } else if (info->err == VB_ETIMEDOUT) {
        protocol_error(c, "server did not answer our close frame");
    }
    after_stream(c);
}

static void ws_opened(vb_ws_t *ws, void *ud)
{
    (void)ws;
    sim_call_t *c = ud;
    c->st = S_STREAM;
    c->r.stream_opened = true;
    random_sid(c->r.stream_sid, "MZ");
    vlog(c, "stream open %s", c->r.stream_sid);
    post_stream_event(c, "stream-started");
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "connected");
    cJSON_AddStringToObject(j, "protocol", "Call");
    cJSON_AddStringToObject(j, "version", "1.0.0");
    send_json(c, j);
    j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "start");
    c->seq = 1;
    add_seq(c, j);
    cJSON *s = cJSON_AddObjectToObject(j, "start");
    cJSON_AddStringToObject(s, "accountSid", c->account);
    cJSON_AddStringToObject(s, "streamSid", c->r.stream_sid);
    cJSON_AddStringToObject(s, "callSid", c->r.call_sid);
    cJSON *tr = cJSON_AddArrayToObject(s, "tracks");
    cJSON_AddItemToArray(tr, cJSON_CreateString("inbound"));
    cJSON *mf = cJSON_AddObjectToObject(s, "mediaFormat");
    cJSON_AddStringToObject(mf, "encoding", "audio/x-mulaw");
    cJSON_AddNumberToObject(mf, "sampleRate", 8000);
    cJSON_AddNumberToObject(mf, "channels", 1);
    cJSON *cp = cJSON_AddObjectToObject(s, "customParameters");
    for (size_t i = 0; i < c->connect->nparams; i++)
        cJSON_AddStringToObject(cp, c->connect->pname[i],
                                c->connect->pvalue[i]);
    cJSON_AddStringToObject(j, "streamSid", c->r.stream_sid);
    send_json(c, j);
    if (c->finished)
        return;
    c->t_start = vb_clock_now_ns();
    c->tick = 0;
    c->rng = c->o.timing_seed != 0 ? c->o.timing_seed : 1;
    double hang = c->o.hangup_after_s;
    if (hang < 0)
        hang = (double)c->o.mulaw_len / 8000.0 + c->o.tail_s;
    c->hangup_tick = (uint64_t)(hang * 50.0 + 0.5);
    if (c->hangup_tick == 0)
        c->hangup_tick = 1;
    schedule_tick(c);
}

static void open_stream(sim_call_t *c, const sim_verb_t *v)
{
    vb_ws_url_t u;
    c->connect = v;
    if (vb_ws_url_parse(v->stream_url, &u) != 0) {
        finish(c, "bad stream url %s", v->stream_url);
        return;
    }
    char sig[64] = "", hdr[128], signed_url[1100];
    const char *headers[3] = {"User-Agent: Twilio.TmeWs/1.0", NULL, NULL};
    /* --upgrade-signature: the forms the sources describe (the exact
     * <Stream url>, a trailing '/', the default port spelled out) or no
     * header at all. */
    if (c->token[0] != '\0' && c->o.upgrade_sig != SIM_UPGRADE_SIG_NONE) {
        if (sim_upgrade_sig_url(c->o.upgrade_sig, v->stream_url, signed_url,
                                sizeof signed_url) != 0 ||
            sim_sign(c->token, signed_url, NULL, 0, sig, sizeof sig) != 0) {
            finish(c, "signing failed");
            return;
        }
        snprintf(hdr, sizeof hdr, "X-Twilio-Signature: %s", sig);
        headers[1] = hdr;
    }
    vb_transport_t *t;
    int rc = open_transport(c, u.secure, u.host, u.port, &t);
    if (rc < 0) {
        finish(c, "stream: cannot connect to %s:%u: %s", u.host,
               (unsigned)u.port, vb_strerror(rc));
        return;
    }
    vb_ws_config_t cfg = {.role = VB_WS_CLIENT,
                          .max_message = MAX_STREAM_MSG,
                          .close_timeout_ms = 3000,
                          .log_id = c->r.call_sid};
    vb_ws_callbacks_t cb = {
        .on_message = ws_message, .on_close = ws_closed, .on_open = ws_opened};
    vlog(c, "upgrade %s (signed over %s)", v->stream_url,
         headers[1] != NULL ? signed_url : "nothing");
    rc =
        vb_ws_connect(c->loop, t, &cfg, &cb, c, v->stream_url, headers, &c->ws);
    if (rc < 0)
        finish(c, "stream: %s", vb_strerror(rc));
}

/* ---- TwiML verbs ---- */

static void verb_timer_cb(uv_timer_t *t)
{
    next_verb(t->data);
}

static void hangup_before_stream_cb(uv_timer_t *t)
{
    sim_call_t *c = t->data;
    c->r.hung_up_before_stream = true;
    c->r.hung_up_by_sim = true;
    finish(c, NULL);
}

static void next_verb(sim_call_t *c)
{
    while (!c->finished && c->verb < c->twiml.nverbs) {
        const sim_verb_t *v = &c->twiml.verbs[c->verb++];
        switch (v->kind) {
        case SIM_VERB_SAY:
            vlog(c, "<Say> %s", v->text);
            if (c->st == S_AFTER) {
                /* What the caller hears once the stream is over. */
                sim_call_result_t *r = &c->r;
                size_t n = strlen(r->said);
                if (r->says_after_stream++ == 0)
                    r->said_after_s =
                        c->t_start != 0
                            ? (double)(vb_clock_now_ns() - c->t_start) / 1e9
                            : 0;
                snprintf(r->said + n, sizeof r->said - n, "%s%s",
                         n > 0 ? " | " : "", v->text ? v->text : "");
            }
            continue;
        case SIM_VERB_PAUSE:
            if (c->o.pause_scale > 0) {
                uv_timer_start(
                    &c->timer, verb_timer_cb,
                    (uint64_t)(v->pause_s * c->o.pause_scale * 1000.0), 0);
                return;
            }
            continue;
        case SIM_VERB_CONNECT:
            if (c->st == S_AFTER || c->r.stream_opened) {
                vlog(c, "second <Connect> not simulated; hanging up");
                finish(c, NULL);
                return;
            }
            if (c->o.hangup_before_stream) {
                /* The caller is gone before the stream opens. */
                vlog(c, "caller hangs up in %.1f s, before the stream",
                     c->o.hangup_before_stream_s);
                uv_timer_start(&c->timer, hangup_before_stream_cb,
                               (uint64_t)(c->o.hangup_before_stream_s * 1000.0),
                               0);
                return;
            }
            open_stream(c, v);
            return;
        case SIM_VERB_HANGUP:
            vlog(c, "<Hangup>");
            finish(c, NULL);
            return;
        case SIM_VERB_DIAL:
            vlog(c, "<Dial> %s: the caller is with a person now", v->text);
            snprintf(c->r.dialed, sizeof c->r.dialed, "%s", v->text);
            c->r.dialed_after_s =
                c->t_start != 0 ? (double)(vb_clock_now_ns() - c->t_start) / 1e9
                                : 0;
            finish(c, NULL);
            return;
        case SIM_VERB_REJECT:
            /* Only the first verb can reject an unanswered call; later
             * Twilio ends an answered call. */
            vlog(c, "<Reject> on an answered call: hanging up");
            finish(c, NULL);
            return;
        case SIM_VERB_OTHER:
            vlog(c, "<%s> not simulated; hanging up", v->name);
            finish(c, NULL);
            return;
        }
    }
    if (!c->finished) {
        vlog(c, "end of TwiML: call ends");
        finish(c, NULL);
    }
}

bool sim_call_answered(const sim_call_t *c)
{
    return c->st != S_WEBHOOK;
}

void sim_call_rest_update(sim_call_t *c, const char *status, bool replace)
{
    c->r.rest_hangups++;
    vlog(c, "REST update: Status=%s%s", status, replace ? " (TwiML)" : "");
    if (c->finished)
        return;
    c->r.hung_up_by_rest = status[0] != '\0';
    if (c->st == S_STREAM && c->ws != NULL) {
        /* Twilio ends the stream (stop, close) and then the call. */
        c->verb = c->twiml.nverbs;
        send_stop_and_close(c, "REST update");
        return;
    }
    finish(c, NULL);
}

void sim_call_rest_twiml(sim_call_t *c, sim_twiml_t *t)
{
    c->r.rest_hangups++;
    vlog(c, "REST update: Twiml (%zu verbs)", t->nverbs);
    if (c->finished) {
        sim_twiml_free(t);
        return;
    }
    sim_twiml_free(&c->twiml_old);
    c->twiml_old = c->twiml;
    c->twiml = *t;
    memset(t, 0, sizeof(*t));
    c->verb = 0;
    c->r.twiml_replaced = true;
    if (c->st == S_STREAM && c->ws != NULL) {
        /* Twilio ends the stream (stop, close), then runs the new TwiML. */
        send_stop_and_close(c, "REST update (Twiml)");
        return;
    }
    if (c->st == S_STREAM) {
        after_stream(c);
        return;
    }
    c->st = S_AFTER;
    next_verb(c);
}

void sim_call_hangup(sim_call_t *c)
{
    if (c->finished)
        return;
    if (c->st == S_STREAM && c->ws != NULL) {
        c->r.hung_up_by_sim = true;
        c->verb = c->twiml.nverbs;
        send_stop_and_close(c, "hang-up requested");
        return;
    }
    finish(c, NULL);
}

static void deadline_cb(uv_timer_t *t)
{
    sim_call_t *c = t->data;
    finish(c, "call timed out");
}

int sim_call_start(uv_loop_t *loop, sim_api_t *api, const sim_call_opts_t *o,
                   sim_call_done_cb done, void *ud, sim_call_t **out)
{
    sim_call_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->r.said_after_s = -1;
    c->r.dialed_after_s = -1;
    c->loop = loop;
    c->api = api;
    c->o = *o;
    c->done = done;
    c->ud = ud;
    c->t_begin = vb_clock_now_ns();
    random_sid(c->r.call_sid, "CA");
    char acct[40];
    random_sid(acct, "AC");
    c->webhook = strdup(o->webhook != NULL ? o->webhook : "");
    c->token = strdup(o->auth_token != NULL ? o->auth_token : "");
    c->account = strdup(o->account_sid != NULL ? o->account_sid : acct);
    c->from = strdup(o->from != NULL ? o->from : "+14155550100");
    c->to = strdup(o->to != NULL ? o->to : "+14155550199");
    c->ca_file = o->ca_file != NULL ? strdup(o->ca_file) : NULL;
    c->status_cb = o->status_cb != NULL ? strdup(o->status_cb) : NULL;
    c->o.status_cb = NULL; /* borrowed: the copy above is used */
    if (c->webhook == NULL || c->token == NULL || c->account == NULL ||
        c->from == NULL || c->to == NULL ||
        (o->status_cb != NULL && c->status_cb == NULL)) {
        free(c->status_cb);
        free(c->ca_file);
        free(c->webhook);
        free(c->token);
        free(c->account);
        free(c->from);
        free(c->to);
        free(c);
        return -1;
    }
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->deadline);
    c->timer.data = c->deadline.data = c;
    c->open_handles = 2;
    double hang = o->hangup_after_s >= 0
                      ? o->hangup_after_s
                      : (double)o->mulaw_len / 8000.0 + o->tail_s;
    double limit = o->timeout_s > 0 ? o->timeout_s : hang + 15.0;
    uv_timer_start(&c->deadline, deadline_cb, (uint64_t)(limit * 1000.0), 0);
    if (api != NULL)
        sim_api_register(api, c, c->r.call_sid);
    *out = c;
    post_call_status(c, SIM_CALL_EV_INITIATED, "initiated");
    post_call_status(c, SIM_CALL_EV_RINGING, "ringing");
    if (o->direction != NULL) {
        /* A placed call is answered before its webhook is requested. */
        c->t_answer = vb_clock_now_ns();
        post_call_status(c, SIM_CALL_EV_ANSWERED, "in-progress");
    }
    post_webhook(c);
    return 0;
}

void sim_call_print_summary(const sim_call_t *c, FILE *f)
{
    const sim_call_result_t *r = &c->r;
    fprintf(
        f,
        "call_sid=%s result=%s stream_sid=%s webhook_status=%d "
        "frames_sent=%llu dtmf_sent=%llu media_received=%llu "
        "bytes_received=%llu bytes_heard=%llu bytes_cleared=%llu "
        "odd_sized_media=%llu marks_received=%llu marks_echoed=%llu "
        "clears=%llu protocol_errors=%llu rest_requests=%llu "
        "ended_by=%s close_code=%d first_audio_ms=%.1f late_ticks=%llu "
        "duration_s=%.3f says_after_stream=%u said_after_s=%.3f "
        "twiml_replaced=%d dialed=%s dialed_after_s=%.3f "
        "action_requests=%u action_status=%d rejected=%s "
        "frames_suppressed=%llu stream_events_sent=%u",
        r->call_sid, r->ok ? "ok" : "fail",
        r->stream_sid[0] ? r->stream_sid : "-", r->webhook_status,
        (unsigned long long)r->frames_sent, (unsigned long long)r->dtmf_sent,
        (unsigned long long)r->media_received,
        (unsigned long long)r->bytes_received,
        (unsigned long long)r->bytes_played,
        (unsigned long long)r->bytes_cleared,
        (unsigned long long)r->odd_sized_media,
        (unsigned long long)r->marks_received,
        (unsigned long long)r->marks_echoed,
        (unsigned long long)r->clears_received,
        (unsigned long long)r->protocol_errors,
        (unsigned long long)r->rest_hangups,
        r->hung_up_by_rest    ? "rest"
        : r->hung_up_by_sim   ? "caller"
        : r->closed_by_server ? "server"
                              : "none",
        r->close_code, r->first_audio_ms, (unsigned long long)r->late_ticks,
        r->duration_s, r->says_after_stream, r->said_after_s, r->twiml_replaced,
        r->dialed[0] ? r->dialed : "-", r->dialed_after_s, r->action_requests,
        r->action_status, r->rejected[0] ? r->rejected : "-",
        (unsigned long long)r->frames_suppressed, r->stream_events_sent);
    fprintf(f, " frames_gapped=%llu frames_held=%llu max_hold_ms=%.1f",
            (unsigned long long)r->frames_gapped,
            (unsigned long long)r->frames_held, r->max_hold_ms);
    fprintf(f,
            " call_status_callbacks=%u call_status_last=%s "
            "call_status_http=%d hung_up_before_stream=%d",
            r->call_status_callbacks,
            r->call_status_last[0] ? r->call_status_last : "-",
            r->call_status_http, r->hung_up_before_stream);
    if (r->says_after_stream > 0)
        fprintf(f, " said=\"%s\"", r->said);
    if (!r->ok)
        fprintf(f, " error=\"%s\"", r->error);
    fputc('\n', f);
}
