//! What the CPU must do with a VMCS, from the checker's violations, and
//! whether what it did agrees (SDM Vol. 3C §27.1 "Basic VM-Entry Checks" to
//! §27.4 "Loading MSRs", §27.8 "VM-Entry Failures During or After Loading
//! Guest State").
//!
//! The SDM leaves the order of the checks within §27.2 "Checks on VMX
//! Controls and Host-State Area" open, so a VMCS with a control and a
//! host-state error may give error 7 or 8; within the guest checks the exit
//! qualification may likewise name any of the failed ones. The §27.2 checks
//! come before the guest checks, and MSR loading (§27.4) after them.

use super::{Stage, Violation};
use core::fmt;

/// The checker's prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// VM entry succeeds.
    Enters,
    /// VMfailValid with one of these VM-instruction errors (bit n: error n).
    VmFailValid { errors: u32 },
    /// VM exit with reason 33 and one of these exit qualifications (bit n: qualification n).
    InvalidGuestState { qualifications: u32 },
    /// VM exit with reason 34, qualification `entry` (the failing entry, from 1).
    MsrLoading { entry: u32 },
}

/// What the CPU did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// VM entry succeeded and the guest exited with this basic exit reason.
    Entered { reason: u16 },
    /// VMfailValid with this VM-instruction error.
    VmFailValid { error: u32 },
    /// VMfailInvalid (no current VMCS).
    VmFailInvalid,
    /// A VM exit with bit 31 of the exit reason set (a VM-entry failure).
    EntryFailure { reason: u16, qualification: u64 },
}

pub const ERROR_INVALID_CONTROL: u32 = 7;
pub const ERROR_INVALID_HOST_STATE: u32 = 8;
pub const EXIT_INVALID_GUEST_STATE: u16 = 33;
pub const EXIT_MSR_LOADING: u16 = 34;

impl Verdict {
    pub fn from_violations(violations: &[Violation]) -> Verdict {
        let mut errors = 0;
        let mut qualifications = 0;
        let mut msr = None;
        for v in violations {
            match v.rule.stage {
                Stage::Control => errors |= 1 << ERROR_INVALID_CONTROL,
                Stage::Host => errors |= 1 << ERROR_INVALID_HOST_STATE,
                Stage::Guest => qualifications |= 1 << 0,
                Stage::GuestPdpte => qualifications |= 1 << 2,
                Stage::GuestNmiSti => qualifications |= 1 << 3,
                Stage::GuestLinkPointer => qualifications |= 1 << 4,
                Stage::MsrLoad => msr = msr.or(Some(v.entry)),
            }
        }
        if errors != 0 {
            Verdict::VmFailValid { errors }
        } else if qualifications != 0 {
            Verdict::InvalidGuestState { qualifications }
        } else if let Some(entry) = msr {
            Verdict::MsrLoading { entry }
        } else {
            Verdict::Enters
        }
    }

    /// The CPU's outcome is one this verdict allows.
    pub fn agrees(&self, o: &Outcome) -> bool {
        match (*self, *o) {
            (Verdict::Enters, Outcome::Entered { .. }) => true,
            (Verdict::VmFailValid { errors }, Outcome::VmFailValid { error }) => {
                error < 32 && errors & (1 << error) != 0
            }
            (Verdict::InvalidGuestState { qualifications }, Outcome::EntryFailure { reason, qualification }) => {
                reason == EXIT_INVALID_GUEST_STATE && qualification < 32 && qualifications & (1 << qualification) != 0
            }
            (Verdict::MsrLoading { entry }, Outcome::EntryFailure { reason, qualification }) => {
                reason == EXIT_MSR_LOADING && qualification == entry as u64
            }
            _ => false,
        }
    }

    /// Whether the guest may run (the host state is loaded on the way back).
    pub fn enters(&self) -> bool {
        *self == Verdict::Enters
    }
}

fn bits(f: &mut fmt::Formatter<'_>, mask: u32) -> fmt::Result {
    let mut first = true;
    for n in 0..32 {
        if mask & (1 << n) != 0 {
            write!(f, "{}{n}", if first { "" } else { " or " })?;
            first = false;
        }
    }
    Ok(())
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Verdict::Enters => write!(f, "enters"),
            Verdict::VmFailValid { errors } => {
                write!(f, "VMfailValid error ")?;
                bits(f, errors)
            }
            Verdict::InvalidGuestState { qualifications } => {
                write!(f, "exit 33 qualification ")?;
                bits(f, qualifications)
            }
            Verdict::MsrLoading { entry } => write!(f, "exit 34 qualification {entry}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Outcome::Entered { reason } => write!(f, "entered (then exit {reason})"),
            Outcome::VmFailValid { error } => write!(f, "VMfailValid error {error}"),
            Outcome::VmFailInvalid => write!(f, "VMfailInvalid"),
            Outcome::EntryFailure { reason, qualification } => {
                write!(f, "exit {reason} qualification {qualification}")
            }
        }
    }
}
