/* test_response.c -- the exact bytes of each answer, and the catalogue. */
#include <string.h>

#include "problem.h"
#include "response.h"
#include "store.h"
#include "unit.h"

static int body_is(const struct response *res, const char *want)
{
    return res->body_len == strlen(want) && memcmp(res->body, want, res->body_len) == 0;
}

static void new_response_is_internal_error(void)
{
    struct response res;
    response_init(&res);
    CHECK(res.status == 500);
    CHECK(strcmp(res.content_type, "application/problem+json") == 0);
    CHECK(strstr(res.body, "\"code\":\"internal_error\"") != NULL);
    response_free(&res);
}

static void order_body_has_the_v1_shape(void)
{
    struct response res;
    struct order o = {.id = 17, .product_id = 1, .amount = 2, .remaining = 3};
    response_init(&res);
    CHECK(response_order(&res, &o) == 0);
    CHECK(res.status == 200);
    CHECK(strcmp(res.content_type, "application/json") == 0);
    CHECK(body_is(&res, "{\"order_id\":17,\"product_id\":1,\"amount\":2,\"remaining\":3}"));
    response_free(&res);
}

static void product_body_escapes_names_and_allows_null(void)
{
    struct response res;
    struct product p = {.id = 1, .name = "Quote \" and / slash", .amount = 5};
    response_init(&res);
    CHECK(response_product(&res, &p) == 0);
    CHECK(body_is(&res, "{\"id\":1,\"name\":\"Quote \\\" and / slash\",\"amount\":5}"));
    p.name = NULL;
    CHECK(response_product(&res, &p) == 0);
    CHECK(body_is(&res, "{\"id\":1,\"name\":null,\"amount\":5}"));
    response_free(&res);
}

static void problem_body_follows_rfc9457(void)
{
    struct response res;
    response_init(&res);
    CHECK(response_problem(&res, PROBLEM_INVALID_AMOUNT, "custom detail") == 0);
    CHECK(res.status == 400);
    CHECK(res.retry_after == 0);
    CHECK(strcmp(res.content_type, "application/problem+json") == 0);
    CHECK(body_is(&res, "{\"type\":\"tag:redisdistributedlock,2026:problem:invalid_amount\","
                        "\"title\":\"Invalid amount\",\"status\":400,\"detail\":\"custom detail\","
                        "\"code\":\"invalid_amount\"}"));
    response_free(&res);
}

static void insufficient_stock_reports_available_and_requested(void)
{
    struct response res;
    response_init(&res);
    CHECK(response_insufficient(&res, 4, 10) == 0);
    CHECK(res.status == 409);
    CHECK(strstr(res.body, "\"code\":\"insufficient_stock\",\"available\":4,\"requested\":10}") !=
          NULL);
    response_free(&res);
}

static void unavailable_answers_carry_retry_after(void)
{
    struct response res;
    response_init(&res);
    CHECK(response_problem(&res, PROBLEM_SERVICE_UNAVAILABLE, NULL) == 0);
    CHECK(res.status == 503 && res.retry_after > 0);
    CHECK(response_problem(&res, PROBLEM_INVALID_JSON, NULL) == 0);
    CHECK(res.retry_after == 0);
    response_free(&res);
}

/* What an edge load balancer reads from the status alone: 503 bought
 * nothing and this host cannot sell now; 429 bought nothing, the product is
 * busy; 504 may have bought. */
