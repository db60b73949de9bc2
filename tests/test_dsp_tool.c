/* SPDX-License-Identifier: MIT */
/*
 * The vb-dsp file tool, run as a program on small generated files: G.711
 * round trips agree with the library for every input, `resample` gives
 * round(n * to / from) samples aligned with the input, stdin/stdout work,
 * and bad usage fails with a clear message and a non-zero status.
 * The binary is $VB_BUILD_DIR/vb-dsp (tests/run.sh sets VB_BUILD_DIR).
 */
#include <sys/wait.h>

#include "dsp/g711.h"
#include "tests/g711_sample.h"
#include "tests/test.h"
#include "tests/test_dsp_signal.h"

static char tool[PATH_MAX];

static const char *tool_path(void)
{
    if (tool[0] == '\0') {
        const char *dir = getenv("VB_BUILD_DIR");
        if (dir != NULL && dir[0] != '\0') {
            snprintf(tool, sizeof(tool), "%s/vb-dsp", dir);
        } else {
            /* build/tests/test_dsp_tool -> build/vb-dsp */
            char exe[PATH_MAX - 16];
            ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
            ASSERT_GT(n, 0);
            exe[n] = '\0';
            *strrchr(exe, '/') = '\0';
            *strrchr(exe, '/') = '\0';
            snprintf(tool, sizeof(tool), "%s/vb-dsp", exe);
        }
        if (access(tool, X_OK) != 0)
            vb_test_fail(__FILE__, __LINE__, "%s not built (make %s)", tool,
                         tool);
    }
    return tool;
}

/* The path of `name` in the case's scratch directory. The same name gives
 * the same stable pointer for the life of the case. */
static const char *tmp(const char *name)
{
    static struct {
        char name[64];
        char path[PATH_MAX];
    } paths[32];
    static int used;
    for (int i = 0; i < used; i++)
        if (strcmp(paths[i].name, name) == 0)
            return paths[i].path;
    ASSERT_LT(used, 32);
    snprintf(paths[used].name, sizeof(paths[used].name), "%s", name);
    snprintf(paths[used].path, PATH_MAX, "%s/%s", vb_test_tmpdir(), name);
    return paths[used++].path;
}

/* Removes the case's scratch files (called at the end of each case). */
static void cleanup(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", vb_test_tmpdir());
    ASSERT_EQ(system(cmd), 0);
}

/* Runs `vb-dsp ARGS` through the shell; stderr goes to *err (static
 * buffer, may be NULL). Returns the exit status, -1 if it did not exit. */
static int run(const char *args, const char **err)
{
    static char text[4096];
    char cmd[3 * PATH_MAX];
    const char *errf = tmp("stderr.txt");
    snprintf(cmd, sizeof(cmd), "'%s' %s 2>'%s'", tool_path(), args, errf);
    int st = system(cmd);
    FILE *f = fopen(errf, "r");
    ASSERT_NOT_NULL(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    if (err)
        *err = text;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fwrite(data, 1, n, f), n);
    ASSERT_EQ(fclose(f), 0);
}

