/* SPDX-License-Identifier: MIT */
/*
 * A channel: one SPSC ring of vb_msg_t between two threads, with everything
 * every producer and consumer used to write out by hand (ARCHITECTURE.md §2).
 *
 *   producer                                  consumer (a vb_stage_t)
 *   m = vb_chan_begin(c, kind, call, ...)     stage bell -> drain: per-kind
 *   ...fill m->data, m->len...                handler, ring-wait recorded,
 *   vb_chan_end(c, m)    (stamps t_enqueue)   budget per pass
 *   ...more messages...
 *   end of the producer's loop iteration: one doorbell for the batch
 *
 * DESIGN.
 * - Header stamping: vb_chan_begin() fills kind, flags, call, seq and
 *   t_origin; vb_chan_end() stamps t_enqueue and publishes.
 * - Doorbells are batched: vb_chan_end() only counts the push; the
 *   producing stage rings each of its channels once at the end of its
 *   loop iteration (vb_chan_flush(), called by core/stage.c from a
 *   prepare and a check handle, so no push is ever left unrung). A
 *   producer without a stage (the ingress, a test) rings at once.
 * - One back-pressure policy. A full ring is never a silent drop: the
 *   message goes to the channel's spill queue (bounded, `spill_max`
 *   messages, grown on demand), the channel counts vb_ring_full_total
 *   {ring} once per episode and calls the producer's pressure hook with
 *   `on` true (pause the sockets that feed it). The producing stage's
 *   retry timer moves spilled messages into the ring in order; when the
 *   spill is empty and the ring is at most half full, the hook is called
 *   with `on` false. Past `spill_max` vb_chan_begin() returns NULL for
 *   audio and the producer counts its own drop; control messages are
 *   still parked (never dropped). Producers that can leave their input
 *   where it is (the dsp stage) check vb_chan_room() first and never spill.
 * - Slots are sized to the channel's largest payload (`data_max`), not to
 *   VB_MSG_DATA_MAX: a 160-byte μ-law frame does not need 1 KiB.
 *
 * Thread rules: begin/end/room/spill calls on the producer thread only;
 * the consumer side is used by core/stage.c (or vb_chan_peek()/release()
 * by a consumer without a stage). init/destroy while neither runs.
 */
#ifndef VB_CORE_CHAN_H
#define VB_CORE_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/metrics.h"
#include "core/msg.h"
#include "core/ring.h"

struct vb_stage;

typedef struct vb_chan_config {
    const char *name;      /* ring label for metrics: "twilio_to_dsp" */
    uint32_t capacity;     /* slots, a power of two */
    uint32_t data_max;     /* largest payload, <= VB_MSG_DATA_MAX */
    uint32_t spill_max;    /* messages parked when full; 0: never spill */
    vb_metrics_t *metrics; /* may be NULL (no series) */
} vb_chan_config_t;

typedef struct vb_chan {
    vb_ring_t ring;
    char name[32];
    uint32_t data_max;
    /* Wiring, set before the threads start. */
    struct vb_stage *producer; /* NULL: rings at once */
    uv_async_t *bell; /* the consuming stage's doorbell; NULL: nobody to
                       * wake (a polling test) */
    void (*on_pressure)(void *ud, bool on);
    void *pressure_ud;
    /* Producer side. */
    uint32_t unrung; /* pushed since the last doorbell check */
    bool pressured;
    vb_msg_t *spill;
    uint32_t sp_head, sp_len, sp_cap, spill_max;
    vb_msg_t *pending; /* begun, not ended: a ring slot or a spill slot */
    uint64_t spilled;  /* messages that went through the spill */
    vb_metric_t m_full, m_wait;
    bool has_metrics;
} vb_chan_t;

/* Sets up `c` (ring storage allocated and zeroed here; series
 * vb_ring_full_total{ring} and vb_ring_wait_seconds{ring} registered).
 * Returns 0, VB_EINVAL (bad capacity, data_max or name), VB_ENOMEM,
 * VB_ENOSPC (metrics registry full). */
int vb_chan_init(vb_chan_t *c, const vb_chan_config_t *cfg);

/* Frees the ring and the spill; accepts NULL or a zeroed channel. */
void vb_chan_destroy(vb_chan_t *c);

/* Sets the producer's pressure hook (see DESIGN). Before start. */
void vb_chan_on_pressure(vb_chan_t *c, void (*fn)(void *ud, bool on), void *ud);

/* ---- producer side ---- */

/* Starts a message: a ring slot (or, when the ring is full or older
 * messages are parked, a spill slot) with kind, flags, call, seq and
 * t_origin filled in and len 0. Write at most c->data_max bytes of data,
 * set len, then vb_chan_end(). A message begun and never ended is
abandoned: nothing is published and the next vb_chan_begin() returns the
same slot (a producer may decode into a slot and then refuse it). Returns NULL
only for AUDIO when the spill
 * is full, or when the channel has no spill (spill_max 0) and the ring
 * is full, or out of memory: the caller counts the drop. */
vb_msg_t *vb_chan_begin(vb_chan_t *c, uint8_t kind, uint8_t flags,
                        vb_call_id_t call, uint32_t seq, uint64_t t_origin);

/* Publishes the message vb_chan_begin() returned (stamps t_enqueue). The
 * doorbell rings at the end of the producer's loop iteration. */
void vb_chan_end(vb_chan_t *c, vb_msg_t *m);

/* begin + copy + end. `len` is cut to data_max (callers split longer
 * payloads first). Returns 0, or VB_ENOSPC whenever vb_chan_begin() finds
 * no slot (spill full, ring full with no spill, or out of memory). */
int vb_chan_send(vb_chan_t *c, uint8_t kind, uint8_t flags, vb_call_id_t call,
                 uint32_t seq, uint64_t t_origin, const void *data, size_t len);

/* Free ring slots as the producer sees them (never overstated), 0 while
 * anything is spilled. */
uint32_t vb_chan_room(vb_chan_t *c);

/* Counts a message held back because vb_chan_room() was short
 * (vb_ring_full_total{ring}), for producers that hold instead of spill. */
void vb_chan_full(vb_chan_t *c);

/* True from the first spill until the spill is empty again. */
static inline bool vb_chan_pressured(const vb_chan_t *c)
{
    return c->pressured;
}

/* Moves spilled messages into the ring, oldest first; clears the
 * pressure (hook) once empty with the ring at most half full. Returns
 * true when nothing is left spilled. Called by the producing stage's
 * retry timer. */
bool vb_chan_unspill(vb_chan_t *c);

/* Removes spilled messages `drop` says yes to (barge-in: a call's model
 * audio must not play after its CLEAR). Returns how many. */
uint32_t vb_chan_spill_purge(vb_chan_t *c,
                             bool (*drop)(const vb_msg_t *m, void *ud),
                             void *ud);

/* Rings the consumer's doorbell if pushes since the last call need it.
 * Called by the producing stage at the end of each loop iteration, and
 * by producers without a stage after each push. */
void vb_chan_flush(vb_chan_t *c);

/* ---- consumer side without a stage (tests) ---- */

static inline vb_msg_t *vb_chan_peek(vb_chan_t *c)
{
    return vb_ring_peek(&c->ring);
}

static inline void vb_chan_release(vb_chan_t *c)
{
    vb_ring_release(&c->ring);
}

#endif
