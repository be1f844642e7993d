/* test_metrics.c -- counting, and the Prometheus text. */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "unit.h"

static char *render(const struct metrics_data *d)
{
    static char buf[32 * 1024];
    int n = metrics_render(d, 1, buf, sizeof buf);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void requests_are_counted_by_route_and_status(void)
{
    struct metrics_data *d = calloc(1, sizeof *d);
    metrics_count_request(d, ROUTE_BUY, 200);
    metrics_count_request(d, ROUTE_BUY, 200);
    metrics_count_request(d, ROUTE_BUY, 409);
    metrics_count_request(d, ROUTE_NONE, 404);
    metrics_count_request(d, ROUTE_BUY, 429);
    metrics_count_request(d, ROUTE_BUY, 504);
    metrics_count_request(d, ROUTE_HEALTH, 299); /* not one of ours: "other" */
    const char *text = render(d);
    CHECK(strstr(text, "stock_http_requests_total{route=\"buy\",status=\"200\"} 2\n") != NULL);
    CHECK(strstr(text, "stock_http_requests_total{route=\"buy\",status=\"409\"} 1\n") != NULL);
    /* lock_timeout and outcome_unknown: "busy" and "maybe bought" apart. */
    CHECK(strstr(text, "stock_http_requests_total{route=\"buy\",status=\"429\"} 1\n") != NULL);
    CHECK(strstr(text, "stock_http_requests_total{route=\"buy\",status=\"504\"} 1\n") != NULL);
    CHECK(strstr(text, "stock_http_requests_total{route=\"other\",status=\"404\"} 1\n") != NULL);
    CHECK(strstr(text, "stock_http_requests_total{route=\"healthz\",status=\"other\"} 1\n") !=
          NULL);
    CHECK(strstr(text, "route=\"product\"") == NULL); /* no series for what never happened */
    free(d);
}

static void a_histogram_is_cumulative_with_sum_and_count(void)
{
    struct metrics_data *d = calloc(1, sizeof *d);
    metrics_observe(&d->hist[HIST_LOCK_WAIT], 400);     /* <= 0.0005 */
    metrics_observe(&d->hist[HIST_LOCK_WAIT], 500);     /* <= 0.0005, the bound itself */
    metrics_observe(&d->hist[HIST_LOCK_WAIT], 3000);    /* <= 0.005 */
    metrics_observe(&d->hist[HIST_LOCK_WAIT], 9000000); /* +Inf */
    const char *text = render(d);
    CHECK(strstr(text, "# TYPE stock_lock_wait_seconds histogram\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_bucket{le=\"0.0005\"} 2\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_bucket{le=\"0.0025\"} 2\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_bucket{le=\"0.005\"} 3\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_bucket{le=\"5\"} 3\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_bucket{le=\"+Inf\"} 4\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_sum 9.003900\n") != NULL);
    CHECK(strstr(text, "stock_lock_wait_seconds_count 4\n") != NULL);
    free(d);
}

static void batch_sizes_are_counted_in_purchases(void)
{
    struct metrics_data *d = calloc(1, sizeof *d);
    metrics_observe_count(&d->batch_size, 1);
    metrics_observe_count(&d->batch_size, 3);
    metrics_observe_count(&d->batch_size, 64);
    metrics_observe_count(&d->batch_size, 65);
    const char *text = render(d);
    CHECK(strstr(text, "# TYPE stock_batch_size histogram\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_bucket{le=\"1\"} 1\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_bucket{le=\"2\"} 1\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_bucket{le=\"4\"} 2\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_bucket{le=\"64\"} 3\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_bucket{le=\"+Inf\"} 4\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_sum 133\n") != NULL);
    CHECK(strstr(text, "stock_batch_size_count 4\n") != NULL);
    free(d);
}

static void every_purchase_code_has_a_series(void)
{
    struct metrics_data *d = calloc(1, sizeof *d);
    metrics_add(&d->purchases[PROBLEM_NONE], 3);
    metrics_add(&d->counter[M_UNITS_SOLD], 5);
    const char *text = render(d);
    CHECK(strstr(text, "stock_purchases_total{code=\"ok\"} 3\n") != NULL);
    CHECK(strstr(text, "stock_purchases_total{code=\"insufficient_stock\"} 0\n") != NULL);
    CHECK(strstr(text, "stock_purchases_total{code=\"lock_timeout\"} 0\n") != NULL);
    CHECK(strstr(text, "stock_units_sold_total 5\n") != NULL);
    CHECK(strstr(text, "stock_metrics_shared 1\n") != NULL);
    free(d);
}

static void a_render_that_does_not_fit_fails_whole(void)
{
    struct metrics_data *d = calloc(1, sizeof *d);
    char small[100];
    CHECK(metrics_render(d, 1, small, sizeof small) == -1);
    free(d);
}

static void private_metrics_work_without_a_file(void)
{
    struct metrics m;
    char err[128];
    CHECK(metrics_open(&m, "/nonexistent-dir/metrics", err, sizeof err) == 0);
    CHECK(m.shared == 0);
    CHECK(strstr(err, "/nonexistent-dir/metrics") != NULL);
    metrics_add(&m.data->counter[M_REPLAYS], 1);
    CHECK(m.data->counter[M_REPLAYS] == 1);
    metrics_close(&m);
}

void suite_metrics(void)
{
    RUN(requests_are_counted_by_route_and_status);
    RUN(a_histogram_is_cumulative_with_sum_and_count);
    RUN(batch_sizes_are_counted_in_purchases);
    RUN(every_purchase_code_has_a_series);
    RUN(a_render_that_does_not_fit_fails_whole);
    RUN(private_metrics_work_without_a_file);
}
