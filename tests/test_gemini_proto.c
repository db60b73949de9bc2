/* SPDX-License-Identifier: MIT */
/*
 * Tests for ai/gemini_proto: the setup message carries every configured
 * field; caller audio is base64 PCM with the 16 kHz mime type; server
 * messages in the shapes of spec gemini-live.md §4.7 (2.5-style one part per
 * message, 3.1-style combined parts and empty serverContent, Vertex-style
 * audio/pcm) become the right events; limits and malformed input fail
 * cleanly.
 */
#include <cjson/cJSON.h>
#include <mbedtls/base64.h>

#include "ai/gemini_proto.h"
#include "core/err.h"
#include "tests/test.h"

/* ---- event recorder ---- */

#define REC_MAX 256

typedef struct rec_ev {
    int kind;
    size_t len;
    unsigned rate;
    bool last_chunk, finished, resumable;
    int64_t time_left_ms;
    vb_gemini_usage_t usage;
    char text[256], id[128], name[64];
    uint8_t data[2048];
} rec_ev_t;

typedef struct rec {
    int n;
    int stop_after; /* 0: never */
    rec_ev_t ev[REC_MAX];
} rec_t;

static void copy_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "(null)");
}

static int on_event(const vb_gemini_event_t *ev, void *ud)
{
    rec_t *r = ud;
    if (r->n == REC_MAX)
        vb_test_fail(__FILE__, __LINE__, "too many events");
    rec_ev_t *e = &r->ev[r->n++];
    memset(e, 0, sizeof(*e));
    e->kind = ev->kind;
    e->len = ev->len;
    e->rate = ev->rate;
    e->last_chunk = ev->last_chunk;
    e->finished = ev->finished;
    e->resumable = ev->resumable;
    e->time_left_ms = ev->time_left_ms;
    e->usage = ev->usage;
    copy_str(e->text, sizeof(e->text), ev->text);
    copy_str(e->id, sizeof(e->id), ev->id);
    copy_str(e->name, sizeof(e->name), ev->name);
    if (ev->len > 0 && ev->len <= sizeof(e->data))
        memcpy(e->data, ev->data, ev->len);
    return r->stop_after > 0 && r->n >= r->stop_after;
}

static vb_gemini_parser_t *parser(void)
{
    vb_gemini_parser_t *p = NULL;
    ASSERT_EQ(vb_gemini_parser_create(NULL, &p), 0);
    return p;
}

static int parse_str(vb_gemini_parser_t *p, const char *s, rec_t *r)
{
    return vb_gemini_parse(p, s, strlen(s), on_event, r);
}

/* base64 of `n` bytes where byte i is (i * 7 + seed) & 0xff. */
static char *b64_pattern(size_t n, int seed)
{
    uint8_t *raw = malloc(n);
    for (size_t i = 0; i < n; i++)
        raw[i] = (uint8_t)(i * 7 + (size_t)seed);
    size_t cap = 4 * ((n + 2) / 3) + 1, olen;
    char *out = malloc(cap);
    ASSERT_EQ(mbedtls_base64_encode((unsigned char *)out, cap, &olen, raw, n),
              0);
    free(raw);
    return out;
}

/* `fmt` with its one "%s" replaced by `arg` (malloc'd). */
static char *fmt_alloc(const char *fmt, const char *arg)
{
    const char *at = strstr(fmt, "%s");
    ASSERT_NOT_NULL(at);
    size_t pre = (size_t)(at - fmt), n = strlen(fmt) + strlen(arg) + 1;
    char *s = malloc(n);
    memcpy(s, fmt, pre);
    strcpy(s + pre, arg);
    strcat(s, at + 2);
    return s;
}

/* ---- building ---- */

static cJSON *path(cJSON *root, const char *p)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", p);
    cJSON *cur = root;
    for (char *tok = strtok(buf, "."); tok != NULL; tok = strtok(NULL, ".")) {
        if (cJSON_IsArray(cur))
            cur = cJSON_GetArrayItem(cur, atoi(tok));
        else
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        if (cur == NULL)
            return NULL;
    }
    return cur;
}

static const char *pstr(cJSON *root, const char *p)
{
    cJSON *v = path(root, p);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

TEST(setup_defaults_carry_required_fields)
{
    vb_gemini_setup_t s;
    vb_gemini_setup_defaults(&s);
    s.model = "gemini-3.8-live";
    s.system_prompt = "You are \"brief\".\nLine two.";
    char *json = NULL;
    size_t len = 0;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, &len), 0);
    ASSERT_EQ(len, strlen(json));
    cJSON *root = cJSON_Parse(json);
    ASSERT_NOT_NULL(root);
    ASSERT_EQ(cJSON_GetArraySize(root), 1);
    ASSERT_STR_EQ(pstr(root, "setup.model"), "models/gemini-3.8-live");
    ASSERT_STR_EQ(pstr(root, "setup.generationConfig.responseModalities.0"),
                  "AUDIO");
    ASSERT_EQ(cJSON_GetArraySize(path(root, "setup.generationConfig."
                                            "responseModalities")),
              1);
    ASSERT_NULL(path(root, "setup.generationConfig.temperature"));
    ASSERT_STR_EQ(pstr(root, "setup.generationConfig.speechConfig."
                             "voiceConfig.prebuiltVoiceConfig.voiceName"),
                  "Puck");
    ASSERT_STR_EQ(pstr(root, "setup.generationConfig.speechConfig."
                             "languageCode"),
                  "en-US");
    ASSERT_STR_EQ(pstr(root, "setup.systemInstruction.parts.0.text"),
                  "You are \"brief\".\nLine two.");
    ASSERT_STR_EQ(pstr(root, "setup.systemInstruction.role"), "user");
    ASSERT_STR_EQ(pstr(root, "setup.tools.0.functionDeclarations.0.name"),
                  "end_call");
    ASSERT_NOT_NULL(
        pstr(root, "setup.tools.0.functionDeclarations.0.description"));
    ASSERT_TRUE(cJSON_IsFalse(
        path(root, "setup.realtimeInputConfig.automaticActivityDetection."
                   "disabled")));
    ASSERT_NULL(path(root, "setup.realtimeInputConfig."
                           "automaticActivityDetection.silenceDurationMs"));
    ASSERT_NULL(path(root, "setup.realtimeInputConfig."
                           "automaticActivityDetection."
                           "startOfSpeechSensitivity"));
    ASSERT_TRUE(cJSON_IsObject(path(root, "setup.inputAudioTranscription")));
    ASSERT_TRUE(cJSON_IsObject(path(root, "setup.outputAudioTranscription")));
    ASSERT_TRUE(cJSON_IsObject(path(root, "setup.sessionResumption")));
    ASSERT_NULL(path(root, "setup.sessionResumption.handle"));
    ASSERT_TRUE(cJSON_IsObject(
        path(root, "setup.contextWindowCompression.slidingWindow")));
    cJSON_Delete(root);
    free(json);
}

