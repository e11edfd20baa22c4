CREATE TABLE orders (
    id                     UUID PRIMARY KEY,
    user_id                UUID NOT NULL,
    status                 TEXT NOT NULL,
    currency               TEXT NOT NULL,
    subtotal               BIGINT NOT NULL CHECK (subtotal >= 0),
    discount               BIGINT NOT NULL CHECK (discount >= 0),
    total                  BIGINT NOT NULL CHECK (total >= 0),
    coupon_code            TEXT,
    shipping_address       JSONB NOT NULL,
    reservation_id         UUID,
    expires_at             TIMESTAMPTZ,
    delivered_at           TIMESTAMPTZ,
    -- The shopper's Idempotency-Key of the request that began it: a retry resumes this order.
    idempotency_key        TEXT,
    payment_status         TEXT,
    payment_gateway        TEXT,
    payment_transaction_id TEXT,
    refunded               BIGINT NOT NULL DEFAULT 0,
    -- Set once the compensations of a terminal state (release, refund, restock) are done.
    settled                BOOLEAN NOT NULL DEFAULT FALSE,
    -- Whoever settles holds this lease, so the API and the worker never settle one order twice.
    settle_lease           TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user ON orders (user_id, id);
CREATE INDEX orders_status ON orders (status, updated_at);

CREATE TABLE order_lines (
    order_id          UUID NOT NULL REFERENCES orders (id),
    product_id        UUID NOT NULL,
    title             TEXT NOT NULL,
    unit_price        BIGINT NOT NULL,
    quantity          BIGINT NOT NULL CHECK (quantity > 0),
    line_total        BIGINT NOT NULL,
    returned_quantity BIGINT NOT NULL DEFAULT 0 CHECK (returned_quantity >= 0 AND returned_quantity <= quantity),
    restock           BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE order_history (
    seq      BIGSERIAL PRIMARY KEY,
    order_id UUID NOT NULL REFERENCES orders (id),
    status   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_history_order ON order_history (order_id, seq);

CREATE TABLE warehouse_orders (
    id           UUID PRIMARY KEY,
    order_id     UUID NOT NULL REFERENCES orders (id),
    warehouse_id UUID NOT NULL,
    status       TEXT NOT NULL,
    lines        JSONB NOT NULL,
    shipped_at   TIMESTAMPTZ,
    delivered_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (order_id, warehouse_id)
);
CREATE INDEX warehouse_orders_warehouse ON warehouse_orders (warehouse_id, status, id);
