/* test_combine.c -- the pure half of combining: queue entries, the
 * allocation of a batch in arrival order, and the answers. */
#include <string.h>

#include "combine.h"
#include "problem.h"
#include "unit.h"

#define TOKEN "0123456789abcdef0123456789abcdef"

/* A batch of the given amounts, the first the holder's own, all claimed. */
static void batch_of(struct combine_batch *b, const int32_t *amounts, int n)
{
    memset(b, 0, sizeof *b);
    b->product = 7;
    b->n = n;
    for (int i = 0; i < n; i++) {
        b->items[i].amount = amounts[i];
        b->items[i].claimed = 1;
        if (i > 0)
            memcpy(b->items[i].token, TOKEN, 33);
    }
}

static void an_entry_round_trips_with_any_printable_key(void)
{
    char payload[LOCK_ENTRY_MAX - 33], entry[LOCK_ENTRY_MAX];
    struct combine_item it;
    CHECK(combine_payload(payload, sizeof payload, 3, "a:b \"c\"\\") == 0);
    snprintf(entry, sizeof entry, "%s:%s", TOKEN, payload);
    CHECK(combine_parse_entry(entry, &it) == 0);
    CHECK(strcmp(it.token, TOKEN) == 0 && it.amount == 3 && strcmp(it.key, "a:b \"c\"\\") == 0);
    CHECK(combine_payload(payload, sizeof payload, 1, NULL) == 0);
    snprintf(entry, sizeof entry, "%s:%s", TOKEN, payload);
    CHECK(combine_parse_entry(entry, &it) == 0 && it.amount == 1 && it.key[0] == '\0');
}

static void an_entry_this_version_did_not_write_is_refused(void)
{
    struct combine_item it;
    const char *bad[] = {
        "", "short:1:", TOKEN ":0:", TOKEN ":-1:", TOKEN ":x:", TOKEN ":1", TOKEN ":2147483648:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_CASE(combine_parse_entry(bad[i], &it) == -1, bad[i]);
}

static void a_batch_is_allocated_in_arrival_order_as_one_by_one(void)
{
    /* Stock 10: 4 fits (6 left), 5 fits (1 left), 3 does not (1 at its
     * turn), 1 fits (0 left), 2 does not (0 at its turn). */
    const int32_t amounts[] = {4, 5, 3, 1, 2};
    const int64_t ids[] = {100, 101, 102, 103, 104};
    struct combine_batch b;
    batch_of(&b, amounts, 5);
    combine_allocate(&b, 1, 10, ids);
    CHECK(b.items[0].out.status == 200 && b.items[0].out.order.id == 100 &&
          b.items[0].out.order.remaining == 6);
    CHECK(b.items[1].out.status == 200 && b.items[1].out.order.id == 101 &&
          b.items[1].out.order.remaining == 1);
    CHECK(b.items[2].out.status == 409 && b.items[2].out.available == 1);
    CHECK(b.items[3].out.status == 200 && b.items[3].out.order.id == 102 &&
          b.items[3].out.order.remaining == 0);
    CHECK(b.items[4].out.status == 409 && b.items[4].out.available == 0);
    CHECK(b.sold == 10 && b.stock == 0 && b.stock_before == 10 && b.found);
}

static void a_used_key_takes_no_stock_and_no_order_id(void)
{
    const int32_t amounts[] = {1, 2, 1};
    const int64_t ids[] = {5, 6, 7};
    struct combine_batch b;
    batch_of(&b, amounts, 3);
    b.items[1].claimed = 0;
    combine_allocate(&b, 1, 2, ids);
    CHECK(b.items[0].out.status == 200 && b.items[0].out.order.id == 5);
    CHECK(b.items[1].out.status == 0);
    CHECK(b.items[2].out.status == 200 && b.items[2].out.order.id == 6 &&
          b.items[2].out.order.remaining == 0);
}

static void a_missing_product_is_404_for_all(void)
{
    const int32_t amounts[] = {1, 1};
    const int64_t ids[] = {1, 2};
    struct combine_batch b;
    batch_of(&b, amounts, 2);
    combine_allocate(&b, 0, 0, ids);
    CHECK(b.items[0].out.status == 404 && b.items[1].out.status == 404 && b.sold == 0);
}

static void answers_round_trip(void)
{
    const int32_t amounts[] = {1, 2, 9};
    const int64_t ids[] = {41, 42, 43};
    struct combine_batch b;
    char answer[LOCK_ANSWER_MAX];
    struct outcome o;
    int problem = 0;
    batch_of(&b, amounts, 3);
    combine_allocate(&b, 1, 5, ids);
    combine_answer(&b, 1, STORE_OK, answer);
    CHECK(strcmp(answer, TOKEN ":200 42 2") == 0);
    CHECK(combine_parse_answer(answer + 33, 7, 2, &o, &problem) == COMBINE_OUTCOME);
    CHECK(o.status == 200 && o.order.id == 42 && o.order.remaining == 2 &&
          o.order.product_id == 7 && o.order.amount == 2);
    combine_answer(&b, 2, STORE_OK, answer);
    CHECK(strcmp(answer, TOKEN ":409 2") == 0);
    CHECK(combine_parse_answer(answer + 33, 7, 9, &o, &problem) == COMBINE_OUTCOME &&
          o.status == 409 && o.available == 2);
    combine_answer(&b, 1, STORE_FENCED, answer);
    CHECK(strcmp(answer, TOKEN ":retry") == 0);
    combine_answer(&b, 1, STORE_ALONE, answer);
    CHECK(strcmp(answer, TOKEN ":retry") == 0);
    snprintf(b.items[1].key, sizeof b.items[1].key, "k");
    combine_answer(&b, 1, STORE_ALONE, answer);
    CHECK(strcmp(answer, TOKEN ":alone") == 0);
    b.items[1].key[0] = '\0';
    combine_answer(&b, 1, STORE_UNKNOWN, answer);
    CHECK(combine_parse_answer(answer + 33, 7, 2, &o, &problem) == COMBINE_CLOSE);
    combine_answer(&b, 1, STORE_UNAVAILABLE, answer);
    CHECK(combine_parse_answer(answer + 33, 7, 2, &o, &problem) == COMBINE_PROBLEM &&
          problem == PROBLEM_SERVICE_UNAVAILABLE);
    b.items[1].claimed = 0;
    combine_answer(&b, 1, STORE_OK, answer);
    CHECK(combine_parse_answer(answer + 33, 7, 2, &o, &problem) == COMBINE_KEY);
}

static void a_malformed_answer_is_not_taken_for_an_outcome(void)
{
    struct outcome o;
    int problem;
    const char *bad[] = {"",         "200",    "200 1",     "200 0 1",    "200 1 -1",
                         "200 1 2x", "409 -1", "problem 0", "problem 99", "go"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_CASE(combine_parse_answer(bad[i], 7, 1, &o, &problem) == COMBINE_BAD, bad[i]);
}

void suite_combine(void)
{
    RUN(an_entry_round_trips_with_any_printable_key);
    RUN(an_entry_this_version_did_not_write_is_refused);
    RUN(a_batch_is_allocated_in_arrival_order_as_one_by_one);
    RUN(a_used_key_takes_no_stock_and_no_order_id);
    RUN(a_missing_product_is_404_for_all);
    RUN(answers_round_trip);
    RUN(a_malformed_answer_is_not_taken_for_an_outcome);
}
