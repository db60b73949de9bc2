/* SPDX-License-Identifier: MIT */
/*
 * The one message type every ring carries (ARCHITECTURE.md §2): audio frames
 * and control events, each with the call it belongs to, a per-call sequence
 * number and the timestamps latency accounting needs. A message fills one
 * ring slot; producers write it in place with vb_ring_reserve().
 */
#ifndef VB_CORE_MSG_H
#define VB_CORE_MSG_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/ring.h"

/* Largest payload: 20 ms of 24 kHz PCM16 is 960 bytes; Gemini chunks larger
 * than this are split by the gemini stage. */
#define VB_MSG_DATA_MAX 1024

#define VB_MSG_KIND_MAP(X)                                                  \
    X(CALL_OPEN)  /* a call starts on this lane; payload: stage-specific */ \
    X(CALL_CLOSE) /* the call ends; each stage frees its slice */           \
    X(AUDIO)      /* audio samples; format depends on the ring */           \
    X(CLEAR)      /* barge-in: drop pending outbound audio */               \
    X(MARK)       /* playout marker (sent, or echoed by Twilio) */          \
    X(DTMF)       /* a key pressed by the caller */                         \
    X(TURN_END)   /* the model finished a turn: flush partial frames */     \
    X(HANGUP)     /* end the call (tool or error) */                        \
    X(TEXT)       /* transcript or tool text (UTF-8) */                     \
    X(CONN)       /* ingress hands a socket to twilio-io */                 \
    X(PREPARE)    /* ingress asks gemini to pre-connect for a call */

/* vb_msg_t.flags of HANGUP: the model cannot be reached; data[] holds the
 * text the caller should hear before the call ends (UTF-8, may be empty).
 * Without it data[] is a reason for the log. */
#define VB_MSG_HANGUP_FALLBACK 1u
/* vb_msg_t.flags of HANGUP: the model transfers the call; data[] holds the
 * target (E.164 number or sip: URI) the call is redirected to with <Dial>
 * once the audio before it has played. */
#define VB_MSG_HANGUP_TRANSFER 2u
/* vb_msg_t.flags of HANGUP: the call's time limit (its assistant's
 * max_call_s) ends it: vb_calls_total and the report say "timeout". */
#define VB_MSG_HANGUP_TIMEOUT 4u

/* vb_msg_t.flags of PREPARE: the call ended before its stream came (its
 * status callback said so): drop its pre-connected session now. `ctx` is
 * NULL. */
#define VB_MSG_PREPARE_CANCEL 1u

/* vb_msg_t.flags of AUDIO on the channel to the recorder (dsp/recorder.h):
 * whose audio it is. */
#define VB_MSG_REC_CALLER 1u /* the caller's, as Twilio sent it */
#define VB_MSG_REC_MODEL  2u /* the model's, as sent to Twilio */

typedef enum vb_msg_kind {
#define VB__MSG_KIND(name) VB_MSG_##name,
    VB_MSG_KIND_MAP(VB__MSG_KIND)
#undef VB__MSG_KIND
        VB_MSG_KIND_COUNT
} vb_msg_kind_t;

/* Call id: a slot index in the lane's call table plus a generation bumped on
 * every reuse of the slot, so a late message for an ended call is recognised
 * (generation mismatch) and dropped. */
typedef struct vb_call_id {
    uint32_t slot;
    uint32_t gen;
} vb_call_id_t;

typedef struct vb_msg {
    uint8_t kind;       /* vb_msg_kind_t */
    uint8_t flags;      /* kind-specific */
    uint16_t len;       /* bytes used in data[] */
    uint32_t seq;       /* per call and direction */
    vb_call_id_t call;  /* which call */
    uint64_t t_origin;  /* ns (core/clock.h): first byte reached the process */
    uint64_t t_enqueue; /* ns: pushed onto the current ring */
    uint8_t data[VB_MSG_DATA_MAX];
} vb_msg_t;

static inline int vb_call_id_eq(vb_call_id_t a, vb_call_id_t b)
{
    return a.slot == b.slot && a.gen == b.gen;
}

/* ---- payloads, beside the message type so no consumer includes its
 * producer ---- */

/* CALL_OPEN (twilio-io -> dsp -> gemini): the call's identifiers. `from`
 * and `to` are the stream's From/To parameters (the webhook's caller and
 * called number), cut to fit; "" when absent. The whole struct fits the
 * twilio_to_dsp slot (VB_LANE_TW_TO_DSP_DATA). */
