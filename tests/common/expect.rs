//! What an output must hold, computed without the code under test: the members the
//! emulator's universe generates for a cohort, and SHA-256 of bytes as read back.

use cohort_sync::emulator::CohortSpec;
use cohort_sync::emulator::universe;
use sha2::{Digest, Sha256};

/// The digest tests/py/parquet_digest.py computes, from the emulator's universe: what a
/// download of `spec` contains, in its order, for `amplitude_id`, `user_id` and `props`.
pub fn expected_digest(spec: &CohortSpec, props: &[String]) -> String {
    let mut h = Sha256::new();
    let mut line = String::new();
    for n in universe::member_numbers(spec.seed, &spec.id, spec.size) {
        line.clear();
        line.push_str(&universe::amplitude_id(n).to_string());
        line.push('\u{1f}');
        push_opt(&mut line, universe::user_id(n));
        for p in props {
            line.push('\u{1f}');
            push_opt(&mut line, universe::property_value(n, p));
        }
        line.push('\u{1e}');
        h.update(line.as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn push_opt(line: &mut String, v: Option<String>) {
    match v {
        Some(s) => line.push_str(&s),
        None => line.push_str("\u{0}N"),
    }
}

/// The columns of an export of `spec` with its properties: amplitude_id, user_id, props.
pub fn export_columns(spec: &CohortSpec) -> Vec<String> {
    let mut columns = vec!["amplitude_id".to_string(), "user_id".to_string()];
    columns.extend(spec.props.iter().cloned());
    columns
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The amplitude ids (as text) of a generated cohort's members, in download order.
pub fn amplitude_ids(seed: u64, cohort_id: &str, size: u64) -> Vec<String> {
    universe::member_numbers(seed, cohort_id, size)
        .map(|n| universe::amplitude_id(n).to_string())
        .collect()
}
