/* SPDX-License-Identifier: MIT */
/*
 * Whole calls through the real binaries on loopback: build/vb-sim plays
 * Twilio (signed webhook, strict TwiML, signed stream, 20 ms media, playout
 * with marks and clear, REST hang-up API), build/voxbridge bridges, and
 * build/vb-fake-gemini plays Gemini Live (echo, tone or scripted). Each case
 * reads what the three programs report — vb-sim's summary line and heard
 * audio, voxbridge's log and /metrics, the fake's JSON event log — and
 * checks them against each other.
 *
 * The binaries come from $VB_BUILD_DIR, so the ASan and TSan runs of the
 * suite exercise sanitized servers; every case fails on a sanitizer report
 * in voxbridge's log. One case runs voxbridge under valgrind (plain build
 * only).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "net/twilio_sig.h"
#include "tests/http_client.h"
#include "tests/proc.h"
#include "tests/test.h"
#include "tests/ws_frames.h"

#define TOKEN   "e2e-auth-token"
#define SECRET  "e2e-stream-secret"
#define API_KEY "e2e-gemini-key"
#define GPATH                                                    \
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService." \
    "BidiGenerateContent"
#define FRAME 160 /* μ-law bytes per 20 ms */

typedef struct rig {
    char dir[256];
    char fake_log[320], fake_out[320], vb_log[320], script[320];
    pid_t fake, vb;
    int fake_port, vb_port;
} rig_t;

static char *path_in(const rig_t *r, const char *name)
{
    static char bufs[8][400];
    static int next;
    char *p = bufs[next++ & 7];
    snprintf(p, sizeof(bufs[0]), "%s/%s", r->dir, name);
    return p;
}

static void rig_init(rig_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s", vb_test_tmpdir());
    snprintf(r->fake_log, sizeof(r->fake_log), "%s/fake.jsonl", r->dir);
    snprintf(r->fake_out, sizeof(r->fake_out), "%s/fake.out", r->dir);
    snprintf(r->vb_log, sizeof(r->vb_log), "%s/voxbridge.log", r->dir);
    snprintf(r->script, sizeof(r->script), "%s/script.jsonl", r->dir);
}

/* Starts the fake with `extra` arguments (NULL-terminated, may be NULL). */
static void rig_fake(rig_t *r, const char *const *extra)
{
    char bin[400];
    snprintf(bin, sizeof(bin), "%s/vb-fake-gemini", proc_build_dir());
    const char *argv[40] = {bin,     "--listen", "127.0.0.1:0", "--api-key",
                            API_KEY, "--log",    r->fake_log};
    int n = 7;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 39; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    r->fake = proc_spawn(argv, NULL, r->fake_out);
    char *text;
    const char *p = proc_wait_log(r->fake_out, "listening on ", r->fake,
                                  proc_ms(10000), &text);
    size_t len = strcspn(p, "\n");
    const char *colon = NULL;
    for (const char *q = p; q < p + len; q++)
        if (*q == ':')
            colon = q;
    ASSERT_NOT_NULL(colon);
    r->fake_port = atoi(colon + 1);
    free(text);
    ASSERT_GT(r->fake_port, 0);
}

/* Starts voxbridge pointed at the fake, signatures on, with `extra`
 * arguments; `wrap` (NULL-terminated, may be NULL) goes in front of the
 * binary (valgrind). */
static void rig_vb(rig_t *r, const char *const *extra, const char *const *wrap)
{
    char bin[400], listen[64], pub[64], gurl[256];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    r->vb_port = proc_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", r->vb_port);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r->vb_port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, r->fake_port);
    const char *argv[64];
    int n = 0;
    for (int i = 0; wrap != NULL && wrap[i] != NULL; i++)
        argv[n++] = wrap[i];
    const char *base[] = {bin, "--listen",     listen, "--public-url",
                          pub, "--gemini-url", gurl};
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        argv[n++] = base[i];
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 63; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                         "VOXBRIDGE_STREAM_SECRET=" SECRET,
                         "GEMINI_API_KEY=" API_KEY, NULL};
    r->vb = proc_spawn(argv, env, r->vb_log);
    int port =
        proc_wait_port(r->vb_log, r->vb, proc_ms(wrap != NULL ? 60000 : 10000));
    ASSERT_EQ(port, r->vb_port);
}

/* Stops voxbridge with SIGTERM and checks it exits 0 with a clean log. */
static char *rig_vb_stop(rig_t *r)
{
    kill(r->vb, SIGTERM);
    int st = proc_reap(r->vb, proc_ms(30000));
    char *text = proc_read_file(r->vb_log);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "voxbridge exited %d:\n%s", st,
                     text ? text : "");
    ASSERT_NOT_NULL(text);
    if (strstr(text, "Sanitizer") != NULL || strstr(text, "runtime error") ||
        strstr(text, "level=error") != NULL)
        vb_test_fail(__FILE__, __LINE__, "voxbridge log has errors:\n%s", text);
    return text;
}

