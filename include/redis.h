/* redis.h -- one Redis connection, knowing nothing of what its scripts do
 * (lock.h does).
 *
 * One hiredis connection per worker process. redis_ready makes it usable,
 * reconnecting when Redis closed it or a command failed, and loading the
 * caller's script table again on each new connection; scripts run by
 * EVALSHA, falling back to EVAL when Redis lost its script cache. Every
 * command is bounded by REDIS_TIMEOUT_MS, and so is the connect.
 *
 * With REDIS_SENTINELS, each new connection asks the sentinels for the
 * primary (the Redis Sentinel client protocol) and confirms it with ROLE; a
 * READONLY reply (the server became a replica) and, with sentinels, a
 * NOREPLICAS one (the primary is cut off from its replicas) drop the
 * connection, so that the next call asks again.
 *
 * A connection given up on (a timeout, a connection error, a protocol
 * error) is dropped, and closed abortively (SO_LINGER 0), so that what we
 * had not got through is discarded, not delivered late (abort_connection
 * says why); what a relay in between still delivers late, and how the lock
 * copes, is told in lock.h.
 *
 * Errors are returned as -1 or NULL; the detail for the log is kept on the
 * connection (err, counted in errors), as hiredis keeps it on its context,
 * and not logged: the caller does, once. */
#ifndef STOCK_REDIS_H
#define STOCK_REDIS_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct redisContext;
struct redisReply;

/* The most scripts a caller may register. */
#define REDIS_SCRIPTS_MAX 4

struct redis_conn {
    const struct config *cfg;
    struct redisContext *ctx;   /* NULL while not connected */
    const char *const *scripts; /* the caller's script table, loaded on each connection */
    int nscripts;
    char sha[REDIS_SCRIPTS_MAX][41]; /* SHA1 of each script on this server */
    int64_t sent_ms;                 /* CLOCK_MONOTONIC when the last command was sent */
    char err[256];
    unsigned long errors;   /* failures recorded in err, for the metrics */
    unsigned long connects; /* connections made, for the metrics */
    int sentinel;           /* the sentinel to ask first: the last that led to a primary */
};

/* Connects, and loads the nscripts of scripts (kept: not copied) on this
 * and every later connection. Returns 0, or -1 if Redis is not reachable
 * yet: the connection stays usable and the next call tries again. */
int redis_open(struct redis_conn *conn, const struct config *cfg, const char *const *scripts,
               int nscripts);
/* Closes cleanly: Redis sees a goodbye, not a reset. */
void redis_close(struct redis_conn *conn);

/* Makes the connection usable, reconnecting when Redis closed it or after a
 * failure. Cheap when all is well (a poll(), no round trip). 0 or -1. */
int redis_ready(struct redis_conn *conn);

/* Records why a call failed, in conn->err, and counts it. */
void redis_set_err(struct redis_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records why a reply was not the one expected. */
void redis_reply_err(struct redis_conn *conn, const char *what, const struct redisReply *r);

/* Sends one command (hiredis format) on a ready connection and returns its
 * reply, or NULL when the connection failed (conn->err says why; it is
 * dropped). An ERROR reply is returned as is, except READONLY (dropped, as
 * if lost: NULL); a NOREPLICAS one, with sentinels, is returned but drops
 * the connection for the next call. */
struct redisReply *redis_command(struct redis_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Runs registered script s: argv[0] and argv[1] are filled here (EVALSHA
 * and the SHA1, or EVAL and the source when Redis lost its script cache);
 * the caller's argv[2..argc) are numkeys, the keys and the arguments. The
 * reply as redis_command's. */
struct redisReply *redis_eval(struct redis_conn *conn, int s, int argc, const char **argv);

/* Waits up to ms for an item in list key, on a blocking BLPOP (its socket
 * timeout stretched to allow for it). 1 if an item came (copied into item,
 * if not NULL), 0 if none did, -1 when Redis failed. */
int redis_wait_item(struct redis_conn *conn, const char *key, int64_t ms, char *item, size_t cap);

/* One round trip (PING), for /healthz. 0 or -1. */
int redis_ping(struct redis_conn *conn);

#endif
