/* SPDX-License-Identifier: MIT */
/*
 * The deploy kit in docs/deploy/ checked with the real tools: the systemd
 * unit through `systemd-analyze verify` and `security`, the Dockerfile's
 * healthcheck against a running and a draining voxbridge and its runtime
 * packages against what the binary links, the Kubernetes manifests parsed
 * and their drain arithmetic checked, the sticky kit's Ingress paths
 * matched against the stream URLs a real voxbridge hands out, the alert
 * rules through `promtool check rules` and `promtool test rules`, and
 * every Grafana dashboard query run through a
 * real Prometheus scraping a real voxbridge with live calls (vb-sim load
 * against vb-fake-gemini). `make deps` installs every tool these cases
 * use; under CI (CI=true) a missing one fails its case, elsewhere the case
 * says so and passes. systemd-analyze alone may be missing anywhere:
 * containers have no systemd.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>

#include "net/form.h"
#include "tests/e2e.h"

#define DEPLOY "docs/deploy"

/* What a case cannot check because a tool is missing: a failure under CI
 * (CI=true, which .ci/run exports and `make test CI=true` passes on),
 * where `make deps` has installed it; a note elsewhere, and the caller
 * skips that part. */
static void unavailable(const char *what)
{
    const char *ci = getenv("CI");
    if (ci != NULL && strcmp(ci, "true") == 0)
        vb_test_fail(__FILE__, __LINE__, "%s, under CI=true: run make deps",
                     what);
    printf("  skipped: %s\n", what);
}

/* True when `tool` is on PATH. */
static bool have(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

/* Runs `cmd` through the shell with its output into the case's scratch
 * directory; returns the exit status and the output (malloc'd) in *out. */
static int run(const char *cmd, char **out)
{
    char path[400], full[4096];
    snprintf(path, sizeof(path), "%s/run.out", vb_test_tmpdir());
    snprintf(full, sizeof(full), "(%s) >'%s' 2>&1", cmd, path);
    int st = system(full);
    *out = proc_read_file(path);
    if (*out == NULL)
        *out = strdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *slurp(const char *path)
{
    char *text = proc_read_file(path);
    if (text == NULL)
        vb_test_fail(__FILE__, __LINE__,
                     "cannot read %s (run from the repo root)", path);
    return text;
}

/* Every `--flag` in `text` (a unit's ExecStart, a container's args) must
 * be one voxbridge --help lists. */
static void assert_known_flags(const char *what, const char *text)
{
    char bin[400], *help;
    snprintf(bin, sizeof(bin), "%s/voxbridge --help", proc_build_dir());
    ASSERT_EQ(run(bin, &help), 0);
    int n = 0;
    for (const char *p = strstr(text, "--"); p != NULL;
         p = strstr(p + 2, "--")) {
        size_t len = 2;
        while (isalnum((unsigned char)p[len]) || p[len] == '-')
            len++;
        if (len == 2)
            continue;
        char want[80];
        snprintf(want, sizeof(want), "  %.*s ", (int)len, p);
        if (strstr(help, want) == NULL)
            vb_test_fail(__FILE__, __LINE__, "%s: voxbridge has no %.*s", what,
                         (int)len, p);
        n++;
    }
    ASSERT_GT(n, 0);
    free(help);
}

/* The integer after `key` in `text` (e.g. "--drain-timeout "); fails when
 * absent. */
static long number_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (p == NULL)
        vb_test_fail(__FILE__, __LINE__, "no \"%s\"", key);
    return strtol(p + strlen(key), NULL, 10);
}

/* ---- systemd ---- */

TEST_T(systemd_unit_passes_systemd_analyze, 60)
{
    char *unit = slurp(DEPLOY "/voxbridge.service");
    /* What the brief of a hardened unit asks for, line by line. */
    static const char *const want[] = {
        "\nDynamicUser=yes\n",
        "\nProtectSystem=strict\n",
        "\nProtectHome=yes\n",
        "\nNoNewPrivileges=yes\n",
        "\nPrivateTmp=yes\n",
        "\nCapabilityBoundingSet=\n",
        "\nRestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
        "\nSystemCallFilter=@system-service\n",
        "\nLimitNOFILE=",
        "\nKillSignal=SIGTERM\n",
        "\nExecReload=/bin/kill -HUP $MAINPID\n",
        "\nEnvironmentFile=/etc/voxbridge/env\n",
        "\nRestart=on-failure\n",
        "\nExecStart=/usr/local/bin/voxbridge ",
        NULL};
    for (int i = 0; want[i] != NULL; i++)
        ASSERT_STR_CONTAINS(unit, want[i]);
    /* systemd's SIGKILL must come after the drain, with a margin. */
    long drain = number_after(unit, "--drain-timeout ");
    long stop = number_after(unit, "\nTimeoutStopSec=");
    ASSERT_GE(drain, 30); /* the default, or more */
    ASSERT_GE(stop, drain + 10);
    /* ExecStart's logical line: up to a newline not escaped by '\\'. */
    const char *exec = strstr(unit, "\nExecStart=") + 1;
    const char *eol = exec;
    while ((eol = strchr(eol, '\n')) != NULL && eol[-1] == '\\')
        eol++;
    ASSERT_NOT_NULL(eol);
    char *line = strndup(exec, (size_t)(eol - exec));
    assert_known_flags("voxbridge.service", line);
    free(line);

    if (!have("systemd-analyze")) {
        printf("  skipped: systemd-analyze not installed (package systemd); "
               "the unit's contents were checked\n");
        free(unit);
        return;
    }
    /* verify wants ExecStart to exist: point a copy at the real build. */
    char real[PATH_MAX], bin[400];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    ASSERT_NOT_NULL(realpath(bin, real));
    char path[400];
    snprintf(path, sizeof(path), "%s/voxbridge.service", vb_test_tmpdir());
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    const char *at = strstr(unit, "/usr/local/bin/voxbridge ");
    fprintf(f, "%.*s%s%s", (int)(at - unit), unit, real,
            at + strlen("/usr/local/bin/voxbridge"));
    fclose(f);
    ASSERT_TRUE(strstr(at + 1, "/usr/local/bin/voxbridge") == NULL);

    /* verify exits 0 on unknown keys and bad values too, and only says
     * so: any line about the unit is a failure. */
    char cmd[1024], *out;
    snprintf(cmd, sizeof(cmd), "systemd-analyze verify '%s'", path);
    int rc = run(cmd, &out);
    if (rc != 0 || strstr(out, "voxbridge.service") != NULL ||
        strstr(out, path) != NULL)
        vb_test_fail(__FILE__, __LINE__, "systemd-analyze verify (%d):\n%s", rc,
                     out);
    free(out);
    /* The exposure score, 0 (locked down) to 10: at most 2.0 ("OK"). */
    snprintf(cmd, sizeof(cmd),
             "systemd-analyze security --offline=true --threshold=20 '%s'",
             path);
    rc = run(cmd, &out);
    if (rc != 0)
        vb_test_fail(__FILE__, __LINE__, "systemd-analyze security (%d):\n%s",
                     rc, out);
    ASSERT_STR_CONTAINS(out, "Overall exposure level for voxbridge.service");
    printf("  %s\n", strstr(out, "Overall exposure level"));
    free(out);
    free(unit);
}

/* ---- Docker ---- */

/* The HEALTHCHECK's CMD of the Dockerfile as an argv (JSON form). */
static cJSON *healthcheck_argv(const char *dockerfile)
{
    const char *h = strstr(dockerfile, "\nHEALTHCHECK ");
    ASSERT_NOT_NULL(h);
    const char *cmd = strstr(h, "CMD [");
    ASSERT_NOT_NULL(cmd);
    cmd += 4;
    const char *end = strstr(cmd, "]\n");
    ASSERT_NOT_NULL(end);
    char *json = strndup(cmd, (size_t)(end - cmd) + 1);
    cJSON *argv = cJSON_Parse(json);
    if (argv == NULL || !cJSON_IsArray(argv))
        vb_test_fail(__FILE__, __LINE__, "HEALTHCHECK CMD is not JSON: %s",
                     json);
    free(json);
    return argv;
}

/* Runs the healthcheck against loopback `port` instead of the image's
 * admin port 9090; returns its exit status. */
static int run_healthcheck(const cJSON *argv, int port)
{
    const char *args[8];
    static char bufs[8][2048];
    int n = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, argv)
    {
        ASSERT_LT(n, 7);
        const char *s = cJSON_GetStringValue(a);
        ASSERT_NOT_NULL(s);
        const char *p = strstr(s, "/dev/tcp/127.0.0.1/9090");
        if (p != NULL)
            snprintf(bufs[n], sizeof(bufs[n]), "%.*s/dev/tcp/127.0.0.1/%d%s",
                     (int)(p - s), s, port,
                     p + strlen("/dev/tcp/127.0.0.1/9090"));
        else
            snprintf(bufs[n], sizeof(bufs[n]), "%s", s);
        args[n] = bufs[n];
        n++;
    }
    args[n] = NULL;
    ASSERT_GT(n, 0);
    /* The image runs it with bash from PATH. */
    char path[64];
    snprintf(path, sizeof(path), "/bin/%s", args[0]);
    args[0] = path;
    char log[400];
    snprintf(log, sizeof(log), "%s/healthcheck.out", vb_test_tmpdir());
    return proc_reap(proc_spawn(args, NULL, log), proc_ms(10000));
}

