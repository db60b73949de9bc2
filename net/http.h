/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 server: llhttp for parsing, libuv for sockets. Keep-alive and
 * pipelining (responses leave in request order), explicit limits on every
 * part of a request, and a way to give an upgraded socket away.
 *
 * DESIGN. Two layers. A session (vb_http_session_t) is the whole protocol
 * state of one connection and does no I/O: bytes go in with
 * vb_http_session_feed(), complete requests go to the handler, response
 * bytes come out with vb_http_session_take_output(), and the session says
 * what the transport must do next (keep reading, close after the output,
 * or detach the socket after the output). Tests and the fuzzer drive it
 * byte by byte. The server (vb_http_server_t) is the libuv transport: it
 * owns listeners and connections on one loop, runs one timer per
 * connection (the session says which timeout applies and when it
 * restarts), stops reading while too much output is queued (and the
 * session itself stops answering pipelined requests once one read's
 * answers pass the output limit, so a burst of small requests with large
 * answers cannot pile up memory), closes with a
 * short lingering read so a client still sending its body sees the error
 * status rather than a reset, and detaches upgraded sockets: dup() the fd,
 * close the libuv handle, hand the new fd plus the bytes already read
 * beyond the upgrade request to a callback.
 *
 * Limits (vb_http_limits_t) answer with a status and close the connection:
 * request line + header fields beyond max_head_bytes or more than
 * max_headers fields -> 431; a body beyond max_body_bytes (by
 * Content-Length, at once, or while chunks arrive) -> 413; a head not
 * complete within header_timeout_ms of the connection's accept or of the
 * request's first byte -> 408; a request (head and body) not complete
 * within request_timeout_ms of its first byte -> 408; a body slower than
 * min_body_rate -> 408 (from the end of the head, n body bytes buy
 * body_grace_ms + n / min_body_rate of time, so a byte now and then no
 * longer keeps a connection alive); anything llhttp rejects -> 400. Idle
 * keep-alive connections close silently after idle_timeout_ms.
 *
 * Connections. At most max_conns at once. With max_conns_per_peer set, one
 * peer address (an IPv6 peer: its /64) holds at most that many, and a
 * connection arriving at the global cap from a peer holding fewer than the
 * busiest peer evicts the busiest peer's oldest connection, so addresses
 * flooding the cap cannot lock others out; refused connections get a 503
 * and are closed. Behind a reverse proxy every socket comes from the proxy:
 * leave max_conns_per_peer 0 there (eviction then never triggers between
 * the proxy's own connections). The server accepts itself (a poll handle
 * on the listening socket): when accept fails for lack of descriptors
 * (EMFILE, ENFILE) or memory, accepting pauses for accept_pause_ms, or
 * until one of its connections closes, and the pending connections wait
 * in the kernel's backlog instead of being dropped.
 *
 * Threads: a session is used by one thread at a time; a server and all its
 * connections live on the thread running its loop, and every vb_http_server
 * function except _create/_listen (before the loop runs) must be called on
 * it.
 */
#ifndef VB_NET_HTTP_H
#define VB_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct vb_http_limits {
    uint32_t max_head_bytes;     /* request line + header fields; 431 */
    uint32_t max_headers;        /* header fields per request; 431 */
    uint32_t max_body_bytes;     /* 413 */
    uint32_t header_timeout_ms;  /* 408 */
    uint32_t idle_timeout_ms;    /* keep-alive idle: silent close */
    uint32_t request_timeout_ms; /* whole request, head and body; 408 */
    uint32_t min_body_rate;      /* body bytes/s after the grace; 408; 0 off */
    uint32_t body_grace_ms;      /* body time not held to min_body_rate */
    uint32_t max_conns;          /* concurrent connections per server */
    uint32_t max_conns_per_peer; /* per peer address (IPv6: per /64); 0 off */
    uint32_t max_output_bytes;   /* queued output before reading pauses */
    uint32_t linger_ms;          /* read-and-discard time after an error */
    uint32_t accept_pause_ms;    /* accepting pauses this long on EMFILE */
} vb_http_limits_t;

