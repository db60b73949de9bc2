/* SPDX-License-Identifier: MIT */
/* The REST hang-up client against a scripted HTTP server on loopback. */
#include "core/err.h"
#include "net/twilio_rest.h"
#include "tests/proc.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <mbedtls/base64.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct server {
    int lfd;
    uint16_t port;
    const char *reply; /* NULL: read, then close without answering */
    bool hold;         /* accept and never answer */
    char request[4096];
    size_t request_len;
    pthread_t th;
} server_t;

static void *serve(void *arg)
{
    server_t *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    /* Read the head and the body announced by Content-Length. */
    for (;;) {
        ssize_t n = read(fd, s->request + s->request_len,
                         sizeof(s->request) - 1 - s->request_len);
        if (n <= 0)
            break;
        s->request_len += (size_t)n;
        s->request[s->request_len] = '\0';
        const char *end = strstr(s->request, "\r\n\r\n");
        const char *cl = strcasestr(s->request, "Content-Length:");
        if (end && cl &&
            s->request_len >=
                (size_t)(end + 4 - s->request) + (size_t)atoi(cl + 15))
            break;
    }
    if (s->hold) {
        sleep(3);
    } else if (s->reply != NULL) {
        ssize_t w = write(fd, s->reply, strlen(s->reply));
        (void)w;
    }
    close(fd);
    return NULL;
}

static void server_start(server_t *s)
{
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(listen(s->lfd, 4), 0);
    socklen_t al = sizeof(a);
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    ASSERT_EQ(pthread_create(&s->th, NULL, serve, s), 0);
}

static int result;
static int calls;

static void on_done(int status, void *ud)
{
    (void)ud;
    result = status;
    calls++;
}

static const char *twiml_arg; /* NULL: Status=completed */

static const char *api_key_arg; /* NULL: the account SID authenticates */

static int run_request(server_t *s, const char *token, uint32_t timeout_ms)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", s->port);
    vb_twilio_rest_req_t req = {
        .api_url = url,
        .account_sid = "AC0123456789abcdef0123456789abcdef",
        .auth_token = token,
        .api_key = api_key_arg,
        .call_sid = "CAfedcba9876543210fedcba9876543210",
        .timeout_ms = timeout_ms,
        .twiml = twiml_arg,
    };
    result = 0;
    calls = 0;
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, on_done, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    ASSERT_EQ(calls, 1);
    return result;
}

TEST(rest_hangup_sends_the_twilio_request)
{
    static server_t s = {.reply = "HTTP/1.1 200 OK\r\nContent-Type: "
                                  "application/json\r\nContent-Length: 20\r\n"
                                  "\r\n{\"status\":\"completed\"}"};
    server_start(&s);
    ASSERT_EQ(run_request(&s, "s3cr3t", 5000), 200);
    pthread_join(s.th, NULL);
    ASSERT_STR_CONTAINS(s.request,
                        "POST /2010-04-01/Accounts/"
                        "AC0123456789abcdef0123456789abcdef/Calls/"
                        "CAfedcba9876543210fedcba9876543210.json HTTP/1.1\r\n");
    ASSERT_STR_CONTAINS(s.request, "\r\nContent-Type: "
                                   "application/x-www-form-urlencoded\r\n");
    ASSERT_STR_CONTAINS(s.request, "\r\nContent-Length: 16\r\n");
    ASSERT_TRUE(strstr(s.request, "\r\n\r\nStatus=completed") != NULL);
    const char *auth = strstr(s.request, "Authorization: Basic ");
    ASSERT_NOT_NULL(auth);
    auth += strlen("Authorization: Basic ");
    unsigned char dec[128];
    size_t dlen;
    ASSERT_EQ(mbedtls_base64_decode(dec, sizeof(dec) - 1, &dlen,
                                    (const unsigned char *)auth,
                                    (size_t)(strchr(auth, '\r') - auth)),
              0);
    dec[dlen] = '\0';
    ASSERT_STR_EQ((char *)dec, "AC0123456789abcdef0123456789abcdef:s3cr3t");
    close(s.lfd);
}

