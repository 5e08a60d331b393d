//! What hosting an operating system needs from the CPU, which controls it
//! runs with, and the CPUID it sees: pure decisions from the VMX capabilities.
//!
//! The OS runs pass-through: its own memory map 1:1 through EPT, its own
//! interrupts, devices and timers, no exits for HLT, I/O or MSRs but the few
//! the hypervisor must see. It starts in the state the Linux boot protocol
//! asks (32-bit protected mode, paging off: unrestricted guest); the
//! application processors wait out of VMX operation, in the processor's own
//! wait-for-SIPI state, until the OS starts them itself (no wait-for-SIPI
//! activity state is needed).

use crate::controls::{self, entry, exit, pin, proc1, proc2, Control};
use crate::vmx_global::{ept_vpid, VmxGlobalData};

/// Why this CPU cannot host the OS as a guest, if it cannot.
pub fn missing(d: &VmxGlobalData) -> Option<&'static str> {
    if !d.ept_usable() {
        return Some("no usable EPT (4-level, WB or UC paging structures)");
    }
    if d.ept_vpid_cap & ept_vpid::PAGE_2M == 0 {
        return Some("no 2 MiB EPT pages (IA32_VMX_EPT_VPID_CAP[16]) for a compact identity map");
    }
    if !controls::can_set(d.processor_based_ctls2, proc2::UNRESTRICTED_GUEST) {
        return Some("no unrestricted guest (the boot protocol's entry runs with paging off)");
    }
    let needed = [
        (
            Control::PrimaryProcBased,
            proc1::USE_IO_BITMAPS | proc1::USE_MSR_BITMAPS | proc1::ACTIVATE_SECONDARY,
            d.processor_based_ctls,
        ),
        (Control::Exit, exit::HOST_ADDRESS_SPACE_SIZE | exit::SAVE_EFER | exit::LOAD_EFER, d.exit_ctls),
        (Control::Entry, entry::IA32E_MODE_GUEST | entry::LOAD_EFER, d.entry_ctls),
    ];
    for (_, bits, cap) in needed {
        if !controls::can_set(cap, bits) {
            return Some("no save/load of IA32_EFER, IA-32e mode guest, or I/O and MSR bitmaps");
        }
    }
    // Exits the OS would take for every HLT, I/O port or interrupt: a CPU that
    // forces them on cannot run it pass-through.
    let forced = controls::allowed0(d.pin_based_ctls) & (pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING) != 0
        || controls::allowed0(d.processor_based_ctls) & (proc1::HLT_EXITING | proc1::UNCONDITIONAL_IO_EXITING) != 0;
    if forced {
        return Some("the CPU forces interrupt, HLT or I/O exiting on");
    }
    None
}

/// Instructions the guest has only when a secondary control enables them
/// (else they raise #UD in VMX non-root operation, SDM Vol. 3C §26.3 "Changes
/// to Instruction Behavior in VMX Non-Root Operation"), so the CPUID bit is
/// hidden where the control is not available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hidden {
    pub rdtscp: bool,
    pub invpcid: bool,
    pub xsaves: bool,
    pub waitpkg: bool,
    /// The TSC-deadline timer mode (CPUID.01H:ECX[24]), where the boot CPU's
    /// microcode has the TSC-deadline erratum (`tsc_deadline_erratum`).
    pub tsc_deadline: bool,
}

/// The five control fields for the OS, and which instructions stay hidden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc1: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
    pub hidden: Hidden,
}

