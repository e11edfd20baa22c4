-- Transactional outbox: rows are written in the same transaction as the state change they describe.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      BLOB    NOT NULL UNIQUE,
    event_type    TEXT    NOT NULL,
    event_version INTEGER NOT NULL,
    aggregate_id  TEXT    NOT NULL,
    occurred_at   TEXT    NOT NULL,
    trace_id      TEXT,
    payload       TEXT    NOT NULL
);

-- How far each consumer has read this database's outbox (a consumer-group offset).
CREATE TABLE event_cursors (
    consumer   TEXT    PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);

-- Events a consumer gave up on after its retries, kept for an operator to inspect and replay.
CREATE TABLE event_dead_letters (
    consumer  TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    event_id  BLOB    NOT NULL,
    attempts  INTEGER NOT NULL,
    error     TEXT    NOT NULL,
    failed_at TEXT    NOT NULL,
    PRIMARY KEY (consumer, seq)
);

-- Idempotent-consumer bookkeeping, in the consumer's own database, written with its effect.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     BLOB NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
