//! Process lifecycle and robustness: signals, restarts, a locked database,
//! concurrency, and order-independence of the mirror.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::inproc::{self, InProc, Settings};
use crate::support::process::{
    base_command, finish, is_root, run_to_end, which, Options, Process, BIN,
};
use crate::support::*;

const T0: i64 = 1_700_000_000_000;

/// A server on the database at `db`, as the tests that restart or damage
/// one need.
fn server_at(db: &std::path::Path) -> InProc {
    inproc::start(Settings {
        db: Some(db.to_owned()),
        ..Settings::default()
    })
}

/// [`server_at`] as a process, for the tests that kill it or read its log.
fn process_at(db: &std::path::Path) -> Process {
    Process::with(Options {
        db: Some(db.to_owned()),
        ..Options::default()
    })
}

/// A signed `user.created` of a new user.
fn a_new_user() -> Delivery {
    delivery(user_event(
        "user.created",
        &user_data(&unique_user_id(), T0, T0),
    ))
}

#[tokio::test]
async fn sigterm_exits_zero_and_healthz_answers_while_running() {
    let mut s = Process::start();
    for _ in 0..3 {
        assert_status(&s.get("/healthz").await, 200, "healthz");
    }
    let d = delivery(fixture("clerk/user.created.json"));
    assert_status(&s.deliver(&d).await, 200, "delivery");
    let status = s.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit: {status:?}\n{}",
        s.logs()
    );
    // A clean stop leaves one self-contained file, ready to copy.
    let mut wal = s.db_path.clone().into_os_string();
    wal.push("-wal");
    assert!(!std::path::Path::new(&wal).exists(), "WAL left behind");
    assert_eq!(event_count_for(&s.db(), &d.id), 1);
}

#[tokio::test]
async fn sigint_exits_zero() {
    let mut s = Process::start();
    assert_status(&s.get("/healthz").await, 200, "healthz");
    let status = s.signal_and_wait("-INT");
    assert_eq!(
        status.code(),
        Some(0),
        "SIGINT exit: {status:?}\n{}",
        s.logs()
    );
}

/// A delivery whose body is still arriving when SIGTERM comes is finished,
/// committed and answered; then the process exits 0.
#[tokio::test]
async fn sigterm_finishes_an_in_flight_delivery() {
    let mut s = Process::start();
    let uid = unique_user_id();
    let d = delivery(user_event("user.created", &user_data(&uid, T0, T0)));
    let head = raw_head(
        s.addr,
        &s.path,
        &d.headers(),
        &[&format!("content-length: {}", d.body.len())],
    );
    let (first, rest) = d.body.split_at(d.body.len() / 2);

    let mut stream = TcpStream::connect(s.addr).await.expect("connect");
    stream.write_all(&head).await.unwrap();
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    // Long enough for the server to have read the head and started the request.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    s.send_signal("-TERM");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream
        .write_all(rest)
        .await
        .expect("connection closed under an in-flight request");
    stream.flush().await.unwrap();

    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "no answer to the in-flight delivery within 15 s"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight delivery not answered 200 after SIGTERM: {text:?}\n{}",
        s.logs()
    );
    let status = s.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM: {status:?}\n{}",
        s.logs()
    );
    let c = open_db(&s.db_path);
    assert!(
        user_row(&c, &uid).is_some(),
        "the in-flight delivery was not committed"
    );
    assert!(event_row(&c, &d.id).is_some());
}

#[tokio::test]
async fn restart_keeps_rows_and_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("persist.db");
    let cfg = Settings {
        db: Some(db.clone()),
        ..Settings::default()
    };
    let uid = unique_user_id();
    let data = user_data(&uid, T0, T0);
    let first = delivery(user_event("user.created", &data));

    let mut a = inproc::start(cfg.clone());
    assert_status(&a.deliver(&first).await, 200, "before restart");
    let other = delivery(fixture("clerk/user.created.json"));
    assert_status(&a.deliver(&other).await, 200, "docs fixture");
    let before = all_users(&open_db(&db));
    assert_eq!(a.stop(), Ok(()));

    let b = inproc::start(cfg);
    assert_eq!(all_users(&b.db()), before, "rows changed across restart");
    // The same svix-id after the restart, with newer content: already applied.
    let mut newer = data.clone();
    newer["first_name"] = json!("AfterRestart");
    newer["updated_at"] = json!(T0 + 1_000);
    let dup = first.same_id_new_body(SECRET, user_event("user.updated", &newer));
    assert_status(&b.deliver(&dup).await, 200, "duplicate after restart");
    let c = b.db();
    assert_eq!(
        all_users(&c),
        before,
        "duplicate after restart changed users"
    );
    assert_eq!(count(&c, "webhook_events"), 2);

    // And new events still apply.
    let fresh = delivery(user_event("user.updated", &newer));
    assert_status(&b.deliver(&fresh).await, 200, "new event after restart");
    assert_eq!(
        user_row(&b.db(), &uid).unwrap().first_name.as_deref(),
        Some("AfterRestart")
    );
}

