/* SPDX-License-Identifier: MIT */
/*
 * How a Gemini Live session begins, pauses and ends, on the real binaries
 * (vb-sim as the caller, vb-fake-gemini as the service, voxbridge between):
 * - the intermittent 1008 closes ("Operation is not implemented, or
 *   supported, or enabled.", "Requested entity was not found.") are
 *   resumed with the handle, the caller keeps hearing the model, /readyz
 *   stays 200;
 * - a goAway that comes before setupComplete: a replacement is opened and
 *   the caller's audio reaches the model through it.
 * The caller's heard audio and the frames the model got are checked.
 */
#include "tests/e2e.h"

#define GENEROUS_S 20.0

static int readyz(const rig_t *r)
{
    tc_resp_t resp = {0};
    int st = tc_request(r->vb_port, "GET /readyz HTTP/1.1\r\n\r\n", &resp,
                        proc_ms(5000));
    tc_free_resp(&resp);
    return st;
}

static int setups(const cJSON *evs, int *resumed)
{
    int n = 0;
    *resumed = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0)
    {
        n++;
        *resumed += cJSON_IsTrue(cJSON_GetObjectItem(e, "resumed"));
    }
    return n;
}

/* The fake closes the first connection mid-call with 1008 `reason` (after
 * a resumption update): voxbridge resumes with the handle, the caller's
 * frames reach the model (except those in flight on the closed
 * connection), the model's answers are heard, nothing fails. */
static void transient_1008_case(const char *reason)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 4 sine 300 vol 0.3");
    char script[512];
    snprintf(script, sizeof(script),
             "{\"at_ms\":1500,\"conn\":1,\"type\":\"resumption\","
             "\"resumable\":true}\n"
             "{\"at_ms\":1600,\"conn\":1,\"type\":\"close\",\"code\":1008,"
             "\"reason\":\"%s\"}\n"
             "{\"at_ms\":300,\"conn\":2,\"type\":\"audio\",\"ms\":800,"
             "\"hz\":500}\n"
             "{\"at_ms\":1200,\"conn\":2,\"type\":\"turnComplete\"}\n",
             reason);
    write_file(r.script, script);
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    int ready = readyz(&r);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    int resumed;
    int n = setups(evs, &resumed);
    if (n != 2 || resumed != 1)
        vb_test_fail(__FILE__, __LINE__, "setups=%d resumed=%d\n%s\n%s", n,
                     resumed, out, vblog);
    long long sent = field(out, "frames_sent");
    double got = sum_audio_bytes(evs);
    /* As for any abrupt close: at most the frames in flight are lost. */
    if (got > (double)sent * 640 || got < (double)(sent - 5) * 640)
        vb_test_fail(__FILE__, __LINE__, "model got %.0f bytes for %lld frames",
                     got, sent);
    /* The 800 ms answer of the resumed session was heard (8 kHz μ-law). */
    printf("  %s: %lld bytes heard, %.0f of %lld frames reached the model\n",
           reason, field(out, "bytes_heard"), got / 640, sent);
    ASSERT_GE(field(out, "bytes_heard"), 8 * 700);
    ASSERT_EQ(ready, 200);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", NULL), 0);
    ASSERT_GE(msum(m, "vb_gemini_reconnects_total", NULL), 1);
    ASSERT_STR_CONTAINS(vblog,
                        "gemini closed the session transiently, resuming");
    ASSERT_STR_CONTAINS(vblog, "outcome=stop");
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}

TEST_T(gemini_1008_operation_not_implemented_is_resumed, 90)
{
    transient_1008_case(
        "Operation is not implemented, or supported, or enabled.");
}

TEST_T(gemini_1008_requested_entity_not_found_is_resumed, 90)
{
    transient_1008_case("Requested entity was not found.");
}

/* A model that is not found still ends the call as a rejection. */
TEST_T(gemini_1008_model_not_found_is_still_a_rejection, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 6 sine 300 vol 0.3");
    write_file(r.script,
               "{\"at_ms\":200,\"conn\":1,\"type\":\"close\",\"code\":1008,"
               "\"reason\":\"models/gemini-x is not found for API version "
               "v1beta, or is not supported for bidiGenerateContent.\"}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL, NULL);
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    ASSERT_NOT_NULL(vblog);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", "reason=\"gemini_rejected\""),
              1);
    ASSERT_STR_CONTAINS(vblog, "gemini model not found");
    ASSERT_NULL(strstr(vblog, "transiently"));
    free(m);
    free(vblog);
    free(out);
}

