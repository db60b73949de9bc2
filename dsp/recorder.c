/* SPDX-License-Identifier: MIT */
#include "dsp/recorder.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <opus/opusenc.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/msg.h"
#include "core/stage.h"
#include "dsp/g711.h"

#define FRAME      160u                          /* 20 ms at 8 kHz */
#define NS_PER_SMP 125000ull                     /* one 8 kHz sample */
#define LWIN       (8000u * 4u)                  /* caller window: 4 s */
#define RMAX       (8000u * VB_RECORDER_AHEAD_S) /* model audio ahead */
#define JITTER     (8u * VB_RECORDER_JITTER_MS)  /* samples */
#define SILENCE    0xFF                          /* μ-law zero */

enum { E_OPEN, E_WRITE, E_ENCODE, E_BAD_SID, E_LOST_EVENT, E_AHEAD, E_COUNT };
static const char *const err_names[E_COUNT] = {
    "open", "write", "encode", "bad_callsid", "lost_event", "audio_ahead"};

typedef struct rcall {
    bool used, failed;
    vb_call_id_t id;
    char sid[64];
    char path[512];
    int fd;
    OggOpusEnc *enc;
    uint64_t t0, wm;  /* timeline zero; latest push time seen */
    uint64_t enc_pos; /* 8 kHz samples encoded */
    uint64_t l_end;   /* caller audio reaches here */
    uint8_t *lbuf;    /* LWIN, indexed by position % LWIN */
    uint8_t *rbuf;    /* model audio from r_base, r_len bytes at r_off */
    size_t r_cap, r_off, r_len;
    uint64_t r_base; /* position of rbuf[r_off] */
    vb_resampler_t *rs[2];
    uint64_t bytes, late, ahead;
    vb_recorder_t *rec;
} rcall_t;

struct vb_recorder {
    vb_recorder_config_t cfg;
    char *dir;
    vb_chan_t chan;
    vb_stage_t st;
    rcall_t *calls;
    /* Per call slot: the generation + 1 of the last call whose file this
     * thread opened (0: none yet), read by vb_recorder_file(). */
    _Atomic uint64_t *opened;
    vb_metric_t m_bytes, m_files, m_active, m_err[E_COUNT];
};

static void count(vb_recorder_t *r, vb_metric_t id, uint64_t n)
{
    if (r->st.shard != NULL)
        vb_metrics_counter_add(r->st.shard, id, n);
}

int vb_recorder_path(const char *dir, const char *call_sid, char *out, size_t n)
{
    size_t len = call_sid ? strlen(call_sid) : 0;
    if (dir == NULL || out == NULL || len == 0 || len >= 64)
        return VB_EINVAL;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)call_sid[i]))
            return VB_EINVAL;
    int k = snprintf(out, n, "%s/%s.opus", dir, call_sid);
    if (k < 0 || (size_t)k >= n)
        return VB_EINVAL;
    return 0;
}

int vb_recorder_file(const vb_recorder_t *r, vb_call_id_t call,
                     const char *call_sid, char *out, size_t n)
{
    if (r == NULL || call.slot >= r->cfg.max_calls)
        return VB_ENOENT;
    /* Acquire: pairs with the release store in call_open() once the file
     * exists with its header pages. */
    if (atomic_load_explicit(&r->opened[call.slot], memory_order_acquire) !=
        (uint64_t)call.gen + 1)
        return VB_ENOENT;
    return vb_recorder_path(r->dir, call_sid, out, n);
}

/* ---- the file ---- */

static int write_cb(void *ud, const unsigned char *p, opus_int32 len)
{
    rcall_t *c = ud;
    if (c->failed)
        return 1;
    size_t n = (size_t)len;
    while (n > 0) {
        ssize_t k = write(c->fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            c->failed = true;
            count(c->rec, c->rec->m_err[E_WRITE], 1);
            vb_log_error(c->sid, "recording write failed", "path=%s err=%s",
                         c->path, strerror(errno));
            return 1;
        }
        p += k;
        n -= (size_t)k;
        c->bytes += (uint64_t)k;
        count(c->rec, c->rec->m_bytes, (uint64_t)k);
    }
    return 0;
}

static int close_cb(void *ud)
{
    (void)ud; /* the fd is closed by call_finish() */
    return 0;
}