TEST_T(dockerfile_healthcheck_and_runtime_packages, 60)
{
    char *df = slurp(DEPLOY "/Dockerfile");
    ASSERT_STR_CONTAINS(df, "\nFROM debian:12 AS build\n");
    ASSERT_STR_CONTAINS(df, "make deps");
    ASSERT_STR_CONTAINS(df, "\nUSER 10001:10001\n");
    const char *runtime = strstr(df, "\nFROM debian:12-slim\n");
    ASSERT_NOT_NULL(runtime);

    /* The healthcheck asks the image's admin listener, which stays open
     * through a drain (the public one closes once no call there needs it). */
    ASSERT_STR_CONTAINS(df, "VOXBRIDGE_METRICS_LISTEN=0.0.0.0:9090\n");
    const char *hc = strstr(df, "\nHEALTHCHECK ");
    ASSERT_NOT_NULL(hc);
    ASSERT_STR_CONTAINS(hc, "/dev/tcp/127.0.0.1/9090 ");

    /* It passes against a live voxbridge, still passes while a drain goes
     * on with a call live, and fails once the process is gone. */
    cJSON *argv = healthcheck_argv(df);
    char bin[400];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    rig_t r;
    rig_init(&r);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, NULL, NULL);
    ASSERT_EQ(run_healthcheck(argv, r.vb_admin_port), 0);
    char sim_bin[400], hook[128], sim_out[400];
    snprintf(sim_bin, sizeof(sim_bin), "%s/vb-sim", proc_build_dir());
    snprintf(hook, sizeof(hook), "http://127.0.0.1:%d/webhook/voice",
             r.vb_port);
    snprintf(sim_out, sizeof(sim_out), "%s/sim.out", r.dir);
    const char *sargv[] = {sim_bin,        "load", "--webhook", hook,
                           "--auth-token", TOKEN,  "--calls",   "1",
                           "--duration",   "6",    NULL};
    pid_t sim = proc_spawn(sargv, NULL, sim_out);
    double end = tc_now_ms() + proc_ms(15000);
    for (;;) {
        char *m = metrics(&r);
        double active = msum(m, "vb_calls_active", NULL);
        free(m);
        if (active >= 1)
            break;
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "the call never started:\n%s",
                         proc_read_file(sim_out));
        usleep(100000);
    }
    kill(r.vb, SIGTERM);
    char *seen;
    proc_wait_log(r.vb_log, "msg=\"drain grace over", r.vb, proc_ms(10000),
                  &seen);
    free(seen);
    /* Draining, the call live: the public side turns new calls away
     * (/readyz 503), the healthcheck on the admin listener passes. */
    tc_resp_t resp = {0};
    ASSERT_EQ(tc_request(r.vb_port, "GET /readyz HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              503);
    free(resp.body);
    ASSERT_EQ(run_healthcheck(argv, r.vb_admin_port), 0);
    int st = proc_reap(sim, proc_ms(30000));
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__,
                     "the call did not survive the "
                     "drain (%d):\n%s",
                     st, proc_read_file(sim_out));
    free(rig_vb_stop(&r));
    ASSERT_NE(run_healthcheck(argv, r.vb_admin_port), 0);
    rig_stop(&r);
    cJSON_Delete(argv);

    /* Every package the binary's libraries come from is installed in the
     * runtime stage (the C library and compiler runtimes are in every
     * Debian image). */
    if (!have("dpkg") || !have("ldd")) {
        unavailable("the package check: no dpkg/ldd");
        free(df);
        return;
    }
    char cmd[1024], *pkgs;
    /* dpkg knows a library by the path its package installed, which with
     * merged /usr may differ from the one ldd prints by /usr or a link. */
    snprintf(cmd, sizeof(cmd),
             "for p in $(ldd '%s' | awk '$3 ~ /^\\// { print $3 }'); do "
             "for c in \"$p\" \"/usr$p\" \"${p#/usr}\" "
             "\"$(readlink -f \"$p\")\"; do dpkg -S \"$c\" 2>/dev/null && "
             "continue 2; done; echo \"unpackaged: $p\"; done | cut -d: -f1 "
             "| sort -u",
             bin);
    ASSERT_EQ(run(cmd, &pkgs), 0);
    int checked = 0;
    for (char *line = strtok(pkgs, "\n"); line != NULL;
         line = strtok(NULL, "\n")) {
        if (strcmp(line, "libc6") == 0 || strcmp(line, "libgcc-s1") == 0 ||
            strncmp(line, "libasan", 7) == 0 ||
            strncmp(line, "libubsan", 8) == 0 ||
            strncmp(line, "libtsan", 7) == 0 ||
            strncmp(line, "libstdc++", 9) == 0)
            continue;
        if (strncmp(line, "unpackaged", 10) == 0)
            vb_test_fail(__FILE__, __LINE__,
                         "%s links a library no package installed", bin);
        char want[128];
        snprintf(want, sizeof(want), " %s \\\n", line);
        if (strstr(runtime, want) == NULL)
            vb_test_fail(__FILE__, __LINE__,
                         "runtime stage lacks %s (from ldd %s)", line, bin);
        checked++;
    }
    ASSERT_GE(checked, 8);
    printf("  %d runtime packages match ldd\n", checked);
    free(pkgs);
    free(df);
}

