/* request.h -- what a request asks for, decided without doing any I/O.
 *
 * Routing, the product id, the Content-Type, the Content-Length and the
 * purchase body are all parsed here by pure functions, so they can be
 * unit-tested and fuzzed. Anything not accepted here never reaches Redis or
 * PostgreSQL. */
#ifndef STOCK_REQUEST_H
#define STOCK_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "problem.h"

/* The largest body the responder reads, in bytes. nginx enforces the same
 * limit (client_max_body_size 1k) and answers 413 itself. */
#define REQUEST_BODY_MAX 1024

enum route {
    ROUTE_NONE,    /* 404 not_found */
    ROUTE_BUY,     /* /buy/{id} */
    ROUTE_PRODUCT, /* /products/{id} */
    ROUTE_HEALTH,  /* /healthz */
    ROUTE_METRICS, /* /metrics */
    ROUTE_COUNT
};

/* Matches a decoded path (nginx's $uri). For the routes with an id, *param
 * points at the id segment inside path (possibly empty). A route matches only
 * with exactly its number of segments: /buy/1/ and /buy/1/x are ROUTE_NONE. */
enum route request_route(const char *path, const char **param);

/* Accepts only a canonical positive decimal from 1 to 2147483647: no sign,
 * no leading zero, no spaces. Returns 0, or -1. */
int request_parse_id(const char *s, int32_t *id);

/* True for application/json, any letter case, with or without parameters
 * ("application/json; charset=utf-8"). False for NULL. */
int request_is_json(const char *content_type);

/* True if a Content-Encoding header names a coding (any, "identity"
 * included); NULL, empty or blank is none. The body must be plain JSON. */
int request_has_coding(const char *content_encoding);

/* Parses CONTENT_LENGTH: digits, leading zeros allowed (RFC 9110's 1*DIGIT).
 * NULL or empty means no body (0). Returns PROBLEM_NONE,
 * PROBLEM_PAYLOAD_TOO_LARGE above max, or PROBLEM_INVALID_JSON for anything
 * that is not a plain decimal. */
enum problem request_parse_length(const char *s, size_t max, size_t *len);

/* Checks an Idempotency-Key header value: absent (NULL) is fine; otherwise
 * 1 to 255 printable ASCII characters (space to tilde). Returns
 * PROBLEM_NONE or PROBLEM_INVALID_IDEMPOTENCY_KEY. */
enum problem request_check_key(const char *key);

/* Parses a purchase body: a JSON object whose "amount" member appears exactly
 * once and is a JSON integer from 1 to 2147483647. Other members are ignored.
 * Returns PROBLEM_NONE, PROBLEM_INVALID_JSON (not an RFC 8259 object) or
 * PROBLEM_INVALID_AMOUNT (missing, repeated, not an integer, out of range). */
enum problem request_parse_amount(const char *body, size_t len, int32_t *amount);

#endif
