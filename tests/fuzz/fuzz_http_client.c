/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the HTTP client's response parser
 * (net/http_client.c): the input is a server's answer, fed whole and in
 * pieces of a size taken from its first byte, with a small body cap. Both
 * runs must agree (the parser keeps no state across reads that changes
 * the outcome), a success has a real status and a body within the cap,
 * and a failure is one of the codes the header names.
 */
#include <stdint.h>
#include <stdlib.h>

#include "core/err.h"
#include "net/http_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] % 17) + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    size_t max = 256, bl1 = 0, bl2 = 0;
    int a = vb_http_client_parse_response(p, n, 0, max, &bl1);
    int b = vb_http_client_parse_response(p, n, chunk, max, &bl2);
    if (a != b)
        abort();
    if (a > 0) {
        if (a < 200 || a > 999 || bl1 > max || bl1 != bl2)
            abort();
    } else if (a != VB_EPROTO && a != VB_ECLOSED && a != VB_EMSGSIZE) {
        abort();
    }
    return 0;
}
