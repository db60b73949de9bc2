/* SPDX-License-Identifier: MIT */
/*
 * The server binary (build/voxbridge), alone and behind Debian's nginx.
 * nginx runs on loopback with the site read from docs/deployment.md (only
 * its listen addresses, certificate paths, host name and upstream port
 * replaced; TLS with a test CA made here by openssl), in a scratch prefix,
 * in the foreground; the test talks TLS to it with mbedTLS, passes a signed
 * webhook and a Media Streams upgrade through to voxbridge, and checks that
 * a client's own X-Forwarded-* headers are overwritten on every location.
 * Both processes are stopped by their pids; voxbridge must exit 0 on
 * SIGTERM (under ASan that also means no leaks).
 */
#include <fcntl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/clock.h"
#include "net/form.h"
#include "net/twilio_sig.h"
#include "tests/http_client.h"
#include "tests/proc.h"
#include "tests/test.h"
#include "tests/ws_frames.h"

#define TOKEN      "nginx-test-token"
#define SECRET     "nginx-test-secret"
#define HOST       "voice.example.test"
#define PUBLIC     "https://" HOST
#define STREAM_SID "MZ0123456789abcdef0123456789abcdef"

/* Local names for the shared helpers; read_file keeps its last buffer so
 * callers can use the text inline. */
#define deadline_ms proc_ms
#define build_dir   proc_build_dir
#define spawn       proc_spawn
#define reap        proc_reap
#define wait_port   proc_wait_port
#define free_port   proc_free_port
#define port_open   proc_port_open
#define sh          proc_sh

static char *read_file(const char *path)
{
    static char *last;
    free(last);
    last = proc_read_file(path);
    return last;
}

/* ---- a TLS client on mbedTLS ---- */

typedef struct tls {
    mbedtls_net_context net;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    char buf[65536];
    size_t len;
} tls_t;

static tls_t *tls_open(int port, const char *ca_file)
{
    tls_t *t = calloc(1, sizeof(*t));
    ASSERT_NOT_NULL(t);
    mbedtls_net_init(&t->net);
    mbedtls_ssl_init(&t->ssl);
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_entropy_init(&t->ent);
    mbedtls_ctr_drbg_init(&t->drbg);
    ASSERT_EQ(mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->ent,
                                    (const unsigned char *)"vb", 2),
              0);
    ASSERT_EQ(mbedtls_x509_crt_parse_file(&t->ca, ca_file), 0);
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    ASSERT_EQ(
        mbedtls_net_connect(&t->net, "127.0.0.1", ps, MBEDTLS_NET_PROTO_TCP),
        0);
    ASSERT_EQ(mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT),
              0);
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    mbedtls_ssl_conf_read_timeout(&t->conf, (uint32_t)deadline_ms(5000));
    ASSERT_EQ(mbedtls_ssl_setup(&t->ssl, &t->conf), 0);
    ASSERT_EQ(mbedtls_ssl_set_hostname(&t->ssl, HOST), 0);
    mbedtls_ssl_set_bio(&t->ssl, &t->net, mbedtls_net_send, NULL,
                        mbedtls_net_recv_timeout);
    int rc;
    while ((rc = mbedtls_ssl_handshake(&t->ssl)) != 0)
        if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE)
            vb_test_fail(__FILE__, __LINE__, "TLS handshake: -0x%04x", -rc);
    ASSERT_EQ(mbedtls_ssl_get_verify_result(&t->ssl), 0);
    return t;
}

