/* log.h -- one JSON object per line on stderr, where spawn-fcgi, multiwatch
 * and docker-compose collect it:
 *
 *   {"ts":"2026-11-26T18:00:00.123Z","level":"info","pid":42,"msg":"worker ready"}
 *
 * A served request gets one line of its own, with its fields in place of
 * "msg" (log_request). Every string is escaped, and every byte outside
 * printable ASCII is written as \u00XX, so a line is valid JSON (and valid
 * UTF-8) whatever a client put in its path or a library in its message: a
 * log line cannot be forged from outside. A line is at most LOG_LINE_MAX
 * bytes (a longer message is cut) and is written with one write(), because
 * the workers of a pool share one stderr.
 *
 * The level is the only state, set once from the configuration at start. */
#ifndef STOCK_LOG_H
#define STOCK_LOG_H

#include <stddef.h>
#include <stdint.h>

#define LOG_LINE_MAX 2048

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 if unknown. */
int log_parse_level(const char *name, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* One served request, logged at the level its caller chose (worker.h says
 * which). Absent fields are left out. */
struct log_request {
    const char *request_id; /* nginx's X-Request-Id; NULL if none */
    const char *method;
    const char *path; /* NULL if none */
    int status;
    const char *code;     /* "ok", or the problem's code */
    int32_t product;      /* 0: not a purchase */
    int32_t amount;       /* 0: not read */
    int64_t lock_wait_us; /* < 0: no lock was asked for */
    int64_t total_us;
};

void log_request(enum log_level level, const struct log_request *r);

/* Pure, for the tests: the lines log_msg and log_request write, given the
 * time stamp and pid, into buf (LOG_LINE_MAX bytes). Return the length,
 * newline included. */
size_t log_format_msg(char *buf, const char *ts, long pid, enum log_level level, const char *msg);
size_t log_format_request(char *buf, const char *ts, long pid, enum log_level level,
                          const struct log_request *r);

#endif
