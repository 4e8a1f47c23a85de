//! Load generator for `clerk-sync`: how many signed Clerk deliveries per
//! second the real binary accepts, how quickly it answers, and how much memory
//! it needs, next to a bare HTTP server that does no work at all (the ceiling
//! this machine and this client allow).
//!
//! For each run it starts the release binary on a fresh database in a
//! temporary directory, signs N realistic deliveries (about 2 KB of
//! `user.created` / `user.updated` each) before the clock starts, sends them
//! over C keep-alive HTTP/1.1 connections, stops the server with SIGTERM, and
//! checks that every delivery answered `200` is in the database.
//!
//! Build the binary first, then run the example in release mode:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example loadgen -- --connections 64 --requests 20000
//! cargo run --release --example loadgen -- --connections 1,16,64 --requests 20000
//! cargo run --release --example loadgen -- --startup-users 100000 --requests 0
//! ```
//!
//! - `--connections 1,16,64` runs a sweep; `--mode` picks the servers:
//!   `both` (the default: bare and clerk-sync), `all` (adds `verify+parse`,
//!   the bare server checking each signature and parsing each event with
//!   clerk-sync's own code but storing nothing, and `writer only`, the
//!   crate's database writer fed parsed deliveries by concurrent tasks in this
//!   process, with no HTTP: together they split clerk-sync's cost into the
//!   request path and the durable write), or one of `clerk-sync`, `bare`,
//!   `checked`, `writer`; `--duration SECS` caps each run.
//! - `--rounds R` repeats the whole sweep and ends with a table of medians.
//!   On a shared or virtual machine one run's figures can move by a third;
//!   each run is compared with the bare run just before it, and the median of
//!   those fractions, with its range, is the figure to quote.
//! - `--startup-users K` first fills a database with K users through the
//!   crate's own write path and measures how long `serve` takes to be ready on
//!   it; `--requests 0` skips the load runs.
//! - The bare server is this same program started with a hidden
//!   `--serve-bare` flag, so its CPU and memory are read exactly as
//!   clerk-sync's are.
//! - The output ends with a Markdown table. Client and server share the
//!   machine's cores, so the figures are for the pair, not the server alone.
//!   The server runs with `synchronous=FULL`: each group commit waits for the
//!   disk, so the disk matters as much as the CPU.
//! - Exit status: 0 when every delivery was answered `200`, every `200` is in
//!   the database and every server exited 0 on SIGTERM; 1 when one of those
//!   checks failed; 2 on an error.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use clerk_sync::signature::Secrets;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// The path `serve` listens on by default; the environment is cleared for the
/// child, so no `CLERK_SYNC_PATH` can move it.
const WEBHOOK_PATH: &str = "/api/clerk-webhook";

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// clerk-sync drains connections for up to 20 s and then waits up to 10 s for
/// its writer; anything beyond that is a hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Above clerk-sync's own 14 s answer deadline, so its 503 is seen rather
/// than a client-side timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_RECONNECTS: u32 = 3;
/// Each run is re-signed just before it starts; capping its length keeps every
/// timestamp inside the server's default 300 s tolerance.
const MAX_DURATION_SECS: u64 = 240;
/// How many times `serve` is started for the startup measurement.
const STARTUP_SAMPLES: usize = 3;
/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ) on
/// every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// Set by SIGINT / SIGTERM: loops notice it, and the guards stop the servers.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for clerk-sync: throughput, latency and memory against a bare HTTP ceiling"
)]
struct Args {
    /// The clerk-sync binary [default: target/release/clerk-sync, next to this example].
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,

    /// Concurrent keep-alive connections; a comma list (1,16,64) runs a sweep.
    #[arg(long, value_name = "C[,C...]", value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: Vec<u32>,

