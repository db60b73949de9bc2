/* SPDX-License-Identifier: MIT */
/*
 * WebSocket endpoint on wslay (see net/ws.h for the contract).
 *
 * DESIGN. Incoming bytes pass through a small frame-header pre-parser before
 * wslay sees them. The pre-parser holds each header back until it is
 * complete and checks what wslay either does not check or answers without a
 * status code (fragmented or oversized control frames, non-minimal lengths,
 * the message size across fragments, continuation frames out of place);
 * a bad header closes with 1002/1009 and a reason, and wslay never sees it.
 * wslay then unmasks, validates UTF-8 (1007) and close codes (1002), answers
 * pings and echoes the peer's close frame. wslay runs in no-buffering mode:
 * data frames are assembled into one per-endpoint buffer that grows to the
 * largest message seen and is reused, so steady-state receiving does not
 * allocate. Outgoing data messages are framed here directly into a reused
 * scratch buffer and written out in one piece; control frames go through
 * wslay's queue. Because the output sink always takes whole writes, wslay
 * never leaves a frame half-written and the two paths cannot interleave
 * inside a frame.
 *
 * Output back-pressure (transport glue): after every complete incoming
 * frame wslay's queue is flushed to the transport (so a pong is counted in
 * bytes, not as a queued object) and, while the endpoint is OPEN, unsent
 * output above the cap stops the transport reading; the rest of the
 * current read is copied to a held-input buffer (allocated on the first
 * stall, then reused) and parsed when the transport drains. The same check
 * runs before a read is parsed, for output the owner made on its own.
 *
 * User callbacks may destroy the endpoint. Every entry point counts its
 * nesting depth; a destroy inside a callback only marks the endpoint and the
 * outermost entry frees it on the way out.
 */
#include "net/ws.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <llhttp.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <wslay/wslay.h>

#include "core/err.h"
#include "core/log.h"
#include "net/http.h"

#define WS_GUID             "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_HS_MAX           (16u * 1024u)
#define WS_CLOSE_TIMEOUT_MS 5000u
#define WS_HS_TIMEOUT_MS    10000u

typedef struct ws_timer {
    uv_timer_t h;
    vb_ws_t *ws; /* NULL once the endpoint is gone */
} ws_timer_t;

struct vb_ws {
    vb_ws_role_t role;
    vb_ws_state_t state;
    vb_ws_callbacks_t cb;
    void *ud;
    size_t max_message;
    size_t max_pending_out;
    uint32_t close_timeout_ms, handshake_timeout_ms;
    char log_id[64];
    wslay_event_context_ptr ctx;

    /* Input segment currently offered to wslay's recv callback. */
    const uint8_t *in;
    size_t in_len;

    /* Frame-header pre-parser. */
    uint8_t hdr[14];
    uint8_t hlen, hneed;
    uint64_t remain;   /* payload bytes of the current frame still to pass */
    bool in_payload;   /* passing payload bytes */
    bool frag_active;  /* a fragmented data message is in progress */
    uint64_t frag_len; /* bytes of that message so far */

    /* Data message assembly. */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    bool msg_text, cur_ctrl, msg_oom;

    /* Outgoing data frames. */
    uint8_t *out;
    size_t out_cap;
    uint8_t rnd[64];
    size_t rnd_pos;

    /* Close bookkeeping. */
    vb_ws_close_info_t info;
    bool user_closed;    /* vb_ws_close() queued our close frame */
    bool local_error;    /* we closed because of a peer error (pre-parser) */
    uint16_t local_code; /* code of that close */
    char local_reason[VB_WS_REASON_MAX + 1];
    bool close_seen;    /* a close frame arrived */
    bool output_failed; /* the output sink failed */
    int fail_err;

    /* Re-entrancy. */
    int depth;
    bool destroy_pending;

    /* Transport glue. */
    uv_loop_t *loop;
    vb_transport_t *t;
    ws_timer_t *timer;
    char key[VB_WS_KEY_LEN + 1];
    char *hs;
    size_t hs_len;

    /* Read flow control: the owner's pause and output back-pressure. */
    bool user_paused, out_stalled;
    uint8_t *held; /* read but not parsed while out_stalled */
    size_t held_off, held_len, held_cap;

    vb_ws_stats_t stats;
};

static void ws_finish(vb_ws_t *ws, int err);
static void ws_update(vb_ws_t *ws);
static bool ws_leave(vb_ws_t *ws);

/* ---- helpers: randomness, UTF-8, codes ---- */

static int ws_random(vb_ws_t *ws, uint8_t *dst, size_t n)
{
    while (n > 0) {
        if (ws->rnd_pos >= sizeof ws->rnd) {
            size_t got = 0;
            while (got < sizeof ws->rnd) {
                ssize_t r = getrandom(ws->rnd + got, sizeof ws->rnd - got, 0);
                if (r < 0)
                    return VB_ESYS;
                got += (size_t)r;
            }
            ws->rnd_pos = 0;
        }
        size_t k = sizeof ws->rnd - ws->rnd_pos;
        if (k > n)
            k = n;
        memcpy(dst, ws->rnd + ws->rnd_pos, k);
        ws->rnd_pos += k;
        dst += k;
        n -= k;
    }
    return 0;
}

bool vb_ws_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i - 1 < need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            uint8_t d = s[i + k];
            if ((d & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

bool vb_ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 &&
            code != 1006) ||
           (code >= 3000 && code <= 4999);
}

/* ---- output ---- */

