//! A fake of Clerk's Backend API, for the import client's tests.
//!
//! It speaks the shapes CLERK-API.md documents: `GET /v1/users` answers a
//! bare array, `/v1/organizations`, `/v1/organization_memberships`,
//! `/v1/organization_invitations` and `/v1/organizations/{id}/memberships`
//! answer `{"data": [...], "total_count": N}`; `limit` is 1 to 500
//! (default 10) and anything else, `5.0` included, is a `422` with Clerk's
//! error body; `offset` is 0 or more; `order_by` takes the fields each
//! endpoint documents with a `+`/`-` prefix (default `-created_at`, newest
//! first) and refuses others; `GET /v1/users/{id}` and
//! `/v1/organizations/{id}` (an id or a slug) answer `404` with Clerk's
//! error body for what is not there; a wrong `Authorization: Bearer` is a
//! `401` with Clerk's error body.
//!
//! The test owns the data ([`FakeClerk::data`]) and may change it between
//! requests. It can queue faults that the next requests meet, in order
//! ([`Fault`]), and add a delay to every answer. Every request is recorded
//! with its arrival time ([`FakeClerk::requests`]).
//!
//! It listens on 127.0.0.1 port 0 only. [`FakeClerk::start_tls`] serves
//! HTTPS with a CA and a certificate for `127.0.0.1` and `localhost` made
//! on the spot; the client trusts it through
//! `ApiOptions::extra_roots` ([`FakeClerk::ca_der`]) or `SSL_CERT_FILE`
//! ([`FakeClerk::ca_pem`]). Dropping it stops it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The objects the fake serves, oldest first or in any order: lists are
/// sorted by each object's `created_at` as Clerk sorts them.
#[derive(Debug, Default, Clone)]
pub struct Data {
    pub users: Vec<Value>,
    pub organizations: Vec<Value>,
    /// Each with `organization.id` and `public_user_data.user_id`, as Clerk's.
    pub memberships: Vec<Value>,
    pub invitations: Vec<Value>,
}