TEST(setup_all_knobs)
{
    vb_gemini_function_t fn[1] = {{
        .name = "get_weather",
        .description = "Weather for a city",
        .parameters_json = "{\"type\":\"OBJECT\",\"properties\":{\"city\":"
                           "{\"type\":\"STRING\"}},\"required\":[\"city\"]}",
    }};
    vb_gemini_setup_t s;
    vb_gemini_setup_defaults(&s);
    s.model = "models/gemini-2.5-flash-native-audio-preview-12-2025";
    s.voice = "Kore";
    s.language = "de-DE";
    s.temperature = 0.7;
    s.functions = fn;
    s.n_functions = 1;
    s.vad_start = VB_GEMINI_SENS_HIGH;
    s.vad_end = VB_GEMINI_SENS_LOW;
    s.vad_prefix_padding_ms = 20;
    s.vad_silence_ms = 500;
    s.input_transcription = false;
    s.resume_handle = "95e91930-b35b";
    s.compression_trigger_tokens = 25600;
    s.compression_target_tokens = 12800;
    char *json = NULL;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), 0);
    cJSON *root = cJSON_Parse(json);
    ASSERT_NOT_NULL(root);
    ASSERT_STR_EQ(pstr(root, "setup.model"),
                  "models/gemini-2.5-flash-native-audio-preview-12-2025");
    ASSERT_NEAR(path(root, "setup.generationConfig.temperature")->valuedouble,
                0.7, 1e-9);
    ASSERT_STR_EQ(pstr(root, "setup.generationConfig.speechConfig."
                             "voiceConfig.prebuiltVoiceConfig.voiceName"),
                  "Kore");
    ASSERT_STR_EQ(pstr(root, "setup.generationConfig.speechConfig."
                             "languageCode"),
                  "de-DE");
    ASSERT_NULL(path(root, "setup.systemInstruction"));
    ASSERT_STR_EQ(pstr(root, "setup.tools.0.functionDeclarations.1.name"),
                  "get_weather");
    ASSERT_STR_EQ(pstr(root, "setup.tools.0.functionDeclarations.1."
                             "parameters.properties.city.type"),
                  "STRING");
    const char *aad = "setup.realtimeInputConfig.automaticActivityDetection";
    char p[160];
    snprintf(p, sizeof(p), "%s.startOfSpeechSensitivity", aad);
    ASSERT_STR_EQ(pstr(root, p), "START_SENSITIVITY_HIGH");
    snprintf(p, sizeof(p), "%s.endOfSpeechSensitivity", aad);
    ASSERT_STR_EQ(pstr(root, p), "END_SENSITIVITY_LOW");
    snprintf(p, sizeof(p), "%s.prefixPaddingMs", aad);
    ASSERT_EQ(path(root, p)->valueint, 20);
    snprintf(p, sizeof(p), "%s.silenceDurationMs", aad);
    ASSERT_EQ(path(root, p)->valueint, 500);
    ASSERT_NULL(path(root, "setup.inputAudioTranscription"));
    ASSERT_NOT_NULL(path(root, "setup.outputAudioTranscription"));
    ASSERT_STR_EQ(pstr(root, "setup.sessionResumption.handle"),
                  "95e91930-b35b");
    ASSERT_EQ(
        path(root, "setup.contextWindowCompression.triggerTokens")->valueint,
        25600);
    ASSERT_EQ(path(root, "setup.contextWindowCompression.slidingWindow."
                         "targetTokens")
                  ->valueint,
              12800);
    cJSON_Delete(root);
    free(json);
}

TEST(setup_errors)
{
    vb_gemini_setup_t s;
    vb_gemini_setup_defaults(&s);
    char *json = NULL;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), VB_EINVAL);
    s.model = "";
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), VB_EINVAL);
    s.model = "m";
    vb_gemini_function_t bad = {.name = "f", .parameters_json = "[1]"};
    s.functions = &bad;
    s.n_functions = 1;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), VB_EINVAL);
    bad.parameters_json = "{not json";
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), VB_EINVAL);
    vb_gemini_function_t noname = {.name = NULL};
    s.functions = &noname;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), VB_EINVAL);
    ASSERT_NULL(json);
    /* No tools at all when end_call is off and nothing is declared. */
    s.functions = NULL;
    s.n_functions = 0;
    s.end_call = false;
    s.compression = false;
    s.resumption = false;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), 0);
    cJSON *root = cJSON_Parse(json);
    ASSERT_NULL(path(root, "setup.tools"));
    ASSERT_NULL(path(root, "setup.sessionResumption"));
    ASSERT_NULL(path(root, "setup.contextWindowCompression"));
    cJSON_Delete(root);
    free(json);
}

