/* SPDX-License-Identifier: MIT */
/* Tool calls: batches, HTTP tool requests, the tool log (ai/tools.h). */
#include "ai/tools.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ai/gemini_proto.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/vbsig.h"

#define DEFAULT_MAX_RESPONSE 65536u

enum {
    OUT_OK,
    OUT_HTTP_ERROR,
    OUT_NOT_JSON,
    OUT_TOO_LARGE,
    OUT_TIMEOUT,
    OUT_UNREACHABLE,
    OUT_CANCELLED,
    OUT_UNKNOWN,
    OUT_COUNT
};
static const char *const out_names[OUT_COUNT] = {
    "ok",      "http_error",  "not_json",  "too_large",
    "timeout", "unreachable", "cancelled", "unknown"};

typedef struct series {
    char name[VB_ASSISTANT_TOOL_NAME_MAX + 1];
    vb_metric_t req[OUT_COUNT];
    vb_metric_t lat;
    bool ok;
} series_t;

struct vb_tools {
    uv_loop_t *loop;
    vb_http_client_t *http;
    vb_tls_config_t *tls;
    char *secret, *secret_previous; /* previous: NULL unless rotating */
    size_t max_response;
    vb_metrics_t *metrics;
    vb_metrics_shard_t *const *shard;
    series_t series[VB_TOOLS_MAX_SERIES];
    size_t n_series;
    series_t other;
};

typedef struct batch batch_t;

#define TOOLS_OVERFLOW_MAX 32
#define TOOLS_OVERFLOW_JSON                                                \
    "{\"error\":\"too many function calls in one toolCall; call fewer at " \
    "once\"}"

typedef struct item {
    vb_call_tools_t *ct;
    batch_t *b;
    char id[64];
    char name[VB_ASSISTANT_TOOL_NAME_MAX + 1];
    char *response; /* JSON object text once resolved */
    bool done, cancelled;
    vb_http_call_t *h;
    uint64_t t0;
    uint32_t timeout_ms;
    long log_idx; /* -1: not logged */
    series_t *ser;
} item_t;

struct batch {
    batch_t *next;
    item_t *items[VB_TOOLS_MAX_INFLIGHT];
    size_t n;
    /* Calls past VB_TOOLS_MAX_INFLIGHT in one toolCall: answered with an
     * error in the same toolResponse, never left waiting. */
    struct {
        char id[64];
        char name[VB_ASSISTANT_TOOL_NAME_MAX + 1];
    } over[TOOLS_OVERFLOW_MAX];
    size_t n_over;
    bool closed;
};

typedef struct outmsg {
    struct outmsg *next;
    size_t len;
    char text[];
} outmsg_t;

struct vb_call_tools {
    vb_tools_t *t;
    char sid[64], account_sid[64], from[64], to[64], direction[32];
    vb_call_tools_send_cb send;
    void *ud;
    batch_t *batches; /* oldest first */
    batch_t *open;    /* the batch of the message being parsed */
    size_t inflight;
    outmsg_t *outbox, **outbox_tail;
    vb_tool_log_entry_t *log;
    size_t n_log, log_cap, log_dropped;
};

/* ---- metrics ---- */

static int series_register(vb_tools_t *t, series_t *s, const char *name)
{
    snprintf(s->name, sizeof(s->name), "%s", name);
    for (int o = 0; o < OUT_COUNT; o++) {
        int rc = vb_metrics_add(
            t->metrics, VB_METRIC_COUNTER, "vb_tool_requests_total",
            "Tool calls by tool and outcome (ok, http_error, not_json, "
            "too_large, timeout, unreachable, cancelled, unknown)",
            VB_LABELS("tool", s->name, "outcome", out_names[o]), &s->req[o]);
        if (rc != 0)
            return rc;
    }
    int rc = vb_metrics_add(t->metrics, VB_METRIC_HISTOGRAM,
                            "vb_tool_latency_seconds",
                            "Time from the model's tool call to its result",
                            VB_LABELS("tool", s->name), &s->lat);
    if (rc == 0)
        s->ok = true;
    return rc;
}

