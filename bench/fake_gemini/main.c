/* SPDX-License-Identifier: MIT */
/*
 * vb-fake-gemini: a strict local Gemini Live server for tests and benches.
 *
 *   vb-fake-gemini --listen HOST:PORT [--api-key KEY] [--cert FILE --key FILE]
 *                  [--mode echo|tone|script] [--script FILE] [--log FILE]
 *                  [--setup-delay-ms N] [--first-audio-delay-ms N]
 *                  [--lifetime-s N] [--goaway-lead-ms N] [--tone-ms N]
 *                  [--tone-hz N] [--vad-threshold RMS] [--style 2.5|3.1]
 *                  [--model ID]... [--fault MODE [--fault-conn N]]
 *
 * --fault stall|stall-after:MS|die-after-setup|garbage|reject-401|reject-403|
 * goaway-before-setup makes the service misbehave (on the N-th connection
 * only with --fault-conn N):
 * stall: after setupComplete it stops reading the socket and writes
 * nothing (pings go unanswered, the client's backlog grows);
 * stall-after:MS: the same, MS ms after setupComplete (mid-call, once
 * audio has flowed both ways; a response being sent stops); die: a 1011
 * close right after every setupComplete; garbage: after setupComplete only
 * messages that are not JSON; reject-401/403: the WebSocket upgrade is
 * refused with that HTTP status, as for a bad key at the front end;
 * goaway-before-setup: goAway (timeLeft 2s) just before setupComplete, and
 * the close 2 s later. The intermittent 1008 closes ("Operation is not
 * implemented, or supported, or enabled.", "Requested entity was not
 * found.") are played with a --script "close" event.
 *
 * Prints "listening on HOST:PORT" (the bound port when PORT is 0) once it
 * accepts connections. TLS when --cert/--key are given, plain otherwise.
 * This file: options, the listener, the HTTP upgrade (path and API key
 * checks) and the JSONL log of every client message; the protocol itself
 * is in live.c.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bench/fake_gemini/fake_gemini.h"
#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "net/tcp.h"

#define MAX_MESSAGE (16u * 1024u * 1024u)

/* The API versions the SDKs build the path from: v1beta (the default of
 * older SDKs), v1 (the default of @google/genai 3.x) and v1alpha (and its
 * ephemeral-token method). */
static const char *const paths[] = {
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService."
    "BidiGenerateContent",
    "/ws/google.ai.generativelanguage.v1.GenerativeService."
    "BidiGenerateContent",
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService."
    "BidiGenerateContent",
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService."
    "BidiGenerateContentConstrained",
};

typedef struct up {
    fg_server_t *srv;
    vb_transport_t *t;
    vb_http_session_t *http;
    int id;
    const char *auth; /* result of the key check; NULL: bad key */
} up_t;

void fg_log(fg_server_t *srv, int conn, cJSON *o)
{
    if (srv->log == NULL || o == NULL) {
        cJSON_Delete(o);
        return;
    }
    cJSON *line = cJSON_CreateObject();
    cJSON_AddNumberToObject(line, "t",
                            (double)(uv_now(srv->loop) - srv->t0_ms));
    cJSON_AddNumberToObject(line, "conn", conn);
    cJSON *it = o->child;
    while (it != NULL) {
        cJSON *next = it->next;
        cJSON_DetachItemViaPointer(o, it);
        cJSON_AddItemToObject(line, it->string, it);
        it = next;
    }
    cJSON_Delete(o);
    char *s = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (s != NULL) {
        fprintf(srv->log, "%s\n", s);
        fflush(srv->log);
        free(s);
    }
}

/* Value of `name` in a query string, copied into out; false if absent. */
static bool query_param(const char *q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    while (q != NULL && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            size_t vl = len - nl - 1;
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, q + nl + 1, vl);
            out[vl] = '\0';
            return true;
        }
        q = amp ? amp + 1 : NULL;
    }
    return false;
}

static const char *check_auth(fg_server_t *srv, const vb_http_req_t *req)
{
    if (srv->o.api_key == NULL)
        return "none";
    const char *h = vb_http_req_header(req, "x-goog-api-key");
    if (h != NULL)
        return strcmp(h, srv->o.api_key) == 0 ? "header" : NULL;
    h = vb_http_req_header(req, "authorization");
    if (h != NULL && strncasecmp(h, "Token ", 6) == 0)
        return strcmp(h + 6, srv->o.api_key) == 0 ? "token" : NULL;
    char v[512];
    if (query_param(req->query, "key", v, sizeof(v)) ||
        query_param(req->query, "access_token", v, sizeof(v)))
        return strcmp(v, srv->o.api_key) == 0 ? "query" : NULL;
    return NULL;
}

