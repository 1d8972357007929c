//! `when` conditions: CEL expressions over `{input, steps}`. The CEL library is
//! used only here, so its frequent breaking releases touch one file.

use serde_json::Value;

/// Checks that an expression compiles.
pub fn compile(expression: &str) -> Result<(), String> {
    cel::Program::compile(expression)
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// Evaluates a condition. Anything but a boolean result is an error: a
/// condition that quietly treats `"no"` or `0` as true is worse than a failed run.
pub fn evaluate(expression: &str, input: &Value, steps: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(expression).map_err(|err| err.to_string())?;
    let mut context = cel::Context::default();
    context
        .add_variable("input", input)
        .map_err(|err| err.to_string())?;
    context
        .add_variable("steps", steps)
        .map_err(|err| err.to_string())?;
    match program.execute(&context).map_err(|err| err.to_string())? {
        cel::Value::Bool(result) => Ok(result),
        other => Err(format!("`when` must be a boolean, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_input_and_steps() {
        let input = json!({"total": 12, "country": "NL"});
        let steps = json!({"reserve": {"ok": true}});
        let cases = [
            ("input.total > 0", Ok(true)),
            ("input.total > 100", Ok(false)),
            ("steps.reserve.ok && input.country == 'NL'", Ok(true)),
            ("input.country.matches('^N')", Ok(true)),
            ("input.total", Err(())),
            ("input.missing > 1", Err(())),
        ];
        for (expression, expected) in cases {
            assert_eq!(
                evaluate(expression, &input, &steps).map_err(|_| ()),
                expected,
                "{expression}"
            );
        }
    }

    #[test]
    fn compile_rejects_garbage() {
        assert!(compile("input.total > ").is_err());
        assert!(compile("input.total > 1").is_ok());
    }
}
