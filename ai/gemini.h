/* SPDX-License-Identifier: MIT */
/*
 * The lane's gemini thread (ARCHITECTURE.md §1, §4): one libuv loop owning
 * every Gemini Live connection of the lane's calls.
 *
 *   prepare   ingress --PREPARE--> [gemini]   pre-connect for a CallSid
 *   inbound   dsp --in--> [gemini]             CALL_OPEN (vb_msg_open_t),
 *                                              AUDIO (PCM16 16 kHz), DTMF,
 *                                              CALL_CLOSE; MARK ignored
 *   outbound  [gemini] --out--> dsp            AUDIO (PCM16 24 kHz, <= 1 KiB
 *                                              per message), CLEAR,
 *                                              TURN_END, TEXT, HANGUP
 *
 * DESIGN. A call is a slice of state on this thread: its CallSid, the
 * active connection, at most one connection being set up to replace it,
 * the latest resumption handle, and a bounded buffer of caller audio. A
 * connection goes CONNECTING (TCP, TLS, WebSocket handshake; the setup
 * message goes out on open) -> SETUP (nothing else is sent until
 * setupComplete) -> READY -> gone. Calls are created by PREPARE (the
 * webhook: the session is set up while Twilio opens the stream) and
 * matched to the stream's CALL_OPEN by CallSid; a CALL_OPEN without a
 * prepared session opens a fresh one. Caller audio goes straight out as
 * realtimeInput while the active connection is READY; otherwise (before
 * setupComplete, during a goAway switch, while reconnecting) it waits in
 * the call's buffer, which drops its oldest audio when full (counted) and
 * is flushed in order as soon as a connection is READY, so nothing is lost
 * or sent twice across a switch.
 *
 * goAway: a second connection is opened with the latest resumable handle
 * and caller audio is held back from the old one; the old connection keeps
 * delivering model audio until the new one is READY, then the buffer is
 * flushed to the new one and the old one closed (1000). An unexpected
 * close or a failed connect is retried with the handle, with exponential
 * backoff, a bounded number of times; then the call is ended politely
 * (HANGUP with VB_MSG_HANGUP_FALLBACK and the fallback text, so twilio-io
 * has the caller told; a log line and vb_calls_failed_total{reason} say
 * why). The budget (reconnect_max) comes back only once a connection has
 * been READY for healthy_ms, so a service that dies after every
 * setupComplete ends the call after reconnect_max + 1 connections. An
 * open call that has had no READY connection for recover_timeout_ms
 * (counted from the last sign of life of the connection it lost) is ended
 * the same way, whatever attempts remain.
 *
 * Liveness: every open connection is pinged every ping_interval_ms. A ping
 * unanswered for pong_timeout_ms (the service stopped reading, stopped
 * writing, or the path is half-open), a send backlog
 * (vb_ws_pending) above VB_GEMINI_BACKLOG_STALL_BYTES for as long, or
 * VB_GEMINI_BAD_MSG_MAX unusable messages in a row mark the connection
 * lost: it is dropped and replaced with the resumption handle like a 1011
 * close. While a ping has been unanswered for VB_GEMINI_HOLD_MS caller
 * audio is held in the call's buffer rather than written to a connection
 * that may be dead; the pong flushes it, a replacement gets it. The checks
 * pause while the stage has stopped reading (outbound ring full). Close codes
 * are explained in the log: 1007 (bad API key or argument: not retried), 1008
 * with an unknown model (names --gemini-model: not retried), 1011 (server
 * error: retried).
 *
 * Model output: audio parts become AUDIO messages of at most the outbound
 * channel's data_max (20 ms); `interrupted` becomes CLEAR at once (model
 * audio still parked for ring room is dropped first); turnComplete becomes
 * TURN_END; transcripts stay here (one log line per utterance, the
 * transcript file): nothing downstream reads them. The built-in end_call
 * tool is answered, then HANGUP follows the next turnComplete (or a grace
 * period). The assistant's HTTP tools and transfer_call run in ai/tools.h
 * (one toolResponse per toolCall message; transfer is a HANGUP with
 * VB_MSG_HANGUP_TRANSFER after the sentence's turn); each call keeps its
 * tool log there (vb_call_tools_log(call->tools)) for the post-call
 * report. When the outbound ring is full the messages are parked in the
 * channel's spill in order and the pressure hook stops every connection
 * reading (TCP pushes back on the server) until it drains
 * (core/chan.h).
 *
 * The API key travels only in the x-goog-api-key handshake header and is
 * never logged. All state is touched by the stage thread only (a
 * core/stage.h stage); other threads reach it through its channels.
 */
