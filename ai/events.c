/* SPDX-License-Identifier: MIT */
/*
 * The post-call report spool and its delivery thread; see events.h.
 */
#include "ai/events.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/thread.h"
#include "net/http_client.h"
#include "net/tls.h"
#include "net/vbsig.h"
#include "net/ws.h"

#define DEFAULT_MAX_FILES   10000u
#define DEFAULT_MAX_BYTES   (256ull * 1024 * 1024)
#define DEFAULT_TIMEOUT_MS  10000u
#define DEFAULT_BACKOFF_MIN 1000u
#define DEFAULT_BACKOFF_MAX 300000u
#define DEFAULT_REJECTIONS  50u
#define NAME_MAX_LEN        128

/* ---- signing and backoff (pure) ---- */

int vb_events_sign(const char *secret, const char *previous, int64_t t,
                   const char *body, size_t len, char *out, size_t cap)
{
    if (secret == NULL || out == NULL || cap < VB_EVENTS_SIG_MAX)
        return VB_EINVAL;
    int rc = vb_sig_sign_rotating(secret, previous, t, body, len, out, cap);
    return rc == 0 ? 0 : VB_EINVAL;
}

uint32_t vb_events_backoff_ms(uint32_t failures, uint32_t min_ms,
                              uint32_t max_ms, uint32_t rnd)
{
    if (min_ms == 0)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    uint64_t d = min_ms;
    for (uint32_t i = 1; i < failures && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    uint64_t lo = d / 2;
    return (uint32_t)(lo + (uint64_t)rnd * (d - lo) / UINT32_MAX);
}

/* ---- the built-in transport: net/http_client on the events loop ---- */

typedef struct http_ctx {
    vb_tls_config_t *tls;
    vb_http_client_t *client; /* made on the events thread, first use */
} http_ctx_t;

typedef struct post {
    vb_events_done_cb cb;
    void *ud;
    vb_http_call_t *h;
} post_t;

static void http_done(int err, const vb_http_response_t *resp, void *ud)
{
    post_t *p = ud;
    vb_events_done_cb cb = p->cb;
    void *cud = p->ud;
    free(p);
    cb(err != 0 ? err : resp->status, cud);
}

#define HTTP_HEADERS_MAX 8

static int http_post(void *ctx, uv_loop_t *loop, const char *url,
                     const vb_events_header_t *headers, size_t n_headers,
                     const char *body, size_t len, uint32_t timeout_ms,
                     const char *log_id, vb_events_done_cb cb, void *ud,
                     void **handle)
{
    http_ctx_t *hc = ctx;
    int rc;
    if (hc->client == NULL) {
        /* Only the status matters: a receiver's long answer to a report
         * it took is no reason to send it again. */
        vb_http_client_config_t cc = {.tls = hc->tls, .discard_body = true};
        if ((rc = vb_http_client_create(loop, &cc, &hc->client)) != 0)
            return rc;
    }
    vb_http_header_t hs[HTTP_HEADERS_MAX];
    if (n_headers > HTTP_HEADERS_MAX)
        return VB_EINVAL;
    for (size_t i = 0; i < n_headers; i++)
        hs[i] = (vb_http_header_t){headers[i].name, headers[i].value};
    post_t *p = malloc(sizeof(*p));
    if (p == NULL)
        return VB_ENOMEM;
    p->cb = cb;
    p->ud = ud;
    vb_http_request_t req = {.method = "POST",
                             .url = url,
                             .headers = hs,
                             .n_headers = n_headers,
                             .body = body,
                             .body_len = len,
                             .timeout_ms = timeout_ms,
                             .log_id = log_id};
    rc = vb_http_client_request(hc->client, &req, http_done, p, &p->h);
    if (rc != 0) {
        free(p);
        return rc;
    }
    *handle = p;
    return 0;
}

/* At stop: the request's callback will not run, so its context goes
 * here. */
static void http_cancel(void *ctx, void *handle)
{
    (void)ctx;
    post_t *p = handle;
    vb_http_cancel(p->h);
    free(p);
}

static void http_close(void *ctx)
{
    http_ctx_t *hc = ctx;
    vb_http_client_destroy(hc->client);
    hc->client = NULL;
}

/* ---- the spool ---- */

typedef struct entry {
    char name[NAME_MAX_LEN]; /* file name in the spool */
    char sid[64];
    uint64_t size;
    uint32_t failures;
    uint32_t rejections; /* 4xx answers (not 408/429) so far */
    uint64_t next_ms;    /* uv_now time of the next attempt */
    bool inflight;
    void *handle;
    struct vb_events *e;
} entry_t;

typedef struct pending {
    struct pending *next;
    char sid[64];
    char *json;
    size_t len;
} pending_t;

enum {
    F_CONNECT,
    F_TIMEOUT,
    F_HTTP_5XX,
    F_HTTP_RETRY,
    F_HTTP_4XX,
    F_REJECTED,
    F_SPOOL_FULL,
    F_SPOOL_ERROR,
    F_COUNT
};
static const char *const fail_labels[F_COUNT] = {
    "connect",  "timeout",  "http_5xx",   "http_retry",
    "http_4xx", "rejected", "spool_full", "spool_error"};

struct vb_events {
    vb_events_opts_t o;
    char *url, *dir, *secret, *secret_previous, *dead;
    vb_events_transport_t tr;
    http_ctx_t http;
    bool builtin;

    uv_loop_t loop;
    uv_async_t wake, stop;
    uv_timer_t timer;
    vb_thread_t thread;
    bool loop_ok, stopping;

    pthread_mutex_t mu;
    pending_t *head, *tail;
    uint32_t npending;
    bool closed;
    _Atomic uint32_t refused; /* refused in submit, not yet counted */
    _Atomic uint32_t nspooled;

    entry_t **ent; /* oldest first */
    uint32_t nent, cap;
    uint64_t bytes;
    uint32_t inflight;
    unsigned rnd;
    uint64_t seq;

    vb_metrics_shard_t *shard;
    vb_metric_t m_delivered, m_spooled, m_failed[F_COUNT];
};

static int entry_cmp(const void *a, const void *b)
{
    const entry_t *x = *(entry_t *const *)a, *y = *(entry_t *const *)b;
    return strcmp(x->name, y->name);
}

static int ent_add(vb_events_t *e, const char *name, const char *sid,
                   uint64_t size)
{
    if (e->nent == e->cap) {
        uint32_t nc = e->cap ? e->cap * 2 : 64;
        entry_t **n = realloc(e->ent, nc * sizeof(*n));
        if (n == NULL)
            return VB_ENOMEM;
        e->ent = n;
        e->cap = nc;
    }
    entry_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return VB_ENOMEM;
    snprintf(x->name, sizeof(x->name), "%s", name);
    snprintf(x->sid, sizeof(x->sid), "%s", sid);
    x->size = size;
    x->e = e;
    e->ent[e->nent++] = x;
    e->bytes += size;
    atomic_store(&e->nspooled, e->nent);
    return 0;
}

static void ent_remove(vb_events_t *e, entry_t *x)
{
    for (uint32_t i = 0; i < e->nent; i++)
        if (e->ent[i] == x) {
            memmove(e->ent + i, e->ent + i + 1,
                    (e->nent - i - 1) * sizeof(*e->ent));
            e->nent--;
            break;
        }
    e->bytes -= x->size;
    atomic_store(&e->nspooled, e->nent);
    free(x);
}

/* The CallSid part of "<ms>-<sid>.json". */
static void sid_of(const char *name, char *out, size_t cap)
{
    const char *d = strchr(name, '-');
    const char *s = d ? d + 1 : name;
    size_t n = strcspn(s, ".");
    snprintf(out, cap, "%.*s", (int)n, s);
}

static int scan(vb_events_t *e)
{
    DIR *d = opendir(e->dir);
    if (d == NULL) {
        vb_log_error(NULL, "cannot read the events spool", "dir=%s errno=%d",
                     e->dir, errno);
        return VB_EIO;
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", e->dir, n);
        if (strncmp(n, ".tmp-", 5) == 0) {
            vb_log_warn(NULL,
                        "events spool: removing a report cut by a crash "
                        "before it was stored (never sent)",
                        "file=%s", n);
            unlink(path);
            continue;
        }
        size_t len = strlen(n);
        if (n[0] == '.' || len < 6 || strcmp(n + len - 5, ".json") != 0 ||
            len >= NAME_MAX_LEN)
            continue;
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char sid[64];
        sid_of(n, sid, sizeof(sid));
        rc = ent_add(e, n, sid, (uint64_t)st.st_size);
    }
    closedir(d);
    if (e->nent > 1)
        qsort(e->ent, e->nent, sizeof(*e->ent), entry_cmp);
    if (e->nent > 0)
        vb_log_info(NULL, "events spool: reports from before the start",
                    "count=%u bytes=%llu", e->nent,
                    (unsigned long long)e->bytes);
    return rc;
}

static void fail_count(vb_events_t *e, int f)
{
    vb_metrics_counter_add(e->shard, e->m_failed[f], 1);
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Stores one report: temp file, fsync, rename, directory fsync. */
static void spool_one(vb_events_t *e, pending_t *p)
{
    if (e->nent >= e->o.max_files || e->bytes + p->len > e->o.max_bytes) {
        fail_count(e, F_SPOOL_FULL);
        vb_log_error(p->sid, "events spool full: report refused",
                     "files=%u bytes=%llu max_files=%u max_bytes=%llu", e->nent,
                     (unsigned long long)e->bytes, e->o.max_files,
                     (unsigned long long)e->o.max_bytes);
        return;
    }
    char name[NAME_MAX_LEN], tmp[4200], path[4200], sid[64];
    /* The CallSid names the file: anything but letters and digits in it
     * becomes '_' (no path can come out of it). */
    size_t k = 0;
    for (; p->sid[k] != '\0' && k < sizeof(sid) - 1; k++) {
        char ch = p->sid[k];
        sid[k] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                         (ch >= '0' && ch <= '9')
                     ? ch
                     : '_';
    }
    sid[k] = '\0';
    snprintf(name, sizeof(name), "%013lld-%s.json",
             (long long)(vb_clock_wall_s() * 1000.0), sid);
    snprintf(path, sizeof(path), "%s/%s", e->dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s.%llu", e->dir, name,
             (unsigned long long)++e->seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    bool ok = fd >= 0 && write_all(fd, p->json, p->len) && fsync(fd) == 0;
    int err = errno;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (ok && rename(tmp, path) != 0) {
        err = errno;
        ok = false;
    }
    if (!ok) {
        unlink(tmp);
        fail_count(e, F_SPOOL_ERROR);
        vb_log_error(p->sid, "cannot store the report in the events spool",
                     "dir=%s errno=%d", e->dir, err);
        return;
    }
    int dfd = open(e->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    if (ent_add(e, name, p->sid, p->len) != 0)
        vb_log_error(p->sid, "out of memory for a spooled report",
                     "file=%s (sent after a restart)", name);
    else
        vb_log_debug(p->sid, "report spooled", "file=%s bytes=%zu", name,
                     p->len);
}

/* Takes everything submitted so far and stores it. */
static void take_pending(vb_events_t *e)
{
    pthread_mutex_lock(&e->mu);
    pending_t *p = e->head;
    e->head = e->tail = NULL;
    e->npending = 0;
    pthread_mutex_unlock(&e->mu);
    uint32_t r = atomic_exchange(&e->refused, 0);
    if (r > 0)
        vb_metrics_counter_add(e->shard, e->m_failed[F_SPOOL_FULL], r);
    while (p != NULL) {
        pending_t *next = p->next;
        spool_one(e, p);
        free(p->json);
        free(p);
        p = next;
    }
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b != NULL) {
        b[n] = '\0';
        *len = (size_t)n;
    }
    return b;
}

static void schedule(vb_events_t *e);

/* Refused (a 4xx) --events-max-rejections times: out of the loop. */
static void dead_letter(vb_events_t *e, entry_t *x, int status)
{
    char from[4200], to[4200];
    snprintf(from, sizeof(from), "%s/%s", e->dir, x->name);
    snprintf(to, sizeof(to), "%s/%s", e->dead, x->name);
    mkdir(e->dead, 0750);
    int rc = rename(from, to);
    fail_count(e, F_REJECTED);
    vb_log_error(x->sid,
                 "report refused by the events receiver too often: moved "
                 "to the dead-letter directory, not retried",
                 "http_status=%d rejections=%u file=%s moved=%d", status,
                 x->rejections, to, rc == 0);
    ent_remove(e, x);
}

/* A failed attempt (`status`: a retryable HTTP status or a VB_E*):
 * counted, and the next one after the backoff. */
static void retry_later(vb_events_t *e, entry_t *x, int status)
{
    int f = status == VB_ETIMEDOUT           ? F_TIMEOUT
            : status >= 500                  ? F_HTTP_5XX
            : status == 408 || status == 429 ? F_HTTP_RETRY
            : status > 0                     ? F_HTTP_4XX
                                             : F_CONNECT;
    fail_count(e, f);
    x->failures++;
    uint32_t wait = vb_events_backoff_ms(
        x->failures, e->o.backoff_min_ms, e->o.backoff_max_ms,
        (uint32_t)rand_r(&e->rnd) * 2654435761u);
    x->next_ms = uv_now(&e->loop) + wait;
    if (status > 0)
        VB_LOG_RATELIMITED(VB_LOG_WARN, 5000, x->sid,
                           "report delivery failed, will retry",
                           "http_status=%d attempt=%u retry_in_ms=%u", status,
                           x->failures, wait);
    else
        VB_LOG_RATELIMITED(VB_LOG_WARN, 5000, x->sid,
                           "report delivery failed, will retry",
                           "err=%s attempt=%u retry_in_ms=%u",
                           vb_err_name(status), x->failures, wait);
}

static void on_done(int status, void *ud)
{
    entry_t *x = ud;
    vb_events_t *e = x->e;
    x->inflight = false;
    x->handle = NULL;
    e->inflight--;
    if (status >= 200 && status < 300) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", e->dir, x->name);
        unlink(path);
        vb_metrics_counter_add(e->shard, e->m_delivered, 1);
        vb_log_info(x->sid, "report delivered",
                    "http_status=%d attempts=%u file=%s", status,
                    x->failures + 1, x->name);
        ent_remove(e, x);
    } else if (status > 0 && status < 500 && status != 408 && status != 429 &&
               ++x->rejections >= e->o.max_rejections) {
        dead_letter(e, x, status);
    } else {
        retry_later(e, x, status);
    }
    vb_metrics_gauge_set(e->shard, e->m_spooled, e->nent);
    schedule(e);
}

static void attempt(vb_events_t *e, entry_t *x)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", e->dir, x->name);
    size_t len = 0;
    char *body = read_file(path, &len);
    if (body == NULL && errno == ENOENT) {
        /* Taken out of the spool by hand: nothing to send. */
        vb_log_warn(x->sid, "spooled report gone before it was sent", "file=%s",
                    x->name);
        ent_remove(e, x);
        return;
    }
    if (body == NULL) {
        fail_count(e, F_SPOOL_ERROR);
        vb_log_error(x->sid, "spooled report unreadable: left in place",
                     "file=%s errno=%d", x->name, errno);
        x->failures++;
        x->next_ms = uv_now(&e->loop) + e->o.backoff_max_ms;
        return;
    }
    char sig[VB_EVENTS_SIG_MAX];
    int rc = vb_events_sign(e->secret, e->secret_previous, (int64_t)time(NULL),
                            body, len, sig, sizeof(sig));
    const vb_events_header_t headers[] = {
        {"Content-Type", "application/json"},
        {"X-Voxbridge-Event", "call.ended"},
        {"X-Voxbridge-Delivery", x->name},
        {VB_SIG_HEADER, sig},
    };
    if (rc == 0)
        rc = e->tr.post(e->tr.ctx, &e->loop, e->url, headers, 4, body, len,
                        e->o.timeout_ms, x->sid, on_done, x, &x->handle);
    free(body);
    if (rc != 0) {
        retry_later(e, x, rc); /* like a refused connection */
        return;
    }
    x->inflight = true;
    e->inflight++;
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    schedule(t->data);
}

/* Starts what is due (oldest first, VB_EVENTS_INFLIGHT at most) and arms
 * the timer for the next one. */
static void schedule(vb_events_t *e)
{
    if (e->stopping)
        return;
    uint64_t now = uv_now(&e->loop), next = UINT64_MAX;
    for (uint32_t i = 0; i < e->nent && e->inflight < VB_EVENTS_INFLIGHT; i++) {
        entry_t *x = e->ent[i];
        if (x->inflight)
            continue;
        if (x->next_ms <= now) {
            attempt(e, x);
            /* attempt removes an entry whose file is gone: start over. */
            if (i >= e->nent || e->ent[i] != x)
                i = (uint32_t)-1;
        }
    }
    for (uint32_t i = 0; i < e->nent; i++)
        if (!e->ent[i]->inflight && e->ent[i]->next_ms < next)
            next = e->ent[i]->next_ms;
    uv_timer_stop(&e->timer);
    if (next != UINT64_MAX && e->inflight < VB_EVENTS_INFLIGHT)
        uv_timer_start(&e->timer, on_timer, next > now ? next - now : 1, 0);
}

static void on_wake(uv_async_t *a)
{
    vb_events_t *e = a->data;
    take_pending(e);
    vb_metrics_gauge_set(e->shard, e->m_spooled, e->nent);
    schedule(e);
}

static void close_noop(uv_handle_t *h)
{
    (void)h;
}

static void on_stop(uv_async_t *a)
{
    vb_events_t *e = a->data;
    take_pending(e);
    e->stopping = true;
    for (uint32_t i = 0; i < e->nent; i++) {
        entry_t *x = e->ent[i];
        if (x->inflight) {
            e->tr.cancel(e->tr.ctx, x->handle);
            x->inflight = false;
            e->inflight--;
        }
    }
    vb_metrics_gauge_set(e->shard, e->m_spooled, e->nent);
    if (e->nent > 0)
        vb_log_info(NULL, "events: undelivered reports stay in the spool",
                    "count=%u dir=%s", e->nent, e->dir);
    if (e->tr.close != NULL)
        e->tr.close(e->tr.ctx);
    uv_timer_stop(&e->timer);
    uv_close((uv_handle_t *)&e->timer, close_noop);
    uv_close((uv_handle_t *)&e->wake, close_noop);
    uv_close((uv_handle_t *)&e->stop, close_noop);
}

static void thread_main(void *arg)
{
    vb_events_t *e = arg;
    pthread_setname_np(pthread_self(), "events");
    vb_metrics_gauge_set(e->shard, e->m_spooled, e->nent);
    take_pending(e);
    schedule(e);
    uv_run(&e->loop, UV_RUN_DEFAULT);
}

static int add_metrics(vb_events_t *e)
{
    vb_metrics_t *m = e->o.metrics;
    int rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_events_delivered_total",
                            "Post-call reports acknowledged (2xx) by "
                            "--events-url.",
                            NULL, &e->m_delivered);
    if (rc == 0)
        rc = vb_metrics_add(m, VB_METRIC_GAUGE, "vb_events_spooled",
                            "Post-call reports in the spool, waiting for a "
                            "2xx.",
                            NULL, &e->m_spooled);
    for (int i = 0; rc == 0 && i < F_COUNT; i++)
        rc = vb_metrics_add(m, VB_METRIC_COUNTER, "vb_events_failed_total",
                            "Failed report deliveries and stores, by reason "
                            "(connect, timeout, http_5xx, http_retry, "
                            "http_4xx: retried; rejected: dead-lettered "
                            "after --events-max-rejections 4xx answers; "
                            "spool_full, spool_error: not stored).",
                            VB_LABELS("reason", fail_labels[i]),
                            &e->m_failed[i]);
    if (rc == 0 && (e->shard = vb_metrics_shard_create(m)) == NULL)
        rc = VB_ENOMEM;
    return rc;
}

