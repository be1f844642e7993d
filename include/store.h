/* store.h -- PostgreSQL, the source of truth for stock and orders.
 *
 * PostgreSQL, not the Redis lock, is what makes overselling impossible: a
 * purchase is one conditional statement (UPDATE ... WHERE amount >= $2) that
 * PostgreSQL re-checks under its row lock, backed by CHECK (amount >= 0). The
 * same statement applies the lock's fence (... AND fence < $3), so a holder
 * whose lock expired and was granted again since is refused.
 *
 * The session is pg.h's: one per worker, its statements sent as pipelines,
 * every round trip under a deadline. Calls make sure it is usable
 * (reconnecting and re-preparing the statements if the server went away),
 * except the purchase calls, which run under the lock. No call leaves a
 * transaction open, except store_buy() on success, whose caller must
 * store_commit() or store_rollback().
 *
 * Errors are returned as codes; the detail for the log is kept in
 * st->pg.err. */
#ifndef STOCK_STORE_H
#define STOCK_STORE_H

#include <stdint.h>

#include "pg.h"
#include "sale.h"

struct config;

struct store {
    struct pg_session pg;        /* the session, its last error and counts */
    struct combine_batch *batch; /* allocated, not yet written: store_commit's */
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

#endif
