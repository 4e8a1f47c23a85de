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
/// a value that names no file, has no `/` and reads as secrets is one.
fn secret_file(path: &Path) -> String {
    let shown = path.to_string_lossy();
    let pasted = !shown.contains('/') && !path.exists() && Secrets::parse(&shown).is_ok();
    if pasted {
        format!(
            "secret file {} (a secret itself, not the path of a file holding one)",
            redact(&shown)
        )
    } else {
        format!("secret file {shown}")
    }
}

/// `text` with every `whsec_` secret in it cut to its prefix, for messages
/// that quote what the user typed.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    const PREFIX: &str = "whsec_";
    if !text.contains(PREFIX) {
        return text.into();
    }
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at + PREFIX.len()]);
        rest = &rest[at + PREFIX.len()..];
        let secret = rest.find(|c: char| !is_base64(c)).unwrap_or(rest.len());
        // A bare prefix (`whsec_...` in help text) hides nothing.
        if secret > 0 {
            out.push_str("...");
            rest = &rest[secret..];
        }
    }
    out.push_str(rest);
    out.into()
}

fn from_file(path: &Path, source: &str) -> anyhow::Result<Secrets> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    parse(&text, source)
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
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let e = load_secrets(Some(Path::new(secret))).unwrap_err();
        let message = format!("{e:#}");
        assert!(
            !message.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{message}"
        );
        assert!(
            message.contains("secret file whsec_... (a secret itself"),
            "{message}"
        );
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
    fn redaction_keeps_everything_but_the_secrets() {
        assert_eq!(redact("no secret here"), "no secret here");
        assert_eq!(
            redact("unexpected argument 'whsec_MfKQ9r8G+/LaSw==' found"),
            "unexpected argument 'whsec_...' found"
        );
        assert_eq!(
            redact("whsec_a,whsec_b whsec_"),
            "whsec_...,whsec_... whsec_"
        );
        // Help text names the form; it stays as written.
        assert_eq!(
            redact("One or more `whsec_...` values"),
            "One or more `whsec_...` values"
        );
    }
}