static void rig_stop(rig_t *r)
{
    if (r->fake > 0) {
        kill(r->fake, SIGTERM);
        proc_reap(r->fake, proc_ms(10000));
        char *out = proc_read_file(r->fake_out);
        if (out != NULL && (strstr(out, "Sanitizer") != NULL ||
                            strstr(out, "runtime error") != NULL))
            vb_test_fail(__FILE__, __LINE__, "vb-fake-gemini:\n%s", out);
        free(out);
    }
}

/* ---- audio ---- */

/* Writes an 8 kHz mono 16-bit WAV made by espeak-ng speaking `text`. */
static void make_speech(const rig_t *r, const char *text, const char *out)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "espeak-ng -w '%s/raw.wav' '%s' && sox '%s/raw.wav' -r 8000 "
             "-c 1 -b 16 '%s' && rm -f '%s/raw.wav'",
             r->dir, text, r->dir, out, r->dir);
    proc_sh(cmd);
}

/* Runs a sox command writing an 8 kHz WAV (`effects` after `-n ... out`). */
static void make_sox(const char *out, const char *effects)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sox -n -r 8000 -c 1 -b 16 '%s' %s", out,
             effects);
    proc_sh(cmd);
}

/* Samples of a 16-bit mono WAV (malloc'd) and their count. */
static int16_t *read_wav(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        vb_test_fail(__FILE__, __LINE__, "cannot open %s", path);
    uint8_t hdr[12];
    ASSERT_EQ(fread(hdr, 1, 12, f), 12);
    ASSERT_MEM_EQ(hdr, "RIFF", 4);
    for (;;) {
        uint8_t ch[8];
        if (fread(ch, 1, 8, f) != 8)
            vb_test_fail(__FILE__, __LINE__, "no data chunk in %s", path);
        uint32_t len = (uint32_t)ch[4] | (uint32_t)ch[5] << 8 |
                       (uint32_t)ch[6] << 16 | (uint32_t)ch[7] << 24;
        if (memcmp(ch, "data", 4) == 0) {
            int16_t *s = malloc(len + 2);
            ASSERT_NOT_NULL(s);
            *n = fread(s, 1, len, f) / 2;
            fclose(f);
            return s;
        }
        fseek(f, (long)(len + (len & 1)), SEEK_CUR);
    }
}

/* Best normalised cross-correlation of `b` against `a` over lags 0..max. */
static double best_xcorr(const int16_t *a, size_t na, const int16_t *b,
                         size_t nb, size_t max_lag, size_t *at)
{
    double ea = 0;
    for (size_t i = 0; i < na; i++)
        ea += (double)a[i] * a[i];
    double best = 0;
    for (size_t lag = 0; lag <= max_lag && lag < nb; lag++) {
        double xy = 0, eb = 0;
        size_t n = na < nb - lag ? na : nb - lag;
        for (size_t i = 0; i < n; i++) {
            xy += (double)a[i] * b[i + lag];
            eb += (double)b[i + lag] * b[i + lag];
        }
        if (ea > 0 && eb > 0 && xy / sqrt(ea * eb) > best) {
            best = xy / sqrt(ea * eb);
            *at = lag;
        }
    }
    return best;
}

/* RMS of 20 ms block `k` of `s`. */
static double block_rms(const int16_t *s, size_t n, size_t k)
{
    double e = 0;
    size_t from = k * FRAME, to = from + FRAME < n ? from + FRAME : n;
    for (size_t i = from; i < to; i++)
        e += (double)s[i] * s[i];
    return to > from ? sqrt(e / (double)(to - from)) : 0;
}

/* ---- vb-sim ---- */

typedef struct sim {
    pid_t pid;
    char out[400];
} sim_t;

static void sim_start(const rig_t *r, sim_t *s, int idx, const char *audio,
                      const char *heard, const char *const *extra)
{
    char bin[400], hook[128], api[64];
    snprintf(bin, sizeof(bin), "%s/vb-sim", proc_build_dir());
    snprintf(hook, sizeof(hook), "http://127.0.0.1:%d/webhook/voice",
             r->vb_port);
    snprintf(api, sizeof(api), "127.0.0.1:%d", 0);
    snprintf(s->out, sizeof(s->out), "%s/sim-%d.out", r->dir, idx);
    const char *argv[48] = {
        bin,       "call", "--webhook", hook, "--auth-token", TOKEN,
        "--audio", audio,  "--timeout", "60", "--api-listen", api};
    int n = 12;
    if (heard != NULL) {
        argv[n++] = "--heard";
        argv[n++] = heard;
    }
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 47; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s->pid = proc_spawn(argv, NULL, s->out);
}

/* Waits for vb-sim; returns its malloc'd output, failing on a non-zero
 * exit (with voxbridge's log). */
static char *sim_wait(const rig_t *r, sim_t *s)
{
    int st = proc_reap(s->pid, proc_ms(90000));
    char *text = proc_read_file(s->out);
    if (st != 0) {
        char *vb = proc_read_file(r->vb_log);
        vb_test_fail(__FILE__, __LINE__,
                     "vb-sim exited %d:\n%s\n--- voxbridge:\n%s", st,
                     text ? text : "", vb ? vb : "");
    }
    ASSERT_NOT_NULL(text);
    return text;
}

