/* lock.c -- see lock.h. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "lock.h"
#include "log.h"

/* The three scripts. Each takes KEYS = {lock, fence, wake, stock, queue,
 * handoff} and ARGV = {token, ttl, ...}, runs atomically, in one round
 * trip, and answers {status, value, strings...}. A queued buyer's keys are
 * named from its token: reply:{token} (its answers), queued:{token} (it is
 * waiting, until its deadline) and taken:{token} (a holder took its
 * purchase: that holder's lock token); an entry and an answer begin with
 * the token. The Lua is kept as written, one statement a line, not as
 * clang-format would fold it. */
/* clang-format off */
#define WAIT_SLICE_MS_TEXT "250"
/* Shared by acquire and release: hands the free lock to the oldest queued
 * buyer still waiting (queued:{token} alive), with a "go" in its reply list
 * and handoff = its token for a slice, so that nobody else takes the lock
 * meanwhile; entries of buyers that left or died are dropped. false if
 * nobody waits. */
#define LUA_HAND_OFF \
    "local function hand_off(keep) " \
    "  while true do " \
    "    local head = redis.call('LPOP', KEYS[5]) " \
    "    if not head then return false end " \
    "    local t = string.sub(head, 1, 32) " \
    "    if redis.call('DEL', 'queued:' .. t) == 1 then " \
    "      redis.call('RPUSH', 'reply:' .. t, 'go') " \
    "      redis.call('PEXPIRE', 'reply:' .. t, keep) " \
    "      redis.call('SET', KEYS[6], t, 'PX', " WAIT_SLICE_MS_TEXT ") " \
    "      return true " \
    "    end " \
    "  end " \
    "end "
