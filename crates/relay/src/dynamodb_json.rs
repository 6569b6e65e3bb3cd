//! Reads DynamoDB JSON (`{"S": "text"}`, `{"N": "12"}`, `{"M": {...}}`, ...) straight into Rust
//! types, as the stream record's `NewImage` arrives in the Lambda event.
//!
//! `serde_dynamo` reaches the same types through `serde_dynamo::Item`: a hash map of owned
//! attribute values built first and dropped after. On the relay's hot path that intermediate
//! map was most of the cost of an event (docs/benchmarks.md), so this reader unwraps each
//! attribute's type as the JSON is read, borrowing strings from the input where it can. It is
//! checked against `serde_dynamo` on generated items (tests/relay/decoding_properties.rs).
//!
//! Supported: `S`, `N`, `BOOL`, `NULL`, `M`, `L`, `SS` and `NS`, which is every type an outbox
//! item uses. Binary attributes (`B`, `BS`) are refused with an error.

use serde::Deserialize;
use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// `T` from the DynamoDB JSON of an item: an object whose values are attribute values.
pub fn from_item_json<'de, T: Deserialize<'de>>(json: &'de str) -> Result<T, serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_str(json);
    let value = T::deserialize(Item(&mut reader))?;
    reader.end()?;
    Ok(value)
}

/// `T` from an item, and in the same pass the string attribute `name`, which `T` does not see
/// (a discriminator such as an item type). When `T` fails, the attribute is what had been read
/// by then: `None` may mean "not reached".
pub fn from_item_json_with<'de, T: Deserialize<'de>>(
    json: &'de str,
    name: &str,
) -> (Option<Cow<'de, str>>, Result<T, serde_json::Error>) {
    let mut reader = serde_json::Deserializer::from_str(json);
    let (watched, value) = deserialize_item_with(&mut reader, name);
    (watched, value.and_then(|value| reader.end().map(|()| value)))
}

/// [`from_item_json_with`] for an item inside larger JSON: reads `T` from the item `deserializer`
/// is at, with the string attribute `name` aside.
pub fn deserialize_item_with<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
    name: &str,
) -> (Option<Cow<'de, str>>, Result<T, D::Error>) {
    let mut watched = None;
    let value = T::deserialize(WatchedItem {
        inner: deserializer,
        name,
        watched: &mut watched,
    });
    (watched, value)
}

struct WatchedItem<'w, 'de, D> {
    inner: D,
    name: &'w str,
    watched: &'w mut Option<Cow<'de, str>>,
}

impl<'w, 'de, D: Deserializer<'de>> Deserializer<'de> for WatchedItem<'w, 'de, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(WatchedAttributes {
            visitor,
            name: self.name,
            watched: self.watched,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct WatchedAttributes<'w, 'de, V> {
    visitor: V,
    name: &'w str,
    watched: &'w mut Option<Cow<'de, str>>,
}

impl<'w, 'de, V: Visitor<'de>> Visitor<'de> for WatchedAttributes<'w, 'de, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of DynamoDB attribute values")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(WatchedAttributeMap {
            map,
            name: self.name,
            watched: self.watched,
        })
    }
}

/// An item's entries without the watched one, whose string value is kept aside.
struct WatchedAttributeMap<'w, 'de, A> {
    map: A,
    name: &'w str,
    watched: &'w mut Option<Cow<'de, str>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WatchedAttributeMap<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(Text(key)) = self.map.next_key::<Text>()? else {
                return Ok(None);
            };
            if key == self.name {
                let Text(value) = self.map.next_value_seed(AttributeSeed(PhantomData::<Text>))?;
                *self.watched = Some(value);
                continue;
            }
            return match key {
                Cow::Borrowed(key) => seed.deserialize(BorrowedStrDeserializer::new(key)),
                Cow::Owned(key) => seed.deserialize(StrDeserializer::new(&key)),
            }
            .map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(AttributeSeed(seed))
    }
}

/// A string, borrowed from the input unless it had to be unescaped.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// An item, or the value of an `M` attribute: an object of attribute values.
struct Item<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Item<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Attributes(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Attributes<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Attributes<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of DynamoDB attribute values")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(AttributeMap(map))
    }
}

