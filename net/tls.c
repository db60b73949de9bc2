/* SPDX-License-Identifier: MIT */
/*
 * TLS transport on mbedTLS with in-memory BIO callbacks over a lower
 * transport (see net/tls.h for the design).
 *
 * Reentrancy: mbedTLS calls our send callback, which writes to the lower
 * transport, which may fail synchronously and report an error event back to
 * us while mbedTLS is still on the stack. Lower events that arrive while
 * `in_ssl` is set are therefore only recorded and acted on after the
 * mbedTLS call returns. Upper callbacks are always made with no mbedTLS
 * call in progress on our side except ssl_read's loop, which re-checks
 * `closed` after each delivery.
 */
#include "net/tls.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "net/tcp.h"

#define TLS_PLAIN_BUF (16u * 1024u)

struct vb_tls_config {
    int refs;
    bool server;
    uint32_t handshake_ms;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;   /* client: trust anchors */
    mbedtls_x509_crt cert; /* server: own chain */
    mbedtls_pk_context key;
};

typedef struct buf {
    uint8_t *data;
    size_t off, len, cap; /* valid bytes are data[off .. off+len) */
} buf_t;

typedef enum {
    TLS_HANDSHAKE,
    TLS_OPEN,
    TLS_FAILED,
} tls_state_t;

typedef struct tls {
    vb_transport_t base;
    uv_loop_t *loop;
    vb_transport_t *lower;
    vb_tls_config_t *cfg;
    mbedtls_ssl_context ssl;
    bool ssl_ready;
    uv_timer_t hs_timer, kick;
    int handles; /* libuv handles still open */
    tls_state_t st;
    bool closed, want_read, lower_reading, lower_eof, eof_sent;
    bool shutdown_req, shutdown_done, in_ssl;
    bool out_paused;  /* reading stopped: unsent output over the cap */
    bool in_read;     /* inside mbedtls_ssl_read() */
    bool read_output; /* that read wrote something (an alert...) */
    int deferred_err; /* lower error seen while in_ssl */
    uint32_t verify_flags;
    buf_t rx;    /* ciphertext from the lower transport */
    buf_t early; /* plaintext written during the handshake */
    uint8_t *plain;
    char name[256];
    char log_id[64];
} tls_t;

static const vb_transport_ops_t tls_ops;

/* ------------------------------------------------------------------ */
/* errors                                                              */
/* ------------------------------------------------------------------ */

/* Maps an mbedTLS error code to VB_ECERT (verification), VB_ENOMEM, or
 * VB_ETLS. */
static int tls_err_from_mbedtls(int ret)
{
    switch (ret) {
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
        return VB_ECERT;
    case MBEDTLS_ERR_SSL_ALLOC_FAILED:
    case MBEDTLS_ERR_X509_ALLOC_FAILED:
        return VB_ENOMEM;
    default:
        return VB_ETLS;
    }
}