static int ws_output(vb_ws_t *ws, const uint8_t *data, size_t len)
{
    int rc;
    if (ws->output_failed)
        return VB_ECLOSED;
    if (ws->t != NULL)
        rc = vb_transport_write(ws->t, data, len);
    else if (ws->cb.on_output != NULL)
        rc = ws->cb.on_output(ws, data, len, ws->ud);
    else
        rc = VB_ECLOSED;
    if (rc < 0) {
        ws->output_failed = true;
        ws->fail_err = rc;
        return rc;
    }
    ws->stats.bytes_out += len;
    return 0;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data,
                          size_t len, int flags, void *ud)
{
    (void)flags;
    vb_ws_t *ws = ud;
    if (ws_output(ws, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                          int flags, void *ud)
{
    (void)flags;
    vb_ws_t *ws = ud;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = ws->in_len < len ? ws->in_len : len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                         void *ud)
{
    vb_ws_t *ws = ud;
    if (ws_random(ws, buf, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

/* ---- input: wslay callbacks ---- */

static void
ws_frame_start_cb(wslay_event_context_ptr ctx,
                  const struct wslay_event_on_frame_recv_start_arg *arg,
                  void *ud)
{
    (void)ctx;
    vb_ws_t *ws = ud;
    ws->cur_ctrl = (arg->opcode & 0x8) != 0;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        ws->msg_len = 0;
        ws->msg_text = arg->opcode == WSLAY_TEXT_FRAME;
    }
}

static void
ws_frame_chunk_cb(wslay_event_context_ptr ctx,
                  const struct wslay_event_on_frame_recv_chunk_arg *arg,
                  void *ud)
{
    vb_ws_t *ws = ud;
    if (ws->cur_ctrl || ws->msg_oom || arg->data_length == 0)
        return;
    if (ws->msg_len + arg->data_length > ws->msg_cap) {
        /* The pre-parser bounds msg_len + data by max_message. */
        size_t cap = ws->msg_cap ? ws->msg_cap : 4096;
        while (cap < ws->msg_len + arg->data_length)
            cap *= 2;
        if (cap > ws->max_message)
            cap = ws->max_message;
        uint8_t *p = realloc(ws->msg, cap);
        if (p == NULL) {
            ws->msg_oom = true;
            wslay_event_shutdown_read(ctx);
            return;
        }
        ws->msg = p;
        ws->msg_cap = cap;
    }
    memcpy(ws->msg + ws->msg_len, arg->data, arg->data_length);
    ws->msg_len += arg->data_length;
}

static void ws_msg_cb(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    (void)ctx;
    vb_ws_t *ws = ud;
    if (ws->destroy_pending)
        return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        ws->stats.msgs_in++;
        /* Nothing is delivered once we decided to close. */
        if (ws->state == VB_WS_OPEN && !ws->user_closed && !ws->local_error)
            ws->cb.on_message(ws, arg->opcode == WSLAY_TEXT_FRAME,
                              ws->msg != NULL ? ws->msg : (const uint8_t *)"",
                              ws->msg_len, ws->ud);
        ws->msg_len = 0;
        break;
    case WSLAY_PING:
        ws->stats.pings_in++;
        break;
    case WSLAY_PONG:
        if (ws->cb.on_pong != NULL)
            ws->cb.on_pong(ws, arg->msg, arg->msg_length, ws->ud);
        break;
    case WSLAY_CONNECTION_CLOSE: {
        ws->close_seen = true;
        if (!ws->user_closed && !ws->local_error)
            ws->info.by_peer = true;
        size_t rl = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
        if (rl > VB_WS_REASON_MAX)
            rl = VB_WS_REASON_MAX;
        if (rl > 0)
            memcpy(ws->info.reason, arg->msg + 2, rl);
        ws->info.reason[rl] = '\0';
        break;
    }
    default:
        break;
    }
}

/* ---- input: pre-parser ---- */

/* Closes because of a framing error: our own close frame with a reason. */
static void ws_fail_local(vb_ws_t *ws, uint16_t code, const char *reason)
{
    if (!ws->local_error && !ws->user_closed) {
        ws->local_error = true;
        ws->local_code = code;
        snprintf(ws->local_reason, sizeof ws->local_reason, "%s", reason);
        vb_log_debug(ws->log_id[0] ? ws->log_id : NULL, "ws protocol error",
                     "code=%u reason=%s", (unsigned)code, reason);
    }
    /* Fails with NO_MORE_MSG when a close frame is already queued; then
     * that one stands. */
    wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason,
                            strlen(reason));
    wslay_event_shutdown_read(ws->ctx);
}

/* Offers one segment to wslay. */
static void ws_push(vb_ws_t *ws, const uint8_t *p, size_t n)
{
    ws->in = p;
    ws->in_len = n;
    while (ws->in_len > 0 && wslay_event_get_read_enabled(ws->ctx) &&
           !ws->destroy_pending) {
        int r = wslay_event_recv(ws->ctx);
        if (r != 0) {
            /* Callback failure (our sink) or allocation failure. */
            wslay_event_shutdown_read(ws->ctx);
            if (ws->fail_err == 0)
                ws->fail_err = r == WSLAY_ERR_NOMEM ? VB_ENOMEM : VB_EIO;
            break;
        }
        if (ws->msg_oom) {
            ws_fail_local(ws, VB_WS_CLOSE_INTERNAL, "out of memory");
            break;
        }
    }
    ws->in = NULL;
    ws->in_len = 0;
}

/* Validates a complete header in ws->hdr; returns true if it may pass. */
static bool ws_check_header(vb_ws_t *ws, uint64_t *plen)
{
    uint8_t b0 = ws->hdr[0], b1 = ws->hdr[1];
    bool fin = b0 & 0x80, masked = b1 & 0x80;
    uint8_t op = b0 & 0x0F;
    uint64_t len = b1 & 0x7F;
    if (len == 126) {
        len = ((uint64_t)ws->hdr[2] << 8) | ws->hdr[3];
        if (len < 126) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "non-minimal payload length");
            return false;
        }
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | ws->hdr[2 + i];
        if (len < 65536 || (len >> 63) != 0) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "non-minimal payload length");
            return false;
        }
    }
    (void)masked;
    if (op & 0x8) {
        if (op == WSLAY_CONNECTION_CLOSE && len == 1) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "close frame with 1-byte payload");
            return false;
        }
    } else if (op == WSLAY_CONTINUATION_FRAME) {
        if (!ws->frag_active) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "continuation frame without a message");
            return false;
        }
        if (len > ws->max_message - ws->frag_len) {
            ws_fail_local(ws, VB_WS_CLOSE_TOO_BIG, "message too big");
            return false;
        }
        ws->frag_len += len;
        if (fin)
            ws->frag_active = false;
    } else {
        if (ws->frag_active) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "new message inside a fragmented message");
            return false;
        }
        if (len > ws->max_message) {
            ws_fail_local(ws, VB_WS_CLOSE_TOO_BIG, "message too big");
            return false;
        }
        ws->frag_len = len;
        ws->frag_active = !fin;
    }
    *plen = len;
    return true;
}

