/* SPDX-License-Identifier: MIT */
/*
 * `vb-sim load`: many simulated Twilio calls from one process on one libuv
 * loop, each a sim_call_t (sim_call.c) exactly as `vb-sim call` places it.
 * Used by `make bench` (bench/scripts/bench.sh); docs/benchmarks.md has the
 * method.
 *
 * DESIGN. Calls start one every ramp/N seconds. The caller audio is one
 * precomputed μ-law buffer shared (borrowed) by all calls: a 6 s cycle of
 * two 1.2 s speech-like bursts (40 % talk), the second starting while the
 * model's echo of the first still plays, so every cycle has one barge-in.
 * Each call presses '*' and its index as four DTMF digits 0.3 s after
 * `start` and again at 2, 5 and 10 s (keys pressed before the Gemini
 * session is ready are dropped by voxbridge);
 * voxbridge tells the model ("dtmf_text") and vb-fake-gemini --timing logs
 * the digits per connection, which is how the two processes' timestamps
 * are joined per call. The steady window opens one second after every
 * stream is open (or ramp + 10 s, whichever comes first) and lasts
 * --duration seconds; then every call hangs up. Resource use of the
 * server and the rig (this process and --rig-pid) is read from /proc at
 * the window's edges, with the server's context switches (every thread's
 * /proc/PID/task/TID/status) and the media frames both ways; with
 * --perf-stat, `perf stat` counts the server's system calls between the
 * same edges (started disabled once every stream is open, then enabled
 * and disabled through its control pipe, so its start-up is outside the
 * window). Timestamps (CLOCK_MONOTONIC) are stored in
 * preallocated per-call arrays and written to --timing once all calls are
 * over, so nothing is allocated, formatted or written per frame.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/sim/sim.h"
#include "core/clock.h"
#include "core/log.h"

#define CYCLE_S   6.0
#define BURST_S   1.2
#define BURST_A_S 0.3
#define BURST_B_S 2.5
#define DTMF_REPS 4
#define DTMF_N    (DTMF_REPS * 5)

extern char **environ;

typedef struct proc_sample {
    double cpu_s; /* utime + stime */
    long rss_kb;  /* VmRSS */
    long fds;     /* entries of /proc/PID/fd */
    long threads; /* entries of /proc/PID/task */
    /* voluntary + nonvoluntary_ctxt_switches summed over the threads */
    unsigned long long ctxsw_vol, ctxsw_invol;
} proc_sample_t;

/* `perf stat` counting one process's system calls: spawned with its
 * events disabled, enabled and disabled through its control pipe. */
typedef struct perf_stat {
    pid_t pid; /* 0: not running */
    int ctl;   /* write end of its control pipe */
    int ack;   /* read end of its acknowledgements */
    const char *out;
} perf_stat_t;

/* Media frames both ways, summed over the calls at one instant. */
typedef struct frame_count {
    uint64_t sent, received;
} frame_count_t;

typedef struct load {
    uv_loop_t *loop;
    sim_api_t *api;
    sim_call_opts_t base;
    int ncalls, started, done, opened_all;
    double ramp_s, duration_s;
    sim_call_t **calls;
    sim_timing_t *tm;
    sim_dtmf_t *dtmf; /* [i * DTMF_N + d] */
    uv_timer_t start_timer, watch_timer, end_timer;
    uint64_t t0, w_start, w_end;
    bool window_open, window_closed;
    int server_pid, rig_pid;
    const char *fake_timing, *label;
    proc_sample_t srv0, srv1, srv_idle, srv_after, rig0, rig1, self0, self1;
    frame_count_t fr0, fr1;
    perf_stat_t perf;
} load_t;

/* ---- /proc ---- */

static void proc_read(int pid, proc_sample_t *s)
{
    memset(s, 0, sizeof *s);
    char path[64], buf[2048];
    if (pid <= 0)
        return;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* Fields after the ")" of comm: state is field 3; utime 14,
         * stime 15. */
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (p != NULL &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                   &ut, &st) == 2)
            s->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f != NULL) {
        while (fgets(buf, sizeof buf, f) != NULL)
            if (strncmp(buf, "VmRSS:", 6) == 0)
                s->rss_kb = strtol(buf + 6, NULL, 10);
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                s->fds++;
        closedir(d);
    }
    /* Context switches: every thread's own counts (the process's status
     * file shows only the main thread's). */
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        s->threads++;
        char tpath[300];
        snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/status", pid,
                 e->d_name);
        f = fopen(tpath, "r");
        if (f == NULL)
            continue; /* the thread has just exited */
        while (fgets(buf, sizeof buf, f) != NULL) {
            if (strncmp(buf, "voluntary_ctxt_switches:", 24) == 0)
                s->ctxsw_vol += strtoull(buf + 24, NULL, 10);
            else if (strncmp(buf, "nonvoluntary_ctxt_switches:", 27) == 0)
                s->ctxsw_invol += strtoull(buf + 27, NULL, 10);
        }
        fclose(f);
    }
    closedir(d);
}

