/* SPDX-License-Identifier: MIT */
/* A lane's six channels; see lane.h. */
#include "core/lane.h"

#include <string.h>

#include "core/err.h"
#include "core/msg.h"

#define CONTROL_SLOTS   256u
#define AUDIO_SLOTS_MIN 256u
#define AUDIO_SLOTS_MAX 4096u

uint32_t vb_lane_audio_slots(uint32_t calls)
{
    uint64_t want = (uint64_t)calls * 4u;
    uint32_t n = AUDIO_SLOTS_MIN;
    while (n < want && n < AUDIO_SLOTS_MAX)
        n *= 2;
    return n;
}

int vb_lane_chans_init(vb_lane_chans_t *l, uint32_t audio_slots,
                       vb_metrics_t *metrics)
{
    if (l == NULL)
        return VB_EINVAL;
    memset(l, 0, sizeof(*l));
    const struct {
        vb_chan_t *c;
        const char *name;
        uint32_t cap, data, spill;
    } chans[] = {
        {&l->conn, "ingress_to_twilio", CONTROL_SLOTS, VB_MSG_DATA_MAX, 0},
        {&l->prepare, "ingress_to_gemini", CONTROL_SLOTS, VB_MSG_DATA_MAX, 0},
        {&l->tw_to_dsp, "twilio_to_dsp", audio_slots, VB_LANE_TW_TO_DSP_DATA,
         VB_LANE_SPILL_MAX},
        {&l->dsp_to_gm, "dsp_to_gemini", audio_slots, VB_LANE_DSP_TO_GM_DATA,
         0},
        {&l->gm_to_dsp, "gemini_to_dsp", audio_slots, VB_LANE_GM_TO_DSP_DATA,
         VB_LANE_SPILL_MAX},
        {&l->dsp_to_tw, "dsp_to_twilio", audio_slots, VB_LANE_DSP_TO_TW_DATA,
         0},
    };
    for (size_t i = 0; i < sizeof(chans) / sizeof(chans[0]); i++) {
        vb_chan_config_t cfg = {chans[i].name, chans[i].cap, chans[i].data,
                                chans[i].spill, metrics};
        int rc = vb_chan_init(chans[i].c, &cfg);
        if (rc != 0) {
            vb_lane_chans_destroy(l);
            return rc;
        }
    }
    return 0;
}

void vb_lane_chans_destroy(vb_lane_chans_t *l)
{
    if (l == NULL)
        return;
    vb_chan_destroy(&l->conn);
    vb_chan_destroy(&l->prepare);
    vb_chan_destroy(&l->tw_to_dsp);
    vb_chan_destroy(&l->dsp_to_gm);
    vb_chan_destroy(&l->gm_to_dsp);
    vb_chan_destroy(&l->dsp_to_tw);
}
