//! The scanner: JSON cut into values without parsing them.
//!
//! It tracks only strings, escapes and nesting, so a file is never held
//! whole; each value it cuts out is then checked by serde_json on its own,
//! which also gives the error its line within the value.

use std::io::{self, BufRead};

use super::{FileError, MAX_RECORD};

/// Cuts JSON into values without parsing them.
pub(super) struct Scanner<R> {
    pub(super) reader: R,
    /// The line of the next byte, from 1.
    pub(super) line: u64,
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

    pub(super) fn bump(&mut self) -> Result<Option<u8>, FileError> {
        let byte = self.peek()?;
        if let Some(b) = byte {
            self.reader.consume(1);
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(byte)
    }

    pub(super) fn skip_bom(&mut self) -> Result<(), FileError> {
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
    pub(super) fn skip_space(&mut self) -> Result<Option<u8>, FileError> {
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
    pub(super) fn take_value(
        &mut self,
        out: &mut Vec<u8>,
        record: Option<u64>,
    ) -> Result<(), FileError> {
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
            while used < buf.len() {
                let b = buf[used];
                if scalar {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                        finished = true;
                        break;
                    }
                    used += 1;
                    continue;
                }
                if in_string && !escaped {
                    // Most of a user object is string contents: leap to the
                    // next byte that can end the string or start a line.
                    let Some(n) = memchr::memchr3(b'"', b'\\', b'\n', &buf[used..]) else {
                        used = buf.len();
                        break;
                    };
                    used += n + 1;
                    match buf[used - 1] {
                        b'\n' => self.line += 1,
                        b'\\' => escaped = true,
                        _ => {
                            in_string = false;
                            if depth == 0 {
                                finished = true;
                                break;
                            }
                        }
                    }
                    continue;
                }
                used += 1;
                if b == b'\n' {
                    self.line += 1;
                }
                if in_string {
                    // The byte after a backslash, whatever it is.
                    escaped = false;
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
    pub(super) fn take_key(&mut self) -> Result<(String, Vec<u8>), FileError> {
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

    pub(super) fn expect(&mut self, byte: u8, what: &str) -> Result<(), FileError> {
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
    pub(super) fn first_object(&mut self, line: u64) -> Result<Option<Vec<u8>>, FileError> {
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

    pub(super) fn unexpected(&mut self, record: Option<u64>, expected: &str) -> FileError {
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
