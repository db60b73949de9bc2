/* SPDX-License-Identifier: MIT */
/*
 * --assistant-url requests (net/assistant_url.h).
 */
#include "net/assistant_url.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "net/http_client.h"
#include "net/tls.h"
#include "net/vbsig.h"

static const char *const outcome_names[VB_AURL_COUNT] = {
    "assistant", "named", "default", "timeout", "error", "invalid"};

const char *vb_assistant_url_outcome(int outcome)
{
    return outcome >= 0 && outcome < VB_AURL_COUNT ? outcome_names[outcome]
                                                   : "?";
}

struct vb_assistant_url {
    const vb_config_t *cfg;
    vb_http_client_t *hc;
    vb_tls_config_t *tls;
    vb_assistant_url_req_t *reqs; /* in flight */
};

struct vb_assistant_url_req {
    vb_assistant_url_t *u;
    vb_assistant_url_req_t *prev, *next;
    vb_http_call_t *h;
    vb_assistants_t *set;
    const vb_assistant_t *number;
    vb_assistant_url_cb cb;
    void *ud;
};

static void req_free(vb_assistant_url_req_t *r);

int vb_assistant_url_create(uv_loop_t *loop, const vb_config_t *cfg,
                            vb_assistant_url_t **out)
{
    *out = NULL;
    const char *url = cfg->assistant_url;
    if (url == NULL || *url == '\0')
        return 0;
    bool https = strncmp(url, "https://", 8) == 0;
    if (!https && strncmp(url, "http://", 7) != 0) {
        vb_log_error(NULL, "--assistant-url must be http:// or https://",
                     "url=%s", url);
        return VB_ECONFIG;
    }
    vb_assistant_url_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return VB_ENOMEM;
    u->cfg = cfg;
    int rc;
    if (https && (rc = vb_tls_config_client(
                      *cfg->webhook_ca_file ? cfg->webhook_ca_file : NULL,
                      &u->tls)) != 0) {
        vb_log_error(NULL, "cannot load the CA bundle for --assistant-url",
                     "err=%s", vb_err_name(rc));
        free(u);
        return VB_ECONFIG;
    }
    vb_http_client_config_t hcc = {.tls = u->tls,
                                   .max_body_bytes = VB_AURL_MAX_ANSWER};
    if ((rc = vb_http_client_create(loop, &hcc, &u->hc)) != 0) {
        vb_tls_config_destroy(u->tls);
        free(u);
        return rc;
    }
    *out = u;
    return 0;
}

void vb_assistant_url_destroy(vb_assistant_url_t *u)
{
    if (u == NULL)
        return;
    /* Every request in flight is cancelled, without its callback. */
    vb_http_client_destroy(u->hc);
    while (u->reqs != NULL)
        req_free(u->reqs);
    vb_tls_config_destroy(u->tls);
    free(u);
}

static void req_free(vb_assistant_url_req_t *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else if (r->u != NULL && r->u->reqs == r)
        r->u->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    vb_assistants_unref(r->set);
    free(r);
}

static void finish(vb_assistant_url_req_t *r, int outcome,
                   vb_assistant_t *chosen, const char *why)
{
    vb_assistant_url_cb cb = r->cb;
    void *ud = r->ud;
    req_free(r);
    cb(ud, outcome, chosen, why);
}

