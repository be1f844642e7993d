/* log.c -- see log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* The most each string may take in a line, escaped. Their sum and the fixed
 * parts stay below LOG_LINE_MAX, so a line is never cut in the middle. */
#define MSG_MAX   1400 /* a message */
#define FIELD_MAX 256  /* a path, a request id */
#define SHORT_MAX 48   /* a time stamp, a method, a code */

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

/* Appends s as a JSON string (quotes included) whose escaped content takes
 * at most max bytes; a longer one is cut before the escape that would not
 * fit. Returns the new end. */
static char *put_string(char *p, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    const char *limit = p + max;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[6] = {'\\', (char)c};
        size_t n = 2;
        if (c == '\n')
            esc[1] = 'n';
        else if (c == '\r')
            esc[1] = 'r';
        else if (c == '\t')
            esc[1] = 't';
        else if (c < 0x20 || c >= 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        } else if (c != '"' && c != '\\') {
            esc[0] = (char)c;
            n = 1;
        }
        if (p + n > limit)
            break;
        memcpy(p, esc, n);
        p += n;
    }
    *p++ = '"';
    return p;
}

/* {"ts":..,"level":..,"pid":.. -- the start every line shares. */
static char *put_head(char *p, const char *ts, long pid, enum log_level level)
{
    p += sprintf(p, "{\"ts\":");
    p = put_string(p, ts, SHORT_MAX);
    p += sprintf(p, ",\"level\":\"%s\",\"pid\":%ld", level_names[level], pid);
    return p;
}

static size_t put_end(char *buf, char *p)
{
    *p++ = '}';
    *p++ = '\n';
    return (size_t)(p - buf);
}

size_t log_format_msg(char *buf, const char *ts, long pid, enum log_level level, const char *msg)
{
    char *p = put_head(buf, ts, pid, level);
    p += sprintf(p, ",\"msg\":");
    p = put_string(p, msg, MSG_MAX);
    return put_end(buf, p);
}

size_t log_format_request(char *buf, const char *ts, long pid, enum log_level level,
                          const struct log_request *r)
{
    char *p = put_head(buf, ts, pid, level);
    if (r->request_id != NULL) {
        p += sprintf(p, ",\"request_id\":");
        p = put_string(p, r->request_id, FIELD_MAX);
    }
    p += sprintf(p, ",\"method\":");
    p = put_string(p, r->method, SHORT_MAX);
    if (r->path != NULL) {
        p += sprintf(p, ",\"path\":");
        p = put_string(p, r->path, FIELD_MAX);
    }
    p += sprintf(p, ",\"status\":%d,\"code\":", r->status);
    p = put_string(p, r->code, SHORT_MAX);
    if (r->product > 0)
        p += sprintf(p, ",\"product\":%ld", (long)r->product);
    if (r->amount > 0)
        p += sprintf(p, ",\"amount\":%ld", (long)r->amount);
    if (r->lock_wait_us >= 0)
        p += sprintf(p, ",\"lock_wait_ms\":%.3f", (double)r->lock_wait_us / 1000.0);
    p += sprintf(p, ",\"total_ms\":%.3f", (double)r->total_us / 1000.0);
    return put_end(buf, p);
}

/* Room for any value the fields could take, as the compiler checks. */
#define TS_MAX 96

static void now_utc(char ts[TS_MAX])
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, TS_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
}

static void emit(const char *line, size_t len)
{
    /* Nothing useful can be done if stderr is gone. */
    if (write(STDERR_FILENO, line, len) < 0)
        return;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > log_threshold)
        return;
    char msg[MSG_MAX], ts[TS_MAX], line[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* libpq ends its messages with a newline. */
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        msg[--len] = '\0';
    now_utc(ts);
    emit(line, log_format_msg(line, ts, (long)getpid(), level, msg));
}

void log_request(enum log_level level, const struct log_request *r)
{
    if (level > log_threshold)
        return;
    char ts[TS_MAX], line[LOG_LINE_MAX];
    now_utc(ts);
    emit(line, log_format_request(line, ts, (long)getpid(), level, r));
}
