//! Signature verification and secret handling.

use serde_json::Value;

use crate::support::inproc::{self, InProc, Settings};
use crate::support::process::{run_to_end, Finished, Options, Process};
use crate::support::*;

fn vectors() -> Value {
    fixture_json("standard-webhooks-vectors.json")
}

fn vector_payload(v: &Value) -> Vec<u8> {
    if let Some(p) = v["payload"].as_str() {
        return p.as_bytes().to_vec();
    }
    let g = &v["payload_generator"];
    let ch = g["repeat_char"].as_str().expect("repeat_char");
    let n = g["count"].as_u64().expect("count") as usize;
    ch.repeat(n).into_bytes()
}

/// The test signer agrees with every published (and derived) `v1` vector, so
/// every signature the other tests send is anchored to the spec, not to the
/// binary.
#[test]
fn sign_helper_matches_every_valid_hmac_vector() {
    let v = vectors();
    let list = v["valid_hmac"].as_array().expect("valid_hmac");
    assert!(list.len() >= 3, "vectors file lost its entries");
    for e in list {
        let name = e["name"].as_str().unwrap();
        let got = sign(
            e["secret"].as_str().unwrap(),
            e["msg_id"].as_str().unwrap(),
            e["timestamp"].as_str().unwrap(),
            &vector_payload(e),
        );
        assert_eq!(
            got,
            e["expected_signature"].as_str().unwrap(),
            "vector {name}"
        );
    }
    // The same key with and without the prefix signs the same.
    let canon = &list[0];
    let bare = canon["secret"]
        .as_str()
        .unwrap()
        .trim_start_matches("whsec_");
    assert_eq!(
        sign(
            bare,
            canon["msg_id"].as_str().unwrap(),
            canon["timestamp"].as_str().unwrap(),
            &vector_payload(canon)
        ),
        canon["expected_signature"].as_str().unwrap()
    );
}

/// The vectors use fixed timestamps from years ago; this tolerance admits them.
fn vector_tolerance() -> u64 {
    (now_secs() - 1_614_265_330 + 30 * 86_400) as u64
}

fn vector_server() -> InProc {
    let v = vectors();
    let mut secrets: Vec<String> = v["valid_hmac"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["secret"].as_str().unwrap().to_string())
        .collect();
    secrets.dedup();
    inproc::start(Settings {
        secrets: secrets.join(" "),
        tolerance: vector_tolerance(),
        ..Settings::default()
    })
}

fn vector_headers(id: &str, ts: &str, sig: &str) -> Vec<(String, Vec<u8>)> {
    hdrs(&[
        ("svix-id", id),
        ("svix-timestamp", ts),
        ("svix-signature", sig),
    ])
}

