/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the TLS transport (net/tls.c) fed by a hostile
 * peer: the input is what the other side sends, delivered through an
 * in-memory lower transport (the net/transport.h seam) in pieces. First
 * byte: bit 7 picks the role (0: voxbridge as the client, as towards
 * Gemini and the Twilio REST API, fed "server" bytes; 1: the server role
 * of the fake Gemini, fed "client" bytes), bits 0-5 the piece size (0: all
 * at once), bit 6 makes the upper layer pause reading after each delivery
 * (the kick path). The connection then sees EOF and is closed.
 *
 * Runs are repeatable: the generator of both configurations is a fixed
 * sequence restarted for every input, and the clock mbedTLS reads (time(),
 * interposed below) is fixed at FUZZ_NOW, inside the validity of the
 * committed test certificates (tests/fuzz/tls/). So a transcript recorded
 * from a real handshake (`make fuzz-tls-corpus` builds this file with
 * VB_FUZZ_TLS_RECORD and writes tests/fuzz/corpus_tls/) replays exactly:
 * the fuzzer starts past certificate verification, inside the record layer
 * with application data, close_notify and EOF, and mutates from there.
 *
 * Checked: no crash, leak or sanitizer report; CONNECTED at most once and
 * before any data; nothing delivered after an error; the transport frees
 * itself once closed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <uv.h>

#include "core/err.h"
#include "core/log.h"
#include "net/tls.h"
#include "net/transport.h"

#ifndef VB_FUZZ_TLS_DIR
#define VB_FUZZ_TLS_DIR "tests/fuzz/tls"
#endif
#define FUZZ_NOW        1798761600 /* 2027-01-01, in the certificates' life */
#define SEED_CLIENT     0x636c69656e74ull
#define SEED_SERVER     0x736572766572ull
#define FAKE_MAX_OUTBOX (1u << 20)

/* mbedTLS reads the clock through time() (no MBEDTLS_PLATFORM_TIME_ALT
 * in the system build): a fixed clock makes the client and server randoms
 * and the certificate checks repeatable. Nothing else here needs time(). */
time_t time(time_t *t)
{
    if (t != NULL)
        *t = FUZZ_NOW;
    return FUZZ_NOW;
}

/* ---- a repeatable generator (splitmix64) ---- */

typedef struct rng {
    uint64_t s;
} rng_t;

static int rng_fill(void *p, unsigned char *buf, size_t len)
{
    rng_t *r = p;
    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0) {
            uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            r->s ^= z ^ (z >> 31);
        }
        buf[i] = (unsigned char)(r->s >> (8 * (i % 8)));
    }
    return 0;
}

/* ---- the lower transport: an outbox and a reading flag ---- */

typedef struct fake {
    vb_transport_t base;
    bool reading, shut;
    uint8_t *out;
    size_t out_len;
    struct fake **self; /* cleared when TLS closes it */
} fake_t;

static int fake_write(vb_transport_t *t, const void *d, size_t n)
{
    fake_t *f = (fake_t *)t;
    if (f->shut)
        return VB_ECLOSED;
    if (f->out_len + n > FAKE_MAX_OUTBOX)
        return VB_ENOSPC;
    uint8_t *p = realloc(f->out, f->out_len + n + 1);
    if (p == NULL)
        return VB_ENOMEM;
    memcpy(p + f->out_len, d, n);
    f->out = p;
    f->out_len += n;
    return 0;
}
static int fake_read_start(vb_transport_t *t)
{
    ((fake_t *)t)->reading = true;
    return 0;
}
static int fake_read_stop(vb_transport_t *t)
{
    ((fake_t *)t)->reading = false;
    return 0;
}
static void fake_shutdown(vb_transport_t *t)
{
    ((fake_t *)t)->shut = true;
}
static void fake_close(vb_transport_t *t)
{
    fake_t *f = (fake_t *)t;
    if (f->self != NULL)
        *f->self = NULL;
    free(f->out);
    free(f);
}
static size_t fake_pending(const vb_transport_t *t)
{
    (void)t;
    return 0; /* "handed to the kernel" at once */
}
static int fake_peer_name(const vb_transport_t *t, char *buf, size_t cap)
{
    (void)t;
    snprintf(buf, cap, "192.0.2.1:443");
    return 0;
}
static const vb_transport_ops_t fake_ops = {
    .write = fake_write,
    .read_start = fake_read_start,
    .read_stop = fake_read_stop,
    .shutdown = fake_shutdown,
    .close = fake_close,
    .pending = fake_pending,
    .peer_name = fake_peer_name,
};