static void tls_send(tls_t *t, const char *data, size_t len)
{
    while (len > 0) {
        int n = mbedtls_ssl_write(&t->ssl, (const unsigned char *)data, len);
        if (n == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        ASSERT_GT(n, 0);
        data += n;
        len -= (size_t)n;
    }
}

/* Reads more; returns bytes read, 0 on close, <0 on error/timeout. */
static int tls_fill(tls_t *t)
{
    int n = mbedtls_ssl_read(&t->ssl, (unsigned char *)t->buf + t->len,
                             sizeof(t->buf) - 1 - t->len);
    if (n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        return 0;
    if (n > 0) {
        t->len += (size_t)n;
        t->buf[t->len] = '\0';
    }
    return n;
}

/* One response: status, head into `head`, body (Content-Length) into
 * `body`. Bytes after it stay buffered. */
static int tls_response(tls_t *t, char *head, size_t hsz, char *body,
                        size_t bsz)
{
    for (;;) {
        char *eoh = t->len ? strstr(t->buf, "\r\n\r\n") : NULL;
        if (eoh != NULL) {
            size_t hl = (size_t)(eoh - t->buf) + 4;
            snprintf(head, hsz, "%.*s", (int)hl, t->buf);
            int status = atoi(t->buf + 9);
            char cl[32];
            size_t blen =
                status >= 200 && status != 204 &&
                        tc_header(head, "Content-Length", cl, sizeof(cl))
                    ? (size_t)atol(cl)
                    : 0;
            if (t->len >= hl + blen) {
                snprintf(body, bsz, "%.*s", (int)blen, t->buf + hl);
                memmove(t->buf, t->buf + hl + blen, t->len - hl - blen);
                t->len -= hl + blen;
                t->buf[t->len] = '\0';
                return status;
            }
        }
        if (tls_fill(t) <= 0)
            return -1;
    }
}

static void tls_close(tls_t *t)
{
    mbedtls_ssl_close_notify(&t->ssl);
    mbedtls_net_free(&t->net);
    mbedtls_ssl_free(&t->ssl);
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->ent);
    free(t);
}

/* Sends one masked text frame, as a client must. */
static void ws_send_text(tls_t *t, const char *text)
{
    static uint8_t buf[4096];
    size_t n = tf_frame(buf, sizeof(buf), true, 0x1, true, text, strlen(text));
    ASSERT_GT(n, 0);
    tls_send(t, (const char *)buf, n);
}

/* ---- the site, read from docs/deployment.md ---- */

/* Replaces the one line of `site` whose trimmed text is `line` with
 * `with` (an indented copy); fails when it is not there exactly once, so
 * the test and the document cannot drift apart. Returns the new malloc'd
 * text and frees `site`. */
static char *site_replace_line(char *site, const char *line, const char *with)
{
    const char *hit = NULL;
    int hits = 0;
    for (const char *p = site; *p != '\0';) {
        const char *eol = strchr(p, '\n');
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        const char *t = p;
        while (t < p + len && *t == ' ')
            t++;
        size_t tl = (size_t)(p + len - t);
        if (tl == strlen(line) && memcmp(t, line, tl) == 0) {
            hit = p;
            hits++;
        }
        p += len + (eol != NULL);
    }
    if (hits != 1)
        vb_test_fail(__FILE__, __LINE__,
                     "docs/deployment.md site: \"%s\" found %d times", line,
                     hits);
    size_t at = (size_t)(hit - site);
    size_t old = strcspn(hit, "\n");
    size_t n = strlen(site) - old + strlen(with) + 8;
    char *out = malloc(n);
    ASSERT_NOT_NULL(out);
    snprintf(out, n, "%.*s    %s%s", (int)at, site, with, hit + old);
    free(site);
    return out;
}

/* The ```nginx block of docs/deployment.md with its listen addresses,
 * certificate paths, host name and upstream port made local; everything
 * else (headers, locations, timeouts) exactly as documented. */
static char *doc_site(const char *dir, int https_port, int http_port,
                      int vb_port)
{
    char *doc = proc_read_file("docs/deployment.md");
    if (doc == NULL)
        vb_test_fail(__FILE__, __LINE__,
                     "docs/deployment.md: run from the repository root");
    const char *from = strstr(doc, "```nginx\n");
    ASSERT_NOT_NULL(from);
    from += strlen("```nginx\n");
    const char *to = strstr(from, "\n```");
    ASSERT_NOT_NULL(to);
    char *site = strndup(from, (size_t)(to - from) + 1);
    ASSERT_NOT_NULL(site);
    free(doc);
    char with[700];
    snprintf(with, sizeof(with), "server 127.0.0.1:%d;", vb_port);
    site = site_replace_line(site, "server 127.0.0.1:8080;", with);
    snprintf(with, sizeof(with), "listen 127.0.0.1:%d;", http_port);
    site = site_replace_line(site, "listen 80;", with);
    snprintf(with, sizeof(with), "listen 127.0.0.1:%d ssl;", https_port);
    site = site_replace_line(
        site,
        "listen 443 ssl;     # HTTP/1.1: nginx 1.22 cannot carry WebSockets "
        "over h2",
        with);
    snprintf(with, sizeof(with), "ssl_certificate %s/server.crt;", dir);
    site = site_replace_line(site,
                             "ssl_certificate     /etc/letsencrypt/live/"
                             "voice.example.com/fullchain.pem;",
                             with);
    snprintf(with, sizeof(with), "ssl_certificate_key %s/server.key;", dir);
    site = site_replace_line(site,
                             "ssl_certificate_key /etc/letsencrypt/live/"
                             "voice.example.com/privkey.pem;",
                             with);
    /* Both server blocks answer for the test's host name. */
    int names = 0;
    for (char *p = strstr(site, "server_name voice.example.com;"); p != NULL;
         p = strstr(p, "server_name voice.example.com;")) {
        char *rest = strdup(p + strlen("server_name voice.example.com;"));
        ASSERT_NOT_NULL(rest);
        size_t at = (size_t)(p - site);
        size_t n = at + strlen("server_name " HOST ";") + strlen(rest) + 1;
        char *out = malloc(n);
        ASSERT_NOT_NULL(out);
        snprintf(out, n, "%.*sserver_name " HOST ";%s", (int)at, site, rest);
        free(rest);
        free(site);
        site = out;
        p = site + at + strlen("server_name " HOST ";");
        names++;
    }
    ASSERT_EQ(names, 2);
    ASSERT_TRUE(strstr(site, "example.com") == NULL);
    return site;
}

static void write_nginx_conf(const char *dir, int https_port, int http_port,
                             int vb_port)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/nginx.conf", dir);
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    char *site = doc_site(dir, https_port, http_port, vb_port);
    fprintf(f,
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            "%s"
            "error_log %s/error.log info;\npid %s/nginx.pid;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "  access_log %s/access.log;\n"
            "  client_body_temp_path %s/body;\n"
            "  proxy_temp_path %s/proxy;\n"
            "  fastcgi_temp_path %s/fastcgi;\n"
            "  uwsgi_temp_path %s/uwsgi;\n"
            "  scgi_temp_path %s/scgi;\n"
            "%s"
            "}\n",
            geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir,
            dir, dir, site);
    free(site);
    fclose(f);
}

