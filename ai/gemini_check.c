/* SPDX-License-Identifier: MIT */
/*
 * The Gemini check session (design in gemini_check.h): a private loop, one
 * WebSocket client connection, the same setup message a call sends, and a
 * timer for the deadline.
 */
#include "ai/gemini_check.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ai/gemini_proto.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "net/ws.h"

#define PROMPT_FILE_MAX (1u << 20)

typedef struct check {
    const vb_gemini_options_t *o;
    const char *prompt;
    vb_ws_t *ws;
    vb_gemini_parser_t *parser;
    uv_timer_t timer;
    const atomic_bool *cancel;
    uint64_t t0, deadline;
    bool done, setup_sent;
    vb_gemini_check_result_t res;
    char *why;
    size_t whysz;
} check_t;

const char *vb_gemini_check_name(vb_gemini_check_result_t r)
{
    switch (r) {
    case VB_GEMINI_CHECK_OK:
        return "ok";
    case VB_GEMINI_CHECK_REJECTED:
        return "rejected";
    default:
        return "unreachable";
    }
}

static void finish(check_t *k, vb_gemini_check_result_t res, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

static void finish(check_t *k, vb_gemini_check_result_t res, const char *fmt,
                   ...)
{
    if (k->done)
        return;
    k->done = true;
    k->res = res;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->why, k->whysz, fmt, ap);
    va_end(ap);
    uv_timer_stop(&k->timer);
    if (k->ws != NULL)
        vb_ws_close(k->ws, 1000, res == VB_GEMINI_CHECK_OK ? "check done" : "");
}

static int on_event(const vb_gemini_event_t *ev, void *ud)
{
    check_t *k = ud;
    if (ev->kind == VB_GEMINI_EV_SETUP_COMPLETE) {
        finish(
            k, VB_GEMINI_CHECK_OK, "setupComplete in %llu ms",
            (unsigned long long)((vb_clock_now_ns() - k->t0) / VB_NS_PER_MS));
        return 1;
    }
    return 0;
}

static void ws_on_message(vb_ws_t *ws, bool text, const uint8_t *data,
                          size_t len, void *ud)
{
    (void)ws;
    (void)text;
    check_t *k = ud;
    if (k->done)
        return;
    int rc = vb_gemini_parse(k->parser, data, len, on_event, k);
    if (rc != 0 && rc != VB_ECANCELED)
        finish(k, VB_GEMINI_CHECK_UNREACHABLE,
               "unusable message before setupComplete (%s)", vb_err_name(rc));
}

static void ws_on_open(vb_ws_t *ws, void *ud)
{
    check_t *k = ud;
    vb_gemini_setup_t st = k->o->setup;
    st.system_prompt = k->prompt;
    st.resume_handle = NULL;
    char *json = NULL;
    size_t len = 0;
    int rc = vb_gemini_build_setup(&st, &json, &len);
    if (rc != 0) {
        finish(k, VB_GEMINI_CHECK_REJECTED, "cannot build the setup (%s)",
               vb_err_name(rc));
        return;
    }
    rc = vb_ws_send_text(ws, json, len);
    free(json);
    k->setup_sent = rc == 0;
    if (rc != 0)
        finish(k, VB_GEMINI_CHECK_UNREACHABLE, "cannot send the setup (%s)",
               vb_err_name(rc));
}

