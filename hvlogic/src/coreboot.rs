//! The coreboot tables: what coreboot hands a payload, read from bytes.
//!
//! coreboot enters an ELF payload with the address of its tables as the
//! one (cdecl) argument. The tables are a header (`LBIO`, its own IP
//! checksum, the size, checksum and count of the records after it) and
//! records of `tag`, `size` and a body. This module checks the header and
//! the records and keeps what the hypervisor uses, as libpayload's sysinfo
//! does: the memory map, the serial port, the framebuffer, the ACPI RSDP,
//! the version strings, and where CBFS is on the boot medium.
//!
//! Layouts and numbers follow coreboot's
//! `src/commonlib/include/commonlib/coreboot_tables.h` at commit f0f911824b
//! (the one the test firmware is built from); citations read
//! `coreboot_tables.h "struct lb_header"`. Every field is little-endian and
//! 64-bit fields are only 4-byte aligned (`lb_uint64_t`).

use crate::memmap::{MemoryArea, Range};
use crate::screen::{Field, Framebuffer, FramebufferKind};
use core::fmt;

/// `coreboot_tables.h "struct lb_header"`: signature, header_bytes,
/// header_checksum, table_bytes, table_checksum, table_entries.
pub const HEADER_BYTES: usize = 24;
pub const SIGNATURE: &[u8; 4] = b"LBIO";
/// The most record bytes this kernel believes a table has (coreboot's own
/// table is a few KiB): a sanity bound on what a header may ask to be read.
pub const MAX_TABLE_BYTES: u32 = 1 << 20;
/// libpayload's fallback search when the argument holds no table: the first
/// 4 KiB and 0xF0000-0xF0FFF, a header every 16 bytes.
pub const SEARCH_AREAS: [Range; 2] = [Range::new(0, 0x1000), Range::new(0xf_0000, 0xf_1000)];
pub const SEARCH_STEP: usize = 16;

/// Record tags (`coreboot_tables.h` enum `LB_TAG_*`).
pub const TAG_MEMORY: u32 = 0x0001;
pub const TAG_VERSION: u32 = 0x0004;
pub const TAG_EXTRA_VERSION: u32 = 0x0005;
pub const TAG_SERIAL: u32 = 0x000f;
pub const TAG_FORWARD: u32 = 0x0011;
pub const TAG_FRAMEBUFFER: u32 = 0x0012;
pub const TAG_SPI_FLASH: u32 = 0x0029;
pub const TAG_BOOT_MEDIA_PARAMS: u32 = 0x0030;
pub const TAG_ACPI_RSDP: u32 = 0x0043;

/// Memory types (`coreboot_tables.h "struct lb_memory_range"`): 1-6 are the
/// ACPI address range types, so the e820 types; 16 is coreboot's own
/// `LB_MEM_TABLE` (its tables, CBMEM), which an OS must leave alone.
pub const MEM_RAM: u32 = 1;
pub const MEM_RESERVED: u32 = 2;
pub const MEM_TABLE: u32 = 16;
/// `struct lb_memory_range`: start (8), size (8), type (4).
const MEMORY_RANGE_BYTES: usize = 20;

/// `struct lb_serial` type: I/O ports or memory-mapped registers.
pub const SERIAL_IO: u32 = 1;
pub const SERIAL_MMIO: u32 = 2;

/// At most this many SPI flash windows are kept (`struct lb_spi_flash`).
pub const MAX_FLASH_WINDOWS: usize = 4;
/// On x86 without flash windows, only the top 16 MiB of the boot medium is
/// mapped below 4 GiB (libpayload's x86 `boot_device_read` makes the same
/// assumption).
pub const TOP_MAPPED: u64 = 16 << 20;
const FOUR_GIB: u64 = 1 << 32;

/// The checksum the coreboot tables use: RFC 1071's Internet checksum over
/// little-endian 16-bit words (an odd last byte is the low byte of a word).
pub fn ip_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, b) in bytes.iter().enumerate() {
        let v = if i % 2 == 1 { (*b as u32) << 8 } else { *b as u32 };
        sum += v;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `struct lb_header`, its checksum checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub header_bytes: u32,
    pub table_bytes: u32,
    pub table_checksum: u32,
    pub table_entries: u32,
}