static void on_http(void *ud, const vb_http_req_t *req, vb_http_resp_t *resp)
{
    up_t *u = ud;
    fg_server_t *srv = u->srv;
    /* Both SDKs connect to "//ws/...": accept one extra leading slash. */
    const char *p = req->target;
    size_t plen = req->path_len;
    if (plen >= 2 && p[0] == '/' && p[1] == '/') {
        p++;
        plen--;
    }
    bool path_ok = false;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (plen == strlen(paths[i]) && strncmp(p, paths[i], plen) == 0)
            path_ok = true;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "http");
    cJSON_AddStringToObject(o, "target_path", req->target);
    const char *key = vb_http_req_header(req, "sec-websocket-key");
    const char *ver = vb_http_req_header(req, "sec-websocket-version");
    const char *upg = vb_http_req_header(req, "upgrade");
    resp->close = true;
    resp->content_type = "text/plain";
    if (!path_ok) {
        resp->status = 404;
        resp->body = "not found\n";
        resp->body_len = 10;
    } else if (!req->upgrade || upg == NULL ||
               strcasecmp(upg, "websocket") != 0 || key == NULL ||
               ver == NULL || strcmp(ver, "13") != 0) {
        resp->status = 400;
        resp->body = "websocket upgrade required\n";
        resp->body_len = 27;
    } else if (fg_fault_on(srv, u->id) &&
               (srv->o.fault == FG_FAULT_REJECT401 ||
                srv->o.fault == FG_FAULT_REJECT403)) {
        bool f401 = srv->o.fault == FG_FAULT_REJECT401;
        resp->status = f401 ? 401 : 403;
        resp->body = f401 ? "API key not valid\n" : "permission denied\n";
        resp->body_len = strlen(resp->body);
    } else {
        char accept[VB_WS_ACCEPT_LEN + 1];
        if (vb_ws_accept_key(key, accept, sizeof accept) != 0) {
            resp->status = 400;
            resp->body = "bad key\n";
            resp->body_len = 8;
        } else {
            /* A wrong key still gets its 101; the close 1007 follows, as
             * the real service does. */
            u->auth = check_auth(srv, req);
            resp->status = 101;
            resp->close = false;
            resp->upgrade = true;
            resp->content_type = NULL;
            vb_http_resp_header(resp, "Upgrade", "websocket");
            vb_http_resp_header(resp, "Connection", "Upgrade");
            vb_http_resp_header(resp, "Sec-WebSocket-Accept", accept);
        }
    }
    cJSON_AddNumberToObject(o, "status", resp->status);
    if (resp->status == 101)
        cJSON_AddStringToObject(o, "auth", u->auth ? u->auth : "bad");
    fg_log(srv, u->id, o);
}

static void up_free(up_t *u)
{
    vb_http_session_destroy(u->http);
    free(u);
}

static void up_fail(up_t *u)
{
    vb_transport_close(u->t);
    up_free(u);
}

static void up_read(vb_transport_t *t, const uint8_t *data, size_t len,
                    void *ud)
{
    up_t *u = ud;
    vb_http_action_t a = vb_http_session_feed(u->http, (const char *)data, len);
    size_t olen = 0;
    char *out = vb_http_session_take_output(u->http, &olen);
    if (out != NULL) {
        vb_transport_write(t, out, olen);
        free(out);
    }
    if (a == VB_HTTP_CLOSE) {
        vb_transport_shutdown(t);
        vb_transport_close(t);
        up_free(u);
        return;
    }
    if (a != VB_HTTP_DETACH)
        return;
    size_t llen = 0;
    const char *left = vb_http_session_leftover(u->http, &llen);
    fg_server_t *srv = u->srv;
    fg_conn_t *c = fg_live_new(srv, u->id, u->auth);
    if (c == NULL) {
        up_fail(u);
        return;
    }
    vb_ws_config_t cfg = {
        .role = VB_WS_SERVER,
        .max_message = MAX_MESSAGE,
    };
    vb_ws_t *ws = NULL;
    /* Copy the leftover first: the session goes away below. */
    uint8_t *pre = NULL;
    if (llen > 0 && (pre = malloc(llen)) != NULL)
        memcpy(pre, left, llen);
    up_free(u);
    int rc = vb_ws_attach(srv->loop, t, &cfg, fg_live_callbacks(), c, pre,
                          pre ? llen : 0, &ws);
    free(pre);
    fg_live_set_ws(c, rc == 0 ? ws : NULL);
}

