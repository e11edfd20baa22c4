CREATE TABLE delivery_partners (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT,
    phone           TEXT,
    lat             DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon             DOUBLE PRECISION NOT NULL CHECK (lon BETWEEN -180 AND 180),
    radius_km       DOUBLE PRECISION NOT NULL CHECK (radius_km >= 0),
    postal_prefixes JSONB NOT NULL,
    capacity        BIGINT NOT NULL CHECK (capacity >= 0),
    max_units       BIGINT NOT NULL CHECK (max_units > 0),
    -- Jobs in hand. Taken by a conditional update (… WHERE active_jobs < capacity), so capacity
    -- holds under concurrent assignments; lowering capacity below it only stops new ones.
    active_jobs     BIGINT NOT NULL CHECK (active_jobs >= 0),
    active          BOOLEAN NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- One job per warehouse order: a repeated request finds it.
CREATE TABLE delivery_jobs (
    warehouse_order_id UUID PRIMARY KEY,
    order_id           UUID NOT NULL,
    warehouse_id       UUID NOT NULL,
    pickup_lat         DOUBLE PRECISION NOT NULL,
    pickup_lon         DOUBLE PRECISION NOT NULL,
    drop_lat           DOUBLE PRECISION,
    drop_lon           DOUBLE PRECISION,
    drop_postal_code   TEXT,
    units              BIGINT NOT NULL CHECK (units > 0),
    status             TEXT NOT NULL CHECK (status IN ('waiting', 'assigned', 'finished')),
    partner_id         UUID REFERENCES delivery_partners (id),
    created_at         TIMESTAMPTZ NOT NULL,
    assigned_at        TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    CHECK (status <> 'assigned' OR partner_id IS NOT NULL)
);
CREATE INDEX delivery_jobs_waiting ON delivery_jobs (created_at, warehouse_order_id) WHERE status = 'waiting';
CREATE INDEX delivery_jobs_partner ON delivery_jobs (partner_id, status, created_at);
