/* SPDX-License-Identifier: MIT */
/*
 * vb-sim command line. `vb-sim call` places one simulated Twilio call
 * against a voxbridge webhook and prints a one-line summary; the exit
 * status is 0 when the call completed without a protocol error, 1 when it
 * failed, 2 for usage errors.
 */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sim/sim.h"
#include "core/log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vb-sim call --webhook URL --audio IN.wav [options]\n"
            "       vb-sim load --help   (many calls: the load bench)\n"
            "       vb-sim serve --audio IN.wav [options]  (outbound calls:\n"
            "                            Calls.json creates; --help)\n"
            "\n"
            "Places one call as Twilio would: signed webhook, strict TwiML,\n"
            "signed Media Streams upgrade, 20 ms media, playout with mark\n"
            "echoes and clear, DTMF, stop; serves the REST hang-up API.\n"
            "\n"
            "  --webhook URL        voice webhook (http:// or https://)\n"
            "  --auth-token T       Twilio auth token used to sign requests\n"
            "                       (default $TWILIO_AUTH_TOKEN; empty: "
            "unsigned)\n"
            "  --audio IN.wav       caller audio: 8000 Hz mono 16-bit PCM\n"
            "  --heard OUT.wav      write what the caller heard (8 kHz)\n"
            "  --dtmf D@S[,D@S...]  press digit D at S seconds into the "
            "stream\n"
            "  --hangup-after S     hang up S seconds into the stream\n"
            "                       (default: end of audio + --tail)\n"
            "  --suppress-silence   send no media while the caller is silent "
            "(timestamps keep real time), as a leg with silence suppression\n"
            "  --jitter MS          hold each frame up to MS ms (random, "
            "order kept)\n"
            "  --stall S:MS[,...]   from S s into the stream send nothing "
            "for MS ms,\n"
            "                       then all that was held at once (a "
            "burst)\n"
            "  --gap S:MS[,...]     never send the frames of those MS ms "
            "(the\n"
            "                       timestamps jump over them)\n"
            "  --timing-seed N      seed of --jitter (default 1)\n"
            "  --tail S             listening time after the audio "
            "(default 2)\n"
            "  --hangup-before-stream S\n"
            "                       hang up S seconds after the answer, "
            "before\n"
            "                       the stream opens (it never comes)\n"
            "  --status-callback URL  the number's call status callback:\n"
            "                       signed, sent for each event asked and\n"
            "                       waited for (up to 2 s) at the end\n"
            "  --status-callback-method M   POST (default) or GET\n"
            "  --status-callback-event E[,E...]\n"
            "                       initiated, ringing, answered, completed\n"
            "                       (default completed)\n"
            "  --upgrade-signature M  how the stream upgrade is signed:\n"
            "                       exact (the <Stream url>, default), none\n"
            "                       (no header), slash (url + '/'), port\n"
            "                       (wss://host:443/..., ws://host:80/...)\n"
            "  --api-listen H:P     REST API address (default "
            "127.0.0.1:0);\n"
            "                       give voxbridge --twilio-api-url "
            "http://H:P\n"
            "  --api-key SK.. --api-secret S\n"
            "                       REST also accepts Basic SK..:S (a key\n"
            "                       of the call's account); else 401 20003\n"
            "  --account-sid AC..   account (default random)\n"
            "  --from N, --to N     caller and called numbers\n"
            "  --pause-scale X      multiply <Pause> lengths (default 1)\n"
            "  --ca-file F          CA bundle for https/wss\n"
            "  --timeout S          give up after S seconds\n"
            "  -v, --verbose        log call events to stderr\n");
}

