/* store.c -- see store.h. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "clock.h"
#include "combine.h"
#include "hostlist.h"
#include "config.h"
#include "fault.h"
#include "log.h"
#include "store.h"
#include "stringify.h"

/* pg_type.h, which client code should not include */
/* How long a batch waits for a key whose first request holds it elsewhere
 * before it leaves that purchase out (sql_claim_batch): longer than a
 * healthy COMMIT, far shorter than lock_timeout. */
#define KEY_WAIT_MS      10
#define KEY_WAIT_MS_TEXT STRINGIFY(KEY_WAIT_MS)

#define INT4OID 23
#define INT8OID 20
#define TEXTOID 25

/* An idempotency key is claimed first, in its own statement of the
 * purchase's transaction: a key used before fails it (unique violation),
 * and a key whose first request is still running makes it wait, so either
 * is told apart from anything the purchase itself runs into. The claim's
 * status 0 is never committed: the outcome replaces it before COMMIT. */
static const char sql_claim[] = "INSERT INTO idempotency_keys (key, product_id, amount, status)"
                                " VALUES ($1, $2, $3, 0)";

/* The purchase: one statement. The UPDATE is the guard: PostgreSQL
 * re-evaluates "amount >= $2 AND fence < $3" on the latest row version
 * after waiting for any concurrent buyer (READ COMMITTED), so two buyers can
 * never both take the last unit, and a stale lock holder (its fence older
 * than one already applied) takes nothing. The order, and the claimed key's
 * outcome, are written only if the UPDATE matched. */
static const char sql_buy[] =
    "WITH sold AS ("
    "  UPDATE products SET amount = amount - $2, fence = $3"
    "   WHERE id = $1 AND amount >= $2 AND fence < $3"
    "  RETURNING amount"
    "), placed AS ("
    "  INSERT INTO orders (product_id, amount, fence) SELECT $1, $2, $3 FROM sold RETURNING id"
    "), keyed AS ("
    "  UPDATE idempotency_keys SET status = 200, order_id = placed.id, remaining = sold.amount"
    "    FROM placed, sold WHERE key = $4"
    ")"
    "SELECT placed.id, sold.amount FROM placed, sold";

/* After a refused purchase, in the same transaction but a new snapshot:
 * tells a missing product from a short one or a stale fence. */
static const char sql_stock[] = "SELECT amount, fence FROM products WHERE id = $1";

/* A refused purchase's outcome, for its claimed idempotency key. */
static const char sql_key_refused[] =
    "UPDATE idempotency_keys SET status = $2, available = $3 WHERE key = $1";

/* A new fence epoch for a product, committed on its own: every fence drawn
 * before it, by any holder, is below it from now on (see store.h). */
static const char sql_new_epoch[] =
    "UPDATE products SET fence = ((fence >> 32) + 1) << 32 WHERE id = $1 RETURNING fence";

/* A key's recorded outcome, read back for a replay. An UPDATE that changes
 * nothing, not a SELECT: a found key writes a row version, so this
 * statement's own COMMIT waits for the synchronous standby, if there is one,
 * and the outcome is answered only once a failover would keep it. It may
 * belong to a COMMIT whose wait was cancelled ("committed locally"), and a
 * replay must not make a 200 of that. A key not found writes nothing and
 * waits for nothing: a new purchase's lookup costs what a SELECT does. A
 * key whose purchase is still in flight is not visible, as with a SELECT. */
static const char sql_key[] =
    "UPDATE idempotency_keys SET status = status WHERE key = $1"
    " RETURNING product_id, amount, status, order_id, remaining, available";

/* A batch (combine.h), first round trip: its keys claimed (a key used
 * before, or by another purchase of this statement, is not returned), then
 * the product's row locked, and read, until COMMIT, and one order id drawn
 * per purchase. (A token its buyer closed is not looked for here: that
 * costs every batch a lookup per purchase, for a case that needs a Redis
 * failure; the batch's write finds it, and fails, STORE_ALONE.)
 *
 * A key whose first request is still in flight elsewhere (its INSERT not
 * yet committed: a retry sent through another host while the first sits on
 * a stalled link) would make the claim wait, and fail the whole batch at
 * lock_timeout, batch after batch while it is retried. So keys are claimed
 * with a lock_timeout of KEY_WAIT_MS, and if that runs out, once more one
 * by one (sql_claim_each): the key in flight is left unclaimed, and its
 * purchase answered from its key (request_in_progress), alone. */
static const char sql_claim_batch[] =
    "INSERT INTO idempotency_keys (key, product_id, amount, status)"
    " SELECT k, $2, a, 0 FROM unnest($1::text[], $3::int[]) AS u(k, a)"
    " ON CONFLICT (key) DO NOTHING RETURNING key";
/* The claim, one key at a time (schema.sql: claim_keys), skipping those in
 * flight. Each key is a subtransaction, hence only after the set-based
 * claim timed out. Not prepared, so that a schema without the function
 * fails this fallback alone (the batch then fails, STORE_ALONE, as it did
 * before the function existed), not every session's start. */
static const char sql_claim_each[] = "SELECT claim_keys($1::text[], $2::int, $3::int[])";
static const char sql_key_wait[] = "SET LOCAL lock_timeout = " KEY_WAIT_MS_TEXT;
static const char sql_lock_wait[] = "SET LOCAL lock_timeout = DEFAULT";
static const char sql_lock_stock[] = "SELECT amount, fence FROM products WHERE id = $1 FOR UPDATE";
static const char sql_draw_ids[] =
    "SELECT nextval(pg_get_serial_sequence('orders', 'id')) FROM generate_series(1, $1)";

/* A batch's writes, in one statement: the stock, every order, every
 * waiter's outcome under its token and every key's. The row was locked and
 * read in the first round trip, so its stock and fence cannot have moved;
 * if they had, the CASEs make NULL of them and the statement fails on NOT
 * NULL rather than match nothing (data-modifying WITH clauses all run,
 * whatever matched). A token a waiting buyer closed meanwhile fails it on
 * the primary key: the batch commits whole or not at all. The keys' update
 * names them with = ANY as well, so that it is an index scan however the
 * planner estimates the unnest: a join alone was a scan of every key. */
