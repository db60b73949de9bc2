/* SPDX-License-Identifier: MIT */
/*
 * POST /test/audio (docs/recording.md): runs uploaded audio through the
 * DSP path a call uses (dsp/dsp.h), both directions, and reports what it
 * did to it.
 *
 *   request   {"audioData": base64, "format": "mulaw"|"linear16"|"opus",
 *              "sampleRate": N, "returnAudio": bool}
 *             mulaw: 8000 Hz μ-law bytes (sampleRate 8000 or absent);
 *             linear16: little-endian PCM16 mono at sampleRate (8000 to
 *             48000, required); opus: a whole Ogg/Opus stream (ending with
 *             its end-of-stream page), decoded at 48 kHz and mixed to mono;
 *             sampleRate, if given, one of 8000|12000|16000|24000|48000.
 *   inbound   the audio as the caller's: brought to μ-law 8 kHz (what
 *             Twilio sends), then vb_dsp_inbound() frame by frame (-> PCM16
 *             16 kHz for the model).
 *   outbound  the audio as the model's: brought to PCM16 24 kHz (what
 *             Gemini sends), then vb_dsp_outbound() in 20 ms pieces and
 *             vb_dsp_flush() (-> μ-law 8 kHz frames for Twilio).
 *   answer    200 {"input": {format, sample_rate, duration_ms, samples,
 *             peak, rms, peak_dbfs, rms_dbfs, clipped}, "inbound" and
 *             "outbound": {from, to, frames, samples, frame_us: {mean,
 *             p99}, delay_ms, peak, rms, peak_dbfs, rms_dbfs, clipped,
 *             audio (base64 of the output, with returnAudio)}}
 *             Only the DSP calls are timed, not the conversion to their
 *             input format. Levels are of full scale (0..1); clipped
 *             counts samples at full scale (|s| >= 32767).
 *
 * Bad input is a 400 with {"error": reason}: not JSON, a missing or
 * non-base64 audioData, an unknown format, a refused sampleRate, an odd
 * linear16 length, an Ogg stream that is not Opus, corrupt or truncated,
 * no audio, more than max_ms of it, or a body over max_body bytes (the
 * endpoint's own limit: 3/4 of --max-body-bytes, VB_AUDIO_CHECK_MAX_BODY,
 * so a body the server read whole gets a reason; the HTTP layer answers
 * 413 beyond --max-body-bytes). Runs on the caller's thread (the ingress
 * loop): VB_AUDIO_CHECK_MAX_MS of audio takes a few ms to process (docs).
 */
#ifndef VB_DSP_AUDIO_CHECK_H
#define VB_DSP_AUDIO_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "dsp/dsp.h"

#define VB_AUDIO_CHECK_MAX_MS 30000u /* audio per request, at most */

/* The endpoint's body limit for an HTTP body cap of `http_max` bytes. */
#define VB_AUDIO_CHECK_MAX_BODY(http_max) ((http_max) - (http_max) / 4)

typedef struct vb_audio_check_config {
    vb_dsp_config_t dsp; /* the calls' resampler backend and quality */
    uint32_t max_ms;     /* 0 = VB_AUDIO_CHECK_MAX_MS */
    size_t max_body;     /* longer bodies get 400; 0 = no limit of its own */
} vb_audio_check_config_t;

/* Handles one request body. Returns the HTTP status (200, 400, or 500 when
 * out of memory or the DSP fails) and stores a malloc'd JSON answer in
 * *json (NULL only with 500) of *json_len bytes. Any thread. */
int vb_audio_check_run(const vb_audio_check_config_t *cfg, const char *body,
                       size_t len, char **json, size_t *json_len);

#endif