#define VB_HTTP_REQUEST_TIMEOUT_MS 30000
#define VB_HTTP_MIN_BODY_RATE      1024 /* bytes per second */
#define VB_HTTP_BODY_GRACE_MS      5000
#define VB_HTTP_MAX_CONNS          10000
#define VB_HTTP_MAX_OUTPUT_BYTES   65536
#define VB_HTTP_ACCEPT_PAUSE_MS    250

/* Fills `l` with the defaults: 16 KiB head, 100 headers, 64 KiB body,
 * 10 s head, 60 s idle, 30 s per request, bodies at >= 1024 B/s after a
 * 5 s grace, 10000 connections, no per-peer limit, 64 KiB output, 2 s
 * linger, 250 ms accept pause. */
void vb_http_limits_default(vb_http_limits_t *l);

typedef struct vb_http_header {
    const char *name; /* NUL-terminated, as received */
    size_t name_len;
    const char *value; /* NUL-terminated, surrounding blanks removed */
    size_t value_len;
} vb_http_header_t;

/* One complete request. Everything points into the session and is valid
 * only during the handler call. */
typedef struct vb_http_req {
    int method;              /* llhttp_method_t */
    const char *method_name; /* "GET" */
    /* Origin-form request target ("/path?query"; an absolute-form target
     * is reduced to it), NUL-terminated. */
    const char *target;
    size_t target_len;
    size_t path_len;   /* target[0..path_len) is the path */
    const char *query; /* after '?', NUL-terminated, or NULL */
    const vb_http_header_t *headers;
    size_t nheaders;
    const char *body; /* NUL-terminated (body_len bytes before it) */
    size_t body_len;
    uint8_t http_major, http_minor;
    bool keep_alive;     /* the connection may stay open after this */
    bool upgrade;        /* llhttp saw Connection: upgrade + Upgrade */
    int listener;        /* tag of the listener that accepted the socket */
    const char *peer;    /* "addr:port" of the socket peer */
    uint64_t t_start_ns; /* first byte of this request (core/clock.h) */
    /* The connection, for vb_http_server_answer() after a deferred
     * response; NULL for a session without a server. */
    void *conn;
} vb_http_req_t;

#define VB_HTTP_RESP_HEADERS_MAX 1024

/* What the handler answers; the session has zeroed it and set status 500.
 * The session copies the body before the handler's caller returns. */
typedef struct vb_http_resp {
    int status;
    const char *content_type; /* NULL: no Content-Type */
    const char *body;         /* borrowed; or NULL */
    size_t body_len;
    char *body_owned; /* alternatively malloc'd; the session frees it */
    char headers[VB_HTTP_RESP_HEADERS_MAX]; /* extra "Name: value\r\n" */
    size_t headers_len;
    bool close;       /* close the connection after this response */
    bool upgrade;     /* 101 accepted: detach the socket after this response */
    void *detach_arg; /* passed to the server's on_detach */
    /* Answer later: nothing is written now; the connection reads nothing
     * more (pipelined requests wait) until vb_http_server_answer() on
     * req->conn, or it closes first, when the server's on_abandon gets
     * defer_arg. Only with a server (req->conn not NULL). A deferred
     * answer not given within limits.request_timeout_ms closes the
     * connection (on_abandon). */
    bool defer;
    void *defer_arg;
} vb_http_resp_t;

/* Appends a header line; VB_ENOSPC when the headers buffer is full,
 * VB_EINVAL when name or value holds CR or LF. */
int vb_http_resp_header(vb_http_resp_t *r, const char *name, const char *value);

/* Handles one request; must fill `resp` (status and body at least). */
typedef void (*vb_http_handler_fn)(void *ud, const vb_http_req_t *req,
                                   vb_http_resp_t *resp);

