/* worker.h -- one responder process: its configuration and its two
 * connections, and the handlers that answer a request with them.
 *
 * A worker is single-threaded and serves one request at a time; spawn-fcgi and
 * multiwatch run several of them on one FastCGI socket. */
#ifndef STOCK_WORKER_H
#define STOCK_WORKER_H

#include "http.h"
#include "lock.h"
#include "response.h"
#include "store.h"

struct worker {
    const struct config *cfg;
    struct lock_client lock;
    struct store store;
    unsigned long locks_lost; /* purchases refused for a lost lock, for the log */
};

/* Opens both connections. A dependency that is down is not fatal: the worker
 * starts, answers 503 and reconnects on the next request. */
void worker_open(struct worker *w, const struct config *cfg);
void worker_close(struct worker *w);

/* Answers a failed store call: 503 service_unavailable for a transient
 * failure, 500 for anything else; the detail goes to the log. */
void worker_store_failed(struct worker *w, enum store_status st, struct response *res);

/* Routes one request and fills res (which starts as a 500). */
void worker_handle(struct worker *w, struct http_request *req, struct response *res);

#endif
