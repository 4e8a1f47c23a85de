//! `clerk-sync import`, the real binary against the fake Clerk Backend API:
//! filling every table, merging by the same rules as webhooks, reconciling
//! deletions only on Clerk's word, stopping and resuming, running beside
//! `serve`, and export files.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{json, Value};

use crate::fake_clerk::{self, Data, FakeClerk, Fault};
use crate::support::inproc::{self, Settings};
use crate::support::process::{base_command, run_to_end};
use crate::support::*;

const KEY: &str = "sk_test_SW1wb3J0Q29tbWFuZFRlc3RLZXkwMTIzNDU2Nzg5YWJj";
const T0: i64 = 1_700_000_000_000;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

fn command(fake: &FakeClerk, db: &Path, extra: &[&str]) -> tokio::process::Command {
    let dir = db.parent().unwrap();
    let mut cmd = tokio::process::Command::from(base_command(dir));
    cmd.args([
        "import",
        "--db",
        db.to_str().unwrap(),
        "--api-url",
        &fake.url(),
        "--rate",
        "0",
    ])
    .args(extra)
    .env("CLERK_SECRET_KEY", KEY)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

async fn finish(cmd: &mut tokio::process::Command) -> Out {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("import finished within 120 s")
        .expect("import ran");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `import --json --from-file FILE`.
async fn import_file(fake: &FakeClerk, db: &Path, file: &Path) -> Out {
    import(fake, db, &["--json", "--from-file", file.to_str().unwrap()]).await
}

async fn import(fake: &FakeClerk, db: &Path, extra: &[&str]) -> Out {
    finish(&mut command(fake, db, extra)).await
}

fn users(n: usize, first: i64) -> Vec<Value> {
    (0..n)
        .map(|i| fake_clerk::user(&format!("user_{i:06}"), first + i as i64 * 10))
        .collect()
}

fn one<T: rusqlite::types::FromSql>(c: &Connection, sql: &str) -> T {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn tmp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    (dir, db)
}

/// `n` users and nothing else.
fn only_users(n: usize) -> Data {
    Data {
        users: users(n, T0),
        ..Data::default()
    }
}

/// The users looked up one by one, from request `from` of `fake` on.
fn user_lookups(fake: &FakeClerk, from: usize) -> Vec<String> {
    fake.requests()[from..]
        .iter()
        .filter(|s| s.path.starts_with("/v1/users/") && s.path != "/v1/users/count")
        .map(|s| s.path.clone())
        .collect()
}

fn everything(n_users: usize) -> Data {
    let orgs: Vec<Value> = (0..3)
        .map(|i| fake_clerk::organization(&format!("org_{i}"), T0 + i))
        .collect();
    let memberships = (0..6)
        .map(|i| {
            fake_clerk::membership(
                &format!("orgmem_{i}"),
                &orgs[i % 3],
                &format!("user_{i:06}"),
                T0 + i as i64,
            )
        })
        .collect();
    let invitations = (0..4)
        .map(|i| fake_clerk::invitation(&format!("orginv_{i}"), "org_0", T0 + i))
        .collect();
    Data {
        users: users(n_users, T0),
        organizations: orgs,
        memberships,
        invitations,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_every_table_and_a_second_run_changes_nothing() {
    let fake = FakeClerk::start(KEY, everything(1203)).await;
    let (_dir, db) = tmp_db();
    let out = import(&fake, &db, &["--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = out.report();
    assert_eq!(r["result"], "complete");
    assert_eq!(r["types"]["user"]["listed"], 1203);
    assert_eq!(r["types"]["user"]["inserted"], 1203);
    assert_eq!(r["types"]["organization"]["inserted"], 3);
    assert_eq!(r["types"]["membership"]["inserted"], 6);
    assert_eq!(r["types"]["invitation"]["inserted"], 4);
    let c = open_db(&db);
    assert_eq!(count(&c, "active_users"), 1203);
    assert_eq!(
        one::<String>(&c, "SELECT email FROM users WHERE clerk_id = 'user_000007'"),
        "user_000007@example.com",
        "email by primary_email_address_id, as a delivery fills it"
    );
    assert_eq!(
        one::<i64>(
            &c,
            "SELECT members_count FROM organizations WHERE clerk_id = 'org_1'"
        ),
        1
    );
    assert_eq!(count(&c, "active_memberships"), 6);
    assert_eq!(
        one::<String>(
            &c,
            "SELECT status FROM organization_invitations WHERE clerk_id = 'orginv_2'"
        ),
        "pending"
    );
    assert_eq!(
        one::<i64>(&c, "SELECT count(*) FROM changes WHERE source = 'import' AND event_id IS NULL AND change = 'created'"),
        1203 + 3 + 6 + 4
    );
    // One row per object, in the order they were merged: the listing's.
    let feed: Vec<(String, i64)> = c
        .prepare("SELECT object_id, at FROM changes WHERE object_type = 'user' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: Vec<&str> = feed.iter().map(|(id, _)| id.as_str()).collect();
    let listed: Vec<String> = (0..1203).map(|i| format!("user_{i:06}")).collect();
    assert_eq!(ids, listed);
    assert!(feed.iter().all(|(_, at)| *at > T0), "dated when committed");
    // Every list was read oldest first, 500 at a time.
    let pages: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|s| s.path == "/v1/users")
        .map(|s| s.query)
        .collect();
    assert!(
        pages
            .iter()
            .all(|q| q.contains("limit=500") && q.contains("order_by=%2Bcreated_at")),
        "{pages:?}"
    );
    drop(c);

    let again = import(&fake, &db, &["--json"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let r = again.report();
    assert_eq!(r["types"]["user"]["unchanged"], 1203);
    assert_eq!(r["types"]["user"]["updated"], 0);
    assert_eq!(r["types"]["membership"]["unchanged"], 6);
    let c = open_db(&db);
    assert_eq!(
        one::<i64>(&c, "SELECT count(*) FROM changes"),
        1216,
        "an identical object writes nothing"
    );

    let status = run_to_end(&["status", "--db", db.to_str().unwrap(), "--json"], &[]);
    let s: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["last_import"]["result"], "complete");
    assert_eq!(s["last_import"]["counts"]["user"]["unchanged"], 1203);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_merge_by_the_webhook_rules() {
    let (_dir, db) = tmp_db();
    // The mirror knows a newer version of one user from a webhook, and
    // another user's deletion.
    {
        let s = inproc::start(Settings {
            db: Some(db.clone()),
            ..Settings::default()
        });
        let mut newer = user_data("user_000001", T0, T0 + 999_999);
        newer["first_name"] = json!("From a webhook");
        assert_status(
            &s.deliver(&delivery(user_event("user.updated", &newer)))
                .await,
            200,
            "newer",
        );
        assert_status(
            &s.deliver(&delivery(deleted_event("user_000002", None, T0 + 500_000)))
                .await,
            200,
            "deleted",
        );
    }
    let fake = FakeClerk::start(KEY, only_users(4)).await;
    let out = import(&fake, &db, &["--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = out.report();
    assert_eq!(r["types"]["user"]["stale"], 2, "{r}");
    assert_eq!(r["types"]["user"]["inserted"], 2, "{r}");
    let c = open_db(&db);
    assert_eq!(
        one::<String>(
            &c,
            "SELECT first_name FROM users WHERE clerk_id = 'user_000001'"
        ),
        "From a webhook"
    );
    assert!(
        one::<Option<i64>>(
            &c,
            "SELECT deleted_at FROM users WHERE clerk_id = 'user_000002'"
        )
        .is_some(),
        "an object not newer than the deletion does not bring it back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_confirmed_one_by_one_and_a_skipped_object_is_kept() {
    let fake = FakeClerk::start(KEY, everything(1000)).await;
    let (_dir, db) = tmp_db();
    assert_eq!(import(&fake, &db, &[]).await.code, Some(0));
    // While no webhook got through, Clerk deleted user 900, an
    // organization (and so its memberships) and one other membership.
    {
        let mut data = fake.data();
        data.users.retain(|u| u["id"] != "user_000900");
        data.organizations.retain(|o| o["id"] != "org_2");
        data.memberships
            .retain(|m| m["id"] != "orgmem_0" && m["organization"]["id"] != "org_2");
    }
    // And user 10 goes while the next import pages through the users: every
    // later user moves one place forward, and the one that was first on
    // the second page (user 500) is never listed.
    let lists = |fake: &FakeClerk| -> Vec<String> {
        fake.requests()
            .into_iter()
            .filter(|s| s.path == "/v1/users")
            .map(|s| s.query)
            .collect()
    };
    let before = lists(&fake).len();
    fake.set_delay(Duration::from_millis(300));
    let child = command(&fake, &db, &["--json"]).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The second page was asked for, and is answered after the delay.
    while !lists(&fake)[before..]
        .iter()
        .any(|q| q.contains("offset=500"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import did not list"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.data().users.retain(|u| u["id"] != "user_000010");
    fake.set_delay(Duration::ZERO);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let out = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = out.report();
    let c = open_db(&db);
    let deleted = |id: &str| -> bool {
        c.query_row(
            "SELECT deleted_at IS NOT NULL FROM users WHERE clerk_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        r["types"]["user"]["listed"], 998,
        "one deleted, one skipped by the offset: {r}"
    );
    assert!(deleted("user_000900"), "Clerk's 404 makes the tombstone");
    assert!(
        !deleted("user_000500"),
        "skipped by the listing, found on its own: kept"
    );
    assert!(
        !deleted("user_000010"),
        "listed before it went: no evidence, no tombstone"
    );
    assert_eq!(r["types"]["user"]["deleted"], 1);
    assert_eq!(count(&c, "active_users"), 999);
    let user_lookups = user_lookups(&fake, 0);
    assert_eq!(
        user_lookups.len(),
        2,
        "only the two unlisted users are looked up: {user_lookups:?}"
    );
    let gone = |table: &str, id: &str| -> bool {
        c.query_row(
            &format!("SELECT deleted_at IS NOT NULL FROM {table} WHERE clerk_id = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(gone("organizations", "org_2"));
    assert!(
        gone("organization_memberships", "orgmem_0"),
        "absent from its organization's list"
    );
    assert!(
        gone("organization_memberships", "orgmem_2"),
        "its organization is gone"
    );
    assert!(
        gone("organization_memberships", "orgmem_5"),
        "its organization is gone"
    );
    assert!(!gone("organization_memberships", "orgmem_1"));
    assert_eq!(r["types"]["membership"]["deleted"], 3, "{r}");
    let dated: i64 = c
        .query_row(
            "SELECT deleted_at FROM users WHERE clerk_id = 'user_000900'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        dated > T0 && dated <= now_ms(),
        "dated when it was confirmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_cannot_finish_deletes_nothing() {
    let fake = FakeClerk::start(KEY, everything(1200)).await;
    let (_dir, db) = tmp_db();
    assert_eq!(import(&fake, &db, &[]).await.code, Some(0));
    // Half the users are gone from Clerk, but the listing fails for good
    // at its second page: no reconcile, nothing deleted.
    fake.data().users.truncate(600);
    // The count and the first page go through.
    fake.fail_next(2, Fault::Slow(Duration::ZERO));
    fake.fail_next(
        50,
        Fault::Status(hyper::StatusCode::SERVICE_UNAVAILABLE, "down"),
    );
    let out = import(&fake, &db, &["--json"]).await;
    assert_eq!(
        out.code,
        Some(1),
        "stopped partway: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.lines().any(|l| l.contains("503")),
        "{}",
        out.stderr
    );
    let c = open_db(&db);
    assert_eq!(
        count(&c, "active_users"),
        1200,
        "a listing alone never deletes anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_at_once_with_one_line_and_no_key() {
    let fake = FakeClerk::start(
        "sk_test_SomeOtherKeyThatTheFakeAccepts0123456789",
        everything(3),
    )
    .await;
    let (_dir, db) = tmp_db();
    let out = import(&fake, &db, &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(fake.requests().len(), 1, "no retry of a 401");
    let line: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("import:"))
        .collect();
    assert_eq!(line.len(), 1, "{}", out.stderr);
    assert!(line[0].contains("401"), "{}", line[0]);
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(KEY) && !text.contains(&KEY["sk_test_".len()..]),
            "{text}"
        );
    }

    // No key at all: exit 2, saying how to give one, before any request.
    let mut cmd = command(&fake, &db, &[]);
    cmd.env_remove("CLERK_SECRET_KEY");
    let out = finish(&mut cmd).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("CLERK_SECRET_KEY"), "{}", out.stderr);
    assert_eq!(fake.requests().len(), 1);
    let help = run_to_end(
        &["import", "--help"],
        &[("CLERK_SECRET_KEY", KEY), ("CLERK_SECRET_KEY_FILE", KEY)],
    );
    assert!(!help.stdout.contains(KEY), "{}", help.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_and_reports_what_it_would_do() {
    let fake = FakeClerk::start(KEY, everything(600)).await;
    let (_dir, db) = tmp_db();
    assert_eq!(import(&fake, &db, &[]).await.code, Some(0));
    fake.data().users.retain(|u| u["id"] != "user_000003");
    fake.data()
        .users
        .push(fake_clerk::user("user_new", T0 + 1_000_000));
    let before = std::fs::read(&db).unwrap();
    let asked_before = fake.requests().len();
    let out = import(&fake, &db, &["--json", "--dry-run"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = out.report();
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        (
            r["types"]["user"]["inserted"].as_u64(),
            r["types"]["user"]["deleted"].as_u64(),
            r["types"]["user"]["unchanged"].as_u64()
        ),
        (Some(1), Some(1), Some(599))
    );
    // What it listed is remembered although its merges are undone: only
    // the one user it did not list is looked up.
    assert_eq!(user_lookups(&fake, asked_before), ["/v1/users/user_000003"]);
    let c = open_db(&db);
    assert_eq!(count(&c, "active_users"), 600);
    assert_eq!(
        one::<i64>(&c, "SELECT count(*) FROM imports"),
        1,
        "a dry run is not recorded as a run"
    );
    drop(c);
    assert_eq!(std::fs::read(&db).unwrap().len(), before.len());
}

/// Waits until the import has asked for `n` pages of users.
async fn wait_for_user_pages(fake: &FakeClerk, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fake
        .requests()
        .iter()
        .filter(|s| s.path == "/v1/users")
        .count()
        < n
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import did not list"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_after_the_page_in_hand_and_a_second_run_completes() {
    let fake = FakeClerk::start(KEY, everything(3000)).await;
    fake.set_delay(Duration::from_millis(400));
    let (_dir, db) = tmp_db();
    let child = command(&fake, &db, &["--json"]).spawn().unwrap();
    wait_for_user_pages(&fake, 3).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"], "stopped");
    let committed = count(&open_db(&db), "users");
    assert_eq!(
        committed as u64,
        report["types"]["user"]["inserted"].as_u64().unwrap(),
        "what was reported is committed"
    );
    assert!(committed > 0 && committed < 3000, "{committed}");
    assert_eq!(
        one::<String>(
            &open_db(&db),
            "SELECT result FROM imports ORDER BY id DESC LIMIT 1"
        ),
        "stopped"
    );
    fake.set_delay(Duration::ZERO);
    let again = import(&fake, &db, &[]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(count(&open_db(&db), "active_users"), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_fetched_is_committed_while_a_slow_page_is_awaited() {
    let fake = FakeClerk::start(KEY, everything(3000)).await;
    let (_dir, db) = tmp_db();
    fake.set_delay(Duration::from_millis(1500));
    let mut child = command(&fake, &db, &[]).spawn().unwrap();
    // The first two pages (one batch) are in; the third is slow to come.
    wait_for_user_pages(&fake, 3).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The batch is committed without waiting for the next page, and the
    // write lock is free while the import waits: a `serve` beside it can
    // write. The third page is still a second away.
    let c = open_db(&db);
    c.busy_timeout(Duration::from_millis(500)).unwrap();
    let mut seen = 0;
    while seen < 1000 && tokio::time::Instant::now() < deadline {
        seen = count(&c, "users");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 1000, "the fetched batch was not committed");
    c.execute_batch("BEGIN IMMEDIATE; COMMIT")
        .expect("the import holds the write lock while it waits for a page");
    fake.set_delay(Duration::ZERO);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(count(&c, "active_users"), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_a_webhook_writes_while_the_import_lists_is_reconciled_too() {
    let fake = FakeClerk::start(KEY, only_users(1200)).await;
    let s = inproc::start_default();
    fake.set_delay(Duration::from_millis(1000));
    let child = command(&fake, &s.db_path, &["--json"]).spawn().unwrap();
    wait_for_user_pages(&fake, 1).await;
    // An old event of a user Clerk has since deleted arrives while the
    // listing runs: the row is new to the mirror, but the user was created
    // long before the listing began, and Clerk no longer lists it.
    let old = T0 - 86_400_000;
    let d = delivery(user_event(
        "user.created",
        &user_data("user_gone", old, old),
    ));
    assert_eq!(try_deliver(s.addr, &s.path, &d).await, Some(200));
    fake.set_delay(Duration::ZERO);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["types"]["user"]["deleted"], 1, "{r}");
    let c = open_db(&s.db_path);
    assert!(
        one::<bool>(
            &c,
            "SELECT deleted_at IS NOT NULL FROM users WHERE clerk_id = 'user_gone'"
        ),
        "looked up and found gone"
    );
    assert_eq!(count(&c, "active_users"), 1200);
    assert_eq!(
        user_lookups(&fake, 0),
        ["/v1/users/user_gone"],
        "and nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_running_serve_every_delivery_is_answered_200() {
    let fake = FakeClerk::start(KEY, only_users(20_000)).await;
    let s = inproc::start_default();
    let mut child = command(&fake, &s.db_path, &["--json"]).spawn().unwrap();
    let deliveries: Vec<Delivery> = (0..400)
        .map(|i| {
            delivery(user_event(
                "user.created",
                &user_data(&format!("user_hook{i}"), now_ms(), now_ms()),
            ))
        })
        .collect();
    let results: Answers = Arc::new(Mutex::new(Vec::new()));
    // Deliveries stream in for as long as the import runs (bounded).
    let mut sent = 0;
    let started = std::time::Instant::now();
    while sent < deliveries.len() && started.elapsed() < Duration::from_secs(60) {
        let batch: Vec<Delivery> = deliveries[sent..(sent + 20).min(deliveries.len())].to_vec();
        sent += batch.len();
        for task in send_concurrently(s.addr, &s.path, Arc::new(batch), 4, results.clone()) {
            task.await.unwrap();
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = results.lock().unwrap().clone();
    assert!(
        answers.len() >= 40,
        "deliveries were sent during the import: {}",
        answers.len()
    );
    assert!(
        answers.iter().all(|(_, st)| *st == Some(200)),
        "{answers:?}"
    );
    let c = s.db();
    assert_eq!(count(&c, "users") as usize, 20_000 + answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_trusted_certificate() {
    let fake = FakeClerk::start_tls(KEY, everything(5)).await;
    let (dir, db) = tmp_db();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    assert!(fake.url().starts_with("https://"));
    let mut trusted = command(&fake, &db, &[]);
    trusted.env("SSL_CERT_FILE", &ca);
    let out = finish(&mut trusted).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(count(&open_db(&db), "users"), 5);
    // Without the CA, the certificate is not trusted: could not start.
    let mut untrusted = command(&fake, &db, &[]);
    untrusted.env("SSL_CERT_FILE", dir.path().join("none.pem"));
    let out = finish(&mut untrusted).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[tokio::test]
async fn a_broken_file_stops_where_it_breaks_and_keeps_what_came_before() {
    let fake = FakeClerk::start(KEY, Data::default()).await;
    let (dir, db) = tmp_db();
    let user = |id: &str| fake_clerk::user(id, T0).to_string();
    // A user without an id is passed over; a value that is not JSON
    // stops the file, and nothing after it is read.
    let text = format!(
        "{}\n{}\n{{\"id\":\"user_c\"}}\n{{\"object\":\"user\"}}\n{{\"id\": user_d}}\n{}\n",
        user("user_a"),
        user("user_b"),
        user("user_e")
    );
    let file = dir.path().join("users.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = import_file(&fake, &db, &file).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("line 5 (record 5): not valid JSON"),
        "{}",
        out.stderr
    );
    let r = out.report();
    assert_eq!(r["types"]["user"]["inserted"], 3, "{r}");
    assert_eq!(r["types"]["user"]["invalid"], 1, "{r}");
    let c = open_db(&db);
    let ids: Vec<String> = c
        .prepare("SELECT clerk_id FROM users ORDER BY clerk_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, ["user_a", "user_b", "user_c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_file_json_merges_and_csv_only_fills_what_is_missing() {
    let (dir, db) = tmp_db();
    {
        let s = inproc::start(Settings {
            db: Some(db.clone()),
            ..Settings::default()
        });
        let mut hook = user_data("user_000001", T0, T0 + 5);
        hook["first_name"] = json!("Webhook");
        assert_status(
            &s.deliver(&delivery(user_event("user.created", &hook)))
                .await,
            200,
            "hook",
        );
    }
    let fake = FakeClerk::start(KEY, Data::default()).await;
    let json_file = dir.path().join("users.json");
    let array: Vec<Value> = users(3, T0);
    std::fs::write(&json_file, serde_json::to_vec(&array).unwrap()).unwrap();
    let out = import_file(&fake, &db, &json_file).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = out.report();
    assert_eq!(
        (
            r["types"]["user"]["inserted"].as_u64(),
            r["types"]["user"]["updated"].as_u64()
        ),
        (Some(2), Some(1)),
        "{r}"
    );
    assert!(fake.requests().is_empty(), "a file needs no API");

    let csv = dir.path().join("export.csv");
    std::fs::write(
        &csv,
        "id,first_name,last_name,username,primary_email_address,primary_phone_number,verified_email_addresses,unverified_email_addresses,verified_phone_numbers,unverified_phone_numbers,totp_secret,password_digest,password_hasher\n\
         user_000001,Csv,Name,,csv@x.test,,csv@x.test,,,,,,\n\
         user_csv_only,Ada,Lovelace,ada,ada@x.test,,ada@x.test,,,,,,\n",
    )
    .unwrap();
    let out = import_file(&fake, &db, &csv).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let c = open_db(&db);
    assert_eq!(
        one::<String>(
            &c,
            "SELECT first_name FROM users WHERE clerk_id = 'user_000001'"
        ),
        "Test",
        "a CSV row never overwrites a row from the API or a webhook"
    );
    assert_eq!(
        one::<String>(
            &c,
            "SELECT email FROM users WHERE clerk_id = 'user_csv_only'"
        ),
        "ada@x.test"
    );
    // A later webhook version of the CSV user applies.
    drop(c);
    let s = inproc::start(Settings {
        db: Some(db.clone()),
        ..Settings::default()
    });
    let mut hook = user_data("user_csv_only", T0, T0);
    hook["first_name"] = json!("Augusta");
    assert_status(
        &s.deliver(&delivery(user_event("user.updated", &hook)))
            .await,
        200,
        "after csv",
    );
    assert_eq!(
        one::<String>(
            &s.db(),
            "SELECT first_name FROM users WHERE clerk_id = 'user_csv_only'"
        ),
        "Augusta"
    );

    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"id\":\"user_a\",\"updated_at\":1}\n{\"id\": oops}\n",
    )
    .unwrap();
    let out = import(&fake, &db, &["--from-file", broken.to_str().unwrap()]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}
