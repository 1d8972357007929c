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
}
