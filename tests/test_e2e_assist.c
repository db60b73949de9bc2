/* SPDX-License-Identifier: MIT */
/*
 * Assistants end to end (docs/assistants.md): build/voxbridge with
 * --assistants, build/vb-sim placing calls to chosen numbers and
 * build/vb-fake-gemini logging the setup each connection sent. The called
 * number picks the voice, prompt, tools and greeting; SIGHUP swaps the file
 * with a call live; a stream that lands on another instance gets the
 * assistant the first one picked, and only when its MAC holds.
 */
#include <arpa/inet.h>
#include <mbedtls/md.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/form.h"
#include "tests/e2e.h"

static const char assistants_json[] =
    "{\"default\": \"front-desk\",\n"
    " \"assistants\": {\n"
    "  \"front-desk\": {\"instructions\": \"You are the Acme front desk.\",\n"
    "    \"greeting\": \"Welcome to Acme.\", \"voice\": \"Kore\",\n"
    "    \"tools\": [{\"name\": \"lookup_order\", \"description\": \"Find an "
    "order\",\n"
    "      \"parameters\": {\"type\": \"object\", \"properties\": "
    "{\"order_id\": {\"type\": \"string\"}}, \"required\": [\"order_id\"]},\n"
    "      \"url\": \"http://127.0.0.1:9/tools/lookup_order\"}],\n"
    "    \"transfer\": {\"sales\": \"+14155550100\"}},\n"
    "  \"sales-bot\": {\"instructions\": \"You sell Acme widgets.\",\n"
    "    \"greeting\": \"Sales here.\", \"voice\": \"Charon\"},\n"
    "  \"vip\": {\"instructions\": \"VIP desk.\", \"voice\": \"Fenrir\"}},\n"
    " \"numbers\": {\"+18005550123\": \"sales-bot\"}}\n";

static const char *assist_file(const rig_t *r, const char *text)
{
    const char *p = path_in(r, "assistants.json");
    /* Written beside and renamed, as a deploy would: a reload never reads
     * half a file. */
    char tmp[420];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    write_file(tmp, text);
    ASSERT_EQ(rename(tmp, p), 0);
    return p;
}

/* The n-th setup message the fake received (in its log order), or NULL. */
static const cJSON *nth_setup(const cJSON *evs, int n)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0 &&
                                   n-- == 0) return cJSON_GetObjectItem(e,
                                                                        "msg");
    return NULL;
}

static const char *setup_voice(const cJSON *s)
{
    const cJSON *g = cJSON_GetObjectItem(s, "generationConfig");
    g = cJSON_GetObjectItem(g, "speechConfig");
    g = cJSON_GetObjectItem(g, "voiceConfig");
    g = cJSON_GetObjectItem(g, "prebuiltVoiceConfig");
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(g, "voiceName"));
    return v ? v : "";
}

static const char *setup_prompt(const cJSON *s)
{
    const cJSON *si = cJSON_GetObjectItem(s, "systemInstruction");
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(si, "parts"), 0);
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(p, "text"));
    return t ? t : "";
}

/* The declared function names, comma-separated, in order. */
static const char *setup_decls(const cJSON *s, char *out, size_t n)
{
    out[0] = '\0';
    const cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItem(s, "tools"), 0);
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "functionDeclarations"))
    {
        size_t len = strlen(out);
        snprintf(out + len, n - len, "%s%s", len ? "," : "",
                 cJSON_GetStringValue(cJSON_GetObjectItem(d, "name")));
    }
    return out;
}

static const cJSON *decl(const cJSON *s, const char *name)
{
    const cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItem(s, "tools"), 0);
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "functionDeclarations"))
    {
        const char *dn = cJSON_GetStringValue(cJSON_GetObjectItem(d, "name"));
        if (dn != NULL && strcmp(dn, name) == 0)
            return d;
    }
    return NULL;
}

/* How many `text` inputs the fake received with exactly `text`. */
static int texts(const cJSON *evs, const char *text)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(e, "text"));
        n += strcmp(ev_type(e), "text") == 0 && t && strcmp(t, text) == 0;
    }
    return n;
}

static void call_to(const rig_t *r, int idx, const char *audio, const char *to,
                    sim_t *s)
{
    sim_start(r, s, idx, audio, NULL,
              (const char *const[]){"--to", to, "--tail", "1", NULL});
}

TEST_T(called_number_picks_voice_prompt_tools_and_greeting, 120)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 2 sine 300 vol 0.3");
    const char *file = assist_file(&r, assistants_json);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r,
           (const char *const[]){"--assistants", file, "--webhook-secret",
                                 "biz-secret", NULL},
           NULL);
    sim_t s;
    /* A listed number, then one that is not. */
    call_to(&r, 0, audio, "+18005550123", &s);
    char *out1 = sim_wait(&r, &s);
    call_to(&r, 1, audio, "+15550001111", &s);
    char *out2 = sim_wait(&r, &s);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out1, vblog);
    assert_sim_ok(out2, vblog);

    cJSON *evs = fake_events(&r);
    ASSERT_EQ(count_type(evs, "setup"), 2);
    char names[512];
    const cJSON *sales = nth_setup(evs, 0), *desk = nth_setup(evs, 1);
    ASSERT_STR_EQ(setup_voice(sales), "Charon");
    ASSERT_STR_EQ(setup_prompt(sales), "You sell Acme widgets.");
    ASSERT_STR_EQ(setup_decls(sales, names, sizeof names), "end_call");

    /* The unknown number got the default, with its tools and transfer. */
    ASSERT_STR_EQ(setup_voice(desk), "Kore");
    ASSERT_STR_EQ(setup_prompt(desk), "You are the Acme front desk.");
    ASSERT_STR_EQ(setup_decls(desk, names, sizeof names),
                  "end_call,transfer_call,lookup_order");
    const cJSON *lo = decl(desk, "lookup_order");
    ASSERT_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(lo, "description")),
                  "Find an order");
    char *params =
        cJSON_PrintUnformatted(cJSON_GetObjectItem(lo, "parameters"));
    ASSERT_STR_EQ(params,
                  "{\"type\":\"object\",\"properties\":{\"order_id\":{\"type\":"
                  "\"string\"}},\"required\":[\"order_id\"]}");
    free(params);
    char *tc = cJSON_PrintUnformatted(
        cJSON_GetObjectItem(decl(desk, "transfer_call"), "parameters"));
    ASSERT_STR_CONTAINS(tc, "\"enum\":[\"sales\"]");
    free(tc);

    /* Each greeting reached the model once, as the first thing said. */
    ASSERT_EQ(texts(evs, "Sales here."), 1);
    ASSERT_EQ(texts(evs, "Welcome to Acme."), 1);
    ASSERT_STR_CONTAINS(vblog, "assistant=sales-bot listed=1");
    ASSERT_STR_CONTAINS(vblog, "assistant=front-desk listed=0");
    cJSON_Delete(evs);
    free(vblog);
    free(out1);
    free(out2);
}

