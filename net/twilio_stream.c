/* SPDX-License-Identifier: MIT */
/*
 * The twilio-io stage (see net/twilio_stream.h for the contract and the
 * DESIGN paragraph).
 *
 * Everything below runs on the stage's own thread except create, start,
 * stop, destroy, last_stats and handoff. Connections are call_t objects in
 * a table indexed by call slot; a slot's generation is bumped when its call
 * is freed, so late outbound messages for an ended call are recognised and
 * dropped. A call_t outlives its WebSocket while inbound messages it
 * produced still wait in its overflow queue.
 */
#include "net/twilio_stream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/b64.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/stage.h"
#include "net/hash.h"
#include "net/ingress.h"
#include "net/tcp.h"
#include "net/twilio_msg.h"
#include "net/twilio_rest.h"
#include "net/twiml.h"
#include "net/ws.h"

#define FRAME_BYTES       160 /* 20 ms of 8 kHz μ-law */
#define MAX_BATCH         50
#define MARK_FIFO         1024
#define OVF_MAX           4096 /* overflow messages per call */
#define NS_PER_MULAW_BYTE 125000ull
#define DEFAULT_START_MS  3000u
#define DEFAULT_PREAUTH   64u
#define DEFAULT_PER_PEER  16u
#define DEFAULT_MEDIA_MS  10000u
#define DEFAULT_TOKEN_TTL 300u
#define BATCH_CAP         (MAX_BATCH * FRAME_BYTES)
/* Inbound rate limit in μ-law bytes (see twilio_stream.h). */
#define RATE_BYTES_PER_S   (8000u * VB_TWILIO_RATE_X)
#define RATE_NS_PER_BYTE   (1000000000ull / RATE_BYTES_PER_S)
#define RATE_BURST         (8u * VB_TWILIO_RATE_BURST_MS)
#define RATE_CLOSE         (8u * VB_TWILIO_RATE_CLOSE_MS)
#define DEFAULT_MAX_ERRORS 100u
#define DEFAULT_PENDING    (1024u * 1024u)
#define SWEEP_MS           100
/* Media gaps (media_gap_fill_ms): a timestamp jump this long or more is
 * a gap; silence goes as 20 ms μ-law frames. */
#define GAP_MIN_MS       60
#define SILENCE_FRAME    160
#define VOICE_LEVEL      328 /* mean |sample| of a spoken frame */
#define MARK_NAME_MAX    VB_MSG_DATA_MAX
#define CLOSE_TIMEOUT_MS 1000u /* peer's close frame after ours */
/* A stranger younger than this is not evicted for a newcomer. */
#define PREAUTH_MIN_AGE_NS (250ull * 1000000ull)

const char *const vb_twilio_error_reasons[] = {
    "invalid_json",     "missing_field",
    "invalid_field",    "unknown_event",
    "unexpected_event", "wrong_stream_sid",
    "binary_frame",     "oversized",
    "bad_base64",       "unsupported_format",
    "ws_protocol",      "invalid_utf8",
    "unexpected_mark",  NULL,
};

enum {
    E_INVALID_JSON,
    E_MISSING_FIELD,
    E_INVALID_FIELD,
    E_UNKNOWN_EVENT,
    E_UNEXPECTED_EVENT,
    E_WRONG_SID,
    E_BINARY,
    E_OVERSIZED,
    E_BAD_BASE64,
    E_FORMAT,
    E_WS_PROTOCOL,
    E_UTF8,
    E_UNEXPECTED_MARK,
    E_COUNT
};

static const char *const rejected_reasons[] = {
    "missing",   "forged",   "expired",      "wrong_lane",    "lane_full",
    "duplicate", "no_start", "preauth_full", "preauth_limit", NULL,
};
enum {
    R_MISSING,
    R_FORGED,
    R_EXPIRED,
    R_WRONG_LANE,
    R_LANE_FULL,
    R_DUPLICATE,     /* another stream of the call is open or has ended */
    R_NO_START,      /* no valid `start` before the deadline */
    R_PREAUTH_FULL,  /* evicted from a full pre-auth pool */
    R_PREAUTH_LIMIT, /* too many bytes or too big a message before start */
    R_COUNT
};

typedef enum { C_CONNECTED, C_STREAMING, C_ENDED } cstate_t;

#define RESP_KEEP 64 /* response latencies kept per call */

typedef struct call {
    vb_twilio_stream_t *s;
    vb_call_id_t id;
    cstate_t st;
    bool got_connected, opened, closing;
    vb_ws_t *ws;
    bool authed;      /* `start` verified: in s->calls, else in s->pre */
    uint32_t pre_idx; /* index in s->pre while !authed */
    char peer[64];
    uint64_t adopted_ns, preauth_bytes;
    uint64_t last_media_in_ns; /* start, then the last media or echo */
    uint64_t rate_t_ns;        /* inbound rate limit: bucket time */
    uint64_t rate_excess;      /* bytes dropped past the limit */
    char label[72];
    char stream_sid[64];
    size_t stream_sid_len;
    uint64_t start_deadline_ns;
    bool have_seq, have_chunk;
    uint64_t last_seq, last_chunk;
    /* Media timeline: where the next media should start (ms from the
     * stream start, from the last one's timestamp and length), when the
     * last arrived, and the silence synthesised in the current gap. */
    bool have_ts;
    uint64_t next_ts_ms, last_media_ns, gap_filled_ms;
    uint32_t seq_in, turn;
    /* Buffers allocated when `start` verifies (json: a small one before). */
    char *json; /* max_message + 1 */
    size_t json_cap;
    char *json_next; /* the full-size one, swapped in after `start` */
    uint8_t *audio;
    size_t audio_cap;
    char *out;
    size_t out_cap;
    uint8_t *batch; /* BATCH_CAP */
    size_t batch_len;
    uint64_t batch_origin;
    bool dirty;
    /* Clear generation of each mark in flight, oldest first. */
    uint32_t *mark_gen; /* MARK_FIFO */
    uint32_t mk_head, mk_len, clear_gen;
    uint64_t play_end_ns; /* playout model: when queued audio ends */
    /* Hang-up waiting for the goodbye audio: marks still to be echoed
     * before ours, and a deadline in case the echo never comes. */
    bool hangup_pending;
    uint32_t hangup_marks;
    uint64_t hangup_deadline_ns;
    /* The hang-up is a transfer: the call is redirected to <Dial> this
     * (E.164 or sip:) instead of ending. */
    char transfer_to[VB_MSG_DATA_MAX + 1];
    /* The REST update to <Dial> went out: however the stream ends now
     * (Twilio's stop, or our close after the 200), it was transferred. */
    bool transferring;
    char account_sid[64];
    /* Per-call summary: outbound latency added by the bridge (Gemini bytes
     * in -> media written), and when the stream started. */
    vb_hist_t *lat;
    uint64_t started_ns;
    /* Response latency: when the caller last spoke (a frame above
     * VOICE_LEVEL), and whether the model's answer is already playing. */
    uint64_t voice_ns;
    bool answering;
    /* For the post-call report (vb_msg_close_t): the wall clock at
     * `start`, the first model audio sent, and the latest RESP_KEEP
     * response latencies (ms), nresp counting all. */
    int64_t started_unix_ms;
    uint64_t first_audio_ns;
    uint32_t resp_ms[RESP_KEEP];
    uint32_t nresp;
    vb_twilio_call_stats_t stats;
    /* The fallback message is under way: however the stream ends now
     * (our close, or Twilio's stop after the REST update), the outcome is
     * "fallback". */
    bool fallback;
    /* A time limit (--max-call-duration, the assistant's max_call_s) is
     * ending the call: however the stream ends now, "max_duration" (the
     * call report's outcome is "timeout", as for a media timeout). */
    bool timed_out;
    /* A REST call update is under way: nothing starts another hang-up. */
    bool rest_pending;
} call_t;

/* Entries of outcomes[] (below), the values of vb_calls_total{outcome}. */
#define OUTCOME_COUNT 9

struct vb_twilio_stream {
    vb_twilio_stream_config_t cfg;
    vb_stage_t st;
    uv_timer_t sweep; /* runs only while a stream is open */
    bool stopping, handles;
    call_t **calls;
    call_t **pre; /* unauthenticated streams, cfg.max_preauth slots */
    uint32_t npre;
    /* CallSids (hashed) of calls that ended, with when they may be
     * forgotten: a stream token opens one stream. */
    struct used_sid {
        uint64_t hash, until_ns;
    } * used;
    uint32_t used_cap, used_next;
    uint32_t *gens;
    uint32_t *dirty;
    uint32_t ndirty;
    uv_check_t reaper;
    /* Connections whose socket is gone, freed after callbacks: call slots,
     * and max_calls + i for pre-auth slot i. */
    uint32_t *reap;
    uint32_t nreap;
    vb_metric_t m_err[E_COUNT], m_rej[R_COUNT];
    vb_metric_t m_outcome[OUTCOME_COUNT]; /* one per outcomes[] entry */
    vb_metric_t m_gap_fill;
    vb_metric_t m_calls, m_active, m_frames_in, m_frames_out, m_marks_sent,
        m_marks_echoed, m_clears, m_seq_gaps, m_out_dropped, m_stale, m_lat_out,
        m_lat_in, m_barge, m_in_dropped, m_throttled, m_preauth,
        m_sig_unverified, m_response, m_duration, m_rec_dropped;
    vb_metric_t m_rest[3]; /* REST call updates: ok, auth refused, failed */
    pthread_mutex_t stats_mu;
    vb_twilio_call_stats_t last;
    uint64_t ended;
};

static void call_fatal(call_t *c, uint16_t code, const char *reason);
static void call_fatal_as(call_t *c, uint16_t code, const char *reason,
                          const char *outcome);
static void send_media(call_t *c);
static bool rate_take(call_t *c, size_t n, uint64_t now);
static int promote(call_t *c, const char **why);
static bool sid_taken(vb_twilio_stream_t *s, const char *sid, size_t len);
static void sid_remember(vb_twilio_stream_t *s, const char *sid);
static uint32_t preauth_slots(const vb_twilio_stream_t *s);
static void hangup_begin(call_t *c);
static void stream_assistant(call_t *c, const vb_twilio_msg_t *m,
                             const char *token, vb_msg_open_t *open);
static void hangup_now(call_t *c, const char *why, const char *say);
static void call_end(call_t *c, const char *reason);

/* Values of vb_calls_total{outcome}; call_end() reasons map onto them. */
static const char *const outcomes[] = {
    "stop",    "hangup",   "disconnect",  "error",        "shutdown",
    "timeout", "fallback", "transferred", "max_duration", NULL};
_Static_assert(sizeof(outcomes) / sizeof(outcomes[0]) == OUTCOME_COUNT + 1,
               "OUTCOME_COUNT must match outcomes[]");
static void call_maybe_free(call_t *c);
static void sweep_arm(vb_twilio_stream_t *s);

static int64_t default_now_s(void)
{
    return (int64_t)time(NULL);
}

static const char *call_label(const call_t *c)
{
    return c->label;
}