static void make_certs(const char *dir)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "cd %s && "
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt "
             "-days 2 -subj /CN=voxbridge-test-ca >/dev/null 2>&1 && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout server.key -out server.csr -subj /CN=" HOST
             " >/dev/null 2>&1 && "
             "printf 'subjectAltName=DNS:" HOST ",IP:127.0.0.1\\n' > ext.cnf "
             "&& openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key "
             "-CAcreateserial -out server.crt -days 2 -extfile ext.cnf "
             ">/dev/null 2>&1",
             dir);
    sh(cmd);
}

/* ---- tests ---- */

TEST_T(voxbridge_binary_help_and_config_errors, 60)
{
    char bin[512], log[600];
    snprintf(bin, sizeof(bin), "%s/voxbridge", build_dir());
    snprintf(log, sizeof(log), "%s/out.txt", vb_test_tmpdir());
    const char *help[] = {bin, "--help", NULL};
    ASSERT_EQ(reap(spawn(help, NULL, log), deadline_ms(10000)), 0);
    ASSERT_STR_CONTAINS(read_file(log), "--public-url VALUE");
    ASSERT_STR_CONTAINS(read_file(log), "TWILIO_AUTH_TOKEN");

    const char *bad[] = {bin, "--lanes", "0", NULL};
    ASSERT_EQ(reap(spawn(bad, NULL, log), deadline_ms(10000)), 2);
    ASSERT_STR_CONTAINS(read_file(log), "invalid --lanes");

    /* An auth token without a public URL cannot verify anything. */
    const char *nourl[] = {bin, "--listen", "127.0.0.1:0", NULL};
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN, NULL};
    ASSERT_NE(reap(spawn(nourl, env, log), deadline_ms(10000)), 0);
    ASSERT_STR_CONTAINS(read_file(log), "--public-url is empty");
    /* The token itself never reaches the log. */
    ASSERT_TRUE(strstr(read_file(log), TOKEN) == NULL);
}

