//! The HTTP table of the contract: status codes, check order, paths.

use serde_json::json;

use crate::support::inproc::{self, InProc, Settings};
use crate::support::process::{Options, Process};
use crate::support::*;

fn created_body() -> Vec<u8> {
    let id = unique_user_id();
    user_event(
        "user.created",
        &user_data(&id, 1_700_000_000_000, 1_700_000_000_000),
    )
}

/// A valid `user.created` padded with trailing JSON whitespace to exactly `len` bytes.
fn created_body_of_len(len: usize) -> Vec<u8> {
    let mut b = created_body();
    assert!(b.len() <= len, "base body already {} bytes", b.len());
    b.resize(len, b' ');
    b
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn without(h: &[(String, Vec<u8>)], name: &str) -> Vec<(String, Vec<u8>)> {
    h.iter().filter(|(k, _)| k != name).cloned().collect()
}

fn replace(h: &[(String, Vec<u8>)], name: &str, value: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = without(h, name);
    out.push((name.to_string(), value.to_vec()));
    out
}

#[tokio::test]
async fn verified_delivery_is_200_with_small_json_body() {
    let s = inproc::start_default();
    let d = delivery(fixture("clerk/user.created.json"));
    let r = s.deliver(&d).await;
    assert_status(&r, 200, "docs user.created");
    let v = r
        .json()
        .unwrap_or_else(|| panic!("200 body is not JSON: {:?}", r.text()));
    assert!(v.is_object(), "200 body should be a JSON object: {v}");
    assert!(
        r.body.len() < 1024,
        "200 body is not small: {} bytes",
        r.body.len()
    );
    // Committed before the answer: a fresh connection sees it at once.
    let c = s.db();
    assert!(event_row(&c, &d.id).is_some());
    assert!(user_row(&c, "user_29w83sxmDNGwOuEthce5gg56FcC").is_some());

    // Already applied: still 200 with a JSON body.
    let r = s.deliver(&d.resigned(SECRET)).await;
    assert_status(&r, 200, "retry");
    assert!(r.json().is_some(), "retry body is not JSON: {:?}", r.text());
}

#[tokio::test]
async fn missing_or_malformed_headers_are_400() {
    let s = inproc::start_default();
    let d = delivery(created_body());
    let good = d.headers();

    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        let r = s.post(&s.path, &without(&good, name), &d.body).await;
        assert_status(&r, 400, &format!("missing {name}"));
        r.assert_json_reason();
    }
    let r = s.post(&s.path, &base_headers(), &d.body).await;
    assert_status(&r, 400, "no svix headers at all");

    let r = s
        .post(&s.path, &replace(&good, "svix-id", b""), &d.body)
        .await;
    assert_status(&r, 400, "empty svix-id");
    r.assert_json_reason();

    for ts in [
        "abc",
        "12a",
        "-1",
        "",
        "1.5",
        "0x10",
        "99999999999999999999",
    ] {
        // Signed over the malformed timestamp, so only the header shape is wrong.
        let sig = sign(SECRET, &d.id, ts, &d.body);
        let h = hdrs(&[
            ("svix-id", &d.id),
            ("svix-timestamp", ts),
            ("svix-signature", &sig),
        ]);
        let r = s.post(&s.path, &h, &d.body).await;
        assert_status(&r, 400, &format!("svix-timestamp {ts:?}"));
        r.assert_json_reason();
    }

    let c = s.db();
    assert_eq!(count(&c, "webhook_events"), 0);
    assert_eq!(count(&c, "users"), 0);
}

#[tokio::test]
async fn webhook_header_names_fall_back_one_by_one() {
    let s = inproc::start_default();

    let d = delivery(created_body());
    let h = hdrs(&[
        ("webhook-id", &d.id),
        ("webhook-timestamp", &d.ts),
        ("webhook-signature", &d.sig),
    ]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        200,
        "all three webhook-*",
    );
    assert!(
        event_row(&s.db(), &d.id).is_some(),
        "webhook-id is the event id"
    );

    let d = delivery(created_body());
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("svix-timestamp", &d.ts),
        ("webhook-signature", &d.sig),
    ]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        200,
        "only webhook-signature",
    );

    let d = delivery(created_body());
    let h = hdrs(&[
        ("webhook-id", &d.id),
        ("svix-timestamp", &d.ts),
        ("svix-signature", &d.sig),
    ]);
    assert_status(&s.post(&s.path, &h, &d.body).await, 200, "only webhook-id");
    assert!(event_row(&s.db(), &d.id).is_some());

    let d = delivery(created_body());
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("webhook-timestamp", &d.ts),
        ("svix-signature", &d.sig),
    ]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        200,
        "only webhook-timestamp",
    );

    // The svix- name wins when both are present: a bad svix-signature is not
    // rescued by a good webhook-signature.
    let d = delivery(created_body());
    let bad = sign(OTHER_SECRET, &d.id, &d.ts, &d.body);
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("svix-timestamp", &d.ts),
        ("svix-signature", &bad),
        ("webhook-signature", &d.sig),
    ]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        401,
        "svix-signature preferred",
    );

    // A missing header is still missing when only the other names are given.
    let d = delivery(created_body());
    let h = hdrs(&[("webhook-id", &d.id), ("webhook-signature", &d.sig)]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        400,
        "no timestamp under either name",
    );
}

