//! The VMX capability MSRs: their numbers, the fields of IA32_VMX_BASIC and
//! IA32_VMX_EPT_VPID_CAP, and the one reading of all of them that knows which
//! exists when (SDM Vol. 3D Appendix A "VMX Capability Reporting Facility").
//! Both `get_vmx_global_data` (`vmx_global`) and the human-readable report
//! (`vmxcap`) start from here.

use crate::controls;

/// VMX capability MSRs (SDM Vol. 3D Appendix A "VMX Capability Reporting
/// Facility").
pub mod msr {
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub const IA32_VMX_MISC: u32 = 0x485;
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub const IA32_VMX_VMFUNC: u32 = 0x491;
}

/// IA32_VMX_BASIC fields (SDM Vol. 3D §A.1 "Basic VMX Information").
pub mod basic {
    /// Bits 30:0: VMCS revision identifier.
    pub const fn revision_id(basic: u64) -> u32 {
        (basic & 0x7fff_ffff) as u32
    }
    /// Bits 44:32: bytes to allocate for the VMXON region and any VMCS.
    pub const fn region_size(basic: u64) -> u32 {
        ((basic >> 32) & 0x1fff) as u32
    }
    /// Bit 48: VMXON, VMCS and other region addresses are limited to 32 bits.
    pub const fn addresses_32bit_only(basic: u64) -> bool {
        basic & (1 << 48) != 0
    }
    /// Bits 53:50: the memory type for VMCS and the structures it refers to.
    pub const fn memory_type(basic: u64) -> u8 {
        ((basic >> 50) & 0xf) as u8
    }
    /// Bit 55: the IA32_VMX_TRUE_*_CTLS MSRs exist.
    pub const fn has_true_controls(basic: u64) -> bool {
        basic & (1 << 55) != 0
    }
}

/// IA32_VMX_EPT_VPID_CAP bits (SDM Vol. 3D §A.10 "VPID and EPT Capabilities").
pub mod ept_vpid {
    pub const PAGE_WALK_4: u64 = 1 << 6;
    pub const EPTP_UC: u64 = 1 << 8;
    pub const EPTP_WB: u64 = 1 << 14;
    /// EPT may map 2 MiB pages (a PDE with bit 7 set).
    pub const PAGE_2M: u64 = 1 << 16;
    /// EPT may map 1 GiB pages (a PDPTE with bit 7 set).
    pub const PAGE_1G: u64 = 1 << 17;
    pub const INVEPT: u64 = 1 << 20;
    pub const INVEPT_ALL_CONTEXT: u64 = 1 << 26;
    pub const INVVPID: u64 = 1 << 32;
    pub const INVVPID_SINGLE_CONTEXT: u64 = 1 << 41;
    pub const INVVPID_ALL_CONTEXT: u64 = 1 << 42;
}

/// Raw capability MSR values. `None` = the MSR does not exist on this CPU.
#[derive(Clone, Copy, Default, Debug)]
pub struct VmxCapMsrs {
    pub basic: u64,
    pub pin: u64,
    pub proc1: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub vmcs_enum: u64,
    pub proc2: Option<u64>,
    pub ept_vpid: Option<u64>,
    pub vmfunc: Option<u64>,
    pub true_pin: Option<u64>,
    pub true_proc1: Option<u64>,
    pub true_exit: Option<u64>,
    pub true_entry: Option<u64>,
}

impl VmxCapMsrs {
    /// Read every capability MSR that exists, via `rdmsr(index)`. The caller
    /// must first have checked CPUID.1:ECX.VMX[bit 5] (SDM Vol. 3D §A.1 "Basic
    /// VMX Information"). Existence rules: PROCBASED_CTLS2 iff primary
    /// allowed-1 bit 31 (SDM Vol. 3D §A.3.3 "Secondary Processor-Based
    /// VM-Execution Controls"); EPT_VPID_CAP iff secondary allowed-1 bit 1 or 5
    /// (SDM Vol. 3D §A.10 "VPID and EPT Capabilities"); VMFUNC iff secondary
    /// allowed-1 bit 13 (SDM Vol. 3D §A.11 "VM Functions"); TRUE_* iff
    /// IA32_VMX_BASIC bit 55 (§A.1).
    pub fn read(mut rdmsr: impl FnMut(u32) -> u64) -> Self {
        use msr::*;
        let basic = rdmsr(IA32_VMX_BASIC);
        let proc1 = rdmsr(IA32_VMX_PROCBASED_CTLS);
        let proc2 =
            controls::can_set(proc1, controls::proc1::ACTIVATE_SECONDARY).then(|| rdmsr(IA32_VMX_PROCBASED_CTLS2));
        let p2 = proc2.unwrap_or(0);
        let has_true = basic::has_true_controls(basic);
        VmxCapMsrs {
            basic,
            pin: rdmsr(IA32_VMX_PINBASED_CTLS),
            proc1,
            exit: rdmsr(IA32_VMX_EXIT_CTLS),
            entry: rdmsr(IA32_VMX_ENTRY_CTLS),
            misc: rdmsr(IA32_VMX_MISC),
            cr0_fixed0: rdmsr(IA32_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(IA32_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(IA32_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(IA32_VMX_CR4_FIXED1),
            vmcs_enum: rdmsr(IA32_VMX_VMCS_ENUM),
            proc2,
            ept_vpid: (controls::can_set(p2, controls::proc2::ENABLE_EPT)
                || controls::can_set(p2, controls::proc2::ENABLE_VPID))
            .then(|| rdmsr(IA32_VMX_EPT_VPID_CAP)),
            vmfunc: controls::can_set(p2, controls::proc2::ENABLE_VMFUNC).then(|| rdmsr(IA32_VMX_VMFUNC)),
            true_pin: has_true.then(|| rdmsr(IA32_VMX_TRUE_PINBASED_CTLS)),
            true_proc1: has_true.then(|| rdmsr(IA32_VMX_TRUE_PROCBASED_CTLS)),
            true_exit: has_true.then(|| rdmsr(IA32_VMX_TRUE_EXIT_CTLS)),
            true_entry: has_true.then(|| rdmsr(IA32_VMX_TRUE_ENTRY_CTLS)),
        }
    }
}
