//! Masking secrets inside free text (error messages, log lines, event data):
//! a set of literal secret values, matched with aho-corasick, and a set of
//! regular expressions, matched with `regex`, every match replaced by
//! `"[redacted]"`. Matches are found on the original text and merged before
//! anything is replaced, so overlapping secrets are masked whole and a
//! replacement is never searched again.

use std::{borrow::Cow, sync::Arc};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};
use serde_json::Value;

/// What a masked value or stretch of text becomes.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this many characters are not masked in free text: a
/// short value would blank out unrelated words and numbers.
pub const MIN_MASKED_CHARS: usize = 6;

/// The free-text patterns always applied, before any configured ones. Where
/// a pattern has a capture group named `secret`, only that group is masked
/// (`password=[redacted]` keeps the key, so a reader still sees what was
/// hidden); otherwise the whole match is.
pub const DEFAULT_PATTERNS: &[&str] = &[
    // `Authorization: Bearer <token>` and the like.
    r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
    r"(?i)\bauthorization\s*[:=]\s*basic\s+(?P<secret>[A-Za-z0-9+/]{4,}=*)",
    // `password=…`, `db_passwd: …`, `secret=…`, `token=…`, `api_key=…`,
    // also JSON-ish (`"password": "…"`, escaped `\"password\": \"…\"`).
    r#"(?i)[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key)[A-Za-z0-9_.\-]*(?:\\?")?\s*[=:]\s*(?:\\?")?(?P<secret>[^\s"'\\,;&}\]]+)"#,
    // Weft's own API tokens, `weft_<id>_<secret>`: a digit somewhere tells
    // a random token from a metric name such as `weft_worker_polls_total`.
    r"\bweft_(?:[A-Za-z0-9]*[0-9][A-Za-z0-9]*_[A-Za-z0-9_\-]{16,}|[A-Za-z0-9]{4,}_[A-Za-z0-9_\-]*[0-9][A-Za-z0-9_\-]*)",
    // The password of a database or broker URL, `scheme://user:pass@host`.
    r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?)://[^\s:/@]*:(?P<secret>[^\s@/]+)@",
];

/// A free-text pattern that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("redaction pattern `{pattern}` is not a valid regular expression: {source}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// Why `regex` refused it.
    #[source]
    pub source: regex::Error,
}

/// Regular expressions compiled once (at startup) and shared by every
/// [`TextMasker`]: a `RegexSet` tells which patterns match a text at all, so
/// only those are run for their positions.
#[derive(Debug)]
pub struct Patterns {
    set: RegexSet,
    regexes: Vec<(Regex, Option<usize>)>,
}

impl Patterns {
    /// [`DEFAULT_PATTERNS`] followed by `extra` (blank entries ignored).
    pub fn with_defaults(extra: &[String]) -> Result<Self, PatternError> {
        let all: Vec<String> = DEFAULT_PATTERNS
            .iter()
            .map(|p| (*p).to_owned())
            .chain(
                extra
                    .iter()
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty()),
            )
            .collect();
        let mut regexes = Vec::with_capacity(all.len());
        for pattern in &all {
            let regex = Regex::new(pattern).map_err(|source| PatternError {
                pattern: pattern.clone(),
                source,
            })?;
            let group = regex.capture_names().position(|n| n == Some("secret"));
            regexes.push((regex, group));
        }
        let set = RegexSet::new(&all).map_err(|source| PatternError {
            pattern: all.join(" | "),
            source,
        })?;
        Ok(Self { set, regexes })
    }

    /// The patterns as written.
    pub fn as_strs(&self) -> impl Iterator<Item = &str> {
        self.regexes.iter().map(|(r, _)| r.as_str())
    }

    fn ranges(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        for index in self.set.matches(text).iter() {
            let (regex, group) = &self.regexes[index];
            match group {
                Some(group) => out.extend(
                    regex
                        .captures_iter(text)
                        .filter_map(|c| c.get(*group))
                        .map(|m| (m.start(), m.end())),
                ),
                None => out.extend(regex.find_iter(text).map(|m| (m.start(), m.end()))),
            }
        }
    }
}

/// Masks free text for one run (or one view of several runs): the secret
/// values found in its data, as literals, and the shared [`Patterns`]. Built
/// once per view; [`TextMasker::mask`] is then one pass per text.
#[derive(Debug, Clone)]
pub struct TextMasker {
    literals: Option<Arc<AhoCorasick>>,
    patterns: Arc<Patterns>,
}