/* Waits until `log` holds `needle` (the n-th time), failing after ms. */
static void wait_log_n(const rig_t *r, const char *needle, int n, int ms)
{
    uint64_t end = vb_clock_now_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        char *t = proc_read_file(r->vb_log);
        int k = 0;
        for (const char *p = t ? t : ""; (p = strstr(p, needle)) != NULL; p++)
            k++;
        if (k >= n) {
            free(t);
            return;
        }
        if (vb_clock_now_ns() > end) {
            vb_test_fail(__FILE__, __LINE__, "no %d x \"%s\" in:\n%s", n,
                         needle, t ? t : "");
        }
        free(t);
        usleep(20000);
    }
}

TEST_T(sighup_reloads_with_a_call_live_and_a_bad_file_keeps_the_set, 150)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 7 sine 300 vol 0.3");
    const char *shortaudio = path_in(&r, "short.wav");
    make_sox(shortaudio, "synth 1 sine 300 vol 0.3");
    const char *file = assist_file(&r, assistants_json);
    /* The first call's connection goes away 4 s in: it resumes on a new
     * connection after the reload below, with the assistant it holds. */
    write_file(r.script, "{\"at_ms\":3500,\"conn\":1,\"type\":\"resumption\","
                         "\"resumable\":true}\n"
                         "{\"at_ms\":4000,\"conn\":1,\"type\":\"goAway\","
                         "\"timeLeft\":\"1s\"}\n");
    rig_fake(&r, (const char *const[]){"--mode", "script", "--script", r.script,
                                       NULL});
    rig_vb(&r,
           (const char *const[]){"--assistants", file, "--webhook-secret",
                                 "biz-secret", NULL},
           NULL);
    sim_t live;
    call_to(&r, 0, audio, "+18005550123", &live);
    wait_log_n(&r, "msg=\"gemini session ready\"", 1, proc_ms(15000));
    uint64_t t_ready = vb_clock_now_ns();

    /* sales-bot changes voice and prompt. */
    char next[sizeof assistants_json + 64];
    snprintf(next, sizeof next, "%s", assistants_json);
    char *v = strstr(next, "\"Charon\"");
    memcpy(v, "\"Aoede\" ", 8);
    char *p = strstr(next, "You sell Acme widgets.");
    memcpy(p, "You sell Acme gadgets.", 22);
    assist_file(&r, next);
    kill(r.vb, SIGHUP);
    wait_log_n(&r, "msg=\"SIGHUP: assistants reloaded, calls go on\"", 1,
               proc_ms(5000));
    /* The reload must come before the live call's reconnect to show
     * anything; the goAway is 4 s after its setup. */
    ASSERT_LT((vb_clock_now_ns() - t_ready) / 1000000u, 3500);

    char *out1 = sim_wait(&r, &live);
    /* The next call to the number gets the new one. */
    sim_t s;
    call_to(&r, 1, shortaudio, "+18005550123", &s);
    char *out2 = sim_wait(&r, &s);

    /* A bad file: refused with its line and field; the set stays. */
    char bad[sizeof assistants_json + 64];
    snprintf(bad, sizeof bad, "%s", next);
    v = strstr(bad, "\"Aoede\" ");
    memcpy(v, "\"Nobody\"", 8);
    assist_file(&r, bad);
    kill(r.vb, SIGHUP);
    wait_log_n(&r,
               "msg=\"SIGHUP: assistants file refused, the previous set "
               "stays\"",
               1, proc_ms(5000));
    call_to(&r, 2, shortaudio, "+18005550123", &s);
    char *out3 = sim_wait(&r, &s);

    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    assert_sim_ok(out1, vblog);
    assert_sim_ok(out2, vblog);
    assert_sim_ok(out3, vblog);
    ASSERT_STR_CONTAINS(vblog, "assistants.json:10: "
                               "assistants.sales-bot.voice: unknown voice "
                               "\\\"Nobody\\\"");

    cJSON *evs = fake_events(&r);
    ASSERT_EQ(count_type(evs, "setup"), 4);
    /* The live call: both its connections are the old sales-bot. */
    ASSERT_STR_EQ(setup_voice(nth_setup(evs, 0)), "Charon");
    ASSERT_STR_EQ(setup_voice(nth_setup(evs, 1)), "Charon");
    ASSERT_STR_EQ(setup_prompt(nth_setup(evs, 1)), "You sell Acme widgets.");
    /* ... the second one the resumption after the reload. */
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0 && k++ == 1)
        ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(e, "resumed")));
    ASSERT_STR_CONTAINS(vblog, "reconnects=1");
    /* The next calls: the reloaded one, also after the bad file. */
    ASSERT_STR_EQ(setup_voice(nth_setup(evs, 2)), "Aoede");
    ASSERT_STR_EQ(setup_prompt(nth_setup(evs, 2)), "You sell Acme gadgets.");
    ASSERT_STR_EQ(setup_voice(nth_setup(evs, 3)), "Aoede");
    cJSON_Delete(evs);
    free(vblog);
    free(out1);
    free(out2);
    free(out3);
}

