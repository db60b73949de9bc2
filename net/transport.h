/* SPDX-License-Identifier: MIT */
/*
 * The byte-transport seam: a small vtable that moves bytes over one
 * connection, so protocol code (WebSocket glue, HTTP clients) runs unchanged
 * over plain TCP (net/tcp.c here) or TLS (net/tls.c), and over a fake in
 * tests.
 *
 * DESIGN. A transport lives on one libuv loop and is touched only by the
 * thread that runs that loop. The upper layer installs a handler (read and
 * event callbacks plus a user pointer) with vb_transport_set_handler() and
 * drives the connection through the ops: write (copies the bytes, never
 * blocks: unsent bytes queue in the transport and vb_transport_pending()
 * reports them), read start/stop (flow control: a consumer whose output
 * ring is full stops reading and TCP pushes back), shutdown (graceful: queued
 * bytes are flushed, then the write side is closed; reading goes on until
 * EOF) and close (final: the connection is dropped and the object frees
 * itself, asynchronously for libuv handles; no callback fires afterwards, so
 * the upper layer may free its own state right after calling it).
 * Implementations embed vb_transport_t as their first member.
 */
#ifndef VB_NET_TRANSPORT_H
#define VB_NET_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

typedef struct vb_transport vb_transport_t;

typedef enum vb_transport_event {
    /* An outgoing connection (and, for TLS, its handshake) is established;
     * writes issued before this were queued and are now being sent. */
    VB_TRANSPORT_CONNECTED,
    /* The peer closed its write side; no more reads will arrive. */
    VB_TRANSPORT_EOF,
    /* The connection failed: `err` is a VB_E* code (VB_ECONNREFUSED,
     * VB_ETIMEDOUT, VB_EIO, VB_ETLS, VB_ECERT, ...). No more reads arrive;
     * the upper layer should call close. */
    VB_TRANSPORT_ERROR,
    /* The write queue became empty (all bytes handed to the kernel). */
    VB_TRANSPORT_DRAINED,
} vb_transport_event_t;

/* Called with bytes read from the peer. `data` is valid only during the call.
 * The callback may call any op, including close (then it must not touch `t`
 * afterwards). */
typedef void (*vb_transport_read_cb)(vb_transport_t *t, const uint8_t *data,
                                     size_t len, void *ud);
/* Called for the events above; `err` is 0 except for VB_TRANSPORT_ERROR. The
 * callback may call close. */
typedef void (*vb_transport_event_cb)(vb_transport_t *t,
                                      vb_transport_event_t ev, int err,
                                      void *ud);

typedef struct vb_transport_ops {
    /* Queues `len` bytes (copied) for sending. Returns 0, VB_ECLOSED after
     * shutdown/close or an error, VB_ENOSPC (the queue would pass
     * VB_TCP_MAX_QUEUED), VB_ENOMEM. */
    int (*write)(vb_transport_t *t, const void *data, size_t len);
    /* Starts/stops delivering reads. A new transport starts reading as soon
     * as a handler is set. read_start returns 0, VB_ECLOSED, or VB_EINVAL /
     * VB_ENOMEM / VB_EIO (libuv refused, translated); read_stop returns 0. */
    int (*read_start)(vb_transport_t *t);
    int (*read_stop)(vb_transport_t *t);
    /* Flushes queued bytes, then closes the write side (TCP FIN, TLS
     * close_notify + FIN). Reads continue until EOF. Idempotent. */
    void (*shutdown)(vb_transport_t *t);
    /* Ends the connection and frees the transport; no callback fires
     * afterwards. Without a prior shutdown the connection is dropped at
     * once and queued bytes are lost. After shutdown, the queued bytes are
     * still flushed and the write side closed (bounded by a linger time of
     * a few seconds) before the socket is closed. */
    void (*close)(vb_transport_t *t);
    /* Bytes queued and not yet handed to the kernel. */
    size_t (*pending)(const vb_transport_t *t);
    /* Peer address as text ("127.0.0.1:5555") into buf; 0 or VB_E*. */
    int (*peer_name)(const vb_transport_t *t, char *buf, size_t cap);
} vb_transport_ops_t;

struct vb_transport {
    const vb_transport_ops_t *ops;
    vb_transport_read_cb _on_read;
    vb_transport_event_cb _on_event;
    void *_ud;
};

/* Installs the upper layer's callbacks (either may be NULL; replaces any
 * previous handler) and starts reading: a transport delivers no bytes before
 * a handler is set. Returns what read_start returns. Loop thread. */
static inline int vb_transport_set_handler(vb_transport_t *t,
                                           vb_transport_read_cb on_read,
                                           vb_transport_event_cb on_event,
                                           void *ud)
{
    t->_on_read = on_read;
    t->_on_event = on_event;
    t->_ud = ud;
    return t->ops->read_start(t);
}

/* Thin wrappers over the ops; see vb_transport_ops_t. Loop thread. */
static inline int vb_transport_write(vb_transport_t *t, const void *data,
                                     size_t len)
{
    return t->ops->write(t, data, len);
}
static inline int vb_transport_read_start(vb_transport_t *t)
{
    return t->ops->read_start(t);
}
static inline int vb_transport_read_stop(vb_transport_t *t)
{
    return t->ops->read_stop(t);
}
static inline void vb_transport_shutdown(vb_transport_t *t)
{
    t->ops->shutdown(t);
}
/* Accepts NULL. */
static inline void vb_transport_close(vb_transport_t *t)
{
    if (t != NULL)
        t->ops->close(t);
}
static inline size_t vb_transport_pending(const vb_transport_t *t)
{
    return t->ops->pending(t);
}
static inline int vb_transport_peer_name(const vb_transport_t *t, char *buf,
                                         size_t cap)
{
    return t->ops->peer_name(t, buf, cap);
}

/* For implementations: deliver to the handler (no-op when none is set). */
static inline void vb_transport_emit_read(vb_transport_t *t,
                                          const uint8_t *data, size_t len)
{
    if (t->_on_read != NULL)
        t->_on_read(t, data, len, t->_ud);
}
static inline void vb_transport_emit_event(vb_transport_t *t,
                                           vb_transport_event_t ev, int err)
{
    if (t->_on_event != NULL)
        t->_on_event(t, ev, err, t->_ud);
}

#endif