/* Checks the first two header bytes; sets hneed. */
static bool ws_check_head2(vb_ws_t *ws)
{
    uint8_t b0 = ws->hdr[0], b1 = ws->hdr[1];
    bool fin = b0 & 0x80, masked = b1 & 0x80;
    uint8_t op = b0 & 0x0F, len7 = b1 & 0x7F;
    if (b0 & 0x70) {
        ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR, "reserved bits set");
        return false;
    }
    if (!(op <= 2 || (op >= 8 && op <= 10))) {
        ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR, "unknown opcode");
        return false;
    }
    if (op & 0x8) {
        if (!fin) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "fragmented control frame");
            return false;
        }
        if (len7 > 125) {
            ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR,
                          "control frame too long");
            return false;
        }
    }
    if (ws->role == VB_WS_SERVER && !masked) {
        ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR, "unmasked client frame");
        return false;
    }
    if (ws->role == VB_WS_CLIENT && masked) {
        ws_fail_local(ws, VB_WS_CLOSE_PROTOCOL_ERROR, "masked server frame");
        return false;
    }
    ws->hneed = (uint8_t)(2 +
                          (len7 == 126   ? 2
                           : len7 == 127 ? 8
                                         : 0) +
                          (masked ? 4 : 0));
    return true;
}

/* ---- output back-pressure ---- */

static size_t ws_cap(const vb_ws_t *ws)
{
    return ws->max_pending_out ? ws->max_pending_out
                               : VB_WS_DEFAULT_MAX_PENDING_OUT;
}

/* Hands wslay's queue (pongs, close frames) to the output sink now, so it
 * is counted as bytes in the transport rather than as queued objects. */
static void ws_flush_queue(vb_ws_t *ws)
{
    if (ws->state == VB_WS_CLOSED || ws->output_failed ||
        !wslay_event_want_write(ws->ctx))
        return;
    if (wslay_event_send(ws->ctx) != 0 && ws->fail_err == 0)
        ws->fail_err = VB_EIO;
}

/* At a frame boundary: stops reading if unsent output is over the cap.
 * Returns true when reading is (now) stopped for that reason. */
static bool ws_check_out(vb_ws_t *ws)
{
    if (ws->t == NULL || ws->state != VB_WS_OPEN)
        return false;
    if (ws->out_stalled)
        return true;
    size_t pending = vb_ws_pending(ws);
    if (pending <= ws_cap(ws))
        return false;
    ws->out_stalled = true;
    ws->stats.out_stalls++;
    vb_transport_read_stop(ws->t);
    VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, ws->log_id[0] ? ws->log_id : NULL,
                       "ws output backlog, reading paused",
                       "pending=%zu cap=%zu", pending, ws_cap(ws));
    return true;
}

/* Parses input; returns the bytes consumed, fewer than `n` only when
 * back-pressure stopped reading at a frame boundary. */
static size_t ws_input(vb_ws_t *ws, const uint8_t *p, size_t n)
{
    const uint8_t *start = p;
    if (ws->hlen == 0 && !ws->in_payload && ws_check_out(ws))
        return 0;
    while (n > 0 && wslay_event_get_read_enabled(ws->ctx) &&
           !ws->destroy_pending) {
        bool frame_done = false;
        if (ws->in_payload) {
            size_t k = ws->remain < n ? (size_t)ws->remain : n;
            ws_push(ws, p, k);
            p += k;
            n -= k;
            ws->remain -= k;
            if (ws->remain == 0) {
                ws->in_payload = false;
                frame_done = true;
            }
        } else {
            ws->hdr[ws->hlen++] = *p++;
            n--;
            if (ws->hlen == 2 && !ws_check_head2(ws))
                break;
            if (ws->hlen >= 2 && ws->hlen == ws->hneed) {
                uint64_t plen;
                if (!ws_check_header(ws, &plen))
                    break;
                ws->hlen = 0;
                ws_push(ws, ws->hdr, ws->hneed);
                ws->remain = plen;
                ws->in_payload = plen > 0;
                frame_done = plen == 0;
            }
        }
        if (frame_done && !ws->destroy_pending) {
            ws_flush_queue(ws);
            if (ws_check_out(ws))
                break;
        }
    }
    return (size_t)(p - start);
}

/* ---- state ---- */

static void ws_stop_timer(vb_ws_t *ws)
{
    if (ws->timer != NULL)
        uv_timer_stop(&ws->timer->h);
}

static void ws_timer_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void ws_finish(vb_ws_t *ws, int err)
{
    if (ws->state == VB_WS_CLOSED)
        return;
    ws->state = VB_WS_CLOSED;
    ws_stop_timer(ws);
    wslay_event_shutdown_read(ws->ctx);
    wslay_event_shutdown_write(ws->ctx);
    vb_ws_close_info_t *info = &ws->info;
    info->code_received = ws->close_seen
                              ? wslay_event_get_status_code_received(ws->ctx)
                              : VB_WS_CLOSE_ABNORMAL;
    info->code_sent = wslay_event_get_close_sent(ws->ctx)
                          ? wslay_event_get_status_code_sent(ws->ctx)
                          : VB_WS_CLOSE_ABNORMAL;
    if (err == 0 && ws->fail_err != 0)
        err = ws->fail_err;
    if (err == 0 && ws->local_error) {
        err = ws->local_code == VB_WS_CLOSE_TOO_BIG    ? VB_EMSGSIZE
              : ws->local_code == VB_WS_CLOSE_INTERNAL ? VB_ENOMEM
                                                       : VB_EPROTO;
        snprintf(info->reason, sizeof info->reason, "%s", ws->local_reason);
    } else if (err == 0 && !ws->close_seen && !ws->user_closed) {
        /* wslay closed on its own: invalid UTF-8 or an invalid close. */
        err = VB_EPROTO;
        if (info->code_sent == VB_WS_CLOSE_INVALID_PAYLOAD)
            snprintf(info->reason, sizeof info->reason, "invalid UTF-8");
        else
            snprintf(info->reason, sizeof info->reason, "invalid close frame");
    }
    info->err = err;
    ws->held_len = 0;
    ws->held_off = 0;
    if (ws->t != NULL)
        vb_transport_shutdown(ws->t);
    if (ws->cb.on_close != NULL && !ws->destroy_pending)
        ws->cb.on_close(ws, info, ws->ud);
}

static void ws_close_timeout_cb(uv_timer_t *h)
{
    ws_timer_t *tm = h->data;
    vb_ws_t *ws = tm->ws;
    if (ws == NULL)
        return;
    ws->depth++;
    snprintf(ws->info.reason, sizeof ws->info.reason, "%s",
             ws->state == VB_WS_CONNECTING ? "handshake timeout"
                                           : "close timeout");
    ws_finish(ws, VB_ETIMEDOUT);
    ws_leave(ws);
}

