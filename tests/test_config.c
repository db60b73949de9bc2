/* SPDX-License-Identifier: MIT */
#include "core/config.h"
#include "core/err.h"
#include "tests/test.h"

static char err[512];

static int load(vb_config_t *c, int argc, const char *const *argv)
{
    return vb_config_load(c, argc, argv, err, sizeof(err));
}

static void clear_env(void)
{
    unsetenv("VOXBRIDGE_LANES");
    unsetenv("VOXBRIDGE_LISTEN");
    unsetenv("GEMINI_API_KEY");
    unsetenv("TWILIO_AUTH_TOKEN");
}

TEST(config_defaults)
{
    clear_env();
    vb_config_t c;
    const char *argv[] = {"voxbridge", NULL};
    ASSERT_EQ(load(&c, 1, argv), 0);
    ASSERT_STR_EQ(c.listen, "0.0.0.0:8080");
    ASSERT_EQ(c.lanes, 1);
    ASSERT_EQ(c.max_header_bytes, 16384);
    ASSERT_TRUE(!c.trust_proxy);
    ASSERT_TRUE(c.input_transcription);
    ASSERT_STR_EQ(c.gemini_voice, "Puck");
    ASSERT_STR_EQ(c.resampler, "speexdsp");
    ASSERT_STR_EQ(c.gemini_api_key, "");
    ASSERT_NEAR(c.gemini_temperature, -1, 0);
    vb_config_free(&c);
    vb_config_free(NULL);
}

TEST(config_env_then_flags_win)
{
    clear_env();
    setenv("VOXBRIDGE_LANES", "3", 1);
    setenv("VOXBRIDGE_LISTEN", "127.0.0.1:9000", 1);
    vb_config_t c;
    const char *argv[] = {
        "voxbridge",      "--lanes=5", "--trust-proxy",
        "--gemini-voice", "Kore",      "--no-input-transcription",
        "--log-format",   "json",      "--gemini-temperature=0.7"};
    ASSERT_EQ(load(&c, 9, argv), 0);
    ASSERT_EQ(c.lanes, 5);
    ASSERT_STR_EQ(c.listen, "127.0.0.1:9000"); /* env beats default */
    ASSERT_TRUE(c.trust_proxy);
    ASSERT_TRUE(!c.input_transcription);
    ASSERT_STR_EQ(c.gemini_voice, "Kore");
    ASSERT_STR_EQ(c.log_format, "json");
    ASSERT_NEAR(c.gemini_temperature, 0.7, 1e-12);
    vb_config_free(&c);
}

static void expect_error(const char *const *argv, int argc, const char *needle)
{
    vb_config_t c;
    ASSERT_EQ(load(&c, argc, argv), VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, needle);
    vb_config_free(&c);
}

TEST(config_validation_names_the_setting)
{
    clear_env();
    expect_error((const char *[]){"vb", "--lanes", "0"}, 3,
                 "invalid --lanes (VOXBRIDGE_LANES, from command line) \"0\": "
                 "must be between 1 and 64");
    expect_error((const char *[]){"vb", "--lanes=x"}, 2, "is not an integer");
    expect_error((const char *[]){"vb", "--log-level=loud"}, 2,
                 "must be one of debug|info|warn|error|off");
    expect_error((const char *[]){"vb", "--trust-proxy=maybe"}, 2,
                 "must be true or false");
    expect_error((const char *[]){"vb", "--bogus"}, 2,
                 "unknown option \"--bogus\"");
    expect_error((const char *[]){"vb", "--no-lanes"}, 2, "unknown option");
    expect_error((const char *[]){"vb", "stray"}, 2, "unexpected argument");
    expect_error((const char *[]){"vb", "--lanes"}, 2, "needs a value");
    expect_error((const char *[]){"vb", "--listen", "8080"}, 3,
                 "invalid --listen (VOXBRIDGE_LISTEN) \"8080\": must be "
                 "HOST:PORT");
    expect_error((const char *[]){"vb", "--public-url", "voice.example.com"}, 3,
                 "must start with https://");
    expect_error((const char *[]){"vb", "--webhook-path", "hook"}, 3,
                 "invalid --webhook-path \"hook\": must start with /");
    expect_error((const char *[]){"vb", "--gemini-url", "https://x"}, 3,
                 "must start with wss://");
    setenv("VOXBRIDGE_LANES", "many", 1);
    expect_error((const char *[]){"vb"}, 1,
                 "(VOXBRIDGE_LANES, from environment)");
    unsetenv("VOXBRIDGE_LANES");
}

TEST(config_secrets_never_printed)
{
    clear_env();
    setenv("GEMINI_API_KEY", "AIzaSECRETKEY123", 1);
    vb_config_t c;
    const char *argv[] = {"vb", "--twilio-auth-token", "tok-SECRET-456"};
    ASSERT_EQ(load(&c, 3, argv), 0);
    ASSERT_STR_EQ(c.gemini_api_key, "AIzaSECRETKEY123");
    ASSERT_STR_EQ(c.twilio_auth_token, "tok-SECRET-456");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    vb_config_dump(f, &c);
    vb_config_usage(f, "voxbridge");
    fclose(f);
    ASSERT_NULL(strstr(buf, "AIzaSECRETKEY123"));
    ASSERT_NULL(strstr(buf, "tok-SECRET-456"));
    ASSERT_STR_CONTAINS(buf, "gemini_api_key=(set)\n");
    ASSERT_STR_CONTAINS(buf, "stream_secret=(unset)\n");
    ASSERT_STR_CONTAINS(buf, "lanes=1\n");
    free(buf);
    vb_config_free(&c);
    /* A malformed secret is not echoed in the error either. */
    unsetenv("GEMINI_API_KEY");
}