/// The controls for the OS guest, `(wanted | allowed-0) & allowed-1` each.
/// `vpid`: tag the guest's TLB entries. Call only when `missing` is None.
pub fn controls(d: &VmxGlobalData, vpid: bool) -> Controls {
    let optional = |cap: u64, bits: u32| if controls::can_set(cap, bits) { bits } else { 0 };
    let p2 = d.processor_based_ctls2;
    let hidden = Hidden {
        rdtscp: !controls::can_set(p2, proc2::ENABLE_RDTSCP),
        invpcid: !controls::can_set(p2, proc2::ENABLE_INVPCID),
        xsaves: !controls::can_set(p2, proc2::ENABLE_XSAVES_XRSTORS),
        waitpkg: !controls::can_set(p2, proc2::ENABLE_USER_WAIT_PAUSE),
        tsc_deadline: false,
    };
    let wanted2 = proc2::ENABLE_EPT
        | proc2::UNRESTRICTED_GUEST
        | if vpid { proc2::ENABLE_VPID } else { 0 }
        | optional(p2, proc2::ENABLE_RDTSCP)
        | optional(p2, proc2::ENABLE_INVPCID)
        | optional(p2, proc2::ENABLE_XSAVES_XRSTORS)
        | optional(p2, proc2::ENABLE_USER_WAIT_PAUSE);
    let adjust = |wanted: u32, cap: u64| controls::adjust(wanted, cap).value;
    Controls {
        pin: adjust(0, d.pin_based_ctls),
        proc1: adjust(
            proc1::USE_IO_BITMAPS | proc1::USE_MSR_BITMAPS | proc1::ACTIVATE_SECONDARY,
            d.processor_based_ctls,
        ),
        proc2: adjust(wanted2, p2),
        exit: adjust(
            exit::HOST_ADDRESS_SPACE_SIZE
                | exit::SAVE_EFER
                | exit::LOAD_EFER
                | exit::SAVE_DEBUG_CONTROLS
                | optional(d.exit_ctls, exit::SAVE_PAT | exit::LOAD_PAT),
            d.exit_ctls,
        ),
        entry: adjust(
            entry::LOAD_EFER | entry::LOAD_DEBUG_CONTROLS | optional(d.entry_ctls, entry::LOAD_PAT),
            d.entry_ctls,
        ),
        hidden,
    }
}

/// CPUID bits (SDM Vol. 2A "CPUID—CPU Identification").
const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_SMX: u32 = 1 << 6;
/// CPUID.01H:ECX[31], reserved by Intel for hypervisors to say they are there.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.01H:ECX[24]: the local APIC timer's TSC-deadline mode.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF7_EBX_INVPCID: u32 = 1 << 10;
const LEAF7_ECX_WAITPKG: u32 = 1 << 5;
/// RDPID raises #UD in VMX non-root operation unless "enable RDTSCP" is set
/// (SDM Vol. 3C §26.3 "Changes to Instruction Behavior in VMX Non-Root Operation").
const LEAF7_ECX_RDPID: u32 = 1 << 22;
/// PCONFIG raises #UD unless "enable PCONFIG" is set, which this guest never gets.
const LEAF7_EDX_PCONFIG: u32 = 1 << 18;
/// Key Locker: leaf 19H's AESKLE follows CR4.KL, which the host's CPUID
/// would report from the host's CR4 (as leaf 1's OSXSAVE does); hidden, so
/// that leaf 19H can pass through.
const LEAF7_ECX_KL: u32 = 1 << 23;
const LEAF_D1_EAX_XSAVES: u32 = 1 << 3;
const LEAF_80000001_EDX_RDTSCP: u32 = 1 << 27;

/// What a guest sees of CPUID leaf `leaf`/`subleaf` whose real answer is
/// `r` (EAX, EBX, ECX, EDX): VMX, SMX and SVM hidden (VMX instructions,
/// GETSEC and SVM's instructions raise #UD in the guest), the hypervisor bit set, and every instruction in
/// `hidden` hidden (RDPID goes with RDTSCP; PCONFIG and Key Locker are always hidden).
pub fn cpuid(leaf: u32, subleaf: u32, r: [u32; 4], hidden: Hidden) -> [u32; 4] {
    let [mut a, mut b, mut c, mut d] = r;
    match (leaf, subleaf) {
        (1, _) => {
            c = (c & !(LEAF1_ECX_VMX | LEAF1_ECX_SMX)) | LEAF1_ECX_HYPERVISOR;
            if hidden.tsc_deadline {
                c &= !LEAF1_ECX_TSC_DEADLINE;
            }
        }
        (7, 0) => {
            if hidden.invpcid {
                b &= !LEAF7_EBX_INVPCID;
            }
            if hidden.waitpkg {
                c &= !LEAF7_ECX_WAITPKG;
            }
            if hidden.rdtscp {
                c &= !LEAF7_ECX_RDPID;
            }
            c &= !LEAF7_ECX_KL;
            d &= !LEAF7_EDX_PCONFIG;
        }
        (0xd, 1) if hidden.xsaves => a &= !LEAF_D1_EAX_XSAVES,
        (0x8000_0001, _) => {
            c &= !crate::svm::CPUID_80000001_ECX_SVM;
            if hidden.rdtscp {
                d &= !LEAF_80000001_EDX_RDTSCP;
            }
        }
        // SVM's features: none, as on a CPU without SVM (APM Vol. 3 Appendix
        // E.4.9 "Function 8000_000Ah—SVM Features" is reserved without it).
        (0x8000_000a, _) => return [0; 4],
        _ => {}
    }
    [a, b, c, d]
}

