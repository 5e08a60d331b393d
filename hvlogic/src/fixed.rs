//! CR0/CR4 fixed bits in VMX operation (SDM Vol. 3D §A.7 "VMX-Fixed Bits in
//! CR0", §A.8 "VMX-Fixed Bits in CR4"): a bit set in FIXED0 must be 1, a bit
//! clear in FIXED1 must be 0.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fixed {
    pub fixed0: u64,
    pub fixed1: u64,
}

/// What applying the fixed bits does to a control register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Adjustment {
    pub value: u64,
    /// Bits turned on.
    pub set: u64,
    /// Bits turned off.
    pub cleared: u64,
}

impl Fixed {
    /// Bits that must be 1 (the book's Cr0FixedMask / Cr4FixedMask).
    pub const fn must_be_one(&self) -> u64 {
        self.fixed0 & self.fixed1
    }
    /// Bits that must be 0.
    pub const fn must_be_zero(&self) -> u64 {
        !self.fixed1
    }
    /// Bits the fixed-bit MSRs constrain either way (those a guest/host mask must own).
    pub const fn constrained(&self) -> u64 {
        self.fixed0 | self.must_be_zero()
    }
    /// Bits the MSRs require to be both 1 and 0: no value satisfies them.
    pub const fn contradictions(&self) -> u64 {
        self.fixed0 & !self.fixed1
    }
    /// `value` with the fixed bits applied: (value | FIXED0) & FIXED1.
    pub const fn apply(&self, value: u64) -> Adjustment {
        let new = (value | self.fixed0) & self.fixed1;
        Adjustment { value: new, set: new & !value, cleared: value & !new }
    }
    /// Bits of `value` that break the fixed-bit rules.
    pub const fn violations(&self, value: u64) -> u64 {
        (!value & self.fixed0) | (value & !self.fixed1)
    }
}

/// Control-register bits this code names (SDM Vol. 3A §2.5 "Control
/// Registers").
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const NE: u64 = 1 << 5;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}
/// CR0 bits a VM exit does not load from the host-state area, so the
/// guest's values stay in force in the host: "The following bits are not
/// modified: For CR0, ET, CD, NW; bits 63:32 (on processors that support
/// Intel 64 architecture), 28:19, 17, and 15:6" (SDM Vol. 3C §28.5.1
/// "Loading Host Control Registers, Debug Registers, MSRs"). A guest running
/// with CD or NW would leave the host's caches off (or incoherent): the host
/// keeps both in the CR0 guest/host mask and out of the guest's real CR0.
pub const CR0_KEPT_BY_VM_EXIT: u64 = cr0::CD | cr0::NW;

pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
}

/// Bits of a CR0 change that a running 64-bit host cannot accept: turning off
/// protection or paging would leave long mode (SDM Vol. 3A §10.8.5
/// "Initializing IA-32e Mode").
pub const fn cr0_refusals(adj: &Adjustment) -> u64 {
    adj.cleared & (cr0::PE | cr0::PG)
}

/// Bits of a CR4 change that a running 64-bit host cannot accept: clearing PAE
/// (long mode needs it), changing LA57 (#GP in long mode), or setting a bit the
/// CPU does not implement (`supported`, from CPUID; MOV to CR4 raises #GP).
pub const fn cr4_refusals(adj: &Adjustment, supported: u64) -> u64 {
    (adj.cleared & cr4::PAE) | ((adj.set | adj.cleared) & cr4::LA57) | (adj.set & !supported)
}

