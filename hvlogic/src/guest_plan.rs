//! How a guest runs on a given CPU, and what each step of the hostile guest
//! must end in. Pure decisions from the VMX or SVM capabilities.

use crate::summary::Virt;
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

    /// SVM's choice: with nested paging the guest starts out of reset (SVM
    /// runs real mode and unpaged protected mode as they are; APM Vol. 2
    /// §15.19 "Paged Real Mode" is only needed without it); without, on
    /// host-owned page tables, as VMX without EPT.
    pub fn choose_svm(nested_paging: bool) -> GuestMode {
        if nested_paging {
            GuestMode::RealFromReset
        } else {
            GuestMode::ProtectedNoEpt
        }
    }

    pub const fn describe(self, virt: Virt) -> &'static str {
        match (self, virt) {
            (GuestMode::RealFromReset, Virt::Svm) => "real mode from the reset vector F000:FFF0 (nested paging)",
            (GuestMode::RealFromReset, _) => "real mode from the reset vector F000:FFF0 (unrestricted guest)",
            (GuestMode::ProtectedEpt, _) => "32-bit protected mode with paging (EPT, no unrestricted guest)",
            (GuestMode::ProtectedNoEpt, Virt::Svm) => "32-bit protected mode with paging (no nested paging)",
            (GuestMode::ProtectedNoEpt, _) => "32-bit protected mode with paging (no EPT)",
        }
    }

    pub const fn protection(self, virt: Virt) -> &'static str {
        match (self, virt) {
            (GuestMode::RealFromReset | GuestMode::ProtectedEpt, Virt::Svm) => {
                "nested paging maps the guest's own memory and nothing of the hypervisor"
            }
            (GuestMode::RealFromReset | GuestMode::ProtectedEpt, _) => {
                "EPT maps the guest's own memory and nothing of the hypervisor"
            }
            (GuestMode::ProtectedNoEpt, Virt::Svm) => {
                "host-owned page tables map only the guest's memory; CR3 loads, task switches and CR0/CR4 paging changes are intercepted and refused"
            }
            (GuestMode::ProtectedNoEpt, _) => {
                "host-owned page tables map only the guest's memory; CR3 loads exit and are refused; CR0/CR4 paging bits are host-owned"
            }
        }
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
    /// A triple fault (VMX's exit; SVM's shutdown intercept).
    TripleFault,
    EptViolation,
    /// SVM's nested page fault (#VMEXIT(NPF)).
    NestedPageFault,
    /// A MOV to CR3 (or another CR write) the hypervisor refused.
    CrWriteRefused,
    PreemptionTimer,
    /// The host's local-APIC timer, armed as the time budget where there is
    /// no VMX-preemption timer, interrupted the guest (an external-interrupt exit).
    HostTimer,
    /// More exits than the exit budget allows.
    ExitBudget,
    /// Any exit reason the hypervisor does not handle (VMX basic reason).
    Unexpected(u16),
    /// Any #VMEXIT code the hypervisor does not handle (SVM).
    UnexpectedSvm(u16),
    /// VM entry failed (VMLAUNCH/VMRESUME VMfail, or an entry-failure exit).
    EntryFailed,
    /// SVM without NRIP save: the instruction that exited could not be read
    /// at CS:RIP through the guest's page tables (the guest changed them
    /// after its TLB mapped the instruction), so it cannot be stepped over.
    InsnUnreadable,
    /// The guest fuzzer under Bochs 2.7 did not resume a guest with RFLAGS.IF
    /// 0 (which Bochs's timer cannot stop) while another CPU's such guest
    /// already waits for the watchdog.
    NotResumed,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ending::Success => f.write_str("VMCALL success"),
            Ending::GuestReportedFailure(code) => write!(f, "VMCALL reporting failure {code}"),
            Ending::Hlt => f.write_str("HLT"),
            Ending::TripleFault => f.write_str("triple fault"),
            Ending::EptViolation => f.write_str("EPT violation"),
            Ending::NestedPageFault => f.write_str("nested page fault"),
            Ending::CrWriteRefused => f.write_str("control-register write refused"),
            Ending::PreemptionTimer => f.write_str("VMX-preemption timer expired (time budget)"),
            Ending::HostTimer => f.write_str("the host's APIC timer expired (time budget)"),
            Ending::ExitBudget => f.write_str("exit budget exhausted"),
            Ending::Unexpected(r) => write!(f, "unexpected exit {r} ({})", crate::exit_reason::name(r)),
            Ending::UnexpectedSvm(c) => {
                write!(f, "unexpected #VMEXIT {c:#x} ({})", crate::svm::exit_code::name(c as u64))
            }
            Ending::EntryFailed => f.write_str("VM-entry failure"),
            Ending::NotResumed => f.write_str(
                "not resumed with RFLAGS.IF 0 while another CPU's such guest needs the watchdog (Bochs 2.7)",
            ),
            Ending::InsnUnreadable => {
                f.write_str("the exiting instruction unreadable through the guest's page tables (no NRIP save)")
            }
        }
    }
}

impl Ending {
    /// The ending as a host of `virt` names it: SVM's hypercall is VMMCALL.
    pub fn named(self, virt: Virt) -> Named {
        Named(self, virt)
    }
}

pub struct Named(Ending, Virt);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Ending::Success, Virt::Svm) => f.write_str("VMMCALL success"),
            (Ending::GuestReportedFailure(code), Virt::Svm) => write!(f, "VMMCALL reporting failure {code}"),
            (e, _) => write!(f, "{e}"),
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
    // SVM's own instructions and MSRs, which a guest must not reach.
    Vmrun,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
    EferSvme,
    HsavePa,
    VmCr,
}

