/* SPDX-License-Identifier: MIT */
/*
 * WebSocket endpoint (RFC 6455) built on wslay: server and client roles,
 * fragmented messages, ping/pong, the close handshake with codes and
 * reasons, text vs binary, a maximum message size and UTF-8 checking of text
 * messages; plus the opening-handshake helpers (accept key, client request,
 * response validation) and a URL splitter.
 *
 * DESIGN. The core is sans-I/O: bytes from the peer go in with
 * vb_ws_feed(), complete messages come out through on_message, and bytes to
 * send come out through on_output. That makes every framing case testable
 * with scripted byte feeds. vb_ws_attach() / vb_ws_connect() glue the same
 * core to a vb_transport_t (net/transport.h) on a libuv loop: reads feed the
 * core, output goes to the transport, and the close handshake ends with the
 * transport shut down and closed (server: FIN after the close frame; both:
 * a close timeout so a silent peer cannot pin the connection).
 *
 * State machine: OPEN -> CLOSING (a close frame sent or received) -> CLOSED
 * (close frames both ways, or a fatal error, or EOF). on_close fires exactly
 * once, on entering CLOSED; the endpoint must still be destroyed by its
 * owner, which may do that from inside on_close.
 *
 * Protocol violations by the peer are answered the way RFC 6455 asks:
 * 1002 for framing errors (unmasked client frame, bad close code, fragmented
 * control frame, reserved bits), 1007 for invalid UTF-8 in a text message or
 * close reason, 1009 for a message over the size limit. The endpoint sends
 * the close frame itself and reports the code in vb_ws_close_info_t.
 *
 * Output back-pressure (transport glue): when the endpoint's unsent output
 * (vb_ws_pending(): messages queued in the endpoint plus the transport's
 * queue, pongs and close frames included) passes max_pending_out, the
 * endpoint stops reading from the transport at the next frame boundary, so
 * a peer that sends but never reads (a ping flood, or messages whose
 * handling makes output) cannot grow it further; the bytes already read
 * and not yet parsed are held (at most one transport read) and parsed, in
 * order, once reading resumes. Reading resumes when the transport reports
 * its queue drained (the low-water mark: every queued byte handed to the
 * kernel). Sending is never refused because of the cap: callers that
 * produce output on their own keep their own limits (see vb_ws_pending()).
 * This pause and the caller's vb_ws_read_pause() are independent: the
 * transport reads only when neither wants it paused.
 *
 * Threads: an endpoint is used by one thread only (the one running its
 * transport's loop, or any single thread in sans-I/O use).
 */
#ifndef VB_NET_WS_H
#define VB_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/transport.h"

typedef struct vb_ws vb_ws_t;

typedef enum vb_ws_role {
    VB_WS_SERVER,
    VB_WS_CLIENT,
} vb_ws_role_t;

typedef enum vb_ws_state {
    VB_WS_CONNECTING, /* client: opening handshake under way */
    VB_WS_OPEN,
    VB_WS_CLOSING, /* a close frame has been sent or received */
    VB_WS_CLOSED,
} vb_ws_state_t;

/* Close codes (RFC 6455 §7.4.1). */
#define VB_WS_CLOSE_NORMAL          1000
#define VB_WS_CLOSE_GOING_AWAY      1001
#define VB_WS_CLOSE_PROTOCOL_ERROR  1002
#define VB_WS_CLOSE_UNSUPPORTED     1003
#define VB_WS_CLOSE_NO_STATUS       1005 /* never sent; "none received" */
#define VB_WS_CLOSE_ABNORMAL        1006 /* never sent; "no close frame" */
#define VB_WS_CLOSE_INVALID_PAYLOAD 1007
#define VB_WS_CLOSE_POLICY          1008
#define VB_WS_CLOSE_TOO_BIG         1009
#define VB_WS_CLOSE_INTERNAL        1011

#define VB_WS_DEFAULT_MAX_MESSAGE (64u * 1024u)
/* Default unsent-output cap of the transport glue (bytes); see
 * vb_ws_config_t.max_pending_out. 512 KiB is about 40 s of Twilio outbound
 * media (~12.5 kB/s) and 11 s of Gemini input audio (~45 kB/s), four times
 * the few seconds a Gemini reconnect flushes at once; a healthy connection
 * whose peer reads never comes near it. */
#define VB_WS_DEFAULT_MAX_PENDING_OUT (512u * 1024u)
/* Largest amount of read-but-unparsed input held while back-pressure has
 * reading stopped; a transport delivers at most one read (64 KiB for TCP,
 * 16 KiB for TLS) after read_stop, so this is never reached by a conforming
 * transport. Past it the endpoint fails with 1011 "input overflow". */
