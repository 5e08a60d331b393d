//! Memory types from the MTRRs (SDM Vol. 3A §12.11 "Memory Type Range
//! Registers (MTRRs)"), for the extended page tables of a pass-through guest:
//! with EPT on, the guest's accesses take their memory type from EPT and the
//! guest's PAT, not from the MTRRs (SDM Vol. 3C §29.3.7 "EPT and Memory
//! Typing"), so EPT must carry what the MTRRs say for each range.

/// Memory types (SDM Vol. 3A Table 12-8 "Memory Types That Can Be Encoded in
/// MTRRs").
/// IA32_PAT at reset (SDM Vol. 3A §12.12.4 "Programming the PAT"; APM Vol. 2
/// §7.8.2 "PAT Register"): WB, WT, UC-, UC, twice. Also a guest's PAT
/// (VMX's guest IA32_PAT, SVM's G_PAT) at its start.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

pub const UC: u8 = 0;
pub const WC: u8 = 1;
pub const WT: u8 = 4;
pub const WP: u8 = 5;
pub const WB: u8 = 6;

/// MSR numbers (SDM Vol. 4 Table 2-2 "IA-32 Architectural MSRs").
pub mod msr {
    pub const IA32_MTRRCAP: u32 = 0xfe;
    pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
    /// The 11 fixed-range MTRRs, in address order (SDM Vol. 3A §12.11.2.2
    /// "Fixed Range MTRRs").
    pub const FIXED: [u32; 11] = [0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f];
}

pub const MAX_VARIABLE: usize = 32;

/// A variable-range MTRR pair (IA32_MTRR_PHYSBASEn, IA32_MTRR_PHYSMASKn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Variable {
    pub base: u64,
    pub mask: u64,
}

impl Variable {
    const VALID: u64 = 1 << 11;

    fn valid(&self) -> bool {
        self.mask & Self::VALID != 0
    }
    fn kind(&self) -> u8 {
        self.base as u8
    }
    fn address_mask(&self, maxphyaddr: u32) -> u64 {
        self.mask & !0xfff & ((1u64 << maxphyaddr) - 1)
    }
}

/// Everything the MTRRs say, as read from the MSRs.
#[derive(Clone, Copy, Debug)]
pub struct Mtrrs {
    pub def_type: u64,
    /// Present when IA32_MTRRCAP.FIX is set.
    pub fixed: Option<[u64; 11]>,
    pub variable: [Variable; MAX_VARIABLE],
    pub variable_count: usize,
    pub maxphyaddr: u32,
}

impl Mtrrs {
    /// Read them through `rdmsr`: IA32_MTRRCAP gives the variable count and
    /// whether fixed ranges exist. Call only when CPUID.01H:EDX[12] (MTRR) is set.
    pub fn read(maxphyaddr: u32, mut rdmsr: impl FnMut(u32) -> u64) -> Mtrrs {
        let cap = rdmsr(msr::IA32_MTRRCAP);
        let count = ((cap & 0xff) as usize).min(MAX_VARIABLE);
        let mut variable = [Variable::default(); MAX_VARIABLE];
        for (i, v) in variable.iter_mut().enumerate().take(count) {
            let base = msr::IA32_MTRR_PHYSBASE0 + 2 * i as u32;
            *v = Variable { base: rdmsr(base), mask: rdmsr(base + 1) };
        }
        Mtrrs {
            def_type: rdmsr(msr::IA32_MTRR_DEF_TYPE),
            fixed: (cap & (1 << 8) != 0).then(|| msr::FIXED.map(&mut rdmsr)),
            variable,
            variable_count: count,
            maxphyaddr,
        }
    }

    /// No MTRRs (CPUID says none): everything is uncacheable... except that a
    /// CPU without MTRRs caches per PAT alone, so report write-back.
    pub fn none(maxphyaddr: u32) -> Mtrrs {
        Mtrrs {
            def_type: (1 << 11) | WB as u64,
            fixed: None,
            variable: [Variable::default(); MAX_VARIABLE],
            variable_count: 0,
            maxphyaddr,
        }
    }

    fn enabled(&self) -> bool {
        self.def_type & (1 << 11) != 0
    }
    fn fixed_enabled(&self) -> bool {
        self.def_type & (1 << 10) != 0 && self.fixed.is_some()
    }

    /// The type of the fixed range holding `addr` (< 1 MiB): 8 ranges of
    /// 64 KiB, then 16 of 16 KiB, then 64 of 4 KiB (SDM Vol. 3A Table 12-9
    /// "Address Mapping for Fixed-Range MTRRs").
    fn fixed_type(&self, addr: u64) -> u8 {
        let fixed = self.fixed.unwrap_or_default();
        let (msr, byte) = match addr {
            0..0x8_0000 => (0, addr >> 16),
            0x8_0000..0xc_0000 => (1 + ((addr - 0x8_0000) >> 17), ((addr - 0x8_0000) >> 14) & 7),
            _ => (3 + ((addr - 0xc_0000) >> 15), ((addr - 0xc_0000) >> 12) & 7),
        };
        (fixed[msr as usize] >> (8 * byte)) as u8
    }

