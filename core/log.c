/* SPDX-License-Identifier: MIT */
/*
 * Structured log writer (see log.h). The field format is walked here: each
 * `key=%spec` is split off, its one argument pulled from the va_list by the
 * conversion's type, formatted with snprintf, then quoted for the output
 * format. Everything is built in a stack buffer and written at once.
 */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"

#define LINE_MAX_BYTES 4096

static _Atomic int cur_level = VB_LOG_INFO;
static _Atomic int cur_format = VB_LOG_LOGFMT;
static _Atomic int out_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

void vb_log_set_level(vb_log_level_t level)
{
    atomic_store(&cur_level, (int)level);
}

void vb_log_set_format(vb_log_format_t format)
{
    atomic_store(&cur_format, (int)format);
}

void vb_log_set_fd(int fd)
{
    atomic_store(&out_fd, fd);
}

/* The log file's descriptor: fixed once opened, so a reopen (dup2 onto
 * it) never leaves a writer holding a closed number. */
static int file_fd = -1;

int vb_log_open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return errno == ENOENT || errno == EACCES ? VB_ECONFIG : VB_EIO;
    if (file_fd < 0) {
        file_fd = fd;
    } else {
        /* Atomic: a concurrent write lands in the old file or the new. */
        int rc = dup2(fd, file_fd) < 0 ? VB_EIO : 0;
        close(fd);
        if (rc != 0)
            return rc;
    }
    atomic_store(&out_fd, file_fd);
    return 0;
}

vb_log_level_t vb_log_get_level(void)
{
    return (vb_log_level_t)atomic_load_explicit(&cur_level,
                                                memory_order_relaxed);
}

int vb_log_level_parse(const char *s, vb_log_level_t *out)
{
    for (int i = 0; i <= VB_LOG_OFF; i++)
        if (s != NULL && strcmp(s, level_names[i]) == 0) {
            *out = (vb_log_level_t)i;
            return 0;
        }
    return VB_EINVAL;
}

int vb_log_format_parse(const char *s, vb_log_format_t *out)
{
    if (s != NULL && strcmp(s, "logfmt") == 0)
        *out = VB_LOG_LOGFMT;
    else if (s != NULL && strcmp(s, "json") == 0)
        *out = VB_LOG_JSON;
    else
        return VB_EINVAL;
    return 0;
}

int64_t vb_log_limit_take(vb_log_limit_t *l, uint64_t interval_ns)
{
    uint64_t now = vb_clock_now_ns();
    uint64_t next = atomic_load_explicit(&l->next_ns, memory_order_relaxed);
    /* One winner per interval; the CAS keeps two threads from both logging.
     * Relaxed is enough: no other data is published through these. */
    if (now >= next && atomic_compare_exchange_strong_explicit(
                           &l->next_ns, &next, now + interval_ns,
                           memory_order_relaxed, memory_order_relaxed))
        return (int64_t)atomic_exchange_explicit(&l->suppressed, 0,
                                                 memory_order_relaxed);
    atomic_fetch_add_explicit(&l->suppressed, 1, memory_order_relaxed);
    return -1;
}

typedef struct line {
    char b[LINE_MAX_BYTES];
    size_t len;
    bool cut;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    /* Keep room for the cut marker and newline. */
    size_t room = LINE_MAX_BYTES - 32 - l->len;
    if (n > room) {
        n = room;
        l->cut = true;
    }
    memcpy(l->b + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

static bool needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s; s++)
        if (*s <= ' ' || *s == '"' || *s == '=' || *s == '\\' || *s == 0x7f)
            return true;
    return false;
}

/* Appends `s` as a JSON string body or a logfmt value (quoted if needed),
 * escaping quotes, backslashes and control bytes. */
