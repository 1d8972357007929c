//! Workflow manifests (YAML or JSON) turned into validated definitions.
//!
//! Parsing goes through an untyped JSON value and reads each field by hand, so
//! that every error names the step and field it is about (`steps[charge].timeout`)
//! and carries a stable code, rather than a serde message about line numbers.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::{ErrorCode, RetryPolicy, condition, duration, retry::Backoff};

/// A validation failure: a stable `code`, the `path` of the offending field and
/// a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// The catalogue's code for what is wrong (`invalid_type`, `cycle`, ...).
    pub code: ErrorCode,
    pub path: String,
    pub message: String,
}

fn invalid(
    code: ErrorCode,
    path: impl Into<String>,
    message: impl Into<String>,
) -> ValidationError {
    ValidationError {
        code,
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Task { handler: String },
    Sleep { duration_ms: u64 },
    Approval,
}

impl StepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Task { .. } => "task",
            StepKind::Sleep { .. } => "sleep",
            StepKind::Approval => "approval",
        }
    }
}

/// A step's trigger rule (`run_if`): which outcomes of its dependencies let
/// it run. A dependency has *failed* when it is `failed`, or `cancelled` with
/// reason `upstream_failed`; it has *succeeded* when it is `completed` or
/// `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunIf {
    /// Every dependency succeeded (the default). A failed dependency marks
    /// the step `cancelled` with reason `upstream_failed` at once.
    #[default]
    AllSucceeded,
    /// Every dependency is done, whatever its outcome (cleanup).
    AllDone,
    /// Every dependency is done and at least one failed (notify); skipped
    /// when none failed.
    AnyFailed,
    /// No dependency failed: as `all_succeeded` (a skipped dependency
    /// satisfies its dependants in Weft), accepted under Airflow's name.
    NoneFailed,
}

impl RunIf {
    /// Every rule, in the order the manifest documentation lists them.
    pub const ALL: &'static [RunIf] = &[
        RunIf::AllSucceeded,
        RunIf::AllDone,
        RunIf::AnyFailed,
        RunIf::NoneFailed,
    ];

    /// The rule as written in a manifest: `all_succeeded`, `all_done`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            RunIf::AllSucceeded => "all_succeeded",
            RunIf::AllDone => "all_done",
            RunIf::AnyFailed => "any_failed",
            RunIf::NoneFailed => "none_failed",
        }
    }

    /// The rule named `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == text)
    }

    /// Whether the step runs after a failed dependency (`all_done`,
    /// `any_failed`): only such a step may say `handles_failure`.
    pub const fn runs_after_failure(self) -> bool {
        matches!(self, RunIf::AllDone | RunIf::AnyFailed)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    pub name: String,
    pub kind: StepKind,
    pub depends_on: Vec<String>,
    /// Indices of `depends_on` in `Definition::steps`.
    pub deps: Vec<usize>,
    pub queue: String,
    pub retry: RetryPolicy,
    pub timeout_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub when: Option<String>,
    pub compensate: Option<String>,
    /// The trigger rule over the dependencies' outcomes.
    pub run_if: RunIf,
    /// Whether this step, once completed, consumes the failures of its
    /// ancestors, so that a run whose every failure is consumed ends
    /// `completed` (see `machine::settle`).
    pub handles_failure: bool,
    /// `for_each`: the step runs once per item of a list known at run time.
    pub fan_out: Option<FanOut>,
    /// What an approval step's `timeout` decides when it passes with no
    /// decision (`on_timeout`, default `reject`); unused by other kinds.
    pub on_timeout: OnTimeout,
    /// The retry policy of the `compensate` handler's attempts
    /// (`compensate_retry`, same shape as `retry`; default: `retry`).
    pub compensate_retry: RetryPolicy,
}

/// Default `max_items` of a `for_each` step.
pub const DEFAULT_MAX_ITEMS: u32 = 1_000;
/// Largest `max_items` a manifest may set.
pub const MAX_ITEMS_LIMIT: u32 = 10_000;

/// A `for_each` step's fan-out: one child per item of the list `expression`
/// yields (CEL over `{input, steps}`, held to the limits of conditions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOut {
    /// The CEL expression; it must yield a list.
    pub expression: String,
    /// Most items the list may have (1 to [`MAX_ITEMS_LIMIT`], default
    /// [`DEFAULT_MAX_ITEMS`]); a longer list fails the step.
    pub max_items: u32,
    /// Most children ready or running at once; `None`: no limit.
    pub max_parallel: Option<u32>,
}

/// An approval step's decision when its `timeout` passes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// The step fails with reason `approval_timeout`, failing the run.
    #[default]
    Reject,
    /// The step completes with output `{"approved": true, "by": "timeout"}`.
    Approve,
}

impl OnTimeout {
    /// The manifest word: `reject` or `approve`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Reject => "reject",
            OnTimeout::Approve => "approve",
        }
    }
}

impl StepDef {
    pub fn handler(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Task { handler } => Some(handler),
            _ => None,
        }
    }
}

/// A validated workflow: steps in manifest order plus a topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub description: Option<String>,
    pub queue: String,
    pub steps: Vec<StepDef>,
    /// Step indices such that every step comes after its dependencies.
    pub topo_order: Vec<usize>,
    /// `compensate_on: [failure, cancel]`: a cancelled run is compensated
    /// too (a failed one always is).
    pub compensate_on_cancel: bool,
    /// The manifest as canonical JSON (sorted keys): what is stored, and what
    /// decides whether a re-registration is a new version.
    pub canonical: String,
}

impl Definition {
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Steps that nothing depends on: their outputs make up the run's output.
    pub fn leaves(&self) -> Vec<usize> {
        let mut has_dependant = vec![false; self.steps.len()];
        for step in &self.steps {
            for &dep in &step.deps {
                has_dependant[dep] = true;
            }
        }
        (0..self.steps.len())
            .filter(|&i| !has_dependant[i])
            .collect()
    }

