//! The fields of `data` the mirror reads, and the lenient readers of their
//! values: a field of a surprising type becomes NULL rather than a rejected
//! delivery, because Clerk adds and changes fields over time and a retry
//! would never fix the payload.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) data: Option<&'a RawValue>,
    pub(super) timestamp: Option<Value>,
}

/// The fields of `data` the mirror reads, each kept raw so that a field of a
/// surprising type becomes NULL instead of failing the whole event (`null`
/// is kept as absent). Read by [`DataVisitor`], which both readings share.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) id: Option<&'a RawValue>,
    pub(super) first_name: Option<&'a RawValue>,
    pub(super) last_name: Option<&'a RawValue>,
    pub(super) username: Option<&'a RawValue>,
    pub(super) image_url: Option<&'a RawValue>,
    pub(super) external_id: Option<&'a RawValue>,
    pub(super) created_at: Option<&'a RawValue>,
    pub(super) updated_at: Option<&'a RawValue>,
    pub(super) primary_email_address_id: Option<&'a RawValue>,
    pub(super) email_addresses: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct EmailAddress<'a> {
    #[serde(borrow)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) email_address: Option<&'a RawValue>,
}

/// `data`: its fields, and (for the one-pass reading) where its text lies.
pub(super) struct DataObject<'a> {
    pub(super) fields: Fields<'a>,
    /// `None` when it is escaped, so not the body's own text.
    pub(super) first_key: Option<&'a str>,
    pub(super) last_value: Option<&'a RawValue>,
    /// A mirrored field that appears more than once.
    pub(super) repeated: Option<&'static str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for DataObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(DataVisitor(std::marker::PhantomData))
    }
}

pub(super) struct DataVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for DataVisitor<'a> {
    type Value = DataObject<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut object = DataObject {
            fields: Fields::default(),
            first_key: None,
            last_value: None,
            repeated: None,
        };
        let mut first = true;
        let mut seen = 0u16;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if first {
                object.first_key = key.borrowed;
                first = false;
            }
            let value: &'de RawValue = map.next_value()?;
            object.last_value = Some(value);
            let f = &mut object.fields;
            let (bit, name, slot) = match key.text.as_ref() {
                "id" => (0, "id", &mut f.id),
                "first_name" => (1, "first_name", &mut f.first_name),
                "last_name" => (2, "last_name", &mut f.last_name),
                "username" => (3, "username", &mut f.username),
                "image_url" => (4, "image_url", &mut f.image_url),
                "external_id" => (5, "external_id", &mut f.external_id),
                "created_at" => (6, "created_at", &mut f.created_at),
                "updated_at" => (7, "updated_at", &mut f.updated_at),
                "primary_email_address_id" => (
                    8,
                    "primary_email_address_id",
                    &mut f.primary_email_address_id,
                ),
                "email_addresses" => (9, "email_addresses", &mut f.email_addresses),
                _ => continue,
            };
            // Tracked apart from the slot, which stays empty for a null.
            if seen & (1 << bit) != 0 {
                object.repeated.get_or_insert(name);
                continue;
            }
            seen |= 1 << bit;
            *slot = (value.get() != "null").then_some(value);
        }
        Ok(object)
    }
}

/// A key of `data`, and whether it is the body's own text.
pub(super) struct Key<'de> {
    pub(super) text: std::borrow::Cow<'de, str>,
    pub(super) borrowed: Option<&'de str>,
}

pub(super) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key {
            text: v.into(),
            borrowed: Some(v),
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key {
            text: v.to_owned().into(),
            borrowed: None,
        })
    }
}

/// Clerk documents the envelope `timestamp` in milliseconds, but some of its
/// own examples are seconds; anything below 10^12 (September 2001 in ms) is
/// read as seconds.
pub fn to_millis(value: &Value) -> Option<i64> {
    const SECONDS_BELOW: i64 = 1_000_000_000_000;
    let n = match value.as_i64() {
        Some(n) => n,
        None => {
            let f = value.as_f64()?;
            if !f.is_finite() {
                return None;
            }
            // Saturating float-to-int cast; sub-millisecond digits do not matter.
            if f.abs() < SECONDS_BELOW as f64 {
                return Some((f * 1000.0) as i64);
            }
            f as i64
        }
    };
    Some(if n.abs() < SECONDS_BELOW {
        n.saturating_mul(1000)
    } else {
        n
    })
}

/// The value as a string, if it is one.
pub(super) fn text(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?.get();
    // A raw value is valid JSON, so a string without a backslash is its own
    // text between the quotes; only escapes need the parser.
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Some(inner.to_owned()),
        _ => serde_json::from_str(raw).ok(),
    }
}

/// The value as a whole number of milliseconds, if it is a number. Clerk
/// sends integers, but the same instant written `1700000000000.0` or
/// `1.7e12` (as a proxy that re-serialises JSON may) is the same time, and
/// reading it as missing would order the event by another clock. A fraction
/// of a millisecond is dropped, as in the envelope timestamp.
pub(super) fn int(raw: Option<&RawValue>) -> Option<i64> {
    // Beyond 2^53 a float no longer holds every integer, so it names no
    // exact millisecond (and is ~285,000 years from now anyway).
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let raw = raw?.get();
    // A raw value is valid JSON, so one that starts like a number is one,
    // and every JSON number is also Rust number syntax. Rust's float reading
    // rounds correctly, which serde_json's default one does not always do.
    if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    if let Ok(n) = raw.parse::<i64>() {
        return Some(n);
    }
    let f: f64 = raw.parse().ok()?;
    // Saturation cannot happen inside the bound; `-0.5` becomes 0.
    (f.abs() < EXACT).then(|| f.trunc() as i64)
}

/// Whether the JSON `text` holds arrays and objects nested more than
/// `limit` deep.
pub(super) fn nested_deeper_than(text: &str, limit: usize) -> bool {
    let bytes = text.as_bytes();
    // Nesting past the limit takes that many openings and as many closings.
    if bytes.len() < 2 * (limit + 1) {
        return false;
    }
    // Fewer openings than the limit cannot nest past it: the usual answer,
    // from one quick count instead of a walk through the strings. `[` and
    // `{` differ only in bit 0x20, so one comparison finds both, which the
    // compiler turns into a vector loop.
    let openings: usize = bytes
        .chunks(u8::MAX as usize)
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{'));
            usize::from(n)
        })
        .sum();
    if openings <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The address whose `id` is `primary_email_address_id`. Not the first entry:
/// Clerk does not promise the primary comes first. An entry that is not an
/// address object (or repeats a key) is passed over, not taken as a reason
/// to forget the primary address.
pub(super) fn primary_email(data: &Fields<'_>) -> Option<String> {
    let primary = text(data.primary_email_address_id)?;
    let list = data.email_addresses?.get();
    // Read whole when every entry is an address, as Clerk sends them; one
    // at a time only when that fails.
    let entries: Vec<EmailAddress<'_>> = match serde_json::from_str(list) {
        Ok(entries) => entries,
        Err(_) => serde_json::from_str::<Vec<&RawValue>>(list)
            .ok()?
            .into_iter()
            .filter_map(|entry| serde_json::from_str(entry.get()).ok())
            .collect(),
    };
    entries
        .into_iter()
        .find(|e| text(e.id).as_deref() == Some(primary.as_str()))
        .and_then(|e| text(e.email_address))
}
