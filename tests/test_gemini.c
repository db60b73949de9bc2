/* SPDX-License-Identifier: MIT */
/*
 * Tests for ai/gemini (the lane's gemini stage) against the strict fake
 * server build/vb-fake-gemini, over TLS with a CA made by the test. The
 * test owns the other ends of the stage's rings: it plays the ingress
 * (PREPARE) and the dsp stage (CALL_OPEN, AUDIO in; everything out), and
 * reads the fake's JSONL log of every client message.
 *
 * Caller audio is sequence-numbered: every 20 ms frame is 320 samples all
 * equal to the frame number, so the fake's log (first and last sample and
 * byte count of each audio message) shows exactly which frames reached
 * which connection, in which order.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ai/gemini.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/lane.h"
#include "core/log.h"
#include "core/msg.h"
#include "net/tcp.h"
#include "tests/test.h"

#define API_KEY "test-key-123"
#define PATH                                                     \
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService." \
    "BidiGenerateContent"
#define FRAME_BYTES 640

static char dir[256];

static void sh(const char *cmd)
{
    char full[4096];
    snprintf(full, sizeof(full), "cd '%s' && (%s) >>openssl.log 2>&1", dir,
             cmd);
    if (system(full) != 0)
        vb_test_fail(__FILE__, __LINE__, "command failed: %s", cmd);
}

static const char *file(const char *name)
{
    static char buf[8][512];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
    return buf[i];
}

static void make_certs(void)
{
    snprintf(dir, sizeof(dir), "%s", vb_test_tmpdir());
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
       "-nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=vb-test-ca");
    sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
       "-keyout srv.key -out srv.csr -subj /CN=localhost");
    sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext");
    sh("openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key "
       "-CAcreateserial -days 30 -extfile ext -out srv.crt");
}

/* ---- the fake server process ---- */

typedef struct fake {
    pid_t pid;
    int port;
    char log[512];
} fake_t;

static void fake_start(fake_t *f, bool tls, const char *const *extra)
{
    const char *build = getenv("VB_BUILD_DIR");
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/vb-fake-gemini", build ? build : "build");
    snprintf(f->log, sizeof(f->log), "%s", file("fake.jsonl"));
    const char *argv[40];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--api-key";
    argv[n++] = API_KEY;
    argv[n++] = "--log";
    argv[n++] = f->log;
    if (tls) {
        argv[n++] = "--cert";
        argv[n++] = file("srv.crt");
        argv[n++] = "--key";
        argv[n++] = file("srv.key");
    }
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 38; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    f->pid = fork();
    ASSERT_GE(f->pid, 0);
    if (f->pid == 0) {
        /* Dies with the test case, whatever way it ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(bin, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(p[1]);
    FILE *in = fdopen(p[0], "r");
    char line[256] = "";
    if (fgets(line, sizeof(line), in) == NULL)
        vb_test_fail(__FILE__, __LINE__, "%s did not start", bin);
    fclose(in);
    const char *colon = strrchr(line, ':');
    ASSERT_TRUE(strncmp(line, "listening on ", 13) == 0 && colon != NULL);
    f->port = atoi(colon + 1);
    ASSERT_GT(f->port, 0);
}

static void fake_stop(fake_t *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

/* All log lines of the fake as cJSON objects (array; caller deletes). */
static cJSON *fake_log(const fake_t *f)
{
    cJSON *arr = cJSON_CreateArray();
    FILE *in = fopen(f->log, "r");
    if (in == NULL)
        return arr;
    static char line[1 << 20];
    while (fgets(line, sizeof(line), in) != NULL) {
        cJSON *o = cJSON_Parse(line);
        if (o != NULL)
            cJSON_AddItemToArray(arr, o);
    }
    fclose(in);
    return arr;
}

static const char *str_at(const cJSON *o, const char *k)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static double num_at(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Count of log lines with "type" == type (and conn == conn if conn > 0). */
static int count_type(const cJSON *log, const char *type, int conn)
{
    int n = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, log)
    {
        const char *t = str_at(o, "type");
        if (t != NULL && strcmp(t, type) == 0 &&
            (conn <= 0 || (int)num_at(o, "conn") == conn))
            n++;
    }
    return n;
}

static const cJSON *find_type(const cJSON *log, const char *type, int nth)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, log)
    {
        const char *t = str_at(o, "type");
        if (t != NULL && strcmp(t, type) == 0 && nth-- == 0)
            return o;
    }
    return NULL;
}

/* Waits until the fake has logged `n` lines of `type`. */
static void wait_log(const fake_t *f, const char *type, int n, int ms)
{
    uint64_t end =
        vb_clock_now_ns() + (uint64_t)(ms * vb_test_slowdown()) * 1000000u;
    for (;;) {
        cJSON *log = fake_log(f);
        int c = count_type(log, type, 0);
        cJSON_Delete(log);
        if (c >= n)
            return;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__,
                         "fake logged %d \"%s\" lines, wanted %d", c, type, n);
        usleep(10000);
    }
}

/* ---- the stage ---- */

typedef struct env {
    fake_t fake;
    vb_chan_t in, out, prepare;
    vb_metrics_t *m;
    vb_gemini_stage_t *s;
    uint32_t out_cap;
    uv_loop_t bell_loop; /* the test plays dsp: its doorbell */
    uv_async_t bell;
    int rings;
    uint32_t seq;
    char logpath[512];
    vb_msg_t got[4096];
    int ngot;
} env_t;