    /// Parses and validates a manifest being registered; YAML is a superset
    /// of JSON, but JSON goes through serde_json for its exact error messages.
    pub fn parse(text: &str) -> Result<Definition, ValidationError> {
        let def = Self::parse_stored(text)?;
        def.check_condition_limits()?;
        def.check_condition_references()?;
        Ok(def)
    }

    /// Every step that `step` depends on, directly or not, as a mask over
    /// `steps`.
    pub fn ancestors(&self, step: usize) -> Vec<bool> {
        let mut seen = vec![false; self.steps.len()];
        let mut stack: Vec<usize> = self.steps[step].deps.clone();
        while let Some(dep) = stack.pop() {
            if !std::mem::replace(&mut seen[dep], true) {
                stack.extend(&self.steps[dep].deps);
            }
        }
        seen
    }

    /// The names a `when` or a `for_each` reads from `steps` and `upstream`
    /// are the step's ancestors (`unknown_step_reference`), read by a fixed
    /// name (`dynamic_step_reference`); the error's path is the field's
    /// (`steps[<step>].when`, `steps[<step>].for_each`). Checked at
    /// registration only: a stored definition keeps loading, and a name
    /// outside its ancestors reads `null` there.
    fn check_condition_references(&self) -> Result<(), ValidationError> {
        for (i, step) in self.steps.iter().enumerate() {
            let fields = [
                ("when", step.when.as_deref()),
                (
                    "for_each",
                    step.fan_out.as_ref().map(|f| f.expression.as_str()),
                ),
            ];
            for (field, expression) in fields {
                if let Some(expression) = expression {
                    self.check_references(i, field, expression)?;
                }
            }
        }
        Ok(())
    }

