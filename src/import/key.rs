//! The Clerk secret key that `import` reads the Backend API with: where it
//! is looked for, and a type that never shows it.
//!
//! The order is Clerk's SDKs' with two sources in front: `--secret-key-file`,
//! then systemd's `$CREDENTIALS_DIRECTORY/clerk-secret-key`, then
//! `CLERK_SECRET_KEY`. The first source present is the only one used, so a
//! stale variable never wins over a file given on purpose.

use std::ffi::OsString;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The environment variable Clerk's own SDKs read the key from.
pub const KEY_ENV: &str = "CLERK_SECRET_KEY";

/// The credential name to use with systemd's `LoadCredential=`.
pub const CREDENTIAL_NAME: &str = "clerk-secret-key";

/// The most a key file may hold: a key is about 50 bytes, and `/dev/zero`
/// or a mistyped path to a database must not be read to its end.
const MAX_KEY_FILE: u64 = 64 * 1024;

const HOW: &str = "pass --secret-key-file PATH, set CLERK_SECRET_KEY, or load the systemd \
                   credential clerk-secret-key; the Secret key (sk_live_... or sk_test_...) is \
                   under API keys in the Clerk Dashboard";

/// A Clerk secret key. Its `Debug` and `Display` show only which kind of
/// key it is, so it can sit in structs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey {
    text: String,
}

/// Which instance a key is for, read from its prefix. Only the prefix is
/// looked at; Clerk alone knows whether the key is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `sk_live_...`: a production instance.
    Production,
    /// `sk_test_...`: a development instance.
    Development,
    /// Any other form; Clerk may add some.
    Other,
}

/// Why no key could be had. The message says how to give one and never
/// holds the key, nor a path that looks like one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl SecretKey {
    /// Loads the key from, in order: `file` (`--secret-key-file`), the
    /// systemd credential, `CLERK_SECRET_KEY`. Surrounding whitespace (and
    /// a byte-order mark) is dropped.
    ///
    /// # Errors
    /// When no source is present, the one used cannot be read, is empty, or
    /// holds something that is not a secret key.
    pub fn load(file: Option<&Path>) -> Result<Self, KeyError> {
        load_from(
            file,
            std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            std::env::var_os(KEY_ENV),
        )
    }

    /// A key given as text, checked as a loaded one is.
    ///
    /// # Errors
    /// When `text` is empty or is not a secret key.
    pub fn new(text: &str) -> Result<Self, KeyError> {
        parse(text, "the secret key")
    }

    /// The kind of instance the key is for, by its prefix.
    pub fn kind(&self) -> KeyKind {
        if self.text.starts_with("sk_live_") {
            KeyKind::Production
        } else if self.text.starts_with("sk_test_") {
            KeyKind::Development
        } else {
            KeyKind::Other
        }
    }

    /// The key itself, for the `Authorization` header and nothing else.
    pub(crate) fn expose(&self) -> &str {
        &self.text
    }

    /// `text` with the key cut out wherever it stands, for text that came
    /// from elsewhere (a server's error message) and is about to be shown.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.replace(self.text.as_str(), "[redacted]");
        // A server could quote the key without its prefix.
        if let Some((_, body)) = self
            .text
            .split_once("_test_")
            .or(self.text.split_once("_live_"))
        {
            if body.len() >= 8 {
                out = out.replace(body, "[redacted]");
            }
        }
        out
    }

    fn shown(&self) -> &'static str {
        match self.kind() {
            KeyKind::Production => "sk_live_...",
            KeyKind::Development => "sk_test_...",
            KeyKind::Other => "...",
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretKey").field(&self.shown()).finish()
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (hidden)", self.shown())
    }
}

fn load_from(
    file: Option<&Path>,
    credentials: Option<PathBuf>,
    env: Option<OsString>,
) -> Result<SecretKey, KeyError> {
    if let Some(path) = file {
        let source = file_source(path);
        return parse(&read_key_file(path, &source)?, &source);
    }
    if let Some(dir) = credentials {
        let path = dir.join(CREDENTIAL_NAME);
        if path.exists() {
            let source = format!("credential {CREDENTIAL_NAME}");
            return parse(&read_key_file(&path, &source)?, &source);
        }
    }
    match env {
        Some(value) => match value.to_str() {
            Some(text) => parse(text, KEY_ENV),
            None => Err(KeyError(format!("{KEY_ENV} is not valid UTF-8; {HOW}"))),
        },
        None => Err(KeyError(format!("no Clerk secret key: {HOW}"))),
    }
}

/// How errors name a key file. A key pasted where its path belongs must not
/// reach the journal through them.
fn file_source(path: &Path) -> String {
    let shown = path.to_string_lossy();
    let looks_like_key = ["sk_live_", "sk_test_"]
        .iter()
        .any(|p| shown.trim().starts_with(p));
    if looks_like_key && !path.exists() {
        "secret key file (not shown: the value given looks like a key itself, not the path of a \
         file holding one)"
            .to_owned()
    } else {
        format!("secret key file {shown}")
    }
}

