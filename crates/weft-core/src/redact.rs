//! Redaction of sensitive values wherever Weft shows data outside the store:
//! logs, the dashboard, API echoes, span attributes and events. One rule,
//! used everywhere: a value under a key that looks sensitive becomes
//! `"[redacted]"`, at any depth; and in free text (errors, log lines, event
//! data) the values found under such keys in a run's input and step outputs,
//! and whatever the configured patterns match, become `"[redacted]"` too
//! ([`Redactor::text_masker`], built on [`crate::mask`]).

use std::sync::Arc;

use serde_json::Value;

use crate::mask::Patterns;
pub use crate::mask::{MIN_MASKED_CHARS, PatternError, REDACTED, TextMasker};

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

/// The keys to redact (the defaults plus extra ones, e.g. from
/// `WEFT_REDACT_KEYS`) and the free-text patterns (the defaults of
/// [`crate::mask::DEFAULT_PATTERNS`] plus extra ones, e.g. from
/// `WEFT_REDACT_PATTERNS`), compiled once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Redactor {
    fragments: Vec<String>,
    patterns: Arc<Patterns>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Redactor {
    /// The default keys plus `extra`, with the default patterns.
    pub fn new(extra: &[String]) -> Self {
        let mut fragments: Vec<String> = DEFAULT_KEYS.iter().map(|k| (*k).to_owned()).collect();
        fragments.extend(
            extra
                .iter()
                .map(|k| k.trim().to_ascii_lowercase())
                .filter(|k| !k.is_empty()),
        );
        let patterns =
            Arc::new(Patterns::with_defaults(&[]).expect("the default redaction patterns compile"));
        Self {
            fragments,
            patterns,
        }
    }

    /// The same keys, with the default patterns followed by `extra` (each a
    /// regular expression; a capture group named `secret` masks only that
    /// group). Fails on a pattern that does not compile.
    pub fn with_patterns(mut self, extra: &[String]) -> Result<Self, PatternError> {
        self.patterns = Arc::new(Patterns::with_defaults(extra)?);
        Ok(self)
    }

    /// The free-text patterns in force, as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.as_strs()
    }

    /// Parses a comma-separated list of extra keys.
    pub fn from_list(list: &str) -> Self {
        let extra: Vec<String> = list.split(',').map(str::to_owned).collect();
        Self::new(&extra)
    }

    /// Whether `key` names a sensitive value.
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

    /// The masker of free text for one run: the secrets of every value in
    /// `sources` (the run's input and its step outputs; see
    /// [`Redactor::secrets`]) and the patterns. Build it once per view and
    /// mask every error, log line and event of the run with it.
    pub fn text_masker<'v>(&self, sources: impl IntoIterator<Item = &'v Value>) -> TextMasker {
        let mut secrets: Vec<String> = sources
            .into_iter()
            .flat_map(|value| self.secrets(value))
            .collect();
        secrets.sort();
        secrets.dedup();
        TextMasker::new(&secrets, self.patterns.clone())
    }

    /// [`Redactor::text_masker`] over a run's state: its input and the
    /// outputs of its steps so far.
    pub fn run_masker(&self, state: &crate::machine::RunState) -> TextMasker {
        self.text_masker(
            std::iter::once(&state.input)
                .chain(state.steps.iter().filter_map(|s| s.output.as_ref())),
        )
    }

    /// The masker for text that no run's data reaches: the patterns alone.
    pub fn pattern_masker(&self) -> TextMasker {
        TextMasker::patterns_only(self.patterns.clone())
    }

    /// `text` with every value found under a sensitive key of `input` (see
    /// [`Redactor::secrets`]) and every pattern match replaced by
    /// `"[redacted]"`: the free-text side of the one rule, for a single text
    /// (build a [`Redactor::text_masker`] for many).
    pub fn mask_text(&self, text: &str, input: &Value) -> String {
        self.text_masker([input]).mask(text).into_owned()
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
            "ssn": "12345",
            "token_prefix": "sk-live"
        });
        // Values of 6 characters or more are masked wherever they occur;
        // the 5-character ssn is not.
        let text = "connect ada:hunter2@db failed; key sk-live-123 (prefix sk-live) and abcdef/987654 rejected; ok visible ssn 12345";
        assert_eq!(
            redactor.mask_text(text, &input),
            "connect ada:[redacted]@db failed; key [redacted] (prefix [redacted]) and [redacted]/[redacted] rejected; ok visible ssn 12345"
        );
        assert_eq!(
            redactor.secrets(&input),
            vec!["sk-live-123", "hunter2", "sk-live", "987654", "abcdef"]
        );
        // A secret that is part of the replacement text is not masked into it.
        let masker = crate::mask::TextMasker::new(
            &["redact".to_owned(), "now ok".to_owned()],
            redactor.patterns.clone(),
        );
        assert_eq!(masker.mask("redact now ok"), "[redacted] [redacted]");
        // No secrets, or none in the text: unchanged.
        assert_eq!(redactor.mask_text("plain", &json!({"x": 1})), "plain");
        assert_eq!(redactor.mask_text("plain", &Value::Null), "plain");
    }

    #[test]
    fn one_masker_for_the_input_and_the_step_outputs() {
        let redactor = Redactor::default()
            .with_patterns(&[r"acct-\d+".to_owned()])
            .unwrap();
        let input = json!({"password": "from-the-input"});
        let output = json!({"charge": {"api_token": "from-an-output"}, "n": 1});
        let masker = redactor.text_masker([&input, &output]);
        assert_eq!(
            masker.mask("from-the-input, from-an-output, acct-42, password=x"),
            "[redacted], [redacted], [redacted], password=[redacted]"
        );
        assert!(
            Redactor::default()
                .with_patterns(&["(".to_owned()])
                .is_err()
        );
        assert_eq!(
            Redactor::default().pattern_masker().mask("token=abc"),
            "token=[redacted]"
        );
    }
}
