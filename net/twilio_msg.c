/* SPDX-License-Identifier: MIT */
/*
 * Twilio Media Streams message parser (see net/twilio_msg.h).
 *
 * A recursive-descent JSON reader walks the text once. Every value is
 * reported to assign() with the path of keys that leads to it (the first
 * three levels are kept, which covers every field Twilio defines) and its
 * JSON type; assign() stores the fields it knows and notes type mismatches.
 * Strings are unescaped in place: an unescaped string is never longer than
 * its escaped form, so the bytes can be written back over the text already
 * read, and the NUL that terminates it lands on the closing quote or on an
 * escape remnant.
 */
#include "net/twilio_msg.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "net/form.h"

#define JP_PATH 3

typedef enum { JT_STRING, JT_NUMBER, JT_OBJECT, JT_ARRAY, JT_LITERAL } jt_t;

typedef struct jp {
    char *p, *end;
    int depth;
    vb_twilio_msg_t *m;
    const char *path[JP_PATH];
    int plen;        /* keys in path (may exceed JP_PATH: deeper levels) */
    bool in_array;   /* the current value is an array element */
    const char *bad; /* first field with a wrong type */
    bool params_overflow;
} jp_t;

static void ws_skip(jp_t *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool read_hex4(const char *p, const char *end, uint32_t *out)
{
    if (end - p < 4)
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = vb_hexval(p[i]);
        if (h < 0)
            return false;
        v = (v << 4) | (uint32_t)h;
    }
    *out = v;
    return true;
}

/* Parses a string at j->p (which is '"'), unescaping in place. */
static bool jp_string(jp_t *j, vb_twilio_str_t *out)
{
    char *r = j->p + 1, *w = r, *start = r;
    while (r < j->end) {
        unsigned char c = (unsigned char)*r;
        if (c == '"') {
            out->p = start;
            out->len = (size_t)(w - start);
            *w = '\0'; /* w <= r: the quote or earlier */
            j->p = r + 1;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c != '\\') {
            *w++ = (char)c;
            r++;
            continue;
        }
        if (j->end - r < 2)
            return false;
        char e = r[1];
        r += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            *w++ = e;
            break;
        case 'b':
            *w++ = '\b';
            break;
        case 'f':
            *w++ = '\f';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'r':
            *w++ = '\r';
            break;
        case 't':
            *w++ = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (!read_hex4(r, j->end, &cp))
                return false;
            r += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (j->end - r < 6 || r[0] != '\\' || r[1] != 'u' ||
                    !read_hex4(r + 2, j->end, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    return false;
                r += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return false;
            }
            /* \uXXXX is 6 bytes and encodes to at most 3; a surrogate
             * pair is 12 bytes and encodes to 4: w stays behind r. */
            if (cp < 0x80) {
                *w++ = (char)cp;
            } else if (cp < 0x800) {
                *w++ = (char)(0xC0 | (cp >> 6));
                *w++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *w++ = (char)(0xE0 | (cp >> 12));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *w++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *w++ = (char)(0xF0 | (cp >> 18));
                *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *w++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            return false;
        }
    }
    return false;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Validates a JSON number at j->p and returns its value. */
static bool jp_number(jp_t *j, double *out)
{
    char *s = j->p, *p = s;
    if (p < j->end && *p == '-')
        p++;
    if (p >= j->end)
        return false;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < j->end && is_digit(*p))
            p++;
    } else {
        return false;
    }
    if (p < j->end && *p == '.') {
        p++;
        if (p >= j->end || !is_digit(*p))
            return false;
        while (p < j->end && is_digit(*p))
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || !is_digit(*p))
            return false;
        while (p < j->end && is_digit(*p))
            p++;
    }
    /* The buffer ends in a NUL (see vb_twilio_msg_parse), so strtod stops
     * inside it; the grammar check above already fixed the extent. */
    char save = *p;
    *p = '\0';
    *out = strtod(s, NULL);
    *p = save;
    j->p = p;
    return true;
}

static void mark_bad(jp_t *j, const char *field)
{
    if (j->bad == NULL)
        j->bad = field;
}

/* Stores a string field; a non-string value at a known path is noted. */
static void want_str(jp_t *j, jt_t t, const vb_twilio_str_t *s,
                     vb_twilio_str_t *dst, const char *field)
{
    if (t != JT_STRING)
        mark_bad(j, field);
    else
        *dst = *s;
}

static void want_obj(jp_t *j, jt_t t, const char *field)
{
    if (t != JT_OBJECT)
        mark_bad(j, field);
}

