//! The figures `clerk-sync status` reports, read in one read transaction
//! without disturbing a running `serve` (or a stopped one's files).

use std::path::Path;
use std::time::Duration;

use crate::event::Kind;

use anyhow::{bail, Context as _};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _};
use serde_json::{json, Value};

/// What every SQLite database file starts with.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Gathers the status figures in one read transaction, so they agree with
/// each other even while `serve` writes. A file SQLite finds damaged is
/// still a report, with what could be read and what SQLite said as its
/// integrity.
///
/// # Errors
/// When the file is missing, cannot be opened read-only, is not SQLite, or
/// lacks the schema.
pub fn status_report(path: &Path) -> anyhow::Result<Value> {
    if !path.exists() {
        bail!("no database at {}", path.display());
    }
    let header = file_header(path).with_context(|| format!("cannot read {}", path.display()))?;
    // SQLite takes an empty file for an empty database.
    if !header.is_empty() && !header.starts_with(SQLITE_MAGIC) {
        bail!(
            "{} is not a clerk-sync database: it is not a SQLite file",
            path.display()
        );
    }
    let wal_file = header.get(18..20) == Some(&[2, 2]);
    let unlocked = !super::wal_path(path).exists();
    let report = read_status(path, unlocked, wal_file);
    // Read without locks, the file must not have changed meanwhile; a
    // `serve` started since could have, and its log says so.
    if unlocked && super::wal_path(path).exists() {
        return read_status(path, false, wal_file);
    }
    report
}

fn read_status(path: &Path, unlocked: bool, wal_file: bool) -> anyhow::Result<Value> {
    let conn = open_for_status(path, unlocked)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let tx = conn
        .unchecked_transaction()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut report = json!({
        "database": path.display().to_string(),
        "schema_version": null,
        "journal_mode": null,
        "users": null,
        "events": null,
        "last_event": null,
        "integrity": null,
    });
    // Opened immutable, a WAL file without its log is read in rollback mode
    // and SQLite would say `delete`; the header says what the file is.
    let read = read_figures(&tx, &mut report, unlocked && wal_file);
    let check: rusqlite::Result<Vec<String>> = tx
        .prepare("PRAGMA integrity_check")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        // Some findings span lines; the report gives each one line.
        .map(|found: Vec<String>| found.iter().map(|f| f.replace('\n', " ")).collect());
    let newer = report["schema_version"]
        .as_i64()
        .is_some_and(|v| v > super::SCHEMA_VERSION);
    let damage = match read {
        Err(e) if is_damage(&e) => Some(e.to_string()),
        // A newer schema may well lack what this binary reads; the report
        // still shows its version, and `status` refuses it.
        Err(_) if newer => None,
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::CannotOpen) => {
            return Err(e).with_context(|| cannot_open(path));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("{} is not a clerk-sync database", path.display()))
        }
        Ok(()) => None,
    };
    report["integrity"] = json!(match (damage, check) {
        (None, Ok(found)) => found.join("; "),
        (Some(said), Ok(found)) if found == ["ok"] => said,
        (Some(said), Ok(found)) => format!("{said}; {}", found.join("; ")),
        (Some(said), Err(_)) => said,
        (None, Err(e)) if is_damage(&e) => e.to_string(),
        (None, Err(e)) => {
            return Err(e).with_context(|| format!("cannot check {}", path.display()));
        }
    });
    tx.finish()?;
    Ok(report)
}

/// Why SQLite could not open a file that is there. Left by a crash, a log
/// needs its `-shm` to be read, and SQLite makes that file when it is
/// missing, which a read-only directory does not allow.
fn cannot_open(path: &Path) -> String {
    if super::wal_path(path).exists() && !super::shm_path(path).exists() {
        format!(
            "cannot read {}: its write-ahead log (-wal, left by a stop that was not clean) needs \
             a -shm file beside it, which could not be made here (a read-only directory?); run \
             status where it can be, or start serve once to fold the log into the database",
            path.display()
        )
    } else {
        format!("cannot read {}", path.display())
    }
}

