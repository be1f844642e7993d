-- Empties the tables and restarts their ids; run before seed.sql by `make reset`.
TRUNCATE idempotency_keys, purchase_tokens, orders, products RESTART IDENTITY;
