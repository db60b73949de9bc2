/* SPDX-License-Identifier: MIT */
/* Channels and stages (core/chan.h, core/stage.h) on real threads: no
 * wake-up is ever missed, doorbells are batched per loop iteration, a
 * full ring spills in order and its pressure hook fires and clears, held
 * messages are retried, unknown kinds are counted, and the one
 * start/stop/destroy contract holds. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/chan.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/stage.h"
#include "tests/test.h"

static const vb_call_id_t CALL = {1, 1};

static void chan_up(vb_chan_t *c, const char *name, uint32_t cap,
                    uint32_t spill, vb_metrics_t *m)
{
    vb_chan_config_t cfg = {name, cap, 64, spill, m};
    ASSERT_EQ(vb_chan_init(c, &cfg), 0);
}

static void wait_for(_Atomic uint64_t *v, uint64_t want, double seconds)
{
    uint64_t end =
        vb_clock_now_ns() + (uint64_t)(seconds * 1e9 * vb_test_slowdown());
    while (atomic_load(v) < want) {
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "waited for %llu, got %llu",
                         (unsigned long long)want,
                         (unsigned long long)atomic_load(v));
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
}

/* ---- a pipeline: test thread -> a -> amp (x3) -> b -> sink ---- */

typedef struct pipe {
    vb_metrics_t *m;
    vb_chan_t a, b;
    vb_stage_t amp, sink;
    uint32_t amp_seq;
    _Atomic uint64_t got, bad;
    uint32_t next; /* sink: expected seq */
    _Atomic bool gate_closed;
    _Atomic int pressure_on, pressure_off;
} pipe_t;

static bool amp_on(void *ud, const vb_msg_t *m)
{
    pipe_t *p = ud;
    /* Hold the input while the output is under pressure (as the dsp
     * stage does); the spill takes what the ring cannot meanwhile. */
    if (vb_chan_pressured(&p->b))
        return false;
    for (int i = 0; i < 3; i++) {
        vb_msg_t *o =
            vb_chan_begin(&p->b, VB_MSG_AUDIO, 0, m->call, p->amp_seq++, 0);
        if (o == NULL) {
            atomic_fetch_add(&p->bad, 1);
            continue;
        }
        memcpy(o->data, m->data, 4);
        o->len = 4;
        vb_chan_end(&p->b, o);
    }
    return true;
}

static bool sink_on(void *ud, const vb_msg_t *m)
{
    pipe_t *p = ud;
    if (atomic_load(&p->gate_closed))
        return false; /* hold: retried by the stage */
    if (m->seq != p->next)
        atomic_fetch_add(&p->bad, 1);
    p->next = m->seq + 1;
    atomic_fetch_add(&p->got, 1);
    return true;
}

static void on_pressure(void *ud, bool on)
{
    pipe_t *p = ud;
    atomic_fetch_add(on ? &p->pressure_on : &p->pressure_off, 1);
}

static void pipe_up(pipe_t *p, uint32_t b_cap, uint32_t spill)
{
    memset(p, 0, sizeof(*p));
    p->m = vb_metrics_create();
    chan_up(&p->a, "test_a", 1024, 0, p->m);
    chan_up(&p->b, "test_b", b_cap, spill, p->m);
    vb_stage_fn amp[VB_MSG_KIND_COUNT] = {0}, sink[VB_MSG_KIND_COUNT] = {0};
    amp[VB_MSG_AUDIO] = amp_on;
    sink[VB_MSG_AUDIO] = sink_on;
    ASSERT_EQ(vb_stage_init(&p->amp, "vb-test-amp", p->m, NULL, p), 0);
    ASSERT_EQ(vb_stage_init(&p->sink, "vb-test-sink", p->m, NULL, p), 0);
    ASSERT_EQ(vb_stage_listen(&p->amp, &p->a, amp), 0);
    ASSERT_EQ(vb_stage_produce(&p->amp, &p->b), 0);
    ASSERT_EQ(vb_stage_listen(&p->sink, &p->b, sink), 0);
    vb_chan_on_pressure(&p->b, on_pressure, p);
    ASSERT_EQ(vb_stage_start(&p->sink), 0);
    ASSERT_EQ(vb_stage_start(&p->amp), 0);
}

