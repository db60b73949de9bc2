/* SPDX-License-Identifier: MIT */
/*
 * The lane's twilio-io thread (ARCHITECTURE.md §1-2): Twilio Media Streams
 * connections, one libuv loop, three rings.
 *
 *   conn      ingress --CONN--> [twilio-io]   an upgraded socket to adopt
 *                                             (payload vb_msg_conn_t)
 *   inbound   [twilio-io] --in--> dsp         CALL_OPEN, AUDIO (μ-law 8 kHz
 *                                             as received), DTMF, MARK
 *                                             (echo), CALL_CLOSE
 *   outbound  dsp --out--> [twilio-io]        AUDIO (μ-law) -> `media`,
 *                                             MARK / TURN_END -> `mark`,
 *                                             CLEAR -> `clear`, HANGUP and
 *                                             CALL_CLOSE -> close 1000
 *
 * DESIGN. Per connection: CONNECTED (waiting for `connected`/`start`) ->
 * STREAMING (after a valid `start` with a valid stream token; CALL_OPEN
 * has gone downstream) -> ENDED (after `stop`, hang-up, a fatal error or
 * the socket closing; CALL_CLOSE has gone downstream if CALL_OPEN did).
 * An adopted connection is unauthenticated: it lives in the lane's small
 * pre-auth pool (bounded per lane and per peer, bounded input, a short
 * `start` deadline) with a connection object and an 8 KiB JSON buffer, and
 * nothing else. Only a `start` whose stream token verifies — for a CallSid
 * with no other stream open or recently ended on this lane — takes a call
 * slot (so the call id, slot + generation, exists from then on) and the
 * per-call buffers (JSON scratch, decoded audio, outgoing JSON, output
 * batch, mark FIFO), so the
 * media path allocates nothing. The stage is a core/stage.h stage: when
 * the inbound channel is full, messages already read are parked in the
 * channel's spill (core/chan.h), vb_ring_full_total{ring="twilio_to_dsp"}
 * counts it, and the channel's pressure hook stops reading every socket
 * until it drains: TCP pushes back and nothing is dropped. Mark echoes are
 * handled here and not sent down the lane (nobody there needs them). Outbound
 * audio is cut into `media` messages of media_batch 160-byte frames; a partial
 * batch is flushed when the outbound ring runs dry or before a mark, clear or
 * close.
 *
 * Malformed input is counted in vb_twilio_protocol_errors_total{reason}
 * and logged (rate-limited) with the call; the message is dropped and the
 * call goes on. Fatal cases close the connection: a bad or missing stream
 * token, a token already used by a stream of the same call, a lane with no
 * free call slot (1008 / 1013, vb_twilio_stream_rejected_total{reason}), a
 * malformed `start` or unsupported media format (1008), no `start` within
 * start_timeout_ms (1008), eviction from a full pre-auth pool (1013), no
 * message for media_timeout_ms (1008), media past the rate limit (1008),
 * more than max_errors protocol errors (1008),
 * WebSocket framing errors (1002), invalid UTF-8 (1007), a message over
 * max_message (1009).
 */
#ifndef VB_NET_TWILIO_STREAM_H
#define VB_NET_TWILIO_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/chan.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "net/tls.h"
#include "net/twilio_sig.h"

/* The CALL_OPEN payload this stage sends is vb_msg_open_t (core/msg.h). */

/* Limits of a stream before its `start` has verified (see the config). */
#define VB_TWILIO_PREAUTH_MAX_MESSAGE (8u * 1024u)
#define VB_TWILIO_PREAUTH_MAX_BYTES   (32u * 1024u)
/* Silence synthesised for one gap in the caller's media, at most: enough
 * for the model's turn detection to end the turn. */
#define VB_TWILIO_GAP_FILL_MAX_MS 2000u
#define VB_TWILIO_PREAUTH_MAX_OUT (16u * 1024u) /* unsent bytes */

/* Inbound rate limit: media faster than VB_TWILIO_RATE_X times real time
 * (8000 μ-law bytes/s), beyond a burst of VB_TWILIO_RATE_BURST_MS of
 * audio, is dropped before it reaches dsp (counted); a call whose dropped
 * excess passes VB_TWILIO_RATE_CLOSE_MS of audio is closed (1008). */
#define VB_TWILIO_RATE_X        2
#define VB_TWILIO_RATE_BURST_MS 10000
#define VB_TWILIO_RATE_CLOSE_MS 5000

