/* SPDX-License-Identifier: MIT */
/*
 * vb-fake-gemini: the per-connection Live protocol engine (see
 * fake_gemini.h). Strict where the real service is strict (setup first and
 * once, known fields and enums, known model, nothing before setupComplete,
 * valid base64 PCM with a pcm mime type, one realtimeInput field per
 * message, tool responses with ids) and shaped like its recorded output
 * (binary frames of pretty-printed camelCase JSON, spec §4.7).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ai/gemini_proto.h"
#include "bench/fake_gemini/fake_gemini.h"
#include "core/clock.h"
#include "core/err.h"

#define TICK_MS        10
#define CHUNK_MS       100 /* model audio per message */
#define PACE_MS        50  /* one chunk per 50 ms: twice real time */
#define FRAME          320 /* 20 ms at 16 kHz */
#define UTT_MAX        (30 * 16000)
#define INVALID_ARG    "Request contains an invalid argument."
#define BAD_KEY        "API key not valid. Please pass a valid API key."
#define DEADLINE       "Deadline expired before operation could complete."
#define DEFAULT_SIL_MS 500
#define MAX_PENDING    32

const char *const fg_default_models[] = {
    "gemini-3.8-live",
    "gemini-3.8-live-extended-thinking",
    "gemini-3.1-flash-live-preview",
    "gemini-2.5-flash-native-audio-preview-12-2025",
    "gemini-2.5-flash-native-audio-preview-09-2025",
    "gemini-2.5-flash-native-audio-latest",
    NULL,
};

static const char *const voices[] = {
    "Zephyr",     "Puck",          "Charon",       "Kore",
    "Fenrir",     "Leda",          "Orus",         "Aoede",
    "Callirrhoe", "Autonoe",       "Enceladus",    "Iapetus",
    "Umbriel",    "Algieba",       "Despina",      "Erinome",
    "Algenib",    "Rasalgethi",    "Laomedeia",    "Achernar",
    "Alnilam",    "Schedar",       "Gacrux",       "Pulcherrima",
    "Achird",     "Zubenelgenubi", "Vindemiatrix", "Sadachbia",
    "Sadaltager", "Sulafat",       NULL,
};

struct fg_conn {
    fg_server_t *srv;
    int id;
    vb_ws_t *ws;
    uv_timer_t timer;
    bool auth_ok, closing, ws_closed, timer_closed;
    bool setup_done, ready;
    uint64_t t_open, setup_due, t_ready;
    fg_session_t *sess;
    bool resumption, in_tr, out_tr, vad_disabled, no_interrupt;
    int silence_ms;
    /* energy VAD */
    bool speech;
    int voiced_frames, silent_samples;
    int16_t frame[FRAME];
    size_t frame_fill;
    int16_t *utt;
    size_t utt_len;
    uint64_t samples_in;
    uint64_t frames_in; /* whole 20 ms frames received (--timing) */
    uint32_t frame_bytes;
    /* response */
    bool resp_active, resp_generating, resp_started;
    int16_t *rpcm;
    size_t rlen, rpos;
    uint64_t first_audio_at, next_chunk_at, play_end_at, resp_t0;
    /* tools */
    char pending[MAX_PENDING][64];
    int pending_batch[MAX_PENDING]; /* which toolCall message it came in */
    int npending, next_call, nbatch;
    char cancelled[MAX_PENDING][64]; /* the latest cancelled ids */
    int ncancelled;
    /* script and lifetime */
    size_t script_pos;
    uint64_t goaway_at, close_at;
    bool goaway_sent;
    const char *audio_mime; /* a script audio event's "mime", while sent */
    int turns;
    /* --fault */
    bool stalled, garbage;
    uint64_t next_garbage_at;
};

#define GARBAGE_EVERY_MS 50

static uint64_t now_ms(fg_conn_t *c)
{
    return uv_now(c->srv->loop);
}

static cJSON *getf(const cJSON *o, const char *camel, const char *snake)
{
    if (!cJSON_IsObject(o))
        return NULL;
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, camel);
    if (v == NULL && snake != NULL)
        v = cJSON_GetObjectItemCaseSensitive(o, snake);
    return v;
}

static void logf_kv(fg_conn_t *c, const char *type, const char *k,
                    const char *v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    if (k != NULL)
        cJSON_AddStringToObject(o, k, v ? v : "");
    if (c->sess != NULL)
        cJSON_AddNumberToObject(o, "session", c->sess->id);
    fg_log(c->srv, c->id, o);
}

/* ---- sending ---- */

/* cJSON pretty-prints with tabs and spreads an empty object over two
 * lines; the service indents with two spaces, prints "{}" and ends with a
 * newline. Outside strings a tab at a line start is indentation and any
 * other tab follows a colon. */
static char *pretty(const cJSON *o, size_t *len)
{
    char *p = cJSON_Print(o);
    if (p == NULL)
        return NULL;
    char *out = malloc(2 * strlen(p) + 2);
    if (out == NULL) {
        free(p);
        return NULL;
    }
    size_t n = 0;
    bool line_start = true, in_str = false;
    for (char *q = p; *q; q++) {
        if (in_str) {
            out[n++] = *q;
            if (*q == '\\' && q[1] != '\0')
                out[n++] = *++q;
            else if (*q == '"')
                in_str = false;
            continue;
        }
        if (*q == '"') {
            in_str = true;
            line_start = false;
            out[n++] = *q;
            continue;
        }
        if (*q == '{' || *q == '[') {
            char close = *q == '{' ? '}' : ']';
            char *r = q + 1;
            while (*r == '\n' || *r == '\t' || *r == ' ')
                r++;
            if (*r == close) {
                out[n++] = *q;
                out[n++] = close;
                q = r;
                line_start = false;
                continue;
            }
        }
        if (*q == '\t') {
            out[n++] = ' ';
            if (line_start)
                out[n++] = ' ';
            continue;
        }
        line_start = *q == '\n';
        out[n++] = *q;
    }
    out[n++] = '\n';
    out[n] = '\0';
    free(p);
    *len = n;
    return out;
}

static void send_json(fg_conn_t *c, cJSON *o, const char *what)
{
    if (c->ws == NULL || c->closing) {
        cJSON_Delete(o);
        return;
    }
    size_t len;
    char *s = pretty(o, &len);
    cJSON_Delete(o);
    if (s == NULL)
        return;
    vb_ws_send_binary(c->ws, s, len);
    free(s);
    if (what != NULL)
        logf_kv(c, "sent", "what", what);
}

static cJSON *server_content(cJSON **root)
{
    *root = cJSON_CreateObject();
    return cJSON_AddObjectToObject(*root, "serverContent");
}

static void send_flag(fg_conn_t *c, const char *flag)
{
    cJSON *root, *sc = server_content(&root);
    cJSON_AddBoolToObject(sc, flag, true);
    send_json(c, root, flag);
}

static void add_usage(fg_conn_t *c, cJSON *root)
{
    cJSON *u = cJSON_AddObjectToObject(root, "usageMetadata");
    int prompt = (int)(c->samples_in / 16000 * 25) + 100;
    int resp = (int)(c->rlen / 24000 * 25) + 10;
    cJSON_AddNumberToObject(u, "promptTokenCount", prompt);
    cJSON_AddNumberToObject(u, "responseTokenCount", resp);
    cJSON_AddNumberToObject(u, "totalTokenCount", prompt + resp);
}

