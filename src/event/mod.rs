//! Turning a verified body into the change it asks of the mirror.
//!
//! Parsing happens on the request task, before the writer sees anything, so
//! the single database writer only ever does database work. The user object
//! is kept byte-exact, cut from the body, for the `data` column; the handful
//! of columns are read from it leniently: a field of a surprising type becomes
//! NULL rather than a rejected delivery, because Clerk adds and changes fields
//! over time and a retry would never fix the payload.

mod fields;
mod kinds;
mod page;
mod read;

use serde_json::value::RawValue;
use serde_json::Value;

pub use fields::to_millis;
use fields::{int, nested_deeper_than, primary_email, text, Fields};
pub use kinds::{action, Action, Column, Field, Kind, Source, Spec, Ty};
pub use page::objects;

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

/// What a delivery does to the mirror.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `*.created` / `*.updated` and the like: insert or update, guarded by
    /// `updated_at`.
    Upsert(Object),
    /// `*.deleted`: leave a tombstone.
    Delete(Tombstone),
    /// Any other event type: recorded, nothing else changes.
    Record,
}

/// One Clerk object, as the mirror's columns hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Kind,
    /// `data.id`.
    pub id: String,
    /// The values of `kind.spec().columns`, in that order.
    pub columns: Vec<Option<Field>>,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    /// The object exactly as received.
    pub data: String,
}

impl Object {
    /// The value of column `name`, if it has one.
    pub fn column(&self, name: &str) -> Option<&Field> {
        column(self.kind, &self.columns, name)
    }

    /// The text value of column `name`, if it has one.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.column(name).and_then(Field::as_text)
    }
}

/// A deletion, with what the deleted object still says of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Tombstone {
    pub kind: Kind,
    pub id: String,
    /// Values for the columns a tombstone keeps (the rest are `None`), in
    /// the order of `kind.spec().columns`.
    pub columns: Vec<Option<Field>>,
    pub deleted_at: i64,
}

impl Tombstone {
    /// The value of column `name`, if the deletion carried one.
    pub fn column(&self, name: &str) -> Option<&Field> {
        column(self.kind, &self.columns, name)
    }
}

fn column<'a>(kind: Kind, columns: &'a [Option<Field>], name: &str) -> Option<&'a Field> {
    let at = kind.spec().columns.iter().position(|c| c.name == name)?;
    columns.get(at)?.as_ref()
}

/// Why a verified body is not something the mirror can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not valid JSON")]
    NotJson,
    #[error("body is not a Clerk event: it is JSON, but not an object")]
    NotAnObject,
    #[error("body is not a Clerk event: `{0}` appears more than once")]
    RepeatedKey(String),
    #[error("body is not a Clerk event: `type` is missing or not a string")]
    NoType,
    #[error("body is not a Clerk event: `data` is missing or not an object")]
    NoData,
    #[error("{0} event has no string `data.id`")]
    NoId(String),
    /// Readers disagree on which copy counts (JavaScript takes the last,
    /// SQLite's `->>` the first), so the mirror takes neither.
    #[error("body is not a Clerk event: `data.{0}` appears more than once")]
    RepeatedField(&'static str),
    #[error(
        "`data` is nested deeper than the {JSON_DEPTH} levels SQLite's JSON functions read, \
         so it could not be queried once stored"
    )]
    TooDeep,
}

/// SQLite's `JSON_MAX_DEPTH` (2000 before 3.45): a stored user object any
/// deeper would make every `->>` query over the table fail.
pub const JSON_DEPTH: usize = 1000;

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The mirror changed.
    Applied,
    /// Older than what the mirror holds; recorded, nothing changed.
    Stale,
    /// An event type that is not mirrored; recorded, nothing changed.
    Ignored,
    /// This `svix-id` was already recorded; nothing at all happened.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Parses a verified body. `now_ms` stands in for times the event lacks.
///
/// # Errors
/// [`EventError`] when the body is not JSON, not a Clerk event, or a user
/// event without `data.id`.
pub fn parse(id: String, body: &[u8], now_ms: i64) -> Result<Delivery, EventError> {
    // JSON is UTF-8 throughout; checked once here, the readers below need not
    // check each string and raw value again.
    let body = std::str::from_utf8(body).map_err(|_| EventError::NotJson)?;
    let event = match read::one_pass(body) {
        Some(event) => event,
        None => read::two_passes(body)?,
    };
    build(id, event, now_ms)
}

