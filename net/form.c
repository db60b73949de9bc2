/* SPDX-License-Identifier: MIT */
/*
 * Form decoding (see form.h). One pass counts the pairs so the pair array
 * and the byte buffer are each allocated once; a second pass decodes every
 * name and value into the buffer. Decoding never grows a string, so the
 * buffer needs the input length plus two NULs per pair.
 */
#include "net/form.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"

size_t vb_form_decode(char *dst, const char *src, size_t len,
                      bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '+' && plus_is_space) {
            dst[o++] = ' ';
        } else if (c == '%' && i + 2 < len &&
                   vb_hexval((unsigned char)src[i + 1]) >= 0 &&
                   vb_hexval((unsigned char)src[i + 2]) >= 0) {
            dst[o++] = (char)(vb_hexval((unsigned char)src[i + 1]) << 4 |
                              vb_hexval((unsigned char)src[i + 2]));
            i += 2;
        } else {
            dst[o++] = (char)c;
        }
    }
    return o;
}

void vb_form_free(vb_form_t *f)
{
    if (f == NULL)
        return;
    free(f->pairs);
    free(f->_buf);
    f->pairs = NULL;
    f->_buf = NULL;
    f->n = 0;
}

int vb_form_parse(vb_form_t *f, const char *s, size_t len, size_t max_pairs)
{
    memset(f, 0, sizeof(*f));
    if (max_pairs == 0)
        max_pairs = VB_FORM_MAX_PAIRS;
    size_t count = 0;
    for (size_t i = 0; i < len;) {
        const char *amp = memchr(s + i, '&', len - i);
        size_t seg = amp ? (size_t)(amp - (s + i)) : len - i;
        if (seg > 0 && ++count > max_pairs)
            return VB_EMSGSIZE;
        i += seg + 1;
    }
    if (count == 0)
        return 0;
    f->pairs = calloc(count, sizeof(*f->pairs));
    f->_buf = malloc(len + 2 * count);
    if (f->pairs == NULL || f->_buf == NULL) {
        vb_form_free(f);
        return VB_ENOMEM;
    }
    char *o = f->_buf;
    for (size_t i = 0; i < len;) {
        const char *seg = s + i;
        const char *amp = memchr(seg, '&', len - i);
        size_t seglen = amp ? (size_t)(amp - seg) : len - i;
        i += seglen + 1;
        if (seglen == 0)
            continue;
        const char *eq = memchr(seg, '=', seglen);
        size_t nlen = eq ? (size_t)(eq - seg) : seglen;
        vb_form_pair_t *p = &f->pairs[f->n++];
        p->name = o;
        p->name_len = vb_form_decode(o, seg, nlen, true);
        o += p->name_len;
        *o++ = '\0';
        p->value = o;
        p->value_len =
            eq ? vb_form_decode(o, eq + 1, seglen - nlen - 1, true) : 0;
        o += p->value_len;
        *o++ = '\0';
    }
    return 0;
}

const char *vb_form_get(const vb_form_t *f, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; f != NULL && i < f->n; i++)
        if (f->pairs[i].name_len == n && memcmp(f->pairs[i].name, name, n) == 0)
            return f->pairs[i].value;
    return NULL;
}
