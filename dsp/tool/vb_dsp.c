/* SPDX-License-Identifier: MIT */
/*
 * vb-dsp: the DSP module's codecs and resamplers over raw files, to listen
 * to and inspect what the bridge does to audio. Linear audio is raw signed
 * 16-bit little-endian mono (sox: -t raw -e signed -b 16 -c 1); G.711 files
 * are raw codes, one byte per sample. IN or OUT may be "-" for stdin/stdout.
 *
 *   vb-dsp ulaw-encode IN OUT     vb-dsp ulaw-decode IN OUT
 *   vb-dsp alaw-encode IN OUT     vb-dsp alaw-decode IN OUT
 *   vb-dsp resample --from HZ --to HZ [--backend speexdsp|libsamplerate]
 *                   [--quality Q] IN OUT
 *
 * `resample` compensates the resampler's delay, as a file tool should: the
 * output starts aligned with the input and has round(n * to / from) samples.
 * Exit status: 0 done, 1 runtime failure (I/O, bad input), 2 bad usage.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "dsp/g711.h"
#include "dsp/resampler.h"

#define EXIT_USAGE 2
#define BLOCK      4096 /* samples per read */

static const char *prog = "vb-dsp";

static const char usage_text[] =
    "usage: vb-dsp ulaw-encode|ulaw-decode|alaw-encode|alaw-decode IN OUT\n"
    "       vb-dsp resample --from HZ --to HZ [--backend speexdsp|"
    "libsamplerate]\n"
    "                       [--quality Q] IN OUT\n"
    "\n"
    "Linear audio is raw signed 16-bit little-endian mono; G.711 is one raw\n"
    "code per byte. IN/OUT may be '-' for stdin/stdout.\n"
    "  ulaw-encode, alaw-encode   s16le IN -> G.711 OUT\n"
    "  ulaw-decode, alaw-decode   G.711 IN -> s16le OUT\n"
    "  resample                   s16le IN at --from Hz -> s16le OUT at --to "
    "Hz,\n"
    "                             delay-compensated, round(n*to/from) "
    "samples\n"
    "  --backend   speexdsp (default) or libsamplerate\n"
    "  --quality   speexdsp: 0..10 (default 5); libsamplerate: 0|best,\n"
    "              1|medium (default), 2|fastest, 3|zoh, 4|linear (3, 4:\n"
    "              upsampling only)\n";

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Reports a usage error on stderr. Returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    return EXIT_USAGE;
}

typedef struct io {
    FILE *in, *out;
    const char *in_name, *out_name;
} io_t;

static int open_io(io_t *io, const char *in, const char *out)
{
    io->in_name = in;
    io->out_name = out;
    io->in = strcmp(in, "-") == 0 ? stdin : fopen(in, "rb");
    if (io->in == NULL) {
        fprintf(stderr, "%s: cannot open %s: %s\n", prog, in, strerror(errno));
        return 1;
    }
    io->out = strcmp(out, "-") == 0 ? stdout : fopen(out, "wb");
    if (io->out == NULL) {
        fprintf(stderr, "%s: cannot create %s: %s\n", prog, out,
                strerror(errno));
        if (io->in != stdin)
            fclose(io->in);
        return 1;
    }
    return 0;
}

static int close_io(io_t *io, int status)
{
    if (io->in != stdin)
        fclose(io->in);
    if (ferror(io->out) || fclose(io->out) != 0) {
        if (status == 0)
            fprintf(stderr, "%s: writing %s: %s\n", prog, io->out_name,
                    strerror(errno));
        return 1;
    }
    return status;
}

/* Reads up to `max` int16 samples. Returns the count, or -1 on a read error
 * or a dangling odd byte at the end of the input (reported). */
static long read_s16(io_t *io, int16_t *dst, size_t max)
{
    unsigned char buf[BLOCK * 2];
    size_t got = fread(buf, 1, max * 2, io->in);
    if (ferror(io->in)) {
        fprintf(stderr, "%s: reading %s: %s\n", prog, io->in_name,
                strerror(errno));
        return -1;
    }
    if (got % 2 != 0) {
        /* fread only stops short at the end, so this byte is the last. */
        fprintf(stderr,
                "%s: %s: odd number of bytes; expected 16-bit samples\n", prog,
                io->in_name);
        return -1;
    }
    for (size_t i = 0; i < got / 2; i++)
        dst[i] =
            (int16_t)(uint16_t)(buf[2 * i] | (unsigned)buf[2 * i + 1] << 8);
    return (long)(got / 2);
}

