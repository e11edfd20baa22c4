CREATE TABLE wishlist_items (
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    product_id BLOB NOT NULL,
    added_at   TEXT NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