static series_t *series_for(vb_tools_t *t, const char *name)
{
    for (size_t i = 0; i < t->n_series; i++)
        if (strcmp(t->series[i].name, name) == 0)
            return &t->series[i];
    if (t->n_series < VB_TOOLS_MAX_SERIES &&
        strlen(name) < sizeof(t->series[0].name)) {
        series_t *s = &t->series[t->n_series];
        if (series_register(t, s, name) == 0) {
            t->n_series++;
            return s;
        }
        memset(s, 0, sizeof(*s));
    }
    return t->other.ok ? &t->other : NULL;
}

static void count(vb_tools_t *t, series_t *s, int outcome, uint64_t ns)
{
    if (s == NULL || t->shard == NULL || *t->shard == NULL)
        return;
    vb_metrics_counter_add(*t->shard, s->req[outcome], 1);
    if (outcome != OUT_CANCELLED && outcome != OUT_UNKNOWN)
        vb_metrics_observe_ns(*t->shard, s->lat, ns);
}

/* ---- the stage's runner ---- */

int vb_tools_create(uv_loop_t *loop, const vb_tools_config_t *cfg,
                    vb_tools_t **out)
{
    if (loop == NULL || cfg == NULL || cfg->metrics == NULL || out == NULL)
        return VB_EINVAL;
    vb_tools_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return VB_ENOMEM;
    t->loop = loop;
    t->metrics = cfg->metrics;
    t->shard = cfg->shard;
    t->max_response =
        cfg->max_response ? cfg->max_response : DEFAULT_MAX_RESPONSE;
    int rc = 0;
    if (cfg->secret != NULL && cfg->secret[0] != '\0' &&
        (t->secret = strdup(cfg->secret)) == NULL)
        rc = VB_ENOMEM;
    if (rc == 0 && cfg->secret_previous != NULL &&
        cfg->secret_previous[0] != '\0' &&
        (t->secret_previous = strdup(cfg->secret_previous)) == NULL)
        rc = VB_ENOMEM;
    if (rc == 0 && vb_tls_config_client(cfg->ca_file, &t->tls) != 0) {
        /* Named explicitly: a configuration error. The system bundle
         * missing: plain http:// tools still work, https:// ones are
         * told "could not be reached". */
        if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0')
            rc = VB_ECONFIG;
        else
            vb_log_warn(NULL, "no CA bundle for https:// tools", "file=%s",
                        VB_TLS_SYSTEM_CA_FILE);
        t->tls = NULL;
    }
    vb_http_client_config_t hc = {.tls = t->tls,
                                  .max_body_bytes = t->max_response};
    if (rc == 0)
        rc = vb_http_client_create(loop, &hc, &t->http);
    if (rc == 0)
        rc = series_register(t, &t->other, "other");
    if (rc != 0) {
        vb_tools_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

void vb_tools_destroy(vb_tools_t *t)
{
    if (t == NULL)
        return;
    vb_http_client_destroy(t->http);
    vb_tls_config_destroy(t->tls);
    free(t->secret);
    free(t->secret_previous);
    free(t);
}

/* ---- per call ---- */

static void copy_ids(vb_call_tools_t *ct, const vb_call_ids_t *ids)
{
    if (ids == NULL)
        return;
#define CP(f)                                \
    if (ids->f != NULL && ids->f[0] != '\0') \
        snprintf(ct->f, sizeof(ct->f), "%s", ids->f);
    CP(sid)
    CP(account_sid)
    CP(from)
    CP(to)
    CP(direction)
#undef CP
}

vb_call_tools_t *vb_call_tools_new(vb_tools_t *t, const vb_call_ids_t *ids,
                                   vb_call_tools_send_cb send, void *ud)
{
    if (t == NULL || send == NULL)
        return NULL;
    vb_call_tools_t *ct = calloc(1, sizeof(*ct));
    if (ct == NULL)
        return NULL;
    ct->t = t;
    ct->send = send;
    ct->ud = ud;
    ct->outbox_tail = &ct->outbox;
    copy_ids(ct, ids);
    return ct;
}

void vb_call_tools_set_ids(vb_call_tools_t *ct, const vb_call_ids_t *ids)
{
    if (ct != NULL)
        copy_ids(ct, ids);
}

static void item_free(item_t *it)
{
    if (it->h != NULL)
        vb_http_cancel(it->h);
    free(it->response);
    free(it);
}

static void batch_unlink(vb_call_tools_t *ct, batch_t *b)
{
    for (batch_t **p = &ct->batches; *p != NULL; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    if (ct->open == b)
        ct->open = NULL;
}

void vb_call_tools_free(vb_call_tools_t *ct)
{
    if (ct == NULL)
        return;
    while (ct->batches != NULL) {
        batch_t *b = ct->batches;
        ct->batches = b->next;
        for (size_t i = 0; i < b->n; i++)
            item_free(b->items[i]);
        free(b);
    }
    while (ct->outbox != NULL) {
        outmsg_t *m = ct->outbox;
        ct->outbox = m->next;
        free(m);
    }
    for (size_t i = 0; i < ct->n_log; i++)
        free(ct->log[i].arguments);
    free(ct->log);
    free(ct);
}

static long log_add(vb_call_tools_t *ct, const char *id, const char *name,
                    const char *args)
{
    if (ct->n_log >= VB_TOOLS_LOG_MAX) {
        ct->log_dropped++;
        return -1;
    }
    if (ct->n_log == ct->log_cap) {
        size_t cap = ct->log_cap ? ct->log_cap * 2 : 8;
        vb_tool_log_entry_t *l = realloc(ct->log, cap * sizeof(*l));
        if (l == NULL) {
            ct->log_dropped++;
            return -1;
        }
        ct->log = l;
        ct->log_cap = cap;
    }
    vb_tool_log_entry_t *e = &ct->log[ct->n_log];
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    snprintf(e->name, sizeof(e->name), "%s", name);
    size_t al = args != NULL ? strlen(args) : 0;
    e->arguments =
        al > 0 && al <= VB_TOOLS_ARGS_MAX ? strdup(args) : strdup("{}");
    e->status = "pending";
    return (long)ct->n_log++;
}

const vb_tool_log_entry_t *vb_call_tools_log(const vb_call_tools_t *ct,
                                             size_t *n, size_t *dropped)
{
    if (n != NULL)
        *n = ct != NULL ? ct->n_log : 0;
    if (dropped != NULL)
        *dropped = ct != NULL ? ct->log_dropped : 0;
    return ct != NULL ? ct->log : NULL;
}

static void outbox_push(vb_call_tools_t *ct, const char *json, size_t len)
{
    outmsg_t *m = malloc(sizeof(*m) + len + 1);
    if (m == NULL) {
        vb_log_error(ct->sid, "toolResponse lost: out of memory", "bytes=%zu",
                     len);
        return;
    }
    m->next = NULL;
    m->len = len;
    memcpy(m->text, json, len + 1);
    *ct->outbox_tail = m;
    ct->outbox_tail = &m->next;
}

void vb_call_tools_flush(vb_call_tools_t *ct)
{
    while (ct != NULL && ct->outbox != NULL) {
        outmsg_t *m = ct->outbox;
        if (ct->send(ct->ud, m->text, m->len) != 0)
            return;
        ct->outbox = m->next;
        if (ct->outbox == NULL)
            ct->outbox_tail = &ct->outbox;
        free(m);
    }
}

/* A closed batch with every call resolved: one toolResponse for them. */
static void batch_maybe_send(vb_call_tools_t *ct, batch_t *b)
{
    if (!b->closed)
        return;
    size_t n = 0;
    vb_gemini_fn_response_t r[VB_TOOLS_MAX_INFLIGHT + TOOLS_OVERFLOW_MAX];
    for (size_t i = 0; i < b->n_over; i++)
        r[n++] =
            (vb_gemini_fn_response_t){.id = b->over[i].id,
                                      .name = b->over[i].name,
                                      .response_json = TOOLS_OVERFLOW_JSON};
    for (size_t i = 0; i < b->n; i++) {
        item_t *it = b->items[i];
        if (it->cancelled)
            continue;
        if (!it->done)
            return;
        r[n++] = (vb_gemini_fn_response_t){
            .id = it->id, .name = it->name, .response_json = it->response};
    }
    if (n > 0) {
        char *json = NULL;
        size_t len = 0;
        int rc = vb_gemini_build_tool_responses(r, n, &json, &len);
        if (rc != 0) {
            vb_log_error(ct->sid, "toolResponse not built", "err=%s calls=%zu",
                         vb_err_name(rc), n);
        } else {
            vb_log_info(ct->sid, "tool results sent to the model",
                        "calls=%zu bytes=%zu", n, len);
            /* in order: what waits goes first */
            vb_call_tools_flush(ct);
            if (ct->outbox != NULL || ct->send(ct->ud, json, len) != 0)
                outbox_push(ct, json, len);
            free(json);
        }
    }
    batch_unlink(ct, b);
    for (size_t i = 0; i < b->n; i++)
        item_free(b->items[i]);
    free(b);
}

static char *error_json(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static char *error_json(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddStringToObject(o, "error", msg) == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void item_resolve(item_t *it, char *response, int outcome,
                         const char *status, int http_status)
{
    vb_call_tools_t *ct = it->ct;
    it->h = NULL;
    it->done = true;
    it->response = response != NULL ? response : strdup("{}");
    ct->inflight--;
    uint64_t ns = vb_clock_now_ns() - it->t0;
    if (it->log_idx >= 0) {
        vb_tool_log_entry_t *e = &ct->log[it->log_idx];
        e->status = status;
        e->http_status = http_status;
        e->latency_ms = (uint32_t)(ns / 1000000u);
    }
    if (outcome >= 0)
        count(ct->t, it->ser, outcome, ns);
    batch_maybe_send(ct, it->b);
}

static void on_http(int err, const vb_http_response_t *r, void *ud)
{
    item_t *it = ud;
    vb_call_tools_t *ct = it->ct;
    vb_tools_t *t = ct->t;
    int outcome;
    char *resp = NULL;
    int hs = r != NULL ? r->status : 0;
    if (err == VB_ETIMEDOUT) {
        outcome = OUT_TIMEOUT;
        resp = error_json("the tool did not answer in time (%u ms)",
                          it->timeout_ms);
    } else if (err == VB_EMSGSIZE) {
        outcome = OUT_TOO_LARGE;
        resp = error_json("the tool's answer was too large (over %zu bytes)",
                          t->max_response);
    } else if (err != 0) {
        outcome = OUT_UNREACHABLE;
        resp = error_json("the tool could not be reached");
    } else if (hs < 200 || hs > 299) {
        outcome = OUT_HTTP_ERROR;
        resp = error_json("the tool failed (HTTP %d)", hs);
    } else {
        cJSON *v = cJSON_ParseWithLength(r->body, r->body_len);
        if (v == NULL) {
            outcome = OUT_NOT_JSON;
            resp = error_json("the tool's answer was not JSON");
        } else {
            outcome = OUT_OK;
            if (!cJSON_IsObject(v)) {
                cJSON *o = cJSON_CreateObject();
                if (o != NULL)
                    cJSON_AddItemToObject(o, "output", v);
                else
                    cJSON_Delete(v);
                v = o;
            }
            resp = v != NULL ? cJSON_PrintUnformatted(v) : NULL;
            cJSON_Delete(v);
        }
    }
    if (outcome == OUT_OK)
        vb_log_info(ct->sid, "tool answered",
                    "tool=%s id=%s http_status=%d "
                    "ms=%.1f",
                    it->name, it->id, hs,
                    (double)(vb_clock_now_ns() - it->t0) / 1e6);
    else
        vb_log_warn(ct->sid, "tool failed: the model is told",
                    "tool=%s id=%s outcome=%s http_status=%d err=%s", it->name,
                    it->id, out_names[outcome], hs,
                    err != 0 ? vb_err_name(err) : "-");
    item_resolve(it, resp, outcome, out_names[outcome], hs);
}

/* The tool.call body. */
static char *tool_body(const vb_call_tools_t *ct, const char *id,
                       const char *name, const char *args_json, size_t *len)
{
    cJSON *root = cJSON_CreateObject(), *call, *tool;
    if (root == NULL)
        return NULL;
    cJSON *args = cJSON_Parse(args_json != NULL ? args_json : "{}");
    if (args == NULL || !cJSON_IsObject(args)) {
        cJSON_Delete(args);
        args = cJSON_CreateObject();
    }
    bool ok =
        cJSON_AddStringToObject(root, "event", "tool.call") != NULL &&
        (call = cJSON_AddObjectToObject(root, "call")) != NULL &&
        cJSON_AddStringToObject(call, "sid", ct->sid) != NULL &&
        cJSON_AddStringToObject(call, "account_sid", ct->account_sid) != NULL &&
        cJSON_AddStringToObject(call, "from", ct->from) != NULL &&
        cJSON_AddStringToObject(call, "to", ct->to) != NULL &&
        cJSON_AddStringToObject(call, "direction", ct->direction) != NULL &&
        (tool = cJSON_AddObjectToObject(root, "tool")) != NULL &&
        cJSON_AddStringToObject(tool, "id", id) != NULL &&
        cJSON_AddStringToObject(tool, "name", name) != NULL && args;
    if (ok) {
        cJSON_AddItemToObject(tool, "arguments", args);
        args = NULL;
    }
    cJSON_Delete(args);
    char *s = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (s != NULL)
        *len = strlen(s);
    return s;
}

static int start_http(item_t *it, const vb_assistant_tool_t *tool,
                      const char *args_json)
{
    vb_call_tools_t *ct = it->ct;
    vb_tools_t *t = ct->t;
    size_t len = 0;
    char *body = tool_body(ct, it->id, it->name, args_json, &len);
    if (body == NULL)
        return VB_ENOMEM;
    char sig[VB_SIG_MAX];
    vb_http_header_t hd[3] = {{"Content-Type", "application/json"},
                              {"Accept", "application/json"}};
    size_t nh = 2;
    if (t->secret != NULL && *t->secret != '\0' &&
        vb_sig_sign_rotating(t->secret, t->secret_previous, (int64_t)time(NULL),
                             body, len, sig, sizeof(sig)) == 0)
        hd[nh++] = (vb_http_header_t){VB_SIG_HEADER, sig};
    it->timeout_ms =
        tool->timeout_ms ? tool->timeout_ms : VB_ASSISTANT_TOOL_TIMEOUT_MS;
    vb_http_request_t rq = {.method = "POST",
                            .url = tool->url,
                            .headers = hd,
                            .n_headers = nh,
                            .body = body,
                            .body_len = len,
                            .timeout_ms = it->timeout_ms,
                            .log_id = ct->sid};
    int rc = vb_http_client_request(t->http, &rq, on_http, it, &it->h);
    free(body);
    return rc;
}

int vb_call_tools_call(vb_call_tools_t *ct, const vb_assistant_t *a,
                       const char *id, const char *name, const char *args_json,
                       const vb_tool_builtin_t *builtin)
{
    if (ct == NULL || id == NULL || name == NULL)
        return VB_EINVAL;
    batch_t *b = ct->open;
    if (b == NULL) {
        b = calloc(1, sizeof(*b));
        if (b == NULL)
            return VB_ENOMEM;
        batch_t **p = &ct->batches;
        while (*p != NULL)
            p = &(*p)->next;
        *p = b;
        ct->open = b;
    }
    item_t *it = calloc(1, sizeof(*it));
    if (it == NULL)
        return VB_ENOMEM;
    it->ct = ct;
    it->b = b;
    it->t0 = vb_clock_now_ns();
    snprintf(it->id, sizeof(it->id), "%s", id);
    snprintf(it->name, sizeof(it->name), "%s", name);
    bool full =
        ct->inflight >= VB_TOOLS_MAX_INFLIGHT || b->n >= VB_TOOLS_MAX_INFLIGHT;
    if (b->n >= VB_TOOLS_MAX_INFLIGHT) {
        /* Answered with an error in the batch's response; past the
         * overflow list too, it cannot be answered at all. */
        vb_log_warn(ct->sid, "too many function calls in one toolCall",
                    "tool=%s id=%s max=%u answered=%s", name, id,
                    VB_TOOLS_MAX_INFLIGHT,
                    b->n_over < TOOLS_OVERFLOW_MAX ? "error" : "no");
        if (b->n_over < TOOLS_OVERFLOW_MAX) {
            snprintf(b->over[b->n_over].id, sizeof b->over[0].id, "%s", id);
            snprintf(b->over[b->n_over].name, sizeof b->over[0].name, "%s",
                     name);
            b->n_over++;
        }
        free(it);
        return VB_ENOSPC;
    }
    b->items[b->n++] = it;
    ct->inflight++;
    it->log_idx = log_add(ct, id, name, args_json);
    if (builtin != NULL) {
        char *r =
            strdup(builtin->response_json ? builtin->response_json : "{}");
        item_resolve(it, r, -1, builtin->status ? builtin->status : "ok", 0);
        return 0;
    }
    const vb_assistant_tool_t *tool =
        a != NULL ? vb_assistant_tool(a, name) : NULL;
    it->ser = series_for(ct->t, tool != NULL ? name : "other");
    if (tool == NULL) {
        vb_log_warn(ct->sid, "model called an unknown tool", "tool=%s id=%s",
                    name, id);
        item_resolve(it, error_json("unknown function %s", name), OUT_UNKNOWN,
                     out_names[OUT_UNKNOWN], 0);
        return 0;
    }
    if (full) {
        item_resolve(it,
                     error_json("too many tool calls at once (at most %u)",
                                VB_TOOLS_MAX_INFLIGHT),
                     OUT_UNREACHABLE, out_names[OUT_UNREACHABLE], 0);
        return VB_ENOSPC;
    }
    int rc = start_http(it, tool, args_json);
    if (rc != 0) {
        vb_log_warn(ct->sid, "tool request not started", "tool=%s err=%s", name,
                    vb_err_name(rc));
        item_resolve(it, error_json("the tool could not be reached"),
                     OUT_UNREACHABLE, out_names[OUT_UNREACHABLE], 0);
        return 0;
    }
    vb_log_info(ct->sid, "tool called", "tool=%s id=%s timeout_ms=%u", name, id,
                it->timeout_ms);
    return 0;
}

void vb_call_tools_end_batch(vb_call_tools_t *ct)
{
    if (ct == NULL || ct->open == NULL)
        return;
    batch_t *b = ct->open;
    ct->open = NULL;
    b->closed = true;
    batch_maybe_send(ct, b);
}

bool vb_call_tools_cancel(vb_call_tools_t *ct, const char *id)
{
    if (ct == NULL || id == NULL)
        return false;
    for (batch_t *b = ct->batches; b != NULL; b = b->next)
        for (size_t i = 0; i < b->n; i++) {
            item_t *it = b->items[i];
            if (it->cancelled || strcmp(it->id, id) != 0)
                continue;
            it->cancelled = true;
            if (!it->done) {
                if (it->h != NULL) {
                    vb_http_cancel(it->h);
                    it->h = NULL;
                }
                ct->inflight--;
                uint64_t ns = vb_clock_now_ns() - it->t0;
                if (it->log_idx >= 0) {
                    ct->log[it->log_idx].status = out_names[OUT_CANCELLED];
                    ct->log[it->log_idx].latency_ms = (uint32_t)(ns / 1000000u);
                }
                count(ct->t, it->ser, OUT_CANCELLED, ns);
            } else if (it->log_idx >= 0) {
                ct->log[it->log_idx].status = out_names[OUT_CANCELLED];
            }
            vb_log_info(ct->sid, "tool call cancelled by the model",
                        "tool=%s id=%s", it->name, it->id);
            batch_maybe_send(ct, b);
            return true;
        }
    return false;
}
