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
#include "config.h"
#include "log.h"
#include "store.h"

#define INT4OID 23 /* pg_type.h, which client code should not include */

/* The purchase: one statement, so one transaction and one round trip. The
 * UPDATE is the guard: PostgreSQL re-evaluates "amount >= $2" on the latest
 * row version after waiting for any concurrent buyer (READ COMMITTED), so
 * two buyers can never both take the last unit. The order is inserted only
 * if the UPDATE matched, from the same snapshot, in the same commit. */
static const char sql_buy[] = "WITH sold AS ("
                              "  UPDATE products SET amount = amount - $2"
                              "   WHERE id = $1 AND amount >= $2"
                              "  RETURNING amount"
                              "), placed AS ("
                              "  INSERT INTO orders (product_id, amount)"
                              "  SELECT $1, $2 FROM sold"
                              "  RETURNING id"
                              ")"
                              "SELECT placed.id, sold.amount FROM placed, sold";

/* After a refused purchase: a fresh statement (a new snapshot) tells a
 * missing product from a short one, and reports the stock it saw. */
static const char sql_stock[] = "SELECT amount FROM products WHERE id = $1";

static const char sql_product[] = "SELECT id, name, amount FROM products WHERE id = $1";

static const char sql_ping[] = "SELECT 1";

struct statement {
    const char *name, *sql;
    int nparams;
};

static const struct statement statements[] = {
    {"buy", sql_buy, 2},
    {"stock", sql_stock, 1},
    {"product", sql_product, 1},
    {"ping", sql_ping, 0},
};

static void set_err(struct store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(struct store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
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
    };
    if (sqlstate == NULL)
        return STORE_UNAVAILABLE;
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (strncmp(sqlstate, transient[i], strlen(transient[i])) == 0)
            return STORE_UNAVAILABLE;
    return STORE_ERROR;
}

/* Classifies a failed result and records the detail. A broken connection is
 * never STORE_ERROR, whatever the SQLSTATE; store_ready() repairs it. For a
 * statement that writes, a failure the server did not report itself (no
 * SQLSTATE, or a connection exception) leaves its outcome unknown: the
 * COMMIT may have happened just before the connection broke. */
static enum store_status fail(struct store *st, const PGresult *res, const char *what, int writes)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    set_err(st, "postgres %s: %s%s%s", what, state != NULL ? state : "", state != NULL ? " " : "",
            res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(st->conn));
    if (writes && (state == NULL || strncmp(state, "08", 2) == 0))
        return STORE_UNKNOWN;
    if (PQstatus(st->conn) != CONNECTION_OK)
        return STORE_UNAVAILABLE;
    return store_classify_sqlstate(state);
}

static int is_error(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK;
}

/* Waits until libpq has a result ready, or the deadline passes (-1). */
static int wait_input(struct store *st, int64_t deadline)
{
    while (PQisBusy(st->conn)) {
        int64_t left = deadline - clock_ms();
        struct pollfd pfd = {.fd = PQsocket(st->conn), .events = POLLIN};
        if (left <= 0 || (poll(&pfd, 1, (int)left) < 0 && errno != EINTR))
            return -1;
        if (PQconsumeInput(st->conn) == 0)
            return 0; /* the connection broke: PQgetResult reports it */
    }
    return 0;
}

/* Collects the outcome of the statement just sent, into *res (NULL if there
 * was none).
 *
 * libpq has no client-side timeout for a query: statement_timeout is
 * enforced by the server, so a server that hangs (SIGSTOP, a stalled VM)
 * would hang the worker, with the product's lock held. So the answer is
 * awaited until statement_timeout plus STATEMENT_GRACE_MS; past that the
 * connection is dropped, and a purchase has an unknown outcome, since the
 * server may still run it.
 *
 * Every result is read, up to the end: an implicit transaction commits at
 * Sync, after the rows have arrived, so a failed COMMIT (a deferred
 * constraint, a serialization failure) is a second, error result. An error
 * anywhere is the outcome; rows alone are not proof of a commit. */
static enum store_status await_result(struct store *st, const char *what, int writes,
                                      PGresult **res)
{
    int timeout = st->cfg->statement_timeout_ms + STATEMENT_GRACE_MS;
    int64_t deadline = clock_ms() + timeout;
    PGresult *r;
    *res = NULL;
    for (;;) {
        if (wait_input(st, deadline) < 0) {
            PQclear(*res);
            *res = NULL;
            set_err(st, "postgres %s: no answer within %d ms; connection dropped", what, timeout);
            store_close(st);
            return writes ? STORE_UNKNOWN : STORE_UNAVAILABLE;
        }
        if ((r = PQgetResult(st->conn)) == NULL)
            return STORE_OK;
        if (*res == NULL || (is_error(r) && !is_error(*res))) {
            PQclear(*res);
            *res = r;
        } else {
            PQclear(r);
        }
    }
}

/* Checks a result against the status it should have; on a mismatch records
 * why, clears it and classifies the failure. */
static enum store_status expect(struct store *st, PGresult **res, ExecStatusType want,
                                const char *what, int writes)
{
    if (*res != NULL && PQresultStatus(*res) == want)
        return STORE_OK;
    enum store_status rc = fail(st, *res, what, writes);
    PQclear(*res);
    *res = NULL;
    return rc;
}

