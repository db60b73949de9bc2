/* SPDX-License-Identifier: MIT */
/*
 * The post-call report: bounded collection and the `call.ended` JSON.
 */
#include "ai/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/clock.h"

void vb_report_init(vb_report_t *r, const vb_msg_open_t *open,
                    const char *assistant, uint64_t now_ns)
{
    r->nlines = r->text_len = r->ntools = r->args_len = 0;
    r->truncated = r->tools_truncated = false;
    r->prompt_tokens = r->response_tokens = r->thoughts_tokens =
        r->total_tokens = 0;
    r->model_hangup = r->transferred = false;
    r->failure = -1;
    r->t_open_ns = now_ns;
    r->recording[0] = '\0'; /* named at the end, if the recorder made it */
    snprintf(r->direction, sizeof(r->direction), "inbound");
    if ((assistant == NULL || *assistant == '\0') && open != NULL &&
        open->assistant[0] != '\0')
        assistant = open->assistant;
    snprintf(r->assistant, sizeof(r->assistant), "%.*s",
             (int)sizeof(r->assistant) - 1,
             assistant != NULL && *assistant ? assistant : "default");
    if (open != NULL) {
        snprintf(r->sid, sizeof(r->sid), "%.*s", (int)sizeof(open->call_sid),
                 open->call_sid);
        snprintf(r->stream_sid, sizeof(r->stream_sid), "%.*s",
                 (int)sizeof(open->stream_sid), open->stream_sid);
        snprintf(r->account_sid, sizeof(r->account_sid), "%.*s",
                 (int)sizeof(open->account_sid), open->account_sid);
        snprintf(r->from, sizeof(r->from), "%.*s", (int)sizeof(open->from) - 1,
                 open->from);
        snprintf(r->to, sizeof(r->to), "%.*s", (int)sizeof(open->to) - 1,
                 open->to);
    } else {
        r->sid[0] = r->stream_sid[0] = r->account_sid[0] = '\0';
        r->from[0] = r->to[0] = '\0';
    }
}

static uint32_t ms_since(const vb_report_t *r, uint64_t now_ns)
{
    return now_ns > r->t_open_ns
               ? (uint32_t)((now_ns - r->t_open_ns) / 1000000u)
               : 0;
}

bool vb_report_line(vb_report_t *r, int role, const char *text, uint64_t now_ns)
{
    if (text == NULL)
        return true;
    while (*text == ' ')
        text++;
    size_t n = strlen(text);
    if (n == 0)
        return true;
    if (r->nlines >= VB_REPORT_LINES ||
        n > VB_REPORT_TEXT_BYTES - r->text_len) {
        r->truncated = true;
        return false;
    }
    vb_report_line_t *l = &r->lines[r->nlines++];
    l->t_ms = ms_since(r, now_ns);
    l->role = (uint8_t)(role == VB_REPORT_CALLER ? VB_REPORT_CALLER
                                                 : VB_REPORT_ASSISTANT);
    l->off = r->text_len;
    l->len = (uint32_t)n;
    memcpy(r->text + r->text_len, text, n);
    r->text_len += (uint32_t)n;
    return true;
}

bool vb_report_tool_begin(vb_report_t *r, const char *id, const char *name,
                          const char *args_json, uint64_t now_ns)
{
    if (args_json == NULL || *args_json == '\0')
        args_json = "{}";
    size_t n = strlen(args_json);
    if (r->ntools >= VB_REPORT_TOOLS) {
        r->tools_truncated = true;
        return false;
    }
    vb_report_tool_t *t = &r->tools[r->ntools++];
    snprintf(t->id, sizeof(t->id), "%s", id ? id : "");
    snprintf(t->name, sizeof(t->name), "%s", name ? name : "");
    snprintf(t->status, sizeof(t->status), "pending");
    t->t_start_ns = now_ns;
    t->latency_ms = -1;
    if (n > VB_REPORT_ARGS_BYTES - r->args_len) {
        /* The call is listed; its arguments are not ("{}" and flagged). */
        r->tools_truncated = true;
        t->args_off = t->args_len = 0;
        return true;
    }
    t->args_off = r->args_len;
    t->args_len = (uint32_t)n;
    memcpy(r->args + r->args_len, args_json, n);
    r->args_len += (uint32_t)n;
    return true;
}

