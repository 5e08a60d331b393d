//! The book's `get_vmx_global_data` (lib/system_data_manage.asm), steps 1-6
//! and 8-9, as a pure function of an MSR reader. The IA32_FEATURE_CONTROL part
//! of step 6 is in `feature_control`; step 7 (ENABLE_VMX_INSIDE_SMX) is applied
//! by the kernel behind its cargo feature.

use crate::controls;
use crate::vmx_msrs::VmxCapMsrs;

pub use crate::vmx_msrs::{basic, ept_vpid, msr};

/// Memory types (SDM Vol. 3A §12.3 "Methods of Caching Available", §12.11
/// "Memory Type Range Registers (MTRRs)", Table 12-8 "Memory Types That Can Be
/// Encoded in MTRRs").
pub const MEMORY_TYPE_UC: u8 = 0;
pub const MEMORY_TYPE_WB: u8 = 6;

/// The VMX fields of the book's PCB, in MSR order.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct VmxGlobalData {
    pub vmx_basic: u64,
    /// IA32_VMX_PINBASED_CTLS, or IA32_VMX_TRUE_PINBASED_CTLS when `true_flag`.
    pub pin_based_ctls: u64,
    pub processor_based_ctls: u64,
    pub exit_ctls: u64,
    pub entry_ctls: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub vmcs_enum: u64,
    /// 0 when the CPU has no secondary controls.
    pub processor_based_ctls2: u64,
    /// 0 when the CPU has neither EPT nor VPID.
    pub ept_vpid_cap: u64,
    /// 0 when the CPU has no VM functions.
    pub vm_function: u64,
    /// CR0 bits that must be 1 in VMX operation (Cr0Fixed0 & Cr0Fixed1).
    pub cr0_fixed_mask: u64,
    /// CR4 bits that must be 1 in VMX operation (Cr4Fixed0 & Cr4Fixed1).
    pub cr4_fixed_mask: u64,
    pub vmcs_memory_type: u8,
    pub ept_memory_type: u8,
    /// The control fields hold the TRUE MSRs (IA32_VMX_BASIC[55]).
    pub true_flag: bool,
}

impl VmxGlobalData {
    /// "Enable EPT" may be 1.
    pub fn has_ept(&self) -> bool {
        controls::can_set(self.processor_based_ctls2, controls::proc2::ENABLE_EPT)
    }

    /// "Enable VPID" may be 1.
    pub fn has_vpid(&self) -> bool {
        controls::can_set(self.processor_based_ctls2, controls::proc2::ENABLE_VPID)
    }

    /// EPT that this hypervisor can use: the control, 4-level page walks, and
    /// an EPTP memory type of WB or UC (SDM Vol. 3D §A.10 "VPID and EPT
    /// Capabilities").
    pub fn ept_usable(&self) -> bool {
        self.has_ept()
            && self.ept_vpid_cap & ept_vpid::PAGE_WALK_4 != 0
            && self.ept_vpid_cap & (ept_vpid::EPTP_WB | ept_vpid::EPTP_UC) != 0
    }

    /// The INVEPT type that flushes every EPT context, if INVEPT has it.
    pub fn invept_all_contexts(&self) -> Option<u64> {
        let cap = self.ept_vpid_cap;
        (self.has_ept() && cap & ept_vpid::INVEPT != 0 && cap & ept_vpid::INVEPT_ALL_CONTEXT != 0)
            .then_some(INV_ALL_CONTEXTS)
    }

    /// The INVVPID type that flushes every VPID, if INVVPID has it.
    pub fn invvpid_all_contexts(&self) -> Option<u64> {
        let cap = self.ept_vpid_cap;
        (self.has_vpid() && cap & ept_vpid::INVVPID != 0 && cap & ept_vpid::INVVPID_ALL_CONTEXT != 0)
            .then_some(INV_ALL_CONTEXTS)
    }

    /// The INVVPID type this hypervisor flushes one VPID with: single-context
    /// where offered, else all contexts; None without VPID or INVVPID.
    pub fn invvpid_type(&self) -> Option<u64> {
        let cap = self.ept_vpid_cap;
        if !self.has_vpid() || cap & ept_vpid::INVVPID == 0 {
            None
        } else if cap & ept_vpid::INVVPID_SINGLE_CONTEXT != 0 {
            Some(INV_SINGLE_CONTEXT)
        } else if cap & ept_vpid::INVVPID_ALL_CONTEXT != 0 {
            Some(INV_ALL_CONTEXTS)
        } else {
            None
        }
    }
}

/// INVEPT/INVVPID types (SDM Vol. 3C "INVEPT—Invalidate Translations Derived
/// from EPT", "INVVPID—Invalidate Translations Based on VPID").
pub const INV_SINGLE_CONTEXT: u64 = 1;
pub const INV_ALL_CONTEXTS: u64 = 2;

