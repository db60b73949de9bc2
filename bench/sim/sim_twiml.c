/* SPDX-License-Identifier: MIT */
/*
 * vb-sim TwiML reader: a small strict XML parser (elements, attributes,
 * text, the five predefined entities and character references, comments,
 * CDATA; no DTDs) and the TwiML rules the simulator enforces on top of it
 * (spec §2): a <Response> root, case-sensitive known verbs, Pause length,
 * and for <Connect><Stream>: an absolute wss:// url (ws:// only for a
 * loopback host) without a query string, <Parameter name value> children
 * whose name + value stay under 500 characters.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench/sim/sim.h"

#define XML_MAX_DEPTH 16
#define XML_MAX_ATTRS 16
#define XML_MAX_KIDS  256
#define XML_MAX_BYTES (256 * 1024)

typedef struct xn {
    char *name;
    size_t nattr;
    char *an[XML_MAX_ATTRS], *av[XML_MAX_ATTRS];
    char *text; /* concatenated character data */
    size_t text_len;
    struct xn *kids[XML_MAX_KIDS];
    size_t nkids;
} xn_t;

typedef struct xp {
    const char *p, *end;
    char *err;
    size_t errsz;
    bool failed;
} xp_t;

static bool xfail(xp_t *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool xfail(xp_t *x, const char *fmt, ...)
{
    if (!x->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->errsz, fmt, ap);
        va_end(ap);
        x->failed = true;
    }
    return false;
}

static void xn_free(xn_t *n)
{
    if (n == NULL)
        return;
    free(n->name);
    for (size_t i = 0; i < n->nattr; i++) {
        free(n->an[i]);
        free(n->av[i]);
    }
    free(n->text);
    for (size_t i = 0; i < n->nkids; i++)
        xn_free(n->kids[i]);
    free(n);
}

static void skip_ws(xp_t *x)
{
    while (x->p < x->end &&
           (*x->p == ' ' || *x->p == '\t' || *x->p == '\n' || *x->p == '\r'))
        x->p++;
}

static bool starts(const xp_t *x, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(x->end - x->p) >= n && memcmp(x->p, s, n) == 0;
}

static bool name_char(char c, bool first)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':' ||
           (!first && (isdigit((unsigned char)c) || c == '-' || c == '.'));
}

static char *read_name(xp_t *x)
{
    const char *s = x->p;
    if (x->p >= x->end || !name_char(*x->p, true)) {
        xfail(x, "XML: expected a name");
        return NULL;
    }
    while (x->p < x->end && name_char(*x->p, false))
        x->p++;
    return strndup(s, (size_t)(x->p - s));
}

/* Appends UTF-8 of a code point. */
static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes [s, e) with entities into a new string; '<' is an error in
 * attributes (in_attr) and ends text otherwise (caller limits e). */
static char *decode(xp_t *x, const char *s, const char *e, bool in_attr)
{
    char *out = malloc((size_t)(e - s) + 1), *o = out;
    if (out == NULL) {
        xfail(x, "out of memory");
        return NULL;
    }
    while (s < e) {
        if (*s == '<' && in_attr) {
            free(out);
            xfail(x, "XML: '<' inside an attribute value");
            return NULL;
        }
        if (*s != '&') {
            *o++ = *s++;
            continue;
        }
        const char *semi = memchr(s, ';', (size_t)(e - s));
        if (semi == NULL || semi - s > 10) {
            free(out);
            xfail(x, "XML: raw '&' (must be escaped as &amp;)");
            return NULL;
        }
        size_t n = (size_t)(semi - s - 1);
        const char *ent = s + 1;
        if (n == 3 && memcmp(ent, "amp", 3) == 0) {
            *o++ = '&';
        } else if (n == 2 && memcmp(ent, "lt", 2) == 0) {
            *o++ = '<';
        } else if (n == 2 && memcmp(ent, "gt", 2) == 0) {
            *o++ = '>';
        } else if (n == 4 && memcmp(ent, "quot", 4) == 0) {
            *o++ = '"';
        } else if (n == 4 && memcmp(ent, "apos", 4) == 0) {
            *o++ = '\'';
        } else if (n >= 2 && ent[0] == '#') {
            char buf[12];
            memcpy(buf, ent + 1, n - 1);
            buf[n - 1] = '\0';
            char *endp;
            unsigned long cp = buf[0] == 'x' ? strtoul(buf + 1, &endp, 16)
                                             : strtoul(buf, &endp, 10);
            if (*endp != '\0' || cp == 0 || cp > 0x10FFFF ||
                (cp >= 0xD800 && cp <= 0xDFFF) || (size_t)(semi + 1 - s) < 4) {
                free(out);
                xfail(x, "XML: bad character reference");
                return NULL;
            }
            o += put_utf8(o, cp);
        } else {
            free(out);
            xfail(x, "XML: unknown entity &%.*s;", (int)n, ent);
            return NULL;
        }
        s = semi + 1;
    }
    *o = '\0';
    return out;
}

