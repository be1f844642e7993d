/* combine.c -- see combine.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "combine.h"
#include "log.h"
#include "problem.h"

int combine_payload(char *buf, size_t cap, int32_t amount, const char *key)
{
    int n = snprintf(buf, cap, "%" PRId32 ":%s", amount, key != NULL ? key : "");
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int combine_parse_entry(const char *entry, struct combine_item *item)
{
    const char *amount = strchr(entry, ':');
    if (amount == NULL || amount - entry != 32)
        return -1;
    char *end;
    long long units = strtoll(amount + 1, &end, 10);
    if (*end != ':' || units < 1 || units > INT32_MAX || strlen(end + 1) >= sizeof item->key)
        return -1;
    memset(item, 0, sizeof *item);
    memcpy(item->token, entry, 32);
    item->amount = (int32_t)units;
    snprintf(item->key, sizeof item->key, "%s", end + 1);
    return 0;
}

void combine_start(struct combine_batch *b, const struct purchase *own,
                   char (*entries)[LOCK_ENTRY_MAX], int n)
{
    memset(b, 0, sizeof *b);
    b->product = own->product;
    b->items[0].amount = own->amount;
    snprintf(b->items[0].key, sizeof b->items[0].key, "%s", own->key != NULL ? own->key : "");
    b->n = 1;
    for (int i = 0; i < n && b->n < COMBINE_BATCH_MAX; i++) {
        if (combine_parse_entry(entries[i], &b->items[b->n]) == 0)
            b->n++;
        else
            log_error("product %d: a queued purchase this version cannot read, dropped "
                      "(token %.8s...)",
                      (int)b->product, entries[i]);
    }
}

void combine_allocate(struct combine_batch *b, int found, int64_t stock, const int64_t *ids)
{
    int next_id = 0;
    b->found = found;
    b->stock_before = stock;
    b->sold = 0;
    for (int i = 0; i < b->n; i++) {
        struct combine_item *it = &b->items[i];
        struct outcome *o = &it->out;
        memset(o, 0, sizeof *o);
        o->order.product_id = b->product;
        o->order.amount = it->amount;
        if (!it->claimed)
            continue; /* status 0: answered from its key */
        if (!found) {
            o->status = 404;
        } else if (it->amount <= stock) {
            stock -= it->amount;
            b->sold += it->amount;
            o->status = 200;
            o->order.id = ids[next_id++];
            o->order.remaining = stock;
        } else {
            o->status = 409;
            o->available = stock;
        }
    }
    b->stock = stock;
}

/* The text of item's answer after a batch that ended with st. */
static void answer_text(const struct combine_item *it, enum store_status st, char *out, size_t cap)
{
    const struct outcome *o = &it->out;
    enum problem p;
    switch (st) {
    case STORE_OK:
        if (!it->claimed)
            snprintf(out, cap, "key");
        else if (o->status == 200)
            snprintf(out, cap, "200 %" PRId64 " %" PRId64, o->order.id, o->order.remaining);
        else if (o->status == 409)
            snprintf(out, cap, "409 %" PRId64, o->available);
        else
            snprintf(out, cap, "404");
        return;
    case STORE_FENCED:
        /* Nothing of the batch was made, and the lock was lost with it:
         * the buyer queues again. */
        snprintf(out, cap, "retry");
        return;
    case STORE_ALONE:
        /* Nothing of the batch was made, because of one of its purchases:
         * a key in flight elsewhere, or a token closed. The buyer queues
         * again; a keyed one waits alone (lock.c), since its key may be
         * the one. */
        snprintf(out, cap, it->key[0] != '\0' ? "alone" : "retry");
        return;
    case STORE_UNKNOWN:
        snprintf(out, cap, "unknown");
        return;
    case STORE_BUSY:
        p = PROBLEM_LOCK_TIMEOUT;
        break;
    case STORE_UNAVAILABLE:
        p = PROBLEM_SERVICE_UNAVAILABLE;
        break;
    default:
        p = PROBLEM_INTERNAL;
        break;
    }
    snprintf(out, cap, "problem %d", (int)p);
}

void combine_answer(const struct combine_batch *b, int i, enum store_status st,
                    char out[LOCK_ANSWER_MAX])
{
    char text[LOCK_ANSWER_MAX - 33];
    answer_text(&b->items[i], st, text, sizeof text);
    /* "unknown", rather than an answer cut short, makes a buyer ask
     * PostgreSQL. */
    if (strlen(text) + 1 >= sizeof text)
        snprintf(text, sizeof text, "unknown");
    snprintf(out, LOCK_ANSWER_MAX, "%.32s:%s", b->items[i].token, text);
}

enum combine_reply combine_parse_answer(const char *text, int32_t product, int32_t amount,
                                        struct outcome *out, int *problem)
{
    long long a, b;
    int p;
    char end;
    memset(out, 0, sizeof *out);
    out->order.product_id = product;
    out->order.amount = amount;
    if (sscanf(text, "200 %lld %lld%c", &a, &b, &end) == 2 && a > 0 && b >= 0) {
        out->status = 200;
        out->order.id = a;
        out->order.remaining = b;
        return COMBINE_OUTCOME;
    }
    if (sscanf(text, "409 %lld%c", &a, &end) == 1 && a >= 0) {
        out->status = 409;
        out->available = a;
        return COMBINE_OUTCOME;
    }
    if (strcmp(text, "404") == 0) {
        out->status = 404;
        return COMBINE_OUTCOME;
    }
    if (strcmp(text, "key") == 0)
        return COMBINE_KEY;
    if (sscanf(text, "problem %d%c", &p, &end) == 1 && p > PROBLEM_NONE && p < PROBLEM_COUNT) {
        *problem = p;
        return COMBINE_PROBLEM;
    }
    return strcmp(text, "unknown") == 0 ? COMBINE_CLOSE : COMBINE_BAD;
}
