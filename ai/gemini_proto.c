/* SPDX-License-Identifier: MIT */
/*
 * Gemini Live message building and parsing (see gemini_proto.h). Field names
 * follow spec gemini-live.md §2-4. The parser accepts lowerCamelCase and
 * snake_case keys alike (proto3 JSON), as the service itself does.
 */
#include "ai/gemini_proto.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/b64.h"
#include "core/err.h"

#define UNKNOWN_SEEN_MAX 16

struct vb_gemini_parser {
    vb_gemini_limits_t lim;
    uint8_t *scratch; /* decoded audio of one part */
    size_t scratch_cap;
    char *unknown_seen[UNKNOWN_SEEN_MAX];
    unsigned n_unknown_seen;
    vb_gemini_parse_stats_t stats;
};

/* ------------------------------------------------------------------ */
/* building                                                            */
/* ------------------------------------------------------------------ */

void vb_gemini_setup_defaults(vb_gemini_setup_t *s)
{
    memset(s, 0, sizeof(*s));
    s->voice = VB_GEMINI_DEFAULT_VOICE;
    s->language = VB_GEMINI_DEFAULT_LANGUAGE;
    s->temperature = -1;
    s->end_call = true;
    s->vad_prefix_padding_ms = -1;
    s->vad_silence_ms = -1;
    s->thinking_budget = -2;
    s->input_transcription = true;
    s->output_transcription = true;
    s->resumption = true;
    s->compression = true;
}

static int finish(cJSON *root, char **out, size_t *len)
{
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (s == NULL)
        return VB_ENOMEM;
    *out = s;
    if (len != NULL)
        *len = strlen(s);
    return 0;
}

/* cJSON_Add* return NULL on allocation failure; one flag collects them so
 * the builders read straight through and fail once at the end. */
#define CHK(expr)            \
    do {                     \
        if ((expr) == NULL)  \
            goto fail_nomem; \
    } while (0)

static cJSON *add_obj(cJSON *parent, const char *name)
{
    return cJSON_AddObjectToObject(parent, name);
}

static const char *sens_name(vb_gemini_sens_t s, bool start)
{
    if (s == VB_GEMINI_SENS_HIGH)
        return start ? "START_SENSITIVITY_HIGH" : "END_SENSITIVITY_HIGH";
    if (s == VB_GEMINI_SENS_LOW)
        return start ? "START_SENSITIVITY_LOW" : "END_SENSITIVITY_LOW";
    return NULL;
}

static int add_function(cJSON *decls, const vb_gemini_function_t *f)
{
    cJSON *d = cJSON_CreateObject();
    if (d == NULL)
        return VB_ENOMEM;
    cJSON_AddItemToArray(decls, d);
    if (f->name == NULL || f->name[0] == '\0')
        return VB_EINVAL;
    if (cJSON_AddStringToObject(d, "name", f->name) == NULL)
        return VB_ENOMEM;
    if (f->description != NULL &&
        cJSON_AddStringToObject(d, "description", f->description) == NULL)
        return VB_ENOMEM;
    if (f->parameters_json != NULL) {
        cJSON *p = cJSON_Parse(f->parameters_json);
        if (p == NULL || !cJSON_IsObject(p)) {
            cJSON_Delete(p);
            return VB_EINVAL;
        }
        cJSON_AddItemToObject(d, "parameters", p);
    }
    return 0;
}

/* transfer_call(target): `target` one of the names, as an enum the model
 * must pick from. */
static int add_transfer(cJSON *decls, const char *const *names, size_t n)
{
    cJSON *d = cJSON_CreateObject(), *p, *props, *t, *en, *req, *r;
    if (d == NULL)
        return VB_ENOMEM;
    cJSON_AddItemToArray(decls, d);
    if (cJSON_AddStringToObject(d, "name", VB_GEMINI_TRANSFER_CALL) == NULL ||
        cJSON_AddStringToObject(
            d, "description",
            "Transfer the caller to a person. Tell the caller first; call "
            "this after your sentence. `target` says to whom.") == NULL ||
        (p = cJSON_AddObjectToObject(d, "parameters")) == NULL ||
        cJSON_AddStringToObject(p, "type", "OBJECT") == NULL ||
        (props = cJSON_AddObjectToObject(p, "properties")) == NULL ||
        (t = cJSON_AddObjectToObject(props, "target")) == NULL ||
        cJSON_AddStringToObject(t, "type", "STRING") == NULL ||
        cJSON_AddStringToObject(t, "description",
                                "Who to transfer the caller to.") == NULL ||
        (en = cJSON_AddArrayToObject(t, "enum")) == NULL ||
        (req = cJSON_AddArrayToObject(p, "required")) == NULL ||
        (r = cJSON_CreateString("target")) == NULL)
        return VB_ENOMEM;
    cJSON_AddItemToArray(req, r);
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0')
            return VB_EINVAL;
        cJSON *e = cJSON_CreateString(names[i]);
        if (e == NULL)
            return VB_ENOMEM;
        cJSON_AddItemToArray(en, e);
    }
    return 0;
}

