//! Property tests of the JSON → CEL rule (`condition::to_cel`) and of
//! arithmetic and comparisons over arbitrary JSON: a condition answers a
//! boolean or an error, never panics, and numbers keep their values.

use proptest::prelude::*;
use serde_json::{Value, json};
use weft_core::condition::{self, Vars};

/// Numbers of every sign, size and kind: small and extreme integers, values
/// just past `i64::MAX`, fractions, exponents, negative zero.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (i64::MAX as u64..=u64::MAX).prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        (-1000i64..1000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(-0.0)),
        Just(json!(1.0)),
        Just(json!(1e300)),
        Just(json!(-1e-300)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An operand: a path into the input, or a literal of any kind.
fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("input.a".to_owned()),
        Just("input.b".to_owned()),
        Just("input.l[0]".to_owned()),
        Just("input.m.k".to_owned()),
        Just("steps.s".to_owned()),
        any::<i64>().prop_map(|i| if i < 0 {
            format!("({i})")
        } else {
            i.to_string()
        }),
        any::<u64>().prop_map(|u| format!("{u}u")),
        (-1e6f64..1e6).prop_map(|f| format!("({f:?})")),
        Just("null".to_owned()),
        Just("'x'".to_owned()),
        Just("true".to_owned()),
        Just("[1, 2]".to_owned()),
    ]
}

fn arithmetic() -> impl Strategy<Value = String> {
    let op = prop_oneof![Just("+"), Just("-"), Just("*"), Just("/"), Just("%")];
    operand().prop_recursive(3, 12, 2, move |inner| {
        (inner.clone(), op.clone(), inner).prop_map(|(l, o, r)| format!("({l} {o} {r})"))
    })
}

fn comparison() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just("=="),
        Just("!="),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">="),
    ];
    (arithmetic(), op, arithmetic()).prop_map(|(l, o, r)| format!("{l} {o} {r}"))
}

/// The rule, stated once more from the outside.
fn expected_kind(n: &serde_json::Number) -> &'static str {
    if n.is_i64() {
        "int"
    } else if n.is_u64() {
        "uint"
    } else {
        "double"
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn numbers_map_by_the_rule_and_keep_their_value(n in number()) {
        let Value::Number(num) = &n else { unreachable!() };
        let vars = Vars::new(json!({"n": n}), json!({}));
        let kind = expected_kind(num);
        prop_assert_eq!(
            condition::evaluate(&format!("type(input.n) == {kind}"), &vars),
            Ok(true),
            "{}", n
        );
        // Equal to itself (as its own literal) and to its value as a double.
        let literal = match kind {
            "int" => format!("{}", num.as_i64().unwrap()),
            "uint" => format!("{}u", num.as_u64().unwrap()),
            _ => format!("{:?}", num.as_f64().unwrap()),
        };
        let literal = if literal.starts_with('-') { format!("({literal})") } else { literal };
        prop_assert_eq!(
            condition::evaluate(&format!("input.n == {literal}"), &vars),
            Ok(true),
            "{} vs {}", n, literal
        );
        match condition::to_cel(&n) {
            cel::Value::Int(i) => prop_assert_eq!(Some(i), num.as_i64()),
            cel::Value::UInt(u) => {
                prop_assert_eq!(Some(u), num.as_u64());
                prop_assert!(u > i64::MAX as u64);
            }
            cel::Value::Float(f) => prop_assert_eq!(Some(f), num.as_f64()),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn any_json_converts_and_reads_back(value in json_value()) {
        let vars = Vars::new(json!({"v": value.clone()}), json!({}));
        // null is null, a map has its keys, a list its size.
        let check = match &value {
            Value::Null => "input.v == null".to_owned(),
            Value::Bool(b) => format!("input.v == {b}"),
            Value::String(s) => format!("size(input.v) == {}", s.chars().count()),
            Value::Array(items) => format!("size(input.v) == {}", items.len()),
            Value::Object(map) => format!("size(input.v) == {}", map.len()),
            Value::Number(_) => "input.v == input.v".to_owned(),
        };
        prop_assert_eq!(condition::evaluate(&check, &vars), Ok(true), "{}", value);
        if let Value::Object(map) = &value {
            for key in map.keys() {
                // `in`, not `has()`: a key may be a CEL reserved word (`in`).
                prop_assert_eq!(
                    condition::evaluate(&format!("'{key}' in input.v"), &vars),
                    Ok(true)
                );
            }
        }
    }

    #[test]
    fn arithmetic_and_comparisons_never_panic(
        input in json_value(),
        a in number(),
        b in number(),
        step in json_value(),
        expression in comparison(),
    ) {
        let mut input = json!({"a": a, "b": b, "l": [input.clone()], "m": {"k": input}});
        if let Value::Object(map) = &mut input {
            map.insert("extra".into(), Value::Null);
        }
        let vars = Vars::new(input, json!({"s": step}));
        // A boolean or an error naming the expression: nothing else.
        match condition::evaluate(&expression, &vars) {
            Ok(_) => {}
            Err(err) => prop_assert!(err.0.contains("`when`"), "{}", err),
        }
    }
}

#[test]
fn integers_that_fit_do_integer_arithmetic() {
    let vars = Vars::new(
        json!({"n": 12, "big": u64::MAX, "neg": i64::MIN, "price": 12.5, "one": 1.0}),
        json!({"s": null}),
    );
    let cases = [
        ("input.n + 1 == 13", Ok(true)),
        ("input.n > 0", Ok(true)),
        ("input.n * 2 == 24", Ok(true)),
        ("input.big > input.n", Ok(true)),
        ("input.big == 18446744073709551615u", Ok(true)),
        ("input.neg < 0", Ok(true)),
        ("input.price > 12", Ok(true)),
        ("input.price + 1.0 == 13.5", Ok(true)),
        ("input.one == 1", Ok(true)),
        ("type(input.one) == double", Ok(true)),
        ("steps.s == null", Ok(true)),
    ];
    for (expression, expected) in cases {
        assert_eq!(
            condition::evaluate(expression, &vars),
            expected,
            "{expression}"
        );
    }
    for error in [
        "input.price + 1 > 0",
        "input.neg - 1 < 0",
        "input.big + 1u > 0u",
        "input.n / 0 == 0",
        "input.n + input.big > 0",
    ] {
        let err = condition::evaluate(error, &vars).unwrap_err();
        assert!(err.0.contains(error), "names the expression: {err}");
    }
}
