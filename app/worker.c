/* worker.c -- see worker.h. */
#include <string.h>

#include "log.h"
#include "worker.h"

int worker_open(struct worker *w, const struct config *cfg, const char *metrics_file)
{
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    char err[256];
    if (metrics_open(&w->metrics, metrics_file, err, sizeof err) < 0)
        return -1;
    if (err[0] != '\0')
        log_warn("%s; this worker's /metrics counts only its own requests", err);
    metrics_add(&w->metrics.data->counter[M_WORKERS_STARTED], 1);
    if (lock_client_open(&w->lock, cfg) < 0)
        log_warn("%s (will retry on the next request)", w->lock.redis.err);
    if (store_open(&w->store, cfg) < 0)
        log_warn("%s (will retry on the next request)", w->store.pg.err);
    return 0;
}

void worker_close(struct worker *w)
{
    lock_client_close(&w->lock);
    store_close(&w->store);
    metrics_close(&w->metrics);
}

void worker_store_failed(struct worker *w, enum store_status st, struct response *res)
{
    if (st == STORE_UNAVAILABLE) {
        log_warn("%s", w->store.pg.err);
        response_problem(res, PROBLEM_SERVICE_UNAVAILABLE, NULL);
    } else if (st == STORE_UNKNOWN) {
        /* A replayed outcome that may not survive a failover (store_key). */
        log_error("%s", w->store.pg.err);
        response_problem(res, PROBLEM_OUTCOME_UNKNOWN, NULL);
    } else {
        log_error("%s", w->store.pg.err);
        response_problem(res, PROBLEM_INTERNAL, NULL);
    }
}

enum log_level worker_log_level(const struct worker *w, const struct response *res)
{
    return w->trace.probe && res->status == 200 ? LOG_DEBUG : LOG_INFO;
}
