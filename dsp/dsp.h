/* SPDX-License-Identifier: MIT */
/*
 * The per-call audio processing the lane's DSP thread runs between Twilio
 * and Gemini (ARCHITECTURE.md §1-2):
 *
 *   inbound   μ-law 8 kHz from the caller -> PCM16 16 kHz for Gemini:
 *             G.711 decode, then 8k -> 16k. n bytes in give exactly 2n
 *             samples out (320 per 20 ms frame), so nothing drifts.
 *   outbound  PCM16 24 kHz from Gemini, in chunks of any size -> μ-law
 *             8 kHz in exact 160-byte (20 ms) frames for Twilio: 24k -> 8k,
 *             G.711 encode, framing. A partial frame waits in the state for
 *             the next chunk; vb_dsp_flush() ends a turn by draining the
 *             resampler and padding the last frame with μ-law silence;
 *             vb_dsp_clear() (barge-in) drops everything pending.
 *
 * DESIGN. One vb_dsp_t per call, owned by the DSP thread: it is created on
 * CALL_OPEN and destroyed on CALL_CLOSE, and every other function is called
 * from that thread only. Only vb_dsp_create() allocates. Outbound frames go
 * into a caller-provided array (size it with VB_DSP_OUT_FRAMES_MAX), so a
 * caller facing a full ring can keep them without the DSP state having to.
 *
 * Delay: each direction adds its resampler's pure delay (vb_dsp_delay_ns;
 * 5 ms per direction with the default speexdsp quality 5, docs/dsp.md). The
 * G.711 codec adds none. Outbound framing adds up to one frame of waiting.
 */
#ifndef VB_DSP_DSP_H
#define VB_DSP_DSP_H

#include <stddef.h>
#include <stdint.h>

#include "dsp/resampler.h"

/* Rates: μ-law to and from Twilio; PCM16 to Gemini; PCM16 from Gemini. */
#define VB_DSP_TWILIO_RATE     8000u
#define VB_DSP_GEMINI_IN_RATE  16000u
#define VB_DSP_GEMINI_OUT_RATE 24000u
/* 20 ms: one Twilio frame of μ-law at 8 kHz; PCM16 samples at 16 kHz. */
#define VB_DSP_FRAME_BYTES   160u
#define VB_DSP_FRAME_SAMPLES 320u

/* Outbound frames one vb_dsp_outbound() call may emit for `n` input samples
 * (an upper bound: a partial frame of up to 159 bytes may be waiting, and
 * 24k -> 8k gives at most n/3 + 2 samples). */
#define VB_DSP_OUT_FRAMES_MAX(n) \
    (((size_t)(n) / 3 + 3 + VB_DSP_FRAME_BYTES - 1) / VB_DSP_FRAME_BYTES)

/* Frames one vb_dsp_flush() may emit: the pending bytes (< 160), plus the
 * resampler's delay (< 20 ms for every allowed backend and quality), padded
 * up to a whole frame. */
#define VB_DSP_FLUSH_FRAMES_MAX 2

typedef struct vb_dsp_config {
    vb_resampler_backend_t backend;
    int quality; /* VB_RESAMPLER_QUALITY_DEFAULT or see resampler.h */
} vb_dsp_config_t;

typedef enum vb_dsp_dir {
    VB_DSP_INBOUND,  /* caller -> Gemini */
    VB_DSP_OUTBOUND, /* Gemini -> caller */
} vb_dsp_dir_t;

typedef struct vb_dsp vb_dsp_t;

/* Creates one call's state: both resamplers and the frame buffer. Stores it
 * in *out; the caller owns it. Errors: VB_EINVAL (NULL), VB_ECONFIG (the
 * backend/quality cannot do both directions, e.g. libsamplerate LINEAR;
 * vb_resampler_config_check() on the outbound 24k -> 8k config says why),
 * VB_ENOMEM, VB_EIO. Any thread; the state then belongs to one thread. */
int vb_dsp_create(vb_dsp_t **out, const vb_dsp_config_t *cfg);

/* Frees the state; NULL is accepted. */
void vb_dsp_destroy(vb_dsp_t *d);

/* Inbound: decodes `n` μ-law bytes and converts them to 16 kHz, writing
 * exactly 2n samples to `pcm` (which must hold `cap` >= 2n, else VB_ENOSPC
 * and nothing is consumed) and storing 2n in *n_out. Any n, typically 160.
 * Errors: VB_EINVAL (NULL), VB_ENOSPC, VB_EIO (resampler failed; reset
 * with vb_dsp_reset). Never allocates. */
int vb_dsp_inbound(vb_dsp_t *d, const uint8_t *ulaw, size_t n, int16_t *pcm,
                   size_t cap, size_t *n_out);

/* Outbound: converts `n` samples of 24 kHz PCM16 (any n, 0 included) and
 * appends them to the pending frame; every completed 160-byte μ-law frame is
 * copied to `frames` (consecutive 160-byte frames, room for `max_frames`)
 * and counted in *n_frames. Chunked input gives the same frames as the
 * concatenation in one call. If max_frames < VB_DSP_OUT_FRAMES_MAX(n),
 * returns VB_ENOSPC and consumes nothing. Errors: VB_EINVAL (NULL pointer
 * with n > 0 or missing frames/n_frames), VB_ENOSPC, VB_EIO. Never
 * allocates. */
int vb_dsp_outbound(vb_dsp_t *d, const int16_t *pcm, size_t n, uint8_t *frames,
                    size_t max_frames, size_t *n_frames);

/* End of turn: pushes the audio still inside the outbound resampler out
 * (by feeding it its delay's worth of zeros), then emits the partial frame,
 * padded with μ-law silence (0xFF). Frames go to `frames` as above, at most
 * VB_DSP_FLUSH_FRAMES_MAX of them (max_frames smaller: VB_ENOSPC). Does
 * nothing if no audio came in since the last flush/clear. The resampler
 * keeps its history, so the next turn continues seamlessly. Errors as for
 * vb_dsp_outbound(). */
int vb_dsp_flush(vb_dsp_t *d, uint8_t *frames, size_t max_frames,
                 size_t *n_frames);

/* Barge-in: drops the pending partial frame and resets the outbound
 * resampler, so nothing received before the clear is ever emitted after it.
 * Returns 0, VB_EINVAL (NULL) or VB_EIO. Never allocates. */
int vb_dsp_clear(vb_dsp_t *d);

/* Resets both directions to the fresh state (e.g. after VB_EIO). Returns 0,
 * VB_EINVAL (NULL) or VB_EIO. */
int vb_dsp_reset(vb_dsp_t *d);

/* Pure resampler delay of one direction, in ns (constant per state). */
uint64_t vb_dsp_delay_ns(const vb_dsp_t *d, vb_dsp_dir_t dir);

/* ---- for tests and tools ---- */
/* Used by tests, not by the pipeline; it stays here because the state is
 * opaque. */

/* Bytes of μ-law waiting in the partial outbound frame (0..159). */
size_t vb_dsp_pending(const vb_dsp_t *d);

#endif