static bool append_text(xp_t *x, xn_t *n, const char *s, size_t len)
{
    char *t = realloc(n->text, n->text_len + len + 1);
    if (t == NULL)
        return xfail(x, "out of memory");
    memcpy(t + n->text_len, s, len);
    n->text_len += len;
    t[n->text_len] = '\0';
    n->text = t;
    return true;
}

static bool skip_comment(xp_t *x)
{
    const char *e = NULL;
    for (const char *q = x->p + 4; q + 3 <= x->end; q++)
        if (memcmp(q, "-->", 3) == 0) {
            e = q;
            break;
        }
    if (e == NULL)
        return xfail(x, "XML: unterminated comment");
    x->p = e + 3;
    return true;
}

static xn_t *parse_elem(xp_t *x, int depth)
{
    if (depth > XML_MAX_DEPTH) {
        xfail(x, "XML: nesting too deep");
        return NULL;
    }
    x->p++; /* '<' */
    xn_t *n = calloc(1, sizeof *n);
    if (n == NULL) {
        xfail(x, "out of memory");
        return NULL;
    }
    n->name = read_name(x);
    if (n->name == NULL)
        goto fail;
    for (;;) {
        bool had_ws = x->p < x->end && isspace((unsigned char)*x->p);
        skip_ws(x);
        if (x->p >= x->end) {
            xfail(x, "XML: unterminated <%s>", n->name);
            goto fail;
        }
        if (starts(x, "/>")) {
            x->p += 2;
            return n;
        }
        if (*x->p == '>') {
            x->p++;
            break;
        }
        if (!had_ws) {
            xfail(x, "XML: expected whitespace before attribute in <%s>",
                  n->name);
            goto fail;
        }
        if (n->nattr == XML_MAX_ATTRS) {
            xfail(x, "XML: too many attributes in <%s>", n->name);
            goto fail;
        }
        char *an = read_name(x);
        if (an == NULL)
            goto fail;
        for (size_t i = 0; i < n->nattr; i++)
            if (strcmp(n->an[i], an) == 0) {
                xfail(x, "XML: duplicate attribute %s in <%s>", an, n->name);
                free(an);
                goto fail;
            }
        skip_ws(x);
        if (x->p >= x->end || *x->p != '=') {
            xfail(x, "XML: expected '=' after %s", an);
            free(an);
            goto fail;
        }
        x->p++;
        skip_ws(x);
        if (x->p >= x->end || (*x->p != '"' && *x->p != '\'')) {
            xfail(x, "XML: attribute %s value must be quoted", an);
            free(an);
            goto fail;
        }
        char q = *x->p++;
        const char *vs = x->p;
        while (x->p < x->end && *x->p != q)
            x->p++;
        if (x->p >= x->end) {
            xfail(x, "XML: unterminated attribute value");
            free(an);
            goto fail;
        }
        char *av = decode(x, vs, x->p, true);
        x->p++;
        if (av == NULL) {
            free(an);
            goto fail;
        }
        n->an[n->nattr] = an;
        n->av[n->nattr] = av;
        n->nattr++;
    }
    /* Content. */
    for (;;) {
        if (x->p >= x->end) {
            xfail(x, "XML: <%s> not closed", n->name);
            goto fail;
        }
        if (starts(x, "</")) {
            x->p += 2;
            char *cn = read_name(x);
            if (cn == NULL)
                goto fail;
            bool same = strcmp(cn, n->name) == 0;
            free(cn);
            skip_ws(x);
            if (!same || x->p >= x->end || *x->p != '>') {
                xfail(x, "XML: mismatched end tag for <%s>", n->name);
                goto fail;
            }
            x->p++;
            return n;
        }
        if (starts(x, "<!--")) {
            if (!skip_comment(x))
                goto fail;
            continue;
        }
        if (starts(x, "<![CDATA[")) {
            const char *s = x->p + 9, *e = NULL;
            for (const char *q = s; q + 3 <= x->end; q++)
                if (memcmp(q, "]]>", 3) == 0) {
                    e = q;
                    break;
                }
            if (e == NULL) {
                xfail(x, "XML: unterminated CDATA");
                goto fail;
            }
            if (!append_text(x, n, s, (size_t)(e - s)))
                goto fail;
            x->p = e + 3;
            continue;
        }
        if (starts(x, "<!") || starts(x, "<?")) {
            xfail(x, "XML: declarations/processing instructions not allowed "
                     "inside elements");
            goto fail;
        }
        if (*x->p == '<') {
            if (n->nkids == XML_MAX_KIDS) {
                xfail(x, "XML: too many children in <%s>", n->name);
                goto fail;
            }
            xn_t *k = parse_elem(x, depth + 1);
            if (k == NULL)
                goto fail;
            n->kids[n->nkids++] = k;
            continue;
        }
        const char *s = x->p;
        while (x->p < x->end && *x->p != '<')
            x->p++;
        char *t = decode(x, s, x->p, false);
        if (t == NULL)
            goto fail;
        bool ok = append_text(x, n, t, strlen(t));
        free(t);
        if (!ok)
            goto fail;
    }
fail:
    xn_free(n);
    return NULL;
}

