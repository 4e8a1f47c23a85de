-- clerk-sync schema. The binary embeds this file and applies it at start;
-- every statement is idempotent so it can run on an existing database.
-- Times are Clerk's own: integer milliseconds since the Unix epoch.
-- Bump SCHEMA_VERSION in src/store/mod.rs when this file changes; an older
-- file is migrated by running this whole file again, in one transaction.

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

-- One row per organization ever seen; deleted ones stay as tombstones.
CREATE TABLE IF NOT EXISTS organizations (
    clerk_id      TEXT PRIMARY KEY,  -- data.id (org_...)
    name          TEXT,
    slug          TEXT,
    image_url     TEXT,
    members_count INTEGER,           -- as last sent; an object without it keeps this
    created_at    INTEGER,
    updated_at    INTEGER,
    deleted_at    INTEGER,           -- envelope timestamp of organization.deleted
    data          TEXT               -- the object as received; NULL once deleted
);

CREATE INDEX IF NOT EXISTS organizations_slug ON organizations(slug);
CREATE INDEX IF NOT EXISTS organizations_tombstones ON organizations(deleted_at)
    WHERE deleted_at IS NOT NULL;

-- One row per membership ever seen; organizationMembership.deleted leaves a
-- tombstone that still says who left which organization.
CREATE TABLE IF NOT EXISTS organization_memberships (
    clerk_id        TEXT PRIMARY KEY,  -- data.id (orgmem_...)
    organization_id TEXT,              -- data.organization.id
    user_id         TEXT,              -- data.public_user_data.user_id
    role            TEXT,              -- e.g. org:admin
    created_at      INTEGER,
    updated_at      INTEGER,
    deleted_at      INTEGER,
    data            TEXT
);

CREATE INDEX IF NOT EXISTS organization_memberships_organization
    ON organization_memberships(organization_id);
CREATE INDEX IF NOT EXISTS organization_memberships_user ON organization_memberships(user_id);
CREATE INDEX IF NOT EXISTS organization_memberships_tombstones
    ON organization_memberships(deleted_at) WHERE deleted_at IS NOT NULL;

-- One row per invitation ever seen. No event ends an invitation of a
-- deleted organization or reports an expiry: `import` brings status up to date.
CREATE TABLE IF NOT EXISTS organization_invitations (
    clerk_id        TEXT PRIMARY KEY,  -- data.id (orginv_...)
    organization_id TEXT,              -- data.organization_id
    email_address   TEXT,
    role            TEXT,
    status          TEXT,              -- pending | accepted | revoked | expired
    created_at      INTEGER,
    updated_at      INTEGER,
    deleted_at      INTEGER,           -- always NULL: Clerk sends no deletion
    data            TEXT
);

CREATE INDEX IF NOT EXISTS organization_invitations_organization
    ON organization_invitations(organization_id);
CREATE INDEX IF NOT EXISTS organization_invitations_email
    ON organization_invitations(email_address);
CREATE INDEX IF NOT EXISTS organization_invitations_tombstones
    ON organization_invitations(deleted_at) WHERE deleted_at IS NOT NULL;

-- One row per row of the mirror written, in commit order, in the same
-- transaction as the change. AUTOINCREMENT: a seq is never used twice, even
-- after retention deleted the newest rows.
CREATE TABLE IF NOT EXISTS changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    object_type TEXT NOT NULL,     -- user | organization | membership | invitation
    object_id   TEXT NOT NULL,     -- the row's clerk_id
    change      TEXT NOT NULL,     -- created | updated | deleted
    source      TEXT NOT NULL,     -- webhook | import
    event_id    TEXT,              -- the svix-id of a webhook; NULL for an import
    at          INTEGER NOT NULL   -- when it was committed (ms)
);

-- No index on `at`: it rises with seq (commit order), so retention walks the
-- oldest seqs instead, and each change costs one B-tree insert, not two.

-- One row per run of `clerk-sync import`, for `status`.
CREATE TABLE IF NOT EXISTS imports (
    id          INTEGER PRIMARY KEY,
    started_at  INTEGER NOT NULL,  -- ms
    finished_at INTEGER,           -- ms; NULL while it runs or after a crash
    result      TEXT,              -- complete | stopped | failed | dry-run
    report      TEXT               -- the per-type counts, JSON
);

CREATE VIEW IF NOT EXISTS active_organizations AS
    SELECT clerk_id, name, slug, image_url, members_count, created_at, updated_at, data
    FROM organizations
    WHERE deleted_at IS NULL;

-- A deleted organization or user takes its memberships out, whatever order
-- the events came in; one not seen yet does not.
CREATE VIEW IF NOT EXISTS active_memberships AS
    SELECT m.clerk_id, m.organization_id, o.name AS organization_name,
           o.slug AS organization_slug, m.user_id, u.email, u.first_name, u.last_name,
           m.role, m.created_at, m.updated_at
    FROM organization_memberships m
    LEFT JOIN organizations o ON o.clerk_id = m.organization_id
    LEFT JOIN users u ON u.clerk_id = m.user_id
    WHERE m.deleted_at IS NULL AND o.deleted_at IS NULL AND u.deleted_at IS NULL;

-- Every email address of each existing user. json_extract rather than ->>,
-- so that readers with an SQLite older than 3.38 can use the view too.
CREATE VIEW IF NOT EXISTS user_email_addresses AS
    SELECT u.clerk_id AS user_id,
           json_extract(e.value, '$.id') AS email_address_id,
           json_extract(e.value, '$.email_address') AS email_address,
           CASE WHEN json_extract(e.value, '$.id') = json_extract(u.data, '$.primary_email_address_id')
                THEN 1 ELSE 0 END AS is_primary,
           CASE WHEN json_extract(e.value, '$.verification.status') = 'verified'
                THEN 1 ELSE 0 END AS verified
    FROM users u, json_each(u.data, '$.email_addresses') e
    WHERE u.deleted_at IS NULL AND e.type = 'object';