static void ws_start_timer(vb_ws_t *ws, uint32_t ms)
{
    if (ws->timer != NULL)
        uv_timer_start(&ws->timer->h, ws_close_timeout_cb, ms, 0);
}

/* Flushes wslay's queue and moves the state machine. */
static void ws_update(vb_ws_t *ws)
{
    if (ws->state == VB_WS_CLOSED || ws->state == VB_WS_CONNECTING)
        return;
    if (wslay_event_want_write(ws->ctx)) {
        if (wslay_event_send(ws->ctx) != 0 && ws->fail_err == 0)
            ws->fail_err = VB_EIO;
    }
    if (ws->output_failed || ws->fail_err != 0) {
        ws_finish(ws, ws->fail_err);
        return;
    }
    bool sent = wslay_event_get_close_sent(ws->ctx);
    if (sent || ws->close_seen) {
        if (ws->state == VB_WS_OPEN) {
            ws->state = VB_WS_CLOSING;
            if (sent && !ws->close_seen)
                ws_start_timer(ws, ws->close_timeout_ms);
        }
    }
    if (sent && !wslay_event_get_read_enabled(ws->ctx))
        ws_finish(ws, 0);
}

/* ---- lifecycle ---- */

static int ws_new(const vb_ws_config_t *cfg, const vb_ws_callbacks_t *cb,
                  void *ud, vb_ws_t **out)
{
    *out = NULL;
    if (cfg == NULL || cb == NULL || cb->on_message == NULL ||
        (cfg->role != VB_WS_SERVER && cfg->role != VB_WS_CLIENT))
        return VB_EINVAL;
    vb_ws_t *ws = calloc(1, sizeof *ws);
    if (ws == NULL)
        return VB_ENOMEM;
    ws->role = cfg->role;
    ws->state = VB_WS_OPEN;
    ws->cb = *cb;
    ws->ud = ud;
    ws->max_message =
        cfg->max_message ? cfg->max_message : VB_WS_DEFAULT_MAX_MESSAGE;
    ws->max_pending_out = cfg->max_pending_out;
    ws->close_timeout_ms =
        cfg->close_timeout_ms ? cfg->close_timeout_ms : WS_CLOSE_TIMEOUT_MS;
    ws->handshake_timeout_ms = cfg->handshake_timeout_ms
                                   ? cfg->handshake_timeout_ms
                                   : WS_HS_TIMEOUT_MS;
    if (cfg->log_id != NULL)
        snprintf(ws->log_id, sizeof ws->log_id, "%s", cfg->log_id);
    ws->rnd_pos = sizeof ws->rnd;
    struct wslay_event_callbacks wcb = {
        .recv_callback = ws_recv_cb,
        .send_callback = ws_send_cb,
        .genmask_callback = ws_genmask_cb,
        .on_frame_recv_start_callback = ws_frame_start_cb,
        .on_frame_recv_chunk_callback = ws_frame_chunk_cb,
        .on_msg_recv_callback = ws_msg_cb,
    };
    int r = cfg->role == VB_WS_SERVER
                ? wslay_event_context_server_init(&ws->ctx, &wcb, ws)
                : wslay_event_context_client_init(&ws->ctx, &wcb, ws);
    if (r != 0) {
        free(ws);
        return VB_ENOMEM;
    }
    wslay_event_config_set_no_buffering(ws->ctx, 1);
    /* The pre-parser enforces max_message; keep wslay's own check out of
     * the way (it does not apply in no-buffering mode anyway). */
    wslay_event_config_set_max_recv_msg_length(ws->ctx, UINT64_MAX >> 1);
    *out = ws;
    return 0;
}

int vb_ws_create(const vb_ws_config_t *cfg, const vb_ws_callbacks_t *cb,
                 void *ud, vb_ws_t **out)
{
    if (out == NULL)
        return VB_EINVAL;
    *out = NULL;
    if (cb == NULL || cb->on_output == NULL)
        return VB_EINVAL;
    return ws_new(cfg, cb, ud, out);
}

void vb_ws_destroy(vb_ws_t *ws)
{
    if (ws == NULL)
        return;
    if (ws->depth > 0) {
        ws->destroy_pending = true;
        return;
    }
    if (ws->timer != NULL) {
        ws->timer->ws = NULL;
        uv_timer_stop(&ws->timer->h);
        uv_close((uv_handle_t *)&ws->timer->h, ws_timer_close_cb);
    }
    vb_transport_close(ws->t);
    wslay_event_context_free(ws->ctx);
    free(ws->msg);
    free(ws->out);
    free(ws->hs);
    free(ws->held);
    free(ws);
}

/* Leaves an entry point: the outermost one flushes output and moves the
 * state machine (which may run callbacks, hence still at depth 1), then
 * frees the endpoint if a callback destroyed it. Returns true if freed. */
static bool ws_leave(vb_ws_t *ws)
{
    if (ws->depth == 1 && !ws->destroy_pending)
        ws_update(ws);
    if (--ws->depth == 0 && ws->destroy_pending) {
        vb_ws_destroy(ws);
        return true;
    }
    return false;
}

/* Keeps input read while back-pressure stopped reading; false (and the
 * endpoint failing with 1011) if it does not fit. */
static bool ws_hold(vb_ws_t *ws, const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    if (ws->held_len + n > VB_WS_MAX_HELD_INPUT) {
        ws_fail_local(ws, VB_WS_CLOSE_INTERNAL, "input overflow");
        return false;
    }
    if (ws->held_off > 0) {
        memmove(ws->held, ws->held + ws->held_off, ws->held_len);
        ws->held_off = 0;
    }
    if (ws->held_len + n > ws->held_cap) {
        size_t cap = ws->held_cap ? ws->held_cap : 16384;
        while (cap < ws->held_len + n)
            cap *= 2;
        uint8_t *q = realloc(ws->held, cap);
        if (q == NULL) {
            ws_fail_local(ws, VB_WS_CLOSE_INTERNAL, "out of memory");
            return false;
        }
        ws->held = q;
        ws->held_cap = cap;
    }
    memcpy(ws->held + ws->held_len, p, n);
    ws->held_len += n;
    return true;
}

/* Input from the peer: parsed now, or held while output is stalled. */
static void ws_glue_input(vb_ws_t *ws, const uint8_t *p, size_t n)
{
    if (ws->out_stalled || ws->held_len > 0) {
        ws_hold(ws, p, n);
        return;
    }
    size_t used = ws_input(ws, p, n);
    if (used < n && ws->out_stalled && ws->state != VB_WS_CLOSED &&
        !ws->destroy_pending)
        ws_hold(ws, p + used, n - used);
}

