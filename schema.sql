-- clerk-sync schema. The binary embeds this file and applies it at start;
-- every statement is idempotent so it can run on an existing database.
-- Times are Clerk's own: integer milliseconds since the Unix epoch.
-- Bump SCHEMA_VERSION in src/db.rs when this file changes.

-- One row per Clerk user ever seen. A deleted user stays as a tombstone:
-- deleted_at is set and the personal fields are NULL.
CREATE TABLE IF NOT EXISTS users (
    clerk_id    TEXT PRIMARY KEY,   -- Clerk's data.id (user_...)
    email       TEXT,               -- the address whose id is primary_email_address_id
    first_name  TEXT,
    last_name   TEXT,
    username    TEXT,
    image_url   TEXT,
    external_id TEXT,
    created_at  INTEGER,            -- data.created_at (ms)
    updated_at  INTEGER,            -- data.updated_at (ms); guards against stale events
    deleted_at  INTEGER,            -- envelope timestamp of user.deleted (ms), else NULL
    data        TEXT                -- the user object exactly as received (JSON)
);

-- No UNIQUE on email: a user deleted and signed up again gets a new clerk_id
-- with the same address, and both rows must fit.
CREATE INDEX IF NOT EXISTS users_email ON users(email);
CREATE INDEX IF NOT EXISTS users_external_id ON users(external_id);
-- Tombstones only: counting them (status, metrics) reads this small index
-- instead of every 2 KB user row.
CREATE INDEX IF NOT EXISTS users_tombstones ON users(deleted_at) WHERE deleted_at IS NOT NULL;

-- One row per accepted delivery. The svix-id is the same on every retry, so
-- this table is what makes retries and rotation copies harmless.
CREATE TABLE IF NOT EXISTS webhook_events (
    id              TEXT PRIMARY KEY,  -- svix-id
    type            TEXT NOT NULL,     -- e.g. user.updated
    received_at     INTEGER NOT NULL,  -- when it was committed (ms)
    object_id       TEXT,              -- data.id of the event's object (a user_... for user.*)
    event_timestamp INTEGER,           -- envelope timestamp, normalised to ms
    outcome         TEXT NOT NULL      -- applied | stale | ignored
        CHECK (outcome IN ('applied', 'stale', 'ignored'))
) WITHOUT ROWID;  -- small rows looked up by id: one B-tree instead of two

CREATE INDEX IF NOT EXISTS webhook_events_received_at ON webhook_events(received_at);

-- The users that exist in Clerk right now.
CREATE VIEW IF NOT EXISTS active_users AS
    SELECT clerk_id, email, first_name, last_name, username, image_url,
           external_id, created_at, updated_at, data
    FROM users
    WHERE deleted_at IS NULL;
