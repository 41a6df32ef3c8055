//! JSON helpers shared by both dialects and the HTTP side: raw fields read
//! without copying, strings and numbers written without going through `fmt`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The string inside a raw JSON value, if it is a string.
pub fn string_value(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// The fields of a body object, each still raw. `None` when the body is
/// missing or not an object.
pub fn object_fields<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Option<T> {
    let raw = data?;
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

/// Appends `n` in decimal without going through `fmt`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_strings() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 1500, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        out.clear();
        push_json_string(&mut out, "a\"b\\\n");
        assert_eq!(out, br#""a\"b\\\n""#);
    }

    #[test]
    fn raw_fields() {
        let raw: Box<RawValue> = serde_json::from_str(r#""p\u0069ng""#).unwrap();
        assert_eq!(string_value(&raw).as_deref(), Some("ping"));
        let raw: Box<RawValue> = serde_json::from_str("7").unwrap();
        assert_eq!(string_value(&raw), None);
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(borrow, default)]
            a: Option<&'a RawValue>,
        }
        let obj: Box<RawValue> = serde_json::from_str(r#"{"a":[1],"b":2}"#).unwrap();
        let f: Fields<'_> = object_fields(Some(&obj)).unwrap();
        assert_eq!(f.a.map(RawValue::get), Some("[1]"));
        let arr: Box<RawValue> = serde_json::from_str("[1]").unwrap();
        assert!(object_fields::<Fields<'_>>(Some(&arr)).is_none());
        assert!(object_fields::<Fields<'_>>(None).is_none());
    }
}
