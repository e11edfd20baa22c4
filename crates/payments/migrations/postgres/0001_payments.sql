-- One payment per idempotency key: a retried pay finds its payment instead of charging again.
CREATE TABLE payments (
    id              UUID PRIMARY KEY,
    reference       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    gateway         TEXT NOT NULL,
    -- Every gateway asked, in order (fallback), so reconciliation can look for strays.
    attempted       TEXT NOT NULL,
    transaction_id  TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'unknown', 'captured', 'failed', 'refunded', 'partially_refunded')),
    failure_reason  TEXT,
    refunded        BIGINT NOT NULL CHECK (refunded >= 0 AND refunded <= amount),
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX payments_reference ON payments (reference);
CREATE INDEX payments_unresolved ON payments (updated_at) WHERE status IN ('pending', 'unknown');

CREATE TABLE refunds (
    id                UUID PRIMARY KEY,
    payment_id        UUID NOT NULL REFERENCES payments (id),
    idempotency_key   TEXT NOT NULL UNIQUE,
    amount            BIGINT NOT NULL CHECK (amount > 0),
    reason            TEXT NOT NULL,
    gateway_refund_id TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- Webhook deliveries already applied: a duplicate delivery is recognised and ignored.
CREATE TABLE webhook_events (
    gateway     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (gateway, event_id)
);

-- The built-in sandbox gateway's own books (what a real gateway keeps on its side).
CREATE TABLE sandbox_charges (
    idempotency_key TEXT PRIMARY KEY,
    transaction_id  TEXT NOT NULL UNIQUE,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    token           TEXT NOT NULL,
    status          TEXT NOT NULL,
    decline_reason  TEXT,
    refunded        BIGINT NOT NULL,
    settles_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE TABLE sandbox_refunds (
    idempotency_key TEXT PRIMARY KEY,
    refund_id       TEXT NOT NULL,
    transaction_id  TEXT NOT NULL,
    amount          BIGINT NOT NULL
);