/* Mean magnitude of a μ-law frame on the 16-bit scale above VOICE_LEVEL
 * (about -40 dBFS): the caller is speaking. G.711 decode without a table:
 * ((mantissa << 3) + bias) << exponent, minus the bias. */
static bool ulaw_voiced(const uint8_t *p, size_t n)
{
    if (n == 0)
        return false;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned u = (unsigned)~p[i] & 0xFFu;
        unsigned e = (u >> 4) & 7u, mant = u & 0x0Fu;
        sum += (((mant << 3) + 0x84u) << e) - 0x84u;
    }
    return sum > (uint64_t)VOICE_LEVEL * n;
}

/* ---- inbound channel ---- */

/* The inbound channel filled (`on`) or drained (the channel calls this on
 * changes only): stop or resume reading every stream, so TCP pushes back
 * on Twilio; nothing is dropped. */
static void in_pressure(void *ud, bool on)
{
    vb_twilio_stream_t *s = ud;
    for (uint32_t i = 0; i < s->cfg.max_calls; i++) {
        call_t *c = s->calls[i];
        if (c != NULL && c->ws != NULL)
            vb_ws_read_pause(c->ws, on);
    }
}

/* Queues one inbound message for the call, in order. Never drops control
 * messages; audio only past the channel's spill (counted), which takes a
 * peer that keeps sending after TCP back-pressure set in. */
static void in_push(call_t *c, uint8_t kind, uint8_t flags, const void *data,
                    size_t len, uint64_t t_origin)
{
    vb_twilio_stream_t *s = c->s;
    vb_chan_t *ch = s->cfg.in_to_dsp;
    vb_msg_t *m = vb_chan_begin(ch, kind, flags, c->id, c->seq_in++, t_origin);
    if (m == NULL) {
        vb_metrics_counter_add(s->st.shard, s->m_in_dropped, len);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                           "inbound overflow full, audio dropped",
                           "bytes=%zu kind=%s", len, vb_msg_kind_name(kind));
        return;
    }
    if (len > ch->data_max)
        len = ch->data_max;
    if (len > 0)
        memcpy(m->data, data, len);
    m->len = (uint16_t)len;
    vb_chan_end(ch, m);
    uint64_t now = m->t_enqueue != 0 ? m->t_enqueue : vb_clock_now_ns();
    if (t_origin != 0 && now > t_origin)
        vb_metrics_observe_ns(s->st.shard, s->m_lat_in, now - t_origin);
}

/* ---- errors ---- */

/* A copy for the recorder, never waiting for it: audio only while the
 * channel keeps its reserve for call events, else dropped (counted). */
static void rec_push(call_t *c, uint8_t kind, uint8_t flags, const void *data,
                     size_t len, uint64_t t_pos)
{
    vb_twilio_stream_t *s = c->s;
    vb_chan_t *ch = s->cfg.record;
    if (ch == NULL)
        return;
    if (kind == VB_MSG_AUDIO) {
        while (len > 0) {
            size_t k = len < ch->data_max ? len : ch->data_max;
            if (vb_chan_room(ch) <= s->cfg.record_reserve ||
                vb_chan_send(ch, kind, flags, c->id, 0, t_pos, data, k) != 0) {
                vb_chan_full(ch);
                vb_metrics_counter_add(s->st.shard, s->m_rec_dropped, 1);
                return;
            }
            data = (const uint8_t *)data + k;
            len -= k;
            t_pos += k * NS_PER_MULAW_BYTE;
        }
        return;
    }
    if (vb_chan_send(ch, kind, flags, c->id, 0, t_pos, data, len) != 0) {
        vb_metrics_counter_add(s->st.shard, s->m_rec_dropped, 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                           "recorder behind, call event dropped", "kind=%s",
                           vb_msg_kind_name(kind));
    }
}

static void count_error(call_t *c, int e, const char *field)
{
    vb_twilio_stream_t *s = c->s;
    vb_metrics_counter_add(s->st.shard, s->m_err[e], 1);
    if (e == E_UNKNOWN_EVENT) {
        /* An event added after this was written: counted and skipped,
         * never a reason to end the call. */
        c->stats.unknown_events++;
        if (c->stats.unknown_events == 1)
            vb_log_info(call_label(c), "twilio event not understood, ignored",
                        "event=%s", field ? field : "");
        return;
    }
    c->stats.protocol_errors++;
    VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                       "twilio protocol error", "reason=%s field=%s",
                       vb_twilio_error_reasons[e], field ? field : "");
    uint32_t max = s->cfg.max_errors ? s->cfg.max_errors : DEFAULT_MAX_ERRORS;
    if (c->stats.protocol_errors > max && !c->closing)
        call_fatal(c, VB_WS_CLOSE_POLICY, "too many protocol errors");
}

/* ---- outbound ---- */

static int send_json(call_t *c, const char *json, size_t len)
{
    int rc = vb_ws_send_text(c->ws, json, len);
    if (rc < 0)
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                           "send to twilio failed", "err=%s", vb_err_name(rc));
    return rc;
}

static void send_media(call_t *c)
{
    vb_twilio_stream_t *s = c->s;
    if (c->batch_len == 0)
        return;
    size_t n = c->batch_len;
    c->batch_len = 0;
    if (c->ws == NULL || c->st != C_STREAMING || c->closing)
        return;
    size_t o = (size_t)snprintf(
        c->out, c->out_cap,
        "{\"event\":\"media\",\"streamSid\":\"%s\",\"media\":{\"payload\":\"",
        c->stream_sid);
    if (o >= c->out_cap || vb_b64_encoded_len(n) + 3 > c->out_cap - o)
        return; /* out_cap is sized for a full batch; cannot happen */
    o += vb_b64_encode(c->out + o, c->batch, n);
    memcpy(c->out + o, "\"}}", 3);
    o += 3;
    if (send_json(c, c->out, o) < 0)
        return;
    uint64_t now = vb_clock_now_ns();
    c->stats.frames_out++;
    c->stats.bytes_out += n;
    if (c->first_audio_ns == 0)
        c->first_audio_ns = now;
    vb_metrics_counter_add(s->st.shard, s->m_frames_out, 1);
    if (!c->answering) {
        /* The first model audio of an answer: the caller has waited since
         * the end of their speech. */
        c->answering = true;
        if (c->voice_ns != 0 && now > c->voice_ns) {
            vb_metrics_observe_ns(s->st.shard, s->m_response,
                                  now - c->voice_ns);
            c->resp_ms[c->nresp++ % RESP_KEEP] =
                (uint32_t)((now - c->voice_ns) / 1000000u);
        }
        c->voice_ns = 0;
    }
    if (c->batch_origin != 0 && now > c->batch_origin) {
        vb_metrics_observe_ns(s->st.shard, s->m_lat_out, now - c->batch_origin);
        vb_hist_record(c->lat, now - c->batch_origin);
    }
    uint64_t begin = c->play_end_ns > now ? c->play_end_ns : now;
    c->play_end_ns = begin + n * NS_PER_MULAW_BYTE;
    rec_push(c, VB_MSG_AUDIO, VB_MSG_REC_MODEL, c->batch, n, begin);
}

static void send_mark(call_t *c, const char *name, size_t len)
{
    vb_twilio_stream_t *s = c->s;
    send_media(c);
    if (c->ws == NULL || c->st != C_STREAMING || c->closing)
        return;
    size_t o = (size_t)snprintf(c->out, c->out_cap,
                                "{\"event\":\"mark\",\"streamSid\":\"%s\","
                                "\"mark\":{\"name\":\"",
                                c->stream_sid);
    size_t e = vb_twilio_json_escape(name, len, c->out + o, c->out_cap - o - 4);
    if (e == 0 && len > 0)
        return;
    o += e;
    memcpy(c->out + o, "\"}}", 3);
    o += 3;
    if (send_json(c, c->out, o) < 0)
        return;
    c->stats.marks_sent++;
    vb_metrics_counter_add(s->st.shard, s->m_marks_sent, 1);
    if (c->mk_len < MARK_FIFO) {
        c->mark_gen[(c->mk_head + c->mk_len) % MARK_FIFO] = c->clear_gen;
        c->mk_len++;
    }
}

static void send_clear(call_t *c, uint64_t t_origin)
{
    vb_twilio_stream_t *s = c->s;
    uint64_t now = vb_clock_now_ns();
    c->stats.bytes_cleared += c->batch_len; /* never sent */
    c->batch_len = 0;
    c->answering = false;
    if (c->ws == NULL || c->st != C_STREAMING || c->closing)
        return;
    size_t o = (size_t)snprintf(c->out, c->out_cap,
                                "{\"event\":\"clear\",\"streamSid\":\"%s\"}",
                                c->stream_sid);
    if (send_json(c, c->out, o) < 0)
        return;
    if (c->play_end_ns > now) {
        c->stats.bytes_cleared += (c->play_end_ns - now) / NS_PER_MULAW_BYTE;
    }
    c->play_end_ns = now;
    rec_push(c, VB_MSG_CLEAR, 0, NULL, 0, now);
    c->clear_gen++;
    c->stats.clears++;
    vb_metrics_counter_add(s->st.shard, s->m_clears, 1);
    if (t_origin != 0 && now > t_origin)
        vb_metrics_observe_ns(s->st.shard, s->m_barge, now - t_origin);
}

static void mark_dirty(call_t *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->s->dirty[c->s->ndirty++] = c->id.slot;
    }
}

static void out_audio(call_t *c, const vb_msg_t *m)
{
    vb_twilio_stream_t *s = c->s;
    size_t max_pending =
        s->cfg.max_pending ? s->cfg.max_pending : DEFAULT_PENDING;
    if (vb_ws_pending(c->ws) > max_pending) {
        c->stats.out_dropped += m->len;
        vb_metrics_counter_add(s->st.shard, s->m_out_dropped, m->len);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                           "twilio socket not draining, audio dropped",
                           "bytes=%u", (unsigned)m->len);
        return;
    }
    size_t target = (size_t)s->cfg.media_batch * FRAME_BYTES;
    const uint8_t *p = m->data;
    size_t n = m->len;
    while (n > 0) {
        if (c->batch_len == 0)
            c->batch_origin = m->t_origin;
        size_t room = BATCH_CAP - c->batch_len;
        size_t k = n < room ? n : room;
        memcpy(c->batch + c->batch_len, p, k);
        c->batch_len += k;
        p += k;
        n -= k;
        if (c->batch_len >= target)
            send_media(c);
    }
    if (c->batch_len > 0)
        mark_dirty(c);
}

static call_t *lookup(vb_twilio_stream_t *s, vb_call_id_t id)
{
    if (id.slot >= s->cfg.max_calls)
        return NULL;
    call_t *c = s->calls[id.slot];
    if (c == NULL || c->id.gen != id.gen)
        return NULL;
    return c;
}

