//! The runs list's bulk cancel and retry: how many of the filtered runs each
//! action applies to (from the page's status counts) and the body the buttons
//! send to `POST /v1/runs/cancel` and `POST /v1/runs/retry`, the filter as
//! the API reads it (times as RFC 3339) with that count as `expected`.

use serde::Serialize;
use serde_json::json;
use weft_api::MAX_BULK_RUNS;
use weft_core::RunStatus;
use weft_store::StatusCount;

use super::format;

/// One bulk button: its label, the count it confirms, the request body.
#[derive(Debug, Serialize)]
pub(crate) struct BulkButton {
    /// `cancel` or `retry`.
    act: &'static str,
    /// The API route.
    url: &'static str,
    /// The count shown (`1,234`).
    shown: String,
    /// The JSON body (`expected` included).
    body: String,
    /// The confirmation's question.
    confirm: String,
    /// Why the button is disabled (none apply, or too many), if it is.
    disabled: Option<String>,
}

/// The filter of the page, as parsed.
pub(crate) struct BulkFilter<'a> {
    pub(crate) workflow: Option<&'a str>,
    pub(crate) status: Option<RunStatus>,
    pub(crate) trace_id: Option<weft_core::TraceId>,
    pub(crate) since_ms: Option<i64>,
    pub(crate) until_ms: Option<i64>,
    /// The metadata filters (`customer=42`), which the counts hold too.
    pub(crate) metadata: &'a [(String, String)],
}

/// The bulk buttons for a filter whose counts per status are `counts`.
pub(crate) fn buttons(filter: &BulkFilter<'_>, counts: &[StatusCount]) -> Vec<BulkButton> {
    [
        ("cancel", "/v1/runs/cancel", [RunStatus::Pending, RunStatus::Running]),
        ("retry", "/v1/runs/retry", [RunStatus::Failed, RunStatus::Cancelled]),
    ]
    .into_iter()
    .map(|(act, url, applies)| {
        let relevant = counts
            .iter()
            .filter(|c| applies.contains(&c.status) && filter.status.is_none_or(|s| s == c.status));
        let (mut n, mut capped) = (0i64, false);
        for c in relevant {
            n += c.count;
            capped |= c.capped;
        }
        let mut body = json!({
            "workflow": filter.workflow,
            "status": filter.status.map(|s| s.as_str()),
            "trace_id": filter.trace_id,
            "since": filter.since_ms.map(weft_store::rfc3339),
            "until": filter.until_ms.map(weft_store::rfc3339),
            "metadata": (!filter.metadata.is_empty()).then(|| {
                filter
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                    .collect::<serde_json::Map<String, serde_json::Value>>()
            }),
            "expected": n,
        });
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        let done = if act == "cancel" { "cancelled" } else { "retried" };
        let disabled = if capped || n > i64::from(MAX_BULK_RUNS) {
            Some(format!(
                "more than {} runs: narrow the filter",
                format::count(i64::from(MAX_BULK_RUNS), false)
            ))
        } else if n == 0 {
            Some(format!("no run here can be {done}"))
        } else {
            None
        };
        let verb = if act == "cancel" { "Cancel" } else { "Retry" };
        BulkButton {
            confirm: format!(
                "{verb} {} matching run(s)? Each is {done} as if one by one, recorded with you as the actor.",
                format::count(n, capped)
            ),
            act,
            url,
            shown: format::count(n, capped),
            body: body.to_string(),
            disabled,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_button_carries_the_metadata_filter_its_count_was_made_with() {
        let metadata = [("customer".to_owned(), "42".to_owned())];
        let filter = BulkFilter {
            workflow: Some("etl"),
            status: None,
            trace_id: None,
            since_ms: None,
            until_ms: None,
            metadata: &metadata,
        };
        let counts = [StatusCount {
            status: RunStatus::Running,
            count: 2,
            capped: false,
        }];
        let cancel = &buttons(&filter, &counts)[0];
        let body: serde_json::Value = serde_json::from_str(&cancel.body).unwrap();
        assert_eq!(
            body,
            json!({"workflow": "etl", "metadata": {"customer": "42"}, "expected": 2})
        );
        let none = BulkFilter {
            metadata: &[],
            ..filter
        };
        let body: serde_json::Value =
            serde_json::from_str(&buttons(&none, &counts)[0].body).unwrap();
        assert_eq!(body, json!({"workflow": "etl", "expected": 2}));
    }
}