/// Published vectors against the server: valid ones verify (and then fail
/// only as "not a Clerk event", 400), invalid ones are 401.
#[tokio::test]
async fn server_verifies_published_vectors() {
    let s = vector_server();
    let v = vectors();

    for e in v["valid_hmac"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let r = s
            .post(
                &s.path,
                &vector_headers(
                    e["msg_id"].as_str().unwrap(),
                    e["timestamp"].as_str().unwrap(),
                    e["expected_signature"].as_str().unwrap(),
                ),
                &vector_payload(e),
            )
            .await;
        assert_status(
            &r,
            400,
            &format!("valid vector {name} verifies but is not a Clerk event"),
        );
    }

    for e in v["multi_signature_header"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let want = if e["expect"] == "valid" { 400 } else { 401 };
        let r = s
            .post(
                &s.path,
                &vector_headers(
                    e["msg_id"].as_str().unwrap(),
                    e["timestamp"].as_str().unwrap(),
                    e["signature_header"].as_str().unwrap(),
                ),
                &vector_payload(e),
            )
            .await;
        assert_status(&r, want, &format!("multi-signature vector {name}"));
    }

    for e in v["invalid_signature_header"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let header = e["signature_header"].as_str().unwrap();
        let r = s
            .post(
                &s.path,
                &vector_headers(
                    e["msg_id"].as_str().unwrap(),
                    e["timestamp"].as_str().unwrap(),
                    header,
                ),
                &vector_payload(e),
            )
            .await;
        if header.is_empty() {
            // An empty header is "missing" (400) or "no well-formed entry" (401).
            assert!(
                r.status == 400 || r.status == 401,
                "empty signature header: got {} {:?}",
                r.status,
                r.text()
            );
        } else {
            assert_status(&r, 401, &format!("invalid vector {name}"));
        }
        r.assert_json_reason();
    }

    // The canonical signature must not verify the compact re-serialization.
    let canon = &v["valid_hmac"][0];
    let compact = v["valid_hmac"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "derived_compact_json_variant")
        .expect("compact vector");
    let r = s
        .post(
            &s.path,
            &vector_headers(
                canon["msg_id"].as_str().unwrap(),
                canon["timestamp"].as_str().unwrap(),
                canon["expected_signature"].as_str().unwrap(),
            ),
            &vector_payload(compact),
        )
        .await;
    assert_status(&r, 401, "canonical signature over re-serialized body");

    // ed25519 `v1a` entries are skipped, so a header with only v1a is 401.
    for e in v["valid_ed25519"].as_array().unwrap() {
        let r = s
            .post(
                &s.path,
                &vector_headers(
                    e["msg_id"].as_str().unwrap(),
                    e["timestamp"].as_str().unwrap(),
                    e["expected_signature"].as_str().unwrap(),
                ),
                &vector_payload(e),
            )
            .await;
        assert_status(&r, 401, "v1a-only header");
    }

    // Still healthy after all of that.
    assert_status(&s.get("/healthz").await, 200, "healthz after vectors");
    assert_eq!(count(&s.db(), "webhook_events"), 0);
}

fn created_body() -> Vec<u8> {
    let id = unique_user_id();
    user_event(
        "user.created",
        &user_data(&id, 1_700_000_000_000, 1_700_000_000_000),
    )
}

async fn post_with_sig(s: &Endpoint, d: &Delivery, sig: &str) -> Resp {
    let h = hdrs(&[
        ("svix-id", &d.id),
        ("svix-timestamp", &d.ts),
        ("svix-signature", sig),
    ]);
    s.post(&s.path, &h, &d.body).await
}

fn sig_b64(sig: &str) -> &str {
    sig.trim_start_matches("v1,")
}

#[tokio::test]
async fn wrong_signatures_are_401_and_write_nothing() {
    let s = inproc::start_default();
    let d = delivery(created_body());
    let correct = d.sig.clone();
    let other = Delivery {
        sig: sign(OTHER_SECRET, &d.id, &d.ts, &d.body),
        ..d.clone()
    };
    // Flip one byte of the correct signature's decoded value.
    let tampered = {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::STANDARD;
        let mut raw = e.decode(sig_b64(&correct)).unwrap();
        raw[0] ^= 1;
        format!("v1,{}", e.encode(raw))
    };
    let cases: Vec<(&str, String)> = vec![
        ("tampered signature", tampered),
        ("signed with another secret", other.sig.clone()),
        ("version only", "v1,".to_string()),
        ("garbage", "garbage".to_string()),
        (
            "correct bytes under v2",
            format!("v2,{}", sig_b64(&correct)),
        ),
        (
            "correct bytes under v1a",
            format!("v1a,{}", sig_b64(&correct)),
        ),
        ("no comma", sig_b64(&correct).to_string()),
        ("truncated", correct[..correct.len() - 4].to_string()),
        ("not base64", "v1,!!!!not-base64!!!!".to_string()),
        (
            "several malformed",
            format!("v1, ,v1 v2,{} x,y ,", sig_b64(&correct)),
        ),
    ];
    for (what, sig) in cases {
        let r = post_with_sig(&s, &d, &sig).await;
        assert_status(&r, 401, what);
        r.assert_json_reason();
        assert!(
            !r.text().contains(sig_b64(&correct)),
            "{what}: error body echoes the expected signature"
        );
    }
    // Signature made for another timestamp, id or body.
    let ts2 = (d.ts.parse::<i64>().unwrap() - 1).to_string();
    let mismatched = [
        ("timestamp differs", sign(SECRET, &d.id, &ts2, &d.body)),
        ("id differs", sign(SECRET, "msg_other", &d.ts, &d.body)),
        ("body differs", sign(SECRET, &d.id, &d.ts, b"{}")),
    ];
    for (what, sig) in mismatched {
        assert_status(&post_with_sig(&s, &d, &sig).await, 401, what);
    }
    // Re-serialized body (same JSON, different bytes) with the original signature.
    let reser =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&d.body).unwrap()).unwrap();
    let r = s.post(&s.path, &d.headers(), &reser).await;
    assert_status(&r, 401, "re-serialized body");

    let c = s.db();
    assert_eq!(
        count(&c, "webhook_events"),
        0,
        "rejected deliveries are recorded"
    );
    assert_eq!(count(&c, "users"), 0, "rejected deliveries changed users");

    // Finally the genuine delivery of the same id is accepted.
    assert_status(&s.deliver(&d).await, 200, "the genuine delivery");
}

