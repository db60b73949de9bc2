/* SPDX-License-Identifier: MIT */
/*
 * vb-sim outbound calls: the Calls.json create API and the call it places.
 *
 *   POST /2010-04-01/Accounts/{AccountSid}/Calls.json
 *   To, From, Url (or Twiml), Method, StatusCallback, StatusCallbackMethod,
 *   StatusCallbackEvent (repeated), MachineDetection, AsyncAmd,
 *   AsyncAmdStatusCallback, AsyncAmdStatusCallbackMethod
 *
 * validated as Twilio validates them (required To and From, a Url or
 * Twiml, E.164 / sip: / client: addresses, absolute http(s) URLs, known
 * events and detection modes), answered with 201 and a Call resource, or
 * 400 and Twilio's error JSON {code, message, more_info, status}. The
 * call then runs as a simulated callee: signed status callbacks for the
 * events asked (initiated, ringing, answered before the webhook,
 * completed after the call), the webhook (Direction=outbound-api,
 * CallStatus=in-progress), the stream; with detection, the asynchronous
 * AnsweredBy callback a while into the stream.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench/sim/sim.h"
#include "core/err.h"
#include "net/form.h"
#include "net/tcp.h"
#include "net/ws.h"

#define MAX_OUT 64

typedef struct out_call {
    sim_outbound_t *ob;
    sim_call_t *call;
    char sid[40], account[64], to[128], from[128];
    char *amd_cb;
    uv_timer_t amd_timer;
    bool amd_timer_on;
    bool done;
} out_call_t;

struct sim_outbound {
    uv_loop_t *loop;
    sim_api_t *api;
    sim_outbound_opts_t o;
    out_call_t *calls[MAX_OUT];
    size_t ncalls, ndone;
};

/* ---- fire-and-forget signed form POSTs (status callbacks) ---- */

typedef struct post {
    vb_transport_t *t;
    char first[64];
    size_t nfirst;
    char what[32];
    bool verbose;
} post_t;

static void post_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    (void)t;
    post_t *p = ud;
    size_t room = sizeof p->first - 1 - p->nfirst;
    size_t k = n < room ? n : room;
    memcpy(p->first + p->nfirst, d, k);
    p->nfirst += k;
    p->first[p->nfirst] = '\0';
}

static void post_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                       void *ud)
{
    post_t *p = ud;
    if (ev != VB_TRANSPORT_EOF && ev != VB_TRANSPORT_ERROR)
        return;
    int status = 0;
    sscanf(p->first, "HTTP/1.%*d %d", &status);
    if (status < 200 || status > 299)
        fprintf(stderr, "vb-sim: %s callback answered %d%s%s\n", p->what,
                status, err ? " err=" : "", err ? vb_strerror(err) : "");
    else if (p->verbose)
        fprintf(stderr, "vb-sim: %s callback answered %d\n", p->what, status);
    vb_transport_close(t);
    free(p);
}

static void post_form(sim_outbound_t *ob, const char *url,
                      const sim_param_t *params, size_t n, const char *what)
{
    vb_ws_url_t u;
    if (vb_ws_url_parse_http(url, &u) != 0 || u.secure) {
        fprintf(stderr, "vb-sim: %s callback %s: only http:// simulated\n",
                what, url);
        return;
    }
    char *body = sim_form_encode(params, n);
    char sig[64] = "";
    if (body == NULL ||
        (ob->o.auth_token != NULL && *ob->o.auth_token &&
         sim_sign(ob->o.auth_token, url, params, n, sig, sizeof sig) != 0)) {
        free(body);
        return;
    }
    size_t cap = strlen(body) + strlen(u.target) + 1024;
    char *req = malloc(cap);
    post_t *p = calloc(1, sizeof *p);
    if (req == NULL || p == NULL) {
        free(req);
        free(p);
        free(body);
        return;
    }
    int len = snprintf(req, cap,
                       "POST %s HTTP/1.1\r\nHost: %s:%u\r\n"
                       "User-Agent: TwilioProxy/1.1\r\nAccept: */*\r\n"
                       "Content-Type: application/x-www-form-urlencoded\r\n"
                       "Content-Length: %zu\r\n%s%s%sConnection: close\r\n\r\n"
                       "%s",
                       u.target, u.host, (unsigned)u.port, strlen(body),
                       sig[0] ? "X-Twilio-Signature: " : "", sig,
                       sig[0] ? "\r\n" : "", body);
    free(body);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->verbose = ob->o.verbose;
    if (vb_tcp_connect(ob->loop, u.host, u.port, &p->t) != 0) {
        free(req);
        free(p);
        return;
    }
    vb_transport_set_handler(p->t, post_read, post_event, p);
    if (vb_transport_write(p->t, req, (size_t)len) != 0) {
        vb_transport_close(p->t);
        free(p);
    }
    free(req);
}

