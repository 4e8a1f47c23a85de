//! A client for the parts of Clerk's Backend API that `import` reads.
//!
//! Every request is a `GET {base}/v1/...` with `Authorization: Bearer
//! {key}`, paced by [`Pacer`], bounded in time and size, and retried where
//! retrying can help:
//! - `429`: wait for `Retry-After` (seconds), then the same request again;
//! - `5xx`, a refused or broken connection, no answer in time: exponential
//!   backoff, a bounded number of tries;
//! - `401`, `403`: stop at once ([`ApiError::could_not_start`]);
//! - any other status: an error quoting Clerk's own message.
//!
//! Lists come back as Clerk sends them: `GET /v1/users` as a bare array,
//! the others as `{"data": [...], "total_count": N}`; either shape is
//! accepted from any endpoint, as Clerk's JS SDK does, since an API version
//! may change the users' one. Each object is handed on byte-exact as a
//! [`RawValue`], so the caller parses it as it parses a webhook's `data`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::key::{KeyKind, SecretKey};
use super::pace::Pacer;

/// Where Clerk's Backend API is, without the `/v1`.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com";

/// Requests a second by default: a fifth of a production instance's
/// 1000 per 10 s, which the app itself shares.
pub const DEFAULT_RATE: u32 = 20;

/// The largest page Clerk serves. Above it Clerk silently serves its
/// default of 10, which would end a walk after the first page.
pub const MAX_LIMIT: u32 = 500;

/// The four instance-wide lists `import` walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `GET /v1/users`: a bare array.
    Users,
    /// `GET /v1/organizations`, with `include_members_count=true`.
    Organizations,
    /// `GET /v1/organization_memberships`, every organization's.
    Memberships,
    /// `GET /v1/organization_invitations`: the instance-wide list, which
    /// unlike an organization's own also has the invitations made through a
    /// verified domain.
    Invitations,
}

impl Kind {
    /// All four, in the order a walk takes them: what a membership or an
    /// invitation points at comes first.
    pub const ALL: [Kind; 4] = [
        Kind::Users,
        Kind::Organizations,
        Kind::Memberships,
        Kind::Invitations,
    ];

    /// The name Clerk gives the list, as in its path.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Organizations => "organizations",
            Kind::Memberships => "organization_memberships",
            Kind::Invitations => "organization_invitations",
        }
    }

    /// The query before `limit` and `offset`. Oldest first, which every one
    /// of the four accepts (`order_by` takes `created_at` with a `+`/`-`
    /// prefix on each): what is created during a walk then lands after the
    /// walk's position instead of shifting every later page.
    fn query(self) -> &'static str {
        match self {
            Kind::Organizations => "include_members_count=true&order_by=%2Bcreated_at",
            _ => "order_by=%2Bcreated_at",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a client sends. [`Default`] is what `import` uses; tests shorten
/// the waits.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Requests a second; `None` or `Some(0)`: no limit.
    pub rate: Option<u32>,
    /// The most one try may take, from connecting to the last body byte.
    pub timeout: Duration,
    /// The largest body read; a page of 500 users is a few MiB.
    pub max_body: usize,
    /// Tries of one request that fails with a `5xx`, a broken connection or
    /// a time-out, before giving up.
    pub tries: u32,
    /// The wait after the first such failure; each next one doubles it.
    pub first_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
    /// The longest a `Retry-After` is followed; a longer one is waited
    /// this long, and the request tried again.
    pub max_retry_after: Duration,
    /// The wait after a `429` without a usable `Retry-After`.
    pub default_retry_after: Duration,
    /// `429`s in a row for one request before giving up.
    pub rate_limited_tries: u32,
    /// Certificates trusted besides the system's roots (or `SSL_CERT_FILE`),
    /// such as a test's own CA.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            rate: Some(DEFAULT_RATE),
            timeout: Duration::from_secs(30),
            max_body: 64 * 1024 * 1024,
            tries: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            default_retry_after: Duration::from_secs(1),
            rate_limited_tries: 20,
            extra_roots: Vec::new(),
        }
    }
}

