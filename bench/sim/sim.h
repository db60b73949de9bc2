/* SPDX-License-Identifier: MIT */
/*
 * vb-sim: a strict simulator of Twilio's side of a voice call (spec
 * twilio-media-streams.md): the signed voice webhook, strict TwiML parsing,
 * the signed Media Streams upgrade, `connected`/`start`/`media` at a 20 ms
 * cadence, `dtmf` and `stop`, a playout FIFO drained at 8000 bytes/s with
 * mark echoes and `clear` semantics, and Twilio's REST hang-up endpoint.
 * Everything voxbridge sends is validated; any deviation is a protocol
 * error that fails the run.
 *
 * DESIGN. One call is one sim_call_t on a caller-supplied libuv loop, so a
 * load generator can run many on one loop. Its state machine: WEBHOOK (POST,
 * read TwiML) -> TWIML (run verbs: Say/Pause delay, Connect opens the
 * stream) -> STREAM (the WebSocket) -> AFTER (verbs after </Connect>) ->
 * DONE. A sim_api_t is the REST server; calls register with it so that
 * POST .../Calls/{CallSid}.json finds them. All of it runs on the loop's
 * thread.
 */
#ifndef VB_BENCH_SIM_H
#define VB_BENCH_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

/* ---- audio helpers (sim_audio.c) ---- */

uint8_t sim_mulaw_encode(int16_t pcm);
int16_t sim_mulaw_decode(uint8_t u);

/* Reads a WAV file that must be 16-bit PCM, mono, 8000 Hz. On success
 * *samples is malloc'd. Errors (with a message in err): -1. */
int sim_wav_read(const char *path, int16_t **samples, size_t *n, char *err,
                 size_t errsz);
/* Writes 16-bit PCM mono 8000 Hz. Returns 0 or -1 (errno set). */
int sim_wav_write(const char *path, const int16_t *samples, size_t n);

/* ---- signatures (sim_sign.c) ---- */

/* A form parameter list for webhooks. */
typedef struct sim_param {
    const char *name;
    const char *value;
} sim_param_t;

/* X-Twilio-Signature for `url` and `params` (spec §5.1) into out (29+). */
int sim_sign(const char *token, const char *url, const sim_param_t *params,
             size_t n, char *out, size_t outsz);

/* Form-encodes params into a malloc'd string. */
char *sim_form_encode(const sim_param_t *params, size_t n);

/* ---- TwiML (sim_twiml.c) ---- */

typedef enum {
    SIM_VERB_SAY,
    SIM_VERB_PAUSE,
    SIM_VERB_CONNECT,
    SIM_VERB_HANGUP,
    SIM_VERB_DIAL,   /* text: the first number or URI dialed */
    SIM_VERB_REJECT, /* text: the reason, "busy" or "rejected" */
    SIM_VERB_OTHER,  /* Play, Redirect, Reject: recorded, not run */
} sim_verb_kind_t;

#define SIM_MAX_PARAMS 32

typedef struct sim_verb {
    sim_verb_kind_t kind;
    char name[16];
    char *text;         /* Say text (decoded) */
    double pause_s;     /* Pause length */
    char *stream_url;   /* Connect/Stream url */
    char *status_cb;    /* Stream statusCallback, or NULL */
    bool status_cb_get; /* its statusCallbackMethod is GET */
    char *action;       /* Connect action, or NULL */
    size_t nparams;     /* Stream Parameters */
    char *pname[SIM_MAX_PARAMS];
    char *pvalue[SIM_MAX_PARAMS];
} sim_verb_t;

typedef struct sim_twiml {
    sim_verb_t *verbs;
    size_t nverbs;
} sim_twiml_t;

/* Parses a TwiML document strictly (well-formed XML, <Response> root,
 * known verbs and attributes, Stream url rules of spec §2.2 with ws://
 * allowed only for loopback hosts). Returns 0, or -1 with a message. */
int sim_twiml_parse(const char *xml, size_t len, sim_twiml_t *out, char *err,
                    size_t errsz);
void sim_twiml_free(sim_twiml_t *t);

/* ---- strict validation of what voxbridge sends (sim_validate.c) ---- */

typedef enum {
    SIM_OUT_MEDIA,
    SIM_OUT_MARK,
    SIM_OUT_CLEAR,
} sim_out_kind_t;