static uint64_t pos_of(const rcall_t *c, uint64_t t)
{
    return t > c->t0 ? (t - c->t0) / NS_PER_SMP : 0;
}

static void call_free(rcall_t *c)
{
    if (c->enc != NULL)
        ope_encoder_destroy(c->enc);
    if (c->fd >= 0)
        close(c->fd);
    vb_resampler_destroy(c->rs[0]);
    vb_resampler_destroy(c->rs[1]);
    free(c->lbuf);
    free(c->rbuf);
    vb_recorder_t *r = c->rec;
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->rec = r;
}

/* Encodes the 20 ms at enc_pos: the caller's window and the model's
 * queue (silence where either has nothing). */
static void encode_frame(rcall_t *c)
{
    vb_recorder_t *r = c->rec;
    uint8_t ul[2][FRAME];
    size_t li = (size_t)(c->enc_pos % LWIN);
    memcpy(ul[0], c->lbuf + li, FRAME); /* LWIN is a multiple of FRAME */
    memset(c->lbuf + li, SILENCE, FRAME);
    memset(ul[1], SILENCE, FRAME);
    for (uint32_t i = 0; i < FRAME; i++) {
        uint64_t p = c->enc_pos + i;
        if (p >= c->r_base && p < c->r_base + c->r_len)
            ul[1][i] = c->rbuf[c->r_off + (p - c->r_base)];
    }
    c->enc_pos += FRAME;
    /* Drop what has now been recorded from the model's queue. */
    if (c->r_base < c->enc_pos) {
        uint64_t k = c->enc_pos - c->r_base;
        if (k > c->r_len)
            k = c->r_len;
        c->r_off += (size_t)k;
        c->r_len -= (size_t)k;
        c->r_base = c->enc_pos;
        if (c->r_len == 0)
            c->r_off = 0;
    }
    if (c->failed)
        return;
    int16_t pcm8[FRAME], up[2][2 * FRAME + 8], st[4 * FRAME];
    size_t got[2] = {0, 0};
    for (int ch = 0; ch < 2; ch++) {
        vb_g711_ulaw_decode(pcm8, ul[ch], FRAME);
        if (vb_resampler_process(c->rs[ch], pcm8, FRAME, up[ch],
                                 sizeof(up[ch]) / 2, &got[ch]) != 0)
            got[ch] = 0;
    }
    size_t n = got[0] < got[1] ? got[0] : got[1];
    for (size_t i = 0; i < n; i++) {
        st[2 * i] = up[0][i];
        st[2 * i + 1] = up[1][i];
    }
    if (n > 0 && ope_encoder_write(c->enc, st, (int)n) != OPE_OK &&
        !c->failed) {
        c->failed = true;
        count(r, r->m_err[E_ENCODE], 1);
        vb_log_error(c->sid, "recording encoder failed", "path=%s", c->path);
    }
}

/* Encodes everything final: model audio up to the latest push time,
 * caller audio up to it less the jitter allowance. */
static void encode_ready(rcall_t *c)
{
    uint64_t wm = pos_of(c, c->wm);
    uint64_t safe = wm > JITTER ? wm - JITTER : 0;
    while (c->enc_pos + FRAME <= safe)
        encode_frame(c);
}

static void call_finish(rcall_t *c, uint64_t t_end)
{
    uint64_t end = pos_of(c, t_end);
    if (c->l_end > end && c->l_end - end < LWIN)
        end = c->l_end;
    /* Model audio after the end was never heard. */
    if (c->r_base + c->r_len > end)
        c->r_len = end > c->r_base ? (size_t)(end - c->r_base) : 0;
    while (c->enc_pos < end)
        encode_frame(c);
    if (!c->failed && ope_encoder_drain(c->enc) != OPE_OK) {
        c->failed = true;
        count(c->rec, c->rec->m_err[E_WRITE], 1);
    }
    /* On disk before it is called finished (this thread only; the audio
     * stages never wait for it). */
    if (!c->failed && c->fd >= 0 && fsync(c->fd) != 0) {
        c->failed = true;
        count(c->rec, c->rec->m_err[E_WRITE], 1);
    }
    if (c->rec->st.shard != NULL)
        vb_metrics_gauge_add(c->rec->st.shard, c->rec->m_active, -1);
    vb_log_info(c->sid, "recording finished",
                "path=%s seconds=%.2f bytes=%llu late_samples=%llu ok=%s",
                c->path, (double)c->enc_pos / 8000.0,
                (unsigned long long)c->bytes, (unsigned long long)c->late,
                c->failed ? "false" : "true");
    call_free(c);
}

