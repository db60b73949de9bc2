/* SPDX-License-Identifier: MIT */
/*
 * Operations, end to end with the real binaries: three voxbridge
 * instances behind Debian's nginx running the multi-instance site of
 * docs/operations.md (addresses made local; plain HTTP here, TLS through
 * nginx is tests/test_nginx.c's), vb-sim callers and vb-fake-gemini.
 *
 * - Rolling restart: calls arrive continuously while each instance in
 *   turn gets SIGTERM, exits and starts again on its port: no call fails
 *   or hears "busy", and every frame sent reaches the model.
 * - Sticky streams: 20 calls with webhooks spread round robin open exactly
 *   one Gemini session each (at the fake, and by the instances' metrics).
 * - Readiness: a bad API key (close 1007), an upgrade refused 401 or 403
 *   and a model not found make /readyz 503 "gemini: ..." after the check
 *   session, and it recovers by itself when a session is accepted;
 *   /test/system says what happened last and when; a missing key is an
 *   error at start and 503; an unreachable service is recorded as such and
 *   keeps the instance ready; --check exits 1 with the reason, 0 with a
 *   good key. A check session the service never answers does not hold up
 *   SIGTERM.
 * - SIGHUP reopens --log-file (rotated away) and the live call goes on.
 * - A draining instance's 503 is retried by nginx on another instance; a
 *   live call's stream-ended request during the drain is answered by the
 *   draining instance, whose listener stays open for it; forged
 *   X-Forwarded-* headers on webhooks and streams never reach one.
 * - A stream naming another instance and a lane this one lacks is served
 *   (counted); within an instance the token's lane still decides.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "net/form.h"
#include "tests/e2e.h"

#define NINST 3

/* ---- the site ---- */

/* Replaces every `from` in `s` (at least once) with `to`; frees `s`. */
static char *replace_all(char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + fl, from))
        n++;
    if (n == 0)
        vb_test_fail(__FILE__, __LINE__, "docs/operations.md site: no \"%s\"",
                     from);
    char *out = malloc(strlen(s) + n * tl + 1);
    ASSERT_NOT_NULL(out);
    char *o = out;
    const char *p = s;
    for (const char *q = strstr(p, from); q; q = strstr(p, from)) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
        p = q + fl;
    }
    strcpy(o, p);
    free(s);
    return out;
}

typedef struct ops {
    rig_t r; /* the fake, paths */
    int port[NINST], admin[NINST], gen[NINST], lanes[NINST];
    pid_t vb[NINST];
    char log[NINST][400];
    int ng_port;
    pid_t ng;
    int starts;
} ops_t;

static const char *const inst_id[NINST] = {"vb-a", "vb-b", "vb-c"};

/* The ```nginx block of docs/operations.md with the upstream addresses,
 * the listen line and the certificate paths made local. */
static void nginx_start(ops_t *o)
{
    if (access("/usr/sbin/nginx", X_OK) != 0)
        vb_test_fail(__FILE__, __LINE__,
                     "/usr/sbin/nginx missing: run make deps (nginx-light)");
    char *doc = proc_read_file("docs/operations.md");
    ASSERT_NOT_NULL(doc);
    const char *from = strstr(doc, "```nginx\n");
    ASSERT_NOT_NULL(from);
    from += strlen("```nginx\n");
    const char *to = strstr(from, "\n```");
    ASSERT_NOT_NULL(to);
    char *site = strndup(from, (size_t)(to - from) + 1);
    free(doc);
    static const char *const addr[NINST] = {"10.0.0.11:8080", "10.0.0.12:8080",
                                            "10.0.0.13:8080"};
    char with[600];
    for (int i = 0; i < NINST; i++) {
        snprintf(with, sizeof(with), "127.0.0.1:%d", o->port[i]);
        site = replace_all(site, addr[i], with);
    }
    o->ng_port = proc_free_port();
    snprintf(with, sizeof(with), "listen 127.0.0.1:%d;", o->ng_port);
    site = replace_all(site,
                       "listen 443 ssl;     # HTTP/1.1: nginx 1.22 cannot "
                       "carry WebSockets over h2",
                       with);
    /* No TLS here: the certificate lines only need files that exist. */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out "
             "server.crt -days 2 -subj /CN=localhost >/dev/null 2>&1",
             o->r.dir);
    proc_sh(cmd);
    snprintf(with, sizeof(with), "%s/server.crt", o->r.dir);
    site = replace_all(
        site, "/etc/letsencrypt/live/voice.example.com/fullchain.pem", with);
    snprintf(with, sizeof(with), "%s/server.key", o->r.dir);
    site = replace_all(
        site, "/etc/letsencrypt/live/voice.example.com/privkey.pem", with);
    const char *dir = o->r.dir;
    FILE *f = fopen(path_in(&o->r, "nginx.conf"), "w");
    ASSERT_NOT_NULL(f);
    fprintf(f,
            "daemon off;\nmaster_process off;\nworker_processes 1;\n%s"
            "error_log %s/error.log info;\npid %s/nginx.pid;\n"
            "events { worker_connections 512; }\n"
            "http {\n  access_log %s/access.log;\n"
            "  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n"
            "  fastcgi_temp_path %s/fastcgi;\n  uwsgi_temp_path %s/uwsgi;\n"
            "  scgi_temp_path %s/scgi;\n%s}\n",
            geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir,
            dir, dir, site);
    fclose(f);
    free(site);
    char prefix[400], conf[400], out[400];
    snprintf(prefix, sizeof(prefix), "%s/", dir);
    snprintf(conf, sizeof(conf), "%s", path_in(&o->r, "nginx.conf"));
    snprintf(out, sizeof(out), "%s", path_in(&o->r, "nginx.out"));
    const char *argv[] = {
        "/usr/sbin/nginx", "-p", prefix, "-c", conf, "-e", out, NULL};
    o->ng = proc_spawn(argv, NULL, out);
    if (!proc_port_open(o->ng_port, proc_ms(10000)))
        vb_test_fail(__FILE__, __LINE__, "nginx did not start: %s",
                     proc_read_file(out));
}

