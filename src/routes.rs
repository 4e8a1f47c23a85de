//! Request handling: routing, the webhook pipeline, health.
//!
//! The webhook pipeline runs its checks in the contract's order: headers
//! (400), body size while reading (413), signature and time window (401),
//! event shape (400), then the write (200 only after commit, else 503).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::db::{self, DbFile, Outcome, ReadPool};
use crate::error::Rejection;
use crate::event;
use crate::metrics::Metrics;
use crate::signature::{self, Secrets};
use crate::writer::{WriteError, Writer};

/// A slow client gets this long to send its whole body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// An oversized body is read and thrown away up to this much, so a client
/// that sends everything before reading still sees the 413 instead of a reset.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// How long a delivery may wait for the writer to start on it. With the busy
/// timeout on top, the answer still comes well inside Svix's 15 s.
const WRITE_BUDGET: Duration = Duration::from_secs(8);

/// The last resort: whatever happens, answer before Svix gives up.
const ANSWER_DEADLINE: Duration = Duration::from_secs(14);

/// Request bodies held in memory at once, all requests together (or one
/// `--max-body`, if that is more). Every body is read whole before its
/// signature can be checked, so without a ceiling a crowd of large, slow or
/// forged bodies could take all the memory there is; ordinary deliveries
/// (a few KB) fit thousands at a time.
const BODY_BUDGET: u64 = 64 * 1024 * 1024;

/// How long a body waits for room in the budget before it is turned away.
/// With the time to send the body after it, inside [`ANSWER_DEADLINE`]: a
/// slow body is then answered for being slow, not for the deadline.
const BUDGET_WAIT: Duration = Duration::from_secs(3);

/// What an oversized body's reading away leaves of [`ANSWER_DEADLINE`] for
/// the `413` itself to go out.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// The most of a body set aside before any of it arrives: beyond this the
/// buffer grows with what is actually received, whatever was declared.
const FIRST_BUFFER: u64 = 1024 * 1024;

pub type Body = Full<Bytes>;

/// What every request handler shares.
pub struct App {
    pub path: String,
    pub secrets: Secrets,
    pub tolerance: u64,
    pub max_body: u64,
    pub writer: Writer,
    pub readers: ReadPool,
    /// The database file the writer has open.
    pub file: DbFile,
    pub metrics: Metrics,
    pub bodies: BodyBudget,
}

/// The room left in the `BODY_BUDGET`, counted in KiB.
pub struct BodyBudget {
    room: Arc<Semaphore>,
    total_kib: u32,
}

impl BodyBudget {
    pub fn new(max_body: u64) -> Self {
        let total_kib = kib(BODY_BUDGET.max(max_body))
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            room: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Room for a body of up to `bytes`, held until the permit is dropped.
    /// A body larger than the whole budget waits for all of it.
    async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, Rejection> {
        let wanted = kib(bytes).min(self.total_kib);
        match tokio::time::timeout(BUDGET_WAIT, self.room.clone().acquire_many_owned(wanted)).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Rejection::Busy),
        }
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Routes one request. Never fails: every problem is an HTTP answer.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let response = if path == app.path {
        if req.method() == Method::POST {
            webhook(&app, req).await
        } else {
            method_not_allowed("POST")
        }
    } else if path == "/healthz" {
        match *req.method() {
            Method::GET | Method::HEAD => health(&app).await,
            _ => method_not_allowed("GET, HEAD"),
        }
    } else if path == "/metrics" {
        match *req.method() {
            Method::GET | Method::HEAD => app.metrics.render(&app.readers).await,
            _ => method_not_allowed("GET, HEAD"),
        }
    } else {
        error_response(StatusCode::NOT_FOUND, "not found")
    };
    Ok(response)
}

async fn webhook(app: &App, req: Request<Incoming>) -> Response<Body> {
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
                drain(req.into_body(), Instant::now() + BODY_TIMEOUT).await;
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
            app.metrics.delivery(&delivery.event_type, outcome, latency);
            json_response(
                StatusCode::OK,
                &Accepted {
                    id: &delivery.id,
                    ok: true,
                    outcome: outcome.as_str(),
                },
            )
        }
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
    let (bytes, _room) = read_body(body, app, declared, expect_continue, started)
        .await
        .map_err(|r| (id(), r))?;
    let now_ms = db::now_ms();
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
            return match already_recorded(app, &headers.id).await {
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
        .writer
        .apply(delivery, WRITE_BUDGET)
        .await
        .map_err(|e| (id(), e.into()))?;
    Ok((applied, outcome))
}

/// The three signature headers, each read under its `svix-` name or, failing
/// that, its Standard Webhooks `webhook-` name.
struct SvixHeaders {
    id: String,
    timestamp: i64,
    signature: String,
}

