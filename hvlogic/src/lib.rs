//! Hardware-independent logic of the hypervisor: decisions, masks, decoding and
//! parsing that touch no register, so host `cargo test` covers them.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cmdline;
pub mod controls;
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
pub mod tsc_freq;
pub mod vm_error;
pub mod vmx_global;
pub mod vmx_msrs;
pub mod vmxcap;
pub mod xsetbv;