    /// Deliveries per run (0 skips the load runs).
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(0..=200_000))]
    requests: u64,

    /// Longest a run may take, in seconds; whatever is sent by then counts.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,

    /// Distinct Clerk users the deliveries are spread over.
    #[arg(long, value_name = "U", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    users: u64,

    /// Percent of deliveries that are organization and membership events
    /// (organization.updated, organizationMembership.created / .updated),
    /// over one organization per 20 users; the rest are user events.
    #[arg(long, value_name = "PCT", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100))]
    orgs: u64,

    /// Which servers to measure.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,

    /// Repeat the whole sweep R times and end with the median of each figure;
    /// "% of bare" is then the median of each run against the bare run just
    /// before it, with its range.
    #[arg(long, value_name = "R", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,

    /// Before the load runs, measure the time to ready on a database of K users.
    #[arg(long, value_name = "K",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    startup_users: Option<u64>,

    /// Internal: run as the bare ceiling server.
    #[arg(long, hide = true)]
    serve_bare: bool,

    /// Internal: the bare server also verifies and parses each delivery.
    #[arg(long, hide = true, requires = "serve_bare")]
    check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    ClerkSync,
    Bare,
    /// The bare server plus signature check and event parsing: no database.
    Checked,
    /// clerk-sync's database writer alone, in this process: no HTTP.
    Writer,
    /// Bare and clerk-sync.
    Both,
    /// Bare, checked, writer and clerk-sync.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Bare,
    Checked,
    Writer,
    ClerkSync,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bare => "bare",
            Target::Checked => "verify+parse",
            Target::Writer => "writer only",
            Target::ClerkSync => "clerk-sync",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.serve_bare {
        return match serve_bare(args.check) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen --serve-bare: error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let outcome = watch_signals().and_then(|()| run(&args));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: FAILED (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Takes over SIGINT and SIGTERM so that an interrupted run still goes through
/// the guards that stop the servers, instead of leaving them orphaned.
fn watch_signals() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, not in the thread, so there is no window in which a
    // signal still kills the process outright.
    let (mut term, mut int) = {
        let _entered = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    STOPPING.store(true, Ordering::Relaxed);
                    eprintln!("loadgen: interrupted; stopping the servers");
                }
            });
        })?;
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if cfg!(debug_assertions) {
        eprintln!("loadgen: warning: built without --release; the client itself is slow");
    }
    let targets: &[Target] = match args.mode {
        Mode::Both => &[Target::Bare, Target::ClerkSync],
        Mode::All => &[
            Target::Bare,
            Target::Checked,
            Target::Writer,
            Target::ClerkSync,
        ],
        Mode::Bare => &[Target::Bare],
        Mode::Checked => &[Target::Checked],
        Mode::Writer => &[Target::Writer],
        Mode::ClerkSync => &[Target::ClerkSync],
    };
    let needs_bin =
        args.startup_users.is_some() || (args.requests > 0 && targets.contains(&Target::ClerkSync));
    let bin = if needs_bin {
        Some(resolve_bin(args.bin.as_deref())?)
    } else {
        None
    };
    let dir = tempfile::Builder::new()
        .prefix("clerk-sync-loadgen-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let secret = Secret::generate()?;
    let mut ok = true;

    if let (Some(k), Some(bin)) = (args.startup_users, bin.as_deref()) {
        ok &= measure_startup(bin, dir.path(), &secret, k)?;
    }
    if args.requests == 0 {
        return Ok(ok);
    }

    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let gen_started = Instant::now();
    let deliveries = Arc::new(generate(
        args.requests as usize,
        args.users,
        args.orgs,
        &mut Rng::seeded()?,
    )?);
    let bytes: usize = deliveries.iter().map(|d| d.body.len()).sum();
    let created = deliveries
        .iter()
        .filter(|d| d.event_type == "user.created")
        .count();
    let organization = deliveries
        .iter()
        .filter(|d| d.event_type.starts_with("organization"))
        .count();
    println!(
        "{} deliveries over {} users ({} user.created, {} user.updated, {} organization and membership), average body {:.0} bytes, generated in {} ms; {} cores shared by client and server",
        deliveries.len(),
        args.users,
        created,
        deliveries.len() - created - organization,
        organization,
        bytes as f64 / deliveries.len() as f64,
        gen_started.elapsed().as_millis(),
        cores,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for round in 1..=args.rounds as usize {
        if args.rounds > 1 {
            println!();
            println!("== round {round} of {}", args.rounds);
        }
        for &connections in &args.connections {
            for &target in targets {
                if stopping() {
                    bail!("interrupted");
                }
                let setup = RunSetup {
                    round,
                    target,
                    connections: connections as usize,
                    duration: Duration::from_secs(args.duration),
                    bin: bin.as_deref(),
                    dir: dir.path(),
                    secret: &secret,
                };
                let row = if target == Target::Writer {
                    run_writer(&rt, &setup, &deliveries)?
                } else {
                    run_once(&rt, &setup, &deliveries)?
                };
                ok &= row.passed;
                rows.push(row);
            }
        }
    }
    let compare = matches!(args.mode, Mode::Both | Mode::All);
    print_table(&rows, compare, args.rounds > 1);
    if args.rounds > 1 {
        print_medians(&rows, compare, args.rounds);
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------
// Secrets and signing

struct Secret {
    /// `whsec_` + base64, as Clerk's dashboard shows it; goes to the server.
    text: String,
    key: hmac::Key,
}

impl Secret {
    fn generate() -> anyhow::Result<Self> {
        let mut raw = [0u8; 24];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        Ok(Self {
            text: format!("whsec_{}", STANDARD.encode(raw)),
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// The Standard Webhooks `v1` signature: HMAC-SHA256 over
    /// `{id}.{timestamp}.{body}` with the decoded secret, in standard base64.
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

// ---------------------------------------------------------------------------
// Realistic deliveries

/// A small, fast generator; the data must look varied, not be unpredictable.
/// Seeded from the system's secure source so ids differ between runs.
struct Rng(u64);

impl Rng {
    fn seeded() -> anyhow::Result<Self> {
        let mut seed = [0u8; 8];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        Ok(Self(u64::from_le_bytes(seed)))
    }

    /// SplitMix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn base62(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    /// A Clerk-style id: `user_`, `idn_`, `msg_`... and 27 base62 characters.
    fn id(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.base62(27))
    }

    /// A Svix-style message id: `msg_` and a millisecond KSUID, i.e. 27
    /// base62 characters that sort by creation time (8 for the milliseconds,
    /// then 19 random). Svix's real ids are ordered this way, so inserts into
    /// `webhook_events` land near its end rather than all over it.
    fn message_id(&mut self, ms: u64) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut time = [b'0'; 8];
        let mut rest = ms;
        for digit in time.iter_mut().rev() {
            *digit = ALPHABET[(rest % 62) as usize];
            rest /= 62;
        }
        format!("msg_{}{}", String::from_utf8_lossy(&time), self.base62(19))
    }
}

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Edsger",
    "Frances", "Donald", "Radia", "Ken", "Hedy", "Tim", "Adele", "John", "Sophie", "Niklaus",
    "Shafi",
];
#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov",
    "Dijkstra", "Allen", "Knuth", "Perlman", "Thompson", "Lamarr", "Berners-Lee", "Goldberg",
    "McCarthy", "Wilson", "Wirth", "Goldwasser",
];
#[rustfmt::skip]
const DOMAINS: &[&str] = &[
    "example.com", "example.org", "example.net", "mail.example.com",
];
#[rustfmt::skip]
const PLANS: &[&str] = &[
    "free", "starter", "pro", "team", "enterprise",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
];

/// What stays the same about one user from event to event.
struct BenchUser {
    id: String,
    first: &'static str,
    last: &'static str,
    username: String,
    email: String,
    email_id: String,
    phone: Option<(String, String)>,
    google: Option<(String, String)>,
    external_id: Option<String>,
    plan: &'static str,
    created_at: i64,
}

impl BenchUser {
    fn new(rng: &mut Rng, created_at: i64) -> Self {
        let first = rng.pick(FIRST_NAMES);
        let last = rng.pick(LAST_NAMES);
        let username = format!("{}{}", first.to_lowercase(), rng.below(10_000));
        let email = format!(
            "{}.{}{}@{}",
            first.to_lowercase(),
            last.to_lowercase(),
            rng.below(1000),
            rng.pick(DOMAINS)
        );
        let phone = (rng.below(100) < 15)
            .then(|| (rng.id("idn_"), format!("+1555{:07}", rng.below(10_000_000))));
        let google = (rng.below(100) < 15).then(|| (rng.id("idn_"), rng.id("eac_")));
        let external_id = (rng.below(100) < 50).then(|| format!("acct-{}", rng.below(1 << 40)));
        Self {
            id: rng.id("user_"),
            first,
            last,
            username,
            email,
            email_id: rng.id("idn_"),
            phone,
            google,
            external_id,
            plan: rng.pick(PLANS),
            created_at,
        }
    }

    /// The user object as Clerk sends it in `data`, at version `updated_at`.
    fn object(&self, updated_at: i64, rng: &mut Rng) -> Value {
        let mut email_links = Vec::new();
        let mut external_accounts = Vec::new();
        if let Some((identification_id, account_id)) = &self.google {
            email_links.push(json!({ "id": identification_id, "type": "oauth_google" }));
            external_accounts.push(json!({
                "approved_scopes": "email openid profile",
                "created_at": self.created_at,
                "email_address": self.email,
                "family_name": self.last,
                "given_name": self.first,
                "id": account_id,
                "identification_id": identification_id,
                "image_url": format!("https://lh3.googleusercontent.com/a/{}=s96-c", &self.id[5..]),
                "label": null,
                "object": "google_account",
                "provider": "oauth_google",
                "provider_user_id": format!("1{:020}", rng.below(u64::MAX / 10)),
                "public_metadata": {},
                "updated_at": updated_at,
                "username": null,
                "verification": verified("oauth_google"),
            }));
        }
        let phone_numbers: Vec<Value> = self
            .phone
            .iter()
            .map(|(id, number)| {
                json!({
                    "backup_codes": null,
                    "created_at": self.created_at,
                    "default_second_factor": false,
                    "id": id,
                    "linked_to": [],
                    "object": "phone_number",
                    "phone_number": number,
                    "reserved_for_second_factor": false,
                    "updated_at": self.created_at,
                    "verification": verified("phone_code"),
                })
            })
            .collect();
        let email_strategy = if self.google.is_some() {
            "from_oauth_google"
        } else {
            "email_code"
        };
        let image_src = format!(
            "{{\"type\":\"proxy\",\"src\":\"https://images.clerk.dev/oauth_google/img_{}\"}}",
            &self.id[5..]
        );
        json!({
            "backup_code_enabled": false,
            "banned": false,
            "create_organization_enabled": true,
            "create_organizations_limit": null,
            "created_at": self.created_at,
            "delete_self_enabled": true,
            "email_addresses": [{
                "created_at": self.created_at,
                "email_address": self.email,
                "id": self.email_id,
                "linked_to": email_links,
                "matches_sso_connection": false,
                "object": "email_address",
                "reserved": false,
                "updated_at": self.created_at,
                "verification": verified(email_strategy),
            }],
            "enterprise_accounts": [],
            "external_accounts": external_accounts,
            "external_id": self.external_id,
            "first_name": self.first,
            "has_image": self.google.is_some(),
            "id": self.id,
            "image_url": format!("https://img.clerk.com/{}", URL_SAFE_NO_PAD.encode(image_src)),
            "last_active_at": updated_at,
            "last_name": self.last,
            "last_sign_in_at": updated_at - 1000 * rng.below(3600) as i64,
            "legal_accepted_at": null,
            "locked": false,
            "lockout_expires_in_seconds": null,
            "mfa_disabled_at": null,
            "mfa_enabled_at": null,
            "object": "user",
            "passkeys": [],
            "password_enabled": self.google.is_none(),
            "phone_numbers": phone_numbers,
            "primary_email_address_id": self.email_id,
            "primary_phone_number_id": self.phone.as_ref().map(|(id, _)| id),
            "primary_web3_wallet_id": null,
            "private_metadata": { "stripe_customer_id": format!("cus_{}", &self.id[5..19]), "seats": rng.below(50) },
            "public_metadata": { "plan": self.plan, "role": "member", "onboarded": true },
            "saml_accounts": [],
            "totp_enabled": false,
            "two_factor_enabled": self.phone.is_some(),
            "unsafe_metadata": { "theme": "dark", "locale": "en-US" },
            "updated_at": updated_at,
            "username": self.username,
            "verification_attempts_remaining": 100,
            "web3_wallets": [],
        })
    }
}

/// A completed verification, as Clerk attaches to every identification.
fn verified(strategy: &str) -> Value {
    json!({ "attempts": null, "expire_at": null, "status": "verified", "strategy": strategy })
}

/// The envelope Clerk wraps every user object in.
fn envelope(event_type: &str, data: Value, timestamp: i64, rng: &mut Rng) -> Value {
    json!({
        "data": data,
        "event_attributes": {
            "http_request": {
                "client_ip": format!("203.0.113.{}", rng.below(256)),
                "user_agent": rng.pick(USER_AGENTS),
            }
        },
        "instance_id": "ins_2hKq7bT4mN9xW3vR8pL5cYdZ1aE",
        "object": "event",
        "timestamp": timestamp,
        "type": event_type,
    })
}

/// One delivery: everything but the time-dependent signature headers.
struct Delivery {
    id: String,
    event_type: &'static str,
    body: Bytes,
}

/// ~30 % `user.created`, ~70 % `user.updated`, over `users` users, with
/// `updated_at` rising with the index so that the mirror's ordering guard sees
/// what it sees in production: mostly newer versions, a few overtaken ones.
fn generate(n: usize, users: u64, orgs: u64, rng: &mut Rng) -> anyhow::Result<Vec<Delivery>> {
    let now = now_ms();
    let people: Vec<BenchUser> = (0..users)
        .map(|i| BenchUser::new(rng, now - 86_400_000 + i as i64))
        .collect();
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 4096 == 0 && stopping() {
            bail!("interrupted");
        }
        let who = rng.below(users);
        let user = &people[who as usize];
        let updated_at = now + i as i64;
        let (event_type, data) = if rng.below(100) < orgs {
            organization_event(who, updated_at, rng)
        } else if rng.below(100) < 30 {
            ("user.created", user.object(updated_at, rng))
        } else {
            ("user.updated", user.object(updated_at, rng))
        };
        let body = envelope(event_type, data, updated_at, rng);
        // As if Clerk created 20 messages a millisecond: ids ascend from one
        // millisecond to the next and are in random order within one.
        let id = rng.message_id(now as u64 + i as u64 / 20);
        if !seen.insert(id.clone()) {
            bail!("generated the same svix-id twice; the random source is broken");
        }
        out.push(Delivery {
            id,
            event_type,
            body: Bytes::from(serde_json::to_vec(&body)?),
        });
    }
    Ok(out)
}

/// An organization or membership event for user number `who`, whose
/// organization is one per 20 users; about 1.5 KB, as Clerk's examples.
fn organization_event(who: u64, updated_at: i64, rng: &mut Rng) -> (&'static str, Value) {
    let org_id = format!("org_bench{:022}", who / 20);
    let organization = json!({
        "object": "organization", "id": org_id, "name": format!("Organization {}", who / 20),
        "slug": format!("organization-{}", who / 20), "image_url": "https://img.clerk.com/xxxxxx",
        "has_image": true, "members_count": 20, "missing_member_with_elevated_permissions": false,
        "pending_invitations_count": 0, "max_allowed_memberships": 50, "admin_delete_enabled": true,
        "public_metadata": {"tier": "team"}, "private_metadata": {},
        "created_by": format!("user_bench{:022}", who / 20 * 20),
        "created_at": updated_at - 86_400_000, "updated_at": updated_at
    });
    if rng.below(100) < 30 {
        return ("organization.updated", organization);
    }
    let role = if who % 20 == 0 {
        "org:admin"
    } else {
        "org:member"
    };
    let event_type = if rng.below(100) < 40 {
        "organizationMembership.created"
    } else {
        "organizationMembership.updated"
    };
    let membership = json!({
        "object": "organization_membership", "id": format!("orgmem_bench{who:022}"),
        "role": role, "role_name": role.trim_start_matches("org:"),
        "permissions": ["org:sys_profile:read", "org:sys_memberships:read"],
        "public_metadata": {}, "private_metadata": {}, "organization": organization,
        "public_user_data": {
            "user_id": format!("user_bench{who:022}"), "first_name": "Bench", "last_name": "User",
            "image_url": "https://img.clerk.com/yyyyy", "has_image": false,
            "identifier": format!("bench{who}@example.com")
        },
        "created_at": updated_at - 3_600_000, "updated_at": updated_at
    });
    (event_type, membership)
}

/// The three signature headers for one delivery, ready to clone into requests.
struct Signed {
    id: HeaderValue,
    timestamp: HeaderValue,
    signature: HeaderValue,
}

/// Signs every delivery with the current time; done right before each run so
/// no timestamp is near the edge of the server's tolerance.
fn sign_all(deliveries: &[Delivery], secret: &Secret) -> anyhow::Result<Vec<Signed>> {
    let timestamp = now_ms() / 1000;
    let ts = HeaderValue::from_str(&timestamp.to_string())?;
    deliveries
        .iter()
        .map(|d| {
            Ok(Signed {
                id: HeaderValue::from_str(&d.id)?,
                timestamp: ts.clone(),
                signature: HeaderValue::from_str(&secret.sign(&d.id, timestamp, &d.body))?,
            })
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------
// Child processes

/// Owns a child process and makes sure it is gone when the guard is: on an
/// error, a panic or an interrupt, Drop sends SIGTERM and, if that is not
/// enough, SIGKILL.
struct ChildGuard {
    name: &'static str,
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `within`; a child still running then is
    /// killed and reported as an error.
    fn stop(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if let Some(status) = self.child.try_wait()? {
            self.status = Some(status);
            return Ok(status);
        }
        // Without libc there is no kill(2) here; the kill command is the
        // portable way to send anything other than SIGKILL.
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
            self.status = Some(self.child.wait()?);
            bail!("could not send SIGTERM to {}; killed it", self.name);
        }
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                return Ok(status);
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                self.status = Some(self.child.wait()?);
                bail!(
                    "{} did not exit within {} s of SIGTERM; killed it",
                    self.name,
                    within.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            // stop() kills the child itself when SIGTERM is not enough.
            let _ = self.stop(Duration::from_secs(5));
        }
    }
}

/// A started server: its process, where it listens, how long it took.
struct Server {
    process: ChildGuard,
    addr: SocketAddr,
    ready_after: Duration,
    log: Arc<Mutex<LogTail>>,
}

/// The last lines a server wrote, for error messages.
#[derive(Default)]
struct LogTail {
    lines: Vec<String>,
    echoed: usize,
}

impl LogTail {
    const KEEP: usize = 20;
    const ECHO: usize = 10;

    fn push(&mut self, name: &str, line: String) {
        // Warnings during a run (503s, failed batches) matter; show a few.
        if line.contains("WARN") || line.contains("ERROR") {
            if self.echoed < Self::ECHO {
                eprintln!("  {name}: {line}");
            } else if self.echoed == Self::ECHO {
                eprintln!("  {name}: (further warnings not shown)");
            }
            self.echoed += 1;
        }
        if self.lines.len() == Self::KEEP {
            self.lines.remove(0);
        }
        self.lines.push(line);
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Starts `clerk-sync serve` on a free port and waits for its listening line.
fn start_clerk_sync(bin: &Path, db: &Path, secret: &Secret) -> anyhow::Result<Server> {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        // A clean environment: no stray CLERK_SYNC_* setting, secret file or
        // systemd credential can change what is measured.
        .env_clear()
        .env("CLERK_WEBHOOK_SIGNING_SECRET", &secret.text)
        // Only the listening line (and warnings): a log line per delivery
        // would cost throughput that production with RUST_LOG=warn does not pay.
        .env("RUST_LOG", "clerk_sync::serve=info,warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    start("clerk-sync", command, |child| {
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)
    })
}

/// Starts this program as the bare ceiling server; with a secret, the server
/// also verifies and parses every delivery.
fn start_bare(check: Option<&Secret>) -> anyhow::Result<Server> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut command = Command::new(exe);
    command.arg("--serve-bare").env_clear();
    if let Some(secret) = check {
        command
            .arg("--check")
            .env("CLERK_WEBHOOK_SIGNING_SECRET", &secret.text);
    }
    command
        // Its stdin is how it notices this process is gone (see serve_bare).
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    start("bare", command, |child| {
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)
    })
}

/// Spawns `command`, reads `output` on a thread until the line
/// `... listening on http://ADDR ...` shows up (bounded), and keeps draining
/// it afterwards so the child never blocks on a full pipe.
fn start(
    name: &'static str,
    mut command: Command,
    output: impl FnOnce(&mut Child) -> Option<Box<dyn std::io::Read + Send>>,
) -> anyhow::Result<Server> {
    let spawned = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut process = ChildGuard {
        name,
        child,
        status: None,
    };
    let stream = output(&mut process.child).context("no output pipe")?;
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel::<(SocketAddr, Instant)>();
    let tail = log.clone();
    thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if !announced {
                    if let Some(addr) = listening_addr(&line) {
                        announced = true;
                        let _ = tx.send((addr, Instant::now()));
                        continue;
                    }
                }
                if let Ok(mut tail) = tail.lock() {
                    tail.push(name, line);
                }
            }
            // Dropping tx tells the waiter the child closed its output.
        })?;
    let until = spawned + READY_TIMEOUT;
    loop {
        if stopping() {
            bail!("interrupted");
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "{name} did not report its address within {} s; its last output:\n{}",
                READY_TIMEOUT.as_secs(),
                log.lock().map(|t| t.text()).unwrap_or_default()
            );
        }
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok((addr, at)) => {
                return Ok(Server {
                    process,
                    addr,
                    ready_after: at - spawned,
                    log,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = process.stop(Duration::from_secs(5))?;
                bail!(
                    "{name} exited ({status}) before listening; its output:\n{}",
                    log.lock().map(|t| t.text()).unwrap_or_default()
                );
            }
        }
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '/')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn resolve_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(path) => path.to_path_buf(),
        None => {
            // target/release/examples/loadgen -> target/release/clerk-sync
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            exe.parent()
                .and_then(Path::parent)
                .context("cannot derive the target directory from this program's path")?
                .join("clerk-sync")
        }
    };
    if !bin.is_file() {
        bail!(
            "no clerk-sync binary at {}: run `cargo build --release` first (or pass --bin PATH)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Peak resident set size (VmHWM) of a running process, in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// User and system CPU time a process has used so far, in seconds.
fn cpu_seconds(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / TICKS_PER_SECOND, stime / TICKS_PER_SECOND))
}

