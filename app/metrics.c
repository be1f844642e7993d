/* metrics.c -- see metrics.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"

/* Raise when the meaning of a field changes without its size changing. */
#define METRICS_LAYOUT_VERSION 1

static const int statuses[] = METRICS_STATUSES;
static const int64_t bounds_us[] = METRICS_BOUNDS_US;
_Static_assert(sizeof statuses / sizeof statuses[0] == METRICS_STATUS_SLOTS - 1,
               "one slot per status, and one for the others");
_Static_assert(sizeof bounds_us / sizeof bounds_us[0] == METRICS_BUCKETS - 1,
               "one bucket per bound, and +Inf");

/* FNV-1a over what decides the layout: its version, its size, the counts
 * behind its arrays and the numbers behind its slots. The file's name and
 * its stamp carry it, so that a version with another layout never reads
 * this one's numbers (nor maps a file of another size). */
static uint64_t layout_id(void)
{
    uint64_t fields[] = {METRICS_LAYOUT_VERSION, sizeof(struct metrics_data),
                         PROBLEM_COUNT,          ROUTE_COUNT,
                         M_COUNTER_COUNT,        HIST_COUNT};
    uint64_t h = 0xcbf29ce484222325ULL;
    const unsigned char *parts[] = {(const unsigned char *)fields, (const unsigned char *)statuses,
                                    (const unsigned char *)bounds_us};
    size_t sizes[] = {sizeof fields, sizeof statuses, sizeof bounds_us};
    for (size_t p = 0; p < 3; p++)
        for (size_t i = 0; i < sizes[p]; i++)
            h = (h ^ parts[p][i]) * 0x100000001b3ULL;
    return h | 1; /* never 0, the stamp of a new file */
}

static const char *const route_names[ROUTE_COUNT] = {
    [ROUTE_NONE] = "other",     [ROUTE_BUY] = "buy",         [ROUTE_PRODUCT] = "product",
    [ROUTE_HEALTH] = "healthz", [ROUTE_METRICS] = "metrics",
};

static int map_file(struct metrics *m, const char *base, char *err, size_t errlen)
{
    uint64_t id = layout_id();
    char path[4096];
    snprintf(path, sizeof path, "%s.%016llx", base, (unsigned long long)id);
    /* The workers of both pools run as one user: the file is theirs only. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "metrics: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    /* Workers starting together may all do this: growing a file to the same
     * size twice is harmless, and the new bytes read as zero. */
    struct stat sb = {0};
    void *p = MAP_FAILED;
    if (fstat(fd, &sb) == 0 && (sb.st_size == (off_t)sizeof *m->data ||
                                (sb.st_size == 0 && ftruncate(fd, sizeof *m->data) == 0)))
        p = mmap(NULL, sizeof *m->data, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd); /* the mapping stays */
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "metrics: cannot map %s: %s", path,
                 sb.st_size > 0 && sb.st_size != (off_t)sizeof *m->data ? "another layout"
                                                                        : strerror(saved));
        return -1;
    }
    m->data = p;
    uint64_t zero = 0;
    /* A new file: the first worker stamps it; a stamp of another layout
     * (same size by chance) is refused. */
    __atomic_compare_exchange_n(&m->data->magic, &zero, id, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&m->data->magic, __ATOMIC_SEQ_CST) != id) {
        snprintf(err, errlen, "metrics: %s has another layout", path);
        munmap(p, sizeof *m->data);
        m->data = NULL;
        return -1;
    }
    m->shared = 1;
    return 0;
}

int metrics_open(struct metrics *m, const char *path, char *err, size_t errlen)
{
    m->data = NULL;
    m->shared = 0;
    err[0] = '\0';
    if (path != NULL && path[0] != '\0' && map_file(m, path, err, errlen) == 0)
        return 0;
    m->data = calloc(1, sizeof *m->data);
    if (m->data == NULL)
        return -1;
    m->data->magic = layout_id();
    return 0;
}

void metrics_close(struct metrics *m)
{
    if (m->data == NULL)
        return;
    if (m->shared)
        munmap(m->data, sizeof *m->data);
    else
        free(m->data);
    m->data = NULL;
}