/* One message from dsp for a call's stream. */
static bool out_one(void *ud, const vb_msg_t *m)
{
    vb_twilio_stream_t *s = ud;
    call_t *c = lookup(s, m->call);
    if (c == NULL || c->st != C_STREAMING || c->ws == NULL || c->closing) {
        vb_metrics_counter_add(s->st.shard, s->m_stale, 1);
        return true;
    }
    switch (m->kind) {
    case VB_MSG_AUDIO:
        out_audio(c, m);
        break;
    case VB_MSG_MARK:
        send_mark(c, (const char *)m->data, m->len);
        break;
    case VB_MSG_TURN_END: {
        c->answering = false;
        char name[32];
        int n = snprintf(name, sizeof name, "turn-%u", ++c->turn);
        send_mark(c, name, (size_t)n);
        break;
    }
    case VB_MSG_CLEAR:
        send_clear(c, m->t_origin);
        break;
    case VB_MSG_HANGUP:
        send_media(c);
        if (m->flags & VB_MSG_HANGUP_FALLBACK) {
            /* The model is gone: tell the caller now, no goodbye to
             * wait for. */
            char say[VB_MSG_DATA_MAX + 1];
            memcpy(say, m->data, m->len);
            say[m->len] = '\0';
            if (c->ws != NULL && !c->closing)
                hangup_now(c, "model unavailable", say);
        } else {
            if (m->flags & VB_MSG_HANGUP_TRANSFER) {
                memcpy(c->transfer_to, m->data, m->len);
                c->transfer_to[m->len] = '\0';
            }
            if (m->flags & VB_MSG_HANGUP_TIMEOUT)
                c->timed_out = true;
            hangup_begin(c);
        }
        break;
    default:
        break;
    }
    return true;
}

/* After a pass over the inputs: send partial batches rather than let
 * audio wait for the next message. */
static void out_drained(void *ud)
{
    vb_twilio_stream_t *s = ud;
    for (uint32_t i = 0; i < s->ndirty; i++) {
        call_t *c = s->calls[s->dirty[i]];
        if (c != NULL) {
            c->dirty = false;
            send_media(c);
        }
    }
    s->ndirty = 0;
}

/* ---- inbound: Twilio messages ---- */

static bool sid_ok(call_t *c, const vb_twilio_msg_t *m)
{
    if (m->stream_sid.len == c->stream_sid_len &&
        memcmp(m->stream_sid.p, c->stream_sid, c->stream_sid_len) == 0)
        return true;
    count_error(c, E_WRONG_SID, "streamSid");
    return false;
}

static void track_seq(call_t *c, const vb_twilio_msg_t *m)
{
    if (c->have_seq && m->seq != c->last_seq + 1) {
        c->stats.seq_gaps++;
        vb_metrics_counter_add(c->s->st.shard, c->s->m_seq_gaps, 1);
    }
    c->have_seq = true;
    c->last_seq = m->seq;
}

static void on_start(call_t *c, const vb_twilio_msg_t *m)
{
    vb_twilio_stream_t *s = c->s;
    if (c->st != C_CONNECTED) {
        count_error(c, E_UNEXPECTED_EVENT, "start");
        return;
    }
    if (m->stream_sid.len != m->start.stream_sid.len ||
        memcmp(m->stream_sid.p, m->start.stream_sid.p, m->stream_sid.len) !=
            0) {
        count_error(c, E_WRONG_SID, "start.streamSid");
        call_fatal(c, VB_WS_CLOSE_POLICY, "malformed start");
        return;
    }
    if (m->stream_sid.len == 0 || m->stream_sid.len >= sizeof c->stream_sid ||
        m->start.call_sid.len == 0 || m->start.call_sid.len >= 64 ||
        m->start.account_sid.len >= 64) {
        count_error(c, E_INVALID_FIELD, "start");
        call_fatal(c, VB_WS_CLOSE_POLICY, "malformed start");
        return;
    }
    if (strcmp(m->start.encoding.p, "audio/x-mulaw") != 0 ||
        m->start.sample_rate != 8000 || m->start.channels != 1) {
        count_error(c, E_FORMAT, "start.mediaFormat");
        call_fatal(c, VB_WS_CLOSE_POLICY, "unsupported media format");
        return;
    }
    const char *token = vb_twilio_msg_param(m, VB_TWILIO_TOKEN_PARAM);
    int64_t now = s->cfg.now_s ? s->cfg.now_s() : default_now_s();
    int tlane = -1;
    int rc = vb_twilio_sig_token_verify(
        s->cfg.token_key, token, m->start.call_sid.p, s->cfg.lane, now, &tlane);
    if (rc == VB_TWILIO_TOKEN_WRONG_LANE && s->cfg.nlanes > 0 &&
        (uint32_t)tlane >= s->cfg.nlanes &&
        (uint32_t)tlane % s->cfg.nlanes == (uint32_t)s->cfg.lane)
        rc = tlane; /* a lane this process lacks, mapped onto this one */
    if (rc < 0) {
        const char *why = vb_twilio_sig_token_reason(rc);
        int r = rc == VB_TWILIO_TOKEN_MISSING      ? R_MISSING
                : rc == VB_TWILIO_TOKEN_EXPIRED    ? R_EXPIRED
                : rc == VB_TWILIO_TOKEN_WRONG_LANE ? R_WRONG_LANE
                                                   : R_FORGED;
        vb_metrics_counter_add(s->st.shard, s->m_rej[r], 1);
        vb_log_warn(m->start.call_sid.p, "stream rejected",
                    "reason=%s lane=%d token_lane=%d", why, s->cfg.lane, tlane);
        char reason[64];
        snprintf(reason, sizeof reason, "stream token %s", why);
        call_fatal(c, VB_WS_CLOSE_POLICY, reason);
        return;
    }
    if (sid_taken(s, m->start.call_sid.p, m->start.call_sid.len)) {
        vb_metrics_counter_add(s->st.shard, s->m_rej[R_DUPLICATE], 1);
        vb_log_warn(m->start.call_sid.p, "stream rejected",
                    "reason=duplicate lane=%d peer=%s", s->cfg.lane, c->peer);
        call_fatal(c, VB_WS_CLOSE_POLICY, "stream token already used");
        return;
    }
    const char *why = NULL;
    int code = promote(c, &why);
    if (code != 0) {
        vb_log_warn(m->start.call_sid.p, "twilio stream refused",
                    "reason=%s lane=%d", why, s->cfg.lane);
        call_fatal(c, (uint16_t)code, why);
        return;
    }
    memcpy(c->stream_sid, m->stream_sid.p, m->stream_sid.len + 1);
    c->stream_sid_len = m->stream_sid.len;
    snprintf(c->label, sizeof c->label, "%s", m->start.call_sid.p);
    track_seq(c, m);
    vb_msg_open_t open;
    memset(&open, 0, sizeof open);
    memcpy(open.call_sid, m->start.call_sid.p, m->start.call_sid.len);
    memcpy(open.stream_sid, m->stream_sid.p, m->stream_sid.len);
    memcpy(open.account_sid, m->start.account_sid.p, m->start.account_sid.len);
    memcpy(c->account_sid, open.account_sid, sizeof c->account_sid);
    stream_assistant(c, m, token, &open);
    const char *from = vb_twilio_msg_param(m, "From");
    const char *to = vb_twilio_msg_param(m, "To");
    snprintf(open.from, sizeof open.from, "%s", from ? from : "");
    snprintf(open.to, sizeof open.to, "%s", to ? to : "");
    c->started_unix_ms = (int64_t)(vb_clock_wall_s() * 1000.0);
    c->st = C_STREAMING;
    c->started_ns = c->last_media_in_ns = vb_clock_now_ns();
    c->rate_t_ns = 0; /* a full bucket: clamped to RATE_BURST on use */
    c->opened = true;
    in_push(c, VB_MSG_CALL_OPEN, 0, &open, sizeof open, vb_clock_now_ns());
    rec_push(c, VB_MSG_CALL_OPEN, 0, &open, sizeof open, c->started_ns);
    vb_metrics_counter_add(s->st.shard, s->m_calls, 1);
    vb_metrics_gauge_add(s->st.shard, s->m_active, 1);
    if (s->cfg.calls_changed != NULL)
        s->cfg.calls_changed(s->cfg.calls_ud, s->cfg.lane, 1);
    vb_log_info(c->label, "stream started", "stream=%s lane=%d slot=%u",
                c->stream_sid, s->cfg.lane, (unsigned)c->id.slot);
}

/* Decodes a media payload into `dst` (`cap` bytes) and admits it:
 * counted, paid for under the rate limit, the caller's voice noted.
 * Returns the decoded length, or 0 when it is refused (counted). */
static size_t media_take(call_t *c, const vb_twilio_msg_t *m, uint8_t *dst,
                         size_t cap, uint64_t t_origin)
{
    vb_twilio_stream_t *s = c->s;
    size_t n = 0;
    if (m->media.payload.len == 0 ||
        vb_b64_decode(dst, cap, m->media.payload.p, m->media.payload.len, &n) !=
            0 ||
        n == 0) {
        count_error(c, E_BAD_BASE64, "media.payload");
        return 0;
    }
    /* The timeline moves with admitted media (μ-law: 8 bytes a ms). */
    c->have_ts = true;
    c->next_ts_ms = m->media.timestamp_ms + n / 8;
    c->stats.frames_in++;
    c->stats.bytes_in += n;
    vb_metrics_counter_add(s->st.shard, s->m_frames_in, 1);
    if (!rate_take(c, n, t_origin))
        return 0;
    if (ulaw_voiced(dst, n))
        c->voice_ns = t_origin;
    return n;
}

/* Where a media message's audio sits on the call's timeline: the stream
 * start plus its Twilio timestamp. */
static uint64_t rec_caller_pos(const call_t *c, const vb_twilio_msg_t *m)
{
    return c->started_ns + m->media.timestamp_ms * VB_NS_PER_MS;
}

/* `ms` of μ-law silence toward the model (whole 20 ms frames), counted. */
static void push_silence(call_t *c, uint64_t ms, uint64_t t_origin)
{
    uint8_t quiet[SILENCE_FRAME];
    memset(quiet, 0xFF, sizeof quiet);
    for (uint64_t i = 0; i < ms / 20; i++)
        in_push(c, VB_MSG_AUDIO, 0, quiet, SILENCE_FRAME, t_origin);
    c->gap_filled_ms += ms / 20 * 20;
    vb_metrics_counter_add(c->s->st.shard, c->s->m_gap_fill, ms / 20);
}

/* A gap in Twilio's media timeline before this media (silence a leg did
 * not send): filled with silence, what the real-time fill already gave
 * counted, at most VB_TWILIO_GAP_FILL_MAX_MS. */
static void media_gap(call_t *c, const vb_twilio_msg_t *m, uint64_t t_origin)
{
    uint64_t ts = m->media.timestamp_ms;
    if (c->have_ts && ts >= c->next_ts_ms + GAP_MIN_MS) {
        uint64_t gap = ts - c->next_ts_ms;
        if (gap > VB_TWILIO_GAP_FILL_MAX_MS)
            gap = VB_TWILIO_GAP_FILL_MAX_MS;
        if (gap > c->gap_filled_ms)
            push_silence(c, gap - c->gap_filled_ms, t_origin);
    }
    c->gap_filled_ms = 0;
    c->last_media_ns = t_origin;
}