const LIMIT: u64 = 2048;

fn small_limit_server() -> InProc {
    inproc::start(Settings {
        max_body: LIMIT,
        ..Settings::default()
    })
}

#[tokio::test]
async fn body_over_max_body_is_413_with_content_length() {
    let s = small_limit_server();
    let d = delivery(created_body_of_len(LIMIT as usize + 1));
    let r = s.post_raw(&d.headers(), &d.body).await;
    assert_status(&r, 413, "one byte over --max-body");
    r.assert_json_reason();

    // Far over the limit: the server may answer before reading it all.
    let big = created_body_of_len(4 << 20);
    let d = delivery(big);
    let r = s.post_raw(&d.headers(), &d.body).await;
    assert_status(&r, 413, "4 MiB with --max-body 2048");

    let c = s.db();
    assert_eq!(count(&c, "webhook_events"), 0);
    assert_eq!(count(&c, "users"), 0);
    assert_status(&s.get("/healthz").await, 200, "healthy after 413s");
}

#[tokio::test]
async fn body_over_max_body_is_413_with_chunked_encoding() {
    let s = small_limit_server();
    for len in [LIMIT as usize + 1, 1 << 20] {
        let d = delivery(created_body_of_len(len));
        let head = raw_head(
            s.addr,
            &s.path,
            &d.headers(),
            &["transfer-encoding: chunked"],
        );
        let body = chunked(&d.body, 1000);
        let r = raw_exchange(s.addr, &head, &[&body]).await;
        assert_status(&r, 413, &format!("chunked body of {len} bytes"));
    }
    assert_eq!(count(&s.db(), "webhook_events"), 0);
}

/// A chunked body that passes the limit while it trickles in is still
/// refused for its size, however long reading the rest away takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_sent_slowly_is_413_not_408() {
    use std::time::Duration;
    let s = small_limit_server();
    let d = delivery(created_body_of_len(4 * LIMIT as usize));
    let head = raw_head(
        s.addr,
        &s.path,
        &d.headers(),
        &["transfer-encoding: chunked"],
    );
    // Just under the limit, over it after a second (within the 2 s a body
    // gets before it must keep pace), and more of it for longer than the
    // 10 s a body may take, and longer than the 14 s an answer may take:
    // reading the rest away must stop in time for the 413.
    let under = LIMIT as usize - 15;
    let mut opening = format!("{under:x}\r\n").into_bytes();
    opening.extend_from_slice(&d.body[..under]);
    opening.extend_from_slice(b"\r\n");
    let started = std::time::Instant::now();
    let answer = slow_exchange(s.addr, &head, &opening, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "after Svix's 15 s"
    );
    assert_eq!(count(&s.db(), "webhook_events"), 0);
}

/// A body that comes in far slower than any real delivery is cut off once
/// its grace is over (408), long before the 10 s a whole body may take, and
/// so is one that sends nothing at all after its headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_pace_is_cut_off_after_its_grace() {
    use std::time::{Duration, Instant};
    let s = inproc::start_default();
    let d = delivery(created_body());
    let length = format!("content-length: {}", d.body.len());
    let head = raw_head(s.addr, &s.path, &d.headers(), &[&length]);
    // 100 bytes, then 10 bytes every half second: 20 bytes a second.
    let started = Instant::now();
    let answer = slow_body(s.addr, &head, &d.body[..100], &d.body[100..]).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("slower than"), "{answer}");
    assert!(
        took >= Duration::from_millis(1900),
        "cut before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "cut late: {took:?}");
    // Nothing but headers.
    let started = Instant::now();
    let answer = slow_body(s.addr, &head, b"", b"").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&s.db(), "webhook_events"), 0);
    assert_status(&s.deliver(&d).await, 200, "the same delivery sent at once");
}

/// Sends `head` and `opening`, then `rest` 10 bytes every half second (and
/// then nothing), while reading the answer; the answer's text.
async fn slow_body(addr: std::net::SocketAddr, head: &[u8], opening: &[u8], rest: &[u8]) -> String {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let (head, opening, rest) = (head.to_vec(), opening.to_vec(), rest.to_vec());
    let writer = tokio::spawn(async move {
        wr.write_all(&head).await?;
        wr.write_all(&opening).await?;
        for part in rest.chunks(10) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            wr.write_all(part).await?;
        }
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(wr)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut answer)).await;
    writer.abort();
    assert!(read.is_ok(), "no answer within 15 s");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `head` and `opening`, then a chunk of 10 bytes every half second