/// The entries of an item: keys as they are, values unwrapped from their types.
struct AttributeMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for AttributeMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(AttributeSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// The elements of an `L` attribute, each an attribute value.
struct AttributeList<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for AttributeList<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        self.0.next_element_seed(AttributeSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// The elements of an `NS` attribute: numbers written as strings.
struct NumberList<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for NumberList<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        self.0.next_element_seed(NumberSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct AttributeSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for AttributeSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Attribute(deserializer))
    }
}

struct NumberSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for NumberSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(NumberText(deserializer))
    }
}

/// One attribute value, `{"<type>": <value>}`, read as the value it holds.
struct Attribute<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Attribute<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Typed {
            visitor,
            wanted: Wanted::Any,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Typed {
            visitor,
            wanted: Wanted::Option,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Typed {
            visitor,
            wanted: Wanted::Enum { name, variants },
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self)
    }

    /// An attribute the target type does not name is skipped as plain JSON, whatever its type.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_ignored_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The type descriptors of DynamoDB JSON.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[allow(clippy::upper_case_acronyms)]
enum Tag {
    S,
    N,
    B,
    BOOL,
    NULL,
    M,
    L,
    SS,
    NS,
    BS,
}

#[derive(Clone, Copy)]
enum Wanted {
    Any,
    Option,
    Enum {
        name: &'static str,
        variants: &'static [&'static str],
    },
}

/// Reads the `{"<type>": ...}` object and hands its value to `visitor` as what the type says.
struct Typed<V> {
    visitor: V,
    wanted: Wanted,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Typed<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a DynamoDB attribute value such as {"S": "text"}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V::Value, A::Error> {
        let Some(tag) = map.next_key::<Tag>()? else {
            return Err(de::Error::custom(
                r#"an attribute value names its type, as in {"S": "text"}"#,
            ));
        };
        let value = match (tag, self.wanted) {
            (Tag::NULL, wanted) => {
                map.next_value::<IgnoredAny>()?;
                match wanted {
                    Wanted::Option => self.visitor.visit_none()?,
                    _ => self.visitor.visit_unit()?,
                }
            }
            (_, Wanted::Option) => self.visitor.visit_some(Body { map: &mut map, tag })?,
            (_, Wanted::Enum { name, variants }) => {
                Body { map: &mut map, tag }.deserialize_enum(name, variants, self.visitor)?
            }
            (_, Wanted::Any) => Body { map: &mut map, tag }.deserialize_any(self.visitor)?,
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("an attribute value has exactly one type"));
        }
        Ok(value)
    }
}

/// The value of an attribute whose type was just read.
struct Body<'m, A> {
    map: &'m mut A,
    tag: Tag,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Body<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        match self.tag {
            Tag::S | Tag::BOOL | Tag::SS => self.map.next_value_seed(AsIs(visitor)),
            Tag::N => self.map.next_value_seed(NumberSeed(AsIs(visitor))),
            Tag::M => self.map.next_value_seed(AsItem(visitor)),
            Tag::L => self.map.next_value_seed(AsList(visitor)),
            Tag::NS => self.map.next_value_seed(AsNumbers(visitor)),
            Tag::NULL => visitor.visit_unit(),
            Tag::B | Tag::BS => Err(de::Error::custom("binary attributes (B, BS) are not supported")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        match self.tag {
            // A unit variant is its name, as serde_dynamo writes it.
            Tag::S => self.map.next_value_seed(AsEnum {
                name,
                variants,
                visitor,
            }),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A plain JSON value passed through: strings, booleans, string sets.
struct AsIs<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for AsIs<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        deserializer.deserialize_any(self.0)
    }
}

struct AsItem<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for AsItem<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        Item(deserializer).deserialize_any(self.0)
    }
}

struct AsList<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for AsList<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        deserializer.deserialize_seq(ListVisitor {
            visitor: self.0,
            numbers: false,
        })
    }
}

struct AsNumbers<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for AsNumbers<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        deserializer.deserialize_seq(ListVisitor {
            visitor: self.0,
            numbers: true,
        })
    }
}