/* Integer field `key` of vb-sim's summary line (or any key=value text);
 * -1 when absent. */
static long long field(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=", key);
    const char *p = strstr(text, pat);
    if (p == NULL)
        return -1;
    return atoll(p + strlen(pat));
}

static const char *sfield(const char *text, const char *key, char *out,
                          size_t n)
{
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=", key);
    const char *p = strstr(text, pat);
    out[0] = '\0';
    if (p != NULL)
        snprintf(out, n, "%.*s", (int)strcspn(p + strlen(pat), " \n"),
                 p + strlen(pat));
    return out;
}

/* ---- voxbridge's metrics and log ---- */

static char *metrics(const rig_t *r)
{
    tc_resp_t resp;
    ASSERT_EQ(tc_request(r->vb_port, "GET /metrics HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    return resp.body;
}

/* Sum of every series of `name` (any labels) matching `labels` (a
 * substring of the label set, or NULL for all). */
static double msum(const char *text, const char *name, const char *labels)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n')) {
        if (*p == '\n')
            p++;
        if (strncmp(p, name, nl) != 0 || (p[nl] != '{' && p[nl] != ' '))
            continue;
        const char *sp = strchr(p, ' ');
        const char *eol = strchr(p, '\n');
        if (sp == NULL || (eol != NULL && sp > eol))
            continue;
        if (labels != NULL) {
            char *m = strstr(p, labels);
            if (m == NULL || m > sp)
                continue;
        }
        sum += atof(sp + 1);
    }
    return sum;
}

/* Asserts every loss and protocol-error counter is zero. */
static void assert_nothing_lost(const char *m)
{
    static const char *const zero[] = {"vb_twilio_protocol_errors_total",
                                       "vb_twilio_inbound_dropped_bytes_total",
                                       "vb_twilio_audio_dropped_bytes_total",
                                       "vb_twilio_sequence_gaps_total",
                                       "vb_dsp_errors_total",
                                       "vb_gemini_bad_messages_total",
                                       NULL};
    for (int i = 0; zero[i] != NULL; i++)
        if (msum(m, zero[i], NULL) != 0)
            vb_test_fail(__FILE__, __LINE__, "%s is %g:\n%s", zero[i],
                         msum(m, zero[i], NULL), m);
    /* Audio dropped by the gemini stage, for any reason but a call that
     * had already ended. */
    double lost = msum(m, "vb_gemini_dropped_total", NULL) -
                  msum(m, "vb_gemini_dropped_total", "call_ended");
    if (lost != 0)
        vb_test_fail(__FILE__, __LINE__, "gemini dropped %g:\n%s", lost, m);
}

/* ---- the fake's event log ---- */

static cJSON *fake_events(const rig_t *r)
{
    char *text = proc_read_file(r->fake_log);
    ASSERT_NOT_NULL(text);
    cJSON *arr = cJSON_CreateArray();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        if (o == NULL)
            vb_test_fail(__FILE__, __LINE__, "bad fake log line: %s", line);
        cJSON_AddItemToArray(arr, o);
    }
    free(text);
    return arr;
}

static const char *ev_type(const cJSON *e)
{
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(e, "type"));
    return t ? t : "";
}

static int count_type(const cJSON *evs, const char *type)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) n += strcmp(ev_type(e), type) == 0;
    return n;
}

static double sum_audio_bytes(const cJSON *evs)
{
    double n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "audio") == 0) n +=
        cJSON_GetNumberValue(cJSON_GetObjectItem(e, "bytes"));
    return n;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
}

/* Checks vb-sim's summary: a good call, all frames sent, no errors. */
static void assert_sim_ok(const char *out, const char *vblog)
{
    char res[16];
    if (strcmp(sfield(out, "result", res, sizeof(res)), "ok") != 0 ||
        field(out, "protocol_errors") != 0 ||
        field(out, "odd_sized_media") != 0)
        vb_test_fail(__FILE__, __LINE__, "call failed: %s\n--- voxbridge:\n%s",
                     out, vblog ? vblog : "");
}

/* ---- cases ---- */

