/* SPDX-License-Identifier: MIT */
/*
 * End to end over loopback: the real vb-sim binary calls the real ingress
 * (signed webhook, TwiML, signed upgrade, socket hand-off) and the twilio-io
 * stage; the test plays the DSP side of the lane: it records inbound audio
 * and answers CALL_OPEN with a greeting, a mark and, per case, a clear or a
 * hang-up. Checks: the caller's μ-law reaches the inbound ring byte-exact
 * and in order, the greeting reaches vb-sim's playout (its --heard WAV) as
 * sent, marks are echoed, vb-sim finds no protocol error, and each way of
 * ending a call (caller, server, REST) is reported.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/base64.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/lane.h"
#include "core/log.h"
#include "dsp/g711.h"
#include "net/form.h"
#include "net/ingress.h"
#include "net/twilio_sig.h"
#include "net/twilio_stream.h"
#include "tests/proc.h"
#include "tests/test.h"

extern char **environ;

#define TOKEN   "sim-auth-token"
#define SECRET  "sim-stream-secret"
#define GREET_N 25 /* 0.5 s of greeting frames */

typedef enum { END_CALLER, END_SERVER, END_REST } end_mode_t;

typedef struct fx {
    vb_config_t cfg;
    vb_metrics_t *m;
    vb_twilio_sig_key_t key;
    vb_chan_t conn, in, out;
    vb_twilio_stream_t *st;
    vb_ingress_t *g;
    int port, api_port;
    end_mode_t mode;
    pthread_t dsp;
    _Atomic bool stop, opened, closed;
    vb_msg_open_t open; /* written before `opened` is set */
    uint8_t greet[GREET_N * 160];
    uint8_t *rx; /* inbound audio, in order */
    size_t rx_len, rx_cap;
    uint32_t out_seq;
} fx_t;

static void push_out(fx_t *f, vb_call_id_t id, uint8_t kind, const void *d,
                     size_t n)
{
    uint32_t seq = f->out_seq++;
    while (vb_chan_send(&f->out, kind, 0, id, seq, vb_clock_now_ns(), d, n) !=
           0)
        usleep(1000);
}

/* The DSP side: record inbound audio, answer the call. */
static void *dsp_main(void *arg)
{
    fx_t *f = arg;
    vb_msg_t m;
    while (!f->stop) {
        if (vb_ring_try_pop(&f->in.ring, &m) != 0) {
            usleep(1000);
            continue;
        }
        switch (m.kind) {
        case VB_MSG_CALL_OPEN:
            memcpy(&f->open, m.data, sizeof f->open);
            f->opened = true; /* seq_cst store publishes `open` */
            for (int i = 0; i < GREET_N; i++)
                push_out(f, m.call, VB_MSG_AUDIO, f->greet + i * 160, 160);
            push_out(f, m.call, VB_MSG_MARK, "greet", 5);
            if (f->mode == END_SERVER)
                push_out(f, m.call, VB_MSG_HANGUP, NULL, 0);
            break;
        case VB_MSG_AUDIO:
            if (f->rx_len + m.len > f->rx_cap) {
                f->rx_cap = (f->rx_cap + m.len) * 2;
                f->rx = realloc(f->rx, f->rx_cap);
            }
            memcpy(f->rx + f->rx_len, m.data, m.len);
            f->rx_len += m.len;
            break;
        case VB_MSG_CALL_CLOSE:
            f->closed = true;
            break;
        default:
            break;
        }
    }
    return NULL;
}

