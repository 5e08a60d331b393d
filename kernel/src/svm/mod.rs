//! AMD's SVM: the seed's steps in the APM's terms, and the guests.
//! (Filled in below.)

use crate::linux::Handoff;
use crate::pcb::Pcb;
use crate::virt::Backend;
use hvlogic::memmap::Range;
use hvlogic::power::Ports;

/// AMD's SVM, behind `virt::Backend`.
pub struct Svm;

/// Whether CPUID offers SVM (Fn8000_0001_ECX[2]).
pub fn offered() -> bool {
    raw_cpuid::cpuid!(0x8000_0000).eax >= 0x8000_0001
        && raw_cpuid::cpuid!(0x8000_0001).ecx & hvlogic::svm::CPUID_80000001_ECX_SVM != 0
}

impl Backend for Svm {
    const ENTER_STAGE: &'static str = "svm-enter";
    const LEAVE_STAGE: &'static str = "svm-leave";

    fn enter(pcb: &Pcb) {
        pcb.set(crate::pcb::CPU_STATUS_NO_VMX);
    }

    fn leave(_: &Pcb) {}

    fn run_guest(_: &Pcb) {}

    fn leave_for_park() {}

    fn os_unsupported(_: &Pcb) -> Option<&'static str> {
        Some("SVM is not supported yet")
    }

    fn prepare_os(_: &Pcb, _: &[Range], _: &[Range], _: Ports, _: u64) {}

    fn arm_os_ap(_: &Pcb) {}

    fn launch_os(_: &'static Pcb, _: &Handoff) -> ! {
        crate::run::fail_and_end("no SVM OS guest")
    }

    fn nmi_in_host(_: &Pcb) {}
}
