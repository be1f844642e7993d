/* test_jsonscan.c -- the strict JSON scanner accepts RFC 8259 and nothing else. */
#include <string.h>

#include "jsonscan.h"
#include "unit.h"

struct scan_case {
    const char *text;
    size_t len; /* 0: strlen(text) */
    enum jsonscan_status want;
};

static enum jsonscan_status scan(const struct scan_case *c, struct jsonscan_member *m)
{
    size_t len = c->len ? c->len : strlen(c->text);
    return jsonscan_member(c->text, len, "amount", m);
}

static void scanner_accepts_valid_json(void)
{
    static const struct scan_case cases[] = {
        {"{}", 0, JSONSCAN_OK},
        {" \t\r\n{ }\n", 0, JSONSCAN_OK},
        {"{\"a\":[1,-2.5e+3,0.0,1E9,true,false,null,\"x\",{\"b\":[]}]}", 0, JSONSCAN_OK},
        {"{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}", 0, JSONSCAN_OK},
        {"{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}", 0, JSONSCAN_OK},
        {"[1]", 0, JSONSCAN_NOT_OBJECT},
        {"1", 0, JSONSCAN_NOT_OBJECT},
        {"\"amount\"", 0, JSONSCAN_NOT_OBJECT},
        {"null", 0, JSONSCAN_NOT_OBJECT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct jsonscan_member m;
        CHECK_CASE(scan(&cases[i], &m) == cases[i].want, cases[i].text);
    }
}

static void scanner_rejects_what_is_not_json(void)
{
    static const struct scan_case cases[] = {
        {"", 0, 0},
        {"   ", 0, 0},
        {"{", 0, 0},
        {"{\"amount\": 1", 0, 0},
        {"{\"amount\": 1}}", 0, 0},
        {"{\"amount\": 1} x", 0, 0},
        {"{\"amount\": 1}{}", 0, 0},
        {"{\"amount\": 1,}", 0, 0},
        {"{,\"amount\": 1}", 0, 0},
        {"{\"amount\" 1}", 0, 0},
        {"{amount: 1}", 0, 0},
        {"{'amount': 1}", 0, 0},
        {"{\"amount\": 01}", 0, 0},
        {"{\"amount\": +1}", 0, 0},
        {"{\"amount\": 1.}", 0, 0},
        {"{\"amount\": .5}", 0, 0},
        {"{\"amount\": 1e}", 0, 0},
        {"{\"amount\": -}", 0, 0},
        {"{\"amount\": NaN}", 0, 0},
        {"{\"amount\": Infinity}", 0, 0},
        {"{\"amount\": tru}", 0, 0},
        {"{\"amount\": 1 /* c */}", 0, 0},
        {"[1,]", 0, 0},
        {"[,1]", 0, 0},
        {"{\"s\":\"a\nb\"}", 0, 0},             /* raw control character */
        {"{\"s\":\"\\x41\"}", 0, 0},            /* unknown escape */
        {"{\"s\":\"\\u12\"}", 0, 0},            /* short \u */
        {"{\"s\":\"\\ud800\"}", 0, 0},          /* lone high surrogate */
        {"{\"s\":\"\\udc00\"}", 0, 0},          /* lone low surrogate */
        {"{\"s\":\"\\ud800\\u0041\"}", 0, 0},   /* high surrogate, no low */
        {"{\"s\":\"\xc3\"}", 0, 0},             /* truncated UTF-8 */
        {"{\"s\":\"\xc0\xaf\"}", 0, 0},         /* overlong '/' */
        {"{\"s\":\"\xed\xa0\x80\"}", 0, 0},     /* UTF-8 surrogate */
        {"{\"s\":\"\xf4\x90\x80\x80\"}", 0, 0}, /* above U+10FFFF */
        {"{\"s\":\"\xff\"}", 0, 0},
        {"\xef\xbb\xbf{}", 0, 0},     /* byte order mark */
        {"{\"amount\":1}\0x", 14, 0}, /* NUL after the object */
        {"{\"s\":\"a\0b\"}", 11, 0},  /* NUL inside a string */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct jsonscan_member m;
        CHECK_CASE(scan(&cases[i], &m) == JSONSCAN_INVALID, cases[i].text);
    }
}

static void scanner_limits_nesting_depth(void)
{
    char deep[2 * JSONSCAN_MAX_DEPTH + 16];
    struct jsonscan_member m;
    size_t n = 0;

    /* {"a": [[...]]} with the object itself counted: MAX_DEPTH levels pass. */
    memcpy(deep, "{\"a\":", 5);
    n = 5;
    for (int i = 1; i < JSONSCAN_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 1; i < JSONSCAN_MAX_DEPTH; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    CHECK(jsonscan_member(deep, n, "amount", &m) == JSONSCAN_OK);

    memcpy(deep, "{\"a\":[", 6);
    n = 6;
    for (int i = 1; i < JSONSCAN_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < JSONSCAN_MAX_DEPTH; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    CHECK(jsonscan_member(deep, n, "amount", &m) == JSONSCAN_INVALID);
}

static void scanner_finds_member_by_decoded_name(void)
{
    struct jsonscan_member m;
    const char *t = "{\"x\":{\"amount\":9},\"\\u0061mount\" : 42 ,\"amounts\":1}";
    CHECK(jsonscan_member(t, strlen(t), "amount", &m) == JSONSCAN_OK);
    CHECK(m.count == 1);
    CHECK(m.type == JSONSCAN_NUMBER);
    CHECK(m.value_len == 2 && memcmp(m.value, "42", 2) == 0);
}

static void scanner_counts_repeated_members(void)
{
    struct jsonscan_member m;
    const char *t = "{\"amount\":1,\"amount\":\"2\"}";
    CHECK(jsonscan_member(t, strlen(t), "amount", &m) == JSONSCAN_OK);
    CHECK(m.count == 2);
    CHECK(m.type == JSONSCAN_STRING);
}

static void scanner_reports_absent_member(void)
{
    struct jsonscan_member m;
    CHECK(jsonscan_member("{\"qty\":1}", 9, "amount", &m) == JSONSCAN_OK);
    CHECK(m.count == 0 && m.type == JSONSCAN_ABSENT);
}

void suite_jsonscan(void)
{
    RUN(scanner_accepts_valid_json);
    RUN(scanner_rejects_what_is_not_json);
    RUN(scanner_limits_nesting_depth);
    RUN(scanner_finds_member_by_decoded_name);
    RUN(scanner_counts_repeated_members);
    RUN(scanner_reports_absent_member);
}