static fx_t *fx_start(end_mode_t mode)
{
    fx_t *f = calloc(1, sizeof *f);
    ASSERT_NOT_NULL(f);
    signal(SIGPIPE, SIG_IGN);
    vb_log_set_level(getenv("VB_TEST_LOG") ? VB_LOG_DEBUG : VB_LOG_ERROR);
    f->mode = mode;
    for (size_t i = 0; i < sizeof f->greet; i++) {
        uint8_t u = (uint8_t)(i * 37 + 11);
        f->greet[i] = u == 0x7F ? 0x7E : u;
    }
    f->port = proc_free_port();
    f->api_port = proc_free_port();
    char listen[64], pub[64], api[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", f->port);
    snprintf(pub, sizeof pub, "http://127.0.0.1:%d", f->port);
    snprintf(api, sizeof api, "http://127.0.0.1:%d", f->api_port);
    const char *argv[] = {"voxbridge", "--listen",
                          listen,      "--public-url",
                          pub,         "--twilio-auth-token",
                          TOKEN,       "--stream-secret",
                          SECRET,      "--twilio-api-url",
                          api,         "--lanes",
                          "1"};
    char err[256];
    ASSERT_EQ(vb_config_load(&f->cfg, (int)(sizeof argv / sizeof argv[0]), argv,
                             err, sizeof err),
              0);
    f->m = vb_metrics_create();
    ASSERT_EQ(vb_twilio_sig_key_init(&f->key, SECRET), 0);
    vb_chan_config_t cc = {"ingress_to_twilio", 16, VB_MSG_DATA_MAX, 0, NULL};
    vb_chan_config_t ic = {"twilio_to_dsp", 1024, VB_LANE_TW_TO_DSP_DATA,
                           VB_LANE_SPILL_MAX, NULL};
    vb_chan_config_t oc = {"dsp_to_twilio", 1024, VB_MSG_DATA_MAX, 0, NULL};
    ASSERT_EQ(vb_chan_init(&f->conn, &cc), 0);
    ASSERT_EQ(vb_chan_init(&f->in, &ic), 0);
    ASSERT_EQ(vb_chan_init(&f->out, &oc), 0);
    vb_twilio_stream_config_t sc = {
        .lane = 0,
        .max_calls = 8,
        .media_batch = 1,
        .token_key = &f->key,
        .conn_in = &f->conn,
        .in_to_dsp = &f->in,
        .out_from_dsp = &f->out,
        .metrics = f->m,
    };
    ASSERT_EQ(vb_twilio_stream_create(&f->st, &sc), 0);
    ASSERT_EQ(vb_twilio_stream_start(f->st), 0);
    vb_ingress_lane_t lane = {.conn = &f->conn};
    vb_ingress_opts_t io = {
        .cfg = &f->cfg, .metrics = f->m, .stream_key = &f->key, .lanes = &lane};
    ASSERT_EQ(vb_ingress_create(&io, &f->g), 0);
    ASSERT_EQ(vb_ingress_start(f->g), 0);
    ASSERT_EQ(pthread_create(&f->dsp, NULL, dsp_main, f), 0);
    return f;
}

static void fx_stop(fx_t *f)
{
    vb_ingress_destroy(f->g);
    f->stop = true;
    pthread_join(f->dsp, NULL);
    vb_twilio_stream_stop(f->st);
    vb_twilio_stream_destroy(f->st);
    vb_chan_destroy(&f->conn);
    vb_chan_destroy(&f->in);
    vb_chan_destroy(&f->out);
    vb_metrics_destroy(f->m);
    free(f->rx);
    free(f);
}

static void write_wav(const char *path, const uint8_t *mulaw, size_t n)
{
    int16_t *pcm = malloc(n * 2);
    vb_g711_ulaw_decode(pcm, mulaw, n);
    FILE *w = fopen(path, "wb");
    ASSERT_NOT_NULL(w);
    uint8_t h[44] = "RIFF....WAVEfmt ";
    uint32_t data = (uint32_t)n * 2, v;
    v = 36 + data;
    memcpy(h + 4, &v, 4);
    v = 16;
    memcpy(h + 16, &v, 4);
    uint16_t s = 1;
    memcpy(h + 20, &s, 2);
    memcpy(h + 22, &s, 2);
    v = 8000;
    memcpy(h + 24, &v, 4);
    v = 16000;
    memcpy(h + 28, &v, 4);
    s = 2;
    memcpy(h + 32, &s, 2);
    s = 16;
    memcpy(h + 34, &s, 2);
    memcpy(h + 36, "data", 4);
    memcpy(h + 40, &data, 4);
    ASSERT_EQ(fwrite(h, 1, 44, w), 44);
    ASSERT_EQ(fwrite(pcm, 2, n, w), n);
    fclose(w);
    free(pcm);
}

/* Reads a 44-byte-header WAV back as μ-law. */
static uint8_t *read_wav_mulaw(const char *path, size_t *n)
{
    FILE *r = fopen(path, "rb");
    ASSERT_NOT_NULL(r);
    fseek(r, 0, SEEK_END);
    long sz = ftell(r);
    ASSERT_GE(sz, 44);
    fseek(r, 44, SEEK_SET);
    size_t ns = (size_t)(sz - 44) / 2;
    int16_t *pcm = malloc(ns * 2 + 2);
    ASSERT_EQ(fread(pcm, 2, ns, r), ns);
    fclose(r);
    uint8_t *u = malloc(ns + 1);
    vb_g711_ulaw_encode(u, pcm, ns);
    free(pcm);
    *n = ns;
    return u;
}

typedef struct run {
    pid_t pid;
    char out_path[512], err_path[512];
} run_t;

static void sim_spawn_args(fx_t *f, run_t *r, const char *wav,
                           const char *heard, const char *hangup_after,
                           const char *const *extra)
{
    char exe[512], webhook[256], api[64];
    const char *bd = getenv("VB_BUILD_DIR");
    snprintf(exe, sizeof exe, "%s/vb-sim", bd != NULL ? bd : "build");
    snprintf(webhook, sizeof webhook, "http://127.0.0.1:%d%s", f->port,
             f->cfg.webhook_path);
    snprintf(api, sizeof api, "127.0.0.1:%d", f->api_port);
    snprintf(r->out_path, sizeof r->out_path, "%s/sim.out", vb_test_tmpdir());
    snprintf(r->err_path, sizeof r->err_path, "%s/sim.err", vb_test_tmpdir());
    const char *argv[32] = {exe,
                            "call",
                            "--webhook",
                            webhook,
                            "--audio",
                            wav,
                            "--heard",
                            heard,
                            "--auth-token",
                            TOKEN,
                            "--api-listen",
                            api,
                            "--pause-scale",
                            "0",
                            "--timeout",
                            "20"};
    int argc = 16;
    if (hangup_after != NULL) {
        argv[argc++] = "--hangup-after";
        argv[argc++] = hangup_after;
    }
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 31; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, r->out_path,
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, r->err_path,
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_EQ(posix_spawn(&r->pid, exe, &fa, NULL,
                          (char *const *)(uintptr_t)argv, environ),
              0);
    posix_spawn_file_actions_destroy(&fa);
}

static void sim_spawn(fx_t *f, run_t *r, const char *wav, const char *heard,
                      const char *hangup_after, const char *extra)
{
    sim_spawn_args(f, r, wav, heard, hangup_after,
                   (const char *const[]){extra, NULL});
}

/* Waits for vb-sim; returns its exit status and its summary line. */
static int sim_wait(run_t *r, char *summary, size_t n)
{
    int status = 0;
    double limit_s = 30 * vb_test_slowdown();
    uint64_t deadline = vb_clock_now_ns() + (uint64_t)(limit_s * 1e9);
    for (;;) {
        pid_t p = waitpid(r->pid, &status, WNOHANG);
        if (p == r->pid)
            break;
        if (vb_clock_now_ns() > deadline) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &status, 0);
            vb_test_fail(__FILE__, __LINE__, "vb-sim did not finish");
        }
        usleep(10000);
    }
    FILE *o = fopen(r->out_path, "r");
    ASSERT_NOT_NULL(o);
    summary[0] = '\0';
    if (fgets(summary, (int)n, o) == NULL)
        summary[0] = '\0';
    fclose(o);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0 || getenv("VB_TEST_LOG") != NULL) {
        /* Show vb-sim's own account of what went wrong. */
        FILE *e = fopen(r->err_path, "r");
        char line[512];
        while (e != NULL && fgets(line, sizeof line, e) != NULL)
            fprintf(stderr, "  vb-sim: %s", line);
        if (e != NULL)
            fclose(e);
        fprintf(stderr, "  summary: %s", summary);
    }
    return WEXITSTATUS(status);
}

