/* SPDX-License-Identifier: MIT */
/* Out-of-line parts of the SPSC ring: setup and the copying forms. The
 * memory-ordering contract is described in core/ring.h. */
#include "core/ring.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define VB_RING_MAX_CAPACITY (1u << 30)
#define VB_RING_MAX_SLOT     (64u * 1024u)

int vb_ring_init(vb_ring_t *r, uint32_t capacity, uint32_t slot_size)
{
    if (r == NULL || capacity < 2 || capacity > VB_RING_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0 || slot_size == 0 ||
        slot_size > VB_RING_MAX_SLOT)
        return VB_EINVAL;
    memset(r, 0, sizeof(*r));
    slot_size = (slot_size + 15u) & ~15u;
    size_t bytes = (size_t)capacity * slot_size;
    bytes =
        (bytes + VB_RING_CACHE_LINE - 1) & ~(size_t)(VB_RING_CACHE_LINE - 1);
    void *mem = aligned_alloc(VB_RING_CACHE_LINE, bytes);
    if (mem == NULL)
        return VB_ENOMEM;
    memset(mem, 0, bytes);
    r->_mask = capacity - 1;
    r->_slot_size = slot_size;
    r->_slots = mem;
    r->_alloc = mem;
    atomic_init(&r->_tail, 0);
    atomic_init(&r->_head, 0);
    return 0;
}

void vb_ring_destroy(vb_ring_t *r)
{
    if (r == NULL)
        return;
    free(r->_alloc);
    r->_alloc = NULL;
    r->_slots = NULL;
}

void vb_ring_reset_at(vb_ring_t *r, uint32_t index)
{
    atomic_store_explicit(&r->_tail, index, memory_order_relaxed);
    atomic_store_explicit(&r->_head, index, memory_order_relaxed);
    r->_head_cache = index;
    r->_tail_cache = index;
}

int vb_ring_try_push(vb_ring_t *r, const void *data, size_t len)
{
    if (len > r->_slot_size)
        return VB_EMSGSIZE;
    void *slot = vb_ring_reserve(r);
    if (slot == NULL)
        return VB_ENOSPC;
    memcpy(slot, data, len);
    vb_ring_commit(r);
    return 0;
}

uint32_t vb_ring_push_bulk(vb_ring_t *r, const void *slots, uint32_t n)
{
    uint32_t t = atomic_load_explicit(&r->_tail, memory_order_relaxed);
    uint32_t free_slots = r->_mask + 1 - (t - r->_head_cache);
    if (free_slots < n) {
        /* Acquire pairs with the consumer's release of head; see reserve. */
        r->_head_cache = atomic_load_explicit(&r->_head, memory_order_acquire);
        free_slots = r->_mask + 1 - (t - r->_head_cache);
    }
    if (n > free_slots)
        n = free_slots;
    const unsigned char *src = slots;
    for (uint32_t i = 0; i < n; i++)
        memcpy(r->_slots + (size_t)((t + i) & r->_mask) * r->_slot_size,
               src + (size_t)i * r->_slot_size, r->_slot_size);
    if (n > 0) {
        /* Release pairs with the consumer's acquire of tail in peek. */
        atomic_store_explicit(&r->_tail, t + n, memory_order_release);
    }
    return n;
}

bool vb_ring_wake_needed(vb_ring_t *r, uint32_t pushed)
{
    /* Store-load ordering between our tail publish and the head load needs
     * a full barrier. A seq_cst RMW on our own index followed by a seq_cst
     * load of head pairs with the same pair in the consumer's empty path of
     * vb_ring_peek(): in the single total order of seq_cst operations one
     * side comes first, so either the consumer's final tail load sees our
     * items, or our head load sees the consumer caught up and we ring. */
    uint32_t t = atomic_fetch_add_explicit(&r->_tail, 0, memory_order_seq_cst);
    uint32_t h = atomic_load_explicit(&r->_head, memory_order_seq_cst);
    return t - h <= pushed;
}

int vb_ring_try_pop(vb_ring_t *r, void *out)
{
    void *slot = vb_ring_peek(r);
    if (slot == NULL)
        return VB_EAGAIN;
    memcpy(out, slot, r->_slot_size);
    vb_ring_release(r);
    return 0;
}

uint32_t vb_ring_pop_bulk(vb_ring_t *r, void *out, uint32_t n)
{
    uint32_t h = atomic_load_explicit(&r->_head, memory_order_relaxed);
    uint32_t avail = r->_tail_cache - h;
    if (avail < n) {
        /* Acquire pairs with the producer's release of tail. */
        r->_tail_cache = atomic_load_explicit(&r->_tail, memory_order_acquire);
        avail = r->_tail_cache - h;
        /* Reporting empty goes through peek's seq_cst path, so the doorbell
         * protocol holds for bulk consumers too. */
        if (avail == 0 && vb_ring_peek(r) != NULL)
            avail = r->_tail_cache - h;
    }
    if (n > avail)
        n = avail;
    unsigned char *dst = out;
    for (uint32_t i = 0; i < n; i++)
        memcpy(dst + (size_t)i * r->_slot_size,
               r->_slots + (size_t)((h + i) & r->_mask) * r->_slot_size,
               r->_slot_size);
    if (n > 0) {
        /* Release pairs with the producer's acquire of head. */
        atomic_store_explicit(&r->_head, h + n, memory_order_release);
    }
    return n;
}
