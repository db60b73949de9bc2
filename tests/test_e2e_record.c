/* SPDX-License-Identifier: MIT */
/*
 * Call recording through the real binaries (tests/e2e.h): voxbridge with
 * --record-dir writes <CallSid>.opus, decoded here with libopusfile and
 * brought to 8 kHz with the project's resampler, then checked against what
 * vb-sim sent (left) and heard (right): stereo, 16 kHz input, as long as
 * the call, both channels correlated after alignment, barge-in-cleared
 * audio absent; a SIGKILL leaves a file playable up to near the kill; a
 * recorder slowed on purpose drops recording frames, never call audio; the
 * post-call report names the file only when the recorder made it; an
 * assistant's "record" decides for its calls, and "record": true without
 * --record-dir is refused at start and on reload.
 */
#include <dirent.h>
#include <opus/opusfile.h>
#include <sys/stat.h>

#include "core/b64.h"
#include "dsp/resampler.h"
#include "tests/e2e.h"
#include "tests/example_app.h"

typedef struct rec {
    int16_t *ch[2]; /* 8 kHz, left then right */
    size_t n;       /* samples per channel */
    int channels;
    uint32_t input_rate;
    char sid[64];
} rec_t;

/* The one .opus file in `dir` (its CallSid in r->sid); fails if none. */
static void rec_find(const char *dir, char *path, size_t n, rec_t *r)
{
    DIR *d = opendir(dir);
    ASSERT_NOT_NULL(d);
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".opus") == 0) {
            snprintf(path, n, "%s/%s", dir, e->d_name);
            snprintf(r->sid, sizeof(r->sid), "%.*s", (int)(len - 5), e->d_name);
            found++;
        }
    }
    closedir(d);
    if (found != 1)
        vb_test_fail(__FILE__, __LINE__, "%d recordings in %s", found, dir);
}

/* Decodes a recording (as far as it is readable) into two 8 kHz
 * channels. */
static void rec_decode(const char *path, rec_t *r)
{
    int err = 0;
    OggOpusFile *of = op_open_file(path, &err);
    if (of == NULL)
        vb_test_fail(__FILE__, __LINE__, "op_open_file(%s): %d", path, err);
    const OpusHead *h = op_head(of, -1);
    r->channels = h->channel_count;
    r->input_rate = h->input_sample_rate;
    size_t cap = 48000 * 10, n48 = 0;
    int16_t *pcm = malloc(cap * 2 * sizeof(int16_t));
    ASSERT_NOT_NULL(pcm);
    for (;;) {
        if (n48 + 5760 > cap) {
            cap *= 2;
            pcm = realloc(pcm, cap * 2 * sizeof(int16_t));
            ASSERT_NOT_NULL(pcm);
        }
        int k = op_read_stereo(of, pcm + 2 * n48, 5760 * 2);
        if (k == OP_HOLE)
            continue;
        if (k <= 0)
            break; /* the end, or a truncated last page */
        n48 += (size_t)k;
    }
    op_free(of);
    vb_resampler_config_t rc = {VB_RESAMPLER_SPEEXDSP,
                                VB_RESAMPLER_QUALITY_DEFAULT, 48000, 8000};
    int16_t *mono = malloc((n48 + 1) * sizeof(int16_t));
    ASSERT_NOT_NULL(mono);
    for (int c = 0; c < 2; c++) {
        vb_resampler_t *rs;
        ASSERT_EQ(vb_resampler_create(&rs, &rc), 0);
        for (size_t i = 0; i < n48; i++)
            mono[i] = pcm[2 * i + (size_t)c];
        r->ch[c] = malloc((n48 / 6 + 8) * sizeof(int16_t));
        ASSERT_NOT_NULL(r->ch[c]);
        size_t got = 0;
        ASSERT_EQ(
            vb_resampler_process(rs, mono, n48, r->ch[c], n48 / 6 + 8, &got),
            0);
        r->n = got;
        vb_resampler_destroy(rs);
    }
    free(mono);
    free(pcm);
}

static void rec_free(rec_t *r)
{
    free(r->ch[0]);
    free(r->ch[1]);
}

/* Best correlation of a and b, either leading, within max_lag samples. */
static double xcorr2(const int16_t *a, size_t na, const int16_t *b, size_t nb,
                     size_t max_lag, long *lag)
{
    size_t l1 = 0, l2 = 0;
    double c1 = best_xcorr(a, na, b, nb, max_lag, &l1);
    double c2 = best_xcorr(b, nb, a, na, max_lag, &l2);
    *lag = c1 >= c2 ? (long)l1 : -(long)l2;
    return c1 >= c2 ? c1 : c2;
}

