//! Retention: rows of `webhook_events` and `changes` older than
//! `--keep-days` are deleted in the background, in small batches, from a
//! connection of their own. The mirror's own rows, tombstones included, are
//! never touched.
//!
//! Each batch is one short write transaction that gives up at once when the
//! writer holds the lock, so a delivery waits at most for one batch (a few
//! milliseconds), never for a whole pass.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

/// The first pass comes this soon after the start, then every [`EVERY`].
const FIRST_PASS: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_secs(3600);

/// Rows one transaction deletes.
const BATCH: i64 = 1000;

/// A pause between batches, so the writer gets the lock in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The two tables pruned, each with the statement that deletes one batch
/// of rows older than `?1`, oldest first.
const PRUNE: [(&str, &str); 2] = [
    (
        "webhook_events",
        "DELETE FROM webhook_events WHERE id IN
            (SELECT id FROM webhook_events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
    ),
    (
        "changes",
        // `at` rises with seq, so the old rows are the lowest seqs: a batch
        // looks at the oldest ones only, and one that deletes fewer than it
        // looked at has reached the end of them.
        "DELETE FROM changes WHERE seq IN
            (SELECT seq FROM changes ORDER BY seq LIMIT ?2) AND at < ?1",
    ),
];

/// The pruning thread; stops when dropped.
pub struct Retention {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Retention {
    /// Starts pruning the database at `path`, keeping `keep_days` days.
    ///
    /// # Errors
    /// When the connection or the thread cannot be made.
    pub fn spawn(path: &Path, keep_days: u32) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        // Give up on a held lock at once: the next batch will come.
        conn.busy_timeout(Duration::from_millis(10))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("db-retention".into())
            .spawn(move || {
                let mut wait = FIRST_PASS;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    let cutoff = crate::clock::now_ms() - i64::from(keep_days) * DAY_MS;
                    match prune(&conn, cutoff, &stopped) {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(rows = n, keep_days, "old events and changes pruned")
                        }
                        Err(e) => tracing::warn!(error = %e, "pruning old events deferred"),
                    }
                    wait = EVERY;
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Deletes every row older than `cutoff` (ms), batch by batch; how many.
/// A batch that meets the writer's lock is tried again after a pause, a
/// bounded number of times.
///
/// # Errors
/// When SQLite fails otherwise, or the lock stays held.
pub fn prune(
    conn: &Connection,
    cutoff: i64,
    stopped: &mpsc::Receiver<()>,
) -> rusqlite::Result<usize> {
    let mut total = 0;
    for (_, sql) in PRUNE {
        let mut stmt = conn.prepare(sql)?;
        let mut busy = 0;
        loop {
            match stmt.execute(rusqlite::params![cutoff, BATCH]) {
                Ok(n) => {
                    total += n;
                    // Fewer than a batch: nothing older is left.
                    if (n as i64) < BATCH {
                        break;
                    }
                }
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && busy < 100 =>
                {
                    busy += 1;
                }
                Err(e) => return Err(e),
            }
            // Also how a stop is heard in the middle of a long pass.
            if !matches!(
                stopped.recv_timeout(BETWEEN_BATCHES),
                Err(RecvTimeoutError::Timeout)
            ) {
                return Ok(total);
            }
        }
    }
    Ok(total)
}
