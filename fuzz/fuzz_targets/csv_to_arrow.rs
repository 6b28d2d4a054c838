#![no_main]
//! Fuzz target `csv_to_arrow`: see `fuzz/entries.rs`.

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::csv_to_arrow(data));
