/* pg.c -- see pg.h. */
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
#include "fault.h"
#include "hostlist.h"
#include "log.h"
#include "pg.h"

void pg_set_err(struct pg_session *pg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pg->err, sizeof pg->err, fmt, ap);
    va_end(ap);
    pg->errors++;
    /* libpq messages end with a newline; the log adds its own. */
    size_t n = strlen(pg->err);
    while (n > 0 && pg->err[n - 1] == '\n')
        pg->err[--n] = '\0';
}

enum store_status pg_classify_sqlstate(const char *sqlstate)
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
 * never STORE_ERROR, whatever the SQLSTATE; pg_ready() repairs it. For a
 * round trip that may commit a purchase, a failure the server did not report
 * itself (no SQLSTATE, or a connection exception) leaves its outcome
 * unknown: the COMMIT may have happened just before the connection broke. */
static enum store_status fail(struct pg_session *pg, const PGresult *res, const char *what,
                              int commits)
{
    const char *state = sqlstate(res);
    snprintf(pg->sqlstate, sizeof pg->sqlstate, "%s", state != NULL ? state : "");
    pg_set_err(pg, "postgres %s: %s%s%s", what, state != NULL ? state : "",
               state != NULL ? " " : "",
               res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn));
    if (commits && (state == NULL || strncmp(state, "08", 2) == 0))
        return STORE_UNKNOWN;
    /* A primary made read-only under its sessions (pg_auto_failover's guard
     * while it fails over, default_transaction_read_only set by hand)
     * refuses every write on them: only a new session, which
     * target_session_attrs=read-write in DATABASE_URL sends to a server
     * that takes writes, can sell again. */
    if (state != NULL && strcmp(state, "25006") == 0)
        pg->demoted = 1;
    if (PQstatus(pg->conn) != CONNECTION_OK)
        return STORE_UNAVAILABLE;
    return pg_classify_sqlstate(state);
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
static int wait_input(struct pg_session *pg, int64_t deadline)
{
    while (PQisBusy(pg->conn)) {
        int64_t left = deadline - clock_ms();
        struct pollfd pfd = {.fd = PQsocket(pg->conn), .events = POLLIN};
        int ready = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (ready < 0 && errno != EINTR)
            return -1;
        if (ready == 0 && left <= 0)
            return -1;
        if (ready > 0 && PQconsumeInput(pg->conn) == 0)
            return 0; /* the connection broke: PQgetResult reports it */
    }
    return 0;
}

/* Reads one step's results (up to libpq's NULL), keeping the first in *res.
 * A statement has one result; an error after it is the session ending (a
 * termination notice behind a COMMIT's answer, say), and changes nothing of
 * what the statement did: the sync, or the next round trip, reports it.
 * -1 when the deadline passed. */