/// A delivery that arrives while a batch is already waiting for a lock held
/// elsewhere waits with it, and then no longer than its own busy timeout:
/// not a second full timeout after the first batch gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waits_for_a_lock_no_longer_than_the_busy_timeout() {
    let busy = Duration::from_millis(2000);
    let s = inproc::start(Settings {
        busy_timeout: busy,
        ..Settings::default()
    });
    let lock = warm_up_and_lock(&s).await;
    let timed = |d: Delivery| {
        let (addr, path) = (s.addr, s.path.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = request(addr, "POST", &path, &d.headers(), d.body.clone()).await;
            (r.status, sent.elapsed())
        })
    };
    let new_user = || a_new_user();
    let first = timed(new_user());
    tokio::time::sleep(busy / 4).await;
    let second = timed(new_user());
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(first.0, 503, "first delivery");
    assert_eq!(second.0, 503, "second delivery");
    // Its own budget ends 2 s after it was sent; a second full wait after
    // the first batch failed would end 3.5 s after.
    assert!(
        second.1 < busy + busy / 2,
        "the second delivery waited {:?} with a {busy:?} busy timeout",
        second.1
    );
}

/// Has the server write once (so the schema exists), then takes the write
/// lock on another connection, which is returned.
async fn warm_up_and_lock(s: &Endpoint) -> rusqlite::Connection {
    assert_status(
        &s.deliver(&delivery(fixture("clerk/user.created.json")))
            .await,
        200,
        "warm-up",
    );
    let lock = open_db(&s.db_path);
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    lock
}