/* goAway before setupComplete on the first connection: a replacement is
 * opened, every caller frame reaches the model once (none is written to
 * the going connection; they wait in the buffer), and the echo model's
 * answers are heard. */
TEST_T(gemini_goaway_before_setup_complete_opens_a_replacement, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "bursts.wav");
    make_sox(audio, "synth 1 sine 400 vol 0.3 pad 0 1 repeat 3");
    rig_fake(&r, (const char *const[]){"--mode", "echo", "--fault",
                                       "goaway-before-setup", "--fault-conn",
                                       "1", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    int resumed;
    int n = setups(evs, &resumed);
    ASSERT_EQ(n, 2);
    long long sent = field(out, "frames_sent");
    double got = sum_audio_bytes(evs);
    printf("  %lld bytes heard, %.0f of %lld frames reached the model, "
           "first audio at %lld ms\n",
           field(out, "bytes_heard"), got / 640, sent,
           field(out, "first_audio_ms"));
    if (got != (double)sent * 640)
        vb_test_fail(__FILE__, __LINE__, "model got %.0f bytes for %lld frames",
                     got, sent);
    ASSERT_GT(field(out, "bytes_heard"), 8000);
    ASSERT_GT(field(out, "first_audio_ms"), 0);
    ASSERT_LT(field(out, "first_audio_ms"), (long long)(GENEROUS_S * 1000));
    ASSERT_STR_CONTAINS(vblog, "gemini goAway before setupComplete");
    ASSERT_GE(msum(m, "vb_gemini_reconnects_total", "reason=\"goaway\""), 1);
    ASSERT_EQ(msum(m, "vb_calls_failed_total", NULL), 0);
    assert_nothing_lost(m);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}

/* end_call through vb-sim's REST API with `script`; returns vb-sim's
 * summary, and the voxbridge log in *vblog. */
static char *end_call_case(const char *script, int audio_s, char **vblog)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "quiet.wav");
    char fx[32];
    snprintf(fx, sizeof(fx), "trim 0 %d", audio_s);
    make_sox(audio, fx);
    write_file(r.script, script);
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    char api[64], apil[64];
    int api_port = proc_free_port();
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", api_port);
    snprintf(apil, sizeof(apil), "127.0.0.1:%d", api_port);
    rig_vb(&r, (const char *const[]){"--twilio-api-url", api, NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--api-listen", apil, NULL});
    char *out = sim_wait(&r, &s);
    *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, *vblog);
    char by[16];
    if (strcmp(sfield(out, "ended_by", by, sizeof(by)), "rest") != 0)
        vb_test_fail(__FILE__, __LINE__, "ended_by=%s\n%s\n%s", by, out,
                     *vblog);
    ASSERT_EQ(field(out, "rest_requests"), 1);
    ASSERT_STR_CONTAINS(*vblog, "msg=\"model ended the call\"");
    return out;
}

/* 3.8's non-blocking tools: end_call comes in a turn with no audio, the
 * goodbye (800 ms) in the next turn. The hang-up waits for it and for its
 * mark: the whole goodbye is heard. */
TEST_T(end_call_goodbye_in_the_next_turn_is_heard_before_the_hang_up, 90)
{
    char *vblog;
    char *out = end_call_case(
        "{\"at_ms\":300,\"type\":\"toolCall\",\"name\":\"end_call\","
        "\"id\":\"call-1\"}\n"
        "{\"at_ms\":400,\"type\":\"turnComplete\"}\n"
        "{\"at_ms\":900,\"type\":\"audio\",\"ms\":800,\"hz\":600}\n"
        "{\"at_ms\":1000,\"type\":\"generationComplete\"}\n"
        "{\"at_ms\":1100,\"type\":\"turnComplete\"}\n",
        10, &vblog);
    printf("  %lld bytes of the 6400-byte goodbye heard, %lld frames sent\n",
           field(out, "bytes_heard"), field(out, "frames_sent"));
    ASSERT_GE(field(out, "bytes_heard"), 6400 * 9 / 10);
    ASSERT_GE(field(out, "marks_echoed"), 1);
    /* Hung up after the goodbye, long before the caller's 10 s. */
    ASSERT_LT(field(out, "frames_sent"), 7 * 50);
    ASSERT_STR_CONTAINS(vblog, "end_call: waiting for the goodbye");
    ASSERT_NULL(strstr(vblog, "hanging up at the bound"));
    free(vblog);
    free(out);
}

/* end_call and then nothing: the hang-up comes at the bound (5 s after the
 * tool call), not at the end of the caller's 15 s. */
