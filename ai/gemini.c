/* SPDX-License-Identifier: MIT */
/*
 * The lane's gemini thread; see gemini.h for the design.
 *
 * Object lifetimes. A call is freed only from the stage's own entry points
 * (the inbound ring, the tick timer, stop), never from inside a callback of
 * one of its connections. A connection is freed when its WebSocket reports
 * CLOSED (on_close) or when we kill it outright; if that happens while one
 * of its messages is being parsed (`busy`), it is only marked dead and
 * freed when the parse returns.
 */
#include "ai/gemini.h"
#include "ai/tools.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ai/events.h"
#include "ai/report.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/msg.h"
#include "core/stage.h"
#include "dsp/recorder.h"
#include "net/assistant_url.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "net/ws.h"

#define TICK_MS           50
#define FLUSH_CHUNK       3200u /* 100 ms of 16 kHz PCM16 per flushed message */
#define SID_MAX           64
#define HANDLE_MAX        512
#define TRANSCRIPT_MAX    4096
#define BACKLOG_MAX       16384 /* messages waiting for outbound ring room */
#define WS_PENDING_MAX    (2u * 1024u * 1024u)
#define TOTAL_ATTEMPTS    20  /* reconnects over a call's whole life */
#define BYTES_PER_MS_IN   32u /* 16 kHz PCM16 */
#define DEFAULT_PREBUFFER 3000u

typedef enum {
    CONN_CONNECTING,
    CONN_SETUP,
    CONN_READY,
} conn_state_t;

typedef struct call call_t;

typedef struct conn {
    vb_gemini_stage_t *s;
    call_t *call; /* NULL once the call let go of it */
    vb_ws_t *ws;
    vb_gemini_parser_t *parser;
    conn_state_t st;
    unsigned n; /* 1, 2, ... within the call */
    bool resumed, goaway, by_us, active, dead;
    bool in_turn; /* model output since its last generation/turn end */
    int busy;
    uint64_t t_start, deadline;
    /* Liveness: when READY, the last pong (or READY), the outstanding
     * ping (0: none), the last ping sent, since when the send backlog has
     * been over the stall mark (0: it is not), unusable messages in a row,
     * and why the tick must drop it (NULL: it need not). */
    uint64_t t_ready, t_alive, ping_at, last_ping, backlog_since;
    unsigned bad_run;
    const char *lost;
} conn_t;

typedef enum {
    HOW_PRECONNECT,
    HOW_AT_START,
    HOW_RESUME,
    HOW_FRESH_AFTER_LOSS,
    HOW_COUNT
} how_t;

static const char *const how_names[HOW_COUNT] = {"preconnect", "at_start",
                                                 "resume", "fresh"};

struct call {
    vb_gemini_stage_t *s;
    call_t *prev, *next;
    bool open, ended, reap, greeted, hangup_pending;
    bool turn_audio; /* model audio since the last turnComplete/interrupted */
    /* The server's VAD heard the caller start while the model spoke: the
     * caller's buffer was cleared, and the rest of the model's turn is
     * dropped until interrupted/turnComplete. */
    bool barged;
    uint64_t play_until; /* when the model audio sent so far has played */
    /* --vad off: our own activity detection on the caller audio sent
     * (activityStart/End around each utterance). */
    bool act_on;
    uint32_t act_quiet_ms;
    vb_call_id_t id;
    char sid[SID_MAX];
    conn_t *cur, *nxt;
    /* After goAway: the connection it replaced, still delivering the model
     * turn it was in (until generationComplete/turnComplete/interrupted,
     * or drain_until). Caller audio waits in the buffer meanwhile. */
    conn_t *old;
    uint64_t drain_until;
    char handle[HANDLE_MAX];
    char end_call_id[128];
    /* Caller audio waiting for a READY connection: a byte ring. */
    uint8_t *abuf;
    size_t acap, ahead, alen;
    uint64_t t_created, prepare_deadline, retry_at, hangup_at;
    uint64_t wait_since; /* open and no READY connection since; 0: has one */
    int fail;            /* FAIL_* once ended for a failure, else -1 */
    unsigned attempts, total_attempts, nconn;
    unsigned transient_1008; /* intermittent 1008s since the last healthy */
    uint32_t seq_out;
    uint64_t audio_dropped, audio_sent;
    int64_t tokens;
    char tr[2][TRANSCRIPT_MAX]; /* 0 caller, 1 model */
    size_t tr_len[2];
    /* The assistant answering the call (a reference; NULL: the stage's
     * own settings), and when its max_call_s ends the call (0: never). */
    vb_assistant_t *asst;
    /* The repeated call.incoming of a stream whose assistant an
     * --assistant-url answer built elsewhere (NULL: none in flight); the
     * setup waits for it, the caller's audio in the buffer. */
    vb_assistant_url_req_t *areq;
    char aname[64];     /* the assistant the stream names */
    char direction[32]; /* the webhook's Direction ("" unknown) */
    uint64_t max_end_at;
    /* Tool calls in flight and the tool log (ai/tools.h); a transfer the
     * model asked for, done like end_call's hang-up (E.164 or sip:). */
    vb_call_tools_t *tools;
    char transfer_to[VB_ASSISTANT_TARGET_MAX + 1];
    char transfer_name[VB_ASSISTANT_TOOL_NAME_MAX + 1];
    uint64_t tr_t0[2]; /* when the pending line began (for the report) */
    /* The post-call report, with --events-url (else NULL): allocated with
     * the call, filled as it runs, rendered once at CALL_CLOSE. */
    vb_report_t *rep;
    bool reported;
};

enum {
    CLOSE_1000,
    CLOSE_1001,
    CLOSE_1007,
    CLOSE_1008,
    CLOSE_1011,
    CLOSE_ABNORMAL,
    CLOSE_OTHER,
    CLOSE_COUNT
};
static const char *const close_labels[CLOSE_COUNT] = {
    "1000", "1001", "1007", "1008", "1011", "abnormal", "other"};

enum {
    RC_GOAWAY,
    RC_CLOSED,
    RC_FAILED,
    RC_TIMEOUT,
    RC_UNRESPONSIVE,
    RC_INVALID,
    RC_COUNT
};
static const char *const reconnect_labels[RC_COUNT] = {
    "goaway", "closed", "failed", "timeout", "unresponsive", "invalid"};

/* Why a call was ended because the model could not be reached. */
enum { FAIL_REJECTED, FAIL_CERT, FAIL_RETRIES, FAIL_RECOVER, FAIL_COUNT };
static const char *const fail_labels[FAIL_COUNT] = {
    "gemini_rejected", "gemini_certificate", "gemini_retries_exhausted",
    "gemini_recovery_timeout"};

enum { TOK_PROMPT, TOK_RESPONSE, TOK_THOUGHTS, TOK_TOTAL, TOK_COUNT };
static const char *const token_labels[TOK_COUNT] = {"prompt", "response",
                                                    "thoughts", "total"};

enum {
    DROP_PREBUFFER,
    DROP_BACKLOG,
    DROP_STALE,
    DROP_NOT_OPEN,
    DROP_WS_FULL,
    DROP_ENDED,
    DROP_UNSENT,
    DROP_FORMAT,
    DROP_COUNT
};
static const char *const drop_labels[DROP_COUNT] = {
    "prebuffer_overflow", "backlog_full", "stale_call",      "call_not_open",
    "socket_backlog",     "call_ended",   "unsent_at_close", "audio_format"};

struct vb_gemini_stage {
    vb_gemini_stage_config_t cfg;
    vb_gemini_options_t *o;
    /* Owned copies of the option strings. */
    char *url, *api_key, *greeting, *dtmf_text, *transcript_dir, *prompt;
    char *fallback_say;
    char *model, *voice, *language;
    char *key_header;
    const char *headers[2];
    vb_ws_url_t u;
    vb_tls_config_t *tls;

    vb_stage_t st;
    uv_timer_t tick; /* runs only while the stage holds a call */
    bool stopping;

    call_t **by_slot;
    call_t *calls;
    unsigned ncalls;

    char *ajson; /* realtimeInput scratch */
    size_t ajson_cap;

    vb_metric_t m_active, m_setup, m_lat_in, m_lat_out;
    vb_metric_t m_reconnect[RC_COUNT], m_close[CLOSE_COUNT];
    vb_metric_t m_tokens[TOK_COUNT], m_drop[DROP_COUNT], m_how[HOW_COUNT];
    vb_metric_t m_bad_msg, m_failed[FAIL_COUNT];
    vb_metric_t m_aurl[VB_AURL_COUNT];
    vb_tools_t *tools;
    vb_assistant_url_t *aurl; /* NULL: no --assistant-url */
};

static void conn_kill(conn_t *c);
static void conn_release(conn_t *c, uint16_t code, const char *reason);
static int conn_open(call_t *call, how_t how);
static void call_end(call_t *call, int fail, const char *reason);
static void schedule_retry(call_t *call, int why, const char *what);
static void on_tick(uv_timer_t *t);
static void call_start(vb_gemini_stage_t *s, call_t *call, bool prepared);
static int asst_request(vb_gemini_stage_t *s, call_t *call, const vb_msg_t *m);

static const char *lid(const call_t *call)
{
    return call != NULL && call->sid[0] ? call->sid : NULL;
}

static char *dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

/* ------------------------------------------------------------------ */
/* options                                                             */
/* ------------------------------------------------------------------ */

static vb_gemini_sens_t sens_of(const char *s)
{
    if (s != NULL && strcmp(s, "high") == 0)
        return VB_GEMINI_SENS_HIGH;
    if (s != NULL && strcmp(s, "low") == 0)
        return VB_GEMINI_SENS_LOW;
    return VB_GEMINI_SENS_DEFAULT;
}

void vb_gemini_options_from_config(vb_gemini_options_t *o, const vb_config_t *c)
{
    memset(o, 0, sizeof(*o));
    o->max_calls = (uint32_t)c->max_calls;
    o->url = c->gemini_url;
    o->api_key = c->gemini_api_key;
    o->ca_file = c->gemini_ca_file;
    vb_gemini_setup_defaults(&o->setup);
    o->setup.model = c->gemini_model;
    o->setup.voice = c->gemini_voice;
    o->setup.language = c->gemini_language;
    o->setup.temperature = c->gemini_temperature;
    o->setup.thinking_budget = c->gemini_thinking_budget;
    static const char *const levels[][2] = {{"minimal", "MINIMAL"},
                                            {"low", "LOW"},
                                            {"medium", "MEDIUM"},
                                            {"high", "HIGH"}};
    o->setup.thinking_level = NULL;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (c->gemini_thinking_level != NULL &&
            strcmp(c->gemini_thinking_level, levels[i][0]) == 0)
            o->setup.thinking_level = levels[i][1];
    o->setup.system_prompt = c->system_prompt;
    o->system_prompt_file = c->system_prompt_file;
    o->setup.vad_disabled = c->vad != NULL && strcmp(c->vad, "off") == 0;
    o->setup.vad_start = sens_of(c->vad_start_sensitivity);
    o->setup.vad_end = sens_of(c->vad_end_sensitivity);
    o->setup.vad_prefix_padding_ms = (int)c->vad_prefix_padding_ms;
    o->setup.vad_silence_ms = (int)c->vad_silence_ms;
    o->setup.input_transcription = c->input_transcription;
    o->setup.output_transcription = c->output_transcription;
    o->greeting = c->greeting;
    o->dtmf_text = c->dtmf_text;
    o->transcript_dir = c->transcript_dir;
    o->fallback_say = c->fallback_say;
    o->max_call_s = (uint32_t)c->max_call_duration;
    o->ping_interval_ms = (uint32_t)c->gemini_ping_interval_ms;
    o->pong_timeout_ms = (uint32_t)c->gemini_pong_timeout_ms;
    o->recover_timeout_ms = (uint32_t)c->gemini_recover_timeout_ms;
    o->healthy_ms = (uint32_t)c->gemini_healthy_ms;
    o->webhook_secret = c->webhook_secret;
    o->webhook_secret_previous = c->webhook_secret_previous;
    o->webhook_ca_file = c->webhook_ca_file;
    o->tool_max_response = (size_t)c->tool_max_response_bytes;
}

/* ------------------------------------------------------------------ */
/* outbound ring with an ordered overflow queue                        */
/* ------------------------------------------------------------------ */

