/* SPDX-License-Identifier: MIT */
/*
 * Assistants: loading, validating and sharing them (core/assistant.h).
 */
#include "core/assistant.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* Gemini Live prebuilt voices (shared/specs/gemini-live.md §7). */
static const char *const voices[] = {
    "Zephyr",        "Puck",         "Charon",     "Kore",        "Fenrir",
    "Leda",          "Orus",         "Aoede",      "Callirrhoe",  "Autonoe",
    "Enceladus",     "Iapetus",      "Umbriel",    "Algieba",     "Despina",
    "Erinome",       "Algenib",      "Rasalgethi", "Laomedeia",   "Achernar",
    "Alnilam",       "Schedar",      "Gacrux",     "Pulcherrima", "Achird",
    "Zubenelgenubi", "Vindemiatrix", "Sadachbia",  "Sadaltager",  "Sulafat",
};

bool vb_assistant_voice_known(const char *voice)
{
    if (voice == NULL)
        return false;
    for (size_t i = 0; i < sizeof(voices) / sizeof(voices[0]); i++)
        if (strcmp(voices[i], voice) == 0)
            return true;
    return false;
}

/* ---- assistants ---- */

static void assistant_free(vb_assistant_t *a)
{
    if (a == NULL)
        return;
    free(a->name);
    free(a->instructions);
    free(a->greeting);
    free(a->voicemail);
    free(a->voice);
    free(a->language);
    free(a->model);
    for (size_t i = 0; i < a->n_tools; i++) {
        free(a->tools[i].name);
        free(a->tools[i].description);
        free(a->tools[i].parameters);
        free(a->tools[i].url);
    }
    free(a->tools);
    for (size_t i = 0; i < a->n_transfer; i++) {
        free(a->transfer[i].name);
        free(a->transfer[i].target);
    }
    free(a->transfer);
    free(a);
}

vb_assistant_t *vb_assistant_ref(const vb_assistant_t *ca)
{
    /* The count is the one mutable part of an otherwise immutable
     * assistant. */
    vb_assistant_t *a = (vb_assistant_t *)(uintptr_t)ca;
    if (a != NULL)
        atomic_fetch_add_explicit(&a->_refs, 1, memory_order_relaxed);
    return a;
}

void vb_assistant_unref(const vb_assistant_t *ca)
{
    vb_assistant_t *a = (vb_assistant_t *)(uintptr_t)ca;
    /* acq_rel: the release orders this holder's reads before the free, the
     * acquire (of the last one) pairs with the other holders' releases.
     * (An acquire fence after a release decrement would do, but
     * ThreadSanitizer does not model fences.) */
    if (a != NULL &&
        atomic_fetch_sub_explicit(&a->_refs, 1, memory_order_acq_rel) == 1)
        assistant_free(a);
}

const vb_assistant_tool_t *vb_assistant_tool(const vb_assistant_t *a,
                                             const char *name)
{
    for (size_t i = 0; a != NULL && name != NULL && i < a->n_tools; i++)
        if (strcmp(a->tools[i].name, name) == 0)
            return &a->tools[i];
    return NULL;
}

const char *vb_assistant_transfer_target(const vb_assistant_t *a,
                                         const char *name)
{
    for (size_t i = 0; a != NULL && name != NULL && i < a->n_transfer; i++)
        if (strcmp(a->transfer[i].name, name) == 0)
            return a->transfer[i].target;
    return NULL;
}

static char *dup_s(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static int read_file(const char *path, size_t max, char **out, size_t *len,
                     char *err, size_t errsz)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errsz, "%s: cannot read: %s", path, strerror(errno));
        return VB_ECONFIG;
    }
    char *buf = malloc(max + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, errsz, "out of memory");
        return VB_ENOMEM;
    }
    size_t n = fread(buf, 1, max + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, errsz, "%s: cannot read", path);
        return VB_ECONFIG;
    }
    if (n > max) {
        free(buf);
        snprintf(err, errsz, "%s: larger than %zu bytes", path, max);
        return VB_ECONFIG;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int vb_assistant_from_config(const vb_config_t *c, vb_assistant_t **out,
                             char *err, size_t errsz)
{
    *out = NULL;
    if (!vb_assistant_voice_known(c->gemini_voice)) {
        snprintf(err, errsz,
                 "--gemini-voice (VOXBRIDGE_GEMINI_VOICE): unknown voice "
                 "\"%s\" (docs/assistants.md lists the voices)",
                 c->gemini_voice ? c->gemini_voice : "");
        return VB_ECONFIG;
    }
    char *prompt = NULL;
    if (c->system_prompt_file != NULL && c->system_prompt_file[0] != '\0') {
        size_t n;
        int rc = read_file(c->system_prompt_file, VB_ASSISTANT_INSTRUCTIONS_MAX,
                           &prompt, &n, err, errsz);
        if (rc != 0)
            return rc;
    }
    vb_assistant_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        free(prompt);
        snprintf(err, errsz, "out of memory");
        return VB_ENOMEM;
    }
    atomic_init(&a->_refs, 1);
    a->name = strdup(VB_ASSISTANT_FLAGS_NAME);
    a->instructions = prompt != NULL ? prompt : dup_s(c->system_prompt);
    a->greeting = dup_s(c->greeting);
    a->voice = dup_s(c->gemini_voice);
    a->language = dup_s(c->gemini_language);
    a->model = dup_s(c->gemini_model);
    a->voicemail = dup_s("");
    a->max_call_s = (uint32_t)c->max_call_duration;
    /* --record-dir records every call whose assistant does not say
     * "record": false. */
    a->record = c->record_dir != NULL && c->record_dir[0] != '\0';
    if (!a->name || !a->instructions || !a->greeting || !a->voice ||
        !a->language || !a->model || !a->voicemail) {
        assistant_free(a);
        snprintf(err, errsz, "out of memory");
        return VB_ENOMEM;
    }
    *out = a;
    return 0;
}

/* ---- sets ---- */

typedef struct number {
    char *number;
    vb_assistant_t *a; /* borrowed from the set */
} number_t;

struct vb_assistants {
    _Atomic uint32_t refs;
    vb_assistant_t **list; /* each holds one reference */
    size_t n;
    vb_assistant_t *def; /* one of list */
    number_t *numbers;   /* sorted by number */
    size_t n_numbers;
};

static void set_free(vb_assistants_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        vb_assistant_unref(s->list[i]);
    free(s->list);
    for (size_t i = 0; i < s->n_numbers; i++)
        free(s->numbers[i].number);
    free(s->numbers);
    free(s);
}