static void on_media(call_t *c, const vb_twilio_msg_t *m, uint64_t t_origin)
{
    vb_twilio_stream_t *s = c->s;
    if (c->st != C_STREAMING) {
        count_error(c, E_UNEXPECTED_EVENT, "media");
        return;
    }
    if (!sid_ok(c, m))
        return;
    /* Media keeps a stream alive (Twilio sends a frame every 20 ms), and
     * the echo of a mark we sent (on_mark); DTMF or unknown events alone
     * do not. */
    c->last_media_in_ns = t_origin;
    track_seq(c, m);
    if (strcmp(m->media.track.p, "inbound") != 0) {
        count_error(c, E_INVALID_FIELD, "media.track");
        return;
    }
    if (c->have_chunk && m->media.chunk_n != c->last_chunk + 1)
        c->stats.chunk_gaps++;
    c->have_chunk = true;
    c->last_chunk = m->media.chunk_n;
    media_gap(c, m, t_origin);
    size_t plen = m->media.payload.len;
    vb_chan_t *ch = s->cfg.in_to_dsp;
    if (plen > 0 && vb_b64_decoded_max(plen) <= ch->data_max) {
        /* One frame: decoded straight into its slot (left unpublished, and
         * so abandoned, if it is refused). */
        vb_msg_t *o =
            vb_chan_begin(ch, VB_MSG_AUDIO, 0, c->id, c->seq_in, t_origin);
        if (o != NULL) {
            size_t n = media_take(c, m, o->data, ch->data_max, t_origin);
            if (n == 0)
                return;
            rec_push(c, VB_MSG_AUDIO, VB_MSG_REC_CALLER, o->data, n,
                     rec_caller_pos(c, m));
            o->len = (uint16_t)n;
            c->seq_in++;
            vb_chan_end(ch, o);
            if (o->t_enqueue > t_origin && t_origin != 0)
                vb_metrics_observe_ns(s->st.shard, s->m_lat_in,
                                      o->t_enqueue - t_origin);
            return;
        }
        /* The spill is full: in_push() below counts the drop. */
    }
    size_t n = media_take(c, m, c->audio, c->audio_cap, t_origin);
    rec_push(c, VB_MSG_AUDIO, VB_MSG_REC_CALLER, c->audio, n,
             rec_caller_pos(c, m));
    size_t max = ch->data_max;
    for (size_t off = 0; off < n; off += max) {
        size_t k = n - off < max ? n - off : max;
        in_push(c, VB_MSG_AUDIO, 0, c->audio + off, k, t_origin);
    }
}

/* Inbound rate limit: a bucket of RATE_BURST bytes refilled at
 * RATE_BYTES_PER_S. A frame it cannot pay for is dropped (counted) and
 * never reaches the model; false then. Too much excess ends the call. */
static bool rate_take(call_t *c, size_t n, uint64_t now)
{
    vb_twilio_stream_t *s = c->s;
    uint64_t floor = now > RATE_BURST * RATE_NS_PER_BYTE
                         ? now - RATE_BURST * RATE_NS_PER_BYTE
                         : 0;
    if (c->rate_t_ns < floor)
        c->rate_t_ns = floor; /* the bucket holds at most RATE_BURST */
    uint64_t cost = (uint64_t)n * RATE_NS_PER_BYTE;
    if (c->rate_t_ns + cost <= now) {
        c->rate_t_ns += cost;
        return true;
    }
    c->rate_excess += n;
    vb_metrics_counter_add(s->st.shard, s->m_throttled, n);
    VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                       "media faster than real time: dropped",
                       "bytes=%zu excess=%llu", n,
                       (unsigned long long)c->rate_excess);
    if (c->rate_excess > RATE_CLOSE)
        call_fatal(c, VB_WS_CLOSE_POLICY, "media faster than real time");
    return false;
}

static void on_mark(call_t *c, const vb_twilio_msg_t *m)
{
    vb_twilio_stream_t *s = c->s;
    if (c->st != C_STREAMING) {
        count_error(c, E_UNEXPECTED_EVENT, "mark");
        return;
    }
    if (!sid_ok(c, m))
        return;
    track_seq(c, m);
    if (c->mk_len == 0) {
        count_error(c, E_UNEXPECTED_MARK, "mark.name");
        return;
    }
    uint32_t gen = c->mark_gen[c->mk_head];
    c->mk_head = (c->mk_head + 1) % MARK_FIFO;
    c->mk_len--;
    /* The echo of a mark we sent: the caller's leg is playing our audio
     * (a leg that suppresses silence sends no media while the caller
     * listens). Bounded by the marks we send. */
    c->last_media_in_ns = vb_clock_now_ns();
    bool cleared = gen != c->clear_gen;
    c->stats.marks_echoed++;
    if (cleared)
        c->stats.marks_cleared++;
    vb_metrics_counter_add(s->st.shard, s->m_marks_echoed, 1);
    if (c->hangup_pending && c->hangup_marks > 0 && --c->hangup_marks == 0)
        hangup_now(c, "goodbye played", NULL);
}

static void on_text(call_t *c, const uint8_t *data, size_t len)
{
    uint64_t t_origin = vb_clock_now_ns();
    vb_twilio_msg_t m;
    vb_twilio_msg_error_t err;
    if (!c->authed) {
        /* Before `start` has verified, a stream is a stranger: small
         * messages, few bytes. */
        c->preauth_bytes += len;
        if (len > VB_TWILIO_PREAUTH_MAX_MESSAGE ||
            c->preauth_bytes > VB_TWILIO_PREAUTH_MAX_BYTES) {
            vb_metrics_counter_add(c->s->st.shard, c->s->m_rej[R_PREAUTH_LIMIT],
                                   1);
            call_fatal(c,
                       len > VB_TWILIO_PREAUTH_MAX_MESSAGE ? VB_WS_CLOSE_TOO_BIG
                                                           : VB_WS_CLOSE_POLICY,
                       "too much data before start");
            return;
        }
    }
    memcpy(c->json, data, len);
    int rc = vb_twilio_msg_parse(c->json, len, &m, &err);
    if (rc < 0) {
        int e = rc == VB_EPROTO   ? E_INVALID_JSON
                : rc == VB_ENOENT ? E_MISSING_FIELD
                                  : E_INVALID_FIELD;
        /* A broken `start` cannot open a call. */
        bool fatal = m.event == VB_TWILIO_EV_START && c->st == C_CONNECTED;
        count_error(c, e, err.field);
        if (fatal)
            call_fatal(c, VB_WS_CLOSE_POLICY, "malformed start");
        return;
    }
    switch (m.event) {
    case VB_TWILIO_EV_CONNECTED:
        if (c->st != C_CONNECTED || c->got_connected)
            count_error(c, E_UNEXPECTED_EVENT, "connected");
        c->got_connected = true;
        break;
    case VB_TWILIO_EV_START:
        on_start(c, &m);
        if (c->json_next != NULL) { /* m pointed into the small buffer */
            free(c->json);
            c->json = c->json_next;
            c->json_next = NULL;
        }
        break;
    case VB_TWILIO_EV_MEDIA:
        on_media(c, &m, t_origin);
        break;
    case VB_TWILIO_EV_DTMF:
        if (c->st != C_STREAMING) {
            count_error(c, E_UNEXPECTED_EVENT, "dtmf");
        } else if (sid_ok(c, &m)) {
            track_seq(c, &m);
            c->stats.dtmf++;
            in_push(c, VB_MSG_DTMF, 0, m.dtmf.digit.p, 1, t_origin);
        }
        break;
    case VB_TWILIO_EV_MARK:
        on_mark(c, &m);
        break;
    case VB_TWILIO_EV_STOP:
        if (c->st != C_STREAMING) {
            count_error(c, E_UNEXPECTED_EVENT, "stop");
        } else if (sid_ok(c, &m)) {
            track_seq(c, &m);
            call_end(c, "stop");
            c->closing = true;
            vb_ws_close(c->ws, VB_WS_CLOSE_NORMAL, "stop");
        }
        break;
    default:
        count_error(c, E_UNKNOWN_EVENT, m.event_name.p);
        break;
    }
}

/* ---- WebSocket callbacks ---- */

static void reaper_cb(uv_check_t *h)
{
    vb_twilio_stream_t *s = h->data;
    for (uint32_t i = 0; i < s->nreap; i++) {
        uint32_t k = s->reap[i];
        call_t *c =
            k < s->cfg.max_calls ? s->calls[k] : s->pre[k - s->cfg.max_calls];
        if (c != NULL)
            call_maybe_free(c);
    }
    s->nreap = 0;
    uv_check_stop(h);
}

static void ws_on_message(vb_ws_t *ws, bool text, const uint8_t *data,
                          size_t len, void *ud)
{
    call_t *c = ud;
    if (c->ws == NULL)
        c->ws = ws; /* messages in the hand-off bytes, inside attach */
    if (c->closing || c->st == C_ENDED)
        return;
    if (!text) {
        count_error(c, E_BINARY, "");
        return;
    }
    on_text(c, data, len);
}

static void ws_on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    call_t *c = ud;
    vb_twilio_stream_t *s = c->s;
    if (info->err == VB_EMSGSIZE)
        count_error(c, E_OVERSIZED, "");
    else if (info->err == VB_EPROTO &&
             info->code_sent == VB_WS_CLOSE_INVALID_PAYLOAD)
        count_error(c, E_UTF8, "");
    else if (info->err == VB_EPROTO)
        count_error(c, E_WS_PROTOCOL, info->reason);
    if (info->err != 0 && info->err != VB_ECLOSED)
        vb_log_info(call_label(c), "twilio socket failed",
                    "err=%s sent=%u received=%u reason=%s",
                    vb_err_name(info->err), (unsigned)info->code_sent,
                    (unsigned)info->code_received, info->reason);
    else
        vb_log_debug(call_label(c), "twilio socket closed",
                     "sent=%u received=%u", (unsigned)info->code_sent,
                     (unsigned)info->code_received);
    call_end(c, c->st == C_STREAMING ? "disconnect" : "error");
    vb_ws_destroy(ws); /* deferred by the endpoint until it unwinds */
    c->ws = NULL;
    /* Callers up the stack may still hold `c`; free it from the reaper. */
    s->reap[s->nreap++] =
        c->authed ? c->id.slot : s->cfg.max_calls + c->pre_idx;
    uv_check_start(&s->reaper, reaper_cb);
}

/* ---- call lifecycle ---- */

static void call_fatal_as(call_t *c, uint16_t code, const char *reason,
                          const char *outcome)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->authed)
        vb_log_warn(call_label(c), "closing twilio stream", "code=%u reason=%s",
                    (unsigned)code, reason);
    else /* strangers: a flood of them must not flood the log */
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, call_label(c),
                           "closing unauthenticated twilio stream",
                           "code=%u reason=%s peer=%s", (unsigned)code, reason,
                           c->peer);
    call_end(c, outcome);
    if (c->ws != NULL)
        vb_ws_close(c->ws, code, reason);
}

static void call_fatal(call_t *c, uint16_t code, const char *reason)
{
    call_fatal_as(c, code, reason, "error");
}

/* ---- hang-up after the goodbye ---- */