/* A request the session answered itself (400, 408, 413, 431). */
typedef struct vb_http_error {
    int status;
    const char *reason; /* short text, for a log field */
    const char *target; /* request target if it was complete, else NULL */
    const char *peer;
    int listener;
    uint64_t t_start_ns; /* first byte of the failed request, or accept */
} vb_http_error_t;
typedef void (*vb_http_error_fn)(void *ud, const vb_http_error_t *e);

/* ---- session: protocol without I/O ---- */

typedef struct vb_http_session vb_http_session_t;

typedef enum vb_http_action {
    VB_HTTP_CONTINUE = 0, /* keep reading */
    VB_HTTP_CLOSE = 1,    /* write the output, then close */
    VB_HTTP_DETACH = 2,   /* write the output, then detach the socket */
} vb_http_action_t;

typedef struct vb_http_session_cfg {
    vb_http_limits_t limits;
    vb_http_handler_fn handler;
    vb_http_error_fn on_error; /* may be NULL */
    void *ud;
    int listener;
    const char *peer; /* copied; NULL: "" */
    void *conn;       /* the transport's handle, given to handlers */
} vb_http_session_cfg_t;

/* Creates a session. Returns 0, VB_EINVAL (no handler), VB_ENOMEM. */
int vb_http_session_create(const vb_http_session_cfg_t *cfg,
                           vb_http_session_t **out);
void vb_http_session_destroy(vb_http_session_t *s); /* accepts NULL */

/* Parses `len` bytes, calling the handler for each complete request and
 * queueing responses. Returns the action; once CLOSE or DETACH, later
 * feeds do nothing and return it again. */
vb_http_action_t vb_http_session_feed(vb_http_session_t *s, const char *data,
                                      size_t len);

/* Blocked: a feed produced at least limits.max_output_bytes of output, so
 * the session stopped answering and holds the rest of the input (further
 * feeds are appended to it). The transport should stop reading, write the
 * output, and call vb_http_session_resume() once it has drained. */
bool vb_http_session_blocked(const vb_http_session_t *s);

/* Parses the held-back input; returns the action, as a feed does. Does
 * nothing while a response is deferred. */
vb_http_action_t vb_http_session_resume(vb_http_session_t *s);

/* A deferred response (vb_http_resp_t.defer) is outstanding, and the
 * handler's defer_arg for it. While deferred the session is blocked. */
bool vb_http_session_deferred(const vb_http_session_t *s);
void *vb_http_session_defer_arg(const vb_http_session_t *s);

/* Queues the deferred response (`resp` as a handler fills it; its
 * body_owned is freed) and unblocks the session; returns the action (CLOSE
 * when the request or `resp` asked for it). Held-back input is parsed by a
 * later vb_http_session_resume(). Without a deferred response: nothing,
 * returns the action. */
vb_http_action_t vb_http_session_answer(vb_http_session_t *s,
                                        vb_http_resp_t *resp);

/* The connection's timer fired: queues 408 if a request is under way and
 * returns VB_HTTP_CLOSE. */
vb_http_action_t vb_http_session_timeout(vb_http_session_t *s);

/* Current timer: returns a generation that changes whenever the timer must
 * be restarted, and its duration in *ms. */
uint32_t vb_http_session_timer(const vb_http_session_t *s, uint32_t *ms);

/* Moves the queued output to the caller (malloc'd, caller frees) and
 * stores its length in *len; NULL when there is none. */
char *vb_http_session_take_output(vb_http_session_t *s, size_t *len);

/* After VB_HTTP_DETACH: the bytes received after the upgrade request
 * (owned by the session) and the handler's detach_arg. */
const char *vb_http_session_leftover(const vb_http_session_t *s, size_t *len);
void *vb_http_session_detach_arg(const vb_http_session_t *s);

/* ---- server: libuv transport ---- */

typedef struct vb_http_server vb_http_server_t;