const char *vb_tls_verify_reason(uint32_t f)
{
    if (f == 0)
        return "ok";
    if (f & MBEDTLS_X509_BADCERT_EXPIRED)
        return "expired";
    if (f & MBEDTLS_X509_BADCERT_FUTURE)
        return "not yet valid";
    if (f & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        return "wrong name";
    if (f & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return "untrusted";
    if (f & MBEDTLS_X509_BADCERT_REVOKED)
        return "revoked";
    if (f & MBEDTLS_X509_BADCERT_MISSING)
        return "missing";
    if (f &
        (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
         MBEDTLS_X509_BADCERT_NS_CERT_TYPE))
        return "bad key usage";
    if (f & (MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK |
             MBEDTLS_X509_BADCERT_BAD_KEY))
        return "weak signature";
    return "other";
}

static void mbed_errtext(int ret, char *buf, size_t cap)
{
    mbedtls_strerror(ret, buf, cap);
}

/* ------------------------------------------------------------------ */
/* configuration                                                       */
/* ------------------------------------------------------------------ */

static vb_tls_config_t *config_new(bool server)
{
    vb_tls_config_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->refs = 1;
    c->server = server;
    c->handshake_ms = VB_TLS_DEFAULT_HANDSHAKE_MS;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_x509_crt_init(&c->cert);
    mbedtls_pk_init(&c->key);
    return c;
}

static void config_unref(vb_tls_config_t *c)
{
    if (c == NULL || --c->refs > 0)
        return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    mbedtls_x509_crt_free(&c->ca);
    mbedtls_x509_crt_free(&c->cert);
    mbedtls_pk_free(&c->key);
    free(c);
}

void vb_tls_config_destroy(vb_tls_config_t *c)
{
    config_unref(c);
}

void vb_tls_config_set_handshake_timeout(vb_tls_config_t *c, uint32_t ms)
{
    if (c != NULL && ms > 0)
        c->handshake_ms = ms;
}

static int config_common(vb_tls_config_t *c)
{
    static const char pers[] = "voxbridge-tls";
    char e[128];
    int r = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                                  (const unsigned char *)pers, sizeof(pers));
    if (r != 0) {
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(NULL, "tls rng seeding failed", "mbedtls=-0x%04x err=%s",
                     (unsigned)-r, e);
        return VB_ETLS;
    }
    r = mbedtls_ssl_config_defaults(
        &c->conf, c->server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
        MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (r != 0) {
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(NULL, "tls config failed", "mbedtls=-0x%04x err=%s",
                     (unsigned)-r, e);
        return VB_ETLS;
    }
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    /* TLS 1.2 is the floor; older versions are off by default in 2.28 too,
     * but say it explicitly. */
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    return 0;
}

static int file_readable(const char *path, const char *what)
{
    if (access(path, R_OK) != 0) {
        vb_log_error(NULL, "tls file not readable", "what=%s path=%s", what,
                     path);
        return VB_ENOENT;
    }
    return 0;
}

int vb_tls_config_client(const char *ca_file, vb_tls_config_t **out)
{
    if (out == NULL)
        return VB_EINVAL;
    *out = NULL;
    const char *path =
        ca_file != NULL && ca_file[0] != '\0' ? ca_file : VB_TLS_SYSTEM_CA_FILE;
    int rc = file_readable(path, "ca-file");
    if (rc != 0)
        return rc;
    vb_tls_config_t *c = config_new(false);
    if (c == NULL)
        return VB_ENOMEM;
    if ((rc = config_common(c)) != 0)
        goto fail;
    /* A bundle may hold certificates mbedTLS cannot parse; a positive
     * return counts those. Only "none usable" is an error. */
    int r = mbedtls_x509_crt_parse_file(&c->ca, path);
    if (r < 0 || c->ca.version == 0) {
        char e[128];
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(NULL, "tls ca file unusable",
                     "path=%s mbedtls=-0x%04x "
                     "err=%s",
                     path, (unsigned)(r < 0 ? -r : 0), e);
        rc = VB_ECERT;
        goto fail;
    }
    if (r > 0)
        vb_log_debug(NULL, "tls ca file: some certificates skipped",
                     "path=%s skipped=%d", path, r);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    *out = c;
    return 0;
fail:
    config_unref(c);
    return rc;
}

int vb_tls_config_server(const char *cert_file, const char *key_file,
                         vb_tls_config_t **out)
{
    if (out == NULL || cert_file == NULL || key_file == NULL)
        return VB_EINVAL;
    *out = NULL;
    int rc;
    if ((rc = file_readable(cert_file, "cert")) != 0 ||
        (rc = file_readable(key_file, "key")) != 0)
        return rc;
    vb_tls_config_t *c = config_new(true);
    if (c == NULL)
        return VB_ENOMEM;
    if ((rc = config_common(c)) != 0)
        goto fail;
    char e[128];
    int r = mbedtls_x509_crt_parse_file(&c->cert, cert_file);
    if (r != 0) {
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(NULL, "tls certificate unusable",
                     "path=%s mbedtls=-0x%04x err=%s", cert_file,
                     (unsigned)(r < 0 ? -r : r), e);
        rc = VB_ECERT;
        goto fail;
    }
    r = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL);
    if (r != 0) {
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(NULL, "tls key unusable", "path=%s mbedtls=-0x%04x err=%s",
                     key_file, (unsigned)-r, e);
        rc = VB_ECERT;
        goto fail;
    }
    r = mbedtls_pk_check_pair(&c->cert.pk, &c->key);
    if (r == 0)
        r = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key);
    if (r != 0) {
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(NULL, "tls key does not fit the certificate",
                     "mbedtls=-0x%04x err=%s", (unsigned)-r, e);
        rc = VB_ECERT;
        goto fail;
    }
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    *out = c;
    return 0;
fail:
    config_unref(c);
    return rc;
}

