//! The deterministic population every cohort draws from. A member is a number `n` below
//! [`UNIVERSE_SIZE`]; its Amplitude id, user id and property values are pure functions of
//! `n`, so a test knows exactly what a download must contain without asking the emulator.

/// Amplitude ids are `AMPLITUDE_ID_BASE + n`.
pub const AMPLITUDE_ID_BASE: i64 = 100_000_000_000;
const UNIVERSE_BITS: u32 = 36;
/// How many distinct members exist (2^36).
pub const UNIVERSE_SIZE: u64 = 1 << UNIVERSE_BITS;
const MASK: u64 = UNIVERSE_SIZE - 1;

const USER_SALT: u64 = 0x5555_1234_abcd_0001;
const PROP_SALT: u64 = 0x7777_4321_dcba_0002;
const EMAIL_DOMAIN: &str = "@example.com";
const EMAIL_PREFIX: &str = "user-";
const UNICODE_PREFIX: &str = "ünï-";

/// The members of a generated cohort, in the order its CSV lists them: distinct (an odd
/// stride modulo a power of two is a bijection), spread over the universe, deterministic.
pub fn member_numbers(
    seed: u64,
    cohort_id: &str,
    size: u64,
) -> impl Iterator<Item = u64> + Clone + Send + 'static {
    let h = mix(seed ^ hash_str(cohort_id));
    let offset = h & MASK;
    let stride = (mix(h ^ 0x9e37) | 1) & MASK;
    (0..size.min(UNIVERSE_SIZE)).map(move |i| offset.wrapping_add(i.wrapping_mul(stride)) & MASK)
}

/// The Amplitude id of member `n`.
pub fn amplitude_id(n: u64) -> i64 {
    AMPLITUDE_ID_BASE + (n & MASK) as i64
}

/// Member number of an Amplitude id, `None` when the id is outside the universe.
pub fn number_for_amplitude_id(id: i64) -> Option<u64> {
    let n = id.checked_sub(AMPLITUDE_ID_BASE)?;
    (0..UNIVERSE_SIZE as i64).contains(&n).then_some(n as u64)
}

/// The user id of member `n`; about 6% of members have none. Most are e-mail-like, some
/// purely numeric, some non-ASCII.
pub fn user_id(n: u64) -> Option<String> {
    let mut out = Vec::new();
    write_user_id(n, &mut out).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// Member number of a user id, `None` for an id no member has.
pub fn number_for_user_id(id: &str) -> Option<u64> {
    let digits = if let Some(rest) = id.strip_prefix(EMAIL_PREFIX) {
        rest.strip_suffix(EMAIL_DOMAIN)?
    } else if let Some(rest) = id.strip_prefix(UNICODE_PREFIX) {
        rest
    } else {
        id
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n < UNIVERSE_SIZE && user_id(n).as_deref() == Some(id)).then_some(n)
}

/// The value of user property `prop` for member `n`; `None` (an empty cell) for about one
/// member in twelve. Values exercise CSV parsers: commas, doubled quotes, newlines,
/// carriage returns and non-ASCII text all occur.
pub fn property_value(n: u64, prop: &str) -> Option<String> {
    let mut out = Vec::new();
    write_property(n, prop, prop_hash(prop), false, &mut out)
        .then(|| String::from_utf8_lossy(&out).into_owned())
}

/// The per-property part of [`property_value`]'s hash (computed once per column).
pub(crate) fn prop_hash(prop: &str) -> u64 {
    PROP_SALT ^ hash_str(prop)
}

/// Appends the value of `prop` for member `n` (with `"` doubled when `csv_escaped`);
/// false (nothing written) when the member has no value.
pub(crate) fn write_property(
    n: u64,
    prop: &str,
    prop_hash: u64,
    csv_escaped: bool,
    out: &mut Vec<u8>,
) -> bool {
    let h = mix(n ^ prop_hash);
    let put = |out: &mut Vec<u8>, text: &str| put_text(out, text, csv_escaped);
    match h % 12 {
        0 => return false,
        1 => {
            put(out, prop);
            out.push(b' ');
            write_u64(n, out);
            out.extend_from_slice(b", with a comma");
        }
        2 => {
            put(out, "He said \"hi\" #");
            write_u64(n, out);
        }
        3 => {
            out.extend_from_slice(b"line one\nline two ");
            write_u64(n, out);
        }
        4 => {
            out.extend_from_slice("Zürich — 東京 ".as_bytes());
            write_u64(n, out);
        }
        5 => {
            put(out, "\"");
            write_u64(n, out);
            put(out, "\",\r\n\"quoted\"");
        }
        6 => write_u64(h % 1000, out),
        _ => {
            put(out, prop);
            out.push(b'-');
            write_u64(h % 97, out);
        }
    }
    true
}

/// Appends `text`, doubling quotes when `csv_escaped`.
fn put_text(out: &mut Vec<u8>, text: &str, csv_escaped: bool) {
    if !csv_escaped || memchr::memchr(b'"', text.as_bytes()).is_none() {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for &b in text.as_bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
}

/// Appends member `n`'s user id to `out`; false (nothing written) when it has none.
pub(crate) fn write_user_id(n: u64, out: &mut Vec<u8>) -> bool {
    let h = mix(n ^ USER_SALT) % 100;
    match h {
        0..6 => return false,
        6..14 => write_u64(n, out),
        14..20 => {
            out.extend_from_slice(UNICODE_PREFIX.as_bytes());
            write_u64(n, out);
        }
        _ => {
            out.extend_from_slice(EMAIL_PREFIX.as_bytes());
            write_u64(n, out);
            out.extend_from_slice(EMAIL_DOMAIN.as_bytes());
        }
    }
    true
}

/// Appends the decimal digits of `v` (faster than `write!` in the CSV hot loop).
pub(crate) fn write_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// SplitMix64 finalizer: a cheap, well-distributed 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of a string, mixed.
fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn members_are_distinct_and_deterministic() {
        let a: Vec<u64> = member_numbers(7, "c1", 50_000).collect();
        let b: Vec<u64> = member_numbers(7, "c1", 50_000).collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), a.len());
        let other: Vec<u64> = member_numbers(8, "c1", 10).collect();
        assert_ne!(&a[..10], &other[..]);
    }

    #[test]
    fn ids_round_trip() {
        let mut without_user = 0;
        for n in member_numbers(1, "rt", 20_000) {
            assert_eq!(number_for_amplitude_id(amplitude_id(n)), Some(n));
            match user_id(n) {
                Some(u) => assert_eq!(number_for_user_id(&u), Some(n), "{u}"),
                None => without_user += 1,
            }
        }
        // About 6% of members have no user id.
        assert!((800..1600).contains(&without_user), "{without_user}");
        assert_eq!(number_for_amplitude_id(AMPLITUDE_ID_BASE - 1), None);
        assert_eq!(number_for_user_id("nobody@example.com"), None);
        assert_eq!(number_for_user_id("+12"), None);
    }

    #[test]
    fn property_values_cover_the_hard_cases() {
        let values: Vec<Option<String>> = (0..500).map(|n| property_value(n, "note")).collect();
        assert!(values.iter().any(Option::is_none));
        let some: Vec<&String> = values.iter().flatten().collect();
        for needle in [",", "\"", "\n", "\r", "東"] {
            assert!(some.iter().any(|v| v.contains(needle)), "{needle:?}");
        }
    }
}
