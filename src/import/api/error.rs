//! Why a request failed, in words that point at the likely cause.
//!
//! Clerk's own error body (`{"errors": [{"long_message": ...}]}`) is quoted
//! where there is one, on one line and with the secret key cut out, since
//! these messages end up in logs and reports.

use hyper::StatusCode;
use serde::Deserialize;

use crate::import::key::SecretKey;

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
    /// The answer was larger than [`ApiOptions::max_body`](super::ApiOptions::max_body).
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

pub(super) fn is_clerk_error(body: &[u8]) -> bool {
    serde_json::from_slice::<ClerkErrors>(body).is_ok()
}

/// Clerk's `errors[0]`: its `long_message` (else `message`) and `code`, on
/// one line, cut short, without the key.
pub(super) fn clerk_message(body: &[u8], key: &SecretKey) -> Option<String> {
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

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn bad_body(path: &str, expected: &'static str, error: &serde_json::Error) -> ApiError {
    ApiError::BadBody {
        path: path.to_owned(),
        expected,
        detail: error.to_string(),
    }
}

/// An error and its causes, as `a: b: c`.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn find_rustls_error<'e>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
