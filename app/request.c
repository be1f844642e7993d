/* request.c -- see request.h. */
#include <string.h>
#include <strings.h>

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
    return ROUTE_NONE;
}

/* Canonical decimal digits only, then a range check. At most 10 digits, so
 * the value cannot overflow int64 before the check. */
static int parse_bounded(const char *s, size_t len, int64_t max, int64_t *out)
{
    if (len == 0 || len > 10 || (s[0] == '0' && len > 1))
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int request_parse_id(const char *s, int32_t *id)
{
    int64_t v;
    if (s == NULL || parse_bounded(s, strlen(s), INT32_MAX, &v) < 0 || v < 1)
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

enum problem request_parse_length(const char *s, size_t max, size_t *len)
{
    if (s == NULL || s[0] == '\0') {
        *len = 0;
        return PROBLEM_NONE;
    }
    size_t n = strspn(s, "0123456789");
    if (n == 0 || s[n] != '\0')
        return PROBLEM_INVALID_JSON;
    /* Any length with more digits than max is too large; no overflow. */
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (size_t)(s[i] - '0');
        if (v > max)
            return PROBLEM_PAYLOAD_TOO_LARGE;
    }
    *len = v;
    return PROBLEM_NONE;
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
    if (parse_bounded(m.value, m.value_len, INT32_MAX, &v) < 0 || v < 1)
        return PROBLEM_INVALID_AMOUNT;
    *amount = (int32_t)v;
    return PROBLEM_NONE;
}
