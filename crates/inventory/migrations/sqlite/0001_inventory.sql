CREATE TABLE warehouses (
    id                 BLOB PRIMARY KEY,
    name               TEXT NOT NULL,
    address            TEXT NOT NULL,
    lat                REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
    delivery_radius_km REAL NOT NULL CHECK (delivery_radius_km >= 0),
    postal_prefixes    TEXT NOT NULL,
    active             BOOLEAN NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);

-- The invariant lives in the database: no code path can make a figure negative or unbalanced.
CREATE TABLE stock (
    product_id   BLOB NOT NULL,
    warehouse_id BLOB NOT NULL REFERENCES warehouses (id),
    on_hand      INTEGER NOT NULL CHECK (on_hand >= 0),
    available    INTEGER NOT NULL CHECK (available >= 0),
    reserved     INTEGER NOT NULL CHECK (reserved >= 0),
    allocated    INTEGER NOT NULL CHECK (allocated >= 0),
    shipped      INTEGER NOT NULL CHECK (shipped >= 0),
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (product_id, warehouse_id),
    CONSTRAINT stock_balanced CHECK (on_hand = available + reserved + allocated)
) WITHOUT ROWID;

-- Seed 001's AggregatedStock, computed instead of stored: a stored total would be a second hot
-- row written by every reservation of a popular product.
CREATE VIEW aggregated_stock AS
SELECT product_id,
       SUM(on_hand) AS on_hand,
       SUM(available) AS available,
       SUM(reserved) AS reserved,
       SUM(allocated) AS allocated,
       SUM(shipped) AS shipped
FROM stock GROUP BY product_id;

CREATE TABLE reservations (
    id         BLOB PRIMARY KEY,
    reference  TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL CHECK (status IN ('held', 'committed', 'released', 'expired')),
    expires_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_lines (
    reservation_id BLOB NOT NULL REFERENCES reservations (id),
    product_id     BLOB NOT NULL,
    warehouse_id   BLOB NOT NULL,
    quantity       INTEGER NOT NULL CHECK (quantity > 0),
    shipped        BOOLEAN NOT NULL,
    PRIMARY KEY (reservation_id, product_id, warehouse_id)
);

CREATE TABLE stock_ledger (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id     BLOB NOT NULL,
    warehouse_id   BLOB NOT NULL,
    movement       TEXT NOT NULL,
    on_hand        INTEGER NOT NULL,
    available      INTEGER NOT NULL,
    reserved       INTEGER NOT NULL,
    allocated      INTEGER NOT NULL,
    shipped        INTEGER NOT NULL,
    reservation_id BLOB,
    actor          TEXT NOT NULL,
    reason         TEXT,
    at             TEXT NOT NULL
);
CREATE INDEX stock_ledger_product ON stock_ledger (product_id, seq);
