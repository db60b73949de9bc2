/* SPDX-License-Identifier: MIT */
/*
 * voxbridge, the server binary: the composition root that reads the
 * configuration, builds the shared pieces (metrics registry, stream-token
 * key), starts the ingress thread and the lanes, and turns SIGTERM/SIGINT
 * into a drain followed by a clean stop.
 *
 * DESIGN. Signals are blocked in every thread (the mask is set before any
 * thread starts and inherited) and taken synchronously with sigwait() here,
 * so no handler runs inside a loop. The first SIGTERM/SIGINT sets the
 * ingress draining (/readyz 503, new calls hear the busy message) and waits
 * for active calls to end or --drain-timeout; a second one stops at once.
 *
 * Lanes: until the media-stream stage exists, each lane's hand-off ring is
 * consumed by one placeholder thread that answers every handed-off
 * WebSocket with a close frame (1013, "try again later") and closes it, so
 * an upgrade through the whole server is observable end to end.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "net/ingress.h"
#include "net/twilio_sig.h"

#define LANE_RING_SLOTS 64

/* ---- placeholder lane consumer ---- */

typedef struct stub_lanes {
    uv_loop_t loop;
    uv_async_t stop;
    uint32_t n;
    vb_ring_t *rings;
    uv_async_t *wakes;
    vb_ingress_lane_t *sinks;
    pthread_t thread;
} stub_lanes_t;

static void stub_refuse(vb_ingress_conn_t *c)
{
    static const char reason[] = "media stream stage not available";
    unsigned char frame[2 + 2 + sizeof(reason)];
    size_t plen = 2 + sizeof(reason) - 1;
    frame[0] = 0x88; /* FIN + close */
    frame[1] = (unsigned char)plen;
    frame[2] = 1013 >> 8;
    frame[3] = 1013 & 0xff;
    memcpy(frame + 4, reason, sizeof(reason) - 1);
    if (send(c->fd, frame, 2 + plen, MSG_NOSIGNAL) < 0)
        vb_log_debug(NULL, "close frame not sent", "errno=%d", errno);
    shutdown(c->fd, SHUT_WR);
    vb_log_warn(NULL, "media stream refused: stage not available",
                "lane=%u peer=%s", c->lane, c->peer);
    vb_ingress_conn_release(c);
}

static void stub_wake_cb(uv_async_t *a)
{
    vb_ring_t *r = a->data;
    vb_msg_t *m;
    while ((m = vb_ring_peek(r)) != NULL) {
        vb_ingress_conn_t c;
        if (vb_ingress_conn_get(m, &c) == 0)
            stub_refuse(&c);
        vb_ring_release(r);
    }
}

static void stub_stop_cb(uv_async_t *a)
{
    stub_lanes_t *s = a->data;
    for (uint32_t i = 0; i < s->n; i++) {
        stub_wake_cb(&s->wakes[i]); /* refuse what is still queued */
        uv_close((uv_handle_t *)&s->wakes[i], NULL);
    }
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void *stub_main(void *arg)
{
    stub_lanes_t *s = arg;
    pthread_setname_np(pthread_self(), "lane-stub");
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int stub_start(stub_lanes_t *s, uint32_t n)
{
    memset(s, 0, sizeof(*s));
    s->n = n;
    s->rings = calloc(n, sizeof(*s->rings));
    s->wakes = calloc(n, sizeof(*s->wakes));
    s->sinks = calloc(n, sizeof(*s->sinks));
    if (s->rings == NULL || s->wakes == NULL || s->sinks == NULL ||
        uv_loop_init(&s->loop) != 0)
        return VB_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        if (vb_msg_ring_init(&s->rings[i], LANE_RING_SLOTS) != 0)
            return VB_ENOMEM;
        uv_async_init(&s->loop, &s->wakes[i], stub_wake_cb);
        s->wakes[i].data = &s->rings[i];
        s->sinks[i].conn_ring = &s->rings[i];
        s->sinks[i].conn_wake = &s->wakes[i];
    }
    uv_async_init(&s->loop, &s->stop, stub_stop_cb);
    s->stop.data = s;
    return pthread_create(&s->thread, NULL, stub_main, s) == 0 ? 0 : VB_ESYS;
}

/* After the ingress (the rings' producer) has stopped. */
static void stub_stop(stub_lanes_t *s)
{
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    uv_loop_close(&s->loop);
    for (uint32_t i = 0; i < s->n; i++)
        vb_ring_destroy(&s->rings[i]);
    free(s->rings);
    free(s->wakes);
    free(s->sinks);
}

/* ---- main ---- */

/* One log line per setting, secrets as (set)/(unset). */
static void log_config(const vb_config_t *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return;
    vb_config_dump(f, c);
    fclose(f);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        vb_log_info(NULL, "setting", "name=%s value=%s", line, eq + 1);
    }
    free(text);
}