/* ---- Kubernetes ---- */

/* Every YAML document of `files` as one JSON array, through python3-yaml;
 * NULL when it is not installed (and not under CI). */
static cJSON *yaml_docs(const char *files)
{
    char *out;
    if (run("python3 -c 'import yaml'", &out) != 0) {
        free(out);
        unavailable("python3-yaml not installed (YAML not parsed)");
        return NULL;
    }
    free(out);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "python3 -c 'import sys, json, yaml; json.dump([d for f in "
             "sys.argv[1:] for d in yaml.safe_load_all(open(f))], "
             "sys.stdout)' %s",
             files);
    if (run(cmd, &out) != 0)
        vb_test_fail(__FILE__, __LINE__, "YAML does not parse:\n%s", out);
    cJSON *docs = cJSON_Parse(out);
    ASSERT_NOT_NULL(docs);
    free(out);
    return docs;
}

static const cJSON *kind(const cJSON *docs, const char *k)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, docs)
    {
        const char *dk = cJSON_GetStringValue(cJSON_GetObjectItem(d, "kind"));
        if (dk != NULL && strcmp(dk, k) == 0)
            return d;
    }
    vb_test_fail(__FILE__, __LINE__, "no %s in docs/deploy/k8s", k);
}

/* Walks `path` ("spec.template.spec") from `o`; fails when absent. */
static const cJSON *at(const cJSON *o, const char *path)
{
    char key[64];
    const char *p = path;
    while (*p != '\0') {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof(key), "%.*s", (int)n, p);
        o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(key))
                             : cJSON_GetObjectItem(o, key);
        if (o == NULL)
            vb_test_fail(__FILE__, __LINE__, "manifest has no %s", path);
        p += n + (p[n] == '.');
    }
    return o;
}

static const char *str_at(const cJSON *o, const char *path)
{
    const char *s = cJSON_GetStringValue(at(o, path));
    if (s == NULL)
        vb_test_fail(__FILE__, __LINE__, "%s is not a string", path);
    return s;
}

TEST_T(k8s_manifests_parse_and_cover_the_drain, 60)
{
    cJSON *docs = yaml_docs(DEPLOY "/k8s/*.yaml");
    if (docs == NULL)
        return;
    const cJSON *dep = kind(docs, "Deployment");
    const cJSON *svc = kind(docs, "Service");
    const cJSON *pdb = kind(docs, "PodDisruptionBudget");
    const cJSON *hpa = kind(docs, "HorizontalPodAutoscaler");
    const char *app = "app.kubernetes.io/name";
    const char *name = str_at(dep, "metadata.name");
    const cJSON *labels = at(dep, "spec.template.metadata.labels");
    const char *label = cJSON_GetStringValue(cJSON_GetObjectItem(labels, app));
    ASSERT_NOT_NULL(label);
    /* One selector everywhere, matching the pods. */
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                      at(dep, "spec.selector.matchLabels"), app)),
                  label);
    ASSERT_STR_EQ(cJSON_GetStringValue(
                      cJSON_GetObjectItem(at(svc, "spec.selector"), app)),
                  label);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                      at(pdb, "spec.selector.matchLabels"), app)),
                  label);
    ASSERT_STR_EQ(str_at(hpa, "spec.scaleTargetRef.kind"), "Deployment");
    ASSERT_STR_EQ(str_at(hpa, "spec.scaleTargetRef.name"), name);
    ASSERT_STR_EQ(str_at(hpa, "spec.metrics.0.pods.metric.name"),
                  "vb_calls_active");

    const cJSON *pod = at(dep, "spec.template.spec");
    const cJSON *c = at(pod, "containers.0");
    ASSERT_STR_EQ(str_at(c, "livenessProbe.httpGet.path"), "/healthz");
    ASSERT_STR_EQ(str_at(c, "readinessProbe.httpGet.path"), "/readyz");
    /* Liveness on the admin listener, which stays open through a drain;
     * readiness on the public one. */
    ASSERT_STR_EQ(str_at(c, "livenessProbe.httpGet.port"), "admin");
    ASSERT_STR_EQ(str_at(c, "startupProbe.httpGet.port"), "admin");
    ASSERT_STR_EQ(str_at(c, "readinessProbe.httpGet.port"), "http");
    ASSERT_STR_EQ(str_at(c, "ports.1.name"), "admin");
    ASSERT_EQ(cJSON_GetNumberValue(at(c, "ports.1.containerPort")), 9090);
    ASSERT_STR_EQ(str_at(c, "ports.0.name"), "http");
    ASSERT_EQ(cJSON_GetNumberValue(at(c, "ports.0.containerPort")), 8080);
    ASSERT_STR_EQ(str_at(svc, "spec.ports.0.targetPort"), "http");
    ASSERT_NOT_NULL(cJSON_GetStringValue(at(c, "resources.requests.cpu")));
    ASSERT_NOT_NULL(cJSON_GetStringValue(at(c, "resources.requests.memory")));

    /* The container's flags exist, and the grace period covers preStop,
     * the drain and a margin. */
    char args[2048] = "";
    const cJSON *a;
    cJSON_ArrayForEach(a, at(c, "args"))
    {
        ASSERT_NOT_NULL(cJSON_GetStringValue(a));
        size_t len = strlen(args);
        snprintf(args + len, sizeof(args) - len, "%s ",
                 cJSON_GetStringValue(a));
    }
    for (char *eq = strchr(args, '='); eq != NULL; eq = strchr(eq, '='))
        *eq = ' ';
    assert_known_flags("deployment.yaml", args);
    long drain = number_after(args, "--drain-timeout ");
    const cJSON *pre = at(c, "lifecycle.preStop.exec.command");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetArrayItem(pre, 0)), "sleep");
    long sleep_s =
        strtol(cJSON_GetStringValue(cJSON_GetArrayItem(pre, 1)), NULL, 10);
    ASSERT_GT(sleep_s, 0);
    long grace =
        (long)cJSON_GetNumberValue(at(pod, "terminationGracePeriodSeconds"));
    ASSERT_GE(grace, sleep_s + drain + 5);
    ASSERT_TRUE(cJSON_IsTrue(at(pod, "securityContext.runAsNonRoot")));
    printf("  grace %lds >= preStop %lds + drain %lds + margin\n", grace,
           sleep_s, drain);

    /* kustomization.yaml lists files that exist. */
    const cJSON *kz = kind(docs, "Kustomization");
    const cJSON *r;
    cJSON_ArrayForEach(r, at(kz, "resources"))
    {
        char path[256];
        snprintf(path, sizeof(path), DEPLOY "/k8s/%s", cJSON_GetStringValue(r));
        ASSERT_EQ(access(path, R_OK), 0);
    }
    cJSON_Delete(docs);
}