// ---------------------------------------------------------------------------
// The bare ceiling server

/// Reads each body in full and answers 200 with a tiny JSON body: the HTTP
/// and socket work every receiver pays, and nothing else. With `check`, it
/// also verifies the signature and parses the event with clerk-sync's own
/// code, but stores nothing: what is left between that and clerk-sync is the
/// cost of the durable write.
fn serve_bare(check: bool) -> anyhow::Result<()> {
    let secrets = if check {
        let text = std::env::var("CLERK_WEBHOOK_SIGNING_SECRET")
            .context("--check needs CLERK_WEBHOOK_SIGNING_SECRET")?;
        Some(Secrets::parse(&text)?)
    } else {
        None
    };
    let secrets = Arc::new(secrets);
    // If the load generator dies without stopping us, its end of our stdin
    // closes; leave then rather than linger as an orphan.
    thread::Builder::new()
        .name("parent-watch".into())
        .spawn(|| {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let builder = hyper::server::conn::http1::Builder::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let secrets = secrets.clone();
                    let conn = builder.serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(move |req| bare_answer(secrets.clone(), req)),
                    );
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok(())
    })
}

async fn bare_answer(
    secrets: Arc<Option<Secrets>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let status = match secrets.as_ref() {
        Some(secrets) => check(secrets, &parts.headers, &body),
        None => StatusCode::OK,
    };
    std::hint::black_box(body);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The signature check and event parsing of a delivery, as `serve` does them.
fn check(secrets: &Secrets, headers: &hyper::HeaderMap, body: &[u8]) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        header("svix-id"),
        header("svix-timestamp").and_then(clerk_sync::signature::parse_timestamp),
        header("svix-signature"),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let now_ms = clerk_sync::clock::now_ms();
    let tolerance = clerk_sync::signature::DEFAULT_TOLERANCE;
    if secrets
        .verify(id, timestamp, signature, body, now_ms / 1000, tolerance)
        .is_err()
    {
        return StatusCode::UNAUTHORIZED;
    }
    match clerk_sync::event::parse(id.to_owned(), body, now_ms) {
        Ok(delivery) => {
            std::hint::black_box(delivery);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

// ---------------------------------------------------------------------------
// One load run

/// Group commit as the server counted it (`/metrics`): commits, and the
/// deliveries they made durable.
async fn scrape_commits(addr: SocketAddr) -> anyhow::Result<(u64, f64)> {
    let text = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut sender = connect(addr).await?;
        let request = Request::get("/metrics")
            .header(HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let body = sender.send_request(request).await?.into_body();
        anyhow::Ok(body.collect().await?.to_bytes())
    })
    .await
    .context("/metrics did not answer in time")??;
    commit_figures(&String::from_utf8_lossy(&text))
}

/// Commits and committed deliveries, from a `/metrics` text.
fn commit_figures(text: &str) -> anyhow::Result<(u64, f64)> {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .with_context(|| format!("no {name} in /metrics"))
    };
    let count = value("clerk_sync_commit_deliveries_count")?;
    Ok((count as u64, value("clerk_sync_commit_deliveries_sum")?))
}

/// Prints how the deliveries were grouped into commits; false when fewer
/// were committed than were answered 200, which must never happen.
fn report_commits(count: u64, sum: f64, ok: usize) -> bool {
    println!(
        "  group commit: {count} commits, {:.1} deliveries per commit",
        sum / count.max(1) as f64
    );
    let consistent = sum >= ok as f64;
    if !consistent {
        println!("  FAILED: {sum} deliveries committed, fewer than the {ok} answered 200");
    }
    consistent
}

struct RunSetup<'a> {
    /// Which repetition of the sweep this run belongs to (from 1).
    round: usize,
    target: Target,
    connections: usize,
    duration: Duration,
    bin: Option<&'a Path>,
    dir: &'a Path,
    secret: &'a Secret,
}

