/* SPDX-License-Identifier: MIT */
/* Stage threads and their loops; see stage.h for the design. */
#include "core/stage.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#define RETRY_MS 1

static void run_later(vb_stage_t *st)
{
    /* A deferred function may defer again: those run next iteration. */
    uint32_t n = st->nlater;
    for (uint32_t i = 0; i < n; i++)
        st->later[i].fn(st->later[i].arg);
    memmove(st->later, st->later + n,
            (size_t)(st->nlater - n) * sizeof(*st->later));
    st->nlater -= n;
}

/* End of a loop iteration (and its start, for pushes made by close
 * callbacks): one doorbell per output for everything pushed. */
static void end_of_iteration(vb_stage_t *st)
{
    if (st->nlater > 0)
        run_later(st);
    bool spilled = false;
    for (uint32_t i = 0; i < st->nout; i++) {
        vb_chan_flush(st->out[i]);
        spilled |= vb_chan_pressured(st->out[i]);
    }
    if (spilled)
        vb_stage_retry_soon(st);
}

static void on_prepare(uv_prepare_t *p)
{
    end_of_iteration(p->data);
}

static void on_check(uv_check_t *c)
{
    end_of_iteration(c->data);
}

/* Drains every input round-robin; returns when all are empty or held. */
static void drain(vb_stage_t *st)
{
    if (st->draining)
        return; /* a handler kicked: the running pass picks it up */
    st->draining = true;
    bool held = false, progress = true, took = false;
    bool blocked[VB_STAGE_MAX_INPUTS] = {false};
    while (progress) {
        progress = false;
        for (uint32_t i = 0; i < st->nin; i++) {
            vb_stage_input_t *in = &st->in[i];
            for (int k = 0; k < VB_STAGE_BUDGET && !blocked[i]; k++) {
                const vb_msg_t *m = vb_chan_peek(in->chan);
                if (m == NULL)
                    break;
                uint64_t now = vb_clock_now_ns();
                vb_stage_fn fn =
                    m->kind < VB_MSG_KIND_COUNT ? in->on[m->kind] : NULL;
                if (fn == NULL) {
                    vb_metrics_counter_add(st->shard, st->m_unexpected, 1);
                    VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                                       "message kind nobody handles, dropped",
                                       "stage=%s ring=%s kind=%s", st->name,
                                       in->chan->name,
                                       vb_msg_kind_name(m->kind));
                } else if (!fn(st->ud, m)) {
                    blocked[i] = held = true;
                    break;
                }
                if (in->chan->has_metrics && m->t_enqueue != 0 &&
                    now > m->t_enqueue)
                    vb_metrics_observe_ns(st->shard, in->chan->m_wait,
                                          now - m->t_enqueue);
                vb_chan_release(in->chan);
                progress = took = true;
            }
        }
        /* Ring downstream after every pass, not only at the end of the
         * loop iteration: a long drain must not leave consumers asleep. */
        for (uint32_t i = 0; i < st->nout; i++)
            vb_chan_flush(st->out[i]);
    }
    st->held = held;
    st->draining = false;
    if (took && st->after_drain != NULL)
        st->after_drain(st->ud);
    if (held)
        vb_stage_retry_soon(st);
}

static void on_bell(uv_async_t *a)
{
    vb_stage_t *st = a->data;
    vb_metrics_counter_add(st->shard, st->m_wakeups, 1);
    drain(st);
}

static void on_retry(uv_timer_t *t)
{
    vb_stage_t *st = t->data;
    bool pressured = false;
    for (uint32_t i = 0; i < st->nout; i++)
        if (vb_chan_pressured(st->out[i]) && !vb_chan_unspill(st->out[i]))
            pressured = true;
    drain(st);
    if (!pressured && !st->held)
        uv_timer_stop(&st->retry);
}

void vb_stage_retry_soon(vb_stage_t *st)
{
    if (!st->closed && !uv_is_active((uv_handle_t *)&st->retry))
        uv_timer_start(&st->retry, on_retry, RETRY_MS, RETRY_MS);
}

void vb_stage_kick(vb_stage_t *st)
{
    drain(st);
}

void vb_stage_flush(vb_stage_t *st)
{
    for (uint32_t i = 0; i < st->nout; i++)
        vb_chan_flush(st->out[i]);
}