static void on_answer(int err, const vb_http_response_t *resp, void *ud)
{
    vb_assistant_url_req_t *r = ud;
    r->h = NULL;
    char why[256] = "";
    if (err != 0) {
        finish(r, err == VB_ETIMEDOUT ? VB_AURL_TIMEOUT : VB_AURL_ERROR, NULL,
               vb_err_name(err));
        return;
    }
    if (resp->status == 204) {
        finish(r, VB_AURL_DEFAULT, NULL, "");
        return;
    }
    if (resp->status < 200 || resp->status > 299) {
        snprintf(why, sizeof why, "status %d", resp->status);
        finish(r, VB_AURL_ERROR, NULL, why);
        return;
    }
    cJSON *root = cJSON_ParseWithLength(resp->body, resp->body_len);
    const cJSON *only = root != NULL ? root->child : NULL;
    if (cJSON_IsObject(root) && only != NULL && only->next == NULL &&
        only->string != NULL && strcmp(only->string, "assistant") == 0) {
        const vb_assistant_t *a =
            cJSON_IsString(only) ? vb_assistants_find(r->set, only->valuestring)
                                 : NULL;
        if (a == NULL)
            snprintf(why, sizeof why, "no assistant named \"%.64s\"",
                     cJSON_IsString(only) ? only->valuestring : "(not text)");
        vb_assistant_t *ref = vb_assistant_ref(a);
        cJSON_Delete(root);
        finish(r, ref != NULL ? VB_AURL_NAMED : VB_AURL_INVALID, ref, why);
        return;
    }
    cJSON_Delete(root);
    vb_assistant_t *a = NULL;
    if (vb_assistant_parse_override(resp->body, resp->body_len, r->number, &a,
                                    why, sizeof why) != 0) {
        finish(r, VB_AURL_INVALID, NULL, why);
        return;
    }
    finish(r, VB_AURL_ASSISTANT, a, "");
}

int vb_assistant_url_request(vb_assistant_url_t *u, const vb_call_ctx_t *ctx,
                             vb_assistants_t *set, const vb_assistant_t *number,
                             vb_assistant_url_cb cb, void *ud,
                             vb_assistant_url_req_t **h)
{
    *h = NULL;
    vb_assistant_url_req_t *r = calloc(1, sizeof(*r));
    cJSON *root = cJSON_CreateObject(), *c = NULL;
    char *body = NULL;
    if (r == NULL || root == NULL ||
        cJSON_AddStringToObject(root, "event", "call.incoming") == NULL ||
        (c = cJSON_AddObjectToObject(root, "call")) == NULL ||
        cJSON_AddStringToObject(c, "sid", ctx->call_sid) == NULL ||
        cJSON_AddStringToObject(c, "account_sid", ctx->account_sid) == NULL ||
        cJSON_AddStringToObject(c, "from", ctx->from) == NULL ||
        cJSON_AddStringToObject(c, "to", ctx->to) == NULL ||
        cJSON_AddStringToObject(c, "direction", ctx->direction) == NULL ||
        (body = cJSON_PrintUnformatted(root)) == NULL) {
        cJSON_Delete(root);
        free(r);
        return VB_ENOMEM;
    }
    cJSON_Delete(root);
    size_t blen = strlen(body);
    char sig[VB_SIG_MAX];
    vb_http_header_t hdrs[2] = {{"Content-Type", "application/json"},
                                {VB_SIG_HEADER, sig}};
    size_t nh = 1;
    const char *secret = u->cfg->webhook_secret;
    if (secret != NULL && *secret &&
        vb_sig_sign_rotating(secret, u->cfg->webhook_secret_previous,
                             (int64_t)vb_clock_wall_s(), body, blen, sig,
                             sizeof sig) == 0)
        nh = 2;
    vb_http_request_t hr = {
        .method = "POST",
        .url = u->cfg->assistant_url,
        .headers = hdrs,
        .n_headers = nh,
        .body = body,
        .body_len = blen,
        .timeout_ms = (uint32_t)u->cfg->assistant_timeout_ms,
        .log_id = ctx->call_sid,
    };
    r->u = u;
    r->set = vb_assistants_ref(set);
    r->number = number;
    r->cb = cb;
    r->ud = ud;
    int rc = vb_http_client_request(u->hc, &hr, on_answer, r, &r->h);
    free(body);
    if (rc != 0) {
        req_free(r);
        return rc;
    }
    r->next = u->reqs;
    if (u->reqs != NULL)
        u->reqs->prev = r;
    u->reqs = r;
    *h = r;
    return 0;
}

void vb_assistant_url_cancel(vb_assistant_url_req_t *h)
{
    if (h == NULL)
        return;
    vb_http_cancel(h->h);
    req_free(h);
}
