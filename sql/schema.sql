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