static void up_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                     void *ud)
{
    (void)t;
    (void)err;
    if (ev == VB_TRANSPORT_EOF || ev == VB_TRANSPORT_ERROR)
        up_fail(ud);
}

static void on_connection(uv_stream_t *l, int status)
{
    fg_server_t *srv = l->data;
    if (status < 0)
        return;
    uv_tcp_t *tmp = malloc(sizeof(*tmp));
    if (tmp == NULL)
        return;
    uv_tcp_init(srv->loop, tmp);
    if (uv_accept(l, (uv_stream_t *)tmp) != 0) {
        uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
        return;
    }
    uv_os_fd_t fd;
    int dupfd = uv_fileno((uv_handle_t *)tmp, &fd) == 0 ? dup(fd) : -1;
    uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
    vb_transport_t *t = NULL;
    if (dupfd < 0 || vb_tcp_adopt(srv->loop, dupfd, &t) != 0)
        return;
    if (srv->tls != NULL) {
        vb_transport_t *tt = NULL;
        if (vb_tls_wrap(srv->loop, srv->tls, t, NULL, "fake-gemini", &tt) != 0)
            return;
        t = tt;
    }
    up_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        vb_transport_close(t);
        return;
    }
    u->srv = srv;
    u->t = t;
    u->id = ++srv->next_conn;
    vb_http_session_cfg_t hc = {.handler = on_http, .ud = u};
    vb_http_limits_default(&hc.limits);
    if (vb_http_session_create(&hc, &u->http) != 0) {
        up_fail(u);
        return;
    }
    vb_transport_set_handler(t, up_read, up_event, u);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vb-fake-gemini --listen HOST:PORT [--api-key KEY]\n"
            "       [--cert FILE --key FILE] [--mode echo|tone|script]\n"
            "       [--script FILE] [--log FILE] [--timing FILE]\n"
            "       [--setup-delay-ms N]\n"
            "       [--first-audio-delay-ms N] [--lifetime-s N]\n"
            "       [--goaway-lead-ms N] [--tone-ms N] [--tone-hz N]\n"
            "       [--vad-threshold RMS] [--style 2.5|3.1] [--model ID]...\n"
            "       [--fault stall|stall-after:MS|die-after-setup|garbage|\n"
            "        reject-401|reject-403|goaway-before-setup]\n"
            "       [--fault-conn N]\n");
}

static int int_arg(const char *flag, const char *v, int lo, int hi)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "vb-fake-gemini: bad value for %s: %s\n", flag, v);
        exit(2);
    }
    return (int)x;
}