#[tokio::test]
async fn locked_database_gives_503_then_the_retry_applies() {
    let s = Process::with(Options {
        busy_timeout_ms: Some(1000),
        ..Options::default()
    });
    let lock = warm_up_and_lock(&s).await;

    let uid = unique_user_id();
    let d = delivery(user_event("user.created", &user_data(&uid, T0, T0)));
    let t0 = Instant::now();
    let r = s.deliver(&d).await;
    let took = t0.elapsed();
    assert_status(&r, 503, "delivery while the database is write-locked");
    assert!(
        took < Duration::from_secs(15),
        "503 took {took:?}, past Svix's 15 s deadline"
    );
    r.assert_json_reason();
    let failed = |l: &str| {
        l.contains(&format!("svix_id={} ", d.id))
            && l.contains("WARN")
            && l.contains("outcome=\"failed\"")
    };
    let logs = s.logs_once(failed, Duration::from_secs(5));
    assert!(
        logs.lines().any(failed),
        "the 503 is logged as a failed delivery at warn: {logs}"
    );

    lock.execute_batch("ROLLBACK").expect("release the lock");
    drop(lock);

    let c = s.db();
    assert!(
        user_row(&c, &uid).is_none(),
        "half-written: user row exists after 503"
    );
    assert!(
        event_row(&c, &d.id).is_none(),
        "half-written: event recorded after 503"
    );

    // Svix retries: same svix-id, new timestamp and signature.
    let retry = d.resigned(SECRET);
    assert_status(
        &s.deliver(&retry).await,
        200,
        "retry after the lock is gone",
    );
    let c = s.db();
    assert!(user_row(&c, &uid).is_some(), "retry not applied");
    assert_eq!(event_count_for(&c, &d.id), 1);
    assert_status(&s.get("/healthz").await, 200, "healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_deliveries_all_land() {
    const N: usize = 300;
    const CONNS: usize = 50;
    let s = inproc::start_default();
    let deliveries: Arc<Vec<(String, Delivery)>> = Arc::new(
        (0..N)
            .map(|i| {
                let uid = unique_user_id();
                let mut data = user_data(&uid, T0 + i as i64, T0 + i as i64);
                data["first_name"] = json!(format!("User{i}"));
                let d = delivery(user_event("user.created", &data));
                (uid, d)
            })
            .collect(),
    );
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let only: Arc<Vec<Delivery>> = Arc::new(deliveries.iter().map(|(_, d)| d.clone()).collect());
    let tasks = send_concurrently(s.addr, &s.path, only, CONNS, statuses.clone());
    let all = async {
        for t in tasks {
            t.await.expect("task");
        }
    };
    tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .expect("300 deliveries did not finish within 90 s");

    let statuses = statuses.lock().unwrap();
    assert_eq!(statuses.len(), N);
    let bad: Vec<_> = statuses.iter().filter(|(_, st)| *st != Some(200)).collect();
    assert!(
        bad.is_empty(),
        "{} deliveries were not 200, e.g. {:?}",
        bad.len(),
        bad.first()
    );
    let c = s.db();
    assert_eq!(count(&c, "users"), N as i64);
    assert_eq!(count(&c, "webhook_events"), N as i64);
    for (i, (uid, _)) in deliveries.iter().enumerate().step_by(37) {
        assert_eq!(
            user_row(&c, uid).unwrap().first_name,
            Some(format!("User{i}"))
        );
    }
}

// ---------------------------------------------------------------------------
// Randomized: delivery order and duplicates must not change the result.
// ---------------------------------------------------------------------------

const FIRST: [&str; 6] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"];
const LAST: [&str; 4] = ["Lovelace", "Hopper", "Turing", "Liskov"];

struct Event {
    id: String,
    body: Vec<u8>,
}

/// What the in-order mirror should end with, per user.
struct Expect {
    uid: String,
    deleted_at: Option<i64>,
    email: Option<String>,
    first_name: Option<String>,
    external_id: Option<String>,
    updated_at: i64,
}

fn random_user(
    rng: &mut Rng,
    uid: &str,
    external: &Option<String>,
    created: i64,
    updated: i64,
) -> serde_json::Value {
    let mut d = user_data(uid, created, updated);
    d["first_name"] = json!(FIRST[rng.below(FIRST.len() as u64) as usize]);
    d["last_name"] = if rng.chance(20) {
        serde_json::Value::Null
    } else {
        json!(LAST[rng.below(LAST.len() as u64) as usize])
    };
    d["username"] = if rng.chance(30) {
        serde_json::Value::Null
    } else {
        json!(format!("u{}", rng.below(1000)))
    };
    d["image_url"] = json!(format!("https://img.clerk.com/{}", rng.below(1_000_000)));
    d["external_id"] = json!(external);
    let n = 1 + rng.below(3);
    let addrs: Vec<_> = (0..n)
        .map(|k| {
            json!({"id": format!("idn_{k}"), "object": "email_address",
                   "email_address": format!("{}.{}@example.org", k, rng.below(10_000)),
                   "verification": {"status": "verified", "strategy": "email_code"},
                   "linked_to": []})
        })
        .collect();
    d["email_addresses"] = json!(addrs);
    d["primary_email_address_id"] = match rng.below(5) {
        0 => serde_json::Value::Null,
        1 => json!("idn_gone"),
        _ => json!(format!("idn_{}", rng.below(n))),
    };
    d
}

fn primary_email(d: &serde_json::Value) -> Option<String> {
    let p = d["primary_email_address_id"].as_str()?;
    d["email_addresses"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == p)
        .and_then(|a| a["email_address"].as_str())
        .map(String::from)
}

/// Per user: created, 1..=4 updates with increasing updated_at, and maybe a
/// final delete after the last update (sometimes with a seconds timestamp).
fn histories(rng: &mut Rng, users: usize) -> (Vec<Vec<Event>>, Vec<Expect>) {
    let mut all = Vec::new();
    let mut expect = Vec::new();
    for _ in 0..users {
        let uid = unique_user_id();
        let new_external = |rng: &mut Rng| {
            rng.chance(50)
                .then(|| format!("ext-{}", rng.below(100_000)))
        };
        let mut external = new_external(rng);
        let created = T0 + rng.below(1_000_000_000) as i64;
        let mut updated = created;
        let mut evs = Vec::new();
        let mut last = random_user(rng, &uid, &external, created, updated);
        evs.push(Event {
            id: unique_msg_id(),
            body: user_event("user.created", &last),
        });
        for _ in 0..1 + rng.below(4) {
            updated += 1 + rng.below(10_000) as i64;
            // Sometimes set, changed or cleared: the newest version's value
            // is what the row must end with, tombstone or not.
            if rng.chance(30) {
                external = new_external(rng);
            }
            last = random_user(rng, &uid, &external, created, updated);
            evs.push(Event {
                id: unique_msg_id(),
                body: user_event("user.updated", &last),
            });
        }
        let deleted_at = if rng.chance(50) {
            let (envelope_ts, ms) = if rng.chance(30) {
                let secs = updated / 1000 + 1 + rng.below(10) as i64;
                (secs, secs * 1000)
            } else {
                let ms = updated + 1 + rng.below(10_000) as i64;
                (ms, ms)
            };
            evs.push(Event {
                id: unique_msg_id(),
                body: deleted_event(&uid, external.as_deref(), envelope_ts),
            });
            Some(ms)
        } else {
            None
        };
        expect.push(Expect {
            uid: uid.clone(),
            deleted_at,
            email: if deleted_at.is_some() {
                None
            } else {
                primary_email(&last)
            },
            first_name: if deleted_at.is_some() {
                None
            } else {
                last["first_name"].as_str().map(String::from)
            },
            external_id: external.clone(),
            updated_at: updated,
        });
        all.push(evs);
    }
    (all, expect)
}

async fn send(s: &Endpoint, e: &Event, what: &str) {
    let d = Delivery {
        id: e.id.clone(),
        ts: String::new(),
        body: e.body.clone(),
        sig: String::new(),
    }
    .resigned(SECRET);
    let r = s.deliver(&d).await;
    assert_status(&r, 200, what);
}

struct SeedRun {
    a: Vec<Vec<SqlValue>>,
    b: Vec<Vec<SqlValue>>,
}

async fn run_seed(seed: u64) -> SeedRun {
    println!("randomized mirror test: seed {seed}");
    let mut rng = Rng::new(seed);
    let (hist, expect) = histories(&mut rng, 8);

    let a = inproc::start_default();
    let b = inproc::start_default();

    // A: every event once, each user's history in order, users interleaved.
    let mut cursors = vec![0usize; hist.len()];
    let total: usize = hist.iter().map(Vec::len).sum();
    for _ in 0..total {
        let live: Vec<usize> = (0..hist.len())
            .filter(|&u| cursors[u] < hist[u].len())
            .collect();
        let u = live[rng.below(live.len() as u64) as usize];
        send(&a, &hist[u][cursors[u]], "in-order delivery").await;
        cursors[u] += 1;
    }

    // B: everything shuffled, with duplicates (same svix-id, re-signed).
    let mut order: Vec<&Event> = Vec::new();
    for e in hist.iter().flatten() {
        for _ in 0..1 + rng.below(3) {
            order.push(e);
        }
    }
    rng.shuffle(&mut order);
    for e in order {
        send(&b, e, "shuffled delivery").await;
    }

    // A matches the model.
    let ca = a.db();
    for x in &expect {
        let row = user_row(&ca, &x.uid).unwrap_or_else(|| panic!("seed {seed}: {} missing", x.uid));
        assert_eq!(
            row.deleted_at, x.deleted_at,
            "seed {seed}: deleted_at of {}",
            x.uid
        );
        assert_eq!(row.email, x.email, "seed {seed}: email of {}", x.uid);
        assert_eq!(
            row.first_name, x.first_name,
            "seed {seed}: first_name of {}",
            x.uid
        );
        assert_eq!(
            row.updated_at,
            Some(x.updated_at),
            "seed {seed}: updated_at of {}",
            x.uid
        );
        assert_eq!(
            row.external_id, x.external_id,
            "seed {seed}: external_id of {}",
            x.uid
        );
    }
    let ids: usize = hist.iter().map(Vec::len).sum();
    assert_eq!(count(&ca, "webhook_events"), ids as i64);
    assert_eq!(
        count(&b.db(), "webhook_events"),
        ids as i64,
        "seed {seed}: B events"
    );

    SeedRun {
        a: all_users(&ca),
        b: all_users(&b.db()),
    }
}

fn seeds() -> Vec<u64> {
    let mut s = vec![1, 42, 0x00C0_FFEE, 20_260_827];
    if let Some(extra) = std::env::var("IT_SEED").ok().and_then(|v| v.parse().ok()) {
        s.push(extra);
    }
    s
}

fn clerk_id(row: &[SqlValue]) -> String {
    match &row[0] {
        SqlValue::Text(t) => t.clone(),
        other => panic!("clerk_id is not text: {other:?}"),
    }
}

/// Every contract column of every row is equal between in-order and
/// shuffled delivery with duplicates, tombstones' external_id, created_at
/// and updated_at included: the final table must not depend on delivery
/// order at all.
#[tokio::test]
async fn randomized_order_gives_identical_tombstones_too() {
    for seed in seeds() {
        let run = run_seed(seed).await;
        assert_eq!(run.a.len(), run.b.len(), "seed {seed}: row counts differ");
        for (ra, rb) in run.a.iter().zip(&run.b) {
            let id = clerk_id(ra);
            for (i, col) in USER_COLUMNS.split(", ").enumerate() {
                assert_eq!(
                    ra[i], rb[i],
                    "seed {seed}: user {id} column {col}: in order {:?}, shuffled {:?}",
                    ra[i], rb[i]
                );
            }
        }
    }
}

/// Concurrent copies of one svix-id are applied once and all answered 200;
/// concurrent updates of one user end at the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_and_same_user_updates() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let original = delivery(user_event("user.created", &user_data(&uid, T0, T0)));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let d = original.resigned(SECRET);
        let (addr, path) = (s.addr, s.path.clone());
        tasks.push(tokio::spawn(async move {
            request(addr, "POST", &path, &d.headers(), d.body.clone()).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_status(&r, 200, "concurrent copy of one svix-id");
    }
    let c = s.db();
    assert_eq!(event_count_for(&c, &original.id), 1);
    assert_eq!(count(&c, "webhook_events"), 1);

    // 30 updates of one user, each a distinct event, all at once.
    let mut tasks = Vec::new();
    for k in 1..=30_i64 {
        let mut data = user_data(&uid, T0, T0 + k * 100);
        data["first_name"] = json!(format!("V{k}"));
        let d = delivery(user_event("user.updated", &data));
        let (addr, path) = (s.addr, s.path.clone());
        tasks.push(tokio::spawn(async move {
            request(addr, "POST", &path, &d.headers(), d.body.clone()).await
        }));
    }
    let all = async {
        for t in tasks {
            let r = t.await.unwrap();
            assert_status(&r, 200, "concurrent update");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("updates did not finish in 60 s");
    let row = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row.first_name.as_deref(), Some("V30"));
    assert_eq!(row.updated_at, Some(T0 + 3_000));
    assert_eq!(count(&s.db(), "webhook_events"), 31);
}

/// SIGKILL in the middle of a burst: every delivery answered 200 before the
/// kill is in the file afterwards, and a restart on that file works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_a_kill() {
    const N: usize = 400;
    const CONNS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut s = process_at(&db);
    let deliveries: Arc<Vec<Delivery>> = Arc::new(
        (0..N)
            .map(|i| {
                let uid = unique_user_id();
                delivery(user_event(
                    "user.created",
                    &user_data(&uid, T0 + i as i64, T0 + i as i64),
                ))
            })
            .collect(),
    );
    let results = Arc::new(Mutex::new(Vec::new()));
    let tasks = send_concurrently(s.addr, &s.path, deliveries.clone(), CONNS, results.clone());
    let acked = || -> Vec<String> {
        let results = results.lock().unwrap();
        results
            .iter()
            .filter(|(_, st)| *st == Some(200))
            .map(|(i, _)| deliveries[*i].id.clone())
            .collect()
    };
    // Kill once some, but not all, deliveries are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked().len() < N / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let status = s.signal_and_wait("-KILL");
    assert!(!status.success(), "SIGKILL must not look like a clean exit");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("senders stop")
            .expect("task");
    }
    let acked = acked();
    assert!(acked.len() >= N / 4, "only {} acknowledged", acked.len());

    let c = open_db(&db);
    for id in &acked {
        assert_eq!(event_count_for(&c, id), 1, "acknowledged {id} was lost");
    }
    drop(c);
    let again = server_at(&db);
    let retry = deliveries[0].resigned(SECRET);
    assert_status(&again.deliver(&retry).await, 200, "retry after the crash");
    assert_eq!(event_count_for(&again.db(), &deliveries[0].id), 1);
}

/// A small tmpfs mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root, no mount namespace).
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Gives the file system `size` in all, as an operator growing a
    /// volume would.
    fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot grow the tmpfs to {size}");
    }

    /// Writes zeros until the disk is full; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// The disk fills up: the delivery gets 503 in time and leaves nothing
