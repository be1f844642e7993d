/* decimal.c -- see decimal.h. */
#include "decimal.h"

int decimal_parse(const char *s, size_t len, int64_t max, int64_t *out)
{
    if (len == 0 || (s[0] == '0' && len > 1))
        return DECIMAL_INVALID;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return DECIMAL_INVALID;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        int digit = s[i] - '0';
        if (v > (max - digit) / 10) /* v * 10 + digit > max, without overflow */
            return DECIMAL_TOO_LARGE;
        v = v * 10 + digit;
    }
    *out = v;
    return 0;
}