/// What one of the next requests meets instead of its answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `429` with this `Retry-After` (none if `None`) and Clerk's error body.
    RateLimited(Option<&'static str>),
    /// This status with Clerk's error body carrying `message`.
    Status(StatusCode, &'static str),
    /// This status with a body that is not Clerk's (a proxy's, say).
    Foreign(StatusCode, &'static str),
    /// The connection closed with no answer.
    Drop,
    /// The headers and half the body, then the connection closed.
    CutBody,
    /// The real answer, this much later.
    Slow(Duration),
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    /// The path, still percent-encoded.
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

struct Shared {
    key: String,
    data: Mutex<Data>,
    faults: Mutex<VecDeque<Fault>>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

/// A running fake; see the module docs.
pub struct FakeClerk {
    addr: SocketAddr,
    scheme: &'static str,
    ca: Option<(CertificateDer<'static>, String)>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Drop for FakeClerk {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A number for each CA, so that no two share a name: a client trusting
/// one must not even find the other as an issuer.
fn next_ca() -> usize {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    COUNT.fetch_add(1, Ordering::SeqCst)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeClerk {
    /// Serves plain HTTP, accepting `Bearer {key}`.
    pub async fn start(key: &str, data: Data) -> FakeClerk {
        Self::spawn(key, data, None).await
    }

    /// Serves HTTPS with a certificate made now, signed by a CA made now.
    pub async fn start_tls(key: &str, data: Data) -> FakeClerk {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("fake Clerk test CA {}", next_ca()),
        );
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("server key");
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params")
                .signed_by(&leaf_key, &ca)
                .expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut fake = Self::spawn(key, data, Some(acceptor)).await;
        fake.ca = Some((ca.der().clone(), ca.pem()));
        fake
    }

    async fn spawn(key: &str, data: Data, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeClerk {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            data: Mutex::new(data),
            faults: Mutex::new(VecDeque::new()),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = watch::channel(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = stopped.changed() => return,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = Arc::clone(&shared);
                    let tls = tls.clone();
                    let mut stopped = stopped.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                        let http = hyper::server::conn::http1::Builder::new();
                        let served = async {
                            match tls {
                                Some(acceptor) => {
                                    // A client that refuses the certificate ends here.
                                    let Ok(stream) = acceptor.accept(stream).await else {
                                        return;
                                    };
                                    let _ =
                                        http.serve_connection(TokioIo::new(stream), service).await;
                                }
                                None => {
                                    let _ =
                                        http.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                        };
                        tokio::select! {
                            () = served => {}
                            _ = stopped.changed() => {}
                        }
                    });
                }
            }
        });
        FakeClerk {
            addr,
            scheme,
            ca: None,
            shared,
            stop,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, without `/v1`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The CA that signed the TLS certificate.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.as_ref().expect("a TLS fake").0.clone()
    }

    /// The same CA as PEM, for `SSL_CERT_FILE`.
    pub fn ca_pem(&self) -> String {
        self.ca.as_ref().expect("a TLS fake").1.clone()
    }

    /// The data, to read or change.
    pub fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.shared.data)
    }

    /// `fault`, for each of the next `times` requests (after those queued).
    pub fn fail_next(&self, times: usize, fault: Fault) {
        let mut faults = lock(&self.shared.faults);
        faults.extend(std::iter::repeat_n(fault, times));
    }

    /// A delay before every answer.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.requests).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

type Answer = Response<BoxBody<Bytes, std::io::Error>>;

/// A body that sends its first half, then fails, so hyper cuts the
/// connection mid-answer.
struct Cut(Option<Bytes>);

impl Body for Cut {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(match self.0.take() {
            Some(half) => Ok(Frame::data(half)),
            None => Err(std::io::Error::other("cut")),
        }))
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&shared.requests).push(Seen {
        at: Instant::now(),
        path: path.clone(),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    let delay = *lock(&shared.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fault = lock(&shared.faults).pop_front();
    match fault {
        Some(Fault::RateLimited(retry_after)) => {
            let mut answer = clerk_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many requests, retry later",
                "too_many_requests",
            );
            if let Some(after) = retry_after {
                answer
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static(after));
            }
            return Ok(answer);
        }
        Some(Fault::Status(status, message)) => {
            return Ok(clerk_error(status, message, message, "fault"));
        }
        Some(Fault::Foreign(status, body)) => {
            let mut answer = Response::new(full(body.as_bytes().to_vec()));
            *answer.status_mut() = status;
            return Ok(answer);
        }
        Some(Fault::Drop) => return Err(std::io::Error::other("dropped on purpose")),
        Some(Fault::Slow(wait)) => tokio::time::sleep(wait).await,
        Some(Fault::CutBody) | None => {}
    }
    if authorization.as_deref() != Some(format!("Bearer {}", shared.key).as_str()) {
        return Ok(clerk_error(
            StatusCode::UNAUTHORIZED,
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
            "authentication_invalid",
        ));
    }
    let answer = route(&shared, &path, &query);
    if matches!(fault, Some(Fault::CutBody)) {
        let (parts, body) = answer.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let half = bytes.slice(..bytes.len() / 2);
        let mut cut = Response::from_parts(parts, Cut(Some(half)).boxed());
        cut.headers_mut().insert(
            hyper::header::CONTENT_LENGTH,
            HeaderValue::from(bytes.len()),
        );
        return Ok(cut);
    }
    Ok(answer)
}

fn full(bytes: Vec<u8>) -> BoxBody<Bytes, std::io::Error> {
    Full::new(Bytes::from(bytes))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    let mut answer = Response::new(full(value.to_string().into_bytes()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// Clerk's `ClerkErrors` body.
fn clerk_error(status: StatusCode, message: &str, long: &str, code: &str) -> Answer {
    json_answer(
        status,
        &json!({
            "errors": [{"message": message, "long_message": long, "code": code, "meta": {}}],
            "meta": {},
            "clerk_trace_id": "fake0123456789",
        }),
    )
}

fn not_found() -> Answer {
    clerk_error(
        StatusCode::NOT_FOUND,
        "not found",
        "Resource not found",
        "resource_not_found",
    )
}

fn invalid_param(name: &str, value: &str) -> Answer {
    clerk_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "is invalid",
        &format!("{value} does not match one of the allowed values for parameter {name}"),
        "form_param_value_invalid",
    )
}

/// Percent-decoding; in a query `+` is a space too, as form decoding has
/// it, so a client that sends `order_by=+created_at` unencoded asks for
/// `" created_at"` and gets a `422`.
fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| hex(bytes[i + 1]).zip(hex(bytes[i + 2])))
            .flatten();
        match (escaped, bytes[i]) {
            (Some((high, low)), _) => {
                out.extend(u8::try_from(high * 16 + low));
                i += 3;
                continue;
            }
            (None, b'+') if plus_is_space => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

/// The list endpoints' paging and order, as Clerk validates them.
struct Listing {
    limit: usize,
    offset: usize,
    field: String,
    descending: bool,
}

/// The paging and order asked for, or the parameter Clerk would refuse
/// (its name and value).
fn listing(query: &str, order_fields: &[&str]) -> Result<Listing, (String, String)> {
    let mut out = Listing {
        limit: 10,
        offset: 0,
        field: "created_at".into(),
        descending: true,
    };
    for (name, value) in params(query) {
        match name.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(n @ 1..=500) => out.limit = n,
                _ => return Err((name, value)),
            },
            "offset" => match value.parse::<usize>() {
                Ok(n) => out.offset = n,
                _ => return Err((name, value)),
            },
            "order_by" => {
                let (descending, field) = match value.as_bytes().first() {
                    Some(b'-') => (true, &value[1..]),
                    Some(b'+') => (false, &value[1..]),
                    _ => (false, value.as_str()),
                };
                if !order_fields.contains(&field) {
                    return Err((name, value));
                }
                out.field = field.to_owned();
                out.descending = descending;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn page(objects: &[Value], listing: &Listing) -> Vec<Value> {
    let mut sorted = objects.to_vec();
    let key = |v: &Value| v.get(&listing.field).cloned().unwrap_or(Value::Null);
    sorted.sort_by(|a, b| {
        let (a, b) = (key(a), key(b));
        let order = match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => a.to_string().cmp(&b.to_string()),
        };
        if listing.descending {
            order.reverse()
        } else {
            order
        }
    });
    sorted
        .into_iter()
        .skip(listing.offset)
        .take(listing.limit)
        .collect()
}

const USER_ORDER: &[&str] = &[
    "created_at",
    "updated_at",
    "email_address",
    "web3wallet",
    "first_name",
    "last_name",
    "phone_number",
    "username",
    "last_active_at",
    "last_sign_in_at",
];
const ORG_ORDER: &[&str] = &["name", "created_at", "members_count"];
const MEMBERSHIP_ORDER: &[&str] = &[
    "phone_number",
    "email_address",
    "created_at",
    "first_name",
    "last_name",
    "username",
];
const INVITATION_ORDER: &[&str] = &["created_at", "email_address"];

fn route(shared: &Shared, path: &str, query: &str) -> Answer {
    let data = lock(&shared.data);
    let wrapped = |objects: &[Value], order: &[&str]| match listing(query, order) {
        Ok(l) => json_answer(
            StatusCode::OK,
            &json!({"data": page(objects, &l), "total_count": objects.len()}),
        ),
        Err((name, value)) => invalid_param(&name, &value),
    };
    let segments: Vec<String> = path
        .strip_prefix("/v1/")
        .unwrap_or("")
        .split('/')
        .map(|s| decode(s, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let by_id = |objects: &[Value], id: &str| {
        objects
            .iter()
            .find(|o| o["id"] == id || o.get("slug").is_some_and(|s| s == id))
            .cloned()
    };
    match segments.as_slice() {
        ["users"] => match listing(query, USER_ORDER) {
            Ok(l) => json_answer(StatusCode::OK, &Value::Array(page(&data.users, &l))),
            Err((name, value)) => invalid_param(&name, &value),
        },
        ["users", "count"] => json_answer(
            StatusCode::OK,
            &json!({"object": "total_count", "total_count": data.users.len()}),
        ),
        ["users", id] if !id.is_empty() => match by_id(&data.users, id) {
            Some(user) => json_answer(StatusCode::OK, &user),
            None => not_found(),
        },
        ["organizations"] => wrapped(&data.organizations, ORG_ORDER),
        ["organizations", id] if !id.is_empty() => match by_id(&data.organizations, id) {
            Some(org) => json_answer(StatusCode::OK, &org),
            None => not_found(),
        },
        ["organizations", id, "memberships"] => {
            let Some(org) = by_id(&data.organizations, id) else {
                return not_found();
            };
            let mine: Vec<Value> = data
                .memberships
                .iter()
                .filter(|m| m["organization"]["id"] == org["id"])
                .cloned()
                .collect();
            wrapped(&mine, MEMBERSHIP_ORDER)
        }
        ["organization_memberships"] => wrapped(&data.memberships, MEMBERSHIP_ORDER),
        ["organization_invitations"] => wrapped(&data.invitations, INVITATION_ORDER),
        _ => not_found(),
    }
}

/// A user object of Clerk's shape, created at `created_at` (ms).
pub fn user(id: &str, created_at: i64) -> Value {
    json!({
        "id": id,
        "object": "user",
        "username": null,
        "first_name": "Test",
        "last_name": null,
        "primary_email_address_id": format!("idn_{id}"),
        "email_addresses": [{
            "id": format!("idn_{id}"),
            "object": "email_address",
            "email_address": format!("{id}@example.com"),
            "verification": {"status": "verified", "strategy": "admin"},
        }],
        "phone_numbers": [],
        "public_metadata": {},
        "private_metadata": {},
        "created_at": created_at,
        "updated_at": created_at + 21,
    })
}

/// An organization of Clerk's shape.
pub fn organization(id: &str, created_at: i64) -> Value {
    json!({
        "object": "organization",
        "id": id,
        "name": format!("Org {id}"),
        "slug": format!("slug-{id}"),
        "has_image": false,
        "max_allowed_memberships": 5,
        "admin_delete_enabled": true,
        "members_count": 1,
        "public_metadata": {},
        "created_at": created_at,
        "updated_at": created_at,
    })
}

/// A membership of `user_id` in `org`, of Clerk's shape.
pub fn membership(id: &str, org: &Value, user_id: &str, created_at: i64) -> Value {
    json!({
        "object": "organization_membership",
        "id": id,
        "role": "org:member",
        "permissions": [],
        "public_metadata": {},
        "organization": org,
        "public_user_data": {"user_id": user_id, "identifier": format!("{user_id}@example.com")},
        "created_at": created_at,
        "updated_at": created_at,
    })
}

/// An organization invitation of Clerk's shape.
pub fn invitation(id: &str, org_id: &str, created_at: i64) -> Value {
    json!({
        "object": "organization_invitation",
        "id": id,
        "email_address": format!("{id}@example.com"),
        "role": "org:member",
        "role_name": "Member",
        "organization_id": org_id,
        "status": "pending",
        "public_metadata": {},
        "url": null,
        "expires_at": null,
        "inviter_id": null,
        "public_inviter_data": null,
        "created_at": created_at,
        "updated_at": created_at,
    })
}
