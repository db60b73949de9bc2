/* SPDX-License-Identifier: MIT */
/*
 * vb-example-app: a small business application for voxbridge, for the
 * tests, the demo and as a worked example (docs/assistants.md).
 *
 *   vb-example-app --listen HOST:PORT --secret SECRET [--max-age-s N]
 *                  [--incoming 204|name:<assistant>|file:<assistant.json>]
 *                  [--store DIR] [--fail-first N] [--fail-status S]
 *                  [--delay-ms N]
 *
 * Every POST must carry a valid X-Voxbridge-Signature: t=<unix>,v1=<hex
 * HMAC-SHA256(secret, "<t>.<raw body>")>, with |now - t| <= --max-age-s
 * (default 300); else 401 {"error": "..."}. The body's "event" decides:
 *   call.incoming  -> --incoming: 204 (use the default), {"assistant":
 *                     "<name>"}, or the assistant object in the file;
 *   tool.call      -> tool "lookup_order" {"order_id"}: the order as JSON,
 *                     or 404 {"error":"order not found"}; other tools 404;
 *   call.ended     -> 200 {"ok":true}; the report is kept in memory (GET
 *                     /reports returns them, in arrival order; ?pretty
 *                     indents them) and, with
 *                     --store DIR, its raw bytes are written to
 *                     DIR/<n>-<CallSid>.json (n counts deliveries from 1),
 *                     its signature header beside it in <n>-<CallSid>.sig.
 * Acting down, for retry tests: --fail-first N answers the first N POSTs
 * with --fail-status (default 500) before looking at them; --delay-ms
 * holds every answer that long (the app is single-threaded: requests
 * wait in turn). A receiver that refuses connections is this program not
 * running. GET /stats: {"requests","accepted","rejected_signature",
 * "failed_on_purpose"}.
 *
 * Prints "listening on HOST:PORT" once it accepts, one line per request,
 * and exits 0 on SIGTERM/SIGINT. Uses only the project's libraries:
 * net/http, cJSON, mbedTLS.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mbedtls/md.h>
#include <uv.h>

#include "core/config.h"
#include "net/http.h"

typedef struct app {
    const char *secret;
    long max_age_s;
    const char *incoming; /* "204", "name:x", "file:path" */
    char *incoming_body;  /* the file's JSON, for file: */
    const char *store;
    long fail_first, fail_status, delay_ms;
    long requests, accepted, bad_sig, failed;
    long deliveries;
    cJSON *reports; /* array */
    uv_signal_t sigterm, sigint;
    vb_http_server_t *srv;
} app_t;

typedef struct order {
    const char *id, *status, *eta;
    int items;
} order_t;

static const order_t orders[] = {
    {"A1001", "shipped", "2026-12-05", 2},
    {"A1002", "processing", "2026-12-09", 1},
    {"A1003", "delivered", "2026-11-28", 3},
};

static void json_resp(vb_http_resp_t *resp, int status, cJSON *o)
{
    resp->status = status;
    resp->content_type = "application/json";
    resp->body_owned = cJSON_PrintUnformatted(o);
    resp->body_len = resp->body_owned ? strlen(resp->body_owned) : 0;
    cJSON_Delete(o);
}

static void error_resp(vb_http_resp_t *resp, int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    json_resp(resp, status, o);
}

/* The receiving side of X-Voxbridge-Signature, as a business writes it:
 * parse t and v1, check the age, recompute, compare in constant time.
 * Returns NULL when valid, else why not. */
static const char *verify(const app_t *a, const char *header, const char *body,
                          size_t len)
{
    if (header == NULL)
        return "missing X-Voxbridge-Signature";
    long long t = -1;
    /* Every v1= (two while voxbridge rotates its key): any may match. */
    char v1[4][65];
    int nv = 0;
    const char *p = header;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        if (strncmp(p, "t=", 2) == 0)
            t = strtoll(p + 2, NULL, 10);
        else if (strncmp(p, "v1=", 3) == 0 && n - 3 == 64 && nv < 4)
            memcpy(v1[nv], p + 3, 64), v1[nv++][64] = '\0';
        p += n;
        if (*p == ',')
            p++;
    }
    if (t < 0 || nv == 0)
        return "malformed X-Voxbridge-Signature";
    long long now = (long long)time(NULL);
    if (now - t > a->max_age_s || t - now > a->max_age_s)
        return "signature too old";
    char ts[32];
    int tn = snprintf(ts, sizeof(ts), "%lld.", t);
    unsigned char mac[32];
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc =
        mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    rc = rc ? rc
            : mbedtls_md_hmac_starts(&ctx, (const unsigned char *)a->secret,
                                     strlen(a->secret));
    rc = rc ? rc
            : mbedtls_md_hmac_update(&ctx, (const unsigned char *)ts,
                                     (size_t)tn);
    rc = rc ? rc
            : mbedtls_md_hmac_update(&ctx, (const unsigned char *)body, len);
    rc = rc ? rc : mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    if (rc != 0)
        return "cannot compute HMAC";
    static const char hex[] = "0123456789abcdef";
    bool ok = false;
    for (int k = 0; k < nv; k++) {
        unsigned diff = 0;
        for (int i = 0; i < 32; i++) {
            diff |= (unsigned)(v1[k][2 * i] ^ hex[mac[i] >> 4]);
            diff |= (unsigned)(v1[k][2 * i + 1] ^ hex[mac[i] & 15]);
        }
        ok |= diff == 0;
    }
    return ok ? NULL : "signature mismatch";
}