    /// The type of the 2^order-byte block at `addr` (aligned), or None when
    /// the block is not of one type (an MTRR boundary falls inside it).
    pub fn block_type(&self, addr: u64, order: u32) -> Option<u8> {
        if !self.enabled() {
            return Some(UC);
        }
        let size = 1u64 << order;
        if self.fixed_enabled() && addr < 0x10_0000 {
            if addr + size > 0x10_0000 {
                return None;
            }
            let first = self.fixed_type(addr);
            let mut a = addr;
            while a < addr + size {
                if self.fixed_type(a) != first {
                    return None;
                }
                a += 0x1000;
            }
            return Some(first);
        }
        // Variable ranges: each matches all of the block, none of it, or part (None).
        let mut matched: Option<u8> = None;
        let mut uc = false;
        let mut wt = false;
        for v in self.variable[..self.variable_count].iter().filter(|v| v.valid()) {
            let mask = v.address_mask(self.maxphyaddr);
            let high = mask & !(size - 1);
            if addr & high != v.base & high {
                continue;
            }
            if mask & (size - 1) != 0 {
                return None;
            }
            let t = v.kind();
            uc |= t == UC;
            wt |= t == WT;
            matched = Some(match matched {
                None => t,
                Some(m) if m == t => t,
                // Overlaps: UC wins; WT and WB give WT; anything else is
                // undefined (SDM Vol. 3A §12.11.4.1 "MTRR Precedences"): take
                // UC, the safe one.
                Some(_) if uc => UC,
                Some(m) if wt && (m == WB || t == WB) => WT,
                Some(_) => UC,
            });
        }
        Some(matched.unwrap_or(self.def_type as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typical BIOS setup: default UC, WB for the first 2 GiB, fixed ranges
    /// WB below 640 KiB, UC for the VGA hole, WP for the BIOS ROM.
    fn typical() -> Mtrrs {
        let mut fixed = [0x0606_0606_0606_0606u64; 11];
        fixed[1] = 0x0606_0606_0606_0606; // 0x80000-0x9FFFF
        fixed[2] = 0; // 0xA0000-0xBFFFF UC
        for f in &mut fixed[3..] {
            *f = 0x0505_0505_0505_0505; // 0xC0000-0xFFFFF WP
        }
        let mut variable = [Variable::default(); MAX_VARIABLE];
        variable[0] = Variable { base: WB as u64, mask: 0xff_8000_0000 | 1 << 11 };
        Mtrrs { def_type: 1 << 11 | 1 << 10, fixed: Some(fixed), variable, variable_count: 8, maxphyaddr: 40 }
    }

    #[test]
    fn fixed_ranges_below_1_mib() {
        let m = typical();
        assert_eq!(m.block_type(0, 12), Some(WB));
        assert_eq!(m.block_type(0x9_f000, 12), Some(WB));
        assert_eq!(m.block_type(0xa_0000, 12), Some(UC));
        assert_eq!(m.block_type(0xf_f000, 12), Some(WP));
        assert_eq!(m.block_type(0, 16), Some(WB));
        assert_eq!(m.block_type(0x8_0000, 17), Some(WB));
        assert_eq!(m.block_type(0x8_0000, 18), None, "WB and UC in one block");
        assert_eq!(m.block_type(0, 21), None, "a 2 MiB block over the fixed ranges");
    }

    #[test]
    fn variable_ranges_and_the_default() {
        let m = typical();
        assert_eq!(m.block_type(0x20_0000, 21), Some(WB));
        assert_eq!(m.block_type(0x4000_0000, 30), Some(WB));
        assert_eq!(m.block_type(0x8000_0000, 30), Some(UC), "default type above 2 GiB");
        assert_eq!(m.block_type(0, 32), None, "the first 4 GiB mix WB and UC");
        assert_eq!(m.block_type(0xfee0_0000, 12), Some(UC));
    }

    #[test]
    fn overlaps_follow_the_precedence_rules() {
        let mut m = typical();
        m.variable[1] = Variable { base: 0x4000_0000 | UC as u64, mask: 0xff_c000_0000 | 1 << 11 };
        assert_eq!(m.block_type(0x4000_0000, 30), Some(UC));
        assert_eq!(m.block_type(0x20_0000, 21), Some(WB));
        m.variable[1] = Variable { base: WT as u64, mask: 0xff_c000_0000 | 1 << 11 };
        assert_eq!(m.block_type(0x20_0000, 21), Some(WT));
        m.variable[2] = Variable { base: 0x1000_0000 | WT as u64, mask: 0xff_f000_0000 | 1 << 11 };
        assert_eq!(m.block_type(0, 30), None, "fixed ranges and a 256 MiB range inside a 1 GiB block");
        assert_eq!(m.block_type(0x1000_0000, 28), Some(WT));
    }

    #[test]
    fn disabled_mtrrs_mean_uncacheable() {
        let mut m = typical();
        m.def_type = WB as u64;
        assert_eq!(m.block_type(0, 30), Some(UC));
        assert_eq!(Mtrrs::none(40).block_type(0, 30), Some(WB));
    }

    #[test]
    fn read_follows_mtrrcap() {
        let m = Mtrrs::read(36, |msr| match msr {
            msr::IA32_MTRRCAP => 0x508,
            msr::IA32_MTRR_DEF_TYPE => 0xc00,
            0x200 => 6,
            0x201 => 0xf_c000_0800,
            0x250 => 0x0606_0606_0606_0606,
            _ => 0,
        });
        assert_eq!(m.variable_count, 8);
        assert!(m.fixed.is_some());
        assert_eq!(m.block_type(0x1000_0000, 28), Some(WB));
        assert_eq!(m.block_type(0x4000_0000, 30), Some(UC));
    }
}
