//! JSON whose objects name each key once. serde_json keeps the last of a repeated key; a proxy,
//! a firewall or a client library in front of the service may keep the first, and then the two
//! act on different requests (a parser differential). So a repeated key is refused, at any
//! depth, with its name in the message.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value in which no object repeats a key. Parses as fast as `serde_json::Value`.
pub(super) struct UniqueKeys(pub Value);

/// How much of a repeated key the error message shows (the key is the client's own input, but
/// it may be up to the body limit long).
const KEY_SHOWN_CHARS: usize = 64;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(Self)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::new();
        while let Some(UniqueKeys(item)) = items.next_element()? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "has the key {:?} more than once; each key may appear only once",
                    shown(&key)
                )));
            }
            let UniqueKeys(value) = entries.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn shown(key: &str) -> String {
    match key.char_indices().nth(KEY_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, String> {
        serde_json::from_str::<UniqueKeys>(text)
            .map(|UniqueKeys(value)| value)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn parses_as_serde_json_does_when_no_key_repeats() {
        for text in [
            r#"{"account_id":"0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2","amount":-4}"#,
            r#"[1, -2, 18446744073709551615, 1.5, 1e400, "x", null, true, {"a": {"b": []}}]"#,
            r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}"#,
            "123456789012345678901234567890",
        ] {
            let expected: Result<Value, String> =
                serde_json::from_str(text).map_err(|error| error.to_string());
            assert_eq!(parse(text), expected, "{text}");
        }
    }

    #[test]
    fn a_repeated_key_is_refused_by_name_at_any_depth() {
        for (text, key) in [
            (r#"{"amount": 1, "amount": 500}"#, "amount"),
            (r#"{"a": {"b": 1, "b": 1}}"#, "b"),
            (r#"[{"x": 1}, {"y": 1, "y": 2}]"#, "y"),
            (r#"{"\u0061": 1, "a": 2}"#, "a"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(
                error.contains(&format!("the key \"{key}\" more than once")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn a_long_repeated_key_is_shown_cut() {
        let key = "k".repeat(1000);
        let error = parse(&format!(r#"{{"{key}": 1, "{key}": 2}}"#)).expect_err("repeated");
        assert!(
            error.contains(&format!("\"{}…\"", "k".repeat(64))),
            "{error}"
        );
        assert!(error.len() < 300, "{error}");
    }
}