int vb_stage_defer(vb_stage_t *st, void (*fn)(void *), void *arg)
{
    if (st->nlater == st->later_cap) {
        uint32_t cap = st->later_cap ? st->later_cap * 2 : 16;
        vb_stage_later_t *n = realloc(st->later, (size_t)cap * sizeof(*n));
        if (n == NULL)
            return VB_ENOMEM;
        st->later = n;
        st->later_cap = cap;
    }
    st->later[st->nlater++] = (vb_stage_later_t){fn, arg};
    return 0;
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

/* Closes the owner's handles, then ours; the loop ends once all closed. */
static void close_all(vb_stage_t *st)
{
    if (st->closed)
        return;
    st->closed = true;
    if (st->on_stop != NULL)
        st->on_stop(st->ud);
    uv_close((uv_handle_t *)&st->bell, close_cb);
    uv_close((uv_handle_t *)&st->stop, close_cb);
    uv_close((uv_handle_t *)&st->retry, close_cb);
    uv_close((uv_handle_t *)&st->prep, close_cb);
    uv_close((uv_handle_t *)&st->check, close_cb);
}

/* What the owner's on_stop pushed (every call's CALL_CLOSE) goes into the
 * rings while they have room; what cannot is said, not dropped silently. */
static void flush_outputs(vb_stage_t *st)
{
    for (uint32_t i = 0; i < st->nout; i++) {
        vb_chan_t *c = st->out[i];
        if (!vb_chan_unspill(c) && c->sp_len > 0)
            vb_log_warn(NULL, "stage stopped with messages still parked",
                        "stage=%s ring=%s messages=%u", st->name, c->name,
                        (unsigned)c->sp_len);
        vb_chan_flush(c);
    }
}

static void on_stop(uv_async_t *a)
{
    vb_stage_t *st = a->data;
    close_all(st);
    flush_outputs(st);
    if (st->nlater > 0)
        run_later(st);
}

static void thread_main(void *arg)
{
    vb_stage_t *st = arg;
    pthread_setname_np(pthread_self(), st->name);
    uv_run(&st->loop, UV_RUN_DEFAULT);
    if (st->nlater > 0)
        run_later(st);
}

int vb_stage_init(vb_stage_t *st, const char *name, vb_metrics_t *metrics,
                  void (*on_stop_fn)(void *ud), void *ud)
{
    if (st == NULL || name == NULL || metrics == NULL)
        return VB_EINVAL;
    memset(st, 0, sizeof(*st));
    snprintf(st->name, sizeof(st->name), "%s", name);
    st->metrics = metrics;
    st->on_stop = on_stop_fn;
    st->ud = ud;
    int rc =
        vb_metrics_add(metrics, VB_METRIC_COUNTER, "vb_stage_unexpected_total",
                       "Messages of a kind the stage has no handler "
                       "for (a wiring bug), dropped.",
                       VB_LABELS("stage", name), &st->m_unexpected);
    if (rc == 0)
        rc =
            vb_metrics_add(metrics, VB_METRIC_COUNTER, "vb_stage_wakeups_total",
                           "Doorbell wake-ups of a stage thread.",
                           VB_LABELS("stage", name), &st->m_wakeups);
    if (rc != 0)
        return rc;
    /* The shard is created here, not on the thread, so the owner may
     * record while wiring; only the stage thread uses it once started. */
    st->shard = vb_metrics_shard_create(metrics);
    if (st->shard == NULL)
        return VB_ENOMEM;
    if (uv_loop_init(&st->loop) != 0)
        return VB_ESYS;
    uv_async_init(&st->loop, &st->bell, on_bell);
    uv_async_init(&st->loop, &st->stop, on_stop);
    uv_timer_init(&st->loop, &st->retry);
    uv_prepare_init(&st->loop, &st->prep);
    uv_check_init(&st->loop, &st->check);
    st->bell.data = st->stop.data = st->retry.data = st;
    st->prep.data = st->check.data = st;
    uv_prepare_start(&st->prep, on_prepare);
    uv_check_start(&st->check, on_check);
    st->loop_ok = true;
    return 0;
}

int vb_stage_listen(vb_stage_t *st, vb_chan_t *c,
                    const vb_stage_fn on[VB_MSG_KIND_COUNT])
{
    if (st->nin == VB_STAGE_MAX_INPUTS)
        return VB_ENOSPC;
    vb_stage_input_t *in = &st->in[st->nin++];
    in->chan = c;
    memcpy(in->on, on, sizeof(in->on));
    c->bell = &st->bell;
    return 0;
}

int vb_stage_produce(vb_stage_t *st, vb_chan_t *c)
{
    if (st->nout == VB_STAGE_MAX_OUTPUTS)
        return VB_ENOSPC;
    st->out[st->nout++] = c;
    c->producer = st;
    return 0;
}

int vb_stage_start(vb_stage_t *st)
{
    return vb_thread_start(&st->thread, thread_main, st);
}

void vb_stage_stop(vb_stage_t *st)
{
    if (st != NULL && st->loop_ok)
        vb_thread_stop(&st->thread, &st->stop);
}

void vb_stage_destroy(vb_stage_t *st)
{
    if (st == NULL || !st->loop_ok)
        return;
    vb_stage_stop(st);
    if (!st->closed) {
        /* Never started: close the handles on this thread. */
        close_all(st);
        flush_outputs(st);
        uv_run(&st->loop, UV_RUN_DEFAULT);
        if (st->nlater > 0)
            run_later(st);
    }
    uv_loop_close(&st->loop);
    free(st->later);
    st->later = NULL;
    st->loop_ok = false;
}
