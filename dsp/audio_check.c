/* SPDX-License-Identifier: MIT */
#include "dsp/audio_check.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <ogg/ogg.h>
#include <opus/opusfile.h>

#include "core/b64.h"
#include "core/clock.h"
#include "core/err.h"
#include "dsp/g711.h"
#include "dsp/resampler.h"

typedef struct pcm {
    int16_t *s;
    size_t n, cap;
} pcm_t;

static int pcm_grow(pcm_t *p, size_t need)
{
    if (need <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap : 4096;
    while (cap < need)
        cap *= 2;
    int16_t *s = realloc(p->s, cap * sizeof(int16_t));
    if (s == NULL)
        return VB_ENOMEM;
    p->s = s;
    p->cap = cap;
    return 0;
}

/* ---- answers ---- */

static int answer(cJSON *root, int status, char **json, size_t *json_len)
{
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (s == NULL) {
        *json = NULL;
        *json_len = 0;
        return 500;
    }
    *json = s;
    *json_len = strlen(s);
    return status;
}

static int bad(const char *why, char **json, size_t *json_len)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL && cJSON_AddStringToObject(o, "error", why) == NULL) {
        cJSON_Delete(o);
        o = NULL;
    }
    return answer(o, 400, json, json_len);
}

/* ---- decoding the upload ---- */

/* A whole Ogg stream: only complete pages, the last with end-of-stream.
 * Returns NULL or why not. */
static const char *ogg_whole(const uint8_t *b, size_t n)
{
    ogg_sync_state oy;
    ogg_page og;
    ogg_sync_init(&oy);
    char *buf = ogg_sync_buffer(&oy, (long)n);
    const char *why = NULL;
    if (buf == NULL) {
        ogg_sync_clear(&oy);
        return "out of memory";
    }
    memcpy(buf, b, n);
    ogg_sync_wrote(&oy, (long)n);
    bool any = false, eos = false;
    for (;;) {
        long k = ogg_sync_pageseek(&oy, &og);
        if (k == 0)
            break;
        if (k < 0) {
            why = "audioData: bytes that are not Ogg pages (corrupt)";
            break;
        }
        any = true;
        eos = ogg_page_eos(&og) != 0;
    }
    if (why == NULL && !any)
        why = "audioData: not an Ogg stream";
    else if (why == NULL && (oy.fill > oy.returned || !eos))
        why = "audioData: truncated Ogg stream (no end-of-stream page)";
    ogg_sync_clear(&oy);
    return why;
}

static const char *decode_opus(const uint8_t *b, size_t n, size_t max_samples,
                               pcm_t *out)
{
    const char *why = ogg_whole(b, n);
    if (why != NULL)
        return why;
    int err = 0;
    OggOpusFile *of = op_open_memory(b, n, &err);
    if (of == NULL)
        return "audioData: not an Ogg/Opus stream";
    int16_t st[5760 * 2];
    for (;;) {
        int k = op_read_stereo(of, st, (int)(sizeof(st) / sizeof(st[0])));
        if (k == 0)
            break;
        if (k < 0) {
            why = "audioData: corrupt Opus data";
            break;
        }
        if (out->n + (size_t)k > max_samples) {
            why = "audioData: longer than the limit";
            break;
        }
        if (pcm_grow(out, out->n + (size_t)k) != 0) {
            why = "out of memory";
            break;
        }
        for (int i = 0; i < k; i++)
            out->s[out->n++] =
                (int16_t)(((int32_t)st[2 * i] + (int32_t)st[2 * i + 1]) / 2);
    }
    op_free(of);
    return why;
}

/* ---- measuring ---- */

typedef struct level {
    double peak, rms;
    uint64_t clipped;
} level_t;

static level_t measure(const int16_t *s, size_t n)
{
    level_t l = {0, 0, 0};
    double e = 0;
    int peak = 0;
    for (size_t i = 0; i < n; i++) {
        int v = s[i] < 0 ? -(int)s[i] : s[i];
        if (v > peak)
            peak = v;
        if (v >= 32767)
            l.clipped++;
        e += (double)s[i] * s[i];
    }
    l.peak = peak / 32768.0;
    l.rms = n ? sqrt(e / (double)n) / 32768.0 : 0;
    return l;
}

static double dbfs(double x)
{
    return x > 0 ? 20 * log10(x) : -200;
}

