//! `clerk-sync verify`: check a saved delivery offline.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

use super::print_out;
use crate::cli::VerifyArgs;
use crate::signature::{self, Secrets, VerifyError, DEFAULT_TOLERANCE};
use crate::{clock, redact, secrets};

/// `verify`: checks a saved delivery and says why it fails.
///
/// # Errors
/// Missing secret or unreadable file; a bad delivery is exit code 1, not an error.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let secrets = secrets::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    match check_delivery(&secrets, &args, &body, clock::now_ms() / 1000) {
        Ok(note) => {
            print_out(&format!("{note}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            // Not eprintln!, which panics on a stderr it cannot write; the exit
            // code carries the verdict either way.
            // The reason may quote what was typed, a secret in the wrong
            // place included.
            let _ = writeln!(std::io::stderr(), "invalid: {}", redact::redact(&reason));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
