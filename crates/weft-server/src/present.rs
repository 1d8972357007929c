//! Turning store models into what people are shown: redaction and trace
//! links. The one place the server redacts a run's data on its way out
//! (the store masks its own log lines and spans the same way): values
//! under sensitive keys (`Redactor::redact`) and, in free text (errors, log
//! lines, event data, diagnosis evidence), the secret values of the run's
//! input and step outputs and the configured patterns (`TextMasker`). Stored
//! rows and the tasks sent to workers are never touched.

use weft_api::{EventRecord, LogRecord, RunDetail, RunDiagnosisView};
use weft_core::{
    diagnosis::Cause,
    redact::{Redactor, TextMasker},
};

use crate::{
    Config,
    auth::{Principal, Role},
};

/// Whether the API answers `principal` with redacted data: always for
/// viewers and operators (and workers, which read no runs), for admins only
/// with `--redact-api`. The anonymous caller (authentication off) is an
/// admin, so `--redact-api` keeps its meaning there. The dashboard always
/// redacts, whoever asks.
pub(crate) fn redacts(config: &Config, principal: &Principal) -> bool {
    match principal.role {
        Role::Viewer | Role::Operator | Role::Worker => true,
        Role::Admin => config.redact_api,
    }
}

/// [`redacts`], or the caller asked for redacted data (`?redact=true`; the
/// dashboard's links do, so a page that redacts never links to clear data).
/// A caller can ask for less, never for more.
pub(crate) fn redacts_for(config: &Config, principal: &Principal, asked: Option<bool>) -> bool {
    asked == Some(true) || redacts(config, principal)
}

/// The redaction of one run's view: the key rule and a free-text masker
/// built once from the run's input, its output and its step outputs.
pub(crate) struct RunPresenter {
    redactor: Redactor,
    masker: TextMasker,
}

impl RunPresenter {
    /// The presenter for `run`, whose data supplies the secrets.
    pub(crate) fn new(redactor: &Redactor, run: &RunDetail) -> Self {
        let metadata = serde_json::to_value(&run.metadata).unwrap_or_default();
        let sources = std::iter::once(&run.input)
            .chain(std::iter::once(&metadata))
            .chain(run.output.as_ref())
            .chain(run.steps.iter().filter_map(|s| s.output.as_ref()));
        Self {
            redactor: redactor.clone(),
            masker: redactor.text_masker(sources),
        }
    }

    fn text_in_place(&self, text: &mut Option<String>) {
        if let Some(inner) = text.take() {
            *text = Some(self.masker.mask_owned(inner));
        }
    }

    fn value(&self, value: &serde_json::Value) -> serde_json::Value {
        let mut shown = self.redactor.redact(value);
        self.masker.mask_value(&mut shown);
        shown
    }

    /// One free text (an error, a log line) as people are shown it.
    pub(crate) fn text(&self, text: &str) -> String {
        self.masker.mask(text).into_owned()
    }

    /// One JSON value as people are shown it: the key rule, then the free
    /// text inside it masked.
    pub(crate) fn shown(&self, value: &serde_json::Value) -> serde_json::Value {
        self.value(value)
    }

    /// Inputs, outputs and every run, step and attempt error of `run`.
    pub(crate) fn run(&self, run: &mut RunDetail) {
        run.input = self.value(&run.input);
        crate::metadata::redact(&self.redactor, &mut run.metadata);
        run.output = run.output.as_ref().map(|v| self.value(v));
        self.text_in_place(&mut run.error);
        for step in &mut run.steps {
            step.output = step.output.as_ref().map(|v| self.value(v));
            self.text_in_place(&mut step.error);
            for attempt in &mut step.attempts {
                self.text_in_place(&mut attempt.error);
            }
        }
    }

    /// History events: their data (errors, outputs, comments).
    pub(crate) fn events(&self, events: &mut [EventRecord]) {
        for event in events {
            event.data = self.value(&event.data);
        }
    }

    /// Step log lines.
    pub(crate) fn logs(&self, lines: &mut [LogRecord]) {
        for line in lines {
            line.line = self.masker.mask_owned(std::mem::take(&mut line.line));
        }
    }

