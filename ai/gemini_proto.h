/* SPDX-License-Identifier: MIT */
/*
 * Gemini Live (BidiGenerateContent) wire protocol: building the client
 * messages (setup, realtimeInput audio and text, toolResponse) and parsing
 * every server message into a flat stream of events. Pure functions over
 * bytes, no I/O, so every shape of spec §4.7 can be tested with fixtures and
 * fuzzed.
 *
 * DESIGN. Client messages other than audio are built with cJSON and returned
 * malloc'd. Caller audio, 50 messages a second per call, is built without
 * allocating into a caller buffer (base64 by core/b64). A server message is
 * checked against the size and nesting limits before cJSON sees it (the
 * library's own nesting limit is a compile-time 1000), parsed into a tree,
 * and walked in a fixed order; each fact becomes one vb_gemini_event_t handed
 * to a callback while the tree is alive. Audio parts are base64-decoded into
 * the parser's scratch buffer (sized once from the message limit) and
 * delivered in chunks of at most `audio_chunk` bytes, so each chunk fits one
 * ring slot. Thought parts are skipped, unknown fields ignored, and an
 * unknown message type is reported once per parser (per connection).
 */
#ifndef VB_AI_GEMINI_PROTO_H
#define VB_AI_GEMINI_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VB_GEMINI_DEFAULT_MAX_MESSAGE (4u * 1024u * 1024u) /* JSON bytes */
#define VB_GEMINI_DEFAULT_MAX_DEPTH   32
#define VB_GEMINI_DEFAULT_AUDIO_CHUNK 1024u /* bytes of PCM per event */
#define VB_GEMINI_DEFAULT_VOICE       "Puck"
#define VB_GEMINI_DEFAULT_LANGUAGE    "en-US"
#define VB_GEMINI_IN_MIME             "audio/pcm;rate=16000"
#define VB_GEMINI_OUT_RATE            24000u
#define VB_GEMINI_END_CALL            "end_call"      /* built-in tool name */
#define VB_GEMINI_TRANSFER_CALL       "transfer_call" /* built-in tool name */

/* ---- building client messages ---- */

typedef enum vb_gemini_sens {
    VB_GEMINI_SENS_DEFAULT, /* field omitted: the model's default */
    VB_GEMINI_SENS_HIGH,
    VB_GEMINI_SENS_LOW,
} vb_gemini_sens_t;

/* One function declaration for setup.tools[0].functionDeclarations. */
typedef struct vb_gemini_function {
    const char *name;        /* required */
    const char *description; /* NULL: omitted */
    /* NULL: no parameters; else a JSON object text (OpenAPI subset schema,
     * e.g. {"type":"OBJECT","properties":{...}}), parsed and embedded. */
    const char *parameters_json;
} vb_gemini_function_t;

/* What goes into the setup message. Strings are borrowed for the call. */
typedef struct vb_gemini_setup {
    const char *model;    /* "<id>" -> "models/<id>"; "models/..." kept */
    const char *voice;    /* NULL or "": VB_GEMINI_DEFAULT_VOICE */
    const char *language; /* NULL: VB_GEMINI_DEFAULT_LANGUAGE; "" or "auto":
                           * no languageCode */
    double temperature;   /* < 0: omitted */
    /* thinkingConfig: thinkingBudget (-1 dynamic, 0 off; < -1 omitted) and
     * thinkingLevel ("MINIMAL".."HIGH"; NULL omitted); neither: no
     * thinkingConfig. */
    int thinking_budget;
    const char *thinking_level;
    /* System instruction text, sent as a Content object
     * {"parts":[{"text":...}],"role":"user"}; NULL or "": omitted. */
    const char *system_prompt;
    const vb_gemini_function_t *functions; /* n_functions entries */
    size_t n_functions;
    bool end_call; /* declare the built-in end_call tool */
    /* Names of transfer targets: when n_transfer_targets > 0 the built-in
     * transfer_call(target) is declared, `target` an enum of these. */
    const char *const *transfer_targets;
    size_t n_transfer_targets;
    bool vad_disabled; /* automaticActivityDetection.disabled */
    vb_gemini_sens_t vad_start, vad_end;
    int vad_prefix_padding_ms; /* < 0: omitted */
    int vad_silence_ms;        /* < 0: omitted */
    bool input_transcription;  /* inputAudioTranscription {} */
    bool output_transcription; /* outputAudioTranscription {} */
    /* sessionResumption: {} for a new resumable session, {"handle":...}
     * when resume_handle is set (resumption implied). */
    bool resumption;
    const char *resume_handle;
    /* contextWindowCompression {"slidingWindow":{...}}; token counts of 0
     * leave the server defaults. */
    bool compression;
    int64_t compression_trigger_tokens;
    int64_t compression_target_tokens;
} vb_gemini_setup_t;