/* An API key authenticates as SK...:secret; the account SID stays in the
 * path. */
TEST(rest_hangup_with_an_api_key)
{
    static server_t s = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                  "\r\n"};
    server_start(&s);
    api_key_arg = "SK0123456789abcdef0123456789abcdef";
    ASSERT_EQ(run_request(&s, "key-secret", 5000), 200);
    api_key_arg = NULL;
    pthread_join(s.th, NULL);
    ASSERT_STR_CONTAINS(s.request, "POST /2010-04-01/Accounts/"
                                   "AC0123456789abcdef0123456789abcdef/Calls/");
    const char *auth = strstr(s.request, "Authorization: Basic ");
    ASSERT_NOT_NULL(auth);
    auth += strlen("Authorization: Basic ");
    unsigned char dec[128];
    size_t dlen;
    ASSERT_EQ(mbedtls_base64_decode(dec, sizeof(dec) - 1, &dlen,
                                    (const unsigned char *)auth,
                                    (size_t)(strchr(auth, '\r') - auth)),
              0);
    dec[dlen] = '\0';
    ASSERT_STR_EQ((char *)dec, "SK0123456789abcdef0123456789abcdef:key-secret");
    close(s.lfd);
    /* A key SID with other characters is refused before anything is
     * sent. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    vb_twilio_rest_req_t bad = {
        .api_url = "http://127.0.0.1:9/",
        .account_sid = "AC0123456789abcdef0123456789abcdef",
        .auth_token = "x",
        .api_key = "SK/../x",
        .call_sid = "CAfedcba9876543210fedcba9876543210",
    };
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &bad, on_done, NULL), VB_EINVAL);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(rest_hangup_reports_refusals_and_failures)
{
    static server_t s404 = {.reply = "HTTP/1.1 404 Not Found\r\nContent-Length:"
                                     " 2\r\n\r\n{}"};
    server_start(&s404);
    ASSERT_EQ(run_request(&s404, "tok", 5000), 404);
    pthread_join(s404.th, NULL);
    close(s404.lfd);

    static server_t garbage = {.reply = "SMTP ready\r\n\r\n"};
    server_start(&garbage);
    ASSERT_EQ(run_request(&garbage, "tok", 5000), VB_EPROTO);
    pthread_join(garbage.th, NULL);
    close(garbage.lfd);

    static server_t silent = {.reply = NULL};
    server_start(&silent);
    ASSERT_EQ(run_request(&silent, "tok", 5000), VB_ECLOSED);
    pthread_join(silent.th, NULL);
    close(silent.lfd);

    static server_t slow = {.hold = true};
    server_start(&slow);
    ASSERT_EQ(run_request(&slow, "tok", 300), VB_ETIMEDOUT);
    pthread_join(slow.th, NULL);
    close(slow.lfd);

    /* Nobody listening. */
    server_t gone = {0};
    gone.port = proc_free_port();
    ASSERT_EQ(run_request(&gone, "tok", 5000), VB_ECONNREFUSED);
}

