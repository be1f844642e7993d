/* jsonscan.c -- see jsonscan.h.
 *
 * A recursive-descent recogniser for the RFC 8259 grammar. Every function
 * takes the scanner positioned at the first byte of its production and
 * returns 0 with the scanner just past it, or -1. */
#include <stdint.h>
#include <string.h>

#include "jsonscan.h"

struct scan {
    const unsigned char *p, *end;
    int depth;
};

static int scan_value(struct scan *s, enum jsonscan_type *type);

static int peek(const struct scan *s)
{
    return s->p < s->end ? *s->p : -1;
}

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int scan_digits(struct scan *s)
{
    if (!is_digit(peek(s)))
        return -1;
    while (is_digit(peek(s)))
        s->p++;
    return 0;
}

/* number = [ minus ] int [ frac ] [ exp ] */
static int scan_number(struct scan *s)
{
    if (peek(s) == '-')
        s->p++;
    if (peek(s) == '0')
        s->p++;
    else if (scan_digits(s) < 0)
        return -1;
    if (peek(s) == '.') {
        s->p++;
        if (scan_digits(s) < 0)
            return -1;
    }
    if (peek(s) == 'e' || peek(s) == 'E') {
        s->p++;
        if (peek(s) == '+' || peek(s) == '-')
            s->p++;
        if (scan_digits(s) < 0)
            return -1;
    }
    return 0;
}

static int scan_literal(struct scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int scan_hex4(struct scan *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int c = peek(s), d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + (uint32_t)d;
        s->p++;
    }
    *out = v;
    return 0;
}

/* After a backslash: one escape, decoded. A \u escape for a surrogate must
 * come as a high-low pair: a lone half is not a character and could not be
 * stored as UTF-8. */
static int scan_escape(struct scan *s, uint32_t *cp)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    int c = peek(s);
    if (c < 0)
        return -1;
    s->p++;
    if (c != 'u') {
        const char *hit = c != '\0' ? strchr(from, c) : NULL;
        if (hit == NULL)
            return -1;
        *cp = (unsigned char)to[hit - from];
        return 0;
    }
    if (scan_hex4(s, cp) < 0)
        return -1;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return -1;
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        uint32_t low;
        if (scan_literal(s, "\\u") < 0 || scan_hex4(s, &low) < 0 || low < 0xDC00 || low > 0xDFFF)
            return -1;
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
    }
    return 0;
}

/* One UTF-8 encoded character (RFC 3629): no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
static int scan_utf8(struct scan *s, uint32_t *cp)
{
    unsigned c = *s->p;
    int more;
    uint32_t min;
    if (c < 0x80) {
        *cp = c;
        s->p++;
        return 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
        more = 1, min = 0x80, *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2, min = 0x800, *cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3, min = 0x10000, *cp = c & 0x07;
    } else {
        return -1;
    }
    if (s->end - s->p <= more)
        return -1;
    for (int i = 1; i <= more; i++) {
        unsigned cc = s->p[i];
        if ((cc & 0xC0) != 0x80)
            return -1;
        *cp = (*cp << 6) | (cc & 0x3F);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF))
        return -1;
    s->p += more + 1;
    return 0;
}

/* Compares the decoded code point cp with name at *pos, advancing *pos. */
static int name_step(const char *name, size_t *pos, uint32_t cp)
{
    unsigned char buf[4];
    size_t n;
    if (cp < 0x80) {
        buf[0] = (unsigned char)cp, n = 1;
    } else if (cp < 0x800) {
        buf[0] = (unsigned char)(0xC0 | cp >> 6), n = 2;
    } else if (cp < 0x10000) {
        buf[0] = (unsigned char)(0xE0 | cp >> 12), n = 3;
    } else {
        buf[0] = (unsigned char)(0xF0 | cp >> 18), n = 4;
    }
    for (size_t i = 1; i < n; i++)
        buf[i] = (unsigned char)(0x80 | ((cp >> (6 * (n - 1 - i))) & 0x3F));
    size_t left = strlen(name + *pos);
    if (left < n || memcmp(name + *pos, buf, n) != 0)
        return 0;
    *pos += n;
    return 1;
}