impl HostileStep {
    /// The steps on a VMX host.
    pub const VMX: [HostileStep; 7] = [
        HostileStep::ReadOutside,
        HostileStep::WriteOutside,
        HostileStep::Vmxon,
        HostileStep::BadVmcall,
        HostileStep::GarbageCr3,
        HostileStep::TripleFault,
        HostileStep::NeverEnds,
    ];

    /// The steps on an SVM host: VMXON gives way to SVM's instructions and MSRs.
    pub const SVM: [HostileStep; 15] = [
        HostileStep::ReadOutside,
        HostileStep::WriteOutside,
        HostileStep::Vmrun,
        HostileStep::Vmload,
        HostileStep::Vmsave,
        HostileStep::Stgi,
        HostileStep::Clgi,
        HostileStep::Skinit,
        HostileStep::EferSvme,
        HostileStep::HsavePa,
        HostileStep::VmCr,
        HostileStep::BadVmcall,
        HostileStep::GarbageCr3,
        HostileStep::TripleFault,
        HostileStep::NeverEnds,
    ];

    /// The steps for a host of `virt`.
    pub fn steps(virt: Virt) -> &'static [HostileStep] {
        match virt {
            Virt::Svm => &Self::SVM,
            _ => &Self::VMX,
        }
    }

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
            HostileStep::Vmrun => "execute VMRUN",
            HostileStep::Vmload => "execute VMLOAD",
            HostileStep::Vmsave => "execute VMSAVE",
            HostileStep::Stgi => "execute STGI",
            HostileStep::Clgi => "execute CLGI",
            HostileStep::Skinit => "execute SKINIT",
            HostileStep::EferSvme => "set EFER.SVME",
            HostileStep::HsavePa => "read VM_HSAVE_PA",
            HostileStep::VmCr => "read VM_CR: SVM must read disabled and locked",
        }
    }

    /// How the step must end for the attempt to count as contained on a
    /// host of `virt`. Without nested paging the guest has no IDT, so a page
    /// fault ends as a triple fault; so does every exception the hypervisor
    /// injects (#UD for the hidden instructions, #GP for the refused MSRs).
    pub const fn expected(self, mode: GuestMode, virt: Virt) -> Ending {
        let nested = mode.uses_ept();
        let nested_fault = if matches!(virt, Virt::Svm) { Ending::NestedPageFault } else { Ending::EptViolation };
        match self {
            HostileStep::ReadOutside | HostileStep::WriteOutside => {
                if nested {
                    nested_fault
                } else {
                    Ending::TripleFault
                }
            }
            // VMX and SVM are hidden: the hypervisor injects #UD (or #GP for
            // the MSRs), which the IDT-less guest cannot handle.
            HostileStep::Vmxon
            | HostileStep::Vmrun
            | HostileStep::Vmload
            | HostileStep::Vmsave
            | HostileStep::Stgi
            | HostileStep::Clgi
            | HostileStep::Skinit
            | HostileStep::EferSvme
            | HostileStep::HsavePa => Ending::TripleFault,
            // Both bad calls must be refused, VM_CR must read "disabled and
            // locked"; the guest then reports success.
            HostileStep::BadVmcall | HostileStep::VmCr => Ending::Success,
            HostileStep::GarbageCr3 => {
                if nested {
                    nested_fault
                } else {
                    Ending::CrWriteRefused
                }
            }
            HostileStep::TripleFault => Ending::TripleFault,
            // VMX: the VMX-preemption timer; SVM has none: the host's local-APIC
            // timer, its interrupt intercepted.
            HostileStep::NeverEnds => {
                if matches!(virt, Virt::Svm) {
                    Ending::HostTimer
                } else {
                    Ending::PreemptionTimer
                }
            }
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
        let (m, v) = (GuestMode::RealFromReset, Virt::Vmx);
        assert_eq!(HostileStep::ReadOutside.expected(m, v), Ending::EptViolation);
        assert_eq!(HostileStep::GarbageCr3.expected(m, v), Ending::EptViolation);
        assert_eq!(HostileStep::NeverEnds.expected(m, v), Ending::PreemptionTimer);
        let m = GuestMode::ProtectedNoEpt;
        assert_eq!(HostileStep::WriteOutside.expected(m, v), Ending::TripleFault);
        assert_eq!(HostileStep::GarbageCr3.expected(m, v), Ending::CrWriteRefused);
        let (m, v) = (GuestMode::RealFromReset, Virt::Svm);
        assert_eq!(HostileStep::ReadOutside.expected(m, v), Ending::NestedPageFault);
        assert_eq!(HostileStep::Vmrun.expected(m, v), Ending::TripleFault);
        assert_eq!(HostileStep::VmCr.expected(m, v), Ending::Success);
        assert_eq!(HostileStep::NeverEnds.expected(m, v), Ending::HostTimer);
        assert_eq!(GuestMode::choose_svm(true), GuestMode::RealFromReset);
        assert_eq!(GuestMode::choose_svm(false), GuestMode::ProtectedNoEpt);
        let svm: alloc::vec::Vec<u32> = HostileStep::SVM.iter().map(|s| s.number()).collect();
        assert!(svm.iter().all(|n| *n >= 1), "numbers start at 1");
        let numbers: alloc::vec::Vec<u32> = HostileStep::VMX.iter().map(|s| s.number()).collect();
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