int vb_gemini_build_setup(const vb_gemini_setup_t *s, char **out, size_t *len)
{
    if (s == NULL || out == NULL || s->model == NULL || s->model[0] == '\0')
        return VB_EINVAL;
    int rc = VB_ENOMEM;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return VB_ENOMEM;
    cJSON *setup, *gen, *speech, *vc, *pvc, *mods;
    CHK(setup = add_obj(root, "setup"));

    char model[512];
    if (strncmp(s->model, "models/", 7) == 0 ||
        strncmp(s->model, "projects/", 9) == 0)
        snprintf(model, sizeof(model), "%s", s->model);
    else
        snprintf(model, sizeof(model), "models/%s", s->model);
    CHK(cJSON_AddStringToObject(setup, "model", model));

    CHK(gen = add_obj(setup, "generationConfig"));
    CHK(mods = cJSON_AddArrayToObject(gen, "responseModalities"));
    cJSON *m = cJSON_CreateString("AUDIO");
    CHK(m);
    cJSON_AddItemToArray(mods, m);
    if (s->temperature >= 0)
        CHK(cJSON_AddNumberToObject(gen, "temperature", s->temperature));
    if (s->thinking_budget >= -1 || s->thinking_level != NULL) {
        cJSON *tc;
        CHK(tc = add_obj(gen, "thinkingConfig"));
        if (s->thinking_budget >= -1)
            CHK(cJSON_AddNumberToObject(tc, "thinkingBudget",
                                        s->thinking_budget));
        if (s->thinking_level != NULL)
            CHK(cJSON_AddStringToObject(tc, "thinkingLevel",
                                        s->thinking_level));
    }
    CHK(speech = add_obj(gen, "speechConfig"));
    CHK(vc = add_obj(speech, "voiceConfig"));
    CHK(pvc = add_obj(vc, "prebuiltVoiceConfig"));
    CHK(cJSON_AddStringToObject(
        pvc, "voiceName",
        s->voice && s->voice[0] ? s->voice : VB_GEMINI_DEFAULT_VOICE));
    /* "" or "auto": no languageCode, the model picks the language (3.x
     * native audio follows the caller). NULL: the default. */
    const char *lang = s->language ? s->language : VB_GEMINI_DEFAULT_LANGUAGE;
    if (lang[0] != '\0' && strcasecmp(lang, "auto") != 0)
        CHK(cJSON_AddStringToObject(speech, "languageCode", lang));

    if (s->system_prompt != NULL && s->system_prompt[0] != '\0') {
        cJSON *si, *parts, *part;
        CHK(si = add_obj(setup, "systemInstruction"));
        CHK(parts = cJSON_AddArrayToObject(si, "parts"));
        CHK(part = cJSON_CreateObject());
        cJSON_AddItemToArray(parts, part);
        CHK(cJSON_AddStringToObject(part, "text", s->system_prompt));
        CHK(cJSON_AddStringToObject(si, "role", "user"));
    }

    if (s->end_call || s->n_functions > 0 || s->n_transfer_targets > 0) {
        cJSON *tools, *tool, *decls;
        CHK(tools = cJSON_AddArrayToObject(setup, "tools"));
        CHK(tool = cJSON_CreateObject());
        cJSON_AddItemToArray(tools, tool);
        CHK(decls = cJSON_AddArrayToObject(tool, "functionDeclarations"));
        if (s->end_call) {
            vb_gemini_function_t ec = {
                .name = VB_GEMINI_END_CALL,
                .description =
                    "Hang up the phone call. Call this when the caller says "
                    "goodbye or asks to end the call, after saying goodbye.",
                .parameters_json = NULL,
            };
            if ((rc = add_function(decls, &ec)) != 0)
                goto fail;
        }
        if (s->n_transfer_targets > 0 &&
            (rc = add_transfer(decls, s->transfer_targets,
                               s->n_transfer_targets)) != 0)
            goto fail;
        for (size_t i = 0; i < s->n_functions; i++)
            if ((rc = add_function(decls, &s->functions[i])) != 0)
                goto fail;
    }

    {
        cJSON *ric, *aad;
        CHK(ric = add_obj(setup, "realtimeInputConfig"));
        CHK(aad = add_obj(ric, "automaticActivityDetection"));
        CHK(cJSON_AddBoolToObject(aad, "disabled", s->vad_disabled));
        const char *ss = sens_name(s->vad_start, true);
        const char *es = sens_name(s->vad_end, false);
        if (ss != NULL)
            CHK(cJSON_AddStringToObject(aad, "startOfSpeechSensitivity", ss));
        if (es != NULL)
            CHK(cJSON_AddStringToObject(aad, "endOfSpeechSensitivity", es));
        if (s->vad_prefix_padding_ms >= 0)
            CHK(cJSON_AddNumberToObject(aad, "prefixPaddingMs",
                                        s->vad_prefix_padding_ms));
        if (s->vad_silence_ms >= 0)
            CHK(cJSON_AddNumberToObject(aad, "silenceDurationMs",
                                        s->vad_silence_ms));
        CHK(cJSON_AddStringToObject(ric, "activityHandling",
                                    "START_OF_ACTIVITY_INTERRUPTS"));
    }

    if (s->input_transcription)
        CHK(add_obj(setup, "inputAudioTranscription"));
    if (s->output_transcription)
        CHK(add_obj(setup, "outputAudioTranscription"));

    if (s->resumption || s->resume_handle != NULL) {
        cJSON *sr;
        CHK(sr = add_obj(setup, "sessionResumption"));
        if (s->resume_handle != NULL && s->resume_handle[0] != '\0')
            CHK(cJSON_AddStringToObject(sr, "handle", s->resume_handle));
    }

    if (s->compression) {
        cJSON *cwc, *sw;
        CHK(cwc = add_obj(setup, "contextWindowCompression"));
        if (s->compression_trigger_tokens > 0)
            CHK(cJSON_AddNumberToObject(cwc, "triggerTokens",
                                        (double)s->compression_trigger_tokens));
        CHK(sw = add_obj(cwc, "slidingWindow"));
        if (s->compression_target_tokens > 0)
            CHK(cJSON_AddNumberToObject(sw, "targetTokens",
                                        (double)s->compression_target_tokens));
    }
    return finish(root, out, len);

fail_nomem:
    rc = VB_ENOMEM;
fail:
    cJSON_Delete(root);
    return rc;
}

