//! Reads: dedupe look-ups, health, and the figures that status and
//! metrics report.

use anyhow::Context as _;
use rusqlite::Connection;

use super::paths::{file_len, wal_path};
use super::{DbFile, ReadPool};
use crate::metrics::MirrorFigures;

/// The type recorded for delivery `id`, if it was accepted before.
///
/// # Errors
/// When the database cannot be read.
pub(super) fn recorded_type(readers: &ReadPool, id: &str) -> anyhow::Result<Option<String>> {
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
pub(super) fn check_health(readers: &ReadPool, file: &DbFile) -> anyhow::Result<()> {
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

/// What `/metrics` reports of the database, from indexes, not the rows.
///
/// # Errors
/// Any SQLite failure.
pub(super) fn mirror_figures(
    readers: &ReadPool,
    path: &std::path::Path,
) -> anyhow::Result<MirrorFigures> {
    let conn = readers.get()?;
    let (users, tombstones) = user_counts(&conn)?;
    let last_applied_ms: Option<i64> = conn.query_row(
        "SELECT max(received_at) FROM webhook_events WHERE outcome = 'applied'",
        [],
        |r| r.get(0),
    )?;
    Ok(MirrorFigures {
        users: users - tombstones,
        tombstones,
        last_applied_ms,
        bytes: file_len(path) + file_len(&wal_path(path)),
        now_ms: crate::clock::now_ms(),
    })
}
