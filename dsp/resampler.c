/* SPDX-License-Identifier: MIT */
/*
 * The two resampler backends behind one streaming int16 interface
 * (resampler.h). speexdsp works on int16 natively and already behaves as a
 * pure delay. libsamplerate works on float, so its input and output pass
 * through two float buffers sized at create time, in blocks; and since it
 * keeps its output time-aligned by returning fewer samples at first, it is
 * primed with zeros (whose output is discarded) until it has caught up, which
 * turns the hold-back into a pure delay as well. Then both backends return
 * n * out / in samples per call, so callers can size buffers statically.
 */
#include "dsp/resampler.h"

#include <math.h>
#include <samplerate.h>
#include <speex/speex_resampler.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

/* Input samples converted per libsamplerate call: small enough that the two
 * float buffers stay in L1, large enough that call overhead is negligible. */
#define SRC_BLOCK_IN 512
/* Output buffer size bound for one block; big ratios get smaller blocks. */
#define SRC_BLOCK_OUT_MAX 8192
/* Give up priming after this many zeros (far beyond any filter we allow:
 * SINC_BEST at 1:256 holds back about 40 000 input samples). */
#define SRC_PRIME_LIMIT (1u << 22)
/* Samples per speexdsp call, to stay within its 32-bit lengths. */
#define SPEEX_CHUNK (1u << 20)
/* Priming (see src_prime): zeros per step, margin after the first output,
 * and the largest unit. */
#define SRC_PRIME_STEP     32u
#define SRC_PRIME_MARGIN   64u
#define SRC_PRIME_UNIT_MAX 65536u
/* libsamplerate's SRC_ERR_MALLOC_FAILED (its error enum is not public). */
#define SRC_ERR_MALLOC 1

struct vb_resampler {
    vb_resampler_config_t cfg; /* quality resolved */
    double ratio;              /* out / in */
    double delay;              /* output samples */
    int integer_ratio;         /* out_rate is a multiple of in_rate */
    SpeexResamplerState *spx;
    SRC_STATE *src;
    float *fin;  /* SRC_BLOCK_IN-sized input block (libsamplerate) */
    float *fout; /* output of one block */
    size_t fin_cap, fout_cap;
};

