/* SPDX-License-Identifier: MIT */
/*
 * Settings loader: one descriptor per row of VB_CONFIG_MAP (config.h), each
 * value parsed and checked by its type, applied in the order defaults,
 * environment, flags. Errors name the flag and the variable.
 */
#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

typedef enum { T_STR, T_SECRET, T_ENUM, T_INT, T_BOOL, T_DBL } setting_type_t;

typedef struct setting {
    const char *name;
    setting_type_t type;
    const char *env;
    const char *def;
    double lo, hi;
    const char *choices;
    const char *help;
    size_t off;
} setting_t;

static const setting_t settings[] = {
#define VB__CFG_DESC(field, type, env_, def_, lo_, hi_, choices_, help_) \
    {#field,   T_##type, env_,                                           \
     def_,     lo_,      hi_,                                            \
     choices_, help_,    offsetof(vb_config_t, field)},
    VB_CONFIG_MAP(VB__CFG_DESC)
#undef VB__CFG_DESC
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static void flag_of(const setting_t *s, char *out, size_t n)
{
    snprintf(out, n, "--%s", s->name);
    for (char *p = out + 2; *p; p++)
        if (*p == '_')
            *p = '-';
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return VB_EINVAL;
}

/* Parses `v` into the field of `s`; `from` says where it came from, for the
 * message. */
static int apply(vb_config_t *c, const setting_t *s, const char *v,
                 const char *from, char *err, size_t errsz)
{
    char flag[64];
    flag_of(s, flag, sizeof(flag));
    void *field = (char *)c + s->off;
    const char *why = NULL;
    char whybuf[160];
    switch (s->type) {
    case T_ENUM:
        if (!choice_ok(s->choices, v)) {
            snprintf(whybuf, sizeof(whybuf), "must be one of %s", s->choices);
            why = whybuf;
            break;
        }
        /* fall through */
    case T_STR:
    case T_SECRET: {
        char *dup = strdup(v);
        if (dup == NULL) {
            snprintf(err, errsz, "out of memory");
            return VB_ENOMEM;
        }
        free(*(char **)field);
        *(char **)field = dup;
        break;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno != 0)
            why = "is not an integer";
        else if ((double)x < s->lo || (double)x > s->hi) {
            snprintf(whybuf, sizeof(whybuf), "must be between %.0f and %.0f",
                     s->lo, s->hi);
            why = whybuf;
        } else
            *(int64_t *)field = x;
        break;
    }
    case T_DBL: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (*v == '\0' || *end != '\0' || errno != 0 || !isfinite(x))
            why = "is not a number";
        else if (x < s->lo || x > s->hi) {
            snprintf(whybuf, sizeof(whybuf), "must be between %g and %g", s->lo,
                     s->hi);
            why = whybuf;
        } else
            *(double *)field = x;
        break;
    }
    case T_BOOL:
        if (parse_bool(v, (bool *)field) != 0)
            why = "must be true or false";
        break;
    }
    if (why == NULL)
        return 0;
    /* Never echo a secret's value back, even a malformed one. */
    if (s->type == T_SECRET)
        snprintf(err, errsz, "invalid %s (%s, from %s): %s", flag, s->env, from,
                 why);
    else
        snprintf(err, errsz, "invalid %s (%s, from %s) \"%s\": %s", flag,
                 s->env, from, v, why);
    return VB_ECONFIG;
}

static const setting_t *find_flag(const char *arg, size_t len)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        char flag[64];
        flag_of(&settings[i], flag, sizeof(flag));
        if (strlen(flag) == len && strncmp(flag, arg, len) == 0)
            return &settings[i];
    }
    return NULL;
}

