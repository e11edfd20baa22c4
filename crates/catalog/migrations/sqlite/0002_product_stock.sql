-- Aggregated available stock per product, projected from the inventory's StockChanged events
-- so product pages show it without calling the inventory.
CREATE TABLE product_stock (
    product_id BLOB PRIMARY KEY,
    available  INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
