/* SPDX-License-Identifier: MIT */
/*
 * Streaming sample-rate conversion of mono int16 audio: one state per
 * direction per call (8 kHz -> 16 kHz toward Gemini, 24 kHz -> 8 kHz toward
 * the caller), fed frame by frame, with two interchangeable backends:
 *
 *   speexdsp       polyphase FIR, quality 0..10 (default 5). The default:
 *                  flat to 3.4 kHz, aliases below -100 dB, ~1/12 of the CPU
 *                  of libsamplerate's medium converter (docs/dsp.md).
 *   libsamplerate  Secret Rabbit Code; quality is its converter id:
 *                  0 SINC_BEST, 1 SINC_MEDIUM (default), 2 SINC_FASTEST,
 *                  3 ZERO_ORDER_HOLD and 4 LINEAR (upsampling only: they do
 *                  no anti-alias filtering, so downsampling with them folds
 *                  everything above the new Nyquist into the passband).
 *
 * Both behave as a pure delay: every call consumes all of its input, the
 * output count follows the input count exactly (n * out / in; for an integer
 * ratio such as 8k -> 16k exactly 2n per call, otherwise within one sample
 * with no long-term drift), and the signal comes out delayed by
 * vb_resampler_delay() output samples. libsamplerate by itself holds back
 * half its filter instead (its first calls return short); this wrapper primes
 * it with zeros at create and reset so it behaves like speexdsp.
 *
 * Threads: a state is used by one thread at a time (the call's DSP thread).
 * Only _create and _destroy allocate; process and reset never do.
 */
#ifndef VB_DSP_RESAMPLER_H
#define VB_DSP_RESAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef enum vb_resampler_backend {
    VB_RESAMPLER_SPEEXDSP = 0,
    VB_RESAMPLER_LIBSAMPLERATE = 1,
} vb_resampler_backend_t;

/* Quality value meaning "the backend's default" (speexdsp 5,
 * libsamplerate 1 = SINC_MEDIUM). */
#define VB_RESAMPLER_QUALITY_DEFAULT (-1)
#define VB_RESAMPLER_SPEEX_DEFAULT   5
#define VB_RESAMPLER_SRC_DEFAULT     1

/* Accepted sample rates, and the largest ratio either way. */
#define VB_RESAMPLER_RATE_MIN  1000u
#define VB_RESAMPLER_RATE_MAX  384000u
#define VB_RESAMPLER_RATIO_MAX 256u

typedef struct vb_resampler_config {
    vb_resampler_backend_t backend;
    int quality; /* VB_RESAMPLER_QUALITY_DEFAULT or per backend, see above */
    uint32_t in_rate;  /* Hz */
    uint32_t out_rate; /* Hz */
} vb_resampler_config_t;

typedef struct vb_resampler vb_resampler_t;

/* Checks `cfg` without creating anything. Returns 0, or VB_ECONFIG with
 * *why (if `why` is not NULL) pointing at a static sentence saying what is
 * wrong: unknown backend, quality out of range for the backend, a rate
 * outside [RATE_MIN, RATE_MAX] or a ratio beyond RATIO_MAX, or
 * libsamplerate's LINEAR or ZERO_ORDER_HOLD asked to downsample.
 * Any thread. */
int vb_resampler_config_check(const vb_resampler_config_t *cfg,
                              const char **why);

/* Creates a state for `cfg` (see vb_resampler_config_check). On success
 * stores it in *out and returns 0; the caller owns it and frees it with
 * vb_resampler_destroy(). Errors: VB_EINVAL (NULL argument), VB_ECONFIG
 * (bad config; vb_resampler_config_check says why), VB_ENOMEM, VB_EIO (the
 * backend failed; its own error is logged). Any thread. */
int vb_resampler_create(vb_resampler_t **out, const vb_resampler_config_t *cfg);

/* Frees the state; NULL is accepted. */
void vb_resampler_destroy(vb_resampler_t *r);

/* Largest number of output samples one vb_resampler_process() call can
 * produce from `n_in` input samples: n_in * out / in when that ratio is an
 * integer, else ceil(n_in * out / in) + 2 (0 for 0). SIZE_MAX if it
 * overflows. */
size_t vb_resampler_max_out(const vb_resampler_t *r, size_t n_in);

/* Converts `n_in` samples from `in` (NULL means n_in zeros) and writes the
 * output to `out`, storing the count in *n_out. All input is consumed.
 * `out` must have room for vb_resampler_max_out(r, n_in) samples; if
 * `out_cap` is smaller, returns VB_ENOSPC and consumes nothing. `in` and
 * `out` must not overlap. Errors: VB_EINVAL (NULL r/out/n_out), VB_ENOSPC,
 * VB_EIO (backend failure; logged at a limited rate; the stream should then
 * be reset). Never allocates. The state's thread only. */
int vb_resampler_process(vb_resampler_t *r, const int16_t *in, size_t n_in,
                         int16_t *out, size_t out_cap, size_t *n_out);

/* Forgets all past input: the next output is what a fresh state would
 * produce. Returns 0, VB_EINVAL (NULL) or VB_EIO. Never allocates. speexdsp
 * just clears its history (tens of ns); libsamplerate is re-primed, which costs
 * roughly a filter length of work (13 us for SINC_MEDIUM 24k -> 8k,
 * docs/dsp.md). The state's thread only. */
int vb_resampler_reset(vb_resampler_t *r);

/* The pure delay of the state in output samples (may be fractional for
 * libsamplerate at non-integer ratios): input sample i comes out centred on
 * output sample i * out / in + delay. Constant for the state's life. */
double vb_resampler_delay(const vb_resampler_t *r);

/* The same delay in nanoseconds, rounded. */
uint64_t vb_resampler_delay_ns(const vb_resampler_t *r);

/* Parses "speexdsp" or "libsamplerate" into *out. Returns 0 or VB_EINVAL. */
int vb_resampler_backend_parse(const char *name, vb_resampler_backend_t *out);

/* ---- for tests and tools ---- */
/* Used by tests, not by the pipeline; it stays here because the state is
 * opaque. */

/* The effective quality (the default resolved) and the config it was made
 * with. */
const vb_resampler_config_t *vb_resampler_config(const vb_resampler_t *r);

#endif
