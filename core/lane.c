/* SPDX-License-Identifier: MIT */
/* A lane's six rings; see lane.h. */
#include "core/lane.h"

#include <string.h>

#include "core/err.h"
#include "core/msg.h"

#define CONTROL_SLOTS   256u
#define AUDIO_SLOTS_MAX 65536u

uint32_t vb_lane_audio_slots(uint32_t max_calls)
{
    /* 2 s of 50 frames/s per call, rounded up to a power of two. */
    uint64_t want = (uint64_t)max_calls * 100u;
    uint32_t n = 256;
    while (n < want && n < AUDIO_SLOTS_MAX)
        n *= 2;
    return n;
}

int vb_lane_rings_init(vb_lane_rings_t *l, uint32_t audio_slots)
{
    if (l == NULL)
        return VB_EINVAL;
    memset(l, 0, sizeof(*l));
    vb_ring_t *rings[] = {&l->conn,      &l->prepare,   &l->tw_to_dsp,
                          &l->dsp_to_gm, &l->gm_to_dsp, &l->dsp_to_tw};
    for (size_t i = 0; i < sizeof(rings) / sizeof(rings[0]); i++) {
        int rc =
            vb_msg_ring_init(rings[i], i < 2 ? CONTROL_SLOTS : audio_slots);
        if (rc != 0) {
            vb_lane_rings_destroy(l);
            return rc;
        }
    }
    return 0;
}

void vb_lane_rings_destroy(vb_lane_rings_t *l)
{
    if (l == NULL)
        return;
    vb_ring_destroy(&l->conn);
    vb_ring_destroy(&l->prepare);
    vb_ring_destroy(&l->tw_to_dsp);
    vb_ring_destroy(&l->dsp_to_gm);
    vb_ring_destroy(&l->gm_to_dsp);
    vb_ring_destroy(&l->dsp_to_tw);
}