/// Steps 1-6 and 8-9 of `get_vmx_global_data`. Call only when CPUID.01H:ECX[5] = 1:
/// reading these MSRs on a CPU without VMX raises #GP.
///
/// Steps 1-4 and the reads of step 5 are `VmxCapMsrs::read`, the one place
/// that knows which capability MSR exists when (SDM Vol. 3D Appendix A "VMX
/// Capability Reporting Facility"):
/// 1. IA32_VMX_BASIC .. IA32_VMX_VMCS_ENUM;
/// 2. IA32_VMX_PROCBASED_CTLS2 when "activate secondary controls" may be 1;
/// 3. IA32_VMX_EPT_VPID_CAP when EPT or VPID may be enabled (the book checks
///    EPT only; a CPU with VPID but no EPT has the MSR too);
/// 4. IA32_VMX_VMFUNC when "enable VM functions" may be 1.
pub fn get_vmx_global_data(rdmsr: &mut dyn FnMut(u32) -> u64) -> VmxGlobalData {
    from_capabilities(&VmxCapMsrs::read(rdmsr))
}

/// Steps 5, 6, 8 and 9 on capability MSRs already read.
pub fn from_capabilities(m: &VmxCapMsrs) -> VmxGlobalData {
    let mut d = VmxGlobalData {
        vmx_basic: m.basic,
        pin_based_ctls: m.pin,
        processor_based_ctls: m.proc1,
        exit_ctls: m.exit,
        entry_ctls: m.entry,
        misc: m.misc,
        cr0_fixed0: m.cr0_fixed0,
        cr0_fixed1: m.cr0_fixed1,
        cr4_fixed0: m.cr4_fixed0,
        cr4_fixed1: m.cr4_fixed1,
        vmcs_enum: m.vmcs_enum,
        processor_based_ctls2: m.proc2.unwrap_or(0),
        ept_vpid_cap: m.ept_vpid.unwrap_or(0),
        vm_function: m.vmfunc.unwrap_or(0),
        ..VmxGlobalData::default()
    };
    // Step 5: with IA32_VMX_BASIC[55], the TRUE MSRs describe the controls (A.2).
    if let (Some(pin), Some(proc1), Some(exit), Some(entry)) = (m.true_pin, m.true_proc1, m.true_exit, m.true_entry) {
        d.true_flag = true;
        d.pin_based_ctls = pin;
        d.processor_based_ctls = proc1;
        d.exit_ctls = exit;
        d.entry_ctls = entry;
    }
    // Step 6: bits set in both FIXED0 and FIXED1 must be 1 (A.7, A.8).
    d.cr0_fixed_mask = d.cr0_fixed0 & d.cr0_fixed1;
    d.cr4_fixed_mask = d.cr4_fixed0 & d.cr4_fixed1;
    // Step 8: memory type for the VMCS and VMXON regions.
    d.vmcs_memory_type = basic::memory_type(d.vmx_basic);
    // Step 9: EPT paging structures in write-back memory when EPTP may say WB.
    d.ept_memory_type = if d.ept_vpid_cap & ept_vpid::EPTP_WB != 0 { MEMORY_TYPE_WB } else { MEMORY_TYPE_UC };
    d
}

#[cfg(test)]
mod tests {
    use super::msr::*;
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// An MSR file that records which MSRs were read and fails on absent ones.
    struct Msrs(BTreeMap<u32, u64>, Vec<u32>);
    impl Msrs {
        fn read(&mut self, n: u32) -> u64 {
            self.1.push(n);
            *self.0.get(&n).unwrap_or_else(|| panic!("read of absent MSR {n:#x} (#GP on hardware)"))
        }
    }

    fn skylake() -> Msrs {
        Msrs(
            BTreeMap::from([
                (IA32_VMX_BASIC, 0x00da_0400_0000_0004),
                (IA32_VMX_PINBASED_CTLS, 0x0000_007f_0000_0016),
                (IA32_VMX_PROCBASED_CTLS, 0xfff9_fffe_0401_e172),
                (IA32_VMX_EXIT_CTLS, 0x01ff_ffff_0003_6dff),
                (IA32_VMX_ENTRY_CTLS, 0x0003_ffff_0000_11ff),
                (IA32_VMX_MISC, 0x0000_0000_7004_c1e7),
                (IA32_VMX_CR0_FIXED0, 0x8000_0021),
                (IA32_VMX_CR0_FIXED1, 0xffff_ffff),
                (IA32_VMX_CR4_FIXED0, 0x2000),
                (IA32_VMX_CR4_FIXED1, 0x0037_27ff),
                (IA32_VMX_VMCS_ENUM, 0x2e),
                (IA32_VMX_PROCBASED_CTLS2, 0x0055_1cfe_0000_0000),
                (IA32_VMX_EPT_VPID_CAP, 0x0000_0f01_0673_4141),
                (IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_007f_0000_0016),
                (IA32_VMX_TRUE_PROCBASED_CTLS, 0xfff9_fffe_0400_6172),
                (IA32_VMX_TRUE_EXIT_CTLS, 0x01ff_ffff_0003_6dfb),
                (IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_ffff_0000_11fb),
            ]),
            Vec::new(),
        )
    }

