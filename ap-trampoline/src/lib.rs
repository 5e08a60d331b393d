//! The AP start-up trampoline: real-mode code that application processors run
//! after INIT-SIPI-SIPI, from a 4 KiB page below 1 MiB that the boot CPU chose
//! from the memory map and copied this image into.
//!
//! Every AP runs it at the same time, so it uses no stack and writes nothing
//! in the page: real mode -> protected mode (boot GDT, selector 0x18) -> long
//! mode (boot page tables, selector 0x08), through far pointers the boot CPU
//! computed; then the AP reads its own APIC ID (x2APIC ID MSR in x2APIC mode,
//! else the xAPIC ID register, else CPUID leaf 0xB or 1), finds its [`ApSlot`]
//! in the table the boot CPU filled, marks it arrived (its first sign of
//! life), and calls `entry(pcb, apic_id)` on the stack the slot names.
//!
//! The parameter block and the slot have one definition each here; the
//! assembly takes every offset from them through `offset_of!`.
#![no_std]

use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU32;

/// A 32-bit GDT pseudo-descriptor, as `lgdtl` reads it (SDM Vol. 3A §3.5.1
/// "Segment Descriptor Tables").
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct Gdtr32 {
    pub limit: u16,
    pub base: u32,
}

/// A far pointer m16:32, as an indirect far JMP reads it (offset, then selector).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct FarPtr32 {
    pub offset: u32,
    pub selector: u16,
}

/// Filled once by the boot CPU before the SIPIs; read by every AP.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TrampolineParams {
    /// The GDT with 64-bit code at 0x08, data at 0x10, 32-bit code at 0x18 (below 4 GiB).
    pub gdtr: Gdtr32,
    /// 0x18 : the linear address of the 32-bit part of this copy.
    pub to_pm32: FarPtr32,
    /// 0x08 : the linear address of the 64-bit part of this copy.
    pub to_lm64: FarPtr32,
    /// Page-table root for long mode; loaded from 32-bit code, so below 4 GiB.
    pub cr3: u64,
    /// `extern "C" fn(pcb: u64, apic_id: u64) -> !` to call in long mode.
    pub entry: u64,
    /// Address of the `ApSlot` table (identity-mapped, below 4 GiB) and its length.
    pub table: u64,
    pub count: u64,
}

/// One AP to start, as the boot CPU describes it to the trampoline.
#[repr(C)]
pub struct ApSlot {
    /// The local APIC ID the AP will read as its own.
    pub apic_id: u32,
    /// Set to 1 by the AP in the trampoline: its first sign of life.
    pub arrived: AtomicU32,
    /// The AP's PCB (`entry`'s first argument) and the top of its own stack.
    pub pcb: u64,
    pub stack_top: u64,
    /// Kernel-side hand-shake (the trampoline does not touch it).
    pub claim: AtomicU32,
}

/// Size of one trampoline page.
pub const PAGE_SIZE: usize = 4096;
/// Where the 32-bit and 64-bit parts start inside the image (for the far pointers).
pub fn pm32_offset() -> usize {
    symbol_offset(sym_addr(&raw const ap_pm32))
}
pub fn lm64_offset() -> usize {
    symbol_offset(sym_addr(&raw const ap_lm64))
}

core::arch::global_asm!(
    include_str!("../../asm/paging_ia32e.s"),
    include_str!("trampoline.s"),
    GDTR = const offset_of!(TrampolineParams, gdtr),
    TO_PM32 = const offset_of!(TrampolineParams, to_pm32),
    TO_LM64 = const offset_of!(TrampolineParams, to_lm64),
    CR3 = const offset_of!(TrampolineParams, cr3),
    ENTRY = const offset_of!(TrampolineParams, entry),
    TABLE = const offset_of!(TrampolineParams, table),
    COUNT = const offset_of!(TrampolineParams, count),
    PARAMS_SIZE = const size_of::<TrampolineParams>(),
    SLOT_APIC_ID = const offset_of!(ApSlot, apic_id),
    SLOT_ARRIVED = const offset_of!(ApSlot, arrived),
    SLOT_PCB = const offset_of!(ApSlot, pcb),
    SLOT_STACK_TOP = const offset_of!(ApSlot, stack_top),
    SLOT_SIZE = const size_of::<ApSlot>(),
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_pm32: u8;
    static ap_lm64: u8;
    static ap_trampoline_params: u8;
    static ap_trampoline_end: u8;
}

fn sym_addr(p: *const u8) -> usize {
    p as usize
}

fn symbol_offset(addr: usize) -> usize {
    addr - sym_addr(&raw const ap_trampoline_start)
}

/// The trampoline image to copy to the start of the chosen page.
pub fn image() -> &'static [u8] {
    let start = &raw const ap_trampoline_start;
    let len = symbol_offset(sym_addr(&raw const ap_trampoline_end));
    // SAFETY: start and end delimit one contiguous read-only image in .rodata.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// Where the parameter block sits inside the image (8-byte aligned).
pub fn params_offset() -> usize {
    symbol_offset(sym_addr(&raw const ap_trampoline_params))
}