/// One answered (or failed) request. `status` 0 means no answer arrived.
struct Sample {
    index: usize,
    status: u16,
    latency: Duration,
}

struct Row {
    round: usize,
    target: Target,
    connections: usize,
    rate: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    rss_mb: Option<f64>,
    cpu_us_per_request: Option<f64>,
    passed: bool,
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    setup: &RunSetup<'_>,
    deliveries: &Arc<Vec<Delivery>>,
) -> anyhow::Result<Row> {
    let name = setup.target.name();
    let db = setup.dir.join(format!("bench-{}.db", setup.connections));
    let mut server = match setup.target {
        Target::Bare => start_bare(None)?,
        Target::Checked => start_bare(Some(setup.secret))?,
        Target::ClerkSync => start_clerk_sync(
            setup.bin.context("no clerk-sync binary")?,
            &db,
            setup.secret,
        )?,
        Target::Writer => bail!("the writer runs in this process"),
    };
    let pid = server.process.pid();
    let signed = Arc::new(sign_all(deliveries, setup.secret)?);
    let client_cpu = cpu_seconds("self");
    let (samples, elapsed) = rt.block_on(load(
        server.addr,
        deliveries.clone(),
        signed,
        setup.connections,
        setup.duration,
    ))?;
    let client_cpu = own_cpu_since(client_cpu);
    // Read before stopping: the figures vanish with the process.
    let commits = match setup.target {
        // A binary from before the metric existed is still measured.
        Target::ClerkSync => match rt.block_on(scrape_commits(server.addr)) {
            Ok(figures) => Some(figures),
            Err(e) => {
                println!("  group commit: unknown ({e:#})");
                None
            }
        },
        _ => None,
    };
    let rss_mb = peak_rss_mb(pid);
    let server_cpu = cpu_seconds(&pid.to_string());
    let stop_started = Instant::now();
    let exit = server.process.stop(STOP_TIMEOUT);
    let stop_took = stop_started.elapsed();

    let mut passed = true;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &samples {
        *statuses.entry(s.status).or_default() += 1;
    }
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let rate = ok as f64 / elapsed.as_secs_f64();
    let [p50, p90, p99, max] = latency_ms(&samples);

    println!();
    println!(
        "{name}, {} connection{}: {ok} of {} sent answered 200 in {:.2} s = {rate:.0} deliveries/s",
        setup.connections,
        if setup.connections == 1 { "" } else { "s" },
        samples.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "  latency ms: p50 {p50:.2}, p90 {p90:.2}, p99 {p99:.2}, max {max:.2}; ready {:.0} ms after spawn",
        server.ready_after.as_secs_f64() * 1e3
    );
    println!(
        "  server: peak RSS {}, CPU {}; load generator CPU {}",
        rss_mb.map_or("unknown".into(), |m| format!("{m:.1} MB")),
        server_cpu.map_or("unknown".into(), |(user, sys)| format!(
            "{:.2} s ({:.0} us/delivery, {:.0} % of it in the kernel)",
            user + sys,
            (user + sys) * 1e6 / ok.max(1) as f64,
            100.0 * sys / (user + sys).max(f64::MIN_POSITIVE)
        )),
        client_cpu.map_or("unknown".into(), |s| format!("{s:.2} s")),
    );
    if let Some((count, sum)) = commits {
        passed &= report_commits(count, sum, ok);
    }
    let others: Vec<String> = statuses
        .iter()
        .filter(|(&status, _)| status != 200)
        .map(|(&status, &n)| match status {
            0 => format!("{n} without an answer"),
            _ => format!("{n} x {status}"),
        })
        .collect();
    if !others.is_empty() {
        passed = false;
        println!("  not 200: {}", others.join(", "));
    }
    if (samples.len() as u64) < deliveries.len() as u64 {
        println!(
            "  stopped at the {} s limit after {} of {} deliveries",
            setup.duration.as_secs(),
            samples.len(),
            deliveries.len()
        );
    }
    match exit {
        Ok(status) if status.success() => {
            println!("  SIGTERM: exited 0 after {} ms", stop_took.as_millis())
        }
        Ok(status) => {
            passed = false;
            println!(
                "  SIGTERM: FAILED, {status}; last output:\n{}",
                server.log.lock().map(|t| t.text()).unwrap_or_default()
            );
        }
        Err(e) => {
            passed = false;
            println!("  SIGTERM: FAILED, {e:#}");
        }
    }
    if setup.target == Target::ClerkSync {
        passed &= check_database(&db, deliveries, &samples)?;
        remove_database(&db);
    }
    Ok(Row {
        round: setup.round,
        target: setup.target,
        connections: setup.connections,
        rate,
        p50,
        p90,
        p99,
        max,
        rss_mb,
        cpu_us_per_request: server_cpu.map(|(user, sys)| (user + sys) * 1e6 / ok.max(1) as f64),
        passed,
    })
}