/* ------------------------------------------------------------------ */
/* buffers                                                             */
/* ------------------------------------------------------------------ */

static int buf_append(buf_t *b, const void *data, size_t len)
{
    if (b->off > 0 && b->off + b->len + len > b->cap) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
    }
    if (b->off + b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (p == NULL)
            return VB_ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->off + b->len, data, len);
    b->len += len;
    return 0;
}

static void buf_consume(buf_t *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

/* ------------------------------------------------------------------ */
/* BIO callbacks                                                       */
/* ------------------------------------------------------------------ */

static int bio_send(void *ctx, const unsigned char *data, size_t len)
{
    tls_t *c = ctx;
    if (c->lower == NULL || c->deferred_err != 0)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    if (c->in_read)
        c->read_output = true;
    if (vb_transport_write(c->lower, data, len) != 0)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *data, size_t len)
{
    tls_t *c = ctx;
    if (c->rx.len == 0)
        return c->lower_eof ? 0 : MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = c->rx.len < len ? c->rx.len : len;
    memcpy(data, c->rx.data + c->rx.off, n);
    buf_consume(&c->rx, n);
    return (int)n;
}

/* ------------------------------------------------------------------ */
/* state machine                                                       */
/* ------------------------------------------------------------------ */

static const char *log_id(const tls_t *c)
{
    return c->log_id[0] ? c->log_id : NULL;
}

static void tls_fail(tls_t *c, int err)
{
    if (c->st == TLS_FAILED || c->closed)
        return;
    c->st = TLS_FAILED;
    uv_timer_stop(&c->hs_timer);
    if (c->lower != NULL)
        vb_transport_read_stop(c->lower);
    vb_transport_emit_event(&c->base, VB_TRANSPORT_ERROR, err);
}

static void set_lower_reading(tls_t *c, bool on)
{
    if (c->lower == NULL || c->lower_reading == on || c->lower_eof)
        return;
    c->lower_reading = on;
    if (on)
        vb_transport_read_start(c->lower);
    else
        vb_transport_read_stop(c->lower);
}

static int ssl_write_all(tls_t *c, const uint8_t *p, size_t len)
{
    while (len > 0) {
        c->in_ssl = true;
        int r = mbedtls_ssl_write(&c->ssl, p, len);
        c->in_ssl = false;
        if (c->deferred_err != 0)
            return c->deferred_err;
        if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ)
            continue; /* cannot happen: the send callback never blocks */
        if (r < 0) {
            char e[128];
            mbed_errtext(r, e, sizeof(e));
            vb_log_warn(log_id(c), "tls write failed",
                        "peer=%s mbedtls=-0x%04x err=%s", c->name, (unsigned)-r,
                        e);
            return tls_err_from_mbedtls(r);
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static void do_shutdown(tls_t *c)
{
    if (c->shutdown_done || c->lower == NULL)
        return;
    c->shutdown_done = true;
    c->in_ssl = true;
    (void)mbedtls_ssl_close_notify(&c->ssl);
    c->in_ssl = false;
    vb_transport_shutdown(c->lower);
}

static void drain_reads(tls_t *c);
static void on_kick(uv_timer_t *h);

static void handshake_done(tls_t *c)
{
    c->st = TLS_OPEN;
    uv_timer_stop(&c->hs_timer);
    vb_log_debug(log_id(c), "tls handshake complete",
                 "peer=%s version=%s cipher=%s", c->name,
                 mbedtls_ssl_get_version(&c->ssl),
                 mbedtls_ssl_get_ciphersuite(&c->ssl));
    if (c->early.len > 0) {
        int rc = ssl_write_all(c, c->early.data + c->early.off, c->early.len);
        buf_consume(&c->early, c->early.len);
        if (rc != 0) {
            tls_fail(c, rc);
            return;
        }
    }
    if (c->shutdown_req)
        do_shutdown(c);
    /* The lower transport read on through the handshake whatever the
     * upper layer asked; from now on its wish applies. */
    if (!c->want_read || c->out_paused)
        set_lower_reading(c, false);
    vb_transport_emit_event(&c->base, VB_TRANSPORT_CONNECTED, 0);
    if (c->closed || c->st != TLS_OPEN)
        return;
    drain_reads(c);
}

static void step_handshake(tls_t *c)
{
    c->in_ssl = true;
    int r = mbedtls_ssl_handshake(&c->ssl);
    c->in_ssl = false;
    if (c->deferred_err != 0) {
        tls_fail(c, c->deferred_err);
        return;
    }
    if (r == 0) {
        handshake_done(c);
        return;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
        if (c->lower_eof) {
            vb_log_warn(log_id(c), "tls handshake failed", "peer=%s reason=%s",
                        c->name, "connection closed during handshake");
            tls_fail(c, VB_ETLS);
        }
        return;
    }
    if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        c->verify_flags = mbedtls_ssl_get_verify_result(&c->ssl);
        char info[256];
        int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "",
                                             c->verify_flags);
        /* The library's text is several lines; keep the first. */
        char *nl = n > 0 ? strchr(info, '\n') : NULL;
        if (nl != NULL)
            *nl = '\0';
        vb_log_error(log_id(c), "tls certificate rejected",
                     "host=%s reason=%s flags=0x%x detail=%s", c->name,
                     vb_tls_verify_reason(c->verify_flags),
                     (unsigned)c->verify_flags, n > 0 ? info : "");
        tls_fail(c, VB_ECERT);
        return;
    }
    char e[128];
    mbed_errtext(r, e, sizeof(e));
    vb_log_warn(log_id(c), "tls handshake failed",
                "peer=%s mbedtls=-0x%04x reason=%s", c->name, (unsigned)-r, e);
    tls_fail(c, tls_err_from_mbedtls(r));
}

static void emit_eof(tls_t *c)
{
    if (c->eof_sent)
        return;
    c->eof_sent = true;
    c->want_read = false;
    vb_transport_emit_event(&c->base, VB_TRANSPORT_EOF, 0);
}

/* Input can make output the upper layer never asked for: an alert for
 * each renegotiation request, which a peer that does not read could send
 * without end. When reading made output and the unsent output is over
 * VB_TLS_MAX_PENDING_OUTPUT, the peer is not read until it takes it (the
 * drain, in on_lower_event, resumes reading). What the upper layer writes
 * is its own back-pressure to manage (net/ws.c) and pauses nothing here. */
static bool out_over_cap(tls_t *c)
{
    if (c->out_paused)
        return true;
    if (!c->read_output)
        return false;
    c->read_output = false;
    size_t pending = c->lower ? vb_transport_pending(c->lower) : 0;
    if (pending <= VB_TLS_MAX_PENDING_OUTPUT)
        return false;
    c->out_paused = true;
    set_lower_reading(c, false);
    VB_LOG_RATELIMITED(VB_LOG_INFO, 1000, log_id(c),
                       "tls output backlog, reading paused",
                       "peer=%s pending=%zu cap=%u", c->name, pending,
                       (unsigned)VB_TLS_MAX_PENDING_OUTPUT);
    return true;
}

/* Decrypts and delivers as long as the upper layer wants bytes. */
static void drain_reads(tls_t *c)
{
    while (!c->closed && c->st == TLS_OPEN && c->want_read && !c->eof_sent &&
           !out_over_cap(c)) {
        c->in_ssl = c->in_read = true;
        int r = mbedtls_ssl_read(&c->ssl, c->plain, TLS_PLAIN_BUF);
        c->in_ssl = c->in_read = false;
        if (c->deferred_err != 0) {
            tls_fail(c, c->deferred_err);
            return;
        }
        if (r > 0) {
            vb_transport_emit_read(&c->base, c->plain, (size_t)r);
            continue;
        }
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (c->lower_eof && c->rx.len == 0) {
                /* EOF without close_notify: a truncation, but to the
                 * upper layer it is still the end of the stream. */
                vb_log_debug(log_id(c), "tls eof without close_notify",
                             "peer=%s", c->name);
                emit_eof(c);
            }
            return;
        }
        if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ||
            r == MBEDTLS_ERR_SSL_CONN_EOF) {
            emit_eof(c);
            return;
        }
        char e[128];
        mbed_errtext(r, e, sizeof(e));
        vb_log_warn(log_id(c), "tls read failed",
                    "peer=%s mbedtls=-0x%04x err=%s", c->name, (unsigned)-r, e);
        tls_fail(c, tls_err_from_mbedtls(r));
        return;
    }
}