static void ws_on_close(vb_ws_t *ws, const vb_ws_close_info_t *i, void *ud)
{
    check_t *k = ud;
    k->ws = NULL;
    vb_ws_destroy(ws);
    if (k->done)
        return;
    uint16_t code = i->code_received;
    int http = i->http_status;
    const char *model = k->o->setup.model ? k->o->setup.model : "";
    vb_gemini_close_class_t cls =
        vb_gemini_close_classify(http, code, i->reason);
    if (i->err == VB_EAUTH && http == 0)
        cls = VB_GEMINI_CLOSE_AUTH;
    vb_gemini_check_result_t rej = VB_GEMINI_CHECK_REJECTED;
    switch (cls) {
    case VB_GEMINI_CLOSE_AUTH:
        finish(k, rej, "HTTP %d on the upgrade: check GEMINI_API_KEY", http);
        return;
    case VB_GEMINI_CLOSE_CONFIG:
        if (http >= 400)
            finish(k, rej, "HTTP %d on the upgrade: check --gemini-url", http);
        else
            finish(k, rej,
                   "close 1007 (%s): bad API key or invalid setup argument",
                   i->reason);
        return;
    case VB_GEMINI_CLOSE_MODEL:
        /* The model first: /readyz shows the start of the reason. */
        finish(k, rej,
               "model %s not found, set --gemini-model (close 1008: %s)", model,
               i->reason);
        return;
    case VB_GEMINI_CLOSE_POLICY:
        finish(k, rej, "close 1008 (%s)", i->reason);
        return;
    case VB_GEMINI_CLOSE_TRANSIENT:
        /* The service's passing failure, not this configuration's. */
        finish(k, VB_GEMINI_CHECK_UNREACHABLE,
               "transient close 1008 (%s) before setupComplete", i->reason);
        return;
    case VB_GEMINI_CLOSE_RETRY:
        break;
    }
    if (http >= 500)
        finish(k, VB_GEMINI_CHECK_UNREACHABLE, "HTTP %d on the upgrade", http);
    else if (i->err == VB_ECERT)
        finish(k, rej, "TLS certificate not trusted (see --gemini-ca-file)");
    else if (i->err != 0)
        finish(k, VB_GEMINI_CHECK_UNREACHABLE, "%s before setupComplete",
               vb_err_name(i->err));
    else
        finish(k, VB_GEMINI_CHECK_UNREACHABLE,
               "closed %u (%s) before setupComplete", (unsigned)code,
               i->reason);
}

/* At the deadline, or every VB_GEMINI_CHECK_POLL_MS when cancellable. */
static void on_tick(uv_timer_t *t)
{
    check_t *k = t->data;
    uint64_t now = vb_clock_now_ns();
    if (now >= k->deadline)
        finish(k, VB_GEMINI_CHECK_UNREACHABLE, "no %s within %llu ms",
               k->setup_sent ? "setupComplete" : "WebSocket upgrade",
               (unsigned long long)((now - k->t0) / VB_NS_PER_MS));
    else if (k->cancel != NULL && atomic_load(k->cancel))
        finish(k, VB_GEMINI_CHECK_UNREACHABLE, "cancelled");
    else
        return;
    if (k->ws != NULL) {
        /* The close handshake may hang too: drop the connection. */
        vb_ws_destroy(k->ws);
        k->ws = NULL;
    }
}

static char *read_prompt(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(PROMPT_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, PROMPT_FILE_MAX, f) : 0;
    fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    return buf;
}

