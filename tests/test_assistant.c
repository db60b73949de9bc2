/* SPDX-License-Identifier: MIT */
#include "core/assistant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/err.h"
#include "tests/test.h"

static char err[1024];

/* The flags' assistant of a default configuration. */
static vb_assistant_t *base_assistant(void)
{
    vb_config_t c;
    const char *argv[] = {"voxbridge", NULL};
    ASSERT_EQ(vb_config_load(&c, 1, argv, err, sizeof err), 0);
    vb_assistant_t *a = NULL;
    ASSERT_EQ(vb_assistant_from_config(&c, &a, err, sizeof err), 0);
    vb_config_free(&c);
    return a;
}

static const char good[] =
    "{\"default\": \"front-desk\",\n"
    " \"assistants\": {\"front-desk\": {\n"
    "     \"instructions\": \"You answer for Acme.\", \"greeting\": \"Hi!\",\n"
    "     \"voice\": \"Kore\", \"language\": \"en-GB\",\n"
    "     \"model\": \"gemini-3.8-live\",\n"
    "     \"tools\": [{\"name\": \"lookup_order\", \"description\": \"Find "
    "an order\",\n"
    "                \"parameters\": {\"type\": \"object\", \"properties\": "
    "{\"order_id\": {\"type\": \"string\"}},\n"
    "                               \"required\": [\"order_id\"]},\n"
    "                \"url\": \"https://app.example.com/tools/lookup_order\", "
    "\"timeout_ms\": 4000},\n"
    "               {\"name\": \"book\", \"url\": "
    "\"http://127.0.0.1:9/book\"}],\n"
    "     \"transfer\": {\"sales\": \"+14155550100\", \"support\": "
    "\"sip:help@pbx.example.com\"},\n"
    "     \"max_call_s\": 1800, \"record\": true},\n"
    "   \"sales-bot\": {\"voice\": \"Charon\"}},\n"
    " \"numbers\": {\"+18005550199\": \"front-desk\", \"+18005550123\": "
    "\"sales-bot\"}}\n";

TEST(assistant_good_file_loads_every_field)
{
    vb_assistant_t *base = base_assistant();
    vb_assistants_t *s = NULL;
    ASSERT_EQ(vb_assistants_parse(good, strlen(good), "a.json", base, &s, err,
                                  sizeof err),
              0);
    ASSERT_EQ(vb_assistants_count(s), 2);
    const vb_assistant_t *d = vb_assistants_default(s);
    ASSERT_STR_EQ(d->name, "front-desk");
    ASSERT_STR_EQ(d->instructions, "You answer for Acme.");
    ASSERT_STR_EQ(d->greeting, "Hi!");
    ASSERT_STR_EQ(d->voice, "Kore");
    ASSERT_STR_EQ(d->language, "en-GB");
    ASSERT_STR_EQ(d->model, "gemini-3.8-live");
    ASSERT_EQ(d->max_call_s, 1800);
    ASSERT_TRUE(d->record);
    ASSERT_EQ(d->n_tools, 2);
    const vb_assistant_tool_t *t = vb_assistant_tool(d, "lookup_order");
    ASSERT_NOT_NULL(t);
    ASSERT_STR_EQ(t->description, "Find an order");
    ASSERT_STR_EQ(t->url, "https://app.example.com/tools/lookup_order");
    ASSERT_EQ(t->timeout_ms, 4000);
    ASSERT_STR_EQ(t->parameters,
                  "{\"type\":\"object\",\"properties\":{\"order_id\":{"
                  "\"type\":\"string\"}},\"required\":[\"order_id\"]}");
    const vb_assistant_tool_t *b = vb_assistant_tool(d, "book");
    ASSERT_EQ(b->timeout_ms, VB_ASSISTANT_TOOL_TIMEOUT_MS);
    ASSERT_NULL(b->parameters);
    ASSERT_STR_EQ(b->description, "");
    ASSERT_NULL(vb_assistant_tool(d, "nope"));
    ASSERT_STR_EQ(vb_assistant_transfer_target(d, "sales"), "+14155550100");
    ASSERT_STR_EQ(vb_assistant_transfer_target(d, "support"),
                  "sip:help@pbx.example.com");
    ASSERT_NULL(vb_assistant_transfer_target(d, "boss"));

    /* Fields not given come from the flags; tools do not. */
    const vb_assistant_t *sb = vb_assistants_find(s, "sales-bot");
    ASSERT_NOT_NULL(sb);
    ASSERT_STR_EQ(sb->voice, "Charon");
    ASSERT_STR_EQ(sb->instructions, base->instructions);
    ASSERT_STR_EQ(sb->language, "en-US");
    ASSERT_STR_EQ(sb->model, base->model);
    ASSERT_EQ(sb->n_tools, 0);
    ASSERT_EQ(sb->n_transfer, 0);
    ASSERT_TRUE(!sb->record);

    bool matched;
    ASSERT_TRUE(vb_assistants_for_number(s, "+18005550123", &matched) == sb);
    ASSERT_TRUE(matched);
    ASSERT_TRUE(vb_assistants_for_number(s, "+18005550199", &matched) == d);
    ASSERT_TRUE(vb_assistants_for_number(s, "+19999999999", &matched) == d);
    ASSERT_TRUE(!matched);
    ASSERT_TRUE(vb_assistants_for_number(s, NULL, &matched) == d);
    vb_assistants_unref(s);
    vb_assistant_unref(base);
}

