/* decimal.h -- the one parser for the whole numbers that arrive as text:
 * product ids, amounts, Content-Length and the configuration's settings.
 *
 * Only the canonical form is accepted: ASCII digits, no sign, no spaces, no
 * leading zero ("0" itself is fine). Anything else is a typo or an attack
 * worth refusing rather than interpreting. */
#ifndef STOCK_DECIMAL_H
#define STOCK_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

#define DECIMAL_INVALID   (-1) /* not a canonical decimal */
#define DECIMAL_TOO_LARGE (-2) /* canonical, but above max */

/* Parses s[0..len) into *out if it is at most max (max >= 0). Returns 0,
 * DECIMAL_INVALID or DECIMAL_TOO_LARGE; any length is safe. */
int decimal_parse(const char *s, size_t len, int64_t max, int64_t *out);

#endif
