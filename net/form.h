/* SPDX-License-Identifier: MIT */
/*
 * application/x-www-form-urlencoded decoding, for Twilio webhook bodies and
 * query strings. `+` becomes a space and `%XX` the byte it names; a `%` not
 * followed by two hex digits is kept as it is (what common decoders do, so
 * a signature computed by the sender over the decoded values still
 * matches). Repeated keys are kept in order, `a=` and a bare `a` both give
 * an empty value, and empty segments (`&&`) are skipped. Decoded names and
 * values carry their length (a `%00` may hide inside) and are also
 * NUL-terminated for convenience.
 */
#ifndef VB_NET_FORM_H
#define VB_NET_FORM_H

#include <stdbool.h>
#include <stddef.h>

/* Default most pairs one form may hold (Twilio posts about 30). */
#define VB_FORM_MAX_PAIRS 512

typedef struct vb_form_pair {
    const char *name; /* decoded, NUL-terminated */
    size_t name_len;
    const char *value; /* decoded, NUL-terminated */
    size_t value_len;
} vb_form_pair_t;

typedef struct vb_form {
    vb_form_pair_t *pairs; /* in order of appearance */
    size_t n;
    char *_buf; /* decoded bytes; pairs point into it */
} vb_form_t;

/* Decodes `len` bytes of `s` into `f` (which is overwritten: free any
 * previous content first). At most `max_pairs` pairs (0: VB_FORM_MAX_PAIRS).
 * Returns 0, VB_EMSGSIZE when there are more pairs, VB_ENOMEM. On error `f`
 * is left empty. Free with vb_form_free() in every case. Any thread. */
int vb_form_parse(vb_form_t *f, const char *s, size_t len, size_t max_pairs);

/* Frees what `f` holds and empties it; accepts NULL and empty forms. */
void vb_form_free(vb_form_t *f);

/* Value of the first pair named `name` (exact, case-sensitive), or NULL. The
 * string lives as long as `f`. */
const char *vb_form_get(const vb_form_t *f, const char *name);

/* Decodes `len` bytes of `src` into `dst` (room for `len` bytes; the result
 * is never longer), turning `+` into a space when `plus_is_space`. Returns
 * the decoded length; does not NUL-terminate. */
size_t vb_form_decode(char *dst, const char *src, size_t len,
                      bool plus_is_space);

/* The value of one hex digit (either case), or -1. Any thread. */
static inline int vb_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
