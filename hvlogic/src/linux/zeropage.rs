//! The zero page (`struct boot_params`, the kernel's
//! arch/x86/include/uapi/asm/bootparam.h; Documentation/arch/x86/zero-page.rst):
//! what a 32-bit-protocol loader hands the kernel in ESI.

use super::bzimage::{offset, BzImage, CAN_USE_HEAP, LOADER_UNDEFINED};
use super::e820::Entry;
use crate::screen::{Framebuffer, FramebufferKind};

pub const SIZE: usize = 4096;
/// Offsets in boot_params.
pub mod at {
    pub const SCREEN_INFO: usize = 0x000;
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
}

/// `struct screen_info` (include/uapi/linux/screen_info.h), the part that
/// describes a console the kernel can take over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScreenInfo {
    /// orig_video_isVGA: VIDEO_TYPE_VGAC (0x22) for VGA text, VIDEO_TYPE_VLFB (0x23) for a linear framebuffer.
    pub kind: u8,
    pub cols: u8,
    pub lines: u8,
    pub width: u16,
    pub height: u16,
    pub depth: u16,
    pub base: u64,
    /// Bytes per scan line.
    pub pitch: u16,
    /// (size, position) of red, green, blue.
    pub rgb: [(u8, u8); 3],
}

pub const VIDEO_TYPE_VGAC: u8 = 0x22;
pub const VIDEO_TYPE_VLFB: u8 = 0x23;

impl ScreenInfo {
    /// What Linux needs to take over the screen the boot loader left: a
    /// linear framebuffer with direct colour, or VGA text mode. None for a
    /// palette framebuffer, and for one whose sizes do not fit screen_info's
    /// fields (Linux would draw with wrong ones).
    pub fn from_framebuffer(fb: Framebuffer) -> Option<ScreenInfo> {
        match fb.kind {
            FramebufferKind::Rgb { red, green, blue } => Some(ScreenInfo {
                kind: VIDEO_TYPE_VLFB,
                width: fb.width.try_into().ok()?,
                height: fb.height.try_into().ok()?,
                depth: fb.bpp as u16,
                base: fb.address,
                pitch: fb.pitch.try_into().ok()?,
                rgb: [(red.size, red.position), (green.size, green.position), (blue.size, blue.position)],
                ..ScreenInfo::default()
            }),
            FramebufferKind::EgaText => Some(ScreenInfo {
                kind: VIDEO_TYPE_VGAC,
                cols: fb.width.try_into().ok()?,
                lines: fb.height.try_into().ok()?,
                ..ScreenInfo::default()
            }),
            FramebufferKind::Indexed { .. } | FramebufferKind::Unknown(_) => None,
        }
    }
}

/// What goes into the zero page besides the kernel's own setup header.
pub struct Params<'a> {
    /// Where the protected-mode kernel was loaded (code32_start).
    pub kernel: u32,
    pub cmd_line: u64,
    /// Address and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    pub rsdp: Option<u64>,
    pub e820: &'a [Entry],
    pub screen: Option<ScreenInfo>,
}

