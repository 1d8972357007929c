//! Redaction of sensitive values wherever Weft shows data outside the store:
//! logs, the dashboard, API echoes, span attributes and events. One rule,
//! used everywhere: a value under a key that looks sensitive becomes
//! `"[redacted]"`, at any depth.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// Key fragments that mark a value as sensitive, matched case-insensitively
/// anywhere in the key (`db_password`, `X-Api-Key`, `refresh_token`).
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "credential",
    "private_key",
];

/// The keys to redact: the defaults plus extra ones (e.g. from `WEFT_REDACT_KEYS`).
#[derive(Debug, Clone)]
pub struct Redactor {
    fragments: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Redactor {
    pub fn new(extra: &[String]) -> Self {
        let mut fragments: Vec<String> = DEFAULT_KEYS.iter().map(|k| (*k).to_owned()).collect();
        fragments.extend(
            extra
                .iter()
                .map(|k| k.trim().to_ascii_lowercase())
                .filter(|k| !k.is_empty()),
        );
        Self { fragments }
    }

    /// Parses a comma-separated list of extra keys.
    pub fn from_list(list: &str) -> Self {
        let extra: Vec<String> = list.split(',').map(str::to_owned).collect();
        Self::new(&extra)
    }

    pub fn is_sensitive(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.fragments
            .iter()
            .any(|fragment| key.contains(fragment.as_str()))
    }

    /// A copy of `value` with every sensitive key's value replaced.
    pub fn redact(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, inner)| {
                        let shown = if self.is_sensitive(key) {
                            Value::String(REDACTED.to_owned())
                        } else {
                            self.redact(inner)
                        };
                        (key.clone(), shown)
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.redact(item)).collect())
            }
            other => other.clone(),
        }
    }

    /// The values found under sensitive keys anywhere in `value` (every
    /// string and number beneath such a key, at any depth), longest first,
    /// without duplicates and without values shorter than
    /// [`MIN_MASKED_CHARS`] characters.
    pub fn secrets(&self, value: &Value) -> Vec<String> {
        fn leaves(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::String(text) => out.push(text.clone()),
                Value::Number(number) => out.push(number.to_string()),
                Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
                Value::Object(map) => map.values().for_each(|inner| leaves(inner, out)),
                Value::Bool(_) | Value::Null => {}
            }
        }
        fn walk(redactor: &Redactor, value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    for (key, inner) in map {
                        if redactor.is_sensitive(key) {
                            leaves(inner, out);
                        } else {
                            walk(redactor, inner, out);
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|item| walk(redactor, item, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(self, value, &mut found);
        found.retain(|secret| secret.chars().count() >= MIN_MASKED_CHARS);
        // Longest first, so a secret that contains another is masked whole.
        found.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        found.dedup();
        found
    }

    /// `text` with every value found under a sensitive key of `input` (see
    /// [`Redactor::secrets`]) replaced by `"[redacted]"` wherever it occurs:
    /// the free-text side of the one rule, for error messages and log lines
    /// that may quote a run's input.
    pub fn mask_text(&self, text: &str, input: &Value) -> String {
        mask_secrets(text, &self.secrets(input))
    }
}

/// Values shorter than this many characters are not masked in free text: a
/// one- or two-character value would blank out unrelated words and numbers.
pub const MIN_MASKED_CHARS: usize = 3;

/// `text` with each of `secrets` replaced by `"[redacted]"` wherever it
/// occurs, in one pass (the longest secret wins where several match at one
/// place; a replacement is never searched again).
pub fn mask_secrets(text: &str, secrets: &[String]) -> String {
    let secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return text.to_owned();
    }
    match aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .build(&secrets)
    {
        Ok(matcher) => matcher.replace_all(text, &vec![REDACTED; secrets.len()]),
        // Only a pathological pattern set is refused: hide the whole text.
        Err(_) => REDACTED.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_at_any_depth_and_keeps_the_rest() {
        let redactor = Redactor::from_list("ssn, card_number");
        let input = json!({
            "user": "ada",
            "Password": "hunter2",
            "nested": {"api_key": "k", "list": [{"refresh_token": "t", "ok": 1}], "Authorization": "Bearer x"},
            "ssn": "123",
            "card_number": 4111,
            "tokens_used": 5
        });
        let expected = json!({
            "user": "ada",
            "Password": "[redacted]",
            "nested": {"api_key": "[redacted]", "list": [{"refresh_token": "[redacted]", "ok": 1}], "Authorization": "[redacted]"},
            "ssn": "[redacted]",
            "card_number": "[redacted]",
            "tokens_used": "[redacted]"
        });
        assert_eq!(redactor.redact(&input), expected);
        assert_eq!(
            Redactor::default().redact(&json!([1, "password"])),
            json!([1, "password"])
        );
    }

    #[test]
    fn masks_secret_values_wherever_they_appear_in_free_text() {
        let redactor = Redactor::from_list("ssn");
        let input = json!({
            "user": "ada",
            "db_password": "hunter2",
            "nested": [{"api_key": "sk-live-123", "ok": "visible"}],
            "credentials": {"deep": ["abcdef", 987654]},
            "ssn": "12",
            "token_prefix": "sk-live"
        });
        let text = "connect ada:hunter2@db failed; key sk-live-123 (prefix sk-live) and abcdef/987654 rejected; ok=visible ssn=12";
        assert_eq!(
            redactor.mask_text(text, &input),
            "connect ada:[redacted]@db failed; key [redacted] (prefix [redacted]) and [redacted]/[redacted] rejected; ok=visible ssn=12"
        );
        assert_eq!(
            redactor.secrets(&input),
            vec!["sk-live-123", "hunter2", "sk-live", "987654", "abcdef"]
        );
        // A secret that is part of the replacement text is not masked into it.
        assert_eq!(
            mask_secrets("act now", &["act".to_owned(), "now".to_owned()]),
            "[redacted] [redacted]"
        );
        // No secrets, or none in the text: unchanged.
        assert_eq!(redactor.mask_text("plain", &json!({"x": 1})), "plain");
        assert_eq!(redactor.mask_text("plain", &Value::Null), "plain");
    }
}
