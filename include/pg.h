/* pg.h -- one PostgreSQL session and its pipelines, knowing nothing of what
 * the statements sell (store.h does).
 *
 * One session per worker process, opened at start and kept. pg_ready makes
 * it usable, reconnecting and preparing the caller's statement table again
 * if the server went away; pg_usable only checks, for the calls that run
 * under the lock and must not stretch it by a connect. Statements are sent
 * as pipelines (several in one round trip) and every outcome is read to the
 * end, so an error that comes after a statement's rows (a COMMIT that
 * fails) is never missed. Every round trip has a client-side deadline,
 * statement_timeout + STATEMENT_GRACE_MS (pg_run).
 *
 * The server last seen unable to commit is remembered (suspect_host): new
 * sessions try DATABASE_URL's other hosts first (hostlist.h) until a COMMIT
 * succeeds on it again.
 *
 * Errors are returned as codes (sale.h's store_status: STORE_OK,
 * STORE_NOT_FOUND, STORE_UNAVAILABLE, STORE_UNKNOWN, STORE_ERROR); the
 * detail for the log, the SQLSTATE and the failed step are kept on the
 * session, as hiredis keeps them on its context. */
#ifndef STOCK_PG_H
#define STOCK_PG_H

#include <stddef.h>
#include <stdint.h>

#include "sale.h"

struct config;
struct pg_conn;   /* libpq's PGconn */
struct pg_result; /* libpq's PGresult */

/* The type OIDs a statement table names (pg_type.h, which client code
 * should not include). */
#define INT4OID      23
#define INT8OID      20
#define TEXTOID      25
#define INT4ARRAYOID 1007
#define INT8ARRAYOID 1016
#define TEXTARRAYOID 1009

#define PG_PARAMS_MAX     11
#define PG_STATEMENTS_MAX 32

/* A statement prepared on every session, under its name. */
struct pg_statement {
    const char *name, *sql;
    int nparams;
    unsigned int types[PG_PARAMS_MAX]; /* libpq's Oid */
};

/* One statement of a pipeline: runs a prepared one (by name), or plain SQL
 * (BEGIN, COMMIT, ROLLBACK, SET LOCAL), or, with types, prepares one
 * (pg_ready does). */
struct pg_step {
    const char *name, *sql;
    int n;
    const char *const *values; /* text format; NULL entries are SQL NULL */
    const unsigned int *types;
};

struct pg_session {
    const struct config *cfg;
    const struct pg_statement *statements; /* prepared on every new session */
    int nstatements;
    struct pg_conn *conn;
    int prepared;     /* statements exist on this session */
    char sqlstate[6]; /* of the last failure, "" if none came from the server */
    int failed_step;  /* which statement of the last pipeline failed, or -1 */
    char err[256];
    unsigned long errors;   /* failures recorded in err, for the metrics */
    unsigned long connects; /* sessions opened (and prepared), for the metrics */
    int warnings;           /* server warnings during the current round trip */
    int demoted;            /* the server refused a write as read-only */
    /* The server last seen unable to commit (a COMMIT left unanswered or
     * answered "committed locally", or a row held by one that waits for a
     * lost standby), as PQhost/PQport name it; "" for none. */
    char suspect_host[256];
    char suspect_port[32];
    int suspect_left; /* a session elsewhere was logged since it was recorded */
    int unreplicated; /* the round trip's warning: synchronous replication cancelled */
};

/* Connects and prepares statements[0..n) (n at most PG_STATEMENTS_MAX).
 * Returns 0, or -1 if PostgreSQL is not reachable yet: the session stays
 * usable and pg_ready tries again. */
int pg_open(struct pg_session *pg, const struct config *cfg, const struct pg_statement *statements,
            int n);

/* Ends the session (a transaction left open is rolled back by the server);
 * the next pg_ready opens a new one. */
void pg_close(struct pg_session *pg);

/* Makes the session usable: reconnects and re-prepares when needed. Cheap
 * when all is well (no round trip). */
enum store_status pg_ready(struct pg_session *pg);

/* Whether the session is usable as it is, without a round trip: connected,
 * prepared, no transaction open. Reads what the server said first (a
 * shutdown notice, end-of-file); err says why not. */
int pg_usable(struct pg_session *pg);

/* Sends steps[0..n) as one pipeline (one round trip) and reads their
 * results into res[0..n), which the caller clears (pg_clear). STORE_OK when
 * every step succeeded; otherwise the first failure, classified, res
 * cleared, failed_step and sqlstate set. commits: whether the round trip may
 * commit a sale someone relies on; a failure whose outcome the server did
 * not report is then STORE_UNKNOWN, and a COMMIT answered with a warning
 * too (committed locally, maybe not on a standby). Past the deadline the
 * session is dropped. */
enum store_status pg_run(struct pg_session *pg, const struct pg_step *steps, int n,
                         struct pg_result **res, int commits);

/* One prepared statement that returns rows: STORE_OK with *res (the caller
 * clears it), or STORE_NOT_FOUND when there are none. commits as pg_run's. */
enum store_status pg_query(struct pg_session *pg, const char *name, int n,
                           const char *const *values, struct pg_result **res, int commits);

/* Ends the open transaction with command (COMMIT or ROLLBACK): STORE_OK once
 * PostgreSQL confirmed it. A COMMIT of a transaction that had failed answers
 * "ROLLBACK", not an error: that is a failure too. */
enum store_status pg_end(struct pg_session *pg, const char *command);

/* Rolls back the open transaction, if any (dropping the session if even
 * that fails, which rolls it back on the server). */
void pg_rollback(struct pg_session *pg);

/* The session's server cannot commit now, or does not answer: recorded as
 * the suspect, so that new sessions try the other hosts first, and the
 * session ended. Logged once per server. */
void pg_cannot_commit(struct pg_session *pg);

/* A COMMIT that wrote was confirmed: its server commits again, if it was
 * the suspect. (Not any round trip that "commits": one that wrote nothing
 * never waits for a standby.) */
void pg_committed(struct pg_session *pg);

/* Clears res[0..n) and sets them NULL. */
void pg_clear(struct pg_result **res, int n);

/* Records a failure's detail in err (and counts it). */
void pg_set_err(struct pg_session *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps a SQLSTATE to the status the client should see: connection loss,
 * shutdowns, timeouts and lock or resource exhaustion are STORE_UNAVAILABLE
 * (try again later); everything else is STORE_ERROR. NULL (no SQLSTATE, a
 * client-side failure) is STORE_UNAVAILABLE. This is the general mapping;
 * store_buy and store_new_epoch tell a lock_timeout on the product's row
 * (STORE_BUSY) or on the idempotency key (STORE_KEY_BUSY) from it. */
enum store_status pg_classify_sqlstate(const char *sqlstate);

/* A PostgreSQL array literal, in text format, built in a buffer with room
 * for every element at its longest (see pg_array_open). */
struct pg_array {
    char *buf;
    size_t len, cap;
};

/* Room for n elements of up to width characters, each quoted and escaped:
 * 0, or -1 when memory ran out. The caller frees a->buf. */
int pg_array_open(struct pg_array *a, int n, size_t width);

/* Appends value, or NULL. */
void pg_array_add(struct pg_array *a, const char *value);

/* Appends v, or NULL if null. */
void pg_array_add_int(struct pg_array *a, int64_t v, int null);

/* Closes the literal and returns it. */
const char *pg_array_close(struct pg_array *a);

#endif