static void add_level(cJSON *o, level_t l)
{
    cJSON_AddNumberToObject(o, "peak", round(l.peak * 1e6) / 1e6);
    cJSON_AddNumberToObject(o, "rms", round(l.rms * 1e6) / 1e6);
    cJSON_AddNumberToObject(o, "peak_dbfs", round(dbfs(l.peak) * 100) / 100);
    cJSON_AddNumberToObject(o, "rms_dbfs", round(dbfs(l.rms) * 100) / 100);
    cJSON_AddNumberToObject(o, "clipped", (double)l.clipped);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void add_times(cJSON *o, uint64_t *t, size_t n)
{
    cJSON *f = cJSON_AddObjectToObject(o, "frame_us");
    if (f == NULL)
        return;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)t[i];
    qsort(t, n, sizeof(*t), cmp_u64);
    size_t k = n ? (size_t)ceil(0.99 * (double)n) - 1 : 0;
    cJSON_AddNumberToObject(f, "mean",
                            n ? round(sum / (double)n / 10.0) / 100.0 : 0);
    cJSON_AddNumberToObject(f, "p99",
                            n ? round((double)t[k] / 10.0) / 100.0 : 0);
}

static int resample(const vb_dsp_config_t *dc, const pcm_t *in, uint32_t from,
                    uint32_t to, pcm_t *out)
{
    if (from == to) {
        if (pcm_grow(out, in->n) != 0)
            return VB_ENOMEM;
        memcpy(out->s, in->s, in->n * sizeof(int16_t));
        out->n = in->n;
        return 0;
    }
    vb_resampler_config_t rc = {dc->backend, dc->quality, from, to};
    vb_resampler_t *r;
    int e = vb_resampler_create(&r, &rc);
    if (e != 0)
        return e;
    size_t cap = vb_resampler_max_out(r, in->n);
    if ((e = pcm_grow(out, cap)) == 0)
        e = vb_resampler_process(r, in->s, in->n, out->s, cap, &out->n);
    vb_resampler_destroy(r);
    return e;
}

static bool add_audio(cJSON *o, const uint8_t *b, size_t n)
{
    char *s = malloc(vb_b64_encoded_len(n) + 1);
    if (s == NULL)
        return false;
    size_t k = vb_b64_encode(s, b, n);
    s[k] = '\0';
    bool ok = cJSON_AddStringToObject(o, "audio", s) != NULL;
    free(s);
    return ok;
}

/* Caller -> model: μ-law 8 kHz frames through vb_dsp_inbound(). */
static int run_inbound(vb_dsp_t *d, const uint8_t *ul, size_t n, bool ret,
                       cJSON *o)
{
    size_t frames = (n + VB_DSP_FRAME_BYTES - 1) / VB_DSP_FRAME_BYTES;
    uint64_t *t = calloc(frames ? frames : 1, sizeof(*t));
    int16_t *pcm = malloc((2 * n + 1) * sizeof(int16_t));
    int rc = VB_ENOMEM;
    if (t == NULL || pcm == NULL)
        goto out;
    size_t got = 0;
    for (size_t f = 0; f < frames; f++) {
        size_t off = f * VB_DSP_FRAME_BYTES;
        size_t k = n - off < VB_DSP_FRAME_BYTES ? n - off : VB_DSP_FRAME_BYTES;
        size_t w = 0;
        uint64_t t0 = vb_clock_now_ns();
        rc = vb_dsp_inbound(d, ul + off, k, pcm + got, 2 * n - got, &w);
        t[f] = vb_clock_now_ns() - t0;
        if (rc != 0)
            goto out;
        got += w;
    }
    cJSON_AddStringToObject(o, "from", "mulaw/8000");
    cJSON_AddStringToObject(o, "to", "linear16/16000");
    cJSON_AddNumberToObject(o, "frames", (double)frames);
    cJSON_AddNumberToObject(o, "samples", (double)got);
    add_times(o, t, frames);
    cJSON_AddNumberToObject(o, "delay_ms",
                            (double)vb_dsp_delay_ns(d, VB_DSP_INBOUND) / 1e6);
    add_level(o, measure(pcm, got));
    rc = 0;
    if (ret && !add_audio(o, (const uint8_t *)pcm, got * sizeof(int16_t)))
        rc = VB_ENOMEM;
out:
    free(t);
    free(pcm);
    return rc;
}

/* Model -> caller: PCM16 24 kHz in 20 ms pieces through
 * vb_dsp_outbound(), then vb_dsp_flush(). */
