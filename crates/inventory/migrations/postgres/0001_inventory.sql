CREATE TABLE warehouses (
    id                 UUID PRIMARY KEY,
    name               TEXT NOT NULL,
    address            TEXT NOT NULL,
    lat                DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                DOUBLE PRECISION NOT NULL CHECK (lon BETWEEN -180 AND 180),
    delivery_radius_km DOUBLE PRECISION NOT NULL CHECK (delivery_radius_km >= 0),
    postal_prefixes    JSONB NOT NULL,
    active             BOOLEAN NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

-- The invariant lives in the database: no code path can make a figure negative or unbalanced.
CREATE TABLE stock (
    product_id   UUID NOT NULL,
    warehouse_id UUID NOT NULL REFERENCES warehouses (id),
    on_hand      BIGINT NOT NULL CHECK (on_hand >= 0),
    available    BIGINT NOT NULL CHECK (available >= 0),
    reserved     BIGINT NOT NULL CHECK (reserved >= 0),
    allocated    BIGINT NOT NULL CHECK (allocated >= 0),
    shipped      BIGINT NOT NULL CHECK (shipped >= 0),
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (product_id, warehouse_id),
    CONSTRAINT stock_balanced CHECK (on_hand = available + reserved + allocated)
);

-- Seed 001's AggregatedStock, computed instead of stored: a stored total would be a second hot
-- row written by every reservation of a popular product.
CREATE VIEW aggregated_stock AS
SELECT product_id,
       SUM(on_hand)::BIGINT AS on_hand,
       SUM(available)::BIGINT AS available,
       SUM(reserved)::BIGINT AS reserved,
       SUM(allocated)::BIGINT AS allocated,
       SUM(shipped)::BIGINT AS shipped
FROM stock GROUP BY product_id;

CREATE TABLE reservations (
    id         UUID PRIMARY KEY,
    reference  TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL CHECK (status IN ('held', 'committed', 'released', 'expired')),
    expires_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_lines (
    reservation_id UUID NOT NULL REFERENCES reservations (id),
    product_id     UUID NOT NULL,
    warehouse_id   UUID NOT NULL,
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    shipped        BOOLEAN NOT NULL,
    PRIMARY KEY (reservation_id, product_id, warehouse_id)
);

CREATE TABLE stock_ledger (
    seq            BIGSERIAL PRIMARY KEY,
    product_id     UUID NOT NULL,
    warehouse_id   UUID NOT NULL,
    movement       TEXT NOT NULL,
    on_hand        BIGINT NOT NULL,
    available      BIGINT NOT NULL,
    reserved       BIGINT NOT NULL,
    allocated      BIGINT NOT NULL,
    shipped        BIGINT NOT NULL,
    reservation_id UUID,
    actor          TEXT NOT NULL,
    reason         TEXT,
    at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX stock_ledger_product ON stock_ledger (product_id, seq);