/* A string. If name is not NULL, *equal tells whether its decoded content
 * is exactly name. */
static int scan_string(struct scan *s, const char *name, int *equal)
{
    size_t pos = 0;
    int same = name != NULL;
    s->p++; /* the opening quote */
    for (;;) {
        uint32_t cp;
        int c = peek(s);
        if (c < 0 || c < 0x20) /* end of input, or a raw control character */
            return -1;
        if (c == '"')
            break;
        if (c == '\\') {
            s->p++;
            if (scan_escape(s, &cp) < 0)
                return -1;
        } else if (scan_utf8(s, &cp) < 0) {
            return -1;
        }
        if (same)
            same = name_step(name, &pos, cp);
    }
    s->p++; /* the closing quote */
    if (equal != NULL)
        *equal = same && name[pos] == '\0';
    return 0;
}

/* Entering an array or object; the depth limit bounds the recursion. */
static int enter(struct scan *s)
{
    s->p++;
    if (++s->depth > JSONSCAN_MAX_DEPTH)
        return -1;
    skip_ws(s);
    return 0;
}

static int scan_array(struct scan *s)
{
    if (enter(s) < 0)
        return -1;
    if (peek(s) != ']') {
        for (;;) {
            enum jsonscan_type t;
            skip_ws(s);
            if (scan_value(s, &t) < 0)
                return -1;
            skip_ws(s);
            if (peek(s) != ',')
                break;
            s->p++;
        }
    }
    if (peek(s) != ']')
        return -1;
    s->p++;
    s->depth--;
    return 0;
}

/* An object; members called name are recorded in *m (top level only). */
static int scan_object(struct scan *s, const char *name, struct jsonscan_member *m)
{
    if (enter(s) < 0)
        return -1;
    if (peek(s) != '}') {
        for (;;) {
            int match = 0;
            enum jsonscan_type t;
            skip_ws(s);
            if (peek(s) != '"' || scan_string(s, name, &match) < 0)
                return -1;
            skip_ws(s);
            if (peek(s) != ':')
                return -1;
            s->p++;
            skip_ws(s);
            const unsigned char *start = s->p;
            if (scan_value(s, &t) < 0)
                return -1;
            if (match) {
                m->count++;
                m->type = t;
                m->value = (const char *)start;
                m->value_len = (size_t)(s->p - start);
            }
            skip_ws(s);
            if (peek(s) != ',')
                break;
            s->p++;
        }
    }
    if (peek(s) != '}')
        return -1;
    s->p++;
    s->depth--;
    return 0;
}

static int scan_value(struct scan *s, enum jsonscan_type *type)
{
    switch (peek(s)) {
    case '{':
        *type = JSONSCAN_OBJECT;
        return scan_object(s, NULL, NULL);
    case '[':
        *type = JSONSCAN_ARRAY;
        return scan_array(s);
    case '"':
        *type = JSONSCAN_STRING;
        return scan_string(s, NULL, NULL);
    case 't':
        *type = JSONSCAN_TRUE;
        return scan_literal(s, "true");
    case 'f':
        *type = JSONSCAN_FALSE;
        return scan_literal(s, "false");
    case 'n':
        *type = JSONSCAN_NULL;
        return scan_literal(s, "null");
    default:
        *type = JSONSCAN_NUMBER;
        return scan_number(s);
    }
}

enum jsonscan_status jsonscan_member(const char *text, size_t len, const char *name,
                                     struct jsonscan_member *out)
{
    struct scan s = {(const unsigned char *)text, (const unsigned char *)text + len, 0};
    struct jsonscan_member m = {0, JSONSCAN_ABSENT, NULL, 0};
    enum jsonscan_type type = JSONSCAN_OBJECT;
    int rc;

    skip_ws(&s);
    if (peek(&s) == '{')
        rc = scan_object(&s, name, &m);
    else
        rc = scan_value(&s, &type);
    skip_ws(&s);
    if (rc < 0 || s.p != s.end)
        return JSONSCAN_INVALID;
    if (type != JSONSCAN_OBJECT)
        return JSONSCAN_NOT_OBJECT;
    *out = m;
    return JSONSCAN_OK;
}