static int prepare_all(struct store *st)
{
    static const Oid types[] = {INT4OID, INT4OID};
    for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        const struct statement *s = &statements[i];
        PGresult *res;
        if (!PQsendPrepare(st->conn, s->name, s->sql, s->nparams, types)) {
            fail(st, NULL, "prepare", 0);
            return -1;
        }
        if (await_result(st, "prepare", 0, &res) != STORE_OK ||
            expect(st, &res, PGRES_COMMAND_OK, "prepare", 0) != STORE_OK)
            return -1;
        PQclear(res);
    }
    st->prepared = 1;
    return 0;
}

/* Server notices (a shutdown warning, say) go to our log, not bare stderr. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    log_info("postgres: %.*s", (int)strcspn(message, "\n"), message);
}

static void connect_db(struct store *st)
{
    /* Timeouts travel as connection options, so every reconnect (PQreset)
     * sends them again; a SET would be lost with the session. They override
     * any options given in DATABASE_URL. */
    char options[160];
    snprintf(options, sizeof options,
             "-c statement_timeout=%d -c lock_timeout=%d -c idle_in_transaction_session_timeout=%d",
             st->cfg->statement_timeout_ms, st->cfg->statement_timeout_ms / 2,
             st->cfg->statement_timeout_ms * 5);
    const char *const keys[] = {"dbname", "connect_timeout", "application_name", "options", NULL};
    const char *const values[] = {st->cfg->database_url, "2", "stock-fcgi", options, NULL};
    st->conn = PQconnectdbParams(keys, values, 1);
    if (st->conn != NULL)
        PQsetNoticeProcessor(st->conn, notice_to_log, NULL);
}

/* Reads what an idle connection received: nothing, unless the server spoke
 * first, typically a shutdown notice followed by end-of-file. It costs no
 * round trip and finds a server that has gone (restart,
 * pg_terminate_backend) before a statement is sent into a dead socket. The
 * notice and the end-of-file may take two reads. Returns 1 if the
 * connection is usable, with its statements prepared. */
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
    return st->prepared;
}

enum store_status store_ready(struct store *st)
{
    if (usable(st))
        return STORE_OK;
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
    if (prepare_all(st) < 0) {
        /* Start the next attempt from a fresh session: some statements may
         * exist already, and preparing them again would fail. */
        store_close(st);
        return STORE_UNAVAILABLE;
    }
    log_info("postgres connected");
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
}

/* Runs a prepared statement with n <= 2 int4 parameters in text format.
 * STORE_OK with *res set to its rows (the caller clears it), STORE_NOT_FOUND
 * when there are none. writes: see fail(). With reconnect 0 a connection
 * that is not usable fails at once, for statements run under the lock. */
static enum store_status query_rows(struct store *st, const char *name, int writes, int reconnect,
                                    int n, const int32_t *args, PGresult **res)
{
    *res = NULL;
    if (reconnect) {
        enum store_status rc = store_ready(st);
        if (rc != STORE_OK)
            return rc;
    } else if (!usable(st)) {
        return STORE_UNAVAILABLE;
    }
    char text[2][16];
    const char *values[2];
    for (int i = 0; i < n; i++) {
        snprintf(text[i], sizeof text[i], "%" PRId32, args[i]);
        values[i] = text[i];
    }
    /* A send that fails sent nothing the server could run. */
    if (!PQsendQueryPrepared(st->conn, name, n, values, NULL, NULL, 0))
        return fail(st, NULL, name, 0);
    enum store_status rc = await_result(st, name, writes, res);
    if (rc == STORE_OK)
        rc = expect(st, res, PGRES_TUPLES_OK, name, writes);
    if (rc == STORE_OK && PQntuples(*res) == 0) {
        PQclear(*res);
        *res = NULL;
        return STORE_NOT_FOUND;
    }
    return rc;
}

static int64_t get_int(const PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

enum store_status store_buy(struct store *st, int32_t product, int32_t amount, struct order *out,
                            int64_t *available)
{
    const int32_t args[2] = {product, amount};
    PGresult *res;
    enum store_status rc = query_rows(st, "buy", 1, 0, 2, args, &res);
    if (rc == STORE_OK) {
        out->id = get_int(res, 0, 0);
        out->remaining = get_int(res, 0, 1);
        out->product_id = product;
        out->amount = amount;
        PQclear(res);
        return STORE_OK;
    }
    if (rc != STORE_NOT_FOUND)
        return rc;

    /* Nothing was bought. Whether the product is missing or short only
     * changes the answer, never the stock, so a race here cannot matter. */
    rc = query_rows(st, "stock", 0, 0, 1, args, &res);
    if (rc != STORE_OK)
        return rc;
    *available = get_int(res, 0, 0);
    PQclear(res);
    return STORE_INSUFFICIENT;
}

enum store_status store_product(struct store *st, int32_t id, struct product *out)
{
    PGresult *res;
    enum store_status rc = query_rows(st, "product", 0, 1, 1, &id, &res);
    if (rc != STORE_OK)
        return rc;
    out->id = (int32_t)get_int(res, 0, 0);
    out->amount = get_int(res, 0, 2);
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
    enum store_status rc = query_rows(st, "ping", 0, 1, 0, NULL, &res);
    PQclear(res);
    return rc;
}
