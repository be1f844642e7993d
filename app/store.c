/* store.c -- see store.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "combine.h"
#include "log.h"
#include "pg.h"
#include "store.h"
#include "stringify.h"

/* How long a purchase's claim waits for a key whose first request holds it
 * elsewhere before it answers request_in_progress (store_buy), or a batch
 * before it leaves that purchase out (sql_claim_batch, twice: the set-based
 * claim, then the key's own). The purchase holds its product's lock while it
 * waits, so every buyer behind it waits too: at 10 ms for batches and a
 * lock_timeout for one purchase, 40 keys in flight retried 4 times a second
 * took 25 % off a hot sale of 4,000/s (make bench, "poisoned"). A retry that
 * races its first request's COMMIT is answered request_in_progress, as two
 * requests with one key at once may be, and its next retry replays. */
#define KEY_WAIT_MS      2
#define KEY_WAIT_MS_TEXT STRINGIFY(KEY_WAIT_MS)

/* An idempotency key is claimed first, in its own statement of the
 * purchase's transaction: a key used before fails it (unique violation),
 * and a key whose first request is still running makes it wait (KEY_WAIT_MS
 * at most), so either is told apart from anything the purchase itself runs
 * into. The claim's status 0 is never committed: the outcome replaces it
 * before COMMIT. */
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
    "   AND datname = current_database() AND backend_xid IS NOT NULL"
    "   AND query_start < statement_timestamp() - current_setting('lock_timeout')::interval)";

