//! `import --from-file`: Clerk users read from a file one at a time.
//!
//! Four formats, told apart by the content rather than the file name:
//! - a JSON array of user objects, as `GET /v1/users` returns them
//!   (first non-space byte `[`);
//! - a `{"data": [...]}` page, as the other list endpoints and some tools
//!   write them (`{` whose object has a top-level `"data"` array);
//! - JSON Lines, or any whitespace-separated user objects (`{` otherwise);
//! - the Clerk Dashboard's CSV export (anything else): a header row naming
//!   `id`, `first_name`, `last_name`, `username`, `primary_email_address`,
//!   and more.
//!
//! A file is never held whole: JSON is cut into its top-level objects by a
//! small scanner that only tracks strings and nesting; CSV goes through the
//! `csv` crate record by record. Memory is one object, at most
//! [`MAX_RECORD`] bytes. A JSON object is parsed once, by the caller, which
//! reads its fields anyway; only when that fails does [`Record::check`]
//! parse it again, to say where the file is broken.
//!
//! A CSV row becomes a user object of Clerk's shape (see [`Record`]), with
//! only what the export holds: no timestamps, no metadata, and never its
//! `password_digest` or `totp_secret`, which the mirror must not keep.
//!
//! Here: the formats, the record and its error, and telling the formats
//! apart. `scan` cuts JSON into values, `json` walks the three JSON layouts
//! over it, and `csv` reads the Dashboard's export.

mod csv;
mod json;
mod scan;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

// `self::`: the module below, not the csv crate of the same name.
use self::csv::CsvRows;
use json::{Json, State};
use scan::Scanner;

/// The largest single object read: a Clerk user is a few KiB, so anything
/// far larger is a broken file (an unclosed string eats the rest of it).
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

const READ_BUFFER: usize = 64 * 1024;

/// What a file was found to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[ {user}, ... ]`.
    JsonArray,
    /// `{"data": [ {user}, ... ], ...}`.
    JsonPage,
    /// `{user}` per line (also an empty file).
    JsonLines,
    /// The Clerk Dashboard's CSV export.
    Csv,
}

/// One user from a file.
#[derive(Debug)]
pub struct Record {
    /// The user object: byte-exact from a JSON file; built from a CSV row
    /// with `id`, `first_name`, `last_name`, `username`,
    /// `primary_email_address_id`, `email_addresses[]` (`id`,
    /// `email_address`, `verification.status` where the export says),
    /// `primary_phone_number_id` and `phone_numbers[]` likewise. The
    /// addresses' ids (`csv_email_0`, ...) are made up, and only tie the
    /// primary to its entry. From a JSON file it is one value as the
    /// scanner cut it, valid UTF-8 but not yet parsed: see
    /// [`Record::check`].
    pub object: String,
    /// From a CSV export: not a full object and without `updated_at`, so
    /// to be inserted only where the mirror has no such user.
    pub from_csv: bool,
    /// The line the object starts on, from 1.
    pub line: u64,
    /// Its place in the file, from 1 (a CSV's header is not counted).
    pub number: u64,
}

impl Record {
    /// Whether the object is valid JSON: for a caller whose own parse of
    /// it failed, the error that names the line where it breaks.
    ///
    /// # Errors
    /// The object is not valid JSON.
    pub fn check(&self) -> Result<(), FileError> {
        serde_json::from_str::<serde::de::IgnoredAny>(&self.object)
            .map(|_| ())
            .map_err(|e| {
                FileError::at(
                    self.line + e.line().saturating_sub(1) as u64,
                    Some(self.number),
                    format!("not valid JSON: {e}"),
                )
            })
    }
}

/// A file that cannot be read, or a broken record. It names the line and,
/// where there is one, the record.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", place(*.line, *.record))]
pub struct FileError {
    /// The line, from 1, where known.
    pub line: Option<u64>,
    /// The record, from 1, where known.
    pub record: Option<u64>,
    message: String,
}

fn place(line: Option<u64>, record: Option<u64>) -> String {
    match (line, record) {
        (Some(l), Some(r)) => format!("line {l} (record {r}): "),
        (Some(l), None) => format!("line {l}: "),
        (None, Some(r)) => format!("record {r}: "),
        (None, None) => String::new(),
    }
}

impl FileError {
    fn at(line: u64, record: Option<u64>, message: impl Into<String>) -> Self {
        FileError {
            line: Some(line),
            record,
            message: message.into(),
        }
    }
}

/// The users in a file, one at a time; see the module docs. After an
/// error the iterator ends: what follows a broken record cannot be trusted
/// to start where it seems to.
pub struct UserFile<R: BufRead> {
    format: Format,
    source: Source<R>,
}

enum Source<R: BufRead> {
    Json(Json<R>),
    Csv(Box<CsvRows<R>>),
}

impl UserFile<BufReader<File>> {
    /// Opens `path` and finds its format.
    ///
    /// # Errors
    /// When the file cannot be opened or read, or a CSV has no `id` column.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let file = File::open(path).map_err(|e| FileError {
            line: None,
            record: None,
            message: format!("cannot open {}: {e}", path.display()),
        })?;
        Self::new(BufReader::with_capacity(READ_BUFFER, file))
    }
}