static rcall_t *lookup(vb_recorder_t *r, vb_call_id_t id)
{
    if (id.slot >= r->cfg.max_calls)
        return NULL;
    rcall_t *c = &r->calls[id.slot];
    return c->used && vb_call_id_eq(c->id, id) ? c : NULL;
}

static void call_open(vb_recorder_t *r, const vb_msg_t *m)
{
    if (m->call.slot >= r->cfg.max_calls || m->len < sizeof(vb_msg_open_t))
        return;
    rcall_t *c = &r->calls[m->call.slot];
    if (c->used) {
        /* Its CALL_CLOSE was lost: end it where it was. */
        count(r, r->m_err[E_LOST_EVENT], 1);
        call_finish(c, c->wm);
    }
    vb_msg_open_t op;
    memcpy(&op, m->data, sizeof op);
    op.call_sid[sizeof op.call_sid - 1] = '\0';
    if (vb_recorder_path(r->dir, op.call_sid, c->path, sizeof c->path) != 0) {
        count(r, r->m_err[E_BAD_SID], 1);
        vb_log_warn(NULL, "call not recorded: unusable CallSid", "lane=%d",
                    r->cfg.lane);
        return;
    }
    if (r->cfg.want != NULL && !r->cfg.want(r->cfg.want_ud, &op)) {
        vb_log_debug(op.call_sid, "call not recorded: its assistant says so",
                     "assistant=%.*s", (int)sizeof op.assistant - 1,
                     op.assistant);
        return;
    }
    snprintf(c->sid, sizeof c->sid, "%s", op.call_sid);
    c->id = m->call;
    c->t0 = m->t_origin;
    c->wm = m->t_enqueue;
    c->used = true;
    c->lbuf = malloc(LWIN);
    c->r_cap = 8000u * 4u;
    c->rbuf = malloc(c->r_cap);
    vb_resampler_config_t rc = {r->cfg.backend, r->cfg.quality, 8000,
                                VB_RECORDER_RATE};
    int err = 0;
    if (c->lbuf == NULL || c->rbuf == NULL ||
        vb_resampler_create(&c->rs[0], &rc) != 0 ||
        vb_resampler_create(&c->rs[1], &rc) != 0) {
        err = ENOMEM;
        goto fail;
    }
    memset(c->lbuf, SILENCE, LWIN);
    c->fd = open(c->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (c->fd < 0) {
        err = errno;
        goto fail;
    }
    OggOpusComments *com = ope_comments_create();
    if (com == NULL) {
        err = ENOMEM;
        goto fail;
    }
    ope_comments_add(com, "TITLE", c->sid);
    ope_comments_add(com, "DESCRIPTION",
                     "left: caller; right: assistant as heard");
    OpusEncCallbacks cb = {write_cb, close_cb};
    int oe = 0;
    c->enc =
        ope_encoder_create_callbacks(&cb, c, com, VB_RECORDER_RATE, 2, 0, &oe);
    ope_comments_destroy(com);
    if (c->enc == NULL) {
        err = EINVAL;
        goto fail;
    }
    ope_encoder_ctl(c->enc, OPE_SET_MUXING_DELAY(48000)); /* a page a second */
    ope_encoder_ctl(c->enc, OPE_SET_DECISION_DELAY(0));
    ope_encoder_ctl(c->enc, OPUS_SET_BITRATE(r->cfg.bitrate));
    if (ope_encoder_flush_header(c->enc) != OPE_OK || c->failed) {
        err = EIO;
        goto fail;
    }
    count(r, r->m_files, 1);
    /* Release: pairs with the acquire load in vb_recorder_file(). */
    atomic_store_explicit(&r->opened[m->call.slot], (uint64_t)m->call.gen + 1,
                          memory_order_release);
    if (r->st.shard != NULL)
        vb_metrics_gauge_add(r->st.shard, r->m_active, 1);
    vb_log_info(c->sid, "recording started", "path=%s lane=%d", c->path,
                r->cfg.lane);
    return;
fail:
    count(r, r->m_err[E_OPEN], 1);
    vb_log_error(c->sid, "cannot start the recording", "path=%s err=%s",
                 c->path, strerror(err));
    if (c->fd >= 0)
        unlink(c->path); /* created here, and of no use */
    call_free(c);
}

static void caller_audio(rcall_t *c, const vb_msg_t *m)
{
    uint64_t p = pos_of(c, m->t_origin);
    for (uint32_t i = 0; i < m->len; i++) {
        uint64_t q = p + i;
        if (q < c->enc_pos || q >= c->enc_pos + LWIN) {
            c->late++;
            continue;
        }
        c->lbuf[q % LWIN] = m->data[i];
    }
    if (p + m->len > c->l_end)
        c->l_end = p + m->len;
}

static bool r_reserve(rcall_t *c, size_t need)
{
    if (c->r_off + need <= c->r_cap)
        return true;
    if (c->r_off > 0) {
        memmove(c->rbuf, c->rbuf + c->r_off, c->r_len);
        c->r_off = 0;
        if (need <= c->r_cap)
            return true;
    }
    size_t cap = c->r_cap;
    while (cap < need)
        cap *= 2;
    uint8_t *b = realloc(c->rbuf, cap);
    if (b == NULL)
        return false;
    c->rbuf = b;
    c->r_cap = cap;
    return true;
}

static void model_audio(rcall_t *c, const vb_msg_t *m)
{
    uint64_t p = pos_of(c, m->t_origin);
    const uint8_t *d = m->data;
    size_t n = m->len;
    if (p < c->enc_pos) { /* its playout began before what is final */
        uint64_t k = c->enc_pos - p;
        c->late += k < n ? k : n;
        if (k >= n)
            return;
        d += k;
        n -= (size_t)k;
        p = c->enc_pos;
    }
    if (c->r_len == 0) {
        c->r_base = c->enc_pos;
        c->r_off = 0;
    }
    uint64_t end = c->r_base + c->r_len;
    if (p < end) /* overlap: the newer audio wins */
        c->r_len = (size_t)(p - c->r_base);
    size_t gap = p > end ? (size_t)(p - end) : 0;
    size_t need = c->r_len + gap + n;
    if (need > RMAX || !r_reserve(c, need)) {
        c->ahead += n;
        count(c->rec, c->rec->m_err[E_AHEAD], 1);
        return;
    }
    memset(c->rbuf + c->r_off + c->r_len, SILENCE, gap);
    memcpy(c->rbuf + c->r_off + c->r_len + gap, d, n);
    c->r_len = need;
}

static void clear_at(rcall_t *c, uint64_t t)
{
    uint64_t p = pos_of(c, t);
    if (p < c->r_base)
        p = c->r_base;
    if (p < c->r_base + c->r_len)
        c->r_len = (size_t)(p - c->r_base);
}

static bool on_msg(void *ud, const vb_msg_t *m)
{
    vb_recorder_t *r = ud;
    if (r->cfg.test_delay_us > 0) {
        struct timespec ts = {(time_t)(r->cfg.test_delay_us / 1000000u),
                              (long)(r->cfg.test_delay_us % 1000000u) * 1000L};
        nanosleep(&ts, NULL);
    }
    if (m->kind == VB_MSG_CALL_OPEN) {
        call_open(r, m);
        return true;
    }
    rcall_t *c = lookup(r, m->call);
    if (c == NULL)
        return true;
    if (m->t_enqueue > c->wm)
        c->wm = m->t_enqueue;
    switch (m->kind) {
    case VB_MSG_AUDIO:
        if (m->flags & VB_RECORDER_CALLER)
            caller_audio(c, m);
        else if (m->flags & VB_RECORDER_MODEL)
            model_audio(c, m);
        break;
    case VB_MSG_CLEAR:
        clear_at(c, m->t_origin);
        break;
    case VB_MSG_CALL_CLOSE:
        call_finish(c, m->t_origin);
        return true;
    default:
        break;
    }
    encode_ready(c);
    return true;
}

static void on_stop(void *ud)
{
    vb_recorder_t *r = ud;
    vb_msg_t *m;
    while ((m = vb_chan_peek(&r->chan)) != NULL) {
        on_msg(r, m);
        vb_chan_release(&r->chan);
    }
    for (uint32_t i = 0; i < r->cfg.max_calls; i++)
        if (r->calls[i].used)
            call_finish(&r->calls[i], r->calls[i].wm);
}

static int add_series(vb_recorder_t *r, vb_metrics_t *m)
{
    int rc;
    if ((rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_recording_bytes_total",
                             "Bytes written to call recordings.", NULL,
                             &r->m_bytes)) != 0 ||
        (rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_recording_files_total",
                             "Call recordings started.", NULL, &r->m_files)) !=
            0 ||
        (rc = vb_metrics_add(m, VB_METRIC_GAUGE, "vb_recordings_active",
                             "Call recordings open now.", NULL,
                             &r->m_active)) != 0)
        return rc;
    for (int i = 0; i < E_COUNT; i++)
        if ((rc = vb_metrics_add(
                 m, VB_METRIC_COUNTER, "vb_recording_errors_total",
                 "Recording problems: a file that cannot be opened, "
                 "written or encoded, an unusable CallSid, a lost call "
                 "event, audio outside the recorder's window.",
                 VB_LABELS("reason", err_names[i]), &r->m_err[i])) != 0)
            return rc;
    return 0;
}