TEST(audio_message_round_trip)
{
    int16_t pcm[320];
    for (int i = 0; i < 320; i++)
        pcm[i] = (int16_t)(i * 97 - 15000);
    size_t cap = vb_gemini_audio_msg_cap(sizeof(pcm));
    char *buf = malloc(cap);
    size_t len = 0;
    ASSERT_EQ(vb_gemini_build_audio(pcm, sizeof(pcm), 16000, buf, cap, &len),
              0);
    ASSERT_EQ(len, strlen(buf));
    cJSON *root = cJSON_Parse(buf);
    ASSERT_NOT_NULL(root);
    ASSERT_STR_EQ(pstr(root, "realtimeInput.audio.mimeType"),
                  "audio/pcm;rate=16000");
    const char *b64 = pstr(root, "realtimeInput.audio.data");
    ASSERT_NOT_NULL(b64);
    uint8_t back[640];
    size_t n = 0;
    ASSERT_EQ(vb_gemini_b64_decode(b64, strlen(b64), back, sizeof(back), &n),
              0);
    ASSERT_EQ(n, sizeof(pcm));
    ASSERT_MEM_EQ(back, pcm, sizeof(pcm));
    cJSON_Delete(root);
    ASSERT_EQ(
        vb_gemini_build_audio(pcm, sizeof(pcm), 16000, buf, cap - 1, &len),
        VB_ENOSPC);
    ASSERT_EQ(vb_gemini_build_audio(pcm, 3, 16000, buf, cap, &len), VB_EINVAL);
    ASSERT_EQ(vb_gemini_build_audio(pcm, 2, 0, buf, cap, &len), VB_EINVAL);
    /* Zero bytes is a valid (empty) chunk. */
    ASSERT_EQ(vb_gemini_build_audio(NULL, 0, 16000, buf, cap, &len), 0);
    ASSERT_STR_CONTAINS(buf, "\"data\":\"\"");
    free(buf);
}

TEST(text_and_tool_response)
{
    char *json = NULL;
    size_t len;
    ASSERT_EQ(vb_gemini_build_text("Say \"hi\"\n\xc3\xa9", &json, &len), 0);
    cJSON *root = cJSON_Parse(json);
    ASSERT_STR_EQ(pstr(root, "realtimeInput.text"), "Say \"hi\"\n\xc3\xa9");
    cJSON_Delete(root);
    free(json);

    ASSERT_EQ(vb_gemini_build_tool_response("function-call-1", "end_call",
                                            "{\"output\":\"ok\"}", &json, &len),
              0);
    root = cJSON_Parse(json);
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.0.id"),
                  "function-call-1");
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.0.name"),
                  "end_call");
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.0.response."
                             "output"),
                  "ok");
    cJSON_Delete(root);
    free(json);
    ASSERT_EQ(vb_gemini_build_tool_response("", "x", NULL, &json, &len),
              VB_EINVAL);
    ASSERT_EQ(vb_gemini_build_tool_response("i", "x", "[]", &json, &len),
              VB_EINVAL);
    ASSERT_EQ(vb_gemini_build_tool_response("i", "x", NULL, &json, &len), 0);
    ASSERT_STR_CONTAINS(json, "\"response\":{}");
    free(json);
}

TEST(proto_tool_responses_answer_a_batch_in_one_message)
{
    vb_gemini_fn_response_t r[] = {
        {"c-1", "lookup_order", "{\"status\":\"shipped\"}"},
        {"c-2", "fail", "{\"error\":\"the tool failed (HTTP 500)\"}"},
        {"c-3", "end_call", NULL}};
    char *json = NULL;
    size_t len;
    ASSERT_EQ(vb_gemini_build_tool_responses(r, 3, &json, &len), 0);
    ASSERT_EQ(strlen(json), len);
    cJSON *root = cJSON_Parse(json);
    ASSERT_EQ(
        cJSON_GetArraySize(cJSON_GetObjectItem(
            cJSON_GetObjectItem(root, "toolResponse"), "functionResponses")),
        3);
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.0.id"), "c-1");
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.0.response."
                             "status"),
                  "shipped");
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.1.name"), "fail");
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.1.response."
                             "error"),
                  "the tool failed (HTTP 500)");
    ASSERT_STR_EQ(pstr(root, "toolResponse.functionResponses.2.id"), "c-3");
    cJSON_Delete(root);
    free(json);
    ASSERT_EQ(vb_gemini_build_tool_responses(r, 0, &json, &len), VB_EINVAL);
    vb_gemini_fn_response_t bad[] = {{"c-1", "x", "[1]"}};
    ASSERT_EQ(vb_gemini_build_tool_responses(bad, 1, &json, &len), VB_EINVAL);
    vb_gemini_fn_response_t noid[] = {{"", "x", NULL}};
    ASSERT_EQ(vb_gemini_build_tool_responses(noid, 1, &json, &len), VB_EINVAL);
}

/* ---- parsing: spec §4.7 shapes ---- */

TEST(parse_setup_complete_pretty_printed)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p, "{\n  \"setupComplete\": {}\n}\n", &r), 0);
    ASSERT_EQ(r.n, 1);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_SETUP_COMPLETE);
    /* Vertex adds a session id; still one event. */
    r.n = 0;
    ASSERT_EQ(parse_str(p, "{\"setupComplete\":{\"sessionId\":\"f162\"}}", &r),
              0);
    ASSERT_EQ(r.n, 1);
    vb_gemini_parser_destroy(p);
}

/* Sequence A (2.5 native audio): thought, transcription, audio chunks as
 * separate messages, generationComplete, turnComplete + usage. */