/// The database half of clerk-sync alone: the deliveries, parsed before the
/// clock starts, go through the crate's own writer (group commit,
/// `synchronous=FULL`, background checkpoints) from `connections` concurrent
/// tasks of this process, with no HTTP and no signature check. The CPU figure
/// is this whole process's: the writer, its checkpointer and the tasks
/// handing deliveries over.
fn run_writer(
    rt: &tokio::runtime::Runtime,
    setup: &RunSetup<'_>,
    deliveries: &[Delivery],
) -> anyhow::Result<Row> {
    use clerk_sync::store::Writer;
    let db = setup.dir.join(format!("writer-{}.db", setup.connections));
    let now = now_ms();
    let parsed = deliveries
        .iter()
        .map(|d| clerk_sync::event::parse(d.id.clone(), &d.body, now))
        .collect::<Result<Vec<_>, _>>()
        .context("a generated delivery does not parse")?;
    let mut queue = parsed.into_iter().enumerate().collect::<Vec<_>>();
    queue.reverse();
    let queue = Arc::new(Mutex::new(queue));
    let conn = clerk_sync::store::open_writer(&db, Duration::from_secs(5))?;
    let file = clerk_sync::store::DbFile::open(&db)?;
    let metrics = clerk_sync::metrics::Metrics::new();
    let cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let deadline = started + setup.duration;
    let (writer, thread) = {
        let _entered = rt.enter();
        Writer::spawn(conn, file, metrics.clone(), Duration::from_secs(5))?
    };
    let samples = rt.block_on(async {
        let tasks: Vec<_> = (0..setup.connections)
            .map(|_| {
                let writer = writer.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop());
                        let Some((index, delivery)) = next else { break };
                        if Instant::now() > deadline || stopping() {
                            break;
                        }
                        let sent = Instant::now();
                        let result = writer.apply(delivery, Duration::from_secs(8)).await;
                        samples.push(Sample {
                            index,
                            status: if result.is_ok() { 200 } else { 503 },
                            latency: sent.elapsed(),
                        });
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all
    });
    let elapsed = started.elapsed();
    drop(writer);
    let _ = thread.join();
    let cpu = own_cpu_since(cpu_before);
    let ok = samples.iter().filter(|s| s.status == 200).count();
    let rate = ok as f64 / elapsed.as_secs_f64();
    let [p50, p90, p99, max] = latency_ms(&samples);
    println!();
    println!(
        "writer only, {} tasks: {ok} of {} applied in {:.2} s = {rate:.0} deliveries/s",
        setup.connections,
        samples.len(),
        elapsed.as_secs_f64()
    );
    println!("  latency ms: p50 {p50:.2}, p90 {p90:.2}, p99 {p99:.2}, max {max:.2}");
    let cpu_us = cpu.map(|s| s * 1e6 / ok.max(1) as f64);
    println!(
        "  CPU of this process: {}",
        cpu_us.map_or("unknown".into(), |c| format!("{c:.0} us/delivery"))
    );
    let mut passed = ok == samples.len();
    let (commits, committed) =
        commit_figures(&metrics.encode(&clerk_sync::metrics::MirrorFigures::default())?)?;
    passed &= report_commits(commits, committed, ok);
    passed &= check_database(&db, deliveries, &samples)?;
    remove_database(&db);
    Ok(Row {
        round: setup.round,
        target: Target::Writer,
        connections: setup.connections,
        rate,
        p50,
        p90,
        p99,
        max,
        rss_mb: None,
        cpu_us_per_request: cpu_us,
        passed,
    })
}

/// CPU seconds this process has used since `before` was read.
fn own_cpu_since(before: Option<(f64, f64)>) -> Option<f64> {
    cpu_seconds("self")
        .zip(before)
        .map(|((user, sys), (user0, sys0))| user + sys - user0 - sys0)
}

/// p50, p90, p99 and max latency of the answered samples, in milliseconds.
fn latency_ms(samples: &[Sample]) -> [f64; 4] {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.status != 0)
        .map(|s| s.latency)
        .collect();
    latencies.sort_unstable();
    [50.0, 90.0, 99.0, 100.0].map(|p| percentile_ms(&latencies, p))
}

