//! One request, from its first try to its last: pacing, time-outs,
//! exponential backoff after a `5xx` or a broken connection, `Retry-After`
//! after a `429`, and the verdict on each status Clerk answers.
//!
//! Only what another try can change is tried again (a `429`, a `5xx`, a
//! broken connection, a time-out): a refused key, an untrusted certificate
//! or another `4xx` stays what it is, so it ends the request at once with
//! an error that says why.

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};

use super::error::{clerk_message, error_chain, find_rustls_error, is_clerk_error, one_line};
use super::{ApiClient, ApiError};
use crate::import::key::KeyKind;

/// What one try came to, short of an answer to act on.
enum Failed {
    /// Worth another try.
    Transient(String),
    /// Not.
    Fatal(ApiError),
}

impl ApiClient {
    /// The body of a `2xx` to `GET {base}{path}`, or `None` for Clerk's
    /// `404` where `missing_ok`.
    pub(super) async fn get(
        &self,
        path: &str,
        missing_ok: bool,
    ) -> Result<Option<Bytes>, ApiError> {
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

/// `Retry-After` in whole seconds, as Clerk sends it. The HTTP-date form
/// is not used by Clerk and falls back to the default wait.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