TEST(rest_hangup_validates_arguments)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    vb_twilio_rest_req_t req = {
        .api_url = "https://api.twilio.com",
        .account_sid = "AC1",
        .auth_token = "t",
        .call_sid = "CA1",
    };
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, on_done, NULL), VB_ECONFIG);
    req.api_url = "ftp://x";
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, on_done, NULL), VB_EINVAL);
    req.api_url = "http://127.0.0.1:1";
    req.call_sid = "CA1/../../x";
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, on_done, NULL), VB_EINVAL);
    req.call_sid = "CA1";
    req.auth_token = "";
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, on_done, NULL), VB_EINVAL);
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, NULL, NULL), VB_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(rest_response_status_must_have_three_digits)
{
    /* Found by fuzz_twilio_rest: llhttp accepted "4" as a status, which
     * the callback then reported as if it were an HTTP status. */
    static server_t short_status = {.reply = "HTTP/1.1 4\r\n\r\n"};
    server_start(&short_status);
    ASSERT_EQ(run_request(&short_status, "tok", 5000), VB_EPROTO);
    pthread_join(short_status.th, NULL);
    close(short_status.lfd);
    const char *r = "HTTP/1.1 4\r\nContent-Length: 0\r\n\r\n";
    ASSERT_EQ(vb_twilio_rest_parse_response(r, strlen(r), 1), VB_EPROTO);
    r = "HTTP/1.1 1000 OK\r\nContent-Length: 0\r\n\r\n";
    ASSERT_EQ(vb_twilio_rest_parse_response(r, strlen(r), 0), VB_EPROTO);
}