/// behind; health still answers; once there is room, Svix's retry applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_gives_503_then_the_retry_applies() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let db = disk.path().join("full.db");
    let s = server_at(&db);
    let first = a_new_user();
    assert_status(&s.deliver(&first).await, 200, "before the disk is full");

    let filler = disk.fill();
    // A large user object, so the write needs pages the disk no longer has.
    let uid = unique_user_id();
    let mut data = user_data(&uid, T0, T0);
    data["public_metadata"] = json!({ "notes": "x".repeat(600_000) });
    let big = delivery(user_event("user.created", &data));
    let started = Instant::now();
    let r = s.deliver(&big).await;
    assert_status(&r, 503, "delivery on a full disk");
    assert!(started.elapsed() < Duration::from_secs(15));
    r.assert_json_reason();
    assert_status(&s.get("/healthz").await, 200, "reads still work");
    {
        let c = s.db();
        assert!(user_row(&c, &uid).is_none(), "half-written user after 503");
        assert_eq!(event_count_for(&c, &big.id), 0, "event recorded after 503");
    }

    std::fs::remove_file(filler).unwrap();
    assert_status(
        &s.deliver(&big.resigned(SECRET)).await,
        200,
        "retry once there is room",
    );
    let c = s.db();
    assert_eq!(count(&c, "webhook_events"), 2);
    assert_eq!(event_count_for(&c, &big.id), 1);
    assert!(user_row(&c, &uid).is_some());
    drop(c);
    drop(s);
    drop(disk);
}

