//! Reads: dedupe look-ups, health, and the figures that status and
//! metrics report.

use anyhow::Context as _;
use rusqlite::Connection;

use super::paths::{file_len, wal_path};
use super::{DbFile, ReadPool};
use crate::event::Kind;
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

/// All `kind` rows ever seen, and how many of them are tombstones; `None`
/// when the file has no such table (a schema older than the type). Both
/// counts come from indexes, not from the rows, so scrapes stay cheap.
///
/// # Errors
/// Any SQLite failure.
pub(super) fn object_counts(conn: &Connection, kind: Kind) -> rusqlite::Result<Option<(i64, i64)>> {
    let table = kind.spec().table;
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    conn.query_row(
        &format!(
            "SELECT (SELECT count(*) FROM {table}),
                    (SELECT count(*) FROM {table} WHERE deleted_at IS NOT NULL)"
        ),
        [],
        |r| Ok(Some((r.get(0)?, r.get(1)?))),
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
    let mut objects = Vec::new();
    for kind in Kind::ALL {
        if let Some((total, tombstones)) = object_counts(&conn, kind)? {
            objects.push((kind.name(), total - tombstones, tombstones));
        }
    }
    let last_applied_ms: Option<i64> = conn.query_row(
        "SELECT max(received_at) FROM webhook_events WHERE outcome = 'applied'",
        [],
        |r| r.get(0),
    )?;
    Ok(MirrorFigures {
        objects,
        last_applied_ms,
        bytes: file_len(path) + file_len(&wal_path(path)),
        now_ms: crate::clock::now_ms(),
    })
}