/* ---- unsigned requests are refused at start and at a reload ---- */

/* voxbridge with `extra` arguments must stop at start with `status` (2: a
 * setting refused, 1: a setup that cannot run), its log naming `why`. */
static void refused_at_start(const rig_t *r, const char *const *extra,
                             int status, const char *why)
{
    char bin[400], listen[64];
    snprintf(bin, sizeof bin, "%s/voxbridge", proc_build_dir());
    snprintf(listen, sizeof listen, "127.0.0.1:%d", proc_free_port());
    const char *argv[16] = {bin, "--listen", listen};
    int n = 3;
    for (int i = 0; extra[i] != NULL && n < 15; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    const char *env[] = {"GEMINI_API_KEY=" API_KEY, NULL};
    pid_t pid = proc_spawn(argv, env, r->vb_log);
    ASSERT_EQ(proc_reap(pid, proc_ms(10000)), status);
    char *log = proc_read_file(r->vb_log);
    ASSERT_NOT_NULL(log);
    ASSERT_STR_CONTAINS(log, why);
    free(log);
}

TEST_T(http_tools_and_the_assistant_url_need_the_webhook_secret, 90)
{
    rig_t r;
    rig_init(&r);
    const char *file = assist_file(&r, assistants_json);
    refused_at_start(&r, (const char *const[]){"--assistants", file, NULL}, 1,
                     "assistants.front-desk.tools[0].url: HTTP tools need "
                     "--webhook-secret (VOXBRIDGE_WEBHOOK_SECRET)");
    refused_at_start(
        &r,
        (const char *const[]){"--assistant-url", "http://127.0.0.1:9/a", NULL},
        2, "--assistant-url needs --webhook-secret (VOXBRIDGE_WEBHOOK_SECRET)");
    /* Without tools and without a secret it starts; a reload bringing
     * HTTP tools is refused, the set it had stays. */
    static const char no_tools[] =
        "{\"assistants\": {\"plain\": {\"voice\": \"Puck\"}}}";
    assist_file(&r, no_tools);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&r, (const char *const[]){"--assistants", file, NULL}, NULL);
    assist_file(&r, assistants_json);
    kill(r.vb, SIGHUP);
    wait_log_n(&r,
               "msg=\"SIGHUP: assistants file refused, the previous set "
               "stays\"",
               1, proc_ms(5000));
    const char *audio = path_in(&r, "short.wav");
    make_sox(audio, "synth 1 sine 300 vol 0.3");
    sim_t s;
    call_to(&r, 0, audio, "+18005550123", &s);
    char *out = sim_wait(&r, &s);
    kill(r.vb, SIGTERM);
    ASSERT_EQ(proc_reap(r.vb, proc_ms(30000)), 0);
    char *vblog = proc_read_file(r.vb_log);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    ASSERT_STR_CONTAINS(vblog, "HTTP tools need --webhook-secret");
    /* The call got the old set's assistant: its voice, no tools. */
    cJSON *evs = fake_events(&r);
    ASSERT_EQ(count_type(evs, "setup"), 1);
    ASSERT_STR_EQ(setup_voice(nth_setup(evs, 0)), "Puck");
    cJSON_Delete(evs);
    free(vblog);
    free(out);
}

/* ---- a stream on another instance ---- */

/* The value of <Parameter name="name" value="..."/> in TwiML. */
static void twiml_param(const char *twiml, const char *name, char *out,
                        size_t n)
{
    char pat[128];
    snprintf(pat, sizeof pat, "<Parameter name=\"%s\" value=\"", name);
    const char *p = strstr(twiml, pat);
    if (p == NULL)
        vb_test_fail(__FILE__, __LINE__, "no parameter %s in %s", name, twiml);
    p += strlen(pat);
    size_t len = strcspn(p, "\"");
    ASSERT_LT(len, n);
    memcpy(out, p, len);
    out[len] = '\0';
}

/* POSTs a signed voice webhook for `call` to `to` on r's instance;
 * returns the TwiML (malloc'd). */
static char *webhook(const rig_t *r, const char *call, const char *to)
{
    char body[512], url[128], sig[VB_TWILIO_SIG_LEN + 1];
    snprintf(body, sizeof body,
             "AccountSid=AC0&CallSid=%s&From=%%2B15550002222&To=%s&"
             "Direction=inbound",
             call, to);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/webhook/voice", r->vb_port);
    vb_form_t f = {0};
    ASSERT_EQ(vb_form_parse(&f, body, strlen(body), 100), 0);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, &f, sig), 0);
    vb_form_free(&f);
    char raw[2048];
    snprintf(raw, sizeof raw,
             "POST /webhook/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             sig, strlen(body), body);
    tc_resp_t resp;
    ASSERT_EQ(tc_request(r->vb_port, raw, &resp, proc_ms(5000)), 200);
    return resp.body;
}

/* A stream for `call` on r's instance, its start carrying `params` (JSON
 * members); sends a second of silence and stops it. */
static void stream_with(const rig_t *r, const char *call, const char *params)
{
    int fd = ws_upgrade(r->vb_port);
    ws_text(fd, "{\"event\":\"connected\",\"protocol\":\"Call\","
                "\"version\":\"1.0.0\"}");
    char start[2048];
    snprintf(start, sizeof(start),
             "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{"
             "\"accountSid\":\"AC0\",\"streamSid\":\"MZ%s\",\"callSid\":"
             "\"%s\",\"tracks\":[\"inbound\"],\"mediaFormat\":{"
             "\"encoding\":\"audio/x-mulaw\",\"sampleRate\":8000,"
             "\"channels\":1},\"customParameters\":{%s}},"
             "\"streamSid\":\"MZ%s\"}",
             call, call, params, call);
    ws_text(fd, start);
    char stop[512];
    snprintf(stop, sizeof stop,
             "{\"event\":\"stop\",\"sequenceNumber\":\"2\",\"stop\":{"
             "\"accountSid\":\"AC0\",\"callSid\":\"%s\"},"
             "\"streamSid\":\"MZ%s\"}",
             call, call);
    usleep(300000);
    ws_text(fd, stop);
    ASSERT_EQ(ws_close_code(fd, proc_ms(5000)), 1000);
    close(fd);
}

