/* SPDX-License-Identifier: MIT */
/*
 * A stage: one thread running one libuv loop that consumes channels
 * (core/chan.h) and produces into others (ARCHITECTURE.md §1). The three
 * lane stages (twilio-io, dsp, gemini) are each a vb_stage_t plus their
 * protocol logic; this file is the plumbing they used to carry three
 * copies of.
 *
 * DESIGN.
 * - Inputs: vb_stage_listen() adds a channel with a per-kind handler table.
 *   The doorbell drains every input round-robin, at most `budget` messages
 *   per input per pass, until all are empty or held. A handler returns
 *   false to hold its message (its output has no room): it stays in the
 *   ring and the retry timer tries again in 1 ms. A kind without a handler
 *   is a wiring bug: counted (vb_stage_unexpected_total{stage}) and
 *   dropped. `after_drain` (optional) runs after a pass that took any
 *   message: the place to write out what the pass gathered (one socket
 *   write for several frames).
 * - Outputs: vb_stage_produce() registers a channel this stage writes; at
 *   the end of every loop iteration (a prepare and a check handle) and
 *   after every drain pass, each output's doorbell is rung once for all the
 *   messages since, and spilled messages arm the retry timer. On stop,
 *   what the owner's on_stop pushed goes into the rings while they have
 *   room; anything still parked is logged.
 * - Timers: the retry timer runs only while an input is held or an output
 *   has spilled messages; the stage arms no periodic timer of its own.
 * - One contract: create (vb_stage_init) -> wire -> start -> stop (any
 *   number of times; joins) -> destroy (stops first; safe if never
 *   started). The owner's `on_stop` runs on the stage thread (or, if the
 *   thread never ran, on the destroying thread) to close its own handles;
 *   the loop then runs until every handle is closed.
 * - Deferred free: vb_stage_defer() runs a function after the current
 *   callbacks, at the end of the loop iteration (a connection freed
 *   outside the callback that closed it).
 * - Metrics: the stage thread owns one shard (st->shard), created before
 *   the loop runs.
 */
#ifndef VB_CORE_STAGE_H
#define VB_CORE_STAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/chan.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "core/thread.h"

#define VB_STAGE_MAX_INPUTS  4
#define VB_STAGE_MAX_OUTPUTS 4
#define VB_STAGE_BUDGET      64 /* messages per input per pass */

/* Handles one message; false holds it (retried later). */
typedef bool (*vb_stage_fn)(void *ud, const vb_msg_t *m);

typedef struct vb_stage_input {
    vb_chan_t *chan;
    vb_stage_fn on[VB_MSG_KIND_COUNT];
} vb_stage_input_t;

typedef struct vb_stage_later {
    void (*fn)(void *);
    void *arg;
} vb_stage_later_t;

typedef struct vb_stage {
    char name[16]; /* thread name: "vb-dsp-0" */
    uv_loop_t loop;
    uv_async_t bell, stop;
    uv_timer_t retry;
    uv_prepare_t prep;
    uv_check_t check;
    vb_thread_t thread;
    vb_metrics_t *metrics;
    vb_metrics_shard_t *shard; /* the stage thread's; NULL before start */
    void *ud;
    void (*on_stop)(void *ud);
    void (*after_drain)(void *ud); /* after a pass that took messages */
    vb_stage_input_t in[VB_STAGE_MAX_INPUTS];
    uint32_t nin;
    vb_chan_t *out[VB_STAGE_MAX_OUTPUTS];
    uint32_t nout;
    bool held; /* an input message is held */
    bool draining, closed, loop_ok;
    vb_stage_later_t *later;
    uint32_t nlater, later_cap;
    vb_metric_t m_unexpected, m_wakeups;
} vb_stage_t;

/* Sets up the loop and its handles (nothing started). `name` becomes the
 * thread name (at most 15 characters kept); `on_stop` (may be NULL) closes
 * the owner's handles. Returns 0, VB_EINVAL (NULL st, name or metrics),
 * VB_ESYS (loop), VB_ENOMEM or VB_ENOSPC (metrics). Main thread. */
int vb_stage_init(vb_stage_t *st, const char *name, vb_metrics_t *metrics,
                  void (*on_stop)(void *ud), void *ud);

/* This stage consumes `c`: `on` maps kinds to handlers (copied). Before
 * start. Returns 0 or VB_ENOSPC (too many inputs). */
int vb_stage_listen(vb_stage_t *st, vb_chan_t *c,
                    const vb_stage_fn on[VB_MSG_KIND_COUNT]);

/* This stage produces into `c` (its doorbells are batched here). Before
 * start. Returns 0 or VB_ENOSPC. */
int vb_stage_produce(vb_stage_t *st, vb_chan_t *c);

/* Starts the thread. Returns 0, VB_EBUSY or VB_ESYS. Main thread. */
int vb_stage_start(vb_stage_t *st);

/* Ends the loop and joins the thread (the owner's on_stop ran on it);
 * nothing if not running. Main thread. */
void vb_stage_stop(vb_stage_t *st);

/* Stops, closes what is left and frees the loop; accepts a zeroed stage.
 * The owner frees its own state after. Main thread. */
void vb_stage_destroy(vb_stage_t *st);

/* Drains the inputs now (the owner's own callbacks may call it after
 * freeing room, e.g. when a socket drained). Stage thread. */
void vb_stage_kick(vb_stage_t *st);

/* Runs fn(arg) at the end of this loop iteration. Returns 0 or VB_ENOMEM
 * (then fn has not been queued). Stage thread. */
int vb_stage_defer(vb_stage_t *st, void (*fn)(void *), void *arg);

/* Arms the retry timer (1 ms) if it is not running. Each tick moves
 * spilled messages on and drains the inputs again (a held message is
 * offered again); it stops once nothing is spilled or held. It runs no
 * owner code: an owner with work of its own arms its own timer. Stage
 * thread. */
void vb_stage_retry_soon(vb_stage_t *st);

/* Rings every output's doorbell now (work pushed outside the loop, e.g.
 * during stop). Stage thread. */
void vb_stage_flush(vb_stage_t *st);

#endif