/* Parses `text`; expects it refused with `want` in the message. */
static void refused(const char *text, const char *want)
{
    vb_assistant_t *base = base_assistant();
    vb_assistants_t *s = (vb_assistants_t *)1;
    int rc = vb_assistants_parse(text, strlen(text), "a.json", base, &s, err,
                                 sizeof err);
    if (rc != VB_ECONFIG)
        vb_test_fail(__FILE__, __LINE__, "accepted (%d): %s", rc, text);
    ASSERT_NULL(s);
    if (strstr(err, want) == NULL)
        vb_test_fail(__FILE__, __LINE__, "error \"%s\" lacks \"%s\"", err,
                     want);
    printf("  %s\n", err);
    vb_assistant_unref(base);
}

/* One assistant "a" whose body (JSON members) is `members`, each on a
 * line of its own starting at line 3. */
static const char *one(const char *members)
{
    static char buf[8192];
    snprintf(buf, sizeof buf,
             "{\"default\": \"a\",\n \"assistants\": {\"a\": "
             "{\n%s\n}}}\n",
             members);
    return buf;
}

TEST(assistant_syntax_error_names_its_line)
{
    refused("{\"assistants\": {\n \"a\": {\n  \"voice\": \"Puck\",,\n}}}",
            "a.json:3: not valid JSON");
    refused("", "a.json:1: not valid JSON");
    refused("{\"assistants\": {\"a\": {}}} trailing", "a.json:1: not valid");
}

TEST(assistant_unknown_keys_are_refused)
{
    refused(one("\"voice\": \"Puck\",\n\"colour\": \"blue\""),
            "a.json:4: assistants.a.colour: unknown key");
    refused("{\"assistants\": {\"a\": {}},\n \"extra\": 1}",
            "a.json:2: (top level).extra: unknown key");
    refused(one("\"tools\": [{\"name\": \"t\", \"url\": \"http://h/\",\n"
                "\"retries\": 3}]"),
            "a.json:4: assistants.a.tools[0].retries: unknown key");
    refused(one("\"voice\": \"Puck\",\n\"voice\": \"Kore\""),
            "a.json:4: assistants.a.voice: given twice");
}

TEST(assistant_unknown_voice_and_bad_fields)
{
    refused(one("\"voice\": \"puck\""),
            "a.json:3: assistants.a.voice: unknown voice \"puck\"");
    refused(one("\"language\": \"english\""),
            "a.json:3: assistants.a.language: \"english\" is not a BCP-47");
    refused(one("\n\"model\": \"bad model\""), "a.json:4: assistants.a.model");
    refused(one("\"instructions\": 7"),
            "a.json:3: assistants.a.instructions: must be a string");
    refused(one("\"max_call_s\": -1"), "a.json:3: assistants.a.max_call_s");
    refused(one("\"max_call_s\": 1.5"), "assistants.a.max_call_s");
    refused(one("\"record\": \"yes\""),
            "a.json:3: assistants.a.record: must be true or false");
    refused("{\"assistants\": {\"a b\": {}}}", "assistants.a b: an assistant "
                                               "name");
}

