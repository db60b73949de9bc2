/* SPDX-License-Identifier: MIT */
/*
 * voxbridge, the server binary: the composition root that reads the
 * configuration, builds the shared pieces (metrics registry, stream-token
 * key), starts the ingress thread and the lanes, and turns SIGTERM/SIGINT
 * into a drain followed by a clean stop.
 *
 * DESIGN. Signals are blocked in every thread (the mask is set before any
 * thread starts and inherited) and taken synchronously with sigtimedwait()
 * here, so no handler runs inside a loop. The first SIGTERM/SIGINT drains
 * in two phases (net/ingress.h): /readyz 503 at once while webhooks are
 * still answered for --drain-grace seconds (a health checker's time to
 * notice), then webhooks get 503 (a proxy retries them elsewhere) and the
 * public listener closes once no call of this instance needs it (no
 * stream awaited, no call live, no <Connect action> due); live calls go
 * on until they end or --drain-timeout (counted from the signal).
 * A second signal stops at once. SIGHUP (logrotate, `systemctl reload`)
 * never stops the server: reload() reopens --log-file; it is the one
 * place where anything reloadable is reloaded.
 *
 * Gemini readiness: a check session (ai/gemini_check.h) runs at start; a
 * rejection (key, model, setup) makes /readyz 503 "gemini: <reason>", as
 * does a call's session rejected the same way before its setupComplete
 * (on_verdict). While so, the check runs again with backoff (PROBE_MIN_S
 * doubling to PROBE_MAX_S) until one succeeds. Both run on a probe thread
 * of their own, never on the signal thread: a session may take
 * PROBE_TIMEOUT_MS, and a signal is acted on at once; stopping cancels a
 * session under way. `--check` runs it once and exits.
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "ai/events.h"
#include "ai/gemini.h"
#include "ai/gemini_check.h"
#include "ai/report.h"
#include "core/assistant.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/lane.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"
#include "dsp/audio_check.h"
#include "dsp/dsp_stage.h"
#include "dsp/recorder.h"
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
    vb_recorder_t *rec; /* --record-dir only */
} lane_t;

typedef struct lanes {
    uint32_t n;
    lane_t *l;
    vb_ingress_lane_t *sinks;
    /* Set before any stage starts; stage threads read it afterwards. */
    vb_ingress_t *ingress;
    vb_tls_config_t *rest_tls;        /* borrowed */
    vb_assistant_store_t *assistants; /* borrowed */
    vb_events_t *events; /* post-call reports; NULL without --events-url */
} lanes_t;

/* Backoff of the Gemini probe while sessions are rejected, and its
 * deadline. */
#define PROBE_MIN_S      1
#define PROBE_MAX_S      30
#define PROBE_TIMEOUT_MS 10000

/* On a gemini thread: a session's verdict on the configuration. */
static void gemini_verdict(void *ud, bool ok, const char *why)
{
    lanes_t *ls = ud;
    if (ls->ingress != NULL)
        vb_ingress_gemini_verdict(ls->ingress, ok, why);
}

/* On a twilio-io thread: a call opened (+1) or ended (-1) on `lane`. */
static void calls_changed(void *ud, int lane, int delta)
{
    lanes_t *ls = ud;
    if (ls->ingress != NULL)
        vb_ingress_calls_add(ls->ingress, (uint32_t)lane, delta);
}

/* On a twilio-io thread: an opened call ended, intended or not. */
static void call_ended(void *ud, const char *call_sid, bool intended)
{
    lanes_t *ls = ud;
    if (ls->ingress != NULL)
        vb_ingress_call_ended(ls->ingress, call_sid, intended);
}

/* On the ingress thread: a call answered here ended before its stream;
 * its report goes to the events spool like any other. */
static void report_unstreamed(void *ud, const vb_ingress_unstreamed_t *u)
{
    size_t len = 0;
    char *json = vb_report_render_unstreamed(u->call, u->direction, u->status,
                                             u->answered_unix_ms,
                                             u->ended_unix_ms, &len);
    if (json == NULL) {
        vb_log_error(u->call->call_sid, "out of memory for a report", NULL);
        return;
    }
    vb_log_info(u->call->call_sid, "report of a call without its stream",
                "status=%s", u->status);
    vb_events_submit(ud, u->call->call_sid, json, len);
}

