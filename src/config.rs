//! Finding the signing secrets, with errors that say how to fix them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

use crate::signature::{SecretError, Secrets};

/// The environment variable Clerk's own SDK reads.
pub const SECRET_ENV: &str = "CLERK_WEBHOOK_SIGNING_SECRET";

/// The credential name to use with systemd's `LoadCredential=`.
pub const CREDENTIAL_NAME: &str = "clerk-webhook-secret";

const FIX: &str =
    "copy the endpoint's Signing Secret (whsec_...) from the Clerk Dashboard, Webhooks";

/// Loads the secrets from, in order: `file`, the systemd credential, the
/// environment variable. The first source present is the only one used.
///
/// # Errors
/// When no source is present or the one used holds no valid secret. The
/// message names the source and how to fix it, never the secret.
pub fn load_secrets(file: Option<&Path>) -> anyhow::Result<Secrets> {
    if let Some(path) = file {
        return from_file(path, &secret_file(path));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(CREDENTIAL_NAME);
        if path.exists() {
            return from_file(&path, &format!("credential {CREDENTIAL_NAME}"));
        }
    }
    match std::env::var(SECRET_ENV) {
        Ok(text) => parse(&text, SECRET_ENV),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(anyhow!("{SECRET_ENV} is not valid UTF-8; {FIX}"))
        }
        Err(std::env::VarError::NotPresent) => Err(anyhow!(
            "no signing secret: set {SECRET_ENV} or pass --secret-file PATH; {FIX}"
        )),
    }
}

/// How errors name a secret file. A secret pasted where its path belongs
/// (an easy slip in a unit file) must not reach the journal through them:
/// a value that names no file and reads as secrets is one, and is not shown.
fn secret_file(path: &Path) -> String {
    let shown = path.to_string_lossy();
    if !path.exists() && is_pasted_secret(&shown) {
        "secret file (not shown: the value given is a secret itself, not the path of a file \
         holding one)"
            .to_owned()
    } else {
        format!("secret file {shown}")
    }
}

/// The shortest text after `whsec_` that is taken for a secret: Clerk's are
/// 32 characters, the Standard Webhooks examples' 24 and more; a file named
/// `whsec_prod` is a name.
const MIN_PREFIXED: usize = 16;

/// The shortest unprefixed base64 taken for a secret (18 bytes and more,
/// as the Standard Webhooks examples' shortest).
const MIN_UNPREFIXED: usize = 24;

/// The shortest configured secret cut from messages wherever it stands;
/// shorter ones would cut ordinary words.
const MIN_KNOWN: usize = 8;

/// `text` with every signing secret in it cut out, for messages that quote
/// what the user typed: `whsec_` and at least 16 base64 characters become
/// `whsec_...`; a configured secret (see `remember`), or one without its
/// prefix typed as an argument or set in a `CLERK_*` variable (see
/// `typed_secrets`), becomes `[redacted]` wherever it stands.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let known = known_secrets()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    redact_with(text, &known)
}

fn redact_with<'t>(text: &'t str, known: &[String]) -> std::borrow::Cow<'t, str> {
    const PREFIX: &str = "whsec_";
    // Every log line comes through here: most hold no secret, and then
    // cost a scan, not a copy.
    if !text.contains(PREFIX) && !known.iter().any(|k| text.contains(k.as_str())) {
        return text.into();
    }
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at + PREFIX.len()]);
        rest = &rest[at + PREFIX.len()..];
        let len = rest.find(|c: char| !is_base64(c)).unwrap_or(rest.len());
        if len >= MIN_PREFIXED {
            out.push_str("...");
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    for secret in known {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    out.into()
}

/// The secrets `redact` cuts besides `whsec_` ones, longest first: at first
/// those typed (see `typed_secrets`) and the one in the environment, then
/// every configured one as it is loaded.
fn known_secrets() -> &'static std::sync::RwLock<Vec<String>> {
    static KNOWN: std::sync::OnceLock<std::sync::RwLock<Vec<String>>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = typed_secrets();
        if let Ok(text) = std::env::var(SECRET_ENV) {
            add_secrets(&mut known, &text);
        }
        // The files a secret may come from, read now: an error about the
        // command line comes before any secret is loaded, and may quote one.
        for text in secret_files().iter().filter_map(|f| read_early(f)) {
            add_secrets(&mut known, &text);
        }
        std::sync::RwLock::new(known)
    })
}

/// Every file this run could load secrets from: `--secret-file` (as typed,
/// before the command line is parsed), its variable, the systemd credential.
fn secret_files() -> Vec<PathBuf> {
    let args: Vec<_> = std::env::args_os().collect();
    let mut files: Vec<PathBuf> = args
        .windows(2)
        .filter(|pair| pair[0] == "--secret-file")
        .map(|pair| PathBuf::from(&pair[1]))
        .collect();
    files.extend(args.iter().filter_map(|arg| {
        let arg = arg.to_str()?;
        arg.strip_prefix("--secret-file=").map(PathBuf::from)
    }));
    files.extend(std::env::var_os("CLERK_WEBHOOK_SIGNING_SECRET_FILE").map(PathBuf::from));
    files.extend(
        std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| PathBuf::from(d).join(CREDENTIAL_NAME)),
    );
    files
}

