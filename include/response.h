/* response.h -- what the responder answers, built without doing any I/O.
 *
 * Handlers fill a struct response; http_send() writes it. Every builder here
 * is pure (JSON in memory only), so the exact bytes of each answer can be
 * unit-tested. A response starts as a 500 internal_error, so a handler that
 * forgets to set one still answers cleanly.
 *
 * Builders return 0, or -1 when memory ran out; the response then holds a
 * static 500 body and is still safe to send and to free. */
#ifndef STOCK_RESPONSE_H
#define STOCK_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "problem.h"

struct order;
struct outcome;
struct product;

#define CONTENT_TYPE_JSON    "application/json"
#define CONTENT_TYPE_PROBLEM "application/problem+json"

struct response {
    int status;
    const char *content_type; /* static string */
    char *body;               /* owned unless it points at static memory */
    size_t body_len;
    int body_static;     /* body must not be freed */
    int retry_after;     /* seconds; 0 for no Retry-After header */
    const char *allow;   /* Allow header for 405, else NULL */
    int replayed;        /* answered from an idempotency key: Idempotent-Replayed */
    enum problem reason; /* PROBLEM_NONE on success: what the log records */
};

void response_init(struct response *res);
void response_free(struct response *res);

/* An error answer. detail may be NULL for the problem's default detail. */
int response_problem(struct response *res, enum problem p, const char *detail);

/* 409 insufficient_stock with the stock seen and the amount requested. */
int response_insufficient(struct response *res, int64_t available, int64_t requested);

/* 405 with its Allow header. */
int response_not_allowed(struct response *res, const char *allow);

/* 200 {"order_id":..,"product_id":..,"amount":..,"remaining":..} */
int response_order(struct response *res, const struct order *o);

/* A purchase's outcome (200, or a 404 or 409 problem), as first answered;
 * requested is the amount asked for. */
int response_outcome(struct response *res, const struct outcome *o, int32_t requested);

/* 200 {"id":..,"name":..,"amount":..} */
int response_product(struct response *res, const struct product *p);

/* 200 {"status":"ok","postgres":"ok","redis":"ok"}, or a 503 problem naming
 * what is down in the same two members. */
int response_health(struct response *res, int postgres_ok, int redis_ok);

/* 200 with a body of another type (the metrics); text is copied. */
int response_text(struct response *res, const char *content_type, const char *text, size_t len);

/* The reason phrase for a status line ("Conflict"). */
const char *response_reason(int status);

#endif