/* ---- Kubernetes, instance-sticky streams ---- */

/* The document of `k` named `name`, or NULL. */
static const cJSON *named(const cJSON *docs, const char *k, const char *name)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, docs)
    {
        const char *dk = cJSON_GetStringValue(cJSON_GetObjectItem(d, "kind"));
        const char *dn = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetObjectItem(d, "metadata"), "name"));
        if (dk != NULL && dn != NULL && strcmp(dk, k) == 0 &&
            strcmp(dn, name) == 0)
            return d;
    }
    return NULL;
}

/* The length of Ingress path `p` when it matches request path `req` as
 * Kubernetes defines it (Exact: equal; Prefix: whole segments, a trailing
 * '/' ignored), else -1. */
static int path_match(const char *p, const char *type, const char *req)
{
    size_t n = strlen(p);
    if (strcmp(type, "Exact") == 0)
        return strcmp(p, req) == 0 ? (int)n : -1;
    ASSERT_STR_EQ(type, "Prefix");
    while (n > 0 && p[n - 1] == '/')
        n--;
    if (strncmp(p, req, n) != 0 || (req[n] != '\0' && req[n] != '/'))
        return -1;
    return (int)n;
}

/* Where an ingress controller sends `req` for `host`: the backend of the
 * longest matching path over every Ingress (Exact before Prefix at equal
 * length); its Ingress in *ing. Fails when nothing matches. */
static const cJSON *route(const cJSON *docs, const char *host, const char *req,
                          const cJSON **ing)
{
    const cJSON *best = NULL, *d, *rule, *p;
    int best_len = -1;
    cJSON_ArrayForEach(d, docs)
    {
        const char *dk = cJSON_GetStringValue(cJSON_GetObjectItem(d, "kind"));
        if (dk == NULL || strcmp(dk, "Ingress") != 0)
            continue;
        cJSON_ArrayForEach(rule, at(d, "spec.rules"))
        {
            if (strcmp(str_at(rule, "host"), host) != 0)
                continue;
            cJSON_ArrayForEach(p, at(rule, "http.paths"))
            {
                const char *type = str_at(p, "pathType");
                int len = path_match(str_at(p, "path"), type, req);
                if (strcmp(type, "Exact") == 0 && len >= 0)
                    len++; /* an Exact path wins a tie */
                if (len > best_len) {
                    best_len = len;
                    best = at(p, "backend.service");
                    *ing = d;
                }
            }
        }
    }
    if (best == NULL)
        vb_test_fail(__FILE__, __LINE__, "no Ingress path matches %s", req);
    return best;
}

/* The Service `req` is routed to, checked to exist with the port the
 * backend names pointing at the pod's container port `http`. */
static const cJSON *routed_service(const cJSON *docs, const char *host,
                                   const char *req, const cJSON **ing)
{
    const cJSON *be = route(docs, host, req, ing);
    const char *name = str_at(be, "name");
    const cJSON *svc = named(docs, "Service", name);
    if (svc == NULL)
        vb_test_fail(__FILE__, __LINE__, "%s goes to Service %s: not defined",
                     req, name);
    const char *port = str_at(be, "port.name");
    const cJSON *sp;
    bool found = false;
    cJSON_ArrayForEach(sp, at(svc, "spec.ports"))
    {
        if (strcmp(str_at(sp, "name"), port) == 0) {
            ASSERT_STR_EQ(str_at(sp, "targetPort"), "http");
            found = true;
        }
    }
    if (!found)
        vb_test_fail(__FILE__, __LINE__, "Service %s has no port %s", name,
                     port);
    return svc;
}

static const char *annotation(const cJSON *d, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(d, "metadata"), "annotations"),
        key));
}

#define NGINX_ANN "nginx.ingress.kubernetes.io/"

/* The route of a media stream: the Ingress with the hour-long timeouts,
 * to Service `want`. */
static const cJSON *assert_stream_route(const cJSON *docs, const char *host,
                                        const char *req, const char *want)
{
    const cJSON *ing;
    const cJSON *svc = routed_service(docs, host, req, &ing);
    ASSERT_STR_EQ(str_at(svc, "metadata.name"), want);
    const char *rt = annotation(ing, NGINX_ANN "proxy-read-timeout");
    ASSERT_NOT_NULL(rt);
    ASSERT_GE(atol(rt), 3600);
    ASSERT_STR_EQ(annotation(ing, NGINX_ANN "proxy-buffering"), "off");
    return svc;
}