int vb_config_split_hostport(const char *s, char *host, size_t hostsz,
                             int *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (colon == NULL || colon == s)
        return VB_EINVAL;
    const char *h = s, *he = colon;
    if (*h == '[') { /* [v6]:port */
        if (he[-1] != ']')
            return VB_EINVAL;
        h++;
        he--;
    }
    size_t hl = (size_t)(he - h);
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (hl == 0 || hl >= hostsz || colon[1] == '\0' || *end != '\0' || errno ||
        p < 0 || p > 65535)
        return VB_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* Checks that go beyond one value's type. */
static int validate(const vb_config_t *c, char *err, size_t errsz)
{
    char host[256];
    int port;
    if (vb_config_split_hostport(c->listen, host, sizeof(host), &port) != 0) {
        snprintf(err, errsz,
                 "invalid --listen (VOXBRIDGE_LISTEN) \"%s\": must be "
                 "HOST:PORT",
                 c->listen);
        return VB_ECONFIG;
    }
    if (*c->metrics_listen && vb_config_split_hostport(c->metrics_listen, host,
                                                       sizeof(host), &port)) {
        snprintf(err, errsz,
                 "invalid --metrics-listen (VOXBRIDGE_METRICS_LISTEN) \"%s\": "
                 "must be HOST:PORT",
                 c->metrics_listen);
        return VB_ECONFIG;
    }
    if (c->record_queue != 0 &&
        (c->record_queue < 64 || (c->record_queue & (c->record_queue - 1)))) {
        snprintf(err, errsz,
                 "invalid --record-queue (VOXBRIDGE_RECORD_QUEUE) %lld: must "
                 "be 0 or a power of two >= 64",
                 (long long)c->record_queue);
        return VB_ECONFIG;
    }
    if (*c->public_url && !has_prefix(c->public_url, "https://") &&
        !has_prefix(c->public_url, "http://")) {
        snprintf(err, errsz,
                 "invalid --public-url (VOXBRIDGE_PUBLIC_URL) \"%s\": must "
                 "start with https:// (or http://)",
                 c->public_url);
        return VB_ECONFIG;
    }
    const char *paths[][2] = {{"--webhook-path", c->webhook_path},
                              {"--status-path", c->status_path},
                              {"--stream-path", c->stream_path}};
    for (size_t i = 0; i < 3; i++)
        if (paths[i][1][0] != '/') {
            snprintf(err, errsz, "invalid %s \"%s\": must start with /",
                     paths[i][0], paths[i][1]);
            return VB_ECONFIG;
        }
    if (!has_prefix(c->gemini_url, "wss://") &&
        !has_prefix(c->gemini_url, "ws://")) {
        snprintf(err, errsz,
                 "invalid --gemini-url (VOXBRIDGE_GEMINI_URL) \"%s\": must "
                 "start with wss:// (or ws:// for a local fake)",
                 c->gemini_url);
        return VB_ECONFIG;
    }
    if (!has_prefix(c->twilio_api_url, "https://") &&
        !has_prefix(c->twilio_api_url, "http://")) {
        snprintf(err, errsz,
                 "invalid --twilio-api-url (VOXBRIDGE_TWILIO_API_URL) \"%s\": "
                 "must start with https://",
                 c->twilio_api_url);
        return VB_ECONFIG;
    }
    if (*c->assistant_url && *c->webhook_secret == '\0') {
        snprintf(err, errsz,
                 "--assistant-url needs --webhook-secret "
                 "(VOXBRIDGE_WEBHOOK_SECRET): assistant requests are signed");
        return VB_ECONFIG;
    }
    if (*c->events_url) {
        if (!has_prefix(c->events_url, "https://") &&
            !has_prefix(c->events_url, "http://")) {
            snprintf(err, errsz,
                     "invalid --events-url (VOXBRIDGE_EVENTS_URL) \"%s\": "
                     "must start with https:// (or http://)",
                     c->events_url);
            return VB_ECONFIG;
        }
        if (*c->events_spool == '\0') {
            snprintf(err, errsz,
                     "--events-url needs --events-spool "
                     "(VOXBRIDGE_EVENTS_SPOOL): the directory where reports "
                     "wait for delivery");
            return VB_ECONFIG;
        }
        if (*c->webhook_secret == '\0') {
            snprintf(err, errsz,
                     "--events-url needs --webhook-secret "
                     "(VOXBRIDGE_WEBHOOK_SECRET): reports are signed");
            return VB_ECONFIG;
        }
    }
    return 0;
}

int vb_config_load(vb_config_t *c, int argc, const char *const *argv, char *err,
                   size_t errsz)
{
    int rc;
    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    for (size_t i = 0; i < NSETTINGS; i++)
        if ((rc = apply(c, &settings[i], settings[i].def, "default", err,
                        errsz)) != 0)
            return rc;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v != NULL &&
            (rc = apply(c, &settings[i], v, "environment", err, errsz)) != 0)
            return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errsz, "unexpected argument \"%s\" (see --help)",
                     arg);
            return VB_ECONFIG;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const setting_t *s = find_flag(arg, len);
        const char *v = eq ? eq + 1 : NULL;
        if (s == NULL && eq == NULL && strncmp(arg, "--no-", 5) == 0) {
            char pos[64];
            snprintf(pos, sizeof(pos), "--%s", arg + 5);
            s = find_flag(pos, strlen(pos));
            if (s != NULL && s->type == T_BOOL)
                v = "false";
            else
                s = NULL;
        }
        if (s == NULL) {
            snprintf(err, errsz, "unknown option \"%.*s\" (see --help)",
                     (int)len, arg);
            return VB_ECONFIG;
        }
        if (v == NULL && s->type == T_BOOL)
            v = "true";
        if (v == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, errsz, "option %s needs a value (see --help)",
                         arg);
                return VB_ECONFIG;
            }
            v = argv[++i];
        }
        if ((rc = apply(c, s, v, "command line", err, errsz)) != 0)
            return rc;
    }
    return validate(c, err, errsz);
}