static void send_turn_complete(fg_conn_t *c)
{
    cJSON *root, *sc = server_content(&root);
    cJSON_AddBoolToObject(sc, "turnComplete", true);
    add_usage(c, root);
    send_json(c, root, "turnComplete");
}

static void send_transcript(fg_conn_t *c, const char *field, const char *text)
{
    cJSON *root, *sc = server_content(&root);
    cJSON *t = cJSON_AddObjectToObject(sc, field);
    cJSON_AddStringToObject(t, "text", text);
    send_json(c, root, field);
}

static void send_resumption(fg_conn_t *c, bool resumable)
{
    if (!c->resumption || c->sess == NULL)
        return;
    cJSON *root = cJSON_CreateObject();
    cJSON *u = cJSON_AddObjectToObject(root, "sessionResumptionUpdate");
    char h[64] = "";
    if (resumable)
        snprintf(h, sizeof(h), "fake-%d-%d", c->sess->id,
                 ++c->sess->handle_seq);
    if (resumable)
        cJSON_AddStringToObject(u, "newHandle", h);
    cJSON_AddBoolToObject(u, "resumable", resumable);
    send_json(c, root, NULL);
    logf_kv(c, "sent", "handle", resumable ? h : "");
}

/* One modelTurn message with one audio part (and, 3.1 style, the
 * transcription in the same message). */
static void send_audio(fg_conn_t *c, const int16_t *pcm, size_t n,
                       const char *transcript)
{
    size_t bytes = n * 2, b64len = 4 * ((bytes + 2) / 3) + 1, olen;
    char *b64 = malloc(b64len);
    if (b64 == NULL)
        return;
    /* Standard alphabet, as the service sends. */
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *p = (const uint8_t *)pcm;
    olen = 0;
    for (size_t i = 0; i < bytes; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < bytes)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < bytes)
            v |= p[i + 2];
        b64[olen++] = tbl[(v >> 18) & 63];
        b64[olen++] = tbl[(v >> 12) & 63];
        b64[olen++] = i + 1 < bytes ? tbl[(v >> 6) & 63] : '=';
        b64[olen++] = i + 2 < bytes ? tbl[v & 63] : '=';
    }
    b64[olen] = '\0';
    cJSON *root, *sc = server_content(&root);
    cJSON *mt = cJSON_AddObjectToObject(sc, "modelTurn");
    cJSON *parts = cJSON_AddArrayToObject(mt, "parts");
    cJSON *part = cJSON_CreateObject();
    cJSON_AddItemToArray(parts, part);
    cJSON *id = cJSON_AddObjectToObject(part, "inlineData");
    cJSON_AddStringToObject(
        id, "mimeType", c->audio_mime ? c->audio_mime : "audio/pcm;rate=24000");
    cJSON_AddStringToObject(id, "data", b64);
    free(b64);
    if (transcript != NULL) {
        cJSON *t = cJSON_AddObjectToObject(sc, "outputTranscription");
        cJSON_AddStringToObject(t, "text", transcript);
    }
    send_json(c, root, "audio");
}

static void close_conn(fg_conn_t *c, uint16_t code, const char *reason)
{
    if (c->closing || c->ws == NULL)
        return;
    char r[VB_WS_REASON_MAX + 1];
    snprintf(r, sizeof(r), "%s", reason); /* the limit cuts reasons short */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "server_close");
    cJSON_AddNumberToObject(o, "code", code);
    cJSON_AddStringToObject(o, "reason", r);
    fg_log(c->srv, c->id, o);
    c->closing = true;
    vb_ws_close(c->ws, code, r);
}

static void reject(fg_conn_t *c, const char *why)
{
    logf_kv(c, "error", "why", why);
    close_conn(c, 1007, INVALID_ARG);
}

/* ---- responses ---- */

static int16_t *tone(int hz, int ms, size_t *n)
{
    *n = (size_t)ms * 24;
    int16_t *p = malloc(*n * sizeof(int16_t) + 1);
    if (p == NULL)
        return NULL;
    for (size_t i = 0; i < *n; i++)
        p[i] = (int16_t)(8000.0 * sin(2.0 * M_PI * hz * (double)i / 24000.0));
    return p;
}

/* 16 kHz -> 24 kHz by linear interpolation: good enough to be audible. */
static int16_t *upsample(const int16_t *in, size_t n, size_t *out_n)
{
    *out_n = n * 3 / 2;
    int16_t *o = malloc(*out_n * sizeof(int16_t) + 1);
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < *out_n; i++) {
        double pos = (double)i * 2.0 / 3.0;
        size_t k = (size_t)pos;
        double f = pos - (double)k;
        int a = in[k], b = k + 1 < n ? in[k + 1] : in[k];
        o[i] = (int16_t)(a + (b - a) * f);
    }
    return o;
}

static void resp_clear(fg_conn_t *c)
{
    free(c->rpcm);
    c->rpcm = NULL;
    c->rlen = c->rpos = 0;
    c->resp_active = c->resp_generating = c->resp_started = false;
}

static void start_response(fg_conn_t *c, int16_t *pcm, size_t n)
{
    if (pcm == NULL)
        return;
    resp_clear(c);
    c->rpcm = pcm;
    c->rlen = n;
    c->resp_active = c->resp_generating = true;
    c->first_audio_at = now_ms(c) + (uint64_t)c->srv->o.first_audio_delay_ms;
    c->next_chunk_at = c->first_audio_at;
    c->turns++;
    send_resumption(c, false);
    logf_kv(c, "response", "samples_24k", NULL);
}

static void remember_cancelled(fg_conn_t *c, const char *id)
{
    snprintf(c->cancelled[c->ncancelled % MAX_PENDING], 64, "%s", id);
    c->ncancelled++;
}

static bool was_cancelled(const fg_conn_t *c, const char *id)
{
    int n = c->ncancelled < MAX_PENDING ? c->ncancelled : MAX_PENDING;
    for (int i = 0; i < n; i++)
        if (strcmp(c->cancelled[i], id) == 0)
            return true;
    return false;
}

static int pending_find(const fg_conn_t *c, const char *id)
{
    for (int i = 0; i < c->npending; i++)
        if (strcmp(c->pending[i], id) == 0)
            return i;
    return -1;
}

static void pending_remove(fg_conn_t *c, int i)
{
    memmove(c->pending[i], c->pending[i + 1],
            (size_t)(c->npending - i - 1) * sizeof(c->pending[0]));
    memmove(&c->pending_batch[i], &c->pending_batch[i + 1],
            (size_t)(c->npending - i - 1) * sizeof(c->pending_batch[0]));
    c->npending--;
}

static void barge_in(fg_conn_t *c)
{
    if (!c->resp_active || c->no_interrupt)
        return;
    send_flag(c, "interrupted");
    if (c->srv->timing != NULL)
        fprintf(c->srv->timing, "X %d %llu\n", c->id,
                (unsigned long long)vb_clock_now_ns());
    send_turn_complete(c);
    if (c->npending > 0) {
        cJSON *root = cJSON_CreateObject();
        cJSON *tc = cJSON_AddObjectToObject(root, "toolCallCancellation");
        cJSON *ids = cJSON_AddArrayToObject(tc, "ids");
        for (int i = 0; i < c->npending; i++) {
            cJSON_AddItemToArray(ids, cJSON_CreateString(c->pending[i]));
            remember_cancelled(c, c->pending[i]);
        }
        c->npending = 0;
        send_json(c, root, "toolCallCancellation");
    }
    resp_clear(c);
    send_resumption(c, true);
}