/// for `trickle`, then stops sending, while reading the answer. Returns the
/// answer's text.
async fn slow_exchange(
    addr: std::net::SocketAddr,
    head: &[u8],
    opening: &[u8],
    trickle: std::time::Duration,
) -> String {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let (head, opening) = (head.to_vec(), opening.to_vec());
    let writer = tokio::spawn(async move {
        wr.write_all(&head).await?;
        wr.write_all(&opening).await?;
        let started = Instant::now();
        while started.elapsed() < trickle {
            tokio::time::sleep(Duration::from_millis(500)).await;
            wr.write_all(b"a\r\n0123456789\r\n").await?;
        }
        wr.shutdown().await
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(25), rd.read_to_end(&mut answer)).await;
    writer.abort();
    assert!(read.is_ok(), "no answer within 25 s");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A body may be declared as large as `--max-body` allows before any of it
/// arrives; what is set aside for it follows what arrives, so a huge
/// declaration from an unsigned request costs nothing.
#[tokio::test]
async fn a_huge_declared_body_takes_no_memory_up_front() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = inproc::start(Settings {
        max_body: u64::MAX,
        ..Settings::default()
    });
    for declared in ["100000000000000", "10000000000000000000"] {
        let d = delivery(created_body());
        let length = format!("content-length: {declared}");
        let head = raw_head(s.addr, &s.path, &d.headers(), &[&length]);
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&head).await.unwrap();
        c.write_all(b"{\"type\":").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            c.read_to_end(&mut answer),
        )
        .await;
    }
    assert_status(
        &s.get("/healthz").await,
        200,
        "alive after huge declarations",
    );
    let d = delivery(created_body());
    assert_status(&s.deliver(&d).await, 200, "and still taking deliveries");
}

