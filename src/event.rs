//! Turning a verified body into the change it asks of the mirror.
//!
//! Parsing happens on the request task, before the writer sees anything, so
//! the single database writer only ever does database work. The user object
//! is kept byte-exact (`RawValue`) for the `data` column; the handful of
//! columns are read from it leniently: a field of a surprising type becomes
//! NULL rather than a rejected delivery, because Clerk adds and changes fields
//! over time and a retry would never fix the payload.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A verified delivery, ready for the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The `svix-id`: the same on every retry, so it is the dedupe key.
    pub id: String,
    /// The event type, e.g. `user.updated`.
    pub event_type: String,
    /// `data.id` when it is a string: the user for `user.*` events.
    pub object_id: Option<String>,
    /// The envelope timestamp in milliseconds.
    pub timestamp_ms: Option<i64>,
    pub change: Change,
}

/// What a delivery does to the `users` table.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `user.created` / `user.updated`: insert or update, guarded by `updated_at`.
    Upsert(User),
    /// `user.deleted`: leave a tombstone.
    Delete {
        external_id: Option<String>,
        deleted_at: i64,
    },
    /// Any other event type: recorded, nothing else changes.
    Record,
}

/// The mirrored columns of one user, taken from a Clerk user object.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub external_id: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    /// The user object exactly as received.
    pub data: String,
}

/// Why a verified body is not something the mirror can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not valid JSON")]
    NotJson,
    #[error("body is not a Clerk event: `type` is missing or not a string")]
    NoType,
    #[error("body is not a Clerk event: `data` is missing or not an object")]
    NoData,
    #[error("{0} event has no string `data.id`")]
    NoId(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    timestamp: Option<Value>,
}

/// The fields of `data` the mirror reads, each kept raw so that a field of a
/// surprising type becomes NULL instead of failing the whole event; every
/// other field is skipped without being built.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    first_name: Option<&'a RawValue>,
    #[serde(borrow)]
    last_name: Option<&'a RawValue>,
    #[serde(borrow)]
    username: Option<&'a RawValue>,
    #[serde(borrow)]
    image_url: Option<&'a RawValue>,
    #[serde(borrow)]
    external_id: Option<&'a RawValue>,
    #[serde(borrow)]
    created_at: Option<&'a RawValue>,
    #[serde(borrow)]
    updated_at: Option<&'a RawValue>,
    #[serde(borrow)]
    primary_email_address_id: Option<&'a RawValue>,
    #[serde(borrow)]
    email_addresses: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EmailAddress<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    email_address: Option<&'a RawValue>,
}

/// Parses a verified body. `now_ms` stands in for times the event lacks.
///
/// # Errors
/// [`EventError`] when the body is not JSON, not a Clerk event, or a user
/// event without `data.id`.
pub fn parse(id: String, body: &[u8], now_ms: i64) -> Result<Delivery, EventError> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|_| EventError::NotJson)?;
    let event_type = text(envelope.event_type)
        .filter(|t| !t.is_empty())
        .ok_or(EventError::NoType)?;
    let raw = envelope.data.ok_or(EventError::NoData)?;
    // A struct would also accept an array; `data` must be an object.
    if !raw.get().starts_with('{') {
        return Err(EventError::NoData);
    }
    let data: Fields<'_> = serde_json::from_str(raw.get()).map_err(|_| EventError::NoData)?;
    let timestamp_ms = envelope.timestamp.as_ref().and_then(to_millis);
    let object_id = text(data.id).filter(|s| !s.is_empty());

    let change = match event_type.as_str() {
        "user.created" | "user.updated" | "user.deleted" if object_id.is_none() => {
            return Err(EventError::NoId(event_type));
        }
        "user.created" | "user.updated" => Change::Upsert(User {
            email: primary_email(&data),
            first_name: text(data.first_name),
            last_name: text(data.last_name),
            username: text(data.username),
            image_url: text(data.image_url),
            external_id: text(data.external_id),
            created_at: int(data.created_at),
            // Without its own clock, an update is ordered by the envelope's.
            updated_at: int(data.updated_at).or(timestamp_ms).unwrap_or(now_ms),
            data: raw.get().to_owned(),
        }),
        "user.deleted" => Change::Delete {
            external_id: text(data.external_id),
            deleted_at: timestamp_ms.unwrap_or(now_ms),
        },
        _ => Change::Record,
    };
    Ok(Delivery {
        id,
        event_type,
        object_id,
        timestamp_ms,
        change,
    })
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
fn text(raw: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(raw?.get()).ok()
}

/// The value as an integer, if it is one.
fn int(raw: Option<&RawValue>) -> Option<i64> {
    serde_json::from_str(raw?.get()).ok()
}

