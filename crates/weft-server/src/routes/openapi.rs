//! The OpenAPI document: generated from the handlers' annotations, then
//! completed with what annotations cannot say (error statuses, bounds).

use axum::Json;
use serde_json::{Value, json};
use weft_core::RunStatus;

use crate::limits::{self};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Weft", description = "Durable workflows you can see into"),
    paths(
        super::workflows::put_workflow,
        super::workflows::list_workflows,
        super::workflows::get_workflow,
        super::runs::start_run,
        super::runs::start_runs,
        super::runs::list_runs,
        super::runs::get_run,
        super::runs::run_events,
        super::stream::run_event_stream,
        super::runs::run_logs,
        super::actions::cancel_run,
        super::actions::retry_run,
        super::actions::approve_step,
        super::actions::reject_step,
        super::bulk::cancel_runs,
        super::bulk::retry_runs,
        super::compensation::skip_compensation,
        super::audit::list_audit,
        super::worker::poll,
        super::worker::heartbeat,
        super::worker::complete,
        super::worker::fail,
        super::worker::release,
        super::worker::results,
        super::worker::append_logs,
        super::tokens::create_token,
        super::tokens::list_tokens,
        super::tokens::revoke_token,
        super::health::live,
        super::health::ready,
        super::health::health
    )
)]
pub(crate) struct ApiDoc;

/// The OpenAPI document, generated from the handlers' annotations and the
/// `weft-api` types.
pub(crate) async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI document as served: the generated one, plus what the
/// annotations cannot say. Every operation lists each error status it can
/// answer with the error schema (400 for malformed or out-of-range input,
/// 404, 408 and 413 for bodies, 429 but on health probes, 500 and 503); the
/// run status filter is an
/// enum and `since` either a date-time or a duration.
pub fn openapi_document() -> Value {
    use utoipa::OpenApi;
    let mut api = ApiDoc::openapi();
    api.merge(crate::diagnostics::DiagnosticsDoc::openapi());
    let mut doc = serde_json::to_value(api).expect("the document serializes");
    let statuses: Vec<Value> = RunStatus::ALL.iter().map(|s| json!(s.as_str())).collect();
    let causes: Vec<Value> = weft_core::diagnosis::Cause::ALL
        .iter()
        .map(|c| json!(c.as_str()))
        .collect();
    for (schema, property, bounds) in schema_bounds() {
        let Some(target) = doc
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/{property}"
            ))
            .and_then(Value::as_object_mut)
        else {
            // A schema no route refers to is not in the document.
            continue;
        };
        for (key, value) in bounds.as_object().expect("bounds are an object") {
            target.insert(key.clone(), value.clone());
        }
    }
    if let Some(code) = doc
        .pointer_mut("/components/schemas/ErrorDetail/properties/code")
        .and_then(Value::as_object_mut)
    {
        document_error_codes(code);
    }
    let schemas_without_required: Vec<String> = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .map(|schemas| {
            schemas
                .iter()
                .filter(|(_, s)| s.get("required").is_none())
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    declare_security(&mut doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let has_body = op.contains_key("requestBody");
            // An empty body reads as `{}`: optional when nothing in it is required.
            let body_ref = op
                .get("requestBody")
                .and_then(|b| b.pointer("/content/application~1json/schema/$ref"))
                .and_then(Value::as_str)
                .map(|r| r.trim_start_matches("#/components/schemas/").to_owned());
            if let Some(name) = body_ref
                && schemas_without_required.contains(&name)
                && let Some(body) = op.get_mut("requestBody")
            {
                body["required"] = json!(false);
            }
            let params = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has_path_param = params.iter().any(|p| p["in"] == "path");
            for param in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                match (param["in"].as_str(), param["name"].as_str()) {
                    (Some("query"), Some("status")) => {
                        param["schema"] = json!({"type": "string", "enum": statuses});
                    }
                    (Some("query"), Some("action")) if path == "/v1/audit" => {
                        let actions: Vec<Value> = weft_store::AuditAction::ALL
                            .iter()
                            .map(|a| json!(a.as_str()))
                            .collect();
                        param["schema"] = json!({"type": "string", "enum": actions});
                    }
                    (Some("query"), Some("cause")) => {
                        param["schema"] = json!({"type": "string", "enum": causes});
                    }
                    (Some("query"), Some("cursor")) if path == "/v1/audit" => {
                        param["schema"] =
                            json!({"type": "string", "pattern": "^[1-9][0-9]{0,17}$"});
                    }
                    (Some("query"), Some("cursor")) => {
                        param["schema"] = json!({"type": "string", "pattern": CURSOR_PATTERN});
                    }
                    (Some("query"), Some("trace_id")) => {
                        param["schema"] = json!({"type": "string", "minLength": 32, "maxLength": 32, "pattern": TRACE_ID_PATTERN});
                    }
                    (Some("query"), Some("since" | "until")) => {
                        param["schema"] = json!({"oneOf": [
                            {"type": "string", "format": "date-time"},
                            {"type": "string", "pattern": SINCE_DURATION_PATTERN},
                        ]});
                    }
                    _ => {}
                }
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let api = path.starts_with("/v1/");
            let mut add = |status: &str, description: &str| {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    })
                });
            };
            if api && (has_body || !params.is_empty()) {
                add(
                    "400",
                    "Malformed or out-of-range input: `invalid_json`, `invalid_path`, `invalid_query` or the field's own code",
                );
            }
            if api && has_path_param {
                add(
                    "404",
                    "No such resource, or no such route (`route_not_found`)",
                );
            }
            if has_body {
                add("408", "The body did not arrive in time (`request_timeout`)");
                add(
                    "413",
                    "The body is larger than `--max-body-bytes` (`payload_too_large`)",
                );
            }
            if api {
                add(
                    "403",
                    "Refused as a possible forgery (see README, Security): `host_not_allowed` on a loopback listener, and for a POST, PUT or DELETE `origin_mismatch`, `client_header_required` (send `X-Weft-Client` or a JSON or YAML content type) or `csrf_token_invalid` (a session cookie without its CSRF token)",
                );
                add("500", "Unexpected server error (`internal`)");
                add("503", "The database is unavailable (`unavailable`)");
            }
            if !crate::ratelimit::is_exempt(path) {
                add(
                    "429",
                    "The caller is over its request rate, or (polls) holds its most long polls open (`rate_limited`); wait `Retry-After` seconds",
                );
                responses["429"]["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait before trying again",
                    "schema": {"type": "integer", "minimum": 1},
                }});
            }
        }
    }
    doc
}