static void drive(tls_t *c)
{
    if (c->closed || c->st == TLS_FAILED)
        return;
    if (c->st == TLS_HANDSHAKE)
        step_handshake(c);
    else
        drain_reads(c);
}

/* ------------------------------------------------------------------ */
/* lower transport callbacks                                           */
/* ------------------------------------------------------------------ */

static void on_lower_read(vb_transport_t *t, const uint8_t *data, size_t len,
                          void *ud)
{
    (void)t;
    tls_t *c = ud;
    if (c->closed || c->st == TLS_FAILED)
        return;
    if (c->rx.len + len > VB_TLS_MAX_BUFFERED_INPUT) {
        vb_log_warn(log_id(c), "tls input buffer overflow", "peer=%s bytes=%zu",
                    c->name, c->rx.len + len);
        tls_fail(c, VB_EMSGSIZE);
        return;
    }
    if (buf_append(&c->rx, data, len) != 0) {
        tls_fail(c, VB_ENOMEM);
        return;
    }
    drive(c);
}

static void on_lower_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                           void *ud)
{
    (void)t;
    tls_t *c = ud;
    if (c->closed)
        return;
    switch (ev) {
    case VB_TRANSPORT_CONNECTED:
        break; /* the handshake bytes are already queued */
    case VB_TRANSPORT_EOF:
        c->lower_eof = true;
        c->lower_reading = false;
        if (!c->in_ssl)
            drive(c);
        break;
    case VB_TRANSPORT_ERROR:
        if (c->in_ssl) {
            c->deferred_err = err ? err : VB_EIO;
            return;
        }
        if (c->st == TLS_HANDSHAKE)
            vb_log_warn(log_id(c), "tls connect failed", "peer=%s err=%s",
                        c->name, vb_err_name(err));
        tls_fail(c, err ? err : VB_EIO);
        break;
    case VB_TRANSPORT_DRAINED:
        if (c->out_paused) {
            c->out_paused = false;
            if (c->st == TLS_OPEN && c->want_read) {
                set_lower_reading(c, true);
                uv_timer_start(&c->kick, on_kick, 0, 0);
            }
        }
        if (c->st == TLS_OPEN && c->early.len == 0)
            vb_transport_emit_event(&c->base, VB_TRANSPORT_DRAINED, 0);
        break;
    }
}