static const char audio_head[] = "{\"realtimeInput\":{\"audio\":{\"data\":\"";
static const char audio_mid[] = "\",\"mimeType\":\"audio/pcm;rate=";
static const char audio_tail[] = "\"}}}";

size_t vb_gemini_audio_msg_cap(size_t pcm_bytes)
{
    return sizeof(audio_head) + sizeof(audio_mid) + sizeof(audio_tail) + 16 +
           4 * ((pcm_bytes + 2) / 3) + 1;
}

int vb_gemini_build_audio(const void *pcm, size_t pcm_bytes, unsigned rate,
                          char *buf, size_t cap, size_t *len)
{
    if ((pcm == NULL && pcm_bytes > 0) || buf == NULL || rate == 0 ||
        (pcm_bytes & 1u) != 0)
        return VB_EINVAL;
    if (cap < vb_gemini_audio_msg_cap(pcm_bytes))
        return VB_ENOSPC;
    size_t n = sizeof(audio_head) - 1;
    memcpy(buf, audio_head, n);
    n += vb_b64_encode(buf + n, pcm, pcm_bytes); /* cap checked above */
    memcpy(buf + n, audio_mid, sizeof(audio_mid) - 1);
    n += sizeof(audio_mid) - 1;
    n += (size_t)snprintf(buf + n, cap - n, "%u", rate);
    memcpy(buf + n, audio_tail, sizeof(audio_tail));
    n += sizeof(audio_tail) - 1;
    if (len != NULL)
        *len = n;
    return 0;
}

int vb_gemini_build_text(const char *text, char **out, size_t *len)
{
    if (text == NULL || out == NULL)
        return VB_EINVAL;
    cJSON *root = cJSON_CreateObject(), *ri;
    if (root == NULL)
        return VB_ENOMEM;
    CHK(ri = add_obj(root, "realtimeInput"));
    CHK(cJSON_AddStringToObject(ri, "text", text));
    return finish(root, out, len);
fail_nomem:
    cJSON_Delete(root);
    return VB_ENOMEM;
}

int vb_gemini_build_tool_response(const char *id, const char *name,
                                  const char *response_json, char **out,
                                  size_t *len)
{
    if (id == NULL || id[0] == '\0' || name == NULL || out == NULL)
        return VB_EINVAL;
    cJSON *resp = cJSON_Parse(response_json ? response_json : "{}");
    if (resp == NULL || !cJSON_IsObject(resp)) {
        cJSON_Delete(resp);
        return VB_EINVAL;
    }
    cJSON *root = cJSON_CreateObject(), *tr, *frs, *fr;
    if (root == NULL) {
        cJSON_Delete(resp);
        return VB_ENOMEM;
    }
    CHK(tr = add_obj(root, "toolResponse"));
    CHK(frs = cJSON_AddArrayToObject(tr, "functionResponses"));
    CHK(fr = cJSON_CreateObject());
    cJSON_AddItemToArray(frs, fr);
    CHK(cJSON_AddStringToObject(fr, "id", id));
    CHK(cJSON_AddStringToObject(fr, "name", name));
    cJSON_AddItemToObject(fr, "response", resp);
    return finish(root, out, len);
fail_nomem:
    cJSON_Delete(resp);
    cJSON_Delete(root);
    return VB_ENOMEM;
}