TEST_T(stream_on_another_instance_gets_the_same_assistant, 120)
{
    rig_t a, b;
    rig_init(&a);
    const char *file = assist_file(&a, assistants_json);
    rig_fake(&a, (const char *const[]){"--mode", "echo", NULL});
    rig_vb(&a,
           (const char *const[]){"--assistants", file, "--webhook-secret",
                                 "biz-secret", NULL},
           NULL);
    /* B: same stream secret and file, its own log, the same fake. */
    b = a;
    snprintf(b.vb_log, sizeof b.vb_log, "%s/voxbridge-b.log", a.dir);
    rig_vb(&b,
           (const char *const[]){"--assistants", file, "--webhook-secret",
                                 "biz-secret", NULL},
           NULL);

    char *twiml = webhook(&a, "CAacross1", "%2B18005550123");
    char tok[128], name[128], mac[128], params[1024];
    twiml_param(twiml, "streamToken", tok, sizeof tok);
    twiml_param(twiml, "assistant", name, sizeof name);
    twiml_param(twiml, "assistantMac", mac, sizeof mac);
    ASSERT_STR_EQ(name, "sales-bot");
    free(twiml);
    snprintf(params, sizeof params,
             "\"streamToken\":\"%s\",\"assistant\":\"%s\",\"assistantMac\":"
             "\"%s\"",
             tok, name, mac);
    stream_with(&b, "CAacross1", params);

    /* The control: a stream naming another assistant than its MAC was
     * made for gets the default, not the one it asks for. */
    twiml = webhook(&a, "CAacross2", "%2B18005550123");
    twiml_param(twiml, "streamToken", tok, sizeof tok);
    twiml_param(twiml, "assistantMac", mac, sizeof mac);
    free(twiml);
    snprintf(params, sizeof params,
             "\"streamToken\":\"%s\",\"assistant\":\"vip\",\"assistantMac\":"
             "\"%s\"",
             tok, mac);
    stream_with(&b, "CAacross2", params);

    /* A's pre-connects are unclaimed, but they did connect. */
    uint64_t end = vb_clock_now_ns() + (uint64_t)proc_ms(15000) * 1000000u;
    for (;;) {
        cJSON *evs = fake_events(&a);
        int n = count_type(evs, "setup");
        cJSON_Delete(evs);
        if (n >= 4)
            break;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "%d setups, not 4", n);
        usleep(20000);
    }
    char *blog = rig_vb_stop(&b);
    char *alog = rig_vb_stop(&a);
    rig_stop(&a);
    /* B opened both calls, with the assistant it was told / the default. */
    ASSERT_STR_CONTAINS(blog, "call=CAacross1 lane=0 slot=");
    ASSERT_STR_CONTAINS(blog, "assistant=sales-bot");
    ASSERT_STR_CONTAINS(blog, "msg=\"stream names an assistant without a "
                              "valid MAC: the default answers\" "
                              "call=CAacross2");
    ASSERT_STR_CONTAINS(blog, "assistant=front-desk");
    ASSERT_TRUE(strstr(blog, "assistant=vip") == NULL);
    ASSERT_STR_CONTAINS(alog, "call=CAacross1 lane=0 client=");

    cJSON *evs = fake_events(&a);
    /* A's two unclaimed pre-connects and B's two sessions. */
    int charon = 0, kore = 0, other = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0)
    {
        const char *vn = setup_voice(cJSON_GetObjectItem(e, "msg"));
        charon += strcmp(vn, "Charon") == 0;
        kore += strcmp(vn, "Kore") == 0;
        other += strcmp(vn, "Charon") != 0 && strcmp(vn, "Kore") != 0;
    }
    /* Two pre-connects on A (sales-bot), B's first call (sales-bot), B's
     * second (the default). */
    ASSERT_EQ(charon, 3);
    ASSERT_EQ(kore, 1);
    ASSERT_EQ(other, 0);
    cJSON_Delete(evs);
    free(blog);
    free(alog);
}

TEST_T(assistant_max_call_s_ends_the_call, 90)
{
    rig_t r;
    rig_init(&r);
    const char *audio = path_in(&r, "caller.wav");
    make_sox(audio, "synth 8 sine 300 vol 0.3");
    const char *file =
        assist_file(&r, "{\"assistants\": {\"brief\": {\"max_call_s\": 2}}}");
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    char api[64], apil[64];
    int api_port = proc_free_port();
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", api_port);
    snprintf(apil, sizeof(apil), "127.0.0.1:%d", api_port);
    rig_vb(&r,
           (const char *const[]){"--assistants", file, "--twilio-api-url", api,
                                 "--max-call-duration", "60", NULL},
           NULL);
    sim_t s;
    sim_start(&r, &s, 0, audio, NULL,
              (const char *const[]){"--api-listen", apil, NULL});
    char *out = sim_wait(&r, &s);
    /* A time limit, not the assistant hanging up: counted as such. */
    char *m = metrics(&r);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"max_duration\""), 1);
    ASSERT_EQ(msum(m, "vb_calls_total", "outcome=\"hangup\""), 0);
    free(m);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    assert_sim_ok(out, vblog);
    char by[16];
    if (strcmp(sfield(out, "ended_by", by, sizeof(by)), "rest") != 0)
        vb_test_fail(__FILE__, __LINE__, "ended_by=%s\n%s\n%s", by, out, vblog);
    /* Ended after about 2 s of its 8 s of audio: not before the limit,
     * and long before the audio ran out. */
    ASSERT_GE(field(out, "frames_sent"), 2 * 50);
    ASSERT_LT(field(out, "frames_sent"), 6 * 50);
    ASSERT_STR_CONTAINS(vblog, "msg=\"assistant's max_call_s reached: "
                               "ending\"");
    free(vblog);
    free(out);
}

/* ---- --assistant-url ---- */

/* A business's assistant endpoint: one thread answering one request per
 * connection, as `biz.mode` says, and keeping what it was sent. */
