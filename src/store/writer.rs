//! The single database writer, with group commit.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` each
//! commit waits for the disk. So one thread owns the write connection and
//! applies every delivery waiting in its queue inside one transaction, and
//! one fsync covers the whole batch. Should one delivery fail, the batch is
//! rolled back and done again with a savepoint per delivery, so the bad one
//! rolls back alone. Every delivery is answered only after the commit
//! that holds it has returned, or with an error if that commit failed.
//!
//! A disk that runs out of room is healed without a restart: after a write
//! fails for lack of room, every batch first empties the write-ahead log
//! into the database file (see [`Tight`]), and is refused while that fails,
//! so that the room freed goes to the database file rather than to more log.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::apply::Applier;
use super::checkpoint::{self, empty_wal_into_open_file, make_room, out_of_room, Checkpointer};
use super::file::DbFile;
use crate::clock;
use crate::event::{Delivery, Outcome};
use crate::metrics::Metrics;

/// Most deliveries one transaction takes; bounds how long a batch holds the
/// write lock and how much a failed commit sends back for retry.
const MAX_BATCH: usize = 512;

/// Deliveries waiting for the writer; when full, request tasks wait.
const QUEUE: usize = 4096;

/// How long after the last write that failed for lack of room every batch
/// still starts with an empty log. The disk was full a moment ago: a burst
/// that let the log grow as it does on a roomy disk (up to 64 MiB) could
/// take the room back.
const TIGHT_FOR: Duration = Duration::from_secs(300);

/// Why a delivery could not be written. Every case is worth a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("database unavailable: {0}")]
    Database(String),
    #[error("database busy: not written before the deadline")]
    Deadline,
    #[error("writer stopped")]
    Stopped,
}

struct Job {
    delivery: Delivery,
    queued: Instant,
    /// After this, the job is answered with an error instead of being started,
    /// so a backlog never pushes an answer past Svix's 15 s.
    deadline: Instant,
    reply: oneshot::Sender<Result<Outcome, WriteError>>,
}

/// Cheap-to-clone handle for submitting deliveries.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`, the database `file`, counting its
    /// commits in `metrics`. No delivery waits longer than `lock_wait` for a
    /// write lock another process holds, counting the time it spent queued
    /// behind a batch that was waiting for it. The thread ends once every
    /// handle is dropped and the queue is drained; join it to know the last
    /// commit is done.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(
        conn: Connection,
        file: DbFile,
        metrics: Metrics,
        lock_wait: Duration,
    ) -> std::io::Result<(Self, thread::JoinHandle<()>)> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let checkpointer = conn
            .path()
            .and_then(|p| Checkpointer::spawn(Path::new(p), checkpoint::SERVE_DELAY));
        let handle = thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, &file, rx, checkpointer, &metrics, lock_wait))?;
        Ok((Self { queue }, handle))
    }

    /// Whether the writer thread is still taking deliveries.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Applies `delivery` durably, or says why not. `budget` is how long it
    /// may wait before the writer starts on it.
    ///
    /// # Errors
    /// [`WriteError`] when it was not committed.
    pub async fn apply(&self, delivery: Delivery, budget: Duration) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        let queued = Instant::now();
        let job = Job {
            delivery,
            queued,
            deadline: queued + budget,
            reply,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

fn run(
    mut conn: Connection,
    file: &DbFile,
    mut rx: mpsc::Receiver<Job>,
    checkpointer: Option<Checkpointer>,
    metrics: &Metrics,
    lock_wait: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut file_ok = true;
    let mut tight: Option<Tight> = None;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let answers = match tight.as_mut().map(|t| t.make_room(&conn)) {
            Some(Err(refused)) => refuse_all(&mut batch, &refused),
            Some(Ok(())) | None => {
                let (answers, full) = commit_batch(&mut conn, &mut batch, lock_wait);
                tight = Tight::after_batch(tight, full);
                answers
            }
        };
        // Checked after the commit, so that no 200 leaves for a batch that
        // went into a file that was removed or replaced meanwhile.
        match file.check() {
            Ok(()) => {
                file_ok = true;
                let written = answers.iter().filter(|(_, r)| r.is_ok()).count();
                if written > 0 {
                    metrics.commit(written);
                }
                send_all(answers);
            }
            Err(e) => {
                if file_ok {
                    tracing::error!(error = %e, "deliveries refused until restart");
                    file_ok = false;
                }
                let refused = WriteError::Database(e.to_string());
                send_all(
                    answers
                        .into_iter()
                        .map(|(reply, result)| (reply, result.and(Err(refused.clone())))),
                );
            }
        }
        if let Some(c) = &checkpointer {
            c.nudge();
        }
    }
    drop(checkpointer);
    // No forced (TRUNCATE/RESTART) checkpoint on the way out. Closing the
    // last connection checkpoints by itself, and only when no other process
    // (a Litestream replicator, say) has the file open.
    if let Err(problem) = file.check() {
        // Except when the path now names another file: the WAL beside it is
        // still this file's, and whatever opens the path next would replay
        // these frames into the newcomer. Or when the log was removed: its
        // frames are then only in the copy this process holds. Either way,
        // copy them home and empty the WAL.
        empty_wal_into_open_file(&conn, file, lock_wait, &problem);
    }
}

