//! The identity of the database file this process writes.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::paths::wal_path;

/// The database file this process opened, told apart from whatever its path
/// names now. SQLite keeps writing to the file it opened even after the path
/// stops naming it (an `rm` to start over, a restore renamed onto the path):
/// every delivery would then be acknowledged into a file nobody reads, and be
/// lost when the process ends. Checking the path's identity after each commit
/// and in health checks turns that into 503s until a restart opens the file
/// the path names. A file overwritten in place keeps its identity and cannot
/// be told apart. The same goes for the write-ahead log: a `-wal` removed
/// under SQLite leaves the last commits in a file only this process holds.
#[derive(Debug, Clone)]
pub struct DbFile {
    path: PathBuf,
    /// Device and inode at open.
    id: (u64, u64),
    /// Where SQLite keeps the log of the file opened.
    wal_path: PathBuf,
    /// The log's device and inode, from when it was first seen.
    wal: std::sync::Arc<std::sync::OnceLock<(u64, u64)>>,
}

/// Why the database file is not the one this process is writing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the database file was removed or moved away; restart clerk-sync")]
    Gone,
    #[error("the database file was replaced by another file; restart clerk-sync to use it")]
    Replaced,
    #[error("cannot check the database file: {0}")]
    Unreadable(String),
    #[error(
        "the database's write-ahead log (-wal) was removed or replaced; its last commits are \
         only in the copy clerk-sync holds open: stop it with SIGTERM, which copies them into \
         the database, and start it again"
    )]
    WalGone,
}

impl DbFile {
    /// Records the identity of the file at `path`, which must exist.
    ///
    /// # Errors
    /// When `path` cannot be examined.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        let file = Self {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            wal_path: wal_path(path),
            wal: std::sync::Arc::default(),
        };
        // Seen now if SQLite has made it already, else at the first check.
        let _ = file.check_wal();
        Ok(file)
    }

    /// Where the opened file is now, as the kernel names it through this
    /// process's open descriptors (SQLite's own): its new path after a move,
    /// with ` (deleted)` after a removal. `None` off Linux or when no
    /// descriptor refers to it.
    pub fn whereabouts(&self) -> Option<PathBuf> {
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|fd| std::fs::metadata(fd).is_ok_and(|m| (m.dev(), m.ino()) == self.id))
            .and_then(|fd| std::fs::read_link(fd).ok())
    }

    /// The path the database was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the write-ahead log of the file opened is kept.
    pub fn wal_path(&self) -> &Path {
        &self.wal_path
    }

    /// Whether `path` still names the file that was opened.
    ///
    /// # Errors
    /// [`FileError`] says what happened to it.
    pub fn check(&self) -> Result<(), FileError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => self.check_wal(),
            Ok(_) => Err(FileError::Replaced),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::Gone),
            Err(e) => Err(FileError::Unreadable(e.to_string())),
        }
    }

    /// Whether the log beside the file is the one first seen there. SQLite
    /// removes it only when the last connection closes, so while this
    /// process runs it stays the same file.
    fn check_wal(&self) -> Result<(), FileError> {
        match std::fs::metadata(&self.wal_path) {
            Ok(meta) => {
                let id = (meta.dev(), meta.ino());
                if *self.wal.get_or_init(|| id) == id {
                    Ok(())
                } else {
                    Err(FileError::WalGone)
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.wal.get() {
                Some(_) => Err(FileError::WalGone),
                None => Ok(()),
            },
            Err(e) => Err(FileError::Unreadable(e.to_string())),
        }
    }
}