TEST(parse_25_style_one_part_per_message)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p,
                        "{\n  \"serverContent\": {\n    \"modelTurn\": {\n"
                        "      \"parts\": [\n        {\n          \"text\": "
                        "\"**Crafting a Greeting**\\n\\nI will...\",\n"
                        "          \"thought\": true\n        }\n      ]\n"
                        "    }\n  }\n}\n",
                        &r),
              0);
    ASSERT_EQ(r.n, 0); /* thought parts are not spoken or shown */
    ASSERT_EQ(parse_str(p,
                        "{\n  \"serverContent\": {\n    "
                        "\"outputTranscription\": {\n      \"text\": "
                        "\"Hello there.\"\n    }\n  }\n}\n",
                        &r),
              0);
    ASSERT_EQ(r.n, 1);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_OUTPUT_TRANSCRIPT);
    ASSERT_STR_EQ(r.ev[0].text, "Hello there.");

    char *b64 = b64_pattern(3000, 1);
    char *msg =
        fmt_alloc("{\n  \"serverContent\": {\n    \"modelTurn\": {\n"
                  "      \"parts\": [\n        {\n"
                  "          \"inlineData\": {\n"
                  "            \"mimeType\": \"audio/pcm;rate=24000\",\n"
                  "            \"data\": \"%s\"\n          }\n"
                  "        }\n      ]\n    }\n  }\n}\n",
                  b64);
    r.n = 0;
    ASSERT_EQ(parse_str(p, msg, &r), 0);
    /* 3000 bytes -> 1024 + 1024 + 952, each one ring slot. */
    ASSERT_EQ(r.n, 3);
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(r.ev[i].kind, VB_GEMINI_EV_AUDIO);
        ASSERT_EQ(r.ev[i].rate, 24000);
        ASSERT_LE(r.ev[i].len, 1024);
        ASSERT_EQ(r.ev[i].last_chunk, i == 2);
        for (size_t j = 0; j < r.ev[i].len; j++)
            if (r.ev[i].data[j] != (uint8_t)((total + j) * 7 + 1))
                vb_test_fail(__FILE__, __LINE__, "byte %zu wrong", total + j);
        total += r.ev[i].len;
    }
    ASSERT_EQ(total, 3000);
    ASSERT_EQ(r.ev[2].len, 952);
    free(msg);
    free(b64);

    r.n = 0;
    ASSERT_EQ(parse_str(p,
                        "{\n  \"serverContent\": {\n    "
                        "\"generationComplete\": true\n  }\n}\n",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\n  \"serverContent\": {\n    \"turnComplete\": "
                        "true\n  },\n  \"usageMetadata\": {\n"
                        "    \"promptTokenCount\": 1185,\n"
                        "    \"responseTokenCount\": 51,\n"
                        "    \"totalTokenCount\": 1236,\n"
                        "    \"promptTokensDetails\": [{\"modality\": "
                        "\"TEXT\", \"tokenCount\": 1185}],\n"
                        "    \"thoughtsTokenCount\": 46\n  }\n}\n",
                        &r),
              0);
    ASSERT_EQ(r.n, 3);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_GENERATION_COMPLETE);
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_TURN_COMPLETE);
    ASSERT_STR_EQ(r.ev[1].text, "(null)");
    ASSERT_EQ(r.ev[2].kind, VB_GEMINI_EV_USAGE);
    ASSERT_EQ(r.ev[2].usage.prompt, 1185);
    ASSERT_EQ(r.ev[2].usage.response, 51);
    ASSERT_EQ(r.ev[2].usage.total, 1236);
    ASSERT_EQ(r.ev[2].usage.thoughts, 46);
    vb_gemini_parse_stats_t st;
    vb_gemini_parser_stats(p, &st);
    ASSERT_EQ(st.thoughts_skipped, 1);
    ASSERT_EQ(st.messages, 5);
    vb_gemini_parser_destroy(p);
}

/* Sequence E (3.1 Live): empty serverContent; audio and transcription in
 * one message; two audio parts in one modelTurn. */
TEST(parse_31_style_combined_parts)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p, "{\n  \"serverContent\": {}\n}\n", &r), 0);
    ASSERT_EQ(r.n, 0);
    char *a = b64_pattern(500, 3), *b = b64_pattern(100, 9);
    char msg[4096];
    snprintf(msg, sizeof(msg),
             "{\"serverContent\":{\"modelTurn\":{\"parts\":["
             "{\"inlineData\":{\"mimeType\":\"audio/pcm;rate=24000\","
             "\"data\":\"%s\"}},"
             "{\"inlineData\":{\"mimeType\":\"audio/pcm;rate=24000\","
             "\"data\":\"%s\"}}]},"
             "\"outputTranscription\":{\"text\":\" Hi\"},"
             "\"inputTranscription\":{\"text\":\" hello\"}}}",
             a, b);
    ASSERT_EQ(parse_str(p, msg, &r), 0);
    ASSERT_EQ(r.n, 4);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_INPUT_TRANSCRIPT);
    ASSERT_STR_EQ(r.ev[0].text, " hello");
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_AUDIO);
    ASSERT_EQ(r.ev[1].len, 500);
    ASSERT_TRUE(r.ev[1].last_chunk);
    ASSERT_EQ(r.ev[1].data[1], (uint8_t)(1 * 7 + 3));
    ASSERT_EQ(r.ev[2].kind, VB_GEMINI_EV_AUDIO);
    ASSERT_EQ(r.ev[2].len, 100);
    ASSERT_EQ(r.ev[2].data[0], 9);
    ASSERT_EQ(r.ev[3].kind, VB_GEMINI_EV_OUTPUT_TRANSCRIPT);
    ASSERT_STR_EQ(r.ev[3].text, " Hi");
    free(a);
    free(b);
    vb_gemini_parser_destroy(p);
}

/* Sequence F (Vertex): "audio/pcm" without a rate, role model, empty and
 * finished transcriptions, groundingMetadata with turnComplete, usage with
 * candidatesTokenCount. */
TEST(parse_vertex_style)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    char *a = b64_pattern(960, 0);
    char *msg = fmt_alloc("{\n  \"serverContent\": {\n    \"modelTurn\": {\n"
                          "      \"role\": \"model\",\n      \"parts\": [{\n"
                          "        \"inlineData\": {\"mimeType\": "
                          "\"audio/pcm\", \"data\": \"%s\"}}]\n    }\n  }\n}\n",
                          a);
    ASSERT_EQ(
        parse_str(p, "{\"serverContent\":{\"outputTranscription\":{}}}", &r),
        0);
    ASSERT_EQ(parse_str(p, msg, &r), 0);
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"outputTranscription\":"
                        "{\"finished\":true}}}",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"turnComplete\":true,"
                        "\"groundingMetadata\":{}},\"usageMetadata\":{"
                        "\"promptTokenCount\":\"12\",\"candidatesTokenCount\":"
                        "30,\"totalTokenCount\":42}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 5);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_OUTPUT_TRANSCRIPT);
    ASSERT_STR_EQ(r.ev[0].text, "");
    ASSERT_TRUE(!r.ev[0].finished);
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_AUDIO);
    ASSERT_EQ(r.ev[1].rate, 24000);
    ASSERT_EQ(r.ev[1].len, 960);
    ASSERT_EQ(r.ev[2].kind, VB_GEMINI_EV_OUTPUT_TRANSCRIPT);
    ASSERT_TRUE(r.ev[2].finished);
    ASSERT_EQ(r.ev[3].kind, VB_GEMINI_EV_TURN_COMPLETE);
    ASSERT_EQ(r.ev[4].kind, VB_GEMINI_EV_USAGE);
    ASSERT_EQ(r.ev[4].usage.prompt, 12);
    ASSERT_EQ(r.ev[4].usage.response, 30);
    ASSERT_EQ(r.ev[4].usage.total, 42);
    ASSERT_EQ(r.ev[4].usage.thoughts, -1);
    free(msg);
    free(a);
    vb_gemini_parser_destroy(p);
}

