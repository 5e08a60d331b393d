//! XSETBV on behalf of a guest: it exits unconditionally (SDM Vol. 3C §26.1.2
//! "Instructions That Cause VM Exits Unconditionally"), and the hypervisor
//! executes it, so a value the CPU would refuse must become a #GP in the
//! guest, never in the host. The rules: SDM Vol. 2C "XSETBV—Set Extended
//! Control Register" and SDM Vol. 1 §13.3 "Enabling the XSAVE Feature Set
//! and XSAVE-Enabled Features". (CPL > 0 and CR4.OSXSAVE = 0 fault in the
//! guest before the exit; SDM Vol. 3C §26.1.1 "Relative Priority of Faults
//! and VM Exits".)

/// XCR0 state components with rules between them.
const X87: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
const AVX: u64 = 1 << 2;
const BNDREGS: u64 = 1 << 3;
const BNDCSR: u64 = 1 << 4;
const AVX512: u64 = 0b111 << 5; // opmask, ZMM_Hi256, Hi16_ZMM
const XTILE: u64 = 0b11 << 17; // XTILECFG, XTILEDATA

/// Whether XSETBV(ECX = `index`, EDX:EAX = `value`) is allowed, where
/// `supported` is CPUID.(EAX=0DH,ECX=0):EDX:EAX (the XCR0 bits the CPU has).
pub fn allowed(index: u32, value: u64, supported: u64) -> bool {
    let all_or_none = |bits: u64| value & bits == 0 || value & bits == bits;
    index == 0
        && value & X87 != 0
        && value & !supported == 0
        && (value & AVX == 0 || value & SSE != 0)
        && all_or_none(BNDREGS | BNDCSR)
        && all_or_none(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
        && all_or_none(XTILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKYLAKE_X: u64 = 0x2ff; // x87 SSE AVX MPX AVX-512 PKRU

    #[test]
    fn what_linux_writes_is_allowed() {
        assert!(allowed(0, 0x7, SKYLAKE_X));
        assert!(allowed(0, 0xe7, SKYLAKE_X));
        assert!(allowed(0, 0x2ff, SKYLAKE_X));
    }

    #[test]
    fn what_the_cpu_refuses_is_refused() {
        assert!(!allowed(1, 0x7, SKYLAKE_X), "only XCR0 is written");
        assert!(!allowed(0, 0x6, SKYLAKE_X), "x87 must stay on");
        assert!(!allowed(0, 0x5, SKYLAKE_X), "AVX without SSE");
        assert!(!allowed(0, 0x7 | 1 << 9 | 1 << 10, SKYLAKE_X), "a component the CPU lacks");
        assert!(!allowed(0, 0x7 | 1 << 3, SKYLAKE_X), "BNDREGS without BNDCSR");
        assert!(!allowed(0, 0x7 | 1 << 5, SKYLAKE_X), "part of AVX-512");
        assert!(!allowed(0, 0x3 | AVX512, SKYLAKE_X), "AVX-512 without AVX");
        assert!(!allowed(0, 0x7 | 1 << 17, 0x7 | XTILE), "XTILECFG without XTILEDATA");
    }
}
