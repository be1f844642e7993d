/* lock.c -- see lock.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "config.h"
#include "lock.h"
#include "log.h"
#include "redis.h"
#include "stringify.h"

/* The longest single wait. A token can be lost: a waiter that took one may
 * die, or fail to reach Redis, before it acts on it. The other waiters then
 * notice the free lock within a slice, not at their deadline; a slice is
 * long enough that in a healthy queue it never runs out. A hand-off is kept
 * for as long. */
#define WAIT_SLICE_MS 250

/* The three scripts. Each takes KEYS = {lock, fence, wake, stock, queue,
 * handoff} and ARGV = {token, ttl, ...}, runs atomically, in one round
 * trip, and answers {status, value, strings...}. A queued buyer's keys are
 * named from its token: reply:{token} (its answers), queued:{token} (it is
 * waiting, until its deadline) and taken:{token} (a holder took its
 * purchase: that holder's lock token); an entry and an answer begin with
 * the token. The Lua is kept as written, one statement a line, not as
 * clang-format would fold it. */
/* clang-format off */
/* Shared by acquire and release: hands the free lock to the oldest queued
 * buyer still waiting (queued:{token} alive), with a "go" in its reply list
 * and handoff = its token for a slice, so that nobody else takes the lock
 * meanwhile; entries of buyers that left or died are dropped. false if
 * nobody waits. */
#define LUA_HAND_OFF \
    "local function hand_off(keep) " \
    "  while true do " \
    "    local head = redis.call('LPOP', KEYS[5]) " \
    "    if not head then return false end " \
    "    local t = string.sub(head, 1, 32) " \
    "    if redis.call('DEL', 'queued:' .. t) == 1 then " \
    "      redis.call('RPUSH', 'reply:' .. t, 'go') " \
    "      redis.call('PEXPIRE', 'reply:' .. t, keep) " \
    "      redis.call('SET', KEYS[6], t, 'PX', " STRINGIFY(WAIT_SLICE_MS) ") " \
    "      return true " \
    "    end " \
    "  end " \
    "end "
