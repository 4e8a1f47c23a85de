//! The thread that merges what the import reads into the mirror, while the
//! next batch is fetched or read.
//!
//! Batches share a write transaction until it is due (see
//! [`Importer::due`]), which makes a busy import several times cheaper on
//! the indexes. The transaction is never left open while nothing comes:
//! when the next batch is not there within [`IDLE`], what is open is
//! committed, so a slow page, a rate limit or a retry never holds the write
//! lock that a `serve` beside the import needs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc as async_mpsc, oneshot};

use super::Batch;
use crate::event::Kind;
use crate::store::import::{Counts, Importer, Mode};

/// Batches waiting for the merging thread, about 3 MB each (a thousand
/// 2.5 KB users, read). One made a first fill 15 % faster, measured
/// alternately against none; two were no faster and brought the import's
/// peak memory to its 64 MB bound.
const QUEUED_BATCHES: usize = 1;

/// How long an open transaction waits for the next batch before it is
/// committed: the producer hands a batch over within microseconds when it
/// keeps up, so only a real pause waits this out.
const IDLE: Duration = Duration::from_millis(50);

enum Work {
    Merge(Kind, Batch, Mode),
    /// Commit what is open, and answer with the first failure since the
    /// last flush.
    Flush(oneshot::Sender<anyhow::Result<()>>),
}

/// The merging thread, and what its commits counted.
pub(super) struct Merger {
    work: Option<mpsc::SyncSender<Work>>,
    /// Set by the thread when a merge failed, so the run stops fetching
    /// rather than reading on to the next flush.
    failed: Arc<AtomicBool>,
    committed: async_mpsc::UnboundedReceiver<(Kind, Counts)>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Merger {
    /// # Errors
    /// When the thread cannot be started.
    pub(super) fn spawn(importer: Arc<Mutex<Importer>>) -> anyhow::Result<Self> {
        // A short queue: the producer fills batches while one is merged,
        // and a batch it was slow to parse (its core is shared with the
        // checkpointer) does not leave this thread idle. At most
        // `QUEUED_BATCHES + 2` batches are held.
        let (work, rx) = mpsc::sync_channel(QUEUED_BATCHES);
        let (counted, committed) = async_mpsc::unbounded_channel();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = thread::Builder::new()
            .name("import-merge".into())
            .spawn(move || run(&importer, &rx, &counted, &flag))
            .context("cannot start the import's merging thread")?;
        Ok(Self {
            work: Some(work),
            failed,
            committed,
            thread: Some(thread),
        })
    }

    /// Hands `batch` over, waiting (off the async workers) while the
    /// previous one is merged.
    ///
    /// # Errors
    /// A merge that failed since the last flush, or the thread being gone.
    pub(super) async fn merge(&self, kind: Kind, batch: Batch, mode: Mode) -> anyhow::Result<()> {
        self.send(Work::Merge(kind, batch, mode)).await?;
        if self.failed.load(Ordering::SeqCst) {
            return self.flush().await;
        }
        Ok(())
    }

    /// Commits everything handed over so far; the first failure since the
    /// last flush, if any.
    ///
    /// # Errors
    /// That failure, or the thread being gone.
    pub(super) async fn flush(&self) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Flush(reply)).await?;
        answer
            .await
            .context("the import's merging thread stopped")?
    }

    /// The counts of what was committed since the last call.
    pub(super) fn committed(&mut self) -> Vec<(Kind, Counts)> {
        let mut all = Vec::new();
        while let Ok(counts) = self.committed.try_recv() {
            all.push(counts);
        }
        all
    }

    async fn send(&self, work: Work) -> anyhow::Result<()> {
        let sender = self.work.clone().context("the merging thread is stopped")?;
        tokio::task::spawn_blocking(move || sender.send(work))
            .await?
            .map_err(|_| anyhow::anyhow!("the import's merging thread stopped"))
    }
}

impl Drop for Merger {
    /// Stops the thread, which commits what it still holds.
    fn drop(&mut self) {
        drop(self.work.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    importer: &Mutex<Importer>,
    rx: &mpsc::Receiver<Work>,
    counted: &async_mpsc::UnboundedSender<(Kind, Counts)>,
    flag: &AtomicBool,
) {
    let lock = || importer.lock().unwrap_or_else(PoisonError::into_inner);
    let commit = |importer: &mut Importer| -> anyhow::Result<()> {
        for counts in importer.commit()? {
            let _ = counted.send(counts);
        }
        Ok(())
    };
    let mut failed: Option<anyhow::Error> = None;
    loop {
        let open = lock().is_open();
        let work = if open {
            match rx.recv_timeout(IDLE) {
                Ok(work) => Some(work),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(work) => Some(work),
                Err(_) => break,
            }
        };
        let mut importer = lock();
        let step = match work {
            // After a failure, what follows until the flush is dropped: its
            // transaction is gone, and the run stops.
            Some(Work::Merge(..)) if failed.is_some() => Ok(()),
            Some(Work::Merge(kind, batch, mode)) => {
                let counts = Counts {
                    listed: batch.listed,
                    invalid: batch.invalid,
                    ..Counts::default()
                };
                importer
                    .merge(kind, &batch.objects, mode, counts)
                    .and_then(|()| {
                        if importer.due() {
                            commit(&mut importer)
                        } else {
                            Ok(())
                        }
                    })
            }
            None => commit(&mut importer),
            Some(Work::Flush(reply)) => {
                flag.store(false, Ordering::SeqCst);
                let answer = match failed.take() {
                    Some(e) => Err(e),
                    None => commit(&mut importer),
                };
                let _ = reply.send(answer);
                Ok(())
            }
        };
        if let Err(e) = step {
            failed.get_or_insert(e);
            flag.store(true, Ordering::SeqCst);
        }
    }
    // Stopped without a flush (the run ended on an error elsewhere): what
    // was merged is sound, and is kept.
    if failed.is_none() {
        let _ = commit(&mut lock());
    }
}