TEST_T(full_call_caller_hears_the_echo_and_no_frame_is_lost, 120)
{
    rig_t r;
    rig_init(&r);
    const char *speech = path_in(&r, "speech.wav");
    const char *heard = path_in(&r, "heard.wav");
    make_speech(&r, "Hello, this is a test call through the voice bridge",
                speech);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, speech, heard,
              (const char *const[]){"--tail", "6", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);

    /* The echo: what the caller heard correlates with what it said. */
    size_t ns, nh, lag = 0;
    int16_t *said = read_wav(speech, &ns);
    int16_t *got = read_wav(heard, &nh);
    ASSERT_GT(nh, ns);
    double c = best_xcorr(said, ns, got, nh, nh - ns / 2, &lag);
    if (c < 0.8)
        vb_test_fail(__FILE__, __LINE__,
                     "cross-correlation %.3f < 0.8 (lag %zu)\n%s", c, lag, out);
    printf("  echo: cross-correlation %.3f at %.2f s\n", c, lag / 8000.0);
    /* The echo comes after the speech ended, not before. */
    ASSERT_GT(lag, ns / 2);

    /* Nothing lost: frames sent = frames voxbridge took in = 20 ms PCM
     * frames that reached the model. */
    long long sent = field(out, "frames_sent");
    ASSERT_GE(sent, (long long)(ns / FRAME));
    const char *sum = strstr(vblog, "msg=\"call summary\"");
    ASSERT_NOT_NULL(sum);
    ASSERT_EQ(field(sum, "frames_in"), sent);
    ASSERT_EQ(msum(m, "vb_twilio_media_in_total", NULL), (double)sent);
    cJSON *evs = fake_events(&r);
    ASSERT_EQ(count_type(evs, "setup"), 1);
    ASSERT_EQ(sum_audio_bytes(evs), (double)sent * 640);
    /* What voxbridge sent, the caller received, all whole frames. */
    ASSERT_EQ(field(out, "media_received"), field(sum, "frames_out"));
    ASSERT_GT(field(out, "bytes_heard"), (long long)ns / 2);
    assert_nothing_lost(m);
    /* The caller hung up: Twilio's `stop` ended it. */
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"stop\""), 1);
    ASSERT_EQ(msum(m, "vb_calls_total", NULL), 1);
    ASSERT_STR_CONTAINS(sum, "outcome=stop");
    /* One transcript line per utterance, and the summary. */
    ASSERT_STR_CONTAINS(vblog, "msg=transcript");
    cJSON_Delete(evs);
    free(said);
    free(got);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(barge_in_clears_and_the_interrupted_turn_is_never_heard, 120)
{
    rig_t r;
    rig_init(&r);
    /* 1 s of speech-like tone, 1.5 s of silence (the model starts an 8 s
     * answer), then 2.5 s of talking over it, and hang up at once. */
    const char *audio = path_in(&r, "caller.wav");
    const char *heard = path_in(&r, "heard.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.5 pad 0 1.5 : synth 2.5 sine "
                    "300 vol 0.5");
    rig_fake(&r, (const char *const[]){"--mode", "tone", "--tone-ms", "8000",
                                       "--tone-hz", "1000", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, heard,
              (const char *const[]){"--tail", "0.3", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);

    ASSERT_GE(field(out, "clears"), 1);
    ASSERT_GT(field(out, "bytes_cleared"), 0);
    ASSERT_GE(msum(m, "vb_barge_in_seconds_count", NULL), 1);
    cJSON *evs = fake_events(&r);
    ASSERT_GE(count_type(evs, "sent"), 1);

    /* The heard audio (one 20 ms block per tick, silence when nothing
     * plays): the answer is heard before the caller talks again, and
     * within a second of the caller's second burst (2.5 s in) it is gone
     * for good. */
    size_t nh;
    int16_t *got = read_wav(heard, &nh);
    size_t blocks = nh / FRAME, heard_before = 0, last_loud = 0;
    for (size_t k = 0; k < blocks; k++) {
        if (block_rms(got, nh, k) > 300) {
            last_loud = k;
            if (k < 125)
                heard_before++;
        }
    }
    if (heard_before < 10)
        vb_test_fail(__FILE__, __LINE__,
                     "the answer was not heard before the barge-in: %zu "
                     "blocks\n%s",
                     heard_before, out);
    if (last_loud > 175)
        vb_test_fail(__FILE__, __LINE__,
                     "audio heard %.2f s in, after the barge-in at 2.5 s\n%s",
                     last_loud * 0.02, out);
    cJSON_Delete(evs);
    free(got);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(dtmf_reaches_the_model_as_text, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 2");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(
        &r, &s, 0, audio, NULL,
        (const char *const[]){"--dtmf", "7@0.5,#@1.0", "--tail", "1", NULL});
    char *out = sim_wait(&r, &s);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_EQ(field(out, "dtmf_sent"), 2);

    cJSON *evs = fake_events(&r);
    int seen7 = 0, seenh = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        if (strcmp(ev_type(e), "text") != 0)
            continue;
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(e, "text"));
        seen7 += t != NULL && strchr(t, '7') != NULL;
        seenh += t != NULL && strchr(t, '#') != NULL;
    }
    if (seen7 != 1 || seenh != 1)
        vb_test_fail(__FILE__, __LINE__, "dtmf texts 7:%d #:%d\n%s", seen7,
                     seenh, proc_read_file(r.fake_log));
    ASSERT_STR_CONTAINS(vblog, "digit=7");
    cJSON_Delete(evs);
    free(vblog);
    free(out);
}