void vb_report_tool_end(vb_report_t *r, const char *id, const char *status,
                        uint64_t now_ns)
{
    for (uint32_t i = r->ntools; i-- > 0;) {
        vb_report_tool_t *t = &r->tools[i];
        if (strcmp(t->id, id ? id : "") != 0 ||
            strcmp(t->status, "pending") != 0)
            continue;
        snprintf(t->status, sizeof(t->status), "%s", status ? status : "ok");
        t->latency_ms = now_ns > t->t_start_ns
                            ? (int64_t)((now_ns - t->t_start_ns) / 1000000u)
                            : 0;
        return;
    }
}

void vb_report_usage(vb_report_t *r, int64_t prompt, int64_t response,
                     int64_t thoughts, int64_t total)
{
    if (prompt > 0)
        r->prompt_tokens += prompt;
    if (response > 0)
        r->response_tokens += response;
    if (thoughts > 0)
        r->thoughts_tokens += thoughts;
    if (total > 0)
        r->total_tokens += total;
}

const char *vb_report_outcome(const vb_report_t *r, const char *reason)
{
    if (reason == NULL)
        reason = "";
    if (r->transferred || strcmp(reason, "transfer") == 0 ||
        strcmp(reason, "transferred") == 0)
        return "transferred";
    if (r->failure >= 0 || strcmp(reason, "fallback") == 0 ||
        strcmp(reason, "error") == 0)
        return "failed";
    if (strcmp(reason, "hangup") == 0)
        return "assistant_hangup";
    if (strcmp(reason, "timeout") == 0 || strcmp(reason, "max_duration") == 0)
        return "timeout";
    if (strcmp(reason, "shutdown") == 0 || strcmp(reason, "stopping") == 0)
        return "shutdown";
    if (strcmp(reason, "stop") == 0 || strcmp(reason, "disconnect") == 0)
        return r->model_hangup ? "assistant_hangup" : "caller_hangup";
    /* A call that ended before its stream, by its final CallStatus: the
     * caller hung up (or Twilio canceled it) during the greeting. */
    if (strcmp(reason, "completed") == 0 || strcmp(reason, "canceled") == 0)
        return "caller_hangup";
    return "failed";
}

/* ISO 8601 UTC with milliseconds. */
static void iso_time(int64_t unix_ms, char *out, size_t cap)
{
    time_t s = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", base, (int)(unix_ms % 1000));
}

static cJSON *num_or_null(uint32_t v)
{
    return v == VB_MSG_CLOSE_NONE ? cJSON_CreateNull()
                                  : cJSON_CreateNumber((double)v);
}

static cJSON *str_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, p, n);
    s[n] = '\0';
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