/// About 2.5 KB of `user.created`, as the full-disk tests send.
fn a_user_of_2500_bytes() -> Delivery {
    let mut data = user_data(&unique_user_id(), T0, T0);
    data["public_metadata"] = json!({ "notes": "" });
    let base = user_event("user.created", &data).len();
    data["public_metadata"] = json!({ "notes": "n".repeat(2500usize.saturating_sub(base)) });
    delivery(user_event("user.created", &data))
}

/// Sends `deliveries` over 16 connections; the indexes answered 200 and
/// those refused, each in order. Every one must get an answer.
async fn send_over_16(s: &Endpoint, deliveries: &[Delivery]) -> (Vec<usize>, Vec<usize>) {
    let answers: Answers = Arc::new(Mutex::new(Vec::new()));
    let tasks = send_concurrently(
        s.addr,
        &s.path,
        Arc::new(deliveries.to_vec()),
        16,
        answers.clone(),
    );
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("deliveries answered within 60 s")
            .unwrap();
    }
    let mut answers = answers.lock().unwrap().clone();
    answers.sort_unstable();
    assert_eq!(answers.len(), deliveries.len(), "every delivery answered");
    let (landed, refused): (Vec<_>, Vec<_>) = answers.iter().partition(|(_, st)| *st == Some(200));
    for (i, st) in &refused {
        assert_eq!(*st, Some(503), "delivery {i} on a full disk");
    }
    (
        landed.into_iter().map(|(i, _)| i).collect(),
        refused.into_iter().map(|(i, _)| i).collect(),
    )
}