static void put_value(line_t *l, const char *s, bool json, bool bare_ok)
{
    bool quote = json ? !bare_ok : needs_quotes(s);
    if (quote)
        put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p == '\n') {
            put(l, "\\n", 2);
        } else if (*p == '\t') {
            put(l, "\\t", 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    if (quote)
        put(l, "\"", 1);
}

static void put_field(line_t *l, const char *key, size_t klen, const char *val,
                      bool json, bool numeric)
{
    if (json) {
        put(l, ",\"", 2);
        put(l, key, klen);
        put(l, "\":", 2);
    } else {
        put(l, " ", 1);
        put(l, key, klen);
        put(l, "=", 1);
    }
    put_value(l, val, json, numeric);
}

/* Formats one conversion spec `spec` (e.g. "%5.2f", "%llu") with its
 * argument from `ap` into `out`. Returns true if the value is numeric. */
static bool format_one(const char *spec, size_t n, va_list *ap, char *out,
                       size_t outsz)
{
    /* A '*' width or precision takes an int argument before the value, as
     * printf does. It is written into the spec as digits, so the value and
     * every later argument stay where they belong. A negative width means
     * '-' and its magnitude; a negative precision means none. */
    char fmt[64];
    size_t fl = 0;
    int longs = 0;
    bool size_t_mod = false;
    for (size_t i = 0; i < n && fl + 16 < sizeof(fmt); i++) {
        char ch = spec[i];
        if (ch == '*') {
            int v = va_arg(*ap, int);
            bool precision = fl > 0 && fmt[fl - 1] == '.';
            if (precision && v < 0) {
                fl--; /* drop the '.' */
                continue;
            }
            if (!precision && v < 0) {
                fmt[fl++] = '-';
                v = v == INT_MIN ? INT_MAX : -v;
            }
            fl += (size_t)snprintf(fmt + fl, sizeof(fmt) - fl, "%d", v);
            continue;
        }
        if (i > 0 && i + 1 < n) {
            if (ch == 'l')
                longs++;
            else if (ch == 'z')
                size_t_mod = true;
        }
        fmt[fl++] = ch;
    }
    fmt[fl] = '\0';
    if (fl < 2) {
        snprintf(out, outsz, "?");
        return false;
    }
    char conv = fmt[fl - 1];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    switch (conv) {
    case 'd':
    case 'i':
        if (size_t_mod)
            snprintf(out, outsz, fmt, va_arg(*ap, ssize_t));
        else if (longs >= 2)
            snprintf(out, outsz, fmt, va_arg(*ap, long long));
        else if (longs == 1)
            snprintf(out, outsz, fmt, va_arg(*ap, long));
        else
            snprintf(out, outsz, fmt, va_arg(*ap, int));
        return true;
    case 'u':
    case 'x':
    case 'X':
    case 'o':
        if (size_t_mod)
            snprintf(out, outsz, fmt, va_arg(*ap, size_t));
        else if (longs >= 2)
            snprintf(out, outsz, fmt, va_arg(*ap, unsigned long long));
        else if (longs == 1)
            snprintf(out, outsz, fmt, va_arg(*ap, unsigned long));
        else
            snprintf(out, outsz, fmt, va_arg(*ap, unsigned));
        return conv == 'u';
    case 'f':
    case 'g':
    case 'e':
    case 'F':
    case 'G':
    case 'E':
        snprintf(out, outsz, fmt, va_arg(*ap, double));
        return true;
    case 'c':
        snprintf(out, outsz, fmt, va_arg(*ap, int));
        return false;
    case 'p':
        snprintf(out, outsz, fmt, va_arg(*ap, void *));
        return false;
    case 's': {
        const char *s = va_arg(*ap, const char *);
        snprintf(out, outsz, fmt, s ? s : "(null)");
        return false;
    }
    default:
        snprintf(out, outsz, "?");
        return false;
    }
#pragma GCC diagnostic pop
}

static const char *spec_end(const char *p)
{
    /* p points at '%'; find the conversion character. */
    for (p++; *p; p++)
        if (strchr("diouxXfFeEgGcsp%", *p))
            return p + 1;
    return p;
}

/* Walks "key=%spec key2=literal%spec ..." and emits each field. A value may
 * mix literal text and several specs; it ends at the next space. */
static void put_fields(line_t *l, const char *f, va_list *ap, bool json)
{
    while (*f) {
        while (*f == ' ')
            f++;
        const char *key = f;
        while (*f && *f != '=' && *f != ' ')
            f++;
        size_t klen = (size_t)(f - key);
        if (*f != '=') {
            if (klen)
                put_field(l, key, klen, "", json, false);
            continue;
        }
        f++;
        char val[1024];
        size_t vlen = 0;
        bool numeric = true, any_spec = false;
        while (*f && *f != ' ') {
            if (*f == '%' && f[1] == '%') {
                if (vlen + 1 < sizeof(val))
                    val[vlen++] = '%';
                numeric = false;
                f += 2;
            } else if (*f == '%') {
                const char *e = spec_end(f);
                char one[512];
                bool num = format_one(f, (size_t)(e - f), ap, one, sizeof(one));
                numeric = numeric && num;
                any_spec = true;
                size_t n = strlen(one);
                if (n >= sizeof(one) - 1)
                    l->cut = true;
                if (vlen + n >= sizeof(val)) {
                    n = sizeof(val) - 1 - vlen;
                    l->cut = true;
                }
                memcpy(val + vlen, one, n);
                vlen += n;
                f = e;
            } else {
                if (vlen + 1 < sizeof(val))
                    val[vlen++] = *f;
                numeric = false;
                f++;
            }
        }
        val[vlen] = '\0';
        put_field(l, key, klen, val, json, numeric && any_spec);
    }
}

void vb_logv(vb_log_level_t level, const char *call, const char *msg,
             const char *fields, va_list ap)
{
    if ((int)level < atomic_load_explicit(&cur_level, memory_order_relaxed) ||
        level >= VB_LOG_OFF)
        return;
    bool json =
        atomic_load_explicit(&cur_format, memory_order_relaxed) == VB_LOG_JSON;
    line_t l;
    l.len = 0;
    l.cut = false;

    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t tn = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tn, sizeof(tbuf) - tn, ".%03ldZ", ts.tv_nsec / 1000000);

    if (json) {
        puts_(&l, "{\"ts\":\"");
        puts_(&l, tbuf);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_names[level]);
        puts_(&l, "\"");
        put_field(&l, "msg", 3, msg ? msg : "", true, false);
    } else {
        puts_(&l, "ts=");
        puts_(&l, tbuf);
        puts_(&l, " level=");
        puts_(&l, level_names[level]);
        put_field(&l, "msg", 3, msg ? msg : "", false, false);
    }
    if (call != NULL && *call)
        put_field(&l, "call", 4, call, json, false);
    if (fields != NULL) {
        va_list cp;
        va_copy(cp, ap);
        put_fields(&l, fields, &cp, json);
        va_end(cp);
    }
    if (l.cut)
        put_field(&l, "truncated", 9, "true", json, true);
    if (json)
        put(&l, "}", 1);
    l.b[l.len++] = '\n';
    int fd = atomic_load_explicit(&out_fd, memory_order_relaxed);
    const char *p = l.b;
    size_t left = l.len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
}

void vb_log(vb_log_level_t level, const char *call, const char *msg,
            const char *fields, ...)
{
    va_list ap;
    va_start(ap, fields);
    vb_logv(level, call, msg, fields, ap);
    va_end(ap);
}
