/* main.c -- runs every unit suite and reports in TAP. */
#include "unit.h"

int unit_check_failed;
static int run_count, fail_count;

void unit_run(const char *name, void (*fn)(void))
{
    unit_check_failed = 0;
    fn();
    run_count++;
    if (unit_check_failed)
        fail_count++;
    printf("%s %d - %s\n", unit_check_failed ? "not ok" : "ok", run_count, name);
}

int main(void)
{
    suite_combine();
    suite_hostlist();
    suite_config();
    suite_jsonscan();
    suite_lock();
    suite_log();
    suite_metrics();
    suite_request();
    suite_response();
    suite_store();
    printf("1..%d\n# unit: %d passed, %d failed\n", run_count, run_count - fail_count, fail_count);
    return fail_count == 0 ? 0 : 1;
}