/* Whether the recorder records a call: its assistant's "record" (which
 * defaults to on with --record-dir). An assistant this instance does not
 * know (a stream whose webhook another instance with another file
 * answered) records as the default does. Recorder thread. */
static bool record_wanted(void *ud, const vb_msg_open_t *open)
{
    return vb_assistant_store_records(ud, open->assistant);
}

/* Creates every lane's rings and stages and joins their doorbells; starts
 * nothing. Logs what failed. */
static int lanes_create(lanes_t *ls, const vb_config_t *cfg,
                        vb_metrics_t *metrics, const vb_twilio_sig_key_t *key,
                        vb_assistant_store_t *assistants, vb_events_t *events,
                        vb_tls_config_t *rest_tls)
{
    int rc;
    memset(ls, 0, sizeof(*ls));
    ls->assistants = assistants;
    ls->events = events;
    ls->rest_tls = rest_tls;
    ls->n = (uint32_t)cfg->lanes;
    ls->l = calloc(ls->n, sizeof(*ls->l));
    ls->sinks = calloc(ls->n, sizeof(*ls->sinks));
    if (ls->l == NULL || ls->sinks == NULL)
        return VB_ENOMEM;
    vb_resampler_backend_t backend;
    if (vb_resampler_backend_parse(cfg->resampler, &backend) != 0)
        return VB_ECONFIG;
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
        if (*cfg->record_dir) {
            uint32_t slots = 1024;
            while (slots < 16 * share && slots < 16384)
                slots *= 2;
            if (cfg->record_queue > 0)
                slots = (uint32_t)cfg->record_queue;
            vb_recorder_config_t rcfg = {
                .want = record_wanted,
                .want_ud = assistants,
                .dir = cfg->record_dir,
                .lane = (int)i,
                .max_calls = max_calls,
                .slots = slots,
                .backend = backend,
                .quality = (int)cfg->resampler_quality,
                .bitrate = (int)cfg->record_bitrate,
                .test_delay_us = (uint32_t)cfg->record_test_delay_us,
                .metrics = metrics,
            };
            if ((rc = vb_recorder_create(&l->rec, &rcfg)) != 0) {
                vb_log_error(NULL, "cannot create the recorder",
                             "lane=%u err=%s", i, vb_err_name(rc));
                return rc;
            }
        }
        vb_gemini_stage_config_t gc;
        memset(&gc, 0, sizeof(gc));
        vb_gemini_options_from_config(&gc.opt, cfg);
        gc.opt.lane = (int)i;
        gc.opt.max_calls = max_calls;
        gc.opt.on_verdict = gemini_verdict;
        gc.opt.verdict_ud = ls;
        gc.opt.events = ls->events;
        gc.prepare = &l->ch.prepare;
        gc.in = &l->ch.dsp_to_gm;
        gc.out = &l->ch.gm_to_dsp;
        gc.metrics = metrics;
        gc.assistants = ls->assistants;
        gc.assistant_url = cfg;
        gc.recorder = l->rec;
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
            .nlanes = ls->n,
            .max_calls = max_calls,
            .max_message = (size_t)cfg->twilio_max_message,
            .media_batch = (uint32_t)cfg->media_batch,
            .start_timeout_ms = (uint32_t)cfg->stream_start_timeout_ms,
            .max_preauth = (uint32_t)cfg->max_pending_streams,
            .max_preauth_per_peer = (uint32_t)cfg->max_pending_streams_per_peer,
            .media_timeout_ms = (uint32_t)cfg->media_timeout_ms,
            .media_gap_fill_ms = (uint32_t)cfg->media_gap_fill_ms,
            .max_call_s = (uint32_t)cfg->max_call_duration,
            .token_ttl_s = (uint32_t)cfg->stream_token_ttl,
            .token_key = key,
            .conn_in = &l->ch.conn,
            .in_to_dsp = &l->ch.tw_to_dsp,
            .out_from_dsp = &l->ch.dsp_to_tw,
            .metrics = metrics,
            .calls_changed = calls_changed,
            .call_ended = call_ended,
            .calls_ud = ls,
            .rest_api_url = cfg->twilio_api_url,
            .rest_account_sid = cfg->twilio_account_sid,
            .rest_auth_token = cfg->twilio_auth_token,
            .rest_api_key = cfg->twilio_api_key,
            .rest_api_secret = cfg->twilio_api_secret,
            .rest_tls = ls->rest_tls,
            .record = vb_recorder_chan(l->rec),
            .record_reserve = VB_RECORDER_RESERVE,
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
        if ((l->rec != NULL && vb_recorder_start(l->rec) != 0) ||
            vb_gemini_stage_start(l->gm) != 0 ||
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
        vb_recorder_stop(ls->l[i].rec); /* after its producer */
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
        vb_recorder_destroy(ls->l[i].rec);
        vb_dsp_stage_destroy(ls->l[i].dsp);
        vb_gemini_stage_destroy(ls->l[i].gm);
        vb_lane_chans_destroy(&ls->l[i].ch);
    }
out:
    free(ls->l);
    free(ls->sinks);
    memset(ls, 0, sizeof(*ls));
}

