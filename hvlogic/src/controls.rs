//! The five 32-bit VMX control fields, their bit names, and the
//! allowed-0 / allowed-1 capability MSR logic.
//!
//! Bit definitions: SDM Vol. 3C §25.6.1 "Pin-Based VM-Execution Controls",
//! §25.6.2 "Processor-Based VM-Execution Controls", §25.7.1 "VM-Exit
//! Controls", §25.8.1 "VM-Entry Controls" (each set below names its table).
//! Capability MSRs: SDM Vol. 3D §A.3 "VM-Execution Controls" to §A.5
//! "VM-Entry Controls".

/// One named bit of a control field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ControlBit {
    pub bit: u8,
    pub name: &'static str,
}

/// Pin-based VM-execution controls (SDM Vol. 3C Table 25-5 "Definitions of
/// Pin-Based VM-Execution Controls").
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls (SDM Vol. 3C Table 25-6
/// "Definitions of Primary Processor-Based VM-Execution Controls").
pub mod proc1 {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const ACTIVATE_TERTIARY: u32 = 1 << 17;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM Vol. 3C Table 25-7
/// "Definitions of Secondary Processor-Based VM-Execution Controls"). Bit 29
/// is not defined.
pub mod proc2 {
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    pub const RDRAND_EXITING: u32 = 1 << 11;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_VMFUNC: u32 = 1 << 13;
    pub const VMCS_SHADOWING: u32 = 1 << 14;
    pub const ENCLS_EXITING: u32 = 1 << 15;
    pub const RDSEED_EXITING: u32 = 1 << 16;
    pub const ENABLE_PML: u32 = 1 << 17;
    pub const EPT_VIOLATION_VE: u32 = 1 << 18;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 19;
    pub const ENABLE_XSAVES_XRSTORS: u32 = 1 << 20;
    pub const PASID_TRANSLATION: u32 = 1 << 21;
    pub const MODE_BASED_EPT_EXECUTE: u32 = 1 << 22;
    pub const SUB_PAGE_WRITE_PERMISSIONS: u32 = 1 << 23;
    pub const PT_USES_GUEST_PHYSICAL: u32 = 1 << 24;
    pub const USE_TSC_SCALING: u32 = 1 << 25;
    pub const ENABLE_USER_WAIT_PAUSE: u32 = 1 << 26;
    pub const ENABLE_PCONFIG: u32 = 1 << 27;
    pub const ENCLV_EXITING: u32 = 1 << 28;
    pub const BUS_LOCK_DETECTION: u32 = 1 << 30;
    pub const INSTRUCTION_TIMEOUT: u32 = 1 << 31;
}

/// Primary VM-exit controls (SDM Vol. 3C Table 25-13 "Definitions of Primary
/// VM-Exit Controls").
pub mod exit {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
    pub const CLEAR_BNDCFGS: u32 = 1 << 23;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 24;
    pub const CLEAR_RTIT_CTL: u32 = 1 << 25;
    pub const CLEAR_LBR_CTL: u32 = 1 << 26;
    pub const CLEAR_UINV: u32 = 1 << 27;
    pub const LOAD_CET_STATE: u32 = 1 << 28;
    pub const LOAD_PKRS: u32 = 1 << 29;
    pub const SAVE_PERF_GLOBAL_CTRL: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

/// VM-entry controls (SDM Vol. 3C §25.8.1 "VM-Entry Controls").
pub mod entry {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
    pub const LOAD_BNDCFGS: u32 = 1 << 16;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 17;
    pub const LOAD_RTIT_CTL: u32 = 1 << 18;
    pub const LOAD_UINV: u32 = 1 << 19;
    pub const LOAD_CET_STATE: u32 = 1 << 20;
    pub const LOAD_LBR_CTL: u32 = 1 << 21;
    pub const LOAD_PKRS: u32 = 1 << 22;
    /// "load FRED" (FRED architecture; added to the newest SDM editions).
    pub const LOAD_FRED: u32 = 1 << 23;
}

const fn cb(mask: u32, name: &'static str) -> ControlBit {
    ControlBit { bit: mask.trailing_zeros() as u8, name }
}

/// SDM Vol. 3C Table 25-5 "Definitions of Pin-Based VM-Execution Controls".
pub const PIN_BASED: &[ControlBit] = &[
    cb(pin::EXTERNAL_INTERRUPT_EXITING, "external-interrupt exiting"),
    cb(pin::NMI_EXITING, "NMI exiting"),
    cb(pin::VIRTUAL_NMIS, "virtual NMIs"),
    cb(pin::PREEMPTION_TIMER, "activate VMX-preemption timer"),
    cb(pin::POSTED_INTERRUPTS, "process posted interrupts"),
];

/// SDM Vol. 3C Table 25-6 "Definitions of Primary Processor-Based
/// VM-Execution Controls".
pub const PRIMARY_PROCBASED: &[ControlBit] = &[
    cb(proc1::INTERRUPT_WINDOW_EXITING, "interrupt-window exiting"),
    cb(proc1::USE_TSC_OFFSETTING, "use TSC offsetting"),
    cb(proc1::HLT_EXITING, "HLT exiting"),
    cb(proc1::INVLPG_EXITING, "INVLPG exiting"),
    cb(proc1::MWAIT_EXITING, "MWAIT exiting"),
    cb(proc1::RDPMC_EXITING, "RDPMC exiting"),
    cb(proc1::RDTSC_EXITING, "RDTSC exiting"),
    cb(proc1::CR3_LOAD_EXITING, "CR3-load exiting"),
    cb(proc1::CR3_STORE_EXITING, "CR3-store exiting"),
    cb(proc1::ACTIVATE_TERTIARY, "activate tertiary controls"),
    cb(proc1::CR8_LOAD_EXITING, "CR8-load exiting"),
    cb(proc1::CR8_STORE_EXITING, "CR8-store exiting"),
    cb(proc1::USE_TPR_SHADOW, "use TPR shadow"),
    cb(proc1::NMI_WINDOW_EXITING, "NMI-window exiting"),
    cb(proc1::MOV_DR_EXITING, "MOV-DR exiting"),
    cb(proc1::UNCONDITIONAL_IO_EXITING, "unconditional I/O exiting"),
    cb(proc1::USE_IO_BITMAPS, "use I/O bitmaps"),
    cb(proc1::MONITOR_TRAP_FLAG, "monitor trap flag"),
    cb(proc1::USE_MSR_BITMAPS, "use MSR bitmaps"),
    cb(proc1::MONITOR_EXITING, "MONITOR exiting"),
    cb(proc1::PAUSE_EXITING, "PAUSE exiting"),
    cb(proc1::ACTIVATE_SECONDARY, "activate secondary controls"),
];

/// SDM Vol. 3C Table 25-7 "Definitions of Secondary Processor-Based
/// VM-Execution Controls".
pub const SECONDARY_PROCBASED: &[ControlBit] = &[
    cb(proc2::VIRTUALIZE_APIC_ACCESSES, "virtualize APIC accesses"),
    cb(proc2::ENABLE_EPT, "enable EPT"),
    cb(proc2::DESCRIPTOR_TABLE_EXITING, "descriptor-table exiting"),
    cb(proc2::ENABLE_RDTSCP, "enable RDTSCP"),
    cb(proc2::VIRTUALIZE_X2APIC_MODE, "virtualize x2APIC mode"),
    cb(proc2::ENABLE_VPID, "enable VPID"),
    cb(proc2::WBINVD_EXITING, "WBINVD exiting"),
    cb(proc2::UNRESTRICTED_GUEST, "unrestricted guest"),
    cb(proc2::APIC_REGISTER_VIRTUALIZATION, "APIC-register virtualization"),
    cb(proc2::VIRTUAL_INTERRUPT_DELIVERY, "virtual-interrupt delivery"),
    cb(proc2::PAUSE_LOOP_EXITING, "PAUSE-loop exiting"),
    cb(proc2::RDRAND_EXITING, "RDRAND exiting"),
    cb(proc2::ENABLE_INVPCID, "enable INVPCID"),
    cb(proc2::ENABLE_VMFUNC, "enable VM functions"),
    cb(proc2::VMCS_SHADOWING, "VMCS shadowing"),
    cb(proc2::ENCLS_EXITING, "enable ENCLS exiting"),
    cb(proc2::RDSEED_EXITING, "RDSEED exiting"),
    cb(proc2::ENABLE_PML, "enable PML"),
    cb(proc2::EPT_VIOLATION_VE, "EPT-violation #VE"),
    cb(proc2::CONCEAL_VMX_FROM_PT, "conceal VMX from PT"),
    cb(proc2::ENABLE_XSAVES_XRSTORS, "enable XSAVES/XRSTORS"),
    cb(proc2::PASID_TRANSLATION, "PASID translation"),
    cb(proc2::MODE_BASED_EPT_EXECUTE, "mode-based execute control for EPT"),
    cb(proc2::SUB_PAGE_WRITE_PERMISSIONS, "sub-page write permissions for EPT"),
    cb(proc2::PT_USES_GUEST_PHYSICAL, "Intel PT uses guest physical addresses"),
    cb(proc2::USE_TSC_SCALING, "use TSC scaling"),
    cb(proc2::ENABLE_USER_WAIT_PAUSE, "enable user wait and pause"),
    cb(proc2::ENABLE_PCONFIG, "enable PCONFIG"),
    cb(proc2::ENCLV_EXITING, "enable ENCLV exiting"),
    cb(proc2::BUS_LOCK_DETECTION, "VMM bus-lock detection"),
    cb(proc2::INSTRUCTION_TIMEOUT, "instruction timeout"),
];

/// SDM Vol. 3C Table 25-13 "Definitions of Primary VM-Exit Controls".
pub const EXIT: &[ControlBit] = &[
    cb(exit::SAVE_DEBUG_CONTROLS, "save debug controls"),
    cb(exit::HOST_ADDRESS_SPACE_SIZE, "host address-space size"),
    cb(exit::LOAD_PERF_GLOBAL_CTRL, "load IA32_PERF_GLOBAL_CTRL"),
    cb(exit::ACK_INTERRUPT_ON_EXIT, "acknowledge interrupt on exit"),
    cb(exit::SAVE_PAT, "save IA32_PAT"),
    cb(exit::LOAD_PAT, "load IA32_PAT"),
    cb(exit::SAVE_EFER, "save IA32_EFER"),
    cb(exit::LOAD_EFER, "load IA32_EFER"),
    cb(exit::SAVE_PREEMPTION_TIMER, "save VMX-preemption timer value"),
    cb(exit::CLEAR_BNDCFGS, "clear IA32_BNDCFGS"),
    cb(exit::CONCEAL_VMX_FROM_PT, "conceal VMX from PT"),
    cb(exit::CLEAR_RTIT_CTL, "clear IA32_RTIT_CTL"),
    cb(exit::CLEAR_LBR_CTL, "clear IA32_LBR_CTL"),
    cb(exit::CLEAR_UINV, "clear UINV"),
    cb(exit::LOAD_CET_STATE, "load CET state"),
    cb(exit::LOAD_PKRS, "load PKRS"),
    cb(exit::SAVE_PERF_GLOBAL_CTRL, "save IA32_PERF_GLOBAL_CTRL"),
    cb(exit::ACTIVATE_SECONDARY, "activate secondary controls"),
];

/// SDM Vol. 3C §25.8.1 "VM-Entry Controls".
pub const ENTRY: &[ControlBit] = &[
    cb(entry::LOAD_DEBUG_CONTROLS, "load debug controls"),
    cb(entry::IA32E_MODE_GUEST, "IA-32e mode guest"),
    cb(entry::ENTRY_TO_SMM, "entry to SMM"),
    cb(entry::DEACTIVATE_DUAL_MONITOR, "deactivate dual-monitor treatment"),
    cb(entry::LOAD_PERF_GLOBAL_CTRL, "load IA32_PERF_GLOBAL_CTRL"),
    cb(entry::LOAD_PAT, "load IA32_PAT"),
    cb(entry::LOAD_EFER, "load IA32_EFER"),
    cb(entry::LOAD_BNDCFGS, "load IA32_BNDCFGS"),
    cb(entry::CONCEAL_VMX_FROM_PT, "conceal VMX from PT"),
    cb(entry::LOAD_RTIT_CTL, "load IA32_RTIT_CTL"),
    cb(entry::LOAD_UINV, "load UINV"),
    cb(entry::LOAD_CET_STATE, "load CET state"),
    cb(entry::LOAD_LBR_CTL, "load guest IA32_LBR_CTL"),
    cb(entry::LOAD_PKRS, "load PKRS"),
    cb(entry::LOAD_FRED, "load FRED"),
];

/// Which 32-bit control field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Control {
    PinBased,
    PrimaryProcBased,
    SecondaryProcBased,
    Exit,
    Entry,
}

impl Control {
    pub const ALL: [Control; 5] =
        [Control::PinBased, Control::PrimaryProcBased, Control::SecondaryProcBased, Control::Exit, Control::Entry];

    /// The named bits of this field.
    pub fn table(self) -> &'static [ControlBit] {
        match self {
            Control::PinBased => PIN_BASED,
            Control::PrimaryProcBased => PRIMARY_PROCBASED,
            Control::SecondaryProcBased => SECONDARY_PROCBASED,
            Control::Exit => EXIT,
            Control::Entry => ENTRY,
        }
    }

    /// Human name of the field.
    pub fn label(self) -> &'static str {
        match self {
            Control::PinBased => "pin-based VM-execution controls",
            Control::PrimaryProcBased => "primary processor-based VM-execution controls",
            Control::SecondaryProcBased => "secondary processor-based VM-execution controls",
            Control::Exit => "VM-exit controls",
            Control::Entry => "VM-entry controls",
        }
    }

    /// Name of one bit, or "reserved bit" if the SDM defines none there.
    pub fn bit_name(self, bit: u8) -> &'static str {
        self.table().iter().find(|b| b.bit == bit).map_or("reserved bit", |b| b.name)
    }
}

