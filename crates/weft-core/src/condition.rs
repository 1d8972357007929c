//! `when` conditions: CEL expressions over `{input, steps, upstream}`. The CEL
//! library is used only here, so its frequent breaking releases touch one file.
//!
//! JSON values become CEL values by one rule, [`to_cel`]: `null` → `null`,
//! booleans → `bool`, strings → `string`, arrays → `list`, objects → `map`
//! with `string` keys, and a number → `int` when it is an integer that fits
//! an i64, `uint` when it is an integer above `i64::MAX` (up to `u64::MAX`),
//! `double` otherwise (a fraction or an exponent: `1.0` and `1e3` are
//! doubles). CEL compares numbers of different kinds by value (`1 == 1.0`,
//! `input.n > 0` for a uint) but does no arithmetic across kinds:
//! `input.price + 1` is an error when `price` is `12.5`; write `1.0`, or
//! convert with `double()` / `int()`. Overflow, division by zero and a
//! missing key are errors, never a wrapped or made-up value.
//!
//! What a condition sees ([`Vars`]): `input`, the run input; `steps`, every
//! step of the run by name, its output when it completed and `null`
//! otherwise (skipped, failed, cancelled, not yet run); `upstream`, the
//! outcome `{status, reason, error}` of each of the step's ancestors. A manifest being registered may
//! name in `steps.X` / `upstream.X` only the step's ancestors
//! ([`references`]).
//!
//! The library has no evaluation budget of its own, so a condition is held to
//! [`LIMITS`]: static ones checked when a manifest is validated (size, depth,
//! nesting of comprehensions such as `all`, `exists`, `map`, `filter`), a cap
//! on the data it sees, and a count of loop iterations, checked as it runs, that
//! stops it once over budget. Wall-clock limits are the caller's (see
//! [`Evaluate`]): this module has no clock.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use cel::{
    common::{
        ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr},
        value::CowVal,
    },
    objects::ResolveResult,
};
use serde_json::Value;

use crate::ErrorCode;

/// The bounds a `when` condition is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest expression, in bytes of its source.
    pub max_expression_bytes: usize,
    /// Deepest nesting of brackets in the source and of the parsed tree.
    pub max_depth: usize,
    /// Deepest nesting of comprehensions (`all`, `exists`, `exists_one`,
    /// `map`, `filter`) inside one another.
    pub max_comprehension_nesting: usize,
    /// Largest data a condition sees: the run input and the completed steps'
    /// outputs, in bytes of their JSON.
    pub max_data_bytes: usize,
    /// Most loop iterations of one evaluation, all comprehensions together;
    /// an iteration that builds a string or list also counts one per 64 of its
    /// characters or elements.
    pub max_iterations: u64,
}

/// The limits every condition is held to (documented in README.md).
pub const LIMITS: Limits = Limits {
    max_expression_bytes: 4096,
    max_depth: 32,
    max_comprehension_nesting: 3,
    max_data_bytes: 1024 * 1024,
    max_iterations: 100_000,
};

/// Why a condition was refused when its manifest was validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// `invalid_when` (does not parse) or `when_too_complex` (over a static limit).
    pub code: ErrorCode,
    pub message: String,
}

/// A condition that could not decide: over a limit, or an evaluation error.
/// The step fails with reason `condition_error` and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// The variables a condition sees, each a JSON value turned into CEL by
/// [`to_cel`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars {
    /// The run's input.
    pub input: Value,
    /// `{step name: output}` for every step: its output when it completed,
    /// `null` otherwise.
    pub steps: Value,
    /// `{step name: {status, reason, error}}` for each of the step's
    /// ancestors.
    pub upstream: Value,
}

impl Vars {
    /// `input` and `steps` only, `upstream` empty.
    pub fn new(input: Value, steps: Value) -> Self {
        Vars {
            input,
            steps,
            upstream: Value::Object(serde_json::Map::new()),
        }
    }
}

/// A condition's answer and, when the evaluator has a clock, how long it
/// took (ms, including the wait for a free evaluator thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// `Ok(true)` runs the step, `Ok(false)` skips it.
    pub result: Result<bool, EvalError>,
    /// Wall time of the evaluation in ms; `None` from [`Inline`], which has
    /// no clock.
    pub condition_ms: Option<u64>,
}