static const char *rec_dir(const rig_t *r)
{
    const char *d = path_in(r, "rec");
    mkdir(d, 0755);
    return d;
}

/* Loud 20 ms blocks (RMS > 300): how many, and the last one. */
static size_t loud_blocks(const int16_t *s, size_t n, size_t *last)
{
    size_t k = 0;
    *last = 0;
    for (size_t b = 0; b < n / FRAME; b++)
        if (block_rms(s, n, b) > 300) {
            k++;
            *last = b;
        }
    return k;
}

/* The flags byte of the last Ogg page in `path`: 0x04 is end-of-stream. */
static int last_page_flags(const char *path)
{
    FILE *f = fopen(path, "rb");
    ASSERT_NOT_NULL(f);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    int flags = -1;
    for (size_t i = 0; i + 27 <= n; i++)
        if (memcmp(buf + i, "OggS", 4) == 0 && buf[i + 4] == 0)
            flags = buf[i + 5];
    return flags;
}

TEST_T(recorded_call_is_stereo_caller_left_heard_right_as_long_as_the_call, 120)
{
    rig_t r;
    rig_init(&r);
    const char *speech = path_in(&r, "speech.wav");
    const char *heard = path_in(&r, "heard.wav");
    const char *dir = rec_dir(&r);
    make_speech(&r, "Hello, this call is recorded in stereo by the bridge",
                speech);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--record-dir", dir, NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, speech, heard,
              (const char *const[]){"--tail", "5", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    assert_nothing_lost(m);

    char path[600];
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_find(dir, path, sizeof(path), &rec);
    ASSERT_STR_CONTAINS(out, rec.sid); /* named after the CallSid */
    ASSERT_STR_CONTAINS(vblog, "msg=\"recording finished\"");
    ASSERT_EQ(last_page_flags(path) & 0x04, 0x04); /* ended: EOS page */
    rec_decode(path, &rec);
    ASSERT_EQ(rec.channels, 2);
    ASSERT_EQ(rec.input_rate, 16000);

    /* As long as the call: the stream ran frames_sent ticks of 20 ms. */
    double call_s = (double)field(out, "frames_sent") * 0.02;
    double rec_s = (double)rec.n / 8000.0;
    printf("  call %.3f s, recording %.3f s\n", call_s, rec_s);
    ASSERT_NEAR(rec_s, call_s, 0.1);

    /* Left: what the caller said; right: what the caller heard. */
    size_t ns, nh;
    int16_t *said = read_wav(speech, &ns);
    int16_t *got = read_wav(heard, &nh);
    long lag_l = 0, lag_r = 0;
    double cl = xcorr2(said, ns, rec.ch[0], rec.n, 4000, &lag_l);
    double cr = xcorr2(got, nh, rec.ch[1], rec.n, 4000, &lag_r);
    printf("  left~said %.3f at %ld, right~heard %.3f at %ld samples\n", cl,
           lag_l, cr, lag_r);
    if (cl < 0.8 || cr < 0.8)
        vb_test_fail(__FILE__, __LINE__,
                     "correlation left %.3f right %.3f < 0.8\n%s", cl, cr, out);
    /* Both on the call's timeline: the caller's words start where they
     * were sent (the first tick, 20 ms in), the echo where it played. */
    ASSERT_LT(labs(lag_l - 160), 400);
    ASSERT_LT(labs(lag_r), 400);
    /* The two channels are not the same signal: the caller's speech ends
     * before the echo (which comes after it) is heard. */
    size_t last_l, last_r;
    ASSERT_GT(loud_blocks(rec.ch[0], rec.n, &last_l), 20);
    ASSERT_GT(loud_blocks(rec.ch[1], rec.n, &last_r), 20);
    ASSERT_GT(last_r, last_l);

    ASSERT_GT(msum(m, "vb_recording_bytes_total", NULL), 1000);
    ASSERT_EQ(msum(m, "vb_recording_files_total", NULL), 1);
    ASSERT_EQ(msum(m, "vb_recording_dropped_frames_total", NULL), 0);
    ASSERT_EQ(msum(m, "vb_recording_errors_total", NULL), 0);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    rec_free(&rec);
    free(said);
    free(got);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(barge_in_cleared_audio_is_not_in_the_recording, 120)
{
    rig_t r;
    rig_init(&r);
    /* As test_e2e's barge-in case: the model starts an 8 s answer at
     * about 1.5 s, the caller talks over it from 2.5 s, and hangs up at
     * 5.3 s. Most of the answer was sent and never heard. */
    const char *audio = path_in(&r, "caller.wav");
    const char *heard = path_in(&r, "heard.wav");
    const char *dir = rec_dir(&r);
    make_sox(audio, "synth 1 sine 300 vol 0.5 pad 0 1.5 : synth 2.5 sine "
                    "300 vol 0.5");
    rig_fake(&r, (const char *const[]){"--mode", "tone", "--tone-ms", "8000",
                                       "--tone-hz", "1000", NULL});
    rig_vb(&r, (const char *const[]){"--record-dir", dir, NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, heard,
              (const char *const[]){"--tail", "0.3", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_GE(field(out, "clears"), 1);
    ASSERT_GT(field(out, "bytes_cleared"), 4000); /* half a second unheard */

    char path[600];
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_find(dir, path, sizeof(path), &rec);
    rec_decode(path, &rec);
    size_t nh;
    int16_t *got = read_wav(heard, &nh);
    size_t last_h, last_r;
    size_t loud_h = loud_blocks(got, nh, &last_h);
    size_t loud_r = loud_blocks(rec.ch[1], rec.n, &last_r);
    printf("  heard %zu loud blocks (last %.2f s), recorded %zu (last %.2f "
           "s)\n",
           loud_h, last_h * 0.02, loud_r, last_r * 0.02);
    ASSERT_GT(loud_h, 10);
    /* The answer is recorded as heard: until the clear, not a block of
     * what was cleared (a frame of slack each way for the playout
     * estimate). */
    ASSERT_GT(field(out, "bytes_received") / FRAME, (long long)loud_r + 20);
    ASSERT_LE(last_r, last_h + 3);
    ASSERT_LE(loud_r, loud_h + 3);
    ASSERT_GE(loud_r + 3, loud_h);
    long lag = 0;
    double cr = xcorr2(got, nh, rec.ch[1], rec.n, 4000, &lag);
    printf("  right~heard %.3f at %ld\n", cr, lag);
    ASSERT_DBL_OP(cr, >=, 0.8);
    rec_free(&rec);
    free(got);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(sigkill_mid_call_leaves_a_recording_playable_up_to_near_the_kill, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    const char *dir = rec_dir(&r);
    make_sox(audio, "synth 20 sine 440 vol 0.5");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--record-dir", dir, NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    char *text;
    proc_wait_log(r.vb_log, "msg=\"recording started\"", r.vb, proc_ms(15000),
                  &text);
    free(text);
    uint64_t t0 = vb_clock_now_ns();
    /* Let the call run about 5 s, then kill voxbridge outright. */
    while (vb_clock_now_ns() - t0 < 5 * VB_NS_PER_SEC)
        usleep(20000);
    kill(r.vb, SIGKILL);
    double ran_s = (double)(vb_clock_now_ns() - t0) / 1e9;
    proc_reap(r.vb, proc_ms(10000));
    proc_reap(s.pid, proc_ms(30000)); /* its stream was cut: it fails */
    rig_stop(&r);

    char path[600];
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_find(dir, path, sizeof(path), &rec);
    ASSERT_EQ(last_page_flags(path) & 0x04, 0); /* cut short, no EOS */
    rec_decode(path, &rec);
    double rec_s = (double)rec.n / 8000.0;
    printf("  killed after %.2f s: %.2f s of recording decode\n", ran_s, rec_s);
    ASSERT_EQ(rec.channels, 2);
    /* Pages go out at least every second of audio, 250 ms behind real
     * time; a kill loses at most that. */
    ASSERT_DBL_OP(rec_s, >=, ran_s - 2.0);
    ASSERT_DBL_OP(rec_s, <=, ran_s + 0.5);
    /* And what decodes is the caller's tone. */
    size_t last;
    ASSERT_GT(loud_blocks(rec.ch[0], rec.n, &last), (size_t)(rec_s * 40));
    rec_free(&rec);
}

/* One echo call of `speech` with `more` voxbridge arguments: vb-sim's
 * output, voxbridge's metrics and log, and where the echo lies in what
 * the caller heard (samples after the call's start). */
typedef struct echo_run {
    char *out, *m, *vblog;
    size_t lag;
    double corr;
} echo_run_t;

static void echo_call(rig_t *r, const char *speech, const char *heard,
                      const char *const *more, echo_run_t *e)
{
    /* A second run must not find the first one's listening lines. */
    unlink(r->fake_out);
    unlink(r->vb_log);
    rig_fake(r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(r, more, NULL);
    sim_t s;
    sim_start(r, &s, 0, speech, heard,
              (const char *const[]){"--tail", "5", NULL});
    e->out = sim_wait(r, &s);
    e->m = metrics(r);
    e->vblog = rig_vb_stop(r);
    rig_stop(r);
    assert_sim_ok(e->out, e->vblog);
    assert_nothing_lost(e->m);
    size_t ns, nh;
    int16_t *said = read_wav(speech, &ns);
    int16_t *got = read_wav(heard, &nh);
    e->lag = 0;
    e->corr = best_xcorr(said, ns, got, nh, nh - ns / 2, &e->lag);
    free(said);
    free(got);
}

static void echo_free(echo_run_t *e)
{
    free(e->out);
    free(e->m);
    free(e->vblog);
}

TEST_T(a_recorder_falling_behind_drops_recording_frames_never_call_audio, 150)
{
    rig_t r;
    rig_init(&r);
    const char *speech = path_in(&r, "speech.wav");
    const char *heard = path_in(&r, "heard.wav");
    const char *dir = rec_dir(&r);
    char ref_dir[400];
    snprintf(ref_dir, sizeof(ref_dir), "%s/rec-ref", r.dir);
    mkdir(ref_dir, 0755);
    make_speech(&r, "A slow disk must never hold up the call audio", speech);
    /* The same call with a recorder that keeps up: the reference. */
    echo_run_t ref, slow;
    echo_call(&r, speech, heard,
              (const char *const[]){"--record-dir", ref_dir, NULL}, &ref);
    ASSERT_EQ(msum(ref.m, "vb_recording_dropped_frames_total", NULL), 0);
    /* 64 slots and 50 ms per message: the recorder takes 20 messages a
     * second, fewer than the call sends it (the caller's frames and the
     * echo), so a producer that waited for it would fall ever further
     * behind. */
    echo_call(&r, speech, heard,
              (const char *const[]){"--record-dir", dir, "--record-queue", "64",
                                    "--record-test-delay-us", "50000", NULL},
              &slow);

    /* Every frame the caller sent reached the model, and the echo was
     * heard whole. */
    long long sent = field(slow.out, "frames_sent");
    ASSERT_EQ(msum(slow.m, "vb_twilio_media_in_total", NULL), (double)sent);
    const char *sum = strstr(slow.vblog, "msg=\"call summary\"");
    ASSERT_NOT_NULL(sum);
    ASSERT_EQ(field(sum, "frames_in"), sent);
    printf("  echo %.3f at %.3f s (reference %.3f at %.3f s); first audio "
           "%.0f ms (reference %.0f ms); recording frames dropped %.0f\n",
           slow.corr, slow.lag / 8000.0, ref.corr, ref.lag / 8000.0,
           (double)field(slow.out, "first_audio_ms"),
           (double)field(ref.out, "first_audio_ms"),
           msum(slow.m, "vb_recording_dropped_frames_total", NULL));
    fflush(stdout); /* seen even if an assertion below ends the case */
    ASSERT_DBL_OP(slow.corr, >=, 0.8);
    /* Not later either: a recorder that held twilio-io for its 20 ms per
     * message would put the echo (and the first audio) seconds behind the
     * reference; scheduling noise is far below the 300 ms allowed. */
    ASSERT_LT(labs((long)slow.lag - (long)ref.lag), 300 * 8);
    ASSERT_LT(field(slow.out, "first_audio_ms"),
              field(ref.out, "first_audio_ms") + 300);
    /* The recorder could not keep up, and said so. */
    ASSERT_GT(msum(slow.m, "vb_recording_dropped_frames_total", NULL), 50);
    /* Its file is still a valid recording of the whole call. */
    char path[600];
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_find(dir, path, sizeof(path), &rec);
    rec_decode(path, &rec);
    ASSERT_EQ(rec.channels, 2);
    ASSERT_NEAR((double)rec.n / 8000.0, (double)sent * 0.02, 0.1);
    rec_free(&rec);
    echo_free(&ref);
    echo_free(&slow);
}

/* POST /test/audio on voxbridge's admin listener, with CORS. */
static int post_audio(int port, const char *body, tc_resp_t *resp)
{
    size_t n = strlen(body);
    char *req = malloc(n + 512);
    ASSERT_NOT_NULL(req);
    sprintf(req,
            "POST /test/audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Origin: https://app.example\r\nContent-Type: application/json\r\n"
            "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
            n, body);
    int st = tc_request(port, req, resp, proc_ms(10000));
    free(req);
    return st;
}

/* POSTs `n` bytes of `format` audio (sampleRate `rate`, 0: left out);
 * expects 200 and returns the parsed answer. */
static cJSON *post_format(int port, const char *format, int rate,
                          const uint8_t *p, size_t n)
{
    char *a = malloc(vb_b64_encoded_len(n) + 1);
    ASSERT_NOT_NULL(a);
    a[vb_b64_encode(a, p, n)] = '\0';
    char *body = malloc(strlen(a) + 128);
    ASSERT_NOT_NULL(body);
    char sr[32] = "";
    if (rate > 0)
        snprintf(sr, sizeof(sr), ",\"sampleRate\":%d", rate);
    sprintf(body, "{\"audioData\":\"%s\",\"format\":\"%s\"%s}", a, format, sr);
    tc_resp_t resp;
    int st = post_audio(port, body, &resp);
    if (st != 200)
        vb_test_fail(__FILE__, __LINE__, "%s: status %d: %s", format, st,
                     resp.body ? resp.body : "");
    cJSON *j = cJSON_Parse(resp.body);
    ASSERT_NOT_NULL(j);
    tc_free_resp(&resp);
    free(body);
    free(a);
    return j;
}

TEST_T(test_audio_on_the_admin_listener_answers_json_with_cors, 90)
{
    rig_t r;
    rig_init(&r);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--cors-origin", "https://app.example", NULL},
           NULL);
    /* 1 s of a 440 Hz sine at half scale, as μ-law. */
    int16_t pcm[8000];
    uint8_t ul[8000];
    for (int i = 0; i < 8000; i++)
        pcm[i] = (int16_t)(16384 * sin(2 * M_PI * 440 * i / 8000.0));
    for (int i = 0; i < 8000; i++) {
        /* G.711 μ-law by its definition (the test does not borrow the
         * server's codec). */
        int s = pcm[i], sign = s < 0 ? 0x80 : 0;
        if (s < 0)
            s = -s;
        s = (s > 32635 ? 32635 : s) + 0x84;
        int exp = 7;
        for (int m = 0x4000; (s & m) == 0 && exp > 0; m >>= 1)
            exp--;
        ul[i] = (uint8_t) ~(sign | exp << 4 | ((s >> (exp + 3)) & 0x0f));
    }
    char *a = malloc(vb_b64_encoded_len(sizeof(ul)) + 1);
    a[vb_b64_encode(a, ul, sizeof(ul))] = '\0';
    char *body = malloc(strlen(a) + 128);
    sprintf(body,
            "{\"audioData\":\"%s\",\"format\":\"mulaw\",\"sampleRate\":8000}",
            a);
    tc_resp_t resp;
    char v[128];
    ASSERT_EQ(post_audio(r.vb_admin_port, body, &resp), 200);
    ASSERT_TRUE(
        tc_header(resp.head, "Access-Control-Allow-Origin", v, sizeof(v)));
    ASSERT_STR_EQ(v, "https://app.example");
    cJSON *j = cJSON_Parse(resp.body);
    ASSERT_NOT_NULL(j);
    cJSON *in = cJSON_GetObjectItem(j, "input");
    cJSON *ib = cJSON_GetObjectItem(j, "inbound");
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "duration_ms")),
                1000, 1);
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "rms")),
                0.5 / sqrt(2), 0.02);
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(ib, "samples")), 16000);
    ASSERT_NOT_NULL(cJSON_GetObjectItem(j, "outbound"));
    cJSON_Delete(j);
    tc_free_resp(&resp);

    /* A bad one: 400 with the reason, CORS all the same. */
    ASSERT_EQ(post_audio(r.vb_admin_port,
                         "{\"audioData\":\"AAAA\",\"format\":\"wav\"}", &resp),
              400);
    ASSERT_STR_CONTAINS(resp.body, "format");
    ASSERT_TRUE(
        tc_header(resp.head, "Access-Control-Allow-Origin", v, sizeof(v)));
    tc_free_resp(&resp);
    /* The preflight, the wrong method, the public listener. */
    ASSERT_EQ(tc_request(r.vb_admin_port,
                         "OPTIONS /test/audio HTTP/1.1\r\nHost: x\r\n"
                         "Origin: https://app.example\r\n"
                         "Connection: close\r\n\r\n",
                         &resp, proc_ms(5000)),
              204);
    ASSERT_TRUE(
        tc_header(resp.head, "Access-Control-Allow-Methods", v, sizeof(v)));
    ASSERT_STR_CONTAINS(v, "POST");
    tc_free_resp(&resp);
    ASSERT_EQ(tc_request(r.vb_admin_port,
                         "GET /test/audio HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n",
                         &resp, proc_ms(5000)),
              405);
    tc_free_resp(&resp);
    ASSERT_EQ(post_audio(r.vb_port, body, &resp), 404);
    tc_free_resp(&resp);
    /* Over the endpoint's own limit (3/4 of --max-body-bytes, 48 KiB):
     * 400 with the reason; over --max-body-bytes (64 KiB): refused by the
     * HTTP layer before it is read, 413. */
    char *huge = malloc(70000 + 64);
    memset(huge, 'A', 70000);
    huge[70000] = '\0';
    char *hb = malloc(70000 + 128);
    sprintf(hb, "{\"audioData\":\"%.55000s\",\"format\":\"mulaw\"}", huge);
    ASSERT_EQ(post_audio(r.vb_admin_port, hb, &resp), 400);
    j = cJSON_Parse(resp.body);
    ASSERT_NOT_NULL(j);
    ASSERT_STR_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItem(j, "error")),
                        "over this endpoint's limit of 49152");
    cJSON_Delete(j);
    ASSERT_TRUE(
        tc_header(resp.head, "Access-Control-Allow-Origin", v, sizeof(v)));
    tc_free_resp(&resp);
    sprintf(hb, "{\"audioData\":\"%s\",\"format\":\"mulaw\"}", huge);
    ASSERT_EQ(post_audio(r.vb_admin_port, hb, &resp), 413);
    tc_free_resp(&resp);
    free(hb);
    free(huge);
    /* The other two formats over HTTP: 1 s of the sine as linear16 at
     * 16 kHz, and as Ogg/Opus (opusenc from opus-tools). */
    uint8_t le[32000];
    for (int i = 0; i < 16000; i++) {
        int16_t x = (int16_t)(16384 * sin(2 * M_PI * 440 * i / 16000.0));
        le[2 * i] = (uint8_t)(x & 0xff);
        le[2 * i + 1] = (uint8_t)((uint16_t)x >> 8);
    }
    j = post_format(r.vb_admin_port, "linear16", 16000, le, sizeof(le));
    in = cJSON_GetObjectItem(j, "input");
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "sample_rate")),
              16000);
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "duration_ms")),
                1000, 1);
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "rms")),
                0.5 / sqrt(2), 0.02);
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(
                  cJSON_GetObjectItem(j, "inbound"), "samples")),
              16000);
    ASSERT_GE(cJSON_GetNumberValue(cJSON_GetObjectItem(
                  cJSON_GetObjectItem(j, "outbound"), "frames")),
              50);
    cJSON_Delete(j);
    const char *wav = path_in(&r, "sine.wav");
    const char *ogg = path_in(&r, "sine.opus");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "sox -n -r 48000 -c 1 -b 16 '%s' synth 1 sine 440 vol 0.5 && "
             "opusenc --quiet '%s' '%s'",
             wav, wav, ogg);
    proc_sh(cmd);
    FILE *f = fopen(ogg, "rb");
    ASSERT_NOT_NULL(f);
    static uint8_t ob[32768];
    size_t on = fread(ob, 1, sizeof(ob), f);
    fclose(f);
    ASSERT_GT(on, 100);
    ASSERT_LT(on, sizeof(ob));
    j = post_format(r.vb_admin_port, "opus", 0, ob, on);
    in = cJSON_GetObjectItem(j, "input");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(in, "format")),
                  "opus");
    ASSERT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "sample_rate")),
              48000);
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "duration_ms")),
                1000, 30);
    ASSERT_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(in, "rms")),
                0.5 / sqrt(2), 0.05);
    ASSERT_GE(cJSON_GetNumberValue(cJSON_GetObjectItem(
                  cJSON_GetObjectItem(j, "inbound"), "frames")),
              49);
    ASSERT_NOT_NULL(cJSON_GetObjectItem(j, "outbound"));
    cJSON_Delete(j);
    char *m = metrics(&r);
    ASSERT_GE(msum(m, "vb_http_requests_total", "route=\"test_audio\""), 6);
    free(m);
    free(body);
    free(a);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    free(vblog);
}

