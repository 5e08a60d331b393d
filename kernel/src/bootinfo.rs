//! What GRUB hands over: the multiboot2 boot information, read with the
//! `multiboot2` crate into the few facts the kernel uses.

use hvlogic::memmap::Range;
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

/// Most available-memory ranges kept from the memory map.
const MAX_RANGES: usize = 64;

/// Where the ACPI RSDP came from.
#[derive(Clone, Copy, Debug)]
pub enum Rsdp {
    /// Multiboot2 "ACPI new RSDP" tag (ACPI 2.0+): the XSDT address.
    V2 { xsdt: u64 },
    /// Multiboot2 "ACPI old RSDP" tag (ACPI 1.0): the RSDT address.
    V1 { rsdt: u64 },
}

pub struct BootInfo {
    /// The boot information itself: it stays reserved, the command line lives in it.
    pub range: Range,
    pub cmdline: &'static str,
    pub available: [Range; MAX_RANGES],
    pub available_len: usize,
    pub rsdp: Option<Rsdp>,
    pub bootloader: &'static str,
}

impl BootInfo {
    pub fn available(&self) -> &[Range] {
        &self.available[..self.available_len]
    }
}

/// Kept for the whole run: the command line borrows from it.
static MBI: spin::Once<BootInformation<'static>> = spin::Once::new();

/// Parse the boot information at `addr` (EBX at entry). Failures are fatal and named.
pub fn parse(addr: usize) -> BootInfo {
    // SAFETY: boot.s checked the multiboot2 magic, so EBX points at valid boot
    // information, which stays reserved (never handed to the heap) for the whole run.
    let mbi = MBI.call_once(|| match unsafe { BootInformation::load(addr as *const BootInformationHeader) } {
        Ok(mbi) => mbi,
        Err(e) => crate::run::fail_and_end(format_args!("multiboot2 boot information at {addr:#x} is invalid: {e:?}")),
    });
    let range = Range::new(mbi.start_address() as u64, mbi.end_address() as u64);
    let cmdline = mbi.command_line_tag().and_then(|t| t.cmdline().ok()).unwrap_or("");
    let bootloader = mbi.boot_loader_name_tag().and_then(|t| t.name().ok()).unwrap_or("unknown");

    let mut info = BootInfo {
        range,
        cmdline,
        available: [Range::new(0, 0); MAX_RANGES],
        available_len: 0,
        rsdp: None,
        bootloader,
    };
    let Some(mmap) = mbi.memory_map_tag() else {
        crate::run::fail_and_end(format_args!("the boot loader gave no memory map (multiboot2 tag 6)"));
    };
    for area in mmap.memory_areas().iter().filter(|a| a.typ() == MemoryAreaType::Available) {
        if info.available_len == MAX_RANGES {
            log::warn!("memory map: more than {MAX_RANGES} available ranges, the rest unused");
            break;
        }
        info.available[info.available_len] = Range::new(area.start_address(), area.end_address());
        info.available_len += 1;
    }
    // The new RSDP tag first (it leads to the XSDT), the old one next.
    info.rsdp = if let Some(t) = mbi.rsdp_v2_tag().filter(|t| t.checksum_is_valid() && t.xsdt_address() != 0) {
        Some(Rsdp::V2 { xsdt: t.xsdt_address() as u64 })
    } else {
        mbi.rsdp_v1_tag().filter(|t| t.checksum_is_valid()).map(|t| Rsdp::V1 { rsdt: t.rsdt_address() as u64 })
    };
    info
}
