/* store.h -- PostgreSQL, the source of truth for stock and orders.
 *
 * PostgreSQL, not the Redis lock, is what makes overselling impossible: a
 * purchase is one conditional statement (UPDATE ... WHERE amount >= $2) that
 * PostgreSQL re-checks under its row lock, backed by CHECK (amount >= 0). The
 * same statement applies the lock's fence (... AND fence < $3), so a holder
 * whose lock expired and was granted again since is refused.
 *
 * One connection per worker process, opened at start and kept. Calls make
 * sure the connection is usable (reconnecting and re-preparing the
 * statements if the server went away), except the purchase calls, which run
 * under the lock. Statements are sent as pipelines (several in one round
 * trip) and every outcome is read to the end, so an error that comes after
 * a statement's rows (a COMMIT that fails) is never missed. Every round trip
 * has a client-side deadline, statement_timeout + STATEMENT_GRACE_MS. No
 * call leaves a transaction open, except store_buy() on success, whose
 * caller must store_commit() or store_rollback().
 *
 * Errors are returned as codes; the detail for the log is kept in st->err. */
#ifndef STOCK_STORE_H
#define STOCK_STORE_H

#include <stdint.h>

#include "sale.h"

struct config;
struct pg_conn; /* libpq's PGconn */

struct store {
    const struct config *cfg;
    struct pg_conn *conn;
    int prepared;     /* statements exist on this session */
    char sqlstate[6]; /* of the last failure, "" if none came from the server */
    int failed_step;  /* which statement of the last pipeline failed, or -1 */
    char err[256];
    unsigned long errors;        /* failures recorded in err, for the metrics */
    unsigned long connects;      /* sessions opened (and prepared), for the metrics */
    int warnings;                /* server warnings during the current round trip */
    int demoted;                 /* the server refused a write as read-only */
    struct combine_batch *batch; /* allocated, not yet written: store_commit's */
    /* The server last seen unable to commit (a COMMIT left unanswered or
     * answered "committed locally", or the product's row held by one that
     * waits for a lost standby), as PQhost/PQport name it; "" for none.
     * Every new session tries DATABASE_URL's other hosts first (hostlist.h),
     * until a COMMIT succeeds on this server again. */
    char suspect_host[256];
    char suspect_port[32];
};

/* Connects and prepares. Returns 0, or -1 if PostgreSQL is not reachable yet:
 * the store stays usable and the next call tries again. */
int store_open(struct store *st, const struct config *cfg);
void store_close(struct store *st);

/* Makes the connection usable: reconnects and re-prepares when needed.
 * Cheap when all is well (no round trip). */
enum store_status store_ready(struct store *st);

/* Runs a purchase up to, not including, its COMMIT, in one round trip:
 * decrements the stock if there is enough and the fence is newer, records
 * the order and, with a key, the key's outcome.
 *
 *   STORE_OK            out->order is set; the transaction stays open for
 *                       the caller to store_commit() or store_rollback();
 *   STORE_NOT_FOUND,
 *   STORE_INSUFFICIENT  nothing bought (out->available set for the latter);
 *                       with a key, that outcome is recorded and committed;
 *   STORE_FENCED        nothing bought: out->fence is newer than ours;
 *   STORE_KEY_EXISTS    nothing bought: look the key up (store_key);
 *   STORE_KEY_BUSY      nothing bought: the key's first request is running;
 *   STORE_BUSY          nothing bought: the purchase statement waited for the
 *                       product's row lock longer than lock_timeout (SQLSTATE
 *                       55P03); PostgreSQL itself is fine. Unless COMMITs
 *                       wait for a synchronous standby that is gone: the row
 *                       is then held by one that cannot end, and the answer
 *                       is STORE_UNAVAILABLE (this server cannot commit);
 *   anything else       see store_status; nothing left open.
 *
 * It does not reconnect: call store_ready() first, before taking the lock,
 * so that a reconnect never stretches the time the lock is held. A
 * connection lost since then answers STORE_UNAVAILABLE. */