vb_assistants_t *vb_assistants_ref(vb_assistants_t *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void vb_assistants_unref(vb_assistants_t *s)
{
    /* As vb_assistant_unref(). */
    if (s != NULL &&
        atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        set_free(s);
}

const vb_assistant_t *vb_assistants_default(const vb_assistants_t *s)
{
    return s != NULL ? s->def : NULL;
}

const vb_assistant_t *vb_assistants_find(const vb_assistants_t *s,
                                         const char *name)
{
    for (size_t i = 0; s != NULL && name != NULL && i < s->n; i++)
        if (strcmp(s->list[i]->name, name) == 0)
            return s->list[i];
    return NULL;
}

static int number_cmp(const void *a, const void *b)
{
    return strcmp(((const number_t *)a)->number, ((const number_t *)b)->number);
}

const vb_assistant_t *vb_assistants_for_number(const vb_assistants_t *s,
                                               const char *to, bool *matched)
{
    if (matched != NULL)
        *matched = false;
    if (s == NULL)
        return NULL;
    if (to != NULL && s->n_numbers > 0) {
        number_t key = {.number = (char *)(uintptr_t)to};
        const number_t *hit = bsearch(&key, s->numbers, s->n_numbers,
                                      sizeof(*s->numbers), number_cmp);
        if (hit != NULL) {
            if (matched != NULL)
                *matched = true;
            return hit->a;
        }
    }
    return s->def;
}

size_t vb_assistants_count(const vb_assistants_t *s)
{
    return s != NULL ? s->n : 0;
}

const vb_assistant_t *vb_assistants_at(const vb_assistants_t *s, size_t i)
{
    return s != NULL && i < s->n ? s->list[i] : NULL;
}

bool vb_assistants_url_tool(const vb_assistants_t *s,
                            const vb_assistant_t **assistant, size_t *tool)
{
    for (size_t i = 0; i < vb_assistants_count(s); i++) {
        const vb_assistant_t *a = s->list[i];
        for (size_t j = 0; j < a->n_tools; j++)
            if (a->tools[j].url != NULL && a->tools[j].url[0] != '\0') {
                if (assistant != NULL)
                    *assistant = a;
                if (tool != NULL)
                    *tool = j;
                return true;
            }
    }
    return false;
}

int vb_assistants_single(const vb_assistant_t *a, vb_assistants_t **out)
{
    if (a == NULL || out == NULL)
        return VB_EINVAL;
    vb_assistants_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->list = calloc(1, sizeof(*s->list))) == NULL) {
        free(s);
        return VB_ENOMEM;
    }
    atomic_init(&s->refs, 1);
    s->list[0] = vb_assistant_ref(a);
    s->n = 1;
    s->def = s->list[0];
    *out = s;
    return 0;
}

/* ---- the loader ---- */

/* The line of one JSON value (a member's line is its key's). */
typedef struct pair {
    const cJSON *node;
    int line;
} pair_t;

typedef struct loader {
    const char *origin;
    char *err;
    size_t errsz;
    int *scan; /* line of the i-th value in document order */
    size_t n_scan;
    pair_t *pairs; /* node -> line, sorted by node */
    size_t n_pairs;
} loader_t;

/* Scans JSON text (already accepted by cJSON) for the line of each value's
 * start, keys standing in for their members' values. */
static int scan_lines(loader_t *L, const char *t, size_t len)
{
    size_t cap = 64, n = 0;
    int *v = malloc(cap * sizeof(*v));
    if (v == NULL)
        return VB_ENOMEM;
    int line = 1, key_line = 0;
    /* The container kinds open around the cursor, to tell a key from a
     * string value: in an object, a string right after '{' or ',' is a
     * key. */
    char stack[512];
    size_t depth = 0;
    bool expect_key = false;
    for (size_t i = 0; i < len; i++) {
        char ch = t[i];
        if (ch == '\n') {
            line++;
            continue;
        }
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == ':')
            continue;
        if (ch == ',') {
            expect_key = depth > 0 && stack[depth - 1] == '{';
            continue;
        }
        if (ch == '}' || ch == ']') {
            if (depth > 0)
                depth--;
            expect_key = false;
            continue;
        }
        if (ch == '"' && expect_key) {
            key_line = line;
            for (i++; i < len && t[i] != '"'; i++)
                if (t[i] == '\\')
                    i++;
            expect_key = false;
            continue;
        }
        /* A value starts here. */
        if (n == cap) {
            int *nv = realloc(v, 2 * cap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                return VB_ENOMEM;
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = key_line ? key_line : line;
        key_line = 0;
        if (ch == '{' || ch == '[') {
            if (depth < sizeof(stack))
                stack[depth++] = ch;
            expect_key = ch == '{';
        } else if (ch == '"') {
            for (i++; i < len && t[i] != '"'; i++)
                if (t[i] == '\\')
                    i++;
        } else {
            /* number or literal: skip to its end */
            while (i + 1 < len && !strchr(",]} \t\r\n", t[i + 1]))
                i++;
        }
    }
    L->scan = v;
    L->n_scan = n;
    return 0;
}

static int node_cmp(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return x < y ? -1 : x > y;
}

static int pair_cmp(const void *a, const void *b)
{
    return node_cmp(&((const pair_t *)a)->node, &((const pair_t *)b)->node);
}

static void walk(loader_t *L, const cJSON *n, size_t *idx, pair_t *out)
{
    for (; n != NULL; n = n->next) {
        out[*idx].node = n;
        out[*idx].line = *idx < L->n_scan ? L->scan[*idx] : 0;
        (*idx)++;
        walk(L, n->child, idx, out);
    }
}

static size_t count_nodes(const cJSON *n)
{
    size_t k = 0;
    for (; n != NULL; n = n->next)
        k += 1 + count_nodes(n->child);
    return k;
}

static int line_of(const loader_t *L, const cJSON *n)
{
    if (L->pairs == NULL || n == NULL)
        return 0;
    pair_t key = {.node = n};
    const pair_t *p =
        bsearch(&key, L->pairs, L->n_pairs, sizeof(*L->pairs), pair_cmp);
    return p != NULL ? p->line : 0;
}

/* Records the first error: "<origin>:<line>: <field>: <why>". */
__attribute__((format(printf, 4, 5))) static int
fail(loader_t *L, const cJSON *at, const char *field, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    int line = line_of(L, at);
    if (line > 0)
        snprintf(L->err, L->errsz, "%s:%d: %s: %s", L->origin, line, field,
                 why);
    else
        snprintf(L->err, L->errsz, "%s: %s: %s", L->origin, field, why);
    return VB_ECONFIG;
}

/* A field's path, cut to the buffer (paths are for messages only). */
__attribute__((format(printf, 3, 4))) static void pathf(char *dst, size_t n,
                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static int oom(loader_t *L)
{
    snprintf(L->err, L->errsz, "out of memory");
    return VB_ENOMEM;
}

/* Refuses keys of `obj` not in `allowed` (NULL-terminated) and keys given
 * twice. */
static int check_keys(loader_t *L, const cJSON *obj, const char *field,
                      const char *const *allowed)
{
    for (const cJSON *k = obj->child; k != NULL; k = k->next) {
        bool ok = allowed == NULL;
        for (size_t i = 0; !ok && allowed[i] != NULL; i++)
            ok = strcmp(allowed[i], k->string) == 0;
        char f[512];
        pathf(f, sizeof f, "%s.%s", field, k->string);
        if (!ok)
            return fail(L, k, f, "unknown key");
        for (const cJSON *d = obj->child; d != k; d = d->next)
            if (strcmp(d->string, k->string) == 0)
                return fail(L, k, f, "given twice");
    }
    return 0;
}

static bool name_ok(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && strchr(extra, c) == NULL)
            return false;
    }
    return true;
}