#define DEFAULT_HANGUP_GRACE_MS 3000u
/* The fallback's REST update gets this long before the stream is closed
 * instead (the TwiML after <Connect> then says the same text): it bounds
 * the time from the model's failure to the caller hearing it. */
#define FALLBACK_REST_TIMEOUT_MS 2000u

typedef struct rest_ctx {
    vb_twilio_stream_t *s;
    vb_call_id_t id;
    bool fallback;
    bool transfer;
    char label[72];               /* the CallSid, for the log */
    char to[VB_MSG_DATA_MAX + 1]; /* the transfer's target */
} rest_ctx_t;

/* `outcome` is a vb_calls_total outcome: "hangup" or "fallback". */
static void close_normal(call_t *c, const char *outcome, const char *reason)
{
    if (c->ws == NULL || c->closing)
        return;
    c->closing = true;
    call_end(c, outcome);
    vb_ws_close(c->ws, VB_WS_CLOSE_NORMAL, reason);
}

/* A REST call update's result for vb_twilio_rest_updates_total: 0 ok,
 * 1 refused for its credentials, 2 failed otherwise. */
static void rest_count(vb_twilio_stream_t *s, int status)
{
    int k = status == 200 ? 0 : status == 401 || status == 403 ? 1 : 2;
    vb_metrics_counter_add(s->st.shard, s->m_rest[k], 1);
}

static void rest_done(int status, void *ud)
{
    rest_ctx_t *x = ud;
    call_t *c = lookup(x->s, x->id);
    rest_count(x->s, status);
    bool fallback = x->fallback, transfer = x->transfer;
    if (transfer) {
        /* After a 200 Twilio ends the stream (its stop may come first)
         * and dials; otherwise closing the stream runs the TwiML after
         * <Connect> (the fallback <Say>). */
        if (status == 200)
            vb_log_info(x->label, "call transferred", "to=%s", x->to);
        else
            vb_log_warn(x->label, "transfer failed: ending the call",
                        "to=%s status=%d", x->to, status);
    }
    free(x);
    if (c == NULL)
        return; /* Twilio already ended the stream */
    if (transfer) {
        c->transferring = status == 200;
        close_normal(c, status == 200 ? "transferred" : "hangup",
                     status == 200 ? "transferred" : "transfer failed");
        return;
    }
    /* Either way the stream ends now: after a 200 Twilio tears it down
     * anyway (and runs the new TwiML); after a failure closing it runs the
     * TwiML after <Connect>, which has the fallback <Say>. */
    close_normal(c, fallback ? "fallback" : "hangup",
                 status == 200 ? "hangup" : "hangup (REST failed)");
}

/* Queues a mark behind the audio already sent; the call ends when it is
 * echoed (see on_mark) or at the deadline (see sweep_cb). */
static void hangup_begin(call_t *c)
{
    if (c->ws == NULL || c->closing || c->hangup_pending || c->rest_pending)
        return;
    vb_twilio_stream_t *s = c->s;
    uint64_t now = vb_clock_now_ns();
    uint32_t grace = s->cfg.hangup_grace_ms ? s->cfg.hangup_grace_ms
                                            : DEFAULT_HANGUP_GRACE_MS;
    c->hangup_pending = true;
    c->hangup_deadline_ns = (c->play_end_ns > now ? c->play_end_ns : now) +
                            (uint64_t)grace * 1000000u;
    send_mark(c, "hangup", 6);
    c->hangup_marks = c->mk_len; /* ours is the newest in flight */
    vb_log_info(c->label, "hang-up requested: waiting for the goodbye to play",
                "marks_in_flight=%u", c->hangup_marks);
    if (c->hangup_marks == 0)
        hangup_now(c, "nothing queued", NULL);
}

/* Ends the call. `say` NULL: a goodbye already played, REST
 * Status=completed. Else the model could not be reached: REST replaces the
 * call's TwiML with <Say>say</Say><Hangup/>; without REST (or when it
 * fails) closing the stream runs the TwiML after <Connect>, whose fallback
 * <Say> is the same text. */
