//! Finding the MADT: through the multiboot2 RSDP tags (new first, then old),
//! and only as the last resort by scanning the BIOS areas for the RSDP.

use crate::bootinfo::Rsdp;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use core::ptr::NonNull;
use hvlogic::madt::ProcessorEntry;

/// ACPI tables are read in place: the first 4 GiB are identity-mapped, and a
/// table above that gets identity-mapped when it is first read.
#[derive(Clone, Copy)]
struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        if physical_address as u64 + size as u64 > crate::boot::IDENTITY_MAPPED {
            if let Err(why) = crate::paging::identity_map(physical_address as u64, size as u64) {
                crate::run::fail_and_end(format_args!("ACPI table at {physical_address:#x}: {why}"));
            }
        }
        let ptr = NonNull::new(physical_address as *mut T).expect("ACPI table at physical 0");
        // SAFETY: identity mapping: the physical range is readable at the same address.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

pub struct MadtInfo {
    pub processors: Vec<ProcessorEntry>,
    /// Where the RSDP came from, for the log.
    pub source: &'static str,
}

/// The processor entries of the MADT, or why there are none.
pub fn read_madt(rsdp: Option<Rsdp>) -> Result<MadtInfo, &'static str> {
    // SAFETY: the addresses come from the boot loader's RSDP copy (checksum checked)
    // or from the acpi crate's own BIOS-area scan; tables are identity-mapped.
    let (tables, source) = unsafe {
        match rsdp {
            Some(Rsdp::V2 { xsdt }) => {
                (AcpiTables::from_rsdt(IdentityMapped, 2, xsdt as usize), "multiboot2 new RSDP tag (XSDT)")
            }
            Some(Rsdp::V1 { rsdt }) => {
                (AcpiTables::from_rsdt(IdentityMapped, 0, rsdt as usize), "multiboot2 old RSDP tag (RSDT)")
            }
            None => (AcpiTables::search_for_rsdp_bios(IdentityMapped), "RSDP found by scanning the BIOS areas"),
        }
    };
    let tables = tables.map_err(|_| "no valid RSDT/XSDT (ACPI tables unreadable)")?;
    let madt = tables.find_table::<Madt>().map_err(|_| "the ACPI tables have no MADT (signature APIC)")?;
    let processors = madt
        .get()
        .entries()
        .filter_map(|e| match e {
            MadtEntry::LocalApic(e) => {
                Some(ProcessorEntry { apic_id: e.apic_id as u32, flags: e.flags, x2apic_entry: false })
            }
            MadtEntry::LocalX2Apic(e) => {
                Some(ProcessorEntry { apic_id: e.x2apic_id, flags: e.flags, x2apic_entry: true })
            }
            _ => None,
        })
        .collect();
    Ok(MadtInfo { processors, source })
}
