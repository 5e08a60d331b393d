//! Choosing memory from the firmware's map, before any allocator exists
//! (so nothing here allocates).
//!
//! The kernel passes the available ranges of the multiboot2 memory map and the
//! ranges it must never hand out (its own image with the boot page tables and
//! stack, the boot information); these functions pick the heap and the AP
//! trampoline page from what is left.

/// A physical address range `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Range {
        Range { start, end }
    }
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub const fn contains_range(&self, other: &Range) -> bool {
        self.start <= other.start && other.end <= self.end
    }
    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// One entry of the firmware's memory map with its type as the boot loader
/// reports it: multiboot2 types 1-5 are the e820 types (1 available RAM,
/// 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 defective).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemoryArea {
    pub range: Range,
    pub kind: u32,
}

pub const PAGE: u64 = 4096;
/// Everything below 1 MiB is left to the trampoline and the firmware.
pub const ONE_MIB: u64 = 0x10_0000;

const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}
const fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

/// The largest page-aligned range of available memory in `[1 MiB, limit)` that
/// touches none of `reserved`, cut to `max_len` bytes.
pub fn choose_heap(available: &[Range], reserved: &[Range], limit: u64, max_len: u64) -> Option<Range> {
    let mut best: Option<Range> = None;
    for area in available {
        let lo = align_up(area.start.max(ONE_MIB), PAGE);
        let hi = align_down(area.end.min(limit), PAGE);
        if lo >= hi {
            continue;
        }
        // A free stretch starts at `lo` or right after a reserved range.
        let starts = core::iter::once(lo).chain(reserved.iter().map(|r| align_up(r.end, PAGE)));
        for start in starts.filter(|s| (lo..hi).contains(s)) {
            if reserved.iter().any(|r| r.start <= start && start < r.end) {
                continue;
            }
            let end = reserved.iter().filter(|r| r.start > start).map(|r| align_down(r.start, PAGE)).fold(hi, u64::min);
            let candidate = Range::new(start, end);
            if best.is_none_or(|b| candidate.len() > b.len()) {
                best = Some(candidate);
            }
        }
    }
    best.filter(|b| !b.is_empty()).map(|b| Range::new(b.start, b.start + b.len().min(align_down(max_len, PAGE))))
}

/// A free 4 KiB page below 1 MiB for the real-mode AP trampoline (the SIPI
/// vector is a page number, SDM Vol. 3A §9.4.4.1 "Typical BSP Initialization
/// Sequence"), wholly inside available memory and clear of `reserved`. Page 0
/// (real-mode IVT and BIOS data) is never chosen. Picks the highest such page
/// below 640 KiB.
pub fn choose_trampoline_page(available: &[Range], reserved: &[Range]) -> Option<u64> {
    choose_low_pages(available, reserved, 1)
}

/// `count` free, contiguous 4 KiB pages below 640 KiB (conventional memory),
/// the highest there are, never page 0: for what must stay below 1 MiB or
/// must not sit where an OS's kernel goes.
pub fn choose_low_pages(available: &[Range], reserved: &[Range], count: u64) -> Option<u64> {
    const CONVENTIONAL_END: u64 = 0xA_0000;
    (1..=(CONVENTIONAL_END / PAGE).saturating_sub(count)).rev().map(|n| n * PAGE).find(|&p| {
        let pages = Range::new(p, p + count * PAGE);
        available.iter().any(|a| a.contains_range(&pages)) && !reserved.iter().any(|r| r.overlaps(&pages))
    })
}

/// How much heap a run needs: a fixed part, the per-CPU part of every started
/// processor (PCB, stacks), and the VMX part of each (VMXON region, VMCSs,
/// guest memory, EPT, bitmaps) when the CPU has VMX.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeapBudget {
    pub base: u64,
    pub per_cpu: u64,
    pub per_cpu_vmx: u64,
}