static int parse_dtmf(const char *s, sim_dtmf_t **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    sim_dtmf_t *d = calloc(cap, sizeof *d);
    if (d == NULL)
        return -1;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        char digit = *p;
        if (strchr("0123456789*#ABCD", digit) == NULL || p[1] != '@') {
            free(d);
            return -1;
        }
        char *e;
        double at = strtod(p + 2, &e);
        if (e == p + 2 || at < 0 || (*e != ',' && *e != '\0')) {
            free(d);
            return -1;
        }
        d[k].digit = digit;
        d[k].at_s = at;
        k++;
        p = *e == ',' ? e + 1 : e;
    }
    /* Send in time order. */
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && d[j].at_s < d[j - 1].at_s; j--) {
            sim_dtmf_t t = d[j];
            d[j] = d[j - 1];
            d[j - 1] = t;
        }
    *out = d;
    *n = k;
    return 0;
}

/* "S:MS[,S:MS...]" into a malloc'd array; -1 when malformed. */
static int parse_windows(const char *s, sim_window_t **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    sim_window_t *w = calloc(cap, sizeof *w);
    if (w == NULL)
        return -1;
    size_t k = 0;
    for (const char *p = s; *p;) {
        char *e, *f;
        double at = strtod(p, &e);
        if (e == p || at < 0 || *e != ':')
            break;
        double ms = strtod(e + 1, &f);
        if (f == e + 1 || ms <= 0 || (*f != ',' && *f != '\0'))
            break;
        w[k].at_s = at;
        w[k].ms = ms;
        k++;
        p = *f == ',' ? f + 1 : f;
        if (*f == '\0') {
            *out = w;
            *n = k;
            return 0;
        }
    }
    free(w);
    return -1;
}

typedef struct run {
    sim_api_t *api;
    bool done;
    uint64_t rest_requests, rest_auth_failures;
} run_t;

static void call_done(sim_call_t *c, void *ud)
{
    (void)c;
    run_t *r = ud;
    r->done = true;
    r->rest_requests = sim_api_requests(r->api);
    r->rest_auth_failures = sim_api_auth_failures(r->api);
    sim_api_stop(r->api);
    r->api = NULL;
}

/* --upgrade-signature M: 0, or -1 for an unknown M. */
static int parse_upgrade_sig(const char *m, sim_upgrade_sig_t *out)
{
    static const struct {
        const char *name;
        sim_upgrade_sig_t v;
    } modes[] = {{"exact", SIM_UPGRADE_SIG_EXACT},
                 {"none", SIM_UPGRADE_SIG_NONE},
                 {"slash", SIM_UPGRADE_SIG_SLASH},
                 {"port", SIM_UPGRADE_SIG_PORT}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(m, modes[i].name) == 0) {
            *out = modes[i].v;
            return 0;
        }
    fprintf(stderr,
            "vb-sim: unknown --upgrade-signature \"%s\" (exact, none, "
            "slash, port)\n",
            m);
    return -1;
}

/* An API key needs both halves, and an SK... SID. */
static int check_api_key(const char *sid, const char *secret)
{
    if (sid == NULL && secret == NULL)
        return 0;
    if (sid == NULL || secret == NULL || *secret == '\0' ||
        strncmp(sid, "SK", 2) != 0) {
        fprintf(stderr, "vb-sim: --api-key SK... and --api-secret S go "
                        "together\n");
        return -1;
    }
    return 0;
}