TEST(config_help_lists_every_setting)
{
    const char *argv[] = {"vb", "--lanes", "0", "--help"};
    vb_config_t c;
    ASSERT_EQ(load(&c, 4, argv), 1);
    vb_config_free(&c);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    vb_config_usage(f, "voxbridge");
    fclose(f);
    ASSERT_STR_CONTAINS(buf, "--listen VALUE  (env VOXBRIDGE_LISTEN)");
    ASSERT_STR_CONTAINS(buf, "default: 0.0.0.0:8080");
    ASSERT_STR_CONTAINS(buf, "--gemini-api-key VALUE  (env GEMINI_API_KEY)");
    ASSERT_STR_CONTAINS(buf, "--trust-proxy  (env VOXBRIDGE_TRUST_PROXY)");
#define CHECK_LISTED(field, type, env, def, lo, hi, choices, help) \
    ASSERT_STR_CONTAINS(buf, "(env " env ")");
    VB_CONFIG_MAP(CHECK_LISTED)
#undef CHECK_LISTED
    free(buf);
}

TEST(config_hostport)
{
    char host[64];
    int port;
    ASSERT_EQ(
        vb_config_split_hostport("127.0.0.1:80", host, sizeof(host), &port), 0);
    ASSERT_STR_EQ(host, "127.0.0.1");
    ASSERT_EQ(port, 80);
    ASSERT_EQ(vb_config_split_hostport("[::1]:9090", host, sizeof(host), &port),
              0);
    ASSERT_STR_EQ(host, "::1");
    ASSERT_EQ(vb_config_split_hostport("host:", host, sizeof(host), &port),
              VB_EINVAL);
    ASSERT_EQ(vb_config_split_hostport(":80", host, sizeof(host), &port),
              VB_EINVAL);
    ASSERT_EQ(vb_config_split_hostport("h:70000", host, sizeof(host), &port),
              VB_EINVAL);
    ASSERT_EQ(vb_config_split_hostport("h:8x", host, sizeof(host), &port),
              VB_EINVAL);
}

TEST(config_docs_list_every_setting)
{
    /* docs/configuration.md must move with the table. */
    FILE *f = fopen("docs/configuration.md", "r");
    ASSERT_NOT_NULL(f);
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    doc[n] = '\0';
    fclose(f);
#define CHECK_DOC(field, type, env, def, lo, hi, choices, help) \
    ASSERT_STR_CONTAINS(doc, "(env " env ")");
    VB_CONFIG_MAP(CHECK_DOC)
#undef CHECK_DOC
}

TEST(config_assistant_url_needs_a_secret)
{
    clear_env();
    expect_error(
        (const char *[]){"vb", "--assistant-url", "https://app/incoming"}, 3,
        "--assistant-url needs --webhook-secret (VOXBRIDGE_WEBHOOK_SECRET)");
    vb_config_t c;
    const char *argv[] = {"vb", "--assistant-url", "https://app/incoming",
                          "--webhook-secret", "s"};
    ASSERT_EQ(load(&c, 5, argv), 0);
    vb_config_free(&c);
    /* The previous key while rotating: from the environment too, and as
     * secret as the key itself. */
    setenv("VOXBRIDGE_WEBHOOK_SECRET_PREVIOUS", "whsec-OLD-789", 1);
    ASSERT_EQ(load(&c, 5, argv), 0);
    ASSERT_STR_EQ(c.webhook_secret_previous, "whsec-OLD-789");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    vb_config_dump(f, &c);
    fclose(f);
    ASSERT_NULL(strstr(buf, "whsec-OLD-789"));
    ASSERT_STR_CONTAINS(buf, "webhook_secret_previous=(set)\n");
    free(buf);
    vb_config_free(&c);
    unsetenv("VOXBRIDGE_WEBHOOK_SECRET_PREVIOUS");
}

TEST(config_events_url_needs_a_spool_and_a_secret)
{
    clear_env();
    expect_error((const char *[]){"vb", "--events-url", "ftp://x"}, 3,
                 "invalid --events-url (VOXBRIDGE_EVENTS_URL) \"ftp://x\"");
    expect_error((const char *[]){"vb", "--events-url", "https://app/events",
                                  "--webhook-secret", "s"},
                 5, "--events-url needs --events-spool");
    expect_error((const char *[]){"vb", "--events-url", "https://app/events",
                                  "--events-spool", "/tmp/x"},
                 5, "--events-url needs --webhook-secret");
    vb_config_t c;
    const char *argv[] = {
        "vb",     "--events-url",     "http://a/e", "--events-spool",
        "/tmp/x", "--webhook-secret", "s"};
    ASSERT_EQ(load(&c, 7, argv), 0);
    ASSERT_EQ(c.events_max_files, 10000);
    ASSERT_EQ(c.events_max_bytes, 268435456);
    ASSERT_EQ(c.events_backoff_min_ms, 1000);
    vb_config_free(&c);
}
