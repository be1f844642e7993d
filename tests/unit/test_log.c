/* test_log.c -- the log's JSON lines. */
#include <string.h>

#include "log.h"
#include "unit.h"

static const char ts[] = "2026-11-26T18:00:00.123Z";

static void a_message_is_one_json_object_on_one_line(void)
{
    char buf[LOG_LINE_MAX];
    size_t n = log_format_msg(buf, ts, 42, LOG_WARN, "worker ready");
    const char want[] = "{\"ts\":\"2026-11-26T18:00:00.123Z\",\"level\":\"warn\",\"pid\":42,"
                        "\"msg\":\"worker ready\"}\n";
    CHECK(n == strlen(want));
    CHECK(memcmp(buf, want, n) == 0);
}

static void quotes_controls_and_non_ascii_are_escaped(void)
{
    char buf[LOG_LINE_MAX];
    size_t n = log_format_msg(buf, ts, 1, LOG_INFO, "a\"b\\c\nd\x01\xc3\xa9");
    buf[n] = '\0';
    CHECK(strstr(buf, "\"msg\":\"a\\\"b\\\\c\\nd\\u0001\\u00c3\\u00a9\"}\n") != NULL);
    CHECK(memchr(buf, '\n', n - 1) == NULL);
}

static void a_forged_line_stays_inside_its_string(void)
{
    char buf[LOG_LINE_MAX];
    struct log_request r = {.method = "POST",
                            .path = "/buy/1\n{\"level\":\"error\"}",
                            .status = 404,
                            .code = "not_found",
                            .lock_wait_us = -1};
    size_t n = log_format_request(buf, ts, 1, LOG_INFO, &r);
    CHECK(memchr(buf, '\n', n - 1) == NULL);
    buf[n] = '\0';
    CHECK(strstr(buf, "\"path\":\"/buy/1\\n{\\\"level\\\":\\\"error\\\"}\"") != NULL);
}

static void a_long_message_is_cut_not_overflowed(void)
{
    char buf[LOG_LINE_MAX], msg[4000];
    memset(msg, '\x01', sizeof msg - 1); /* each becomes six bytes */
    msg[sizeof msg - 1] = '\0';
    size_t n = log_format_msg(buf, ts, 1, LOG_ERROR, msg);
    CHECK(n < LOG_LINE_MAX);
    CHECK(n > 1000);
    CHECK(memcmp(buf + n - 5, "01\"}\n", 5) == 0); /* cut between escapes */
}

static void a_request_line_has_its_fields_and_omits_the_absent(void)
{
    char buf[LOG_LINE_MAX];
    struct log_request r = {.request_id = "abc",
                            .method = "POST",
                            .path = "/buy/7",
                            .status = 200,
                            .code = "ok",
                            .product = 7,
                            .amount = 2,
                            .lock_wait_us = 1500,
                            .total_us = 2250};
    size_t n = log_format_request(buf, ts, 9, LOG_INFO, &r);
    const char want[] = "{\"ts\":\"2026-11-26T18:00:00.123Z\",\"level\":\"info\",\"pid\":9,"
                        "\"request_id\":\"abc\",\"method\":\"POST\",\"path\":\"/buy/7\","
                        "\"status\":200,\"code\":\"ok\",\"product\":7,\"amount\":2,"
                        "\"lock_wait_ms\":1.500,\"total_ms\":2.250}\n";
    CHECK(n == strlen(want));
    CHECK(memcmp(buf, want, n) == 0);

    struct log_request bare = {
        .method = "GET", .status = 404, .code = "not_found", .lock_wait_us = -1};
    n = log_format_request(buf, ts, 9, LOG_INFO, &bare);
    buf[n] = '\0';
    CHECK(strstr(buf, "request_id") == NULL);
    CHECK(strstr(buf, "product") == NULL);
    CHECK(strstr(buf, "lock_wait_ms") == NULL);
    CHECK(strstr(buf, "\"total_ms\":0.000}") != NULL);
}

void suite_log(void)
{
    RUN(a_message_is_one_json_object_on_one_line);
    RUN(quotes_controls_and_non_ascii_are_escaped);
    RUN(a_forged_line_stays_inside_its_string);
    RUN(a_long_message_is_cut_not_overflowed);
    RUN(a_request_line_has_its_fields_and_omits_the_absent);
}
