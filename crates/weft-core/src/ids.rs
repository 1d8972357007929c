//! The identifiers of a run and its telemetry: `RunId`, `TraceId`, `SpanId`
//! and `RunRef` (what the API accepts where a run is named), each parsed once
//! where it enters (an HTTP path or header, a stored row) and formatted by its
//! one `Display`.

use std::{fmt, num::NonZeroU64, num::NonZeroU128, str::FromStr, sync::Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text is not an identifier of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct IdError {
    /// The text as given (clipped to 64 characters).
    pub text: String,
    /// What was expected, e.g. "a run id".
    pub expected: &'static str,
}

impl IdError {
    fn new(text: &str, expected: &'static str) -> Self {
        Self {
            text: text.chars().take(64).collect(),
            expected,
        }
    }
}

/// A run's id: a UUIDv7 (RFC 9562), so ids sort by creation time. Its text
/// form is the lowercase hyphenated UUID (`0190f3a2-…`, 36 characters); any
/// form `uuid` parses is accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(uuid::Uuid);

impl RunId {
    /// A new id whose timestamp is `at_ms` (milliseconds since the Unix
    /// epoch, from the caller's clock) and whose other bits are a counter
    /// and random. Ids minted by one process are strictly increasing, also
    /// within one millisecond and when `at_ms` steps back (RFC 9562 §6.2,
    /// method 1, as `uuid::ContextV7` keeps it), so runs started in order
    /// list in order.
    pub fn new(at_ms: i64) -> Self {
        static CONTEXT: Mutex<uuid::ContextV7> = Mutex::new(uuid::ContextV7::new());
        let ms = u64::try_from(at_ms).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(&CONTEXT, ms / 1000, (ms % 1000) as u32 * 1_000_000);
        Self(uuid::Uuid::new_v7(ts))
    }

    /// The smallest id a run created at `at_ms` (or later) can have: a key
    /// range bound for "runs created since".
    pub fn floor(at_ms: i64) -> Self {
        let ms = u64::try_from(at_ms).unwrap_or(0).min((1 << 48) - 1);
        // A UUIDv7 begins with 48 bits of milliseconds; the rest of the
        // floor is the smallest version-7, variant-1 value.
        Self(uuid::Uuid::from_u128(
            (u128::from(ms) << 80) | (0x7 << 76) | (0b10 << 62),
        ))
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for RunId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(text)
            .map(Self)
            .map_err(|_| IdError::new(text, "a run id"))
    }
}

/// A W3C id of `$bytes` bytes, never all zero, whose text form is `2 ×
/// $bytes` lowercase hex digits: `TraceId` and `SpanId` differ only in size.
macro_rules! w3c_id {
    ($(#[$doc:meta])* $name:ident, $int:ty, $nonzero:ty, $bytes:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($nonzero);

        impl $name {
            /// A random id (W3C: "randomly generated").
            pub fn random() -> Self {
                loop {
                    let bits: $int = rand::random();
                    if let Some(id) = <$nonzero>::new(bits) {
                        return Self(id);
                    }
                }
            }

            /// From its bytes, big-endian (OpenTelemetry's `to_bytes`); `None`
            /// for all zeros, the invalid id.
            pub fn from_bytes(bytes: [u8; $bytes]) -> Option<Self> {
                <$nonzero>::new(<$int>::from_be_bytes(bytes)).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:0width$x}", self.0, width = $bytes * 2)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            /// Exactly `2 × bytes` lowercase hex digits, not all zero.
            fn from_str(text: &str) -> Result<Self, IdError> {
                parse_hex(text, $bytes * 2)
                    .and_then(|v| <$nonzero>::new(<$int>::try_from(v).ok()?))
                    .map(Self)
                    .ok_or_else(|| IdError::new(text, $expected))
            }
        }
    };
}

w3c_id!(
    /// A W3C trace id: 16 bytes, never all zero; its text form is 32
    /// lowercase hex digits (W3C Trace Context §3.2.2.3). A run's `trace_id`
    /// is its OpenTelemetry trace id.
    TraceId,
    u128,
    NonZeroU128,
    16,
    "a trace id (32 lowercase hex digits, not all zero)"
);

w3c_id!(
    /// A W3C span id: 8 bytes, never all zero; its text form is 16 lowercase
    /// hex digits (W3C Trace Context §3.2.2.4).
    SpanId,
    u64,
    NonZeroU64,
    8,
    "a span id (16 lowercase hex digits, not all zero)"
);

impl TraceId {
    /// The 128-bit value (what OpenTelemetry's `TraceId::from` takes).
    pub fn to_u128(self) -> u128 {
        self.0.get()
    }
}

impl SpanId {
    /// The 64-bit value (what OpenTelemetry's `SpanId::from` takes).
    pub fn to_u64(self) -> u64 {
        self.0.get()
    }
}

/// `len` lowercase hex digits (W3C ids are lowercase only).
fn parse_hex(text: &str, len: usize) -> Option<u128> {
    (text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

/// How the API names a run: by its run id, or by its trace id (then the
/// newest run of that trace). Parsing tries the trace id first: 32 hex digits
/// are never a hyphenated UUID, and a bare 32-digit UUID is read as a trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunRef {
    /// A run id.
    Run(RunId),
    /// A trace id: the newest run of the trace.
    Trace(TraceId),
}

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunRef::Run(id) => id.fmt(f),
            RunRef::Trace(id) => id.fmt(f),
        }
    }
}

