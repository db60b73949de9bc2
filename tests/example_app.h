/* SPDX-License-Identifier: MIT */
/*
 * Driving build/vb-example-app (bench/app/) from a test: start it on a
 * given loopback port (so a restart lands on the same one), read what it
 * received (GET /reports, GET /stats, the raw bodies it stored) and stop
 * it. Also an HMAC-SHA256 signature check written against mbedTLS
 * directly, independent of voxbridge's own signer.
 */
#ifndef VB_TESTS_EXAMPLE_APP_H
#define VB_TESTS_EXAMPLE_APP_H

#include <cjson/cJSON.h>
#include <mbedtls/md.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "tests/http_client.h"
#include "tests/proc.h"
#include "tests/test.h"

typedef struct app {
    pid_t pid;
    int port;
    char out[400];
    char store[400];
} app_t;

/* Starts the app on `port` with `secret`, its raw bodies in `store`, and
 * `extra` arguments (NULL-terminated, may be NULL); waits until it
 * listens. */
static inline void app_start(app_t *a, int port, const char *secret,
                             const char *store, const char *out,
                             const char *const *extra)
{
    char bin[400], listen[64];
    snprintf(bin, sizeof(bin), "%s/vb-example-app", proc_build_dir());
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    const char *argv[32] = {bin,    "--listen", listen, "--secret",
                            secret, "--store",  store};
    int n = 7;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    a->port = port;
    snprintf(a->out, sizeof(a->out), "%s", out);
    snprintf(a->store, sizeof(a->store), "%s", store);
    unlink(a->out); /* a restart must not find the last run's line */
    a->pid = proc_spawn(argv, NULL, a->out);
    char *text;
    proc_wait_log(a->out, "listening on ", a->pid, proc_ms(10000), &text);
    free(text);
}

/* Stops it (SIGTERM), checking a clean exit. */
static inline void app_stop(app_t *a)
{
    if (a->pid <= 0)
        return;
    kill(a->pid, SIGTERM);
    int st = proc_reap(a->pid, proc_ms(10000));
    a->pid = 0;
    char *out = proc_read_file(a->out);
    if (st != 0 || (out != NULL && (strstr(out, "Sanitizer") != NULL ||
                                    strstr(out, "runtime error") != NULL)))
        vb_test_fail(__FILE__, __LINE__, "vb-example-app exited %d:\n%s", st,
                     out ? out : "");
    free(out);
}

/* GET `path` as parsed JSON (caller frees). */
static inline cJSON *app_get(const app_t *a, const char *path)
{
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    tc_resp_t r;
    ASSERT_EQ(tc_request(a->port, req, &r, proc_ms(5000)), 200);
    cJSON *j = cJSON_Parse(r.body);
    tc_free_resp(&r);
    ASSERT_NOT_NULL(j);
    return j;
}

/* Polls GET /reports until it holds at least `n`; returns it. */
static inline cJSON *app_wait_reports(const app_t *a, int n, int ms)
{
    double end = tc_now_ms() + ms;
    for (;;) {
        cJSON *j = app_get(a, "/reports");
        if (cJSON_GetArraySize(j) >= n)
            return j;
        cJSON_Delete(j);
        if (tc_now_ms() > end) {
            char *out = proc_read_file(a->out);
            vb_test_fail(__FILE__, __LINE__, "fewer than %d reports:\n%s", n,
                         out ? out : "");
        }
        usleep(20000);
    }
}

/* The `name` number of GET /stats. */
static inline long app_stat(const app_t *a, const char *name)
{
    cJSON *j = app_get(a, "/stats");
    long v = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(j, name));
    cJSON_Delete(j);
    return v;
}

/* Checks "t=<t>,v1=<hex>" against HMAC-SHA256(secret, "<t>.<body>") and
 * that t is within `max_age_s` of now. */
static inline bool sig_valid(const char *header, const char *secret,
                             const char *body, size_t len, long max_age_s)
{
    long long t = 0;
    char hex[65] = "";
    if (header == NULL ||
        sscanf(header, "t=%lld,v1=%64[0-9a-f]", &t, hex) != 2 ||
        strlen(hex) != 64)
        return false;
    long long now = (long long)time(NULL);
    if (now - t > max_age_s || t - now > max_age_s)
        return false;
    char msg_t[32];
    snprintf(msg_t, sizeof(msg_t), "%lld.", t);
    unsigned char mac[32];
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    mbedtls_md_hmac_starts(&ctx, (const unsigned char *)secret, strlen(secret));
    mbedtls_md_hmac_update(&ctx, (const unsigned char *)msg_t, strlen(msg_t));
    mbedtls_md_hmac_update(&ctx, (const unsigned char *)body, len);
    mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    char want[65];
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", mac[i]);
    return strcmp(want, hex) == 0;
}

#endif