/* Sequence D: interrupted after generationComplete, then turnComplete. */
TEST(parse_barge_in_sequence)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(
        parse_str(p, "{\"serverContent\":{\"generationComplete\":true}}", &r),
        0);
    ASSERT_EQ(parse_str(p,
                        "{\n  \"serverContent\": {\n    \"interrupted\": "
                        "true\n  }\n}\n",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"turnComplete\":true,"
                        "\"turnCompleteReason\":\"NEED_MORE_INPUT\","
                        "\"waitingForInput\":true}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 4);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_GENERATION_COMPLETE);
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_INTERRUPTED);
    ASSERT_EQ(r.ev[2].kind, VB_GEMINI_EV_TURN_COMPLETE);
    ASSERT_STR_EQ(r.ev[2].text, "NEED_MORE_INPUT");
    ASSERT_EQ(r.ev[3].kind, VB_GEMINI_EV_WAITING_FOR_INPUT);
    vb_gemini_parser_destroy(p);
}

TEST(parse_tool_call_and_cancel)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p,
                        "{\"toolCall\":{\"functionCalls\":["
                        "{\"name\":\"get_current_weather\",\"args\":"
                        "{\"location\":\"Redmond, WA\"},\"id\":"
                        "\"function-call-5831923424298605773\"},"
                        "{\"name\":\"end_call\",\"id\":\"fc_2\"}]}}",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\"toolCallCancellation\":{\"ids\":[\"fc_2\","
                        "\"x\"]}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 4);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_TOOL_CALL);
    ASSERT_STR_EQ(r.ev[0].name, "get_current_weather");
    ASSERT_STR_EQ(r.ev[0].id, "function-call-5831923424298605773");
    ASSERT_STR_EQ(r.ev[0].text, "{\"location\":\"Redmond, WA\"}");
    ASSERT_STR_EQ(r.ev[1].name, "end_call");
    ASSERT_STR_EQ(r.ev[1].text, "{}");
    ASSERT_EQ(r.ev[2].kind, VB_GEMINI_EV_TOOL_CANCEL);
    ASSERT_STR_EQ(r.ev[2].id, "fc_2");
    ASSERT_STR_EQ(r.ev[3].id, "x");
    vb_gemini_parser_destroy(p);
}

TEST(parse_go_away_resumption_usage)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p,
                        "{\n  \"goAway\": {\n    \"timeLeft\": \"50s\"\n"
                        "  }\n}\n",
                        &r),
              0);
    ASSERT_EQ(parse_str(p, "{\"goAway\":{\"timeLeft\":\"1.5s\"}}", &r), 0);
    ASSERT_EQ(parse_str(p, "{\"goAway\":{}}", &r), 0);
    ASSERT_EQ(parse_str(p,
                        "{\"sessionResumptionUpdate\":{\"newHandle\":"
                        "\"95e91930-b35b-482b-8880-17efc49ec2f2\","
                        "\"resumable\":true}}",
                        &r),
              0);
    ASSERT_EQ(
        parse_str(p, "{\"sessionResumptionUpdate\":{\"resumable\":false}}", &r),
        0);
    ASSERT_EQ(r.n, 5);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_GO_AWAY);
    ASSERT_EQ(r.ev[0].time_left_ms, 50000);
    ASSERT_EQ(r.ev[1].time_left_ms, 1500);
    ASSERT_EQ(r.ev[2].time_left_ms, -1);
    ASSERT_EQ(r.ev[3].kind, VB_GEMINI_EV_RESUMPTION);
    ASSERT_STR_EQ(r.ev[3].id, "95e91930-b35b-482b-8880-17efc49ec2f2");
    ASSERT_TRUE(r.ev[3].resumable);
    ASSERT_STR_EQ(r.ev[4].id, "");
    ASSERT_TRUE(!r.ev[4].resumable);
    vb_gemini_parser_destroy(p);
}

TEST(parse_unknown_type_reported_once_fields_ignored)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p, "{\"brandNewThing\":{\"x\":1}}", &r), 0);
    ASSERT_EQ(parse_str(p, "{\"brandNewThing\":{\"x\":2}}", &r), 0);
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"turnComplete\":true,"
                        "\"interactionStatus\":\"IDLE\",\"newField\":[1,2]},"
                        "\"voiceActivity\":{\"x\":1}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_UNKNOWN);
    ASSERT_STR_EQ(r.ev[0].name, "brandNewThing");
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_TURN_COMPLETE);
    vb_gemini_parse_stats_t st;
    vb_gemini_parser_stats(p, &st);
    ASSERT_EQ(st.unknown_types, 1);
    vb_gemini_parser_destroy(p);
}

TEST(parse_snake_case_and_url_safe_base64)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    /* bytes fb ff fe -> standard "+//+", URL-safe "-__-" */
    ASSERT_EQ(parse_str(p,
                        "{\"server_content\":{\"model_turn\":{\"parts\":[{"
                        "\"inline_data\":{\"mime_type\":\"audio/pcm;rate="
                        "24000\",\"data\":\"-__-AA\"}}]},\"turn_complete\":"
                        "true}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_AUDIO);
    ASSERT_EQ(r.ev[0].len, 4);
    ASSERT_EQ(r.ev[0].data[0], 0xfb);
    ASSERT_EQ(r.ev[0].data[2], 0xfe);
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_TURN_COMPLETE);
    vb_gemini_parser_destroy(p);
}