/* ---- assistants ---- */

/* The flags' assistant and, with --assistants, the file's set. Writes
 * why it failed to `err`. */
static int assistants_create(const vb_config_t *cfg, vb_assistant_store_t **out,
                             char *err, size_t errsz)
{
    vb_assistant_t *base = NULL;
    vb_assistants_t *set = NULL;
    int rc = vb_assistant_from_config(cfg, &base, err, errsz);
    if (rc == 0 && *cfg->assistants)
        rc = vb_assistants_load_file(cfg->assistants, base, &set, err, errsz);
    else if (rc == 0 && (rc = vb_assistants_single(base, &set)) != 0)
        snprintf(err, errsz, "%s", vb_strerror(rc));
    if (rc == 0 &&
        (rc = vb_assistant_store_create(set, cfg->assistants, base, out)) != 0)
        snprintf(err, errsz, "%s", vb_strerror(rc));
    /* Tool requests are signed: without a secret no file may bring HTTP
     * tools, now or at a reload. */
    const vb_assistant_t *a;
    size_t t;
    if (rc == 0 && *cfg->webhook_secret == '\0') {
        if (vb_assistants_url_tool(set, &a, &t)) {
            snprintf(err, errsz,
                     "%s: assistants.%s.tools[%zu].url: HTTP tools need "
                     "--webhook-secret (VOXBRIDGE_WEBHOOK_SECRET), their "
                     "requests are signed",
                     cfg->assistants, a->name, t);
            vb_assistant_store_destroy(*out);
            *out = NULL;
            rc = VB_ECONFIG;
        } else {
            vb_assistant_store_refuse_url_tools(*out);
        }
    }
    if (rc == 0)
        vb_log_info(NULL, "assistants loaded", "file=%s assistants=%zu",
                    *cfg->assistants ? cfg->assistants : "(flags)",
                    vb_assistants_count(set));
    vb_assistants_unref(set);
    vb_assistant_unref(base);
    return rc;
}

/* Transfer redirects the call through Twilio's REST API: an assistant
 * with transfer targets needs credentials (TWILIO_AUTH_TOKEN, or
 * TWILIO_API_KEY with TWILIO_API_SECRET, as the REST client takes) and an
 * API URL (the account is TWILIO_ACCOUNT_SID, else the call's own
 * AccountSid). Returns the first such assistant's name when they are
 * missing, else NULL. */
static const char *transfer_without_rest(const vb_config_t *cfg,
                                         vb_assistant_store_t *st)
{
    bool creds = *cfg->twilio_auth_token ||
                 (*cfg->twilio_api_key && *cfg->twilio_api_secret);
    if (creds && *cfg->twilio_api_url)
        return NULL;
    static char name[VB_ASSISTANT_NAME_MAX + 1];
    const char *found = NULL;
    vb_assistants_t *set = vb_assistant_store_get(st);
    for (size_t i = 0; i < vb_assistants_count(set) && found == NULL; i++) {
        const vb_assistant_t *a = vb_assistants_at(set, i);
        if (a != NULL && a->n_transfer > 0) {
            snprintf(name, sizeof name, "%s", a->name);
            found = name;
        }
    }
    vb_assistants_unref(set);
    return found;
}

