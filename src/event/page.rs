//! A page of objects as the Backend API lists them, read in one pass: each
//! object's fields are taken while the page is read, and its exact text is
//! found, as for a delivery's `data`, from where its first key and its last
//! value lie in the body. Reading each object out as raw JSON and then
//! again for its fields parses every byte twice.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::fields::DataObject;
use super::read::{object_end, object_start};
use super::{from_fields, EventError, Kind, Object};

/// The `kind` objects of a page `body` (a bare array, or `{"data": [...]}`),
/// each read by the same rules as [`super::object`], in order. `None` when
/// the page is not valid JSON of either shape, or when an object's text
/// cannot be found this way (an escaped first key, an empty object): the
/// caller then reads it object by object, which has the last word.
#[must_use]
pub fn objects(kind: Kind, body: &str, now_ms: i64) -> Option<Vec<Result<Object, EventError>>> {
    #[derive(Deserialize)]
    struct DataPage<'a> {
        #[serde(borrow)]
        data: Vec<Element<'a>>,
    }
    let elements = match body.bytes().find(|b| !b.is_ascii_whitespace())? {
        b'{' => serde_json::from_str::<DataPage<'_>>(body).ok()?.data,
        _ => serde_json::from_str::<Vec<Element<'_>>>(body).ok()?,
    };
    elements
        .into_iter()
        .map(|element| {
            let Element(Some(read)) = element else {
                return Some(Err(EventError::NotAnObject));
            };
            let start = object_start(body.as_bytes(), read.first_key?)?;
            let end = object_end(body.as_bytes(), read.last_value?.get())?;
            // Both ends are ASCII braces, so char boundaries.
            let raw = body.get(start..=end)?;
            Some(from_fields(kind, read, raw, now_ms).map(|mut object| {
                object.data = raw.to_owned();
                object
            }))
        })
        .collect()
}

/// One element of a page: an object's fields, or `None` for anything else.
struct Element<'a>(Option<DataObject<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Element<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor(PhantomData))
    }
}

struct ElementVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ElementVisitor<'a> {
    type Value = Element<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        DataObject::deserialize(MapAccessDeserializer::new(map)).map(|o| Element(Some(o)))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Element(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Element(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Element(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Element(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Element(None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Element(None))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::event::{object_owned, JSON_DEPTH};

    const NOW: i64 = 1_700_000_000_000;

    /// The reference reading: each element cut out raw, then read alone.
    fn one_by_one(kind: Kind, body: &str) -> Vec<Result<Object, EventError>> {
        let raws: Vec<Box<RawValue>> = match body.trim_start().as_bytes().first() {
            Some(b'{') => {
                #[derive(Deserialize)]
                struct Page {
                    data: Vec<Box<RawValue>>,
                }
                serde_json::from_str::<Page>(body).unwrap().data
            }
            _ => serde_json::from_str(body).unwrap(),
        };
        raws.into_iter()
            .map(|raw| {
                object_owned(kind, Box::<str>::from(raw).into_string(), NOW).map_err(|e| e.0)
            })
            .collect()
    }

    fn user(id: &str, email: &str) -> String {
        format!(
            r#"{{"id":"{id}","first_name":"J\u00f6rg \"}}]\\","email_addresses":[{{"id":"e1","email_address":"{email}"}}],"primary_email_address_id":"e1","created_at":1,"updated_at":2,"n":[1,{{"a":"]"}}]}}"#
        )
    }

    #[test]
    fn one_pass_agrees_with_reading_each_object_alone() {
        let deep = format!(
            "{{\"id\":\"deep\",\"x\":{}1{}}}",
            "[".repeat(JSON_DEPTH),
            "]".repeat(JSON_DEPTH)
        );
        let elements = [
            user("u1", "a@x.test"),
            format!(" \n {} ", user("u2", "b@x.test")),
            "{\"first_name\":\"no id\"}".to_owned(),
            "{\"id\":\"twice\",\"first_name\":\"a\",\"first_name\":\"b\"}".to_owned(),
            "7".to_owned(),
            "[{\"id\":\"in an array\"}]".to_owned(),
            "null".to_owned(),
            "\"a string\"".to_owned(),
            deep,
            include_str!("../../tests/fixtures/clerk/user.created.json").to_owned(),
        ];
        let list = format!("[{}]", elements.join(",\n"));
        for body in [
            list.clone(),
            format!("{{\"data\": {list}, \"total_count\": {}}}", elements.len()),
            format!("{{\"total_count\": 1, \"data\": {list}}}"),
            "[]".to_owned(),
        ] {
            let fast = objects(Kind::User, &body, NOW).expect("one pass settles these");
            assert_eq!(fast, one_by_one(Kind::User, &body), "{body}");
        }
        let fast = objects(Kind::User, &list, NOW).unwrap();
        assert_eq!(
            fast[1].as_ref().unwrap().data,
            user("u2", "b@x.test"),
            "trimmed"
        );
        assert_eq!(fast[0].as_ref().unwrap().text("email"), Some("a@x.test"));
        assert_eq!(fast[8], Err(EventError::TooDeep));
    }

    #[test]
    fn it_gives_way_where_it_cannot_find_the_text() {
        for body in [
            r#"[{"\u0069d":"escaped first key"}]"#,
            "[{}]",
            "[{\"id\":\"u1\"},]",
            "{\"data\":[],\"data\":[]}",
            "{\"items\":[]}",
            "not json",
            "",
        ] {
            assert_eq!(objects(Kind::User, body, NOW), None, "{body}");
        }
    }
}