/// The writer's state after a write failed for lack of room on the disk.
///
/// Before each batch the write-ahead log is copied into the database file
/// and emptied. While that fails, the batch is refused untried: a write
/// could still fit in the room freed (a log append needs less than the
/// checkpoint, which must grow the database file), and would take it, and
/// the log would then grow into all the room there is while the database
/// file stays as it was. Once the log is empty, batches are written again,
/// each into an empty log, until [`TIGHT_FOR`] passes without a write
/// failing for lack of room.
struct Tight {
    last_full: Instant,
    /// Whether batches are being refused.
    refusing: bool,
}

impl Tight {
    /// Empties the log before a batch; the refusal for the batch when that
    /// failed for lack of room.
    fn make_room(&mut self, conn: &Connection) -> Result<(), WriteError> {
        match make_room(conn) {
            Ok(_) => {
                if self.refusing {
                    tracing::info!(
                        "room on the disk again: the write-ahead log is copied into the database \
                         file, and deliveries are written again"
                    );
                    self.refusing = false;
                }
                Ok(())
            }
            Err(e) if out_of_room(&e) => {
                if !self.refusing {
                    tracing::warn!(
                        error = %e,
                        "no room on the disk to copy the write-ahead log into the database file: \
                         deliveries are refused (503, Svix retries them) until there is"
                    );
                    self.refusing = true;
                }
                self.last_full = Instant::now();
                Err(WriteError::Database(format!("no room on the disk: {e}")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot empty the write-ahead log");
                Ok(())
            }
        }
    }

    /// The state after a batch that `full` says failed for lack of room, or
    /// not.
    fn after_batch(tight: Option<Tight>, full: bool) -> Option<Tight> {
        match tight {
            _ if full => {
                if tight.is_none() {
                    tracing::warn!(
                        "the disk is full: until there is room again, each batch of deliveries \
                         first empties the write-ahead log into the database file"
                    );
                }
                Some(Tight {
                    last_full: Instant::now(),
                    refusing: tight.is_some_and(|t| t.refusing),
                })
            }
            Some(t) if t.last_full.elapsed() >= TIGHT_FOR => {
                tracing::info!(
                    "no lack of room for {} s: the write-ahead log may grow as usual again",
                    TIGHT_FOR.as_secs()
                );
                None
            }
            other => other,
        }
    }
}

/// Answers every job in `batch` (emptying it) with `refused`.
fn refuse_all(batch: &mut Vec<Job>, refused: &WriteError) -> Answers {
    batch
        .drain(..)
        .map(|job| (job.reply, Err(refused.clone())))
        .collect()
}

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// Each delivery's reply channel and its answer, not yet sent.
type Answers = Vec<(Reply, Result<Outcome, WriteError>)>;

/// Writes `batch` (emptying it) and returns each delivery's answer, unsent,
/// and whether a write failed for lack of room on the disk. The batch
/// waits for a lock held elsewhere only as long as its oldest delivery has
/// left of `lock_wait`: one queued behind a batch that spent the whole
/// wait and failed has already waited that long.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    lock_wait: Duration,
) -> (Answers, bool) {
    let now = Instant::now();
    let (late, jobs): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|j| j.deadline < now);
    let mut answers: Vec<_> = late
        .into_iter()
        .map(|job| (job.reply, Err(WriteError::Deadline)))
        .collect();
    let Some(oldest) = jobs.iter().map(|j| j.queued).min() else {
        return (answers, false);
    };
    let wait = (oldest + lock_wait).saturating_duration_since(now);
    let mut full = false;
    let written = conn
        .busy_timeout(wait)
        .and_then(|()| write_all(conn, &jobs, &mut full));
    match written {
        Ok(results) => answers.extend(jobs.into_iter().map(|job| job.reply).zip(results)),
        Err(e) => {
            tracing::warn!(error = %e, deliveries = jobs.len(), "batch not committed");
            full |= out_of_room(&e);
            let err = WriteError::Database(e.to_string());
            answers.extend(jobs.into_iter().map(|job| (job.reply, Err(err.clone()))));
        }
    }
    (answers, full)
}

fn send_all(answers: impl IntoIterator<Item = (Reply, Result<Outcome, WriteError>)>) {
    for (reply, result) in answers {
        // The request may have timed out and gone; nothing to tell it then.
        let _ = reply.send(result);
    }
}

type Results = Vec<Result<Outcome, WriteError>>;

/// One transaction for all `jobs`. The outer error means nothing was
/// committed; an inner error means that delivery alone was rolled back
/// (and sets `full` if that was for lack of room).
fn write_all(conn: &mut Connection, jobs: &[Job], full: &mut bool) -> rusqlite::Result<Results> {
    match write_together(conn, jobs)? {
        Some(results) => Ok(results),
        None => write_isolated(conn, jobs, full),
    }
}

