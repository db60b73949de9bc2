/* SPDX-License-Identifier: MIT */
#include "core/err.h"
#include "net/twiml.h"
#include "tests/test.h"

static char *finish(vb_twiml_t *t)
{
    char *doc;
    size_t len;
    ASSERT_EQ(vb_twiml_finish(t, &doc, &len), 0);
    ASSERT_EQ(strlen(doc), len);
    return doc;
}

TEST(twiml_escapes_five_specials_in_text_and_attributes)
{
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_say(&t, "Tom & Jerry <say> \"hi\" it's");
    vb_twiml_param_t p[] = {{"a&b", "x<y>\"z'"}};
    vb_twiml_connect_stream(&t, "wss://h/p?a=1&b=2", p, 1);
    char *doc = finish(&t);
    ASSERT_STR_CONTAINS(
        doc, "<Say>Tom &amp; Jerry &lt;say&gt; &quot;hi&quot; it&apos;s</Say>");
    ASSERT_STR_CONTAINS(doc, "<Stream url=\"wss://h/p?a=1&amp;b=2\">");
    ASSERT_STR_CONTAINS(
        doc, "<Parameter name=\"a&amp;b\" value=\"x&lt;y&gt;&quot;z&apos;\"/>");
    free(doc);
}

TEST(twiml_document_shape)
{
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_say(&t, "Connecting");
    vb_twiml_param_t p[] = {{"streamToken", "tok"},
                            {"CallSid", "CA1"},
                            {"From", NULL},
                            {"To", "+1"}};
    vb_twiml_connect_stream(&t, "wss://voice.example.com/media-stream/0", p, 4);
    vb_twiml_say(&t, "Goodbye");
    vb_twiml_hangup(&t);
    char *doc = finish(&t);
    ASSERT_STR_EQ(doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                       "<Response><Say>Connecting</Say>"
                       "<Connect><Stream "
                       "url=\"wss://voice.example.com/media-stream/0\">"
                       "<Parameter name=\"streamToken\" value=\"tok\"/>"
                       "<Parameter name=\"CallSid\" value=\"CA1\"/>"
                       "<Parameter name=\"To\" value=\"+1\"/>"
                       "</Stream></Connect>"
                       "<Say>Goodbye</Say><Hangup/></Response>\n");
    free(doc);
}

TEST(twiml_dial_number_and_sip)
{
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_dial(&t, "+14155550100");
    char *doc = finish(&t);
    ASSERT_STR_EQ(doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                       "<Response><Dial>+14155550100</Dial></Response>\n");
    free(doc);
    vb_twiml_init(&t);
    vb_twiml_dial(&t, "sip:help@pbx.example.com;x=<&>");
    doc = finish(&t);
    ASSERT_STR_CONTAINS(doc, "<Dial><Sip>sip:help@pbx.example.com;x=&lt;&amp;"
                             "&gt;</Sip></Dial>");
    free(doc);
}

TEST(twiml_empty_say_omitted)
{
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_say(&t, "");
    vb_twiml_say(&t, NULL);
    vb_twiml_hangup(&t);
    char *doc = finish(&t);
    ASSERT_TRUE(strstr(doc, "<Say>") == NULL);
    ASSERT_STR_CONTAINS(doc, "<Response><Hangup/></Response>");
    free(doc);
}

TEST(twiml_escape_repairs_what_xml_cannot_hold)
{
    char out[128];
    /* Control bytes dropped, tab/LF/CR as references. */
    size_t n = vb_twiml_escape(out, sizeof(out), "a\x01\x1f\tb\nc\rd", 10);
    ASSERT_STR_EQ(out, "a&#9;b&#10;c&#13;d");
    ASSERT_EQ(n, strlen(out));
    /* Valid UTF-8 kept. */
    vb_twiml_escape(out, sizeof(out), "caf\xc3\xa9 \xf0\x9f\x98\x80", 10);
    ASSERT_STR_EQ(out, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    /* Invalid UTF-8 (lone continuation, overlong, surrogate, truncated)
     * becomes U+FFFD per bad byte. */
    vb_twiml_escape(out, sizeof(out), "\x80", 1);
    ASSERT_STR_EQ(out, "\xef\xbf\xbd");
    vb_twiml_escape(out, sizeof(out), "\xc0\xaf", 2);
    ASSERT_STR_EQ(out, "\xef\xbf\xbd\xef\xbf\xbd");
    vb_twiml_escape(out, sizeof(out), "\xed\xa0\x80", 3);
    ASSERT_STR_EQ(out, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    vb_twiml_escape(out, sizeof(out), "x\xe2\x82", 3);
    ASSERT_STR_EQ(out, "x\xef\xbf\xbd\xef\xbf\xbd");
    vb_twiml_escape(out, sizeof(out), "\xef\xbf\xbf", 3); /* U+FFFF */
    ASSERT_STR_EQ(out, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(twiml_escape_truncates_like_snprintf)
{
    char out[6];
    size_t n = vb_twiml_escape(out, sizeof(out), "a&b", 3);
    ASSERT_EQ(n, 7); /* "a&amp;b" */
    ASSERT_STR_EQ(out, "a&amp");
    ASSERT_EQ(vb_twiml_escape(NULL, 0, "<<", 2), 8);
}

TEST(twiml_long_text)
{
    size_t n = 100000;
    char *s = malloc(n + 1);
    ASSERT_NOT_NULL(s);
    for (size_t i = 0; i < n; i++)
        s[i] = i % 2 ? '"' : 'x';
    s[n] = '\0';
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_say(&t, s);
    char *doc = finish(&t);
    ASSERT_GT(strlen(doc), n / 2 * 6);
    free(doc);
    free(s);
    vb_twiml_free(NULL);
}

TEST(twiml_connect_action_status_callback_and_reject)
{
    vb_twiml_t t;
    vb_twiml_init(&t);
    vb_twiml_param_t p[] = {{"CallSid", "CA1"}};
    vb_twiml_connect_stream_cb(&t, "wss://h/s", "https://h/a?x=1&y=2",
                               "https://h/cb", p, 1);
    char *doc = finish(&t);
    ASSERT_STR_EQ(doc,
                  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<Response><Connect action=\"https://h/a?x=1&amp;y=2\">"
                  "<Stream url=\"wss://h/s\" statusCallback=\"https://h/cb\">"
                  "<Parameter name=\"CallSid\" value=\"CA1\"/></Stream>"
                  "</Connect></Response>\n");
    free(doc);
    /* Empty action and callback: neither attribute. */
    vb_twiml_init(&t);
    vb_twiml_connect_stream_cb(&t, "wss://h/s", "", NULL, NULL, 0);
    doc = finish(&t);
    ASSERT_STR_CONTAINS(doc, "<Connect><Stream url=\"wss://h/s\"></Stream>");
    free(doc);
    vb_twiml_init(&t);
    vb_twiml_reject(&t, "busy");
    doc = finish(&t);
    ASSERT_STR_CONTAINS(doc, "<Response><Reject reason=\"busy\"/></Response>");
    free(doc);
}
