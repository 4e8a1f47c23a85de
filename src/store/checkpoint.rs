//! Keeping the write-ahead log short: a background checkpointer, emptying
//! the log after the disk ran out of room, and the last-resort copy of the
//! log into a database file that was moved or whose log was removed while
//! the writer held it.

use std::path::Path;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

use super::file::{DbFile, FileError};

/// Copies every committed frame into the database file this process has
/// open (wherever it now is) and empties the log, after `problem` made the
/// path unsafe to leave it to. SQLite waits up to `lock_wait` (set here: the
/// last batch may have left less) for other connections' read transactions;
/// frames newer than one still open cannot be copied, and the error says
/// where they are left.
pub(super) fn empty_wal_into_open_file(
    conn: &Connection,
    file: &DbFile,
    lock_wait: Duration,
    problem: &FileError,
) {
    let checkpoint = conn.busy_timeout(lock_wait).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
    });
    match checkpoint {
        Ok((0, _, _)) => {}
        Ok((_, frames, copied)) if *problem == FileError::WalGone => {
            tracing::error!(
                database = %file.path().display(),
                frames_not_copied = frames - copied,
                "the write-ahead log was removed while clerk-sync ran, and another connection \
                 was reading, so clerk-sync could not copy the commits newer than that read into \
                 the database; they are now only in the removed log that connection holds, and \
                 are lost unless it copies them when it closes (SQLite does when it is the last \
                 connection and may write)"
            );
        }
        Ok((_, frames, copied)) => {
            let moved_to = file
                .whereabouts()
                .map_or_else(|| "its new place".to_owned(), |p| p.display().to_string());
            tracing::error!(
                wal = %file.wal_path().display(),
                database_now = %moved_to,
                frames_not_copied = frames - copied,
                "the database was moved or replaced while another connection was reading it, so \
                 its last commits are only in the write-ahead log at the old path; move that log \
                 beside the database as its path plus -wal before opening it, or they are lost"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot empty the write-ahead log of the moved database");
        }
    }
}

/// How long the writer's checkpoint after a lack of room waits for the
/// background checkpointer or a reader to let go: short, since the writer
/// holds every delivery meanwhile.
const MAKE_ROOM_WAIT: Duration = Duration::from_millis(100);

/// Copies every committed frame into the database file and empties the
/// log (a TRUNCATE checkpoint), on the writer's own connection, so the
/// room a full disk gets back goes to the database file, which a checkpoint
/// must grow, rather than to more log. `Ok(false)` when a reader (or the
/// background checkpointer) kept part of the log in use: what could be
/// copied was.
///
/// # Errors
/// The checkpoint's own failure, lack of room included.
pub(super) fn make_room(conn: &Connection) -> rusqlite::Result<bool> {
    conn.busy_timeout(MAKE_ROOM_WAIT)?;
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

/// Whether `e` says the disk has no room left.
pub(super) fn out_of_room(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// A failing background checkpoint is logged at warn at most this often;
/// the repeats in between at debug.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Copies committed WAL frames into the database file from its own thread
/// and connection, so the writer rarely stops for a checkpoint: SQLite's
/// automatic checkpoint (still on, as the backstop that lets the WAL restart)
/// then finds little left to copy.
pub(super) struct Checkpointer {
    nudge: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// After one of `serve`'s commits, wait this long for more before
/// checkpointing, so one checkpoint covers many commits: under load a busy
/// user's page is then copied to the database file once per interval, not
/// once per commit.
pub(super) const SERVE_DELAY: Duration = Duration::from_millis(200);

/// An import's commits are thousands of objects each, each page of them
/// written once: copying them at once keeps the copy beside the merging,
/// rather than leaving most of it to SQLite's automatic checkpoint, which
/// the importing thread itself would run once the log reached its limit.
pub(super) const IMPORT_DELAY: Duration = Duration::ZERO;

impl Checkpointer {
    /// A checkpointer of the database at `path` that copies `delay` after a
    /// nudge.
    pub(super) fn spawn(path: &Path, delay: Duration) -> Option<Self> {
        let conn = Connection::open(path).ok()?;
        let (nudge, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || {
                let mut warned: Option<std::time::Instant> = None;
                while rx.recv().is_ok() {
                    // Nudges during the delay are folded into this pass; a
                    // stop (the sender dropped) ends the wait at once, since
                    // the writer's close checkpoints anyway.
                    let until = std::time::Instant::now() + delay;
                    loop {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(()) => {}
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    // PASSIVE never waits for readers or the writer; what it
                    // cannot copy now is copied next time.
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => {
                            if warned.take().is_some() {
                                tracing::info!("background checkpoints work again");
                            }
                        }
                        Err(e) if warned.is_none_or(|at| at.elapsed() >= FAILURE_LOG_EVERY) => {
                            tracing::warn!(
                                error = %e,
                                "background checkpoint failed: the write-ahead log grows until \
                                 one succeeds"
                            );
                            warned = Some(std::time::Instant::now());
                        }
                        Err(e) => tracing::debug!(error = %e, "background checkpoint failed again"),
                    }
                }
            })
            .ok()?;
        Some(Self {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// Says there is something to checkpoint; never blocks.
    pub(super) fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            let _ = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and waits for it, so its connection is closed before
    /// the writer's: the writer's close, the last one, can then fold the WAL
    /// back into the database file and remove it.
    fn drop(&mut self) {
        drop(self.nudge.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
