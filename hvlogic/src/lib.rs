//! Hardware-independent logic of the hypervisor: decisions, masks, decoding and
//! parsing that touch no register, so host `cargo test` covers them.
//!
//! Section, table and figure numbers follow the Intel 64 and IA-32
//! Architectures Software Developer's Manual, order number 325462-081US
//! (September 2023), the edition whose Vol. 3C numbers the VMX chapters 24
//! to 31 (Chapter 27 "VM Entries", Chapter 31 "VMX Instruction Reference";
//! later editions renumber them). Citations read `SDM Vol. 3C §27.3.1.5 "Checks on
//! Guest Non-Register State"`, `SDM Vol. 3C Table 25-3 "Format of
//! Interruptibility State"`, `SDM Vol. 3D §A.3.1 "Pin-Based VM-Execution
//! Controls"`, `SDM Vol. 2A "CPUID—CPU Identification"` for an instruction's
//! page, and `SDM Vol. 4 Table 2-2 "IA-32 Architectural MSRs"`; a comment
//! that cites one section twice may shorten the second to `§27.3.1.5`.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cbfs;
pub mod cmdline;
pub mod controls;
pub mod coreboot;
pub mod cr;
pub mod entry_check;
pub mod entry_fuzz;
pub mod exit_qual;
pub mod exit_reason;
pub mod feature_control;
pub mod fixed;
pub mod guest_fuzz;
pub mod guest_mem;
pub mod guest_plan;
pub mod icr;
pub mod linux;
pub mod logring;
pub mod madt;
pub mod memmap;
pub mod mtrr;
pub mod os_guest;
pub mod power;
pub mod screen;
pub mod startup;
pub mod summary;
pub mod svm;
pub mod tsc_freq;
pub mod vm_error;
pub mod vmx_global;
pub mod vmx_msrs;
pub mod vmxcap;
pub mod xsetbv;
