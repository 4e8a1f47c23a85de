//! clerk-sync: verified Clerk webhooks into a local SQLite mirror.
//!
//! Clerk announces changes through Svix, signed per the Standard Webhooks
//! scheme. clerk-sync verifies each delivery on its raw bytes, then applies
//! it to one SQLite file with dedupe on the `svix-id`, an `updated_at` guard
//! against out-of-order delivery, and tombstones for deleted objects. A
//! `200` is sent only after the change is on disk.
//!
//! # Data path
//! listener ([`http::server`]) → route ([`http::routes`]) → headers
//! ([`http::headers`]) → body within its limits ([`http::body`]) → verify
//! ([`signature`]) → parse ([`event`]) → apply and group commit
//! ([`store`]) → answer ([`http::webhook`], refusals by
//! [`http::rejection`]).
//!
//! # Layout
//! - [`cli`]: subcommands and flags, each with its environment variable.
//! - [`config`]: `serve`'s validated settings and the timing budget.
//! - [`secrets`]: where the signing secrets come from.
//! - [`redact`]: cutting secrets out of every message and output.
//! - [`signature`]: HMAC-SHA256 `v1` signing and verification over `ring`.
//! - [`http`]: the server, routing and the webhook pipeline; the only
//!   layer that builds responses.
//! - [`event`]: a verified body becomes the change it asks for; depends on
//!   nothing else in the crate.
//! - [`store`]: schema, migration, the writer with group commit, reads;
//!   the only layer that holds SQL.
//! - [`metrics`]: counters and their text encoding; a leaf.
//! - [`serve`]: the composition root of `clerk-sync serve`.
//! - [`notify`]: systemd `Type=notify` readiness and watchdog.
//! - [`shutdown`]: SIGTERM / SIGINT.
//! - [`cmd`]: one module per subcommand besides `serve`.
//! - [`import`]: Clerk's Backend API client and export-file readers that
//!   `clerk-sync import` fills the mirror from.
//! - [`clock`]: wall-clock time in Clerk's units.

pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod event;
pub mod http;
pub mod import;
pub mod metrics;
pub mod notify;
pub mod redact;
pub mod secrets;
pub mod serve;
pub mod shutdown;
pub mod signature;
pub mod store;