static int read_step(struct pg_session *pg, int64_t deadline, PGresult **res)
{
    PGresult *r;
    *res = NULL;
    for (;;) {
        if (wait_input(pg, deadline) < 0)
            return -1;
        if ((r = PQgetResult(pg->conn)) == NULL)
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

void pg_clear(PGresult **res, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

/* Whether the session is on the server recorded as unable to commit. */
static int on_suspect(const struct pg_session *pg)
{
    return pg->conn != NULL && pg->suspect_host[0] != '\0' &&
           strcmp(PQhost(pg->conn), pg->suspect_host) == 0 &&
           strcmp(PQport(pg->conn), pg->suspect_port) == 0;
}

void pg_cannot_commit(struct pg_session *pg)
{
    if (pg->conn == NULL)
        return;
    if (!on_suspect(pg)) {
        snprintf(pg->suspect_host, sizeof pg->suspect_host, "%s", PQhost(pg->conn));
        snprintf(pg->suspect_port, sizeof pg->suspect_port, "%s", PQport(pg->conn));
        pg->suspect_left = 0;
        log_warn("postgres: %s:%s cannot commit (%s); new sessions try the other hosts first",
                 pg->suspect_host, pg->suspect_port, pg->err);
    }
    pg_close(pg);
}

void pg_committed(struct pg_session *pg)
{
    if (on_suspect(pg)) {
        log_info("postgres: %s:%s commits again", pg->suspect_host, pg->suspect_port);
        pg->suspect_host[0] = '\0';
    }
}

/* A COMMIT can succeed with a warning, and then it is not a sale we may
 * acknowledge. The case: with synchronous replication, a COMMIT whose wait
 * for the standby was cancelled (pg_cancel_backend, the usual advice when
 * commits hang on a lost standby; statement_timeout is off by then) is
 * "committed locally, but might not have been replicated", and a failover
 * loses it. So its outcome is unknown: the key's replay, on whichever
 * server is the primary by then, tells. */
static enum store_status commit_warned(struct pg_session *pg)
{
    pg_set_err(pg, "postgres: the COMMIT was answered with a warning (see the log line before):"
                   " committed here, maybe not on a standby; its outcome is unknown");
    if (pg->unreplicated)
        pg_cannot_commit(pg);
    return STORE_UNKNOWN;
}

/* libpq has no client-side timeout for a query: statement_timeout is
 * enforced by the server, so a server that hangs (SIGSTOP, a stalled VM)
 * would hang the worker, with the product's lock held. So the answers are
 * awaited until statement_timeout plus STATEMENT_GRACE_MS; past that the
 * connection is dropped, and a round trip that may commit a purchase has an
 * unknown outcome, since the server may still run it. */
enum store_status pg_run(struct pg_session *pg, const struct pg_step *steps, int n, PGresult **res,
                         int commits)
{
    int timeout = pg->cfg->statement_timeout_ms + STATEMENT_GRACE_MS;
    int64_t deadline = clock_ms() + timeout;
    PGresult *sync = NULL;

    for (int i = 0; i < n; i++)
        res[i] = NULL;
    /* What a caller reads about this round trip's failure must be about
     * this one: a deadline or a send failure sets neither. */
    pg->sqlstate[0] = '\0';
    pg->failed_step = -1;
    pg->warnings = 0;
    pg->unreplicated = 0;
    /* A session known to be broken runs nothing: whatever this round trip
     * was, a COMMIT included, it cannot have happened. */
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        pg_set_err(pg, "postgres: the connection was lost: %s", PQerrorMessage(pg->conn));
        pg_close(pg);
        return STORE_UNAVAILABLE;
    }
    int sent = PQenterPipelineMode(pg->conn);
    for (int i = 0; i < n && sent; i++) {
        const struct pg_step *s = &steps[i];
        if (s->types != NULL)
            sent = PQsendPrepare(pg->conn, s->name, s->sql, s->n, s->types);
        else if (s->name != NULL)
            sent = PQsendQueryPrepared(pg->conn, s->name, s->n, s->values, NULL, NULL, 0);
        else
            sent = PQsendQueryParams(pg->conn, s->sql, s->n, NULL, s->values, NULL, NULL, 0);
    }
#ifdef STOCK_FAULT_POINTS
    /* A COMMIT that reached the server and ran, its Sync not sent yet: the
     * moment a session can end between the COMMIT's answer and the Sync's. */
    if (commits && steps[0].sql != NULL && strcmp(steps[0].sql, "COMMIT") == 0 && sent &&
        PQflush(pg->conn) == 0)
        FAULT_POINT("commit_unsynced");
#endif
    if (!sent || PQpipelineSync(pg->conn) != 1) {
        /* Part of the pipeline may have reached the server; without its
         * Sync it cannot complete, but a round trip that commits is not
         * called definite on that reasoning alone. */
        enum store_status rc = fail(pg, NULL, "send", commits);
        pg_close(pg);
        return rc == STORE_ERROR ? STORE_UNAVAILABLE : rc;
    }

    for (int i = 0; i <= n; i++) {
        if (read_step(pg, deadline, i < n ? &res[i] : &sync) < 0) {
            pg_clear(res, n);
            PQclear(sync);
            pg_set_err(pg, "postgres: no answer within %d ms; connection dropped", timeout);
            pg_cannot_commit(pg);
            return commits ? STORE_UNKNOWN : STORE_UNAVAILABLE;
        }
    }
    PQclear(sync);

    enum store_status rc = STORE_OK;
    for (int i = 0; i < n && rc == STORE_OK; i++) {
        if (res[i] == NULL || is_error(res[i])) {
            rc = fail(pg, res[i], steps[i].name != NULL ? steps[i].name : steps[i].sql, commits);
            pg->failed_step = i;
        }
    }
    /* Every result is read; this fails only if the session broke after
     * them (a termination notice that arrived behind the Sync, say), and a
     * fresh session is the way back then. What was read stands: a COMMIT
     * whose success was read is a sale. Any other round trip leaves an open
     * transaction behind, lost with the session, so it failed. */
    if (PQexitPipelineMode(pg->conn) != 1) {
        if (rc == STORE_OK && !commits)
            rc = fail(pg, NULL, "pipeline", commits);
        else if (rc == STORE_OK)
            log_warn("postgres: session broke after its COMMIT was confirmed: %s",
                     PQerrorMessage(pg->conn));
        pg_close(pg);
    }
    if (rc == STORE_OK && commits && pg->warnings > 0)
        rc = commit_warned(pg);
    if (rc != STORE_OK)
        pg_clear(res, n);
    return rc;
}

enum store_status pg_query(struct pg_session *pg, const char *name, int n,
                           const char *const *values, PGresult **res, int commits)
{
    const struct pg_step step = {name, NULL, n, values, NULL};
    enum store_status rc = pg_run(pg, &step, 1, res, commits);
    if (rc == STORE_OK && PQntuples(*res) == 0) {
        PQclear(*res);
        *res = NULL;
        rc = STORE_NOT_FOUND;
    }
    return rc;
}

/* Prepares every statement, in one round trip. */
static int prepare_all(struct pg_session *pg)
{
    struct pg_step steps[PG_STATEMENTS_MAX] = {{0}};
    PGresult *res[PG_STATEMENTS_MAX];
    int n = pg->nstatements;
    if (n > PG_STATEMENTS_MAX) {
        pg_set_err(pg, "postgres: %d statements to prepare, at most %d", n, PG_STATEMENTS_MAX);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const struct pg_statement *s = &pg->statements[i];
        steps[i] = (struct pg_step){s->name, s->sql, s->nparams, NULL, s->types};
    }
    if (pg_run(pg, steps, n, res, 0) != STORE_OK)
        return -1;
    pg_clear(res, n);
    pg->prepared = 1;
    return 0;
}

/* Server notices (a shutdown warning, say) go to our log, not bare stderr,
 * and warnings are counted: pg_run() reads the count of a COMMIT's round trip. */
static void notice_to_log(void *arg, const PGresult *res)
{
    struct pg_session *pg = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *message = PQresultErrorMessage(res);
    int len = (int)strcspn(message, "\n");
    if (severity != NULL && strcmp(severity, "WARNING") == 0) {
        pg->warnings++;
        /* "canceling wait for synchronous replication ...": committed here
         * only; this server cannot confirm a COMMIT now (commit_warned). */
        if (strstr(message, "synchronous replication") != NULL)
            pg->unreplicated = 1;
        log_warn("postgres: %.*s", len, message);
    } else {
        log_info("postgres: %.*s", len, message);
    }
}

/* DATABASE_URL's hosts and ports with the server that could not commit
 * last (hostlist.h): 0, or -1 to connect as the URL says (none recorded,
 * one host, or hostaddr given, whose list would no longer pair). */
static int suspect_last(const struct pg_session *pg, char *hosts, char *ports, size_t cap)
{
    if (pg->suspect_host[0] == '\0')
        return -1;
    PQconninfoOption *opts = PQconninfoParse(pg->cfg->database_url, NULL);
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
        rc = hostlist_last(host, port != NULL && port[0] != '\0' ? port : pg->suspect_port,
                           pg->suspect_host, pg->suspect_port, hosts, ports, cap);
    PQconninfoFree(opts);
    return rc;
}

static void connect_db(struct pg_session *pg)
{
    /* Timeouts travel as connection options, so every reconnect (PQreset)
     * sends them again; a SET would be lost with the session. They override
     * any options given in DATABASE_URL.
     *
     * A worker sends its COMMIT as soon as it has read the purchase's
     * answer, and gives up on any answer after a round trip's deadline
     * (pg_run(): statement_timeout + STATEMENT_GRACE_MS). A transaction left
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
             pg->cfg->statement_timeout_ms, pg->cfg->statement_timeout_ms / 2,
             pg->cfg->statement_timeout_ms + STATEMENT_GRACE_MS);
    char hosts[1024], ports[1024];
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "options", NULL, NULL,
                          NULL};
    const char *values[] = {pg->cfg->database_url, "2", "stock-fcgi", options, NULL, NULL, NULL};
    if (suspect_last(pg, hosts, ports, sizeof hosts) == 0) {
        /* Later keywords override the URL's. */
        keys[4] = "host";
        values[4] = hosts;
        keys[5] = "port";
        values[5] = ports;
    }
    pg->conn = PQconnectdbParams(keys, values, 1);
    if (pg->conn != NULL)
        PQsetNoticeReceiver(pg->conn, notice_to_log, pg);
}

/* Reads what an idle connection received: nothing, unless the server spoke
 * first, typically a shutdown notice followed by end-of-file. It costs no
 * round trip and finds a server that has gone (restart,
 * pg_terminate_backend) before a statement is sent into a dead socket. The
 * notice and the end-of-file may take two reads. Returns 1 if the
 * connection is usable, with its statements prepared and no transaction. */
int pg_usable(struct pg_session *pg)
{
    if (pg->conn == NULL)
        return 0;
    for (int i = 0; i < 8 && PQstatus(pg->conn) == CONNECTION_OK; i++) {
        struct pollfd pfd = {.fd = PQsocket(pg->conn), .events = POLLIN};
        if (poll(&pfd, 1, 0) <= 0)
            break;
        if (PQconsumeInput(pg->conn) == 0)
            log_info("postgres connection lost: %s", PQerrorMessage(pg->conn));
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        pg_set_err(pg, "postgres connection lost: %s", PQerrorMessage(pg->conn));
        return 0;
    }
    if (pg->demoted) {
        pg_set_err(pg, "postgres: the server refused a write as read-only; opening a new session");
        pg_close(pg);
        return 0;
    }
    if (PQtransactionStatus(pg->conn) != PQTRANS_IDLE) {
        /* Cannot happen unless a caller forgot its commit or rollback; a
         * fresh session is the safe way back. */
        log_error("postgres: a transaction was left open; dropping the connection");
        pg_close(pg);
        return 0;
    }
    return pg->prepared;
}

enum store_status pg_ready(struct pg_session *pg)
{
    if (pg_usable(pg))
        return STORE_OK;
    /* A read-only server's session is replaced, not repaired: PQreset would
     * keep the mark of a server that may take writes again by now. */
    if (pg->demoted || pg->suspect_host[0] != '\0')
        pg_close(pg); /* and a new session, in a new order */
    if (pg->conn == NULL)
        connect_db(pg);
    else if (PQstatus(pg->conn) != CONNECTION_OK)
        PQreset(pg->conn);
    if (pg->conn == NULL) {
        pg_set_err(pg, "postgres: out of memory");
        return STORE_UNAVAILABLE;
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        pg_set_err(pg, "postgres connect: %s", PQerrorMessage(pg->conn));
        return STORE_UNAVAILABLE;
    }
    if (pg->suspect_host[0] != '\0' && !on_suspect(pg) && !pg->suspect_left) {
        log_info("postgres: new session on %s:%s, not on %s:%s, which could not commit",
                 PQhost(pg->conn), PQport(pg->conn), pg->suspect_host, pg->suspect_port);
        pg->suspect_left = 1;
    }
    if (prepare_all(pg) < 0) {
        /* Start the next attempt from a fresh session: some statements may
         * exist already, and preparing them again would fail. */
        pg_close(pg);
        return STORE_UNAVAILABLE;
    }
    pg->connects++;
    const char *db = PQdb(pg->conn), *host = PQhost(pg->conn);
    log_info("postgres connected: database %s on %s", db ? db : "?", host ? host : "?");
    return STORE_OK;
}

int pg_open(struct pg_session *pg, const struct config *cfg, const struct pg_statement *statements,
            int n)
{
    memset(pg, 0, sizeof *pg);
    pg->cfg = cfg;
    pg->statements = statements;
    pg->nstatements = n;
    return pg_ready(pg) == STORE_OK ? 0 : -1;
}

void pg_close(struct pg_session *pg)
{
    PQfinish(pg->conn); /* accepts NULL */
    pg->conn = NULL;
    pg->prepared = 0;
    pg->demoted = 0;
}

enum store_status pg_end(struct pg_session *pg, const char *command)
{
    const struct pg_step step = {NULL, command, 0, NULL, NULL};
    PGresult *res;
    enum store_status rc = pg_run(pg, &step, 1, &res, strcmp(command, "COMMIT") == 0);
    if (rc == STORE_OK && strcmp(PQcmdStatus(res), command) != 0) {
        pg_set_err(pg, "postgres %s: answered %s", command, PQcmdStatus(res));
        rc = STORE_ERROR;
    }
    PQclear(res);
    return rc;
}

void pg_rollback(struct pg_session *pg)
{
    if (pg->conn == NULL)
        return;
    /* A broken connection has nothing to roll back on this side, and trying
     * would only replace the error that explains the break. */
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        pg_close(pg);
        return;
    }
    if (PQtransactionStatus(pg->conn) != PQTRANS_IDLE && pg_end(pg, "ROLLBACK") != STORE_OK)
        pg_close(pg); /* the server rolls back a transaction whose session ends */
}

int pg_array_open(struct pg_array *a, int n, size_t width)
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
void pg_array_add(struct pg_array *a, const char *value)
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

void pg_array_add_int(struct pg_array *a, int64_t v, int null)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v);
    pg_array_add(a, null ? NULL : text);
}

const char *pg_array_close(struct pg_array *a)
{
    a->buf[a->len++] = '}';
    a->buf[a->len] = '\0';
    return a->buf;
}
