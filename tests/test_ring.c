/* SPDX-License-Identifier: MIT */
#include "core/err.h"
#include "core/msg.h"
#include "core/ring.h"
#include "tests/test.h"

#include <pthread.h>
#include <semaphore.h>

TEST(ring_init_rejects_bad_sizes)
{
    vb_ring_t r;
    ASSERT_EQ(vb_ring_init(&r, 0, 8), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(&r, 1, 8), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(&r, 3, 8), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(&r, 1000, 8), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(&r, 8, 0), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(&r, 8, 65537), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(NULL, 8, 8), VB_EINVAL);
    ASSERT_EQ(vb_ring_init(&r, 8, 5), 0);
    ASSERT_EQ(vb_ring_slot_size(&r), 16);
    ASSERT_EQ(vb_ring_capacity(&r), 8);
    vb_ring_destroy(&r);
    vb_ring_destroy(NULL);
}

static void check_empty_full(uint32_t start)
{
    vb_ring_t r;
    ASSERT_EQ(vb_ring_init(&r, 4, 16), 0);
    vb_ring_reset_at(&r, start);
    uint64_t v = 0, out[2];
    ASSERT_EQ(vb_ring_try_pop(&r, out), VB_EAGAIN);
    ASSERT_NULL(vb_ring_peek(&r));
    /* Fill and drain many times so the indices run across `start` + k. */
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 4; i++) {
            uint64_t x = v++;
            ASSERT_EQ(vb_ring_try_push(&r, &x, sizeof(x)), 0);
        }
        ASSERT_EQ(vb_ring_count(&r), 4);
        uint64_t extra = 99;
        ASSERT_EQ(vb_ring_try_push(&r, &extra, sizeof(extra)), VB_ENOSPC);
        ASSERT_NULL(vb_ring_reserve(&r));
        /* Free exactly one slot: one push fits, the next does not. */
        ASSERT_EQ(vb_ring_try_pop(&r, out), 0);
        ASSERT_UEQ(out[0], v - 4);
        uint64_t x = 1000 + (uint64_t)round;
        ASSERT_EQ(vb_ring_try_push(&r, &x, sizeof(x)), 0);
        ASSERT_EQ(vb_ring_try_push(&r, &x, sizeof(x)), VB_ENOSPC);
        for (int i = 0; i < 3; i++) {
            ASSERT_EQ(vb_ring_try_pop(&r, out), 0);
            ASSERT_UEQ(out[0], v - 3 + (uint64_t)i);
        }
        ASSERT_EQ(vb_ring_try_pop(&r, out), 0);
        ASSERT_UEQ(out[0], 1000 + (uint64_t)round);
        ASSERT_EQ(vb_ring_try_pop(&r, out), VB_EAGAIN);
        ASSERT_EQ(vb_ring_count(&r), 0);
    }
    vb_ring_destroy(&r);
}

TEST(ring_empty_full_wraparound)
{
    check_empty_full(0);
    check_empty_full(13);
}

TEST(ring_indices_cross_2_32)
{
    check_empty_full(UINT32_MAX - 5);
    check_empty_full(UINT32_MAX);
    /* Reserve/commit and bulk across the wrap point too. */
    vb_ring_t r;
    ASSERT_EQ(vb_ring_init(&r, 8, 16), 0);
    vb_ring_reset_at(&r, UINT32_MAX - 2);
    uint64_t in[8][2], out[8][2];
    for (int i = 0; i < 8; i++)
        in[i][0] = 500 + (uint64_t)i;
    ASSERT_EQ(vb_ring_push_bulk(&r, in, 8), 8);
    ASSERT_EQ(vb_ring_push_bulk(&r, in, 1), 0);
    ASSERT_EQ(vb_ring_count(&r), 8);
    ASSERT_EQ(vb_ring_pop_bulk(&r, out, 5), 5);
    for (int i = 0; i < 5; i++)
        ASSERT_UEQ(out[i][0], 500 + (uint64_t)i);
    ASSERT_EQ(vb_ring_push_bulk(&r, in, 8), 5);
    ASSERT_EQ(vb_ring_pop_bulk(&r, out, 8), 8);
    ASSERT_UEQ(out[0][0], 505);
    ASSERT_UEQ(out[2][0], 507);
    ASSERT_UEQ(out[3][0], 500);
    ASSERT_UEQ(out[7][0], 504);
    ASSERT_EQ(vb_ring_pop_bulk(&r, out, 8), 0);
    vb_ring_destroy(&r);
}

