/* jsonscan.h -- a strict RFC 8259 validator that reports one member of the
 * top-level object.
 *
 * Why not json-c for parsing? json-c 0.16, even in strict mode, merges
 * duplicate keys silently (last wins), stops at a NUL byte and reports
 * success, and accepts NaN and single-quoted strings. A purchase body must
 * reject all of those, so requests are checked here; json-c still builds
 * every answer.
 *
 * The scanner accepts exactly RFC 8259 JSON text encoded as UTF-8: no BOM,
 * no comments, no lone surrogates in \u escapes, at most JSONSCAN_MAX_DEPTH
 * nested arrays and objects. It allocates nothing and recurses at most
 * JSONSCAN_MAX_DEPTH deep. */
#ifndef STOCK_JSONSCAN_H
#define STOCK_JSONSCAN_H

#include <stddef.h>

#define JSONSCAN_MAX_DEPTH 16

enum jsonscan_status {
    JSONSCAN_OK,        /* valid JSON, and the top-level value is an object */
    JSONSCAN_INVALID,   /* not JSON (syntax, encoding, depth, trailing data) */
    JSONSCAN_NOT_OBJECT /* valid JSON, but not an object */
};

enum jsonscan_type {
    JSONSCAN_ABSENT,
    JSONSCAN_OBJECT,
    JSONSCAN_ARRAY,
    JSONSCAN_STRING,
    JSONSCAN_NUMBER,
    JSONSCAN_TRUE,
    JSONSCAN_FALSE,
    JSONSCAN_NULL
};

/* One member of the top-level object, found by its decoded name, so that
 * "amount" and "\u0061mount" are the same member. */
struct jsonscan_member {
    unsigned count;          /* how many times the name occurs */
    enum jsonscan_type type; /* of the last occurrence */
    const char *value;       /* raw text of the last occurrence's value */
    size_t value_len;
};

/* Validates text[0..len) and looks up the member called name (a NUL-terminated
 * UTF-8 string) in the top-level object. out is filled only on JSONSCAN_OK. */
enum jsonscan_status jsonscan_member(const char *text, size_t len, const char *name,
                                     struct jsonscan_member *out);

#endif
