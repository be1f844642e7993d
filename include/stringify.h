/* stringify.h -- a number's macro as a string literal, for SQL and Lua text
 * that must say what the C code counts with: one definition, no twin to
 * keep in step by hand. */
#ifndef STOCK_STRINGIFY_H
#define STOCK_STRINGIFY_H

/* STRINGIFY(KEY_WAIT_MS) is "10" where KEY_WAIT_MS is 10. */
#define STRINGIFY(x)  STRINGIFY_(x)
#define STRINGIFY_(x) #x

#endif