/// Bodies count by what has arrived, never by what they declare: 64
/// requests announcing 1 MiB each (the default --max-body) and sending one
/// byte hold nothing, and a delivery goes straight through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_holds_no_room() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt as _;
    let s = inproc::start_default();
    let mut held = Vec::new();
    for _ in 0..64 {
        let d = delivery(created_body());
        let head = raw_head(s.addr, &s.path, &d.headers(), &["content-length: 1048576"]);
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&head).await.unwrap();
        c.write_all(b"{").await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_status(
        &s.deliver(&delivery(created_body())).await,
        200,
        "beside them",
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// Bodies are read whole before their signature can be checked, so the
/// memory that large ones take together is bounded: past the first 64 KiB
/// of each, they share 32 MiB, counted as bytes arrive. Once that is taken
/// another large body waits a little, then gets 503 to retry, instead of
/// the process growing without end; a small one does not wait at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_in_memory_together_are_bounded() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt as _;
    let s = inproc::start_default();
    // 40 bodies of just under 1 MiB each, sent whole but for their last
    // byte: more than the 32 MiB there is room for.
    let mut hogs = Vec::new();
    for _ in 0..40 {
        let d = delivery(created_body_of_len(1 << 20));
        let head = raw_head(s.addr, &s.path, &d.headers(), &["content-length: 1048576"]);
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        hogs.push(tokio::spawn(async move {
            c.write_all(&head).await?;
            c.write_all(&d.body[..d.body.len() - 1]).await?;
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(c)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let small = delivery(created_body());
    let started = Instant::now();
    assert_status(
        &s.deliver(&small).await,
        200,
        "a small delivery beside them",
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let large = delivery(created_body_of_len(200_000));
    let r = s.deliver(&large).await;
    assert_status(&r, 503, "no room left for another large body");
    assert!(r.text().contains("too many request bodies"), "{}", r.text());
    for hog in hogs {
        hog.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_status(
        &s.deliver(&large).await,
        200,
        "room again once they are gone",
    );
    let metrics = s.get("/metrics").await.text();
    assert!(
        metrics.contains("clerk_sync_rejections_total{reason=\"busy\"}"),
        "{metrics}"
    );
}

/// At most 1024 connections are served at once. When all are taken, the
/// one that has waited longest for its client is closed to let the next
/// in: a crowd of silent connections cannot keep a delivery out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_quietest_connection_makes_room() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt as _;
    // Both ends of 1025 connections, plus the server's own files.
    if open_file_limit().is_some_and(|n| n < 2200) {
        eprintln!("skipped: the open-file limit is too low for 1025 connections");
        return;
    }
    let s = inproc::start_default();
    let mut idle = Vec::new();
    for _ in 0..1024 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    // Quiet long enough to be shed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert_status(
        &s.deliver(&delivery(created_body())).await,
        200,
        "the 1025th",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The first one connected was the quietest: it was closed.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), idle[0].read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the quietest connection is still open: {closed:?}"
    );
}

/// A connection whose client is sending is never shed: when every one of
/// the 1024 is active, the next waits in the listen queue until one closes,
/// then is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_while_all_are_active() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt as _;
    if open_file_limit().is_some_and(|n| n < 2200) {
        eprintln!("skipped: the open-file limit is too low for 1025 connections");
        return;
    }
    let s = inproc::start_default();
    // Each sends a byte of its headers every 100 ms (the whole header may
    // take 10 s), so none is ever quiet long enough to be shed.
    let mut active = Vec::new();
    for _ in 0..1024 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        active.push(tokio::spawn(async move {
            let _ = c
                .write_all(b"POST /api/clerk-webhook HTTP/1.1\r\nx-slow: ")
                .await;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if c.write_all(b"a").await.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = delivery(created_body());
    let waiting = {
        let (addr, path, headers, body) = (s.addr, s.path.clone(), d.headers(), d.body.clone());
        tokio::spawn(async move {
            let length = format!("content-length: {}", body.len());
            let head = raw_head(addr, &path, &headers, &[&length]);
            raw_exchange(addr, &head, &[&body]).await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "an active connection was shed");
    assert_eq!(count(&s.db(), "webhook_events"), 0);
    for c in active.drain(..24) {
        c.abort();
    }
    let r = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once connections closed")
        .unwrap();
    assert_status(&r, 200, "the waiting delivery");
    for c in active {
        c.abort();
    }
}

/// Headers far past the 64 KiB read buffer are refused by the HTTP layer
/// with 431 (hyper's own default would have taken ~400 KB of them).
#[tokio::test]
async fn headers_far_past_the_read_buffer_are_431() {
    let s = inproc::start_default();
    let d = delivery(created_body());
    let pad = format!("x-padding: {}", "a".repeat(256 * 1024));
    let length = format!("content-length: {}", d.body.len());
    let head = raw_head(s.addr, &s.path, &d.headers(), &[&pad, &length]);
    let r = raw_exchange(s.addr, &head, &[&d.body]).await;
    assert_status(&r, 431, "256 KiB of headers");
    assert_eq!(count(&s.db(), "webhook_events"), 0);
    assert_status(&s.deliver(&d).await, 200, "the same delivery without them");
}

/// The soft limit on open files, from /proc (None where there is none).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test]
async fn body_exactly_at_max_body_is_accepted() {
    let s = small_limit_server();
    let d = delivery(created_body_of_len(LIMIT as usize));
    assert_eq!(d.body.len() as u64, LIMIT);
    assert_status(&s.deliver(&d).await, 200, "body exactly --max-body bytes");

    let d = delivery(created_body_of_len(LIMIT as usize));
    let head = raw_head(
        s.addr,
        &s.path,
        &d.headers(),
        &["transfer-encoding: chunked"],
    );
    let body = chunked(&d.body, 700);
    let r = raw_exchange(s.addr, &head, &[&body]).await;
    assert_status(&r, 200, "chunked body exactly --max-body bytes");
    assert_eq!(count(&s.db(), "webhook_events"), 2);
}

#[tokio::test]
async fn checks_run_in_contract_order() {
    let s = small_limit_server();

    // Missing headers AND oversized: headers are checked first -> 400.
    let d = delivery(created_body_of_len(LIMIT as usize + 100));
    let h = without(&d.headers(), "svix-id");
    let r = s.post_raw(&h, &d.body).await;
    assert_status(&r, 400, "missing svix-id and oversized body");

    let h = replace(&d.headers(), "svix-timestamp", b"12a");
    let head = raw_head(s.addr, &s.path, &h, &["transfer-encoding: chunked"]);
    let r = raw_exchange(s.addr, &head, &[&chunked(&d.body, 512)]).await;
    assert_status(&r, 400, "malformed timestamp and oversized chunked body");

    // Oversized with a bad signature: size before signature -> 413.
    let bad = sign(OTHER_SECRET, &d.id, &d.ts, &d.body);
    let h = replace(&d.headers(), "svix-signature", bad.as_bytes());
    let r = s.post_raw(&h, &d.body).await;
    assert_status(&r, 413, "oversized body with a bad signature");

    // Oversized with a stale timestamp: still 413.
    let ts = (now_secs() - 100_000).to_string();
    let sig = sign(SECRET, &d.id, &ts, &d.body);
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("svix-timestamp", &ts),
        ("svix-signature", &sig),
    ]);
    let r = s.post_raw(&h, &d.body).await;
    assert_status(&r, 413, "oversized body with a stale timestamp");

    // Bad signature AND not JSON: signature before content -> 401.
    let nd = delivery(b"this is not json".to_vec());
    let bad = sign(OTHER_SECRET, &nd.id, &nd.ts, &nd.body);
    let h = replace(&nd.headers(), "svix-signature", bad.as_bytes());
    let r = s.post(&s.path, &h, &nd.body).await;
    assert_status(&r, 401, "bad signature and not JSON");

    // Stale timestamp AND not a Clerk event -> 401.
    let ts = (now_secs() - 100_000).to_string();
    let body = br#"{"hello":"world"}"#.to_vec();
    let sig = sign(SECRET, "msg_stale", &ts, &body);
    let h = hdrs(&[
        ("svix-id", "msg_stale"),
        ("svix-timestamp", &ts),
        ("svix-signature", &sig),
    ]);
    assert_status(
        &s.post(&s.path, &h, &body).await,
        401,
        "stale and not an event",
    );

    assert_eq!(count(&s.db(), "webhook_events"), 0);
}

#[tokio::test]
async fn verified_but_not_a_clerk_event_is_400() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello, not json".to_vec()),
        (
            "truncated JSON",
            br#"{"type":"user.created","data":{"id":"#.to_vec(),
        ),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x7b, 0x80]),
        ("empty body", Vec::new()),
        ("JSON array", b"[1,2,3]".to_vec()),
        ("JSON string", br#""user.created""#.to_vec()),
        ("empty object", b"{}".to_vec()),
        (
            "no type",
            to_body(&json!({"object":"event","timestamp":1,"data": user_data(&uid, 1, 1)})),
        ),
        (
            "no data",
            to_body(&json!({"object":"event","timestamp":1,"type":"user.created"})),
        ),
    ];
    for (what, body) in cases {
        let r = s.deliver(&delivery(body)).await;
        assert_status(&r, 400, what);
        r.assert_json_reason();
    }
    let c = s.db();
    assert_eq!(
        count(&c, "webhook_events"),
        0,
        "rejected deliveries recorded"
    );
    assert_eq!(count(&c, "users"), 0);
}

#[tokio::test]
async fn mirrored_event_without_data_id_is_400_and_records_nothing() {
    let s = inproc::start_default();
    let mut data = user_data("user_placeholder", 1_700_000_000_000, 1_700_000_000_000);
    data.as_object_mut().unwrap().remove("id");
    let mut null_id = user_data("user_placeholder", 1_700_000_000_000, 1_700_000_000_000);
    null_id["id"] = serde_json::Value::Null;
    let cases = vec![
        (
            "user.created without data.id",
            user_event("user.created", &data),
        ),
        (
            "user.updated without data.id",
            user_event("user.updated", &data),
        ),
        (
            "user.created with data.id null",
            user_event("user.created", &null_id),
        ),
        (
            "user.deleted without data.id",
            to_body(&envelope(
                "user.deleted",
                json!({"object":"user","deleted":true}),
                1_700_000_000_000,
            )),
        ),
    ];
    for (what, body) in cases {
        let d = delivery(body);
        let r = s.deliver(&d).await;
        assert_status(&r, 400, what);
        r.assert_json_reason();
        assert!(event_row(&s.db(), &d.id).is_none(), "{what}: recorded");
    }
    let c = s.db();
    assert_eq!(count(&c, "webhook_events"), 0);
    assert_eq!(count(&c, "users"), 0);
}

#[tokio::test]
async fn unmirrored_event_types_are_200_and_recorded_only() {
    let s = inproc::start_default();
    let mut ids = Vec::new();
    for f in [
        "clerk/session.created.json",
        "clerk/organization.created.json",
        "clerk/organizationMembership.created.json",
    ] {
        let body = fixture(f);
        let kind = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_string();
        let d = delivery(body);
        assert_status(&s.deliver(&d).await, 200, f);
        ids.push((d.id, kind));
    }
    // A type nobody has heard of, with a user-shaped data object.
    let uid = unique_user_id();
    let d = delivery(user_event("user.frobnicated", &user_data(&uid, 1, 2)));
    assert_status(&s.deliver(&d).await, 200, "unknown type");
    ids.push((d.id, "user.frobnicated".to_string()));

    let c = s.db();
    for (id, kind) in &ids {
        let (t, _) = event_row(&c, id).unwrap_or_else(|| panic!("{kind} not recorded"));
        assert_eq!(&t, kind);
    }
    assert_eq!(count(&c, "webhook_events"), ids.len() as i64);
    assert_eq!(count(&c, "users"), 0, "a non-user event changed users");
}

#[tokio::test]
async fn healthz_methods_and_paths() {
    let s = inproc::start_default();
    let r = s.get("/healthz").await;
    assert_status(&r, 200, "GET /healthz");

    let r = s.get(&s.path).await;
    assert_status(&r, 405, "GET on the webhook path");
    for m in ["PUT", "DELETE", "PATCH"] {
        let r = request(s.addr, m, &s.path, &base_headers(), b"{}".to_vec()).await;
        assert_status(&r, 405, &format!("{m} on the webhook path"));
    }

    let d = delivery(created_body());
    for p in [
        "/",
        "/other",
        "/api/clerk-webhook/extra",
        "/api/clerk-webhoo",
    ] {
        let r = s.post(p, &d.headers(), &d.body).await;
        assert_status(&r, 404, &format!("POST {p}"));
    }
    assert_status(&s.get("/nope").await, 404, "GET /nope");
    assert_eq!(count(&s.db(), "webhook_events"), 0);
}

#[tokio::test]
async fn custom_path_replaces_the_default() {
    let s = inproc::start(Settings {
        path: "/hooks/clerk".into(),
        ..Settings::default()
    });
    let d = delivery(created_body());
    let r = s.post(DEFAULT_PATH, &d.headers(), &d.body).await;
    assert_status(&r, 404, "default path when --path is set");
    assert_status(
        &s.post("/hooks/clerk", &d.headers(), &d.body).await,
        200,
        "custom path",
    );
    assert_status(&s.get("/hooks/clerk").await, 405, "GET custom path");
    assert_status(&s.get("/healthz").await, 200, "healthz");
}

#[tokio::test]
async fn every_flag_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env.db");
    let s = Process::with(Options {
        listen_and_db_flags: false,
        db: Some(db.clone()),
        path: None,
        extra_env: vec![
            ("CLERK_SYNC_LISTEN".into(), "127.0.0.1:0".into()),
            ("CLERK_SYNC_DB".into(), db.to_string_lossy().into_owned()),
            ("CLERK_SYNC_PATH".into(), "/env/hook".into()),
            ("CLERK_SYNC_MAX_BODY".into(), LIMIT.to_string()),
            ("CLERK_SYNC_TOLERANCE".into(), "60".into()),
        ],
        ..Options::default()
    });
    let d = delivery(created_body());
    assert_status(
        &s.post("/env/hook", &d.headers(), &d.body).await,
        200,
        "CLERK_SYNC_PATH",
    );
    assert_status(
        &s.post(DEFAULT_PATH, &d.headers(), &d.body).await,
        404,
        "default path",
    );
    assert!(db.exists(), "CLERK_SYNC_DB not used");
    assert!(event_row(&open_db(&db), &d.id).is_some());

    let big = delivery(created_body_of_len(LIMIT as usize + 1));
    let head = raw_head(
        s.addr,
        "/env/hook",
        &big.headers(),
        &[&format!("content-length: {}", big.body.len())],
    );
    assert_status(
        &raw_exchange(s.addr, &head, &[&big.body]).await,
        413,
        "CLERK_SYNC_MAX_BODY",
    );

    let body = created_body();
    let ts = (now_secs() - 90).to_string();
    let sig = sign(SECRET, "msg_envtol", &ts, &body);
    let h = hdrs(&[
        ("svix-id", "msg_envtol"),
        ("svix-timestamp", &ts),
        ("svix-signature", &sig),
    ]);
    assert_status(
        &s.post("/env/hook", &h, &body).await,
        401,
        "CLERK_SYNC_TOLERANCE=60, 90 s old",
    );
}

/// What the in-process tests hand the server directly, given to the binary
/// as flags: `--path`, `--max-body` and `--tolerance` reach it.
#[tokio::test]
async fn path_body_limit_and_tolerance_flags_reach_the_server() {
    let s = Process::with(Options {
        path: Some("/flag/hook".into()),
        max_body: Some(LIMIT),
        tolerance: Some(60),
        ..Options::default()
    });
    let d = delivery(created_body());
    assert_status(
        &s.post("/flag/hook", &d.headers(), &d.body).await,
        200,
        "--path",
    );
    assert_status(
        &s.post(DEFAULT_PATH, &d.headers(), &d.body).await,
        404,
        "default path when --path is set",
    );

    let big = delivery(created_body_of_len(LIMIT as usize + 1));
    assert_status(
        &s.post_raw(&big.headers(), &big.body).await,
        413,
        "--max-body",
    );

    let body = created_body();
    let ts = (now_secs() - 90).to_string();
    let sig = sign(SECRET, "msg_flagtol", &ts, &body);
    let h = hdrs(&[
        ("svix-id", "msg_flagtol"),
        ("svix-timestamp", &ts),
        ("svix-signature", &sig),
    ]);
    assert_status(
        &s.post("/flag/hook", &h, &body).await,
        401,
        "--tolerance 60, 90 s old",
    );
}

#[tokio::test]
async fn nothing_in_a_header_crashes_the_server() {
    let s = inproc::start_default();
    let d = delivery(created_body());
    let many = std::iter::repeat_n("v1,AAAA", 400)
        .collect::<Vec<_>>()
        .join(" ");
    let odd_sigs: Vec<Vec<u8>> = vec![
        vec![b'v', b'1', b',', 0xff, 0xfe, 0x80],
        b",,,,,,".to_vec(),
        b"v1,,v1,,v1".to_vec(),
        b"          ".to_vec(),
        b"v1,=".to_vec(),
        b"v1,====".to_vec(),
        "v1,\u{00e9}\u{00e9}".as_bytes().to_vec(),
        many.into_bytes(),
        format!("v1,{}", "A".repeat(6000)).into_bytes(),
    ];
    for sig in odd_sigs {
        let h = replace(&d.headers(), "svix-signature", &sig);
        let r = s.post_raw(&h, &d.body).await;
        // Only an empty header is malformed; any other holds no
        // well-formed entry, so nothing matches.
        let blank = sig.iter().all(|&b| b == b' ');
        let want = if blank { 400 } else { 401 };
        assert_eq!(
            r.status,
            want,
            "odd signature header {:?}: {:?}",
            String::from_utf8_lossy(&sig),
            r.text()
        );
    }
    for (name, val) in [
        ("svix-id", vec![0xff, 0xfe]),
        ("svix-timestamp", vec![0xff, b'1']),
        ("svix-timestamp", "١٢٣".as_bytes().to_vec()),
    ] {
        let h = replace(&d.headers(), name, &val);
        let r = s.post_raw(&h, &d.body).await;
        assert!(
            r.status == 400 || r.status == 401,
            "odd {name}: got {} {:?}",
            r.status,
            r.text()
        );
    }
    assert_status(&s.get("/healthz").await, 200, "healthz after odd headers");
    assert_status(
        &s.deliver(&d).await,
        200,
        "the genuine delivery still works",
    );
}

/// Several deliveries on one keep-alive connection, as Svix sends them.
#[tokio::test]
async fn deliveries_share_a_keep_alive_connection() {
    use http_body_util::{BodyExt as _, Full};
    let s = inproc::start_default();
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let d = delivery(created_body());
        let mut req = hyper::Request::post(s.path.as_str()).header("host", s.addr.to_string());
        for (k, v) in d.headers() {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(hyper::body::Bytes::from(d.body.clone())))
            .unwrap();
        sender.ready().await.expect("connection still open");
        let res = sender
            .send_request(req)
            .await
            .expect("answered on the same connection");
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(count(&s.db(), "webhook_events"), 3);
}

/// A client that stops sending cannot hold a connection: a stalled body is
/// answered 408, stalled headers get the connection closed, both within the
/// 10 s limits (checked loosely: well before 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = inproc::start_default();
    let d = delivery(created_body());
    let mut head = raw_head(s.addr, &s.path, &d.headers(), &[]);
    // Promise a body, send a third of it, then stall.
    let declared = format!("content-length: {}\r\n\r\n", d.body.len());
    head.truncate(head.len() - 2);
    head.extend_from_slice(declared.as_bytes());
    let stalled_body = async {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&head).await.unwrap();
        c.write_all(&d.body[..d.body.len() / 3]).await.unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let stalled_headers = async {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /api/clerk-webhook HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer).await;
    };
    let started = Instant::now();
    let (answer, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(stalled_body, stalled_headers)
    })
    .await
    .expect("both stalled connections are closed by the server");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "cut off too early"
    );
    assert_eq!(count(&s.db(), "webhook_events"), 0);
}