/// Why a request failed. No variant holds the secret key: what Clerk says is
/// quoted with the key cut out.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `401`.
    #[error(
        "Clerk refused the secret key (401 Unauthorized): it is wrong or has been revoked; \
         copy the current Secret key from the Clerk Dashboard, API keys{clerk}"
    )]
    Unauthorized {
        /// What Clerk said, as `"; Clerk says: ..."`, or empty.
        clerk: String,
    },
    /// `403`.
    #[error("Clerk refused the secret key (403 Forbidden): {hint}{clerk}")]
    Forbidden {
        /// The likely cause, from the key's prefix.
        hint: &'static str,
        /// What Clerk said, as `"; Clerk says: ..."`, or empty.
        clerk: String,
    },
    /// The server's certificate is not trusted.
    #[error("cannot connect to {host} over TLS: {detail}")]
    Tls {
        /// The API URL's host.
        host: String,
        /// What rustls found wrong.
        detail: String,
    },
    /// The API URL or the client's TLS set-up.
    #[error("{0}")]
    Config(String),
    /// A request the caller should not have made: a limit out of range,
    /// an empty id.
    #[error("{0}")]
    Invalid(String),
    /// Any other `4xx`, and a `404` where one is not an answer.
    #[error("GET {path}: Clerk answered {status}: {message}")]
    Rejected {
        /// The path and query asked for.
        path: String,
        /// The status.
        status: StatusCode,
        /// Clerk's `long_message` (or `message`) and `code`, or the body's start.
        message: String,
    },
    /// Still `5xx`, broken connections or time-outs after every try.
    #[error("GET {path}: gave up after {tries} tries: {last}")]
    Unavailable {
        /// The path and query asked for.
        path: String,
        /// How many were made.
        tries: u32,
        /// The last failure.
        last: String,
    },
    /// Still `429` after every wait.
    #[error("GET {path}: still rate limited (429) after waiting {waits} times")]
    RateLimited {
        /// The path and query asked for.
        path: String,
        /// How many `Retry-After`s were waited out.
        waits: u32,
    },
    /// The answer was larger than [`ApiOptions::max_body`].
    #[error("GET {path}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The path and query asked for.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// A `2xx` whose body is not what the endpoint returns.
    #[error("GET {path}: the answer is not {expected}: {detail}")]
    BadBody {
        /// The path and query asked for.
        path: String,
        /// What was expected.
        expected: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl ApiError {
    /// Whether this means the run could not start at all (exit 2): the key
    /// or the set-up is wrong, and trying again will not help.
    pub fn could_not_start(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized { .. }
                | ApiError::Forbidden { .. }
                | ApiError::Tls { .. }
                | ApiError::Config(_)
        )
    }

    /// The HTTP status Clerk answered with, for a [`ApiError::Rejected`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Rejected { status, .. } => Some(*status),
            ApiError::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            ApiError::Forbidden { .. } => Some(StatusCode::FORBIDDEN),
            _ => None,
        }
    }
}

type Https = HttpsConnector<HttpConnector>;

/// A Backend API client. Cheap to clone; clones share one connection pool
/// and one pace.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client<Https, Empty<Bytes>>,
    /// The API URL without a trailing `/`.
    base: String,
    host: String,
    key: SecretKey,
    auth: HeaderValue,
    pacer: Pacer,
    options: ApiOptions,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.inner.base)
            .field("key", &self.inner.key)
            .field("rate", &self.inner.options.rate)
            .finish_non_exhaustive()
    }
}

/// What one try came to, short of an answer to act on.
enum Failed {
    /// Worth another try.
    Transient(String),
    /// Not.
    Fatal(ApiError),
}

impl ApiClient {
    /// A client for the API at `base_url` (such as [`DEFAULT_API_URL`]),
    /// sending at most `rate` requests a second (`None` or `0`: no limit).
    ///
    /// # Errors
    /// When `base_url` is not an `http://` or `https://` URL, or, for
    /// `https://`, no trusted root certificate is found.
    pub fn new(base_url: &str, key: SecretKey, rate: Option<u32>) -> Result<Self, ApiError> {
        Self::with_options(
            base_url,
            key,
            ApiOptions {
                rate,
                ..ApiOptions::default()
            },
        )
    }

