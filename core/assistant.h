/* SPDX-License-Identifier: MIT */
/*
 * Assistants: who answers a call. An assistant is the model's side of a
 * call (instructions, greeting, voice, language, model, HTTP tools,
 * transfer targets, limits); a set of them is loaded from the JSON file of
 * --assistants (docs/assistants.md) or, without one, made of today's flags
 * as a single default assistant. The called number picks the assistant,
 * else the set's default. A per-call context carries the chosen assistant
 * and the call's identifiers to the gemini stage.
 *
 * DESIGN. Everything here is immutable once built and reference-counted
 * (C11 atomics), so threads share it without locks: an assistant is held
 * by its set and by every call using it; a set is held by the store and by
 * whoever is picking from it. A reload builds a complete new set beside
 * the old one and swaps the store's pointer; calls keep the assistant they
 * hold, and the old set goes when its last user lets it go. The store's
 * pointer is guarded by a mutex taken only to get or swap it (once per
 * webhook and per reload, never on the audio path).
 *
 * Validation happens at load, field by field: a refused file names the
 * file, the line and the field (`assistants.front-desk.tools[0].url`).
 * cJSON reports no positions for values, so the loader scans the text once
 * for the line of every value in document order, which is the order of a
 * pre-order walk of the tree cJSON built from it.
 */
#ifndef VB_CORE_ASSISTANT_H
#define VB_CORE_ASSISTANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

/* Limits (docs/assistants.md). */
#define VB_ASSISTANT_NAME_MAX         63   /* bytes of an assistant's name */
#define VB_ASSISTANT_TOOL_NAME_MAX    63   /* bytes of a tool / target name */
#define VB_ASSISTANT_MAX_TOOLS        32   /* HTTP tools per assistant */
#define VB_ASSISTANT_MAX_TRANSFER     32   /* transfer targets per assistant */
#define VB_ASSISTANT_MAX_ASSISTANTS   1024 /* assistants per file */
#define VB_ASSISTANT_MAX_NUMBERS      100000
#define VB_ASSISTANT_INSTRUCTIONS_MAX (64u * 1024u) /* bytes */
#define VB_ASSISTANT_GREETING_MAX     2048u         /* bytes */
#define VB_ASSISTANT_VOICEMAIL_MAX    1000u /* bytes of voicemail text */
#define VB_ASSISTANT_DESCRIPTION_MAX  2048u /* bytes of a tool description */
#define VB_ASSISTANT_PARAMS_MAX       (16u * 1024u) /* bytes of parameters */
#define VB_ASSISTANT_SCHEMA_DEPTH     8 /* nesting of a parameters schema */
#define VB_ASSISTANT_URL_MAX          2048u
#define VB_ASSISTANT_TARGET_MAX       256u /* bytes of a transfer target */
#define VB_ASSISTANT_FILE_MAX         (4u * 1024u * 1024u) /* file bytes */
#define VB_ASSISTANT_TOOL_TIMEOUT_MS  5000 /* default tool timeout */
#define VB_ASSISTANT_TOOL_TIMEOUT_MIN 100
#define VB_ASSISTANT_TOOL_TIMEOUT_MAX 60000
#define VB_ASSISTANT_MAX_CALL_S_MAX   604800

/* Built-in tools, declared by the gemini stage; no HTTP tool may take
 * these names. */
#define VB_ASSISTANT_END_CALL      "end_call"
#define VB_ASSISTANT_TRANSFER_CALL "transfer_call"

/* The name of the assistant made of the flags when no file is given. */
#define VB_ASSISTANT_FLAGS_NAME "default"

typedef struct vb_assistant_tool {
    char *name;        /* [A-Za-z_][A-Za-z0-9_-]*, unique per assistant */
    char *description; /* "" when not given */
    char *parameters;  /* compact JSON object text (schema), or NULL */
    char *url;         /* http:// or https:// */
    uint32_t timeout_ms;
} vb_assistant_tool_t;

typedef struct vb_assistant_transfer {
    char *name;   /* what the model passes as transfer_call's target */
    char *target; /* E.164 (+14155550100) or a sip: URI */
} vb_assistant_transfer_t;

/* One assistant. Immutable after load; every string is NUL-terminated
 * and owned by the assistant. Share it with vb_assistant_ref(). */
typedef struct vb_assistant {
    char *name;
    char *instructions; /* system instruction ("" when none) */
    char *greeting;     /* "" when none: the model waits for the caller */
    char *voicemail;    /* said to an answering machine ("" when none) */
    char *voice;        /* a Gemini Live prebuilt voice */
    char *language;     /* BCP-47 */
    char *model;        /* Live model id */
    vb_assistant_tool_t *tools;
    size_t n_tools;
    vb_assistant_transfer_t *transfer;
    size_t n_transfer;
    uint32_t max_call_s; /* 0: no limit of its own */
    bool record;         /* record the call (call recording) */
    /* private */
    _Atomic uint32_t _refs;
} vb_assistant_t;