#[tokio::test]
async fn any_matching_v1_entry_is_enough() {
    let s = inproc::start_default();
    let d = delivery(created_body());
    let wrong = sign(OTHER_SECRET, &d.id, &d.ts, &d.body);
    let header = format!(
        "{wrong} v2,{} v1a,AAAA {} v1,{}",
        sig_b64(&d.sig),
        d.sig,
        sig_b64(&wrong)
    );
    let r = post_with_sig(&s, &d, &header).await;
    assert_status(&r, 200, "correct v1 in the middle");
    assert!(event_row(&s.db(), &d.id).is_some());
}

#[tokio::test]
async fn timestamp_tolerance_both_directions() {
    let s = inproc::start(Settings {
        tolerance: 30,
        ..Settings::default()
    });
    let body = created_body();
    let at = |offset: i64| {
        let id = unique_msg_id();
        let ts = (now_secs() + offset).to_string();
        let sig = sign(SECRET, &id, &ts, &body);
        Delivery {
            id,
            ts,
            body: body.clone(),
            sig,
        }
    };
    for off in [-33, 33, -3600, 3600] {
        let r = s.deliver(&at(off)).await;
        assert_status(&r, 401, &format!("timestamp {off:+} s with --tolerance 30"));
        r.assert_json_reason();
    }
    // A timestamp in milliseconds, or any far-off 64-bit one, is a
    // well-formed integer, far outside the window.
    let far_off = [
        now_ms().to_string(),
        (now_ms() * 1000).to_string(),
        i64::MAX.to_string(),
    ];
    for ts in far_off {
        let id = unique_msg_id();
        let sig = sign(SECRET, &id, &ts, &body);
        let r = s
            .deliver(&Delivery {
                id,
                ts: ts.clone(),
                body: body.clone(),
                sig,
            })
            .await;
        assert_status(&r, 401, &format!("timestamp {ts}"));
        r.assert_json_reason();
    }
    assert_eq!(count(&s.db(), "webhook_events"), 0);

    for off in [-27, 27, 0] {
        let r = s.deliver(&at(off)).await;
        assert_status(&r, 200, &format!("timestamp {off:+} s with --tolerance 30"));
    }
}

#[tokio::test]
async fn default_tolerance_is_300_seconds() {
    let s = Process::start();
    let body = created_body();
    for (off, want) in [(-305, 401), (305, 401), (-290, 200), (290, 200)] {
        let id = unique_msg_id();
        let ts = (now_secs() + off).to_string();
        let sig = sign(SECRET, &id, &ts, &body);
        let r = s
            .deliver(&Delivery {
                id,
                ts,
                body: body.clone(),
                sig,
            })
            .await;
        assert_status(&r, want, &format!("timestamp {off:+} s, default tolerance"));
    }
}