/// Intel processors whose TSC-deadline timer mode is unreliable below a
/// microcode revision (the deadline errata of the Haswell, Broadwell,
/// Skylake and Kaby Lake specification updates), as (display model,
/// steppings, first good revision); 0 means no revision is bad. Family 6.
/// The revisions are the ones Linux requires before it uses the mode
/// (arch/x86/kernel/apic/apic.c, `apic_check_deadline_errata`).
const TSC_DEADLINE_ERRATA: &[(u32, core::ops::RangeInclusive<u32>, u32)] = &[
    (0x3c, 0..=0xf, 0x22),          // Haswell
    (0x3f, 0x2..=0x2, 0x3a),        // Haswell-X
    (0x3f, 0x4..=0x4, 0x0f),        // Haswell-X
    (0x45, 0..=0xf, 0x20),          // Haswell-L
    (0x46, 0..=0xf, 0x17),          // Haswell-G
    (0x3d, 0..=0xf, 0x25),          // Broadwell
    (0x47, 0..=0xf, 0x17),          // Broadwell-G
    (0x4f, 0..=0xf, 0x0b00_0020),   // Broadwell-X
    (0x56, 0x2..=0x2, 0x11),        // Broadwell-D
    (0x56, 0x3..=0x3, 0x0700_000e), // Broadwell-D
    (0x56, 0x4..=0x4, 0x0f00_000c), // Broadwell-D
    (0x56, 0x5..=0x5, 0x0e00_0003), // Broadwell-D
    (0x55, 0x3..=0x3, 0x0100_0136), // Skylake-X
    (0x55, 0x4..=0x4, 0x0200_0014), // Skylake-X
    (0x55, 0x5..=0xf, 0),           // Skylake-X
    (0x4e, 0..=0xf, 0xb2),          // Skylake-L
    (0x5e, 0..=0xf, 0xb2),          // Skylake
    (0x8e, 0..=0xf, 0x52),          // Kaby Lake-L
    (0x9e, 0..=0xf, 0x52),          // Kaby Lake
];

/// Whether the TSC-deadline mode must be hidden from an OS guest: the CPU
/// (CPUID.01H:EAX `signature`, an Intel one) runs microcode `revision`
/// (IA32_BIOS_SIGN_ID[63:32], SDM Vol. 4 Table 2-2 "IA-32 Architectural
/// MSRs"; 0 where it cannot be read) older than its deadline erratum's fix.
/// Returns the revision that would fix it.
///
/// Natively an OS checks this itself; Linux skips the check when CPUID says a
/// hypervisor is present, trusting the hypervisor with the local APIC timer.
/// The OS guest drives the real timer, so the hypervisor hides the mode where
/// the OS would have turned it off (Bochs 2.7 `corei7_skylake_x`: stepping 4,
/// no IA32_BIOS_SIGN_ID; there the mode's deadlines, computed from a TSC rate
/// CPUID leaf 16H overstates 17.5 times, fired that much too late and a
/// 3-CPU Linux guest crawled: issue 16).
pub fn tsc_deadline_erratum(signature: u32, revision: u32) -> Option<u32> {
    let family = (signature >> 8) & 0xf;
    let model = ((signature >> 12) & 0xf0) | ((signature >> 4) & 0xf);
    let stepping = signature & 0xf;
    if family != 6 {
        return None;
    }
    TSC_DEADLINE_ERRATA
        .iter()
        .find(|(m, steppings, _)| *m == model && steppings.contains(&stepping))
        .map(|&(_, _, fixed)| fixed)
        .filter(|&fixed| revision < fixed)
}

/// CPUID leaves that reach a guest exactly as the CPU answers them, whatever
/// `Hidden` says: every leaf but those `cpuid` and `mirror_cr4` change (1, 7,
/// 0DH, 80000001H, 8000000AH) and the hypervisor's own range
/// (40000000H-4FFFFFFFH). The backends' CPUID fast paths answer these
/// without leaving assembly; their comparisons are this function's, in the
/// same order.
pub fn passes_through(leaf: u32) -> bool {
    !matches!(leaf, 1 | 7 | 0xd | 0x8000_0001 | 0x8000_000a | 0x4000_0000..=0x4fff_ffff)
}

const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;