TEST_T(end_call_hangs_up_through_rest_after_the_goodbye_plays, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 8");
    /* A 1.5 s goodbye, then end_call; the turn completes at 1.2 s, long
     * before the goodbye has played at real time. */
    write_file(r.script,
               "{\"at_ms\":300,\"type\":\"audio\",\"ms\":1500,\"hz\":600}\n"
               "{\"at_ms\":500,\"type\":\"toolCall\",\"name\":\"end_call\","
               "\"id\":\"call-1\"}\n"
               "{\"at_ms\":1100,\"type\":\"generationComplete\"}\n"
               "{\"at_ms\":1200,\"type\":\"turnComplete\"}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    char api[64];
    int api_port = proc_free_port();
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", api_port);
    rig_vb(&r, (const char *const[]){"--twilio-api-url", api, NULL}, NULL);
    sim_t s;
    char apil[64];
    snprintf(apil, sizeof(apil), "127.0.0.1:%d", api_port);
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--api-listen", apil, NULL});
    char *out = sim_wait(&r, &s);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    char by[16];
    if (strcmp(sfield(out, "ended_by", by, sizeof(by)), "rest") != 0)
        vb_test_fail(__FILE__, __LINE__, "ended_by=%s\n%s\n%s", by, out, vblog);
    ASSERT_EQ(field(out, "rest_requests"), 1);
    /* The goodbye played in full before the hang-up, and the call ended
     * long before the caller's 8 s of audio ran out. */
    ASSERT_GE(field(out, "bytes_heard"), 8000 * 14 / 10);
    ASSERT_LT(field(out, "frames_sent"), 6 * 50);
    ASSERT_GE(field(out, "marks_echoed"), 1);
    cJSON *evs = fake_events(&r);
    ASSERT_EQ(count_type(evs, "toolResponse"), 1);
    ASSERT_STR_CONTAINS(vblog, "msg=\"model ended the call\"");
    cJSON_Delete(evs);
    free(vblog);
    free(out);
}

/* Sends the caller's audio through a session the fake ends mid-call, with
 * `script` deciding how; checks the second connection resumed and every
 * frame reached the model once across both connections, except at most
 * `max_lost` frames: those already written to a connection the server had
 * just closed (after an abrupt close nothing says which audio the service
 * took; after goAway nothing may be lost). Never a duplicate. */
static void resume_case(const char *script_text, long long max_lost)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 4 sine 300 vol 0.3");
    write_file(r.script, script_text);
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    ASSERT_EQ(count_type(evs, "setup"), 2);
    int resumed = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0) resumed +=
        cJSON_IsTrue(cJSON_GetObjectItem(e, "resumed"));
    ASSERT_EQ(resumed, 1);
    long long sent = field(out, "frames_sent");
    double got = sum_audio_bytes(evs);
    if (got > (double)sent * 640 || got < (double)(sent - max_lost) * 640)
        vb_test_fail(__FILE__, __LINE__,
                     "model got %.0f bytes for %lld frames (%lld, at most "
                     "%lld frames short)\n%s",
                     got, sent, sent * 640, max_lost, vblog);
    if (got != (double)sent * 640)
        printf("  %.0f frame(s) were in flight on the closed connection\n",
               ((double)sent * 640 - got) / 640);
    ASSERT_GE(msum(m, "vb_gemini_reconnects_total", NULL), 1);
    ASSERT_STR_CONTAINS(vblog, "reconnects=1");
    assert_nothing_lost(m);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(gemini_goaway_mid_call_resumes_without_losing_frames, 90)
{
    resume_case("{\"at_ms\":1500,\"conn\":1,\"type\":\"resumption\","
                "\"resumable\":true}\n"
                "{\"at_ms\":1600,\"conn\":1,\"type\":\"goAway\","
                "\"timeLeft\":\"1s\"}\n",
                0);
}

TEST_T(gemini_close_1011_mid_call_resumes_losing_only_frames_in_flight, 90)
{
    resume_case("{\"at_ms\":1500,\"conn\":1,\"type\":\"resumption\","
                "\"resumable\":true}\n"
                "{\"at_ms\":1600,\"conn\":1,\"type\":\"close\",\"code\":1011,"
                "\"reason\":\"Internal error occurred.\"}\n",
                5);
}

/* Sends one masked text frame on a plain socket. */
static void ws_text(int fd, const char *text)
{
    static uint8_t buf[4096];
    size_t n = tf_frame(buf, sizeof(buf), true, 0x1, true, text, strlen(text));
    ASSERT_GT(n, 0);
    tc_send(fd, buf, n);
}

/* Reads server frames (unmasked) from `fd` until a close frame and returns
 * its status code; fails after `ms` or when the socket ends first. */
static int ws_close_code(int fd, int ms)
{
    static char buf[65536];
    size_t got = 0;
    for (;;) {
        while (got >= 2) {
            size_t len = (uint8_t)buf[1] & 0x7f, hdr = 2;
            if (len == 126) {
                if (got < 4)
                    break;
                len = (size_t)(uint8_t)buf[2] << 8 | (uint8_t)buf[3];
                hdr = 4;
            } else if (len == 127) {
                vb_test_fail(__FILE__, __LINE__, "huge frame from voxbridge");
            }
            if (got < hdr + len)
                break;
            if (((uint8_t)buf[0] & 0x0f) == 0x8)
                return len >= 2 ? (uint8_t)buf[hdr] << 8 | (uint8_t)buf[hdr + 1]
                                : 1005;
            memmove(buf, buf + hdr + len, got - hdr - len);
            got -= hdr + len;
        }
        ASSERT_LT(got, sizeof(buf));
        ssize_t k = tc_recv_some(fd, buf + got, sizeof(buf) - got, ms);
        if (k <= 0)
            vb_test_fail(__FILE__, __LINE__, "no close frame (%zd)", k);
        got += (size_t)k;
    }
}