static void nginx_stop(ops_t *o)
{
    kill(o->ng, SIGQUIT);
    ASSERT_GE(proc_reap(o->ng, proc_ms(10000)), 0);
}

/* ---- instances ---- */

static int readyz(int port, char *body, size_t n)
{
    tc_resp_t resp = {0};
    int st =
        tc_request(port, "GET /readyz HTTP/1.1\r\n\r\n", &resp, proc_ms(5000));
    if (body != NULL)
        snprintf(body, n, "%s", resp.body ? resp.body : "");
    tc_free_resp(&resp);
    return st;
}

static void wait_ready(int port, int ms)
{
    char body[256] = "";
    int st = 0;
    for (double end = tc_now_ms() + ms; tc_now_ms() < end; usleep(20000))
        if ((st = readyz(port, body, sizeof(body))) == 200)
            return;
    vb_test_fail(__FILE__, __LINE__, "port %d not ready: %d %s", port, st,
                 body);
}

/* Starts instance `i` (again) on its port, pointed at the fake. */
static void inst_start(ops_t *o, int i, const char *key)
{
    char bin[400], listen[64], pub[64], gurl[256], lanes[8], env_key[128];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", o->port[i]);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", o->ng_port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, o->r.fake_port);
    snprintf(lanes, sizeof(lanes), "%d", o->lanes[i]);
    snprintf(env_key, sizeof(env_key), "GEMINI_API_KEY=%s", key);
    char name[64];
    snprintf(name, sizeof(name), "%s-%d.log", inst_id[i], o->gen[i]++);
    snprintf(o->log[i], sizeof(o->log[i]), "%s", path_in(&o->r, name));
    const char *argv[] = {bin,
                          "--listen",
                          listen,
                          "--public-url",
                          pub,
                          "--trust-proxy",
                          "--gemini-url",
                          gurl,
                          "--metrics-listen",
                          "127.0.0.1:0",
                          "--instance-id",
                          inst_id[i],
                          "--lanes",
                          lanes,
                          "--drain-grace",
                          "1",
                          "--drain-timeout",
                          "20",
                          NULL};
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                         "VOXBRIDGE_STREAM_SECRET=" SECRET, env_key, NULL};
    o->vb[i] = proc_spawn(argv, env, o->log[i]);
    ASSERT_EQ(proc_wait_port(o->log[i], o->vb[i], proc_ms(10000)), o->port[i]);
    o->admin[i] = rig_admin_port(o->log[i], o->vb[i], proc_ms(10000));
    o->starts++;
}

/* SIGTERM, and the exit: 0, with a log free of errors. */
static void inst_stop(ops_t *o, int i)
{
    kill(o->vb[i], SIGTERM);
    int st = proc_reap(o->vb[i], proc_ms(30000));
    char *text = proc_read_file(o->log[i]);
    if (st != 0 || text == NULL || strstr(text, "level=error") != NULL ||
        strstr(text, "Sanitizer") != NULL)
        vb_test_fail(__FILE__, __LINE__, "%s exited %d:\n%s", inst_id[i], st,
                     text ? text : "");
    free(text);
}

static void ops_start(ops_t *o, const int *lanes)
{
    memset(o, 0, sizeof(*o));
    rig_init(&o->r);
    rig_fake(&o->r, (const char *const[]){"--mode", "echo", NULL});
    for (int i = 0; i < NINST; i++) {
        o->port[i] = proc_free_port();
        o->lanes[i] = lanes[i];
    }
    nginx_start(o);
    for (int i = 0; i < NINST; i++)
        inst_start(o, i, API_KEY);
    for (int i = 0; i < NINST; i++)
        wait_ready(o->port[i], proc_ms(10000));
}

/* ---- callers ---- */

#define MAX_CALLS 256

typedef struct callers {
    ops_t *o;
    const char *audio;
    int every_ms, limit;
    _Atomic bool stop, placed, release;
    _Atomic int n;
    sim_t s[MAX_CALLS];
} callers_t;

static void caller_start(callers_t *c, int k)
{
    char bin[400], hook[128];
    snprintf(bin, sizeof(bin), "%s/vb-sim", proc_build_dir());
    snprintf(hook, sizeof(hook), "http://127.0.0.1:%d/webhook/voice",
             c->o->ng_port);
    snprintf(c->s[k].out, sizeof(c->s[k].out), "%s/sim-%d.out", c->o->r.dir, k);
    const char *argv[] = {
        bin,         "call",    "--webhook",    hook,          "--auth-token",
        TOKEN,       "--audio", c->audio,       "--tail",      "0.5",
        "--timeout", "60",      "--api-listen", "127.0.0.1:0", NULL};
    c->s[k].pid = proc_spawn(argv, NULL, c->s[k].out);
}

/* Places a call every `every_ms` until stopped (or `limit` calls). */
static void callers_run(callers_t *c)
{
    while (!atomic_load(&c->stop) && atomic_load(&c->n) < c->limit) {
        int k = atomic_load(&c->n);
        caller_start(c, k);
        atomic_store(&c->n, k + 1);
        usleep((useconds_t)c->every_ms * 1000);
    }
}

/* On its own thread: the callers' parent-death signal follows the thread
 * that forked them, so it stays until they have been reaped (release). */
static void *callers_main(void *arg)
{
    callers_t *c = arg;
    callers_run(c);
    atomic_store(&c->placed, true);
    while (!atomic_load(&c->release))
        usleep(10000);
    return NULL;
}

/* Waits for every call; each must have completed normally with its audio
 * streamed (nobody heard "busy"). Returns the frames sent in all. */
static long long callers_check(ops_t *o, callers_t *c)
{
    long long frames = 0;
    int n = atomic_load(&c->n);
    for (int k = 0; k < n; k++) {
        int st = proc_reap(c->s[k].pid, proc_ms(90000));
        char *out = proc_read_file(c->s[k].out);
        if (st != 0 || out == NULL || field(out, "frames_sent") <= 0 ||
            strstr(out, "busy") != NULL ||
            strstr(out, "webhook_status=200") == NULL)
            vb_test_fail(__FILE__, __LINE__, "call %d of %d failed (%d): %s", k,
                         n, st, out ? out : "");
        assert_sim_ok(out, NULL);
        frames += field(out, "frames_sent");
        free(out);
    }
    (void)o;
    return frames;
}