TEST(ring_reserve_commit_in_place)
{
    vb_ring_t r;
    ASSERT_EQ(vb_msg_ring_init(&r, 4), 0);
    ASSERT_EQ(vb_ring_slot_size(&r) % 16, 0);
    vb_msg_t *m = vb_ring_reserve(&r);
    ASSERT_NOT_NULL(m);
    /* Reserving again before commit hands back the same slot. */
    ASSERT_TRUE(vb_ring_reserve(&r) == m);
    ASSERT_NULL(vb_ring_peek(&r));
    m->kind = VB_MSG_AUDIO;
    m->len = 160;
    m->seq = 7;
    m->call = (vb_call_id_t){3, 9};
    memset(m->data, 0xff, 160);
    vb_ring_commit(&r);
    const vb_msg_t *p = vb_ring_peek(&r);
    ASSERT_TRUE(p == m);
    ASSERT_EQ(p->kind, VB_MSG_AUDIO);
    ASSERT_EQ(p->seq, 7);
    ASSERT_TRUE(vb_call_id_eq(p->call, (vb_call_id_t){3, 9}));
    ASSERT_TRUE(!vb_call_id_eq(p->call, (vb_call_id_t){3, 10}));
    ASSERT_EQ(p->data[159], 0xff);
    vb_ring_release(&r);
    ASSERT_NULL(vb_ring_peek(&r));
    ASSERT_EQ(vb_ring_try_push(&r, m, sizeof(*m) + 1000), VB_EMSGSIZE);
    ASSERT_STR_EQ(vb_msg_kind_name(VB_MSG_CLEAR), "CLEAR");
    ASSERT_STR_EQ(vb_msg_kind_name(99), "?");
    vb_ring_destroy(&r);
}

/* ---- two-thread stress with per-item sequence checks ---- */

/* 1 M items in `make test`, enough for ThreadSanitizer to see both threads
 * wrap the ring a thousand times; `make stress` sets VB_STRESS_ITEMS
 * (50 M by default) for the long run. */
static uint64_t stress_items = 1000000ull;
#define STRESS_ITEMS stress_items

typedef struct {
    uint64_t seq;
    uint64_t check;
} item_t;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void *stress_producer(void *arg)
{
    vb_ring_t *r = arg;
    uint64_t seq = 0;
    item_t batch[16];
    while (seq < STRESS_ITEMS) {
        /* Alternate single in-place pushes and bulk pushes. */
        if ((seq >> 10) & 1) {
            uint32_t n = 0;
            for (; n < 16 && seq + n < STRESS_ITEMS; n++)
                batch[n] = (item_t){seq + n, mix(seq + n)};
            uint32_t done = 0;
            while (done < n)
                done += vb_ring_push_bulk(r, batch + done, n - done);
            seq += n;
        } else {
            item_t *slot;
            while ((slot = vb_ring_reserve(r)) == NULL)
                ;
            slot->seq = seq;
            slot->check = mix(seq);
            vb_ring_commit(r);
            seq++;
        }
    }
    return NULL;
}

TEST_T(ring_two_thread_stress, 120)
{
    const char *env = getenv("VB_STRESS_ITEMS");
    if (env != NULL && *env != '\0') {
        char *end;
        unsigned long long n = strtoull(env, &end, 10);
        if (*end != '\0' || n == 0)
            vb_test_fail(__FILE__, __LINE__,
                         "VB_STRESS_ITEMS must be a positive count, not '%s'",
                         env);
        stress_items = n;
    }
    printf("  %llu items\n", (unsigned long long)stress_items);
    vb_ring_t r;
    ASSERT_EQ(vb_ring_init(&r, 1024, sizeof(item_t)), 0);
    vb_ring_reset_at(&r, UINT32_MAX - 100000);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, stress_producer, &r), 0);
    uint64_t expect = 0;
    item_t batch[8];
    while (expect < STRESS_ITEMS) {
        if ((expect >> 12) & 1) {
            uint32_t n = vb_ring_pop_bulk(&r, batch, 8);
            for (uint32_t i = 0; i < n; i++) {
                if (batch[i].seq != expect || batch[i].check != mix(expect))
                    vb_test_fail(__FILE__, __LINE__,
                                 "bulk item %llu: got seq %llu",
                                 (unsigned long long)expect,
                                 (unsigned long long)batch[i].seq);
                expect++;
            }
        } else {
            const item_t *it = vb_ring_peek(&r);
            if (it == NULL)
                continue;
            if (it->seq != expect || it->check != mix(expect))
                vb_test_fail(__FILE__, __LINE__, "item %llu: got seq %llu",
                             (unsigned long long)expect,
                             (unsigned long long)it->seq);
            vb_ring_release(&r);
            expect++;
        }
    }
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_UEQ(expect, STRESS_ITEMS);
    ASSERT_NULL(vb_ring_peek(&r));
    vb_ring_destroy(&r);
}

