//! Property tests of the parsers that take user input: manifests (arbitrary
//! text, and structured manifests near the valid ones), durations and `when`
//! conditions. None may panic, and every refusal is a validation error with
//! a stable code and the path of the field.

use proptest::prelude::*;
use serde_json::{Value, json};
use weft_core::{Definition, ValidationError, condition, duration};

/// Every code is a stable identifier from the catalogue: lower-case snake case.
fn assert_well_formed(err: &ValidationError) {
    let code = err.code.as_str();
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "code {code:?}"
    );
    assert!(!err.path.is_empty(), "no path in {err}");
    assert!(!err.message.is_empty(), "no message in {err}");
}

fn check_manifest_text(text: &str) {
    if let Err(err) = Definition::parse(text) {
        assert_well_formed(&err);
    }
}

/// A value for a manifest field: often right, often a little wrong.
fn near_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("h")),
        Just(json!("30s")),
        Just(json!("1h30m")),
        Just(json!("0s")),
        Just(json!("8d")),
        Just(json!("99999999999999999999d")),
        Just(json!("1.5s")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["a", "b"])),
        Just(json!({"max_attempts": 3})),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z0-9 ./_-]{0,12}".prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ]
}

const STEP_KEYS: &[&str] = &[
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
    "colour",
];

const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "backoff",
    "initial",
    "max",
    "jitter",
    "multiplier",
];

/// A step: a valid core (name, handler) with random fields changed, added or
/// removed.
fn near_step() -> impl Strategy<Value = Value> {
    (
        "[a-c]",
        proptest::collection::vec((proptest::sample::select(STEP_KEYS), near_value()), 0..5),
        proptest::collection::vec((proptest::sample::select(RETRY_KEYS), near_value()), 0..4),
        prop_oneof![
            Just("task"),
            Just("sleep"),
            Just("approval"),
            Just("teleport")
        ],
        proptest::collection::vec("[a-d]", 0..3),
    )
        .prop_map(|(name, fields, retry, kind, deps)| {
            let mut step = json!({"name": name, "handler": "h.x"});
            if kind != "task" {
                step["kind"] = json!(kind);
                step.as_object_mut().unwrap().remove("handler");
                if kind == "sleep" {
                    step["duration"] = json!("1s");
                }
            }
            if !deps.is_empty() {
                step["depends_on"] = json!(deps);
            }
            for (key, value) in fields {
                step[key] = value;
            }
            if !retry.is_empty() {
                let mut policy = json!({});
                for (key, value) in retry {
                    policy[key] = value;
                }
                step["retry"] = policy;
            }
            step
        })
}

fn near_manifest() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("w")), Just(json!("team/billing")), near_value()],
        proptest::collection::vec(near_step(), 0..6),
        proptest::option::of(near_value()),
    )
        .prop_map(|(name, steps, description)| {
            let mut manifest = json!({"name": name, "steps": steps});
            if let Some(description) = description {
                manifest["description"] = description;
            }
            manifest
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_a_definition_or_a_coded_error(text in "\\PC{0,200}") {
        check_manifest_text(&text);
    }

    #[test]
    fn yaml_shaped_text_is_a_definition_or_a_coded_error(
        text in "(name: [a-z]{1,3}\n)?(steps:\n)?(  - \\{[a-z:, \\[\\]0-9]{0,30}\\}\n){0,4}[ -~\n]{0,20}"
    ) {
        check_manifest_text(&text);
    }

    #[test]
    fn near_valid_manifests_are_definitions_or_coded_errors(manifest in near_manifest()) {
        let from_value = Definition::from_value(&manifest);
        if let Err(err) = &from_value {
            assert_well_formed(err);
        }
        // The same manifest as JSON text and as YAML text reads the same.
        let json_text = serde_json::to_string(&manifest).unwrap();
        let from_json = Definition::parse(&json_text);
        prop_assert_eq!(from_json.is_ok(), from_value.is_ok(), "{}", json_text);
        if let Ok(def) = from_value {
            // A definition holds the documented ranges.
            for step in &def.steps {
                // An approval may wait longer than a task may run.
                let max = match step.kind {
                    weft_core::definition::StepKind::Approval => weft_core::definition::max_ms::APPROVAL_TIMEOUT,
                    _ => weft_core::definition::max_ms::TIMEOUT,
                };
                prop_assert!(step.timeout_ms.is_none_or(|ms| (1..=max).contains(&ms)), "{:?}", step.timeout_ms);
                prop_assert!(step.retry.max_attempts >= 1 && step.retry.max_attempts <= 1000);
                prop_assert!(step.retry.initial_ms <= step.retry.max_ms);
            }
        }
    }

    #[test]
    fn durations_never_panic(text in "\\PC{0,30}") {
        let _ = duration::parse_ms(&text);
    }

    #[test]
    fn well_formed_durations_add_up(parts in proptest::collection::vec((0u64..1_000_000, 0usize..5), 1..5)) {
        const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
        let text: String = parts.iter().map(|(n, u)| format!("{n}{}", UNITS[*u].0)).collect();
        let expected: u64 = parts.iter().map(|(n, u)| n * UNITS[*u].1).sum();
        prop_assert_eq!(duration::parse_ms(&text), Ok(expected));
    }

    #[test]
    fn formatted_durations_read_back(ms in 1u64..=365 * 86_400_000) {
        prop_assert_eq!(duration::parse_ms(&duration::format_ms(ms)), Ok(ms));
    }

    #[test]
    fn conditions_compile_or_refuse_without_panicking(
        expression in prop_oneof![
            "\\PC{0,60}",
            "(input|steps)(\\.[a-z]{1,3}){0,3} (==|>|<|&&|\\|\\||in) ([0-9]{1,3}|'[a-z]{0,3}'|true|null|\\[\\]|input\\.x)",
            "[a-z.()\\[\\] 0-9'\"!=<>&|+*/%-]{0,40}",
        ]
    ) {
        let _ = condition::compile(&expression);
        let input = json!({"x": 1, "a": {"b": [1, 2]}, "s": "t"});
        let _ = condition::evaluate(&expression, &condition::Vars::new(input, json!({})));
    }
}