/* Opens a media stream on lane 0 by hand and sends `connected` and a
 * `start` for `call` carrying `token`; returns the socket. */
static int forged_stream(int port, const char *call, const char *token)
{
    int fd = tc_connect(port);
    tc_send_str(fd, "GET /media-stream/0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n");
    /* Byte by byte up to the end of the head, so no frame is consumed. */
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

TEST_T(wrong_stream_token_never_opens_a_gemini_session, 90)
{
    rig_t r;
    rig_init(&r);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    /* No auth token for this instance, so the hand-made upgrade needs no
     * signature; the stream token is what is checked. */
    char bin[400], listen[64], pub[64], gurl[256];
    snprintf(bin, sizeof(bin), "%s/voxbridge", proc_build_dir());
    r.vb_port = proc_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", r.vb_port);
    snprintf(pub, sizeof(pub), "http://127.0.0.1:%d", r.vb_port);
    snprintf(gurl, sizeof(gurl), "ws://127.0.0.1:%d" GPATH, r.fake_port);
    const char *argv[] = {bin, "--listen",     listen, "--public-url",
                          pub, "--gemini-url", gurl,   NULL};
    const char *env[] = {"VOXBRIDGE_STREAM_SECRET=" SECRET,
                         "GEMINI_API_KEY=" API_KEY, NULL};
    r.vb = proc_spawn(argv, env, r.vb_log);
    ASSERT_EQ(proc_wait_port(r.vb_log, r.vb, proc_ms(10000)), r.vb_port);

    /* Well-formed tokens that must still fail: signed with another
     * secret, minted for another call, expired — and malformed ones. */
    vb_twilio_sig_key_t good, other;
    ASSERT_EQ(vb_twilio_sig_key_init(&good, SECRET), 0);
    ASSERT_EQ(vb_twilio_sig_key_init(&other, "not-" SECRET), 0);
    int64_t now = (int64_t)vb_clock_wall_s();
    char tok[6][VB_TWILIO_TOKEN_LEN + 1];
    const char *calls[6];
    static char sids[6][40];
    for (int i = 0; i < 6; i++) {
        snprintf(sids[i], sizeof(sids[i]), "CAforged%d", i);
        calls[i] = sids[i];
    }
    ASSERT_EQ(
        vb_twilio_sig_token_create(&other, calls[0], 0, now + 600, tok[0]), 0);
    ASSERT_EQ(vb_twilio_sig_token_create(&good, "CAsomeoneelse", 0, now + 600,
                                         tok[1]),
              0);
    ASSERT_EQ(vb_twilio_sig_token_create(&good, calls[2], 0, now - 5, tok[2]),
              0);
    snprintf(tok[3], sizeof(tok[3]), "%s", "");
    snprintf(tok[4], sizeof(tok[4]), "%s", "AAAA");
    snprintf(tok[5], sizeof(tok[5]), "%s",
             "eyJub3QiOiJhIHRva2VuIn0.c2lnbmF0dXJl");
    for (int i = 0; i < 6; i++) {
        int fd = forged_stream(r.vb_port, calls[i], tok[i]);
        int code = ws_close_code(fd, proc_ms(5000));
        close(fd);
        if (code != 1008) {
            char *vb = proc_read_file(r.vb_log);
            vb_test_fail(__FILE__, __LINE__, "forged %d: close %d\n%s", i, code,
                         vb ? vb : "");
        }
    }
    char *m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_twilio_stream_rejected_total", NULL), 6);
    ASSERT_EQ(msum(m, "vb_gemini_sessions_total", NULL), 0);
    free(m);

    /* The control: the same hand-made stream with the right token opens
     * a session, so the refusals above were the tokens' doing. */
    ASSERT_EQ(vb_twilio_sig_token_create(&good, "CAgood", 0, now + 600, tok[0]),
              0);
    int fd = forged_stream(r.vb_port, "CAgood", tok[0]);
    char *text;
    proc_wait_log(r.fake_log, "\"type\":\"setup\"", r.fake, proc_ms(10000),
                  &text);
    free(text);
    ws_text(fd, "{\"event\":\"stop\",\"sequenceNumber\":\"2\",\"stop\":{"
                "\"accountSid\":\"AC0\",\"callSid\":\"CAgood\"},"
                "\"streamSid\":\"MZCAgood\"}");
    ASSERT_EQ(ws_close_code(fd, proc_ms(5000)), 1000);
    close(fd);

    m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    ASSERT_EQ(msum(m, "vb_twilio_stream_rejected_total", NULL), 6);
    ASSERT_EQ(msum(m, "vb_gemini_sessions_total", NULL), 1);
    cJSON *evs = fake_events(&r);
    /* One connection reached the model: the control's. */
    ASSERT_EQ(count_type(evs, "setup"), 1);
    ASSERT_EQ(count_type(evs, "open"), 1);
    /* Each refusal logged with its call and why. */
    static const char *const why[6] = {"forged",  "forged", "expired",
                                       "missing", "forged", "forged"};
    for (int i = 0; i < 6; i++) {
        char want[80];
        snprintf(want, sizeof(want), "call=%s reason=%s", calls[i], why[i]);
        ASSERT_STR_CONTAINS(vblog, want);
    }
    cJSON_Delete(evs);
    free(m);
    free(vblog);
}

/* `n` concurrent calls of 3 s each, all checked. */
static void concurrent_calls(int n, const char *const *wrap)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 2");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--lanes", "2", NULL}, wrap);
    sim_t *s = calloc((size_t)n, sizeof(*s));
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < n; i++)
        sim_start(&r, &s[i], i, audio, NULL,
                  (const char *const[]){"--tail", "3", NULL});
    long long frames = 0, heard = 0;
    for (int i = 0; i < n; i++) {
        char *out = sim_wait(&r, &s[i]);
        char *vb = proc_read_file(r.vb_log);
        assert_sim_ok(out, vb);
        free(vb);
        frames += field(out, "frames_sent");
        heard += field(out, "media_received") > 0;
        free(out);
    }
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_nothing_lost(m);
    ASSERT_EQ(msum(m, "vb_twilio_media_in_total", NULL), (double)frames);
    ASSERT_EQ(msum(m, "vb_gemini_sessions_total", NULL), n);
    /* Every call was admitted, handed to a lane and ended by its caller. */
    ASSERT_EQ(msum(m, "vb_calls_rejected_total", NULL), 0);
    ASSERT_EQ(msum(m, "vb_twilio_stream_rejected_total", NULL), 0);
    ASSERT_EQ(msum(m, "vb_stream_handoffs_total", "result=\"ok\""), n);
    ASSERT_EQ(msum(m, "vb_stream_handoffs_total", NULL), n);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"stop\""), n);
    /* A full ring holds its producer back (counted), it never drops:
     * the drop counters above are the ones that must stay 0. */
    printf("  %d calls: %lld frames in, ring full %g times\n", n, frames,
           msum(m, "vb_ring_full_total", NULL));
    /* Every caller heard its echo. */
    ASSERT_EQ(heard, n);
    cJSON *evs = fake_events(&r);
    ASSERT_EQ(sum_audio_bytes(evs), (double)frames * 640);
    ASSERT_EQ(count_type(evs, "setup"), n);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(s);
}

