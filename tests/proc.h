/* SPDX-License-Identifier: MIT */
/*
 * Test helpers for tests that run the project's real binaries: start a
 * program with a clean environment and its output in a log file, wait for
 * it with a deadline, find the port it listens on, read files whole.
 *
 * Every child gets PR_SET_PDEATHSIG(SIGKILL): when a test case's process
 * ends — passed, failed through vb_test_fail's _exit, or killed by its time
 * limit — whatever it started dies with it, so a failing case never leaves
 * servers running behind the suite.
 *
 * Header-only (static functions) for the test binaries.
 */
#ifndef VB_TESTS_PROC_H
#define VB_TESTS_PROC_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/http_client.h"
#include "tests/test.h"

extern char **environ;

/* `ms`, scaled for sanitizer builds. */
static inline int proc_ms(int ms)
{
    return (int)(ms * vb_test_slowdown());
}

/* The build directory whose binaries the suite runs ("build",
 * "build/asan", "build/tsan"). */
static inline const char *proc_build_dir(void)
{
    const char *b = getenv("VB_BUILD_DIR");
    return b && *b ? b : "build";
}

/* Reads a whole file (at most 4 MiB) into a malloc'd NUL-terminated
 * string; NULL when it cannot be opened. Caller frees. */
static inline char *proc_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 1u << 22;
    char *buf = malloc(cap);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Starts `argv` (NULL-terminated; argv[0] a path) with the test's
 * environment minus voxbridge's own settings (VOXBRIDGE_*, TWILIO_*,
 * GEMINI_*) plus `env` (NULL-terminated, may be NULL); stdout and stderr go
 * to `log` (truncated). The child dies with the test case. */
static inline pid_t proc_spawn(const char *const *argv, const char *const *env,
                               const char *log)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    char *args[96], *envp[320];
    int a = 0, n = 0;
    while (argv[a] != NULL && a < 95) {
        args[a] = strdup(argv[a]);
        a++;
    }
    args[a] = NULL;
    for (char **e = environ; *e && n < 256; e++)
        if (strncmp(*e, "VOXBRIDGE_", 10) && strncmp(*e, "TWILIO_", 7) &&
            strncmp(*e, "GEMINI_", 7))
            envp[n++] = *e;
    for (int i = 0; env && env[i] && n < 319; i++)
        envp[n++] = strdup(env[i]);
    envp[n] = NULL;
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    execve(args[0], args, envp);
    _exit(127);
}

/* Waits for `pid` at most `ms`; returns its exit status, 128 + signal when
 * killed by one, or -1 after killing it at the deadline. */
static inline int proc_reap(pid_t pid, int ms)
{
    double end = tc_now_ms() + ms;
    int st;
    while (tc_now_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* True once `pid` has exited (and reaps it). */
static inline bool proc_exited(pid_t pid)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == pid;
}

/* Polls `log` until it contains `needle`; fails the test when `pid` exits
 * first or `ms` pass. Returns the text from the match (into a malloc'd
 * copy of the log the caller frees through *whole). */
static inline const char *proc_wait_log(const char *log, const char *needle,
                                        pid_t pid, int ms, char **whole)
{
    double end = tc_now_ms() + ms;
    for (;;) {
        char *text = proc_read_file(log);
        const char *p = text ? strstr(text, needle) : NULL;
        if (p != NULL) {
            *whole = text;
            return p;
        }
        if (pid > 0 && proc_exited(pid))
            vb_test_fail(__FILE__, __LINE__,
                         "process exited before \"%s\":\n%s", needle,
                         text ? text : "");
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "no \"%s\" in %s:\n%s", needle,
                         log, text ? text : "");
        free(text);
        usleep(10000);
    }
}

/* The port of voxbridge's listener with `role` ("public", "admin") from
 * its `msg=listening ... role=<role> ... port=N` log line, waiting up to
 * `ms`; fails the case if the server exits first or the line never comes. */
