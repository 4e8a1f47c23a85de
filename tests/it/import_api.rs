//! The import client against the fake Clerk Backend API over loopback:
//! paging, the endpoints' shapes, `429`s, retries, `401`/`403`, pacing, TLS.
//! Timings are asserted only as lower bounds of waits.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clerk_sync::import::{ApiClient, ApiError, ApiOptions, Kind, SecretKey};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::fake_clerk::{self, Data, FakeClerk, Fault};

const KEY: &str = "sk_test_RmFrZUNsZXJrVGVzdEtleTAxMjM0NTY3ODlhYmNkZWY";
const LIVE_KEY: &str = "sk_live_TGl2ZUZha2VDbGVya0tleTAxMjM0NTY3ODlhYmNkZWY";
const T0: i64 = 1_737_440_173_260;

fn key(text: &str) -> SecretKey {
    SecretKey::new(text).unwrap()
}

/// No pacing and short waits, so retries cost milliseconds.
fn fast() -> ApiOptions {
    ApiOptions {
        rate: None,
        timeout: Duration::from_secs(10),
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        default_retry_after: Duration::from_millis(300),
        ..ApiOptions::default()
    }
}

fn client(fake: &FakeClerk, options: ApiOptions) -> ApiClient {
    ApiClient::with_options(&fake.url(), key(KEY), options).unwrap()
}

/// `n` users, stored newest first so the fake's sorting is what orders them.
fn users(n: usize) -> Vec<Value> {
    (0..n)
        .rev()
        .map(|i| fake_clerk::user(&format!("user_{i:05}"), T0 + i as i64 * 1000))
        .collect()
}

fn id(raw: &RawValue) -> String {
    let v: Value = serde_json::from_str(raw.get()).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn walk(client: &ApiClient, kind: Kind, limit: u32) -> Vec<String> {
    let mut pages = client.pages(kind, limit);
    let mut ids = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.len() <= limit as usize);
        ids.extend(page.iter().map(|o| id(o)));
    }
    assert!(pages.is_done());
    assert_eq!(pages.offset(), ids.len() as u64);
    ids
}

/// What the fake answers a request sent by hand, for its shapes.
async fn raw_get(fake: &FakeClerk, path: &str) -> (StatusCode, Value) {
    let stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, fake.addr().to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// The most of `times` (in order) within any one second, both ends in.
fn most_in_a_second(times: &[Instant]) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) <= Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn gap(fake: &FakeClerk, a: usize, b: usize) -> Duration {
    let seen = fake.requests();
    seen[b].at.duration_since(seen[a].at)
}

#[tokio::test]
async fn paging_gets_every_object_once_oldest_first_whatever_the_limit() {
    for (count, limits) in [(240, &[1, 7, 240][..]), (1001, &[100, 500][..])] {
        let fake = FakeClerk::start(
            KEY,
            Data {
                users: users(count),
                ..Data::default()
            },
        )
        .await;
        let client = client(&fake, fast());
        let expected: Vec<String> = (0..count).map(|i| format!("user_{i:05}")).collect();
        let mut sent = 0;
        for &limit in limits {
            assert_eq!(
                walk(&client, Kind::Users, limit).await,
                expected,
                "limit {limit}"
            );
            // A full last page costs one more request, which comes back empty.
            let pages = count / limit as usize + 1;
            sent += pages;
            assert_eq!(fake.requests().len(), sent, "limit {limit}");
        }
    }
}

#[tokio::test]
async fn objects_created_during_a_walk_are_still_listed() {
    let fake = FakeClerk::start(
        KEY,
        Data {
            users: users(25),
            ..Data::default()
        },
    )
    .await;
    let client = client(&fake, fast());
    let mut pages = client.pages(Kind::Users, 10);
    let mut ids: Vec<String> = pages
        .next_page()
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|o| id(o))
        .collect();
    // Newest first, as Clerk's default order, would shift every later page.
    fake.data()
        .users
        .extend((25..28).map(|i| fake_clerk::user(&format!("user_{i:05}"), T0 + i * 1000)));
    while let Some(page) = pages.next_page().await.unwrap() {
        ids.extend(page.iter().map(|o| id(o)));
    }
    let expected: Vec<String> = (0..28).map(|i| format!("user_{i:05}")).collect();
    assert_eq!(ids, expected);
}