/* The socket of an accepted upgrade, after the 101 went out. `fd` is a
 * dup() of the connection's socket, non-blocking and close-on-exec, owned
 * by the callee from here on; `extra` (`extra_len` bytes, valid during the
 * call) holds what the client sent after the upgrade request. `fd` is -1
 * when the connection failed before the hand-off (the callee releases
 * whatever it reserved for `arg`). Loop thread. */
typedef void (*vb_http_detach_fn)(void *ud, int fd, const char *extra,
                                  size_t extra_len, void *arg,
                                  const char *peer);

/* Connection-level events, for metrics (loop thread). */
typedef enum vb_http_event {
    VB_HTTP_EV_ACCEPT_PAUSED = 0, /* accept failed (EMFILE...): paused */
    VB_HTTP_EV_REFUSED_MAX_CONNS, /* 503: at max_conns, nobody to evict */
    VB_HTTP_EV_REFUSED_PER_PEER,  /* 503: the peer is at its limit */
    VB_HTTP_EV_EVICTED,           /* closed to make room at max_conns */
    VB_HTTP_EV_COUNT
} vb_http_event_t;
typedef void (*vb_http_event_fn)(void *ud, vb_http_event_t ev);

/* A connection closed (client gone, timeout, server closing) while its
 * response was deferred: `defer_arg` will never be answered. Loop
 * thread. */
typedef void (*vb_http_abandon_fn)(void *ud, void *defer_arg);

typedef struct vb_http_server_cfg {
    vb_http_limits_t limits;
    vb_http_handler_fn handler;
    vb_http_error_fn on_error;     /* may be NULL */
    vb_http_detach_fn on_detach;   /* required if the handler upgrades */
    vb_http_event_fn on_event;     /* may be NULL */
    vb_http_abandon_fn on_abandon; /* required if the handler defers */
    void *ud;
} vb_http_server_cfg_t;

/* Creates a server on `loop`. Returns 0, VB_EINVAL, VB_ENOMEM. */
int vb_http_server_create(uv_loop_t *loop, const vb_http_server_cfg_t *cfg,
                          vb_http_server_t **out);

/* Binds HOST:PORT (numeric or resolvable; port 0 picks a free one) and
 * listens; requests from it carry `tag` in req->listener. The bound port
 * goes to *bound_port when not NULL. Returns 0, VB_ECONFIG (bad address),
 * VB_EIO (bind/listen failed, logged with libuv's error), VB_ENOSPC (too
 * many listeners; up to 4), VB_ENOMEM. */
int vb_http_server_listen(vb_http_server_t *s, const char *host, int port,
                          int tag, int *bound_port);

/* Answers the deferred response of connection `conn` (a req->conn) with
 * `resp` (body_owned is freed in any case). Returns 0, or VB_ESTALE when
 * the connection has no deferred response. Loop thread, never from inside
 * the handler that deferred. */
int vb_http_server_answer(void *conn, vb_http_resp_t *resp);

/* Number of open connections. Any thread (a relaxed read). */
size_t vb_http_server_connections(const vb_http_server_t *s);

/* Closes the listeners tagged `tag`: new connections to them are refused
 * by the kernel from here on (connections already accepted go on).
 * Returns how many were closed. Loop thread. */
int vb_http_server_unlisten(vb_http_server_t *s, int tag);

/* Starts closing every listener and connection (pending detaches report
 * fd -1). The loop must then run until those handles are closed before
 * vb_http_server_destroy(). */
void vb_http_server_close(vb_http_server_t *s);

/* Frees a closed server; accepts NULL. */
void vb_http_server_destroy(vb_http_server_t *s);

/* ---- helpers ---- */

/* First header named `name` (case-insensitive), or NULL. */
const char *vb_http_req_header(const vb_http_req_t *r, const char *name);

/* True when the comma-separated header `value` holds `token`
 * (case-insensitive), e.g. Connection: keep-alive, Upgrade. */
bool vb_http_has_token(const char *value, const char *token);

/* Standard reason phrase of a status ("Not Found"); "Unknown" otherwise. */
const char *vb_http_status_text(int status);

#endif
