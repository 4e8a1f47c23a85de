//! clerk-sync: verified Clerk webhooks into a local SQLite mirror of users.
//!
//! Clerk announces user changes through Svix, signed per the Standard
//! Webhooks scheme. clerk-sync verifies each delivery on its raw bytes,
//! then applies it to one SQLite file with dedupe on the `svix-id`, an
//! `updated_at` guard against out-of-order delivery, and tombstones for
//! deleted users. A `200` is sent only after the change is on disk.
//!
//! # Layout
//! - [`cli`]: subcommands and flags, each with its environment variable.
//! - [`config`]: where the signing secrets come from.
//! - [`signature`]: HMAC-SHA256 `v1` signing and verification over `ring`.
//! - [`event`]: a verified body becomes the change it asks for.
//! - [`db`]: schema, pragmas, and applying one delivery.
//! - [`writer`]: the single writer thread, with group commit.
//! - [`routes`]: HTTP routing and the webhook pipeline.
//! - [`server`]: `serve`: wiring, accept loop, graceful stop.
//! - [`metrics`]: `GET /metrics` in Prometheus text.
//! - [`notify`]: systemd `Type=notify` readiness and watchdog.
//! - [`shutdown`]: SIGTERM / SIGINT.
//! - [`tools`]: the `send`, `sign`, `verify` and `status` subcommands.

pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod event;
pub mod import;
pub mod metrics;
pub mod notify;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod tools;
pub mod writer;
