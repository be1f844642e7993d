-- The demo's first row: five units of one product.
INSERT INTO products (name, amount) VALUES ('Sample Product', 5);
