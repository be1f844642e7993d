/* fault.c -- see fault.h. */
#include "fault.h"

#ifdef STOCK_FAULT_POINTS
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void fault_point(const char *name)
{
    const char *want = getenv("STOCK_FAULT");
    if (want != NULL && strcmp(want, name) == 0) {
        log_info("fault point %s: stopping", name);
        raise(SIGSTOP);
    }
}
#else
/* ISO C wants something in every translation unit. */
typedef int fault_points_disabled;
#endif