/* "record": true needs --record-dir (without it there is no recorder):
 * the first assistant of `set` that asks for it when it is not set, else
 * NULL. */
static const char *record_without_dir(const vb_config_t *cfg,
                                      vb_assistants_t *set)
{
    if (*cfg->record_dir)
        return NULL;
    for (size_t i = 0; i < vb_assistants_count(set); i++) {
        const vb_assistant_t *a = vb_assistants_at(set, i);
        if (a != NULL && a->record)
            return a->name;
    }
    return NULL;
}

/* SIGHUP: the --assistants file again; live calls keep theirs, a bad file
 * leaves the current set. */
static void assistants_reload(vb_assistant_store_t *st, vb_ingress_t *g,
                              const vb_config_t *cfg)
{
    char err[512];
    size_t n = 0;
    /* A file asking for recording without --record-dir is refused before
     * it is swapped in (vb_assistant_store_refuse_record, at start). */
    int rc = vb_assistant_store_reload(st, &n, err, sizeof err);
    long long calls = (long long)vb_ingress_calls_active(g);
    const char *no_rest = rc == 0 ? transfer_without_rest(cfg, st) : NULL;
    if (no_rest != NULL)
        vb_log_error(NULL,
                     "SIGHUP: assistant has transfer targets but no "
                     "Twilio REST credentials are set: "
                     "its transfers will hang up instead",
                     "assistant=%s", no_rest);
    if (rc == 0)
        vb_log_info(NULL, "SIGHUP: assistants reloaded, calls go on",
                    "assistants=%zu calls=%lld", n, calls);
    else if (rc == VB_ENOENT)
        vb_log_info(
            NULL,
            "SIGHUP: nothing to reload (no --assistants file), calls go on",
            "calls=%lld", calls);
    else
        vb_log_error(NULL,
                     "SIGHUP: assistants file refused, the previous "
                     "set stays",
                     "why=%s calls=%lld", err, calls);
}

/* ---- start-up checks ---- */

/* What the checks at start build and the server goes on with. */
typedef struct startup {
    vb_assistant_store_t *assistants;
    vb_tls_config_t *rest_tls; /* Twilio REST over https only */
    vb_events_t *events;       /* --events-url only; not started */
} startup_t;

/* Every check the server makes at start before it builds its lanes and
 * listener, for `--check` as well (one function, so --check refuses what
 * a start would): the assistants, transfer targets without REST
 * credentials, --record-dir writable, the CA bundle for Twilio REST, the
 * --events-url spool. Fills `st` (startup_release() frees it, also after
 * a failure); writes the reason to `why`. Returns 0 or VB_E*. */
