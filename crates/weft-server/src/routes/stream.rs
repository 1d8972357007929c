//! The run history as server-sent events, followed until the run ends.

use std::{collections::BTreeSet, convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::State,
    http::HeaderMap,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use weft_api::{ErrorBody, ErrorDetail};
use weft_core::RunStatus;

use super::ApiResult;
use crate::{
    AppState,
    auth::Principal,
    error::ApiError,
    extract::{Path, Query},
    present::{self, RunPresenter},
};

/// The stream's query: `redact=true` asks for redacted events where the
/// caller's role would see clear ones.
#[derive(serde::Deserialize)]
pub(crate) struct StreamQuery {
    redact: Option<bool>,
}

impl crate::limits::Validate for StreamQuery {
    fn validate(&self) -> ApiResult<()> {
        Ok(())
    }
}

/// Server-sent events: the run's history, then new events as they are
/// written, until the run ends. Each SSE event's id is the history `seq`.
/// A commit on this server reaches the stream at once; events written by
/// other servers within the server's `--stream-recheck`. If the store fails
/// the stream ends with an SSE event of type `error` whose data is an
/// `ErrorBody` (`{"error": {"code", "message"}}`).
#[utoipa::path(get, path = "/v1/runs/{id}/events/stream", tag = "runs", params(("id" = String, Path, description = "run_id or trace_id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("redact" = Option<bool>, Query, description = "Stream redacted events even where the caller's role sees clear data")), responses((status = 200, description = "Server-sent events, one per history event (type: the event kind, id: its seq, data: the event record); if the store fails, a last event of type `error` whose data is an ErrorBody", content_type = "text/event-stream"), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_event_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>>> {
    let id = crate::extract::run_ref(&id)?;
    let run_id = state.store().resolve_run_id(&id).await?;
    let redactor = present::redacts_for(&state.config, &caller, query.redact)
        .then(|| state.config.redactor.clone());
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let store = state.store().clone();
    let follower = EventFollower {
        follow: store.follow_run(run_id),
        recheck: store.settings().follow_recheck,
        store,
        run_id,
        low_water: after.unwrap_or(0),
        delivered: BTreeSet::new(),
        done: false,
        redactor,
        masker_stale: true,
        masker: None,
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let batch = follower.next_batch().await?;
        Some((futures::stream::iter(batch), follower))
    });
    use futures::StreamExt;
    Ok(Sse::new(stream.flatten()).keep_alive(KeepAlive::default()))
}

/// Follows a run's history for the SSE stream.
///
/// On Postgres, sequence numbers are taken before commit, so two
/// transactions can commit out of `seq` order: a reader that only asks for
/// `seq > last seen` could skip an event committed late. The follower
/// therefore re-reads a window behind its newest event and remembers what it
/// sent, and moves the window's floor only past events older than any
/// transaction can plausibly stay open.
struct EventFollower {
    /// Woken by this process's commits of the run's history.
    follow: weft_store::RunFollow,
    /// How long to wait for a wake-up before reading again anyway.
    recheck: Duration,
    store: weft_store::Store,
    run_id: weft_core::RunId,
    low_water: i64,
    delivered: BTreeSet<i64>,
    done: bool,
    /// Set when the caller gets redacted events.
    redactor: Option<weft_core::redact::Redactor>,
    /// The run's data changed since the masker was built (a step completed:
    /// its output may hold new secrets), or no masker was built yet.
    masker_stale: bool,
    masker: Option<RunPresenter>,
}

const COMMIT_LAG_MS: i64 = 10_000;