TEST_T(end_call_without_a_goodbye_hangs_up_at_the_bound, 90)
{
    char *vblog;
    char *out = end_call_case(
        "{\"at_ms\":300,\"type\":\"toolCall\",\"name\":\"end_call\","
        "\"id\":\"call-1\"}\n"
        "{\"at_ms\":400,\"type\":\"turnComplete\"}\n",
        15, &vblog);
    long long frames = field(out, "frames_sent");
    printf("  hung up after %lld caller frames (%.1f s)\n", frames,
           (double)frames / 50);
    ASSERT_EQ(field(out, "bytes_heard"), 0);
    /* 5 s bound + setup and REST time, well under the 15 s of audio. */
    ASSERT_GE(frames, 4 * 50);
    ASSERT_LT(frames, 12 * 50);
    ASSERT_STR_CONTAINS(vblog, "end_call: hanging up at the bound");
    free(vblog);
    free(out);
}

/* 3.8's voiceActivity: the caller starts talking 1 s into a 6 s answer;
 * the server's `interrupted` comes only at 5.5 s. The caller's buffer is
 * cleared at the voice start, and the rest of that turn (1 s more audio
 * sent after it) is not played. The next turn's audio, spelt
 * audio/L16;rate=24000, is heard; a stereo part is dropped and counted;
 * turnCompleteReason is logged. */
TEST_T(voice_activity_clears_early_and_other_mime_spellings_play, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "quiet.wav");
    make_sox(audio, "trim 0 10");
    write_file(r.script,
               "{\"at_ms\":300,\"type\":\"audio\",\"ms\":6000,\"hz\":500}\n"
               "{\"at_ms\":1300,\"type\":\"voiceActivity\","
               "\"activity\":\"ACTIVITY_START\"}\n"
               "{\"at_ms\":1400,\"type\":\"audio\",\"ms\":1000,\"hz\":500}\n"
               "{\"at_ms\":5500,\"type\":\"interrupted\"}\n"
               "{\"at_ms\":5600,\"type\":\"voiceActivity\","
               "\"activity\":\"ACTIVITY_END\"}\n"
               "{\"at_ms\":5700,\"type\":\"turnComplete\"}\n"
               "{\"at_ms\":6000,\"type\":\"audio\",\"ms\":700,\"hz\":700,"
               "\"mime\":\"audio/L16;rate=24000\"}\n"
               "{\"at_ms\":6100,\"type\":\"audio\",\"ms\":300,\"hz\":700,"
               "\"mime\":\"audio/pcm;rate=24000;channels=2\"}\n"
               "{\"at_ms\":6200,\"type\":\"turnComplete\","
               "\"reason\":\"NEED_MORE_INPUT\",\"waiting\":true}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    long long heard = field(out, "bytes_heard");
    printf("  %lld bytes heard (%.2f s), %lld clears, %lld bytes cleared\n",
           heard, (double)heard / 8000, field(out, "clears"),
           field(out, "bytes_cleared"));
    /* 0.7 s of the L16 turn + about 1 s of the first answer; without the
     * early clear 5 s of it would be heard, with the rest of the turn
     * played after the clear 1 s more. */
    if (heard < 5600 + 4000 || heard > 5600 + 14400)
        vb_test_fail(__FILE__, __LINE__, "heard %lld bytes\n%s\n%s", heard, out,
                     vblog);
    ASSERT_GE(field(out, "clears"), 1);
    ASSERT_STR_CONTAINS(vblog, "caller speech started over the model");
    ASSERT_STR_CONTAINS(vblog, "gemini audio in an unexpected format");
    ASSERT_STR_CONTAINS(vblog, "mime_type=\"audio/pcm;rate=24000;channels=2\"");
    ASSERT_STR_CONTAINS(vblog, "reason=NEED_MORE_INPUT");
    ASSERT_GE(msum(m, "vb_gemini_dropped_total", "reason=\"audio_format\""), 3);
    free(m);
    free(vblog);
    free(out);
}

/* goAway while the model is answering: the first 1 s of a 3 s answer, then
 * goAway, then the other 2 s on the old connection after its replacement
 * is ready. The old connection delivers the whole answer before it goes;
 * the caller hears all 3 s once, and every caller frame reaches the model
 * once (held while the old turn ends, then sent to the new connection). */