static const char *const script_source[SCRIPT_COUNT] = {
    /* Acquire. ARGV = {token, ttl, want (0: do not short-cut), woken (1 if
     * a wake-up token woke the caller), entry, mode, batch max, keep, wait
     * left}. mode: 'n' do not queue; 'q' queue at the back if busy; 'f'
     * queue at the front if busy (after a hand-off, or a batch that failed);
     * 'w' queued, checking; 'l' queued, leaving at the deadline. A lock
     * handed off to another buyer counts as busy.
     *   {1, fence, entries...}  the lock, with up to max queued purchases
     *               of buyers still waiting, each marked taken by us;
     *   {2, stock}  a recent purchase saw less stock than wanted (a wake-up
     *               token or a hand-off that came to the caller is passed
     *               on if the lock is free: the caller releases nothing);
     *   {3, 0, answer}  an answer was waiting in our reply list;
     *   {4, pttl}  our purchase was taken by the current holder: wait;
     *   {5, 0}     taken by a holder that is gone, without an answer;
     *   {6, 0}     out of the queue and never taken (left, or dropped when
     *              its wait ran out): nothing bought;
     *   {0, pttl}  busy (queued, if asked and time is left): wait at most
     *              pttl.
     * A taken mark lives as long as a buyer may wait (keep), so that "no
     * mark" always means "never taken". */
    [SCRIPT_ACQUIRE] =
        LUA_HAND_OFF
        "local token, mode, q = ARGV[1], ARGV[6], KEYS[5] "
        "local reply, taken = 'reply:' .. token, 'taken:' .. token "
        "local function orphan() "
        "  local by = redis.call('GET', taken) "
        "  if not by then return {6, 0} end "
        "  if by == redis.call('GET', KEYS[1]) then "
        "    return {4, redis.call('PTTL', KEYS[1])} "
        "  end "
        "  redis.call('DEL', taken) "
        "  return {5, 0} "
        "end "
        "if mode == 'w' or mode == 'l' then "
        "  local a = redis.call('LPOP', reply) "
        "  if a then return {3, 0, a} end "
        "  if mode == 'l' then "
        "    if redis.call('LREM', q, 1, ARGV[5]) == 1 then "
        "      redis.call('DEL', 'queued:' .. token) "
        "      return {6, 0} "
        "    end "
        "    return orphan() "
        "  end "
        "  if not redis.call('LPOS', q, ARGV[5]) then return orphan() end "
        "end "
        "local want = tonumber(ARGV[3]) "
        "if want > 0 and mode ~= 'w' then "
        "  local seen = redis.call('GET', KEYS[4]) "
        "  if seen and tonumber(seen) < want then "
        "    if redis.call('EXISTS', KEYS[1]) == 0 then "
        "      if mode == 'f' and redis.call('GET', KEYS[6]) == token then "
        "        redis.call('DEL', KEYS[6]) "
        "        hand_off(ARGV[8]) "
        "      elseif ARGV[4] == '1' then "
        "        redis.call('DEL', KEYS[3]) "
        "        redis.call('LPUSH', KEYS[3], 1) "
        "        redis.call('PEXPIRE', KEYS[3], ARGV[2]) "
        "      end "
        "    end "
        "    return {2, tonumber(seen)} "
        "  end "
        "end "
        "local to = redis.call('GET', KEYS[6]) "
        "if (not to or to == token) and redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2]) then "
        "  if to then redis.call('DEL', KEYS[6]) end "
        "  local out = {1, redis.call('INCR', KEYS[2])} "
        "  redis.call('PEXPIRE', KEYS[2], " FENCE_TTL_MS_TEXT ") "
        "  if mode == 'w' then "
        "    redis.call('LREM', q, 1, ARGV[5]) "
        "    redis.call('DEL', 'queued:' .. token) "
        "  end "
        "  local max = tonumber(ARGV[7]) "
        "  if max > 0 then "
        "    for _, e in ipairs(redis.call('LPOP', q, max) or {}) do "
        "      local t = string.sub(e, 1, 32) "
        "      if redis.call('DEL', 'queued:' .. t) == 1 then "
        "        redis.call('SET', 'taken:' .. t, token, 'PX', ARGV[8]) "
        "        out[#out + 1] = e "
        "      end "
        "    end "
        "  end "
        "  return out "
        "end "
        "local queue = (mode == 'q' or mode == 'f') and tonumber(ARGV[9]) > 1 "
        "if queue and mode == 'q' then redis.call('RPUSH', q, ARGV[5]) end "
        "if queue and mode == 'f' then redis.call('LPUSH', q, ARGV[5]) end "
        "if queue then "
        "  redis.call('SET', 'queued:' .. token, 1, 'PX', ARGV[9]) "
        "  redis.call('PEXPIRE', q, ARGV[8]) "
        "end "
        "local pttl = redis.call('PTTL', KEYS[1]) "
        "if pttl == -2 and to then pttl = redis.call('PTTL', KEYS[6]) end "
        "return {0, pttl}",
    /* Release. ARGV = {token, ttl, stock seen (-1 for none, -2 for no such
     * product), keep, answers...}. First the answers, each "token:text" into
     * its buyer's reply list, whoever holds the lock now: they are true
     * either way. Then delete the lock only if it still holds our token (a
     * plain DEL would free a lock that expired while we were slow and now
     * belongs to someone else); hand it off to the oldest queued buyer, or
     * else leave one wake-up token for the next waiter; and leave the stock
     * seen. A product that does not exist keeps no counter: ids are the
     * client's to choose. */
    [SCRIPT_RELEASE] =
        LUA_HAND_OFF
        "for i = 5, #ARGV do "
        "  local t = string.sub(ARGV[i], 1, 32) "
        "  redis.call('RPUSH', 'reply:' .. t, string.sub(ARGV[i], 34)) "
        "  redis.call('PEXPIRE', 'reply:' .. t, ARGV[4]) "
        "  redis.call('DEL', 'taken:' .. t) "
        "end "
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end "
        "redis.call('DEL', KEYS[1], KEYS[3]) "
        "if not hand_off(ARGV[4]) then "
        "  redis.call('LPUSH', KEYS[3], 1) "
        "  redis.call('PEXPIRE', KEYS[3], ARGV[2]) "
        "end "
        "if tonumber(ARGV[3]) >= 0 then "
        "  redis.call('SET', KEYS[4], ARGV[3], 'PX', " STOCK_HINT_MS_TEXT ") "
        "elseif ARGV[3] == '-2' then "
        "  redis.call('DEL', KEYS[2]) "
        "end "
        "return {1, 0}",
    /* Refence. ARGV = {token, floor}: while we still hold the lock, raise
     * the counter to PostgreSQL's new fence epoch and draw a new fence:
     * {1, fence}; {0, 0} if the lock is no longer ours. */
    [SCRIPT_REFENCE] =
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end "
        "if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then "
        "  redis.call('SET', KEYS[2], ARGV[2]) "
        "end "
        "local fence = redis.call('INCR', KEYS[2]) "
        "redis.call('PEXPIRE', KEYS[2], " FENCE_TTL_MS_TEXT ") "
        "return {1, fence}",
};
/* clang-format on */

static void set_err(struct lock_client *lc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(struct lock_client *lc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lc->err, sizeof lc->err, fmt, ap);
    va_end(ap);
    lc->errors++;
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

/* Closes a connection we gave up on, abortively: SO_LINGER with a zero
 * timeout makes close() discard whatever is still in the socket's send queue
 * and reset the connection, instead of the kernel resending it until it is
 * acknowledged. Across a network partition a plain close() let a timed-out
 * "SET lock:product:3 ... NX PX 5000" reach Redis seconds later, after this
 * worker's release of that very lock (on a new connection) had run. On a
 * direct connection, discarded, the command either had reached Redis when
 * we gave up, and runs before anything Redis reads from a later connection
 * (which it must accept first), or never runs. (A unix socket has no send
 * queue of its own: what was written is already Redis's.) A relay in
 * between (spiped, stunnel, socat, a proxy) has read the command already,
 * and no reset of ours reaches what it holds: release_left_over covers
 * that case, and this one too; the reset only makes a late command rarer.
 * A failure here is logged, not fatal. */
static void abort_connection(redisContext *c)
{
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    if (c->fd >= 0 && setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard) < 0)
        log_info("redis: cannot make the close abortive (SO_LINGER): %s", strerror(errno));
}