/* Gemini sessions the fake saw opened (resumptions not counted). */
static int fake_sessions(const rig_t *r)
{
    cJSON *evs = fake_events(r);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        if (strcmp(ev_type(e), "setup") == 0 &&
            !cJSON_IsTrue(cJSON_GetObjectItem(e, "resumed")))
            n++;
    }
    cJSON_Delete(evs);
    return n;
}

static double audio_bytes(const rig_t *r)
{
    cJSON *evs = fake_events(r);
    double b = sum_audio_bytes(evs);
    cJSON_Delete(evs);
    return b;
}

/* ---- tests ---- */

TEST_T(rolling_restart_behind_nginx_fails_no_call_and_loses_no_frame, 180)
{
    static ops_t o;
    ops_start(&o, (const int[]){2, 1, 2});
    const char *audio = path_in(&o.r, "caller.wav");
    make_sox(audio, "synth 1.5 sine 300 vol 0.4");
    static callers_t c;
    memset(&c, 0, sizeof(c));
    c.o = &o;
    c.audio = audio;
    c.every_ms = 250;
    c.limit = MAX_CALLS;
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, callers_main, &c), 0);
    usleep(1500 * 1000);
    for (int i = 0; i < NINST; i++) {
        int before = atomic_load(&c.n);
        inst_stop(&o, i);
        inst_start(&o, i, API_KEY);
        wait_ready(o.port[i], proc_ms(10000));
        printf("  %s restarted; calls placed meanwhile: %d\n", inst_id[i],
               atomic_load(&c.n) - before);
        usleep(1000 * 1000);
    }
    atomic_store(&c.stop, true);
    while (!atomic_load(&c.placed))
        usleep(10000);
    long long frames = callers_check(&o, &c);
    atomic_store(&c.release, true);
    pthread_join(th, NULL);
    int calls = atomic_load(&c.n);
    for (int i = 0; i < NINST; i++)
        inst_stop(&o, i);
    nginx_stop(&o);
    rig_stop(&o.r);
    double got = audio_bytes(&o.r);
    printf("  %d calls, %lld frames sent, %.0f frames at the model, %d "
           "voxbridge starts\n",
           calls, frames, got / 640, o.starts);
    ASSERT_GT(calls, 20);
    ASSERT_EQ(got, (double)frames * 640);
    /* One session per call, plus one check session per start. */
    ASSERT_EQ(fake_sessions(&o.r), calls + o.starts);
}

TEST_T(round_robin_webhooks_sticky_streams_one_gemini_session_per_call, 120)
{
    static ops_t o;
    ops_start(&o, (const int[]){1, 2, 1});
    const char *audio = path_in(&o.r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4");
    static callers_t c;
    memset(&c, 0, sizeof(c));
    c.o = &o;
    c.audio = audio;
    c.every_ms = 100;
    c.limit = 20;
    callers_run(&c);
    long long frames = callers_check(&o, &c);
    ASSERT_EQ(atomic_load(&c.n), 20);
    double pre = 0, at_start = 0, rerouted = 0, answered[NINST];
    for (int i = 0; i < NINST; i++) {
        tc_resp_t resp = {0};
        ASSERT_EQ(tc_request(o.admin[i], "GET /metrics HTTP/1.1\r\n\r\n", &resp,
                             proc_ms(5000)),
                  200);
        pre +=
            msum(resp.body, "vb_gemini_sessions_total", "how=\"preconnect\"");
        at_start +=
            msum(resp.body, "vb_gemini_sessions_total", "how=\"at_start\"");
        rerouted += msum(resp.body, "vb_streams_rerouted_total", NULL);
        answered[i] =
            msum(resp.body, "vb_http_requests_total", "route=\"voice\"");
        assert_nothing_lost(resp.body);
        tc_free_resp(&resp);
    }
    for (int i = 0; i < NINST; i++)
        inst_stop(&o, i);
    nginx_stop(&o);
    rig_stop(&o.r);
    printf("  webhooks per instance %.0f/%.0f/%.0f; sessions: %.0f "
           "pre-connected, %.0f at start\n",
           answered[0], answered[1], answered[2], pre, at_start);
    /* Round robin really spread the webhooks. */
    for (int i = 0; i < NINST; i++)
        ASSERT_GT(answered[i], 0);
    ASSERT_EQ(pre, 20);
    ASSERT_EQ(at_start, 0);
    ASSERT_EQ(rerouted, 0);
    ASSERT_EQ(fake_sessions(&o.r), 20 + NINST);
    ASSERT_EQ(audio_bytes(&o.r), (double)frames * 640);
}

/* The fake on a fixed port, accepting `key`, with `extra` arguments
 * (NULL-terminated, may be NULL). */
static void fake_on_ex(rig_t *r, int port, const char *key,
                       const char *const *extra)
{
    char bin[400], listen[64];
    snprintf(bin, sizeof(bin), "%s/vb-fake-gemini", proc_build_dir());
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    const char *argv[32] = {bin, "--listen", listen,      "--api-key",
                            key, "--log",    r->fake_log, NULL};
    int n = 7;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    r->fake = proc_spawn(argv, NULL, r->fake_out);
    char *text;
    proc_wait_log(r->fake_out, "listening on ", r->fake, proc_ms(10000), &text);
    free(text);
    r->fake_port = port;
}

static void fake_on(rig_t *r, int port, const char *key)
{
    fake_on_ex(r, port, key, NULL);
}

/* voxbridge --check against the fake with `extra` arguments (may be
 * NULL); its exit status, its output in *out. */
static int run_check_ex(const rig_t *r, const char *key,
                        const char *const *extra, char **out)
{
    char bin[400], gurl[256], env_key[128];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, r->fake_port);
    snprintf(env_key, sizeof(env_key), "GEMINI_API_KEY=%s", key);
    const char *argv[32] = {bin, "--check", "--gemini-url", gurl, NULL};
    int n = 4;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    const char *env[] = {env_key, NULL};
    const char *log = path_in(r, "check.out");
    int st = proc_reap(proc_spawn(argv, env, log), proc_ms(20000));
    *out = proc_read_file(log);
    ASSERT_NOT_NULL(*out);
    return st;
}