TEST_T(voxbridge_logs_config_without_secrets_and_stops_on_sigterm, 60)
{
    char bin[512], log[600];
    snprintf(bin, sizeof(bin), "%s/voxbridge", build_dir());
    snprintf(log, sizeof(log), "%s/vb.txt", vb_test_tmpdir());
    const char *argv[] = {bin,    "--listen", "127.0.0.1:0", "--public-url",
                          PUBLIC, NULL};
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                         "VOXBRIDGE_STREAM_SECRET=" SECRET,
                         "GEMINI_API_KEY=gem-secret-key", NULL};
    pid_t pid = spawn(argv, env, log);
    int port = wait_port(log, pid, deadline_ms(10000));
    tc_resp_t r;
    ASSERT_EQ(tc_request(port, "GET /healthz HTTP/1.1\r\n\r\n", &r,
                         deadline_ms(5000)),
              200);
    tc_free_resp(&r);
    kill(pid, SIGTERM);
    ASSERT_EQ(reap(pid, deadline_ms(10000)), 0);
    char *text = read_file(log);
    ASSERT_STR_CONTAINS(text, "name=twilio_auth_token value=(set)");
    ASSERT_STR_CONTAINS(text, "name=gemini_api_key value=(set)");
    ASSERT_STR_CONTAINS(text, "name=public_url value=" PUBLIC);
    ASSERT_STR_CONTAINS(text, "msg=\"voxbridge stopped\" status=0");
    ASSERT_TRUE(strstr(text, TOKEN) == NULL);
    ASSERT_TRUE(strstr(text, SECRET) == NULL);
    ASSERT_TRUE(strstr(text, "gem-secret-key") == NULL);
    ASSERT_TRUE(strstr(text, "NOT verified") == NULL);
}

/* voxbridge (behind a proxy: --trust-proxy, signatures on, two lanes, an
 * admin listener) and nginx with the documented site in front of it. */
typedef struct site {
    char vblog[600], nglog[600], ca[600];
    pid_t vb, ng;
    int vb_port, admin_port, https_port, http_port;
} site_t;

static void site_start(site_t *s)
{
    if (access("/usr/sbin/nginx", X_OK) != 0)
        vb_test_fail(__FILE__, __LINE__,
                     "/usr/sbin/nginx missing: run make deps (nginx-light)");
    const char *dir = vb_test_tmpdir();
    make_certs(dir);

    char bin[512], conf[600];
    snprintf(bin, sizeof(bin), "%s/voxbridge", build_dir());
    snprintf(s->vblog, sizeof(s->vblog), "%s/voxbridge.log", dir);
    snprintf(s->nglog, sizeof(s->nglog), "%s/nginx.out", dir);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
    snprintf(s->ca, sizeof(s->ca), "%s/ca.crt", dir);
    const char *argv[] = {bin,
                          "--listen",
                          "127.0.0.1:0",
                          "--public-url",
                          PUBLIC,
                          "--trust-proxy",
                          "--lanes",
                          "2",
                          "--metrics-listen",
                          "127.0.0.1:0",
                          NULL};
    const char *env[] = {"TWILIO_AUTH_TOKEN=" TOKEN,
                         "VOXBRIDGE_STREAM_SECRET=" SECRET, NULL};
    s->vb = spawn(argv, env, s->vblog);
    s->vb_port = wait_port(s->vblog, s->vb, deadline_ms(10000));
    s->admin_port =
        proc_wait_role_port(s->vblog, s->vb, "admin", deadline_ms(10000));

    s->https_port = free_port();
    s->http_port = free_port();
    write_nginx_conf(dir, s->https_port, s->http_port, s->vb_port);
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s/", dir);
    const char *ngargv[] = {"/usr/sbin/nginx", "-p", prefix, "-c", conf, "-e",
                            s->nglog,          NULL};
    s->ng = spawn(ngargv, NULL, s->nglog);
    if (!port_open(s->https_port, deadline_ms(10000)))
        vb_test_fail(__FILE__, __LINE__, "nginx did not start: %s",
                     read_file(s->nglog));
}

