/* SPDX-License-Identifier: MIT */
/*
 * Structured, levelled log lines to stderr: logfmt by default, JSON lines
 * optionally. A line has time, level, msg, the call id when there is one, and
 * the fields of a printf-style format made of space-separated `key=%spec`
 * pairs, e.g.
 *
 *     vb_log_warn(sid, "signature mismatch", "route=%s code=%d", path, 403);
 *
 * The logger formats each value itself so it can quote and escape it for the
 * chosen format (strings are quoted when needed in logfmt and always in
 * JSON; numbers stay bare). The compiler checks the format as printf's.
 * Each line is written with one write(2), so lines from threads never mix.
 *
 * Hot paths use VB_LOG_RATELIMITED: at most one line per interval per call
 * site, with a count of the lines suppressed since the last one.
 */
#ifndef VB_CORE_LOG_H
#define VB_CORE_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

typedef enum vb_log_level {
    VB_LOG_DEBUG,
    VB_LOG_INFO,
    VB_LOG_WARN,
    VB_LOG_ERROR,
    VB_LOG_OFF,
} vb_log_level_t;

typedef enum vb_log_format {
    VB_LOG_LOGFMT,
    VB_LOG_JSON,
} vb_log_format_t;

/* Process-wide settings; any thread, usually once at start. */
void vb_log_set_level(vb_log_level_t level);
void vb_log_set_format(vb_log_format_t format);
vb_log_level_t vb_log_get_level(void);

/* Parses "debug|info|warn|error|off" / "logfmt|json". Returns 0 or
 * VB_EINVAL. */
int vb_log_level_parse(const char *s, vb_log_level_t *out);
int vb_log_format_parse(const char *s, vb_log_format_t *out);

/* Emits one line if `level` is enabled. `call` may be NULL. `fields` is NULL
 * or a format of space-separated key=%spec pairs (see above); a key must be
 * [A-Za-z0-9_.-]+. Lines longer than 4 KiB are cut and marked. Any thread. */
void vb_log(vb_log_level_t level, const char *call, const char *msg,
            const char *fields, ...) __attribute__((format(printf, 4, 5)));
void vb_logv(vb_log_level_t level, const char *call, const char *msg,
             const char *fields, va_list ap)
    __attribute__((format(printf, 4, 0)));

#define vb_log_debug(call, msg, ...) \
    vb_log(VB_LOG_DEBUG, call, msg, __VA_ARGS__)
#define vb_log_info(call, msg, ...) vb_log(VB_LOG_INFO, call, msg, __VA_ARGS__)
#define vb_log_warn(call, msg, ...) vb_log(VB_LOG_WARN, call, msg, __VA_ARGS__)
#define vb_log_error(call, msg, ...) \
    vb_log(VB_LOG_ERROR, call, msg, __VA_ARGS__)

/* Per-call-site rate limit state; zero-initialised static. */
typedef struct vb_log_limit {
    _Atomic uint64_t next_ns;
    _Atomic uint64_t suppressed;
} vb_log_limit_t;

/* Returns the number of lines suppressed before this one (>= 0) when a line
 * may be emitted now, or -1 when it must be dropped (and counts it). Lock
 * free; any thread. */
int64_t vb_log_limit_take(vb_log_limit_t *l, uint64_t interval_ns);

/* Logs at most once per `interval_ms` from this call site, adding
 * `suppressed=N` when lines were dropped. Cheap when dropped: no formatting. */
#define VB_LOG_RATELIMITED(level, interval_ms, call, msg, fields, ...) \
    do {                                                               \
        static vb_log_limit_t vb_rl_;                                  \
        if (vb_log_get_level() <= (level)) {                           \
            int64_t vb_sup_ = vb_log_limit_take(                       \
                &vb_rl_, (uint64_t)(interval_ms)*1000000ull);          \
            if (vb_sup_ >= 0)                                          \
                vb_log(level, call, msg, fields " suppressed=%lld",    \
                       __VA_ARGS__, (long long)vb_sup_);               \
        }                                                              \
    } while (0)

/* Sends the log to `path` (appended, created 0640), or reopens it there:
 * the path is opened anew and put in place of the previous file's
 * descriptor at once, so a rotated file is let go (logrotate's
 * create/move, then SIGHUP). Returns 0, VB_ECONFIG (missing directory,
 * permission; errno says which) or VB_EIO; on failure the log stays
 * where it was. Main thread (SIGHUP); other threads may log meanwhile. */
int vb_log_open_file(const char *path);

/* ---- for tests and tools ---- */
/* Used by tests, not by the server; it stays here because the output fd
 * is the module's own state. */

/* Redirects output to `fd` (default 2). Any thread, before logging. */
void vb_log_set_fd(int fd);

#endif