static int run_check(const rig_t *r, const char *key, char **out)
{
    return run_check_ex(r, key, NULL, out);
}

/* --check runs the checks a start makes (one function for both): a
 * --record-dir that is not a directory and an --events-url spool that
 * cannot be made fail it with the reason, before any Gemini session; the
 * server refuses to start for the same reason. */
TEST_T(check_refuses_what_a_start_refuses, 60)
{
    rig_t r;
    rig_init(&r);
    rig_fake(&r, NULL);
    const char *file = path_in(&r, "plain-file");
    write_file(file, "not a directory\n");
    char spool[512];
    snprintf(spool, sizeof(spool), "%s/spool", file);
    char *out;
    ASSERT_EQ(run_check_ex(&r, API_KEY,
                           (const char *const[]){"--record-dir", file, NULL},
                           &out),
              1);
    ASSERT_STR_CONTAINS(out, "configuration: FAILED (--record-dir ");
    ASSERT_STR_CONTAINS(out, "is not a writable directory)");
    ASSERT_NULL(strstr(out, "gemini session"));
    free(out);
    ASSERT_EQ(run_check_ex(&r, API_KEY,
                           (const char *const[]){
                               "--events-url", "http://127.0.0.1:9/events",
                               "--events-spool", spool, "--webhook-secret",
                               "s3cret", NULL},
                           &out),
              1);
    ASSERT_STR_CONTAINS(out, "configuration: FAILED (cannot set up "
                             "--events-url (spool ");
    free(out);
    /* The same settings stop a start, with the same reason. */
    char bin[400], listen[64];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", proc_free_port());
    const char *argv[] = {bin, "--listen", listen, "--record-dir", file, NULL};
    const char *env[] = {"GEMINI_API_KEY=" API_KEY, NULL};
    ASSERT_EQ(proc_reap(proc_spawn(argv, env, r.vb_log), proc_ms(10000)), 1);
    char *text = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(text, "is not a writable directory");
    free(text);
    ASSERT_EQ(fake_sessions(&r), 0);
    rig_stop(&r);
}

/* voxbridge with its start-up check session against the Gemini service
 * on `gport`, `key` its GEMINI_API_KEY (NULL: unset), `extra` arguments
 * (NULL-terminated, may be NULL); its public and admin ports. */
static pid_t vb_checked(const rig_t *r, int gport, const char *key,
                        const char *const *extra, int *port, int *admin)
{
    char bin[400], listen[64], pub[64], gurl[256], env_key[128];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    *port = proc_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", *port);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", *port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, gport);
    snprintf(env_key, sizeof(env_key), "GEMINI_API_KEY=%s", key ? key : "");
    /* No drain grace unless a case asks for one (a later flag wins). */
    const char *argv[32] = {
        bin,           "--listen",      listen, "--public-url",
        pub,           "--gemini-url",  gurl,   "--metrics-listen",
        "127.0.0.1:0", "--drain-grace", "0",    NULL};
    int n = 11;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                         "VOXBRIDGE_STREAM_SECRET=" SECRET,
                         key != NULL ? env_key : NULL, NULL};
    pid_t vb = proc_spawn(argv, env, r->vb_log);
    ASSERT_EQ(proc_wait_port(r->vb_log, vb, proc_ms(10000)), *port);
    *admin = rig_admin_port(r->vb_log, vb, proc_ms(10000));
    return vb;
}

/* Polls /readyz until it answers `want`; its body in `body`. */
static void wait_readyz(int port, int want, char *body, size_t n, int ms)
{
    int st = 0;
    for (double end = tc_now_ms() + ms; tc_now_ms() < end; usleep(20000))
        if ((st = readyz(port, body, n)) == want)
            return;
    vb_test_fail(__FILE__, __LINE__, "port %d: /readyz %d, not %d: %s", port,
                 st, want, body);
}

