CREATE TABLE delivery_partners (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT,
    phone           TEXT,
    lat             REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon             REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
    radius_km       REAL NOT NULL CHECK (radius_km >= 0),
    postal_prefixes TEXT NOT NULL,
    capacity        INTEGER NOT NULL CHECK (capacity >= 0),
    max_units       INTEGER NOT NULL CHECK (max_units > 0),
    -- Jobs in hand. Taken by a conditional update (… WHERE active_jobs < capacity), so capacity
    -- holds under concurrent assignments; lowering capacity below it only stops new ones.
    active_jobs     INTEGER NOT NULL CHECK (active_jobs >= 0),
    active          BOOLEAN NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- One job per warehouse order: a repeated request finds it.
CREATE TABLE delivery_jobs (
    warehouse_order_id BLOB PRIMARY KEY,
    order_id           BLOB NOT NULL,
    warehouse_id       BLOB NOT NULL,
    pickup_lat         REAL NOT NULL,
    pickup_lon         REAL NOT NULL,
    drop_lat           REAL,
    drop_lon           REAL,
    drop_postal_code   TEXT,
    units              INTEGER NOT NULL CHECK (units > 0),
    status             TEXT NOT NULL CHECK (status IN ('waiting', 'assigned', 'finished')),
    partner_id         BLOB REFERENCES delivery_partners (id),
    created_at         TEXT NOT NULL,
    assigned_at        TEXT,
    finished_at        TEXT,
    CHECK (status <> 'assigned' OR partner_id IS NOT NULL)
);
CREATE INDEX delivery_jobs_waiting ON delivery_jobs (created_at, warehouse_order_id) WHERE status = 'waiting';
CREATE INDEX delivery_jobs_partner ON delivery_jobs (partner_id, status, created_at);
