/* purchase.c -- see purchase.h. */
#include "clock.h"
#include "combine.h"
#include "config.h"
#include "fault.h"
#include "http.h"
#include "log.h"
#include "purchase.h"
#include "request.h"
#include "worker.h"

/* Validates the request (Content-Type and -Encoding, body, Idempotency-Key);
 * PROBLEM_NONE with *amount set, or the problem, with *detail when the
 * catalogue's default would not say what is wrong. */
static enum problem read_request(struct http_request *req, int32_t *amount, const char **detail)
{
    char body[REQUEST_BODY_MAX];
    size_t len;
    *detail = NULL;
    if (!request_is_json(req->content_type))
        return PROBLEM_UNSUPPORTED_MEDIA_TYPE;
    /* nginx's CONTENT_TYPE is the first of them: which one was meant? */
    if (req->content_types > 1) {
        *detail = "Send one Content-Type header, not several.";
        return PROBLEM_UNSUPPORTED_MEDIA_TYPE;
    }
    /* A body labelled gzip but sent plain would otherwise buy. */
    if (req->content_encoding != NULL) {
        *detail = "The request body must be sent as it is, without a Content-Encoding.";
        return PROBLEM_UNSUPPORTED_MEDIA_TYPE;
    }
    enum problem p = http_read_body(req, body, sizeof body, &len);
    if (p != PROBLEM_NONE)
        return p;
    if ((p = request_parse_amount(body, len, amount)) != PROBLEM_NONE)
        return p;
    /* Two keys are two intentions: neither is taken for the other. */
    if (req->idempotency_keys > 1) {
        *detail = "Send one Idempotency-Key header, not several.";
        return PROBLEM_INVALID_IDEMPOTENCY_KEY;
    }
    return request_check_key(req->idempotency_key);
}

/* Answers from an idempotency key seen before: its first answer again, or
 * 422 if the key was used for another purchase. Returns 0 if the key is
 * new, 1 if res holds the answer. */
static int answer_from_key(struct worker *w, const struct purchase *p, struct response *res)
{
    int32_t product, amount;
    struct outcome o;
    enum store_status st = store_key(&w->store, p->key, &product, &amount, &o);
    if (st == STORE_NOT_FOUND)
        return 0;
    if (st != STORE_OK)
        worker_store_failed(w, st, res);
    else if (product != p->product || amount != p->amount)
        response_problem(res, PROBLEM_IDEMPOTENCY_KEY_REUSED, NULL);
    else if (response_outcome(res, &o, amount) == 0)
        res->replayed = 1;
    return 1;
}

static void lock_lost(struct worker *w, const struct purchase *p, const char *why,
                      struct response *res)
{
    w->locks_lost++;
    log_warn("product %d: lock lost (%s), nothing bought; %lu so far in this worker",
             (int)p->product, why, w->locks_lost);
    response_problem(res, PROBLEM_LOCK_LOST, NULL);
}

/* Why a purchase was refused for its lock, for the log. */
static const char fenced[] = "PostgreSQL has applied a newer fence";
static const char spent[] = "its validity was spent before COMMIT";

/* Whether the lock is still ours to commit under, with the time a COMMIT
 * may take in reserve (see lock_valid). */
static int time_left(struct worker *w, const struct lock *lk)
{
    return lock_valid(&w->lock, lk, w->cfg->statement_timeout_ms + STATEMENT_GRACE_MS);
}

/* Starts a new fence epoch for the product, and buys under it. The epoch
 * begins in PostgreSQL, above every fence handed out before, and the counter
 * in Redis continues from there, so no holder from before (one paused across
 * a Redis restart included) can outbid a grant made after. Needed whenever
 * the counter cannot know how far it had got: cause says which, logged at
 * level (a counter that went back is news; one that starts again is not). */
static enum store_status new_epoch(struct worker *w, struct lock *lk, struct purchase *p,
                                   struct outcome *out, const char **why, enum log_level level,
                                   const char *cause)
{
    int64_t epoch;
    enum store_status st = store_new_epoch(&w->store, p->product, &epoch);
    if (st == STORE_NOT_FOUND)
        return store_buy(&w->store, p, out); /* it says so, and records it for a key */
    if (st != STORE_OK)
        return st;
    enum lock_status ls = lock_refence(&w->lock, lk, epoch);
    if (ls == LOCK_LOST)
        return STORE_FENCED; /* we are the stale holder the fence is for */
    if (ls != LOCK_OK) {
        log_warn("%s", w->lock.redis.err);
        return STORE_UNAVAILABLE;
    }
    log_msg(level, "product %d: new fence epoch (%s), fence %lld", (int)p->product, cause,
            (long long)lk->fence);
    p->fence = lk->fence;
    if (!time_left(w, lk)) {
        *why = spent;
        return STORE_FENCED;
    }
    return store_buy(&w->store, p, out);
}