static void env_options(env_t *e, vb_gemini_options_t *o, bool tls)
{
    static char url[256];
    snprintf(url, sizeof(url), "%s://localhost:%d%s", tls ? "wss" : "ws",
             e->fake.port, PATH);
    memset(o, 0, sizeof(*o));
    o->max_calls = 16;
    o->url = url;
    o->api_key = API_KEY;
    o->ca_file = file("ca.crt");
    vb_gemini_setup_defaults(&o->setup);
    o->setup.model = "gemini-3.8-live";
    o->setup.system_prompt = "You are a test.";
    o->reconnect_backoff_ms = 50;
    o->connect_timeout_ms = 5000;
}

static void on_bell(uv_async_t *a)
{
    ((env_t *)a->data)->rings++;
}

static void env_start(env_t *e, const vb_gemini_options_t *o)
{
    snprintf(e->logpath, sizeof(e->logpath), "%s", file("stage.log"));
    int fd = open(e->logpath, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
    ASSERT_GE(fd, 0);
    vb_log_set_fd(fd);
    e->m = vb_metrics_create();
    ASSERT_NOT_NULL(e->m);
    /* Channels as a lane has them (core/lane.h), spill included. */
    vb_chan_config_t in = {"dsp_to_gemini", 1024, VB_LANE_DSP_TO_GM_DATA, 0,
                           e->m};
    vb_chan_config_t out = {"gemini_to_dsp", e->out_cap ? e->out_cap : 4096,
                            VB_LANE_GM_TO_DSP_DATA, VB_LANE_SPILL_MAX, e->m};
    vb_chan_config_t prep = {"ingress_to_gemini", 64, VB_MSG_DATA_MAX, 0, e->m};
    ASSERT_EQ(vb_chan_init(&e->in, &in), 0);
    ASSERT_EQ(vb_chan_init(&e->out, &out), 0);
    ASSERT_EQ(vb_chan_init(&e->prepare, &prep), 0);
    vb_gemini_stage_config_t cfg = {
        .opt = *o,
        .prepare = &e->prepare,
        .in = &e->in,
        .out = &e->out,
        .metrics = e->m,
    };
    ASSERT_EQ(vb_gemini_stage_create(&e->s, &cfg), 0);
    uv_loop_init(&e->bell_loop);
    uv_async_init(&e->bell_loop, &e->bell, on_bell);
    e->bell.data = e;
    e->out.bell = &e->bell; /* the test consumes `out` without a stage */
    ASSERT_EQ(vb_gemini_stage_start(e->s), 0);
}

static void bell_close(env_t *e)
{
    uv_close((uv_handle_t *)&e->bell, NULL);
    uv_run(&e->bell_loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->bell_loop);
}

static void env_stop(env_t *e)
{
    vb_gemini_stage_stop(e->s);
    vb_gemini_stage_destroy(e->s);
    bell_close(e);
    fake_stop(&e->fake);
    vb_chan_destroy(&e->in);
    vb_chan_destroy(&e->out);
    vb_chan_destroy(&e->prepare);
    vb_metrics_destroy(e->m);
}

static const vb_call_id_t CALL = {.slot = 3, .gen = 7};

/* Pushes as a producer without a stage (each push rings the stage). */
static void push(env_t *e, vb_chan_t *c, uint8_t kind, const void *data,
                 size_t len)
{
    uint64_t end = vb_clock_now_ns() + 5000000000ull;
    uint32_t seq = e->seq++;
    while (vb_chan_send(c, kind, 0, CALL, seq, vb_clock_now_ns(), data, len) !=
           0) {
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "ring full");
        usleep(1000);
    }
}

static void push_prepare(env_t *e, const char *sid, int64_t expiry_s)
{
    vb_msg_prepare_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.call_sid, sizeof(p.call_sid), "%s", sid);
    p.expiry_s = expiry_s;
    push(e, &e->prepare, VB_MSG_PREPARE, &p, sizeof(p));
}

static void push_open(env_t *e, const char *sid)
{
    vb_msg_open_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.call_sid, sizeof(p.call_sid), "%s", sid);
    snprintf(p.stream_sid, sizeof(p.stream_sid), "MZ-%s", sid);
    push(e, &e->in, VB_MSG_CALL_OPEN, &p, sizeof(p));
}

/* One 20 ms frame: 320 samples equal to `value`. */
static void push_frame(env_t *e, int16_t value)
{
    int16_t pcm[FRAME_BYTES / 2];
    for (int i = 0; i < FRAME_BYTES / 2; i++)
        pcm[i] = value;
    push(e, &e->in, VB_MSG_AUDIO, pcm, sizeof(pcm));
}

/* A loud 20 ms frame of 300 Hz (speech for the fake's energy VAD). */
static void push_loud(env_t *e, int k)
{
    int16_t pcm[FRAME_BYTES / 2];
    for (int i = 0; i < FRAME_BYTES / 2; i++)
        pcm[i] = (int16_t)(9000 * ((((k * 320 + i) / 27) & 1) ? 1 : -1));
    push(e, &e->in, VB_MSG_AUDIO, pcm, sizeof(pcm));
}

/* Collects outbound messages until one of `kind` arrives (returns its
 * index in e->got) or the time runs out (fails). */
static int wait_out(env_t *e, int kind, int ms)
{
    uint64_t end =
        vb_clock_now_ns() + (uint64_t)(ms * vb_test_slowdown()) * 1000000u;
    for (;;) {
        vb_msg_t m;
        uv_run(&e->bell_loop, UV_RUN_NOWAIT);
        while (vb_ring_try_pop(&e->out.ring, &m) == 0) {
            ASSERT_LT(e->ngot, 4096);
            e->got[e->ngot++] = m;
            if (m.kind == kind)
                return e->ngot - 1;
        }
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "no %s on the outbound ring",
                         vb_msg_kind_name(kind));
        usleep(2000);
    }
}

