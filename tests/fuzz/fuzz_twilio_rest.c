/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the Twilio REST response handling
 * (net/twilio_rest.c, vb_twilio_rest_parse_response): whatever the API
 * endpoint, or anyone in its place, answers a hang-up request. The first
 * byte picks the piece size the bytes arrive in (0: all at once); the
 * connection then ends. The result must be an HTTP status (100..999) or
 * one of the documented failures, and the same bytes must give the same
 * result whatever the pieces.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/log.h"
#include "net/twilio_rest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        vb_log_set_level(VB_LOG_OFF);
        init = true;
    }
    if (size == 0)
        return 0;
    size_t chunk = data[0];
    const char *resp = (const char *)data + 1;
    size--;
    int rc = vb_twilio_rest_parse_response(resp, size, chunk);
    if (!((rc >= 100 && rc <= 999) || rc == VB_EPROTO || rc == VB_ECLOSED))
        abort();
    if (chunk != 0 && vb_twilio_rest_parse_response(resp, size, 0) != rc)
        abort();
    return 0;
}
