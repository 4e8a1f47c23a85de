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
//! small scanner that only tracks strings and nesting, and each object is
//! then checked by serde_json on its own; CSV goes through the `csv` crate
//! record by record. Memory is one object, at most [`MAX_RECORD`] bytes.
//!
//! A CSV row becomes a user object of Clerk's shape (see [`Record`]), with
//! only what the export holds: no timestamps, no metadata, and never its
//! `password_digest` or `totp_secret`, which the mirror must not keep.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::value::RawValue;
use serde_json::{json, Value};

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
    /// primary to its entry.
    pub object: Box<RawValue>,
    /// From a CSV export: not a full object and without `updated_at`, so
    /// to be inserted only where the mirror has no such user.
    pub from_csv: bool,
    /// The line the object starts on, from 1.
    pub line: u64,
    /// Its place in the file, from 1 (a CSV's header is not counted).
    pub number: u64,
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

/// Cuts JSON into values without parsing them.
struct Scanner<R> {
    reader: R,
    /// The line of the next byte, from 1.
    line: u64,
}

impl<R: BufRead> Scanner<R> {
    fn io(&self, error: &io::Error) -> FileError {
        FileError::at(self.line, None, format!("cannot read: {error}"))
    }

    fn peek(&mut self) -> Result<Option<u8>, FileError> {
        match self.reader.fill_buf() {
            Ok(buf) => Ok(buf.first().copied()),
            Err(e) => Err(self.io(&e)),
        }
    }

    fn bump(&mut self) -> Result<Option<u8>, FileError> {
        let byte = self.peek()?;
        if let Some(b) = byte {
            self.reader.consume(1);
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(byte)
    }

    fn skip_bom(&mut self) -> Result<(), FileError> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let starts = match self.reader.fill_buf() {
            Ok(buf) => buf.starts_with(BOM),
            Err(e) => return Err(self.io(&e)),
        };
        if starts {
            self.reader.consume(BOM.len());
        }
        Ok(())
    }