impl<R: BufRead> UserFile<R> {
    /// Reads from `reader`, finding its format from the first bytes.
    ///
    /// # Errors
    /// As [`UserFile::open`].
    pub fn new(reader: R) -> Result<Self, FileError> {
        let mut scan = Scanner { reader, line: 1 };
        scan.skip_bom()?;
        let (format, source) = match scan.skip_space()? {
            Some(b'[') => {
                scan.bump()?;
                (
                    Format::JsonArray,
                    Source::Json(Json::new(scan, State::Elements { first: true })),
                )
            }
            Some(b'{') => {
                let line = scan.line;
                scan.bump()?;
                match scan.first_object(line)? {
                    None => (
                        Format::JsonPage,
                        Source::Json(Json::new(scan, State::Elements { first: true })),
                    ),
                    Some(object) => {
                        let mut json = Json::new(scan, State::Lines);
                        json.pending = Some((object, line));
                        (Format::JsonLines, Source::Json(json))
                    }
                }
            }
            None => (
                Format::JsonLines,
                Source::Json(Json::new(scan, State::Done)),
            ),
            Some(_) => (Format::Csv, Source::Csv(Box::new(CsvRows::new(scan)?))),
        };
        Ok(UserFile { format, source })
    }

    /// The format found.
    pub fn format(&self) -> Format {
        self.format
    }
}

impl<R: BufRead> Iterator for UserFile<R> {
    type Item = Result<Record, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Json(json) => json.next_record(self.format),
            Source::Csv(csv) => csv.next_record(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::Cursor;

    /// Every record of `text`, read through a buffer of `buffer` bytes (a
    /// small one makes values, strings and lines cross from read to read),
    /// each checked as the import does, up to the first error.
    pub(super) fn read_all(text: &str, buffer: usize) -> (Format, Vec<Result<Record, FileError>>) {
        let file = UserFile::new(BufReader::with_capacity(
            buffer,
            Cursor::new(text.to_owned()),
        ))
        .unwrap();
        let format = file.format();
        let mut records = Vec::new();
        for record in file {
            let record = record.and_then(|r| r.check().map(|()| r));
            let broken = record.is_err();
            records.push(record);
            if broken {
                break;
            }
        }
        (format, records)
    }

    fn ids(text: &str, buffer: usize) -> (Format, Vec<String>) {
        let (format, records) = read_all(text, buffer);
        let ids = records
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                let v: Value = serde_json::from_str(&r.object).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect();
        (format, ids)
    }

    #[test]
    fn each_format_is_told_by_its_content() {
        let cases = [
            (r#"[{"id":"u1"},{"id":"u2"}]"#, Format::JsonArray),
            (" \n [ ]", Format::JsonArray),
            (
                r#"{"data":[{"id":"u1"},{"id":"u2"}],"total_count":2}"#,
                Format::JsonPage,
            ),
            (
                r#"{"total_count":2, "data":[{"id":"u1"},{"id":"u2"}]}"#,
                Format::JsonPage,
            ),
            ("{\"id\":\"u1\"}\n{\"id\":\"u2\"}\n", Format::JsonLines),
            (
                "{\"id\":\"u1\",\"nested\":{\"data\":[1]}}\n{\"id\":\"u2\"}",
                Format::JsonLines,
            ),
            ("", Format::JsonLines),
            ("id,first_name\nu1,A\nu2,B\n", Format::Csv),
        ];
        for (text, format) in cases {
            for buffer in [1, 3, 64 * 1024] {
                let (found, ids) = ids(text, buffer);
                assert_eq!(found, format, "{text}");
                let expected: Vec<_> = if text.contains("u1") {
                    vec!["u1", "u2"]
                } else {
                    vec![]
                };
                assert_eq!(ids, expected, "{text} with buffer {buffer}");
            }
        }
    }

    #[test]
    fn a_file_larger_than_the_read_buffer_streams_through_in_each_format() {
        const N: usize = 3000;
        let users: Vec<String> = (0..N)
            .map(|n| {
                format!(
                    r#"{{"id":"user_{n:05}","first_name":"Name {n}","email_addresses":[{{"id":"idn_{n}","email_address":"u{n}@example.com"}}],"public_metadata":{{"note":"{}"}}}}"#,
                    "x".repeat(n % 97)
                )
            })
            .collect();
        let rows: Vec<String> = (0..N)
            .map(|n| {
                format!(
                    "user_{n:05},\"Name, {n}\",,,u{n}@example.com,{}",
                    "x".repeat(n % 97)
                )
            })
            .collect();
        let files = [
            (format!("[{}]", users.join(",\n")), Format::JsonArray),
            (
                format!("{{\"data\": [{}], \"total_count\": {N}}}", users.join(",")),
                Format::JsonPage,
            ),
            (users.join("\n"), Format::JsonLines),
            (
                format!(
                    "id,first_name,last_name,username,primary_email_address,note\n{}\n",
                    rows.join("\n")
                ),
                Format::Csv,
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (n, (text, format)) in files.iter().enumerate() {
            assert!(text.len() > 4 * READ_BUFFER);
            let path = dir.path().join(format!("users-{n}"));
            std::fs::write(&path, text).unwrap();
            let file = UserFile::open(&path).unwrap();
            assert_eq!(file.format(), *format);
            let mut count = 0;
            for (i, record) in file.enumerate() {
                let record = record.unwrap();
                let v: Value = serde_json::from_str(&record.object).unwrap();
                assert_eq!(v["id"], format!("user_{i:05}"), "{format:?}");
                assert_eq!(record.number, i as u64 + 1);
                count += 1;
            }
            assert_eq!(count, N, "{format:?}");
        }
        let e = UserFile::open(&dir.path().join("missing")).err().unwrap();
        assert!(e.to_string().starts_with("cannot open "), "{e}");
    }
}
