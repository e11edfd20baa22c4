-- Idempotency-Key records: the first request claims the key (status NULL while it runs), its
-- answer is stored, and retries with the same key replay that answer.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER,
    response     TEXT,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (scope, key)
);
