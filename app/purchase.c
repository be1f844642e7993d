/* purchase.c -- see purchase.h. */
#include "config.h"
#include "http.h"
#include "log.h"
#include "purchase.h"
#include "request.h"
#include "worker.h"

/* Validates the request; PROBLEM_NONE with *amount set, or the problem. */
static enum problem read_amount(struct http_request *req, int32_t *amount)
{
    char body[REQUEST_BODY_MAX];
    size_t len;
    if (!request_is_json(req->content_type))
        return PROBLEM_UNSUPPORTED_MEDIA_TYPE;
    enum problem p = http_read_body(req, body, sizeof body, &len);
    if (p != PROBLEM_NONE)
        return p;
    return request_parse_amount(body, len, amount);
}

void purchase_handle(struct worker *w, struct http_request *req, int32_t product,
                     struct response *res)
{
    int32_t amount;
    enum problem p = read_amount(req, &amount);
    if (p != PROBLEM_NONE) {
        response_problem(res, p, NULL);
        return;
    }

    /* Reconnecting inside the critical section would stretch the time the
     * lock is held by a connect timeout: repair connections first. */
    enum store_status st = store_ready(&w->store);
    if (st != STORE_OK) {
        worker_store_failed(w, st, res);
        return;
    }

    struct lock lk;
    switch (lock_acquire(&w->lock, product, &lk)) {
    case LOCK_OK:
        break;
    case LOCK_TIMEOUT:
        log_info("product %d: lock busy for %d ms", (int)product, w->cfg->lock_wait_ms);
        response_problem(res, PROBLEM_LOCK_TIMEOUT, NULL);
        return;
    default:
        log_warn("%s", w->lock.err);
        response_problem(res, PROBLEM_SERVICE_UNAVAILABLE, NULL);
        return;
    }

    struct order order;
    int64_t available = 0;
    st = store_buy(&w->store, product, amount, &order, &available);

    /* Released on every path. If Redis cannot be told, the lock expires by
     * its TTL; a committed purchase stays committed either way, because
     * PostgreSQL, not the lock, guards the stock. */
    switch (lock_release(&w->lock, &lk)) {
    case LOCK_OK:
        break;
    case LOCK_LOST:
        log_warn("product %d: lock expired before release (purchase took longer than "
                 "LOCK_TTL_MS)",
                 (int)product);
        break;
    default:
        log_warn("product %d: lock not released, it expires by TTL: %s", (int)product, w->lock.err);
        break;
    }

    switch (st) {
    case STORE_OK:
        response_order(res, &order);
        break;
    case STORE_NOT_FOUND:
        response_problem(res, PROBLEM_PRODUCT_NOT_FOUND, NULL);
        break;
    case STORE_INSUFFICIENT:
        response_insufficient(res, available, amount);
        break;
    case STORE_UNKNOWN:
        log_error("product %d: purchase outcome unknown: %s", (int)product, w->store.err);
        response_problem(res, PROBLEM_SERVICE_UNAVAILABLE,
                         "PostgreSQL did not confirm the purchase before the connection broke: "
                         "it may or may not have been recorded.");
        break;
    default:
        worker_store_failed(w, st, res);
        break;
    }
}
