/* test_lock.c -- the lock client against a fake Redis on loopback TCP (a
 * child process). How it leaves a connection: a connection given up on is
 * reset, so the kernel cannot deliver its unsent command later; a clean
 * close stays a clean close. And what it does about a lock a failed command
 * may have left: the fake plays a relay that read a command and delivers it
 * late, which no reset can stop. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "lock.h"
#include "log.h"
#include "redis.h"
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

/* Listens on a free loopback port and points cfg at it: the listener, or
 * -1. Commands time out after 100 ms; LOCK_WAIT_MS is 0. */
static int listen_loopback(struct config *cfg)
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
    return listener;
}

/* Starts the fake Redis and points cfg at it; its pid, or -1. */
static pid_t start_fake_redis(struct config *cfg, int answer_last)
{
    int listener = listen_loopback(cfg);
    if (listener < 0)
        return -1;
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
    CHECK(redis_ping(&lc.redis) < 0); /* no answer within REDIS_TIMEOUT_MS */
    CHECK(lc.redis.ctx == NULL);
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
    CHECK(redis_ping(&lc.redis) == 0);
    lock_client_close(&lc);
    CHECK(how_client_left(pid) == LEFT_EOF);
}

/* A stateful fake Redis, for the lock a failed command may leave behind. It
 * keeps one lock, answers the acquire and release scripts as they would act
 * on it, and notes what it saw, a word an event, in a transcript:
 *   c   a connection (its SCRIPT LOADs are not noted)
 *   r   its first SCRIPT LOAD refused with an error reply: the client drops it
 *   aN  an acquire by token N (numbered as first seen): granted
 *   bN  an acquire by token N: the lock is busy
 *   hN  a command of token N held, never answered: the client times out
 *   yN  a release by token N: the lock was N's, and is deleted
 *   nN  a release by token N: the lock is not N's, nothing is done
 *   eN  a release by token N answered -BUSY, nothing is done
 *   dN  the held acquire of token N delivered late: N takes the lock if free
 *   p   a PING
 * and, at the end, "." if the lock is free or "LN" if token N holds it. The
 * fake has no clock: its lock never expires. */
struct fake_plan {
    int hold_acquire;  /* hold the first acquire: a relay that lost Redis */
    int deliver_after; /* deliver it after this many "not ours" releases; 0: never */
    int hold_release;  /* hold the first release */
    int refuse_conn;   /* refuse the SCRIPT LOAD of this connection (1 is the first); 0: none */
    int busy_releases; /* answer this many releases -BUSY, as Redis running a long script */
};

#define FAKE_ARGS   18
#define FAKE_TOKENS 4

struct fake {
    struct fake_plan plan;
    char token[FAKE_TOKENS][33]; /* token N is token[N - 1] */
    int tokens;
    int holder; /* the lock's token, 0 if free */
    int held;   /* the held acquire's token, until it is delivered */
    int not_ours;
    int conns; /* connections accepted so far */
    char log[512];
};

