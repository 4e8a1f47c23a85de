//! The HTTP layer: the only part of the crate that builds responses.
//!
//! A request goes [`server`] (accept, limits, graceful stop; [`conns`]
//! sheds the quietest connection when all are taken) → [`routes`]
//! (method and path) → [`webhook`] (headers → body → verify → parse →
//! store → answer), refusals mapped to statuses by [`rejection`].

pub mod body;
pub mod conns;
pub mod headers;
pub mod rejection;
pub mod routes;
pub mod server;
mod stall;
pub mod webhook;

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

pub use routes::{handle, App};

pub type Body = Full<Bytes>;

/// Milliseconds with microsecond precision: enough for a log line.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

pub fn error_response(status: StatusCode, reason: &str) -> Response<Body> {
    json_response(status, &json!({ "ok": false, "error": reason }))
}

pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    // Serializing plain data to a Vec cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
