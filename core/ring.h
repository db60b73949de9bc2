/* SPDX-License-Identifier: MIT */
/*
 * Lock-free single-producer/single-consumer ring of fixed-size slots.
 *
 * DESIGN. Indices are free-running uint32_t counters masked on access, so
 * "tail - head" is the fill level even across 2^32 wrap-around. The producer
 * owns `tail`, the consumer owns `head`; each keeps a cached copy of the
 * other's index on its own cache line and refreshes it (acquire) only when the
 * cache says full/empty, so the common push or pop touches no shared line but
 * the slot itself. Publishing is a release store of the owner's index, paired
 * with the peer's acquire load. Slots are used in place through
 * reserve/commit (producer) and peek/release (consumer), so a 1 KiB message is
 * written once and read once; try_push/try_pop and the bulk forms copy.
 *
 * Doorbells: a consumer sleeping in its event loop needs a wake-up when the
 * ring goes from empty to non-empty. vb_ring_wake_needed() tells the producer
 * when to ring (see its comment); the consumer drains until empty.
 *
 * Thread rules: exactly one producer thread calls the push/reserve/commit
 * functions and exactly one consumer thread calls the pop/peek/release ones.
 * init/destroy happen while neither runs.
 */
#ifndef VB_CORE_RING_H
#define VB_CORE_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VB_RING_CACHE_LINE 64

typedef struct vb_ring {
    /* Read-only after init. */
    alignas(VB_RING_CACHE_LINE) uint32_t _mask;
    uint32_t _slot_size; /* bytes per slot, a multiple of 16 */
    unsigned char *_slots;
    void *_alloc;
    /* Producer line: written by the producer only. */
    alignas(VB_RING_CACHE_LINE) _Atomic uint32_t _tail;
    uint32_t _head_cache;
    /* Consumer line: written by the consumer only. */
    alignas(VB_RING_CACHE_LINE) _Atomic uint32_t _head;
    uint32_t _tail_cache;
    char _pad[VB_RING_CACHE_LINE - 2 * sizeof(uint32_t)];
} vb_ring_t;

/* Sets up `r` with `capacity` slots (a power of two, 2..2^30) of `slot_size`
 * bytes each (1..64 KiB, rounded up to 16). Storage is allocated here, cache
 * line aligned. Returns 0, VB_EINVAL for a bad capacity or size, VB_ENOMEM. */
int vb_ring_init(vb_ring_t *r, uint32_t capacity, uint32_t slot_size);

/* Frees the storage; `r` may be zeroed or NULL. No thread may use it after. */
void vb_ring_destroy(vb_ring_t *r);

static inline uint32_t vb_ring_capacity(const vb_ring_t *r)
{
    return r->_mask + 1;
}

static inline uint32_t vb_ring_slot_size(const vb_ring_t *r)
{
    return r->_slot_size;
}

/* Approximate fill level; exact when called by either side with the other
 * idle. Any thread. */
static inline uint32_t vb_ring_count(vb_ring_t *r)
{
    /* Relaxed both: a racy snapshot is all a gauge needs. */
    uint32_t t = atomic_load_explicit(&r->_tail, memory_order_relaxed);
    uint32_t h = atomic_load_explicit(&r->_head, memory_order_relaxed);
    return t - h;
}

/* ---- producer side ---- */

/* Returns the next free slot for in-place writing, or NULL when the ring is
 * full. The slot is invisible to the consumer until vb_ring_commit(). Calling
 * reserve twice without commit returns the same slot. */
static inline void *vb_ring_reserve(vb_ring_t *r)
{
    /* Relaxed: only this thread writes tail. */
    uint32_t t = atomic_load_explicit(&r->_tail, memory_order_relaxed);
    if (t - r->_head_cache > r->_mask) {
        /* Acquire pairs with the consumer's release store of head in
         * vb_ring_release(): once we see the slot freed, the consumer's reads
         * of it are complete and we may overwrite it. */
        r->_head_cache = atomic_load_explicit(&r->_head, memory_order_acquire);
        if (t - r->_head_cache > r->_mask)
            return NULL;
    }
    return r->_slots + (size_t)(t & r->_mask) * r->_slot_size;
}

