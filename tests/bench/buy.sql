-- pgbench's ceiling: the service's own purchase transaction (BEGIN, the one
-- statement of app/store.c, COMMIT), without Redis, HTTP or FastCGI. Only
-- the fence differs: pgbench has no lock to draw one from, so each
-- transaction takes the next one itself (the same columns are touched).
\set p random(:first, :last)
BEGIN;
WITH sold AS (
  UPDATE products SET amount = amount - 1, fence = fence + 1
   WHERE id = :p AND amount >= 1 AND fence < fence + 1
  RETURNING amount
), placed AS (
  INSERT INTO orders (product_id, amount, fence) SELECT :p, 1, 0 FROM sold RETURNING id
)
SELECT placed.id, sold.amount FROM placed, sold;
COMMIT;