TEST(parse_limits_and_malformed)
{
    vb_gemini_limits_t lim = {
        .max_message = 200, .max_depth = 4, .audio_chunk = 101};
    vb_gemini_parser_t *p = NULL;
    ASSERT_EQ(vb_gemini_parser_create(&lim, &p), 0);
    rec_t r = {0};
    char big[256];
    memset(big, ' ', sizeof(big));
    memcpy(big, "{}", 2);
    ASSERT_EQ(vb_gemini_parse(p, big, sizeof(big), on_event, &r), VB_EMSGSIZE);
    ASSERT_EQ(parse_str(p, "{\"a\":[[[[1]]]]}", &r), VB_EPROTO);
    ASSERT_EQ(parse_str(p, "{\"a\":[[[1]]]}", &r), 0);
    /* Brackets inside strings do not count. */
    ASSERT_EQ(parse_str(p, "{\"a\":\"[[[[[[\\\"{{{{\"}", &r), 0);
    ASSERT_EQ(r.n, 1); /* "a" is an unknown type, reported once */
    r.n = 0;
    vb_gemini_parser_destroy(p);
    lim.max_message = 1000;
    lim.max_depth = 0;
    ASSERT_EQ(vb_gemini_parser_create(&lim, &p), 0);
    ASSERT_EQ(parse_str(p, "[1,2]", &r), VB_EPROTO);
    ASSERT_EQ(parse_str(p, "\"setupComplete\"", &r), VB_EPROTO);
    ASSERT_EQ(parse_str(p, "{\"setupComplete\":{}} x", &r), VB_EPROTO);
    ASSERT_EQ(parse_str(p, "{\"setupComplete\":{}", &r), VB_EPROTO);
    ASSERT_EQ(parse_str(p, "", &r), VB_EPROTO);
    ASSERT_EQ(r.n, 0);
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"modelTurn\":{\"parts\":[{"
                        "\"inlineData\":{\"mimeType\":\"audio/pcm\","
                        "\"data\":\"AA!A\"}}]}}}",
                        &r),
              VB_EPROTO);
    /* Three bytes of PCM: not whole samples. */
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"modelTurn\":{\"parts\":[{"
                        "\"inlineData\":{\"mimeType\":\"audio/pcm\","
                        "\"data\":\"AAAA\"}}]}}}",
                        &r),
              VB_EPROTO);
    ASSERT_EQ(parse_str(p, "{\"serverContent\":{\"modelTurn\":[]}}", &r),
              VB_EPROTO);
    ASSERT_EQ(parse_str(p, "{\"serverContent\":7}", &r), VB_EPROTO);
    ASSERT_EQ(parse_str(p, "{\"toolCall\":{\"functionCalls\":{}}}", &r),
              VB_EPROTO);
    /* An image part is skipped, not an error. */
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"modelTurn\":{\"parts\":[{"
                        "\"inlineData\":{\"mimeType\":\"image/png\","
                        "\"data\":\"AAAA\"}}]}}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 0);
    /* audio_chunk 101 rounds down to 100. */
    char *a = b64_pattern(250, 0);
    char *msg = fmt_alloc("{\"serverContent\":{\"modelTurn\":{\"parts\":[{"
                          "\"inlineData\":{\"data\":\"%s\",\"mimeType\":"
                          "\"audio/pcm\"}}]}}}",
                          a);
    ASSERT_EQ(parse_str(p, msg, &r), 0);
    ASSERT_EQ(r.n, 3);
    ASSERT_EQ(r.ev[0].len, 100);
    ASSERT_EQ(r.ev[1].len, 100);
    ASSERT_EQ(r.ev[2].len, 50);
    /* A callback can stop the walk. */
    r.n = 0;
    r.stop_after = 1;
    ASSERT_EQ(parse_str(p, msg, &r), VB_ECANCELED);
    ASSERT_EQ(r.n, 1);
    free(msg);
    free(a);
    vb_gemini_parser_destroy(p);
    vb_gemini_parser_destroy(NULL);
}