static const struct pg_statement statements[] = {
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
enum { NSTATEMENTS = sizeof statements / sizeof statements[0] };
_Static_assert(NSTATEMENTS <= PG_STATEMENTS_MAX, "pg.h prepares at most PG_STATEMENTS_MAX");

int store_open(struct store *st, const struct config *cfg)
{
    memset(st, 0, sizeof *st);
    return pg_open(&st->pg, cfg, statements, NSTATEMENTS);
}

void store_close(struct store *st)
{
    pg_close(&st->pg);
    st->batch = NULL;
}

enum store_status store_ready(struct store *st)
{
    return pg_ready(&st->pg);
}

void store_rollback(struct store *st)
{
    st->batch = NULL;
    pg_rollback(&st->pg);
}

static int64_t get_int(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/* Records a refused purchase's outcome on its claimed key, and commits. */
static enum store_status record_refusal(struct store *st, const struct purchase *p,
                                        const struct outcome *out)
{
    char status[8], available[24];
    snprintf(status, sizeof status, "%d", out->status);
    snprintf(available, sizeof available, "%" PRId64, out->available);
    const char *const values[] = {p->key, status, out->status == 409 ? available : NULL};
    const struct pg_step steps[] = {{"key_refused", NULL, 3, values, NULL},
                                    {NULL, "COMMIT", 0, NULL, NULL}};
    PGresult *res[2];
    enum store_status rc = pg_run(&st->pg, steps, 2, res, 0);
    pg_clear(res, 2);
    if (rc == STORE_OK)
        pg_committed(&st->pg);
    return rc;
}

/* The purchase matched no row: find out why, in the same transaction. */
static enum store_status refused(struct store *st, const struct purchase *p, const char *id,
                                 struct outcome *out)
{
    const char *const values[] = {id};
    PGresult *res;
    enum store_status rc = pg_query(&st->pg, "stock", 1, values, &res, 0);
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
    return strcmp(st->pg.sqlstate, "55P03") == 0;
}

/* What a failed purchase pipeline ran into, read before the rollback
 * replaces st->pg.sqlstate. Only a failure of the claim is about the key: a
 * used key (unique violation), or one whose first request still holds it
 * (lock_timeout). A lock_timeout of the purchase statement is the product's
 * row, held by another transaction (another host's, stalled before its
 * COMMIT, say): the product is busy, not the service unavailable. */
static enum store_status buy_failed(const struct store *st, enum store_status rc, int claim_step,
                                    int buy_step)
{
    if (claim_step >= 0 && st->pg.failed_step == claim_step &&
        strcmp(st->pg.sqlstate, "23505") == 0)
        return STORE_KEY_EXISTS;
    if (claim_step >= 0 && st->pg.failed_step == claim_step && lock_timed_out(st))
        return STORE_KEY_BUSY;
    if (st->pg.failed_step == buy_step && lock_timed_out(st))
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
    char busy[sizeof st->pg.err];
    memcpy(busy, st->pg.err, sizeof busy);
    enum store_status rc = pg_query(&st->pg, "commits_stalled", 0, NULL, &res, 0);
    if (rc != STORE_OK)
        return rc; /* this server fails more than one row */
    int stalled = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!stalled) {
        memcpy(st->pg.err, busy, sizeof busy);
        return STORE_BUSY;
    }
    pg_set_err(&st->pg,
               "postgres: COMMITs wait for a synchronous standby past lock_timeout, and hold "
               "the product's row: this server cannot sell now");
    pg_cannot_commit(&st->pg);
    return STORE_UNAVAILABLE;
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
        pg_set_err(&st->pg, "postgres draw_ids: %d ids for %d purchases", n, b->n);
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
    const struct pg_step claim_step =
        claim != NULL ? (struct pg_step){claim, NULL, 3, claim_values, NULL}
                      : (struct pg_step){NULL, sql_claim_each, 3, claim_values, NULL};
    const struct pg_step steps[] = {{NULL, "BEGIN", 0, NULL, NULL},
                                    {NULL, sql_key_wait, 0, NULL, NULL},
                                    claim_step,
                                    {NULL, sql_lock_wait, 0, NULL, NULL},
                                    {"lock_stock", NULL, 1, row, NULL},
                                    {"draw_ids", NULL, 1, count, NULL}};
    const struct pg_step unkeyed[] = {steps[0], steps[4], steps[5]};
    int keyed = claim_values != NULL;
    *nsteps = keyed ? 6 : 3;
    enum store_status rc = pg_run(&st->pg, keyed ? steps : unkeyed, *nsteps, res, 0);
    if (rc != STORE_OK) {
        rc = buy_failed(st, rc, keyed ? 2 : -1, *nsteps - 2);
        /* Without claim_keys (an older schema) the one-by-one claim cannot
         * leave a key out: the holder's purchase goes alone. */
        if (claim == NULL && st->pg.failed_step == 2 && strcmp(st->pg.sqlstate, "42883") == 0)
            rc = STORE_ALONE;
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
    struct pg_array keys = {0}, amounts = {0};
    b->fence = p->fence;
    snprintf(id, sizeof id, "%" PRId32, b->product);
    snprintf(n, sizeof n, "%d", b->n);
    if (pg_array_open(&keys, b->n, 255) < 0 || pg_array_open(&amounts, b->n, 11) < 0) {
        free(keys.buf);
        pg_set_err(&st->pg, "postgres: out of memory");
        return STORE_ERROR;
    }
    for (int i = 0; i < b->n; i++)
        if (b->items[i].key[0] != '\0') {
            pg_array_add(&keys, b->items[i].key);
            pg_array_add_int(&amounts, b->items[i].amount, 0);
        }
    int keyed = keys.len > 1;
    const char *const claim[] = {pg_array_close(&keys), id, pg_array_close(&amounts)};
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
        /* The table itself locked past KEY_WAIT_MS (claim_keys's LOCK
         * TABLE): no key can be told apart, the holder's purchase goes
         * alone. */
        if (rc == STORE_KEY_BUSY)
            rc = STORE_ALONE;
    }
    free(keys.buf);
    free(amounts.buf);
    if (rc == STORE_BUSY)
        return row_busy(st);
    if (rc != STORE_OK)
        return rc;
    rc = batch_allocate(st, b, keyed ? res[2] : NULL, res[nsteps - 2], res[nsteps - 1], out);
    pg_clear(res, nsteps);
    return rc;
}

/* The batch's outcomes as the arrays of sql_write_batch ($5..$11). Items
 * whose key was used before are left out: nothing of theirs is written. */
static int batch_arrays(const struct combine_batch *b, struct pg_array a[7])
{
    static const size_t width[7] = {32, 255, 11, 6, 20, 20, 20};
    for (int k = 0; k < 7; k++)
        if (pg_array_open(&a[k], b->n, width[k]) < 0)
            return -1;
    for (int i = 0; i < b->n; i++) {
        const struct combine_item *it = &b->items[i];
        const struct outcome *o = &it->out;
        if (!it->claimed)
            continue;
        pg_array_add(&a[0], it->token[0] ? it->token : NULL);
        pg_array_add(&a[1], it->key[0] ? it->key : NULL);
        pg_array_add_int(&a[2], it->amount, 0);
        pg_array_add_int(&a[3], o->status, 0);
        pg_array_add_int(&a[4], o->order.id, o->status != 200);
        pg_array_add_int(&a[5], o->order.remaining, o->status != 200);
        pg_array_add_int(&a[6], o->available, o->status != 409);
    }
    for (int k = 0; k < 7; k++)
        pg_array_close(&a[k]);
    return 0;
}

/* store_commit for a batch: its writes and the COMMIT, one round trip. */
static enum store_status batch_commit(struct store *st, const struct combine_batch *b)
{
    char id[16], fence[24], before[24], sold[24];
    struct pg_array a[7] = {{0}};
    enum store_status rc = STORE_ERROR;
    snprintf(id, sizeof id, "%" PRId32, b->product);
    snprintf(fence, sizeof fence, "%" PRId64, b->fence);
    snprintf(before, sizeof before, "%" PRId64, b->stock_before);
    snprintf(sold, sizeof sold, "%" PRId64, b->sold);
    if (batch_arrays(b, a) < 0) {
        pg_set_err(&st->pg, "postgres: out of memory");
    } else {
        const char *const values[] = {id,       fence,    before,   sold,     a[0].buf, a[1].buf,
                                      a[2].buf, a[3].buf, a[4].buf, a[5].buf, a[6].buf};
        const struct pg_step steps[] = {{"write_batch", NULL, 11, values, NULL},
                                        {NULL, "COMMIT", 0, NULL, NULL}};
        PGresult *res[2];
        rc = pg_run(&st->pg, steps, 2, res, 1);
        if (rc == STORE_OK && strcmp(PQcmdStatus(res[1]), "COMMIT") != 0) {
            pg_set_err(&st->pg, "postgres COMMIT: answered %s", PQcmdStatus(res[1]));
            rc = STORE_ERROR;
        }
        /* A token its buyer closed since the first round trip (23505), or
         * a moved row (23502, which the row lock rules out): nothing
         * committed, and the holder's own purchase may still be made. */
        if (rc != STORE_OK && st->pg.failed_step == 0 &&
            (strcmp(st->pg.sqlstate, "23505") == 0 || strcmp(st->pg.sqlstate, "23502") == 0))
            rc = STORE_ALONE;
        pg_clear(res, 2);
    }
    for (int k = 0; k < 7; k++)
        free(a[k].buf);
    return rc;
}

enum store_status store_commit(struct store *st)
{
    const struct combine_batch *b = st->batch;
    st->batch = NULL;
    enum store_status rc = b != NULL ? batch_commit(st, b) : pg_end(&st->pg, "COMMIT");
    if (rc != STORE_OK)
        store_rollback(st);
    else
        pg_committed(&st->pg);
    return rc;
}

enum store_status store_buy(struct store *st, const struct purchase *p, struct outcome *out)
{
    if (p->batch != NULL) {
        memset(out, 0, sizeof *out);
        return pg_usable(&st->pg) ? batch_begin(st, p, out) : STORE_UNAVAILABLE;
    }
    char id[16], amount[16], fence[24];
    memset(out, 0, sizeof *out);
    if (!pg_usable(&st->pg))
        return STORE_UNAVAILABLE;
    snprintf(id, sizeof id, "%" PRId32, p->product);
    snprintf(amount, sizeof amount, "%" PRId32, p->amount);
    snprintf(fence, sizeof fence, "%" PRId64, p->fence);
    const char *const claim[] = {p->key, id, amount};
    const char *const buy[] = {id, amount, fence, p->key};
    /* The key is claimed with a lock_timeout of KEY_WAIT_MS, as a batch's
     * are: a key in flight elsewhere must not hold the product's lock for a
     * whole lock_timeout while the buyers behind it wait. */
    const struct pg_step steps[] = {{NULL, "BEGIN", 0, NULL, NULL},
                                    {NULL, sql_key_wait, 0, NULL, NULL},
                                    {"claim", NULL, 3, claim, NULL},
                                    {NULL, sql_lock_wait, 0, NULL, NULL},
                                    {"buy", NULL, 4, buy, NULL}};
    /* Without a key there is nothing to claim: the claim steps are skipped. */
    const struct pg_step unkeyed[] = {steps[0], steps[4]};
    int keyed = p->key != NULL, n = keyed ? 5 : 2;
    PGresult *res[5];

    enum store_status rc = pg_run(&st->pg, keyed ? steps : unkeyed, n, res, 0);
    if (rc != STORE_OK) {
        rc = buy_failed(st, rc, keyed ? 2 : -1, n - 1);
        store_rollback(st);
        return rc == STORE_BUSY ? row_busy(st) : rc;
    }
    PGresult *rows = res[n - 1];
    if (PQntuples(rows) == 0) {
        pg_clear(res, n);
        return refused(st, p, id, out);
    }
    out->status = 200;
    out->order.id = get_int(rows, 0);
    out->order.remaining = get_int(rows, 1);
    out->order.product_id = p->product;
    out->order.amount = p->amount;
    pg_clear(res, n);
    return STORE_OK;
}

enum store_status store_new_epoch(struct store *st, int32_t product, int64_t *fence)
{
    char id[16];
    snprintf(id, sizeof id, "%" PRId32, product);
    const char *const values[] = {id};
    PGresult *res;
    if (!pg_usable(&st->pg))
        return STORE_UNAVAILABLE;
    enum store_status rc = pg_query(&st->pg, "new_epoch", 1, values, &res, 0);
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
    if ((rc = pg_query(&st->pg, "key", 1, values, &res, 1)) != STORE_OK)
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
    if (rc != STORE_OK || (rc = pg_query(&st->pg, "product", 1, values, &res, 0)) != STORE_OK)
        return rc;
    out->id = (int32_t)get_int(res, 0);
    out->amount = get_int(res, 2);
    out->name = NULL;
    if (!PQgetisnull(res, 0, 1)) {
        out->name = strdup(PQgetvalue(res, 0, 1));
        if (out->name == NULL) {
            pg_set_err(&st->pg, "postgres: out of memory");
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
    if (rc == STORE_OK && (rc = pg_query(&st->pg, "ping", 0, NULL, &res, 0)) == STORE_OK) {
        if (strcmp(PQgetvalue(res, 0, 0), "off") != 0) {
            pg_set_err(&st->pg, "postgres: the server is read-only (a failover under way?)");
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
    if ((rc = pg_query(&st->pg, "close_token", 3, values, &res, 1)) != STORE_OK)
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