static void on_hs_timeout(uv_timer_t *h)
{
    tls_t *c = h->data;
    if (c->closed || c->st != TLS_HANDSHAKE)
        return;
    vb_log_warn(log_id(c), "tls handshake timed out", "peer=%s ms=%u", c->name,
                (unsigned)c->cfg->handshake_ms);
    tls_fail(c, VB_ETIMEDOUT);
}

static void on_kick(uv_timer_t *h)
{
    tls_t *c = h->data;
    if (!c->closed && c->st == TLS_OPEN)
        drain_reads(c);
}

/* ------------------------------------------------------------------ */
/* transport ops                                                       */
/* ------------------------------------------------------------------ */

static int tls_write(vb_transport_t *t, const void *data, size_t len)
{
    tls_t *c = (tls_t *)t;
    if (c->closed || c->st == TLS_FAILED || c->shutdown_req)
        return VB_ECLOSED;
    if (len == 0)
        return 0;
    if (c->st == TLS_HANDSHAKE) {
        if (c->early.len + len > VB_TCP_MAX_QUEUED)
            return VB_ENOSPC;
        return buf_append(&c->early, data, len);
    }
    int rc = ssl_write_all(c, data, len);
    if (rc != 0) {
        /* Report through the event too, so the upper layer's one error
         * path runs; the return value says this write failed. */
        tls_fail(c, rc);
        return VB_ECLOSED;
    }
    return 0;
}