/// The bearer scheme, and each operation's `security` and required role
/// from the route table: open operations have none; the others need a
/// token (`Authorization: Bearer <token>`) and answer 401 `unauthorized`
/// without a valid one and 403 `forbidden` when its role does not allow
/// them. The role is stated in the operation's description.
fn declare_security(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token, `weft_<id>_<secret>` (`weft tokens create`). Required unless the server runs with `--auth off`."
        }
    });
    for route in super::route_table() {
        let method = route.method.as_str().to_ascii_lowercase();
        let Some(op) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}",
                route.path.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let access = route.access;
        let role_line = format!("Access: {}.", access.describe());
        let description = match op.get("description").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => format!("{text}\n\n{role_line}"),
            _ => role_line,
        };
        op.insert("description".to_owned(), json!(description));
        if access == crate::auth::Access::Open {
            op.insert("security".to_owned(), json!([]));
            continue;
        }
        // `/metrics` may be open by flag: an empty requirement allows that.
        let security = if access == crate::auth::Access::Metrics {
            json!([{"bearer": []}, {}])
        } else {
            json!([{"bearer": []}])
        };
        op.insert("security".to_owned(), security);
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("responses are an object");
        for (status, text) in [
            (
                "401",
                "No valid API token (`unauthorized`): missing, malformed, unknown, expired or revoked; with `WWW-Authenticate: Bearer`",
            ),
            (
                "403",
                "The token's role or queues do not allow this call (`forbidden`)",
            ),
        ] {
            responses.entry(status.to_owned()).or_insert_with(|| {
                json!({
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                })
            });
        }
    }
}