TEST(assistant_bad_tools_are_refused)
{
    refused(one("\"tools\": [{\"name\": \"t\", \"url\": \"http://h/\"},\n"
                "{\"name\": \"t\", \"url\": \"http://h/\"}]"),
            "a.json:4: assistants.a.tools[1].name: duplicate tool name \"t\"");
    refused(one("\"tools\": [{\"name\": \"end_call\", \"url\": "
                "\"http://h/\"}]"),
            "assistants.a.tools[0].name: \"end_call\" is a built-in tool");
    refused(one("\"tools\": [{\"name\": \"transfer_call\", \"url\": "
                "\"http://h/\"}]"),
            "\"transfer_call\" is a built-in tool");
    refused(one("\"tools\": [{\"name\": \"9lives\", \"url\": \"http://h/\"}]"),
            "assistants.a.tools[0].name: \"9lives\"");
    refused(one("\"tools\": [{\"name\": \"t\",\n\"url\": \"ftp://h/x\"}]"),
            "a.json:4: assistants.a.tools[0].url: must be an http:// or "
            "https:// URL");
    refused(one("\"tools\": [{\"name\": \"t\"}]"),
            "assistants.a.tools[0].url: missing");
    refused(one("\"tools\": [{\"name\": \"t\", \"url\": \"http://h/\",\n"
                "\"timeout_ms\": 99}]"),
            "a.json:4: assistants.a.tools[0].timeout_ms: 99 is outside "
            "100..60000");
    refused(one("\"tools\": [{\"name\": \"t\", \"url\": \"http://h/\", "
                "\"timeout_ms\": 60001}]"),
            "60001 is outside");
    refused(one("\"tools\": {}"), "assistants.a.tools: must be an array");
}

TEST(assistant_bad_schemas_are_refused)
{
    const char *pre = "\"tools\": [{\"name\": \"t\", \"url\": \"http://h/\",\n"
                      "\"parameters\": ";
    char b[2048];
    snprintf(b, sizeof b,
             "%s{\"type\": \"object\", \"properties\": {\n"
             "\"x\": {\"type\": \"text\"}}}}]",
             pre);
    refused(one(b), "a.json:5: assistants.a.tools[0].parameters.properties.x."
                    "type: \"text\" is not one of");
    snprintf(b, sizeof b,
             "%s{\"type\": \"object\", \"properties\": {},\n"
             "\"required\": [\"order_id\"]}}]",
             pre);
    refused(one(b), "a.json:5: assistants.a.tools[0].parameters.required: "
                    "\"order_id\" is not in properties");
    snprintf(b, sizeof b, "%s{\"type\": \"string\"}}]", pre);
    refused(one(b), "the top level must be of type object");
    snprintf(b, sizeof b,
             "%s{\"type\": \"object\", \"properties\": {\"l\": "
             "{\"type\": \"array\"}}}}]",
             pre);
    refused(one(b), "parameters.properties.l.items: an array needs items");
    snprintf(b, sizeof b,
             "%s{\"type\": \"object\", \"additionalProperties\": "
             "false}}]",
             pre);
    refused(one(b), "parameters.additionalProperties: unknown key");
    snprintf(b, sizeof b,
             "%s{\"type\": \"object\", \"properties\": {\"e\": "
             "{\"type\": \"string\", \"enum\": [1]}}}}]",
             pre);
    refused(one(b), "parameters.properties.e.enum: must be a non-empty array");
    /* Nested too deep. */
    char deep[2048] = "";
    for (int i = 0; i < 10; i++)
        strcat(deep, "{\"type\": \"object\", \"properties\": {\"p\": ");
    strcat(deep, "{\"type\": \"string\"}");
    for (int i = 0; i < 10; i++)
        strcat(deep, "}}");
    snprintf(b, sizeof b, "%s%s}]", pre, deep);
    refused(one(b), "nested deeper than 8");
}