/* PostgreSQL refused our fence as not newer than one it applied. If the
 * lock is still ours, the counter went back (Redis restarted, or failed over
 * to a replica that was behind) and needs a new epoch; else we are the stale
 * holder the fence is for. */
static enum store_status reseed(struct worker *w, struct lock *lk, struct purchase *p,
                                struct outcome *out, const char **why)
{
    switch (lock_owned(&w->lock, lk)) {
    case LOCK_OK:
        return new_epoch(w, lk, p, out, why, LOG_WARN, "the counter was behind PostgreSQL");
    case LOCK_LOST:
        return STORE_FENCED;
    default:
        log_warn("%s", w->lock.redis.err);
        return STORE_UNAVAILABLE;
    }
}

/* The purchase under the lock: buy, then commit only while the lock is
 * still valid, with the time the COMMIT may take in reserve. STORE_FENCED
 * means the lock was lost; *why says how. */
static enum store_status buy(struct worker *w, struct lock *lk, struct purchase *p,
                             struct outcome *out, const char **why)
{
    FAULT_POINT("locked");
    *why = fenced;
    p->fence = lk->fence;
    enum store_status st;
    if (lk->fence == 1) {
        /* A counter that starts now (its first grant ever, or Redis lost
         * it: a restart, FENCE_TTL_MS without a sale) knows nothing of the
         * fences before it. A holder whose time is up writes nothing. */
        if (!time_left(w, lk)) {
            *why = spent;
            return STORE_FENCED;
        }
        st = new_epoch(w, lk, p, out, why, LOG_INFO, "a new counter");
    } else {
        st = store_buy(&w->store, p, out);
        if (st == STORE_FENCED)
            st = reseed(w, lk, p, out, why);
    }
    if (st != STORE_OK)
        return st;
    FAULT_POINT("before_commit");
    if (!time_left(w, lk)) {
        store_rollback(&w->store);
        *why = spent;
        return STORE_FENCED;
    }
    return store_commit(&w->store);
}

/* Closes a queued purchase's token in PostgreSQL (store_close_token) and
 * says what became of it: STORE_OK with *out (200, 404 or 409, from a batch
 * that committed) or STORE_NOT_FOUND (never made, and now it cannot be);
 * else the store's failure, STORE_UNKNOWN included. A batch in flight that
 * holds the token past lock_timeout (STORE_BUSY) is waited for again,
 * twice. */
static enum store_status close_token(struct worker *w, const struct purchase *p, const char *token,
                                     struct outcome *out)
{
    enum store_status st = STORE_BUSY;
    for (int tries = 0; tries < 3 && st == STORE_BUSY; tries++)
        st = store_close_token(&w->store, token, p->product, p->amount, out);
    if (st != STORE_OK) {
        log_error("product %d: queued purchase %.8s...: its token cannot be closed, outcome "
                  "unknown: %s",
                  (int)p->product, token, w->store.pg.err);
        return st;
    }
    log_info("product %d: queued purchase %.8s... closed: %s", (int)p->product, token,
             out->status == 0 ? "never made" : "made by a batch that committed");
    return out->status == 0 ? STORE_NOT_FOUND : STORE_OK;
}

/* A purchase queued for the lock's holder to make (combine.h) that ended
 * without the lock: answers it from the holder's answer or, without one,
 * from PostgreSQL, closing its token. Returns 1 if it was never made and
 * may try once more on its own, 0 when res holds the answer. */