#[tokio::test]
async fn error_bodies_and_logs_never_contain_secret_or_expected_signature() {
    let s = Process::start();
    let d = delivery(created_body());
    let secret_b64 = SECRET.trim_start_matches("whsec_");
    let wrong = sign(OTHER_SECRET, &d.id, &d.ts, &d.body);
    let mut bodies = Vec::new();
    bodies.push(post_with_sig(&s, &d, &wrong).await);
    bodies.push(post_with_sig(&s, &d, "v1,").await);
    let stale = {
        let ts = (now_secs() - 10_000).to_string();
        let sig = sign(SECRET, &d.id, &ts, &d.body);
        Delivery {
            ts,
            sig,
            ..d.clone()
        }
    };
    bodies.push(s.deliver(&stale).await);
    for r in &bodies {
        assert_eq!(r.status, 401, "{:?}", r.text());
        let t = r.text();
        assert!(!t.contains(secret_b64), "body echoes the secret: {t}");
        assert!(
            !t.contains(sig_b64(&d.sig)),
            "body echoes expected signature: {t}"
        );
        assert!(
            !t.contains(sig_b64(&stale.sig)),
            "body echoes expected signature: {t}"
        );
    }
    assert_status(&s.deliver(&d).await, 200, "genuine");
    let logs = s.logs();
    assert!(
        !logs.contains(secret_b64),
        "logs contain the secret:\n{logs}"
    );
    assert!(
        !logs.contains(sig_b64(&stale.sig)),
        "logs contain an expected signature:\n{logs}"
    );
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn two_secrets_comma_or_whitespace_separated() {
    for env in [
        format!("{SECRET},{SECRET_B}"),
        format!("  {SECRET}\n\t{SECRET_B}  "),
        format!("{SECRET}, {SECRET_B}"),
    ] {
        let s = inproc::start(Settings {
            secrets: env.clone(),
            ..Settings::default()
        });
        for secret in [SECRET, SECRET_B] {
            let d = Delivery::with_secret(secret, created_body());
            let r = s.deliver(&d).await;
            assert_status(
                &r,
                200,
                &format!("signed with one of two secrets ({env:?})"),
            );
        }
        let d = Delivery::with_secret(OTHER_SECRET, created_body());
        assert_status(&s.deliver(&d).await, 401, "unknown secret");
    }
}

/// During rotation both endpoints deliver the same svix-id; it is applied once.
#[tokio::test]
async fn same_id_under_each_secret_is_applied_once() {
    let s = inproc::start(Settings {
        secrets: format!("{SECRET} {SECRET_B}"),
        ..Settings::default()
    });
    let uid = unique_user_id();
    let mut data = user_data(&uid, 1_700_000_000_000, 1_700_000_000_000);
    let first = Delivery::with_secret(SECRET, user_event("user.created", &data));
    assert_status(&s.deliver(&first).await, 200, "first endpoint");
    let row1 = user_row(&s.db(), &uid).expect("row");

    data["first_name"] = "Changed".into();
    data["updated_at"] = 1_700_000_999_000i64.into();
    let second = first.same_id_new_body(SECRET_B, user_event("user.created", &data));
    assert_status(
        &s.deliver(&second).await,
        200,
        "second endpoint, same svix-id",
    );

    let c = s.db();
    assert_eq!(
        user_row(&c, &uid).unwrap(),
        row1,
        "second copy changed the row"
    );
    assert_eq!(event_count_for(&c, &first.id), 1);
    assert_eq!(count(&c, "webhook_events"), 1);
}

#[tokio::test]
async fn secret_without_whsec_prefix_is_base64() {
    let bare = SECRET.trim_start_matches("whsec_");
    let s = inproc::start(Settings {
        secrets: bare.to_string(),
        ..Settings::default()
    });
    // The prefixed and bare forms are the same key.
    let d = Delivery::with_secret(SECRET, created_body());
    assert_status(&s.deliver(&d).await, 200, "bare base64 secret");
    // Using the text itself as raw key bytes would be wrong.
    let id = unique_msg_id();
    let ts = now_secs().to_string();
    let body = created_body();
    let raw_key_sig = {
        use ring::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, bare.as_bytes());
        let msg = [id.as_bytes(), b".", ts.as_bytes(), b".", &body].concat();
        use base64::Engine as _;
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, &msg).as_ref())
        )
    };
    let r = s
        .deliver(&Delivery {
            id,
            ts,
            body,
            sig: raw_key_sig,
        })
        .await;
    assert_status(&r, 401, "secret text used as raw bytes");
}