/* Payload of CALL_CLOSE on the inbound ring: a short reason ("stop",
 * "hangup", "disconnect", "error") as text, not NUL-terminated. */

typedef struct vb_twilio_stream_config {
    int lane; /* this lane's number; tokens must name it */
    /* Lanes of this process, or 0. When set, a token naming lane L >=
     * nlanes (issued by an instance with more lanes) is accepted on lane
     * L % nlanes, where the ingress routes such a stream. */
    uint32_t nlanes;
    uint32_t max_calls;        /* connections at once; call slots < max_calls */
    size_t max_message;        /* WebSocket message limit; 0 = 64 KiB */
    uint32_t media_batch;      /* 20 ms frames per `media` message, 1..50 */
    uint32_t start_timeout_ms; /* `start` deadline after adoption; 0 = 3000 */
    /* Unauthenticated streams (adopted, no valid `start` yet) live in a
     * pool of their own, apart from the call slots: at most max_preauth
     * per lane (0 = 64) and max_preauth_per_peer from one peer address
     * (0 = 16). A new one beyond either bound evicts the oldest of that
     * peer, else of the pool (1013). Before `start` a connection may send
     * at most VB_TWILIO_PREAUTH_MAX_BYTES in messages of at most
     * VB_TWILIO_PREAUTH_MAX_MESSAGE each (1008 / 1009 beyond). */
    uint32_t max_preauth;
    uint32_t max_preauth_per_peer;
    /* A streaming call that receives nothing for media_timeout_ms is
     * closed (1008 "no media"); 0 = 10000. Twilio sends a `media` message
     * every 20 ms for the whole call. */
    uint32_t media_timeout_ms;
    /* Silence toward the model where Twilio's media has a gap (a leg that
     * suppresses silence), so the model's turn detection still ends the
     * turn: a jump in `media.timestamp` is filled with μ-law silence when
     * the next media arrives, and a call with no media for
     * media_gap_fill_ms gets silence in real time meanwhile (0: only the
     * timestamp fill). At most VB_TWILIO_GAP_FILL_MAX_MS a gap. */
    uint32_t media_gap_fill_ms;
    /* Calls are hung up (as by end_call) after this many seconds; 0 = no
     * limit. */
    uint32_t max_call_s;
    /* A stream token opens one stream: the CallSid of an ended call is
     * remembered this long (the token lifetime) and a second stream for
     * it refused; 0 = 300. */
    uint32_t token_ttl_s;
    uint32_t max_errors; /* protocol errors tolerated per call; 0 = 100 */
    size_t max_pending;  /* outbound bytes queued per socket before audio is
                            dropped (counted); 0 = 1 MiB */
    /* Stream-token key and clock (Unix seconds; NULL = time(NULL)). */
    const vb_twilio_sig_key_t *token_key;
    int64_t (*now_s)(void);
    vb_chan_t *conn_in;      /* consumed: CONN messages */
    vb_chan_t *in_to_dsp;    /* produced (data_max >= sizeof open) */
    vb_chan_t *out_from_dsp; /* consumed */
    vb_metrics_t *metrics;
    /* Optional: told on the stage thread when a call opens (+1) and ends
     * (-1), e.g. vb_ingress_calls_add() for lane choice and /readyz. */
    void (*calls_changed)(void *ud, int lane, int delta);
    void *calls_ud;
    /* Optional: told on the stage thread when an opened call ends, before
     * its stream is closed, whether the end was intended (the model's
     * end_call, or a transfer): vb_ingress_call_ended() answers Twilio's
     * <Connect action> request from it. Same `calls_ud`. */
    void (*call_ended)(void *ud, const char *call_sid, bool intended);
    /* Hang-up (HANGUP from the model's end_call tool): the stage sends a
     * mark after the goodbye audio and, once Twilio echoes it (or
     * hangup_grace_ms after the audio should have finished), ends the call
     * through Twilio's REST API when rest_auth_token is set (account SID:
     * rest_account_sid, or the stream's own), else by closing the stream
     * (1000) so the TwiML after <Connect> runs. rest_tls is required for an
     * https:// rest_api_url. All optional; strings borrowed. */
    const char *rest_api_url;
    const char *rest_account_sid;
    const char *rest_auth_token;
    /* An API key (SK...) and its secret instead of the auth token: the
     * key is the Basic auth user, the secret the password (optional). */
    const char *rest_api_key;
    const char *rest_api_secret;
    vb_tls_config_t *rest_tls;
    uint32_t hangup_grace_ms; /* 0 = 3000 */
    /* Optional: the recorder's channel (dsp/recorder.h says what goes on
     * it). Caller audio as admitted, model audio as sent with when it
     * plays, clears and the call's open and close are copied there; audio
     * only while more than `record_reserve` slots are free, else dropped
     * and counted in vb_recording_dropped_frames_total: the call's audio
     * never waits for the recorder. Produced here (data_max >= 192). */
    vb_chan_t *record;
    uint32_t record_reserve;
} vb_twilio_stream_config_t;

