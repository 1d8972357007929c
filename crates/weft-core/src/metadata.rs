//! Run metadata: the string keys and values a start request may carry to
//! find runs by later (`GET /v1/runs?meta.customer=42`), like Temporal's
//! search attributes and Hatchet's additional metadata, and their bounds.
//! Values under sensitive keys are redacted like any other data
//! ([`crate::redact::Redactor::is_sensitive`]).

use std::collections::BTreeMap;

/// A run's metadata: key → value, in key order.
pub type Metadata = BTreeMap<String, String>;

/// Most keys one run carries.
pub const MAX_KEYS: usize = 16;
/// Longest key, in characters (ASCII only, see [`KEY_PATTERN`]).
pub const MAX_KEY_LEN: usize = 64;
/// Longest value, in characters (at most 1 KiB of UTF-8).
pub const MAX_VALUE_LEN: usize = 256;
/// What a key looks like: a letter, digit or `_`, then letters, digits,
/// `_`, `.` and `-`, 1 to [`MAX_KEY_LEN`] characters in all.
pub const KEY_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$";
/// What a value looks like: no control characters (C0, DEL, C1) and no
/// bidirectional formatting characters, which would make a value shown in
/// the dashboard or a CLI table read as something else.
pub const VALUE_PATTERN: &str =
    "^[^\\u0000-\\u001F\\u007F-\\u009F\\u061C\\u200E\\u200F\\u202A-\\u202E\\u2066-\\u2069]*$";

/// Whether `c` is a bidirectional formatting character (the Unicode
/// `Bidi_Control` property): ALM, LRM, RLM, the embeddings and overrides
/// and the isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why a key, a value or a whole map is refused: a sentence for the
/// caller, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub String);

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetadataError {}

/// Checks one key against [`KEY_PATTERN`].
pub fn check_key(key: &str) -> Result<(), MetadataError> {
    let mut bytes = key.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !first_ok || !rest_ok || key.len() > MAX_KEY_LEN {
        return Err(MetadataError(format!(
            "metadata key `{}` must be 1 to {MAX_KEY_LEN} letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
            key.escape_default()
        )));
    }
    Ok(())
}

/// Checks one value: at most [`MAX_VALUE_LEN`] characters, none a control
/// character.
pub fn check_value(key: &str, value: &str) -> Result<(), MetadataError> {
    let len = value.chars().count();
    if len > MAX_VALUE_LEN {
        return Err(MetadataError(format!(
            "metadata `{key}` must be at most {MAX_VALUE_LEN} characters (has {len})"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(MetadataError(format!(
            "metadata `{key}` must not contain control characters"
        )));
    }
    if value.chars().any(is_bidi_control) {
        return Err(MetadataError(format!(
            "metadata `{key}` must not contain bidirectional formatting characters"
        )));
    }
    Ok(())
}

/// Checks a whole map: at most [`MAX_KEYS`] keys, each key and value valid.
pub fn check(metadata: &Metadata) -> Result<(), MetadataError> {
    if metadata.len() > MAX_KEYS {
        return Err(MetadataError(format!(
            "metadata has {} keys, at most {MAX_KEYS} are allowed",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        check_key(key)?;
        check_value(key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_pattern() {
        for good in [
            "customer",
            "a",
            "_x",
            "order.id",
            "region-eu",
            "0",
            &"k".repeat(64),
        ] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        for bad in ["", ".a", "-a", "a b", "a=b", "ключ", "a&b", &"k".repeat(65)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_bounded_in_characters_and_free_of_control_characters() {
        assert_eq!(check_value("k", ""), Ok(()));
        assert_eq!(check_value("k", &"é".repeat(256)), Ok(()));
        assert!(check_value("k", &"a".repeat(257)).is_err());
        assert!(check_value("k", "a\nb").is_err());
        assert!(check_value("k", "a\u{85}b").is_err());
        assert_eq!(check_value("k", "日本語 עברית"), Ok(()));
        for bidi in ['\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}'] {
            assert!(
                check_value("k", &format!("inv{bidi}fdp.exe")).is_err(),
                "{bidi:?}"
            );
        }
    }

    #[test]
    fn a_map_holds_at_most_sixteen_keys() {
        let map: Metadata = (0..16).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(check(&map), Ok(()));
        let mut over = map;
        over.insert("k16".into(), "v".into());
        assert!(check(&over).unwrap_err().0.contains("17 keys"));
    }
}
