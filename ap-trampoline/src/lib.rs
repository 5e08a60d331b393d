//! The AP start-up trampoline: real-mode code that an application processor
//! runs after INIT-SIPI-SIPI, from a 4 KiB page below 1 MiB that the boot CPU
//! chose from the memory map and copied this image into.
//!
//! real mode -> protected mode (boot GDT, selector 0x18) -> long mode (boot
//! page tables, selector 0x08) -> `entry(arg, cpu_index)` on `stack_top`.
//!
//! The parameter block has one definition, [`TrampolineParams`]; the assembly
//! takes every offset from it through `offset_of!`, so the two cannot drift.
#![no_std]

use core::mem::{offset_of, size_of};

/// A 32-bit GDT pseudo-descriptor, as `lgdtl` reads it (SDM Vol. 3A 3.5.1).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct Gdtr32 {
    pub limit: u16,
    pub base: u32,
}

/// Filled by the boot CPU before each SIPI; read by the AP on its way to Rust.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TrampolineParams {
    /// The GDT with 64-bit code at 0x08, data at 0x10, 32-bit code at 0x18 (below 4 GiB).
    pub gdtr: Gdtr32,
    /// Page-table root for long mode; loaded from 32-bit code, so below 4 GiB.
    pub cr3: u64,
    /// Top of this AP's own stack.
    pub stack_top: u64,
    /// `extern "C" fn(arg: u64, cpu_index: u64) -> !` to call in long mode.
    pub entry: u64,
    /// First argument of `entry` (the AP's PCB).
    pub arg: u64,
    /// Second argument of `entry`: the processor index the boot CPU gave this AP.
    pub cpu_index: u64,
}

/// Size of one trampoline page.
pub const PAGE_SIZE: usize = 4096;

core::arch::global_asm!(
    include_str!("../../asm/paging_ia32e.s"),
    include_str!("trampoline.s"),
    GDTR = const offset_of!(TrampolineParams, gdtr),
    CR3 = const offset_of!(TrampolineParams, cr3),
    STACK_TOP = const offset_of!(TrampolineParams, stack_top),
    ENTRY = const offset_of!(TrampolineParams, entry),
    ARG = const offset_of!(TrampolineParams, arg),
    CPU_INDEX = const offset_of!(TrampolineParams, cpu_index),
    PARAMS_SIZE = const size_of::<TrampolineParams>(),
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_params: u8;
    static ap_trampoline_end: u8;
}

/// The trampoline image to copy to the start of the chosen page.
pub fn image() -> &'static [u8] {
    // SAFETY: start and end delimit one contiguous read-only image in .rodata.
    unsafe {
        let start = &ap_trampoline_start as *const u8;
        let len = &ap_trampoline_end as *const u8 as usize - start as usize;
        core::slice::from_raw_parts(start, len)
    }
}

/// Where the parameter block sits inside the image (8-byte aligned).
pub fn params_offset() -> usize {
    // SAFETY: both symbols are in the same image; only addresses are taken.
    unsafe { &ap_trampoline_params as *const u8 as usize - &ap_trampoline_start as *const u8 as usize }
}
