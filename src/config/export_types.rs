//! How the export module's option types ([`ColumnType`], [`BadRowPolicy`]) are written in
//! pipeline files: their `FromStr` names, with a JSON Schema listing the canonical ones.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

use crate::export::{BadRowPolicy, ColumnType};

/// Deserializes a string through `T::from_str`, failing at the value's own position.
struct FromStrVisitor<T>(PhantomData<T>);

impl<T: FromStr<Err = String>> serde::de::Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor(PhantomData))
    }
}

impl JsonSchema for ColumnType {
    fn schema_name() -> Cow<'static, str> {
        "ColumnType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Arrow/Parquet type of a cohort file column.",
            "type": "string",
            "enum": ["int64", "float64", "boolean", "utf8"]
        })
    }
}

impl<'de> Deserialize<'de> for BadRowPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor(PhantomData))
    }
}

impl JsonSchema for BadRowPolicy {
    fn schema_name() -> Cow<'static, str> {
        "BadRowPolicy".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What to do with a malformed CSV row: `fail` the cohort (nothing is published) or `skip` it (counted and sampled in the run report).",
            "type": "string",
            "enum": ["fail", "skip"]
        })
    }
}
