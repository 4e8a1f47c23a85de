//! The `clerk-sync` binary: parse the command line, set up logging, run.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use clerk_sync::cli::{Cli, Command, LogFormat};
use clerk_sync::{cmd, redact, serve};
use tracing_subscriber::EnvFilter;

// A delivery's short-lived allocations are cheaper here than in glibc's
// malloc (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    forget_empty_settings();
    clerk_sync::secrets::remember_early();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(&e),
    };
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, with its causes, so it reads well in journalctl;
            // it may quote a value typed where a secret did not belong.
            // Not eprintln!, which panics on a stderr it cannot write.
            let line = redact::redact(&format!("{e:#}")).into_owned();
            let _ = writeln!(std::io::stderr(), "clerk-sync: error: {line}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The database writer is a thread of its own and the busiest one under
    // load; leave it a core rather than have request workers preempt it.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.saturating_sub(1).max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await.map(|()| ExitCode::SUCCESS),
            Command::Send(args) => cmd::send::send(args).await,
            Command::Sign(args) => cmd::sign::sign(args),
            Command::Verify(args) => cmd::verify::verify(args),
            Command::Status(args) => cmd::status::status(args),
            Command::Import(args) => cmd::import::import(args).await,
        }
    })
}

/// Settings given as the empty string count as not given, as most programs
/// take them: a unit's `Environment=NAME=` or a template line uncommented as
/// it is must not stop the start with a complaint about a flag nobody typed.
/// The signing secret itself is the exception: an empty one is an error the
/// user has to hear about.
fn forget_empty_settings() {
    for (name, value) in std::env::vars_os() {
        let ours = name.to_str().is_some_and(|n| {
            n.starts_with("CLERK_SYNC_")
                || n == "CLERK_WEBHOOK_SIGNING_SECRET_FILE"
                || n == "RUST_LOG"
        });
        if ours && value.is_empty() {
            // Still one thread: nothing else reads the environment yet.
            std::env::remove_var(name);
        }
    }
}

/// clap's own report of a bad command line, except that it quotes what was
/// typed: a secret pasted as an argument (`serve whsec_...`) is cut from it
/// rather than printed to a terminal or a journal.
fn command_line_error(e: &clap::Error) -> ExitCode {
    let text = e.render().to_string();
    let redacted = redact::redact(&text);
    if redacted == text {
        // Nothing to hide: clap prints it, with its colours.
        let _ = e.print();
    } else if e.use_stderr() {
        let _ = write!(std::io::stderr(), "{redacted}");
    } else {
        let _ = write!(std::io::stdout(), "{redacted}");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Standard error for log lines, each cut of any signing secret it quotes
/// (a path or address typed with one in it): one place for every line,
/// whichever field holds it. The formatter hands over a whole line per write.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(line);
        std::io::stderr().write_all(redact::redact(&text).as_bytes())?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
