/* unit.h -- a tiny test harness in the spirit of hiredis's test.c.
 *
 * A test is a function named for the behaviour it proves. CHECK() records a
 * failure with its location and carries on, so one run shows every broken
 * expectation. Output is TAP ("ok 3 - name" / "not ok 4 - name"), which
 * tests/run.sh counts. */
#ifndef STOCK_UNIT_H
#define STOCK_UNIT_H

#include <stdio.h>

extern int unit_check_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("#   %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                    \
            unit_check_failed = 1;                                                                 \
        }                                                                                          \
    } while (0)

/* Like CHECK, naming the case of a table-driven test. */
#define CHECK_CASE(cond, name)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("#   %s:%d: case %s: CHECK(%s) failed\n", __FILE__, __LINE__, name, #cond);     \
            unit_check_failed = 1;                                                                 \
        }                                                                                          \
    } while (0)

#define RUN(fn) unit_run(#fn, fn)

void unit_run(const char *name, void (*fn)(void));

/* One per test file. */
void suite_combine(void);
void suite_hostlist(void);
void suite_config(void);
void suite_jsonscan(void);
void suite_lock(void);
void suite_log(void);
void suite_metrics(void);
void suite_request(void);
void suite_response(void);
void suite_store(void);

#endif
