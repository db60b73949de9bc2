/* SPDX-License-Identifier: MIT */
/* Metrics registry and Prometheus rendering; design notes in metrics.h. */
#include "core/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/err.h"

#define HIST_FLAG 0x80000000u

typedef struct family {
    char *name;
    char *help;
    vb_metric_type_t type;
    int nlabels;
    char *label_names[VB_METRICS_MAX_LABELS];
} family_t;

typedef struct series {
    family_t *fam;
    char *label_values[VB_METRICS_MAX_LABELS];
    vb_metric_t id;
} series_t;

struct vb_metrics_shard {
    _Atomic int64_t vals[VB_METRICS_MAX_SCALARS];
    vb_hist_t *hists[VB_METRICS_MAX_HISTS];
};

struct vb_metrics {
    pthread_mutex_t lock;
    family_t *fams[VB_METRICS_MAX_SCALARS + VB_METRICS_MAX_HISTS];
    int nfams;
    series_t series[VB_METRICS_MAX_SCALARS + VB_METRICS_MAX_HISTS];
    int nseries;
    uint32_t nscalars, nhists;
    vb_metrics_shard_t *shards[VB_METRICS_MAX_SHARDS];
    _Atomic int nshards;
};

vb_metrics_t *vb_metrics_create(void)
{
    vb_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void shard_free(vb_metrics_shard_t *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < VB_METRICS_MAX_HISTS; i++)
        free(s->hists[i]);
    free(s);
}

void vb_metrics_destroy(vb_metrics_t *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->nshards; i++)
        shard_free(m->shards[i]);
    for (int i = 0; i < m->nseries; i++)
        for (int j = 0; j < m->series[i].fam->nlabels; j++)
            free(m->series[i].label_values[j]);
    for (int i = 0; i < m->nfams; i++) {
        free(m->fams[i]->name);
        free(m->fams[i]->help);
        for (int j = 0; j < m->fams[i]->nlabels; j++)
            free(m->fams[i]->label_names[j]);
        free(m->fams[i]);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || (colon_ok && c == ':')))
            return false;
    }
    return true;
}

static family_t *find_family(vb_metrics_t *m, const char *name)
{
    for (int i = 0; i < m->nfams; i++)
        if (strcmp(m->fams[i]->name, name) == 0)
            return m->fams[i];
    return NULL;
}