static int cmd_call(int argc, char **argv)
{
    static const struct option opts[] = {
        {"webhook", required_argument, NULL, 'w'},
        {"auth-token", required_argument, NULL, 't'},
        {"audio", required_argument, NULL, 'a'},
        {"heard", required_argument, NULL, 'H'},
        {"dtmf", required_argument, NULL, 'd'},
        {"hangup-after", required_argument, NULL, 'h'},
        {"tail", required_argument, NULL, 'T'},
        {"api-listen", required_argument, NULL, 'l'},
        {"account-sid", required_argument, NULL, 'A'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 'o'},
        {"pause-scale", required_argument, NULL, 'p'},
        {"ca-file", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 'x'},
        {"verbose", no_argument, NULL, 'v'},
        {"suppress-silence", no_argument, NULL, 'S'},
        {"jitter", required_argument, NULL, 1001},
        {"stall", required_argument, NULL, 1002},
        {"gap", required_argument, NULL, 1003},
        {"timing-seed", required_argument, NULL, 1004},
        {"upgrade-signature", required_argument, NULL, 'U'},
        {"api-key", required_argument, NULL, 'k'},
        {"api-secret", required_argument, NULL, 'K'},
        {"hangup-before-stream", required_argument, NULL, 1005},
        {"status-callback", required_argument, NULL, 1006},
        {"status-callback-method", required_argument, NULL, 1007},
        {"status-callback-event", required_argument, NULL, 1008},
        {"help", no_argument, NULL, '?'},
        {NULL, 0, NULL, 0},
    };
    const char *key_sid = NULL, *key_secret = NULL;
    sim_call_opts_t o = {
        .hangup_after_s = -1, .tail_s = 2.0, .pause_scale = 1.0};
    const char *audio = NULL, *heard = NULL, *listen = "127.0.0.1:0";
    o.auth_token = getenv("TWILIO_AUTH_TOKEN");
    sim_dtmf_t *dtmf = NULL;
    sim_window_t *stalls = NULL, *gaps = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
        switch (ch) {
        case 'w':
            o.webhook = optarg;
            break;
        case 1001: {
            char *e;
            o.jitter_ms = strtod(optarg, &e);
            if (*e != '\0' || o.jitter_ms < 0 || o.jitter_ms > 10000) {
                fprintf(stderr, "vb-sim: bad --jitter \"%s\" (0..10000 ms)\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 1002:
        case 1003: {
            sim_window_t **w = ch == 1002 ? &stalls : &gaps;
            size_t *nw = ch == 1002 ? &o.nstalls : &o.ngaps;
            free(*w);
            *w = NULL;
            if (parse_windows(optarg, w, nw) != 0) {
                fprintf(stderr,
                        "vb-sim: bad --%s \"%s\" (want e.g. "
                        "\"1.5:800,4:300\": seconds:ms)\n",
                        ch == 1002 ? "stall" : "gap", optarg);
                return 2;
            }
            if (ch == 1002)
                o.stalls = stalls;
            else
                o.gaps = gaps;
            break;
        }
        case 1004:
            o.timing_seed = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 1005: {
            char *e;
            o.hangup_before_stream = true;
            o.hangup_before_stream_s = strtod(optarg, &e);
            if (*e != '\0' || o.hangup_before_stream_s < 0 ||
                o.hangup_before_stream_s > 3600) {
                fprintf(stderr,
                        "vb-sim: bad --hangup-before-stream \"%s\" (0..3600 "
                        "s)\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 1006:
            if (strncmp(optarg, "http://", 7) != 0 &&
                strncmp(optarg, "https://", 8) != 0) {
                fprintf(stderr,
                        "vb-sim: --status-callback \"%s\" is not an http(s) "
                        "URL\n",
                        optarg);
                return 2;
            }
            o.status_cb = optarg;
            break;
        case 1007:
            if (strcmp(optarg, "GET") != 0 && strcmp(optarg, "POST") != 0) {
                fprintf(stderr,
                        "vb-sim: --status-callback-method \"%s\": GET or "
                        "POST\n",
                        optarg);
                return 2;
            }
            o.status_cb_get = strcmp(optarg, "GET") == 0;
            break;
        case 1008: {
            char bad[40];
            if (sim_call_events_parse(optarg, &o.status_cb_events, bad,
                                      sizeof bad) != 0) {
                fprintf(stderr,
                        "vb-sim: unknown --status-callback-event \"%s\" "
                        "(initiated, ringing, answered, completed)\n",
                        bad);
                return 2;
            }
            break;
        }
        case 'S':
            o.suppress_silence = true;
            break;
        case 'U':
            if (parse_upgrade_sig(optarg, &o.upgrade_sig) != 0)
                return 2;
            break;
        case 'k':
            key_sid = optarg;
            break;
        case 'K':
            key_secret = optarg;
            break;
        case 't':
            o.auth_token = optarg;
            break;
        case 'a':
            audio = optarg;
            break;
        case 'H':
            heard = optarg;
            break;
        case 'd':
            free(dtmf);
            dtmf = NULL;
            if (parse_dtmf(optarg, &dtmf, &o.ndtmf) != 0) {
                fprintf(stderr,
                        "vb-sim: bad --dtmf \"%s\" (want e.g. "
                        "\"1@3.0,#@4.5\")\n",
                        optarg);
                return 2;
            }
            o.dtmf = dtmf;
            break;
        case 'h':
        case 'T':
        case 'p':
        case 'x': {
            char *e;
            double v = strtod(optarg, &e);
            if (*e != '\0' || v < 0) {
                fprintf(stderr, "vb-sim: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'h')
                o.hangup_after_s = v;
            else if (ch == 'T')
                o.tail_s = v;
            else if (ch == 'p')
                o.pause_scale = v;
            else
                o.timeout_s = v;
            break;
        }
        case 'l':
            listen = optarg;
            break;
        case 'A':
            o.account_sid = optarg;
            break;
        case 'f':
            o.from = optarg;
            break;
        case 'o':
            o.to = optarg;
            break;
        case 'c':
            o.ca_file = optarg;
            break;
        case 'v':
            o.verbose = true;
            break;
        default:
            usage(ch == '?' ? stdout : stderr);
            return 2;
        }
    }
    if (o.webhook == NULL || audio == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (check_api_key(key_sid, key_secret) != 0)
        return 2;
    char err[512];
    int16_t *pcm = NULL;
    size_t n = 0;
    if (sim_wav_read(audio, &pcm, &n, err, sizeof err) != 0) {
        fprintf(stderr, "vb-sim: %s\n", err);
        return 2;
    }
    uint8_t *mulaw = malloc(n + 1);
    if (mulaw == NULL)
        return 1;
    for (size_t i = 0; i < n; i++)
        mulaw[i] = sim_mulaw_encode(pcm[i]);
    free(pcm);
    o.mulaw = mulaw;
    o.mulaw_len = n;
    o.record_heard = heard != NULL;

    char host[256];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon == NULL) {
        fprintf(stderr, "vb-sim: --api-listen wants HOST:PORT\n");
        return 2;
    }
    *colon = '\0';
    int port = atoi(colon + 1);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    signal(SIGPIPE, SIG_IGN);
    vb_log_set_level(o.verbose ? VB_LOG_INFO : VB_LOG_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    run_t run = {0};
    if (sim_api_start(&loop, host, port, o.auth_token, &run.api) != 0) {
        fprintf(stderr, "vb-sim: cannot listen on %s\n", listen);
        return 2;
    }
    fprintf(stderr, "vb-sim: REST API on http://%s:%d\n", host,
            sim_api_port(run.api));
    sim_call_t *call;
    if (sim_call_start(&loop, run.api, &o, call_done, &run, &call) != 0) {
        fprintf(stderr, "vb-sim: cannot start the call\n");
        return 1;
    }
    /* The key belongs to the call's account, as a key belongs to one
     * Twilio account. The webhook is under way, but no REST request can
     * have been read before the loop runs. */
    if (key_sid != NULL)
        sim_api_set_api_key(run.api, sim_call_account_sid(call), key_sid,
                            key_secret);
    while (!run.done)
        uv_run(&loop, UV_RUN_ONCE);
    const sim_call_result_t *r = sim_call_result(call);
    sim_call_print_summary(call, stdout);
    fflush(stdout);
    if (run.rest_requests > 0)
        fprintf(stderr, "vb-sim: REST API: requests=%llu auth_failures=%llu\n",
                (unsigned long long)run.rest_requests,
                (unsigned long long)run.rest_auth_failures);
    int rc = r->ok ? 0 : 1;
    if (heard != NULL) {
        size_t hl = 0;
        const uint8_t *h = sim_call_heard(call, &hl);
        int16_t *out = malloc(hl * 2 + 2);
        if (out != NULL) {
            for (size_t i = 0; i < hl; i++)
                out[i] = sim_mulaw_decode(h[i]);
            if (sim_wav_write(heard, out, hl) != 0) {
                fprintf(stderr, "vb-sim: cannot write %s\n", heard);
                rc = 1;
            }
            free(out);
        }
    }
    sim_call_free(call);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(mulaw);
    free(dtmf);
    free(stalls);
    free(gaps);
    return rc;
}

/* ---- vb-sim serve: outbound calls ---- */

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: vb-sim serve --audio IN.wav [options]\n"
            "\n"
            "Serves Twilio's REST API: POST .../Calls.json creates a call,\n"
            "which is placed back to its Url as the callee (status\n"
            "callbacks, Direction=outbound-api webhook, the stream, the\n"
            "callee's audio). Prints one summary line per finished call.\n"
            "\n"
            "  --api-listen H:P     REST API address (default 127.0.0.1:0)\n"
            "  --auth-token T       auth token (default $TWILIO_AUTH_TOKEN)\n"
            "  --api-key SK.. --api-secret S\n"
            "                       also accept Basic SK..:S (any account)\n"
            "  --upgrade-signature M  exact|none|slash|port, as for call\n"
            "  --audio IN.wav       callee audio: 8000 Hz mono 16-bit PCM\n"
            "  --calls N            exit after N finished calls (default "
            "1)\n"
            "  --answered-by X      machine detection result to send\n"
            "                       (human, machine_start, "
            "machine_end_beep,\n"
            "                       machine_end_silence, machine_end_other,\n"
            "                       fax, unknown)\n"
            "  --amd-after S        send it S seconds after the create "
            "(default 2)\n"
            "  --unreachable N      refuse calls to N (Twilio error 21215)\n"
            "  --hangup-after S, --tail S, --timeout S   as for vb-sim call\n"
            "  -v, --verbose\n");
}

typedef struct serve {
    sim_api_t *api;
    size_t want;
    bool done;
} serve_t;

static void serve_call_done(sim_outbound_t *ob, void *ud)
{
    serve_t *s = ud;
    if (s->want > 0 && sim_outbound_done(ob) >= s->want && !s->done) {
        s->done = true;
        sim_api_stop(s->api);
        s->api = NULL;
    }
}

static void on_term(uv_signal_t *h, int sig)
{
    (void)sig;
    serve_t *s = h->data;
    if (!s->done) {
        s->done = true;
        sim_api_stop(s->api);
        s->api = NULL;
    }
}

static void sig_closed(uv_handle_t *h)
{
    (void)h;
}

static int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"api-listen", required_argument, NULL, 'l'},
        {"auth-token", required_argument, NULL, 't'},
        {"audio", required_argument, NULL, 'a'},
        {"calls", required_argument, NULL, 'n'},
        {"answered-by", required_argument, NULL, 'b'},
        {"amd-after", required_argument, NULL, 'm'},
        {"unreachable", required_argument, NULL, 'u'},
        {"hangup-after", required_argument, NULL, 'h'},
        {"tail", required_argument, NULL, 'T'},
        {"timeout", required_argument, NULL, 'x'},
        {"verbose", no_argument, NULL, 'v'},
        {"upgrade-signature", required_argument, NULL, 'U'},
        {"api-key", required_argument, NULL, 'k'},
        {"api-secret", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, '?'},
        {NULL, 0, NULL, 0},
    };
    const char *key_sid = NULL, *key_secret = NULL;
    static const char *const answers[] = {"human",
                                          "machine_start",
                                          "machine_end_beep",
                                          "machine_end_silence",
                                          "machine_end_other",
                                          "fax",
                                          "unknown",
                                          NULL};
    sim_outbound_opts_t o = {.amd_after_s = 2.0};
    o.call.hangup_after_s = -1;
    o.call.tail_s = 2.0;
    o.call.pause_scale = 1.0;
    o.auth_token = getenv("TWILIO_AUTH_TOKEN");
    const char *audio = NULL, *listen = "127.0.0.1:0";
    serve_t run = {.want = 1};
    int ch;
    while ((ch = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
        switch (ch) {
        case 'l':
            listen = optarg;
            break;
        case 't':
            o.auth_token = optarg;
            break;
        case 'a':
            audio = optarg;
            break;
        case 'u':
            o.unreachable = optarg;
            break;
        case 'U':
            if (parse_upgrade_sig(optarg, &o.call.upgrade_sig) != 0)
                return 2;
            break;
        case 'k':
            key_sid = optarg;
            break;
        case 'K':
            key_secret = optarg;
            break;
        case 'b': {
            int k = 0;
            while (answers[k] != NULL && strcmp(answers[k], optarg) != 0)
                k++;
            if (answers[k] == NULL) {
                fprintf(stderr, "vb-sim: unknown --answered-by \"%s\"\n",
                        optarg);
                return 2;
            }
            o.answered_by = answers[k];
            break;
        }
        case 'n':
        case 'm':
        case 'h':
        case 'T':
        case 'x': {
            char *e;
            double v = strtod(optarg, &e);
            if (*e != '\0' || v < 0) {
                fprintf(stderr, "vb-sim: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'n')
                run.want = (size_t)v;
            else if (ch == 'm')
                o.amd_after_s = v;
            else if (ch == 'h')
                o.call.hangup_after_s = v;
            else if (ch == 'T')
                o.call.tail_s = v;
            else
                o.call.timeout_s = v;
            break;
        }
        case 'v':
            o.verbose = o.call.verbose = true;
            break;
        default:
            serve_usage(ch == '?' ? stdout : stderr);
            return ch == '?' ? 0 : 2;
        }
    }
    if (audio == NULL || optind != argc) {
        serve_usage(stderr);
        return 2;
    }
    if (check_api_key(key_sid, key_secret) != 0)
        return 2;
    char err[512];
    int16_t *pcm = NULL;
    size_t n = 0;
    if (sim_wav_read(audio, &pcm, &n, err, sizeof err) != 0) {
        fprintf(stderr, "vb-sim: %s\n", err);
        return 2;
    }
    uint8_t *mulaw = malloc(n + 1);
    if (mulaw == NULL)
        return 1;
    for (size_t i = 0; i < n; i++)
        mulaw[i] = sim_mulaw_encode(pcm[i]);
    free(pcm);
    o.call.mulaw = mulaw;
    o.call.mulaw_len = n;
    char host[256];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon == NULL) {
        fprintf(stderr, "vb-sim: --api-listen wants HOST:PORT\n");
        return 2;
    }
    *colon = '\0';
    int port = atoi(colon + 1);
    signal(SIGPIPE, SIG_IGN);
    vb_log_set_level(o.verbose ? VB_LOG_INFO : VB_LOG_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_signal_t sigs[2];
    for (int i = 0; i < 2; i++) {
        uv_signal_init(&loop, &sigs[i]);
        sigs[i].data = &run;
        uv_signal_start(&sigs[i], on_term, i == 0 ? SIGTERM : SIGINT);
    }
    if (sim_api_start(&loop, host, port, o.auth_token, &run.api) != 0) {
        fprintf(stderr, "vb-sim: cannot listen on %s\n", listen);
        return 2;
    }
    if (key_sid != NULL)
        sim_api_set_api_key(run.api, NULL, key_sid, key_secret);
    o.done = serve_call_done;
    o.done_ud = &run;
    sim_outbound_t *ob = NULL;
    if (sim_outbound_start(&loop, run.api, &o, &ob) != 0)
        return 1;
    fprintf(stderr, "vb-sim: REST API on http://%s:%d\n", host,
            sim_api_port(run.api));
    while (!run.done)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 2; i++)
        uv_close((uv_handle_t *)&sigs[i], sig_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = sim_outbound_done(ob) >= run.want ? 0 : 1;
    sim_outbound_free(ob);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(mulaw);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "call") == 0)
        return cmd_call(argc - 1, argv + 1);
    if (strcmp(argv[1], "load") == 0)
        return sim_load_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    fprintf(stderr,
            "vb-sim: unknown command \"%s\" (try: vb-sim call, vb-sim "
            "load)\n",
            argv[1]);
    return 2;
}
