//! Shared harness. Two ways to run a server: [`process`] spawns the real
//! `clerk-sync` binary (for what only a process has: its log, signals, exit
//! codes, environment, command line, systemd notifications), [`inproc`]
//! runs `clerk_sync::serve::run` on a runtime of its own inside the test
//! process (for everything else). Both hand out an [`Endpoint`] to talk to.
//!
//! - [`clerk`]: payload builders and a signer independent of the crate's.
//! - [`client`]: HTTP requests through hyper's client, and the [`Endpoint`].
//! - [`raw_http`]: byte-for-byte exchanges and response parsing.
//! - [`db`]: reading the SQLite file.
//! - [`rng`]: a seeded PRNG for the randomized tests.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod clerk;
pub mod client;
pub mod db;
pub mod inproc;
pub mod process;
pub mod raw_http;
pub mod rng;

pub use clerk::*;
pub use client::*;
pub use db::*;
pub use raw_http::*;
pub use rng::Rng;

/// The secret every test server is configured with unless a test says otherwise.
/// 32 random-looking bytes, `whsec_` + standard base64, as Clerk shows them.
pub const SECRET: &str = "whsec_Y2xlcmstc3luYyBpbnRlZ3JhdGlvbiB0ZXN0IGtleSE=";
/// A second endpoint's secret, for rotation tests.
pub const SECRET_B: &str = "whsec_c2Vjb25kIGVuZHBvaW50IHJvdGF0aW9uIGtleSAwMiE=";
/// A secret the server never knows.
pub const OTHER_SECRET: &str = "whsec_YW4gdW5yZWxhdGVkIHRoaXJkIHNlY3JldCBrZXkgMyE=";

pub const DEFAULT_PATH: &str = "/api/clerk-webhook";

/// Read a fixture shipped with the tests, byte for byte.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).expect("fixture is JSON")
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Assert a response status with the body in the failure message.
#[track_caller]
pub fn assert_status(r: &Resp, want: u16, what: &str) {
    assert_eq!(
        r.status,
        want,
        "{what}: expected {want}, got {} with body {:?}",
        r.status,
        r.text()
    );
}
