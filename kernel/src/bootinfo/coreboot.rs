//! coreboot as the loader: its tables, found through the payload's cdecl
//! argument (or, as libpayload falls back to, in the first 4 KiB and at
//! 0xF0000), and its CBFS in the memory-mapped boot flash, read into the
//! same `BootInfo` a multiboot2 loader fills. The parsing and every check
//! are `hvlogic::coreboot` and `hvlogic::cbfs`; this module reads physical
//! memory and puts the facts in place.
//!
//! The hypervisor's command line is the CBFS file `hypervisor/cmdline`
//! (absent: the defaults); `hypervisor/linux`, `hypervisor/initrd` and
//! `hypervisor/linux-cmdline` become the `linux` and `initrd` boot modules
//! GRUB's `module2` lines would give, read in place in the flash.

use super::{BootInfo, Entry, Loader, Module, Rsdp, MAX_AREAS, MB2_BOOT_MAGIC};
use core::fmt;
use hvlogic::cbfs::{self, FileError};
use hvlogic::coreboot::{self as cb, CbfsLocationError, Serial, TableError};
use hvlogic::memmap::{MemoryArea, Range};
use log::warn;

const FOUR_GIB: u64 = 1 << 32;
/// Forward records followed: coreboot writes one (the low table's, at 0x500).
const MAX_FORWARDS: usize = 2;

/// Why coreboot's hand-over cannot be used.
#[derive(Clone, Copy, Debug)]
pub enum Error {
    /// No multiboot2 magic, and no `LBIO` header where the argument points
    /// nor in the low areas: neither loader entered the kernel.
    Neither { eax: u32, arg: u32 },
    /// A header was found at `at`, but the tables do not check out.
    Table { at: u64, e: TableError },
    /// Tables at address 0 or reaching past 4 GiB, outside the boot identity map.
    Unreachable { at: u64 },
    /// A forward record that leads to yet another forward.
    TooManyForwards { at: u64 },
    /// `hypervisor/cmdline` is not what its name says.
    Cmdline(FileError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Neither { eax, arg } => write!(
                f,
                "entered by neither a multiboot2 loader (EAX={eax:#x}, not {MB2_BOOT_MAGIC:#x}) nor coreboot (no coreboot tables: no `LBIO` header at the argument {arg:#x}, in the first 4 KiB or at 0xf0000)"
            ),
            Error::Table { at, e } => write!(f, "coreboot tables at {at:#x}: {e}"),
            Error::Unreachable { at } => {
                write!(f, "coreboot tables at {at:#x}: at address 0 or past 4 GiB, outside what this kernel maps at boot")
            }
            Error::TooManyForwards { at } => {
                write!(f, "coreboot tables at {at:#x}: a forward record that leads to another forward")
            }
            Error::Cmdline(e) => write!(f, "{e}"),
        }
    }
}

/// What coreboot said beyond the common facts, for the `boot: coreboot` line.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// The table used (header and records).
    pub table: Range,
    pub records: u32,
    pub serial: Option<Serial>,
    pub cbfs: Result<Range, CbfsLocationError>,
    /// Files in CBFS.
    pub files: usize,
}

impl fmt::Display for Facts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coreboot tables {:#x}-{:#x} ({} records), ", self.table.start, self.table.end, self.records)?;
        match self.serial {
            Some(s) => write!(f, "console {s}, ")?,
            None => f.write_str("no serial console given, ")?,
        }
        match self.cbfs {
            Ok(r) => write!(f, "CBFS {:#x}-{:#x} ({} files)", r.start, r.end, self.files),
            Err(e) => write!(f, "no CBFS: {e}"),
        }
    }
}

/// `len` bytes of physical memory at `at`: tables and flash, which nothing
/// writes during the run. None at address 0 or past 4 GiB.
fn phys(at: u64, len: usize) -> Option<&'static [u8]> {
    if at == 0 || at.checked_add(len as u64)? > FOUR_GIB {
        return None;
    }
    // SAFETY: boot.s identity-maps the first 4 GiB, so [at, at + len) is
    // readable at its own address; firmware tables and the boot flash stay
    // as they are for the whole run (never handed to the heap: not RAM, or
    // not available RAM in coreboot's map).
    Some(unsafe { core::slice::from_raw_parts(at as *const u8, len) })
}

/// Copy physical memory at `at` (below 1 MiB, possibly address 0) into `out`.
fn read_low(at: u64, out: &mut [u8]) {
    // SAFETY: the first 4 GiB are identity-mapped (boot.s); the CPU copies
    // the bytes (no Rust reference to address 0 is made); DF is clear.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") out.len() => _,
            inout("rsi") at => _,
            inout("rdi") out.as_mut_ptr() => _,
            options(nostack, preserves_flags)
        )
    };
}

/// Where a table header is: at the argument, else in the low search areas.
fn find_header(arg: u32) -> Option<u64> {
    if phys(arg as u64, cb::HEADER_BYTES).is_some_and(cb::has_signature) {
        return Some(arg as u64);
    }
    let mut buf = [0u8; 0x1000];
    for area in cb::SEARCH_AREAS {
        let buf = &mut buf[..area.len() as usize];
        read_low(area.start, buf);
        if let Some(offset) = cb::search(buf) {
            return Some(area.start + offset as u64);
        }
    }
    None
}

