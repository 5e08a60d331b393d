//! CBFS, coreboot's file system in the boot flash: finding the hypervisor's
//! files in it and checking that each is what its name says.
//!
//! A CBFS region is a run of files, each starting on a 64-byte boundary with
//! a header (`LARCHIVE`, then big-endian length, type, attributes offset and
//! data offset), its NUL-terminated name, optional attributes (a compression
//! attribute among them) and its data. Walking it follows libpayload's
//! `cbfs_walk`: a header that does not hold together is skipped 64 bytes at
//! a time, deleted and empty files are passed over.
//!
//! Layouts follow coreboot's
//! `src/commonlib/bsd/include/commonlib/bsd/cbfs_serialized.h` at commit
//! f0f911824b; citations read `cbfs_serialized.h "struct cbfs_file"`.
//!
//! The hypervisor reads four files by name (`CMDLINE`, `LINUX`, `INITRD`,
//! `LINUX_CMDLINE`), raw and stored uncompressed: a bzImage and an initrd are
//! compressed already, and a decompressor would cost the payload more flash
//! than it saves (docs/coreboot.md).

use crate::linux::bzimage::{BzImage, BzImageError};
use core::fmt;

/// `cbfs_serialized.h "struct cbfs_file"`: magic[8], len, type,
/// attributes_offset, offset (big-endian), then the name.
pub const FILE_MAGIC: &[u8; 8] = b"LARCHIVE";
pub const FILE_HEADER_BYTES: usize = 24;
/// `CBFS_ALIGNMENT`: every file header starts on this boundary.
pub const ALIGNMENT: usize = 64;
/// `CBFS_METADATA_MAX_SIZE`: header, name and attributes together.
pub const METADATA_MAX: usize = 256;

/// File types (`enum cbfs_type`).
pub const TYPE_DELETED: u32 = 0;
pub const TYPE_NULL: u32 = 0xffff_ffff;
pub const TYPE_RAW: u32 = 0x50;

/// `CBFS_FILE_ATTR_TAG_COMPRESSION` ('BCZL'): compression, decompressed_size.
pub const ATTR_COMPRESSION: u32 = 0x4243_5a4c;

/// The hypervisor's files.
pub const CMDLINE: &str = "hypervisor/cmdline";
pub const LINUX: &str = "hypervisor/linux";
pub const INITRD: &str = "hypervisor/initrd";
pub const LINUX_CMDLINE: &str = "hypervisor/linux-cmdline";
/// The longest command line read from CBFS (the Linux loader's page for it).
pub const MAX_CMDLINE: usize = 4095;

/// `enum cbfs_compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Lzma,
    Lz4,
    Zstd,
    Unknown(u32),
}

impl Compression {
    fn from_u32(v: u32) -> Compression {
        match v {
            0 => Compression::None,
            1 => Compression::Lzma,
            2 => Compression::Lz4,
            3 => Compression::Zstd,
            v => Compression::Unknown(v),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Lzma => f.write_str("LZMA"),
            Compression::Lz4 => f.write_str("LZ4"),
            Compression::Zstd => f.write_str("zstd"),
            Compression::Unknown(v) => write!(f, "unknown compression {v}"),
        }
    }
}

/// cbfstool's name for a file type, for messages.
pub fn type_name(kind: u32) -> &'static str {
    match kind {
        0x01 => "bootblock",
        0x02 => "cbfs header",
        0x10 => "legacy stage",
        0x11 => "stage",
        0x20 => "simple elf",
        0x21 => "fit_payload",
        0x30 => "optionrom",
        0x40 => "bootsplash",
        TYPE_RAW => "raw",
        0x63 => "efi",
        0x70 => "struct",
        0xaa => "cmos_default",
        0x01aa => "cmos_layout",
        _ => "other",
    }
}