/* The per-pod Service `svc` selects exactly pod `pod` of the StatefulSet,
 * and keeps it while it drains. */
static void assert_pod_service(const cJSON *svc, const char *pod,
                               const char *app)
{
    const cJSON *sel = at(svc, "spec.selector");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                      sel, "statefulset.kubernetes.io/pod-name")),
                  pod);
    ASSERT_STR_EQ(cJSON_GetStringValue(
                      cJSON_GetObjectItem(sel, "app.kubernetes.io/name")),
                  app);
    ASSERT_TRUE(cJSON_IsTrue(at(svc, "spec.publishNotReadyAddresses")));
}

/* A signed voice webhook for `sid` to voxbridge on `port`, public URL
 * `pub`; returns the status and the TwiML in `body`. */
static int post_webhook(int port, const char *pub, const char *sid, char *body,
                        size_t bsz)
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
             "POST /webhook/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
             sig, strlen(form), form);
    tc_resp_t resp = {0};
    int st = tc_request(port, req, &resp, proc_ms(10000));
    snprintf(body, bsz, "%s", resp.body ? resp.body : "");
    tc_free_resp(&resp);
    return st;
}

/* The path of the URL in attribute `attr` (`url="`) of `twiml`. */
static void twiml_path(const char *twiml, const char *attr, char *out, size_t n)
{
    const char *u = strstr(twiml, attr);
    if (u == NULL)
        vb_test_fail(__FILE__, __LINE__, "TwiML without %s: %s", attr, twiml);
    u += strlen(attr);
    const char *host = strstr(u, "://");
    ASSERT_NOT_NULL(host);
    const char *path = strchr(host + 3, '/');
    ASSERT_NOT_NULL(path);
    size_t len = strcspn(path, "\"?");
    ASSERT_LT(len, n);
    snprintf(out, n, "%.*s", (int)len, path);
}

/* docs/deploy/k8s-sticky with k8s/service.yaml and pdb.yaml, as the
 * StatefulSet's header says to apply them: a real voxbridge started with
 * the pod's flags answers webhooks whose stream URL and stream-ended
 * action the Ingress rules send to the Service of that one pod; every
 * ordinal the HPA may create has its Service and routes; webhooks and
 * older stream URLs go to any ready pod; no snippets, no ConfigMap. */
