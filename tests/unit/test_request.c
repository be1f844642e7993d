/* test_request.c -- routing and request validation, before any I/O. */
#include <string.h>

#include "decimal.h"
#include "request.h"
#include "unit.h"

static void route_matches_exact_segments(void)
{
    static const struct {
        const char *path;
        enum route want;
        const char *param;
    } cases[] = {
        {"/buy/1", ROUTE_BUY, "1"},
        {"/buy/abc", ROUTE_BUY, "abc"},
        {"/buy/", ROUTE_BUY, ""},
        {"/buy/1/", ROUTE_NONE, NULL},
        {"/buy/1/x", ROUTE_NONE, NULL},
        {"/buy", ROUTE_NONE, NULL},
        {"/buyer/1", ROUTE_NONE, NULL},
        {"/products/7", ROUTE_PRODUCT, "7"},
        {"/products/7/", ROUTE_NONE, NULL},
        {"/healthz", ROUTE_HEALTH, NULL},
        {"/healthz/", ROUTE_NONE, NULL},
        {"/", ROUTE_NONE, NULL},
        {"", ROUTE_NONE, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *param;
        enum route r = request_route(cases[i].path, &param);
        CHECK_CASE(r == cases[i].want, cases[i].path);
        if (cases[i].param != NULL)
            CHECK_CASE(param != NULL && strcmp(param, cases[i].param) == 0, cases[i].path);
    }
    const char *param;
    CHECK(request_route(NULL, &param) == ROUTE_NONE);
}

static void product_id_accepts_canonical_positive_int32(void)
{
    int32_t id = 0;
    CHECK(request_parse_id("1", &id) == 0 && id == 1);
    CHECK(request_parse_id("42", &id) == 0 && id == 42);
    CHECK(request_parse_id("2147483647", &id) == 0 && id == 2147483647);
}

static void product_id_rejects_everything_else(void)
{
    static const char *const bad[] = {
        "",    "0",   "-1",  "+1", "01",   "007",        " 1",          "1 ",
        "1.0", "1e3", "abc", "1a", "0x10", "2147483648", "99999999999", "18446744073709551617",
        "%31",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t id = -7;
        CHECK_CASE(request_parse_id(bad[i], &id) < 0 && id == -7, bad[i]);
    }
    int32_t id;
    CHECK(request_parse_id(NULL, &id) < 0);
}

static void content_type_must_be_json(void)
{
    CHECK(request_is_json("application/json"));
    CHECK(request_is_json("Application/JSON"));
    CHECK(request_is_json("application/json; charset=utf-8"));
    CHECK(request_is_json("application/json ;charset=UTF-8"));
    CHECK(!request_is_json(NULL));
    CHECK(!request_is_json(""));
    CHECK(!request_is_json("text/plain"));
    CHECK(!request_is_json("application/x-www-form-urlencoded"));
    CHECK(!request_is_json("application/jsonp"));
    CHECK(!request_is_json("application/json-seq"));
    CHECK(!request_is_json("application/problem+json"));
    CHECK(!request_is_json(" application/json"));
}

static void any_content_coding_is_refused(void)
{
    CHECK(!request_has_coding(NULL));
    CHECK(!request_has_coding(""));
    CHECK(!request_has_coding(" \t"));
    CHECK(request_has_coding("gzip"));
    CHECK(request_has_coding("identity"));
    CHECK(request_has_coding(" br"));
}

static void content_length_is_bounded(void)
{
    size_t len = 99;
    CHECK(request_parse_length(NULL, 1024, &len) == PROBLEM_NONE && len == 0);
    CHECK(request_parse_length("", 1024, &len) == PROBLEM_NONE && len == 0);
    CHECK(request_parse_length("0", 1024, &len) == PROBLEM_NONE && len == 0);
    CHECK(request_parse_length("1024", 1024, &len) == PROBLEM_NONE && len == 1024);
    CHECK(request_parse_length("1025", 1024, &len) == PROBLEM_PAYLOAD_TOO_LARGE);
    CHECK(request_parse_length("99999999999999999999999", 1024, &len) == PROBLEM_PAYLOAD_TOO_LARGE);
    CHECK(request_parse_length("-1", 1024, &len) == PROBLEM_INVALID_JSON);
    CHECK(request_parse_length("12x", 1024, &len) == PROBLEM_INVALID_JSON);
    CHECK(request_parse_length(" 12", 1024, &len) == PROBLEM_INVALID_JSON);
    CHECK(request_parse_length("012", 1024, &len) == PROBLEM_NONE && len == 12);
    CHECK(request_parse_length("0012", 1024, &len) == PROBLEM_NONE && len == 12);
    CHECK(request_parse_length("00000000000000000012", 1024, &len) == PROBLEM_NONE && len == 12);
    CHECK(request_parse_length("000", 1024, &len) == PROBLEM_NONE && len == 0);
    CHECK(request_parse_length("01025", 1024, &len) == PROBLEM_PAYLOAD_TOO_LARGE);
    CHECK(request_parse_length("0x12", 1024, &len) == PROBLEM_INVALID_JSON);
    CHECK(request_parse_length("-012", 1024, &len) == PROBLEM_INVALID_JSON);
    CHECK(request_parse_length("0 12", 1024, &len) == PROBLEM_INVALID_JSON);
}

struct amount_case {
    const char *body;
    enum problem want;
    int32_t amount;
};

static void amount_accepts_integers_in_range(void)
{
    static const struct amount_case cases[] = {
        {"{\"amount\": 1}", PROBLEM_NONE, 1},
        {"{\"amount\":2147483647}", PROBLEM_NONE, 2147483647},
        {" {\"note\":\"hi\", \"amount\" : 3 } ", PROBLEM_NONE, 3},
        {"{\"\\u0061mount\": 4}", PROBLEM_NONE, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t amount = 0;
        const char *b = cases[i].body;
        CHECK_CASE(request_parse_amount(b, strlen(b), &amount) == PROBLEM_NONE, b);
        CHECK_CASE(amount == cases[i].amount, b);
    }
}

static void amount_rejects_bad_values(void)
{
    static const struct amount_case cases[] = {
        {"{}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"qty\": 1}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 0}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": -0}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": -1}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 2147483648}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 9223372036854775808}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 99999999999999999999}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 1.5}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 1.0}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 1e3}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 1e400}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": \"1\"}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": true}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": null}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": [1]}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": {\"n\":1}}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 1, \"amount\": 1}", PROBLEM_INVALID_AMOUNT, 0},
        {"{\"amount\": 1, \"\\u0061mount\": 2}", PROBLEM_INVALID_AMOUNT, 0},
        {"", PROBLEM_INVALID_JSON, 0},
        {"amount=1", PROBLEM_INVALID_JSON, 0},
        {"{\"amount\": 1", PROBLEM_INVALID_JSON, 0},
        {"{\"amount\": NaN}", PROBLEM_INVALID_JSON, 0},
        {"{'amount': 1}", PROBLEM_INVALID_JSON, 0},
        {"[{\"amount\": 1}]", PROBLEM_INVALID_JSON, 0},
        {"1", PROBLEM_INVALID_JSON, 0},
        {"\"{\\\"amount\\\": 1}\"", PROBLEM_INVALID_JSON, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t amount = -7;
        const char *b = cases[i].body;
        CHECK_CASE(request_parse_amount(b, strlen(b), &amount) == cases[i].want, b);
        CHECK_CASE(amount == -7, b);
    }
}

