/* SPDX-License-Identifier: MIT */
/*
 * POST /v1/calls and the outbound call's webhook parameters (design in
 * outbound.h).
 */
#include "net/outbound.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/form.h"
#include "net/twilio_rest.h"
#include "net/twiml.h"

/* A create request waiting on Twilio. */
typedef struct pending {
    vb_outbound_t *o; /* NULL once the endpoint is gone */
    void *conn;       /* NULL once the client left */
    uint64_t t_start;
    char to[VB_OUTBOUND_TARGET_MAX + 1];
    char assistant[VB_ASSISTANT_NAME_MAX + 1];
} pending_t;

struct vb_outbound {
    uv_loop_t *loop;
    const vb_config_t *cfg;
    vb_assistant_store_t *store;
    const vb_twilio_sig_key_t *key;
    vb_tls_config_t *tls;
    vb_outbound_answered_fn answered;
    void *answered_ud;
    unsigned char token_hash[32];
    bool enabled;
    pending_t *pend[VB_OUTBOUND_PENDING_MAX];
    size_t npend;
};

/* ---- helpers ---- */

static bool sha256(const char *s, size_t n, unsigned char out[32])
{
    return mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                      (const unsigned char *)s, n, out) == 0;
}

/* Constant time in the bytes compared (both are digests). */
static bool digest_equal(const unsigned char *a, const unsigned char *b)
{
    unsigned char d = 0;
    for (int i = 0; i < 32; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bool e164_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    for (size_t i = 2; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool sip_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 5 || n > VB_OUTBOUND_TARGET_MAX || strncasecmp(s, "sip:", 4) != 0)
        return false;
    for (size_t i = 4; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return false;
    }
    return strchr(s + 4, '@') != NULL;
}

static bool target_ok(const char *s)
{
    return e164_ok(s) || sip_ok(s);
}

/* base64url without padding. *out is malloc'd. */
static int b64url_encode(const char *in, size_t n, char **out)
{
    size_t cap = 4 * ((n + 2) / 3) + 1, olen = 0;
    char *b = malloc(cap);
    if (b == NULL)
        return VB_ENOMEM;
    if (mbedtls_base64_encode((unsigned char *)b, cap, &olen,
                              (const unsigned char *)in, n) != 0) {
        free(b);
        return VB_EINVAL;
    }
    while (olen > 0 && b[olen - 1] == '=')
        olen--;
    for (size_t i = 0; i < olen; i++)
        b[i] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
    b[olen] = '\0';
    *out = b;
    return 0;
}

static int b64url_decode(const char *in, char **out)
{
    size_t n = strlen(in);
    if (n > 4 * VB_OUTBOUND_VARS_MAX)
        return VB_EPROTO;
    char *t = malloc(n + 4);
    if (t == NULL)
        return VB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '+' || c == '/' || c == '=') {
            free(t);
            return VB_EPROTO;
        }
        t[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    while (n % 4 != 0)
        t[n++] = '=';
    size_t cap = n / 4 * 3 + 1, olen = 0;
    char *b = malloc(cap);
    if (b == NULL) {
        free(t);
        return VB_ENOMEM;
    }
    int rc = mbedtls_base64_decode((unsigned char *)b, cap, &olen,
                                   (const unsigned char *)t, n);
    free(t);
    if (rc != 0) {
        free(b);
        return VB_EPROTO;
    }
    b[olen] = '\0';
    if (strlen(b) != olen) { /* a NUL inside */
        free(b);
        return VB_EPROTO;
    }
    *out = b;
    return 0;
}

/* The MAC of a `vbo` value: the assistant MAC's HMAC with its own label
 * in the place of the CallSid, which the webhook URL cannot know. */
static int payload_mac(const vb_twilio_sig_key_t *k, const char *payload,
                       char out[VB_TWILIO_ASSISTANT_MAC_LEN + 1])
{
    return vb_twilio_sig_assistant_mac(k, "vb-outbound-v1", "", payload, out);
}

/* ---- the request body ---- */

typedef struct create_req {
    const char *to, *from, *assistant;
    cJSON *vars;            /* borrowed from the parsed body, or NULL */
    const char *on_machine; /* NULL: no detection */
} create_req_t;

/* Validates the body; on failure writes the reason into `why`. */
static bool parse_body(cJSON *root, const vb_assistants_t *set, create_req_t *c,
                       char *why, size_t wn)
{
    memset(c, 0, sizeof(*c));
    if (!cJSON_IsObject(root)) {
        snprintf(why, wn, "body: must be a JSON object");
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const char *k = it->string;
        if (strcmp(k, "to") && strcmp(k, "from") && strcmp(k, "assistant") &&
            strcmp(k, "variables") && strcmp(k, "machine_detection")) {
            snprintf(why, wn, "%.64s: unknown field", k);
            return false;
        }
    }
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(root, "to");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(root, "from");
    const cJSON *as = cJSON_GetObjectItemCaseSensitive(root, "assistant");
    cJSON *vars = cJSON_GetObjectItemCaseSensitive(root, "variables");
    const cJSON *md =
        cJSON_GetObjectItemCaseSensitive(root, "machine_detection");
    if (!cJSON_IsString(to) || !target_ok(to->valuestring)) {
        snprintf(why, wn, "to: %s",
                 to == NULL ? "required"
                            : "must be an E.164 number (+14155550100) or a "
                              "sip: URI");
        return false;
    }
    if (!cJSON_IsString(from) || !target_ok(from->valuestring)) {
        snprintf(why, wn, "from: %s",
                 from == NULL ? "required"
                              : "must be an E.164 number (+14155550100) or a "
                                "sip: URI");
        return false;
    }
    c->to = to->valuestring;
    c->from = from->valuestring;
    const vb_assistant_t *a = vb_assistants_default(set);
    if (as != NULL) {
        if (!cJSON_IsString(as)) {
            snprintf(why, wn, "assistant: must be a string");
            return false;
        }
        a = vb_assistants_find(set, as->valuestring);
        if (a == NULL) {
            snprintf(why, wn, "assistant: no assistant named \"%.64s\"",
                     as->valuestring);
            return false;
        }
    }
    if (a == NULL) {
        snprintf(why, wn, "assistant: none configured");
        return false;
    }
    c->assistant = a->name;
    if (vars != NULL) {
        if (!cJSON_IsObject(vars)) {
            snprintf(why, wn, "variables: must be an object");
            return false;
        }
        int n = 0;
        cJSON_ArrayForEach(it, vars)
        {
            if (++n > VB_OUTBOUND_MAX_VARS) {
                snprintf(why, wn, "variables: more than %d",
                         VB_OUTBOUND_MAX_VARS);
                return false;
            }
            if (!vb_assistant_var_name_ok(it->string)) {
                snprintf(why, wn,
                         "variables.%.64s: name must be "
                         "[A-Za-z_][A-Za-z0-9_]*, at most %d bytes",
                         it->string, VB_ASSISTANT_VAR_NAME_MAX);
                return false;
            }
            if (!cJSON_IsString(it)) {
                snprintf(why, wn, "variables.%s: must be a string", it->string);
                return false;
            }
            if (strlen(it->valuestring) > VB_OUTBOUND_VAR_VALUE_MAX) {
                snprintf(why, wn, "variables.%s: longer than %d bytes",
                         it->string, VB_OUTBOUND_VAR_VALUE_MAX);
                return false;
            }
        }
        c->vars = vars;
    }
    if (md != NULL) {
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(md, "mode");
        const cJSON *om = cJSON_GetObjectItemCaseSensitive(md, "on_machine");
        if (!cJSON_IsObject(md)) {
            snprintf(why, wn, "machine_detection: must be an object");
            return false;
        }
        if (!cJSON_IsString(mode) || strcmp(mode->valuestring, "async") != 0) {
            snprintf(why, wn, "machine_detection.mode: must be \"async\"");
            return false;
        }
        if (!cJSON_IsString(om) || (strcmp(om->valuestring, "voicemail") &&
                                    strcmp(om->valuestring, "hangup"))) {
            snprintf(why, wn,
                     "machine_detection.on_machine: must be \"voicemail\" "
                     "or \"hangup\"");
            return false;
        }
        if (strcmp(om->valuestring, "voicemail") == 0 &&
            (a->voicemail == NULL || a->voicemail[0] == '\0')) {
            snprintf(why, wn,
                     "machine_detection.on_machine: assistant \"%s\" has no "
                     "voicemail text",
                     a->name);
            return false;
        }
        cJSON_ArrayForEach(it, md)
        {
            if (strcmp(it->string, "mode") &&
                strcmp(it->string, "on_machine")) {
                snprintf(why, wn, "machine_detection.%.64s: unknown field",
                         it->string);
                return false;
            }
        }
        c->on_machine = om->valuestring;
    }
    return true;
}

/* The `vbo` value: {"a": name, "v": {...}, "m": on_machine}. */
static int make_payload(const create_req_t *c, char **out, char *why, size_t wn)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return VB_ENOMEM;
    cJSON_AddStringToObject(o, "a", c->assistant);
    if (c->vars != NULL)
        cJSON_AddItemToObject(o, "v", cJSON_Duplicate(c->vars, true));
    if (c->on_machine != NULL)
        cJSON_AddStringToObject(o, "m", c->on_machine);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL)
        return VB_ENOMEM;
    if (strlen(text) > VB_OUTBOUND_VARS_MAX + VB_ASSISTANT_NAME_MAX + 32) {
        snprintf(why, wn, "variables: more than %d bytes as JSON",
                 VB_OUTBOUND_VARS_MAX);
        free(text);
        return VB_EMSGSIZE;
    }
    int rc = b64url_encode(text, strlen(text), out);
    free(text);
    return rc;
}