/// The most a secret file may hold: a few secrets take a few hundred bytes.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret file's text, at most [`MAX_SECRET_FILE`] bytes of it, or why
/// not: `/dev/zero` would never end. A pipe (`--secret-file <(...)`) is
/// read, once.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read as _};
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_SECRET_FILE} bytes, so not a secret file"),
        ));
    }
    Ok(text)
}

/// A secret file read early, for redaction only: a regular file, so that
/// a pipe is left whole for the real read and a FIFO never blocks here.
fn read_early(path: &Path) -> Option<String> {
    std::fs::metadata(path)
        .is_ok_and(|m| m.is_file())
        .then(|| read_secret_file(path).ok())
        .flatten()
}

/// Adds the secrets in `text` (a secret source's whole content, valid or
/// not) to what `redact` cuts.
fn remember(text: &str) {
    let mut known = known_secrets()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    add_secrets(&mut known, text);
}

/// Without their prefix, so that they are cut however a message quotes them.
fn add_secrets(known: &mut Vec<String>, text: &str) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for token in text.split(|c: char| c.is_whitespace() || c == ',') {
        let body = token.strip_prefix("whsec_").unwrap_or(token);
        if body.len() >= MIN_KNOWN && !known.iter().any(|k| k == body) {
            known.push(body.to_owned());
        }
    }
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// The unprefixed secrets among the command line's arguments and the
/// `CLERK_*` variables. Only what the user typed is searched: any long
/// base64-looking text would also catch ordinary paths and ids.
fn typed_secrets() -> Vec<String> {
    let env = std::env::vars_os()
        .filter(|(name, _)| name.to_string_lossy().starts_with("CLERK_"))
        .map(|(_, value)| value);
    let values = std::env::args_os().skip(1).chain(env);
    unprefixed_secrets_in(values.map(|v| v.to_string_lossy().into_owned()))
}

/// The parts of `values` that read as unprefixed secrets: each word in
/// them, or a piece of one between `/`s (base64 has `/`, and so do the paths
/// a secret gets pasted into). Words keep their `_` and `-`, which standard
/// base64 lacks, so that an id such as `msg_2KWPBgLl...` is no secret.
fn unprefixed_secrets_in(values: impl Iterator<Item = String>) -> Vec<String> {
    let in_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-');
    let mut found: Vec<String> = Vec::new();
    for value in values {
        for run in value.split(|c: char| !in_word(c)) {
            // Whole, unless it reads as a path (starts with `/`, or has more
            // of them than 32 random base64 characters are likely to).
            let whole = (!run.starts_with('/') && run.matches('/').count() <= 2).then_some(run);
            for piece in whole.into_iter().chain(run.split('/')) {
                if looks_like_unprefixed_secret(piece) && !found.iter().any(|f| f == piece) {
                    found.push(piece.to_owned());
                }
            }
        }
    }
    // Longest first, so a secret is cut whole before a piece of it is.
    found.sort_by_key(|f| std::cmp::Reverse(f.len()));
    found
}

/// Whether `value` is secrets rather than a name: each of its parts a
/// `whsec_` secret or one without the prefix (a missing file named `secret`
/// is still a file, though `secret` is base64 too).
fn is_pasted_secret(value: &str) -> bool {
    Secrets::parse(value).is_ok()
        && value
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .all(|t| {
                t.strip_prefix("whsec_").map_or_else(
                    || looks_like_unprefixed_secret(t),
                    |b| b.len() >= MIN_PREFIXED,
                )
            })
}

/// Random base64 of this length is about two fifths capitals, two fifths
/// small letters and some digits or `+`; names, even in CamelCase, seldom
/// are.
fn looks_like_unprefixed_secret(text: &str) -> bool {
    let count = |f: fn(&u8) -> bool| text.bytes().filter(f).count();
    let fifth = text.len() / 5;
    text.len() >= MIN_UNPREFIXED
        && count(u8::is_ascii_uppercase) >= fifth
        && count(u8::is_ascii_lowercase) >= fifth
        && text.bytes().any(|b| b.is_ascii_digit() || b == b'+')
        && Secrets::parse(text).is_ok()
}

fn from_file(path: &Path, source: &str) -> anyhow::Result<Secrets> {
    let text = read_secret_file(path).with_context(|| format!("cannot read {source}"))?;
    // Some editors start a UTF-8 file with a byte-order mark.
    parse(text.strip_prefix('\u{feff}').unwrap_or(&text), source)
}