#[tokio::test]
async fn secret_file_replaces_env_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    // As systemd credentials usually are: trailing newline.
    std::fs::write(&file, format!("{SECRET_B}\n")).unwrap();
    let s = Process::with(Options {
        secret_env: Some(SECRET.to_string()),
        secret_file: Some(file),
        ..Options::default()
    });
    let d = Delivery::with_secret(SECRET_B, created_body());
    assert_status(&s.deliver(&d).await, 200, "signed with the file's secret");
    let d = Delivery::with_secret(SECRET, created_body());
    assert_status(
        &s.deliver(&d).await,
        401,
        "signed with the env secret the file replaced",
    );
}

#[tokio::test]
async fn secret_file_from_env_var_with_two_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets");
    std::fs::write(&file, format!("{SECRET_B},\n{OTHER_SECRET}\n")).unwrap();
    let s = Process::with(Options {
        secret_env: None,
        extra_env: vec![(
            "CLERK_WEBHOOK_SIGNING_SECRET_FILE".into(),
            file.to_string_lossy().into_owned(),
        )],
        ..Options::default()
    });
    for secret in [SECRET_B, OTHER_SECRET] {
        let d = Delivery::with_secret(secret, created_body());
        assert_status(
            &s.deliver(&d).await,
            200,
            "secret from CLERK_WEBHOOK_SIGNING_SECRET_FILE",
        );
    }
    let d = Delivery::with_secret(SECRET, created_body());
    assert_status(&s.deliver(&d).await, 401, "secret not configured");
}

fn assert_refused(f: &Finished, what: &str, must_mention: &[&str], must_not_contain: &[&str]) {
    assert!(
        !f.status.success(),
        "{what}: serve should refuse to start, exited {:?}\nstderr: {}",
        f.status,
        f.stderr
    );
    assert!(
        f.status.code().is_some(),
        "{what}: killed by a signal, not a clean refusal"
    );
    let lines: Vec<&str> = f.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one line on stderr, got:\n{}",
        f.stderr
    );
    let line = lines[0].to_lowercase();
    assert!(
        line.contains("secret"),
        "{what}: message does not name the secret: {}",
        lines[0]
    );
    for m in must_mention {
        assert!(
            line.contains(&m.to_lowercase()),
            "{what}: message should mention {m:?}: {}",
            lines[0]
        );
    }
    for bad in must_not_contain {
        assert!(
            !f.stderr.contains(bad),
            "{what}: stderr shows the secret text"
        );
        assert!(
            !f.stdout.contains(bad),
            "{what}: stdout shows the secret text"
        );
    }
}

