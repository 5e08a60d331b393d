//! Decisions of the AP start-up that need no hardware: whether the 10 ms
//! INIT-to-SIPI delay is needed on this CPU family, and the deadlines.
//!
//! SDM Vol. 3A §9.4.4.1 "Typical BSP Initialization Sequence" waits 10 ms after
//! INIT and 200 us after each SIPI. Linux (arch/x86/kernel/smpboot.c,
//! smp_quirk_init_udelay) drops the 10 ms for CPUs that do not need it: Intel
//! family 6 (recent Linux: family 6 and the later extended families), AMD
//! family 0xF and later, Hygon family 0x18 and later; older ones keep it. The
//! SIPI spacing stays as the SDM says.

/// The vendor string of CPUID leaf 0 (EBX, EDX, ECX).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Vendor {
    Intel,
    Amd,
    Hygon,
    Other,
}

impl Vendor {
    pub fn from_cpuid0(ebx: u32, edx: u32, ecx: u32) -> Vendor {
        let mut s = [0u8; 12];
        s[..4].copy_from_slice(&ebx.to_le_bytes());
        s[4..8].copy_from_slice(&edx.to_le_bytes());
        s[8..].copy_from_slice(&ecx.to_le_bytes());
        match &s {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" => Vendor::Amd,
            b"HygonGenuine" => Vendor::Hygon,
            _ => Vendor::Other,
        }
    }
}

/// The display family of CPUID.01H:EAX: the base family, plus the extended
/// family when the base family is 0xF (SDM Vol. 2A "CPUID—CPU Identification",
/// Figure 3-6 "Version Information Returned by CPUID in EAX").
pub fn display_family(eax: u32) -> u32 {
    let base = (eax >> 8) & 0xf;
    if base == 0xf {
        base + ((eax >> 20) & 0xff)
    } else {
        base
    }
}

/// Whether the BSP must wait 10 ms between INIT and the first SIPI.
pub fn init_delay_needed(vendor: Vendor, family: u32) -> bool {
    !matches!((vendor, family), (Vendor::Intel, 6..) | (Vendor::Amd, 0xf..) | (Vendor::Hygon, 0x18..))
}

/// The INIT-to-SIPI delay (10 ms, SDM Vol. 3A §9.4.4.1 "Typical BSP
/// Initialization Sequence"), where needed.
pub const INIT_DELAY_US: u64 = 10_000;
/// Between the two SIPIs (200 us, SDM Vol. 3A §9.4.4.1 "Typical BSP
/// Initialization Sequence").
pub const SIPI_DELAY_US: u64 = 200;
/// How long an AP has to show its first sign of life and check in: Linux
/// waits 10 s (smpboot.c, do_boot_cpu) before it gives up on a CPU.
pub const CHECK_IN_DEADLINE_US: u64 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn cpuid0(s: &[u8; 12]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap());
        (w(0), w(4), w(8))
    }

    #[test]
    fn vendors() {
        let (b, d, c) = cpuid0(b"GenuineIntel");
        assert_eq!(Vendor::from_cpuid0(b, d, c), Vendor::Intel);
        let (b, d, c) = cpuid0(b"AuthenticAMD");
        assert_eq!(Vendor::from_cpuid0(b, d, c), Vendor::Amd);
        let (b, d, c) = cpuid0(b"HygonGenuine");
        assert_eq!(Vendor::from_cpuid0(b, d, c), Vendor::Hygon);
        let (b, d, c) = cpuid0(b"VIA VIA VIA ");
        assert_eq!(Vendor::from_cpuid0(b, d, c), Vendor::Other);
    }

    #[test]
    fn families() {
        assert_eq!(display_family(0x000206a7), 6, "Sandy Bridge");
        assert_eq!(display_family(0x00050654), 6, "Skylake-X");
        assert_eq!(display_family(0x00000f61), 0xf, "Pentium 4 / QEMU qemu64");
        assert_eq!(display_family(0x00a20f10), 0x19, "Zen 3");
    }

    #[test]
    fn init_delay_as_linux_decides() {
        assert!(!init_delay_needed(Vendor::Intel, 6));
        assert!(!init_delay_needed(Vendor::Intel, 0x13));
        assert!(!init_delay_needed(Vendor::Intel, 0xf));
        assert!(init_delay_needed(Vendor::Intel, 5));
        assert!(!init_delay_needed(Vendor::Amd, 0xf));
        assert!(!init_delay_needed(Vendor::Amd, 0x19));
        assert!(init_delay_needed(Vendor::Amd, 6), "K7 keeps the delay");
        assert!(!init_delay_needed(Vendor::Hygon, 0x18));
        assert!(init_delay_needed(Vendor::Other, 6));
    }
}