/// How the state machine evaluates conditions. [`Inline`] evaluates on the
/// calling thread; the store's evaluator runs [`evaluate`] on a bounded
/// pool of threads with a time limit.
pub trait Evaluate {
    /// Evaluates `expression` over `vars`.
    fn evaluate(&self, expression: &str, vars: &Vars) -> Evaluation;

    /// The items of a `for_each` list; anything but a list is an error.
    /// Evaluated with [`evaluate_list`] on the calling thread unless the
    /// evaluator says otherwise.
    fn evaluate_list(&self, expression: &str, vars: &Vars) -> Result<Vec<Value>, EvalError> {
        evaluate_list(expression, vars)
    }
}

/// [`evaluate`] on the calling thread: [`LIMITS`] bound its work, nothing
/// bounds its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl Evaluate for Inline {
    fn evaluate(&self, expression: &str, vars: &Vars) -> Evaluation {
        Evaluation {
            result: evaluate(expression, vars),
            condition_ms: None,
        }
    }
}

/// The one rule from JSON to CEL values (see the module doc): integers that
/// fit an i64 are `int`, larger ones `uint`, every other number `double`;
/// arrays are lists and objects maps with string keys. Total: it never fails.
pub fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                // Without serde_json's arbitrary precision every other number
                // is a finite f64.
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => cel::Value::Map(cel::objects::Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// A name a condition reads from `steps` or `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `steps.X`, `steps["X"]`, `upstream.X` or `upstream["X"]`: the step `X`.
    Step(String),
    /// `steps` or `upstream` read other than by a fixed name (`steps[x]`,
    /// `steps.size()`, `x in upstream`): which variable.
    Dynamic(&'static str),
}

/// The step names a parsed expression reads from `steps` and `upstream`, in
/// source order, for the static check at registration. A comprehension
/// variable that shadows `steps` or `upstream` is not followed.
pub fn references(expression: &str) -> Result<Vec<Reference>, CompileError> {
    let program = compile_program(expression)?;
    let mut found = Vec::new();
    collect_references(&program.expression().expr, &mut found, 0);
    Ok(found)
}

fn step_var(expr: &Expr) -> Option<&'static str> {
    match expr {
        Expr::Ident(name) if name == "steps" => Some("steps"),
        Expr::Ident(name) if name == "upstream" => Some("upstream"),
        _ => None,
    }
}

fn collect_references(expr: &Expr, found: &mut Vec<Reference>, depth: usize) {
    // The tree's depth is bounded by the limits checked before (and by the
    // parser's own); this guard only keeps a pathological tree off the stack.
    if depth > 256 {
        return;
    }
    match expr {
        Expr::Select(select) if step_var(&select.operand.expr).is_some() => {
            found.push(Reference::Step(select.field.clone()));
        }
        Expr::Call(call)
            if call.func_name == "_[_]"
                && call.target.is_none()
                && call.args.len() == 2
                && step_var(&call.args[0].expr).is_some() =>
        {
            match &call.args[1].expr {
                Expr::Literal(cel::common::ast::LiteralValue::String(name)) => {
                    found.push(Reference::Step(name.inner().to_owned()));
                }
                other => {
                    found.push(Reference::Dynamic(
                        step_var(&call.args[0].expr).unwrap_or("steps"),
                    ));
                    collect_references(other, found, depth + 1);
                }
            }
        }
        Expr::Ident(_) => {
            if let Some(var) = step_var(expr) {
                found.push(Reference::Dynamic(var));
            }
        }
        Expr::Comprehension(c)
            if step_var(&Expr::Ident(c.iter_var.clone())).is_some()
                || step_var(&Expr::Ident(c.accu_var.clone())).is_some() =>
        {
            collect_references(&c.iter_range.expr, found, depth + 1);
        }
        _ => {
            for child in children(expr) {
                collect_references(child, found, depth + 1);
            }
        }
    }
}

/// `expression` shortened for an error message.
pub fn excerpt(expression: &str) -> String {
    const MAX: usize = 120;
    if expression.len() <= MAX {
        return expression.to_owned();
    }
    let mut end = MAX;
    while !expression.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &expression[..end])
}

fn too_complex(message: String) -> CompileError {
    CompileError {
        code: ErrorCode::WhenTooComplex,
        message,
    }
}

