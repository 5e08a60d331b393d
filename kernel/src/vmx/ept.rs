//! Extended page tables: 4-level, 4 KiB leaves (SDM Vol. 3C 29.3.2).

use crate::memory;

/// EPT entry permission bits (SDM Vol. 3C Tables 29-1 to 29-6).
pub const READ: u64 = 1 << 0;
pub const WRITE: u64 = 1 << 1;
pub const EXECUTE: u64 = 1 << 2;
pub const RWX: u64 = READ | WRITE | EXECUTE;
/// Leaf memory type, bits 5:3 (write-back: guest memory is ordinary RAM).
const LEAF_MEMORY_TYPE_WB: u64 = 6 << 3;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

pub struct Ept {
    pml4: u64,
}

impl Ept {
    pub fn new() -> Ept {
        Ept { pml4: memory::alloc_pages(1).as_ptr() as u64 }
    }

    /// The EPT pointer: PML4 address, page-walk length 4 (bits 5:3 = 3) and the
    /// paging-structure memory type (bits 2:0, the PCB's EptMemoryType) (SDM 25.6.11).
    pub fn eptp(&self, memory_type: u8) -> u64 {
        self.pml4 | (3 << 3) | memory_type as u64
    }

    /// Map `len` bytes of guest-physical space at `gpa` to host-physical `hpa`.
    pub fn map(&mut self, gpa: u64, hpa: u64, len: u64, permissions: u64) {
        for offset in (0..len).step_by(memory::PAGE_SIZE) {
            let leaf = self.leaf(gpa + offset);
            *leaf = (hpa + offset) | permissions | LEAF_MEMORY_TYPE_WB;
        }
    }

    /// The PT entry for `gpa`, creating the PDPT, PD and PT on the way.
    fn leaf(&mut self, gpa: u64) -> &'static mut u64 {
        let mut table = self.pml4;
        for shift in [39, 30, 21] {
            let entry = entry(table, (gpa >> shift) & 0x1ff);
            if *entry & RWX == 0 {
                *entry = memory::alloc_pages(1).as_ptr() as u64 | RWX;
            }
            table = *entry & ADDRESS_MASK;
        }
        entry(table, (gpa >> 12) & 0x1ff)
    }
}

fn entry(table: u64, index: u64) -> &'static mut u64 {
    // SAFETY: `table` is a zeroed page this module allocated (identity-mapped)
    // and `index` is below 512.
    unsafe { &mut *(table as *mut u64).add(index as usize) }
}
