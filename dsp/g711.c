/* SPDX-License-Identifier: MIT */
/*
 * G.711 tables. Decoding indexes a 256-entry table per law (the values of
 * G.191's expand routines, reproduced literally so they can be read and
 * checked). Encoding indexes a table by the input's top bits: the G.191
 * encoders only look at x >> 2 (μ-law, 14-bit grid) or x >> 4 (A-law, 12-bit
 * grid), because the one's complement they apply to negative inputs commutes
 * with an arithmetic shift (~x >> k == ~(x >> k)). So a 16 KiB and a 4 KiB
 * table reproduce them exactly for all 65536 inputs. The encode tables are
 * computed once, on first use, under pthread_once.
 */
#include "dsp/g711.h"

#include <pthread.h>

#define ULAW_ENC_SHIFT 2
#define ULAW_ENC_SIZE  (65536 >> ULAW_ENC_SHIFT)
#define ALAW_ENC_SHIFT 4
#define ALAW_ENC_SIZE  (65536 >> ALAW_ENC_SHIFT)

/* clang-format off */
static const int16_t ulaw_decode_table[256] = {
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956,
    -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764,
    -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412,
    -11900, -11388, -10876, -10364, -9852, -9340, -8828, -8316,
    -7932, -7676, -7420, -7164, -6908, -6652, -6396, -6140,
    -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092,
    -3900, -3772, -3644, -3516, -3388, -3260, -3132, -3004,
    -2876, -2748, -2620, -2492, -2364, -2236, -2108, -1980,
    -1884, -1820, -1756, -1692, -1628, -1564, -1500, -1436,
    -1372, -1308, -1244, -1180, -1116, -1052, -988, -924,
    -876, -844, -812, -780, -748, -716, -684, -652,
    -620, -588, -556, -524, -492, -460, -428, -396,
    -372, -356, -340, -324, -308, -292, -276, -260,
    -244, -228, -212, -196, -180, -164, -148, -132,
    -120, -112, -104, -96, -88, -80, -72, -64,
    -56, -48, -40, -32, -24, -16, -8, 0,
    32124, 31100, 30076, 29052, 28028, 27004, 25980, 24956,
    23932, 22908, 21884, 20860, 19836, 18812, 17788, 16764,
    15996, 15484, 14972, 14460, 13948, 13436, 12924, 12412,
    11900, 11388, 10876, 10364, 9852, 9340, 8828, 8316,
    7932, 7676, 7420, 7164, 6908, 6652, 6396, 6140,
    5884, 5628, 5372, 5116, 4860, 4604, 4348, 4092,
    3900, 3772, 3644, 3516, 3388, 3260, 3132, 3004,
    2876, 2748, 2620, 2492, 2364, 2236, 2108, 1980,
    1884, 1820, 1756, 1692, 1628, 1564, 1500, 1436,
    1372, 1308, 1244, 1180, 1116, 1052, 988, 924,
    876, 844, 812, 780, 748, 716, 684, 652,
    620, 588, 556, 524, 492, 460, 428, 396,
    372, 356, 340, 324, 308, 292, 276, 260,
    244, 228, 212, 196, 180, 164, 148, 132,
    120, 112, 104, 96, 88, 80, 72, 64,
    56, 48, 40, 32, 24, 16, 8, 0,
};
static const int16_t alaw_decode_table[256] = {
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736,
    -7552, -7296, -8064, -7808, -6528, -6272, -7040, -6784,
    -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368,
    -3776, -3648, -4032, -3904, -3264, -3136, -3520, -3392,
    -22016, -20992, -24064, -23040, -17920, -16896, -19968, -18944,
    -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136,
    -11008, -10496, -12032, -11520, -8960, -8448, -9984, -9472,
    -15104, -14592, -16128, -15616, -13056, -12544, -14080, -13568,
    -344, -328, -376, -360, -280, -264, -312, -296,
    -472, -456, -504, -488, -408, -392, -440, -424,
    -88, -72, -120, -104, -24, -8, -56, -40,
    -216, -200, -248, -232, -152, -136, -184, -168,
    -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184,
    -1888, -1824, -2016, -1952, -1632, -1568, -1760, -1696,
    -688, -656, -752, -720, -560, -528, -624, -592,
    -944, -912, -1008, -976, -816, -784, -880, -848,
    5504, 5248, 6016, 5760, 4480, 4224, 4992, 4736,
    7552, 7296, 8064, 7808, 6528, 6272, 7040, 6784,
    2752, 2624, 3008, 2880, 2240, 2112, 2496, 2368,
    3776, 3648, 4032, 3904, 3264, 3136, 3520, 3392,
    22016, 20992, 24064, 23040, 17920, 16896, 19968, 18944,
    30208, 29184, 32256, 31232, 26112, 25088, 28160, 27136,
    11008, 10496, 12032, 11520, 8960, 8448, 9984, 9472,
    15104, 14592, 16128, 15616, 13056, 12544, 14080, 13568,
    344, 328, 376, 360, 280, 264, 312, 296,
    472, 456, 504, 488, 408, 392, 440, 424,
    88, 72, 120, 104, 24, 8, 56, 40,
    216, 200, 248, 232, 152, 136, 184, 168,
    1376, 1312, 1504, 1440, 1120, 1056, 1248, 1184,
    1888, 1824, 2016, 1952, 1632, 1568, 1760, 1696,
    688, 656, 752, 720, 560, 528, 624, 592,
    944, 912, 1008, 976, 816, 784, 880, 848,
};
/* clang-format on */