int vb_gemini_build_tool_responses(const vb_gemini_fn_response_t *r, size_t n,
                                   char **out, size_t *len)
{
    if (r == NULL || n == 0 || out == NULL)
        return VB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (r[i].id == NULL || r[i].id[0] == '\0' || r[i].name == NULL)
            return VB_EINVAL;
    cJSON *root = cJSON_CreateObject(), *tr, *frs;
    if (root == NULL)
        return VB_ENOMEM;
    CHK(tr = add_obj(root, "toolResponse"));
    CHK(frs = cJSON_AddArrayToObject(tr, "functionResponses"));
    for (size_t i = 0; i < n; i++) {
        cJSON *resp =
            cJSON_Parse(r[i].response_json ? r[i].response_json : "{}");
        if (resp == NULL || !cJSON_IsObject(resp)) {
            cJSON_Delete(resp);
            cJSON_Delete(root);
            return VB_EINVAL;
        }
        cJSON *fr = cJSON_CreateObject();
        if (fr == NULL) {
            cJSON_Delete(resp);
            goto fail_nomem;
        }
        cJSON_AddItemToArray(frs, fr);
        cJSON_AddItemToObject(fr, "response", resp);
        CHK(cJSON_AddStringToObject(fr, "id", r[i].id));
        CHK(cJSON_AddStringToObject(fr, "name", r[i].name));
    }
    return finish(root, out, len);
fail_nomem:
    cJSON_Delete(root);
    return VB_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

bool vb_gemini_json_depth_ok(const char *data, size_t len, unsigned max_depth)
{
    unsigned depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return false;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return true;
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Standard base64 without padding, or URL-safe: what the fast codec
 * refuses. Bit at a time, but the service does not send these forms. */
static int b64_decode_lenient(const char *in, size_t len, uint8_t *out,
                              size_t cap, size_t *n)
{
    /* Padding: strip up to two '=' at the end; then the length mod 4 must
     * not be 1 (that would carry fewer than 8 bits). */
    size_t pad = 0;
    while (len > 0 && in[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
        return VB_EPROTO;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > cap)
        return VB_ENOSPC;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val((unsigned char)in[i]);
        if (v < 0)
            return VB_EPROTO;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* Leftover bits must be zero for a canonical encoding; the service
     * never sends otherwise, so a non-zero tail means corruption. */
    if (bits > 0 && (acc & ((1u << bits) - 1u)) != 0)
        return VB_EPROTO;
    *n = o;
    return 0;
}

/* True when the bits under the padding of the last group are zero, that is
 * when re-encoding the bytes that group gave yields the group again. */
static bool b64_tail_canonical(const char *in, size_t len, const uint8_t *out,
                               size_t n)
{
    size_t k = n % 3;
    if (k == 0)
        return true;
    char group[4];
    vb_b64_encode(group, out + n - k, k);
    return memcmp(group, in + len - 4, 4) == 0;
}

int vb_gemini_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                         size_t *n)
{
    /* The service sends standard padded base64, which the table codec takes
     * (both check the size the same way, before the characters). Whatever
     * it refuses may still be URL-safe or unpadded: the lenient loop rules. */
    size_t got = 0;
    int rc = vb_b64_decode(out, cap, in, len, &got);
    if (rc == 0) {
        if (!b64_tail_canonical(in, len, out, got))
            return VB_EPROTO;
        *n = got;
        return 0;
    }
    if (rc == VB_ENOSPC)
        return VB_ENOSPC;
    return b64_decode_lenient(in, len, out, cap, n);
}

/* Case-insensitive prefix match; returns the rest or NULL. */
static const char *skip_ci(const char *s, const char *prefix)
{
    for (; *prefix != '\0'; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return NULL;
    return s;
}

static const char *skip_sp(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* A parameter value: digits up to ';', spaces or the end. */
static int param_num(const char **pp, unsigned long max, unsigned long *v)
{
    const char *p = *pp;
    if (*p < '0' || *p > '9')
        return VB_EPROTO;
    char *end;
    errno = 0;
    unsigned long r = strtoul(p, &end, 10);
    const char *rest = skip_sp(end);
    if (errno != 0 || (*rest != '\0' && *rest != ';') || r == 0 || r > max)
        return VB_EPROTO;
    *v = r;
    *pp = rest;
    return 0;
}

int vb_gemini_parse_pcm_mime(const char *mime, unsigned *rate)
{
    if (mime == NULL)
        return VB_EPROTO;
    const char *p = skip_ci(mime, "audio/pcm");
    if (p == NULL)
        p = skip_ci(mime, "audio/l16");
    if (p == NULL)
        return VB_EPROTO;
    p = skip_sp(p);
    unsigned long r = 0, ch = 1;
    while (*p != '\0') {
        if (*p != ';')
            return VB_EPROTO;
        p = skip_sp(p + 1);
        const char *v;
        if ((v = skip_ci(p, "rate=")) != NULL) {
            p = v;
            if (param_num(&p, 384000, &r) != 0)
                return VB_EPROTO;
        } else if ((v = skip_ci(p, "channels=")) != NULL) {
            p = v;
            if (param_num(&p, 64, &ch) != 0 || ch != 1)
                return VB_EPROTO; /* only mono is ours */
        } else {
            /* Another parameter: skipped (forward compatible). */
            while (*p != '\0' && *p != ';')
                p++;
        }
    }
    *rate = (unsigned)r;
    return 0;
}

int vb_gemini_parse_duration_ms(const char *s, int64_t *ms)
{
    if (s == NULL || *s < '0' || *s > '9')
        return VB_EPROTO;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end[0] != 's' || end[1] != '\0' || !(v >= 0) || v > 1e9)
        return VB_EPROTO;
    *ms = (int64_t)llround(v * 1000.0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* parsing                                                             */
/* ------------------------------------------------------------------ */

int vb_gemini_parser_create(const vb_gemini_limits_t *lim,
                            vb_gemini_parser_t **out)
{
    if (out == NULL)
        return VB_EINVAL;
    vb_gemini_parser_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return VB_ENOMEM;
    if (lim != NULL)
        p->lim = *lim;
    if (p->lim.max_message == 0)
        p->lim.max_message = VB_GEMINI_DEFAULT_MAX_MESSAGE;
    if (p->lim.max_depth == 0)
        p->lim.max_depth = VB_GEMINI_DEFAULT_MAX_DEPTH;
    if (p->lim.audio_chunk == 0)
        p->lim.audio_chunk = VB_GEMINI_DEFAULT_AUDIO_CHUNK;
    p->lim.audio_chunk &= ~(size_t)1;
    if (p->lim.audio_chunk == 0 || p->lim.max_message > (SIZE_MAX / 4)) {
        free(p);
        return VB_EINVAL;
    }
    /* A base64 string inside the message is shorter than the message. */
    p->scratch_cap = p->lim.max_message / 4 * 3 + 3;
    p->scratch = malloc(p->scratch_cap);
    if (p->scratch == NULL) {
        free(p);
        return VB_ENOMEM;
    }
    *out = p;
    return 0;
}

void vb_gemini_parser_destroy(vb_gemini_parser_t *p)
{
    if (p == NULL)
        return;
    for (unsigned i = 0; i < p->n_unknown_seen; i++)
        free(p->unknown_seen[i]);
    free(p->scratch);
    free(p);
}

void vb_gemini_parser_stats(const vb_gemini_parser_t *p,
                            vb_gemini_parse_stats_t *out)
{
    *out = p->stats;
}

/* Looks a field up by its camelCase name, then by the snake_case one. */
static cJSON *field(const cJSON *obj, const char *camel, const char *snake)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, camel);
    if (v == NULL && snake != NULL)
        v = cJSON_GetObjectItemCaseSensitive(obj, snake);
    return v;
}

static bool truthy(const cJSON *v)
{
    return cJSON_IsTrue(v);
}

static const char *str_or(const cJSON *v, const char *def)
{
    return cJSON_IsString(v) && v->valuestring != NULL ? v->valuestring : def;
}

static int64_t int_of(const cJSON *v)
{
    /* int64 fields may come as numbers or as strings (proto3 JSON). */
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (!(d >= -9.2e18 && d <= 9.2e18))
            return -1;
        return (int64_t)d;
    }
    if (cJSON_IsString(v) && v->valuestring != NULL) {
        char *end;
        errno = 0;
        long long x = strtoll(v->valuestring, &end, 10);
        if (errno == 0 && end != v->valuestring && *end == '\0')
            return (int64_t)x;
    }
    return -1;
}

typedef struct walk {
    vb_gemini_parser_t *p;
    vb_gemini_event_cb cb;
    void *ud;
} walk_t;

static int emit(walk_t *w, vb_gemini_event_t *ev)
{
    return w->cb(ev, w->ud) != 0 ? VB_ECANCELED : 0;
}

static int emit_simple(walk_t *w, vb_gemini_event_kind_t kind)
{
    vb_gemini_event_t ev = {.kind = kind};
    return emit(w, &ev);
}

static int emit_transcript(walk_t *w, const cJSON *t,
                           vb_gemini_event_kind_t kind)
{
    if (t == NULL)
        return 0;
    if (!cJSON_IsObject(t))
        return VB_EPROTO;
    vb_gemini_event_t ev = {.kind = kind};
    ev.text = str_or(field(t, "text", NULL), "");
    ev.finished = truthy(field(t, "finished", NULL));
    return emit(w, &ev);
}

static int emit_audio(walk_t *w, const cJSON *inline_data)
{
    const char *mime = str_or(field(inline_data, "mimeType", "mime_type"), "");
    unsigned rate;
    if (vb_gemini_parse_pcm_mime(mime, &rate) != 0) {
        w->p->stats.parts_skipped++;
        if (skip_ci(mime, "audio/") == NULL)
            return 0; /* an image or other blob: not ours */
        /* Audio in a form we cannot play: said so (rate 0, no data). */
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_AUDIO, .name = mime};
        return emit(w, &ev);
    }
    const cJSON *d = field(inline_data, "data", NULL);
    if (!cJSON_IsString(d) || d->valuestring == NULL)
        return VB_EPROTO;
    size_t n;
    int rc = vb_gemini_b64_decode(d->valuestring, strlen(d->valuestring),
                                  w->p->scratch, w->p->scratch_cap, &n);
    if (rc != 0)
        return VB_EPROTO;
    if ((n & 1u) != 0)
        return VB_EPROTO;
    size_t chunk = w->p->lim.audio_chunk;
    for (size_t off = 0; off < n; off += chunk) {
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_AUDIO};
        ev.data = w->p->scratch + off;
        ev.len = n - off < chunk ? n - off : chunk;
        ev.rate = rate ? rate : VB_GEMINI_OUT_RATE;
        ev.last_chunk = off + ev.len >= n;
        if ((rc = emit(w, &ev)) != 0)
            return rc;
    }
    return 0;
}

