/* SPDX-License-Identifier: MIT */
/*
 * A lane's channels (ARCHITECTURE.md §1-2). A lane is one twilio-io, one
 * dsp and one gemini thread; a call lives on one lane for its whole life.
 * The stage threads themselves are created by the composition root
 * (core/main.c); each stage attaches itself to the channels it consumes
 * and produces (core/stage.h), so nothing is wired by hand:
 *
 *   ingress   --conn------> twilio-io     handed-off stream sockets
 *   ingress   --prepare---> gemini        pre-connect at webhook time
 *   twilio-io --tw_to_dsp-> dsp           μ-law 8 kHz + call events
 *   dsp       --dsp_to_gm-> gemini        PCM16 16 kHz + call events
 *   gemini    --gm_to_dsp-> dsp           PCM16 24 kHz + control
 *   dsp       --dsp_to_tw-> twilio-io     μ-law frames + control
 *
 * Every channel is an SPSC ring of vb_msg_t (core/msg.h) whose slots are
 * sized to the payload it carries (VB_LANE_*_DATA).
 */
#ifndef VB_CORE_LANE_H
#define VB_CORE_LANE_H

#include <stdint.h>

#include "core/chan.h"
#include "core/metrics.h"

/* Largest payload per channel. One 20 ms μ-law frame is 160 bytes (the
 * channel from twilio-io takes 352: CALL_OPEN carries three SIDs, the
 * assistant's name, its --assistant-url mark, the caller and called
 * numbers and the call's direction); it
 * becomes 640 bytes of 16 kHz PCM16; model audio travels in 20 ms pieces
 * of 24 kHz PCM16 (960 bytes); the channel to twilio-io also carries the
 * fallback text of a HANGUP, so it keeps full slots. */
#define VB_LANE_TW_TO_DSP_DATA 352u
#define VB_LANE_DSP_TO_GM_DATA 640u
#define VB_LANE_GM_TO_DSP_DATA 960u
#define VB_LANE_DSP_TO_TW_DATA VB_MSG_DATA_MAX

_Static_assert(sizeof(vb_msg_open_t) <= VB_LANE_TW_TO_DSP_DATA &&
                   sizeof(vb_msg_close_t) <= VB_LANE_TW_TO_DSP_DATA,
               "CALL_OPEN and CALL_CLOSE fit the twilio_to_dsp slot");

/* Messages parked beyond a full ring before the producer drops (and
 * counts) audio; control messages are parked the same way. */
#define VB_LANE_SPILL_MAX 4096u

typedef struct vb_lane_chans {
    vb_chan_t conn;
    vb_chan_t prepare;
    vb_chan_t tw_to_dsp;
    vb_chan_t dsp_to_gm;
    vb_chan_t gm_to_dsp;
    vb_chan_t dsp_to_tw;
} vb_lane_chans_t;

/* Audio ring depth for a lane carrying up to `calls` calls: the frames in
 * flight between two threads, not seconds of audio (a full ring holds its
 * producer back, never drops): 4 per call, a power of two in 256..4096. */
uint32_t vb_lane_audio_slots(uint32_t calls);

/* Creates all six channels (control: 256 slots; audio: `audio_slots`, a
 * power of two) with their ring series in `metrics` (may be NULL).
 * Returns 0, VB_EINVAL, VB_ENOMEM or VB_ENOSPC; on failure nothing stays
 * allocated. Main thread, before the stages are created. */
int vb_lane_chans_init(vb_lane_chans_t *l, uint32_t audio_slots,
                       vb_metrics_t *metrics);

/* Frees the channels; accepts NULL. After every stage of the lane stopped. */
void vb_lane_chans_destroy(vb_lane_chans_t *l);

#endif