static int write_s16(io_t *io, const int16_t *src, size_t n)
{
    unsigned char buf[BLOCK * 2];
    while (n > 0) {
        size_t blk = n < BLOCK ? n : BLOCK;
        for (size_t i = 0; i < blk; i++) {
            uint16_t v = (uint16_t)src[i];
            buf[2 * i] = (unsigned char)(v & 0xFF);
            buf[2 * i + 1] = (unsigned char)(v >> 8);
        }
        if (fwrite(buf, 2, blk, io->out) != blk) {
            fprintf(stderr, "%s: writing %s: %s\n", prog, io->out_name,
                    strerror(errno));
            return -1;
        }
        src += blk;
        n -= blk;
    }
    return 0;
}

static int encode(io_t *io, void (*enc)(uint8_t *, const int16_t *, size_t))
{
    int16_t lin[BLOCK];
    uint8_t codes[BLOCK];
    long n;
    while ((n = read_s16(io, lin, BLOCK)) > 0) {
        enc(codes, lin, (size_t)n);
        if (fwrite(codes, 1, (size_t)n, io->out) != (size_t)n) {
            fprintf(stderr, "%s: writing %s: %s\n", prog, io->out_name,
                    strerror(errno));
            return 1;
        }
    }
    return n < 0 ? 1 : 0;
}

static int decode(io_t *io, void (*dec)(int16_t *, const uint8_t *, size_t))
{
    uint8_t codes[BLOCK];
    int16_t lin[BLOCK];
    size_t n;
    while ((n = fread(codes, 1, BLOCK, io->in)) > 0) {
        dec(lin, codes, n);
        if (write_s16(io, lin, n) != 0)
            return 1;
    }
    if (ferror(io->in)) {
        fprintf(stderr, "%s: reading %s: %s\n", prog, io->in_name,
                strerror(errno));
        return 1;
    }
    return 0;
}

/* Writes resampler output, dropping the first *skip samples (the delay) and
 * anything that would take *written beyond `limit` (the expected length). */
static int emit(io_t *io, const int16_t *y, size_t n, size_t *skip,
                unsigned long long *written, unsigned long long limit)
{
    size_t s = *skip < n ? *skip : n;
    *skip -= s;
    y += s;
    n -= s;
    if (n > limit - *written)
        n = (size_t)(limit - *written);
    *written += n;
    return write_s16(io, y, n);
}

static int resample(io_t *io, const vb_resampler_config_t *cfg)
{
    vb_resampler_t *r = NULL;
    int rc = vb_resampler_create(&r, cfg);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot create resampler: %s\n", prog,
                vb_strerror(rc));
        return 1;
    }
    size_t cap = vb_resampler_max_out(r, BLOCK);
    int16_t *y = malloc(cap * sizeof(*y));
    if (y == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        vb_resampler_destroy(r);
        return 1;
    }
    int16_t x[BLOCK];
    /* Dropping the first `delay` outputs aligns the output with the input
     * when the delay is a whole number of samples. When it is not (speexdsp
     * at 44.1k -> 8k: 40.635), first feed the fewest zeros that make it
     * whole; there always are some below in / gcd(in, out). */
    double d = vb_resampler_delay(r);
    double ratio = (double)cfg->out_rate / cfg->in_rate;
    size_t lead = 0;
    while (fabs(d + lead * ratio - nearbyint(d + lead * ratio)) > 1e-6 &&
           lead < VB_RESAMPLER_RATE_MAX)
        lead++;
    if (lead == VB_RESAMPLER_RATE_MAX)
        lead = 0; /* unreachable; keep the sub-sample offset then */
    d += lead * ratio;
    size_t skip = d > 0 ? (size_t)llround(d) : 0;
    /* The lead zeros' output is the start of what `skip` drops. */
    for (size_t left = lead; left > 0 && rc == 0;) {
        size_t blk = left < BLOCK ? left : BLOCK, got = 0;
        rc = vb_resampler_process(r, NULL, blk, y, cap, &got);
        skip -= got < skip ? got : skip;
        left -= blk;
    }
    unsigned long long n_in = 0, written = 0;
    long n = 0;
    int status = 0;
    while (rc == 0 && (n = read_s16(io, x, BLOCK)) > 0) {
        size_t got;
        n_in += (unsigned long long)n;
        rc = vb_resampler_process(r, x, (size_t)n, y, cap, &got);
        if (rc != 0 || emit(io, y, got, &skip, &written, ULLONG_MAX) != 0) {
            status = 1;
            break;
        }
    }
    if (n < 0)
        status = 1;
    /* The expected length, rounded. The last `delay` samples are still in
     * the filter: push them out with zeros (every block of zeros yields
     * output, so this ends) and cut at the expected length. */
    unsigned long long want =
        (n_in * cfg->out_rate + cfg->in_rate / 2) / cfg->in_rate;
    while (status == 0 && rc == 0 && written < want) {
        size_t got;
        rc = vb_resampler_process(r, NULL, BLOCK, y, cap, &got);
        if (rc == 0 && emit(io, y, got, &skip, &written, want) != 0)
            status = 1;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: resampling failed: %s\n", prog, vb_strerror(rc));
        status = 1;
    }
    free(y);
    vb_resampler_destroy(r);
    return status;
}

