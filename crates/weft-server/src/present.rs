//! Turning store models into what people are shown: redaction and trace links.

use weft_api::RunDetail;

/// Applies the redaction rule to everything user data reaches in a run view.
pub(crate) fn redact_run(redactor: &weft_core::redact::Redactor, run: &mut RunDetail) {
    run.input = redactor.redact(&run.input);
    run.output = run.output.as_ref().map(|v| redactor.redact(v));
    for step in &mut run.steps {
        step.output = step.output.as_ref().map(|v| redactor.redact(v));
    }
}

/// The run's trace in the trace backend, from the configured template.
pub(crate) fn trace_url(template: Option<&str>, trace_id: &str) -> Option<String> {
    template.map(|t| t.replace("{trace_id}", trace_id))
}
