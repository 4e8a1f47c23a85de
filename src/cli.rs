//! The command line: subcommands, flags and their environment variables.
//!
//! Every `serve` flag also reads an environment variable so a systemd unit
//! can configure it either way. The signing secret is deliberately not a
//! flag: a flag's value is visible in `ps` and shell history, and clap would
//! show an environment value in `--help`. It is read from
//! `CLERK_WEBHOOK_SIGNING_SECRET`, a file, or systemd credentials (see
//! [`crate::config`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const SECRET_HELP: &str = "\
Signing secrets: --secret-file PATH, else $CREDENTIALS_DIRECTORY/clerk-webhook-secret \
(systemd LoadCredential=), else the CLERK_WEBHOOK_SIGNING_SECRET environment variable. \
One or more whsec_... values separated by whitespace or commas; a delivery is accepted \
if it verifies under any of them.";

#[derive(Debug, Parser)]
#[command(name = "clerk-sync", version, about, long_about = None, after_help = SECRET_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive Clerk webhooks and keep the SQLite mirror up to date.
    Serve(ServeArgs),
    /// Sign a payload and POST it to a running receiver.
    Send(SendArgs),
    /// Print the signature headers (and a curl line) for a file's bytes.
    Sign(SignArgs),
    /// Check a saved delivery offline: exit 0 if its signature is valid.
    Verify(VerifyArgs),
    /// Show what the mirror holds: counts, last event, schema, integrity.
    Status(StatusArgs),
    /// Fill and reconcile the mirror from Clerk's Backend API, or from an
    /// export file.
    Import(ImportArgs),
}

/// Where the signing secrets come from.
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// File holding the signing secret(s); replaces CLERK_WEBHOOK_SIGNING_SECRET.
    // Its value stays out of --help: a secret may have been pasted there.
    #[arg(
        long,
        value_name = "PATH",
        env = "CLERK_WEBHOOK_SIGNING_SECRET_FILE",
        hide_env_values = true
    )]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = SECRET_HELP)]
pub struct ServeArgs {
    /// Address and port to bind (port 0 picks a free one; the bound address is logged).
    #[arg(
        long,
        value_name = "ADDR",
        env = "CLERK_SYNC_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,

    /// The SQLite file; created with its schema if missing.
    #[arg(
        long,
        value_name = "PATH",
        env = "CLERK_SYNC_DB",
        default_value = "clerk-sync.db"
    )]
    pub db: PathBuf,

    /// The URL path Clerk posts to.
    #[arg(long, value_name = "PATH", env = "CLERK_SYNC_PATH", default_value = "/api/clerk-webhook",
          value_parser = url_path)]
    pub path: String,

    #[command(flatten)]
    pub secrets: SecretArgs,

    /// Allowed distance of svix-timestamp from now, in seconds, both directions.
    #[arg(
        long,
        value_name = "SECS",
        env = "CLERK_SYNC_TOLERANCE",
        default_value_t = crate::signature::DEFAULT_TOLERANCE
    )]
    pub tolerance: u64,

    /// Larger bodies are refused with 413.
    #[arg(
        long,
        value_name = "BYTES",
        env = "CLERK_SYNC_MAX_BODY",
        default_value_t = 1_048_576,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_body: u64,

    /// How long a write waits for a lock held by another process before the
    /// delivery is answered 503, in milliseconds.
    #[arg(long, value_name = "MS", env = "CLERK_SYNC_BUSY_TIMEOUT", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=8000))]
    pub busy_timeout: u64,

    /// Days of webhook_events and changes kept (0 keeps everything; 1 is
    /// refused, as shorter than Svix's retries). The mirror's rows are never pruned.
    #[arg(
        long,
        value_name = "DAYS",
        env = "CLERK_SYNC_KEEP_DAYS",
        default_value_t = 30
    )]
    pub keep_days: u32,

    /// Log format.
    #[arg(
        long,
        value_name = "FORMAT",
        env = "CLERK_SYNC_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
#[command(after_help = SECRET_HELP)]
pub struct SendArgs {
    /// A built-in payload (user.created, user.updated, user.deleted,
    /// organization.created, organization.updated, organization.deleted,
    /// organizationMembership.created, organizationMembership.updated,
    /// organizationMembership.deleted), or a file to send byte for byte.
    #[arg(value_name = "EVENT_OR_FILE")]
    pub event: String,

    /// The receiver's full URL (default: where `serve` listens by default).
    #[arg(long, default_value = "http://127.0.0.1:8080/api/clerk-webhook")]
    pub url: String,

