//! `weft dev`'s examples: the manifests of `examples/` (embedded, so `weft
//! dev` works from any directory) and their handlers written with the Rust
//! SDK, run by an in-process worker.

use std::time::Duration;

use serde_json::{Value, json};
use weft_client::Client;
use weft_worker::{HandlerError, TaskContext, Worker};

pub const MANIFESTS: &[(&str, &str)] = &[
    ("etl", include_str!("../../../examples/etl.yaml")),
    ("thumbnails", include_str!("../../../examples/fanout.yaml")),
    ("flaky", include_str!("../../../examples/flaky.yaml")),
    (
        "order-saga",
        include_str!("../../../examples/order-saga.yaml"),
    ),
];

pub fn demo_inputs() -> Vec<(&'static str, Value)> {
    vec![
        ("etl", json!({"source": "s3://example/day.csv"})),
        ("thumbnails", json!({"image": "cat.png", "size": 2048})),
        ("flaky", json!({"endpoint": "https://api.example.com"})),
        ("order-saga", json!({"order_id": "o-1001", "amount": 42})),
    ]
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

pub fn worker(client: Client) -> weft_worker::Builder {
    Worker::builder(client)
        .worker_id(format!("dev-{}", std::process::id()))
        .concurrency(8)
        .handler("etl.extract", |ctx: TaskContext| async move {
            pause().await;
            ctx.log(vec![format!(
                "extracting from {}",
                ctx.run_input()["source"]
            )])
            .await;
            Ok(json!({"rows": [1, 2, 3, 4]}))
        })
        .handler("etl.transform", |ctx: TaskContext| async move {
            pause().await;
            let rows = ctx.input()["steps"]["extract"]["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let doubled: Vec<i64> = rows
                .iter()
                .filter_map(Value::as_i64)
                .map(|r| r * 2)
                .collect();
            Ok(json!({"rows": doubled}))
        })
        .handler("etl.load", |ctx: TaskContext| async move {
            pause().await;
            let n = ctx.input()["steps"]["transform"]["rows"]
                .as_array()
                .map_or(0, Vec::len);
            Ok(json!({"loaded": n}))
        })
        .handler("thumbnails.fetch", |ctx: TaskContext| async move {
            pause().await;
            Ok(json!({"image": ctx.run_input()["image"], "bytes": 48213}))
        })
        .handler("thumbnails.resize", |ctx: TaskContext| async move {
            pause().await;
            let size = match ctx.task.step.as_str() {
                "small" => 64,
                "medium" => 256,
                _ => 1024,
            };
            Ok(json!({"size": size}))
        })
        .handler("thumbnails.publish", |ctx: TaskContext| async move {
            pause().await;
            Ok(json!({"published": ctx.input()["steps"]}))
        })
        .handler("flaky.call", |ctx: TaskContext| async move {
            pause().await;
            if ctx.task.attempt < 3 {
                return Err(HandlerError::retryable(format!(
                    "service unavailable (attempt {})",
                    ctx.task.attempt
                )));
            }
            Ok(json!({"ok": true, "attempt": ctx.task.attempt}))
        })
        .handler("flaky.report", |_ctx: TaskContext| async move {
            Ok(json!({"reported": true}))
        })
        .handler("order.reserve", |ctx: TaskContext| async move {
            pause().await;
            Ok(json!({"reservation_id": format!("res-{}", ctx.run_input()["order_id"])}))
        })
        .handler("order.charge", |ctx: TaskContext| async move {
            pause().await;
            Ok(json!({"payment_id": format!("pay-{}", ctx.run_input()["order_id"])}))
        })
        .handler("order.ship", |ctx: TaskContext| async move {
            pause().await;
            Err(HandlerError::permanent(format!(
                "carrier rejected order {}",
                ctx.run_input()["order_id"]
            )))
        })
        .handler("order.release", undo)
        .handler("order.refund", undo)
        .handler("order.cancel_shipment", undo)
}

/// The order saga's undos: their input names the step undone and its output.
async fn undo(ctx: TaskContext) -> Result<Value, HandlerError> {
    pause().await;
    let input = ctx.input();
    ctx.log(vec![format!("undoing {}", input["step"])]).await;
    Ok(json!({"undone": input["step"], "of": input["output"]}))
}
