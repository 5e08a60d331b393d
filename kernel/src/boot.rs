//! The multiboot2 header and the 32-bit entry that reaches long mode (boot.s).

core::arch::global_asm!(include_str!("../../asm/paging_ia32e.s"), include_str!("boot.s"), options(att_syntax));

extern "C" {
    /// Bottom of the boot CPU's 64 KiB stack (in .bss, see boot.s).
    pub static boot_stack_bottom: u8;
    /// The boot page tables: PML4 -> identity map of the first 4 GiB.
    pub static boot_pml4: u8;
    /// The PDPT under PML4[0]: entries 0-3 map the first 4 GiB, the rest are
    /// filled on demand by `paging::identity_map`.
    pub static boot_pdpt: u8;
    /// The boot GDT, also loaded by the AP trampoline.
    pub static BOOT_GDT: [u64; 4];
    /// The TSC when `_start` ran (boot.s).
    static boot_entry_tsc: u64;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

pub const BOOT_STACK_SIZE: u64 = 64 * 1024;
/// The boot page tables map this much, identity, with 2 MiB pages.
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// The physical range of the loaded image, .bss (page tables, boot stack) included.
pub fn kernel_image() -> hvlogic::memmap::Range {
    // SAFETY: linker-script symbols; only their addresses are taken.
    let (start, end) = unsafe { (&__kernel_start as *const u8 as u64, &__kernel_end as *const u8 as u64) };
    hvlogic::memmap::Range::new(start, end)
}

/// The TSC at the kernel's first instruction.
pub fn entry_tsc() -> u64 {
    // SAFETY: written once by boot.s before any Rust code runs; only read afterwards.
    unsafe { core::ptr::read_volatile(&raw const boot_entry_tsc) }
}

/// CR3 value of the boot page tables (also used by every AP).
pub fn boot_cr3() -> u64 {
    // SAFETY: address of a linker-placed symbol.
    unsafe { &boot_pml4 as *const u8 as u64 }
}