static void respond_to_text(fg_conn_t *c)
{
    if (c->srv->o.mode == FG_SCRIPT)
        return;
    size_t n;
    int16_t *p = tone(c->srv->o.tone_hz,
                      c->srv->o.mode == FG_TONE ? c->srv->o.tone_ms : 500, &n);
    start_response(c, p, n);
}

static void on_speech_start(fg_conn_t *c)
{
    logf_kv(c, "vad", "edge", "start");
    barge_in(c);
}

static void on_speech_end(fg_conn_t *c)
{
    logf_kv(c, "vad", "edge", "end");
    if (c->in_tr) {
        char t[64];
        snprintf(t, sizeof(t), " [speech %.2f s]",
                 (double)c->utt_len / 16000.0);
        send_transcript(c, "inputTranscription", t);
    }
    size_t n = 0;
    int16_t *p = NULL;
    if (c->srv->o.mode == FG_ECHO && c->utt_len > 0)
        p = upsample(c->utt, c->utt_len, &n);
    else if (c->srv->o.mode == FG_TONE)
        p = tone(c->srv->o.tone_hz, c->srv->o.tone_ms, &n);
    start_response(c, p, n);
    c->utt_len = 0;
}

static void vad_frame(fg_conn_t *c, const int16_t *f)
{
    double e = 0;
    for (int i = 0; i < FRAME; i++)
        e += (double)f[i] * f[i];
    bool voiced = sqrt(e / FRAME) >= c->srv->o.vad_threshold;
    if (voiced) {
        c->silent_samples = 0;
        if (!c->speech && ++c->voiced_frames >= 2) {
            c->speech = true;
            c->utt_len = 0;
            on_speech_start(c);
        }
    } else {
        c->voiced_frames = 0;
        if (c->speech) {
            c->silent_samples += FRAME;
            if (c->silent_samples >= c->silence_ms * 16) {
                c->speech = false;
                on_speech_end(c);
                return;
            }
        }
    }
    if (c->speech && c->utt_len + FRAME <= UTT_MAX) {
        memcpy(c->utt + c->utt_len, f, FRAME * sizeof(int16_t));
        c->utt_len += FRAME;
    }
}

static void feed_audio(fg_conn_t *c, const int16_t *s, size_t n)
{
    c->samples_in += n;
    bool vad = !c->vad_disabled && c->srv->o.mode != FG_SCRIPT;
    for (size_t i = 0; i < n; i++) {
        if (!vad) {
            /* Manual activity: collect between activityStart/End. */
            if (c->speech && c->utt_len < UTT_MAX)
                c->utt[c->utt_len++] = s[i];
            continue;
        }
        c->frame[c->frame_fill++] = s[i];
        if (c->frame_fill == FRAME) {
            vad_frame(c, c->frame);
            c->frame_fill = 0;
        }
    }
}

/* ---- client messages ---- */

static bool keys_known(fg_conn_t *c, const cJSON *o, const char *where,
                       const char *const *known)
{
    if (!cJSON_IsObject(o)) {
        char why[128];
        snprintf(why, sizeof(why), "%s is not an object", where);
        reject(c, why);
        return false;
    }
    for (const cJSON *k = o->child; k != NULL; k = k->next) {
        bool ok = false;
        for (int i = 0; known[i] != NULL && !ok; i++)
            ok = strcmp(k->string, known[i]) == 0;
        if (!ok) {
            char why[256];
            snprintf(why, sizeof(why),
                     "Invalid JSON payload received. Unknown name \"%s\" at "
                     "'%s': Cannot find field.",
                     k->string, where);
            logf_kv(c, "error", "why", why);
            close_conn(c, 1007, why);
            return false;
        }
    }
    return true;
}

static bool enum_ok(const cJSON *v, const char *const *allowed)
{
    if (v == NULL)
        return true;
    if (!cJSON_IsString(v))
        return false;
    for (int i = 0; allowed[i] != NULL; i++)
        if (strcmp(v->valuestring, allowed[i]) == 0)
            return true;
    return false;
}

static fg_session_t *session_new(fg_server_t *srv)
{
    fg_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->id = ++srv->next_session;
    s->next = srv->sessions;
    srv->sessions = s;
    return s;
}

static fg_session_t *session_by_handle(fg_server_t *srv, const char *h)
{
    int id, seq;
    char tail;
    if (sscanf(h, "fake-%d-%d%c", &id, &seq, &tail) != 2)
        return NULL;
    for (fg_session_t *s = srv->sessions; s != NULL; s = s->next)
        if (s->id == id && seq >= 1 && seq <= s->handle_seq)
            return s;
    return NULL;
}