/* Fills `s` with the defaults: voice Puck, language en-US, temperature and
 * VAD timings omitted, end_call declared, transcriptions, resumption and
 * compression on. Any thread. */
void vb_gemini_setup_defaults(vb_gemini_setup_t *s);

/* Builds {"setup":{...}} as compact JSON into a malloc'd NUL-terminated
 * string (*out, caller frees with free()) of *len bytes. Errors: VB_EINVAL
 * (no model, a function without a name, parameters_json not a JSON object),
 * VB_ENOMEM. Any thread. */
int vb_gemini_build_setup(const vb_gemini_setup_t *s, char **out, size_t *len);

/* Bytes of buffer vb_gemini_build_audio() needs for `pcm_bytes` of PCM. */
size_t vb_gemini_audio_msg_cap(size_t pcm_bytes);

/* Builds {"realtimeInput":{"audio":{"data":"<base64>","mimeType":
 * "audio/pcm;rate=<rate>"}}} into `buf` (NUL-terminated; *len excludes the
 * NUL). Does not allocate. Errors: VB_EINVAL (odd byte count, rate 0, NULL
 * buf, or NULL pcm with bytes),
 * VB_ENOSPC (cap < vb_gemini_audio_msg_cap()). Any thread. */
int vb_gemini_build_audio(const void *pcm, size_t pcm_bytes, unsigned rate,
                          char *buf, size_t cap, size_t *len);

/* Builds {"realtimeInput":{"text":"..."}} (malloc'd, free()). `text` must be
 * UTF-8. Errors: VB_EINVAL (NULL), VB_ENOMEM. */
int vb_gemini_build_text(const char *text, char **out, size_t *len);

/* Builds {"toolResponse":{"functionResponses":[{"id":...,"name":...,
 * "response":<response_json>}]}} (malloc'd, free()). response_json must be
 * a JSON object text (NULL: {}). Errors: VB_EINVAL (no id or name, bad
 * response_json), VB_ENOMEM. */
int vb_gemini_build_tool_response(const char *id, const char *name,
                                  const char *response_json, char **out,
                                  size_t *len);

/* One function's answer within a toolResponse. */
typedef struct vb_gemini_fn_response {
    const char *id;
    const char *name;
    const char *response_json; /* a JSON object text; NULL: {} */
} vb_gemini_fn_response_t;

/* Builds one toolResponse answering `n` (>= 1) function calls at once:
 * {"toolResponse":{"functionResponses":[{"id","name","response"},...]}},
 * in the given order (malloc'd, free()). Errors: VB_EINVAL (n 0, an entry
 * without id or name, a response that is not a JSON object), VB_ENOMEM. */
int vb_gemini_build_tool_responses(const vb_gemini_fn_response_t *r, size_t n,
                                   char **out, size_t *len);

/* ---- parsing server messages ---- */