TEST(assistant_bad_transfer_and_numbers_are_refused)
{
    refused(
        one("\"transfer\": {\"sales\": \"+1415\",\n\"ops\": \"4155550100\"}"),
        "a.json:4: assistants.a.transfer.ops: \"4155550100\" is neither "
        "an E.164 number");
    refused(one("\"transfer\": {\"sales\": \"sip:\"}"),
            "assistants.a.transfer.sales: \"sip:\" is neither");
    refused(one("\"transfer\": {\"sales\": \"sip:a b@c\"}"),
            "assistants.a.transfer.sales");
    refused(one("\"transfer\": {\"bad name\": \"+14155550100\"}"),
            "assistants.a.transfer.bad name: a target name");
    refused(one("\"transfer\": [\"+14155550100\"]"),
            "assistants.a.transfer: must be an object");
    refused("{\"assistants\": {\"a\": {}},\n"
            " \"numbers\": {\"+18005550199\": \"b\"}}",
            "a.json:2: numbers.+18005550199: no assistant named \"b\"");
    refused("{\"assistants\": {\"a\": {}},\n"
            " \"numbers\": {\"18005550199\": \"a\"}}",
            "a.json:2: numbers.18005550199: a called number is E.164");
    refused("{\"assistants\": {\"a\": {}, \"b\": {}}}",
            "default: missing (required with more than one assistant)");
    refused("{\"default\": \"c\", \"assistants\": {\"a\": {}}}",
            "a.json:1: default: no assistant named \"c\"");
    refused("{\"assistants\": {}}", "assistants: must be an object of at "
                                    "least one");
    refused("[1]", "(top level): must be an object");
}

TEST(assistant_single_default_and_file)
{
    vb_assistant_t *base = base_assistant();
    ASSERT_STR_EQ(base->name, "default");
    ASSERT_STR_EQ(base->voice, "Puck");
    vb_assistants_t *s = NULL;
    /* One assistant: it is the default without saying so. */
    const char *t = "{\"assistants\": {\"only\": {\"greeting\": \"Hello\"}}}";
    ASSERT_EQ(vb_assistants_parse(t, strlen(t), "x", base, &s, err, sizeof err),
              0);
    ASSERT_STR_EQ(vb_assistants_default(s)->name, "only");
    vb_assistants_unref(s);

    char path[512];
    snprintf(path, sizeof path, "%s/a.json", vb_test_tmpdir());
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(good, f);
    fclose(f);
    ASSERT_EQ(vb_assistants_load_file(path, base, &s, err, sizeof err), 0);
    ASSERT_EQ(vb_assistants_count(s), 2);
    vb_assistants_unref(s);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none.json", vb_test_tmpdir());
    ASSERT_EQ(vb_assistants_load_file(missing, base, &s, err, sizeof err),
              VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, "none.json: cannot read");

    /* --check's function: the flags alone, then with the file. */
    vb_config_t c;
    const char *argv[] = {"voxbridge", "--assistants", path, NULL};
    ASSERT_EQ(vb_config_load(&c, 3, argv, err, sizeof err), 0);
    ASSERT_EQ(vb_assistants_check(&c, err, sizeof err), 0);
    f = fopen(path, "w");
    fputs(one("\"voice\": \"Nobody\""), f);
    fclose(f);
    ASSERT_EQ(vb_assistants_check(&c, err, sizeof err), VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, ":3: assistants.a.voice: unknown voice");
    vb_config_free(&c);
    const char *argv2[] = {"voxbridge", "--gemini-voice", "Bob", NULL};
    ASSERT_EQ(vb_config_load(&c, 3, argv2, err, sizeof err), 0);
    ASSERT_EQ(vb_assistants_check(&c, err, sizeof err), VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, "--gemini-voice");
    vb_config_free(&c);
    vb_assistant_unref(base);
}

