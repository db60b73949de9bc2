/* SPDX-License-Identifier: MIT */
/*
 * Plain TCP implementation of the byte-transport seam (net/transport.h)
 * over a libuv uv_tcp_t: adopting an already connected socket (the Twilio
 * stream hand-off) or connecting out (clients, tests, the simulator).
 *
 * All functions run on the thread that owns `loop`.
 */
#ifndef VB_NET_TCP_H
#define VB_NET_TCP_H

#include <stdint.h>

#include <uv.h>

#include "net/transport.h"

/* Wraps a connected socket `fd` (ownership taken: it is closed by
 * vb_transport_close, or here on error). Reading starts when a handler is
 * set. Returns 0 and *out, VB_EINVAL (bad fd), VB_ENOMEM, VB_EIO. */
int vb_tcp_adopt(uv_loop_t *loop, int fd, vb_transport_t **out);

/* Starts resolving `host` and connecting to `port`. Writes issued before
 * the connection is up are queued. Completion is reported to the handler:
 * VB_TRANSPORT_CONNECTED, or VB_TRANSPORT_ERROR with VB_ECONNREFUSED,
 * VB_ETIMEDOUT, VB_ENOENT (name not found), VB_EIO. Returns 0 and *out,
 * VB_EINVAL, VB_ENOMEM. `host` is copied. */
int vb_tcp_connect(uv_loop_t *loop, const char *host, uint16_t port,
                   vb_transport_t **out);

/* Upper bound for bytes queued in one transport; writes beyond it fail
 * with VB_ENOSPC (a peer that stopped reading must not eat all memory). */
#define VB_TCP_MAX_QUEUED (16u * 1024u * 1024u)

/* TCP keepalive on every connection (adopted or connected): first probe
 * after IDLE_S seconds of silence, then every INTVL_S, dead after CNT
 * unanswered probes (30 s in all). */
#define VB_TCP_KEEPALIVE_IDLE_S  15
#define VB_TCP_KEEPALIVE_INTVL_S 5
#define VB_TCP_KEEPALIVE_CNT     3

#endif
