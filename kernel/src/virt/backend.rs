//! The boot flow's calls into whichever backend this machine uses
//! (`super::kind`), each to its `Backend` implementation.

use super::{kind, Backend, Kind};
use crate::linux::Handoff;
use crate::pcb::Pcb;
use hvlogic::memmap::Range;
use hvlogic::power::Ports;

/// Each call (or stage name) goes to the backend of `kind()`, or, where the
/// kernel was built without it (its feature off: `cfg!` is a constant, so the
/// backend's code is left out of the image), to `Unbuilt`.
macro_rules! dispatch {
    ($($item:tt)+) => {
        match kind() {
            Kind::Vmx if cfg!(feature = "vmx") => <crate::vmx::Vmx as Backend>::$($item)+,
            Kind::Svm if cfg!(feature = "svm") => <crate::svm::Svm as Backend>::$($item)+,
            _ => <super::unbuilt::Unbuilt as Backend>::$($item)+,
        }
    };
}

pub fn enter_stage() -> &'static str {
    dispatch!(ENTER_STAGE)
}

pub fn leave_stage() -> &'static str {
    dispatch!(LEAVE_STAGE)
}

pub fn enter(pcb: &Pcb) {
    dispatch!(enter(pcb))
}

pub fn leave(pcb: &Pcb) {
    dispatch!(leave(pcb))
}

pub fn run_guest(pcb: &Pcb) {
    dispatch!(run_guest(pcb))
}

pub fn os_unsupported(bsp: &Pcb) -> Option<&'static str> {
    dispatch!(os_unsupported(bsp))
}

pub fn prepare_os(bsp: &Pcb, holes: &[Range], ram: &[Range], ports: Ports, memory_top: u64) {
    dispatch!(prepare_os(bsp, holes, ram, ports, memory_top))
}

pub fn arm_os_ap(pcb: &Pcb) {
    dispatch!(arm_os_ap(pcb))
}

pub fn launch_os(bsp: &'static Pcb, h: &Handoff) -> ! {
    dispatch!(launch_os(bsp, h))
}

pub fn restart_os(pcb: &'static Pcb, vector: u8) -> ! {
    dispatch!(restart_os(pcb, vector))
}

pub fn nmi_in_host(pcb: &Pcb) {
    dispatch!(nmi_in_host(pcb))
}