TEST(helpers)
{
    uint8_t out[16];
    size_t n;
    ASSERT_EQ(vb_gemini_b64_decode("+//+", 4, out, sizeof(out), &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(out[0], 0xfb);
    ASSERT_EQ(out[1], 0xff);
    ASSERT_EQ(out[2], 0xfe);
    ASSERT_EQ(vb_gemini_b64_decode("-__-", 4, out, sizeof(out), &n), 0);
    ASSERT_EQ(out[0], 0xfb);
    ASSERT_EQ(vb_gemini_b64_decode("AAE=", 4, out, sizeof(out), &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(out[1], 1);
    ASSERT_EQ(vb_gemini_b64_decode("AAE", 3, out, sizeof(out), &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(vb_gemini_b64_decode("A", 1, out, sizeof(out), &n), VB_EPROTO);
    ASSERT_EQ(vb_gemini_b64_decode("AAF=", 4, out, sizeof(out), &n),
              VB_EPROTO); /* non-zero trailing bits */
    ASSERT_EQ(vb_gemini_b64_decode("AA=", 3, out, sizeof(out), &n), VB_EPROTO);
    ASSERT_EQ(vb_gemini_b64_decode("AAAAAAAA", 8, out, 5, &n), VB_ENOSPC);
    ASSERT_EQ(vb_gemini_b64_decode("", 0, out, 0, &n), 0);
    ASSERT_EQ(n, 0);

    unsigned rate;
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm;rate=16000", &rate), 0);
    ASSERT_EQ(rate, 16000);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm; rate=24000", &rate), 0);
    ASSERT_EQ(rate, 24000);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm", &rate), 0);
    ASSERT_EQ(rate, 0);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcmx", &rate), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm;rate=", &rate), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm;rate=0", &rate), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm;rate=16k", &rate), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/wav", &rate), VB_EPROTO);

    int64_t ms;
    ASSERT_EQ(vb_gemini_parse_duration_ms("10s", &ms), 0);
    ASSERT_EQ(ms, 10000);
    ASSERT_EQ(vb_gemini_parse_duration_ms("0.25s", &ms), 0);
    ASSERT_EQ(ms, 250);
    ASSERT_EQ(vb_gemini_parse_duration_ms("10", &ms), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_duration_ms("-1s", &ms), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_duration_ms(NULL, &ms), VB_EPROTO);

    ASSERT_TRUE(vb_gemini_json_depth_ok("[[]]", 4, 2));
    ASSERT_TRUE(!vb_gemini_json_depth_ok("[[[]]]", 6, 2));
}

TEST(setup_declares_transfer_call_with_its_targets)
{
    const char *targets[] = {"sales", "support"};
    vb_gemini_setup_t s;
    vb_gemini_setup_defaults(&s);
    s.model = "gemini-3.8-live";
    s.transfer_targets = targets;
    s.n_transfer_targets = 2;
    char *json = NULL;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), 0);
    cJSON *root = cJSON_Parse(json);
    ASSERT_STR_EQ(pstr(root, "setup.tools.0.functionDeclarations.0.name"),
                  "end_call");
    ASSERT_STR_EQ(pstr(root, "setup.tools.0.functionDeclarations.1.name"),
                  "transfer_call");
    const char *p = "setup.tools.0.functionDeclarations.1.parameters";
    char q[200];
    snprintf(q, sizeof q, "%s.properties.target.enum.0", p);
    ASSERT_STR_EQ(pstr(root, q), "sales");
    snprintf(q, sizeof q, "%s.properties.target.enum.1", p);
    ASSERT_STR_EQ(pstr(root, q), "support");
    snprintf(q, sizeof q, "%s.required.0", p);
    ASSERT_STR_EQ(pstr(root, q), "target");
    cJSON_Delete(root);
    free(json);
    /* Without targets, no transfer_call. */
    s.n_transfer_targets = 0;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), 0);
    ASSERT_TRUE(strstr(json, "transfer_call") == NULL);
    free(json);
    const char *bad[] = {""};
    s.transfer_targets = bad;
    s.n_transfer_targets = 1;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, NULL), VB_EINVAL);
}

/* Audio parts under the other spellings of 16-bit mono PCM are audio; an
 * audio part in another form is reported (rate 0, its mimeType) so the
 * stage can drop it with a warning and a metric; an image is skipped. */
TEST(parse_audio_mime_spellings)
{
    unsigned rate;
    static const char *const good[] = {
        "audio/L16;rate=24000", "audio/pcm;rate=24000;channels=1",
        "AUDIO/PCM; RATE=24000", "audio/l16; channels=1; rate=24000",
        "audio/pcm;codec=pcm;rate=24000"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        rate = 0;
        if (vb_gemini_parse_pcm_mime(good[i], &rate) != 0 || rate != 24000)
            vb_test_fail(__FILE__, __LINE__, "%s: rate %u", good[i], rate);
    }
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/L16", &rate), 0);
    ASSERT_EQ(rate, 0);
    ASSERT_EQ(
        vb_gemini_parse_pcm_mime("audio/pcm;rate=24000;channels=2", &rate),
        VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/pcm;channels=", &rate),
              VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/l16x", &rate), VB_EPROTO);
    ASSERT_EQ(vb_gemini_parse_pcm_mime("audio/opus", &rate), VB_EPROTO);

    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p,
                        "{\"serverContent\":{\"modelTurn\":{\"parts\":["
                        "{\"inlineData\":{\"mimeType\":\"audio/L16;rate=24000"
                        "\",\"data\":\"AAECAw==\"}},"
                        "{\"inlineData\":{\"mimeType\":\"audio/pcm;rate=24000;"
                        "channels=2\",\"data\":\"AAECAw==\"}},"
                        "{\"inlineData\":{\"mimeType\":\"image/png\","
                        "\"data\":\"AAECAw==\"}}]}}}",
                        &r),
              0);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_AUDIO);
    ASSERT_EQ(r.ev[0].rate, 24000);
    ASSERT_EQ(r.ev[0].len, 4);
    ASSERT_EQ(r.ev[0].data[3], 3);
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_AUDIO);
    ASSERT_EQ(r.ev[1].rate, 0);
    ASSERT_EQ(r.ev[1].len, 0);
    ASSERT_STR_EQ(r.ev[1].name, "audio/pcm;rate=24000;channels=2");
    vb_gemini_parse_stats_t st;
    vb_gemini_parser_stats(p, &st);
    ASSERT_EQ(st.parts_skipped, 2);
    vb_gemini_parser_destroy(p);
}

/* voiceActivity (and the older voiceActivityDetectionSignal) become
 * VOICE_ACTIVITY events; unspecified types say nothing; neither counts as
 * an unknown type. */
TEST(parse_voice_activity)
{
    vb_gemini_parser_t *p = parser();
    rec_t r = {0};
    ASSERT_EQ(parse_str(p,
                        "{\"voiceActivity\":{\"voiceActivityType\":"
                        "\"ACTIVITY_START\",\"audioOffset\":\"1.2s\"}}",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\"voice_activity\":{\"voice_activity_type\":"
                        "\"ACTIVITY_END\"}}",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\"voiceActivityDetectionSignal\":{\"vadSignalType\":"
                        "\"VAD_SIGNAL_TYPE_SOS\"}}",
                        &r),
              0);
    ASSERT_EQ(parse_str(p,
                        "{\"voiceActivity\":{\"voiceActivityType\":"
                        "\"TYPE_UNSPECIFIED\"}}",
                        &r),
              0);
    ASSERT_EQ(parse_str(p, "{\"voiceActivity\":7}", &r), VB_EPROTO);
    ASSERT_EQ(r.n, 3);
    ASSERT_EQ(r.ev[0].kind, VB_GEMINI_EV_VOICE_ACTIVITY);
    ASSERT_TRUE(!r.ev[0].finished);
    ASSERT_EQ(r.ev[1].kind, VB_GEMINI_EV_VOICE_ACTIVITY);
    ASSERT_TRUE(r.ev[1].finished);
    ASSERT_EQ(r.ev[2].kind, VB_GEMINI_EV_VOICE_ACTIVITY);
    ASSERT_TRUE(!r.ev[2].finished);
    vb_gemini_parse_stats_t st;
    vb_gemini_parser_stats(p, &st);
    ASSERT_EQ(st.unknown_types, 0);
    vb_gemini_parser_destroy(p);
}