static int run_outbound(vb_dsp_t *d, const pcm_t *in, bool ret, cJSON *o)
{
    const size_t piece = 480; /* 20 ms at 24 kHz */
    size_t pieces = (in->n + piece - 1) / piece;
    size_t max_frames = in->n / 480 + 4;
    uint64_t *t = calloc(pieces + 1, sizeof(*t));
    uint8_t *ul = malloc(max_frames * VB_DSP_FRAME_BYTES);
    int16_t *lin = malloc(max_frames * VB_DSP_FRAME_BYTES * sizeof(int16_t));
    int rc = VB_ENOMEM;
    if (t == NULL || ul == NULL || lin == NULL)
        goto out;
    size_t frames = 0;
    for (size_t p = 0; p < pieces; p++) {
        size_t off = p * piece;
        size_t k = in->n - off < piece ? in->n - off : piece;
        size_t nf = 0;
        uint64_t t0 = vb_clock_now_ns();
        rc =
            vb_dsp_outbound(d, in->s + off, k, ul + frames * VB_DSP_FRAME_BYTES,
                            max_frames - frames, &nf);
        t[p] = vb_clock_now_ns() - t0;
        if (rc != 0)
            goto out;
        frames += nf;
    }
    size_t nf = 0;
    if (max_frames - frames < VB_DSP_FLUSH_FRAMES_MAX ||
        (rc = vb_dsp_flush(d, ul + frames * VB_DSP_FRAME_BYTES,
                           max_frames - frames, &nf)) != 0) {
        rc = rc ? rc : VB_ENOSPC;
        goto out;
    }
    frames += nf;
    size_t n = frames * VB_DSP_FRAME_BYTES;
    vb_g711_ulaw_decode(lin, ul, n);
    cJSON_AddStringToObject(o, "from", "linear16/24000");
    cJSON_AddStringToObject(o, "to", "mulaw/8000");
    cJSON_AddNumberToObject(o, "frames", (double)frames);
    cJSON_AddNumberToObject(o, "samples", (double)n);
    add_times(o, t, pieces);
    cJSON_AddNumberToObject(o, "delay_ms",
                            (double)vb_dsp_delay_ns(d, VB_DSP_OUTBOUND) / 1e6);
    add_level(o, measure(lin, n));
    rc = 0;
    if (ret && !add_audio(o, ul, n))
        rc = VB_ENOMEM;
out:
    free(t);
    free(ul);
    free(lin);
    return rc;
}

static bool opus_rate(double r)
{
    return r == 8000 || r == 12000 || r == 16000 || r == 24000 || r == 48000;
}