    /// A diagnosis's evidence, which may quote an attempt's error.
    pub(crate) fn diagnosis(&self, view: &mut RunDiagnosisView) {
        for step in &mut view.steps {
            step.evidence = self.masker.mask_owned(std::mem::take(&mut step.evidence));
        }
    }
}

/// Whether a diagnosis's evidence may quote a handler's error (and so needs
/// the run's secrets to be masked); other evidence is Weft's own text.
pub(crate) fn quotes_errors(view: &RunDiagnosisView) -> bool {
    view.steps.iter().any(|s| {
        Cause::parse(&s.cause).is_some_and(|c| matches!(c, Cause::Retrying | Cause::PoisonInput))
    })
}

/// The run's trace in the trace backend, from the configured template.
pub(crate) fn trace_url(template: Option<&str>, trace_id: &str) -> Option<String> {
    template.map(|t| t.replace("{trace_id}", trace_id))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn principal(role: Role, token: bool) -> Principal {
        Principal {
            name: "someone".to_owned(),
            role,
            queues: None,
            token_id: token.then(|| "t1".to_owned()),
        }
    }

    #[test]
    fn redaction_by_role() {
        let clear = Config::default();
        let redact_api = Config {
            redact_api: true,
            ..Config::default()
        };
        for (role, by_default, with_flag) in [
            (Role::Viewer, true, true),
            (Role::Operator, true, true),
            (Role::Admin, false, true),
            (Role::Worker, true, true),
        ] {
            let caller = principal(role, true);
            assert_eq!(redacts(&clear, &caller), by_default, "{role}");
            assert_eq!(
                redacts(&redact_api, &caller),
                with_flag,
                "{role} with --redact-api"
            );
            // Asking for redacted data is always honoured; asking for clear
            // data never lifts the rule.
            assert!(redacts_for(&clear, &caller, Some(true)), "{role}");
            assert_eq!(
                redacts_for(&clear, &caller, Some(false)),
                by_default,
                "{role}"
            );
        }
        // Authentication off: the anonymous admin, `--redact-api` as before.
        assert!(!redacts(&clear, &Principal::anonymous()));
        assert!(redacts(&redact_api, &Principal::anonymous()));
    }

    #[test]
    fn a_run_view_is_masked_throughout() {
        let redactor = Redactor::default();
        let mut run: RunDetail = serde_json::from_value(json!({
            "run_id": "r1", "trace_id": "t", "workflow": "pay", "version": 1,
            "status": "failed", "reason": "handler_error",
            "error": "cannot charge with {\"password\":\"hunter2-SECRET\"}",
            "input": {"user": "ann", "password": "hunter2-SECRET"},
            "output": null, "created_at": "x", "started_at": null, "finished_at": null,
            "request_id": null, "trace_url": null,
            "timing": {"end_to_end_ms": null},
            "steps": [{
                "name": "charge", "kind": "task", "handler": "p.charge", "queue": "default",
                "depends_on": [], "status": "failed", "reason": "handler_error",
                "output": {"note": "used hunter2-SECRET", "card_token": "tok-4242-4242"},
                "error": "debug: got hunter2-SECRET and tok-4242-4242", "due_at": null,
                "attempts": [{"attempt": 1, "status": "failed", "reason": "handler_error",
                    "worker_id": "w", "span_id": "s", "claimed_at": "x", "finished_at": null,
                    "error": "Bearer abcdefgh12345", "timing": null}]
            }]
        }))
        .expect("a run detail");
        let presenter = RunPresenter::new(&redactor, &run);
        presenter.run(&mut run);
        let shown = serde_json::to_string(&run).unwrap();
        assert!(!shown.contains("hunter2-SECRET"), "{shown}");
        assert!(!shown.contains("tok-4242-4242"), "{shown}");
        assert!(!shown.contains("abcdefgh12345"), "{shown}");
        assert_eq!(run.input, json!({"user": "ann", "password": "[redacted]"}));
        assert_eq!(
            run.steps[0].error.as_deref(),
            Some("debug: got [redacted] and [redacted]")
        );
    }
}
