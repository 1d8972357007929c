//! Holds a JSON request body to the JSON types its schema in the served
//! OpenAPI document states, where serde alone is looser or stricter: serde
//! reads a struct from an array (`"timing": [1, 2]`), which the document
//! forbids, and refuses `12.0` for an integer, which JSON Schema allows (an
//! integer is any number with a zero fraction). Bounds are checked after
//! deserializing, by [`crate::limits`].

use std::sync::OnceLock;

use serde_json::Value;

/// The served document, built once.
fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(crate::routes::openapi_document)
}

/// Checks `value` against the component schema `name` of the document,
/// rewriting integral floats where an integer is expected. `Err` names the
/// offending field (`results[0].timing`). A name the document lacks checks
/// nothing.
pub fn conform(name: &str, value: &mut Value) -> Result<(), String> {
    let doc = document();
    match doc.pointer(&format!("/components/schemas/{name}")) {
        Some(schema) => walk(doc, schema, value, &mut String::from("$"), 0),
        None => Ok(()),
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or(&Value::Null),
        None => schema,
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The schemas nest only as deep as the wire types; past this a value is
/// free-form.
const MAX_DEPTH: usize = 16;

fn walk(
    doc: &Value,
    schema: &Value,
    value: &mut Value,
    path: &mut String,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let schema = resolve(doc, schema);
    // `Option<Struct>` is `oneOf: [{type: null}, {$ref}]`.
    if let Some(branches) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        if value.is_null() && branches.iter().any(|b| types(b).contains(&"null")) {
            return Ok(());
        }
        let mut first_error = None;
        for branch in branches.iter().filter(|b| types(b) != ["null"]) {
            let mut candidate = value.clone();
            match walk(doc, branch, &mut candidate, path, depth + 1) {
                Ok(()) => {
                    *value = candidate;
                    return Ok(());
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        return first_error.map_or(Ok(()), Err);
    }
    let allowed = types(schema);
    if allowed.is_empty() {
        return Ok(());
    }
    if value.is_null() && allowed.contains(&"null") {
        return Ok(());
    }
    let is_integral = |f: f64| f.fract() == 0.0 && f.abs() < 9.0e15;
    match value {
        Value::Array(items) if allowed.contains(&"array") => {
            if let Some(item_schema) = schema.get("items") {
                let base = path.len();
                for (i, item) in items.iter_mut().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    walk(doc, item_schema, item, path, depth + 1)?;
                    path.truncate(base);
                }
            }
            Ok(())
        }
        Value::Object(fields) if allowed.contains(&"object") => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let base = path.len();
                for (key, property) in properties {
                    if let Some(field) = fields.get_mut(key) {
                        path.push('.');
                        path.push_str(key);
                        walk(doc, property, field, path, depth + 1)?;
                        path.truncate(base);
                    }
                }
            }
            Ok(())
        }
        Value::Number(n)
            if allowed.contains(&"integer")
                && n.as_f64().is_some_and(is_integral)
                && !(n.is_i64() || n.is_u64()) =>
        {
            let f = n.as_f64().unwrap_or_default();
            *value = Value::from(f as i64);
            Ok(())
        }
        Value::Array(_) | Value::Object(_) => Err(format!(
            "`{path}` must be {}, not {}",
            allowed.join(" or "),
            if value.is_array() {
                "an array"
            } else {
                "an object"
            }
        )),
        // Strings, numbers and booleans: serde's own type checks apply.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::conform;

    #[test]
    fn arrays_for_objects_are_refused_and_integral_floats_become_integers() {
        let mut value = json!({"results": [{"lease_id": "l", "timing": [null, null]}]});
        let err = conform("ResultsRequest", &mut value).unwrap_err();
        assert!(err.contains("$.results[0].timing"), "{err}");

        let mut value = json!({"runs": [[null, null]]});
        assert!(conform("StartRunsRequest", &mut value).is_err());

        let mut value = json!({"worker_id": "w", "handlers": ["h"], "wait_ms": 1411.0});
        conform("PollRequest", &mut value).unwrap();
        assert_eq!(value["wait_ms"], json!(1411));

        // Free-form values keep what they carry.
        let mut value = json!({"input": [1.0, {"a": []}]});
        conform("StartRunRequest", &mut value).unwrap();
        assert_eq!(value["input"], json!([1.0, {"a": []}]));
        let mut value = json!({"results": [{"lease_id": "l", "timing": null, "error": null}]});
        conform("ResultsRequest", &mut value).unwrap();
    }
}
