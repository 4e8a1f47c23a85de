//! The three JSON layouts as records: an array, a `{"data": [...]}` page,
//! and JSON Lines, each walked over the [`Scanner`] one object at a time.
//!
//! Whatever follows the file's one array or page must be whitespace:
//! anything else would be users silently left out.

use std::io::BufRead;

use super::scan::Scanner;
use super::{FileError, Format, Record};

pub(super) enum State {
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

pub(super) struct Json<R> {
    scan: Scanner<R>,
    state: State,
    /// JSON Lines' first object, read while finding the format.
    pub(super) pending: Option<(Vec<u8>, u64)>,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Json<R> {
    pub(super) fn new(scan: Scanner<R>, state: State) -> Self {
        Json {
            scan,
            state,
            pending: None,
            number: 0,
            buf: Vec::new(),
        }
    }

    pub(super) fn next_record(&mut self, format: Format) -> Option<Result<Record, FileError>> {
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
        // The next object is likely about as long: one allocation for it.
        self.buf = Vec::with_capacity(bytes.len());
        // Parsed by the caller, once (see `Record::check`).
        let object = String::from_utf8(bytes)
            .map_err(|e| FileError::at(line, Some(number), format!("not valid JSON: {e}")))?;
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

#[cfg(test)]
mod tests {
    use crate::import::file::tests::read_all;

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
            assert_eq!(record.object, user);
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
}