/// Signature entries split over two header lines (some proxies and clients
/// do that) are all tried.
#[tokio::test]
async fn signature_entries_over_several_header_lines() {
    let s = inproc::start_default();
    let d = delivery(created_body());
    let wrong = sign(OTHER_SECRET, &d.id, &d.ts, &d.body);
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("svix-timestamp", &d.ts),
        ("svix-signature", &wrong),
        ("svix-signature", &d.sig),
    ]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        200,
        "valid entry on the second line",
    );

    let d = delivery(created_body());
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("svix-timestamp", &d.ts),
        ("svix-signature", &wrong),
        (
            "svix-signature",
            "v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldQo=",
        ),
    ]);
    assert_status(
        &s.post(&s.path, &h, &d.body).await,
        401,
        "no valid entry on any line",
    );

    // An entry that is not even ASCII is skipped like any malformed one,
    // on the same line as the valid entry or on a line of its own.
    let odd: &[u8] = b"v1,\xc3\xa9";
    let d = delivery(created_body());
    let mut same_line = odd.to_vec();
    same_line.extend_from_slice(format!(" {}", d.sig).as_bytes());
    let h = replace(&d.headers(), "svix-signature", &same_line);
    let r = s.post_raw(&h, &d.body).await;
    assert_status(&r, 200, "valid entry after a non-ASCII one");
    let d = delivery(created_body());
    let mut h = replace(&d.headers(), "svix-signature", odd);
    h.push(("svix-signature".into(), d.sig.clone().into_bytes()));
    let r = s.post_raw(&h, &d.body).await;
    assert_status(&r, 200, "valid entry on the line after a non-ASCII one");
    let d = delivery(created_body());
    let h = replace(&d.headers(), "svix-signature", odd);
    let r = s.post_raw(&h, &d.body).await;
    assert_status(&r, 401, "only a non-ASCII entry");
    r.assert_json_reason();
}

