/* SPDX-License-Identifier: MIT */
/*
 * vb-sim audio helpers: G.711 μ-law (the Sun/CCITT formulation of G.191,
 * kept separate from dsp/ so the simulator checks voxbridge with its own
 * codec) and 16-bit PCM WAV files. Input must already be 8 kHz mono 16-bit;
 * the simulator does not resample.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sim/sim.h"

uint8_t sim_mulaw_encode(int16_t pcm)
{
    /* G.191: the 14-bit grid (x >> 2), one's complement magnitude for
     * negatives (so -1..-4 share code magnitude 0 with 0..3), bias 33,
     * saturation above 8159. */
    static const int seg_end[8] = {0x3F,  0x7F,  0xFF,  0x1FF,
                                   0x3FF, 0x7FF, 0xFFF, 0x1FFF};
    int v = pcm >> 2;
    int mask = 0xFF;
    if (v < 0) {
        v = ~v;
        mask = 0x7F;
    }
    if (v > 8159)
        v = 8159;
    v += 33;
    int seg = 0;
    while (seg < 8 && v > seg_end[seg])
        seg++;
    if (seg >= 8)
        return (uint8_t)(0x7F ^ mask);
    return (uint8_t)(((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask);
}

int16_t sim_mulaw_decode(uint8_t u)
{
    u = (uint8_t)~u;
    int t = ((u & 0x0F) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    return (int16_t)((u & 0x80) ? (0x84 - t) : (t - 0x84));
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

int sim_wav_read(const char *path, int16_t **samples, size_t *n, char *err,
                 size_t errsz)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    if (f == NULL) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0)
        goto io;
    long sz = ftell(f);
    if (sz < 0 || sz > 512L * 1024 * 1024)
        goto io;
    rewind(f);
    buf = malloc((size_t)sz + 1);
    if (buf == NULL || fread(buf, 1, (size_t)sz, f) != (size_t)sz)
        goto io;
    fclose(f);
    f = NULL;
    if (sz < 12 || memcmp(buf, "RIFF", 4) != 0 || memcmp(buf + 8, "WAVE", 4)) {
        snprintf(err, errsz, "%s: not a RIFF/WAVE file", path);
        goto fail;
    }
    size_t off = 12;
    bool have_fmt = false;
    uint16_t fmt = 0, ch = 0, bits = 0;
    uint32_t rate = 0;
    while (off + 8 <= (size_t)sz) {
        uint32_t clen = le32(buf + off + 4);
        const uint8_t *body = buf + off + 8;
        size_t avail = (size_t)sz - off - 8;
        if (memcmp(buf + off, "fmt ", 4) == 0 && clen >= 16 && avail >= 16) {
            fmt = le16(body);
            ch = le16(body + 2);
            rate = le32(body + 4);
            bits = le16(body + 14);
            if (fmt == 0xFFFE && clen >= 40 && avail >= 40)
                fmt = le16(body + 24); /* WAVE_FORMAT_EXTENSIBLE subformat */
            have_fmt = true;
        } else if (memcmp(buf + off, "data", 4) == 0) {
            if (!have_fmt) {
                snprintf(err, errsz, "%s: data chunk before fmt chunk", path);
                goto fail;
            }
            if (fmt != 1 || ch != 1 || bits != 16 || rate != 8000) {
                snprintf(err, errsz,
                         "%s: need 8000 Hz mono 16-bit PCM WAV, got %s %u Hz "
                         "%u channel(s) %u-bit (convert with: sox IN.wav -r "
                         "8000 -c 1 -b 16 -e signed-integer OUT.wav)",
                         path, fmt == 1 ? "PCM" : "non-PCM", (unsigned)rate,
                         (unsigned)ch, (unsigned)bits);
                goto fail;
            }
            size_t bytes = clen <= avail ? clen : avail;
            *n = bytes / 2;
            *samples = malloc(*n * 2 + 2);
            if (*samples == NULL)
                goto io;
            for (size_t i = 0; i < *n; i++)
                (*samples)[i] = (int16_t)le16(body + 2 * i);
            free(buf);
            return 0;
        }
        off += 8 + (size_t)clen + (clen & 1);
    }
    snprintf(err, errsz, "%s: no data chunk", path);
    goto fail;
io:
    snprintf(err, errsz, "%s: read error", path);
fail:
    if (f != NULL)
        fclose(f);
    free(buf);
    return -1;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

int sim_wav_write(const char *path, const int16_t *samples, size_t n)
{
    uint8_t h[44];
    uint32_t data = (uint32_t)(n * 2);
    memcpy(h, "RIFF", 4);
    put32(h + 4, 36 + data);
    memcpy(h + 8, "WAVEfmt ", 8);
    put32(h + 16, 16);
    put16(h + 20, 1);
    put16(h + 22, 1);
    put32(h + 24, 8000);
    put32(h + 28, 16000);
    put16(h + 32, 2);
    put16(h + 34, 16);
    memcpy(h + 36, "data", 4);
    put32(h + 40, data);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    bool ok = fwrite(h, 1, sizeof h, f) == sizeof h;
    for (size_t i = 0; ok && i < n; i++) {
        uint8_t s[2];
        put16(s, (uint16_t)samples[i]);
        ok = fwrite(s, 1, 2, f) == 2;
    }
    if (fclose(f) != 0)
        ok = false;
    return ok ? 0 : -1;
}