static void for_each_conn_pause(vb_gemini_stage_t *s, bool pause)
{
    for (call_t *c = s->calls; c != NULL; c = c->next) {
        if (c->cur != NULL && c->cur->ws != NULL)
            vb_ws_read_pause(c->cur->ws, pause);
        if (c->nxt != NULL && c->nxt->ws != NULL)
            vb_ws_read_pause(c->nxt->ws, pause);
    }
}

/* The channel to dsp filled (`on`) or drained: stop or resume reading
 * every Gemini connection, so TCP pushes back; nothing is dropped. */
static void out_pressure(void *ud, bool on)
{
    for_each_conn_pause(ud, on);
}

static bool is_call_audio(const vb_msg_t *m, void *ud)
{
    const vb_call_id_t *id = ud;
    return m->kind == VB_MSG_AUDIO && vb_call_id_eq(m->call, *id);
}

/* Drops parked model audio of one call (barge-in): it must never play
 * after the CLEAR that follows. */
static void backlog_purge_audio(vb_gemini_stage_t *s, vb_call_id_t id)
{
    vb_chan_spill_purge(s->cfg.out, is_call_audio, &id);
}

/* Sends one message to dsp; keeps order behind anything already parked. */
static void out_emit(vb_gemini_stage_t *s, call_t *call, uint8_t kind,
                     uint8_t flags, const void *data, size_t len,
                     uint64_t t_origin)
{
    if (!call->open)
        return;
    vb_chan_t *out = s->cfg.out;
    if (len > out->data_max)
        len = out->data_max;
    vb_msg_t *m =
        vb_chan_begin(out, kind, flags, call->id, call->seq_out++, t_origin);
    if (m == NULL) {
        vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_BACKLOG], 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, lid(call),
                           "gemini output queue full, message dropped",
                           "kind=%s", vb_msg_kind_name(kind));
        return;
    }
    if (len > 0)
        memcpy(m->data, data, len);
    m->len = (uint16_t)len;
    vb_chan_end(out, m);
    if (m->t_enqueue != 0 && t_origin != 0 && m->t_enqueue > t_origin)
        vb_metrics_observe_ns(s->st.shard, s->m_lat_out,
                              m->t_enqueue - t_origin);
}

/* ------------------------------------------------------------------ */
/* transcripts                                                         */
/* ------------------------------------------------------------------ */

static void tr_append(call_t *call, int who, const char *text)
{
    size_t room = TRANSCRIPT_MAX - 1 - call->tr_len[who];
    size_t n = strlen(text);
    if (n > room)
        n = room;
    if (call->tr_len[who] == 0)
        call->tr_t0[who] = vb_clock_now_ns();
    memcpy(call->tr[who] + call->tr_len[who], text, n);
    call->tr_len[who] += n;
    call->tr[who][call->tr_len[who]] = '\0';
}

static void tr_write_file(vb_gemini_stage_t *s, call_t *call, const char *role,
                          const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.jsonl", s->transcript_dir,
             call->sid[0] ? call->sid : "unknown");
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return;
    cJSON_AddNumberToObject(o, "t", vb_clock_wall_s());
    cJSON_AddStringToObject(o, "role", role);
    cJSON_AddStringToObject(o, "text", text);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (line == NULL)
        return;
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        VB_LOG_RATELIMITED(VB_LOG_WARN, 10000, lid(call),
                           "cannot write transcript", "path=%s errno=%d", path,
                           errno);
    } else {
        fprintf(f, "%s\n", line);
        fclose(f);
    }
    free(line);
}

static void tr_flush(vb_gemini_stage_t *s, call_t *call, bool interrupted)
{
    static const char *const roles[2] = {"caller", "model"};
    for (int who = 0; who < 2; who++) {
        if (call->tr_len[who] == 0)
            continue;
        const char *t = call->tr[who];
        while (*t == ' ')
            t++;
        if (call->rep != NULL && call->open)
            vb_report_line(call->rep,
                           who == 0 ? VB_REPORT_CALLER : VB_REPORT_ASSISTANT, t,
                           call->tr_t0[who]);
        if (s->transcript_dir != NULL)
            tr_write_file(s, call, roles[who], t);
        else
            vb_log_info(lid(call), "transcript", "role=%s text=%s cut=%d",
                        roles[who], t, who == 1 && interrupted);
        call->tr_len[who] = 0;
        call->tr[who][0] = '\0';
    }
}

/* ------------------------------------------------------------------ */
/* caller audio                                                        */
/* ------------------------------------------------------------------ */

static void abuf_push(vb_gemini_stage_t *s, call_t *call, const uint8_t *p,
                      size_t n)
{
    if (n > call->acap) { /* keep the newest part */
        p += n - call->acap;
        n = call->acap;
    }
    if (call->alen + n > call->acap) {
        size_t drop = call->alen + n - call->acap;
        drop += drop & 1u; /* whole samples */
        if (drop > call->alen)
            drop = call->alen;
        call->ahead = (call->ahead + drop) % call->acap;
        call->alen -= drop;
        call->audio_dropped += drop;
        vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_PREBUFFER], 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 2000, lid(call),
                           "caller audio buffer full, oldest audio dropped",
                           "bytes=%zu", drop);
    }
    size_t tail = (call->ahead + call->alen) % call->acap;
    size_t first = call->acap - tail < n ? call->acap - tail : n;
    memcpy(call->abuf + tail, p, first);
    memcpy(call->abuf, p + first, n - first);
    call->alen += n;
}

static int send_pcm(vb_gemini_stage_t *s, conn_t *c, const uint8_t *pcm,
                    size_t n)
{
    if (n < 2)
        return 0;
    size_t len;
    int rc = vb_gemini_build_audio(pcm, n & ~(size_t)1, 16000, s->ajson,
                                   s->ajson_cap, &len);
    if (rc != 0)
        return rc;
    rc = vb_ws_send_text(c->ws, s->ajson, len);
    if (rc == 0 && c->call != NULL)
        c->call->audio_sent += n;
    return rc;
}

/* With the model's activity detection off (--vad off) the model answers
 * only what activityStart/activityEnd enclose: each 20 ms of caller audio
 * at or above LOCAL_VAD_RMS starts an utterance, LOCAL_VAD_HANG_MS (or
 * --vad-silence-ms) below it ends one. The markers go out in order with
 * the audio, split at the frame where the edge is. No allocation. */
#define LOCAL_VAD_RMS     300
#define LOCAL_VAD_HANG_MS 500u
#define LOCAL_VAD_FRAME   640u /* 20 ms at 16 kHz */

static const char act_start[] = "{\"realtimeInput\":{\"activityStart\":{}}}";
static const char act_end[] = "{\"realtimeInput\":{\"activityEnd\":{}}}";

static bool frame_loud(const uint8_t *p, size_t n)
{
    uint64_t sum = 0;
    size_t k = n / 2;
    for (size_t i = 0; i < k; i++) {
        int16_t v = (int16_t)(uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        sum += (uint64_t)((int32_t)v * v);
    }
    return k > 0 && sum >= (uint64_t)LOCAL_VAD_RMS * LOCAL_VAD_RMS * k;
}

static int send_audio(vb_gemini_stage_t *s, conn_t *c, const uint8_t *pcm,
                      size_t n)
{
    if (vb_ws_pending(c->ws) > WS_PENDING_MAX)
        return VB_ENOSPC;
    call_t *call = c->call;
    if (!s->o->setup.vad_disabled || call == NULL)
        return send_pcm(s, c, pcm, n);
    uint32_t hang = s->o->setup.vad_silence_ms > 0
                        ? (uint32_t)s->o->setup.vad_silence_ms
                        : LOCAL_VAD_HANG_MS;
    size_t from = 0;
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += LOCAL_VAD_FRAME) {
        size_t fl = n - off < LOCAL_VAD_FRAME ? n - off : LOCAL_VAD_FRAME;
        bool loud = frame_loud(pcm + off, fl);
        if (!call->act_on && loud) {
            if ((rc = send_pcm(s, c, pcm + from, off - from)) != 0)
                break;
            from = off;
            rc = vb_ws_send_text(c->ws, act_start, sizeof(act_start) - 1);
            call->act_on = true;
            call->act_quiet_ms = 0;
        } else if (call->act_on) {
            call->act_quiet_ms = loud ? 0 : call->act_quiet_ms + 20;
            if (call->act_quiet_ms >= hang) {
                if ((rc = send_pcm(s, c, pcm + from, off + fl - from)) != 0)
                    break;
                from = off + fl;
                rc = vb_ws_send_text(c->ws, act_end, sizeof(act_end) - 1);
                call->act_on = false;
            }
        }
    }
    if (rc == 0)
        rc = send_pcm(s, c, pcm + from, n - from);
    return rc;
}

/* The current connection is set up and nothing replaces it. */
static bool can_send(const call_t *call)
{
    const conn_t *c = call->cur;
    return c != NULL && c->st == CONN_READY && c->ws != NULL && !c->goaway &&
           c->lost == NULL && call->nxt == NULL && call->old == NULL &&
           !call->ended;
}

static bool can_stream(const call_t *call)
{
    const conn_t *c = call->cur;
    if (!can_send(call))
        return false;
    /* A ping unanswered for a while: the connection may be dead, so the
     * audio waits in the buffer (the pong or a replacement flushes it). */
    return c->ping_at == 0 || vb_clock_now_ns() - c->ping_at <
                                  (uint64_t)VB_GEMINI_HOLD_MS * 1000000u;
}

/* Sends the buffered caller audio, oldest first, in 100 ms messages;
 * `closing`: the caller has gone, so audio held back only for an
 * unanswered ping goes out now (the model still gets the whole turn). */
static void abuf_send(vb_gemini_stage_t *s, call_t *call, bool closing)
{
    uint8_t chunk[FLUSH_CHUNK];
    while (call->alen > 0 && (closing ? can_send(call) : can_stream(call))) {
        size_t n = call->alen < FLUSH_CHUNK ? call->alen : FLUSH_CHUNK;
        for (size_t i = 0; i < n; i++)
            chunk[i] = call->abuf[(call->ahead + i) % call->acap];
        if (send_audio(s, call->cur, chunk, n) != 0)
            return; /* the close handler takes over; the audio stays */
        call->ahead = (call->ahead + n) % call->acap;
        call->alen -= n;
    }
}

static void abuf_flush(vb_gemini_stage_t *s, call_t *call)
{
    abuf_send(s, call, false);
}

static void send_text(call_t *call, conn_t *c, const char *text)
{
    char *json = NULL;
    size_t len;
    if (vb_gemini_build_text(text, &json, &len) == 0) {
        vb_ws_send_text(c->ws, json, len);
        free(json);
    } else {
        vb_log_warn(lid(call), "could not build a text message", NULL);
    }
}

/* ------------------------------------------------------------------ */
/* connections                                                         */
/* ------------------------------------------------------------------ */

static void conn_free(conn_t *c)
{
    if (c->busy > 0) {
        c->dead = true;
        return;
    }
    vb_gemini_parser_destroy(c->parser);
    free(c);
}

static void conn_detach(conn_t *c)
{
    call_t *call = c->call;
    if (call != NULL) {
        if (call->cur == c)
            call->cur = NULL;
        if (call->nxt == c)
            call->nxt = NULL;
        if (call->old == c)
            call->old = NULL;
        c->call = NULL;
    }
    if (c->active) {
        c->active = false;
        vb_metrics_gauge_add(c->s->st.shard, c->s->m_active, -1);
    }
}

/* Drops a connection at once: no close handshake, no callback. */
static void conn_kill(conn_t *c)
{
    conn_detach(c);
    c->dead = true;
    if (c->ws != NULL) {
        vb_ws_t *ws = c->ws;
        c->ws = NULL;
        vb_ws_destroy(ws);
    }
    conn_free(c);
}

/* Closes our side cleanly; the connection frees itself in on_close. */
static void conn_release(conn_t *c, uint16_t code, const char *reason)
{
    conn_detach(c);
    c->by_us = true;
    if (c->ws == NULL) {
        conn_free(c);
        return;
    }
    /* on_close may run inside this call (a connection still in its
     * handshake is just dropped) and free `c`: do not touch it after. */
    if (vb_ws_close(c->ws, code, reason) == VB_ENOMEM)
        conn_kill(c);
}