/* Takes a reference (returns `a`); accepts NULL. Any thread. */
vb_assistant_t *vb_assistant_ref(const vb_assistant_t *a);
/* Drops one; frees the assistant with the last. Accepts NULL. */
void vb_assistant_unref(const vb_assistant_t *a);

/* The tool named `name`, or NULL. */
const vb_assistant_tool_t *vb_assistant_tool(const vb_assistant_t *a,
                                             const char *name);
/* The transfer target named `name` (its E.164 / sip: text), or NULL. */
const char *vb_assistant_transfer_target(const vb_assistant_t *a,
                                         const char *name);

/* True for a Gemini Live prebuilt voice name (case-sensitive). */
bool vb_assistant_voice_known(const char *voice);

/* Builds the assistant today's flags describe (named "default"):
 * --system-prompt or the text of --system-prompt-file, --greeting,
 * --gemini-voice, --gemini-language, --gemini-model, --max-call-duration;
 * no tools, no transfer. Returns 0, VB_ECONFIG (unknown voice, unreadable
 * or oversized prompt file; reason in `err`), VB_ENOMEM. Main thread. */
int vb_assistant_from_config(const vb_config_t *c, vb_assistant_t **out,
                             char *err, size_t errsz);

/* An assistant given for one call as a JSON object with the fields of
 * the file's assistants (`text`, `len` bytes): fields it does not give,
 * tools and transfer targets included, come from `base`, whose name it
 * takes. Returns 0 and *out (one reference), VB_ECONFIG with "<field>:
 * <why>" in `err` (no line: the text is not a file), VB_EINVAL, VB_ENOMEM.
 * Any thread. */
int vb_assistant_parse_override(const char *text, size_t len,
                                const vb_assistant_t *base,
                                vb_assistant_t **out, char *err, size_t errsz);

/* ---- variables of an outbound call (docs/outbound.md) ---- */

#define VB_ASSISTANT_VAR_NAME_MAX 64 /* bytes of a variable's name */

/* True for a variable name: [A-Za-z_][A-Za-z0-9_]*, at most
 * VB_ASSISTANT_VAR_NAME_MAX bytes. */
bool vb_assistant_var_name_ok(const char *name);

/* A copy of `a` whose instructions and greeting have every `{{name}}` of
 * the JSON object `vars_json` (string values) replaced by its value;
 * placeholders it does not name stay as written. The result is checked as
 * an override of `a` (so a greeting grown past VB_ASSISTANT_GREETING_MAX
 * is refused). Returns 0 and *out (one reference), VB_ECONFIG (reason in
 * `err`), VB_EINVAL, VB_ENOMEM. Any thread. */
int vb_assistant_with_variables(const vb_assistant_t *a, const char *vars_json,
                                vb_assistant_t **out, char *err, size_t errsz);

/* ---- sets ---- */

typedef struct vb_assistants vb_assistants_t;

/* Parses and validates an assistants file held in `text` (`len` bytes;
 * `origin` names it in errors). Fields an assistant does not give come
 * from `base` (the flags' assistant; its tools and transfer are not
 * inherited). Returns 0 and a set holding one reference (*out), or
 * VB_ECONFIG with "<origin>:<line>: <field>: <why>" in `err`, VB_ENOMEM.
 * Any thread. */
int vb_assistants_parse(const char *text, size_t len, const char *origin,
                        const vb_assistant_t *base, vb_assistants_t **out,
                        char *err, size_t errsz);

/* Reads `path` (at most VB_ASSISTANT_FILE_MAX bytes) and parses it as
 * above. Also VB_ECONFIG for a file that cannot be read. */
int vb_assistants_load_file(const char *path, const vb_assistant_t *base,
                            vb_assistants_t **out, char *err, size_t errsz);

/* A set of one assistant, the default (takes a reference on `a`).
 * Returns 0, VB_EINVAL, VB_ENOMEM. */
int vb_assistants_single(const vb_assistant_t *a, vb_assistants_t **out);

/* The check `voxbridge --check` runs: builds the flags' assistant and, when
 * --assistants is set, loads the file with it. Returns 0 or the error of
 * the step that failed, with its reason in `err`. Main thread. */
int vb_assistants_check(const vb_config_t *c, char *err, size_t errsz);

vb_assistants_t *vb_assistants_ref(vb_assistants_t *s); /* accepts NULL */
void vb_assistants_unref(vb_assistants_t *s);           /* accepts NULL */

