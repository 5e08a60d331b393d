//! What the loader hands over, gathered once into the few facts the kernel
//! uses (`BootInfo`), whichever loader it was: a multiboot2 loader (GRUB),
//! whose boot information is read here with the `multiboot2` crate, or
//! coreboot, whose tables and CBFS are read by `coreboot` (as libpayload's
//! sysinfo gathers them for its payloads). `gather` tells them apart.

mod coreboot;

use core::fmt;
use hvlogic::memmap::{MemoryArea, Range};
pub use hvlogic::screen::{Field, Framebuffer, FramebufferKind};
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

/// EAX from a multiboot2 loader (Multiboot2 spec 3.3).
const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;

/// Most memory-map entries kept.
const MAX_AREAS: usize = 128;
/// Most boot modules kept.
pub const MAX_MODULES: usize = 8;

/// The ACPI root table the loader pointed at.
#[derive(Clone, Copy, Debug)]
pub enum Rsdp {
    /// An ACPI 2.0+ RSDP (multiboot2 "ACPI new RSDP" tag): the XSDT address.
    V2 { xsdt: u64 },
    /// An ACPI 1.0 RSDP (multiboot2 "ACPI old RSDP" tag): the RSDT address.
    V1 { rsdt: u64 },
}

/// Who loaded the kernel, for the `boot:` line.
#[derive(Clone, Copy, Debug)]
pub enum Loader {
    /// A multiboot2 loader, by the name it gave (boot loader name tag).
    Multiboot2 { name: &'static str },
    /// coreboot, by its version and extra version strings.
    Coreboot { version: &'static str, extra: &'static str },
}

impl fmt::Display for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loader::Multiboot2 { name } => f.write_str(name),
            Loader::Coreboot { version: "", extra } => write!(f, "coreboot (no version given){extra}"),
            Loader::Coreboot { version, extra } => write!(f, "coreboot {version}{extra}"),
        }
    }
}

/// How the kernel was entered (boot.s): EAX, EBX, and the cdecl argument
/// on the loader's stack (0 where ESP pointed at no stack).
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub eax: u32,
    pub ebx: u32,
    pub arg: u32,
}

/// A boot module (`module2 FILE STRING` in grub.cfg): where GRUB loaded it
/// and its string.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub range: Range,
    pub cmdline: &'static str,
}

pub struct BootInfo {
    /// The boot information itself (multiboot2's, or coreboot's table): it stays
    /// reserved and is withheld from an OS guest; a multiboot2 command line lives in it.
    pub range: Range,
    pub cmdline: &'static str,
    /// Every entry of the memory map, in the boot loader's order.
    areas: [MemoryArea; MAX_AREAS],
    areas_len: usize,
    /// The available (type 1) entries.
    available: [Range; MAX_AREAS],
    available_len: usize,
    pub rsdp: Option<Rsdp>,
    /// The RSDP structure itself, as the boot loader copied it into its tag
    /// (20 bytes for ACPI 1.0, 36 for 2.0+): handed on to an OS, which may
    /// have no other way to find ACPI (UEFI).
    pub rsdp_bytes: Option<&'static [u8]>,
    /// Where the RSDP came from, for the `acpi:` line.
    pub rsdp_source: &'static str,
    modules: [Option<Module>; MAX_MODULES],
    pub loader: Loader,
    /// The framebuffer tag (type 8) or coreboot's framebuffer record as the
    /// loader wrote it, unchecked (`Framebuffer::validate`); None without one.
    pub framebuffer: Option<Framebuffer>,
    /// What coreboot said beyond that (tables, serial port, CBFS), for the log.
    pub coreboot: Option<coreboot::Facts>,
    /// An OS in CBFS that is not what its file names say: refused by
    /// `linux::plan` as a bad module set is (no handoff, the run fails).
    pub os_error: Option<hvlogic::cbfs::FileError>,
}

/// Why the boot information cannot be used.
#[derive(Debug)]
pub enum BootInfoError {
    /// The multiboot2 crate rejected the structure at this address.
    Invalid { addr: usize, why: multiboot2::LoadError },
    /// No memory-map tag (type 6): nothing tells which memory is free.
    NoMemoryMap,
    /// More modules than this kernel keeps.
    TooManyModules,
    /// Entered without the multiboot2 magic, and no usable coreboot tables.
    Coreboot(coreboot::Error),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::Invalid { addr, why } => {
                write!(f, "multiboot2 boot information at {addr:#x} is invalid: {why:?}")
            }
            BootInfoError::NoMemoryMap => f.write_str("the boot loader gave no memory map (multiboot2 tag 6)"),
            BootInfoError::TooManyModules => write!(f, "more than {MAX_MODULES} boot modules"),
            BootInfoError::Coreboot(e) => write!(f, "{e}"),
        }
    }
}

impl BootInfo {
    /// The available (type 1) ranges of the memory map.
    pub fn available(&self) -> &[Range] {
        &self.available[..self.available_len]
    }

    /// Every memory-map entry with its type.
    pub fn areas(&self) -> &[MemoryArea] {
        &self.areas[..self.areas_len]
    }

    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.iter().flatten()
    }

    /// The I/O port of the loader's serial console where it is not COM1's
    /// (coreboot's serial record); None: COM1 it is.
    pub fn serial_port(&self) -> Option<u16> {
        let s = self.coreboot.as_ref()?.serial?;
        let port = u16::try_from(s.base).ok()?;
        (s.kind == hvlogic::coreboot::SERIAL_IO && port != crate::serial::COM1).then_some(port)
    }
}