static const char *const script_source[SCRIPT_COUNT] = {
    /* Acquire. ARGV = {token, ttl, want (0: do not short-cut), woken (1 if
     * a wake-up token woke the caller), entry, mode, batch max, keep, wait
     * left}. mode: 'n' do not queue; 'q' queue at the back if busy; 'f'
     * queue at the front if busy (after a hand-off, or a batch that failed);
     * 'w' queued, checking; 'l' queued, leaving at the deadline. A lock
     * handed off to another buyer counts as busy.
     *   {1, fence, entries...}  the lock, with up to max queued purchases
     *               of buyers still waiting, each marked taken by us;
     *   {2, stock}  a recent purchase saw less stock than wanted (a wake-up
     *               token or a hand-off that came to the caller is passed
     *               on if the lock is free: the caller releases nothing);
     *   {3, 0, answer}  an answer was waiting in our reply list;
     *   {4, pttl}  our purchase was taken by the current holder: wait;
     *   {5, 0}     taken by a holder that is gone, without an answer;
     *   {6, 0}     out of the queue and never taken (left, or dropped when
     *              its wait ran out): nothing bought;
     *   {0, pttl}  busy (queued, if asked and time is left): wait at most
     *              pttl.
     * A taken mark lives as long as a buyer may wait (keep), so that "no
     * mark" always means "never taken". */
    [SCRIPT_ACQUIRE] =
        LUA_HAND_OFF
        "local token, mode, q = ARGV[1], ARGV[6], KEYS[5] "
        "local reply, taken = 'reply:' .. token, 'taken:' .. token "
        "local function orphan() "
        "  local by = redis.call('GET', taken) "
        "  if not by then return {6, 0} end "
        "  if by == redis.call('GET', KEYS[1]) then "
        "    return {4, redis.call('PTTL', KEYS[1])} "
        "  end "
        "  redis.call('DEL', taken) "
        "  return {5, 0} "
        "end "
        "if mode == 'w' or mode == 'l' then "
        "  local a = redis.call('LPOP', reply) "
        "  if a then return {3, 0, a} end "
        "  if mode == 'l' then "
        "    if redis.call('LREM', q, 1, ARGV[5]) == 1 then "
        "      redis.call('DEL', 'queued:' .. token) "
        "      return {6, 0} "
        "    end "
        "    return orphan() "
        "  end "
        "  if not redis.call('LPOS', q, ARGV[5]) then return orphan() end "
        "end "
        "local want = tonumber(ARGV[3]) "
        "if want > 0 and mode ~= 'w' then "
        "  local seen = redis.call('GET', KEYS[4]) "
        "  if seen and tonumber(seen) < want then "
        "    if redis.call('EXISTS', KEYS[1]) == 0 then "
        "      if mode == 'f' and redis.call('GET', KEYS[6]) == token then "
        "        redis.call('DEL', KEYS[6]) "
        "        hand_off(ARGV[8]) "
        "      elseif ARGV[4] == '1' then "
        "        redis.call('DEL', KEYS[3]) "
        "        redis.call('LPUSH', KEYS[3], 1) "
        "        redis.call('PEXPIRE', KEYS[3], ARGV[2]) "
        "      end "
        "    end "
        "    return {2, tonumber(seen)} "
        "  end "
        "end "
        "local to = redis.call('GET', KEYS[6]) "
        "if (not to or to == token) and redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2]) then "
        "  if to then redis.call('DEL', KEYS[6]) end "
        "  local out = {1, redis.call('INCR', KEYS[2])} "
        "  redis.call('PEXPIRE', KEYS[2], " FENCE_TTL_MS_TEXT ") "
        "  if mode == 'w' then "
        "    redis.call('LREM', q, 1, ARGV[5]) "
        "    redis.call('DEL', 'queued:' .. token) "
        "  end "
        "  local max = tonumber(ARGV[7]) "
        "  if max > 0 then "
        "    for _, e in ipairs(redis.call('LPOP', q, max) or {}) do "
        "      local t = string.sub(e, 1, 32) "
        "      if redis.call('DEL', 'queued:' .. t) == 1 then "
        "        redis.call('SET', 'taken:' .. t, token, 'PX', ARGV[8]) "
        "        out[#out + 1] = e "
        "      end "
        "    end "
        "  end "
        "  return out "
        "end "
        "local queue = (mode == 'q' or mode == 'f') and tonumber(ARGV[9]) > 1 "
        "if queue and mode == 'q' then redis.call('RPUSH', q, ARGV[5]) end "
        "if queue and mode == 'f' then redis.call('LPUSH', q, ARGV[5]) end "
        "if queue then "
        "  redis.call('SET', 'queued:' .. token, 1, 'PX', ARGV[9]) "
        "  redis.call('PEXPIRE', q, ARGV[8]) "
        "end "
        "local pttl = redis.call('PTTL', KEYS[1]) "
        "if pttl == -2 and to then pttl = redis.call('PTTL', KEYS[6]) end "
        "return {0, pttl}",
    /* Release. ARGV = {token, ttl, stock seen (-1 for none, -2 for no such
     * product), keep, answers...}. First the answers, each "token:text" into
     * its buyer's reply list, whoever holds the lock now: they are true
     * either way. Then delete the lock only if it still holds our token (a
     * plain DEL would free a lock that expired while we were slow and now
     * belongs to someone else); hand it off to the oldest queued buyer, or
     * else leave one wake-up token for the next waiter; and leave the stock
     * seen. A product that does not exist keeps no counter: ids are the
     * client's to choose. */
    [SCRIPT_RELEASE] =
        LUA_HAND_OFF
        "for i = 5, #ARGV do "
        "  local t = string.sub(ARGV[i], 1, 32) "
        "  redis.call('RPUSH', 'reply:' .. t, string.sub(ARGV[i], 34)) "
        "  redis.call('PEXPIRE', 'reply:' .. t, ARGV[4]) "
        "  redis.call('DEL', 'taken:' .. t) "
        "end "
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end "
        "redis.call('DEL', KEYS[1], KEYS[3]) "
        "if not hand_off(ARGV[4]) then "
        "  redis.call('LPUSH', KEYS[3], 1) "
        "  redis.call('PEXPIRE', KEYS[3], ARGV[2]) "
        "end "
        "if tonumber(ARGV[3]) >= 0 then "
        "  redis.call('SET', KEYS[4], ARGV[3], 'PX', " STOCK_HINT_MS_TEXT ") "
        "elseif ARGV[3] == '-2' then "
        "  redis.call('DEL', KEYS[2]) "
        "end "
        "return {1, 0}",
    /* Refence. ARGV = {token, floor}: while we still hold the lock, raise
     * the counter to PostgreSQL's new fence epoch and draw a new fence:
     * {1, fence}; {0, 0} if the lock is no longer ours. */
    [SCRIPT_REFENCE] =
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end "
        "if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then "
        "  redis.call('SET', KEYS[2], ARGV[2]) "
        "end "
        "local fence = redis.call('INCR', KEYS[2]) "
        "redis.call('PEXPIRE', KEYS[2], " FENCE_TTL_MS_TEXT ") "
        "return {1, fence}",
};
/* clang-format on */

