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
//!
//! Here: the client, its set-up and the single-object lookups. The rest of
//! [`ApiClient`]'s methods live beside the concept they serve:
//! - `pages`: the four lists ([`Kind`]), their paths and queries, and the
//!   [`Pages`] walker;
//! - `retry`: one request from first try to last, with backoff and
//!   `Retry-After`, and what each status means;
//! - `error`: [`ApiError`], and Clerk's error bodies made into messages.

mod error;
mod pages;
mod retry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::key::SecretKey;
use super::pace::Pacer;
use error::bad_body;

pub use error::ApiError;
pub use pages::{Kind, Pages, MAX_LIMIT};

/// Where Clerk's Backend API is, without the `/v1`.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com";

/// Requests a second by default: a fifth of a production instance's
/// 1000 per 10 s, which the app itself shares.
pub const DEFAULT_RATE: u32 = 20;

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
    use super::pages::check_limit;
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("user_2abcXYZ").unwrap(), "user_2abcXYZ");
        assert_eq!(segment("../x y/é").unwrap(), "..%2Fx%20y%2F%C3%A9");
        assert_eq!(segment("a?b#c%").unwrap(), "a%3Fb%23c%25");
        assert!(segment("").is_err());
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