/* A function name Gemini accepts: starts with a letter or '_'; letters,
 * digits, '_' and '-'. */
static bool tool_name_ok(const char *s)
{
    return name_ok(s, VB_ASSISTANT_TOOL_NAME_MAX, "-") &&
           (isalpha((unsigned char)s[0]) || s[0] == '_');
}

static bool e164_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* sip:user@host or sip:host; sips: too. No spaces, quotes or angle
 * brackets (the target goes into TwiML). */
static bool sip_ok(const char *s)
{
    size_t skip = strncmp(s, "sips:", 5) == 0  ? 5
                  : strncmp(s, "sip:", 4) == 0 ? 4
                                               : 0;
    if (skip == 0 || s[skip] == '\0' || s[skip] == '@')
        return false;
    for (const char *p = s + skip; *p; p++)
        if ((unsigned char)*p <= ' ' || strchr("\"'<>&", *p) != NULL ||
            (unsigned char)*p >= 0x7f)
            return false;
    const char *at = strchr(s + skip, '@');
    return at == NULL || at[1] != '\0';
}

static bool lang_ok(const char *s)
{
    /* BCP-47 shape: 2-3 letters, then -subtags of 2-8 alphanumerics. */
    size_t i = 0;
    while (isalpha((unsigned char)s[i]))
        i++;
    if (i < 2 || i > 3)
        return false;
    while (s[i] == '-') {
        size_t j = ++i;
        while (isalnum((unsigned char)s[i]))
            i++;
        if (i - j < 2 || i - j > 8)
            return false;
    }
    return s[i] == '\0';
}