/* ---- doorbell protocol: a sleeping consumer is never left asleep ---- */

#define BELL_ITEMS 200000u

typedef struct {
    vb_ring_t ring;
    sem_t bell;
    _Atomic uint32_t rings;
} bell_t;

static void *bell_producer(void *arg)
{
    bell_t *b = arg;
    for (uint32_t i = 0; i < BELL_ITEMS; i++) {
        while (vb_ring_try_push(&b->ring, &i, sizeof(i)) != 0)
            sem_post(&b->bell); /* full: make sure the consumer runs */
        if (vb_ring_wake_needed(&b->ring, 1)) {
            atomic_fetch_add(&b->rings, 1);
            sem_post(&b->bell);
        }
    }
    return NULL;
}

TEST_T(ring_doorbell_never_lost, 120)
{
    bell_t b;
    ASSERT_EQ(vb_ring_init(&b.ring, 64, sizeof(uint32_t)), 0);
    ASSERT_EQ(sem_init(&b.bell, 0, 0), 0);
    atomic_init(&b.rings, 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, bell_producer, &b), 0);
    uint32_t expect = 0, v[4];
    while (expect < BELL_ITEMS) {
        /* Sleep until rung, like a uv_async callback, then drain. A lost
         * wake-up leaves this blocked forever and the case times out. */
        sem_wait(&b.bell);
        while (vb_ring_try_pop(&b.ring, v) == 0) {
            ASSERT_EQ(v[0], expect);
            expect++;
        }
    }
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_GT(atomic_load(&b.rings), 0);
    sem_destroy(&b.bell);
    vb_ring_destroy(&b.ring);
}

#include "core/lane.h"

TEST(lane_channel_sizes)
{
    /* Frames in flight, not seconds of audio: 4 per call, 256..4096. */
    ASSERT_EQ(vb_lane_audio_slots(1), 256);
    ASSERT_EQ(vb_lane_audio_slots(200), 1024);
    ASSERT_EQ(vb_lane_audio_slots(300), 2048);
    ASSERT_EQ(vb_lane_audio_slots(100000), 4096);
    vb_lane_chans_t l;
    ASSERT_EQ(vb_lane_chans_init(&l, 512, NULL), 0);
    ASSERT_EQ(vb_ring_capacity(&l.conn.ring), 256);
    ASSERT_EQ(vb_ring_capacity(&l.dsp_to_tw.ring), 512);
    /* Slots sized to their payload: a μ-law frame's slot is small (its
     * largest message is CALL_OPEN: three SIDs, the assistant and its
     * mark, From/To, the direction). */
    ASSERT_EQ(l.tw_to_dsp.data_max, VB_LANE_TW_TO_DSP_DATA);
    ASSERT_LE(vb_ring_slot_size(&l.tw_to_dsp.ring), 384);
    ASSERT_GE(vb_ring_slot_size(&l.gm_to_dsp.ring),
              offsetof(vb_msg_t, data) + VB_LANE_GM_TO_DSP_DATA);
    ASSERT_GE(vb_ring_slot_size(&l.dsp_to_tw.ring), sizeof(vb_msg_t));
    vb_lane_chans_destroy(&l);
    ASSERT_EQ(vb_lane_chans_init(&l, 1000, NULL), VB_EINVAL);
    vb_lane_chans_destroy(NULL);
}
