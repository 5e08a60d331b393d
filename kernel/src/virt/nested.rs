//! Nested page tables, 4-level, in either format: Intel's extended page
//! tables (SDM Vol. 3C §29.3.2 "EPT Translation Mechanism") or AMD's nested
//! page tables, which are long-mode page tables walked with the guest's
//! accesses as user accesses (APM Vol. 2 §15.25.5 "Nested Table Walk"). The
//! proof guest maps its own pages with 4 KiB leaves; an OS guest gets the
//! identity map of the whole physical address space, with 1 GiB or 2 MiB
//! leaves where the memory type is uniform and 4 KiB leaves where it is not,
//! and the hypervisor's own pages replaced by a blank page.
//!
//! The two formats agree on every bit used here but the memory type: EPT's
//! R, W, X (bits 0-2) sit where a page-table entry has P, R/W and U/S (all
//! three set: present, writable, user, as NPT requires), a read-only page is
//! bits 0 and 2 in both, and both mark a large leaf with bit 7. EPT carries
//! the leaf's memory type in bits 5:3; NPT leaves it to PAT entry 0 (WB)
//! combined with the host's MTRRs, which apply to the host-physical address
//! (APM Vol. 2 §15.25.8 "Combining Memory Types, MTRRs").

use crate::memory;
use hvlogic::memmap::Range;
use hvlogic::mtrr::{self, Mtrrs};

/// Entry permission bits: EPT's read, write, execute (the entry formats of
/// SDM Vol. 3C §29.3.2 "EPT Translation Mechanism"), a page-table entry's
/// present, read/write, user (APM Vol. 2 §5.4 "Page-Translation-Table Entry
/// Fields").
pub const READ: u64 = 1 << 0;
pub const WRITE: u64 = 1 << 1;
pub const EXECUTE: u64 = 1 << 2;
pub const RWX: u64 = READ | WRITE | EXECUTE;
/// EPT: leaf memory type, bits 5:3.
const MEMORY_TYPE_SHIFT: u64 = 3;
/// Bit 7 of a PDPTE or PDE: it maps a 1 GiB or 2 MiB page.
const LARGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Which nested paging the tables are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ept,
    Npt,
}

impl Format {
    /// A leaf's memory-type bits for MTRR type `kind`.
    fn memory_type(self, kind: u8) -> u64 {
        match self {
            Format::Ept => (kind as u64) << MEMORY_TYPE_SHIFT,
            Format::Npt => 0,
        }
    }
}

pub struct Tables {
    pml4: u64,
    format: Format,
}

/// What an OS guest's identity map covers and leaves out.
pub struct Identity<'a> {
    /// Guest-physical addresses below this are mapped.
    pub limit: u64,
    /// The hypervisor's own pages: each maps to `blank` instead.
    pub holes: &'a [Range],
    /// One page the guest may read and write in place of a hole.
    pub blank: u64,
    /// Pages mapped 1:1 but read-only, so the guest's writes exit (the local
    /// APIC's page: its INIT IPIs are filtered, os_vcpu.rs).
    pub write_protected: &'a [u64],
    pub mtrrs: &'a Mtrrs,
    /// EPT may map 1 GiB pages (IA32_VMX_EPT_VPID_CAP[17]).
    pub pages_1g: bool,
}

impl Tables {
    pub fn new(format: Format) -> Tables {
        Tables { pml4: memory::alloc_pages(1).as_ptr() as u64, format }
    }

    /// The root table's physical address (SVM's nCR3).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// The EPT pointer: PML4 address, page-walk length 4 (bits 5:3 = 3) and the
    /// paging-structure memory type (bits 2:0, the PCB's EptMemoryType)
    /// (SDM Vol. 3C §25.6.11 "Extended-Page-Table Pointer (EPTP)").
    pub fn eptp(&self, memory_type: u8) -> u64 {
        self.pml4 | (3 << 3) | memory_type as u64
    }

    /// Map `len` bytes of guest-physical space at `gpa` to host-physical `hpa`
    /// with 4 KiB write-back leaves.
    pub fn map(&mut self, gpa: u64, hpa: u64, len: u64, permissions: u64) {
        for offset in (0..len).step_by(memory::PAGE_SIZE) {
            let leaf = self.leaf(gpa + offset);
            *leaf = (hpa + offset) | permissions | self.format.memory_type(mtrr::WB);
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

    /// The identity map an OS guest runs on. Returns the tables and how many
    /// leaves of each size they hold (1 GiB, 2 MiB, 4 KiB), for the log.
    pub fn identity(format: Format, id: &Identity) -> (Tables, [u64; 3]) {
        let ept = Tables::new(format);
        let mut counts = [0; 3];
        let pml4_entries = id.limit.div_ceil(1 << 39).min(512);
        for i in 0..pml4_entries {
            let pdpt = new_table();
            *entry(ept.pml4, i) = pdpt | RWX;
            fill(format, pdpt, i << 39, 30, id, &mut counts);
        }
        (ept, counts)
    }
}

fn new_table() -> u64 {
    memory::alloc_pages(1).as_ptr() as u64
}

/// Fill the table at `table`, whose entries each map 2^`order` bytes from `base`.
fn fill(format: Format, table: u64, base: u64, order: u32, id: &Identity, counts: &mut [u64; 3]) {
    let size = 1u64 << order;
    for i in 0..512 {
        let addr = base + i * size;
        if addr >= id.limit {
            break;
        }
        let e = entry(table, i);
        if order == 12 {
            let hole = id.holes.iter().any(|h| h.start <= addr && addr < h.end);
            let (target, kind) = if hole { (id.blank, mtrr::WB) } else { (addr, page_type(id, addr, 12)) };
            let permissions = if id.write_protected.contains(&addr) { READ | EXECUTE } else { RWX };
            *e = target | permissions | format.memory_type(kind);
            counts[2] += 1;
            continue;
        }
        let block = Range::new(addr, addr + size);
        let large_ok = (order == 21 || id.pages_1g) && addr + size <= id.limit;
        let uniform = id.mtrrs.block_type(addr, order);
        match uniform {
            Some(kind)
                if large_ok
                    && !id.holes.iter().any(|h| h.overlaps(&block))
                    && !id.write_protected.iter().any(|&p| block.start <= p && p < block.end) =>
            {
                *e = addr | RWX | LARGE | format.memory_type(kind);
                counts[if order == 30 { 0 } else { 1 }] += 1;
            }
            _ => {
                let next = new_table();
                *e = next | RWX;
                fill(format, next, addr, order - 9, id, counts);
            }
        }
    }
}

/// The memory type of a 4 KiB page (always uniform: MTRRs work in 4 KiB units).
fn page_type(id: &Identity, addr: u64, order: u32) -> u8 {
    id.mtrrs.block_type(addr, order).unwrap_or(mtrr::UC)
}

fn entry(table: u64, index: u64) -> &'static mut u64 {
    // SAFETY: `table` is a zeroed page this module allocated (identity-mapped)
    // and `index` is below 512.
    unsafe { &mut *(table as *mut u64).add(index as usize) }
}
