//! Running it as a service: systemd notifications, credentials, JSON logs,
//! metrics, and the `send`, `sign`, `verify` and `status` subcommands. The
//! subcommands are the real binary; the servers they talk to or leave a
//! database behind are in-process unless the server's own process matters.

use std::io::Read as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::inproc::{self, Settings};
use crate::support::process::{base_command, run_to_end, wait_bounded, Finished, Options, Process};
use crate::support::*;

fn run_with_secret(args: &[&str]) -> Finished {
    run_to_end(args, &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)])
}

fn url(s: &Endpoint) -> String {
    format!("http://{}{}", s.addr, s.path)
}

/// Reads datagrams until `until` matches one or the time runs out.
fn collect(
    socket: &UnixDatagram,
    into: &mut Vec<String>,
    until: impl Fn(&str) -> bool,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = until(&msg);
            into.push(msg);
            if done {
                return;
            }
        }
    }
}

/// Collects until a message containing `wanted` arrives, and fails the test
/// if none does within `limit`.
fn expect_message(socket: &UnixDatagram, into: &mut Vec<String>, wanted: &str, limit: Duration) {
    collect(socket, into, |m| m.contains(wanted), limit);
    assert!(
        into.iter().any(|m| m.contains(wanted)),
        "no {wanted} within {limit:?}: {into:?}"
    );
}

/// A server started with `NOTIFY_SOCKET` pointing at a datagram socket this
/// test owns, plus `env`.
fn notified_server(env: &[(&str, &str)]) -> (tempfile::TempDir, UnixDatagram, Process) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut extra_env = vec![("NOTIFY_SOCKET".to_owned(), path.display().to_string())];
    extra_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let s = Process::with(Options {
        extra_env,
        ..Options::default()
    });
    (dir, socket, s)
}

/// READY=1 comes once the port answers, WATCHDOG=1 at half of WATCHDOG_USEC,
/// STOPPING=1 on SIGTERM, and the process then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_stopping_in_order() {
    let (_dir, socket, mut s) = notified_server(&[("WATCHDOG_USEC", "200000")]);
    let mut messages = Vec::new();
    expect_message(&socket, &mut messages, "READY=1", Duration::from_secs(5));
    // Ready means ready: the listener answers.
    assert_status(
        &s.get("/healthz").await,
        200,
        "healthz once READY=1 was sent",
    );

    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pings < 2 && Instant::now() < deadline {
        collect(
            &socket,
            &mut messages,
            |m| m.contains("WATCHDOG=1"),
            Duration::from_secs(1),
        );
        pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    }
    assert!(
        pings >= 2,
        "expected watchdog pings every ~100 ms: {messages:?}"
    );

    s.send_signal("-TERM");
    expect_message(&socket, &mut messages, "STOPPING=1", Duration::from_secs(5));
    assert!(s.wait_exit().success(), "exit after SIGTERM: {}", s.logs());

    let ready = messages.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_ping = messages
        .iter()
        .position(|m| m.contains("WATCHDOG=1"))
        .unwrap();
    let stopping = messages
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .unwrap();
    assert!(
        ready < first_ping && first_ping < stopping,
        "order: {messages:?}"
    );
    assert_eq!(messages.iter().filter(|m| m.contains("READY=1")).count(), 1);
}

/// The watchdog is fed only while `/healthz` would answer 200: once the
/// database file is moved away the pings stop, so systemd restarts the
/// service onto the file its path names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_once_the_database_file_is_moved_away() {
    let (_dir, socket, mut s) = notified_server(&[("WATCHDOG_USEC", "200000")]);
    let mut before = Vec::new();
    // Pinged while healthy.
    expect_message(&socket, &mut before, "WATCHDOG=1", Duration::from_secs(5));

    std::fs::rename(&s.db_path, s.db_path.with_extension("moved")).unwrap();
    assert_status(&s.get("/healthz").await, 503, "health once the file moved");
    // A ping already on its way may still arrive; after that, none.
    collect(&socket, &mut Vec::new(), |_| false, Duration::from_secs(1));
    let mut after = Vec::new();
    collect(&socket, &mut after, |_| false, Duration::from_millis(800));
    assert!(
        !after.iter().any(|m| m.contains("WATCHDOG=1")),
        "pings after the file moved (every ~100 ms before): {after:?}"
    );
    assert!(s.stop().success(), "{}", s.logs());
}

