/* SPDX-License-Identifier: MIT */
/*
 * TLS (mbedTLS 2.28) as a byte transport (net/transport.h), client and
 * server roles, layered over another transport (normally net/tcp.c), so the
 * WebSocket glue runs unchanged over ws:// and wss://.
 *
 * DESIGN. mbedTLS never touches a socket: its send callback writes into the
 * lower transport (which queues and never blocks) and its receive callback
 * reads from an in-memory buffer filled by the lower transport's read
 * callback; an empty buffer answers WANT_READ. So the handshake is
 * non-blocking and advances each time bytes arrive. States: HANDSHAKE ->
 * OPEN -> (close_notify / EOF) or FAILED. Plaintext written during the
 * handshake is queued and sent once it completes; CONNECTED is reported to
 * the upper layer only after a verified handshake. A client verifies the
 * server's chain against the configured CA bundle (the system bundle by
 * default) and the expected host name (also sent as SNI), and fails closed:
 * any verification failure ends the connection with VB_ECERT and a log line
 * naming what failed (untrusted, expired, wrong name, ...). A handshake
 * timer bounds connect + handshake.
 *
 * Freeing is deferred: close() detaches the handler and closes the lower
 * transport at once, but the object (and the mbedTLS context) is freed from
 * a libuv close callback, so a close issued from inside any callback is
 * safe.
 *
 * Threads: a config and its transports belong to the thread that runs the
 * loop they are used on (mbedTLS's RNG is not shared between threads).
 */
#ifndef VB_NET_TLS_H
#define VB_NET_TLS_H

#include <stdint.h>

#include <uv.h>

#include "net/transport.h"

#define VB_TLS_SYSTEM_CA_FILE       "/etc/ssl/certs/ca-certificates.crt"
#define VB_TLS_DEFAULT_HANDSHAKE_MS 10000u
#define VB_TLS_MAX_BUFFERED_INPUT   (1024u * 1024u)
/* Unsent ciphertext above which the peer is no longer read until it takes
 * it (output TLS makes by itself, e.g. an alert per renegotiation request,
 * stays bounded). Above the WebSocket cap, which acts first for what the
 * application writes. */
#define VB_TLS_MAX_PENDING_OUTPUT (1024u * 1024u)

typedef struct vb_tls_config vb_tls_config_t;

/* Client configuration trusting the CAs in `ca_file` (PEM bundle; NULL or
 * "" means VB_TLS_SYSTEM_CA_FILE). Errors: VB_EINVAL (NULL out), VB_ENOENT
 * (file missing or unreadable), VB_ECERT (no usable certificate in it), VB_ETLS
 * (mbedTLS setup), VB_ENOMEM. Logs the cause. */
int vb_tls_config_client(const char *ca_file, vb_tls_config_t **out);

/* Server configuration presenting the PEM certificate chain `cert_file`
 * (leaf first) and its private key `key_file`. Errors: VB_EINVAL (NULL
 * argument), VB_ENOENT, VB_ECERT (unparsable certificate or key, or key not
 * matching), VB_ETLS, VB_ENOMEM. Logs the cause. */
int vb_tls_config_server(const char *cert_file, const char *key_file,
                         vb_tls_config_t **out);

/* Sets the handshake timeout (ms, > 0) for transports created afterwards.
 */
void vb_tls_config_set_handshake_timeout(vb_tls_config_t *c, uint32_t ms);

/* Drops the caller's reference; transports still open keep the config
 * alive until they are freed. Accepts NULL. Loop thread. */
void vb_tls_config_destroy(vb_tls_config_t *c);

/* Wraps `lower` (ownership taken, closed with the TLS transport or here on
 * error) and starts the handshake at once; bytes queue in `lower` if it is
 * still connecting. Client role (client config): `server_name` is the name
 * to send as SNI and to verify the certificate against (required). Server
 * role: `server_name` is ignored. `log_id` (NULL or a call id) is copied
 * for log lines. Returns 0 and *out, VB_EINVAL, VB_ENOMEM, VB_ETLS, or
 * what `lower`'s read_start returns (VB_ECLOSED, ...). Loop thread. */
int vb_tls_wrap(uv_loop_t *loop, vb_tls_config_t *cfg, vb_transport_t *lower,
                const char *server_name, const char *log_id,
                vb_transport_t **out);

/* Client: resolves `host` (uv_getaddrinfo), connects over TCP to `port` and
 * handshakes; `server_name` NULL means `host`. Completion is reported to the
 * handler as VB_TRANSPORT_CONNECTED, or VB_TRANSPORT_ERROR with VB_ECERT
 * (verification failed), VB_ETLS (handshake failed), VB_ETIMEDOUT, or the
 * TCP errors (VB_ECONNREFUSED, VB_ENOENT, VB_EIO). Returns 0 and *out,
 * VB_EINVAL, VB_ENOMEM, VB_ETLS (session setup). Loop thread. */
int vb_tls_connect(uv_loop_t *loop, vb_tls_config_t *cfg, const char *host,
                   uint16_t port, const char *server_name, const char *log_id,
                   vb_transport_t **out);

/* Short text for verification flags, most telling first: "expired", "not
 * yet valid", "wrong name", "untrusted", "revoked", "missing", "bad key
 * usage", "weak signature", "other"; "ok" for 0. Static string. */
const char *vb_tls_verify_reason(uint32_t flags);

/* ---- for tests and tools ---- */
/* Used by tests and the TLS fuzz target, not by the server; they stay
 * here because the transport and the configuration are opaque. */

/* The mbedTLS certificate verification flags of a client transport whose
 * handshake failed with VB_ECERT (0 otherwise). `t` must be a TLS
 * transport. */
uint32_t vb_tls_verify_flags(const vb_transport_t *t);

/* Replaces the random generator of `c` for transports created afterwards:
 * `f_rng(p_rng, buf, len)` fills `buf` and returns 0. Only for repeatable
 * runs (the TLS fuzz target replays recorded handshakes); a configuration
 * used for real connections keeps its CTR-DRBG. Loop thread, before any
 * transport uses `c`. */
void vb_tls_config_set_rng(vb_tls_config_t *c,
                           int (*f_rng)(void *, unsigned char *, size_t),
                           void *p_rng);

#endif
