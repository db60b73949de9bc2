/* SPDX-License-Identifier: MIT */
/*
 * A lane's rings (ARCHITECTURE.md §1-2). A lane is one twilio-io, one dsp
 * and one gemini thread; a call lives on one lane for its whole life. The
 * stage threads themselves are created by the composition root
 * (core/main.c), which passes each stage the ends of these rings it owns:
 *
 *   ingress   --conn------> twilio-io     handed-off stream sockets
 *   ingress   --prepare---> gemini        pre-connect at webhook time
 *   twilio-io --tw_to_dsp-> dsp           μ-law 8 kHz + call events
 *   dsp       --dsp_to_gm-> gemini        PCM16 16 kHz + call events
 *   gemini    --gm_to_dsp-> dsp           PCM16 24 kHz + control
 *   dsp       --dsp_to_tw-> twilio-io     μ-law frames + control
 *
 * Every ring is SPSC and carries vb_msg_t (core/msg.h).
 */
#ifndef VB_CORE_LANE_H
#define VB_CORE_LANE_H

#include <stdint.h>

#include "core/ring.h"

typedef struct vb_lane_rings {
    vb_ring_t conn;
    vb_ring_t prepare;
    vb_ring_t tw_to_dsp;
    vb_ring_t dsp_to_gm;
    vb_ring_t gm_to_dsp;
    vb_ring_t dsp_to_tw;
} vb_lane_rings_t;

/* Audio ring size for `max_calls` calls: about 2 s of 20 ms frames per
 * call at the lane's capacity, a power of two, at least 256 and at most
 * 65536 slots. */
uint32_t vb_lane_audio_slots(uint32_t max_calls);

/* Creates all six rings (control rings: 256 slots; audio rings:
 * `audio_slots`, a power of two). Returns 0, VB_EINVAL or VB_ENOMEM; on
 * failure nothing stays allocated. Main thread, before the stages start. */
int vb_lane_rings_init(vb_lane_rings_t *l, uint32_t audio_slots);

/* Frees the rings; accepts NULL. After every stage of the lane stopped. */
void vb_lane_rings_destroy(vb_lane_rings_t *l);

#endif
