/* clock.h -- monotonic time for deadlines.
 *
 * Deadlines use CLOCK_MONOTONIC only: a wall-clock step (NTP, an operator)
 * must not stretch or cut a lock wait. */
#ifndef STOCK_CLOCK_H
#define STOCK_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t clock_ms(void);

/* Sleeps about us microseconds. A signal may end the sleep early; callers
 * re-check their deadline, which is what lets SIGTERM stop a wait promptly. */
void clock_sleep_us(int64_t us);

#endif