TEST_T(a_drain_finishes_the_recording_with_its_end_of_stream_page, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    const char *dir = rec_dir(&r);
    make_sox(audio, "synth 15 sine 300 vol 0.4");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--record-dir", dir, "--drain-timeout", "1",
                                 NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *text;
    proc_wait_log(r.vb_log, "msg=\"recording started\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    uint64_t t0 = vb_clock_now_ns();
    while (vb_clock_now_ns() - t0 < 2 * VB_NS_PER_SEC)
        usleep(20000);
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    proc_reap(s.pid, proc_ms(30000));
    char *out = proc_read_file(s.out);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    ASSERT_STR_CONTAINS(vblog, "outcome=shutdown");
    ASSERT_STR_CONTAINS(vblog, "msg=\"recording finished\"");

    char path[600];
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_find(dir, path, sizeof(path), &rec);
    ASSERT_EQ(last_page_flags(path) & 0x04, 0x04);
    rec_decode(path, &rec);
    ASSERT_EQ(rec.channels, 2);
    double rec_s = (double)rec.n / 8000.0;
    double call_s = (double)field(out, "frames_sent") * 0.02;
    printf("  drained: call %.2f s, recording %.2f s\n", call_s, rec_s);
    ASSERT_NEAR(rec_s, call_s, 0.1);
    size_t last;
    ASSERT_GT(loud_blocks(rec.ch[0], rec.n, &last), (size_t)(rec_s * 40));
    rec_free(&rec);
    free(out);
    free(vblog);
}

/* The CallSid on vb-sim's summary line (which starts with it). */
static void sim_sid(const char *out, char sid[64])
{
    const char *p = strstr(out, "call_sid=");
    ASSERT_NOT_NULL(p);
    ASSERT_EQ(sscanf(p + 9, "%63s", sid), 1);
}

/* The post-call report (--events-url, received by build/vb-example-app)
 * names the recording only when the recorder made it: the first call's
 * report names DIR/<CallSid>.opus, which decodes; the second call's file
 * cannot be created (the directory is gone) and its report says null. */
TEST_T(the_report_names_the_recording_only_when_the_recorder_made_it, 150)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    const char *dir = rec_dir(&r);
    char gone[400], spool[400], store[400], app_out[400], url[96];
    snprintf(gone, sizeof(gone), "%s/rec-moved", r.dir);
    snprintf(spool, sizeof(spool), "%s/spool", r.dir);
    snprintf(store, sizeof(store), "%s/store", r.dir);
    snprintf(app_out, sizeof(app_out), "%s/app.out", r.dir);
    int app_port = proc_free_port();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/events", app_port);
    make_sox(audio, "synth 2 sine 300 vol 0.4");
    app_t app;
    app_start(&app, app_port, "rec-secret", store, app_out, NULL);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--record-dir", dir, "--events-url", url,
                                 "--events-spool", spool, "--webhook-secret",
                                 "rec-secret", NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    cJSON *reps = app_wait_reports(&app, 1, proc_ms(15000));
    const cJSON *rep = cJSON_GetArrayItem(reps, 0);
    char sid[64], want[600];
    sim_sid(out, sid);
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                      cJSON_GetObjectItem(rep, "call"), "sid")),
                  sid);
    snprintf(want, sizeof(want), "%s/%s.opus", dir, sid);
    const char *named =
        cJSON_GetStringValue(cJSON_GetObjectItem(rep, "recording"));
    ASSERT_NOT_NULL(named);
    ASSERT_STR_EQ(named, want);
    /* The named file is there and decodes; the recorder finishes it
     * (fsync, then the log line) on its own thread, maybe after the
     * report went. */
    char *text;
    proc_wait_log(r.vb_log, "msg=\"recording finished\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_decode(named, &rec);
    ASSERT_EQ(rec.channels, 2);
    ASSERT_NEAR((double)rec.n / 8000.0,
                (double)field(out, "frames_sent") * 0.02, 0.1);
    rec_free(&rec);
    cJSON_Delete(reps);
    free(out);

    /* The directory moves away: the next file cannot be created. */
    ASSERT_EQ(rename(dir, gone), 0);
    sim_start(&r, &s, 1, audio, NULL, NULL);
    out = sim_wait(&r, &s);
    reps = app_wait_reports(&app, 2, proc_ms(15000));
    sim_sid(out, sid);
    const cJSON *second = NULL;
    for (int i = 0; i < cJSON_GetArraySize(reps); i++) {
        const cJSON *c = cJSON_GetArrayItem(reps, i);
        const char *csid = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetObjectItem(c, "call"), "sid"));
        if (csid != NULL && strcmp(csid, sid) == 0)
            second = c;
    }
    ASSERT_NOT_NULL(second);
    ASSERT_TRUE(cJSON_IsNull(cJSON_GetObjectItem(second, "recording")));
    char *m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_recording_errors_total", "reason=\"open\""), 1);
    ASSERT_EQ(msum(m, "vb_recording_files_total", NULL), 1);
    free(m);
    /* Its one error is the file it could not create. */
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    app_stop(&app);
    const char *e = strstr(vblog, "level=error");
    ASSERT_NOT_NULL(e);
    ASSERT_STR_CONTAINS(e, "msg=\"cannot start the recording\"");
    ASSERT_NULL(strstr(e + 1, "level=error"));
    ASSERT_NULL(strstr(vblog, "Sanitizer"));
    cJSON_Delete(reps);
    free(vblog);
    free(out);
}

