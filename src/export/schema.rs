//! From the CSV header to the Arrow schema: de-duplicated column names and their types.
//!
//! Rules (documented in README/DESIGN and tested):
//! - A repeated name keeps its data under a new name: the k-th occurrence of `x` becomes
//!   `x_k` (k = 2, 3, ...; the smallest k not already a column name). Amplitude repeats
//!   `amplitude_id` as the last column when properties are asked for, which becomes
//!   `amplitude_id_2`. Nothing is dropped, so a difference between the two is visible.
//! - Types: a declared type (by final name) wins; otherwise every column whose header
//!   name is `amplitude_id` is `Int64`, everything else `Utf8`.
//! - Nullability: the first `amplitude_id` is required (an empty one is a bad row); every
//!   other column is nullable and an empty field is null (CSV cannot tell `""` from
//!   nothing, and Amplitude writes unset properties and missing user ids as empty).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::options::ColumnType;

/// The column every cohort file starts with.
pub const AMPLITUDE_ID: &str = "amplitude_id";

/// One output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    /// An empty field is a bad row instead of null.
    pub required: bool,
}

/// The columns of a file, in header order.
#[derive(Debug, Clone)]
pub struct Columns {
    pub specs: Vec<ColumnSpec>,
    pub schema: SchemaRef,
}

/// Builds the columns from the header's names. Fails when a declared type names a
/// column the header does not have (a typo would otherwise go unnoticed).
pub fn columns_from_header(
    header: &[String],
    declared: &BTreeMap<String, ColumnType>,
) -> Result<Columns, String> {
    if header.is_empty() {
        return Err("the header row has no columns".into());
    }
    let names = dedupe(header);
    for name in declared.keys() {
        if !names.contains(name) {
            return Err(format!(
                "a type is declared for column {name:?}, which the header does not have (columns: {})",
                names.join(", ")
            ));
        }
    }
    let mut seen_amplitude_id = false;
    let specs: Vec<ColumnSpec> = header
        .iter()
        .zip(names)
        .map(|(original, name)| {
            let is_amp = original == AMPLITUDE_ID;
            let required = is_amp && !seen_amplitude_id;
            seen_amplitude_id |= is_amp;
            let ty = match declared.get(&name) {
                Some(t) => *t,
                None if is_amp => ColumnType::Int64,
                None => ColumnType::Utf8,
            };
            ColumnSpec { name, ty, required }
        })
        .collect();
    let fields: Vec<Field> = specs
        .iter()
        .map(|s| Field::new(&s.name, arrow_type(s.ty), !s.required))
        .collect();
    Ok(Columns {
        specs,
        schema: Arc::new(Schema::new(fields)),
    })
}

fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Utf8 => DataType::Utf8,
    }
}

/// Renames repeated names deterministically (see the module doc), in time linear in the
/// header: each name remembers the next suffix to try, and a suffix is only ever skipped
/// because a name taken (or written) in the header already holds it, so the attempts
/// add up to at most twice the number of columns.
fn dedupe(header: &[String]) -> Vec<String> {
    let originals: HashSet<&str> = header.iter().map(String::as_str).collect();
    let mut used: HashSet<String> = HashSet::with_capacity(header.len());
    let mut next_suffix: HashMap<&str, u64> = HashMap::new();
    let mut out = Vec::with_capacity(header.len());
    for name in header {
        if used.insert(name.clone()) {
            out.push(name.clone());
            continue;
        }
        let k = next_suffix.entry(name.as_str()).or_insert(2);
        loop {
            let candidate = format!("{name}_{k}");
            *k += 1;
            if !originals.contains(candidate.as_str()) && used.insert(candidate.clone()) {
                out.push(candidate);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &[&str]) -> Vec<String> {
        dedupe(&h.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn repeated_names_get_a_suffix() {
        assert_eq!(
            names(&["amplitude_id", "user_id", "p", "amplitude_id"]),
            ["amplitude_id", "user_id", "p", "amplitude_id_2"]
        );
        assert_eq!(names(&["a", "a", "a_2", "a"]), ["a", "a_3", "a_2", "a_4"]);
        assert_eq!(
            names(&["a", "a_2", "a", "a_2", "a"]),
            ["a", "a_2", "a_3", "a_2_2", "a_4"]
        );
    }

    /// 30,000 copies of one name (a hostile header): every copy gets the next free suffix
    /// (the renaming remembers where it stopped, so this is linear, not quadratic).
    #[test]
    fn many_copies_of_one_name_are_renamed_in_order() {
        let header: Vec<String> = (0..30_000).map(|_| "x".to_string()).collect();
        let got = dedupe(&header);
        assert_eq!(got.len(), 30_000);
        assert_eq!(got[0], "x");
        for (i, name) in got.iter().enumerate().skip(1) {
            assert_eq!(name, &format!("x_{}", i + 1));
        }
        // Copies mixed with names that already hold suffixes: all distinct, in order.
        let mut header: Vec<String> = (0..10_000).map(|_| "y".to_string()).collect();
        header.extend((2..5_000).map(|k| format!("y_{k}")));
        let got = dedupe(&header);
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len());
        assert_eq!(got[1], "y_5000");
        assert_eq!(got[10_000], "y_2");
    }

    #[test]
    fn types_and_nullability() {
        let header: Vec<String> = ["amplitude_id", "user_id", "n", "amplitude_id"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut declared = BTreeMap::new();
        declared.insert("n".to_string(), ColumnType::Float64);
        let cols = columns_from_header(&header, &declared).expect("columns");
        let s = &cols.schema;
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert!(!s.field(0).is_nullable());
        assert_eq!(s.field(1).data_type(), &DataType::Utf8);
        assert_eq!(s.field(2).data_type(), &DataType::Float64);
        assert_eq!(s.field(3).name(), "amplitude_id_2");
        assert_eq!(s.field(3).data_type(), &DataType::Int64);
        assert!(s.field(3).is_nullable());
        declared.insert("nope".to_string(), ColumnType::Int64);
        assert!(columns_from_header(&header, &declared).is_err());
    }
}