impl EventFollower {
    /// Redacts a batch of events for a caller who gets redacted data. The
    /// masker is built from the run's data once, and again after a step
    /// completes (its output may name new secrets). If the run cannot be
    /// read, the events' data is withheld rather than sent clear.
    async fn redact(&mut self, events: &mut [weft_api::EventRecord]) {
        let Some(redactor) = &self.redactor else {
            return;
        };
        if events.iter().any(|e| {
            matches!(
                weft_core::EventKind::parse(&e.kind),
                Some(weft_core::EventKind::StepCompleted | weft_core::EventKind::RunCompleted)
            )
        }) {
            self.masker_stale = true;
        }
        if self.masker_stale && !events.is_empty() {
            self.masker = match self.store.get_run(self.run_id).await {
                Ok(run) => Some(RunPresenter::new(
                    redactor,
                    &crate::convert::run_detail(run),
                )),
                Err(_) => None,
            };
            self.masker_stale = self.masker.is_none();
        }
        match &self.masker {
            Some(presenter) => presenter.events(events),
            None => {
                for event in events.iter_mut() {
                    event.data = serde_json::Value::String(weft_core::redact::REDACTED.to_owned());
                }
            }
        }
    }

    async fn run_ended(&self) -> weft_store::Result<bool> {
        let statuses = self
            .store
            .run_statuses(std::slice::from_ref(&self.run_id))
            .await?;
        Ok(statuses
            .get(&self.run_id)
            .and_then(|s| RunStatus::parse(s))
            .is_some_and(|s| s.is_terminal()))
    }

    /// Ends the stream with an SSE `error` event carrying the error's code
    /// and message, as an API error body would.
    fn fail(&mut self, err: weft_store::Error) -> Vec<Result<SseEvent, Infallible>> {
        self.done = true;
        tracing::warn!(component = "server", run_id = %self.run_id, error = %err, "event stream ended by a store error");
        let err = ApiError::from(err);
        let body = ErrorBody {
            error: ErrorDetail {
                code: err.code().as_str().to_owned(),
                message: err.to_string(),
            },
        };
        vec![Ok(SseEvent::default()
            .event("error")
            .data(serde_json::to_string(&body).unwrap_or_default()))]
    }

    async fn next_batch(&mut self) -> Option<Vec<Result<SseEvent, Infallible>>> {
        if self.done {
            return None;
        }
        loop {
            // Seen first, then read: a commit in between still wakes the wait.
            self.follow.mark_seen();
            let events = match self
                .store
                .run_events(self.run_id, Some(self.low_water))
                .await
            {
                Ok(events) => events,
                Err(err) => return Some(self.fail(err)),
            };
            let settled_before = self.store.now_ms() - COMMIT_LAG_MS;
            let mut fresh = Vec::new();
            let mut ended = false;
            let mut settled_prefix = true;
            let read_none = events.is_empty();
            for event in events {
                ended |= weft_core::EventKind::parse(&event.kind).is_some_and(|k| k.ends_run());
                // Events come in seq order: the floor moves over a settled prefix.
                settled_prefix &= event.at_ms < settled_before;
                let seq = event.seq;
                if self.delivered.insert(seq) {
                    fresh.push(event);
                }
                if settled_prefix {
                    self.low_water = seq;
                }
            }
            let mut fresh = crate::convert::events(fresh);
            // Only events not sent before are redacted (the window behind
            // the newest event is read again on every look).
            self.redact(&mut fresh).await;
            let batch: Vec<_> = fresh
                .iter()
                .map(|event| {
                    Ok(SseEvent::default()
                        .id(event.seq.to_string())
                        .event(event.kind.clone())
                        .data(serde_json::to_string(event).unwrap_or_default()))
                })
                .collect();
            self.delivered.retain(|&seq| seq > self.low_water);
            if !batch.is_empty() {
                return Some(batch);
            }
            // Nothing new: after the run's end event, or when a client
            // reconnected past the end of a finished run, the stream is over.
            if ended || read_none {
                match self.run_ended().await {
                    Ok(true) => {
                        self.done = true;
                        return None;
                    }
                    Ok(false) => {}
                    Err(err) => return Some(self.fail(err)),
                }
            }
            // Woken by this server's commit of the run's history, or read
            // again after `recheck` for what other servers wrote.
            self.follow.wait(self.recheck).await;
        }
    }
}
