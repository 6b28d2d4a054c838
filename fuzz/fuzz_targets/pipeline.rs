#![no_main]
//! Fuzz target `pipeline`: see `fuzz/entries.rs`.

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::pipeline(data));