/* ---- perf stat: system calls of the server ---- */

/* Starts `perf stat -e raw_syscalls:sys_enter -p PID` with its events
 * disabled; its output goes to p->out. Without perf (or when it cannot
 * attach) the count is reported as null, never as a failure. */
static void perf_start(perf_stat_t *p, int pid)
{
    int ctl[2], ack[2];
    if (p->out == NULL || pid <= 0 || p->pid > 0)
        return;
    if (pipe(ctl) != 0)
        return;
    if (pipe(ack) != 0) {
        close(ctl[0]);
        close(ctl[1]);
        return;
    }
    char pid_s[16], control[48];
    snprintf(pid_s, sizeof pid_s, "%d", pid);
    snprintf(control, sizeof control, "fd:%d,%d", ctl[0], ack[1]);
    const char *argv[] = {"perf",      "stat",  "-e", "raw_syscalls:sys_enter",
                          "-x",        ",",     "-D", "-1",
                          "--control", control, "-o", p->out,
                          "-p",        pid_s,   NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addclose(&fa, ctl[1]);
    posix_spawn_file_actions_addclose(&fa, ack[0]);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    /* Its errors (no permission, no such tracepoint) go to our stderr. */
    pid_t child;
    int rc = posix_spawnp(&child, "perf", &fa, NULL,
                          (char *const *)(uintptr_t)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(ctl[0]);
    close(ack[1]);
    if (rc != 0) {
        fprintf(stderr, "vb-sim load: no perf (%s): syscalls n/a\n",
                strerror(rc));
        close(ctl[1]);
        close(ack[0]);
        return;
    }
    /* A perf that died must not kill us with SIGPIPE (ignored in main),
     * nor block us: its acknowledgements are not waited for. */
    fcntl(ctl[1], F_SETFL, O_NONBLOCK);
    p->pid = child;
    p->ctl = ctl[1];
    p->ack = ack[0];
}

static void perf_command(perf_stat_t *p, const char *cmd)
{
    if (p->pid > 0 && write(p->ctl, cmd, strlen(cmd)) < 0)
        fprintf(stderr, "vb-sim load: perf control: %s\n", strerror(errno));
}

/* Stops perf and returns the count, or -1 when there is none. */
static long long perf_finish(perf_stat_t *p)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGINT);
    int st;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    close(p->ctl);
    close(p->ack);
    p->pid = 0;
    FILE *f = fopen(p->out, "r");
    if (f == NULL)
        return -1;
    char line[256];
    long long n = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        char *e;
        long long v = strtoll(line, &e, 10);
        /* "<not counted>" or "<not supported>" leave n at -1. */
        if (e != line && *e == ',' && strstr(e, ",raw_syscalls:sys_enter,"))
            n = v;
    }
    fclose(f);
    return n;
}

static frame_count_t count_frames(const load_t *l)
{
    frame_count_t c = {0, 0};
    for (int i = 0; i < l->started; i++) {
        if (l->calls[i] == NULL)
            continue;
        const sim_call_result_t *r = sim_call_result(l->calls[i]);
        c.sent += r->frames_sent;
        c.received += r->media_received;
    }
    return c;
}

/* ---- the talk pattern ---- */

/* A speech-like burst: three partials with a slow amplitude wobble, a
 * sharp onset (full level from its first sample) and a 5 ms release. */
static uint8_t *make_audio(double seconds, size_t *len)
{
    size_t n = (size_t)(seconds * 8000.0);
    uint8_t *m = malloc(n + 1);
    if (m == NULL)
        return NULL;
    size_t cyc = (size_t)(CYCLE_S * 8000.0), bl = (size_t)(BURST_S * 8000.0);
    size_t a = (size_t)(BURST_A_S * 8000.0), b = (size_t)(BURST_B_S * 8000.0);
    for (size_t i = 0; i < n; i++) {
        size_t p = i % cyc;
        double v = 0;
        size_t off = 0;
        bool on = false;
        if (p >= a && p < a + bl) {
            on = true;
            off = p - a;
        } else if (p >= b && p < b + bl) {
            on = true;
            off = p - b;
        }
        if (on) {
            double t = (double)i / 8000.0;
            double env = 0.75 + 0.25 * sin(2 * M_PI * 3.0 * t);
            if (bl - off < 40)
                env *= (double)(bl - off) / 40.0;
            v = env * (3500.0 * sin(2 * M_PI * 310.0 * t) +
                       2500.0 * sin(2 * M_PI * 730.0 * t) +
                       1500.0 * sin(2 * M_PI * 1270.0 * t));
        }
        m[i] = sim_mulaw_encode((int16_t)v);
    }
    *len = n;
    return m;
}