#define VB_WS_MAX_HELD_INPUT (256u * 1024u)
#define VB_WS_REASON_MAX     123 /* bytes; a close payload is <= 125 */
#define VB_WS_KEY_LEN        24  /* base64 of 16 random bytes */
#define VB_WS_ACCEPT_LEN     28  /* base64 of a SHA-1 digest */

/* How the connection ended; passed to on_close. */
typedef struct vb_ws_close_info {
    /* Code of the close frame received from the peer; VB_WS_CLOSE_NO_STATUS
     * if it carried none, VB_WS_CLOSE_ABNORMAL if none arrived. */
    uint16_t code_received;
    /* Code of the close frame we sent; VB_WS_CLOSE_ABNORMAL if none. */
    uint16_t code_sent;
    /* True if the peer started the close handshake. */
    bool by_peer;
    /* 0, or why the connection failed: VB_EPROTO (peer broke the
     * protocol; code_sent says how), VB_EMSGSIZE (message too big),
     * VB_ECLOSED (EOF without a close handshake), VB_ETIMEDOUT (close
     * timeout), a transport error (VB_EIO, VB_ETLS, ...), or for a client
     * handshake VB_EPROTO / VB_EAUTH (HTTP 401/403). */
    int err;
    /* Client handshake only: the HTTP status received, 0 if none. */
    int http_status;
    /* Reason text of the received close frame (or, when we closed because
     * of an error, of the one we sent), NUL-terminated. */
    char reason[VB_WS_REASON_MAX + 1];
} vb_ws_close_info_t;

typedef struct vb_ws_callbacks {
    /* A complete message: `text` is true for a text message (already checked
     * to be valid UTF-8). `data` is valid during the call only. May call
     * any vb_ws_* function, including vb_ws_destroy() (then it must not
     * touch `ws` afterwards). Required. */
    void (*on_message)(vb_ws_t *ws, bool text, const uint8_t *data, size_t len,
                       void *ud);
    /* The endpoint reached CLOSED. Called once. Optional. */
    void (*on_close)(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud);
    /* Client (vb_ws_connect) only: the opening handshake succeeded and
     * messages may be sent. Optional. */
    void (*on_open)(vb_ws_t *ws, void *ud);
    /* A pong arrived (reply to vb_ws_send_ping or unsolicited). Optional. */
    void (*on_pong)(vb_ws_t *ws, const uint8_t *data, size_t len, void *ud);
    /* Sans-I/O only (no transport): bytes to send to the peer, valid during
     * the call. Return 0, or a negative VB_E* to fail the connection. */
    int (*on_output)(vb_ws_t *ws, const uint8_t *data, size_t len, void *ud);
    /* Transport glue only: the transport's write queue became empty (for
     * output flow control with vb_ws_pending()). Optional. */
    void (*on_drain)(vb_ws_t *ws, void *ud);
} vb_ws_callbacks_t;

typedef struct vb_ws_config {
    vb_ws_role_t role;
    /* Largest message accepted, after reassembly; 0 means
     * VB_WS_DEFAULT_MAX_MESSAGE. Larger ones close with 1009. */
    size_t max_message;
    /* Transport glue only: how long to wait for the peer's close frame /
     * EOF after we sent ours, ms; 0 means 5000. */
    uint32_t close_timeout_ms;
    /* Transport glue only: client opening-handshake timeout, ms; 0 means
     * 10000. */
    uint32_t handshake_timeout_ms;
    /* Transport glue only: unsent output (vb_ws_pending()) above which the
     * endpoint stops reading until the transport drains; 0 means
     * VB_WS_DEFAULT_MAX_PENDING_OUT. vb_ws_pending() stays within this
     * plus the output of one incoming frame (a pong, or what on_message
     * sent) plus what the owner sends on its own. */
    size_t max_pending_out;
    /* Optional call id or connection label for log lines; copied. */
    const char *log_id;
} vb_ws_config_t;

/* Frees the endpoint and closes its transport if it has one (no close frame
 * is sent: call vb_ws_close() first for a clean close). Accepts NULL. Safe
 * inside any callback of this endpoint. */
void vb_ws_destroy(vb_ws_t *ws);

/* Sans-I/O: processes bytes from the peer (any chunking). Messages are
 * delivered through on_message, replies (pong, close) through on_output.
 * Returns 0 (also when more bytes are needed), VB_ECLOSED when the endpoint
 * is already CLOSED, or another VB_E* when the endpoint just failed (then
 * on_close has fired). */
int vb_ws_feed(vb_ws_t *ws, const uint8_t *data, size_t len);

/* Sans-I/O: the peer's byte stream ended (EOF). Moves to CLOSED with
 * err VB_ECLOSED unless the close handshake was complete. */
void vb_ws_feed_eof(vb_ws_t *ws);