impl TextMasker {
    /// A masker for `secrets` (taken as given: the caller filters short
    /// values) and each one's JSON-escaped forms, plus `patterns`.
    pub fn new(secrets: &[String], patterns: Arc<Patterns>) -> Self {
        let mut literals: Vec<String> = Vec::with_capacity(secrets.len());
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            // The value as written, and as it appears inside JSON text once
            // or twice escaped (an error message quoting a JSON document
            // that quotes the value).
            let once = escaped(secret);
            let twice = escaped(&once);
            literals.push(secret.clone());
            literals.push(once);
            literals.push(twice);
        }
        literals.sort();
        literals.dedup();
        let literals = if literals.is_empty() {
            None
        } else {
            // Standard semantics, searched for overlapping matches: every
            // occurrence of every secret is found, and the ranges merged.
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&literals)
                .ok()
                .map(Arc::new)
        };
        Self { literals, patterns }
    }

    /// A masker with the patterns alone, for text no run's data reaches.
    pub fn patterns_only(patterns: Arc<Patterns>) -> Self {
        Self::new(&[], patterns)
    }

    /// `text` with every secret and every pattern match replaced by
    /// `"[redacted]"`; overlapping and adjacent matches become one
    /// replacement. Borrowed when nothing matched.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut ranges = Vec::new();
        if let Some(literals) = &self.literals {
            ranges.extend(
                literals
                    .find_overlapping_iter(text)
                    .map(|m| (m.start(), m.end())),
            );
        }
        self.patterns.ranges(text, &mut ranges);
        ranges.retain(|(start, end)| start < end);
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut iter = ranges.into_iter().peekable();
        while let Some((start, mut end)) = iter.next() {
            while let Some(&(next_start, next_end)) = iter.peek() {
                if next_start > end {
                    break;
                }
                end = end.max(next_end);
                iter.next();
            }
            // Both ends fall on character boundaries: aho-corasick matches
            // whole UTF-8 literals and `regex` matches on characters.
            out.push_str(&text[copied..start.max(copied)]);
            out.push_str(REDACTED);
            copied = copied.max(end);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// Like [`TextMasker::mask`], into an owned string.
    pub fn mask_owned(&self, text: String) -> String {
        match self.mask(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => masked,
        }
    }

    /// `value` with every string masked as text, at any depth, and every
    /// number whose text holds a secret replaced by `"[redacted]"`. Keys are
    /// kept (they name fields, not values).
    pub fn mask_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                if let Cow::Owned(masked) = self.mask(text) {
                    *text = masked;
                }
            }
            Value::Number(number) => {
                if let Cow::Owned(_) = self.mask(&number.to_string()) {
                    *value = Value::String(REDACTED.to_owned());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.mask_value(item)),
            Value::Object(map) => map.values_mut().for_each(|inner| self.mask_value(inner)),
            Value::Bool(_) | Value::Null => {}
        }
    }
}