/* ---- calls ---- */

static void call_done(sim_call_t *c, void *ud)
{
    (void)c;
    load_t *l = ud;
    l->done++;
}

static void start_one(load_t *l)
{
    int i = l->started++;
    sim_call_opts_t o = l->base;
    /* The call index as '*' and four DTMF digits, 40 ms apart, pressed
     * again later: voxbridge ignores keys until the Gemini session is
     * ready, which under load can take a while. */
    sim_dtmf_t *d = &l->dtmf[i * DTMF_N];
    static const double reps[DTMF_REPS] = {0.3, 2.0, 5.0, 10.0};
    for (int r = 0; r < DTMF_REPS; r++) {
        sim_dtmf_t *p = d + r * 5;
        int v = i;
        p[0].digit = '*';
        p[0].at_s = reps[r];
        for (int k = 4; k >= 1; k--) {
            p[k].digit = (char)('0' + v % 10);
            p[k].at_s = reps[r] + 0.04 * k;
            v /= 10;
        }
    }
    o.dtmf = d;
    o.ndtmf = DTMF_N;
    o.timing = &l->tm[i];
    if (sim_call_start(l->loop, l->api, &o, call_done, l, &l->calls[i]) != 0) {
        fprintf(stderr, "vb-sim load: cannot start call %d\n", i);
        l->calls[i] = NULL;
        l->done++;
    }
}

static void start_cb(uv_timer_t *t)
{
    load_t *l = t->data;
    uint64_t now = vb_clock_now_ns();
    double per = l->ncalls > 1 ? l->ramp_s / (double)l->ncalls : 0;
    while (l->started < l->ncalls &&
           (double)(now - l->t0) / 1e9 >= per * (double)l->started)
        start_one(l);
    if (l->started == l->ncalls)
        uv_timer_stop(t);
}

static void end_cb(uv_timer_t *t)
{
    load_t *l = t->data;
    perf_command(&l->perf, "disable\n");
    l->w_end = vb_clock_now_ns();
    l->fr1 = count_frames(l);
    proc_read(l->server_pid, &l->srv1);
    proc_read(l->rig_pid, &l->rig1);
    proc_read(getpid(), &l->self1);
    l->window_closed = true;
    fprintf(stderr, "vb-sim load: steady window over; hanging up\n");
    for (int i = 0; i < l->started; i++)
        if (l->calls[i] != NULL)
            sim_call_hangup(l->calls[i]);
}

static void open_window(load_t *l)
{
    l->window_open = true;
    perf_start(&l->perf, l->server_pid); /* unless watch_cb did */
    proc_read(l->rig_pid, &l->rig0);
    proc_read(getpid(), &l->self0);
    proc_read(l->server_pid, &l->srv0);
    l->fr0 = count_frames(l);
    l->w_start = vb_clock_now_ns();
    perf_command(&l->perf, "enable\n");
    fprintf(stderr, "vb-sim load: steady window: %d calls, %.0f s\n", l->ncalls,
            l->duration_s);
    uv_timer_start(&l->end_timer, end_cb, (uint64_t)(l->duration_s * 1000), 0);
}

static void watch_cb(uv_timer_t *t)
{
    load_t *l = t->data;
    if (l->window_open) {
        uv_timer_stop(t);
        return;
    }
    int open = 0;
    for (int i = 0; i < l->started; i++)
        if (l->calls[i] != NULL && sim_call_result(l->calls[i])->stream_opened)
            open++;
    double since = (double)(vb_clock_now_ns() - l->t0) / 1e9;
    if (open == l->ncalls && l->opened_all == 0) {
        l->opened_all = 1;
        /* Attached now, counting from the window's start: every thread
         * of the server exists by now and perf's start-up is over. */
        perf_start(&l->perf, l->server_pid);
    }
    if (l->opened_all > 0 && ++l->opened_all > 10) /* 1 s after */
        open_window(l);
    else if (since > l->ramp_s + 10.0 && l->started == l->ncalls)
        open_window(l);
}

