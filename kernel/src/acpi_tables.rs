//! Finding the MADT: through the RSDP the loader gave (multiboot2's RSDP
//! tags, new first, then old; coreboot's RSDP record), and only as the last
//! resort by scanning the BIOS areas for the RSDP.

use crate::bootinfo::Rsdp;
use crate::paging::PagingError;
use acpi::address::{AddressSpace, GenericAddress};
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use hvlogic::madt::ProcessorEntry;
use hvlogic::power::{Block, Ports};

/// ACPI tables are read in place: the first 4 GiB are identity-mapped, and a
/// table above that gets identity-mapped when it is first read.
#[derive(Clone, Copy)]
struct IdentityMapped;

/// The first table that could not be mapped (the acpi crate's handler cannot
/// fail, so it hands out a zeroed stand-in, whose bad signature ends the walk,
/// and the failure is reported from here).
static UNMAPPABLE: spin::Once<PagingError> = spin::Once::new();

/// A zeroed stand-in for a table that cannot be mapped.
#[repr(C, align(4096))]
struct Blank([u8; 4096]);
static BLANK: Blank = Blank([0; 4096]);

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let mut address = physical_address;
        if physical_address as u64 + size as u64 > crate::boot::IDENTITY_MAPPED {
            if let Err(e) = crate::paging::identity_map(physical_address as u64, size as u64) {
                UNMAPPABLE.call_once(|| e);
                address = BLANK.0.as_ptr() as usize;
            }
        }
        // Physical 0 holds no ACPI table: a broken pointer reads the blank stand-in too.
        let ptr = NonNull::new(address as *mut T).unwrap_or(NonNull::from(&BLANK).cast());
        // SAFETY: identity mapping: the physical range is readable at the same
        // address (or `ptr` is the blank stand-in, of which the acpi crate reads
        // no more than a header before it rejects the zero signature).
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

pub struct MadtInfo {
    pub processors: Vec<ProcessorEntry>,
    /// Where the RSDP came from, for the log.
    pub source: &'static str,
    /// The FADT's power and reset ports and \_S5 (default when there is no FADT).
    pub power: Ports,
}

/// Why there is no MADT to read.
#[derive(Clone, Copy, Debug)]
pub enum AcpiError {
    /// No valid RSDT/XSDT at the address found.
    NoRootTable,
    /// The RSDT/XSDT lists no MADT.
    NoMadt,
    /// A table lies where this kernel cannot map it.
    Unmappable(PagingError),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRootTable => f.write_str("no valid RSDT/XSDT (ACPI tables unreadable)"),
            AcpiError::NoMadt => f.write_str("the ACPI tables have no MADT (signature APIC)"),
            AcpiError::Unmappable(e) => write!(f, "an ACPI table cannot be mapped: {e}"),
        }
    }
}

/// The processor entries of the MADT, or why there are none; `source` says
/// where the loader's RSDP came from (`BootInfo::rsdp_source`).
pub fn read_madt(rsdp: Option<Rsdp>, source: &'static str) -> Result<MadtInfo, AcpiError> {
    // SAFETY: the addresses come from the loader's RSDP (checksum checked)
    // or from the acpi crate's own BIOS-area scan; tables are identity-mapped.
    let tables = unsafe {
        match rsdp {
            Some(Rsdp::V2 { xsdt }) => AcpiTables::from_rsdt(IdentityMapped, 2, xsdt as usize),
            Some(Rsdp::V1 { rsdt }) => AcpiTables::from_rsdt(IdentityMapped, 0, rsdt as usize),
            None => AcpiTables::search_for_rsdp_bios(IdentityMapped),
        }
    };
    let unmappable = || UNMAPPABLE.get().copied().map(AcpiError::Unmappable);
    let tables = tables.map_err(|_| unmappable().unwrap_or(AcpiError::NoRootTable))?;
    let madt = tables.find_table::<Madt>().map_err(|_| unmappable().unwrap_or(AcpiError::NoMadt))?;
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
    Ok(MadtInfo { processors, source, power: power_ports(&tables) })
}

/// The PM1 control blocks and the reset register from the FADT, when they
/// are in I/O space, and SLP_TYP for S5 from the DSDT's \_S5 object.
fn power_ports(tables: &AcpiTables<IdentityMapped>) -> Ports {
    let Ok(fadt) = tables.find_table::<Fadt>() else {
        return Ports::default();
    };
    let io_block = |g: GenericAddress| {
        (g.address_space == AddressSpace::SystemIo && g.address != 0 && g.address <= 0xffff)
            .then(|| Block { port: g.address as u16, len: (g.bit_width / 8).max(1) })
    };
    let flags = fadt.flags;
    let reset = flags
        .supports_system_reset_via_fadt()
        .then(|| fadt.reset_register().ok())
        .flatten()
        .and_then(io_block)
        .map(|b| (b.port, fadt.reset_value));
    let s5 = tables.dsdt().ok().and_then(|dsdt| {
        let (start, len) = (dsdt.address as u64, dsdt.length as u64);
        if start + len > crate::boot::IDENTITY_MAPPED {
            crate::paging::identity_map(start, len).ok()?;
        }
        // SAFETY: the DSDT's AML lies where the FADT says, identity-mapped (above).
        let aml = unsafe { core::slice::from_raw_parts(dsdt.address as *const u8, dsdt.length as usize) };
        hvlogic::power::s5_from_aml(aml)
    });
    Ports {
        pm1a_cnt: fadt.pm1a_control_block().ok().and_then(io_block),
        pm1b_cnt: fadt.pm1b_control_block().ok().flatten().and_then(io_block),
        reset,
        s5,
    }
}