static void on_incoming(app_t *a, vb_http_resp_t *resp)
{
    if (strncmp(a->incoming, "name:", 5) == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "assistant", a->incoming + 5);
        json_resp(resp, 200, o);
    } else if (a->incoming_body != NULL) {
        resp->status = 200;
        resp->content_type = "application/json";
        resp->body = a->incoming_body;
        resp->body_len = strlen(a->incoming_body);
    } else {
        resp->status = 204;
    }
}

static void on_tool(const cJSON *body, vb_http_resp_t *resp)
{
    const cJSON *tool = cJSON_GetObjectItemCaseSensitive(body, "tool");
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tool, "name"));
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(tool, "arguments");
    const char *id = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(args, "order_id"));
    if (name == NULL || strcmp(name, "lookup_order") != 0) {
        error_resp(resp, 404, "unknown tool");
        return;
    }
    if (id == NULL) {
        error_resp(resp, 400, "order_id is required");
        return;
    }
    for (size_t i = 0; i < sizeof(orders) / sizeof(orders[0]); i++)
        if (strcmp(orders[i].id, id) == 0) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "order_id", orders[i].id);
            cJSON_AddStringToObject(o, "status", orders[i].status);
            cJSON_AddStringToObject(o, "eta", orders[i].eta);
            cJSON_AddNumberToObject(o, "items", orders[i].items);
            json_resp(resp, 200, o);
            return;
        }
    error_resp(resp, 404, "order not found");
}

static void on_report(app_t *a, const vb_http_req_t *req, const cJSON *body,
                      vb_http_resp_t *resp)
{
    const char *sid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(body, "call"), "sid"));
    a->deliveries++;
    if (a->store != NULL) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%ld-%s.json", a->store, a->deliveries,
                 sid ? sid : "unknown");
        FILE *f = fopen(path, "wb");
        if (f == NULL ||
            fwrite(req->body, 1, req->body_len, f) != req->body_len) {
            if (f != NULL)
                fclose(f);
            error_resp(resp, 500, "cannot store the report");
            return;
        }
        fclose(f);
        /* The signature it came with, for a test's own HMAC check. */
        snprintf(path, sizeof(path), "%s/%ld-%s.sig", a->store, a->deliveries,
                 sid ? sid : "unknown");
        const char *sig = vb_http_req_header(req, "X-Voxbridge-Signature");
        if ((f = fopen(path, "wb")) != NULL) {
            fputs(sig ? sig : "", f);
            fclose(f);
        }
    }
    cJSON_AddItemToArray(a->reports, cJSON_Duplicate(body, true));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", true);
    json_resp(resp, 200, o);
}