/// `text` as it appears between the quotes of a JSON string.
fn escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn masker(secrets: &[&str], extra: &[&str]) -> TextMasker {
        let extra: Vec<String> = extra.iter().map(|p| (*p).to_owned()).collect();
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        TextMasker::new(&secrets, Arc::new(Patterns::with_defaults(&extra).unwrap()))
    }

    fn check(masker: &TextMasker, text: &str, expected: &str) {
        assert_eq!(masker.mask(text), expected, "masking {text:?}");
    }

    #[test]
    fn literals_and_their_escaped_forms() {
        let m = masker(&["hunter2-SECRET", r#"a"b\c-long"#], &[]);
        check(
            &m,
            "cannot charge with hunter2-SECRET!",
            "cannot charge with [redacted]!",
        );
        // Raw, once escaped (inside JSON text) and twice escaped.
        check(&m, r#"got a"b\c-long"#, "got [redacted]");
        check(&m, r#"{"x":"a\"b\\c-long"}"#, r#"{"x":"[redacted]"}"#);
        check(
            &m,
            r#"{"e":"{\"x\":\"a\\\"b\\\\c-long\"}"}"#,
            r#"{"e":"{\"x\":\"[redacted]\"}"}"#,
        );
        check(&m, "nothing here", "nothing here");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn default_patterns() {
        let m = masker(&[], &[]);
        check(
            &m,
            "Authorization: Bearer abc.def-123",
            "Authorization: Bearer [redacted]",
        );
        check(
            &m,
            "login password=hunter2 user=ann",
            "login password=[redacted] user=ann",
        );
        check(&m, "db_passwd: s3cr3t, next", "db_passwd: [redacted], next");
        check(
            &m,
            "SECRET=xyz&token=t0k3n",
            "SECRET=[redacted]&token=[redacted]",
        );
        check(
            &m,
            "call with api_key=AKIA123 failed",
            "call with api_key=[redacted] failed",
        );
        check(
            &m,
            r#"{"password": "pw-1", "user": "ann"}"#,
            r#"{"password": "[redacted]", "user": "ann"}"#,
        );
        check(
            &m,
            r#"{\"password\":\"pw-1\"}"#,
            r#"{\"password\":\"[redacted]\"}"#,
        );
        check(
            &m,
            "connect postgres://weft:pa55@db:5432/weft failed",
            "connect postgres://weft:[redacted]@db:5432/weft failed",
        );
        check(
            &m,
            "sent weft_a1b2c3d4_Zx9-Qw8_Er7Ty6Ui5Op4 to the server",
            "sent [redacted] to the server",
        );
        // Weft's own metric names are not tokens.
        for name in [
            "weft_runs_stalled_total",
            "weft_attempt_timing_seconds_bucket",
        ] {
            check(&m, &format!("{name} rose"), &format!("{name} rose"));
        }
        check(
            &m,
            "Authorization: Basic dXNlcjpwYXNz",
            "Authorization: Basic [redacted]",
        );
        check(
            &m,
            "step failed: timeout after 5s",
            "step failed: timeout after 5s",
        );
        check(&m, "basic validation failed", "basic validation failed");
    }

    #[test]
    fn configured_patterns_add_to_the_defaults() {
        let m = masker(
            &[],
            &[r"\b\d{3}-\d{2}-\d{4}\b", r"card (?P<secret>\d{4} \d{4})"],
        );
        check(
            &m,
            "ssn 123-45-6789 and card 4111 1111",
            "ssn [redacted] and card [redacted]",
        );
        check(&m, "password=x", "password=[redacted]");
        let err = Patterns::with_defaults(&["(unclosed".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("(unclosed"), "{err}");
    }

    #[test]
    fn overlapping_and_adjacent_matches_are_masked_once() {
        // Two literals overlapping, one containing another, and a pattern
        // match overlapping a literal.
        let m = masker(&["abcdef", "defghi", "xyz123456", "123456"], &[]);
        check(&m, "--abcdefghi--", "--[redacted]--");
        check(&m, "xyz123456 and 123456", "[redacted] and [redacted]");
        check(&m, "abcdefabcdef", "[redacted]");
        check(&m, "token=zzabcdefzz ok", "token=[redacted] ok");
        check(&m, "abcdef", "[redacted]");
    }

    #[test]
    fn utf8_text_and_secrets_keep_their_boundaries() {
        let m = masker(&["пароль-секрет", "ключ🔑ключ"], &[]);
        check(
            &m,
            "ошибка: пароль-секрет — нет",
            "ошибка: [redacted] — нет",
        );
        check(&m, "é ключ🔑ключ é", "é [redacted] é");
        check(&m, "password=пароль€ ok", "password=[redacted] ok");
        // An escaped form of a non-ASCII secret is the secret itself (JSON
        // leaves it unescaped), so it is masked once.
        check(&m, r#"{"k":"ключ🔑ключ"}"#, r#"{"k":"[redacted]"}"#);
    }

    #[test]
    fn values_are_masked_at_any_depth() {
        let m = masker(&["hunter2-SECRET", "987654"], &[]);
        let mut value = json!({
            "note": "charged with hunter2-SECRET",
            "list": [987654, 12, {"deep": "x hunter2-SECRET y"}],
            "hunter2-SECRET": true
        });
        m.mask_value(&mut value);
        assert_eq!(
            value,
            json!({
                "note": "charged with [redacted]",
                "list": ["[redacted]", 12, {"deep": "x [redacted] y"}],
                "hunter2-SECRET": true
            })
        );
    }

    proptest::proptest! {
        /// Whatever surrounds them, every secret in a text is masked, and
        /// masking never splits a character (any text, any secrets).
        #[test]
        fn no_secret_survives_masking(
            pieces in proptest::collection::vec(("\\PC{0,12}", 0usize..3), 1..6),
            secrets in proptest::collection::vec("[0-9A-F\"\\\\é🔑]{6,10}", 1..4),
        ) {
            let mut text = String::new();
            for (filler, pick) in &pieces {
                text.push_str(filler);
                text.push_str(&secrets[pick % secrets.len()]);
            }
            let masked = masker(&secrets.iter().map(String::as_str).collect::<Vec<_>>(), &[])
                .mask(&text)
                .into_owned();
            for secret in &secrets {
                proptest::prop_assert!(
                    !masked.contains(secret.as_str()),
                    "{secret:?} survives in {masked:?} (from {text:?})"
                );
            }
        }
    }
}