static int answer_queued(struct worker *w, const struct purchase *p, const struct lock *lk,
                         const struct lock_queue *q, enum lock_status ls, struct response *res)
{
    struct outcome o;
    int problem = PROBLEM_INTERNAL;
    if (ls == LOCK_ANSWERED) {
        switch (combine_parse_answer(q->answer, p->product, p->amount, &o, &problem)) {
        case COMBINE_OUTCOME:
            response_outcome(res, &o, p->amount);
            return 0;
        case COMBINE_KEY:
            /* Its key was used before: answer as that request did. */
            if (!answer_from_key(w, p, res))
                response_problem(res, PROBLEM_REQUEST_IN_PROGRESS, NULL);
            return 0;
        case COMBINE_PROBLEM:
            response_problem(res, (enum problem)problem, NULL);
            return 0;
        default:
            break; /* its COMMIT went unanswered: PostgreSQL knows */
        }
    } else if (ls == LOCK_UNAVAILABLE) {
        log_warn("%s", w->lock.redis.err);
    }
    switch (close_token(w, p, lk->token, &o)) {
    case STORE_OK:
        response_outcome(res, &o, p->amount);
        return 0;
    case STORE_NOT_FOUND:
        if (ls != LOCK_UNAVAILABLE)
            return 1;
        response_problem(res, PROBLEM_SERVICE_UNAVAILABLE, NULL);
        return 0;
    default:
        response_problem(res, PROBLEM_OUTCOME_UNKNOWN, NULL);
        return 0;
    }
}

/* Takes the product's lock for p, or answers p without it (res then holds
 * the answer, and the status is not LOCK_OK). With combining, p waits in
 * the product's queue, and the lock may come with queued purchases (q); a
 * purchase taken by a holder that vanished and never made tries once more. */
static enum lock_status take_lock(struct worker *w, const struct purchase *p, struct lock *lk,
                                  struct lock_queue *q, struct response *res)
{
    int64_t stock_seen = 0;
    /* A keyed purchase always asks PostgreSQL, so that its outcome is
     * recorded: no short-cut on a recent stock hint for it. */
    int32_t want = p->key == NULL ? p->amount : 0;
    for (int tries = 2;; tries--) {
        enum lock_status ls = lock_acquire(&w->lock, p->product, want, q, lk, &stock_seen);
        switch (ls) {
        case LOCK_OK:
            return ls;
        case LOCK_SOLD_OUT:
            response_insufficient(res, stock_seen, p->amount);
            return ls;
        case LOCK_TIMEOUT:
            log_info("product %d: lock busy for %d ms", (int)p->product, w->cfg->lock_wait_ms);
            response_problem(res, PROBLEM_LOCK_TIMEOUT, NULL);
            return ls;
        case LOCK_UNAVAILABLE:
            if (q->queued)
                break;
            log_warn("%s", w->lock.redis.err);
            response_problem(res, PROBLEM_SERVICE_UNAVAILABLE, NULL);
            return ls;
        default:
            break;
        }
        if (!answer_queued(w, p, lk, q, ls, res))
            return ls;
        if (tries == 1) {
            response_problem(res, PROBLEM_LOCK_TIMEOUT, NULL);
            return LOCK_TIMEOUT;
        }
    }
}

/* buy(), with the queued purchases the lock brought (q) in the same
 * transaction, as batch; their answers, for the release, in answers[0..*n).
 * If one of them makes the batch fail, ours is made alone. */
static enum store_status buy_with_queued(struct worker *w, struct lock *lk, struct purchase *p,
                                         const struct lock_queue *q, struct combine_batch *batch,
                                         char (*answers)[LOCK_ANSWER_MAX], int *n,
                                         struct outcome *out, const char **why)
{
    if (q->taken > 0) {
        combine_start(batch, p, q->batch, q->taken);
        p->batch = batch;
    }
    enum store_status st = buy(w, lk, p, out, why);
    *n = p->batch != NULL ? batch->n - 1 : 0;
    for (int i = 0; i < *n; i++)
        combine_answer(batch, i + 1, st, answers[i]);
    if (st == STORE_ALONE) {
        /* Those we took queue again (their answer is "retry"). */
        log_info("product %d: a purchase taken with the lock made the batch fail (%s); "
                 "the %d taken queue again, ours goes alone",
                 (int)p->product, w->store.pg.err, *n);
        p->batch = NULL;
        st = buy(w, lk, p, out, why);
    }
    if (st == STORE_OK)
        metrics_observe_count(&w->metrics.data->batch_size, p->batch != NULL ? batch->n : 1);
    return st;
}

/* The stock the purchase (or batch) left, for the lock's stock hint. */
static int64_t stock_after(const struct purchase *p, enum store_status st,
                           const struct outcome *out)
{
    if (p->batch != NULL)
        return st != STORE_OK    ? LOCK_STOCK_NONE
               : p->batch->found ? p->batch->stock
                                 : LOCK_STOCK_NO_PRODUCT;
    return st == STORE_OK             ? out->order.remaining
           : st == STORE_INSUFFICIENT ? out->available
           : st == STORE_NOT_FOUND    ? LOCK_STOCK_NO_PRODUCT
                                      : LOCK_STOCK_NONE;
}