/// The checked table at `at`, and the range it occupies.
fn table_at(at: u64) -> Result<(Range, cb::Table<'static>), Error> {
    let head = phys(at, cb::HEADER_BYTES).ok_or(Error::Unreachable { at })?;
    let h = cb::header(head).map_err(|e| Error::Table { at, e })?;
    let bytes = phys(at, h.total_bytes()).ok_or(Error::Unreachable { at })?;
    let t = cb::parse(bytes).map_err(|e| Error::Table { at, e })?;
    Ok((Range::new(at, at + bytes.len() as u64), t))
}

/// "linux <the Linux command line>": the string of the `linux` module,
/// built once (the command line comes from CBFS, the role word does not).
struct ModuleString {
    bytes: [u8; 6 + cbfs::MAX_CMDLINE],
    len: usize,
}

static LINUX_MODULE: spin::Once<ModuleString> = spin::Once::new();

fn linux_module_string(cmdline: &str) -> &'static str {
    let m = LINUX_MODULE.call_once(|| {
        let mut m = ModuleString { bytes: [0; 6 + cbfs::MAX_CMDLINE], len: 0 };
        for part in ["linux ", cmdline] {
            m.bytes[m.len..m.len + part.len()].copy_from_slice(part.as_bytes());
            m.len += part.len();
        }
        m
    });
    core::str::from_utf8(&m.bytes[..m.len]).expect("built from two strs")
}

fn range_of(bytes: &[u8]) -> Range {
    let start = bytes.as_ptr() as u64;
    Range::new(start, start + bytes.len() as u64)
}

/// The boot facts from coreboot's tables and CBFS.
pub fn gather(entry: Entry) -> Result<BootInfo, Error> {
    let mut at = find_header(entry.arg).ok_or(Error::Neither { eax: entry.eax, arg: entry.arg })?;
    let mut forwards = 0;
    let (range, t) = loop {
        let (range, t) = table_at(at)?;
        match t.forward {
            None => break (range, t),
            Some(next) if forwards < MAX_FORWARDS => {
                forwards += 1;
                at = next;
            }
            Some(_) => return Err(Error::TooManyForwards { at }),
        }
    };
    let mut info = BootInfo {
        range,
        cmdline: "",
        areas: [MemoryArea::default(); MAX_AREAS],
        areas_len: 0,
        available: [Range::default(); MAX_AREAS],
        available_len: 0,
        rsdp: None,
        rsdp_bytes: None,
        rsdp_source: "RSDP found by scanning the BIOS areas",
        modules: [None; super::MAX_MODULES],
        loader: Loader::Coreboot { version: t.version, extra: t.extra_version },
        framebuffer: t.framebuffer,
        coreboot: None,
        os_error: None,
    };
    for area in t.memory() {
        if info.areas_len == MAX_AREAS {
            warn!("memory map: more than {MAX_AREAS} entries, the rest unused");
            break;
        }
        info.areas[info.areas_len] = area;
        info.areas_len += 1;
        if area.kind == cb::MEM_RAM {
            info.available[info.available_len] = area.range;
            info.available_len += 1;
        }
    }
    if let Some(addr) = t.rsdp {
        match phys(addr, cb::RSDP_V2_BYTES).map(cb::rsdp) {
            Some(Ok(r)) => {
                (info.rsdp, info.rsdp_source) = match r.xsdt {
                    Some(xsdt) => (Some(Rsdp::V2 { xsdt }), "coreboot's ACPI RSDP record (XSDT)"),
                    None => (Some(Rsdp::V1 { rsdt: r.rsdt as u64 }), "coreboot's ACPI RSDP record (RSDT)"),
                };
                info.rsdp_bytes = phys(addr, r.len);
            }
            Some(Err(e)) => {
                warn!("coreboot: the ACPI RSDP at {addr:#x} is unusable: {e}; scanning the BIOS areas instead")
            }
            None => warn!("coreboot: the ACPI RSDP at {addr:#x} is past 4 GiB; scanning the BIOS areas instead"),
        }
    }
    if let Some(s) = t.serial.filter(|s| s.kind != cb::SERIAL_IO) {
        warn!("coreboot: its console is a UART {s}; this kernel logs to I/O-port UARTs only");
    }
    let cbfs = t.cbfs();
    let region = cbfs.ok().and_then(|r| phys(r.start, r.len() as usize)).unwrap_or(&[]);
    let found = cbfs::find(region);
    if let Some((offset, why)) = found.first_corrupt {
        warn!(
            "coreboot: CBFS: {} file headers skipped as corrupt, the first at offset {offset:#x}: {why}",
            found.corrupt
        );
    }
    if let Some(f) = found.cmdline {
        info.cmdline = cbfs::text(&f, cbfs::CMDLINE).map_err(Error::Cmdline)?;
    }
    match cbfs::os(&found) {
        Ok(None) => {}
        Ok(Some(os)) => {
            info.modules[0] = Some(Module { range: range_of(os.linux), cmdline: linux_module_string(os.cmdline) });
            if let Some(initrd) = os.initrd {
                info.modules[1] = Some(Module { range: range_of(initrd), cmdline: "initrd" });
            }
        }
        Err(e) => info.os_error = Some(e),
    }
    info.coreboot = Some(Facts { table: range, records: t.records, serial: t.serial, cbfs, files: found.files });
    Ok(info)
}