void metrics_add(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

static const int64_t batch_bounds[] = METRICS_BATCH_BOUNDS;
_Static_assert(sizeof batch_bounds / sizeof batch_bounds[0] == METRICS_BATCH_BUCKETS - 1,
               "one bucket per bound, and +Inf");

/* Adds v to a histogram of nb buckets: nb - 1 bounds, and +Inf. */
static void observe(uint64_t *bucket, uint64_t *sum, const int64_t *bounds, size_t nb, int64_t v)
{
    if (v < 0)
        v = 0;
    size_t i = 0;
    while (i < nb - 1 && v > bounds[i])
        i++;
    metrics_add(&bucket[i], 1);
    metrics_add(sum, (uint64_t)v);
}

void metrics_observe(struct metrics_hist *h, int64_t us)
{
    observe(h->bucket, &h->sum_us, bounds_us, METRICS_BUCKETS, us);
}

void metrics_observe_count(struct metrics_count_hist *h, int64_t n)
{
    observe(h->bucket, &h->sum, batch_bounds, METRICS_BATCH_BUCKETS, n);
}

void metrics_count_request(struct metrics_data *d, enum route route, int status)
{
    size_t slot = 0;
    while (slot < METRICS_STATUS_SLOTS - 1 && statuses[slot] != status)
        slot++;
    if ((int)route < 0 || route >= ROUTE_COUNT)
        route = ROUTE_NONE;
    metrics_add(&d->requests[route][slot], 1);
}

void metrics_snapshot(const struct metrics_data *live, struct metrics_data *copy)
{
    /* The struct is nothing but uint64_t: copy it word by word, atomically. */
    const uint64_t *from = (const uint64_t *)live;
    uint64_t *to = (uint64_t *)copy;
    for (size_t i = 0; i < sizeof *live / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* Output with a bound: every put fails once cap is reached. */
struct out {
    char *buf;
    size_t cap, len;
    int full;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    if (o->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        o->full = 1;
    else
        o->len += (size_t)n;
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(struct out *o, const char *name, const char *help, uint64_t value)
{
    family(o, name, "counter", help);
    put(o, "%s %llu\n", name, (unsigned long long)value);
}

/* A histogram: nb buckets (per bucket, not cumulative) with nb - 1 bounds
 * and +Inf; bounds and sum are divided by scale for the text. */
static void buckets(struct out *o, const char *name, const char *help, const uint64_t *bucket,
                    const int64_t *bounds, size_t nb, uint64_t sum, double scale)
{
    family(o, name, "histogram", help);
    uint64_t total = 0;
    for (size_t i = 0; i < nb; i++) {
        total += bucket[i];
        if (i < nb - 1)
            put(o, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds[i] / scale,
                (unsigned long long)total);
        else
            put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)total);
    }
    if (scale == 1)
        put(o, "%s_sum %llu\n", name, (unsigned long long)sum);
    else
        put(o, "%s_sum %.6f\n", name, (double)sum / scale);
    put(o, "%s_count %llu\n", name, (unsigned long long)total);
}

static void histogram(struct out *o, const char *name, const char *help,
                      const struct metrics_hist *h)
{
    buckets(o, name, help, h->bucket, bounds_us, METRICS_BUCKETS, h->sum_us, 1e6);
}

static void requests(struct out *o, const struct metrics_data *d)
{
    family(o, "stock_http_requests_total", "counter",
           "Requests the responders answered, by route and status.");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int s = 0; s < METRICS_STATUS_SLOTS; s++) {
            if (d->requests[r][s] == 0)
                continue;
            char status[8];
            if (s < METRICS_STATUS_SLOTS - 1)
                snprintf(status, sizeof status, "%d", statuses[s]);
            else
                snprintf(status, sizeof status, "other");
            put(o, "stock_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n", route_names[r],
                status, (unsigned long long)d->requests[r][s]);
        }
}

static void purchases(struct out *o, const struct metrics_data *d)
{
    family(o, "stock_purchases_total", "counter",
           "Purchase requests by outcome: code ok for a sale, else the problem's code.");
    for (int p = 0; p < PROBLEM_COUNT; p++)
        put(o, "stock_purchases_total{code=\"%s\"} %llu\n",
            p == PROBLEM_NONE ? "ok" : problem_info((enum problem)p)->code,
            (unsigned long long)d->purchases[p]);
}

int metrics_render(const struct metrics_data *d, int shared, char *buf, size_t cap)
{
    struct out o = {buf, cap, 0, 0};
    const uint64_t *c = d->counter;
    requests(&o, d);
    purchases(&o, d);
    counter(&o, "stock_units_sold_total", "Units sold (committed).", c[M_UNITS_SOLD]);
    counter(&o, "stock_lock_timeouts_total",
            "Buyers answered lock_timeout: they waited LOCK_WAIT_MS for the lock, or "
            "lock_timeout for the product's row, in vain.",
            c[M_LOCK_TIMEOUTS]);
    counter(&o, "stock_fence_refusals_total",
            "Purchases refused because their lock was lost (stale fence or spent validity).",
            c[M_FENCE_REFUSALS]);
    counter(&o, "stock_idempotent_replays_total",
            "Answers replayed for a repeated Idempotency-Key.", c[M_REPLAYS]);
    counter(&o, "stock_redis_errors_total", "Failed Redis calls.", c[M_REDIS_ERRORS]);
    counter(&o, "stock_redis_reconnects_total", "Redis connections made again after one was lost.",
            c[M_REDIS_RECONNECTS]);
    counter(&o, "stock_postgres_errors_total", "Failed PostgreSQL calls.", c[M_PG_ERRORS]);
    counter(&o, "stock_postgres_reconnects_total",
            "PostgreSQL sessions opened again after one was lost.", c[M_PG_RECONNECTS]);
    counter(&o, "stock_workers_started_total", "Responder processes started.",
            c[M_WORKERS_STARTED]);
    histogram(&o, "stock_lock_wait_seconds", "Time to get a product's lock (or give up).",
              &d->hist[HIST_LOCK_WAIT]);
    histogram(&o, "stock_lock_hold_seconds", "Time a lock was held, from grant to release.",
              &d->hist[HIST_LOCK_HOLD]);
    histogram(&o, "stock_postgres_transaction_seconds",
              "Time of a purchase transaction in PostgreSQL, BEGIN to COMMIT.",
              &d->hist[HIST_PG_TX]);
    buckets(&o, "stock_batch_size",
            "Purchases made per purchase transaction: 1, or a lock holder's own and the "
            "ones it combined.",
            d->batch_size.bucket, batch_bounds, METRICS_BATCH_BUCKETS, d->batch_size.sum, 1);
    family(&o, "stock_metrics_shared", "gauge",
           "1 if these numbers are every worker's, 0 if only this worker's.");
    put(&o, "stock_metrics_shared %d\n", shared);
    return o.full ? -1 : (int)o.len;
}