static void hangup_now(call_t *c, const char *why, const char *say)
{
    vb_twilio_stream_t *s = c->s;
    bool fallback = say != NULL;
    bool transfer = !fallback && c->transfer_to[0] != '\0';
    const char *outcome =
        fallback ? "fallback" : (transfer ? "transferred" : "hangup");
    c->hangup_pending = false;
    c->fallback = fallback;
    bool use_key = s->cfg.rest_api_key != NULL && *s->cfg.rest_api_key &&
                   s->cfg.rest_api_secret != NULL && *s->cfg.rest_api_secret;
    const char *token =
        use_key ? s->cfg.rest_api_secret : s->cfg.rest_auth_token;
    const char *account = s->cfg.rest_account_sid && *s->cfg.rest_account_sid
                              ? s->cfg.rest_account_sid
                              : c->account_sid;
    if (token == NULL || *token == '\0' || s->cfg.rest_api_url == NULL ||
        *s->cfg.rest_api_url == '\0') {
        if (transfer)
            vb_log_warn(
                c->label,
                "transfer needs the Twilio REST credentials: hanging up",
                "to=%s", c->transfer_to);
        vb_log_info(c->label, "hanging up by closing the stream",
                    "why=%s fallback=%d", why, fallback);
        close_normal(c, transfer ? "hangup" : outcome, "hangup");
        return;
    }
    char *twiml = NULL;
    if (transfer) {
        vb_twiml_t t;
        size_t tlen;
        vb_twiml_init(&t);
        vb_twiml_dial(&t, c->transfer_to);
        if (vb_twiml_finish(&t, &twiml, &tlen) != 0)
            twiml = NULL;
    } else if (fallback && say[0] != '\0') {
        vb_twiml_t t;
        size_t tlen;
        vb_twiml_init(&t);
        vb_twiml_say(&t, say);
        vb_twiml_hangup(&t);
        if (vb_twiml_finish(&t, &twiml, &tlen) != 0)
            twiml = NULL; /* then Status=completed; logged below */
    }
    rest_ctx_t *x = malloc(sizeof(*x));
    vb_twilio_rest_req_t req = {
        .api_url = s->cfg.rest_api_url,
        .account_sid = account,
        .auth_token = token,
        .api_key = use_key ? s->cfg.rest_api_key : NULL,
        .call_sid = c->label,
        .tls = s->cfg.rest_tls,
        .timeout_ms = fallback ? FALLBACK_REST_TIMEOUT_MS : 0,
        .twiml = twiml,
    };
    int rc = x ? 0 : VB_ENOMEM;
    if (x != NULL) {
        x->s = s;
        x->id = c->id;
        x->fallback = fallback;
        x->transfer = transfer;
        snprintf(x->label, sizeof x->label, "%s", c->label);
        snprintf(x->to, sizeof x->to, "%s", c->transfer_to);
        rc = vb_twilio_rest_hangup(&s->st.loop, &req, rest_done, x);
        c->transferring = transfer && rc == 0;
        c->rest_pending = rc == 0;
    }
    free(twiml);
    if (rc != 0) {
        free(x);
        rest_count(s, -1);
        vb_log_warn(c->label, "REST hang-up not possible: closing the stream",
                    "err=%s fallback=%d", vb_err_name(rc), fallback);
        close_normal(c, transfer ? "hangup" : outcome, "hangup");
        return;
    }
    vb_log_info(c->label, "hanging up through the REST API",
                "why=%s fallback=%d transfer=%d twiml=%d", why, fallback,
                transfer, twiml != NULL);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* CALL_CLOSE with the reason and the report's measurements. */
static void push_close(call_t *c, const char *reason)
{
    uint64_t now = vb_clock_now_ns();
    vb_msg_close_t cl;
    memset(&cl, 0, sizeof cl);
    snprintf(cl.reason, sizeof cl.reason, "%s", reason);
    cl.started_unix_ms = c->started_unix_ms;
    cl.duration_ms = now > c->started_ns ? (now - c->started_ns) / 1000000u : 0;
    cl.first_audio_ms =
        c->first_audio_ns > c->started_ns
            ? (uint32_t)((c->first_audio_ns - c->started_ns) / 1000000u)
            : VB_MSG_CLOSE_NONE;
    uint32_t n = c->nresp < RESP_KEEP ? c->nresp : RESP_KEEP;
    cl.responses = c->nresp;
    cl.response_p50_ms = cl.response_p95_ms = VB_MSG_CLOSE_NONE;
    if (n > 0) {
        uint32_t v[RESP_KEEP];
        memcpy(v, c->resp_ms, n * sizeof v[0]);
        qsort(v, n, sizeof v[0], cmp_u32);
        /* Nearest rank. */
        cl.response_p50_ms = v[(n * 50 + 99) / 100 - 1];
        cl.response_p95_ms = v[(n * 95 + 99) / 100 - 1];
    }
    in_push(c, VB_MSG_CALL_CLOSE, 0, &cl, sizeof cl, now);
}

static void call_end(call_t *c, const char *reason)
{
    vb_twilio_stream_t *s = c->s;
    if (c->st == C_ENDED)
        return;
    bool was_open = c->opened;
    c->st = C_ENDED;
    if (!was_open)
        return;
    if (c->fallback)
        reason = "fallback";
    else if (c->transferring && strcmp(reason, "stop") == 0)
        reason = "transferred";
    else if (c->timed_out &&
             (strcmp(reason, "hangup") == 0 || strcmp(reason, "stop") == 0))
        reason = "max_duration";
    push_close(c, reason);
    rec_push(c, VB_MSG_CALL_CLOSE, 0, reason, strlen(reason),
             vb_clock_now_ns());
    sid_remember(s, c->label);
    vb_metrics_gauge_add(s->st.shard, s->m_active, -1);
    for (int i = 0; outcomes[i] != NULL; i++)
        if (strcmp(reason, outcomes[i]) == 0)
            vb_metrics_counter_add(s->st.shard, s->m_outcome[i], 1);
    /* How it ended first: a drain that sees no call left must already
     * know this one's stream-ended request is due. */
    if (s->cfg.call_ended != NULL)
        s->cfg.call_ended(s->cfg.calls_ud, c->label,
                          strcmp(reason, "hangup") == 0 ||
                              strcmp(reason, "transferred") == 0 ||
                              strcmp(reason, "max_duration") == 0);
    if (s->cfg.calls_changed != NULL)
        s->cfg.calls_changed(s->cfg.calls_ud, s->cfg.lane, -1);
    uint64_t now = vb_clock_now_ns();
    vb_metrics_observe_long(s->st.shard, s->m_duration, now - c->started_ns);
    uint64_t unplayed =
        c->play_end_ns > now ? (c->play_end_ns - now) / NS_PER_MULAW_BYTE : 0;
    uint64_t gone = c->stats.bytes_cleared + unplayed;
    c->stats.bytes_played =
        c->stats.bytes_out > gone ? c->stats.bytes_out - gone : 0;
    vb_twilio_call_stats_t *st = &c->stats;
    vb_log_info(
        c->label, "stream ended",
        "reason=%s frames_in=%llu bytes_in=%llu seq_gaps=%llu "
        "frames_out=%llu bytes_out=%llu marks_sent=%llu "
        "marks_echoed=%llu marks_cleared=%llu clears=%llu dtmf=%llu "
        "played_bytes=%llu cleared_bytes=%llu protocol_errors=%llu",
        reason, (unsigned long long)st->frames_in,
        (unsigned long long)st->bytes_in, (unsigned long long)st->seq_gaps,
        (unsigned long long)st->frames_out, (unsigned long long)st->bytes_out,
        (unsigned long long)st->marks_sent,
        (unsigned long long)st->marks_echoed,
        (unsigned long long)st->marks_cleared, (unsigned long long)st->clears,
        (unsigned long long)st->dtmf, (unsigned long long)st->bytes_played,
        (unsigned long long)st->bytes_cleared,
        (unsigned long long)st->protocol_errors);
    /* The one line an operator looks for: how the call went. */
    vb_log_info(c->label, "call summary",
                "outcome=%s duration_s=%.1f frames_in=%llu frames_out=%llu "
                "out_latency_p50_ms=%.3f out_latency_p99_ms=%.3f "
                "barge_ins=%llu protocol_errors=%llu",
                reason, (double)(now - c->started_ns) / 1e9,
                (unsigned long long)st->frames_in,
                (unsigned long long)st->frames_out,
                (double)vb_hist_quantile(c->lat, 0.5) / 1e6,
                (double)vb_hist_quantile(c->lat, 0.99) / 1e6,
                (unsigned long long)st->clears,
                (unsigned long long)st->protocol_errors);
    pthread_mutex_lock(&s->stats_mu);
    s->last = c->stats;
    s->ended++;
    pthread_mutex_unlock(&s->stats_mu);
}

static void call_free(call_t *c)
{
    vb_twilio_stream_t *s = c->s;
    if (c->authed) {
        s->calls[c->id.slot] = NULL;
        s->gens[c->id.slot]++;
    } else {
        s->pre[c->pre_idx] = NULL;
        s->npre--;
    }
    free(c->json);
    free(c->json_next);
    free(c->audio);
    free(c->out);
    free(c->batch);
    free(c->mark_gen);
    free(c->lat);
    free(c);
}

static void call_maybe_free(call_t *c)
{
    if (c->ws == NULL && c->st == C_ENDED)
        call_free(c);
}

/* Sends a close frame straight to a socket we will not serve. */
static void reject_fd(int fd, uint16_t code, const char *reason)
{
    uint8_t f[2 + 2 + 64];
    size_t rl = strlen(reason);
    if (rl > 60)
        rl = 60;
    f[0] = 0x88;
    f[1] = (uint8_t)(2 + rl);
    f[2] = (uint8_t)(code >> 8);
    f[3] = (uint8_t)code;
    memcpy(f + 4, reason, rl);
    ssize_t w = write(fd, f, 4 + rl);
    (void)w; /* best effort */
    close(fd);
}

static uint32_t preauth_cap(const vb_twilio_stream_t *s)
{
    return s->cfg.max_preauth ? s->cfg.max_preauth : DEFAULT_PREAUTH;
}

/* The pool array has room for twice the live bound: evicted streams linger
 * there for their close handshake (close_timeout_ms) while new ones come. */
static uint32_t preauth_slots(const vb_twilio_stream_t *s)
{
    return 2 * preauth_cap(s);
}

/* Makes room for one more unauthenticated stream from `peer`: at the
 * per-peer bound that peer's oldest is closed, at the pool bound the
 * pool's oldest. A real Twilio stream sends `start` with `connected`, so it
 * leaves the pool within one round trip; only streams that wait lose. */
static void preauth_make_room(vb_twilio_stream_t *s, const char *peer)
{
    uint32_t per_peer = s->cfg.max_preauth_per_peer
                            ? s->cfg.max_preauth_per_peer
                            : DEFAULT_PER_PEER;
    uint32_t live = 0, mine = 0;
    call_t *oldest = NULL, *oldest_mine = NULL;
    /* Only a stranger that has had time to send `start` is a victim: a
     * burst of real streams handed off together is not evicted before its
     * first messages are read (the array's spare half holds it). */
    uint64_t now = vb_clock_now_ns();
    uint64_t ripe = now > PREAUTH_MIN_AGE_NS ? now - PREAUTH_MIN_AGE_NS : 0;
    for (uint32_t i = 0; i < preauth_slots(s); i++) {
        call_t *c = s->pre[i];
        if (c == NULL || c->closing || c->st == C_ENDED)
            continue;
        live++;
        bool old = c->adopted_ns <= ripe;
        if (old && (oldest == NULL || c->adopted_ns < oldest->adopted_ns))
            oldest = c;
        if (strcmp(c->peer, peer) == 0) {
            mine++;
            if (old && (oldest_mine == NULL ||
                        c->adopted_ns < oldest_mine->adopted_ns))
                oldest_mine = c;
        }
    }
    call_t *victim = mine >= per_peer && oldest_mine != NULL ? oldest_mine
                     : live >= preauth_cap(s)                ? oldest
                                                             : NULL;
    if (victim == NULL)
        return;
    vb_metrics_counter_add(s->st.shard, s->m_rej[R_PREAUTH_FULL], 1);
    VB_LOG_RATELIMITED(
        VB_LOG_WARN, 1000, victim->label, "unauthenticated stream evicted",
        "why=%s peer=%s lane=%d",
        victim == oldest_mine && mine >= per_peer ? "per-peer limit"
                                                  : "pool full",
        victim->peer, s->cfg.lane);
    call_fatal(victim, 1013, "too many streams waiting for start");
}

/* A free index in the pre-auth pool; when every one is held by a stream
 * still closing, the oldest of those is dropped without its handshake. */
static uint32_t preauth_index(vb_twilio_stream_t *s)
{
    call_t *oldest = NULL;
    for (uint32_t i = 0; i < preauth_slots(s); i++) {
        call_t *c = s->pre[i];
        if (c == NULL)
            return i;
        /* At most preauth_cap() are live (preauth_make_room), so more
         * than half of a full array is closing. */
        if ((c->closing || c->st == C_ENDED) &&
            (oldest == NULL || c->adopted_ns < oldest->adopted_ns))
            oldest = c;
    }
    if (oldest == NULL)
        return UINT32_MAX; /* all live and young: a burst past twice the cap */
    uint32_t i = oldest->pre_idx;
    if (oldest->ws != NULL) {
        vb_ws_destroy(oldest->ws); /* not inside its callbacks: drain_conn */
        oldest->ws = NULL;
    }
    call_end(oldest, "error");
    call_free(oldest);
    return i;
}

static void adopt(vb_twilio_stream_t *s, int fd, const uint8_t *pre,
                  size_t pre_len, const char *peer)
{
    preauth_make_room(s, peer);
    uint32_t idx = preauth_index(s);
    if (idx == UINT32_MAX) {
        vb_metrics_counter_add(s->st.shard, s->m_rej[R_PREAUTH_FULL], 1);
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                           "twilio stream refused: pre-auth pool full",
                           "peer=%s lane=%d", peer, s->cfg.lane);
        reject_fd(fd, 1013, "too many streams waiting for start");
        return;
    }
    call_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto fail;
    c->s = s;
    c->st = C_CONNECTED;
    c->pre_idx = idx;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    snprintf(c->label, sizeof c->label, "lane%d-pre%u", s->cfg.lane,
             (unsigned)idx);
    vb_log_debug(c->label, "twilio stream adopted", "peer=%s early_bytes=%zu",
                 peer, pre_len);
    c->json_cap = VB_TWILIO_PREAUTH_MAX_MESSAGE;
    c->json = malloc(c->json_cap + 1);
    if (c->json == NULL)
        goto fail;
    uint64_t ms =
        s->cfg.start_timeout_ms ? s->cfg.start_timeout_ms : DEFAULT_START_MS;
    c->adopted_ns = vb_clock_now_ns();
    c->start_deadline_ns = c->adopted_ns + ms * 1000000ull;
    s->pre[idx] = c;
    s->npre++;
    sweep_arm(s);
    vb_metrics_counter_add(s->st.shard, s->m_preauth, 1);
    vb_transport_t *t = NULL;
    int rc = vb_tcp_adopt(&s->st.loop, fd, &t);
    fd = -1; /* owned by the transport now, or closed */
    if (rc < 0) {
        vb_log_warn(NULL, "twilio stream: cannot adopt socket", "err=%s",
                    vb_err_name(rc));
        goto fail_pooled;
    }
    vb_ws_config_t wc = {
        .role = VB_WS_SERVER,
        .max_message = VB_TWILIO_PREAUTH_MAX_MESSAGE, /* raised at start */
        .close_timeout_ms = CLOSE_TIMEOUT_MS,
        .log_id = c->label,
    };
    vb_ws_callbacks_t cb = {
        .on_message = ws_on_message,
        .on_close = ws_on_close,
    };
    vb_ws_t *ws = NULL;
    rc = vb_ws_attach(&s->st.loop, t, &wc, &cb, c, pre, pre_len, &ws);
    if (rc == VB_ECLOSED) {
        /* Closed by the hand-off bytes already; on_close cleaned up. */
        return;
    }
    if (rc < 0) {
        vb_log_warn(NULL, "twilio stream: websocket setup failed", "err=%s",
                    vb_err_name(rc));
        goto fail_pooled;
    }
    c->ws = ws;
    /* A stranger's unread pongs stop its reading early (raised at start). */
    vb_ws_set_max_pending_out(ws, VB_TWILIO_PREAUTH_MAX_OUT);
    return;
fail_pooled:
    call_free(c);
    return;
fail:
    if (c != NULL) {
        free(c->json);
        free(c);
    }
    if (fd >= 0)
        close(fd);
}

/* The stream's `start` verified: it leaves the pre-auth pool for a call
 * slot and gets the per-call buffers. Returns 0, or the close code and
 * reason to refuse it with (lane full, out of memory). */
static int promote(call_t *c, const char **why)
{
    vb_twilio_stream_t *s = c->s;
    uint32_t slot = 0;
    while (slot < s->cfg.max_calls && s->calls[slot] != NULL)
        slot++;
    if (slot == s->cfg.max_calls) {
        vb_metrics_counter_add(s->st.shard, s->m_rej[R_LANE_FULL], 1);
        *why = "lane full";
        return 1013;
    }
    size_t maxm =
        s->cfg.max_message ? s->cfg.max_message : VB_WS_DEFAULT_MAX_MESSAGE;
    char *json = malloc(maxm + 1);
    size_t audio_cap = maxm / 4 * 3 + 3;
    uint8_t *audio = malloc(audio_cap);
    /* Base64 of a full batch or a fully escaped mark name, plus JSON. */
    size_t b64 = (BATCH_CAP + 2) / 3 * 4;
    size_t mk = MARK_NAME_MAX * 6;
    size_t out_cap = (b64 > mk ? b64 : mk) + 256;
    char *out = malloc(out_cap);
    uint8_t *batch = malloc(BATCH_CAP);
    uint32_t *mark_gen = malloc(MARK_FIFO * sizeof *mark_gen);
    vb_hist_t *lat = malloc(sizeof *lat);
    if (json == NULL || audio == NULL || out == NULL || batch == NULL ||
        mark_gen == NULL || lat == NULL ||
        vb_ws_set_max_message(c->ws, maxm) != 0) {
        free(json);
        free(audio);
        free(out);
        free(batch);
        free(mark_gen);
        free(lat);
        *why = "out of memory";
        return VB_WS_CLOSE_INTERNAL;
    }
    vb_hist_init(lat);
    vb_ws_set_max_pending_out(c->ws, 0); /* the default for calls */
    c->json_next = json; /* `start` is parsed in c->json: swap it later */
    c->json_cap = maxm;
    c->audio = audio;
    c->audio_cap = audio_cap;
    c->out = out;
    c->out_cap = out_cap;
    c->batch = batch;
    c->mark_gen = mark_gen;
    c->lat = lat;
    s->pre[c->pre_idx] = NULL;
    s->npre--;
    c->authed = true;
    c->id.slot = slot;
    c->id.gen = s->gens[slot];
    s->calls[slot] = c;
    if (vb_chan_pressured(s->cfg.in_to_dsp))
        vb_ws_read_pause(c->ws, true);
    return 0;
}