impl SvixHeaders {
    /// The headers, or why not, with the id when that much was well-formed
    /// (so the log line of the refusal can name the delivery).
    fn from(headers: &HeaderMap) -> Result<Self, (Option<String>, Rejection)> {
        let id = header(headers, "svix-id", "webhook-id").map_err(|r| (None, r))?;
        if !signature::is_valid_id(id) {
            return Err((None, Rejection::MalformedHeader("svix-id")));
        }
        let rest = || -> Result<(i64, String), Rejection> {
            let timestamp =
                signature::parse_timestamp(header(headers, "svix-timestamp", "webhook-timestamp")?)
                    .ok_or(Rejection::MalformedHeader("svix-timestamp"))?;
            let signature = signatures(headers)?;
            if signature.trim().is_empty() {
                return Err(Rejection::MalformedHeader("svix-signature"));
            }
            Ok((timestamp, signature))
        };
        match rest() {
            Ok((timestamp, signature)) => Ok(Self {
                id: id.to_owned(),
                timestamp,
                signature,
            }),
            Err(rejection) => Err((Some(id.to_owned()), rejection)),
        }
    }
}

fn header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
    fallback: &'static str,
) -> Result<&'h str, Rejection> {
    let value = headers
        .get(name)
        .or_else(|| headers.get(fallback))
        .ok_or(Rejection::MissingHeader(name))?;
    value.to_str().map_err(|_| Rejection::MalformedHeader(name))
}

/// Every signature entry, also when a proxy or client split them over
/// several header lines: a valid entry in the second line still counts.
fn signatures(headers: &HeaderMap) -> Result<String, Rejection> {
    let name = "svix-signature";
    let key = if headers.contains_key(name) {
        name
    } else {
        "webhook-signature"
    };
    let mut lines = headers.get_all(key).iter().peekable();
    if lines.peek().is_none() {
        return Err(Rejection::MissingHeader(name));
    }
    // Bytes that are not text can only spoil their own entry, which then
    // fails to decode and is skipped like any other malformed one.
    let parts: Vec<_> = lines
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    Ok(parts.join(" "))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads the body of the request that came in at `started`, refusing it as
/// soon as it passes `--max-body`. A body declared too large is refused
/// before any of it is read. The room it takes in the budget stays reserved
/// while the second value lives.
async fn read_body(
    body: Incoming,
    app: &App,
    declared: Option<u64>,
    expect_continue: bool,
    started: Instant,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), Rejection> {
    let max = app.max_body;
    if declared.is_some_and(|n| n > max) {
        // With `Expect: 100-continue` the client waits for a go-ahead, so
        // answering now spares it sending the body at all.
        if !expect_continue {
            drain(body, Instant::now() + BODY_TIMEOUT).await;
        }
        return Err(Rejection::TooLarge(max));
    }
    let room = app.bodies.reserve(declared.unwrap_or(max)).await?;
    let capacity = usize::try_from(declared.unwrap_or(0).min(FIRST_BUFFER)).unwrap_or(0);
    enum Read {
        Whole(Vec<u8>),
        TooLarge(Incoming),
    }
    let read = async move {
        let mut body = body;
        let mut buf = Vec::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Rejection::BodyRead)?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > max {
                    return Ok(Read::TooLarge(body));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Read::Whole(buf))
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(Read::Whole(buf))) => Ok((buf, room)),
        // Too large is the answer however long the rest takes to read away:
        // the discarding stops in time for it to go out before the deadline.
        Ok(Ok(Read::TooLarge(rest))) => {
            drop(room);
            drain(rest, started + ANSWER_DEADLINE - ANSWER_MARGIN).await;
            Err(Rejection::TooLarge(max))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Rejection::BodyTimeout),
    }
}

/// Reads and discards what is left of a body, up to [`DRAIN_LIMIT`] bytes
/// and `until`.
async fn drain(mut body: Incoming, until: Instant) {
    let discard = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(until.into(), discard).await;
}

async fn health(app: &App) -> Response<Body> {
    match check_health(app).await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "ok": true })),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "health check failed");
            error_response(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

/// A database read run off the async workers, given 3 s to answer.
async fn read_db<T: Send + 'static>(
    read: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::time::timeout(Duration::from_secs(3), tokio::task::spawn_blocking(read)).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => anyhow::bail!("the database did not answer in time"),
    }
}

/// [`db::recorded_type`] off the async workers; `None` also when the
/// database does not answer.
async fn already_recorded(app: &App, id: &str) -> Option<String> {
    let readers = app.readers.clone();
    let id = id.to_owned();
    read_db(move || db::recorded_type(&readers, &id))
        .await
        .ok()
        .flatten()
}

/// [`db::check_health`] off the async workers, bounded in time.
///
/// # Errors
/// Why the database is not healthy.
pub async fn check_health(app: &App) -> anyhow::Result<()> {
    // Reads alone would still succeed with no one left to write: every
    // delivery would then fail while the process looked healthy.
    anyhow::ensure!(app.writer.is_running(), "the database writer has stopped");
    let readers = app.readers.clone();
    let file = app.file.clone();
    read_db(move || db::check_health(&readers, &file)).await
}

/// Milliseconds with microsecond precision: enough for a log line.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn error_response(status: StatusCode, reason: &str) -> Response<Body> {
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