/* ---- form encoding ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
    bool oom;
} buf_t;

static void buf_put(buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void form_add(buf_t *b, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    if (b->n > 0)
        buf_put(b, "&", 1);
    buf_put(b, name, strlen(name));
    buf_put(b, "=", 1);
    for (const char *p = value; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        char e[3];
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            buf_put(b, (const char *)&ch, 1);
        } else {
            e[0] = '%';
            e[1] = hex[ch >> 4];
            e[2] = hex[ch & 15];
            buf_put(b, e, 3);
        }
    }
}

/* ---- the endpoint ---- */

static void json_answer(vb_http_resp_t *resp, int status, cJSON *o)
{
    char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (text == NULL) {
        resp->status = 500;
        resp->content_type = "text/plain";
        resp->body = "out of memory\n";
        resp->body_len = strlen(resp->body);
        return;
    }
    resp->status = status;
    resp->content_type = "application/json";
    resp->body_owned = text;
    resp->body_len = strlen(text);
}

static void error_answer(vb_http_resp_t *resp, int status, const char *error,
                         const char *why)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL) {
        cJSON_AddStringToObject(o, "error", error);
        cJSON_AddStringToObject(o, "reason", why);
    }
    json_answer(resp, status, o);
}

static void pend_remove(vb_outbound_t *o, pending_t *p)
{
    for (size_t i = 0; i < o->npend; i++)
        if (o->pend[i] == p) {
            o->pend[i] = o->pend[--o->npend];
            return;
        }
}

