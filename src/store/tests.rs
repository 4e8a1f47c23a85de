//! The store's unit tests, on real SQLite files and in-memory databases.

use std::time::Duration;

use rusqlite::Connection;

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
fn new_files_get_the_larger_page_and_old_ones_keep_theirs() {
    let page_size =
        |c: &Connection| -> i64 { c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap() };
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new.db");
    let writer = open_writer(&new, Duration::from_secs(1)).unwrap();
    assert_eq!(page_size(&writer), open::NEW_FILE_PAGE_SIZE);
    drop(writer);
    assert_eq!(
        page_size(&Connection::open(&new).unwrap()),
        open::NEW_FILE_PAGE_SIZE
    );

    // A file an earlier release made, with SQLite's default page.
    let old = dir.path().join("old.db");
    let made = Connection::open(&old).unwrap();
    made.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)")
        .unwrap();
    assert_eq!(page_size(&made), 4096);
    drop(made);
    let writer = open_writer(&old, Duration::from_secs(1)).unwrap();
    assert_eq!(page_size(&writer), 4096);
    writer
        .execute("INSERT INTO users (clerk_id) VALUES ('user_1')", [])
        .unwrap();
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
