//! Reading an envelope: in one pass over the body where it can, else in two.
//!
//! The user object is kept byte-exact, cut from the body, for the `data`
//! column, so the one-pass reading finds its text from where its first key
//! and its last value lie in the body.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::fields::{text, DataObject, Envelope};
use super::{Event, EventError};

/// The reference reading: the envelope with `data` kept as raw text, then
/// `data` read again for its fields. Decides every error.
pub(super) fn two_passes(body: &str) -> Result<Event<'_>, EventError> {
    let envelope: Envelope<'_> = serde_json::from_str(body).map_err(|e| {
        if !e.is_data() {
            EventError::NotJson
        } else if !body.trim_start().starts_with('{') {
            EventError::NotAnObject
        } else {
            // Valid JSON and an object: the one shape error left is a key
            // given twice, which serde names between backquotes.
            let key = e
                .to_string()
                .split('`')
                .nth(1)
                .unwrap_or("a key")
                .to_owned();
            EventError::RepeatedKey(key)
        }
    })?;
    // The type is checked before `data`, so that is the error a body lacking
    // both gets.
    text(envelope.event_type)
        .filter(|t| !t.is_empty())
        .ok_or(EventError::NoType)?;
    let raw = envelope.data.ok_or(EventError::NoData)?;
    // A struct would also accept an array; `data` must be an object.
    if !raw.get().starts_with('{') {
        return Err(EventError::NoData);
    }
    let data: DataObject<'_> = serde_json::from_str(raw.get()).map_err(|_| EventError::NoData)?;
    if let Some(field) = data.repeated {
        return Err(EventError::RepeatedField(field));
    }
    Ok(Event {
        event_type: envelope.event_type,
        timestamp: envelope.timestamp,
        raw_data: raw.get(),
        data: data.fields,
    })
}

/// The same reading in one pass over the body, which is what almost every
/// delivery gets: `data`'s fields are taken while the envelope is read, and
/// its exact text is found from where its first key and its last value lie
/// in the body. `None` for whatever this cannot settle (an error, `data`
/// missing, empty or not an object, an escaped first key): the two-pass
/// reading then has the last word.
pub(super) fn one_pass(body: &str) -> Option<Event<'_>> {
    #[derive(Deserialize)]
    struct OnePass<'a> {
        #[serde(rename = "type", borrow)]
        event_type: Option<&'a RawValue>,
        #[serde(borrow)]
        data: Option<DataObject<'a>>,
        timestamp: Option<Value>,
    }
    let envelope: OnePass<'_> = serde_json::from_str(body).ok()?;
    let data = envelope.data.filter(|d| d.repeated.is_none())?;
    let start = object_start(body.as_bytes(), data.first_key?)?;
    let end = object_end(body.as_bytes(), data.last_value?.get())?;
    // Both ends are ASCII braces, so char boundaries.
    let raw_data = body.get(start..=end)?;
    Some(Event {
        event_type: envelope.event_type,
        timestamp: envelope.timestamp,
        raw_data,
        data: data.fields,
    })
}

/// Where `part`, borrowed from `body`, begins in it.
pub(super) fn offset_in(body: &[u8], part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (offset + part.len() <= body.len()).then_some(offset)
}

pub(super) fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The `{` before an object's first key (the key's text, without quotes).
pub(super) fn object_start(body: &[u8], first_key: &str) -> Option<usize> {
    let quote = offset_in(body, first_key)?.checked_sub(1)?;
    if body[quote] != b'"' {
        return None;
    }
    let brace = body[..quote].iter().rposition(|&b| !is_json_space(b))?;
    (body[brace] == b'{').then_some(brace)
}

/// The `}` after an object's last value (its raw text).
pub(super) fn object_end(body: &[u8], last_value: &str) -> Option<usize> {
    let after = offset_in(body, last_value)? + last_value.len();
    let brace = after + body[after..].iter().position(|&b| !is_json_space(b))?;
    (body[brace] == b'}').then_some(brace)
}