fn org_data() -> Data {
    let org_a = fake_clerk::organization("org_a", T0);
    let org_b = fake_clerk::organization("org_b", T0 + 5);
    Data {
        users: users(3),
        organizations: vec![org_b.clone(), org_a.clone()],
        memberships: vec![
            fake_clerk::membership("orgmem_3", &org_a, "user_00002", T0 + 30),
            fake_clerk::membership("orgmem_1", &org_a, "user_00000", T0 + 10),
            fake_clerk::membership("orgmem_4", &org_b, "user_00000", T0 + 40),
            fake_clerk::membership("orgmem_2", &org_a, "user_00001", T0 + 20),
        ],
        invitations: vec![
            fake_clerk::invitation("orginv_2", "org_b", T0 + 2),
            fake_clerk::invitation("orginv_1", "org_a", T0 + 1),
        ],
    }
}

#[tokio::test]
async fn each_endpoint_has_its_shape_and_is_asked_oldest_first() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    // The fake answers as Clerk does: a bare array for users only.
    let (status, body) = raw_get(&fake, "/v1/users").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_array(), "{body}");
    for path in [
        "/v1/organizations",
        "/v1/organization_memberships",
        "/v1/organization_invitations",
        "/v1/organizations/org_a/memberships",
    ] {
        let (status, body) = raw_get(&fake, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            body["data"].is_array() && body["total_count"].is_u64(),
            "{path}: {body}"
        );
    }
    // Clerk's limits, and why `+` must be encoded.
    for path in [
        "/v1/users?limit=501",
        "/v1/users?limit=5.0",
        "/v1/users?limit=0",
        "/v1/organizations?order_by=+created_at",
        "/v1/organization_invitations?order_by=%2Bname",
    ] {
        let (status, body) = raw_get(&fake, path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(
            body["errors"][0]["code"], "form_param_value_invalid",
            "{path}"
        );
    }
    let (_, body) = raw_get(&fake, "/v1/organization_memberships?limit=2").await;
    assert_eq!(body["data"][0]["id"], "orgmem_4", "newest first by default");

    let before = fake.requests().len();
    let client = client(&fake, fast());
    let ids = |page: Vec<Box<RawValue>>| page.iter().map(|o| id(o)).collect::<Vec<_>>();
    assert_eq!(
        ids(client.list_page(Kind::Users, 0, 2).await.unwrap()),
        ["user_00000", "user_00001"]
    );
    assert_eq!(
        ids(client.list_page(Kind::Organizations, 0, 500).await.unwrap()),
        ["org_a", "org_b"]
    );
    assert_eq!(
        ids(client.list_page(Kind::Memberships, 1, 2).await.unwrap()),
        ["orgmem_2", "orgmem_3"]
    );
    assert_eq!(
        ids(client.list_page(Kind::Invitations, 0, 10).await.unwrap()),
        ["orginv_1", "orginv_2"]
    );
    assert_eq!(client.count_users().await.unwrap(), 3);
    let sent: Vec<String> = fake.requests()[before..]
        .iter()
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect();
    assert_eq!(
        sent,
        [
            "/v1/users?order_by=%2Bcreated_at&limit=2&offset=0",
            "/v1/organizations?include_members_count=true&order_by=%2Bcreated_at&limit=500&offset=0",
            "/v1/organization_memberships?order_by=%2Bcreated_at&limit=2&offset=1",
            "/v1/organization_invitations?order_by=%2Bcreated_at&limit=10&offset=0",
            "/v1/users/count?",
        ]
    );
    assert!(fake.requests()[before..]
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY}"))));
    // Out of Clerk's range: refused before anything is sent.
    for limit in [0, 501] {
        let e = client.list_page(Kind::Users, 0, limit).await.unwrap_err();
        assert!(matches!(e, ApiError::Invalid(_)), "{e}");
    }
    assert_eq!(fake.requests().len(), before + 5);
}

#[tokio::test]
async fn an_organizations_memberships_are_paged_and_an_unknown_one_is_a_404() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = client(&fake, fast());
    let mut pages = client.org_membership_pages("org_a", 2);
    let mut ids = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        ids.extend(page.iter().map(|o| id(o)));
    }
    assert_eq!(ids, ["orgmem_1", "orgmem_2", "orgmem_3"]);
    let page = client.list_org_memberships("org_b", 0, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    let e = client
        .list_org_memberships("org_gone", 0, 10)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
    assert!(!e.could_not_start());
}