TEST(rest_response_interim_1xx_is_skipped)
{
    /* 100 Continue (or 103 Early Hints from a proxy) is not the answer. */
    static server_t s = {.reply = "HTTP/1.1 100 Continue\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                  "\r\n{}"};
    server_start(&s);
    ASSERT_EQ(run_request(&s, "tok", 5000), 200);
    pthread_join(s.th, NULL);
    close(s.lfd);
    const char *r = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
    ASSERT_EQ(vb_twilio_rest_parse_response(r, strlen(r), 0), VB_ECLOSED);
    r = "HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\n{}\r\n0\r\n\r\n";
    for (size_t chunk = 0; chunk < 8; chunk++)
        ASSERT_EQ(vb_twilio_rest_parse_response(r, strlen(r), chunk), 401);
}

TEST(rest_response_is_read_up_to_a_cap)
{
    /* An endless head, or a body that never ends: the request ends at the
     * cap instead of reading on until the time limit. */
    size_t n = VB_TWILIO_REST_MAX_RESPONSE + 4096;
    char *big = malloc(n + 1);
    ASSERT_TRUE(big != NULL);
    const char *pad = "HTTP/1.1 200 OK\r\nX-Pad: ";
    memcpy(big, pad, strlen(pad));
    memset(big + strlen(pad), 'a', n - strlen(pad));
    big[n] = '\0';
    ASSERT_EQ(vb_twilio_rest_parse_response(big, n, 1000), VB_EMSGSIZE);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n";
    memcpy(big, head, strlen(head));
    memset(big + strlen(head), '{', n - strlen(head));
    ASSERT_EQ(vb_twilio_rest_parse_response(big, n, 1000), 200);
    /* Under the cap, a long body is read in full as before. */
    ASSERT_EQ(
        vb_twilio_rest_parse_response(big, VB_TWILIO_REST_MAX_RESPONSE, 1000),
        200);
    free(big);
}

/* The fallback: the call's TwiML replaced by a <Say> and <Hangup/>, sent
 * form-encoded as Twiml= (the Calls update resource's parameter). */
TEST(rest_update_sends_twiml_form_encoded)
{
    static server_t s = {.reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                  "\r\n{}"};
    server_start(&s);
    twiml_arg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>"
                "Sorry &amp; goodbye.</Say><Hangup/></Response>";
    ASSERT_EQ(run_request(&s, "s3cr3t", 5000), 200);
    twiml_arg = NULL;
    pthread_join(s.th, NULL);
    static const char body[] =
        "Twiml=%3C%3Fxml+version%3D%221.0%22+encoding%3D%22UTF-8%22%3F%3E"
        "%3CResponse%3E%3CSay%3ESorry+%26amp%3B+goodbye.%3C%2FSay%3E"
        "%3CHangup%2F%3E%3C%2FResponse%3E";
    const char *got = strstr(s.request, "\r\n\r\n");
    ASSERT_NOT_NULL(got);
    ASSERT_STR_EQ(got + 4, body);
    char cl[64];
    snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", sizeof(body) - 1);
    ASSERT_STR_CONTAINS(s.request, cl);
    ASSERT_NULL(strstr(s.request, "Status="));
    close(s.lfd);
}

TEST(rest_update_refuses_twiml_over_the_limit)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static char big[VB_TWILIO_REST_TWIML_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    vb_twilio_rest_req_t req = {
        .api_url = "http://127.0.0.1:9/",
        .account_sid = "AC0123456789abcdef0123456789abcdef",
        .auth_token = "t",
        .call_sid = "CAfedcba9876543210fedcba9876543210",
        .twiml = big,
    };
    ASSERT_EQ(vb_twilio_rest_hangup(&loop, &req, on_done, NULL), VB_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

static vb_twilio_rest_created_t created;

static void on_created(const vb_twilio_rest_created_t *res, void *ud)
{
    (void)ud;
    created = *res;
    calls++;
}

static void run_create(server_t *s, const char *form)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s->port);
    vb_twilio_rest_req_t req = {
        .api_url = url,
        .account_sid = "AC0123456789abcdef0123456789abcdef",
        .auth_token = "s3cr3t",
        .timeout_ms = 5000,
    };
    memset(&created, 0, sizeof(created));
    calls = 0;
    ASSERT_EQ(vb_twilio_rest_create_call(&loop, &req, form, on_created, NULL),
              0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    ASSERT_EQ(calls, 1);
}

TEST(rest_create_call_returns_the_sid)
{
    static server_t s = {
        .reply = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n"
                 "10\r\n{\"sid\":\"CA1234\",\r\n"
                 "12\r\n\"status\":\"queued\"}\r\n0\r\n\r\n"};
    server_start(&s);
    run_create(&s, "To=%2B14155550111&From=%2B14155550100&Url=x");
    pthread_join(s.th, NULL);
    ASSERT_EQ(created.status, 201);
    ASSERT_STR_EQ(created.sid, "CA1234");
    ASSERT_STR_CONTAINS(s.request,
                        "POST /2010-04-01/Accounts/"
                        "AC0123456789abcdef0123456789abcdef/Calls.json "
                        "HTTP/1.1\r\n");
    ASSERT_STR_CONTAINS(s.request,
                        "\r\n\r\nTo=%2B14155550111&From=%2B14155550100&Url=x");
    close(s.lfd);
}

TEST(rest_create_call_reports_twilio_errors)
{
    static server_t s = {
        .reply = "HTTP/1.1 400 Bad Request\r\nContent-Length: 99\r\n\r\n"
                 "{\"code\":21211,\"message\":\"Invalid 'To' Phone Number\","
                 "\"more_info\":\"x\",\"status\":400}           "};
    server_start(&s);
    run_create(&s, "To=1");
    pthread_join(s.th, NULL);
    ASSERT_EQ(created.status, 400);
    ASSERT_EQ(created.code, 21211);
    ASSERT_STR_EQ(created.message, "Invalid 'To' Phone Number");
    ASSERT_STR_EQ(created.sid, "");
    close(s.lfd);
    /* No answer at all. */
    static server_t s2 = {.reply = NULL};
    server_start(&s2);
    run_create(&s2, "To=1");
    pthread_join(s2.th, NULL);
    ASSERT_EQ(created.status, VB_ECLOSED);
    close(s2.lfd);
    /* Bodies that are not Call resources. */
    vb_twilio_rest_created_t r;
    vb_twilio_rest_created_parse("nope", 4, &r);
    ASSERT_STR_EQ(r.sid, "");
    vb_twilio_rest_created_parse("{\"sid\":\"CA 1\"}", 14, &r);
    ASSERT_STR_EQ(r.sid, "");
    vb_twilio_rest_created_parse("{\"sid\":7,\"code\":\"x\"}", 20, &r);
    ASSERT_STR_EQ(r.sid, "");
    ASSERT_EQ(r.code, 0);
}