    /// [`Self::check_condition_references`] for one expression of `step`.
    fn check_references(
        &self,
        i: usize,
        field: &str,
        expression: &str,
    ) -> Result<(), ValidationError> {
        let step = &self.steps[i];
        {
            let path = format!("steps[{}].{field}", step.name);
            let references = condition::references(expression)
                .map_err(|err| invalid(err.code, &path, err.message))?;
            let ancestors = self.ancestors(i);
            for reference in references {
                match reference {
                    condition::Reference::Dynamic(var) => {
                        return Err(invalid(
                            crate::ErrorCode::DynamicStepReference,
                            &path,
                            format!(
                                "`{field}` reads `{var}` other than by a step's name \
                                 (write `{var}.NAME` or `{var}[\"NAME\"]`, NAME an ancestor)"
                            ),
                        ));
                    }
                    condition::Reference::Step(name) => {
                        let known = self.step_index(&name).is_some_and(|dep| ancestors[dep]);
                        if !known {
                            let mut names: Vec<&str> = (0..self.steps.len())
                                .filter(|&d| ancestors[d])
                                .map(|d| self.steps[d].name.as_str())
                                .collect();
                            names.sort_unstable();
                            let listed = if names.is_empty() {
                                "it has none".to_owned()
                            } else {
                                names.join(", ")
                            };
                            return Err(invalid(
                                crate::ErrorCode::UnknownStepReference,
                                &path,
                                format!(
                                    "`{field}` names step `{name}`, which is not an ancestor of \
                                     `{}` (its ancestors: {listed}); add it to `depends_on`",
                                    step.name
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses a manifest already stored, which an earlier version may have
    /// accepted under looser limits: as [`Definition::parse`] but without
    /// the static limits of `when` conditions (`when_too_complex`), which are
    /// checked again each time a condition is evaluated.
    pub fn parse_stored(text: &str) -> Result<Definition, ValidationError> {
        let trimmed = text.trim_start();
        let value: Value = if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|err| {
                invalid(
                    ErrorCode::InvalidManifest,
                    "$",
                    format!("not valid JSON: {err}"),
                )
            })?
        } else {
            let options = serde_saphyr::options! {
                strict_booleans: true,
                leading_zero_numbers_as_strings: true,
            };
            serde_saphyr::from_str_with_options(text, options).map_err(|err| {
                invalid(
                    ErrorCode::InvalidManifest,
                    "$",
                    format!("not valid YAML: {err}"),
                )
            })?
        };
        Self::from_value(&value)
    }

    /// The static limits of every `when` (`when_too_complex`: size, depth,
    /// nesting of comprehensions; see `condition::LIMITS`).
    fn check_condition_limits(&self) -> Result<(), ValidationError> {
        for step in &self.steps {
            if let Some(expression) = &step.when {
                condition::compile(expression).map_err(|err| {
                    invalid(err.code, format!("steps[{}].when", step.name), err.message)
                })?;
            }
            if let Some(fan_out) = &step.fan_out {
                condition::compile(&fan_out.expression).map_err(|err| {
                    invalid(
                        err.code,
                        format!("steps[{}].for_each", step.name),
                        err.message,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Validates a parsed manifest, as [`Definition::parse_stored`] does.
    pub fn from_value(value: &Value) -> Result<Definition, ValidationError> {
        let root = value.as_object().ok_or_else(|| {
            invalid(
                ErrorCode::InvalidManifest,
                "$",
                "a manifest must be a mapping",
            )
        })?;
        check_fields(
            root,
            "$",
            &["name", "description", "queue", "steps", "compensate_on"],
        )?;
        let compensate_on_cancel = parse_compensate_on(root.get("compensate_on"))?;
        let name = required_str(root, "$", "name")?;
        check_name(&name, "name")?;
        let description = optional_str(root, "$", "description")?;
        if let Some(text) = &description
            && text.chars().count() > MAX_DESCRIPTION_LEN
        {
            return Err(invalid(
                ErrorCode::InvalidDescription,
                "description",
                format!("a description is at most {MAX_DESCRIPTION_LEN} characters"),
            ));
        }
        let queue = optional_str(root, "$", "queue")?.unwrap_or_else(|| "default".to_owned());
        check_name(&queue, "queue")?;
        let raw_steps = root
            .get("steps")
            .ok_or_else(|| invalid(ErrorCode::MissingField, "steps", "a workflow needs `steps`"))?
            .as_array()
            .ok_or_else(|| invalid(ErrorCode::InvalidType, "steps", "`steps` must be a list"))?;
        if raw_steps.is_empty() {
            return Err(invalid(
                ErrorCode::EmptyWorkflow,
                "steps",
                "a workflow needs at least one step",
            ));
        }
        if raw_steps.len() > MAX_STEPS {
            return Err(invalid(
                ErrorCode::TooManySteps,
                "steps",
                format!(
                    "a workflow has at most {MAX_STEPS} steps (this one has {})",
                    raw_steps.len()
                ),
            ));
        }

        let mut steps = Vec::with_capacity(raw_steps.len());
        let mut index_by_name: HashMap<String, usize> = HashMap::new();
        for (i, raw) in raw_steps.iter().enumerate() {
            let step = parse_step(raw, i, &queue)?;
            if index_by_name.insert(step.name.clone(), i).is_some() {
                return Err(invalid(
                    ErrorCode::DuplicateStep,
                    format!("steps[{}].name", step.name),
                    format!("step `{}` is declared twice", step.name),
                ));
            }
            steps.push(step);
        }
        for step in &mut steps {
            let mut deps = Vec::with_capacity(step.depends_on.len());
            for dep in &step.depends_on {
                let &index = index_by_name.get(dep).ok_or_else(|| {
                    invalid(
                        ErrorCode::UnknownDependency,
                        format!("steps[{}].depends_on", step.name),
                        format!(
                            "step `{}` depends on `{dep}`, which is not a step of this workflow",
                            step.name
                        ),
                    )
                })?;
                if deps.contains(&index) {
                    return Err(invalid(
                        ErrorCode::DuplicateDependency,
                        format!("steps[{}].depends_on", step.name),
                        format!("step `{}` lists `{dep}` twice", step.name),
                    ));
                }
                deps.push(index);
            }
            step.deps = deps;
        }
        let topo_order = topological_order(&steps)?;
        Ok(Definition {
            name,
            description,
            queue,
            steps,
            topo_order,
            compensate_on_cancel,
            canonical: serde_json::to_string(value).expect("a JSON value serializes"),
        })
    }
}

/// Parses the workflow's `compensate_on` (a list of `failure` and `cancel`;
/// default `[failure]`): whether a cancelled run is compensated too.
/// Failure is always compensated, so the list must name it.
fn parse_compensate_on(raw: Option<&Value>) -> Result<bool, ValidationError> {
    let items = match raw {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(invalid(
                crate::ErrorCode::InvalidType,
                "compensate_on",
                "`compensate_on` must be a list of `failure` and `cancel`",
            ));
        }
    };
    let mut failure = false;
    let mut cancel = false;
    for item in items {
        match item.as_str() {
            Some("failure") => failure = true,
            Some("cancel") => cancel = true,
            _ => {
                return Err(invalid(
                    crate::ErrorCode::InvalidCompensateOn,
                    "compensate_on",
                    "`compensate_on` lists `failure` and optionally `cancel`",
                ));
            }
        }
    }
    if !failure {
        return Err(invalid(
            crate::ErrorCode::InvalidCompensateOn,
            "compensate_on",
            "`compensate_on` must include `failure`: a failed run is always compensated",
        ));
    }
    Ok(cancel)
}

const STEP_FIELDS: &[&str] = &[
    "name",
    "kind",
    "handler",
    "depends_on",
    "queue",
    "retry",
    "timeout",
    "heartbeat_timeout",
    "when",
    "compensate",
    "compensate_retry",
    "duration",
    "run_if",
    "handles_failure",
    "for_each",
    "max_items",
    "max_parallel",
    "on_timeout",
];

fn parse_step(
    raw: &Value,
    position: usize,
    default_queue: &str,
) -> Result<StepDef, ValidationError> {
    let fields = raw.as_object().ok_or_else(|| {
        invalid(
            ErrorCode::InvalidType,
            format!("steps[{position}]"),
            "a step must be a mapping",
        )
    })?;
    let name = required_str(fields, &format!("steps[{position}]"), "name")?;
    let at = format!("steps[{name}]");
    check_name(&name, &format!("{at}.name"))?;
    check_fields(fields, &at, STEP_FIELDS)?;

    let kind_name = optional_str(fields, &at, "kind")?.unwrap_or_else(|| "task".to_owned());
    let handler = optional_str(fields, &at, "handler")?;
    let duration_text = optional_str(fields, &at, "duration")?;
    let kind = match kind_name.as_str() {
        "task" => {
            let handler = handler.ok_or_else(|| {
                invalid(
                    ErrorCode::MissingHandler,
                    format!("{at}.handler"),
                    format!("task step `{name}` needs a `handler`"),
                )
            })?;
            check_name(&handler, &format!("{at}.handler"))?;
            StepKind::Task { handler }
        }
        "sleep" => {
            let text = duration_text.ok_or_else(|| {
                invalid(
                    ErrorCode::MissingField,
                    format!("{at}.duration"),
                    format!("sleep step `{name}` needs a `duration`"),
                )
            })?;
            StepKind::Sleep {
                duration_ms: parse_duration(&text, &format!("{at}.duration"), max_ms::SLEEP)?,
            }
        }
        "approval" => StepKind::Approval,
        other => {
            return Err(invalid(
                ErrorCode::InvalidKind,
                format!("{at}.kind"),
                format!("unknown step kind `{other}` (task, sleep or approval)"),
            ));
        }
    };
    if !matches!(kind, StepKind::Task { .. }) {
        for field in [
            "handler",
            "retry",
            "timeout",
            "heartbeat_timeout",
            "compensate",
            "for_each",
            "max_items",
            "max_parallel",
            "compensate_retry",
        ] {
            // An approval's `timeout` is how long it waits for a decision.
            if field == "timeout" && matches!(kind, StepKind::Approval) {
                continue;
            }
            if fields.contains_key(field) {
                return Err(invalid(
                    ErrorCode::UnknownField,
                    format!("{at}.{field}"),
                    format!(
                        "`{field}` applies to task steps, not to {} steps",
                        kind.as_str()
                    ),
                ));
            }
        }
    }
    if !matches!(kind, StepKind::Sleep { .. }) && fields.contains_key("duration") {
        return Err(invalid(
            ErrorCode::UnknownField,
            format!("{at}.duration"),
            "`duration` applies to sleep steps only",
        ));
    }

    let depends_on = match fields.get("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(
                        ErrorCode::InvalidType,
                        format!("{at}.depends_on"),
                        "`depends_on` must be a list of step names",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(
                ErrorCode::InvalidType,
                format!("{at}.depends_on"),
                "`depends_on` must be a list of step names",
            ));
        }
    };
    let queue = optional_str(fields, &at, "queue")?.unwrap_or_else(|| default_queue.to_owned());
    check_name(&queue, &format!("{at}.queue"))?;
    let retry = match fields.get("retry") {
        None | Some(Value::Null) => RetryPolicy::default(),
        Some(raw) => parse_retry(raw, &format!("{at}.retry"))?,
    };
    let timeout_max = match kind {
        StepKind::Approval => max_ms::APPROVAL_TIMEOUT,
        _ => max_ms::TIMEOUT,
    };
    let timeout_ms = optional_duration(fields, &at, "timeout", timeout_max)?;
    let on_timeout = match optional_str(fields, &at, "on_timeout")? {
        _ if !matches!(kind, StepKind::Approval) && fields.contains_key("on_timeout") => {
            return Err(invalid(
                crate::ErrorCode::UnknownField,
                format!("{at}.on_timeout"),
                "`on_timeout` applies to approval steps only",
            ));
        }
        None => OnTimeout::default(),
        Some(word) => match word.as_str() {
            "reject" => OnTimeout::Reject,
            "approve" => OnTimeout::Approve,
            other => {
                return Err(invalid(
                    crate::ErrorCode::InvalidValue,
                    format!("{at}.on_timeout"),
                    format!("unknown `on_timeout` `{other}` (reject or approve)"),
                ));
            }
        },
    };
    let heartbeat_timeout_ms =
        optional_duration(fields, &at, "heartbeat_timeout", max_ms::HEARTBEAT_TIMEOUT)?;
    let when = optional_str(fields, &at, "when")?;
    if let Some(expression) = &when {
        condition::compile_syntax(expression)
            .map_err(|err| invalid(err.code, format!("{at}.when"), err.message))?;
    }
    let compensate = optional_str(fields, &at, "compensate")?;
    if let Some(handler) = &compensate {
        check_name(handler, &format!("{at}.compensate"))?;
    }
    let run_if = match optional_str(fields, &at, "run_if")? {
        None => RunIf::default(),
        Some(text) => RunIf::parse(&text).ok_or_else(|| {
            invalid(
                crate::ErrorCode::InvalidTriggerRule,
                format!("{at}.run_if"),
                format!(
                    "unknown trigger rule `{text}` ({})",
                    RunIf::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?,
    };
    let handles_failure = match fields.get("handles_failure") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(invalid(
                crate::ErrorCode::InvalidType,
                format!("{at}.handles_failure"),
                "`handles_failure` must be true or false",
            ));
        }
    };
    if handles_failure && !run_if.runs_after_failure() {
        return Err(invalid(
            crate::ErrorCode::InvalidTriggerRule,
            format!("{at}.handles_failure"),
            format!(
                "`handles_failure` needs `run_if: all_done` or `run_if: any_failed`: \
                 a step with `run_if: {}` never runs after a failure",
                run_if.as_str()
            ),
        ));
    }
    let fan_out = parse_fan_out(fields, &at)?;
    let compensate_retry = match fields.get("compensate_retry") {
        None | Some(Value::Null) => retry.clone(),
        Some(raw) => parse_retry(raw, &format!("{at}.compensate_retry"))?,
    };
    Ok(StepDef {
        name,
        kind,
        depends_on,
        deps: Vec::new(),
        queue,
        retry,
        timeout_ms,
        heartbeat_timeout_ms,
        when,
        compensate,
        run_if,
        handles_failure,
        fan_out,
        on_timeout,
        compensate_retry,
    })
}

/// `for_each`, `max_items` and `max_parallel` of a task step (the caller has
/// refused them on other kinds).
fn parse_fan_out(fields: &Map<String, Value>, at: &str) -> Result<Option<FanOut>, ValidationError> {
    let expression = optional_str(fields, at, "for_each")?;
    let Some(expression) = expression else {
        for field in ["max_items", "max_parallel"] {
            if fields.contains_key(field) {
                return Err(invalid(
                    crate::ErrorCode::UnknownField,
                    format!("{at}.{field}"),
                    format!("`{field}` applies to `for_each` steps only"),
                ));
            }
        }
        return Ok(None);
    };
    condition::compile_syntax(&expression).map_err(|err| {
        let code = if err.code == crate::ErrorCode::InvalidWhen {
            crate::ErrorCode::InvalidForEach
        } else {
            err.code
        };
        invalid(code, format!("{at}.for_each"), err.message)
    })?;
    let count = |field: &str, max: u32| -> Result<Option<u32>, ValidationError> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|&n| (1..=u64::from(max)).contains(&n))
                .map(|n| Some(n as u32))
                .ok_or_else(|| {
                    invalid(
                        crate::ErrorCode::InvalidForEach,
                        format!("{at}.{field}"),
                        format!("must be a whole number from 1 to {max}"),
                    )
                }),
        }
    };
    Ok(Some(FanOut {
        expression,
        max_items: count("max_items", MAX_ITEMS_LIMIT)?.unwrap_or(DEFAULT_MAX_ITEMS),
        max_parallel: count("max_parallel", MAX_ITEMS_LIMIT)?,
    }))
}

fn parse_retry(raw: &Value, at: &str) -> Result<RetryPolicy, ValidationError> {
    let fields = raw
        .as_object()
        .ok_or_else(|| invalid(ErrorCode::InvalidType, at, "`retry` must be a mapping"))?;
    check_fields(
        fields,
        at,
        &[
            "max_attempts",
            "backoff",
            "initial",
            "max",
            "jitter",
            "multiplier",
        ],
    )?;
    let mut policy = RetryPolicy::default();
    if let Some(value) = fields.get("max_attempts") {
        policy.max_attempts = value
            .as_u64()
            .filter(|&n| (1..=1000).contains(&n))
            .ok_or_else(|| {
                invalid(
                    ErrorCode::InvalidRetry,
                    format!("{at}.max_attempts"),
                    "must be a whole number from 1 to 1000",
                )
            })? as u32;
    }
    if let Some(text) = optional_str(fields, at, "backoff")? {
        policy.backoff = match text.as_str() {
            "exponential" => Backoff::Exponential,
            "fixed" => Backoff::Fixed,
            other => {
                return Err(invalid(
                    ErrorCode::InvalidRetry,
                    format!("{at}.backoff"),
                    format!("unknown backoff `{other}` (exponential or fixed)"),
                ));
            }
        };
    }
    if let Some(ms) = optional_duration(fields, at, "initial", max_ms::RETRY_INITIAL)? {
        policy.initial_ms = ms;
    }
    if let Some(ms) = optional_duration(fields, at, "max", max_ms::RETRY_MAX)? {
        policy.max_ms = ms;
    }
    if policy.max_ms < policy.initial_ms {
        return Err(invalid(
            ErrorCode::InvalidRetry,
            format!("{at}.max"),
            "`max` must not be shorter than `initial`",
        ));
    }
    if let Some(value) = fields.get("jitter") {
        policy.jitter = value.as_bool().ok_or_else(|| {
            invalid(
                ErrorCode::InvalidType,
                format!("{at}.jitter"),
                "`jitter` must be true or false",
            )
        })?;
    }
    if let Some(value) = fields.get("multiplier") {
        policy.multiplier = value
            .as_f64()
            .filter(|&m| (1.0..=10.0).contains(&m))
            .ok_or_else(|| {
                invalid(
                    ErrorCode::InvalidRetry,
                    format!("{at}.multiplier"),
                    "must be a number from 1 to 10",
                )
            })?;
    }
    Ok(policy)
}

fn topological_order(steps: &[StepDef]) -> Result<Vec<usize>, ValidationError> {
    // Depth-first search with colours; a grey node met again closes a cycle,
    // which is reported along its path so the user sees the whole loop.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit(
        node: usize,
        steps: &[StepDef],
        colour: &mut [Colour],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), ValidationError> {
        colour[node] = Colour::Grey;
        path.push(node);
        for &dep in &steps[node].deps {
            match colour[dep] {
                Colour::Black => {}
                Colour::White => visit(dep, steps, colour, path, order)?,
                Colour::Grey => {
                    let start = path.iter().position(|&n| n == dep).unwrap_or(0);
                    let mut names: Vec<&str> = path[start..]
                        .iter()
                        .map(|&n| steps[n].name.as_str())
                        .collect();
                    names.push(&steps[dep].name);
                    return Err(invalid(
                        ErrorCode::Cycle,
                        format!("steps[{}].depends_on", steps[node].name),
                        format!("dependency cycle: {}", names.join(" -> ")),
                    ));
                }
            }
        }
        path.pop();
        colour[node] = Colour::Black;
        order.push(node);
        Ok(())
    }
    let mut colour = vec![Colour::White; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    for node in 0..steps.len() {
        if colour[node] == Colour::White {
            visit(node, steps, &mut colour, &mut Vec::new(), &mut order)?;
        }
    }
    Ok(order)
}

fn check_fields(
    fields: &Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<(), ValidationError> {
    for key in fields.keys() {
        if !known.contains(&key.as_str()) {
            let path = if at == "$" {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            return Err(invalid(
                ErrorCode::UnknownField,
                path,
                format!("unknown field `{key}` (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn field_path(at: &str, key: &str) -> String {
    if at == "$" {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn required_str(
    fields: &Map<String, Value>,
    at: &str,
    key: &str,
) -> Result<String, ValidationError> {
    optional_str(fields, at, key)?.ok_or_else(|| {
        invalid(
            ErrorCode::MissingField,
            field_path(at, key),
            format!("`{key}` is required"),
        )
    })
}

fn optional_str(
    fields: &Map<String, Value>,
    at: &str,
    key: &str,
) -> Result<Option<String>, ValidationError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid(
            ErrorCode::InvalidType,
            field_path(at, key),
            format!("`{key}` must be a string"),
        )),
    }
}

fn optional_duration(
    fields: &Map<String, Value>,
    at: &str,
    key: &str,
    max: u64,
) -> Result<Option<u64>, ValidationError> {
    match optional_str(fields, at, key)? {
        None => Ok(None),
        Some(text) => parse_duration(&text, &field_path(at, key), max).map(Some),
    }
}

/// The longest value of each duration field of a manifest, in milliseconds
/// (every duration is at least 1 ms). Past it a manifest is refused with
/// `invalid_duration` at the field's path.
pub mod max_ms {
    const DAY: u64 = 86_400_000;
    /// `steps[].timeout`: 7 days.
    pub const TIMEOUT: u64 = 7 * DAY;
    /// `steps[].timeout` of an approval step: 365 days.
    pub const APPROVAL_TIMEOUT: u64 = 365 * DAY;
    /// `steps[].heartbeat_timeout`: 1 day.
    pub const HEARTBEAT_TIMEOUT: u64 = DAY;
    /// `steps[].duration` of a sleep step: 365 days.
    pub const SLEEP: u64 = 365 * DAY;
    /// `steps[].retry.initial`: 1 day.
    pub const RETRY_INITIAL: u64 = DAY;
    /// `steps[].retry.max`: 7 days.
    pub const RETRY_MAX: u64 = 7 * DAY;
}

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 2000;

/// Longest `description`, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 4096;

fn parse_duration(text: &str, path: &str, max: u64) -> Result<u64, ValidationError> {
    let ms = duration::parse_ms(text)
        .map_err(|message| invalid(ErrorCode::InvalidDuration, path, message))?;
    if ms == 0 || ms > max {
        return Err(invalid(
            ErrorCode::InvalidDuration,
            path,
            format!(
                "`{text}` is out of range: a duration here is from 1ms to {}",
                duration::format_ms(max)
            ),
        ));
    }
    Ok(ms)
}

/// Names of workflows, steps, handlers and queues: 1 to 128 characters of
/// letters, digits, `.`, `_`, `-` and `/`. They appear in URLs and metric labels.
fn check_name(name: &str, path: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            ErrorCode::InvalidName,
            path,
            format!("`{name}` is not a valid name (1-128 letters, digits, '.', '_', '-', '/')"),
        ))
    }
}

/// The step outputs visible to a step: `{dependency name: output}`.
pub fn dependency_outputs(
    def: &Definition,
    step: usize,
    outputs: &BTreeMap<String, Value>,
) -> Value {
    let mut map = Map::new();
    for &dep in &def.steps[step].deps {
        let name = &def.steps[dep].name;
        map.insert(
            name.clone(),
            outputs.get(name).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: order-fulfilment
queue: default
steps:
  - name: reserve
    handler: inventory.reserve
    retry: { max_attempts: 5, backoff: exponential, initial: 1s, max: 1m, jitter: true }
    timeout: 30s
    heartbeat_timeout: 10s
    compensate: inventory.release
  - name: charge
    depends_on: [reserve]
    handler: payments.charge
    when: "input.total > 0"
  - name: manager_ok
    kind: approval
    depends_on: [charge]
  - name: cool_off
    kind: sleep
    duration: 10m
    depends_on: [manager_ok]
  - name: ship
    depends_on: [cool_off]
    handler: shipping.ship
"#;

    #[test]
    fn parses_the_spec_example() {
        let def = Definition::parse(GOOD).unwrap();
        assert_eq!(def.name, "order-fulfilment");
        assert_eq!(def.steps.len(), 5);
        assert_eq!(def.steps[0].retry.max_attempts, 5);
        assert_eq!(def.steps[0].timeout_ms, Some(30_000));
        assert_eq!(
            def.steps[3].kind,
            StepKind::Sleep {
                duration_ms: 600_000
            }
        );
        assert_eq!(def.topo_order, vec![0, 1, 2, 3, 4]);
        assert_eq!(def.leaves(), vec![4]);
    }

    #[test]
    fn json_and_yaml_give_the_same_definition() {
        let json = r#"{"name":"w","steps":[{"name":"a","handler":"h"},{"name":"b","handler":"h","depends_on":["a"]}]}"#;
        let yaml = "name: w\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a]}\n";
        assert_eq!(
            Definition::parse(json).unwrap(),
            Definition::parse(yaml).unwrap()
        );
    }

    fn check_error(manifest: &str, code: &str, path: &str) {
        let err = Definition::parse(manifest).expect_err(manifest);
        assert_eq!(
            (err.code.as_str(), err.path.as_str()),
            (code, path),
            "{manifest}\n=> {err}"
        );
    }

    #[test]
    fn rejects_bad_manifests_naming_step_and_field() {
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, depends_on: [b]}\n  - {name: b, handler: h, depends_on: [a]}\n",
            "cycle",
            "steps[b].depends_on",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, depends_on: [a]}\n",
            "cycle",
            "steps[a].depends_on",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, depends_on: [zzz]}\n",
            "unknown_dependency",
            "steps[a].depends_on",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h}\n  - {name: a, handler: h}\n",
            "duplicate_step",
            "steps[a].name",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, timeout: 5 parsecs}\n",
            "invalid_duration",
            "steps[a].timeout",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, retry: {initial: soon}}\n",
            "invalid_duration",
            "steps[a].retry.initial",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, when: 'input.x >'}\n",
            "invalid_when",
            "steps[a].when",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, colour: red}\n",
            "unknown_field",
            "steps[a].colour",
        );
        check_error(
            "name: w\nowner: me\nsteps:\n  - {name: a, handler: h}\n",
            "unknown_field",
            "owner",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a}\n",
            "missing_handler",
            "steps[a].handler",
        );
        check_error("name: w\nsteps: []\n", "empty_workflow", "steps");
        check_error(
            "steps:\n  - {name: a, handler: h}\n",
            "missing_field",
            "name",
        );
        check_error(
            "name: 'bad name'\nsteps:\n  - {name: a, handler: h}\n",
            "invalid_name",
            "name",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, kind: teleport}\n",
            "invalid_kind",
            "steps[a].kind",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, kind: sleep}\n",
            "missing_field",
            "steps[a].duration",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, retry: {max_attempts: 0}}\n",
            "invalid_retry",
            "steps[a].retry.max_attempts",
        );
        check_error("{\"name\": ", "invalid_manifest", "$");
        check_error("name: [unclosed\n", "invalid_manifest", "$");
        check_error("- just a list\n", "invalid_manifest", "$");
    }

    #[test]
    fn approval_timeouts_parse_and_are_checked() {
        let step = |fields: &str| format!("name: w\nsteps:\n  - {{name: a, {fields}}}\n");
        let def =
            Definition::parse(&step("kind: approval, timeout: 30d, on_timeout: approve")).unwrap();
        assert_eq!(def.steps[0].timeout_ms, Some(30 * 86_400_000));
        assert_eq!(def.steps[0].on_timeout, OnTimeout::Approve);
        let def = Definition::parse(&step("kind: approval, timeout: 1h")).unwrap();
        assert_eq!(def.steps[0].on_timeout, OnTimeout::Reject);
        check_error(
            &step("kind: approval, timeout: 1h, on_timeout: maybe"),
            "invalid_value",
            "steps[a].on_timeout",
        );
        check_error(
            &step("handler: h, on_timeout: approve"),
            "unknown_field",
            "steps[a].on_timeout",
        );
        check_error(
            &step("kind: approval, timeout: 366d"),
            "invalid_duration",
            "steps[a].timeout",
        );
    }

    #[test]
    fn numeric_fields_are_held_to_their_documented_ranges() {
        let step = |fields: &str| format!("name: w\nsteps:\n  - {{name: a, {fields}}}\n");
        let cases = [
            ("handler: h, timeout: 8d", "steps[a].timeout"),
            ("handler: h, timeout: 0s", "steps[a].timeout"),
            (
                "handler: h, heartbeat_timeout: 25h",
                "steps[a].heartbeat_timeout",
            ),
            ("kind: sleep, duration: 366d", "steps[a].duration"),
            (
                "handler: h, retry: {initial: 2d, max: 3d}",
                "steps[a].retry.initial",
            ),
            ("handler: h, retry: {max: 8d}", "steps[a].retry.max"),
            ("handler: h, timeout: 99999999999999d", "steps[a].timeout"),
        ];
        for (fields, path) in cases {
            check_error(&step(fields), "invalid_duration", path);
        }
        // The bounds themselves are accepted.
        let def = Definition::parse(&step(
            "handler: h, timeout: 7d, heartbeat_timeout: 1d, retry: {initial: 1d, max: 7d}",
        ))
        .unwrap();
        assert_eq!(def.steps[0].timeout_ms, Some(max_ms::TIMEOUT));
        Definition::parse(&step("kind: sleep, duration: 365d")).unwrap();
        check_error(
            &step("handler: h, retry: {max_attempts: 1001}"),
            "invalid_retry",
            "steps[a].retry.max_attempts",
        );
        check_error(
            &step("handler: h, retry: {multiplier: 11}"),
            "invalid_retry",
            "steps[a].retry.multiplier",
        );
        check_error(
            &step("handler: h, compensate: 'not a name'"),
            "invalid_name",
            "steps[a].compensate",
        );
        let long = format!(
            "name: w\ndescription: {}\nsteps:\n  - {{name: a, handler: h}}\n",
            "x".repeat(MAX_DESCRIPTION_LEN + 1)
        );
        check_error(&long, "invalid_description", "description");
        let steps: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| serde_json::json!({"name": format!("s{i}"), "handler": "h"}))
            .collect();
        let many = serde_json::json!({"name": "w", "steps": steps}).to_string();
        check_error(&many, "too_many_steps", "steps");
    }