typedef struct vb_msg_open {
    char call_sid[64];    /* CA..., NUL-terminated */
    char stream_sid[64];  /* MZ... */
    char account_sid[64]; /* AC... */
    /* The assistant the webhook chose, from the stream's `<Parameter>`s
     * when their MAC verified (core/assistant.h); "" when none. */
    char assistant[64];
    char from[32]; /* +14155550100, NUL-terminated */
    char to[32];
    /* `assistant` names the one an --assistant-url answer was built on
     * (the mark under the same MAC): an instance that did not answer the
     * webhook asks that URL again. */
    bool assistant_from_url;
    char direction[31]; /* the webhook's Direction ("" unknown) */
} vb_msg_open_t;

/* CALL_CLOSE (twilio-io -> dsp -> gemini): why the call ended and what
 * twilio-io measured, for the post-call report. `reason` comes first so a
 * consumer that reads data[] as the reason string still can. */
#define VB_MSG_CLOSE_NONE UINT32_MAX /* a latency that was never measured */
typedef struct vb_msg_close {
    char reason[16];          /* a vb_calls_total outcome: "stop", ... */
    int64_t started_unix_ms;  /* wall clock at the stream's `start` */
    uint64_t duration_ms;     /* `start` to the end of the stream */
    uint32_t first_audio_ms;  /* `start` to the first model audio sent */
    uint32_t response_p50_ms; /* caller's speech end -> model audio */
    uint32_t response_p95_ms; /* (over the call's latest responses) */
    uint32_t responses;       /* how many were measured */
} vb_msg_close_t;

#define VB_MSG_CONN_SIGNED 1u /* CONN: X-Twilio-Signature verified */

/* CONN (ingress -> twilio-io): a handed-off socket. Copy it out with
 * vb_msg_conn_get(); the consumer owns `fd` and `extra`. */
typedef struct vb_msg_conn {
    int32_t fd;         /* connected socket, non-blocking, close-on-exec */
    uint32_t lane;      /* the lane it was routed to */
    uint32_t flags;     /* VB_MSG_CONN_* */
    uint32_t extra_len; /* bytes in `extra` */
    char *extra;        /* malloc'd bytes received after the upgrade
                         * request (the start of the WebSocket stream), or
                         * NULL; the consumer frees it */
    char peer[64];      /* client address for logs (X-Forwarded-For when
                         * --trust-proxy) */
} vb_msg_conn_t;

struct vb_call_ctx; /* core/assistant.h */

/* PREPARE (ingress -> gemini): a call was answered on `lane`. */
typedef struct vb_msg_prepare {
    char call_sid[64]; /* NUL-terminated */
    uint32_t lane;
    int64_t expiry_s; /* the stream token's expiry (Unix seconds) */
    /* The call's context (assistant, identifiers), or NULL: the stage's
     * default assistant. The consumer owns it and frees it with
     * vb_call_ctx_destroy(); a producer whose push fails frees it. */
    struct vb_call_ctx *ctx;
} vb_msg_prepare_t;

/* Copies the payload of a CONN / PREPARE message. Returns 0, or VB_EINVAL
 * if `m` is not of that kind or size. Any thread. */
int vb_msg_conn_get(const vb_msg_t *m, vb_msg_conn_t *out);
int vb_msg_prepare_get(const vb_msg_t *m, vb_msg_prepare_t *out);

/* Copies the payload of a CALL_CLOSE: a full vb_msg_close_t, or a shorter
 * payload taken as the reason alone (the rest zero, latencies NONE).
 * Returns 0, or VB_EINVAL if `m` is not a CALL_CLOSE. Any thread. */
int vb_msg_close_get(const vb_msg_t *m, vb_msg_close_t *out);

/* Closes the fd and frees `extra` of a connection the consumer does not
 * keep; accepts NULL. */
void vb_msg_conn_release(vb_msg_conn_t *c);

/* Name of a kind ("AUDIO"), or "?" if out of range. Static; any thread. */
const char *vb_msg_kind_name(int kind);

/* Creates a ring whose slots hold one vb_msg_t each. See vb_ring_init(). */
static inline int vb_msg_ring_init(vb_ring_t *r, uint32_t capacity)
{
    return vb_ring_init(r, capacity, (uint32_t)sizeof(vb_msg_t));
}

#endif