/* Publishes the slot returned by the last vb_ring_reserve(). */
static inline void vb_ring_commit(vb_ring_t *r)
{
    uint32_t t = atomic_load_explicit(&r->_tail, memory_order_relaxed);
    /* Release pairs with the consumer's acquire load of tail in
     * vb_ring_peek(): the slot's contents are visible before the index. */
    atomic_store_explicit(&r->_tail, t + 1, memory_order_release);
}

/* Copies `len` (<= slot size) bytes into a new slot; the rest of the slot is
 * left as it was. Returns 0, VB_ENOSPC when full, VB_EMSGSIZE if too long. */
int vb_ring_try_push(vb_ring_t *r, const void *data, size_t len);

/* After pushing `pushed` items, tells the producer whether to ring the
 * consumer's doorbell: true when the ring may have been empty before them.
 * Uses seq_cst operations that pair with those in the consumer's empty path,
 * so a consumer going idle and a producer publishing can't both miss each
 * other (Dekker). May return true spuriously; never false wrongly. */
bool vb_ring_wake_needed(vb_ring_t *r, uint32_t pushed);

/* ---- consumer side ---- */

/* Returns the oldest published slot for in-place reading, or NULL if empty.
 * The slot stays valid until vb_ring_release(). */
static inline void *vb_ring_peek(vb_ring_t *r)
{
    /* Relaxed: only this thread writes head. */
    uint32_t h = atomic_load_explicit(&r->_head, memory_order_relaxed);
    if (h == r->_tail_cache) {
        /* Acquire pairs with the producer's release store of tail in
         * vb_ring_commit()/vb_ring_push_bulk(): slot contents are visible. */
        r->_tail_cache = atomic_load_explicit(&r->_tail, memory_order_acquire);
        if (h == r->_tail_cache) {
            /* About to report empty: a seq_cst read-modify-write of our
             * own index, then a seq_cst load of tail, pair with the same
             * pair in vb_ring_wake_needed() (see there). An RMW rather than
             * a fence, because ThreadSanitizer does not model fences. */
            atomic_fetch_add_explicit(&r->_head, 0, memory_order_seq_cst);
            r->_tail_cache =
                atomic_load_explicit(&r->_tail, memory_order_seq_cst);
            if (h == r->_tail_cache)
                return NULL;
        }
    }
    return r->_slots + (size_t)(h & r->_mask) * r->_slot_size;
}

/* Frees the slot returned by the last vb_ring_peek(). */
static inline void vb_ring_release(vb_ring_t *r)
{
    uint32_t h = atomic_load_explicit(&r->_head, memory_order_relaxed);
    /* Release pairs with the producer's acquire load of head in
     * vb_ring_reserve(): our reads of the slot finish before it is reused. */
    atomic_store_explicit(&r->_head, h + 1, memory_order_release);
}

/* Copies the oldest slot (all slot_size bytes) into `out`. Returns 0 or
 * VB_EAGAIN when empty. */
int vb_ring_try_pop(vb_ring_t *r, void *out);

/* ---- for tests and tools ---- */
/* Used by the ring's tests, not by the pipeline or its bench; they stay
 * here because they work on the indices directly. */

/* Testing aid: empties the ring and places both indices at `index`, so tests
 * can cross 2^32. Neither side may be running. */
void vb_ring_reset_at(vb_ring_t *r, uint32_t index);

/* Copies up to `n` whole slots from `slots` (n * slot_size bytes, packed) and
 * publishes them with one release store. Returns how many were pushed (0..n).
 */
uint32_t vb_ring_push_bulk(vb_ring_t *r, const void *slots, uint32_t n);

/* Copies up to `n` slots into `out` (packed) and frees them with one release
 * store. Returns how many were popped. */
uint32_t vb_ring_pop_bulk(vb_ring_t *r, void *out, uint32_t n);

#endif