static int64_t metric(env_t *e, vb_metric_type_t t, const char *name,
                      const char *label, const char *value)
{
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(e->m, t, name, "",
                             label ? VB_LABELS(label, value) : NULL, &id),
              0);
    return vb_metrics_value(e->m, id);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    ASSERT_NOT_NULL(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Waits until the stage's log holds `needle`; returns the whole log. */
static char *wait_text(env_t *e, const char *needle, int ms)
{
    uint64_t end =
        vb_clock_now_ns() + (uint64_t)(ms * vb_test_slowdown()) * 1000000u;
    for (;;) {
        char *text = read_all(e->logpath);
        if (strstr(text, needle) != NULL)
            return text;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "the log never said \"%s\"",
                         needle);
        usleep(10000);
    }
}

/* Waits until a metric series reads `want` (the stage records on its own
 * thread, not necessarily before the message the test waited for). */
static void wait_metric(env_t *e, vb_metric_type_t t, const char *name,
                        const char *label, const char *value, int64_t want,
                        int ms)
{
    uint64_t end =
        vb_clock_now_ns() + (uint64_t)(ms * vb_test_slowdown()) * 1000000u;
    for (;;) {
        int64_t v = metric(e, t, name, label, value);
        if (v == want)
            return;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "%s{%s=%s} is %lld, wanted %lld",
                         name, label ? label : "", value ? value : "",
                         (long long)v, (long long)want);
        usleep(10000);
    }
}

/* Frame number after the last one in the fake's last audio line (0: none). */
static int audio_next(const cJSON *log)
{
    int next = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, log)
    {
        if (strcmp(str_at(l, "type"), "audio") == 0)
            next = (int)num_at(l, "last") + 1;
    }
    return next;
}

/* Waits until the fake has logged audio up to frame n - 1. */
static void wait_audio(const fake_t *f, int n, int ms)
{
    uint64_t end =
        vb_clock_now_ns() + (uint64_t)(ms * vb_test_slowdown()) * 1000000u;
    for (;;) {
        cJSON *log = fake_log(f);
        int next = audio_next(log);
        cJSON_Delete(log);
        if (next >= n)
            return;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__,
                         "fake logged audio up to frame %d, wanted %d",
                         next - 1, n - 1);
        usleep(10000);
    }
}

static const cJSON *jpath(const cJSON *o, const char *p)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", p);
    const cJSON *cur = o;
    for (char *t = strtok(buf, "."); t && cur; t = strtok(NULL, "."))
        cur = cJSON_IsArray(cur) ? cJSON_GetArrayItem(cur, atoi(t))
                                 : cJSON_GetObjectItemCaseSensitive(cur, t);
    return cur;
}

/* ---- cases ---- */

TEST_T(setup_fields_audio_mime_and_echo_turn, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode", "echo", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.setup.voice = "Kore";
    o.setup.language = "de-DE";
    o.setup.temperature = 0.5;
    o.setup.vad_start = VB_GEMINI_SENS_HIGH;
    o.setup.vad_end = VB_GEMINI_SENS_LOW;
    o.setup.vad_silence_ms = 300;
    o.setup.vad_prefix_padding_ms = 40;
    env_start(e, &o);

    push_open(e, "CA-setup");
    wait_log(&e->fake, "setup", 1, 5000);
    /* Half a second of speech, then silence: an echo turn. */
    for (int k = 0; k < 25; k++) {
        push_loud(e, k);
        usleep(20000);
    }
    for (int k = 0; k < 30; k++) {
        push_frame(e, 0);
        usleep(20000);
    }
    int first_audio = wait_out(e, VB_MSG_AUDIO, 5000);
    int turn_end = wait_out(e, VB_MSG_TURN_END, 10000);
    ASSERT_LT(first_audio, turn_end);
    size_t model_bytes = 0;
    bool caller_text = false;
    for (int i = 0; i < e->ngot; i++) {
        const vb_msg_t *m = &e->got[i];
        ASSERT_TRUE(vb_call_id_eq(m->call, CALL));
        if (m->kind == VB_MSG_AUDIO) {
            ASSERT_LE(m->len, 1024);
            ASSERT_EQ(m->len % 2, 0);
            model_bytes += m->len;
        }
        /* Transcripts stay in the stage: no TEXT goes down the lane. */
        ASSERT_NE(m->kind, VB_MSG_TEXT);
    }
    caller_text = strstr(read_all(e->logpath), "role=caller") != NULL;
    /* 0.5 s of speech echoed at 24 kHz (the VAD trims a frame or two). */
    ASSERT_GT(model_bytes, 20000);
    ASSERT_TRUE(caller_text);
    ASSERT_GT(e->rings, 0); /* the dsp doorbell was rung */
    push(e, &e->in, VB_MSG_CALL_CLOSE, "stop", 4);
    wait_log(&e->fake, "close", 1, 5000);

    cJSON *log = fake_log(&e->fake);
    const cJSON *http = find_type(log, "http", 0);
    ASSERT_STR_EQ(str_at(http, "auth"), "header");
    const cJSON *setup = jpath(find_type(log, "setup", 0), "msg");
    ASSERT_NOT_NULL(setup);
    ASSERT_STR_EQ(cJSON_GetStringValue(jpath(setup, "model")),
                  "models/gemini-3.8-live");
    ASSERT_STR_EQ(cJSON_GetStringValue(
                      jpath(setup, "generationConfig.responseModalities.0")),
                  "AUDIO");
    ASSERT_STR_EQ(cJSON_GetStringValue(
                      jpath(setup, "generationConfig.speechConfig.voiceConfig."
                                   "prebuiltVoiceConfig.voiceName")),
                  "Kore");
    ASSERT_STR_EQ(cJSON_GetStringValue(jpath(
                      setup, "generationConfig.speechConfig.languageCode")),
                  "de-DE");
    ASSERT_NEAR(jpath(setup, "generationConfig.temperature")->valuedouble, 0.5,
                1e-9);
    ASSERT_STR_EQ(
        cJSON_GetStringValue(jpath(setup, "systemInstruction.parts.0.text")),
        "You are a test.");
    ASSERT_STR_EQ(cJSON_GetStringValue(
                      jpath(setup, "tools.0.functionDeclarations.0.name")),
                  "end_call");
    ASSERT_STR_EQ(
        cJSON_GetStringValue(jpath(setup, "realtimeInputConfig."
                                          "automaticActivityDetection."
                                          "startOfSpeechSensitivity")),
        "START_SENSITIVITY_HIGH");
    ASSERT_EQ(jpath(setup, "realtimeInputConfig.automaticActivityDetection."
                           "silenceDurationMs")
                  ->valueint,
              300);
    ASSERT_NOT_NULL(jpath(setup, "inputAudioTranscription"));
    ASSERT_NOT_NULL(jpath(setup, "outputAudioTranscription"));
    ASSERT_NOT_NULL(jpath(setup, "sessionResumption"));
    ASSERT_NOT_NULL(jpath(setup, "contextWindowCompression.slidingWindow"));
    /* Every caller audio message: PCM16 at 16 kHz, whole samples. */
    int naudio = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, log)
    {
        if (strcmp(str_at(l, "type"), "audio") != 0)
            continue;
        naudio++;
        ASSERT_STR_EQ(str_at(l, "mime"), "audio/pcm;rate=16000");
        ASSERT_STR_EQ(str_at(l, "field"), "audio");
        ASSERT_EQ((int)num_at(l, "bytes") % 2, 0);
    }
    ASSERT_GE(naudio, 50);
    ASSERT_EQ(count_type(log, "error", 0), 0);
    ASSERT_EQ(count_type(log, "setup", 0), 1);
    cJSON_Delete(log);

    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_sessions_total", "how",
                     "at_start"),
              1);
    vb_metric_t setup_id;
    ASSERT_EQ(vb_metrics_add(e->m, VB_METRIC_HISTOGRAM,
                             "vb_gemini_setup_seconds", "", NULL, &setup_id),
              0);
    vb_hist_t h;
    ASSERT_EQ(vb_metrics_hist(e->m, setup_id, &h), 0);
    ASSERT_EQ(vb_hist_count(&h), 1);
    ASSERT_GT(
        metric(e, VB_METRIC_COUNTER, "vb_gemini_tokens_total", "kind", "total"),
        0);
    env_stop(e);
    /* The key never reaches the log. */
    ASSERT_TRUE(strstr(read_all(e->logpath), API_KEY) == NULL);
    free(e);
}

