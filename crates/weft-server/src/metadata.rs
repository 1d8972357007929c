//! Run metadata on the serving side: the `meta.<key>=<value>` filters of a
//! runs query, their checks, and the redaction of a run's metadata (a value
//! under a sensitive key reads `"[redacted]"`, the one rule of
//! `weft_core::redact`).

use std::collections::BTreeMap;

use weft_core::{
    metadata::{self, Metadata},
    redact::{REDACTED, Redactor},
};

use crate::ApiError;

/// The prefix of a metadata filter in a query string (`meta.customer=42`).
pub(crate) const FILTER_PREFIX: &str = "meta.";

/// Most metadata filters in one query (one per key a run can carry).
pub(crate) const MAX_FILTERS: usize = metadata::MAX_KEYS;

/// The `meta.<key>=<value>` pairs of a raw query string, in order. A key or
/// value out of bounds is 400 `invalid_metadata`; with `redacted` (the
/// caller is shown redacted data) so is a filter on a sensitive key, which
/// would let the caller test guesses of a value it cannot read.
pub(crate) fn filters(
    raw_query: Option<&str>,
    redactor: &Redactor,
    redacted: bool,
) -> Result<Vec<(String, String)>, ApiError> {
    let invalid =
        |message: String| ApiError::bad_request(weft_core::ErrorCode::InvalidMetadata, message);
    let mut out = Vec::new();
    for (name, value) in form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
        let Some(key) = name.strip_prefix(FILTER_PREFIX) else {
            continue;
        };
        metadata::check_key(key).map_err(|err| invalid(err.0))?;
        metadata::check_value(key, &value).map_err(|err| invalid(err.0))?;
        if redacted && redactor.is_sensitive(key) {
            return Err(invalid(format!(
                "metadata `{key}` is sensitive: its values are redacted for this caller, who cannot filter on them"
            )));
        }
        out.push((key.to_owned(), value.into_owned()));
        if out.len() > MAX_FILTERS {
            return Err(invalid(format!(
                "at most {MAX_FILTERS} metadata filters are allowed"
            )));
        }
    }
    Ok(out)
}

/// The metadata filters of a bulk action's body (`{"metadata": {k: v}}`),
/// held to the rules of [`filters`].
pub(crate) fn body_filters(
    pairs: &BTreeMap<String, String>,
    redactor: &Redactor,
    redacted: bool,
) -> Result<Vec<(String, String)>, ApiError> {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            pairs
                .iter()
                .map(|(k, v)| (format!("{FILTER_PREFIX}{k}"), v)),
        )
        .finish();
    filters(Some(&query), redactor, redacted)
}

/// Checks a start request's metadata: 400 `invalid_metadata`.
pub(crate) fn check(metadata: &Metadata) -> Result<(), ApiError> {
    metadata::check(metadata)
        .map_err(|err| ApiError::bad_request(weft_core::ErrorCode::InvalidMetadata, err.0))
}

/// `metadata` as people are shown it: each sensitive key's value masked.
pub(crate) fn redact(redactor: &Redactor, metadata: &mut BTreeMap<String, String>) {
    for (key, value) in metadata.iter_mut() {
        if redactor.is_sensitive(key) {
            *value = REDACTED.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_the_meta_pairs_of_the_query() {
        let redactor = Redactor::default();
        let pairs = filters(
            Some("workflow=w&meta.customer=42&meta.region=eu%20west&limit=5"),
            &redactor,
            true,
        )
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("customer".to_owned(), "42".to_owned()),
                ("region".to_owned(), "eu west".to_owned())
            ]
        );
        assert!(filters(None, &redactor, true).unwrap().is_empty());
    }

    #[test]
    fn bad_keys_and_sensitive_keys_for_redacted_callers_are_refused() {
        let redactor = Redactor::default();
        let code = |q: &str, redacted: bool| {
            filters(Some(q), &redactor, redacted)
                .unwrap_err()
                .code()
                .to_owned()
        };
        assert_eq!(code("meta.=1", false), "invalid_metadata");
        assert_eq!(code("meta.a%20b=1", false), "invalid_metadata");
        assert_eq!(code("meta.api_token=x", true), "invalid_metadata");
        assert!(filters(Some("meta.api_token=x"), &redactor, false).is_ok());
    }

    #[test]
    fn sensitive_values_are_masked() {
        let mut map: BTreeMap<String, String> = [("customer", "42"), ("api_token", "tok_1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        redact(&Redactor::default(), &mut map);
        assert_eq!(map["customer"], "42");
        assert_eq!(map["api_token"], REDACTED);
    }
}