TEST_T(fifty_concurrent_calls_no_errors_no_drops, 180)
{
    /* Under TSan 50 instrumented callers plus the server overrun two
     * cores; the 10-call case below is the TSan run. */
    if (strstr(proc_build_dir(), "tsan") != NULL) {
        printf("  skipped under ThreadSanitizer: see ten_calls_...\n");
        return;
    }
    concurrent_calls(50, NULL);
}

/* Under SANITIZER=thread this is the 10-call TSan run of the whole server
 * (and the ASan run under address,undefined): any report fails it through
 * the log check in rig_vb_stop. */
TEST_T(ten_calls_with_a_clean_sanitizer_log, 180)
{
    /* The sanitized suite must be running a sanitized server. */
    char cmd[512];
    const char *rt = strstr(proc_build_dir(), "tsan")   ? "__tsan_init"
                     : strstr(proc_build_dir(), "asan") ? "__asan_init"
                                                        : NULL;
    if (rt != NULL) {
        snprintf(cmd, sizeof(cmd), "grep -q %s '%s/voxbridge'", rt,
                 proc_build_dir());
        proc_sh(cmd);
    }
    concurrent_calls(10, NULL);
}

TEST_T(one_call_under_valgrind_no_errors_no_leaks, 240)
{
    if (strcmp(proc_build_dir(), "build") != 0) {
        printf("  skipped: valgrind runs on the plain build only\n");
        return;
    }
    if (access("/usr/bin/valgrind", X_OK) != 0)
        vb_test_fail(__FILE__, __LINE__,
                     "/usr/bin/valgrind missing: run make deps");
    rig_t r;
    rig_init(&r);
    const char *speech = path_in(&r, "speech.wav");
    make_speech(&r, "Testing one two three", speech);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, NULL,
           (const char *const[]){"/usr/bin/valgrind", "--leak-check=full",
                                 "--errors-for-leak-kinds=definite",
                                 "--error-exitcode=99", "--quiet", NULL});
    sim_t s;
    sim_start(&r, &s, 0, speech, NULL,
              (const char *const[]){"--tail", "4", NULL});
    char *out = sim_wait(&r, &s);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_GT(field(out, "media_received"), 0);
    if (strstr(vblog, "definitely lost") || strstr(vblog, "Invalid read") ||
        strstr(vblog, "Invalid write") || strstr(vblog, "uninitialised"))
        vb_test_fail(__FILE__, __LINE__, "valgrind:\n%s", vblog);
    free(vblog);
    free(out);
}

