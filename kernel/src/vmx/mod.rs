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
mod ept;
mod fuzz_guest;
mod instructions;
mod layout;
mod os_guest;
mod os_memory;
mod os_vcpu;
mod proof_guest;
mod proof_vcpu;
mod proof_vmcs;
mod snapshot;
mod stage;
mod vcpu;
mod vmcs;
mod vmxcap;

pub use enter::{enter, leave};
pub use fuzz_guest::note_host_exception as fuzz_note_host_exception;
pub use fuzz_guest::watchdog_nmi_in_host as fuzz_watchdog_nmi_in_host;
pub use os_guest::{
    arm_ap as arm_os_ap, launch_bsp as launch_os, prepare as prepare_os, unsupported as os_unsupported,
};
pub use os_vcpu::nmi_in_host;
pub use stage::run_guest;

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

/// Leave VMX operation on a CPU that is being parked at the end of a failed
/// run (best effort: the CPU halts right after).
pub fn leave_for_park() {
    // SAFETY: only called when this CPU's status says it is in VMX root operation.
    let _ = unsafe { instructions::vmxoff() };
}
