/* lock.h -- the per-product Redis lock: an efficiency lock, fenced.
 *
 * The lock lines buyers of one product up in front of PostgreSQL so they do
 * not pile onto the same row lock; correctness does not depend on it (see
 * store.h). It is a single-node lease, and every grant carries a fence:
 *
 *   acquire  one script: SET lock:product:{id} <token> NX PX <ttl> and, if
 *            that took the lock, INCR fence:product:{id}. The token is 128
 *            random bits from getrandom(), so only its owner can release
 *            it; the fence only grows, so PostgreSQL can refuse a purchase
 *            from a holder whose lock expired and was granted again since.
 *   fences   the counter lives FENCE_TTL_MS after its last grant, and a
 *            release that found no such product deletes it: every key the
 *            lock makes expires, however many ids clients make up. A
 *            counter that starts again (fence 1: its first grant, after a
 *            restart or an expiry) knows nothing of the fences before it:
 *            the purchase then starts a new epoch in PostgreSQL, above all
 *            of them, and continues the counter from there (purchase.c).
 *   wait     a busy lock is waited for on a blocking BLPOP of
 *            wake:product:{id}, which the release fills: one command per
 *            release, not one per poll, and the hand-off takes one round
 *            trip. Each wait is capped by the holder's remaining TTL (so a
 *            holder that died costs at most that), by a slice of 250 ms (so
 *            a token lost with a waiter that died costs at most that) and
 *            by a deadline (LOCK_WAIT_MS), never by a retry count.
 *   release  compare-and-delete in one script, which also leaves the
 *            wake-up token. A lock that expired and was taken by someone
 *            else is left alone.
 *   queue    with combining (COMBINE_MAX > 0, combine.h), a buyer that finds
 *            the lock busy does not only wait for it: the same acquire
 *            script appends its purchase to queue:product:{id}, and it waits
 *            on a BLPOP of its own reply:{token}. Whoever takes the lock
 *            takes up to COMBINE_MAX queued purchases with it, in the same
 *            script, marking each taken:{token} with its own lock token;
 *            its release leaves each one's answer in reply:{token}, before
 *            the lock goes. The release hands the lock to the queue's
 *            oldest buyer ("go" in its reply list) instead of leaving a
 *            wake-up token. A queued buyer checks every slice: still queued
 *            and the lock free (its holder died) -> it takes the lock; taken
 *            by a holder that no longer holds its lock and left no answer
 *            -> LOCK_ORPHANED: only PostgreSQL can tell what became of the
 *            purchase (combine.h). At its deadline a queued buyer leaves the
 *            queue (LOCK_TIMEOUT, nothing bought) unless it was taken, and
 *            then waits for its answer as long as its taker holds the lock.
 *   stock    the release also leaves the stock the purchase saw, for
 *            STOCK_HINT_MS: a buyer asking for more than that is answered
 *            "insufficient stock" by the acquire script at once, without
 *            the lock or PostgreSQL. A sold-out product costs Redis one
 *            command per buyer, and PostgreSQL one per STOCK_HINT_MS.
 *
 * The scripts and their arguments are lock.c's; the connection that runs
 * them is redis.h's: one per worker process, every command bounded by
 * REDIS_TIMEOUT_MS, dropped after any connection error and made again by the
 * next call, so a Redis restart needs no worker restart.
 *
 * A lock a failed command may have left is given back: a lock whose release
 * failed, or whose acquire was lost with its connection (applied, or still to
 * be: see below). The worker remembers it (lc->unreleased) and runs the
 * owner-checked release for it on every call that reaches Redis, until
 * LOCK_TTL_MS has passed since the failed command was sent (CLOCK_MONOTONIC:
 * the window), then forgets it without a round trip. That costs one more
 * round trip per call, only while such a lock is pending. Only a lost
 * connection (or READONLY: the server became a replica) fails the call that
 * runs it: another error reply (BUSY, OOM...) is logged, the call goes on,
 * and the next one tries again. A
 * late SET ... NX that reaches Redis within the window is released by the
 * worker's next call after it, rather than left to block its product for its
 * TTL. Late it can be: a dropped connection is closed abortively
 * (SO_LINGER 0: a reset, its unsent data discarded), so on a direct
 * connection a command we gave up on either had reached Redis, and runs
 * before anything Redis reads from a later connection, or never runs; but a
 * relay in between (spiped, stunnel, socat, a proxy) may have read it
 * already, and delivers it when its own link to Redis heals. Not at the heal,
 * but at that link's next TCP retransmission, and those back off
 * exponentially: after a partition of D seconds the SET can arrive up to
 * about D after the heal, some 2 D after it was sent. So a partition longer
 * than about half of LOCK_TTL_MS can put it outside the window (not only one
 * longer than the TTL). One that arrives outside the window, or while the
 * worker makes no call, blocks its product for its TTL at most, like a holder
 * that died. Only the most recent failure is remembered: a second one within
 * the window replaces the first's record whether or not that lock was given
 * back, and it may not have been: its SET may not have arrived yet (behind a
 * relay), or Redis may have answered its release with an error. That lock
 * then too blocks its product for its TTL at most. Either way the cost is
 * availability, one product blocked for one TTL at most, never an oversell:
 * the fences and PostgreSQL keep the stock right (store.h). (Making a late
 * acquire harmless at Redis itself is in README.md, "Not yet".)
 *
 * Calls record why they failed in lc->redis.err and do not log it: their caller
 * does, once. */