TEST_T(preconnect_at_webhook_then_stream, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode", "script", "--script", "/dev/null", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.greeting = "Say hello.";
    env_start(e, &o);
    push_prepare(e, "CA-pre", 0);
    /* Setup completes before the stream exists. */
    wait_log(&e->fake, "sent", 2, 5000); /* setupComplete + handle */
    cJSON *log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "setup", 0), 1);
    ASSERT_EQ(count_type(log, "audio", 0), 0);
    ASSERT_EQ(count_type(log, "text", 0), 0); /* no greeting yet */
    cJSON_Delete(log);
    push_open(e, "CA-pre");
    for (int k = 0; k < 10; k++)
        push_frame(e, (int16_t)k);
    wait_log(&e->fake, "audio", 10, 5000);
    log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "setup", 0), 1); /* the same session */
    const cJSON *text = find_type(log, "text", 0);
    ASSERT_NOT_NULL(text);
    ASSERT_STR_EQ(str_at(text, "text"), "Say hello.");
    /* The greeting went before the caller's first frame. */
    const cJSON *l;
    bool seen_text = false;
    cJSON_ArrayForEach(l, log)
    {
        if (strcmp(str_at(l, "type"), "text") == 0)
            seen_text = true;
        if (strcmp(str_at(l, "type"), "audio") == 0)
            ASSERT_TRUE(seen_text);
    }
    cJSON_Delete(log);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_sessions_total", "how",
                     "preconnect"),
              1);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_sessions_total", "how",
                     "at_start"),
              0);
    env_stop(e);
    free(e);
}

TEST_T(audio_before_setup_complete_is_buffered_in_order, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode",    "script",           "--script",
                           "/dev/null", "--setup-delay-ms", "600",
                           NULL};
    fake_start(&e->fake, false, extra); /* plain ws:// this time */
    vb_gemini_options_t o;
    env_options(e, &o, false);
    env_start(e, &o);
    push_open(e, "CA-buf");
    for (int k = 0; k < 40; k++) {
        push_frame(e, (int16_t)k);
        usleep(5000);
    }
    wait_audio(&e->fake, 40, 5000);
    cJSON *log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "error", 0), 0);
    int next = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, log)
    {
        if (strcmp(str_at(l, "type"), "audio") != 0)
            continue;
        int first = (int)num_at(l, "first"), last = (int)num_at(l, "last");
        ASSERT_EQ(first, next);
        ASSERT_EQ((int)num_at(l, "bytes"), (last - first + 1) * FRAME_BYTES);
        next = last + 1;
    }
    ASSERT_EQ(next, 40);
    cJSON_Delete(log);
    env_stop(e);
    free(e);
}

