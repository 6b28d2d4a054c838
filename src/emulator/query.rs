//! Raw query-string parsing that keeps repeated keys (`propKeys=a&propKeys=b`), which
//! serde-based extractors cannot.

/// The `(key, value)` pairs of a query string, percent- and `+`-decoded, in order.
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Every value of `key`.
pub fn values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The last value of `key`.
pub fn last(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_repeated_keys_and_decodes() {
        let p = pairs(Some("props=1&propKeys=a%20b&propKeys=c+d&x&bad=%zz&end=%4"));
        assert_eq!(values(&p, "propKeys"), ["a b", "c d"]);
        assert_eq!(last(&p, "props").as_deref(), Some("1"));
        assert_eq!(last(&p, "x").as_deref(), Some(""));
        assert_eq!(last(&p, "bad").as_deref(), Some("%zz"));
        assert_eq!(last(&p, "end").as_deref(), Some("%4"));
        assert!(pairs(None).is_empty());
    }
}
