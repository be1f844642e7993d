/* problem.h -- the catalogue of everything that can go wrong, as the client
 * sees it (RFC 9457 problem details).
 *
 * Each problem has a fixed HTTP status, a stable machine-readable code that
 * clients may branch on, and a short title. The codes are part of the API:
 * never rename one. */
#ifndef STOCK_PROBLEM_H
#define STOCK_PROBLEM_H

enum problem {
    PROBLEM_NONE = 0,
    PROBLEM_INVALID_PRODUCT_ID,
    PROBLEM_INVALID_JSON,
    PROBLEM_INVALID_AMOUNT,
    PROBLEM_UNSUPPORTED_MEDIA_TYPE,
    PROBLEM_PAYLOAD_TOO_LARGE,
    PROBLEM_PRODUCT_NOT_FOUND,
    PROBLEM_INSUFFICIENT_STOCK,
    PROBLEM_LOCK_TIMEOUT,
    PROBLEM_SERVICE_UNAVAILABLE,
    PROBLEM_METHOD_NOT_ALLOWED,
    PROBLEM_NOT_FOUND,
    PROBLEM_INTERNAL,
    PROBLEM_LOCK_LOST,
    PROBLEM_INVALID_IDEMPOTENCY_KEY,
    PROBLEM_IDEMPOTENCY_KEY_REUSED,
    PROBLEM_REQUEST_IN_PROGRESS,
    PROBLEM_OUTCOME_UNKNOWN,
    PROBLEM_COUNT
};

struct problem_info {
    int status;         /* HTTP status */
    const char *code;   /* stable, e.g. "insufficient_stock" */
    const char *title;  /* short, human, constant per code */
    const char *detail; /* default detail when the caller has nothing better */
    int retry_after;    /* seconds for a Retry-After header; 0 for none */
};

/* Problem types are tag URIs (RFC 4151), the form RFC 9457 section 3.1.1
 * suggests for types that are not meant to be dereferenced. */
#define PROBLEM_TYPE_PREFIX "tag:redisdistributedlock,2026:problem:"

/* Never NULL: an out-of-range value maps to PROBLEM_INTERNAL. */
const struct problem_info *problem_info(enum problem p);

#endif