static struct biz {
    int fd, port;
    pthread_t th;
    _Atomic int stop;
    _Atomic(const char *) mode;
    _Atomic int requests;
    _Atomic int live; /* connection threads running */
    pthread_mutex_t mu;
    char body[2048], sig[256], path[256];
} biz;

static void biz_reply(int fd, const char *status, const char *body)
{
    char out[2048];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, strlen(body), body);
    ssize_t w = send(fd, out, (size_t)n, MSG_NOSIGNAL);
    (void)w;
}

static void *biz_conn(void *arg);

static void *biz_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&biz.stop)) {
        int fd = accept(biz.fd, NULL, NULL);
        if (fd < 0)
            continue;
        if (atomic_load(&biz.stop)) {
            close(fd);
            break;
        }
        /* One thread per connection: a slow answer holds up no other. */
        pthread_t t;
        atomic_fetch_add(&biz.live, 1);
        if (pthread_create(&t, NULL, biz_conn, (void *)(intptr_t)fd) != 0) {
            atomic_fetch_sub(&biz.live, 1);
            close(fd);
        } else
            pthread_detach(t);
    }
    return NULL;
}

static void *biz_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    {
        char req[8192];
        size_t got = 0;
        const char *end = NULL;
        size_t clen = 0;
        /* Head, then Content-Length bytes of body. */
        while (got < sizeof req - 1) {
            ssize_t k = recv(fd, req + got, sizeof req - 1 - got, 0);
            if (k <= 0)
                break;
            got += (size_t)k;
            req[got] = '\0';
            end = strstr(req, "\r\n\r\n");
            if (end != NULL) {
                const char *cl = strcasestr(req, "Content-Length:");
                clen = cl ? (size_t)atol(cl + 15) : 0;
                if (got >= (size_t)(end + 4 - req) + clen)
                    break;
            }
        }
        if (end == NULL) {
            close(fd);
            return NULL;
        }
        pthread_mutex_lock(&biz.mu);
        snprintf(biz.body, sizeof biz.body, "%.*s", (int)clen, end + 4);
        const char *sh = strcasestr(req, "X-Voxbridge-Signature: ");
        snprintf(biz.sig, sizeof biz.sig, "%.*s",
                 sh ? (int)strcspn(sh + 23, "\r\n") : 0, sh ? sh + 23 : "");
        snprintf(biz.path, sizeof biz.path, "%.*s", (int)strcspn(req, "\r\n"),
                 req);
        pthread_mutex_unlock(&biz.mu);
        atomic_fetch_add(&biz.requests, 1);
        const char *m = atomic_load(&biz.mode);
        if (strcmp(m, "object") == 0)
            biz_reply(fd, "200 OK",
                      "{\"voice\": \"Leda\", \"instructions\": \"Per-call "
                      "prompt.\", \"greeting\": \"Hello from the URL.\"}");
        else if (strcmp(m, "named") == 0)
            biz_reply(fd, "200 OK", "{\"assistant\": \"vip\"}");
        else if (strcmp(m, "204") == 0)
            biz_reply(fd, "204 No Content", "");
        else if (strcmp(m, "slow") == 0) {
            usleep(2500 * 1000);
            biz_reply(fd, "200 OK", "{\"assistant\": \"vip\"}");
        } else if (strcmp(m, "500") == 0)
            biz_reply(fd, "500 Internal Server Error", "{}");
        else if (strcmp(m, "garbage") == 0)
            biz_reply(fd, "200 OK", "this is not json");
        else if (strcmp(m, "unknown") == 0)
            biz_reply(fd, "200 OK", "{\"assistant\": \"nobody\"}");
        else
            biz_reply(fd, "200 OK", "{\"voice\": \"Nobody\"}");
        close(fd);
    }
    atomic_fetch_sub(&biz.live, 1);
    return NULL;
}

static void biz_start(void)
{
    memset(&biz, 0, sizeof biz);
    pthread_mutex_init(&biz.mu, NULL);
    atomic_store(&biz.mode, "204");
    biz.port = proc_free_port();
    biz.fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(biz.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)biz.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(biz.fd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(biz.fd, 16), 0);
    ASSERT_EQ(pthread_create(&biz.th, NULL, biz_main, NULL), 0);
}

static void biz_stop(void)
{
    atomic_store(&biz.stop, 1);
    int fd = tc_connect(biz.port); /* wakes accept */
    close(fd);
    pthread_join(biz.th, NULL);
    close(biz.fd);
    /* The slow answer's thread finishes its sleep. */
    while (atomic_load(&biz.live) > 0)
        usleep(10000);
}

/* An HMAC of our own over "<t>.<body>", compared with the header. */
static void assert_signed(const char *sig, const char *body, const char *key)
{
    long long t = 0;
    char hex[65] = "";
    ASSERT_EQ(sscanf(sig, "t=%lld,v1=%64[0-9a-f]", &t, hex), 2);
    long long now = (long long)vb_clock_wall_s();
    ASSERT_LT(t > now ? t - now : now - t, 60);
    char msg[4096];
    int n = snprintf(msg, sizeof msg, "%lld.%s", t, body);
    unsigned char mac[32];
    ASSERT_EQ(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                              (const unsigned char *)key, strlen(key),
                              (const unsigned char *)msg, (size_t)n, mac),
              0);
    char want[65];
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", mac[i]);
    ASSERT_STR_EQ(hex, want);
}