static long field(const char *summary, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, " %s=", key);
    const char *p = strstr(summary, k);
    if (p == NULL) {
        snprintf(k, sizeof k, "%s=", key);
        p = strncmp(summary, k, strlen(k)) == 0 ? summary - 1 : NULL;
    }
    ASSERT_NOT_NULL(p);
    return strtol(p + strlen(k), NULL, 10);
}

static void make_caller_audio(uint8_t *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)((i * 73 + (i >> 4) * 5 + 3) & 0xFF);
        u[i] = v == 0x7F ? 0x80 : v; /* μ-law +0 does not survive PCM */
    }
}

/* The greeting must appear contiguously in what the caller heard. */
static void check_heard(fx_t *f, const char *heard_path)
{
    size_t hn = 0;
    uint8_t *h = read_wav_mulaw(heard_path, &hn);
    size_t gl = sizeof f->greet;
    bool found = false;
    for (size_t off = 0; off + gl <= hn && !found; off += 160)
        found = memcmp(h + off, f->greet, gl) == 0;
    ASSERT_TRUE(found);
    free(h);
}

static void check_inbound(fx_t *f, const uint8_t *caller, size_t n)
{
    ASSERT_GE(f->rx_len, n);
    ASSERT_MEM_EQ(f->rx, caller, n);
    for (size_t i = n; i < f->rx_len; i++)
        ASSERT_EQ(f->rx[i], 0xFF); /* silence after the file */
    ASSERT_EQ(f->rx_len % 160, 0);
}