static void pipe_down(pipe_t *p)
{
    vb_stage_destroy(&p->amp);
    vb_stage_destroy(&p->sink);
    vb_chan_destroy(&p->a);
    vb_chan_destroy(&p->b);
    vb_metrics_destroy(p->m);
}

static void feed(pipe_t *p, uint32_t n, uint32_t seed)
{
    for (uint32_t i = 0; i < n; i++) {
        while (vb_chan_send(&p->a, VB_MSG_AUDIO, 0, CALL, i, 0, &i,
                            sizeof(i)) != 0)
            nanosleep(&(struct timespec){0, 50000}, NULL);
        seed = seed * 1103515245u + 12345u;
        if ((seed >> 16) % 64 == 0) /* let both sides go idle now and then */
            nanosleep(&(struct timespec){0, (seed >> 8) % 200000}, NULL);
    }
}

static int64_t metric(pipe_t *p, const char *name, const char *k, const char *v,
                      vb_metric_type_t type)
{
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(p->m, type, name, "", VB_LABELS(k, v), &id), 0);
    return vb_metrics_value(p->m, id);
}

TEST_T(no_wakeup_missed_across_two_stages, 120)
{
    pipe_t *p = calloc(1, sizeof(*p));
    pipe_up(p, 4096, 4096);
    uint32_t n = (uint32_t)(200000 / vb_test_slowdown());
    feed(p, n, 7);
    wait_for(&p->got, 3ull * n - atomic_load(&p->bad), 30);
    ASSERT_EQ(atomic_load(&p->bad), 0);
    ASSERT_EQ(atomic_load(&p->got), 3ull * n);
    /* The amplifier's three pushes per message share its doorbells: the
     * sink is woken fewer times than it got messages. */
    int64_t wakes = metric(p, "vb_stage_wakeups_total", "stage", "vb-test-sink",
                           VB_METRIC_COUNTER);
    printf("  %u in, %u out, sink woken %lld times\n", n, 3 * n,
           (long long)wakes);
    ASSERT_GT(wakes, 0);
    ASSERT_LT(wakes, 3ll * n);
    pipe_down(p);
    free(p);
}

TEST_T(full_ring_spills_in_order_and_pressure_clears, 60)
{
    pipe_t *p = calloc(1, sizeof(*p));
    pipe_up(p, 8, 4096);
    atomic_store(&p->gate_closed, true);
    feed(p, 100, 3); /* 300 out: the ring of 8 fills, the spill takes it */
    uint64_t end = vb_clock_now_ns() + 10000000000ull;
    while (atomic_load(&p->pressure_on) == 0 && vb_clock_now_ns() < end)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    ASSERT_EQ(atomic_load(&p->pressure_on), 1);
    ASSERT_EQ(atomic_load(&p->pressure_off), 0);
    ASSERT_EQ(atomic_load(&p->got), 0);
    atomic_store(&p->gate_closed, false); /* held messages: retried */
    wait_for(&p->got, 300, 10);
    /* Every episode of pressure ends (the amplifier resumes, may fill the
     * ring again, and so on); at the end none is left. */
    end = vb_clock_now_ns() + 10000000000ull;
    while (atomic_load(&p->pressure_off) < atomic_load(&p->pressure_on) &&
           vb_clock_now_ns() < end)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    int on = atomic_load(&p->pressure_on);
    ASSERT_GE(on, 1);
    ASSERT_EQ(atomic_load(&p->pressure_off), on);
    ASSERT_EQ(atomic_load(&p->bad), 0);
    ASSERT_EQ(p->b.spilled > 0, 1);
    /* One vb_ring_full_total per episode. */
    ASSERT_EQ(
        metric(p, "vb_ring_full_total", "ring", "test_b", VB_METRIC_COUNTER),
        on);
    pipe_down(p);
    free(p);
}

