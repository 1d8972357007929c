//! W3C trace context: parsing an incoming `traceparent` and formatting the one
//! handed to workers, so a run's `trace_id` is its OpenTelemetry trace id.

use crate::ids::{SpanId, TraceId};

/// The parts of a valid `traceparent` header that Weft keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_span_id: SpanId,
    pub sampled: bool,
}

/// Parses `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` (W3C Trace
/// Context §3.2). Invalid or all-zero ids yield `None`, as the W3C spec asks:
/// the run then starts a trace of its own.
pub fn parse_traceparent(header: &str) -> Option<TraceParent> {
    let mut parts = header.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?.parse().ok()?;
    let parent_span_id = parts.next()?.parse().ok()?;
    let flags = parts.next()?;
    let is_hex2 =
        |t: &str| t.len() == 2 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_hex2(version) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex2(flags) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id,
        parent_span_id,
        sampled: flags & 1 == 1,
    })
}

/// Formats the `traceparent` of a span (always sampled: the engine decides
/// sampling at export, not at propagation).
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let ok =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ok.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(ok.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        assert_eq!(
            format_traceparent(ok.trace_id, ok.parent_span_id),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