/// A watchdog interval too short to halve into whole microseconds still
/// gets pings, rather than a timer that refuses a zero period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_watchdog_interval_still_gets_pings() {
    let (_dir, socket, mut s) = notified_server(&[("WATCHDOG_USEC", "1")]);
    let mut messages = Vec::new();
    expect_message(&socket, &mut messages, "WATCHDOG=1", Duration::from_secs(5));
    assert!(s.stop().success(), "{}", s.logs());
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
}

/// Without WATCHDOG_USEC there are no pings; a watchdog meant for another
/// process (WATCHDOG_PID) is ignored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watchdog_pings_unless_asked_for_this_process() {
    let (_dir, socket, mut s) =
        notified_server(&[("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")]);
    let mut messages = Vec::new();
    collect(
        &socket,
        &mut messages,
        |_| false,
        Duration::from_millis(800),
    );
    assert!(s.stop().success());
    assert!(
        messages.iter().any(|m| m.contains("READY=1")),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("WATCHDOG=1")),
        "{messages:?}"
    );
}

/// systemd's LoadCredential= hands the secret over as a file in
/// $CREDENTIALS_DIRECTORY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_from_systemd_credentials_directory() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("clerk-webhook-secret"),
        format!("{SECRET_B}\n"),
    )
    .unwrap();
    let s = Process::with(Options {
        secret_env: None,
        extra_env: vec![(
            "CREDENTIALS_DIRECTORY".into(),
            creds.path().display().to_string(),
        )],
        ..Options::default()
    });
    let uid = unique_user_id();
    let body = user_event(
        "user.created",
        &user_data(&uid, 1_700_000_000_000, 1_700_000_000_000),
    );
    assert_status(
        &s.deliver(&Delivery::with_secret(SECRET_B, body.clone()))
            .await,
        200,
        "credential secret",
    );
    assert_status(
        &s.deliver(&Delivery::with_secret(SECRET, body)).await,
        401,
        "other secret",
    );
}

