/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the Gemini Live server-message parser
 * (ai/gemini_proto.c): any bytes a server or a man in the middle could send
 * as one WebSocket message. Small limits make the size, depth and chunking
 * paths reachable; events are consumed so their pointers are read.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ai/gemini_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_event(const vb_gemini_event_t *ev, void *ud)
{
    size_t *acc = ud;
    if (ev->data != NULL && ev->len > 0)
        *acc += ev->data[0] + ev->data[ev->len - 1];
    if (ev->text != NULL)
        *acc += strlen(ev->text);
    if (ev->id != NULL)
        *acc += strlen(ev->id);
    if (ev->name != NULL)
        *acc += strlen(ev->name);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static vb_gemini_parser_t *p;
    if (p == NULL) {
        vb_gemini_limits_t lim = {
            .max_message = 64 * 1024, .max_depth = 16, .audio_chunk = 64};
        if (vb_gemini_parser_create(&lim, &p) != 0)
            return 0;
    }
    size_t acc = 0;
    (void)vb_gemini_parse(p, data, size, on_event, &acc);
    return 0;
}