static void retryable_statuses_tell_nothing_bought_from_maybe_bought(void)
{
    static const struct {
        enum problem p;
        int status;
        const char *reason;
    } cases[] = {
        {PROBLEM_SERVICE_UNAVAILABLE, 503, "Service Unavailable"},
        {PROBLEM_LOCK_LOST, 503, "Service Unavailable"},
        {PROBLEM_LOCK_TIMEOUT, 429, "Too Many Requests"},
        {PROBLEM_OUTCOME_UNKNOWN, 504, "Gateway Timeout"},
    };
    struct response res;
    response_init(&res);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *code = problem_info(cases[i].p)->code;
        CHECK_CASE(response_problem(&res, cases[i].p, NULL) == 0, code);
        CHECK_CASE(res.status == cases[i].status && res.retry_after == 1, code);
        CHECK_CASE(strcmp(response_reason(res.status), cases[i].reason) == 0, code);
    }
    /* Nothing else answers 504: it means "maybe bought" to an edge. */
    for (int p = 1; p < PROBLEM_COUNT; p++)
        CHECK_CASE(problem_info((enum problem)p)->status != 504 || p == PROBLEM_OUTCOME_UNKNOWN,
                   problem_info((enum problem)p)->code);
    response_free(&res);
}

static void method_not_allowed_names_allowed_methods(void)
{
    struct response res;
    response_init(&res);
    CHECK(response_not_allowed(&res, "POST") == 0);
    CHECK(res.status == 405 && strcmp(res.allow, "POST") == 0);
    response_free(&res);
}

static void health_names_what_is_down(void)
{
    struct response res;
    response_init(&res);
    CHECK(response_health(&res, 1, 1) == 0);
    CHECK(res.status == 200 &&
          body_is(&res, "{\"status\":\"ok\",\"postgres\":\"ok\",\"redis\":\"ok\"}"));
    CHECK(response_health(&res, 1, 0) == 0);
    CHECK(res.status == 503 && res.retry_after > 0);
    CHECK(strstr(res.body, "\"postgres\":\"ok\",\"redis\":\"down\"}") != NULL);
    CHECK(response_health(&res, 0, 0) == 0);
    CHECK(strstr(res.body, "\"detail\":\"Not ready: PostgreSQL and Redis.\"") != NULL);
    response_free(&res);
}

static void problem_codes_are_unique_and_complete(void)
{
    for (int i = 1; i < PROBLEM_COUNT; i++) {
        const struct problem_info *a = problem_info((enum problem)i);
        CHECK(a->status >= 400 && a->code != NULL && a->title != NULL && a->detail != NULL);
        CHECK(strcmp(response_reason(a->status), "Unknown") != 0);
        for (int j = i + 1; j < PROBLEM_COUNT; j++)
            CHECK(strcmp(a->code, problem_info((enum problem)j)->code) != 0);
    }
    CHECK(problem_info((enum problem)999) == problem_info(PROBLEM_INTERNAL));
}

static void outcome_rebuilds_each_first_answer(void)
{
    struct response res;
    struct outcome o = {.status = 200,
                        .order = {.id = 7, .product_id = 3, .amount = 2, .remaining = 5}};
    response_init(&res);
    CHECK(response_outcome(&res, &o, 2) == 0);
    CHECK(res.status == 200 &&
          body_is(&res, "{\"order_id\":7,\"product_id\":3,\"amount\":2,\"remaining\":5}"));
    o.status = 409;
    o.available = 1;
    CHECK(response_outcome(&res, &o, 2) == 0);
    CHECK(res.status == 409 && strstr(res.body, "\"available\":1,\"requested\":2}") != NULL);
    o.status = 404;
    CHECK(response_outcome(&res, &o, 2) == 0);
    CHECK(res.status == 404 && strstr(res.body, "\"code\":\"product_not_found\"") != NULL);
    response_free(&res);
}

void suite_response(void)
{
    RUN(outcome_rebuilds_each_first_answer);
    RUN(new_response_is_internal_error);
    RUN(order_body_has_the_v1_shape);
    RUN(product_body_escapes_names_and_allows_null);
    RUN(problem_body_follows_rfc9457);
    RUN(insufficient_stock_reports_available_and_requested);
    RUN(unavailable_answers_carry_retry_after);
    RUN(retryable_statuses_tell_nothing_bought_from_maybe_bought);
    RUN(method_not_allowed_names_allowed_methods);
    RUN(health_names_what_is_down);
    RUN(problem_codes_are_unique_and_complete);
}
