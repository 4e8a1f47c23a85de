//! Strangers on the port, against the real binary: a thousand requests
//! that declare a large body and send none, or trickle one in; a flood of
//! silent connections reopened as soon as they close; the listen queue.
//! And careless typing: a secret typed into a subcommand's arguments never
//! shows in its output.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::process::{run_to_end, Options, Process};
use crate::support::*;

/// The soft limit on open files, from /proc (None where there is none).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Whether this process may open `n` more connections (both ends live in
/// other processes' limits, but other tests share this one's).
fn enough_files_for(n: u64) -> bool {
    if open_file_limit().is_some_and(|limit| limit < 2 * n + 1200) {
        eprintln!("skipped: the open-file limit is too low for {n} connections");
        return false;
    }
    true
}

#[derive(Clone, Copy)]
enum Stranger {
    /// Headers with a forged signature and `content-length: 1048576`, then
    /// nothing.
    Declares,
    /// The same, then one byte of body a second.
    Trickles,
    /// Nothing at all.
    Silent,
}

/// The head a stranger sends: well-formed, signed with a forged signature.
fn forged_head(addr: SocketAddr, path: &str) -> Vec<u8> {
    let ts = now_secs().to_string();
    let h = hdrs(&[
        ("svix-id", "msg_stranger"),
        ("svix-timestamp", &ts),
        (
            "svix-signature",
            "v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3JnZWQgc2lnbmF0dXJlIQ==",
        ),
    ]);
    raw_head(addr, path, &h, &["content-length: 1048576"])
}

/// `n` strangers of one kind, each connecting again as soon as the server
/// closes it, until dropped.
struct Crowd {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Crowd {
    fn gather(s: &Endpoint, kind: Stranger, n: usize) -> Crowd {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (stop, opened) = (stop.clone(), opened.clone());
                let (addr, path) = (s.addr, s.path.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(c) = TcpStream::connect(addr).await else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        opened.fetch_add(1, Ordering::Relaxed);
                        loiter(c, kind, &forged_head(addr, &path)).await;
                    }
                })
            })
            .collect();
        Crowd {
            stop,
            opened,
            tasks,
        }
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What one stranger does on its connection, until the server closes it
/// (or 30 s pass).
async fn loiter(c: TcpStream, kind: Stranger, head: &[u8]) {
    let (mut rd, mut wr) = c.into_split();
    let send = async {
        if !matches!(kind, Stranger::Silent) && wr.write_all(head).await.is_err() {
            return;
        }
        if matches!(kind, Stranger::Trickles) {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if wr.write_all(b"x").await.is_err() {
                    return;
                }
            }
        }
        std::future::pending::<()>().await;
    };
    let mut sink = [0u8; 1024];
    let until_closed = async {
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            () = send => {}
            () = until_closed => {}
        }
    })
    .await;
}

/// Ten genuine deliveries, each on a fresh connection, a fifth of a second
/// apart; each must be answered 200 within `limit`.
async fn genuine_deliveries_answered_within(s: &Endpoint, limit: Duration, beside: &str) {
    let mut took = Vec::new();
    for i in 0..10 {
        let d = delivery(user_event(
            "user.created",
            &user_data(&unique_user_id(), 1_700_000_000_000, 1_700_000_000_000),
        ));
        let started = Instant::now();
        let status = try_deliver(s.addr, &s.path, &d).await;
        let elapsed = started.elapsed();
        assert_eq!(status, Some(200), "delivery {i} beside {beside}");
        assert!(
            elapsed <= limit,
            "delivery {i} beside {beside} took {elapsed:?}"
        );
        took.push(elapsed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("beside {beside}: answered in {took:?}");
}

/// What the server answers a stranger that declares a body and sends none,
/// and how long that took.
async fn a_strangers_answer(s: &Endpoint) -> (String, Duration) {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    c.write_all(&forged_head(s.addr, &s.path)).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// The issue this guards against: about 70 connections declaring 1 MiB
/// bodies (unsigned, never sent) made every genuine delivery wait 3 s and
/// get 503, since room was reserved by the declared length. Now a thousand
/// of them, reconnecting as soon as they are cut off, delay nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_declared_bodies_never_sent_delay_no_delivery() {
    if !enough_files_for(1000) {
        return;
    }
    let mut s = Process::start();
    let crowd = Crowd::gather(&s, Stranger::Declares, 1000);
    // Past the 2 s grace, so they are being cut off and coming back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    genuine_deliveries_answered_within(&s, Duration::from_secs(2), "1000 declared bodies").await;
    let (answer, took) = a_strangers_answer(&s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "a stranger held on {took:?}");
    assert!(crowd.opened() > 1000, "the strangers were never cut off");
    drop(crowd);
    assert!(s.stop().success(), "{}", s.logs());
    assert_eq!(count(&s.db(), "webhook_events"), 10);
}

/// The same with bodies that trickle in a byte a second: they take no
/// room worth having and are cut off once they fall behind the pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_trickling_bodies_delay_no_delivery() {
    if !enough_files_for(1000) {
        return;
    }
    let mut s = Process::start();
    let crowd = Crowd::gather(&s, Stranger::Trickles, 1000);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    genuine_deliveries_answered_within(&s, Duration::from_secs(2), "1000 trickling bodies").await;
    assert!(crowd.opened() > 1000, "the strangers were never cut off");
    drop(crowd);
    assert!(s.stop().success(), "{}", s.logs());
    assert_eq!(count(&s.db(), "webhook_events"), 10);
}

/// The issue this guards against: 1300 silent connections, each reopened
/// as soon as it closed, pushed a third of the genuine deliveries past
/// Svix's 15 s (the 1024 served waited out their 10 s, the listen queue of
/// 128 dropped the rest). Now the quietest is shed when all are taken, and
/// deliveries go through at once; the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_keeps_no_delivery_out() {
    if !enough_files_for(1300) {
        return;
    }
    let mut s = Process::start();
    let crowd = Crowd::gather(&s, Stranger::Silent, 1300);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    genuine_deliveries_answered_within(&s, Duration::from_secs(5), "1300 silent connections").await;
    assert!(crowd.opened() > 1300, "nothing was shed");
    drop(crowd);
    assert!(s.stop().success(), "{}", s.logs());
    let logs = s.logs();
    assert!(
        logs.contains("all connections taken; shedding the quietest"),
        "{logs}"
    );
    assert_eq!(count(&s.db(), "webhook_events"), 10);
}

