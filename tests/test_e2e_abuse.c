/* SPDX-License-Identifier: MIT */
/*
 * Outsiders against the real binaries on loopback (vb-sim, voxbridge,
 * vb-fake-gemini from $VB_BUILD_DIR): streams that never authenticate,
 * a ping flood that never reads, a stream token used twice, media faster
 * than real time and a stream that goes silent. Each gets its stated
 * answer, none reaches the model, and a real call beside them is heard
 * with nothing lost.
 */
#include <sys/socket.h>

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