TEST_T(assistant_url_overrides_and_falls_back_within_the_bound, 150)
{
    rig_t r;
    rig_init(&r);
    biz_start();
    const char *file = assist_file(&r, assistants_json);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    char aurl[128];
    snprintf(aurl, sizeof aurl, "http://127.0.0.1:%d/assistant", biz.port);
    rig_vb(&r,
           (const char *const[]){"--assistants", file, "--assistant-url", aurl,
                                 "--assistant-timeout-ms", "600",
                                 "--webhook-secret", "biz-secret",
                                 /* Its webhooks never stream: the drain
                                  * would wait for them. */
                                 "--drain-timeout", "1", NULL},
           NULL);
    /* mode, the name the stream carries, the voice of the setup. */
    static const struct {
        const char *mode, *name, *voice;
    } cases[] = {
        {"object", "sales-bot", "Leda"},     {"named", "vip", "Fenrir"},
        {"204", "sales-bot", "Charon"},      {"slow", "sales-bot", "Charon"},
        {"500", "sales-bot", "Charon"},      {"garbage", "sales-bot", "Charon"},
        {"badfield", "sales-bot", "Charon"}, {"unknown", "sales-bot", "Charon"},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    double worst_fail_ms = 0;
    for (int i = 0; i < n; i++) {
        atomic_store(&biz.mode, cases[i].mode);
        char sid[32];
        snprintf(sid, sizeof sid, "CAurl%d", i);
        double t0 = tc_now_ms();
        char *twiml = webhook(&r, sid, "%2B18005550123");
        double ms = tc_now_ms() - t0;
        char name[128];
        twiml_param(twiml, "assistant", name, sizeof name);
        if (strcmp(name, cases[i].name) != 0)
            vb_test_fail(__FILE__, __LINE__, "%s: assistant %s, not %s",
                         cases[i].mode, name, cases[i].name);
        ASSERT_STR_CONTAINS(twiml, "<Connect action=");
        ASSERT_STR_CONTAINS(twiml, "><Stream url=");
        free(twiml);
        printf("  %-8s webhook %.0f ms\n", cases[i].mode, ms);
        /* Never longer than the bound, and a margin for a busy machine. */
        ASSERT_LT(ms, 600 + 1000);
        if (strcmp(cases[i].mode, "slow") == 0) {
            ASSERT_GE(ms, 550);
            worst_fail_ms = ms;
        }
        /* What the business got: the call, signed. */
        pthread_mutex_lock(&biz.mu);
        char body[2048], sig[256];
        snprintf(body, sizeof body, "%s", biz.body);
        snprintf(sig, sizeof sig, "%s", biz.sig);
        pthread_mutex_unlock(&biz.mu);
        char want[256];
        snprintf(want, sizeof want,
                 "{\"event\":\"call.incoming\",\"call\":{\"sid\":\"%s\","
                 "\"account_sid\":\"AC0\",\"from\":\"+15550002222\",\"to\":"
                 "\"+18005550123\",\"direction\":\"inbound\"}}",
                 sid);
        ASSERT_STR_EQ(body, want);
        assert_signed(sig, body, "biz-secret");
    }
    ASSERT_EQ(atomic_load(&biz.requests), n);
    printf("  timed-out webhook answered in %.0f ms (bound 600)\n",
           worst_fail_ms);
    /* Each call pre-connected with the assistant it got. */
    uint64_t end = vb_clock_now_ns() + (uint64_t)proc_ms(15000) * 1000000u;
    cJSON *evs = NULL;
    for (;;) {
        evs = fake_events(&r);
        if (count_type(evs, "setup") >= n)
            break;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "%d setups, not %d",
                         count_type(evs, "setup"), n);
        cJSON_Delete(evs);
        usleep(20000);
    }
    char *m = metrics(&r);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    biz_stop();
    /* Pre-connects start in webhook order; match them by prompt/voice. */
    int by_voice[4] = {0}; /* Leda, Fenrir, Charon, other */
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0)
    {
        const cJSON *msg = cJSON_GetObjectItem(e, "msg");
        const char *v = setup_voice(msg);
        int k = strcmp(v, "Leda") == 0     ? 0
                : strcmp(v, "Fenrir") == 0 ? 1
                : strcmp(v, "Charon") == 0 ? 2
                                           : 3;
        by_voice[k]++;
        if (k == 0) {
            /* The object's fields, the rest from the number's assistant. */
            ASSERT_STR_EQ(setup_prompt(msg), "Per-call prompt.");
        } else if (k == 1) {
            ASSERT_STR_EQ(setup_prompt(msg), "VIP desk.");
        } else if (k == 2) {
            ASSERT_STR_EQ(setup_prompt(msg), "You sell Acme widgets.");
        }
    }
    ASSERT_EQ(by_voice[0], 1);
    ASSERT_EQ(by_voice[1], 1);
    ASSERT_EQ(by_voice[2], n - 2);
    ASSERT_EQ(by_voice[3], 0);
    cJSON_Delete(evs);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"assistant\""),
              1);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"named\""), 1);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"default\""), 1);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"timeout\""), 1);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"error\""), 1);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"invalid\""), 3);
    /* Each fallback logged with its call. */
    ASSERT_STR_CONTAINS(vblog, "call=CAurl3 outcome=timeout");
    ASSERT_STR_CONTAINS(vblog, "call=CAurl4 outcome=error why=\"status 500\"");
    ASSERT_STR_CONTAINS(vblog, "call=CAurl6 outcome=invalid");
    ASSERT_STR_CONTAINS(vblog, "call=CAurl0 outcome=assistant");
    free(m);
    free(vblog);
}

/* The webhook's own deadline (--request-timeout-ms) passes while the
 * assistant request still runs: the connection is closed and lingers; the
 * assistant answer that comes later finds it going. Nothing is answered,
 * nothing is freed twice (ASan), and the call holds no capacity: the server
 * drains at once and exits cleanly. */