static uint32_t gcd(uint32_t a, uint32_t b)
{
    while (b != 0) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int vb_resampler_backend_parse(const char *name, vb_resampler_backend_t *out)
{
    if (name == NULL || out == NULL)
        return VB_EINVAL;
    if (strcmp(name, "speexdsp") == 0)
        *out = VB_RESAMPLER_SPEEXDSP;
    else if (strcmp(name, "libsamplerate") == 0)
        *out = VB_RESAMPLER_LIBSAMPLERATE;
    else
        return VB_EINVAL;
    return 0;
}

static int config_error(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return VB_ECONFIG;
}

int vb_resampler_config_check(const vb_resampler_config_t *cfg,
                              const char **why)
{
    if (why)
        *why = NULL;
    if (cfg == NULL)
        return config_error(why, "no resampler configuration");
    if (cfg->in_rate < VB_RESAMPLER_RATE_MIN ||
        cfg->in_rate > VB_RESAMPLER_RATE_MAX ||
        cfg->out_rate < VB_RESAMPLER_RATE_MIN ||
        cfg->out_rate > VB_RESAMPLER_RATE_MAX)
        return config_error(why, "sample rates must be 1000..384000 Hz");
    if (cfg->out_rate / cfg->in_rate > VB_RESAMPLER_RATIO_MAX ||
        (cfg->out_rate / cfg->in_rate == VB_RESAMPLER_RATIO_MAX &&
         cfg->out_rate % cfg->in_rate) ||
        cfg->in_rate / cfg->out_rate > VB_RESAMPLER_RATIO_MAX ||
        (cfg->in_rate / cfg->out_rate == VB_RESAMPLER_RATIO_MAX &&
         cfg->in_rate % cfg->out_rate))
        return config_error(why, "resampling ratio beyond 1:256");
    switch (cfg->backend) {
    case VB_RESAMPLER_SPEEXDSP:
        if (cfg->quality != VB_RESAMPLER_QUALITY_DEFAULT &&
            (cfg->quality < 0 || cfg->quality > 10))
            return config_error(why, "speexdsp quality must be 0..10 "
                                     "(or -1 for the default, 5)");
        return 0;
    case VB_RESAMPLER_LIBSAMPLERATE:
        if (cfg->quality == VB_RESAMPLER_QUALITY_DEFAULT ||
            cfg->quality == SRC_SINC_BEST_QUALITY ||
            cfg->quality == SRC_SINC_MEDIUM_QUALITY ||
            cfg->quality == SRC_SINC_FASTEST)
            return 0;
        if (cfg->quality == SRC_ZERO_ORDER_HOLD || cfg->quality == SRC_LINEAR) {
            if (cfg->out_rate >= cfg->in_rate)
                return 0;
            return config_error(
                why, "libsamplerate LINEAR (4) and ZERO_ORDER_HOLD (3) "
                     "cannot downsample: they do no anti-alias filtering "
                     "and would fold 4-12 kHz into the phone band; use 0 "
                     "(SINC_BEST), 1 (SINC_MEDIUM) or 2 (SINC_FASTEST)");
        }
        return config_error(why, "libsamplerate quality must be 0 (best), "
                                 "1 (medium), 2 (fastest), 3 (zero-order "
                                 "hold, upsampling only) or 4 (linear, "
                                 "upsampling only); -1 for the default, 1");
    }
    return config_error(why, "unknown resampler backend");
}

/* Runs libsamplerate over `n` floats already in r->fin (from offset 0),
 * appending int16 output to out[*n_out...] if `out` is not NULL (discarding
 * it otherwise) and adding the count to *n_out. */
static int src_run(vb_resampler_t *r, size_t n, int16_t *out, size_t out_cap,
                   size_t *n_out)
{
    size_t used = 0;
    while (used < n) {
        SRC_DATA d = {
            .data_in = r->fin + used,
            .data_out = r->fout,
            .input_frames = (long)(n - used),
            .output_frames = (long)r->fout_cap,
            .end_of_input = 0,
            .src_ratio = r->ratio,
        };
        int err = src_process(r->src, &d);
        if (err != 0) {
            VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                               "libsamplerate src_process failed",
                               "err=%d reason=%s", err, src_strerror(err));
            return VB_EIO;
        }
        size_t gen = (size_t)d.output_frames_gen;
        if (d.input_frames_used == 0 && gen == 0) {
            VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                               "libsamplerate made no progress", "left=%zu",
                               n - used);
            return VB_EIO;
        }
        if (out != NULL) {
            /* The caller checked room for max_out(); more output than that
             * would break the pure-delay invariant, so say so loudly. */
            if (gen > out_cap - *n_out) {
                VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                                   "libsamplerate produced more than "
                                   "expected",
                                   "gen=%zu room=%zu", gen, out_cap - *n_out);
                return VB_EIO;
            }
            src_float_to_short_array(r->fout, out + *n_out, (int)gen);
        }
        *n_out += gen;
        used += (size_t)d.input_frames_used;
    }
    return 0;
}

/* Resets libsamplerate and feeds it zeros until its output has caught up
 * with its input: from then on each call returns n * ratio samples and the
 * zeros' output is what would have been owed. The delay is how far the first
 * real sample lands from the start of the (discarded-so-far) output. Zeros
 * go in whole units of in / gcd(in, out) samples when that is not huge, so
 * the delay is a whole number of output samples (46, not 45.33, at 24k ->
 * 8k) and a file tool can compensate it exactly. */
