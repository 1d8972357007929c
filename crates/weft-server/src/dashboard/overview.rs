//! The overview: per workflow over the last hour, runs started
//! (throughput), failure rate and p95 duration, each with a small bar chart
//! per 5-minute bucket, from the store (`Store::overview`, one bounded
//! query, cached for a few seconds), not from Prometheus. The charts are
//! server-rendered SVG from the template; their geometry is [`bars`].

use std::time::Duration;

use axum::{extract::State, http::StatusCode};
use minijinja::context;
use serde::Serialize;

use super::{PageResult, format, href, render};
use crate::AppState;

/// The window the overview covers.
pub(crate) const WINDOW: Duration = Duration::from_secs(3600);
/// Buckets of the window: 5 minutes each.
pub(crate) const BUCKETS: usize = 12;
/// A chart's size in CSS pixels.
const CHART_WIDTH: f64 = 144.0;
const CHART_HEIGHT: f64 = 32.0;

/// One bar of a chart: its box in the chart's coordinates (y down) and the
/// value it stands for, for its tooltip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Bar {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub value: i64,
}

/// The bars of `values` in a `width` × `height` chart: one slot per value,
/// left to right, each bar 80% of its slot wide and as tall as its share of
/// the largest value, standing on the bottom edge. A zero is a bar of
/// height 0; all zeros draw nothing.
pub(crate) fn bars(values: &[i64], width: f64, height: f64) -> Vec<Bar> {
    if values.is_empty() {
        return Vec::new();
    }
    let max = values.iter().copied().max().unwrap_or(0).max(0);
    let slot = width / values.len() as f64;
    let round = |v: f64| (v * 100.0).round() / 100.0;
    values
        .iter()
        .enumerate()
        .map(|(i, &value)| {
            let h = if max == 0 {
                0.0
            } else {
                height * value.max(0) as f64 / max as f64
            };
            Bar {
                x: round(i as f64 * slot + slot * 0.1),
                y: round(height - h),
                w: round(slot * 0.8),
                h: round(h),
                value,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct Chart {
    bars: Vec<Bar>,
    /// What one bar's value is, for tooltips (`runs`, `failed`, `ms`).
    unit: &'static str,
}

#[derive(Serialize)]
struct Row {
    workflow: String,
    href: String,
    started: i64,
    per_minute: String,
    completed: i64,
    failed: i64,
    cancelled: i64,
    failure_rate: String,
    p95: String,
    started_chart: Chart,
    failed_chart: Chart,
    p95_chart: Chart,
}

pub(crate) async fn overview_page(State(state): State<AppState>) -> PageResult {
    let overview = state.store().overview(WINDOW, BUCKETS).await?;
    let minutes = (overview.until_ms - overview.covered_since_ms).max(60_000) as f64 / 60_000.0;
    let chart = |values: &[i64], unit| Chart {
        bars: bars(values, CHART_WIDTH, CHART_HEIGHT),
        unit,
    };
    let rows: Vec<Row> = overview
        .workflows
        .iter()
        .map(|w| Row {
            workflow: w.workflow.clone(),
            href: href("/", &[("workflow", &w.workflow), ("since", "1h")]),
            started: w.started,
            per_minute: format!("{:.1}/min", w.started as f64 / minutes),
            completed: w.completed,
            failed: w.failed,
            cancelled: w.cancelled,
            failure_rate: w
                .failure_rate
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "–".to_owned()),
            p95: w
                .p95_ms
                .map(format::human_ms)
                .unwrap_or_else(|| "–".to_owned()),
            started_chart: chart(&w.started_per_bucket, "runs"),
            failed_chart: chart(&w.failed_per_bucket, "failed"),
            p95_chart: chart(&w.p95_per_bucket, "ms p95"),
        })
        .collect();
    let truncated = overview.truncated.then(|| {
        format!(
            "more than {} runs were started in the hour: the figures cover the newest, the last {:.0} minutes",
            format::count(i64::from(weft_store::OVERVIEW_MAX_RUNS), false),
            minutes
        )
    });
    Ok(render(
        StatusCode::OK,
        "overview.html",
        "Overview",
        "overview",
        None,
        context! {
            rows, truncated,
            width => CHART_WIDTH, height => CHART_HEIGHT,
            bucket_minutes => overview.bucket_ms / 60_000,
            ttl => weft_store::OVERVIEW_TTL.as_secs(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_share_the_width_and_scale_to_the_largest_value() {
        let out = bars(&[0, 5, 10, 2], 100.0, 20.0);
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[0],
            Bar {
                x: 2.5,
                y: 20.0,
                w: 20.0,
                h: 0.0,
                value: 0
            }
        );
        assert_eq!(
            out[1],
            Bar {
                x: 27.5,
                y: 10.0,
                w: 20.0,
                h: 10.0,
                value: 5
            }
        );
        assert_eq!(
            out[2],
            Bar {
                x: 52.5,
                y: 0.0,
                w: 20.0,
                h: 20.0,
                value: 10
            }
        );
        assert_eq!(out[3].h, 4.0);
        // Every bar stands on the bottom edge and stays inside the chart.
        for bar in &out {
            assert_eq!(bar.y + bar.h, 20.0);
            assert!(bar.x >= 0.0 && bar.x + bar.w <= 100.0);
        }
    }

    #[test]
    fn nothing_to_draw() {
        assert!(bars(&[], 100.0, 20.0).is_empty());
        assert!(bars(&[0, 0], 100.0, 20.0).iter().all(|b| b.h == 0.0));
    }
}
