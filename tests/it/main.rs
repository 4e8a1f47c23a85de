//! Black-box integration tests for the `clerk-sync` binary.
//!
//! Every test starts the real binary on 127.0.0.1 port 0 with its own
//! temporary SQLite file, talks HTTP to it and reads the database with
//! rusqlite. Deliveries are signed by an independent helper that is checked
//! against published Standard Webhooks test vectors.

mod common;
mod fake_clerk;
mod http;
mod import_api;
mod import_cmd;
mod lifecycle;
mod mirror;
mod organizations;
mod retention;
mod service;
mod signatures;