    /// Skips JSON whitespace; the next byte, not consumed.
    fn skip_space(&mut self) -> Result<Option<u8>, FileError> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\r' | b'\n') => {
                    self.bump()?;
                }
                other => return Ok(other),
            }
        }
    }

    /// Appends the value that starts at the next byte to `out`: a string,
    /// an object or array up to its closing bracket, or a scalar up to the
    /// next delimiter. The caller checks it with serde_json.
    fn take_value(&mut self, out: &mut Vec<u8>, record: Option<u64>) -> Result<(), FileError> {
        let start_line = self.line;
        let start = out.len();
        let scalar = !matches!(self.peek()?, Some(b'{' | b'[' | b'"'));
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) => return Err(self.io(&e)),
            };
            if buf.is_empty() {
                if scalar && out.len() > start {
                    return Ok(());
                }
                return Err(FileError::at(
                    start_line,
                    record,
                    "the file ends inside this value",
                ));
            }
            let mut used = 0;
            let mut finished = false;
            for &b in buf {
                if scalar {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                        finished = true;
                        break;
                    }
                    used += 1;
                    continue;
                }
                used += 1;
                if b == b'\n' {
                    self.line += 1;
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            finished = true;
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            finished = true;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.extend_from_slice(&buf[..used]);
            self.reader.consume(used);
            if out.len() - start > MAX_RECORD {
                return Err(FileError::at(
                    start_line,
                    record,
                    format!("a value larger than {MAX_RECORD} bytes; is the file broken?"),
                ));
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// Reads a string value and unescapes it.
    fn take_key(&mut self) -> Result<(String, Vec<u8>), FileError> {
        let line = self.line;
        if self.peek()? != Some(b'"') {
            return Err(FileError::at(line, None, "expected a quoted key"));
        }
        let mut raw = Vec::new();
        self.take_value(&mut raw, None)?;
        let key = serde_json::from_slice::<String>(&raw)
            .map_err(|e| FileError::at(line, None, format!("a broken key: {e}")))?;
        Ok((key, raw))
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), FileError> {
        if self.skip_space()? == Some(byte) {
            self.bump()?;
            Ok(())
        } else {
            Err(self.unexpected(None, what))
        }
    }

    fn describe_next(&mut self) -> Result<String, FileError> {
        Ok(match self.peek()? {
            None => "the end of the file".to_owned(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", char::from(b)),
            Some(b) => format!("byte 0x{b:02x}"),
        })
    }

    /// After the first `{` of the file: either a page (its top-level
    /// `"data"` key is reached, and the scanner left inside that array:
    /// `None`), or the first of several objects (returned whole).
    fn first_object(&mut self, line: u64) -> Result<Option<Vec<u8>>, FileError> {
        // Everything consumed is kept, whitespace too: should this be the
        // first of several objects, it is handed on byte-exact.
        let mut object = b"{".to_vec();
        if self.keep_space(&mut object)? == Some(b'}') {
            self.bump()?;
            object.push(b'}');
            return Ok(Some(object));
        }
        loop {
            let key_line = self.line;
            if self.keep_space(&mut object)? != Some(b'"') {
                return Err(self.unexpected(Some(1), "a quoted key"));
            }
            let key_start = object.len();
            self.take_value(&mut object, Some(1))?;
            let key = serde_json::from_slice::<String>(&object[key_start..])
                .map_err(|e| FileError::at(key_line, Some(1), format!("a broken key: {e}")))?;
            if self.keep_space(&mut object)? != Some(b':') {
                return Err(self.unexpected(Some(1), "':' after a key"));
            }
            self.bump()?;
            object.push(b':');
            let next = self.keep_space(&mut object)?;
            if key == "data" && next == Some(b'[') {
                self.bump()?;
                return Ok(None);
            }
            self.take_value(&mut object, Some(1))?;
            if object.len() > MAX_RECORD {
                return Err(FileError::at(
                    line,
                    Some(1),
                    format!("an object larger than {MAX_RECORD} bytes; is the file broken?"),
                ));
            }
            match self.keep_space(&mut object)? {
                Some(b',') => {
                    self.bump()?;
                    object.push(b',');
                }
                Some(b'}') => {
                    self.bump()?;
                    object.push(b'}');
                    return Ok(Some(object));
                }
                _ => return Err(self.unexpected(Some(1), "',' or '}' in an object")),
            }
        }
    }

    /// As [`Scanner::skip_space`], appending what it skips to `out`.
    fn keep_space(&mut self, out: &mut Vec<u8>) -> Result<Option<u8>, FileError> {
        loop {
            match self.peek()? {
                Some(b @ (b' ' | b'\t' | b'\r' | b'\n')) => {
                    self.bump()?;
                    out.push(b);
                }
                other => return Ok(other),
            }
        }
    }

    fn unexpected(&mut self, record: Option<u64>, expected: &str) -> FileError {
        let found = self
            .describe_next()
            .unwrap_or_else(|e| format!("an unreadable byte ({e})"));
        FileError::at(
            self.line,
            record,
            format!("expected {expected}, found {found}"),
        )
    }
}

enum State {
    /// Inside the array (of the file, or of the page's `data`).
    Elements {
        first: bool,
    },
    /// The page's keys after `data`.
    PageRest,
    /// Top-level objects, one after another.
    Lines,
    Done,
}

struct Json<R> {
    scan: Scanner<R>,
    state: State,
    /// JSON Lines' first object, read while finding the format.
    pending: Option<(Vec<u8>, u64)>,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Json<R> {
    fn new(scan: Scanner<R>, state: State) -> Self {
        Json {
            scan,
            state,
            pending: None,
            number: 0,
            buf: Vec::new(),
        }
    }

    fn next_record(&mut self, format: Format) -> Option<Result<Record, FileError>> {
        let result = self.step(format);
        if !matches!(result, Ok(Some(_))) {
            self.state = State::Done;
        }
        result.transpose()
    }

    fn step(&mut self, format: Format) -> Result<Option<Record>, FileError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Lines => {
                    if let Some((bytes, line)) = self.pending.take() {
                        return self.record(bytes, line).map(Some);
                    }
                    let Some(next) = self.scan.skip_space()? else {
                        return Ok(None);
                    };
                    let line = self.scan.line;
                    if next != b'{' {
                        return Err(FileError::at(
                            line,
                            Some(self.number + 1),
                            "not a JSON object; each line must be one user object",
                        ));
                    }
                    let mut bytes = std::mem::take(&mut self.buf);
                    bytes.clear();
                    self.scan.take_value(&mut bytes, Some(self.number + 1))?;
                    return self.record(bytes, line).map(Some);
                }
                State::Elements { first } => {
                    let next = self.scan.skip_space()?;
                    if next == Some(b']') {
                        if !first {
                            // `[a, ]`: serde_json refuses it too.
                            return Err(FileError::at(
                                self.scan.line,
                                None,
                                "a ',' before the array's ']'",
                            ));
                        }
                        self.scan.bump()?;
                        self.state = self.after_array(format);
                        continue;
                    }
                    let line = self.scan.line;
                    if next != Some(b'{') {
                        return Err(self.scan.unexpected(Some(self.number + 1), "a user object"));
                    }
                    let mut bytes = std::mem::take(&mut self.buf);
                    bytes.clear();
                    self.scan.take_value(&mut bytes, Some(self.number + 1))?;
                    match self.scan.skip_space()? {
                        Some(b',') => {
                            self.scan.bump()?;
                            self.state = State::Elements { first: false };
                        }
                        Some(b']') => {
                            self.scan.bump()?;
                            self.state = self.after_array(format);
                        }
                        _ => {
                            return Err(self
                                .scan
                                .unexpected(Some(self.number + 1), "',' or ']' after an object"))
                        }
                    }
                    return self.record(bytes, line).map(Some);
                }
                State::PageRest => {
                    // The keys after `data`, such as `total_count`.
                    let mut skipped = Vec::new();
                    loop {
                        match self.scan.skip_space()? {
                            Some(b'}') => {
                                self.scan.bump()?;
                                self.expect_end("the page's '}'")?;
                                return Ok(None);
                            }
                            Some(b',') => {
                                self.scan.bump()?;
                                self.scan.skip_space()?;
                                let (key, _) = self.scan.take_key()?;
                                if key == "data" {
                                    return Err(FileError::at(
                                        self.scan.line,
                                        None,
                                        "a second \"data\" key",
                                    ));
                                }
                                self.scan.expect(b':', "':' after a key")?;
                                self.scan.skip_space()?;
                                skipped.clear();
                                self.scan.take_value(&mut skipped, None)?;
                            }
                            _ => return Err(self.scan.unexpected(None, "',' or '}' in the page")),
                        }
                    }
                }
            }
        }
    }

    fn after_array(&self, format: Format) -> State {
        match format {
            Format::JsonPage => State::PageRest,
            _ => State::Done,
        }
    }

    /// Only whitespace may follow the file's one value; anything else
    /// would be users silently left out.
    fn expect_end(&mut self, after: &str) -> Result<(), FileError> {
        match self.scan.skip_space()? {
            None => Ok(()),
            Some(_) => Err(FileError::at(
                self.scan.line,
                None,
                format!("more text after {after}"),
            )),
        }
    }

    fn record(&mut self, bytes: Vec<u8>, line: u64) -> Result<Record, FileError> {
        self.number += 1;
        let number = self.number;
        let parsed = serde_json::from_slice::<Box<RawValue>>(&bytes);
        // The buffer is used again for the next object; its capacity stays.
        self.buf = bytes;
        let object = parsed.map_err(|e| {
            FileError::at(
                line + e.line().saturating_sub(1) as u64,
                Some(number),
                format!("not valid JSON: {e}"),
            )
        })?;
        // An array's last element: nothing may follow the array.
        if matches!(self.state, State::Done) {
            self.expect_end("the array's ']'")?;
        }
        Ok(Record {
            object,
            from_csv: false,
            line,
            number,
        })
    }
}

