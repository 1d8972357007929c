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
        Ok(def)
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
        check_fields(root, "$", &["name", "description", "queue", "steps"])?;
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
            canonical: serde_json::to_string(value).expect("a JSON value serializes"),
        })
    }
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
    "duration",
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
        ] {
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
    let timeout_ms = optional_duration(fields, &at, "timeout", max_ms::TIMEOUT)?;
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
    })
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
}