static int close_index(uint16_t code)
{
    switch (code) {
    case 1000:
        return CLOSE_1000;
    case 1001:
        return CLOSE_1001;
    case 1007:
        return CLOSE_1007;
    case 1008:
        return CLOSE_1008;
    case 1011:
        return CLOSE_1011;
    case VB_WS_CLOSE_ABNORMAL:
    case VB_WS_CLOSE_NO_STATUS:
        return CLOSE_ABNORMAL;
    default:
        return CLOSE_OTHER;
    }
}

/* Decides what a lost connection means for its call and says so in the
 * log. Returns a FAIL_* when retrying is pointless (the call ends), else
 * -1. */
static int explain_loss(call_t *call, conn_t *c, const vb_ws_close_info_t *i,
                        char *why, size_t whysz)
{
    vb_gemini_stage_t *s = c->s;
    const char *id = lid(call);
    uint16_t code = i->code_received;
    /* Only closes: the upgrade's HTTP status is read below. */
    vb_gemini_close_class_t cls = vb_gemini_close_classify(0, code, i->reason);
    if (cls == VB_GEMINI_CLOSE_CONFIG) {
        vb_log_error(id, "gemini rejected the session",
                     "code=1007 reason=%s hint=%s", i->reason,
                     "bad API key or invalid argument: check GEMINI_API_KEY "
                     "and the setup settings (voice, language, VAD)");
        snprintf(why, whysz, "gemini rejected the session (1007: %s)",
                 i->reason);
        return FAIL_REJECTED;
    }
    if (cls == VB_GEMINI_CLOSE_TRANSIENT) {
        /* The service drops a healthy session now and then with these
         * (seen in recorded sessions and handled so by peers): resume with
         * the handle, within the usual retry budget. A resumed connection
         * closed so again may mean the handle itself is gone: the next try
         * starts a fresh session. */
        bool drop = c->resumed && call->transient_1008 > 0;
        call->transient_1008++;
        vb_log_warn(id, "gemini closed the session transiently, resuming",
                    "code=1008 reason=%s attempt=%u action=%s", i->reason,
                    call->attempts + 1,
                    drop ? "new session without history" : "resume");
        if (drop)
            call->handle[0] = '\0';
        return -1;
    }
    if (cls == VB_GEMINI_CLOSE_MODEL) {
        vb_log_error(id, "gemini model not found",
                     "code=1008 model=%s reason=%s hint=%s", s->model,
                     i->reason,
                     "set --gemini-model (VOXBRIDGE_GEMINI_MODEL) to a "
                     "current Live model, see docs/gemini.md");
        snprintf(why, whysz, "gemini model %s not found (1008)", s->model);
        return FAIL_REJECTED;
    }
    if (cls == VB_GEMINI_CLOSE_POLICY) {
        if (c->resumed) {
            /* A stale or unknown handle: start a fresh session. */
            vb_log_warn(id, "gemini refused the resumption handle",
                        "code=1008 reason=%s action=%s", i->reason,
                        "new session without history");
            call->handle[0] = '\0';
            return -1;
        }
        vb_log_error(id, "gemini closed the session for a policy reason",
                     "code=1008 reason=%s", i->reason);
        snprintf(why, whysz, "gemini policy violation (1008: %s)", i->reason);
        return FAIL_REJECTED;
    }
    if (i->err == VB_ECERT || i->err == VB_EAUTH ||
        (i->http_status >= 400 && i->http_status < 500)) {
        vb_log_error(id, "gemini connection refused",
                     "err=%s http_status=%d url_host=%s hint=%s",
                     vb_err_name(i->err), i->http_status, s->u.host,
                     i->err == VB_ECERT ? "TLS certificate not trusted "
                                          "(see --gemini-ca-file)"
                                        : "check --gemini-url and "
                                          "GEMINI_API_KEY");
        snprintf(why, whysz, "gemini connection refused (%s, HTTP %d)",
                 vb_err_name(i->err), i->http_status);
        return i->err == VB_ECERT ? FAIL_CERT : FAIL_REJECTED;
    }
    if (code == 1011)
        vb_log_warn(id, "gemini server error, reconnecting",
                    "code=1011 reason=%s attempt=%u", i->reason,
                    call->attempts + 1);
    else
        vb_log_warn(id, "gemini connection lost, reconnecting",
                    "code=%u reason=%s err=%s state=%d attempt=%u",
                    (unsigned)code, i->reason, vb_err_name(i->err), (int)c->st,
                    call->attempts + 1);
    return -1;
}

static void ws_on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    conn_t *c = ud;
    vb_gemini_stage_t *s = c->s;
    c->ws = NULL;
    vb_ws_destroy(ws);
    vb_metrics_counter_add(s->st.shard,
                           s->m_close[close_index(info->code_received)], 1);
    call_t *call = c->call;
    bool by_us = c->by_us;
    bool was_cur = call != NULL && call->cur == c;
    bool was_old = call != NULL && call->old == c;
    bool was_ready = c->st == CONN_READY;
    bool goaway = c->goaway;
    uint64_t t_alive = c->t_alive;
    conn_detach(c);
    if (was_old && !by_us && !call->ended) {
        /* The server closed the old connection (its goAway time ran out)
         * before it finished its turn: the new one takes over. */
        vb_log_info(lid(call), "old gemini connection closed while draining",
                    "code=%u", (unsigned)info->code_received);
        conn_free(c);
        if (call->open)
            abuf_flush(s, call);
        vb_call_tools_flush(call->tools);
        return;
    }
    if (call == NULL || by_us || call->ended) {
        if (call != NULL && !by_us)
            vb_log_debug(lid(call), "gemini connection closed", "code=%u",
                         (unsigned)info->code_received);
        conn_free(c);
        return;
    }
    char why[200] = "";
    int fail = explain_loss(call, c, info, why, sizeof(why));
    /* Readiness hears of rejections at setup time only: a close after
     * setupComplete (a mid-call 1008) ends this call, and says nothing of
     * the configuration the next call sets up with. */
    if (fail == FAIL_REJECTED && !was_ready && s->o->on_verdict != NULL)
        s->o->on_verdict(s->o->verdict_ud, false, why);
    conn_free(c);
    if (fail >= 0) {
        call_end(call, fail, why);
        return;
    }
    if (was_cur && was_ready && call->open && call->wait_since == 0)
        call->wait_since = t_alive;
    if (was_cur && goaway && call->nxt != NULL)
        return; /* the replacement is already on its way */
    if (call->nxt != NULL)
        return; /* the old one went while the new one sets up: fine */
    schedule_retry(call, was_ready ? RC_CLOSED : RC_FAILED,
                   was_ready ? "connection closed" : "connection failed");
}

/* What the model is asked to say first: the assistant's greeting, or the
 * stage's; NULL for none. */
static const char *greeting_of(const call_t *call)
{
    if (call->asst != NULL)
        return call->asst->greeting[0] ? call->asst->greeting : NULL;
    return call->s->greeting;
}

static void ws_on_open(vb_ws_t *ws, void *ud)
{
    conn_t *c = ud;
    if (c->dead || c->call == NULL)
        return;
    vb_gemini_stage_t *s = c->s;
    vb_gemini_setup_t st = s->o->setup;
    st.model = s->model;
    st.voice = s->voice;
    st.language = s->language;
    st.system_prompt = s->prompt;
    /* The call's assistant, when it has one, says who answers. */
    const vb_assistant_t *a = c->call->asst;
    vb_gemini_function_t fns[VB_ASSISTANT_MAX_TOOLS];
    const char *targets[VB_ASSISTANT_MAX_TRANSFER];
    if (a != NULL) {
        st.model = a->model;
        st.voice = a->voice;
        st.language = a->language;
        st.system_prompt = a->instructions;
        size_t nf = a->n_tools < VB_ASSISTANT_MAX_TOOLS
                        ? a->n_tools
                        : VB_ASSISTANT_MAX_TOOLS;
        for (size_t i = 0; i < nf; i++)
            fns[i] = (vb_gemini_function_t){
                .name = a->tools[i].name,
                .description =
                    a->tools[i].description[0] ? a->tools[i].description : NULL,
                .parameters_json = a->tools[i].parameters,
            };
        st.functions = fns;
        st.n_functions = nf;
        size_t nt = a->n_transfer < VB_ASSISTANT_MAX_TRANSFER
                        ? a->n_transfer
                        : VB_ASSISTANT_MAX_TRANSFER;
        for (size_t i = 0; i < nt; i++)
            targets[i] = a->transfer[i].name;
        st.transfer_targets = targets;
        st.n_transfer_targets = nt;
    }
    st.resume_handle =
        c->resumed && c->call->handle[0] ? c->call->handle : NULL;
    char *json = NULL;
    size_t len = 0;
    int rc = vb_gemini_build_setup(&st, &json, &len);
    if (rc != 0) {
        vb_log_error(lid(c->call), "could not build the setup message",
                     "err=%s", vb_err_name(rc));
        vb_ws_close(ws, 1011, "internal error");
        return;
    }
    c->st = CONN_SETUP;
    vb_ws_send_text(ws, json, len);
    free(json);
}

/* The new connection is READY: it becomes the call's active one. */
static void conn_ready(conn_t *c)
{
    vb_gemini_stage_t *s = c->s;
    call_t *call = c->call;
    uint64_t now = vb_clock_now_ns();
    vb_metrics_observe_ns(s->st.shard, s->m_setup, now - c->t_start);
    if (call->nxt != c) {
        /* setupComplete twice, or on a connection we let go: ignore. */
        return;
    }
    conn_t *old = call->cur;
    call->cur = c;
    call->nxt = NULL;
    call->act_on = false; /* a new connection: no utterance open on it */
    call->wait_since = 0;
    c->t_ready = c->t_alive = c->last_ping = now;
    /* The retry budget comes back only after healthy_ms (on_tick). */
    vb_log_info(lid(call), "gemini session ready",
                "conn=%u resumed=%d setup_ms=%.1f buffered_ms=%zu", c->n,
                c->resumed, (double)(now - c->t_start) / 1e6,
                call->alen / BYTES_PER_MS_IN);
    if (old != NULL && old->in_turn && old->ws != NULL && old->lost == NULL &&
        !call->ended) {
        /* The old connection is mid-turn: it finishes it (bounded), and
         * only then does caller audio go to the new one, so the caller
         * hears the whole answer and no second one over it. */
        if (call->old != NULL)
            conn_release(call->old, 1000, "switched to a new connection");
        call->old = old;
        call->drain_until = now + (uint64_t)VB_GEMINI_DRAIN_MS * 1000000u;
        vb_log_info(lid(call), "old gemini connection finishes its turn",
                    "conn=%u bound_ms=%u", old->n, VB_GEMINI_DRAIN_MS);
    } else if (old != NULL) {
        conn_release(old, 1000, "switched to a new connection");
    }
    if (c->goaway && !call->ended) {
        /* goAway came before setupComplete: this connection is going
         * away too, so it takes nothing; a replacement is opened at once
         * (with the handle, if any) and the caller's audio waits for it in
         * the buffer. Counted against the retry budget, so a service
         * that does this every time still ends the call. */
        if (call->open)
            call->wait_since = now;
        call->attempts++;
        call->total_attempts++;
        if (call->attempts > s->o->reconnect_max ||
            call->total_attempts > TOTAL_ATTEMPTS) {
            call_end(call, FAIL_RETRIES,
                     "gemini goAway before every setupComplete");
            return;
        }
        vb_metrics_counter_add(s->st.shard, s->m_reconnect[RC_GOAWAY], 1);
        vb_log_info(lid(call),
                    "gemini goAway before setupComplete, "
                    "switching connection",
                    "conn=%u have_handle=%d attempt=%u", c->n,
                    call->handle[0] != 0, call->attempts);
        if (conn_open(call, HOW_RESUME) != 0)
            schedule_retry(call, RC_FAILED, "could not open a new connection");
        return;
    }
    if (call->open && !call->greeted) {
        call->greeted = true;
        const char *greeting = greeting_of(call);
        if (greeting != NULL)
            send_text(call, c, greeting);
    }
    if (call->open)
        abuf_flush(s, call);
    vb_call_tools_flush(call->tools);
}

