//! The bzImage and its setup header, as the Linux/x86 boot protocol describes
//! them (the kernel's Documentation/arch/x86/boot.rst, "The Real-Mode Kernel
//! Header"). Offsets are into the image file, which begins with the real-mode
//! setup code; the protected-mode kernel follows `setup_sects` sectors of it.

use core::fmt;

/// Offsets of the setup-header fields this loader reads or writes.
pub mod offset {
    pub const SETUP_SECTS: usize = 0x1f1;
    /// The protected-mode code's size in 16-byte paragraphs (32 bits from protocol 2.04).
    pub const SYSSIZE: usize = 0x1f4;
    pub const VID_MODE: usize = 0x1fa;
    pub const BOOT_FLAG: usize = 0x1fe;
    /// The byte at 0x201 is the jump's displacement: the header ends at 0x202 + it.
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const KERNEL_VERSION: usize = 0x20e;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const HEAP_END_PTR: usize = 0x224;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
}

/// "HdrS": the setup header's magic.
pub const HDRS: u32 = 0x5372_6448;
pub const BOOT_FLAG: u16 = 0xaa55;
/// The oldest protocol this loader speaks: 2.12 brought xloadflags (and the
/// 64-bit entry), and 2.10 pref_address and init_size, which placement needs.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// loadflags bit 0: the protected-mode code is loaded at 0x100000 (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// loadflags bit 7: heap_end_ptr is valid (real-mode setup only).
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// type_of_loader for a boot loader without an assigned ID.
pub const LOADER_UNDEFINED: u8 = 0xff;
/// setup_sects counts 512-byte sectors.
pub const SECTOR: usize = 512;

/// The setup-header fields this loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    pub setup_sects: u8,
    /// The protected-mode kernel's size in 16-byte paragraphs.
    pub syssize: u32,
    /// Boot protocol version, e.g. 0x020f for 2.15.
    pub version: u16,
    pub loadflags: u8,
    pub code32_start: u32,
    /// Highest address the initrd may occupy (its last byte).
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub xloadflags: u16,
    /// Longest command line, without the terminating NUL.
    pub cmdline_size: u32,
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address to start (decompression included).
    pub init_size: u32,
}

/// A parsed bzImage: the file and its header.
#[derive(Clone, Copy, Debug)]
pub struct BzImage<'a> {
    bytes: &'a [u8],
    pub header: SetupHeader,
    /// The kernel version string (the `kernel_version` field points at it).
    pub version: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// Shorter than a setup header, or than its own setup code says.
    TooShort {
        len: usize,
    },
    /// Shorter than its header says it is: `setup_sects` sectors of setup
    /// code after the boot sector, then `syssize` paragraphs of kernel (a
    /// partial copy, as a failed copy or a bad medium leaves).
    Truncated {
        len: usize,
        needs: usize,
    },
    /// `syssize` is 0: the header names no protected-mode kernel.
    NoKernel,
    /// No 0xAA55 at 0x1FE.
    NoBootFlag,
    /// No "HdrS" at 0x202: a kernel older than protocol 2.00, or no kernel at all.
    NoHeader,
    ProtocolTooOld {
        version: u16,
    },
    /// loadflags.LOADED_HIGH clear: a zImage, loaded low.
    NotBzImage,
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BzImageError::TooShort { len } => {
                write!(f, "not a bzImage: {len} bytes, shorter than its setup header says")
            }
            BzImageError::Truncated { len, needs } => write!(
                f,
                "truncated: {len} bytes, but its header says {needs} ((1 + setup_sects) * 512 + syssize * 16)"
            ),
            BzImageError::NoKernel => f.write_str("not a bzImage: syssize is 0 (no protected-mode kernel)"),
            BzImageError::NoBootFlag => f.write_str("not a bzImage: no boot flag 0xAA55 at offset 0x1fe"),
            BzImageError::NoHeader => f.write_str("not a bzImage: no setup header signature \"HdrS\" at offset 0x202"),
            BzImageError::ProtocolTooOld { version } => write!(
                f,
                "boot protocol {}.{:02} is too old: this loader needs {}.{:02} or later",
                version >> 8,
                version & 0xff,
                MIN_PROTOCOL >> 8,
                MIN_PROTOCOL & 0xff
            ),
            BzImageError::NotBzImage => f.write_str("a zImage (loadflags.LOADED_HIGH clear), not a bzImage"),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u32_at(b, o) as u64 | (u32_at(b, o + 4) as u64) << 32
}