static void on_setup(fg_conn_t *c, cJSON *setup)
{
    static const char *const k_setup[] = {"model",
                                          "generationConfig",
                                          "generation_config",
                                          "systemInstruction",
                                          "system_instruction",
                                          "tools",
                                          "realtimeInputConfig",
                                          "realtime_input_config",
                                          "inputAudioTranscription",
                                          "input_audio_transcription",
                                          "outputAudioTranscription",
                                          "output_audio_transcription",
                                          "sessionResumption",
                                          "session_resumption",
                                          "contextWindowCompression",
                                          "context_window_compression",
                                          "proactivity",
                                          "historyConfig",
                                          "history_config",
                                          NULL};
    static const char *const k_gen[] = {"responseModalities",
                                        "response_modalities",
                                        "temperature",
                                        "topP",
                                        "top_p",
                                        "topK",
                                        "top_k",
                                        "maxOutputTokens",
                                        "max_output_tokens",
                                        "seed",
                                        "candidateCount",
                                        "candidate_count",
                                        "presencePenalty",
                                        "presence_penalty",
                                        "frequencyPenalty",
                                        "frequency_penalty",
                                        "mediaResolution",
                                        "media_resolution",
                                        "speechConfig",
                                        "speech_config",
                                        "thinkingConfig",
                                        "thinking_config",
                                        "enableAffectiveDialog",
                                        "enable_affective_dialog",
                                        NULL};
    static const char *const k_speech[] = {
        "voiceConfig", "voice_config", "languageCode", "language_code", NULL};
    static const char *const k_voice[] = {"prebuiltVoiceConfig",
                                          "prebuilt_voice_config", NULL};
    static const char *const k_pvc[] = {"voiceName", "voice_name", NULL};
    static const char *const k_ric[] = {"automaticActivityDetection",
                                        "automatic_activity_detection",
                                        "activityHandling",
                                        "activity_handling",
                                        "turnCoverage",
                                        "turn_coverage",
                                        NULL};
    static const char *const k_aad[] = {"disabled",
                                        "startOfSpeechSensitivity",
                                        "start_of_speech_sensitivity",
                                        "endOfSpeechSensitivity",
                                        "end_of_speech_sensitivity",
                                        "prefixPaddingMs",
                                        "prefix_padding_ms",
                                        "silenceDurationMs",
                                        "silence_duration_ms",
                                        NULL};
    static const char *const k_sr[] = {"handle", NULL};
    static const char *const k_cwc[] = {"triggerTokens", "trigger_tokens",
                                        "slidingWindow", "sliding_window",
                                        NULL};
    static const char *const k_sw[] = {"targetTokens", "target_tokens", NULL};
    static const char *const k_si[] = {"parts", "role", NULL};
    static const char *const k_tr[] = {"languageCodes", "language_codes", NULL};
    static const char *const k_tool[] = {"functionDeclarations",
                                         "function_declarations",
                                         "googleSearch",
                                         "google_search",
                                         "codeExecution",
                                         "code_execution",
                                         NULL};
    static const char *const k_fd[] = {"name",     "description", "parameters",
                                       "behavior", "response",    NULL};
    static const char *const e_start[] = {
        "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW",
        "START_SENSITIVITY_UNSPECIFIED", NULL};
    static const char *const e_end[] = {"END_SENSITIVITY_HIGH",
                                        "END_SENSITIVITY_LOW",
                                        "END_SENSITIVITY_UNSPECIFIED", NULL};
    static const char *const e_act[] = {"START_OF_ACTIVITY_INTERRUPTS",
                                        "NO_INTERRUPTION",
                                        "ACTIVITY_HANDLING_UNSPECIFIED", NULL};
    fg_server_t *srv = c->srv;
    if (!keys_known(c, setup, "setup", k_setup))
        return;
    /* The model first: an unknown one is 1008, whatever else is wrong. */
    const cJSON *model = getf(setup, "model", NULL);
    if (!cJSON_IsString(model)) {
        reject(c, "setup.model missing");
        return;
    }
    const char *id = model->valuestring;
    bool known = false;
    if (strncmp(id, "models/", 7) == 0)
        for (int i = 0; i < srv->o.nmodels && !known; i++)
            known = strcmp(id + 7, srv->o.models[i]) == 0;
    if (!known) {
        char why[300];
        snprintf(why, sizeof(why),
                 "%s is not found for API version v1beta, or is not supported "
                 "for bidiGenerateContent. Call ListModels to see the list of "
                 "available models and their supported methods.",
                 id);
        logf_kv(c, "error", "why", "unknown model");
        close_conn(c, 1008, why);
        return;
    }
    cJSON *gen = getf(setup, "generationConfig", "generation_config");
    if (gen != NULL) {
        if (!keys_known(c, gen, "setup.generationConfig", k_gen))
            return;
        cJSON *mods = getf(gen, "responseModalities", "response_modalities");
        if (mods != NULL) {
            if (!cJSON_IsArray(mods) || cJSON_GetArraySize(mods) != 1) {
                reject(c, "responseModalities must hold one modality");
                return;
            }
            const cJSON *m0 = cJSON_GetArrayItem(mods, 0);
            if (cJSON_IsString(m0) && strcmp(m0->valuestring, "TEXT") == 0) {
                logf_kv(c, "error", "why", "TEXT modality");
                close_conn(c, 1007,
                           "Cannot extract voices from a non-audio request.");
                return;
            }
            if (!cJSON_IsString(m0) || strcmp(m0->valuestring, "AUDIO") != 0) {
                reject(c, "unknown modality");
                return;
            }
        }
        cJSON *temp = getf(gen, "temperature", NULL);
        if (temp != NULL && (!cJSON_IsNumber(temp) || temp->valuedouble < 0 ||
                             temp->valuedouble > 2)) {
            reject(c, "temperature out of range");
            return;
        }
        cJSON *tc = getf(gen, "thinkingConfig", "thinking_config");
        if (tc != NULL) {
            static const char *const k_think[] = {"thinkingBudget",
                                                  "thinking_budget",
                                                  "thinkingLevel",
                                                  "thinking_level",
                                                  "includeThoughts",
                                                  "include_thoughts",
                                                  NULL};
            if (!keys_known(c, tc, "setup.generationConfig.thinkingConfig",
                            k_think))
                return;
            cJSON *b = getf(tc, "thinkingBudget", "thinking_budget");
            if (b != NULL && (!cJSON_IsNumber(b) || b->valuedouble < -1 ||
                              b->valuedouble > 32768 ||
                              b->valuedouble != (double)b->valueint)) {
                reject(c, "thinkingBudget out of range");
                return;
            }
            const char *lv = cJSON_GetStringValue(
                getf(tc, "thinkingLevel", "thinking_level"));
            if (getf(tc, "thinkingLevel", "thinking_level") != NULL &&
                (lv == NULL ||
                 (strcmp(lv, "MINIMAL") != 0 && strcmp(lv, "LOW") != 0 &&
                  strcmp(lv, "MEDIUM") != 0 && strcmp(lv, "HIGH") != 0))) {
                reject(c, "bad thinkingLevel");
                return;
            }
        }
        cJSON *sp = getf(gen, "speechConfig", "speech_config");
        if (sp != NULL) {
            if (!keys_known(c, sp, "setup.generationConfig.speechConfig",
                            k_speech))
                return;
            cJSON *vc = getf(sp, "voiceConfig", "voice_config");
            if (vc != NULL) {
                if (!keys_known(c, vc, "speechConfig.voiceConfig", k_voice))
                    return;
                cJSON *pvc =
                    getf(vc, "prebuiltVoiceConfig", "prebuilt_voice_config");
                if (pvc != NULL &&
                    !keys_known(c, pvc, "voiceConfig.prebuiltVoiceConfig",
                                k_pvc))
                    return;
                if (!enum_ok(getf(pvc, "voiceName", "voice_name"), voices)) {
                    reject(c, "unknown voice");
                    return;
                }
            }
            cJSON *lc = getf(sp, "languageCode", "language_code");
            if (lc != NULL &&
                (!cJSON_IsString(lc) || strlen(lc->valuestring) < 2 ||
                 strlen(lc->valuestring) > 16)) {
                reject(c, "bad languageCode");
                return;
            }
        }
    }
    cJSON *si = getf(setup, "systemInstruction", "system_instruction");
    if (si != NULL) {
        if (!keys_known(c, si, "setup.systemInstruction", k_si))
            return;
        if (!cJSON_IsArray(getf(si, "parts", NULL))) {
            reject(c, "systemInstruction without parts");
            return;
        }
    }
    cJSON *tools = getf(setup, "tools", NULL);
    if (tools != NULL) {
        if (!cJSON_IsArray(tools)) {
            reject(c, "tools is not an array");
            return;
        }
        cJSON *t;
        cJSON_ArrayForEach(t, tools)
        {
            if (!keys_known(c, t, "setup.tools[]", k_tool))
                return;
            cJSON *fds =
                getf(t, "functionDeclarations", "function_declarations");
            cJSON *fd;
            cJSON_ArrayForEach(fd, fds)
            {
                if (!keys_known(c, fd, "functionDeclarations[]", k_fd))
                    return;
                if (!cJSON_IsString(getf(fd, "name", NULL))) {
                    reject(c, "function declaration without a name");
                    return;
                }
            }
        }
    }
    c->silence_ms = DEFAULT_SIL_MS;
    cJSON *ric = getf(setup, "realtimeInputConfig", "realtime_input_config");
    if (ric != NULL) {
        if (!keys_known(c, ric, "setup.realtimeInputConfig", k_ric))
            return;
        cJSON *act = getf(ric, "activityHandling", "activity_handling");
        if (!enum_ok(act, e_act)) {
            reject(c, "bad activityHandling");
            return;
        }
        c->no_interrupt =
            act != NULL && strcmp(act->valuestring, "NO_INTERRUPTION") == 0;
        cJSON *aad = getf(ric, "automaticActivityDetection",
                          "automatic_activity_detection");
        if (aad != NULL) {
            if (!keys_known(c, aad,
                            "realtimeInputConfig."
                            "automaticActivityDetection",
                            k_aad))
                return;
            if (!enum_ok(getf(aad, "startOfSpeechSensitivity",
                              "start_of_speech_sensitivity"),
                         e_start) ||
                !enum_ok(getf(aad, "endOfSpeechSensitivity",
                              "end_of_speech_sensitivity"),
                         e_end)) {
                reject(c, "bad sensitivity");
                return;
            }
            c->vad_disabled = cJSON_IsTrue(getf(aad, "disabled", NULL));
            cJSON *sil = getf(aad, "silenceDurationMs", "silence_duration_ms");
            if (cJSON_IsNumber(sil) && sil->valuedouble >= 0)
                c->silence_ms = sil->valueint;
        }
    }
    cJSON *itr =
        getf(setup, "inputAudioTranscription", "input_audio_transcription");
    cJSON *otr =
        getf(setup, "outputAudioTranscription", "output_audio_transcription");
    if ((itr != NULL && !keys_known(c, itr, "inputAudioTranscription", k_tr)) ||
        (otr != NULL && !keys_known(c, otr, "outputAudioTranscription", k_tr)))
        return;
    c->in_tr = itr != NULL;
    c->out_tr = otr != NULL;
    cJSON *cwc =
        getf(setup, "contextWindowCompression", "context_window_compression");
    if (cwc != NULL) {
        if (!keys_known(c, cwc, "setup.contextWindowCompression", k_cwc))
            return;
        cJSON *sw = getf(cwc, "slidingWindow", "sliding_window");
        if (sw != NULL &&
            !keys_known(c, sw, "contextWindowCompression.slidingWindow", k_sw))
            return;
    }
    cJSON *sr = getf(setup, "sessionResumption", "session_resumption");
    fg_session_t *sess = NULL;
    if (sr != NULL) {
        if (!keys_known(c, sr, "setup.sessionResumption", k_sr))
            return;
        c->resumption = true;
        cJSON *h = getf(sr, "handle", NULL);
        if (h != NULL) {
            if (!cJSON_IsString(h) ||
                (sess = session_by_handle(srv, h->valuestring)) == NULL) {
                logf_kv(c, "error", "why", "unknown resumption handle");
                close_conn(c, 1008, "BidiGenerateContent session not found");
                return;
            }
        }
    }
    bool resumed = sess != NULL;
    if (sess == NULL && (sess = session_new(srv)) == NULL) {
        close_conn(c, 1011, "Internal error occurred.");
        return;
    }
    sess->conns++;
    c->sess = sess;
    c->setup_done = true;
    c->setup_due = now_ms(c) + (uint64_t)srv->o.setup_delay_ms;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "setup");
    cJSON_AddNumberToObject(o, "session", sess->id);
    cJSON_AddBoolToObject(o, "resumed", resumed);
    cJSON_AddItemToObject(o, "msg", cJSON_Duplicate(setup, true));
    fg_log(srv, c->id, o);
}