#ifndef VB_AI_GEMINI_H
#define VB_AI_GEMINI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ai/gemini_proto.h"
#include "core/assistant.h"
#include "core/chan.h"
#include "core/config.h"
#include "core/metrics.h"

#define VB_GEMINI_PROMPT_FILE_MAX (256u * 1024u)

typedef struct vb_gemini_options {
    int lane;
    uint32_t max_calls;  /* call slots (vb_call_id_t.slot) are below it */
    const char *url;     /* ws:// or wss:// endpoint */
    const char *api_key; /* sent as x-goog-api-key; NULL/"": none */
    const char *ca_file; /* wss: CA bundle; NULL/"": the system bundle */
    /* The setup fields (model, voice, language, prompt, VAD, ...); the
     * resume handle is managed by the stage. Strings are copied. */
    vb_gemini_setup_t setup;
    /* Read the system instruction from this file instead (copied at
     * create; at most VB_GEMINI_PROMPT_FILE_MAX bytes). */
    const char *system_prompt_file;
    const char *greeting;       /* realtimeInput.text at call start */
    const char *dtmf_text;      /* "%s" replaced by the digit */
    const char *transcript_dir; /* per-call JSONL transcripts; NULL: log */
    size_t max_message;         /* server message limit; 0: 4 MiB */
    uint32_t prebuffer_ms;      /* caller audio held while not READY; 0: 3000 */
    uint32_t connect_timeout_ms; /* connect + TLS + WS + setup; 0: 10000 */
    uint32_t prepare_ttl_ms;     /* pre-connected session unclaimed; 0: 30000 */
    uint32_t reconnect_max;      /* attempts after a loss; 0: 3 */
    uint32_t reconnect_backoff_ms; /* first delay, doubled; 0: 250 */
    uint32_t hangup_grace_ms; /* end_call -> HANGUP at the latest; 0: 5000 */
    /* Liveness (see DESIGN): a ping every ping_interval_ms on each open
     * connection; one unanswered for pong_timeout_ms, or a send backlog
     * over VB_GEMINI_BACKLOG_STALL_BYTES for as long, or
     * VB_GEMINI_BAD_MSG_MAX unusable messages in a row, and the connection
     * is lost. 0: 1000 / 2000. */
    uint32_t ping_interval_ms;
    uint32_t pong_timeout_ms;
    /* Most time an open call goes without a working connection (from the
     * last sign of life of the one it lost) before it is ended with the
     * fallback message; 0: 5000. */
    uint32_t recover_timeout_ms;
    /* A connection READY this long restores the reconnect budget
     * (reconnect_max); 0: 10000. */
    uint32_t healthy_ms;
    /* Text the caller hears when the model cannot be reached; travels in
     * the HANGUP message (VB_MSG_HANGUP_FALLBACK). NULL/"": none. */
    const char *fallback_say;
    /* Tool calls (ai/tools.h): the X-Voxbridge-Signature key (NULL/"":
     * unsigned), the CA bundle for https:// tool URLs (NULL/"": system),
     * the largest tool answer (0: 65536). */
    const char *webhook_secret;
    const char *webhook_secret_previous; /* NULL/"": not rotating */
    const char *webhook_ca_file;
    size_t tool_max_response;
    /* --max-call-duration, which twilio-io enforces for every call; an
     * assistant's shorter max_call_s is ended here (0: no limit). */
    uint32_t max_call_s;
    /* Optional: told each session's verdict on the configuration, on the
     * stage thread: ok at setupComplete, not ok (with the reason) when the
     * service rejects the key or setup (HTTP 401/403, close 1007, close
     * 1008). Readiness counts these (net/ingress.h). */
    void (*on_verdict)(void *ud, bool ok, const char *why);
    void *verdict_ud;
    /* Post-call reports go here (ai/events.h); NULL: none are made.
     * Borrowed: outlives the stage. */
    struct vb_events *events;
} vb_gemini_options_t;