    /// A client with every knob given.
    ///
    /// # Errors
    /// As [`ApiClient::new`].
    pub fn with_options(
        base_url: &str,
        key: SecretKey,
        options: ApiOptions,
    ) -> Result<Self, ApiError> {
        let base = base_url.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|e| ApiError::Config(format!("the API URL {base_url:?} is not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ApiError::Config(format!(
                "the API URL {base_url:?} must start with https:// (or http:// for a local test)"
            )))
            }
        };
        let host = uri.host().unwrap_or_default().to_owned();
        if host.is_empty() || uri.query().is_some() {
            return Err(ApiError::Config(format!(
                "the API URL {base_url:?} must be a scheme, a host and at most a path"
            )));
        }
        if !https && !is_loopback(&host) {
            tracing::warn!(
                "the API URL {base} is plain http: the secret key crosses the network unencrypted"
            );
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ApiError::Config("the secret key is not a valid header value".into()))?;
        // hyper then keeps it out of its own debug output.
        auth.set_sensitive(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector(https, &options)?);
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                base: base.to_owned(),
                host,
                key,
                auth,
                pacer: Pacer::new(options.rate),
                options,
            }),
        })
    }

    /// One page of a list, oldest first: at most `limit` (1 to
    /// [`MAX_LIMIT`]) objects from `offset` on. A page shorter than `limit`
    /// is the last.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn list_page(
        &self,
        kind: Kind,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        check_limit(limit)?;
        let path = format!(
            "/v1/{}?{}&limit={limit}&offset={offset}",
            kind.name(),
            kind.query()
        );
        self.list(&path).await
    }

    /// One page of an organization's memberships
    /// (`GET /v1/organizations/{id}/memberships`), oldest first.
    ///
    /// # Errors
    /// See [`ApiError`]; an organization Clerk does not know is a
    /// [`ApiError::Rejected`] with status `404`.
    pub async fn list_org_memberships(
        &self,
        org_id: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        check_limit(limit)?;
        let path = format!(
            "/v1/organizations/{}/memberships?order_by=%2Bcreated_at&limit={limit}&offset={offset}",
            segment(org_id)?
        );
        self.list(&path).await
    }

    /// A walk over a whole list, a page at a time.
    pub fn pages(&self, kind: Kind, limit: u32) -> Pages {
        Pages::new(self.clone(), Listing::Kind(kind), limit)
    }

    /// A walk over one organization's memberships, a page at a time.
    pub fn org_membership_pages(&self, org_id: &str, limit: u32) -> Pages {
        Pages::new(
            self.clone(),
            Listing::OrgMemberships(org_id.to_owned()),
            limit,
        )
    }

    /// `GET /v1/users/{id}`; `None` when Clerk answers that it has no such
    /// user.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn get_user(&self, id: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        let path = format!("/v1/users/{}", segment(id)?);
        self.get_one(&path).await
    }

    /// `GET /v1/organizations/{id}` (with its member count); `None` when
    /// Clerk answers that it has no such organization.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn get_organization(&self, id: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        let path = format!(
            "/v1/organizations/{}?include_members_count=true",
            segment(id)?
        );
        self.get_one(&path).await
    }

    /// `GET /v1/users/count`, for progress: the users list itself carries
    /// no total. Users created meanwhile make it differ from what a walk
    /// finds, so it never decides when a walk ends.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn count_users(&self) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct Count {
            total_count: u64,
        }
        let path = "/v1/users/count";
        let body = self.get(path, false).await?.unwrap_or_default();
        serde_json::from_slice::<Count>(&body)
            .map(|c| c.total_count)
            .map_err(|e| bad_body(path, "a count", &e))
    }

    async fn list(&self, path: &str) -> Result<Vec<Box<RawValue>>, ApiError> {
        #[derive(Deserialize)]
        struct Page {
            data: Vec<Box<RawValue>>,
        }
        let body = self.get(path, false).await?.unwrap_or_default();
        let parsed = match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => serde_json::from_slice::<Page>(&body).map(|p| p.data),
            _ => serde_json::from_slice::<Vec<Box<RawValue>>>(&body),
        };
        parsed.map_err(|e| bad_body(path, "a list", &e))
    }

    async fn get_one(&self, path: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        let Some(body) = self.get(path, true).await? else {
            return Ok(None);
        };
        let object = serde_json::from_slice::<Box<RawValue>>(&body)
            .map_err(|e| bad_body(path, "a JSON object", &e))?;
        if !object.get().starts_with('{') {
            return Err(ApiError::BadBody {
                path: path.to_owned(),
                expected: "a JSON object",
                detail: "another JSON value".into(),
            });
        }
        Ok(Some(object))
    }

    /// The body of a `2xx` to `GET {base}{path}`, or `None` for Clerk's
    /// `404` where `missing_ok`.
    async fn get(&self, path: &str, missing_ok: bool) -> Result<Option<Bytes>, ApiError> {
        let inner = &*self.inner;
        let options = &inner.options;
        let uri: Uri = format!("{}{path}", inner.base)
            .parse()
            .map_err(|e| ApiError::Invalid(format!("GET {path}: not a valid URL: {e}")))?;
        let mut failures = 0;
        let mut waits = 0;
        loop {
            inner.pacer.wait().await;
            let tried = tokio::time::timeout(options.timeout, self.try_once(&uri)).await;
            let failure = match tried {
                Err(_) => format!("no complete answer within {:?}", options.timeout),
                Ok(Err(Failed::Fatal(e))) => return Err(e),
                Ok(Err(Failed::Transient(why))) => why,
                Ok(Ok((status, headers, body))) => {
                    match self.judge(path, status, &body, missing_ok) {
                        Verdict::Done(result) => return result.map(|()| Some(body)),
                        Verdict::Missing => return Ok(None),
                        Verdict::RateLimited => {
                            waits += 1;
                            if waits > options.rate_limited_tries {
                                return Err(ApiError::RateLimited {
                                    path: path.to_owned(),
                                    waits: waits - 1,
                                });
                            }
                            let wait = retry_after(&headers)
                                .unwrap_or(options.default_retry_after)
                                .min(options.max_retry_after);
                            tracing::warn!("GET {path}: rate limited (429); waiting {wait:?}");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Verdict::Retry(why) => {
                            // A 503 may say when to come back; a shorter
                            // backoff would only meet it again.
                            let at_least = retry_after(&headers)
                                .map(|d| d.min(options.max_retry_after))
                                .unwrap_or_default();
                            failures += 1;
                            self.back_off(path, failures, &why, at_least).await?;
                            continue;
                        }
                    }
                }
            };
            failures += 1;
            self.back_off(path, failures, &failure, Duration::ZERO)
                .await?;
        }
    }

    /// Waits before try `failures + 1`, or gives up.
    async fn back_off(
        &self,
        path: &str,
        failures: u32,
        why: &str,
        at_least: Duration,
    ) -> Result<(), ApiError> {
        let options = &self.inner.options;
        if failures >= options.tries {
            return Err(ApiError::Unavailable {
                path: path.to_owned(),
                tries: failures,
                last: why.to_owned(),
            });
        }
        let doubled = options
            .first_backoff
            .saturating_mul(1 << (failures - 1).min(16));
        let wait = doubled.min(options.max_backoff).max(at_least);
        tracing::warn!("GET {path}: {why}; try {} in {wait:?}", failures + 1);
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn try_once(&self, uri: &Uri) -> Result<(StatusCode, HeaderMap, Bytes), Failed> {
        let inner = &*self.inner;
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, inner.auth.clone());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("clerk-sync/", env!("CARGO_PKG_VERSION"))),
        );
        let response = inner
            .http
            .request(request)
            .await
            .map_err(|e| self.connection_failed(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, inner.options.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    Failed::Fatal(ApiError::TooLarge {
                        path: uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        limit: inner.options.max_body,
                    })
                } else {
                    Failed::Transient(format!("the connection broke during the answer: {e}"))
                }
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// A refused, broken or untrusted connection. A TLS failure (an
    /// untrusted certificate, plain HTTP where HTTPS was asked for) stays
    /// what it is however often it is tried.
    fn connection_failed(&self, error: &hyper_util::client::legacy::Error) -> Failed {
        let tls = |detail: String| {
            Failed::Fatal(ApiError::Tls {
                host: self.inner.host.clone(),
                detail,
            })
        };
        match find_rustls_error(error) {
            Some(rustls::Error::InvalidCertificate(why)) => tls(format!(
                "its certificate is not trusted ({why:?}); if its CA is a private one, name a \
                 PEM file of it in SSL_CERT_FILE"
            )),
            Some(other) => tls(other.to_string()),
            None => Failed::Transient(self.inner.key.redact(&error_chain(error))),
        }
    }

    fn judge(&self, path: &str, status: StatusCode, body: &[u8], missing_ok: bool) -> Verdict {
        let key = &self.inner.key;
        let clerk = || {
            clerk_message(body, key)
                .map(|m| format!("; Clerk says: {m}"))
                .unwrap_or_default()
        };
        match status.as_u16() {
            200..=299 => Verdict::Done(Ok(())),
            // Only Clerk's own "not found" confirms a deletion; a proxy's or
            // a wrong URL's 404 must not.
            404 if missing_ok && is_clerk_error(body) => Verdict::Missing,
            429 => Verdict::RateLimited,
            401 => Verdict::Done(Err(ApiError::Unauthorized { clerk: clerk() })),
            403 => Verdict::Done(Err(ApiError::Forbidden {
                hint: match key.kind() {
                    KeyKind::Development => {
                        "it is a development key (sk_test_...); a production instance needs its \
                         sk_live_ key"
                    }
                    KeyKind::Production => {
                        "it is a production key (sk_live_...); a development instance needs its \
                         sk_test_ key"
                    }
                    KeyKind::Other => {
                        "it may belong to another instance; use the instance's sk_live_ \
                         (production) or sk_test_ (development) key"
                    }
                },
                clerk: clerk(),
            })),
            500..=599 => Verdict::Retry(format!("Clerk answered {status}{}", clerk())),
            _ => {
                let mut message = clerk_message(body, key).unwrap_or_else(|| {
                    let start = String::from_utf8_lossy(&body[..body.len().min(200)]);
                    key.redact(&one_line(&start))
                });
                if status == StatusCode::NOT_FOUND && !is_clerk_error(body) {
                    message.push_str(&format!(
                        " (not Clerk's answer: is the API URL {} right? Requests go to it + /v1/...)",
                        self.inner.base
                    ));
                }
                Verdict::Done(Err(ApiError::Rejected {
                    path: path.to_owned(),
                    status,
                    message,
                }))
            }
        }
    }
}

