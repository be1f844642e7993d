/* test_lock.c -- how the lock client leaves a connection, against a fake
 * Redis on loopback TCP (a child process): a connection given up on is
 * reset, so the kernel cannot deliver its unsent command later; a clean
 * close stays a clean close. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "lock.h"
#include "log.h"
#include "unit.h"

/* How the fake Redis saw its client leave: its exit status. */
enum { LEFT_EOF, LEFT_RESET, LEFT_OTHER };

static int read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap && read(fd, buf + n, 1) == 1)
        if (buf[n++] == '\n') {
            buf[n] = '\0';
            return 0;
        }
    return -1;
}

/* Reads one RESP command (an array of bulk strings), whatever its size. */
static int read_command(int fd)
{
    char line[64], c;
    if (read_line(fd, line, sizeof line) < 0 || line[0] != '*')
        return -1;
    for (long args = strtol(line + 1, NULL, 10); args > 0; args--) {
        if (read_line(fd, line, sizeof line) < 0 || line[0] != '$')
            return -1;
        for (long len = strtol(line + 1, NULL, 10) + 2; len > 0; len--)
            if (read(fd, &c, 1) != 1)
                return -1;
    }
    return 0;
}

static int write_all(int fd, const char *s)
{
    return write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
}

/* The fake Redis: answers the connection's set-up (a SCRIPT LOAD per
 * script), then one command if answer_last (+PONG), else it stays silent;
 * then reads until the client is gone, and exits with how it left. */
static void fake_redis(int listener, int answer_last)
{
    int fd = accept(listener, NULL, NULL);
    if (fd < 0)
        _exit(LEFT_OTHER);
    for (int i = 0; i < SCRIPT_COUNT; i++)
        if (read_command(fd) < 0 ||
            write_all(fd, "$40\r\n0123456789012345678901234567890123456789\r\n") < 0)
            _exit(LEFT_OTHER);
    if (read_command(fd) < 0 || (answer_last && write_all(fd, "+PONG\r\n") < 0))
        _exit(LEFT_OTHER);
    char buf[64];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        ;
    _exit(n == 0 ? LEFT_EOF : errno == ECONNRESET ? LEFT_RESET : LEFT_OTHER);
}

/* Starts the fake Redis and points cfg at it; its pid, or -1. */
static pid_t start_fake_redis(struct config *cfg, int answer_last)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(listener, 1) < 0 || getsockname(listener, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->redis.host, "127.0.0.1");
    cfg->redis.port = ntohs(sa.sin_port);
    cfg->redis_timeout_ms = 100;
    cfg->lock_ttl_ms = 5000;
    pid_t pid = fork();
    if (pid == 0)
        fake_redis(listener, answer_last);
    close(listener);
    return pid;
}

/* How the client left, as the fake Redis saw it; -1 if it never knew. */
static int how_client_left(pid_t pid)
{
    int status;
    const struct timespec tick = {0, 100 * 1000 * 1000};
    for (int i = 0; i < 50; i++) { /* 5 s at most */
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        nanosleep(&tick, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void a_connection_given_up_on_is_reset(void)
{
    struct config cfg;
    struct lock_client lc;
    pid_t pid = start_fake_redis(&cfg, 0);
    CHECK(pid > 0);
    if (pid <= 0)
        return;
    CHECK(lock_client_open(&lc, &cfg) == 0);
    CHECK(lock_ping(&lc) == LOCK_UNAVAILABLE); /* no answer within REDIS_TIMEOUT_MS */
    CHECK(lc.redis == NULL);
    CHECK(how_client_left(pid) == LEFT_RESET);
    lock_client_close(&lc);
}

static void a_clean_close_stays_clean(void)
{
    struct config cfg;
    struct lock_client lc;
    pid_t pid = start_fake_redis(&cfg, 1);
    CHECK(pid > 0);
    if (pid <= 0)
        return;
    CHECK(lock_client_open(&lc, &cfg) == 0);
    CHECK(lock_ping(&lc) == LOCK_OK);
    lock_client_close(&lc);
    CHECK(how_client_left(pid) == LEFT_EOF);
}

void suite_lock(void)
{
    log_set_level(LOG_ERROR); /* the client's "connected" lines are not TAP */
    RUN(a_connection_given_up_on_is_reset);
    RUN(a_clean_close_stays_clean);
    log_set_level(LOG_INFO);
}