typedef struct sim_out_msg {
    sim_out_kind_t kind;
    uint8_t *audio; /* media: decoded μ-law (malloc'd, caller frees) */
    size_t audio_len;
    char *mark; /* mark: name (malloc'd, caller frees) */
} sim_out_msg_t;

/* Validates one text message from the server against spec §4 with the
 * call's streamSid: exactly media{payload} / mark{name} / clear, nothing
 * more, the right streamSid, valid non-empty base64. Returns 0 and fills
 * *out, or -1 with the violation in err. */
int sim_validate_outbound(const char *json, size_t len, const char *stream_sid,
                          sim_out_msg_t *out, char *err, size_t errsz);

/* Strict base64 (standard alphabet, '=' padding, length % 4 == 0): decodes
 * into a malloc'd buffer. Returns 0 or -1. */
int sim_b64_decode_strict(const char *s, size_t n, uint8_t **out,
                          size_t *outlen);

/* ---- the REST API server (sim_api.c) ---- */

typedef struct sim_api sim_api_t;
typedef struct sim_call sim_call_t;

/* Listens on host:port (port 0 picks one). Requests need HTTP Basic
 * auth AccountSid:auth_token when auth_token is non-empty (or an API key,
 * sim_api_set_api_key()); others get 401 with Twilio's error 20003. */
int sim_api_start(uv_loop_t *loop, const char *host, int port,
                  const char *auth_token, sim_api_t **out);
/* Also accepts HTTP Basic key_sid:secret (an API key, SK...) for requests
 * whose path names `account` (NULL or "": any account, as the auth token
 * is). Copies the strings; an empty secret removes the key. */
void sim_api_set_api_key(sim_api_t *api, const char *account,
                         const char *key_sid, const char *secret);
int sim_api_port(const sim_api_t *api);
uint64_t sim_api_requests(const sim_api_t *api);
/* Requests refused 401: wrong, missing or malformed credentials. */
uint64_t sim_api_auth_failures(const sim_api_t *api);
void sim_api_stop(sim_api_t *api); /* closes; frees once the loop runs */

/* ---- one call (sim_call.c) ---- */

typedef struct sim_dtmf {
    char digit;
    double at_s; /* seconds after the stream started */
} sim_dtmf_t;

/* Timestamps for the load bench (vb_clock_now_ns, CLOCK_MONOTONIC), written
 * into caller-owned arrays without allocation; counting goes on past a
 * cap, storing stops. */
typedef struct sim_timing {
    uint64_t *sent; /* [k]: media frame k (0-based) written to the socket */
    size_t cap_sent, nsent;
    uint64_t *onset; /* media arriving after >= 200 ms without any */
    size_t cap_onset, nonset;
    uint64_t *clear; /* clear arrived */
    size_t cap_clear, nclear;
    uint64_t last_media;
} sim_timing_t;

/* A stretch of the stream: from at_s seconds after it started, ms long. */
typedef struct sim_window {
    double at_s, ms;
} sim_window_t;
/* How the Media Streams upgrade is signed (X-Twilio-Signature over the
 * `<Stream url>` with no parameters): over the URL exactly, not at all,
 * over the URL with a trailing '/' added, or with the scheme's default
 * port made explicit (wss://host:443/path, ws://host:80/path; a URL with a
 * port is signed as it is). */
typedef enum {
    SIM_UPGRADE_SIG_EXACT,
    SIM_UPGRADE_SIG_NONE,
    SIM_UPGRADE_SIG_SLASH,
    SIM_UPGRADE_SIG_PORT,
} sim_upgrade_sig_t;

/* The URL `mode` signs for `url` into out. Returns 0, or -1 (too long, or
 * not scheme://). SIM_UPGRADE_SIG_NONE yields the URL unchanged. */
int sim_upgrade_sig_url(sim_upgrade_sig_t mode, const char *url, char *out,
                        size_t outsz);