/// After a full disk, the room an operator frees goes to the database file,
/// not to the write-ahead log: before taking more deliveries the writer
/// copies the log into the file and empties it, and refuses them while it
/// cannot. So on a file system grown from 2 to 8 MiB (the data takes about
/// 3 MB) every refused delivery lands when Svix retries it, without a
/// restart, and so do the deliveries after; the log stays short. The failed
/// background checkpoint is logged at warn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_freed_after_a_full_disk_goes_to_the_database() {
    let Some(disk) = SmallDisk::mount("2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let db = disk.path().join("tight.db");
    let mut s = process_at(&db);
    let first: Vec<Delivery> = (0..600).map(|_| a_user_of_2500_bytes()).collect();
    let (landed, refused) = send_over_16(&s, &first).await;
    assert!(!landed.is_empty(), "nothing fitted on 2 MiB");
    assert!(!refused.is_empty(), "2 MiB did not fill up");
    let logs = s.logs_once(
        |l| l.contains("WARN") && l.contains("background checkpoint failed"),
        Duration::from_secs(5),
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("background checkpoint failed")),
        "no warning for the failed checkpoint:\n{logs}"
    );

    disk.grow("8m");
    let retries: Vec<Delivery> = refused.iter().map(|&i| first[i].resigned(SECRET)).collect();
    let (_, refused_again) = send_over_16(&s, &retries).await;
    assert!(
        refused_again.is_empty(),
        "{} of {} retries refused after the disk grew",
        refused_again.len(),
        retries.len()
    );
    let later: Vec<Delivery> = (0..600).map(|_| a_user_of_2500_bytes()).collect();
    let (_, refused_later) = send_over_16(&s, &later).await;
    assert!(
        refused_later.is_empty(),
        "{} of 600 later deliveries refused",
        refused_later.len()
    );
    let wal = std::fs::metadata(disk.path().join("tight.db-wal")).map_or(0, |m| m.len());
    assert!(wal < 1 << 20, "the log is {wal} bytes");
    let logs = s.logs();
    assert!(logs.contains("room on the disk again"), "{logs}");
    assert!(s.stop().success());
    let c = open_db(&db);
    assert_eq!(count(&c, "webhook_events"), 1200);
    assert_eq!(count(&c, "users"), 1200);
    drop(c);
    drop(disk);
}

/// A file that is not a clerk-sync database is refused at start, with one
/// line saying so, and is left as it was.
#[test]
fn refuses_a_file_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
    let newer = dir.path().join("newer.db");
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
    }
    for (path, says) in [
        (&garbage, "not a usable SQLite database"),
        (&newer, "newer"),
    ] {
        let out = run_to_end(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
                path.to_str().unwrap(),
            ],
            &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)],
        );
        assert!(!out.status.success(), "{}", out.stderr);
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line: {}", out.stderr);
        assert!(lines[0].contains(says), "{}", out.stderr);
    }
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x42u8; 8192]);
}

/// The same move while another connection reads the file in a transaction:
/// the commits newer than its snapshot cannot be copied into the moved file
/// on the way out and stay in the log at the old path. The server says so,
/// will not start on that path (SQLite would delete the log), and the log
/// moved beside the database brings every acknowledged delivery back.
#[tokio::test]
async fn a_move_under_a_reader_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut s = process_at(&db);
    let deliver_new = |what: &'static str| {
        let d = a_new_user();
        (d, what)
    };
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let (d, what) = deliver_new("before the reader");
        assert_status(&s.deliver(&d).await, 200, what);
        acknowledged.push(d.id);
    }
    let reader = open_db(&db);
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM users;")
        .unwrap();
    for _ in 0..3 {
        let (d, what) = deliver_new("while the reader holds its snapshot");
        assert_status(&s.deliver(&d).await, 200, what);
        acknowledged.push(d.id);
    }
    let moved = dir.path().join("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    let (d, what) = deliver_new("once the file is gone");
    assert_status(&s.deliver(&d).await, 503, what);
    assert_eq!(s.stop().code(), Some(0));
    let logs = s.logs();
    assert!(
        logs.contains("only in the write-ahead log") && logs.contains("moved.db"),
        "the stop does not say where the commits are:\n{logs}"
    );
    drop(reader);

    let refused = run_to_end(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
        &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)],
    );
    assert!(!refused.status.success(), "started beside an orphaned log");
    assert!(
        refused.stderr.contains("mirror.db-wal"),
        "{}",
        refused.stderr
    );

    std::fs::rename(
        dir.path().join("mirror.db-wal"),
        dir.path().join("moved.db-wal"),
    )
    .unwrap();
    let kept = open_db(&moved);
    for id in &acknowledged {
        assert_eq!(
            event_count_for(&kept, id),
            1,
            "{id} was acknowledged and lost"
        );
    }
}