enum Verdict {
    Done(Result<(), ApiError>),
    Missing,
    RateLimited,
    Retry(String),
}

/// A walk over a list, a page at a time, from offset 0 until a page comes
/// back shorter than the limit.
#[derive(Debug)]
pub struct Pages {
    client: ApiClient,
    listing: Listing,
    limit: u32,
    offset: u64,
    done: bool,
}

#[derive(Debug)]
enum Listing {
    Kind(Kind),
    OrgMemberships(String),
}

impl Pages {
    fn new(client: ApiClient, listing: Listing, limit: u32) -> Self {
        Pages {
            client,
            listing,
            limit,
            offset: 0,
            done: false,
        }
    }

    /// The next page, or `None` once the list is done. A failed page can
    /// be asked for again.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn next_page(&mut self) -> Result<Option<Vec<Box<RawValue>>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let page = match &self.listing {
            Listing::Kind(kind) => self.client.list_page(*kind, self.offset, self.limit).await,
            Listing::OrgMemberships(org) => {
                self.client
                    .list_org_memberships(org, self.offset, self.limit)
                    .await
            }
        }?;
        self.offset += page.len() as u64;
        if page.len() < self.limit as usize {
            self.done = true;
        }
        Ok((!page.is_empty()).then_some(page))
    }

    /// How many objects the walk has been given so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the last page has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn check_limit(limit: u32) -> Result<(), ApiError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "a page limit must be 1 to {MAX_LIMIT}, not {limit}"
        )))
    }
}

