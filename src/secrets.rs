//! Finding the signing secrets, with errors that say how to fix them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

use crate::redact::{is_pasted_secret, remember};
use crate::signature::{SecretError, Secrets};

/// The environment variable Clerk's own SDK reads.
pub const SECRET_ENV: &str = "CLERK_WEBHOOK_SIGNING_SECRET";

/// The credential name to use with systemd's `LoadCredential=`.
pub const CREDENTIAL_NAME: &str = "clerk-webhook-secret";

const FIX: &str =
    "copy the endpoint's Signing Secret (whsec_...) from the Clerk Dashboard, Webhooks";

/// Hands every secret this run could load to the redaction, before the
/// command line is parsed: an error about the command line comes before
/// any secret is loaded, and may quote one.
pub fn remember_early() {
    if let Ok(text) = std::env::var(SECRET_ENV) {
        remember(&text);
    }
    for text in secret_files().iter().filter_map(|f| read_early(f)) {
        remember(&text);
    }
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

/// A secret file read early, for redaction only: a regular file, so that
/// a pipe is left whole for the real read and a FIFO never blocks here.
fn read_early(path: &Path) -> Option<String> {
    std::fs::metadata(path)
        .is_ok_and(|m| m.is_file())
        .then(|| read_secret_file(path).ok())
        .flatten()
}

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

/// The most a secret file may hold: a few secrets take a few hundred bytes.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret file's text, at most [`MAX_SECRET_FILE`] bytes of it, or why
/// not: `/dev/zero` would never end. A pipe (`--secret-file <(...)`) is
/// read, once.
pub(crate) fn read_secret_file(path: &Path) -> std::io::Result<String> {
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
    use crate::redact::*;

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