/// SQLite keeps writing to the file it opened even after its path names
/// another file or none. Moved away or replaced under a running server, the
/// database is then out of reach: health and deliveries answer 503 (Svix
/// retries) until a restart opens the file the path names, where the retry
/// lands.
#[tokio::test]
async fn a_database_file_moved_away_or_replaced_is_refused_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut s = server_at(&db);
    let first = a_new_user();
    assert_status(&s.deliver(&first).await, 200, "before the file moves");
    assert_status(&s.get("/healthz").await, 200, "before the file moves");

    let moved = dir.path().join("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    let health = s.get("/healthz").await;
    assert_status(&health, 503, "health once the file is gone");
    health.assert_json_reason();
    assert!(health.text().contains("removed"), "{}", health.text());
    let second = a_new_user();
    let r = s.deliver(&second).await;
    assert_status(&r, 503, "delivery once the file is gone");
    r.assert_json_reason();

    // A restore: a complete database made elsewhere, renamed onto the path.
    let elsewhere = tempfile::tempdir().unwrap();
    let restored = elsewhere.path().join("restored.db");
    rusqlite::Connection::open(&restored)
        .unwrap()
        .execute_batch("CREATE TABLE from_backup (x)")
        .unwrap();
    std::fs::rename(&restored, &db).unwrap();
    let health = s.get("/healthz").await;
    assert_status(&health, 503, "health once the file is replaced");
    assert!(health.text().contains("replaced"), "{}", health.text());
    let second = second.resigned(SECRET);
    assert_status(
        &s.deliver(&second).await,
        503,
        "delivery once the file is replaced",
    );
    assert_eq!(s.stop(), Ok(()));

    // The file the server had open kept what it acknowledged.
    let old = open_db(&moved);
    assert_eq!(event_count_for(&old, &first.id), 1);
    drop(old);

    let s = server_at(&db);
    assert_status(&s.get("/healthz").await, 200, "after the restart");
    assert_status(
        &s.deliver(&second.resigned(SECRET)).await,
        200,
        "the retry after the restart",
    );
    let c = s.db();
    assert_eq!(event_count_for(&c, &second.id), 1);
    assert_eq!(event_count_for(&c, &first.id), 0);
    assert_eq!(
        count(&c, "from_backup"),
        0,
        "the restored file is the one in use"
    );
}

/// A database whose `-shm` (or `-wal`, or the file itself) the server's user
/// cannot write, as one left by a command run as another user, stops the
/// start with a message naming it, rather than a server that answers
/// `/healthz` and fails every delivery.
#[test]
fn refuses_to_start_beside_a_file_it_cannot_write() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut s = server_at(&db);
    assert_eq!(s.stop(), Ok(()));
    let shm = dir.path().join("mirror.db-shm");
    std::fs::write(&shm, b"").unwrap();
    let db_arg = db.to_str().unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0", "--db", db_arg];
    // Permissions bind only an ordinary user: as root, run the server as
    // nobody, with the database its own and the -shm root's.
    let cmd = if is_root() {
        let mode = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(dir.path(), mode).unwrap();
        std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        let Some(mut cmd) = as_nobody(&args, dir.path()) else {
            eprintln!("skipped: running as root without setpriv");
            return;
        };
        cmd.env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET);
        cmd
    } else {
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o444)).unwrap();
        let mut cmd = base_command(dir.path());
        cmd.args(args).env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET);
        cmd
    };
    let f = finish(cmd, &args);
    assert!(!f.status.success(), "started: {}", f.stderr);
    assert!(
        f.stderr.contains("cannot write") && f.stderr.contains("mirror.db-shm"),
        "{}",
        f.stderr
    );
}