static void on_audio_blob(fg_conn_t *c, const cJSON *blob, const char *field)
{
    const char *mime = NULL;
    const cJSON *m = getf(blob, "mimeType", "mime_type");
    const cJSON *d = getf(blob, "data", NULL);
    unsigned rate = 0;
    if (!cJSON_IsString(m) || !cJSON_IsString(d)) {
        reject(c, "audio blob without mimeType or data");
        return;
    }
    mime = m->valuestring;
    if (vb_gemini_parse_pcm_mime(mime, &rate) != 0) {
        reject(c, "audio mimeType is not audio/pcm");
        return;
    }
    size_t len = strlen(d->valuestring), n = 0;
    uint8_t *pcm = malloc(len / 4 * 3 + 3);
    if (pcm == NULL)
        return;
    if (vb_gemini_b64_decode(d->valuestring, len, pcm, len / 4 * 3 + 3, &n) !=
            0 ||
        (n & 1u) != 0) {
        free(pcm);
        reject(c, "audio data is not base64 PCM16");
        return;
    }
    if (c->srv->timing != NULL) {
        /* One line per whole 20 ms (640-byte) frame completed. */
        uint64_t t = vb_clock_now_ns();
        c->frame_bytes += (uint32_t)n;
        for (; c->frame_bytes >= FRAME * 2; c->frame_bytes -= FRAME * 2)
            fprintf(c->srv->timing, "I %d %llu %llu\n", c->id,
                    (unsigned long long)c->frames_in++, (unsigned long long)t);
    }
    const int16_t *s = (const int16_t *)pcm;
    size_t ns = n / 2;
    if (c->srv->log != NULL) { /* not per message when nobody reads it */
        double e = 0;
        for (size_t i = 0; i < ns; i++)
            e += (double)s[i] * s[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "audio");
        cJSON_AddStringToObject(o, "field", field);
        cJSON_AddStringToObject(o, "mime", mime);
        cJSON_AddNumberToObject(o, "bytes", (double)n);
        cJSON_AddNumberToObject(o, "first", ns ? s[0] : 0);
        cJSON_AddNumberToObject(o, "last", ns ? s[ns - 1] : 0);
        cJSON_AddNumberToObject(o, "rms", ns ? sqrt(e / (double)ns) : 0);
        cJSON_AddStringToObject(o, "alphabet",
                                strpbrk(d->valuestring, "-_") ? "url" : "std");
        if (c->sess != NULL)
            cJSON_AddNumberToObject(o, "session", c->sess->id);
        fg_log(c->srv, c->id, o);
    }
    feed_audio(c, s, ns);
    free(pcm);
}