static bool url_ok(const char *s)
{
    size_t skip = strncmp(s, "https://", 8) == 0  ? 8
                  : strncmp(s, "http://", 7) == 0 ? 7
                                                  : 0;
    if (skip == 0 || s[skip] == '\0' || s[skip] == '/' ||
        strlen(s) > VB_ASSISTANT_URL_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

static const char *const schema_types[] = {
    "object", "string", "number", "integer", "boolean", "array", NULL};

static const char *const schema_keys[] = {
    "type",     "description", "properties", "required",         "items",
    "enum",     "format",      "nullable",   "minimum",          "maximum",
    "minItems", "maxItems",    "minLength",  "maxLength",        "pattern",
    "title",    "default",     "example",    "propertyOrdering", "anyOf",
    NULL};

static bool type_is(const char *t, const char *want)
{
    return strcasecmp(t, want) == 0;
}

/* The OpenAPI subset Gemini takes for function parameters
 * (docs/assistants.md): every schema names a known type; objects'
 * `properties` are schemas and `required` names some of them; arrays have
 * `items`; `enum` is a list of strings. */
static int check_schema(loader_t *L, const cJSON *s, const char *field,
                        int depth)
{
    char f[512];
    if (!cJSON_IsObject(s))
        return fail(L, s, field, "a schema must be an object");
    if (depth > VB_ASSISTANT_SCHEMA_DEPTH)
        return fail(L, s, field, "nested deeper than %d",
                    VB_ASSISTANT_SCHEMA_DEPTH);
    int rc = check_keys(L, s, field, schema_keys);
    if (rc != 0)
        return rc;
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    pathf(f, sizeof f, "%s.type", field);
    if (type == NULL && any == NULL)
        return fail(L, s, f, "missing");
    const char *t = "";
    if (type != NULL) {
        if (!cJSON_IsString(type))
            return fail(L, type, f, "must be a string");
        bool known = false;
        for (size_t i = 0; schema_types[i] != NULL && !known; i++)
            known = type_is(type->valuestring, schema_types[i]);
        if (!known)
            return fail(L, type, f,
                        "\"%s\" is not one of object, string, number, "
                        "integer, boolean, array",
                        type->valuestring);
        t = type->valuestring;
    }
    if (any != NULL) {
        pathf(f, sizeof f, "%s.anyOf", field);
        if (!cJSON_IsArray(any) || cJSON_GetArraySize(any) == 0)
            return fail(L, any, f, "must be a non-empty array of schemas");
        int i = 0;
        for (const cJSON *e = any->child; e != NULL; e = e->next, i++) {
            pathf(f, sizeof f, "%s.anyOf[%d]", field, i);
            if ((rc = check_schema(L, e, f, depth + 1)) != 0)
                return rc;
        }
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(s, "description");
    pathf(f, sizeof f, "%s.description", field);
    if (d != NULL && !cJSON_IsString(d))
        return fail(L, d, f, "must be a string");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (props != NULL) {
        pathf(f, sizeof f, "%s.properties", field);
        if (!type_is(t, "object"))
            return fail(L, props, f, "only an object has properties");
        if (!cJSON_IsObject(props))
            return fail(L, props, f, "must be an object");
        if ((rc = check_keys(L, props, f, NULL)) != 0)
            return rc;
        for (const cJSON *p = props->child; p != NULL; p = p->next) {
            pathf(f, sizeof f, "%s.properties.%s", field, p->string);
            if ((rc = check_schema(L, p, f, depth + 1)) != 0)
                return rc;
        }
    }
    if (req != NULL) {
        pathf(f, sizeof f, "%s.required", field);
        if (!type_is(t, "object"))
            return fail(L, req, f, "only an object has required");
        if (!cJSON_IsArray(req))
            return fail(L, req, f, "must be an array of property names");
        for (const cJSON *r = req->child; r != NULL; r = r->next) {
            if (!cJSON_IsString(r))
                return fail(L, r, f, "must be an array of property names");
            if (props == NULL ||
                cJSON_GetObjectItemCaseSensitive(props, r->valuestring) == NULL)
                return fail(L, r, f, "\"%s\" is not in properties",
                            r->valuestring);
        }
    }
    if (type_is(t, "array")) {
        pathf(f, sizeof f, "%s.items", field);
        if (items == NULL)
            return fail(L, s, f, "an array needs items");
        if ((rc = check_schema(L, items, f, depth + 1)) != 0)
            return rc;
    } else if (items != NULL) {
        pathf(f, sizeof f, "%s.items", field);
        return fail(L, items, f, "only an array has items");
    }
    if (en != NULL) {
        pathf(f, sizeof f, "%s.enum", field);
        if (!cJSON_IsArray(en) || cJSON_GetArraySize(en) == 0)
            return fail(L, en, f, "must be a non-empty array of strings");
        for (const cJSON *e = en->child; e != NULL; e = e->next)
            if (!cJSON_IsString(e))
                return fail(L, e, f, "must be a non-empty array of strings");
    }
    return 0;
}

/* A string field: absent leaves *out NULL; present must be a string of at
 * most `max` bytes. */
static int get_str(loader_t *L, const cJSON *obj, const char *key,
                   const char *field, size_t max, bool empty_ok,
                   const cJSON **node, const char **out)
{
    char f[512];
    pathf(f, sizeof f, "%s.%s", field, key);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (node != NULL)
        *node = v;
    if (v == NULL)
        return 0;
    if (!cJSON_IsString(v))
        return fail(L, v, f, "must be a string");
    size_t n = strlen(v->valuestring);
    if (n > max)
        return fail(L, v, f, "longer than %zu bytes", max);
    if (n == 0 && !empty_ok)
        return fail(L, v, f, "must not be empty");
    *out = v->valuestring;
    return 0;
}

static const char *const assistant_keys[] = {
    "instructions", "greeting",   "voice",  "language",  "model", "tools",
    "transfer",     "max_call_s", "record", "voicemail", NULL};
static const char *const tool_keys[] = {"name", "description", "parameters",
                                        "url",  "timeout_ms",  NULL};

static int load_tools(loader_t *L, const cJSON *arr, const char *field,
                      vb_assistant_t *a)
{
    char f[512];
    int rc;
    if (!cJSON_IsArray(arr))
        return fail(L, arr, field, "must be an array of tools");
    int n = cJSON_GetArraySize(arr);
    if (n > VB_ASSISTANT_MAX_TOOLS)
        return fail(L, arr, field, "more than %d tools",
                    VB_ASSISTANT_MAX_TOOLS);
    if (n == 0)
        return 0;
    if ((a->tools = calloc((size_t)n, sizeof(*a->tools))) == NULL)
        return oom(L);
    int i = 0;
    for (const cJSON *t = arr->child; t != NULL; t = t->next, i++) {
        char tf[256];
        pathf(tf, sizeof tf, "%s[%d]", field, i);
        if (!cJSON_IsObject(t))
            return fail(L, t, tf, "a tool must be an object");
        if ((rc = check_keys(L, t, tf, tool_keys)) != 0)
            return rc;
        const char *name, *desc, *url;
        const cJSON *nn, *un;
        if ((rc = get_str(L, t, "name", tf, VB_ASSISTANT_TOOL_NAME_MAX, false,
                          &nn, &name)) != 0 ||
            (rc = get_str(L, t, "description", tf, VB_ASSISTANT_DESCRIPTION_MAX,
                          true, NULL, &desc)) != 0 ||
            (rc = get_str(L, t, "url", tf, VB_ASSISTANT_URL_MAX, false, &un,
                          &url)) != 0)
            return rc;
        pathf(f, sizeof f, "%s.name", tf);
        if (name == NULL)
            return fail(L, t, f, "missing");
        if (!tool_name_ok(name))
            return fail(L, nn, f,
                        "\"%s\": letters, digits, '_' and '-', starting with "
                        "a letter or '_', at most %d",
                        name, VB_ASSISTANT_TOOL_NAME_MAX);
        if (strcmp(name, VB_ASSISTANT_END_CALL) == 0 ||
            strcmp(name, VB_ASSISTANT_TRANSFER_CALL) == 0)
            return fail(L, nn, f, "\"%s\" is a built-in tool", name);
        if (vb_assistant_tool(a, name) != NULL)
            return fail(L, nn, f, "duplicate tool name \"%s\"", name);
        pathf(f, sizeof f, "%s.url", tf);
        if (url == NULL)
            return fail(L, t, f, "missing");
        if (!url_ok(url))
            return fail(L, un, f,
                        "must be an http:// or https:// URL with a host, no "
                        "spaces");
        vb_assistant_tool_t *out = &a->tools[a->n_tools];
        const cJSON *to = cJSON_GetObjectItemCaseSensitive(t, "timeout_ms");
        out->timeout_ms = VB_ASSISTANT_TOOL_TIMEOUT_MS;
        if (to != NULL) {
            pathf(f, sizeof f, "%s.timeout_ms", tf);
            if (!cJSON_IsNumber(to) || to->valuedouble != (double)to->valueint)
                return fail(L, to, f, "must be an integer");
            if (to->valueint < VB_ASSISTANT_TOOL_TIMEOUT_MIN ||
                to->valueint > VB_ASSISTANT_TOOL_TIMEOUT_MAX)
                return fail(L, to, f, "%d is outside %d..%d", to->valueint,
                            VB_ASSISTANT_TOOL_TIMEOUT_MIN,
                            VB_ASSISTANT_TOOL_TIMEOUT_MAX);
            out->timeout_ms = (uint32_t)to->valueint;
        }
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(t, "parameters");
        if (p != NULL) {
            pathf(f, sizeof f, "%s.parameters", tf);
            if ((rc = check_schema(L, p, f, 1)) != 0)
                return rc;
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
            if (ty == NULL || !type_is(ty->valuestring, "object"))
                return fail(L, p, f, "the top level must be of type object");
            if ((out->parameters = cJSON_PrintUnformatted(p)) == NULL)
                return oom(L);
            if (strlen(out->parameters) > VB_ASSISTANT_PARAMS_MAX)
                return fail(L, p, f, "longer than %u bytes",
                            VB_ASSISTANT_PARAMS_MAX);
        }
        a->n_tools++;
        if ((out->name = strdup(name)) == NULL ||
            (out->description = dup_s(desc)) == NULL ||
            (out->url = strdup(url)) == NULL)
            return oom(L);
    }
    return 0;
}

static int load_transfer(loader_t *L, const cJSON *obj, const char *field,
                         vb_assistant_t *a)
{
    char f[512];
    if (!cJSON_IsObject(obj))
        return fail(L, obj, field,
                    "must be an object of name: E.164 number or sip: URI");
    int rc = check_keys(L, obj, field, NULL);
    if (rc != 0)
        return rc;
    int n = cJSON_GetArraySize(obj);
    if (n > VB_ASSISTANT_MAX_TRANSFER)
        return fail(L, obj, field, "more than %d targets",
                    VB_ASSISTANT_MAX_TRANSFER);
    if (n == 0)
        return 0;
    if ((a->transfer = calloc((size_t)n, sizeof(*a->transfer))) == NULL)
        return oom(L);
    for (const cJSON *t = obj->child; t != NULL; t = t->next) {
        pathf(f, sizeof f, "%s.%s", field, t->string);
        if (!tool_name_ok(t->string))
            return fail(L, t, f,
                        "a target name has letters, digits, '_' and '-', "
                        "starting with a letter or '_', at most %d",
                        VB_ASSISTANT_TOOL_NAME_MAX);
        if (!cJSON_IsString(t))
            return fail(L, t, f, "must be a string");
        const char *v = t->valuestring;
        if (strlen(v) > VB_ASSISTANT_TARGET_MAX || !(e164_ok(v) || sip_ok(v)))
            return fail(L, t, f,
                        "\"%s\" is neither an E.164 number (+14155550100) "
                        "nor a sip: URI",
                        v);
        vb_assistant_transfer_t *o = &a->transfer[a->n_transfer++];
        if ((o->name = strdup(t->string)) == NULL ||
            (o->target = strdup(v)) == NULL)
            return oom(L);
    }
    return 0;
}

/* Copies base's tools and transfer targets into `a`. */
static int inherit_lists(loader_t *L, const vb_assistant_t *base,
                         vb_assistant_t *a, bool tools, bool transfer)
{
    if (tools && base->n_tools > 0) {
        if ((a->tools = calloc(base->n_tools, sizeof(*a->tools))) == NULL)
            return oom(L);
        for (size_t i = 0; i < base->n_tools; i++, a->n_tools++) {
            const vb_assistant_tool_t *t = &base->tools[i];
            vb_assistant_tool_t *o = &a->tools[i];
            o->timeout_ms = t->timeout_ms;
            if ((o->name = strdup(t->name)) == NULL ||
                (o->description = dup_s(t->description)) == NULL ||
                (o->url = strdup(t->url)) == NULL ||
                (t->parameters != NULL &&
                 (o->parameters = strdup(t->parameters)) == NULL)) {
                a->n_tools++;
                return oom(L);
            }
        }
    }
    if (transfer && base->n_transfer > 0) {
        if ((a->transfer = calloc(base->n_transfer, sizeof(*a->transfer))) ==
            NULL)
            return oom(L);
        for (size_t i = 0; i < base->n_transfer; i++, a->n_transfer++) {
            vb_assistant_transfer_t *o = &a->transfer[i];
            if ((o->name = strdup(base->transfer[i].name)) == NULL ||
                (o->target = strdup(base->transfer[i].target)) == NULL) {
                a->n_transfer++;
                return oom(L);
            }
        }
    }
    return 0;
}

/* An assistant from `obj`, named `name`; fields it does not give come from
 * `base` (its tools and transfer targets too when `inherit`). `field` is
 * the path for messages. */
static int load_assistant_as(loader_t *L, const cJSON *obj, const char *name,
                             const char *field, const vb_assistant_t *base,
                             bool inherit, vb_assistant_t **out);

static int load_assistant(loader_t *L, const cJSON *obj,
                          const vb_assistant_t *base, vb_assistant_t **out)
{
    char field[256];
    pathf(field, sizeof field, "assistants.%s", obj->string);
    return load_assistant_as(L, obj, obj->string, field, base, false, out);
}

static int load_assistant_as(loader_t *L, const cJSON *obj, const char *name,
                             const char *field, const vb_assistant_t *base,
                             bool inherit, vb_assistant_t **out)
{
    char f[512];
    int rc;
    if (!name_ok(name, VB_ASSISTANT_NAME_MAX, ".-"))
        return fail(L, obj, field,
                    "an assistant name has 1 to %d letters, digits, '_', "
                    "'.' and '-'",
                    VB_ASSISTANT_NAME_MAX);
    if (!cJSON_IsObject(obj))
        return fail(L, obj, field, "an assistant must be an object");
    if ((rc = check_keys(L, obj, field, assistant_keys)) != 0)
        return rc;
    const char *instr, *greet, *voice, *lang, *model, *vmail;
    const cJSON *vn, *ln, *mn;
    if ((rc = get_str(L, obj, "instructions", field,
                      VB_ASSISTANT_INSTRUCTIONS_MAX, true, NULL, &instr)) !=
            0 ||
        (rc = get_str(L, obj, "greeting", field, VB_ASSISTANT_GREETING_MAX,
                      true, NULL, &greet)) != 0 ||
        (rc = get_str(L, obj, "voice", field, 64, false, &vn, &voice)) != 0 ||
        (rc = get_str(L, obj, "language", field, 35, false, &ln, &lang)) != 0 ||
        (rc = get_str(L, obj, "model", field, 128, false, &mn, &model)) != 0 ||
        (rc = get_str(L, obj, "voicemail", field, VB_ASSISTANT_VOICEMAIL_MAX,
                      true, NULL, &vmail)) != 0)
        return rc;
    if (voice != NULL && !vb_assistant_voice_known(voice)) {
        pathf(f, sizeof f, "%s.voice", field);
        return fail(L, vn, f,
                    "unknown voice \"%s\" (names are case-sensitive; "
                    "docs/assistants.md lists them)",
                    voice);
    }
    if (lang != NULL && !lang_ok(lang)) {
        pathf(f, sizeof f, "%s.language", field);
        return fail(L, ln, f, "\"%s\" is not a BCP-47 code such as en-US",
                    lang);
    }
    if (model != NULL && !name_ok(model, 128, ".-/")) {
        pathf(f, sizeof f, "%s.model", field);
        return fail(L, mn, f,
                    "\"%s\": a model id has letters, digits, '.', '-', '_' "
                    "and '/'",
                    model);
    }
    vb_assistant_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return oom(L);
    atomic_init(&a->_refs, 1);
    *out = a;
    a->name = strdup(name);
    a->instructions = dup_s(instr ? instr : base->instructions);
    a->greeting = dup_s(greet ? greet : base->greeting);
    a->voice = dup_s(voice ? voice : base->voice);
    a->language = dup_s(lang ? lang : base->language);
    a->model = dup_s(model ? model : base->model);
    a->voicemail = dup_s(vmail                     ? vmail
                         : base->voicemail != NULL ? base->voicemail
                                                   : "");
    a->max_call_s = base->max_call_s;
    a->record = base->record;
    if (!a->name || !a->instructions || !a->greeting || !a->voice ||
        !a->language || !a->model || !a->voicemail)
        return oom(L);
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(obj, "max_call_s");
    if (mc != NULL) {
        pathf(f, sizeof f, "%s.max_call_s", field);
        if (!cJSON_IsNumber(mc) || mc->valuedouble != (double)mc->valueint ||
            mc->valueint < 0 || mc->valueint > VB_ASSISTANT_MAX_CALL_S_MAX)
            return fail(L, mc, f, "must be an integer 0..%d (0: no limit)",
                        VB_ASSISTANT_MAX_CALL_S_MAX);
        a->max_call_s = (uint32_t)mc->valueint;
    }
    const cJSON *rec = cJSON_GetObjectItemCaseSensitive(obj, "record");
    if (rec != NULL) {
        pathf(f, sizeof f, "%s.record", field);
        if (!cJSON_IsBool(rec))
            return fail(L, rec, f, "must be true or false");
        a->record = cJSON_IsTrue(rec);
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(obj, "tools");
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(obj, "transfer");
    if (inherit &&
        (rc = inherit_lists(L, base, a, tools == NULL, tr == NULL)) != 0)
        return rc;
    if (tools != NULL) {
        pathf(f, sizeof f, "%s.tools", field);
        if ((rc = load_tools(L, tools, f, a)) != 0)
            return rc;
    }
    if (tr != NULL) {
        pathf(f, sizeof f, "%s.transfer", field);
        if ((rc = load_transfer(L, tr, f, a)) != 0)
            return rc;
    }
    return 0;
}

static const char *const top_keys[] = {"default", "assistants", "numbers",
                                       NULL};

static int load_set(loader_t *L, const cJSON *root, const vb_assistant_t *base,
                    vb_assistants_t *s)
{
    int rc;
    if (!cJSON_IsObject(root))
        return fail(L, root, "(top level)", "must be an object");
    if ((rc = check_keys(L, root, "(top level)", top_keys)) != 0)
        return rc;
    const cJSON *as = cJSON_GetObjectItemCaseSensitive(root, "assistants");
    if (as == NULL)
        return fail(L, root, "assistants", "missing");
    if (!cJSON_IsObject(as) || as->child == NULL)
        return fail(L, as, "assistants",
                    "must be an object of at least one assistant");
    if ((rc = check_keys(L, as, "assistants", NULL)) != 0)
        return rc;
    int n = cJSON_GetArraySize(as);
    if (n > VB_ASSISTANT_MAX_ASSISTANTS)
        return fail(L, as, "assistants", "more than %d assistants",
                    VB_ASSISTANT_MAX_ASSISTANTS);
    if ((s->list = calloc((size_t)n, sizeof(*s->list))) == NULL)
        return oom(L);
    for (const cJSON *a = as->child; a != NULL; a = a->next) {
        rc = load_assistant(L, a, base, &s->list[s->n]);
        if (s->list[s->n] != NULL)
            s->n++;
        if (rc != 0)
            return rc;
    }
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(root, "default");
    if (def == NULL) {
        if (s->n != 1)
            return fail(L, root, "default",
                        "missing (required with more than one assistant)");
        s->def = s->list[0];
    } else {
        if (!cJSON_IsString(def))
            return fail(L, def, "default", "must be an assistant's name");
        s->def = (vb_assistant_t *)(uintptr_t)vb_assistants_find(
            s, def->valuestring);
        if (s->def == NULL)
            return fail(L, def, "default", "no assistant named \"%s\"",
                        def->valuestring);
    }
    const cJSON *nums = cJSON_GetObjectItemCaseSensitive(root, "numbers");
    if (nums == NULL)
        return 0;
    if (!cJSON_IsObject(nums))
        return fail(L, nums, "numbers",
                    "must be an object of number: assistant name");
    if ((rc = check_keys(L, nums, "numbers", NULL)) != 0)
        return rc;
    int nn = cJSON_GetArraySize(nums);
    if (nn > VB_ASSISTANT_MAX_NUMBERS)
        return fail(L, nums, "numbers", "more than %d numbers",
                    VB_ASSISTANT_MAX_NUMBERS);
    if (nn == 0)
        return 0;
    if ((s->numbers = calloc((size_t)nn, sizeof(*s->numbers))) == NULL)
        return oom(L);
    for (const cJSON *e = nums->child; e != NULL; e = e->next) {
        char f[512];
        pathf(f, sizeof f, "numbers.%s", e->string);
        if (!(e164_ok(e->string) || sip_ok(e->string)))
            return fail(L, e, f,
                        "a called number is E.164 (+18005550199) or a sip: "
                        "URI");
        if (!cJSON_IsString(e))
            return fail(L, e, f, "must be an assistant's name");
        vb_assistant_t *a =
            (vb_assistant_t *)(uintptr_t)vb_assistants_find(s, e->valuestring);
        if (a == NULL)
            return fail(L, e, f, "no assistant named \"%s\"", e->valuestring);
        number_t *o = &s->numbers[s->n_numbers];
        if ((o->number = strdup(e->string)) == NULL)
            return oom(L);
        o->a = a;
        s->n_numbers++;
    }
    qsort(s->numbers, s->n_numbers, sizeof(*s->numbers), number_cmp);
    return 0;
}

/* The line of byte `off` of `t`. */
static int line_at(const char *t, size_t len, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off && i < len; i++)
        line += t[i] == '\n';
    return line;
}

int vb_assistants_parse(const char *text, size_t len, const char *origin,
                        const vb_assistant_t *base, vb_assistants_t **out,
                        char *err, size_t errsz)
{
    char dummy[8];
    if (err == NULL || errsz == 0) {
        err = dummy;
        errsz = sizeof dummy;
    }
    err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (text == NULL || base == NULL || out == NULL)
        return VB_EINVAL;
    if (origin == NULL)
        origin = "assistants";
    loader_t L = {.origin = origin, .err = err, .errsz = errsz};
    if (len > VB_ASSISTANT_FILE_MAX) {
        snprintf(err, errsz, "%s: larger than %u bytes", origin,
                 VB_ASSISTANT_FILE_MAX);
        return VB_ECONFIG;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (root != NULL) {
        /* Only whitespace may follow the value. */
        size_t off = (size_t)(end - text);
        while (off < len && strchr(" \t\r\n", text[off]) != NULL)
            off++;
        if (off < len) {
            cJSON_Delete(root);
            root = NULL;
            end = text + off;
        }
    }
    if (root == NULL) {
        size_t off = end != NULL && end >= text ? (size_t)(end - text) : 0;
        if (off > len)
            off = len;
        size_t show = strcspn(text + off, "\r\n");
        snprintf(err, errsz, "%s:%d: not valid JSON near \"%.*s\"", origin,
                 line_at(text, len, off), (int)(show < 20 ? show : 20),
                 text + off);
        return VB_ECONFIG;
    }
    int rc = scan_lines(&L, text, len);
    size_t nodes = count_nodes(root);
    pair_t *pv = rc == 0 ? calloc(nodes ? nodes : 1, sizeof(*pv)) : NULL;
    vb_assistants_t *s = calloc(1, sizeof(*s));
    if (rc != 0 || pv == NULL || s == NULL) {
        free(pv);
        free(s);
        free(L.scan);
        cJSON_Delete(root);
        return oom(&L);
    }
    atomic_init(&s->refs, 1);
    size_t idx = 0;
    walk(&L, root, &idx, pv);
    qsort(pv, nodes, sizeof(*pv), pair_cmp);
    L.pairs = pv;
    L.n_pairs = nodes;
    rc = load_set(&L, root, base, s);
    L.pairs = NULL;
    free(pv);
    free(L.scan);
    cJSON_Delete(root);
    if (rc != 0) {
        set_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int vb_assistant_parse_override(const char *text, size_t len,
                                const vb_assistant_t *base,
                                vb_assistant_t **out, char *err, size_t errsz)
{
    char dummy[8];
    if (err == NULL || errsz == 0) {
        err = dummy;
        errsz = sizeof dummy;
    }
    err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (text == NULL || base == NULL || out == NULL)
        return VB_EINVAL;
    loader_t L = {.origin = "answer", .err = err, .errsz = errsz};
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (root == NULL) {
        snprintf(err, errsz, "not valid JSON");
        return VB_ECONFIG;
    }
    int rc = cJSON_IsObject(root)
                 ? load_assistant_as(&L, root, base->name, "assistant", base,
                                     true, out)
                 : fail(&L, NULL, "assistant", "must be an object");
    if (rc != 0) {
        vb_assistant_unref(*out);
        *out = NULL;
    }
    cJSON_Delete(root);
    return rc;
}

int vb_assistants_load_file(const char *path, const vb_assistant_t *base,
                            vb_assistants_t **out, char *err, size_t errsz)
{
    char *text;
    size_t len;
    if (out != NULL)
        *out = NULL;
    if (path == NULL || base == NULL || out == NULL)
        return VB_EINVAL;
    int rc = read_file(path, VB_ASSISTANT_FILE_MAX, &text, &len, err, errsz);
    if (rc != 0)
        return rc;
    rc = vb_assistants_parse(text, len, path, base, out, err, errsz);
    free(text);
    return rc;
}

int vb_assistants_check(const vb_config_t *c, char *err, size_t errsz)
{
    vb_assistant_t *base;
    int rc = vb_assistant_from_config(c, &base, err, errsz);
    if (rc != 0)
        return rc;
    const char *path = c->assistants;
    if (path != NULL && path[0] != '\0') {
        vb_assistants_t *s;
        rc = vb_assistants_load_file(path, base, &s, err, errsz);
        vb_assistants_unref(s);
    }
    vb_assistant_unref(base);
    return rc;
}

/* ---- the store ---- */

struct vb_assistant_store {
    pthread_mutex_t mu;
    vb_assistants_t *cur; /* guarded by mu */
    char *path;
    vb_assistant_t *base;
    bool refuse_url_tools; /* main thread only */
    bool refuse_record;    /* main thread only: no --record-dir */
};

int vb_assistant_store_create(vb_assistants_t *initial, const char *path,
                              const vb_assistant_t *base,
                              vb_assistant_store_t **out)
{
    if (initial == NULL || out == NULL)
        return VB_EINVAL;
    vb_assistant_store_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return VB_ENOMEM;
    if (path != NULL && path[0] != '\0' && (st->path = strdup(path)) == NULL) {
        free(st);
        return VB_ENOMEM;
    }
    pthread_mutex_init(&st->mu, NULL);
    st->cur = vb_assistants_ref(initial);
    st->base = vb_assistant_ref(base);
    *out = st;
    return 0;
}

void vb_assistant_store_destroy(vb_assistant_store_t *st)
{
    if (st == NULL)
        return;
    vb_assistants_unref(st->cur);
    vb_assistant_unref(st->base);
    pthread_mutex_destroy(&st->mu);
    free(st->path);
    free(st);
}

vb_assistants_t *vb_assistant_store_get(vb_assistant_store_t *st)
{
    if (st == NULL)
        return NULL;
    pthread_mutex_lock(&st->mu);
    vb_assistants_t *s = vb_assistants_ref(st->cur);
    pthread_mutex_unlock(&st->mu);
    return s;
}

void vb_assistant_store_swap(vb_assistant_store_t *st, vb_assistants_t *next)
{
    if (st == NULL || next == NULL)
        return;
    vb_assistants_ref(next);
    pthread_mutex_lock(&st->mu);
    vb_assistants_t *old = st->cur;
    st->cur = next;
    pthread_mutex_unlock(&st->mu);
    vb_assistants_unref(old);
}

int vb_assistant_store_reload(vb_assistant_store_t *st, size_t *count,
                              char *err, size_t errsz)
{
    if (st == NULL)
        return VB_EINVAL;
    if (st->path == NULL || st->base == NULL) {
        snprintf(err, errsz, "no --assistants file");
        return VB_ENOENT;
    }
    vb_assistants_t *s;
    int rc = vb_assistants_load_file(st->path, st->base, &s, err, errsz);
    if (rc != 0)
        return rc;
    const vb_assistant_t *a;
    size_t t;
    if (st->refuse_url_tools && vb_assistants_url_tool(s, &a, &t)) {
        snprintf(err, errsz,
                 "%s: assistants.%s.tools[%zu].url: HTTP tools need "
                 "--webhook-secret (VOXBRIDGE_WEBHOOK_SECRET), their "
                 "requests are signed",
                 st->path, a->name, t);
        vb_assistants_unref(s);
        return VB_ECONFIG;
    }
    for (size_t i = 0; st->refuse_record && i < s->n; i++) {
        const vb_assistant_t *r = vb_assistants_at(s, i);
        if (r != NULL && r->record) {
            snprintf(err, errsz, "assistant \"%s\": record needs --record-dir",
                     r->name);
            vb_assistants_unref(s);
            return VB_ECONFIG;
        }
    }
    if (count != NULL)
        *count = s->n;
    vb_assistant_store_swap(st, s);
    vb_assistants_unref(s);
    return 0;
}

void vb_assistant_store_refuse_url_tools(vb_assistant_store_t *st)
{
    if (st != NULL)
        st->refuse_url_tools = true;
}

void vb_assistant_store_refuse_record(vb_assistant_store_t *st)
{
    if (st != NULL)
        st->refuse_record = true;
}

vb_assistant_t *vb_assistant_store_find(vb_assistant_store_t *st,
                                        const char *name)
{
    vb_assistants_t *s = vb_assistant_store_get(st);
    vb_assistant_t *a = vb_assistant_ref(vb_assistants_find(s, name));
    vb_assistants_unref(s);
    return a;
}

/* ---- per-call context ---- */

static void copy_cut(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src != NULL ? src : "");
}

vb_call_ctx_t *vb_call_ctx_create(const char *call_sid, const char *account_sid,
                                  const char *from, const char *to,
                                  const char *direction,
                                  const vb_assistant_t *a)
{
    vb_call_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    copy_cut(c->call_sid, sizeof c->call_sid, call_sid);
    copy_cut(c->account_sid, sizeof c->account_sid, account_sid);
    copy_cut(c->from, sizeof c->from, from);
    copy_cut(c->to, sizeof c->to, to);
    copy_cut(c->direction, sizeof c->direction, direction);
    c->assistant = vb_assistant_ref(a);
    return c;
}

void vb_call_ctx_destroy(vb_call_ctx_t *c)
{
    if (c == NULL)
        return;
    vb_assistant_unref(c->assistant);
    free(c->variables);
    free(c);
}

bool vb_assistant_store_records(vb_assistant_store_t *st, const char *name)
{
    if (st == NULL)
        return false;
    vb_assistant_t *a =
        name != NULL && *name ? vb_assistant_store_find(st, name) : NULL;
    if (a != NULL) {
        bool yes = a->record;
        vb_assistant_unref(a);
        return yes;
    }
    vb_assistants_t *set = vb_assistant_store_get(st);
    const vb_assistant_t *d = vb_assistants_default(set);
    bool yes = d != NULL && d->record;
    vb_assistants_unref(set);
    return yes;
}

/* ---- variables of an outbound call ---- */

/* `text` with every {{name}} of `vars` replaced by its value; unknown
 * placeholders stay as they are. NULL when out of memory. */
static char *substitute(const char *text, const cJSON *vars)
{
    size_t cap = strlen(text) + 1, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    const char *p = text;
    while (*p) {
        const char *val = NULL;
        size_t skip = 0;
        if (p[0] == '{' && p[1] == '{') {
            const char *e = strstr(p + 2, "}}");
            size_t nl = e != NULL ? (size_t)(e - (p + 2)) : 0;
            char name[VB_ASSISTANT_VAR_NAME_MAX + 1];
            if (e != NULL && nl > 0 && nl <= VB_ASSISTANT_VAR_NAME_MAX) {
                memcpy(name, p + 2, nl);
                name[nl] = '\0';
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(vars, name);
                if (cJSON_IsString(v)) {
                    val = v->valuestring;
                    skip = nl + 4;
                }
            }
        }
        size_t add = val != NULL ? strlen(val) : 1;
        if (n + add + 1 > cap) {
            size_t nc = (n + add + 1) * 2;
            char *b = realloc(out, nc);
            if (b == NULL) {
                free(out);
                return NULL;
            }
            out = b;
            cap = nc;
        }
        if (val != NULL) {
            memcpy(out + n, val, add);
            n += add;
            p += skip;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

bool vb_assistant_var_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > VB_ASSISTANT_VAR_NAME_MAX ||
        !(isalpha((unsigned char)name[0]) || name[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return false;
    return true;
}

int vb_assistant_with_variables(const vb_assistant_t *a, const char *vars_json,
                                vb_assistant_t **out, char *err, size_t errsz)
{
    if (out != NULL)
        *out = NULL;
    if (a == NULL || vars_json == NULL || out == NULL)
        return VB_EINVAL;
    cJSON *vars = cJSON_Parse(vars_json);
    if (!cJSON_IsObject(vars)) {
        cJSON_Delete(vars);
        if (err != NULL && errsz > 0)
            snprintf(err, errsz, "variables: not a JSON object");
        return VB_ECONFIG;
    }
    char *ins = substitute(a->instructions, vars);
    char *gr = substitute(a->greeting, vars);
    cJSON *o = cJSON_CreateObject();
    int rc = VB_ENOMEM;
    if (ins != NULL && gr != NULL && o != NULL &&
        cJSON_AddStringToObject(o, "instructions", ins) != NULL &&
        cJSON_AddStringToObject(o, "greeting", gr) != NULL) {
        /* cJSON escapes the values: they cannot reach past the strings. */
        char *text = cJSON_PrintUnformatted(o);
        if (text != NULL) {
            rc = vb_assistant_parse_override(text, strlen(text), a, out, err,
                                             errsz);
            free(text);
        }
    }
    cJSON_Delete(o);
    cJSON_Delete(vars);
    free(ins);
    free(gr);
    return rc;
}
