-- Who bought what, projected from the orders' OrderConfirmed / OrderCancelled events: a review
-- is a verified purchase when its author has a paid order of the product that was not cancelled.
CREATE TABLE purchases (
    order_id   BLOB NOT NULL,
    product_id BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX purchases_by_buyer ON purchases (user_id, product_id);