/// Fills in `report` one figure at a time, so that a file SQLite can read
/// only in part still shows that part.
fn read_figures(tx: &Connection, report: &mut Value, wal_file: bool) -> rusqlite::Result<()> {
    report["schema_version"] =
        json!(tx.query_row::<i64, _, _>("PRAGMA user_version", [], |r| r.get(0))?);
    report["journal_mode"] = if wal_file {
        json!("wal")
    } else {
        json!(tx.query_row::<String, _, _>("PRAGMA journal_mode", [], |r| r.get(0))?)
    };
    for kind in Kind::ALL {
        if let Some((total, tombstones)) = super::queries::object_counts(tx, kind)? {
            report[plural(kind)] =
                json!({ "total": total, "active": total - tombstones, "tombstones": tombstones });
        }
    }
    if has_table(tx, "changes")? {
        let (rows, last): (i64, Option<i64>) = tx.query_row(
            "SELECT count(*), (SELECT seq FROM sqlite_sequence WHERE name = 'changes') FROM changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        report["changes"] = json!({ "rows": rows, "last_seq": last.unwrap_or(0) });
    }
    if has_table(tx, "imports")? {
        let last: Option<ImportRow> = tx
            .query_row(
                "SELECT started_at, finished_at, result, report FROM imports ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        report["last_import"] = json!(last.map(|(started, finished, result, counts)| json!({
            "started_at": started,
            "finished_at": finished,
            "result": result.unwrap_or_else(|| "unfinished".into()),
            "counts": counts
                .and_then(|c| serde_json::from_str::<Value>(&c).ok())
                .map(|report| report["types"].clone()),
        })));
    }
    let mut by_type = serde_json::Map::new();
    let mut events = 0i64;
    let mut stmt = tx.prepare("SELECT type, outcome, count(*) FROM webhook_events GROUP BY type, outcome ORDER BY type, outcome")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, outcome, n) = row?;
        events += n;
        let entry = by_type.entry(kind).or_insert_with(|| json!({}));
        entry[outcome] = json!(n);
    }
    let last: Option<(String, String, i64)> = tx
        .query_row(
            "SELECT id, type, received_at FROM webhook_events ORDER BY received_at DESC, id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // Together: a missing last event would otherwise read as none.
    report["events"] = json!({ "total": events, "by_type": by_type });
    report["last_event"] = json!(last.map(|(id, kind, at)| json!({
        "id": id, "type": kind, "received_at": at,
        "seconds_ago": (crate::clock::now_ms() - at) / 1000,
    })));
    Ok(())
}

/// `started_at`, `finished_at`, `result`, `report` of an `imports` row.
type ImportRow = (i64, Option<i64>, Option<String>, Option<String>);

/// The report's key for `kind`: `users`, `organizations`, ...
pub fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "users",
        Kind::Organization => "organizations",
        Kind::Membership => "memberships",
        Kind::Invitation => "invitations",
    }
}

fn has_table(tx: &Connection, name: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
}

/// Whether SQLite refused to read on because the file is damaged: a page
/// that is not what it should be, or a header it cannot make sense of (the
/// file did start like a SQLite file).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// The first 100 bytes of the file at `path` (SQLite's file header), fewer
/// if it is shorter.
fn file_header(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)?
        .take(100)
        .read_to_end(&mut header)?;
    Ok(header)
}

/// Opens `path` read-only. Even so, SQLite creates the `-wal` and `-shm`
/// files of a WAL database that has none (`serve` removes them on a clean
/// stop), owned by whoever runs `status`, which can leave `serve` unable to
/// write later, and it needs a writable directory for them. `unlocked` opens
/// the file as immutable instead: no files, no locks, which is right only
/// while no `serve` has it open, that is while it has no log.
fn open_for_status(path: &Path, unlocked: bool) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if unlocked {
        let uri = immutable_uri(path)
            .with_context(|| format!("cannot make {} absolute", path.display()))?;
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    };
    conn.with_context(|| format!("cannot open {}", path.display()))
}

/// `path` as a `file:` URI with `immutable=1`. Absolute, so a name starting
/// with `//` cannot read as a host, and with every byte outside the
/// unreserved set percent-encoded, so a `?`, `#` or `%` in a name stays part
/// of it.
fn immutable_uri(path: &Path) -> std::io::Result<String> {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::path::absolute(path)?;
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_uris_keep_odd_names_intact() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/a b?c#d%41é.db")).unwrap(),
            "file:///var/lib/a%20b%3Fc%23d%2541%C3%A9.db?immutable=1"
        );
        let relative = immutable_uri(Path::new("x.db")).unwrap();
        assert!(
            relative.starts_with("file:///") && relative.ends_with("/x.db?immutable=1"),
            "{relative}"
        );
    }
}