impl Header {
    /// Header and records together.
    pub fn total_bytes(&self) -> usize {
        self.header_bytes as usize + self.table_bytes as usize
    }
}

/// Why coreboot tables cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No `LBIO` at the start.
    NoSignature,
    /// Fewer bytes than the header (24) or the header's sizes need.
    Truncated { need: usize, have: usize },
    /// The IP checksum over the 24 header bytes is not 0.
    HeaderChecksum { sum: u16 },
    /// `header_bytes` smaller than the header itself.
    HeaderBytes(u32),
    /// More record bytes than `MAX_TABLE_BYTES`.
    TooLarge(u32),
    /// The IP checksum of the records is not what the header says.
    TableChecksum { stored: u32, computed: u16 },
    /// Record `index` (at byte `offset` of the records) runs past the table
    /// or is smaller than a record header.
    Record { index: u32, offset: usize, size: u32 },
    /// A record this kernel reads is shorter than its layout.
    ShortRecord { tag: u32, size: u32, need: u32 },
    /// A string record (the version) that is not UTF-8 text.
    NotText { tag: u32 },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TableError::NoSignature => f.write_str("no `LBIO` signature"),
            TableError::Truncated { need, have } => {
                write!(f, "truncated: {have} bytes where the header needs {need}")
            }
            TableError::HeaderChecksum { sum } => {
                write!(f, "bad header checksum (the IP checksum of the header is {sum:#06x}, not 0)")
            }
            TableError::HeaderBytes(n) => write!(f, "header_bytes is {n}, smaller than the 24-byte header"),
            TableError::TooLarge(n) => {
                write!(f, "table_bytes is {n:#x}, more than the {MAX_TABLE_BYTES:#x} this kernel reads")
            }
            TableError::TableChecksum { stored, computed } => write!(
                f,
                "bad table checksum: the header says {stored:#06x}, the records sum to {computed:#06x}"
            ),
            TableError::Record { index, offset, size } => write!(
                f,
                "record {index} at table offset {offset:#x} (size {size}) runs past the table or is smaller than 8 bytes"
            ),
            TableError::ShortRecord { tag, size, need } => {
                write!(f, "record tag {tag:#x} has {size} bytes, its layout needs {need}")
            }
            TableError::NotText { tag } => write!(f, "string record tag {tag:#x} is not UTF-8 text"),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether `bytes` start with the `LBIO` signature.
pub fn has_signature(bytes: &[u8]) -> bool {
    bytes.starts_with(SIGNATURE)
}

/// Read and check the header at the start of `bytes` (24 bytes are enough).
pub fn header(bytes: &[u8]) -> Result<Header, TableError> {
    if bytes.len() < HEADER_BYTES {
        return Err(TableError::Truncated { need: HEADER_BYTES, have: bytes.len() });
    }
    if !has_signature(bytes) {
        return Err(TableError::NoSignature);
    }
    let sum = ip_checksum(&bytes[..HEADER_BYTES]);
    if sum != 0 {
        return Err(TableError::HeaderChecksum { sum });
    }
    let h = Header {
        header_bytes: u32_at(bytes, 4),
        table_bytes: u32_at(bytes, 12),
        table_checksum: u32_at(bytes, 16),
        table_entries: u32_at(bytes, 20),
    };
    if (h.header_bytes as usize) < HEADER_BYTES {
        return Err(TableError::HeaderBytes(h.header_bytes));
    }
    if h.table_bytes > MAX_TABLE_BYTES {
        return Err(TableError::TooLarge(h.table_bytes));
    }
    Ok(h)
}

/// Where the first header lies in a search area (every 16 bytes), as an offset.
pub fn search(area: &[u8]) -> Option<usize> {
    (0..area.len().saturating_sub(SIGNATURE.len() - 1)).step_by(SEARCH_STEP).find(|&at| has_signature(&area[at..]))
}