/// What the mirror reads of an event, borrowed from the body.
struct Event<'a> {
    event_type: Option<&'a RawValue>,
    timestamp: Option<Value>,
    /// The `data` object's exact text.
    raw_data: &'a str,
    data: Fields<'a>,
}

/// The delivery an event asks for.
fn build(id: String, event: Event<'_>, now_ms: i64) -> Result<Delivery, EventError> {
    let event_type = text(event.event_type)
        .filter(|t| !t.is_empty())
        .ok_or(EventError::NoType)?;
    let data = event.data;
    let timestamp_ms = event.timestamp.as_ref().and_then(to_millis);
    let object_id = text(data.id).filter(|s| !s.is_empty());
    let change = match kinds::action(&event_type) {
        None => Change::Record,
        Some((kind, action)) => {
            let Some(clerk_id) = object_id.clone() else {
                return Err(EventError::NoId(event_type));
            };
            match action {
                Action::Upsert => {
                    if nested_deeper_than(event.raw_data, JSON_DEPTH) {
                        return Err(EventError::TooDeep);
                    }
                    Change::Upsert(Object {
                        kind,
                        id: clerk_id,
                        columns: columns(kind, &data, event.raw_data),
                        created_at: int(data.created_at),
                        // Without its own clock, an update is ordered by the
                        // envelope's.
                        updated_at: int(data.updated_at).or(timestamp_ms).unwrap_or(now_ms),
                        data: event.raw_data.to_owned(),
                    })
                }
                Action::Delete => {
                    let spec = kind.spec();
                    let mut columns = columns(kind, &data, event.raw_data);
                    for (value, column) in columns.iter_mut().zip(spec.columns) {
                        if !column.kept {
                            *value = None;
                        }
                    }
                    Change::Delete(Tombstone {
                        kind,
                        id: clerk_id,
                        columns,
                        deleted_at: timestamp_ms.unwrap_or(now_ms),
                    })
                }
            }
        }
    };
    Ok(Delivery {
        id,
        event_type,
        object_id,
        timestamp_ms,
        change,
    })
}

/// The columns of a `kind` object whose fields were read as `data`, with
/// `raw` its text.
fn columns(kind: Kind, data: &Fields<'_>, raw: &str) -> Vec<Option<Field>> {
    match kind {
        // Most deliveries are users: their columns were read with the
        // envelope, in `kinds`' order for users.
        Kind::User => [
            primary_email(data),
            text(data.first_name),
            text(data.last_name),
            text(data.username),
            text(data.image_url),
            text(data.external_id),
        ]
        .into_iter()
        .map(|v| v.map(Field::Text))
        .collect(),
        _ => kinds::read_columns(kind.spec(), raw)
            .unwrap_or_else(|| vec![None; kind.spec().columns.len()]),
    }
}

/// A `kind` object as the Backend API lists it, read by the same rules as
/// the `data` of a delivery carrying it. `now_ms` stands in for an
/// `updated_at` it lacks.
///
/// # Errors
/// When it is not a JSON object, has no string `id`, repeats a mirrored
/// field, or is nested too deep.
pub fn object(kind: Kind, raw: &str, now_ms: i64) -> Result<Object, EventError> {
    object_owned(kind, raw.to_owned(), now_ms).map_err(|(e, _)| e)
}

/// [`object`], keeping `owned` itself as the stored object when it has no
/// surrounding whitespace (as a listing's items have), rather than a copy.
///
/// # Errors
/// As [`object`], with `owned` given back, for a caller that says where in
/// its source the object was.
pub fn object_owned(
    kind: Kind,
    owned: String,
    now_ms: i64,
) -> Result<Object, (EventError, String)> {
    match read_object(kind, &owned, now_ms) {
        Ok(mut object) => {
            object.data = if owned.trim().len() == owned.len() {
                owned
            } else {
                owned.trim().to_owned()
            };
            Ok(object)
        }
        Err(e) => Err((e, owned)),
    }
}

/// The object `raw` holds, all but its `data`.
fn read_object(kind: Kind, raw: &str, now_ms: i64) -> Result<Object, EventError> {
    if !raw.trim_start().starts_with('{') {
        return Err(EventError::NotAnObject);
    }
    let read: fields::DataObject<'_> =
        serde_json::from_str(raw).map_err(|_| EventError::NotJson)?;
    from_fields(kind, read, raw, now_ms)
}