TEST_T(k8s_sticky_routes_each_stream_to_its_pod, 60)
{
    cJSON *docs = yaml_docs(DEPLOY "/k8s-sticky/*.yaml " DEPLOY
                                   "/k8s/service.yaml " DEPLOY "/k8s/pdb.yaml");
    if (docs == NULL)
        return;
    const char *app = "app.kubernetes.io/name";
    const cJSON *sts = kind(docs, "StatefulSet");
    const char *sts_name = str_at(sts, "metadata.name");
    const char *label = cJSON_GetStringValue(
        cJSON_GetObjectItem(at(sts, "spec.template.metadata.labels"), app));
    ASSERT_NOT_NULL(label);
    const cJSON *gov = named(docs, "Service", str_at(sts, "spec.serviceName"));
    ASSERT_NOT_NULL(gov);
    ASSERT_STR_EQ(str_at(gov, "spec.clusterIP"), "None");
    const cJSON *hooks_svc = named(docs, "Service", "voxbridge");
    ASSERT_NOT_NULL(hooks_svc);
    /* Webhooks only to ready pods: a draining one leaves this Service. */
    ASSERT_TRUE(cJSON_GetObjectItem(at(hooks_svc, "spec"),
                                    "publishNotReadyAddresses") == NULL);
    ASSERT_STR_EQ(
        cJSON_GetStringValue(cJSON_GetObjectItem(
            at(kind(docs, "PodDisruptionBudget"), "spec.selector.matchLabels"),
            app)),
        label);

    /* Snippets are refused by current ingress-nginx controllers, and a
     * ConfigMap of the controller's name would replace its own. */
    const cJSON *d;
    cJSON_ArrayForEach(d, docs)
    {
        if (strcmp(str_at(d, "kind"), "ConfigMap") == 0)
            vb_test_fail(__FILE__, __LINE__, "a ConfigMap in k8s-sticky");
        const cJSON *ann =
            cJSON_GetObjectItem(at(d, "metadata"), "annotations");
        const cJSON *a;
        cJSON_ArrayForEach(a, ann)
        {
            if (strstr(a->string, "snippet") != NULL)
                vb_test_fail(__FILE__, __LINE__, "%s has annotation %s",
                             str_at(d, "metadata.name"), a->string);
        }
    }

    /* The pod: known flags, the instance id is the pod's name, the drain
     * fits the grace period, liveness on the admin listener. */
    const cJSON *pod = at(sts, "spec.template.spec");
    const cJSON *c = at(pod, "containers.0");
    char args[2048] = "", instance_arg[128] = "", public_url[256] = "";
    const cJSON *a;
    cJSON_ArrayForEach(a, at(c, "args"))
    {
        const char *s = cJSON_GetStringValue(a);
        ASSERT_NOT_NULL(s);
        if (strncmp(s, "--instance-id=", 14) == 0)
            snprintf(instance_arg, sizeof(instance_arg), "%s", s + 14);
        if (strncmp(s, "--public-url=", 13) == 0)
            snprintf(public_url, sizeof(public_url), "%s", s + 13);
        size_t len = strlen(args);
        snprintf(args + len, sizeof(args) - len, "%s ", s);
    }
    for (char *eq = strchr(args, '='); eq != NULL; eq = strchr(eq, '='))
        *eq = ' ';
    assert_known_flags("statefulset.yaml", args);
    ASSERT_STR_EQ(instance_arg, "$(POD_NAME)");
    ASSERT_STR_EQ(str_at(c, "env.0.name"), "POD_NAME");
    ASSERT_STR_EQ(str_at(c, "env.0.valueFrom.fieldRef.fieldPath"),
                  "metadata.name");
    ASSERT_STR_CONTAINS(args, "--listen 0.0.0.0:8080 ");
    ASSERT_STR_CONTAINS(args, "--metrics-listen 0.0.0.0:9090 ");
    ASSERT_STR_EQ(str_at(c, "ports.0.name"), "http");
    ASSERT_EQ(cJSON_GetNumberValue(at(c, "ports.0.containerPort")), 8080);
    ASSERT_STR_EQ(str_at(c, "ports.1.name"), "admin");
    ASSERT_EQ(cJSON_GetNumberValue(at(c, "ports.1.containerPort")), 9090);
    ASSERT_STR_EQ(str_at(c, "livenessProbe.httpGet.port"), "admin");
    ASSERT_STR_EQ(str_at(c, "startupProbe.httpGet.port"), "admin");
    ASSERT_STR_EQ(str_at(c, "readinessProbe.httpGet.path"), "/readyz");
    long drain = number_after(args, "--drain-timeout ");
    long sleep_s =
        strtol(cJSON_GetStringValue(at(c, "lifecycle.preStop.exec.command.1")),
               NULL, 10);
    ASSERT_GE(
        (long)cJSON_GetNumberValue(at(pod, "terminationGracePeriodSeconds")),
        sleep_s + drain + 5);
    ASSERT_TRUE(strncmp(public_url, "https://", 8) == 0);
    const char *host = public_url + 8;
    const cJSON *ing;
    route(docs, host, "/", &ing);
    ASSERT_STR_EQ(str_at(ing, "spec.tls.0.hosts.0"), host);

    /* Every pod the HPA may make has its Service and both routes. */
    const cJSON *hpa = kind(docs, "HorizontalPodAutoscaler");
    ASSERT_STR_EQ(str_at(hpa, "spec.scaleTargetRef.kind"), "StatefulSet");
    ASSERT_STR_EQ(str_at(hpa, "spec.scaleTargetRef.name"), sts_name);
    int max = (int)cJSON_GetNumberValue(at(hpa, "spec.maxReplicas"));
    ASSERT_GE(max, (int)cJSON_GetNumberValue(at(sts, "spec.replicas")));
    for (int i = 0; i < max; i++) {
        char pod_name[96], req[256];
        snprintf(pod_name, sizeof(pod_name), "%s-%d", sts_name, i);
        snprintf(req, sizeof(req), "/media-stream/%s/1", pod_name);
        assert_pod_service(assert_stream_route(docs, host, req, pod_name),
                           pod_name, label);
        snprintf(req, sizeof(req), "/webhook/voice/stream-ended/%s", pod_name);
        assert_pod_service(routed_service(docs, host, req, &ing), pod_name,
                           label);
    }
    /* Webhooks to any ready pod, retried on a draining one's 503; older
     * or unknown stream URLs to any pod (a fresh Gemini session). */
    static const char *const any[] = {
        "/webhook/voice", "/webhook/status",
        "/webhook/voice/stream-ended/voxbridge-99", NULL};
    for (int i = 0; any[i] != NULL; i++) {
        ASSERT_TRUE(routed_service(docs, host, any[i], &ing) == hooks_svc);
        ASSERT_STR_CONTAINS(annotation(ing, NGINX_ANN "proxy-next-upstream"),
                            "http_503");
    }
    assert_stream_route(docs, host, "/media-stream/0", "voxbridge");
    assert_stream_route(docs, host, "/media-stream", "voxbridge");
    assert_stream_route(docs, host, "/media-stream/voxbridge-99/0",
                        "voxbridge");

    /* What a real voxbridge puts in the TwiML, started as pod 1 would be
     * ($(POD_NAME) expanded), goes to pod 1 on each lane. */
    char pod1[96], id_flag[128];
    snprintf(pod1, sizeof(pod1), "%s-1", sts_name);
    snprintf(id_flag, sizeof(id_flag), "--instance-id=%s", pod1);
    rig_t r;
    rig_init(&r);
    rig_fake(&r, NULL);
    /* Its two answered calls never stream: a 1 s drain ends them. */
    const char *vb_args[] = {id_flag,           "--lanes", "2",
                             "--drain-timeout", "1",       NULL};
    rig_vb(&r, vb_args, NULL);
    char pub[64], twiml[8192], path[512];
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r.vb_port);
    bool lane_seen[2] = {false, false};
    for (int k = 0; k < 2; k++) {
        char sid[40];
        snprintf(sid, sizeof(sid), "CAsticky%d", k);
        ASSERT_EQ(post_webhook(r.vb_port, pub, sid, twiml, sizeof(twiml)), 200);
        twiml_path(twiml, "<Stream url=\"", path, sizeof(path));
        char want[160];
        snprintf(want, sizeof(want), "/media-stream/%s/", pod1);
        ASSERT_TRUE(strncmp(path, want, strlen(want)) == 0);
        int lane = atoi(path + strlen(want));
        ASSERT_TRUE(lane == 0 || lane == 1);
        lane_seen[lane] = true;
        assert_pod_service(assert_stream_route(docs, host, path, pod1), pod1,
                           label);
        twiml_path(twiml, "<Connect action=\"", path, sizeof(path));
        assert_pod_service(routed_service(docs, host, path, &ing), pod1, label);
    }
    /* Two pending calls on two lanes: one each. */
    ASSERT_TRUE(lane_seen[0] && lane_seen[1]);
    printf("  %d pods routed; %s's stream and action URLs reach it\n", max,
           pod1);
    free(rig_vb_stop(&r));
    rig_stop(&r);
    cJSON_Delete(docs);
}

/* ---- Prometheus rules ---- */

TEST_T(alert_rules_pass_promtool, 60)
{
    if (!have("promtool")) {
        unavailable("promtool not installed (package prometheus)");
        return;
    }
    char *out;
    int rc = run("promtool check rules " DEPLOY "/prometheus/alerts.yml", &out);
    if (rc != 0 || strstr(out, "SUCCESS") == NULL)
        vb_test_fail(__FILE__, __LINE__, "promtool check rules (%d):\n%s", rc,
                     out);
    free(out);
    rc = run("promtool test rules " DEPLOY "/prometheus/alerts_test.yml", &out);
    if (rc != 0 || strstr(out, "SUCCESS") == NULL)
        vb_test_fail(__FILE__, __LINE__, "promtool test rules (%d):\n%s", rc,
                     out);
    free(out);

    /* Each alert has a case where it fires and one where it stays quiet. */
    cJSON *rules = yaml_docs(DEPLOY "/prometheus/alerts.yml");
    cJSON *tests = yaml_docs(DEPLOY "/prometheus/alerts_test.yml");
    if (rules == NULL || tests == NULL) {
        cJSON_Delete(rules);
        cJSON_Delete(tests);
        return;
    }
    int alerts = 0;
    const cJSON *g, *rule;
    cJSON_ArrayForEach(g, at(rules, "0.groups"))
    {
        cJSON_ArrayForEach(rule, at(g, "rules"))
        {
            const char *name = str_at(rule, "alert");
            int fires = 0, quiet = 0;
            const cJSON *t, *art;
            cJSON_ArrayForEach(t, at(tests, "0.tests"))
            {
                cJSON_ArrayForEach(art, at(t, "alert_rule_test"))
                {
                    if (strcmp(str_at(art, "alertname"), name) != 0)
                        continue;
                    if (cJSON_GetArraySize(at(art, "exp_alerts")) > 0)
                        fires++;
                    else
                        quiet++;
                }
            }
            if (fires == 0 || quiet == 0)
                vb_test_fail(__FILE__, __LINE__,
                             "%s: %d firing and %d quiet cases in "
                             "alerts_test.yml",
                             name, fires, quiet);
            alerts++;
        }
    }
    ASSERT_GE(alerts, 10);
    printf("  %d alerts, each with a firing and a quiet case\n", alerts);
    cJSON_Delete(rules);
    cJSON_Delete(tests);
}