/// One file: where its header is in the region, its name, type, compression
/// and stored data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct File<'a> {
    pub offset: usize,
    pub name: &'a [u8],
    pub kind: u32,
    pub compression: Compression,
    pub data: &'a [u8],
}

/// What a walk finds at a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    File(File<'a>),
    /// A header that does not hold together, at this offset; the walk goes on
    /// 64 bytes later.
    Corrupt {
        offset: usize,
        why: &'static str,
    },
}

/// The files of a CBFS region, in order (`walk`).
pub struct Walk<'a> {
    region: &'a [u8],
    offset: usize,
}

/// Walk the files of `region` (the CBFS bytes, from its start).
pub fn walk(region: &[u8]) -> Walk<'_> {
    Walk { region, offset: 0 }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl<'a> Iterator for Walk<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let r = self.region;
        loop {
            self.offset = self.offset.checked_next_multiple_of(ALIGNMENT)?;
            let at = self.offset;
            if at.checked_add(FILE_HEADER_BYTES)? >= r.len() {
                return None;
            }
            if &r[at..at + 8] != FILE_MAGIC {
                self.offset += ALIGNMENT;
                continue;
            }
            let (len, kind, attr, data) =
                (be32(r, at + 8) as usize, be32(r, at + 12), be32(r, at + 16) as usize, be32(r, at + 20) as usize);
            let corrupt = |why| Some(Entry::Corrupt { offset: at, why });
            if !(FILE_HEADER_BYTES..=METADATA_MAX).contains(&data) || len > r.len() || at + data + len > r.len() {
                self.offset += ALIGNMENT;
                return corrupt("its data offset or length runs past the region");
            }
            // From here the file's extent is known: the walk goes on after it.
            self.offset = at + data + len;
            if kind == TYPE_DELETED || kind == TYPE_NULL {
                continue;
            }
            let name_end = if attr == 0 { data } else { attr };
            if name_end <= FILE_HEADER_BYTES || name_end > data {
                return corrupt("its attributes offset is outside its metadata");
            }
            let name = &r[at + FILE_HEADER_BYTES..at + name_end];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            let mut compression = Compression::None;
            let mut a = if attr == 0 { data } else { attr };
            while a + 8 <= data {
                let (tag, alen) = (be32(r, at + a), be32(r, at + a + 4) as usize);
                if tag == 0 || tag == 0xffff_ffff {
                    break;
                }
                if alen < 8 || a + alen > data {
                    return corrupt("an attribute runs past its metadata");
                }
                if tag == ATTR_COMPRESSION {
                    if alen < 16 {
                        return corrupt("its compression attribute is too short");
                    }
                    compression = Compression::from_u32(be32(r, at + a + 8));
                }
                a += alen;
            }
            let data = &r[at + data..at + data + len];
            return Some(Entry::File(File { offset: at, name, kind, compression, data }));
        }
    }
}

/// The hypervisor's files as found, not yet checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found<'a> {
    pub cmdline: Option<File<'a>>,
    pub linux: Option<File<'a>>,
    pub initrd: Option<File<'a>>,
    pub linux_cmdline: Option<File<'a>>,
    /// Files in the region, and headers skipped as corrupt (the first one's offset and why).
    pub files: usize,
    pub corrupt: usize,
    pub first_corrupt: Option<(usize, &'static str)>,
}

/// Look the hypervisor's files up by name (the first file of a name counts).
pub fn find(region: &[u8]) -> Found<'_> {
    let mut f = Found::default();
    for e in walk(region) {
        match e {
            Entry::Corrupt { offset, why } => {
                f.corrupt += 1;
                f.first_corrupt.get_or_insert((offset, why));
            }
            Entry::File(file) => {
                f.files += 1;
                let slot = match file.name {
                    n if n == CMDLINE.as_bytes() => &mut f.cmdline,
                    n if n == LINUX.as_bytes() => &mut f.linux,
                    n if n == INITRD.as_bytes() => &mut f.initrd,
                    n if n == LINUX_CMDLINE.as_bytes() => &mut f.linux_cmdline,
                    _ => continue,
                };
                slot.get_or_insert(file);
            }
        }
    }
    f
}

