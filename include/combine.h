/* combine.h -- flash-sale combining: the lock holder makes the purchases
 * waiting for its product together with its own, in one transaction.
 *
 * Without it a hot product sells one purchase per lock grant, so never
 * faster than one grant, statement, COMMIT and hand-off at a time, however
 * many buyers wait. With it (COMBINE_MAX > 0) a buyer that finds the lock
 * busy queues its purchase in Redis and waits for its own answer (lock.h,
 * "queue"); whoever takes the lock takes up to COMBINE_MAX queued purchases
 * with it, and makes them all in ONE PostgreSQL transaction under its ONE
 * fence. This is flat combining (Hendler et al., SPAA 2010) across
 * processes.
 *
 * The transaction, in the same two round trips as a single purchase:
 *   1. BEGIN; claim the batch's idempotency keys; lock the product's row
 *      and read its stock and fence (FOR UPDATE); draw one order id per
 *      purchase.
 *   2. one statement: the stock update (failing, not matching nothing, if
 *      the stock or fence moved: defence in depth, the row is locked), all
 *      order rows, each waiter's outcome under its token (purchase_tokens),
 *      each key's outcome; then COMMIT.
 * Allocation (combine_allocate) is in arrival order, the holder's own
 * purchase first: a purchase that fits is sold, with the stock after it as
 * its remaining; one that does not is refused with the stock at its turn as
 * its available, and a later, smaller one may still fit. Order ids are
 * handed out in the same order, so replaying a product's orders by id from
 * its starting stock reproduces every answer: exactly what the purchases
 * would have got one by one in that order.
 *
 * Definite outcomes when the holder dies or stalls: every queued purchase
 * carries its buyer's token (its lock token: 128 random bits), written with
 * its outcome in the batch's transaction. A buyer whose purchase was taken
 * by a holder that lost its lock without answering (LOCK_ORPHANED), or
 * whose Redis failed while it was queued, closes its token in PostgreSQL
 * (store_close_token): if the batch committed, the close finds its outcome and
 * the buyer answers it; if not, the close writes a "closed" row, and a late
 * COMMIT of that batch conflicts with it and fails whole. Then the buyer
 * tries once more on its own (after a Redis failure, it answers 503). A
 * close that PostgreSQL does not answer, or refuses, leaves the outcome
 * unknown (504), as a COMMIT that went unanswered does.
 *
 * The holder answers every purchase it took, in its release (lock.h): the
 * outcome; or "retry" if the batch made nothing (a lost lock, or
 * STORE_ALONE: a purchase it took made the batch fail, a token its buyer
 * closed, and the holder then makes its own alone), and the buyers queue
 * again ("alone" for a keyed one then: it waits without queueing, so that,
 * with a schema older than claim_keys, a key in flight elsewhere fails one
 * batch, not one after another); or "unknown" after an unanswered COMMIT; or
 * the batch's error for everyone. A key in flight elsewhere fails no batch:
 * the batch leaves it unclaimed (store.h), and its buyer answers from it. */
#ifndef STOCK_COMBINE_H
#define STOCK_COMBINE_H

#include <stddef.h>
#include <stdint.h>

#include "lock.h"
#include "sale.h"

/* COMBINE_MAX's default: see tests/README.md, "Performance", for the measurement. */
#define COMBINE_MAX_DEFAULT 32

/* One purchase of a batch. */
struct combine_item {
    char token[33]; /* the waiting buyer's; "" for the holder's own */
    int32_t amount;
    char key[256];      /* Idempotency-Key, "" for none */
    int claimed;        /* its key was claimed by this batch (or it has none) */
    struct outcome out; /* combine_allocate's answer */
};

/* A batch's purchases at most: the holder's and the ones it took. */
#define COMBINE_BATCH_MAX (1 + LOCK_BATCH_MAX)

/* A batch: the holder's purchase (items[0]) and the ones it took. */
struct combine_batch {
    int32_t product;
    int n;
    struct combine_item items[COMBINE_BATCH_MAX];
    int64_t fence;        /* the holder's */
    int found;            /* the product exists */
    int64_t stock_before; /* its stock when the batch began */
    int64_t sold;         /* units sold by the batch */
    int64_t stock;        /* its stock after the batch */
};

/* Queue payload for a purchase: "amount:key" (key may be empty). Returns 0,
 * or -1 if it does not fit in cap. */
int combine_payload(char *buf, size_t cap, int32_t amount, const char *key);

/* Parses a queue entry ("token:amount:key", lock.h) into item. 0, or -1 for
 * an entry this version did not write. */
int combine_parse_entry(const char *entry, struct combine_item *item);

/* Starts a batch with the holder's own purchase and the entries it took.
 * Entries that do not parse are skipped (and logged). */
void combine_start(struct combine_batch *b, const struct purchase *own,
                   char (*entries)[LOCK_ENTRY_MAX], int n);

/* Pure: allocates the batch against stock (found 0: no such product) in
 * arrival order, giving the sold purchases ids[0..] (ascending) in that
 * order. Items whose key was not claimed are skipped: their answer is the
 * key's. Sets every item's outcome, b->sold and b->stock. */
void combine_allocate(struct combine_batch *b, int found, int64_t stock, const int64_t *ids);

/* Pure: the answer for the waiting buyer of item i after the batch ended
 * with st ("token:text", lock.h). */
void combine_answer(const struct combine_batch *b, int i, enum store_status st,
                    char out[LOCK_ANSWER_MAX]);

/* How a waiting buyer reads its answer. */
enum combine_reply {
    COMBINE_OUTCOME, /* *out holds the outcome (200, 404, 409) */
    COMBINE_KEY,     /* its key was used before: answer from the key */
    COMBINE_PROBLEM, /* *problem says what; nothing was bought */
    COMBINE_CLOSE,   /* unknown: close the token to find out */
    COMBINE_BAD      /* not an answer this version writes */
};

/* Pure: parses an answer's text (without the token). */
enum combine_reply combine_parse_answer(const char *text, int32_t product, int32_t amount,
                                        struct outcome *out, int *problem);

#endif