    #[test]
    fn true_msrs_replace_the_controls_when_basic_bit_55() {
        let mut m = skylake();
        let d = get_vmx_global_data(&mut |n| m.read(n));
        assert!(d.true_flag);
        assert_eq!(d.processor_based_ctls, 0xfff9_fffe_0400_6172);
        assert_eq!(d.exit_ctls, 0x01ff_ffff_0003_6dfb);
        assert_eq!(d.entry_ctls, 0x0003_ffff_0000_11fb);
        assert_eq!(d.cr0_fixed_mask, 0x8000_0021);
        assert_eq!(d.cr4_fixed_mask, 0x2000);
        assert_eq!(d.vmcs_memory_type, MEMORY_TYPE_WB);
        assert_eq!(d.ept_memory_type, MEMORY_TYPE_WB);
        assert!(d.has_ept() && d.has_vpid());
        assert_eq!(d.vm_function, 0, "VMFUNC not allowed-1 here, so not read");
        assert!(!m.1.contains(&IA32_VMX_VMFUNC));
    }

    #[test]
    fn without_bit_55_the_default_msrs_stay_and_true_ones_are_not_read() {
        let mut m = skylake();
        m.0.insert(IA32_VMX_BASIC, 0x00da_0400_0000_0004 & !(1 << 55));
        let d = get_vmx_global_data(&mut |n| m.read(n));
        assert!(!d.true_flag);
        assert_eq!(d.processor_based_ctls, 0xfff9_fffe_0401_e172);
        assert!(m.1.iter().all(|&n| !(IA32_VMX_TRUE_PINBASED_CTLS..=IA32_VMX_TRUE_ENTRY_CTLS).contains(&n)));
    }

    #[test]
    fn optional_msrs_are_read_only_when_they_exist() {
        // A Core 2-like CPU: no secondary controls at all.
        let mut m = skylake();
        m.0.insert(IA32_VMX_BASIC, 0x005a_0800_0000_000d);
        m.0.insert(IA32_VMX_PROCBASED_CTLS, 0x7ff9_fffe_0401_e172);
        m.0.remove(&IA32_VMX_PROCBASED_CTLS2);
        m.0.remove(&IA32_VMX_EPT_VPID_CAP);
        let d = get_vmx_global_data(&mut |n| m.read(n));
        assert_eq!((d.processor_based_ctls2, d.ept_vpid_cap, d.vm_function), (0, 0, 0));
        assert_eq!(d.ept_memory_type, MEMORY_TYPE_UC, "no EPT capability: UC");
        assert_eq!(d.vmcs_memory_type, MEMORY_TYPE_WB);
        assert!(!d.has_ept());
    }

    #[test]
    fn vpid_without_ept_still_reads_the_capability_msr() {
        let mut m = skylake();
        m.0.insert(IA32_VMX_PROCBASED_CTLS2, 0x0000_0020_0000_0000);
        let d = get_vmx_global_data(&mut |n| m.read(n));
        assert!(!d.has_ept() && d.has_vpid());
        assert_eq!(d.ept_vpid_cap, 0x0000_0f01_0673_4141);
    }

    #[test]
    fn vmfunc_read_when_allowed() {
        let mut m = skylake();
        m.0.insert(IA32_VMX_PROCBASED_CTLS2, 0x0055_1cfe_0000_0000 | (1 << 45));
        m.0.insert(IA32_VMX_VMFUNC, 1);
        let d = get_vmx_global_data(&mut |n| m.read(n));
        assert_eq!(d.vm_function, 1);
    }

    #[test]
    fn ept_and_invalidation_choices() {
        let mut m = skylake();
        let d = get_vmx_global_data(&mut |n| m.read(n));
        assert!(d.ept_usable());
        assert_eq!(d.invept_all_contexts(), Some(INV_ALL_CONTEXTS));
        assert_eq!(d.invvpid_type(), Some(INV_SINGLE_CONTEXT));
        assert_eq!(d.invvpid_all_contexts(), Some(INV_ALL_CONTEXTS));
        // Only all-context INVVPID; no 4-level EPT walks.
        let d2 = VmxGlobalData { ept_vpid_cap: (1 << 32) | (1 << 42) | (1 << 14), ..d };
        assert_eq!(d2.invvpid_type(), Some(INV_ALL_CONTEXTS));
        assert!(!d2.ept_usable());
        assert_eq!(d2.invept_all_contexts(), None);
        // VPID without INVVPID types: no flush type, so VPID is not used.
        let d3 = VmxGlobalData { ept_vpid_cap: 1 << 32, ..d };
        assert_eq!((d3.invvpid_type(), d3.invvpid_all_contexts()), (None, None));
        let no_secondary = VmxGlobalData { processor_based_ctls2: 0, ..d };
        assert!(!no_secondary.ept_usable() && no_secondary.invvpid_type().is_none());
    }

    #[test]
    fn basic_fields() {
        let b = 0x00da_0400_0000_0004;
        assert_eq!(basic::revision_id(b), 4);
        assert_eq!(basic::region_size(b), 0x400);
        assert!(!basic::addresses_32bit_only(b));
        assert!(basic::addresses_32bit_only(b | 1 << 48));
        assert_eq!(basic::memory_type(b), 6);
    }
}