/// Deepest bracket nesting of the source, outside string literals. The parser
/// recurses per level, so this is checked before it runs.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The children of a node, in no particular order.
fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| &t.expr)
            .chain(call.args.iter().map(|a| &a.expr))
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range.expr,
            &c.accu_init.expr,
            &c.loop_cond.expr,
            &c.loop_step.expr,
            &c.result.expr,
        ],
        Expr::List(list) => list.elements.iter().map(|e| &e.expr).collect(),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(select) => vec![&select.operand.expr],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&Expr> {
    entries
        .iter()
        .flat_map(|e| match &e.expr {
            EntryExpr::StructField(f) => vec![&f.value.expr],
            EntryExpr::MapEntry(m) => vec![&m.key.expr, &m.value.expr],
        })
        .collect()
}

/// Checks the parsed tree's depth and comprehension nesting, recursing no
/// deeper than the limit.
fn check_tree(expr: &Expr, depth: usize, nesting: usize, limits: &Limits) -> Result<(), String> {
    if depth > limits.max_depth {
        return Err(format!(
            "is nested more than {} levels deep",
            limits.max_depth
        ));
    }
    let nesting = nesting + usize::from(matches!(expr, Expr::Comprehension(_)));
    if nesting > limits.max_comprehension_nesting {
        return Err(format!(
            "nests comprehensions (all, exists, exists_one, map, filter) more than {} deep",
            limits.max_comprehension_nesting
        ));
    }
    children(expr)
        .into_iter()
        .try_for_each(|child| check_tree(child, depth + 1, nesting, limits))
}

/// Parses an expression and checks it against the static `limits`.
fn parse(expression: &str, limits: &Limits) -> Result<cel::Program, CompileError> {
    if expression.len() > limits.max_expression_bytes {
        return Err(too_complex(format!(
            "`when` is {} bytes long, over the limit of {}",
            expression.len(),
            limits.max_expression_bytes
        )));
    }
    if bracket_depth(expression) > limits.max_depth {
        return Err(too_complex(format!(
            "`when` nests brackets more than {} deep",
            limits.max_depth
        )));
    }
    let program = compile_program(expression)?;
    check_tree(&program.expression().expr, 0, 0, limits)
        .map_err(|what| too_complex(format!("`when` {what}")))?;
    Ok(program)
}

/// Checks that an expression compiles and is within [`LIMITS`]. The error's
/// `code` is `invalid_when` or `when_too_complex`.
pub fn compile(expression: &str) -> Result<(), CompileError> {
    parse(expression, &LIMITS).map(|_| ())
}

/// Checks only that an expression compiles (code `invalid_when`): for
/// conditions stored under earlier limits, which [`evaluate`] checks again.
pub fn compile_syntax(expression: &str) -> Result<(), CompileError> {
    compile_program(expression).map(|_| ())
}

/// The library's parse (it stops recursing at a depth of its own), with its
/// message cut to the first line: the rest repeats the source under each error.
fn compile_program(expression: &str) -> Result<cel::Program, CompileError> {
    cel::Program::compile(expression).map_err(|err| {
        let err = err.to_string();
        let first = err.lines().next().unwrap_or_default();
        CompileError {
            code: ErrorCode::InvalidWhen,
            message: format!("`when` does not compile: {}", excerpt(first)),
        }
    })
}