#[tokio::test]
async fn single_lookups_find_or_miss_and_ids_stay_in_their_segment() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = client(&fake, fast());
    let user = client.get_user("user_00001").await.unwrap().unwrap();
    assert_eq!(id(&user), "user_00001");
    assert!(client.get_user("user_gone").await.unwrap().is_none());
    let org = client.get_organization("org_b").await.unwrap().unwrap();
    assert_eq!(id(&org), "org_b");
    // Clerk takes a slug there too.
    let org = client
        .get_organization("slug-org_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id(&org), "org_a");
    assert!(client.get_organization("org_gone").await.unwrap().is_none());
    // An id can never become another path, nor the list itself.
    assert!(client.get_user("../users").await.unwrap().is_none());
    assert!(client.get_user("user_00001/x?y").await.unwrap().is_none());
    let seen = fake.requests();
    assert_eq!(seen[seen.len() - 2].path, "/v1/users/..%2Fusers");
    assert_eq!(seen[seen.len() - 1].path, "/v1/users/user_00001%2Fx%3Fy");
    assert!(seen[2].query.contains("include_members_count=true"));
    let before = seen.len();
    assert!(matches!(
        client.get_user("").await.unwrap_err(),
        ApiError::Invalid(_)
    ));
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test]
async fn a_404_that_is_not_clerks_confirms_no_deletion() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = client(&fake, fast());
    fake.fail_next(
        1,
        Fault::Foreign(StatusCode::NOT_FOUND, "<h1>Not Found</h1>"),
    );
    let e = client.get_user("user_00001").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
    assert!(e.to_string().contains("is the API URL"), "{e}");
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after_then_the_same_request_succeeds() {
    let fake = FakeClerk::start(
        KEY,
        Data {
            users: users(3),
            ..Data::default()
        },
    )
    .await;
    let client = client(&fake, fast());
    fake.fail_next(1, Fault::RateLimited(Some("1")));
    let started = Instant::now();
    let page = client.list_page(Kind::Users, 1, 2).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(page.len(), 2);
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].query, seen[1].query);
    assert!(gap(&fake, 0, 1) >= Duration::from_secs(1));

    // Without a usable Retry-After: the default wait (300 ms in `fast`).
    fake.fail_next(1, Fault::RateLimited(None));
    fake.fail_next(1, Fault::RateLimited(Some("Wed, 21 Oct 2015 07:28:00 GMT")));
    client.list_page(Kind::Users, 0, 1).await.unwrap();
    assert_eq!(fake.requests().len(), 5);
    assert!(gap(&fake, 2, 3) >= Duration::from_millis(300));
    assert!(gap(&fake, 3, 4) >= Duration::from_millis(300));
}