#[test]
fn refuses_to_start_without_a_usable_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let db = db.to_str().unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0", "--db", db];

    let f = run_to_end(&args, &[]);
    assert_refused(&f, "no secret", &["CLERK_WEBHOOK_SIGNING_SECRET"], &[]);

    let f = run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", "")]);
    assert_refused(&f, "empty secret", &[], &[]);

    let f = run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", "   ")]);
    assert_refused(&f, "blank secret", &[], &[]);

    let f = run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_")]);
    assert_refused(&f, "whsec_ with nothing after it", &["empty"], &[]);

    let bad = "whsec_Sentinel*not*base64*Zq9";
    let f = run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", bad)]);
    assert_refused(
        &f,
        "invalid base64",
        &["base64"],
        &["Sentinel*not*base64*Zq9"],
    );

    // A good secret next to a bad one is still refused, without showing either.
    let mixed = format!("{SECRET},whsec_Sentinel%%%Zq9");
    let f = run_to_end(&args, &[("CLERK_WEBHOOK_SIGNING_SECRET", &mixed)]);
    assert_refused(
        &f,
        "one invalid among two",
        &["base64"],
        &["Sentinel%%%Zq9", SECRET.trim_start_matches("whsec_")],
    );

    // Empty secret file.
    let empty = dir.path().join("empty-secret");
    std::fs::write(&empty, "\n").unwrap();
    let mut a = args.to_vec();
    a.extend(["--secret-file", empty.to_str().unwrap()]);
    let f = run_to_end(&a, &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)]);
    assert_refused(
        &f,
        "empty --secret-file",
        &[],
        &[SECRET.trim_start_matches("whsec_")],
    );

    // Nothing was listening, so no database work should have been required;
    // either way the process is gone (run_to_end waited for it).
}

/// A setting given as the empty string (`Environment=NAME=` in a unit, or
/// a template line uncommented as it is) counts as not given.
#[tokio::test]
async fn empty_settings_count_as_not_given() {
    let s = Process::with(Options {
        extra_env: vec![
            ("CLERK_WEBHOOK_SIGNING_SECRET_FILE".into(), String::new()),
            ("CLERK_SYNC_TOLERANCE".into(), String::new()),
            ("CLERK_SYNC_MAX_BODY".into(), String::new()),
            ("CLERK_SYNC_LOG_FORMAT".into(), String::new()),
            // Which would otherwise turn off every log line, the one with
            // the bound address (that this start waits for) included.
            ("RUST_LOG".into(), String::new()),
        ],
        ..Options::default()
    });
    let d = delivery(br#"{"type":"user.created","data":{"id":"user_e"}}"#.to_vec());
    assert_status(&s.deliver(&d).await, 200, "with empty settings");
    // A --max-body of 0 would refuse every delivery: not a setting.
    let f = run_to_end(
        &["serve", "--max-body", "0"],
        &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)],
    );
    assert!(!f.status.success());
    assert!(f.stderr.contains("--max-body"), "{}", f.stderr);
}

/// Log lines quote paths and addresses as typed; a secret in one is cut.
#[tokio::test]
async fn log_lines_never_show_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let body = SECRET.trim_start_matches("whsec_");
    let mut s = Process::with(Options {
        db: Some(dir.path().join(format!("x{body}.db"))),
        ..Options::default()
    });
    assert_status(&s.get("/healthz").await, 200, "a server on that path");
    assert!(s.stop().success());
    let logs = s.logs();
    assert!(logs.contains("listening on"), "{logs}");
    assert!(!logs.contains(body), "the log shows the secret:\n{logs}");
}

