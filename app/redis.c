/* redis.c -- see redis.h. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "redis.h"

void redis_set_err(struct redis_conn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(conn->err, sizeof conn->err, fmt, ap);
    va_end(ap);
    conn->errors++;
}

/* Closes a connection we gave up on, abortively: SO_LINGER with a zero
 * timeout makes close() discard whatever is still in the socket's send queue
 * and reset the connection, instead of the kernel resending it until it is
 * acknowledged. Across a network partition a plain close() let a timed-out
 * command reach Redis seconds later, after what we sent on a new connection.
 * On a direct connection, discarded, the command either had reached Redis
 * when we gave up, and runs before anything Redis reads from a later
 * connection (which it must accept first), or never runs. (A unix socket has
 * no send queue of its own: what was written is already Redis's.) A relay in
 * between still delivers it late: lock.h says when, and how the lock copes.
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
static void drop(struct redis_conn *conn)
{
    if (conn->ctx != NULL) {
        abort_connection(conn->ctx);
        redisFree(conn->ctx);
        conn->ctx = NULL;
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
static void cut_off(struct redis_conn *conn)
{
    int n = conn->cfg->sentinels.count;
    if (n == 0)
        return;
    drop(conn);
    conn->sentinel = (conn->sentinel + 1) % n;
}

void redis_reply_err(struct redis_conn *conn, const char *what, const redisReply *r)
{
    redis_set_err(conn, "redis %s: %s", what,
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
}

/* A command's reply, checked: on a connection error (r NULL) records why
 * and drops the context, which hiredis says cannot be used again. A reply of
 * type ERROR is returned as is (the connection is still fine), except
 * READONLY: the server is a replica now, and the connection is dropped as if
 * lost; and NOREPLICAS with sentinels: see cut_off. */
static redisReply *checked(struct redis_conn *conn, redisReply *r)
{
    if (r == NULL) {
        redis_set_err(conn, "redis: %s",
                      conn->ctx->errstr[0] ? conn->ctx->errstr : "connection lost");
        drop(conn);
    } else if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "READONLY") != NULL) {
        /* The server became a replica (a failover): like a lost connection,
         * so that the next call asks the sentinels again. */
        redis_set_err(conn, "redis: %s", r->str);
        freeReplyObject(r);
        drop(conn);
        return NULL;
    } else if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOREPLICAS ") != NULL) {
        cut_off(conn);
    }
    return r;
}

static redisReply *vcommand(struct redis_conn *conn, const char *fmt, va_list ap)
{
    conn->sent_ms = clock_ms();
    return checked(conn, redisvCommand(conn->ctx, fmt, ap));
}

redisReply *redis_command(struct redis_conn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcommand(conn, fmt, ap);
    va_end(ap);
    return r;
}

/* Runs a set-up command that must answer +OK or, when out is given, a bulk
 * string that is copied there (SCRIPT LOAD's SHA1). */