TEST_T(spill_limit_refuses_audio_but_never_control, 30)
{
    vb_chan_t c;
    chan_up(&c, "test_c", 2, 4, NULL);
    int audio_ok = 0, control_ok = 0;
    for (int i = 0; i < 10; i++)
        audio_ok += vb_chan_send(&c, VB_MSG_AUDIO, 0, CALL, (uint32_t)i, 0, "x",
                                 1) == 0;
    for (int i = 0; i < 40; i++)
        control_ok += vb_chan_send(&c, VB_MSG_CALL_CLOSE, 0, CALL,
                                   (uint32_t)(10 + i), 0, "y", 1) == 0;
    ASSERT_EQ(audio_ok, 2 + 4); /* the ring, then the spill */
    ASSERT_EQ(control_ok, 40);
    ASSERT_TRUE(vb_chan_pressured(&c));
    ASSERT_EQ(vb_chan_room(&c), 0);
    /* Consumer side empties the ring; unspill refills it in order. */
    uint32_t want = 0, seen = 0;
    for (int round = 0; round < 100 && seen < 2 + 4 + 40; round++) {
        vb_msg_t *m;
        while ((m = vb_chan_peek(&c)) != NULL) {
            if (seen == 6)
                want = 10;
            ASSERT_EQ(m->seq, want);
            want++;
            seen++;
            vb_chan_release(&c);
        }
        vb_chan_unspill(&c);
    }
    ASSERT_EQ(seen, 46);
    ASSERT_TRUE(!vb_chan_pressured(&c));
    vb_chan_destroy(&c);
}

static bool is_audio(const vb_msg_t *m, void *ud)
{
    (void)ud;
    return m->kind == VB_MSG_AUDIO;
}

TEST(spill_purge_drops_only_what_it_is_told)
{
    vb_chan_t c;
    chan_up(&c, "test_p", 2, 64, NULL);
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(vb_chan_send(&c, i % 2 ? VB_MSG_AUDIO : VB_MSG_MARK, 0, CALL,
                               (uint32_t)i, 0, NULL, 0),
                  0);
    /* 2 in the ring (seq 0, 1), 8 spilled: 4 of them audio. */
    ASSERT_EQ(vb_chan_spill_purge(&c, is_audio, NULL), 4);
    uint32_t seqs[16], n = 0;
    for (int round = 0; round < 10; round++) {
        vb_msg_t *m;
        while ((m = vb_chan_peek(&c)) != NULL) {
            seqs[n++] = m->seq;
            vb_chan_release(&c);
        }
        vb_chan_unspill(&c);
    }
    ASSERT_EQ(n, 6);
    const uint32_t want[] = {0, 1, 2, 4, 6, 8};
    ASSERT_MEM_EQ(seqs, want, sizeof(want));
    vb_chan_destroy(&c);
}

TEST(bad_configs_are_refused)
{
    vb_chan_t c;
    vb_chan_config_t cfg = {"x", 16, 0, 0, NULL};
    ASSERT_EQ(vb_chan_init(&c, &cfg), VB_EINVAL);
    cfg.data_max = VB_MSG_DATA_MAX + 1;
    ASSERT_EQ(vb_chan_init(&c, &cfg), VB_EINVAL);
    cfg.data_max = 16;
    cfg.capacity = 3;
    ASSERT_EQ(vb_chan_init(&c, &cfg), VB_EINVAL);
    cfg.name = NULL;
    cfg.capacity = 4;
    ASSERT_EQ(vb_chan_init(&c, &cfg), VB_EINVAL);
    /* Slots sized to data_max, not to the largest message. */
    cfg.name = "small";
    ASSERT_EQ(vb_chan_init(&c, &cfg), 0);
    ASSERT_LT(vb_ring_slot_size(&c.ring), 64);
    ASSERT_EQ(
        vb_chan_send(&c, VB_MSG_AUDIO, 0, CALL, 0, 0, "0123456789abcdefXX", 18),
        0);
    vb_msg_t *m = vb_chan_peek(&c);
    ASSERT_EQ(m->len, 16); /* cut to data_max */
    vb_chan_destroy(&c);
    vb_chan_destroy(NULL);
}

