/* sale.h -- the values a sale is made of, shared by the modules that make,
 * combine and answer it (store.h, combine.h, purchase.h, response.h), so
 * that none of them needs another's header for them. Values only: nothing
 * here does I/O. */
#ifndef STOCK_SALE_H
#define STOCK_SALE_H

#include <stdint.h>

/* What a store call (store.h) ended with. */
enum store_status {
    STORE_OK,
    STORE_NOT_FOUND,    /* no such product (or idempotency key) */
    STORE_INSUFFICIENT, /* the product has fewer units than asked for */
    STORE_FENCED,       /* PostgreSQL has applied a newer fence: a stale lock */
    STORE_KEY_EXISTS,   /* the idempotency key was used already */
    STORE_KEY_BUSY,     /* a request with the same key is still in flight */
    STORE_BUSY,         /* the product's row stayed locked by another transaction
                           (any host's) past lock_timeout: nothing bought */
    STORE_UNAVAILABLE,  /* PostgreSQL unreachable, restarting or timing out */
    STORE_UNKNOWN,      /* the connection broke while a purchase was in flight:
                           it may or may not have committed */
    STORE_ALONE,        /* a batch (combine.h) failed for one of the purchases it
                           took (a key its first request still holds, a token
                           its buyer closed): nothing committed; make the
                           holder's own purchase alone */
    STORE_ERROR         /* anything else: a bug or a broken schema */
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

struct combine_batch;

/* What a purchase asks for. */
struct purchase {
    int32_t product;
    int32_t amount;
    int64_t fence;               /* from the lock grant */
    const char *key;             /* Idempotency-Key, or NULL */
    struct combine_batch *batch; /* NULL, or the batch it heads (combine.h) */
};

/* What a purchase, or an idempotency key, ended with. */
struct outcome {
    int status;         /* 200, 404 or 409 */
    struct order order; /* for 200 */
    int64_t available;  /* for 409: the stock seen */
    int64_t fence;      /* for STORE_FENCED: the fence PostgreSQL has */
};

#endif
