/* fault.h -- fault injection points for the tests, after PostgreSQL's
 * injection points.
 *
 * Some faults cannot be produced from outside at a precise moment: "pause a
 * worker right after it took the lock, before it reached PostgreSQL". A
 * fault point names such a moment. A worker whose environment has
 * STOCK_FAULT=<name> stops itself (SIGSTOP) when it reaches the point
 * <name>; the test then acts while it is frozen there and sends SIGCONT.
 *
 * Compiled in only with -DSTOCK_FAULT_POINTS, as the ASan test build is. In
 * the release build FAULT_POINT() is nothing at all. */
#ifndef STOCK_FAULT_H
#define STOCK_FAULT_H

#ifdef STOCK_FAULT_POINTS
void fault_point(const char *name);
#define FAULT_POINT(name) fault_point(name)
#else
#define FAULT_POINT(name) ((void)0)
#endif

#endif
