/* test_store.c -- which PostgreSQL failures are worth a retry. */
#include "pg.h"
#include "unit.h"

static void sqlstate_transient_failures_are_unavailable(void)
{
    static const char *const transient[] = {
        "08006", "08001", "57014", "57P01", "57P02", "57P03",
        "55P03", "40001", "40P01", "53300", "25006",
    };
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        CHECK_CASE(pg_classify_sqlstate(transient[i]) == STORE_UNAVAILABLE, transient[i]);
    CHECK(pg_classify_sqlstate(NULL) == STORE_UNAVAILABLE);
}

static void sqlstate_other_failures_are_errors(void)
{
    static const char *const errors[] = {"23514", "23503", "42P01", "42703", "26000", "22003"};
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        CHECK_CASE(pg_classify_sqlstate(errors[i]) == STORE_ERROR, errors[i]);
}

void suite_store(void)
{
    RUN(sqlstate_transient_failures_are_unavailable);
    RUN(sqlstate_other_failures_are_errors);
}