/* Lookups; the results are borrowed from the set (take a reference with
 * vb_assistant_ref() to keep one beyond the set). Any thread. */
const vb_assistant_t *vb_assistants_default(const vb_assistants_t *s);
const vb_assistant_t *vb_assistants_find(const vb_assistants_t *s,
                                         const char *name); /* or NULL */
/* The assistant of the called number `to`, else the default; *matched
 * (may be NULL) says whether the number was listed. */
const vb_assistant_t *vb_assistants_for_number(const vb_assistants_t *s,
                                               const char *to, bool *matched);
size_t vb_assistants_count(const vb_assistants_t *s);
/* The i-th assistant (0 <= i < count) in file order, or NULL. */
const vb_assistant_t *vb_assistants_at(const vb_assistants_t *s, size_t i);
/* Whether an assistant of `s` has an HTTP tool (a tool with a URL); the
 * first one's assistant and index in *assistant and *tool (may be NULL). */
bool vb_assistants_url_tool(const vb_assistants_t *s,
                            const vb_assistant_t **assistant, size_t *tool);

/* ---- the store: the current set, swapped on reload ---- */

typedef struct vb_assistant_store vb_assistant_store_t;

/* Creates a store holding `initial` (takes a reference). `path` (may be
 * NULL) is the file vb_assistant_store_reload() reads again, `base` the
 * flags' assistant missing fields come from (reference taken). Returns 0,
 * VB_EINVAL, VB_ENOMEM. Main thread. */
int vb_assistant_store_create(vb_assistants_t *initial, const char *path,
                              const vb_assistant_t *base,
                              vb_assistant_store_t **out);
void vb_assistant_store_destroy(vb_assistant_store_t *st); /* NULL ok */

/* The current set, with a reference the caller drops with
 * vb_assistants_unref(). Any thread; takes the store's mutex briefly. */
vb_assistants_t *vb_assistant_store_get(vb_assistant_store_t *st);

/* Makes `next` current (takes a reference) and drops the store's
 * reference on the previous set. Any thread. */
void vb_assistant_store_swap(vb_assistant_store_t *st, vb_assistants_t *next);

/* From now on vb_assistant_store_reload() refuses a file with HTTP tools:
 * without --webhook-secret their requests could not be signed. Main
 * thread, at start. */
void vb_assistant_store_refuse_url_tools(vb_assistant_store_t *st);
/* From now on a reload refuses a file with an assistant that asks for
 * "record" (there is no --record-dir). Main thread, before reloads. */
void vb_assistant_store_refuse_record(vb_assistant_store_t *st);

/* Loads the store's file again and swaps it in. On any error the current
 * set stays and `err` says why. Returns 0 (and the number of assistants in
 * *count, may be NULL), VB_ENOENT (the store has no file), VB_ECONFIG
 * (also: an HTTP tool after vb_assistant_store_refuse_url_tools()),
 * VB_ENOMEM. Main thread (SIGHUP). */
int vb_assistant_store_reload(vb_assistant_store_t *st, size_t *count,
                              char *err, size_t errsz);

/* A new reference on the assistant named `name` in the current set, or
 * NULL. Any thread. */
vb_assistant_t *vb_assistant_store_find(vb_assistant_store_t *st,
                                        const char *name);

/* Whether a call answered by the assistant named `name` is recorded: its
 * "record"; a name the current set does not know (or "") records as the
 * default does. One rule for the recorder and the report; a per-call
 * assistant from --assistant-url travels by the name it was built on, so
 * its own "record" is not what decides (docs/assistants.md). Any thread. */
bool vb_assistant_store_records(vb_assistant_store_t *st, const char *name);

/* ---- per-call context ---- */

/* What a call carries from the webhook to the gemini stage (the PREPARE
 * message, core/msg.h) and, on another instance, what the stream's start
 * rebuilds: the call's identifiers and the assistant answering it. */
typedef struct vb_call_ctx {
    char call_sid[64];
    char account_sid[64];
    char from[64];
    char to[64];
    char direction[32]; /* Twilio's Direction: inbound, outbound-api ... */
    vb_assistant_t *assistant; /* a reference, dropped by _destroy */
    char *variables;           /* JSON object text for outbound calls, or
                                * NULL */
} vb_call_ctx_t;

/* Makes a context for `call_sid` holding a new reference on `a` (may be
 * NULL); the other strings may be NULL (stored as ""), longer ones are
 * cut. Returns NULL when out of memory. Any thread. */
vb_call_ctx_t *vb_call_ctx_create(const char *call_sid, const char *account_sid,
                                  const char *from, const char *to,
                                  const char *direction,
                                  const vb_assistant_t *a);
void vb_call_ctx_destroy(vb_call_ctx_t *c); /* accepts NULL */

#endif
