//! Why a request was refused, and the HTTP status each reason maps to.
//!
//! The messages go to the client in a JSON body and to the log, so they say
//! what was wrong without echoing a secret, a signature or the body.

use hyper::StatusCode;

use crate::event::EventError;
use crate::signature::VerifyError;
use crate::store::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    #[error("body is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("body was not received in time")]
    BodyTimeout,
    #[error("body arrived slower than {0} bytes a second")]
    TooSlow(u64),
    #[error("body could not be read")]
    BodyRead,
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("database unavailable, retry later")]
    Unavailable(#[from] WriteError),
    #[error("too many request bodies in memory at once, retry later")]
    Busy,
    /// Its connection was shed to let another in while this request
    /// waited for its body; nobody hears the answer.
    #[error("connection shed")]
    Shed,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingHeader(_) | Rejection::MalformedHeader(_) => StatusCode::BAD_REQUEST,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout | Rejection::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::BodyRead => StatusCode::BAD_REQUEST,
            Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
            Rejection::Event(_) => StatusCode::BAD_REQUEST,
            Rejection::Unavailable(_) | Rejection::Busy | Rejection::Shed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whether the answer may leave part of the request body unread (it is
    /// refused before or while being read), so the connection must close.
    pub fn before_body(&self) -> bool {
        matches!(
            self,
            Rejection::MissingHeader(_)
                | Rejection::MalformedHeader(_)
                | Rejection::TooLarge(_)
                | Rejection::BodyTimeout
                | Rejection::TooSlow(_)
                | Rejection::BodyRead
                | Rejection::Busy
                | Rejection::Shed
        )
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) | Rejection::MalformedHeader(_) => "malformed_headers",
            Rejection::TooLarge(_) => "too_large",
            Rejection::BodyTimeout | Rejection::TooSlow(_) | Rejection::BodyRead => "body_read",
            Rejection::Signature(VerifyError::NoMatch) => "bad_signature",
            Rejection::Signature(VerifyError::TooOld(_)) => "too_old",
            Rejection::Signature(VerifyError::TooNew(_)) => "too_new",
            Rejection::Event(_) => "not_an_event",
            Rejection::Unavailable(_) => "database",
            Rejection::Busy => "busy",
            Rejection::Shed => "shed",
        }
    }
}