static uint8_t ulaw_encode_table[ULAW_ENC_SIZE];
static uint8_t alaw_encode_table[ALAW_ENC_SIZE];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* Number of significant bits in v (0 for 0). */
static int bit_length(unsigned v)
{
    int n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

/* μ-law code for a sample on the 14-bit grid, k = x >> 2 in [-8192, 8191]. */
static uint8_t ulaw_code(int k)
{
    /* One's complement for negatives: -1..-4 (k = -1) share the magnitude 0
     * with 0..3, which is what makes the quantizer symmetric about -1/2. */
    unsigned mag = (unsigned)(k < 0 ? ~k : k);
    /* The bias of 33 aligns segment s with [32 << s, 64 << s). Beyond the top
     * decision level (8159 + 33) the code saturates at 0x80 / 0x00. */
    unsigned biased = mag + 33;
    if (biased > 0x1FFF)
        biased = 0x1FFF;
    int seg = bit_length(biased) - 6;
    unsigned mant = (biased >> (seg + 1)) & 0x0F;
    unsigned code = ((unsigned)seg << 4) | mant;
    if (k < 0)
        code |= 0x80;
    /* μ-law transmits every bit inverted. */
    return (uint8_t)(~code & 0xFF);
}

/* A-law code for a sample on the 12-bit grid, k = x >> 4 in [-2048, 2047]. */
static uint8_t alaw_code(int k)
{
    unsigned mag = (unsigned)(k < 0 ? ~k : k);
    unsigned code;
    if (mag < 32) {
        /* Segments 0 and 1 share the smallest step; the code is mag. */
        code = mag;
    } else {
        int seg = bit_length(mag) - 4;
        code = ((unsigned)seg << 4) | ((mag >> (seg - 1)) & 0x0F);
    }
    if (k >= 0)
        code |= 0x80;
    /* A-law transmits the even bits inverted. */
    return (uint8_t)(code ^ 0x55);
}

static void build_tables(void)
{
    for (int i = 0; i < ULAW_ENC_SIZE; i++)
        ulaw_encode_table[i] = ulaw_code(i - ULAW_ENC_SIZE / 2);
    for (int i = 0; i < ALAW_ENC_SIZE; i++)
        alaw_encode_table[i] = alaw_code(i - ALAW_ENC_SIZE / 2);
}

static inline void tables_ready(void)
{
    pthread_once(&tables_once, build_tables);
}

/* Table index of x: its top bits, offset so the most negative value is 0.
 * Right-shifting a negative int is arithmetic on every compiler we support
 * (gcc and clang define it so); the sum is computed in int. */
static inline unsigned ulaw_index(int16_t x)
{
    return (unsigned)((x >> ULAW_ENC_SHIFT) + ULAW_ENC_SIZE / 2);
}

static inline unsigned alaw_index(int16_t x)
{
    return (unsigned)((x >> ALAW_ENC_SHIFT) + ALAW_ENC_SIZE / 2);
}

void vb_g711_ulaw_encode(uint8_t *dst, const int16_t *src, size_t n)
{
    tables_ready();
    for (size_t i = 0; i < n; i++)
        dst[i] = ulaw_encode_table[ulaw_index(src[i])];
}

void vb_g711_alaw_encode(uint8_t *dst, const int16_t *src, size_t n)
{
    tables_ready();
    for (size_t i = 0; i < n; i++)
        dst[i] = alaw_encode_table[alaw_index(src[i])];
}

void vb_g711_ulaw_decode(int16_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = ulaw_decode_table[src[i]];
}

void vb_g711_alaw_decode(int16_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = alaw_decode_table[src[i]];
}