/// Refused before its body was read, a request is answered after the body
/// is read away (so a client that sends it whole first still gets the
/// answer), and the answer says the connection closes.
#[tokio::test]
async fn refused_before_the_body_the_connection_is_closed_openly() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = inproc::start_default();
    let body = created_body();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.path,
        body.len()
    );
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes after answering")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("\"ok\":false"), "{answer}");
}

/// A client that pipelines requests and never reads the answers: once the
/// socket buffers are full the server cannot write, and after 10 s without
/// progress it drops the connection instead of holding it (and a file and
/// megabytes of buffer) forever. Reading afterwards gets the answers that
/// were buffered, then the end, far short of one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const REQUESTS: usize = 60_000;
    let s = inproc::start_default();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // A path with a cheap answer (404): the server fills the socket buffers
    // and stalls well before the client looks again.
    let pipelined = b"GET /nothing-here HTTP/1.1\r\nhost: x\r\n\r\n".repeat(REQUESTS);
    // The server stops reading once it cannot write, so this never finishes
    // on its own; it is abandoned with the connection.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&pipelined).await;
        wr
    });
    tokio::time::sleep(Duration::from_secs(14)).await;
    // Meanwhile everyone else is served.
    assert_status(&s.get("/healthz").await, 200, "another client");
    let mut answers = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut answers)).await;
    writer.abort();
    assert!(read.is_ok(), "the connection was still open after 34 s");
    let answered = answers.windows(12).filter(|w| w == b"HTTP/1.1 404").count();
    assert!(
        answered < REQUESTS,
        "all {REQUESTS} pipelined requests were answered: the stalled connection was kept"
    );
    assert_status(
        &s.deliver(&delivery(created_body())).await,
        200,
        "a delivery after",
    );
}

