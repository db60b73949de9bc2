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
 * SIGHUP (logrotate, `systemctl reload`) never stops the server: it is
 * logged and calls go on (the log is stderr, reopened by whoever holds it;
 * nothing else is reloadable yet).
 *
 * Lanes (ARCHITECTURE.md §1-2): --lanes times a twilio-io, a dsp and a
 * gemini thread, joined by the six channels of core/lane.h. Each stage is
 * created on its channels (it attaches itself as their consumer or
 * producer, doorbells included), then all threads start, the ingress last.
 * Stopping runs the other way: ingress first (no new work), then the lanes.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "ai/events.h"
#include "ai/gemini.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/lane.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "dsp/dsp_stage.h"
#include "net/ingress.h"
#include "net/tls.h"
#include "net/twilio_sig.h"
#include "net/twilio_stream.h"

#include "vb_version.h" /* generated in build/gen by the Makefile */

/* ---- lanes ---- */

typedef struct lane {
    vb_lane_chans_t ch;
    vb_twilio_stream_t *tw;
    vb_dsp_stage_t *dsp;
    vb_gemini_stage_t *gm;
} lane_t;

typedef struct lanes {
    uint32_t n;
    lane_t *l;
    vb_ingress_lane_t *sinks;
    /* Set before any stage starts; stage threads read it afterwards. */
    vb_ingress_t *ingress;
    vb_tls_config_t *rest_tls;
    vb_events_t *events; /* post-call reports; NULL without --events-url */
} lanes_t;

/* On a twilio-io thread: a call opened (+1) or ended (-1) on `lane`. */
static void calls_changed(void *ud, int lane, int delta)
{
    lanes_t *ls = ud;
    if (ls->ingress != NULL)
        vb_ingress_calls_add(ls->ingress, (uint32_t)lane, delta);
}

/* Creates every lane's rings and stages and joins their doorbells; starts
 * nothing. Logs what failed. */
static int lanes_create(lanes_t *ls, const vb_config_t *cfg,
                        vb_metrics_t *metrics, const vb_twilio_sig_key_t *key,
                        vb_events_t *events)
{
    int rc;
    memset(ls, 0, sizeof(*ls));
    ls->events = events;
    ls->n = (uint32_t)cfg->lanes;
    ls->l = calloc(ls->n, sizeof(*ls->l));
    ls->sinks = calloc(ls->n, sizeof(*ls->sinks));
    if (ls->l == NULL || ls->sinks == NULL)
        return VB_ENOMEM;
    vb_resampler_backend_t backend;
    if (vb_resampler_backend_parse(cfg->resampler, &backend) != 0)
        return VB_ECONFIG;
    if (*cfg->twilio_auth_token &&
        strncmp(cfg->twilio_api_url, "https://", 8) == 0 &&
        (rc = vb_tls_config_client(NULL, &ls->rest_tls)) != 0) {
        vb_log_error(NULL, "cannot load the system CA bundle for Twilio REST",
                     "err=%s", vb_err_name(rc));
        return rc;
    }
    uint32_t max_calls = (uint32_t)cfg->max_calls;
    /* The ingress puts each call on the least-loaded lane, so a lane's
     * audio rings are sized for its share of --max-calls (rounded up to a
     * power of two: headroom); a lane past its share holds back, never
     * drops. Slot tables still take --max-calls per lane. */
    uint32_t share = (max_calls + ls->n - 1) / ls->n;
    for (uint32_t i = 0; i < ls->n; i++) {
        lane_t *l = &ls->l[i];
        rc = vb_lane_chans_init(&l->ch, vb_lane_audio_slots(share), metrics);
        if (rc != 0)
            return rc;
        vb_gemini_stage_config_t gc;
        memset(&gc, 0, sizeof(gc));
        vb_gemini_options_from_config(&gc.opt, cfg);
        gc.opt.lane = (int)i;
        gc.opt.max_calls = max_calls;
        gc.opt.events = ls->events;
        gc.prepare = &l->ch.prepare;
        gc.in = &l->ch.dsp_to_gm;
        gc.out = &l->ch.gm_to_dsp;
        gc.metrics = metrics;
        if ((rc = vb_gemini_stage_create(&l->gm, &gc)) != 0) {
            vb_log_error(NULL, "cannot create the gemini stage",
                         "lane=%u err=%s", i, vb_err_name(rc));
            return rc;
        }
        vb_dsp_stage_config_t dc = {
            .lane = (int)i,
            .max_calls = max_calls,
            .dsp = {backend, (int)cfg->resampler_quality},
            .in_from_twilio = &l->ch.tw_to_dsp,
            .in_to_gemini = &l->ch.dsp_to_gm,
            .out_from_gemini = &l->ch.gm_to_dsp,
            .out_to_twilio = &l->ch.dsp_to_tw,
            .metrics = metrics,
        };
        if ((rc = vb_dsp_stage_create(&l->dsp, &dc)) != 0) {
            vb_log_error(NULL, "cannot create the dsp stage", "lane=%u err=%s",
                         i, vb_err_name(rc));
            return rc;
        }
        vb_twilio_stream_config_t tc = {
            .lane = (int)i,
            .max_calls = max_calls,
            .max_message = (size_t)cfg->twilio_max_message,
            .media_batch = (uint32_t)cfg->media_batch,
            .start_timeout_ms = (uint32_t)cfg->stream_start_timeout_ms,
            .max_preauth = (uint32_t)cfg->max_pending_streams,
            .max_preauth_per_peer = (uint32_t)cfg->max_pending_streams_per_peer,
            .media_timeout_ms = (uint32_t)cfg->media_timeout_ms,
            .max_call_s = (uint32_t)cfg->max_call_duration,
            .token_ttl_s = (uint32_t)cfg->stream_token_ttl,
            .token_key = key,
            .conn_in = &l->ch.conn,
            .in_to_dsp = &l->ch.tw_to_dsp,
            .out_from_dsp = &l->ch.dsp_to_tw,
            .metrics = metrics,
            .calls_changed = calls_changed,
            .calls_ud = ls,
            .rest_api_url = cfg->twilio_api_url,
            .rest_account_sid = cfg->twilio_account_sid,
            .rest_auth_token = cfg->twilio_auth_token,
            .rest_tls = ls->rest_tls,
        };
        if ((rc = vb_twilio_stream_create(&l->tw, &tc)) != 0) {
            vb_log_error(NULL, "cannot create the twilio-io stage",
                         "lane=%u err=%s", i, vb_err_name(rc));
            return rc;
        }
        ls->sinks[i] = (vb_ingress_lane_t){
            .conn = &l->ch.conn,
            .prepare = &l->ch.prepare,
        };
    }
    return 0;
}

