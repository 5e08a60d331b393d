//! Hardware-independent logic of the hypervisor: decisions, masks, decoding and
//! parsing that touch no register, so host `cargo test` covers them.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cmdline;
pub mod controls;
pub mod entry_check;
pub mod entry_fuzz;
pub mod exit_qual;
pub mod exit_reason;
pub mod feature_control;
pub mod fixed;
pub mod guest_plan;
pub mod madt;
pub mod memmap;
pub mod summary;
pub mod vm_error;
pub mod vmx_global;
pub mod vmxcap;