static void created(const vb_twilio_rest_created_t *res, void *ud)
{
    pending_t *p = ud;
    vb_outbound_t *o = p->o;
    if (o != NULL)
        pend_remove(o, p);
    if (o == NULL || p->conn == NULL) {
        if (res->status >= 200 && res->status < 300)
            vb_log_info(res->sid, "outbound call created, nobody waiting",
                        "to=%s", p->to);
        free(p);
        return;
    }
    vb_http_resp_t resp;
    memset(&resp, 0, sizeof(resp));
    cJSON *j = cJSON_CreateObject();
    if (res->status >= 200 && res->status < 300 && res->sid[0] != '\0') {
        cJSON_AddStringToObject(j, "call_sid", res->sid);
        json_answer(&resp, 201, j);
        vb_log_info(res->sid, "outbound call placed", "to=%s assistant=%s",
                    p->to, p->assistant);
    } else {
        cJSON_AddStringToObject(j, "error", "twilio");
        if (res->status > 0) {
            cJSON_AddNumberToObject(j, "twilio_status", res->status);
            cJSON_AddNumberToObject(j, "code", res->code);
            cJSON_AddStringToObject(j, "message", res->message);
        } else {
            cJSON_AddStringToObject(j, "message", vb_err_name(res->status));
        }
        json_answer(&resp, 502, j);
        vb_log_warn(NULL, "outbound call refused by Twilio",
                    "to=%s http_status=%d code=%d message=%.200s", p->to,
                    res->status, res->code, res->message);
    }
    int status = resp.status;
    vb_http_server_answer(p->conn, &resp);
    if (o->answered != NULL)
        o->answered(o->answered_ud, status, p->t_start);
    free(p);
}

bool vb_outbound_abandon(vb_outbound_t *o, void *defer_arg)
{
    if (o == NULL)
        return false;
    for (size_t i = 0; i < o->npend; i++)
        if (o->pend[i] == defer_arg) {
            /* The request goes on; its result is only logged. */
            o->pend[i]->conn = NULL;
            o->pend[i]->o = NULL;
            o->pend[i] = o->pend[--o->npend];
            vb_log_warn(NULL,
                        "POST /v1/calls connection closed before Twilio "
                        "answered",
                        NULL);
            return true;
        }
    return false;
}