/// The serial port (`struct lb_serial`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serial {
    /// `SERIAL_IO` or `SERIAL_MMIO`.
    pub kind: u32,
    pub base: u32,
    pub baud: u32,
    /// Register width in bytes (0 in records older than the field).
    pub regwidth: u32,
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SERIAL_IO => write!(f, "I/O port {:#x}, {} baud", self.base, self.baud),
            SERIAL_MMIO => write!(f, "memory-mapped at {:#x}, {} baud", self.base, self.baud),
            k => write!(f, "type {k} at {:#x}, {} baud", self.base, self.baud),
        }
    }
}

/// Where CBFS lies on the boot medium (`struct lb_boot_media_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BootMedia {
    pub fmap_offset: u64,
    pub cbfs_offset: u64,
    pub cbfs_size: u64,
    pub boot_media_size: u64,
}

/// One window of the boot medium mapped into the address space
/// (`struct flash_mmap_window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlashWindow {
    pub flash_base: u32,
    pub host_base: u32,
    pub size: u32,
}

/// Why CBFS cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CbfsLocationError {
    /// The tables have no boot-media record: coreboot did not say where CBFS is.
    NotGiven,
    /// CBFS lies outside the part of the boot medium mapped below 4 GiB.
    NotMapped { offset: u64, size: u64, media: u64 },
}

impl fmt::Display for CbfsLocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CbfsLocationError::NotGiven => f.write_str("the coreboot tables do not say where CBFS is (no boot media record, tag 0x30)"),
            CbfsLocationError::NotMapped { offset, size, media } => write!(
                f,
                "CBFS at offset {offset:#x} ({size:#x} bytes) of the {media:#x}-byte boot medium is not memory-mapped below 4 GiB"
            ),
        }
    }
}

/// What the tables say, as this kernel uses it. Borrowed from the table
/// bytes (the version strings, the memory map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table<'a> {
    /// A forward record (`LB_TAG_FORWARD`): the real table is at this
    /// address, and nothing else here counts (libpayload does the same).
    pub forward: Option<u64>,
    memory: &'a [u8],
    pub serial: Option<Serial>,
    pub framebuffer: Option<Framebuffer>,
    pub rsdp: Option<u64>,
    pub version: &'a str,
    pub extra_version: &'a str,
    pub boot_media: Option<BootMedia>,
    windows: [FlashWindow; MAX_FLASH_WINDOWS],
    windows_len: usize,
    pub records: u32,
}

