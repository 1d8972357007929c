//! Which kinds of claimable work a claim looks for: forward steps always,
//! and undos, `for_each` children and child undos only when some may be
//! ready, so a workflow without sagas or fan-out pays no statement for them.
//!
//! On SQLite the claim's read-only probe says exactly which kinds exist. On
//! PostgreSQL (no probe: one round trip is the claim) this process looks for
//! them while it has recently moved a run that fans out or compensates, and
//! otherwise at most once a [`PROBE_EVERY_MS`]: work of those kinds made
//! ready by another server, or by a child's backoff running out, waits at
//! most that long on this one.

use std::sync::atomic::{AtomicI64, Ordering};

/// How often a claim looks for undos and children with no hint of them (ms).
pub(crate) const PROBE_EVERY_MS: i64 = 1_000;

/// How long a transition of a run that fans out or compensates keeps the
/// claims looking (ms).
const HINT_MS: i64 = 60_000;

/// The kinds of work one claim looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kinds {
    pub forward: bool,
    pub undo: bool,
    pub children: bool,
    pub child_undos: bool,
}

impl Kinds {
    /// Every kind.
    pub(crate) const ALL: Kinds = Kinds {
        forward: true,
        undo: true,
        children: true,
        child_undos: true,
    };

    /// No kind.
    pub(crate) const NONE: Kinds = Kinds {
        forward: false,
        undo: false,
        children: false,
        child_undos: false,
    };

    pub(crate) fn any(self) -> bool {
        self.forward || self.undo || self.children || self.child_undos
    }
}

/// The process's hint that undos or children may be ready.
#[derive(Debug, Default)]
pub(crate) struct SagaHint {
    /// Until when (epoch ms) claims look for them.
    until_ms: AtomicI64,
    /// When a claim last looked without a hint (epoch ms).
    probed_ms: AtomicI64,
}

impl SagaHint {
    /// A run that fans out or compensates moved, or such work was claimed:
    /// look for more for a while.
    pub(crate) fn note(&self, now_ms: i64) {
        self.until_ms.fetch_max(now_ms + HINT_MS, Ordering::Relaxed);
    }

    /// Whether a claim at `now_ms` looks for undos and children.
    pub(crate) fn wanted(&self, now_ms: i64) -> bool {
        if now_ms < self.until_ms.load(Ordering::Relaxed) {
            return true;
        }
        let last = self.probed_ms.load(Ordering::Relaxed);
        now_ms - last >= PROBE_EVERY_MS
            && self
                .probed_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_while_hinted_and_else_once_a_second() {
        let hint = SagaHint::default();
        assert!(hint.wanted(10_000), "the first claim looks");
        assert!(!hint.wanted(10_500), "then not again within the second");
        assert!(hint.wanted(11_000));
        hint.note(11_100);
        assert!(
            hint.wanted(11_200) && hint.wanted(11_300),
            "hinted: every claim looks"
        );
        assert!(
            hint.wanted(11_100 + HINT_MS),
            "the hint ran out; a second has passed"
        );
        assert!(!hint.wanted(11_100 + HINT_MS + 10));
    }
}