typedef enum vb_gemini_event_kind {
    VB_GEMINI_EV_SETUP_COMPLETE,
    VB_GEMINI_EV_AUDIO,             /* data/len: PCM16 LE, rate */
    VB_GEMINI_EV_TEXT,              /* text: a non-thought text part */
    VB_GEMINI_EV_INPUT_TRANSCRIPT,  /* text (may be ""), finished */
    VB_GEMINI_EV_OUTPUT_TRANSCRIPT, /* text (may be ""), finished */
    VB_GEMINI_EV_GENERATION_COMPLETE,
    VB_GEMINI_EV_INTERRUPTED,
    VB_GEMINI_EV_TURN_COMPLETE, /* text: turnCompleteReason or NULL */
    VB_GEMINI_EV_WAITING_FOR_INPUT,
    VB_GEMINI_EV_TOOL_CALL,   /* id, name, text: args as JSON ("{}") */
    VB_GEMINI_EV_TOOL_CANCEL, /* id */
    VB_GEMINI_EV_GO_AWAY,     /* time_left_ms (-1 if absent/unparsable) */
    VB_GEMINI_EV_RESUMPTION,  /* id: newHandle (may be ""), resumable */
    VB_GEMINI_EV_USAGE,       /* tokens */
    VB_GEMINI_EV_UNKNOWN,     /* name: an unknown top-level key, once */
    /* The server's VAD (voiceActivity ACTIVITY_START/END, or
     * voiceActivityDetectionSignal SOS/EOS): finished false at the start
     * of the caller's speech, true at its end. */
    VB_GEMINI_EV_VOICE_ACTIVITY,
    VB_GEMINI_EV_KIND_COUNT
} vb_gemini_event_kind_t;

typedef struct vb_gemini_usage {
    int64_t prompt, response, total, thoughts; /* -1 when absent */
} vb_gemini_usage_t;

/* One fact from a server message. Pointers are valid during the callback
 * only. Fields not listed for a kind are zero/NULL. */
typedef struct vb_gemini_event {
    vb_gemini_event_kind_t kind;
    const uint8_t *data; /* AUDIO */
    size_t len;          /* AUDIO: bytes, even, <= audio_chunk */
    unsigned rate;       /* AUDIO: from the mimeType, 24000 if unstated;
                          * 0 (no data, name: the mimeType): audio in a
                          * form that is not 16-bit mono PCM */
    bool last_chunk;     /* AUDIO: last chunk of its part */
    const char *text;    /* NUL-terminated UTF-8 */
    const char *id;
    const char *name;
    bool finished;
    bool resumable;
    int64_t time_left_ms;
    vb_gemini_usage_t usage;
} vb_gemini_event_t;

/* Returns 0 to go on, anything else to stop the walk (vb_gemini_parse
 * then returns VB_ECANCELED). */
typedef int (*vb_gemini_event_cb)(const vb_gemini_event_t *ev, void *ud);

typedef struct vb_gemini_limits {
    size_t max_message; /* JSON bytes; 0: VB_GEMINI_DEFAULT_MAX_MESSAGE */
    unsigned max_depth; /* object/array nesting; 0: default 32 */
    size_t audio_chunk; /* PCM bytes per AUDIO event, rounded down to
                         * even; 0: VB_GEMINI_DEFAULT_AUDIO_CHUNK */
} vb_gemini_limits_t;

typedef struct vb_gemini_parser vb_gemini_parser_t;

/* Creates a parser (lim NULL: defaults); allocates the audio scratch
 * buffer. Returns 0 and *out, VB_EINVAL, VB_ENOMEM. The parser is then used
 * by one thread. */
int vb_gemini_parser_create(const vb_gemini_limits_t *lim,
                            vb_gemini_parser_t **out);
void vb_gemini_parser_destroy(vb_gemini_parser_t *p); /* accepts NULL */