static void note(struct fake *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct fake *f, const char *fmt, ...)
{
    size_t len = strlen(f->log);
    if (len > 0 && len + 1 < sizeof f->log)
        strcpy(f->log + len++, " ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->log + len, sizeof f->log - len, fmt, ap);
    va_end(ap);
}

/* The token's number, numbering it if it is new (0 once there are too many). */
static int token_number(struct fake *f, const char *token)
{
    for (int i = 0; i < f->tokens; i++)
        if (strcmp(f->token[i], token) == 0)
            return i + 1;
    if (f->tokens == FAKE_TOKENS)
        return 0;
    snprintf(f->token[f->tokens], sizeof f->token[0], "%s", token);
    return ++f->tokens;
}

/* Reads one RESP command into args, each cut at 63 bytes: how many there
 * are, 0 when the client closed the connection cleanly, -1 when it reset it
 * (or broke protocol). */
static int read_args(int fd, char args[FAKE_ARGS][64])
{
    char line[64], c;
    ssize_t peek = recv(fd, &c, 1, MSG_PEEK);
    if (peek <= 0)
        return peek == 0 ? 0 : -1;
    if (read_line(fd, line, sizeof line) < 0 || line[0] != '*')
        return -1;
    long n = strtol(line + 1, NULL, 10);
    if (n < 1 || n > FAKE_ARGS)
        return -1;
    for (long i = 0; i < n; i++) {
        if (read_line(fd, line, sizeof line) < 0 || line[0] != '$')
            return -1;
        long len = strtol(line + 1, NULL, 10);
        for (long j = 0; j < len + 2; j++) {
            if (read(fd, &c, 1) != 1)
                return -1;
            if (j < 63)
                args[i][j] = c;
        }
        args[i][len < 63 ? len : 63] = '\0';
    }
    return (int)n;
}

static const char *fake_acquire(struct fake *f, int token)
{
    if (f->plan.hold_acquire) {
        f->plan.hold_acquire = 0;
        f->held = token;
        note(f, "h%d", token);
        return NULL;
    }
    if (f->holder != 0) {
        note(f, "b%d", token);
        return "*2\r\n:0\r\n:1000\r\n";
    }
    f->holder = token;
    note(f, "a%d", token);
    return "*2\r\n:1\r\n:1\r\n";
}

static const char *fake_release(struct fake *f, int token)
{
    if (f->plan.hold_release) {
        f->plan.hold_release = 0;
        note(f, "h%d", token);
        return NULL;
    }
    if (f->plan.busy_releases > 0) {
        f->plan.busy_releases--;
        note(f, "e%d", token);
        return "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or "
               "SHUTDOWN NOSAVE.\r\n";
    }
    if (f->holder == token) {
        f->holder = 0;
        note(f, "y%d", token);
        return "*2\r\n:1\r\n:0\r\n";
    }
    note(f, "n%d", token);
    if (f->held != 0 && ++f->not_ours == f->plan.deliver_after) {
        note(f, "d%d", f->held);
        if (f->holder == 0)
            f->holder = f->held;
        f->held = 0;
    }
    return "*2\r\n:0\r\n:0\r\n";
}

/* The answer to a command, or NULL to hold it. Each SCRIPT LOAD of a
 * connection answers a SHA1 that names the script: all '0' for the first
 * (SCRIPT_ACQUIRE), all '1' for the next, and so on. */
static const char *fake_answer(struct fake *f, char args[FAKE_ARGS][64], int n, int *loaded,
                               char *buf, size_t cap)
{
    if (strcmp(args[0], "SCRIPT") == 0 && f->conns == f->plan.refuse_conn) {
        note(f, "r");
        return "-ERR refused\r\n";
    }
    if (strcmp(args[0], "SCRIPT") == 0) {
        char sha[41];
        memset(sha, '0' + (*loaded)++, 40);
        sha[40] = '\0';
        snprintf(buf, cap, "$40\r\n%s\r\n", sha);
        return buf;
    }
    if (strcmp(args[0], "PING") == 0) {
        note(f, "p");
        return "+PONG\r\n";
    }
    /* EVALSHA sha 6 KEYS[1..6] token ARGV...: 8 more for an acquire, 3
     * for a release without answers. */
    if (strcmp(args[0], "EVALSHA") == 0 && n == 18 && args[1][0] - '0' == SCRIPT_ACQUIRE)
        return fake_acquire(f, token_number(f, args[9]));
    if (strcmp(args[0], "EVALSHA") == 0 && n == 13 && args[1][0] - '0' == SCRIPT_RELEASE)
        return fake_release(f, token_number(f, args[9]));
    note(f, "?%s", args[0]);
    return "-ERR unexpected\r\n";
}

/* Serves one connection: 0 when the client closed it cleanly, -1 when it
 * reset it. */
static int fake_serve(struct fake *f, int fd)
{
    char args[FAKE_ARGS][64], buf[64];
    int n, loaded = 0;
    while ((n = read_args(fd, args)) > 0) {
        const char *reply = fake_answer(f, args, n, &loaded, buf, sizeof buf);
        if (reply != NULL && write_all(fd, reply) < 0)
            return -1;
    }
    return n;
}

/* The fake's process: serves one connection after another until the client
 * closes one cleanly (lock_client_close) or none comes for 5 s, then writes
 * its transcript to report. */
static void stateful_fake(int listener, int report, const struct fake_plan *plan)
{
    struct fake f = {.plan = *plan};
    struct pollfd pfd = {.fd = listener, .events = POLLIN};
    while (poll(&pfd, 1, 5000) == 1) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0)
            break;
        f.conns++;
        note(&f, "c");
        int rc = fake_serve(&f, fd);
        close(fd);
        if (rc == 0)
            break;
    }
    if (f.holder != 0)
        note(&f, "L%d", f.holder);
    else
        note(&f, ".");
    _exit(write_all(report, f.log) < 0);
}

struct fake_run {
    pid_t pid;
    int report; /* the transcript comes on this pipe */
};

/* The next call through the client, as /healthz makes it (route.c): the
 * left-over release if one is pending, then a PING. */
static enum lock_status healthz_call(struct lock_client *lc)
{
    if (lock_ready(lc) != LOCK_OK || redis_ping(&lc->redis) < 0)
        return LOCK_UNAVAILABLE;
    return LOCK_OK;
}

/* Starts the stateful fake with plan and opens lc on it, with a lock TTL of
 * ttl_ms (a minute is more than any of these tests takes). 0, or -1. */