/// Names of the bits set in `mask` (undefined bits yield "reserved bit").
pub fn names(control: Control, mask: u32) -> impl Iterator<Item = &'static str> {
    (0u8..32).filter(move |&b| mask & (1 << b) != 0).map(move |b| control.bit_name(b))
}

/// Allowed-0 settings, bits 31:0 of a capability MSR (SDM Vol. 3D §A.3.1
/// "Pin-Based VM-Execution Controls"): a 1 in bit X means control bit X must
/// be 1.
pub fn allowed0(cap: u64) -> u32 {
    cap as u32
}

/// Allowed-1 settings, bits 63:32 of a capability MSR (SDM Vol. 3D §A.3.1
/// "Pin-Based VM-Execution Controls"): a 0 in bit X means control bit X must
/// be 0.
pub fn allowed1(cap: u64) -> u32 {
    (cap >> 32) as u32
}

/// True if every bit of `bits` may be set to 1.
pub fn can_set(cap: u64, bits: u32) -> bool {
    allowed1(cap) & bits == bits
}

/// True if every bit of `bits` may be cleared to 0.
pub fn can_clear(cap: u64, bits: u32) -> bool {
    allowed0(cap) & bits == 0
}

/// Result of fitting a wanted control value to a capability MSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Adjusted {
    /// The value to write: (wanted | allowed0) & allowed1.
    pub value: u32,
    /// Wanted bits the CPU cannot set (not in allowed-1).
    pub missing: u32,
    /// Bits the CPU forces to 1 that were not wanted (allowed-0 set).
    pub forced: u32,
}