/* ---- tool calls and transfer (ai/tools.h) ---- */

/* The toolResponse goes out on the call's ready connection, else it waits
 * in the call's tools until one is ready (vb_call_tools_flush). */
static int tools_send(void *ud, const char *json, size_t len)
{
    call_t *call = ud;
    conn_t *c = call->cur;
    if (c == NULL || c->dead || c->st != CONN_READY || call->ended ||
        call->old != NULL)
        return VB_EAGAIN;
    return vb_ws_send_text(c->ws, json, len) == 0 ? 0 : VB_EAGAIN;
}

static vb_call_tools_t *call_tools(call_t *call)
{
    if (call->tools == NULL && call->s->tools != NULL) {
        vb_call_ids_t ids = {.sid = call->sid};
        call->tools = vb_call_tools_new(call->s->tools, &ids, tools_send, call);
    }
    return call->tools;
}

/* What the stage tells the model for transfer_call(target), and the
 * transfer it sets up. */
static void transfer_resolve(call_t *call, const vb_gemini_event_t *ev,
                             char *resp, size_t cap, const char **status)
{
    const vb_assistant_t *a = call->asst;
    cJSON *args = cJSON_Parse(ev->text != NULL ? ev->text : "{}");
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItem(args, "target"));
    const char *to = a != NULL && name != NULL
                         ? vb_assistant_transfer_target(a, name)
                         : NULL;
    cJSON *o = cJSON_CreateObject();
    if (to == NULL || call->transfer_to[0] != '\0') {
        char known[512] = "";
        size_t w = 0;
        for (size_t i = 0; a != NULL && i < a->n_transfer; i++) {
            int n = snprintf(known + w, sizeof(known) - w, "%s%s",
                             i ? ", " : "", a->transfer[i].name);
            if (n < 0 || (size_t)n >= sizeof(known) - w)
                break;
            w += (size_t)n;
        }
        char msg[768];
        if (call->transfer_to[0] != '\0')
            snprintf(msg, sizeof(msg), "a transfer is already under way");
        else
            snprintf(msg, sizeof(msg), "unknown transfer target %s; known: %s",
                     name != NULL ? name : "(none)", w ? known : "none");
        cJSON_AddStringToObject(o, "error", msg);
        *status = "error";
        vb_log_warn(lid(call), "transfer refused", "target=%s",
                    name != NULL ? name : "-");
    } else {
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "Transferring the caller to %s once your sentence has "
                 "played. Say nothing more.",
                 name);
        cJSON_AddStringToObject(o, "output", msg);
        *status = "ok";
        snprintf(call->transfer_to, sizeof(call->transfer_to), "%s", to);
        snprintf(call->transfer_name, sizeof(call->transfer_name), "%s", name);
        call->hangup_pending = true;
        call->hangup_at = vb_clock_now_ns() +
                          (uint64_t)call->s->o->hangup_grace_ms * 1000000u;
        snprintf(call->end_call_id, sizeof(call->end_call_id), "%s", ev->id);
        vb_log_info(lid(call), "model transfers the call", "target=%s id=%s",
                    name, ev->id);
    }
    char *txt = cJSON_PrintUnformatted(o);
    snprintf(resp, cap, "%s", txt != NULL ? txt : "{}");
    free(txt);
    cJSON_Delete(o);
    cJSON_Delete(args);
}

/* The end of a goodbye (end_call) or of the sentence before a transfer:
 * HANGUP to twilio-io, which waits for the audio before it to play. */
static void emit_goodbye(vb_gemini_stage_t *s, call_t *call, uint64_t now)
{
    if (call->transfer_to[0] != '\0')
        out_emit(s, call, VB_MSG_HANGUP, VB_MSG_HANGUP_TRANSFER,
                 call->transfer_to, strlen(call->transfer_to), now);
    else
        out_emit(s, call, VB_MSG_HANGUP, 0, "end_call", 8, now);
}

/* ---- the post-call report (ai/report.h) ---- */

/* The report's tool calls are the tool runner's log (ai/tools.h): every
 * call the model made, built-ins too, with its outcome and latency. */
static void report_tools(call_t *call)
{
    vb_report_t *r = call->rep;
    r->ntools = r->args_len = 0;
    if (call->tools == NULL)
        return;
    size_t n = 0, dropped = 0;
    const vb_tool_log_entry_t *log =
        vb_call_tools_log(call->tools, &n, &dropped);
    for (size_t i = 0; i < n; i++) {
        if (!vb_report_tool_begin(r, log[i].id, log[i].name, log[i].arguments,
                                  0))
            break;
        vb_report_tool_t *t = &r->tools[r->ntools - 1];
        snprintf(t->status, sizeof t->status, "%s", log[i].status);
        t->latency_ms = strcmp(log[i].status, "pending") == 0
                            ? -1
                            : (int64_t)log[i].latency_ms;
    }
    if (dropped > 0)
        r->tools_truncated = true;
}

/* Renders the call's report and hands it to the delivery thread, once.
 * `cl` is the CALL_CLOSE payload, or NULL when the call goes without one
 * (the stage stopping, its slot reused); then `why` is the reason. */
static void report_finish(vb_gemini_stage_t *s, call_t *call,
                          const vb_msg_close_t *cl, const char *why)
{
    if (call->rep == NULL || call->reported || !call->open)
        return;
    call->reported = true;
    tr_flush(s, call, false);
    report_tools(call);
    call->rep->failure = call->fail;
    /* Named only when the recorder opened the file: not when its
     * assistant does not record, the file existed or could not be made. */
    if (vb_recorder_file(s->cfg.recorder, call->id, call->sid,
                         call->rep->recording,
                         sizeof call->rep->recording) != 0)
        call->rep->recording[0] = '\0';
    size_t len = 0;
    char *json = vb_report_render(call->rep, cl, why, vb_clock_now_ns(), &len);
    if (json == NULL) {
        vb_log_error(lid(call), "out of memory for the post-call report", NULL);
        return;
    }
    vb_events_submit(s->o->events, call->sid, json, len);
}

static void on_tool_call(conn_t *c, const vb_gemini_event_t *ev)
{
    call_t *call = c->call;
    if (ev->id[0] == '\0') {
        vb_log_warn(lid(call), "tool call without an id ignored", "tool=%s",
                    ev->name);
        return;
    }
    vb_tool_builtin_t bi = {0};
    char resp[1024];
    const vb_tool_builtin_t *builtin = NULL;
    if (strcmp(ev->name, VB_GEMINI_END_CALL) == 0) {
        bi.response_json =
            "{\"output\":\"The call will end after your goodbye.\"}";
        bi.status = "ok";
        builtin = &bi;
        vb_log_info(lid(call), "model ended the call", "tool=%s id=%s",
                    ev->name, ev->id);
        call->hangup_pending = true;
        call->hangup_at =
            vb_clock_now_ns() + (uint64_t)c->s->o->hangup_grace_ms * 1000000u;
        snprintf(call->end_call_id, sizeof(call->end_call_id), "%s", ev->id);
    } else if (strcmp(ev->name, VB_GEMINI_TRANSFER_CALL) == 0 &&
               call->asst != NULL && call->asst->n_transfer > 0) {
        transfer_resolve(call, ev, resp, sizeof(resp), &bi.status);
        bi.response_json = resp;
        builtin = &bi;
    }
    vb_call_tools_t *ct = call_tools(call);
    if (ct == NULL) {
        /* No tool runner (out of memory): answer on our own. */
        char *json = NULL;
        size_t len;
        if (vb_gemini_build_tool_response(
                ev->id, ev->name,
                builtin ? bi.response_json
                        : "{\"error\":\"tools are unavailable\"}",
                &json, &len) == 0)
            vb_ws_send_text(c->ws, json, len);
        free(json);
        return;
    }
    vb_call_tools_call(ct, call->asst, ev->id, ev->name, ev->text, builtin);
}

/* The old connection has finished its turn (or took too long): it goes,
 * and the held caller audio and tool responses go to the new one. */
static void drain_end(call_t *call, const char *why)
{
    conn_t *old = call->old;
    if (old == NULL)
        return;
    vb_log_info(lid(call), "old gemini connection done", "conn=%u why=%s",
                old->n, why);
    conn_release(old, 1000, "switched to a new connection");
    call->old = NULL;
    if (call->open)
        abuf_flush(call->s, call);
    vb_call_tools_flush(call->tools);
}

/* The server's VAD: the caller started talking while the model's audio
 * still plays (or streams), so the caller's buffer is cleared now rather
 * than at `interrupted`, which comes later. */
static void on_voice_activity(call_t *call, const vb_gemini_event_t *ev,
                              uint64_t now)
{
    vb_gemini_stage_t *s = call->s;
    if (ev->finished || !call->open || call->ended) {
        vb_log_debug(lid(call), "gemini voice activity", "speech=%s",
                     ev->finished ? "end" : "start");
        return;
    }
    if (!call->turn_audio && now >= call->play_until)
        return; /* the model is silent: nothing to clear */
    vb_log_info(lid(call), "caller speech started over the model, clearing",
                "streaming=%d", call->turn_audio);
    backlog_purge_audio(s, call->id);
    out_emit(s, call, VB_MSG_CLEAR, 0, NULL, 0, now);
    call->play_until = 0;
    call->barged = call->turn_audio;
}

static void on_go_away(conn_t *c, const vb_gemini_event_t *ev)
{
    vb_gemini_stage_t *s = c->s;
    call_t *call = c->call;
    c->goaway = true;
    if (call->cur != c || call->nxt != NULL || call->ended)
        return;
    vb_metrics_counter_add(s->st.shard, s->m_reconnect[RC_GOAWAY], 1);
    vb_log_info(lid(call), "gemini goAway, switching connection",
                "time_left_ms=%lld conn=%u have_handle=%d",
                (long long)ev->time_left_ms, c->n, call->handle[0] != 0);
    if (call->handle[0] == '\0')
        vb_log_warn(lid(call), "no resumption handle yet", "action=%s",
                    "new session without history");
    if (conn_open(call, HOW_RESUME) != 0)
        schedule_retry(call, RC_FAILED, "could not open a new connection");
}

