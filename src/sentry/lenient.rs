//! Lenient, borrowing deserialization of Sentry payloads: typed structs read straight from the
//! body, without a `serde_json::Value` tree.
//!
//! A payload is read by key into the structs of [`payload`](super::payload), each declared with
//! [`lenient_object!`]. Reading them keeps what the `Value` accessors the parsers used before
//! guaranteed, so that a payload parses exactly as it did:
//!
//! - **No value fails the parse for its type.** A field of the wrong type reads as absent (its
//!   `Default`) instead of failing the whole body, as `serde_json`'s derive would. Only what is
//!   not JSON fails: the same errors, at the same places, as `serde_json::from_slice::<Value>`.
//! - **What is not read is checked, not built.** Skipped values go through [`Skip`], which
//!   allocates nothing but still validates strings (UTF-8, surrogate escapes), numbers (range)
//!   and nesting (serde_json's recursion limit, 128), as building a `Value` did.
//!   `serde::de::IgnoredAny` would not: serde_json skips it without those checks, so a body a
//!   `Value` refuses would be accepted.
//! - **The last of duplicate keys wins**, as in a `Value` map (serde's derive refuses them).
//! - **Strings borrow from the body** unless they hold escapes ([`Loose::Str`] is a `Cow`).
//!
//! The one difference: serde_json's `Value` gives a first key `$serde_json::private::RawValue`
//! a special meaning (with the `raw_value` feature other crates enable); here it is a key.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de};
use serde_json::Number;

