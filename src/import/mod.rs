//! `import`'s pieces that touch no database: reading Clerk's Backend API,
//! and reading an export file.
//!
//! - [`key`]: the secret key, from `--secret-key-file`, the systemd
//!   credential or `CLERK_SECRET_KEY`; never shown.
//! - [`pace`]: at most N requests in any one second, without bursts.
//! - [`api`]: the Backend API client: the four lists, single lookups,
//!   retries, `429`s, errors that name the likely cause.
//! - [`file`](mod@file): `--from-file`: a JSON array, a `{"data": [...]}` page, JSON
//!   Lines, or the Dashboard's CSV export, read one object at a time.
//!
//! Objects come out as Clerk sent them (or, from a CSV, in the same shape),
//! for the same parser and merge rules as a webhook's `data`.

pub mod api;
pub mod file;
pub mod key;
pub mod pace;

pub use api::{
    ApiClient, ApiError, ApiOptions, Kind, Pages, DEFAULT_API_URL, DEFAULT_RATE, MAX_LIMIT,
};
pub use file::{FileError, Format, Record, UserFile};
pub use key::{KeyError, KeyKind, SecretKey};
pub use pace::Pacer;
