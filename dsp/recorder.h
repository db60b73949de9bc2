/* SPDX-License-Identifier: MIT */
/*
 * Call recording (docs/recording.md): one stereo Ogg/Opus file per call,
 * `<dir>/<CallSid>.opus`, the caller on the left and the assistant on the
 * right as the caller heard it, both on one timeline, 16 kHz.
 *
 *   twilio-io --record--> [recorder]   one channel per lane, no spill
 *
 * What the channel carries (all μ-law 8 kHz, as on the wire; t_origin is
 * a position on the call's timeline, in core/clock.h ns):
 *   CALL_OPEN   vb_msg_open_t; t_origin: the stream start (timeline zero)
 *   AUDIO       flags VB_RECORDER_CALLER: caller audio, t_origin: stream
 *               start + the media message's Twilio timestamp;
 *               flags VB_RECORDER_MODEL: model audio as sent to Twilio,
 *               t_origin: when Twilio starts playing it (twilio-io's
 *               playout model: it plays what it was sent in real time from
 *               when it arrives)
 *   CLEAR       t_origin: the clear; model audio from there on is not heard
 *   CALL_CLOSE  t_origin: the end of the call
 * The producer's push time (t_enqueue) is the recorder's clock: model
 * audio is final up to it (a later clear cannot reach back), caller audio
 * up to it less VB_RECORDER_JITTER_MS.
 *
 * DESIGN. The recorder is a core/stage.h stage of its own (one thread per
 * lane, only when recording is on). Decoding (G.711), resampling to 16 kHz
 * (dsp/resampler, the call's backend), Opus encoding and Ogg paging
 * (libopusenc) and every write happen on its thread; the producer only
 * copies a frame into a ring slot. The producer never waits: when the
 * channel has fewer than VB_RECORDER_RESERVE free slots it drops the audio
 * frame (vb_recording_dropped_frames_total) and the recording has silence
 * there; the slots kept in reserve carry the call events. The file's
 * header pages are written at once and an Ogg page at least every second
 * of audio (OPE_SET_MUXING_DELAY), each with one write(2), so a file is
 * playable up to its last page after a normal end, a drain or a SIGKILL.
 * Per call the recorder holds a 4 s window of caller audio and the model
 * audio not yet played (at most VB_RECORDER_AHEAD_S seconds ahead; beyond
 * it dropped and counted).
 */
#ifndef VB_DSP_RECORDER_H
#define VB_DSP_RECORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/chan.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "dsp/resampler.h"

#define VB_RECORDER_CALLER VB_MSG_REC_CALLER /* AUDIO flags: left */
#define VB_RECORDER_MODEL  VB_MSG_REC_MODEL  /* AUDIO flags: right */

#define VB_RECORDER_RATE      16000u /* the file's input sample rate */
#define VB_RECORDER_RESERVE   16u    /* slots kept for call events */
#define VB_RECORDER_JITTER_MS 250u   /* caller audio may arrive this late */
#define VB_RECORDER_AHEAD_S   120u   /* model audio queued ahead, at most */
#define VB_RECORDER_DATA      512u   /* slot payload (bytes) */

typedef struct vb_recorder_config {
    const char *dir;    /* where files go (borrowed; must exist) */
    int lane;           /* for the thread name and logs */
    uint32_t max_calls; /* call slots are below it */
    uint32_t slots;     /* channel capacity, a power of two >= 64 */
    vb_resampler_backend_t backend;
    int quality;
    int bitrate;            /* Opus bits/s for the stereo stream */
    uint32_t test_delay_us; /* tests: sleep per message taken */
    /* Which calls are recorded: asked on the recorder's thread at each
     * CALL_OPEN (vb_msg_open_t: CallSid, the assistant's name); NULL:
     * every call. The composition root answers it from the call's
     * assistant ("record" in core/assistant.h). */
    bool (*want)(void *ud, const vb_msg_open_t *open);
    void *want_ud;
    vb_metrics_t *metrics; /* borrowed */
} vb_recorder_config_t;

typedef struct vb_recorder vb_recorder_t;

/* Creates the stage and its input channel (ring "twilio_to_recorder").
 * Errors: VB_EINVAL (NULL, empty dir, bad slots), VB_ENOMEM, VB_ENOSPC,
 * VB_ESYS. Main thread. */
int vb_recorder_create(vb_recorder_t **out, const vb_recorder_config_t *cfg);

/* The channel twilio-io produces into (vb_twilio_stream_config_t.record). */
vb_chan_t *vb_recorder_chan(vb_recorder_t *r);

/* Starts the thread: 0, VB_EBUSY, VB_ESYS. Main thread. */
int vb_recorder_start(vb_recorder_t *r);

/* Takes what is left in the channel, finishes every open file (as at its
 * call's end) and joins the thread. After the producer stopped. Main
 * thread; safe if never started. */
void vb_recorder_stop(vb_recorder_t *r);

/* Stops if needed and frees; accepts NULL. */
void vb_recorder_destroy(vb_recorder_t *r);

/* The file a call is recorded to: "<dir>/<call_sid>.opus". Returns 0, or
 * VB_EINVAL when the CallSid is not 1..63 ASCII letters and digits (it is
 * then not recorded) or `out` is too small. Any thread: the post-call
 * report names the file with it. */
int vb_recorder_path(const char *dir, const char *call_sid, char *out,
                     size_t n);

/* The file of `call` (CallSid `call_sid`) when this recorder opened it:
 * its path in `out` and 0. VB_ENOENT when it did not (not recorded: its
 * assistant says so, the file existed or could not be created, an
 * unusable CallSid; `r` NULL), or has not taken the call's CALL_OPEN yet;
 * VB_EINVAL as vb_recorder_path(). One atomic load: any thread, off the
 * audio path (the post-call report asks it at the call's end). */
int vb_recorder_file(const vb_recorder_t *r, vb_call_id_t call,
                     const char *call_sid, char *out, size_t n);

#endif