static family_t *new_family(vb_metrics_t *m, vb_metric_type_t type,
                            const char *name, const char *help,
                            const char *const *labels, int nlabels)
{
    family_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->type = type;
    f->nlabels = nlabels;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    bool ok = f->name && f->help;
    for (int i = 0; i < nlabels; i++)
        ok = ok && (f->label_names[i] = strdup(labels[2 * i])) != NULL;
    if (!ok) {
        for (int i = 0; i < nlabels; i++)
            free(f->label_names[i]);
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    m->fams[m->nfams++] = f;
    return f;
}

static int add_locked(vb_metrics_t *m, vb_metric_type_t type, const char *name,
                      const char *help, const char *const *labels,
                      vb_metric_t *id)
{
    int nlabels = 0;
    if (!valid_name(name, true) || type > VB_METRIC_HISTOGRAM_LONG)
        return VB_EINVAL;
    bool hist = type == VB_METRIC_HISTOGRAM || type == VB_METRIC_HISTOGRAM_LONG;
    if (labels != NULL) {
        for (; labels[2 * nlabels] != NULL; nlabels++) {
            if (nlabels == VB_METRICS_MAX_LABELS ||
                labels[2 * nlabels + 1] == NULL ||
                !valid_name(labels[2 * nlabels], false) ||
                strncmp(labels[2 * nlabels], "__", 2) == 0 ||
                (hist && strcmp(labels[2 * nlabels], "le") == 0))
                return VB_EINVAL;
        }
    }
    family_t *f = find_family(m, name);
    if (f != NULL) {
        if (f->type != type || f->nlabels != nlabels)
            return VB_EINVAL;
        for (int i = 0; i < nlabels; i++)
            if (strcmp(f->label_names[i], labels[2 * i]) != 0)
                return VB_EINVAL;
        for (int i = 0; i < m->nseries; i++) {
            series_t *s = &m->series[i];
            if (s->fam != f)
                continue;
            int j = 0;
            while (j < nlabels &&
                   strcmp(s->label_values[j], labels[2 * j + 1]) == 0)
                j++;
            if (j == nlabels) {
                *id = s->id;
                return 0;
            }
        }
    }
    if (hist ? m->nhists == VB_METRICS_MAX_HISTS
             : m->nscalars == VB_METRICS_MAX_SCALARS)
        return VB_ENOSPC;
    /* Allocate everything that can fail before changing any state. */
    series_t s = {0};
    vb_hist_t *newh[VB_METRICS_MAX_SHARDS] = {0};
    int ok = 1;
    for (int i = 0; i < nlabels; i++)
        ok = ok && (s.label_values[i] = strdup(labels[2 * i + 1])) != NULL;
    if (hist)
        for (int i = 0; ok && i < m->nshards; i++)
            ok = (newh[i] = malloc(sizeof(vb_hist_t))) != NULL;
    if (ok && f == NULL)
        ok = (f = new_family(m, type, name, help, labels, nlabels)) != NULL;
    if (!ok) {
        for (int i = 0; i < nlabels; i++)
            free(s.label_values[i]);
        for (int i = 0; i < m->nshards; i++)
            free(newh[i]);
        return VB_ENOMEM;
    }
    s.fam = f;
    if (hist) {
        s.id = HIST_FLAG | m->nhists;
        for (int i = 0; i < m->nshards; i++) {
            vb_hist_init(newh[i]);
            m->shards[i]->hists[m->nhists] = newh[i];
        }
        m->nhists++;
    } else {
        s.id = m->nscalars++;
    }
    m->series[m->nseries++] = s;
    *id = s.id;
    return 0;
}

int vb_metrics_add(vb_metrics_t *m, vb_metric_type_t type, const char *name,
                   const char *help, const char *const *labels, vb_metric_t *id)
{
    pthread_mutex_lock(&m->lock);
    int rc = add_locked(m, type, name, help, labels, id);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

vb_metrics_shard_t *vb_metrics_shard_create(vb_metrics_t *m)
{
    vb_metrics_shard_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    pthread_mutex_lock(&m->lock);
    if (m->nshards == VB_METRICS_MAX_SHARDS)
        goto fail;
    for (uint32_t i = 0; i < m->nhists; i++) {
        s->hists[i] = malloc(sizeof(vb_hist_t));
        if (s->hists[i] == NULL)
            goto fail;
        vb_hist_init(s->hists[i]);
    }
    m->shards[m->nshards++] = s;
    pthread_mutex_unlock(&m->lock);
    return s;
fail:
    pthread_mutex_unlock(&m->lock);
    shard_free(s);
    return NULL;
}

void vb_metrics_counter_add(vb_metrics_shard_t *s, vb_metric_t id, uint64_t n)
{
    vb_metrics_gauge_add(s, id, (int64_t)n);
}

void vb_metrics_gauge_add(vb_metrics_shard_t *s, vb_metric_t id, int64_t n)
{
    if (id >= VB_METRICS_MAX_SCALARS)
        return;
    /* Single writer per shard: a relaxed load+store is enough. */
    _Atomic int64_t *v = &s->vals[id];
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void vb_metrics_gauge_set(vb_metrics_shard_t *s, vb_metric_t id, int64_t v)
{
    if (id >= VB_METRICS_MAX_SCALARS)
        return;
    atomic_store_explicit(&s->vals[id], v, memory_order_relaxed);
}

void vb_metrics_observe_ns(vb_metrics_shard_t *s, vb_metric_t id, uint64_t ns)
{
    if (!(id & HIST_FLAG) || (id & ~HIST_FLAG) >= VB_METRICS_MAX_HISTS)
        return;
    vb_hist_t *h = s->hists[id & ~HIST_FLAG];
    if (h != NULL)
        vb_hist_record(h, ns);
}

static int64_t scalar_sum_locked(vb_metrics_t *m, vb_metric_t id)
{
    int64_t sum = 0;
    for (int i = 0; i < m->nshards; i++)
        sum +=
            atomic_load_explicit(&m->shards[i]->vals[id], memory_order_relaxed);
    return sum;
}

static void hist_sum_locked(vb_metrics_t *m, vb_metric_t id, vb_hist_t *out)
{
    vb_hist_init(out);
    for (int i = 0; i < m->nshards; i++)
        vb_hist_merge(out, m->shards[i]->hists[id & ~HIST_FLAG]);
}

int64_t vb_metrics_value(vb_metrics_t *m, vb_metric_t id)
{
    if (id >= VB_METRICS_MAX_SCALARS)
        return 0;
    pthread_mutex_lock(&m->lock);
    int64_t v = id < m->nscalars ? scalar_sum_locked(m, id) : 0;
    pthread_mutex_unlock(&m->lock);
    return v;
}

int vb_metrics_hist(vb_metrics_t *m, vb_metric_t id, vb_hist_t *out)
{
    pthread_mutex_lock(&m->lock);
    int ok = (id & HIST_FLAG) && (id & ~HIST_FLAG) < m->nhists;
    if (ok)
        hist_sum_locked(m, id, out);
    pthread_mutex_unlock(&m->lock);
    return ok ? 0 : VB_EINVAL;
}

/* ---- rendering ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf_t;

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_put(buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void
buf_printf(buf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Escapes per exposition format: HELP escapes \ and newline; label values
 * also escape the double quote. */
static void buf_escaped(buf_t *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_put(b, "\\\\", 2);
        else if (*s == '\n')
            buf_put(b, "\\n", 2);
        else if (quote && *s == '"')
            buf_put(b, "\\\"", 2);
        else
            buf_put(b, s, 1);
    }
}

static void put_labels(buf_t *b, const series_t *s, const char *le)
{
    int n = s->fam->nlabels;
    if (n == 0 && le == NULL)
        return;
    buf_put(b, "{", 1);
    for (int i = 0; i < n; i++) {
        if (i)
            buf_put(b, ",", 1);
        buf_printf(b, "%s=\"", s->fam->label_names[i]);
        buf_escaped(b, s->label_values[i], true);
        buf_put(b, "\"", 1);
    }
    if (le != NULL)
        buf_printf(b, "%sle=\"%s\"", n ? "," : "", le);
    buf_put(b, "}", 1);
}

/* `scale`: 1, or 1000 for a long histogram (recorded in µs, see
 * metrics.h), whose bounds and sum are then 1000 times larger. */
static void render_hist(buf_t *b, vb_metrics_t *m, const series_t *s,
                        vb_hist_t *tmp, double scale)
{
    const char *name = s->fam->name;
    size_t nle;
    const double *le = vb_hist_le_seconds(&nle);
    uint64_t cum[VB_HIST_NLE + 1];
    hist_sum_locked(m, s->id, tmp);
    vb_hist_cumulative(tmp, cum);
    for (size_t i = 0; i <= nle; i++) {
        char lbuf[32];
        if (i < nle)
            snprintf(lbuf, sizeof(lbuf), "%g", le[i] * scale);
        else
            strcpy(lbuf, "+Inf");
        buf_printf(b, "%s_bucket", name);
        put_labels(b, s, lbuf);
        buf_printf(b, " %" PRIu64 "\n", cum[i]);
    }
    buf_printf(b, "%s_sum", name);
    put_labels(b, s, NULL);
    buf_printf(b, " %.9f\n", (double)vb_hist_sum_ns(tmp) * scale / 1e9);
    buf_printf(b, "%s_count", name);
    put_labels(b, s, NULL);
    buf_printf(b, " %" PRIu64 "\n", vb_hist_count(tmp));
}

int vb_metrics_render(vb_metrics_t *m, char **out, size_t *len)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram",
                                             "histogram"};
    buf_t b = {0};
    vb_hist_t *tmp = malloc(sizeof(*tmp));
    if (tmp == NULL)
        return VB_ENOMEM;
    buf_reserve(&b, 0);
    pthread_mutex_lock(&m->lock);
    for (int f = 0; f < m->nfams; f++) {
        family_t *fam = m->fams[f];
        buf_printf(&b, "# HELP %s ", fam->name);
        buf_escaped(&b, fam->help, false);
        buf_printf(&b, "\n# TYPE %s %s\n", fam->name, type_names[fam->type]);
        for (int i = 0; i < m->nseries; i++) {
            series_t *s = &m->series[i];
            if (s->fam != fam)
                continue;
            if (fam->type == VB_METRIC_HISTOGRAM ||
                fam->type == VB_METRIC_HISTOGRAM_LONG) {
                render_hist(&b, m, s, tmp,
                            fam->type == VB_METRIC_HISTOGRAM_LONG ? 1000 : 1);
                continue;
            }
            buf_put(&b, fam->name, strlen(fam->name));
            put_labels(&b, s, NULL);
            buf_printf(&b, " %" PRId64 "\n", scalar_sum_locked(m, s->id));
        }
    }
    pthread_mutex_unlock(&m->lock);
    free(tmp);
    if (b.oom) {
        free(b.p);
        return VB_ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- process series (read at scrape time) ---- */

/* utime, stime (clock ticks), starttime (ticks after boot), vsize (bytes)
 * and rss (pages) from /proc/self/stat. Returns 0 or -1. */
static int read_stat(unsigned long long *ticks, unsigned long long *start,
                     unsigned long long *vsize, long long *rss)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: skip past the last
     * ')'. Fields from there: state(3) ... utime(14) stime(15) ...
     * starttime(22) vsize(23) rss(24). */
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long ut, st;
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
               "%*d %*d %*d %*d %llu %llu %lld",
               &ut, &st, start, vsize, rss) != 5)
        return -1;
    *ticks = ut + st;
    return 0;
}