TEST_T(barge_in_interrupted_becomes_clear, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    /* A long tone answers the greeting; the caller talks over it. */
    const char *extra[] = {"--mode", "tone", "--tone-ms", "4000", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.greeting = "Hi.";
    env_start(e, &o);
    push_open(e, "CA-barge");
    wait_out(e, VB_MSG_AUDIO, 5000);
    for (int k = 0; k < 10; k++) {
        push_loud(e, k);
        usleep(20000);
    }
    int clear = wait_out(e, VB_MSG_CLEAR, 5000);
    int turn = wait_out(e, VB_MSG_TURN_END, 5000);
    ASSERT_LT(clear, turn);
    /* No model audio of the interrupted turn after the clear. */
    for (int i = clear + 1; i < turn; i++)
        ASSERT_NE(e->got[i].kind, VB_MSG_AUDIO);
    cJSON *log = fake_log(&e->fake);
    bool interrupted = false;
    const cJSON *l;
    cJSON_ArrayForEach(l, log)
    {
        const char *w = str_at(l, "what");
        if (w != NULL && strcmp(w, "interrupted") == 0)
            interrupted = true;
    }
    ASSERT_TRUE(interrupted);
    cJSON_Delete(log);
    env_stop(e);
    free(e);
}

/* goAway mid-stream: the fake's connections live 1.2 s and announce their
 * end 0.6 s before it; the stage resumes each time on a new connection
 * with the latest handle. Every caller frame reaches the fake exactly once
 * and in order, across all connections. */
TEST_T(goaway_resume_loses_and_duplicates_nothing, 90)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode",           "script",       "--script",
                           "/dev/null",        "--lifetime-s", "2",
                           "--goaway-lead-ms", "1000",         NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    env_start(e, &o);
    push_open(e, "CA-goaway");
    int frames = 225; /* 4.5 s */
    for (int k = 0; k < frames; k++) {
        push_frame(e, (int16_t)k);
        usleep(20000);
    }
    /* Let the last frames arrive. */
    uint64_t end = vb_clock_now_ns() + 5000000000ull;
    int next = 0, conns = 0, resumed = 0;
    for (;;) {
        cJSON *log = fake_log(&e->fake);
        next = 0;
        int last_conn = 0;
        conns = count_type(log, "setup", 0);
        resumed = 0;
        const cJSON *l;
        cJSON_ArrayForEach(l, log)
        {
            const char *t = str_at(l, "type");
            if (strcmp(t, "setup") == 0) {
                if (cJSON_IsTrue(cJSON_GetObjectItem(l, "resumed"))) {
                    resumed++;
                    ASSERT_STR_CONTAINS(cJSON_GetStringValue(jpath(
                                            l, "msg.sessionResumption.handle")),
                                        "fake-1-");
                }
                ASSERT_EQ(num_at(l, "session"), 1);
            }
            if (strcmp(t, "error") == 0)
                vb_test_fail(__FILE__, __LINE__, "fake error: %s",
                             str_at(l, "why"));
            if (strcmp(t, "audio") != 0)
                continue;
            int first = (int)num_at(l, "first");
            int last = (int)num_at(l, "last");
            if (first != next)
                vb_test_fail(__FILE__, __LINE__,
                             "frame %d follows %d (conn %d after %d)", first,
                             next - 1, (int)num_at(l, "conn"), last_conn);
            ASSERT_EQ((int)num_at(l, "bytes"),
                      (last - first + 1) * FRAME_BYTES);
            last_conn = (int)num_at(l, "conn");
            next = last + 1;
        }
        cJSON_Delete(log);
        if (next == frames || vb_clock_now_ns() > end)
            break;
        usleep(50000);
    }
    ASSERT_EQ(next, frames);
    /* The goAways go on meanwhile: a reconnect counted may not have sent
     * its setup yet. Wait until the fake's log has caught up. */
    int64_t reconnects = 0;
    for (uint64_t dl = vb_clock_now_ns() + 5000000000ull;;) {
        reconnects = metric(e, VB_METRIC_COUNTER, "vb_gemini_reconnects_total",
                            "reason", "goaway");
        cJSON *log = fake_log(&e->fake);
        conns = count_type(log, "setup", 0);
        resumed = 0;
        const cJSON *l;
        cJSON_ArrayForEach(l, log)
        {
            if (strcmp(str_at(l, "type"), "setup") == 0 &&
                cJSON_IsTrue(cJSON_GetObjectItem(l, "resumed")))
                resumed++;
        }
        cJSON_Delete(log);
        if (reconnects == conns - 1 || vb_clock_now_ns() > dl)
            break;
        usleep(20000);
    }
    ASSERT_GE(conns, 3);
    ASSERT_EQ(resumed, conns - 1);
    ASSERT_EQ(reconnects, conns - 1);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_dropped_total", "reason",
                     "prebuffer_overflow"),
              0);
    env_stop(e);
    free(e);
}

TEST_T(unexpected_1011_reconnects_with_handle, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *script = file("s1011.jsonl");
    FILE *f = fopen(script, "w");
    fprintf(f, "{\"at_ms\":400,\"conn\":1,\"type\":\"close\",\"code\":1011,"
               "\"reason\":\"Internal error occurred.\"}\n");
    fclose(f);
    const char *extra[] = {"--script", script, NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    env_start(e, &o);
    push_open(e, "CA-1011");
    for (int k = 0; k < 60; k++) {
        push_frame(e, (int16_t)k);
        usleep(20000);
    }
    wait_log(&e->fake, "setup", 2, 5000);
    wait_audio(&e->fake, 60, 5000);
    cJSON *log = fake_log(&e->fake);
    const cJSON *s2 = find_type(log, "setup", 1);
    ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(s2, "resumed")));
    int next = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, log)
    {
        if (strcmp(str_at(l, "type"), "audio") != 0)
            continue;
        /* Frames in flight when the server dropped the connection are
         * lost with it; after that the sequence continues in order. */
        int first = (int)num_at(l, "first");
        ASSERT_GE(first, next);
        next = (int)num_at(l, "last") + 1;
    }
    ASSERT_EQ(next, 60);
    cJSON_Delete(log);
    ASSERT_EQ(
        metric(e, VB_METRIC_COUNTER, "vb_gemini_closes_total", "code", "1011"),
        1);
    ASSERT_STR_CONTAINS(read_all(e->logpath),
                        "gemini server error, reconnecting");
    env_stop(e);
    free(e);
}