/* ---- matching the fake's timestamps (after the run) ---- */

typedef struct vec {
    double *v;
    size_t n, cap;
} vec_t;

static void vec_push(vec_t *x, double d)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 1024;
        double *p = realloc(x->v, cap * sizeof *p);
        if (p == NULL)
            return;
        x->v = p;
        x->cap = cap;
    }
    x->v[x->n++] = d;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of a sorted vector; < 0 when empty. */
static double pct(const vec_t *x, double q)
{
    if (x->n == 0)
        return -1;
    size_t r = (size_t)ceil(q * (double)x->n);
    if (r < 1)
        r = 1;
    return x->v[r - 1];
}

typedef struct fev {
    int call;
    uint64_t t;
} fev_t;

static int cmp_fev(const void *a, const void *b)
{
    const fev_t *x = a, *y = b;
    if (x->call != y->call)
        return x->call < y->call ? -1 : 1;
    return x->t < y->t ? -1 : x->t > y->t;
}

typedef struct match {
    vec_t in, out, barge;
    uint64_t *recv;    /* [call] frames the fake received */
    uint64_t unmapped; /* fake connections with no call index */
} match_t;

/* Pairs each onset or clear (sim side, sorted) with the latest unused
 * fake event of the same call at most 2 s before it (responses and
 * interruptions of one call are at least 2.2 s apart). */
static void pair(const load_t *l, const fev_t *ev, size_t nev, int which,
                 vec_t *out)
{
    size_t j = 0;
    for (int c = 0; c < l->started; c++) {
        while (j < nev && ev[j].call < c)
            j++;
        size_t b = j;
        while (j < nev && ev[j].call == c)
            j++;
        size_t e = j, k = b, used = (size_t)-1;
        const sim_timing_t *tm = &l->tm[c];
        const uint64_t *t = which ? tm->clear : tm->onset;
        size_t n = which ? tm->nclear : tm->nonset;
        size_t cap = which ? tm->cap_clear : tm->cap_onset;
        if (n > cap)
            n = cap;
        for (size_t i = 0; i < n; i++) {
            while (k + 1 < e && ev[k + 1].t <= t[i])
                k++;
            if (k >= e || ev[k].t > t[i] || k == used)
                continue;
            if (t[i] - ev[k].t > 2000000000ull)
                continue;
            used = k;
            if (t[i] < l->w_start || t[i] > l->w_end)
                continue;
            vec_push(out, (double)(t[i] - ev[k].t) / 1e6);
        }
    }
}

static int match_fake(const load_t *l, const char *path, match_t *m)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int maxconn = 0;
    char line[128];
    /* Pass 1: which call each connection is (its four key presses). */
    int *call_of = NULL, *nd = NULL;
    while (fgets(line, sizeof line, f) != NULL) {
        int conn;
        char d;
        if (line[0] != 'D' || sscanf(line + 2, "%d %c", &conn, &d) != 2 ||
            conn < 0 || conn > 1000000)
            continue;
        if (conn >= maxconn) {
            int n = conn + 1024;
            int *a = realloc(call_of, (size_t)n * sizeof *a);
            int *b = a ? realloc(nd, (size_t)n * sizeof *b) : NULL;
            if (a == NULL || b == NULL) {
                free(a ? a : call_of);
                free(b ? b : nd);
                fclose(f);
                return -1;
            }
            for (int i = maxconn; i < n; i++) {
                a[i] = 0;
                b[i] = -1; /* no '*' seen yet */
            }
            call_of = a;
            nd = b;
            maxconn = n;
        }
        /* nd: digits after the last '*'; 5 once the index is known. */
        if (nd[conn] == 5)
            continue;
        if (d == '*') {
            call_of[conn] = 0;
            nd[conn] = 0;
        } else if (d >= '0' && d <= '9' && nd[conn] >= 0) {
            call_of[conn] = call_of[conn] * 10 + (d - '0');
            if (++nd[conn] == 4)
                nd[conn] = 5;
        }
    }
    /* Pass 2: frames, responses, interruptions. */
    rewind(f);
    fev_t *rv = NULL, *xv = NULL;
    size_t nr = 0, nx = 0, capr = 0, capx = 0;
    memset(m->recv, 0, (size_t)l->ncalls * sizeof *m->recv);
    m->unmapped = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        int conn;
        unsigned long long a, b;
        if (sscanf(line + 2, "%d", &conn) != 1 || conn < 0 || conn >= maxconn ||
            nd[conn] != 5 || call_of[conn] >= l->started) {
            if (line[0] == 'I' && conn >= 0)
                m->unmapped++;
            continue;
        }
        int c = call_of[conn];
        if (line[0] == 'I' && sscanf(line + 2, "%*d %llu %llu", &a, &b) == 2) {
            m->recv[c]++;
            const sim_timing_t *tm = &l->tm[c];
            if (a < tm->nsent && a < tm->cap_sent) {
                uint64_t s = tm->sent[a];
                if (s >= l->w_start && s <= l->w_end && b >= s)
                    vec_push(&m->in, (double)(b - s) / 1e6);
            }
        } else if ((line[0] == 'R' || line[0] == 'X') &&
                   sscanf(line + 2, "%*d %llu", &a) == 1) {
            fev_t **v = line[0] == 'R' ? &rv : &xv;
            size_t *n = line[0] == 'R' ? &nr : &nx;
            size_t *cap = line[0] == 'R' ? &capr : &capx;
            if (*n == *cap) {
                size_t nc = *cap ? *cap * 2 : 1024;
                fev_t *p = realloc(*v, nc * sizeof *p);
                if (p == NULL)
                    continue;
                *v = p;
                *cap = nc;
            }
            (*v)[(*n)++] = (fev_t){c, a};
        }
    }
    fclose(f);
    free(call_of);
    free(nd);
    if (nr > 0)
        qsort(rv, nr, sizeof *rv, cmp_fev);
    if (nx > 0)
        qsort(xv, nx, sizeof *xv, cmp_fev);
    pair(l, rv, nr, 0, &m->out);
    pair(l, xv, nx, 1, &m->barge);
    free(rv);
    free(xv);
    qsort(m->in.v, m->in.n, sizeof(double), cmp_d);
    qsort(m->out.v, m->out.n, sizeof(double), cmp_d);
    qsort(m->barge.v, m->barge.n, sizeof(double), cmp_d);
    return 0;
}