int main(int argc, char **argv)
{
    static fg_server_t srv;
    fg_opts_t *o = &srv.o;
    o->mode = FG_ECHO;
    o->goaway_lead_ms = -1;
    o->tone_ms = 1000;
    o->tone_hz = 440;
    o->vad_threshold = 500;
    const char *listen = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--listen") == 0)
            listen = v;
        else if (strcmp(a, "--api-key") == 0)
            o->api_key = v;
        else if (strcmp(a, "--cert") == 0)
            o->cert = v;
        else if (strcmp(a, "--key") == 0)
            o->key = v;
        else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "echo") == 0)
                o->mode = FG_ECHO;
            else if (strcmp(v, "tone") == 0)
                o->mode = FG_TONE;
            else if (strcmp(v, "script") == 0)
                o->mode = FG_SCRIPT;
            else {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(a, "--script") == 0) {
            o->script = v;
            o->mode = FG_SCRIPT;
        } else if (strcmp(a, "--log") == 0)
            o->log_path = v;
        else if (strcmp(a, "--timing") == 0)
            o->timing_path = v;
        else if (strcmp(a, "--setup-delay-ms") == 0)
            o->setup_delay_ms = int_arg(a, v, 0, 600000);
        else if (strcmp(a, "--first-audio-delay-ms") == 0)
            o->first_audio_delay_ms = int_arg(a, v, 0, 600000);
        else if (strcmp(a, "--lifetime-s") == 0)
            o->lifetime_s = int_arg(a, v, 0, 86400);
        else if (strcmp(a, "--goaway-lead-ms") == 0)
            o->goaway_lead_ms = int_arg(a, v, 0, 3600000);
        else if (strcmp(a, "--tone-ms") == 0)
            o->tone_ms = int_arg(a, v, 20, 60000);
        else if (strcmp(a, "--tone-hz") == 0)
            o->tone_hz = int_arg(a, v, 20, 11000);
        else if (strcmp(a, "--vad-threshold") == 0)
            o->vad_threshold = int_arg(a, v, 1, 32767);
        else if (strcmp(a, "--style") == 0)
            o->style31 = strcmp(v, "3.1") == 0;
        else if (strcmp(a, "--fault") == 0) {
            static const char *const names[] = {
                "none",       "stall",      "die-after-setup",    "garbage",
                "reject-401", "reject-403", "goaway-before-setup"};
            int f = -1;
            for (int k = 0; k < 7; k++)
                if (strcmp(v, names[k]) == 0)
                    f = k;
            if (strncmp(v, "stall-after:", 12) == 0) {
                f = FG_FAULT_STALL_AFTER;
                o->stall_after_ms = int_arg(a, v + 12, 0, 3600000);
            }
            if (f < 0) {
                fprintf(stderr, "vb-fake-gemini: bad --fault %s\n", v);
                return 2;
            }
            o->fault = (fg_fault_t)f;
        } else if (strcmp(a, "--fault-conn") == 0)
            o->fault_conn = int_arg(a, v, 0, 1000000);
        else if (strcmp(a, "--model") == 0) {
            if (o->nmodels < 32)
                o->models[o->nmodels++] = v;
        } else {
            fprintf(stderr, "vb-fake-gemini: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (listen == NULL ||
        vb_config_split_hostport(listen, o->host, sizeof(o->host), &o->port) !=
            0) {
        usage(stderr);
        return 2;
    }
    if ((o->cert == NULL) != (o->key == NULL)) {
        fprintf(stderr, "vb-fake-gemini: --cert and --key go together\n");
        return 2;
    }
    if (o->mode == FG_SCRIPT && o->script == NULL) {
        fprintf(stderr, "vb-fake-gemini: --mode script needs --script\n");
        return 2;
    }
    for (int i = 0; o->nmodels < 32 && fg_default_models[i] != NULL; i++)
        o->models[o->nmodels++] = fg_default_models[i];
    signal(SIGPIPE, SIG_IGN);

    srv.loop = uv_default_loop();
    srv.t0_ms = uv_now(srv.loop);
    if (o->timing_path != NULL &&
        (srv.timing = fopen(o->timing_path, "w")) == NULL) {
        perror(o->timing_path);
        return 2;
    }
    if (o->log_path != NULL && (srv.log = fopen(o->log_path, "w")) == NULL) {
        perror(o->log_path);
        return 1;
    }
    if (o->script != NULL && fg_script_load(&srv, o->script) != 0)
        return 1;
    if (o->cert != NULL &&
        vb_tls_config_server(o->cert, o->key, &srv.tls) != 0) {
        fprintf(stderr, "vb-fake-gemini: cannot load %s / %s\n", o->cert,
                o->key);
        return 1;
    }
    struct sockaddr_storage ss;
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss) != 0) {
        fprintf(stderr, "vb-fake-gemini: bad listen address %s\n", listen);
        return 2;
    }
    uv_tcp_init(srv.loop, &srv.listener);
    srv.listener.data = &srv;
    int r = uv_tcp_bind(&srv.listener, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&srv.listener, 128, on_connection);
    if (r != 0) {
        fprintf(stderr, "vb-fake-gemini: listen on %s: %s\n", listen,
                uv_strerror(r));
        return 1;
    }
    struct sockaddr_storage b;
    int blen = sizeof(b);
    uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&b, &blen);
    int port =
        ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
                                      : ((struct sockaddr_in *)&b)->sin_port);
    if (strchr(o->host, ':') != NULL)
        printf("listening on [%s]:%d\n", o->host, port);
    else
        printf("listening on %s:%d\n", o->host, port);
    fflush(stdout);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    return 0;
}