/* The transport drained (the low-water mark): parses the held input, then
 * reads again unless that stalled output anew or the owner paused. */
static void ws_resume_out(vb_ws_t *ws)
{
    if (!ws->out_stalled || ws->state == VB_WS_CLOSED || ws->destroy_pending ||
        vb_transport_pending(ws->t) > 0)
        return;
    ws->out_stalled = false;
    if (ws->held_len > 0) {
        size_t used = ws_input(ws, ws->held + ws->held_off, ws->held_len);
        if (ws->state == VB_WS_CLOSED || ws->destroy_pending ||
            !ws->out_stalled) {
            /* All parsed, or the rest is moot. */
            ws->held_off = 0;
            ws->held_len = 0;
        } else {
            ws->held_off += used;
            ws->held_len -= used;
        }
    }
    if (!ws->out_stalled && !ws->user_paused && ws->state != VB_WS_CLOSED &&
        !ws->destroy_pending)
        vb_transport_read_start(ws->t);
}

int vb_ws_feed(vb_ws_t *ws, const uint8_t *data, size_t len)
{
    if (ws->state == VB_WS_CLOSED)
        return VB_ECLOSED;
    ws->depth++;
    ws->stats.bytes_in += len;
    ws_glue_input(ws, data, len);
    if (ws_leave(ws))
        return VB_ECLOSED;
    return ws->state == VB_WS_CLOSED ? ws->info.err : 0;
}

void vb_ws_feed_eof(vb_ws_t *ws)
{
    if (ws->state == VB_WS_CLOSED)
        return;
    ws->depth++;
    bool done = ws->close_seen && wslay_event_get_close_sent(ws->ctx);
    ws_finish(ws, done ? 0 : VB_ECLOSED);
    ws_leave(ws);
}

/* ---- sending ---- */

static int ws_send_data(vb_ws_t *ws, uint8_t op, const void *data, size_t len)
{
    if (ws->state == VB_WS_CONNECTING)
        return VB_EAGAIN;
    if (ws->state != VB_WS_OPEN || ws->output_failed)
        return VB_ECLOSED;
    if (len > (size_t)INT32_MAX)
        return VB_EMSGSIZE;
    bool mask = ws->role == VB_WS_CLIENT;
    size_t need = len + 14;
    if (need > ws->out_cap) {
        size_t cap = ws->out_cap ? ws->out_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(ws->out, cap);
        if (p == NULL)
            return VB_ENOMEM;
        ws->out = p;
        ws->out_cap = cap;
    }
    uint8_t *o = ws->out;
    size_t h = 0;
    o[h++] = (uint8_t)(0x80 | op);
    uint8_t mbit = mask ? 0x80 : 0;
    if (len < 126) {
        o[h++] = (uint8_t)(mbit | len);
    } else if (len < 65536) {
        o[h++] = mbit | 126;
        o[h++] = (uint8_t)(len >> 8);
        o[h++] = (uint8_t)len;
    } else {
        o[h++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            o[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        uint8_t key[4];
        int r = ws_random(ws, key, 4);
        if (r < 0)
            return r;
        memcpy(o + h, key, 4);
        h += 4;
        const uint8_t *s = data;
        for (size_t i = 0; i < len; i++)
            o[h + i] = s[i] ^ key[i & 3];
    } else if (len > 0) {
        memcpy(o + h, data, len);
    }
    ws->depth++;
    int rc = ws_output(ws, o, h + len);
    if (rc == 0)
        ws->stats.msgs_out++;
    ws_leave(ws);
    return rc;
}

int vb_ws_send_text(vb_ws_t *ws, const char *data, size_t len)
{
    return ws_send_data(ws, WSLAY_TEXT_FRAME, data, len);
}

int vb_ws_send_binary(vb_ws_t *ws, const void *data, size_t len)
{
    return ws_send_data(ws, WSLAY_BINARY_FRAME, data, len);
}

int vb_ws_send_ping(vb_ws_t *ws, const void *data, size_t len)
{
    if (len > 125)
        return VB_EINVAL;
    if (ws->state != VB_WS_OPEN)
        return ws->state == VB_WS_CONNECTING ? VB_EAGAIN : VB_ECLOSED;
    struct wslay_event_msg m = {WSLAY_PING, data, len};
    int r = wslay_event_queue_msg(ws->ctx, &m);
    if (r != 0)
        return r == WSLAY_ERR_NOMEM ? VB_ENOMEM : VB_ECLOSED;
    ws->depth++;
    ws_leave(ws);
    return 0;
}

int vb_ws_close(vb_ws_t *ws, uint16_t code, const char *reason)
{
    if (!vb_ws_close_code_valid(code) || code == 1015)
        return VB_EINVAL;
    if (ws->state == VB_WS_CLOSED || wslay_event_get_close_sent(ws->ctx) ||
        ws->user_closed)
        return VB_ECLOSED;
    ws->depth++;
    if (ws->state == VB_WS_CONNECTING) {
        /* Nothing was agreed yet: just drop the connection. */
        ws->user_closed = true;
        ws_finish(ws, VB_ECANCELED);
        ws_leave(ws);
        return 0;
    }
    size_t rl = reason != NULL ? strlen(reason) : 0;
    if (rl > VB_WS_REASON_MAX)
        rl = VB_WS_REASON_MAX;
    int r = wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, rl);
    int rc = 0;
    if (r == 0) {
        ws->user_closed = true;
        if (!ws->close_seen && !ws->local_error)
            snprintf(ws->info.reason, sizeof ws->info.reason, "%.*s", (int)rl,
                     reason != NULL ? reason : "");
    } else {
        rc = r == WSLAY_ERR_NOMEM ? VB_ENOMEM : VB_ECLOSED;
    }
    ws_leave(ws);
    return rc;
}

vb_ws_state_t vb_ws_state(const vb_ws_t *ws)
{
    return ws->state;
}

int vb_ws_set_max_message(vb_ws_t *ws, size_t max)
{
    if (ws == NULL || max == 0 || max < ws->frag_len)
        return VB_EINVAL;
    ws->max_message = max;
    return 0;
}

size_t vb_ws_pending(const vb_ws_t *ws)
{
    size_t n = wslay_event_get_queued_msg_length(ws->ctx);
    if (ws->t != NULL)
        n += vb_transport_pending(ws->t);
    return n;
}

void vb_ws_set_max_pending_out(vb_ws_t *ws, size_t max_pending_out)
{
    ws->max_pending_out = max_pending_out;
}

bool vb_ws_out_stalled(const vb_ws_t *ws)
{
    return ws->out_stalled;
}

void vb_ws_get_stats(const vb_ws_t *ws, vb_ws_stats_t *out)
{
    *out = ws->stats;
}

/* ---- transport glue ---- */

static void ws_t_read(vb_transport_t *t, const uint8_t *data, size_t len,
                      void *ud);
static void ws_t_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                       void *ud);