static inline int proc_wait_role_port(const char *log, pid_t pid,
                                      const char *role, int ms)
{
    char want[32];
    snprintf(want, sizeof(want), "role=%s", role);
    double end = tc_now_ms() + ms;
    for (;;) {
        char *text = proc_read_file(log);
        for (const char *p = text ? strstr(text, "msg=listening") : NULL;
             p != NULL; p = strstr(p + 1, "msg=listening")) {
            const char *eol = strchr(p, '\n');
            const char *r = strstr(p, want);
            const char *q = strstr(p, "port=");
            if (r != NULL && q != NULL && (eol == NULL || r < eol) &&
                (eol == NULL || q < eol)) {
                int port = atoi(q + 5);
                free(text);
                return port;
            }
        }
        if (pid > 0 && proc_exited(pid))
            vb_test_fail(__FILE__, __LINE__, "server exited early:\n%s",
                         text ? text : "");
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "no %s listening line in %s:\n%s",
                         role, log, text ? text : "");
        free(text);
        usleep(10000);
    }
}

/* voxbridge's public port. */
static inline int proc_wait_port(const char *log, pid_t pid, int ms)
{
    return proc_wait_role_port(log, pid, "public", ms);
}

/* A loopback port for a server this test case starts, free now and
 * reserved for the rest of the case's process.
 *
 * Test binaries run in parallel, so "bind :0, read the port, close" would
 * race: the kernel may hand the same ephemeral port to another binary's
 * :0 bind or outgoing connect before our server binds it. Ports come
 * instead from below the ephemeral range (ip_local_port_range starts at
 * 32768), which the kernel never picks on its own, and each is claimed
 * with an open-file-description lock on its byte of one shared lock file:
 * another test process skips a claimed port, and the claim ends when this
 * process does (passed, failed or killed). A port some other program
 * holds is skipped by the bind check. */
#define PROC_PORT_LO 20000
#define PROC_PORT_HI 32767

static inline int proc_free_port(void)
{
    static int lock_fd = -1;
    static pid_t lock_pid;
    static int next;
    if (lock_fd < 0 || lock_pid != getpid()) {
        /* A forked case process takes its own description: locks of a
         * shared one would not keep two cases apart. */
        const char *tmp = getenv("TMPDIR");
        char path[256];
        snprintf(path, sizeof(path), "%s/vb-test-ports.lock",
                 tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
        lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        ASSERT_GE(lock_fd, 0);
        lock_pid = getpid();
        next = (int)((unsigned)getpid() * 2654435761u %
                     (PROC_PORT_HI - PROC_PORT_LO + 1));
    }
    for (int tries = 0; tries <= PROC_PORT_HI - PROC_PORT_LO; tries++) {
        int port = PROC_PORT_LO + next;
        next = (next + 1) % (PROC_PORT_HI - PROC_PORT_LO + 1);
        struct flock fl = {.l_type = F_WRLCK,
                           .l_whence = SEEK_SET,
                           .l_start = port,
                           .l_len = 1};
        if (fcntl(lock_fd, F_OFD_SETLK, &fl) != 0)
            continue; /* another test process has it */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        int one = 1;
        /* As libuv's bind does: a port left in TIME_WAIT is usable. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            return port; /* stays claimed until this process exits */
    }
    vb_test_fail(__FILE__, __LINE__, "no free loopback port in %d..%d",
                 PROC_PORT_LO, PROC_PORT_HI);
    return -1;
}

/* True once something accepts on loopback `port` (within `ms`). */
static inline bool proc_port_open(int port, int ms)
{
    double end = tc_now_ms() + ms;
    while (tc_now_ms() < end) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            return true;
        usleep(10000);
    }
    return false;
}

/* Runs a shell command; fails the test when it does not exit 0. */
static inline void proc_sh(const char *cmd)
{
    int st = system(cmd);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "command failed (%d): %s", st, cmd);
}

#endif