/* GET /test/system; the body (malloc'd). */
static char *test_system(int admin)
{
    tc_resp_t resp = {0};
    ASSERT_EQ(tc_request(admin, "GET /test/system HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    char *body = strdup(resp.body);
    tc_free_resp(&resp);
    return body;
}

/* The gemini component's last_at in a /test/system body. */
static double gemini_last_at(const char *body)
{
    const char *p = strstr(body, "\"last_at\":");
    ASSERT_NOT_NULL(p);
    return strtod(p + strlen("\"last_at\":"), NULL);
}

TEST_T(bad_api_key_makes_readyz_503_and_recovers_when_accepted, 120)
{
    rig_t r;
    rig_init(&r);
    int fport = proc_free_port();
    fake_on(&r, fport, "the-new-key");
    /* --check: 1 with the reason for a key the service refuses. */
    char *out;
    ASSERT_EQ(run_check(&r, "the-old-key", &out), 1);
    ASSERT_STR_CONTAINS(out, "configuration: ok");
    ASSERT_STR_CONTAINS(out, "gemini session: rejected (close 1007");
    free(out);
    ASSERT_EQ(run_check(&r, "the-new-key", &out), 0);
    ASSERT_STR_CONTAINS(out, "gemini session: ok (setupComplete in ");
    free(out);

    /* The server with the old key: unready after its check session. */
    int port, admin;
    pid_t vb = vb_checked(&r, fport, "the-old-key", NULL, &port, &admin);
    char body[256] = "";
    int st = 0;
    for (double end = tc_now_ms() + proc_ms(10000); tc_now_ms() < end;
         usleep(20000))
        if ((st = readyz(port, body, sizeof(body))) == 503)
            break;
    ASSERT_EQ(st, 503);
    ASSERT_STR_CONTAINS(body, "gemini: close 1007");
    char *text = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(text, "msg=\"gemini check session\" result=rejected");
    free(text);
    tc_resp_t resp = {0};
    ASSERT_EQ(tc_request(admin, "GET /test/system HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    ASSERT_STR_CONTAINS(resp.body, "\"last_outcome\":\"rejected\"");
    ASSERT_STR_CONTAINS(resp.body, "\"status\":\"gemini_rejected\"");
    tc_free_resp(&resp);

    /* The service starts accepting the key (the fake restarted with it):
     * the periodic probe finds out, no restart needed. */
    kill(r.fake, SIGTERM);
    proc_reap(r.fake, proc_ms(10000));
    fake_on(&r, fport, "the-old-key");
    double t0 = tc_now_ms();
    wait_ready(port, proc_ms(40000));
    printf("  ready again %.1f s after the key was accepted\n",
           (tc_now_ms() - t0) / 1000);
    ASSERT_EQ(tc_request(admin, "GET /test/system HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    ASSERT_STR_CONTAINS(resp.body, "\"last_outcome\":\"ok\"");
    ASSERT_STR_CONTAINS(resp.body, "\"status\":\"ok\"");
    tc_free_resp(&resp);
    kill(vb, SIGTERM);
    ASSERT_EQ(proc_reap(vb, proc_ms(20000)), 0);
    text = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(text, "gemini accepts sessions again: ready");
    free(text);
    rig_stop(&r);
}

/* The upgrade answered `fault` (reject-401, reject-403) once: unready
 * with the reason after the check session; the probe's next session
 * (accepted) makes it ready again, and /test/system says what happened
 * last and when. */
static void refused_then_recovers(const char *fault, const char *status)
{
    rig_t r;
    rig_init(&r);
    rig_fake(
        &r, (const char *const[]){"--fault", fault, "--fault-conn", "1", NULL});
    double wall0 = (double)time(NULL);
    int port, admin;
    pid_t vb = vb_checked(&r, r.fake_port, API_KEY, NULL, &port, &admin);
    char body[256] = "", want[64];
    wait_readyz(port, 503, body, sizeof(body), proc_ms(10000));
    snprintf(want, sizeof(want), "gemini: HTTP %s on the upgrade", status);
    ASSERT_STR_CONTAINS(body, want);
    ASSERT_STR_CONTAINS(body, "GEMINI_API_KEY");
    char *sys = test_system(admin);
    ASSERT_STR_CONTAINS(sys, "\"last_outcome\":\"rejected\"");
    ASSERT_STR_CONTAINS(sys, "\"consecutive_rejections\":1");
    double at = gemini_last_at(sys);
    ASSERT_TRUE(at >= wall0 && at <= (double)time(NULL));
    free(sys);
    /* The probe (after PROBE_MIN_S) is the fake's second connection. */
    wait_readyz(port, 200, body, sizeof(body), proc_ms(20000));
    sys = test_system(admin);
    ASSERT_STR_CONTAINS(sys, "\"last_outcome\":\"ok\"");
    ASSERT_STR_CONTAINS(sys, "\"consecutive_rejections\":0");
    ASSERT_TRUE(gemini_last_at(sys) >= at);
    free(sys);
    kill(vb, SIGTERM);
    ASSERT_EQ(proc_reap(vb, proc_ms(20000)), 0);
    char *text = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(text, "gemini accepts sessions again: ready");
    free(text);
    rig_stop(&r);
}

TEST_T(check_session_refused_401_makes_readyz_503_then_recovers, 60)
{
    refused_then_recovers("reject-401", "401");
}

TEST_T(check_session_refused_403_makes_readyz_503_then_recovers, 60)
{
    refused_then_recovers("reject-403", "403");
}

/* A model the service does not know: unready, with the model named; the
 * service starting to offer it makes the instance ready again. */
TEST_T(model_not_found_makes_readyz_503_then_recovers, 120)
{
    rig_t r;
    rig_init(&r);
    int fport = proc_free_port();
    fake_on(&r, fport, API_KEY);
    int port, admin;
    pid_t vb = vb_checked(
        &r, fport, API_KEY,
        (const char *const[]){"--gemini-model", "gemini-future-live", NULL},
        &port, &admin);
    char body[256] = "";
    wait_readyz(port, 503, body, sizeof(body), proc_ms(10000));
    ASSERT_STR_CONTAINS(body, "model gemini-future-live not found");
    kill(r.fake, SIGTERM);
    proc_reap(r.fake, proc_ms(10000));
    fake_on_ex(&r, fport, API_KEY,
               (const char *const[]){"--model", "gemini-future-live", NULL});
    wait_readyz(port, 200, body, sizeof(body), proc_ms(40000));
    char *sys = test_system(admin);
    ASSERT_STR_CONTAINS(sys, "\"last_outcome\":\"ok\"");
    free(sys);
    kill(vb, SIGTERM);
    ASSERT_EQ(proc_reap(vb, proc_ms(20000)), 0);
    rig_stop(&r);
}

/* No GEMINI_API_KEY: an error line at start that says so, and /readyz 503
 * with the reason (the check session is refused without connecting). */
TEST_T(missing_api_key_is_an_error_at_start_and_readyz_503, 60)
{
    rig_t r;
    rig_init(&r);
    rig_fake(&r, NULL);
    int port, admin;
    pid_t vb = vb_checked(&r, r.fake_port, NULL, NULL, &port, &admin);
    char body[256] = "";
    wait_readyz(port, 503, body, sizeof(body), proc_ms(10000));
    ASSERT_STR_EQ(body, "gemini: GEMINI_API_KEY is not set\n");
    char *text = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(text, "level=error msg=\"GEMINI_API_KEY is not set");
    free(text);
    char *sys = test_system(admin);
    ASSERT_STR_CONTAINS(sys, "\"last_outcome\":\"rejected\"");
    free(sys);
    ASSERT_EQ(fake_sessions(&r), 0);
    kill(vb, SIGTERM);
    ASSERT_EQ(proc_reap(vb, proc_ms(20000)), 0);
    rig_stop(&r);
}

/* A service that cannot be reached (nothing listens on its port) is
 * recorded as such: still ready (not the configuration's fault), and
 * /test/system says "unreachable" with the reason, not "none". */
TEST_T(unreachable_gemini_is_recorded_and_keeps_readiness, 60)
{
    rig_t r;
    rig_init(&r);
    int port, admin;
    pid_t vb = vb_checked(&r, proc_free_port(), API_KEY, NULL, &port, &admin);
    char *sys = NULL;
    for (double end = tc_now_ms() + proc_ms(10000); tc_now_ms() < end;
         usleep(20000)) {
        free(sys);
        sys = test_system(admin);
        if (strstr(sys, "\"last_outcome\":\"none\"") == NULL)
            break;
    }
    ASSERT_STR_CONTAINS(sys, "\"last_outcome\":\"unreachable\"");
    ASSERT_STR_CONTAINS(sys, "\"last_reason\":\"");
    ASSERT_TRUE(gemini_last_at(sys) > 0);
    free(sys);
    ASSERT_EQ(readyz(port, NULL, 0), 200);
    kill(vb, SIGTERM);
    ASSERT_EQ(proc_reap(vb, proc_ms(20000)), 0);
    rig_stop(&r);
}

/* A policy 1008 after setupComplete ends that call, and only that call:
 * readiness comes from rejections at setup time, so /readyz stays 200
 * and the next call is taken. */
TEST_T(a_mid_call_policy_1008_does_not_make_the_instance_unready, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 3 sine 300 vol 0.3");
    write_file(r.script,
               "{\"at_ms\":300,\"conn\":1,\"type\":\"close\",\"code\":1008,"
               "\"reason\":\"Request violates a policy.\"}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    free(out);
    char *m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", "reason=\"gemini_rejected\""),
              1);
    ASSERT_EQ(msum(m, "vb_gemini_ready", NULL), 1);
    free(m);
    char body[64] = "";
    ASSERT_EQ(readyz(r.vb_port, body, sizeof(body)), 200);
    char *sys = test_system(r.vb_admin_port);
    ASSERT_STR_CONTAINS(sys, "\"consecutive_rejections\":0");
    free(sys);
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(vblog, "gemini closed the session for a policy reason");
    ASSERT_NULL(strstr(vblog, "gemini rejects sessions: not ready"));
    free(vblog);
    rig_stop(&r);
}

/* A Gemini endpoint that takes the connection and never answers holds the
 * check session for its whole 10 s deadline: a SIGTERM meanwhile is still
 * acted on at once (/readyz 503), and a second one stops the process
 * without waiting for the session. */
TEST_T(sigterm_during_a_hung_check_session_is_acted_on_at_once, 60)
{
    rig_t r;
    rig_init(&r);
    /* Listening, never accepting: the kernel completes the handshake, the
     * upgrade request is never read. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(lfd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    socklen_t sl = sizeof(sa);
    ASSERT_EQ(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    int port, admin;
    pid_t vb = vb_checked(&r, ntohs(sa.sin_port), API_KEY,
                          (const char *const[]){"--drain-grace", "30", NULL},
                          &port, &admin);
    /* The check session has connected once the listener has it queued. */
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, proc_ms(10000)), 1);
    ASSERT_EQ(readyz(port, NULL, 0), 200);
    double t0 = tc_now_ms();
    kill(vb, SIGTERM);
    char body[256] = "";
    wait_readyz(port, 503, body, sizeof(body), proc_ms(5000));
    double ms = tc_now_ms() - t0;
    printf("  /readyz 503 %.0f ms after SIGTERM\n", ms);
    ASSERT_STR_EQ(body, "draining\n");
    ASSERT_TRUE(ms < 2000); /* the check session's deadline is 10 s */
    t0 = tc_now_ms();
    kill(vb, SIGTERM);
    ASSERT_EQ(proc_reap(vb, proc_ms(20000)), 0);
    ms = tc_now_ms() - t0;
    printf("  exited %.0f ms after the second SIGTERM\n", ms);
    ASSERT_TRUE(ms < 3000);
    char *text = proc_read_file(r.vb_log);
    ASSERT_NULL(strstr(text, "msg=\"gemini check session\""));
    free(text);
    close(lfd);
    rig_stop(&r);
}

TEST_T(sighup_reopens_the_log_file_and_keeps_the_live_call, 120)
{
    rig_t r;
    rig_init(&r);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    const char *logf = path_in(&r, "vb-file.log");
    char logarg[400];
    snprintf(logarg, sizeof(logarg), "%s", logf);
    /* rig_vb reads the start lines from stderr: the file gets the rest. */
    char bin[400], listen[64], pub[64], gurl[256];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    r.vb_port = proc_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", r.vb_port);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r.vb_port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, r.fake_port);
    const char *argv[] = {bin,    "--listen",
                          listen, "--public-url",
                          pub,    "--gemini-url",
                          gurl,   "--log-file",
                          logarg, NULL};
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                         "VOXBRIDGE_STREAM_SECRET=" SECRET,
                         "GEMINI_API_KEY=" API_KEY, NULL};
    r.vb = proc_spawn(argv, env, r.vb_log);
    ASSERT_EQ(proc_wait_port(logf, r.vb, proc_ms(10000)), r.vb_port);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 2");
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *text;
    proc_wait_log(logf, "msg=\"stream started\"", r.vb, proc_ms(10000), &text);
    free(text);
    /* logrotate: move the file away, then SIGHUP. */
    const char *rotated = path_in(&r, "vb-file.log.1");
    ASSERT_EQ(rename(logf, rotated), 0);
    kill(r.vb, SIGHUP);
    proc_wait_log(logf, "msg=\"SIGHUP: log file reopened\"", r.vb,
                  proc_ms(10000), &text);
    free(text);
    char *out = sim_wait(&r, &s);
    assert_sim_ok(out, NULL);
    ASSERT_GT(field(out, "media_received"), 0);
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    rig_stop(&r);
    char *before = proc_read_file(rotated);
    char *after = proc_read_file(logf);
    ASSERT_NOT_NULL(before);
    ASSERT_NOT_NULL(after);
    ASSERT_STR_CONTAINS(before, "msg=\"voxbridge ready\"");
    ASSERT_STR_CONTAINS(before, "msg=\"stream started\"");
    ASSERT_TRUE(strstr(before, "msg=\"voxbridge stopped\"") == NULL);
    /* The call ended after the reopen: its end is in the new file. */
    ASSERT_STR_CONTAINS(after, "msg=\"gemini call finished\"");
    ASSERT_STR_CONTAINS(after, "msg=\"voxbridge stopped\" status=0");
    ASSERT_TRUE(strstr(after, "msg=\"voxbridge ready\"") == NULL);
    /* stderr got nothing but what precedes the file. */
    char *err = proc_read_file(r.vb_log);
    ASSERT_TRUE(err == NULL || strstr(err, "level=") == NULL);
    free(err);
    free(before);
    free(after);
    free(out);
}

