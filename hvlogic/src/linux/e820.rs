//! The e820 table Linux receives in the zero page: the boot loader's memory
//! map with the hypervisor's own RAM marked reserved.

use crate::memmap::{MemoryArea, Range};
use alloc::vec::Vec;
use core::fmt;

/// e820 types (ACPI "Address Range Types"; multiboot2 uses the same numbers).
pub const RAM: u32 = 1;
pub const RESERVED: u32 = 2;
/// Entries the zero page holds (E820_MAX_ENTRIES_ZEROPAGE).
pub const MAX_ENTRIES: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyEntries(pub usize);

impl fmt::Display for TooManyEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the e820 table needs {} entries; the zero page holds {MAX_ENTRIES}", self.0)
    }
}

/// The map with every `reserved` range (rounded out to whole pages) cut out
/// of RAM and typed reserved; sorted, with neighbours of one type merged.
pub fn build(areas: &[MemoryArea], reserved: &[Range]) -> Result<Vec<Entry>, TooManyEntries> {
    let reserved: Vec<Range> = reserved
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| Range::new(r.start & !0xfff, (r.end + 0xfff) & !0xfff))
        .collect();
    let mut out: Vec<Entry> = Vec::new();
    for a in areas.iter().filter(|a| !a.range.is_empty()) {
        if a.kind != RAM {
            out.push(Entry { addr: a.range.start, size: a.range.len(), kind: a.kind });
            continue;
        }
        // Walk the area, cutting at every reserved boundary inside it.
        let mut cuts: Vec<u64> =
            reserved.iter().flat_map(|r| [r.start, r.end]).filter(|&x| a.range.start < x && x < a.range.end).collect();
        cuts.push(a.range.start);
        cuts.push(a.range.end);
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let piece = Range::new(w[0], w[1]);
            let kind = if reserved.iter().any(|r| r.contains_range(&piece)) { RESERVED } else { RAM };
            out.push(Entry { addr: piece.start, size: piece.len(), kind });
        }
    }
    out.sort_by_key(|e| e.addr);
    let mut merged: Vec<Entry> = Vec::with_capacity(out.len());
    for e in out {
        match merged.last_mut() {
            Some(last) if last.kind == e.kind && last.addr + last.size == e.addr => last.size += e.size,
            _ => merged.push(e),
        }
    }
    if merged.len() > MAX_ENTRIES {
        return Err(TooManyEntries(merged.len()));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: u64, end: u64, kind: u32) -> MemoryArea {
        MemoryArea { range: Range::new(start, end), kind }
    }

    #[test]
    fn hypervisor_ranges_become_reserved_and_the_rest_stays() {
        let areas = [
            area(0, 0x9fc00, RAM),
            area(0x9fc00, 0xa0000, RESERVED),
            area(0xf0000, 0x100000, RESERVED),
            area(0x100000, 0x1fff0000, RAM),
            area(0x1fff0000, 0x20000000, 3),
        ];
        let image = Range::new(0x200000, 0x246123);
        let heap = Range::new(0x247000, 0x4247000);
        let boot_data = Range::new(0x9c000, 0x9f000);
        let e = build(&areas, &[image, heap, boot_data]).unwrap();
        assert_eq!(
            e,
            [
                Entry { addr: 0, size: 0x9c000, kind: RAM },
                Entry { addr: 0x9c000, size: 0x3000, kind: RESERVED },
                Entry { addr: 0x9f000, size: 0xc00, kind: RAM },
                Entry { addr: 0x9fc00, size: 0x400, kind: RESERVED },
                Entry { addr: 0xf0000, size: 0x10000, kind: RESERVED },
                Entry { addr: 0x100000, size: 0x100000, kind: RAM },
                Entry { addr: 0x200000, size: 0x4047000, kind: RESERVED },
                Entry { addr: 0x4247000, size: 0x1fff0000 - 0x4247000, kind: RAM },
                Entry { addr: 0x1fff0000, size: 0x10000, kind: 3 },
            ]
        );
    }

    #[test]
    fn too_many_entries_is_an_error() {
        let areas: Vec<MemoryArea> = (0..130u64).map(|i| area(i * 0x2000, i * 0x2000 + 0x1000, RAM)).collect();
        assert_eq!(build(&areas, &[]), Err(TooManyEntries(130)));
    }
}
