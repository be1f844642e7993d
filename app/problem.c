/* problem.c -- see problem.h. */
#include "problem.h"

/* The statuses of the answers worth a retry are a contract with whatever
 * stands in front of the hosts (problem.h): 503 bought nothing and says
 * this host cannot sell now, 429 bought nothing and says the product is
 * busy, 504 may have bought. Retry-After is 1 s for all of them: a lock
 * wait or a reconnect that failed now is worth retrying soon, and clients
 * should spread out on their own. */
static const struct problem_info problems[PROBLEM_COUNT] = {
    [PROBLEM_NONE] = {200, "ok", "OK", "", 0},
    [PROBLEM_INVALID_PRODUCT_ID] = {400, "invalid_product_id", "Invalid product id",
                                    "The product id must be an integer from 1 to 2147483647.", 0},
    [PROBLEM_INVALID_JSON] = {400, "invalid_json", "Malformed request body",
                              "The request body must be a JSON object, such as {\"amount\": 1}.",
                              0},
    [PROBLEM_INVALID_AMOUNT] = {400, "invalid_amount", "Invalid amount",
                                "\"amount\" must appear once, as a JSON integer from 1 to "
                                "2147483647.",
                                0},
    [PROBLEM_UNSUPPORTED_MEDIA_TYPE] = {415, "unsupported_media_type", "Unsupported media type",
                                        "The request body must be sent as application/json.", 0},
    [PROBLEM_PAYLOAD_TOO_LARGE] = {413, "payload_too_large", "Request body too large",
                                   "The request body must be at most 1024 bytes.", 0},
    [PROBLEM_PRODUCT_NOT_FOUND] = {404, "product_not_found", "Product not found",
                                   "There is no product with this id.", 0},
    [PROBLEM_INSUFFICIENT_STOCK] = {409, "insufficient_stock", "Insufficient stock",
                                    "The product has fewer units in stock than requested.", 0},
    /* 429, as Stripe answers its own lock_timeout: the host is fine, and an
     * edge must not take it out of rotation for a busy product. */
    [PROBLEM_LOCK_TIMEOUT] = {429, "lock_timeout", "Product busy",
                              "Too many buyers are waiting for this product; try again.", 1},
    [PROBLEM_SERVICE_UNAVAILABLE] = {503, "service_unavailable", "Service unavailable",
                                     "A backing service is unreachable; try again.", 1},
    [PROBLEM_METHOD_NOT_ALLOWED] = {405, "method_not_allowed", "Method not allowed",
                                    "This resource does not support this method.", 0},
    [PROBLEM_NOT_FOUND] = {404, "not_found", "Not found", "There is nothing at this path.", 0},
    [PROBLEM_INTERNAL] = {500, "internal_error", "Internal server error",
                          "The server failed unexpectedly.", 0},
    [PROBLEM_LOCK_LOST] = {503, "lock_lost", "Lock lost",
                           "The purchase outlived its lock and was not made; try again.", 1},
    [PROBLEM_INVALID_IDEMPOTENCY_KEY] = {400, "invalid_idempotency_key", "Invalid idempotency key",
                                         "Idempotency-Key must be 1 to 255 printable ASCII "
                                         "characters.",
                                         0},
    [PROBLEM_IDEMPOTENCY_KEY_REUSED] = {422, "idempotency_key_reused", "Idempotency key reused",
                                        "This Idempotency-Key was used for a different purchase.",
                                        0},
    [PROBLEM_REQUEST_IN_PROGRESS] = {409, "request_in_progress", "Request in progress",
                                     "A request with this Idempotency-Key is still running; "
                                     "retry to get its answer.",
                                     1},
    /* The one answer that does not say what happened: retrying with the
     * same Idempotency-Key finds out safely. 504, as nginx's gateway_timeout,
     * which means the same: never 503, which an edge may retry without the
     * key on another host. */
    [PROBLEM_OUTCOME_UNKNOWN] = {504, "outcome_unknown", "Outcome unknown",
                                 "The purchase may or may not have been made; retry with the "
                                 "same Idempotency-Key to find out.",
                                 1},
};

const struct problem_info *problem_info(enum problem p)
{
    if ((unsigned)p >= PROBLEM_COUNT)
        p = PROBLEM_INTERNAL;
    return &problems[p];
}