/// Where each column the object needs stands in the CSV.
struct Columns {
    id: usize,
    first_name: Option<usize>,
    last_name: Option<usize>,
    username: Option<usize>,
    primary_email: Option<usize>,
    primary_phone: Option<usize>,
    verified_emails: Option<usize>,
    unverified_emails: Option<usize>,
    verified_phones: Option<usize>,
    unverified_phones: Option<usize>,
}

struct CsvRows<R> {
    rows: csv::StringRecordsIntoIter<R>,
    columns: Columns,
    /// Lines skipped before the `csv` reader began, which it does not count.
    lines_before: u64,
    number: u64,
    done: bool,
}

impl<R: BufRead> CsvRows<R> {
    fn new(scan: Scanner<R>) -> Result<Self, FileError> {
        let lines_before = scan.line - 1;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            // Clerk's migration tool's sample starts with a `#` note.
            .comment(Some(b'#'))
            .from_reader(scan.reader);
        let headers = reader
            .headers()
            .map_err(|e| csv_error(&e, lines_before, None))?
            .clone();
        let line = headers
            .position()
            .map_or(1, |p| p.line())
            .saturating_add(lines_before);
        let find = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let Some(id) = find("id") else {
            return Err(FileError::at(
                line,
                None,
                "not a JSON array, a {\"data\": [...]} page, JSON Lines, nor the Clerk Dashboard's \
                 CSV export (its header has no `id` column)",
            ));
        };
        let columns = Columns {
            id,
            first_name: find("first_name"),
            last_name: find("last_name"),
            username: find("username"),
            primary_email: find("primary_email_address"),
            primary_phone: find("primary_phone_number"),
            verified_emails: find("verified_email_addresses"),
            unverified_emails: find("unverified_email_addresses"),
            verified_phones: find("verified_phone_numbers"),
            unverified_phones: find("unverified_phone_numbers"),
        };
        Ok(CsvRows {
            rows: reader.into_records(),
            columns,
            lines_before,
            number: 0,
            done: false,
        })
    }