static void on_realtime(fg_conn_t *c, const cJSON *ri)
{
    static const char *const k_ri[] = {"audio",
                                       "video",
                                       "text",
                                       "audioStreamEnd",
                                       "audio_stream_end",
                                       "activityStart",
                                       "activity_start",
                                       "activityEnd",
                                       "activity_end",
                                       "mediaChunks",
                                       "media_chunks",
                                       NULL};
    if (!keys_known(c, ri, "realtimeInput", k_ri))
        return;
    if (cJSON_GetArraySize(ri) != 1) {
        reject(c, "realtimeInput must hold exactly one field");
        return;
    }
    const cJSON *f = ri->child;
    const char *k = f->string;
    if (strcmp(k, "audio") == 0) {
        on_audio_blob(c, f, "audio");
    } else if (strcmp(k, "mediaChunks") == 0 ||
               strcmp(k, "media_chunks") == 0) {
        const cJSON *b = cJSON_GetArrayItem(f, 0);
        if (b == NULL) {
            reject(c, "empty mediaChunks");
            return;
        }
        on_audio_blob(c, b, "mediaChunks");
    } else if (strcmp(k, "text") == 0) {
        if (!cJSON_IsString(f)) {
            reject(c, "realtimeInput.text is not a string");
            return;
        }
        logf_kv(c, "text", "text", f->valuestring);
        if (c->srv->timing != NULL) {
            /* Bench: key presses name the call; not answered. */
            const char *d = strpbrk(f->valuestring, "0123456789*#");
            fprintf(c->srv->timing, "D %d %c\n", c->id, d ? *d : '?');
            return;
        }
        barge_in(c);
        respond_to_text(c);
    } else if (strstr(k, "ctivity") != NULL) {
        if (!c->vad_disabled) {
            reject(c, "activityStart/End with automatic activity detection");
            return;
        }
        bool start =
            strcmp(k, "activityStart") == 0 || strcmp(k, "activity_start") == 0;
        logf_kv(c, "activity", "edge", start ? "start" : "end");
        if (start) {
            c->speech = true;
            c->utt_len = 0;
            on_speech_start(c);
        } else if (c->speech) {
            c->speech = false;
            on_speech_end(c);
        }
    } else {
        logf_kv(c, k, NULL, NULL);
    }
}

/* A toolResponse must answer function calls that are pending (not
 * unknown, not cancelled, not answered before), all from one toolCall
 * message, and every pending call of that message at once. What it gets
 * wrong is logged as `problem` on the toolResponse event (the real service
 * is not known to close the session for it; tests check the log). */
static void on_tool_response(fg_conn_t *c, const cJSON *tr)
{
    const cJSON *frs = getf(tr, "functionResponses", "function_responses");
    if (!cJSON_IsArray(frs)) {
        reject(c, "toolResponse without functionResponses");
        return;
    }
    char problem[256] = "";
    int batch = -1, answered = 0;
    const cJSON *fr;
    cJSON_ArrayForEach(fr, frs)
    {
        const cJSON *id = getf(fr, "id", NULL);
        if (!cJSON_IsString(id) || id->valuestring[0] == '\0') {
            reject(c, "function response without id");
            return;
        }
        const cJSON *resp = getf(fr, "response", NULL);
        if (!cJSON_IsObject(resp) && problem[0] == '\0')
            snprintf(problem, sizeof(problem),
                     "response of %s is not an object", id->valuestring);
        int i = pending_find(c, id->valuestring);
        if (i < 0) {
            if (problem[0] == '\0')
                snprintf(problem, sizeof(problem), "%s id %s",
                         was_cancelled(c, id->valuestring) ? "cancelled"
                                                           : "unknown",
                         id->valuestring);
            continue;
        }
        if (batch >= 0 && c->pending_batch[i] != batch && problem[0] == '\0')
            snprintf(problem, sizeof(problem),
                     "one toolResponse for calls of several toolCalls");
        batch = c->pending_batch[i];
        pending_remove(c, i);
        answered++;
    }
    for (int i = 0; batch >= 0 && i < c->npending; i++)
        if (c->pending_batch[i] == batch && problem[0] == '\0')
            snprintf(problem, sizeof(problem),
                     "toolCall answered in parts: %s not in this toolResponse",
                     c->pending[i]);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "toolResponse");
    cJSON_AddNumberToObject(o, "answered", answered);
    if (problem[0] != '\0')
        cJSON_AddStringToObject(o, "problem", problem);
    cJSON_AddItemToObject(o, "msg", cJSON_Duplicate(tr, true));
    fg_log(c->srv, c->id, o);
}

static void on_message(vb_ws_t *ws, bool text, const uint8_t *data, size_t len,
                       void *ud)
{
    fg_conn_t *c = ud;
    if (c->ws == NULL)
        c->ws = ws;
    if (c->closing || c->stalled)
        return;
    if (c->garbage && c->ready)
        return; /* a broken service: input goes nowhere */
    if (!vb_gemini_json_depth_ok((const char *)data, len, 64)) {
        reject(c, "JSON nested too deep");
        return;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)data, len);
    if (root == NULL || !cJSON_IsObject(root) ||
        cJSON_GetArraySize(root) != 1) {
        cJSON_Delete(root);
        reject(c, "not one JSON object with one field");
        return;
    }
    (void)text;
    cJSON *f = root->child;
    const char *k = f->string;
    bool is_setup = strcmp(k, "setup") == 0;
    if (is_setup) {
        if (c->setup_done)
            reject(c, "second setup message");
        else
            on_setup(c, f);
    } else if (!c->setup_done || !c->ready) {
        reject(c, "message before setupComplete");
    } else if (strcmp(k, "realtimeInput") == 0 ||
               strcmp(k, "realtime_input") == 0) {
        on_realtime(c, f);
    } else if (strcmp(k, "toolResponse") == 0 ||
               strcmp(k, "tool_response") == 0) {
        on_tool_response(c, f);
    } else if (strcmp(k, "clientContent") == 0 ||
               strcmp(k, "client_content") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "clientContent");
        cJSON_AddItemToObject(o, "msg", cJSON_Duplicate(f, true));
        fg_log(c->srv, c->id, o);
        if (cJSON_IsTrue(getf(f, "turnComplete", "turn_complete"))) {
            barge_in(c);
            respond_to_text(c);
        }
    } else {
        reject(c, "unknown client message");
    }
    cJSON_Delete(root);
}

/* ---- scripts ---- */

static const char *sval(const cJSON *ev, const char *k, const char *def)
{
    const char *v = cJSON_GetStringValue(getf(ev, k, NULL));
    return v != NULL ? v : def;
}