static const char sql_write_batch[] =
    "WITH o AS ("
    "  SELECT * FROM unnest($5::text[], $6::text[], $7::int[], $8::int[], $9::bigint[],"
    "                       $10::bigint[], $11::bigint[])"
    "    AS o(token, key, amount, status, order_id, remaining, available)"
    "), sold AS ("
    "  UPDATE products SET amount = CASE WHEN amount = $3 THEN amount - $4 END,"
    "                      fence = CASE WHEN fence < $2 THEN $2 END"
    "   WHERE id = $1 RETURNING amount"
    "), placed AS ("
    "  INSERT INTO orders (id, product_id, amount, fence)"
    "  SELECT order_id, $1, amount, $2 FROM o WHERE status = 200"
    "), tokens AS ("
    "  INSERT INTO purchase_tokens (token, product_id, amount, status, order_id, remaining,"
    "                               available)"
    "  SELECT token, $1, amount, status, order_id, remaining, available FROM o"
    "   WHERE token IS NOT NULL"
    "), keyed AS ("
    "  UPDATE idempotency_keys k SET status = o.status, order_id = o.order_id,"
    "                                remaining = o.remaining, available = o.available"
    "    FROM o WHERE k.key = o.key AND k.key = ANY ($6::text[])"
    ")"
    "SELECT amount FROM sold";

/* A waiting buyer closes its token (combine.h). ON CONFLICT waits for a
 * batch in flight that wrote it; DO UPDATE, not DO NOTHING, so the row is
 * returned either way and written either way: this statement's COMMIT then
 * waits for the synchronous standby, as sql_key's does, and a batch's
 * outcome is answered only once a failover would keep it. */
static const char sql_close_token[] =
    "INSERT INTO purchase_tokens (token, product_id, amount, status) VALUES ($1, $2, $3, 0)"
    " ON CONFLICT (token) DO UPDATE SET status = purchase_tokens.status"
    " RETURNING status, order_id, remaining, available";

static const char sql_product[] = "SELECT id, name, amount FROM products WHERE id = $1";

/* A health check asks what a purchase needs: a server that takes writes. A
 * primary made read-only (a failover under way) answers, but sells nothing. */
static const char sql_ping[] = "SELECT current_setting('transaction_read_only')";

/* Whether COMMITs wait for a synchronous standby, and have for longer than
 * a lock_timeout: asked when the product's row stayed locked past one
 * (row_busy). A healthy standby answers in milliseconds. Sessions of our
 * own role are visible to it; others only to pg_read_all_stats. */
static const char sql_commits_stalled[] =
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    "   AND query_start < statement_timestamp() - current_setting('lock_timeout')::interval)";

#define MAX_PARAMS   11
#define INT4ARRAYOID 1007
#define INT8ARRAYOID 1016
#define TEXTARRAYOID 1009

struct statement {
    const char *name, *sql;
    int nparams;
    Oid types[MAX_PARAMS];
};

static const struct statement statements[] = {
    {"claim", sql_claim, 3, {TEXTOID, INT4OID, INT4OID}},
    {"buy", sql_buy, 4, {INT4OID, INT4OID, INT8OID, TEXTOID}},
    {"stock", sql_stock, 1, {INT4OID}},
    {"key_refused", sql_key_refused, 3, {TEXTOID, INT4OID, INT8OID}},
    {"new_epoch", sql_new_epoch, 1, {INT4OID}},
    {"key", sql_key, 1, {TEXTOID}},
    {"product", sql_product, 1, {INT4OID}},
    {"ping", sql_ping, 0, {0}},
    {"claim_batch", sql_claim_batch, 3, {TEXTARRAYOID, INT4OID, INT4ARRAYOID}},
    {"lock_stock", sql_lock_stock, 1, {INT4OID}},
    {"draw_ids", sql_draw_ids, 1, {INT4OID}},
    {"write_batch",
     sql_write_batch,
     11,
     {INT4OID, INT8OID, INT8OID, INT8OID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
      INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID}},
    {"close_token", sql_close_token, 3, {TEXTOID, INT4OID, INT4OID}},
    {"commits_stalled", sql_commits_stalled, 0, {0}},
};

/* One statement of a pipeline: prepares a statement (types given), runs a
 * prepared one (by name), or runs plain SQL (BEGIN, COMMIT, ROLLBACK). */
struct step {
    const char *name, *sql;
    int n;
    const char *const *values; /* text format; NULL entries are SQL NULL */
    const Oid *types;
};