int vb_audio_check_run(const vb_audio_check_config_t *cfg, const char *body,
                       size_t len, char **json, size_t *json_len)
{
    uint32_t max_ms = cfg->max_ms ? cfg->max_ms : VB_AUDIO_CHECK_MAX_MS;
    char why[160];
    if (cfg->max_body > 0 && len > cfg->max_body) {
        snprintf(why, sizeof why,
                 "body: %zu bytes, over this endpoint's limit of %zu "
                 "(3/4 of --max-body-bytes)",
                 len, cfg->max_body);
        return bad(why, json, json_len);
    }
    cJSON *req = cJSON_ParseWithLength(body, len);
    if (req == NULL || !cJSON_IsObject(req)) {
        cJSON_Delete(req);
        return bad("body: not a JSON object", json, json_len);
    }
    int status = 400;
    const char *err = NULL;
    uint8_t *raw = NULL;
    pcm_t in = {0}, in8 = {0}, in24 = {0};
    uint8_t *ul = NULL;
    vb_dsp_t *d = NULL;
    cJSON *root = NULL;

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(req, "audioData");
    const cJSON *jf = cJSON_GetObjectItemCaseSensitive(req, "format");
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(req, "sampleRate");
    const cJSON *jret = cJSON_GetObjectItemCaseSensitive(req, "returnAudio");
    const char *fmt = cJSON_GetStringValue(jf);
    if (!cJSON_IsString(jd)) {
        err = "audioData: required, a base64 string";
        goto done;
    }
    if (fmt == NULL ||
        (strcmp(fmt, "mulaw") != 0 && strcmp(fmt, "linear16") != 0 &&
         strcmp(fmt, "opus") != 0)) {
        err = "format: must be \"mulaw\", \"linear16\" or \"opus\"";
        goto done;
    }
    if (jr != NULL &&
        (!cJSON_IsNumber(jr) || jr->valuedouble != floor(jr->valuedouble))) {
        err = "sampleRate: must be an integer";
        goto done;
    }
    if (jret != NULL && !cJSON_IsBool(jret)) {
        err = "returnAudio: must be true or false";
        goto done;
    }
    bool ret = cJSON_IsTrue(jret);
    double rate = jr ? jr->valuedouble : 0;
    uint32_t in_rate;
    if (strcmp(fmt, "mulaw") == 0) {
        if (jr != NULL && rate != 8000) {
            err = "sampleRate: mulaw is 8000 Hz";
            goto done;
        }
        in_rate = 8000;
    } else if (strcmp(fmt, "linear16") == 0) {
        if (jr == NULL || rate < 8000 || rate > 48000) {
            err = "sampleRate: linear16 needs one from 8000 to 48000";
            goto done;
        }
        in_rate = (uint32_t)rate;
    } else {
        if (jr != NULL && !opus_rate(rate)) {
            err = "sampleRate: opus is one of 8000, 12000, 16000, 24000, "
                  "48000";
            goto done;
        }
        in_rate = 48000; /* what libopusfile decodes to */
    }
    const char *b64 = jd->valuestring;
    size_t blen = strlen(b64), nraw = 0;
    raw = malloc(vb_b64_decoded_max(blen) + 1);
    if (raw == NULL) {
        status = 500;
        err = "out of memory";
        goto done;
    }
    if (vb_b64_decode(raw, vb_b64_decoded_max(blen) + 1, b64, blen, &nraw) !=
        0) {
        err = "audioData: invalid base64";
        goto done;
    }
    if (nraw == 0) {
        err = "audioData: no audio";
        goto done;
    }
    size_t max_samples = (size_t)max_ms * in_rate / 1000;
    if (strcmp(fmt, "mulaw") == 0) {
        if (nraw > max_samples)
            goto too_long;
        if (pcm_grow(&in, nraw) != 0)
            goto oom;
        vb_g711_ulaw_decode(in.s, raw, nraw);
        in.n = nraw;
    } else if (strcmp(fmt, "linear16") == 0) {
        if (nraw % 2 != 0) {
            err = "audioData: linear16 needs an even number of bytes";
            goto done;
        }
        if (nraw / 2 > max_samples)
            goto too_long;
        if (pcm_grow(&in, nraw / 2) != 0)
            goto oom;
        for (size_t i = 0; i < nraw / 2; i++)
            in.s[i] = (int16_t)(uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
        in.n = nraw / 2;
    } else {
        err = decode_opus(raw, nraw, max_samples, &in);
        if (err != NULL && strcmp(err, "out of memory") == 0)
            goto oom;
        if (err != NULL && strstr(err, "limit") != NULL)
            goto too_long;
        if (err != NULL)
            goto done;
        if (in.n == 0) {
            err = "audioData: no audio";
            goto done;
        }
    }

    /* The caller's side takes μ-law 8 kHz: the upload as it is when it is
     * that already, else brought to it. */
    size_t nul;
    if (strcmp(fmt, "mulaw") == 0) {
        ul = raw;
        raw = NULL;
        nul = nraw;
    } else {
        if (resample(&cfg->dsp, &in, in_rate, 8000, &in8) != 0)
            goto fail;
        ul = malloc(in8.n + 1);
        if (ul == NULL)
            goto oom;
        vb_g711_ulaw_encode(ul, in8.s, in8.n);
        nul = in8.n;
    }
    if (resample(&cfg->dsp, &in, in_rate, 24000, &in24) != 0)
        goto fail;
    if (vb_dsp_create(&d, &cfg->dsp) != 0)
        goto fail;

    root = cJSON_CreateObject();
    cJSON *jin = cJSON_AddObjectToObject(root, "input");
    cJSON *jib = cJSON_AddObjectToObject(root, "inbound");
    cJSON *job = cJSON_AddObjectToObject(root, "outbound");
    if (jin == NULL || jib == NULL || job == NULL)
        goto oom;
    cJSON_AddStringToObject(jin, "format", fmt);
    cJSON_AddNumberToObject(jin, "sample_rate", in_rate);
    cJSON_AddNumberToObject(jin, "duration_ms",
                            round((double)in.n * 1e5 / in_rate) / 100.0);
    cJSON_AddNumberToObject(jin, "samples", (double)in.n);
    add_level(jin, measure(in.s, in.n));
    int rc = run_inbound(d, ul, nul, ret, jib);
    if (rc == 0)
        rc = run_outbound(d, &in24, ret, job);
    if (rc == VB_ENOMEM)
        goto oom;
    if (rc != 0)
        goto fail;
    status = 200;
    goto done;

too_long:
    snprintf(why, sizeof(why), "audioData: longer than %u ms", max_ms);
    err = why;
    goto done;
oom:
    status = 500;
    err = "out of memory";
    goto done;
fail:
    status = 500;
    err = "audio processing failed";
done:
    vb_dsp_destroy(d);
    free(raw);
    free(ul);
    free(in.s);
    free(in8.s);
    free(in24.s);
    cJSON_Delete(req);
    if (status == 200)
        return answer(root, 200, json, json_len);
    cJSON_Delete(root);
    if (status == 400)
        return bad(err, json, json_len);
    cJSON *o = cJSON_CreateObject();
    if (o != NULL)
        cJSON_AddStringToObject(o, "error", err ? err : "internal error");
    return answer(o, status, json, json_len);
}