static const char assistants_rec[] =
    "{\"default\": \"front-desk\",\n"
    " \"assistants\": {\n"
    "  \"front-desk\": {\"voice\": \"Kore\"},\n"
    "  \"quiet\": {\"voice\": \"Charon\", \"record\": false}},\n"
    " \"numbers\": {\"+18005550124\": \"quiet\"}}\n";

/* Writes the assistants file beside and renames it (a reload never reads
 * half a file). */
static const char *rec_assistants(const rig_t *r, const char *text)
{
    const char *p = path_in(r, "assistants.json");
    char tmp[420];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    write_file(tmp, text);
    ASSERT_EQ(rename(tmp, p), 0);
    return p;
}

TEST_T(with_record_dir_an_assistant_with_record_false_is_not_recorded, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    const char *dir = rec_dir(&r);
    make_sox(audio, "synth 2 sine 300 vol 0.4");
    const char *file = rec_assistants(&r, assistants_rec);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(
        &r,
        (const char *const[]){"--record-dir", dir, "--assistants", file, NULL},
        NULL);
    /* The recorder asks the call's assistant, named in CALL_OPEN: the
     * number's "quiet" says no, the default records. */
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--to", "+18005550124", NULL});
    char *out_quiet = sim_wait(&r, &s);
    sim_start(&r, &s, 1, audio, NULL, NULL);
    char *out_front = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out_quiet, vblog);
    assert_sim_ok(out_front, vblog);
    char quiet_sid[64], front_sid[64], path[600];
    sim_sid(out_quiet, quiet_sid);
    sim_sid(out_front, front_sid);
    rec_t rec;
    memset(&rec, 0, sizeof(rec));
    rec_find(dir, path, sizeof(path), &rec); /* exactly one file */
    ASSERT_STR_EQ(rec.sid, front_sid);
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s.opus", dir, quiet_sid);
    ASSERT_NE(stat(path, &st), 0);
    ASSERT_EQ(msum(m, "vb_recording_files_total", NULL), 1);
    ASSERT_EQ(msum(m, "vb_recording_errors_total", NULL), 0);
    free(m);
    free(vblog);
    free(out_quiet);
    free(out_front);
}

