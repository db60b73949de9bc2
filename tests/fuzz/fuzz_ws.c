/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the WebSocket endpoint (net/ws.c): arbitrary bytes,
 * fed in chunk sizes taken from the input, to a server and a client
 * endpoint (sans-I/O). Whatever arrives, the endpoint must end OPEN,
 * CLOSING or CLOSED with a valid close code, deliver no message larger
 * than its limit and never a text message that is not UTF-8. The same
 * bytes also go through the client handshake-response check.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "net/ws.h"

#define FUZZ_MAX_MSG 4096

static int on_out(vb_ws_t *ws, const uint8_t *d, size_t n, void *ud)
{
    (void)ws;
    (void)d;
    (void)ud;
    (void)n;
    return 0;
}

static void on_msg(vb_ws_t *ws, bool text, const uint8_t *d, size_t n, void *ud)
{
    (void)ud;
    if (n > FUZZ_MAX_MSG)
        abort();
    if (text && !vb_ws_utf8_valid(d, n))
        abort();
    /* Exercise sending from inside a callback. */
    if (n > 0 && d[0] == 'E')
        vb_ws_send_text(ws, "e", 1);
    if (n > 0 && d[0] == 'C')
        vb_ws_close(ws, 1000, "bye");
}

static void on_close(vb_ws_t *ws, const vb_ws_close_info_t *info, void *ud)
{
    (void)ws;
    (void)ud;
    if (info->code_sent != VB_WS_CLOSE_ABNORMAL &&
        info->code_sent != VB_WS_CLOSE_NO_STATUS &&
        !vb_ws_close_code_valid(info->code_sent))
        abort();
}

static void run(vb_ws_role_t role, const uint8_t *data, size_t size)
{
    vb_ws_config_t cfg = {.role = role, .max_message = FUZZ_MAX_MSG};
    vb_ws_callbacks_t cb = {
        .on_message = on_msg, .on_close = on_close, .on_output = on_out};
    vb_ws_t *ws;
    if (vb_ws_create(&cfg, &cb, NULL, &ws) != 0)
        return;
    size_t chunk = size > 0 ? (size_t)(data[0] % 17) + 1 : 1;
    for (size_t off = 1; off < size; off += chunk) {
        size_t k = size - off < chunk ? size - off : chunk;
        if (vb_ws_feed(ws, data + off, k) == VB_ECLOSED)
            break;
    }
    vb_ws_state_t st = vb_ws_state(ws);
    if (st != VB_WS_OPEN && st != VB_WS_CLOSING && st != VB_WS_CLOSED)
        abort();
    vb_ws_feed_eof(ws);
    if (vb_ws_state(ws) != VB_WS_CLOSED)
        abort();
    vb_ws_destroy(ws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    run(VB_WS_SERVER, data, size);
    run(VB_WS_CLIENT, data, size);
    size_t used = 0;
    int status = 0;
    int rc = vb_ws_client_check_response(
        (const char *)data, size, "dGhlIHNhbXBsZSBub25jZQ==", &used, &status);
    if (rc == 0 && (used == 0 || used > size))
        abort();
    return 0;
}