static xn_t *xml_parse(const char *doc, size_t len, char *err, size_t errsz)
{
    xp_t x = {.p = doc, .end = doc + len, .err = err, .errsz = errsz};
    if (len > XML_MAX_BYTES) {
        xfail(&x, "XML: document larger than %d bytes", XML_MAX_BYTES);
        return NULL;
    }
    if (starts(&x, "\xEF\xBB\xBF"))
        x.p += 3;
    if (starts(&x, "<?xml")) {
        const char *e = strstr(x.p, "?>");
        if (e == NULL || e >= x.end) {
            xfail(&x, "XML: unterminated declaration");
            return NULL;
        }
        x.p = e + 2;
    }
    for (;;) {
        skip_ws(&x);
        if (starts(&x, "<!--")) {
            if (!skip_comment(&x))
                return NULL;
            continue;
        }
        break;
    }
    if (starts(&x, "<!")) {
        xfail(&x, "XML: DOCTYPE not allowed");
        return NULL;
    }
    if (x.p >= x.end || *x.p != '<') {
        xfail(&x, "XML: no root element");
        return NULL;
    }
    xn_t *root = parse_elem(&x, 0);
    if (root == NULL)
        return NULL;
    for (;;) {
        skip_ws(&x);
        if (starts(&x, "<!--")) {
            if (!skip_comment(&x)) {
                xn_free(root);
                return NULL;
            }
            continue;
        }
        break;
    }
    if (x.p != x.end) {
        xfail(&x, "XML: content after the root element");
        xn_free(root);
        return NULL;
    }
    return root;
}

/* ---- TwiML rules ---- */