/// A JSON value as the parsers read a leaf field: a string (borrowed from the body when it has
/// no escapes), a number or a boolean. `null`, arrays and objects are [`Loose::Other`] (their
/// contents skipped), as is a field that is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Loose<'a> {
    /// Absent, `null`, an array or an object.
    #[default]
    Other,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json::Value` holds it.
    Num(Number),
    /// A string.
    Str(Cow<'a, str>),
}

impl Loose<'_> {
    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Loose::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// A type read leniently from any JSON value: each shape has a reading, and the shapes a type
/// does not take read as its `Default` (their contents skipped with [`Skip`]). Read with
/// [`Seed`]; the readings must not fail except where the input is not JSON.
pub(crate) trait Lenient<'de>: Sized + Default {
    /// Reads a JSON object.
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Self::default())
    }

    /// Reads a JSON array.
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Self::default())
    }

    /// Reads a string, number, boolean or `null` ([`Loose::Other`]).
    fn from_scalar(_value: Loose<'de>) -> Self {
        Self::default()
    }
}

impl<'de> Lenient<'de> for Loose<'de> {
    fn from_scalar(value: Loose<'de>) -> Self {
        value
    }
}

/// Reads a [`Lenient`] type from a deserializer (`map.next_value_seed(Seed::new())`).
pub(crate) struct Seed<T>(PhantomData<T>);

impl<T> Seed<T> {
    /// The seed of a `T`.
    pub(crate) fn new() -> Self {
        Seed(PhantomData)
    }
}

impl<'de, T: Lenient<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Lenient<'de>> Visitor<'de> for Seed<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Num(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Num(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // As `serde_json::Value` does: a float that is not finite is `null`.
        Ok(T::from_scalar(
            Number::from_f64(v).map_or(Loose::Other, Loose::Num),
        ))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Str(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Str(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Str(Cow::Owned(v))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Other))
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::from_scalar(Loose::Other))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

/// Any JSON value, skipped: checked as building a `serde_json::Value` would check it (strings,
/// numbers, nesting depth), but nothing is kept or allocated.
pub(crate) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Skip, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Skip, D::Error> {
        Skip::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// `Some(T)` for a JSON object, `None` for anything else: for the objects a resource requires
/// (`data.event`, `data.issue`, …) and the entries of a list that count only when they are
/// objects. Boxed, so that the structs holding one stay small to move.
#[derive(Debug, Default)]
pub(crate) struct Object<T>(pub(crate) Option<Box<T>>);

impl<'de, T: Lenient<'de>> Lenient<'de> for Object<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::from_map(map).map(|t| Object(Some(Box::new(t))))
    }
}

/// The entries of a JSON array, each read as a `T`; empty for anything else.
#[derive(Debug)]
pub(crate) struct List<T>(pub(crate) Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Lenient<'de>> Lenient<'de> for List<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed::<T>::new())? {
            items.push(item);
        }
        Ok(List(items))
    }
}

/// Reads a whole body as a `T` that must be a JSON object: `Ok(None)` when it is JSON but not
/// an object, the `serde_json` error when it is not JSON, exactly as
/// `serde_json::from_slice::<Value>` would report it.
///
/// The body's UTF-8 is checked once, up front, rather than string by string as
/// `from_slice` does; a body that is not UTF-8 (never JSON) is read with `from_slice` all the
/// same, for its error.
pub(crate) fn from_body<'de, T: Lenient<'de>>(
    body: &'de [u8],
) -> serde_json::Result<Option<Box<T>>> {
    match std::str::from_utf8(body) {
        Ok(text) => read_document(serde_json::Deserializer::from_str(text)),
        Err(_) => read_document(serde_json::Deserializer::from_slice(body)),
    }
}

/// Reads a whole document from `de`: a `T` if it is a JSON object, and nothing after it.
fn read_document<'de, R, T>(
    mut de: serde_json::Deserializer<R>,
) -> serde_json::Result<Option<Box<T>>>
where
    R: serde_json::de::Read<'de>,
    T: Lenient<'de>,
{
    let Object(doc) = Seed::<Object<T>>::new().deserialize(&mut de)?;
    de.end()?;
    Ok(doc)
}

/// Reads a `T` from a `serde_json::Value` (the answers of Sentry's API, which `api` holds as
/// `Value`s). Never fails: what does not fit reads as absent.
pub(crate) fn from_value<'de, T: Lenient<'de>>(value: &'de serde_json::Value) -> T {
    Seed::<T>::new().deserialize(value).unwrap_or_default()
}

/// Declares a struct read from a JSON object by key ([`Lenient`]): each field is read from the
/// value of its key with its own type's [`Lenient`] reading (the last of duplicate keys wins),
/// any other key is skipped, and anything but an object reads as the `Default` struct.
///
/// ```ignore
/// lenient_object! {
///     /// What a metadata object holds.
///     pub(crate) struct Metadata<'a> {
///         "type" => kind: Loose<'a>,
///         "value" => value: Loose<'a>,
///     }
/// }
/// ```
macro_rules! lenient_object {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> {
            $($(#[$field_attr:meta])* $key:literal => $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Default)]
        $vis struct $name<$lt> {
            $($(#[$field_attr])* pub(crate) $field: $ty,)*
        }

        impl<$lt> $crate::sentry::lenient::Lenient<$lt> for $name<$lt> {
            fn from_map<A: ::serde::de::MapAccess<$lt>>(mut map: A) -> Result<Self, A::Error> {
                use $crate::sentry::lenient::{Loose, Seed, Skip};
                let mut out = Self::default();
                while let Some(key) = map.next_key_seed(Seed::<Loose<$lt>>::new())? {
                    match key.as_str() {
                        $(Some($key) => out.$field = map.next_value_seed(Seed::new())?,)*
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use lenient_object;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    lenient_object! {
        /// A test shape.
        struct Pair<'a> {
            "a" => a: Loose<'a>,
            "inner" => inner: Object<Inner<'a>>,
            "list" => list: List<Loose<'a>>,
        }
    }

    lenient_object! {
        /// What [`Pair`] nests.
        struct Inner<'a> {
            "a" => a: Loose<'a>,
        }
    }

    fn pair(body: &str) -> serde_json::Result<Option<Box<Pair<'_>>>> {
        from_body(body.as_bytes())
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let p = pair(r#"{"a": "plain"}"#).unwrap().unwrap();
        assert!(matches!(p.a, Loose::Str(Cow::Borrowed("plain"))));
        let p = pair(r#"{"a": "tab\tbed"}"#).unwrap().unwrap();
        assert!(matches!(p.a, Loose::Str(Cow::Owned(ref s)) if s == "tab\tbed"));
    }

    #[test]
    fn wrong_types_read_as_absent_and_the_last_duplicate_wins() {
        let p = pair(r#"{"a": "x", "inner": 5, "list": {"a": 1}, "a": [1, {"b": 2}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(p.a, Loose::Other);
        assert!(p.inner.0.is_none());
        assert!(p.list.0.is_empty());
        let p = pair(r#"{"inner": {"a": 1}, "list": [true, 2.5, null, "s"], "a": -3}"#)
            .unwrap()
            .unwrap();
        assert_eq!(p.a, Loose::Num((-3).into()));
        assert_eq!(p.inner.0.map(|i| i.a), Some(Loose::Num(1.into())));
        assert_eq!(
            p.list.0,
            [
                Loose::Bool(true),
                Loose::Num(Number::from_f64(2.5).unwrap()),
                Loose::Other,
                Loose::Str("s".into())
            ]
        );
    }

    #[test]
    fn a_body_is_refused_where_a_value_would_be() {
        let refused = |body: &str| {
            let typed = pair(body).map(|_| ()).map_err(|e| e.to_string());
            let value = serde_json::from_str::<serde_json::Value>(body)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(typed, value, "{body}");
            typed.is_err()
        };
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for body in [
            format!(r#"{{"skipped": {deep}}}"#),
            r#"{"skipped": "\ud83d"}"#.to_owned(),
            r#"{"skipped": "\ude00\ud83d"}"#.to_owned(),
            r#"{"skipped": 1e400}"#.to_owned(),
            r#"{"skipped": [1, 2,]}"#.to_owned(),
            r#"{"a": "x"} trailing"#.to_owned(),
            r#"{"a": "x""#.to_owned(),
        ] {
            assert!(refused(&body), "{body}");
        }
        assert!(!refused(
            r#"{"skipped": "\ud83d\ude00", "a": {"b": [1e300]}}"#
        ));
        let invalid_utf8 = b"{\"skipped\": \"\xff\"}";
        assert!(from_body::<Pair>(invalid_utf8).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(invalid_utf8).is_err());
    }

    #[test]
    fn only_an_object_is_a_document() {
        assert!(pair("[1]").unwrap().is_none());
        assert!(pair("\"x\"").unwrap().is_none());
        assert!(pair("{}").unwrap().is_some());
    }

    #[test]
    fn values_read_like_bodies() {
        let v = json!({"a": "x", "inner": {"a": 2}});
        let p: Pair = from_value(&v);
        assert_eq!(p.a.as_str(), Some("x"));
        assert_eq!(p.inner.0.map(|i| i.a), Some(Loose::Num(2.into())));
        let not_an_object = json!([1]);
        let p: Pair = from_value(&not_an_object);
        assert_eq!(p.a, Loose::Other);
    }
}
