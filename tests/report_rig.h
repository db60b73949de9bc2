/* SPDX-License-Identifier: MIT */
/*
 * The post-call report cases' rig: the fake model playing a script, the
 * example business app receiving the reports (tests/example_app.h), and
 * voxbridge sending them there through its spool with a short backoff.
 */
#ifndef VB_TESTS_REPORT_RIG_H
#define VB_TESTS_REPORT_RIG_H

#include <stdio.h>
#include <string.h>

#include "tests/e2e.h"
#include "tests/example_app.h"

typedef struct ctx {
    rig_t r;
    app_t app;
    int app_port;
    char spool[400], store[400], app_out[400], url[96];
} ctx_t;

static inline void ctx_init(ctx_t *c, const char *script)
{
    memset(c, 0, sizeof(*c));
    rig_init(&c->r);
    snprintf(c->spool, sizeof(c->spool), "%s/spool", c->r.dir);
    snprintf(c->store, sizeof(c->store), "%s/store", c->r.dir);
    snprintf(c->app_out, sizeof(c->app_out), "%s/app.out", c->r.dir);
    c->app_port = proc_free_port();
    snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d/events", c->app_port);
    write_file(c->r.script, script);
    rig_fake(&c->r, (const char *const[]){"--mode", "script", "--script",
                                          c->r.script, NULL});
}

/* voxbridge reporting to the app, signed with `secret`, retrying after
 * 100 ms up to `backoff_max_ms`; `more` (NULL-ended, may be NULL) added. */
static inline void ctx_vb_reporting(ctx_t *c, const char *secret,
                                    const char *backoff_max_ms,
                                    const char *const *more)
{
    const char *args[32] = {"--events-url",
                            c->url,
                            "--events-spool",
                            c->spool,
                            "--webhook-secret",
                            secret,
                            "--events-backoff-min-ms",
                            "100",
                            "--events-backoff-max-ms",
                            backoff_max_ms};
    int n = 10;
    for (int i = 0; more != NULL && more[i] != NULL && n < 31; i++)
        args[n++] = more[i];
    args[n] = NULL;
    rig_vb(&c->r, args, NULL);
}

#endif