/* Queues a message (the bytes are copied) and sends it at once as far as
 * the transport allows. Text must be valid UTF-8 (not checked here).
 * Returns 0, VB_EAGAIN (client handshake not done yet), VB_ECLOSED if a
 * close frame was already sent or received or output failed before,
 * VB_EMSGSIZE (> 2^31 bytes), VB_ENOMEM, VB_ESYS (no randomness for the
 * client's mask), or an output error (the transport's write or
 * on_output's return). */
int vb_ws_send_text(vb_ws_t *ws, const char *data, size_t len);
int vb_ws_send_binary(vb_ws_t *ws, const void *data, size_t len);
/* Ping with up to 125 bytes of payload. Returns 0, VB_EINVAL (longer),
 * VB_EAGAIN (client handshake not done yet), VB_ECLOSED, VB_ENOMEM. */
int vb_ws_send_ping(vb_ws_t *ws, const void *data, size_t len);

/* Starts the close handshake with `code` (1000..4999 except the reserved
 * 1004-1006, 1015; VB_EINVAL otherwise) and a reason (NULL or text, cut to
 * VB_WS_REASON_MAX bytes). Messages queued before it are sent first.
 * Returns 0, VB_ECLOSED if a close frame was already sent (or the endpoint
 * is CLOSED), VB_ENOMEM. */
int vb_ws_close(vb_ws_t *ws, uint16_t code, const char *reason);

vb_ws_state_t vb_ws_state(const vb_ws_t *ws);

/* Changes the largest message accepted from now on (e.g. raised once the
 * peer has authenticated). Returns 0, or VB_EINVAL for 0 or a limit below
 * the message being reassembled. Loop thread. */
int vb_ws_set_max_message(vb_ws_t *ws, size_t max);

/* Bytes accepted for sending but not yet written out: messages queued in
 * the endpoint plus the transport's queue. For output flow control. */
size_t vb_ws_pending(const vb_ws_t *ws);

/* Changes the back-pressure cap (0: VB_WS_DEFAULT_MAX_PENDING_OUT), e.g. a
 * small budget while a connection is unauthenticated and the normal one
 * after. Takes effect at the next frame boundary. */
void vb_ws_set_max_pending_out(vb_ws_t *ws, size_t max_pending_out);

/* ---- transport glue (loop thread) ---- */

/* Server role over an established connection whose opening handshake is
 * done (e.g. by the HTTP ingress). Takes ownership of `t` (closed by
 * vb_ws_destroy or when the endpoint closes); `pre`/`pre_len` are bytes
 * already read past the handshake (copied, processed first, may be NULL/0).
 * cfg->role must be VB_WS_SERVER; on_output must be NULL. Returns 0 and
 * *out (state OPEN), VB_EINVAL, VB_ENOMEM; on error `t` is closed.
 * Callbacks may fire from inside this call if `pre` holds messages; if one
 * of them destroys the endpoint, this returns VB_ECLOSED with *out NULL. */
int vb_ws_attach(uv_loop_t *loop, vb_transport_t *t, const vb_ws_config_t *cfg,
                 const vb_ws_callbacks_t *cb, void *ud, const uint8_t *pre,
                 size_t pre_len, vb_ws_t **out);

/* Client role: sends the opening handshake on `t` (which may still be
 * connecting; writes queue), for `url` ("ws://host[:port]/path?query" or
 * wss://...; Host and request target come from it) with extra header lines
 * `headers` (NULL or a NULL-terminated array of "Name: value" strings, no
 * CRLF, e.g. "x-goog-api-key: ..."). Takes ownership of `t`. on_open fires
 * after a valid 101 response; a failure fires on_close with err set and
 * http_status. Returns 0 and *out (state CONNECTING), VB_EINVAL (bad URL,
 * header or argument), VB_EMSGSIZE (a URL part too long), VB_ENOSPC (the
 * request head over 16 KiB), VB_ESYS (no randomness for the key),
 * VB_ENOMEM, or the transport's write error; on error `t` is closed. */
int vb_ws_connect(uv_loop_t *loop, vb_transport_t *t, const vb_ws_config_t *cfg,
                  const vb_ws_callbacks_t *cb, void *ud, const char *url,
                  const char *const *headers, vb_ws_t **out);

/* Transport glue: stops (`pause` true) or resumes reading from the
 * transport, for input flow control. Bytes already read are still
 * processed and their messages delivered. Independent of output
 * back-pressure: resuming here while back-pressure holds reading stopped
 * only records the wish, and the transport reads again once both allow.
 * Returns 0, VB_EINVAL (no transport) or the transport's error. Loop
 * thread. */
int vb_ws_read_pause(vb_ws_t *ws, bool pause);

/* ---- handshake helpers (pure functions, any thread) ---- */

