-- Removes idempotency keys and purchase tokens older than 24 hours: a retry
-- that late is a new purchase, and no buyer waits that long for a combiner.
-- Safe to run at any time, and as often as you like (make prune, or cron:
-- psql "$DATABASE_URL" -f sql/prune.sql).
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours';
DELETE FROM purchase_tokens WHERE created_at < now() - interval '24 hours';