TEST_T(sigterm_drains_live_calls_and_turns_new_ones_away, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 3");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--drain-timeout", "30", NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    char *text;
    proc_wait_log(r.vb_log, "msg=\"stream started\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    kill(r.vb, SIGTERM);
    usleep(200000);
    tc_resp_t resp;
    ASSERT_EQ(tc_request(r.vb_port, "GET /readyz HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              503);
    tc_free_resp(&resp);
    /* A new call gets the busy answer: unsigned, so first the 403 proves
     * signatures still hold; then vb-sim's signed webhook hears "busy". */
    const char *audio2 = path_in(&r, "short.wav");
    make_sox(audio2, "trim 0 0.5");
    sim_t s2;
    sim_start(&r, &s2, 1, audio2, NULL, NULL);
    proc_reap(s2.pid, proc_ms(30000));
    char *out2 = proc_read_file(s2.out);
    ASSERT_NOT_NULL(out2);
    ASSERT_STR_CONTAINS(out2, "webhook_status=200");
    ASSERT_STR_CONTAINS(out2, "all our lines are busy");
    char *m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_calls_rejected_total", "reason=\"draining\""), 1);
    ASSERT_EQ(msum(m, "vb_calls_active", NULL), 1);
    free(m);
    /* The live call still completes normally. */
    char *out = sim_wait(&r, &s);
    assert_sim_ok(out, NULL);
    ASSERT_GT(field(out, "media_received"), 0);
    int st = proc_reap(r.vb, proc_ms(30000));
    char *vblog = proc_read_file(r.vb_log);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "exit %d\n%s", st, vblog);
    rig_stop(&r);
    ASSERT_STR_CONTAINS(vblog, "status=0");
    ASSERT_STR_CONTAINS(vblog, "reason=draining");
    /* The turned-away call never opened a stream. */
    if (field(out2, "frames_sent") > 0)
        vb_test_fail(__FILE__, __LINE__, "busy call streamed: %s", out2);
    free(out2);
    free(out);
    free(vblog);
}

TEST_T(drain_timeout_ends_the_remaining_calls_politely, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 14");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--drain-timeout", "1", NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *text;
    proc_wait_log(r.vb_log, "msg=\"stream started\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    double t0 = tc_now_ms();
    kill(r.vb, SIGTERM);
    int st = proc_reap(r.vb, proc_ms(30000));
    double took = tc_now_ms() - t0;
    ASSERT_GE(proc_reap(s.pid, proc_ms(30000)), 0);
    char *out = proc_read_file(s.out);
    ASSERT_NOT_NULL(out);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "exit %d\n%s", st, vblog);
    /* Ended by voxbridge with 1001 "going away" (Twilio then runs the
     * fallback <Say> and <Hangup/>), long before the caller's 15 s were
     * over, and no protocol error on either side. */
    char by[16];
    ASSERT_STR_EQ(sfield(out, "ended_by", by, sizeof(by)), "server");
    ASSERT_EQ(field(out, "close_code"), 1001);
    ASSERT_EQ(field(out, "protocol_errors"), 0);
    ASSERT_STR_CONTAINS(vblog, "outcome=shutdown");
    ASSERT_LT(field(out, "frames_sent"), 10 * 50);
    ASSERT_LT(took, proc_ms(10000));
    ASSERT_STR_CONTAINS(vblog, "msg=\"voxbridge stopped\" status=0");
    free(out);
    free(vblog);
}

/* True when `pid` is gone or a zombie (killed, not yet reaped by init). */
static bool pid_dead(pid_t pid)
{
    char path[64], stat[256] = "";
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *p = strrchr(stat, ')');
    return p == NULL || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
}

/* tests/proc.h's promise: a case that fails (vb_test_fail, which _exits)
 * takes the servers it started with it. */
TEST_T(a_failing_case_leaves_no_server_running, 60)
{
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t c = fork();
    ASSERT_GE(c, 0);
    if (c == 0) {
        close(fds[0]);
        rig_t r;
        rig_init(&r);
        rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
        rig_vb(&r, NULL, NULL);
        pid_t pids[2] = {r.fake, r.vb};
        if (write(fds[1], pids, sizeof(pids)) != (ssize_t)sizeof(pids))
            _exit(2);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        vb_test_fail(__FILE__, __LINE__, "a deliberate failure");
    }
    close(fds[1]);
    pid_t pids[2] = {0, 0};
    ssize_t n = read(fds[0], pids, sizeof(pids));
    close(fds[0]);
    int st;
    ASSERT_EQ(waitpid(c, &st, 0), c);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    ASSERT_EQ(n, (ssize_t)sizeof(pids));
    ASSERT_GT(pids[0], 0);
    ASSERT_GT(pids[1], 0);
    double end = tc_now_ms() + proc_ms(5000);
    while ((!pid_dead(pids[0]) || !pid_dead(pids[1])) && tc_now_ms() < end)
        usleep(10000);
    int alive = 0;
    for (int i = 0; i < 2; i++) {
        if (!pid_dead(pids[i])) {
            kill(pids[i], SIGKILL);
            alive++;
        }
    }
    if (alive != 0)
        vb_test_fail(__FILE__, __LINE__,
                     "%d of the fake (%d) and voxbridge (%d) outlived the "
                     "failed case",
                     alive, (int)pids[0], (int)pids[1]);
}