enum store_status store_buy(struct store *st, const struct purchase *p, struct outcome *out);

/* With p->batch (combine.h), store_buy makes the whole batch instead, up to
 * its COMMIT: claims the keys, locks the product's row, reads its stock and
 * fence and draws order ids, in one round trip, then allocates
 * (combine_allocate). STORE_OK then means the batch is allocated, whatever
 * each purchase's outcome (out is the holder's own; status 0 if its key was
 * used before), and store_commit() writes it all and commits, in one more
 * round trip. Its other answers are store_buy's: STORE_FENCED
 * (out->fence), STORE_BUSY, and failures; nothing is left open after them.
 * A key whose first request still holds it, elsewhere, is left unclaimed
 * (its purchase answers from its key: request_in_progress) and the batch is
 * made without it; STORE_ALONE only if the schema lacks claim_keys. */

/* Starts a new fence epoch for product: raises its fence, in PostgreSQL and
 * committed at once, to the next multiple of 2^32, and returns it in *fence.
 * Every fence drawn before, by any holder, is below it from then on. Used
 * when Redis lost its fence counter (a restart without persistence): the
 * counter cannot know how far it had got, so it restarts above everything
 * it might have handed out. STORE_BUSY (or STORE_UNAVAILABLE), like
 * store_buy, when the product's row stayed locked past lock_timeout. */
enum store_status store_new_epoch(struct store *st, int32_t product, int64_t *fence);

/* Commits the purchase store_buy() left open. STORE_OK once PostgreSQL has
 * confirmed the COMMIT; STORE_UNKNOWN if it never said. A batch's writes go
 * in the same round trip; if they fail, nothing is committed: STORE_ALONE
 * when a waiting buyer closed its token meanwhile (combine.h) or the row
 * moved, else the failure. */
enum store_status store_commit(struct store *st);

/* Rolls back the purchase store_buy() left open (dropping the connection if
 * even that fails, which rolls it back on the server). */
void store_rollback(struct store *st);

/* Looks up an idempotency key: STORE_OK with its request (product, amount in
 * *product, *amount) and outcome, or STORE_NOT_FOUND. A recorded outcome is
 * returned only once it is on the synchronous standby, if there is one;
 * STORE_UNKNOWN if PostgreSQL did not confirm that. */
enum store_status store_key(struct store *st, const char *key, int32_t *product, int32_t *amount,
                            struct outcome *out);

/* Closes a queued purchase's token (combine.h): inserts it as closed
 * (status 0) unless a batch wrote it, and returns what the row says:
 * STORE_OK with out->status 200, 404 or 409 from a committed batch, or 0
 * (closed here: never made). Committed before it returns, on the standby
 * too if there is one (STORE_UNKNOWN if PostgreSQL did not confirm that).
 * STORE_BUSY if a batch still in flight held the token past lock_timeout. */
enum store_status store_close_token(struct store *st, const char *token, int32_t product,
                                    int32_t amount, struct outcome *out);

/* Reads one product. On STORE_OK the caller frees out->name. */
enum store_status store_product(struct store *st, int32_t id, struct product *out);

/* One round trip to check that PostgreSQL answers and takes writes:
 * STORE_UNAVAILABLE for a read-only server too. */
enum store_status store_ping(struct store *st);

/* Maps a SQLSTATE to the status the client should see: connection loss,
 * shutdowns, timeouts and lock or resource exhaustion are STORE_UNAVAILABLE
 * (try again later); everything else is STORE_ERROR. NULL (no SQLSTATE, a
 * client-side failure) is STORE_UNAVAILABLE. This is the general mapping;
 * store_buy and store_new_epoch tell a lock_timeout on the product's row
 * (STORE_BUSY) or on the idempotency key (STORE_KEY_BUSY) from it. */
enum store_status store_classify_sqlstate(const char *sqlstate);

#endif