/// A hypervisor file that is not what its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileError {
    /// Not a raw file (`cbfstool add -t raw`).
    NotRaw {
        name: &'static str,
        kind: u32,
    },
    /// Stored compressed: this payload reads files as stored.
    Compressed {
        name: &'static str,
        how: Compression,
    },
    /// A command line that is not one line of text: not UTF-8, or a control
    /// character (other than trailing whitespace) at this offset.
    NotText {
        name: &'static str,
        at: usize,
    },
    TooLong {
        name: &'static str,
        len: usize,
    },
    NotBzImage(BzImageError),
    Empty {
        name: &'static str,
    },
    /// `hypervisor/initrd` or `hypervisor/linux-cmdline` without `hypervisor/linux`.
    WithoutLinux {
        name: &'static str,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FileError::NotRaw { name, kind } => write!(
                f,
                "CBFS file `{name}` has type {} ({kind:#x}), not raw: add it with `cbfstool ... add -t raw`",
                type_name(kind)
            ),
            FileError::Compressed { name, how } => write!(
                f,
                "CBFS file `{name}` is stored {how}-compressed; this payload reads files as stored: add it uncompressed (no -c)"
            ),
            FileError::NotText { name, at } => {
                write!(f, "CBFS file `{name}` is not one line of text (byte {at} is not printable UTF-8)")
            }
            FileError::TooLong { name, len } => {
                write!(f, "CBFS file `{name}` has {len} bytes; a command line has at most {MAX_CMDLINE}")
            }
            FileError::NotBzImage(e) => write!(f, "CBFS file `{LINUX}` is not a Linux kernel: {e}"),
            FileError::Empty { name } => write!(f, "CBFS file `{name}` is empty (0 bytes)"),
            FileError::WithoutLinux { name } => write!(f, "CBFS has `{name}` but no `{LINUX}`"),
        }
    }
}

/// A raw, uncompressed file's bytes.
pub fn raw<'a>(file: &File<'a>, name: &'static str) -> Result<&'a [u8], FileError> {
    if file.kind != TYPE_RAW {
        return Err(FileError::NotRaw { name, kind: file.kind });
    }
    if file.compression != Compression::None {
        return Err(FileError::Compressed { name, how: file.compression });
    }
    Ok(file.data)
}

/// A command-line file: raw, UTF-8, one line. Trailing NULs and whitespace
/// (the newline `echo` leaves) are dropped.
pub fn text<'a>(file: &File<'a>, name: &'static str) -> Result<&'a str, FileError> {
    let bytes = raw(file, name)?;
    let s = match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            // The first byte that is not printable: a control character before the bad UTF-8, or the bad UTF-8.
            let valid = core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
            let at = valid.char_indices().find(|(_, c)| c.is_control()).map_or(e.valid_up_to(), |(at, _)| at);
            return Err(FileError::NotText { name, at });
        }
    };
    let s = s.trim_end_matches(|c: char| c == '\0' || c.is_whitespace());
    if let Some((at, _)) = s.char_indices().find(|(_, c)| c.is_control()) {
        return Err(FileError::NotText { name, at });
    }
    if s.len() > MAX_CMDLINE {
        return Err(FileError::TooLong { name, len: s.len() });
    }
    Ok(s)
}

/// The OS in CBFS, checked: a bzImage, an optional non-empty initrd and the
/// Linux command line ("" when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Os<'a> {
    pub linux: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
}

