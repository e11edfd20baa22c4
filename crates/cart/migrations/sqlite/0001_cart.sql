-- Carts in SQL (the default store; Redis holds them instead when configured). The owner key is
-- `user:<id>` or `guest:<sha256 of the cart token>`.
CREATE TABLE carts (
    owner_key  TEXT PRIMARY KEY,
    coupon     TEXT,
    updated_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX carts_expiry ON carts (expires_at);

CREATE TABLE cart_lines (
    owner_key           TEXT NOT NULL REFERENCES carts (owner_key) ON DELETE CASCADE,
    product_id          BLOB NOT NULL,
    quantity            INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_amount   INTEGER NOT NULL CHECK (unit_price_amount >= 0),
    unit_price_currency TEXT NOT NULL,
    added_at            TEXT NOT NULL,
    PRIMARY KEY (owner_key, product_id)
);

CREATE TABLE coupons (
    id                BLOB PRIMARY KEY,
    code              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')),
    value             INTEGER NOT NULL CHECK (value > 0),
    min_subtotal      INTEGER,
    starts_at         TEXT,
    ends_at           TEXT,
    max_uses          INTEGER,
    max_uses_per_user INTEGER,
    category_ids      TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    deleted_at        TEXT
);
-- One live coupon per code; a deleted code may be reused.
CREATE UNIQUE INDEX coupons_live_code ON coupons (code) WHERE deleted_at IS NULL;

CREATE TABLE coupon_redemptions (
    coupon_id   BLOB NOT NULL REFERENCES coupons (id),
    user_id     BLOB,
    reference   TEXT NOT NULL,
    redeemed_at TEXT NOT NULL,
    PRIMARY KEY (coupon_id, reference)
);
CREATE INDEX coupon_redemptions_user ON coupon_redemptions (coupon_id, user_id);
