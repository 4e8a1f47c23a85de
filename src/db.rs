//! The SQLite file: opening it, its schema, and applying one delivery.
//!
//! One connection writes (owned by [`crate::writer`]); an r2d2 pool of
//! read-only connections serves health checks and status, and in WAL mode
//! they never wait for the writer. `synchronous=FULL` makes every commit
//! reach the disk before it returns, which is what lets a `200` mean "kept".

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, CachedStatement, Connection, OpenFlags};

use crate::event::{Change, Delivery};

/// The whole schema; every statement is idempotent.
pub const SCHEMA: &str = include_str!("../schema.sql");

/// Stored in `PRAGMA user_version`. Bump it with every change to
/// `schema.sql`, and teach [`migrate`] the step from the previous version.
pub const SCHEMA_VERSION: i64 = 1;

/// Pool of read-only connections.
pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The mirror changed.
    Applied,
    /// Older than what the mirror holds; recorded, nothing changed.
    Stale,
    /// An event type that is not mirrored; recorded, nothing changed.
    Ignored,
    /// This `svix-id` was already recorded; nothing at all happened.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Opens (creating if missing) the database for writing, applies the schema
/// and the pragmas that make it durable and readable while written.
///
/// # Errors
/// When the file cannot be opened or created, is not a SQLite database, is
/// from a newer clerk-sync, stays locked past `busy_timeout`, or is missing
/// while its write-ahead log holds commits.
pub fn open_writer(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    refuse_orphaned_wal(path)?;
    refuse_unwritable(path)?;
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .with_context(|| format!("{} is not a usable SQLite database", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!(
            "{} cannot use WAL mode (journal_mode is {mode})",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The hot pages of a busy mirror (index interiors, recently changed
    // users) then stay in SQLite's cache instead of being re-read through
    // the kernel on every write; 8 MiB keeps the process small.
    conn.pragma_update(None, "cache_size", -8192)?;
    // The writer's own checkpoint is the backstop that lets the WAL start
    // over (at most 64 MiB of it); most pages are already copied by the
    // background checkpointer (see `writer`), and a long WAL lets a page
    // changed by many commits be copied once.
    conn.pragma_update(None, "wal_autocheckpoint", 16000)?;
    migrate(&conn).with_context(|| format!("cannot prepare schema in {}", path.display()))?;
    // The schema's CHECK on webhook_events.outcome guards the file against
    // other writers; this connection only ever writes `Outcome::as_str`. SQLite
    // evaluates an `IN (...)` check through a temporary table built for every
    // insert, a fifth of the cost of applying a delivery, so this connection
    // skips the check (other connections still run it).
    conn.pragma_update(None, "ignore_check_constraints", true)?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction.
///
/// # Errors
/// When the file was written by a newer version, or SQLite fails.
pub fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        bail!("schema version {version} is newer than this binary's {SCHEMA_VERSION}; upgrade clerk-sync");
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// A pool of read-only connections for everything that is not the writer.
///
/// # Errors
/// When the first connection cannot be opened.
pub fn read_pool(path: &Path, busy_timeout: Duration) -> anyhow::Result<ReadPool> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(move |c| c.busy_timeout(busy_timeout));
    r2d2::Pool::builder()
        .max_size(4)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(2))
        .build(manager)
        .context("cannot open read connections")
}

/// The size of the file at `path`; 0 when there is none.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The write-ahead log of the database at `path`.
pub fn wal_path(path: &Path) -> PathBuf {
    beside(path, "-wal")
}

/// The shared-memory index of the database at `path`.
pub fn shm_path(path: &Path) -> PathBuf {
    beside(path, "-shm")
}

/// SQLite keeps a database's log and index beside the file a symbolic link
/// leads to, not beside the link, also when that file is not there (yet).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = link_target(path).into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where `path` leads through symbolic links, as SQLite follows them.
fn link_target(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    // A link to nothing: follow it by hand (a bounded number of hops, as
    // the kernel does), so that a log left where it points is still found.
    let mut at = path.to_owned();
    for _ in 0..40 {
        match std::fs::read_link(&at) {
            Ok(target) => {
                at = at
                    .parent()
                    .map_or_else(|| target.clone(), |dir| dir.join(&target))
            }
            Err(_) => break,
        }
    }
    at
}

/// SQLite opens a database it may not write read-only without a word, and a
/// `-wal` or `-shm` left by another user (`sqlite3` run as root while the
/// service was stopped, say) makes every write fail: each delivery would
/// get 503 while `/healthz` read happily. So that is found out at the start.
fn refuse_unwritable(path: &Path) -> anyhow::Result<()> {
    for file in [path.to_owned(), wal_path(path), shm_path(path)] {
        // Opening for writing changes nothing in the file.
        match std::fs::OpenOptions::new().write(true).open(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => bail!(
                "cannot write {}: {e}; every file of the database must be writable by the user \
                 clerk-sync runs as, on a file system mounted read-write (one left by a command \
                 run as another user, root say, while it was stopped: give it to that user with \
                 chown)",
                file.display()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// A WAL-mode database is never empty, so a log with frames beside a missing
/// or empty file belongs to a database that was moved or removed, with
/// commits it never got (a reader held them when the writer stopped). SQLite
/// would delete that log on open; starting instead waits for the user.
fn refuse_orphaned_wal(path: &Path) -> anyhow::Result<()> {
    // The log's own header is 32 bytes; frames come after it.
    const WAL_HEADER: u64 = 32;
    let wal = wal_path(path);
    if file_len(path) == 0 && file_len(&wal) > WAL_HEADER {
        bail!(
            "{} holds committed changes of a database that is no longer at {}: move it beside \
             that database, named as its path plus -wal, and open that database to keep them; \
             or delete it to start a new database here without them",
            wal.display(),
            path.display()
        );
    }
    Ok(())
}

/// The database file this process opened, told apart from whatever its path
/// names now. SQLite keeps writing to the file it opened even after the path
/// stops naming it (an `rm` to start over, a restore renamed onto the path):
/// every delivery would then be acknowledged into a file nobody reads, and be
/// lost when the process ends. Checking the path's identity after each commit
/// and in health checks turns that into 503s until a restart opens the file
/// the path names. A file overwritten in place keeps its identity and cannot
/// be told apart. The same goes for the write-ahead log: a `-wal` removed
/// under SQLite leaves the last commits in a file only this process holds.
#[derive(Debug, Clone)]
pub struct DbFile {
    path: PathBuf,
    /// Device and inode at open.
    id: (u64, u64),
    /// Where SQLite keeps the log of the file opened.
    wal_path: PathBuf,
    /// The log's device and inode, from when it was first seen.
    wal: std::sync::Arc<std::sync::OnceLock<(u64, u64)>>,
}

/// Why the database file is not the one this process is writing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the database file was removed or moved away; restart clerk-sync")]
    Gone,
    #[error("the database file was replaced by another file; restart clerk-sync to use it")]
    Replaced,
    #[error("cannot check the database file: {0}")]
    Unreadable(String),
    #[error(
        "the database's write-ahead log (-wal) was removed or replaced; its last commits are \
         only in the copy clerk-sync holds open: stop it with SIGTERM, which copies them into \
         the database, and start it again"
    )]
    WalGone,
}

impl DbFile {
    /// Records the identity of the file at `path`, which must exist.
    ///
    /// # Errors
    /// When `path` cannot be examined.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        let file = Self {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            wal_path: wal_path(path),
            wal: std::sync::Arc::default(),
        };
        // Seen now if SQLite has made it already, else at the first check.
        let _ = file.check_wal();
        Ok(file)
    }

    /// Where the opened file is now, as the kernel names it through this
    /// process's open descriptors (SQLite's own): its new path after a move,
    /// with ` (deleted)` after a removal. `None` off Linux or when no
    /// descriptor refers to it.
    pub fn whereabouts(&self) -> Option<PathBuf> {
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|fd| std::fs::metadata(fd).is_ok_and(|m| (m.dev(), m.ino()) == self.id))
            .and_then(|fd| std::fs::read_link(fd).ok())
    }

    /// The path the database was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the write-ahead log of the file opened is kept.
    pub fn wal_path(&self) -> &Path {
        &self.wal_path
    }

    /// Whether `path` still names the file that was opened.
    ///
    /// # Errors
    /// [`FileError`] says what happened to it.
    pub fn check(&self) -> Result<(), FileError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => self.check_wal(),
            Ok(_) => Err(FileError::Replaced),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::Gone),
            Err(e) => Err(FileError::Unreadable(e.to_string())),
        }
    }

    /// Whether the log beside the file is the one first seen there. SQLite
    /// removes it only when the last connection closes, so while this
    /// process runs it stays the same file.
    fn check_wal(&self) -> Result<(), FileError> {
        match std::fs::metadata(&self.wal_path) {
            Ok(meta) => {
                let id = (meta.dev(), meta.ino());
                if *self.wal.get_or_init(|| id) == id {
                    Ok(())
                } else {
                    Err(FileError::WalGone)
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.wal.get() {
                Some(_) => Err(FileError::WalGone),
                None => Ok(()),
            },
            Err(e) => Err(FileError::Unreadable(e.to_string())),
        }
    }
}

/// The type recorded for delivery `id`, if it was accepted before.
///
/// # Errors
/// When the database cannot be read.
pub fn recorded_type(readers: &ReadPool, id: &str) -> anyhow::Result<Option<String>> {
    use rusqlite::OptionalExtension as _;
    let conn = readers.get()?;
    let found = conn
        .prepare_cached("SELECT type FROM webhook_events WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(found)
}

/// Whether the database answers a read, and is still the file at its path.
/// Used by `/healthz` and by the systemd watchdog.
///
/// # Errors
/// What is wrong, in words fit for a health check's answer.
pub fn check_health(readers: &ReadPool, file: &DbFile) -> anyhow::Result<()> {
    file.check()?;
    let conn = readers.get().context("no database connection")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .context("the database does not answer")?;
    Ok(())
}

/// All users ever seen, and how many of them are tombstones. Both counts
/// come from indexes, not from the 2 KB rows, so scrapes stay cheap.
///
/// # Errors
/// Any SQLite failure.
pub fn user_counts(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM users),
                (SELECT count(*) FROM users WHERE deleted_at IS NOT NULL)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event;

    fn memory() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        conn
    }

    fn apply(conn: &Connection, d: &Delivery, received_at: i64) -> rusqlite::Result<Outcome> {
        Applier::new(conn)?.apply(d, received_at)
    }

    /// Column `column` of every row `sql` returns.
    fn strings(conn: &Connection, sql: &str, column: usize) -> Vec<String> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(column))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn upsert(id: &str, user: &str, updated_at: i64, name: &str) -> Delivery {
        let body = format!(
            r#"{{"type":"user.updated","timestamp":{updated_at},"data":{{"id":"{user}","updated_at":{updated_at},"first_name":"{name}"}}}}"#
        );
        event::parse(id.into(), body.as_bytes(), 0).unwrap()
    }

    fn delete(id: &str, user: &str, ts: i64) -> Delivery {
        let body = format!(
            r#"{{"type":"user.deleted","timestamp":{ts},"data":{{"id":"{user}","deleted":true}}}}"#
        );
        event::parse(id.into(), body.as_bytes(), 0).unwrap()
    }

    fn row(conn: &Connection, user: &str) -> (Option<String>, Option<i64>, Option<i64>) {
        conn.query_row(
            "SELECT first_name, updated_at, deleted_at FROM users WHERE clerk_id = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    }

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn the_writer_skips_the_outcome_check_other_connections_run_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = open_writer(&path, Duration::from_secs(1)).unwrap();
        let insert = "INSERT INTO webhook_events (id, type, received_at, outcome)
                      VALUES (?1, 't', 0, 'bogus')";
        let other = Connection::open(&path).unwrap();
        let refused = other
            .execute(insert, ["from_another_connection"])
            .unwrap_err();
        assert!(refused.to_string().contains("CHECK"), "{refused}");
        // The writer's own inserts are compiled without it: no temporary
        // table per insert, which is what the check costs.
        let plan = strings(
            &writer,
            "EXPLAIN INSERT INTO webhook_events (id, type, received_at, outcome)
             VALUES ('a', 't', 0, 'applied')",
            1,
        );
        assert!(!plan.iter().any(|op| op == "OpenEphemeral"), "{plan:?}");
    }

    #[test]
    fn a_file_moved_or_replaced_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        std::fs::write(&path, b"one").unwrap();
        let file = DbFile::open(&path).unwrap();
        assert_eq!(file.check(), Ok(()));
        // Rewritten in place: the same file, which is all this can tell.
        std::fs::write(&path, b"two").unwrap();
        assert_eq!(file.check(), Ok(()));
        std::fs::rename(&path, dir.path().join("b.db")).unwrap();
        assert_eq!(file.check(), Err(FileError::Gone));
        std::fs::write(dir.path().join("c.db"), b"three").unwrap();
        std::fs::rename(dir.path().join("c.db"), &path).unwrap();
        assert_eq!(file.check(), Err(FileError::Replaced));
    }

    #[test]
    fn a_log_removed_or_replaced_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let wal = wal_path(&path);
        std::fs::write(&path, b"db").unwrap();
        let file = DbFile::open(&path).unwrap();
        // No log yet: fine, and the first one seen is the one kept.
        assert_eq!(file.check(), Ok(()));
        std::fs::write(&wal, b"log").unwrap();
        assert_eq!(file.check(), Ok(()));
        std::fs::write(&wal, b"more log").unwrap();
        assert_eq!(file.check(), Ok(()));
        // Held open, as SQLite holds it, so its inode is not reused.
        let _held = std::fs::File::open(&wal).unwrap();
        std::fs::remove_file(&wal).unwrap();
        assert_eq!(file.check(), Err(FileError::WalGone));
        std::fs::write(&wal, b"another log").unwrap();
        assert_eq!(file.check(), Err(FileError::WalGone));
    }

    #[test]
    fn schema_applies_twice_and_records_its_version() {
        let conn = memory();
        migrate(&conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(migrate(&conn).is_err(), "a newer file must not be touched");
    }

    #[test]
    fn updates_are_ordered_by_updated_at() {
        let conn = memory();
        assert_eq!(
            apply(&conn, &upsert("m1", "u", T + 10, "new"), 1).unwrap(),
            Outcome::Applied
        );
        assert_eq!(
            apply(&conn, &upsert("m2", "u", T, "old"), 1).unwrap(),
            Outcome::Stale
        );
        assert_eq!(row(&conn, "u"), (Some("new".into()), Some(T + 10), None));
        assert_eq!(
            apply(&conn, &upsert("m1", "u", T + 99, "dup"), 1).unwrap(),
            Outcome::Duplicate
        );
        assert_eq!(row(&conn, "u").0.as_deref(), Some("new"));
        let outcomes = strings(&conn, "SELECT outcome FROM webhook_events ORDER BY id", 0);
        assert_eq!(outcomes, ["applied", "stale"]);
    }

    #[test]
    fn sqlite_is_built_with_the_options_asked_for() {
        // .cargo/config.toml asks to leave out the process-wide page-cache
        // lock and memory statistics. Cargo reads that file only when run
        // from inside the repository; elsewhere the build gets rusqlite's
        // defaults, and this checks those instead.
        let asked = option_env!("LIBSQLITE3_FLAGS").unwrap_or("");
        let options = strings(&memory(), "PRAGMA compile_options", 0);
        let has = |option: &str| options.iter().any(|o| o == option);
        assert_eq!(
            has("ENABLE_MEMORY_MANAGEMENT"),
            !asked.contains("-USQLITE_ENABLE_MEMORY_MANAGEMENT"),
            "asked for {asked:?}, built with {options:?}"
        );
        assert_eq!(
            has("DEFAULT_MEMSTATUS=0"),
            asked.contains("SQLITE_DEFAULT_MEMSTATUS=0"),
            "asked for {asked:?}, built with {options:?}"
        );
    }

    #[test]
    fn the_refused_json_depth_is_where_sqlite_stops_reading() {
        let conn = memory();
        let valid = |depth: usize| -> bool {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            conn.query_row("SELECT json_valid(?1)", [text], |r| r.get(0))
                .unwrap()
        };
        assert!(valid(event::JSON_DEPTH));
        assert!(!valid(event::JSON_DEPTH + 1));
    }

    #[test]
    fn a_log_with_commits_beside_no_database_is_not_thrown_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.db");
        let wal = wal_path(&path);
        // A header alone holds nothing: SQLite may drop it.
        std::fs::write(&wal, [0u8; 32]).unwrap();
        open_writer(&path, Duration::from_secs(1)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&wal, [0u8; 33]).unwrap();
        for database in [None, Some(&b""[..])] {
            if let Some(bytes) = database {
                std::fs::write(&path, bytes).unwrap();
            }
            let refused = open_writer(&path, Duration::from_secs(1)).unwrap_err();
            assert!(refused.to_string().contains("gone.db-wal"), "{refused}");
            assert_eq!(
                std::fs::metadata(&wal).unwrap().len(),
                33,
                "the log was touched"
            );
        }
    }

    #[test]
    fn a_tombstone_ends_the_same_in_every_order_of_versions_and_delete() {
        let version = |id: &str, updated_at: i64, external: Option<&str>| {
            let body = serde_json::json!({
                "type": "user.updated", "timestamp": updated_at,
                "data": {"id": "u", "updated_at": updated_at, "created_at": T,
                         "external_id": external},
            });
            event::parse(id.into(), body.to_string().as_bytes(), 0).unwrap()
        };
        let delete_with = |external: Option<&str>| {
            let body = serde_json::json!({
                "type": "user.deleted", "timestamp": T + 9,
                "data": {"id": "u", "deleted": true, "external_id": external},
            });
            event::parse("del".into(), body.to_string().as_bytes(), 0).unwrap()
        };
        let kept = |conn: &Connection| -> (Option<String>, Option<i64>, Option<i64>) {
            conn.query_row(
                "SELECT external_id, updated_at, deleted_at FROM users WHERE clerk_id = 'u'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        for (newest, from_delete) in [
            (None, None),
            (None, Some("e_del")),
            (Some("e2"), None),
            (Some("e2"), Some("e_del")),
        ] {
            let events = [
                version("v1", T + 1, Some("e1")),
                version("v2", T + 2, newest),
                delete_with(from_delete),
            ];
            // The newest version's external_id, whatever the delete says.
            let want = (newest.map(str::to_owned), Some(T + 2), Some(T + 9));
            for order in [
                [0, 1, 2],
                [0, 2, 1],
                [1, 0, 2],
                [1, 2, 0],
                [2, 0, 1],
                [2, 1, 0],
            ] {
                let conn = memory();
                for i in order {
                    apply(&conn, &events[i], 1).unwrap();
                }
                assert_eq!(
                    kept(&conn),
                    want,
                    "order {order:?}, newest {newest:?}, delete {from_delete:?}"
                );
            }
        }
        // With no version seen, the tombstone keeps what the delete says.
        let conn = memory();
        apply(&conn, &delete_with(Some("e_del")), 1).unwrap();
        assert_eq!(kept(&conn), (Some("e_del".to_owned()), None, Some(T + 9)));
    }

    #[test]
    fn email_and_external_id_change_only_with_a_version_that_applies() {
        let conn = memory();
        let version = |id: &str, updated_at: i64, email: &str, external: Option<&str>| {
            let body = serde_json::json!({
                "type": "user.updated",
                "timestamp": updated_at,
                "data": {
                    "id": "u", "updated_at": updated_at, "first_name": id,
                    "external_id": external, "primary_email_address_id": "idn_1",
                    "email_addresses": [{"id": "idn_1", "email_address": email}],
                },
            });
            event::parse(id.into(), body.to_string().as_bytes(), 0).unwrap()
        };
        let indexed = |conn: &Connection| -> (String, Option<String>, String) {
            conn.query_row(
                "SELECT email, external_id, first_name FROM users WHERE clerk_id = 'u'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        #[rustfmt::skip]
        let cases = [
            // (delivery, updated_at, email, external_id, outcome, row after)
            ("m1", T, "a@x.org", None, Outcome::Applied, ("a@x.org", None, "m1")),
            ("m2", T + 1, "a@x.org", None, Outcome::Applied, ("a@x.org", None, "m2")),
            ("m3", T + 2, "b@x.org", None, Outcome::Applied, ("b@x.org", None, "m3")),
            ("m4", T + 3, "b@x.org", Some("e1"), Outcome::Applied, ("b@x.org", Some("e1"), "m4")),
            ("m5", T + 1, "c@x.org", Some("e2"), Outcome::Stale, ("b@x.org", Some("e1"), "m4")),
            ("m6", T + 2, "b@x.org", Some("e1"), Outcome::Stale, ("b@x.org", Some("e1"), "m4")),
            // The same version again, with other indexed values: it applies.
            ("m7", T + 3, "d@x.org", None, Outcome::Applied, ("d@x.org", None, "m7")),
        ];
        for (id, updated_at, email, external, outcome, (e, x, name)) in cases {
            let d = version(id, updated_at, email, external);
            assert_eq!(apply(&conn, &d, 1).unwrap(), outcome, "{id}");
            let expected = (e.to_owned(), x.map(str::to_owned), name.to_owned());
            assert_eq!(indexed(&conn), expected, "{id}");
        }
        // The indexes agree with the table.
        let by_email: Vec<String> = strings(
            &conn,
            "SELECT first_name FROM users INDEXED BY users_email WHERE email = 'd@x.org'",
            0,
        );
        assert_eq!(by_email, ["m7"]);
        let stale = strings(
            &conn,
            "SELECT id FROM webhook_events WHERE outcome = 'stale' ORDER BY id",
            0,
        );
        assert_eq!(stale, ["m5", "m6"]);
    }

    #[test]
    fn tombstones_hold_until_a_strictly_newer_version() {
        let conn = memory();
        apply(&conn, &upsert("m1", "u", T, "a"), 1).unwrap();
        assert_eq!(
            apply(&conn, &delete("m2", "u", T + 5), 1).unwrap(),
            Outcome::Applied
        );
        assert_eq!(row(&conn, "u"), (None, Some(T), Some(T + 5)));
        assert_eq!(
            apply(&conn, &upsert("m3", "u", T + 5, "same"), 1).unwrap(),
            Outcome::Stale
        );
        assert_eq!(
            apply(&conn, &upsert("m4", "u", T + 6, "back"), 1).unwrap(),
            Outcome::Applied
        );
        assert_eq!(row(&conn, "u"), (Some("back".into()), Some(T + 6), None));
    }

    #[test]
    fn late_versions_fill_a_tombstone_without_reviving_it() {
        let conn = memory();
        apply(&conn, &delete("m1", "u", T + 100), 1).unwrap();
        assert_eq!(
            apply(&conn, &upsert("m2", "u", T + 50, "late"), 1).unwrap(),
            Outcome::Stale
        );
        assert_eq!(
            apply(&conn, &upsert("m3", "u", T + 20, "older"), 1).unwrap(),
            Outcome::Stale
        );
        // Same row as if the updates had come before the delete.
        assert_eq!(row(&conn, "u"), (None, Some(T + 50), Some(T + 100)));
        let data: Option<String> = conn
            .query_row("SELECT data FROM users WHERE clerk_id = 'u'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(data, None);
    }

    #[test]
    fn a_never_seen_user_gets_a_tombstone_that_late_creates_respect() {
        let conn = memory();
        assert_eq!(
            apply(&conn, &delete("m1", "ghost", T), 1).unwrap(),
            Outcome::Applied
        );
        assert_eq!(row(&conn, "ghost"), (None, None, Some(T)));
        assert_eq!(
            apply(&conn, &upsert("m2", "ghost", T - 1, "late"), 1).unwrap(),
            Outcome::Stale
        );
        assert_eq!(
            apply(&conn, &delete("m3", "ghost", T - 9), 1).unwrap(),
            Outcome::Stale
        );
        assert_eq!(row(&conn, "ghost"), (None, Some(T - 1), Some(T)));
    }
}
