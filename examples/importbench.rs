//! Import benchmark: how fast `clerk-sync import` fills an empty mirror with
//! N realistic users (about 2 KB each), from a local server that speaks the
//! Backend API's list shapes with no rate limit, and from a JSON file of the
//! same users; and the importer's peak memory. Every run ends durable (the
//! importer's last commit flushes the log with `synchronous=FULL`) and is
//! checked: every user is in the database afterwards.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example importbench -- --users 100000
//! ```
//!
//! The server runs in this process on 127.0.0.1, with every page of 500
//! (the importer's page size) rendered before the clock starts, so that it
//! does as little as Clerk's remote servers would on this machine; client
//! and server still share the cores.
//! Exit status 0 when every run imported every user, 1 otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Users to import.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Runs of each source; each is printed, then the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The binary to run.
    #[arg(long, default_value = "target/release/clerk-sync")]
    bin: PathBuf,
}

const KEY: &str = "sk_test_SW1wb3J0QmVuY2htYXJrS2V5MDEyMzQ1Njc4OWFiY2RlZg";

/// A user as the Backend API lists it, about 2 KB.
fn user(i: usize) -> String {
    let t = 1_700_000_000_000i64 + i as i64 * 1000;
    let email_id = format!("idn_{i:027}");
    // Addresses in no relation to the order users signed up in, as in a
    // real instance: the email index takes them at random places.
    let email = format!(
        "{:08x}.person{i}@example.com",
        (i as u32).wrapping_mul(2_654_435_761)
    );
    json!({
        "id": format!("user_{i:027}"),
        "object": "user",
        "username": format!("user{i}"),
        "first_name": "Benchmark",
        "last_name": format!("Person {i}"),
        "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yOXc4M3N4bUROR3dPdUV0aGNlNWdnNTZGY0MiLCJyaWQiOiJ1c2VyXzI5dzgzc3htRE5Hd091RXRoY2U1Z2c1NkZjQyJ9",
        "has_image": false,
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "password_enabled": true,
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": email,
            "reserved": false,
            "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": t + 600_000},
            "linked_to": [],
            "created_at": t,
            "updated_at": t
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [{
            "id": format!("eac_{i:027}"),
            "object": "google_account",
            "provider": "oauth_google",
            "identification_id": format!("idn_g{i:026}"),
            "provider_user_id": format!("{:021}", 104_000_000_000_000_000_000u128 + i as u128),
            "approved_scopes": "email openid profile",
            "email_address": email,
            "first_name": "Benchmark",
            "last_name": format!("Person {i}"),
            "avatar_url": "https://lh3.googleusercontent.com/a/ACg8ocJbench=s96-c",
            "username": null,
            "public_metadata": {},
            "label": null,
            "verification": {"status": "verified", "strategy": "oauth_google", "attempts": null, "expire_at": t + 600_000},
            "created_at": t,
            "updated_at": t
        }],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "public_metadata": {"plan": "pro", "team": format!("team-{}", i % 97), "onboarded": true},
        "private_metadata": {"stripe_customer": format!("cus_{i:014}"), "notes": "imported by the benchmark"},
        "unsafe_metadata": {"theme": "dark", "locale": "en-GB"},
        "external_id": format!("ext-{i}"),
        "last_sign_in_at": t + 3_600_000,
        "banned": false,
        "locked": false,
        "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": 100,
        "created_at": t,
        "updated_at": t + 7_200_000,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "last_active_at": t + 7_200_000,
        "mfa_enabled_at": null,
        "mfa_disabled_at": null,
        "legal_accepted_at": t,
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp"
    })
    .to_string()
}

/// The query parameter `name` of `query`, as a number.
fn param(query: &str, name: &str) -> Option<usize> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// The users, and each page of 500 as the list endpoint sends it.
struct Catalog {
    users: Vec<String>,
    pages: Vec<Bytes>,
}

impl Catalog {
    const PAGE: usize = 500;

