/* SPDX-License-Identifier: MIT */
#include "core/err.h"
#include "net/form.h"
#include "tests/test.h"

static vb_form_t parse_ok(const char *s)
{
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, s, strlen(s), 0), 0);
    return f;
}

TEST(form_basic_pairs_in_order)
{
    vb_form_t f = parse_ok("CallSid=CA123&From=%2B14155550100&To=+1");
    ASSERT_EQ(f.n, 3);
    ASSERT_STR_EQ(f.pairs[0].name, "CallSid");
    ASSERT_STR_EQ(f.pairs[0].value, "CA123");
    ASSERT_STR_EQ(f.pairs[1].name, "From");
    ASSERT_STR_EQ(f.pairs[1].value, "+14155550100");
    ASSERT_STR_EQ(f.pairs[2].value, " 1");
    ASSERT_STR_EQ(vb_form_get(&f, "From"), "+14155550100");
    ASSERT_NULL(vb_form_get(&f, "from"));
    ASSERT_NULL(vb_form_get(&f, "Missing"));
    vb_form_free(&f);
}

TEST(form_plus_and_percent)
{
    vb_form_t f = parse_ok("a+b=c+d&%41%62=%7e%7E&x=100%25");
    ASSERT_EQ(f.n, 3);
    ASSERT_STR_EQ(f.pairs[0].name, "a b");
    ASSERT_STR_EQ(f.pairs[0].value, "c d");
    ASSERT_STR_EQ(f.pairs[1].name, "Ab");
    ASSERT_STR_EQ(f.pairs[1].value, "~~");
    ASSERT_STR_EQ(f.pairs[2].value, "100%");
    vb_form_free(&f);
}

TEST(form_malformed_percent_kept_literally)
{
    vb_form_t f = parse_ok("a=%G1&b=%4&c=%&d=%%41&e=50%+off");
    ASSERT_EQ(f.n, 5);
    ASSERT_STR_EQ(vb_form_get(&f, "a"), "%G1");
    ASSERT_STR_EQ(vb_form_get(&f, "b"), "%4");
    ASSERT_STR_EQ(vb_form_get(&f, "c"), "%");
    ASSERT_STR_EQ(vb_form_get(&f, "d"), "%A");
    ASSERT_STR_EQ(vb_form_get(&f, "e"), "50% off");
    vb_form_free(&f);
}

TEST(form_repeated_keys_kept)
{
    vb_form_t f = parse_ok("Digits=5678&Digits=1234&Digits=1234");
    ASSERT_EQ(f.n, 3);
    ASSERT_STR_EQ(f.pairs[0].value, "5678");
    ASSERT_STR_EQ(f.pairs[1].value, "1234");
    ASSERT_STR_EQ(f.pairs[2].value, "1234");
    ASSERT_STR_EQ(vb_form_get(&f, "Digits"), "5678");
    vb_form_free(&f);
}

TEST(form_empty_values_and_segments)
{
    vb_form_t f = parse_ok("&a=&&b&=v&c=x=y&");
    ASSERT_EQ(f.n, 4);
    ASSERT_STR_EQ(f.pairs[0].name, "a");
    ASSERT_STR_EQ(f.pairs[0].value, "");
    ASSERT_EQ(f.pairs[0].value_len, 0);
    ASSERT_STR_EQ(f.pairs[1].name, "b");
    ASSERT_STR_EQ(f.pairs[1].value, "");
    ASSERT_STR_EQ(f.pairs[2].name, "");
    ASSERT_STR_EQ(f.pairs[2].value, "v");
    ASSERT_STR_EQ(f.pairs[3].name, "c");
    ASSERT_STR_EQ(f.pairs[3].value, "x=y");
    vb_form_free(&f);

    f = parse_ok("");
    ASSERT_EQ(f.n, 0);
    ASSERT_NULL(vb_form_get(&f, "a"));
    vb_form_free(&f);
    f = parse_ok("&&&");
    ASSERT_EQ(f.n, 0);
    vb_form_free(&f);
}

TEST(form_embedded_nul_keeps_length)
{
    vb_form_t f = parse_ok("k=a%00b");
    ASSERT_EQ(f.n, 1);
    ASSERT_EQ(f.pairs[0].value_len, 3);
    ASSERT_MEM_EQ(f.pairs[0].value, "a\0b", 3);
    vb_form_free(&f);
}

TEST(form_pair_limit)
{
    vb_form_t f;
    ASSERT_EQ(vb_form_parse(&f, "a=1&b=2&c=3", 11, 2), VB_EMSGSIZE);
    ASSERT_EQ(f.n, 0);
    vb_form_free(&f);
    ASSERT_EQ(vb_form_parse(&f, "a=1&b=2&&", 9, 2), 0);
    ASSERT_EQ(f.n, 2);
    vb_form_free(&f);
    vb_form_free(NULL);
}

TEST(form_length_bounded_input)
{
    /* Only `len` bytes are read: the rest of the string is not a pair. */
    vb_form_t f;
    const char *s = "a=1&b=2";
    ASSERT_EQ(vb_form_parse(&f, s, 3, 0), 0);
    ASSERT_EQ(f.n, 1);
    ASSERT_STR_EQ(vb_form_get(&f, "a"), "1");
    vb_form_free(&f);
    /* A truncated escape at the end of the window stays literal. */
    ASSERT_EQ(vb_form_parse(&f, "a=%41", 4, 0), 0);
    ASSERT_STR_EQ(vb_form_get(&f, "a"), "%4");
    vb_form_free(&f);
}

TEST(form_decode_without_plus)
{
    char out[16];
    size_t n = vb_form_decode(out, "a+b%20c", 7, false);
    ASSERT_EQ(n, 5);
    ASSERT_MEM_EQ(out, "a+b c", 5);
}