static char *dup_s(const char *s)
{
    return strdup(s != NULL ? s : "");
}

int vb_events_create(const vb_events_opts_t *o, vb_events_t **out)
{
    *out = NULL;
    vb_ws_url_t u;
    if (o == NULL || o->url == NULL || vb_ws_url_parse_http(o->url, &u) != 0 ||
        o->spool_dir == NULL || *o->spool_dir == '\0' || o->secret == NULL ||
        *o->secret == '\0' || o->metrics == NULL)
        return VB_EINVAL;
    vb_events_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return VB_ENOMEM;
    e->o = *o;
    if (e->o.max_files == 0)
        e->o.max_files = DEFAULT_MAX_FILES;
    if (e->o.max_bytes == 0)
        e->o.max_bytes = DEFAULT_MAX_BYTES;
    if (e->o.timeout_ms == 0)
        e->o.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (e->o.backoff_min_ms == 0)
        e->o.backoff_min_ms = DEFAULT_BACKOFF_MIN;
    if (e->o.backoff_max_ms == 0)
        e->o.backoff_max_ms = DEFAULT_BACKOFF_MAX;
    if (e->o.max_rejections == 0)
        e->o.max_rejections = DEFAULT_REJECTIONS;
    e->url = dup_s(o->url);
    e->dir = dup_s(o->spool_dir);
    e->secret = dup_s(o->secret);
    e->secret_previous = dup_s(o->secret_previous);
    size_t dl = strlen(o->spool_dir) + 8;
    e->dead = malloc(dl);
    pthread_mutex_init(&e->mu, NULL);
    e->rnd = (unsigned)time(NULL) ^ (unsigned)getpid();
    int rc = 0;
    if (e->url == NULL || e->dir == NULL || e->secret == NULL ||
        e->secret_previous == NULL || e->dead == NULL) {
        rc = VB_ENOMEM;
        goto fail;
    }
    snprintf(e->dead, dl, "%s/dead", o->spool_dir);
    if (o->transport != NULL) {
        e->tr = *o->transport;
    } else {
        e->builtin = true;
        if (u.secure && (rc = vb_tls_config_client(
                             o->ca_file && *o->ca_file ? o->ca_file : NULL,
                             &e->http.tls)) != 0) {
            vb_log_error(NULL, "cannot load the CA bundle for --events-url",
                         "err=%s", vb_err_name(rc));
            rc = VB_ECONFIG;
            goto fail;
        }
        e->tr = (vb_events_transport_t){http_post, http_cancel, http_close,
                                        &e->http};
    }
    if (mkdir(e->dir, 0750) != 0 && errno != EEXIST) {
        vb_log_error(NULL, "cannot create the events spool", "dir=%s errno=%d",
                     e->dir, errno);
        rc = VB_EIO;
        goto fail;
    }
    if ((rc = scan(e)) != 0 || (rc = add_metrics(e)) != 0)
        goto fail;
    if (uv_loop_init(&e->loop) != 0) {
        rc = VB_ESYS;
        goto fail;
    }
    e->loop_ok = true;
    uv_async_init(&e->loop, &e->wake, on_wake);
    uv_async_init(&e->loop, &e->stop, on_stop);
    uv_timer_init(&e->loop, &e->timer);
    e->wake.data = e->stop.data = e->timer.data = e;
    *out = e;
    return 0;
fail:
    vb_events_destroy(e);
    return rc;
}

