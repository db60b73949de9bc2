/* SPDX-License-Identifier: MIT */
/*
 * Per-call DSP (dsp.h): two resamplers, the G.711 tables and a 160-byte
 * frame assembler. Input is processed in fixed blocks through small stack
 * buffers, so chunks of any size need no allocation, and the outbound
 * frames depend only on the concatenated input, never on how it was split.
 */
#include "dsp/dsp.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "dsp/g711.h"

/* μ-law bytes decoded per inbound step. */
#define IN_BLOCK 256
/* 24 kHz samples converted per outbound step: 20 ms, one frame's worth. */
#define OUT_BLOCK 480
/* Resampler output room for one outbound step: OUT_BLOCK / 3 + 2. */
#define OUT_BLOCK_8K (OUT_BLOCK / 3 + 2)

struct vb_dsp {
    vb_resampler_t *up;   /* 8k -> 16k */
    vb_resampler_t *down; /* 24k -> 8k */
    size_t drain_in;      /* zeros (24 kHz) that push the delay out */
    size_t npending;      /* bytes in pending[] */
    bool dirty;           /* outbound audio since the last flush/clear */
    uint8_t pending[VB_DSP_FRAME_BYTES];
};

int vb_dsp_create(vb_dsp_t **out, const vb_dsp_config_t *cfg)
{
    if (out == NULL || cfg == NULL)
        return VB_EINVAL;
    *out = NULL;
    vb_dsp_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return VB_ENOMEM;
    vb_resampler_config_t up = {
        .backend = cfg->backend,
        .quality = cfg->quality,
        .in_rate = VB_DSP_TWILIO_RATE,
        .out_rate = VB_DSP_GEMINI_IN_RATE,
    };
    vb_resampler_config_t down = {
        .backend = cfg->backend,
        .quality = cfg->quality,
        .in_rate = VB_DSP_GEMINI_OUT_RATE,
        .out_rate = VB_DSP_TWILIO_RATE,
    };
    /* Check the downsampler first: it is the direction a config can fail
     * in alone (libsamplerate LINEAR / ZERO_ORDER_HOLD). */
    int rc = vb_resampler_create(&d->down, &down);
    if (rc == 0)
        rc = vb_resampler_create(&d->up, &up);
    if (rc != 0) {
        vb_dsp_destroy(d);
        return rc;
    }
    d->drain_in = (size_t)ceil(vb_resampler_delay(d->down) *
                               VB_DSP_GEMINI_OUT_RATE / VB_DSP_TWILIO_RATE);
    *out = d;
    return 0;
}

void vb_dsp_destroy(vb_dsp_t *d)
{
    if (d == NULL)
        return;
    vb_resampler_destroy(d->up);
    vb_resampler_destroy(d->down);
    free(d);
}

int vb_dsp_inbound(vb_dsp_t *d, const uint8_t *ulaw, size_t n, int16_t *pcm,
                   size_t cap, size_t *n_out)
{
    if (d == NULL || n_out == NULL || (n > 0 && (ulaw == NULL || pcm == NULL)))
        return VB_EINVAL;
    *n_out = 0;
    if (cap / 2 < n)
        return VB_ENOSPC;
    int16_t lin[IN_BLOCK];
    size_t done = 0;
    while (n > 0) {
        size_t blk = n < IN_BLOCK ? n : IN_BLOCK;
        vb_g711_ulaw_decode(lin, ulaw, blk);
        size_t got;
        int rc =
            vb_resampler_process(d->up, lin, blk, pcm + done, cap - done, &got);
        if (rc != 0)
            return rc == VB_ENOSPC ? VB_EIO : rc;
        done += got;
        ulaw += blk;
        n -= blk;
    }
    *n_out = done;
    return 0;
}

/* Appends μ-law bytes to the pending frame, copying out each frame that
 * fills. The callers checked the room in advance; running out anyway would
 * mean VB_DSP_OUT_FRAMES_MAX is wrong, so it fails rather than overflow. */
