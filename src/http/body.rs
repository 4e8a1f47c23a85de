//! Reading request bodies within their limits: `--max-body`, the pace a
//! client must keep, and the memory all bodies share.
//!
//! A body must be read whole before its signature can be checked, so
//! anyone can send one. What it costs is counted as it arrives, never by
//! what its headers declare: a stranger who declares a megabyte and sends
//! nothing holds no memory, and is cut off once it falls behind the pace
//! below. The first [`SMALL_BODY`] bytes of every body, more than a Clerk
//! delivery takes, need no room in the shared budget, so small bodies never
//! wait behind large ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conns::ConnHandle;
use super::rejection::Rejection;
use super::App;
use crate::config::{
    ANSWER_DEADLINE, ANSWER_MARGIN, BODY_GRACE, BODY_TIMEOUT, BUDGET_WAIT, MIN_BODY_RATE,
};

/// An oversized body is read and thrown away up to this much, so a client
/// that sends everything before reading still sees the 413 instead of a reset.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The first bytes of every body, read without drawing on the shared
/// budget. A connection reads one body at a time, so together these take
/// at most the connection limit times this (1024 × 64 KiB = 64 MiB).
/// Clerk's deliveries fit with room to spare: Standard Webhooks payloads
/// are usually under 20 KB, and Clerk's metadata is at most 8 KB a field.
pub const SMALL_BODY: u64 = 64 * 1024;

/// The bytes of bodies past their first [`SMALL_BODY`], all requests
/// together (or one `--max-body`, if that is more), counted as they arrive.
/// Past that a large body waits a little for room, then gets 503 to retry.
const LARGE_BUDGET: u64 = 32 * 1024 * 1024;

/// The room left in the budget for large bodies (32 MiB, or one
/// `--max-body` if that is more), counted in KiB.
pub struct BodyBudget {
    room: Arc<Semaphore>,
    total_kib: u32,
}

impl BodyBudget {
    pub fn new(max_body: u64) -> Self {
        let total_kib = kib(LARGE_BUDGET.max(max_body))
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            room: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }
}

/// The room one body holds in the budget, growing as its bytes arrive and
/// given back when dropped.
#[derive(Default)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    kib: u32,
}

