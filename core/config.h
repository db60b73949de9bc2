/* SPDX-License-Identifier: MIT */
/*
 * Settings. Every setting is one row of VB_CONFIG_MAP: its field, type,
 * environment variable, default, bounds and help. The command-line flag is
 * the field name with dashes (`gemini_api_key` -> `--gemini-api-key`).
 * Precedence: defaults < environment < flags. Validation names the setting
 * (flag and variable) and says why it was refused. Secrets are never printed:
 * help and dumps show only whether they are set.
 */
#ifndef VB_CORE_CONFIG_H
#define VB_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Types: STR, SECRET (a string never printed), INT (lo..hi), BOOL,
 * DBL (lo..hi), ENUM (one of the '|'-separated choices). */
#define VB_GEMINI_DEFAULT_URL                                \
    "wss://generativelanguage.googleapis.com/ws/"            \
    "google.ai.generativelanguage.v1beta.GenerativeService." \
    "BidiGenerateContent"

/* X(field, TYPE, ENV, default, lo, hi, choices, help) */
#define VB_CONFIG_MAP(X)                                                       \
    /* process */                                                              \
    X(listen, STR, "VOXBRIDGE_LISTEN", "0.0.0.0:8080", 0, 0, NULL,             \
      "public HTTP listener, HOST:PORT (webhooks, media stream)")              \
    X(metrics_listen, STR, "VOXBRIDGE_METRICS_LISTEN", "", 0, 0, NULL,         \
      "optional admin listener HOST:PORT for /metrics, /test/system and "      \
      "/test/audio")                                                           \
    X(public_url, STR, "VOXBRIDGE_PUBLIC_URL", "", 0, 0, NULL,                 \
      "URL Twilio uses to reach this server, e.g. https://voice.example.com; " \
      "signatures are checked against it")                                     \
    X(public_url_aliases, STR, "VOXBRIDGE_PUBLIC_URL_ALIASES", "", 0, 0, NULL, \
      "other URLs Twilio may call, comma-separated (e.g. a second hostname "   \
      "on the number); signatures made for them are accepted too")             \
    X(lanes, INT, "VOXBRIDGE_LANES", "1", 1, 64, NULL,                         \
      "pipeline lanes (twilio-io + dsp + gemini threads each)")                \
    X(max_calls, INT, "VOXBRIDGE_MAX_CALLS", "200", 1, 100000, NULL,           \
      "concurrent calls accepted; beyond it callers hear the busy message")    \
    X(drain_timeout, INT, "VOXBRIDGE_DRAIN_TIMEOUT", "30", 0, 86400, NULL,     \
      "seconds live calls may continue after SIGTERM before they are ended")   \
    X(drain_grace, INT, "VOXBRIDGE_DRAIN_GRACE", "5", 0, 3600, NULL,           \
      "seconds after SIGTERM during which webhooks are still answered "        \
      "(/readyz 503 at once); then webhooks get 503 and the public listener "  \
      "closes once no answered call's stream is awaited")                      \
    X(instance_id, STR, "VOXBRIDGE_INSTANCE_ID", "", 0, 0, NULL,               \
      "name of this instance in stream URLs (letters, digits, '.', '_', "      \
      "'-'; at most 63; empty: the hostname)")                                 \
    X(log_file, STR, "VOXBRIDGE_LOG_FILE", "", 0, 0, NULL,                     \
      "append the log to this file, reopened on SIGHUP (empty: stderr)")       \
    X(gemini_startup_check, BOOL, "VOXBRIDGE_GEMINI_STARTUP_CHECK", "true", 0, \
      0, NULL,                                                                 \
      "open one Gemini check session at start for readiness (off: only "       \
      "calls' sessions tell; a rejected one still starts the probe)")          \
    X(check, BOOL, "VOXBRIDGE_CHECK", "false", 0, 0, NULL,                     \
      "validate the settings, open one Gemini session, print the outcome "     \
      "and exit (0 when it works)")                                            \
    X(log_level, ENUM, "VOXBRIDGE_LOG_LEVEL", "info", 0, 0,                    \
      "debug|info|warn|error|off", "log threshold")                            \
    X(log_format, ENUM, "VOXBRIDGE_LOG_FORMAT", "logfmt", 0, 0, "logfmt|json", \
      "log line format")                                                       \
    X(assistants, STR, "VOXBRIDGE_ASSISTANTS", "", 0, 0, NULL,                 \
      "JSON file of assistants picked by the called number "                   \
      "(docs/assistants.md); reloaded on SIGHUP (empty: the flags below "      \
      "make the one assistant)")                                               \
    X(assistant_url, STR, "VOXBRIDGE_ASSISTANT_URL", "", 0, 0, NULL,           \
      "POST call.incoming here for each new call and use the assistant it "    \
      "answers (docs/assistants.md); empty: the number's assistant")           \
    X(assistant_timeout_ms, INT, "VOXBRIDGE_ASSISTANT_TIMEOUT_MS", "1500",     \
      100, 10000, NULL,                                                        \
      "longest wait for --assistant-url; then the number's assistant "         \
      "answers")                                                               \
    X(transcript_dir, STR, "VOXBRIDGE_TRANSCRIPT_DIR", "", 0, 0, NULL,         \
      "directory for per-call transcript JSONL files (empty: to the log)")     \
    X(record_dir, STR, "VOXBRIDGE_RECORD_DIR", "", 0, 0, NULL,                 \
      "record every call to DIR/<CallSid>.opus (stereo Ogg/Opus, caller "      \
      "left, assistant right as heard; empty: off)")                           \
    X(record_bitrate, INT, "VOXBRIDGE_RECORD_BITRATE", "32000", 6000, 256000,  \
      NULL, "Opus bitrate of a recording, bits/s for both channels")           \
    X(record_queue, INT, "VOXBRIDGE_RECORD_QUEUE", "0", 0, 65536, NULL,        \
      "frames queued per lane for the recorder before it drops (a power of "   \
      "two >= 64; 0: 16 per call of the lane's share of --max-calls, "         \
      "1024..16384)")                                                          \
    X(record_test_delay_us, INT, "VOXBRIDGE_RECORD_TEST_DELAY_US", "0", 0,     \
      1000000, NULL,                                                           \
      "testing only: the recorder sleeps this long per message it takes, to "  \
      "show that a slow recorder never delays calls")                          \
    /* HTTP ingress */                                                         \
    X(webhook_path, STR, "VOXBRIDGE_WEBHOOK_PATH", "/webhook/voice", 0, 0,     \
      NULL, "path of the Twilio voice webhook")                                \
    X(status_path, STR, "VOXBRIDGE_STATUS_PATH", "/webhook/status", 0, 0,      \
      NULL, "path of the Twilio call-status callback")                         \
    X(stream_path, STR, "VOXBRIDGE_STREAM_PATH", "/media-stream", 0, 0, NULL,  \
      "path of the Media Streams WebSocket")                                   \
    X(max_header_bytes, INT, "VOXBRIDGE_MAX_HEADER_BYTES", "16384", 1024,      \
      1048576, NULL, "largest HTTP request head (431 beyond)")                 \
    X(max_headers, INT, "VOXBRIDGE_MAX_HEADERS", "100", 8, 1000, NULL,         \
      "most HTTP header fields per request (431 beyond)")                      \
    X(max_body_bytes, INT, "VOXBRIDGE_MAX_BODY_BYTES", "65536", 1024,          \
      16777216, NULL, "largest HTTP request body (413 beyond)")                \
    X(header_timeout_ms, INT, "VOXBRIDGE_HEADER_TIMEOUT_MS", "10000", 100,     \
      600000, NULL, "a request head must arrive within this (408 after)")      \
    X(idle_timeout_ms, INT, "VOXBRIDGE_IDLE_TIMEOUT_MS", "60000", 100,         \
      3600000, NULL, "idle keep-alive connections are closed after this")      \
    X(request_timeout_ms, INT, "VOXBRIDGE_REQUEST_TIMEOUT_MS", "30000", 1000,  \
      3600000, NULL,                                                           \
      "a whole HTTP request, head and body, must arrive within this (408 "     \
      "after)")                                                                \
    X(min_body_rate, INT, "VOXBRIDGE_MIN_BODY_RATE", "1024", 0, 1073741824,    \
      NULL,                                                                    \
      "slowest HTTP request body, bytes/s after a 5 s grace (408 below; 0: "   \
      "off)")                                                                  \
    X(max_connections, INT, "VOXBRIDGE_MAX_CONNECTIONS", "0", 0, 1000000,      \
      NULL,                                                                    \
      "concurrent HTTP connections (0: from the fd limit less what "           \
      "--max-calls needs, at most 10000)")                                     \
    X(max_connections_per_peer, INT, "VOXBRIDGE_MAX_CONNECTIONS_PER_PEER",     \
      "-1", -1, 1000000, NULL,                                                 \
      "HTTP connections per client address, IPv6 per /64 (-1: 1/8 of "         \
      "--max-connections, at least 16, off with --trust-proxy; 0: off)")       \
    X(admin_on_public, BOOL, "VOXBRIDGE_ADMIN_ON_PUBLIC", "false", 0, 0, NULL, \
      "also serve /metrics, /test/system and /test/audio on --listen (404 "    \
      "there otherwise)")                                                      \
    X(admin_token, SECRET, "VOXBRIDGE_ADMIN_TOKEN", "", 0, 0, NULL,            \
      "bearer token for POST /v1/calls on the admin listener (outbound "       \
      "calls; empty: the endpoint is off, 404)")                               \
    X(trust_proxy, BOOL, "VOXBRIDGE_TRUST_PROXY", "false", 0, 0, NULL,         \
      "use X-Forwarded-For/Proto/Host in logs (signatures always use "         \
      "--public-url)")                                                         \
    X(cors_origin, STR, "VOXBRIDGE_CORS_ORIGIN", "", 0, 0, NULL,               \
      "Access-Control-Allow-Origin for /test/system and /test/audio (empty: "  \
      "CORS off)")                                                             \
    X(say, STR, "VOXBRIDGE_SAY", "", 0, 0, NULL,                               \
      "optional <Say> text spoken before the stream connects")                 \
    X(fallback_say, STR, "VOXBRIDGE_FALLBACK_SAY",                             \
      "Sorry, the assistant is unavailable. Goodbye.", 0, 0, NULL,             \
      "<Say> text after the stream ends unexpectedly (the <Connect action> "   \
      "answer), before <Hangup/>")                                             \
    X(busy_say, STR, "VOXBRIDGE_BUSY_SAY",                                     \
      "Sorry, all our lines are busy. Please call again later.", 0, 0, NULL,   \
      "<Say> text when at --max-calls with --busy-answer say")                 \
    X(busy_answer, ENUM, "VOXBRIDGE_BUSY_ANSWER", "reject", 0, 0,              \
      "reject|say",                                                            \
      "at --max-calls: <Reject reason=\"busy\"/> (busy tone, the call is "     \
      "not answered) or answer to say --busy-say")                             \
    /* Twilio */                                                               \
    X(twilio_auth_token, SECRET, "TWILIO_AUTH_TOKEN", "", 0, 0, NULL,          \
      "Twilio auth token: verifies X-Twilio-Signature, authenticates REST "    \
      "hang-up")                                                               \
    X(twilio_shared_keys, SECRET, "TWILIO_WEBHOOK_SHARED_KEYS", "", 0, 0,      \
      NULL,                                                                    \
      "SharedKey secrets for webhooks a Webhook Setting signs (named in "      \
      "X-Twilio-Webhooks-Signature-Settings): KS...:secret, comma-separated, " \
      "or one bare secret for any key")                                        \
    X(twilio_account_sid, STR, "TWILIO_ACCOUNT_SID", "", 0, 0, NULL,           \
      "Twilio account SID for the REST hang-up")                               \
    X(twilio_api_key, STR, "TWILIO_API_KEY", "", 0, 0, NULL,                   \
      "Twilio API key SID (SK...) for the REST API, with TWILIO_API_SECRET, "  \
      "in place of the auth token (TWILIO_ACCOUNT_SID or the stream's "        \
      "account stays in the path)")                                            \
    X(twilio_api_secret, SECRET, "TWILIO_API_SECRET", "", 0, 0, NULL,          \
      "the secret of TWILIO_API_KEY")                                          \
    X(twilio_api_url, STR, "VOXBRIDGE_TWILIO_API_URL",                         \
      "https://api.twilio.com", 0, 0, NULL, "Twilio REST API base URL")        \
    X(stream_secret, SECRET, "VOXBRIDGE_STREAM_SECRET", "", 0, 0, NULL,        \
      "secret for per-call stream tokens; share it across instances behind "   \
      "one load balancer (random per process when unset)")                     \
    X(stream_token_ttl, INT, "VOXBRIDGE_STREAM_TOKEN_TTL", "300", 10, 86400,   \
      NULL, "seconds a stream token stays valid after the webhook")            \
    X(twilio_max_message, INT, "VOXBRIDGE_TWILIO_MAX_MESSAGE", "65536", 1024,  \
      16777216, NULL, "largest Media Streams WebSocket message")               \
    X(media_batch, INT, "VOXBRIDGE_MEDIA_BATCH", "1", 1, 50, NULL,             \
      "20 ms frames per outbound media message")                               \
    X(stream_start_timeout_ms, INT, "VOXBRIDGE_STREAM_START_TIMEOUT_MS",       \
      "3000", 200, 60000, NULL,                                                \
      "a media stream must show a valid `start` within this (1008 after)")     \
    X(max_pending_streams, INT, "VOXBRIDGE_MAX_PENDING_STREAMS", "64", 1,      \
      100000, NULL,                                                            \
      "unauthenticated media streams (no valid `start` yet) per lane; the "    \
      "oldest is closed for a newcomer")                                       \
    X(max_pending_streams_per_peer, INT,                                       \
      "VOXBRIDGE_MAX_PENDING_STREAMS_PER_PEER", "16", 1, 100000, NULL,         \
      "unauthenticated media streams per lane from one address")               \
    X(media_timeout_ms, INT, "VOXBRIDGE_MEDIA_TIMEOUT_MS", "10000", 1000,      \
      3600000, NULL,                                                           \
      "a call whose stream sends no media (nor the echo of a mark "            \
      "voxbridge sent) for this long is closed")                               \
    X(media_gap_fill_ms, INT, "VOXBRIDGE_MEDIA_GAP_FILL_MS", "400", 0, 10000,  \
      NULL,                                                                    \
      "caller silent this long with no media (a leg that suppresses "          \
      "silence): the model gets u-law silence in real time, up to 2 s a gap, " \
      "so its turn detection ends the turn (0: off; gaps in media.timestamp "  \
      "are filled either way)")                                                \
    X(max_call_duration, INT, "VOXBRIDGE_MAX_CALL_DURATION", "0", 0, 604800,   \
      NULL, "seconds after which a call is hung up (0: no limit)")             \
    X(stream_require_signature, BOOL, "VOXBRIDGE_STREAM_REQUIRE_SIGNATURE",    \
      "false", 0, 0, NULL,                                                     \
      "refuse (403) a stream upgrade whose X-Twilio-Signature is absent or "   \
      "wrong (default: log and count it; the stream token authenticates)")     \
    /* DSP */                                                                  \
    X(resampler, ENUM, "VOXBRIDGE_RESAMPLER", "speexdsp", 0, 0,                \
      "speexdsp|libsamplerate", "resampler backend")                           \
    X(resampler_quality, INT, "VOXBRIDGE_RESAMPLER_QUALITY", "-1", -1, 10,     \
      NULL,                                                                    \
      "backend quality (speexdsp 0-10; libsamplerate 0 best, 1 medium, 2 "     \
      "fastest); -1 backend default")                                          \
    /* Gemini */                                                               \
    X(gemini_api_key, SECRET, "GEMINI_API_KEY", "", 0, 0, NULL,                \
      "Gemini API key, sent as x-goog-api-key")                                \
    X(gemini_url, STR, "VOXBRIDGE_GEMINI_URL", VB_GEMINI_DEFAULT_URL, 0, 0,    \
      NULL, "Gemini Live endpoint (wss://, or ws:// for local fakes)")         \
    X(gemini_ca_file, STR, "VOXBRIDGE_GEMINI_CA_FILE", "", 0, 0, NULL,         \
      "CA bundle for the Gemini TLS connection (default: system bundle)")      \
    X(gemini_model, STR, "VOXBRIDGE_GEMINI_MODEL", "gemini-3.8-live", 0, 0,    \
      NULL, "Live model id (sent as models/<id>)")                             \
    X(gemini_voice, STR, "VOXBRIDGE_GEMINI_VOICE", "Puck", 0, 0, NULL,         \
      "prebuilt voice name (case-sensitive)")                                  \
    X(gemini_language, STR, "VOXBRIDGE_GEMINI_LANGUAGE", "en-US", 0, 0, NULL,  \
      "BCP-47 language code of the spoken answer; auto or empty: "             \
      "not sent, the model follows the caller")                                \
    X(gemini_temperature, DBL, "VOXBRIDGE_GEMINI_TEMPERATURE", "-1", -1, 2,    \
      NULL, "sampling temperature 0-2; -1 leaves the model default")           \
    X(gemini_thinking_budget, INT, "VOXBRIDGE_GEMINI_THINKING_BUDGET", "-2",   \
      -2, 32768, NULL,                                                         \
      "thinkingConfig.thinkingBudget in tokens (0 off, -1 dynamic); -2 not "   \
      "sent")                                                                  \
    X(gemini_thinking_level, ENUM, "VOXBRIDGE_GEMINI_THINKING_LEVEL",          \
      "default", 0, 0, "default|minimal|low|medium|high",                      \
      "thinkingConfig.thinkingLevel (3.x models); default: not sent")          \
    X(system_prompt, STR, "VOXBRIDGE_SYSTEM_PROMPT",                           \
      "You are a helpful voice assistant on a phone call. Keep answers "       \
      "short.",                                                                \
      0, 0, NULL, "system instruction")                                        \
    X(system_prompt_file, STR, "VOXBRIDGE_SYSTEM_PROMPT_FILE", "", 0, 0, NULL, \
      "read the system instruction from this file instead")                    \
    X(greeting, STR, "VOXBRIDGE_GREETING", "", 0, 0, NULL,                     \
      "text sent to the model when the call starts so it speaks first")        \
    X(vad, ENUM, "VOXBRIDGE_VAD", "server", 0, 0, "server|off",                \
      "model-side voice activity detection")                                   \
    X(vad_start_sensitivity, ENUM, "VOXBRIDGE_VAD_START_SENSITIVITY",          \
      "default", 0, 0, "default|high|low", "start-of-speech sensitivity")      \
    X(vad_end_sensitivity, ENUM, "VOXBRIDGE_VAD_END_SENSITIVITY", "default",   \
      0, 0, "default|high|low", "end-of-speech sensitivity")                   \
    X(vad_prefix_padding_ms, INT, "VOXBRIDGE_VAD_PREFIX_PADDING_MS", "-1", -1, \
      10000, NULL, "speech prefix padding; -1 model default")                  \
    X(vad_silence_ms, INT, "VOXBRIDGE_VAD_SILENCE_MS", "-1", -1, 10000, NULL,  \
      "silence that ends a turn; -1 model default")                            \
    X(input_transcription, BOOL, "VOXBRIDGE_INPUT_TRANSCRIPTION", "true", 0,   \
      0, NULL, "ask for transcripts of the caller")                            \
    X(output_transcription, BOOL, "VOXBRIDGE_OUTPUT_TRANSCRIPTION", "true", 0, \
      0, NULL, "ask for transcripts of the model")                             \
    X(dtmf_text, STR, "VOXBRIDGE_DTMF_TEXT", "The caller pressed the %s key.", \
      0, 0, NULL, "text told to the model on a key press (%s is the digit)")   \
    X(gemini_ping_interval_ms, INT, "VOXBRIDGE_GEMINI_PING_INTERVAL_MS",       \
      "1000", 100, 60000, NULL,                                                \
      "WebSocket ping interval on each Gemini connection")                     \
    X(gemini_pong_timeout_ms, INT, "VOXBRIDGE_GEMINI_PONG_TIMEOUT_MS", "2000", \
      100, 60000, NULL,                                                        \
      "a Gemini connection whose ping (or send backlog) waits this long is "   \
      "replaced")                                                              \
    X(gemini_recover_timeout_ms, INT, "VOXBRIDGE_GEMINI_RECOVER_TIMEOUT_MS",   \
      "5000", 500, 600000, NULL,                                               \
      "a call without a working Gemini connection this long hears "            \
      "--fallback-say and ends")                                               \
    X(gemini_healthy_ms, INT, "VOXBRIDGE_GEMINI_HEALTHY_MS", "10000", 100,     \
      3600000, NULL,                                                           \
      "a Gemini connection up this long restores the reconnect budget")        \
    /* business webhooks and tools */                                          \
    X(webhook_secret, SECRET, "VOXBRIDGE_WEBHOOK_SECRET", "", 0, 0, NULL,      \
      "key of the X-Voxbridge-Signature HMAC on requests to the assistant, "   \
      "tool and events URLs; required with --assistant-url, --events-url "     \
      "or an assistant with HTTP tools")                                       \
    X(webhook_secret_previous, SECRET, "VOXBRIDGE_WEBHOOK_SECRET_PREVIOUS",    \
      "", 0, 0, NULL,                                                          \
      "while rotating: every signed request also carries a v1= made with "     \
      "this older key, so receivers still on it accept it")                    \
    X(webhook_ca_file, STR, "VOXBRIDGE_WEBHOOK_CA_FILE", "", 0, 0, NULL,       \
      "CA bundle for https:// assistant, tool and events URLs (default: "      \
      "system bundle)")                                                        \
    X(tool_max_response_bytes, INT, "VOXBRIDGE_TOOL_MAX_RESPONSE_BYTES",       \
      "65536", 1024, 1048576, NULL,                                            \
      "largest tool response body; a larger one is refused and the model is "  \
      "told so")                                                               \
    /* post-call reports */                                                    \
    X(events_url, STR, "VOXBRIDGE_EVENTS_URL", "", 0, 0, NULL,                 \
      "POST a signed call.ended report here after every call (empty: off)")    \
    X(events_spool, STR, "VOXBRIDGE_EVENTS_SPOOL", "", 0, 0, NULL,             \
      "directory where reports wait until a 2xx (required with "               \
      "--events-url; kept across restarts)")                                   \
    X(events_max_files, INT, "VOXBRIDGE_EVENTS_MAX_FILES", "10000", 1,         \
      10000000, NULL,                                                          \
      "most reports in the spool; beyond, new ones are refused (counted, "     \
      "logged)")                                                               \
    X(events_max_bytes, INT, "VOXBRIDGE_EVENTS_MAX_BYTES", "268435456", 4096,  \
      1099511627776, NULL,                                                     \
      "most bytes of reports in the spool; beyond, new ones are refused")      \
    X(events_timeout_ms, INT, "VOXBRIDGE_EVENTS_TIMEOUT_MS", "10000", 100,     \
      600000, NULL, "one delivery attempt, connect to response")               \
    X(events_backoff_min_ms, INT, "VOXBRIDGE_EVENTS_BACKOFF_MIN_MS", "1000",   \
      10, 3600000, NULL,                                                       \
      "first retry delay, doubled per failure (each drawn from [d/2, d])")     \
    X(events_backoff_max_ms, INT, "VOXBRIDGE_EVENTS_BACKOFF_MAX_MS", "300000", \
      10, 86400000, NULL, "longest retry delay")                               \
    X(events_max_rejections, INT, "VOXBRIDGE_EVENTS_MAX_REJECTIONS", "50", 1,  \
      1000000, NULL,                                                           \
      "4xx answers (other than 408, 429) a report gets, each retried with "    \
      "the backoff, before it moves to <spool>/dead/ (counted since start)")