/// The fast path: every delivery straight into the transaction. A delivery
/// that fails leaves part of its writes behind, so then the transaction is
/// dropped (rolled back) and `None` says to start over with isolation.
fn write_together(conn: &mut Connection, jobs: &[Job]) -> rusqlite::Result<Option<Results>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let received_at = clock::now_ms();
    let mut applier = Applier::new(&tx)?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        match applier.apply(&job.delivery, received_at) {
            Ok(outcome) => results.push(Ok(outcome)),
            Err(e) => {
                tracing::debug!(svix_id = %job.delivery.id, error = %e, "batch retried delivery by delivery");
                return Ok(None);
            }
        }
    }
    drop(applier);
    tx.commit()?;
    Ok(Some(results))
}

/// The careful path: each delivery in its own savepoint, so one that fails
/// rolls back alone.
fn write_isolated(
    conn: &mut Connection,
    jobs: &[Job],
    full: &mut bool,
) -> rusqlite::Result<Results> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let received_at = clock::now_ms();
    let mut applier = Applier::new(&tx)?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Hand-made savepoints through cached statements: rusqlite's
        // `savepoint()` would parse its SQL again for every delivery.
        tx.prepare_cached("SAVEPOINT delivery")?.execute([])?;
        match applier.apply(&job.delivery, received_at) {
            Ok(outcome) => {
                tx.prepare_cached("RELEASE delivery")?.execute([])?;
                results.push(Ok(outcome));
            }
            Err(e) => {
                // Some errors (disk full, I/O) end the whole transaction; then
                // nothing that follows can be trusted to be in it.
                if tx.is_autocommit() {
                    return Err(e);
                }
                tx.prepare_cached("ROLLBACK TO delivery")?.execute([])?;
                tx.prepare_cached("RELEASE delivery")?.execute([])?;
                tracing::warn!(svix_id = %job.delivery.id, error = %e, "delivery rolled back");
                *full |= out_of_room(&e);
                results.push(Err(WriteError::Database(e.to_string())));
            }
        }
    }
    drop(applier);
    tx.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event;

    fn job(id: &str, user: &str) -> (Job, oneshot::Receiver<Result<Outcome, WriteError>>) {
        let body = format!(r#"{{"type":"user.created","data":{{"id":"{user}","updated_at":1}}}}"#);
        let (reply, rx) = oneshot::channel();
        let delivery = event::parse(id.into(), body.as_bytes(), 0).unwrap();
        let queued = Instant::now();
        (
            Job {
                delivery,
                queued,
                deadline: queued + Duration::from_secs(5),
                reply,
            },
            rx,
        )
    }

    fn events(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM webhook_events", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn one_failing_delivery_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn =
            crate::store::open_writer(&dir.path().join("w.db"), Duration::from_secs(1)).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON users WHEN NEW.clerk_id = 'user_bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let (a, ra) = job("m1", "user_a");
        let (bad, rbad) = job("m2", "user_bad");
        let (c, rc) = job("m3", "user_c");
        let mut batch = vec![a, bad, c];
        send_all(commit_batch(&mut conn, &mut batch, Duration::from_secs(1)).0);
        assert_eq!(ra.blocking_recv().unwrap(), Ok(Outcome::Applied));
        assert!(matches!(
            rbad.blocking_recv().unwrap(),
            Err(WriteError::Database(_))
        ));
        assert_eq!(rc.blocking_recv().unwrap(), Ok(Outcome::Applied));
        // The failed delivery left neither its event nor its user behind.
        assert_eq!(events(&conn), 2);
        let bad_rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM webhook_events WHERE id = 'm2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad_rows, 0);
    }

    #[test]
    fn a_batch_that_cannot_commit_fails_every_delivery_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut conn = crate::store::open_writer(&path, Duration::from_millis(100)).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (a, ra) = job("m1", "user_a");
        let (b, rb) = job("m2", "user_b");
        let mut batch = vec![a, b];
        send_all(commit_batch(&mut conn, &mut batch, Duration::from_secs(1)).0);
        assert!(matches!(
            ra.blocking_recv().unwrap(),
            Err(WriteError::Database(_))
        ));
        assert!(matches!(
            rb.blocking_recv().unwrap(),
            Err(WriteError::Database(_))
        ));
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(events(&conn), 0);
    }

    #[test]
    fn deliveries_past_their_deadline_are_not_started() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn =
            crate::store::open_writer(&dir.path().join("w.db"), Duration::from_secs(1)).unwrap();
        let (mut late, rlate) = job("m1", "user_a");
        late.deadline = Instant::now() - Duration::from_millis(1);
        let (on_time, ron_time) = job("m2", "user_b");
        let mut batch = vec![late, on_time];
        send_all(commit_batch(&mut conn, &mut batch, Duration::from_secs(1)).0);
        assert_eq!(rlate.blocking_recv().unwrap(), Err(WriteError::Deadline));
        assert_eq!(ron_time.blocking_recv().unwrap(), Ok(Outcome::Applied));
        assert_eq!(events(&conn), 1);
    }
}