static int walk_model_turn(walk_t *w, const cJSON *mt)
{
    if (!cJSON_IsObject(mt))
        return VB_EPROTO;
    const cJSON *parts = field(mt, "parts", NULL);
    if (parts == NULL)
        return 0;
    if (!cJSON_IsArray(parts))
        return VB_EPROTO;
    const cJSON *part;
    cJSON_ArrayForEach(part, parts)
    {
        if (!cJSON_IsObject(part))
            return VB_EPROTO;
        if (truthy(field(part, "thought", NULL))) {
            w->p->stats.thoughts_skipped++;
            continue;
        }
        const cJSON *id = field(part, "inlineData", "inline_data");
        const cJSON *text = field(part, "text", NULL);
        int rc = 0;
        if (cJSON_IsObject(id)) {
            rc = emit_audio(w, id);
        } else if (cJSON_IsString(text)) {
            vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_TEXT};
            ev.text = text->valuestring;
            rc = emit(w, &ev);
        } else {
            /* executableCode, codeExecutionResult, functionCall parts:
             * nothing a phone call can use. */
            w->p->stats.parts_skipped++;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int walk_server_content(walk_t *w, const cJSON *sc)
{
    if (!cJSON_IsObject(sc))
        return VB_EPROTO;
    int rc;
    if ((rc = emit_transcript(
             w, field(sc, "inputTranscription", "input_transcription"),
             VB_GEMINI_EV_INPUT_TRANSCRIPT)) != 0)
        return rc;
    const cJSON *mt = field(sc, "modelTurn", "model_turn");
    if (mt != NULL && (rc = walk_model_turn(w, mt)) != 0)
        return rc;
    if ((rc = emit_transcript(
             w, field(sc, "outputTranscription", "output_transcription"),
             VB_GEMINI_EV_OUTPUT_TRANSCRIPT)) != 0)
        return rc;
    if (truthy(field(sc, "generationComplete", "generation_complete")) &&
        (rc = emit_simple(w, VB_GEMINI_EV_GENERATION_COMPLETE)) != 0)
        return rc;
    if (truthy(field(sc, "interrupted", NULL)) &&
        (rc = emit_simple(w, VB_GEMINI_EV_INTERRUPTED)) != 0)
        return rc;
    if (truthy(field(sc, "turnComplete", "turn_complete"))) {
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_TURN_COMPLETE};
        ev.text = str_or(
            field(sc, "turnCompleteReason", "turn_complete_reason"), NULL);
        if ((rc = emit(w, &ev)) != 0)
            return rc;
    }
    if (truthy(field(sc, "waitingForInput", "waiting_for_input")) &&
        (rc = emit_simple(w, VB_GEMINI_EV_WAITING_FOR_INPUT)) != 0)
        return rc;
    return 0;
}

static int walk_tool_call(walk_t *w, const cJSON *tc)
{
    if (!cJSON_IsObject(tc))
        return VB_EPROTO;
    const cJSON *calls = field(tc, "functionCalls", "function_calls");
    if (calls == NULL)
        return 0;
    if (!cJSON_IsArray(calls))
        return VB_EPROTO;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        if (!cJSON_IsObject(c))
            return VB_EPROTO;
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_TOOL_CALL};
        ev.id = str_or(field(c, "id", NULL), "");
        ev.name = str_or(field(c, "name", NULL), "");
        const cJSON *args = field(c, "args", NULL);
        char *a = NULL;
        if (args != NULL) {
            a = cJSON_PrintUnformatted(args);
            if (a == NULL)
                return VB_ENOMEM;
        }
        ev.text = a != NULL ? a : "{}";
        int rc = emit(w, &ev);
        cJSON_free(a);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int walk_tool_cancel(walk_t *w, const cJSON *tc)
{
    if (!cJSON_IsObject(tc))
        return VB_EPROTO;
    const cJSON *ids = field(tc, "ids", NULL);
    if (ids == NULL)
        return 0;
    if (!cJSON_IsArray(ids))
        return VB_EPROTO;
    const cJSON *id;
    cJSON_ArrayForEach(id, ids)
    {
        if (!cJSON_IsString(id))
            return VB_EPROTO;
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_TOOL_CANCEL};
        ev.id = id->valuestring;
        int rc = emit(w, &ev);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int walk_usage(walk_t *w, const cJSON *u)
{
    if (!cJSON_IsObject(u))
        return VB_EPROTO;
    vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_USAGE};
    ev.usage.prompt =
        int_of(field(u, "promptTokenCount", "prompt_token_count"));
    ev.usage.response =
        int_of(field(u, "responseTokenCount", "response_token_count"));
    if (ev.usage.response < 0) /* Vertex names it candidates */
        ev.usage.response =
            int_of(field(u, "candidatesTokenCount", "candidates_token_count"));
    ev.usage.total = int_of(field(u, "totalTokenCount", "total_token_count"));
    ev.usage.thoughts =
        int_of(field(u, "thoughtsTokenCount", "thoughts_token_count"));
    return emit(w, &ev);
}

/* Top-level keys this parser knows; anything else is an unknown type. */
static const char *const known_top[] = {
    "setupComplete",
    "setup_complete",
    "serverContent",
    "server_content",
    "toolCall",
    "tool_call",
    "toolCallCancellation",
    "tool_call_cancellation",
    "goAway",
    "go_away",
    "sessionResumptionUpdate",
    "session_resumption_update",
    "usageMetadata",
    "usage_metadata",
    "voiceActivity",
    "voice_activity",
    "voiceActivityDetectionSignal",
    "voice_activity_detection_signal",
};

static bool is_known_top(const char *k)
{
    for (size_t i = 0; i < sizeof(known_top) / sizeof(known_top[0]); i++)
        if (strcmp(k, known_top[i]) == 0)
            return true;
    return false;
}

static int report_unknown(walk_t *w, const char *name)
{
    vb_gemini_parser_t *p = w->p;
    for (unsigned i = 0; i < p->n_unknown_seen; i++)
        if (strcmp(p->unknown_seen[i], name) == 0)
            return 0;
    p->stats.unknown_types++;
    if (p->n_unknown_seen == UNKNOWN_SEEN_MAX)
        return 0; /* a peer inventing names: stop reporting */
    char *copy = strdup(name);
    if (copy == NULL)
        return VB_ENOMEM;
    p->unknown_seen[p->n_unknown_seen++] = copy;
    vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_UNKNOWN};
    ev.name = copy;
    return emit(w, &ev);
}

