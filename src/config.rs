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
    if !path.exists() && Secrets::parse(&shown).is_ok() {
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

/// The shortest unprefixed base64 taken for a secret (16 bytes and more).
const MIN_UNPREFIXED: usize = 22;

/// `text` with everything in it that reads as a signing secret cut out, for
/// messages that quote what the user typed: `whsec_` and at least 16 base64
/// characters become `whsec_...`; a run of 22 or more standard base64
/// characters mixing capitals, small letters and digits, as a random secret
/// without its prefix does (and words, paths and URLs rarely do), becomes
/// `[redacted]`.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    const PREFIX: &str = "whsec_";
    let any_base64 =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_');
    let standard = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(PREFIX) {
            let len = after.find(|c| !any_base64(c)).unwrap_or(after.len());
            out.push_str(PREFIX);
            if len >= MIN_PREFIXED {
                out.push_str("...");
                changed = true;
                rest = &after[len..];
            } else {
                rest = after;
            }
            continue;
        }
        let len = rest.find(|c| !standard(c)).unwrap_or(rest.len());
        if len == 0 {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        // A run ends early where `whsec_` begins, so the prefix is seen.
        let len = match rest.find(PREFIX) {
            Some(at) if at < len => at,
            _ => len,
        };
        let (run, tail) = rest.split_at(len);
        match secret_within(run) {
            Some((start, end)) => {
                out.push_str(&run[..start]);
                out.push_str("[redacted]");
                out.push_str(&run[end..]);
                changed = true;
            }
            None => out.push_str(run),
        }
        rest = tail;
    }
    if changed {
        out.into()
    } else {
        text.into()
    }
}

/// Where in `run` (standard base64 characters) an unprefixed secret lies:
/// the run itself, or the longest stretch of it between `/`s (base64 has
/// `/` in its alphabet, and so do the paths a secret gets pasted into).
fn secret_within(run: &str) -> Option<(usize, usize)> {
    if run.len() < MIN_UNPREFIXED {
        return None;
    }
    let mut bounds = vec![0];
    bounds.extend(run.match_indices('/').map(|(at, _)| at + 1));
    bounds.push(run.len() + 1);
    // Longest first, so all of a secret is cut rather than a piece of it.
    let mut spans: Vec<(usize, usize)> = bounds
        .iter()
        .enumerate()
        .flat_map(|(i, &start)| bounds[i + 1..].iter().map(move |&end| (start, end - 1)))
        .filter(|&(start, end)| end > start)
        .collect();
    spans.sort_by_key(|&(start, end)| std::cmp::Reverse(end - start));
    spans
        .into_iter()
        .find(|&(start, end)| looks_like_unprefixed_secret(&run[start..end]))
}

fn looks_like_unprefixed_secret(run: &str) -> bool {
    run.len() >= MIN_UNPREFIXED
        && run.bytes().any(|b| b.is_ascii_uppercase())
        && run.bytes().any(|b| b.is_ascii_lowercase())
        && run.bytes().any(|b| b.is_ascii_digit())
        && Secrets::parse(run).is_ok()
}

fn from_file(path: &Path, source: &str) -> anyhow::Result<Secrets> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    // Some editors start a UTF-8 file with a byte-order mark.
    parse(text.strip_prefix('\u{feff}').unwrap_or(&text), source)
}

fn parse(text: &str, source: &str) -> anyhow::Result<Secrets> {
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
        for path in ["/nonexistent/clerk-secret", "/etc/clerk-sync/whsec_prod"] {
            let e = load_secrets(Some(Path::new(path))).unwrap_err();
            let message = format!("{e:#}");
            assert!(
                message.contains(&format!("secret file {path}:")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_secret_file_may_start_with_a_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "\u{feff}whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(load_secrets(Some(&path)).unwrap().len(), 1);
    }

    #[test]
    fn redaction_keeps_everything_but_the_secrets() {
        assert_eq!(redact("no secret here"), "no secret here");
        assert_eq!(
            redact("unexpected argument 'whsec_MfKQ9r8G+/LaSw==x' found"),
            "unexpected argument 'whsec_...' found"
        );
        assert_eq!(
            redact("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_C2FVsBQIhrscChlQ/MV+b5sSYspob7oD whsec_"),
            "whsec_...,whsec_... whsec_"
        );
        // Without the prefix, wherever it stands.
        assert_eq!(
            redact("cannot listen on MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw: invalid"),
            "cannot listen on [redacted]: invalid"
        );
        assert_eq!(
            redact("cannot open /srv/C2FVsBQIhrscChlQIMV+b5sSYspob7oD/x.db"),
            "cannot open [redacted].db"
        );
        assert_eq!(
            redact("no database at /nonexistent/SGVscFNlbnRpbmVsU2VjcmV0VmFsdWUxMjM0NTY=: gone"),
            "no database at /[redacted]: gone"
        );
        // Help text names the form, and names, paths, URLs and ids that
        // are not secrets stay as written.
        for kept in [
            "One or more `whsec_...` values",
            "cannot read secret file /etc/clerk-sync/whsec_prod: not found",
            "cannot open /var/lib/clerk-sync/clerk-sync.db: denied",
            "http://127.0.0.1:8080/api/clerk-webhook answered 401",
            "CLERK_WEBHOOK_SIGNING_SECRET_FILE is empty",
            "a_very_long_snake_case_identifier_with_words",
        ] {
            assert_eq!(redact(kept), kept);
        }
    }
}