static void set_err(struct store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(struct store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
    st->errors++;
    /* libpq messages end with a newline; the log adds its own. */
    size_t n = strlen(st->err);
    while (n > 0 && st->err[n - 1] == '\n')
        st->err[--n] = '\0';
}

enum store_status store_classify_sqlstate(const char *sqlstate)
{
    static const char *const transient[] = {
        "08",    /* connection exception (class) */
        "53",    /* insufficient resources: too many connections, disk full */
        "57014", /* query_canceled: statement_timeout */
        "57P01", /* admin_shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now: starting up or shutting down */
        "55P03", /* lock_not_available: lock_timeout */
        "40001", /* serialization_failure */
        "40P01", /* deadlock_detected */
        "25006", /* read_only_sql_transaction: a primary made read-only */
    };
    if (sqlstate == NULL)
        return STORE_UNAVAILABLE;
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (strncmp(sqlstate, transient[i], strlen(transient[i])) == 0)
            return STORE_UNAVAILABLE;
    return STORE_ERROR;
}

static const char *sqlstate(const PGresult *res)
{
    return res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
}

/* Classifies a failed step and records the detail. A broken connection is
 * never STORE_ERROR, whatever the SQLSTATE; store_ready() repairs it. For a
 * round trip that may commit a purchase, a failure the server did not report
 * itself (no SQLSTATE, or a connection exception) leaves its outcome
 * unknown: the COMMIT may have happened just before the connection broke. */
static enum store_status fail(struct store *st, const PGresult *res, const char *what, int commits)
{
    const char *state = sqlstate(res);
    snprintf(st->sqlstate, sizeof st->sqlstate, "%s", state != NULL ? state : "");
    set_err(st, "postgres %s: %s%s%s", what, state != NULL ? state : "", state != NULL ? " " : "",
            res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(st->conn));
    if (commits && (state == NULL || strncmp(state, "08", 2) == 0))
        return STORE_UNKNOWN;
    /* A primary made read-only under its sessions (pg_auto_failover's guard
     * while it fails over, default_transaction_read_only set by hand)
     * refuses every write on them: only a new session, which
     * target_session_attrs=read-write in DATABASE_URL sends to a server
     * that takes writes, can sell again. */
    if (state != NULL && strcmp(state, "25006") == 0)
        st->demoted = 1;
    if (PQstatus(st->conn) != CONNECTION_OK)
        return STORE_UNAVAILABLE;
    return store_classify_sqlstate(state);
}

static int is_error(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK && s != PGRES_PIPELINE_SYNC;
}

/* Waits until libpq has a result ready, or the deadline passes (-1). What
 * has arrived by then is still read, however late this looks: a worker that
 * was itself paused (SIGSTOP, a stalled VM) must not call an answer that is
 * waiting in its socket lost. */
static int wait_input(struct store *st, int64_t deadline)
{
    while (PQisBusy(st->conn)) {
        int64_t left = deadline - clock_ms();
        struct pollfd pfd = {.fd = PQsocket(st->conn), .events = POLLIN};
        int ready = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (ready < 0 && errno != EINTR)
            return -1;
        if (ready == 0 && left <= 0)
            return -1;
        if (ready > 0 && PQconsumeInput(st->conn) == 0)
            return 0; /* the connection broke: PQgetResult reports it */
    }
    return 0;
}

/* Reads one step's results (up to libpq's NULL), keeping the first in *res.
 * A statement has one result; an error after it is the session ending (a
 * termination notice behind a COMMIT's answer, say), and changes nothing of
 * what the statement did: the sync, or the next round trip, reports it.
 * -1 when the deadline passed. */
static int read_step(struct store *st, int64_t deadline, PGresult **res)
{
    PGresult *r;
    *res = NULL;
    for (;;) {
        if (wait_input(st, deadline) < 0)
            return -1;
        if ((r = PQgetResult(st->conn)) == NULL)
            return 0;
        int sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        if (*res == NULL) {
            *res = r;
        } else {
            PQclear(r);
        }
        if (sync)
            return 0; /* the end of a pipeline has no NULL after it */
    }
}

static void clear_all(PGresult **res, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

/* Whether the session is on the server recorded as unable to commit. */
static int on_suspect(const struct store *st)
{
    return st->conn != NULL && st->suspect_host[0] != '\0' &&
           strcmp(PQhost(st->conn), st->suspect_host) == 0 &&
           strcmp(PQport(st->conn), st->suspect_port) == 0;
}

/* The session's server cannot commit now: recorded, so that new sessions
 * try the other hosts first (hostlist.h), and the session ended, so that
 * the next call opens one. Logged once per server. */
static void cannot_commit(struct store *st)
{
    if (st->conn == NULL)
        return;
    if (!on_suspect(st)) {
        snprintf(st->suspect_host, sizeof st->suspect_host, "%s", PQhost(st->conn));
        snprintf(st->suspect_port, sizeof st->suspect_port, "%s", PQport(st->conn));
        log_warn("postgres: %s:%s cannot commit (%s); new sessions try the other hosts first",
                 st->suspect_host, st->suspect_port, st->err);
    }
    store_close(st);
}

/* A COMMIT can succeed with a warning, and then it is not a sale we may
 * acknowledge. The case: with synchronous replication, a COMMIT whose wait
 * for the standby was cancelled (pg_cancel_backend, the usual advice when
 * commits hang on a lost standby; statement_timeout is off by then) is
 * "committed locally, but might not have been replicated", and a failover
 * loses it. So its outcome is unknown: the key's replay, on whichever
 * server is the primary by then, tells. */
static enum store_status commit_warned(struct store *st)
{
    set_err(st, "postgres: the COMMIT was answered with a warning (see the log line before):"
                " committed here, maybe not on a standby; its outcome is unknown");
    cannot_commit(st);
    return STORE_UNKNOWN;
}

/* Sends steps as one pipeline (one round trip) and reads their results into
 * res[0..n). STORE_OK when every step succeeded; otherwise the first error,
 * classified, and res cleared.
 *
 * libpq has no client-side timeout for a query: statement_timeout is
 * enforced by the server, so a server that hangs (SIGSTOP, a stalled VM)
 * would hang the worker, with the product's lock held. So the answers are
 * awaited until statement_timeout plus STATEMENT_GRACE_MS; past that the
 * connection is dropped, and a round trip that may commit a purchase has an
 * unknown outcome, since the server may still run it. */
static enum store_status run(struct store *st, const struct step *steps, int n, PGresult **res,
                             int commits)
{
    int timeout = st->cfg->statement_timeout_ms + STATEMENT_GRACE_MS;
    int64_t deadline = clock_ms() + timeout;
    PGresult *sync = NULL;

    for (int i = 0; i < n; i++)
        res[i] = NULL;
    /* What a caller reads about this round trip's failure must be about
     * this one: a deadline or a send failure sets neither. */
    st->sqlstate[0] = '\0';
    st->failed_step = -1;
    st->warnings = 0;
    /* A session known to be broken runs nothing: whatever this round trip
     * was, a COMMIT included, it cannot have happened. */
    if (PQstatus(st->conn) != CONNECTION_OK) {
        set_err(st, "postgres: the connection was lost: %s", PQerrorMessage(st->conn));
        store_close(st);
        return STORE_UNAVAILABLE;
    }
    int sent = PQenterPipelineMode(st->conn);
    for (int i = 0; i < n && sent; i++) {
        const struct step *s = &steps[i];
        if (s->types != NULL)
            sent = PQsendPrepare(st->conn, s->name, s->sql, s->n, s->types);
        else if (s->name != NULL)
            sent = PQsendQueryPrepared(st->conn, s->name, s->n, s->values, NULL, NULL, 0);
        else
            sent = PQsendQueryParams(st->conn, s->sql, s->n, NULL, s->values, NULL, NULL, 0);
    }
#ifdef STOCK_FAULT_POINTS
    /* A COMMIT that reached the server and ran, its Sync not sent yet: the
     * moment a session can end between the COMMIT's answer and the Sync's. */
    if (commits && steps[0].sql != NULL && strcmp(steps[0].sql, "COMMIT") == 0 && sent &&
        PQflush(st->conn) == 0)
        FAULT_POINT("commit_unsynced");
#endif
    if (!sent || PQpipelineSync(st->conn) != 1) {
        /* Part of the pipeline may have reached the server; without its
         * Sync it cannot complete, but a round trip that commits is not
         * called definite on that reasoning alone. */
        enum store_status rc = fail(st, NULL, "send", commits);
        store_close(st);
        return rc == STORE_ERROR ? STORE_UNAVAILABLE : rc;
    }

    for (int i = 0; i <= n; i++) {
        if (read_step(st, deadline, i < n ? &res[i] : &sync) < 0) {
            clear_all(res, n);
            PQclear(sync);
            set_err(st, "postgres: no answer within %d ms; connection dropped", timeout);
            if (commits)
                cannot_commit(st);
            store_close(st);
            return commits ? STORE_UNKNOWN : STORE_UNAVAILABLE;
        }
    }
    PQclear(sync);

    enum store_status rc = STORE_OK;
    for (int i = 0; i < n && rc == STORE_OK; i++) {
        if (res[i] == NULL || is_error(res[i])) {
            rc = fail(st, res[i], steps[i].name != NULL ? steps[i].name : steps[i].sql, commits);
            st->failed_step = i;
        }
    }
    /* Every result is read; this fails only if the session broke after
     * them (a termination notice that arrived behind the Sync, say), and a
     * fresh session is the way back then. What was read stands: a COMMIT
     * whose success was read is a sale. Any other round trip leaves an open
     * transaction behind, lost with the session, so it failed. */
    if (PQexitPipelineMode(st->conn) != 1) {
        if (rc == STORE_OK && !commits)
            rc = fail(st, NULL, "pipeline", commits);
        else if (rc == STORE_OK)
            log_warn("postgres: session broke after its COMMIT was confirmed: %s",
                     PQerrorMessage(st->conn));
        store_close(st);
    }
    if (rc == STORE_OK && commits && st->warnings > 0)
        rc = commit_warned(st);
    else if (rc == STORE_OK && commits && on_suspect(st))
        st->suspect_host[0] = '\0'; /* it commits again */
    if (rc != STORE_OK)
        clear_all(res, n);
    return rc;
}

/* One prepared statement that returns rows: STORE_OK with *res (the caller
 * clears it), or STORE_NOT_FOUND when there are none. commits as run()'s:
 * whether the statement's own COMMIT may make a sale someone relies on. */
static enum store_status query(struct store *st, const char *name, int n, const char *const *values,
                               PGresult **res, int commits)
{
    const struct step step = {name, NULL, n, values, NULL};
    enum store_status rc = run(st, &step, 1, res, commits);
    if (rc == STORE_OK && PQntuples(*res) == 0) {
        PQclear(*res);
        *res = NULL;
        rc = STORE_NOT_FOUND;
    }
    return rc;
}

/* Prepares every statement, in one round trip. */
static int prepare_all(struct store *st)
{
    enum { N = sizeof statements / sizeof statements[0] };
    struct step steps[N];
    PGresult *res[N];
    for (size_t i = 0; i < N; i++) {
        const struct statement *s = &statements[i];
        steps[i] = (struct step){s->name, s->sql, s->nparams, NULL, s->types};
    }
    if (run(st, steps, N, res, 0) != STORE_OK)
        return -1;
    clear_all(res, N);
    st->prepared = 1;
    return 0;
}

/* Server notices (a shutdown warning, say) go to our log, not bare stderr,
 * and warnings are counted: run() reads the count of a COMMIT's round trip. */
static void notice_to_log(void *arg, const PGresult *res)
{
    struct store *st = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *message = PQresultErrorMessage(res);
    int len = (int)strcspn(message, "\n");
    if (severity != NULL && strcmp(severity, "WARNING") == 0) {
        st->warnings++;
        log_warn("postgres: %.*s", len, message);
    } else {
        log_info("postgres: %.*s", len, message);
    }
}

/* DATABASE_URL's hosts and ports with the server that could not commit
 * last (hostlist.h): 0, or -1 to connect as the URL says (none recorded,
 * one host, or hostaddr given, whose list would no longer pair). */
static int suspect_last(const struct store *st, char *hosts, char *ports, size_t cap)
{
    if (st->suspect_host[0] == '\0')
        return -1;
    PQconninfoOption *opts = PQconninfoParse(st->cfg->database_url, NULL);
    if (opts == NULL)
        return -1;
    const char *host = NULL, *port = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    int rc = -1;
    /* Without a port, every host has the default one: the suspect's. */
    if (host != NULL && (hostaddr == NULL || hostaddr[0] == '\0'))
        rc = hostlist_last(host, port != NULL && port[0] != '\0' ? port : st->suspect_port,
                           st->suspect_host, st->suspect_port, hosts, ports, cap);
    PQconninfoFree(opts);
    return rc;
}

static void connect_db(struct store *st)
{
    /* Timeouts travel as connection options, so every reconnect (PQreset)
     * sends them again; a SET would be lost with the session. They override
     * any options given in DATABASE_URL.
     *
     * A worker sends its COMMIT as soon as it has read the purchase's
     * answer, and gives up on any answer after a round trip's deadline
     * (run(): statement_timeout + STATEMENT_GRACE_MS). A transaction left
     * idle that long belongs to a worker that was paused or cut off and has
     * given up on it, or is about to: the server ends it, and a COMMIT that
     * comes after that fails, a definite answer. It must not wait for the
     * lock's TTL: while open it holds its product's row lock, so one host
     * whose link to PostgreSQL stalls between its purchase and its COMMIT
     * would block that product on every host for the whole TTL.
     *
     * Every statement is prepared once and names one product, key or
     * token (or a batch's arrays), so one generic plan fits every run:
     * left to choose, PostgreSQL planned each batch's statements anew at
     * every bind (0.3-0.4 ms each, measured: a tenth of a batch). */
    char options[200];
    snprintf(options, sizeof options,
             "-c statement_timeout=%d -c lock_timeout=%d -c idle_in_transaction_session_timeout=%d"
             " -c plan_cache_mode=force_generic_plan",
             st->cfg->statement_timeout_ms, st->cfg->statement_timeout_ms / 2,
             st->cfg->statement_timeout_ms + STATEMENT_GRACE_MS);
    char hosts[1024], ports[1024];
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "options", NULL, NULL,
                          NULL};
    const char *values[] = {st->cfg->database_url, "2", "stock-fcgi", options, NULL, NULL, NULL};
    if (suspect_last(st, hosts, ports, sizeof hosts) == 0) {
        /* Later keywords override the URL's. */
        keys[4] = "host";
        values[4] = hosts;
        keys[5] = "port";
        values[5] = ports;
    }
    st->conn = PQconnectdbParams(keys, values, 1);
    if (st->conn != NULL)
        PQsetNoticeReceiver(st->conn, notice_to_log, st);
}

/* Reads what an idle connection received: nothing, unless the server spoke
 * first, typically a shutdown notice followed by end-of-file. It costs no
 * round trip and finds a server that has gone (restart,
 * pg_terminate_backend) before a statement is sent into a dead socket. The
 * notice and the end-of-file may take two reads. Returns 1 if the
 * connection is usable, with its statements prepared and no transaction. */
static int usable(struct store *st)
{
    if (st->conn == NULL)
        return 0;
    for (int i = 0; i < 8 && PQstatus(st->conn) == CONNECTION_OK; i++) {
        struct pollfd pfd = {.fd = PQsocket(st->conn), .events = POLLIN};
        if (poll(&pfd, 1, 0) <= 0)
            break;
        if (PQconsumeInput(st->conn) == 0)
            log_info("postgres connection lost: %s", PQerrorMessage(st->conn));
    }
    if (PQstatus(st->conn) != CONNECTION_OK) {
        set_err(st, "postgres connection lost: %s", PQerrorMessage(st->conn));
        return 0;
    }
    if (st->demoted) {
        set_err(st, "postgres: the server refused a write as read-only; opening a new session");
        store_close(st);
        return 0;
    }
    if (PQtransactionStatus(st->conn) != PQTRANS_IDLE) {
        /* Cannot happen unless a caller forgot its commit or rollback; a
         * fresh session is the safe way back. */
        log_error("postgres: a transaction was left open; dropping the connection");
        store_close(st);
        return 0;
    }
    return st->prepared;
}

enum store_status store_ready(struct store *st)
{
    if (usable(st))
        return STORE_OK;
    /* A read-only server's session is replaced, not repaired: PQreset would
     * keep the mark of a server that may take writes again by now. */
    if (st->demoted || st->suspect_host[0] != '\0')
        store_close(st); /* and a new session, in a new order */
    if (st->conn == NULL)
        connect_db(st);
    else if (PQstatus(st->conn) != CONNECTION_OK)
        PQreset(st->conn);
    if (st->conn == NULL) {
        set_err(st, "postgres: out of memory");
        return STORE_UNAVAILABLE;
    }
    if (PQstatus(st->conn) != CONNECTION_OK) {
        set_err(st, "postgres connect: %s", PQerrorMessage(st->conn));
        return STORE_UNAVAILABLE;
    }
    if (st->suspect_host[0] != '\0' && !on_suspect(st))
        log_info("postgres: new session on %s:%s, not on %s:%s, which could not commit",
                 PQhost(st->conn), PQport(st->conn), st->suspect_host, st->suspect_port);
    if (prepare_all(st) < 0) {
        /* Start the next attempt from a fresh session: some statements may
         * exist already, and preparing them again would fail. */
        store_close(st);
        return STORE_UNAVAILABLE;
    }
    st->connects++;
    const char *db = PQdb(st->conn), *host = PQhost(st->conn);
    log_info("postgres connected: database %s on %s", db ? db : "?", host ? host : "?");
    return STORE_OK;
}

int store_open(struct store *st, const struct config *cfg)
{
    memset(st, 0, sizeof *st);
    st->cfg = cfg;
    return store_ready(st) == STORE_OK ? 0 : -1;
}

void store_close(struct store *st)
{
    PQfinish(st->conn); /* accepts NULL */
    st->conn = NULL;
    st->prepared = 0;
    st->demoted = 0;
    st->batch = NULL;
}

static int64_t get_int(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/* Ends the open transaction: STORE_OK once PostgreSQL confirmed it. A
 * COMMIT of a transaction that had failed answers "ROLLBACK", not an error:
 * that is a failure too. */
static enum store_status end_tx(struct store *st, const char *command)
{
    const struct step step = {NULL, command, 0, NULL, NULL};
    PGresult *res;
    enum store_status rc = run(st, &step, 1, &res, strcmp(command, "COMMIT") == 0);
    if (rc == STORE_OK && strcmp(PQcmdStatus(res), command) != 0) {
        set_err(st, "postgres %s: answered %s", command, PQcmdStatus(res));
        rc = STORE_ERROR;
    }
    PQclear(res);
    return rc;
}

void store_rollback(struct store *st)
{
    st->batch = NULL;
    if (st->conn == NULL)
        return;
    /* A broken connection has nothing to roll back on this side, and trying
     * would only replace the error that explains the break. */
    if (PQstatus(st->conn) != CONNECTION_OK) {
        store_close(st);
        return;
    }
    if (PQtransactionStatus(st->conn) != PQTRANS_IDLE && end_tx(st, "ROLLBACK") != STORE_OK)
        store_close(st); /* the server rolls back a transaction whose session ends */
}

/* Records a refused purchase's outcome on its claimed key, and commits. */
static enum store_status record_refusal(struct store *st, const struct purchase *p,
                                        const struct outcome *out)
{
    char status[8], available[24];
    snprintf(status, sizeof status, "%d", out->status);
    snprintf(available, sizeof available, "%" PRId64, out->available);
    const char *const values[] = {p->key, status, out->status == 409 ? available : NULL};
    const struct step steps[] = {{"key_refused", NULL, 3, values, NULL},
                                 {NULL, "COMMIT", 0, NULL, NULL}};
    PGresult *res[2];
    enum store_status rc = run(st, steps, 2, res, 0);
    clear_all(res, 2);
    return rc;
}

/* The purchase matched no row: find out why, in the same transaction. */
static enum store_status refused(struct store *st, const struct purchase *p, const char *id,
                                 struct outcome *out)
{
    const char *const values[] = {id};
    PGresult *res;
    enum store_status rc = query(st, "stock", 1, values, &res, 0);
    if (rc == STORE_NOT_FOUND) {
        out->status = 404;
    } else if (rc == STORE_OK) {
        out->available = get_int(res, 0);
        out->fence = get_int(res, 1);
        out->status = 409;
        PQclear(res);
        if (out->fence >= p->fence) {
            store_rollback(st);
            return STORE_FENCED;
        }
    } else {
        store_rollback(st);
        return rc;
    }
    if (p->key == NULL) {
        store_rollback(st); /* nothing was written */
    } else if ((rc = record_refusal(st, p, out)) != STORE_OK) {
        store_rollback(st);
        return rc;
    }
    return out->status == 404 ? STORE_NOT_FOUND : STORE_INSUFFICIENT;
}

/* Whether the last round trip failed on lock_timeout (55P03): a statement
 * waited for a lock that another transaction held. Nothing is wrong with
 * PostgreSQL or with this host then. */
static int lock_timed_out(const struct store *st)
{
    return strcmp(st->sqlstate, "55P03") == 0;
}

/* What a failed purchase pipeline ran into, read before the rollback
 * replaces st->sqlstate. Only a failure of the claim is about the key: a
 * used key (unique violation), or one whose first request still holds it
 * (lock_timeout). A lock_timeout of the purchase statement is the product's
 * row, held by another transaction (another host's, stalled before its
 * COMMIT, say): the product is busy, not the service unavailable. */
static enum store_status buy_failed(const struct store *st, enum store_status rc, int claim_step,
                                    int buy_step)
{
    if (claim_step >= 0 && st->failed_step == claim_step && strcmp(st->sqlstate, "23505") == 0)
        return STORE_KEY_EXISTS;
    if (claim_step >= 0 && st->failed_step == claim_step && lock_timed_out(st))
        return STORE_KEY_BUSY;
    if (st->failed_step == buy_step && lock_timed_out(st))
        return STORE_BUSY;
    return rc;
}

/* The product's row stayed locked past lock_timeout (STORE_BUSY), and
 * nothing is left open. Usually another transaction, stalled before its
 * COMMIT (another host's), holds it: the product is busy, this server is
 * fine (429). But when COMMITs wait for a synchronous standby that is gone
 * (a primary cut off from it), the row is held by a COMMIT that cannot end,
 * and the next one would be too: this server cannot sell, and the answer
 * must say so (503, which an edge takes elsewhere), not "busy". One round
 * trip, on this path only. */
static enum store_status row_busy(struct store *st)
{
    PGresult *res;
    char busy[sizeof st->err];
    memcpy(busy, st->err, sizeof busy);
    enum store_status rc = query(st, "commits_stalled", 0, NULL, &res, 0);
    if (rc != STORE_OK)
        return rc; /* this server fails more than one row */
    int stalled = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!stalled) {
        memcpy(st->err, busy, sizeof busy);
        return STORE_BUSY;
    }
    set_err(st, "postgres: COMMITs wait for a synchronous standby past lock_timeout, and hold "
                "the product's row: this server cannot sell now");
    cannot_commit(st);
    return STORE_UNAVAILABLE;
}

/* A PostgreSQL array literal, in text format, built in a buffer with room
 * for every element at its longest (see array_open). */
struct array {
    char *buf;
    size_t len, cap;
};

/* Room for n elements of up to width characters, each quoted and escaped. */
static int array_open(struct array *a, int n, size_t width)
{
    a->cap = 3 + (size_t)n * (2 * width + 3);
    a->len = 1;
    a->buf = malloc(a->cap);
    if (a->buf == NULL)
        return -1;
    memcpy(a->buf, "{", 2);
    return 0;
}

/* Appends value, or NULL. Quoted, with " and \ escaped: a key may hold
 * anything printable. */
static void array_add(struct array *a, const char *value)
{
    if (a->len > 1)
        a->buf[a->len++] = ',';
    if (value == NULL) {
        memcpy(a->buf + a->len, "NULL", 4);
        a->len += 4;
    } else {
        a->buf[a->len++] = '"';
        for (const char *c = value; *c != '\0'; c++) {
            if (*c == '"' || *c == '\\')
                a->buf[a->len++] = '\\';
            a->buf[a->len++] = *c;
        }
        a->buf[a->len++] = '"';
    }
    a->buf[a->len] = '\0';
}

static void array_add_int(struct array *a, int64_t v, int null)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v);
    array_add(a, null ? NULL : text);
}

