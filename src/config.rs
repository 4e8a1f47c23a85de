//! `serve`'s settings, validated once, and the timing budget every delivery
//! is answered within.
//!
//! Svix gives up on an answer after 15 s and retries later. Every wait a
//! delivery can meet is set here, and the assertions below check at compile
//! time that together they stay under that deadline: a slow client, a full
//! body budget, a busy writer or a lock held by another process each turn
//! into a refusal Svix retries, never into a timeout it counts as a failure.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::secrets;
use crate::signature::Secrets;

/// How long Svix waits for an answer.
pub const SVIX_DEADLINE: Duration = Duration::from_secs(15);

/// A client must finish sending its request headers within this. The
/// delivery's own clock starts once they are in.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a large body waits, in all, for room in the shared body budget
/// before it is turned away (503). Small bodies never wait.
pub const BUDGET_WAIT: Duration = Duration::from_secs(3);

/// A slow client gets this long to send its whole body (408), not counting
/// the time its body waited for room.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A body must keep up this pace on average, in bytes a second counted from
/// its headers, once [`BODY_GRACE`] is over, or it is cut off (408). Svix
/// sends a delivery of a few KB in one go, within milliseconds of its
/// headers; a body this slow is a stranger holding a connection.
pub const MIN_BODY_RATE: u64 = 8 * 1024;

/// How long a body may take before it must keep up [`MIN_BODY_RATE`]: any
/// delivery up to 16 KiB may take this long, however it trickles in.
pub const BODY_GRACE: Duration = Duration::from_secs(2);

/// How long a delivery may wait for the writer to start on it.
pub const WRITE_BUDGET: Duration = Duration::from_secs(8);

/// The most `--busy-timeout` may be: a write waits no longer for a lock
/// another process holds.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_secs(8);

/// The last resort: whatever happens, answer by then (503).
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(14);

/// What the reading away of an oversized body leaves of [`ANSWER_DEADLINE`]
/// for the `413` itself to go out.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// A client that takes none of its answer for this long is cut off.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// In-flight deliveries get this long to finish after a stop signal; under
/// systemd's default stop timeout of 90 s.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

const fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// Waiting for room, then for the body, ends in time for a refusal before
// the deadline.
const _: () =
    assert!(ms(BUDGET_WAIT) + ms(BODY_TIMEOUT) + ms(ANSWER_MARGIN) <= ms(ANSWER_DEADLINE));
// The pace cuts a silent body off before the body timeout would, and asks
// at most an eighth of what the timeout asks of a body of the default
// --max-body (1 MiB in 10 s).
const _: () = assert!(ms(BODY_GRACE) < ms(BODY_TIMEOUT));
const _: () = assert!(MIN_BODY_RATE * (BODY_TIMEOUT.as_secs()) * 8 <= 1024 * 1024);
// The writer refuses a delivery it could not start, and stops waiting for
// a lock, before the deadline would answer for it.
const _: () = assert!(ms(MAX_BUSY_TIMEOUT) <= ms(WRITE_BUDGET));
const _: () = assert!(ms(WRITE_BUDGET) < ms(ANSWER_DEADLINE));
// The deadline's answer still reaches Svix in time.
const _: () = assert!(ms(ANSWER_DEADLINE) + ms(ANSWER_MARGIN) <= ms(SVIX_DEADLINE));

/// Everything `serve` needs, checked.
#[derive(Debug)]
pub struct Config {
    pub listen: String,
    pub db: PathBuf,
    pub path: String,
    pub secrets: Secrets,
    /// Allowed distance of `svix-timestamp` from now, in seconds.
    pub tolerance: u64,
    pub max_body: u64,
    /// How long a write waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Days of `webhook_events` and `changes` kept; 0 keeps everything.
    pub keep_days: u32,
}

impl Config {
    /// Validates the command line and loads the secrets.
    ///
    /// # Errors
    /// No usable secret, or a setting out of range; one line each.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let busy_timeout = Duration::from_millis(args.busy_timeout);
        anyhow::ensure!(
            busy_timeout <= MAX_BUSY_TIMEOUT,
            "--busy-timeout is at most {} ms",
            MAX_BUSY_TIMEOUT.as_millis()
        );
        anyhow::ensure!(
            args.keep_days != 1,
            "--keep-days 1 is shorter than Svix's retries (about 27.6 hours), so a retried \
             delivery could be applied twice; use 2 or more, or 0 to keep everything"
        );
        Ok(Self {
            listen: args.listen.clone(),
            db: args.db.clone(),
            path: args.path.clone(),
            secrets: secrets::load_secrets(args.secrets.secret_file.as_deref())?,
            tolerance: args.tolerance,
            max_body: args.max_body,
            busy_timeout,
            keep_days: args.keep_days,
        })
    }
}