/// Each run starts empty; once measured, the file has served its purpose.
fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Nearest-rank percentile, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// Sends the deliveries over `connections` keep-alive connections until all
/// are sent or `duration` has passed. Returns the samples and the wall time
/// from the moment every connection was open.
async fn load(
    addr: SocketAddr,
    deliveries: Arc<Vec<Delivery>>,
    signed: Arc<Vec<Signed>>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<Sample>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    // Connections are opened before the clock starts, so a run measures
    // deliveries, not handshakes.
    let barrier = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let uri: Uri = WEBHOOK_PATH.parse()?;
    let host = HeaderValue::from_str(&addr.to_string())?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let worker = Worker {
            addr,
            deliveries: deliveries.clone(),
            signed: signed.clone(),
            next: next.clone(),
            uri: uri.clone(),
            host: host.clone(),
        };
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let sender = connect(addr).await;
            barrier.wait().await;
            worker.run(sender, duration).await
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(deliveries.len());
    // Every task ends on its own (deadline, request timeout, bounded
    // reconnects); this outer bound only guards against a bug in that.
    let backstop = duration + REQUEST_TIMEOUT + CONNECT_TIMEOUT * (MAX_RECONNECTS + 1);
    let joined = tokio::time::timeout(backstop, async {
        while let Some(result) = tasks.join_next().await {
            samples.extend(result?);
        }
        anyhow::Ok(())
    })
    .await;
    let elapsed = started.elapsed();
    match joined {
        Ok(result) => result?,
        Err(_) => bail!("the load did not finish within {} s", backstop.as_secs()),
    }
    if stopping() {
        bail!("interrupted");
    }
    Ok((samples, elapsed))
}

