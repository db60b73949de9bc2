/* SPDX-License-Identifier: MIT */
/*
 * One G.711 sample at a time, for tests: each goes through the buffer
 * forms of dsp/g711.h with n = 1, so the tests check exactly what the
 * pipeline runs.
 */
#ifndef VB_TESTS_G711_SAMPLE_H
#define VB_TESTS_G711_SAMPLE_H

#include <stdint.h>

#include "dsp/g711.h"

static inline uint8_t ulaw_encode1(int16_t x)
{
    uint8_t c;
    vb_g711_ulaw_encode(&c, &x, 1);
    return c;
}

static inline uint8_t alaw_encode1(int16_t x)
{
    uint8_t c;
    vb_g711_alaw_encode(&c, &x, 1);
    return c;
}

static inline int16_t ulaw_decode1(uint8_t code)
{
    int16_t s;
    vb_g711_ulaw_decode(&s, &code, 1);
    return s;
}

static inline int16_t alaw_decode1(uint8_t code)
{
    int16_t s;
    vb_g711_alaw_decode(&s, &code, 1);
    return s;
}

#endif