/// CR4 bits this CPU implements, from CPUID.01H:ECX/EDX and CPUID.(EAX=07H,ECX=0):EBX/ECX
/// (SDM Vol. 3A §2.5 "Control Registers": each CR4 bit and the CPUID flag that
/// enumerates it).
pub fn cr4_supported(leaf1_ecx: u32, leaf1_edx: u32, leaf7_ebx: u32, leaf7_ecx: u32) -> u64 {
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;
    let pairs: [(bool, u32); 21] = [
        (bit(leaf1_edx, 1), 0),   // VME
        (bit(leaf1_edx, 1), 1),   // PVI
        (bit(leaf1_edx, 4), 2),   // TSD (TSC)
        (bit(leaf1_edx, 2), 3),   // DE
        (bit(leaf1_edx, 3), 4),   // PSE
        (bit(leaf1_edx, 6), 5),   // PAE
        (bit(leaf1_edx, 7), 6),   // MCE
        (bit(leaf1_edx, 13), 7),  // PGE
        (true, 8),                // PCE
        (bit(leaf1_edx, 24), 9),  // OSFXSR
        (bit(leaf1_edx, 25), 10), // OSXMMEXCPT
        (bit(leaf7_ecx, 2), 11),  // UMIP
        (bit(leaf7_ecx, 16), 12), // LA57
        (bit(leaf1_ecx, 5), 13),  // VMXE
        (bit(leaf1_ecx, 6), 14),  // SMXE
        (bit(leaf7_ebx, 0), 16),  // FSGSBASE
        (bit(leaf1_ecx, 17), 17), // PCIDE
        (bit(leaf1_ecx, 26), 18), // OSXSAVE
        (bit(leaf7_ebx, 7), 20),  // SMEP
        (bit(leaf7_ebx, 20), 21), // SMAP
        (bit(leaf7_ecx, 3), 22),  // PKE
    ];
    pairs.iter().filter(|(on, _)| *on).fold(0, |m, (_, n)| m | 1 << n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKYLAKE_CR0: Fixed = Fixed { fixed0: 0x8000_0021, fixed1: 0xffff_ffff };
    const SKYLAKE_CR4: Fixed = Fixed { fixed0: 0x2000, fixed1: 0x0037_27ff };

    #[test]
    fn apply_sets_fixed0_and_clears_outside_fixed1() {
        // A long-mode host with NE clear: NE is turned on, nothing else changes.
        let adj = SKYLAKE_CR0.apply(0x8001_0011);
        assert_eq!(adj, Adjustment { value: 0x8001_0031, set: cr0::NE, cleared: 0 });
        assert_eq!(cr0_refusals(&adj), 0);
        assert_eq!(SKYLAKE_CR0.violations(0x8001_0011), cr0::NE);
        assert_eq!(SKYLAKE_CR0.violations(adj.value), 0);

        let adj = SKYLAKE_CR4.apply(0x20 | (1 << 23));
        assert_eq!(adj.value, 0x20 | cr4::VMXE);
        assert_eq!((adj.set, adj.cleared), (cr4::VMXE, 1 << 23));
        assert_eq!(SKYLAKE_CR4.must_be_one(), cr4::VMXE);
    }

    #[test]
    fn refusals_name_what_a_long_mode_host_cannot_do() {
        let no_paging = Fixed { fixed0: 0x21, fixed1: 0x7fff_ffff };
        let adj = no_paging.apply(0x8000_0031);
        assert_eq!(cr0_refusals(&adj), cr0::PG);

        let adj = SKYLAKE_CR4.apply(0x20);
        assert_eq!(cr4_refusals(&adj, cr4::PAE), cr4::VMXE, "VMXE not implemented");
        assert_eq!(cr4_refusals(&adj, cr4::PAE | cr4::VMXE), 0);
        let smx_required = Fixed { fixed0: 0x6000, fixed1: 0x0037_67ff };
        assert_eq!(cr4_refusals(&smx_required.apply(0x20), cr4::PAE | cr4::VMXE), cr4::SMXE);
        let no_pae = Fixed { fixed0: 0x2000, fixed1: !cr4::PAE };
        assert_eq!(cr4_refusals(&no_pae.apply(0x20), u64::MAX), cr4::PAE);
    }

    #[test]
    fn contradictions() {
        assert_eq!(SKYLAKE_CR0.contradictions(), 0);
        assert_eq!(Fixed { fixed0: 0x21, fixed1: 0x20 }.contradictions(), 1);
    }

    #[test]
    fn cr4_supported_follows_cpuid() {
        let s = cr4_supported(1 << 5, (1 << 6) | (1 << 3), 0, 0);
        assert_eq!(s & (cr4::VMXE | cr4::PAE | cr4::SMXE | 1 << 4), cr4::VMXE | cr4::PAE | 1 << 4);
    }
}
