#![no_main]
//! Fuzz target `api_answers`: see `fuzz/entries.rs`.

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::api_answers(data));
