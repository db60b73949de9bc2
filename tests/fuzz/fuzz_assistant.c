/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for core/assistant: the input is an assistants file and,
 * also, an assistant object answered by --assistant-url. Whatever the
 * bytes, the loader accepts or refuses with a message, never crashes or
 * leaks; an accepted set has a default and every lookup stays inside it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/assistant.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vb_assistant_t *base_of(void)
{
    static vb_assistant_t *base;
    if (base == NULL) {
        vb_config_t c;
        char err[256];
        const char *argv[] = {"voxbridge", NULL};
        if (vb_config_load(&c, 1, argv, err, sizeof err) != 0 ||
            vb_assistant_from_config(&c, &base, err, sizeof err) != 0)
            abort();
        vb_config_free(&c);
    }
    return base;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    vb_assistants_t *s = NULL;
    int rc =
        vb_assistants_parse(text, size, "fuzz", base_of(), &s, err, sizeof err);
    if (rc == 0) {
        const vb_assistant_t *d = vb_assistants_default(s);
        if (d == NULL || vb_assistants_find(s, d->name) == NULL)
            abort();
        if (vb_assistants_for_number(s, "+18005550199", NULL) == NULL)
            abort();
        vb_assistants_unref(s);
    } else if (rc != VB_ECONFIG || err[0] == '\0' || s != NULL) {
        abort();
    }
    vb_assistant_t *a = NULL;
    rc =
        vb_assistant_parse_override(text, size, base_of(), &a, err, sizeof err);
    if ((rc == 0) != (a != NULL))
        abort();
    vb_assistant_unref(a);
    free(text);
    return 0;
}
