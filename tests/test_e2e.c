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
#include "tests/e2e.h"

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
    /* No check session: the model's sessions are counted below. */
    const char *argv[] = {bin,           "--listen",
                          listen,        "--public-url",
                          pub,           "--gemini-url",
                          gurl,          "--metrics-listen",
                          "127.0.0.1:0", "--no-gemini-startup-check",
                          NULL};
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

TEST_T(sigterm_drains_live_calls_serves_the_grace_then_refuses, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 3");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--drain-timeout", "30", "--drain-grace", "3",
                                 NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    char *text;
    proc_wait_log(r.vb_log, "msg=\"stream started\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    kill(r.vb, SIGTERM);
    /* /readyz turns 503 once the signal is handled: poll it (on the admin
     * listener, which stays up to the end). */
    int ready = 0;
    for (double end = tc_now_ms() + proc_ms(5000); tc_now_ms() < end;
         usleep(10000)) {
        tc_resp_t resp = {0};
        ready = tc_request(r.vb_admin_port, "GET /readyz HTTP/1.1\r\n\r\n",
                           &resp, proc_ms(5000));
        tc_free_resp(&resp);
        if (ready == 503)
            break;
    }
    ASSERT_EQ(ready, 503);
    /* Within the grace a new call is still answered and completes: the
     * proxy has not noticed yet, and nobody hears "busy". */
    const char *audio2 = path_in(&r, "short.wav");
    make_sox(audio2, "synth 0.5 sine 400 vol 0.4");
    sim_t s2;
    sim_start(&r, &s2, 1, audio2, NULL,
              (const char *const[]){"--tail", "0.5", NULL});
    char *out2 = sim_wait(&r, &s2);
    assert_sim_ok(out2, NULL);
    ASSERT_STR_CONTAINS(out2, "webhook_status=200");
    ASSERT_GT(field(out2, "frames_sent"), 0);
    char *m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_calls_rejected_total", "reason=\"draining\""), 0);
    ASSERT_EQ(msum(m, "vb_draining", NULL), 1);
    free(m);
    /* The live call still completes normally: the public listener stays
     * open for it (its <Connect action> comes there). */
    char *out = sim_wait(&r, &s);
    assert_sim_ok(out, NULL);
    ASSERT_GT(field(out, "media_received"), 0);
    /* Then nothing here needs it: the public listener closes (connections
     * refused, proxies fail over at once). */
    bool open = true;
    for (double end = tc_now_ms() + proc_ms(15000); open && tc_now_ms() < end;
         usleep(20000))
        open = proc_port_open(r.vb_port, 1);
    ASSERT_TRUE(!open);
    int st = proc_reap(r.vb, proc_ms(30000));
    char *vblog = proc_read_file(r.vb_log);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "exit %d\n%s", st, vblog);
    rig_stop(&r);
    ASSERT_STR_CONTAINS(vblog, "status=0");
    ASSERT_STR_CONTAINS(vblog, "public listener closed");
    /* Not before both calls were over. */
    const char *first = strstr(vblog, "msg=\"call summary\"");
    ASSERT_NOT_NULL(first);
    const char *second = strstr(first + 1, "msg=\"call summary\"");
    ASSERT_NOT_NULL(second);
    ASSERT_TRUE(strstr(vblog, "public listener closed") > second);
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

/* `--version`, vb_build_info and the standard process series, on a server
 * with a call in progress. */
