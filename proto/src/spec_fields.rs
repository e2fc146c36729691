//! The human-written form of a spec: the knobs of [`crate::schema`] a person gave,
//! as `cbctl put`'s flags, apply files and the daemon's `[[template]]` tables write
//! them.
//!
//! ```toml
//! consecutive_failures = 4
//! failure_rate = 50
//! open_duration = "30s"
//! ```

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, Visitor},
    ser::SerializeMap as _,
};

pub use crate::schema::{KNOBS, Knob, Value, key_of, spec_error};
use crate::{
    schema::{FALLBACKS, JsonScalar, KEYS, Kind, fallback_name, fallback_named, knob},
    v1 as pb,
};

/// Some knobs and their values; the others take the spec's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecFields {
    /// By the index of the knob in [`KNOBS`].
    values: [Option<Value>; KNOBS.len()],
}

fn index_of(key: &str) -> Result<usize, String> {
    KNOBS
        .iter()
        .position(|k| k.key == key)
        .ok_or_else(|| format!("unknown key `{key}`"))
}

impl SpecFields {
    /// The value given for `key`; `None` when not given (or no such key).
    pub fn get(&self, key: &str) -> Option<Value> {
        index_of(key).ok().and_then(|i| self.values[i])
    }

    /// Gives `key` the `value`; an unknown key or a value of the wrong type is an
    /// error naming the key.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), String> {
        let i = index_of(key)?;
        if !KNOBS[i].accepts(&value) {
            return Err(format!("{key}: {value:?} is of the wrong type"));
        }
        self.values[i] = Some(value);
        Ok(())
    }

    /// [`SpecFields::set`], builder style.
    pub fn with(mut self, key: &str, value: Value) -> Result<Self, String> {
        self.set(key, value)?;
        Ok(self)
    }

    /// The knobs given, in schema order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Knob, Value)> + '_ {
        KNOBS
            .iter()
            .zip(&self.values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// The wire spec. A knob given with one it conflicts with, or without one it
    /// requires, is an error naming both keys.
    pub fn to_proto(&self) -> Result<pb::BreakerSpec, String> {
        for (k, _) in self.iter() {
            if let Some(other) = k.conflicts.filter(|o| self.get(o).is_some()) {
                return Err(format!("{} and {other} are exclusive: pick one", k.key));
            }
            if let Some(other) = k.requires.filter(|o| self.get(o).is_none()) {
                return Err(format!("{} needs {other}", k.key));
            }
        }
        let mut spec = pb::BreakerSpec::default();
        for (k, v) in self.iter() {
            k.set(&mut spec, v)?;
        }
        Ok(spec)
    }

    /// Every knob set in a wire spec (the fallback always: unset is fail open).
    pub fn from_proto(p: &pb::BreakerSpec) -> Self {
        Self {
            values: std::array::from_fn(|i| KNOBS[i].get(p)),
        }
    }

    /// `(key, value)` in TOML value syntax (`("failure_rate", "50")`,
    /// `("open_duration", "\"30s\"")`): `cbctl get`'s spec lines, valid apply-file
    /// lines.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        self.iter().map(|(k, v)| (k.key, v.to_toml())).collect()
    }

    /// The spec as `-o json` shows it: the proto's field names and nesting
    /// (`"count_window": {"calls": 20}`), durations as `"30s"`, enum value names.
    pub fn json(&self) -> SpecJson {
        let mut fields: Vec<(&'static str, JsonField)> = Vec::new();
        for (k, v) in self.iter() {
            let value = v.to_json();
            match k.proto.split_once('.') {
                None => fields.push((k.proto, JsonField::Scalar(value))),
                Some((outer, inner)) => match fields.last_mut() {
                    Some((name, JsonField::Nested(nested))) if *name == outer => {
                        nested.push((inner, value));
                    }
                    _ => fields.push((outer, JsonField::Nested(vec![(inner, value)]))),
                },
            }
        }
        SpecJson(fields)
    }
}

/// A spec in `-o json` output; see [`SpecFields::json`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecJson(Vec<(&'static str, JsonField)>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum JsonField {
    Scalar(JsonScalar),
    Nested(Vec<(&'static str, JsonScalar)>),
}

impl From<&pb::BreakerSpec> for SpecJson {
    fn from(p: &pb::BreakerSpec) -> Self {
        SpecFields::from_proto(p).json()
    }
}

impl Serialize for SpecJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Nested<'a>(&'a [(&'static str, JsonScalar)]);
        impl Serialize for Nested<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            match v {
                JsonField::Scalar(v) => map.serialize_entry(k, v)?,
                JsonField::Nested(n) => map.serialize_entry(k, &Nested(n))?,
            }
        }
        map.end()
    }
}

/// The keys and their values as written in files: numbers, duration strings
/// (`"30s"`), fallback names (`"local"`).
impl Serialize for SpecFields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.iter() {
            match v {
                Value::Count(n) => map.serialize_entry(k.key, &n)?,
                Value::Duration(d) => {
                    map.serialize_entry(k.key, &humantime::format_duration(d).to_string())?;
                }
                Value::Fallback(f) => map.serialize_entry(k.key, fallback_name(f))?,
                Value::Flag(on) => map.serialize_entry(k.key, &on)?,
            }
        }
        map.end()
    }
}

/// A map of keys; an unknown key, a key given twice or a value of the wrong type is
/// an error naming the key.
impl<'de> Deserialize<'de> for SpecFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // As a struct, so that `#[serde(flatten)]` into a table with other keys (a
        // `[[template]]`'s `prefix`) hands over only the spec keys.
        d.deserialize_struct("SpecFields", &KEYS, FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = SpecFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of spec keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecFields, A::Error> {
        let mut fields = SpecFields::default();
        while let Some(key) = map.next_key::<String>()? {
            let Some(k) = knob(&key) else {
                return Err(de::Error::unknown_field(&key, &KEYS));
            };
            if fields.get(k.key).is_some() {
                return Err(de::Error::duplicate_field(k.key));
            }
            let named = |e: A::Error| de::Error::custom(format!("{}: {e}", k.key));
            let value = match k.kind {
                Kind::Count(..) | Kind::Percent(..) => {
                    Value::Count(map.next_value::<u32>().map_err(named)?)
                }
                Kind::Flag(..) => Value::Flag(map.next_value::<bool>().map_err(named)?),
                Kind::Duration(..) => {
                    let text = map.next_value::<String>().map_err(named)?;
                    k.parse(&text)
                        .map_err(|e| de::Error::custom(format!("{}: {e}", k.key)))?
                }
                Kind::Fallback => {
                    let text = map.next_value::<String>().map_err(named)?;
                    let names: Vec<&'static str> = FALLBACKS.iter().map(|(n, _, _)| *n).collect();
                    let f = fallback_named(&text).ok_or_else(|| {
                        de::Error::custom(format!(
                            "{}: unknown variant `{text}`, expected one of {}",
                            k.key,
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    Value::Fallback(f)
                }
            };
            fields.set(k.key, value).map_err(de::Error::custom)?;
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests;