static void print_ms(const char *name, double v)
{
    if (v < 0)
        printf(",\"%s\":null", name);
    else
        printf(",\"%s\":%.3f", name, v);
}

/* ---- output ---- */

static void write_timing(load_t *l, FILE *f)
{
    fprintf(f, "W %llu %llu\n", (unsigned long long)l->w_start,
            (unsigned long long)l->w_end);
    for (int i = 0; i < l->started; i++) {
        const sim_timing_t *tm = &l->tm[i];
        size_t n = tm->nsent < tm->cap_sent ? tm->nsent : tm->cap_sent;
        for (size_t k = 0; k < n; k++)
            fprintf(f, "S %d %zu %llu\n", i, k,
                    (unsigned long long)tm->sent[k]);
        n = tm->nonset < tm->cap_onset ? tm->nonset : tm->cap_onset;
        for (size_t k = 0; k < n; k++)
            fprintf(f, "O %d %llu\n", i, (unsigned long long)tm->onset[k]);
        n = tm->nclear < tm->cap_clear ? tm->nclear : tm->cap_clear;
        for (size_t k = 0; k < n; k++)
            fprintf(f, "C %d %llu\n", i, (unsigned long long)tm->clear[k]);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vb-sim load --webhook URL --calls N [options]\n"
               "\n"
               "N concurrent calls from one process (one event loop), each\n"
               "talking 40 %% of the time with one barge-in per 6 s cycle.\n"
               "\n"
               "  --webhook URL     voice webhook (http:// or https://)\n"
               "  --calls N         concurrent calls (1..9999)\n"
               "  --duration S      steady window length (default 30)\n"
               "  --ramp R          start the calls over R seconds (default "
               "N/50)\n"
               "  --auth-token T    Twilio auth token (default "
               "$TWILIO_AUTH_TOKEN)\n"
               "  --timing FILE     write timestamps (W/S/O/C lines, see\n"
               "                    docs/benchmarks.md)\n"
               "  --server-pid PID  voxbridge: CPU, RSS, fds from /proc\n"
               "  --fake-pid PID    vb-fake-gemini (rig CPU; also --rig-pid)\n"
               "  --perf-stat FILE  count the server's system calls in the\n"
               "                    window with perf stat (output to FILE;\n"
               "                    null without perf)\n"
               "  --fake-timing F   vb-fake-gemini's --timing file: match it\n"
               "                    and print latencies (JSON row)\n"
               "  --label L         label of the JSON row\n"
               "  --api-listen H:P  REST API address (default 127.0.0.1:0)\n"
               "  --ca-file F       CA bundle for https/wss\n"
               "\n"
               "Prints one JSON line of results; exit status 0 when every\n"
               "call completed without a protocol error and, with\n"
               "--fake-timing, the fake received every frame sent.\n");
}

