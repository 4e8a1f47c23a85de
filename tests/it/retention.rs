//! `--keep-days`: old `webhook_events` and `changes` go, the mirror stays.

use std::time::{Duration, Instant};

use crate::support::inproc;
use crate::support::process::{run_to_end, Options, Process};
use crate::support::*;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A stopped database with a user, a tombstone, and event and change rows
/// dated `age_days` ago and now.
async fn aged_database(age_days: i64) -> (tempfile::TempDir, std::path::PathBuf, Delivery) {
    let mut s = inproc::start_default();
    let user = unique_user_id();
    let created = delivery(user_event(
        "user.created",
        &user_data(&user, now_ms(), now_ms()),
    ));
    assert_status(&s.deliver(&created).await, 200, "created");
    let gone = unique_user_id();
    assert_status(
        &s.deliver(&delivery(deleted_event(&gone, None, now_ms())))
            .await,
        200,
        "deleted",
    );
    let db = s.db_path.clone();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("aged.db");
    assert_eq!(s.stop(), Ok(()));
    std::fs::copy(&db, &copy).unwrap();
    let c = open_db(&copy);
    let old = now_ms() - age_days * DAY_MS;
    // The created user's own event and change are the old ones.
    c.execute(
        "UPDATE webhook_events SET received_at = ?1 WHERE id = ?2",
        rusqlite::params![old, created.id],
    )
    .unwrap();
    c.execute(
        "UPDATE changes SET at = ?1 WHERE event_id = ?2",
        rusqlite::params![old, created.id],
    )
    .unwrap();
    for i in 0..2500 {
        c.execute(
            "INSERT INTO webhook_events (id, type, received_at, outcome) VALUES (?1, 'session.created', ?2, 'ignored')",
            rusqlite::params![format!("msg_old{i}"), old - i],
        )
        .unwrap();
    }
    (dir, copy, created)
}

fn counts(db: &std::path::Path) -> (i64, i64, i64) {
    let c = open_db(db);
    (
        count(&c, "webhook_events"),
        count(&c, "changes"),
        count(&c, "users"),
    )
}

#[tokio::test]
async fn old_events_and_changes_are_pruned_soon_after_the_start_the_mirror_stays() {
    let (_dir, db, created) = aged_database(40).await;
    assert_eq!(counts(&db), (2502, 2, 2));
    let s = Process::with(Options {
        db: Some(db.clone()),
        ..Options::default()
    });
    // The first pass comes within a minute of the start (bounded wait).
    let until = Instant::now() + Duration::from_secs(60);
    while counts(&db) != (1, 1, 2) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        counts(&db),
        (1, 1, 2),
        "the recent event and change stay, every user row stays"
    );
    let c = s.db();
    let deleted: i64 = c
        .query_row(
            "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(deleted, 1, "tombstones are never pruned");
    drop(c);
    // The pruned event delivered again goes through the guard: the same
    // version changes nothing, and is recorded once more.
    let r = s.deliver(&created).await;
    assert_status(&r, 200, "a retry after its event row was pruned");
    assert_eq!(r.json().unwrap()["outcome"], "applied");
    assert_eq!(
        counts(&db),
        (2, 1, 2),
        "an identical version adds no change"
    );
}

#[tokio::test]
async fn keep_days_zero_keeps_everything() {
    let (_dir, db, _) = aged_database(4000).await;
    let s = Process::with(Options {
        db: Some(db.clone()),
        extra_env: vec![("CLERK_SYNC_KEEP_DAYS".into(), "0".into())],
        ..Options::default()
    });
    // Past the first pass a pruning server would have made.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(counts(&db), (2502, 2, 2));
    drop(s);
}

#[test]
fn keep_days_of_one_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = run_to_end(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
            "--keep-days",
            "1",
        ],
        &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)],
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--keep-days 1") && out.stderr.lines().count() == 1,
        "{}",
        out.stderr
    );
    assert!(!db.exists(), "a refused start leaves no database behind");
}