/* Called for every value with the key path leading to it. */
static void assign(jp_t *j, jt_t t, const vb_twilio_str_t *s, double num)
{
    vb_twilio_msg_t *m = j->m;
    if (j->plen == 0 || j->plen > JP_PATH)
        return;
    const char *k0 = j->path[0];
    if (j->plen == 1) {
        if (j->in_array)
            return;
        if (strcmp(k0, "event") == 0)
            want_str(j, t, s, &m->event_name, "event");
        else if (strcmp(k0, "streamSid") == 0)
            want_str(j, t, s, &m->stream_sid, "streamSid");
        else if (strcmp(k0, "sequenceNumber") == 0)
            want_str(j, t, s, &m->sequence_number, "sequenceNumber");
        else if (strcmp(k0, "protocol") == 0)
            want_str(j, t, s, &m->connected.protocol, "protocol");
        else if (strcmp(k0, "version") == 0)
            want_str(j, t, s, &m->connected.version, "version");
        else if (strcmp(k0, "start") == 0)
            want_obj(j, t, "start");
        else if (strcmp(k0, "media") == 0)
            want_obj(j, t, "media");
        else if (strcmp(k0, "dtmf") == 0)
            want_obj(j, t, "dtmf");
        else if (strcmp(k0, "mark") == 0)
            want_obj(j, t, "mark");
        else if (strcmp(k0, "stop") == 0)
            want_obj(j, t, "stop");
        return;
    }
    const char *k1 = j->path[1];
    if (strcmp(k0, "start") == 0) {
        if (j->plen == 2 && strcmp(k1, "tracks") == 0) {
            if (!j->in_array) {
                if (t != JT_ARRAY)
                    mark_bad(j, "start.tracks");
            } else if (t != JT_STRING) {
                mark_bad(j, "start.tracks");
            } else if (strcmp(s->p, "inbound") == 0) {
                m->start.tracks |= VB_TWILIO_TRACK_INBOUND;
            } else if (strcmp(s->p, "outbound") == 0) {
                m->start.tracks |= VB_TWILIO_TRACK_OUTBOUND;
            } else {
                /* A track name added later is not a malformed start. */
                m->start.tracks |= VB_TWILIO_TRACK_OTHER;
            }
            return;
        }
        if (j->in_array)
            return;
        if (j->plen == 2) {
            if (strcmp(k1, "accountSid") == 0)
                want_str(j, t, s, &m->start.account_sid, "start.accountSid");
            else if (strcmp(k1, "callSid") == 0)
                want_str(j, t, s, &m->start.call_sid, "start.callSid");
            else if (strcmp(k1, "streamSid") == 0)
                want_str(j, t, s, &m->start.stream_sid, "start.streamSid");
            else if (strcmp(k1, "mediaFormat") == 0)
                want_obj(j, t, "start.mediaFormat");
            else if (strcmp(k1, "customParameters") == 0)
                want_obj(j, t, "start.customParameters");
            return;
        }
        const char *k2 = j->path[2];
        if (strcmp(k1, "mediaFormat") == 0) {
            if (strcmp(k2, "encoding") == 0) {
                want_str(j, t, s, &m->start.encoding,
                         "start.mediaFormat.encoding");
            } else if (strcmp(k2, "sampleRate") == 0) {
                if (t != JT_NUMBER)
                    mark_bad(j, "start.mediaFormat.sampleRate");
                else
                    m->start.sample_rate = num;
            } else if (strcmp(k2, "channels") == 0) {
                if (t != JT_NUMBER)
                    mark_bad(j, "start.mediaFormat.channels");
                else
                    m->start.channels = num;
            }
        } else if (strcmp(k1, "customParameters") == 0) {
            if (t != JT_STRING) {
                mark_bad(j, "start.customParameters");
            } else if (m->start.nparams == VB_TWILIO_MAX_PARAMS) {
                j->params_overflow = true;
            } else {
                size_t i = m->start.nparams++;
                m->start.param_name[i].p = k2;
                m->start.param_name[i].len = strlen(k2);
                m->start.param_value[i] = *s;
            }
        }
        return;
    }
    if (j->in_array || j->plen != 2)
        return;
    if (strcmp(k0, "media") == 0) {
        if (strcmp(k1, "track") == 0)
            want_str(j, t, s, &m->media.track, "media.track");
        else if (strcmp(k1, "chunk") == 0)
            want_str(j, t, s, &m->media.chunk, "media.chunk");
        else if (strcmp(k1, "timestamp") == 0)
            want_str(j, t, s, &m->media.timestamp, "media.timestamp");
        else if (strcmp(k1, "payload") == 0)
            want_str(j, t, s, &m->media.payload, "media.payload");
    } else if (strcmp(k0, "dtmf") == 0) {
        if (strcmp(k1, "track") == 0)
            want_str(j, t, s, &m->dtmf.track, "dtmf.track");
        else if (strcmp(k1, "digit") == 0)
            want_str(j, t, s, &m->dtmf.digit, "dtmf.digit");
    } else if (strcmp(k0, "mark") == 0) {
        if (strcmp(k1, "name") == 0)
            want_str(j, t, s, &m->mark.name, "mark.name");
    } else if (strcmp(k0, "stop") == 0) {
        if (strcmp(k1, "accountSid") == 0)
            want_str(j, t, s, &m->stop.account_sid, "stop.accountSid");
        else if (strcmp(k1, "callSid") == 0)
            want_str(j, t, s, &m->stop.call_sid, "stop.callSid");
    }
}