impl<'a> BzImage<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<BzImage<'a>, BzImageError> {
        use offset::*;
        let too_short = BzImageError::TooShort { len: bytes.len() };
        if bytes.len() < INIT_SIZE + 4 {
            return Err(too_short);
        }
        if u16_at(bytes, BOOT_FLAG) != self::BOOT_FLAG {
            return Err(BzImageError::NoBootFlag);
        }
        if u32_at(bytes, HEADER) != HDRS {
            return Err(BzImageError::NoHeader);
        }
        let version = u16_at(bytes, VERSION);
        if version < MIN_PROTOCOL {
            return Err(BzImageError::ProtocolTooOld { version });
        }
        let header = SetupHeader {
            setup_sects: match bytes[SETUP_SECTS] {
                0 => 4, // "If this field is 0, the real value is 4."
                n => n,
            },
            syssize: u32_at(bytes, SYSSIZE),
            version,
            loadflags: bytes[LOADFLAGS],
            code32_start: u32_at(bytes, CODE32_START),
            initrd_addr_max: u32_at(bytes, INITRD_ADDR_MAX),
            kernel_alignment: u32_at(bytes, KERNEL_ALIGNMENT),
            relocatable: bytes[RELOCATABLE_KERNEL] != 0,
            xloadflags: u16_at(bytes, XLOADFLAGS),
            cmdline_size: u32_at(bytes, CMDLINE_SIZE),
            pref_address: u64_at(bytes, PREF_ADDRESS),
            init_size: u32_at(bytes, INIT_SIZE),
        };
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(BzImageError::NotBzImage);
        }
        if bytes.len() <= (header.setup_sects as usize + 1) * SECTOR || bytes.len() < header_end(bytes) {
            return Err(too_short);
        }
        if header.syssize == 0 {
            return Err(BzImageError::NoKernel);
        }
        // The whole kernel must be there before anything is handed over: a
        // partial copy would be entered and run off its end (a reset).
        let needs = (header.setup_sects as usize + 1) * SECTOR + header.syssize as usize * 16;
        if bytes.len() < needs {
            return Err(BzImageError::Truncated { len: bytes.len(), needs });
        }
        // kernel_version: offset from 0x200 of a NUL-terminated string in the setup code.
        let at = u16_at(bytes, KERNEL_VERSION) as usize + JUMP;
        let version = bytes
            .get(at..(at + 256).min(bytes.len()))
            .map(|s| &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())])
            .and_then(|s| core::str::from_utf8(s).ok())
            .unwrap_or("(no version string)");
        Ok(BzImage { bytes, header, version })
    }

    /// The protected-mode kernel: what follows the setup sectors.
    pub fn protected_mode(&self) -> &'a [u8] {
        &self.bytes[(self.header.setup_sects as usize + 1) * SECTOR..]
    }

    /// The setup header as the file has it, from 0x1F1 to its end: the
    /// protocol asks the loader to copy it into the zero page.
    pub fn setup_header_bytes(&self) -> &'a [u8] {
        &self.bytes[offset::SETUP_SECTS..header_end(self.bytes)]
    }

    /// The alignment a relocated kernel must keep (at least 4 KiB).
    pub fn alignment(&self) -> u64 {
        (self.header.kernel_alignment as u64).max(4096).next_power_of_two()
    }
}

