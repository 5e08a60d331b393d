//! How a guest runs on a given CPU, and what each step of the hostile guest
//! must end in. Pure decisions from the VMX capabilities.

use core::fmt;

/// The guest's start mode, from what the CPU offers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestMode {
    /// Unrestricted guest (with EPT): real mode, from the reset vector F000:FFF0.
    RealFromReset,
    /// EPT without unrestricted guest: CR0.PE and CR0.PG must be 1 (SDM Vol. 3D
    /// §A.7 "VMX-Fixed Bits in CR0"), so 32-bit protected mode with paging, its
    /// page tables in guest memory.
    ProtectedEpt,
    /// No EPT: 32-bit protected mode with paging on host-built page tables that
    /// only the hypervisor can change; guest-physical is host-physical.
    ProtectedNoEpt,
}

impl GuestMode {
    pub fn choose(ept: bool, unrestricted: bool) -> GuestMode {
        match (ept, unrestricted) {
            (true, true) => GuestMode::RealFromReset,
            (true, false) => GuestMode::ProtectedEpt,
            (false, _) => GuestMode::ProtectedNoEpt,
        }
    }

    pub const fn uses_ept(self) -> bool {
        !matches!(self, GuestMode::ProtectedNoEpt)
    }

    pub const fn describe(self) -> &'static str {
        match self {
            GuestMode::RealFromReset => "real mode from the reset vector F000:FFF0 (unrestricted guest)",
            GuestMode::ProtectedEpt => "32-bit protected mode with paging (EPT, no unrestricted guest)",
            GuestMode::ProtectedNoEpt => "32-bit protected mode with paging (no EPT)",
        }
    }

    pub const fn protection(self) -> &'static str {
        match self {
            GuestMode::RealFromReset | GuestMode::ProtectedEpt => {
                "EPT maps the guest's own memory and nothing of the hypervisor"
            }
            GuestMode::ProtectedNoEpt => {
                "host-owned page tables map only the guest's memory; CR3 loads exit and are refused; CR0/CR4 paging bits are host-owned"
            }
        }
    }
}

impl fmt::Display for GuestMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How a guest (or one hostile step) ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    /// VMCALL "done" with status 0.
    Success,
    /// VMCALL "done" with a non-zero status: the guest found something wrong.
    GuestReportedFailure(u32),
    Hlt,
    TripleFault,
    EptViolation,
    /// A MOV to CR3 (or another CR write) the hypervisor refused.
    CrWriteRefused,
    PreemptionTimer,
    /// The host's local-APIC timer, armed as the time budget where there is
    /// no VMX-preemption timer, interrupted the guest (an external-interrupt exit).
    HostTimer,
    /// More exits than the exit budget allows.
    ExitBudget,
    /// Any exit reason the hypervisor does not handle (basic reason).
    Unexpected(u16),
    /// VM entry failed (VMLAUNCH/VMRESUME VMfail, or an entry-failure exit).
    EntryFailed,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ending::Success => f.write_str("VMCALL success"),
            Ending::GuestReportedFailure(code) => write!(f, "VMCALL reporting failure {code}"),
            Ending::Hlt => f.write_str("HLT"),
            Ending::TripleFault => f.write_str("triple fault"),
            Ending::EptViolation => f.write_str("EPT violation"),
            Ending::CrWriteRefused => f.write_str("control-register write refused"),
            Ending::PreemptionTimer => f.write_str("VMX-preemption timer expired (time budget)"),
            Ending::HostTimer => f.write_str("the host's APIC timer expired (time budget)"),
            Ending::ExitBudget => f.write_str("exit budget exhausted"),
            Ending::Unexpected(r) => write!(f, "unexpected exit {r} ({})", crate::exit_reason::name(r)),
            Ending::EntryFailed => f.write_str("VM-entry failure"),
        }
    }
}