vb_gemini_check_result_t vb_gemini_check_run(const vb_gemini_options_t *o,
                                             uint32_t timeout_ms,
                                             const atomic_bool *cancel,
                                             char *why, size_t whysz)
{
    check_t k;
    memset(&k, 0, sizeof(k));
    k.o = o;
    k.cancel = cancel;
    k.why = why;
    k.whysz = whysz;
    k.res = VB_GEMINI_CHECK_UNREACHABLE;
    snprintf(why, whysz, "not run");
    if (timeout_ms == 0)
        timeout_ms = 10000;
    vb_ws_url_t u;
    if (o->url == NULL || vb_ws_url_parse(o->url, &u) != 0) {
        snprintf(why, whysz, "invalid --gemini-url");
        return VB_GEMINI_CHECK_REJECTED;
    }
    if (o->setup.model == NULL || *o->setup.model == '\0') {
        snprintf(why, whysz, "no --gemini-model");
        return VB_GEMINI_CHECK_REJECTED;
    }
    if (o->api_key == NULL || *o->api_key == '\0') {
        snprintf(why, whysz, "GEMINI_API_KEY is not set");
        return VB_GEMINI_CHECK_REJECTED;
    }
    if (strpbrk(o->api_key, "\r\n") != NULL) {
        snprintf(why, whysz, "GEMINI_API_KEY contains a line break");
        return VB_GEMINI_CHECK_REJECTED;
    }
    char *prompt = NULL;
    if (o->system_prompt_file != NULL && *o->system_prompt_file != '\0') {
        if ((prompt = read_prompt(o->system_prompt_file)) == NULL) {
            snprintf(why, whysz, "cannot read --system-prompt-file %s",
                     o->system_prompt_file);
            return VB_GEMINI_CHECK_REJECTED;
        }
        k.prompt = prompt;
    } else {
        k.prompt = o->setup.system_prompt;
    }
    size_t hn = strlen(o->api_key) + sizeof("x-goog-api-key: ");
    char *hdr = malloc(hn);
    vb_tls_config_t *tls = NULL;
    uv_loop_t loop;
    bool loop_ok = false;
    if (hdr == NULL)
        goto out;
    snprintf(hdr, hn, "x-goog-api-key: %s", o->api_key);
    const char *headers[] = {hdr, NULL};
    vb_gemini_limits_t lim = {.max_message = o->max_message};
    int rc;
    if ((rc = vb_gemini_parser_create(&lim, &k.parser)) != 0) {
        snprintf(why, whysz, "%s", vb_err_name(rc));
        goto out;
    }
    if (u.secure) {
        if ((rc = vb_tls_config_client(o->ca_file, &tls)) != 0) {
            snprintf(why, whysz, "cannot load the CA bundle (%s)",
                     vb_err_name(rc));
            k.res = VB_GEMINI_CHECK_REJECTED;
            goto out;
        }
        vb_tls_config_set_handshake_timeout(tls, timeout_ms);
    }
    if (uv_loop_init(&loop) != 0)
        goto out;
    loop_ok = true;
    uv_timer_init(&loop, &k.timer);
    k.timer.data = &k;
    k.t0 = vb_clock_now_ns();
    k.deadline = k.t0 + (uint64_t)timeout_ms * VB_NS_PER_MS;
    vb_transport_t *t = NULL;
    rc = u.secure ? vb_tls_connect(&loop, tls, u.host, u.port, NULL,
                                   "gemini-check", &t)
                  : vb_tcp_connect(&loop, u.host, u.port, &t);
    if (rc != 0) {
        snprintf(why, whysz, "cannot connect to %s (%s)", u.host,
                 vb_err_name(rc));
        goto out;
    }
    vb_ws_config_t wcfg = {
        .role = VB_WS_CLIENT,
        .max_message = o->max_message ? o->max_message : 4u << 20,
        .handshake_timeout_ms = timeout_ms,
        .log_id = "gemini-check",
    };
    vb_ws_callbacks_t cb = {
        .on_message = ws_on_message,
        .on_close = ws_on_close,
        .on_open = ws_on_open,
    };
    if ((rc = vb_ws_connect(&loop, t, &wcfg, &cb, &k, o->url, headers,
                            &k.ws)) != 0) {
        snprintf(why, whysz, "WebSocket setup failed (%s)", vb_err_name(rc));
        goto out;
    }
    uint32_t tick = cancel != NULL && timeout_ms > VB_GEMINI_CHECK_POLL_MS
                        ? VB_GEMINI_CHECK_POLL_MS
                        : timeout_ms;
    uv_timer_start(&k.timer, on_tick, tick, tick);
    /* Runs until the connection is gone (closed, or dropped at the
     * deadline) and the timer stopped. */
    while (!k.done || k.ws != NULL) {
        if (uv_run(&loop, UV_RUN_ONCE) == 0)
            break;
    }
    if (!k.done)
        snprintf(why, whysz, "the connection ended without an answer");
out:
    if (k.ws != NULL)
        vb_ws_destroy(k.ws);
    if (loop_ok) {
        uv_close((uv_handle_t *)&k.timer, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    vb_tls_config_destroy(tls);
    vb_gemini_parser_destroy(k.parser);
    free(hdr);
    free(prompt);
    return k.res;
}