/* ---- the call ---- */

static void amd_fire(uv_timer_t *t)
{
    out_call_t *oc = t->data;
    if (oc->done)
        return;
    sim_param_t p[] = {
        {"AccountSid", oc->account},
        {"AnsweredBy", oc->ob->o.answered_by},
        {"CallSid", oc->sid},
        {"MachineDetectionDuration", "2100"},
    };
    post_form(oc->ob, oc->amd_cb, p, sizeof p / sizeof p[0], "amd");
}

static void amd_closed(uv_handle_t *h)
{
    (void)h;
}

static void call_done(sim_call_t *c, void *ud)
{
    out_call_t *oc = ud;
    oc->done = true;
    if (oc->amd_timer_on) {
        uv_timer_stop(&oc->amd_timer);
        uv_close((uv_handle_t *)&oc->amd_timer, amd_closed);
        oc->amd_timer_on = false;
    }
    sim_call_print_summary(c, stdout);
    fflush(stdout);
    sim_outbound_t *ob = oc->ob;
    ob->ndone++;
    if (ob->o.done != NULL)
        ob->o.done(ob, ob->o.done_ud);
}

size_t sim_outbound_done(const sim_outbound_t *ob)
{
    return ob->ndone;
}

static bool addr_ok(const char *s)
{
    size_t n = strlen(s);
    if (strncasecmp(s, "sip:", 4) == 0)
        return n > 4 && strchr(s, '@') != NULL;
    if (strncmp(s, "client:", 7) == 0)
        return n > 7;
    if (n < 3 || n > 16 || s[0] != '+')
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return s[1] != '0';
}

static bool url_ok(const char *s)
{
    vb_ws_url_t u;
    return vb_ws_url_parse_http(s, &u) == 0;
}

#define FAIL(st, cd, ...)                  \
    do {                                   \
        *status = (st);                    \
        *code = (cd);                      \
        snprintf(msg, msgsz, __VA_ARGS__); \
        goto out;                          \
    } while (0)

