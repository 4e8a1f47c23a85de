//! Cutting signing secrets out of text that quotes what the user typed:
//! errors, log lines, clap's reports, and subcommand output.
//!
//! Two rules: any `whsec_` followed by 16 or more base64 characters is cut
//! wherever it stands, and every configured secret (and every secret typed
//! without its prefix as an argument or in a `CLERK_*` variable) is cut
//! exactly, wherever it stands.

use crate::signature::Secrets;

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

pub(crate) fn redact_with<'t>(text: &'t str, known: &[String]) -> std::borrow::Cow<'t, str> {
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
/// those typed (see `typed_secrets`), then every one remembered: the
/// sources `secrets` reads early, and every configured one as it is loaded.
pub(crate) fn known_secrets() -> &'static std::sync::RwLock<Vec<String>> {
    static KNOWN: std::sync::OnceLock<std::sync::RwLock<Vec<String>>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| std::sync::RwLock::new(typed_secrets()))
}

/// Adds the secrets in `text` (a secret source's whole content, valid or
/// not) to what `redact` cuts.
pub fn remember(text: &str) {
    let mut known = known_secrets()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    add_secrets(&mut known, text);
}

/// Without their prefix, so that they are cut however a message quotes them.
pub(crate) fn add_secrets(known: &mut Vec<String>, text: &str) {
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
pub(crate) fn typed_secrets() -> Vec<String> {
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
pub(crate) fn unprefixed_secrets_in(values: impl Iterator<Item = String>) -> Vec<String> {
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
pub(crate) fn is_pasted_secret(value: &str) -> bool {
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
pub(crate) fn looks_like_unprefixed_secret(text: &str) -> bool {
    let count = |f: fn(&u8) -> bool| text.bytes().filter(f).count();
    let fifth = text.len() / 5;
    text.len() >= MIN_UNPREFIXED
        && count(u8::is_ascii_uppercase) >= fifth
        && count(u8::is_ascii_lowercase) >= fifth
        && text.bytes().any(|b| b.is_ascii_digit() || b == b'+')
        && Secrets::parse(text).is_ok()
}