/// `id` as one path segment: everything but RFC 3986's unreserved
/// characters percent-encoded, so an id can never reach another path.
fn segment(id: &str) -> Result<String, ApiError> {
    if id.is_empty() {
        // `/v1/users/` would be the list itself.
        return Err(ApiError::Invalid("an empty id".into()));
    }
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// `Retry-After` in whole seconds, as Clerk sends it. The HTTP-date form
/// is not used by Clerk and falls back to the default wait.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

#[derive(Deserialize)]
struct ClerkErrors {
    errors: Vec<ClerkError>,
}

#[derive(Deserialize)]
struct ClerkError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    long_message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

fn is_clerk_error(body: &[u8]) -> bool {
    serde_json::from_slice::<ClerkErrors>(body).is_ok()
}

/// Clerk's `errors[0]`: its `long_message` (else `message`) and `code`, on
/// one line, cut short, without the key.
fn clerk_message(body: &[u8], key: &SecretKey) -> Option<String> {
    let first = serde_json::from_slice::<ClerkErrors>(body)
        .ok()?
        .errors
        .into_iter()
        .next()?;
    let text = first.long_message.or(first.message)?;
    let mut text = one_line(&text);
    if text.chars().count() > 300 {
        text = text.chars().take(300).chain("...".chars()).collect();
    }
    if let Some(code) = first.code.filter(|c| !c.is_empty()) {
        text.push_str(&format!(" ({})", one_line(&code)));
    }
    Some(key.redact(&text))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn bad_body(path: &str, expected: &'static str, error: &serde_json::Error) -> ApiError {
    ApiError::BadBody {
        path: path.to_owned(),
        expected,
        detail: error.to_string(),
    }
}

/// An error and its causes, as `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The rustls error behind a connection failure. It sits inside
/// `io::Error`s (two, with hyper-rustls), whose `source()` skips what they
/// wrap, so those are opened by hand.
fn find_rustls_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// HTTPS through rustls on `ring`, trusting the system's roots (or
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` where set) and `options.extra_roots`;
/// plain HTTP as well, for local tests.
fn connector(https: bool, options: &ApiOptions) -> Result<Https, ApiError> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let native = rustls_native_certs::load_native_certs();
        // One unreadable root among hundreds is no reason to refuse them all.
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        if roots.is_empty() && options.extra_roots.is_empty() {
            let why = native
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(ApiError::Config(format!(
                "no trusted root certificates found{why}: install the system's CA certificates \
                 or point SSL_CERT_FILE at a PEM file of them"
            )));
        }
    }
    for root in &options.extra_roots {
        roots
            .add(root.clone())
            .map_err(|e| ApiError::Config(format!("an extra root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Config(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.timeout.min(Duration::from_secs(10))));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("user_2abcXYZ").unwrap(), "user_2abcXYZ");
        assert_eq!(segment("../x y/é").unwrap(), "..%2Fx%20y%2F%C3%A9");
        assert_eq!(segment("a?b#c%").unwrap(), "a%3Fb%23c%25");
        assert!(segment("").is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn clerks_message_is_quoted_on_one_line_without_the_key() {
        let key = SecretKey::new("sk_live_c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        let body = br#"{"errors":[{"message":"is invalid","long_message":"5.0 does not match\none of the allowed values for sk_live_c2VjcmV0c2VjcmV0c2VjcmV0","code":"form_param_value_invalid","meta":{}}]}"#;
        assert_eq!(
            clerk_message(body, &key).unwrap(),
            "5.0 does not match one of the allowed values for [redacted] (form_param_value_invalid)"
        );
        assert_eq!(clerk_message(b"<html>", &key), None);
        assert_eq!(clerk_message(br#"{"errors":[]}"#, &key), None);
        assert!(is_clerk_error(br#"{"errors":[]}"#));
        assert!(!is_clerk_error(b"Not Found"));
    }

    #[test]
    fn bad_urls_and_limits_are_refused_before_any_request() {
        let key = || SecretKey::new("sk_test_abcdefghijklmnop").unwrap();
        for url in [
            "api.clerk.com",
            "ftp://api.clerk.com",
            "https://",
            "http://x/?a=b",
        ] {
            let e = ApiClient::new(url, key(), None).unwrap_err();
            assert!(e.could_not_start(), "{url}: {e}");
        }
        assert!(check_limit(0).is_err() && check_limit(501).is_err());
        assert!(check_limit(1).is_ok() && check_limit(500).is_ok());
    }

    #[test]
    fn the_client_debug_output_hides_the_key() {
        let client = ApiClient::new(
            "http://127.0.0.1:9",
            SecretKey::new("sk_test_hideme0123456789").unwrap(),
            None,
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("hideme"), "{shown}");
        assert!(shown.contains("127.0.0.1:9"), "{shown}");
    }
}