bool vb_outbound_enabled(const vb_outbound_t *o)
{
    return o != NULL && o->enabled;
}

static bool authorized(const vb_outbound_t *o, const vb_http_req_t *req)
{
    const char *h = vb_http_req_header(req, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *t = h + 7;
    while (*t == ' ')
        t++;
    unsigned char d[32];
    return sha256(t, strlen(t), d) && digest_equal(d, o->token_hash);
}

void vb_outbound_route(vb_outbound_t *o, const vb_http_req_t *req,
                       vb_http_resp_t *resp)
{
    if (req->method != HTTP_POST) {
        error_answer(resp, 405, "method_not_allowed", "POST only");
        vb_http_resp_header(resp, "Allow", "POST");
        return;
    }
    if (!authorized(o, req)) {
        VB_LOG_RATELIMITED(VB_LOG_WARN, 1000, NULL,
                           "POST /v1/calls refused: bad bearer token",
                           "peer=%s", req->peer);
        error_answer(resp, 401, "unauthorized",
                     "Authorization: Bearer <--admin-token> required");
        vb_http_resp_header(resp, "WWW-Authenticate",
                            "Bearer realm=\"voxbridge\"");
        return;
    }
    const vb_config_t *c = o->cfg;
    if (*c->public_url == '\0' || *c->twilio_account_sid == '\0' ||
        *c->twilio_auth_token == '\0') {
        error_answer(resp, 503, "not_configured",
                     "outbound calls need --public-url, TWILIO_ACCOUNT_SID "
                     "and TWILIO_AUTH_TOKEN");
        return;
    }
    if (o->npend >= VB_OUTBOUND_PENDING_MAX) {
        error_answer(resp, 429, "busy",
                     "too many call creations waiting on Twilio");
        vb_http_resp_header(resp, "Retry-After", "1");
        return;
    }
    cJSON *root =
        cJSON_ParseWithLength(req->body ? req->body : "", req->body_len);
    char why[300] = "";
    vb_assistants_t *set = vb_assistant_store_get(o->store);
    create_req_t cr;
    if (root == NULL) {
        snprintf(why, sizeof why, "body: not valid JSON");
    } else if (!parse_body(root, set, &cr, why, sizeof why)) {
        /* why says it */
    }
    char *payload = NULL;
    int rc = 0;
    if (why[0] == '\0' &&
        (rc = make_payload(&cr, &payload, why, sizeof why)) != 0 &&
        why[0] == '\0')
        snprintf(why, sizeof why, "cannot encode: %s", vb_err_name(rc));
    if (why[0] != '\0') {
        VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, NULL, "POST /v1/calls refused",
                           "reason=%.200s peer=%s", why, req->peer);
        error_answer(resp, rc == VB_ENOMEM ? 500 : 400, "invalid_request", why);
        goto out;
    }
    char mac[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    if (payload_mac(o->key, payload, mac) != 0) {
        error_answer(resp, 500, "internal", "cannot sign the webhook URL");
        goto out;
    }
    /* The public URL without a trailing '/'. */
    size_t pl = strlen(c->public_url);
    while (pl > 0 && c->public_url[pl - 1] == '/')
        pl--;
    size_t ul = pl + strlen(c->webhook_path) + strlen(payload) + 128;
    char *url = malloc(ul), *status_url = malloc(ul);
    buf_t form = {0};
    if (url != NULL && status_url != NULL) {
        snprintf(url, ul, "%.*s%s?%s=%s&%s=%s", (int)pl, c->public_url,
                 c->webhook_path, VB_OUTBOUND_PARAM, payload,
                 VB_OUTBOUND_MAC_PARAM, mac);
        snprintf(status_url, ul, "%.*s%s?%s=%s&%s=%s", (int)pl, c->public_url,
                 c->status_path, VB_OUTBOUND_PARAM, payload,
                 VB_OUTBOUND_MAC_PARAM, mac);
        form_add(&form, "To", cr.to);
        form_add(&form, "From", cr.from);
        form_add(&form, "Url", url);
        form_add(&form, "Method", "POST");
        form_add(&form, "StatusCallback", status_url);
        form_add(&form, "StatusCallbackMethod", "POST");
        form_add(&form, "StatusCallbackEvent", "initiated");
        form_add(&form, "StatusCallbackEvent", "ringing");
        form_add(&form, "StatusCallbackEvent", "answered");
        form_add(&form, "StatusCallbackEvent", "completed");
        if (cr.on_machine != NULL) {
            /* Leaving a message waits for the end of the greeting (the
             * beep); hanging up needs only the first verdict. */
            form_add(&form, "MachineDetection",
                     strcmp(cr.on_machine, "voicemail") == 0
                         ? "DetectMessageEnd"
                         : "Enable");
            form_add(&form, "AsyncAmd", "true");
            form_add(&form, "AsyncAmdStatusCallback", status_url);
            form_add(&form, "AsyncAmdStatusCallbackMethod", "POST");
        }
    }
    pending_t *p = calloc(1, sizeof(*p));
    if (url == NULL || status_url == NULL || form.oom || form.p == NULL ||
        p == NULL) {
        free(p);
        error_answer(resp, 500, "internal", "out of memory");
        goto out_form;
    }
    if (form.n > VB_TWILIO_REST_FORM_MAX) {
        free(p);
        error_answer(resp, 400, "invalid_request",
                     "variables: the call's URL grew too long");
        goto out_form;
    }
    p->o = o;
    p->conn = req->conn;
    p->t_start = req->t_start_ns;
    snprintf(p->to, sizeof p->to, "%s", cr.to);
    snprintf(p->assistant, sizeof p->assistant, "%s", cr.assistant);
    vb_twilio_rest_req_t rr = {
        .api_url = c->twilio_api_url,
        .account_sid = c->twilio_account_sid,
        .auth_token = c->twilio_auth_token,
        .tls = o->tls,
    };
    if (req->conn == NULL || (rc = vb_twilio_rest_create_call(
                                  o->loop, &rr, form.p, created, p)) != 0) {
        free(p);
        vb_log_warn(NULL, "outbound call not sent", "err=%s", vb_err_name(rc));
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "error", "twilio");
        cJSON_AddStringToObject(j, "message", vb_err_name(rc));
        json_answer(resp, 502, j);
        goto out_form;
    }
    o->pend[o->npend++] = p;
    resp->defer = true;
    resp->defer_arg = p;
out_form:
    free(form.p);
    free(url);
    free(status_url);
out:
    free(payload);
    cJSON_Delete(root);
    vb_assistants_unref(set);
}

