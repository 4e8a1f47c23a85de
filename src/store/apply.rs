//! Applying one delivery: dedupe on the `svix-id`, change the mirror,
//! record the event, all inside the caller's transaction.

use rusqlite::{params, CachedStatement, Connection};

use crate::event::{Change, Delivery, Outcome};

const RECORD: &str = "INSERT INTO webhook_events
        (id, type, received_at, object_id, event_timestamp, outcome)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING";

/// The upsert of a user, with `$set` first in its `DO UPDATE SET` and
/// `$also` added to its guard. The guard: never go back in time, and a
/// tombstone yields only to a version strictly newer than the delete and not
/// older than the last version seen (a delete dated in whole seconds can be
/// older than that version, and what is older than the row changes nothing;
/// an equal one applies, as on a live row).
macro_rules! upsert {
    ($set:literal, $also:literal) => {
        concat!(
            "INSERT INTO users (clerk_id, email, first_name, last_name, username,
                image_url, external_id, created_at, updated_at, deleted_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)
             ON CONFLICT(clerk_id) DO UPDATE SET ",
            $set,
            " first_name = excluded.first_name,
                last_name = excluded.last_name, username = excluded.username,
                image_url = excluded.image_url,
                created_at = COALESCE(excluded.created_at, users.created_at),
                updated_at = excluded.updated_at,
                deleted_at = NULL, data = excluded.data
             WHERE (CASE WHEN users.deleted_at IS NULL
                        THEN users.updated_at IS NULL OR excluded.updated_at >= users.updated_at
                        ELSE excluded.updated_at > users.deleted_at
                             AND (users.updated_at IS NULL OR excluded.updated_at >= users.updated_at)
                        END)",
            $also
        )
    };
}

// The indexed columns, email and external_id, are left out of the usual
// upsert: naming a column in an UPDATE rewrites its index entries even when
// the value is the same, and most updates (a sign-in, new metadata) leave
// both be. So the usual upsert changes a row only if they are unchanged, and
// one that changed nothing is tried again with them; only then is the
// delivery stale. One statement for most deliveries, where a separate update
// of the indexed columns cost a fifth of applying one.
const UPSERT: &str = upsert!(
    "",
    " AND users.email IS excluded.email AND users.external_id IS excluded.external_id"
);

const UPSERT_INDEXED: &str = upsert!(
    "email = excluded.email, external_id = excluded.external_id,",
    ""
);

// Not newer than the tombstone: the user stays deleted, but the columns a
// tombstone keeps take the newest version seen, as a live row would (its
// external_id too when that is NULL), so the table ends the same whatever
// order the versions and the delete arrived in.
const TOMBSTONE_KEEPS: &str = "UPDATE users SET updated_at = ?2,
        created_at = COALESCE(?3, created_at),
        external_id = ?4
     WHERE clerk_id = ?1 AND deleted_at IS NOT NULL AND ?2 <= deleted_at
       AND (updated_at IS NULL OR ?2 > updated_at)";

// Deletion is final in Clerk, so a delete always lands; only a second,
// earlier delete of a tombstone changes nothing. The delete's own
// external_id (when it has one) stands in only while no version of the
// user has been seen (updated_at is NULL): once one has, external_id is
// that version's, in whichever order the two arrive.
const DELETE: &str = "INSERT INTO users (clerk_id, external_id, deleted_at) VALUES (?1, ?2, ?3)
     ON CONFLICT(clerk_id) DO UPDATE SET
        email = NULL, first_name = NULL, last_name = NULL, username = NULL,
        image_url = NULL, data = NULL,
        external_id = CASE WHEN users.updated_at IS NULL
                           THEN COALESCE(excluded.external_id, users.external_id)
                           ELSE users.external_id END,
        deleted_at = excluded.deleted_at
     WHERE users.deleted_at IS NULL OR excluded.deleted_at > users.deleted_at";

const OUTCOME: &str = "UPDATE webhook_events SET outcome = ?2 WHERE id = ?1";

/// Applies deliveries: dedupe on the id, change the mirror, record it.
///
/// Holds the statements every delivery runs for as long as it lives (one
/// batch): rusqlite's statement cache would otherwise find each by its SQL
/// text and put it back on every use, a sixth of the cost of a delivery. The
/// caller wraps each delivery in a transaction or savepoint, so the event row
/// and the user row are written together or not at all.
pub struct Applier<'c> {
    conn: &'c Connection,
    record: CachedStatement<'c>,
    upsert: CachedStatement<'c>,
}

impl<'c> Applier<'c> {
    /// # Errors
    /// When the statements cannot be prepared (the schema is not there).
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            conn,
            record: conn.prepare_cached(RECORD)?,
            upsert: conn.prepare_cached(UPSERT)?,
        })
    }

    /// Applies one delivery.
    ///
    /// # Errors
    /// Any SQLite failure; the caller rolls back.
    pub fn apply(&mut self, d: &Delivery, received_at: i64) -> rusqlite::Result<Outcome> {
        // The event row goes in first: its primary key is the dedupe, so the
        // check and the record are one statement. Its outcome is what most
        // deliveries end with, corrected below for the few that end otherwise.
        let expected = match d.change {
            Change::Record => Outcome::Ignored,
            _ => Outcome::Applied,
        };
        let recorded = self.record.execute(params![
            d.id,
            d.event_type,
            received_at,
            d.object_id,
            d.timestamp_ms,
            expected.as_str()
        ])?;
        if recorded == 0 {
            return Ok(Outcome::Duplicate);
        }
        let outcome = match (&d.change, &d.object_id) {
            (Change::Upsert(u), Some(clerk_id)) => {
                let user = params![
                    clerk_id,
                    u.email,
                    u.first_name,
                    u.last_name,
                    u.username,
                    u.image_url,
                    u.external_id,
                    u.created_at,
                    u.updated_at,
                    u.data
                ];
                let applied = self.upsert.execute(user)? == 1
                    || self.conn.prepare_cached(UPSERT_INDEXED)?.execute(user)? == 1;
                if applied {
                    Outcome::Applied
                } else {
                    self.conn.prepare_cached(TOMBSTONE_KEEPS)?.execute(params![
                        clerk_id,
                        u.updated_at,
                        u.created_at,
                        u.external_id
                    ])?;
                    Outcome::Stale
                }
            }
            (
                Change::Delete {
                    external_id,
                    deleted_at,
                },
                Some(clerk_id),
            ) => {
                let changed = self.conn.prepare_cached(DELETE)?.execute(params![
                    clerk_id,
                    external_id,
                    deleted_at
                ])?;
                if changed == 1 {
                    Outcome::Applied
                } else {
                    Outcome::Stale
                }
            }
            _ => Outcome::Ignored,
        };
        if outcome != expected {
            self.conn
                .prepare_cached(OUTCOME)?
                .execute(params![d.id, outcome.as_str()])?;
        }
        Ok(outcome)
    }
}