fn put(page: &mut [u8], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Fill `page` (zeroed first) as the boot protocol asks of a 32-bit loader.
pub fn build(page: &mut [u8; SIZE], bz: &BzImage, p: &Params) {
    page.fill(0);
    put(page, offset::SETUP_SECTS, bz.setup_header_bytes());
    page[offset::TYPE_OF_LOADER] = LOADER_UNDEFINED;
    // No real-mode setup code runs: its heap and video mode do not apply.
    page[offset::LOADFLAGS] &= !CAN_USE_HEAP;
    put(page, offset::VID_MODE, &0xffffu16.to_le_bytes()); // "normal"
    put(page, offset::HEAP_END_PTR, &0u16.to_le_bytes());
    put(page, offset::CODE32_START, &p.kernel.to_le_bytes());
    put(page, offset::CMD_LINE_PTR, &(p.cmd_line as u32).to_le_bytes());
    put(page, at::EXT_CMD_LINE_PTR, &((p.cmd_line >> 32) as u32).to_le_bytes());
    if let Some((addr, size)) = p.initrd {
        put(page, offset::RAMDISK_IMAGE, &(addr as u32).to_le_bytes());
        put(page, offset::RAMDISK_SIZE, &(size as u32).to_le_bytes());
        put(page, at::EXT_RAMDISK_IMAGE, &((addr >> 32) as u32).to_le_bytes());
        put(page, at::EXT_RAMDISK_SIZE, &((size >> 32) as u32).to_le_bytes());
    }
    if let Some(rsdp) = p.rsdp {
        put(page, at::ACPI_RSDP_ADDR, &rsdp.to_le_bytes());
    }
    page[at::E820_ENTRIES] = p.e820.len() as u8;
    for (i, e) in p.e820.iter().enumerate() {
        let o = at::E820_TABLE + i * 20;
        put(page, o, &e.addr.to_le_bytes());
        put(page, o + 8, &e.size.to_le_bytes());
        put(page, o + 16, &e.kind.to_le_bytes());
    }
    if let Some(s) = p.screen {
        write_screen_info(page, &s);
    }
}

/// `struct screen_info` field offsets.
fn write_screen_info(page: &mut [u8], s: &ScreenInfo) {
    let b = at::SCREEN_INFO;
    page[b + 0x06] = 3; // orig_video_mode: 80x25 colour text, for the text case
    page[b + 0x07] = s.cols; // orig_video_cols
    page[b + 0x0e] = s.lines; // orig_video_lines
    page[b + 0x0f] = s.kind; // orig_video_isVGA
    page[b + 0x10..b + 0x12].copy_from_slice(&16u16.to_le_bytes()); // orig_video_points
    if s.kind == VIDEO_TYPE_VLFB {
        page[b + 0x06] = 0;
        page[b + 0x12..b + 0x14].copy_from_slice(&s.width.to_le_bytes()); // lfb_width
        page[b + 0x14..b + 0x16].copy_from_slice(&s.height.to_le_bytes()); // lfb_height
        page[b + 0x16..b + 0x18].copy_from_slice(&s.depth.to_le_bytes()); // lfb_depth
        page[b + 0x18..b + 0x1c].copy_from_slice(&(s.base as u32).to_le_bytes()); // lfb_base
        let size = (s.pitch as u64 * s.height as u64).div_ceil(65536) as u32; // lfb_size, in 64 KiB units
        page[b + 0x1c..b + 0x20].copy_from_slice(&size.to_le_bytes());
        page[b + 0x24..b + 0x26].copy_from_slice(&s.pitch.to_le_bytes()); // lfb_linelength
        for (i, (size, pos)) in s.rgb.iter().enumerate() {
            page[b + 0x26 + 2 * i] = *size; // red_size, green_size, blue_size
            page[b + 0x27 + 2 * i] = *pos; // red_pos, green_pos, blue_pos
        }
        page[b + 0x3a..b + 0x3e].copy_from_slice(&((s.base >> 32) as u32).to_le_bytes()); // ext_lfb_base
        page[b + 0x36..b + 0x38].copy_from_slice(&2u16.to_le_bytes()); // capabilities: VIDEO_CAPABILITY_64BIT_BASE
    }
}

#[cfg(test)]
mod tests {
    use super::super::bzimage::tests::image;
    use super::super::e820::{RAM, RESERVED};
    use super::*;

    fn u32_at(p: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(p[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn the_zero_page_carries_header_command_line_initrd_rsdp_and_e820() {
        let img = image();
        let bz = BzImage::parse(&img).unwrap();
        let e820 =
            [Entry { addr: 0, size: 0x9f000, kind: RAM }, Entry { addr: 0x200000, size: 0x1000, kind: RESERVED }];
        let mut page = [0xaau8; SIZE];
        let p = Params {
            kernel: 0x100_0000,
            cmd_line: 0x9d000,
            initrd: Some((0x1_2345_6000, 0x10_0000)),
            rsdp: Some(0x9e100),
            e820: &e820,
            screen: None,
        };
        build(&mut page, &bz, &p);
        assert_eq!(&page[0x202..0x206], b"HdrS");
        assert_eq!(page[offset::TYPE_OF_LOADER], 0xff);
        assert_eq!(u32_at(&page, offset::CODE32_START), 0x100_0000);
        assert_eq!(u32_at(&page, offset::CMD_LINE_PTR), 0x9d000);
        assert_eq!(u32_at(&page, offset::RAMDISK_IMAGE), 0x2345_6000);
        assert_eq!(u32_at(&page, at::EXT_RAMDISK_IMAGE), 1);
        assert_eq!(u32_at(&page, offset::RAMDISK_SIZE), 0x10_0000);
        assert_eq!(u64::from_le_bytes(page[0x70..0x78].try_into().unwrap()), 0x9e100);
        assert_eq!(page[at::E820_ENTRIES], 2);
        assert_eq!(u32_at(&page, at::E820_TABLE + 20 + 16), RESERVED);
        // Beyond the header and the tables the page is zero (the sentinel at 0x1ef included).
        assert_eq!(page[0x1ef], 0);
        assert!(page[0x26c..at::E820_TABLE].iter().all(|&b| b == 0));
        assert!(page[at::E820_TABLE + 40..].iter().all(|&b| b == 0));
    }

    #[test]
    fn what_the_boot_loader_left_becomes_screen_info() {
        use crate::screen::Field;
        let rgb = FramebufferKind::Rgb {
            red: Field { position: 16, size: 8 },
            green: Field { position: 8, size: 8 },
            blue: Field { position: 0, size: 8 },
        };
        let fb = Framebuffer { address: 0x1_fd00_0000, pitch: 5120, width: 1280, height: 800, bpp: 32, kind: rgb };
        let s = ScreenInfo::from_framebuffer(fb).unwrap();
        assert_eq!((s.kind, s.width, s.height, s.depth, s.pitch), (VIDEO_TYPE_VLFB, 1280, 800, 32, 5120));
        assert_eq!((s.base, s.rgb), (0x1_fd00_0000, [(8, 16), (8, 8), (8, 0)]));
        let text = Framebuffer {
            address: 0xb8000,
            pitch: 160,
            width: 80,
            height: 25,
            bpp: 16,
            kind: FramebufferKind::EgaText,
        };
        let t = ScreenInfo::from_framebuffer(text).unwrap();
        assert_eq!((t.kind, t.cols, t.lines), (VIDEO_TYPE_VGAC, 80, 25));
        assert_eq!(ScreenInfo::from_framebuffer(Framebuffer { pitch: 70_000, ..fb }), None, "pitch beyond u16");
        let indexed = Framebuffer { kind: FramebufferKind::Indexed { colours: 256 }, bpp: 8, ..fb };
        assert_eq!(ScreenInfo::from_framebuffer(indexed), None);
    }

    #[test]
    fn a_linear_framebuffer_becomes_screen_info() {
        let img = image();
        let bz = BzImage::parse(&img).unwrap();
        let mut page = [0u8; SIZE];
        let screen = ScreenInfo {
            kind: VIDEO_TYPE_VLFB,
            width: 1024,
            height: 768,
            depth: 32,
            base: 0xfd00_0000,
            pitch: 4096,
            rgb: [(8, 16), (8, 8), (8, 0)],
            ..ScreenInfo::default()
        };
        let p = Params { kernel: 0, cmd_line: 0, initrd: None, rsdp: None, e820: &[], screen: Some(screen) };
        build(&mut page, &bz, &p);
        assert_eq!(page[0x0f], VIDEO_TYPE_VLFB);
        assert_eq!(u32_at(&page, 0x18), 0xfd00_0000);
        assert_eq!(u32_at(&page, 0x1c), 48); // 3 MiB in 64 KiB units
        assert_eq!(&page[0x26..0x2c], &[8, 16, 8, 8, 8, 0]);
    }
}