TEST(assistant_store_swap_keeps_what_calls_hold)
{
    vb_assistant_t *base = base_assistant();
    char path[512];
    snprintf(path, sizeof path, "%s/a.json", vb_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("{\"assistants\": {\"one\": {\"voice\": \"Kore\"}}}", f);
    fclose(f);
    vb_assistants_t *s = NULL;
    ASSERT_EQ(vb_assistants_load_file(path, base, &s, err, sizeof err), 0);
    vb_assistant_store_t *st = NULL;
    ASSERT_EQ(vb_assistant_store_create(s, path, base, &st), 0);
    vb_assistants_unref(s);

    /* A call holds the current "one". */
    vb_assistant_t *held = vb_assistant_store_find(st, "one");
    ASSERT_NOT_NULL(held);
    vb_call_ctx_t *ctx =
        vb_call_ctx_create("CA1", "AC1", "+1555", "+1800", "inbound", held);
    vb_assistant_unref(held);
    ASSERT_STR_EQ(ctx->call_sid, "CA1");
    ASSERT_STR_EQ(ctx->direction, "inbound");

    f = fopen(path, "w");
    fputs("{\"assistants\": {\"two\": {\"voice\": \"Charon\"}}}", f);
    fclose(f);
    size_t n = 0;
    ASSERT_EQ(vb_assistant_store_reload(st, &n, err, sizeof err), 0);
    ASSERT_EQ(n, 1);
    vb_assistants_t *cur = vb_assistant_store_get(st);
    ASSERT_STR_EQ(vb_assistants_default(cur)->name, "two");
    vb_assistants_unref(cur);
    ASSERT_NULL(vb_assistant_store_find(st, "one"));
    /* The old set is gone from the store, the call's assistant is not. */
    ASSERT_STR_EQ(ctx->assistant->name, "one");
    ASSERT_STR_EQ(ctx->assistant->voice, "Kore");

    /* A bad file leaves the current set. */
    f = fopen(path, "w");
    fputs("{\"assistants\": {\"three\": {\"voice\": 1}}}", f);
    fclose(f);
    ASSERT_EQ(vb_assistant_store_reload(st, &n, err, sizeof err), VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, "assistants.three.voice: must be a string");
    cur = vb_assistant_store_get(st);
    ASSERT_STR_EQ(vb_assistants_default(cur)->name, "two");
    vb_assistants_unref(cur);

    vb_call_ctx_destroy(ctx);
    vb_call_ctx_destroy(NULL);
    vb_assistant_store_destroy(st);

    /* Without a file there is nothing to reload. */
    ASSERT_EQ(vb_assistants_single(base, &s), 0);
    ASSERT_EQ(vb_assistant_store_create(s, NULL, base, &st), 0);
    vb_assistants_unref(s);
    ASSERT_EQ(vb_assistant_store_reload(st, NULL, err, sizeof err), VB_ENOENT);
    vb_assistant_store_destroy(st);
    vb_assistant_unref(base);
}

TEST(assistant_voices)
{
    ASSERT_TRUE(vb_assistant_voice_known("Puck"));
    ASSERT_TRUE(vb_assistant_voice_known("Sulafat"));
    ASSERT_TRUE(!vb_assistant_voice_known("puck"));
    ASSERT_TRUE(!vb_assistant_voice_known(""));
    ASSERT_TRUE(!vb_assistant_voice_known(NULL));
}

TEST(assistant_override_inherits_from_the_number)
{
    vb_assistant_t *base = base_assistant();
    vb_assistants_t *s = NULL;
    ASSERT_EQ(vb_assistants_parse(good, strlen(good), "a.json", base, &s, err,
                                  sizeof err),
              0);
    const vb_assistant_t *desk = vb_assistants_find(s, "front-desk");
    vb_assistant_t *a = NULL;
    const char *o = "{\"voice\": \"Leda\", \"instructions\": \"Per call.\"}";
    ASSERT_EQ(
        vb_assistant_parse_override(o, strlen(o), desk, &a, err, sizeof err),
        0);
    ASSERT_STR_EQ(a->name, "front-desk");
    ASSERT_STR_EQ(a->voice, "Leda");
    ASSERT_STR_EQ(a->instructions, "Per call.");
    ASSERT_STR_EQ(a->greeting, "Hi!");
    ASSERT_EQ(a->n_tools, 2);
    ASSERT_STR_EQ(a->tools[0].parameters, desk->tools[0].parameters);
    ASSERT_STR_EQ(vb_assistant_transfer_target(a, "support"),
                  "sip:help@pbx.example.com");
    ASSERT_EQ(a->max_call_s, 1800);
    vb_assistant_unref(a);
    /* Given lists replace the number's. */
    o = "{\"tools\": [], \"transfer\": {\"boss\": \"+14155550111\"}}";
    ASSERT_EQ(
        vb_assistant_parse_override(o, strlen(o), desk, &a, err, sizeof err),
        0);
    ASSERT_EQ(a->n_tools, 0);
    ASSERT_EQ(a->n_transfer, 1);
    vb_assistant_unref(a);
    /* Refused like a file's assistant, field named. */
    o = "{\"voice\": \"Nobody\"}";
    ASSERT_EQ(
        vb_assistant_parse_override(o, strlen(o), desk, &a, err, sizeof err),
        VB_ECONFIG);
    ASSERT_NULL(a);
    ASSERT_STR_CONTAINS(err, "assistant.voice: unknown voice");
    o = "{\"colour\": 1}";
    ASSERT_EQ(
        vb_assistant_parse_override(o, strlen(o), desk, &a, err, sizeof err),
        VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, "assistant.colour: unknown key");
    ASSERT_EQ(vb_assistant_parse_override("[]", 2, desk, &a, err, sizeof err),
              VB_ECONFIG);
    ASSERT_EQ(vb_assistant_parse_override("nope", 4, desk, &a, err, sizeof err),
              VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, "not valid JSON");
    vb_assistants_unref(s);
    vb_assistant_unref(base);
}

TEST(assistant_voicemail_field_is_validated)
{
    refused(one("\"voicemail\": 3"),
            "a.json:3: assistants.a.voicemail: must be a string");
    char big[1200];
    memset(big, 'x', 1001);
    big[1001] = '\0';
    char text[1400];
    snprintf(text, sizeof text, "\"voicemail\": \"%s\"", big);
    refused(one(text), "assistants.a.voicemail: longer than 1000 bytes");
    vb_assistant_t *base = base_assistant();
    vb_assistants_t *s = NULL;
    const char *f = "{\"assistants\": {\"a\": {\"voicemail\": \"Call back.\"},"
                    " \"b\": {}}, \"default\": \"a\"}";
    ASSERT_EQ(
        vb_assistants_parse(f, strlen(f), "a.json", base, &s, err, sizeof err),
        0);
    ASSERT_STR_EQ(vb_assistants_find(s, "a")->voicemail, "Call back.");
    ASSERT_STR_EQ(vb_assistants_find(s, "b")->voicemail, "");
    vb_assistants_unref(s);
    vb_assistant_unref(base);
}

TEST(assistant_variables_are_substituted)
{
    vb_assistant_t *base = base_assistant();
    const char *o = "{\"instructions\": \"Call {{name}} about {{order}}; "
                    "{{nope}} and {{ name }} stay, {{name}} twice.\", "
                    "\"greeting\": \"Hi {{name}}{{\", \"voice\": \"Fenrir\"}";
    vb_assistant_t *a = NULL, *v = NULL;
    ASSERT_EQ(
        vb_assistant_parse_override(o, strlen(o), base, &a, err, sizeof err),
        0);
    /* A value with quotes, braces and a newline stays text. */
    ASSERT_EQ(vb_assistant_with_variables(
                  a,
                  "{\"name\": \"Ann \\\"Q\\\" {{order}}\\n\", \"order\": "
                  "\"A-1\"}",
                  &v, err, sizeof err),
              0);
    ASSERT_STR_EQ(v->instructions,
                  "Call Ann \"Q\" {{order}}\n about A-1; {{nope}} and "
                  "{{ name }} stay, Ann \"Q\" {{order}}\n twice.");
    ASSERT_STR_EQ(v->greeting, "Hi Ann \"Q\" {{order}}\n{{");
    ASSERT_STR_EQ(v->voice, "Fenrir");
    ASSERT_STR_EQ(v->name, a->name);
    vb_assistant_unref(v);
    /* Not an object; a greeting grown past its limit. */
    ASSERT_EQ(vb_assistant_with_variables(a, "[1]", &v, err, sizeof err),
              VB_ECONFIG);
    ASSERT_NULL(v);
    char big[2100 + 64];
    memset(big, 0, sizeof big);
    strcpy(big, "{\"name\": \"");
    memset(big + strlen(big), 'x', 2100);
    strcat(big, "\"}");
    ASSERT_EQ(vb_assistant_with_variables(a, big, &v, err, sizeof err),
              VB_ECONFIG);
    ASSERT_STR_CONTAINS(err, "greeting");
    ASSERT_TRUE(vb_assistant_var_name_ok("first_name"));
    ASSERT_TRUE(vb_assistant_var_name_ok("_x9"));
    ASSERT_TRUE(!vb_assistant_var_name_ok("9x"));
    ASSERT_TRUE(!vb_assistant_var_name_ok("a-b"));
    ASSERT_TRUE(!vb_assistant_var_name_ok(""));
    vb_assistant_unref(a);
    vb_assistant_unref(base);
}