/* voxbridge with `extra` is expected to refuse to start: its log. */
static char *vb_refuses(rig_t *r, const char *const *extra)
{
    char bin[400], listen[64], pub[64];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", proc_free_port());
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", 1);
    const char *argv[32] = {
        bin, "--listen",         listen,        "--public-url",
        pub, "--metrics-listen", "127.0.0.1:0", "--no-gemini-startup-check"};
    int n = 8;
    for (int i = 0; extra[i] != NULL && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN, "GEMINI_API_KEY=" API_KEY,
                         NULL};
    pid_t pid = proc_spawn(argv, env, r->vb_log);
    ASSERT_NE(proc_reap(pid, proc_ms(10000)), 0);
    char *text = proc_read_file(r->vb_log);
    ASSERT_NOT_NULL(text);
    return text;
}

TEST_T(record_true_without_record_dir_is_refused_at_start_and_on_reload, 90)
{
    rig_t r;
    rig_init(&r);
    /* "quiet" turned into a recording assistant, and its voice changed:
     * that tells the refused file's set from the one kept. */
    char asks[sizeof assistants_rec + 16];
    snprintf(asks, sizeof asks, "%s", assistants_rec);
    char *p = strstr(asks, "\"record\": false");
    memcpy(p, "\"record\": true ", 15);
    p = strstr(asks, "\"Charon\"");
    memcpy(p, "\"Aoede\" ", 8);
    const char *file = rec_assistants(&r, asks);
    char *log =
        vb_refuses(&r, (const char *const[]){"--assistants", file, NULL});
    ASSERT_STR_CONTAINS(log, "assistant \"quiet\": record needs --record-dir");
    free(log);

    /* Started with a file that records nothing, reloaded with one that
     * asks: refused, the previous set stays. */
    rec_assistants(&r, assistants_rec);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--assistants", file, NULL}, NULL);
    rec_assistants(&r, asks);
    kill(r.vb, SIGHUP);
    char *text;
    const char *line =
        proc_wait_log(r.vb_log,
                      "msg=\"SIGHUP: assistants file refused, the previous set "
                      "stays\"",
                      r.vb, proc_ms(5000), &text);
    ASSERT_STR_CONTAINS(line, "record needs --record-dir");
    ASSERT_STR_CONTAINS(line, "quiet");
    free(text);
    /* The kept "quiet" answers its number with its old voice. */
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4");
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--to", "+18005550124", NULL});
    char *out = sim_wait(&r, &s);
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    char *fake = proc_read_file(r.fake_log);
    ASSERT_NOT_NULL(fake);
    ASSERT_STR_CONTAINS(fake, "Charon");
    ASSERT_NULL(strstr(fake, "Aoede"));
    free(fake);
    free(vblog);
    free(out);
}