static fake_t *fake_new(fake_t **self)
{
    fake_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    f->base.ops = &fake_ops;
    f->self = self;
    *self = f;
    return f;
}

/* ---- the upper layer: what the WebSocket glue would do ---- */

typedef struct upper {
    vb_transport_t *t; /* NULL once closed */
    bool server, pause, connected, failed;
    size_t got;
} upper_t;

static void up_read(vb_transport_t *t, const uint8_t *d, size_t n, void *ud)
{
    upper_t *u = ud;
    if (!u->connected || u->failed || t != u->t)
        abort();
    u->got += n;
    (void)d;
    if (u->server) /* echo, as a WebSocket server answers pings */
        (void)vb_transport_write(t, d, n < 64 ? n : 64);
    if (u->pause)
        vb_transport_read_stop(t);
}

static void up_event(vb_transport_t *t, vb_transport_event_t ev, int err,
                     void *ud)
{
    upper_t *u = ud;
    if (u->failed || t != u->t)
        abort();
    switch (ev) {
    case VB_TRANSPORT_CONNECTED:
        if (u->connected)
            abort();
        u->connected = true;
        if (u->server)
            (void)vb_transport_write(t, "welcome", 7);
        else
            (void)vb_transport_write(t, "GET / HTTP/1.1\r\n\r\n", 18);
        break;
    case VB_TRANSPORT_EOF:
        vb_transport_shutdown(t);
        break;
    case VB_TRANSPORT_ERROR:
        if (err >= 0)
            abort();
        u->failed = true;
        vb_transport_close(t);
        u->t = NULL;
        break;
    case VB_TRANSPORT_DRAINED:
        break;
    }
}

/* ---- configurations ---- */

static uv_loop_t loop;
static vb_tls_config_t *client_cfg, *server_cfg;
static rng_t client_rng, server_rng;

static void setup(void)
{
    vb_log_set_level(getenv("VB_FUZZ_LOG") ? VB_LOG_DEBUG : VB_LOG_OFF);
    if (uv_loop_init(&loop) != 0 ||
        vb_tls_config_client(VB_FUZZ_TLS_DIR "/ca.crt", &client_cfg) != 0 ||
        vb_tls_config_server(VB_FUZZ_TLS_DIR "/srv.crt",
                             VB_FUZZ_TLS_DIR "/srv.key", &server_cfg) != 0) {
        fprintf(stderr, "fuzz_tls: cannot load %s/{ca,srv}.crt\n",
                VB_FUZZ_TLS_DIR);
        abort();
    }
    vb_tls_config_set_rng(client_cfg, rng_fill, &client_rng);
    vb_tls_config_set_rng(server_cfg, rng_fill, &server_rng);
}

static void restart_rngs(void)
{
    client_rng.s = SEED_CLIENT;
    server_rng.s = SEED_SERVER;
}

/* Wraps a fresh lower transport in TLS with the upper layer on top. */
static fake_t *open_tls(bool server, upper_t *u, fake_t **self)
{
    fake_t *f = fake_new(self);
    u->server = server;
    if (vb_tls_wrap(&loop, server ? server_cfg : client_cfg, &f->base,
                    server ? NULL : "localhost", NULL, &u->t) != 0)
        abort();
    if (vb_transport_set_handler(u->t, up_read, up_event, u) != 0)
        abort();
    return *self;
}

static void close_all(upper_t *u)
{
    if (u->t != NULL)
        vb_transport_close(u->t);
    u->t = NULL;
    uv_run(&loop, UV_RUN_DEFAULT); /* the transport frees itself here */
}

/* One input (format above); `out` receives what the upper layer saw. */
static void run_input(const uint8_t *data, size_t size, upper_t *out)
{
    bool server = data[0] & 0x80;
    size_t chunk = data[0] & 0x3f;
    upper_t u = {.pause = data[0] & 0x40};
    data++;
    size--;
    if (chunk == 0)
        chunk = size > 0 ? size : 1;
    restart_rngs();
    fake_t *lower = NULL;
    open_tls(server, &u, &lower);
    for (size_t off = 0; off < size && lower != NULL && u.t != NULL;) {
        if (!lower->reading) {
            /* Paused by the upper layer: resume it as its consumer would
             * once it caught up; the transport delivers what it holds
             * from the loop. */
            vb_transport_read_start(u.t);
            uv_run(&loop, UV_RUN_NOWAIT);
            if (lower == NULL || u.t == NULL || !lower->reading)
                break;
        }
        size_t n = size - off < chunk ? size - off : chunk;
        lower->out_len = 0; /* what the peer would read: dropped */
        vb_transport_emit_read(&lower->base, data + off, n);
        off += n;
    }
    if (lower != NULL && u.t != NULL) {
        vb_transport_read_start(u.t);
        vb_transport_emit_event(&lower->base, VB_TRANSPORT_EOF, 0);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    close_all(&u);
    if (lower != NULL) /* closing TLS must close what it wraps */
        abort();
    *out = u;
}

#ifndef VB_FUZZ_TLS_RECORD

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (client_cfg == NULL)
        setup();
    if (size == 0)
        return 0;
    upper_t u;
    run_input(data, size, &u);
    return 0;
}