/* voiceActivity {voiceActivityType: ACTIVITY_START|ACTIVITY_END} or
 * voiceActivityDetectionSignal {vadSignalType: VAD_SIGNAL_TYPE_SOS|EOS}
 * (the @google/genai 3.x and python-genai types); other values, such as
 * TYPE_UNSPECIFIED, say nothing. */
static int walk_voice_activity(walk_t *w, const cJSON *root)
{
    const cJSON *v = field(root, "voiceActivity", "voice_activity");
    const char *t = NULL;
    if (v != NULL) {
        if (!cJSON_IsObject(v))
            return VB_EPROTO;
        t = str_or(field(v, "voiceActivityType", "voice_activity_type"), "");
    } else if ((v = field(root, "voiceActivityDetectionSignal",
                          "voice_activity_detection_signal")) != NULL) {
        if (!cJSON_IsObject(v))
            return VB_EPROTO;
        t = str_or(field(v, "vadSignalType", "vad_signal_type"), "");
    } else {
        return 0;
    }
    vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_VOICE_ACTIVITY};
    if (strcmp(t, "ACTIVITY_START") == 0 ||
        strcmp(t, "VAD_SIGNAL_TYPE_SOS") == 0)
        ev.finished = false;
    else if (strcmp(t, "ACTIVITY_END") == 0 ||
             strcmp(t, "VAD_SIGNAL_TYPE_EOS") == 0)
        ev.finished = true;
    else
        return 0;
    return emit(w, &ev);
}