#[tokio::test]
async fn endless_429s_end_in_an_error() {
    let fake = FakeClerk::start(KEY, Data::default()).await;
    let client = client(
        &fake,
        ApiOptions {
            rate_limited_tries: 3,
            ..fast()
        },
    );
    fake.fail_next(10, Fault::RateLimited(Some("0")));
    let e = client.list_page(Kind::Users, 0, 10).await.unwrap_err();
    assert!(matches!(e, ApiError::RateLimited { waits: 3, .. }), "{e}");
    assert!(!e.could_not_start());
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_succeed() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = client(&fake, fast());
    fake.fail_next(1, Fault::Status(StatusCode::SERVICE_UNAVAILABLE, "down"));
    fake.fail_next(1, Fault::Status(StatusCode::BAD_GATEWAY, "down"));
    let page = client.list_page(Kind::Organizations, 0, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(fake.requests().len(), 3);
    // 10 ms, then twice that.
    assert!(gap(&fake, 0, 1) >= Duration::from_millis(10));
    assert!(gap(&fake, 1, 2) >= Duration::from_millis(20));
}

#[tokio::test]
async fn server_errors_give_up_after_a_bounded_number_of_tries() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = client(&fake, ApiOptions { tries: 4, ..fast() });
    fake.fail_next(10, Fault::Status(StatusCode::INTERNAL_SERVER_ERROR, "oops"));
    let e = client
        .list_page(Kind::Invitations, 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unavailable { tries: 4, .. }), "{e}");
    assert!(e.to_string().contains("500"), "{e}");
    assert!(!e.could_not_start());
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn broken_connections_and_slow_answers_are_retried() {
    let fake = FakeClerk::start(
        KEY,
        Data {
            users: users(40),
            ..Data::default()
        },
    )
    .await;
    let client = client(
        &fake,
        ApiOptions {
            timeout: Duration::from_millis(500),
            ..fast()
        },
    );
    fake.fail_next(1, Fault::Drop);
    fake.fail_next(1, Fault::CutBody);
    fake.fail_next(1, Fault::Slow(Duration::from_secs(3)));
    let started = Instant::now();
    let page = client.list_page(Kind::Users, 0, 40).await.unwrap();
    assert_eq!(page.len(), 40);
    assert_eq!(fake.requests().len(), 4);
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The cut and the slow answer each cost their connection.
    assert!(fake.connections() >= 3, "{}", fake.connections());

    // A delay within the time-out is only a delay.
    fake.set_delay(Duration::from_millis(100));
    let started = Instant::now();
    client.list_page(Kind::Users, 0, 1).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn a_wrong_key_stops_at_once_with_one_line_naming_the_cause() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = ApiClient::with_options(&fake.url(), key(LIVE_KEY), fast()).unwrap();
    let e = client.list_page(Kind::Users, 0, 10).await.unwrap_err();
    assert!(matches!(e, ApiError::Unauthorized { .. }), "{e}");
    assert!(e.could_not_start());
    let message = e.to_string();
    assert!(
        message.contains("401") && message.contains("wrong or has been revoked"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert!(!message.contains(&LIVE_KEY[8..]), "{message}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_403_stops_at_once_and_names_the_kind_of_key() {
    for (text, kind, other) in [
        (KEY, "development key (sk_test_...)", "sk_live_"),
        (LIVE_KEY, "production key (sk_live_...)", "sk_test_"),
    ] {
        let fake = FakeClerk::start(text, org_data()).await;
        let client = ApiClient::with_options(&fake.url(), key(text), fast()).unwrap();
        fake.fail_next(1, Fault::Status(StatusCode::FORBIDDEN, "Forbidden"));
        let e = client
            .list_page(Kind::Organizations, 0, 10)
            .await
            .unwrap_err();
        assert!(e.could_not_start(), "{e}");
        let message = e.to_string();
        assert!(
            message.contains("403") && message.contains(kind),
            "{message}"
        );
        assert!(message.contains(other), "{message}");
        assert!(
            !message.contains('\n') && !message.contains(&text[8..]),
            "{message}"
        );
        assert_eq!(fake.requests().len(), 1);
    }
}

#[tokio::test]
async fn another_4xx_quotes_clerks_message_and_is_not_retried() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let client = client(&fake, fast());
    fake.fail_next(
        1,
        Fault::Status(
            StatusCode::BAD_REQUEST,
            "the request is not what was expected",
        ),
    );
    let e = client
        .list_page(Kind::Memberships, 0, 10)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
    assert!(!e.could_not_start());
    let message = e.to_string();
    assert!(
        message.contains("the request is not what was expected"),
        "{message}"
    );
    assert!(
        message.contains("/v1/organization_memberships"),
        "{message}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_is_refused() {
    let fake = FakeClerk::start(
        KEY,
        Data {
            users: users(50),
            ..Data::default()
        },
    )
    .await;
    let client = client(
        &fake,
        ApiOptions {
            max_body: 4096,
            ..fast()
        },
    );
    let e = client.list_page(Kind::Users, 0, 50).await.unwrap_err();
    assert!(matches!(e, ApiError::TooLarge { limit: 4096, .. }), "{e}");
    assert_eq!(fake.requests().len(), 1);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_is_in_no_error_log_line_or_debug_output() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_max_level(tracing::Level::TRACE)
        .finish();
    // The test's runtime has one thread, so every log of this test is here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeClerk::start(KEY, org_data()).await;
    let options = || ApiOptions {
        tries: 2,
        rate_limited_tries: 1,
        default_retry_after: Duration::from_millis(10),
        ..fast()
    };
    let good = client(&fake, options());
    let wrong = ApiClient::with_options(&fake.url(), key(LIVE_KEY), options()).unwrap();
    let mut shown = vec![format!("{good:?}"), format!("{wrong:#?}")];
    let mut errors: Vec<ApiError> = Vec::new();
    errors.push(wrong.list_page(Kind::Users, 0, 1).await.unwrap_err());
    for fault in [
        Fault::Status(StatusCode::FORBIDDEN, "no"),
        Fault::Status(StatusCode::BAD_REQUEST, KEY),
        Fault::Foreign(StatusCode::NOT_FOUND, KEY),
    ] {
        fake.fail_next(1, fault);
        errors.push(good.get_user("user_00001").await.unwrap_err());
    }
    fake.fail_next(2, Fault::Status(StatusCode::BAD_GATEWAY, KEY));
    errors.push(good.list_page(Kind::Users, 0, 1).await.unwrap_err());
    fake.fail_next(2, Fault::RateLimited(None));
    errors.push(good.list_page(Kind::Users, 0, 1).await.unwrap_err());
    fake.fail_next(2, Fault::Drop);
    errors.push(good.list_page(Kind::Users, 0, 1).await.unwrap_err());
    for e in &errors {
        shown.push(e.to_string());
        shown.push(format!("{e:?}"));
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("rate limited") && logs.contains("502"),
        "{logs}"
    );
    shown.push(logs);
    for text in &shown {
        for secret in [KEY, LIVE_KEY] {
            assert!(!text.contains(&secret[8..]), "{text}");
        }
    }
    // And yet the key was sent.
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY}"))));
}

#[tokio::test]
async fn at_rate_20_no_second_sees_more_than_20_requests() {
    let fake = FakeClerk::start(
        KEY,
        Data {
            users: users(45),
            ..Data::default()
        },
    )
    .await;
    // The measure sees 21 in a second where there are.
    let t = Instant::now();
    let at = |ms: u64| t + Duration::from_millis(ms);
    let tight: Vec<Instant> = (0..21).map(|i| at(i * 50)).collect();
    assert_eq!(most_in_a_second(&tight), 21);
    let spaced: Vec<Instant> = (0..45).map(|i| at(i * 51)).collect();
    assert_eq!(most_in_a_second(&spaced), 20);

    let paced = ApiClient::new(&fake.url(), key(KEY), Some(20)).unwrap();
    let started = Instant::now();
    for offset in 0..45 {
        paced.list_page(Kind::Users, offset, 1).await.unwrap();
    }
    let times: Vec<Instant> = fake.requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 45);
    assert!(
        most_in_a_second(&times) <= 20,
        "{}",
        most_in_a_second(&times)
    );
    // 45 requests at 20 a second take at least 44 / 20 s.
    assert!(started.elapsed() >= Duration::from_millis(2200));
}

#[tokio::test]
async fn tls_with_the_generated_certificate_works() {
    let fake = FakeClerk::start_tls(KEY, org_data()).await;
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    let client = ApiClient::with_options(
        &fake.url(),
        key(KEY),
        ApiOptions {
            extra_roots: vec![fake.ca_der()],
            ..fast()
        },
    )
    .unwrap();
    assert_eq!(walk(&client, Kind::Users, 2).await.len(), 3);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_at_once() {
    let fake = FakeClerk::start_tls(KEY, org_data()).await;
    // Trusting another CA keeps the trust store non-empty on a host
    // without system roots, so the failure is the certificate's.
    let other = FakeClerk::start_tls(KEY, Data::default()).await;
    let client = ApiClient::with_options(
        &fake.url(),
        key(KEY),
        ApiOptions {
            extra_roots: vec![other.ca_der()],
            ..fast()
        },
    )
    .unwrap();
    let e = client.list_page(Kind::Users, 0, 10).await.unwrap_err();
    assert!(matches!(e, ApiError::Tls { .. }), "{e}");
    assert!(e.could_not_start());
    assert!(e.to_string().contains("not trusted"), "{e}");
    assert!(!e.to_string().contains(&KEY[8..]), "{e}");
    // Not retried: one handshake, and no request got through.
    assert_eq!(fake.connections(), 1);
    assert!(fake.requests().is_empty());
}

const CHILD: &str = "import_api::ssl_cert_file_child";

#[tokio::test]
async fn ssl_cert_file_is_trusted() {
    let fake = FakeClerk::start_tls(KEY, org_data()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::File::create(&ca)
        .and_then(|mut f| f.write_all(fake.ca_pem().as_bytes()))
        .unwrap();
    // The variable is the process's, so it is set for a child run of this
    // test binary rather than for every test here.
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .env("FAKE_CLERK_URL", fake.url());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
#[ignore = "run by ssl_cert_file_is_trusted, with SSL_CERT_FILE set"]
async fn ssl_cert_file_child() {
    let url = std::env::var("FAKE_CLERK_URL").expect("FAKE_CLERK_URL");
    let client = ApiClient::new(&url, key(KEY), None).unwrap();
    let page = client.list_page(Kind::Users, 0, 10).await.unwrap();
    assert_eq!(page.len(), 3);
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_at_once() {
    let fake = FakeClerk::start(KEY, org_data()).await;
    let url = fake.url().replace("http://", "https://");
    let client = ApiClient::with_options(
        &url,
        key(KEY),
        ApiOptions {
            extra_roots: vec![FakeClerk::start_tls(KEY, Data::default()).await.ca_der()],
            ..fast()
        },
    )
    .unwrap();
    let e = client.list_page(Kind::Users, 0, 10).await.unwrap_err();
    assert!(matches!(e, ApiError::Tls { .. }), "{e}");
    assert!(e.could_not_start());
    assert_eq!(fake.connections(), 1);
}