impl HeapBudget {
    /// Bytes for `cpus` processors, rounded up to 64 KiB.
    pub const fn need(&self, cpus: u64, vmx: bool) -> u64 {
        let per_cpu = self.per_cpu + if vmx { self.per_cpu_vmx } else { 0 };
        align_up(self.base + per_cpu * cpus, 64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;

    #[test]
    fn heap_avoids_kernel_and_boot_info() {
        let avail = [Range::new(0, 0x9_f000), Range::new(ONE_MIB, 0x800_0000)];
        let kernel = Range::new(0x20_0000, 0x40_0000);
        let mbi = Range::new(0x40_8000, 0x40_9100);
        let heap = choose_heap(&avail, &[kernel, mbi], 4 * G, u64::MAX).unwrap();
        assert_eq!(heap, Range::new(0x40_a000, 0x800_0000));
        assert!(!heap.overlaps(&kernel) && !heap.overlaps(&mbi));
    }

    #[test]
    fn heap_is_capped_and_stays_below_the_limit_and_above_1mib() {
        let avail = [Range::new(0, 8 * G)];
        let heap = choose_heap(&avail, &[], 4 * G, 64 << 20).unwrap();
        assert_eq!(heap, Range::new(ONE_MIB, ONE_MIB + (64 << 20)));
        let heap = choose_heap(&[Range::new(5 * G, 6 * G)], &[], 4 * G, u64::MAX);
        assert_eq!(heap, None);
    }

    #[test]
    fn heap_picks_the_largest_gap_and_aligns_to_pages() {
        let avail = [Range::new(0x10_0123, 0x20_0000), Range::new(0x30_0000, 0x90_0000)];
        let reserved = [Range::new(0x30_0000, 0x30_0800), Range::new(0x50_0000, 0x50_1000)];
        let heap = choose_heap(&avail, &reserved, 4 * G, u64::MAX).unwrap();
        assert_eq!(heap, Range::new(0x50_1000, 0x90_0000));
        assert_eq!(heap.start % PAGE, 0);
    }

    #[test]
    fn no_memory_no_heap() {
        assert_eq!(choose_heap(&[], &[], 4 * G, u64::MAX), None);
        let avail = [Range::new(ONE_MIB, 2 * ONE_MIB)];
        assert_eq!(choose_heap(&avail, &avail, 4 * G, u64::MAX), None);
    }

    #[test]
    fn trampoline_page_is_free_low_and_not_page_zero() {
        let avail = [Range::new(0, 0x9_fc00)];
        let mbi = Range::new(0x9_e000, 0x9_e100);
        assert_eq!(choose_trampoline_page(&avail, &[mbi]), Some(0x9_d000));
        // Only page 0 free: nothing to choose.
        assert_eq!(choose_trampoline_page(&[Range::new(0, 0x1000)], &[]), None);
        // Memory above 1 MiB does not count.
        assert_eq!(choose_trampoline_page(&[Range::new(ONE_MIB, 4 * G)], &[]), None);
        // A partial page at the end of a range is not used.
        assert_eq!(choose_trampoline_page(&[Range::new(0x1000, 0x2800)], &[]), Some(0x1000));
    }

    #[test]
    fn low_pages_are_contiguous_and_clear_of_reserved() {
        let avail = [Range::new(0, 0x9_fc00)];
        assert_eq!(choose_low_pages(&avail, &[], 3), Some(0x9_c000));
        let trampoline = Range::new(0x9_d000, 0x9_e000);
        assert_eq!(choose_low_pages(&avail, &[trampoline], 3), Some(0x9_a000));
        assert_eq!(choose_low_pages(&[Range::new(0x1000, 0x3000)], &[], 3), None);
    }

    #[test]
    fn heap_need_grows_with_the_cpus_and_with_vmx() {
        let b = HeapBudget { base: 1 << 20, per_cpu: 120 << 10, per_cpu_vmx: 400 << 10 };
        assert_eq!(b.need(1, false), (1 << 20) + (128 << 10));
        assert_eq!(b.need(255, false), align_up((1 << 20) + 255 * (120 << 10), 64 << 10));
        assert!(b.need(4, true) > b.need(4, false) + 4 * (400 << 10) - (64 << 10));
        assert_eq!(b.need(4, true) % (64 << 10), 0);
    }
}