/// Bytes of `value` as JSON, counted without building the text.
fn json_bytes(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Checks the data a condition would see against `limits.max_data_bytes`.
/// Cheap: callers run it before handing the evaluation elsewhere.
pub fn check_data(expression: &str, vars: &Vars) -> Result<(), EvalError> {
    check_data_with(expression, vars, &LIMITS)
}

fn check_data_with(expression: &str, vars: &Vars, limits: &Limits) -> Result<(), EvalError> {
    let bytes = json_bytes(&vars.input) + json_bytes(&vars.steps) + json_bytes(&vars.upstream);
    if bytes > limits.max_data_bytes {
        return Err(EvalError(format!(
            "`when` `{}`: the run input and step outputs and outcomes it sees are {bytes} \
             bytes of JSON, over the limit of {} for conditions",
            excerpt(expression),
            limits.max_data_bytes
        )));
    }
    Ok(())
}

/// A function added to a CEL context, as the library takes it.
type CelFunction = Box<
    dyn for<'c, 'a> Fn(
            &mut cel::FunctionContext<'c, 'a>,
        ) -> Result<CowVal<'c, 'a>, cel::ExecutionError>
        + Send
        + Sync,
>;

/// The function every comprehension iteration goes through: it returns its
/// argument and counts the iteration.
const TICK: &str = "__weft_iteration";

fn tick(inner: cel::IdedExpr) -> cel::IdedExpr {
    cel::IdedExpr {
        id: inner.id,
        expr: Expr::Call(CallExpr {
            func_name: TICK.to_owned(),
            target: None,
            args: vec![inner],
        }),
    }
}

/// Routes every iteration of every comprehension in `expr` through [`TICK`],
/// keeping the shapes the library evaluates fast: a `map` or `filter` step
/// `@result + [item]` (guarded or not) keeps its form with the item or guard
/// counted, any other comprehension counts its loop condition.
fn instrument(expr: &mut Expr) {
    match expr {
        Expr::Comprehension(c) => {
            instrument_comprehension(c);
        }
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                instrument(&mut target.expr);
            }
            for arg in &mut call.args {
                instrument(&mut arg.expr);
            }
        }
        Expr::List(list) => list
            .elements
            .iter_mut()
            .for_each(|e| instrument(&mut e.expr)),
        Expr::Map(map) => instrument_entries(&mut map.entries),
        Expr::Struct(s) => instrument_entries(&mut s.entries),
        Expr::Select(select) => instrument(&mut select.operand.expr),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn instrument_entries(entries: &mut [cel::common::ast::IdedEntryExpr]) {
    for entry in entries {
        match &mut entry.expr {
            EntryExpr::StructField(f) => instrument(&mut f.value.expr),
            EntryExpr::MapEntry(m) => {
                instrument(&mut m.key.expr);
                instrument(&mut m.value.expr);
            }
        }
    }
}

fn instrument_comprehension(c: &mut ComprehensionExpr) {
    for part in [
        &mut c.iter_range,
        &mut c.accu_init,
        &mut c.loop_cond,
        &mut c.loop_step,
        &mut c.result,
    ] {
        instrument(&mut part.expr);
    }
    let accu = c.accu_var.clone();
    let literal_cond = matches!(c.loop_cond.expr, Expr::Literal(_));
    // `@result + [item]`: the appended list's items.
    let appended = |step: &mut cel::IdedExpr| -> bool {
        if let Expr::Call(call) = &mut step.expr
            && call.func_name == "_+_"
            && call.target.is_none()
            && let [lhs, rhs] = call.args.as_mut_slice()
            && matches!(&lhs.expr, Expr::Ident(name) if *name == accu)
            && let Expr::List(list) = &mut rhs.expr
        {
            for item in &mut list.elements {
                *item = tick(std::mem::take(item));
            }
            return true;
        }
        false
    };
    if literal_cond {
        if let Expr::Call(call) = &mut c.loop_step.expr
            && call.func_name == "_?_:_"
            && call.target.is_none()
            && let [guard, step, otherwise] = call.args.as_mut_slice()
            && matches!(&otherwise.expr, Expr::Ident(name) if *name == accu)
        {
            // `filter` (or a guarded `map`): every iteration runs the guard.
            let is_append = appended(step);
            *guard = tick(std::mem::take(guard));
            if is_append {
                return;
            }
        } else if appended(&mut c.loop_step) {
            return;
        }
    }
    c.loop_cond = tick(std::mem::take(&mut c.loop_cond));
}

/// Evaluates a condition within [`LIMITS`]. Anything but a boolean result is
/// an error: a condition that quietly treats `"no"` or `0` as true is worse
/// than a failed run. Every error names the expression and, when one was
/// exceeded, the limit.
pub fn evaluate(expression: &str, vars: &Vars) -> Result<bool, EvalError> {
    evaluate_with(expression, vars, &LIMITS)
}

/// [`evaluate`] with other limits (tests use small ones).
pub fn evaluate_with(expression: &str, vars: &Vars, limits: &Limits) -> Result<bool, EvalError> {
    evaluate_cancellable(expression, vars, limits, &Arc::new(AtomicBool::new(false)))
}

/// [`evaluate_with`] that stops at its next iteration once `cancel` is set
/// (by a caller that stopped waiting for it), so a condition given up on does
/// not keep its thread busy.
pub fn evaluate_cancellable(
    expression: &str,
    vars: &Vars,
    limits: &Limits,
    cancel: &Arc<AtomicBool>,
) -> Result<bool, EvalError> {
    let value = resolve(Field::When, expression, vars, limits, cancel)?;
    decide(expression, value)
}

/// The field an expression comes from, as its error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A `when` condition: must yield a boolean.
    When,
    /// A `for_each` list: must yield a list.
    ForEach,
}

impl Field {
    /// The manifest field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::When => "when",
            Field::ForEach => "for_each",
        }
    }
}

