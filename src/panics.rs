//! Panics of the Parquet and Arrow libraries on untrusted files.
//!
//! The `parquet` crate asserts on some malformed files instead of returning an error
//! (fuzzing found two: a column chunk with a negative offset — now refused before reading
//! — and page data whose definition levels overrun their buffer, which only decoding can
//! tell; both kept in `fuzz/regressions/reverse_source/`). Reading a CRM list or a snapshot
//! therefore runs inside `catch_unwind` (`reverse::parquet_ids`), which turns such a panic
//! into an error naming the file. [`install`] makes those panics quiet: a panic raised in
//! the `parquet`, `arrow-*` or `parquet-*` crates' own code is logged at debug level (the
//! error that follows says what happened); every other panic goes to the previous hook
//! as before — it is a bug of ours, and must be seen.

use std::sync::Once;

/// Whether a panic at `file` (a source path) was raised inside the Parquet/Arrow crates:
/// a path component like `parquet-60.1.0` or `arrow-buffer-60.1.0` (a crate's versioned
/// source folder).
pub fn is_decoder_location(file: &str) -> bool {
    file.split(['/', '\\']).any(|part| {
        (part.starts_with("parquet-") || part.starts_with("arrow-"))
            && part
                .rsplit('-')
                .next()
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Installs the hook once per process (later calls do nothing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_decoder = info
                .location()
                .is_some_and(|l| is_decoder_location(l.file()));
            if in_decoder {
                tracing::debug!("the Parquet reader gave up on a malformed file: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_locations() {
        assert!(is_decoder_location(
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/parquet-60.1.0/src/file/metadata/mod.rs"
        ));
        assert!(is_decoder_location(
            "/root/.cargo/registry/src/x/arrow-buffer-60.1.0/src/util/bit_chunk_iterator.rs"
        ));
        assert!(!is_decoder_location("src/reverse/parquet_ids.rs"));
        assert!(!is_decoder_location("/work/cohort-sync/src/export/csv.rs"));
        assert!(!is_decoder_location(
            "/home/me/arrow-tools/cohort-sync/src/lib.rs"
        ));
    }
}