/* Drops the context after a failure (a timeout, a connection error, a
 * protocol error): hiredis says it cannot be used again, and whatever it
 * had not got through must not arrive later. */
static void drop(struct lock_client *lc)
{
    if (lc->redis != NULL) {
        abort_connection(lc->redis);
        redisFree(lc->redis);
        lc->redis = NULL;
    }
}

/* A primary that refuses writes for want of replicas (min-replicas-to-write:
 * none has acknowledged within min-replicas-max-lag) is cut off from them,
 * and likely from the sentinels that can fail it over: they may have
 * promoted a replica already. With sentinels, the connection is dropped, so
 * that the next call asks them again, and another sentinel is asked first:
 * the one that named this primary may be cut off with it, and would name it
 * again. The reply is still the caller's (the refused script wrote
 * nothing). Without sentinels there is no other primary to find, and the
 * connection is kept. */
static void cut_off(struct lock_client *lc)
{
    int n = lc->cfg->sentinels.count;
    if (n == 0)
        return;
    drop(lc);
    lc->sentinel = (lc->sentinel + 1) % n;
}

/* Records why a reply was not the one expected. */
static void reply_err(struct lock_client *lc, const char *what, const redisReply *r)
{
    set_err(lc, "redis %s: %s", what, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
}

/* A command's reply, checked: on a connection error (r NULL) records why
 * and drops the context, which hiredis says cannot be used again. A reply of
 * type ERROR is returned as is (the connection is still fine), except
 * READONLY: the server is a replica now, and the connection is dropped as if
 * lost; and NOREPLICAS with sentinels: see cut_off. */
static redisReply *checked(struct lock_client *lc, redisReply *r)
{
    if (r == NULL) {
        set_err(lc, "redis: %s", lc->redis->errstr[0] ? lc->redis->errstr : "connection lost");
        drop(lc);
    } else if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "READONLY") != NULL) {
        /* The server became a replica (a failover): like a lost connection,
         * so that the next call asks the sentinels again. */
        set_err(lc, "redis: %s", r->str);
        freeReplyObject(r);
        drop(lc);
        return NULL;
    } else if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOREPLICAS ") != NULL) {
        cut_off(lc);
    }
    return r;
}

