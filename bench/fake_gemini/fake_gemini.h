/* SPDX-License-Identifier: MIT */
/*
 * vb-fake-gemini internals: a strict local stand-in for the Gemini Live
 * BidiGenerateContent WebSocket service (spec gemini-live.md §9), used by
 * tests and the bench. main.c owns the process, the listener, the HTTP
 * upgrade and the JSONL log; live.c is the per-connection protocol engine
 * (setup validation, realtime input checks, the turn engine with an energy
 * VAD, barge-in, tool calls, session resumption, goAway, scripts).
 *
 * DESIGN. One thread, one libuv loop. Each connection has one 10 ms timer
 * that drives everything time-based (setup delay, paced response audio,
 * turnComplete after playback, script events, the connection lifetime);
 * turn detection is driven by the caller's audio itself (sample counts),
 * so it is deterministic whatever the scheduling.
 */
#ifndef VB_FAKE_GEMINI_H
#define VB_FAKE_GEMINI_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "net/http.h"
#include "net/tls.h"
#include "net/transport.h"
#include "net/ws.h"

typedef enum fg_mode {
    FG_ECHO,
    FG_TONE,
    FG_SCRIPT,
} fg_mode_t;

/* --fault: how the service misbehaves (on the --fault-conn-th connection,
 * or every one). */
typedef enum fg_fault {
    FG_FAULT_NONE,
    FG_FAULT_STALL,     /* after setupComplete: read nothing, write nothing */
    FG_FAULT_DIE,       /* close 1011 right after every setupComplete */
    FG_FAULT_GARBAGE,   /* after setupComplete: only unparsable messages */
    FG_FAULT_REJECT401, /* the upgrade is answered 401 */
    FG_FAULT_REJECT403, /* the upgrade is answered 403 */
    FG_FAULT_GOAWAY_EARLY, /* goAway (2 s left) before setupComplete */
    FG_FAULT_STALL_AFTER,  /* as STALL, stall_after_ms after setupComplete */
} fg_fault_t;

/* One timed event of a --script file (JSON lines). */
typedef struct fg_event {
    int64_t at_ms; /* after setupComplete of the connection */
    int conn;      /* 0: every connection; N: only the N-th one */
    cJSON *ev;     /* the whole line */
} fg_event_t;

/* A resumable session: survives its connections. */
typedef struct fg_session {
    struct fg_session *next;
    int id;
    int handle_seq; /* handles fake-<id>-<1..handle_seq> are valid */
    int conns;
} fg_session_t;

typedef struct fg_opts {
    char host[256];
    int port;
    const char *api_key;
    const char *cert, *key;
    fg_mode_t mode;
    const char *script;
    const char *log_path;
    const char *timing_path; /* --timing: bench timestamps, see docs */
    int setup_delay_ms;
    int first_audio_delay_ms;
    int lifetime_s;
    int goaway_lead_ms; /* -1: min(50 s, lifetime / 5) */
    int tone_ms;
    int tone_hz;
    int vad_threshold; /* RMS of a 20 ms frame counted as speech */
    bool style31;      /* combined parts and empty serverContent */
    fg_fault_t fault;
    int fault_conn;     /* 0: every connection; N: only the N-th */
    int stall_after_ms; /* --fault stall-after:MS */
    const char *models[32];
    int nmodels;
} fg_opts_t;

typedef struct fg_server {
    fg_opts_t o;
    uv_loop_t *loop;
    uv_tcp_t listener;
    vb_tls_config_t *tls;
    FILE *log;
    FILE *timing;
    uint64_t t0_ms;
    int next_conn;
    int next_session;
    fg_session_t *sessions;
    fg_event_t *events;
    size_t nevents;
} fg_server_t;

typedef struct fg_conn fg_conn_t;

/* ---- main.c ---- */

/* Appends one JSON line {"t":ms,"conn":id,...fields of `o`} to the log
 * (flushed) and frees `o`. */
void fg_log(fg_server_t *srv, int conn, cJSON *o);

/* ---- live.c ---- */

/* A WebSocket connection was accepted for `path` (upgrade done); `auth`
 * says whether the API key checked out ("header", "query", "none" when no
 * key is required, NULL when it was wrong or missing). Takes over `ws`
 * (its callbacks must point at fg_live_callbacks with the returned conn as
 * user data: use fg_live_attach). */
fg_conn_t *fg_live_new(fg_server_t *srv, int id, const char *auth);
const vb_ws_callbacks_t *fg_live_callbacks(void);
void fg_live_set_ws(fg_conn_t *c, vb_ws_t *ws);

/* True if --fault applies to connection `id`. */
static inline bool fg_fault_on(const fg_server_t *srv, int id)
{
    return srv->o.fault != FG_FAULT_NONE &&
           (srv->o.fault_conn == 0 || srv->o.fault_conn == id);
}

/* Loads the script file into srv->events. Returns 0 or -1 (printed). */
int fg_script_load(fg_server_t *srv, const char *path);

/* Known model ids (without models/) for the default list. */
extern const char *const fg_default_models[];

#endif