typedef struct sim_call_opts {
    const char *webhook;     /* http://host:port/path */
    const char *auth_token;  /* signs webhook and upgrade; NULL/"": none */
    const char *account_sid; /* NULL: a random AC... */
    const char *from, *to;   /* NULL: defaults */
    const uint8_t *mulaw;    /* caller audio, μ-law 8 kHz (borrowed) */
    size_t mulaw_len;
    const sim_dtmf_t *dtmf;
    size_t ndtmf;
    /* Hang up (stop + close) this long after the stream started; < 0:
     * when the caller audio ends plus tail_s. */
    double hangup_after_s;
    double tail_s;
    double pause_scale; /* multiplies <Pause> lengths (0: no waiting) */
    double timeout_s;   /* whole call; 0: hang-up time + 15 s */
    bool record_heard;  /* keep the played audio for sim_call_heard() */
    /* Send no media for silent frames (|sample| < 64 throughout), the
     * timestamps of the next ones keeping real time: a leg that
     * suppresses silence. */
    bool suppress_silence;
    /* Media timing of a real leg: each frame is held up to jitter_ms
     * (order kept); during a stall nothing is sent, and what was held
     * goes at once after it (a burst, timestamps unchanged); the frames
     * of a gap are never sent (the timestamps jump over it). Jitter is
     * drawn from timing_seed (0: 1), so runs repeat. */
    double jitter_ms;
    const sim_window_t *stalls, *gaps;
    size_t nstalls, ngaps;
    uint32_t timing_seed;
    const char *ca_file;  /* CA bundle for https/wss; NULL: the system's */
    bool verbose;         /* log events to stderr */
    sim_timing_t *timing; /* NULL, or timestamps to record (borrowed) */
    /* The webhook's Direction: NULL "inbound"; "outbound-api" for a call
     * placed through Calls.json (CallStatus in-progress then). */
    const char *direction;
    sim_upgrade_sig_t upgrade_sig; /* default exact */
    /* The call's status callback (the number's StatusCallback, or a
     * Calls.json create's): signed, POST or GET (status_cb_get), for the
     * events in status_cb_events (SIM_CALL_EV_* bits; 0: completed only,
     * Twilio's default). The completed one is sent when the call ends and
     * given up to 2 s to be answered before the call is reported. */
    const char *status_cb;
    bool status_cb_get;
    unsigned status_cb_events;
    /* The caller hangs up hangup_before_stream_s after the call is
     * answered, before its stream opens (at the <Connect>): an answered
     * call whose stream never comes. */
    bool hangup_before_stream;
    double hangup_before_stream_s;
} sim_call_opts_t;

/* Call status callback events (StatusCallbackEvent). */
enum {
    SIM_CALL_EV_INITIATED = 1u << 0,
    SIM_CALL_EV_RINGING = 1u << 1,
    SIM_CALL_EV_ANSWERED = 1u << 2,
    SIM_CALL_EV_COMPLETED = 1u << 3,
};

/* "initiated ringing,answered ..." (separated by spaces or commas) into
 * SIM_CALL_EV_* bits. Returns 0, or -1 naming the unknown event in bad. */
int sim_call_events_parse(const char *s, unsigned *out, char *bad,
                          size_t badsz);

typedef struct sim_call_result {
    bool ok;            /* completed with no protocol error */
    char error[256];    /* first fatal error or protocol violation */
    int webhook_status; /* HTTP status of the webhook */
    char call_sid[40], stream_sid[40];
    bool stream_opened;
    uint64_t frames_sent, dtmf_sent;
    uint64_t media_received, bytes_received; /* from voxbridge */
    uint64_t odd_sized_media; /* payloads not a multiple of 160 bytes */
    uint64_t bytes_played;    /* audio played out (excl. silence) */
    uint64_t bytes_cleared;   /* audio dropped by clear */
    uint64_t marks_received, marks_echoed, clears_received;
    uint64_t protocol_errors;
    uint64_t rest_hangups;
    bool hung_up_by_sim, hung_up_by_rest, closed_by_server;
    int close_code; /* code of the server's close frame, 0 none */
    char close_reason[128];
    double first_audio_ms; /* stream start to first media received */
    double duration_s;     /* webhook to done */
    uint64_t late_ticks;   /* media ticks sent > 5 ms late */
    /* <Say> verbs run after the stream ended (the TwiML after <Connect>,
     * or TwiML from a REST update): their texts joined by " | " (cut to
     * the buffer), how many, and stream start to the first of them. */
    char said[1024];
    unsigned says_after_stream;
    double said_after_s; /* -1: none */
    bool twiml_replaced; /* a REST update's Twiml= ran */
    /* A <Dial> ran (the call went to a person): what it dialed, and when
     * (from the stream's start; -1: none). */
    char dialed[256];
    double dialed_after_s;
    /* <Connect action> requests made once the stream ended (Twilio then
     * runs what they answer), and the HTTP status of the last. */
    unsigned action_requests;
    int action_status;
    /* The call was not answered: <Reject reason> ("busy": a busy tone,
     * "rejected": not in service); "" otherwise. */
    char rejected[16];
    uint64_t frames_suppressed;  /* silent frames not sent */
    uint64_t frames_gapped;      /* frames of a --gap, never sent */
    uint64_t frames_held;        /* sent a tick (20 ms) or more late */
    double max_hold_ms;          /* longest a frame was held */
    unsigned stream_events_sent; /* <Stream statusCallback> requests */
    /* Call status callbacks sent, the CallStatus of the last, and the
     * HTTP status that answered it (0: none came). */
    unsigned call_status_callbacks;
    char call_status_last[16];
    int call_status_http;
    bool hung_up_before_stream; /* hangup_before_stream_s took effect */
} sim_call_result_t;