static int src_prime(vb_resampler_t *r)
{
    int err = src_reset(r->src);
    if (err != 0) {
        vb_log_error(NULL, "libsamplerate src_reset failed", "err=%d reason=%s",
                     err, src_strerror(err));
        return VB_EIO;
    }
    memset(r->fin, 0, r->fin_cap * sizeof(*r->fin));
    size_t unit = r->cfg.in_rate / gcd(r->cfg.in_rate, r->cfg.out_rate);
    if (unit > SRC_PRIME_UNIT_MAX)
        unit = 1;
    /* Small steps keep the overshoot, and so the work, small: every output
     * sample costs a full filter evaluation. Once output flows, a margin of
     * SRC_PRIME_MARGIN more zeros puts the state well inside its steady regime;
     * then the unit is completed. */
    size_t fed = 0, got = 0, target = SIZE_MAX;
    while (fed < target || fed % unit != 0) {
        if (fed >= SRC_PRIME_LIMIT) {
            vb_log_error(NULL, "libsamplerate priming did not converge",
                         "fed=%zu", fed);
            return VB_EIO;
        }
        size_t blk = SRC_PRIME_STEP < r->fin_cap ? SRC_PRIME_STEP : r->fin_cap;
        if (fed >= target && unit - fed % unit < blk)
            blk = unit - fed % unit;
        int rc = src_run(r, blk, NULL, 0, &got);
        if (rc != 0)
            return rc;
        fed += blk;
        if (got > 0 && target == SIZE_MAX)
            target = fed + SRC_PRIME_MARGIN;
    }
    r->delay = (double)fed * r->ratio - (double)got;
    /* The sinc converters are time-aligned, so the count is the whole delay.
     * LINEAR interpolates towards the newest input, lagging one input sample
     * (ratio output samples); ZERO_ORDER_HOLD lags the same and then holds
     * each input for `ratio` outputs, whose centre is (ratio - 1) / 2 later.
     * Both are allowed for upsampling only. */
    if (r->cfg.quality == SRC_LINEAR)
        r->delay += r->ratio;
    else if (r->cfg.quality == SRC_ZERO_ORDER_HOLD)
        r->delay += r->ratio + (r->ratio - 1) / 2;
    return 0;
}

static int speex_error(int err, const char *what)
{
    vb_log_error(NULL, what, "err=%d reason=%s", err,
                 speex_resampler_strerror(err));
    return err == RESAMPLER_ERR_ALLOC_FAILED ? VB_ENOMEM : VB_EIO;
}

int vb_resampler_create(vb_resampler_t **out, const vb_resampler_config_t *cfg)
{
    if (out == NULL || cfg == NULL)
        return VB_EINVAL;
    *out = NULL;
    int rc = vb_resampler_config_check(cfg, NULL);
    if (rc != 0)
        return rc;

    vb_resampler_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return VB_ENOMEM;
    r->cfg = *cfg;
    r->ratio = (double)cfg->out_rate / (double)cfg->in_rate;
    r->integer_ratio = cfg->out_rate % cfg->in_rate == 0;

    if (cfg->backend == VB_RESAMPLER_SPEEXDSP) {
        if (r->cfg.quality == VB_RESAMPLER_QUALITY_DEFAULT)
            r->cfg.quality = VB_RESAMPLER_SPEEX_DEFAULT;
        int err = 0;
        r->spx = speex_resampler_init(1, cfg->in_rate, cfg->out_rate,
                                      r->cfg.quality, &err);
        if (r->spx == NULL) {
            rc = speex_error(err, "speexdsp resampler init failed");
            goto fail;
        }
        /* speexdsp starts with filt_len - 1 zeros of history and centres
         * its filter filt_len / 2 input samples back, so input sample i
         * comes out at i * ratio + (filt_len / 2) * ratio. */
        r->delay = (double)speex_resampler_get_input_latency(r->spx) * r->ratio;
    } else {
        if (r->cfg.quality == VB_RESAMPLER_QUALITY_DEFAULT)
            r->cfg.quality = VB_RESAMPLER_SRC_DEFAULT;
        int err = 0;
        r->src = src_new(r->cfg.quality, 1, &err);
        if (r->src == NULL) {
            vb_log_error(NULL, "libsamplerate src_new failed",
                         "err=%d reason=%s", err, src_strerror(err));
            rc = err == SRC_ERR_MALLOC ? VB_ENOMEM : VB_EIO;
            goto fail;
        }
        size_t per_in = (size_t)ceil(r->ratio);
        r->fin_cap = SRC_BLOCK_IN;
        if (r->fin_cap * per_in > SRC_BLOCK_OUT_MAX)
            r->fin_cap = SRC_BLOCK_OUT_MAX / per_in;
        /* ceil(n * ratio) plus slack for the fractional phase. */
        r->fout_cap = (size_t)ceil((double)r->fin_cap * r->ratio) + 4;
        r->fin = malloc(r->fin_cap * sizeof(*r->fin));
        r->fout = malloc(r->fout_cap * sizeof(*r->fout));
        if (r->fin == NULL || r->fout == NULL) {
            rc = VB_ENOMEM;
            goto fail;
        }
        rc = src_prime(r);
        if (rc != 0)
            goto fail;
    }
    *out = r;
    return 0;

fail:
    vb_resampler_destroy(r);
    return rc;
}

