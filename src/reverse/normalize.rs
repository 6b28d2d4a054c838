//! Turns a raw id value into the form that is compared and sent: surrounding whitespace
//! trimmed, blanks set aside, and an `amplitude_id` checked to be a positive 64-bit
//! integer (what Amplitude ids are: 1..=9223372036854775807) and written without leading
//! zeros (so `007` in a CRM export matches Amplitude's `7`).

use crate::amplitude::types::IdKind;

/// Why a value cannot be used as an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    NotUtf8,
    NotAnInteger,
    /// An integer, but zero, negative or past `i64::MAX`.
    OutOfRange,
}

/// `i64::MAX`, the largest Amplitude id.
const MAX_ID: &[u8] = b"9223372036854775807";

/// `Ok(None)` for a blank value, `Ok(Some(id))` for a usable one.
#[inline]
pub fn normalize(raw: &[u8], kind: IdKind) -> Result<Option<&[u8]>, Invalid> {
    let mut id = raw.trim_ascii();
    if !id.is_ascii() {
        let text = std::str::from_utf8(id).map_err(|_| Invalid::NotUtf8)?;
        id = text.trim().as_bytes();
    }
    if id.is_empty() {
        return Ok(None);
    }
    if kind == IdKind::AmplitudeId {
        let (negative, digits) = match id.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, id),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Invalid::NotAnInteger);
        }
        let zeros = digits.iter().take_while(|b| **b == b'0').count();
        id = &digits[zeros..];
        // Same length: digit strings compare like their numbers.
        if negative
            || id.is_empty()
            || id.len() > MAX_ID.len()
            || (id.len() == MAX_ID.len() && id > MAX_ID)
        {
            return Err(Invalid::OutOfRange);
        }
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_trimmed_and_blanks_detected() {
        let k = IdKind::UserId;
        assert_eq!(
            normalize(b"  alice@x.com\t", k),
            Ok(Some(&b"alice@x.com"[..]))
        );
        assert_eq!(normalize(b"   ", k), Ok(None));
        assert_eq!(normalize(b"", k), Ok(None));
        assert_eq!(
            normalize("\u{a0}zoë\u{2003}".as_bytes(), k),
            Ok(Some("zoë".as_bytes()))
        );
        assert_eq!(
            normalize(b"007", k),
            Ok(Some(&b"007"[..])),
            "user ids kept as is"
        );
        assert_eq!(normalize(b"\xff\xfe", k), Err(Invalid::NotUtf8));
    }

    #[test]
    fn amplitude_ids_must_be_integers() {
        let k = IdKind::AmplitudeId;
        assert_eq!(normalize(b" 0012 ", k), Ok(Some(&b"12"[..])));
        assert_eq!(normalize(b"12.0", k), Err(Invalid::NotAnInteger));
        assert_eq!(normalize(b"abc", k), Err(Invalid::NotAnInteger));
        assert_eq!(normalize(b"-", k), Err(Invalid::NotAnInteger));
        assert_eq!(normalize(b"+3", k), Err(Invalid::NotAnInteger));
        assert_eq!(normalize(b" ", k), Ok(None));
    }

    #[test]
    fn amplitude_ids_must_be_positive_int64() {
        let k = IdKind::AmplitudeId;
        assert_eq!(
            normalize(b"9223372036854775807", k),
            Ok(Some(&b"9223372036854775807"[..]))
        );
        assert_eq!(
            normalize(b"0009223372036854775807", k),
            Ok(Some(&b"9223372036854775807"[..]))
        );
        assert_eq!(normalize(b"1", k), Ok(Some(&b"1"[..])));
        for out in [
            &b"9223372036854775808"[..],
            b"9999999999999999999",
            b"10000000000000000000",
            b"18446744073709551615",
            b"0",
            b"000",
            b"-3",
            b"-0",
        ] {
            assert_eq!(
                normalize(out, k),
                Err(Invalid::OutOfRange),
                "{}",
                String::from_utf8_lossy(out)
            );
        }
    }
}