static int on_event(const vb_gemini_event_t *ev, void *ud)
{
    conn_t *c = ud;
    if (c->dead || c->call == NULL)
        return 1;
    vb_gemini_stage_t *s = c->s;
    call_t *call = c->call;
    uint64_t now = vb_clock_now_ns();
    switch (ev->kind) {
    case VB_GEMINI_EV_SETUP_COMPLETE:
        if (c->st == CONN_SETUP) {
            c->st = CONN_READY;
            if (s->o->on_verdict != NULL)
                s->o->on_verdict(s->o->verdict_ud, true, NULL);
            conn_ready(c);
        }
        break;
    case VB_GEMINI_EV_AUDIO:
        c->in_turn = true;
        if (ev->rate != VB_GEMINI_OUT_RATE) {
            vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_FORMAT], 1);
            VB_LOG_RATELIMITED(VB_LOG_WARN, 5000, lid(call),
                               "gemini audio in an unexpected format, dropped",
                               "rate=%u mime_type=%s", ev->rate,
                               ev->name != NULL ? ev->name : "-");
            break;
        }
        if (!call->open || call->ended) {
            vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_NOT_OPEN], 1);
            break;
        }
        if (call->barged)
            break; /* the rest of a turn the caller talked over */
        out_emit(s, call, VB_MSG_AUDIO, 0, ev->data, ev->len, now);
        call->play_until =
            (call->play_until > now ? call->play_until : now) +
            (uint64_t)ev->len * 1000000u / (VB_GEMINI_OUT_RATE * 2 / 1000);
        call->turn_audio = true;
        if (call->hangup_pending) {
            /* The goodbye is being spoken: the bound runs from its last
             * audio, so it is never cut while it streams. */
            uint64_t at = now + (uint64_t)s->o->hangup_grace_ms * 1000000u;
            if (at > call->hangup_at)
                call->hangup_at = at;
        }
        break;
    case VB_GEMINI_EV_TEXT:
        tr_append(call, 1, ev->text);
        break;
    case VB_GEMINI_EV_INPUT_TRANSCRIPT:
        tr_append(call, 0, ev->text);
        break;
    case VB_GEMINI_EV_OUTPUT_TRANSCRIPT:
        tr_append(call, 1, ev->text);
        break;
    case VB_GEMINI_EV_GENERATION_COMPLETE:
        c->in_turn = false;
        if (call->old == c)
            drain_end(call, "generationComplete");
        break;
    case VB_GEMINI_EV_INTERRUPTED:
        c->in_turn = false;
        if (call->old == c)
            drain_end(call, "interrupted");
        backlog_purge_audio(s, call->id);
        out_emit(s, call, VB_MSG_CLEAR, 0, NULL, 0, now);
        tr_flush(s, call, true);
        call->turn_audio = call->barged = false;
        call->play_until = 0;
        break;
    case VB_GEMINI_EV_VOICE_ACTIVITY:
        on_voice_activity(call, ev, now);
        break;
    case VB_GEMINI_EV_WAITING_FOR_INPUT:
        vb_log_debug(lid(call), "gemini waiting for input", NULL);
        break;
    case VB_GEMINI_EV_TURN_COMPLETE:
        c->in_turn = false;
        if (call->old == c)
            drain_end(call, "turnComplete");
        if (ev->text != NULL && ev->text[0] != '\0')
            vb_log_info(lid(call), "gemini turn complete", "reason=%s",
                        ev->text);
        call->barged = false;
        out_emit(s, call, VB_MSG_TURN_END, 0, NULL, 0, now);
        tr_flush(s, call, false);
        if (call->hangup_pending && !call->turn_audio) {
            /* The tool call's turn said nothing: the goodbye comes in a
             * later turn (non-blocking tools), or never (hangup_at). */
            vb_log_info(lid(call), "end_call: waiting for the goodbye",
                        "id=%s wait_ms=%llu", call->end_call_id,
                        (unsigned long long)((call->hangup_at > now
                                                  ? call->hangup_at - now
                                                  : 0) /
                                             1000000u));
        } else if (call->hangup_pending) {
            call->hangup_pending = false;
            emit_goodbye(s, call, now);
            call->ended = true;
            if (call->rep != NULL)
                call->rep->model_hangup = true;
        }
        call->turn_audio = false;
        break;
    case VB_GEMINI_EV_TOOL_CALL:
        on_tool_call(c, ev);
        break;
    case VB_GEMINI_EV_TOOL_CANCEL:
        if (call->hangup_pending && strcmp(ev->id, call->end_call_id) == 0) {
            call->hangup_pending = false;
            call->transfer_to[0] = '\0';
            vb_log_info(lid(call), "end_call cancelled by the model", "id=%s",
                        ev->id);
        }
        vb_call_tools_cancel(call->tools, ev->id);
        break;
    case VB_GEMINI_EV_GO_AWAY:
        on_go_away(c, ev);
        break;
    case VB_GEMINI_EV_RESUMPTION:
        if (ev->resumable && ev->id[0] != '\0') {
            if (strlen(ev->id) < sizeof(call->handle))
                snprintf(call->handle, sizeof(call->handle), "%s", ev->id);
            else
                VB_LOG_RATELIMITED(VB_LOG_WARN, 60000, lid(call),
                                   "resumption handle too long, ignored",
                                   "len=%zu", strlen(ev->id));
        }
        break;
    case VB_GEMINI_EV_USAGE: {
        const int64_t v[TOK_COUNT] = {ev->usage.prompt, ev->usage.response,
                                      ev->usage.thoughts, ev->usage.total};
        for (int i = 0; i < TOK_COUNT; i++)
            if (v[i] > 0)
                vb_metrics_counter_add(s->st.shard, s->m_tokens[i],
                                       (uint64_t)v[i]);
        if (ev->usage.total > 0)
            call->tokens += ev->usage.total;
        if (call->rep != NULL)
            vb_report_usage(call->rep, ev->usage.prompt, ev->usage.response,
                            ev->usage.thoughts, ev->usage.total);
        break;
    }
    case VB_GEMINI_EV_UNKNOWN:
        vb_log_warn(lid(call), "unknown gemini message type", "type=%s",
                    ev->name);
        break;
    default:
        break;
    }
    return c->dead || c->call == NULL ? 1 : 0;
}

static void ws_on_message(vb_ws_t *ws, bool text, const uint8_t *data,
                          size_t len, void *ud)
{
    (void)ws;
    (void)text; /* the service sends binary frames; accept both */
    conn_t *c = ud;
    if (c->dead || c->call == NULL)
        return;
    vb_gemini_stage_t *s = c->s;
    c->busy++;
    call_t *call = c->call;
    int rc = vb_gemini_parse(c->parser, data, len, on_event, c);
    /* Every functionCall of this message is in: answer them together. */
    if (call != NULL)
        vb_call_tools_end_batch(call->tools);
    c->busy--;
    if (rc != 0 && rc != VB_ECANCELED) {
        vb_metrics_counter_add(s->st.shard, s->m_bad_msg, 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 5000, lid(c->call),
                           "unusable gemini message ignored",
                           "err=%s bytes=%zu", vb_err_name(rc), len);
        /* The tick drops it: not from inside its own callback. */
        if (++c->bad_run >= VB_GEMINI_BAD_MSG_MAX && c->lost == NULL)
            c->lost = "only unusable messages";
    } else if (rc == 0) {
        c->bad_run = 0;
    }
    if (c->dead)
        conn_free(c);
}

static void ws_on_pong(vb_ws_t *ws, const uint8_t *data, size_t len, void *ud)
{
    (void)ws;
    (void)data;
    (void)len;
    conn_t *c = ud;
    if (c->dead || c->call == NULL)
        return;
    bool held = c->ping_at != 0;
    c->ping_at = 0;
    c->t_alive = vb_clock_now_ns();
    /* Audio held while the ping was unanswered goes out now, in order. */
    if (held && c->call->open && c->call->cur == c)
        abuf_flush(c->s, c->call);
}