TEST_T(version_build_info_and_process_series, 90)
{
    char cmd[512], line[256] = {0};
    snprintf(cmd, sizeof(cmd), "'%s/voxbridge' --version", proc_build_dir());
    FILE *p = popen(cmd, "r");
    ASSERT_NOT_NULL(p);
    ASSERT_NOT_NULL(fgets(line, sizeof(line), p));
    ASSERT_EQ(pclose(p), 0);
    char version[64] = {0}, commit[64] = {0};
    ASSERT_EQ(sscanf(line, "voxbridge %63s (commit %63[^)])", version, commit),
              2);

    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 3");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    /* Scrape while the call runs: it is the busy process that counts. */
    uint64_t end = vb_clock_now_ns() + (uint64_t)proc_ms(10000) * 1000000u;
    char *m = NULL;
    for (;;) {
        m = metrics(&r);
        if (msum(m, "vb_calls_active", NULL) == 1 || vb_clock_now_ns() > end)
            break;
        free(m);
        usleep(50000);
    }
    char want[256];
    snprintf(want, sizeof(want),
             "vb_build_info{version=\"%s\",commit=\"%s\"} 1\n", version,
             commit);
    ASSERT_STR_CONTAINS(m, want);
    static const char *const series[] = {"process_cpu_seconds_total",
                                         "process_resident_memory_bytes",
                                         "process_virtual_memory_bytes",
                                         "process_open_fds",
                                         "process_max_fds",
                                         "process_start_time_seconds"};
    for (size_t i = 0; i < sizeof(series) / sizeof(series[0]); i++) {
        snprintf(want, sizeof(want), "\n%s ", series[i]);
        ASSERT_STR_CONTAINS(m, want);
    }
    ASSERT_GT(msum(m, "process_resident_memory_bytes", NULL), 1e6);
    ASSERT_GT(msum(m, "process_virtual_memory_bytes", NULL),
              msum(m, "process_resident_memory_bytes", NULL));
    ASSERT_GE(msum(m, "process_cpu_seconds_total", NULL),
              0); /* ticks of 10 ms */
    double fds = msum(m, "process_open_fds", NULL);
    ASSERT_GT(fds, 4); /* listeners, loop fds, the call's two sockets */
    ASSERT_GT(msum(m, "process_max_fds", NULL), fds);
    double age =
        (double)time(NULL) - msum(m, "process_start_time_seconds", NULL);
    ASSERT_GT(age, -5);
    ASSERT_LT(age, 600);
    /* Histograms start at 10 µs. */
    ASSERT_STR_CONTAINS(m, "vb_stage_latency_seconds_bucket{stage=\"dsp_in\","
                           "le=\"1e-05\"}");
    ASSERT_EQ(msum(m, "vb_ready", NULL), 1);
    ASSERT_EQ(msum(m, "vb_draining", NULL), 0);
    ASSERT_GT(msum(m, "vb_max_calls", NULL), 0);
    free(m);
    char *out = sim_wait(&r, &s);
    /* After the call: its duration, and how long the caller waited for the
     * echo of the tone (the fake answers once it hears silence). */
    m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_call_duration_seconds_count", NULL), 1);
    double dur = msum(m, "vb_call_duration_seconds_sum", NULL);
    ASSERT_GT(dur, 3);
    ASSERT_LT(dur, 30);
    ASSERT_STR_CONTAINS(m, "vb_call_duration_seconds_bucket{le=\"60000\"} 1");
    double nresp = msum(m, "vb_response_latency_seconds_count", NULL);
    ASSERT_GE(nresp, 1);
    double resp = msum(m, "vb_response_latency_seconds_sum", NULL) / nresp;
    printf("  response latency %.3f s over %g answers, call %.1f s\n", resp,
           nresp, dur);
    if (!(resp > 0))
        vb_test_fail(__FILE__, __LINE__, "response latency %g:\n%.3000s", resp,
                     strstr(m, "vb_response_latency_seconds_bucket"));
    ASSERT_LT(resp, 5);
    free(m);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_STR_CONTAINS(vblog, "version=");
    free(out);
    free(vblog);
}

/* SIGHUP (logrotate, `systemctl reload`) never stops the server: a live
 * call completes, new calls are still taken, /readyz stays 200. */
TEST_T(sighup_keeps_live_calls_and_the_server, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.4 pad 0 2");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, NULL, NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    char *text;
    proc_wait_log(r.vb_log, "msg=\"stream started\"", r.vb, proc_ms(10000),
                  &text);
    free(text);
    kill(r.vb, SIGHUP);
    proc_wait_log(r.vb_log, "SIGHUP: reloaded, calls go on", r.vb,
                  proc_ms(5000), &text);
    free(text);
    char *out = sim_wait(&r, &s);
    assert_sim_ok(out, NULL);
    free(out);
    ASSERT_TRUE(!proc_exited(r.vb));
    tc_resp_t resp = {0};
    ASSERT_EQ(tc_request(r.vb_port, "GET /readyz HTTP/1.1\r\n\r\n", &resp,
                         proc_ms(5000)),
              200);
    tc_free_resp(&resp);
    /* And a call after it is taken as usual. */
    sim_t s2;
    sim_start(&r, &s2, 1, audio, NULL,
              (const char *const[]){"--tail", "1", NULL});
    out = sim_wait(&r, &s2);
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"stop\""), 2);
    ASSERT_EQ(msum(m, "vb_calls_rejected_total", NULL), 0);
    free(m);
    free(out);
    free(vblog);
}
