#![no_main]
//! Fuzz target `reverse_source`: see `fuzz/entries.rs`.

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::reverse_source(data));