    fn next_record(&mut self) -> Option<Result<Record, FileError>> {
        if self.done {
            return None;
        }
        let result = match self.rows.next()? {
            Err(e) => Err(csv_error(&e, self.lines_before, Some(self.number + 1))),
            Ok(row) => {
                self.number += 1;
                let line = row.position().map_or(0, |p| p.line()) + self.lines_before;
                csv_user(&self.columns, &row)
                    .map(|object| Record {
                        object,
                        from_csv: true,
                        line,
                        number: self.number,
                    })
                    .map_err(|why| FileError::at(line, Some(self.number), why))
            }
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

fn csv_error(error: &csv::Error, lines_before: u64, record: Option<u64>) -> FileError {
    FileError {
        line: error.position().map(|p| p.line() + lines_before),
        record,
        message: format!("not a valid CSV row: {error}"),
    }
}

/// A Clerk-shaped user object from one CSV row.
fn csv_user(columns: &Columns, row: &csv::StringRecord) -> Result<Box<RawValue>, String> {
    let cell = |column: Option<usize>| {
        column
            .and_then(|i| row.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let id = cell(Some(columns.id)).ok_or("no id")?;
    let emails = identifiers(
        cell(columns.primary_email),
        cell(columns.verified_emails),
        cell(columns.unverified_emails),
    );
    let phones = identifiers(
        cell(columns.primary_phone),
        cell(columns.verified_phones),
        cell(columns.unverified_phones),
    );
    let entries = |list: &[(String, Option<&str>)], prefix: &str, object: &str, field: &str| {
        list.iter()
            .enumerate()
            .map(|(n, (value, status))| {
                json!({
                    "id": format!("{prefix}{n}"),
                    "object": object,
                    field: value,
                    "verification": status.map(|s| json!({ "status": s })),
                })
            })
            .collect::<Vec<Value>>()
    };
    // The primary, when the export names one, is always the first entry.
    let primary_email = cell(columns.primary_email).map(|_| "csv_email_0");
    let primary_phone = cell(columns.primary_phone).map(|_| "csv_phone_0");
    let user = json!({
        "object": "user",
        "id": id,
        "first_name": cell(columns.first_name),
        "last_name": cell(columns.last_name),
        "username": cell(columns.username),
        "primary_email_address_id": primary_email,
        "email_addresses": entries(&emails, "csv_email_", "email_address", "email_address"),
        "primary_phone_number_id": primary_phone,
        "phone_numbers": entries(&phones, "csv_phone_", "phone_number", "phone_number"),
    });
    RawValue::from_string(user.to_string()).map_err(|e| e.to_string())
}

/// The primary first, then the verified, then the unverified ones, each
/// once (emails compared without case), with what the export says of its
/// verification. Multi-valued cells are split on `|` or `,`, as Clerk's
/// migration tool does: which one the Dashboard writes is not documented.
fn identifiers<'a>(
    primary: Option<&'a str>,
    verified: Option<&'a str>,
    unverified: Option<&'a str>,
) -> Vec<(String, Option<&'static str>)> {
    let split = |cell: Option<&'a str>| {
        cell.into_iter()
            .flat_map(|c| c.split(['|', ',']))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let verified_list: Vec<&str> = split(verified).collect();
    let unverified_list: Vec<&str> = split(unverified).collect();
    let status = |value: &str| {
        if verified_list.iter().any(|v| v.eq_ignore_ascii_case(value)) {
            Some("verified")
        } else if unverified_list
            .iter()
            .any(|v| v.eq_ignore_ascii_case(value))
        {
            Some("unverified")
        } else {
            None
        }
    };
    let mut out: Vec<(String, Option<&'static str>)> = Vec::new();
    for value in primary
        .into_iter()
        .chain(verified_list.iter().copied())
        .chain(unverified_list.iter().copied())
    {
        if !out.iter().any(|(seen, _)| seen.eq_ignore_ascii_case(value)) {
            out.push((value.to_owned(), status(value)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_all(text: &str, buffer: usize) -> (Format, Vec<Result<Record, FileError>>) {
        let file = UserFile::new(BufReader::with_capacity(
            buffer,
            Cursor::new(text.to_owned()),
        ))
        .unwrap();
        let format = file.format();
        (format, file.collect())
    }

    fn ids(text: &str, buffer: usize) -> (Format, Vec<String>) {
        let (format, records) = read_all(text, buffer);
        let ids = records
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                let v: Value = serde_json::from_str(r.object.get()).unwrap();
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
    fn json_objects_are_kept_byte_exact() {
        let user = r#"{"id":"u1", "first_name":"J\u00f6rg \"}]\\", "n":[1,{"a":"]"}]}"#;
        for text in [
            format!("[\n  {user}\n]\n"),
            format!("{{\"data\": [{user}], \"total_count\": 1}}"),
            format!("{user}\n"),
        ] {
            let (_, records) = read_all(&text, 2);
            let record = records.into_iter().next().unwrap().unwrap();
            assert_eq!(record.object.get(), user);
            assert!(!record.from_csv);
        }
    }

    #[test]
    fn a_broken_record_names_its_line() {
        let cases = [
            (
                "{\"id\":\"u1\"}\n{\"id\":\"u2\"}\n{\"id\": u3}\n",
                3,
                "record 3",
            ),
            ("[\n{\"id\":\"u1\"},\n{\"id\":\"u2\",,}\n]", 3, "record 2"),
            ("[\n{\"id\":\"u1\"},\n 7\n]", 3, "expected a user object"),
            ("{\"id\":\"u1\"}\n[1]\n", 2, "not a JSON object"),
            (
                "[{\"id\":\"u1\"},\n{\"id\":\"u2\"}\n",
                3,
                "expected ',' or ']'",
            ),
            ("[{\"id\":\"u1\"}]\n{\"id\":\"u2\"}", 2, "more text after"),
            (
                "{\"data\":[{\"id\":\"u1\"}],\n\"total_count\":1}\nx",
                3,
                "more text after",
            ),
            ("[{\"id\":\"u1\"},\n{\"id\":\"u2", 2, "ends inside"),
        ];
        for (text, line, why) in cases {
            let (_, records) = read_all(text, 4);
            let error = records
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("no error for {text:?}"));
            let message = error.to_string();
            assert_eq!(error.line, Some(line), "{text:?}: {message}");
            assert!(message.contains(why), "{text:?}: {message}");
            assert!(message.starts_with(&format!("line {line}")), "{message}");
        }
        // Nothing is read after an error.
        let (_, records) = read_all("{\"id\":1}\n{x}\n{\"id\":3}\n", 64);
        assert_eq!(records.len(), 2);
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
                let v: Value = serde_json::from_str(record.object.get()).unwrap();
                assert_eq!(v["id"], format!("user_{i:05}"), "{format:?}");
                assert_eq!(record.number, i as u64 + 1);
                count += 1;
            }
            assert_eq!(count, N, "{format:?}");
        }
        let e = UserFile::open(&dir.path().join("missing")).err().unwrap();
        assert!(e.to_string().starts_with("cannot open "), "{e}");
    }

    const EXPORT: &str = "\u{feff}# Password for users with passwords: Kk4aPMeiaRpAs2OeX1NE\n\
id,first_name,last_name,username,primary_email_address,primary_phone_number,verified_email_addresses,unverified_email_addresses,verified_phone_numbers,unverified_phone_numbers,totp_secret,password_digest,password_hasher\n\
user_2YDryYFVMM1W1plDDKz7Gzf4we6,Jane,Doe,,jane.doe@test.com,,jane.doe@test.com|janedoe@test.com,old@test.com,,,,$2b$10$U4C0ZY,bcrypt\n\
user_3,,,\"o'neil, jr\",,+15550100,,,+15550100,,JBSWY3DPEHPK3PXP,,\n";

    #[test]
    fn a_dashboard_export_becomes_clerk_shaped_users() {
        let (format, records) = read_all(EXPORT, 5);
        assert_eq!(format, Format::Csv);
        let records: Vec<Record> = records.into_iter().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.from_csv));
        assert_eq!((records[0].line, records[0].number), (3, 1));
        let jane: Value = serde_json::from_str(records[0].object.get()).unwrap();
        assert_eq!(jane["id"], "user_2YDryYFVMM1W1plDDKz7Gzf4we6");
        assert_eq!(jane["first_name"], "Jane");
        assert_eq!(jane["username"], Value::Null);
        // The primary is found by id, as a webhook's user's is.
        let primary = jane["primary_email_address_id"].as_str().unwrap();
        let addresses = jane["email_addresses"].as_array().unwrap();
        let entry = addresses.iter().find(|e| e["id"] == primary).unwrap();
        assert_eq!(entry["email_address"], "jane.doe@test.com");
        assert_eq!(entry["verification"]["status"], "verified");
        let all: Vec<_> = addresses
            .iter()
            .map(|e| e["email_address"].clone())
            .collect();
        assert_eq!(
            all,
            ["jane.doe@test.com", "janedoe@test.com", "old@test.com"]
        );
        assert_eq!(addresses[2]["verification"]["status"], "unverified");
        // Secrets in the export are not carried over.
        let text = records.iter().map(|r| r.object.get()).collect::<String>();
        assert!(
            !text.contains("$2b$") && !text.contains("JBSWY3DP"),
            "{text}"
        );

        let other: Value = serde_json::from_str(records[1].object.get()).unwrap();
        assert_eq!(other["username"], "o'neil, jr");
        assert_eq!(other["primary_email_address_id"], Value::Null);
        assert_eq!(other["email_addresses"], json!([]));
        assert_eq!(other["phone_numbers"][0]["phone_number"], "+15550100");
        assert_eq!(other["primary_phone_number_id"], "csv_phone_0");
    }

    #[test]
    fn a_broken_csv_row_names_its_line() {
        let text = "id,first_name\nu1,A\nu2,B,extra\nu3,C\n";
        let (_, records) = read_all(text, 64);
        assert!(records[0].is_ok());
        let error = records[1].as_ref().unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.to_string().starts_with("line 3"), "{error}");
        assert_eq!(records.len(), 2);

        let (_, records) = read_all("id,first_name\nu1,A\n,B\n", 64);
        let error = records[1].as_ref().unwrap_err().to_string();
        assert_eq!(error, "line 3 (record 2): no id");

        let e = UserFile::new(Cursor::new("name,email\nA,a@x\n"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no `id` column"), "{e}");
    }
}
