/* SPDX-License-Identifier: MIT */
/*
 * TwiML builder (see twiml.h): a growable buffer, an escaper that also
 * repairs what XML 1.0 cannot hold, and the few verbs voxbridge answers
 * with.
 */
#include "net/twiml.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there
 * are not one (overlong forms, surrogates, beyond U+10FFFF, truncated), or
 * are U+FFFE/U+FFFF, which XML excludes. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff)
        return 0;
    return n;
}

size_t vb_twiml_escape(char *dst, size_t dstsz, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
#define PUT(str, n)                              \
    do {                                         \
        for (size_t k_ = 0; k_ < (n); k_++, o++) \
            if (o + 1 < dstsz)                   \
                dst[o] = (str)[k_];              \
    } while (0)
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        const char *rep = NULL;
        switch (c) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        /* Character references keep tab, LF and CR intact in attributes,
         * where a parser would otherwise normalise them to spaces. */
        case '\t':
            rep = "&#9;";
            break;
        case '\n':
            rep = "&#10;";
            break;
        case '\r':
            rep = "&#13;";
            break;
        default:
            break;
        }
        if (rep != NULL) {
            PUT(rep, strlen(rep));
            i++;
        } else if (c < 0x20) {
            i++; /* not representable in XML 1.0 at all */
        } else {
            size_t n = utf8_seq(p + i, len - i);
            if (n == 0) {
                PUT("\xef\xbf\xbd", 3);
                i++;
            } else {
                PUT((const char *)p + i, n);
                i += n;
            }
        }
    }
#undef PUT
    if (dstsz > 0)
        dst[o < dstsz ? o : dstsz - 1] = '\0';
    return o;
}

static bool reserve(vb_twiml_t *t, size_t more)
{
    if (t->_err)
        return false;
    if (t->_len + more + 1 <= t->_cap)
        return true;
    size_t cap = t->_cap ? t->_cap : 512;
    while (cap < t->_len + more + 1)
        cap *= 2;
    char *b = realloc(t->_buf, cap);
    if (b == NULL) {
        t->_err = VB_ENOMEM;
        return false;
    }
    t->_buf = b;
    t->_cap = cap;
    return true;
}

static void put(vb_twiml_t *t, const char *s)
{
    size_t n = strlen(s);
    if (!reserve(t, n))
        return;
    memcpy(t->_buf + t->_len, s, n + 1);
    t->_len += n;
}

static void put_escaped(vb_twiml_t *t, const char *s)
{
    size_t len = strlen(s);
    if (!reserve(t, len * 6))
        return;
    t->_len += vb_twiml_escape(t->_buf + t->_len, t->_cap - t->_len, s, len);
}

void vb_twiml_init(vb_twiml_t *t)
{
    memset(t, 0, sizeof(*t));
    put(t, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>");
}

void vb_twiml_say(vb_twiml_t *t, const char *text)
{
    if (text == NULL || *text == '\0')
        return;
    put(t, "<Say>");
    put_escaped(t, text);
    put(t, "</Say>");
}

void vb_twiml_hangup(vb_twiml_t *t)
{
    put(t, "<Hangup/>");
}

void vb_twiml_reject(vb_twiml_t *t, const char *reason)
{
    put(t, "<Reject reason=\"");
    put_escaped(t, reason);
    put(t, "\"/>");
}

void vb_twiml_dial(vb_twiml_t *t, const char *target)
{
    bool sip = strncmp(target, "sip:", 4) == 0;
    put(t, sip ? "<Dial><Sip>" : "<Dial>");
    put_escaped(t, target);
    put(t, sip ? "</Sip></Dial>" : "</Dial>");
}

void vb_twiml_connect_stream(vb_twiml_t *t, const char *url,
                             const vb_twiml_param_t *params, size_t n)
{
    vb_twiml_connect_stream_action(t, url, NULL, params, n);
}

void vb_twiml_connect_stream_action(vb_twiml_t *t, const char *url,
                                    const char *action,
                                    const vb_twiml_param_t *params, size_t n)
{
    vb_twiml_connect_stream_cb(t, url, action, NULL, params, n);
}

void vb_twiml_connect_stream_cb(vb_twiml_t *t, const char *url,
                                const char *action, const char *status_cb,
                                const vb_twiml_param_t *params, size_t n)
{
    put(t, "<Connect");
    if (action != NULL && *action != '\0') {
        put(t, " action=\"");
        put_escaped(t, action);
        put(t, "\"");
    }
    put(t, "><Stream url=\"");
    put_escaped(t, url);
    if (status_cb != NULL && *status_cb != '\0') {
        put(t, "\" statusCallback=\"");
        put_escaped(t, status_cb);
    }
    put(t, "\">");
    for (size_t i = 0; i < n; i++) {
        if (params[i].name == NULL || params[i].value == NULL)
            continue;
        put(t, "<Parameter name=\"");
        put_escaped(t, params[i].name);
        put(t, "\" value=\"");
        put_escaped(t, params[i].value);
        put(t, "\"/>");
    }
    put(t, "</Stream></Connect>");
}

int vb_twiml_finish(vb_twiml_t *t, char **out, size_t *len)
{
    put(t, "</Response>\n");
    int rc = t->_err;
    if (rc == 0) {
        *out = t->_buf;
        *len = t->_len;
        t->_buf = NULL;
    } else {
        *out = NULL;
        *len = 0;
    }
    vb_twiml_free(t);
    return rc;
}

void vb_twiml_free(vb_twiml_t *t)
{
    if (t == NULL)
        return;
    free(t->_buf);
    memset(t, 0, sizeof(*t));
}
