/* SPDX-License-Identifier: MIT */
/*
 * Delivery of post-call reports to --events-url, at least once
 * (docs/assistants.md, "Post-call report"; docs/architecture.md §4).
 *
 * DESIGN. One delivery thread with its own libuv loop; no audio loop ever
 * does file or network I/O for reports. The gemini stage hands a rendered
 * report over with vb_events_submit() (a mutex-guarded list and a
 * uv_async wake-up, once per call). The thread then:
 *   1. writes it to the spool directory: a temporary file, fsync, rename
 *      to <unix-ms>-<CallSid>.json, fsync of the directory, before any
 *      attempt; beyond --events-max-files or --events-max-bytes the report
 *      is refused: counted (vb_events_failed_total{reason="spool_full"})
 *      and logged at error level with the call id, never dropped silently;
 *   2. POSTs the stored bytes with a fresh X-Voxbridge-Signature per
 *      attempt (a retry days later must not carry a stale `t`), at most
 *      VB_EVENTS_INFLIGHT at once, oldest first;
 *   3. on a 2xx deletes the file (vb_events_delivered_total); on
 *      anything else (a connection error, a timeout, any other status)
 *      retries after an exponential backoff with jitter
 *      (--events-backoff-min-ms doubling to --events-backoff-max-ms, each
 *      wait drawn from [d/2, d]), until a 2xx. A 4xx other than 408 and
 *      429 is retried too (a receiver misconfigured for a while, a key
 *      being rotated, must not lose reports), but only
 *      --events-max-rejections times for one report (counted since this
 *      process started): then the file moves to <spool>/dead/ and counts
 *      reason="rejected": kept for an operator, out of the retry loop and
 *      out of the spool's bounds.
 * At start every *.json already in the spool is queued (a report whose
 * process died before its 2xx is sent again: receivers dedupe by call
 * sid); leftover temporary files (a write cut by a crash, never
 * acknowledged or attempted) are removed and logged. At stop, requests in
 * flight are abandoned and their files stay; reports still queued in
 * memory are written first.
 *
 * The HTTP exchange sits behind vb_events_transport_t, so tests can drive
 * the retry logic and a different client can be plugged in; the built-in
 * one is net/http_client.h on the events loop (keep-alive per host), the
 * signature net/vbsig.h.
 */
#ifndef VB_AI_EVENTS_H
#define VB_AI_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/metrics.h"

#define VB_EVENTS_INFLIGHT  4u    /* concurrent deliveries */
#define VB_EVENTS_QUEUE_MAX 1024u /* reports handed over, not yet spooled */
/* "t=<up to 20 digits>,v1=<64 hex>", a second ",v1=<64 hex>" while
 * rotating keys, NUL (net/vbsig.h VB_SIG_MAX). */
#define VB_EVENTS_SIG_MAX 160u

/* `status`: the HTTP status, or a negative VB_E* when no response came
 * (VB_ETIMEDOUT, VB_ECONNREFUSED, VB_EPROTO...). Loop thread. */
typedef void (*vb_events_done_cb)(int status, void *ud);

/* One request header field (net/http_client.h has its own; not included
 * here, its type name is also net/http.h's). */
typedef struct vb_events_header {
    const char *name, *value;
} vb_events_header_t;

typedef struct vb_events_transport {
    /* Starts one POST of `body` to `url` with the header fields `headers`
     * (Content-Type, the signature...); `cb` fires exactly once, later,
     * unless this returns an error (then nothing started). *handle is for
     * cancel; `log_id` names the call in log lines. Loop thread. */
    int (*post)(void *ctx, uv_loop_t *loop, const char *url,
                const vb_events_header_t *headers, size_t n_headers,
                const char *body, size_t len, uint32_t timeout_ms,
                const char *log_id, vb_events_done_cb cb, void *ud,
                void **handle);
    /* Abandons a request started by post: no callback afterwards. */
    void (*cancel)(void *ctx, void *handle);
    /* At stop, after the cancels (may be NULL). */
    void (*close)(void *ctx);
    void *ctx;
} vb_events_transport_t;

typedef struct vb_events_opts {
    const char *url;       /* http:// or https:// */
    const char *spool_dir; /* created if missing (0750) */
    const char *secret;    /* HMAC key of X-Voxbridge-Signature */
    /* While rotating: a second v1= made with this key (NULL/"": none). */
    const char *secret_previous;
    const char *ca_file; /* https: CA bundle; NULL/"": the system one */
    uint32_t max_files;  /* 0: 10000 */
    uint64_t max_bytes;  /* 0: 256 MiB */
    uint32_t timeout_ms; /* per attempt; 0: 10000 */
    uint32_t backoff_min_ms, backoff_max_ms; /* 0: 1000, 300000 */
    /* 4xx answers (not 408/429) before the report is dead-lettered; 0: 50 */
    uint32_t max_rejections;
    vb_metrics_t *metrics;
    /* NULL: the built-in HTTP client. Copied. */
    const vb_events_transport_t *transport;
} vb_events_opts_t;

typedef struct vb_events vb_events_t;

/* Creates the spool directory, removes leftover temporary files, lists
 * the reports already there (queued for delivery once started) and
 * registers the metrics. Returns 0, VB_EINVAL (bad URL, no spool, no
 * secret), VB_EIO (the directory cannot be created or read: logged),
 * VB_ECONFIG (https:// and the CA bundle cannot be loaded), VB_ENOMEM.
 * Main thread, at start. */
int vb_events_create(const vb_events_opts_t *o, vb_events_t **out);

/* Starts the delivery thread. 0, VB_EBUSY, VB_ESYS. Main thread. */
int vb_events_start(vb_events_t *e);

/* Hands a rendered report over; takes `json` (malloc'd, `len` bytes) in
 * every case. `sid` names the file and the log lines. Returns 0, or
 * VB_ENOSPC when VB_EVENTS_QUEUE_MAX reports already wait (the report is
 * refused: logged and counted as spool_full) or VB_ECLOSED after stop.
 * Any thread; takes a mutex, once per call. */
int vb_events_submit(vb_events_t *e, const char *sid, char *json, size_t len);

/* Writes the reports still queued to the spool, abandons requests in
 * flight (their files stay) and joins the thread. Main thread, after the
 * stages that submit have stopped. */
void vb_events_stop(vb_events_t *e);

/* Frees; accepts NULL. Stops first if needed. */
void vb_events_destroy(vb_events_t *e);

/* Reports in the spool now (files waiting for a 2xx). Any thread. */
uint32_t vb_events_spooled(vb_events_t *e);

/* X-Voxbridge-Signature for `body` at Unix time `t`:
 * "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>" into out
 * (VB_EVENTS_SIG_MAX), and ",v1=<previous's>" after it when `previous` is
 * neither NULL nor "". Returns 0 or VB_EINVAL. Any thread. */
int vb_events_sign(const char *secret, const char *previous, int64_t t,
                   const char *body, size_t len, char *out, size_t cap);

/* The backoff before attempt `failures + 1`: min(max, min * 2^(failures -
 * 1)), then drawn uniformly from [d/2, d] with `rnd` (0..UINT32_MAX). */
uint32_t vb_events_backoff_ms(uint32_t failures, uint32_t min_ms,
                              uint32_t max_ms, uint32_t rnd);

#endif
