/* SPDX-License-Identifier: MIT */
/*
 * G.711 μ-law and A-law, the 8-bit telephone codecs: Twilio Media Streams
 * carry μ-law, A-law is here for the file tool and for completeness. Both
 * directions are table driven.
 *
 * Decoding is bit-exact with ITU-T G.191 (STL `ulaw_expand`/`alaw_expand`)
 * for all 256 codes; both μ-law zero codes (0xFF, 0x7F) decode to 0.
 *
 * Encoding is bit-exact with G.191 (`ulaw_compress`/`alaw_compress`) for all
 * 65536 inputs. That fixes the rounding: the 16-bit input is truncated to the
 * 14-bit (μ-law) or 12-bit (A-law magnitude) grid, and negative inputs use
 * the one's complement (-x-1) rather than the negation, so the quantizer is
 * mirror-symmetric about -1/2 LSB and every code's decoded value is the centre
 * of the inputs that map to it. μ-law never emits 0x7F for x >= 0 and maps
 * -4..-1 to 0x7F; docs/dsp.md compares this with sox's rounding.
 *
 * All functions are pure (no state besides constant tables built once on
 * first use, thread-safely) and may be called from any thread.
 */
#ifndef VB_DSP_G711_H
#define VB_DSP_G711_H

#include <stddef.h>
#include <stdint.h>

/* The codes that decode to silence: μ-law +0, and A-law +8 (A-law has no
 * zero; 0xD5 is its smallest positive level). Used to pad frames. */
#define VB_G711_ULAW_SILENCE 0xFF
#define VB_G711_ALAW_SILENCE 0xD5

/* Encode `n` samples from `src` into `n` codes at `dst`. The buffers must not
 * overlap. Never fails; every int16 value is valid input (values beyond the
 * top decision level saturate to the largest code). */
void vb_g711_ulaw_encode(uint8_t *dst, const int16_t *src, size_t n);
void vb_g711_alaw_encode(uint8_t *dst, const int16_t *src, size_t n);

/* Decode `n` codes from `src` into `n` samples at `dst` (no overlap). */
void vb_g711_ulaw_decode(int16_t *dst, const uint8_t *src, size_t n);
void vb_g711_alaw_decode(int16_t *dst, const uint8_t *src, size_t n);

#endif
