/* SPDX-License-Identifier: MIT */
/*
 * The lane's DSP thread (ARCHITECTURE.md §1-2): one libuv loop that drains
 * two rings and fills two others.
 *
 *   inbound   twilio-io --in--> [dsp] --in--> gemini
 *             AUDIO: μ-law 8 kHz -> PCM16 16 kHz (2 samples per byte);
 *             everything else (CALL_OPEN, DTMF, MARK echo, CALL_CLOSE...) is
 *             forwarded in order.
 *   outbound  gemini --out--> [dsp] --out--> twilio-io
 *             AUDIO: PCM16 24 kHz chunks -> 160-byte μ-law frames;
 *             TURN_END: flush the partial frame, then forward (twilio-io
 *             turns it into a mark); CLEAR: drop pending audio, reset the
 *             resampler, forward at once; others forwarded in order.
 *
 * DESIGN. A core/stage.h stage with two inputs and two outputs
 * (core/chan.h channels). Per-call state (vb_dsp_t) lives in a table
 * indexed by the call id's slot and checked against its generation; it is
 * created on CALL_OPEN and freed on CALL_CLOSE (the only allocations). A
 * message is consumed only when the output channel has room for
 * everything it can produce, so a full ring never drops audio: the
 * message stays in its input ring (held, vb_ring_full_total{ring}
 * counted) and the stage retries on its 1 ms timer, which runs only while
 * something is held (TCP pushes back upstream once the rings fill). Each
 * output message keeps the t_origin of the input it came from; the stage
 * records vb_stage_latency_seconds{stage="dsp_in"|"dsp_out"} (origin to
 * exit); the channels record vb_ring_wait_seconds{ring}.
 */
#ifndef VB_DSP_DSP_STAGE_H
#define VB_DSP_DSP_STAGE_H

#include <uv.h>

#include "core/chan.h"
#include "core/metrics.h"
#include "dsp/dsp.h"

typedef struct vb_dsp_stage_config {
    int lane;            /* for logs and thread name */
    uint32_t max_calls;  /* call table size; call slots must be below it */
    vb_dsp_config_t dsp; /* resampler backend and quality */
    vb_chan_t *in_from_twilio;  /* consumed here */
    vb_chan_t *in_to_gemini;    /* produced here (data_max >= 4) */
    vb_chan_t *out_from_gemini; /* consumed here */
    vb_chan_t *out_to_twilio;   /* produced here (data_max >= 160) */
    vb_metrics_t *metrics;
} vb_dsp_stage_config_t;

typedef struct vb_dsp_stage vb_dsp_stage_t;

/* Creates the stage (loop, call table, metrics series) and attaches it to
 * its channels; does not start the thread. Channels are borrowed and must
 * outlive the stage. Errors:
 * VB_EINVAL (missing channel or metrics, max_calls 0, a data_max too small),
 * VB_ECONFIG (the DSP configuration is refused; logged), VB_ENOMEM,
 * VB_ENOSPC (metrics registry full), VB_ESYS. Main thread. */
int vb_dsp_stage_create(vb_dsp_stage_t **out, const vb_dsp_stage_config_t *cfg);

/* Starts the thread. Returns 0, VB_EBUSY (already started) or VB_ESYS.
 * Main thread. */
int vb_dsp_stage_start(vb_dsp_stage_t *s);

/* Stops the loop and joins the thread; calls still open are freed. Main
 * thread; safe if never started. */
void vb_dsp_stage_stop(vb_dsp_stage_t *s);

/* Frees the stage; accepts NULL. After stop. */
void vb_dsp_stage_destroy(vb_dsp_stage_t *s);

#endif