static void wait_flag(_Atomic bool *flag)
{
    uint64_t deadline =
        vb_clock_now_ns() + (uint64_t)(10e9 * vb_test_slowdown());
    while (!*flag) {
        ASSERT_LT(vb_clock_now_ns(), deadline);
        usleep(2000);
    }
}

TEST_T(sim_call_caller_hangs_up, 60)
{
    fx_t *f = fx_start(END_CALLER);
    char wav[512], heard[512];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    enum { N = 8000 }; /* 1 s */
    uint8_t *caller = malloc(N);
    make_caller_audio(caller, N);
    write_wav(wav, caller, N);
    run_t r;
    sim_spawn(f, &r, wav, heard, "1.6", "--dtmf=7@0.5");
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(rc, 0);
    ASSERT_STR_CONTAINS(sum, "ended_by=caller");
    ASSERT_EQ(field(sum, "protocol_errors"), 0);
    ASSERT_EQ(field(sum, "webhook_status"), 200);
    ASSERT_EQ(field(sum, "frames_sent"), 80);
    ASSERT_EQ(field(sum, "dtmf_sent"), 1);
    ASSERT_EQ(field(sum, "media_received"), GREET_N);
    ASSERT_EQ(field(sum, "bytes_received"), GREET_N * 160);
    ASSERT_EQ(field(sum, "marks_received"), 1);
    ASSERT_EQ(field(sum, "marks_echoed"), 1);
    ASSERT_EQ(field(sum, "bytes_heard"), GREET_N * 160);
    wait_flag(&f->closed);
    check_inbound(f, caller, N);
    ASSERT_EQ(f->rx_len, 80 * 160);
    check_heard(f, heard);
    /* The stage saw the echoed mark and a clean stop. */
    vb_twilio_call_stats_t st;
    ASSERT_EQ(vb_twilio_stream_last_stats(f->st, &st), 1);
    ASSERT_EQ(st.frames_in, 80);
    ASSERT_EQ(st.marks_echoed, 1);
    ASSERT_EQ(st.dtmf, 1);
    ASSERT_EQ(st.protocol_errors, 0);
    ASSERT_EQ(st.seq_gaps, 0);
    free(caller);
    fx_stop(f);
}

TEST_T(sim_call_server_hangs_up, 60)
{
    fx_t *f = fx_start(END_SERVER);
    char wav[512], heard[512];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    uint8_t caller[1600];
    make_caller_audio(caller, sizeof caller);
    write_wav(wav, caller, sizeof caller);
    run_t r;
    sim_spawn(f, &r, wav, heard, "10", NULL);
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(rc, 0);
    ASSERT_STR_CONTAINS(sum, "ended_by=server");
    ASSERT_EQ(field(sum, "close_code"), 1000);
    ASSERT_EQ(field(sum, "media_received"), GREET_N);
    ASSERT_EQ(field(sum, "protocol_errors"), 0);
    wait_flag(&f->closed);
    ASSERT_GE(f->rx_len, 0);
    fx_stop(f);
}

/* Posts a Calls update with form `body` to vb-sim's REST API as voxbridge
 * would; returns the HTTP status. */