TEST_T(gemini_goaway_mid_answer_the_old_connection_finishes_the_turn, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 6 sine 300 vol 0.05");
    write_file(r.script,
               "{\"at_ms\":200,\"conn\":1,\"type\":\"resumption\","
               "\"resumable\":true}\n"
               "{\"at_ms\":300,\"conn\":1,\"type\":\"audio\",\"ms\":1000,"
               "\"hz\":500}\n"
               "{\"at_ms\":400,\"conn\":1,\"type\":\"goAway\","
               "\"timeLeft\":\"10s\"}\n"
               "{\"at_ms\":1500,\"conn\":1,\"type\":\"audio\",\"ms\":2000,"
               "\"hz\":500}\n"
               "{\"at_ms\":1600,\"conn\":1,\"type\":\"generationComplete\"}\n"
               "{\"at_ms\":1700,\"conn\":1,\"type\":\"turnComplete\"}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    int resumed;
    ASSERT_EQ(setups(evs, &resumed), 2);
    ASSERT_EQ(resumed, 1);
    long long heard = field(out, "bytes_heard");
    long long sent = field(out, "frames_sent");
    double got = sum_audio_bytes(evs);
    printf("  %lld of 24000 answer bytes heard, %.0f of %lld caller frames "
           "reached the model\n",
           heard, got / 640, sent);
    if (heard < 24000 * 95 / 100 || heard > 24000 + 800)
        vb_test_fail(__FILE__, __LINE__, "heard %lld\n%s\n%s", heard, out,
                     vblog);
    if (got != (double)sent * 640)
        vb_test_fail(__FILE__, __LINE__, "model got %.0f bytes for %lld frames",
                     got, sent);
    ASSERT_STR_CONTAINS(vblog, "old gemini connection finishes its turn");
    ASSERT_STR_CONTAINS(vblog, "old gemini connection done");
    ASSERT_EQ(field(out, "clears"), 0);
    assert_nothing_lost(m);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}

/* --gemini-language auto: the setup the service gets has a voice but no
 * languageCode; --gemini-thinking-budget/-level: its thinkingConfig (which
 * the fake validates); the call works as usual (echo heard). */
TEST_T(gemini_language_auto_and_thinking_config_in_the_setup, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "bursts.wav");
    make_sox(audio, "synth 1 sine 400 vol 0.3 pad 0 1 repeat 1");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--gemini-language", "auto",
                                 "--gemini-thinking-budget", "1024",
                                 "--gemini-thinking-level", "low", NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0)
    {
        const cJSON *gc = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "msg"),
                                              "generationConfig");
        const cJSON *sp = cJSON_GetObjectItem(gc, "speechConfig");
        ASSERT_NOT_NULL(cJSON_GetObjectItem(sp, "voiceConfig"));
        ASSERT_NULL(cJSON_GetObjectItem(sp, "languageCode"));
        const cJSON *tc = cJSON_GetObjectItem(gc, "thinkingConfig");
        ASSERT_EQ(
            cJSON_GetNumberValue(cJSON_GetObjectItem(tc, "thinkingBudget")),
            1024);
        ASSERT_STR_EQ(
            cJSON_GetStringValue(cJSON_GetObjectItem(tc, "thinkingLevel")),
            "LOW");
        n++;
    }
    ASSERT_EQ(n, 1);
    ASSERT_GT(field(out, "bytes_heard"), 4000);
    cJSON_Delete(evs);
    free(vblog);
    free(out);
}

/* --vad off: the model's own detection is disabled in the setup, so the
 * model answers only what activityStart/activityEnd enclose (the fake is
 * as strict). voxbridge's energy detection sends them around each of the
 * caller's two tone bursts, and the echo model's answers are heard. */
TEST_T(vad_off_sends_activity_markers_and_the_model_answers, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "bursts.wav");
    make_sox(audio, "synth 1 sine 400 vol 0.3 pad 0 1.5 repeat 1");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--vad", "off", NULL}, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "2", NULL});
    char *out = sim_wait(&r, &s);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    cJSON *evs = fake_events(&r);
    int starts = 0, ends = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "activity") == 0)
    {
        const char *edge = cJSON_GetStringValue(cJSON_GetObjectItem(e, "edge"));
        starts += edge != NULL && strcmp(edge, "start") == 0;
        ends += edge != NULL && strcmp(edge, "end") == 0;
    }
    printf("  %d activityStart, %d activityEnd, %lld bytes heard\n", starts,
           ends, field(out, "bytes_heard"));
    ASSERT_EQ(starts, 2);
    ASSERT_EQ(ends, 2);
    ASSERT_EQ(count_type(evs, "error"), 0);
    /* Two 1 s bursts echoed: well over one second heard. */
    ASSERT_GT(field(out, "bytes_heard"), 8000);
    long long sent = field(out, "frames_sent");
    ASSERT_EQ(sum_audio_bytes(evs), (double)sent * 640);
    assert_nothing_lost(m);
    cJSON_Delete(evs);
    free(m);
    free(vblog);
    free(out);
}