static int walk(walk_t *w, const cJSON *root)
{
    int rc;
    const cJSON *v;
    if ((v = field(root, "setupComplete", "setup_complete")) != NULL &&
        (rc = emit_simple(w, VB_GEMINI_EV_SETUP_COMPLETE)) != 0)
        return rc;
    if ((v = field(root, "serverContent", "server_content")) != NULL &&
        (rc = walk_server_content(w, v)) != 0)
        return rc;
    if ((v = field(root, "toolCall", "tool_call")) != NULL &&
        (rc = walk_tool_call(w, v)) != 0)
        return rc;
    if ((v = field(root, "toolCallCancellation", "tool_call_cancellation")) !=
            NULL &&
        (rc = walk_tool_cancel(w, v)) != 0)
        return rc;
    if ((v = field(root, "goAway", "go_away")) != NULL) {
        if (!cJSON_IsObject(v))
            return VB_EPROTO;
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_GO_AWAY};
        if (vb_gemini_parse_duration_ms(
                str_or(field(v, "timeLeft", "time_left"), NULL),
                &ev.time_left_ms) != 0)
            ev.time_left_ms = -1;
        if ((rc = emit(w, &ev)) != 0)
            return rc;
    }
    if ((v = field(root, "sessionResumptionUpdate",
                   "session_resumption_update")) != NULL) {
        if (!cJSON_IsObject(v))
            return VB_EPROTO;
        vb_gemini_event_t ev = {.kind = VB_GEMINI_EV_RESUMPTION};
        ev.id = str_or(field(v, "newHandle", "new_handle"), "");
        ev.resumable = truthy(field(v, "resumable", NULL));
        if ((rc = emit(w, &ev)) != 0)
            return rc;
    }
    if ((v = field(root, "usageMetadata", "usage_metadata")) != NULL &&
        (rc = walk_usage(w, v)) != 0)
        return rc;
    if ((rc = walk_voice_activity(w, root)) != 0)
        return rc;
    const cJSON *k;
    cJSON_ArrayForEach(k, root)
    {
        if (k->string != NULL && !is_known_top(k->string) &&
            (rc = report_unknown(w, k->string)) != 0)
            return rc;
    }
    return 0;
}