/// CPUID.01H:ECX.OSXSAVE and CPUID.(EAX=07H,ECX=0):ECX.OSPKE report CR4.OSXSAVE
/// and CR4.PKE (SDM Vol. 2A "CPUID—CPU Identification"): a CPUID the host
/// executes for a guest reports the host's CR4, so they are set from the
/// guest's `cr4`.
pub fn mirror_cr4(leaf: u32, subleaf: u32, r: [u32; 4], cr4: u64) -> [u32; 4] {
    let [a, b, mut c, d] = r;
    let bit = |on: bool, mask: u32, v: u32| if on { v | mask } else { v & !mask };
    match (leaf, subleaf) {
        (1, _) => c = bit(cr4 & CR4_OSXSAVE != 0, LEAF1_ECX_OSXSAVE, c),
        (7, 0) => c = bit(cr4 & CR4_PKE != 0, LEAF7_ECX_OSPKE, c),
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_deadline_errata() {
        // Bochs 2.7 corei7_skylake_x: family 6, model 0x55, stepping 4 (0x00050654),
        // IA32_BIOS_SIGN_ID absent (revision 0).
        assert_eq!(tsc_deadline_erratum(0x0005_0654, 0), Some(0x0200_0014));
        assert_eq!(tsc_deadline_erratum(0x0005_0654, 0x0200_0014), None, "fixed microcode");
        assert_eq!(tsc_deadline_erratum(0x0005_0655, 0), None, "stepping 5 has no bad revision");
        assert_eq!(tsc_deadline_erratum(0x0005_0653, 0x0100_0135), Some(0x0100_0136));
        assert_eq!(tsc_deadline_erratum(0x0009_06e9, 0x48), Some(0x52), "Kaby Lake");
        assert_eq!(tsc_deadline_erratum(0x0008_06c1, 0), None, "Tiger Lake: no erratum");
        assert_eq!(tsc_deadline_erratum(0x0080_0f82, 0), None, "an AMD family 17h signature");
        let hidden = Hidden { tsc_deadline: true, ..Hidden::default() };
        let [_, _, c, _] = cpuid(1, 0, [0, 0, LEAF1_ECX_TSC_DEADLINE | 1, 0], hidden);
        assert_eq!(c, 1 | LEAF1_ECX_HYPERVISOR);
        let [_, _, c, _] = cpuid(1, 0, [0, 0, LEAF1_ECX_TSC_DEADLINE, 0], Hidden::default());
        assert_eq!(c, LEAF1_ECX_TSC_DEADLINE | LEAF1_ECX_HYPERVISOR);
    }

    /// Bochs corei7_skylake_x, roughly: everything needed is there.
    fn skylake() -> VmxGlobalData {
        VmxGlobalData {
            pin_based_ctls: 0x7f_0000_0016,
            processor_based_ctls: 0xfff9_fffe_0401_e172,
            processor_based_ctls2: 0x0011_54ff_0000_0000,
            exit_ctls: 0x01ff_efff_0003_6dff,
            entry_ctls: 0x0003_d3ff_0000_11ff,
            misc: 0x1c5,
            ept_vpid_cap: 0xf_0106_7141 | ept_vpid::PAGE_2M | ept_vpid::PAGE_1G,
            ..VmxGlobalData::default()
        }
    }

    #[test]
    fn skylake_hosts_an_os() {
        assert_eq!(missing(&skylake()), None);
        let c = controls(&skylake(), true);
        assert_eq!(c.pin & (pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING), 0);
        assert_eq!(c.proc1 & proc1::HLT_EXITING, 0);
        assert_ne!(c.proc2 & proc2::UNRESTRICTED_GUEST, 0);
        assert_ne!(c.proc2 & proc2::ENABLE_RDTSCP, 0);
        assert_ne!(c.exit & exit::LOAD_EFER, 0);
        assert_eq!(c.entry & entry::IA32E_MODE_GUEST, 0, "the OS starts in 32-bit mode");
        assert!(!c.hidden.rdtscp);
        assert!(!c.hidden.xsaves);
        assert!(c.hidden.waitpkg, "this capability lacks enable user wait and pause");
    }

    #[test]
    fn what_is_missing_is_named() {
        let mut d = skylake();
        d.processor_based_ctls2 &= !((proc2::UNRESTRICTED_GUEST as u64) << 32);
        assert_eq!(missing(&d), Some("no unrestricted guest (the boot protocol's entry runs with paging off)"));
        let mut d = skylake();
        d.misc &= !(1 << 8);
        assert_eq!(missing(&d), None, "APs wait for SIPI outside VMX: no wait-for-SIPI activity state needed");
        let mut d = skylake();
        d.ept_vpid_cap = 0;
        assert!(missing(&d).unwrap().contains("EPT"));
        let mut d = skylake();
        d.ept_vpid_cap &= !ept_vpid::PAGE_2M;
        assert!(missing(&d).unwrap().contains("2 MiB"));
        let mut d = skylake();
        d.processor_based_ctls |= proc1::HLT_EXITING as u64;
        assert!(missing(&d).unwrap().contains("forces"));
    }

    #[test]
    fn osxsave_and_ospke_follow_the_guests_cr4() {
        assert_eq!(mirror_cr4(1, 0, [0, 0, LEAF1_ECX_OSXSAVE | 1, 0], 0)[2], 1);
        assert_eq!(mirror_cr4(1, 0, [0, 0, 1, 0], CR4_OSXSAVE)[2], 1 | LEAF1_ECX_OSXSAVE);
        assert_eq!(mirror_cr4(7, 0, [0, 0, 0, 0], CR4_PKE)[2], LEAF7_ECX_OSPKE);
        assert_eq!(mirror_cr4(7, 1, [0, 0, 0, 0], CR4_PKE)[2], 0);
    }

    /// What entry.s's fast path relies on: a leaf that passes through comes
    /// back unchanged whatever is hidden and whatever the guest's CR4.
    #[test]
    fn leaves_that_pass_through_are_unchanged() {
        let all = Hidden { rdtscp: true, invpcid: true, xsaves: true, waitpkg: true, tsc_deadline: true };
        let leaves = (0..0x40u32)
            .chain(0x3fff_fff0..0x4000_0010)
            .chain(0x4fff_fff0..0x5000_0010)
            .chain(0x8000_0000..0x8000_0030)
            .chain([u32::MAX]);
        let mut passed = 0;
        for leaf in leaves {
            if !passes_through(leaf) {
                continue;
            }
            passed += 1;
            for subleaf in [0, 1, 2] {
                for r in [[0; 4], [u32::MAX; 4], [0x1234_5678, 0x9abc_def0, 0x0f0f_0f0f, 0xf0f0_f0f0]] {
                    for h in [Hidden::default(), all] {
                        assert_eq!(cpuid(leaf, subleaf, r, h), r, "leaf {leaf:#x}.{subleaf}");
                    }
                    assert_eq!(mirror_cr4(leaf, subleaf, r, 0), r);
                    assert_eq!(mirror_cr4(leaf, subleaf, r, u64::MAX), r);
                }
            }
        }
        assert!(passed > 100);
        for leaf in [1, 7, 0xd, 0x8000_0001, 0x8000_000a, 0x4000_0000, 0x4000_0001, 0x4fff_ffff] {
            assert!(!passes_through(leaf), "{leaf:#x}");
        }
        assert!(passes_through(0) && passes_through(0x5000_0000) && passes_through(0x3fff_ffff));
    }

    #[test]
    fn svm_is_hidden() {
        let [_, _, c, _] = cpuid(0x8000_0001, 0, [0, 0, 0xffff_ffff, 0], Hidden::default());
        assert_eq!(c, !crate::svm::CPUID_80000001_ECX_SVM);
        assert_eq!(cpuid(0x8000_000a, 0, [1, 16, 0, 0x1ff], Hidden::default()), [0; 4]);
    }

    #[test]
    fn the_guest_cpuid() {
        let h = Hidden { rdtscp: true, invpcid: true, xsaves: true, waitpkg: true, tsc_deadline: true };
        assert_eq!(cpuid(1, 0, [0x50654, 0, 0x7ffe_fbff, 0], h)[2], 0xfefe_fb9f);
        assert_eq!(
            cpuid(7, 0, [0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff], h)[1..],
            [!LEAF7_EBX_INVPCID, !(LEAF7_ECX_WAITPKG | LEAF7_ECX_RDPID | LEAF7_ECX_KL), !LEAF7_EDX_PCONFIG]
        );
        let only_pconfig = cpuid(7, 0, [0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff], Hidden::default());
        assert_eq!(only_pconfig[1..], [0xffff_ffff, !LEAF7_ECX_KL, !LEAF7_EDX_PCONFIG]);
        assert_eq!(cpuid(7, 1, [0, 0xffff_ffff, 0, 0], h)[1], 0xffff_ffff);
        assert_eq!(cpuid(0xd, 1, [0xf, 0, 0, 0], h)[0], 0x7);
        assert_eq!(cpuid(0x8000_0001, 0, [0, 0, 0, 0x2c10_0800], h)[3], 0x2410_0800);
        assert_eq!(cpuid(0x8000_0001, 0, [0, 0, 0, 0x2c10_0800], Hidden::default())[3], 0x2c10_0800);
    }
}