/* A ws:// or wss:// URL split into parts (all NUL-terminated). */
typedef struct vb_ws_url {
    bool secure;        /* wss */
    char host[256];     /* without brackets for IPv6 literals */
    uint16_t port;      /* explicit or 80 / 443 */
    bool port_explicit; /* the URL named a port */
    char target[2048];  /* path and query, "/" when empty */
} vb_ws_url_t;

/* Parses `url`. Returns 0, VB_EINVAL (not ws/wss, no host, bad port,
 * fragment, control characters) or VB_EMSGSIZE (a part too long). */
int vb_ws_url_parse(const char *url, vb_ws_url_t *out);

/* Parses an http:// or https:// URL with the same grammar (secure for
 * https, default ports 80 / 443): the one splitter for the REST client and
 * vb-sim's webhook. Returns 0, VB_EINVAL (not http/https, or what
 * vb_ws_url_parse refuses) or VB_EMSGSIZE (a part too long). */
int vb_ws_url_parse_http(const char *url, vb_ws_url_t *out);

/* The Sec-WebSocket-Accept value for a client key: base64(SHA-1(key +
 * GUID)), NUL-terminated in out (>= VB_WS_ACCEPT_LEN + 1 bytes); the one
 * copy both ends use (the client's check, ingress's upgrade, the fake
 * Gemini). Any thread. Returns 0, VB_EINVAL (key NULL or not 24 base64
 * chars decoding to 16 bytes, out NULL or too small) or VB_EIO (SHA-1
 * failed). */
int vb_ws_accept_key(const char *client_key, char *out, size_t cap);

/* A fresh random Sec-WebSocket-Key into out (>= VB_WS_KEY_LEN + 1). Returns
 * 0, VB_EINVAL (out NULL or too small) or VB_ESYS (no randomness). */
int vb_ws_client_key(char *out, size_t cap);

/* Writes the client's opening request (GET target HTTP/1.1, Host with the
 * port when not default, Upgrade, Connection, Sec-WebSocket-Key,
 * Sec-WebSocket-Version: 13, then `headers`, then CRLF) into buf; *len gets
 * its length (NUL-terminated too). Returns 0, VB_EINVAL (a NULL argument,
 * or a header without ':' or with CR/LF), VB_ENOSPC (buf too small). */
int vb_ws_client_request(const vb_ws_url_t *url, const char *key,
                         const char *const *headers, char *buf, size_t cap,
                         size_t *len);

/* Checks the server's response to a request made with `key`. `buf` holds
 * the bytes received so far (parsed afresh by llhttp on each call, so a
 * head split over reads is fine). Header names match in any case, and
 * repeated Upgrade or Connection headers count as one list. Returns 0
 * with *consumed = length of the response head (bytes after it are
 * WebSocket frames); VB_EAGAIN when the head is incomplete; VB_EMSGSIZE
 * when the head exceeds 16 KiB; VB_EAUTH for status 401/403; VB_EPROTO
 * for anything else wrong (not HTTP/1.1, a malformed head, status not
 * 101, missing/bad Upgrade, Connection or Sec-WebSocket-Accept, two
 * Sec-WebSocket-Accept headers, an extension or subprotocol we did not
 * ask for); VB_EINVAL for a NULL buf or key, or a key that is not a
 * valid Sec-WebSocket-Key. *http_status gets the status once the status
 * line is complete (else 0); may be NULL. */
int vb_ws_client_check_response(const char *buf, size_t len, const char *key,
                                size_t *consumed, int *http_status);

/* True if `data` is valid UTF-8 (RFC 3629: no overlongs, surrogates or
 * code points above U+10FFFF). */
bool vb_ws_utf8_valid(const uint8_t *data, size_t len);

/* True if `code` may appear in a close frame on the wire. */
bool vb_ws_close_code_valid(uint16_t code);

/* ---- for tests and tools ---- */
/* Used by tests and the WebSocket fuzz target (the sans-I/O endpoint, fed
 * by hand), not by the server, which attaches to transports; they stay
 * here because the endpoint is opaque. */

/* Creates a sans-I/O endpoint in state OPEN (callbacks are copied; `cb`
 * may live on the stack). Output goes to cb->on_output. Returns 0 and
 * *out, VB_EINVAL (missing on_message/on_output, bad role), VB_ENOMEM. Any
 * thread; the endpoint is then used by that thread only. */
int vb_ws_create(const vb_ws_config_t *cfg, const vb_ws_callbacks_t *cb,
                 void *ud, vb_ws_t **out);

/* True while output back-pressure has reading stopped (transport glue). */
bool vb_ws_out_stalled(const vb_ws_t *ws);

/* Counters since creation. */
typedef struct vb_ws_stats {
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out, pings_in;
    /* Times output back-pressure stopped reading. */
    uint64_t out_stalls;
} vb_ws_stats_t;
void vb_ws_get_stats(const vb_ws_t *ws, vb_ws_stats_t *out);

#endif