/* ---- Grafana, against a real Prometheus ---- */

/* GET `path` from loopback `port` as HTTP/1.0 (so no chunking); returns
 * the status and the body (malloc'd) in *body. */
static int http_get(int port, const char *path, char **body)
{
    static char buf[1 << 21];
    int fd = tc_connect(port);
    char req[8192];
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n",
             path, port);
    tc_send_str(fd, req);
    bool closed;
    size_t n =
        tc_recv_until_close(fd, buf, sizeof(buf), proc_ms(10000), &closed);
    close(fd);
    buf[n] = '\0';
    const char *eoh = strstr(buf, "\r\n\r\n");
    *body = strdup(eoh != NULL ? eoh + 4 : "");
    return n > 12 ? atoi(buf + 9) : -1;
}

static void url_encode(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (; *s != '\0' && o + 4 < n; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, n - o, "%%%02X", ch);
    }
    out[o] = '\0';
}

/* A dashboard query as Prometheus gets it from Grafana: the instance
 * variable set to "All" and $__rate_interval to a minute (4 scrapes of a
 * 15 s interval; here 60 of the test's 1 s). */
static void grafana_expand(const char *expr, char *out, size_t n)
{
    size_t o = 0;
    while (*expr != '\0' && o + 8 < n) {
        if (strncmp(expr, "$__rate_interval", 16) == 0) {
            o += (size_t)snprintf(out + o, n - o, "1m");
            expr += 16;
        } else if (strncmp(expr, "$instance", 9) == 0) {
            o += (size_t)snprintf(out + o, n - o, ".*");
            expr += 9;
        } else {
            out[o++] = *expr++;
        }
    }
    out[o] = '\0';
    ASSERT_TRUE(strchr(out, '$') == NULL);
}

/* Runs `expr`; true when Prometheus answers success with at least one
 * series and at least one finite value. *why (static) says what was
 * wrong. */
static bool query_has_data(int port, const char *expr, const char **why)
{
    static char reason[4096];
    char enc[8192], path[8400];
    url_encode(expr, enc, sizeof(enc));
    snprintf(path, sizeof(path), "/api/v1/query?query=%s", enc);
    char *body;
    int st = http_get(port, path, &body);
    cJSON *j = cJSON_Parse(body);
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(j, "status"));
    const cJSON *result =
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "result");
    bool ok = false;
    if (st != 200 || status == NULL || strcmp(status, "success") != 0) {
        snprintf(reason, sizeof(reason), "HTTP %d: %.3000s", st, body);
        /* A bad query never gets better: fail at once. */
        if (st == 400)
            vb_test_fail(__FILE__, __LINE__, "query %s\n%s", expr, reason);
    } else if (cJSON_GetArraySize(result) == 0) {
        snprintf(reason, sizeof(reason), "empty result");
    } else {
        snprintf(reason, sizeof(reason), "no finite value: %.3000s", body);
        const cJSON *s;
        cJSON_ArrayForEach(s, result)
        {
            const char *v = cJSON_GetStringValue(
                cJSON_GetArrayItem(cJSON_GetObjectItem(s, "value"), 1));
            if (v != NULL && isfinite(strtod(v, NULL)))
                ok = true;
        }
    }
    cJSON_Delete(j);
    free(body);
    *why = reason;
    return ok;
}

/* Every vb_* metric name `text` mentions is exported by voxbridge. */
static void assert_metrics_exist(const char *what, const char *text,
                                 const char *exposition)
{
    for (const char *p = strstr(text, "vb_"); p != NULL;
         p = strstr(p + 1, "vb_")) {
        if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
            continue;
        size_t len = 0;
        while (isalnum((unsigned char)p[len]) || p[len] == '_')
            len++;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)len, p);
        char *sfx = strstr(name, "_bucket");
        if (sfx != NULL && sfx[7] == '\0')
            *sfx = '\0';
        char want[160];
        snprintf(want, sizeof(want), "# TYPE %s ", name);
        if (strstr(exposition, want) == NULL)
            vb_test_fail(__FILE__, __LINE__,
                         "%s uses %s, which voxbridge "
                         "does not export",
                         what, name);
    }
}

