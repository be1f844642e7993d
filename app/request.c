/* request.c -- see request.h. */
#include <string.h>
#include <strings.h>

#include "decimal.h"
#include "jsonscan.h"
#include "request.h"

/* If path starts with prefix and the rest is one segment (no '/'), points
 * *param at that segment. */
static int one_segment_after(const char *path, const char *prefix, const char **param)
{
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0 || strchr(path + n, '/') != NULL)
        return 0;
    *param = path + n;
    return 1;
}

enum route request_route(const char *path, const char **param)
{
    *param = NULL;
    if (path == NULL)
        return ROUTE_NONE;
    if (one_segment_after(path, "/buy/", param))
        return ROUTE_BUY;
    if (one_segment_after(path, "/products/", param))
        return ROUTE_PRODUCT;
    if (strcmp(path, "/healthz") == 0)
        return ROUTE_HEALTH;
    if (strcmp(path, "/metrics") == 0)
        return ROUTE_METRICS;
    return ROUTE_NONE;
}

int request_parse_id(const char *s, int32_t *id)
{
    int64_t v;
    if (s == NULL || decimal_parse(s, strlen(s), INT32_MAX, &v) != 0 || v < 1)
        return -1;
    *id = (int32_t)v;
    return 0;
}

int request_is_json(const char *ct)
{
    static const char json[] = "application/json";
    size_t n = sizeof json - 1;
    if (ct == NULL || strncasecmp(ct, json, n) != 0)
        return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

int request_has_coding(const char *ce)
{
    for (; ce != NULL && *ce != '\0'; ce++)
        if (*ce != ' ' && *ce != '\t')
            return 1;
    return 0;
}

enum problem request_parse_length(const char *s, size_t max, size_t *len)
{
    if (s == NULL || s[0] == '\0') {
        *len = 0;
        return PROBLEM_NONE;
    }
    /* RFC 9110: Content-Length = 1*DIGIT, so "012" is 12 (nginx reads 12
     * bytes for it). Only JSON numbers and ids must be canonical. */
    while (s[0] == '0' && s[1] != '\0')
        s++;
    int64_t v;
    switch (decimal_parse(s, strlen(s), (int64_t)max, &v)) {
    case 0:
        *len = (size_t)v;
        return PROBLEM_NONE;
    case DECIMAL_TOO_LARGE:
        return PROBLEM_PAYLOAD_TOO_LARGE;
    default:
        return PROBLEM_INVALID_JSON;
    }
}

enum problem request_check_key(const char *key)
{
    if (key == NULL)
        return PROBLEM_NONE;
    size_t n = 0;
    for (; key[n] != '\0'; n++)
        if (key[n] < 0x20 || key[n] > 0x7e || n >= 255)
            return PROBLEM_INVALID_IDEMPOTENCY_KEY;
    return n == 0 ? PROBLEM_INVALID_IDEMPOTENCY_KEY : PROBLEM_NONE;
}

enum problem request_parse_amount(const char *body, size_t len, int32_t *amount)
{
    struct jsonscan_member m;
    if (jsonscan_member(body, len, "amount", &m) != JSONSCAN_OK)
        return PROBLEM_INVALID_JSON;
    if (m.count != 1 || m.type != JSONSCAN_NUMBER)
        return PROBLEM_INVALID_AMOUNT;

    /* The scanner guarantees RFC 8259 number syntax, so digits-only text is
     * an integer; '-', '.', 'e' (negatives, -0, 1.0, 1e3) all fail here.
     * A leading zero can only be "0" itself, which is below the range. */
    int64_t v;
    if (decimal_parse(m.value, m.value_len, INT32_MAX, &v) != 0 || v < 1)
        return PROBLEM_INVALID_AMOUNT;
    *amount = (int32_t)v;
    return PROBLEM_NONE;
}