static int fill_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int new_token(char out[33])
{
    unsigned char raw[16];
    if (fill_random(raw, sizeof raw) < 0)
        return -1;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* The most ARGV a script takes: the release's four and its answers. */
#define SCRIPT_ARGV_MAX (9 + LOCK_BATCH_MAX)

/* Runs script s on lk's keys with ARGV = {lk->token, args...}. NULL after a
 * connection error (the context is gone). */
static redisReply *eval(struct lock_client *lc, enum lock_script s, const struct lock *lk,
                        const char *const *args, int nargs)
{
    const char *argv[10 + SCRIPT_ARGV_MAX] = {
        NULL,         NULL,          "6",           lk->key,         lk->fence_key,
        lk->wake_key, lk->stock_key, lk->queue_key, lk->handoff_key, lk->token};
    int argc = 10;
    for (int i = 0; i < nargs && i < SCRIPT_ARGV_MAX - 1; i++)
        argv[argc++] = args[i];
    return redis_eval(&lc->redis, s, argc, argv);
}

/* A script's answer: {status, value, strings...}. */
struct script_reply {
    int64_t value;
    char (*strings)[LOCK_ENTRY_MAX]; /* room for cap strings, or NULL */
    int cap, n;
};

/* Whether an error reply to a script proves that it wrote nothing. Redis
 * 7 refuses a script's write above maxmemory (OOM, with noeviction), with
 * too few replicas in reach (NOREPLICAS, min-replicas-to-write) or after a
 * failed save (MISCONF) only while the script has written nothing, so that
 * no script stops half done (script.c: SCRIPT_WRITE_DIRTY): a refusal is
 * of its first write. And it runs no script at all while another one is
 * BUSY, while it is LOADING its data set, or on a replica cut off from its
 * primary (MASTERDOWN). */
static int refused_unwritten(const redisReply *r)
{
    /* Anywhere in the text: Redis 6 wraps a refused write in the script's
     * own error ("ERR Error running script ..."). */
    static const char *const first_write[] = {"OOM command not allowed", "NOREPLICAS ", "MISCONF "};
    static const char *const at_the_door[] = {"BUSY ", "LOADING ", "MASTERDOWN "};
    for (size_t i = 0; i < sizeof first_write / sizeof first_write[0]; i++)
        if (strstr(r->str, first_write[i]) != NULL)
            return 1;
    for (size_t i = 0; i < sizeof at_the_door / sizeof at_the_door[0]; i++)
        if (strncmp(r->str, at_the_door[i], strlen(at_the_door[i])) == 0)
            return 1;
    return 0;
}

/* Runs a script and reads its answer into *out: the status (>= 0); -1
 * when Redis failed and the script may have written (a lost connection, an
 * error part-way); -2 when Redis refused it before it wrote anything. */
static int run_script(struct lock_client *lc, enum lock_script s, const struct lock *lk,
                      const char *const *args, int nargs, struct script_reply *out,
                      const char *what)
{
    redisReply *r = eval(lc, s, lk, args, nargs);
    if (r == NULL)
        return -1;
    int status = -1;
    out->n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        status = (int)r->element[0]->integer;
        out->value = r->element[1]->integer;
        for (size_t i = 2; i < r->elements && out->n < out->cap; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                snprintf(out->strings[out->n++], LOCK_ENTRY_MAX, "%s", r->element[i]->str);
    } else {
        redis_reply_err(&lc->redis, what, r);
        if (r->type == REDIS_REPLY_ERROR && refused_unwritten(r))
            status = -2;
    }
    freeReplyObject(r);
    return status;
}

/* How long a queued buyer's reply list and the queue itself outlive their
 * last use: a buyer waits LOCK_WAIT_MS, then for as long as a holder that
 * took its purchase may hold the lock. */
static int64_t keep_ms(const struct lock_client *lc)
{
    return lc->cfg->lock_wait_ms + 2 * (int64_t)lc->cfg->lock_ttl_ms;
}

static int run_release(struct lock_client *lc, const struct lock *lk, int64_t stock_seen,
                       const char (*answers)[LOCK_ANSWER_MAX], int n)
{
    char ttl[16], seen[24], keep[24];
    const char *args[SCRIPT_ARGV_MAX] = {ttl, seen, keep};
    struct script_reply out = {0};
    snprintf(ttl, sizeof ttl, "%d", lc->cfg->lock_ttl_ms);
    snprintf(seen, sizeof seen, "%lld", (long long)stock_seen);
    snprintf(keep, sizeof keep, "%lld", (long long)keep_ms(lc));
    for (int i = 0; i < n && i < LOCK_BATCH_MAX; i++)
        args[3 + i] = answers[i];
    return run_script(lc, SCRIPT_RELEASE, lk, args, 3 + (n < LOCK_BATCH_MAX ? n : LOCK_BATCH_MAX),
                      &out, "release");
}

/* Redis and this host may not agree on the length of a millisecond: the
 * Redlock margin of 1% of the TTL plus 2 ms. */
static int drift_ms(int ttl)
{
    return ttl / 100 + 2;
}

/* Remembers lk as a lock we may hold but could not release, sent_ms being
 * when the command that failed was sent: the acquire's for an acquire, the
 * release's for a release (not lk's grant: a record must not end before the
 * lock it names could). Only the most recent is kept: see lock.h. */
static void remember(struct lock_client *lc, const struct lock *lk, int64_t sent_ms)
{
    lc->unreleased = *lk;
    lc->unreleased.started_ms = sent_ms;
}

/* Releases the lock a failed command may have left (lc->unreleased),
 * owner-checked, on every call that reaches Redis until a TTL has passed
 * since that command was sent; not just once, for a SET that arrives late
 * behind a relay (lock.h). A failed release's lock has expired by then.
 * Finding the lock not ours is normal (not yet there, or never to be): it
 * is not logged. The cost is one more round trip per call, and only while
 * a record is pending: a TTL at most after a failure. After that the
 * record is dropped without one. Timed on CLOCK_MONOTONIC: a wall-clock step
 * cannot cut it short, and time this host spent suspended only makes it
 * longer. 0, or -1 when the connection failed (the record stays). */
static int release_left_over(struct lock_client *lc)
{
    struct lock *u = &lc->unreleased;
    int ttl = lc->cfg->lock_ttl_ms;
    if (u->key[0] == '\0')
        return 0;
    if (clock_ms() >= u->started_ms + ttl + drift_ms(ttl)) {
        u->key[0] = '\0';
        return 0;
    }
    switch (run_release(lc, u, LOCK_STOCK_NONE, NULL, 0)) {
    case 1:
        /* A command is delivered once: this one cannot come back. */
        log_info("released %s, left over from a failed command", u->key);
        u->key[0] = '\0';
        return 0;
    case 0:
        return 0;
    default:
        /* -1 or -2: a lost connection or an answer that was not the script's
         * (BUSY, OOM, a failed EVAL after NOSCRIPT; READONLY drops the
         * connection: redis.h). Only a lost
         * connection fails the caller's command too: on one that works,
         * failing every call for up to a TTL over one release would make
         * the record cost more than the lock it is there to give back. The
         * record stays, and the next call tries again. No caller reports
         * this failure (theirs may succeed), so it is logged here. */
        if (lc->redis.ctx == NULL)
            return -1;
        log_warn("%s (left over: %s, tried again on the next call)", lc->redis.err, u->key);
        return 0;
    }
}

_Static_assert(SCRIPT_COUNT <= REDIS_SCRIPTS_MAX, "the connection has room for every script");

int lock_client_open(struct lock_client *lc, const struct config *cfg)
{
    memset(lc, 0, sizeof *lc);
    lc->cfg = cfg;
    return redis_open(&lc->redis, cfg, script_source, SCRIPT_COUNT);
}

void lock_client_close(struct lock_client *lc)
{
    redis_close(&lc->redis);
}

enum lock_status lock_ready(struct lock_client *lc)
{
    if (redis_ready(&lc->redis) < 0)
        return LOCK_UNAVAILABLE;
    return release_left_over(lc) < 0 ? LOCK_UNAVAILABLE : LOCK_OK;
}

/* Reconnects and runs the left-over release at once, after a command lost
 * with its connection. The caller reports that loss: lc->redis.err keeps its
 * text (not "redis connect: ..." from a reconnect that failed too), and a
 * reconnect that failed counts no second failure in lc->redis.errors, being
 * the same outage seen again. An error reply to the release, on a reconnect
 * that worked, is a failure of its own: release_left_over logged it, and it
 * stays counted. */
static void give_back_now(struct lock_client *lc)
{
    char err[sizeof lc->redis.err];
    unsigned long errors = lc->redis.errors;
    memcpy(err, lc->redis.err, sizeof err);
    if (lock_ready(lc) != LOCK_OK)
        lc->redis.errors = errors;
    memcpy(lc->redis.err, err, sizeof err);
}

/* One acquire attempt's arguments, kept across the attempts of one call. */
struct attempt {
    char ttl[16], want[16], woken[2], mode[2], max[8], keep[24], left[24];
    char entry[LOCK_ENTRY_MAX];
    char reply_key[48];
};

static void attempt_init(struct attempt *a, const struct lock_client *lc, int32_t want,
                         const struct lock_queue *q, const struct lock *lk)
{
    snprintf(a->ttl, sizeof a->ttl, "%d", lc->cfg->lock_ttl_ms);
    snprintf(a->want, sizeof a->want, "%" PRId32, want);
    snprintf(a->keep, sizeof a->keep, "%lld", (long long)keep_ms(lc));
    snprintf(a->max, sizeof a->max, "%d", q != NULL && q->payload != NULL ? q->batch_max : 0);
    snprintf(a->entry, sizeof a->entry, "%s:%s", lk->token,
             q != NULL && q->payload != NULL ? q->payload : "");
    snprintf(a->reply_key, sizeof a->reply_key, "reply:%s", lk->token);
    snprintf(a->woken, sizeof a->woken, "0");
    snprintf(a->mode, sizeof a->mode, "%s", q != NULL && q->payload != NULL ? "q" : "n");
}

/* What an answer left in our reply list means: the lock handed to us ("go")
 * or a batch that made nothing of ours ("retry"), both meaning "try again,
 * at the front of the queue"; else our purchase's answer. 1 for the former,
 * 0 for the latter (copied to q->answer). */
static int try_again(struct lock_queue *q, struct attempt *a, const char *answer)
{
    if (strcmp(answer, "go") == 0 || strcmp(answer, "retry") == 0) {
        snprintf(a->mode, sizeof a->mode, "f");
        q->queued = 0;
        return 1;
    }
    /* A batch that failed for a key in flight elsewhere: a keyed purchase
     * waits for the lock on its own from now on, so that the one whose key
     * it is cannot fail batch after batch. */
    if (strcmp(answer, "alone") == 0) {
        snprintf(a->mode, sizeof a->mode, "n");
        snprintf(a->max, sizeof a->max, "0");
        q->queued = 0;
        return 1;
    }
    snprintf(q->answer, sizeof q->answer, "%s", answer);
    return 0;
}

/* How a failed command left the attempt. */
enum attempt_loss {
    WAIT_FAILED,     /* the wait, not the acquire: nothing new was written */
    ACQUIRE_REFUSED, /* Redis refused the acquire before it wrote anything */
    ACQUIRE_UNKNOWN  /* the acquire may have been applied, or may be yet */
};

/* The attempt's outcome after a failed command. An acquire whose effect is
 * unknown may have taken the lock: lost with its connection, it may have
 * been applied, or may be yet; answered with an error, the script may have
 * failed after its SET. Remember it, and if the connection was lost, try to
 * give it back at once, on a new connection. A queue entry it may have left
 * stays q->queued: the caller asks PostgreSQL. An acquire Redis refused
 * unwritten (OOM, say) left nothing: the purchase is queued only if an
 * earlier attempt queued it (mode 'w' or 'l'), and no lock is remembered,
 * so that a refusal costs PostgreSQL nothing. */
static enum lock_status attempt_failed(struct lock_client *lc, struct lock *lk,
                                       struct lock_queue *q, const struct attempt *a,
                                       enum attempt_loss loss)
{
    int was_queued = a->mode[0] == 'w' || a->mode[0] == 'l';
    if (q != NULL && a->mode[0] != 'n' && (loss != ACQUIRE_REFUSED || was_queued))
        q->queued = 1;
    /* An error reply too: the script may have failed after its SET. */
    int acquire_sent = loss == ACQUIRE_UNKNOWN;
    if (acquire_sent)
        remember(lc, lk, lc->redis.sent_ms);
    if (acquire_sent && lc->redis.ctx == NULL)
        give_back_now(lc);
    return LOCK_UNAVAILABLE;
}

enum lock_status lock_acquire(struct lock_client *lc, int32_t product, int32_t want,
                              struct lock_queue *q, struct lock *lk, int64_t *stock_seen)
{
    snprintf(lk->key, sizeof lk->key, "lock:product:%" PRId32, product);
    snprintf(lk->fence_key, sizeof lk->fence_key, "fence:product:%" PRId32, product);
    snprintf(lk->wake_key, sizeof lk->wake_key, "wake:product:%" PRId32, product);
    snprintf(lk->stock_key, sizeof lk->stock_key, "stock:product:%" PRId32, product);
    snprintf(lk->queue_key, sizeof lk->queue_key, "queue:product:%" PRId32, product);
    snprintf(lk->handoff_key, sizeof lk->handoff_key, "handoff:product:%" PRId32, product);
    lk->fence = 0;
    if (q != NULL) {
        q->taken = 0;
        q->queued = 0;
        q->answer[0] = '\0';
    }
    if (new_token(lk->token) < 0) {
        redis_set_err(&lc->redis, "getrandom: %s", strerror(errno));
        return LOCK_UNAVAILABLE;
    }
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;

    struct attempt a;
    attempt_init(&a, lc, want, q, lk);
    const char *const args[] = {a.ttl, a.want, a.woken, a.entry, a.mode, a.max, a.keep, a.left};
    char one[1][LOCK_ENTRY_MAX];
    struct script_reply out = {0, one, 1, 0};
    if (q != NULL && q->payload != NULL && q->batch_max > 0)
        out = (struct script_reply){0, q->batch, q->batch_max, 0};
    int64_t deadline = clock_ms() + lc->cfg->lock_wait_ms;
    for (;;) {
        /* Validity is counted from before the request, so that the time the
         * reply took is not counted as ours. */
        lk->started_ms = clock_ms();
        /* How long a queued purchase stays on offer: until our deadline. */
        snprintf(a.left, sizeof a.left, "%lld",
                 (long long)(deadline > lk->started_ms ? deadline - lk->started_ms : 1));
        int status = run_script(lc, SCRIPT_ACQUIRE, lk, args, 8, &out, "acquire");
        switch (status) {
        case 1:
            lk->fence = out.value;
            if (q != NULL && q->payload != NULL)
                q->taken = out.n;
            return LOCK_OK;
        case 2:
            *stock_seen = out.value;
            return LOCK_SOLD_OUT;
        case 3:
            if (out.n == 1 && !try_again(q, &a, out.strings[0]))
                return LOCK_ANSWERED;
            continue; /* the lock is free, or soon will be: try at once */
        case 5:
            q->queued = 1;
            return LOCK_ORPHANED;
        case 6:
            return LOCK_TIMEOUT; /* left the queue: nothing bought */
        case 0:
        case 4:
            break;
        default:
            return attempt_failed(lc, lk, q, &a, status == -2 ? ACQUIRE_REFUSED : ACQUIRE_UNKNOWN);
        }
        if (a.mode[0] != 'n')
            snprintf(a.mode, sizeof a.mode, "w"); /* queued now */
        int64_t left = deadline - clock_ms();
        /* A purchase a holder took (4) is waited for past the deadline: its
         * answer is on its way, within the holder's TTL. */
        if (left <= 0 && status == 0) {
            if (a.mode[0] == 'n')
                return LOCK_TIMEOUT;
            snprintf(a.mode, sizeof a.mode, "l");
            continue;
        }
        /* value is the holder's PTTL: no release can come later than that.
         * -2 means the lock went away after our attempt: try again at once;
         * -1 (a lock without expiry: not one of ours) waits a slice. */
        int64_t ms = out.value > 0 ? out.value : out.value == -2 ? 1 : WAIT_SLICE_MS;
        ms = ms < left || status == 4 ? ms : left;
        ms = ms < WAIT_SLICE_MS ? ms : WAIT_SLICE_MS;
        int got;
        if (a.mode[0] == 'n') {
            got = redis_wait_item(&lc->redis, lk->wake_key, ms, NULL, 0);
            snprintf(a.woken, sizeof a.woken, "%d", got > 0);
        } else {
            char answer[LOCK_ANSWER_MAX];
            got = redis_wait_item(&lc->redis, a.reply_key, ms, answer, sizeof answer);
            if (got > 0 && !try_again(q, &a, answer))
                return LOCK_ANSWERED;
        }
        if (got < 0)
            return attempt_failed(lc, lk, q, &a, WAIT_FAILED);
    }
}

enum lock_status lock_release(struct lock_client *lc, const struct lock *lk, int64_t stock_seen,
                              const char (*answers)[LOCK_ANSWER_MAX], int n)
{
    /* Not sent, the release counts as sent now; sent and lost, from when
     * it was. Either is after the grant. */
    if (lock_ready(lc) != LOCK_OK) {
        remember(lc, lk, clock_ms());
        return LOCK_UNAVAILABLE;
    }
    int rc = run_release(lc, lk, stock_seen, answers, n);
    if (rc < 0) {
        remember(lc, lk, lc->redis.sent_ms);
        return LOCK_UNAVAILABLE;
    }
    return rc == 1 ? LOCK_OK : LOCK_LOST;
}

enum lock_status lock_refence(struct lock_client *lc, struct lock *lk, int64_t floor)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)floor);
    const char *const args[] = {text};
    struct script_reply out = {0};
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;
    switch (run_script(lc, SCRIPT_REFENCE, lk, args, 1, &out, "refence")) {
    case 1:
        lk->fence = out.value;
        return LOCK_OK;
    case 0:
        return LOCK_LOST;
    default:
        return LOCK_UNAVAILABLE;
    }
}

int lock_valid(const struct lock_client *lc, const struct lock *lk, int reserve_ms)
{
    int ttl = lc->cfg->lock_ttl_ms;
    return clock_ms() + reserve_ms < lk->started_ms + ttl - drift_ms(ttl);
}

enum lock_status lock_owned(struct lock_client *lc, const struct lock *lk)
{
    if (lock_ready(lc) != LOCK_OK)
        return LOCK_UNAVAILABLE;
    redisReply *r = redis_command(&lc->redis, "GET %s", lk->key);
    if (r == NULL)
        return LOCK_UNAVAILABLE;
    enum lock_status st = LOCK_UNAVAILABLE;
    if (r->type == REDIS_REPLY_STRING)
        st = strcmp(r->str, lk->token) == 0 ? LOCK_OK : LOCK_LOST;
    else if (r->type == REDIS_REPLY_NIL)
        st = LOCK_LOST;
    else
        redis_reply_err(&lc->redis, "GET", r);
    freeReplyObject(r);
    return st;
}
