//! The SQLite file: the only part of the crate that holds SQL or rusqlite
//! types.
//!
//! One connection writes, owned by the writer thread (group commit);
//! an r2d2 pool of read-only connections serves dedupe look-ups, health
//! checks and metrics, and in WAL mode they never wait for the writer.
//! [`Store`] is the async face the HTTP layer sees.

mod apply;
mod checkpoint;
mod file;
pub mod import;
mod open;
mod paths;
mod queries;
pub mod retention;
pub mod status;
mod tables;
mod writer;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use r2d2_sqlite::SqliteConnectionManager;

pub use apply::{Applier, Merge, Origin};
pub use file::{DbFile, FileError};
pub use open::{migrate, open_writer, read_pool};
pub use paths::{file_len, shm_path, wal_path};
pub use writer::{WriteError, Writer};

use crate::event::{Delivery, Outcome};
use crate::metrics::{Metrics, MirrorFigures};

/// The whole schema; every statement is idempotent.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// Stored in `PRAGMA user_version`. Bump it with every change to
/// `schema.sql`, and teach [`migrate`] the step from the previous version.
pub const SCHEMA_VERSION: i64 = 2;

/// Pool of read-only connections.
pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;

/// How long a read on behalf of a request may take before it is given up.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The database as the request handlers see it: writes go to the writer
/// thread, reads to the pool, each bounded in time.
pub struct Store {
    // Fields drop in this order. Every other connection must be closed
    // before the writer thread closes its own: that last close is what
    // folds the log back into the database file on a clean stop. The
    // writer's thread ends once its handle, last here, is gone.
    /// Stops pruning when the store goes.
    _retention: Option<retention::Retention>,
    readers: ReadPool,
    file: DbFile,
    writer: Writer,
}

impl Store {
    /// Opens the file at `path` for writing (creating and migrating it) and
    /// starts the writer thread, and pruning of what is older than
    /// `keep_days` (0: keep everything). The thread ends once the store is dropped
    /// and the last queued delivery is committed; join it to know that.
    ///
    /// # Errors
    /// Whatever keeps the file from being written safely; one line each.
    pub fn open(
        path: &Path,
        busy: Duration,
        keep_days: u32,
        metrics: Metrics,
    ) -> anyhow::Result<(Self, std::thread::JoinHandle<()>)> {
        let conn = open_writer(path, busy)?;
        let file =
            DbFile::open(path).with_context(|| format!("cannot examine {}", path.display()))?;
        let readers = read_pool(path, busy)?;
        let (writer, thread) = Writer::spawn(conn, file.clone(), metrics, busy)
            .context("cannot start the database writer")?;
        let retention = match keep_days {
            0 => None,
            days => Some(retention::Retention::spawn(path, days).context("cannot start pruning")?),
        };
        Ok((
            Self {
                writer,
                readers,
                file,
                _retention: retention,
            },
            thread,
        ))
    }

    /// Applies `delivery` durably; `budget` is how long it may wait for the
    /// writer to start on it.
    ///
    /// # Errors
    /// [`WriteError`] when it was not committed.
    pub async fn apply(&self, delivery: Delivery, budget: Duration) -> Result<Outcome, WriteError> {
        self.writer.apply(delivery, budget).await
    }

    /// The type recorded for delivery `id`, if it was accepted before;
    /// `None` also when the database does not answer.
    pub async fn recorded_type(&self, id: &str) -> Option<String> {
        let readers = self.readers.clone();
        let id = id.to_owned();
        self.read(move || queries::recorded_type(&readers, &id))
            .await
            .ok()
            .flatten()
    }

    /// Whether the database answers, is still the file at its path, and has
    /// a writer.
    ///
    /// # Errors
    /// Why not, in words fit for a health check's answer.
    pub async fn health(&self) -> anyhow::Result<()> {
        // Reads alone would still succeed with no one left to write: every
        // delivery would then fail while the process looked healthy.
        anyhow::ensure!(self.writer.is_running(), "the database writer has stopped");
        let readers = self.readers.clone();
        let file = self.file.clone();
        self.read(move || queries::check_health(&readers, &file))
            .await
    }

    /// The figures `/metrics` reports.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn figures(&self) -> anyhow::Result<MirrorFigures> {
        let readers = self.readers.clone();
        let path = self.file.path().to_owned();
        self.read(move || queries::mirror_figures(&readers, &path))
            .await
    }

    /// A read run off the async workers, given [`READ_TIMEOUT`].
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(read)).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => anyhow::bail!("the database did not answer in time"),
        }
    }
}

#[cfg(test)]
mod tests;
