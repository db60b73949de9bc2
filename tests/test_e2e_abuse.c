/* SPDX-License-Identifier: MIT */
/*
 * Outsiders against the real binaries on loopback (vb-sim, voxbridge,
 * vb-fake-gemini from $VB_BUILD_DIR): streams that never authenticate,
 * a ping flood that never reads, a stream token used twice, media faster
 * than real time, a stream that goes silent, slow request bodies filling
 * the connection cap and one signed webhook replayed many times. Each gets
 * its stated answer, none reaches the model, and a real call beside them
 * is heard with nothing lost.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/form.h"
#include "tests/e2e.h"

static const char *valid_token(const char *call)
{
    static char tok[4][VB_TWILIO_TOKEN_LEN + 1];
    static int next;
    char *t = tok[next++ & 3];
    vb_twilio_sig_key_t k;
    ASSERT_EQ(vb_twilio_sig_key_init(&k, SECRET), 0);
    ASSERT_EQ(vb_twilio_sig_token_create(&k, call, 0,
                                         (int64_t)vb_clock_wall_s() + 600, t),
              0);
    return t;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ASSERT_NOT_NULL(f);
    long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static bool plain_build(void)
{
    const char *b = proc_build_dir();
    size_t n = strlen(b);
    return n < 5 || (strcmp(b + n - 5, "/asan") && strcmp(b + n - 5, "/tsan"));
}

TEST_T(strangers_beyond_max_calls_hold_nothing_and_a_signed_call_is_heard, 120)
{
    rig_t r;
    rig_init(&r);
    const char *speech = path_in(&r, "speech.wav");
    make_speech(&r, "Strangers hold nothing here", speech);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--max-calls", "2",
                                 "--max-pending-streams-per-peer", "64", NULL},
           NULL);
    /* Five times --max-calls upgraded streams that never show a token. */
    enum { N = 10 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = ws_upgrade(r.vb_port);
        ws_text(fds[i], "{\"event\":\"connected\",\"protocol\":\"Call\","
                        "\"version\":\"1.0.0\"}");
    }
    sim_t s;
    sim_start(&r, &s, 0, speech, NULL, NULL);
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = proc_read_file(r.vb_log);
    assert_sim_ok(out, vblog);
    assert_nothing_lost(m);
    ASSERT_EQ(msum(m, "vb_twilio_stream_rejected_total", "lane_full"), 0);
    /* Every stranger was closed at the start deadline, none reached the
     * model: the only session is the signed call's. */
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(ws_close_code(fds[i], proc_ms(10000)), 1008);
        close(fds[i]);
    }
    free(m);
    m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_twilio_stream_rejected_total", "no_start"), N);
    ASSERT_EQ(msum(m, "vb_gemini_sessions_total", NULL), 1);
    free(m);
    free(out);
    free(vblog);
    free(rig_vb_stop(&r));
    rig_stop(&r);
}