/* A signed voice webhook for `sid` as Twilio would post it to the public
 * URL `pub`, with the header lines `extra` ("" for none); returns the
 * status, the body in `body`. */
static int post_webhook(int port, const char *pub, const char *sid,
                        const char *extra, char *body, size_t bsz)
{
    char form[256], url[256], sig[VB_TWILIO_SIG_LEN + 1], req[1024];
    snprintf(form, sizeof(form),
             "AccountSid=AC0&CallSid=%s&CallStatus=ringing&From=%%2B1415555"
             "0123&To=%%2B18005550100",
             sid);
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, form, strlen(form), 0), 0);
    snprintf(url, sizeof(url), "%s/webhook/voice", pub);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, &f, sig), 0);
    vb_form_free(&f);
    snprintf(req, sizeof(req),
             "POST /webhook/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
             extra, sig, strlen(form), form);
    tc_resp_t resp = {0};
    int st = tc_request(port, req, &resp, proc_ms(10000));
    snprintf(body, bsz, "%s", resp.body ? resp.body : "");
    tc_free_resp(&resp);
    return st;
}

/* Forwarding headers a client forges; the site sets its own. */
#define SPOOF                                        \
    "X-Forwarded-For: 203.0.113.7, 198.51.100.9\r\n" \
    "X-Forwarded-Host: spoofed.example.net\r\n"      \
    "X-Forwarded-Proto: http\r\n"