static int tls_read_start(vb_transport_t *t)
{
    tls_t *c = (tls_t *)t;
    if (c->closed || c->st == TLS_FAILED)
        return VB_ECLOSED;
    c->want_read = true;
    set_lower_reading(c, !c->out_paused);
    /* Records already buffered (in rx or inside mbedTLS) would otherwise
     * wait for the next lower read; deliver them from the loop, not from
     * inside this call, which may itself be inside a read callback. */
    if (c->st == TLS_OPEN &&
        (c->rx.len > 0 || mbedtls_ssl_get_bytes_avail(&c->ssl) > 0 ||
         c->lower_eof))
        uv_timer_start(&c->kick, on_kick, 0, 0);
    return 0;
}

static int tls_read_stop(vb_transport_t *t)
{
    tls_t *c = (tls_t *)t;
    c->want_read = false;
    /* During the handshake the lower transport must keep reading. */
    if (c->st == TLS_OPEN)
        set_lower_reading(c, false);
    return 0;
}

static void tls_shutdown(vb_transport_t *t)
{
    tls_t *c = (tls_t *)t;
    if (c->closed || c->shutdown_req)
        return;
    c->shutdown_req = true;
    if (c->st == TLS_OPEN)
        do_shutdown(c);
}

static void tls_free(tls_t *c)
{
    if (c->ssl_ready)
        mbedtls_ssl_free(&c->ssl);
    config_unref(c->cfg);
    free(c->rx.data);
    free(c->early.data);
    free(c->plain);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    tls_t *c = h->data;
    if (--c->handles == 0)
        tls_free(c);
}

static void tls_close(vb_transport_t *t)
{
    tls_t *c = (tls_t *)t;
    if (c->closed)
        return;
    c->closed = true;
    c->base._on_read = NULL;
    c->base._on_event = NULL;
    vb_transport_t *lower = c->lower;
    c->lower = NULL;
    vb_transport_close(lower);
    uv_close((uv_handle_t *)&c->hs_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->kick, on_handle_closed);
}

static size_t tls_pending(const vb_transport_t *t)
{
    const tls_t *c = (const tls_t *)t;
    return c->early.len + (c->lower ? vb_transport_pending(c->lower) : 0);
}

static int tls_peer_name(const vb_transport_t *t, char *buf, size_t cap)
{
    const tls_t *c = (const tls_t *)t;
    if (c->lower == NULL)
        return VB_ECLOSED;
    return vb_transport_peer_name(c->lower, buf, cap);
}