int vb_events_start(vb_events_t *e)
{
    return vb_thread_start(&e->thread, thread_main, e);
}

int vb_events_submit(vb_events_t *e, const char *sid, char *json, size_t len)
{
    pending_t *p = malloc(sizeof(*p));
    pthread_mutex_lock(&e->mu);
    int rc = e->closed                            ? VB_ECLOSED
             : p == NULL                          ? VB_ENOMEM
             : e->npending >= VB_EVENTS_QUEUE_MAX ? VB_ENOSPC
                                                  : 0;
    if (rc == 0) {
        snprintf(p->sid, sizeof(p->sid), "%s", sid ? sid : "unknown");
        p->json = json;
        p->len = len;
        p->next = NULL;
        if (e->tail != NULL)
            e->tail->next = p;
        else
            e->head = p;
        e->tail = p;
        e->npending++;
    }
    pthread_mutex_unlock(&e->mu);
    if (rc == 0) {
        uv_async_send(&e->wake);
        return 0;
    }
    free(p);
    free(json);
    if (rc == VB_ENOSPC)
        atomic_fetch_add(&e->refused, 1);
    vb_log_error(sid, "post-call report refused", "why=%s", vb_err_name(rc));
    return rc;
}

void vb_events_stop(vb_events_t *e)
{
    if (e == NULL)
        return;
    /* Later submits are refused (logged); all before are stored. */
    pthread_mutex_lock(&e->mu);
    e->closed = true;
    pthread_mutex_unlock(&e->mu);
    if (e->thread.started) {
        vb_thread_stop(&e->thread, &e->stop);
    } else if (e->loop_ok && !e->stopping) {
        /* Never started: run the stop on this thread. */
        uv_async_send(&e->stop);
        uv_run(&e->loop, UV_RUN_DEFAULT);
    }
}

void vb_events_destroy(vb_events_t *e)
{
    if (e == NULL)
        return;
    vb_events_stop(e);
    if (e->loop_ok) {
        uv_run(&e->loop, UV_RUN_DEFAULT);
        uv_loop_close(&e->loop);
    }
    for (uint32_t i = 0; i < e->nent; i++)
        free(e->ent[i]);
    free(e->ent);
    pending_t *p = e->head;
    while (p != NULL) {
        pending_t *n = p->next;
        free(p->json);
        free(p);
        p = n;
    }
    vb_tls_config_destroy(e->http.tls);
    pthread_mutex_destroy(&e->mu);
    free(e->url);
    free(e->dir);
    if (e->secret != NULL)
        memset(e->secret, 0, strlen(e->secret));
    free(e->secret);
    if (e->secret_previous != NULL)
        memset(e->secret_previous, 0, strlen(e->secret_previous));
    free(e->secret_previous);
    free(e->dead);
    free(e);
}

uint32_t vb_events_spooled(vb_events_t *e)
{
    return atomic_load(&e->nspooled);
}
