/* store.h -- PostgreSQL, the source of truth for stock and orders.
 *
 * PostgreSQL, not the Redis lock, is what makes overselling impossible: a
 * purchase is one conditional statement (UPDATE ... WHERE amount >= $2) that
 * PostgreSQL re-checks under its row lock, backed by CHECK (amount >= 0).
 *
 * One connection per worker process, opened at start and kept. Calls make
 * sure the connection is usable (reconnecting and re-preparing the
 * statements if the server went away), except store_buy(), which runs under
 * the lock. No call leaves a transaction open: each statement is its own
 * transaction, and its outcome is read to the end (ReadyForQuery), so
 * store_buy() returns STORE_OK only once the COMMIT succeeded. Every
 * statement has a client-side deadline, statement_timeout +
 * STATEMENT_GRACE_MS.
 *
 * Errors are returned as codes; the detail for the log is kept in st->err. */
#ifndef STOCK_STORE_H
#define STOCK_STORE_H

#include <stdint.h>

struct config;
struct pg_conn; /* libpq's PGconn */

enum store_status {
    STORE_OK,
    STORE_NOT_FOUND,    /* no such product */
    STORE_INSUFFICIENT, /* the product has fewer units than asked for */
    STORE_UNAVAILABLE,  /* PostgreSQL unreachable, restarting or timing out */
    STORE_UNKNOWN,      /* the connection broke while a purchase was in flight:
                           it may or may not have committed */
    STORE_ERROR         /* anything else: a bug or a broken schema */
};

struct store {
    const struct config *cfg;
    struct pg_conn *conn;
    int prepared; /* statements exist on this session */
    char err[256];
};

struct product {
    int32_t id;
    char *name; /* malloc'd; NULL when the column is NULL */
    int64_t amount;
};

struct order {
    int64_t id;
    int32_t product_id;
    int32_t amount;
    int64_t remaining;
};

/* Connects and prepares. Returns 0, or -1 if PostgreSQL is not reachable yet:
 * the store stays usable and the next call tries again. */
int store_open(struct store *st, const struct config *cfg);
void store_close(struct store *st);

/* Makes the connection usable: reconnects and re-prepares when needed.
 * Cheap when all is well (no round trip). */
enum store_status store_ready(struct store *st);

/* Buys amount units of product: decrements the stock and records the order
 * in one transaction. STORE_OK fills *out after COMMIT. STORE_INSUFFICIENT
 * sets *available to the stock seen after the refusal. STORE_UNAVAILABLE
 * means nothing was bought; STORE_UNKNOWN that PostgreSQL did not answer
 * (the connection broke, or the deadline passed), so the purchase may have
 * committed. It is never retried here, for that reason.
 *
 * It does not reconnect: call store_ready() first, before taking the lock,
 * so that a reconnect never stretches the time the lock is held. A
 * connection lost since then answers STORE_UNAVAILABLE. */
enum store_status store_buy(struct store *st, int32_t product, int32_t amount, struct order *out,
                            int64_t *available);

/* Reads one product. On STORE_OK the caller frees out->name. */
enum store_status store_product(struct store *st, int32_t id, struct product *out);

/* One round trip to check that PostgreSQL answers. */
enum store_status store_ping(struct store *st);

/* Maps a SQLSTATE to the status the client should see: connection loss,
 * shutdowns, timeouts and lock or resource exhaustion are STORE_UNAVAILABLE
 * (try again later); everything else is STORE_ERROR. NULL (no SQLSTATE, a
 * client-side failure) is STORE_UNAVAILABLE. */
enum store_status store_classify_sqlstate(const char *sqlstate);

#endif
