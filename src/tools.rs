//! The development and operations subcommands: `send`, `sign`, `verify`,
//! `status`. They use the same secret sources and the same signature code
//! as `serve`, so what they sign is what the receiver accepts.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::cli::{SendArgs, SignArgs, StatusArgs, VerifyArgs};
use crate::signature::{self, Secrets, VerifyError, DEFAULT_TOLERANCE};
use crate::{config, db};

/// `send`: signs a built-in event or a file's bytes and POSTs it.
///
/// # Errors
/// Missing secret, unreadable file, `--user-id` or `--email` with a file,
/// unreachable URL.
pub async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let builtin = builtin_event(&args.event, args.user_id.as_deref(), args.email.as_deref())?;
    if builtin.is_none() && (args.user_id.is_some() || args.email.is_some()) {
        bail!(
            "--user-id and --email apply to the built-in events only (user.created, user.updated, \
             user.deleted); the file {} is sent byte for byte",
            args.event
        );
    }
    let secrets = config::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = match builtin {
        Some(body) => body,
        None => std::fs::read(&args.event).with_context(|| {
            format!(
                "{} is neither user.created, user.updated, user.deleted nor a readable file",
                args.event
            )
        })?,
    };
    let id = message_id()?;
    let timestamp = db::now_ms() / 1000;
    let signature = secrets.sign(&id, timestamp, &body);
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(20),
        post(&args.url, &id, timestamp, &signature, body),
    )
    .await
    .context("no answer within 20 s")??;
    print_out(&format!(
        "{} {}\n{answer}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    ))?;
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Builds a realistic Clerk envelope for the three user events, or `None`
/// when `event` is not one of them.
///
/// # Errors
/// When `user_id` is not a plausible id.
pub fn builtin_event(
    event: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) -> anyhow::Result<Option<Vec<u8>>> {
    if !matches!(event, "user.created" | "user.updated" | "user.deleted") {
        return Ok(None);
    }
    let now = db::now_ms();
    let user_id = match user_id {
        Some(id) if !id.is_empty() => id.to_owned(),
        Some(_) => bail!("--user-id must not be empty"),
        None => format!("user_{}", random_base62(27)?),
    };
    let data = if event == "user.deleted" {
        json!({ "deleted": true, "id": user_id, "object": "user" })
    } else {
        let email_id = format!("idn_{}", random_base62(27)?);
        let email = email.map_or_else(
            || format!("{}@example.com", user_id.to_lowercase()),
            str::to_owned,
        );
        json!({
            "backup_code_enabled": false,
            "banned": false,
            "create_organization_enabled": true,
            "created_at": now,
            "delete_self_enabled": true,
            "email_addresses": [{
                "created_at": now,
                "email_address": email,
                "id": email_id,
                "linked_to": [],
                "object": "email_address",
                "reserved": false,
                "updated_at": now,
                "verification": { "attempts": null, "expire_at": null, "status": "verified", "strategy": "email_code" }
            }],
            "external_accounts": [],
            "external_id": null,
            "first_name": "Test",
            "has_image": false,
            "id": user_id,
            "image_url": "https://img.clerk.com/placeholder",
            "last_active_at": now,
            "last_name": "User",
            "last_sign_in_at": null,
            "locked": false,
            "object": "user",
            "password_enabled": true,
            "phone_numbers": [],
            "primary_email_address_id": email_id,
            "primary_phone_number_id": null,
            "primary_web3_wallet_id": null,
            "private_metadata": {},
            "public_metadata": {},
            "two_factor_enabled": false,
            "unsafe_metadata": {},
            "updated_at": now,
            "username": null,
            "web3_wallets": []
        })
    };
    let envelope = json!({
        "data": data,
        "event_attributes": { "http_request": { "client_ip": "127.0.0.1", "user_agent": "clerk-sync send" } },
        "instance_id": "ins_clerksynclocaltest",
        "object": "event",
        "timestamp": now,
        "type": event,
    });
    Ok(Some(serde_json::to_vec(&envelope)?))
}

async fn post(
    url: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: Vec<u8>,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported (send to the receiver directly, not through TLS)");
    }
    let host = uri.host().context("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = uri.authority().map_or(host.to_owned(), |a| a.to_string());
    let request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", authority)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("clerk-sync/", env!("CARGO_PKG_VERSION")),
        )
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `sign`: prints the three headers and a curl line for a file's bytes.
///
/// # Errors
/// Missing secret or unreadable file.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let secrets = config::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let id = match args.id {
        Some(id) => id,
        None => message_id()?,
    };
    let timestamp = args.timestamp.unwrap_or_else(|| db::now_ms() / 1000);
    let signature = secrets.sign(&id, timestamp, &body);
    // Absolute, so the line works from any directory, and a file named `-`
    // is not read as curl's stdin.
    let path = std::fs::canonicalize(&args.file)
        .with_context(|| format!("cannot resolve {}", args.file.display()))?;
    print_out(&format!(
        "svix-id: {id}\nsvix-timestamp: {timestamp}\nsvix-signature: {signature}\n\
         curl -sS -X POST {} -H 'content-type: application/json' -H {} -H {} -H {} --data-binary @{}\n",
        shell_quote(&args.url),
        shell_quote(&format!("svix-id: {id}")),
        shell_quote(&format!("svix-timestamp: {timestamp}")),
        shell_quote(&format!("svix-signature: {signature}")),
        shell_quote(&path.to_string_lossy())
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `verify`: checks a saved delivery and says why it fails.
///
/// # Errors
/// Missing secret or unreadable file; a bad delivery is exit code 1, not an error.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let secrets = config::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    match check_delivery(&secrets, &args, &body, db::now_ms() / 1000) {
        Ok(note) => {
            print_out(&format!("{note}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            // Not eprintln!, which panics on a stderr it cannot write; the exit
            // code carries the verdict either way.
            // The reason may quote what was typed, a secret in the wrong
            // place included.
            let _ = writeln!(std::io::stderr(), "invalid: {}", config::redact(&reason));
            Ok(ExitCode::from(1))
        }
    }
}

fn check_delivery(
    secrets: &Secrets,
    args: &VerifyArgs,
    body: &[u8],
    now: i64,
) -> Result<String, String> {
    let timestamp = signature::parse_timestamp(args.timestamp.trim()).ok_or_else(|| {
        format!(
            "--timestamp {:?} is not a Unix time in whole seconds",
            args.timestamp
        )
    })?;
    if !args.signature.split(' ').any(|e| {
        e.split_once(',')
            .is_some_and(|(v, s)| v == "v1" && !s.is_empty())
    }) {
        return Err(
            "the signature has no v1,<base64> entry (is it the svix-signature header value?)"
                .into(),
        );
    }
    if !secrets.matches(&args.id, timestamp, &args.signature, body) {
        return Err(format!(
            "no v1 signature matches under {} secret(s): the secret is wrong, or the body, id or timestamp \
             differ from what was signed (the body must be the exact bytes received)",
            secrets.len()
        ));
    }
    let age = now - timestamp;
    let when = if age >= 0 {
        format!("signed {age} s ago")
    } else {
        format!("signed {} s in the future", -age)
    };
    match args.tolerance {
        Some(tolerance) => match signature::check_window(timestamp, now, tolerance) {
            Ok(()) => Ok(format!(
                "valid signature, {when}, within the {tolerance} s tolerance"
            )),
            Err(VerifyError::TooOld(by)) => Err(format!(
                "signature matches, but the timestamp is {by} s old, beyond the {tolerance} s tolerance"
            )),
            Err(VerifyError::TooNew(by)) => Err(format!(
                "signature matches, but the timestamp is {by} s in the future, beyond the {tolerance} s tolerance (clock skew?)"
            )),
            Err(VerifyError::NoMatch) => unreachable!("check_window only judges time"),
        },
        // A saved delivery is old by nature: say how old, and whether `serve`
        // would still take it, without failing on it.
        None => match signature::check_window(timestamp, now, DEFAULT_TOLERANCE) {
            Ok(()) => Ok(format!(
                "valid signature, {when}, inside the {DEFAULT_TOLERANCE} s window serve applies by default"
            )),
            Err(VerifyError::TooOld(by)) => Ok(format!(
                "valid signature; note: the timestamp is {by} s old, outside the {DEFAULT_TOLERANCE} s \
                 window serve applies by default, so serve would answer 401"
            )),
            Err(VerifyError::TooNew(by)) => Ok(format!(
                "valid signature; note: the timestamp is {by} s in the future, outside the \
                 {DEFAULT_TOLERANCE} s window serve applies by default, so serve would answer 401 \
                 (clock skew?)"
            )),
            Err(VerifyError::NoMatch) => unreachable!("check_window only judges time"),
        },
    }
}

/// `status`: counts, last event, schema version and integrity, read-only.
///
/// # Errors
/// When the file is missing or is not a clerk-sync database, and, after the
/// report, when its schema is newer than this binary's.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report = status_report(&args.db)?;
    if args.json {
        print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        print_out(&status_text(&report))?;
    }
    let version = report["schema_version"].as_i64().unwrap_or(0);
    if version > db::SCHEMA_VERSION {
        bail!(
            "{} has schema version {version}, newer than this binary's {}: serve refuses it; upgrade clerk-sync",
            args.db.display(),
            db::SCHEMA_VERSION
        );
    }
    Ok(if report["integrity"] == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What every SQLite database file starts with.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Gathers the status figures in one read transaction, so they agree with
/// each other even while `serve` writes. A file SQLite finds damaged is
/// still a report, with what could be read and what SQLite said as its
/// integrity.
///
/// # Errors
/// When the file is missing, cannot be opened read-only, is not SQLite, or
/// lacks the schema.
pub fn status_report(path: &Path) -> anyhow::Result<Value> {
    if !path.exists() {
        bail!("no database at {}", path.display());
    }
    let header = file_header(path).with_context(|| format!("cannot read {}", path.display()))?;
    // SQLite takes an empty file for an empty database.
    if !header.is_empty() && !header.starts_with(SQLITE_MAGIC) {
        bail!(
            "{} is not a clerk-sync database: it is not a SQLite file",
            path.display()
        );
    }
    let wal_file = header.get(18..20) == Some(&[2, 2]);
    let unlocked = !db::wal_path(path).exists();
    let report = read_status(path, unlocked, wal_file);
    // Read without locks, the file must not have changed meanwhile; a
    // `serve` started since could have, and its log says so.
    if unlocked && db::wal_path(path).exists() {
        return read_status(path, false, wal_file);
    }
    report
}

fn read_status(path: &Path, unlocked: bool, wal_file: bool) -> anyhow::Result<Value> {
    let conn = open_for_status(path, unlocked)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let tx = conn
        .unchecked_transaction()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut report = json!({
        "database": path.display().to_string(),
        "schema_version": null,
        "journal_mode": null,
        "users": null,
        "events": null,
        "last_event": null,
        "integrity": null,
    });
    // Opened immutable, a WAL file without its log is read in rollback mode
    // and SQLite would say `delete`; the header says what the file is.
    let read = read_figures(&tx, &mut report, unlocked && wal_file);
    let check: rusqlite::Result<Vec<String>> = tx
        .prepare("PRAGMA integrity_check")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        // Some findings span lines; the report gives each one line.
        .map(|found: Vec<String>| found.iter().map(|f| f.replace('\n', " ")).collect());
    let newer = report["schema_version"]
        .as_i64()
        .is_some_and(|v| v > db::SCHEMA_VERSION);
    let damage = match read {
        Err(e) if is_damage(&e) => Some(e.to_string()),
        // A newer schema may well lack what this binary reads; the report
        // still shows its version, and `status` refuses it.
        Err(_) if newer => None,
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::CannotOpen) => {
            return Err(e).with_context(|| cannot_open(path));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("{} is not a clerk-sync database", path.display()))
        }
        Ok(()) => None,
    };
    report["integrity"] = json!(match (damage, check) {
        (None, Ok(found)) => found.join("; "),
        (Some(said), Ok(found)) if found == ["ok"] => said,
        (Some(said), Ok(found)) => format!("{said}; {}", found.join("; ")),
        (Some(said), Err(_)) => said,
        (None, Err(e)) if is_damage(&e) => e.to_string(),
        (None, Err(e)) => {
            return Err(e).with_context(|| format!("cannot check {}", path.display()));
        }
    });
    tx.finish()?;
    Ok(report)
}

/// Why SQLite could not open a file that is there. Left by a crash, a log
/// needs its `-shm` to be read, and SQLite makes that file when it is
/// missing, which a read-only directory does not allow.
fn cannot_open(path: &Path) -> String {
    if db::wal_path(path).exists() && !db::shm_path(path).exists() {
        format!(
            "cannot read {}: its write-ahead log (-wal, left by a stop that was not clean) needs \
             a -shm file beside it, which could not be made here (a read-only directory?); run \
             status where it can be, or start serve once to fold the log into the database",
            path.display()
        )
    } else {
        format!("cannot read {}", path.display())
    }
}

/// Fills in `report` one figure at a time, so that a file SQLite can read
/// only in part still shows that part.
fn read_figures(tx: &Connection, report: &mut Value, wal_file: bool) -> rusqlite::Result<()> {
    report["schema_version"] =
        json!(tx.query_row::<i64, _, _>("PRAGMA user_version", [], |r| r.get(0))?);
    report["journal_mode"] = if wal_file {
        json!("wal")
    } else {
        json!(tx.query_row::<String, _, _>("PRAGMA journal_mode", [], |r| r.get(0))?)
    };
    let (users, tombstones) = db::user_counts(tx)?;
    report["users"] =
        json!({ "total": users, "active": users - tombstones, "tombstones": tombstones });
    let mut by_type = serde_json::Map::new();
    let mut events = 0i64;
    let mut stmt = tx.prepare("SELECT type, outcome, count(*) FROM webhook_events GROUP BY type, outcome ORDER BY type, outcome")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, outcome, n) = row?;
        events += n;
        let entry = by_type.entry(kind).or_insert_with(|| json!({}));
        entry[outcome] = json!(n);
    }
    let last: Option<(String, String, i64)> = tx
        .query_row(
            "SELECT id, type, received_at FROM webhook_events ORDER BY received_at DESC, id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // Together: a missing last event would otherwise read as none.
    report["events"] = json!({ "total": events, "by_type": by_type });
    report["last_event"] = json!(last.map(|(id, kind, at)| json!({
        "id": id, "type": kind, "received_at": at,
        "seconds_ago": (db::now_ms() - at) / 1000,
    })));
    Ok(())
}

/// Whether SQLite refused to read on because the file is damaged: a page
/// that is not what it should be, or a header it cannot make sense of (the
/// file did start like a SQLite file).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// The first 100 bytes of the file at `path` (SQLite's file header), fewer
/// if it is shorter.
fn file_header(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)?
        .take(100)
        .read_to_end(&mut header)?;
    Ok(header)
}