static int lanes_start(lanes_t *ls)
{
    for (uint32_t i = 0; i < ls->n; i++) {
        lane_t *l = &ls->l[i];
        if (vb_gemini_stage_start(l->gm) != 0 ||
            vb_dsp_stage_start(l->dsp) != 0 ||
            vb_twilio_stream_start(l->tw) != 0)
            return VB_ESYS;
    }
    return 0;
}

/* After the ingress (producer of conn and prepare) has stopped. The
 * twilio-io stage goes first: it closes the streams (1001) and sends each
 * call's CALL_CLOSE down the lane. */
/* Joins every stage thread; calls still open end on their own threads,
 * reporting to the ingress, which must still exist. */
static void lanes_stop(lanes_t *ls)
{
    for (uint32_t i = 0; ls->l != NULL && i < ls->n; i++) {
        vb_twilio_stream_stop(ls->l[i].tw);
        vb_dsp_stage_stop(ls->l[i].dsp);
        vb_gemini_stage_stop(ls->l[i].gm);
    }
}

static void lanes_destroy(lanes_t *ls)
{
    if (ls->l == NULL)
        goto out;
    lanes_stop(ls);
    /* Nothing may report to the ingress from here on. */
    ls->ingress = NULL;
    for (uint32_t i = 0; i < ls->n; i++) {
        vb_twilio_stream_destroy(ls->l[i].tw);
        vb_dsp_stage_destroy(ls->l[i].dsp);
        vb_gemini_stage_destroy(ls->l[i].gm);
        vb_lane_chans_destroy(&ls->l[i].ch);
    }
out:
    vb_tls_config_destroy(ls->rest_tls);
    free(ls->l);
    free(ls->sinks);
    memset(ls, 0, sizeof(*ls));
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
        if (sig == SIGHUP) {
            vb_log_info(NULL, "SIGHUP while draining: ignored", NULL);
            continue;
        }
        if (sig > 0) {
            vb_log_warn(NULL, "second signal: stopping now", "signal=%d", sig);
            return;
        }
    }
    if (vb_ingress_calls_active(g) > 0)
        vb_log_warn(NULL, "drain timeout: ending remaining calls", "calls=%lld",
                    (long long)vb_ingress_calls_active(g));
}

/* Every call holds sockets and the HTTP connection cap is sized from what
 * is left (net/ingress.h), so take the whole hard limit the system
 * allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        vb_log_info(NULL, "raised the open-file limit", "from=%llu to=%llu",
                    (unsigned long long)was, (unsigned long long)rl.rlim_cur);
    else
        vb_log_warn(NULL, "cannot raise the open-file limit",
                    "soft=%llu hard=%llu", (unsigned long long)was,
                    (unsigned long long)rl.rlim_max);
}

/* vb_build_info{version,commit} 1, recorded through a shard of the main
 * thread's own. Returns 0 or VB_E*. */
