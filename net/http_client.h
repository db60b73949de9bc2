/* SPDX-License-Identifier: MIT */
/*
 * An asynchronous HTTP/1.1 client on one libuv loop: http:// and https://
 * (net/tls.h, verified against the configured CA bundle), responses parsed
 * by llhttp (Content-Length, chunked, or up to EOF), keep-alive connections
 * pooled per scheme, host and port, a whole-request time limit, a cap on
 * the response body, and a cancel handle. It is what tool calls, the
 * assistant request and the post-call report use; it never blocks the loop.
 *
 * DESIGN. A client owns a pool of idle connections. A request takes an
 * idle connection to the same scheme://host:port if one is there (the
 * newest first), else opens a new one; requests in flight at once each have
 * their own connection. The request is written once, the response head and
 * body are parsed as bytes arrive, and at the end of a response the
 * connection goes back to the pool unless either side said
 * `Connection: close`, the response ended at EOF, or the pool for that host
 * already holds `max_idle_per_host` connections. An idle connection is
 * closed after `idle_timeout_ms`, or at once when the server closes it or
 * sends anything unasked. A request that went out on a reused connection
 * which then closed before any byte of the response (the server timed the
 * idle connection out as the request left) is sent once more on a new
 * connection, but only for the methods HTTP calls idempotent (GET, HEAD,
 * PUT, DELETE, OPTIONS): a POST is never sent twice, it fails with
 * VB_ECLOSED.
 *
 * Every request ends in exactly one callback, later (never from inside
 * vb_http_client_request), unless it is cancelled: vb_http_cancel() closes
 * the request's connection (it never goes back to the pool) and the
 * callback is NOT called. Destroying the client cancels every request in
 * flight the same way.
 *
 * Limits (defaults in brackets): whole request, connect to the last body
 * byte, `timeout_ms` [10000] (VB_ETIMEDOUT); response body
 * `max_body_bytes` [1 MiB] (beyond it VB_EMSGSIZE, connection closed);
 * response head 64 KiB (VB_EMSGSIZE); idle connections per host
 * `max_idle_per_host` [4], closed after `idle_timeout_ms` [4000] (below the
 * 5 s keep-alive timeout of common servers, so the server rarely closes
 * first); request head at most 16 KiB.
 *
 * Threads: a client and its requests belong to the thread that runs the
 * loop; none of this may be called from another thread.
 */
#ifndef VB_NET_HTTP_CLIENT_H
#define VB_NET_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/tls.h"

#define VB_HTTP_CLIENT_DEFAULT_TIMEOUT_MS 10000u
#define VB_HTTP_CLIENT_DEFAULT_MAX_BODY   (1024u * 1024u)
#define VB_HTTP_CLIENT_DEFAULT_MAX_IDLE   4u
#define VB_HTTP_CLIENT_DEFAULT_IDLE_MS    4000u
#define VB_HTTP_CLIENT_MAX_HEAD           (64u * 1024u)
#define VB_HTTP_CLIENT_MAX_REQUEST_HEAD   (16u * 1024u)
#define VB_HTTP_CLIENT_MAX_CONTENT_TYPE   128u

typedef struct vb_http_client vb_http_client_t;
typedef struct vb_http_call vb_http_call_t;

typedef struct vb_http_client_config {
    /* Client TLS configuration for https:// URLs (borrowed; must outlive
     * the client). NULL: https:// requests fail with VB_ECONFIG. */
    vb_tls_config_t *tls;
    uint32_t max_idle_per_host; /* 0: default; idle connections kept */
    uint32_t idle_timeout_ms;   /* 0: default */
    size_t max_body_bytes;      /* 0: default; response body cap */
    /* Bodies are read and dropped, never over the cap (the response's
     * body is empty): for callers that need only the status. */
    bool discard_body;
} vb_http_client_config_t;

typedef struct vb_http_header {
    const char *name;
    const char *value;
} vb_http_header_t;

