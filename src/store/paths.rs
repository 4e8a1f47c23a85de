//! Where SQLite keeps a database's companion files.

use std::path::{Path, PathBuf};

/// The size of the file at `path`; 0 when there is none.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The write-ahead log of the database at `path`.
pub fn wal_path(path: &Path) -> PathBuf {
    beside(path, "-wal")
}

/// The shared-memory index of the database at `path`.
pub fn shm_path(path: &Path) -> PathBuf {
    beside(path, "-shm")
}

/// SQLite keeps a database's log and index beside the file a symbolic link
/// leads to, not beside the link, also when that file is not there (yet).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = link_target(path).into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where `path` leads through symbolic links, as SQLite follows them.
fn link_target(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    // A link to nothing: follow it by hand (a bounded number of hops, as
    // the kernel does), so that a log left where it points is still found.
    let mut at = path.to_owned();
    for _ in 0..40 {
        match std::fs::read_link(&at) {
            Ok(target) => {
                at = at
                    .parent()
                    .map_or_else(|| target.clone(), |dir| dir.join(&target))
            }
            Err(_) => break,
        }
    }
    at
}