static int conn_open(call_t *call, how_t how)
{
    vb_gemini_stage_t *s = call->s;
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return VB_ENOMEM;
    c->s = s;
    c->call = call;
    c->n = ++call->nconn;
    c->resumed = how == HOW_RESUME && call->handle[0] != '\0';
    c->t_start = vb_clock_now_ns();
    c->deadline = c->t_start + (uint64_t)s->o->connect_timeout_ms * 1000000u;
    vb_gemini_limits_t lim = {.max_message = s->o->max_message,
                              .audio_chunk = s->cfg.out->data_max};
    int rc = vb_gemini_parser_create(&lim, &c->parser);
    if (rc != 0) {
        free(c);
        return rc;
    }
    vb_transport_t *t = NULL;
    if (s->u.secure)
        rc = vb_tls_connect(&s->st.loop, s->tls, s->u.host, s->u.port, NULL,
                            lid(call), &t);
    else
        rc = vb_tcp_connect(&s->st.loop, s->u.host, s->u.port, &t);
    if (rc != 0) {
        vb_log_warn(lid(call), "gemini connect failed", "host=%s err=%s",
                    s->u.host, vb_err_name(rc));
        vb_gemini_parser_destroy(c->parser);
        free(c);
        return rc;
    }
    vb_ws_config_t wcfg = {
        .role = VB_WS_CLIENT,
        .max_message = s->o->max_message,
        .handshake_timeout_ms = s->o->connect_timeout_ms,
        .log_id = lid(call),
    };
    vb_ws_callbacks_t cb = {
        .on_message = ws_on_message,
        .on_close = ws_on_close,
        .on_open = ws_on_open,
        .on_pong = ws_on_pong,
    };
    if (call->nxt != NULL)
        conn_kill(call->nxt);
    call->nxt = c;
    rc = vb_ws_connect(&s->st.loop, t, &wcfg, &cb, c, s->url,
                       s->key_header ? s->headers : NULL, &c->ws);
    if (rc != 0) {
        call->nxt = NULL;
        vb_log_error(lid(call), "gemini websocket setup failed", "err=%s",
                     vb_err_name(rc));
        vb_gemini_parser_destroy(c->parser);
        free(c);
        return rc;
    }
    c->active = true;
    vb_metrics_gauge_add(s->st.shard, s->m_active, 1);
    vb_metrics_counter_add(s->st.shard, s->m_how[how], 1);
    if (vb_chan_pressured(s->cfg.out))
        vb_ws_read_pause(c->ws, true);
    vb_log_debug(lid(call), "gemini connecting", "conn=%u how=%s", c->n,
                 how_names[how]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* calls                                                               */
/* ------------------------------------------------------------------ */

static call_t *call_new(vb_gemini_stage_t *s, const char *sid)
{
    call_t *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    if (!s->stopping && !uv_is_active((uv_handle_t *)&s->tick))
        uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    call->acap = (size_t)s->o->prebuffer_ms * BYTES_PER_MS_IN;
    call->abuf = malloc(call->acap);
    if (s->o->events != NULL)
        call->rep = malloc(sizeof(*call->rep));
    if (call->abuf == NULL || (s->o->events != NULL && call->rep == NULL)) {
        free(call->abuf);
        free(call->rep);
        free(call);
        return NULL;
    }
    if (call->rep != NULL)
        vb_report_init(call->rep, NULL, NULL, vb_clock_now_ns());
    call->s = s;
    call->fail = -1;
    snprintf(call->sid, sizeof(call->sid), "%s", sid);
    call->t_created = vb_clock_now_ns();
    call->next = s->calls;
    if (s->calls != NULL)
        s->calls->prev = call;
    s->calls = call;
    s->ncalls++;
    return call;
}

static void call_free(vb_gemini_stage_t *s, call_t *call, const char *why)
{
    report_finish(s, call, NULL, s->stopping ? "shutdown" : why);
    tr_flush(s, call, false);
    if (call->open)
        vb_log_info(lid(call), "gemini call finished",
                    "why=%s failure=%s seconds=%.1f connections=%u "
                    "reconnects=%u audio_sent=%llu audio_dropped=%llu "
                    "tokens=%lld",
                    why, call->fail >= 0 ? fail_labels[call->fail] : "none",
                    (double)(vb_clock_now_ns() - call->t_created) / 1e9,
                    call->nconn, call->nconn > 0 ? call->nconn - 1 : 0,
                    (unsigned long long)call->audio_sent,
                    (unsigned long long)call->audio_dropped,
                    (long long)call->tokens);
    if (call->cur != NULL)
        conn_release(call->cur, 1000, "call ended");
    if (call->old != NULL)
        conn_release(call->old, 1000, "call ended");
    if (call->nxt != NULL)
        conn_kill(call->nxt);
    if (call->open && call->id.slot < s->o->max_calls &&
        s->by_slot[call->id.slot] == call)
        s->by_slot[call->id.slot] = NULL;
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        s->calls = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    s->ncalls--;
    vb_assistant_url_cancel(call->areq);
    vb_call_tools_free(call->tools);
    vb_assistant_unref(call->asst);
    free(call->abuf);
    free(call->rep);
    free(call);
}

/* The fallback text cut to one message of `max` bytes at a UTF-8
 * character boundary. */
static size_t fallback_len(const char *text, size_t max)
{
    size_t n = text != NULL ? strlen(text) : 0;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--;
    }
    return n;
}

/* Ends the call politely because the model cannot be reached (`fail`, a
 * FAIL_*): HANGUP with the fallback text (if the stream is open), so the
 * caller is told before the call ends; connections closed. The call's
 * state stays until CALL_CLOSE (or, for a call that never opened, until
 * the next tick). */
static void call_end(call_t *call, int fail, const char *reason)
{
    if (call->ended)
        return;
    vb_gemini_stage_t *s = call->s;
    call->ended = true;
    call->retry_at = 0;
    call->fail = fail;
    vb_log_error(lid(call), "ending the call: gemini unavailable",
                 "why=%s failure=%s fallback=%d", reason, fail_labels[fail],
                 s->o->fallback_say != NULL && s->o->fallback_say[0] != '\0');
    if (call->open) {
        vb_metrics_counter_add(s->st.shard, s->m_failed[fail], 1);
        const char *say = s->o->fallback_say;
        out_emit(s, call, VB_MSG_HANGUP, VB_MSG_HANGUP_FALLBACK, say,
                 fallback_len(say, s->cfg.out->data_max), vb_clock_now_ns());
    } else {
        call->reap = true;
    }
    if (call->cur != NULL)
        conn_release(call->cur, 1000, "call ended");
    if (call->old != NULL)
        conn_release(call->old, 1000, "call ended");
    if (call->nxt != NULL)
        conn_kill(call->nxt);
}

static void schedule_retry(call_t *call, int why, const char *what)
{
    vb_gemini_stage_t *s = call->s;
    if (call->ended || s->stopping)
        return;
    if (call->open && call->cur == NULL && call->wait_since == 0)
        call->wait_since = vb_clock_now_ns();
    call->attempts++;
    call->total_attempts++;
    if (call->attempts > s->o->reconnect_max ||
        call->total_attempts > TOTAL_ATTEMPTS) {
        char reason[160];
        snprintf(reason, sizeof(reason),
                 "gemini connection lost (%s) after %u attempts", what,
                 call->attempts - 1);
        call_end(call, FAIL_RETRIES, reason);
        return;
    }
    vb_metrics_counter_add(s->st.shard, s->m_reconnect[why], 1);
    uint64_t delay_ms = (uint64_t)s->o->reconnect_backoff_ms
                        << (call->attempts - 1 < 10 ? call->attempts - 1 : 10);
    call->retry_at = vb_clock_now_ns() + delay_ms * 1000000u;
    vb_log_info(lid(call), "gemini reconnect scheduled",
                "why=%s attempt=%u delay_ms=%llu", what, call->attempts,
                (unsigned long long)delay_ms);
}

static call_t *find_by_sid(vb_gemini_stage_t *s, const char *sid, bool open)
{
    if (sid[0] == '\0')
        return NULL;
    for (call_t *c = s->calls; c != NULL; c = c->next)
        if (c->open == open && strcmp(c->sid, sid) == 0)
            return c;
    return NULL;
}

static call_t *lookup(vb_gemini_stage_t *s, vb_call_id_t id)
{
    if (id.slot >= s->o->max_calls)
        return NULL;
    call_t *c = s->by_slot[id.slot];
    return c != NULL && c->id.gen == id.gen ? c : NULL;
}

/* The CallSid and the assistant's name of a CALL_OPEN (vb_msg_open_t)
 * payload. */
static void open_sid(const vb_msg_t *m, char *out, char *asst, size_t asz)
{
    vb_msg_open_t o;
    memset(&o, 0, sizeof(o));
    memcpy(&o, m->data, m->len < sizeof(o) ? m->len : sizeof(o));
    o.call_sid[sizeof(o.call_sid) - 1] = '\0';
    o.assistant[sizeof(o.assistant) - 1] = '\0';
    snprintf(out, SID_MAX, "%s", o.call_sid);
    snprintf(asst, asz, "%s", o.assistant);
}

/* The assistant of a call the webhook of this process did not prepare:
 * the one the stream names (its MAC verified by twilio-io), else the
 * current default. NULL without a store. */
static vb_assistant_t *open_assistant(vb_gemini_stage_t *s, const char *sid,
                                      const char *name)
{
    vb_assistant_store_t *st = s->cfg.assistants;
    if (st == NULL)
        return NULL;
    vb_assistant_t *a = name[0] ? vb_assistant_store_find(st, name) : NULL;
    if (a == NULL) {
        if (name[0])
            vb_log_warn(sid,
                        "assistant named by the stream not found: "
                        "using the default",
                        "assistant=%s", name);
        vb_assistants_t *set = vb_assistant_store_get(st);
        a = vb_assistant_ref(vb_assistants_default(set));
        vb_assistants_unref(set);
    }
    return a;
}

/* The call's identifiers for tool requests, from the webhook's context. */
static void tools_ids_from_ctx(call_t *call, const vb_call_ctx_t *x)
{
    vb_call_ids_t ids = {.sid = x->call_sid,
                         .account_sid = x->account_sid,
                         .from = x->from,
                         .to = x->to,
                         .direction = x->direction};
    vb_call_tools_set_ids(call_tools(call), &ids);
}

/* The account SID of the stream's `start`, for a call the webhook of this
 * process did not prepare (the webhook's context has it otherwise). */
static void tools_ids_from_open(call_t *call, const vb_msg_t *m)
{
    vb_msg_open_t o;
    memset(&o, 0, sizeof(o));
    memcpy(&o, m->data, m->len < sizeof(o) ? m->len : sizeof(o));
    o.account_sid[sizeof(o.account_sid) - 1] = '\0';
    vb_call_ids_t ids = {.account_sid = o.account_sid};
    vb_call_tools_set_ids(call_tools(call), &ids);
}

static void on_prepare(vb_gemini_stage_t *s, const vb_msg_t *m)
{
    vb_msg_prepare_t p;
    if (vb_msg_prepare_get(m, &p) != 0) {
        vb_log_warn(NULL, "malformed PREPARE message ignored", "len=%u",
                    (unsigned)m->len);
        return;
    }
    p.call_sid[sizeof(p.call_sid) - 1] = '\0';
    const char *sid = p.call_sid;
    if (m->flags & VB_MSG_PREPARE_CANCEL) {
        /* The call is over and its stream never came. */
        call_t *gone = find_by_sid(s, sid, false);
        vb_call_ctx_destroy(p.ctx);
        if (gone != NULL) {
            vb_log_info(sid,
                        "pre-connected gemini session dropped: the call "
                        "ended before its stream",
                        NULL);
            call_free(s, gone, "not claimed");
        }
        return;
    }
    if (sid[0] == '\0' || find_by_sid(s, sid, false) != NULL ||
        find_by_sid(s, sid, true) != NULL) {
        vb_call_ctx_destroy(p.ctx);
        return; /* a retried webhook, or the stream was faster */
    }
    if (s->ncalls >= 2 * s->o->max_calls) {
        vb_log_warn(sid, "too many gemini sessions, not pre-connecting",
                    "calls=%u", s->ncalls);
        vb_call_ctx_destroy(p.ctx);
        return;
    }
    call_t *call = call_new(s, sid);
    if (call == NULL) {
        vb_call_ctx_destroy(p.ctx);
        return;
    }
    if (p.ctx != NULL) {
        call->asst = vb_assistant_ref(p.ctx->assistant);
        snprintf(call->direction, sizeof call->direction, "%s",
                 p.ctx->direction);
        tools_ids_from_ctx(call, p.ctx);
        vb_call_ctx_destroy(p.ctx);
    }
    /* Unclaimed sessions go at the TTL, or when the stream token the
     * webhook handed out expires, whichever comes first. */
    uint64_t ttl_ms = s->o->prepare_ttl_ms;
    int64_t left_s = p.expiry_s - (int64_t)vb_clock_wall_s();
    if (p.expiry_s > 0 && left_s >= 0 && (uint64_t)left_s * 1000 < ttl_ms)
        ttl_ms = (uint64_t)left_s * 1000;
    call->prepare_deadline = vb_clock_now_ns() + ttl_ms * 1000000u;
    if (conn_open(call, HOW_PRECONNECT) != 0)
        schedule_retry(call, RC_FAILED, "could not connect");
}

static void on_call_open(vb_gemini_stage_t *s, const vb_msg_t *m)
{
    if (m->call.slot >= s->o->max_calls) {
        vb_log_error(NULL, "call slot beyond the gemini call table",
                     "lane=%d slot=%u", s->o->lane, m->call.slot);
        return;
    }
    call_t *old = s->by_slot[m->call.slot];
    if (old != NULL)
        call_free(s, old, "slot reused");
    char sid[SID_MAX], aname[64];
    open_sid(m, sid, aname, sizeof aname);
    call_t *call = find_by_sid(s, sid, false);
    bool prepared = call != NULL && !call->ended;
    /* The webhook answered here: its assistant outlives a failed
     * pre-connect, and is not asked for again. */
    vb_assistant_t *answered = NULL;
    if (call != NULL && call->ended) {
        answered = call->asst;
        call->asst = NULL;
        call_free(s, call, "pre-connect failed");
        call = NULL;
    }
    if (call == NULL && (call = call_new(s, sid)) == NULL) {
        vb_log_error(sid, "out of memory for a gemini call", NULL);
        vb_assistant_unref(answered);
        return;
    }
    if (answered != NULL)
        call->asst = answered;
    call->open = true;
    call->id = m->call;
    call->prepare_deadline = 0;
    snprintf(call->aname, sizeof call->aname, "%s", aname);
    tools_ids_from_open(call, m);
    if (call->rep != NULL) {
        vb_msg_open_t op;
        memset(&op, 0, sizeof(op));
        memcpy(&op, m->data, m->len < sizeof(op) ? m->len : sizeof(op));
        vb_report_init(call->rep, &op, NULL, vb_clock_now_ns());
        if (call->direction[0] != '\0')
            snprintf(call->rep->direction, sizeof call->rep->direction, "%s",
                     call->direction);
    }
    s->by_slot[m->call.slot] = call;
    if (!prepared && call->asst == NULL && asst_request(s, call, m) == 0)
        return;
    call_start(s, call, prepared);
}

/* The call's assistant is known: its limit is set, and the session
 * starts (or, pre-connected, resumes) with it. */
static void call_start(vb_gemini_stage_t *s, call_t *call, bool prepared)
{
    /* The recovery bound runs from here: a repeated assistant request has
     * its own. */
    if (call->cur == NULL || call->cur->st != CONN_READY)
        call->wait_since = vb_clock_now_ns();
    if (call->asst == NULL)
        call->asst = open_assistant(s, call->sid, call->aname);
    /* --max-call-duration stays the ceiling (twilio-io ends the call
     * there); a shorter limit of the assistant ends it here. */
    if (call->asst != NULL && call->asst->max_call_s > 0 &&
        (s->o->max_call_s == 0 || call->asst->max_call_s < s->o->max_call_s))
        call->max_end_at =
            vb_clock_now_ns() + (uint64_t)call->asst->max_call_s * 1000000000u;
    vb_log_info(lid(call), "gemini call open",
                "lane=%d slot=%u preconnected=%d ready=%d assistant=%s",
                s->o->lane, call->id.slot, prepared,
                call->cur != NULL && call->cur->st == CONN_READY,
                call->asst != NULL ? call->asst->name : "-");
    if (call->cur == NULL && call->nxt == NULL && call->retry_at == 0) {
        if (conn_open(call, prepared ? HOW_RESUME : HOW_AT_START) != 0)
            schedule_retry(call, RC_FAILED, "could not connect");
    } else if (can_stream(call) && !call->greeted) {
        call->greeted = true;
        const char *greeting = greeting_of(call);
        if (greeting != NULL)
            send_text(call, call->cur, greeting);
    }
}

/* The repeated call.incoming ended: the answer is used as the webhook's
 * instance used it (an object, a name; 204, a timeout or a failure: the
 * assistant the stream names). */
static void asst_answer(void *ud, int outcome, vb_assistant_t *chosen,
                        const char *why)
{
    call_t *call = ud;
    vb_gemini_stage_t *s = call->s;
    call->areq = NULL;
    vb_metrics_counter_add(s->st.shard, s->m_aurl[outcome], 1);
    call->asst = chosen;
    if (chosen != NULL && call->rep != NULL)
        snprintf(call->rep->assistant, sizeof call->rep->assistant, "%s",
                 chosen->name);
    if (outcome >= VB_AURL_TIMEOUT)
        vb_log_warn(lid(call),
                    "repeated assistant request failed: the assistant the "
                    "stream names answers",
                    "outcome=%s why=%s assistant=%s",
                    vb_assistant_url_outcome(outcome), why, call->aname);
    else
        vb_log_info(lid(call), "repeated assistant request answered",
                    "outcome=%s", vb_assistant_url_outcome(outcome));
    call_start(s, call, false);
}

/* A stream whose assistant an --assistant-url answer built on another
 * instance: asks the URL again with the webhook's body, on this loop.
 * Returns 0 (the setup waits for the answer), or -1: start at once with
 * the assistant the stream names. */
static int asst_request(vb_gemini_stage_t *s, call_t *call, const vb_msg_t *m)
{
    vb_msg_open_t o;
    memset(&o, 0, sizeof(o));
    memcpy(&o, m->data, m->len < sizeof(o) ? m->len : sizeof(o));
    if (!o.assistant_from_url || s->aurl == NULL || s->cfg.assistants == NULL)
        return -1;
    o.account_sid[sizeof(o.account_sid) - 1] = '\0';
    o.from[sizeof(o.from) - 1] = o.to[sizeof(o.to) - 1] = '\0';
    o.direction[sizeof(o.direction) - 1] = '\0';
    vb_assistants_t *set = vb_assistant_store_get(s->cfg.assistants);
    const vb_assistant_t *number = vb_assistants_find(set, call->aname);
    if (number == NULL)
        number = vb_assistants_default(set);
    vb_call_ctx_t *ctx =
        vb_call_ctx_create(call->sid, o.account_sid, o.from, o.to,
                           o.direction[0] ? o.direction : "inbound", NULL);
    int rc = ctx == NULL
                 ? VB_ENOMEM
                 : vb_assistant_url_request(s->aurl, ctx, set, number,
                                            asst_answer, call, &call->areq);
    vb_call_ctx_destroy(ctx);
    vb_assistants_unref(set);
    if (rc != 0) {
        vb_metrics_counter_add(s->st.shard, s->m_aurl[VB_AURL_ERROR], 1);
        vb_log_warn(lid(call),
                    "repeated assistant request not sent: the assistant the "
                    "stream names answers",
                    "err=%s assistant=%s", vb_err_name(rc), call->aname);
        return -1;
    }
    vb_log_info(
        lid(call), "stream from another instance: assistant asked again",
        "lane=%d slot=%u assistant=%s", s->o->lane, call->id.slot, call->aname);
    return 0;
}

static void on_audio(vb_gemini_stage_t *s, const vb_msg_t *m)
{
    call_t *call = lookup(s, m->call);
    if (call == NULL) {
        vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_STALE], 1);
        return;
    }
    if (call->ended) {
        vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_ENDED], 1);
        return;
    }
    if (can_stream(call) && call->alen > 0) {
        /* Older audio is still waiting (a send failed earlier): keep the
         * order. */
        abuf_push(s, call, m->data, m->len);
        abuf_flush(s, call);
        return;
    }
    if (can_stream(call)) {
        int rc = send_audio(s, call->cur, m->data, m->len);
        if (rc == 0) {
            uint64_t now = vb_clock_now_ns();
            if (m->t_origin != 0 && now > m->t_origin)
                vb_metrics_observe_ns(s->st.shard, s->m_lat_in,
                                      now - m->t_origin);
            return;
        }
        if (rc == VB_ENOSPC) {
            call->audio_dropped += m->len;
            vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_WS_FULL], 1);
            VB_LOG_RATELIMITED(VB_LOG_WARN, 2000, lid(call),
                               "gemini socket backlog, caller audio dropped",
                               "bytes=%u", (unsigned)m->len);
            return;
        }
        /* The connection is failing; keep the audio for the next one. */
    }
    abuf_push(s, call, m->data, m->len);
}