static int append(vb_dsp_t *d, const uint8_t *codes, size_t n, uint8_t *frames,
                  size_t max_frames, size_t *n_frames)
{
    while (n > 0) {
        size_t take = VB_DSP_FRAME_BYTES - d->npending;
        if (take > n)
            take = n;
        memcpy(d->pending + d->npending, codes, take);
        d->npending += take;
        codes += take;
        n -= take;
        if (d->npending == VB_DSP_FRAME_BYTES) {
            if (*n_frames == max_frames)
                return VB_EIO;
            memcpy(frames + *n_frames * VB_DSP_FRAME_BYTES, d->pending,
                   VB_DSP_FRAME_BYTES);
            (*n_frames)++;
            d->npending = 0;
        }
    }
    return 0;
}

/* Converts `n` samples (NULL: zeros) and frames the result. */
static int convert_out(vb_dsp_t *d, const int16_t *pcm, size_t n,
                       uint8_t *frames, size_t max_frames, size_t *n_frames)
{
    int16_t lin[OUT_BLOCK_8K];
    uint8_t codes[OUT_BLOCK_8K];
    while (n > 0) {
        size_t blk = n < OUT_BLOCK ? n : OUT_BLOCK;
        size_t got;
        int rc =
            vb_resampler_process(d->down, pcm, blk, lin, OUT_BLOCK_8K, &got);
        if (rc != 0)
            return rc == VB_ENOSPC ? VB_EIO : rc;
        vb_g711_ulaw_encode(codes, lin, got);
        rc = append(d, codes, got, frames, max_frames, n_frames);
        if (rc != 0)
            return rc;
        if (pcm)
            pcm += blk;
        n -= blk;
    }
    return 0;
}

int vb_dsp_outbound(vb_dsp_t *d, const int16_t *pcm, size_t n, uint8_t *frames,
                    size_t max_frames, size_t *n_frames)
{
    if (d == NULL || n_frames == NULL || frames == NULL ||
        (n > 0 && pcm == NULL))
        return VB_EINVAL;
    *n_frames = 0;
    if (max_frames < VB_DSP_OUT_FRAMES_MAX(n))
        return VB_ENOSPC;
    if (n == 0)
        return 0;
    d->dirty = true;
    return convert_out(d, pcm, n, frames, max_frames, n_frames);
}

int vb_dsp_flush(vb_dsp_t *d, uint8_t *frames, size_t max_frames,
                 size_t *n_frames)
{
    if (d == NULL || frames == NULL || n_frames == NULL)
        return VB_EINVAL;
    *n_frames = 0;
    size_t worst = d->npending + vb_resampler_max_out(d->down, d->drain_in);
    if (max_frames < (worst + VB_DSP_FRAME_BYTES - 1) / VB_DSP_FRAME_BYTES)
        return VB_ENOSPC;
    if (!d->dirty)
        return 0;
    int rc = convert_out(d, NULL, d->drain_in, frames, max_frames, n_frames);
    if (rc != 0)
        return rc;
    if (d->npending > 0) {
        if (*n_frames == max_frames)
            return VB_EIO;
        memset(d->pending + d->npending, VB_G711_ULAW_SILENCE,
               VB_DSP_FRAME_BYTES - d->npending);
        memcpy(frames + *n_frames * VB_DSP_FRAME_BYTES, d->pending,
               VB_DSP_FRAME_BYTES);
        (*n_frames)++;
        d->npending = 0;
    }
    d->dirty = false;
    return 0;
}

int vb_dsp_clear(vb_dsp_t *d)
{
    if (d == NULL)
        return VB_EINVAL;
    d->npending = 0;
    d->dirty = false;
    return vb_resampler_reset(d->down);
}

int vb_dsp_reset(vb_dsp_t *d)
{
    if (d == NULL)
        return VB_EINVAL;
    int rc = vb_dsp_clear(d);
    int rc_up = vb_resampler_reset(d->up);
    return rc != 0 ? rc : rc_up;
}

uint64_t vb_dsp_delay_ns(const vb_dsp_t *d, vb_dsp_dir_t dir)
{
    return vb_resampler_delay_ns(dir == VB_DSP_INBOUND ? d->up : d->down);
}

size_t vb_dsp_pending(const vb_dsp_t *d)
{
    return d->npending;
}
