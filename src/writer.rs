//! The single database writer, with group commit.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` each
//! commit waits for the disk. So one thread owns the write connection and
//! applies every delivery waiting in its queue inside one transaction, each
//! in its own savepoint: a bad delivery rolls back alone, and one fsync
//! covers the whole batch. Every delivery is answered only after the commit
//! that holds it has returned, or with an error if that commit failed.

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::db::{self, Outcome};
use crate::event::Delivery;

/// Most deliveries one transaction takes; bounds how long a batch holds the
/// write lock and how much a failed commit sends back for retry.
const MAX_BATCH: usize = 512;

/// Deliveries waiting for the writer; when full, request tasks wait.
const QUEUE: usize = 4096;

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
    /// Starts the writer thread on `conn`. The thread ends once every handle
    /// is dropped and the queue is drained; join it to know the last commit
    /// is done.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(conn: Connection) -> std::io::Result<(Self, thread::JoinHandle<()>)> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let handle = thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok((Self { queue }, handle))
    }

    /// Applies `delivery` durably, or says why not. `budget` is how long it
    /// may wait before the writer starts on it.
    ///
    /// # Errors
    /// [`WriteError`] when it was not committed.
    pub async fn apply(&self, delivery: Delivery, budget: Duration) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            delivery,
            deadline: Instant::now() + budget,
            reply,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch);
    }
    // Checkpoints are left to SQLite's default (automatic, and on the last
    // close): forcing one could race a replicator such as Litestream.
}

fn commit_batch(conn: &mut Connection, batch: &mut Vec<Job>) {
    let now = Instant::now();
    let (late, jobs): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|j| j.deadline < now);
    for job in late {
        let _ = job.reply.send(Err(WriteError::Deadline));
    }
    if jobs.is_empty() {
        return;
    }
    match write_all(conn, &jobs) {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, deliveries = jobs.len(), "batch not committed");
            let err = WriteError::Database(e.to_string());
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// One transaction for all `jobs`. The outer error means nothing was
/// committed; an inner error means that delivery alone was rolled back.
fn write_all(
    conn: &mut Connection,
    jobs: &[Job],
) -> rusqlite::Result<Vec<Result<Outcome, WriteError>>> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let received_at = db::now_ms();
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut sp = tx.savepoint()?;
        match db::apply(&sp, &job.delivery, received_at) {
            Ok(outcome) => {
                sp.commit()?;
                results.push(Ok(outcome));
            }
            Err(e) => {
                sp.rollback()?;
                drop(sp);
                // Some errors (disk full, I/O) end the whole transaction; then
                // nothing that follows can be trusted to be in it.
                if tx.is_autocommit() {
                    return Err(e);
                }
                tracing::warn!(svix_id = %job.delivery.id, error = %e, "delivery rolled back");
                results.push(Err(WriteError::Database(e.to_string())));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}
