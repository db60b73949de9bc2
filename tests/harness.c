/* SPDX-License-Identifier: MIT */
/*
 * main() for every test binary. Each registered case runs in a child process
 * with alarm() set to its time limit (scaled by VB_TEST_SLOW for sanitizer
 * builds); the parent reports "ok"/"FAIL" per case and a summary line.
 * Usage: test_x [-l] [case...]   (-l lists cases; names select cases)
 */
#include "tests/test.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VB_TEST_MAX 512

static struct {
    const char *name;
    vb_test_fn fn;
    unsigned timeout_s;
} tests[VB_TEST_MAX];
static int ntests;
static const char *current;
static char tmpdir[256];

void vb_test_register(const char *name, vb_test_fn fn, unsigned timeout_s)
{
    if (ntests == VB_TEST_MAX) {
        fprintf(stderr, "harness: more than %d tests\n", VB_TEST_MAX);
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    tests[ntests].timeout_s = timeout_s;
    ntests++;
}

void vb_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

double vb_test_slowdown(void)
{
    const char *s = getenv("VB_TEST_SLOW");
    double f = s ? atof(s) : 1.0;
    return f >= 1.0 ? f : 1.0;
}

const char *vb_test_tmpdir(void)
{
    if (tmpdir[0] == '\0') {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof(tmpdir), "%s/vbtest-%s-%ld",
                 base ? base : "/tmp", current ? current : "x", (long)getpid());
        if (mkdir(tmpdir, 0700) != 0 && errno != EEXIST) {
            perror(tmpdir);
            _exit(1);
        }
    }
    return tmpdir;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The case's scratch directory (see vb_test_tmpdir): removed when it
 * passed, kept and named when it failed. */
static void tmpdir_done(const char *name, pid_t pid, bool passed)
{
    char dir[256];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/vbtest-%s-%ld", base ? base : "/tmp", name,
             (long)pid);
    struct stat st;
    if (stat(dir, &st) != 0)
        return;
    if (passed)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        printf("  kept %s\n", dir);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc <= 1)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

static int run_one(int i)
{
    unsigned limit = (unsigned)(tests[i].timeout_s * vb_test_slowdown() + 0.5);
    double t0 = now_ms();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 0;
    }
    if (pid == 0) {
        current = tests[i].name;
        alarm(limit);
        tests[i].fn();
        fflush(NULL);
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    double ms = now_ms() - t0;
    bool passed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (passed) {
        tmpdir_done(tests[i].name, pid, true);
        printf("ok   %s (%.0f ms)\n", tests[i].name, ms);
        return 1;
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        printf("FAIL %s: timed out after %u s\n", tests[i].name, limit);
    else if (WIFSIGNALED(status))
        printf("FAIL %s: killed by signal %d (%s)\n", tests[i].name,
               WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        printf("FAIL %s: exit status %d (%.0f ms)\n", tests[i].name,
               WEXITSTATUS(status), ms);
    tmpdir_done(tests[i].name, pid, false);
    return 0;
}

int main(int argc, char **argv)
{
    const char *prog = strrchr(argv[0], '/');
    prog = prog ? prog + 1 : argv[0];
    if (argc > 1 && strcmp(argv[1], "-l") == 0) {
        for (int i = 0; i < ntests; i++)
            puts(tests[i].name);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        if (run_one(i))
            passed++;
        else
            failed++;
    }
    printf("# %s: %d passed, %d failed\n", prog, passed, failed);
    return failed ? 1 : 0;
}