static void exec_event(fg_conn_t *c, const cJSON *ev)
{
    const char *type = cJSON_GetStringValue(getf(ev, "type", NULL));
    if (type == NULL)
        return;
    if (strcmp(type, "audio") == 0) {
        const cJSON *ms = getf(ev, "ms", NULL), *hz = getf(ev, "hz", NULL);
        size_t n;
        int16_t *p = tone(cJSON_IsNumber(hz) ? hz->valueint : 440,
                          cJSON_IsNumber(ms) ? ms->valueint : 500, &n);
        if (p == NULL)
            return;
        /* "mime": another spelling of the part's mimeType. */
        c->audio_mime = cJSON_GetStringValue(getf(ev, "mime", NULL));
        for (size_t off = 0; off < n; off += CHUNK_MS * 24)
            send_audio(c, p + off,
                       n - off < CHUNK_MS * 24 ? n - off : CHUNK_MS * 24, NULL);
        c->audio_mime = NULL;
        free(p);
    } else if (strcmp(type, "inputTranscription") == 0 ||
               strcmp(type, "outputTranscription") == 0) {
        send_transcript(c, type, sval(ev, "text", ""));
    } else if (strcmp(type, "text") == 0 || strcmp(type, "thought") == 0) {
        cJSON *root, *sc = server_content(&root);
        cJSON *parts = cJSON_AddArrayToObject(
            cJSON_AddObjectToObject(sc, "modelTurn"), "parts");
        cJSON *part = cJSON_CreateObject();
        cJSON_AddItemToArray(parts, part);
        cJSON_AddStringToObject(part, "text", sval(ev, "text", ""));
        if (strcmp(type, "thought") == 0)
            cJSON_AddBoolToObject(part, "thought", true);
        send_json(c, root, type);
    } else if (strcmp(type, "toolCall") == 0) {
        /* One functionCall (name, args, id) or several in one message
         * ("calls": [{name, args, id}, ...]). */
        cJSON *root = cJSON_CreateObject();
        cJSON *calls = cJSON_AddArrayToObject(
            cJSON_AddObjectToObject(root, "toolCall"), "functionCalls");
        const cJSON *list = getf(ev, "calls", NULL);
        int batch = ++c->nbatch;
        const cJSON *one = ev;
        const cJSON *item = cJSON_IsArray(list) ? list->child : one;
        for (; item != NULL; item = cJSON_IsArray(list) ? item->next : NULL) {
            char id[64];
            const char *given = cJSON_GetStringValue(getf(item, "id", NULL));
            if (given != NULL)
                snprintf(id, sizeof(id), "%s", given);
            else
                snprintf(id, sizeof(id), "function-call-%d", ++c->next_call);
            if (c->npending < MAX_PENDING) {
                c->pending_batch[c->npending] = batch;
                snprintf(c->pending[c->npending++], 64, "%s", id);
            }
            cJSON *call = cJSON_CreateObject();
            cJSON_AddItemToArray(calls, call);
            cJSON_AddStringToObject(call, "name",
                                    sval(item, "name", "end_call"));
            const cJSON *args = getf(item, "args", NULL);
            cJSON_AddItemToObject(call, "args",
                                  args ? cJSON_Duplicate(args, true)
                                       : cJSON_CreateObject());
            cJSON_AddStringToObject(call, "id", id);
        }
        send_json(c, root, "toolCall");
    } else if (strcmp(type, "toolCallCancellation") == 0) {
        /* "ids": the calls the model no longer wants answered. */
        cJSON *root = cJSON_CreateObject();
        cJSON *ids = cJSON_AddArrayToObject(
            cJSON_AddObjectToObject(root, "toolCallCancellation"), "ids");
        const cJSON *id;
        cJSON_ArrayForEach(id, getf(ev, "ids", NULL))
        {
            if (!cJSON_IsString(id))
                continue;
            cJSON_AddItemToArray(ids, cJSON_CreateString(id->valuestring));
            int i = pending_find(c, id->valuestring);
            if (i >= 0)
                pending_remove(c, i);
            remember_cancelled(c, id->valuestring);
        }
        send_json(c, root, "toolCallCancellation");
    } else if (strcmp(type, "interrupted") == 0 ||
               strcmp(type, "generationComplete") == 0) {
        send_flag(c, type);
    } else if (strcmp(type, "turnComplete") == 0) {
        /* "reason": a turnCompleteReason; "waiting": waitingForInput. */
        const char *reason = cJSON_GetStringValue(getf(ev, "reason", NULL));
        if (reason == NULL && !cJSON_IsTrue(getf(ev, "waiting", NULL))) {
            send_turn_complete(c);
        } else {
            cJSON *root, *sc = server_content(&root);
            cJSON_AddBoolToObject(sc, "turnComplete", true);
            if (reason != NULL)
                cJSON_AddStringToObject(sc, "turnCompleteReason", reason);
            if (cJSON_IsTrue(getf(ev, "waiting", NULL)))
                cJSON_AddBoolToObject(sc, "waitingForInput", true);
            add_usage(c, root);
            send_json(c, root, "turnComplete");
        }
    } else if (strcmp(type, "voiceActivity") == 0) {
        /* "activity": ACTIVITY_START or ACTIVITY_END (3.8's server VAD). */
        cJSON *root = cJSON_CreateObject();
        cJSON *va = cJSON_AddObjectToObject(root, "voiceActivity");
        cJSON_AddStringToObject(va, "voiceActivityType",
                                sval(ev, "activity", "ACTIVITY_START"));
        send_json(c, root, "voiceActivity");
    } else if (strcmp(type, "emptyServerContent") == 0) {
        cJSON *root;
        server_content(&root);
        send_json(c, root, type);
    } else if (strcmp(type, "goAway") == 0) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "goAway"),
                                "timeLeft", sval(ev, "timeLeft", "10s"));
        send_json(c, root, "goAway");
    } else if (strcmp(type, "resumption") == 0) {
        send_resumption(c, !cJSON_IsFalse(getf(ev, "resumable", NULL)));
    } else if (strcmp(type, "close") == 0) {
        const cJSON *code = getf(ev, "code", NULL);
        close_conn(c, cJSON_IsNumber(code) ? (uint16_t)code->valueint : 1011,
                   sval(ev, "reason", ""));
    } else if (strcmp(type, "raw") == 0) {
        const cJSON *j = getf(ev, "json", NULL);
        if (j != NULL)
            send_json(c, cJSON_Duplicate(j, true), "raw");
    } else {
        fprintf(stderr, "vb-fake-gemini: unknown script event %s\n", type);
    }
}

int fg_script_load(fg_server_t *srv, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    char line[65536];
    int lineno = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '\n' || *p == '#')
            continue;
        cJSON *ev = cJSON_Parse(p);
        const cJSON *at = getf(ev, "at_ms", NULL);
        if (ev == NULL || !cJSON_IsNumber(at) ||
            !cJSON_IsString(getf(ev, "type", NULL))) {
            fprintf(stderr, "%s:%d: need {\"at_ms\":N,\"type\":...}\n", path,
                    lineno);
            cJSON_Delete(ev);
            fclose(f);
            return -1;
        }
        fg_event_t *n =
            realloc(srv->events, (srv->nevents + 1) * sizeof(*srv->events));
        if (n == NULL) {
            fclose(f);
            return -1;
        }
        srv->events = n;
        const cJSON *conn = getf(ev, "conn", NULL);
        fg_event_t e = {.at_ms = (int64_t)at->valuedouble,
                        .conn = cJSON_IsNumber(conn) ? conn->valueint : 0,
                        .ev = ev};
        /* Keep events ordered by time, stable for equal times. */
        size_t i = srv->nevents;
        while (i > 0 && srv->events[i - 1].at_ms > e.at_ms) {
            srv->events[i] = srv->events[i - 1];
            i--;
        }
        srv->events[i] = e;
        srv->nevents++;
    }
    fclose(f);
    return 0;
}

/* ---- timer ---- */

/* goAway before setupComplete (seen on real sessions when the server
 * drains right at setup): the connection still completes its setup and
 * closes EARLY_GOAWAY_MS later. */
#define EARLY_GOAWAY_MS 2000

/* Nothing more is read (so pings go unanswered) or written. */
static void stall(fg_conn_t *c, const char *mode)
{
    logf_kv(c, "fault", "mode", mode);
    c->stalled = true;
    vb_ws_read_pause(c->ws, true);
}