/* ---- the stage contract ---- */

static _Atomic int stops;

static void count_stop(void *ud)
{
    (void)ud;
    atomic_fetch_add(&stops, 1);
}

TEST(stage_start_stop_destroy_contract)
{
    vb_metrics_t *m = vb_metrics_create();
    vb_stage_t st;
    /* Never started: destroy runs on_stop here, once. */
    atomic_store(&stops, 0);
    ASSERT_EQ(vb_stage_init(&st, "vb-test-a", m, count_stop, NULL), 0);
    vb_stage_stop(&st); /* not running: nothing */
    vb_stage_destroy(&st);
    ASSERT_EQ(atomic_load(&stops), 1);
    vb_stage_destroy(&st); /* twice: nothing */
    /* Started: on_stop runs on the thread; stop twice is fine. */
    atomic_store(&stops, 0);
    ASSERT_EQ(vb_stage_init(&st, "vb-test-b", m, count_stop, NULL), 0);
    ASSERT_EQ(vb_stage_start(&st), 0);
    ASSERT_EQ(vb_stage_start(&st), VB_EBUSY);
    vb_stage_stop(&st);
    vb_stage_stop(&st);
    vb_stage_destroy(&st);
    ASSERT_EQ(atomic_load(&stops), 1);
    vb_stage_t zero;
    memset(&zero, 0, sizeof(zero));
    vb_stage_destroy(&zero);
    vb_metrics_destroy(m);
}

static _Atomic uint64_t handled, deferred;

static void later(void *arg)
{
    (void)arg;
    atomic_fetch_add(&deferred, 1);
}

static bool defer_msg(void *ud, const vb_msg_t *m)
{
    (void)m;
    vb_stage_t *st = ud;
    atomic_fetch_add(&handled, 1);
    ASSERT_EQ(vb_stage_defer(st, later, NULL), 0);
    return true;
}

TEST(unknown_kinds_are_counted_and_deferred_work_runs)
{
    vb_metrics_t *m = vb_metrics_create();
    vb_chan_t c;
    chan_up(&c, "test_k", 16, 0, m);
    vb_stage_t st;
    ASSERT_EQ(vb_stage_init(&st, "vb-test-k", m, NULL, &st), 0);
    vb_stage_fn on[VB_MSG_KIND_COUNT] = {0};
    on[VB_MSG_AUDIO] = defer_msg;
    ASSERT_EQ(vb_stage_listen(&st, &c, on), 0);
    ASSERT_EQ(vb_stage_start(&st), 0);
    atomic_store(&handled, 0);
    atomic_store(&deferred, 0);
    ASSERT_EQ(vb_chan_send(&c, VB_MSG_TEXT, 0, CALL, 0, 0, "t", 1), 0);
    ASSERT_EQ(vb_chan_send(&c, VB_MSG_AUDIO, 0, CALL, 1, 0, "a", 1), 0);
    wait_for(&deferred, 1, 10);
    ASSERT_EQ(atomic_load(&handled), 1);
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "vb_stage_unexpected_total",
                             "", VB_LABELS("stage", "vb-test-k"), &id),
              0);
    uint64_t end = vb_clock_now_ns() + 5000000000ull;
    while (vb_metrics_value(m, id) == 0 && vb_clock_now_ns() < end)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    ASSERT_EQ(vb_metrics_value(m, id), 1);
    vb_stage_destroy(&st);
    vb_chan_destroy(&c);
    vb_metrics_destroy(m);
}