/// Parse a whole table: header and records (`header().total_bytes()` bytes).
pub fn parse(bytes: &[u8]) -> Result<Table<'_>, TableError> {
    let h = header(bytes)?;
    let need = h.total_bytes();
    if bytes.len() < need {
        return Err(TableError::Truncated { need, have: bytes.len() });
    }
    let records = &bytes[h.header_bytes as usize..need];
    let computed = ip_checksum(records);
    if computed as u32 != h.table_checksum {
        return Err(TableError::TableChecksum { stored: h.table_checksum, computed });
    }
    let mut t = Table {
        forward: None,
        memory: &[],
        serial: None,
        framebuffer: None,
        rsdp: None,
        version: "",
        extra_version: "",
        boot_media: None,
        windows: [FlashWindow::default(); MAX_FLASH_WINDOWS],
        windows_len: 0,
        records: h.table_entries,
    };
    let mut at = 0usize;
    for index in 0..h.table_entries {
        if at + 8 > records.len() {
            return Err(TableError::Record { index, offset: at, size: 0 });
        }
        let tag = u32_at(records, at);
        let size = u32_at(records, at + 4);
        if size < 8 || at + size as usize > records.len() {
            return Err(TableError::Record { index, offset: at, size });
        }
        let rec = &records[at..at + size as usize];
        let need = |n: u32| if size < n { Err(TableError::ShortRecord { tag, size, need: n }) } else { Ok(()) };
        match tag {
            TAG_FORWARD => {
                need(16)?;
                t.forward = Some(u64_at(rec, 8));
                return Ok(t);
            }
            TAG_MEMORY => t.memory = &rec[8..8 + (rec.len() - 8) / MEMORY_RANGE_BYTES * MEMORY_RANGE_BYTES],
            TAG_SERIAL => {
                need(20)?;
                let regwidth = if size >= 24 { u32_at(rec, 20) } else { 0 };
                t.serial =
                    Some(Serial { kind: u32_at(rec, 8), base: u32_at(rec, 12), baud: u32_at(rec, 16), regwidth });
            }
            TAG_FRAMEBUFFER => {
                // Through reserved_mask_size: 8 + 8 + 3 * 4 + 9.
                need(37)?;
                let field = |at: usize| Field { position: rec[at], size: rec[at + 1] };
                t.framebuffer = Some(Framebuffer {
                    address: u64_at(rec, 8),
                    width: u32_at(rec, 16),
                    height: u32_at(rec, 20),
                    pitch: u32_at(rec, 24),
                    bpp: rec[28],
                    kind: FramebufferKind::Rgb { red: field(29), green: field(31), blue: field(33) },
                });
            }
            TAG_ACPI_RSDP => {
                need(16)?;
                t.rsdp = Some(u64_at(rec, 8));
            }
            TAG_VERSION => t.version = string(rec, tag)?,
            TAG_EXTRA_VERSION => t.extra_version = string(rec, tag)?,
            TAG_BOOT_MEDIA_PARAMS => {
                need(40)?;
                t.boot_media = Some(BootMedia {
                    fmap_offset: u64_at(rec, 8),
                    cbfs_offset: u64_at(rec, 16),
                    cbfs_size: u64_at(rec, 24),
                    boot_media_size: u64_at(rec, 32),
                });
            }
            TAG_SPI_FLASH if size >= 24 => {
                // flash_size, sector_size, erase_cmd/flags/reserved, mmap_count, windows.
                let count = u32_at(rec, 20) as usize;
                let fit = (rec.len() - 24) / 12;
                t.windows_len = count.min(fit).min(MAX_FLASH_WINDOWS);
                for (i, w) in t.windows[..t.windows_len].iter_mut().enumerate() {
                    let at = 24 + 12 * i;
                    *w = FlashWindow {
                        flash_base: u32_at(rec, at),
                        host_base: u32_at(rec, at + 4),
                        size: u32_at(rec, at + 8),
                    };
                }
            }
            _ => {}
        }
        at += size as usize;
    }
    Ok(t)
}

/// A string record (`struct lb_string`): the bytes up to the first NUL.
fn string(rec: &[u8], tag: u32) -> Result<&str, TableError> {
    let s = &rec[8..];
    let s = &s[..s.iter().position(|b| *b == 0).unwrap_or(s.len())];
    core::str::from_utf8(s).map_err(|_| TableError::NotText { tag })
}

impl<'a> Table<'a> {
    /// The memory map, in coreboot's order. `LB_MEM_TABLE` (16) comes out as
    /// reserved (2), its e820 meaning, as SeaBIOS and GRUB hand it on.
    pub fn memory(&self) -> impl Iterator<Item = MemoryArea> + 'a {
        self.memory.chunks_exact(MEMORY_RANGE_BYTES).map(|e| {
            let (start, size, kind) = (u64_at(e, 0), u64_at(e, 8), u32_at(e, 16));
            let kind = if kind == MEM_TABLE { MEM_RESERVED } else { kind };
            MemoryArea { range: Range::new(start, start.saturating_add(size)), kind }
        })
    }

    /// The SPI flash windows (none when the record is missing or older than them).
    pub fn flash_windows(&self) -> &[FlashWindow] {
        &self.windows[..self.windows_len]
    }

    /// Where CBFS is in the address space: through the flash windows when
    /// coreboot gave them, else at the top of the 4 GiB space, where x86
    /// maps the end of the boot medium (at most its last 16 MiB).
    pub fn cbfs(&self) -> Result<Range, CbfsLocationError> {
        let m = self.boot_media.ok_or(CbfsLocationError::NotGiven)?;
        let (offset, size, media) = (m.cbfs_offset, m.cbfs_size, m.boot_media_size);
        let not_mapped = CbfsLocationError::NotMapped { offset, size, media };
        let end = offset.checked_add(size).ok_or(not_mapped)?;
        if size == 0 {
            return Err(not_mapped);
        }
        if !self.flash_windows().is_empty() {
            return self
                .flash_windows()
                .iter()
                .find(|w| w.flash_base as u64 <= offset && end <= w.flash_base as u64 + w.size as u64)
                .map(|w| {
                    let start = w.host_base as u64 + (offset - w.flash_base as u64);
                    Range::new(start, start + size)
                })
                .filter(|r| r.end <= FOUR_GIB)
                .ok_or(not_mapped);
        }
        if media > FOUR_GIB || end > media || media - offset > TOP_MAPPED {
            return Err(not_mapped);
        }
        let start = FOUR_GIB - media + offset;
        Ok(Range::new(start, start + size))
    }
}