static const char *array_close(struct array *a)
{
    a->buf[a->len++] = '}';
    a->buf[a->len] = '\0';
    return a->buf;
}

static int cmp_id(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Marks the items whose key the batch claimed: the first item with each
 * key returned (a key twice in one batch is claimed once: the second
 * purchase answers from the first's outcome). */
static void mark_claimed(struct combine_batch *b, const PGresult *claims)
{
    for (int i = 0; i < b->n; i++)
        b->items[i].claimed = b->items[i].key[0] == '\0';
    for (int r = 0; claims != NULL && r < PQntuples(claims); r++)
        for (int i = 0; i < b->n; i++)
            if (!b->items[i].claimed && strcmp(b->items[i].key, PQgetvalue(claims, r, 0)) == 0) {
                b->items[i].claimed = 1;
                break;
            }
}

/* Reads the first round trip of a batch and allocates it; the transaction
 * stays open on STORE_OK. */
static enum store_status batch_allocate(struct store *st, struct combine_batch *b, PGresult *claims,
                                        PGresult *row, PGresult *ids, struct outcome *out)
{
    int64_t drawn[COMBINE_BATCH_MAX];
    int found = PQntuples(row) > 0, n = PQntuples(ids);
    if (found && get_int(row, 1) >= b->fence) {
        out->fence = get_int(row, 1);
        store_rollback(st);
        return STORE_FENCED;
    }
    if (n != b->n) {
        set_err(st, "postgres draw_ids: %d ids for %d purchases", n, b->n);
        store_rollback(st);
        return STORE_ERROR;
    }
    for (int i = 0; i < n; i++)
        drawn[i] = strtoll(PQgetvalue(ids, i, 0), NULL, 10);
    qsort(drawn, (size_t)n, sizeof drawn[0], cmp_id);
    mark_claimed(b, claims);
    combine_allocate(b, found, found ? get_int(row, 0) : 0, drawn);
    *out = b->items[0].out;
    st->batch = b;
    return STORE_OK;
}

/* The batch's first round trip (BEGIN, the claim, the row, the ids), its
 * results in res[0..*nsteps); the claim by claim (a prepared statement) or,
 * when NULL, one key at a time (sql_claim_each); claim_values NULL when the
 * batch has no key. The transaction stays open on STORE_OK. */
static enum store_status batch_trip(struct store *st, const char *claim,
                                    const char *const *claim_values, const char *const *row,
                                    const char *const *count, PGresult **res, int *nsteps)
{
    const struct step claim_step = claim != NULL
                                       ? (struct step){claim, NULL, 3, claim_values, NULL}
                                       : (struct step){NULL, sql_claim_each, 3, claim_values, NULL};
    const struct step steps[] = {{NULL, "BEGIN", 0, NULL, NULL},
                                 {NULL, sql_key_wait, 0, NULL, NULL},
                                 claim_step,
                                 {NULL, sql_lock_wait, 0, NULL, NULL},
                                 {"lock_stock", NULL, 1, row, NULL},
                                 {"draw_ids", NULL, 1, count, NULL}};
    const struct step unkeyed[] = {steps[0], steps[4], steps[5]};
    int keyed = claim_values != NULL;
    *nsteps = keyed ? 6 : 3;
    enum store_status rc = run(st, keyed ? steps : unkeyed, *nsteps, res, 0);
    if (rc != STORE_OK) {
        rc = buy_failed(st, rc, keyed ? 2 : -1, *nsteps - 2);
        store_rollback(st);
    }
    return rc;
}

/* store_buy for a batch (store.h): one round trip, then the allocation. */
static enum store_status batch_begin(struct store *st, const struct purchase *p,
                                     struct outcome *out)
{
    struct combine_batch *b = p->batch;
    char id[16], n[16];
    struct array keys = {0}, amounts = {0};
    b->fence = p->fence;
    snprintf(id, sizeof id, "%" PRId32, b->product);
    snprintf(n, sizeof n, "%d", b->n);
    if (array_open(&keys, b->n, 255) < 0 || array_open(&amounts, b->n, 11) < 0) {
        free(keys.buf);
        set_err(st, "postgres: out of memory");
        return STORE_ERROR;
    }
    for (int i = 0; i < b->n; i++)
        if (b->items[i].key[0] != '\0') {
            array_add(&keys, b->items[i].key);
            array_add_int(&amounts, b->items[i].amount, 0);
        }
    int keyed = keys.len > 1;
    const char *const claim[] = {array_close(&keys), id, array_close(&amounts)};
    const char *const row[] = {id}, *const count[] = {n};
    PGresult *res[6];
    int nsteps;
    enum store_status rc =
        batch_trip(st, "claim_batch", keyed ? claim : NULL, row, count, res, &nsteps);
    if (rc == STORE_KEY_BUSY) {
        log_info("product %" PRId32 ": a key of the batch is in flight elsewhere; claiming its "
                 "keys one by one",
                 b->product);
        rc = batch_trip(st, NULL, claim, row, count, res, &nsteps);
        /* Without claim_keys (an older schema) the batch cannot leave the
         * key out: the holder's purchase goes alone. */
        if (rc == STORE_KEY_BUSY || rc == STORE_ERROR)
            rc = STORE_ALONE;
    }
    free(keys.buf);
    free(amounts.buf);
    if (rc == STORE_BUSY)
        return row_busy(st);
    if (rc != STORE_OK)
        return rc;
    rc = batch_allocate(st, b, keyed ? res[2] : NULL, res[nsteps - 2], res[nsteps - 1], out);
    clear_all(res, nsteps);
    return rc;
}

/* The batch's outcomes as the arrays of sql_write_batch ($5..$11). Items
 * whose key was used before are left out: nothing of theirs is written. */
static int batch_arrays(const struct combine_batch *b, struct array a[7])
{
    static const size_t width[7] = {32, 255, 11, 6, 20, 20, 20};
    for (int k = 0; k < 7; k++)
        if (array_open(&a[k], b->n, width[k]) < 0)
            return -1;
    for (int i = 0; i < b->n; i++) {
        const struct combine_item *it = &b->items[i];
        const struct outcome *o = &it->out;
        if (!it->claimed)
            continue;
        array_add(&a[0], it->token[0] ? it->token : NULL);
        array_add(&a[1], it->key[0] ? it->key : NULL);
        array_add_int(&a[2], it->amount, 0);
        array_add_int(&a[3], o->status, 0);
        array_add_int(&a[4], o->order.id, o->status != 200);
        array_add_int(&a[5], o->order.remaining, o->status != 200);
        array_add_int(&a[6], o->available, o->status != 409);
    }
    for (int k = 0; k < 7; k++)
        array_close(&a[k]);
    return 0;
}

/* store_commit for a batch: its writes and the COMMIT, one round trip. */
static enum store_status batch_commit(struct store *st, const struct combine_batch *b)
{
    char id[16], fence[24], before[24], sold[24];
    struct array a[7] = {{0}};
    enum store_status rc = STORE_ERROR;
    snprintf(id, sizeof id, "%" PRId32, b->product);
    snprintf(fence, sizeof fence, "%" PRId64, b->fence);
    snprintf(before, sizeof before, "%" PRId64, b->stock_before);
    snprintf(sold, sizeof sold, "%" PRId64, b->sold);
    if (batch_arrays(b, a) < 0) {
        set_err(st, "postgres: out of memory");
    } else {
        const char *const values[] = {id,       fence,    before,   sold,     a[0].buf, a[1].buf,
                                      a[2].buf, a[3].buf, a[4].buf, a[5].buf, a[6].buf};
        const struct step steps[] = {{"write_batch", NULL, 11, values, NULL},
                                     {NULL, "COMMIT", 0, NULL, NULL}};
        PGresult *res[2];
        rc = run(st, steps, 2, res, 1);
        if (rc == STORE_OK && strcmp(PQcmdStatus(res[1]), "COMMIT") != 0) {
            set_err(st, "postgres COMMIT: answered %s", PQcmdStatus(res[1]));
            rc = STORE_ERROR;
        }
        /* A token its buyer closed since the first round trip (23505), or
         * a moved row (23502, which the row lock rules out): nothing
         * committed, and the holder's own purchase may still be made. */
        if (rc != STORE_OK && st->failed_step == 0 &&
            (strcmp(st->sqlstate, "23505") == 0 || strcmp(st->sqlstate, "23502") == 0))
            rc = STORE_ALONE;
        clear_all(res, 2);
    }
    for (int k = 0; k < 7; k++)
        free(a[k].buf);
    return rc;
}

enum store_status store_commit(struct store *st)
{
    const struct combine_batch *b = st->batch;
    st->batch = NULL;
    enum store_status rc = b != NULL ? batch_commit(st, b) : end_tx(st, "COMMIT");
    if (rc != STORE_OK)
        store_rollback(st);
    return rc;
}

enum store_status store_buy(struct store *st, const struct purchase *p, struct outcome *out)
{
    if (p->batch != NULL) {
        memset(out, 0, sizeof *out);
        return usable(st) ? batch_begin(st, p, out) : STORE_UNAVAILABLE;
    }
    char id[16], amount[16], fence[24];
    memset(out, 0, sizeof *out);
    if (!usable(st))
        return STORE_UNAVAILABLE;
    snprintf(id, sizeof id, "%" PRId32, p->product);
    snprintf(amount, sizeof amount, "%" PRId32, p->amount);
    snprintf(fence, sizeof fence, "%" PRId64, p->fence);
    const char *const claim[] = {p->key, id, amount};
    const char *const buy[] = {id, amount, fence, p->key};
    const struct step steps[] = {{NULL, "BEGIN", 0, NULL, NULL},
                                 {"claim", NULL, 3, claim, NULL},
                                 {"buy", NULL, 4, buy, NULL}};
    /* Without a key there is nothing to claim: the claim step is skipped. */
    const struct step unkeyed[] = {steps[0], steps[2]};
    int keyed = p->key != NULL, n = keyed ? 3 : 2;
    PGresult *res[3];

    enum store_status rc = run(st, keyed ? steps : unkeyed, n, res, 0);
    if (rc != STORE_OK) {
        rc = buy_failed(st, rc, keyed ? 1 : -1, n - 1);
        store_rollback(st);
        return rc == STORE_BUSY ? row_busy(st) : rc;
    }
    PGresult *rows = res[n - 1];
    if (PQntuples(rows) == 0) {
        clear_all(res, n);
        return refused(st, p, id, out);
    }
    out->status = 200;
    out->order.id = get_int(rows, 0);
    out->order.remaining = get_int(rows, 1);
    out->order.product_id = p->product;
    out->order.amount = p->amount;
    clear_all(res, n);
    return STORE_OK;
}

enum store_status store_new_epoch(struct store *st, int32_t product, int64_t *fence)
{
    char id[16];
    snprintf(id, sizeof id, "%" PRId32, product);
    const char *const values[] = {id};
    PGresult *res;
    if (!usable(st))
        return STORE_UNAVAILABLE;
    enum store_status rc = query(st, "new_epoch", 1, values, &res, 0);
    if (rc == STORE_OK) {
        *fence = get_int(res, 0);
        PQclear(res);
    }
    /* Its one statement updates the product's row, as a purchase does. */
    return rc != STORE_OK && lock_timed_out(st) ? row_busy(st) : rc;
}

enum store_status store_key(struct store *st, const char *key, int32_t *product, int32_t *amount,
                            struct outcome *out)
{
    const char *const values[] = {key};
    PGresult *res;
    enum store_status rc = store_ready(st);
    if (rc != STORE_OK)
        return rc;
    memset(out, 0, sizeof *out);
    /* Its own COMMIT may wait for the standby (sql_key), and a warning there
     * leaves the outcome unknown: a round trip that commits. */
    if ((rc = query(st, "key", 1, values, &res, 1)) != STORE_OK)
        return rc;
    *product = (int32_t)get_int(res, 0);
    *amount = (int32_t)get_int(res, 1);
    out->status = (int)get_int(res, 2);
    out->order.id = get_int(res, 3);
    out->order.remaining = get_int(res, 4);
    out->order.product_id = *product;
    out->order.amount = *amount;
    out->available = get_int(res, 5);
    PQclear(res);
    return STORE_OK;
}

enum store_status store_product(struct store *st, int32_t id, struct product *out)
{
    char text[16];
    snprintf(text, sizeof text, "%" PRId32, id);
    const char *const values[] = {text};
    PGresult *res;
    enum store_status rc = store_ready(st);
    if (rc != STORE_OK || (rc = query(st, "product", 1, values, &res, 0)) != STORE_OK)
        return rc;
    out->id = (int32_t)get_int(res, 0);
    out->amount = get_int(res, 2);
    out->name = NULL;
    if (!PQgetisnull(res, 0, 1)) {
        out->name = strdup(PQgetvalue(res, 0, 1));
        if (out->name == NULL) {
            set_err(st, "postgres: out of memory");
            rc = STORE_ERROR;
        }
    }
    PQclear(res);
    return rc;
}

enum store_status store_ping(struct store *st)
{
    PGresult *res;
    enum store_status rc = store_ready(st);
    if (rc == STORE_OK && (rc = query(st, "ping", 0, NULL, &res, 0)) == STORE_OK) {
        if (strcmp(PQgetvalue(res, 0, 0), "off") != 0) {
            set_err(st, "postgres: the server is read-only (a failover under way?)");
            rc = STORE_UNAVAILABLE;
        }
        PQclear(res);
    }
    return rc;
}

enum store_status store_close_token(struct store *st, const char *token, int32_t product,
                                    int32_t amount, struct outcome *out)
{
    char id[16], units[16];
    snprintf(id, sizeof id, "%" PRId32, product);
    snprintf(units, sizeof units, "%" PRId32, amount);
    const char *const values[] = {token, id, units};
    PGresult *res;
    enum store_status rc = store_ready(st);
    if (rc != STORE_OK)
        return rc;
    memset(out, 0, sizeof *out);
    if ((rc = query(st, "close_token", 3, values, &res, 1)) != STORE_OK)
        return rc != STORE_UNKNOWN && lock_timed_out(st) ? STORE_BUSY : rc;
    out->status = (int)get_int(res, 0);
    out->order.id = get_int(res, 1);
    out->order.remaining = get_int(res, 2);
    out->order.product_id = product;
    out->order.amount = amount;
    out->available = get_int(res, 3);
    PQclear(res);
    return STORE_OK;
}
