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
mod os_guest;
mod os_vcpu;
mod proof_guest;
mod proof_vcpu;
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
        crate::virt::fuzz::run_guest(pcb, entry_fuzz::run, fuzz_guest::run, proof_guest::run)
    }

    fn os_unsupported(bsp: &Pcb) -> Option<&'static str> {
        os_guest::unsupported(bsp)
    }

    fn prepare_os(bsp: &Pcb, holes: &[Range], ram: &[Range], ports: Ports, memory_top: u64) {
        os_guest::prepare(bsp, holes, ram, ports, memory_top)
    }

    fn arm_os_ap(pcb: &Pcb) {
        os_guest::arm_ap(pcb)
    }

    fn launch_os(bsp: &'static Pcb, h: &Handoff) -> ! {
        os_guest::launch_bsp(bsp, h)
    }

    fn restart_os(pcb: &'static Pcb, vector: u8) -> ! {
        os_guest::restart(pcb, vector)
    }

    /// An NMI in the host of a CPU that runs the OS: the exit handler runs
    /// with GIF clear, so this one met the CPU in `os_guest::restart`, with GIF
    /// set and the OS not yet entered; it goes nowhere (the OS's NMIs reach
    /// it directly once it runs).
    fn nmi_in_host(_: &Pcb) {}
}