    #[test]
    fn yaml_1_1_scalars_stay_strings() {
        let def = Definition::parse("name: w\nsteps:\n  - {name: a, handler: h, when: 'true'}\n")
            .unwrap();
        assert_eq!(def.steps[0].when.as_deref(), Some("true"));
        // `NO` stays a string, so a workflow named after a country code is not `false`.
        let err = Definition::parse("name: NO\nsteps:\n  - {name: a, handler: h}\n");
        assert_eq!(err.unwrap().name, "NO");
    }

    #[test]
    fn stored_manifests_keep_loading_under_stricter_condition_limits() {
        let manifest = "name: w\nsteps:\n  - {name: a, handler: h, when: 'input.l.all(a, input.l.all(b, input.l.all(c, input.l.all(d, true))))'}\n";
        let err = Definition::parse(manifest).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.path.as_str()),
            ("when_too_complex", "steps[a].when")
        );
        let def = Definition::parse_stored(manifest).expect("a stored manifest loads");
        assert!(def.steps[0].when.is_some());
        assert_eq!(
            Definition::parse_stored(
                "name: w\nsteps:\n  - {name: a, handler: h, when: 'input.x >'}\n"
            )
            .unwrap_err()
            .code,
            "invalid_when"
        );
    }

    #[test]
    fn trigger_rules_parse_and_handles_failure_needs_one_that_runs_after_a_failure() {
        let def = Definition::parse(
            "name: w\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a], run_if: any_failed, handles_failure: true}\n  - {name: c, handler: h, depends_on: [a], run_if: all_done}\n  - {name: d, handler: h, depends_on: [a], run_if: none_failed}\n",
        )
        .unwrap();
        let rules: Vec<_> = def
            .steps
            .iter()
            .map(|s| (s.run_if, s.handles_failure))
            .collect();
        assert_eq!(
            rules,
            vec![
                (RunIf::AllSucceeded, false),
                (RunIf::AnyFailed, true),
                (RunIf::AllDone, false),
                (RunIf::NoneFailed, false),
            ]
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, run_if: sometimes}\n",
            "invalid_trigger_rule",
            "steps[a].run_if",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, handles_failure: true}\n",
            "invalid_trigger_rule",
            "steps[a].handles_failure",
        );
        check_error(
            "name: w\nsteps:\n  - {name: a, handler: h, handles_failure: 'yes'}\n",
            "invalid_type",
            "steps[a].handles_failure",
        );
    }

    #[test]
    fn a_when_may_name_only_the_steps_ancestors_by_a_fixed_name() {
        let manifest = |when: &str| {
            format!(
                "name: w\nsteps:\n  - {{name: a, handler: h}}\n  - {{name: side, handler: h}}\n  - {{name: b, handler: h, depends_on: [a]}}\n  - {{name: c, handler: h, depends_on: [b], when: \"{when}\"}}\n"
            )
        };
        for ok in [
            "steps.b != null",
            "steps.a.x > 1 && has(steps.b.y)",
            "steps['a'] == null",
            "upstream.a.status == 'failed'",
            "input.l.all(x, x > 0)",
            // A comprehension variable named like the context is not it.
            "input.l.exists(steps, steps > 0)",
        ] {
            Definition::parse(&manifest(ok)).unwrap_or_else(|err| panic!("{ok}: {err}"));
        }
        for (bad, code) in [
            ("steps.side != null", "unknown_step_reference"),
            ("steps.nope != null", "unknown_step_reference"),
            ("upstream.side.status == 'failed'", "unknown_step_reference"),
            ("steps.c != null", "unknown_step_reference"),
            ("steps[input.k] != null", "dynamic_step_reference"),
            ("steps.size() > 0", "dynamic_step_reference"),
            ("'a' in upstream", "dynamic_step_reference"),
        ] {
            check_error(&manifest(bad), code, "steps[c].when");
        }
        let err = Definition::parse(&manifest("steps.side != null")).unwrap_err();
        assert!(
            err.message.contains("`side`") && err.message.contains("a, b"),
            "{err}"
        );
        // Stored definitions are not checked again: they keep loading.
        let stored = Definition::parse_stored(&manifest("steps.side != null")).unwrap();
        assert!(stored.steps[3].when.is_some());
    }

    #[test]
    fn a_for_each_may_name_only_the_steps_ancestors_by_a_fixed_name() {
        let manifest = |for_each: &str| {
            format!(
                "name: w\nsteps:\n  - {{name: a, handler: h}}\n  - {{name: side, handler: h}}\n  - {{name: b, handler: h, depends_on: [a]}}\n  - {{name: c, handler: h, depends_on: [b], for_each: \"{for_each}\"}}\n"
            )
        };
        for ok in [
            "steps.b.items",
            "steps.a.xs.filter(x, x > 1)",
            "steps['a'].xs",
            "upstream.a.status == 'failed' ? [] : [1]",
            "input.l",
        ] {
            Definition::parse(&manifest(ok)).unwrap_or_else(|err| panic!("{ok}: {err}"));
        }
        for (bad, code) in [
            ("steps.side.items", "unknown_step_reference"),
            ("steps.nope.items", "unknown_step_reference"),
            ("steps.c.items", "unknown_step_reference"),
            (
                "upstream.side.status == 'failed' ? [] : [1]",
                "unknown_step_reference",
            ),
            ("steps[input.k].items", "dynamic_step_reference"),
            ("[steps.size()]", "dynamic_step_reference"),
        ] {
            check_error(&manifest(bad), code, "steps[c].for_each");
        }
        let err = Definition::parse(&manifest("steps.side.items")).unwrap_err();
        assert!(
            err.message.contains("`for_each` names step `side`") && err.message.contains("a, b"),
            "{err}"
        );
        // Stored definitions are not checked again: they keep loading.
        let stored = Definition::parse_stored(&manifest("steps.side.items")).unwrap();
        assert!(stored.steps[3].fan_out.is_some());
    }

    #[test]
    fn for_each_fields_parse_with_their_defaults() {
        let def = Definition::parse(
            "name: w\nsteps:\n  - {name: list, handler: h}\n  - {name: each, handler: h, depends_on: [list], for_each: 'steps.list.items', max_parallel: 10}\n",
        )
        .unwrap();
        assert_eq!(def.steps[0].fan_out, None);
        assert_eq!(
            def.steps[1].fan_out,
            Some(FanOut {
                expression: "steps.list.items".into(),
                max_items: DEFAULT_MAX_ITEMS,
                max_parallel: Some(10),
            })
        );
        let def = Definition::parse(
            "name: w\nsteps:\n  - {name: a, handler: h, for_each: 'input.xs', max_items: 10000}\n",
        )
        .unwrap();
        let fan_out = def.steps[0].fan_out.as_ref().unwrap();
        assert_eq!((fan_out.max_items, fan_out.max_parallel), (10_000, None));
    }

    #[test]
    fn for_each_fields_are_validated() {
        let step = |fields: &str| format!("name: w\nsteps:\n  - {{name: a, {fields}}}\n");
        check_error(
            &step("handler: h, for_each: 'input.xs >'"),
            "invalid_for_each",
            "steps[a].for_each",
        );
        check_error(
            &step("handler: h, for_each: 'input.xs', max_items: 0"),
            "invalid_for_each",
            "steps[a].max_items",
        );
        check_error(
            &step("handler: h, for_each: 'input.xs', max_items: 10001"),
            "invalid_for_each",
            "steps[a].max_items",
        );
        check_error(
            &step("handler: h, for_each: 'input.xs', max_parallel: -1"),
            "invalid_for_each",
            "steps[a].max_parallel",
        );
        check_error(
            &step("handler: h, max_parallel: 2"),
            "unknown_field",
            "steps[a].max_parallel",
        );
        check_error(
            &step("kind: approval, for_each: 'input.xs'"),
            "unknown_field",
            "steps[a].for_each",
        );
        check_error(
            &step(
                "handler: h, for_each: 'input.l.all(a, input.l.all(b, input.l.all(c, input.l.all(d, true))))'",
            ),
            "when_too_complex",
            "steps[a].for_each",
        );
    }
}