int vb_recorder_create(vb_recorder_t **out, const vb_recorder_config_t *cfg)
{
    if (out == NULL || cfg == NULL || cfg->dir == NULL || *cfg->dir == '\0' ||
        cfg->metrics == NULL || cfg->max_calls == 0 || cfg->slots < 64 ||
        (cfg->slots & (cfg->slots - 1)) != 0)
        return VB_EINVAL;
    vb_recorder_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return VB_ENOMEM;
    r->cfg = *cfg;
    if (r->cfg.bitrate <= 0)
        r->cfg.bitrate = 32000;
    r->dir = strdup(cfg->dir);
    r->calls = calloc(cfg->max_calls, sizeof(rcall_t));
    r->opened = calloc(cfg->max_calls, sizeof(*r->opened));
    int rc = VB_ENOMEM;
    if (r->dir == NULL || r->calls == NULL || r->opened == NULL)
        goto fail;
    for (uint32_t i = 0; i < cfg->max_calls; i++) {
        r->calls[i].fd = -1;
        r->calls[i].rec = r;
    }
    vb_chan_config_t cc = {"twilio_to_recorder", cfg->slots, VB_RECORDER_DATA,
                           0, cfg->metrics};
    if ((rc = vb_chan_init(&r->chan, &cc)) != 0 ||
        (rc = add_series(r, cfg->metrics)) != 0)
        goto fail;
    char name[16];
    snprintf(name, sizeof(name), "vb-rec-%d", cfg->lane);
    if ((rc = vb_stage_init(&r->st, name, cfg->metrics, on_stop, r)) != 0)
        goto fail;
    vb_stage_fn on[VB_MSG_KIND_COUNT] = {0};
    on[VB_MSG_CALL_OPEN] = on[VB_MSG_AUDIO] = on[VB_MSG_CLEAR] =
        on[VB_MSG_CALL_CLOSE] = on_msg;
    if ((rc = vb_stage_listen(&r->st, &r->chan, on)) != 0)
        goto fail;
    *out = r;
    return 0;
fail:
    vb_stage_destroy(&r->st);
    vb_chan_destroy(&r->chan);
    free(r->opened);
    free(r->calls);
    free(r->dir);
    free(r);
    return rc;
}

vb_chan_t *vb_recorder_chan(vb_recorder_t *r)
{
    return r ? &r->chan : NULL;
}

int vb_recorder_start(vb_recorder_t *r)
{
    return vb_stage_start(&r->st);
}

void vb_recorder_stop(vb_recorder_t *r)
{
    if (r != NULL)
        vb_stage_stop(&r->st);
}

void vb_recorder_destroy(vb_recorder_t *r)
{
    if (r == NULL)
        return;
    vb_stage_destroy(&r->st);
    for (uint32_t i = 0; i < r->cfg.max_calls; i++)
        if (r->calls[i].used)
            call_free(&r->calls[i]);
    vb_chan_destroy(&r->chan);
    free(r->opened);
    free(r->calls);
    free(r->dir);
    free(r);
}