    /// The user id of a built-in payload.
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,

    /// The primary email of a built-in payload.
    #[arg(long, value_name = "ADDR")]
    pub email: Option<String>,

    /// The organization id of a built-in organization or membership payload.
    #[arg(long, value_name = "ID")]
    pub org_id: Option<String>,

    /// The role of a built-in membership payload.
    #[arg(long, value_name = "ROLE", default_value = "org:member")]
    pub role: String,

    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
#[command(after_help = SECRET_HELP)]
pub struct SignArgs {
    /// The body to sign, exactly as it will be sent.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The svix-id to sign with (default: a fresh msg_... id).
    #[arg(long, value_name = "ID", value_parser = svix_id)]
    pub id: Option<String>,

    /// The svix-timestamp to sign with, Unix seconds (default: now).
    #[arg(long, value_name = "TS")]
    pub timestamp: Option<i64>,

    /// The URL used in the printed curl line.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/clerk-webhook")]
    pub url: String,

    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
#[command(after_help = SECRET_HELP)]
pub struct VerifyArgs {
    /// The body as received.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The svix-id header.
    #[arg(long, value_name = "ID")]
    pub id: String,

    /// The svix-timestamp header.
    #[arg(long, value_name = "TS")]
    pub timestamp: String,

    /// The svix-signature header.
    #[arg(long, value_name = "SIG")]
    pub signature: String,

    /// Also fail when the timestamp is further than SECS from now. Without
    /// it the signature alone decides and the age is reported.
    #[arg(long, value_name = "SECS")]
    pub tolerance: Option<u64>,

    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The SQLite file `serve` writes; created with its schema if missing.
    #[arg(
        long,
        value_name = "PATH",
        env = "CLERK_SYNC_DB",
        default_value = "clerk-sync.db"
    )]
    pub db: PathBuf,

    /// Clerk's Backend API; every request goes to {api-url}/v1/...
    #[arg(long, value_name = "URL", env = "CLERK_API_URL", default_value = crate::import::DEFAULT_API_URL)]
    pub api_url: String,

    /// File holding the secret key (sk_live_... or sk_test_...); else the
    /// systemd credential clerk-secret-key, else CLERK_SECRET_KEY.
    // Its value stays out of --help: a key may have been pasted there.
    #[arg(
        long,
        value_name = "PATH",
        env = "CLERK_SECRET_KEY_FILE",
        hide_env_values = true
    )]
    pub secret_key_file: Option<PathBuf>,

    /// At most this many requests in any one second (0: no limit). The app
    /// shares the instance's limit, so keep it low.
    #[arg(long, value_name = "N", env = "CLERK_SYNC_IMPORT_RATE", default_value_t = crate::import::DEFAULT_RATE)]
    pub rate: u32,

    /// Write nothing; report what would change.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Read users from a file instead of the API: a JSON array of user
    /// objects, a {"data": [...]} page, JSON Lines, or the Dashboard's CSV export.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The SQLite file written by `serve`.
    #[arg(
        long,
        value_name = "PATH",
        env = "CLERK_SYNC_DB",
        default_value = "clerk-sync.db"
    )]
    pub db: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn svix_id(s: &str) -> Result<String, String> {
    if crate::signature::is_valid_id(s) {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 256 printable ASCII characters, without spaces, as serve requires of svix-id".into())
    }
}

fn url_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(['?', '#', ' ']) {
        Ok(s.to_owned())
    } else {
        Err("must start with '/' and contain no '?', '#' or spaces".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["clerk-sync", "serve"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.listen, "127.0.0.1:8080");
        assert_eq!(a.db, PathBuf::from("clerk-sync.db"));
        assert_eq!(a.path, "/api/clerk-webhook");
        assert_eq!(a.tolerance, 300);
        assert_eq!(a.max_body, 1_048_576);
        assert!(Cli::try_parse_from(["clerk-sync", "serve", "--path", "nope"]).is_err());
    }

    #[test]
    fn sign_takes_only_ids_serve_accepts() {
        let parse = |id: &str| Cli::try_parse_from(["clerk-sync", "sign", "body.json", "--id", id]);
        let longest = "m".repeat(256);
        for ok in ["msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "a", "x'y\"z", &longest] {
            let Command::Sign(a) = parse(ok).unwrap().command else {
                panic!()
            };
            assert_eq!(a.id.as_deref(), Some(ok));
        }
        for bad in ["", "msg 1", "msg\t1", "msg_é", &"m".repeat(257)] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
