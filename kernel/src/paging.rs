//! Extending the boot identity map past 4 GiB, for the rare firmware that
//! puts ACPI tables there, and for an OS guest's page tables there. Entries
//! are only ever added (a new translation: nothing stale can be cached), one
//! CPU at a time.

use crate::memory;

/// PML4[0] covers the first 512 GiB: as far as this kernel maps.
pub const LIMIT: u64 = 512 << 30;
const PRESENT_WRITABLE: u64 = 0x3;
/// A 2 MiB page (PS) in a page-directory entry (SDM Vol. 3A Table 4-18 "Format
/// of a Page-Directory Entry that Maps a 2-MByte Page").
const LARGE_PAGE: u64 = 0x80;
const TWO_MIB: u64 = 2 << 20;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Why a range cannot be identity-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// `[start, end)` reaches past LIMIT.
    BeyondLimit { start: u64, len: u64 },
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PagingError::BeyondLimit { start, len } => {
                write!(f, "{start:#x}+{len:#x} is beyond the {} GiB this kernel identity-maps (PML4[0])", LIMIT >> 30)
            }
        }
    }
}

/// Serialises changes to the shared page tables (the OS guest's exit
/// handlers may map on any CPU; nothing else runs while it is held).
static MAPPING: spin::Mutex<()> = spin::Mutex::new(());

/// Identity-map `[start, start + len)` with 2 MiB pages where it is not mapped yet.
pub fn identity_map(start: u64, len: u64) -> Result<(), PagingError> {
    let _serialized = MAPPING.lock();
    let end = start.checked_add(len).filter(|&e| e <= LIMIT).ok_or(PagingError::BeyondLimit { start, len })?;
    // SAFETY: the address of the boot PDPT (boot.s).
    let pdpt = unsafe { &crate::boot::boot_pdpt as *const u8 as *mut u64 };
    let mut page = start & !(TWO_MIB - 1);
    while page < end {
        // SAFETY: `page >> 30` < 512 (checked against LIMIT); the PDPT and the
        // page directories are page-aligned tables only this code writes.
        unsafe {
            let pdpte = pdpt.add((page >> 30) as usize);
            if *pdpte & 1 == 0 {
                *pdpte = memory::alloc_pages(1).as_ptr() as u64 | PRESENT_WRITABLE;
            }
            let pde = ((*pdpte & ADDRESS_MASK) as *mut u64).add(((page >> 21) & 0x1ff) as usize);
            if *pde & 1 == 0 {
                // A new translation: nothing stale can be cached for it (SDM
                // Vol. 3A §4.10.2.3 "Details of TLB Use").
                *pde = page | LARGE_PAGE | PRESENT_WRITABLE;
            }
        }
        page += TWO_MIB;
    }
    Ok(())
}

/// Page-level cache disable (bit 4) in a page-directory entry. With PWT (bit 3)
/// clear it selects PAT entry 2, which is UC- from reset on (SDM Vol. 3A
/// §12.12.4 "Programming the PAT": the power-up PAT; this kernel never
/// reprograms it).
const PCD: u64 = 1 << 4;

/// Identity-map a device's memory (a framebuffer) and make every 2 MiB page
/// covering it UC- instead of write-back: an MTRR that makes it WC still wins
/// (SDM Vol. 3A §12.5.2.2 "Selecting Memory Types for Pentium III and More
/// Recent Processor Families": UC- with MTRR WC is WC), and one that wrongly
/// says WB no longer lets writes sit in the cache where the device never sees
/// them. Neighbours in the same 2 MiB pages become UC- too, which only costs
/// speed. Runs on the boot CPU before the APs start (they load the same tables
/// afterwards).
pub fn identity_map_device(start: u64, len: u64) -> Result<(), PagingError> {
    identity_map(start, len)?;
    // SAFETY: the address of the boot PDPT (boot.s).
    let pdpt = unsafe { &crate::boot::boot_pdpt as *const u8 as *mut u64 };
    let end = start + len;
    let mut page = start & !(TWO_MIB - 1);
    while page < end {
        // SAFETY: identity_map just made the PDPT entry and the 2 MiB entry present
        // (page < end <= LIMIT); the tables are only written by this code, on this CPU.
        unsafe {
            let pdpte = pdpt.add((page >> 30) as usize);
            let pde = ((*pdpte & ADDRESS_MASK) as *mut u64).add(((page >> 21) & 0x1ff) as usize);
            *pde |= PCD;
        }
        // The entry was present and may be cached in the TLB (SDM Vol. 3A
        // §4.10.4.1 "Operations that Invalidate TLBs and Paging-Structure
        // Caches").
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(page));
        page += TWO_MIB;
    }
    Ok(())
}
