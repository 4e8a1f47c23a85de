//! Black-box integration tests for `clerk-sync`.
//!
//! Each test runs its own server on 127.0.0.1 port 0 with its own temporary
//! SQLite file: in this process through `clerk_sync::serve::run` where
//! nothing but HTTP and the file matter, or as the real binary where its
//! log, signals, exit status, environment or command line do. Tests talk
//! HTTP to it and read the database with rusqlite. Deliveries are signed by
//! an independent helper that is checked against published Standard
//! Webhooks test vectors.

// A fake of Clerk's Backend API (shapes, limits, faults, TLS) for the import tests.
mod fake_clerk;
// Strangers against the real binary: unsent and trickling bodies, connection floods; secrets in output.
mod hostile;
// The HTTP contract: status codes, check order, limits, paths, slow and odd clients.
mod http;
// The import client against the fake Backend API: paging, 429s, retries, pacing, TLS.
mod import_api;
// `clerk-sync import` itself: filling, merge rules, deletions, resume, beside serve, files.
mod import_cmd;
// Signals, restarts, locks, damaged and moved files, concurrency, order-independence.
mod lifecycle;
// How events change the `users` mirror and `webhook_events`.
mod mirror;
// Organizations, memberships and invitations: payloads, guard, tombstones, views, order.
mod organizations;
// Apps on the machine reading the live mirror as their own user (needs root).
mod readers;
// `--keep-days`: old events and changes pruned, the mirror kept.
mod retention;
// systemd, JSON logs, metrics, and the send, sign, verify and status subcommands.
mod service;
// Signature verification against published vectors, and where secrets come from.
mod signatures;
// The harness: in-process and process servers, HTTP, payloads, signing, the database.
mod support;