typedef struct vb_config {
#define VB__CFG_FIELD_STR    char *
#define VB__CFG_FIELD_SECRET char *
#define VB__CFG_FIELD_ENUM   char *
#define VB__CFG_FIELD_INT    int64_t
#define VB__CFG_FIELD_BOOL   bool
#define VB__CFG_FIELD_DBL    double
#define VB__CFG_FIELD(field, type, env, def, lo, hi, choices, help) \
    VB__CFG_FIELD_##type field;
    VB_CONFIG_MAP(VB__CFG_FIELD)
#undef VB__CFG_FIELD
} vb_config_t;

/* Fills `c` from defaults, then the environment, then argv[1..argc-1].
 * Returns 0; 1 when --help was given (nothing else is validated); or
 * VB_ECONFIG with a one-line reason in `err` naming the flag and variable;
 * or VB_ENOMEM ("out of memory" in `err`).
 * Free with vb_config_free() whatever the result. Main thread, at start. */
int vb_config_load(vb_config_t *c, int argc, const char *const *argv, char *err,
                   size_t errsz);

/* Splits "HOST:PORT" or "[V6]:PORT" into host (NUL-terminated, without
 * brackets) and port 0..65535. Returns 0 or VB_EINVAL. */
int vb_config_split_hostport(const char *s, char *host, size_t hostsz,
                             int *port);

/* Frees the strings held by `c`; accepts NULL. */
void vb_config_free(vb_config_t *c);

/* Prints every setting with its flag, variable and default. */
void vb_config_usage(FILE *out, const char *prog);

/* Prints the effective settings, one `name=value` per line, secrets shown
 * as `(set)` or `(unset)`. */
void vb_config_dump(FILE *out, const vb_config_t *c);

#endif