/* Language "auto" (any case) or "": no languageCode, so a 3.x model
 * follows the caller's language; the voice stays. */
TEST(setup_language_auto_sends_no_language_code)
{
    static const char *const autos[] = {"auto", "AUTO", ""};
    for (size_t i = 0; i < sizeof(autos) / sizeof(autos[0]); i++) {
        vb_gemini_setup_t s;
        vb_gemini_setup_defaults(&s);
        s.model = "gemini-3.8-live";
        s.language = autos[i];
        char *json = NULL;
        size_t len = 0;
        ASSERT_EQ(vb_gemini_build_setup(&s, &json, &len), 0);
        cJSON *root = cJSON_Parse(json);
        ASSERT_NOT_NULL(root);
        ASSERT_NULL(path(root, "setup.generationConfig.speechConfig."
                               "languageCode"));
        ASSERT_STR_EQ(pstr(root, "setup.generationConfig.speechConfig."
                                 "voiceConfig.prebuiltVoiceConfig.voiceName"),
                      "Puck");
        cJSON_Delete(root);
        free(json);
    }
}

/* thinkingConfig only when asked: budget (-1 dynamic, 0 off) and/or level. */
TEST(setup_thinking_config)
{
    vb_gemini_setup_t s;
    vb_gemini_setup_defaults(&s);
    s.model = "gemini-3.8-live-extended-thinking";
    char *json = NULL;
    size_t len = 0;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, &len), 0);
    cJSON *root = cJSON_Parse(json);
    ASSERT_NULL(path(root, "setup.generationConfig.thinkingConfig"));
    cJSON_Delete(root);
    free(json);

    s.thinking_budget = 0;
    s.thinking_level = "HIGH";
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, &len), 0);
    root = cJSON_Parse(json);
    ASSERT_EQ(
        cJSON_GetNumberValue(
            path(root, "setup.generationConfig.thinkingConfig.thinkingBudget")),
        0);
    ASSERT_STR_EQ(
        pstr(root, "setup.generationConfig.thinkingConfig.thinkingLevel"),
        "HIGH");
    cJSON_Delete(root);
    free(json);

    s.thinking_budget = -1;
    s.thinking_level = NULL;
    ASSERT_EQ(vb_gemini_build_setup(&s, &json, &len), 0);
    root = cJSON_Parse(json);
    ASSERT_EQ(
        cJSON_GetNumberValue(
            path(root, "setup.generationConfig.thinkingConfig.thinkingBudget")),
        -1);
    ASSERT_NULL(path(root, "setup.generationConfig.thinkingConfig."
                           "thinkingLevel"));
    cJSON_Delete(root);
    free(json);
}

/* One reading of a close for check sessions and calls (the reasons are
 * the service's own words). */
TEST(close_classify_transient_rejection_and_other)
{
    /* The upgrade refused. */
    ASSERT_EQ(vb_gemini_close_classify(401, 0, NULL), VB_GEMINI_CLOSE_AUTH);
    ASSERT_EQ(vb_gemini_close_classify(403, 0, ""), VB_GEMINI_CLOSE_AUTH);
    ASSERT_EQ(vb_gemini_close_classify(404, 0, ""), VB_GEMINI_CLOSE_CONFIG);
    ASSERT_EQ(vb_gemini_close_classify(503, 0, ""), VB_GEMINI_CLOSE_RETRY);
    /* A close with a status on the upgrade is the upgrade's answer. */
    ASSERT_EQ(vb_gemini_close_classify(401, 1008,
                                       "Requested entity was not "
                                       "found."),
              VB_GEMINI_CLOSE_AUTH);
    /* Closes (after the 101, or none seen). */
    ASSERT_EQ(vb_gemini_close_classify(101, 1007, ""), VB_GEMINI_CLOSE_CONFIG);
    ASSERT_EQ(vb_gemini_close_classify(0, 1007,
                                       "API key not valid. Please pass a "
                                       "valid API key."),
              VB_GEMINI_CLOSE_CONFIG);
    ASSERT_EQ(vb_gemini_close_classify(0, 1008,
                                       "Requested entity was not "
                                       "found."),
              VB_GEMINI_CLOSE_TRANSIENT);
    ASSERT_EQ(vb_gemini_close_classify(0, 1008,
                                       "Operation is not implemented, or "
                                       "supported, or enabled."),
              VB_GEMINI_CLOSE_TRANSIENT);
    ASSERT_EQ(vb_gemini_close_classify(
                  0, 1008,
                  "models/gemini-x is not found for API version v1beta, or "
                  "is not supported for bidiGenerateContent. Call ListModels"),
              VB_GEMINI_CLOSE_MODEL);
    ASSERT_EQ(vb_gemini_close_classify(0, 1008,
                                       "gemini-x is not supported for "
                                       "bidiGenerateContent"),
              VB_GEMINI_CLOSE_MODEL);
    ASSERT_EQ(vb_gemini_close_classify(0, 1008,
                                       "Request contains an invalid "
                                       "argument."),
              VB_GEMINI_CLOSE_POLICY);
    ASSERT_EQ(vb_gemini_close_classify(0, 1008, NULL), VB_GEMINI_CLOSE_POLICY);
    ASSERT_EQ(vb_gemini_close_classify(0, 1011, "Internal error"),
              VB_GEMINI_CLOSE_RETRY);
    ASSERT_EQ(vb_gemini_close_classify(0, 1000, ""), VB_GEMINI_CLOSE_RETRY);
    ASSERT_EQ(vb_gemini_close_classify(0, 1006, NULL), VB_GEMINI_CLOSE_RETRY);
}