/// The OS files, if there is a kernel: Ok(None) when CBFS holds none of them.
pub fn os<'a>(found: &Found<'a>) -> Result<Option<Os<'a>>, FileError> {
    let Some(linux) = found.linux else {
        if found.initrd.is_some() {
            return Err(FileError::WithoutLinux { name: INITRD });
        }
        if found.linux_cmdline.is_some() {
            return Err(FileError::WithoutLinux { name: LINUX_CMDLINE });
        }
        return Ok(None);
    };
    let kernel = raw(&linux, LINUX)?;
    BzImage::parse(kernel).map_err(FileError::NotBzImage)?;
    let initrd = match found.initrd {
        None => None,
        Some(f) => match raw(&f, INITRD)? {
            [] => return Err(FileError::Empty { name: INITRD }),
            bytes => Some(bytes),
        },
    };
    let cmdline = match found.linux_cmdline {
        None => "",
        Some(f) => text(&f, LINUX_CMDLINE)?,
    };
    Ok(Some(Os { linux: kernel, initrd, cmdline }))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// A file as cbfstool writes it: header, name padded to 4 bytes (with a
    /// compression attribute when `compression` is given), data, padded to 64.
    pub fn file(name: &str, kind: u32, compression: Option<u32>, data: &[u8]) -> Vec<u8> {
        let mut meta = Vec::new();
        meta.extend_from_slice(name.as_bytes());
        meta.push(0);
        meta.resize(meta.len().next_multiple_of(4), 0);
        let attr = compression.map(|_| FILE_HEADER_BYTES + meta.len());
        if let Some(c) = compression {
            for w in [ATTR_COMPRESSION, 16, c, data.len() as u32 * 2] {
                meta.extend_from_slice(&w.to_be_bytes());
            }
        }
        let mut f = Vec::new();
        f.extend_from_slice(FILE_MAGIC);
        for w in [data.len() as u32, kind, attr.unwrap_or(0) as u32, (FILE_HEADER_BYTES + meta.len()) as u32] {
            f.extend_from_slice(&w.to_be_bytes());
        }
        f.extend_from_slice(&meta);
        f.extend_from_slice(data);
        f.resize(f.len().next_multiple_of(ALIGNMENT), 0xff);
        f
    }

    /// A region: these files, then free space (a null file, as cbfstool leaves).
    pub fn region(files: &[Vec<u8>]) -> Vec<u8> {
        let mut r = files.concat();
        let mut empty = file("", TYPE_NULL, None, &[0xff; 200]);
        empty.resize(256, 0xff);
        r.extend_from_slice(&empty);
        r
    }

    fn kernel() -> Vec<u8> {
        crate::linux::bzimage::tests::image()
    }

    fn names(region: &[u8]) -> Vec<Entry<'_>> {
        walk(region).collect()
    }

    #[test]
    fn the_walk_finds_every_file_with_its_name_type_and_compression() {
        let r = region(&[
            file("cbfs_master_header", 0x02, None, &[0; 32]),
            file("fallback/payload", 0x20, Some(1), &[7; 100]),
            file(CMDLINE, TYPE_RAW, None, b"loglevel=debug exit=qemu\n"),
        ]);
        let e = names(&r);
        assert_eq!(e.len(), 3);
        let Entry::File(p) = e[1] else { panic!("{e:?}") };
        assert_eq!(
            (p.name, p.kind, p.compression, p.data.len()),
            (&b"fallback/payload"[..], 0x20, Compression::Lzma, 100)
        );
        let Entry::File(c) = e[2] else { panic!() };
        assert_eq!(c.offset, 128 + 192);
        assert_eq!(text(&c, CMDLINE), Ok("loglevel=debug exit=qemu"));
    }

    #[test]
    fn deleted_files_and_stray_bytes_are_passed_over() {
        let mut stray = [0u8; 128];
        stray[..7].copy_from_slice(b"LARCHIV");
        let r =
            region(&[file("old", TYPE_DELETED, None, b"gone"), stray.to_vec(), file(CMDLINE, TYPE_RAW, None, b"a")]);
        let f = find(&r);
        assert_eq!((f.files, f.corrupt), (1, 0));
        assert_eq!(f.cmdline.unwrap().data, b"a");
    }

    #[test]
    fn corrupt_headers_are_skipped_and_counted() {
        let mut bad = file("bad", TYPE_RAW, None, b"x");
        bad[8..12].copy_from_slice(&0x7fff_ffffu32.to_be_bytes()); // length past the region
        let mut bad_attr = file("bad-attr", TYPE_RAW, None, b"x");
        bad_attr[16..20].copy_from_slice(&200u32.to_be_bytes()); // attributes after the data offset
        let r = region(&[bad, bad_attr, file(LINUX_CMDLINE, TYPE_RAW, None, b"quiet")]);
        let f = find(&r);
        assert_eq!((f.files, f.corrupt), (1, 2));
        assert_eq!(f.first_corrupt, Some((0, "its data offset or length runs past the region")));
        assert_eq!(f.linux_cmdline.unwrap().data, b"quiet");
    }

    #[test]
    fn truncated_regions_end_the_walk_cleanly() {
        let r = region(&[file(CMDLINE, TYPE_RAW, None, b"loglevel=info"), file(LINUX_CMDLINE, TYPE_RAW, None, b"q")]);
        for len in 0..r.len() {
            let f = find(&r[..len]);
            // A file is only found whole; a cut one is corrupt or not there.
            if let Some(c) = f.cmdline {
                assert_eq!(c.data, b"loglevel=info");
            }
            assert!(f.files + f.corrupt <= 3, "{len}");
        }
        assert_eq!(find(&[]), Found::default());
    }

    #[test]
    fn garbage_never_panics() {
        // A header whose fields are all ones, and random-looking bytes after a magic.
        let mut r = Vec::from(&FILE_MAGIC[..]);
        r.extend_from_slice(&[0xff; 16]);
        r.extend_from_slice(&[0x5a; 300]);
        let _ = find(&r);
        let mut r = Vec::from(&FILE_MAGIC[..]);
        for w in [4u32, TYPE_RAW, 25, 28] {
            r.extend_from_slice(&w.to_be_bytes());
        }
        r.extend_from_slice(b"n\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let _ = find(&r);
        for seed in 0..200u32 {
            let mut r = region(&[file(CMDLINE, TYPE_RAW, Some(2), b"abc"), file(LINUX, TYPE_RAW, None, &[1; 70])]);
            let at = (seed as usize * 7919) % r.len();
            r[at] ^= (seed as u8) | 1;
            let _ = find(&r);
        }
    }

    #[test]
    fn a_command_line_must_be_raw_uncompressed_text() {
        let r = region(&[file(CMDLINE, 0x20, None, b"x")]);
        let f = find(&r).cmdline.unwrap();
        assert_eq!(text(&f, CMDLINE), Err(FileError::NotRaw { name: CMDLINE, kind: 0x20 }));
        assert_eq!(
            text(&f, CMDLINE).unwrap_err().to_string(),
            "CBFS file `hypervisor/cmdline` has type simple elf (0x20), not raw: add it with `cbfstool ... add -t raw`"
        );
        let r = region(&[file(CMDLINE, TYPE_RAW, Some(1), b"x")]);
        let e = text(&find(&r).cmdline.unwrap(), CMDLINE).unwrap_err();
        assert_eq!(e, FileError::Compressed { name: CMDLINE, how: Compression::Lzma });
        assert_eq!(
            e.to_string(),
            "CBFS file `hypervisor/cmdline` is stored LZMA-compressed; this payload reads files as stored: add it uncompressed (no -c)"
        );
        let r = region(&[file(CMDLINE, TYPE_RAW, None, b"loglevel=info\x7fELF")]);
        assert_eq!(text(&find(&r).cmdline.unwrap(), CMDLINE), Err(FileError::NotText { name: CMDLINE, at: 13 }));
        let r = region(&[file(CMDLINE, TYPE_RAW, None, &[b'a', 0xff, b'b'])]);
        assert_eq!(text(&find(&r).cmdline.unwrap(), CMDLINE), Err(FileError::NotText { name: CMDLINE, at: 1 }));
        // A gzip file: its first byte (0x1f) is a control character, its second not UTF-8.
        let r = region(&[file(CMDLINE, TYPE_RAW, None, &[0x1f, 0x8b, 8, 0])]);
        assert_eq!(text(&find(&r).cmdline.unwrap(), CMDLINE), Err(FileError::NotText { name: CMDLINE, at: 0 }));
        let r = region(&[file(CMDLINE, TYPE_RAW, None, b"a\nb")]);
        assert_eq!(text(&find(&r).cmdline.unwrap(), CMDLINE), Err(FileError::NotText { name: CMDLINE, at: 1 }));
        let r = region(&[file(CMDLINE, TYPE_RAW, None, b"maxcpus=2 \r\n\0\0")]);
        assert_eq!(text(&find(&r).cmdline.unwrap(), CMDLINE), Ok("maxcpus=2"));
        let long = alloc::vec![b'a'; MAX_CMDLINE + 1];
        let r = region(&[file(CMDLINE, TYPE_RAW, None, &long)]);
        assert_eq!(
            text(&find(&r).cmdline.unwrap(), CMDLINE),
            Err(FileError::TooLong { name: CMDLINE, len: MAX_CMDLINE + 1 })
        );
    }

    #[test]
    fn the_os_files_are_checked_for_what_their_names_say() {
        let k = kernel();
        let r = region(&[
            file(LINUX, TYPE_RAW, None, &k),
            file(INITRD, TYPE_RAW, None, b"070701"),
            file(LINUX_CMDLINE, TYPE_RAW, None, b"console=ttyS0,115200\n"),
        ]);
        let os = os(&find(&r)).unwrap().unwrap();
        assert_eq!((os.linux.len(), os.initrd, os.cmdline), (k.len(), Some(&b"070701"[..]), "console=ttyS0,115200"));
        // No kernel, no OS.
        assert_eq!(super::os(&find(&region(&[file(CMDLINE, TYPE_RAW, None, b"x")]))), Ok(None));
        // A text file where the kernel should be.
        let r = region(&[file(LINUX, TYPE_RAW, None, &[b'#'; 1024])]);
        let e = super::os(&find(&r)).unwrap_err();
        assert_eq!(e, FileError::NotBzImage(BzImageError::NoBootFlag));
        assert!(e.to_string().starts_with("CBFS file `hypervisor/linux` is not a Linux kernel: "), "{e}");
        // A kernel stored LZ4-compressed.
        let r = region(&[file(LINUX, TYPE_RAW, Some(2), &k)]);
        assert_eq!(super::os(&find(&r)), Err(FileError::Compressed { name: LINUX, how: Compression::Lz4 }));
        // An empty initrd, an initrd alone, a command line alone.
        let r = region(&[file(LINUX, TYPE_RAW, None, &k), file(INITRD, TYPE_RAW, None, b"")]);
        assert_eq!(super::os(&find(&r)), Err(FileError::Empty { name: INITRD }));
        let r = region(&[file(INITRD, TYPE_RAW, None, b"070701")]);
        assert_eq!(super::os(&find(&r)), Err(FileError::WithoutLinux { name: INITRD }));
        let r = region(&[file(LINUX_CMDLINE, TYPE_RAW, None, b"quiet")]);
        assert_eq!(super::os(&find(&r)), Err(FileError::WithoutLinux { name: LINUX_CMDLINE }));
        let r = region(&[file(LINUX, TYPE_RAW, None, &k), file(INITRD, 0x11, None, b"x")]);
        assert_eq!(super::os(&find(&r)), Err(FileError::NotRaw { name: INITRD, kind: 0x11 }));
    }
}
