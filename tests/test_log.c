/* SPDX-License-Identifier: MIT */
#include "core/err.h"
#include "core/log.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

static int pipefd[2];

static void capture(void)
{
    ASSERT_EQ(pipe(pipefd), 0);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    fcntl(pipefd[0], F_SETPIPE_SZ, 1 << 20);
    vb_log_set_fd(pipefd[1]);
}

/* Reads everything logged so far (non-blocking). */
static char *captured(void)
{
    static char buf[1 << 20];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(buf) - 1 &&
           (r = read(pipefd[0], buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    return buf;
}

TEST(log_logfmt_quotes_and_escapes)
{
    capture();
    vb_log_set_level(VB_LOG_INFO);
    vb_log_info("CA123", "signature mismatch",
                "route=%s code=%d ratio=%.2f who=%s empty=%s n=%zu big=%llu",
                "/webhook/voice", 403, 0.5, "a \"b\"=c\n", "", (size_t)7,
                18446744073709551615ull);
    char *out = captured();
    ASSERT_STR_CONTAINS(out, " level=info msg=\"signature mismatch\" call=CA123"
                             " route=/webhook/voice code=403 ratio=0.50"
                             " who=\"a \\\"b\\\"=c\\n\" empty=\"\" n=7"
                             " big=18446744073709551615\n");
    ASSERT_TRUE(strncmp(out, "ts=20", 5) == 0);
    ASSERT_EQ(strchr(out, '\n') - out + 1, (long)strlen(out));
}

TEST(log_json_is_valid_json)
{
    capture();
    vb_log_set_format(VB_LOG_JSON);
    vb_log_warn(NULL, "odd \"msg\"", "k=%s n=%d f=%g ctl=%s mixed=%dms", "v\\x",
                -5, 1.5, "\x01\t", 20);
    char *out = captured();
    cJSON *j = cJSON_Parse(out);
    if (j == NULL)
        vb_test_fail(__FILE__, __LINE__, "not JSON: %s", out);
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "level")->valuestring, "warn");
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "msg")->valuestring, "odd \"msg\"");
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "k")->valuestring, "v\\x");
    ASSERT_TRUE(cJSON_IsNumber(cJSON_GetObjectItem(j, "n")));
    ASSERT_EQ(cJSON_GetObjectItem(j, "n")->valueint, -5);
    ASSERT_NEAR(cJSON_GetObjectItem(j, "f")->valuedouble, 1.5, 1e-9);
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "ctl")->valuestring, "\x01\t");
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "mixed")->valuestring, "20ms");
    ASSERT_NULL(cJSON_GetObjectItem(j, "call"));
    cJSON_Delete(j);
}

TEST(log_levels_filter_and_parse)
{
    capture();
    vb_log_level_t lv;
    vb_log_format_t fm;
    ASSERT_EQ(vb_log_level_parse("warn", &lv), 0);
    ASSERT_EQ(lv, VB_LOG_WARN);
    ASSERT_EQ(vb_log_level_parse("loud", &lv), VB_EINVAL);
    ASSERT_EQ(vb_log_format_parse("json", &fm), 0);
    ASSERT_EQ(vb_log_format_parse("xml", &fm), VB_EINVAL);
    vb_log_set_level(VB_LOG_WARN);
    vb_log_info(NULL, "hidden", "x=%d", 1);
    vb_log_debug(NULL, "hidden", "x=%d", 1);
    vb_log_error(NULL, "shown", "x=%d", 2);
    char *out = captured();
    ASSERT_NULL(strstr(out, "hidden"));
    ASSERT_STR_CONTAINS(out, "level=error msg=shown x=2");
    vb_log_set_level(VB_LOG_OFF);
    vb_log_error(NULL, "silent", "x=%d", 3);
    ASSERT_STR_EQ(captured(), "");
}

/* '*' width and precision take their int arguments in order, as printf
 * does: the fields after them keep their own values (the "http request"
 * debug line passes a path as "%.*s" between two other fields). */
TEST(log_star_width_and_precision_keep_arguments_in_order)
{
    capture();
    const char *target = "/webhook/voice?x=1";
    vb_log_info(NULL, "http request",
                "method=%s path=%.*s status=%d peer=%s w=[%*d] l=[%-*s]"
                " neg=[%*d] np=%.*s after=%d",
                "POST", 14, target, 200, "127.0.0.1:5000", 5, 42, 4, "ab", -4,
                7, -1, "whole", 9);
    char *out = captured();
    ASSERT_STR_CONTAINS(out, " method=POST path=/webhook/voice status=200"
                             " peer=127.0.0.1:5000 w=\"[   42]\" l=\"[ab  ]\""
                             " neg=\"[7   ]\" np=whole after=9\n");
}

TEST(log_long_lines_are_cut_and_marked)
{
    capture();
    static char big[10000];
    memset(big, 'a', sizeof(big) - 1);
    vb_log_info(NULL, "big", "v=%s", big);
    char *out = captured();
    ASSERT_LE(strlen(out), 4096);
    ASSERT_STR_CONTAINS(out, "truncated=true\n");
}

TEST(log_ratelimited_counts_suppressed)
{
    capture();
    for (int i = 0; i < 1000; i++)
        VB_LOG_RATELIMITED(VB_LOG_WARN, 60000, "CA1", "frame dropped", "i=%d",
                           i);
    char *out = captured();
    /* Only the first gets through inside the interval. */
    ASSERT_STR_CONTAINS(out,
                        "msg=\"frame dropped\" call=CA1 i=0 suppressed=0\n");
    ASSERT_NULL(strstr(out, "i=1 "));
    /* Drive the limiter's clock edge directly so nothing depends on timing. */
    vb_log_limit_t l = {0};
    ASSERT_EQ(vb_log_limit_take(&l, 1000000000ull), 0);
    atomic_store(&l.next_ns, UINT64_MAX);
    ASSERT_EQ(vb_log_limit_take(&l, 1000000000ull), -1);
    ASSERT_EQ(vb_log_limit_take(&l, 1000000000ull), -1);
    atomic_store(&l.next_ns, 0);
    ASSERT_EQ(vb_log_limit_take(&l, 1000000000ull), 2);
    ASSERT_EQ(vb_log_limit_take(&l, 1000000000ull), -1);
}

#define THREADS 4
#define LINES   2000

static void *spam(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < LINES; i++)
        vb_log_info(NULL, "spam", "thread=%ld i=%d pad=%s", id, i,
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    return NULL;
}

TEST(log_lines_from_threads_never_interleave)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/log.txt", vb_test_tmpdir());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
    ASSERT_GE(fd, 0);
    vb_log_set_fd(fd);
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, spam, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    close(fd);
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), f)) {
        ASSERT_TRUE(strncmp(line, "ts=", 3) == 0);
        ASSERT_STR_CONTAINS(line, "msg=spam thread=");
        ASSERT_STR_CONTAINS(line, "xxxxxxxxxx\n");
        n++;
    }
    fclose(f);
    ASSERT_EQ(n, THREADS * LINES);
}