static bool jp_value(jp_t *j);

static bool jp_object(jp_t *j)
{
    j->p++; /* '{' */
    ws_skip(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return true;
    }
    for (;;) {
        ws_skip(j);
        if (j->p >= j->end || *j->p != '"')
            return false;
        vb_twilio_str_t key;
        if (!jp_string(j, &key))
            return false;
        ws_skip(j);
        if (j->p >= j->end || *j->p != ':')
            return false;
        j->p++;
        ws_skip(j);
        if (j->plen < JP_PATH)
            j->path[j->plen] = key.p;
        j->plen++;
        bool saved = j->in_array;
        j->in_array = false;
        bool ok = jp_value(j);
        j->in_array = saved;
        j->plen--;
        if (!ok)
            return false;
        ws_skip(j);
        if (j->p >= j->end)
            return false;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == '}') {
            j->p++;
            return true;
        }
        return false;
    }
}

static bool jp_array(jp_t *j)
{
    j->p++; /* '[' */
    ws_skip(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return true;
    }
    bool saved = j->in_array;
    for (;;) {
        ws_skip(j);
        j->in_array = true;
        bool ok = jp_value(j);
        j->in_array = saved;
        if (!ok)
            return false;
        ws_skip(j);
        if (j->p >= j->end)
            return false;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == ']') {
            j->p++;
            return true;
        }
        return false;
    }
}