static const char *attr(const xn_t *n, const char *name)
{
    for (size_t i = 0; i < n->nattr; i++)
        if (strcmp(n->an[i], name) == 0)
            return n->av[i];
    return NULL;
}

static bool blank(const char *s)
{
    for (; s != NULL && *s; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

/* Checks that every attribute of n is in the NULL-terminated list. */
static bool attrs_allowed(const xn_t *n, const char *const *ok, char *err,
                          size_t errsz)
{
    for (size_t i = 0; i < n->nattr; i++) {
        bool found = false;
        for (size_t k = 0; ok[k] != NULL && !found; k++)
            found = strcmp(n->an[i], ok[k]) == 0;
        if (!found) {
            snprintf(err, errsz, "TwiML: unknown attribute %s on <%s>",
                     n->an[i], n->name);
            return false;
        }
    }
    return true;
}

static bool loopback_host(const char *h, size_t n)
{
    return (n == 9 && memcmp(h, "localhost", 9) == 0) ||
           (n >= 4 && memcmp(h, "127.", 4) == 0) ||
           (n == 5 && memcmp(h, "[::1]", 5) == 0);
}

static bool check_stream_url(const char *url, char *err, size_t errsz)
{
    const char *rest;
    bool ws = false;
    if (strncmp(url, "wss://", 6) == 0) {
        rest = url + 6;
    } else if (strncmp(url, "ws://", 5) == 0) {
        rest = url + 5;
        ws = true;
    } else {
        snprintf(err, errsz,
                 "TwiML: <Stream url=\"%s\">: only absolute wss:// URLs are "
                 "supported",
                 url);
        return false;
    }
    if (strchr(url, '?') != NULL) {
        snprintf(err, errsz,
                 "TwiML: <Stream url=\"%s\"> has a query string (Twilio does "
                 "not support it; use <Parameter>)",
                 url);
        return false;
    }
    if (strchr(url, '#') != NULL || strpbrk(url, " \t\r\n") != NULL) {
        snprintf(err, errsz, "TwiML: <Stream url=\"%s\"> is malformed", url);
        return false;
    }
    size_t hl = strcspn(rest, "/");
    const char *colon = NULL;
    if (rest[0] == '[') {
        const char *rb = memchr(rest, ']', hl);
        if (rb != NULL && (size_t)(rb - rest) + 1 < hl && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(rest, ':', hl);
    }
    size_t host_len = colon != NULL ? (size_t)(colon - rest) : hl;
    if (host_len == 0) {
        snprintf(err, errsz, "TwiML: <Stream url=\"%s\"> has no host", url);
        return false;
    }
    if (ws && !loopback_host(rest, host_len)) {
        snprintf(err, errsz,
                 "TwiML: <Stream url=\"%s\"> is not wss:// (ws:// is only "
                 "accepted for loopback hosts in this simulator)",
                 url);
        return false;
    }
    /* Twilio connects to 443 only; a loopback host (tests) may use any. */
    if (!ws && colon != NULL && !loopback_host(rest, host_len) &&
        !(hl - host_len == 4 && memcmp(colon, ":443", 4) == 0)) {
        snprintf(err, errsz,
                 "TwiML: <Stream url=\"%s\">: Twilio streams to port 443 "
                 "only",
                 url);
        return false;
    }
    return true;
}

static void verb_free(sim_verb_t *v)
{
    free(v->text);
    free(v->stream_url);
    free(v->status_cb);
    free(v->action);
    for (size_t i = 0; i < v->nparams; i++) {
        free(v->pname[i]);
        free(v->pvalue[i]);
    }
}

void sim_twiml_free(sim_twiml_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nverbs; i++)
        verb_free(&t->verbs[i]);
    free(t->verbs);
    t->verbs = NULL;
    t->nverbs = 0;
}

/* The text of `s` without surrounding white space, into out. */
static void trimmed(const char *s, char *out, size_t cap)
{
    if (s == NULL)
        s = "";
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    snprintf(out, cap, "%.*s", (int)n, s);
}

/* A phone number as Twilio dials it: an optional '+', then 2 to 15 digits
 * (E.164). */
static bool phone_ok(const char *s)
{
    if (*s == '+')
        s++;
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (!isdigit((unsigned char)s[n]))
            return false;
    return n >= 2 && n <= 15;
}

/* <Dial>number</Dial> or <Dial><Number|Sip|Client|...>...</...></Dial>:
 * the attributes Twilio documents, no empty <Dial>, a number must be a
 * phone number and a <Sip> a sip: or sips: URI. The first target is
 * recorded. */
static bool parse_dial(const xn_t *n, sim_verb_t *v, char *err, size_t errsz)
{
    static const char *const dattrs[] = {"action",
                                         "method",
                                         "timeout",
                                         "callerId",
                                         "record",
                                         "timeLimit",
                                         "hangupOnStar",
                                         "answerOnBridge",
                                         "ringTone",
                                         "trim",
                                         "recordingStatusCallback",
                                         "recordingStatusCallbackMethod",
                                         "recordingStatusCallbackEvent",
                                         "recordingTrack",
                                         "sequential",
                                         "referUrl",
                                         "referMethod",
                                         "events",
                                         NULL};
    static const char *const nouns[] = {"Number",      "Sip",   "Client",
                                        "Conference",  "Queue", "Sim",
                                        "Application", NULL};
    if (!attrs_allowed(n, dattrs, err, errsz))
        return false;
    char target[512];
    if (n->nkids == 0) {
        trimmed(n->text, target, sizeof target);
        if (target[0] == '\0') {
            snprintf(err, errsz, "TwiML: <Dial> without a number");
            return false;
        }
        if (!phone_ok(target)) {
            snprintf(err, errsz, "TwiML: <Dial> number \"%s\" is not valid",
                     target);
            return false;
        }
    } else {
        if (!blank(n->text)) {
            snprintf(err, errsz, "TwiML: text and nouns mixed in <Dial>");
            return false;
        }
        target[0] = '\0';
        for (size_t i = 0; i < n->nkids; i++) {
            const xn_t *k = n->kids[i];
            bool known = false;
            for (size_t j = 0; nouns[j] != NULL && !known; j++)
                known = strcmp(k->name, nouns[j]) == 0;
            if (!known) {
                snprintf(err, errsz, "TwiML: <%s> inside <Dial>", k->name);
                return false;
            }
            char t[512];
            trimmed(k->text, t, sizeof t);
            if (k->nkids > 0 || t[0] == '\0') {
                snprintf(err, errsz, "TwiML: <%s> must hold only text",
                         k->name);
                return false;
            }
            if (strcmp(k->name, "Number") == 0 && !phone_ok(t)) {
                snprintf(err, errsz, "TwiML: <Number> \"%s\" is not valid", t);
                return false;
            }
            if (strcmp(k->name, "Sip") == 0 && strncmp(t, "sip:", 4) != 0 &&
                strncmp(t, "sips:", 5) != 0) {
                snprintf(err, errsz, "TwiML: <Sip> \"%s\" is not a sip: URI",
                         t);
                return false;
            }
            if (target[0] == '\0')
                snprintf(target, sizeof target, "%s", t);
        }
    }
    v->kind = SIM_VERB_DIAL;
    v->text = strdup(target);
    return v->text != NULL;
}

static bool parse_connect(const xn_t *n, sim_verb_t *v, char *err, size_t errsz)
{
    static const char *const cattrs[] = {"action", "method", NULL};
    /* What twilio-node 6.x's <Stream> takes (connectorName, audioFormat
     * and sampleRate among them). */
    static const char *const sattrs[] = {"url",
                                         "name",
                                         "track",
                                         "statusCallback",
                                         "statusCallbackMethod",
                                         "connectorName",
                                         "audioFormat",
                                         "sampleRate",
                                         NULL};
    static const char *const pattrs[] = {"name", "value", NULL};
    if (!attrs_allowed(n, cattrs, err, errsz))
        return false;
    if (!blank(n->text)) {
        snprintf(err, errsz, "TwiML: text inside <Connect>");
        return false;
    }
    if (n->nkids != 1 || strcmp(n->kids[0]->name, "Stream") != 0) {
        snprintf(err, errsz,
                 "TwiML: <Connect> must hold exactly one <Stream> here");
        return false;
    }
    const xn_t *s = n->kids[0];
    if (!attrs_allowed(s, sattrs, err, errsz))
        return false;
    const char *url = attr(s, "url");
    if (url == NULL) {
        snprintf(err, errsz, "TwiML: <Stream> without url");
        return false;
    }
    if (!check_stream_url(url, err, errsz))
        return false;
    const char *track = attr(s, "track");
    if (track != NULL && strcmp(track, "inbound_track") != 0 &&
        strcmp(track, "outbound_track") != 0 &&
        strcmp(track, "both_tracks") != 0) {
        snprintf(err, errsz, "TwiML: bad <Stream track=\"%s\">", track);
        return false;
    }
    /* A bidirectional stream carries the caller's track only. */
    if (track != NULL && strcmp(track, "inbound_track") != 0) {
        snprintf(err, errsz,
                 "TwiML: <Connect><Stream track=\"%s\">: only inbound_track "
                 "is allowed inside <Connect>",
                 track);
        return false;
    }
    const char *action = attr(n, "action");
    if (action != NULL && strncmp(action, "http://", 7) != 0 &&
        strncmp(action, "https://", 8) != 0 && action[0] != '/') {
        snprintf(err, errsz,
                 "TwiML: <Connect action=\"%s\"> is not an http(s) URL or "
                 "an absolute path",
                 action);
        return false;
    }
    if (!blank(s->text)) {
        snprintf(err, errsz, "TwiML: text inside <Stream>");
        return false;
    }
    v->stream_url = strdup(url);
    v->action = action != NULL ? strdup(action) : NULL;
    const char *cb = attr(s, "statusCallback");
    /* statusCallbackMethod: GET, else Twilio's default POST. */
    const char *cbm = attr(s, "statusCallbackMethod");
    v->status_cb = cb != NULL ? strdup(cb) : NULL;
    v->status_cb_get = cbm != NULL && strcasecmp(cbm, "GET") == 0;
    for (size_t i = 0; i < s->nkids; i++) {
        const xn_t *p = s->kids[i];
        if (strcmp(p->name, "Parameter") != 0) {
            snprintf(err, errsz, "TwiML: <%s> inside <Stream>", p->name);
            return false;
        }
        if (!attrs_allowed(p, pattrs, err, errsz))
            return false;
        const char *pn = attr(p, "name"), *pv = attr(p, "value");
        if (pn == NULL || pv == NULL || pn[0] == '\0') {
            snprintf(err, errsz, "TwiML: <Parameter> needs name and value");
            return false;
        }
        if (strlen(pn) + strlen(pv) >= 500) {
            snprintf(err, errsz,
                     "TwiML: <Parameter name=\"%s\"> name + value must be "
                     "under 500 characters",
                     pn);
            return false;
        }
        if (p->nkids > 0 || !blank(p->text)) {
            snprintf(err, errsz, "TwiML: <Parameter> must be empty");
            return false;
        }
        if (v->nparams == SIM_MAX_PARAMS) {
            snprintf(err, errsz, "TwiML: too many <Parameter>s");
            return false;
        }
        v->pname[v->nparams] = strdup(pn);
        v->pvalue[v->nparams] = strdup(pv);
        v->nparams++;
    }
    return true;
}

int sim_twiml_parse(const char *xml, size_t len, sim_twiml_t *out, char *err,
                    size_t errsz)
{
    memset(out, 0, sizeof *out);
    xn_t *root = xml_parse(xml, len, err, errsz);
    if (root == NULL)
        return -1;
    int rc = -1;
    if (strcmp(root->name, "Response") != 0) {
        snprintf(err, errsz, "TwiML: root element is <%s>, not <Response>",
                 root->name);
        goto done;
    }
    if (root->nattr > 0 || !blank(root->text)) {
        snprintf(err, errsz, "TwiML: <Response> takes no attributes or text");
        goto done;
    }
    out->verbs = calloc(root->nkids + 1, sizeof *out->verbs);
    if (out->verbs == NULL) {
        snprintf(err, errsz, "out of memory");
        goto done;
    }
    static const char *const other[] = {
        "Play", "Redirect", "Gather", "Record", "Enqueue", "Leave",
        "Sms",  "Start",    "Stop",   "Refer",  "Pay",     NULL};
    for (size_t i = 0; i < root->nkids; i++) {
        const xn_t *n = root->kids[i];
        sim_verb_t *v = &out->verbs[out->nverbs++];
        snprintf(v->name, sizeof v->name, "%s", n->name);
        if (strcmp(n->name, "Say") == 0) {
            static const char *const a[] = {"voice", "language", "loop", NULL};
            if (!attrs_allowed(n, a, err, errsz))
                goto done;
            if (n->nkids > 0) {
                snprintf(err, errsz, "TwiML: elements inside <Say>");
                goto done;
            }
            v->kind = SIM_VERB_SAY;
            v->text = strdup(n->text != NULL ? n->text : "");
        } else if (strcmp(n->name, "Pause") == 0) {
            static const char *const a[] = {"length", NULL};
            if (!attrs_allowed(n, a, err, errsz))
                goto done;
            v->kind = SIM_VERB_PAUSE;
            v->pause_s = 1;
            const char *l = attr(n, "length");
            if (l != NULL) {
                char *e;
                long s = strtol(l, &e, 10);
                if (*e != '\0' || e == l || s < 1 || s > 600) {
                    snprintf(err, errsz, "TwiML: bad <Pause length=\"%s\">", l);
                    goto done;
                }
                v->pause_s = (double)s;
            }
            if (n->nkids > 0 || !blank(n->text)) {
                snprintf(err, errsz, "TwiML: <Pause> must be empty");
                goto done;
            }
        } else if (strcmp(n->name, "Hangup") == 0) {
            if (n->nattr > 0 || n->nkids > 0 || !blank(n->text)) {
                snprintf(err, errsz, "TwiML: <Hangup> must be empty");
                goto done;
            }
            v->kind = SIM_VERB_HANGUP;
        } else if (strcmp(n->name, "Reject") == 0) {
            static const char *const a[] = {"reason", NULL};
            if (!attrs_allowed(n, a, err, errsz))
                goto done;
            const char *why = attr(n, "reason");
            if (why == NULL)
                why = "rejected";
            if (strcmp(why, "busy") != 0 && strcmp(why, "rejected") != 0) {
                snprintf(err, errsz, "TwiML: bad <Reject reason=\"%s\">", why);
                goto done;
            }
            if (n->nkids > 0 || !blank(n->text)) {
                snprintf(err, errsz, "TwiML: <Reject> must be empty");
                goto done;
            }
            v->kind = SIM_VERB_REJECT;
            v->text = strdup(why);
        } else if (strcmp(n->name, "Dial") == 0) {
            if (!parse_dial(n, v, err, errsz))
                goto done;
        } else if (strcmp(n->name, "Connect") == 0) {
            v->kind = SIM_VERB_CONNECT;
            if (!parse_connect(n, v, err, errsz))
                goto done;
        } else {
            bool known = false;
            for (size_t k = 0; other[k] != NULL && !known; k++)
                known = strcmp(n->name, other[k]) == 0;
            if (!known) {
                snprintf(err, errsz, "TwiML: unknown verb <%s>", n->name);
                goto done;
            }
            v->kind = SIM_VERB_OTHER;
        }
    }
    rc = 0;
done:
    if (rc != 0)
        sim_twiml_free(out);
    xn_free(root);
    return rc;
}