/// Fit `wanted` to capability MSR `cap` (SDM Vol. 3D §A.3.1 "Pin-Based
/// VM-Execution Controls"; use the TRUE MSR when IA32_VMX_BASIC bit 55 is
/// set, SDM Vol. 3D §A.2 "Reserved Controls and Default Settings").
pub fn adjust(wanted: u32, cap: u64) -> Adjusted {
    let (a0, a1) = (allowed0(cap), allowed1(cap));
    Adjusted { value: (wanted | a0) & a1, missing: wanted & !a1, forced: a0 & !wanted }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn adjust_plain() {
        // Skylake IA32_VMX_TRUE_PINBASED_CTLS: bits 1,2,4 must be 1; 0..6 may be 1.
        let cap = 0x0000_007f_0000_0016;
        let wanted = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING | pin::PREEMPTION_TIMER;
        let a = adjust(wanted, cap);
        assert_eq!(a.value, wanted | 0x16);
        assert_eq!(a.missing, 0);
        assert_eq!(a.forced, 0x16);
    }

    #[test]
    fn adjust_missing_bit() {
        // Posted interrupts (bit 7) not in allowed-1: dropped and reported.
        let cap = 0x0000_007f_0000_0016;
        let a = adjust(pin::POSTED_INTERRUPTS | pin::NMI_EXITING, cap);
        assert_eq!(a.value, pin::NMI_EXITING | 0x16);
        assert_eq!(a.missing, pin::POSTED_INTERRUPTS);
        assert_eq!(names(Control::PinBased, a.missing).collect::<std::vec::Vec<_>>(), ["process posted interrupts"]);
    }

    #[test]
    fn adjust_forced_bit() {
        // Non-TRUE primary MSR: CR3-load/store exiting (15, 16) are default1.
        let cap = 0xfff9_fffe_0401_e172;
        let a = adjust(proc1::HLT_EXITING, cap);
        assert_eq!(
            a.value & (proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING),
            proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING
        );
        assert_ne!(a.forced & proc1::CR3_LOAD_EXITING, 0);
        assert_eq!(a.forced & proc1::HLT_EXITING, 0);
        assert!(!can_clear(cap, proc1::CR3_LOAD_EXITING));
        assert!(can_clear(cap, proc1::HLT_EXITING));
        assert!(can_set(cap, proc1::HLT_EXITING | proc1::ACTIVATE_SECONDARY));
        assert!(!can_set(cap, proc1::ACTIVATE_TERTIARY));
    }

    #[test]
    fn names_and_labels() {
        let v: std::vec::Vec<_> =
            names(Control::SecondaryProcBased, proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | 1 << 29).collect();
        assert_eq!(v, ["enable EPT", "unrestricted guest", "reserved bit"]);
        assert_eq!(Control::Exit.bit_name(9), "host address-space size");
        assert_eq!(Control::Entry.bit_name(9), "IA-32e mode guest");
        assert_eq!(Control::PinBased.bit_name(1), "reserved bit");
        assert_eq!(Control::Entry.label(), "VM-entry controls");
        assert_eq!(names(Control::Exit, 0).count(), 0);
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        for c in Control::ALL {
            let t = c.table();
            assert!(t.windows(2).all(|w| w[0].bit < w[1].bit), "{c:?}");
            assert!(t.iter().all(|b| b.bit < 32));
        }
    }
}