/* No instance logged a forged header: with --trust-proxy they log the
 * address nginx saw, on the webhook and the stream locations alike. */
static void assert_no_spoof(const ops_t *o)
{
    int answered = 0;
    for (int i = 0; i < NINST; i++) {
        char *text = proc_read_file(o->log[i]);
        ASSERT_NOT_NULL(text);
        if (strstr(text, "203.0.113.7") != NULL ||
            strstr(text, "198.51.100.9") != NULL ||
            strstr(text, "spoofed.example.net") != NULL)
            vb_test_fail(__FILE__, __LINE__, "a forged header reached %s:\n%s",
                         inst_id[i], text);
        for (const char *p = strstr(text, "msg=\"call answered\" call=CAretry");
             p != NULL;
             p = strstr(p + 1, "msg=\"call answered\" call=CAretry")) {
            char line[512];
            snprintf(line, sizeof(line), "%.*s", (int)strcspn(p, "\n"), p);
            ASSERT_STR_CONTAINS(line, " client=127.0.0.1");
            answered++;
        }
        if (i == 1) {
            const char *m = strstr(text, "route=stream reason=mismatch");
            ASSERT_NOT_NULL(m);
            char line[512];
            snprintf(line, sizeof(line), "%.*s", (int)strcspn(m, "\n"), m);
            ASSERT_STR_CONTAINS(line, " client=127.0.0.1 ");
        }
        free(text);
    }
    ASSERT_EQ(answered, 6);
}

TEST_T(nginx_retries_webhooks_a_draining_instance_refuses, 120)
{
    static ops_t o;
    ops_start(&o, (const int[]){1, 1, 1});
    char pub[64], body[4096];
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", o.ng_port);
    /* vb-a answers a call whose stream never comes: it keeps its listener
     * open for that stream through the drain. */
    ASSERT_EQ(post_webhook(o.port[0], pub, "CAheld", "", body, sizeof(body)),
              200);
    ASSERT_STR_CONTAINS(body, "/media-stream/vb-a/0\"");
    kill(o.vb[0], SIGTERM);
    char *text;
    proc_wait_log(o.log[0], "msg=\"drain grace over", o.vb[0], proc_ms(10000),
                  &text);
    free(text);
    ASSERT_TRUE(proc_port_open(o.port[0], 1));
    ASSERT_EQ(readyz(o.port[0], body, sizeof(body)), 503);
    ASSERT_STR_EQ(body, "draining\n");
    /* Through nginx (round robin), every new call is answered by another
     * instance: vb-a's 503s were retried. The callers forge forwarding
     * headers, which the site overwrites (below). */
    for (int k = 0; k < 6; k++) {
        char sid[32];
        snprintf(sid, sizeof(sid), "CAretry%d", k);
        int st = post_webhook(o.ng_port, pub, sid, SPOOF, body, sizeof(body));
        if (st != 200 || strstr(body, "<Connect ") == NULL ||
            strstr(body, "/media-stream/vb-a/") != NULL)
            vb_test_fail(__FILE__, __LINE__, "webhook %d: %d %s", k, st, body);
    }
    text = proc_read_file(o.log[0]);
    ASSERT_STR_CONTAINS(text, "reason=draining status=503");
    free(text);
    /* The stream location too: an upgrade to vb-b with forged headers and
     * a wrong signature, which vb-b logs with the client address. */
    int fd = tc_connect(o.ng_port);
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /media-stream/vb-b/0 HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n"
             "X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
             SPOOF);
    tc_send_str(fd, req);
    proc_wait_log(o.log[1], "route=stream reason=mismatch", o.vb[1],
                  proc_ms(10000), &text);
    free(text);
    close(fd);
    assert_no_spoof(&o);
    /* The held call's stream would still be served: a second signal ends
     * the wait. */
    kill(o.vb[0], SIGTERM);
    inst_stop(&o, 0);
    /* vb-b and vb-c hold the retried calls, whose streams never come
     * either: a second signal for them too. */
    for (int i = 1; i < NINST; i++) {
        kill(o.vb[i], SIGTERM);
        proc_wait_log(o.log[i], "msg=\"signal received: draining\"", o.vb[i],
                      proc_ms(10000), &text);
        free(text);
        inst_stop(&o, i);
    }
    nginx_stop(&o);
    rig_stop(&o.r);
}