/// The hostile guest's attempts, run one per launch so each is contained on its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostileStep {
    ReadOutside,
    WriteOutside,
    Vmxon,
    BadVmcall,
    GarbageCr3,
    TripleFault,
    NeverEnds,
}

impl HostileStep {
    pub const ALL: [HostileStep; 7] = [
        HostileStep::ReadOutside,
        HostileStep::WriteOutside,
        HostileStep::Vmxon,
        HostileStep::BadVmcall,
        HostileStep::GarbageCr3,
        HostileStep::TripleFault,
        HostileStep::NeverEnds,
    ];

    /// The number the guest program dispatches on (its `step` parameter).
    pub const fn number(self) -> u32 {
        self as u32 + 1
    }

    pub const fn describe(self) -> &'static str {
        match self {
            HostileStep::ReadOutside => "read outside its memory",
            HostileStep::WriteOutside => "write outside its memory",
            HostileStep::Vmxon => "execute VMXON",
            HostileStep::BadVmcall => "VMCALL with bad arguments",
            HostileStep::GarbageCr3 => "load CR3 with garbage and enable paging",
            HostileStep::TripleFault => "triple-fault",
            HostileStep::NeverEnds => "spin forever with interrupts off",
        }
    }

    /// How the step must end for the attempt to count as contained.
    /// Without EPT the guest has no IDT, so a page fault ends as a triple fault.
    pub const fn expected(self, mode: GuestMode) -> Ending {
        let ept = mode.uses_ept();
        match self {
            HostileStep::ReadOutside | HostileStep::WriteOutside => {
                if ept {
                    Ending::EptViolation
                } else {
                    Ending::TripleFault
                }
            }
            // VMX is hidden: the hypervisor injects #UD, which the IDT-less guest cannot handle.
            HostileStep::Vmxon => Ending::TripleFault,
            // Both bad calls must be refused; the guest then reports success.
            HostileStep::BadVmcall => Ending::Success,
            HostileStep::GarbageCr3 => {
                if ept {
                    Ending::EptViolation
                } else {
                    Ending::CrWriteRefused
                }
            }
            HostileStep::TripleFault => Ending::TripleFault,
            HostileStep::NeverEnds => Ending::PreemptionTimer,
        }
    }
}

/// Median and minimum of a set of samples (the bench's figures).
pub fn median_min(samples: &mut [u32]) -> Option<(u32, u32)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some((samples[samples.len() / 2], samples[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_follows_capabilities() {
        assert_eq!(GuestMode::choose(true, true), GuestMode::RealFromReset);
        assert_eq!(GuestMode::choose(true, false), GuestMode::ProtectedEpt);
        assert_eq!(GuestMode::choose(false, false), GuestMode::ProtectedNoEpt);
        assert_eq!(GuestMode::choose(false, true), GuestMode::ProtectedNoEpt, "UG needs EPT");
    }

    #[test]
    fn hostile_expectations() {
        let m = GuestMode::RealFromReset;
        assert_eq!(HostileStep::ReadOutside.expected(m), Ending::EptViolation);
        assert_eq!(HostileStep::GarbageCr3.expected(m), Ending::EptViolation);
        assert_eq!(HostileStep::NeverEnds.expected(m), Ending::PreemptionTimer);
        let m = GuestMode::ProtectedNoEpt;
        assert_eq!(HostileStep::WriteOutside.expected(m), Ending::TripleFault);
        assert_eq!(HostileStep::GarbageCr3.expected(m), Ending::CrWriteRefused);
        let numbers: alloc::vec::Vec<u32> = HostileStep::ALL.iter().map(|s| s.number()).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn median_and_min() {
        assert_eq!(median_min(&mut []), None);
        assert_eq!(median_min(&mut [5]), Some((5, 5)));
        assert_eq!(median_min(&mut [9, 1, 5, 7, 3]), Some((5, 1)));
        assert_eq!(median_min(&mut [4, 1, 3, 2]), Some((3, 1)));
    }
}
