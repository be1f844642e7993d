/* purchase.h -- POST /buy/{id}: validate, lock, buy, release, answer.
 *
 * The order of the steps is the design:
 *   1. everything about the request is validated before any I/O;
 *   2. both connections are made usable *before* the lock is taken, so the
 *      time a lock is held covers only the PostgreSQL statement;
 *   3. the lock is released on every path once it was taken, and only after
 *      PostgreSQL answered, so the next buyer sees the committed stock;
 *   4. the answer is 200 only after COMMIT. */
#ifndef STOCK_PURCHASE_H
#define STOCK_PURCHASE_H

#include <stdint.h>

struct worker;
struct http_request;
struct response;

/* product is already a valid id; the method is POST. */
void purchase_handle(struct worker *w, struct http_request *req, int32_t product,
                     struct response *res);

#endif
