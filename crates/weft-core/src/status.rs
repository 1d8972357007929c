//! Run, step and attempt statuses and the closed set of failure reasons. Each
//! has one `as_str()` used everywhere: rows, logs, metric labels and JSON.

use std::fmt;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Equal to its `as_str()` text.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        /// Equal to its `as_str()` text.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

string_enum!(
    /// The life of a run: `pending → running → completed | failed | cancelled`.
    RunStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        Compensating => "compensating",
        Compensated => "compensated",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Compensated
        )
    }
}

string_enum!(
    /// The life of a step within a run.
    StepStatus {
        Pending => "pending",
        Ready => "ready",
        Running => "running",
        Retrying => "retrying",
        Waiting => "waiting",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
        Compensating => "compensating",
        Compensated => "compensated",
    }
);

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Skipped | Self::Cancelled | Self::Compensated
        )
    }

    /// Whether dependants may start: a skipped step counts as satisfied (its
    /// output is `null`), so a `when` on one branch does not stall the rest.
    pub fn satisfies_dependants(self) -> bool {
        matches!(self, Self::Completed | Self::Skipped)
    }
}

string_enum!(
    /// The outcome of one claim of a step by a worker.
    AttemptStatus {
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        /// Handed back by a worker shutting down: the step was made ready
        /// again at once and the attempt spent none of its budget.
        Released => "released",
    }
);

string_enum!(
    /// Why something failed. A closed set, used in rows, logs and metric labels.
    Reason {
        HandlerError => "handler_error",
        Timeout => "timeout",
        HeartbeatTimeout => "heartbeat_timeout",
        LeaseExpired => "lease_expired",
        Cancelled => "cancelled",
        NoHandler => "no_handler",
        InvalidOutput => "invalid_output",
        UpstreamFailed => "upstream_failed",
        CompensationFailed => "compensation_failed",
        Rejected => "rejected",
        /// The worker shut down before the attempt finished (a release).
        WorkerShutdown => "worker_shutdown",
        /// A step's `when` condition could not be evaluated.
        ConditionError => "condition_error",
        /// An approval step was not decided in time.
        ApprovalTimeout => "approval_timeout",
    }
);

string_enum!(
    /// Where a step's compensation (its undo) stands, beside the step's own
    /// status: `pending` (waiting for its dependants' undos) → `ready` →
    /// `running` (→ `retrying` → `ready`) → `completed` | `failed`; an
    /// operator may mark a failed one `skipped`; `cancelled` when the run was
    /// cancelled before it ran. A step that is not being undone has none.
    UndoStatus {
        Pending => "pending",
        Ready => "ready",
        Running => "running",
        Retrying => "retrying",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

impl UndoStatus {
    /// Whether the undo has settled: nothing more runs for it unless the run
    /// is retried or the undo skipped.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}

string_enum!(
    /// What an attempt does: run the step's handler (`forward`) or its
    /// `compensate` handler (`compensate`, undoing a completed step).
    AttemptKind {
        Forward => "forward",
        Compensate => "compensate",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(*s));
        }
        for s in AttemptStatus::ALL {
            assert_eq!(AttemptStatus::parse(s.as_str()), Some(*s));
        }
        for u in UndoStatus::ALL {
            assert_eq!(UndoStatus::parse(u.as_str()), Some(*u));
        }
        for k in AttemptKind::ALL {
            assert_eq!(AttemptKind::parse(k.as_str()), Some(*k));
        }
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(RunStatus::parse("nope"), None);
    }
}
