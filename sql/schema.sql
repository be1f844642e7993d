-- The schema of the purchase API. Safe to run again on an existing database,
-- including one created by the original Node.js demo: it only adds what is
-- missing.

-- Kept exactly as the demo had it, so its data and its curl keep working.
CREATE TABLE IF NOT EXISTS products (
    id     SERIAL PRIMARY KEY,
    name   TEXT,
    amount INTEGER
);

-- The last guard against overselling: even a buggy statement cannot take the
-- stock below zero. And a stock is a number: NULL would read as "0 left" to
-- a buyer and slip past the CHECK. Both are added separately so the demo's
-- existing table gets them too (a NULL stock there stops this script, which
-- is the point: decide what it should be).
ALTER TABLE products ALTER COLUMN amount SET NOT NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conname = 'products_amount_not_negative'
                      AND conrelid = 'products'::regclass) THEN
        ALTER TABLE products
            ADD CONSTRAINT products_amount_not_negative CHECK (amount >= 0);
    END IF;
END
$$;

-- The fence of the last purchase applied to each product. Every grant of the
-- Redis lock carries a larger fence; the purchase statement applies only
-- "WHERE fence < $fence", so a holder whose lock expired while it was paused
-- (and was granted again to someone else since) is refused by PostgreSQL.
ALTER TABLE products ADD COLUMN IF NOT EXISTS fence BIGINT NOT NULL DEFAULT 0;

-- One row per acknowledged purchase, written in the same transaction as the
-- decrement, so that at all times:
--   initial stock = products.amount + SUM(orders.amount)
CREATE TABLE IF NOT EXISTS orders (
    id         BIGSERIAL PRIMARY KEY,
    product_id INTEGER NOT NULL REFERENCES products (id),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS orders_product_id ON orders (product_id);

-- The fence of the lock grant that made each sale: per product, fences grow
-- with the order ids, and a sale without a lock would show as a gap in that.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS fence BIGINT NOT NULL DEFAULT 0;

-- Idempotency keys (the Idempotency-Key request header): the first request
-- with a key records its outcome here, in the same transaction as its
-- purchase; a retry with the same key gets that outcome back and buys
-- nothing. While the first request is in flight its row is uncommitted, and
-- a second INSERT of the same key waits for it. Rows older than 24 hours
-- may be removed with sql/prune.sql.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key        TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    product_id INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    status     SMALLINT NOT NULL,          -- 200, 404 or 409
    order_id   BIGINT REFERENCES orders (id),
    remaining  BIGINT,                     -- for 200
    available  BIGINT,                     -- for 409
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);

-- Purchase tokens: one row per purchase a combiner made for a waiting buyer
-- (app/combine.c), written in the batch's transaction with its outcome. A
-- buyer that gives up waiting for its answer inserts its token itself, with
-- status 0 ("closed, never bought"): if the combiner committed first, the
-- insert finds its row and the buyer answers from it; if not, the combiner's
-- late COMMIT conflicts with the closed token and fails whole. Rows older
-- than 24 hours may be removed with sql/prune.sql.
CREATE TABLE IF NOT EXISTS purchase_tokens (
    token      TEXT PRIMARY KEY CHECK (length(token) = 32),
    product_id INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    status     SMALLINT NOT NULL,          -- 0 (closed), 200, 404 or 409
    order_id   BIGINT REFERENCES orders (id),
    remaining  BIGINT,                     -- for 200
    available  BIGINT,                     -- for 409
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS purchase_tokens_created_at ON purchase_tokens (created_at);

-- A batch's idempotency keys claimed one by one (app/store.c, batch_begin),
-- after claiming them together met a key whose first request, elsewhere,
-- still holds it (its INSERT not yet committed). That key is skipped after
-- the transaction's lock_timeout, not waited for by the whole batch: its own
-- purchase is answered request_in_progress, and the others are made.
-- Returns the keys claimed. Each key is a subtransaction, which is why the
-- batch calls this only when the set-based claim timed out (past 64 of them,
-- COMBINE_MAX's maximum with every purchase keyed, PostgreSQL looks them up
-- on disk while the transaction lasts: a few milliseconds, rarely).
CREATE OR REPLACE FUNCTION claim_keys(batch_keys TEXT[], product INTEGER, batch_amounts INTEGER[])
RETURNS SETOF TEXT LANGUAGE plpgsql AS $$
DECLARE
    k TEXT;
    a INTEGER;
BEGIN
    -- A lock on the whole table (an index build, LOCK TABLE) times out here,
    -- outside the loop, and fails the call: only a key's own wait is taken
    -- for a key in flight.
    LOCK TABLE idempotency_keys IN ROW EXCLUSIVE MODE;
    FOR k, a IN SELECT * FROM unnest(batch_keys, batch_amounts) LOOP
        BEGIN
            INSERT INTO idempotency_keys (key, product_id, amount, status)
            VALUES (k, product, a, 0) ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                RETURN NEXT k;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            NULL; -- in flight elsewhere: left unclaimed
        END;
    END LOOP;
END
$$;