TEST_T(ping_flood_from_strangers_keeps_memory_bounded, 120)
{
    rig_t r;
    rig_init(&r);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--max-pending-streams", "200",
                                 "--max-pending-streams-per-peer", "200",
                                 "--stream-start-timeout-ms", "20000", NULL},
           NULL);
    enum { N = 120 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = ws_upgrade(r.vb_port);
    long before = rss_kb(r.vb);
    /* Each sends masked pings as fast as the socket takes them and reads
     * nothing, for 3 s. */
    uint8_t ping[256];
    char payload[125];
    memset(payload, 'p', sizeof(payload));
    size_t pn =
        tf_frame(ping, sizeof(ping), true, 0x9, true, payload, sizeof(payload));
    uint64_t end = vb_clock_now_ns() + 3000000000ull;
    uint64_t sent = 0;
    while (vb_clock_now_ns() < end) {
        for (int i = 0; i < N; i++) {
            ssize_t k = send(fds[i], ping, pn, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0)
                sent += (uint64_t)k;
        }
    }
    long after = rss_kb(r.vb);
    long grew = after - before;
    printf("# ping flood: %d connections, %llu bytes of pings sent, RSS "
           "%ld -> %ld KiB (+%ld KiB, %ld KiB per connection)\n",
           N, (unsigned long long)sent, before, after, grew, grew / N);
    /* The server still answers. */
    tc_resp_t resp;
    ASSERT_EQ(tc_request(r.vb_port, "GET /healthz HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    tc_free_resp(&resp);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    /* Bound: a stranger stops being read once 16 KiB of pongs are unsent;
     * with the WebSocket, TCP and JSON buffers that is under 256 KiB a
     * connection (~30 MiB for 120; before, 16 MiB each). Sanitizer builds
     * keep freed memory in quarantine, so only the plain build asserts. */
    if (plain_build() && grew > (long)N * 256)
        vb_test_fail(__FILE__, __LINE__, "RSS grew %ld KiB for %d strangers",
                     grew, N);
    free(rig_vb_stop(&r));
    rig_stop(&r);
}

/* Sends `n` media frames as fast as the socket takes them; stops early if
 * the server has closed. */
static void media_burst(int fd, const char *call, int n)
{
    static uint8_t buf[1024];
    char json[512];
    for (int i = 0; i < n; i++) {
        snprintf(json, sizeof(json),
                 "{\"event\":\"media\",\"sequenceNumber\":\"%d\",\"media\":{"
                 "\"track\":\"inbound\",\"chunk\":\"%d\",\"timestamp\":\"%d\","
                 "\"payload\":\"%s\"},\"streamSid\":\"MZ%s\"}",
                 i + 2, i + 1, i * 20,
                 "//////////////////////////////////////////////////////////"
                 "//////////////////////////////////////////////////////////"
                 "//////////////////////////////////////////////////////////"
                 "//////////////////////////////////////////",
                 call);
        size_t k =
            tf_frame(buf, sizeof(buf), true, 0x1, true, json, strlen(json));
        if (send(fd, buf, k, MSG_NOSIGNAL) != (ssize_t)k)
            return;
    }
}

TEST_T(reused_token_fast_media_and_silence_leave_a_real_call_alone, 120)
{
    rig_t r;
    rig_init(&r);
    const char *speech = path_in(&r, "speech.wav");
    make_speech(&r, "The real caller is still heard while others misbehave",
                speech);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--media-timeout-ms", "1500", NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, speech, NULL, NULL);
    /* One token, two streams: the second is refused. */
    const char *tok = valid_token("CAtwice");
    int a = forged_stream(r.vb_port, "CAtwice", tok);
    char *text;
    proc_wait_log(r.vb_log, "stream started", r.vb, proc_ms(10000), &text);
    free(text);
    int b = forged_stream(r.vb_port, "CAtwice", tok);
    ASSERT_EQ(ws_close_code(b, proc_ms(5000)), 1008);
    close(b);
    /* Media at many times real time: dropped past the burst, then closed. */
    int f = forged_stream(r.vb_port, "CAfast", valid_token("CAfast"));
    media_burst(f, "CAfast", 1500);
    ASSERT_EQ(ws_close_code(f, proc_ms(10000)), 1008);
    close(f);
    /* The first stream sends nothing after `start`: closed for silence. */
    ASSERT_EQ(ws_close_code(a, proc_ms(10000)), 1008);
    close(a);
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    /* Nothing of the real call was lost. The fast stream's own audio may
     * overflow its session's prebuffer (process-wide counters would show
     * that), so the real call is judged by its own summary line. */
    static const char *const zero[] = {"vb_twilio_protocol_errors_total",
                                       "vb_twilio_inbound_dropped_bytes_total",
                                       "vb_twilio_audio_dropped_bytes_total",
                                       "vb_twilio_sequence_gaps_total",
                                       "vb_dsp_errors_total",
                                       NULL};
    for (int i = 0; zero[i] != NULL; i++)
        ASSERT_EQ(msum(m, zero[i], NULL), 0);
    int real = 0;
    for (char *l = vblog; l != NULL && *l; l = strchr(l, '\n')) {
        l += *l == '\n';
        char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        char line[2048];
        snprintf(line, sizeof(line), "%.*s", (int)(n < 2047 ? n : 2047), l);
        if (strstr(line, "gemini call finished") == NULL ||
            strstr(line, "CAtwice") || strstr(line, "CAfast"))
            continue;
        real++;
        if (strstr(line, "audio_dropped=0 ") == NULL)
            vb_test_fail(__FILE__, __LINE__, "the real call lost audio: %s",
                         line);
    }
    ASSERT_EQ(real, 1);
    ASSERT_EQ(msum(m, "vb_twilio_stream_rejected_total", "duplicate"), 1);
    ASSERT_GT(msum(m, "vb_twilio_inbound_throttled_bytes_total", NULL), 0);
    ASSERT_EQ(msum(m, "vb_calls_total", "timeout"), 1);
    ASSERT_STR_CONTAINS(vblog, "media faster than real time");
    ASSERT_STR_CONTAINS(vblog, "stream token already used");
    free(m);
    free(out);
    free(vblog);
}

/* Connects to 127.0.0.1:port from `src` (another loopback address, so it
 * counts as another peer); non-blocking. */
static int connect_from(int port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    ASSERT_EQ(inet_pton(AF_INET, src, &sa.sin_addr), 1);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* A signed voice webhook for `sid`, as Twilio posts it. */
static void signed_webhook(const rig_t *r, const char *sid, char *req, size_t n)
{
    char form[256], url[128], sig[VB_TWILIO_SIG_LEN + 1];
    snprintf(form, sizeof(form),
             "AccountSid=AC0&CallSid=%s&CallStatus=ringing&From=%%2B1415555"
             "0123&To=%%2B18005550100",
             sid);
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, form, strlen(form), 0), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/webhook/voice", r->vb_port);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, &f, sig), 0);
    vb_form_free(&f);
    snprintf(req, n,
             "POST /webhook/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
             sig, strlen(form), form);
}

/* Status of one request on a fresh connection from 127.0.0.1; the body
 * (malloc'd) in *body when asked for. */
static int probe(int port, const char *req, char **body)
{
    tc_resp_t resp = {0};
    int st = tc_request(port, req, &resp, proc_ms(5000));
    if (body != NULL)
        *body = resp.body ? strdup(resp.body) : NULL;
    tc_free_resp(&resp);
    return st;
}

/* 1 s tone bursts with 1 s gaps, `seconds` long: utterances the echo
 * model answers. */
static const char *tone_bursts(const rig_t *r, int seconds)
{
    const char *audio = path_in(r, "bursts.wav");
    char fx[128];
    snprintf(fx, sizeof(fx), "synth 1 sine 400 vol 0.3 pad 0 1 repeat %d",
             seconds / 2 - 1);
    make_sox(audio, fx);
    return audio;
}

/* Slow bodies from two addresses fill --max-connections: half trickle a
 * byte every 250 ms (cut by --min-body-rate after its 5 s grace), half
 * send fast enough for the rate but never finish (cut by
 * --request-timeout-ms). Meanwhile /healthz and signed webhooks from a
 * third address keep succeeding, and a real call is heard with nothing
 * lost. */
TEST_T(slow_bodies_at_the_connection_cap_leave_health_and_webhooks_alone, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = tone_bursts(&r, 12);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    /* 32 connections, 16 per address (1/8 of the cap, at least 16). */
    rig_vb(&r,
           (const char *const[]){
               "--max-connections", "32", "--request-timeout-ms", "8000",
               "--min-body-rate", "1024", "--drain-timeout", "3", NULL},
           NULL);
    enum { PER = 16, N = 2 * PER };
    static const char *const from[2] = {"127.0.0.2", "127.0.0.3"};
    int fds[N];
    double cut_ms[N];
    bool got408[N];
    static const char head[] =
        "POST /webhook/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 60000\r\n\r\n";
    double t0 = tc_now_ms();
    for (int i = 0; i < N; i++) {
        fds[i] = connect_from(r.vb_port, from[i / PER]);
        ASSERT_EQ(send(fds[i], head, sizeof(head) - 1, MSG_NOSIGNAL),
                  (ssize_t)sizeof(head) - 1);
        cut_ms[i] = -1;
        got408[i] = false;
    }
    /* A 17th from one address is refused at once. */
    int extra = connect_from(r.vb_port, from[0]);
    char buf[4096];
    bool closed;
    int fl = fcntl(extra, F_GETFL);
    ASSERT_EQ(fcntl(extra, F_SETFL, fl & ~O_NONBLOCK), 0);
    tc_recv_until_close(extra, buf, sizeof(buf), proc_ms(5000), &closed);
    close(extra);
    ASSERT_STR_CONTAINS(buf, "HTTP/1.1 503");

    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char junk[300];
    memset(junk, 'a', sizeof(junk));
    int open = N, probes = 0, hooks = 0;
    double next_probe = 0;
    while (open > 0) {
        if (tc_now_ms() - t0 > proc_ms(30000))
            vb_test_fail(__FILE__, __LINE__,
                         "%d slow connections still open after 30 s", open);
        for (int i = 0; i < N; i++) {
            if (cut_ms[i] >= 0)
                continue;
            ssize_t k = recv(fds[i], buf, sizeof(buf) - 1, 0);
            if (k > 0) {
                buf[k] = '\0';
                got408[i] |= strstr(buf, "HTTP/1.1 408") != NULL;
            }
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                cut_ms[i] = tc_now_ms() - t0;
                open--;
                continue;
            }
            /* Even: a byte each round; odd: 300 bytes (1200 B/s). */
            send(fds[i], junk, i % 2 ? sizeof(junk) : 1,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (tc_now_ms() >= next_probe) {
            next_probe = tc_now_ms() + 1000;
            ASSERT_EQ(probe(r.vb_port, "GET /healthz HTTP/1.1\r\n\r\n", NULL),
                      200);
            char sid[32], req[1024], *body;
            snprintf(sid, sizeof(sid), "CAprobe%d", hooks++);
            signed_webhook(&r, sid, req, sizeof(req));
            ASSERT_EQ(probe(r.vb_port, req, &body), 200);
            ASSERT_STR_CONTAINS(body, "/media-stream/");
            free(body);
            probes++;
        }
        usleep(250000);
    }
    int n408 = 0;
    double last = 0;
    for (int i = 0; i < N; i++) {
        close(fds[i]);
        n408 += got408[i];
        last = cut_ms[i] > last ? cut_ms[i] : last;
    }
    printf("# %d slow bodies: %d answered 408, all cut within %.1f s; %d "
           "health checks and %d signed webhooks answered meanwhile\n",
           N, n408, last / 1000, probes, hooks);
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    assert_nothing_lost(m);
    ASSERT_GT(field(out, "bytes_heard"), 8000);
    /* Every slow connection was cut: by its deadline (408, counted on
     * route "other") or evicted to make room for another address. Each was
     * seen cut on the client side too (cut_ms, above). */
    double evicted = msum(m, "vb_http_connections_evicted_total", NULL);
    double timed_out =
        msum(m, "vb_http_requests_total", "route=\"other\",code=\"408\"");
    printf("# server: %.0f answered 408, %.0f evicted\n", timed_out, evicted);
    /* At least once each (one evicted as its 408 went out counts twice). */
    ASSERT_GE(timed_out + evicted, N);
    ASSERT_GT(timed_out, 0);
    ASSERT_GT(n408, 0);
    ASSERT_EQ(msum(m, "vb_http_connections_refused_total", "per_peer"), 1);
    ASSERT_STR_CONTAINS(vblog, "reason=\"request body too slow\"");
    ASSERT_STR_CONTAINS(vblog, "reason=\"request timed out\"");
    free(m);
    free(out);
    free(vblog);
}

/* One signed webhook replayed 50 times while a call is live: the same
 * answer each time, no capacity taken (another call still gets through at
 * --max-calls 3: the live call, the replayed call's one reservation, the
 * new call), /readyz stays 200, and the live call loses nothing. */
TEST_T(replayed_webhook_takes_no_capacity_beside_a_live_call, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = tone_bursts(&r, 12);
    const char *speech = path_in(&r, "speech.wav");
    make_speech(&r, "A replay takes no seat", speech);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(
        &r,
        (const char *const[]){"--max-calls", "3", "--drain-timeout", "3", NULL},
        NULL);
    sim_t live;
    sim_start(&r, &live, 0, audio, NULL, NULL);
    char *text;
    proc_wait_log(r.vb_log, "stream started", r.vb, proc_ms(10000), &text);
    free(text);
    enum { N = 50 };
    char req[1024], *first = NULL;
    signed_webhook(&r, "CAreplayed", req, sizeof(req));
    for (int i = 0; i < N; i++) {
        char *body;
        ASSERT_EQ(probe(r.vb_port, req, &body), 200);
        ASSERT_STR_CONTAINS(body, "/media-stream/");
        if (first == NULL)
            first = body;
        else {
            ASSERT_STR_EQ(body, first);
            free(body);
        }
    }
    free(first);
    ASSERT_EQ(probe(r.vb_admin_port, "GET /readyz HTTP/1.1\r\n\r\n", NULL),
              200);
    sim_t other;
    sim_start(&r, &other, 1, speech, NULL, NULL);
    char *out2 = sim_wait(&r, &other);
    char *out = sim_wait(&r, &live);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    assert_sim_ok(out2, vblog);
    assert_nothing_lost(m);
    ASSERT_GT(field(out, "bytes_heard"), 8000);
    ASSERT_EQ(msum(m, "vb_webhook_replays_total", NULL), N - 1);
    ASSERT_EQ(msum(m, "vb_calls_rejected_total", NULL), 0);
    ASSERT_STR_CONTAINS(vblog, "voice webhook repeated");
    /* The replays opened no Gemini session: the two calls' and at most
     * the replayed call's one pre-connect. */
    cJSON *evs = fake_events(&r);
    ASSERT_LE(count_type(evs, "setup"), 3);
    cJSON_Delete(evs);
    free(m);
    free(out);
    free(out2);
    free(vblog);
}