int sim_load_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"webhook", required_argument, NULL, 'w'},
        {"calls", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"ramp", required_argument, NULL, 'r'},
        {"auth-token", required_argument, NULL, 't'},
        {"timing", required_argument, NULL, 'T'},
        {"server-pid", required_argument, NULL, 's'},
        {"rig-pid", required_argument, NULL, 'g'},
        {"fake-pid", required_argument, NULL, 'g'},
        {"fake-timing", required_argument, NULL, 'F'},
        {"label", required_argument, NULL, 'L'},
        {"perf-stat", required_argument, NULL, 'P'},
        {"api-listen", required_argument, NULL, 'l'},
        {"ca-file", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    load_t l = {.ncalls = 0, .ramp_s = -1, .duration_s = 30};
    const char *timing = NULL, *listen = "127.0.0.1:0";
    l.base.auth_token = getenv("TWILIO_AUTH_TOKEN");
    l.base.pause_scale = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *e = NULL;
        switch (ch) {
        case 'w':
            l.base.webhook = optarg;
            break;
        case 'n':
            l.ncalls = (int)strtol(optarg, &e, 10);
            if (*e != '\0' || l.ncalls < 1 || l.ncalls > 9999) {
                fprintf(stderr, "vb-sim load: bad --calls\n");
                return 2;
            }
            break;
        case 'd':
        case 'r': {
            double v = strtod(optarg, &e);
            if (*e != '\0' || v < 0 || v > 3600) {
                fprintf(stderr, "vb-sim load: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'd')
                l.duration_s = v;
            else
                l.ramp_s = v;
            break;
        }
        case 't':
            l.base.auth_token = optarg;
            break;
        case 'T':
            timing = optarg;
            break;
        case 's':
            l.server_pid = atoi(optarg);
            break;
        case 'g':
            l.rig_pid = atoi(optarg);
            break;
        case 'F':
            l.fake_timing = optarg;
            break;
        case 'L':
            l.label = optarg;
            break;
        case 'P':
            l.perf.out = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'c':
            l.base.ca_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (l.base.webhook == NULL || l.ncalls < 1 || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (l.ramp_s < 0)
        l.ramp_s = (double)l.ncalls / 50.0;
    /* Audio and arrays for the longest possible call. */
    double call_s = l.ramp_s + 12.0 + l.duration_s + 5.0;
    size_t alen = 0;
    uint8_t *audio = make_audio(call_s, &alen);
    size_t cap_sent = (size_t)(call_s * 50.0) + 64;
    size_t cap_ev = (size_t)(call_s / CYCLE_S * 2.0) + 32;
    l.calls = calloc((size_t)l.ncalls, sizeof *l.calls);
    l.tm = calloc((size_t)l.ncalls, sizeof *l.tm);
    l.dtmf = calloc((size_t)l.ncalls * DTMF_N, sizeof *l.dtmf);
    uint64_t *store =
        calloc((size_t)l.ncalls * (cap_sent + 2 * cap_ev), sizeof *store);
    if (audio == NULL || l.calls == NULL || l.tm == NULL || l.dtmf == NULL ||
        store == NULL) {
        fprintf(stderr, "vb-sim load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < l.ncalls; i++) {
        uint64_t *p = store + (size_t)i * (cap_sent + 2 * cap_ev);
        l.tm[i].sent = p;
        l.tm[i].cap_sent = cap_sent;
        l.tm[i].onset = p + cap_sent;
        l.tm[i].cap_onset = cap_ev;
        l.tm[i].clear = p + cap_sent + cap_ev;
        l.tm[i].cap_clear = cap_ev;
    }
    l.base.mulaw = audio;
    l.base.mulaw_len = alen;
    l.base.hangup_after_s = call_s + 30.0; /* the window's end hangs up */
    l.base.timeout_s = call_s + 60.0;

    char host[256];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon == NULL) {
        fprintf(stderr, "vb-sim load: --api-listen wants HOST:PORT\n");
        return 2;
    }
    *colon = '\0';
    signal(SIGPIPE, SIG_IGN);
    vb_log_set_level(VB_LOG_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    l.loop = &loop;
    if (sim_api_start(&loop, host, atoi(colon + 1), l.base.auth_token,
                      &l.api) != 0) {
        fprintf(stderr, "vb-sim load: cannot listen on %s\n", listen);
        return 2;
    }
    proc_read(l.server_pid, &l.srv_idle);
    uv_timer_init(&loop, &l.start_timer);
    uv_timer_init(&loop, &l.watch_timer);
    uv_timer_init(&loop, &l.end_timer);
    l.start_timer.data = l.watch_timer.data = l.end_timer.data = &l;
    l.t0 = vb_clock_now_ns();
    uv_timer_start(&l.start_timer, start_cb, 0, 1);
    uv_timer_start(&l.watch_timer, watch_cb, 100, 100);
    while (l.done < l.ncalls)
        uv_run(&loop, UV_RUN_ONCE);
    if (!l.window_closed) {
        /* Every call ended before the window did (they failed). */
        if (!l.window_open)
            open_window(&l);
        uv_timer_stop(&l.end_timer);
        end_cb(&l.end_timer);
    }
    uv_timer_stop(&l.start_timer);
    uv_timer_stop(&l.watch_timer);
    long long syscalls = perf_finish(&l.perf);

    /* Summary. */
    int ok = 0;
    uint64_t frames = 0, perr = 0, late = 0, clears = 0, media = 0;
    for (int i = 0; i < l.started; i++) {
        if (l.calls[i] == NULL)
            continue;
        const sim_call_result_t *r = sim_call_result(l.calls[i]);
        ok += r->ok;
        frames += r->frames_sent;
        perr += r->protocol_errors;
        late += r->late_ticks;
        clears += r->clears_received;
        media += r->media_received;
        if (!r->ok)
            sim_call_print_summary(l.calls[i], stderr);
    }
    if (timing != NULL) {
        FILE *f = fopen(timing, "w");
        if (f == NULL) {
            perror(timing);
        } else {
            write_timing(&l, f);
            fclose(f);
        }
    }
    /* Give the server a moment to release the calls, then count fds. */
    uv_sleep(1500);
    proc_read(l.server_pid, &l.srv_after);
    double win = (double)(l.w_end - l.w_start) / 1e9;
    double srv_cpu = l.srv1.cpu_s - l.srv0.cpu_s;
    double sim_pct =
        win > 0 ? (l.self1.cpu_s - l.self0.cpu_s) * 100.0 / win : 0.0;
    double fake_pct =
        win > 0 ? (l.rig1.cpu_s - l.rig0.cpu_s) * 100.0 / win : 0.0;
    /* Media ticks more than 5 ms late: the rig (or the machine) cannot
     * keep the 20 ms cadence, and its timestamps include that wait. */
    double late_pct = frames > 0 ? (double)late * 100.0 / (double)frames : 0;
    match_t m = {0};
    uint64_t lost = 0;
    m.recv = calloc((size_t)l.ncalls, sizeof *m.recv);
    bool matched = false;
    if (l.fake_timing != NULL && m.recv != NULL) {
        /* The fake flushes its file as connections close: wait for it. */
        for (int tries = 0; tries < 8; tries++) {
            free(m.in.v);
            free(m.out.v);
            free(m.barge.v);
            m.in = m.out = m.barge = (vec_t){0};
            if (match_fake(&l, l.fake_timing, &m) != 0)
                break;
            matched = true;
            lost = 0;
            for (int i = 0; i < l.started; i++) {
                uint64_t fs =
                    l.calls[i] ? sim_call_result(l.calls[i])->frames_sent : 0;
                lost += fs > m.recv[i] ? fs - m.recv[i] : 0;
            }
            if (lost == 0)
                break;
            uv_sleep(1000);
        }
        if (!matched)
            fprintf(stderr, "vb-sim load: cannot read %s\n", l.fake_timing);
    }
    /* Wake-ups: every context switch of every server thread (a thread
     * that blocks and is woken counts one voluntary switch; preemption
     * counts nonvoluntary), per 20 ms media frame at the Twilio side,
     * caller -> server and server -> caller together. */
    unsigned long long csw_vol = l.srv1.ctxsw_vol - l.srv0.ctxsw_vol;
    unsigned long long csw_invol = l.srv1.ctxsw_invol - l.srv0.ctxsw_invol;
    unsigned long long csw = csw_vol + csw_invol;
    uint64_t win_in = l.fr1.sent - l.fr0.sent;
    uint64_t win_out = l.fr1.received - l.fr0.received;
    double win_frames = (double)(win_in + win_out);
    double call_sec = win * l.ncalls;
    char sys_s[24] = "null", sys_frame_s[24] = "null", sys_cs_s[24] = "null";
    if (syscalls >= 0) {
        snprintf(sys_s, sizeof sys_s, "%lld", syscalls);
        if (win_frames > 0)
            snprintf(sys_frame_s, sizeof sys_frame_s, "%.3f",
                     (double)syscalls / win_frames);
        if (call_sec > 0)
            snprintf(sys_cs_s, sizeof sys_cs_s, "%.1f",
                     (double)syscalls / call_sec);
    }
    char lost_s[24] = "null";
    if (matched)
        snprintf(lost_s, sizeof lost_s, "%llu", (unsigned long long)lost);
    printf("{\"calls\":%d,\"label\":\"%s\"", l.ncalls,
           l.label != NULL ? l.label : "");
    print_ms("in_p50_ms", pct(&m.in, 0.5));
    print_ms("in_p99_ms", pct(&m.in, 0.99));
    print_ms("in_p999_ms", pct(&m.in, 0.999));
    printf(",\"in_n\":%zu", m.in.n);
    print_ms("out_p50_ms", pct(&m.out, 0.5));
    print_ms("out_p99_ms", pct(&m.out, 0.99));
    print_ms("out_p999_ms", pct(&m.out, 0.999));
    printf(",\"out_n\":%zu", m.out.n);
    print_ms("barge_in_p50_ms", pct(&m.barge, 0.5));
    print_ms("barge_in_p99_ms", pct(&m.barge, 0.99));
    printf(",\"barge_in_n\":%zu", m.barge.n);
    printf(",\"server_cpu_ms_per_call_s\":%.3f,\"server_cpu_pct\":%.1f"
           ",\"server_rss_kb\":%ld,\"server_rss_idle_kb\":%ld"
           ",\"rss_kb_per_call\":%.1f,\"server_fds_before\":%ld"
           ",\"server_fds_steady\":%ld,\"server_fds_after\":%ld"
           ",\"rig_cpu_pct\":%.1f,\"sim_cpu_pct\":%.1f,\"fake_cpu_pct\":%.1f"
           ",\"rig_late_pct\":%.1f,\"rig_bound\":%s,\"frames_sent\":%llu,"
           "\"frames_lost\":%s"
           ",\"fake_unmapped_frames\":%llu,\"protocol_errors\":%llu"
           ",\"failed_calls\":%d,\"late_ticks\":%llu,\"clears\":%llu"
           ",\"window_s\":%.3f,\"window_frames_in\":%llu"
           ",\"window_frames_out\":%llu,\"server_threads\":%ld"
           ",\"server_ctxsw\":%llu,\"server_ctxsw_voluntary\":%llu"
           ",\"server_ctxsw_nonvoluntary\":%llu,\"wakeups_per_frame\":%.3f"
           ",\"ctxsw_per_call_s\":%.1f,\"server_syscalls\":%s"
           ",\"syscalls_per_frame\":%s,\"syscalls_per_call_s\":%s}\n",
           win > 0 ? srv_cpu * 1000.0 / (win * l.ncalls) : 0.0,
           win > 0 ? srv_cpu * 100.0 / win : 0.0, l.srv1.rss_kb,
           l.srv_idle.rss_kb,
           (double)(l.srv1.rss_kb - l.srv_idle.rss_kb) / l.ncalls,
           l.srv_idle.fds, l.srv1.fds, l.srv_after.fds, sim_pct + fake_pct,
           sim_pct, fake_pct, late_pct,
           sim_pct + fake_pct > 80.0 || late_pct > 5.0 ? "true" : "false",
           (unsigned long long)frames, lost_s, (unsigned long long)m.unmapped,
           (unsigned long long)perr, l.ncalls - ok, (unsigned long long)late,
           (unsigned long long)clears, win, (unsigned long long)win_in,
           (unsigned long long)win_out, l.srv1.threads, csw, csw_vol, csw_invol,
           win_frames > 0 ? (double)csw / win_frames : 0.0,
           call_sec > 0 ? (double)csw / call_sec : 0.0, sys_s, sys_frame_s,
           sys_cs_s);
    fflush(stdout);

    for (int i = 0; i < l.started; i++)
        sim_call_free(l.calls[i]);
    sim_api_stop(l.api);
    uv_close((uv_handle_t *)&l.start_timer, NULL);
    uv_close((uv_handle_t *)&l.watch_timer, NULL);
    uv_close((uv_handle_t *)&l.end_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(store);
    free(l.calls);
    free(l.tm);
    free(l.dtmf);
    free(audio);
    free(m.in.v);
    free(m.out.v);
    free(m.barge.v);
    free(m.recv);
    return ok == l.ncalls && perr == 0 && (!matched || lost == 0) ? 0 : 1;
}
