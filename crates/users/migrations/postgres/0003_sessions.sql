-- Bumped whenever every access token of the user must stop working at once (logout, a new
-- password, new roles, a disabled account): tokens carry the version they were issued at.
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
-- Set while an admin has disabled the account: no sign-in, no refresh, no access.
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;