static int open_on_fake(struct lock_client *lc, struct config *cfg, const struct fake_plan *plan,
                        int ttl_ms, struct fake_run *run)
{
    int pipefd[2], listener = listen_loopback(cfg);
    if (listener < 0 || pipe(pipefd) < 0)
        return -1;
    cfg->lock_ttl_ms = ttl_ms;
    run->pid = fork();
    if (run->pid == 0) {
        close(pipefd[0]);
        stateful_fake(listener, pipefd[1], plan);
    }
    close(listener);
    close(pipefd[1]);
    run->report = pipefd[0];
    if (run->pid < 0)
        return -1;
    return lock_client_open(lc, cfg);
}

/* Closes lc cleanly, which ends the fake, and checks its transcript. */
static void close_and_check(struct lock_client *lc, struct fake_run *run, const char *want)
{
    char got[512];
    size_t len = 0;
    lock_client_close(lc);
    struct pollfd pfd = {.fd = run->report, .events = POLLIN};
    while (len + 1 < sizeof got && poll(&pfd, 1, 10000) == 1) {
        ssize_t n = read(run->report, got + len, sizeof got - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    got[len] = '\0';
    close(run->report);
    kill(run->pid, SIGKILL); /* gone already, unless it hung */
    waitpid(run->pid, NULL, 0);
    CHECK(strcmp(got, want) == 0);
    if (strcmp(got, want) != 0)
        printf("#   transcript \"%s\", want \"%s\"\n", got, want);
}

/* The reviewer's case: a relay read our acquire, then lost Redis (a
 * partition). We give up, reset our connection (which cannot recall what
 * the relay already read), reconnect, and release that token: nothing to
 * release yet. Only then does the relay deliver the SET. The next call
 * that reaches Redis releases it. */
static void a_lock_set_after_its_release_is_released_by_the_next_call(void)
{
    struct config cfg;
    struct lock_client lc;
    struct fake_run run;
    struct fake_plan plan = {.hold_acquire = 1, .deliver_after = 1};
    struct lock lk;
    int64_t stock;
    CHECK(open_on_fake(&lc, &cfg, &plan, 60000, &run) == 0);
    int64_t before = clock_ms();
    CHECK(lock_acquire(&lc, 7, 1, NULL, &lk, &stock) == LOCK_UNAVAILABLE);
    CHECK(strcmp(lc.unreleased.token, lk.token) == 0);
    /* Remembered from the time the acquire was sent. */
    CHECK(lc.unreleased.started_ms >= before && lc.unreleased.started_ms <= clock_ms());
    CHECK(healthz_call(&lc) == LOCK_OK);
    CHECK(lc.unreleased.key[0] == '\0'); /* released: nothing more to do */
    close_and_check(&lc, &run, "c h1 c n1 d1 y1 p .");
}

/* However late the held SET comes, within the TTL: every call releases
 * until one finds it, then none does. */
static void a_left_over_lock_is_released_on_every_call_until_found(void)
{
    struct config cfg;
    struct lock_client lc;
    struct fake_run run;
    struct fake_plan plan = {.hold_acquire = 1, .deliver_after = 3};
    struct lock lk;
    int64_t stock;
    CHECK(open_on_fake(&lc, &cfg, &plan, 60000, &run) == 0);
    CHECK(lock_acquire(&lc, 7, 1, NULL, &lk, &stock) == LOCK_UNAVAILABLE);
    for (int i = 0; i < 4; i++)
        CHECK(healthz_call(&lc) == LOCK_OK);
    close_and_check(&lc, &run, "c h1 c n1 n1 p n1 d1 p y1 p p .");
}

/* A new lock taken while the old one is pending: the pending release names
 * the old token only, and the new lock is released as usual. The old one
 * stays pending: its SET may still come. */
static void a_new_lock_meanwhile_leaves_the_old_token_pending(void)
{
    struct config cfg;
    struct lock_client lc;
    struct fake_run run;
    struct fake_plan plan = {.hold_acquire = 1};
    struct lock old, lk;
    int64_t stock;
    CHECK(open_on_fake(&lc, &cfg, &plan, 60000, &run) == 0);
    CHECK(lock_acquire(&lc, 7, 1, NULL, &old, &stock) == LOCK_UNAVAILABLE);
    CHECK(lock_acquire(&lc, 7, 1, NULL, &lk, &stock) == LOCK_OK);
    CHECK(strcmp(lk.token, old.token) != 0);
    CHECK(lock_release(&lc, &lk, LOCK_STOCK_NONE, NULL, 0) == LOCK_OK);
    CHECK(strcmp(lc.unreleased.token, old.token) == 0);
    close_and_check(&lc, &run, "c h1 c n1 n1 a2 n1 y2 .");
}

/* A release that failed is remembered from when it was sent, not from the
 * grant, and forgotten without a round trip once a TTL has passed since:
 * the lock cannot exist any more. (The fake's lock never expires, so it
 * still holds it at the end; Redis's would not.) */
static void a_left_over_lock_is_forgotten_once_its_ttl_has_passed(void)
{
    struct config cfg;
    struct lock_client lc;
    struct fake_run run;
    struct fake_plan plan = {.hold_release = 1};
    struct lock lk;
    int64_t stock;
    CHECK(open_on_fake(&lc, &cfg, &plan, 200, &run) == 0);
    CHECK(lock_acquire(&lc, 7, 1, NULL, &lk, &stock) == LOCK_OK);
    clock_sleep_us(20 * 1000);
    int64_t before = clock_ms();
    CHECK(lock_release(&lc, &lk, LOCK_STOCK_NONE, NULL, 0) == LOCK_UNAVAILABLE);
    CHECK(strcmp(lc.unreleased.token, lk.token) == 0);
    CHECK(lc.unreleased.started_ms >= before);
    clock_sleep_us(300 * 1000); /* more than the TTL, 200 ms, and its drift margin */
    CHECK(healthz_call(&lc) == LOCK_OK);
    CHECK(lc.unreleased.key[0] == '\0');
    close_and_check(&lc, &run, "c a1 h1 c p L1");
}

/* An acquire lost with its connection, and a reconnect that fails too (at
 * its SCRIPT LOAD): the failure reported is the acquire's, counted once,
 * not the reconnect's. The next call gives the lock back as usual. */
static void a_failed_reconnect_keeps_the_acquires_error(void)
{
    struct config cfg;
    struct lock_client lc;
    struct fake_run run;
    struct fake_plan plan = {.hold_acquire = 1, .refuse_conn = 2};
    struct lock lk;
    int64_t stock;
    CHECK(open_on_fake(&lc, &cfg, &plan, 60000, &run) == 0);
    CHECK(lock_acquire(&lc, 7, 1, NULL, &lk, &stock) == LOCK_UNAVAILABLE);
    CHECK(lc.redis.errors == 1);
    /* "redis: <timeout>" from the acquire, not "redis SCRIPT LOAD: ..." */
    CHECK(strncmp(lc.redis.err, "redis: ", 7) == 0 && strstr(lc.redis.err, "SCRIPT") == NULL);
    if (strncmp(lc.redis.err, "redis: ", 7) != 0 || strstr(lc.redis.err, "SCRIPT") != NULL)
        printf("#   err \"%s\"\n", lc.redis.err);
    CHECK(strcmp(lc.unreleased.token, lk.token) == 0);
    CHECK(healthz_call(&lc) == LOCK_OK);
    close_and_check(&lc, &run, "c h1 c r c n1 p .");
}

/* Redis answers the left-over release with an error (here BUSY) on a
 * connection that works: the calls go on, the record stays, and a later
 * call still gives back the SET the relay delivers. */
static void an_error_reply_to_the_left_over_release_fails_no_call(void)
{
    struct config cfg;
    struct lock_client lc;
    struct fake_run run;
    struct fake_plan plan = {.hold_acquire = 1, .deliver_after = 1, .busy_releases = 2};
    struct lock lk;
    int64_t stock;
    CHECK(open_on_fake(&lc, &cfg, &plan, 60000, &run) == 0);
    CHECK(lock_acquire(&lc, 7, 1, NULL, &lk, &stock) == LOCK_UNAVAILABLE);
    /* The acquire's timeout is what the caller reports; the BUSY answer to
     * the release that followed is a failure of its own, counted. */
    CHECK(strncmp(lc.redis.err, "redis: ", 7) == 0);
    CHECK(lc.redis.errors == 2);
    CHECK(healthz_call(&lc) == LOCK_OK); /* its release answered BUSY too */
    CHECK(strcmp(lc.unreleased.token, lk.token) == 0);
    CHECK(healthz_call(&lc) == LOCK_OK); /* not ours yet; then the relay delivers */
    CHECK(strcmp(lc.unreleased.token, lk.token) == 0);
    CHECK(healthz_call(&lc) == LOCK_OK);
    CHECK(lc.unreleased.key[0] == '\0');
    close_and_check(&lc, &run, "c h1 c e1 e1 p n1 d1 p y1 p .");
}

void suite_lock(void)
{
    log_set_level(LOG_ERROR); /* the client's "connected" lines are not TAP */
    RUN(a_connection_given_up_on_is_reset);
    RUN(a_clean_close_stays_clean);
    RUN(a_lock_set_after_its_release_is_released_by_the_next_call);
    RUN(a_left_over_lock_is_released_on_every_call_until_found);
    RUN(a_new_lock_meanwhile_leaves_the_old_token_pending);
    RUN(a_left_over_lock_is_forgotten_once_its_ttl_has_passed);
    RUN(a_failed_reconnect_keeps_the_acquires_error);
    RUN(an_error_reply_to_the_left_over_release_fails_no_call);
    log_set_level(LOG_INFO);
}