/// The object whose fields were read as `read` from its text `raw`, all
/// but its `data`.
fn from_fields(
    kind: Kind,
    read: fields::DataObject<'_>,
    raw: &str,
    now_ms: i64,
) -> Result<Object, EventError> {
    if let Some(field) = read.repeated {
        return Err(EventError::RepeatedField(field));
    }
    let data = read.fields;
    let id = text(data.id)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| EventError::NoId(kind.name().to_owned()))?;
    if nested_deeper_than(raw, JSON_DEPTH) {
        return Err(EventError::TooDeep);
    }
    Ok(Object {
        kind,
        id,
        columns: columns(kind, &data, raw),
        created_at: int(data.created_at),
        updated_at: int(data.updated_at).unwrap_or(now_ms),
        data: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::read::{one_pass, two_passes};
    use super::*;

    const CREATED: &str = include_str!("../../tests/fixtures/clerk/user.created.json");
    const DELETED: &str = include_str!("../../tests/fixtures/clerk/user.deleted.json");
    const SESSION: &str = include_str!("../../tests/fixtures/clerk/session.created.json");

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
        assert_eq!(user.text("email"), Some("example@example.org"));
        assert_eq!(user.text("first_name"), Some("Example"));
        assert_eq!(user.text("username"), None);
        assert_eq!(user.text("external_id"), Some("567772"));
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
        assert_eq!(user.text("email"), Some("b@x.test"));

        for primary in ["null", "\"idn_missing\""] {
            let body = format!(
                r#"{{"type":"user.updated","data":{{"id":"user_1","primary_email_address_id":{primary},
                "email_addresses":[{{"id":"idn_a","email_address":"a@x.test"}}]}}}}"#
            );
            let Change::Upsert(user) = parse_str(&body).unwrap().change else {
                panic!()
            };
            assert_eq!(user.text("email"), None, "{primary}");
        }
    }

    #[test]
    fn fields_of_surprising_types_become_null() {
        let body = r#"{"type":"user.updated","timestamp":7,"data":{"id":"user_1","first_name":5,
            "last_name":{"a":1},"created_at":"yesterday","updated_at":"1","external_id":null,
            "primary_email_address_id":"idn_a","email_addresses":"not a list"}}"#;
        let Change::Upsert(user) = parse_str(body).unwrap().change else {
            panic!()
        };
        assert_eq!(
            (
                user.text("first_name"),
                user.text("last_name"),
                user.text("email")
            ),
            (None, None, None)
        );
        assert_eq!((user.created_at, user.text("external_id")), (None, None));
        assert_eq!(user.updated_at, 7000, "falls back to the envelope time");
        assert_eq!(
            parse_str(r#"{"type":"user.created","data":["user_1"]}"#),
            Err(EventError::NoData)
        );
    }

    #[test]
    fn odd_entries_in_email_addresses_do_not_hide_the_primary() {
        let primary = r#"{"id":"idn_p","email_address":"ok@x.test"}"#;
        for odd in [
            "null",
            r#""x""#,
            "5",
            "[]",
            r#"{"id":"idn_q","email_address":"q@x.test","email_address":"q2@x.test"}"#,
        ] {
            for list in [format!("[{primary},{odd}]"), format!("[{odd},{primary}]")] {
                let body = format!(
                    r#"{{"type":"user.updated","timestamp":1,"data":{{"id":"user_1","updated_at":2,
                    "primary_email_address_id":"idn_p","email_addresses":{list}}}}}"#
                );
                let Change::Upsert(user) = parse_str(&body).unwrap().change else {
                    panic!()
                };
                assert_eq!(user.text("email"), Some("ok@x.test"), "{list}");
            }
        }
    }

    #[test]
    fn a_user_object_nested_past_what_sqlite_reads_is_refused() {
        let nested = |depth: usize| {
            format!(
                r#"{{"id":"user_1","updated_at":2,"m":{}1{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        let event = |kind: &str, data: &str| {
            parse_str(&format!(
                r#"{{"type":"{kind}","timestamp":1,"data":{data}}}"#
            ))
        };
        assert!(event("user.created", &nested(JSON_DEPTH)).is_ok());
        assert_eq!(
            event("user.created", &nested(JSON_DEPTH + 1)),
            Err(EventError::TooDeep)
        );
        assert_eq!(
            event("user.updated", &nested(JSON_DEPTH + 1)),
            Err(EventError::TooDeep)
        );
        // Only stored objects matter; brackets inside strings do not nest.
        assert!(event("session.created", &nested(JSON_DEPTH + 1)).is_ok());
        let in_strings = format!(
            r#"{{"id":"user_1","updated_at":2,"m":"{}","n":"\"{}"}}"#,
            "[".repeat(2 * JSON_DEPTH),
            "{".repeat(2 * JSON_DEPTH)
        );
        assert!(event("user.updated", &in_strings).is_ok());
    }

    #[test]
    fn a_mirrored_field_given_twice_is_refused_by_name() {
        for data in [
            r#"{"id":"user_1","first_name":"one","first_name":"two","updated_at":2}"#,
            r#"{"id":"user_1","first_name":null,"updated_at":2,"first_name":"two"}"#,
        ] {
            let body = format!(r#"{{"type":"user.updated","timestamp":1,"data":{data}}}"#);
            let refused = parse_str(&body);
            assert_eq!(
                refused,
                Err(EventError::RepeatedField("first_name")),
                "{data}"
            );
            assert!(refused
                .unwrap_err()
                .to_string()
                .contains("`data.first_name`"));
        }
        // Fields the mirror does not read may repeat, as JSON allows.
        let body = r#"{"type":"user.updated","timestamp":1,"data":{"id":"user_1","updated_at":2,
            "public_metadata":{"a":1,"a":2},"banned":false,"banned":true}}"#;
        assert!(parse_str(body).is_ok());
    }

    #[test]
    fn deletes_take_the_envelope_time_in_milliseconds() {
        let d = parse_str(DELETED).unwrap();
        assert_eq!(
            d.change,
            Change::Delete(Tombstone {
                kind: Kind::User,
                id: "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
                columns: vec![
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(Field::Text("ex_123456789".into()))
                ],
                deleted_at: 1_716_883_200_000
            })
        );
    }

    #[test]
    fn a_delete_without_a_timestamp_is_dated_on_receipt() {
        let body = r#"{"type":"user.deleted","data":{"id":"user_1","deleted":true}}"#;
        let d = parse_str(body).unwrap();
        assert_eq!(
            d.change,
            Change::Delete(Tombstone {
                kind: Kind::User,
                id: "user_1".into(),
                columns: vec![None; 6],
                deleted_at: 42
            })
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
        for other_json in ["[1,2]", "[]", r#""text""#, "7", "null"] {
            assert_eq!(
                parse_str(other_json),
                Err(EventError::NotAnObject),
                "{other_json}"
            );
        }
        assert_eq!(
            parse_str(r#"{"type":"user.created","type":"x","data":{"id":"u"}}"#),
            Err(EventError::RepeatedKey("type".into()))
        );
        assert_eq!(
            parse_str(r#"{"type":"user.created","data":{"id":"u"},"data":{"id":"v"}}"#),
            Err(EventError::RepeatedKey("data".into()))
        );
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

    /// What the two-pass reading alone makes of `body`.
    fn reference(body: &[u8]) -> Result<Delivery, EventError> {
        let body = std::str::from_utf8(body).map_err(|_| EventError::NotJson)?;
        two_passes(body).and_then(|e| build("msg_1".into(), e, 42))
    }

    /// The one-pass reading, where it answers, must agree with the two-pass
    /// one; where it does not answer, `parse` uses the two-pass one.
    fn assert_same(body: &[u8]) -> bool {
        let fast = std::str::from_utf8(body)
            .ok()
            .and_then(one_pass)
            .map(|e| build("msg_1".into(), e, 42));
        if let Some(fast) = &fast {
            assert_eq!(fast, &reference(body), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse("msg_1".into(), body, 42), reference(body));
        fast.is_some()
    }

    #[test]
    fn one_pass_agrees_with_two_on_every_published_example() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clerk");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(assert_same(&body), "one pass gave up on an example");
            // The same event compact, as Svix sends it.
            let compact = serde_json::to_vec(&serde_json::from_slice::<Value>(&body).unwrap());
            assert!(assert_same(&compact.unwrap()));
            read += 1;
        }
        assert!(read > 30, "only {read} examples");
    }

    #[test]
    fn one_pass_gives_way_where_it_cannot_be_sure() {
        let cases: &[&str] = &[
            r#"{"type":"user.created","data":{"\u0069d":"user_1","updated_at":1}}"#,
            r#"{"type":"user.created","data":{}}"#,
            r#"{"type":"user.created","data":[]}"#,
            r#"{"type":"user.created","data":{"id":"user_1","id":"user_2"}}"#,
            r#"{"type":"user.created","data":{"id":"user_1"} "#,
            r#"{"type":"user.created","data":{"id":"user_1"}} x"#,
            r#"{"type":"user.created","type":"user.updated","data":{"id":"user_1"}}"#,
        ];
        for body in cases {
            assert!(!assert_same(body.as_bytes()), "{body}");
        }
        let spaced = "{ \"type\" : \"user.created\" , \"data\" :\r\n\t{ \"id\" : \"user_1\" ,\n \"first_name\": null , \"x\" : [ 1 , {\"}\":\"{\"} ] \t}\n}";
        assert!(assert_same(spaced.as_bytes()));
        let Change::Upsert(user) = parse_str(spaced).unwrap().change else {
            panic!()
        };
        assert!(user.data.starts_with("{ \"id\"") && user.data.ends_with("] \t}"));
    }

    #[test]
    fn a_body_that_is_not_utf8_is_not_json_wherever_the_bad_byte_is() {
        let mut body = br#"{"type":"user.created","data":{"id":"user_1"},"note":"x"}"#.to_vec();
        let at = body.len() - 3;
        body[at] = 0xff;
        assert_eq!(parse("msg_1".into(), &body, 0), Err(EventError::NotJson));
    }

    #[test]
    fn one_pass_agrees_with_two_on_damaged_bodies() {
        let original = CREATED.as_bytes();
        // A small fixed generator: the same damage on every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let bytes = b" \t\n{}[]\":,\\0x-.enul";
        let mut fast = 0;
        for _ in 0..3000 {
            let mut body = original.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(body.len());
                match next(3) {
                    0 => body[at] = bytes[next(bytes.len())],
                    1 => body.insert(at, bytes[next(bytes.len())]),
                    _ => {
                        body.remove(at);
                    }
                }
            }
            fast += usize::from(assert_same(&body));
        }
        // Most damage lands in strings and leaves valid JSON.
        assert!(fast > 300, "one pass answered only {fast} of 3000");
    }

    #[test]
    fn field_values_read_as_the_json_parser_reads_them() {
        let values = [
            r#""Ada""#,
            r#""""#,
            r#""caf\u00e9 \"quoted\" \\ back""#,
            r#""\ud83d\ude00""#,
            r#""naïve 😀""#,
            r#""123""#,
            "0",
            "-0",
            "42",
            "-1700000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "1e3",
            "-2E-2",
            "null",
            "true",
            "[]",
            r#"{"a":1}"#,
        ];
        for value in values {
            let raw: &RawValue = serde_json::from_str(value).unwrap();
            let parsed_text: Option<String> = serde_json::from_str(value).ok();
            assert_eq!(text(Some(raw)), parsed_text, "text of {value}");
            // Every integer the parser reads as one is read the same.
            if let Ok(n) = serde_json::from_str::<i64>(value) {
                assert_eq!(int(Some(raw)), Some(n), "int of {value}");
            }
        }
        // And a number in any other form is the millisecond it names.
        let ints = [
            ("-0", Some(0)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("1.5", Some(1)),
            ("-1.5", Some(-1)),
            ("1e3", Some(1000)),
            ("1E+3", Some(1000)),
            ("-2E-2", Some(0)),
            ("1700000001000.0", Some(1_700_000_001_000)),
            ("1.7000000000005e12", Some(1_700_000_000_000)),
            ("17E11", Some(1_700_000_000_000)),
            ("9007199254740991.0", Some(9_007_199_254_740_991)),
            ("9007199254740992.0", None),
            ("1e400", None),
            (r#""123""#, None),
            ("null", None),
            ("true", None),
            ("[]", None),
        ];
        for (value, want) in ints {
            let raw: &RawValue = serde_json::from_str(value).unwrap();
            assert_eq!(int(Some(raw)), want, "int of {value}");
        }
        assert_eq!(text(None), None);
        assert_eq!(int(None), None);
        // Nor can a raw value hold a string with a bare control character,
        // the one thing besides escapes the fast path would have to check.
        assert!(serde_json::from_str::<&RawValue>("\"tab\there\"").is_err());
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