static int ws_timer_init(vb_ws_t *ws)
{
    ws->timer = calloc(1, sizeof *ws->timer);
    if (ws->timer == NULL)
        return VB_ENOMEM;
    uv_timer_init(ws->loop, &ws->timer->h);
    ws->timer->h.data = ws->timer;
    ws->timer->ws = ws;
    return 0;
}

int vb_ws_attach(uv_loop_t *loop, vb_transport_t *t, const vb_ws_config_t *cfg,
                 const vb_ws_callbacks_t *cb, void *ud, const uint8_t *pre,
                 size_t pre_len, vb_ws_t **out)
{
    int rc;
    vb_ws_t *ws = NULL;
    if (out == NULL || loop == NULL || t == NULL || cb == NULL ||
        cb->on_output != NULL || cfg == NULL || cfg->role != VB_WS_SERVER) {
        rc = VB_EINVAL;
        goto fail;
    }
    rc = ws_new(cfg, cb, ud, &ws);
    if (rc < 0)
        goto fail;
    ws->loop = loop;
    rc = ws_timer_init(ws);
    if (rc < 0)
        goto fail;
    ws->t = t;
    vb_transport_set_handler(t, ws_t_read, ws_t_event, ws);
    *out = ws;
    if (pre != NULL && pre_len > 0) {
        ws->depth++;
        vb_ws_feed(ws, pre, pre_len);
        if (ws_leave(ws)) {
            *out = NULL;
            return VB_ECLOSED;
        }
    }
    return 0;
fail:
    vb_ws_destroy(ws);
    vb_transport_close(t);
    if (out != NULL)
        *out = NULL;
    return rc;
}

static void ws_hs_input(vb_ws_t *ws, const uint8_t *data, size_t len)
{
    size_t room = WS_HS_MAX - ws->hs_len;
    size_t k = len < room ? len : room;
    memcpy(ws->hs + ws->hs_len, data, k);
    ws->hs_len += k;
    size_t used = 0;
    int status = 0;
    int r = vb_ws_client_check_response(ws->hs, ws->hs_len, ws->key, &used,
                                        &status);
    if (r == VB_EAGAIN) {
        if (ws->hs_len == WS_HS_MAX) {
            ws->info.http_status = status;
            snprintf(ws->info.reason, sizeof ws->info.reason,
                     "handshake response too large");
            ws_finish(ws, VB_EMSGSIZE);
        }
        return;
    }
    ws->info.http_status = status;
    if (r < 0) {
        snprintf(ws->info.reason, sizeof ws->info.reason,
                 "handshake failed (HTTP status %d)", status);
        vb_log_debug(ws->log_id[0] ? ws->log_id : NULL, "ws handshake failed",
                     "status=%d err=%s", status, vb_err_name(r));
        ws_finish(ws, r);
        return;
    }
    ws->state = VB_WS_OPEN;
    ws_stop_timer(ws);
    /* Bytes past the head that were in the handshake buffer, then the
     * rest of this read, are WebSocket frames. */
    char *hs = ws->hs;
    size_t hs_len = ws->hs_len;
    ws->hs = NULL;
    if (ws->cb.on_open != NULL)
        ws->cb.on_open(ws, ws->ud);
    if (!ws->destroy_pending && ws->state == VB_WS_OPEN && hs_len > used)
        vb_ws_feed(ws, (const uint8_t *)hs + used, hs_len - used);
    free(hs);
    if (k < len && !ws->destroy_pending && ws->state == VB_WS_OPEN)
        vb_ws_feed(ws, data + k, len - k);
}

static void ws_t_read(vb_transport_t *t, const uint8_t *data, size_t len,
                      void *ud)
{
    (void)t;
    vb_ws_t *ws = ud;
    if (ws->state == VB_WS_CLOSED)
        return;
    ws->depth++;
    if (ws->state == VB_WS_CONNECTING)
        ws_hs_input(ws, data, len);
    else
        vb_ws_feed(ws, data, len);
    ws_leave(ws);
}

static void ws_t_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                       void *ud)
{
    (void)t;
    vb_ws_t *ws = ud;
    ws->depth++;
    switch (ev) {
    case VB_TRANSPORT_CONNECTED:
        break;
    case VB_TRANSPORT_EOF:
        if (ws->state == VB_WS_CONNECTING) {
            snprintf(ws->info.reason, sizeof ws->info.reason,
                     "connection closed during handshake");
            ws_finish(ws, VB_ECLOSED);
        } else {
            vb_ws_feed_eof(ws);
        }
        break;
    case VB_TRANSPORT_ERROR:
        ws->output_failed = true;
        ws_finish(ws, err < 0 ? err : VB_EIO);
        break;
    case VB_TRANSPORT_DRAINED:
        ws_resume_out(ws);
        if (ws->cb.on_drain != NULL && !ws->destroy_pending &&
            ws->state != VB_WS_CLOSED)
            ws->cb.on_drain(ws, ws->ud);
        break;
    }
    ws_leave(ws);
}

