/* worker.c -- see worker.h: connections, routing and the small handlers. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "purchase.h"
#include "request.h"
#include "worker.h"

void worker_open(struct worker *w, const struct config *cfg)
{
    w->cfg = cfg;
    w->locks_lost = 0;
    if (lock_client_open(&w->lock, cfg) < 0)
        log_warn("%s (will retry on the next request)", w->lock.err);
    if (store_open(&w->store, cfg) < 0)
        log_warn("%s (will retry on the next request)", w->store.err);
}

void worker_close(struct worker *w)
{
    lock_client_close(&w->lock);
    store_close(&w->store);
}

void worker_store_failed(struct worker *w, enum store_status st, struct response *res)
{
    if (st == STORE_UNAVAILABLE) {
        log_warn("%s", w->store.err);
        response_problem(res, PROBLEM_SERVICE_UNAVAILABLE, NULL);
    } else {
        log_error("%s", w->store.err);
        response_problem(res, PROBLEM_INTERNAL, NULL);
    }
}

static int is_read(const char *method)
{
    /* nginx drops the body of a HEAD answer itself. */
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

/* GET /products/{id} */
static void product_handle(struct worker *w, int32_t id, struct response *res)
{
    struct product p;
    enum store_status st = store_product(&w->store, id, &p);
    switch (st) {
    case STORE_OK:
        response_product(res, &p);
        free(p.name);
        break;
    case STORE_NOT_FOUND:
        response_problem(res, PROBLEM_PRODUCT_NOT_FOUND, NULL);
        break;
    default:
        worker_store_failed(w, st, res);
        break;
    }
}

/* GET /healthz: both dependencies answer a round trip. */
static void health_handle(struct worker *w, struct response *res)
{
    int pg = store_ping(&w->store) == STORE_OK;
    int redis = lock_ping(&w->lock) == LOCK_OK;
    if (!pg)
        log_warn("healthz: %s", w->store.err);
    if (!redis)
        log_warn("healthz: %s", w->lock.err);
    response_health(res, pg, redis);
}

void worker_handle(struct worker *w, struct http_request *req, struct response *res)
{
    const char *param;
    int32_t id = 0;
    enum route route = request_route(req->path, &param);

    switch (route) {
    case ROUTE_BUY:
        if (strcmp(req->method, "POST") != 0)
            response_not_allowed(res, "POST");
        else if (request_parse_id(param, &id) < 0)
            response_problem(res, PROBLEM_INVALID_PRODUCT_ID, NULL);
        else
            purchase_handle(w, req, id, res);
        break;
    case ROUTE_PRODUCT:
        if (!is_read(req->method))
            response_not_allowed(res, "GET, HEAD");
        else if (request_parse_id(param, &id) < 0)
            response_problem(res, PROBLEM_INVALID_PRODUCT_ID, NULL);
        else
            product_handle(w, id, res);
        break;
    case ROUTE_HEALTH:
        if (!is_read(req->method))
            response_not_allowed(res, "GET, HEAD");
        else
            health_handle(w, res);
        break;
    default:
        response_problem(res, PROBLEM_NOT_FOUND, NULL);
        break;
    }
}
