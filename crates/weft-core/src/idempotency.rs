//! The idempotency key a handler gets with each task: stable per run, step,
//! phase (forward or compensate) and `for_each` index, so every attempt of
//! the same unit of work (retries, a run retried by hand, a redelivery
//! after a lost lease) carries the same key, and a handler can make its
//! side effects happen once downstream (a payment API's `Idempotency-Key`).

/// Which side of a saga a task runs: the step itself or its undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The step's own handler.
    Forward,
    /// The step's `compensate` handler, undoing a completed step.
    Compensate,
}

impl Phase {
    /// `forward` or `compensate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Compensate => "compensate",
        }
    }
}

/// The namespace of Weft's name-based (RFC 9562 version 5) keys.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8c1d_4a3e_6f0b_4d52_9e7a_2b5c_d1f0_3a47);

/// The idempotency key of one unit of work: a UUID (RFC 9562 version 5,
/// 36 characters, lowercase hex with hyphens) named by the run id, the
/// step's name, the phase and the `for_each` child's index (`None` for a
/// step that is not fanned out). The same arguments give the same key on
/// every server and release; any different argument gives a different key.
/// A UUID fits every provider's key limits and names no step or run to
/// the third parties it is sent to.
pub fn key(run_id: crate::RunId, step: &str, phase: Phase, index: Option<u64>) -> String {
    // Unambiguous: the fields are separated by a byte no run id or step
    // name holds, and a missing index is not a number.
    let index = index.map_or_else(|| "-".to_owned(), |i| i.to_string());
    let name = format!("{run_id}\u{0}{step}\u{0}{}\u{0}{index}", phase.as_str());
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const RUN: &str = "019338a0-0000-7000-8000-000000000001";

    fn run(text: &str) -> crate::RunId {
        text.parse().unwrap()
    }

    #[test]
    fn the_same_work_gets_the_same_key() {
        let a = key(run(RUN), "charge", Phase::Forward, None);
        assert_eq!(a, key(run(RUN), "charge", Phase::Forward, None));
        assert_eq!(a.len(), 36);
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 5);
        // Pinned: a key must not change between releases.
        assert_eq!(a, "8430741c-ed00-510f-a70a-0f89c573fc81");
    }

    #[test]
    fn any_difference_gives_another_key() {
        let keys = [
            key(run(RUN), "charge", Phase::Forward, None),
            key(run(RUN), "charge", Phase::Compensate, None),
            key(run(RUN), "charge", Phase::Forward, Some(0)),
            key(run(RUN), "charge", Phase::Forward, Some(1)),
            key(run(RUN), "charge", Phase::Compensate, Some(1)),
            key(run(RUN), "ship", Phase::Forward, None),
            key(
                run("019338a0-0000-7000-8000-000000000002"),
                "charge",
                Phase::Forward,
                None,
            ),
            // Field boundaries cannot be shifted to collide.
            key(run(RUN), "a", Phase::Forward, None),
            key(run(RUN), "a\u{0}", Phase::Forward, None),
        ];
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:#?}");
    }
}
