/* fuzz_request.c -- libFuzzer on everything that parses client input.
 *
 * Every input goes to every parser (the body parser, the JSON scanner, the
 * number parser, and, NUL-terminated, the route, id, Content-Type,
 * Content-Length and Idempotency-Key checks). Beyond "no crash, no leak, no
 * undefined behaviour" (ASan, UBSan), each checks a property:
 *  - an accepted amount or id is in range, and prints back as its input;
 *  - whatever the scanner accepts as JSON, json-c (more lenient) accepts too;
 *  - an accepted Content-Length is at most the limit.
 * A property that fails aborts, and libFuzzer saves the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "decimal.h"
#include "jsonscan.h"
#include "request.h"

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "property failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Whatever we accept, json-c must accept: it is strictly more lenient. */
static void json_c_agrees(const uint8_t *data, size_t size)
{
    json_tokener *tok = json_tokener_new_ex(JSONSCAN_MAX_DEPTH + 1);
    REQUIRE(tok != NULL);
    json_object *obj = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) /* a bare number needs its end marked */
        obj = json_tokener_parse_ex(tok, "", 1), e = json_tokener_get_error(tok);
    REQUIRE(e == json_tokener_success);
    json_object_put(obj);
    json_tokener_free(tok);
}

static void strings(const char *s)
{
    const char *param;
    int32_t id;
    size_t len;
    request_route(s, &param);
    if (request_parse_id(s, &id) == 0) {
        char back[16];
        snprintf(back, sizeof back, "%d", (int)id);
        REQUIRE(id >= 1 && strcmp(back, s) == 0);
    }
    request_is_json(s);
    request_check_key(s);
    if (request_parse_length(s, REQUEST_BODY_MAX, &len) == PROBLEM_NONE)
        REQUIRE(len <= REQUEST_BODY_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4 * REQUEST_BODY_MAX)
        return 0;
    const char *text = (const char *)data;

    int32_t amount;
    if (request_parse_amount(text, size, &amount) == PROBLEM_NONE)
        REQUIRE(amount >= 1);

    struct jsonscan_member m;
    enum jsonscan_status js = jsonscan_member(text, size, "amount", &m);
    if (js != JSONSCAN_INVALID)
        json_c_agrees(data, size);
    if (js == JSONSCAN_OK && m.count > 0)
        REQUIRE(m.value >= text && m.value + m.value_len <= text + size);

    int64_t v;
    if (decimal_parse(text, size, INT64_MAX, &v) == 0) {
        char back[24];
        int n = snprintf(back, sizeof back, "%lld", (long long)v);
        REQUIRE((size_t)n == size && memcmp(back, text, size) == 0);
    }

    char *s = malloc(size + 1);
    REQUIRE(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    strings(s);
    free(s);
    return 0;
}