static int parse_rate(const char *opt, const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' ||
        v < VB_RESAMPLER_RATE_MIN || v > VB_RESAMPLER_RATE_MAX) {
        fprintf(stderr, "%s: %s '%s': expected a sample rate in Hz, %u..%u\n",
                prog, opt, s, VB_RESAMPLER_RATE_MIN, VB_RESAMPLER_RATE_MAX);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_quality(const char *s, int *out)
{
    static const char *const names[] = {"best", "medium", "fastest", "zoh",
                                        "linear"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 1; /* a libsamplerate name */
        }
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < -1 || v > 10)
        return -1;
    *out = (int)v;
    return 0;
}

static int cmd_resample(int argc, char **argv)
{
    vb_resampler_config_t cfg = {
        .backend = VB_RESAMPLER_SPEEXDSP,
        .quality = VB_RESAMPLER_QUALITY_DEFAULT,
    };
    const char *pos[2];
    int npos = 0, named_quality = 0;
    const char *quality_arg = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        char name[32];
        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            if (len >= sizeof(name))
                return usage_error("unknown option '%s'", a);
            memcpy(name, a, len);
            name[len] = '\0';
            if (strcmp(name, "--from") != 0 && strcmp(name, "--to") != 0 &&
                strcmp(name, "--backend") != 0 &&
                strcmp(name, "--quality") != 0)
                return usage_error("unknown option '%s'", a);
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                return usage_error("option '%s' needs a value", name);
            }
            if (strcmp(name, "--from") == 0) {
                if (parse_rate(name, val, &cfg.in_rate) != 0)
                    return EXIT_USAGE;
            } else if (strcmp(name, "--to") == 0) {
                if (parse_rate(name, val, &cfg.out_rate) != 0)
                    return EXIT_USAGE;
            } else if (strcmp(name, "--backend") == 0) {
                if (vb_resampler_backend_parse(val, &cfg.backend) != 0)
                    return usage_error("--backend '%s': expected speexdsp or "
                                       "libsamplerate",
                                       val);
            } else {
                quality_arg = val;
            }
        } else {
            if (npos == 2)
                return usage_error("unexpected argument '%s'", a);
            pos[npos++] = a;
        }
    }
    if (cfg.in_rate == 0)
        return usage_error("resample needs --from HZ");
    if (cfg.out_rate == 0)
        return usage_error("resample needs --to HZ");
    if (npos != 2)
        return usage_error("resample needs IN and OUT files");
    if (quality_arg) {
        named_quality = parse_quality(quality_arg, &cfg.quality);
        if (named_quality < 0)
            return usage_error("--quality '%s': expected an integer -1..10 "
                               "(or best|medium|fastest|zoh|linear)",
                               quality_arg);
        if (named_quality && cfg.backend != VB_RESAMPLER_LIBSAMPLERATE)
            return usage_error("--quality '%s' names a libsamplerate "
                               "converter; add --backend libsamplerate",
                               quality_arg);
    }
    const char *why = NULL;
    if (vb_resampler_config_check(&cfg, &why) != 0) {
        fprintf(stderr, "%s: %s\n", prog, why);
        return EXIT_USAGE;
    }
    io_t io;
    if (open_io(&io, pos[0], pos[1]) != 0)
        return 1;
    return close_io(&io, resample(&io, &cfg));
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "resample") == 0)
        return cmd_resample(argc - 2, argv + 2);

    int law; /* 0 μ, 1 A */
    int enc;
    if (strcmp(cmd, "ulaw-encode") == 0) {
        law = 0, enc = 1;
    } else if (strcmp(cmd, "ulaw-decode") == 0) {
        law = 0, enc = 0;
    } else if (strcmp(cmd, "alaw-encode") == 0) {
        law = 1, enc = 1;
    } else if (strcmp(cmd, "alaw-decode") == 0) {
        law = 1, enc = 0;
    } else {
        return usage_error("unknown command '%s'", cmd);
    }
    if (argc != 4)
        return usage_error("%s needs exactly IN and OUT", cmd);
    io_t io;
    if (open_io(&io, argv[2], argv[3]) != 0)
        return 1;
    int status;
    if (enc)
        status = encode(&io, law ? vb_g711_alaw_encode : vb_g711_ulaw_encode);
    else
        status = decode(&io, law ? vb_g711_alaw_decode : vb_g711_ulaw_decode);
    return close_io(&io, status);
}
