//! Reading request bodies within their limits: `--max-body`, the time a
//! slow client gets, and the budget of memory all bodies share.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rejection::Rejection;
use super::App;
use crate::config::{ANSWER_DEADLINE, ANSWER_MARGIN, BODY_TIMEOUT, BUDGET_WAIT};

/// An oversized body is read and thrown away up to this much, so a client
/// that sends everything before reading still sees the 413 instead of a reset.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Request bodies held in memory at once, all requests together (or one
/// `--max-body`, if that is more). Every body is read whole before its
/// signature can be checked, so without a ceiling a crowd of large, slow or
/// forged bodies could take all the memory there is; ordinary deliveries
/// (a few KB) fit thousands at a time.
const BODY_BUDGET: u64 = 64 * 1024 * 1024;

/// The most of a body set aside before any of it arrives: beyond this the
/// buffer grows with what is actually received, whatever was declared.
const FIRST_BUFFER: u64 = 1024 * 1024;

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

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads the body of the request that came in at `started`, refusing it as
/// soon as it passes `--max-body`. A body declared too large is refused
/// before any of it is read. The room it takes in the budget stays reserved
/// while the second value lives.
pub async fn read_body(
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

/// Reads and discards what is left of a body, up to `DRAIN_LIMIT` bytes
/// and `until`.
pub async fn drain(mut body: Incoming, until: Instant) {
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
