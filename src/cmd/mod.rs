//! The subcommands besides `serve`: [`send`], [`sign`], [`verify`],
//! [`status`]. They use the same secret sources and the same signature code
//! as `serve`, so what they sign is what the receiver accepts. Their output
//! goes through [`print_out`], which cuts any secret it quotes.

pub mod import;
pub mod send;
pub mod sign;
pub mod status;
pub mod verify;

use std::io::Write as _;

use anyhow::Context as _;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::redact::redact;

/// Writes a subcommand's output to standard output, all of it or an error.
/// A reader that went away (`| head`) took what it wanted, so a broken pipe
/// ends the output quietly; any other failure (a full disk) is an error, or
/// a script would take a cut-off report for a whole one.
///
/// # Errors
/// When standard output cannot be written, except for a broken pipe.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(redact(text).as_bytes())
        .and_then(|()| out.flush())
    {
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

pub(crate) fn random_base62(len: usize) -> anyhow::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_look_like_svix_ids() {
        let a = message_id().unwrap();
        assert!(a.starts_with("msg_") && a.len() == 31, "{a}");
        assert_ne!(a, message_id().unwrap());
    }
}
