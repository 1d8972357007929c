//! `StoredTiming`: an attempt's timing buckets as its row's `timing` column
//! and its ending history event keep them (JSON). A storage type of its own,
//! field for field what earlier releases wrote, so the wire type
//! (`weft_api::AttemptTiming`) can change without a migration.

use serde::{Deserialize, Serialize};
use weft_core::observe::Timing;

/// An attempt's timing buckets as stored, in milliseconds: the JSON object
/// `{"queue_wait_ms", "dispatch_ms", "handler_ms", "ingest_ms", "total_ms"}`
/// (the worker-reported two may be `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTiming {
    /// Ready → claimed.
    pub queue_wait_ms: i64,
    /// Claimed → handler start, reported by the worker.
    pub dispatch_ms: Option<i64>,
    /// Handler run time, reported by the worker.
    pub handler_ms: Option<i64>,
    /// Result received → committed; 0 for an attempt the engine ended.
    pub ingest_ms: i64,
    /// Claimed → committed.
    pub total_ms: i64,
}

impl From<&Timing> for StoredTiming {
    fn from(timing: &Timing) -> StoredTiming {
        StoredTiming {
            queue_wait_ms: timing.queue_wait_ms,
            dispatch_ms: timing.dispatch_ms,
            handler_ms: timing.handler_ms,
            ingest_ms: timing.ingest_ms,
            total_ms: timing.total_ms,
        }
    }
}

impl From<StoredTiming> for Timing {
    fn from(stored: StoredTiming) -> Timing {
        Timing {
            queue_wait_ms: stored.queue_wait_ms,
            dispatch_ms: stored.dispatch_ms,
            handler_ms: stored.handler_ms,
            ingest_ms: stored.ingest_ms,
            total_ms: stored.total_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoredTiming;

    /// The column and the event payload read back what earlier releases
    /// wrote, and are written the same way.
    #[test]
    fn reads_and_writes_the_stored_json() {
        let written =
            r#"{"queue_wait_ms":3,"dispatch_ms":null,"handler_ms":40,"ingest_ms":1,"total_ms":45}"#;
        let timing: StoredTiming = serde_json::from_str(written).unwrap();
        assert_eq!(
            timing,
            StoredTiming {
                queue_wait_ms: 3,
                dispatch_ms: None,
                handler_ms: Some(40),
                ingest_ms: 1,
                total_ms: 45,
            }
        );
        assert_eq!(serde_json::to_string(&timing).unwrap(), written);
    }
}
