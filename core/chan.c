/* SPDX-License-Identifier: MIT */
/* Channels; see chan.h for the design. */
#include "core/chan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/stage.h"

#define HEADER_BYTES offsetof(vb_msg_t, data)

int vb_chan_init(vb_chan_t *c, const vb_chan_config_t *cfg)
{
    if (c == NULL || cfg == NULL || cfg->name == NULL ||
        strlen(cfg->name) >= sizeof(c->name) || cfg->data_max == 0 ||
        cfg->data_max > VB_MSG_DATA_MAX)
        return VB_EINVAL;
    memset(c, 0, sizeof(*c));
    int rc = vb_ring_init(&c->ring, cfg->capacity,
                          (uint32_t)HEADER_BYTES + cfg->data_max);
    if (rc != 0)
        return rc;
    snprintf(c->name, sizeof(c->name), "%s", cfg->name);
    c->data_max = cfg->data_max;
    c->spill_max = cfg->spill_max;
    if (cfg->metrics != NULL) {
        rc = vb_metrics_add(
            cfg->metrics, VB_METRIC_COUNTER, "vb_ring_full_total",
            "Times a producer found a ring full and held its message back.",
            VB_LABELS("ring", c->name), &c->m_full);
        if (rc == 0)
            rc = vb_metrics_add(cfg->metrics, VB_METRIC_HISTOGRAM,
                                "vb_ring_wait_seconds",
                                "Time messages wait in a ring.",
                                VB_LABELS("ring", c->name), &c->m_wait);
        if (rc != 0) {
            vb_ring_destroy(&c->ring);
            return rc;
        }
        c->has_metrics = true;
    }
    return 0;
}

void vb_chan_destroy(vb_chan_t *c)
{
    if (c == NULL)
        return;
    vb_ring_destroy(&c->ring);
    free(c->spill);
    c->spill = NULL;
    c->sp_len = c->sp_cap = 0;
}

void vb_chan_on_pressure(vb_chan_t *c, void (*fn)(void *ud, bool on), void *ud)
{
    c->on_pressure = fn;
    c->pressure_ud = ud;
}

static void set_pressure(vb_chan_t *c, bool on)
{
    if (c->pressured == on)
        return;
    c->pressured = on;
    if (on)
        vb_chan_full(c);
    if (c->on_pressure != NULL)
        c->on_pressure(c->pressure_ud, on);
}

void vb_chan_full(vb_chan_t *c)
{
    if (c->has_metrics && c->producer != NULL && c->producer->shard != NULL)
        vb_metrics_counter_add(c->producer->shard, c->m_full, 1);
}

/* A free spill slot (grown on demand up to spill_max; past it only for
 * control messages, which are never dropped), or NULL. */
static vb_msg_t *spill_slot(vb_chan_t *c, bool control)
{
    if (c->spill_max == 0)
        return NULL;
    if (c->sp_len == c->sp_cap) {
        if (c->sp_cap >= c->spill_max && !control)
            return NULL;
        uint32_t cap = c->sp_cap ? c->sp_cap * 2 : 16;
        if (cap > c->spill_max)
            cap = c->sp_cap >= c->spill_max ? c->sp_cap + 16 : c->spill_max;
        vb_msg_t *n = malloc((size_t)cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        for (uint32_t i = 0; i < c->sp_len; i++)
            n[i] = c->spill[(c->sp_head + i) % c->sp_cap];
        free(c->spill);
        c->spill = n;
        c->sp_head = 0;
        c->sp_cap = cap;
    }
    return &c->spill[(c->sp_head + c->sp_len) % c->sp_cap];
}

vb_msg_t *vb_chan_begin(vb_chan_t *c, uint8_t kind, uint8_t flags,
                        vb_call_id_t call, uint32_t seq, uint64_t t_origin)
{
    vb_msg_t *m = c->sp_len == 0 ? vb_ring_reserve(&c->ring) : NULL;
    if (m == NULL) {
        m = spill_slot(c, kind != VB_MSG_AUDIO);
        if (m == NULL)
            return NULL;
        set_pressure(c, true);
        if (c->producer != NULL)
            vb_stage_retry_soon(c->producer);
    }
    m->kind = kind;
    m->flags = flags;
    m->len = 0;
    m->seq = seq;
    m->call = call;
    m->t_origin = t_origin;
    m->t_enqueue = 0;
    c->pending = m;
    return m;
}

void vb_chan_end(vb_chan_t *c, vb_msg_t *m)
{
    if (m == NULL || m != c->pending)
        return;
    c->pending = NULL;
    bool spilled = c->sp_cap > 0 && m >= c->spill && m < c->spill + c->sp_cap;
    if (spilled) {
        c->sp_len++;
        c->spilled++;
        return;
    }
    m->t_enqueue = vb_clock_now_ns();
    vb_ring_commit(&c->ring);
    c->unrung++;
    if (c->producer == NULL)
        vb_chan_flush(c);
}

int vb_chan_send(vb_chan_t *c, uint8_t kind, uint8_t flags, vb_call_id_t call,
                 uint32_t seq, uint64_t t_origin, const void *data, size_t len)
{
    vb_msg_t *m = vb_chan_begin(c, kind, flags, call, seq, t_origin);
    if (m == NULL)
        return VB_ENOSPC;
    if (len > c->data_max)
        len = c->data_max;
    if (len > 0)
        memcpy(m->data, data, len);
    m->len = (uint16_t)len;
    vb_chan_end(c, m);
    return 0;
}

uint32_t vb_chan_room(vb_chan_t *c)
{
    if (c->sp_len > 0)
        return 0;
    /* From the producer side tail is exact and head can only be stale
     * (older), so this never overstates the room. */
    return vb_ring_capacity(&c->ring) - vb_ring_count(&c->ring);
}

bool vb_chan_unspill(vb_chan_t *c)
{
    uint32_t slot = vb_ring_slot_size(&c->ring);
    while (c->sp_len > 0) {
        vb_msg_t *m = vb_ring_reserve(&c->ring);
        if (m == NULL)
            break;
        const vb_msg_t *p = &c->spill[c->sp_head];
        size_t n = HEADER_BYTES + p->len;
        memcpy(m, p, n <= slot ? n : slot);
        m->t_enqueue = vb_clock_now_ns();
        vb_ring_commit(&c->ring);
        c->unrung++;
        c->sp_head = (c->sp_head + 1) % c->sp_cap;
        c->sp_len--;
    }
    if (c->producer == NULL)
        vb_chan_flush(c);
    if (c->sp_len > 0)
        return false;
    if (c->pressured &&
        vb_ring_count(&c->ring) <= vb_ring_capacity(&c->ring) / 2)
        set_pressure(c, false);
    return !c->pressured;
}

uint32_t vb_chan_spill_purge(vb_chan_t *c,
                             bool (*drop)(const vb_msg_t *m, void *ud),
                             void *ud)
{
    uint32_t w = 0, n = c->sp_len;
    for (uint32_t i = 0; i < n; i++) {
        vb_msg_t *m = &c->spill[(c->sp_head + i) % c->sp_cap];
        if (drop(m, ud))
            continue;
        if (w != i)
            c->spill[(c->sp_head + w) % c->sp_cap] = *m;
        w++;
    }
    c->sp_len = w;
    return n - w;
}

void vb_chan_flush(vb_chan_t *c)
{
    if (c->unrung == 0)
        return;
    if (vb_ring_wake_needed(&c->ring, c->unrung) && c->bell != NULL)
        uv_async_send(c->bell);
    c->unrung = 0;
}
