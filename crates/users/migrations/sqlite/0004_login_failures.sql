-- Failed sign-ins per e-mail address (known or not, so the lock tells nobody which accounts
-- exist): after too many in a window the address is locked for a while, whatever the password.
CREATE TABLE login_failures (
    email        TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL CHECK (failures > 0),
    first_at     TEXT NOT NULL,
    locked_until TEXT
);
