/* SPDX-License-Identifier: MIT */
/*
 * Tests for the fake Gemini Live server itself (bench/fake_gemini): a raw
 * WebSocket client (net/ws over net/tcp) checks that it is as strict as
 * spec §9 asks — binary pretty-printed frames, both URL forms, every auth
 * way, setup first and once, known fields, model and modality, valid
 * realtime input, resumption handles — so that the stage tests running
 * against it prove something.
 */
#include <cjson/cJSON.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "core/err.h"
#include "net/tcp.h"
#include "net/ws.h"
#include "tests/test.h"

#define KEY "k-123"
#define WS_PATH                                                  \
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService." \
    "BidiGenerateContent"
#define SETUP_OK "{\"setup\":{\"model\":\"models/gemini-3.8-live\"}}"

typedef struct fake {
    pid_t pid;
    int port;
    char log[512];
} fake_t;

static void fake_start(fake_t *f)
{
    const char *build = getenv("VB_BUILD_DIR");
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/vb-fake-gemini", build ? build : "build");
    snprintf(f->log, sizeof(f->log), "%s/fake.jsonl", vb_test_tmpdir());
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    f->pid = fork();
    ASSERT_GE(f->pid, 0);
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--api-key", KEY, "--log",
              f->log, "--mode", "script", "--script", "/dev/null",
              (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    FILE *in = fdopen(p[0], "r");
    char line[256] = "";
    ASSERT_NOT_NULL(fgets(line, sizeof(line), in));
    fclose(in);
    ASSERT_TRUE(strncmp(line, "listening on 127.0.0.1:", 23) == 0);
    f->port = atoi(line + 23);
    ASSERT_GT(f->port, 0);
}

static void fake_stop(fake_t *f)
{
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
}

/* ---- a raw client ---- */

typedef struct wc {
    uv_loop_t loop;
    vb_ws_t *ws;
    bool open, closed;
    vb_ws_close_info_t info;
    int n;
    bool binary[16];
    char msg[16][8192];
} wc_t;

static void wc_message(vb_ws_t *ws, bool text, const uint8_t *d, size_t n,
                       void *ud)
{
    (void)ws;
    wc_t *c = ud;
    if (c->n < 16) {
        c->binary[c->n] = !text;
        size_t k = n < 8191 ? n : 8191;
        memcpy(c->msg[c->n], d, k);
        c->msg[c->n][k] = '\0';
        c->n++;
    }
}

static void wc_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    wc_t *c = ud;
    c->info = *info;
    c->closed = true;
    c->ws = NULL;
    vb_ws_destroy(ws);
}

static void wc_open(vb_ws_t *ws, void *ud)
{
    (void)ws;
    ((wc_t *)ud)->open = true;
}

