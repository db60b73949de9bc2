/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the request handler: arbitrary bytes into an HTTP
 * session whose requests go to the ingress routes (webhooks with and
 * without signature checks, status callbacks, health, metrics, the
 * WebSocket upgrade and its hand-off into a lane ring). The first input
 * byte picks the chunk size the bytes are fed in and which ingress (signed
 * or insecure) answers; each run ends with a timeout, as a silent peer
 * would. Nothing may crash, leak, or answer with anything but HTTP.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "net/http.h"
#include "net/ingress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct world {
    vb_config_t cfg;
    vb_metrics_t *m;
    vb_ingress_t *g;
    vb_chan_t rings[2];
    vb_ingress_lane_t lanes[2];
    vb_http_server_cfg_t cb;
} world_t;

static world_t worlds[2];
static int devnull = -1;

static void world_init(world_t *w, bool secure)
{
    const char *argv[] = {"fuzz",
                          "--listen",
                          "127.0.0.1:0",
                          "--public-url",
                          "https://fuzz.example",
                          "--lanes",
                          "2",
                          "--max-calls",
                          "8",
                          "--cors-origin",
                          "*",
                          "--twilio-auth-token",
                          "fuzz-token"};
    char err[256];
    if (vb_config_load(&w->cfg, secure ? 13 : 11, argv, err, sizeof(err)) != 0)
        abort();
    w->m = vb_metrics_create();
    for (int i = 0; i < 2; i++) {
        vb_chan_config_t cc = {"ingress_to_twilio", 4, VB_MSG_DATA_MAX, 0,
                               NULL};
        if (vb_chan_init(&w->rings[i], &cc) != 0)
            abort();
        w->lanes[i].conn = &w->rings[i];
    }
    vb_ingress_opts_t o = {
        .cfg = &w->cfg, .metrics = w->m, .lanes = w->lanes, .no_listen = true};
    if (vb_ingress_create(&o, &w->g) != 0)
        abort();
    vb_ingress_http_callbacks(w->g, &w->cb);
}

/* What a lane would do: take every handed-off connection and let it go. */
static void drain_lanes(world_t *w)
{
    for (int i = 0; i < 2; i++) {
        vb_msg_t *m;
        while ((m = vb_chan_peek(&w->rings[i])) != NULL) {
            vb_msg_conn_t c;
            if (vb_msg_conn_get(m, &c) == 0)
                vb_msg_conn_release(&c);
            vb_chan_release(&w->rings[i]);
        }
    }
}

static void take_output(vb_http_session_t *s)
{
    size_t n;
    char *out = vb_http_session_take_output(s, &n);
    if (out != NULL && (n < 12 || memcmp(out, "HTTP/1.1 ", 9) != 0))
        abort(); /* every answer is an HTTP response */
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (devnull < 0) {
        vb_log_set_level(VB_LOG_OFF);
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        world_init(&worlds[0], false);
        world_init(&worlds[1], true);
    }
    if (size == 0)
        return 0;
    world_t *w = &worlds[data[0] & 1];
    size_t chunk = (size_t)(data[0] >> 1) + 1; /* 1..128 */
    data++;
    size--;

    vb_http_session_cfg_t sc = {.limits = w->cb.limits,
                                .handler = w->cb.handler,
                                .on_error = w->cb.on_error,
                                .ud = w->cb.ud,
                                .listener = 0,
                                .peer = "192.0.2.1:1234"};
    sc.limits.max_head_bytes = 4096;
    sc.limits.max_body_bytes = 4096;
    sc.limits.max_output_bytes = 2048; /* exercise blocking */
    vb_http_session_t *s;
    if (vb_http_session_create(&sc, &s) != 0)
        abort();
    vb_http_action_t a = VB_HTTP_CONTINUE;
    for (size_t i = 0; i < size && a == VB_HTTP_CONTINUE; i += chunk) {
        size_t n = size - i < chunk ? size - i : chunk;
        a = vb_http_session_feed(s, (const char *)data + i, n);
        take_output(s);
        /* A transport stops reading while blocked and resumes once its
         * output is written; here every other feed waits for that. */
        while (a == VB_HTTP_CONTINUE && vb_http_session_blocked(s) &&
               (i / chunk) % 2 == 0) {
            a = vb_http_session_resume(s);
            take_output(s);
        }
    }
    while (a == VB_HTTP_CONTINUE && vb_http_session_blocked(s)) {
        a = vb_http_session_resume(s);
        take_output(s);
    }
    if (a == VB_HTTP_CONTINUE)
        a = vb_http_session_timeout(s);
    take_output(s);
    if (a == VB_HTTP_DETACH) {
        size_t n;
        const char *extra = vb_http_session_leftover(s, &n);
        w->cb.on_detach(w->cb.ud, dup(devnull), extra, n,
                        vb_http_session_detach_arg(s), "192.0.2.1:1234");
        drain_lanes(w);
    }
    vb_http_session_destroy(s);
    return 0;
}
