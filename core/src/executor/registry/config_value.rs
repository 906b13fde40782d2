//! Deserialising an executor's configuration (a JSON object of user
//! values) so that the error names each value it quotes escaped and cut
//! ([`crate::escape`]), never as serde writes it (as is, or in Rust's
//! `{:?}` form): a key or value holding a newline cannot forge a line.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, value::MapDeserializer, value::SeqDeserializer, IntoDeserializer, Unexpected,
};
use serde_json::Value;

use crate::escape;

/// Deserialises `config` into `T`; the error is the message to show, every
/// value it quotes escaped.
pub(super) fn from_value<T: de::DeserializeOwned>(config: Value) -> Result<T, ConfigError> {
    T::deserialize(ValueDeserializer::<ConfigError>::new(config))
}

/// Why a configuration does not fit its struct: a message whose quoted
/// values are escaped (see the module documentation), and the key that is
/// none of the struct's, when that is why.
#[derive(Debug)]
pub(super) struct ConfigError(String, Option<String>);

impl ConfigError {
    fn message(message: String) -> Self {
        ConfigError(message, None)
    }

    /// The key given that is no field of the struct, as given.
    pub(super) fn unknown_key(&self) -> Option<&str> {
        self.1.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl de::Error for ConfigError {
    /// A message serde or a `Deserialize` impl wrote, which may hold a value
    /// as is: escaped whole.
    fn custom<M: fmt::Display>(message: M) -> Self {
        ConfigError::message(escape::text(&message.to_string()).to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        ConfigError::message(format!(
            "invalid type: {}, expected {expected}",
            Shown(unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        ConfigError::message(format!(
            "invalid value: {}, expected {expected}",
            Shown(unexpected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        ConfigError::message(format!(
            "unknown variant `{}`, {}",
            escape::text(variant),
            OneOf("variants", expected)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        ConfigError(
            format!(
                "unknown field `{}`, {}",
                escape::text(field),
                OneOf("fields", expected)
            ),
            Some(field.to_string()),
        )
    }
}

/// What serde found, as [`Unexpected`] shows it but with a string or
/// character escaped (`string "a\nb"`, not as `{:?}` shows it).
struct Shown<'a>(Unexpected<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Str(s) => write!(f, "string {}", escape::quoted(s)),
            Unexpected::Char(c) => {
                write!(
                    f,
                    "character `{}`",
                    escape::text(c.encode_utf8(&mut [0; 4]))
                )
            }
            Unexpected::Other(other) => write!(f, "{}", escape::text(other)),
            other => write!(f, "{other}"),
        }
    }
}

/// The names serde expected, as serde lists them: "expected `a` or `b`",
/// or "there are no fields" (with `none` = "fields").
struct OneOf(&'static str, &'static [&'static str]);

impl fmt::Display for OneOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let OneOf(none, names) = *self;
        match names {
            [] => write!(f, "there are no {none}"),
            [one] => write!(f, "expected `{one}`"),
            [a, b] => write!(f, "expected `{a}` or `{b}`"),
            _ => {
                f.write_str("expected one of ")?;
                for (i, name) in names.iter().enumerate() {
                    let comma = if i > 0 { ", " } else { "" };
                    write!(f, "{comma}`{name}`")?;
                }
                Ok(())
            }
        }
    }
}

/// A JSON value as a serde deserializer whose error type is `E`
/// (`serde_json::Value`'s own is always `serde_json::Error`, whose messages
/// quote values as is). It reads a value as `serde_json::Value` does.
struct ValueDeserializer<E> {
    value: Value,
    error: PhantomData<E>,
}

impl<E> ValueDeserializer<E> {
    fn new(value: Value) -> Self {
        ValueDeserializer {
            value,
            error: PhantomData,
        }
    }
}

impl<'de, E: de::Error> IntoDeserializer<'de, E> for ValueDeserializer<E> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de, E: de::Error> de::Deserializer<'de> for ValueDeserializer<E> {
    type Error = E;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(E::custom(format_args!("number {n} out of range"))),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(Self::new));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(object) => {
                let mut map =
                    MapDeserializer::new(object.into_iter().map(|(k, v)| (k, Self::new(v))));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, E> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, E> {
        match self.value {
            // A unit variant by its name; one with data as {"name": data}.
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Object(object) if object.len() == 1 => {
                visitor.visit_enum(de::value::MapAccessDeserializer::new(MapDeserializer::new(
                    object.into_iter().map(|(k, v)| (k, Self::new(v))),
                )))
            }
            other => Err(E::invalid_type(
                unexpected(&other),
                &"a string or a map of one key",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// What `value` is, for an invalid-type error.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Runner {
        Jail,
        Direct,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        make: Option<String>,
        secs: Option<u64>,
        runner: Option<Runner>,
        #[serde(default)]
        flags: Vec<String>,
        on: Option<bool>,
    }

    #[test]
    fn a_configuration_reads_as_serde_json_reads_it() {
        let sample: Sample = from_value(json!({
            "make": "bmake", "secs": 5, "runner": "direct", "flags": ["-j2"], "on": true
        }))
        .unwrap();
        assert_eq!(
            sample,
            Sample {
                make: Some("bmake".into()),
                secs: Some(5),
                runner: Some(Runner::Direct),
                flags: vec!["-j2".into()],
                on: Some(true),
            }
        );
        let empty: Sample = from_value(json!({"make": null})).unwrap();
        assert_eq!(
            (empty.make, empty.runner, empty.flags),
            (None, None, vec![])
        );
    }

    /// Regression: serde's messages quoted a key or value as it was (a
    /// newline in an unknown key forged a `fruix: error:` line) or as `{:?}`
    /// does (`\u{1b}`), and never cut it.
    #[test]
    fn every_value_an_error_quotes_is_escaped_and_cut() {
        let said = |config: Value| from_value::<Sample>(config).unwrap_err().to_string();
        assert_eq!(
            said(json!({"x\nfruix: error: F": 1})),
            "unknown field `x\\nfruix: error: F`, expected one of `make`, `secs`, `runner`, `flags`, `on`"
        );
        assert_eq!(
            said(json!({"runner": "x\n\u{202e}"})),
            "unknown variant `x\\n\\342\\200\\256`, expected `jail` or `direct`"
        );
        assert_eq!(
            said(json!({"secs": "x\n\u{1b}[2J\""})),
            "invalid type: string \"x\\n\\033[2J\\\"\", expected u64"
        );
        assert_eq!(
            said(json!({"secs": -1})),
            "invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            said(json!({"runner": ["jail"]})),
            "invalid type: sequence, expected a string or a map of one key"
        );
        let long = said(json!({ "k".repeat(3000): 1 }));
        assert!(long.contains("…[1976 more bytes cut]`"), "{long}");
        assert!(long.len() < 1200, "{long}");
    }
}