static void on_dtmf(vb_gemini_stage_t *s, const vb_msg_t *m)
{
    call_t *call = lookup(s, m->call);
    if (call == NULL || m->len == 0 || s->dtmf_text == NULL)
        return;
    char digit[2] = {(char)m->data[0], '\0'};
    if (!can_stream(call)) {
        vb_log_info(lid(call), "key press while gemini is not ready, ignored",
                    "digit=%s", digit);
        return;
    }
    /* Replace "%s" by hand: the template is configuration, not a format. */
    char text[512];
    const char *at = strstr(s->dtmf_text, "%s");
    if (at == NULL)
        snprintf(text, sizeof(text), "%s", s->dtmf_text);
    else
        snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - s->dtmf_text),
                 s->dtmf_text, digit, at + 2);
    abuf_flush(s, call);
    send_text(call, call->cur, text);
    vb_log_info(lid(call), "key press told to the model", "digit=%s", digit);
}

/* One message from dsp or the ingress. */
static bool in_one(void *ud, const vb_msg_t *m)
{
    vb_gemini_stage_t *s = ud;
    switch (m->kind) {
    case VB_MSG_CALL_OPEN:
        on_call_open(s, m);
        break;
    case VB_MSG_AUDIO:
        on_audio(s, m);
        break;
    case VB_MSG_DTMF:
        on_dtmf(s, m);
        break;
    case VB_MSG_CALL_CLOSE: {
        call_t *call = lookup(s, m->call);
        if (call == NULL)
            break;
        abuf_send(s, call, true);
        if (call->alen > 0) { /* no connection could take it: say so */
            call->audio_dropped += call->alen;
            vb_metrics_counter_add(s->st.shard, s->m_drop[DROP_UNSENT], 1);
            vb_log_warn(lid(call),
                        "caller audio not sent before the call closed",
                        "bytes=%zu", call->alen);
        }
        vb_msg_close_t cl;
        vb_msg_close_get(m, &cl);
        report_finish(s, call, &cl, cl.reason);
        call_free(s, call, "call closed");
        break;
    }
    case VB_MSG_PREPARE:
        on_prepare(s, m);
        break;
    default:
        break;
    }
    return true;
}

/* Drops a connection that stopped answering (or only sends garbage) and
 * has it replaced with the handle, as after a 1011 close. */
static void conn_lost(conn_t *c, int rc_why, const char *what, uint64_t now)
{
    call_t *call = c->call;
    bool was_cur = call->cur == c;
    vb_log_warn(lid(call), "gemini connection unresponsive, replacing it",
                "conn=%u why=%s state=%d silent_ms=%llu pending=%zu", c->n,
                what, (int)c->st,
                (unsigned long long)(c->t_alive != 0 && now > c->t_alive
                                         ? (now - c->t_alive) / 1000000u
                                         : 0),
                c->ws != NULL ? vb_ws_pending(c->ws) : (size_t)0);
    if (was_cur && call->open && call->wait_since == 0)
        call->wait_since = c->t_alive != 0 ? c->t_alive : now;
    conn_kill(c);
    if (was_cur && call->nxt != NULL)
        return; /* a replacement is already on its way */
    schedule_retry(call, rc_why, what);
}

/* Pings, pong deadline, send backlog, garbage: one connection per call. */
static void conn_check(vb_gemini_stage_t *s, conn_t *c, uint64_t now)
{
    if (c == NULL || c->ws == NULL || c->st == CONN_CONNECTING ||
        vb_ws_state(c->ws) != VB_WS_OPEN)
        return;
    const vb_gemini_options_t *o = s->o;
    if (c->lost != NULL) {
        conn_lost(c, RC_INVALID, c->lost, now);
        return;
    }
    if (vb_chan_pressured(s->cfg.out)) {
        /* We are not reading: no pong can arrive. Start afresh later. */
        c->ping_at = 0;
        c->last_ping = now;
        c->backlog_since = 0;
        return;
    }
    uint64_t timeout = (uint64_t)o->pong_timeout_ms * 1000000u;
    if (c->ping_at != 0 && now - c->ping_at >= timeout) {
        conn_lost(c, RC_UNRESPONSIVE, "ping unanswered", now);
        return;
    }
    if (vb_ws_pending(c->ws) > VB_GEMINI_BACKLOG_STALL_BYTES) {
        if (c->backlog_since == 0) {
            c->backlog_since = now;
        } else if (now - c->backlog_since >= timeout) {
            conn_lost(c, RC_UNRESPONSIVE, "send backlog not draining", now);
            return;
        }
    } else {
        c->backlog_since = 0;
    }
    if (c->ping_at == 0 &&
        now - c->last_ping >= (uint64_t)o->ping_interval_ms * 1000000u) {
        if (c->t_alive == 0)
            c->t_alive = now;
        c->last_ping = now;
        if (vb_ws_send_ping(c->ws, "vb", 2) == 0)
            c->ping_at = now;
    }
}

static void on_tick(uv_timer_t *t)
{
    vb_gemini_stage_t *s = t->data;
    uint64_t now = vb_clock_now_ns();
    call_t *next;
    for (call_t *call = s->calls; call != NULL; call = next) {
        next = call->next;
        if (call->reap) {
            call_free(s, call, "ended");
            continue;
        }
        if (!call->open && call->prepare_deadline != 0 &&
            now >= call->prepare_deadline) {
            vb_log_info(lid(call), "pre-connected gemini session not claimed",
                        "ttl_ms=%u", s->o->prepare_ttl_ms);
            call_free(s, call, "not claimed");
            continue;
        }
        if (!call->ended) {
            conn_check(s, call->cur, now);
            conn_check(s, call->nxt, now);
        }
        if (call->cur != NULL && call->cur->st == CONN_READY &&
            call->attempts > 0 &&
            now - call->cur->t_ready >= (uint64_t)s->o->healthy_ms * 1000000u) {
            vb_log_debug(lid(call), "gemini connection healthy",
                         "conn=%u attempts_restored=%u", call->cur->n,
                         call->attempts);
            call->attempts = 0;
            call->transient_1008 = 0;
        }
        if (call->open && !call->ended && call->wait_since != 0 &&
            now - call->wait_since >=
                (uint64_t)s->o->recover_timeout_ms * 1000000u) {
            char reason[160];
            snprintf(reason, sizeof(reason),
                     "no working gemini connection for %u ms",
                     s->o->recover_timeout_ms);
            call_end(call, FAIL_RECOVER, reason);
            continue;
        }
        if (call->nxt != NULL && call->nxt->st != CONN_READY &&
            now >= call->nxt->deadline) {
            vb_log_warn(lid(call), "gemini connection timed out",
                        "conn=%u state=%d timeout_ms=%u", call->nxt->n,
                        (int)call->nxt->st, s->o->connect_timeout_ms);
            conn_kill(call->nxt);
            schedule_retry(call, RC_TIMEOUT, "connect timeout");
        }
        if (call->retry_at != 0 && now >= call->retry_at && call->nxt == NULL &&
            !call->ended) {
            call->retry_at = 0;
            bool fresh = call->handle[0] == '\0';
            if (conn_open(call, fresh && call->nconn > 0 ? HOW_FRESH_AFTER_LOSS
                                                         : HOW_RESUME) != 0)
                schedule_retry(call, RC_FAILED, "could not connect");
        }
        if (call->open && !call->ended && call->max_end_at != 0 &&
            now >= call->max_end_at) {
            vb_log_info(lid(call), "assistant's max_call_s reached: ending",
                        "assistant=%s max_call_s=%u", call->asst->name,
                        call->asst->max_call_s);
            out_emit(s, call, VB_MSG_HANGUP, VB_MSG_HANGUP_TIMEOUT,
                     "max_call_s", 10, now);
            call->ended = true;
            call->hangup_pending = false;
            if (call->cur != NULL)
                conn_release(call->cur, 1000, "call ended");
        }
        if (call->old != NULL && now >= call->drain_until)
            drain_end(call, "bound");
        if (call->hangup_pending && now >= call->hangup_at) {
            vb_log_info(lid(call), "end_call: hanging up at the bound",
                        "id=%s grace_ms=%u", call->end_call_id,
                        s->o->hangup_grace_ms);
            call->hangup_pending = false;
            emit_goodbye(s, call, now);
            call->ended = true;
            if (call->rep != NULL)
                call->rep->model_hangup = true;
            if (call->cur != NULL)
                conn_release(call->cur, 1000, "call ended");
        }
    }
    if (s->calls == NULL)
        uv_timer_stop(&s->tick); /* idle lanes arm no timer */
}

/* ------------------------------------------------------------------ */
/* thread and lifecycle                                                */
/* ------------------------------------------------------------------ */

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

/* On the stage thread as it stops: every connection dropped, every
 * call freed, then our timer closes. */
static void on_stop(void *ud)
{
    vb_gemini_stage_t *s = ud;
    s->stopping = true;
    while (s->calls != NULL) {
        call_t *call = s->calls;
        if (call->cur != NULL)
            conn_kill(call->cur);
        if (call->old != NULL)
            conn_kill(call->old);
        if (call->nxt != NULL)
            conn_kill(call->nxt);
        call_free(s, call, "stopping");
    }
    vb_tools_destroy(s->tools);
    s->tools = NULL;
    vb_assistant_url_destroy(s->aurl);
    s->aurl = NULL;
    if (s->tick.data != NULL) /* a create that failed early never made it */
        uv_close((uv_handle_t *)&s->tick, close_cb);
}