/* Reads a whole file (malloc'd); its size in *n. */
static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ASSERT_NOT_NULL(f);
    ASSERT_EQ(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    ASSERT_GE(len, 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)len + 1);
    ASSERT_NOT_NULL(buf);
    ASSERT_EQ(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* s16le file of `n` samples (portable: bytes written explicitly). */
static void write_s16(const char *path, const int16_t *x, size_t n)
{
    uint8_t *b = malloc(2 * n + 1);
    ASSERT_NOT_NULL(b);
    for (size_t i = 0; i < n; i++) {
        b[2 * i] = (uint8_t)((uint16_t)x[i] & 0xFF);
        b[2 * i + 1] = (uint8_t)((uint16_t)x[i] >> 8);
    }
    write_file(path, b, 2 * n);
    free(b);
}

static int16_t *read_s16(const char *path, size_t *n)
{
    size_t bytes;
    uint8_t *b = read_file(path, &bytes);
    ASSERT_EQ(bytes % 2, 0);
    int16_t *x = malloc(bytes + 2);
    ASSERT_NOT_NULL(x);
    for (size_t i = 0; i < bytes / 2; i++)
        x[i] = (int16_t)(uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
    free(b);
    *n = bytes / 2;
    return x;
}

static void g711_round_trip(const char *law, int alaw)
{
    static int16_t all[65536];
    for (int i = 0; i < 65536; i++)
        all[i] = (int16_t)(i - 32768);
    const char *lin = tmp("all.s16"), *codes = tmp("all.g711"),
               *back = tmp("back.s16");
    write_s16(lin, all, 65536);
    char args[4 * PATH_MAX];
    snprintf(args, sizeof(args), "%s-encode '%s' '%s'", law, lin, codes);
    ASSERT_EQ(run(args, NULL), 0);
    snprintf(args, sizeof(args), "%s-decode '%s' '%s'", law, codes, back);
    ASSERT_EQ(run(args, NULL), 0);

    size_t nc, nb;
    uint8_t *c = read_file(codes, &nc);
    int16_t *y = read_s16(back, &nb);
    ASSERT_EQ(nc, 65536);
    ASSERT_EQ(nb, 65536);
    for (int i = 0; i < 65536; i++) {
        uint8_t want = alaw ? alaw_encode1(all[i]) : ulaw_encode1(all[i]);
        ASSERT_EQ(c[i], want);
        int16_t dec = alaw ? alaw_decode1(want) : ulaw_decode1(want);
        ASSERT_EQ(y[i], dec);
        /* The round trip is G.711's quantizer: error within half the
         * largest step (1024 μ-law, 1024 A-law) plus the clipping at the
         * top level. */
        ASSERT_LE(abs(y[i] - all[i]), 1024);
    }
    free(c);
    free(y);
}

TEST(ulaw_round_trip_all_values)
{
    g711_round_trip("ulaw", 0);
    cleanup();
}

TEST(alaw_round_trip_all_values)
{
    g711_round_trip("alaw", 1);
    cleanup();
}

TEST(stdin_and_stdout)
{
    int16_t x[500];
    for (int i = 0; i < 500; i++)
        x[i] = (int16_t)(i * 97 - 20000);
    const char *in = tmp("in.s16"), *out = tmp("out.ul");
    write_s16(in, x, 500);
    char args[4 * PATH_MAX];
    snprintf(args, sizeof(args), "ulaw-encode - - <'%s' >'%s'", in, out);
    ASSERT_EQ(run(args, NULL), 0);
    size_t n;
    uint8_t *c = read_file(out, &n);
    ASSERT_EQ(n, 500);
    for (int i = 0; i < 500; i++)
        ASSERT_EQ(c[i], ulaw_encode1(x[i]));
    free(c);
    cleanup();
}

/* Resamples a 1 kHz tone of n_in samples; checks the length and that the
 * output is the same tone, in phase (the tool compensates the delay), away
 * from the ends. */
static void resample_tone(unsigned from, unsigned to, size_t n_in,
                          const char *extra)
{
    int16_t *x = sig_tone(1000, SIG_AMP, from, n_in);
    const char *in = tmp("tone.s16"), *out = tmp("tone_out.s16");
    write_s16(in, x, n_in);
    char args[4 * PATH_MAX];
    snprintf(args, sizeof(args), "resample --from %u --to %u %s '%s' '%s'",
             from, to, extra, in, out);
    const char *err;
    int st = run(args, &err);
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "vb-dsp %s: status %d: %s", args, st,
                     err);
    size_t ny;
    int16_t *y = read_s16(out, &ny);
    size_t want = (size_t)(((uint64_t)n_in * to + from / 2) / from);
    if (ny != want)
        vb_test_fail(__FILE__, __LINE__, "%u->%u %s: %zu samples, want %zu",
                     from, to, extra, ny, want);
    double worst = 0;
    for (size_t i = to / 10; i < ny - to / 10; i++) {
        double ideal = SIG_AMP * sin(2 * M_PI * 1000 * (double)i / to);
        worst = fmax(worst, fabs(y[i] - ideal));
    }
    /* In phase to well under a sample: a 1/10-sample slip at 8 kHz would
     * already be ~1300. */
    if (worst > 40)
        vb_test_fail(__FILE__, __LINE__, "%u->%u %s: off by up to %.1f", from,
                     to, extra, worst);
    free(x);
    free(y);
}

TEST(resample_lengths_and_alignment)
{
    resample_tone(8000, 16000, 8001, "");
    resample_tone(24000, 8000, 24001, "");
    resample_tone(24000, 8000, 24002, "--backend speexdsp --quality 3");
    resample_tone(44100, 8000, 44100, "");
    resample_tone(8000, 16000, 8001, "--backend libsamplerate");
    resample_tone(24000, 8000, 24001, "--backend=libsamplerate --quality=0");
    resample_tone(24000, 8000, 24001, "--backend libsamplerate --quality 2");
    resample_tone(8000, 44100, 8000, "--backend libsamplerate --quality best");
    cleanup();
}

TEST(resample_empty_input)
{
    const char *in = tmp("empty.s16"), *out = tmp("empty_out.s16");
    write_file(in, "", 0);
    char args[4 * PATH_MAX];
    snprintf(args, sizeof(args), "resample --from 8000 --to 16000 '%s' '%s'",
             in, out);
    ASSERT_EQ(run(args, NULL), 0);
    size_t n;
    free(read_file(out, &n));
    ASSERT_EQ(n, 0);
    cleanup();
}

/* Copies `tmpl` to dst with @IN and @OUT replaced by quoted paths. */
static void subst(char *dst, size_t cap, const char *tmpl, const char *in,
                  const char *out)
{
    size_t n = 0;
    while (*tmpl && n + 1 < cap) {
        const char *rep = NULL;
        if (strncmp(tmpl, "@IN", 3) == 0) {
            rep = in;
            tmpl += 3;
        } else if (strncmp(tmpl, "@OUT", 4) == 0) {
            rep = out;
            tmpl += 4;
        }
        if (rep) {
            int w = snprintf(dst + n, cap - n, "'%s'", rep);
            ASSERT_GT(w, 0);
            n += (size_t)w;
            ASSERT_LT(n, cap);
        } else {
            dst[n++] = *tmpl++;
        }
    }
    dst[n] = '\0';
}

TEST(bad_usage_fails_clearly)
{
    const char *in = tmp("x.s16"), *odd = tmp("odd.s16"), *out = tmp("out.bin");
    int16_t x[4] = {1, 2, 3, 4};
    write_s16(in, x, 4);
    write_file(odd, "abc", 3);
    static const struct {
        const char *args;
        int status;
        const char *says;
    } cases[] = {
        {"", 2, "missing command"},
        {"frobnicate @IN @OUT", 2, "unknown command 'frobnicate'"},
        {"ulaw-encode @IN", 2, "needs exactly IN and OUT"},
        {"resample --to 8000 @IN @OUT", 2, "needs --from"},
        {"resample --from 8000 @IN @OUT", 2, "needs --to"},
        {"resample --from 8000 --to 16000 @IN", 2, "needs IN and OUT"},
        {"resample --from 8k --to 16000 @IN @OUT", 2, "--from '8k'"},
        {"resample --from 8000 --to 999 @IN @OUT", 2, "1000..384000"},
        {"resample --from 8000 --to 16000 --backend soxr @IN @OUT", 2,
         "speexdsp or libsamplerate"},
        {"resample --from 8000 --to 16000 --quality 11 @IN @OUT", 2,
         "--quality '11'"},
        {"resample --from 8000 --to 16000 --quality linear @IN @OUT", 2,
         "add --backend libsamplerate"},
        {"resample --from 24000 --to 8000 --backend libsamplerate "
         "--quality linear @IN @OUT",
         2, "cannot downsample"},
        {"resample --from 8000 --to 16000 --backend libsamplerate "
         "--quality 7 @IN @OUT",
         2, "libsamplerate quality must be"},
        {"resample --from 1000 --to 384000 @IN @OUT", 2, "beyond 1:256"},
        {"resample --from 8000 --to 16000 --bogus 1 @IN @OUT", 2,
         "unknown option '--bogus'"},
        {"resample --from 8000 --to 16000 @IN @OUT extra", 2,
         "unexpected argument 'extra'"},
        {"resample --from 8000 --to 16000 --quality", 2,
         "'--quality' needs a value"},
        {"ulaw-encode /nonexistent/in.s16 @OUT", 1, "cannot open"},
        {"ulaw-encode @IN /nonexistent/dir/out", 1, "cannot create"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char args[4 * PATH_MAX];
        subst(args, sizeof(args), cases[i].args, in, out);
        const char *err;
        int st = run(args, &err);
        if (st != cases[i].status || strstr(err, cases[i].says) == NULL)
            vb_test_fail(__FILE__, __LINE__,
                         "vb-dsp %s: status %d (want %d), stderr \"%s\" "
                         "(want \"%s\")",
                         args, st, cases[i].status, err, cases[i].says);
        ASSERT_STR_CONTAINS(err, "vb-dsp: ");
    }
    /* An odd number of bytes is not s16 audio. */
    char args[4 * PATH_MAX];
    const char *err;
    subst(args, sizeof(args), "ulaw-encode @IN @OUT", odd, out);
    ASSERT_EQ(run(args, &err), 1);
    ASSERT_STR_CONTAINS(err, "odd number of bytes");
    subst(args, sizeof(args), "resample --from 8000 --to 16000 @IN @OUT", odd,
          out);
    ASSERT_EQ(run(args, &err), 1);
    ASSERT_STR_CONTAINS(err, "odd number of bytes");
    cleanup();
}

TEST(help_goes_to_stdout_and_succeeds)
{
    char args[2 * PATH_MAX];
    const char *out = tmp("help.txt");
    snprintf(args, sizeof(args), "--help >'%s'", out);
    const char *err;
    ASSERT_EQ(run(args, &err), 0);
    ASSERT_STR_EQ(err, "");
    size_t n;
    char *text = (char *)read_file(out, &n);
    text[n] = '\0';
    ASSERT_STR_CONTAINS(text, "vb-dsp resample --from HZ --to HZ");
    ASSERT_STR_CONTAINS(text, "ulaw-encode");
    free(text);
    cleanup();
}