/// A `when`'s answer from its JSON value: anything but a boolean is an error.
pub fn decide(expression: &str, value: Value) -> Result<bool, EvalError> {
    match value {
        Value::Bool(result) => Ok(result),
        other => Err(EvalError(format!(
            "`when` `{}`: `when` must be a boolean, got {}",
            excerpt(expression),
            kind_of(&other)
        ))),
    }
}

/// A `for_each`'s items from its JSON value: anything but a list is an error.
pub fn items(expression: &str, value: Value) -> Result<Vec<Value>, EvalError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(EvalError(format!(
            "`for_each` `{}`: must yield a list, got {}",
            excerpt(expression),
            kind_of(&other)
        ))),
    }
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

/// Evaluates a `for_each` expression within [`LIMITS`]: the list it yields.
pub fn evaluate_list(expression: &str, vars: &Vars) -> Result<Vec<Value>, EvalError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let value = resolve(Field::ForEach, expression, vars, &LIMITS, &cancel)?;
    items(expression, value)
}

/// Evaluates `expression` (of the manifest field `field`) within `limits`
/// to its value as JSON, stopping at its next iteration once `cancel` is set.
pub fn resolve(
    field: Field,
    expression: &str,
    vars: &Vars,
    limits: &Limits,
    cancel: &Arc<AtomicBool>,
) -> Result<Value, EvalError> {
    let fail = |message: String| {
        EvalError(format!(
            "`{}` `{}`: {message}",
            field.as_str(),
            excerpt(expression)
        ))
    };
    let program = parse(expression, limits).map_err(|err| fail(err.message))?;
    check_data_with(expression, vars, limits)?;
    let mut expr = program.expression().clone();
    instrument(&mut expr.expr);

    let count = Arc::new(AtomicU64::new(0));
    let budget = limits.max_iterations;
    let counter = count.clone();
    let cancelled = cancel.clone();
    let iteration: CelFunction = Box::new(move |ftx| {
        let Some(value) = ftx.args.first() else {
            return Err(ftx.error("expects one argument"));
        };
        let size = value
            .as_sizer()
            .map_or(0, |s| u64::try_from(*s.size().inner()).unwrap_or(0));
        let spent = counter.fetch_add(1 + size / 64, Ordering::Relaxed) + 1 + size / 64;
        if cancelled.load(Ordering::Relaxed) {
            return Err(ftx.error("cancelled: its caller stopped waiting"));
        }
        if spent > budget {
            return Err(ftx.error(format!(
                "over the budget of {budget} iterations for one condition"
            )));
        }
        Ok(value.clone())
    });

    let mut context = cel::Context::default();
    context
        .add_function(TICK, iteration)
        .map_err(|err| fail(err.to_string()))?;
    context.add_variable_from_value("input", to_cel(&vars.input));
    context.add_variable_from_value("steps", to_cel(&vars.steps));
    context.add_variable_from_value("upstream", to_cel(&vars.upstream));
    let result: ResolveResult = cel::Value::resolve(&expr, &context);
    if count.load(Ordering::Relaxed) > budget {
        return Err(fail(format!(
            "stopped after {budget} iterations, the limit for one condition"
        )));
    }
    let value = result.map_err(|err| fail(err.to_string()))?;
    match value {
        // Kept apart so a `when`'s message names the value as before.
        cel::Value::Bool(result) => Ok(Value::Bool(result)),
        other => other
            .json()
            .map_err(|err| fail(format!("its value has no JSON form: {err:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_input_and_steps() {
        let input = json!({"total": 12, "country": "NL", "l": [1, 2, 3]});
        let steps = json!({"reserve": {"ok": true}});
        let cases = [
            ("input.total > 0", Ok(true)),
            ("input.total > 100", Ok(false)),
            ("steps.reserve.ok && input.country == 'NL'", Ok(true)),
            ("input.country.matches('^N')", Ok(true)),
            ("input.l.all(x, x > 0)", Ok(true)),
            ("input.l.exists(x, x > 2)", Ok(true)),
            ("input.l.exists_one(x, x > 2)", Ok(true)),
            ("input.l.map(x, x + x)[2] > 5", Ok(true)),
            ("input.l.filter(x, x > 1).size() == 2", Ok(true)),
            ("input.l.map(x, x > 1, x + x).size() == 2", Ok(true)),
            ("input.l.all(x, input.l.exists(y, y == x))", Ok(true)),
            ("has(input.total)", Ok(true)),
            ("input.total", Err(())),
            ("input.missing > 1", Err(())),
        ];
        for (expression, expected) in cases {
            assert_eq!(
                evaluate(expression, &Vars::new(input.clone(), steps.clone())).map_err(|_| ()),
                expected,
                "{expression}"
            );
        }
    }

    #[test]
    fn compile_rejects_garbage() {
        assert_eq!(compile("input.total > ").unwrap_err().code, "invalid_when");
        assert!(compile("input.total > 1").is_ok());
    }

    #[test]
    fn compile_refuses_what_is_over_the_static_limits() {
        let long = format!("input.x == '{}'", "a".repeat(5000));
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        let chain = vec!["1"; 1000].join("+") + " > 0";
        let nested = "input.l.all(a, input.l.all(b, input.l.all(c, input.l.all(d, true))))";
        for (expression, needle) in [
            (long.as_str(), "4096"),
            (deep.as_str(), "brackets"),
            (chain.as_str(), "32 levels"),
            (nested, "comprehensions"),
        ] {
            let err = compile(expression).unwrap_err();
            assert_eq!(err.code, "when_too_complex", "{expression:.40}");
            assert!(err.message.contains(needle), "{}", err.message);
        }
        // Stored under earlier limits, an expression still parses; its
        // evaluation applies the limits.
        assert!(compile_syntax(nested).is_ok());
        let err = evaluate(nested, &Vars::new(json!({"l": [1]}), json!({}))).unwrap_err();
        assert!(err.0.contains("comprehensions"), "{err}");
        // Brackets inside strings are text.
        assert!(compile(&format!("input.x == '{}'", "(".repeat(100))).is_ok());
        assert!(compile("input.l.all(a, input.l.all(b, input.l.all(c, true)))").is_ok());
    }

    #[test]
    fn a_heavy_comprehension_stops_at_the_iteration_budget() {
        let input = json!({"l": (0..5000).collect::<Vec<_>>()});
        let started = std::time::Instant::now();
        let err = evaluate(
            "input.l.all(x, input.l.all(y, x + y >= 0))",
            &Vars::new(input.clone(), json!({})),
        )
        .unwrap_err();
        assert!(err.0.contains("100000 iterations"), "{err}");
        assert!(
            err.0.contains("input.l.all(x"),
            "names the expression: {err}"
        );
        // 25M iterations took ~18 s unbounded; the budget stops it at 100k.
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        for expression in [
            "input.l.map(x, input.l.map(y, y)).size() > 0",
            "input.l.filter(x, input.l.filter(y, y < 0).size() > 0).size() > 0",
            "input.l.exists(x, input.l.exists_one(y, y < 0))",
        ] {
            let small = Limits {
                max_iterations: 10_000,
                ..LIMITS
            };
            let err = evaluate_with(expression, &Vars::new(input.clone(), json!({})), &small)
                .unwrap_err();
            assert!(err.0.contains("10000 iterations"), "{expression}: {err}");
        }
    }

    #[test]
    fn a_cancelled_evaluation_stops_at_its_next_iteration() {
        let input = json!({"l": [1, 2, 3]});
        let cancel = Arc::new(AtomicBool::new(true));
        let vars = Vars::new(input, json!({}));
        let err =
            evaluate_cancellable("input.l.all(x, x > 0)", &vars, &LIMITS, &cancel).unwrap_err();
        assert!(err.0.contains("cancelled"), "{err}");
        // Without iterations there is nothing to stop.
        assert_eq!(
            evaluate_cancellable("input.l.size() == 3", &vars, &LIMITS, &cancel),
            Ok(true)
        );
    }

    #[test]
    fn building_big_values_counts_too() {
        let input = json!({"l": (0..1000).collect::<Vec<_>>(), "s": "x".repeat(64_000)});
        let err = evaluate(
            "input.l.map(x, input.s + input.s).size() > 0",
            &Vars::new(input, json!({})),
        )
        .unwrap_err();
        assert!(err.0.contains("iterations"), "{err}");
    }

    #[test]
    fn the_data_a_condition_sees_is_capped() {
        let input = json!({"blob": "x".repeat(LIMITS.max_data_bytes)});
        let err = evaluate("true", &Vars::new(input, json!({}))).unwrap_err();
        assert!(
            err.0.contains("over the limit of 1048576"),
            "names the limit: {err}"
        );
    }
}
