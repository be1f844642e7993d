/* clock.h -- monotonic time for deadlines.
 *
 * Deadlines use CLOCK_MONOTONIC only: a wall-clock step (NTP, an operator)
 * must not stretch or cut a lock wait. */
#ifndef STOCK_CLOCK_H
#define STOCK_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t clock_ms(void);

/* Microseconds on CLOCK_MONOTONIC: for durations reported in logs and
 * metrics, where a purchase takes well under a millisecond. */
int64_t clock_us(void);

/* Sleeps about us microseconds (less if a signal interrupts it; callers
 * re-check their deadline anyway). */
void clock_sleep_us(int64_t us);

#endif