/// --log-format json: every line is a JSON object; deliveries carry their
/// id, type and outcome; no email address or name is logged at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_line_per_delivery_without_personal_data() {
    let mut s = Process::with(Options {
        extra_env: vec![("CLERK_SYNC_LOG_FORMAT".into(), "json".into())],
        ..Options::default()
    });
    let uid = unique_user_id();
    let mut data = user_data(&uid, 1_700_000_000_000, 1_700_000_000_000);
    data["first_name"] = "Zebulon".into();
    data["last_name"] = "Quixote".into();
    data["email_addresses"][0]["email_address"] = "private.person@example.net".into();
    let created = delivery(user_event("user.created", &data));
    assert_status(&s.deliver(&created).await, 200, "create");
    assert_status(
        &s.deliver(&created.resigned(SECRET)).await,
        200,
        "duplicate",
    );
    let mut bad = delivery(user_event("user.updated", &data));
    bad.sig = sign(OTHER_SECRET, &bad.id, &bad.ts, &bad.body);
    assert_status(&s.deliver(&bad).await, 401, "bad signature");
    let mut bad_time = delivery(user_event("user.updated", &data));
    bad_time.ts = "12x".into();
    assert_status(&s.deliver(&bad_time).await, 400, "malformed timestamp");
    assert!(s.stop().success());

    let logs = s.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let deliveries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "delivery")
        .collect();
    let outcomes: Vec<&str> = deliveries
        .iter()
        .map(|l| l["fields"]["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        outcomes,
        ["applied", "duplicate", "rejected", "rejected"],
        "{logs}"
    );
    assert_eq!(deliveries[0]["fields"]["svix_id"], created.id.as_str());
    assert_eq!(deliveries[0]["fields"]["type"], "user.created");
    assert_eq!(deliveries[2]["fields"]["reason"], "bad_signature");
    assert_eq!(deliveries[2]["fields"]["svix_id"], bad.id.as_str());
    // A well-formed id is named even when another header is not.
    assert_eq!(deliveries[3]["fields"]["reason"], "malformed_headers");
    assert_eq!(deliveries[3]["fields"]["svix_id"], bad_time.id.as_str());
    assert!(deliveries
        .iter()
        .all(|l| l["fields"]["latency_ms"].is_number()));
    for secret_word in ["private.person", "Zebulon", "Quixote", SECRET, &bad.sig] {
        assert!(
            !logs.contains(secret_word),
            "{secret_word} leaked into logs"
        );
    }
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_deliveries_rejections_and_the_mirror() {
    let s = inproc::start_default();
    let empty = s.get("/metrics").await;
    assert_status(&empty, 200, "metrics");
    assert_eq!(
        metric(&empty.text(), "clerk_sync_seconds_since_last_applied"),
        Some(-1.0)
    );

    let (a, b) = (unique_user_id(), unique_user_id());
    let t = now_ms();
    let create_a = delivery(user_event("user.created", &user_data(&a, t, t)));
    assert_status(&s.deliver(&create_a).await, 200, "a");
    assert_status(&s.deliver(&create_a.resigned(SECRET)).await, 200, "a again");
    assert_status(
        &s.deliver(&delivery(user_event("user.created", &user_data(&b, t, t))))
            .await,
        200,
        "b",
    );
    assert_status(
        &s.deliver(&delivery(deleted_event(&b, None, t + 1))).await,
        200,
        "delete b",
    );
    let stale = delivery(user_event("user.updated", &user_data(&a, t, t - 5)));
    assert_status(&s.deliver(&stale).await, 200, "stale");
    assert_status(
        &s.deliver(&delivery(fixture("clerk/session.created.json")))
            .await,
        200,
        "session",
    );
    let mut forged = delivery(user_event("user.updated", &user_data(&a, t, t + 9)));
    forged.sig = sign(OTHER_SECRET, &forged.id, &forged.ts, &forged.body);
    assert_status(&s.deliver(&forged).await, 401, "forged");
    let mut old = delivery(user_event("user.updated", &user_data(&a, t, t + 9)));
    old.ts = (now_secs() - 3600).to_string();
    old.sig = sign(SECRET, &old.id, &old.ts, &old.body);
    assert_status(&s.deliver(&old).await, 401, "old");
    let mut early = old.clone();
    early.ts = (now_secs() + 3600).to_string();
    early.sig = sign(SECRET, &early.id, &early.ts, &early.body);
    assert_status(&s.deliver(&early).await, 401, "from the future");
    assert_status(&s.post(&s.path, &hdrs(&[]), b"{}").await, 400, "no headers");

    let m = s.get("/metrics").await;
    assert_status(&m, 200, "metrics");
    let text = m.text();
    let want = [
        (
            "clerk_sync_deliveries_total{type=\"user.created\",outcome=\"applied\"}",
            2.0,
        ),
        (
            "clerk_sync_deliveries_total{type=\"user.created\",outcome=\"duplicate\"}",
            1.0,
        ),
        (
            "clerk_sync_deliveries_total{type=\"user.deleted\",outcome=\"applied\"}",
            1.0,
        ),
        (
            "clerk_sync_deliveries_total{type=\"user.updated\",outcome=\"stale\"}",
            1.0,
        ),
        (
            "clerk_sync_deliveries_total{type=\"session.created\",outcome=\"ignored\"}",
            1.0,
        ),
        ("clerk_sync_rejections_total{reason=\"bad_signature\"}", 1.0),
        ("clerk_sync_rejections_total{reason=\"too_old\"}", 1.0),
        ("clerk_sync_rejections_total{reason=\"too_new\"}", 1.0),
        (
            "clerk_sync_rejections_total{reason=\"malformed_headers\"}",
            1.0,
        ),
        ("clerk_sync_request_duration_seconds_count", 10.0),
        ("clerk_sync_users", 1.0),
        ("clerk_sync_tombstones", 1.0),
    ];
    for (name, value) in want {
        assert_eq!(metric(&text, name), Some(value), "{name} in:\n{text}");
    }
    // Six deliveries were accepted, one after another: each had a commit of
    // its own or shared one, and every one of them was counted once.
    assert_eq!(
        metric(&text, "clerk_sync_commit_deliveries_sum"),
        Some(6.0),
        "{text}"
    );
    let commits = metric(&text, "clerk_sync_commit_deliveries_count").unwrap();
    assert!((1.0..=6.0).contains(&commits), "{commits} commits");
    let since = metric(&text, "clerk_sync_seconds_since_last_applied").unwrap();
    assert!((0.0..60.0).contains(&since), "{since}");
    assert!(metric(&text, "clerk_sync_database_bytes").unwrap() > 4096.0);
    assert_status(
        &s.post("/metrics", &hdrs(&[]), b"").await,
        405,
        "POST /metrics",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_builtin_events_end_to_end() {
    let s = inproc::start_default();
    let u = url(&s);
    let out = run_with_secret(&[
        "send",
        "user.created",
        "--url",
        &u,
        "--user-id",
        "user_sendtest",
        "--email",
        "first@example.com",
    ]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("200"), "{}", out.stdout);
    let row = user_row(&s.db(), "user_sendtest").expect("row written");
    assert_eq!(row.email.as_deref(), Some("first@example.com"));

    // updated_at comes from the clock; make sure the next one is newer.
    std::thread::sleep(Duration::from_millis(5));
    let out = run_with_secret(&[
        "send",
        "user.updated",
        "--url",
        &u,
        "--user-id",
        "user_sendtest",
        "--email",
        "second@example.com",
    ]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert_eq!(
        user_row(&s.db(), "user_sendtest").unwrap().email.as_deref(),
        Some("second@example.com")
    );

    let out = run_with_secret(&[
        "send",
        "user.deleted",
        "--url",
        &u,
        "--user-id",
        "user_sendtest",
    ]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let row = user_row(&s.db(), "user_sendtest").unwrap();
    assert!(row.deleted_at.is_some() && row.email.is_none());

    // Without --user-id a fresh user is made each time.
    assert!(run_with_secret(&["send", "user.created", "--url", &u])
        .status
        .success());
    assert_eq!(count(&s.db(), "users"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_a_file_and_report_failures() {
    let s = inproc::start_default();
    let u = url(&s);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clerk/user.created.json");
    let file = file.to_str().unwrap();
    let out = run_with_secret(&["send", file, "--url", &u]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    // The file's bytes were sent as they are: `data` is stored byte for byte.
    let row = user_row(&s.db(), "user_29w83sxmDNGwOuEthce5gg56FcC").expect("fixture user");
    let fixture_text = String::from_utf8(fixture("clerk/user.created.json")).unwrap();
    assert!(fixture_text.contains(row.data.as_deref().unwrap()));

    let wrong = run_to_end(
        &["send", file, "--url", &u],
        &[("CLERK_WEBHOOK_SIGNING_SECRET", OTHER_SECRET)],
    );
    assert!(!wrong.status.success());
    assert!(wrong.stdout.starts_with("401"), "{}", wrong.stdout);

    let not_found = run_with_secret(&[
        "send",
        "user.created",
        "--url",
        &format!("http://{}/nope", s.addr),
    ]);
    assert!(!not_found.status.success());
    assert!(not_found.stdout.starts_with("404"), "{}", not_found.stdout);

    let missing = run_with_secret(&["send", "no-such-file.json", "--url", &u]);
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("no-such-file.json"),
        "{}",
        missing.stderr
    );

    // The built-in events' flags do not silently drop off a file.
    for flag in ["--user-id", "--email"] {
        let out = run_with_secret(&["send", file, "--url", &u, flag, "x"]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", out.stderr);
        assert!(
            out.stderr.contains("apply to the built-in events only"),
            "{flag}: {}",
            out.stderr
        );
    }

    let unreachable = run_with_secret(&[
        "send",
        "user.created",
        "--url",
        "http://127.0.0.1:1/api/clerk-webhook",
    ]);
    assert!(!unreachable.status.success());
    assert!(
        unreachable.stderr.contains("connect"),
        "{}",
        unreachable.stderr
    );
}

fn parse_sign_output(stdout: &str) -> (String, String, String, String) {
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    let curl = stdout
        .lines()
        .find(|l| l.starts_with("curl "))
        .expect("a curl line")
        .to_owned();
    (
        field("svix-id"),
        field("svix-timestamp"),
        field("svix-signature"),
        curl,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_prints_headers_the_server_accepts() {
    let s = inproc::start_default();
    let body = user_event(
        "user.created",
        &user_data(&unique_user_id(), 1_700_000_000_000, 1_700_000_000_000),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();
    let out = run_with_secret(&["sign", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
    let (id, ts, sig, curl) = parse_sign_output(&out.stdout);
    assert!(id.starts_with("msg_"));
    assert!((now_secs() - ts.parse::<i64>().unwrap()).abs() < 60);
    assert_eq!(
        sig,
        sign(SECRET, &id, &ts, &body),
        "independent signer agrees"
    );
    assert!(
        curl.contains(&format!("svix-signature: {sig}")) && curl.contains("--data-binary @"),
        "{curl}"
    );
    let d = Delivery { id, ts, body, sig };
    assert_status(&s.deliver(&d).await, 200, "signed by `sign`");

    // Fixed id and timestamp give the published vector's signature.
    let vectors = fixture_json("standard-webhooks-vectors.json");
    let v = &vectors["valid_hmac"][0];
    let payload = dir.path().join("vector.json");
    std::fs::write(&payload, v["payload"].as_str().unwrap()).unwrap();
    let out = run_to_end(
        &[
            "sign",
            payload.to_str().unwrap(),
            "--id",
            v["msg_id"].as_str().unwrap(),
            "--timestamp",
            v["timestamp"].as_str().unwrap(),
        ],
        &[(
            "CLERK_WEBHOOK_SIGNING_SECRET",
            v["secret"].as_str().unwrap(),
        )],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        parse_sign_output(&out.stdout).2,
        v["expected_signature"].as_str().unwrap()
    );
    assert!(!out.stdout.contains(v["secret"].as_str().unwrap()));
}

/// The curl line of `sign` names the file by its absolute path, so it runs
/// from any directory, and a file named `-` is not curl's stdin; every
/// value in it stays one shell word.
#[test]
fn sign_curl_line_works_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("the bodies");
    std::fs::create_dir(&sub).unwrap();
    for name in ["-", "it's $HOME.json"] {
        std::fs::write(sub.join(name), b"{}").unwrap();
        let out = base_command(&sub)
            .args(["sign", name, "--id", "msg_it's"])
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        let (_, ts, sig, curl) = parse_sign_output(&String::from_utf8(out.stdout).unwrap());
        // The words a POSIX shell makes of the line, in another directory.
        let words = std::process::Command::new("sh")
            .arg("-c")
            .arg(curl.replacen("curl ", "printf '%s\\n' ", 1))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(words.status.success(), "{curl}");
        let words = String::from_utf8(words.stdout).unwrap();
        let words: Vec<&str> = words.lines().collect();
        let path = sub.join(name).canonicalize().unwrap();
        assert_eq!(
            words[words.len() - 2..],
            ["--data-binary", &format!("@{}", path.display())],
            "{curl}"
        );
        for header in [
            "svix-id: msg_it's".to_owned(),
            format!("svix-timestamp: {ts}"),
            format!("svix-signature: {sig}"),
        ] {
            assert!(words.contains(&header.as_str()), "{header} in {curl}");
        }
    }
}

/// `clerk-sync verify FILE --id ID --timestamp TS --signature SIG EXTRA...`
/// with `secret` as the configured signing secret(s).
fn verify_cmd(secret: &str, file: &str, id: &str, ts: &str, sig: &str, extra: &[&str]) -> Finished {
    let args = [
        &[
            "verify",
            file,
            "--id",
            id,
            "--timestamp",
            ts,
            "--signature",
            sig,
        ][..],
        extra,
    ]
    .concat();
    run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", secret)])
}

#[test]
fn verify_accepts_valid_deliveries_and_says_why_others_fail() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    let body = b"{\"type\":\"user.created\",\"data\":{\"id\":\"user_1\"}}".to_vec();
    std::fs::write(&file, &body).unwrap();
    let f = file.to_str().unwrap();
    let id = unique_msg_id();
    let ts = now_secs().to_string();
    let sig = sign(SECRET, &id, &ts, &body);

    let ok = verify_cmd(SECRET, f, &id, &ts, &sig, &[]);
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);

    // A second, rotated secret still verifies the old endpoint's signature.
    let both = format!("{SECRET_B},{SECRET}");
    let rotated = verify_cmd(&both, f, &id, &ts, &sig, &[]);
    assert!(rotated.status.success(), "{}", rotated.stderr);

    let wrong_secret = verify_cmd(OTHER_SECRET, f, &id, &ts, &sig, &[]);
    assert!(!wrong_secret.status.success());
    assert!(
        wrong_secret.stderr.contains("secret is wrong"),
        "{}",
        wrong_secret.stderr
    );

    let changed = dir.path().join("changed.json");
    std::fs::write(
        &changed,
        b"{\"type\":\"user.created\",\"data\":{\"id\":\"user_2\"}}",
    )
    .unwrap();
    let tampered = verify_cmd(SECRET, changed.to_str().unwrap(), &id, &ts, &sig, &[]);
    assert!(!tampered.status.success());
    assert!(tampered.stderr.contains("body"), "{}", tampered.stderr);

    // A saved delivery is old by nature: by default the signature decides,
    // and the age is reported; with --tolerance the window is enforced.
    let old_ts = (now_secs() - 1000).to_string();
    let old_sig = sign(SECRET, &id, &old_ts, &body);
    let saved = verify_cmd(SECRET, f, &id, &old_ts, &old_sig, &[]);
    assert!(saved.status.success(), "{}", saved.stderr);
    assert!(
        saved.stdout.starts_with("valid signature; note: the timestamp is 10")
            && saved.stdout.ends_with(
                " s old, outside the 300 s window serve applies by default, so serve would answer 401\n"
            ),
        "{}",
        saved.stdout
    );
    let stale = verify_cmd(SECRET, f, &id, &old_ts, &old_sig, &["--tolerance", "300"]);
    assert!(!stale.status.success());
    assert!(stale.stderr.contains("s old"), "{}", stale.stderr);
    assert!(
        stale.stderr.contains("100"),
        "says by how much: {}",
        stale.stderr
    );
    let wide = verify_cmd(SECRET, f, &id, &old_ts, &old_sig, &["--tolerance", "2000"]);
    assert!(wide.status.success(), "{}", wide.stderr);

    let future_ts = (now_secs() + 1000).to_string();
    let future_sig = sign(SECRET, &id, &future_ts, &body);
    let future = verify_cmd(
        SECRET,
        f,
        &id,
        &future_ts,
        &future_sig,
        &["--tolerance", "300"],
    );
    assert!(!future.status.success());
    assert!(future.stderr.contains("future"), "{}", future.stderr);

    for garbage in ["garbage", "v1,", "v2,abc"] {
        let bad = verify_cmd(SECRET, f, &id, &ts, garbage, &[]);
        assert!(!bad.status.success(), "{garbage}");
        assert!(bad.stderr.contains("v1"), "{garbage}: {}", bad.stderr);
    }
    let bad_ts = verify_cmd(SECRET, f, &id, "soon", &sig, &[]);
    assert!(!bad_ts.status.success());
    assert!(!ok.stdout.contains(SECRET) && !tampered.stderr.contains(SECRET));
}

#[test]
fn verify_checks_published_vectors_offline() {
    let vectors = fixture_json("standard-webhooks-vectors.json");
    let dir = tempfile::tempdir().unwrap();
    for v in vectors["valid_hmac"].as_array().unwrap() {
        let Some(payload) = v["payload"].as_str() else {
            continue;
        };
        let file = dir.path().join("payload");
        std::fs::write(&file, payload).unwrap();
        let out = verify_cmd(
            v["secret"].as_str().unwrap(),
            file.to_str().unwrap(),
            v["msg_id"].as_str().unwrap(),
            v["timestamp"].as_str().unwrap(),
            v["expected_signature"].as_str().unwrap(),
            &[],
        );
        assert!(out.status.success(), "{}: {}", v["name"], out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_counts_while_serving() {
    let s = inproc::start_default();
    let t = now_ms();
    let (a, b) = (unique_user_id(), unique_user_id());
    let last = delivery(fixture("clerk/session.created.json"));
    for d in [
        delivery(user_event("user.created", &user_data(&a, t, t))),
        delivery(user_event("user.created", &user_data(&b, t, t))),
        delivery(deleted_event(&b, None, t + 1)),
        delivery(user_event("user.updated", &user_data(&a, t, t - 1))),
        last.clone(),
    ] {
        assert_status(&s.deliver(&d).await, 200, "setup");
    }
    let db = s.db_path.to_str().unwrap();
    let out = run_to_end(&["status", "--db", db, "--json"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).expect("status --json is JSON");
    assert_eq!(r["users"]["total"], 2);
    assert_eq!(r["users"]["active"], 1);
    assert_eq!(r["users"]["tombstones"], 1);
    assert_eq!(r["events"]["total"], 5);
    assert_eq!(r["events"]["by_type"]["user.created"]["applied"], 2);
    assert_eq!(r["events"]["by_type"]["user.updated"]["stale"], 1);
    assert_eq!(r["events"]["by_type"]["session.created"]["ignored"], 1);
    assert_eq!(r["last_event"]["id"], last.id.as_str());
    assert_eq!(r["schema_version"], 2);
    assert_eq!(r["integrity"], "ok");
    assert_eq!(r["journal_mode"], "wal");

    let text = run_to_end(
        &["status", "--db", db],
        &[("CLERK_SYNC_DB", "ignored-by-flag.db")],
    );
    assert!(text.status.success());
    assert!(
        text.stdout.contains("2 (1 active, 1 tombstones)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("integrity       ok"),
        "{}",
        text.stdout
    );

    // The server still takes deliveries after status has read the file.
    let d = delivery(user_event("user.updated", &user_data(&a, t, t + 5)));
    assert_status(&s.deliver(&d).await, 200, "after status");
}

#[test]
fn status_on_a_missing_database_fails_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let out = run_to_end(&["status", "--db", path.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("no database"), "{}", out.stderr);
    assert!(!path.exists());
}

/// A damaged file: `status` says what `PRAGMA integrity_check` found and
/// exits non-zero, so a script or a timer can alert on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_damaged_file() {
    let mut s = inproc::start_default();
    let t = now_ms();
    for _ in 0..5 {
        let d = delivery(user_event(
            "user.created",
            &user_data(&unique_user_id(), t, t),
        ));
        assert_status(&s.deliver(&d).await, 200, "setup");
    }
    assert_eq!(s.stop(), Ok(()));
    let root: i64 = s
        .db()
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'users_email'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page_size: i64 = s
        .db()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // Zero the first cell pointers of the email index's page: the rows are
    // intact, the index no longer finds them.
    {
        use std::io::{Seek as _, SeekFrom, Write as _};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&s.db_path)
            .unwrap();
        f.seek(SeekFrom::Start(((root - 1) * page_size + 8) as u64))
            .unwrap();
        f.write_all(&[0, 0, 0, 0]).unwrap();
    }
    let out = run_to_end(
        &["status", "--db", s.db_path.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(!out.status.success(), "{}", out.stdout);
    let r: Value = serde_json::from_str(&out.stdout).expect("still JSON");
    let integrity = r["integrity"].as_str().unwrap();
    assert_ne!(integrity, "ok");
    assert!(integrity.contains("users_email"), "{integrity}");
}

/// A database `serve` wrote `users` users into and then stopped cleanly, in
/// a directory of its own.
async fn stopped_database(users: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clerk.db");
    let mut s = inproc::start(Settings {
        db: Some(db.clone()),
        ..Settings::default()
    });
    let t = now_ms();
    for _ in 0..users {
        let d = delivery(user_event(
            "user.created",
            &user_data(&unique_user_id(), t, t),
        ));
        assert_status(&s.deliver(&d).await, 200, "setup");
    }
    assert_eq!(s.stop(), Ok(()));
    (dir, db)
}

/// Runs the binary to its end with `stdout` as its standard output; a piped
/// one is closed at once, as by a reader that stopped reading. Gives the
/// exit status and what went to stderr.
fn run_with_stdout(args: &[&str], stdout: Stdio) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = base_command(dir.path());
    cmd.args(args)
        .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn clerk-sync");
    drop(child.stdout.take());
    let status = wait_bounded(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("clerk-sync {args:?} did not finish within 10 s")
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// After a clean stop no log lies beside the file. `status` must not create
/// one (nor the -shm): it would belong to whoever ran `status`, and could
/// stop `serve` from writing later. Nor may it need to write the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_leaves_no_files_beside_a_stopped_database() {
    let (dir, db) = stopped_database(2).await;
    // A name that must be encoded to reach SQLite intact.
    let odd = dir.path().join("a?b#c%41 d.db");
    std::fs::copy(&db, &odd).unwrap();
    let before = names_in(dir.path());
    assert_eq!(before, ["a?b#c%41 d.db", "clerk.db"]);
    let check = |path: &Path, what: &str| {
        let out = run_to_end(&["status", "--db", path.to_str().unwrap(), "--json"], &[]);
        assert!(out.status.success(), "{what}: {}", out.stderr);
        let r: Value = serde_json::from_str(&out.stdout).expect("status --json is JSON");
        assert_eq!(r["users"]["total"], 2, "{what}");
        assert_eq!(r["journal_mode"], "wal", "{what}");
        assert_eq!(r["integrity"], "ok", "{what}");
        assert_eq!(names_in(dir.path()), before, "{what}");
    };
    check(&db, "a stopped database");
    check(&odd, "an odd name");

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    // As root the mode does not stop writes, and this shows only that
    // nothing is left behind.
    let result = std::panic::catch_unwind(|| check(&db, "a read-only directory"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// `sign f.json | head -c 10`, `status > /dev/full`: a reader that went away
/// ends the command as if it had finished, a full disk is the usual one-line
/// error, and neither is a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_cannot_be_written_ends_the_command_cleanly() {
    let (dir, db) = stopped_database(1).await;
    let body = dir.path().join("body.json");
    std::fs::write(&body, fixture("clerk/user.created.json")).unwrap();
    let runs: [&[&str]; 3] = [
        &["sign", body.to_str().unwrap()],
        &["status", "--db", db.to_str().unwrap()],
        &["status", "--db", db.to_str().unwrap(), "--json"],
    ];
    for args in runs {
        let (status, stderr) = run_with_stdout(args, Stdio::piped());
        assert_eq!(
            status.code(),
            Some(0),
            "{args:?} into a closed pipe: {stderr}"
        );
        assert!(stderr.is_empty(), "{args:?} into a closed pipe: {stderr}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let (status, stderr) = run_with_stdout(args, Stdio::from(full));
        assert_eq!(status.code(), Some(2), "{args:?} into /dev/full: {stderr}");
        assert!(
            stderr.starts_with("clerk-sync: error: cannot write to standard output")
                && stderr.lines().count() == 1,
            "{args:?} into /dev/full: {stderr}"
        );
    }
}

/// A SQLite file that SQLite finds damaged, whichever page it is, fails the
/// integrity check: exit 1, with what SQLite said. A file that is not SQLite,
/// or SQLite without the schema, is not a clerk-sync database: exit 2, with
/// its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_a_damaged_database_from_a_foreign_file() {
    let (dir, db) = stopped_database(3).await;
    let (pages, page_size) = {
        let c = open_db(&db);
        let pragma = |name: &str| -> u64 {
            c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .unwrap() as u64
        };
        (pragma("page_count"), pragma("page_size"))
    };
    assert!(pages >= 8, "every table and index has a page: {pages}");
    for page in 1..=pages {
        let copy = dir.path().join(format!("page{page}.db"));
        std::fs::copy(&db, &copy).unwrap();
        // An invalid page type where the b-tree page header starts (on page 1
        // after the 100-byte file header).
        {
            use std::io::{Seek as _, SeekFrom, Write as _};
            let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
            let header = if page == 1 { 100 } else { 0 };
            f.seek(SeekFrom::Start((page - 1) * page_size + header))
                .unwrap();
            f.write_all(&[0x99]).unwrap();
        }
        let out = run_to_end(&["status", "--db", copy.to_str().unwrap()], &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "page {page}: {}{}",
            out.stdout,
            out.stderr
        );
        let integrity = out
            .stdout
            .lines()
            .find(|l| l.starts_with("integrity "))
            .unwrap_or_else(|| panic!("page {page}: {}", out.stdout));
        // SQLite's own words: "malformed" where a read stopped, its error
        // code 11 (SQLITE_CORRUPT) where the integrity check found it.
        assert!(
            integrity.contains("malformed") || integrity.contains("error code 11"),
            "page {page}: {integrity}"
        );
    }

    let text = dir.path().join("notes.db");
    std::fs::write(&text, "not a database\n").unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    for (path, says) in [
        (&text, "not a SQLite file"),
        (&empty, "no such table"),
        (&other, "no such table"),
    ] {
        let path = path.to_str().unwrap();
        let out = run_to_end(&["status", "--db", path], &[]);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("{path} is not a clerk-sync database"))
                && out.stderr.contains(says),
            "{path}: {}",
            out.stderr
        );
    }
}

/// `serve` refuses a file a newer clerk-sync wrote; `status` shows what it
/// can of it and then says so, with exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_refuses_a_newer_schema_after_reporting_it() {
    let (dir, db) = stopped_database(1).await;
    open_db(&db)
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    // A newer schema need not have the tables this binary reads.
    let bare = dir.path().join("bare.db");
    rusqlite::Connection::open(&bare)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    for (path, users) in [(&db, "users           1 (1 active"), (&bare, "")] {
        let path = path.to_str().unwrap();
        let out = run_to_end(&["status", "--db", path], &[]);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", out.stderr);
        assert!(
            out.stdout.contains("schema version  99") && out.stdout.contains(users),
            "{path}: {}",
            out.stdout
        );
        assert!(
            out.stderr.contains(&format!(
                "{path} has schema version 99, newer than this binary's 2: serve refuses it"
            )) && out.stderr.lines().count() == 1,
            "{path}: {}",
            out.stderr
        );
        let json = run_to_end(&["status", "--db", path, "--json"], &[]);
        assert_eq!(json.status.code(), Some(2), "{path}: {}", json.stderr);
        let r: Value = serde_json::from_str(&json.stdout).expect("still JSON");
        assert_eq!(r["schema_version"], 99);
    }
}

/// systemd may name an abstract socket (`@name`); READY=1 still arrives.
#[test]
fn notify_to_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("clerk-sync-test-{}", unique_msg_id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut s = Process::with(Options {
        extra_env: vec![("NOTIFY_SOCKET".into(), format!("@{name}"))],
        ..Options::default()
    });
    let mut messages = Vec::new();
    expect_message(&socket, &mut messages, "READY=1", Duration::from_secs(5));
    assert!(s.stop().success());
}