/* Liveness limits that are not settings. */
#define VB_GEMINI_BACKLOG_STALL_BYTES (256u * 1024u) /* ~6 s of audio JSON */
#define VB_GEMINI_BAD_MSG_MAX         5u   /* unusable messages in a row */
#define VB_GEMINI_HOLD_MS             500u /* ping unanswered: hold audio */
/* After goAway, how long the old connection may go on delivering the
 * model turn it is in once its replacement is ready (caller audio waits
 * in the 3 s buffer meanwhile). */
#define VB_GEMINI_DRAIN_MS 2000u

/* Fills `o` from the settings (pointers into `cfg`, which must outlive
 * `o`): URL, key, CA file, model, voice, language, temperature, prompt or
 * prompt file, greeting, VAD, transcriptions, DTMF text, transcript dir,
 * lanes' max_calls. Any thread. */
void vb_gemini_options_from_config(vb_gemini_options_t *o,
                                   const vb_config_t *cfg);

typedef struct vb_gemini_stage_config {
    vb_gemini_options_t opt;
    vb_chan_t *prepare; /* consumed: PREPARE from ingress; may be NULL */
    vb_chan_t *in;      /* consumed: from dsp */
    vb_chan_t *out;     /* produced: to dsp (audio cut to its data_max) */
    vb_metrics_t *metrics;
    /* Assistants (borrowed, may be NULL): a call the webhook did not
     * prepare here takes the one its stream names, else the default.
     * Without it, and for a PREPARE without a context, the options above
     * make the setup. */
    vb_assistant_store_t *assistants;
    /* --assistant-url and its timeout and signing settings (borrowed, may
     * be NULL: none): a call whose stream marks its assistant as that
     * URL's answer, and that the webhook of this process did not prepare,
     * asks the URL again before its setup (docs/assistants.md). Needs
     * `assistants`. */
    const vb_config_t *assistant_url;
    /* The lane's recorder (borrowed, may be NULL: --record-dir unset):
     * the report names a call's file when the recorder opened it
     * (dsp/recorder.h vb_recorder_file). */
    const struct vb_recorder *recorder;
} vb_gemini_stage_config_t;

typedef struct vb_gemini_stage vb_gemini_stage_t;

/* Creates the stage: copies the options, reads the prompt file, checks the
 * URL, loads the CA bundle for wss://, registers the metric series, sets up
 * the loop, and attaches to its channels. Does not start the thread.
 * Channels and metrics are borrowed and must outlive the stage. Errors:
 * VB_EINVAL (missing channel or metrics, max_calls 0), VB_ECONFIG (bad URL,
 * unreadable or too large prompt file, no model, an API key with a line
 * break; logged), VB_ENOENT / VB_ECERT / VB_ETLS (CA bundle, TLS setup),
 * VB_ENOMEM, VB_ENOSPC (metrics registry full), VB_ESYS. Main thread. */
int vb_gemini_stage_create(vb_gemini_stage_t **out,
                           const vb_gemini_stage_config_t *cfg);

/* Starts the thread. Returns 0, VB_EBUSY, VB_ESYS. Main thread. */
int vb_gemini_stage_start(vb_gemini_stage_t *s);

/* Stops the loop and joins the thread; open connections are dropped
 * without a close handshake (calls should have ended through CALL_CLOSE,
 * which closes with 1000). Main thread; safe if never started. */
void vb_gemini_stage_stop(vb_gemini_stage_t *s);

/* Frees the stage; accepts NULL. After stop (calls it if needed). */
void vb_gemini_stage_destroy(vb_gemini_stage_t *s);

#endif
