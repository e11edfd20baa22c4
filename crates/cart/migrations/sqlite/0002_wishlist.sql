-- The wishlist belongs to the cart service (a product kept for later, moved into the cart in one
-- step). It was the users service's; the binary moves rows kept there (users' own
-- `wishlist_items`) into this table at start-up.
CREATE TABLE wishlist_items (
    user_id    BLOB NOT NULL,
    product_id BLOB NOT NULL,
    added_at   TEXT NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
CREATE INDEX wishlist_items_newest ON wishlist_items (user_id, added_at);