static const vb_transport_ops_t tls_ops = {
    .write = tls_write,
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .pending = tls_pending,
    .peer_name = tls_peer_name,
};

uint32_t vb_tls_verify_flags(const vb_transport_t *t)
{
    if (t == NULL || t->ops != &tls_ops)
        return 0;
    return ((const tls_t *)t)->verify_flags;
}

int vb_tls_wrap(uv_loop_t *loop, vb_tls_config_t *cfg, vb_transport_t *lower,
                const char *server_name, const char *log_id_,
                vb_transport_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (loop == NULL || cfg == NULL || lower == NULL || out == NULL ||
        (!cfg->server && (server_name == NULL || server_name[0] == '\0'))) {
        vb_transport_close(lower);
        return VB_EINVAL;
    }
    tls_t *c = calloc(1, sizeof(*c));
    uint8_t *plain = malloc(TLS_PLAIN_BUF);
    if (c == NULL || plain == NULL) {
        free(c);
        free(plain);
        vb_transport_close(lower);
        return VB_ENOMEM;
    }
    c->base.ops = &tls_ops;
    c->loop = loop;
    c->lower = lower;
    c->plain = plain;
    c->cfg = cfg;
    cfg->refs++;
    c->st = TLS_HANDSHAKE;
    if (server_name != NULL)
        snprintf(c->name, sizeof(c->name), "%s", server_name);
    else if (vb_transport_peer_name(lower, c->name, sizeof(c->name)) != 0)
        snprintf(c->name, sizeof(c->name), "?");
    if (log_id_ != NULL)
        snprintf(c->log_id, sizeof(c->log_id), "%s", log_id_);
    uv_timer_init(loop, &c->hs_timer);
    uv_timer_init(loop, &c->kick);
    c->hs_timer.data = c;
    c->kick.data = c;
    c->handles = 2;

    mbedtls_ssl_init(&c->ssl);
    c->ssl_ready = true;
    int r = mbedtls_ssl_setup(&c->ssl, &cfg->conf);
    if (r == 0 && !cfg->server)
        r = mbedtls_ssl_set_hostname(&c->ssl, server_name);
    if (r != 0) {
        char e[128];
        mbed_errtext(r, e, sizeof(e));
        vb_log_error(log_id(c), "tls session setup failed",
                     "peer=%s mbedtls=-0x%04x err=%s", c->name, (unsigned)-r,
                     e);
        int rc = tls_err_from_mbedtls(r);
        tls_close(&c->base);
        return rc;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    uv_timer_start(&c->hs_timer, on_hs_timeout, cfg->handshake_ms, 0);
    /* The lower transport must read during the handshake whatever the
     * upper layer wants later. */
    c->lower_reading = true;
    r = vb_transport_set_handler(lower, on_lower_read, on_lower_event, c);
    if (r != 0) {
        tls_close(&c->base);
        return r;
    }
    /* A client speaks first: queue the ClientHello now. A server waits. */
    if (!cfg->server)
        step_handshake(c);
    *out = &c->base;
    return 0;
}

int vb_tls_connect(uv_loop_t *loop, vb_tls_config_t *cfg, const char *host,
                   uint16_t port, const char *server_name, const char *log_id_,
                   vb_transport_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (cfg == NULL || cfg->server || host == NULL || out == NULL)
        return VB_EINVAL;
    vb_transport_t *tcp = NULL;
    int rc = vb_tcp_connect(loop, host, port, &tcp);
    if (rc != 0)
        return rc;
    return vb_tls_wrap(loop, cfg, tcp, server_name ? server_name : host,
                       log_id_, out);
}

void vb_tls_config_set_rng(vb_tls_config_t *c,
                           int (*f_rng)(void *, unsigned char *, size_t),
                           void *p_rng)
{
    if (c != NULL && f_rng != NULL)
        mbedtls_ssl_conf_rng(&c->conf, f_rng, p_rng);
}