/// Opens `path` read-only. Even so, SQLite creates the `-wal` and `-shm`
/// files of a WAL database that has none (`serve` removes them on a clean
/// stop), owned by whoever runs `status`, which can leave `serve` unable to
/// write later, and it needs a writable directory for them. `unlocked` opens
/// the file as immutable instead: no files, no locks, which is right only
/// while no `serve` has it open, that is while it has no log.
fn open_for_status(path: &Path, unlocked: bool) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if unlocked {
        let uri = immutable_uri(path)
            .with_context(|| format!("cannot make {} absolute", path.display()))?;
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    };
    conn.with_context(|| format!("cannot open {}", path.display()))
}

/// `path` as a `file:` URI with `immutable=1`. Absolute, so a name starting
/// with `//` cannot read as a host, and with every byte outside the
/// unreserved set percent-encoded, so a `?`, `#` or `%` in a name stays part
/// of it.
fn immutable_uri(path: &Path) -> std::io::Result<String> {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::path::absolute(path)?;
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}

/// The report as text; a figure a damaged file would not give up is left out.
fn status_text(r: &Value) -> String {
    let mut lines = vec![format!(
        "database        {}",
        r["database"].as_str().unwrap_or("")
    )];
    if !r["schema_version"].is_null() {
        lines.push(format!(
            "schema version  {} (journal {})",
            r["schema_version"],
            r["journal_mode"].as_str().unwrap_or("unknown")
        ));
    }
    let u = &r["users"];
    if !u.is_null() {
        lines.push(format!(
            "users           {} ({} active, {} tombstones)",
            u["total"], u["active"], u["tombstones"]
        ));
    }
    if !r["events"].is_null() {
        lines.push(format!("events          {}", r["events"]["total"]));
        if let Some(types) = r["events"]["by_type"].as_object() {
            for (kind, outcomes) in types {
                let parts: Vec<String> = outcomes
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect())
                    .unwrap_or_default();
                lines.push(format!("  {kind:<28} {}", parts.join(", ")));
            }
        }
        lines.push(match r["last_event"].as_object() {
            Some(last) => format!(
                "last event      {} {} at {} ms ({} s ago)",
                last["type"].as_str().unwrap_or(""),
                last["id"].as_str().unwrap_or(""),
                last["received_at"],
                last["seconds_ago"]
            ),
            None => "last event      none".to_owned(),
        });
    }
    lines.push(format!(
        "integrity       {}",
        r["integrity"].as_str().unwrap_or("")
    ));
    lines.join("\n") + "\n"
}