/// The listen queue holds as many connections as are served at once (up to
/// what the kernel allows), not the 128 that std and tokio ask for.
#[tokio::test]
async fn the_listen_queue_fits_the_connection_limit() {
    let Ok(ss) = std::process::Command::new("ss").arg("-V").output() else {
        eprintln!("skipped: no `ss` to read the listen queue with");
        return;
    };
    if !ss.status.success() {
        eprintln!("skipped: `ss` does not run here");
        return;
    }
    let s = Process::start();
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", s.addr.port())])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    // State, Recv-Q, Send-Q (the queue's length), local address, peer.
    let queue: u64 = text
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket in {text:?}"));
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    assert_eq!(queue, 1024.min(cap), "{text}");
}

/// Output quotes what was typed: a secret typed where it does not belong
/// (as the id to sign, in the URL, in a database's name) is cut from it as
/// it is from errors and logs, and the rest of the output is intact.
#[tokio::test]
async fn subcommand_output_never_shows_a_secret_typed_into_it() {
    let bare = SECRET.trim_start_matches("whsec_");
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        br#"{"type":"clerk-sync.probe","data":{"id":"probe"}}"#,
    )
    .unwrap();
    let body = body.to_str().unwrap();
    let env = [("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)];
    let url_prefixed = format!("http://x/{SECRET}");
    let url_bare = format!("http://x/{bare}");
    for args in [
        &["sign", body, "--id", SECRET][..],
        &["sign", body, "--id", bare][..],
        &["sign", body, "--url", &url_prefixed][..],
        &["sign", body, "--url", &url_bare][..],
    ] {
        let out = run_to_end(args, &env);
        assert!(out.status.success(), "{args:?}: {}", out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains(bare), "{args:?} shows the secret:\n{all}");
        assert!(all.contains("svix-signature: v1,"), "{args:?}:\n{all}");
        assert!(all.contains("curl -sS -X POST"), "{args:?}:\n{all}");
    }
    // A database named after the secret, as typed, with or without its prefix.
    for name in [format!("{bare}.db"), format!("{SECRET}.db")] {
        let db = dir.path().join(&name);
        let mut s = Process::with(Options {
            db: Some(db.clone()),
            ..Options::default()
        });
        assert!(s.stop().success());
        let db = db.to_str().unwrap();
        for args in [
            &["status", "--db", db][..],
            &["status", "--db", db, "--json"][..],
        ] {
            // With no secret configured too: what was typed is enough.
            for env in [&env[..], &[][..]] {
                let out = run_to_end(args, env);
                assert!(out.status.success(), "{args:?}: {}", out.stderr);
                let all = format!("{}{}", out.stdout, out.stderr);
                assert!(!all.contains(bare), "{args:?} shows the secret:\n{all}");
                assert!(all.contains("integrity"), "{args:?}:\n{all}");
            }
        }
    }
}