#ifndef STOCK_LOCK_H
#define STOCK_LOCK_H

#include <stdint.h>

#include "redis.h"
#include "stringify.h"

struct config;

/* How long the stock a purchase saw is trusted without asking PostgreSQL:
 * a restock shows after at most this long. */
#define STOCK_HINT_MS      1000
#define STOCK_HINT_MS_TEXT STRINGIFY(STOCK_HINT_MS)

/* How long a product's fence counter outlives its last grant: a day. A
 * counter that expired costs its next purchase one more round trip to each
 * of PostgreSQL and Redis (a new epoch). */
#define FENCE_TTL_MS      86400000
#define FENCE_TTL_MS_TEXT STRINGIFY(FENCE_TTL_MS)

/* lock_release's stock_seen: none to leave; no such product. */
#define LOCK_STOCK_NONE       (-1)
#define LOCK_STOCK_NO_PRODUCT (-2)

enum lock_status {
    LOCK_OK,
    LOCK_TIMEOUT,     /* someone else held the lock until our deadline */
    LOCK_UNAVAILABLE, /* Redis unreachable, timing out or refusing */
    LOCK_LOST,        /* the lock is no longer ours: it expired, maybe taken since */
    LOCK_SOLD_OUT,    /* acquire: a recent purchase saw less stock than wanted */
    LOCK_ANSWERED,    /* acquire: a holder made our queued purchase; q->answer */
    LOCK_ORPHANED     /* acquire: a holder took our queued purchase and lost its
                         lock without answering: it may or may not be made */
};

/* Combining: at most this many queued purchases are taken with a lock. */
#define LOCK_BATCH_MAX 64
/* A queued purchase: its buyer's token (32 hex digits), ':', and what the
 * caller put in q->payload (combine.h: "amount:key"). */
#define LOCK_ENTRY_MAX 320
/* An answer left for a queued buyer: its token, ':', and the text. */
#define LOCK_ANSWER_MAX 96

/* How lock_acquire waits when the lock is busy, and what it brought back. */
struct lock_queue {
    const char *payload; /* in: queue this purchase while waiting; NULL: do not */
    int batch_max;       /* in: queued purchases to take with the lock, <= LOCK_BATCH_MAX */
    char (*batch)[LOCK_ENTRY_MAX]; /* in: room for batch_max entries */
    int taken;                     /* out, LOCK_OK: entries taken into batch */
    /* out: the purchase is, or may be, in the queue or taken. Set when
     * lock_acquire fails (LOCK_UNAVAILABLE) and on LOCK_ORPHANED: only
     * PostgreSQL can then tell whether it was made (combine.h). */
    int queued;
    char answer[LOCK_ANSWER_MAX]; /* out, LOCK_ANSWERED: the text, no token */
};

