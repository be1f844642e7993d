/* log.h -- one line per event on stderr, where spawn-fcgi, multiwatch and
 * docker-compose collect it.
 *
 * The level is the only state, set once from the configuration at start. */
#ifndef STOCK_LOG_H
#define STOCK_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 if unknown. */
int log_parse_level(const char *name, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