/// Why an ACPI RSDP is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpError {
    Truncated,
    NoSignature,
    Checksum,
    ExtendedChecksum,
}

impl fmt::Display for RsdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RsdpError::Truncated => "shorter than an RSDP",
            RsdpError::NoSignature => "no `RSD PTR ` signature",
            RsdpError::Checksum => "bad checksum over its first 20 bytes",
            RsdpError::ExtendedChecksum => "bad extended checksum over its 36 bytes",
        })
    }
}

/// An RSDP, checked (ACPI 6.5 §5.2.5.3 "Root System Description Pointer
/// (RSDP) Structure"): revision 0 has 20 bytes and the RSDT; revision 2 and
/// later 36, with the XSDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub rsdt: u32,
    pub xsdt: Option<u64>,
    /// 20 or 36: the bytes an OS gets as a copy.
    pub len: usize,
}

pub const RSDP_V1_BYTES: usize = 20;
pub const RSDP_V2_BYTES: usize = 36;

/// Check the RSDP at the start of `bytes` (36 bytes, or 20 for revision 0).
pub fn rsdp(bytes: &[u8]) -> Result<Rsdp, RsdpError> {
    if bytes.len() < RSDP_V1_BYTES {
        return Err(RsdpError::Truncated);
    }
    if &bytes[..8] != b"RSD PTR " {
        return Err(RsdpError::NoSignature);
    }
    let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
    if sum(&bytes[..RSDP_V1_BYTES]) != 0 {
        return Err(RsdpError::Checksum);
    }
    let rsdt = u32_at(bytes, 16);
    if bytes[15] < 2 {
        return Ok(Rsdp { rsdt, xsdt: None, len: RSDP_V1_BYTES });
    }
    if bytes.len() < RSDP_V2_BYTES {
        return Err(RsdpError::Truncated);
    }
    if sum(&bytes[..RSDP_V2_BYTES]) != 0 {
        return Err(RsdpError::ExtendedChecksum);
    }
    let xsdt = u64_at(bytes, 24);
    Ok(Rsdp { rsdt, xsdt: (xsdt != 0).then_some(xsdt), len: RSDP_V2_BYTES })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// A record: tag, size (8 + body, padded to 4), body.
    pub fn record(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        let size = (8 + body.len()).next_multiple_of(4);
        r.extend_from_slice(&tag.to_le_bytes());
        r.extend_from_slice(&(size as u32).to_le_bytes());
        r.extend_from_slice(body);
        r.resize(size, 0);
        r
    }

    /// A table with these records and correct checksums.
    pub fn table(records: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = records.concat();
        let mut t = Vec::new();
        t.extend_from_slice(SIGNATURE);
        t.extend_from_slice(&24u32.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&(body.len() as u32).to_le_bytes());
        t.extend_from_slice(&(ip_checksum(&body) as u32).to_le_bytes());
        t.extend_from_slice(&(records.len() as u32).to_le_bytes());
        let hc = ip_checksum(&t);
        t[8..12].copy_from_slice(&(hc as u32).to_le_bytes());
        t.extend_from_slice(&body);
        t
    }

    fn memory(ranges: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (start, size, kind) in ranges {
            b.extend_from_slice(&start.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&kind.to_le_bytes());
        }
        record(TAG_MEMORY, &b)
    }

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// What coreboot for QEMU q35 hands over (the records this kernel reads,
    /// values as the test firmware writes them).
    pub fn q35() -> Vec<u8> {
        let mut serial = Vec::new();
        for w in [SERIAL_IO, 0x3f8, 115200, 1, 1_843_200] {
            serial.extend_from_slice(&w.to_le_bytes());
        }
        table(&[
            memory(&[(0, 0x1000, 16), (0x1000, 0x9f000, 1), (0x100000, 0xfd5_8000, 1), (0xfe5_8000, 0x1a_8000, 16)]),
            record(0x3, b"\x00\x0aEmulation\x00QEMU x86 q35/ich9\x00"),
            record(TAG_SERIAL, &serial),
            record(TAG_VERSION, b"25.09-42-gf0f911824b\x00"),
            record(TAG_EXTRA_VERSION, b"\x00"),
            record(TAG_BOOT_MEDIA_PARAMS, &words(&[0, 0x1000, 0xfff000, 0x100_0000])),
            record(TAG_ACPI_RSDP, &words(&[0xfe8_0040])),
        ])
    }

    #[test]
    fn the_ip_checksum_is_rfc_1071_over_little_endian_words() {
        assert_eq!(ip_checksum(&[]), 0xffff);
        assert_eq!(ip_checksum(&[0x01, 0x02]), !0x0201);
        // An odd byte is the low byte of a last word.
        assert_eq!(ip_checksum(&[0x01, 0x02, 0x03]), !0x0204);
        // End-around carry.
        assert_eq!(ip_checksum(&[0xff, 0xff, 0x02, 0x00]), !0x0002);
        // A checksum written into the data makes it sum to 0.
        let mut d = [0x12u8, 0x34, 0, 0, 0x56, 0x78];
        let c = ip_checksum(&d);
        d[2..4].copy_from_slice(&c.to_le_bytes());
        assert_eq!(ip_checksum(&d), 0);
    }

    #[test]
    fn a_q35_table_gives_every_fact() {
        let bytes = q35();
        let t = parse(&bytes).unwrap();
        assert_eq!(t.forward, None);
        assert_eq!(t.records, 7);
        assert_eq!(t.version, "25.09-42-gf0f911824b");
        assert_eq!(t.extra_version, "");
        assert_eq!(t.serial, Some(Serial { kind: SERIAL_IO, base: 0x3f8, baud: 115200, regwidth: 1 }));
        assert_eq!(t.serial.unwrap().to_string(), "I/O port 0x3f8, 115200 baud");
        assert_eq!(t.rsdp, Some(0xfe8_0040));
        assert_eq!(t.framebuffer, None);
        let m: Vec<MemoryArea> = t.memory().collect();
        assert_eq!(m.len(), 4);
        // LB_MEM_TABLE is reserved for everyone else.
        assert_eq!(m[0], MemoryArea { range: Range::new(0, 0x1000), kind: MEM_RESERVED });
        assert_eq!(m[2], MemoryArea { range: Range::new(0x100000, 0xfe5_8000), kind: MEM_RAM });
        assert_eq!(t.cbfs(), Ok(Range::new(0xff00_1000, 0x1_0000_0000)));
    }

    #[test]
    fn a_forward_record_points_at_the_real_table() {
        let bytes = table(&[record(TAG_FORWARD, &words(&[0xfe9_8000]))]);
        assert_eq!(parse(&bytes).unwrap().forward, Some(0xfe9_8000));
    }

    #[test]
    fn a_framebuffer_record_is_read_field_by_field() {
        let mut b = words(&[0xfd00_0000]);
        for w in [1024u32, 768, 4096] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&[32, 16, 8, 8, 8, 0, 8, 24, 8, 0, 0, 0]);
        let bytes = table(&[record(TAG_FRAMEBUFFER, &b)]);
        let t = parse(&bytes).unwrap();
        let rgb = |p, s| Field { position: p, size: s };
        assert_eq!(
            t.framebuffer,
            Some(Framebuffer {
                address: 0xfd00_0000,
                pitch: 4096,
                width: 1024,
                height: 768,
                bpp: 32,
                kind: FramebufferKind::Rgb { red: rgb(16, 8), green: rgb(8, 8), blue: rgb(0, 8) },
            })
        );
    }

    #[test]
    fn a_bad_header_is_named() {
        let good = q35();
        assert_eq!(header(&good[..23]), Err(TableError::Truncated { need: 24, have: 23 }));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(parse(&b), Err(TableError::NoSignature));
        let mut b = good.clone();
        b[20] ^= 1; // table_entries changed, header checksum not
        assert!(matches!(parse(&b), Err(TableError::HeaderChecksum { .. })));
    }

    #[test]
    fn a_bad_table_checksum_is_named() {
        let mut b = q35();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        let e = parse(&b).unwrap_err();
        assert!(matches!(e, TableError::TableChecksum { .. }), "{e:?}");
        assert!(e.to_string().starts_with("bad table checksum: the header says 0x"));
    }

    #[test]
    fn truncated_tables_are_refused_at_every_length() {
        let good = q35();
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_err(), "{len} bytes");
        }
        assert_eq!(parse(&good[..100]), Err(TableError::Truncated { need: good.len(), have: 100 }),);
    }

    /// A table whose header and checksums are right but whose record sizes lie.
    fn with_header_fixed(mut t: Vec<u8>) -> Vec<u8> {
        let body = t[24..].to_vec();
        t[16..20].copy_from_slice(&(ip_checksum(&body) as u32).to_le_bytes());
        t[8..12].fill(0);
        let hc = ip_checksum(&t[..24]);
        t[8..12].copy_from_slice(&(hc as u32).to_le_bytes());
        t
    }

    #[test]
    fn records_that_run_past_the_table_are_named() {
        let mut t = table(&[record(TAG_VERSION, b"4.22\x00")]);
        t[28..32].copy_from_slice(&64u32.to_le_bytes()); // size past the end
        let t = with_header_fixed(t);
        assert_eq!(parse(&t), Err(TableError::Record { index: 0, offset: 0, size: 64 }));
        let mut t = table(&[record(TAG_VERSION, b"4.22\x00")]);
        t[28..32].copy_from_slice(&4u32.to_le_bytes()); // smaller than a record header
        assert_eq!(parse(&with_header_fixed(t)), Err(TableError::Record { index: 0, offset: 0, size: 4 }));
        // More entries than records.
        let mut t = table(&[record(TAG_VERSION, b"4.22\x00")]);
        t[20..24].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse(&with_header_fixed(t)), Err(TableError::Record { index: 1, offset: 16, size: 0 }));
    }

    #[test]
    fn short_known_records_and_bad_strings_are_named() {
        let t = table(&[record(TAG_ACPI_RSDP, &[1, 2, 3, 4])]);
        assert_eq!(parse(&t), Err(TableError::ShortRecord { tag: TAG_ACPI_RSDP, size: 12, need: 16 }));
        let t = table(&[record(TAG_VERSION, &[0xff, 0xfe, 0])]);
        assert_eq!(parse(&t), Err(TableError::NotText { tag: TAG_VERSION }));
        let mut h = table(&[]);
        h[12..16].copy_from_slice(&(MAX_TABLE_BYTES + 4).to_le_bytes());
        let h = with_header_fixed(h);
        assert_eq!(parse(&h), Err(TableError::TooLarge(MAX_TABLE_BYTES + 4)));
    }

    #[test]
    fn search_finds_a_header_on_a_16_byte_boundary_only() {
        let mut area = [0u8; 0x1000];
        assert_eq!(search(&area), None);
        area[0x505..0x509].copy_from_slice(SIGNATURE);
        assert_eq!(search(&area), None);
        area[0x500..0x504].copy_from_slice(SIGNATURE);
        assert_eq!(search(&area), Some(0x500));
        assert_eq!(search(b"LBI"), None);
        assert_eq!(search(b"LBIO"), Some(0));
    }

    fn with_media(m: BootMedia, windows: &[FlashWindow]) -> Result<Range, CbfsLocationError> {
        let bytes = q35();
        let mut t = parse(&bytes).unwrap();
        t.boot_media = Some(m);
        t.windows_len = windows.len();
        t.windows[..windows.len()].copy_from_slice(windows);
        t.cbfs()
    }

    #[test]
    fn cbfs_is_found_through_windows_or_at_the_top_of_4_gib() {
        let m = |offset, size, media| BootMedia {
            fmap_offset: 0,
            cbfs_offset: offset,
            cbfs_size: size,
            boot_media_size: media,
        };
        // 32 MiB flash, no windows: only the top 16 MiB is reachable.
        assert_eq!(with_media(m(0x100_0000, 0x100_0000, 0x200_0000), &[]), Ok(Range::new(0xff00_0000, 1 << 32)));
        assert_eq!(
            with_media(m(0x20_0000, 0x100_0000, 0x200_0000), &[]),
            Err(CbfsLocationError::NotMapped { offset: 0x20_0000, size: 0x100_0000, media: 0x200_0000 })
        );
        assert!(with_media(m(0x1000, 0x2000_0000, 0x100_0000), &[]).is_err());
        assert!(with_media(m(0, 0, 0x100_0000), &[]).is_err());
        assert!(with_media(m(u64::MAX, 2, 0x100_0000), &[]).is_err());
        // Windows: an Intel board with the BIOS region's top 16 MiB mapped.
        let w = [FlashWindow { flash_base: 0x100_0000, host_base: 0xff00_0000, size: 0x100_0000 }];
        assert_eq!(with_media(m(0x180_0000, 0x80_0000, 0x200_0000), &w), Ok(Range::new(0xff80_0000, 1 << 32)));
        assert!(with_media(m(0x80_0000, 0x80_0000, 0x200_0000), &w).is_err());
        let bytes = q35();
        let mut t = parse(&bytes).unwrap();
        t.boot_media = None;
        assert_eq!(t.cbfs(), Err(CbfsLocationError::NotGiven));
    }

    #[test]
    fn spi_flash_windows_are_read_from_their_record() {
        let mut b = Vec::new();
        for w in [0x200_0000u32, 0x1000, 0, 1, 0x100_0000, 0xff00_0000, 0x100_0000] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let bytes = table(&[record(TAG_SPI_FLASH, &b)]);
        let t = parse(&bytes).unwrap();
        assert_eq!(
            t.flash_windows(),
            &[FlashWindow { flash_base: 0x100_0000, host_base: 0xff00_0000, size: 0x100_0000 }]
        );
        // A count larger than the record holds is cut to what is there.
        b[12..16].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(parse(&table(&[record(TAG_SPI_FLASH, &b)])).unwrap().flash_windows().len(), 1);
    }

    fn rsdp_bytes(revision: u8, xsdt: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RSD PTR ");
        b.push(0);
        b.extend_from_slice(b"COREv4");
        b.push(revision);
        b.extend_from_slice(&0xfe8_1000u32.to_le_bytes());
        b.extend_from_slice(&36u32.to_le_bytes());
        b.extend_from_slice(&xsdt.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        b[8] = 0u8.wrapping_sub(sum(&b[..20]));
        b[32] = 0u8.wrapping_sub(sum(&b[..36]));
        b
    }

    #[test]
    fn an_rsdp_is_checked_by_revision() {
        let v2 = rsdp_bytes(2, 0xfe8_2000);
        assert_eq!(rsdp(&v2), Ok(Rsdp { rsdt: 0xfe8_1000, xsdt: Some(0xfe8_2000), len: 36 }));
        let v1 = rsdp_bytes(0, 0);
        assert_eq!(rsdp(&v1[..20]), Ok(Rsdp { rsdt: 0xfe8_1000, xsdt: None, len: 20 }));
        assert_eq!(rsdp(&v2[..19]), Err(RsdpError::Truncated));
        assert_eq!(rsdp(&v2[..30]), Err(RsdpError::Truncated));
        let mut bad = v2.clone();
        bad[0] = b'X';
        assert_eq!(rsdp(&bad), Err(RsdpError::NoSignature));
        let mut bad = v2.clone();
        bad[10] ^= 1;
        assert_eq!(rsdp(&bad), Err(RsdpError::Checksum));
        let mut bad = v2;
        bad[30] ^= 1;
        assert_eq!(rsdp(&bad), Err(RsdpError::ExtendedChecksum));
    }
}