TEST_T(assistant_answer_after_the_webhook_deadline_is_dropped, 90)
{
    rig_t r;
    rig_init(&r);
    biz_start();
    const char *file = assist_file(&r, assistants_json);
    rig_fake(&r, (const char *const[]){"--mode", "echo", NULL});
    char aurl[128];
    snprintf(aurl, sizeof aurl, "http://127.0.0.1:%d/assistant", biz.port);
    rig_vb(&r,
           (const char *const[]){
               "--assistants", file, "--assistant-url", aurl,
               "--assistant-timeout-ms", "2000", "--request-timeout-ms", "1000",
               "--webhook-secret", "biz-secret", "--drain-timeout", "1", NULL},
           NULL);
    atomic_store(&biz.mode, "slow");
    char body[512], url[128], sig[VB_TWILIO_SIG_LEN + 1];
    snprintf(body, sizeof body,
             "AccountSid=AC0&CallSid=CAlate&From=%%2B15550002222&To="
             "%%2B18005550123&Direction=inbound");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/webhook/voice", r.vb_port);
    vb_form_t f = {0};
    ASSERT_EQ(vb_form_parse(&f, body, strlen(body), 100), 0);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, &f, sig), 0);
    vb_form_free(&f);
    char raw[2048];
    snprintf(raw, sizeof raw,
             "POST /webhook/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
             sig, strlen(body), body);
    /* A client that never closes its side: at the deadline the server
     * closes the connection (no TwiML) and lingers on it, reading. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)r.vb_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(send(fd, raw, strlen(raw), MSG_NOSIGNAL), (ssize_t)strlen(raw));
    /* The assistant request's own bound passes (2 s) while the closed
     * connection still lingers; then the server goes on serving. */
    uint64_t end = vb_clock_now_ns() + (uint64_t)proc_ms(15000) * 1000000u;
    for (;;) {
        char *log = proc_read_file(r.vb_log);
        bool seen = log != NULL &&
                    strstr(log, "msg=\"voice webhook connection gone before "
                                "its answer\" call=CAlate") != NULL;
        free(log);
        if (seen)
            break;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "the late answer was not seen");
        usleep(20000);
    }
    close(fd);
    usleep(500 * 1000);
    atomic_store(&biz.mode, "named");
    char *twiml = webhook(&r, "CAnext", "%2B18005550123");
    ASSERT_STR_CONTAINS(twiml, "<Stream url=");
    free(twiml);
    char *vblog = rig_vb_stop(&r);
    rig_stop(&r);
    biz_stop();
    /* Only CAnext (answered, never streamed) was still awaited. */
    ASSERT_STR_CONTAINS(vblog,
                        "drain timeout: ending remaining calls\" calls=0 "
                        "pending=1");
    free(vblog);
}

/* Opens a stream for `call` on r's instance, its start carrying `params`,
 * and sends `frames` 20 ms μ-law frames of silence at once; returns the
 * socket, left open. */
static int stream_open(const rig_t *r, const char *call, const char *params,
                       int frames)
{
    int fd = ws_upgrade(r->vb_port);
    ws_text(fd, "{\"event\":\"connected\",\"protocol\":\"Call\","
                "\"version\":\"1.0.0\"}");
    char msg[2048];
    snprintf(msg, sizeof(msg),
             "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{"
             "\"accountSid\":\"AC0\",\"streamSid\":\"MZ%s\",\"callSid\":"
             "\"%s\",\"tracks\":[\"inbound\"],\"mediaFormat\":{"
             "\"encoding\":\"audio/x-mulaw\",\"sampleRate\":8000,"
             "\"channels\":1},\"customParameters\":{%s}},"
             "\"streamSid\":\"MZ%s\"}",
             call, call, params, call);
    ws_text(fd, msg);
    char payload[256] = "";
    for (int i = 0; i < 53; i++)
        strcat(payload, "////");
    strcat(payload, "/w=="); /* 160 bytes of 0xFF */
    for (int i = 0; i < frames; i++) {
        snprintf(msg, sizeof msg,
                 "{\"event\":\"media\",\"sequenceNumber\":\"%d\",\"media\":{"
                 "\"track\":\"inbound\",\"chunk\":\"%d\",\"timestamp\":\"%d\","
                 "\"payload\":\"%s\"},\"streamSid\":\"MZ%s\"}",
                 i + 2, i + 1, i * 20, payload, call);
        ws_text(fd, msg);
    }
    return fd;
}

static void stream_stop(int fd, const char *call)
{
    char stop[512];
    snprintf(stop, sizeof stop,
             "{\"event\":\"stop\",\"sequenceNumber\":\"999\",\"stop\":{"
             "\"accountSid\":\"AC0\",\"callSid\":\"%s\"},"
             "\"streamSid\":\"MZ%s\"}",
             call, call);
    ws_text(fd, stop);
    ASSERT_EQ(ws_close_code(fd, proc_ms(5000)), 1000);
    close(fd);
}

/* Answers A's webhook for `call` (an assistant object from the URL) and
 * writes the stream's parameters for B into `params`. */
static void object_webhook(const rig_t *a, const char *call, char *params,
                           size_t n, bool keep_mark)
{
    char *twiml = webhook(a, call, "%2B18005550123");
    char tok[128], name[128], mac[128], from[32], dir[32];
    twiml_param(twiml, "streamToken", tok, sizeof tok);
    twiml_param(twiml, "assistant", name, sizeof name);
    twiml_param(twiml, "assistantMac", mac, sizeof mac);
    twiml_param(twiml, "assistantFrom", from, sizeof from);
    twiml_param(twiml, "Direction", dir, sizeof dir);
    free(twiml);
    /* The name the object was built on, marked as the URL's answer. */
    ASSERT_STR_EQ(name, "sales-bot");
    ASSERT_STR_EQ(from, "url");
    ASSERT_STR_EQ(dir, "inbound");
    snprintf(params, n,
             "\"streamToken\":\"%s\",\"assistant\":\"%s\",\"assistantMac\":"
             "\"%s\",\"From\":\"+15550002222\",\"To\":\"+18005550123\","
             "\"Direction\":\"inbound\"%s",
             tok, name, mac, keep_mark ? ",\"assistantFrom\":\"url\"" : "");
}

/* Waits for the fake's setup number `n` (0-based) and returns its session
 * id, the voice and prompt into `voice` / `prompt`. */
