/* lock.c -- see lock.h. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "lock.h"
#include "log.h"

/* The three scripts. Each takes KEYS = {lock, fence} and ARGV = {token, x}
 * and runs atomically, in one round trip. */
static const char *const script_source[SCRIPT_COUNT] = {
    /* Acquire (x = ttl): take the lock if it is free and, in the same step,
     * draw the next fence; 0 if someone holds it. */
    [SCRIPT_ACQUIRE] = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
                       "return redis.call('INCR', KEYS[2]) end "
                       "return 0",
    /* Release: delete the lock only if it still holds our token; a plain DEL
     * would free a lock that expired while we were slow and now belongs to
     * someone else. */
    [SCRIPT_RELEASE] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                       "return redis.call('DEL', KEYS[1]) end "
                       "return 0",
    /* Refence (x = PostgreSQL's fence): while we still hold the lock, raise
     * the counter above what PostgreSQL has applied and draw a new fence; 0
     * if the lock is no longer ours. */
    [SCRIPT_REFENCE] = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
                       "if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then "
                       "redis.call('SET', KEYS[2], ARGV[2]) end "
                       "return redis.call('INCR', KEYS[2])",
};

/* Backoff between attempts on a busy lock: starts near one PostgreSQL
 * transaction (about 1 ms) and doubles up to a cap, so a waiter notices a
 * release soon without flooding Redis while a queue forms. */
#define BACKOFF_MIN_US 1000
#define BACKOFF_MAX_US 16000

static void set_err(struct lock_client *lc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(struct lock_client *lc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lc->err, sizeof lc->err, fmt, ap);
    va_end(ap);
}