/// Writes a subcommand's output to standard output, all of it or an error.
/// A reader that went away (`| head`) took what it wanted, so a broken pipe
/// ends the output quietly; any other failure (a full disk) is an error, or
/// a script would take a cut-off report for a whole one.
///
/// # Errors
/// When standard output cannot be written, except for a broken pipe.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// A fresh Svix-style message id: `msg_` and 27 base62 characters.
///
/// # Errors
/// When the system's random source fails.
pub fn message_id() -> anyhow::Result<String> {
    Ok(format!("msg_{}", random_base62(27)?))
}

fn random_base62(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    // 256 is not a multiple of 62, so the modulo is slightly uneven; these
    // ids need to be unique, not uniform.
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// `s` as one word for a POSIX shell: in single quotes, each `'` in it
/// closed, escaped and reopened.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, Change};

    #[test]
    fn builtin_events_parse_as_what_they_claim() {
        for kind in ["user.created", "user.updated", "user.deleted"] {
            let body = builtin_event(kind, Some("user_abc"), Some("a@b.test"))
                .unwrap()
                .unwrap();
            let d = event::parse("msg_x".into(), &body, 0).unwrap();
            assert_eq!(d.event_type, kind);
            assert_eq!(d.object_id.as_deref(), Some("user_abc"));
            match d.change {
                Change::Upsert(u) => assert_eq!(u.email.as_deref(), Some("a@b.test")),
                Change::Delete { .. } => assert_eq!(kind, "user.deleted"),
                Change::Record => panic!("{kind} must be mirrored"),
            }
        }
        assert!(builtin_event("session.created", None, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn immutable_uris_keep_odd_names_intact() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/a b?c#d%41é.db")).unwrap(),
            "file:///var/lib/a%20b%3Fc%23d%2541%C3%A9.db?immutable=1"
        );
        let relative = immutable_uri(Path::new("x.db")).unwrap();
        assert!(
            relative.starts_with("file:///") && relative.ends_with("/x.db?immutable=1"),
            "{relative}"
        );
    }

    #[test]
    fn shell_quoting_keeps_any_text_one_word() {
        assert_eq!(shell_quote("/tmp/a b.json"), "'/tmp/a b.json'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(r"$(x) `y` \"), r"'$(x) `y` \'");
    }

    #[test]
    fn verify_says_in_one_sentence_what_serve_would_do() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let secrets = Secrets::parse(secret).unwrap();
        let now = 1_700_000_000;
        let note = |timestamp: i64, tolerance: Option<u64>| {
            let args = VerifyArgs {
                file: "body.json".into(),
                id: "msg_1".into(),
                timestamp: timestamp.to_string(),
                signature: secrets.sign("msg_1", timestamp, b"{}"),
                tolerance,
                secrets: crate::cli::SecretArgs { secret_file: None },
            };
            check_delivery(&secrets, &args, b"{}", now)
        };
        assert_eq!(
            note(now - 10, None).unwrap(),
            "valid signature, signed 10 s ago, inside the 300 s window serve applies by default"
        );
        assert_eq!(
            note(now - 303, None).unwrap(),
            "valid signature; note: the timestamp is 303 s old, outside the 300 s window serve \
             applies by default, so serve would answer 401"
        );
        assert_eq!(
            note(now + 400, None).unwrap(),
            "valid signature; note: the timestamp is 400 s in the future, outside the 300 s \
             window serve applies by default, so serve would answer 401 (clock skew?)"
        );
        assert_eq!(
            note(now - 10, Some(60)).unwrap(),
            "valid signature, signed 10 s ago, within the 60 s tolerance"
        );
        assert_eq!(
            note(now - 303, Some(60)).unwrap_err(),
            "signature matches, but the timestamp is 303 s old, beyond the 60 s tolerance"
        );
    }

    #[test]
    fn message_ids_look_like_svix_ids() {
        let a = message_id().unwrap();
        assert!(a.starts_with("msg_") && a.len() == 31, "{a}");
        assert_ne!(a, message_id().unwrap());
    }
}