typedef struct vb_http_request {
    const char *method; /* "POST", "GET", ... (letters only) */
    const char *url;    /* http://host[:port]/path?query or https:// */
    /* Extra header fields (no CR or LF in either part; the name is a
     * token). Host, Content-Length, User-Agent and Connection are set by
     * the client. */
    const vb_http_header_t *headers;
    size_t n_headers;
    const void *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    uint32_t timeout_ms; /* 0: VB_HTTP_CLIENT_DEFAULT_TIMEOUT_MS */
    const char *log_id;  /* call id for log lines, or NULL */
} vb_http_request_t;

typedef struct vb_http_response {
    int status;       /* 200..999 (1xx interim answers are skipped) */
    const char *body; /* NUL-terminated (the NUL is not counted) */
    size_t body_len;
    /* The Content-Type value ("" when none; cut at
     * VB_HTTP_CLIENT_MAX_CONTENT_TYPE - 1 bytes). */
    const char *content_type;
} vb_http_response_t;

/* `err` 0: `resp` holds the response, whatever its status, valid only
 * during the call. Otherwise `resp` is NULL and `err` is VB_ETIMEDOUT,
 * VB_ECONNREFUSED, VB_ENOENT (host not found), VB_ECERT, VB_ETLS, VB_EIO,
 * VB_ECLOSED (the server closed before the response was complete),
 * VB_EPROTO (malformed response), VB_EMSGSIZE (body over the cap, or head
 * over VB_HTTP_CLIENT_MAX_HEAD). The handle is invalid once the callback
 * returns. The callback may start new requests; it must not destroy the
 * client. */
typedef void (*vb_http_cb)(int err, const vb_http_response_t *resp, void *ud);

/* Creates a client on `loop` (cfg may be NULL: all defaults, no https).
 * Returns 0 and *out, VB_EINVAL, VB_ENOMEM. Loop thread. */
int vb_http_client_create(uv_loop_t *loop, const vb_http_client_config_t *cfg,
                          vb_http_client_t **out);

/* Cancels every request in flight (no callbacks), closes the idle
 * connections and frees the client; handles still closing free
 * themselves on the loop. Accepts NULL. Not from inside a callback. */
void vb_http_client_destroy(vb_http_client_t *c);

/* Starts `req` (every string and the body are copied). `cb` runs exactly
 * once, later, unless the request is cancelled. `*handle` (may be NULL if
 * not wanted) is valid until the callback returns or vb_http_cancel().
 * Errors (nothing started, no callback): VB_EINVAL (bad URL, method or
 * header, NULL argument), VB_ECONFIG (https:// without a TLS
 * configuration), VB_EMSGSIZE (request head too long), VB_ENOMEM, VB_ETLS
 * (TLS session setup). Loop thread. */
int vb_http_client_request(vb_http_client_t *c, const vb_http_request_t *req,
                           vb_http_cb cb, void *ud, vb_http_call_t **handle);

/* Abandons a request: its connection is closed and its callback is not
 * called. Accepts NULL. Must not be called after the callback ran. */
void vb_http_cancel(vb_http_call_t *h);

/* ---- for tests and tools ---- */

/* Connections opened by the client since it was created (a reused one is
 * not counted again), and idle connections in its pool now. */
uint64_t vb_http_client_connections_opened(const vb_http_client_t *c);
size_t vb_http_client_idle_count(const vb_http_client_t *c);

/* Runs `len` bytes through the response parser as if they arrived in
 * pieces of `chunk` bytes (0: at once) and the server then closed, with a
 * body cap of `max_body`. Returns the status, or the error a request would
 * get (VB_EPROTO, VB_ECLOSED, VB_EMSGSIZE); *body_len (may be NULL) gets
 * the body length. Any thread. For the fuzz target and tests. */
int vb_http_client_parse_response(const char *data, size_t len, size_t chunk,
                                  size_t max_body, size_t *body_len);

#endif