void purchase_handle(struct worker *w, struct http_request *req, int32_t product,
                     struct response *res)
{
    struct purchase p = {.product = product, .key = req->idempotency_key};
    w->trace.product = product;
    const char *detail;
    enum problem problem = read_request(req, &p.amount, &detail);
    if (problem != PROBLEM_NONE) {
        response_problem(res, problem, detail);
        return;
    }
    w->trace.amount = p.amount;

    /* Reconnecting inside the critical section would stretch the time the
     * lock is held by a connect timeout: repair connections first. */
    enum store_status st = store_ready(&w->store);
    if (st != STORE_OK) {
        worker_store_failed(w, st, res);
        return;
    }
    /* A retry of a purchase already made is answered without the lock. */
    if (p.key != NULL && answer_from_key(w, &p, res))
        return;

    struct lock lk;
    char taken[LOCK_BATCH_MAX][LOCK_ENTRY_MAX];
    char payload[LOCK_ENTRY_MAX - 33];
    struct lock_queue q = {.batch_max = w->cfg->combine_max, .batch = taken};
    if (w->cfg->combine_max > 0 && combine_payload(payload, sizeof payload, p.amount, p.key) == 0)
        q.payload = payload; /* with combining, it waits in the product's queue */
    int64_t asked = clock_us();
    enum lock_status ls = take_lock(w, &p, &lk, &q, res);
    int64_t granted = clock_us();
    w->trace.lock_wait_us = granted - asked;
    if (ls != LOCK_OK)
        return;

    /* The purchases that queued while the lock was busy are made with ours,
     * in one transaction (combine.h). */
    struct combine_batch batch;
    char answers[LOCK_BATCH_MAX][LOCK_ANSWER_MAX];
    int n = 0;
    struct outcome out;
    const char *why;
    int64_t begun = clock_us();
    st = buy_with_queued(w, &lk, &p, &q, &batch, answers, &n, &out, &why);
    w->trace.tx_us = clock_us() - begun;
    int64_t stock_left = stock_after(&p, st, &out);
    if (st == STORE_OK)
        FAULT_POINT("committed");
    /* Our own key was used before (status 0): answer as that request did. */
    if (p.batch != NULL && st == STORE_OK && out.status == 0)
        st = STORE_KEY_EXISTS;

    /* Released on every path. If Redis cannot be told, the lock expires by
     * its TTL (and the batch's buyers ask PostgreSQL); a committed purchase
     * stays committed either way, because PostgreSQL, not the lock, guards
     * the stock. */
    switch (lock_release(&w->lock, &lk, stock_left, answers, n)) {
    case LOCK_OK:
        break;
    case LOCK_LOST:
        log_warn("product %d: lock expired before release (purchase took longer than "
                 "LOCK_TTL_MS)",
                 (int)product);
        break;
    default:
        log_warn("product %d: lock not released, it expires by TTL: %s", (int)product,
                 w->lock.redis.err);
        break;
    }
    w->trace.lock_hold_us = clock_us() - granted;

    switch (st) {
    case STORE_OK:
    case STORE_NOT_FOUND:
    case STORE_INSUFFICIENT:
        response_outcome(res, &out, p.amount);
        break;
    case STORE_FENCED:
        lock_lost(w, &p, why, res);
        break;
    case STORE_KEY_EXISTS:
        /* The same key committed while we waited: answer as it did. */
        if (!answer_from_key(w, &p, res))
            response_problem(res, PROBLEM_REQUEST_IN_PROGRESS, NULL);
        break;
    case STORE_KEY_BUSY:
        log_info("product %d: idempotency key still held by a request in flight", (int)product);
        response_problem(res, PROBLEM_REQUEST_IN_PROGRESS, NULL);
        break;
    case STORE_BUSY:
        /* Another transaction (another host's, whose COMMIT is late) holds
         * the product's row: the product is busy, as when its Redis lock
         * is, and nothing here is unavailable. */
        log_info("product %d: row busy past lock_timeout: %s", (int)product, w->store.pg.err);
        response_problem(res, PROBLEM_LOCK_TIMEOUT, NULL);
        break;
    case STORE_UNKNOWN:
        log_error("product %d: purchase outcome unknown: %s", (int)product, w->store.pg.err);
        response_problem(res, PROBLEM_OUTCOME_UNKNOWN, NULL);
        break;
    default:
        worker_store_failed(w, st, res);
        break;
    }
}