static int add_build_info(vb_metrics_t *m)
{
    vb_metric_t id;
    int rc = vb_metrics_add(
        m, VB_METRIC_GAUGE, "vb_build_info",
        "Always 1; the labels say which build runs.",
        VB_LABELS("version", VB_VERSION, "commit", VB_COMMIT), &id);
    if (rc != 0)
        return rc;
    vb_metrics_shard_t *sh = vb_metrics_shard_create(m);
    if (sh == NULL)
        return VB_ENOMEM;
    vb_metrics_gauge_set(sh, id, 1);
    return 0;
}

int main(int argc, char **argv)
{
    vb_config_t cfg;
    char err[512];
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--version") == 0) {
            printf("voxbridge %s (commit %s)\n", VB_VERSION, VB_COMMIT);
            return 0;
        }
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
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    vb_log_info(NULL, "voxbridge starting", "pid=%ld version=%s commit=%s",
                (long)getpid(), VB_VERSION, VB_COMMIT);
    log_config(&cfg);
    raise_fd_limit();

    int status = 1;
    vb_metrics_t *metrics = vb_metrics_create();
    vb_twilio_sig_key_t key;
    vb_ingress_t *ingress = NULL;
    vb_events_t *events = NULL;
    lanes_t lanes;
    memset(&lanes, 0, sizeof(lanes));
    if (metrics == NULL || add_build_info(metrics) != 0)
        goto out;
    if (vb_twilio_sig_key_init(&key, cfg.stream_secret) != 0)
        goto out;
    if (*cfg.stream_secret == '\0')
        vb_log_info(NULL,
                    "stream secret is random for this process: streams "
                    "verify only here (set VOXBRIDGE_STREAM_SECRET to share)",
                    NULL);
    if (*cfg.events_url) {
        vb_events_opts_t eo = {
            .url = cfg.events_url,
            .spool_dir = cfg.events_spool,
            .secret = cfg.webhook_secret,
            .ca_file = cfg.webhook_ca_file,
            .max_files = (uint32_t)cfg.events_max_files,
            .max_bytes = (uint64_t)cfg.events_max_bytes,
            .timeout_ms = (uint32_t)cfg.events_timeout_ms,
            .backoff_min_ms = (uint32_t)cfg.events_backoff_min_ms,
            .backoff_max_ms = (uint32_t)cfg.events_backoff_max_ms,
            .metrics = metrics,
        };
        if ((rc = vb_events_create(&eo, &events)) != 0) {
            fprintf(stderr, "voxbridge: cannot set up --events-url: %s\n",
                    vb_strerror(rc));
            goto out;
        }
        vb_log_info(NULL, "post-call reports on", "url=%s spool=%s pending=%u",
                    cfg.events_url, cfg.events_spool,
                    vb_events_spooled(events));
    }
    if ((rc = lanes_create(&lanes, &cfg, metrics, &key, events)) != 0) {
        fprintf(stderr, "voxbridge: cannot set up the lanes: %s\n",
                vb_strerror(rc));
        goto out;
    }
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
    lanes.ingress = ingress;
    if ((events != NULL && vb_events_start(events) != 0) ||
        lanes_start(&lanes) != 0 || vb_ingress_start(ingress) != 0) {
        vb_log_error(NULL, "cannot start the threads", NULL);
        goto out;
    }
    vb_log_info(NULL, "voxbridge ready", "lanes=%lld max_calls=%lld",
                (long long)cfg.lanes, (long long)cfg.max_calls);

    int sig = 0;
    while (sigwait(&set, &sig) != 0 || sig == SIGHUP)
        if (sig == SIGHUP) {
            vb_log_info(NULL, "SIGHUP: nothing to reload, calls go on",
                        "calls=%lld",
                        (long long)vb_ingress_calls_active(ingress));
            sig = 0;
        }
    vb_log_info(NULL, "signal received: draining", "signal=%d", sig);
    vb_ingress_set_draining(ingress, true);
    drain(ingress, &set, cfg.drain_timeout);
    status = 0;
out:
    /* Order: the ingress stops handing off, the stage threads end (their
     * last calls report to the ingress), then the ingress and lanes go. */
    vb_ingress_stop(ingress);
    lanes_stop(&lanes);
    lanes.ingress = NULL;
    /* After the gemini stages: their last reports are spooled first. */
    vb_events_stop(events);
    vb_ingress_destroy(ingress);
    lanes_destroy(&lanes);
    vb_events_destroy(events);
    vb_metrics_destroy(metrics);
    vb_config_free(&cfg);
    vb_log_info(NULL, "voxbridge stopped", "status=%d", status);
    return status;
}
