//! VMX: global data, VMX root operation, the guests.
//!
//! Layering, lowest first: `instructions` (the VMX instructions), `vmcs`
//! (field access and the VMCS areas), `vcpu` (a virtual CPU and entry.s),
//! `emulate` (what every exit handler shares), `dump` (failure reports),
//! `ept`; then each kind of guest: its vCPU and exit handler
//! (`proof_vcpu`, `os_vcpu`) below its set-up and launch (`proof_guest`,
//! `os_guest`).

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
mod proof_vmcs;
mod snapshot;
mod vcpu;
mod vmcs;
mod vmxcap;

use crate::linux::Handoff;
use crate::pcb::Pcb;
use crate::virt::Backend;
use hvlogic::memmap::Range;
use hvlogic::power::Ports;

/// Intel's VMX, behind `virt::Backend`.
pub struct Vmx;

impl Backend for Vmx {
    const ENTER_STAGE: &'static str = "vmx-enter";
    const LEAVE_STAGE: &'static str = "vmx-leave";

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
        let e = os_guest::launch_bsp(bsp, h);
        crate::run::fail_and_end(format_args!("the OS guest could not be set up: {e}"))
    }

    fn restart_os(pcb: &'static Pcb, vector: u8) -> ! {
        os_guest::restart(pcb, vector)
    }

    fn nmi_in_host(pcb: &Pcb) {
        os_vcpu::nmi_in_host(pcb)
    }
}

use hvlogic::vmx_global::{basic, VmxGlobalData};
use instructions::VmFail;

/// A VMXON region or VMCS: a zeroed 4 KiB page of write-back heap memory with
/// the revision identifier in bits 30:0 of its first word and bit 31 clear
/// (SDM Vol. 3C §25.2 "Format of the VMCS Region", §25.11.5 "VMXON Region").
/// Returns its physical address.
fn new_region(d: &VmxGlobalData) -> u64 {
    let page = crate::memory::alloc_pages(1);
    page[..4].copy_from_slice(&basic::revision_id(d.vmx_basic).to_le_bytes());
    page.as_ptr() as u64
}

/// A fresh VMCS, cleared and made current (VMCLEAR, VMPTRLD; SDM Vol. 3C
/// §25.11.3 "Initializing a VMCS").
fn load_new_vmcs(d: &VmxGlobalData) -> Result<u64, VmFail> {
    let vmcs = new_region(d);
    // SAFETY: in VMX root operation; a fresh region with the revision identifier.
    unsafe { instructions::vmclear(vmcs).and_then(|()| instructions::vmptrld(vmcs)) }.map(|()| vmcs)
}
