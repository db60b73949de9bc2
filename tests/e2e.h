/* SPDX-License-Identifier: MIT */
/*
 * Shared by the end-to-end tests (tests/test_e2e*.c): a rig that starts
 * vb-fake-gemini and voxbridge from $VB_BUILD_DIR with log files in the
 * case's scratch directory, vb-sim calls, what the three programs report
 * (summary fields, /metrics, the fake's event log), and hand-made media
 * streams on a plain socket.
 */
#ifndef VB_TESTS_E2E_H
#define VB_TESTS_E2E_H

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
    int vb_admin_port; /* --metrics-listen: /metrics is not public */
} rig_t;

static inline char *path_in(const rig_t *r, const char *name)
{
    static char bufs[8][400];
    static int next;
    char *p = bufs[next++ & 7];
    snprintf(p, sizeof(bufs[0]), "%s/%s", r->dir, name);
    return p;
}

static inline void rig_init(rig_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s", vb_test_tmpdir());
    snprintf(r->fake_log, sizeof(r->fake_log), "%s/fake.jsonl", r->dir);
    snprintf(r->fake_out, sizeof(r->fake_out), "%s/fake.out", r->dir);
    snprintf(r->vb_log, sizeof(r->vb_log), "%s/voxbridge.log", r->dir);
    snprintf(r->script, sizeof(r->script), "%s/script.jsonl", r->dir);
}

/* Starts the fake with `extra` arguments (NULL-terminated, may be NULL). */
static inline void rig_fake(rig_t *r, const char *const *extra)
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

/* The admin listener's port (--metrics-listen). */
static inline int rig_admin_port(const char *log, pid_t pid, int ms)
{
    return proc_wait_role_port(log, pid, "admin", ms);
}

/* Starts voxbridge pointed at the fake, signatures on, with `extra`
 * arguments; `wrap` (NULL-terminated, may be NULL) goes in front of the
 * binary (valgrind). */
static inline void rig_vb(rig_t *r, const char *const *extra,
                          const char *const *wrap)
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
    /* No drain grace unless a case asks for one (a later flag wins): no
     * proxy here needs time to notice. No start-up check session: these
     * cases count the model's sessions exactly (tests/test_e2e_ops.c
     * covers the check). */
    const char *base[] = {
        bin,           "--listen",      listen, "--public-url",
        pub,           "--gemini-url",  gurl,   "--metrics-listen",
        "127.0.0.1:0", "--drain-grace", "0",    "--no-gemini-startup-check"};
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
    r->vb_admin_port = rig_admin_port(r->vb_log, r->vb, proc_ms(10000));
}

/* Stops voxbridge with SIGTERM and checks it exits 0 with a clean log. */
static inline char *rig_vb_stop(rig_t *r)
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

static inline void rig_stop(rig_t *r)
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
static inline void make_speech(const rig_t *r, const char *text,
                               const char *out)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "espeak-ng -w '%s/raw.wav' '%s' && sox '%s/raw.wav' -r 8000 "
             "-c 1 -b 16 '%s' && rm -f '%s/raw.wav'",
             r->dir, text, r->dir, out, r->dir);
    proc_sh(cmd);
}

/* Runs a sox command writing an 8 kHz WAV (`effects` after `-n ... out`). */
static inline void make_sox(const char *out, const char *effects)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sox -n -r 8000 -c 1 -b 16 '%s' %s", out,
             effects);
    proc_sh(cmd);
}

/* Samples of a 16-bit mono WAV (malloc'd) and their count. */
static inline int16_t *read_wav(const char *path, size_t *n)
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
static inline double best_xcorr(const int16_t *a, size_t na, const int16_t *b,
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
static inline double block_rms(const int16_t *s, size_t n, size_t k)
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

static inline void sim_start(const rig_t *r, sim_t *s, int idx,
                             const char *audio, const char *heard,
                             const char *const *extra)
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
static inline char *sim_wait(const rig_t *r, sim_t *s)
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
static inline long long field(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=", key);
    const char *p = strstr(text, pat);
    if (p == NULL)
        return -1;
    return atoll(p + strlen(pat));
}

static inline const char *sfield(const char *text, const char *key, char *out,
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

static inline char *metrics(const rig_t *r)
{
    tc_resp_t resp;
    /* A case that started voxbridge itself (with --metrics-listen) has not
     * looked the admin port up yet. */
    int port = r->vb_admin_port
                   ? r->vb_admin_port
                   : rig_admin_port(r->vb_log, r->vb, proc_ms(10000));
    ASSERT_EQ(
        tc_request(port, "GET /metrics HTTP/1.1\r\n\r\n", &resp, proc_ms(5000)),
        200);
    return resp.body;
}

/* Sum of every series of `name` (any labels) matching `labels` (a
 * substring of the label set, or NULL for all). */
static inline double msum(const char *text, const char *name,
                          const char *labels)
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
static inline void assert_nothing_lost(const char *m)
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

static inline cJSON *fake_events(const rig_t *r)
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

static inline const char *ev_type(const cJSON *e)
{
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(e, "type"));
    return t ? t : "";
}

static inline int count_type(const cJSON *evs, const char *type)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) n += strcmp(ev_type(e), type) == 0;
    return n;
}

static inline double sum_audio_bytes(const cJSON *evs)
{
    double n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "audio") == 0) n +=
        cJSON_GetNumberValue(cJSON_GetObjectItem(e, "bytes"));
    return n;
}

static inline void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
}

/* Checks vb-sim's summary: a good call, all frames sent, no errors. */
static inline void assert_sim_ok(const char *out, const char *vblog)
{
    char res[16];
    if (strcmp(sfield(out, "result", res, sizeof(res)), "ok") != 0 ||
        field(out, "protocol_errors") != 0 ||
        field(out, "odd_sized_media") != 0)
        vb_test_fail(__FILE__, __LINE__, "call failed: %s\n--- voxbridge:\n%s",
                     out, vblog ? vblog : "");
}

/* Sends one masked text frame on a plain socket. */
static inline void ws_text(int fd, const char *text)
{
    static uint8_t buf[4096];
    size_t n = tf_frame(buf, sizeof(buf), true, 0x1, true, text, strlen(text));
    ASSERT_GT(n, 0);
    tc_send(fd, buf, n);
}

/* Reads server frames (unmasked) from `fd` until a close frame and returns
 * its status code; fails after `ms` or when the socket ends first. */
static inline int ws_close_code(int fd, int ms)
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

/* Opens a WebSocket to the stream path of lane 0 by hand, without a
 * signature; returns the socket after the 101. */
static inline int ws_upgrade(int port)
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
    return fd;
}

/* Opens a media stream on lane 0 by hand and sends `connected` and a
 * `start` for `call` carrying `token`; returns the socket. */
static inline int forged_stream(int port, const char *call, const char *token)
{
    int fd = ws_upgrade(port);
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

#endif