int vb_ws_connect(uv_loop_t *loop, vb_transport_t *t, const vb_ws_config_t *cfg,
                  const vb_ws_callbacks_t *cb, void *ud, const char *url,
                  const char *const *headers, vb_ws_t **out)
{
    int rc;
    vb_ws_t *ws = NULL;
    vb_ws_url_t *u = NULL;
    char *req = NULL;
    if (out != NULL)
        *out = NULL;
    if (out == NULL || loop == NULL || t == NULL || cb == NULL ||
        cb->on_output != NULL || cfg == NULL || cfg->role != VB_WS_CLIENT ||
        url == NULL) {
        rc = VB_EINVAL;
        goto fail;
    }
    u = malloc(sizeof *u);
    req = malloc(WS_HS_MAX);
    if (u == NULL || req == NULL) {
        rc = VB_ENOMEM;
        goto fail;
    }
    rc = vb_ws_url_parse(url, u);
    if (rc < 0)
        goto fail;
    rc = ws_new(cfg, cb, ud, &ws);
    if (rc < 0)
        goto fail;
    ws->loop = loop;
    ws->state = VB_WS_CONNECTING;
    rc = vb_ws_client_key(ws->key, sizeof ws->key);
    if (rc < 0)
        goto fail;
    size_t len;
    rc = vb_ws_client_request(u, ws->key, headers, req, WS_HS_MAX, &len);
    if (rc < 0)
        goto fail;
    ws->hs = malloc(WS_HS_MAX);
    if (ws->hs == NULL) {
        rc = VB_ENOMEM;
        goto fail;
    }
    rc = ws_timer_init(ws);
    if (rc < 0)
        goto fail;
    rc = vb_transport_write(t, req, len);
    if (rc < 0)
        goto fail;
    ws->t = t;
    vb_transport_set_handler(t, ws_t_read, ws_t_event, ws);
    ws_start_timer(ws, ws->handshake_timeout_ms);
    free(u);
    free(req);
    *out = ws;
    return 0;
fail:
    free(u);
    free(req);
    vb_ws_destroy(ws);
    vb_transport_close(t);
    return rc;
}

int vb_ws_read_pause(vb_ws_t *ws, bool pause)
{
    if (ws->t == NULL)
        return VB_EINVAL;
    ws->user_paused = pause;
    if (ws->state == VB_WS_CLOSED)
        return 0;
    if (pause)
        return vb_transport_read_stop(ws->t);
    return ws->out_stalled ? 0 : vb_transport_read_start(ws->t);
}

/* ---- handshake helpers ---- */

int vb_ws_url_parse(const char *url, vb_ws_url_t *out)
{
    if (url == NULL || out == NULL)
        return VB_EINVAL;
    memset(out, 0, sizeof *out);
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '#')
            return VB_EINVAL;
    const char *p;
    if (strncasecmp(url, "ws://", 5) == 0) {
        p = url + 5;
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        p = url + 6;
        out->secure = true;
    } else {
        return VB_EINVAL;
    }
    size_t alen = strcspn(p, "/?");
    const char *auth_end = p + alen;
    if (memchr(p, '@', alen) != NULL)
        return VB_EINVAL;
    const char *hs = p, *he, *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', alen);
        if (rb == NULL)
            return VB_EINVAL;
        hs = p + 1;
        he = rb;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return VB_EINVAL;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        he = colon != NULL ? colon : auth_end;
        if (colon != NULL)
            port = colon + 1;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0)
        return VB_EINVAL;
    if (hl >= sizeof out->host)
        return VB_EMSGSIZE;
    memcpy(out->host, hs, hl);
    out->host[hl] = '\0';
    out->port = out->secure ? 443 : 80;
    if (port != NULL) {
        if (port == auth_end)
            return VB_EINVAL;
        unsigned long v = 0;
        for (const char *c = port; c < auth_end; c++) {
            if (*c < '0' || *c > '9')
                return VB_EINVAL;
            v = v * 10 + (unsigned long)(*c - '0');
            if (v > 65535)
                return VB_EINVAL;
        }
        if (v == 0)
            return VB_EINVAL;
        out->port = (uint16_t)v;
        out->port_explicit = true;
    }
    const char *tg = auth_end;
    size_t tl = strlen(tg);
    size_t pre = (*tg == '/') ? 0 : 1;
    if (tl + pre >= sizeof out->target)
        return VB_EMSGSIZE;
    if (pre)
        out->target[0] = '/';
    memcpy(out->target + pre, tg, tl + 1);
    return 0;
}

int vb_ws_url_parse_http(const char *url, vb_ws_url_t *out)
{
    if (url == NULL || out == NULL)
        return VB_EINVAL;
    const char *scheme, *rest;
    if (strncmp(url, "https://", 8) == 0) {
        scheme = "wss://";
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        scheme = "ws://";
        rest = url + 7;
    } else {
        return VB_EINVAL;
    }
    char tmp[2400];
    if (snprintf(tmp, sizeof tmp, "%s%s", scheme, rest) >= (int)sizeof tmp)
        return VB_EMSGSIZE;
    return vb_ws_url_parse(tmp, out);
}

int vb_ws_accept_key(const char *client_key, char *out, size_t cap)
{
    if (client_key == NULL || out == NULL || cap < VB_WS_ACCEPT_LEN + 1)
        return VB_EINVAL;
    size_t kl = strlen(client_key);
    if (kl != VB_WS_KEY_LEN)
        return VB_EINVAL;
    unsigned char raw[32];
    size_t rawlen = 0;
    if (mbedtls_base64_decode(raw, sizeof raw, &rawlen,
                              (const unsigned char *)client_key, kl) != 0 ||
        rawlen != 16)
        return VB_EINVAL;
    unsigned char buf[VB_WS_KEY_LEN + sizeof WS_GUID];
    memcpy(buf, client_key, kl);
    memcpy(buf + kl, WS_GUID, sizeof WS_GUID - 1);
    unsigned char dig[20];
    int r = mbedtls_sha1_ret(buf, kl + sizeof WS_GUID - 1, dig);
    if (r != 0) {
        vb_log_error(NULL, "sha1 failed", "mbedtls=%d", r);
        return VB_EIO;
    }
    size_t ol = 0;
    if (mbedtls_base64_encode((unsigned char *)out, cap, &ol, dig, 20) != 0)
        return VB_EINVAL;
    out[ol] = '\0';
    return 0;
}

int vb_ws_client_key(char *out, size_t cap)
{
    unsigned char raw[16];
    size_t got = 0;
    if (out == NULL || cap < VB_WS_KEY_LEN + 1)
        return VB_EINVAL;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0)
            return VB_ESYS;
        got += (size_t)r;
    }
    size_t ol = 0;
    if (mbedtls_base64_encode((unsigned char *)out, cap, &ol, raw,
                              sizeof raw) != 0)
        return VB_EINVAL;
    out[ol] = '\0';
    return 0;
}

/* Appends formatted text; returns false when it does not fit. */
static bool ws_appendf(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool ws_appendf(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, cap - *pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *pos)
        return false;
    *pos += (size_t)n;
    return true;
}