/// A key file's text, read once: a regular file or a pipe
/// (`--secret-key-file <(pass show clerk)`), at most [`MAX_KEY_FILE`] bytes.
fn read_key_file(path: &Path, source: &str) -> Result<String, KeyError> {
    use std::os::unix::fs::FileTypeExt as _;
    let fail = |why: &dyn fmt::Display| KeyError(format!("cannot read {source}: {why}; {HOW}"));
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    // The type of what was opened, not of what the path named a moment
    // before.
    let kind = file.metadata().map_err(|e| fail(&e))?.file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        return Err(fail(&"not a regular file or a pipe"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(fail(&format_args!(
            "larger than {MAX_KEY_FILE} bytes, so not a key file"
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail(&"not UTF-8 text"))
}

fn parse(text: &str, source: &str) -> Result<SecretKey, KeyError> {
    // Some editors start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text).trim();
    let fail = |why: &str| Err(KeyError(format!("{source} {why}; {HOW}")));
    if text.is_empty() {
        return fail("is empty");
    }
    // It goes into an HTTP header as it is.
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return fail("holds more than one key, or characters no key has");
    }
    if text.starts_with("pk_") {
        return fail("holds a publishable key (pk_...), not the secret key");
    }
    if text.starts_with("whsec_") {
        return fail("holds a webhook signing secret (whsec_...), not the secret key");
    }
    Ok(SecretKey {
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_test_Zm9vYmFyYmF6cXV1eDEyMzQ1Njc4OTBhYmNkZWY";

    fn load(
        file: Option<&Path>,
        dir: Option<&Path>,
        env: Option<&str>,
    ) -> Result<SecretKey, KeyError> {
        load_from(file, dir.map(Path::to_path_buf), env.map(OsString::from))
    }

    #[test]
    fn the_first_source_present_is_the_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk_live_fromthefile0123456789\n").unwrap();
        std::fs::write(
            dir.path().join(CREDENTIAL_NAME),
            " sk_test_fromcredential0123\n",
        )
        .unwrap();

        let key = load(Some(&file), Some(dir.path()), Some(KEY)).unwrap();
        assert_eq!(key.expose(), "sk_live_fromthefile0123456789");
        assert_eq!(key.kind(), KeyKind::Production);
        let key = load(None, Some(dir.path()), Some(KEY)).unwrap();
        assert_eq!(key.expose(), "sk_test_fromcredential0123");
        assert_eq!(key.kind(), KeyKind::Development);
        // A credentials directory without the key is passed over.
        let empty = tempfile::tempdir().unwrap();
        let key = load(None, Some(empty.path()), Some(KEY)).unwrap();
        assert_eq!(key.expose(), KEY);
    }

    #[test]
    fn none_or_an_empty_key_says_how_to_give_one() {
        let e = load(None, None, None).unwrap_err().to_string();
        assert!(e.starts_with("no Clerk secret key"), "{e}");
        assert!(
            e.contains("--secret-key-file") && e.contains(KEY_ENV),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = load(None, None, Some("  \n")).unwrap_err().to_string();
        assert!(e.starts_with("CLERK_SECRET_KEY is empty;"), "{e}");
        assert!(e.contains("--secret-key-file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "\u{feff}\n").unwrap();
        let e = load(Some(&file), None, Some(KEY)).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn a_wrong_kind_of_key_is_named_and_not_shown() {
        for (text, why) in [
            ("pk_test_Y2xlcmsuZXhhbXBsZS5jb20k", "publishable key"),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "webhook signing secret",
            ),
            (
                "sk_test_abcdef0123456789 sk_live_abcdef0123456789",
                "more than one key",
            ),
        ] {
            let e = SecretKey::new(text).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains(&text[8..16]), "{e}");
        }
    }

    #[test]
    fn a_key_given_as_the_file_path_is_not_echoed() {
        let e = load(Some(Path::new(KEY)), None, None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&KEY[8..]), "{e}");
        assert!(e.contains("looks like a key itself"), "{e}");
        let e = load(Some(Path::new("/nonexistent/clerk-key")), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret key file /nonexistent/clerk-key:"), "{e}");
    }

    #[test]
    fn a_key_file_is_read_within_bounds_and_a_pipe_works() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'A'; 100_000]).unwrap();
        for (path, why) in [
            (Path::new("/dev/zero"), "not a regular file or a pipe"),
            (dir.path(), "not a regular file or a pipe"),
            (big.as_path(), "larger than"),
        ] {
            let e = load(Some(path), None, Some(KEY)).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::write(fifo, format!("{KEY}\n"))
        });
        let key = load(Some(&fifo), None, None).unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(key.expose(), KEY);
    }

    #[test]
    fn debug_display_and_redaction_never_show_the_key() {
        let key = SecretKey::new(KEY).unwrap();
        for shown in [format!("{key:?}"), format!("{key}"), format!("{key:#?}")] {
            assert!(!shown.contains(&KEY[8..]), "{shown}");
            assert!(shown.contains("sk_test_..."), "{shown}");
        }
        assert_eq!(
            key.redact(&format!("bad key {KEY} or {}", &KEY[8..])),
            "bad key [redacted] or [redacted]"
        );
    }
}