static int wait_setup(const rig_t *r, int n, char *voice, char *prompt)
{
    uint64_t end = vb_clock_now_ns() + (uint64_t)proc_ms(15000) * 1000000u;
    for (;;) {
        cJSON *evs = fake_events(r);
        const cJSON *s = NULL, *e;
        int k = n;
        cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "setup") == 0 &&
                                       k-- == 0) s = e;
        if (s != NULL) {
            const cJSON *msg = cJSON_GetObjectItem(s, "msg");
            snprintf(voice, 32, "%s", setup_voice(msg));
            snprintf(prompt, 128, "%s", setup_prompt(msg));
            int id =
                (int)cJSON_GetNumberValue(cJSON_GetObjectItem(s, "session"));
            cJSON_Delete(evs);
            return id;
        }
        cJSON_Delete(evs);
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "no setup %d", n);
        usleep(20000);
    }
}

/* Waits until the fake got at least `bytes` of audio in session `id`. */
static void wait_session_audio(const rig_t *r, int id, double bytes)
{
    uint64_t end = vb_clock_now_ns() + (uint64_t)proc_ms(15000) * 1000000u;
    for (;;) {
        cJSON *evs = fake_events(r);
        double got = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, evs) if (strcmp(ev_type(e), "audio") == 0 &&
                                       (int)cJSON_GetNumberValue(
                                           cJSON_GetObjectItem(e, "session")) ==
                                           id) got +=
            cJSON_GetNumberValue(cJSON_GetObjectItem(e, "bytes"));
        cJSON_Delete(evs);
        if (got >= bytes)
            return;
        if (vb_clock_now_ns() > end)
            vb_test_fail(__FILE__, __LINE__, "session %d got %.0f bytes", id,
                         got);
        usleep(20000);
    }
}

/* A's webhook is answered with an assistant object; the stream goes to B,
 * which asks --assistant-url again (the same body) and sets up with the
 * object; when B's request times out, the named assistant answers; a
 * stream whose mark was removed fails its MAC. The caller's audio sent
 * while B waits reaches the model. */
TEST_T(stream_on_another_instance_asks_the_assistant_url_again, 150)
{
    rig_t a, b;
    rig_init(&a);
    biz_start();
    const char *file = assist_file(&a, assistants_json);
    rig_fake(&a, (const char *const[]){"--mode", "echo", NULL});
    char aurl[128];
    snprintf(aurl, sizeof aurl, "http://127.0.0.1:%d/assistant", biz.port);
    const char *const args[] = {"--assistants",
                                file,
                                "--assistant-url",
                                aurl,
                                "--assistant-timeout-ms",
                                "600",
                                "--webhook-secret",
                                "biz-secret",
                                "--drain-timeout",
                                "1",
                                NULL};
    rig_vb(&a, args, NULL);
    b = a;
    snprintf(b.vb_log, sizeof b.vb_log, "%s/voxbridge-b.log", a.dir);
    rig_vb(&b, args, NULL);
    char voice[32], prompt[128], params[1024];

    /* 1: B gets the object too. 20 frames wait for its answer. */
    atomic_store(&biz.mode, "object");
    object_webhook(&a, "CAobj1", params, sizeof params, true);
    pthread_mutex_lock(&biz.mu);
    char a_body[2048];
    snprintf(a_body, sizeof a_body, "%s", biz.body);
    pthread_mutex_unlock(&biz.mu);
    wait_setup(&a, 0, voice, prompt); /* A's unclaimed pre-connect */
    ASSERT_STR_EQ(voice, "Leda");
    int fd = stream_open(&b, "CAobj1", params, 20);
    int id = wait_setup(&a, 1, voice, prompt);
    ASSERT_STR_EQ(voice, "Leda");
    ASSERT_STR_EQ(prompt, "Per-call prompt.");
    ASSERT_EQ(atomic_load(&biz.requests), 2);
    pthread_mutex_lock(&biz.mu);
    ASSERT_STR_EQ(biz.body, a_body);
    assert_signed(biz.sig, biz.body, "biz-secret");
    pthread_mutex_unlock(&biz.mu);
    /* 20 frames of 8 kHz μ-law are 12800 bytes of 16 kHz PCM16. */
    wait_session_audio(&a, id, 12000);
    stream_stop(fd, "CAobj1");

    /* 2: B's request times out: the assistant the stream names. */
    object_webhook(&a, "CAobj2", params, sizeof params, true);
    wait_setup(&a, 2, voice, prompt);
    atomic_store(&biz.mode, "slow");
    fd = stream_open(&b, "CAobj2", params, 20);
    id = wait_setup(&a, 3, voice, prompt);
    ASSERT_STR_EQ(voice, "Charon");
    ASSERT_STR_EQ(prompt, "You sell Acme widgets.");
    wait_session_audio(&a, id, 12000);
    stream_stop(fd, "CAobj2");

    /* 3: the mark removed: the MAC fails, the default answers, and B asks
     * nothing. */
    atomic_store(&biz.mode, "object");
    object_webhook(&a, "CAobj3", params, sizeof params, false);
    wait_setup(&a, 4, voice, prompt);
    int before = atomic_load(&biz.requests);
    fd = stream_open(&b, "CAobj3", params, 1);
    wait_setup(&a, 5, voice, prompt);
    ASSERT_STR_EQ(voice, "Kore");
    ASSERT_EQ(atomic_load(&biz.requests), before);
    stream_stop(fd, "CAobj3");

    char *m = metrics(&b);
    char *blog = rig_vb_stop(&b);
    char *alog = rig_vb_stop(&a);
    rig_stop(&a);
    biz_stop();
    ASSERT_STR_CONTAINS(blog, "msg=\"stream from another instance: assistant "
                              "asked again\" call=CAobj1");
    ASSERT_STR_CONTAINS(blog, "call=CAobj1 outcome=assistant");
    ASSERT_STR_CONTAINS(blog, "msg=\"repeated assistant request failed: the "
                              "assistant the stream names answers\" "
                              "call=CAobj2 outcome=timeout");
    ASSERT_STR_CONTAINS(blog, "msg=\"stream names an assistant without a "
                              "valid MAC: the default answers\" "
                              "call=CAobj3");
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"assistant\""),
              1);
    ASSERT_EQ(msum(m, "vb_assistant_requests_total", "outcome=\"timeout\""), 1);
    free(m);
    free(blog);
    free(alog);
}
