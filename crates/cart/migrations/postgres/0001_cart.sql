-- Carts in SQL (the default store; Redis holds them instead when configured). The owner key is
-- `user:<id>` or `guest:<sha256 of the cart token>`.
CREATE TABLE carts (
    owner_key  TEXT PRIMARY KEY,
    coupon     TEXT,
    updated_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX carts_expiry ON carts (expires_at);

CREATE TABLE cart_lines (
    owner_key           TEXT NOT NULL REFERENCES carts (owner_key) ON DELETE CASCADE,
    product_id          UUID NOT NULL,
    quantity            BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_amount   BIGINT NOT NULL CHECK (unit_price_amount >= 0),
    unit_price_currency TEXT NOT NULL,
    added_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner_key, product_id)
);

CREATE TABLE coupons (
    id                UUID PRIMARY KEY,
    code              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')),
    value             BIGINT NOT NULL CHECK (value > 0),
    min_subtotal      BIGINT,
    starts_at         TIMESTAMPTZ,
    ends_at           TIMESTAMPTZ,
    max_uses          BIGINT,
    max_uses_per_user BIGINT,
    category_ids      JSONB NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    deleted_at        TIMESTAMPTZ
);
-- One live coupon per code; a deleted code may be reused.
CREATE UNIQUE INDEX coupons_live_code ON coupons (code) WHERE deleted_at IS NULL;

CREATE TABLE coupon_redemptions (
    coupon_id   UUID NOT NULL REFERENCES coupons (id),
    user_id     UUID,
    reference   TEXT NOT NULL,
    redeemed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (coupon_id, reference)
);
CREATE INDEX coupon_redemptions_user ON coupon_redemptions (coupon_id, user_id);
