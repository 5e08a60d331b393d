//! Where the kernel, its initrd and the boot data go, given the memory map and
//! what the hypervisor keeps for itself.
//!
//! The 32-bit entry of the boot protocol runs with paging off, so everything
//! the kernel is handed lies below 4 GiB. A relocatable x86-64 kernel loaded
//! below its pref_address (LOAD_PHYSICAL_ADDR) moves itself up to it before
//! decompressing (arch/x86/boot/compressed/head_64.S), so the kernel is never
//! placed lower: it gets `init_size` bytes of RAM at or above pref_address,
//! aligned to kernel_alignment.

use super::bzimage::SetupHeader;
use crate::memmap::Range;

const FOUR_GIB: u64 = 1 << 32;

const fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// The first overlap of `r` with `reserved`, if any.
fn first_overlap(r: Range, reserved: &[Range]) -> Option<Range> {
    reserved.iter().filter(|x| x.overlaps(&r)).min_by_key(|x| x.start).copied()
}

/// The load address of the protected-mode kernel: the lowest address at or
/// above pref_address, aligned, with `init_size` bytes of available RAM below
/// 4 GiB that touch none of `reserved`. A kernel that cannot relocate gets
/// pref_address or nothing.
pub fn place_kernel(h: &SetupHeader, alignment: u64, available: &[Range], reserved: &[Range]) -> Option<Range> {
    let size = (h.init_size as u64).max(1);
    let pref = h.pref_address.max(h.code32_start as u64);
    let mut best: Option<Range> = None;
    for area in available {
        let mut start = align_up(area.start.max(pref), alignment);
        loop {
            let r = Range::new(start, start.checked_add(size)?);
            if r.end > area.end || r.end > FOUR_GIB || (!h.relocatable && start != pref) {
                break;
            }
            match first_overlap(r, reserved) {
                Some(x) => start = align_up(x.end, alignment),
                None => {
                    if best.is_none_or(|b| r.start < b.start) {
                        best = Some(r);
                    }
                    break;
                }
            }
        }
    }
    best
}

/// Where the initrd may stay: where the boot loader put it, if that lies in
/// available RAM, ends at or below initrd_addr_max and touches none of
/// `reserved`; otherwise the highest page-aligned stretch that does (the
/// initrd is then copied there).
pub fn place_initrd(at: Range, h: &SetupHeader, available: &[Range], reserved: &[Range]) -> Option<Range> {
    let limit = (h.initrd_addr_max as u64 + 1).min(FOUR_GIB);
    let fits = |r: Range| {
        r.end <= limit && available.iter().any(|a| a.contains_range(&r)) && first_overlap(r, reserved).is_none()
    };
    if fits(at) {
        return Some(at);
    }
    let size = at.len();
    let mut best: Option<Range> = None;
    for area in available {
        let mut end = area.end.min(limit) & !0xfff;
        while end >= area.start + size {
            let r = Range::new((end - size) & !0xfff, 0);
            let r = Range::new(r.start, r.start + size);
            if r.start < area.start {
                break;
            }
            match first_overlap(r, reserved) {
                Some(x) => end = x.start & !0xfff,
                None => {
                    if best.is_none_or(|b| r.start > b.start) {
                        best = Some(r);
                    }
                    break;
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::super::bzimage::{tests::image, BzImage};
    use super::*;

    const MIB: u64 = 1 << 20;

    fn header() -> SetupHeader {
        BzImage::parse(&image()).unwrap().header
    }

    #[test]
    fn kernel_goes_to_pref_address_when_free() {
        let h = header();
        let avail = [Range::new(0, 0x9f000), Range::new(MIB, 512 * MIB)];
        let r = place_kernel(&h, 2 * MIB, &avail, &[Range::new(2 * MIB, 3 * MIB)]).unwrap();
        assert_eq!(r, Range::new(16 * MIB, 16 * MIB + 0x3f9_8000));
    }

    #[test]
    fn kernel_moves_up_past_reserved_ranges_and_keeps_its_alignment() {
        let h = header();
        let avail = [Range::new(MIB, 512 * MIB)];
        let heap = Range::new(0x246000, 0x4246000);
        let initrd = Range::new(0x5000_0000 - MIB, 0x5000_0000);
        let r = place_kernel(&h, 2 * MIB, &avail, &[heap, initrd]).unwrap();
        assert_eq!(r.start, 0x4400000);
        assert!(!r.overlaps(&heap) && !r.overlaps(&initrd));
        // Too little memory above pref_address: nowhere to go.
        assert_eq!(place_kernel(&h, 2 * MIB, &[Range::new(MIB, 64 * MIB)], &[]), None);
    }

    #[test]
    fn kernel_stays_below_4_gib_and_a_fixed_kernel_only_takes_pref_address() {
        let mut h = header();
        assert_eq!(place_kernel(&h, 2 * MIB, &[Range::new(4 << 30, 8 << 30)], &[]), None);
        h.relocatable = false;
        let avail = [Range::new(MIB, 512 * MIB)];
        assert_eq!(place_kernel(&h, 2 * MIB, &avail, &[Range::new(17 * MIB, 18 * MIB)]), None);
        assert_eq!(place_kernel(&h, 2 * MIB, &avail, &[]).unwrap().start, 16 * MIB);
    }

    #[test]
    fn initrd_stays_or_moves_below_its_limit() {
        let mut h = header();
        let avail = [Range::new(MIB, 512 * MIB)];
        let at = Range::new(300 * MIB, 301 * MIB);
        assert_eq!(place_initrd(at, &h, &avail, &[]), Some(at));
        // Over the kernel's range: moved to the highest free stretch.
        let kernel = Range::new(290 * MIB, 310 * MIB);
        assert_eq!(place_initrd(at, &h, &avail, &[kernel]), Some(Range::new(511 * MIB, 512 * MIB)));
        // Above initrd_addr_max: moved below it.
        h.initrd_addr_max = (200 * MIB - 1) as u32;
        assert_eq!(place_initrd(at, &h, &avail, &[]), Some(Range::new(199 * MIB, 200 * MIB)));
        // Nowhere below the limit.
        h.initrd_addr_max = (MIB / 2) as u32;
        assert_eq!(place_initrd(at, &h, &avail, &[]), None);
    }
}