int vb_ws_client_request(const vb_ws_url_t *url, const char *key,
                         const char *const *headers, char *buf, size_t cap,
                         size_t *len)
{
    if (url == NULL || key == NULL || buf == NULL || cap == 0)
        return VB_EINVAL;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        const char *h = headers[i];
        const char *colon = strchr(h, ':');
        if (colon == NULL || colon == h || strpbrk(h, "\r\n") != NULL)
            return VB_EINVAL;
    }
    size_t pos = 0;
    bool v6 = strchr(url->host, ':') != NULL;
    bool def = url->port == (url->secure ? 443 : 80);
    bool ok = ws_appendf(buf, cap, &pos, "GET %s HTTP/1.1\r\nHost: %s%s%s",
                         url->target, v6 ? "[" : "", url->host, v6 ? "]" : "");
    if (ok && !def)
        ok = ws_appendf(buf, cap, &pos, ":%u", (unsigned)url->port);
    if (ok)
        ok = ws_appendf(buf, cap, &pos,
                        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n",
                        key);
    for (size_t i = 0; ok && headers != NULL && headers[i] != NULL; i++)
        ok = ws_appendf(buf, cap, &pos, "%s\r\n", headers[i]);
    if (ok)
        ok = ws_appendf(buf, cap, &pos, "\r\n");
    if (!ok)
        return VB_ENOSPC;
    if (len != NULL)
        *len = pos;
    return 0;
}

/* What llhttp reports of a handshake response, header by header
 * (vb_ws_client_check_response). A header's name and value are collected
 * whole (llhttp may hand them over in pieces) and judged when the value
 * ends; values longer than `value` matter only for the headers we check. */
typedef struct ws_resp {
    const char *want; /* the Sec-WebSocket-Accept we expect */
    char name[32];
    size_t name_len;
    char value[256];
    size_t value_len;
    bool name_long, value_long;
    int status;
    bool up, conn, acc, bad, head_done;
    int accepts;
} ws_resp_t;

static int ws_resp_append(char *dst, size_t cap, size_t *len, bool *too_long,
                          const char *at, size_t n)
{
    if (*len + n >= cap) {
        *too_long = true;
        return 0;
    }
    memcpy(dst + *len, at, n);
    *len += n;
    return 0;
}

static int ws_resp_on_field(llhttp_t *p, const char *at, size_t n)
{
    ws_resp_t *r = p->data;
    return ws_resp_append(r->name, sizeof r->name, &r->name_len, &r->name_long,
                          at, n);
}

static int ws_resp_on_value(llhttp_t *p, const char *at, size_t n)
{
    ws_resp_t *r = p->data;
    return ws_resp_append(r->value, sizeof r->value, &r->value_len,
                          &r->value_long, at, n);
}

static int ws_resp_on_status_complete(llhttp_t *p)
{
    ws_resp_t *r = p->data;
    r->status = p->status_code;
    /* The opening handshake is HTTP/1.1 (RFC 6455 §4.1). */
    return p->http_major == 1 && p->http_minor == 1 ? 0 : -1;
}

static bool ws_resp_is(const ws_resp_t *r, const char *name)
{
    return !r->name_long && r->name_len == strlen(name) &&
           strncasecmp(r->name, name, r->name_len) == 0;
}

/* Repeated Upgrade or Connection headers combine into one list (RFC 9110
 * §5.3), so a token in any of them counts; a second Sec-WebSocket-Accept
 * is ambiguous and fails the handshake. */
static int ws_resp_on_value_complete(llhttp_t *p)
{
    ws_resp_t *r = p->data;
    r->value[r->value_len] = '\0';
    bool up = ws_resp_is(r, "Upgrade"), conn = ws_resp_is(r, "Connection");
    bool acc = ws_resp_is(r, "Sec-WebSocket-Accept");
    if ((up || conn || acc) && r->value_long) {
        r->bad = true;
    } else if (up) {
        r->up |= vb_http_has_token(r->value, "websocket");
    } else if (conn) {
        r->conn |= vb_http_has_token(r->value, "upgrade");
    } else if (acc) {
        r->accepts++;
        r->acc = r->value_len == VB_WS_ACCEPT_LEN &&
                 memcmp(r->value, r->want, VB_WS_ACCEPT_LEN) == 0;
    } else if (ws_resp_is(r, "Sec-WebSocket-Extensions") ||
               ws_resp_is(r, "Sec-WebSocket-Protocol")) {
        r->bad = true; /* we asked for neither */
    }
    r->name_len = r->value_len = 0;
    r->name_long = r->value_long = false;
    return 0;
}

/* The head is all we read: llhttp stops right after it, whatever the
 * status, and the bytes that follow are WebSocket frames. */
static int ws_resp_on_headers_complete(llhttp_t *p)
{
    ws_resp_t *r = p->data;
    r->head_done = true;
    return 2;
}

static const llhttp_settings_t ws_resp_settings = {
    .on_header_field = ws_resp_on_field,
    .on_header_value = ws_resp_on_value,
    .on_status_complete = ws_resp_on_status_complete,
    .on_header_value_complete = ws_resp_on_value_complete,
    .on_headers_complete = ws_resp_on_headers_complete,
};

int vb_ws_client_check_response(const char *buf, size_t len, const char *key,
                                size_t *consumed, int *http_status)
{
    if (http_status != NULL)
        *http_status = 0;
    if (buf == NULL || key == NULL)
        return VB_EINVAL;
    ws_resp_t r = {0};
    char want[VB_WS_ACCEPT_LEN + 1];
    if (vb_ws_accept_key(key, want, sizeof want) < 0)
        return VB_EINVAL;
    r.want = want;
    /* The call is stateless: the bytes received so far are parsed afresh
     * each time (a head is at most WS_HS_MAX bytes, and usually arrives
     * in one read). */
    size_t scan = len < WS_HS_MAX ? len : WS_HS_MAX;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &ws_resp_settings);
    parser.data = &r;
    llhttp_errno_t e = llhttp_execute(&parser, buf, scan);
    /* The status is reported as soon as the status line is complete, so
     * a failure can name it even if the head never finishes. */
    if (http_status != NULL)
        *http_status = r.status;
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE)
        return VB_EPROTO;
    if (!r.head_done)
        return len >= WS_HS_MAX ? VB_EMSGSIZE : VB_EAGAIN;
    if (r.status == 401 || r.status == 403)
        return VB_EAUTH;
    if (r.status != 101 || r.bad || !r.up || !r.conn || !r.acc ||
        r.accepts != 1)
        return VB_EPROTO;
    if (consumed != NULL)
        *consumed = (size_t)(llhttp_get_error_pos(&parser) - buf);
    return 0;
}
