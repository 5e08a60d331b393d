//! Reading a guest's instruction: the guest's own page walk (linear to
//! guest-physical), and the decoding of the store instructions an OS uses on
//! memory-mapped device registers, for the writes a hypervisor must see (the
//! local APIC's interrupt command register).
//!
//! Paging: SDM Vol. 3A §4.3 "32-Bit Paging", §4.4 "PAE Paging", §4.5
//! "4-Level Paging and 5-Level Paging". Instruction format: SDM Vol. 2A §2.1
//! "Instruction Format for Protected Mode, Real-Address Mode, and Virtual-8086
//! Mode" and §2.2.1 "REX Prefixes".

const P: u64 = 1 << 0;
const PS: u64 = 1 << 7;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// The guest's paging registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Translate `linear` through the guest's page tables, reading guest-physical
/// memory with `read` (the 8 bytes at an 8-byte-aligned address; 32-bit
/// paging's 4-byte entries are taken from the right half). None: not present.
pub fn translate(p: &Paging, linear: u64, read: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
    if p.cr0 & CR0_PG == 0 {
        return Some(linear & 0xffff_ffff);
    }
    if p.efer & EFER_LMA != 0 {
        let levels = if p.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        let mut table = p.cr3 & ADDR;
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let e = read(table + ((linear >> shift) & 0x1ff) * 8);
            if e & P == 0 {
                return None;
            }
            if level == 1 || (level <= 3 && e & PS != 0) {
                let page = (1u64 << shift) - 1;
                return Some((e & ADDR & !page) | (linear & page));
            }
            table = e & ADDR;
        }
        return None;
    }
    if p.cr4 & CR4_PAE != 0 {
        let pdpte = read((p.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8);
        if pdpte & P == 0 {
            return None;
        }
        let pde = read((pdpte & ADDR) + ((linear >> 21) & 0x1ff) * 8);
        if pde & P == 0 {
            return None;
        }
        if pde & PS != 0 {
            return Some((pde & ADDR & !0x1f_ffff) | (linear & 0x1f_ffff));
        }
        let pte = read((pde & ADDR) + ((linear >> 12) & 0x1ff) * 8);
        return (pte & P != 0).then_some((pte & ADDR) | (linear & 0xfff));
    }
    // 32-bit paging: 4-byte entries, the upper half of an aligned qword at
    // an address with bit 2 set.
    let mut read32 = |a: u64| (read(a & !7) >> ((a & 4) * 8)) & 0xffff_ffff;
    let pde = read32((p.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4);
    if pde & P == 0 {
        return None;
    }
    if pde & PS != 0 && p.cr4 & CR4_PSE != 0 {
        // Bits 20:13 of a 4 MiB PDE are bits 39:32 of the address (PSE-36).
        return Some((pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32 | (linear & 0x3f_ffff));
    }
    let pte = read32((pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4);
    (pte & P != 0).then_some((pte & 0xffff_f000) | (linear & 0xfff))
}

/// A decoded store to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// What is stored.
    pub source: Source,
    /// Operand size in bytes.
    pub size: u8,
    /// Instruction length in bytes.
    pub len: u8,
    /// XCHG: the register also receives the memory's old value.
    pub exchange: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// General register n (0 RAX ... 15 R15).
    Register(u8),
    Immediate(u32),
}

/// Decode `MOV r/m, r` (89), `MOV r/m, imm` (C7 /0) or `XCHG r/m, r` (87)
/// with a memory destination: what an OS uses to write a 32-bit device
/// register. `long_mode`: 64-bit code (REX prefixes, RIP-relative
/// addressing); otherwise 32-bit code. Anything else: None.
pub fn decode_store(code: &[u8], long_mode: bool) -> Option<Store> {
    let mut i = 0;
    let mut size = 4u8;
    let mut rex = 0u8;
    loop {
        match *code.get(i)? {
            0x66 => size = 2,
            // Segment overrides do not change the decoding.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        i += 1;
    }
    if long_mode && (0x40..=0x4f).contains(code.get(i)?) {
        rex = code[i];
        i += 1;
        if rex & 0x08 != 0 {
            size = 8;
        }
    }
    let opcode = *code.get(i)?;
    i += 1;
    let modrm = *code.get(i)?;
    i += 1;
    let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if md == 3 {
        return None; // a register destination: not a store
    }
    // SIB and displacement (32-bit addressing; in 64-bit mode mod=00 rm=101 is RIP-relative).
    let mut disp = match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = *code.get(i)?;
        i += 1;
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    } else if md == 0 && rm == 5 {
        disp = 4;
    }
    i += disp;
    let reg = reg | if rex & 0x04 != 0 { 8 } else { 0 };
    let source = match opcode {
        0x89 | 0x87 => Source::Register(reg),
        0xc7 if reg & 7 == 0 => {
            let imm = code.get(i..i + 4)?;
            i += 4;
            Source::Immediate(u32::from_le_bytes([imm[0], imm[1], imm[2], imm[3]]))
        }
        _ => return None,
    };
    (i <= 15).then_some(Store { source, size, len: i as u8, exchange: opcode == 0x87 })
}

#[cfg(test)]
mod tests {

    /// A reader that, like the kernel's, reads the aligned qword: 32-bit
    /// paging's odd-numbered entries are its upper half (found by review:
    /// linear 0x9123 translated to 0x8123).
    #[test]
    fn thirty_two_bit_entries_from_an_aligned_reader() {
        let mut mem = alloc::vec![0u8; 0x4000];
        let p = Paging { cr0: 1 << 31 | 1, cr3: 0x1000, cr4: 0, efer: 0 };
        mem[0x1000..0x1004].copy_from_slice(&0x2003u32.to_le_bytes()); // PDE 0 -> PT at 0x2000
        for i in 0..16u32 {
            let at = 0x2000 + 4 * i as usize;
            mem[at..at + 4].copy_from_slice(&((i * 0x1000 + 0x10_0000) | 3).to_le_bytes());
        }
        let mut read = |a: u64| {
            let a = (a & !7) as usize;
            u64::from_le_bytes(mem[a..a + 8].try_into().unwrap())
        };
        assert_eq!(translate(&p, 0x9123, &mut read), Some(0x10_9123));
        assert_eq!(translate(&p, 0xb000, &mut read), Some(0x10_b000));
        assert_eq!(translate(&p, 0xa000, &mut read), Some(0x10_a000));
    }

    use super::*;
    use std::collections::HashMap;

    #[test]
    fn linux_apic_writes_decode() {
        // mov %eax,(%rdx)            89 02
        assert_eq!(
            decode_store(&[0x89, 0x02], true),
            Some(Store { source: Source::Register(0), size: 4, len: 2, exchange: false })
        );
        // mov %esi,0x300(%rax)       89 b0 00 03 00 00
        assert_eq!(
            decode_store(&[0x89, 0xb0, 0x00, 0x03, 0, 0], true),
            Some(Store { source: Source::Register(6), size: 4, len: 6, exchange: false })
        );
        // mov %r9d,0x310(%rdi)       44 89 8f 10 03 00 00
        assert_eq!(
            decode_store(&[0x44, 0x89, 0x8f, 0x10, 0x03, 0, 0], true),
            Some(Store { source: Source::Register(9), size: 4, len: 7, exchange: false })
        );
        // mov %ecx,-0xa03500(,%rax,1)? SIB with no base: 89 0c 05 <disp32>
        assert_eq!(
            decode_store(&[0x89, 0x0c, 0x05, 0, 0xcb, 0x5f, 0xff], true),
            Some(Store { source: Source::Register(1), size: 4, len: 7, exchange: false })
        );
        // movl $0x0,0xb0(%rax)       c7 80 b0 00 00 00 00 00 00 00
        assert_eq!(
            decode_store(&[0xc7, 0x80, 0xb0, 0, 0, 0, 0, 0, 0, 0], true),
            Some(Store { source: Source::Immediate(0), size: 4, len: 10, exchange: false })
        );
        // xchg %eax,(%rdx)           87 02
        assert_eq!(
            decode_store(&[0x87, 0x02], true),
            Some(Store { source: Source::Register(0), size: 4, len: 2, exchange: true })
        );
        // RIP-relative: mov %eax,0x1234(%rip)  89 05 34 12 00 00
        assert_eq!(decode_store(&[0x89, 0x05, 0x34, 0x12, 0, 0], true).unwrap().len, 6);
        // A 32-bit guest: mov %eax,0xfee00300  89 05 00 03 e0 fe
        assert_eq!(decode_store(&[0x89, 0x05, 0x00, 0x03, 0xe0, 0xfe], false).unwrap().len, 6);
        // REX is INC/DEC in 32-bit code: not a store we know.
        assert_eq!(decode_store(&[0x44, 0x89, 0x02], false), None);
    }

    #[test]
    fn what_is_not_a_store_is_refused() {
        assert_eq!(decode_store(&[0x8b, 0x02], true), None, "a load");
        assert_eq!(decode_store(&[0x89, 0xc0], true), None, "a register destination");
        assert_eq!(decode_store(&[0xc7, 0x88, 0, 0, 0, 0], true), None, "C7 /1 is not MOV");
        assert_eq!(decode_store(&[0x89], true), None, "cut short");
    }

    /// A sparse guest memory for the page walks.
    fn memory(entries: &[(u64, u64)]) -> HashMap<u64, u64> {
        entries.iter().copied().collect()
    }

    #[test]
    fn four_and_five_level_walks_with_large_pages() {
        let m = memory(&[
            (0x1000, 0x2003),
            (0x2000 + 8 * 3, 0x3003),
            (0x3000 + 8 * 0x1f7, 0x4003),
            (0x4000 + 8 * 0x100, 0xfee0_0003),
        ]);
        let p = Paging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PAE, efer: EFER_LMA };
        let linear = 3 << 30 | 0x1f7 << 21 | 0x100 << 12 | 0x300;
        assert_eq!(translate(&p, linear, &mut |a| m.get(&a).copied().unwrap_or(0)), Some(0xfee0_0300));
        // A 2 MiB page at the PD level.
        let m2 = memory(&[(0x1000, 0x2003), (0x2000, 0x3003), (0x3000 + 8, 0x0060_0083)]);
        assert_eq!(translate(&p, 0x20_1234, &mut |a| m2.get(&a).copied().unwrap_or(0)), Some(0x60_1234));
        // Not present.
        assert_eq!(translate(&p, 0x40_0000_0000, &mut |a| m2.get(&a).copied().unwrap_or(0)), None);
        // LA57: one more level on top.
        let m5 = memory(&[(0x9000, 0x1003), (0x1000, 0x2003), (0x2000, 0x3003), (0x3000 + 8, 0x0060_0083)]);
        let p5 = Paging { cr4: CR4_PAE | CR4_LA57, cr3: 0x9000, ..p };
        assert_eq!(translate(&p5, 0x20_1234, &mut |a| m5.get(&a).copied().unwrap_or(0)), Some(0x60_1234));
    }

    #[test]
    fn legacy_walks() {
        // Paging off: linear is physical.
        let off = Paging { cr0: 1, cr3: 0, cr4: 0, efer: 0 };
        assert_eq!(translate(&off, 0xfee0_0300, &mut |_| 0), Some(0xfee0_0300));
        // 32-bit paging with a 4 MiB page: entry 0x3fb is the upper half of
        // the aligned qword at entry 0x3fa.
        let m = memory(&[(0x1000 + 4 * 0x3fa, 0xfec0_0083 << 32)]);
        let p = Paging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PSE, efer: 0 };
        assert_eq!(translate(&p, 0xfee0_0300, &mut |a| m.get(&a).copied().unwrap_or(0)), Some(0xfee0_0300));
        // PAE paging, 4 KiB page.
        let m = memory(&[(0x1000 + 8 * 3, 0x2001), (0x2000 + 8 * 0x1f7, 0x3003), (0x3000, 0xfee0_0003)]);
        let p = Paging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PAE, efer: 0 };
        assert_eq!(translate(&p, 0xfee0_0300, &mut |a| m.get(&a).copied().unwrap_or(0)), Some(0xfee0_0300));
    }
}