static int rest_post(int port, const char *account, const char *call,
                     const char *token, const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char cred[256], b64[400];
    size_t bl = 0;
    snprintf(cred, sizeof cred, "%s:%s", account, token);
    mbedtls_base64_encode((unsigned char *)b64, sizeof b64, &bl,
                          (const unsigned char *)cred, strlen(cred));
    b64[bl] = '\0';
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "POST /2010-04-01/Accounts/%s/Calls/%s.json HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\nAuthorization: Basic %s\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Accept: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     account, call, b64, strlen(body), body);
    ASSERT_EQ(write(fd, req, (size_t)n), n);
    char resp[2048];
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT_EQ(poll(&p, 1, 5000), 1);
        ssize_t k = read(fd, resp + got, sizeof resp - 1 - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    resp[got] = '\0';
    close(fd);
    return atoi(resp + 9);
}

static int rest_hangup(int port, const char *account, const char *call,
                       const char *token)
{
    return rest_post(port, account, call, token, "Status=completed");
}

TEST_T(sim_call_rest_hangup, 60)
{
    fx_t *f = fx_start(END_REST);
    char wav[512], heard[512];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    uint8_t caller[800];
    make_caller_audio(caller, sizeof caller);
    write_wav(wav, caller, sizeof caller);
    run_t r;
    sim_spawn(f, &r, wav, heard, "15", NULL);
    wait_flag(&f->opened);
    /* The CALL_OPEN payload names the call and the account. */
    const char *acct = f->open.account_sid, *sid = f->open.call_sid;
    ASSERT_EQ(strncmp(sid, "CA", 2), 0);
    ASSERT_EQ(rest_hangup(f->api_port, acct, "CA0000", TOKEN), 404);
    ASSERT_EQ(rest_hangup(f->api_port, acct, sid, "wrong"), 401);
    ASSERT_EQ(rest_hangup(f->api_port, acct, sid, TOKEN), 200);
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(rc, 0);
    ASSERT_STR_CONTAINS(sum, "ended_by=rest");
    ASSERT_EQ(field(sum, "rest_requests"), 1);
    ASSERT_EQ(field(sum, "protocol_errors"), 0);
    /* Status=completed hangs up: no TwiML runs after the stream. */
    ASSERT_EQ(field(sum, "says_after_stream"), 0);
    ASSERT_EQ(field(sum, "twiml_replaced"), 0);
    wait_flag(&f->closed);
    fx_stop(f);
}

/* Status=canceled ends only queued or ringing calls: on an answered one
 * it is a no-op (200, still in progress), as on Twilio. */
TEST_T(sim_call_rest_canceled_leaves_an_answered_call_alone, 60)
{
    fx_t *f = fx_start(END_REST);
    char wav[512], heard[512];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    uint8_t caller[800];
    make_caller_audio(caller, sizeof caller);
    write_wav(wav, caller, sizeof caller);
    run_t r;
    sim_spawn(f, &r, wav, heard, "15", NULL);
    wait_flag(&f->opened);
    const char *acct = f->open.account_sid, *sid = f->open.call_sid;
    ASSERT_EQ(rest_post(f->api_port, acct, sid, TOKEN, "Status=canceled"), 200);
    /* Still streaming: a hang-up now is what ends it. */
    usleep(200000);
    ASSERT_EQ(rest_hangup(f->api_port, acct, sid, TOKEN), 200);
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(rc, 0);
    ASSERT_STR_CONTAINS(sum, "ended_by=rest");
    /* Only the completed update counted as a hang-up request. */
    ASSERT_EQ(field(sum, "rest_requests"), 1);
    wait_flag(&f->closed);
    fx_stop(f);
}

/* A Calls update with Twiml=: a broken document is refused (400, the call
 * goes on); a valid one ends the stream and runs, its <Say> heard. */
TEST_T(sim_call_rest_twiml_update_runs_the_new_twiml, 60)
{
    fx_t *f = fx_start(END_REST);
    char wav[512], heard[512];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    uint8_t caller[800];
    make_caller_audio(caller, sizeof caller);
    write_wav(wav, caller, sizeof caller);
    run_t r;
    sim_spawn(f, &r, wav, heard, "15", NULL);
    wait_flag(&f->opened);
    const char *acct = f->open.account_sid, *sid = f->open.call_sid;
    ASSERT_EQ(rest_post(f->api_port, acct, sid, TOKEN,
                        "Twiml=%3CResponse%3E%3CSay%3Eunclosed"),
              400);
    ASSERT_EQ(rest_post(f->api_port, acct, sid, TOKEN,
                        "Twiml=%3CResponse%3E%3CSay%3EBye+now%2E%3C%2FSay%3E"
                        "%3CHangup%2F%3E%3C%2FResponse%3E"),
              200);
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(field(sum, "twiml_replaced"), 1);
    ASSERT_EQ(field(sum, "says_after_stream"), 1);
    ASSERT_STR_CONTAINS(sum, "said=\"Bye now.\"");
    ASSERT_EQ(field(sum, "rest_requests"), 1);
    ASSERT_EQ(field(sum, "protocol_errors"), 0);
    wait_flag(&f->closed);
    fx_stop(f);
}

/* A request to vb-sim's REST API with `auth` as the whole Authorization
 * value (NULL: no header); returns the status, the body in `resp`. */
static int rest_raw(int port, const char *path, const char *auth,
                    const char *body, char *resp, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char hdr[600] = "";
    if (auth != NULL)
        snprintf(hdr, sizeof hdr, "Authorization: %s\r\n", auth);
    char req[4096];
    int len = snprintf(req, sizeof req,
                       "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
                       "Content-Type: application/x-www-form-urlencoded\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       path, hdr, strlen(body), body);
    ASSERT_EQ(write(fd, req, (size_t)len), len);
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ASSERT_EQ(poll(&p, 1, (int)(5000 * vb_test_slowdown())), 1);
        ssize_t k = read(fd, resp + got, n - 1 - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    resp[got] = '\0';
    close(fd);
    return atoi(resp + 9);
}

static void basic(const char *user, const char *pass, char *out, size_t n)
{
    char cred[256];
    size_t bl = 0;
    snprintf(cred, sizeof cred, "%s:%s", user, pass);
    memcpy(out, "Basic ", 6);
    mbedtls_base64_encode((unsigned char *)out + 6, n - 7, &bl,
                          (const unsigned char *)cred, strlen(cred));
    out[6 + bl] = '\0';
}

#define KEY_SID    "SK0123456789abcdef0123456789abcdef"
#define KEY_SECRET "sim-key-secret"

/* REST auth as Twilio's: the auth token or an API key of the call's
 * account; every other credential is 401 with error 20003, counted, and
 * leaves the call alone. */
TEST_T(sim_call_rest_api_key_auth, 60)
{
    fx_t *f = fx_start(END_REST);
    char wav[512], heard[512];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    uint8_t caller[800];
    make_caller_audio(caller, sizeof caller);
    write_wav(wav, caller, sizeof caller);
    run_t r;
    sim_spawn_args(f, &r, wav, heard, "15",
                   (const char *const[]){"--api-key", KEY_SID, "--api-secret",
                                         KEY_SECRET, NULL});
    wait_flag(&f->opened);
    const char *acct = f->open.account_sid, *sid = f->open.call_sid;
    char path[256], other[256], auth[512], resp[4096];
    snprintf(path, sizeof path, "/2010-04-01/Accounts/%s/Calls/%s.json", acct,
             sid);
    snprintf(other, sizeof other, "/2010-04-01/Accounts/AC%032d/Calls/%s.json",
             7, sid);
    const char *bad[][2] = {
        {KEY_SID, "wrong"},        /* wrong secret */
        {KEY_SID, TOKEN},          /* the key SID with the auth token */
        {acct, KEY_SECRET},        /* the account SID with the key secret */
        {acct, "wrong"},           /* wrong token */
        {KEY_SID, KEY_SECRET "x"}, /* a longer secret */
        {KEY_SID "x", KEY_SECRET}, /* another key */
    };
    int refused = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        basic(bad[i][0], bad[i][1], auth, sizeof auth);
        ASSERT_EQ(rest_raw(f->api_port, path, auth, "Status=completed", resp,
                           sizeof resp),
                  401);
        ASSERT_STR_CONTAINS(resp, "\"code\":20003");
        ASSERT_STR_CONTAINS(resp, "\"message\":\"Authenticate\"");
        ASSERT_STR_CONTAINS(resp, "\"status\":401");
        refused++;
    }
    /* No header, other schemes, broken base64, no colon. */
    const char *raw[] = {NULL, "Bearer abc", "Basic", "Basic !!!!",
                         "Basic U0sw" /* "SK0" */};
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        ASSERT_EQ(rest_raw(f->api_port, path, raw[i], "Status=completed", resp,
                           sizeof resp),
                  401);
        ASSERT_STR_CONTAINS(resp, "\"code\":20003");
        refused++;
    }
    /* The key belongs to the call's account, not to another. */
    basic(KEY_SID, KEY_SECRET, auth, sizeof auth);
    ASSERT_EQ(rest_raw(f->api_port, other, auth, "Status=completed", resp,
                       sizeof resp),
              401);
    refused++;
    /* The right key hangs up. */
    ASSERT_EQ(rest_raw(f->api_port, path, auth, "Status=completed", resp,
                       sizeof resp),
              200);
    ASSERT_STR_CONTAINS(resp, "\"status\":\"completed\"");
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(rc, 0);
    ASSERT_STR_CONTAINS(sum, "ended_by=rest");
    ASSERT_EQ(field(sum, "rest_requests"), 1);
    /* vb-sim's account of its REST API on stderr. */
    char *err = proc_read_file(r.err_path);
    ASSERT_NOT_NULL(err);
    char want[128];
    snprintf(want, sizeof want, "requests=%d auth_failures=%d", refused + 1,
             refused);
    ASSERT_STR_CONTAINS(err, want);
    free(err);
    wait_flag(&f->closed);
    fx_stop(f);
}

/* ---- the call's status callback ---- */

/* A plain HTTP receiver for status callbacks: each request read whole
 * (head, and Content-Length body), kept, answered 204. */
typedef struct cb_rx {
    int fd, port;
    pthread_t th;
    _Atomic bool stop;
    char *req[8];
    _Atomic int n;
} cb_rx_t;

static void *cb_rx_main(void *arg)
{
    cb_rx_t *x = arg;
    while (!x->stop) {
        struct pollfd p = {.fd = x->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(x->fd, NULL, NULL);
        if (c < 0)
            continue;
        char *buf = calloc(1, 16384);
        size_t len = 0;
        uint64_t deadline = vb_clock_now_ns() + 5000000000ull;
        for (;;) {
            char *end = strstr(buf, "\r\n\r\n");
            if (end != NULL) {
                const char *cl = strcasestr(buf, "\r\nContent-Length:");
                size_t want =
                    cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
                if (len >= (size_t)(end + 4 - buf) + want)
                    break;
            }
            struct pollfd q = {.fd = c, .events = POLLIN};
            if (len + 1 >= 16384 || vb_clock_now_ns() > deadline ||
                poll(&q, 1, 100) < 0)
                break;
            if (q.revents == 0)
                continue;
            ssize_t k = read(c, buf + len, 16383 - len);
            if (k <= 0)
                break;
            len += (size_t)k;
        }
        static const char ans[] = "HTTP/1.1 204 No Content\r\nContent-Length: "
                                  "0\r\nConnection: close\r\n\r\n";
        ASSERT_EQ(write(c, ans, sizeof ans - 1), (ssize_t)(sizeof ans - 1));
        close(c);
        int i = x->n;
        if (i < 8) {
            x->req[i] = buf;
            x->n = i + 1;
        } else {
            free(buf);
        }
    }
    return NULL;
}

static void cb_rx_start(cb_rx_t *x)
{
    memset(x, 0, sizeof *x);
    x->port = proc_free_port();
    x->fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(x->fd, 0);
    int one = 1;
    setsockopt(x->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)x->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(x->fd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(x->fd, 16), 0);
    ASSERT_EQ(pthread_create(&x->th, NULL, cb_rx_main, x), 0);
}

static void cb_rx_stop(cb_rx_t *x)
{
    x->stop = true;
    pthread_join(x->th, NULL);
    close(x->fd);
    for (int i = 0; i < x->n; i++)
        free(x->req[i]);
}

/* Checks one received callback: its method, its signature (with the
 * project's verifier, over the URL Twilio was given: for a GET the
 * parameters are in it, for a POST they are the body), and returns its
 * parameters in *f. */
static void cb_check(const char *req, const char *base_url, bool get,
                     vb_form_t *f)
{
    ASSERT_EQ(strncmp(req, get ? "GET " : "POST ", get ? 4 : 5), 0);
    const char *target = strchr(req, ' ') + 1;
    size_t tl = strcspn(target, " ");
    const char *sig = strcasestr(req, "\r\nX-Twilio-Signature: ");
    ASSERT_NOT_NULL(sig);
    sig += 22;
    size_t sl = strcspn(sig, "\r");
    ASSERT_EQ(sl, VB_TWILIO_SIG_LEN);
    /* base_url is http://host:port + the path we gave. */
    const char *path = strchr(base_url + 7, '/');
    char url[2048];
    snprintf(url, sizeof url, "%.*s%.*s", (int)(path - base_url), base_url,
             (int)tl, target);
    const char *body = strstr(req, "\r\n\r\n") + 4;
    vb_form_t none = {0};
    if (get) {
        const char *q = strchr(url, '?');
        ASSERT_NOT_NULL(q);
        ASSERT_EQ(vb_form_parse(f, q + 1, strlen(q + 1), 64), 0);
        ASSERT_EQ(body[0], '\0');
        ASSERT_EQ(vb_twilio_sig_verify(TOKEN, url, &none, sig, sl, 0), 0);
        /* Not over the URL without its parameters. */
        char bare[2048];
        snprintf(bare, sizeof bare, "%.*s", (int)(q - url), url);
        ASSERT_EQ(vb_twilio_sig_verify(TOKEN, bare, f, sig, sl, 0), VB_EAUTH);
    } else {
        ASSERT_STR_CONTAINS(req,
                            "Content-Type: application/x-www-form-urlencoded");
        ASSERT_EQ(vb_form_parse(f, body, strlen(body), 64), 0);
        ASSERT_EQ(vb_twilio_sig_verify(TOKEN, url, f, sig, sl, 0), 0);
        ASSERT_EQ(vb_twilio_sig_verify("another-token", url, f, sig, sl, 0),
                  VB_EAUTH);
    }
}

/* vb-sim's call status callback for each event asked, in order, signed
 * as Twilio signs (checked with the project's verifier), with Twilio's
 * parameters; POST and GET. */
static void status_callback_case(bool get)
{
    fx_t *f = fx_start(END_CALLER);
    cb_rx_t x;
    cb_rx_start(&x);
    char wav[512], heard[512], cb[128];
    snprintf(wav, sizeof wav, "%s/in.wav", vb_test_tmpdir());
    snprintf(heard, sizeof heard, "%s/heard.wav", vb_test_tmpdir());
    snprintf(cb, sizeof cb, "http://127.0.0.1:%d/hooks/status?app=a%%27b",
             x.port);
    enum { N = 8000 };
    uint8_t *caller = malloc(N);
    make_caller_audio(caller, N);
    write_wav(wav, caller, N);
    run_t r;
    sim_spawn_args(f, &r, wav, heard, "1.2",
                   (const char *const[]){
                       "--status-callback", cb, "--status-callback-event",
                       "initiated,ringing answered,completed",
                       "--status-callback-method", get ? "GET" : "POST", NULL});
    char sum[2048];
    int rc = sim_wait(&r, sum, sizeof sum);
    ASSERT_EQ(rc, 0);
    ASSERT_STR_CONTAINS(sum, "result=ok");
    ASSERT_EQ(field(sum, "call_status_callbacks"), 4);
    ASSERT_STR_CONTAINS(sum, "call_status_last=completed call_status_http=204");
    /* All four arrived (the last before vb-sim reported). */
    uint64_t deadline = vb_clock_now_ns() + 5000000000ull;
    while (x.n < 4 && vb_clock_now_ns() < deadline)
        usleep(5000);
    ASSERT_EQ(x.n, 4);
    /* In order of SequenceNumber; connections may land out of order. */
    static const char *const want[] = {"initiated", "ringing", "in-progress",
                                       "completed"};
    bool seen[4] = {false};
    const char *sid = NULL;
    char sidbuf[64] = "";
    for (int i = 0; i < 4; i++) {
        vb_form_t p = {0};
        cb_check(x.req[i], cb, get, &p);
        const char *seq = vb_form_get(&p, "SequenceNumber");
        ASSERT_NOT_NULL(seq);
        int k = atoi(seq);
        ASSERT_TRUE(k >= 0 && k < 4 && !seen[k]);
        seen[k] = true;
        ASSERT_STR_EQ(vb_form_get(&p, "CallStatus"), want[k]);
        ASSERT_STR_EQ(vb_form_get(&p, "Direction"), "inbound");
        ASSERT_STR_EQ(vb_form_get(&p, "ApiVersion"), "2010-04-01");
        ASSERT_STR_EQ(vb_form_get(&p, "CallbackSource"),
                      "call-progress-events");
        /* The URL's own query stays; a GET's parameters join it. */
        if (get)
            ASSERT_STR_EQ(vb_form_get(&p, "app"), "a'b");
        else
            ASSERT_TRUE(vb_form_get(&p, "app") == NULL);
        ASSERT_NOT_NULL(vb_form_get(&p, "Timestamp"));
        ASSERT_STR_EQ(vb_form_get(&p, "From"), vb_form_get(&p, "Caller"));
        ASSERT_STR_EQ(vb_form_get(&p, "To"), vb_form_get(&p, "Called"));
        if (sid == NULL) {
            snprintf(sidbuf, sizeof sidbuf, "%s", vb_form_get(&p, "CallSid"));
            sid = sidbuf;
        }
        ASSERT_STR_EQ(vb_form_get(&p, "CallSid"), sid);
        /* Only the completed event has the call's length. */
        const char *dur = vb_form_get(&p, "CallDuration");
        if (k == 3) {
            ASSERT_NOT_NULL(dur);
            ASSERT_GE(atoi(dur), 1);
            ASSERT_NOT_NULL(vb_form_get(&p, "Duration"));
        } else {
            ASSERT_TRUE(dur == NULL);
        }
        vb_form_free(&p);
    }
    char want_sid[80];
    snprintf(want_sid, sizeof want_sid, "call_sid=%s ", sid);
    ASSERT_STR_CONTAINS(sum, want_sid);
    cb_rx_stop(&x);
    wait_flag(&f->closed);
    free(caller);
    fx_stop(f);
}

TEST_T(sim_call_status_callbacks_post_signed, 60)
{
    status_callback_case(false);
}

TEST_T(sim_call_status_callbacks_get_signed, 60)
{
    status_callback_case(true);
}
