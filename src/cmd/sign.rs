//! `clerk-sync sign`: the headers and a curl line for a file's bytes.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{message_id, print_out};
use crate::cli::SignArgs;
use crate::{clock, secrets};

/// `sign`: prints the three headers and a curl line for a file's bytes.
///
/// # Errors
/// Missing secret or unreadable file.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let secrets = secrets::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let id = match args.id {
        Some(id) => id,
        None => message_id()?,
    };
    let timestamp = args.timestamp.unwrap_or_else(|| clock::now_ms() / 1000);
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

/// `s` as one word for a POSIX shell: in single quotes, each `'` in it
/// closed, escaped and reopened.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_any_text_one_word() {
        assert_eq!(shell_quote("/tmp/a b.json"), "'/tmp/a b.json'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(r"$(x) `y` \"), r"'$(x) `y` \'");
    }
}