int vb_gemini_parse(vb_gemini_parser_t *p, const void *data, size_t len,
                    vb_gemini_event_cb cb, void *ud)
{
    if (p == NULL || (data == NULL && len > 0) || cb == NULL)
        return VB_EINVAL;
    if (len > p->lim.max_message)
        return VB_EMSGSIZE;
    if (!vb_gemini_json_depth_ok(data, len, p->lim.max_depth))
        return VB_EPROTO;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, false);
    if (root == NULL)
        return VB_EPROTO;
    /* Only whitespace may follow the object (the service ends with \n). */
    const char *stop = (const char *)data + len;
    while (end != NULL && end < stop &&
           (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t' ||
            *end == '\0'))
        end++;
    int rc;
    if (!cJSON_IsObject(root) || end != stop) {
        rc = VB_EPROTO;
    } else {
        p->stats.messages++;
        walk_t w = {.p = p, .cb = cb, .ud = ud};
        rc = walk(&w, root);
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- what a close means ---- */

static bool has(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

vb_gemini_close_class_t vb_gemini_close_classify(int http_status, uint16_t code,
                                                 const char *reason)
{
    static const char *const transient[] = {
        "Operation is not implemented, or supported, or enabled.",
        "Requested entity was not found.",
    };
    if (http_status == 401 || http_status == 403)
        return VB_GEMINI_CLOSE_AUTH;
    if (http_status >= 400 && http_status < 500)
        return VB_GEMINI_CLOSE_CONFIG;
    if (http_status >= 500)
        return VB_GEMINI_CLOSE_RETRY;
    if (code == 1007)
        return VB_GEMINI_CLOSE_CONFIG;
    if (code != 1008)
        return VB_GEMINI_CLOSE_RETRY;
    for (size_t k = 0; k < sizeof(transient) / sizeof(transient[0]); k++)
        if (has(reason, transient[k]))
            return VB_GEMINI_CLOSE_TRANSIENT;
    if (has(reason, "not found for API version") ||
        has(reason, "not supported for bidiGenerateContent") ||
        (has(reason, "models/") && has(reason, "found")))
        return VB_GEMINI_CLOSE_MODEL;
    return VB_GEMINI_CLOSE_POLICY;
}
