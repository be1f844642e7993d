/* route.c -- see route.h. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "purchase.h"
#include "redis.h"
#include "request.h"
#include "route.h"
#include "worker.h"

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

/* GET /metrics: every worker's numbers (see metrics.h). */
static void metrics_handle(struct worker *w, struct response *res)
{
    /* Far more than the series need (about 6 KiB): a render that does not
     * fit answers 500 rather than a cut list. */
    enum { METRICS_TEXT_MAX = 32 * 1024 };
    struct metrics_data snap;
    char *text = malloc(METRICS_TEXT_MAX);
    if (text == NULL)
        return; /* res is still the 500 it started as */
    metrics_snapshot(w->metrics.data, &snap);
    int len = metrics_render(&snap, w->metrics.shared, text, METRICS_TEXT_MAX);
    if (len < 0)
        log_error("metrics: the rendering does not fit in %d bytes", METRICS_TEXT_MAX);
    else
        response_text(res, "text/plain; version=0.0.4; charset=utf-8", text, (size_t)len);
    free(text);
}

/* Adds what grew on a connection's context since the last request. */
static void add_growth(uint64_t *counter, unsigned long now, unsigned long *seen)
{
    metrics_add(counter, now - *seen);
    *seen = now;
}

/* The request just answered, into the shared metrics. */
static void record(struct worker *w, enum route route, const struct response *res)
{
    struct metrics_data *d = w->metrics.data;
    const struct trace *t = &w->trace;
    metrics_count_request(d, route, res->status);
    if (route == ROUTE_BUY) {
        metrics_add(&d->purchases[res->reason < PROBLEM_COUNT ? res->reason : PROBLEM_INTERNAL], 1);
        if (res->status == 200 && !res->replayed)
            metrics_add(&d->counter[M_UNITS_SOLD], (uint64_t)t->amount);
    }
    if (res->reason == PROBLEM_LOCK_TIMEOUT)
        metrics_add(&d->counter[M_LOCK_TIMEOUTS], 1);
    if (res->reason == PROBLEM_LOCK_LOST)
        metrics_add(&d->counter[M_FENCE_REFUSALS], 1);
    if (res->replayed)
        metrics_add(&d->counter[M_REPLAYS], 1);
    if (t->lock_wait_us >= 0)
        metrics_observe(&d->hist[HIST_LOCK_WAIT], t->lock_wait_us);
    if (t->lock_hold_us >= 0)
        metrics_observe(&d->hist[HIST_LOCK_HOLD], t->lock_hold_us);
    if (t->tx_us >= 0)
        metrics_observe(&d->hist[HIST_PG_TX], t->tx_us);
    /* A worker's first connection is not a reconnect. */
    unsigned long redis_re = w->lock.redis.connects > 0 ? w->lock.redis.connects - 1 : 0;
    unsigned long pg_re = w->store.pg.connects > 0 ? w->store.pg.connects - 1 : 0;
    add_growth(&d->counter[M_REDIS_ERRORS], w->lock.redis.errors, &w->redis_errors);
    add_growth(&d->counter[M_REDIS_RECONNECTS], redis_re, &w->redis_connects);
    add_growth(&d->counter[M_PG_ERRORS], w->store.pg.errors, &w->pg_errors);
    add_growth(&d->counter[M_PG_RECONNECTS], pg_re, &w->pg_connects);
}

/* GET /healthz: both dependencies answer a round trip. */
static void health_handle(struct worker *w, struct response *res)
{
    int pg = store_ping(&w->store) == STORE_OK;
    int redis = lock_ready(&w->lock) == LOCK_OK && redis_ping(&w->lock.redis) == 0;
    if (!pg)
        log_warn("healthz: %s", w->store.pg.err);
    if (!redis)
        log_warn("healthz: %s", w->lock.redis.err);
    response_health(res, pg, redis);
}

void route_handle(struct worker *w, struct http_request *req, struct response *res)
{
    const char *param;
    int32_t id = 0;
    enum route route = request_route(req->path, &param);

    w->trace = (struct trace){.lock_wait_us = -1, .lock_hold_us = -1, .tx_us = -1};
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
    case ROUTE_METRICS:
        w->trace.probe = 1;
        if (!is_read(req->method))
            response_not_allowed(res, "GET, HEAD");
        else if (route == ROUTE_HEALTH)
            health_handle(w, res);
        else
            metrics_handle(w, res);
        break;
    default:
        response_problem(res, PROBLEM_NOT_FOUND, NULL);
        break;
    }
    record(w, route, res);
}