/// The error body's `code` as the closed catalogue it is
/// ([`weft_core::ErrorCode`]): an enum of every code, and each code's
/// meaning and status appended to the field's description.
fn document_error_codes(code: &mut serde_json::Map<String, Value>) {
    let codes: Vec<Value> = weft_core::ErrorCode::ALL
        .iter()
        .map(|c| json!(c.as_str()))
        .collect();
    let mut description = code
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    description.push_str("\n\nThe codes (new codes may be added; none is renamed):");
    for c in weft_core::ErrorCode::ALL {
        description.push_str(&format!("\n- `{}`: {}", c.as_str(), c.description()));
    }
    code.insert("enum".to_owned(), Value::Array(codes));
    code.insert("description".to_owned(), Value::String(description));
}

/// The bounds of [`crate::limits`] on the request schemas' properties:
/// `(schema, property, constraints)`; `items` constrains a list's items.
fn schema_bounds() -> Vec<(&'static str, &'static str, Value)> {
    use limits::*;
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN, "pattern": NO_CONTROL_PATTERN});
    let timing = json!({"minimum": 0, "maximum": MAX_TIMING_MS});
    let roles: Vec<&str> = crate::auth::Role::ALL
        .map(crate::auth::Role::as_str)
        .to_vec();
    vec![
        ("CreateTokenRequest", "name", name.clone()),
        ("CreateTokenRequest", "role", json!({"enum": roles})),
        (
            "CreateTokenRequest",
            "queues",
            json!({"minItems": 1, "maxItems": super::tokens::MAX_TOKEN_QUEUES, "items": name}),
        ),
        (
            "CreateTokenRequest",
            "expires_in_seconds",
            json!({"minimum": 1, "maximum": super::tokens::MAX_TOKEN_LIFETIME_SECONDS}),
        ),
        (
            "StartRunRequest",
            "idempotency_key",
            json!({"minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "StartRunRequest",
            "metadata",
            json!({
                "type": "object",
                "maxProperties": weft_core::metadata::MAX_KEYS,
                "propertyNames": {"pattern": weft_core::metadata::KEY_PATTERN},
                "additionalProperties": {
                    "type": "string",
                    "maxLength": weft_core::metadata::MAX_VALUE_LEN,
                    "pattern": weft_core::metadata::VALUE_PATTERN,
                },
            }),
        ),
        (
            "StartRunsRequest",
            "runs",
            json!({"minItems": 1, "maxItems": limits::MAX_RUNS_PER_START}),
        ),
        (
            "DecisionRequest",
            "comment",
            json!({"maxLength": MAX_MESSAGE_LEN}),
        ),
        (
            "DecisionRequest",
            "message",
            json!({"maxLength": MAX_MESSAGE_LEN}),
        ),
        (
            "ReleaseRequest",
            "message",
            json!({"maxLength": MAX_MESSAGE_LEN}),
        ),
        (
            "PollRequest",
            "worker_id",
            json!({"minLength": 1, "maxLength": MAX_WORKER_ID_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "PollRequest",
            "handlers",
            json!({"minItems": 1, "maxItems": MAX_HANDLERS_PER_POLL, "items": name}),
        ),
        (
            "PollRequest",
            "queues",
            json!({"minItems": 1, "maxItems": MAX_QUEUES_PER_POLL, "items": name}),
        ),
        (
            "PollRequest",
            "max_tasks",
            json!({"minimum": 1, "maximum": MAX_TASKS_PER_POLL}),
        ),
        (
            "PollRequest",
            "wait_ms",
            json!({"minimum": 0, "maximum": MAX_WAIT_MS}),
        ),
        (
            "PollRequest",
            "host",
            json!({"minLength": 1, "maxLength": MAX_NAME_LEN * 2, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "PollRequest",
            "version",
            json!({"minLength": 1, "maxLength": MAX_NAME_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "PollRequest",
            "pid",
            json!({"minimum": 1, "maximum": limits::MAX_PID}),
        ),
        (
            "PollRequest",
            "concurrency",
            json!({"minimum": 1, "maximum": limits::MAX_WORKER_CONCURRENCY}),
        ),
        ("WorkerTiming", "dispatch_ms", timing.clone()),
        ("WorkerTiming", "handler_ms", timing),
        (
            "TaskError",
            "message",
            json!({"maxLength": MAX_ERROR_MESSAGE_LEN}),
        ),
        ("TaskError", "kind", {
            let mut kinds: Vec<Value> = weft_api::WORKER_FAILURE_KINDS
                .iter()
                .map(|kind| Value::from(*kind))
                .collect();
            kinds.push(Value::Null);
            json!({ "enum": kinds })
        }),
        (
            "TaskResult",
            "lease_id",
            json!({"minLength": 1, "maxLength": MAX_LEASE_ID_LEN, "pattern": NO_CONTROL_PATTERN}),
        ),
        (
            "ResultsRequest",
            "results",
            json!({"maxItems": MAX_RESULTS_PER_BATCH}),
        ),
        (
            "LogsRequest",
            "lines",
            json!({"maxItems": MAX_LOG_LINES, "items": {"type": "string", "maxLength": MAX_LOG_LINE_LEN}}),
        ),
    ]
}

/// A run list's cursor: the `next_cursor` of a page, a run id (a UUID).
const CURSOR_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A trace id filter: 32 lowercase hex digits, one of them not zero (W3C
/// Trace Context §3.2.2.3; `weft_core::TraceId`).
pub(crate) const TRACE_ID_PATTERN: &str = "^[0-9a-f]*[1-9a-f][0-9a-f]*$";

/// What `since` accepts besides an RFC 3339 time: a duration back from now.
const SINCE_DURATION_PATTERN: &str = "^([0-9]{1,9}(ms|s|m|h|d))+$";

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::openapi_document;
    use crate::limits;

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops.push((path.clone(), method.clone(), op.clone()));
            }
        }
        ops
    }

    fn param<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
    }

    /// Case 19: every status an operation can answer is documented with the
    /// error schema.
    #[test]
    fn every_operation_documents_its_error_statuses() {
        let doc = openapi_document();
        for (path, method, op) in operations(&doc) {
            if !path.starts_with("/v1/") {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let mut expected = vec!["429", "500", "503"];
            if op.get("requestBody").is_some() || op.get("parameters").is_some() {
                expected.push("400");
            }
            if op.get("requestBody").is_some() {
                expected.extend(["408", "413"]);
            }
            if path.contains('{') {
                expected.push("404");
            }
            for status in expected {
                let response = responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path} does not document {status}"));
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }

    /// The error body's `code` lists the whole catalogue, each code described.
    #[test]
    fn the_error_code_is_the_catalogue() {
        let doc = openapi_document();
        let code = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"];
        let listed: Vec<&str> = code["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|c| c.as_str().expect("a string"))
            .collect();
        let catalogue: Vec<&str> = weft_core::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(listed, catalogue);
        let description = code["description"].as_str().expect("a description");
        assert!(description.contains("Match on this"), "{description}");
        for c in weft_core::ErrorCode::ALL {
            assert!(
                description.contains(&format!("- `{}`: {}", c.as_str(), c.description())),
                "{c} is not described"
            );
        }
        assert!(listed.contains(&"stale_lease") && listed.contains(&"corrupt_row"));
    }

    /// Case 19: the bounds the server checks are the ones the document states.
    #[test]
    fn the_document_states_every_bound_the_server_checks() {
        let doc = openapi_document();
        let schema = |name: &str, field: &str| {
            doc.pointer(&format!("/components/schemas/{name}/properties/{field}"))
                .unwrap_or_else(|| panic!("no {name}.{field}"))
                .clone()
        };
        assert_eq!(
            schema("PollRequest", "handlers")["maxItems"],
            limits::MAX_HANDLERS_PER_POLL
        );
        assert_eq!(
            schema("PollRequest", "handlers")["items"]["maxLength"],
            limits::MAX_NAME_LEN
        );
        assert_eq!(
            schema("PollRequest", "queues")["maxItems"],
            limits::MAX_QUEUES_PER_POLL
        );
        assert_eq!(
            schema("PollRequest", "max_tasks")["maximum"],
            limits::MAX_TASKS_PER_POLL
        );
        assert_eq!(
            schema("PollRequest", "wait_ms")["maximum"],
            limits::MAX_WAIT_MS
        );
        assert_eq!(
            schema("PollRequest", "worker_id")["pattern"],
            limits::NO_CONTROL_PATTERN
        );
        assert_eq!(
            schema("StartRunsRequest", "runs")["maxItems"],
            limits::MAX_RUNS_PER_START
        );
        assert_eq!(
            schema("ResultsRequest", "results")["maxItems"],
            limits::MAX_RESULTS_PER_BATCH
        );
        assert_eq!(
            schema("LogsRequest", "lines")["maxItems"],
            limits::MAX_LOG_LINES
        );
        assert_eq!(
            schema("LogsRequest", "lines")["items"]["maxLength"],
            limits::MAX_LOG_LINE_LEN
        );
        assert_eq!(
            schema("TaskError", "message")["maxLength"],
            limits::MAX_ERROR_MESSAGE_LEN
        );
        assert_eq!(
            schema("WorkerTiming", "handler_ms")["maximum"],
            limits::MAX_TIMING_MS
        );
        assert_eq!(
            schema("StartRunRequest", "idempotency_key")["maxLength"],
            limits::MAX_IDEMPOTENCY_KEY_LEN
        );
        let metadata = schema("StartRunRequest", "metadata");
        assert_eq!(metadata["maxProperties"], weft_core::metadata::MAX_KEYS);
        assert_eq!(
            metadata["propertyNames"]["pattern"],
            weft_core::metadata::KEY_PATTERN
        );
        assert_eq!(
            metadata["additionalProperties"]["maxLength"],
            weft_core::metadata::MAX_VALUE_LEN
        );
        assert!(param(&doc, "/v1/runs", "get", "until")["schema"]["oneOf"].is_array());
        assert_eq!(
            schema("DecisionRequest", "message")["maxLength"],
            limits::MAX_MESSAGE_LEN
        );

        let limit = param(&doc, "/v1/runs", "get", "limit");
        assert_eq!(limit["schema"]["maximum"], limits::MAX_LIST_LIMIT);
        assert_eq!(limit["schema"]["minimum"], 1);
        let statuses: Vec<&str> = weft_core::RunStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            param(&doc, "/v1/runs", "get", "status")["schema"]["enum"],
            serde_json::json!(statuses)
        );
        let wait = param(&doc, "/v1/runs/{id}", "get", "wait_ms");
        assert_eq!(wait["schema"]["maximum"], limits::MAX_WAIT_MS);
        for (path, method) in [
            ("/v1/workflows/{name}", "get"),
            ("/v1/runs/{id}", "get"),
            ("/v1/worker/leases/{lease_id}/complete", "post"),
        ] {
            let p = &param(
                &doc,
                path,
                method,
                path.rsplit('{').next().unwrap().split('}').next().unwrap(),
            )["schema"];
            assert_eq!(p["maxLength"], limits::MAX_PATH_PARAM_LEN, "{path}");
            assert_eq!(p["pattern"], limits::NO_CONTROL_PATTERN, "{path}");
        }
        // Semantic manifest errors cannot be JSON Schema: their 400 says so.
        let put = &doc["paths"]["/v1/workflows/{name}"]["put"];
        let refused = put["responses"]["400"]["description"].as_str().unwrap();
        assert!(
            refused.contains("cycle") && refused.contains("invalid_when"),
            "{refused}"
        );
        let manifest = put["requestBody"]["description"].as_str().unwrap();
        assert!(
            manifest.contains("7d") && manifest.contains("2000 steps"),
            "{manifest}"
        );
        // An empty body reads as `{}`: optional exactly where nothing in it is required.
        assert_eq!(
            doc["paths"]["/v1/workflows/{name}/runs"]["post"]["requestBody"]["required"],
            false
        );
        assert_eq!(
            doc["paths"]["/v1/worker/poll"]["post"]["requestBody"]["required"],
            true
        );
    }
}