char *vb_report_render(const vb_report_t *r, const vb_msg_close_t *close,
                       const char *reason, uint64_t now_ns, size_t *len)
{
    vb_msg_close_t own;
    if (close == NULL) {
        memset(&own, 0, sizeof(own));
        snprintf(own.reason, sizeof(own.reason), "%s",
                 reason ? reason : "shutdown");
        uint64_t d = now_ns > r->t_open_ns ? now_ns - r->t_open_ns : 0;
        own.duration_ms = d / 1000000u;
        own.started_unix_ms =
            (int64_t)(vb_clock_wall_s() * 1000.0) - (int64_t)own.duration_ms;
        own.first_audio_ms = own.response_p50_ms = own.response_p95_ms =
            VB_MSG_CLOSE_NONE;
        close = &own;
    }
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "event", "call.ended");
    cJSON *call = cJSON_AddObjectToObject(o, "call");
    cJSON_AddStringToObject(call, "sid", r->sid);
    cJSON_AddStringToObject(call, "account_sid", r->account_sid);
    cJSON_AddStringToObject(call, "stream_sid", r->stream_sid);
    cJSON_AddStringToObject(call, "from", r->from);
    cJSON_AddStringToObject(call, "to", r->to);
    cJSON_AddStringToObject(call, "direction",
                            r->direction[0] ? r->direction : "inbound");
    cJSON_AddStringToObject(o, "assistant", r->assistant);
    char t0[40], t1[40];
    int64_t end_ms = close->started_unix_ms + (int64_t)close->duration_ms;
    iso_time(close->started_unix_ms, t0, sizeof(t0));
    iso_time(end_ms, t1, sizeof(t1));
    cJSON_AddStringToObject(o, "started_at", t0);
    cJSON_AddStringToObject(o, "ended_at", t1);
    cJSON_AddNumberToObject(o, "duration_s",
                            (double)(close->duration_ms / 100) / 10.0);
    cJSON_AddStringToObject(o, "outcome", vb_report_outcome(r, close->reason));
    cJSON_AddStringToObject(o, "reason", close->reason);
    /* Lines in the order they began (a turn's caller and model lines are
     * stored when the turn ends); equal times keep their stored order. */
    uint16_t order[VB_REPORT_LINES];
    for (uint32_t i = 0; i < r->nlines; i++) {
        uint32_t j = i;
        while (j > 0 && r->lines[order[j - 1]].t_ms > r->lines[i].t_ms) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = (uint16_t)i;
    }
    cJSON *tr = cJSON_AddArrayToObject(o, "transcript");
    for (uint32_t i = 0; i < r->nlines; i++) {
        const vb_report_line_t *l = &r->lines[order[i]];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(tr, e);
        cJSON_AddNumberToObject(e, "t_ms", l->t_ms);
        cJSON_AddStringToObject(
            e, "role", l->role == VB_REPORT_CALLER ? "caller" : "assistant");
        cJSON_AddItemToObject(e, "text", str_n(r->text + l->off, l->len));
    }
    cJSON_AddBoolToObject(o, "truncated", r->truncated);
    cJSON *tools = cJSON_AddArrayToObject(o, "tool_calls");
    for (uint32_t i = 0; i < r->ntools; i++) {
        const vb_report_tool_t *t = &r->tools[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(tools, e);
        cJSON_AddStringToObject(e, "id", t->id);
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON *args = NULL;
        if (t->args_len > 0) {
            cJSON *s = str_n(r->args + t->args_off, t->args_len);
            if (s != NULL)
                args = cJSON_Parse(cJSON_GetStringValue(s));
            cJSON_Delete(s);
        }
        cJSON_AddItemToObject(e, "arguments",
                              args ? args : cJSON_CreateObject());
        cJSON_AddStringToObject(e, "status", t->status);
        if (t->latency_ms >= 0)
            cJSON_AddNumberToObject(e, "latency_ms", (double)t->latency_ms);
        else
            cJSON_AddNullToObject(e, "latency_ms");
    }
    cJSON_AddBoolToObject(o, "tool_calls_truncated", r->tools_truncated);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "promptTokenCount", (double)r->prompt_tokens);
    cJSON_AddNumberToObject(u, "responseTokenCount",
                            (double)r->response_tokens);
    cJSON_AddNumberToObject(u, "thoughtsTokenCount",
                            (double)r->thoughts_tokens);
    cJSON_AddNumberToObject(u, "totalTokenCount", (double)r->total_tokens);
    cJSON *lat = cJSON_AddObjectToObject(o, "latency");
    cJSON_AddItemToObject(lat, "first_audio_ms",
                          num_or_null(close->first_audio_ms));
    cJSON_AddItemToObject(lat, "response_ms_p50",
                          num_or_null(close->response_p50_ms));
    cJSON_AddItemToObject(lat, "response_ms_p95",
                          num_or_null(close->response_p95_ms));
    cJSON_AddNumberToObject(lat, "responses", close->responses);
    /* The file the recorder writes for the call (docs/recording.md), or
     * null when the call is not recorded. */
    if (r->recording[0] != '\0')
        cJSON_AddStringToObject(o, "recording", r->recording);
    else
        cJSON_AddNullToObject(o, "recording");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s != NULL && len != NULL)
        *len = strlen(s);
    return s;
}

char *vb_report_render_unstreamed(const vb_msg_open_t *ids,
                                  const char *direction, const char *status,
                                  int64_t answered_unix_ms,
                                  int64_t ended_unix_ms, size_t *len)
{
    /* Once per such call, off the audio path: the report's arrays are
     * large for a stack. */
    vb_report_t *r = malloc(sizeof(*r));
    if (r == NULL)
        return NULL;
    vb_report_init(r, ids, NULL, 0);
    snprintf(r->direction, sizeof(r->direction), "%s",
             direction && *direction ? direction : "inbound");
    vb_msg_close_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.reason, sizeof(c.reason), "%s", status ? status : "expired");
    c.started_unix_ms = answered_unix_ms;
    c.duration_ms = ended_unix_ms > answered_unix_ms
                        ? (uint64_t)(ended_unix_ms - answered_unix_ms)
                        : 0;
    c.first_audio_ms = c.response_p50_ms = c.response_p95_ms =
        VB_MSG_CLOSE_NONE;
    char *s = vb_report_render(r, &c, NULL, 0, len);
    free(r);
    return s;
}
