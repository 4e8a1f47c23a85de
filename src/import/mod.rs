//! `import`'s pieces that touch no database: reading Clerk's Backend API,
//! and reading an export file.
//!
//! - [`key`]: the secret key, from `--secret-key-file`, the systemd
//!   credential or `CLERK_SECRET_KEY`; never shown.
//! - [`pace`]: at most N requests in any one second, without bursts.
//! - [`api`]: the Backend API client: the four lists, single lookups,
//!   retries, `429`s, errors that name the likely cause.

pub mod api;
pub mod key;
pub mod pace;

pub use api::{
    ApiClient, ApiError, ApiOptions, Kind, Pages, DEFAULT_API_URL, DEFAULT_RATE, MAX_LIMIT,
};
pub use key::{KeyError, KeyKind, SecretKey};
pub use pace::Pacer;