impl From<RunId> for RunRef {
    fn from(id: RunId) -> Self {
        RunRef::Run(id)
    }
}

impl From<&RunId> for RunRef {
    fn from(id: &RunId) -> Self {
        RunRef::Run(*id)
    }
}

impl From<&RunRef> for RunRef {
    fn from(id: &RunRef) -> Self {
        *id
    }
}

impl From<&TraceId> for RunRef {
    fn from(id: &TraceId) -> Self {
        RunRef::Trace(*id)
    }
}

impl From<TraceId> for RunRef {
    fn from(id: TraceId) -> Self {
        RunRef::Trace(id)
    }
}

impl FromStr for RunRef {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        if let Ok(trace) = text.parse() {
            return Ok(RunRef::Trace(trace));
        }
        text.parse()
            .map(RunRef::Run)
            .map_err(|_| IdError::new(text, "a run id or a trace id"))
    }
}

macro_rules! text_serde {
    ($($id:ty),*) => {$(
        impl Serialize for $id {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $id {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

text_serde!(RunId, TraceId, SpanId, RunRef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip_and_sort_by_time() {
        let a = RunId::new(1_700_000_000_000);
        let b = RunId::new(1_700_000_000_001);
        assert!(a < b);
        // Within one millisecond, and when the clock steps back, still in order.
        let mut last = b;
        for at in [1_700_000_000_001, 1_700_000_000_001, 1_700_000_000_000] {
            let next = RunId::new(at);
            assert!(next > last, "{next} after {last}");
            last = next;
        }
        assert_eq!(a.as_uuid().get_version_num(), 7);
        let text = a.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<RunId>(), Ok(a));
        assert_eq!(text.to_uppercase().parse::<RunId>(), Ok(a));
        assert!(RunId::floor(1_700_000_000_000) <= a);
        assert!(RunId::floor(1_700_000_000_001) > a);
        assert!("not-a-uuid".parse::<RunId>().is_err());
    }

    #[test]
    fn trace_and_span_ids_follow_w3c() {
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let s: SpanId = "00f067aa0ba902b7".parse().unwrap();
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        for bad in [
            "",
            "00000000000000000000000000000000",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "+bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert!(bad.parse::<TraceId>().is_err(), "{bad:?}");
        }
        for bad in ["0000000000000000", "00f067aa0ba902b", "+0f067aa0ba902b7"] {
            assert!(bad.parse::<SpanId>().is_err(), "{bad:?}");
        }
        assert_eq!(TraceId::random().to_string().len(), 32);
        assert_eq!(SpanId::random().to_string().len(), 16);
    }

    #[test]
    fn a_run_ref_is_a_trace_id_or_a_run_id() {
        let run = RunId::new(1);
        assert_eq!(run.to_string().parse(), Ok(RunRef::Run(run)));
        let trace = TraceId::random();
        assert_eq!(trace.to_string().parse(), Ok(RunRef::Trace(trace)));
        assert!("runs".parse::<RunRef>().is_err());
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<RunId>(&json).unwrap(), run);
        assert!(serde_json::from_str::<TraceId>("\"xyz\"").is_err());
    }
}