typedef void (*sim_call_done_cb)(sim_call_t *c, void *ud);

/* Starts a call on `loop`; `api` (may be NULL) receives its REST
 * requests. `done` fires once when the call is over. Options are copied
 * (audio and dtmf are borrowed). Returns 0 or -1. */
int sim_call_start(uv_loop_t *loop, sim_api_t *api, const sim_call_opts_t *o,
                   sim_call_done_cb done, void *ud, sim_call_t **out);

const sim_call_result_t *sim_call_result(const sim_call_t *c);

/* What the caller heard: μ-law bytes at 8000 B/s from stream start
 * (silence 0xFF where nothing played). Valid until sim_call_free. */
const uint8_t *sim_call_heard(const sim_call_t *c, size_t *len);

/* Prints the per-call summary (logfmt, one line). */
void sim_call_print_summary(const sim_call_t *c, FILE *f);

/* Ends the call now as a caller hang-up (stop + close). */
void sim_call_hangup(sim_call_t *c);

/* Frees a finished call; accepts NULL. */
void sim_call_free(sim_call_t *c);

/* For sim_api: REST request for this call (Status=completed, or a Twiml /
 * Url replacement, both end the stream). */
sim_call_t *sim_api_find(sim_api_t *api, const char *call_sid);
void sim_api_register(sim_api_t *api, sim_call_t *c, const char *call_sid);
void sim_api_unregister(sim_api_t *api, sim_call_t *c);
void sim_call_rest_update(sim_call_t *c, const char *status, bool replace);
/* Whether the call was answered (its webhook's TwiML is running): then
 * Status=canceled leaves it alone, as Twilio does. */
bool sim_call_answered(const sim_call_t *c);
/* A REST update with a valid Twiml= document: the stream ends (stop,
 * close) and `t` runs instead of the rest of the call's TwiML. Takes `t`. */
void sim_call_rest_twiml(sim_call_t *c, sim_twiml_t *t);
const char *sim_call_account_sid(const sim_call_t *c);

/* ---- outbound calls: the Calls.json create API (sim_outbound.c) ---- */

typedef struct sim_outbound sim_outbound_t;

typedef struct sim_outbound_opts {
    sim_call_opts_t call;   /* template of each placed call (audio...) */
    const char *auth_token; /* signs the callbacks and the call */
    /* Answering-machine detection: the AnsweredBy the callee gives
     * (human, machine_start, machine_end_beep, ..., fax; NULL: none sent)
     * and when, in seconds after the call was created. */
    const char *answered_by;
    double amd_after_s;
    const char *unreachable; /* a To refused with 21215 (NULL: none) */
    bool verbose;
    void (*done)(sim_outbound_t *ob, void *ud); /* after each call */
    void *done_ud;
} sim_outbound_opts_t;

/* Serves Calls.json creates on `api`'s listener. Returns 0 or -1. */
int sim_outbound_start(uv_loop_t *loop, sim_api_t *api,
                       const sim_outbound_opts_t *o, sim_outbound_t **out);
/* Calls placed and finished so far. */
size_t sim_outbound_done(const sim_outbound_t *ob);
void sim_outbound_free(sim_outbound_t *ob); /* after the loop ran out */

/* For sim_api: a create request's form body for `account`. Returns the
 * HTTP status and *json (malloc'd): the Call resource, or Twilio's error
 * object (then *code and msg too). */
int sim_outbound_create(sim_outbound_t *ob, const char *account,
                        const char *body, size_t len, char **json, int *code,
                        char *msg, size_t msgsz);
void sim_api_set_outbound(sim_api_t *api, sim_outbound_t *ob);

/* `vb-sim load ...` (argv[0] is "load"); see sim_load.c. */
int sim_load_main(int argc, char **argv);

#endif