TEST_T(model_not_found_1008_ends_the_call, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    fake_start(&e->fake, true, NULL);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.setup.model = "no-such-model";
    env_start(e, &o);
    push_open(e, "CA-1008");
    push_frame(e, 1);
    int h = wait_out(e, VB_MSG_HANGUP, 5000);
    ASSERT_EQ(e->got[h].flags, VB_MSG_HANGUP_FALLBACK);
    ASSERT_EQ(e->got[h].len, 0); /* no fallback text configured */
    /* The stage logs and counts around the HANGUP it pushed: poll. */
    wait_text(e, "failure=gemini_rejected", 5000);
    wait_text(e, "gemini model not found", 5000);
    const char *text = wait_text(e, "code=1008", 5000);
    ASSERT_STR_CONTAINS(text, "no-such-model");
    ASSERT_STR_CONTAINS(text, "--gemini-model");
    wait_metric(e, VB_METRIC_COUNTER, "vb_calls_failed_total", "reason",
                "gemini_rejected", 1, 5000);
    cJSON *log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "http", 0), 1); /* not retried */
    cJSON_Delete(log);
    ASSERT_EQ(
        metric(e, VB_METRIC_COUNTER, "vb_gemini_closes_total", "code", "1008"),
        1);
    env_stop(e);
    free(e);
}

TEST_T(bad_api_key_1007_ends_the_call, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    fake_start(&e->fake, true, NULL);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.api_key = "wrong-key";
    env_start(e, &o);
    push_open(e, "CA-1007");
    wait_out(e, VB_MSG_HANGUP, 5000);
    const char *text = read_all(e->logpath);
    ASSERT_STR_CONTAINS(text, "gemini rejected the session");
    ASSERT_STR_CONTAINS(text, "GEMINI_API_KEY");
    ASSERT_TRUE(strstr(text, "wrong-key") == NULL);
    cJSON *log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "http", 0), 1);
    ASSERT_STR_EQ(str_at(find_type(log, "http", 0), "auth"), "bad");
    cJSON_Delete(log);
    env_stop(e);
    free(e);
}

TEST_T(end_call_tool_answers_then_hangs_up, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *script = file("tool.jsonl");
    FILE *f = fopen(script, "w");
    fprintf(f, "{\"at_ms\":200,\"type\":\"outputTranscription\",\"text\":"
               "\"Goodbye!\"}\n"
               "{\"at_ms\":200,\"type\":\"audio\",\"ms\":300}\n"
               "{\"at_ms\":250,\"type\":\"toolCall\",\"name\":\"end_call\"}\n"
               "{\"at_ms\":400,\"type\":\"generationComplete\"}\n"
               "{\"at_ms\":450,\"type\":\"turnComplete\"}\n");
    fclose(f);
    const char *extra[] = {"--script", script, NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    env_start(e, &o);
    push_open(e, "CA-tool");
    int turn = wait_out(e, VB_MSG_TURN_END, 5000);
    int h = wait_out(e, VB_MSG_HANGUP, 5000);
    ASSERT_LT(turn, h);
    wait_log(&e->fake, "toolResponse", 1, 5000);
    cJSON *log = fake_log(&e->fake);
    const cJSON *tr = find_type(log, "toolResponse", 0);
    ASSERT_STR_EQ(cJSON_GetStringValue(jpath(tr, "msg.functionResponses.0.id")),
                  "function-call-1");
    ASSERT_STR_EQ(
        cJSON_GetStringValue(jpath(tr, "msg.functionResponses.0.name")),
        "end_call");
    cJSON_Delete(log);
    env_stop(e);
    free(e);
}

TEST_T(server_gone_ends_the_call_after_bounded_retries, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    fake_start(&e->fake, true, NULL);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.fallback_say = "Sorry, goodbye.";
    fake_stop(&e->fake); /* nobody listens on that port any more */
    env_start(e, &o);
    push_open(e, "CA-gone");
    int h = wait_out(e, VB_MSG_HANGUP, 10000);
    ASSERT_EQ(e->got[h].flags, VB_MSG_HANGUP_FALLBACK);
    char say[VB_MSG_DATA_MAX + 1];
    memcpy(say, e->got[h].data, e->got[h].len);
    say[e->got[h].len] = '\0';
    ASSERT_STR_EQ(say, "Sorry, goodbye.");
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_reconnects_total",
                     "reason", "failed"),
              3);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_calls_failed_total", "reason",
                     "gemini_retries_exhausted"),
              1);
    const char *text = read_all(e->logpath);
    ASSERT_STR_CONTAINS(text, "ending the call");
    ASSERT_STR_CONTAINS(text, "after 3 attempts");
    env_stop(e);
    free(e);
}

TEST_T(dtmf_is_told_to_the_model_as_text, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode", "script", "--script", "/dev/null", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.dtmf_text = "The caller pressed %s (100%).";
    env_start(e, &o);
    push_open(e, "CA-dtmf");
    wait_log(&e->fake, "sent", 2, 5000);
    push(e, &e->in, VB_MSG_DTMF, "5", 1);
    wait_log(&e->fake, "text", 1, 5000);
    cJSON *log = fake_log(&e->fake);
    ASSERT_STR_EQ(str_at(find_type(log, "text", 0), "text"),
                  "The caller pressed 5 (100%).");
    cJSON_Delete(log);
    env_stop(e);
    free(e);
}

/* A full outbound ring: model audio waits in order, the connection stops
 * being read, and everything arrives once the consumer catches up. */
