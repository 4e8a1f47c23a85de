//! Opening the file for writing and reading: pragmas, schema, migration,
//! and the start-up refusals that keep a delivery from being acknowledged
//! into a file nobody will read.
//!
//! `synchronous=FULL` makes every commit reach the disk before it returns,
//! which is what lets a `200` mean "kept".

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::paths::{file_len, shm_path, wal_path};
use super::{ReadPool, SCHEMA, SCHEMA_VERSION};

/// The page size of a database file this creates, in bytes.
pub const NEW_FILE_PAGE_SIZE: i64 = 8192;

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
    // Only a new, empty file takes this (an existing one keeps its size).
    // A user row is about 2.5 KB, so a 4 KiB page holds one and wastes the
    // rest, and every page is written twice (log, then file): with 8 KiB
    // pages three rows share one, and an import of 100,000 users runs ~35 %
    // faster. 16 KiB pages were slower again (each changed index page then
    // costs 16 KiB of log).
    conn.pragma_update(None, "page_size", NEW_FILE_PAGE_SIZE)?;
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
