//! AMD's SVM (APM Vol. 2 Chapter 15 "Secure Virtual Machine"): the seed's
//! steps in the APM's terms, and the guests.
//!
//! Layering, lowest first: `instructions` (CLGI, STGI, VMSAVE, VMLOAD),
//! `vmcb` (the VMCB in memory), `vcpu` (a virtual CPU and entry.s with
//! VMRUN), `emulate` (what every exit handler shares), `dump` (failure
//! reports and the VMRUN checker); then each guest: its exit handler
//! (`proof_vcpu`) below its set-up and launch (`proof_guest`).

mod dump;
mod emulate;
mod enter;
mod entry_fuzz;
mod fuzz_guest;
pub mod instructions;
mod proof_guest;
mod proof_vcpu;
mod stage;
mod vcpu;
mod vmcb;

pub use vcpu::leaked_single_step;

use crate::linux::Handoff;
use crate::pcb::Pcb;
use crate::virt::Backend;
use hvlogic::memmap::Range;
use hvlogic::power::Ports;

/// AMD's SVM, behind `virt::Backend`.
pub struct Svm;

impl Backend for Svm {
    const ENTER_STAGE: &'static str = "svm-enter";
    const LEAVE_STAGE: &'static str = "svm-leave";

    fn enter(pcb: &Pcb) {
        enter::enter(pcb)
    }

    fn leave(pcb: &Pcb) {
        enter::leave(pcb)
    }

    fn run_guest(pcb: &Pcb) {
        stage::run_guest(pcb)
    }

    fn os_unsupported(_: &Pcb) -> Option<&'static str> {
        Some("the SVM OS guest is not built yet")
    }

    fn prepare_os(_: &Pcb, _: &[Range], _: &[Range], _: Ports, _: u64) {}

    fn arm_os_ap(_: &Pcb) {}

    fn launch_os(_: &'static Pcb, _: &Handoff) -> ! {
        crate::run::fail_and_end("no SVM OS guest")
    }

    fn nmi_in_host(_: &Pcb) {}
}