/// Changes one byte, cuts the value short, or adds a byte (printable ASCII).
fn damage(v: &mut Vec<u8>, rng: &mut Rng) {
    let byte = 0x20 + rng.below(0x5f) as u8;
    match rng.below(3) {
        0 if !v.is_empty() => {
            let at = rng.below(v.len() as u64) as usize;
            v[at] = byte;
        }
        1 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
        _ => v.push(byte),
    }
}

/// [`damage`] for a header value, which cannot keep edge spaces.
fn damage_text(s: &mut String, rng: &mut Rng) {
    let mut v = std::mem::take(s).into_bytes();
    damage(&mut v, rng);
    *s = String::from_utf8(v).unwrap().trim().to_owned();
}

/// Randomly damaged deliveries (header values, body bytes, truncation) are
/// refused with a 4xx, never a 5xx, nothing damaged is recorded, and the
/// server keeps answering. Seeded, so a failure can be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_deliveries_never_crash_or_land() {
    const SEED: u64 = 0x5EED_C1E4;
    const ROUNDS: usize = 150;
    let s = inproc::start_default();
    let mut rng = Rng::new(SEED);
    for round in 0..ROUNDS {
        let d = delivery(created_body());
        let (mut id, mut ts, mut sig, mut body) =
            (d.id.clone(), d.ts.clone(), d.sig.clone(), d.body.clone());
        let target = rng.below(4);
        match target {
            0 => damage_text(&mut id, &mut rng),
            1 => damage_text(&mut ts, &mut rng),
            2 => damage_text(&mut sig, &mut rng),
            _ => damage(&mut body, &mut rng),
        }
        let changed = id != d.id || ts != d.ts || sig != d.sig || body != d.body;
        let h = hdrs(&[
            ("svix-id", &id),
            ("svix-timestamp", &ts),
            ("svix-signature", &sig),
        ]);
        let r = s.post(&s.path, &h, &body).await;
        if !changed {
            assert_eq!(r.status, 200, "seed {SEED:#x} round {round}: undamaged");
            continue;
        }
        assert!(
            matches!(r.status, 400 | 401),
            "seed {SEED:#x} round {round}: damaged part {target} ({id:?} {ts:?} {sig:?} vs {:?}) got {}: {}",
            d.sig,
            r.status,
            r.text()
        );
        r.assert_json_reason();
        assert_eq!(event_count_for(&s.db(), &id), 0, "round {round}");
    }
    assert_status(&s.get("/healthz").await, 200, "still healthy");
}