impl Held {
    /// Room for a body of `len` bytes so far, waiting until `until` at
    /// most; `false` when it did not come in time.
    async fn grow_to(&mut self, budget: &BodyBudget, len: u64, until: Instant) -> bool {
        let wanted = kib(len.saturating_sub(SMALL_BODY)).min(budget.total_kib);
        if wanted <= self.kib {
            return true;
        }
        let more = wanted - self.kib;
        let room = budget.room.clone();
        let permit = match room.clone().try_acquire_many_owned(more) {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout_at(until.into(), room.acquire_many_owned(more)).await {
                    Ok(Ok(permit)) => permit,
                    _ => return false,
                }
            }
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.kib = wanted;
        true
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// How long after its headers (time spent waiting for room not counted) a
/// body that has sent `received` bytes is cut off if nothing more comes:
/// once it falls behind [`MIN_BODY_RATE`] after [`BODY_GRACE`], or at
/// [`BODY_TIMEOUT`], whichever is first. The second value says which.
fn cut_after(received: u64) -> (Duration, Rejection) {
    let behind = BODY_GRACE.max(Duration::from_secs_f64(
        received as f64 / MIN_BODY_RATE as f64,
    ));
    if behind < BODY_TIMEOUT {
        (behind, Rejection::TooSlow(MIN_BODY_RATE))
    } else {
        (BODY_TIMEOUT, Rejection::BodyTimeout)
    }
}

/// Reads the body of the request that came in at `started`, refusing it as
/// soon as it passes `--max-body`, and cutting it off when it comes in too
/// slowly. A body declared too large is refused before any of it is read.
/// The room it takes in the budget stays held while the second value lives.
/// While the body is awaited, its connection may be shed (see
/// [`super::conns`]); a body that arrives after that is not used.
pub async fn read_body(
    body: Incoming,
    app: &App,
    conn: Option<&ConnHandle>,
    declared: Option<u64>,
    expect_continue: bool,
    started: Instant,
) -> Result<(Vec<u8>, Held), Rejection> {
    let max = app.max_body;
    if let Some(conn) = conn {
        conn.reading_body();
    }
    let read = read_within_limits(body, app, declared, expect_continue, started).await;
    if conn.is_some_and(|c| !c.body_done()) {
        return Err(Rejection::Shed);
    }
    match read {
        Ok(Read::Whole(buf, held)) => Ok((buf, held)),
        // Too large is the answer however long the rest takes to read away:
        // the discarding stops in time for it to go out before the deadline.
        Ok(Read::TooLarge(rest, held)) => {
            drop(held);
            if let Some(conn) = conn {
                conn.reading_body();
            }
            drain(rest, started, started + ANSWER_DEADLINE - ANSWER_MARGIN).await;
            if conn.is_some_and(|c| !c.body_done()) {
                return Err(Rejection::Shed);
            }
            Err(Rejection::TooLarge(max))
        }
        Ok(Read::Declared) => Err(Rejection::TooLarge(max)),
        Err(e) => Err(e),
    }
}

enum Read {
    Whole(Vec<u8>, Held),
    TooLarge(Incoming, Held),
    /// Declared too large; what was sent of it is read away.
    Declared,
}

async fn read_within_limits(
    body: Incoming,
    app: &App,
    declared: Option<u64>,
    expect_continue: bool,
    started: Instant,
) -> Result<Read, Rejection> {
    let max = app.max_body;
    if declared.is_some_and(|n| n > max) {
        // With `Expect: 100-continue` the client waits for a go-ahead, so
        // answering now spares it sending the body at all.
        if !expect_continue {
            drain(body, started, started + BODY_TIMEOUT).await;
        }
        return Ok(Read::Declared);
    }
    let mut body = body;
    let mut held = Held::default();
    // What arrives sets the size, never what was declared.
    let capacity = usize::try_from(declared.unwrap_or(0).min(SMALL_BODY)).unwrap_or(0);
    let mut buf = Vec::with_capacity(capacity);
    // Time spent waiting for room is the server's, not the client's.
    let mut waited = Duration::ZERO;
    loop {
        let (after, too_slow) = cut_after(buf.len() as u64);
        let cut_at = started + waited + after;
        let frame = match tokio::time::timeout_at(cut_at.into(), body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|_| Rejection::BodyRead)?,
            Ok(None) => return Ok(Read::Whole(buf, held)),
            Err(_) => return Err(too_slow),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = (buf.len() + data.len()) as u64;
        if len > max {
            return Ok(Read::TooLarge(body, held));
        }
        if len > SMALL_BODY {
            let asked = Instant::now();
            let until = asked + BUDGET_WAIT.saturating_sub(waited);
            let got = held.grow_to(&app.bodies, len, until).await;
            waited += asked.elapsed();
            if !got {
                return Err(Rejection::Busy);
            }
        }
        buf.extend_from_slice(&data);
    }
}

/// Reads and discards what is left of the body of a request that came in
/// at `started`, up to 16 MiB and `until`, and no longer than its sender
/// keeps the pace a body must keep.
pub async fn drain(mut body: Incoming, started: Instant, until: Instant) {
    let mut seen = 0u64;
    loop {
        let (after, _) = cut_after(seen);
        let stop = until.min(started + after);
        match tokio::time::timeout_at(stop.into(), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                    if seen > DRAIN_LIMIT {
                        return;
                    }
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_cut_once_it_falls_behind_the_pace() {
        // Nothing at all: cut when the grace ends.
        let (after, why) = cut_after(0);
        assert_eq!(after, BODY_GRACE);
        assert!(matches!(why, Rejection::TooSlow(_)));
        // Ahead of the pace: more time.
        let (after, _) = cut_after(5 * MIN_BODY_RATE);
        assert_eq!(after, Duration::from_secs(5));
        // Never past the body timeout.
        let (after, why) = cut_after(1000 * MIN_BODY_RATE);
        assert_eq!(after, BODY_TIMEOUT);
        assert!(matches!(why, Rejection::BodyTimeout));
    }

    #[tokio::test]
    async fn room_grows_with_what_arrived_past_the_small_part() {
        let budget = BodyBudget::new(1024 * 1024);
        let until = Instant::now() + Duration::from_millis(50);
        let mut held = Held::default();
        assert!(held.grow_to(&budget, SMALL_BODY, until).await);
        assert_eq!(held.kib, 0, "the small part is free");
        assert!(held.grow_to(&budget, SMALL_BODY + 1, until).await);
        assert_eq!(held.kib, 1);
        assert!(held.grow_to(&budget, SMALL_BODY + 10 * 1024, until).await);
        assert_eq!(held.kib, 10);
        let free = budget.room.available_permits();
        assert_eq!(free, budget.total_kib as usize - 10);
        drop(held);
        assert_eq!(budget.room.available_permits(), budget.total_kib as usize);
    }

    #[tokio::test]
    async fn a_full_budget_turns_a_large_body_away_in_time() {
        let budget = BodyBudget::new(1024 * 1024);
        let mut hog = Held::default();
        let all = SMALL_BODY + u64::from(budget.total_kib) * 1024;
        let until = Instant::now() + Duration::from_millis(50);
        assert!(hog.grow_to(&budget, all, until).await);
        let mut late = Held::default();
        let started = Instant::now();
        let until = started + Duration::from_millis(100);
        assert!(!late.grow_to(&budget, SMALL_BODY + 1, until).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
        // A small body still needs nothing.
        assert!(late.grow_to(&budget, SMALL_BODY, until).await);
    }
}
