/* SPDX-License-Identifier: MIT */
/*
 * Ring benchmark: ns per push/pop pair on one thread, throughput across two
 * threads, and the one-way hand-off latency of a single message between two
 * threads (producer stamps, consumer measures; the producer waits for each
 * message to be taken so the ring is empty, as on a lightly loaded lane).
 * Slots are vb_msg_t sized, as on the real lanes.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/hist.h"
#include "core/msg.h"
#include "core/ring.h"

#define SINGLE_ITERS  20000000u
#define CROSS_ITERS   20000000u
#define HANDOFF_ITERS 200000u

static vb_ring_t ring;
static _Atomic uint64_t taken;
static vb_hist_t handoff;

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *cross_consumer(void *arg)
{
    (void)arg;
    pin(1);
    uint64_t n = 0, sum = 0;
    while (n < CROSS_ITERS) {
        const vb_msg_t *m = vb_ring_peek(&ring);
        if (m == NULL)
            continue;
        sum += m->seq;
        vb_ring_release(&ring);
        n++;
    }
    return (void *)(uintptr_t)sum;
}

static void *handoff_consumer(void *arg)
{
    (void)arg;
    pin(1);
    for (uint64_t n = 0; n < HANDOFF_ITERS; n++) {
        const vb_msg_t *m;
        while ((m = vb_ring_peek(&ring)) == NULL)
            ;
        vb_hist_record(&handoff, vb_clock_now_ns() - m->t_enqueue);
        vb_ring_release(&ring);
        atomic_store_explicit(&taken, n + 1, memory_order_release);
    }
    return NULL;
}

int main(void)
{
    if (vb_msg_ring_init(&ring, 1024) != 0) {
        fprintf(stderr, "bench_ring: ring init failed\n");
        return 1;
    }
    printf("slot size %u bytes (vb_msg_t), capacity %u\n",
           vb_ring_slot_size(&ring), vb_ring_capacity(&ring));

    /* 1. Single thread: reserve+commit then peek+release, header only. */
    pin(0);
    uint64_t t0 = vb_clock_now_ns();
    for (uint32_t i = 0; i < SINGLE_ITERS; i++) {
        vb_msg_t *m = vb_ring_reserve(&ring);
        m->seq = i;
        vb_ring_commit(&ring);
        const vb_msg_t *p = vb_ring_peek(&ring);
        if (p->seq != i)
            abort();
        vb_ring_release(&ring);
    }
    double single = (double)(vb_clock_now_ns() - t0) / SINGLE_ITERS;
    printf("single-thread push/pop pair:   %6.2f ns\n", single);

    /* 2. Cross-thread streaming throughput. */
    pthread_t th;
    pthread_create(&th, NULL, cross_consumer, NULL);
    t0 = vb_clock_now_ns();
    for (uint32_t i = 0; i < CROSS_ITERS; i++) {
        vb_msg_t *m;
        while ((m = vb_ring_reserve(&ring)) == NULL)
            ;
        m->seq = i;
        vb_ring_commit(&ring);
    }
    pthread_join(th, NULL);
    double cross = (double)(vb_clock_now_ns() - t0) / CROSS_ITERS;
    printf("cross-thread push/pop pair:    %6.2f ns  (%.1f M msgs/s)\n", cross,
           1e3 / cross);

    /* 3. Hand-off latency, one message in flight. */
    vb_hist_init(&handoff);
    pthread_create(&th, NULL, handoff_consumer, NULL);
    for (uint64_t i = 0; i < HANDOFF_ITERS; i++) {
        vb_msg_t *m;
        while ((m = vb_ring_reserve(&ring)) == NULL)
            ;
        m->t_enqueue = vb_clock_now_ns();
        vb_ring_commit(&ring);
        while (atomic_load_explicit(&taken, memory_order_acquire) <= i)
            ;
    }
    pthread_join(th, NULL);
    printf("cross-thread hand-off latency: p50 %llu ns, p99 %llu ns, "
           "p99.9 %llu ns (%u samples)\n",
           (unsigned long long)vb_hist_quantile(&handoff, 0.5),
           (unsigned long long)vb_hist_quantile(&handoff, 0.99),
           (unsigned long long)vb_hist_quantile(&handoff, 0.999),
           HANDOFF_ITERS);
    vb_ring_destroy(&ring);
    return 0;
}