/* ---- the webhook side ---- */

int vb_outbound_from_query(const vb_twilio_sig_key_t *key, const char *query,
                           vb_outbound_call_t *out)
{
    memset(out, 0, sizeof(*out));
    if (query == NULL || strstr(query, VB_OUTBOUND_PARAM "=") == NULL)
        return VB_ENOENT;
    vb_form_t f = {0};
    int rc = vb_form_parse(&f, query, strlen(query), 32);
    const char *v = rc == 0 ? vb_form_get(&f, VB_OUTBOUND_PARAM) : NULL;
    const char *m = rc == 0 ? vb_form_get(&f, VB_OUTBOUND_MAC_PARAM) : NULL;
    if (rc != 0 || v == NULL) {
        vb_form_free(&f);
        return rc == VB_ENOMEM ? VB_ENOMEM : VB_ENOENT;
    }
    char want[VB_TWILIO_ASSISTANT_MAC_LEN + 1];
    if (m == NULL || payload_mac(key, v, want) != 0 ||
        !vb_twilio_sig_equal(want, strlen(want), m, strlen(m))) {
        vb_form_free(&f);
        return VB_EAUTH;
    }
    char *text = NULL;
    rc = b64url_decode(v, &text);
    vb_form_free(&f);
    if (rc != 0)
        return rc;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "a");
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(j, "v");
    const cJSON *om = cJSON_GetObjectItemCaseSensitive(j, "m");
    if (!cJSON_IsObject(j) || !cJSON_IsString(a) ||
        strlen(a->valuestring) > VB_ASSISTANT_NAME_MAX ||
        (vars != NULL && !cJSON_IsObject(vars)) ||
        (om != NULL && !cJSON_IsString(om))) {
        cJSON_Delete(j);
        return VB_EPROTO;
    }
    snprintf(out->assistant, sizeof out->assistant, "%s", a->valuestring);
    if (om != NULL)
        snprintf(out->on_machine, sizeof out->on_machine, "%s",
                 om->valuestring);
    if (vars != NULL &&
        (out->variables = cJSON_PrintUnformatted(vars)) == NULL) {
        cJSON_Delete(j);
        return VB_ENOMEM;
    }
    cJSON_Delete(j);
    return 0;
}