static int startup_prepare(const vb_config_t *cfg, vb_metrics_t *metrics,
                           startup_t *st, char *why, size_t whysz)
{
    memset(st, 0, sizeof(*st));
    char err[512];
    int rc = assistants_create(cfg, &st->assistants, err, sizeof err);
    if (rc != 0) {
        snprintf(why, whysz, "assistants: %s", err);
        return rc;
    }
    vb_assistants_t *rs = vb_assistant_store_get(st->assistants);
    const char *no_dir = record_without_dir(cfg, rs);
    if (*cfg->record_dir == '\0')
        vb_assistant_store_refuse_record(st->assistants);
    if (no_dir != NULL)
        snprintf(why, whysz,
                 "assistants: assistant \"%s\": record needs "
                 "--record-dir",
                 no_dir);
    vb_assistants_unref(rs);
    if (no_dir != NULL)
        return VB_ECONFIG;
    const char *no_rest = transfer_without_rest(cfg, st->assistants);
    if (no_rest != NULL) {
        snprintf(why, whysz,
                 "assistants: assistant \"%s\" has transfer targets, which "
                 "need the Twilio REST API: set TWILIO_AUTH_TOKEN "
                 "(--twilio-auth-token), or TWILIO_API_KEY with "
                 "TWILIO_API_SECRET, and --twilio-api-url",
                 no_rest);
        return VB_ECONFIG;
    }
    struct stat sb;
    if (*cfg->record_dir &&
        (stat(cfg->record_dir, &sb) != 0 || !S_ISDIR(sb.st_mode) ||
         access(cfg->record_dir, W_OK | X_OK) != 0)) {
        snprintf(why, whysz, "--record-dir %s is not a writable directory",
                 cfg->record_dir);
        return VB_ECONFIG;
    }
    /* Whichever credentials the REST client will use. */
    bool rest_creds = *cfg->twilio_auth_token ||
                      (*cfg->twilio_api_key && *cfg->twilio_api_secret);
    if (rest_creds && strncmp(cfg->twilio_api_url, "https://", 8) == 0 &&
        (rc = vb_tls_config_client(NULL, &st->rest_tls)) != 0) {
        snprintf(why, whysz,
                 "cannot load the system CA bundle for Twilio REST (%s)",
                 vb_err_name(rc));
        return rc;
    }
    if (*cfg->events_url) {
        vb_events_opts_t eo = {
            .url = cfg->events_url,
            .spool_dir = cfg->events_spool,
            .secret = cfg->webhook_secret,
            .secret_previous = cfg->webhook_secret_previous,
            .ca_file = cfg->webhook_ca_file,
            .max_files = (uint32_t)cfg->events_max_files,
            .max_bytes = (uint64_t)cfg->events_max_bytes,
            .timeout_ms = (uint32_t)cfg->events_timeout_ms,
            .backoff_min_ms = (uint32_t)cfg->events_backoff_min_ms,
            .backoff_max_ms = (uint32_t)cfg->events_backoff_max_ms,
            .max_rejections = (uint32_t)cfg->events_max_rejections,
            .metrics = metrics,
        };
        if ((rc = vb_events_create(&eo, &st->events)) != 0) {
            snprintf(why, whysz, "cannot set up --events-url (spool %s): %s",
                     cfg->events_spool, vb_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static void startup_release(startup_t *st)
{
    vb_events_destroy(st->events);
    vb_tls_config_destroy(st->rest_tls);
    vb_assistant_store_destroy(st->assistants);
    memset(st, 0, sizeof(*st));
}

/* POST /test/audio, on the ingress thread. */
static int test_audio(void *ud, const char *body, size_t len, char **json,
                      size_t *json_len)
{
    return vb_audio_check_run(ud, body, len, json, json_len);
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

/* The assistants the ingress answers with, for reload(). */
static vb_assistant_store_t *reload_assistants;

/* SIGHUP: everything that can be reloaded is reloaded here, in turn;
 * nothing here may stop the server. */
static void reload(const vb_config_t *cfg, vb_ingress_t *g)
{
    if (reload_assistants != NULL)
        assistants_reload(reload_assistants, g, cfg);
    if (*cfg->log_file != '\0') {
        int rc = vb_log_open_file(cfg->log_file);
        if (rc != 0)
            vb_log_error(NULL, "SIGHUP: cannot reopen the log file",
                         "path=%s err=%s errno=%s", cfg->log_file,
                         vb_err_name(rc), strerror(errno));
        else
            vb_log_info(NULL, "SIGHUP: log file reopened", "path=%s",
                        cfg->log_file);
    }
    vb_log_info(NULL, "SIGHUP: reloaded, calls go on", "calls=%lld",
                (long long)(g ? vb_ingress_calls_active(g) : 0));
}

/* Waits up to `until_ns` for `done` (or for nothing when NULL), handling
 * SIGHUP. Returns false on a second SIGTERM/SIGINT. */
static bool wait_until(const sigset_t *set, uint64_t until_ns,
                       bool (*done)(vb_ingress_t *), vb_ingress_t *g,
                       const vb_config_t *cfg)
{
    while (vb_clock_now_ns() < until_ns && (done == NULL || !done(g))) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGHUP) {
            reload(cfg, g);
            continue;
        }
        if (sig > 0) {
            vb_log_warn(NULL, "second signal: stopping now", "signal=%d", sig);
            return false;
        }
    }
    return true;
}

static bool drained(vb_ingress_t *g)
{
    return vb_ingress_calls_active(g) == 0 &&
           vb_ingress_calls_pending(g) == 0 && !vb_ingress_listening(g);
}

/* The drain (DESIGN): grace, then closing, then the live calls; at most
 * --drain-timeout from the signal in all. */
static void drain(vb_ingress_t *g, const sigset_t *set, const vb_config_t *cfg)
{
    uint64_t t0 = vb_clock_now_ns();
    uint64_t end = t0 + (uint64_t)cfg->drain_timeout * VB_NS_PER_SEC;
    uint64_t grace = t0 + (uint64_t)cfg->drain_grace * VB_NS_PER_SEC;
    vb_ingress_set_draining(g, true);
    vb_log_info(NULL, "draining: /readyz 503, webhooks answered meanwhile",
                "grace_s=%lld timeout_s=%lld calls=%lld",
                (long long)cfg->drain_grace, (long long)cfg->drain_timeout,
                (long long)vb_ingress_calls_active(g));
    if (!wait_until(set, grace < end ? grace : end, NULL, g, cfg))
        return;
    vb_ingress_stop_accepting(g);
    vb_log_info(NULL,
                "drain grace over: new calls get 503, the listener closes "
                "once no call here needs it",
                "calls=%lld pending=%lld",
                (long long)vb_ingress_calls_active(g),
                (long long)vb_ingress_calls_pending(g));
    if (!wait_until(set, end, drained, g, cfg))
        return;
    if (vb_ingress_calls_active(g) > 0 || vb_ingress_calls_pending(g) > 0)
        vb_log_warn(NULL, "drain timeout: ending remaining calls",
                    "calls=%lld pending=%lld",
                    (long long)vb_ingress_calls_active(g),
                    (long long)vb_ingress_calls_pending(g));
}

/* One check session; its verdict goes to the ingress: a rejection makes
 * it unready, an unreachable service is recorded as such but changes no
 * verdict. Returns the result. */
static vb_gemini_check_result_t
gemini_check(const vb_config_t *cfg, vb_ingress_t *g, const atomic_bool *cancel)
{
    vb_gemini_options_t o;
    memset(&o, 0, sizeof(o));
    vb_gemini_options_from_config(&o, cfg);
    char why[256];
    uint64_t t0 = vb_clock_now_ns();
    vb_gemini_check_result_t r =
        vb_gemini_check_run(&o, PROBE_TIMEOUT_MS, cancel, why, sizeof(why));
    if (cancel != NULL && atomic_load(cancel))
        return r; /* stopping: no verdict from a session cut short */
    uint64_t ms = (vb_clock_now_ns() - t0) / VB_NS_PER_MS;
    vb_log(r == VB_GEMINI_CHECK_OK         ? VB_LOG_INFO
           : r == VB_GEMINI_CHECK_REJECTED ? VB_LOG_ERROR
                                           : VB_LOG_WARN,
           NULL, "gemini check session",
           "result=%s reason=%s ms=%llu model=%s voice=%s",
           vb_gemini_check_name(r), why, (unsigned long long)ms,
           cfg->gemini_model, cfg->gemini_voice);
    if (r == VB_GEMINI_CHECK_UNREACHABLE)
        vb_ingress_gemini_unreachable(g, why);
    else
        vb_ingress_gemini_verdict(g, r == VB_GEMINI_CHECK_OK, why);
    return r;
}

/* The check session at start and the probe while Gemini rejects
 * sessions, on their own thread: a session may take PROBE_TIMEOUT_MS,
 * and the signal thread must act on a signal at once. */
typedef struct prober {
    const vb_config_t *cfg;
    vb_ingress_t *g;
    pthread_t th;
    bool started;
    atomic_bool stop;
} prober_t;

/* Sleeps up to `ns`, in short steps so a stop is seen soon. Returns false
 * once stopping. */
static bool prober_sleep(prober_t *p, uint64_t ns)
{
    uint64_t end = vb_clock_now_ns() + ns;
    while (!atomic_load(&p->stop) && vb_clock_now_ns() < end) {
        struct timespec ts = {0, VB_GEMINI_CHECK_POLL_MS * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return !atomic_load(&p->stop);
}

static void *prober_main(void *arg)
{
    prober_t *p = arg;
    pthread_setname_np(pthread_self(), "gemini-probe");
    /* Without a key the check refuses at once, without connecting: every
     * call would fail, so the instance is unready even with
     * --no-gemini-startup-check. */
    if (p->cfg->gemini_startup_check || *p->cfg->gemini_api_key == '\0')
        gemini_check(p->cfg, p->g, &p->stop);
    int64_t backoff = PROBE_MIN_S;
    while (prober_sleep(p, (uint64_t)PROBE_MIN_S * VB_NS_PER_SEC)) {
        if (!vb_ingress_gemini_rejected(p->g)) {
            backoff = PROBE_MIN_S;
            continue;
        }
        /* PROBE_MIN_S of the wait is behind us already. */
        if (!prober_sleep(p, (uint64_t)(backoff - PROBE_MIN_S) * VB_NS_PER_SEC))
            break;
        if (gemini_check(p->cfg, p->g, &p->stop) != VB_GEMINI_CHECK_OK)
            backoff = backoff * 2 > PROBE_MAX_S ? PROBE_MAX_S : backoff * 2;
    }
    return NULL;
}

static int prober_start(prober_t *p, const vb_config_t *cfg, vb_ingress_t *g)
{
    p->cfg = cfg;
    p->g = g;
    atomic_init(&p->stop, false);
    if (pthread_create(&p->th, NULL, prober_main, p) != 0)
        return VB_ESYS;
    p->started = true;
    return 0;
}

/* Cancels a session under way; returns within VB_GEMINI_CHECK_POLL_MS or
 * so. */
static void prober_stop(prober_t *p)
{
    if (!p->started)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->th, NULL);
    p->started = false;
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

/* --check: the settings as the server would take them (the ingress is
 * created without listening: addresses, URLs, instance id; then every
 * start-up check, startup_prepare()), then one Gemini session. Prints the
 * outcome; 0 when both are fine, 1 otherwise. */
static int check_only(const vb_config_t *cfg)
{
    vb_metrics_t *m = vb_metrics_create();
    vb_ingress_t *g = NULL;
    vb_ingress_opts_t io = {.cfg = cfg, .metrics = m, .no_listen = true};
    int rc = m == NULL ? VB_ENOMEM : vb_ingress_create(&io, &g);
    vb_ingress_destroy(g);
    char why[640] = "";
    if (rc != 0)
        snprintf(why, sizeof why, "%s, see the log", vb_strerror(rc));
    startup_t st = {.assistants = NULL};
    if (rc == 0)
        rc = startup_prepare(cfg, m, &st, why, sizeof why);
    startup_release(&st);
    vb_metrics_destroy(m);
    if (rc != 0) {
        printf("voxbridge --check: configuration: FAILED (%s)\n", why);
        return 1;
    }
    printf("voxbridge --check: configuration: ok\n");
    vb_gemini_options_t o;
    memset(&o, 0, sizeof(o));
    vb_gemini_options_from_config(&o, cfg);
    vb_gemini_check_result_t r =
        vb_gemini_check_run(&o, PROBE_TIMEOUT_MS, NULL, why, sizeof(why));
    printf("voxbridge --check: gemini session: %s (%s)\n",
           r == VB_GEMINI_CHECK_OK ? "ok" : vb_gemini_check_name(r), why);
    fflush(stdout);
    return r == VB_GEMINI_CHECK_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    vb_config_t cfg;
    char err[512];
    int status;
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
    if (*cfg.log_file != '\0' && (rc = vb_log_open_file(cfg.log_file)) != 0) {
        fprintf(stderr, "voxbridge: cannot open --log-file %s: %s\n",
                cfg.log_file, strerror(errno));
        vb_config_free(&cfg);
        return 2;
    }
    if (cfg.check) {
        status = check_only(&cfg);
        vb_config_free(&cfg);
        return status;
    }

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
    if (*cfg.gemini_api_key == '\0')
        vb_log_error(NULL,
                     "GEMINI_API_KEY is not set: Gemini refuses every "
                     "session, /readyz answers 503 until it is set",
                     NULL);
    raise_fd_limit();

    status = 1;
    vb_metrics_t *metrics = vb_metrics_create();
    vb_twilio_sig_key_t key;
    vb_ingress_t *ingress = NULL;
    startup_t st = {.assistants = NULL};
    lanes_t lanes;
    memset(&lanes, 0, sizeof(lanes));
    prober_t prober = {.started = false};
    if (metrics == NULL || add_build_info(metrics) != 0)
        goto out;
    if (vb_twilio_sig_key_init(&key, cfg.stream_secret) != 0)
        goto out;
    if (*cfg.stream_secret == '\0')
        vb_log_info(NULL,
                    "stream secret is random for this process: streams "
                    "verify only here (set VOXBRIDGE_STREAM_SECRET to share)",
                    NULL);
    if ((rc = startup_prepare(&cfg, metrics, &st, err, sizeof err)) != 0) {
        fprintf(stderr, "voxbridge: %s\n", err);
        vb_log_error(NULL, "start-up check failed", "why=%s", err);
        goto out;
    }
    reload_assistants = st.assistants;
    if (st.events != NULL)
        vb_log_info(NULL, "post-call reports on", "url=%s spool=%s pending=%u",
                    cfg.events_url, cfg.events_spool,
                    vb_events_spooled(st.events));
    if ((rc = lanes_create(&lanes, &cfg, metrics, &key, st.assistants,
                           st.events, st.rest_tls)) != 0) {
        fprintf(stderr, "voxbridge: cannot set up the lanes: %s\n",
                vb_strerror(rc));
        goto out;
    }
    vb_audio_check_config_t check = {
        .max_body = VB_AUDIO_CHECK_MAX_BODY((size_t)cfg.max_body_bytes)};
    vb_resampler_backend_parse(cfg.resampler, &check.dsp.backend);
    check.dsp.quality = (int)cfg.resampler_quality;
    vb_ingress_opts_t io = {
        .cfg = &cfg,
        .metrics = metrics,
        .stream_key = &key,
        .lanes = lanes.sinks,
        .assistants = st.assistants,
        .test_audio = test_audio,
        .test_audio_ud = &check,
        .unstreamed = st.events != NULL ? report_unstreamed : NULL,
        .unstreamed_ud = st.events,
    };
    if ((rc = vb_ingress_create(&io, &ingress)) != 0) {
        fprintf(stderr, "voxbridge: cannot start the HTTP listener: %s\n",
                vb_strerror(rc));
        goto out;
    }
    lanes.ingress = ingress;
    if ((st.events != NULL && vb_events_start(st.events) != 0) ||
        lanes_start(&lanes) != 0 || vb_ingress_start(ingress) != 0) {
        vb_log_error(NULL, "cannot start the threads", NULL);
        goto out;
    }
    vb_log_info(NULL, "voxbridge ready", "lanes=%lld max_calls=%lld",
                (long long)cfg.lanes, (long long)cfg.max_calls);
    if (prober_start(&prober, &cfg, ingress) != 0) {
        vb_log_error(NULL, "cannot start the gemini probe thread", NULL);
        goto out;
    }

    int sig;
    for (;;) {
        sig = sigwaitinfo(&set, NULL);
        if (sig == SIGHUP)
            reload(&cfg, ingress);
        else if (sig > 0)
            break;
    }
    vb_log_info(NULL, "signal received: draining", "signal=%d", sig);
    drain(ingress, &set, &cfg);
    status = 0;
out:
    /* Order: the ingress stops handing off, the stage threads end (their
     * last calls report to the ingress), then the ingress and lanes go.
     * The probe goes first: it reports to the ingress too. */
    prober_stop(&prober);
    vb_ingress_stop(ingress);
    lanes_stop(&lanes);
    lanes.ingress = NULL;
    /* After the gemini stages: their last reports are spooled first. */
    vb_events_stop(st.events);
    vb_ingress_destroy(ingress);
    lanes_destroy(&lanes);
    reload_assistants = NULL;
    startup_release(&st);
    vb_metrics_destroy(metrics);
    vb_config_free(&cfg);
    vb_log_info(NULL, "voxbridge stopped", "status=%d", status);
    return status;
}
