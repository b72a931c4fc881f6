//! PII detection in payload strings: e-mail addresses, phone numbers, payment card numbers (Luhn
//! checked), IBANs (mod-97 checked) and US social security numbers.
//!
//! Findings name the kind and the JSON pointer of the string, never the value, so they can go into
//! proofs and logs.

use std::fmt::Write as _;
use std::sync::LazyLock;

use caio_contracts::decision::PiiFinding;
use regex::Regex;

/// Strings longer than this are scanned only up to it (the request size limit bounds the total).
pub const MAX_SCAN_BYTES: usize = 64 * 1024;

struct Patterns {
    email: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    phone: Regex,
}

static PATTERNS: LazyLock<Option<Patterns>> = LazyLock::new(|| {
    Some(Patterns {
        email: Regex::new(r"(?i)\b[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*\.[a-z]{2,24}\b").ok()?,
        card: Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").ok()?,
        iban: Regex::new(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b").ok()?,
        ssn: Regex::new(r"\b(\d{3})-(\d{2})-(\d{4})\b").ok()?,
        phone: Regex::new(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}\b|\+\d{8,15}\b").ok()?,
    })
});

/// Luhn checksum over the digits of `s`.
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 || digits.len() > 19 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN mod-97 check (ISO 13616).
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 || !compact.is_ascii() {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn_valid(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// The PII kinds found in one string.
pub fn kinds_in(text: &str) -> Vec<&'static str> {
    let Some(p) = PATTERNS.as_ref() else {
        return Vec::new();
    };
    let text = truncate(text, MAX_SCAN_BYTES);
    let mut kinds = Vec::new();
    // Every kind needs an `@` or at least nine digits; most strings have neither, and this test is
    // much cheaper than the patterns.
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits < 9 && !text.contains('@') {
        return kinds;
    }
    if p.email.is_match(text) {
        kinds.push("email");
    }
    let mut card_spans = Vec::new();
    for m in p.card.find_iter(text) {
        if luhn(m.as_str()) {
            card_spans.push(m.range());
        }
    }
    if !card_spans.is_empty() {
        kinds.push("card");
    }
    if p.iban.find_iter(text).any(|m| iban_valid(m.as_str())) {
        kinds.push("iban");
    }
    // Every SSN-shaped span (valid or not) is excluded from phone detection: `ddd-dd-dddd` is not
    // how phone numbers are written.
    let mut ssn_spans = Vec::new();
    let mut ssn_found = false;
    for c in p.ssn.captures_iter(text) {
        if let (Some(m), Some(a), Some(g), Some(s)) = (c.get(0), c.get(1), c.get(2), c.get(3)) {
            ssn_spans.push(m.range());
            ssn_found |= ssn_valid(a.as_str(), g.as_str(), s.as_str());
        }
    }
    if ssn_found {
        kinds.push("us_ssn");
    }
    let phone = p.phone.find_iter(text).any(|m| {
        let digits = m.as_str().chars().filter(char::is_ascii_digit).count();
        let inside = |spans: &[std::ops::Range<usize>]| {
            spans
                .iter()
                .any(|s| s.start <= m.start() && m.end() <= s.end)
        };
        (9..=15).contains(&digits) && !inside(&card_spans) && !inside(&ssn_spans)
    });
    if phone {
        kinds.push("phone");
    }
    kinds
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Scans every string in a payload. Findings are in document order, one per (kind, path).
pub fn scan(payload: &serde_json::Value) -> Vec<PiiFinding> {
    let mut out = Vec::new();
    walk(payload, &mut String::new(), &mut out);
    out
}

fn walk(v: &serde_json::Value, path: &mut String, out: &mut Vec<PiiFinding>) {
    match v {
        serde_json::Value::String(s) => {
            for kind in kinds_in(s) {
                out.push(PiiFinding {
                    kind: kind.to_owned(),
                    path: path.clone(),
                });
            }
        }
        serde_json::Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let len = path.len();
                path.push('/');
                // Writing to a String cannot fail.
                let _ = write!(path, "{i}");
                walk(item, path, out);
                path.truncate(len);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, item) in m {
                let len = path.len();
                path.push('/');
                // JSON Pointer escapes (RFC 6901), written in place.
                for c in k.chars() {
                    match c {
                        '~' => path.push_str("~0"),
                        '/' => path.push_str("~1"),
                        c => path.push(c),
                    }
                }
                walk(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, expect: &[&str]) {
        assert_eq!(kinds_in(text), expect, "{text:?}");
    }

    #[test]
    fn detects_each_kind() {
        check("write to jane.doe@example.com today", &["email"]);
        check("card 4111 1111 1111 1111 exp 12/29", &["card"]);
        check("card 4111-1111-1111-1112", &[]); // fails Luhn
        check("IBAN DE89 3704 0044 0532 0130 00 please", &["iban"]);
        check("IBAN DE00 3704 0044 0532 0130 00", &[]); // fails mod-97
        check("ssn 123-45-6789", &["us_ssn"]);
        check("ssn 000-45-6789 or 666-12-3456", &[]);
        check("call +49 30 1234 5678", &["phone"]);
        check("call (555) 123-4567", &["phone"]);
        check("Das ist gut.", &[]);
        check("version 1.2.3 costs 12.50 on 2026-11-22", &[]);
    }

    #[test]
    fn scan_reports_paths_not_values() {
        let f = scan(&json!({"messages": [{"text": "mail me: a@b.io"}], "n": 5}));
        assert_eq!(
            f,
            vec![PiiFinding {
                kind: "email".into(),
                path: "/messages/0/text".into()
            }]
        );
    }

    /// Keys are escaped as RFC 6901 asks (`~` first, then `/`), and array indexes of several digits
    /// are written whole.
    #[test]
    fn paths_escape_keys_as_json_pointers() {
        let mut items = vec![json!("nothing here"); 12];
        items[11] = json!("or x@y.org");
        let f = scan(&json!({"a/b~c": {"~1": "mail me: a@b.io"}, "list": items}));
        let paths: Vec<&str> = f.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["/a~1b~0c/~01", "/list/11"], "{f:?}");
    }

    proptest::proptest! {
        #[test]
        fn scanning_never_panics(s in "\\PC{0,300}") {
            let _ = kinds_in(&s);
        }
    }
}