/// After a crash the log and its `-shm` stay beside the database; without
/// the `-shm`, in a directory where it cannot be made, `status` says so
/// rather than calling the file foreign.
#[test]
fn status_says_why_a_crashed_database_cannot_be_read_in_a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut s = process_at(&db);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = a_new_user();
    assert_status(&rt.block_on(s.deliver(&d)), 200, "a delivery");
    s.signal_and_wait("-KILL");
    std::fs::remove_file(dir.path().join("mirror.db-shm")).unwrap();
    assert!(dir.path().join("mirror.db-wal").exists());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let db_arg = db.to_str().unwrap();
    let args = ["status", "--db", db_arg];
    // As root, run it as nobody, for whom the directory is read-only.
    let cmd = if is_root() {
        let Some(cmd) = as_nobody(&args, std::path::Path::new("/")) else {
            eprintln!("skipped: running as root without setpriv");
            return;
        };
        cmd
    } else {
        let mut cmd = base_command(std::path::Path::new("/"));
        cmd.args(args);
        cmd
    };
    let f = finish(cmd, &args);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    assert!(
        f.stderr.contains("needs a -shm file") && !f.stderr.contains("not a clerk-sync"),
        "{}",
        f.stderr
    );
}

/// `clerk-sync ARGS` run as nobody (uid 65534), for whom file permissions
/// bind as they do for a service's user; `None` without `setpriv`.
fn as_nobody(args: &[&str], cwd: &std::path::Path) -> Option<std::process::Command> {
    let mut cmd = std::process::Command::new(which("setpriv")?);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .current_dir(cwd);
    Some(cmd)
}

/// A `-wal` removed under the running server (a clean-up run by hand) would
/// leave every later commit in a file only the process holds: a crash then
/// loses what was acknowledged. Health and deliveries answer 503 instead,
/// and a stop with SIGTERM copies the log's commits into the database, so
/// after a restart nothing acknowledged is missing and retries land.
#[tokio::test]
async fn a_removed_write_ahead_log_is_refused_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let mut s = server_at(&db);
    let first = a_new_user();
    assert_status(&s.deliver(&first).await, 200, "before the log is removed");

    std::fs::remove_file(dir.path().join("mirror.db-wal")).unwrap();
    let health = s.get("/healthz").await;
    assert_status(&health, 503, "health once the log is gone");
    assert!(
        health.text().contains("write-ahead log"),
        "{}",
        health.text()
    );
    let second = a_new_user();
    let r = s.deliver(&second).await;
    assert_status(&r, 503, "delivery once the log is gone");
    assert_eq!(s.stop(), Ok(()));

    let s = server_at(&db);
    assert_status(&s.get("/healthz").await, 200, "after the restart");
    let c = s.db();
    assert_eq!(event_count_for(&c, &first.id), 1, "acknowledged, so kept");
    assert_status(
        &s.deliver(&second.resigned(SECRET)).await,
        200,
        "the retry after the restart",
    );
    assert_eq!(event_count_for(&s.db(), &second.id), 1);
}

/// Through a symbolic link, SQLite keeps the log beside the file the link
/// leads to; that is the log whose removal is noticed.
#[tokio::test]
async fn a_removed_log_is_noticed_through_a_symbolic_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let real = dir.path().join("real").join("mirror.db");
    let mut s = server_at(&real);
    assert_eq!(s.stop(), Ok(()));
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut s = server_at(&link);
    assert_status(&s.deliver(&a_new_user()).await, 200, "through the link");
    // status reads through the link too, the log included.
    let f = run_to_end(&["status", "--db", link.to_str().unwrap()], &[]);
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stdout.contains("users           1 "), "{}", f.stdout);
    std::fs::remove_file(dir.path().join("real").join("mirror.db-wal")).unwrap();
    assert_status(
        &s.deliver(&a_new_user()).await,
        503,
        "once the real log is gone",
    );
    assert_status(
        &s.get("/healthz").await,
        503,
        "health once the real log is gone",
    );
    assert_eq!(s.stop(), Ok(()));
}

/// A link to a database that is gone, beside whose target a log with
/// acknowledged commits is left (a crash, then the file removed): the start
/// is refused as it is on the target's own path, rather than SQLite
/// deleting that log when it makes a new database there.
#[tokio::test]
async fn a_link_to_a_removed_database_does_not_hide_its_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::create_dir(dir.path().join("l")).unwrap();
    let real = dir.path().join("real").join("x.db");
    let mut s = process_at(&real);
    let d = a_new_user();
    assert_status(&s.deliver(&d).await, 200, "before the crash");
    s.signal_and_wait("-KILL");
    std::fs::remove_file(&real).unwrap();
    let wal = dir.path().join("real").join("x.db-wal");
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    let link = dir.path().join("l").join("x.db");
    std::os::unix::fs::symlink("../real/x.db", &link).unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        link.to_str().unwrap(),
    ];
    let f = run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)]);
    assert!(!f.status.success(), "started: {}", f.stderr);
    assert!(f.stderr.contains("x.db-wal"), "{}", f.stderr);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        wal_len,
        "the log is kept"
    );
}
