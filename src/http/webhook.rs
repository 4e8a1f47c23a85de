//! The webhook pipeline, in the contract's order: headers (400), body size
//! while reading (413), signature and time window (401), event shape (400),
//! then the write (200 only after commit, else 503).

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, EXPECT};
use hyper::{Request, Response, StatusCode};

use super::body::{content_length, drain, read_body};
use super::conns::ConnHandle;
use super::headers::SvixHeaders;
use super::rejection::Rejection;
use super::{error_response, json_response, millis, App, Body};
use crate::clock;
use crate::config::{ANSWER_DEADLINE, BODY_TIMEOUT, WRITE_BUDGET};
use crate::event::{self, Outcome};
use crate::store::WriteError;

pub async fn webhook(app: &App, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    // Read first, so that every log line of a delivery names it, the one
    // for a missed deadline included.
    let result = match SvixHeaders::from(req.headers()) {
        Ok(headers) => {
            let id = headers.id.clone();
            tokio::time::timeout(ANSWER_DEADLINE, receive(app, headers, req, started))
                .await
                .unwrap_or(Err((
                    Some(id),
                    Rejection::Unavailable(WriteError::Deadline),
                )))
        }
        Err(refused) => {
            // The body is not wanted. Read it away (bounded) so that a client
            // that sends it whole before reading still gets this answer;
            // with `Expect: 100-continue` it is never sent at all.
            if req.headers().get(EXPECT).is_none() {
                let conn = req.extensions().get::<ConnHandle>().cloned();
                if let Some(conn) = &conn {
                    conn.reading_body();
                }
                drain(req.into_body(), started, started + BODY_TIMEOUT).await;
                if conn.is_some_and(|c| !c.body_done()) {
                    return shed();
                }
            }
            Err(refused)
        }
    };
    let latency = started.elapsed();
    match result {
        Ok((delivery, outcome)) => {
            tracing::info!(
                svix_id = %delivery.id,
                r#type = %delivery.event_type,
                outcome = outcome.as_str(),
                latency_ms = millis(latency),
                "delivery"
            );
            app.metrics
                .delivery(&delivery.event_type, outcome.as_str(), latency);
            json_response(
                StatusCode::OK,
                &Accepted {
                    id: &delivery.id,
                    ok: true,
                    outcome: outcome.as_str(),
                },
            )
        }
        Err((_, Rejection::Shed)) => shed(),
        Err((id, rejection)) => {
            let status = rejection.status();
            if status.is_server_error() {
                tracing::warn!(svix_id = id.as_deref().map(display), outcome = "failed", reason = rejection.reason(), error = %rejection, latency_ms = millis(latency), "delivery");
            } else {
                tracing::info!(svix_id = id.as_deref().map(display), outcome = "rejected", reason = rejection.reason(), error = %rejection, latency_ms = millis(latency), "delivery");
            }
            app.metrics.rejected(rejection.reason(), latency);
            let mut response = error_response(status, &rejection.to_string());
            if rejection.before_body() {
                // The rest of the body may still be on its way: say that the
                // connection ends here, so no client tries to reuse it.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

/// For a request whose connection was shed while it waited for its body:
/// the connection closes without sending it, so it is neither logged as a
/// delivery nor counted.
fn shed() -> Response<Body> {
    tracing::debug!("connection shed while waiting for a body");
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "connection shed");
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to an accepted delivery. A struct rather than `json!`, so no
/// map is built for every delivery; the fields are in the order `json!`
/// sorted them into, so the body is unchanged.
#[derive(serde::Serialize)]
struct Accepted<'a> {
    id: &'a str,
    ok: bool,
    outcome: &'a str,
}

/// What the log and the answer need of an applied delivery.
struct Applied {
    id: String,
    event_type: String,
}

type Received = Result<(Applied, Outcome), (Option<String>, Rejection)>;

async fn receive(
    app: &App,
    headers: SvixHeaders,
    req: Request<Incoming>,
    started: Instant,
) -> Received {
    let (parts, body) = req.into_parts();
    let id = || Some(headers.id.clone());
    let expect_continue = parts.headers.get(EXPECT).is_some();
    let declared = content_length(&parts.headers);
    let conn = parts.extensions.get::<ConnHandle>();
    let (bytes, _room) = read_body(body, app, conn, declared, expect_continue, started)
        .await
        .map_err(|r| (id(), r))?;
    let now_ms = clock::now_ms();
    app.secrets
        .verify(
            &headers.id,
            headers.timestamp,
            &headers.signature,
            &bytes,
            now_ms / 1000,
            app.tolerance,
        )
        .map_err(|e| (id(), e.into()))?;
    let delivery = match event::parse(headers.id.clone(), &bytes, now_ms) {
        Ok(delivery) => delivery,
        // A delivery already accepted is answered 200 whatever comes with
        // its id again, so that no retry of it is ever refused.
        Err(e) => {
            return match app.store.recorded_type(&headers.id).await {
                Some(event_type) => Ok((
                    Applied {
                        id: headers.id,
                        event_type,
                    },
                    Outcome::Duplicate,
                )),
                None => Err((id(), e.into())),
            }
        }
    };
    let applied = Applied {
        id: delivery.id.clone(),
        event_type: delivery.event_type.clone(),
    };
    let outcome = app
        .store
        .apply(delivery, WRITE_BUDGET)
        .await
        .map_err(|e| (id(), e.into()))?;
    Ok((applied, outcome))
}