static void handle(void *ud, const vb_http_req_t *req, vb_http_resp_t *resp)
{
    app_t *a = ud;
    if (a->delay_ms > 0)
        usleep((useconds_t)a->delay_ms * 1000u);
    if (strcmp(req->method_name, "GET") == 0) {
        if (strncmp(req->target, "/reports", req->path_len) == 0 &&
            req->path_len == 8) {
            if (req->query != NULL && strstr(req->query, "pretty") != NULL) {
                resp->status = 200;
                resp->content_type = "application/json";
                resp->body_owned = cJSON_Print(a->reports);
                resp->body_len =
                    resp->body_owned ? strlen(resp->body_owned) : 0;
            } else {
                json_resp(resp, 200, cJSON_Duplicate(a->reports, true));
            }
        } else if (strncmp(req->target, "/stats", req->path_len) == 0 &&
                   req->path_len == 6) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "requests", (double)a->requests);
            cJSON_AddNumberToObject(o, "accepted", (double)a->accepted);
            cJSON_AddNumberToObject(o, "rejected_signature",
                                    (double)a->bad_sig);
            cJSON_AddNumberToObject(o, "failed_on_purpose", (double)a->failed);
            json_resp(resp, 200, o);
        } else {
            error_resp(resp, 404, "not found");
        }
        return;
    }
    if (strcmp(req->method_name, "POST") != 0) {
        error_resp(resp, 405, "POST only");
        return;
    }
    a->requests++;
    if (a->failed < a->fail_first) {
        a->failed++;
        printf("request path=%.*s status=%ld (failing on purpose)\n",
               (int)req->path_len, req->target, a->fail_status);
        fflush(stdout);
        error_resp(resp, (int)a->fail_status, "failing on purpose");
        return;
    }
    const char *why =
        verify(a, vb_http_req_header(req, "X-Voxbridge-Signature"), req->body,
               req->body_len);
    if (why != NULL) {
        a->bad_sig++;
        printf("request path=%.*s status=401 why=\"%s\"\n", (int)req->path_len,
               req->target, why);
        fflush(stdout);
        error_resp(resp, 401, why);
        return;
    }
    cJSON *body = cJSON_ParseWithLength(req->body, req->body_len);
    const char *ev =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(body, "event"));
    if (ev == NULL) {
        error_resp(resp, 400, "body is not a voxbridge event");
    } else if (strcmp(ev, "call.incoming") == 0) {
        on_incoming(a, resp);
    } else if (strcmp(ev, "tool.call") == 0) {
        on_tool(body, resp);
    } else if (strcmp(ev, "call.ended") == 0) {
        on_report(a, req, body, resp);
    } else {
        error_resp(resp, 400, "unknown event");
    }
    if (resp->status < 300)
        a->accepted++;
    printf("request path=%.*s event=%s status=%d\n", (int)req->path_len,
           req->target, ev ? ev : "?", resp->status);
    fflush(stdout);
    cJSON_Delete(body);
}

static void on_signal(uv_signal_t *s, int sig)
{
    (void)sig;
    app_t *a = s->data;
    vb_http_server_close(a->srv);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b != NULL)
        b[n] = '\0';
    fclose(f);
    return b;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: vb-example-app --listen HOST:PORT --secret SECRET "
            "[--max-age-s N]\n"
            "       [--incoming 204|name:<assistant>|file:<json>] [--store "
            "DIR]\n"
            "       [--fail-first N] [--fail-status S] [--delay-ms N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    app_t a;
    memset(&a, 0, sizeof(a));
    a.max_age_s = 300;
    a.incoming = "204";
    a.fail_status = 500;
    const char *listen = NULL;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        i++;
        if (strcmp(k, "--listen") == 0)
            listen = v;
        else if (strcmp(k, "--secret") == 0)
            a.secret = v;
        else if (strcmp(k, "--max-age-s") == 0)
            a.max_age_s = atol(v);
        else if (strcmp(k, "--incoming") == 0)
            a.incoming = v;
        else if (strcmp(k, "--store") == 0)
            a.store = v;
        else if (strcmp(k, "--fail-first") == 0)
            a.fail_first = atol(v);
        else if (strcmp(k, "--fail-status") == 0)
            a.fail_status = atol(v);
        else if (strcmp(k, "--delay-ms") == 0)
            a.delay_ms = atol(v);
        else
            return usage();
    }
    char host[256];
    int port;
    if (listen == NULL || a.secret == NULL || *a.secret == '\0' ||
        vb_config_split_hostport(listen, host, sizeof(host), &port) != 0 ||
        a.fail_status < 100 || a.fail_status > 599)
        return usage();
    if (strncmp(a.incoming, "file:", 5) == 0) {
        a.incoming_body = slurp(a.incoming + 5);
        cJSON *chk = a.incoming_body ? cJSON_Parse(a.incoming_body) : NULL;
        if (!cJSON_IsObject(chk)) {
            fprintf(stderr, "vb-example-app: %s: not a JSON object\n",
                    a.incoming + 5);
            return 2;
        }
        cJSON_Delete(chk);
    } else if (strcmp(a.incoming, "204") != 0 &&
               strncmp(a.incoming, "name:", 5) != 0) {
        return usage();
    }
    if (a.store != NULL && mkdir(a.store, 0750) != 0 && errno != EEXIST) {
        perror(a.store);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    a.reports = cJSON_CreateArray();
    uv_loop_t *loop = uv_default_loop();
    vb_http_server_cfg_t hc;
    memset(&hc, 0, sizeof(hc));
    vb_http_limits_default(&hc.limits);
    hc.limits.max_body_bytes = 4u * 1024 * 1024;
    hc.handler = handle;
    hc.ud = &a;
    int bound = 0;
    if (vb_http_server_create(loop, &hc, &a.srv) != 0 ||
        vb_http_server_listen(a.srv, host, port, 0, &bound) != 0) {
        fprintf(stderr, "vb-example-app: cannot listen on %s\n", listen);
        return 1;
    }
    uv_signal_init(loop, &a.sigterm);
    uv_signal_init(loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    printf("listening on %s:%d\n", host, bound);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    vb_http_server_destroy(a.srv);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    cJSON_Delete(a.reports);
    free(a.incoming_body);
    return 0;
}
