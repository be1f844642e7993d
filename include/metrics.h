/* metrics.h -- counters and histograms shared by every worker of a stack,
 * and their rendering in the Prometheus text format for GET /metrics.
 *
 * A scrape reaches one worker but must see what all of them did, both pools
 * included, and workers come and go (multiwatch replaces them). So the
 * numbers live in one small file that every worker maps (MAP_SHARED) and
 * adds to with atomic instructions: no lock, no round trip, a few atomic
 * adds per request. (Redis would cost a command per request, and count
 * nothing while Redis is down, which is when metrics matter most.)
 *
 * The file is METRICS_FILE, by default "metrics" in the directory of the
 * worker's FastCGI socket, which the two pools share, with a suffix naming
 * its layout (".<16 hex digits>"): a version whose layout differs uses a
 * file of its own, never another's numbers. Counters start at zero
 * when the file is created and survive worker restarts; a Prometheus server
 * handles the reset when the file is made anew. A worker that cannot use the
 * file counts in its own memory, and says so (stock_metrics_shared 0). */
#ifndef STOCK_METRICS_H
#define STOCK_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "problem.h"
#include "request.h"

/* The statuses the responder answers, each with its own series. */
#define METRICS_STATUSES                                                                           \
    {                                                                                              \
        200, 400, 404, 405, 409, 413, 415, 422, 429, 500, 503, 504                                 \
    }
#define METRICS_STATUS_SLOTS 13 /* the twelve, and "other" */

/* Histogram bucket bounds, in microseconds (0.5 ms to 5 s), and +Inf. */
#define METRICS_BOUNDS_US                                                                          \
    {                                                                                              \
        500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,      \
            5000000                                                                                \
    }
#define METRICS_BUCKETS 14

struct metrics_hist {
    uint64_t bucket[METRICS_BUCKETS]; /* per bucket, not cumulative */
    uint64_t sum_us;
};

/* Purchases per transaction (combine.h): bucket bounds, and +Inf. */
#define METRICS_BATCH_BOUNDS                                                                       \
    {                                                                                              \
        1, 2, 4, 8, 16, 32, 64                                                                     \
    }
#define METRICS_BATCH_BUCKETS 8
struct metrics_count_hist {
    uint64_t bucket[METRICS_BATCH_BUCKETS]; /* per bucket, not cumulative */
    uint64_t sum;
};

enum metrics_hist_id { HIST_LOCK_WAIT, HIST_LOCK_HOLD, HIST_PG_TX, HIST_COUNT };

enum metrics_counter {
    M_UNITS_SOLD,
    M_REDIS_ERRORS,
    M_REDIS_RECONNECTS,
    M_PG_ERRORS,
    M_PG_RECONNECTS,
    M_LOCK_TIMEOUTS,
    M_FENCE_REFUSALS,
    M_REPLAYS,
    M_WORKERS_STARTED,
    M_COUNTER_COUNT
};

/* The file's contents; magic is the layout's id (see metrics.c). */
struct metrics_data {
    uint64_t magic;
    uint64_t requests[ROUTE_COUNT][METRICS_STATUS_SLOTS];
    uint64_t purchases[PROBLEM_COUNT]; /* by outcome; PROBLEM_NONE is a sale */
    uint64_t counter[M_COUNTER_COUNT];
    struct metrics_hist hist[HIST_COUNT];
    struct metrics_count_hist batch_size;
};

struct metrics {
    struct metrics_data *data;
    int shared; /* 1 when data is the shared file */
};

/* Maps path + "." + the layout's id (created if missing), or, if path is
 * NULL or empty or unusable, private memory; err then says why (empty for
 * NULL or empty). Returns 0, or -1 when even that failed. */
int metrics_open(struct metrics *m, const char *path, char *err, size_t errlen);
void metrics_close(struct metrics *m);

/* Atomic: other workers add to the same numbers. */
void metrics_add(uint64_t *counter, uint64_t n);
void metrics_observe(struct metrics_hist *h, int64_t us);
void metrics_observe_count(struct metrics_count_hist *h, int64_t n);
void metrics_count_request(struct metrics_data *d, enum route route, int status);

/* Pure, for the tests: renders a snapshot as Prometheus text into buf.
 * Returns the length, or -1 if cap is too small. */
int metrics_render(const struct metrics_data *d, int shared, char *buf, size_t cap);

/* An atomic copy of the live numbers, for rendering. */
void metrics_snapshot(const struct metrics_data *live, struct metrics_data *copy);

#endif