typedef struct vb_twilio_stream vb_twilio_stream_t;

/* Per-call counters, logged when a call ends and kept for the last ended
 * call (vb_twilio_stream_last_stats, for tests and the bench). */
typedef struct vb_twilio_call_stats {
    uint64_t frames_in, bytes_in;         /* media messages / μ-law bytes */
    uint64_t seq_gaps, chunk_gaps;        /* sequenceNumber / chunk jumps */
    uint64_t frames_out, bytes_out;       /* media messages / bytes sent */
    uint64_t marks_sent, marks_echoed;    /* all echoes ... */
    uint64_t marks_cleared;               /* ... of which caused by clear */
    uint64_t clears, dtmf;                /* clears sent, digits received */
    uint64_t bytes_played, bytes_cleared; /* estimated from 8000 B/s */
    uint64_t protocol_errors;
    uint64_t unknown_events; /* events not understood (skipped) */
    uint64_t out_dropped;    /* outbound audio bytes dropped (peer too slow) */
} vb_twilio_call_stats_t;

/* Creates the stage: loop, call table, metrics series, attached to its
 * channels. Does not start the thread. Channels, key and metrics are
 * borrowed and must outlive the stage. Errors: VB_EINVAL (missing
 * channel/key/metrics, bad limits, a data_max too small), VB_ENOMEM,
 * VB_ENOSPC (metrics registry full), VB_ESYS. Main thread. */
int vb_twilio_stream_create(vb_twilio_stream_t **out,
                            const vb_twilio_stream_config_t *cfg);

/* Starts the thread. Returns 0, VB_EBUSY (already started), VB_ESYS. Main
 * thread. */
int vb_twilio_stream_start(vb_twilio_stream_t *s);

/* Stops the loop and joins the thread. Open connections are closed
 * (1001 "going away") and their calls get CALL_CLOSE if the inbound ring
 * has room. Main thread; safe if never started. */
void vb_twilio_stream_stop(vb_twilio_stream_t *s);

/* Frees the stage; accepts NULL. After stop. */
void vb_twilio_stream_destroy(vb_twilio_stream_t *s);

/* Stats of the most recently ended call and the number of calls ended so
 * far. Any thread (a copy under a lock that only call ends take). */
uint64_t vb_twilio_stream_last_stats(vb_twilio_stream_t *s,
                                     vb_twilio_call_stats_t *out);

/* Hands a socket to a stage the way the ingress does (net/ingress.h): pushes
 * a VB_MSG_CONN message (vb_msg_conn_t) with `fd` and a copy of the
 * bytes already read past the upgrade request (`pre`) onto `conn` (which
 * rings the stage). The socket must already have had its 101 response
 * written. On success the stage owns `fd`. Returns 0, VB_ENOSPC (no room in
 * the channel: the caller still owns fd), VB_ENOMEM, VB_EINVAL (NULL conn,
 * negative fd, NULL pre with pre_len). Only the conn channel's
 * producer thread; for tests and tools (the ingress has its own). */
int vb_twilio_stream_handoff(vb_chan_t *conn, int fd, const uint8_t *pre,
                             size_t pre_len);

/* Registers the stage's metric series in `m` (done by create; exposed so
 * that a test can look ids up). Stores the id of
 * vb_twilio_protocol_errors_total{reason} in *id. Returns what
 * vb_metrics_add() returns: 0, VB_EINVAL, VB_ENOSPC or VB_ENOMEM. */
int vb_twilio_stream_error_metric(vb_metrics_t *m, const char *reason,
                                  vb_metric_t *id);

/* All reasons vb_twilio_protocol_errors_total uses, NULL-terminated. */
extern const char *const vb_twilio_error_reasons[];

#endif