TEST_T(full_outbound_ring_holds_audio_in_order, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode", "tone", "--tone-ms", "2000", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.greeting = "Hi.";
    e->out_cap = 8;
    env_start(e, &o);
    push_open(e, "CA-full");
    /* Do not read for a while: the generation (2 s of audio at twice real
     * time) finishes into a ring of 8 slots. */
    usleep(1500000);
    int turn = wait_out(e, VB_MSG_TURN_END, 10000);
    size_t bytes = 0;
    for (int i = 0; i < turn; i++) {
        ASSERT_EQ(e->got[i].seq, (uint32_t)i); /* nothing lost or reordered */
        ASSERT_EQ(e->got[i].kind, VB_MSG_AUDIO);
        bytes += e->got[i].len;
    }
    ASSERT_EQ(bytes, 2000 * 24 * 2);
    ASSERT_GT(metric(e, VB_METRIC_COUNTER, "vb_ring_full_total", "ring",
                     "gemini_to_dsp"),
              0);
    env_stop(e);
    free(e);
}

TEST_T(unclaimed_preconnect_expires, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode", "script", "--script", "/dev/null", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    /* Long enough for the TLS handshake and setup of a sanitized fake on a
     * busy machine (the session must be set up before it expires). */
    o.prepare_ttl_ms = (uint32_t)(1000 * vb_test_slowdown());
    env_start(e, &o);
    push_prepare(e, "CA-never", 0);
    wait_log(&e->fake, "setup", 1, 5000);
    wait_log(&e->fake, "close", 1, 5000);
    cJSON *log = fake_log(&e->fake);
    const cJSON *cl = find_type(log, "close", 0);
    ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(cl, "by_client")));
    ASSERT_EQ((int)num_at(cl, "code_received"), 1000);
    cJSON_Delete(log);
    ASSERT_STR_CONTAINS(read_all(e->logpath), "not claimed");
    wait_metric(e, VB_METRIC_GAUGE, "vb_gemini_sessions_active", NULL, NULL, 0,
                5000);
    env_stop(e);
    free(e);
}

TEST_T(untrusted_certificate_or_wrong_path_end_the_call, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    fake_start(&e->fake, true, NULL);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.ca_file = NULL; /* the system bundle does not know the test CA */
    env_start(e, &o);
    push_open(e, "CA-cert");
    wait_out(e, VB_MSG_HANGUP, 5000);
    const char *text = read_all(e->logpath);
    ASSERT_STR_CONTAINS(text, "tls certificate rejected");
    ASSERT_STR_CONTAINS(text, "reason=untrusted");
    ASSERT_STR_CONTAINS(text, "gemini connection refused");
    vb_gemini_stage_stop(e->s);
    vb_gemini_stage_destroy(e->s);
    bell_close(e);
    vb_chan_destroy(&e->in);
    vb_chan_destroy(&e->out);
    vb_chan_destroy(&e->prepare);
    vb_metrics_destroy(e->m);

    /* A wrong endpoint path: HTTP 404 on the upgrade, not retried. */
    char url[256];
    snprintf(url, sizeof(url), "wss://localhost:%d/ws/wrong", e->fake.port);
    env_options(e, &o, true);
    o.url = url;
    e->ngot = 0;
    env_start(e, &o);
    push_open(e, "CA-path");
    wait_out(e, VB_MSG_HANGUP, 5000);
    ASSERT_STR_CONTAINS(read_all(e->logpath), "http_status=404");
    cJSON *log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "http", 0), 1);
    cJSON_Delete(log);
    env_stop(e);
    free(e);
}

/* The first connection stops reading and writing after setupComplete:
 * its ping goes unanswered, it is dropped and a second one resumes with
 * the handle; the audio held meanwhile reaches the new one. */
TEST_T(stalled_connection_is_replaced_with_the_handle, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--fault", "stall", "--fault-conn", "1", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.ping_interval_ms = 200;
    o.pong_timeout_ms = 400;
    env_start(e, &o);
    push_open(e, "CA-stall");
    wait_log(&e->fake, "fault", 1, 5000);
    for (int k = 0; k < 50; k++) {
        push_frame(e, (int16_t)k);
        usleep(20000);
    }
    wait_log(&e->fake, "setup", 2, 5000);
    cJSON *log = fake_log(&e->fake);
    const cJSON *s2 = find_type(log, "setup", 1);
    ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(s2, "resumed")));
    cJSON_Delete(log);
    /* Audio sent after the hold started reaches the new connection. */
    uint64_t end = vb_clock_now_ns() + 5000000000ull;
    int on2 = 0;
    while (on2 == 0 && vb_clock_now_ns() < end) {
        log = fake_log(&e->fake);
        on2 = count_type(log, "audio", 2);
        cJSON_Delete(log);
        usleep(20000);
    }
    ASSERT_GT(on2, 0);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_reconnects_total",
                     "reason", "unresponsive"),
              1);
    const char *text = read_all(e->logpath);
    ASSERT_STR_CONTAINS(text, "why=\"ping unanswered\"");
    ASSERT_NULL(strstr(text, "ending the call"));
    env_stop(e);
    free(e);
}

/* A service that closes 1011 after every setupComplete: the budget does
 * not come back on setupComplete, so the call ends after reconnect_max + 1
 * connections. */
TEST_T(death_after_every_setup_exhausts_the_budget, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--fault", "die-after-setup", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    env_start(e, &o);
    push_open(e, "CA-die");
    int h = wait_out(e, VB_MSG_HANGUP, 10000);
    ASSERT_EQ(e->got[h].flags, VB_MSG_HANGUP_FALLBACK);
    /* The HANGUP follows the last attempt, so no fifth setup can come. */
    wait_log(&e->fake, "setup", 4, 5000);
    cJSON *log = fake_log(&e->fake);
    ASSERT_EQ(count_type(log, "setup", 0), 4);
    cJSON_Delete(log);
    wait_metric(e, VB_METRIC_COUNTER, "vb_calls_failed_total", "reason",
                "gemini_retries_exhausted", 1, 5000);
    env_stop(e);
    free(e);
}