static int add_series(vb_gemini_stage_t *s)
{
    vb_metrics_t *m = s->cfg.metrics;
    int rc = vb_metrics_add(m, VB_METRIC_GAUGE, "vb_gemini_sessions_active",
                            "Gemini Live connections open (including ones "
                            "still setting up).",
                            NULL, &s->m_active);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_gemini_setup_seconds",
                             "Time from starting a Gemini connection to its "
                             "setupComplete.",
                             NULL, &s->m_setup);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
                             "Time from a message's origin (its bytes reaching "
                             "the process) to its exit from a stage.",
                             VB_LABELS("stage", "gemini_in"), &s->m_lat_in);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
                             "Time from a message's origin (its bytes reaching "
                             "the process) to its exit from a stage.",
                             VB_LABELS("stage", "gemini_out"), &s->m_lat_out);
    rc = rc ? rc
            : vb_metrics_add(m, VB_METRIC_COUNTER,
                             "vb_gemini_bad_messages_total",
                             "Gemini messages that could not be parsed.", NULL,
                             &s->m_bad_msg);
    for (int i = 0; rc == 0 && i < RC_COUNT; i++)
        rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_gemini_reconnects_total",
                            "Gemini connections opened to replace another, "
                            "by reason.",
                            VB_LABELS("reason", reconnect_labels[i]),
                            &s->m_reconnect[i]);
    for (int i = 0; rc == 0 && i < CLOSE_COUNT; i++)
        rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_gemini_closes_total",
                            "Gemini connections closed, by close code "
                            "received.",
                            VB_LABELS("code", close_labels[i]), &s->m_close[i]);
    for (int i = 0; rc == 0 && i < TOK_COUNT; i++)
        rc =
            vb_metrics_add(m, VB_METRIC_COUNTER, "vb_gemini_tokens_total",
                           "Tokens reported by Gemini usageMetadata.",
                           VB_LABELS("kind", token_labels[i]), &s->m_tokens[i]);
    for (int i = 0; rc == 0 && i < DROP_COUNT; i++)
        rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_gemini_dropped_total",
                            "Audio or messages the gemini stage dropped, by "
                            "reason.",
                            VB_LABELS("reason", drop_labels[i]), &s->m_drop[i]);
    for (int i = 0; rc == 0 && i < FAIL_COUNT; i++)
        rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_calls_failed_total",
                            "Calls ended with the fallback message because "
                            "the model could not be reached, by reason.",
                            VB_LABELS("reason", fail_labels[i]),
                            &s->m_failed[i]);
    for (int i = 0; rc == 0 && i < HOW_COUNT; i++)
        rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_gemini_sessions_total",
                            "Gemini connections started, by why.",
                            VB_LABELS("how", how_names[i]), &s->m_how[i]);
    /* The ingress's series: the repeated requests count with the first. */
    for (int i = 0; rc == 0 && i < VB_AURL_COUNT; i++)
        rc = vb_metrics_add(
            m, VB_METRIC_COUNTER, "vb_assistant_requests_total",
            "call.incoming requests to --assistant-url, by outcome "
            "(timeout, error and invalid fall back to the number's "
            "assistant).",
            VB_LABELS("outcome", vb_assistant_url_outcome(i)), &s->m_aurl[i]);
    return rc;
}

static int read_prompt_file(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        vb_log_error(NULL, "cannot read --system-prompt-file",
                     "path=%s "
                     "errno=%d",
                     path, errno);
        return VB_ECONFIG;
    }
    char *buf = malloc(VB_GEMINI_PROMPT_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return VB_ENOMEM;
    }
    size_t n = fread(buf, 1, VB_GEMINI_PROMPT_FILE_MAX + 1, f);
    fclose(f);
    if (n > VB_GEMINI_PROMPT_FILE_MAX) {
        vb_log_error(NULL, "--system-prompt-file too large", "path=%s max=%u",
                     path, VB_GEMINI_PROMPT_FILE_MAX);
        free(buf);
        return VB_ECONFIG;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static void free_strings(vb_gemini_stage_t *s)
{
    free(s->url);
    free(s->api_key);
    free(s->greeting);
    free(s->dtmf_text);
    free(s->transcript_dir);
    free(s->fallback_say);
    free(s->prompt);
    free(s->model);
    free(s->voice);
    free(s->language);
    free(s->key_header);
}

int vb_gemini_stage_create(vb_gemini_stage_t **out,
                           const vb_gemini_stage_config_t *cfg)
{
    if (out == NULL || cfg == NULL || cfg->in == NULL || cfg->out == NULL ||
        cfg->metrics == NULL || cfg->opt.max_calls == 0)
        return VB_EINVAL;
    *out = NULL;
    vb_gemini_stage_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return VB_ENOMEM;
    int rc = VB_ENOMEM;
    s->cfg = *cfg;
    s->o = &s->cfg.opt;
    vb_gemini_options_t *o = s->o;
    if (o->max_message == 0)
        o->max_message = VB_GEMINI_DEFAULT_MAX_MESSAGE;
    if (o->prebuffer_ms == 0)
        o->prebuffer_ms = DEFAULT_PREBUFFER;
    if (o->connect_timeout_ms == 0)
        o->connect_timeout_ms = 10000;
    if (o->prepare_ttl_ms == 0)
        o->prepare_ttl_ms = 30000;
    if (o->reconnect_max == 0)
        o->reconnect_max = 3;
    if (o->reconnect_backoff_ms == 0)
        o->reconnect_backoff_ms = 250;
    if (o->hangup_grace_ms == 0)
        o->hangup_grace_ms = 5000;
    if (o->ping_interval_ms == 0)
        o->ping_interval_ms = 1000;
    if (o->pong_timeout_ms == 0)
        o->pong_timeout_ms = 2000;
    if (o->recover_timeout_ms == 0)
        o->recover_timeout_ms = 5000;
    if (o->healthy_ms == 0)
        o->healthy_ms = 10000;

    if (o->setup.model == NULL || o->setup.model[0] == '\0') {
        vb_log_error(NULL, "no Gemini model configured", "hint=%s",
                     "set --gemini-model (VOXBRIDGE_GEMINI_MODEL)");
        rc = VB_ECONFIG;
        goto fail;
    }
    if (o->url == NULL || vb_ws_url_parse(o->url, &s->u) != 0) {
        vb_log_error(NULL, "invalid --gemini-url", "url=%s",
                     o->url ? o->url : "");
        rc = VB_ECONFIG;
        goto fail;
    }
    s->url = strdup(o->url);
    s->model = strdup(o->setup.model);
    s->voice = dup_or_null(o->setup.voice);
    /* An empty language is "auto" (no languageCode), not the default. */
    s->language = o->setup.language != NULL && o->setup.language[0] == '\0'
                      ? strdup("auto")
                      : dup_or_null(o->setup.language);
    s->api_key = dup_or_null(o->api_key);
    s->greeting = dup_or_null(o->greeting);
    s->dtmf_text = dup_or_null(o->dtmf_text);
    s->transcript_dir = dup_or_null(o->transcript_dir);
    s->fallback_say = dup_or_null(o->fallback_say);
    if (s->url == NULL || s->model == NULL)
        goto fail;
    if (o->system_prompt_file != NULL && o->system_prompt_file[0] != '\0') {
        if ((rc = read_prompt_file(o->system_prompt_file, &s->prompt)) != 0)
            goto fail;
    } else {
        s->prompt = dup_or_null(o->setup.system_prompt);
    }
    if (s->api_key != NULL) {
        size_t n = strlen(s->api_key) + sizeof("x-goog-api-key: ");
        s->key_header = malloc(n);
        if (s->key_header == NULL)
            goto fail;
        snprintf(s->key_header, n, "x-goog-api-key: %s", s->api_key);
        if (strpbrk(s->api_key, "\r\n") != NULL) {
            vb_log_error(NULL, "GEMINI_API_KEY contains a line break", NULL);
            rc = VB_ECONFIG;
            goto fail;
        }
        s->headers[0] = s->key_header;
        s->headers[1] = NULL;
    }
    /* Option pointers now refer to our copies only. */
    o->url = s->url;
    o->api_key = NULL;
    o->greeting = s->greeting;
    o->dtmf_text = s->dtmf_text;
    o->transcript_dir = s->transcript_dir;
    o->fallback_say = s->fallback_say;
    o->system_prompt_file = NULL;
    o->setup.model = s->model;
    o->setup.voice = s->voice;
    o->setup.language = s->language;
    o->setup.system_prompt = s->prompt;
    o->setup.functions = NULL;
    o->setup.n_functions = 0;
    o->setup.resume_handle = NULL;
    o->ca_file = NULL;
    if (s->transcript_dir != NULL)
        mkdir(s->transcript_dir, 0750); /* may exist; failures show later */

    if (s->u.secure) {
        if ((rc = vb_tls_config_client(cfg->opt.ca_file, &s->tls)) != 0)
            goto fail;
        vb_tls_config_set_handshake_timeout(s->tls, o->connect_timeout_ms);
    }
    s->ajson_cap = vb_gemini_audio_msg_cap(
        FLUSH_CHUNK > VB_MSG_DATA_MAX ? FLUSH_CHUNK : VB_MSG_DATA_MAX);
    s->ajson = malloc(s->ajson_cap);
    s->by_slot = calloc(o->max_calls, sizeof(*s->by_slot));
    if (s->ajson == NULL || s->by_slot == NULL) {
        rc = VB_ENOMEM;
        goto fail;
    }
    if ((rc = add_series(s)) != 0)
        goto fail;
    char name[16];
    snprintf(name, sizeof(name), "vb-gemini-%d", o->lane);
    if ((rc = vb_stage_init(&s->st, name, cfg->metrics, on_stop, s)) != 0)
        goto fail;
    vb_stage_fn on[VB_MSG_KIND_COUNT] = {0}, prep_on[VB_MSG_KIND_COUNT] = {0};
    on[VB_MSG_CALL_OPEN] = on[VB_MSG_AUDIO] = on[VB_MSG_DTMF] =
        on[VB_MSG_CALL_CLOSE] = in_one;
    prep_on[VB_MSG_PREPARE] = in_one;
    if ((cfg->prepare != NULL &&
         (rc = vb_stage_listen(&s->st, cfg->prepare, prep_on)) != 0) ||
        (rc = vb_stage_listen(&s->st, cfg->in, on)) != 0 ||
        (rc = vb_stage_produce(&s->st, cfg->out)) != 0)
        goto fail;
    vb_chan_on_pressure(cfg->out, out_pressure, s);
    vb_tools_config_t tc = {.secret = cfg->opt.webhook_secret,
                            .secret_previous = cfg->opt.webhook_secret_previous,
                            .ca_file = cfg->opt.webhook_ca_file,
                            .max_response = cfg->opt.tool_max_response,
                            .metrics = cfg->metrics,
                            .shard = &s->st.shard};
    if ((rc = vb_tools_create(&s->st.loop, &tc, &s->tools)) != 0)
        goto fail;
    if (cfg->assistant_url != NULL && cfg->assistants != NULL &&
        (rc = vb_assistant_url_create(&s->st.loop, cfg->assistant_url,
                                      &s->aurl)) != 0)
        goto fail;
    uv_timer_init(&s->st.loop, &s->tick);
    s->tick.data = s;
    vb_log_info(NULL, "gemini stage ready",
                "lane=%d host=%s port=%u tls=%d model=%s voice=%s key=%s",
                o->lane, s->u.host, (unsigned)s->u.port, s->u.secure, s->model,
                s->voice ? s->voice : VB_GEMINI_DEFAULT_VOICE,
                s->api_key ? "set" : "unset");
    *out = s;
    return 0;
fail:
    vb_stage_destroy(&s->st);
    vb_tls_config_destroy(s->tls);
    free_strings(s);
    free(s->ajson);
    free(s->by_slot);
    free(s);
    return rc;
}

int vb_gemini_stage_start(vb_gemini_stage_t *s)
{
    return vb_stage_start(&s->st);
}

void vb_gemini_stage_stop(vb_gemini_stage_t *s)
{
    if (s != NULL)
        vb_stage_stop(&s->st);
}

void vb_gemini_stage_destroy(vb_gemini_stage_t *s)
{
    if (s == NULL)
        return;
    vb_stage_destroy(&s->st);
    vb_tls_config_destroy(s->tls);
    free_strings(s);
    free(s->ajson);
    free(s->by_slot);
    free(s);
}