/* Parses one server message (the payload of one WebSocket message, text or
 * binary) and calls `cb` for each event, in this order: setupComplete;
 * serverContent's inputTranscription, modelTurn parts (audio chunks, text),
 * outputTranscription, generationComplete, interrupted, turnComplete,
 * waitingForInput; toolCall calls; toolCallCancellation ids; goAway;
 * sessionResumptionUpdate; usageMetadata; unknown types. An empty
 * serverContent yields nothing. Errors: VB_EINVAL (NULL p or cb, NULL data
 * with len > 0), VB_EMSGSIZE (over max_message), VB_EPROTO (not JSON, not
 * an object, nested too deep, bad base64, odd PCM length, a field of the
 * wrong type), VB_ENOMEM (printing a tool call's args, keeping an unknown key),
 * VB_ECANCELED (cb stopped); events delivered before an error stand. Allocates
 * (cJSON) per call. */
int vb_gemini_parse(vb_gemini_parser_t *p, const void *data, size_t len,
                    vb_gemini_event_cb cb, void *ud);

/* ---- helpers shared with the fake server ---- */

/* True if `data` is nested no deeper than max_depth (objects and arrays;
 * strings are skipped correctly). A cheap pre-check before cJSON. */
bool vb_gemini_json_depth_ok(const char *data, size_t len, unsigned max_depth);

/* Decodes standard or URL-safe base64 (padding optional, no whitespace;
 * the bits under the padding must be zero) into out. Standard padded input,
 * what the service sends, goes through core/b64's table codec; the other
 * forms through a slower loop. Returns 0 and *n, VB_EPROTO (bad character
 * or length), VB_ENOSPC (cap < 3 * ceil(len / 4)). */
int vb_gemini_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                         size_t *n);

/* Parses a 16-bit mono PCM mimeType: "audio/pcm" or "audio/L16"
 * (case-insensitive), with optional parameters "rate=N" (*rate 0 when
 * unstated) and "channels=1", in any order, spaces around ';'; other
 * parameters are skipped. Returns 0 and *rate, or VB_EPROTO (another type,
 * a malformed rate, channels other than 1). */
int vb_gemini_parse_pcm_mime(const char *mime, unsigned *rate);

/* Parses a protobuf Duration string ("50s", "1.5s") into ms. Returns 0 or
 * VB_EPROTO. */
int vb_gemini_parse_duration_ms(const char *s, int64_t *ms);

/* ---- what a close means ---- */

/* How the service ended a session (or refused it at the upgrade): one
 * classification for check sessions and calls, so both read a close the
 * same way (docs/gemini.md, lifecycle). The transient 1008 reasons are
 * the ones the service gives a healthy session now and then; a model it
 * does not know says "models/... is not found for API version ..."
 * instead, so "Requested entity was not found." is transient, not a
 * missing model. */
typedef enum vb_gemini_close_class {
    VB_GEMINI_CLOSE_RETRY,     /* 1011, 1000/1001, no close frame, 5xx...:
                                * reconnect; says nothing of the config */
    VB_GEMINI_CLOSE_TRANSIENT, /* 1008 for a passing failure: resume */
    VB_GEMINI_CLOSE_AUTH,      /* HTTP 401/403 on the upgrade: the key */
    VB_GEMINI_CLOSE_CONFIG,    /* 1007 (key or a setup argument), another
                                * 4xx on the upgrade (the URL) */
    VB_GEMINI_CLOSE_MODEL,     /* 1008: the model is not found or cannot
                                * do Live */
    VB_GEMINI_CLOSE_POLICY,    /* another 1008: a policy refusal */
} vb_gemini_close_class_t;

/* Classifies an upgrade refused with `http_status` (400 and up; 0 or 101:
 * the session was open) or else a close with `code` and `reason` (may be
 * NULL). */
vb_gemini_close_class_t vb_gemini_close_classify(int http_status, uint16_t code,
                                                 const char *reason);

/* ---- for tests and tools ---- */
/* Used by tests, not by the stage; it stays here because the parser is
 * opaque. */

/* Counters of things skipped. */
typedef struct vb_gemini_parse_stats {
    uint64_t messages, thoughts_skipped, parts_skipped, unknown_types;
} vb_gemini_parse_stats_t;

void vb_gemini_parser_stats(const vb_gemini_parser_t *p,
                            vb_gemini_parse_stats_t *out);

#endif