#else /* VB_FUZZ_TLS_RECORD: write the seed transcripts */

typedef struct side {
    upper_t u;
    fake_t *lower;
    uint8_t *rx; /* everything this side was sent */
    size_t rx_len;
} side_t;

/* Moves what `from` wrote to `to`, recording it; true if anything moved. */
static bool pump(side_t *from, side_t *to)
{
    if (from->lower == NULL || to->lower == NULL || from->lower->out_len == 0 ||
        !to->lower->reading)
        return false;
    size_t n = from->lower->out_len;
    uint8_t *copy = malloc(n);
    memcpy(copy, from->lower->out, n);
    from->lower->out_len = 0;
    to->rx = realloc(to->rx, to->rx_len + n);
    memcpy(to->rx + to->rx_len, copy, n);
    to->rx_len += n;
    vb_transport_emit_read(&to->lower->base, copy, n);
    free(copy);
    return true;
}

static void pump_all(side_t *c, side_t *s)
{
    for (;;) {
        bool to_server = pump(c, s);
        bool to_client = pump(s, c);
        if (!to_server && !to_client)
            break;
        uv_run(&loop, UV_RUN_NOWAIT);
    }
}

/* Writes a seed after checking that it replays: the handshake completes
 * and application data arrives, as the fuzzer will see it. */
static void write_seed(const char *dir, const char *name, uint8_t first,
                       const uint8_t *d, size_t n)
{
    uint8_t *in = malloc(n + 1);
    in[0] = first;
    memcpy(in + 1, d, n);
    upper_t u;
    run_input(in, n + 1, &u);
    free(in);
    if (!u.connected || u.failed || u.got == 0) {
        fprintf(stderr,
                "tls_record: %s does not replay (connected=%d failed=%d "
                "got=%zu)\n",
                name, u.connected, u.failed, u.got);
        exit(1);
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(&first, 1, 1, f) != 1 || fwrite(d, 1, n, f) != n ||
        fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    printf("%s: %zu bytes\n", path, n + 1);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/fuzz/corpus_tls";
    mkdir(dir, 0755);
    setup();
    restart_rngs();
    side_t c = {0}, s = {0};
    open_tls(false, &c.u, &c.lower);
    open_tls(true, &s.u, &s.lower);
    pump_all(&c, &s);
    if (!c.u.connected || !s.u.connected) {
        fprintf(stderr, "tls_record: handshake did not complete\n");
        return 1;
    }
    /* Some application data each way, then the server ends with
     * close_notify. */
    vb_transport_write(c.u.t, "ping", 4);
    vb_transport_write(s.u.t, "{\"setupComplete\":{}}", 20);
    pump_all(&c, &s);
    vb_transport_shutdown(s.u.t);
    pump_all(&c, &s);
    if (c.u.got == 0 || s.u.got == 0) {
        fprintf(stderr, "tls_record: no application data crossed\n");
        return 1;
    }
    /* Client role: the server's bytes, whole, in 1- and 7-byte pieces, and
     * with reading paused after each delivery. */
    write_seed(dir, "client_whole", 0x00, c.rx, c.rx_len);
    write_seed(dir, "client_bytewise", 0x01, c.rx, c.rx_len);
    write_seed(dir, "client_pieces_paused", 0x47, c.rx, c.rx_len);
    /* Server role: the client's bytes. */
    write_seed(dir, "server_whole", 0x80, s.rx, s.rx_len);
    write_seed(dir, "server_pieces", 0x85, s.rx, s.rx_len);
    close_all(&c.u);
    close_all(&s.u);
    free(c.rx);
    free(s.rx);
    vb_tls_config_destroy(client_cfg);
    vb_tls_config_destroy(server_cfg);
    uv_loop_close(&loop);
    return 0;
}

#endif