    fn new(users: Vec<String>) -> Self {
        let pages = users
            .chunks(Self::PAGE)
            .map(|page| Bytes::from(format!("[{}]", page.join(","))))
            .collect();
        Catalog { users, pages }
    }

    fn page(&self, offset: usize, limit: usize) -> Bytes {
        let offset = offset.min(self.users.len());
        if limit == Self::PAGE && offset % Self::PAGE == 0 {
            if let Some(page) = self.pages.get(offset / Self::PAGE) {
                return page.clone();
            }
        }
        let end = (offset + limit).min(self.users.len());
        Bytes::from(format!("[{}]", self.users[offset..end].join(",")))
    }
}

async fn answer(
    catalog: Arc<Catalog>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let body = match path {
        "/v1/users/count" => Bytes::from(
            json!({"object": "total_count", "total_count": catalog.users.len()}).to_string(),
        ),
        "/v1/users" => catalog.page(
            param(query, "offset").unwrap_or(0),
            param(query, "limit").unwrap_or(10).min(500),
        ),
        _ => Bytes::from_static(br#"{"data":[],"total_count":0}"#),
    };
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header value"),
    );
    Ok(response)
}

async fn serve(catalog: Arc<Catalog>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let catalog = catalog.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(catalog.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Runs the importer with `args`; its wall time and peak RSS (KiB), read
/// from /proc while it runs.
fn run(bin: &Path, db: &Path, args: &[&str]) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["import", "--db"])
        .arg(db)
        .args(["--rate", "0"])
        .args(args)
        .env("CLERK_SECRET_KEY", KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let deadline = started + Duration::from_secs(600);
    let exit = loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak = kib;
            }
        }
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        anyhow::ensure!(Instant::now() < deadline, "the import took over 600 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    anyhow::ensure!(exit.success(), "the import exited {exit}");
    Ok((started.elapsed(), peak))
}

fn imported(db: &Path) -> anyhow::Result<usize> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(
        conn.query_row("SELECT count(*) FROM active_users", [], |r| {
            r.get::<_, i64>(0)
        })? as usize,
    )
}

fn main() -> ExitCode {
    match bench(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("importbench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn bench(args: &Args) -> anyhow::Result<bool> {
    let users: Vec<String> = (0..args.users).map(user).collect();
    let bytes: usize = users.iter().map(String::len).sum();
    println!(
        "{} users, {:.0} bytes each on average",
        users.len(),
        bytes as f64 / users.len().max(1) as f64
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("users.json");
    std::fs::write(&file, format!("[{}]", users.join(",\n")))?;
    let catalog = Arc::new(Catalog::new(users));
    let users = &catalog.users;
    let runtime = tokio::runtime::Runtime::new()?;
    let addr = runtime.block_on(serve(catalog.clone()))?;
    let url = format!("http://{addr}");
    let mut ok = true;
    for (name, extra) in [
        ("API", vec!["--api-url", url.as_str()]),
        (
            "JSON file",
            vec!["--from-file", file.to_str().context("a UTF-8 path")?],
        ),
    ] {
        let mut rates = Vec::new();
        for run_no in 1..=args.runs.max(1) {
            let db = dir
                .path()
                .join(format!("{}-{run_no}.db", name.replace(' ', "-")));
            let (took, peak_kib) = run(&args.bin, &db, &extra)?;
            let n = imported(&db)?;
            std::fs::remove_file(&db)?;
            ok &= n == users.len();
            let rate = n as f64 / took.as_secs_f64();
            rates.push(rate);
            println!(
                "{name:<10} {n} users in {:.2} s = {rate:.0} users/s, peak RSS {:.1} MB{}",
                took.as_secs_f64(),
                peak_kib as f64 / 1024.0,
                if n == users.len() {
                    ""
                } else {
                    "  (MISSING USERS)"
                }
            );
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{name:<10} median of {} runs: {:.0} users/s",
            rates.len(),
            rates[rates.len() / 2]
        );
    }
    Ok(ok)
}