/* ---- answering-machine detection ---- */

static void amd_done(int status, void *ud)
{
    (void)status; /* twilio_rest logs the outcome with the CallSid */
    (void)ud;
}

bool vb_outbound_on_status(vb_outbound_t *o, const vb_http_req_t *req,
                           const vb_form_t *f)
{
    const char *by = vb_form_get(f, "AnsweredBy");
    const char *sid = vb_form_get(f, "CallSid");
    if (o == NULL || by == NULL || sid == NULL)
        return false;
    vb_outbound_call_t oc;
    int rc = vb_outbound_from_query(o->key, req->query, &oc);
    if (rc != 0) {
        if (rc != VB_ENOENT)
            vb_log_warn(sid, "machine detection result with bad parameters",
                        "answered_by=%.32s err=%s", by, vb_err_name(rc));
        return false;
    }
    free(oc.variables);
    bool machine = strncmp(by, "machine_", 8) == 0 || strcmp(by, "fax") == 0;
    vb_log_info(sid, "machine detection result",
                "answered_by=%.32s on_machine=%s", by,
                oc.on_machine[0] ? oc.on_machine : "-");
    if (!machine || oc.on_machine[0] == '\0')
        return false; /* human, unknown: the assistant goes on */
    char twiml_buf[VB_OUTBOUND_VOICEMAIL_MAX * 6 + 128];
    const char *twiml = NULL;
    if (strcmp(oc.on_machine, "voicemail") == 0 && strcmp(by, "fax") != 0) {
        vb_assistant_t *a = vb_assistant_store_find(o->store, oc.assistant);
        if (a != NULL && a->voicemail != NULL && a->voicemail[0] != '\0') {
            vb_twiml_t t;
            vb_twiml_init(&t);
            vb_twiml_say(&t, a->voicemail);
            vb_twiml_hangup(&t);
            char *doc = NULL;
            size_t len = 0;
            if (vb_twiml_finish(&t, &doc, &len) == 0 &&
                len < sizeof twiml_buf) {
                memcpy(twiml_buf, doc, len + 1);
                twiml = twiml_buf;
            }
            free(doc);
        } else {
            vb_log_warn(sid, "no voicemail text: hanging up", "assistant=%s",
                        oc.assistant);
        }
        vb_assistant_unref(a);
    }
    const vb_config_t *c = o->cfg;
    vb_twilio_rest_req_t rr = {
        .api_url = c->twilio_api_url,
        .account_sid = c->twilio_account_sid,
        .auth_token = c->twilio_auth_token,
        .call_sid = sid,
        .tls = o->tls,
        .twiml = twiml,
    };
    rc = vb_twilio_rest_hangup(o->loop, &rr, amd_done, NULL);
    if (rc != 0) {
        vb_log_warn(sid, "machine detected, but the REST update failed",
                    "err=%s", vb_err_name(rc));
        return false;
    }
    vb_log_info(
        sid, twiml ? "machine: leaving the voicemail" : "machine: hanging up",
        "answered_by=%.32s", by);
    return true;
}

/* ---- lifetime ---- */

int vb_outbound_create(uv_loop_t *loop, const vb_config_t *cfg,
                       vb_assistant_store_t *store,
                       const vb_twilio_sig_key_t *key,
                       vb_outbound_answered_fn answered, void *answered_ud,
                       vb_outbound_t **out)
{
    vb_outbound_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return VB_ENOMEM;
    o->loop = loop;
    o->cfg = cfg;
    o->store = store;
    o->key = key;
    o->answered = answered;
    o->answered_ud = answered_ud;
    o->enabled = *cfg->admin_token != '\0' && store != NULL;
    if (o->enabled &&
        !sha256(cfg->admin_token, strlen(cfg->admin_token), o->token_hash)) {
        free(o);
        return VB_EIO;
    }
    if (o->enabled && strncmp(cfg->twilio_api_url, "https://", 8) == 0) {
        int rc = vb_tls_config_client(NULL, &o->tls);
        if (rc != 0) {
            vb_log_error(NULL,
                         "cannot load the system CA bundle for outbound "
                         "calls",
                         "err=%s", vb_err_name(rc));
            free(o);
            return rc;
        }
    }
    *out = o;
    return 0;
}

void vb_outbound_destroy(vb_outbound_t *o)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->npend; i++) {
        o->pend[i]->o = NULL;
        o->pend[i]->conn = NULL;
    }
    vb_tls_config_destroy(o->tls);
    free(o);
}