static bool jp_literal(jp_t *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

static bool jp_value(jp_t *j)
{
    if (j->p >= j->end)
        return false;
    vb_twilio_str_t s = {0};
    double num = 0;
    bool ok;
    switch (*j->p) {
    case '{':
        if (++j->depth > VB_TWILIO_MAX_DEPTH)
            return false;
        assign(j, JT_OBJECT, NULL, 0);
        ok = jp_object(j);
        j->depth--;
        return ok;
    case '[':
        if (++j->depth > VB_TWILIO_MAX_DEPTH)
            return false;
        assign(j, JT_ARRAY, NULL, 0);
        ok = jp_array(j);
        j->depth--;
        return ok;
    case '"':
        if (!jp_string(j, &s))
            return false;
        assign(j, JT_STRING, &s, 0);
        return true;
    case 't':
        ok = jp_literal(j, "true");
        break;
    case 'f':
        ok = jp_literal(j, "false");
        break;
    case 'n':
        ok = jp_literal(j, "null");
        break;
    default:
        if (!jp_number(j, &num))
            return false;
        assign(j, JT_NUMBER, NULL, num);
        return true;
    }
    if (ok)
        assign(j, JT_LITERAL, NULL, 0);
    return ok;
}

/* A non-empty run of ASCII digits (at most 19) -> value. */
static bool digits(const vb_twilio_str_t *s, uint64_t *out)
{
    if (s->p == NULL || s->len == 0 || s->len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (!is_digit(s->p[i]))
            return false;
        v = v * 10 + (uint64_t)(s->p[i] - '0');
    }
    *out = v;
    return true;
}

static int fail(vb_twilio_msg_error_t *err, int rc, const char *reason,
                const char *field)
{
    if (err != NULL) {
        err->reason = reason;
        err->field = field;
    }
    return rc;
}

#define REQUIRE(str, name)                                      \
    do {                                                        \
        if ((str).p == NULL)                                    \
            return fail(err, VB_ENOENT, "missing_field", name); \
    } while (0)

static int check_event(vb_twilio_msg_t *m, vb_twilio_msg_error_t *err)
{
    switch (m->event) {
    case VB_TWILIO_EV_CONNECTED:
    case VB_TWILIO_EV_UNKNOWN:
        return 0;
    default:
        break;
    }
    REQUIRE(m->stream_sid, "streamSid");
    REQUIRE(m->sequence_number, "sequenceNumber");
    if (!digits(&m->sequence_number, &m->seq))
        return fail(err, VB_EINVAL, "invalid_field", "sequenceNumber");
    switch (m->event) {
    case VB_TWILIO_EV_START:
        REQUIRE(m->start.stream_sid, "start.streamSid");
        REQUIRE(m->start.call_sid, "start.callSid");
        REQUIRE(m->start.account_sid, "start.accountSid");
        REQUIRE(m->start.encoding, "start.mediaFormat.encoding");
        if (m->start.sample_rate == 0)
            return fail(err, VB_ENOENT, "missing_field",
                        "start.mediaFormat.sampleRate");
        if (m->start.channels == 0)
            return fail(err, VB_ENOENT, "missing_field",
                        "start.mediaFormat.channels");
        break;
    case VB_TWILIO_EV_MEDIA:
        REQUIRE(m->media.payload, "media.payload");
        REQUIRE(m->media.track, "media.track");
        REQUIRE(m->media.chunk, "media.chunk");
        REQUIRE(m->media.timestamp, "media.timestamp");
        if (!digits(&m->media.chunk, &m->media.chunk_n))
            return fail(err, VB_EINVAL, "invalid_field", "media.chunk");
        if (!digits(&m->media.timestamp, &m->media.timestamp_ms))
            return fail(err, VB_EINVAL, "invalid_field", "media.timestamp");
        break;
    case VB_TWILIO_EV_DTMF:
        REQUIRE(m->dtmf.digit, "dtmf.digit");
        if (m->dtmf.digit.len != 1 ||
            strchr("0123456789*#ABCDabcd", m->dtmf.digit.p[0]) == NULL)
            return fail(err, VB_EINVAL, "invalid_field", "dtmf.digit");
        break;
    case VB_TWILIO_EV_MARK:
        REQUIRE(m->mark.name, "mark.name");
        break;
    default:
        break;
    }
    return 0;
}

int vb_twilio_msg_parse(char *buf, size_t len, vb_twilio_msg_t *m,
                        vb_twilio_msg_error_t *err)
{
    if (err != NULL) {
        err->reason = "";
        err->field = "";
        err->offset = 0;
    }
    if (buf == NULL || m == NULL)
        return VB_EINVAL;
    memset(m, 0, sizeof *m);
    buf[len] = '\0';
    jp_t j = {.p = buf, .end = buf + len, .m = m};
    ws_skip(&j);
    bool ok = j.p < j.end && *j.p == '{' && jp_value(&j);
    if (ok) {
        ws_skip(&j);
        ok = j.p == j.end;
    }
    if (!ok) {
        if (err != NULL)
            err->offset = (size_t)(j.p - buf);
        return fail(err, VB_EPROTO, "invalid_json", "");
    }
    if (m->event_name.p == NULL)
        return fail(err, j.bad != NULL ? VB_EINVAL : VB_ENOENT,
                    j.bad != NULL ? "invalid_field" : "missing_field", "event");
    static const struct {
        const char *name;
        vb_twilio_event_t ev;
    } evs[] = {
        {"connected", VB_TWILIO_EV_CONNECTED}, {"start", VB_TWILIO_EV_START},
        {"media", VB_TWILIO_EV_MEDIA},         {"dtmf", VB_TWILIO_EV_DTMF},
        {"mark", VB_TWILIO_EV_MARK},           {"stop", VB_TWILIO_EV_STOP},
    };
    m->event = VB_TWILIO_EV_UNKNOWN;
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (strcmp(m->event_name.p, evs[i].name) == 0)
            m->event = evs[i].ev;
    if (j.bad != NULL)
        return fail(err, VB_EINVAL, "invalid_field", j.bad);
    if (j.params_overflow)
        return fail(err, VB_EINVAL, "invalid_field", "start.customParameters");
    return check_event(m, err);
}

const char *vb_twilio_msg_param(const vb_twilio_msg_t *m, const char *name)
{
    for (size_t i = 0; i < m->start.nparams; i++)
        if (strcmp(m->start.param_name[i].p, name) == 0)
            return m->start.param_value[i].p;
    return NULL;
}

size_t vb_twilio_json_escape(const char *s, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc = 0;
        switch (c) {
        case '"':
            esc = '"';
            break;
        case '\\':
            esc = '\\';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        default:
            break;
        }
        if (esc) {
            if (cap - o < 2)
                return 0;
            out[o++] = '\\';
            out[o++] = esc;
        } else if (c < 0x20) {
            if (cap - o < 6)
                return 0;
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            if (cap - o < 1)
                return 0;
            out[o++] = (char)c;
        }
    }
    return o;
}