struct Worker {
    addr: SocketAddr,
    deliveries: Arc<Vec<Delivery>>,
    signed: Arc<Vec<Signed>>,
    next: Arc<AtomicUsize>,
    uri: Uri,
    host: HeaderValue,
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Worker {
    /// Takes the next delivery until none are left or the time is up. A
    /// failed request is recorded and the connection replaced, a few times.
    async fn run(self, first: anyhow::Result<Sender>, duration: Duration) -> Vec<Sample> {
        let deadline = Instant::now() + duration;
        let mut samples = Vec::new();
        let mut sender = first.ok();
        let mut reconnects = 0;
        while let Some(conn) = sender.as_mut() {
            if Instant::now() >= deadline || stopping() {
                break;
            }
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.deliveries.len() {
                break;
            }
            let Ok(request) = self.request(index) else {
                break;
            };
            let started = Instant::now();
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
                conn.ready().await?;
                let response = conn.send_request(request).await?;
                let status = response.status();
                // The answer counts once its body is in, as for a real client.
                response.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            })
            .await;
            let latency = started.elapsed();
            match answered {
                Ok(Ok(status)) => samples.push(Sample {
                    index,
                    status: status.as_u16(),
                    latency,
                }),
                _ => {
                    samples.push(Sample {
                        index,
                        status: 0,
                        latency,
                    });
                    sender = None;
                    if reconnects < MAX_RECONNECTS {
                        reconnects += 1;
                        sender = connect(self.addr).await.ok();
                    }
                }
            }
        }
        samples
    }

    fn request(&self, index: usize) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let delivery = &self.deliveries[index];
        let signed = &self.signed[index];
        Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("svix-id", signed.id.clone())
            .header("svix-timestamp", signed.timestamp.clone())
            .header("svix-signature", signed.signature.clone())
            .body(Full::new(delivery.body.clone()))
    }
}

/// A `200` promises the delivery is committed: every one must be in
/// `webhook_events`. Read after the server has stopped, from the file alone.
fn check_database(db: &Path, deliveries: &[Delivery], samples: &[Sample]) -> anyhow::Result<bool> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", db.display()))?;
    let count: i64 = conn.query_row("SELECT count(*) FROM webhook_events", [], |r| r.get(0))?;
    let stored: HashSet<String> = conn
        .prepare("SELECT id FROM webhook_events")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let answered_ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let missing: Vec<&str> = answered_ok
        .iter()
        .map(|s| deliveries[s.index].id.as_str())
        .filter(|id| !stored.contains(*id))
        .collect();
    // Rows beyond the 200s are fine only for requests that never got an
    // answer (the commit can land after the client gave up); a row for a
    // delivery answered with an error, or never sent, is a broken promise.
    let unanswered: HashSet<&str> = samples
        .iter()
        .filter(|s| s.status == 0)
        .map(|s| deliveries[s.index].id.as_str())
        .collect();
    let ok_ids: HashSet<&str> = answered_ok
        .iter()
        .map(|s| deliveries[s.index].id.as_str())
        .collect();
    let extra: Vec<&String> = stored
        .iter()
        .filter(|id| !ok_ids.contains(id.as_str()))
        .collect();
    let unexplained = extra
        .iter()
        .filter(|id| !unanswered.contains(id.as_str()))
        .count();
    let passed = missing.is_empty() && unexplained == 0;
    println!(
        "  database: {count} events for {} deliveries answered 200; {} missing{}{}",
        answered_ok.len(),
        missing.len(),
        if extra.is_empty() {
            String::new()
        } else {
            format!(
                ", {} extra ({} from requests without an answer)",
                extra.len(),
                extra.len() - unexplained
            )
        },
        if passed { " (ok)" } else { " (FAILED)" }
    );
    for id in missing.iter().take(5) {
        println!("    missing: {id}");
    }
    Ok(passed)
}

const TABLE_HEAD: &str = "| mode | connections | deliveries/s | p50 ms | p90 ms | p99 ms | max ms | peak RSS MB | server CPU us/delivery |";
const TABLE_ALIGN: &str = "|---|---:|---:|---:|---:|---:|---:|---:|---:|";

/// The columns every table has, for one row.
fn cells(row: &Row) -> String {
    format!(
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
        row.target.name(),
        row.connections,
        row.rate,
        row.p50,
        row.p90,
        row.p99,
        row.max,
        row.rss_mb.map_or("?".into(), |m| format!("{m:.1}")),
        row.cpu_us_per_request
            .map_or("?".into(), |c| format!("{c:.0}")),
    )
}