static void decimal_accepts_canonical_numbers_up_to_max(void)
{
    int64_t v = -1;
    CHECK(decimal_parse("0", 1, 0, &v) == 0 && v == 0);
    CHECK(decimal_parse("1024", 4, 1024, &v) == 0 && v == 1024);
    CHECK(decimal_parse("9223372036854775807", 19, INT64_MAX, &v) == 0 && v == INT64_MAX);
    CHECK(decimal_parse("1025", 4, 1024, &v) == DECIMAL_TOO_LARGE);
    CHECK(decimal_parse("9223372036854775808", 19, INT64_MAX, &v) == DECIMAL_TOO_LARGE);
    CHECK(decimal_parse("99999999999999999999999999", 26, 5, &v) == DECIMAL_TOO_LARGE);
    CHECK(decimal_parse("12", 1, 5, &v) == 0 && v == 1); /* only len bytes are read */
}

static void decimal_rejects_non_canonical_text(void)
{
    static const char *const bad[] = {"", "01", "00", "-1", "+1", " 1", "1 ", "1.0", "1e3", "x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = -7;
        CHECK_CASE(decimal_parse(bad[i], strlen(bad[i]), INT64_MAX, &v) == DECIMAL_INVALID, bad[i]);
        CHECK_CASE(v == -7, bad[i]);
    }
}

static void idempotency_key_is_printable_ascii_up_to_255(void)
{
    char key[257];
    memset(key, 'k', sizeof key - 1);
    key[255] = '\0';
    CHECK(request_check_key(NULL) == PROBLEM_NONE);
    CHECK(request_check_key("a") == PROBLEM_NONE);
    CHECK(request_check_key("order 42 / retry ~!") == PROBLEM_NONE);
    CHECK(request_check_key(key) == PROBLEM_NONE);
    key[255] = 'k';
    key[256] = '\0';
    CHECK(request_check_key(key) == PROBLEM_INVALID_IDEMPOTENCY_KEY);
    CHECK(request_check_key("") == PROBLEM_INVALID_IDEMPOTENCY_KEY);
    CHECK(request_check_key("tab\there") == PROBLEM_INVALID_IDEMPOTENCY_KEY);
    CHECK(request_check_key("del\x7f") == PROBLEM_INVALID_IDEMPOTENCY_KEY);
    CHECK(request_check_key("caf\xc3\xa9") == PROBLEM_INVALID_IDEMPOTENCY_KEY);
}

void suite_request(void)
{
    RUN(idempotency_key_is_printable_ascii_up_to_255);
    RUN(decimal_accepts_canonical_numbers_up_to_max);
    RUN(decimal_rejects_non_canonical_text);
    RUN(route_matches_exact_segments);
    RUN(product_id_accepts_canonical_positive_int32);
    RUN(product_id_rejects_everything_else);
    RUN(content_type_must_be_json);
    RUN(content_length_is_bounded);
    RUN(any_content_coding_is_refused);
    RUN(amount_accepts_integers_in_range);
    RUN(amount_rejects_bad_values);
}
