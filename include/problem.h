/* problem.h -- the catalogue of everything that can go wrong, as the client
 * sees it (RFC 9457 problem details).
 *
 * Each problem has a fixed HTTP status, a stable machine-readable code that
 * clients may branch on, and a short title. The codes are part of the API:
 * never rename one.
 *
 * The statuses of the answers worth retrying are a contract with a load
 * balancer in front of several hosts, which sees statuses, not codes:
 *   503  nothing was bought, and this host cannot sell right now
 *        (service_unavailable, lock_lost): safe to retry on any host; an
 *        edge may retry it on another one and take this one out of rotation;
 *   429  nothing was bought, the product is busy (lock_timeout): another
 *        buyer holds it; retry later; not a reason to take a host out;
 *   504  the purchase may or may not have been made (outcome_unknown, like
 *        nginx's gateway_timeout): retry only with the same Idempotency-Key.
 */
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