static void send_setup_complete(fg_conn_t *c)
{
    if (fg_fault_on(c->srv, c->id) &&
        c->srv->o.fault == FG_FAULT_GOAWAY_EARLY && !c->goaway_sent) {
        logf_kv(c, "fault", "mode", "goaway-before-setup");
        c->goaway_sent = true;
        c->close_at = now_ms(c) + EARLY_GOAWAY_MS;
        cJSON *ga = cJSON_CreateObject();
        cJSON_AddStringToObject(cJSON_AddObjectToObject(ga, "goAway"),
                                "timeLeft", "2s");
        send_json(c, ga, "goAway");
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddObjectToObject(root, "setupComplete");
    send_json(c, root, "setupComplete");
    c->ready = true;
    c->t_ready = now_ms(c);
    send_resumption(c, true);
    if (!fg_fault_on(c->srv, c->id))
        return;
    switch (c->srv->o.fault) {
    case FG_FAULT_STALL:
        stall(c, "stall");
        break;
    case FG_FAULT_DIE:
        logf_kv(c, "fault", "mode", "die-after-setup");
        close_conn(c, 1011, "Internal error occurred.");
        break;
    case FG_FAULT_GARBAGE:
        logf_kv(c, "fault", "mode", "garbage");
        c->garbage = true;
        break;
    default:
        break;
    }
}

static void pace_response(fg_conn_t *c, uint64_t now)
{
    if (c->resp_generating && now >= c->next_chunk_at) {
        size_t chunk = CHUNK_MS * 24;
        size_t n = c->rlen - c->rpos < chunk ? c->rlen - c->rpos : chunk;
        const char *tr = NULL;
        if (!c->resp_started) {
            c->resp_started = true;
            c->resp_t0 = now;
            if (c->out_tr && !c->srv->o.style31)
                send_transcript(c, "outputTranscription",
                                c->srv->o.mode == FG_ECHO ? "(echo)"
                                                          : "(tone)");
            if (c->out_tr && c->srv->o.style31)
                tr = c->srv->o.mode == FG_ECHO ? "(echo)" : "(tone)";
        }
        if (c->srv->o.style31 && c->rpos == 0) {
            cJSON *root;
            server_content(&root);
            send_json(c, root, "emptyServerContent");
        }
        uint64_t t_sent = vb_clock_now_ns();
        send_audio(c, c->rpcm + c->rpos, n, tr);
        if (c->rpos == 0 && c->srv->timing != NULL)
            fprintf(c->srv->timing, "R %d %llu\n", c->id,
                    (unsigned long long)t_sent);
        c->rpos += n;
        c->next_chunk_at = now + PACE_MS;
        if (c->rpos >= c->rlen) {
            c->resp_generating = false;
            send_flag(c, "generationComplete");
            c->play_end_at = c->resp_t0 + c->rlen / 24;
        }
    }
    if (c->resp_active && !c->resp_generating && now >= c->play_end_at) {
        send_turn_complete(c);
        resp_clear(c);
        send_resumption(c, true);
    }
}

static void on_tick(uv_timer_t *t)
{
    fg_conn_t *c = t->data;
    if (c->closing || c->ws == NULL)
        return;
    uint64_t now = now_ms(c);
    if (c->setup_done && !c->ready && now >= c->setup_due)
        send_setup_complete(c);
    if (c->ready && !c->stalled && fg_fault_on(c->srv, c->id) &&
        c->srv->o.fault == FG_FAULT_STALL_AFTER &&
        now >= c->t_ready + (uint64_t)c->srv->o.stall_after_ms)
        stall(c, "stall-after");
    if (c->stalled || c->closing)
        return;
    if (c->garbage) {
        if (now >= c->next_garbage_at) {
            static const char junk[] = "{\"serverContent\": <not json>";
            c->next_garbage_at = now + GARBAGE_EVERY_MS;
            vb_ws_send_binary(c->ws, junk, sizeof(junk) - 1);
        }
        return;
    }
    if (c->ready) {
        fg_server_t *srv = c->srv;
        while (!c->closing && c->script_pos < srv->nevents &&
               now >= c->t_ready + (uint64_t)srv->events[c->script_pos].at_ms) {
            const fg_event_t *e = &srv->events[c->script_pos++];
            if (e->conn == 0 || e->conn == c->id)
                exec_event(c, e->ev);
        }
        if (!c->closing)
            pace_response(c, now);
    }
    if (!c->closing && c->goaway_at != 0 && !c->goaway_sent &&
        now >= c->goaway_at) {
        c->goaway_sent = true;
        char left[32];
        snprintf(left, sizeof(left), "%gs",
                 (double)(c->close_at - c->goaway_at) / 1000.0);
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "goAway"),
                                "timeLeft", left);
        send_json(c, root, "goAway");
    }
    if (!c->closing && c->close_at != 0 && now >= c->close_at)
        close_conn(c, 1011, DEADLINE);
}

/* ---- lifecycle ---- */

static void maybe_free(fg_conn_t *c)
{
    if (!c->ws_closed || !c->timer_closed)
        return;
    free(c->utt);
    free(c->rpcm);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    fg_conn_t *c = h->data;
    c->timer_closed = true;
    maybe_free(c);
}

static void on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    fg_conn_t *c = ud;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "close");
    cJSON_AddNumberToObject(o, "code_received", info->code_received);
    cJSON_AddNumberToObject(o, "code_sent", info->code_sent);
    cJSON_AddBoolToObject(o, "by_client", info->by_peer);
    cJSON_AddStringToObject(o, "reason", info->reason);
    if (c->sess != NULL)
        cJSON_AddNumberToObject(o, "session", c->sess->id);
    fg_log(c->srv, c->id, o);
    if (c->srv->timing != NULL)
        fflush(c->srv->timing);
    c->ws = NULL;
    c->ws_closed = true;
    vb_ws_destroy(ws);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static const vb_ws_callbacks_t callbacks = {
    .on_message = on_message,
    .on_close = on_close,
};

const vb_ws_callbacks_t *fg_live_callbacks(void)
{
    return &callbacks;
}

fg_conn_t *fg_live_new(fg_server_t *srv, int id, const char *auth)
{
    fg_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->utt = malloc(UTT_MAX * sizeof(int16_t));
    if (c->utt == NULL) {
        free(c);
        return NULL;
    }
    c->srv = srv;
    c->id = id;
    c->auth_ok = auth != NULL;
    c->silence_ms = DEFAULT_SIL_MS;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->t_open = uv_now(srv->loop);
    if (srv->o.lifetime_s > 0) {
        uint64_t life = (uint64_t)srv->o.lifetime_s * 1000;
        uint64_t lead = srv->o.goaway_lead_ms >= 0
                            ? (uint64_t)srv->o.goaway_lead_ms
                            : (life / 5 < 50000 ? life / 5 : 50000);
        if (lead > life)
            lead = life;
        c->close_at = c->t_open + life;
        c->goaway_at = c->close_at - lead;
        if (c->goaway_at == 0)
            c->goaway_at = 1;
    }
    uv_timer_start(&c->timer, on_tick, TICK_MS, TICK_MS);
    return c;
}

void fg_live_set_ws(fg_conn_t *c, vb_ws_t *ws)
{
    if (ws == NULL) {
        /* Attach failed or the endpoint closed inside it. */
        if (!c->ws_closed) {
            c->ws_closed = true;
            uv_close((uv_handle_t *)&c->timer, on_timer_closed);
        }
        return;
    }
    c->ws = ws;
    logf_kv(c, "open", "auth", c->auth_ok ? "ok" : "bad");
    if (!c->auth_ok) {
        logf_kv(c, "error", "why", "bad API key");
        close_conn(c, 1007, BAD_KEY);
    }
}