/* Waits for active calls to end, at most `timeout_s`; returns early on a
 * second signal. */
static void drain(vb_ingress_t *g, const sigset_t *set, int64_t timeout_s)
{
    uint64_t end = vb_clock_now_ns() + (uint64_t)timeout_s * VB_NS_PER_SEC;
    while (vb_ingress_calls_active(g) > 0 && vb_clock_now_ns() < end) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0) {
            vb_log_warn(NULL, "second signal: stopping now", "signal=%d", sig);
            return;
        }
    }
    if (vb_ingress_calls_active(g) > 0)
        vb_log_warn(NULL, "drain timeout: ending remaining calls", "calls=%lld",
                    (long long)vb_ingress_calls_active(g));
}

int main(int argc, char **argv)
{
    vb_config_t cfg;
    char err[512];
    int rc =
        vb_config_load(&cfg, argc, (const char *const *)argv, err, sizeof(err));
    if (rc == 1) {
        vb_config_usage(stdout, "voxbridge");
        vb_config_free(&cfg);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "voxbridge: %s\n", err);
        vb_config_free(&cfg);
        return 2;
    }
    vb_log_level_t level;
    vb_log_format_t format;
    if (vb_log_level_parse(cfg.log_level, &level) == 0)
        vb_log_set_level(level);
    if (vb_log_format_parse(cfg.log_format, &format) == 0)
        vb_log_set_format(format);

    /* Before any thread exists, so all inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    vb_log_info(NULL, "voxbridge starting", "pid=%ld", (long)getpid());
    log_config(&cfg);

    int status = 1;
    vb_metrics_t *metrics = vb_metrics_create();
    vb_twilio_sig_key_t key;
    vb_ingress_t *ingress = NULL;
    stub_lanes_t lanes;
    bool lanes_up = false;
    if (metrics == NULL)
        goto out;
    if (vb_twilio_sig_key_init(&key, cfg.stream_secret) != 0)
        goto out;
    if (*cfg.stream_secret == '\0')
        vb_log_info(NULL,
                    "stream secret is random for this process: streams "
                    "verify only here (set VOXBRIDGE_STREAM_SECRET to share)",
                    NULL);
    if (stub_start(&lanes, (uint32_t)cfg.lanes) != 0) {
        vb_log_error(NULL, "cannot start lanes", NULL);
        goto out;
    }
    lanes_up = true;
    vb_ingress_opts_t io = {
        .cfg = &cfg,
        .metrics = metrics,
        .stream_key = &key,
        .lanes = lanes.sinks,
    };
    if ((rc = vb_ingress_create(&io, &ingress)) != 0) {
        fprintf(stderr, "voxbridge: cannot start the HTTP listener: %s\n",
                vb_strerror(rc));
        goto out;
    }
    if (vb_ingress_start(ingress) != 0)
        goto out;
    vb_log_info(NULL, "voxbridge ready", "lanes=%lld max_calls=%lld",
                (long long)cfg.lanes, (long long)cfg.max_calls);

    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    vb_log_info(NULL, "signal received: draining", "signal=%d", sig);
    vb_ingress_set_draining(ingress, true);
    drain(ingress, &set, cfg.drain_timeout);
    status = 0;
out:
    vb_ingress_destroy(ingress); /* stops the producer first */
    if (lanes_up)
        stub_stop(&lanes);
    vb_metrics_destroy(metrics);
    vb_config_free(&cfg);
    vb_log_info(NULL, "voxbridge stopped", "status=%d", status);
    return status;
}