/* Draining with a live call: the public listener stays open for it, so
 * when the call ends its <Connect action> (stream-ended) is answered by
 * the instance that knows how the call ended; anything else gets 503 +
 * Retry-After + Connection: close meanwhile. Then the listener closes. */
TEST_T(a_live_calls_stream_ended_request_during_the_drain_is_answered_here, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 8 sine 300 vol 0.3");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    /* The server ends the call after 3 s, so Twilio (vb-sim) requests the
     * action, well inside the drain. */
    rig_vb(&r,
           (const char *const[]){"--max-call-duration", "3", "--drain-timeout",
                                 "30", NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *text;
    proc_wait_log(r.vb_log, "msg=\"stream started\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    kill(r.vb, SIGTERM);
    proc_wait_log(r.vb_log, "msg=\"drain grace over", r.vb, proc_ms(10000),
                  &text);
    free(text);
    /* Past the grace, the call still live: open, and a new call's
     * webhook (or anything else not the call's) is sent elsewhere. */
    char pub[64], body[4096];
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r.vb_port);
    ASSERT_EQ(post_webhook(r.vb_port, pub, "CAlate", "", body, sizeof(body)),
              503);
    tc_resp_t resp = {0};
    ASSERT_EQ(tc_request(r.vb_port, "GET /elsewhere HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              503);
    char v[64];
    ASSERT_TRUE(tc_header(resp.head, "Retry-After", v, sizeof(v)));
    ASSERT_STR_EQ(v, "1");
    ASSERT_TRUE(tc_header(resp.head, "Connection", v, sizeof(v)));
    ASSERT_STR_EQ(v, "close");
    tc_free_resp(&resp);
    char *out = sim_wait(&r, &s);
    assert_sim_ok(out, NULL);
    ASSERT_EQ(field(out, "action_requests"), 1);
    ASSERT_EQ(field(out, "action_status"), 200);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    ASSERT_STR_CONTAINS(vblog, "stream ended: answering the <Connect> action");
    ASSERT_STR_CONTAINS(vblog, "public listener closed");
    /* The action came before the listener closed. */
    ASSERT_TRUE(strstr(vblog, "<Connect> action") <
                strstr(vblog, "public listener closed"));
    ASSERT_NULL(strstr(out, "callback answered 503"));
    free(vblog);
    free(out);
    rig_stop(&r);
}

/* A media stream opened by hand on `path` of `port`, with `connected`
 * and a `start` for `call` carrying `token`; returns the socket. */
static int stream_at(int port, const char *path, const char *call,
                     const char *token)
{
    int fd = tc_connect(port);
    char req[512];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n",
             path);
    tc_send_str(fd, req);
    char head[4096];
    size_t got = 0;
    while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4) != 0) {
        ASSERT_LT(got, sizeof(head) - 1);
        ssize_t k = tc_recv_some(fd, head + got, 1, proc_ms(5000));
        ASSERT_GT(k, 0);
        got += (size_t)k;
    }
    head[got] = '\0';
    ASSERT_STR_CONTAINS(head, "101 Switching Protocols");
    ws_text(fd, "{\"event\":\"connected\",\"protocol\":\"Call\","
                "\"version\":\"1.0.0\"}");
    char start[1024];
    snprintf(start, sizeof(start),
             "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{"
             "\"accountSid\":\"AC0\",\"streamSid\":\"MZ%s\",\"callSid\":"
             "\"%s\",\"tracks\":[\"inbound\"],\"mediaFormat\":{"
             "\"encoding\":\"audio/x-mulaw\",\"sampleRate\":8000,"
             "\"channels\":1},\"customParameters\":{\"streamToken\":"
             "\"%s\"}},\"streamSid\":\"MZ%s\"}",
             call, call, token, call);
    ws_text(fd, start);
    return fd;
}

TEST_T(instances_with_different_lanes_take_each_others_streams, 120)
{
    static ops_t o;
    ops_start(&o, (const int[]){1, 4, 1});
    vb_twilio_sig_key_t key;
    ASSERT_EQ(vb_twilio_sig_key_init(&key, SECRET), 0);
    char token[VB_TWILIO_TOKEN_LEN + 1];
    int64_t exp = (int64_t)vb_clock_wall_s() + 300;
    /* vb-b (4 lanes) answered on its lane 3; the stream reaches vb-a (1
     * lane): served there, on lane 3 % 1 = 0, with a fresh session. */
    ASSERT_EQ(vb_twilio_sig_token_create(&key, "CAlanes1", 3, exp, token), 0);
    int fd = stream_at(o.port[0], "/media-stream/vb-b/3", "CAlanes1", token);
    char *text;
    proc_wait_log(o.log[0], "msg=\"stream started\"", o.vb[0], proc_ms(10000),
                  &text);
    ASSERT_STR_CONTAINS(text, "call=CAlanes1");
    free(text);
    tc_resp_t resp = {0};
    ASSERT_EQ(tc_request(o.admin[0], "GET /metrics HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    ASSERT_EQ(
        msum(resp.body, "vb_streams_rerouted_total", "reason=\"instance\""), 1);
    ASSERT_EQ(msum(resp.body, "vb_streams_rerouted_total", "reason=\"lane\""),
              1);
    tc_free_resp(&resp);
    close(fd);
    /* Within an instance's own lanes the token's lane still decides: lane
     * 3's token on vb-b's lane 2 is refused. */
    ASSERT_EQ(vb_twilio_sig_token_create(&key, "CAlanes2", 3, exp, token), 0);
    fd = stream_at(o.port[1], "/media-stream/vb-b/2", "CAlanes2", token);
    ASSERT_EQ(ws_close_code(fd, proc_ms(5000)), 1008);
    close(fd);
    for (int i = 0; i < NINST; i++) {
        if (i == 1) {
            /* It logged the refusal as a warning; stop it plainly. */
            kill(o.vb[i], SIGTERM);
            ASSERT_EQ(proc_reap(o.vb[i], proc_ms(30000)), 0);
            continue;
        }
        inst_stop(&o, i);
    }
    nginx_stop(&o);
    rig_stop(&o.r);
}
