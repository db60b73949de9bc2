/* SPDX-License-Identifier: MIT */
/*
 * The post-call report (docs/assistants.md, "Post-call report"): what one
 * call said and did, collected on the gemini stage thread while the call
 * runs and rendered once, at CALL_CLOSE, as the `call.ended` JSON body.
 *
 * DESIGN. The gemini stage owns one vb_report_t per call, allocated with
 * the call (no allocation afterwards): transcript lines and tool calls go
 * into fixed arrays and a fixed text arena; past a cap the rest is left
 * out and the report says "truncated": true. twilio-io's measurements
 * (start time, duration, first audio, response latency) arrive in the
 * CALL_CLOSE payload (core/msg.h vb_msg_close_t). vb_report_render() then
 * builds the JSON (cJSON) off the audio path's per-frame work: once per
 * call. Delivery is ai/events.h.
 */
#ifndef VB_AI_REPORT_H
#define VB_AI_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/msg.h"

/* Caps, per call. Beyond them lines (or tool calls) are left out and the
 * report carries "truncated": true (and "tool_calls_truncated": true). */
#define VB_REPORT_LINES      512u         /* transcript lines */
#define VB_REPORT_TEXT_BYTES (48u * 1024) /* transcript text, all lines */
#define VB_REPORT_TOOLS      64u          /* tool calls */
#define VB_REPORT_ARGS_BYTES (16u * 1024) /* tool arguments JSON, all calls */

enum { VB_REPORT_CALLER = 0, VB_REPORT_ASSISTANT = 1 };

typedef struct vb_report_line {
    uint32_t t_ms; /* since the call opened */
    uint32_t off, len;
    uint8_t role; /* VB_REPORT_CALLER / VB_REPORT_ASSISTANT */
} vb_report_line_t;

typedef struct vb_report_tool {
    char id[64];
    char name[64];
    char status[16]; /* "pending", "ok", "error", "cancelled", ... */
    uint32_t args_off, args_len;
    uint64_t t_start_ns;
    int64_t latency_ms; /* -1 while pending */
} vb_report_tool_t;

typedef struct vb_report {
    char sid[64], stream_sid[64], account_sid[64];
    char from[32], to[32];
    char assistant[64]; /* "default" without an assistants file */
    char direction[32]; /* Twilio's Direction; "inbound" unless told */
    uint64_t t_open_ns; /* core/clock.h */
    vb_report_line_t lines[VB_REPORT_LINES];
    uint32_t nlines, text_len;
    char text[VB_REPORT_TEXT_BYTES];
    bool truncated, tools_truncated;
    vb_report_tool_t tools[VB_REPORT_TOOLS];
    uint32_t ntools, args_len;
    char args[VB_REPORT_ARGS_BYTES];
    /* Sums of Gemini usageMetadata counts. */
    int64_t prompt_tokens, response_tokens, thoughts_tokens, total_tokens;
    /* How the model ended it, when it did: end_call (or transfer). */
    bool model_hangup, transferred;
    int failure; /* >= 0: the model could not be reached (gemini FAIL_*) */
    char recording[512]; /* the call's recording file, "" when none */
} vb_report_t;

/* Empties `r` for a call that opened now with `open`'s identifiers (may
 * be NULL). `assistant` NULL or "": open->assistant, else "default". */
void vb_report_init(vb_report_t *r, const vb_msg_open_t *open,
                    const char *assistant, uint64_t now_ns);

/* Adds one transcript line (leading blanks dropped; empty text ignored).
 * Returns false when it did not fit (then r->truncated). */
bool vb_report_line(vb_report_t *r, int role, const char *text,
                    uint64_t now_ns);

/* A tool call the model made; `args_json` is its arguments as JSON text
 * (NULL: "{}"). Returns false when it did not fit. */
bool vb_report_tool_begin(vb_report_t *r, const char *id, const char *name,
                          const char *args_json, uint64_t now_ns);
/* Its outcome: `status` ("ok", "error", "timeout", "cancelled"...), the
 * latency measured from begin. Unknown ids are ignored. */
void vb_report_tool_end(vb_report_t *r, const char *id, const char *status,
                        uint64_t now_ns);

/* Adds one usageMetadata's counts (negative: absent). */
void vb_report_usage(vb_report_t *r, int64_t prompt, int64_t response,
                     int64_t thoughts, int64_t total);

/* The report's outcome for a CALL_CLOSE reason (vb_calls_total outcome)
 * and what the model did: "caller_hangup" (stop, disconnect; and the
 * CallStatus completed or canceled of a call without its stream),
 * "assistant_hangup" (hangup after end_call), "transferred", "failed"
 * (error, fallback, a failure), "timeout", "shutdown". Static string. */
const char *vb_report_outcome(const vb_report_t *r, const char *reason);

/* Renders the `call.ended` body. `close` may be NULL (the call ended
 * without a CALL_CLOSE: stopping); then `reason` and the stage's own
 * timing are used. Returns a malloc'd NUL-terminated string (its length
 * in *len) or NULL (out of memory). */
char *vb_report_render(const vb_report_t *r, const vb_msg_close_t *close,
                       const char *reason, uint64_t now_ns, size_t *len);

/* The report of an answered call that ended before its stream came
 * (net/ingress.h vb_ingress_unstreamed_t): `ids` as the webhook told,
 * empty transcript, no tool calls, no recording, no latencies; `status`
 * (Twilio's final CallStatus, or "expired": no stream in time) is its
 * "reason" and gives the outcome (completed, canceled: caller_hangup;
 * anything else: failed). Returns a malloc'd string (length in *len) or
 * NULL (out of memory). Any thread. */
char *vb_report_render_unstreamed(const vb_msg_open_t *ids,
                                  const char *direction, const char *status,
                                  int64_t answered_unix_ms,
                                  int64_t ended_unix_ms, size_t *len);

#endif