struct ListVisitor<V> {
    visitor: V,
    numbers: bool,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ListVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of attribute values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.numbers {
            self.visitor.visit_seq(NumberList(seq))
        } else {
            self.visitor.visit_seq(AttributeList(seq))
        }
    }
}

struct AsEnum<V> {
    name: &'static str,
    variants: &'static [&'static str],
    visitor: V,
}

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for AsEnum<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        deserializer.deserialize_enum(self.name, self.variants, self.visitor)
    }
}

/// A number written as a string (`N`, `NS` elements), handed over as the first of i64, u64 and
/// f64 that holds it, as serde_dynamo does.
struct NumberText<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for NumberText<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_str(Number(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Number<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Number<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number written as a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<V::Value, E> {
        if let Ok(n) = text.parse::<i64>() {
            self.0.visit_i64(n)
        } else if let Ok(n) = text.parse::<u64>() {
            self.0.visit_u64(n)
        } else if let Ok(n) = text.parse::<f64>() {
            self.0.visit_f64(n)
        } else {
            Err(E::custom(format_args!("{text:?} is not a number")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn reads_every_supported_type_like_serde_dynamo() {
        let item = json!({
            "s": {"S": "text with \"quotes\""},
            "n": {"N": "42"},
            "negative": {"N": "-7"},
            "fraction": {"N": "2.5"},
            "yes": {"BOOL": true},
            "nothing": {"NULL": true},
            "map": {"M": {"inner": {"S": "x"}, "deeper": {"M": {"n": {"N": "1"}}}}},
            "list": {"L": [{"S": "a"}, {"N": "2"}, {"M": {}}]},
            "strings": {"SS": ["a", "b"]},
            "numbers": {"NS": ["1", "2.5"]}
        });
        let ours: Value = from_item_json(&item.to_string()).unwrap();
        let item: serde_dynamo::Item = serde_json::from_value(item).unwrap();
        let theirs: Value = serde_dynamo::from_item(item).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn options_enums_and_borrowed_strings() {
        #[derive(Deserialize, Debug, PartialEq)]
        enum Kind {
            Created,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct Row<'a> {
            kind: Kind,
            absent: Option<u32>,
            null: Option<u32>,
            present: Option<u32>,
            #[serde(borrow)]
            name: &'a str,
        }
        let json = r#"{"kind": {"S": "Created"}, "null": {"NULL": true}, "present": {"N": "3"}, "name": {"S": "n"}, "extra": {"L": []}}"#;
        let row: Row = from_item_json(json).unwrap();
        assert_eq!(
            row,
            Row {
                kind: Kind::Created,
                absent: None,
                null: None,
                present: Some(3),
                name: "n",
            }
        );
    }

    #[test]
    fn a_watched_attribute_is_read_aside_in_the_same_pass() {
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Row {
            n: u32,
        }
        let json = r#"{"n": {"N": "1"}, "kind": {"S": "Row"}}"#;
        let (kind, row) = from_item_json_with::<Row>(json, "kind");
        assert_eq!((kind.as_deref(), row.unwrap()), (Some("Row"), Row { n: 1 }));
        let (kind, row) = from_item_json_with::<Row>(r#"{"n": {"N": "1"}}"#, "kind");
        assert_eq!((kind, row.unwrap()), (None, Row { n: 1 }));
        // A failure before the watched attribute leaves it unread.
        let (kind, row) = from_item_json_with::<Row>(r#"{"n": {"S": "x"}, "kind": {"S": "Row"}}"#, "kind");
        assert!(kind.is_none() && row.is_err());
    }

    #[test]
    fn malformed_attributes_are_errors_not_guesses() {
        for (json, expected) in [
            (r#"{"a": {}}"#, "names its type"),
            (r#"{"a": {"S": "x", "N": "1"}}"#, "exactly one type"),
            (r#"{"a": {"X": "x"}}"#, "unknown variant"),
            (r#"{"a": {"B": "AAE="}}"#, "binary attributes"),
            (r#"{"a": {"N": "many"}}"#, "is not a number"),
            (r#"{"a": "plain"}"#, "attribute value"),
            (r#"{"a": {"S": "x"}} trailing"#, "trailing characters"),
        ] {
            let error = from_item_json::<Value>(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
