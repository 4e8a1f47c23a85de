//! `import`'s pieces that touch no database: reading Clerk's Backend API,
//! and reading an export file.
//!
//! - [`key`]: the secret key, from `--secret-key-file`, the systemd
//!   credential or `CLERK_SECRET_KEY`; never shown.
//! - [`pace`]: at most N requests in any one second, without bursts.

pub mod key;
pub mod pace;

pub use key::{KeyError, KeyKind, SecretKey};
pub use pace::Pacer;