int sim_outbound_create(sim_outbound_t *ob, const char *account,
                        const char *body, size_t len, char **json, int *code,
                        char *msg, size_t msgsz)
{
    int st = 0;
    int *status = &st;
    *json = NULL;
    *code = 0;
    msg[0] = '\0';
    vb_form_t f = {0};
    out_call_t *oc = NULL;
    if (vb_form_parse(&f, body, len, 0) != 0)
        FAIL(400, 20001, "Unable to parse the request body");
    const char *to = vb_form_get(&f, "To"), *from = vb_form_get(&f, "From");
    const char *url = vb_form_get(&f, "Url"), *tw = vb_form_get(&f, "Twiml");
    const char *method = vb_form_get(&f, "Method");
    const char *scb = vb_form_get(&f, "StatusCallback");
    const char *scm = vb_form_get(&f, "StatusCallbackMethod");
    const char *md = vb_form_get(&f, "MachineDetection");
    const char *amd = vb_form_get(&f, "AsyncAmd");
    const char *amdcb = vb_form_get(&f, "AsyncAmdStatusCallback");
    if (to == NULL || *to == '\0')
        FAIL(400, 21201, "No 'To' number is specified");
    if (!addr_ok(to))
        FAIL(400, 21211, "Invalid 'To' Phone Number: %.64s", to);
    if (from == NULL || *from == '\0')
        FAIL(400, 21213, "No 'From' number is specified");
    if (!addr_ok(from))
        FAIL(400, 21212, "Invalid From Number (caller ID): %.64s", from);
    if ((url == NULL || *url == '\0') && (tw == NULL || *tw == '\0'))
        FAIL(400, 21205, "Url parameter is required");
    if (url != NULL && tw != NULL)
        FAIL(400, 21220, "Url and Twiml are mutually exclusive");
    if (tw != NULL)
        FAIL(400, 20001, "vb-sim: Twiml= call creation is not simulated");
    if (!url_ok(url))
        FAIL(400, 21205, "Url is not a valid URL: %.100s", url);
    if (method != NULL && strcmp(method, "POST") && strcmp(method, "GET"))
        FAIL(400, 21207, "Method must be GET or POST");
    if (method != NULL && strcmp(method, "POST") != 0)
        FAIL(400, 20001, "vb-sim: only Method=POST is simulated");
    if (scb != NULL && !url_ok(scb))
        FAIL(400, 21609, "StatusCallback is not a valid URL");
    if (scm != NULL && strcmp(scm, "POST") && strcmp(scm, "GET"))
        FAIL(400, 21608, "StatusCallbackMethod must be GET or POST");
    if (md != NULL && strcmp(md, "Enable") && strcmp(md, "DetectMessageEnd"))
        FAIL(400, 21650, "MachineDetection must be Enable or DetectMessageEnd");
    if (amd != NULL && strcmp(amd, "true") && strcmp(amd, "false"))
        FAIL(400, 21651, "AsyncAmd must be true or false");
    if (amdcb != NULL && !url_ok(amdcb))
        FAIL(400, 21652, "AsyncAmdStatusCallback is not a valid URL");
    if (ob->o.unreachable != NULL && strcmp(to, ob->o.unreachable) == 0)
        FAIL(400, 21215,
             "Account not authorized to call %.64s. Perhaps you need to "
             "enable some international permissions",
             to);
    if (ob->ncalls >= MAX_OUT)
        FAIL(429, 20429, "Too Many Requests");
    oc = calloc(1, sizeof *oc);
    if (oc == NULL)
        FAIL(500, 20500, "Internal Server Error");
    oc->ob = ob;
    unsigned evs = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (strcmp(f.pairs[i].name, "StatusCallbackEvent") != 0)
            continue;
        /* One event per pair, or several separated by spaces. */
        unsigned ev;
        char bad[40];
        if (sim_call_events_parse(f.pairs[i].value, &ev, bad, sizeof bad) !=
            0) {
            free(oc);
            oc = NULL;
            FAIL(400, 21626, "Invalid StatusCallbackEvent: %.32s", bad);
        }
        evs |= ev;
    }
    snprintf(oc->account, sizeof oc->account, "%s", account);
    snprintf(oc->to, sizeof oc->to, "%s", to);
    snprintf(oc->from, sizeof oc->from, "%s", from);
    bool detect = md != NULL && amd != NULL && strcmp(amd, "true") == 0;
    oc->amd_cb = detect && amdcb != NULL ? strdup(amdcb) : NULL;
    sim_call_opts_t co = ob->o.call;
    co.webhook = url;
    co.account_sid = account;
    co.auth_token = ob->o.auth_token;
    co.from = from;
    co.to = to;
    co.direction = "outbound-api";
    co.status_cb = scb;
    co.status_cb_get = scm != NULL && strcmp(scm, "GET") == 0;
    co.status_cb_events = evs; /* 0: completed only, Twilio's default */
    if (sim_call_start(ob->loop, ob->api, &co, call_done, oc, &oc->call) != 0) {
        free(oc->amd_cb);
        free(oc);
        oc = NULL;
        FAIL(500, 20500, "Internal Server Error");
    }
    snprintf(oc->sid, sizeof oc->sid, "%s",
             sim_call_result(oc->call)->call_sid);
    ob->calls[ob->ncalls++] = oc;
    /* Placed: its status callbacks and webhook are on their way (the
     * call sends them), detection comes a while into the stream. */
    if (oc->amd_cb != NULL && ob->o.answered_by != NULL) {
        uv_timer_init(ob->loop, &oc->amd_timer);
        oc->amd_timer.data = oc;
        oc->amd_timer_on = true;
        uv_timer_start(&oc->amd_timer, amd_fire,
                       (uint64_t)(ob->o.amd_after_s * 1000.0), 0);
    }
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"sid\":\"%s\",\"account_sid\":\"%s\",\"to\":\"%s\","
             "\"from\":\"%s\",\"status\":\"queued\",\"direction\":"
             "\"outbound-api\",\"api_version\":\"2010-04-01\",\"answered_by\":"
             "null,\"uri\":\"/2010-04-01/Accounts/%s/Calls/%s.json\"}",
             oc->sid, account, oc->to, oc->from, account, oc->sid);
    *json = strdup(buf);
    *status = 201;
out:
    vb_form_free(&f);
    if (*status != 201 && *json == NULL) {
        char more[80];
        snprintf(more, sizeof more, "https://www.twilio.com/docs/errors/%d",
                 *code);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "code", *code);
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddStringToObject(e, "more_info", more);
        cJSON_AddNumberToObject(e, "status", *status);
        *json = cJSON_PrintUnformatted(e);
        cJSON_Delete(e);
    }
    return *status;
}

int sim_outbound_start(uv_loop_t *loop, sim_api_t *api,
                       const sim_outbound_opts_t *o, sim_outbound_t **out)
{
    sim_outbound_t *ob = calloc(1, sizeof *ob);
    if (ob == NULL)
        return -1;
    ob->loop = loop;
    ob->api = api;
    ob->o = *o;
    sim_api_set_outbound(api, ob);
    *out = ob;
    return 0;
}

void sim_outbound_free(sim_outbound_t *ob)
{
    if (ob == NULL)
        return;
    for (size_t i = 0; i < ob->ncalls; i++) {
        out_call_t *oc = ob->calls[i];
        sim_call_free(oc->call);
        free(oc->amd_cb);
        free(oc);
    }
    free(ob);
}