/* Stops nginx, then voxbridge (which must exit 0); returns its log. */
static char *site_stop(site_t *s)
{
    kill(s->ng, SIGQUIT);
    ASSERT_GE(reap(s->ng, deadline_ms(10000)), 0);
    kill(s->vb, SIGTERM);
    int vst = reap(s->vb, deadline_ms(15000));
    char *text = read_file(s->vblog);
    if (vst != 0)
        vb_test_fail(__FILE__, __LINE__, "voxbridge exit %d:\n%s", vst, text);
    return text;
}

/* A webhook body and its signature over the public URL. */
static void signed_webhook(const char *call_sid, char *body, size_t bsz,
                           char sig[VB_TWILIO_SIG_LEN + 1])
{
    snprintf(body, bsz,
             "AccountSid=AC0&CallSid=%s&CallStatus=ringing"
             "&From=%%2B14155550123&To=%%2B18005550100&Caller=%%2B1415"
             "5550123&FromCity=",
             call_sid);
    vb_form_t form;
    ASSERT_EQ(vb_form_parse(&form, body, strlen(body), 0), 0);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, PUBLIC "/webhook/voice", &form, sig),
              0);
    vb_form_free(&form);
}

TEST_T(nginx_tls_proxy_signed_webhook_and_websocket, 120)
{
    site_t site;
    site_start(&site);
    int ng_port = site.https_port;
    const char *ca = site.ca, *vblog = site.vblog;
    int admin_port = site.admin_port;

    /* 0. Plain HTTP is sent to https:// by the site's port-80 server. */
    tc_resp_t rr;
    ASSERT_EQ(tc_request(site.http_port,
                         "GET /webhook/voice HTTP/1.1\r\nHost: " HOST
                         "\r\nConnection: close\r\n\r\n",
                         &rr, deadline_ms(5000)),
              301);
    char loc[256];
    ASSERT_TRUE(tc_header(rr.head, "Location", loc, sizeof(loc)));
    ASSERT_STR_EQ(loc, PUBLIC "/webhook/voice");
    tc_free_resp(&rr);

    /* 1. A signed webhook, over TLS, through the proxy. */
    char body[512], url[256], sig[VB_TWILIO_SIG_LEN + 1];
    signed_webhook("CAnginx1", body, sizeof(body), sig);
    char req[2048];
    snprintf(req, sizeof(req),
             "POST /webhook/voice HTTP/1.1\r\nHost: " HOST "\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
             sig, strlen(body), body);
    tls_t *t = tls_open(ng_port, ca);
    tls_send(t, req, strlen(req));
    char head[4096], doc[4096];
    int st = tls_response(t, head, sizeof(head), doc, sizeof(doc));
    if (st != 200)
        vb_test_fail(__FILE__, __LINE__, "webhook via nginx: %d %s\n%s", st,
                     head, read_file(vblog));
    ASSERT_STR_CONTAINS(head, "Content-Type: text/xml");
    ASSERT_STR_CONTAINS(doc, "<Stream url=\"wss://" HOST "/media-stream/");
    /* The token verifies with the shared secret. */
    const char *tp = strstr(doc, "name=\"streamToken\" value=\"");
    ASSERT_NOT_NULL(tp);
    char token[VB_TWILIO_TOKEN_LEN + 1];
    snprintf(token, sizeof(token), "%s",
             tp + strlen("name=\"streamToken\" "
                         "value=\""));
    /* .../media-stream/<instance>/<lane> */
    const char *lp = strstr(doc, "/media-stream/") + strlen("/media-stream/");
    lp = strchr(lp, '/');
    ASSERT_NOT_NULL(lp);
    int lane = atoi(lp + 1);
    vb_twilio_sig_key_t key;
    ASSERT_EQ(vb_twilio_sig_key_init(&key, SECRET), 0);
    ASSERT_EQ(vb_twilio_sig_token_verify(&key, token, "CAnginx1", lane,
                                         (int64_t)vb_clock_wall_s(), NULL),
              lane);
    /* A forged one is refused through the proxy too. */
    snprintf(req, sizeof(req),
             "POST /webhook/voice HTTP/1.1\r\nHost: " HOST "\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    tls_send(t, req, strlen(req));
    ASSERT_EQ(tls_response(t, head, sizeof(head), doc, sizeof(doc)), 403);
    tls_close(t);

    /* 2. The Media Streams upgrade, signed over the wss:// URL. */
    char path[64];
    snprintf(path, sizeof(path), "/media-stream/%d", lane);
    snprintf(url, sizeof(url), "wss://" HOST "%s", path);
    ASSERT_EQ(vb_twilio_sig_compute(TOKEN, url, NULL, sig), 0);
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: " HOST "\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\nX-Twilio-Signature: %s\r\n\r\n",
             path, sig);
    t = tls_open(ng_port, ca);
    tls_send(t, req, strlen(req));
    st = tls_response(t, head, sizeof(head), doc, sizeof(doc));
    if (st != 101)
        vb_test_fail(__FILE__, __LINE__, "upgrade via nginx: %d %s", st, head);
    char acc[64];
    ASSERT_TRUE(tc_header(head, "Sec-WebSocket-Accept", acc, sizeof(acc)));
    ASSERT_STR_EQ(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* The stream crossed the hand-off ring to the lane's twilio-io thread,
     * which checks the token at `start`: one minted for another call is
     * refused with 1008 and a reason, back through nginx. */
    ws_send_text(t, "{\"event\":\"connected\",\"protocol\":\"Call\","
                    "\"version\":\"1.0.0\"}");
    char start[1024];
    snprintf(start, sizeof(start),
             "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{"
             "\"accountSid\":\"AC0\",\"streamSid\":\"" STREAM_SID "\","
             "\"callSid\":\"CAnginx2\",\"tracks\":[\"inbound\"],"
             "\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\","
             "\"sampleRate\":8000,\"channels\":1},\"customParameters\":{"
             "\"streamToken\":\"%s\",\"CallSid\":\"CAnginx2\"}},"
             "\"streamSid\":\"" STREAM_SID "\"}",
             token);
    ws_send_text(t, start);
    while (t->len < 4 && tls_fill(t) > 0)
        ;
    ASSERT_GE(t->len, 4);
    ASSERT_EQ((unsigned char)t->buf[0], 0x88);
    ASSERT_EQ(((unsigned char)t->buf[2] << 8) | (unsigned char)t->buf[3], 1008);
    size_t clen = (unsigned char)t->buf[1] & 0x7f;
    while (t->len < 2 + clen && tls_fill(t) > 0)
        ;
    ASSERT_STR_CONTAINS(t->buf + 4, "stream token");
    tls_close(t);

    /* 3. The admin endpoints are not reachable through the proxy (the
     * public listener), and the admin listener's metrics record both. */
    t = tls_open(ng_port, ca);
    const char *mreq = "GET /metrics HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
    tls_send(t, mreq, strlen(mreq));
    static char metrics[1 << 20];
    ASSERT_EQ(tls_response(t, head, sizeof(head), metrics, sizeof(metrics)),
              404);
    tls_close(t);
    tc_resp_t mr;
    ASSERT_EQ(tc_request(admin_port, "GET /metrics HTTP/1.1\r\n\r\n", &mr,
                         deadline_ms(5000)),
              200);
    snprintf(metrics, sizeof(metrics), "%s", mr.body);
    tc_free_resp(&mr);
    ASSERT_STR_CONTAINS(metrics, "vb_stream_handoffs_total{result=\"ok\"} 1\n");
    ASSERT_STR_CONTAINS(metrics,
                        "vb_http_requests_total{route=\"voice\",code=\"200\"}"
                        " 1\n");
    ASSERT_STR_CONTAINS(
        metrics, "vb_twilio_signature_failures_total{route=\"voice\"} 1\n");
    /* Behind the proxy every socket comes from it: no per-peer limit. */
    ASSERT_STR_CONTAINS(metrics, "vb_http_connections_refused_total{reason="
                                 "\"per_peer\"} 0\n");

    char *text = site_stop(&site);
    /* Forwarded headers reach the logs when trusted. */
    ASSERT_STR_CONTAINS(text, "msg=\"call answered\" call=CAnginx1");
    ASSERT_STR_CONTAINS(text, "client=127.0.0.1");
    ASSERT_STR_CONTAINS(text, "msg=\"stream handed off\"");
}

/* A client's own X-Forwarded-* headers never reach voxbridge through the
 * documented site, on either location: nginx overwrites them with the
 * client address it saw, so --trust-proxy logs that and not the spoof. */
TEST_T(nginx_site_overwrites_spoofed_forwarded_headers, 120)
{
    site_t site;
    site_start(&site);
    const char *spoof = "X-Forwarded-For: 203.0.113.7, 198.51.100.9\r\n"
                        "X-Forwarded-Host: spoofed.example.net\r\n"
                        "X-Forwarded-Proto: http\r\n";

    /* location /: a signed webhook carrying forged forwarding headers. */
    char body[512], sig[VB_TWILIO_SIG_LEN + 1], req[2048];
    signed_webhook("CAspoof1", body, sizeof(body), sig);
    snprintf(req, sizeof(req),
             "POST /webhook/voice HTTP/1.1\r\nHost: " HOST "\r\n%s"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
             spoof, sig, strlen(body), body);
    tls_t *t = tls_open(site.https_port, site.ca);
    tls_send(t, req, strlen(req));
    char head[4096], doc[4096];
    ASSERT_EQ(tls_response(t, head, sizeof(head), doc, sizeof(doc)), 200);
    ASSERT_STR_CONTAINS(doc, "<Stream url=\"wss://" HOST "/media-stream/");
    tls_close(t);

    /* location /media-stream: an upgrade with forged headers and a wrong
     * signature, which voxbridge logs with the client address. */
    snprintf(req, sizeof(req),
             "GET /media-stream/0 HTTP/1.1\r\nHost: " HOST "\r\n%s"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n"
             "X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
             spoof);
    t = tls_open(site.https_port, site.ca);
    tls_send(t, req, strlen(req));
    ASSERT_EQ(tls_response(t, head, sizeof(head), doc, sizeof(doc)), 101);
    tls_close(t);
    /* Wait for the line before stopping: the hand-off is asynchronous. */
    char *seen;
    proc_wait_log(site.vblog, "route=stream reason=mismatch", site.vb,
                  deadline_ms(10000), &seen);
    free(seen);

    char *text = site_stop(&site);
    const char *answered = strstr(text, "msg=\"call answered\" call=CAspoof1");
    ASSERT_NOT_NULL(answered);
    char line[512];
    snprintf(line, sizeof(line), "%.*s", (int)strcspn(answered, "\n"),
             answered);
    ASSERT_STR_CONTAINS(line, " client=127.0.0.1");
    const char *stream = strstr(text, "route=stream reason=mismatch");
    snprintf(line, sizeof(line), "%.*s", (int)strcspn(stream, "\n"), stream);
    ASSERT_STR_CONTAINS(line, " client=127.0.0.1 ");
    if (strstr(text, "203.0.113.7") != NULL ||
        strstr(text, "198.51.100.9") != NULL ||
        strstr(text, "spoofed.example.net") != NULL)
        vb_test_fail(__FILE__, __LINE__,
                     "a spoofed header reached voxbridge:\n%s", text);
}