static long long boot_time(void)
{
    char line[256];
    long long bt = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "btime %lld", &bt) == 1)
            break;
    fclose(f);
    return bt;
}

static long long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

int vb_metrics_append_process(char **text, size_t *len)
{
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (f == NULL)
        return VB_ENOMEM;
    long hz = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long ticks, start, vsize;
    long long rss, bt = boot_time();
    if (hz > 0 && read_stat(&ticks, &start, &vsize, &rss) == 0) {
        fprintf(f,
                "# HELP process_cpu_seconds_total Total user and system CPU "
                "time spent in seconds.\n"
                "# TYPE process_cpu_seconds_total counter\n"
                "process_cpu_seconds_total %.2f\n",
                (double)ticks / (double)hz);
        fprintf(f,
                "# HELP process_resident_memory_bytes Resident memory size in "
                "bytes.\n"
                "# TYPE process_resident_memory_bytes gauge\n"
                "process_resident_memory_bytes %lld\n",
                rss * (long long)page);
        fprintf(f,
                "# HELP process_virtual_memory_bytes Virtual memory size in "
                "bytes.\n"
                "# TYPE process_virtual_memory_bytes gauge\n"
                "process_virtual_memory_bytes %llu\n",
                vsize);
        if (bt >= 0)
            fprintf(f,
                    "# HELP process_start_time_seconds Start time of the "
                    "process since unix epoch in seconds.\n"
                    "# TYPE process_start_time_seconds gauge\n"
                    "process_start_time_seconds %.2f\n",
                    (double)bt + (double)start / (double)hz);
    }
    long long fds = open_fds();
    if (fds >= 0)
        fprintf(f,
                "# HELP process_open_fds Number of open file descriptors.\n"
                "# TYPE process_open_fds gauge\n"
                "process_open_fds %lld\n",
                fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        fprintf(f,
                "# HELP process_max_fds Maximum number of open file "
                "descriptors.\n"
                "# TYPE process_max_fds gauge\n"
                "process_max_fds %llu\n",
                (unsigned long long)rl.rlim_cur);
    if (fclose(f) != 0 || buf == NULL) {
        free(buf);
        return VB_ENOMEM;
    }
    char *n = realloc(*text, *len + blen + 1);
    if (n == NULL) {
        free(buf);
        return VB_ENOMEM;
    }
    memcpy(n + *len, buf, blen + 1);
    *text = n;
    *len += blen;
    free(buf);
    return 0;
}