static redisReply *vcommand(struct lock_client *lc, const char *fmt, va_list ap)
{
    lc->sent_ms = clock_ms();
    return checked(lc, redisvCommand(lc->redis, fmt, ap));
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

/* AUTH to a sentinel that has a requirepass of its own (its answers name
 * the primary, so anyone who may ask may also be told a wrong one: a
 * sentinel on a shared network needs one). 0 when done or not needed; -1
 * with c->errstr set, so the caller reports it like any failed call. */
static int sentinel_auth(const struct lock_client *lc, redisContext *c)
{
    const struct redis_sentinels *s = &lc->cfg->sentinels;
    if (s->password[0] == '\0')
        return 0;
    redisReply *r = redisCommand(c, "AUTH %s", s->password);
    int ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
    if (!ok && r != NULL)
        snprintf(c->errstr, sizeof c->errstr, "AUTH: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* Asks one sentinel for the primary's address: 0 with host and port, or -1
 * (lc->err says why). */
static int ask_sentinel(struct lock_client *lc, int i, struct timeval tv, char *host, size_t cap,
                        int *port)
{
    const struct redis_sentinels *s = &lc->cfg->sentinels;
    redisContext *c = redisConnectWithTimeout(s->at[i].host, s->at[i].port, tv);
    int rc = -1;
    if (c == NULL) {
        set_err(lc, "redis: out of memory");
        return -1;
    }
    redisReply *r = NULL;
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK || sentinel_auth(lc, c) < 0 ||
        (r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master)) == NULL) {
        set_err(lc, "redis sentinel %s:%d: %s", s->at[i].host, s->at[i].port,
                c->errstr[0] ? c->errstr : "no answer");
    } else if (r->type == REDIS_REPLY_ERROR) {
        set_err(lc, "redis sentinel %s:%d: %s", s->at[i].host, s->at[i].port, r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        set_err(lc, "redis sentinel %s:%d: knows no primary named %s", s->at[i].host, s->at[i].port,
                s->master);
    } else {
        char *end;
        long p = strtol(r->element[1]->str, &end, 10);
        if (*end != '\0' || p < 1 || p > 65535) {
            set_err(lc, "redis sentinel %s:%d: bad port '%s'", s->at[i].host, s->at[i].port,
                    r->element[1]->str);
        } else {
            snprintf(host, cap, "%s", r->element[0]->str);
            *port = (int)p;
            rc = 0;
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* With sentinels, the server they named must say it is the primary (ROLE):
 * right after a failover a sentinel may still name the old one, now a
 * replica, which would refuse every lock with READONLY. */
static int confirm_primary(struct lock_client *lc, const char *host, int port)
{
    if (lc->cfg->sentinels.count == 0)
        return 0;
    /* ROLE is in ACL category @dangerous: an ACL user needs +role. */
    redisReply *r = command(lc, "ROLE");
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (r->type == REDIS_REPLY_ERROR)
        reply_err(lc, "ROLE", r);
    else if (!ok)
        set_err(lc, "redis: %s:%d, named by the sentinels, is not the primary", host, port);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* Connects to the server at host:port (or REDIS_URL's unix socket, when host
 * is NULL) and makes it ready: timeouts, credentials, database, the primary's
 * ROLE with sentinels, the scripts. */
static int connect_to(struct lock_client *lc, struct timeval tv, const char *host, int port)
{
    const struct redis_target *t = &lc->cfg->redis;
    redisContext *c = host == NULL ? redisConnectUnixWithTimeout(t->path, tv)
                                   : redisConnectWithTimeout(host, port, tv);
    if (c == NULL) {
        set_err(lc, "redis: out of memory");
        return -1;
    }
    lc->redis = c;
    if (c->err) {
        if (host != NULL)
            set_err(lc, "redis connect: %s:%d: %s", host, port, c->errstr);
        else
            set_err(lc, "redis connect: %s: %s", t->path, c->errstr);
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
    if (confirm_primary(lc, host, port) < 0)
        goto fail;
    for (int s = 0; s < SCRIPT_COUNT; s++)
        if (command_ok(lc, lc->sha[s], sizeof lc->sha[s], "SCRIPT LOAD", "SCRIPT LOAD %s",
                       script_source[s]) < 0)
            goto fail;
    lc->connects++;
    if (host == NULL)
        log_info("redis connected: %s", t->path);
    else
        log_info("redis connected: %s:%d%s", host, port,
                 lc->cfg->sentinels.count ? " (the primary, as the sentinels said)" : "");
    return 0;
fail:
    drop(lc);
    return -1;
}

/* With sentinels, the Redis Sentinel client protocol: ask them in turn, on
 * every new connection (so a failover is followed by the next reconnect),
 * for the primary, connect to it and confirm it; a sentinel that does not
 * answer, or names a server that is not the primary (a stale one, right
 * after a failover), is passed over for the next. The one that led to a
 * primary is asked first next time, so a dead sentinel costs a timeout once,
 * not on every reconnect. Without sentinels, REDIS_URL's server. */
static int connect_redis(struct lock_client *lc)
{
    const struct redis_target *t = &lc->cfg->redis;
    const struct redis_sentinels *s = &lc->cfg->sentinels;
    int ms = lc->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    char host[256];
    int port;

    if (s->count == 0)
        return connect_to(lc, tv, t->path[0] ? NULL : t->host, t->port);
    for (int k = 0; k < s->count; k++) {
        int i = (lc->sentinel + k) % s->count;
        if (ask_sentinel(lc, i, tv, host, sizeof host, &port) == 0 &&
            connect_to(lc, tv, host, port) == 0) {
            lc->sentinel = i;
            return 0;
        }
        /* The last failure is the caller's to report; one passed over is
         * worth a line of its own (a dead or stale sentinel), once per
         * reconnect. */
        if (k < s->count - 1)
            log_warn("%s; asking the next sentinel", lc->err);
    }
    return -1;
}

int lock_client_open(struct lock_client *lc, const struct config *cfg)
{
    memset(lc, 0, sizeof *lc);
    lc->cfg = cfg;
    return connect_redis(lc);
}

void lock_client_close(struct lock_client *lc)
{
    /* A clean close: nothing is pending on a connection that worked, and
     * Redis should see a goodbye, not a reset. */
    if (lc->redis != NULL) {
        redisFree(lc->redis);
        lc->redis = NULL;
    }
}

/* The most ARGV a script takes: the release's four and its answers. */
#define SCRIPT_ARGV_MAX (9 + LOCK_BATCH_MAX)

/* Runs script s on lk's keys with ARGV = {lk->token, args...}. NULL after a
 * connection error (the context is gone). */
static redisReply *eval(struct lock_client *lc, enum lock_script s, const struct lock *lk,
                        const char *const *args, int nargs)
{
    const char *argv[10 + SCRIPT_ARGV_MAX] = {
        "EVALSHA",    lc->sha[s],    "6",           lk->key,         lk->fence_key,
        lk->wake_key, lk->stock_key, lk->queue_key, lk->handoff_key, lk->token};
    int argc = 10;
    for (int i = 0; i < nargs && i < SCRIPT_ARGV_MAX - 1; i++)
        argv[argc++] = args[i];
    lc->sent_ms = clock_ms();
    redisReply *r = checked(lc, redisCommandArgv(lc->redis, argc, argv, NULL));
    /* The script cache is empty after a Redis restart or SCRIPT FLUSH:
     * EVAL runs the script and caches it again. */
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = script_source[s];
        r = checked(lc, redisCommandArgv(lc->redis, argc, argv, NULL));
    }
    return r;
}

/* A script's answer: {status, value, strings...}. */
struct script_reply {
    int64_t value;
    char (*strings)[LOCK_ENTRY_MAX]; /* room for cap strings, or NULL */
    int cap, n;
};

/* Whether an error reply to a script proves that it wrote nothing. Redis
 * 7 refuses a script's write above maxmemory (OOM, with noeviction), with
 * too few replicas in reach (NOREPLICAS, min-replicas-to-write) or after a
 * failed save (MISCONF) only while the script has written nothing, so that
 * no script stops half done (script.c: SCRIPT_WRITE_DIRTY): a refusal is
 * of its first write. And it runs no script at all while another one is
 * BUSY, while it is LOADING its data set, or on a replica cut off from its
 * primary (MASTERDOWN). */
static int refused_unwritten(const redisReply *r)
{
    /* Anywhere in the text: Redis 6 wraps a refused write in the script's
     * own error ("ERR Error running script ..."). */
    static const char *const first_write[] = {"OOM command not allowed", "NOREPLICAS ", "MISCONF "};
    static const char *const at_the_door[] = {"BUSY ", "LOADING ", "MASTERDOWN "};
    for (size_t i = 0; i < sizeof first_write / sizeof first_write[0]; i++)
        if (strstr(r->str, first_write[i]) != NULL)
            return 1;
    for (size_t i = 0; i < sizeof at_the_door / sizeof at_the_door[0]; i++)
        if (strncmp(r->str, at_the_door[i], strlen(at_the_door[i])) == 0)
            return 1;
    return 0;
}

/* Runs a script and reads its answer into *out: the status (>= 0); -1
 * when Redis failed and the script may have written (a lost connection, an
 * error part-way); -2 when Redis refused it before it wrote anything. */
static int run_script(struct lock_client *lc, enum lock_script s, const struct lock *lk,
                      const char *const *args, int nargs, struct script_reply *out,
                      const char *what)
{
    redisReply *r = eval(lc, s, lk, args, nargs);
    if (r == NULL)
        return -1;
    int status = -1;
    out->n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        status = (int)r->element[0]->integer;
        out->value = r->element[1]->integer;
        for (size_t i = 2; i < r->elements && out->n < out->cap; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                snprintf(out->strings[out->n++], LOCK_ENTRY_MAX, "%s", r->element[i]->str);
    } else {
        reply_err(lc, what, r);
        if (r->type == REDIS_REPLY_ERROR && refused_unwritten(r))
            status = -2;
    }
    freeReplyObject(r);
    return status;
}

/* How long a queued buyer's reply list and the queue itself outlive their
 * last use: a buyer waits LOCK_WAIT_MS, then for as long as a holder that
 * took its purchase may hold the lock. */
static int64_t keep_ms(const struct lock_client *lc)
{
    return lc->cfg->lock_wait_ms + 2 * (int64_t)lc->cfg->lock_ttl_ms;
}

static int run_release(struct lock_client *lc, const struct lock *lk, int64_t stock_seen,
                       const char (*answers)[LOCK_ANSWER_MAX], int n)
{
    char ttl[16], seen[24], keep[24];
    const char *args[SCRIPT_ARGV_MAX] = {ttl, seen, keep};
    struct script_reply out = {0};
    snprintf(ttl, sizeof ttl, "%d", lc->cfg->lock_ttl_ms);
    snprintf(seen, sizeof seen, "%lld", (long long)stock_seen);
    snprintf(keep, sizeof keep, "%lld", (long long)keep_ms(lc));
    for (int i = 0; i < n && i < LOCK_BATCH_MAX; i++)
        args[3 + i] = answers[i];
    return run_script(lc, SCRIPT_RELEASE, lk, args, 3 + (n < LOCK_BATCH_MAX ? n : LOCK_BATCH_MAX),
                      &out, "release");
}

/* Redis and this host may not agree on the length of a millisecond: the
 * Redlock margin of 1% of the TTL plus 2 ms. */
static int drift_ms(int ttl)
{
    return ttl / 100 + 2;
}

/* Remembers lk as a lock we may hold but could not release, sent_ms being
 * when the command that failed was sent: the acquire's for an acquire, the
 * release's for a release (not lk's grant: a record must not end before the
 * lock it names could). Only the most recent is kept: see lock.h. */
static void remember(struct lock_client *lc, const struct lock *lk, int64_t sent_ms)
{
    lc->unreleased = *lk;
    lc->unreleased.started_ms = sent_ms;
}

/* Releases the lock a failed command may have left (lc->unreleased),
 * owner-checked, on every call that reaches Redis until a TTL has passed
 * since that command was sent; not just once. A failed release's lock has
 * expired by then. A timed-out SET may reach Redis after our first release
 * ran: behind a relay (spiped, stunnel, socat, a proxy) that read it before
 * its own link to Redis broke, no reset of ours can stop it, and it comes
 * when that link heals. Each call then finds it and gives it back, if it
 * came within the TTL; one that comes later still expires by its own TTL.
 * Finding the lock not ours is normal (not yet there, or never to be): it
 * is not logged. The cost is one more round trip per call, and only while
 * a record is pending: a TTL at most after a failure. After that the
 * record is dropped without one. Timed on CLOCK_MONOTONIC: a wall-clock step
 * cannot cut it short, and time this host spent suspended only makes it
 * longer. 0, or -1 when the connection failed (the record stays). */
static int release_left_over(struct lock_client *lc)
{
    struct lock *u = &lc->unreleased;
    int ttl = lc->cfg->lock_ttl_ms;
    if (u->key[0] == '\0')
        return 0;
    if (clock_ms() >= u->started_ms + ttl + drift_ms(ttl)) {
        u->key[0] = '\0';
        return 0;
    }
    switch (run_release(lc, u, LOCK_STOCK_NONE, NULL, 0)) {
    case 1:
        /* A command is delivered once: this one cannot come back. */
        log_info("released %s, left over from a failed command", u->key);
        u->key[0] = '\0';
        return 0;
    case 0:
        return 0;
    default:
        /* -1 or -2: a lost connection or an answer that was not the script's
         * (BUSY, OOM, a failed EVAL after NOSCRIPT; READONLY drops the connection:
         * vcommand). Only a lost
         * connection fails the caller's command too: on one that works,
         * failing every call for up to a TTL over one release would make
         * the record cost more than the lock it is there to give back. The
         * record stays, and the next call tries again. No caller reports
         * this failure (theirs may succeed), so it is logged here. */
        if (lc->redis == NULL)
            return -1;
        log_warn("%s (left over: %s, tried again on the next call)", lc->err, u->key);
        return 0;
    }
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
    /* A failure is only recorded (lc->err): the caller logs it, once. */
    if (lc->redis == NULL && connect_redis(lc) < 0)
        return LOCK_UNAVAILABLE;
    return release_left_over(lc) < 0 ? LOCK_UNAVAILABLE : LOCK_OK;
}

/* Reconnects and runs the left-over release at once, after a command lost
 * with its connection. The caller reports that loss: lc->err keeps its text
 * (not "redis connect: ..." from a reconnect that failed too), and a
 * reconnect that failed counts no second failure in lc->errors, being the
 * same outage seen again. An error reply to the release, on a reconnect
 * that worked, is a failure of its own: release_left_over logged it, and it
 * stays counted. */
static void give_back_now(struct lock_client *lc)
{
    char err[sizeof lc->err];
    unsigned long errors = lc->errors;
    memcpy(err, lc->err, sizeof err);
    if (lock_ready(lc) != LOCK_OK)
        lc->errors = errors;
    memcpy(lc->err, err, sizeof err);
}

/* The longest single wait. A token can be lost: a waiter that took one may
 * die, or fail to reach Redis, before it acts on it. The other waiters then
 * notice the free lock within a slice, not at their deadline; a slice is
 * long enough that in a healthy queue it never runs out. */
#define WAIT_SLICE_MS 250

/* Redis times blocked clients out from its event loop, up to 1/hz (100 ms
 * by default) late: the socket timeout allows for that on top. */
#define BLPOP_LATE_MS 200

/* Waits up to ms for an item in list key, on a blocking BLPOP: the
 * holder's release leaves one there (a wake-up token, or a queued buyer's
 * answer), so a waiter costs Redis one command per release, instead of one
 * per poll, and learns of the release in one round trip. Whether an item
 * came or the wait ran out, the caller decides what next. Redis serves
 * blocked clients first come, first served, so waiters are woken in the
 * order they started waiting (a newcomer may still take a just-released
 * lock first). 1 if an item came (copied into item, if not NULL), 0 if none
 * did, -1 when Redis failed. */
static int wait_item(struct lock_client *lc, const char *key, int64_t ms, char *item, size_t cap)
{
    int64_t limit_ms = ms + lc->cfg->redis_timeout_ms + BLPOP_LATE_MS;
    struct timeval wait = {limit_ms / 1000, (limit_ms % 1000) * 1000};
    struct timeval normal = {lc->cfg->redis_timeout_ms / 1000,
                             (lc->cfg->redis_timeout_ms % 1000) * 1000};
    /* Redis 7.0 turns the timeout into milliseconds by truncating
     * seconds * 1000.0, and 0.001 * 1000.0 is 0.999...: 0, "block forever".
     * Half a millisecond more makes every value come out as asked. */
    char secs[32];
    snprintf(secs, sizeof secs, "%lld.%03lld5", (long long)(ms / 1000), (long long)(ms % 1000));
    if (redisSetTimeout(lc->redis, wait) != REDIS_OK) {
        set_err(lc, "redis: cannot set the wait timeout: %s", lc->redis->errstr);
        drop(lc);
        return -1;
    }
    redisReply *r = command(lc, "BLPOP %s %s", key, secs);
    if (r == NULL)
        return -1;
    int rc = r->type == REDIS_REPLY_ARRAY;
    if (rc && (r->elements != 2 || r->element[1]->type != REDIS_REPLY_STRING)) {
        reply_err(lc, "BLPOP", r);
        rc = -1;
    } else if (rc && item != NULL) {
        snprintf(item, cap, "%s", r->element[1]->str);
    } else if (!rc && r->type != REDIS_REPLY_NIL) {
        reply_err(lc, "BLPOP", r);
        rc = -1;
    }
    freeReplyObject(r);
    if (lc->redis == NULL) /* BLPOP writes: a NOREPLICAS dropped it (cut_off) */
        return -1;
    if (redisSetTimeout(lc->redis, normal) != REDIS_OK) {
        set_err(lc, "redis: cannot restore the command timeout: %s", lc->redis->errstr);
        drop(lc);
        return -1;
    }
    return rc;
}

/* One acquire attempt's arguments, kept across the attempts of one call. */
struct attempt {
    char ttl[16], want[16], woken[2], mode[2], max[8], keep[24], left[24];
    char entry[LOCK_ENTRY_MAX];
    char reply_key[48];
};

static void attempt_init(struct attempt *a, const struct lock_client *lc, int32_t want,
                         const struct lock_queue *q, const struct lock *lk)
{
    snprintf(a->ttl, sizeof a->ttl, "%d", lc->cfg->lock_ttl_ms);
    snprintf(a->want, sizeof a->want, "%" PRId32, want);
    snprintf(a->keep, sizeof a->keep, "%lld", (long long)keep_ms(lc));
    snprintf(a->max, sizeof a->max, "%d", q != NULL && q->payload != NULL ? q->batch_max : 0);
    snprintf(a->entry, sizeof a->entry, "%s:%s", lk->token,
             q != NULL && q->payload != NULL ? q->payload : "");
    snprintf(a->reply_key, sizeof a->reply_key, "reply:%s", lk->token);
    snprintf(a->woken, sizeof a->woken, "0");
    snprintf(a->mode, sizeof a->mode, "%s", q != NULL && q->payload != NULL ? "q" : "n");
}

/* What an answer left in our reply list means: the lock handed to us ("go")
 * or a batch that made nothing of ours ("retry"), both meaning "try again,
 * at the front of the queue"; else our purchase's answer. 1 for the former,
 * 0 for the latter (copied to q->answer). */
static int try_again(struct lock_queue *q, struct attempt *a, const char *answer)
{
    if (strcmp(answer, "go") == 0 || strcmp(answer, "retry") == 0) {
        snprintf(a->mode, sizeof a->mode, "f");
        q->queued = 0;
        return 1;
    }
    /* A batch that failed for a key in flight elsewhere: a keyed purchase
     * waits for the lock on its own from now on, so that the one whose key
     * it is cannot fail batch after batch. */
    if (strcmp(answer, "alone") == 0) {
        snprintf(a->mode, sizeof a->mode, "n");
        snprintf(a->max, sizeof a->max, "0");
        q->queued = 0;
        return 1;
    }
    snprintf(q->answer, sizeof q->answer, "%s", answer);
    return 0;
}

/* How a failed command left the attempt. */
enum attempt_loss {
    WAIT_FAILED,     /* the wait, not the acquire: nothing new was written */
    ACQUIRE_REFUSED, /* Redis refused the acquire before it wrote anything */
    ACQUIRE_UNKNOWN  /* the acquire may have been applied, or may be yet */
};

/* The attempt's outcome after a failed command. An acquire whose effect is
 * unknown may have taken the lock: lost with its connection, it may have
 * been applied, or may be yet; answered with an error, the script may have
 * failed after its SET. Remember it, and if the connection was lost, try to
 * give it back at once, on a new connection. A queue entry it may have left
 * stays q->queued: the caller asks PostgreSQL. An acquire Redis refused
 * unwritten (OOM, say) left nothing: the purchase is queued only if an
 * earlier attempt queued it (mode 'w' or 'l'), and no lock is remembered,
 * so that a refusal costs PostgreSQL nothing. */
static enum lock_status attempt_failed(struct lock_client *lc, struct lock *lk,
                                       struct lock_queue *q, const struct attempt *a,
                                       enum attempt_loss loss)
{
    int was_queued = a->mode[0] == 'w' || a->mode[0] == 'l';
    if (q != NULL && a->mode[0] != 'n' && (loss != ACQUIRE_REFUSED || was_queued))
        q->queued = 1;
    /* An error reply too: the script may have failed after its SET. */
    int acquire_sent = loss == ACQUIRE_UNKNOWN;
    if (acquire_sent)
        remember(lc, lk, lc->sent_ms);
    if (acquire_sent && lc->redis == NULL)
        give_back_now(lc);
    return LOCK_UNAVAILABLE;
}

enum lock_status lock_acquire(struct lock_client *lc, int32_t product, int32_t want,
                              struct lock_queue *q, struct lock *lk, int64_t *stock_seen)
{
    snprintf(lk->key, sizeof lk->key, "lock:product:%" PRId32, product);
    snprintf(lk->fence_key, sizeof lk->fence_key, "fence:product:%" PRId32, product);
    snprintf(lk->wake_key, sizeof lk->wake_key, "wake:product:%" PRId32, product);
    snprintf(lk->stock_key, sizeof lk->stock_key, "stock:product:%" PRId32, product);
    snprintf(lk->queue_key, sizeof lk->queue_key, "queue:product:%" PRId32, product);
    snprintf(lk->handoff_key, sizeof lk->handoff_key, "handoff:product:%" PRId32, product);
    lk->fence = 0;
    if (q != NULL) {
        q->taken = 0;
        q->queued = 0;
        q->answer[0] = '\0';
    }
    if (new_token(lk->token) < 0) {
        set_err(lc, "getrandom: %s", strerror(errno));
        return LOCK_UNAVAILABLE;
    }
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;

    struct attempt a;
    attempt_init(&a, lc, want, q, lk);
    const char *const args[] = {a.ttl, a.want, a.woken, a.entry, a.mode, a.max, a.keep, a.left};
    char one[1][LOCK_ENTRY_MAX];
    struct script_reply out = {0, one, 1, 0};
    if (q != NULL && q->payload != NULL && q->batch_max > 0)
        out = (struct script_reply){0, q->batch, q->batch_max, 0};
    int64_t deadline = clock_ms() + lc->cfg->lock_wait_ms;
    for (;;) {
        /* Validity is counted from before the request, so that the time the
         * reply took is not counted as ours. */
        lk->started_ms = clock_ms();
        /* How long a queued purchase stays on offer: until our deadline. */
        snprintf(a.left, sizeof a.left, "%lld",
                 (long long)(deadline > lk->started_ms ? deadline - lk->started_ms : 1));
        int status = run_script(lc, SCRIPT_ACQUIRE, lk, args, 8, &out, "acquire");
        switch (status) {
        case 1:
            lk->fence = out.value;
            if (q != NULL && q->payload != NULL)
                q->taken = out.n;
            return LOCK_OK;
        case 2:
            *stock_seen = out.value;
            return LOCK_SOLD_OUT;
        case 3:
            if (out.n == 1 && !try_again(q, &a, out.strings[0]))
                return LOCK_ANSWERED;
            continue; /* the lock is free, or soon will be: try at once */
        case 5:
            q->queued = 1;
            return LOCK_ORPHANED;
        case 6:
            return LOCK_TIMEOUT; /* left the queue: nothing bought */
        case 0:
        case 4:
            break;
        default:
            return attempt_failed(lc, lk, q, &a, status == -2 ? ACQUIRE_REFUSED : ACQUIRE_UNKNOWN);
        }
        if (a.mode[0] != 'n')
            snprintf(a.mode, sizeof a.mode, "w"); /* queued now */
        int64_t left = deadline - clock_ms();
        /* A purchase a holder took (4) is waited for past the deadline: its
         * answer is on its way, within the holder's TTL. */
        if (left <= 0 && status == 0) {
            if (a.mode[0] == 'n')
                return LOCK_TIMEOUT;
            snprintf(a.mode, sizeof a.mode, "l");
            continue;
        }
        /* value is the holder's PTTL: no release can come later than that.
         * -2 means the lock went away after our attempt: try again at once;
         * -1 (a lock without expiry: not one of ours) waits a slice. */
        int64_t ms = out.value > 0 ? out.value : out.value == -2 ? 1 : WAIT_SLICE_MS;
        ms = ms < left || status == 4 ? ms : left;
        ms = ms < WAIT_SLICE_MS ? ms : WAIT_SLICE_MS;
        int got;
        if (a.mode[0] == 'n') {
            got = wait_item(lc, lk->wake_key, ms, NULL, 0);
            snprintf(a.woken, sizeof a.woken, "%d", got > 0);
        } else {
            char answer[LOCK_ANSWER_MAX];
            got = wait_item(lc, a.reply_key, ms, answer, sizeof answer);
            if (got > 0 && !try_again(q, &a, answer))
                return LOCK_ANSWERED;
        }
        if (got < 0)
            return attempt_failed(lc, lk, q, &a, WAIT_FAILED);
    }
}

enum lock_status lock_release(struct lock_client *lc, const struct lock *lk, int64_t stock_seen,
                              const char (*answers)[LOCK_ANSWER_MAX], int n)
{
    /* Not sent, the release counts as sent now; sent and lost, from when
     * it was. Either is after the grant. */
    if (lock_ready(lc) != LOCK_OK) {
        remember(lc, lk, clock_ms());
        return LOCK_UNAVAILABLE;
    }
    int rc = run_release(lc, lk, stock_seen, answers, n);
    if (rc < 0) {
        remember(lc, lk, lc->sent_ms);
        return LOCK_UNAVAILABLE;
    }
    return rc == 1 ? LOCK_OK : LOCK_LOST;
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
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)floor);
    const char *const args[] = {text};
    struct script_reply out = {0};
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;
    switch (run_script(lc, SCRIPT_REFENCE, lk, args, 1, &out, "refence")) {
    case 1:
        lk->fence = out.value;
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
    return clock_ms() + reserve_ms < lk->started_ms + ttl - drift_ms(ttl);
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