static int fill_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int new_token(char out[33])
{
    unsigned char raw[16];
    if (fill_random(raw, sizeof raw) < 0)
        return -1;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* xorshift64*: jitter only needs to decorrelate waiters, not be secret. */
static uint64_t next_random(struct lock_client *lc)
{
    lc->rng ^= lc->rng >> 12;
    lc->rng ^= lc->rng << 25;
    lc->rng ^= lc->rng >> 27;
    return lc->rng * 0x2545F4914F6CDD1DULL;
}

static void drop(struct lock_client *lc)
{
    if (lc->redis != NULL) {
        redisFree(lc->redis);
        lc->redis = NULL;
    }
}

/* Records why a reply was not the one expected. */
static void reply_err(struct lock_client *lc, const char *what, const redisReply *r)
{
    set_err(lc, "redis %s: %s", what, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
}

/* Runs a command; on a connection error records why and drops the context,
 * which hiredis says cannot be used again. A reply of type ERROR is returned
 * as is: the connection is still fine. */
static redisReply *vcommand(struct lock_client *lc, const char *fmt, va_list ap)
{
    redisReply *r = redisvCommand(lc->redis, fmt, ap);
    if (r == NULL) {
        set_err(lc, "redis: %s", lc->redis->errstr[0] ? lc->redis->errstr : "connection lost");
        drop(lc);
    }
    return r;
}

static redisReply *command(struct lock_client *lc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcommand(lc, fmt, ap);
    va_end(ap);
    return r;
}

/* Runs a set-up command that must answer +OK or, when out is given, a bulk
 * string that is copied there (SCRIPT LOAD's SHA1). */
static int command_ok(struct lock_client *lc, char *out, size_t outlen, const char *what,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcommand(lc, fmt, ap);
    va_end(ap);
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_STATUS || (r->type == REDIS_REPLY_STRING && out != NULL);
    if (!ok)
        reply_err(lc, what, r);
    else if (out != NULL)
        snprintf(out, outlen, "%s", r->str);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static int connect_redis(struct lock_client *lc)
{
    const struct redis_target *t = &lc->cfg->redis;
    int ms = lc->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    redisContext *c = t->path[0] ? redisConnectUnixWithTimeout(t->path, tv)
                                 : redisConnectWithTimeout(t->host, t->port, tv);
    if (c == NULL) {
        set_err(lc, "redis: out of memory");
        return -1;
    }
    lc->redis = c;
    if (c->err) {
        set_err(lc, "redis connect: %s", c->errstr);
        goto fail;
    }
    /* The connect timeout does not bound commands: without this a Redis that
     * accepts but never answers would hang the worker (hiredis #593). */
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        set_err(lc, "redis: cannot set the command timeout: %s", c->errstr);
        goto fail;
    }
    if (!t->path[0] && redisEnableKeepAlive(c) != REDIS_OK) {
        set_err(lc, "redis: cannot enable keepalive: %s", c->errstr);
        goto fail;
    }
    if (t->password[0] &&
        (t->username[0] ? command_ok(lc, NULL, 0, "AUTH", "AUTH %s %s", t->username, t->password)
                        : command_ok(lc, NULL, 0, "AUTH", "AUTH %s", t->password)) < 0)
        goto fail;
    if (t->db != 0 && command_ok(lc, NULL, 0, "SELECT", "SELECT %d", t->db) < 0)
        goto fail;
    for (int s = 0; s < SCRIPT_COUNT; s++)
        if (command_ok(lc, lc->sha[s], sizeof lc->sha[s], "SCRIPT LOAD", "SCRIPT LOAD %s",
                       script_source[s]) < 0)
            goto fail;
    return 0;
fail:
    drop(lc);
    return -1;
}

int lock_client_open(struct lock_client *lc, const struct config *cfg)
{
    memset(lc, 0, sizeof *lc);
    lc->cfg = cfg;
    if (fill_random(&lc->rng, sizeof lc->rng) < 0 || lc->rng == 0)
        lc->rng = 0x9E3779B97F4A7C15ULL; /* any non-zero seed works */
    return connect_redis(lc);
}

void lock_client_close(struct lock_client *lc)
{
    drop(lc);
}

/* Runs script s on lk's keys with ARGV = {token, x}. NULL after a
 * connection error (the context is gone). */
static redisReply *eval(struct lock_client *lc, enum lock_script s, const struct lock *lk,
                        const char *x)
{
    redisReply *r =
        command(lc, "EVALSHA %s 2 %s %s %s %s", lc->sha[s], lk->key, lk->fence_key, lk->token, x);
    /* The script cache is empty after a Redis restart or SCRIPT FLUSH:
     * EVAL runs the script and caches it again. */
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        r = command(lc, "EVAL %s 2 %s %s %s %s", script_source[s], lk->key, lk->fence_key,
                    lk->token, x);
    }
    return r;
}

static redisReply *run_release(struct lock_client *lc, const struct lock *lk)
{
    return eval(lc, SCRIPT_RELEASE, lk, "");
}

enum lock_status lock_ready(struct lock_client *lc)
{
    if (lc->redis != NULL) {
        /* An idle connection has nothing to read. If it has, Redis closed it
         * (restart, timeout, CLIENT KILL) or broke protocol: start afresh
         * rather than fail the next command. */
        struct pollfd pfd = {.fd = lc->redis->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0) {
            log_info("redis connection closed by the server; reconnecting");
            drop(lc);
        }
    }
    if (lc->redis == NULL && connect_redis(lc) < 0) {
        log_warn("%s", lc->err);
        return LOCK_UNAVAILABLE;
    }
    if (lc->unreleased.key[0] != '\0') {
        redisReply *r = run_release(lc, &lc->unreleased);
        if (r == NULL)
            return LOCK_UNAVAILABLE;
        if (r->type == REDIS_REPLY_INTEGER) {
            if (r->integer == 1)
                log_info("released %s, left over from a failed command", lc->unreleased.key);
            lc->unreleased.key[0] = '\0';
        }
        freeReplyObject(r);
    }
    return LOCK_OK;
}

/* Runs a script that answers a fence, or 0: 1 with lk->fence set, 0 for
 * 0, -1 when Redis failed. */
static int fence_script(struct lock_client *lc, enum lock_script s, struct lock *lk, const char *x,
                        const char *what)
{
    redisReply *r = eval(lc, s, lk, x);
    if (r == NULL)
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_INTEGER) {
        rc = r->integer > 0;
        if (rc)
            lk->fence = r->integer;
    } else {
        reply_err(lc, what, r);
    }
    freeReplyObject(r);
    return rc;
}

/* One attempt: 1 acquired (with its fence), 0 busy, -1 Redis failed. */
static int try_acquire(struct lock_client *lc, struct lock *lk)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", lc->cfg->lock_ttl_ms);
    /* Validity is counted from before the request, so that the time the
     * reply took is not counted as ours. */
    lk->started_ms = clock_ms();
    return fence_script(lc, SCRIPT_ACQUIRE, lk, ttl, "acquire");
}