struct lock {
    char key[32];         /* lock:product:{id}; empty for no lock */
    char fence_key[32];   /* fence:product:{id} */
    char wake_key[32];    /* wake:product:{id} */
    char stock_key[32];   /* stock:product:{id} */
    char queue_key[32];   /* queue:product:{id} */
    char handoff_key[32]; /* handoff:product:{id} */
    char token[33];       /* 32 hex digits */
    int64_t fence;        /* this grant's fence: larger than any before it */
    int64_t started_ms;   /* CLOCK_MONOTONIC when the granting request was sent */
};

enum lock_script { SCRIPT_ACQUIRE, SCRIPT_RELEASE, SCRIPT_REFENCE, SCRIPT_COUNT };

/* The lock's client: its Redis connection, which carries the lock's scripts
 * and keeps why a call failed (redis.err), and the lock it may have left. */
struct lock_client {
    const struct config *cfg;
    struct redis_conn redis;
    /* The last lock we may hold but could not release, key empty if none;
     * its started_ms is when the command that failed was sent. */
    struct lock unreleased;
};

/* Connects. Returns 0, or -1 if Redis is not reachable yet: the client stays
 * usable and the next call tries again. */
int lock_client_open(struct lock_client *lc, const struct config *cfg);
void lock_client_close(struct lock_client *lc);

/* Makes the connection usable, reconnecting when Redis closed it, and runs
 * the left-over release while one is pending (above). Cheap when all is
 * well (a poll(), no round trip). Returns LOCK_OK or LOCK_UNAVAILABLE, the
 * latter only when the connection failed: an error reply to the left-over
 * release is logged, not returned. */
enum lock_status lock_ready(struct lock_client *lc);

/* Takes the lock on product, waiting up to LOCK_WAIT_MS. Returns LOCK_OK
 * (lk->fence set), LOCK_TIMEOUT or LOCK_UNAVAILABLE; or, when want > 0 and
 * a purchase in the last STOCK_HINT_MS saw less stock than want,
 * LOCK_SOLD_OUT with that stock in *stock_seen (want 0 never short-cuts).
 * On failure nothing is left held.
 *
 * With q->payload, the purchase waits in the product's queue (above):
 * LOCK_OK also brings up to q->batch_max queued purchases (q->taken of them)
 * for the caller to make and answer through lock_release; LOCK_ANSWERED
 * brings our purchase's answer from the holder that made it; LOCK_ORPHANED
 * and LOCK_UNAVAILABLE with q->queued mean it may have been made by a holder
 * that is gone: lk->token names it. LOCK_TIMEOUT means it was not. */
enum lock_status lock_acquire(struct lock_client *lc, int32_t product, int32_t want,
                              struct lock_queue *q, struct lock *lk, int64_t *stock_seen);

/* Whether the lock still holds our token: LOCK_OK, LOCK_LOST or
 * LOCK_UNAVAILABLE. */
enum lock_status lock_owned(struct lock_client *lc, const struct lock *lk);

/* If lk still holds our token, raises the fence counter to at least floor
 * and draws a new lk->fence above it: LOCK_OK. If the lock is no longer
 * ours: LOCK_LOST. Used with a new fence epoch from PostgreSQL after Redis
 * lost its counter (see store_new_epoch). */
enum lock_status lock_refence(struct lock_client *lc, struct lock *lk, int64_t floor);

/* True while lk's validity, less reserve_ms, is not spent: TTL minus the
 * time since the granting request was sent, minus a margin for clock drift
 * (1% + 2 ms), on CLOCK_MONOTONIC. A purchase commits only while this
 * holds, with the time the COMMIT may take in reserve. */
int lock_valid(const struct lock_client *lc, const struct lock *lk, int reserve_ms);

/* Releases lk if it still holds our token, wakes the next waiter and, if
 * stock_seen >= 0, leaves it as the product's stock hint;
 * LOCK_STOCK_NO_PRODUCT deletes the product's fence counter. First, in the
 * same script and whether or not the lock is still ours, it leaves the n
 * answers ("token:text") for the queued buyers they name. Returns LOCK_OK,
 * LOCK_LOST or LOCK_UNAVAILABLE (the lock then expires by its TTL, and the
 * answers are not delivered: their buyers ask PostgreSQL). */
enum lock_status lock_release(struct lock_client *lc, const struct lock *lk, int64_t stock_seen,
                              const char (*answers)[LOCK_ANSWER_MAX], int n);

#endif