/* ---- one stream per call ---- */

static uint64_t sid_hash(const char *sid, size_t len)
{
    return vb_hash_fnv1a64(sid, len);
}

/* True when a stream for this CallSid is open on the lane or ended less
 * than a token lifetime ago. */
static bool sid_taken(vb_twilio_stream_t *s, const char *sid, size_t len)
{
    for (uint32_t i = 0; i < s->cfg.max_calls; i++) {
        const call_t *c = s->calls[i];
        if (c != NULL && c->opened && strlen(c->label) == len &&
            memcmp(c->label, sid, len) == 0)
            return true;
    }
    uint64_t h = sid_hash(sid, len), now = vb_clock_now_ns();
    for (uint32_t i = 0; i < s->used_cap; i++)
        if (s->used[i].hash == h && s->used[i].until_ns > now)
            return true;
    return false;
}

static void sid_remember(vb_twilio_stream_t *s, const char *sid)
{
    uint32_t ttl = s->cfg.token_ttl_s ? s->cfg.token_ttl_s : DEFAULT_TOKEN_TTL;
    struct used_sid *u = &s->used[s->used_next];
    s->used_next = (s->used_next + 1) % s->used_cap;
    u->hash = sid_hash(sid, strlen(sid));
    u->until_ns = vb_clock_now_ns() + (uint64_t)ttl * 1000000000ull;
}

/* A handed-off socket, or (while stopping) one to close. */
static void conn_take(vb_twilio_stream_t *s, const vb_msg_t *m)
{
    vb_msg_conn_t cc;
    if (vb_msg_conn_get(m, &cc) < 0) {
        vb_log_error(NULL, "twilio stream: bad conn message", "kind=%s",
                     vb_msg_kind_name(m->kind));
        return;
    }
    if (s->stopping) {
        vb_msg_conn_release(&cc);
        return;
    }
    cc.peer[sizeof cc.peer - 1] = '\0';
    adopt(s, cc.fd, (const uint8_t *)cc.extra, cc.extra_len, cc.peer);
    free(cc.extra);
}

static bool conn_one(void *ud, const vb_msg_t *m)
{
    conn_take(ud, m);
    return true;
}

/* ---- loop plumbing ---- */

static void sweep_cb(uv_timer_t *t);