void vb_config_free(vb_config_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < NSETTINGS; i++) {
        setting_type_t t = settings[i].type;
        if (t == T_STR || t == T_SECRET || t == T_ENUM) {
            char **p = (char **)((char *)c + settings[i].off);
            free(*p);
            *p = NULL;
        }
    }
}

void vb_config_usage(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s [options]\n\n"
            "Every option can also be set by its environment variable; flags "
            "win over the\nenvironment, which wins over the default.\n"
            "--version prints the version and commit; --help this text.\n\n",
            prog);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting_t *s = &settings[i];
        char flag[64];
        flag_of(s, flag, sizeof(flag));
        const char *arg = s->type == T_BOOL  ? ""
                          : s->type == T_INT ? " N"
                          : s->type == T_DBL ? " X"
                                             : " VALUE";
        fprintf(out, "  %s%s  (env %s)\n      %s", flag, arg, s->env, s->help);
        if (s->type == T_ENUM)
            fprintf(out, "; one of %s", s->choices);
        if (s->type == T_SECRET)
            fprintf(out, "; secret, never printed");
        else if (*s->def)
            fprintf(out, "; default: %s", s->def);
        else
            fprintf(out, "; default: (empty)");
        fputc('\n', out);
    }
}

void vb_config_dump(FILE *out, const vb_config_t *c)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting_t *s = &settings[i];
        const void *field = (const char *)c + s->off;
        switch (s->type) {
        case T_SECRET:
            fprintf(out, "%s=%s\n", s->name,
                    *(char *const *)field && **(char *const *)field
                        ? "(set)"
                        : "(unset)");
            break;
        case T_STR:
        case T_ENUM:
            fprintf(out, "%s=%s\n", s->name,
                    *(char *const *)field ? *(char *const *)field : "");
            break;
        case T_INT:
            fprintf(out, "%s=%lld\n", s->name,
                    (long long)*(const int64_t *)field);
            break;
        case T_BOOL:
            fprintf(out, "%s=%s\n", s->name,
                    *(const bool *)field ? "true" : "false");
            break;
        case T_DBL:
            fprintf(out, "%s=%g\n", s->name, *(const double *)field);
            break;
        }
    }
}