enum lock_status lock_acquire(struct lock_client *lc, int32_t product, struct lock *lk)
{
    snprintf(lk->key, sizeof lk->key, "lock:product:%" PRId32, product);
    snprintf(lk->fence_key, sizeof lk->fence_key, "fence:product:%" PRId32, product);
    lk->fence = 0;
    if (new_token(lk->token) < 0) {
        set_err(lc, "getrandom: %s", strerror(errno));
        return LOCK_UNAVAILABLE;
    }
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;

    int64_t deadline = clock_ms() + lc->cfg->lock_wait_ms;
    int64_t backoff = BACKOFF_MIN_US;
    for (;;) {
        int rc = try_acquire(lc, lk);
        if (rc == 1)
            return LOCK_OK;
        if (rc < 0) {
            /* A SET that timed out may still have been applied: remove our
             * token if Redis is back, or it expires by its TTL. */
            if (lc->redis == NULL)
                (void)lock_release(lc, lk);
            return LOCK_UNAVAILABLE;
        }
        int64_t left_us = (deadline - clock_ms()) * 1000;
        if (left_us <= 0)
            return LOCK_TIMEOUT;
        /* Equal jitter: half the backoff fixed, half random, so waiters that
         * lost the same race do not retry in lockstep. */
        int64_t sleep_us = backoff / 2 + (int64_t)(next_random(lc) % (uint64_t)(backoff / 2 + 1));
        clock_sleep_us(sleep_us < left_us ? sleep_us : left_us);
        if (backoff < BACKOFF_MAX_US)
            backoff *= 2;
    }
}

enum lock_status lock_release(struct lock_client *lc, const struct lock *lk)
{
    redisReply *r = lock_ready(lc) == LOCK_OK ? run_release(lc, lk) : NULL;
    if (r == NULL) {
        lc->unreleased = *lk; /* for the next call that reaches Redis */
        return LOCK_UNAVAILABLE;
    }
    enum lock_status st = LOCK_UNAVAILABLE;
    if (r->type == REDIS_REPLY_INTEGER)
        st = r->integer == 1 ? LOCK_OK : LOCK_LOST;
    else
        reply_err(lc, "release", r);
    freeReplyObject(r);
    return st;
}

enum lock_status lock_ping(struct lock_client *lc)
{
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;
    redisReply *r = command(lc, "PING");
    if (r == NULL)
        return LOCK_UNAVAILABLE;
    int ok = r->type == REDIS_REPLY_STATUS;
    if (!ok)
        reply_err(lc, "PING", r);
    freeReplyObject(r);
    return ok ? LOCK_OK : LOCK_UNAVAILABLE;
}

enum lock_status lock_refence(struct lock_client *lc, struct lock *lk, int64_t floor)
{
    char x[24];
    snprintf(x, sizeof x, "%" PRId64, floor);
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;
    switch (fence_script(lc, SCRIPT_REFENCE, lk, x, "refence")) {
    case 1:
        return LOCK_OK;
    case 0:
        return LOCK_LOST;
    default:
        return LOCK_UNAVAILABLE;
    }
}

int lock_valid(const struct lock_client *lc, const struct lock *lk, int reserve_ms)
{
    int ttl = lc->cfg->lock_ttl_ms;
    /* Redis and this host may not agree on the length of a millisecond:
     * keep the Redlock margin of 1% of the TTL plus 2 ms. */
    int drift = ttl / 100 + 2;
    return clock_ms() + reserve_ms < lk->started_ms + ttl - drift;
}

enum lock_status lock_owned(struct lock_client *lc, const struct lock *lk)
{
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;
    redisReply *r = command(lc, "GET %s", lk->key);
    if (r == NULL)
        return LOCK_UNAVAILABLE;
    enum lock_status st = LOCK_UNAVAILABLE;
    if (r->type == REDIS_REPLY_STRING)
        st = strcmp(r->str, lk->token) == 0 ? LOCK_OK : LOCK_LOST;
    else if (r->type == REDIS_REPLY_NIL)
        st = LOCK_LOST;
    else
        reply_err(lc, "GET", r);
    freeReplyObject(r);
    return st;
}
