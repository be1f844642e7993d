-- Empties the tables and restarts their ids; run before seed.sql by `make reset`.
TRUNCATE orders, products RESTART IDENTITY;