void vb_resampler_destroy(vb_resampler_t *r)
{
    if (r == NULL)
        return;
    if (r->spx)
        speex_resampler_destroy(r->spx);
    if (r->src)
        src_delete(r->src);
    free(r->fin);
    free(r->fout);
    free(r);
}

size_t vb_resampler_max_out(const vb_resampler_t *r, size_t n_in)
{
    uint64_t in = r->cfg.in_rate, outr = r->cfg.out_rate;
    if (n_in == 0)
        return 0;
    if (n_in > (SIZE_MAX - 2) / outr)
        return SIZE_MAX;
    if (r->integer_ratio)
        return n_in * (size_t)(outr / in);
    return (size_t)((n_in * outr + in - 1) / in) + 2;
}

static int speex_run(vb_resampler_t *r, const int16_t *in, size_t n_in,
                     int16_t *out, size_t out_cap, size_t *n_out)
{
    while (n_in > 0) {
        spx_uint32_t ilen =
            n_in > SPEEX_CHUNK ? SPEEX_CHUNK : (spx_uint32_t)n_in;
        size_t room = out_cap - *n_out;
        spx_uint32_t olen = room > UINT32_MAX ? UINT32_MAX : (spx_uint32_t)room;
        spx_uint32_t want = ilen;
        /* A NULL input makes speexdsp read zeros. */
        int err = speex_resampler_process_int(r->spx, 0, in, &ilen,
                                              out + *n_out, &olen);
        if (err != RESAMPLER_ERR_SUCCESS) {
            VB_LOG_RATELIMITED(VB_LOG_ERROR, 1000, NULL,
                               "speexdsp process failed", "err=%d reason=%s",
                               err, speex_resampler_strerror(err));
            return VB_EIO;
        }
        if (ilen != want) {
            VB_LOG_RATELIMITED(
                VB_LOG_ERROR, 1000, NULL, "speexdsp left input unconsumed",
                "want=%u used=%u", (unsigned)want, (unsigned)ilen);
            return VB_EIO;
        }
        *n_out += olen;
        n_in -= ilen;
        if (in)
            in += ilen;
    }
    return 0;
}

static int src_convert(vb_resampler_t *r, const int16_t *in, size_t n_in,
                       int16_t *out, size_t out_cap, size_t *n_out)
{
    while (n_in > 0) {
        size_t blk = n_in < r->fin_cap ? n_in : r->fin_cap;
        if (in) {
            src_short_to_float_array(in, r->fin, (int)blk);
            in += blk;
        } else {
            memset(r->fin, 0, blk * sizeof(*r->fin));
        }
        int rc = src_run(r, blk, out, out_cap, n_out);
        if (rc != 0)
            return rc;
        n_in -= blk;
    }
    return 0;
}

int vb_resampler_process(vb_resampler_t *r, const int16_t *in, size_t n_in,
                         int16_t *out, size_t out_cap, size_t *n_out)
{
    if (r == NULL || out == NULL || n_out == NULL)
        return VB_EINVAL;
    *n_out = 0;
    if (out_cap < vb_resampler_max_out(r, n_in))
        return VB_ENOSPC;
    if (r->spx)
        return speex_run(r, in, n_in, out, out_cap, n_out);
    return src_convert(r, in, n_in, out, out_cap, n_out);
}

int vb_resampler_reset(vb_resampler_t *r)
{
    if (r == NULL)
        return VB_EINVAL;
    if (r->spx) {
        int err = speex_resampler_reset_mem(r->spx);
        if (err != RESAMPLER_ERR_SUCCESS)
            return speex_error(err, "speexdsp reset failed");
        return 0;
    }
    return src_prime(r);
}

double vb_resampler_delay(const vb_resampler_t *r)
{
    return r->delay;
}

uint64_t vb_resampler_delay_ns(const vb_resampler_t *r)
{
    if (r->delay <= 0)
        return 0;
    return (uint64_t)llround(r->delay * 1e9 / r->cfg.out_rate);
}

const vb_resampler_config_t *vb_resampler_config(const vb_resampler_t *r)
{
    return &r->cfg;
}