TEST_T(grafana_queries_return_data_from_a_live_voxbridge, 240)
{
    if (access("/usr/bin/prometheus", X_OK) != 0) {
        unavailable("/usr/bin/prometheus not installed (package "
                    "prometheus)");
        return;
    }
    char *text = slurp(DEPLOY "/grafana/voxbridge.json");
    cJSON *dash = cJSON_Parse(text);
    ASSERT_NOT_NULL(dash);
    char *rules_text = slurp(DEPLOY "/prometheus/alerts.yml");

    rig_t r;
    rig_init(&r);
    const char *fake_args[] = {"--mode", "echo", NULL};
    rig_fake(&r, fake_args);
    const char *vb_args[] = {"--lanes", "2", NULL};
    rig_vb(&r, vb_args, NULL);
    /* What operators look at first has a panel, and callers' wait an
     * alert. */
    static const char *const shown[] = {"vb_response_latency_seconds_bucket",
                                        "vb_call_duration_seconds_bucket",
                                        "vb_streams_rerouted_total",
                                        "vb_ready{",
                                        "vb_draining{",
                                        "vb_gemini_ready{",
                                        "process_cpu_seconds_total",
                                        "process_resident_memory_bytes",
                                        NULL};
    for (int i = 0; shown[i] != NULL; i++)
        ASSERT_STR_CONTAINS(text, shown[i]);
    ASSERT_STR_CONTAINS(rules_text, "vb_response_latency_seconds_bucket");
    char *m = metrics(&r);
    assert_metrics_exist("voxbridge.json", text, m);
    assert_metrics_exist("alerts.yml", rules_text, m);
    free(m);

    /* Prometheus: 1 s scrapes of the admin listener, the alert rules
     * loaded, storage in the scratch directory. */
    int pport = proc_free_port();
    char conf[400], data[400], plog[400], rules[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/prometheus.yml", r.dir);
    snprintf(data, sizeof(data), "%s/tsdb", r.dir);
    snprintf(plog, sizeof(plog), "%s/prometheus.log", r.dir);
    ASSERT_NOT_NULL(realpath(DEPLOY "/prometheus/alerts.yml", rules));
    FILE *f = fopen(conf, "w");
    ASSERT_NOT_NULL(f);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - %s\n"
            "scrape_configs:\n  - job_name: voxbridge\n    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n",
            rules, r.vb_admin_port);
    fclose(f);
    char a_conf[480], a_data[480], a_listen[64];
    snprintf(a_conf, sizeof(a_conf), "--config.file=%s", conf);
    snprintf(a_data, sizeof(a_data), "--storage.tsdb.path=%s", data);
    snprintf(a_listen, sizeof(a_listen), "--web.listen-address=127.0.0.1:%d",
             pport);
    const char *pargv[] = {"/usr/bin/prometheus", a_conf, a_data, a_listen,
                           "--log.level=warn",    NULL};
    pid_t prom = proc_spawn(pargv, NULL, plog);
    if (!proc_port_open(pport, proc_ms(30000)))
        vb_test_fail(__FILE__, __LINE__, "prometheus did not start:\n%s",
                     proc_read_file(plog));

    /* Scraping before the first call, so its webhook shows in rate(). */
    const char *why = NULL;
    double end = tc_now_ms() + proc_ms(30000);
    while (!query_has_data(pport, "up{job=\"voxbridge\"} == 1", &why)) {
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "prometheus never scraped: %s\n%s",
                         why, proc_read_file(plog));
        usleep(200000);
    }

    /* Four live calls: media both ways, barge-ins, for 20 s. */
    char sim_bin[400], hook[128], sim_out[400];
    snprintf(sim_bin, sizeof(sim_bin), "%s/vb-sim", proc_build_dir());
    snprintf(hook, sizeof(hook), "http://127.0.0.1:%d/webhook/voice",
             r.vb_port);
    snprintf(sim_out, sizeof(sim_out), "%s/sim.out", r.dir);
    const char *sargv[] = {
        sim_bin,  "load",    "--webhook", hook,         "--auth-token",
        TOKEN,    "--calls", "4",         "--duration", "20",
        "--ramp", "1",       NULL};
    pid_t sim = proc_spawn(sargv, NULL, sim_out);

    /* Prometheus has seen the calls. */
    end = tc_now_ms() + proc_ms(30000);
    while (!query_has_data(pport, "max_over_time(vb_calls_active[1m]) >= 1",
                           &why)) {
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__,
                         "prometheus never saw a live call: %s\n%s", why,
                         proc_read_file(r.vb_log));
        usleep(200000);
    }

    /* Every panel query returns data; rate() needs a few scrapes, so poll
     * the ones still without it until a deadline. */
    enum { MAXQ = 64 };
    char *exprs[MAXQ];
    bool done[MAXQ] = {false};
    int nq = 0;
    const cJSON *p, *t;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(dash, "panels"))
    {
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(p, "targets"))
        {
            const char *e =
                cJSON_GetStringValue(cJSON_GetObjectItem(t, "expr"));
            ASSERT_NOT_NULL(e);
            ASSERT_LT(nq, MAXQ);
            char buf[4096];
            grafana_expand(e, buf, sizeof(buf));
            exprs[nq++] = strdup(buf);
        }
    }
    ASSERT_GE(nq, 15);
    int left = nq;
    end = tc_now_ms() + proc_ms(60000);
    for (;;) {
        for (int i = 0; i < nq; i++)
            if (!done[i] && query_has_data(pport, exprs[i], &why)) {
                done[i] = true;
                left--;
            }
        if (left == 0)
            break;
        if (tc_now_ms() > end)
            for (int i = 0; i < nq; i++)
                if (!done[i] && !query_has_data(pport, exprs[i], &why))
                    vb_test_fail(__FILE__, __LINE__, "panel query %s: %s",
                                 exprs[i], why);
        usleep(500000);
    }
    printf("  %d panel queries returned data\n", nq);

    /* The instance variable's query: label_values(vb_calls_active,
     * instance). */
    char *body, want[64];
    ASSERT_EQ(http_get(pport,
                       "/api/v1/label/instance/values?match[]=vb_calls_active",
                       &body),
              200);
    snprintf(want, sizeof(want), "\"127.0.0.1:%d\"", r.vb_admin_port);
    ASSERT_STR_CONTAINS(body, want);
    free(body);

    /* The alert rules evaluate without error against real series. */
    end = tc_now_ms() + proc_ms(30000);
    for (;;) {
        ASSERT_EQ(http_get(pport, "/api/v1/rules", &body), 200);
        if (strstr(body, "\"health\":\"err\"") != NULL)
            vb_test_fail(__FILE__, __LINE__, "a rule failed:\n%s", body);
        bool all_ok = strstr(body, "\"health\":\"unknown\"") == NULL &&
                      strstr(body, "\"health\":\"ok\"") != NULL;
        free(body);
        if (all_ok)
            break;
        if (tc_now_ms() > end)
            vb_test_fail(__FILE__, __LINE__, "rules never evaluated");
        usleep(200000);
    }

    /* The calls were good ones, and nothing was lost. */
    int st = proc_reap(sim, proc_ms(90000));
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "vb-sim load exited %d:\n%s", st,
                     proc_read_file(sim_out));
    m = metrics(&r);
    assert_nothing_lost(m);
    ASSERT_GE(msum(m, "vb_calls_total", NULL), 4);
    free(m);

    kill(prom, SIGTERM);
    ASSERT_EQ(proc_reap(prom, proc_ms(20000)), 0);
    free(rig_vb_stop(&r));
    rig_stop(&r);
    for (int i = 0; i < nq; i++)
        free(exprs[i]);
    cJSON_Delete(dash);
    free(rules_text);
    free(text);
}