#[test]
fn help_never_shows_the_secret() {
    let sentinel = "whsec_SGVscFNlbnRpbmVsU2VjcmV0VmFsdWUxMjM0NTY=";
    let b64 = sentinel.trim_start_matches("whsec_");
    for args in [
        &["--help"][..],
        &["serve", "--help"][..],
        &["help", "serve"][..],
    ] {
        let f = run_to_end(args, &[("CLERK_WEBHOOK_SIGNING_SECRET", sentinel)]);
        assert!(
            f.status.success(),
            "{args:?} exit {:?}: {}",
            f.status,
            f.stderr
        );
        let all = format!("{}{}", f.stdout, f.stderr);
        assert!(!all.is_empty(), "{args:?} printed nothing");
        assert!(!all.contains(b64), "{args:?} shows the secret:\n{all}");
        assert!(
            !all.contains("whsec_...."),
            "{args:?} mangles the help:\n{all}"
        );
    }
    // Nor a secret file variable that holds a secret instead of a path.
    let f = run_to_end(
        &["serve", "--help"],
        &[("CLERK_WEBHOOK_SIGNING_SECRET_FILE", b64)],
    );
    assert!(
        !f.stdout.contains(b64),
        "help shows the secret:\n{}",
        f.stdout
    );
    // Nor does the error for a secret typed where it does not belong, with
    // or without its prefix, in any argument.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let db = db.to_str().unwrap();
    for secret in [sentinel, b64] {
        let nowhere = format!("/nonexistent/{secret}");
        for args in [
            &["serve", secret][..],
            &["serve", "--tolerance", secret][..],
            &["serve", &format!("--secret={secret}")][..],
            &["serve", "--secret-file", secret][..],
            &["serve", "--db", db, "--listen", secret][..],
            &["serve", "--listen", "127.0.0.1:0", "--db", &nowhere][..],
            &["sign", "--bogus", secret][..],
            &["sign", secret][..],
            &[
                "verify",
                secret,
                "--id",
                "a",
                "--timestamp",
                "1",
                "--signature",
                "v1,x",
            ][..],
            &["send", secret, "--url", "http://127.0.0.1:1/x"][..],
            &["status", "--db", secret][..],
        ] {
            let f = run_to_end(args, &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)]);
            assert!(!f.status.success(), "{args:?} was accepted");
            let all = format!("{}{}", f.stdout, f.stderr);
            assert!(all.contains("error"), "{args:?} said nothing: {all}");
            assert!(!all.contains(b64), "{args:?} shows the secret:\n{all}");
        }
    }
    // The configured secret is cut wherever it stands, also glued to other
    // text where no guess would find it.
    let body = SECRET.trim_start_matches("whsec_");
    let listen = format!("127.0.0.1:{body}");
    let glued = format!("x{body}.db");
    for args in [
        &["serve", "--listen", &listen, "--db", db][..],
        &["status", "--db", &glued][..],
    ] {
        let f = run_to_end(args, &[("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)]);
        let all = format!("{}{}", f.stdout, f.stderr);
        assert!(
            !f.status.success() && all.contains("error"),
            "{args:?}: {all}"
        );
        assert!(!all.contains(body), "{args:?} shows the secret:\n{all}");
    }
    // Nor when the secret is in a file, for errors that come before it is
    // loaded, nor in verify's verdict.
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).unwrap();
    let file = file.to_str().unwrap();
    let tolerance = format!("x-{body}");
    for (args, env) in [
        (
            &["serve", "--tolerance", &tolerance][..],
            ("CLERK_WEBHOOK_SIGNING_SECRET_FILE", file),
        ),
        (
            &["status", "--db", &glued][..],
            ("CLERK_WEBHOOK_SIGNING_SECRET_FILE", file),
        ),
        (
            &[
                "verify",
                db,
                "--id",
                "msg_1",
                "--timestamp",
                SECRET,
                "--signature",
                "v1,x",
            ][..],
            ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
        ),
    ] {
        let f = run_to_end(args, &[env]);
        let all = format!("{}{}", f.stdout, f.stderr);
        assert!(!f.status.success(), "{args:?}: {all}");
        assert!(!all.contains(body), "{args:?} shows the secret:\n{all}");
    }
    // A path that only looks random in places is named as it is.
    let path = "/nonexistent/Documents2024/ClerkSync2025Mirror/users.db";
    let f = run_to_end(&["status", "--db", path], &[]);
    assert!(f.stderr.contains(path), "{}", f.stderr);
    // The serve help documents the flags of the contract.
    let f = run_to_end(
        &["serve", "--help"],
        &[("CLERK_WEBHOOK_SIGNING_SECRET", sentinel)],
    );
    for flag in [
        "--listen",
        "--db",
        "--path",
        "--secret-file",
        "--tolerance",
        "--max-body",
    ] {
        assert!(
            f.stdout.contains(flag),
            "serve --help lacks {flag}:\n{}",
            f.stdout
        );
    }
}
