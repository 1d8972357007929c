//! How `weft run` shows a `for_each` step's children: collapsed into one
//! row with their counts by default, each child's attempts as `step[i]`
//! with `--children`.

use weft_api::{AttemptDetail, RunDetail, StepDetail};

/// `step[i]` for an attempt of child `i`, the step's name otherwise.
pub fn attempt_name(step: &str, attempt: &AttemptDetail) -> String {
    match attempt.index {
        Some(index) => format!("{step}[{index}]"),
        None => step.to_owned(),
    }
}

/// The run with its children's attempts left out (their step shows one
/// row of counts instead).
pub fn collapsed(run: &RunDetail) -> RunDetail {
    let mut run = run.clone();
    for step in &mut run.steps {
        if step.children.is_some() {
            step.attempts.retain(|a| a.index.is_none());
        }
    }
    run
}

/// The one row of a collapsed `for_each` step (in `weft run`'s table
/// columns), or `None` for a step without children.
pub fn collapsed_row(step: &StepDetail) -> Option<Vec<String>> {
    let c = step.children?;
    if !step.attempts.is_empty() {
        return None; // expanded: each attempt has its row
    }
    let mut counts = format!("{} completed", c.completed);
    if c.in_flight > 0 {
        counts.push_str(&format!(", {} in flight", c.in_flight));
    }
    if c.pending > 0 {
        counts.push_str(&format!(", {} pending", c.pending));
    }
    if c.failed > 0 {
        counts.push_str(&format!(", {} failed", c.failed));
    }
    let error = match &step.error {
        Some(error) => format!("{counts}; {error}"),
        None => counts,
    };
    Some(vec![
        format!("{}[{}]", step.name, c.total),
        "-".into(),
        step.status.clone(),
        step.reason.clone().unwrap_or_else(|| "-".into()),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        error,
    ])
}