/* Only unusable messages after setup: the connection is replaced. */
TEST_T(garbage_only_connection_is_replaced, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--fault", "garbage", "--fault-conn", "1", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    env_start(e, &o);
    push_open(e, "CA-junk");
    wait_log(&e->fake, "setup", 2, 5000);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_gemini_reconnects_total",
                     "reason", "invalid"),
              1);
    ASSERT_GE(metric(e, VB_METRIC_COUNTER, "vb_gemini_bad_messages_total", NULL,
                     NULL),
              (int64_t)VB_GEMINI_BAD_MSG_MAX);
    env_stop(e);
    free(e);
}

/* A connection that never completes setup: the call ends at the recovery
 * deadline, long before the connect timeout. */
TEST_T(no_ready_connection_within_recover_timeout_ends_the_call, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--setup-delay-ms", "30000", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.connect_timeout_ms = 20000;
    o.recover_timeout_ms = 800;
    env_start(e, &o);
    uint64_t t0 = vb_clock_now_ns();
    push_open(e, "CA-slow");
    int h = wait_out(e, VB_MSG_HANGUP, 10000);
    double s_taken = (double)(vb_clock_now_ns() - t0) / 1e9;
    printf("  ended %.2f s after the call opened (recover timeout 0.8 s)\n",
           s_taken);
    ASSERT_EQ(e->got[h].flags, VB_MSG_HANGUP_FALLBACK);
    ASSERT_EQ(metric(e, VB_METRIC_COUNTER, "vb_calls_failed_total", "reason",
                     "gemini_recovery_timeout"),
              1);
    env_stop(e);
    free(e);
}

/* A service that stops reading while no ping is due (pings are off here,
 * so only the send backlog can tell): once more than
 * VB_GEMINI_BACKLOG_STALL_BYTES stay unsent for the pong deadline, the
 * connection is replaced with the handle and the audio goes on there. */
TEST_T(send_backlog_not_draining_replaces_the_connection, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--fault", "stall", "--fault-conn", "1", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    o.ping_interval_ms = 600000;
    o.pong_timeout_ms = 400;
    env_start(e, &o);
    push_open(e, "CA-backlog");
    wait_log(&e->fake, "fault", 1, 5000);
    /* Faster than real time, until the kernel's buffers are full and the
     * backlog grows past the bound (a few MiB of JSON on loopback). */
    int k = 0;
    while (metric(e, VB_METRIC_COUNTER, "vb_gemini_reconnects_total", "reason",
                  "unresponsive") == 0) {
        if (k >= 40000)
            vb_test_fail(__FILE__, __LINE__,
                         "%d frames sent, the stalled connection was kept", k);
        push_frame(e, (int16_t)(k++ & 0x7fff));
        if (k % 64 == 0)
            usleep(1000);
    }
    printf("  replaced after %d frames (%.1f MiB of PCM)\n", k,
           k * FRAME_BYTES / 1048576.0);
    wait_log(&e->fake, "setup", 2, 5000);
    cJSON *log = fake_log(&e->fake);
    ASSERT_TRUE(cJSON_IsTrue(
        cJSON_GetObjectItem(find_type(log, "setup", 1), "resumed")));
    cJSON_Delete(log);
    uint64_t end = vb_clock_now_ns() + 5000000000ull;
    int on2 = 0;
    while (on2 == 0 && vb_clock_now_ns() < end) {
        push_frame(e, 1);
        log = fake_log(&e->fake);
        on2 = count_type(log, "audio", 2);
        cJSON_Delete(log);
        usleep(20000);
    }
    ASSERT_GT(on2, 0);
    const char *text = read_all(e->logpath);
    ASSERT_STR_CONTAINS(text, "why=\"send backlog not draining\"");
    ASSERT_NULL(strstr(text, "why=\"ping unanswered\""));
    ASSERT_NULL(strstr(text, "ending the call"));
    env_stop(e);
    free(e);
}

/* The connection to Gemini gets TCP keepalive (net/tcp.c): a service gone
 * without a FIN is found by the kernel too, not only by the pings. */
TEST_T(gemini_connection_has_tcp_keepalive, 60)
{
    make_certs();
    env_t *e = calloc(1, sizeof(*e));
    const char *extra[] = {"--mode", "echo", NULL};
    fake_start(&e->fake, true, extra);
    vb_gemini_options_t o;
    env_options(e, &o, true);
    env_start(e, &o);
    push_open(e, "CA-keepalive");
    wait_log(&e->fake, "setup", 1, 5000);
    /* The fake is another process: the only socket here whose peer is its
     * port is the stage's connection. */
    int fd = -1;
    for (int k = 3; k < 4096 && fd < 0; k++) {
        struct sockaddr_in6 a; /* localhost: either family */
        socklen_t sl = sizeof a;
        if (getpeername(k, (struct sockaddr *)&a, &sl) == 0 &&
            (a.sin6_family == AF_INET || a.sin6_family == AF_INET6) &&
            ntohs(a.sin6_port) == e->fake.port)
            fd = k;
    }
    ASSERT_GE(fd, 0);
    int v = 0;
    socklen_t ol = sizeof v;
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &ol), 0);
    ASSERT_EQ(v, 1);
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &ol), 0);
    ASSERT_EQ(v, VB_TCP_KEEPALIVE_IDLE_S);
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &ol), 0);
    ASSERT_EQ(v, VB_TCP_KEEPALIVE_INTVL_S);
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &ol), 0);
    ASSERT_EQ(v, VB_TCP_KEEPALIVE_CNT);
    env_stop(e);
    free(e);
}