/// The address whose `id` is `primary_email_address_id`. Not the first entry:
/// Clerk does not promise the primary comes first.
fn primary_email(data: &Fields<'_>) -> Option<String> {
    let primary = text(data.primary_email_address_id)?;
    let entries: Vec<EmailAddress<'_>> = serde_json::from_str(data.email_addresses?.get()).ok()?;
    entries
        .into_iter()
        .find(|e| text(e.id).as_deref() == Some(primary.as_str()))
        .and_then(|e| text(e.email_address))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = include_str!("../tests/fixtures/clerk/user.created.json");
    const DELETED: &str = include_str!("../tests/fixtures/clerk/user.deleted.json");
    const SESSION: &str = include_str!("../tests/fixtures/clerk/session.created.json");

    fn parse_str(body: &str) -> Result<Delivery, EventError> {
        parse("msg_1".into(), body.as_bytes(), 42)
    }

    #[test]
    fn the_docs_user_created_example_maps_to_columns() {
        let d = parse_str(CREATED).unwrap();
        assert_eq!(d.event_type, "user.created");
        assert_eq!(
            d.object_id.as_deref(),
            Some("user_29w83sxmDNGwOuEthce5gg56FcC")
        );
        assert_eq!(d.timestamp_ms, Some(1_654_012_591_835));
        let Change::Upsert(user) = d.change else {
            panic!("not an upsert")
        };
        assert_eq!(user.email.as_deref(), Some("example@example.org"));
        assert_eq!(user.first_name.as_deref(), Some("Example"));
        assert_eq!(user.username, None);
        assert_eq!(user.external_id.as_deref(), Some("567772"));
        assert_eq!(user.created_at, Some(1_654_012_591_514));
        assert_eq!(user.updated_at, 1_654_012_591_835);
        // Byte-exact: the stored object is the received text, not a re-serialization.
        assert!(CREATED.contains(&user.data));
        assert!(user.data.starts_with('{') && user.data.contains("\"birthday\": \"\""));
    }

    #[test]
    fn the_primary_email_is_found_by_id_not_position() {
        let body = r#"{"type":"user.updated","timestamp":1,"data":{"id":"user_1","updated_at":5,
            "primary_email_address_id":"idn_b",
            "email_addresses":[{"id":"idn_a","email_address":"a@x.test"},{"id":"idn_b","email_address":"b@x.test"}]}}"#;
        let Change::Upsert(user) = parse_str(body).unwrap().change else {
            panic!()
        };
        assert_eq!(user.email.as_deref(), Some("b@x.test"));

        for primary in ["null", "\"idn_missing\""] {
            let body = format!(
                r#"{{"type":"user.updated","data":{{"id":"user_1","primary_email_address_id":{primary},
                "email_addresses":[{{"id":"idn_a","email_address":"a@x.test"}}]}}}}"#
            );
            let Change::Upsert(user) = parse_str(&body).unwrap().change else {
                panic!()
            };
            assert_eq!(user.email, None, "{primary}");
        }
    }

    #[test]
    fn fields_of_surprising_types_become_null() {
        let body = r#"{"type":"user.updated","timestamp":7,"data":{"id":"user_1","first_name":5,
            "last_name":{"a":1},"created_at":"yesterday","updated_at":1.5,"external_id":null,
            "primary_email_address_id":"idn_a","email_addresses":"not a list"}}"#;
        let Change::Upsert(user) = parse_str(body).unwrap().change else {
            panic!()
        };
        assert_eq!(
            (user.first_name, user.last_name, user.email),
            (None, None, None)
        );
        assert_eq!((user.created_at, user.external_id), (None, None));
        assert_eq!(user.updated_at, 7000, "falls back to the envelope time");
        assert_eq!(
            parse_str(r#"{"type":"user.created","data":["user_1"]}"#),
            Err(EventError::NoData)
        );
    }

    #[test]
    fn deletes_take_the_envelope_time_in_milliseconds() {
        let d = parse_str(DELETED).unwrap();
        assert_eq!(
            d.change,
            Change::Delete {
                external_id: Some("ex_123456789".into()),
                deleted_at: 1_716_883_200_000
            }
        );
    }

    #[test]
    fn a_delete_without_a_timestamp_is_dated_on_receipt() {
        let body = r#"{"type":"user.deleted","data":{"id":"user_1","deleted":true}}"#;
        let d = parse_str(body).unwrap();
        assert_eq!(
            d.change,
            Change::Delete {
                external_id: None,
                deleted_at: 42
            }
        );
    }

    #[test]
    fn other_types_are_recorded_only() {
        let d = parse_str(SESSION).unwrap();
        assert_eq!(d.event_type, "session.created");
        assert_eq!(d.change, Change::Record);
    }

    #[test]
    fn malformed_events_are_refused_with_a_reason() {
        assert_eq!(parse_str("not json"), Err(EventError::NotJson));
        assert_eq!(parse_str("[1,2]"), Err(EventError::NotJson));
        assert_eq!(parse_str(r#"{"data":{}}"#), Err(EventError::NoType));
        assert_eq!(
            parse_str(r#"{"type":7,"data":{}}"#),
            Err(EventError::NoType)
        );
        assert_eq!(
            parse_str(r#"{"type":"user.created"}"#),
            Err(EventError::NoData)
        );
        assert_eq!(
            parse_str(r#"{"type":"x","data":null}"#),
            Err(EventError::NoData)
        );
        assert_eq!(
            parse_str(r#"{"type":"x","data":"s"}"#),
            Err(EventError::NoData)
        );
        for t in ["user.created", "user.updated", "user.deleted"] {
            for data in [r#"{}"#, r#"{"id":5}"#, r#"{"id":""}"#] {
                let body = format!(r#"{{"type":"{t}","data":{data}}}"#);
                assert_eq!(parse_str(&body), Err(EventError::NoId(t.into())), "{body}");
            }
        }
    }

    #[test]
    fn timestamps_below_ten_to_the_twelve_are_seconds() {
        let ms = |v: Value| to_millis(&v);
        assert_eq!(ms(1_716_883_200.into()), Some(1_716_883_200_000));
        assert_eq!(ms(1_716_883_200_123_i64.into()), Some(1_716_883_200_123));
        assert_eq!(ms(999_999_999_999_i64.into()), Some(999_999_999_999_000));
        assert_eq!(ms(1_000_000_000_000_i64.into()), Some(1_000_000_000_000));
        assert_eq!(ms(serde_json::json!(1.5)), Some(1500));
        assert_eq!(ms(serde_json::json!("1")), None);
        assert_eq!(
            ms(serde_json::json!(u64::MAX)),
            Some(u64::MAX as f64 as i64)
        );
    }
}