/// Kept for the whole run: the command line borrows from it.
static MBI: spin::Once<BootInformation<'static>> = spin::Once::new();

/// The boot facts, from the loader that entered the kernel: a multiboot2
/// loader if EAX holds its magic, else coreboot (its tables' address is the
/// argument); neither is an error that names both.
pub fn gather(entry: Entry) -> Result<BootInfo, BootInfoError> {
    if entry.eax == MB2_BOOT_MAGIC {
        parse(entry.ebx as usize)
    } else {
        coreboot::gather(entry).map_err(BootInfoError::Coreboot)
    }
}

/// Parse the multiboot2 boot information at `addr` (EBX at entry).
fn parse(addr: usize) -> Result<BootInfo, BootInfoError> {
    // SAFETY: EAX held the multiboot2 magic (gather), so EBX points at valid boot
    // information, which stays reserved (never handed to the heap) for the whole run.
    let loaded = unsafe { BootInformation::load(addr as *const BootInformationHeader) };
    let mbi = match loaded {
        Ok(mbi) => MBI.call_once(|| mbi),
        Err(why) => return Err(BootInfoError::Invalid { addr, why }),
    };
    let range = Range::new(mbi.start_address() as u64, mbi.end_address() as u64);
    let cmdline = mbi.command_line_tag().and_then(|t| t.cmdline().ok()).unwrap_or("");
    let bootloader = mbi.boot_loader_name_tag().and_then(|t| t.name().ok()).unwrap_or("unknown");

    let mut info = BootInfo {
        range,
        cmdline,
        areas: [MemoryArea::default(); MAX_AREAS],
        areas_len: 0,
        available: [Range::new(0, 0); MAX_AREAS],
        available_len: 0,
        rsdp: None,
        rsdp_bytes: None,
        rsdp_source: "RSDP found by scanning the BIOS areas",
        modules: [None; MAX_MODULES],
        loader: Loader::Multiboot2 { name: bootloader },
        framebuffer: framebuffer(mbi),
        coreboot: None,
        os_error: None,
    };
    let mmap = mbi.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for area in mmap.memory_areas() {
        if info.areas_len == MAX_AREAS {
            log::warn!("memory map: more than {MAX_AREAS} entries, the rest unused");
            break;
        }
        let range = Range::new(area.start_address(), area.end_address());
        let kind = area.typ().val();
        info.areas[info.areas_len] = MemoryArea { range, kind };
        info.areas_len += 1;
        if area.typ() == MemoryAreaType::Available {
            info.available[info.available_len] = range;
            info.available_len += 1;
        }
    }
    // The new RSDP tag first (it leads to the XSDT), the old one next. The RSDP
    // itself follows the tag's 8-byte header (Multiboot2 spec 3.6.15, 3.6.16).
    if let Some(t) = mbi.rsdp_v2_tag().filter(|t| t.checksum_is_valid() && t.xsdt_address() != 0) {
        info.rsdp = Some(Rsdp::V2 { xsdt: t.xsdt_address() as u64 });
        info.rsdp_bytes = Some(tag_payload(t, 36));
        info.rsdp_source = "multiboot2 new RSDP tag (XSDT)";
    } else if let Some(t) = mbi.rsdp_v1_tag().filter(|t| t.checksum_is_valid()) {
        info.rsdp = Some(Rsdp::V1 { rsdt: t.rsdt_address() as u64 });
        info.rsdp_bytes = Some(tag_payload(t, 20));
        info.rsdp_source = "multiboot2 old RSDP tag (RSDT)";
    }
    for (i, m) in mbi.module_tags().enumerate() {
        let slot = info.modules.get_mut(i).ok_or(BootInfoError::TooManyModules)?;
        let range = Range::new(m.start_address() as u64, m.end_address() as u64);
        *slot = Some(Module { range, cmdline: m.cmdline().unwrap_or("") });
    }
    Ok(info)
}

/// The framebuffer info tag (Multiboot2 spec 3.6.12), copied out.
fn framebuffer(mbi: &BootInformation) -> Option<Framebuffer> {
    use multiboot2::{FramebufferTag, FramebufferType};
    let tag = mbi.get_tag::<FramebufferTag>()?;
    let kind = match tag.buffer_type() {
        Ok(FramebufferType::Indexed { palette }) => FramebufferKind::Indexed { colours: palette.len() as u16 },
        Ok(FramebufferType::RGB { red, green, blue }) => {
            let field = |f: multiboot2::FramebufferField| Field { position: f.position, size: f.size };
            FramebufferKind::Rgb { red: field(red), green: field(green), blue: field(blue) }
        }
        Ok(FramebufferType::Text) => FramebufferKind::EgaText,
        // The crate keeps the number to itself: framebuffer_type is the byte at
        // offset 29 of the tag (after type, size, address, pitch, width, height, bpp).
        Err(_) => {
            // SAFETY: the tag's fixed part (32 bytes) is inside the boot information.
            FramebufferKind::Unknown(unsafe { *(tag as *const FramebufferTag as *const u8).add(29) })
        }
    };
    Some(Framebuffer {
        address: tag.address(),
        pitch: tag.pitch(),
        width: tag.width(),
        height: tag.height(),
        bpp: tag.bpp(),
        kind,
    })
}

/// The `len` bytes after a tag's 8-byte header.
fn tag_payload<T>(tag: &'static T, len: usize) -> &'static [u8] {
    assert!(core::mem::size_of::<T>() >= 8 + len);
    // SAFETY: the tag is a 'static part of the boot information, at least 8 + len bytes long.
    unsafe { core::slice::from_raw_parts((tag as *const T as *const u8).add(8), len) }
}