static void run_until(wc_t *c, const bool *flag, int ms)
{
    uint64_t end = uv_now(&c->loop) + (uint64_t)(ms * vb_test_slowdown());
    while (!*flag && uv_now(&c->loop) < end) {
        uv_run(&c->loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(&c->loop);
    }
    if (!*flag)
        vb_test_fail(__FILE__, __LINE__, "timed out");
}

static void wc_connect(wc_t *c, int port, const char *target,
                       const char *const *headers)
{
    memset(c, 0, sizeof(*c));
    uv_loop_init(&c->loop);
    char url[512];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d%s", port, target);
    vb_transport_t *t = NULL;
    ASSERT_EQ(vb_tcp_connect(&c->loop, "127.0.0.1", (uint16_t)port, &t), 0);
    vb_ws_config_t cfg = {.role = VB_WS_CLIENT, .max_message = 1 << 20};
    vb_ws_callbacks_t cb = {
        .on_message = wc_message, .on_close = wc_close, .on_open = wc_open};
    ASSERT_EQ(vb_ws_connect(&c->loop, t, &cfg, &cb, c, url, headers, &c->ws),
              0);
}

static void wc_done(wc_t *c)
{
    vb_ws_destroy(c->ws);
    for (int i = 0; i < 20; i++)
        uv_run(&c->loop, UV_RUN_NOWAIT);
    uv_loop_close(&c->loop);
}

static void wc_send(wc_t *c, const char *json)
{
    ASSERT_EQ(vb_ws_send_text(c->ws, json, strlen(json)), 0);
}

static const char *const key_header[] = {"x-goog-api-key: " KEY, NULL};

static void wait_msgs(wc_t *c, int n, int ms)
{
    uint64_t end = uv_now(&c->loop) + (uint64_t)(ms * vb_test_slowdown());
    while (c->n < n && !c->closed && uv_now(&c->loop) < end) {
        uv_run(&c->loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(&c->loop);
    }
}

/* Opens a session that got its setupComplete. */
static void wc_ready(wc_t *c, int port, const char *setup)
{
    wc_connect(c, port, WS_PATH, key_header);
    run_until(c, &c->open, 5000);
    wc_send(c, setup);
    wait_msgs(c, 1, 5000);
    ASSERT_GE(c->n, 1);
    ASSERT_STR_CONTAINS(c->msg[0], "setupComplete");
}

/* Sends `setup` then (if not NULL) `msg` after setupComplete, and expects
 * the server to close with `code` and a reason containing `reason`. */
static void expect_close(int port, const char *setup, const char *msg, int code,
                         const char *reason)
{
    wc_t c;
    wc_connect(&c, port, WS_PATH, key_header);
    run_until(&c, &c.open, 5000);
    wc_send(&c, setup);
    if (msg != NULL) {
        wait_msgs(&c, 1, 5000);
        ASSERT_GE(c.n, 1);
        ASSERT_STR_CONTAINS(c.msg[0], "setupComplete");
        wc_send(&c, msg);
    }
    run_until(&c, &c.closed, 5000);
    ASSERT_EQ(c.info.code_received, code);
    ASSERT_STR_CONTAINS(c.info.reason, reason);
    ASSERT_LE(strlen(c.info.reason), VB_WS_REASON_MAX);
    wc_done(&c);
}

/* ---- cases ---- */

TEST_T(setup_complete_is_a_pretty_binary_frame, 30)
{
    fake_t f;
    fake_start(&f);
    wc_t c;
    /* The SDKs' double slash, and the key in the query. */
    wc_connect(&c, f.port, "/" WS_PATH "?key=" KEY, NULL);
    run_until(&c, &c.open, 5000);
    wc_send(&c, SETUP_OK);
    wait_msgs(&c, 1, 5000);
    ASSERT_GE(c.n, 1);
    ASSERT_TRUE(c.binary[0]);
    ASSERT_STR_EQ(c.msg[0], "{\n  \"setupComplete\": {}\n}\n");
    /* No sessionResumption in the setup: no handles either. */
    wait_msgs(&c, 2, 200);
    ASSERT_EQ(c.n, 1);
    ASSERT_TRUE(!c.closed);
    wc_done(&c);
    fake_stop(&f);
}

TEST_T(handles_are_sent_and_resume_the_session, 30)
{
    fake_t f;
    fake_start(&f);
    wc_t c;
    wc_ready(&c, f.port,
             "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
             "\"sessionResumption\":{}}}");
    wait_msgs(&c, 2, 5000);
    ASSERT_GE(c.n, 2);
    cJSON *u = cJSON_Parse(c.msg[1]);
    const char *h = cJSON_GetStringValue(cJSON_GetObjectItem(
        cJSON_GetObjectItem(u, "sessionResumptionUpdate"), "newHandle"));
    ASSERT_NOT_NULL(h);
    char setup[256];
    snprintf(setup, sizeof(setup),
             "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
             "\"session_resumption\":{\"handle\":\"%s\"}}}",
             h);
    cJSON_Delete(u);
    wc_done(&c);
    wc_t d;
    wc_ready(&d, f.port, setup);
    ASSERT_TRUE(!d.closed);
    ASSERT_STR_CONTAINS(d.msg[0], "setupComplete");
    wc_done(&d);
    expect_close(f.port,
                 "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
                 "\"sessionResumption\":{\"handle\":\"fake-9-9\"}}}",
                 NULL, 1008, "session not found");
    fake_stop(&f);
}

TEST_T(auth_and_path_are_checked, 30)
{
    fake_t f;
    fake_start(&f);
    wc_t c;
    static const char *const bad[] = {"x-goog-api-key: nope", NULL};
    wc_connect(&c, f.port, WS_PATH, bad);
    run_until(&c, &c.closed, 5000);
    ASSERT_TRUE(c.open); /* 101 first, then the close */
    ASSERT_EQ(c.info.code_received, 1007);
    ASSERT_STR_EQ(c.info.reason,
                  "API key not valid. Please pass a valid API key.");
    wc_done(&c);
    wc_connect(&c, f.port, WS_PATH, NULL);
    run_until(&c, &c.closed, 5000);
    ASSERT_EQ(c.info.code_received, 1007);
    wc_done(&c);
    /* The path @google/genai 3.x builds by default (API version v1). */
    wc_connect(&c, f.port,
               "/ws/google.ai.generativelanguage.v1.GenerativeService."
               "BidiGenerateContent",
               key_header);
    run_until(&c, &c.open, 5000);
    wc_send(&c, SETUP_OK);
    wait_msgs(&c, 1, 5000);
    ASSERT_TRUE(!c.closed);
    wc_done(&c);
    wc_connect(&c, f.port, "/ws/nothing.here", key_header);
    run_until(&c, &c.closed, 5000);
    ASSERT_TRUE(!c.open);
    ASSERT_EQ(c.info.http_status, 404);
    wc_done(&c);
    static const char *const token[] = {"Authorization: Token " KEY, NULL};
    wc_ready(&c, f.port, SETUP_OK);
    wc_done(&c);
    wc_connect(&c, f.port, WS_PATH, token);
    run_until(&c, &c.open, 5000);
    wc_send(&c, SETUP_OK);
    wait_msgs(&c, 1, 5000);
    ASSERT_TRUE(!c.closed);
    wc_done(&c);
    fake_stop(&f);
}

TEST_T(setup_is_validated, 30)
{
    fake_t f;
    fake_start(&f);
    int p = f.port;
    expect_close(p, "{\"realtimeInput\":{\"text\":\"hi\"}}", NULL, 1007,
                 "invalid argument");
    expect_close(p,
                 "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
                 "\"fooBar\":1}}",
                 NULL, 1007, "Unknown name \"fooBar\" at 'setup'");
    expect_close(p, "{\"setup\":{\"model\":\"models/no-such\"}}", NULL, 1008,
                 "models/no-such is not found for API version v1beta");
    expect_close(p, "{\"setup\":{\"model\":\"no-prefix\"}}", NULL, 1008,
                 "not found");
    expect_close(p,
                 "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
                 "\"generationConfig\":{\"responseModalities\":[\"TEXT\"]}}}",
                 NULL, 1007, "Cannot extract voices from a non-audio request.");
    expect_close(p,
                 "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
                 "\"generationConfig\":{\"speechConfig\":{\"voiceConfig\":{"
                 "\"prebuiltVoiceConfig\":{\"voiceName\":\"puck\"}}}}}}",
                 NULL, 1007, "invalid argument");
    expect_close(p,
                 "{\"setup\":{\"model\":\"models/gemini-3.8-live\","
                 "\"realtimeInputConfig\":{\"automaticActivityDetection\":{"
                 "\"startOfSpeechSensitivity\":\"HIGH\"}}}}",
                 NULL, 1007, "invalid argument");
    expect_close(p, "not json", NULL, 1007, "invalid argument");
    expect_close(p, SETUP_OK, SETUP_OK, 1007, "invalid argument");
    fake_stop(&f);
}

TEST_T(realtime_input_is_validated, 30)
{
    fake_t f;
    fake_start(&f);
    int p = f.port;
    expect_close(p, SETUP_OK,
                 "{\"realtimeInput\":{\"audio\":{\"data\":\"AA!A\","
                 "\"mimeType\":\"audio/pcm;rate=16000\"}}}",
                 1007, "invalid argument");
    expect_close(p, SETUP_OK,
                 "{\"realtimeInput\":{\"audio\":{\"data\":\"AAAA\","
                 "\"mimeType\":\"audio/pcm;rate=16000\"}}}",
                 1007, "invalid argument"); /* 3 bytes: half a sample */
    expect_close(p, SETUP_OK,
                 "{\"realtimeInput\":{\"audio\":{\"data\":\"AAAAAA==\","
                 "\"mimeType\":\"audio/wav\"}}}",
                 1007, "invalid argument");
    expect_close(p, SETUP_OK,
                 "{\"realtimeInput\":{\"text\":\"a\",\"audioStreamEnd\":true}}",
                 1007, "invalid argument");
    expect_close(p, SETUP_OK, "{\"realtimeInput\":{\"activityStart\":{}}}",
                 1007, "invalid argument");
    expect_close(p, SETUP_OK,
                 "{\"toolResponse\":{\"functionResponses\":[{\"name\":\"x\","
                 "\"response\":{}}]}}",
                 1007, "invalid argument");
    expect_close(p, SETUP_OK, "{\"setup\":{},\"realtimeInput\":{}}", 1007,
                 "invalid argument");
    /* snake_case and URL-safe base64 (what the Python SDK sends) pass. */
    wc_t c;
    wc_ready(&c, p, SETUP_OK);
    wc_send(&c, "{\"realtime_input\":{\"media_chunks\":[{\"mime_type\":"
                "\"audio/pcm;rate=16000\",\"data\":\"-__-AA\"}]}}");
    wc_send(&c, "{\"realtimeInput\":{\"audioStreamEnd\":true}}");
    wait_msgs(&c, 99, 300);
    ASSERT_TRUE(!c.closed);
    wc_done(&c);
    fake_stop(&f);
    FILE *in = fopen(f.log, "r");
    ASSERT_NOT_NULL(in);
    char line[4096];
    bool seen = false;
    while (fgets(line, sizeof(line), in) != NULL)
        if (strstr(line, "\"type\":\"audio\"") != NULL &&
            strstr(line, "\"alphabet\":\"url\"") != NULL &&
            strstr(line, "\"bytes\":4") != NULL)
            seen = true;
    fclose(in);
    ASSERT_TRUE(seen);
}