fn parse(text: &str, source: &str) -> anyhow::Result<Secrets> {
    remember(text);
    Secrets::parse(text).map_err(|e| match e {
        SecretError::Missing => anyhow!("{source} is empty; {FIX}"),
        other => anyhow!("{source}: {other}; {FIX}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_given_as_the_file_path_is_not_echoed() {
        // With and without the prefix, and with a `/` in the base64.
        for secret in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_C2FVsBQIhrscChlQ/MV+b5sSYspob7oD",
        ] {
            let e = load_secrets(Some(Path::new(secret))).unwrap_err();
            let message = format!("{e:#}");
            let body = secret.trim_start_matches("whsec_");
            assert!(!message.contains(&body[..8]), "{message}");
            assert!(message.contains("a secret itself"), "{message}");
        }
        // An ordinary path is named, so the user knows which file, also
        // when its name happens to hold `whsec_`.
        for path in [
            "/nonexistent/clerk-secret",
            "/etc/clerk-sync/whsec_prod",
            "secret",
        ] {
            let e = load_secrets(Some(Path::new(path))).unwrap_err();
            let message = format!("{e:#}");
            assert!(
                message.contains(&format!("secret file {path}:")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_secret_file_is_read_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'A'; 100_000]).unwrap();
        // Opening a FIFO to read waits for a writer that never comes.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        for (path, why) in [
            (Path::new("/dev/zero"), "larger than"),
            (dir.path(), "directory"),
            (big.as_path(), "larger than"),
        ] {
            let e = load_secrets(Some(path)).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{e:#}");
        }
        // A pipe is read once, when the secrets are loaded, not early.
        assert_eq!(read_early(&fifo), None);
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::write(fifo, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
        });
        assert_eq!(load_secrets(Some(&fifo)).unwrap().len(), 1);
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn a_secret_file_may_start_with_a_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "\u{feff}whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(load_secrets(Some(&path)).unwrap().len(), 1);
    }

    #[test]
    fn a_configured_secret_is_cut_wherever_it_stands() {
        let mut bom = Vec::new();
        add_secrets(&mut bom, "\u{feff}whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
        assert_eq!(bom, ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let mut known = Vec::new();
        add_secrets(
            &mut known,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, abcdefghABCDEFGH",
        );
        assert_eq!(
            redact_with(
                "cannot listen on 127.0.0.1:xMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                &known
            ),
            "cannot listen on 127.0.0.1:x[redacted]"
        );
        // One without digits, which no guess would take for a secret.
        assert_eq!(
            redact_with("invalid value 'abcdefghABCDEFGH;'", &known),
            "invalid value '[redacted];'"
        );
    }

    #[test]
    fn redaction_keeps_everything_but_the_secrets() {
        let none: &[String] = &[];
        assert_eq!(redact_with("no secret here", none), "no secret here");
        assert_eq!(
            redact_with("unexpected argument 'whsec_MfKQ9r8G+/LaSw==x' found", none),
            "unexpected argument 'whsec_...' found"
        );
        assert_eq!(
            redact_with(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_C2FVsBQIhrscChlQ/MV+b5sSYspob7oD whsec_",
                none
            ),
            "whsec_...,whsec_... whsec_"
        );
        // Without the prefix: what was typed, wherever it is quoted.
        let typed = unprefixed_secrets_in(
            [
                "serve",
                "--listen",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "--db=/srv/C2FVsBQIhrscChlQIMV+b5sSYspob7oD/x.db",
                "/home/Alice/Documents2024/clerk.db",
                "/srv/Projects/ClerkSyncMirror2024Prod/users.db",
                "/Users/JDoe/OneDrive/MyApp/DB/Prod2024/clerk.db",
                "/mnt/S3/MyOrg/ClerkSync/QA/DB1/x.db",
                "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W x",
                "127.0.0.1:C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(
            typed,
            [
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
            ]
        );
        assert_eq!(
            redact_with(
                "cannot listen on MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw: invalid",
                &typed
            ),
            "cannot listen on [redacted]: invalid"
        );
        assert_eq!(
            redact_with(
                "cannot open /srv/C2FVsBQIhrscChlQIMV+b5sSYspob7oD/x.db",
                &typed
            ),
            "cannot open /srv/[redacted]/x.db"
        );
        // Help text names the form, and names, paths, URLs and ids that
        // are not secrets stay as written.
        for kept in [
            "One or more `whsec_...` values",
            "cannot read secret file /etc/clerk-sync/whsec_prod: not found",
            "no database at /home/Alice/Documents2024/clerk.db",
            "cannot open /srv/Projects/ClerkSync2024/data/users.db: denied",
            "no database at /srv/Projects/ClerkSyncMirror2024Prod/users.db",
            "no database at /Users/JDoe/OneDrive/MyApp/DB/Prod2024/clerk.db",
            "no database at /mnt/S3/MyOrg/ClerkSync/QA/DB1/x.db",
            "http://127.0.0.1:8080/api/clerk-webhook answered 401",
            "invalid value 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W x' for '--id <ID>'",
        ] {
            assert_eq!(redact_with(kept, &typed), kept);
        }
    }
}