/// The end of the setup header: 0x202 plus the displacement of the jump at 0x200.
fn header_end(bytes: &[u8]) -> usize {
    offset::HEADER + bytes[offset::JUMP + 1] as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A synthetic bzImage with Debian 6.1's header values and 8 sectors of kernel.
    pub fn image() -> Vec<u8> {
        let mut b = vec![0u8; 40 * SECTOR];
        b[offset::SETUP_SECTS] = 31;
        b[offset::SYSSIZE..offset::SYSSIZE + 4].copy_from_slice(&(8 * SECTOR as u32 / 16).to_le_bytes());
        b[offset::BOOT_FLAG..offset::BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        b[offset::JUMP] = 0xeb;
        b[offset::JUMP + 1] = 0x6a; // header ends at 0x26c
        b[offset::HEADER..offset::HEADER + 4].copy_from_slice(&HDRS.to_le_bytes());
        b[offset::VERSION..offset::VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        b[offset::KERNEL_VERSION..offset::KERNEL_VERSION + 2].copy_from_slice(&0x3e0u16.to_le_bytes());
        b[0x5e0..0x5e0 + 19].copy_from_slice(b"6.1.0-test (tester)");
        b[offset::LOADFLAGS] = LOADED_HIGH;
        b[offset::CODE32_START..offset::CODE32_START + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        b[offset::INITRD_ADDR_MAX..offset::INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b[offset::KERNEL_ALIGNMENT..offset::KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[offset::RELOCATABLE_KERNEL] = 1;
        b[offset::XLOADFLAGS..offset::XLOADFLAGS + 2].copy_from_slice(&0x7fu16.to_le_bytes());
        b[offset::CMDLINE_SIZE..offset::CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        b[offset::PREF_ADDRESS..offset::PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[offset::INIT_SIZE..offset::INIT_SIZE + 4].copy_from_slice(&0x3f9_8000u32.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_debian_like_header() {
        let b = image();
        let bz = BzImage::parse(&b).unwrap();
        assert_eq!(bz.version, "6.1.0-test (tester)");
        assert_eq!(bz.header.version, 0x020f);
        assert_eq!(bz.header.setup_sects, 31);
        assert_eq!(bz.header.init_size, 0x3f9_8000);
        assert_eq!(bz.header.pref_address, 0x100_0000);
        assert!(bz.header.relocatable);
        assert_eq!(bz.alignment(), 0x20_0000);
        assert_eq!(bz.protected_mode().len(), 8 * SECTOR);
        assert_eq!(bz.setup_header_bytes().len(), 0x26c - 0x1f1);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut b = image();
        b[offset::SETUP_SECTS] = 0;
        assert_eq!(BzImage::parse(&b).unwrap().protected_mode().len(), 35 * SECTOR);
    }

    #[test]
    fn refuses_a_kernel_shorter_than_its_header_says() {
        let mut b = image();
        b.truncate(40 * SECTOR - 1);
        assert_eq!(
            BzImage::parse(&b).unwrap_err(),
            BzImageError::Truncated { len: 40 * SECTOR - 1, needs: 40 * SECTOR }
        );
        // Debian's 6.1 kernel cut to its first 100,000 bytes (issue 21): the setup
        // code is whole, the kernel is not.
        let mut b = image();
        b[offset::SYSSIZE..offset::SYSSIZE + 4].copy_from_slice(&0x7e_c00u32.to_le_bytes());
        b.resize(100_000, 0);
        assert_eq!(
            BzImage::parse(&b).unwrap_err(),
            BzImageError::Truncated { len: 100_000, needs: 32 * SECTOR + 0x7e_c00 * 16 }
        );
        assert_eq!(
            alloc::format!("{}", BzImageError::Truncated { len: 100_000, needs: 8_335_360 }),
            "truncated: 100000 bytes, but its header says 8335360 ((1 + setup_sects) * 512 + syssize * 16)"
        );
        // A file longer than the header says (padding, a signature) is fine.
        let mut b = image();
        b.resize(41 * SECTOR, 0);
        assert!(BzImage::parse(&b).is_ok());
    }

    #[test]
    fn refuses_a_header_without_a_kernel() {
        let mut b = image();
        b[offset::SYSSIZE..offset::SYSSIZE + 4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(BzImage::parse(&b).unwrap_err(), BzImageError::NoKernel);
    }

    #[test]
    fn rejects_what_is_not_a_usable_bzimage() {
        assert_eq!(BzImage::parse(b"menuentry").unwrap_err(), BzImageError::TooShort { len: 9 });
        let mut b = image();
        b[offset::BOOT_FLAG] = 0;
        assert_eq!(BzImage::parse(&b).unwrap_err(), BzImageError::NoBootFlag);
        let mut b = image();
        b[offset::HEADER] = b'X';
        assert_eq!(BzImage::parse(&b).unwrap_err(), BzImageError::NoHeader);
        let mut b = image();
        b[offset::VERSION] = 0x0b; // 2.11
        assert_eq!(BzImage::parse(&b).unwrap_err(), BzImageError::ProtocolTooOld { version: 0x020b });
        assert_eq!(
            alloc::format!("{}", BzImageError::ProtocolTooOld { version: 0x020b }),
            "boot protocol 2.11 is too old: this loader needs 2.12 or later"
        );
        let mut b = image();
        b[offset::LOADFLAGS] = 0;
        assert_eq!(BzImage::parse(&b).unwrap_err(), BzImageError::NotBzImage);
        let mut b = image();
        b.truncate(32 * SECTOR);
        assert_eq!(BzImage::parse(&b).unwrap_err(), BzImageError::TooShort { len: 32 * SECTOR });
    }
}