/* The sweep timer runs while any stream is open (pre-auth or call). */
static void sweep_arm(vb_twilio_stream_t *s)
{
    if (!s->stopping && !uv_is_active((uv_handle_t *)&s->sweep))
        uv_timer_start(&s->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
}

static void sweep_cb(uv_timer_t *t)
{
    vb_twilio_stream_t *s = t->data;
    uint64_t now = vb_clock_now_ns();
    for (uint32_t i = 0; i < preauth_slots(s); i++) {
        call_t *c = s->pre[i];
        if (c != NULL && c->st == C_CONNECTED && !c->closing &&
            now > c->start_deadline_ns) {
            vb_metrics_counter_add(s->st.shard, s->m_rej[R_NO_START], 1);
            VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, c->label,
                               "twilio stream sent no valid start",
                               "peer=%s lane=%d", c->peer, s->cfg.lane);
            call_fatal(c, VB_WS_CLOSE_POLICY, "no start message");
        }
    }
    uint64_t idle_ns =
        (uint64_t)(s->cfg.media_timeout_ms ? s->cfg.media_timeout_ms
                                           : DEFAULT_MEDIA_MS) *
        1000000ull;
    uint64_t max_ns = (uint64_t)s->cfg.max_call_s * 1000000000ull;
    bool busy = s->npre > 0;
    for (uint32_t i = 0; i < s->cfg.max_calls; i++) {
        call_t *c = s->calls[i];
        busy |= c != NULL;
        if (c == NULL || c->st != C_STREAMING || c->closing)
            continue;
        uint64_t fill_ns = (uint64_t)s->cfg.media_gap_fill_ms * 1000000ull;
        if (fill_ns != 0 && c->last_media_ns != 0 &&
            now > c->last_media_ns + fill_ns &&
            c->gap_filled_ms < VB_TWILIO_GAP_FILL_MAX_MS) {
            /* No media for a while: the caller is silent on a leg that
             * sends nothing then. Silence up to now, bounded. */
            uint64_t due = (now - c->last_media_ns) / 1000000ull;
            if (due > VB_TWILIO_GAP_FILL_MAX_MS)
                due = VB_TWILIO_GAP_FILL_MAX_MS;
            if (due >= c->gap_filled_ms + 20)
                push_silence(c, due - c->gap_filled_ms, now);
        }
        if (now > c->last_media_in_ns + idle_ns) {
            vb_log_warn(
                c->label, "no media from twilio: closing", "idle_ms=%llu",
                (unsigned long long)((now - c->last_media_in_ns) / 1000000));
            call_fatal_as(c, VB_WS_CLOSE_POLICY, "no media", "timeout");
        } else if (c->hangup_pending && now > c->hangup_deadline_ns) {
            hangup_now(c, "mark echo overdue", NULL);
        } else if (max_ns != 0 && !c->hangup_pending && !c->rest_pending &&
                   now > c->started_ns + max_ns) {
            vb_log_info(c->label, "maximum call duration reached", "max_s=%u",
                        (unsigned)s->cfg.max_call_s);
            send_media(c);
            c->timed_out = true;
            hangup_begin(c);
        }
    }
    if (!busy)
        uv_timer_stop(&s->sweep);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

/* On the stage thread as it stops: every stream closes (1001), every
 * call's CALL_CLOSE goes down the lane, then our handles close. */
static void on_stop(void *ud)
{
    vb_twilio_stream_t *s = ud;
    s->stopping = true;
    vb_msg_t *m;
    while ((m = vb_chan_peek(s->cfg.conn_in)) != NULL) {
        conn_take(s, m);
        vb_chan_release(s->cfg.conn_in);
    }
    for (uint32_t i = 0; i < s->cfg.max_calls; i++) {
        call_t *c = s->calls[i];
        if (c == NULL)
            continue;
        if (c->ws != NULL) {
            if (!c->closing)
                vb_ws_close(c->ws, VB_WS_CLOSE_GOING_AWAY, "going away");
            call_end(c, "shutdown");
            vb_ws_destroy(c->ws);
            c->ws = NULL;
        }
        call_end(c, "shutdown");
        call_free(c);
    }
    for (uint32_t i = 0; i < preauth_slots(s); i++) {
        call_t *c = s->pre[i];
        if (c == NULL)
            continue;
        if (c->ws != NULL) {
            if (!c->closing)
                vb_ws_close(c->ws, VB_WS_CLOSE_GOING_AWAY, "going away");
            vb_ws_destroy(c->ws);
            c->ws = NULL;
        }
        call_end(c, "shutdown");
        call_free(c);
    }
    if (s->handles) { /* a create that failed early never made them */
        uv_close((uv_handle_t *)&s->sweep, close_cb);
        uv_close((uv_handle_t *)&s->reaper, close_cb);
    }
    s->nreap = 0;
}

int vb_twilio_stream_error_metric(vb_metrics_t *m, const char *reason,
                                  vb_metric_t *id)
{
    return vb_metrics_add(m, VB_METRIC_COUNTER,
                          "vb_twilio_protocol_errors_total",
                          "Malformed or unexpected input on Twilio media "
                          "streams, by reason.",
                          VB_LABELS("reason", reason), id);
}

static int add_series(vb_twilio_stream_t *s)
{
    vb_metrics_t *m = s->cfg.metrics;
    int rc = 0;
    for (int i = 0; rc == 0 && i < E_COUNT; i++)
        rc = vb_twilio_stream_error_metric(m, vb_twilio_error_reasons[i],
                                           &s->m_err[i]);
    for (int i = 0; rc == 0 && i < R_COUNT; i++)
        rc = vb_metrics_add(
            m, VB_METRIC_COUNTER, "vb_twilio_stream_rejected_total",
            "Media streams refused before a call was opened: stream token "
            "checks, a token already used, lane full, no start, evicted from "
            "or over the limits of the unauthenticated pool.",
            VB_LABELS("reason", rejected_reasons[i]), &s->m_rej[i]);
#define ADD(type, name, help, labels, id)                         \
    do {                                                          \
        if (rc == 0)                                              \
            rc = vb_metrics_add(m, type, name, help, labels, id); \
    } while (0)
    ADD(VB_METRIC_COUNTER, "vb_twilio_calls_total",
        "Media streams that passed `start` and opened a call.", NULL,
        &s->m_calls);
    ADD(VB_METRIC_GAUGE, "vb_calls_active",
        "Calls in progress (media streams past `start`).", NULL, &s->m_active);
    for (int i = 0; outcomes[i] != NULL; i++)
        ADD(VB_METRIC_COUNTER, "vb_calls_total",
            "Calls ended, by outcome: stop (Twilio ended the stream: the "
            "caller hung up), hangup (voxbridge ended it), disconnect "
            "(the socket dropped), error (protocol failure), shutdown, "
            "timeout (no media from Twilio), fallback (the model could "
            "not be reached: the caller was told), transferred (redirected "
            "to a person by transfer_call), max_duration (hung up at a time "
            "limit: --max-call-duration, the assistant's max_call_s).",
            VB_LABELS("outcome", outcomes[i]), &s->m_outcome[i]);
    static const char *const rest_outcomes[] = {"ok", "auth", "failed"};
    for (size_t i = 0; i < 3; i++)
        ADD(VB_METRIC_COUNTER, "vb_twilio_rest_updates_total",
            "Call updates through Twilio's REST API (hang-up, fallback, "
            "transfer) by outcome: ok, auth (refused 401/403: the "
            "credentials), failed (any other answer, a timeout, no "
            "connection).",
            VB_LABELS("outcome", rest_outcomes[i]), &s->m_rest[i]);
    ADD(VB_METRIC_COUNTER, "vb_twilio_silence_frames_total",
        "20 ms frames of silence sent toward the model for gaps in "
        "Twilio's media (a leg that sends nothing while the caller is "
        "silent).",
        NULL, &s->m_gap_fill);
    ADD(VB_METRIC_COUNTER, "vb_twilio_media_in_total",
        "`media` messages received from Twilio.", NULL, &s->m_frames_in);
    ADD(VB_METRIC_COUNTER, "vb_twilio_media_out_total",
        "`media` messages sent to Twilio.", NULL, &s->m_frames_out);
    ADD(VB_METRIC_COUNTER, "vb_twilio_marks_sent_total",
        "`mark` messages sent to Twilio.", NULL, &s->m_marks_sent);
    ADD(VB_METRIC_COUNTER, "vb_twilio_marks_echoed_total",
        "`mark` echoes received from Twilio.", NULL, &s->m_marks_echoed);
    ADD(VB_METRIC_COUNTER, "vb_twilio_clears_total",
        "`clear` messages sent to Twilio.", NULL, &s->m_clears);
    ADD(VB_METRIC_COUNTER, "vb_twilio_sequence_gaps_total",
        "Jumps in Twilio's sequenceNumber.", NULL, &s->m_seq_gaps);
    ADD(VB_METRIC_COUNTER, "vb_twilio_audio_dropped_bytes_total",
        "Outbound audio bytes dropped because a Twilio socket stopped "
        "draining.",
        NULL, &s->m_out_dropped);
    ADD(VB_METRIC_COUNTER, "vb_twilio_inbound_dropped_bytes_total",
        "Inbound audio bytes dropped because a Twilio socket kept sending "
        "while the inbound ring was full.",
        NULL, &s->m_in_dropped);
    ADD(VB_METRIC_COUNTER, "vb_twilio_inbound_throttled_bytes_total",
        "Inbound audio bytes dropped because a stream sent media faster "
        "than the rate limit (2x real time beyond a burst).",
        NULL, &s->m_throttled);
    ADD(VB_METRIC_COUNTER, "vb_twilio_streams_unauthenticated_total",
        "Media stream connections adopted into the pre-auth pool (before "
        "their `start` verified).",
        NULL, &s->m_preauth);
    ADD(VB_METRIC_COUNTER, "vb_twilio_stale_messages_total",
        "Outbound messages for a call the twilio-io stage no longer has.", NULL,
        &s->m_stale);
    ADD(VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
        "Time from a message's origin (its bytes reaching the process) to "
        "its exit from a stage.",
        VB_LABELS("stage", "twilio_out"), &s->m_lat_out);
    ADD(VB_METRIC_HISTOGRAM, "vb_stage_latency_seconds",
        "Time from a message's origin (its bytes reaching the process) to "
        "its exit from a stage.",
        VB_LABELS("stage", "twilio_in"), &s->m_lat_in);
    ADD(VB_METRIC_HISTOGRAM, "vb_response_latency_seconds",
        "Time from the end of the caller's speech (the last inbound frame "
        "above -40 dBFS) to the first audio of the model's answer written "
        "to Twilio: what the caller waits, the model's own turn detection "
        "included.",
        NULL, &s->m_response);
    ADD(VB_METRIC_HISTOGRAM_LONG, "vb_call_duration_seconds",
        "Duration of calls from `start` to their end, any outcome.", NULL,
        &s->m_duration);
    ADD(VB_METRIC_COUNTER, "vb_recording_dropped_frames_total",
        "Audio frames (and call events) left out of recordings because the "
        "recorder was behind; the call's own audio is never held for it.",
        NULL, &s->m_rec_dropped);
    ADD(VB_METRIC_HISTOGRAM, "vb_barge_in_seconds",
        "Time from the model's interruption to `clear` written to Twilio.",
        NULL, &s->m_barge);
#undef ADD
    return rc;
}

int vb_twilio_stream_create(vb_twilio_stream_t **out,
                            const vb_twilio_stream_config_t *cfg)
{
    if (out == NULL)
        return VB_EINVAL;
    *out = NULL;
    if (cfg == NULL || cfg->conn_in == NULL || cfg->in_to_dsp == NULL ||
        cfg->out_from_dsp == NULL || cfg->token_key == NULL ||
        cfg->metrics == NULL || cfg->max_calls == 0 || cfg->media_batch < 1 ||
        cfg->media_batch > MAX_BATCH || cfg->lane < 0 ||
        cfg->lane > VB_TWILIO_TOKEN_MAX_LANE ||
        (cfg->max_message != 0 && cfg->max_message < 1024) ||
        cfg->in_to_dsp->data_max < sizeof(vb_msg_open_t) ||
        (cfg->record != NULL &&
         cfg->record->data_max < sizeof(vb_msg_open_t)) ||
        cfg->conn_in->data_max < sizeof(vb_msg_conn_t))
        return VB_EINVAL;
    int rc = VB_ENOMEM;
    vb_twilio_stream_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return VB_ENOMEM;
    s->cfg = *cfg;
    pthread_mutex_init(&s->stats_mu, NULL);
    s->calls = calloc(cfg->max_calls, sizeof *s->calls);
    s->gens = calloc(cfg->max_calls, sizeof *s->gens);
    s->dirty = calloc(cfg->max_calls, sizeof *s->dirty);
    s->pre = calloc(preauth_slots(s), sizeof *s->pre);
    s->used_cap = cfg->max_calls * 2 > 64 ? cfg->max_calls * 2 : 64;
    s->used = calloc(s->used_cap, sizeof *s->used);
    s->reap = calloc(cfg->max_calls + preauth_slots(s), sizeof *s->reap);
    if (s->calls == NULL || s->gens == NULL || s->dirty == NULL ||
        s->reap == NULL || s->pre == NULL || s->used == NULL)
        goto fail;
    rc = add_series(s);
    if (rc < 0)
        goto fail;
    char name[16];
    snprintf(name, sizeof name, "vb-twilio-%d", cfg->lane);
    if ((rc = vb_stage_init(&s->st, name, cfg->metrics, on_stop, s)) != 0)
        goto fail;
    vb_stage_fn conn_on[VB_MSG_KIND_COUNT] = {0},
                out_on[VB_MSG_KIND_COUNT] = {0};
    conn_on[VB_MSG_CONN] = conn_one;
    out_on[VB_MSG_AUDIO] = out_on[VB_MSG_MARK] = out_on[VB_MSG_TURN_END] =
        out_on[VB_MSG_CLEAR] = out_on[VB_MSG_HANGUP] = out_one;
    if ((rc = vb_stage_listen(&s->st, cfg->conn_in, conn_on)) != 0 ||
        (rc = vb_stage_listen(&s->st, cfg->out_from_dsp, out_on)) != 0 ||
        (rc = vb_stage_produce(&s->st, cfg->in_to_dsp)) != 0 ||
        (cfg->record != NULL &&
         (rc = vb_stage_produce(&s->st, cfg->record)) != 0))
        goto fail;
    s->st.after_drain = out_drained;
    vb_chan_on_pressure(cfg->in_to_dsp, in_pressure, s);
    uv_timer_init(&s->st.loop, &s->sweep);
    uv_check_init(&s->st.loop, &s->reaper);
    s->sweep.data = s->reaper.data = s;
    s->handles = true;
    *out = s;
    return 0;
fail:
    vb_stage_destroy(&s->st);
    free(s->calls);
    free(s->pre);
    free(s->used);
    free(s->gens);
    free(s->dirty);
    free(s->reap);
    pthread_mutex_destroy(&s->stats_mu);
    free(s);
    return rc;
}

int vb_twilio_stream_start(vb_twilio_stream_t *s)
{
    return vb_stage_start(&s->st);
}

void vb_twilio_stream_stop(vb_twilio_stream_t *s)
{
    if (s != NULL)
        vb_stage_stop(&s->st);
}

void vb_twilio_stream_destroy(vb_twilio_stream_t *s)
{
    if (s == NULL)
        return;
    vb_stage_destroy(&s->st);
    free(s->calls);
    free(s->pre);
    free(s->used);
    free(s->gens);
    free(s->dirty);
    free(s->reap);
    pthread_mutex_destroy(&s->stats_mu);
    free(s);
}

uint64_t vb_twilio_stream_last_stats(vb_twilio_stream_t *s,
                                     vb_twilio_call_stats_t *out)
{
    pthread_mutex_lock(&s->stats_mu);
    if (out != NULL)
        *out = s->last;
    uint64_t n = s->ended;
    pthread_mutex_unlock(&s->stats_mu);
    return n;
}

int vb_twilio_stream_handoff(vb_chan_t *conn, int fd, const uint8_t *pre,
                             size_t pre_len)
{
    if (conn == NULL || fd < 0 || (pre == NULL && pre_len > 0) ||
        pre_len > UINT32_MAX)
        return VB_EINVAL;
    vb_msg_conn_t cc;
    memset(&cc, 0, sizeof cc);
    cc.fd = fd;
    snprintf(cc.peer, sizeof cc.peer, "handoff");
    if (pre_len > 0) {
        cc.extra = malloc(pre_len);
        if (cc.extra == NULL)
            return VB_ENOMEM;
        memcpy(cc.extra, pre, pre_len);
        cc.extra_len = (uint32_t)pre_len;
    }
    uint64_t now = vb_clock_now_ns();
    if (vb_chan_send(conn, VB_MSG_CONN, 0, (vb_call_id_t){0, 0}, 0, now, &cc,
                     sizeof cc) != 0) {
        free(cc.extra);
        return VB_ENOSPC;
    }
    return 0;
}

/* The assistant the webhook named in the stream's parameters, if its MAC
 * (bound to the call and its token) verifies; otherwise "" (the gemini
 * stage then takes its default) and a warning. */
static void stream_assistant(call_t *c, const vb_twilio_msg_t *m,
                             const char *token, vb_msg_open_t *open)
{
    open->assistant[0] = '\0';
    const char *name = vb_twilio_msg_param(m, VB_TWILIO_ASSISTANT_PARAM);
    if (name == NULL || name[0] == '\0')
        return;
    const char *mac = vb_twilio_msg_param(m, VB_TWILIO_ASSISTANT_MAC_PARAM);
    const char *from = vb_twilio_msg_param(m, VB_TWILIO_ASSISTANT_FROM_PARAM);
    /* The MAC covers the mark: one that was set, cleared or invented
     * fails like a forged name. */
    bool from_url =
        from != NULL && strcmp(from, VB_TWILIO_ASSISTANT_FROM_URL) == 0;
    if (strlen(name) >= sizeof open->assistant || (from != NULL && !from_url) ||
        vb_twilio_sig_assistant_verify(c->s->cfg.token_key, m->start.call_sid.p,
                                       token, name, from_url, mac) != 0) {
        vb_log_warn(m->start.call_sid.p,
                    "stream names an assistant without a valid MAC: the "
                    "default answers",
                    "lane=%d", c->s->cfg.lane);
        return;
    }
    snprintf(open->assistant, sizeof open->assistant, "%s", name);
    open->assistant_from_url = from_url;
    const char *dir = vb_twilio_msg_param(m, "Direction");
    snprintf(open->direction, sizeof open->direction, "%s", dir ? dir : "");
}
