//! What VMRUN must do with a VMCB, and whether what it did agrees. SVM has no
//! VMfail: VMRUN either runs the guest, or loads the guest state, finds it
//! illegal and exits at once with EXITCODE = VMEXIT_INVALID (-1) (APM Vol. 2
//! §15.5.1 "Basic Operation"); before either, the host-side preconditions
//! can make it fault (#UD, #GP(0)) with nothing loaded. The APM does not
//! order the VMCB checks, and nothing tells which one failed: one verdict
//! covers any number of broken rules.

use super::host::{self, Fault, HostViolation};
use super::Violation;
use crate::svm::exit_code;
use core::fmt;

/// The checker's prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// VMRUN enters the guest.
    Runs,
    /// #VMEXIT with EXITCODE VMEXIT_INVALID.
    Invalid,
    /// VMRUN raises this exception in the host.
    Faults(Fault),
}

/// What the CPU did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A #VMEXIT with this EXITCODE (VMEXIT_INVALID: the VMCB was refused).
    Exited { code: u64 },
    /// VMRUN raised this exception.
    Fault(Fault),
}

impl Verdict {
    /// The verdict on a VMCB (the host preconditions hold).
    pub fn from_violations(violations: &[Violation]) -> Verdict {
        if violations.is_empty() {
            Verdict::Runs
        } else {
            Verdict::Invalid
        }
    }

    /// The verdict with the host preconditions: a fault first, then the VMCB.
    pub fn with_host(host: &[HostViolation], violations: &[Violation]) -> Verdict {
        match host::fault(host) {
            Some(f) => Verdict::Faults(f),
            None => Verdict::from_violations(violations),
        }
    }

    /// The CPU's outcome is the one this verdict predicts. A guest that ran
    /// exits with any code but VMEXIT_INVALID and VMEXIT_BUSY (SEV-ES only,
    /// never expected here).
    pub fn agrees(&self, o: &Outcome) -> bool {
        match (*self, *o) {
            (Verdict::Runs, Outcome::Exited { code }) => code != exit_code::INVALID && code != exit_code::BUSY,
            (Verdict::Invalid, Outcome::Exited { code }) => code == exit_code::INVALID,
            (Verdict::Faults(f), Outcome::Fault(g)) => f == g,
            _ => false,
        }
    }

    /// Whether the guest runs.
    pub fn runs(&self) -> bool {
        *self == Verdict::Runs
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Runs => write!(f, "runs"),
            Verdict::Invalid => write!(f, "#VMEXIT(VMEXIT_INVALID)"),
            Verdict::Faults(fault) => write!(f, "{fault}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Outcome::Exited { code } if code == exit_code::INVALID => write!(f, "#VMEXIT(VMEXIT_INVALID)"),
            Outcome::Exited { code } => write!(f, "ran (then #VMEXIT {code:#x})"),
            Outcome::Fault(fault) => write!(f, "{fault}"),
        }
    }
}