/// The run's rate as a fraction of the bare run with the same connections in
/// the same round: the two ran back to back, on the machine as it was then.
fn fraction_of_bare(rows: &[Row], row: &Row) -> Option<f64> {
    rows.iter()
        .filter(|_| row.target != Target::Bare)
        .find(|r| {
            r.target == Target::Bare && r.connections == row.connections && r.round == row.round
        })
        .map(|bare| row.rate / bare.rate)
}

/// Every run, in the order they ran.
fn print_table(rows: &[Row], compare: bool, with_round: bool) {
    println!();
    let (round_head, round_align) = if with_round {
        ("| round ", "|---:")
    } else {
        ("", "")
    };
    println!(
        "{round_head}{TABLE_HEAD}{}",
        if compare { " % of bare |" } else { "" }
    );
    println!(
        "{round_align}{TABLE_ALIGN}{}",
        if compare { "---:|" } else { "" }
    );
    for row in rows {
        let round = if with_round {
            format!("| {} ", row.round)
        } else {
            String::new()
        };
        let fraction = if compare {
            let f = fraction_of_bare(rows, row)
                .map_or(String::new(), |f| format!("{:.0} %", 100.0 * f));
            format!(" {f} |")
        } else {
            String::new()
        };
        println!("{round}{}{fraction}", cells(row));
    }
}

/// One row per server and connection count, each figure the median of its
/// runs; "% of bare" is the median of the runs' own fractions of bare (see
/// [`fraction_of_bare`]) with the lowest and highest.
fn print_medians(rows: &[Row], compare: bool, rounds: u32) {
    println!();
    println!("Medians of {rounds} rounds:");
    println!();
    println!(
        "{TABLE_HEAD}{}",
        if compare { " % of bare (range) |" } else { "" }
    );
    println!("{TABLE_ALIGN}{}", if compare { "---:|" } else { "" });
    let mut groups: Vec<(usize, Target)> = Vec::new();
    for row in rows {
        if !groups.contains(&(row.connections, row.target)) {
            groups.push((row.connections, row.target));
        }
    }
    for (connections, target) in groups {
        let runs: Vec<&Row> = rows
            .iter()
            .filter(|r| r.connections == connections && r.target == target)
            .collect();
        let median_of = |figure: fn(&Row) -> Option<f64>| {
            median(runs.iter().filter_map(|r| figure(r)).collect())
        };
        let summary = Row {
            round: 0,
            target,
            connections,
            rate: median_of(|r| Some(r.rate)).unwrap_or(f64::NAN),
            p50: median_of(|r| Some(r.p50)).unwrap_or(f64::NAN),
            p90: median_of(|r| Some(r.p90)).unwrap_or(f64::NAN),
            p99: median_of(|r| Some(r.p99)).unwrap_or(f64::NAN),
            max: median_of(|r| Some(r.max)).unwrap_or(f64::NAN),
            rss_mb: median_of(|r| r.rss_mb),
            cpu_us_per_request: median_of(|r| r.cpu_us_per_request),
            passed: runs.iter().all(|r| r.passed),
        };
        let fraction = if compare {
            let fractions: Vec<f64> = runs
                .iter()
                .filter_map(|r| fraction_of_bare(rows, r))
                .collect();
            let low = fractions.iter().copied().reduce(f64::min);
            let high = fractions.iter().copied().reduce(f64::max);
            let f = match (median(fractions), low, high) {
                (Some(m), Some(low), Some(high)) => format!(
                    "{:.0} % ({:.0} to {:.0})",
                    100.0 * m,
                    100.0 * low,
                    100.0 * high
                ),
                _ => String::new(),
            };
            format!(" {f} |")
        } else {
            String::new()
        };
        println!("{}{fraction}", cells(&summary));
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

// ---------------------------------------------------------------------------
// Startup on a populated database

/// Fills a database with `k` users through the crate's own parse-and-apply
/// path (so the file is exactly what `serve` would have written), then times
/// `serve` from spawn to its listening line, on that file and on a new one.
fn measure_startup(bin: &Path, dir: &Path, secret: &Secret, k: u64) -> anyhow::Result<bool> {
    let db = dir.join("startup.db");
    let started = Instant::now();
    populate(&db, k)?;
    let size_mb = std::fs::metadata(&db)?.len() as f64 / (1024.0 * 1024.0);
    println!(
        "startup: filled a database with {k} users ({size_mb:.0} MB) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut passed = true;
    let mut samples = |db: &Path| -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::new();
        for _ in 0..STARTUP_SAMPLES {
            let mut server = start_clerk_sync(bin, db, secret)?;
            times.push(server.ready_after.as_secs_f64() * 1e3);
            let status = server.process.stop(STOP_TIMEOUT)?;
            if !status.success() {
                passed = false;
                println!("startup: clerk-sync exited with {status} after SIGTERM");
            }
        }
        Ok(times)
    };
    let full = samples(&db)?;
    // The first start on a new file also creates the schema.
    let empty = samples(&dir.join("startup-empty.db"))?;
    let fmt = |t: &[f64]| {
        t.iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "startup: ready within {:.0} ms on a database of {k} users (runs: {} ms); on a new database: {} ms; each stopped with SIGTERM{}",
        median(full.clone()).unwrap_or(f64::NAN),
        fmt(&full),
        fmt(&empty),
        if passed { ", exit 0" } else { ": FAILED" }
    );
    remove_database(&db);
    println!();
    Ok(passed)
}

fn populate(db: &Path, k: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 10_000;
    let mut conn = clerk_sync::store::open_writer(db, Duration::from_secs(5))?;
    let mut rng = Rng::seeded()?;
    let now = now_ms();
    let mut done = 0;
    while done < k {
        if stopping() {
            bail!("interrupted");
        }
        let tx = conn.transaction()?;
        let mut applier = clerk_sync::store::Applier::new(&tx)?;
        for i in done..(done + CHUNK).min(k) {
            let created_at = now - 365 * 86_400_000 + i as i64;
            let user = BenchUser::new(&mut rng, created_at);
            let body = envelope(
                "user.created",
                user.object(created_at, &mut rng),
                created_at,
                &mut rng,
            );
            let delivery =
                clerk_sync::event::parse(rng.id("msg_"), &serde_json::to_vec(&body)?, created_at)?;
            applier.apply(&delivery, created_at)?;
        }
        drop(applier);
        tx.commit()?;
        done = (done + CHUNK).min(k);
    }
    // A server that stopped cleanly leaves the WAL folded in; start from that.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}