static int command_ok(struct redis_conn *conn, char *out, size_t outlen, const char *what,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcommand(conn, fmt, ap);
    va_end(ap);
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_STATUS || (r->type == REDIS_REPLY_STRING && out != NULL);
    if (!ok)
        redis_reply_err(conn, what, r);
    else if (out != NULL)
        snprintf(out, outlen, "%s", r->str);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* AUTH to a sentinel that has a requirepass of its own (its answers name
 * the primary, so anyone who may ask may also be told a wrong one: a
 * sentinel on a shared network needs one). 0 when done or not needed; -1
 * with c->errstr set, so the caller reports it like any failed call. */
static int sentinel_auth(const struct redis_conn *conn, redisContext *c)
{
    const struct redis_sentinels *s = &conn->cfg->sentinels;
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
 * (conn->err says why). */
static int ask_sentinel(struct redis_conn *conn, int i, struct timeval tv, char *host, size_t cap,
                        int *port)
{
    const struct redis_sentinels *s = &conn->cfg->sentinels;
    redisContext *c = redisConnectWithTimeout(s->at[i].host, s->at[i].port, tv);
    int rc = -1;
    if (c == NULL) {
        redis_set_err(conn, "redis: out of memory");
        return -1;
    }
    redisReply *r = NULL;
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK || sentinel_auth(conn, c) < 0 ||
        (r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master)) == NULL) {
        redis_set_err(conn, "redis sentinel %s:%d: %s", s->at[i].host, s->at[i].port,
                      c->errstr[0] ? c->errstr : "no answer");
    } else if (r->type == REDIS_REPLY_ERROR) {
        redis_set_err(conn, "redis sentinel %s:%d: %s", s->at[i].host, s->at[i].port, r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        redis_set_err(conn, "redis sentinel %s:%d: knows no primary named %s", s->at[i].host,
                      s->at[i].port, s->master);
    } else {
        char *end;
        long p = strtol(r->element[1]->str, &end, 10);
        if (*end != '\0' || p < 1 || p > 65535) {
            redis_set_err(conn, "redis sentinel %s:%d: bad port '%s'", s->at[i].host, s->at[i].port,
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
static int confirm_primary(struct redis_conn *conn, const char *host, int port)
{
    if (conn->cfg->sentinels.count == 0)
        return 0;
    /* ROLE is in ACL category @dangerous: an ACL user needs +role. */
    redisReply *r = redis_command(conn, "ROLE");
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (r->type == REDIS_REPLY_ERROR)
        redis_reply_err(conn, "ROLE", r);
    else if (!ok)
        redis_set_err(conn, "redis: %s:%d, named by the sentinels, is not the primary", host, port);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* Connects to the server at host:port (or REDIS_URL's unix socket, when host
 * is NULL) and makes it ready: timeouts, credentials, database, the primary's
 * ROLE with sentinels, the caller's scripts. */
static int connect_to(struct redis_conn *conn, struct timeval tv, const char *host, int port)
{
    const struct redis_target *t = &conn->cfg->redis;
    redisContext *c = host == NULL ? redisConnectUnixWithTimeout(t->path, tv)
                                   : redisConnectWithTimeout(host, port, tv);
    if (c == NULL) {
        redis_set_err(conn, "redis: out of memory");
        return -1;
    }
    conn->ctx = c;
    if (c->err) {
        if (host != NULL)
            redis_set_err(conn, "redis connect: %s:%d: %s", host, port, c->errstr);
        else
            redis_set_err(conn, "redis connect: %s: %s", t->path, c->errstr);
        goto fail;
    }
    /* The connect timeout does not bound commands: without this a Redis that
     * accepts but never answers would hang the worker (hiredis #593). */
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        redis_set_err(conn, "redis: cannot set the command timeout: %s", c->errstr);
        goto fail;
    }
    if (!t->path[0] && redisEnableKeepAlive(c) != REDIS_OK) {
        redis_set_err(conn, "redis: cannot enable keepalive: %s", c->errstr);
        goto fail;
    }
    if (t->password[0] &&
        (t->username[0] ? command_ok(conn, NULL, 0, "AUTH", "AUTH %s %s", t->username, t->password)
                        : command_ok(conn, NULL, 0, "AUTH", "AUTH %s", t->password)) < 0)
        goto fail;
    if (t->db != 0 && command_ok(conn, NULL, 0, "SELECT", "SELECT %d", t->db) < 0)
        goto fail;
    if (confirm_primary(conn, host, port) < 0)
        goto fail;
    for (int s = 0; s < conn->nscripts; s++)
        if (command_ok(conn, conn->sha[s], sizeof conn->sha[s], "SCRIPT LOAD", "SCRIPT LOAD %s",
                       conn->scripts[s]) < 0)
            goto fail;
    conn->connects++;
    if (host == NULL)
        log_info("redis connected: %s", t->path);
    else
        log_info("redis connected: %s:%d%s", host, port,
                 conn->cfg->sentinels.count ? " (the primary, as the sentinels said)" : "");
    return 0;
fail:
    drop(conn);
    return -1;
}

/* With sentinels, the Redis Sentinel client protocol: ask them in turn, on
 * every new connection (so a failover is followed by the next reconnect),
 * for the primary, connect to it and confirm it; a sentinel that does not
 * answer, or names a server that is not the primary (a stale one, right
 * after a failover), is passed over for the next. The one that led to a
 * primary is asked first next time, so a dead sentinel costs a timeout once,
 * not on every reconnect. Without sentinels, REDIS_URL's server. */
static int connect_redis(struct redis_conn *conn)
{
    const struct redis_target *t = &conn->cfg->redis;
    const struct redis_sentinels *s = &conn->cfg->sentinels;
    int ms = conn->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    char host[256];
    int port;

    if (s->count == 0)
        return connect_to(conn, tv, t->path[0] ? NULL : t->host, t->port);
    for (int k = 0; k < s->count; k++) {
        int i = (conn->sentinel + k) % s->count;
        if (ask_sentinel(conn, i, tv, host, sizeof host, &port) == 0 &&
            connect_to(conn, tv, host, port) == 0) {
            conn->sentinel = i;
            return 0;
        }
        /* The last failure is the caller's to report; one passed over is
         * worth a line of its own (a dead or stale sentinel), once per
         * reconnect. */
        if (k < s->count - 1)
            log_warn("%s; asking the next sentinel", conn->err);
    }
    return -1;
}
int redis_open(struct redis_conn *conn, const struct config *cfg, const char *const *scripts,
               int nscripts)
{
    memset(conn, 0, sizeof *conn);
    conn->cfg = cfg;
    conn->scripts = scripts;
    conn->nscripts = nscripts < REDIS_SCRIPTS_MAX ? nscripts : REDIS_SCRIPTS_MAX;
    return connect_redis(conn);
}

void redis_close(struct redis_conn *conn)
{
    /* A clean close: nothing is pending on a connection that worked, and
     * Redis should see a goodbye, not a reset. */
    if (conn->ctx != NULL) {
        redisFree(conn->ctx);
        conn->ctx = NULL;
    }
}

/* Redis times blocked clients out from its event loop, up to 1/hz (100 ms
 * by default) late: the socket timeout allows for that on top. */
#define BLPOP_LATE_MS 200

/* The wait (redis.h). Whether an item came or the wait ran out, the caller
 * decides what next. Redis serves blocked clients first come, first served,
 * so waiters are woken in the order they started waiting. */
int redis_wait_item(struct redis_conn *conn, const char *key, int64_t ms, char *item, size_t cap)
{
    int64_t limit_ms = ms + conn->cfg->redis_timeout_ms + BLPOP_LATE_MS;
    struct timeval wait = {limit_ms / 1000, (limit_ms % 1000) * 1000};
    struct timeval normal = {conn->cfg->redis_timeout_ms / 1000,
                             (conn->cfg->redis_timeout_ms % 1000) * 1000};
    /* Redis 7.0 turns the timeout into milliseconds by truncating
     * seconds * 1000.0, and 0.001 * 1000.0 is 0.999...: 0, "block forever".
     * Half a millisecond more makes every value come out as asked. */
    char secs[32];
    snprintf(secs, sizeof secs, "%lld.%03lld5", (long long)(ms / 1000), (long long)(ms % 1000));
    if (redisSetTimeout(conn->ctx, wait) != REDIS_OK) {
        redis_set_err(conn, "redis: cannot set the wait timeout: %s", conn->ctx->errstr);
        drop(conn);
        return -1;
    }
    redisReply *r = redis_command(conn, "BLPOP %s %s", key, secs);
    if (r == NULL)
        return -1;
    int rc = r->type == REDIS_REPLY_ARRAY;
    if (rc && (r->elements != 2 || r->element[1]->type != REDIS_REPLY_STRING)) {
        redis_reply_err(conn, "BLPOP", r);
        rc = -1;
    } else if (rc && item != NULL) {
        snprintf(item, cap, "%s", r->element[1]->str);
    } else if (!rc && r->type != REDIS_REPLY_NIL) {
        redis_reply_err(conn, "BLPOP", r);
        rc = -1;
    }
    freeReplyObject(r);
    if (conn->ctx == NULL) /* BLPOP writes: a NOREPLICAS dropped it (cut_off) */
        return -1;
    if (redisSetTimeout(conn->ctx, normal) != REDIS_OK) {
        redis_set_err(conn, "redis: cannot restore the command timeout: %s", conn->ctx->errstr);
        drop(conn);
        return -1;
    }
    return rc;
}

struct redisReply *redis_eval(struct redis_conn *conn, int s, int argc, const char **argv)
{
    argv[0] = "EVALSHA";
    argv[1] = conn->sha[s];
    conn->sent_ms = clock_ms();
    redisReply *r = checked(conn, redisCommandArgv(conn->ctx, argc, argv, NULL));
    /* The script cache is empty after a Redis restart or SCRIPT FLUSH:
     * EVAL runs the script and caches it again. */
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = conn->scripts[s];
        r = checked(conn, redisCommandArgv(conn->ctx, argc, argv, NULL));
    }
    return r;
}

int redis_ready(struct redis_conn *conn)
{
    if (conn->ctx != NULL) {
        /* An idle connection has nothing to read. If it has, Redis closed it
         * (restart, timeout, CLIENT KILL) or broke protocol: start afresh
         * rather than fail the next command. */
        struct pollfd pfd = {.fd = conn->ctx->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0) {
            log_info("redis connection closed by the server; reconnecting");
            drop(conn);
        }
    }
    /* A failure is only recorded (conn->err): the caller logs it, once. */
    return conn->ctx == NULL ? connect_redis(conn) : 0;
}

int redis_ping(struct redis_conn *conn)
{
    if (redis_ready(conn) < 0)
        return -1;
    redisReply *r = redis_command(conn, "PING");
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_STATUS;
    if (!ok)
        redis_reply_err(conn, "PING", r);
    freeReplyObject(r);
    return ok ? 0 : -1;
}
