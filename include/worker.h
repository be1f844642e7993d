/* worker.h -- one responder process: its configuration and its two
 * connections, which the handlers (route.h) answer a request with.
 *
 * A worker is single-threaded and serves one request at a time; spawn-fcgi and
 * multiwatch run several of them on one FastCGI socket. */
#ifndef STOCK_WORKER_H
#define STOCK_WORKER_H

#include "http.h"
#include "log.h"
#include "lock.h"
#include "metrics.h"
#include "response.h"
#include "store.h"

/* What the request being served did, for its log line and the metrics.
 * route_handle resets it; the purchase handler fills it in. */
struct trace {
    int32_t product;      /* 0: not a purchase */
    int32_t amount;       /* 0: not read */
    int64_t lock_wait_us; /* -1: no lock was asked for */
    int64_t lock_hold_us; /* -1: no lock was held */
    int64_t tx_us;        /* -1: no purchase transaction ran */
    int probe;            /* /healthz or /metrics */
};

struct worker {
    const struct config *cfg;
    struct lock_client lock;
    struct store store;
    unsigned long locks_lost; /* purchases refused for a lost lock, for the log */
    struct trace trace;
    struct metrics metrics;
    /* The connections' error and connect counts already added to metrics. */
    unsigned long redis_errors, redis_connects, pg_errors, pg_connects;
};

/* Opens both connections and the metrics (see metrics.h; metrics_file NULL
 * or empty keeps them in private memory). A dependency that is down is not
 * fatal: the worker starts, answers 503 and reconnects on the next request.
 * Returns 0, or -1 if not even private metrics memory could be had. */
int worker_open(struct worker *w, const struct config *cfg, const char *metrics_file);
void worker_close(struct worker *w);

/* Answers a failed store call: 503 service_unavailable for a transient
 * failure, 500 for anything else; the detail goes to the log. */
void worker_store_failed(struct worker *w, enum store_status st, struct response *res);

/* The level of the request's log line: info, except a probe (/healthz,
 * /metrics) answered 200, which is debug. Healthchecks and scrapes come
 * every few seconds from every checker (docker-compose runs three), and
 * their lines would bury the purchases; the metrics count them all. A probe
 * that fails stays at info, and its cause is a warn event of its own. */
enum log_level worker_log_level(const struct worker *w, const struct response *res);

#endif
