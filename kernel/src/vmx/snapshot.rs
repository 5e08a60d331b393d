//! The current VMCS as a snapshot (VMREAD of every field the CPU supports, up
//! to IA32_VMX_VMCS_ENUM's highest index), the CPU facts the entry checker
//! needs, and the checker's report: after a failed VM entry, and before
//! every VMLAUNCH with the option `vmcheck`.

use crate::pcb;
use alloc::vec::Vec;
use core::arch::asm;
use hvlogic::entry_check::fields::Snapshot;
use hvlogic::entry_check::{self, CpuFacts, Input, Verdict, Violation, DEBUGCTL_DEFINED};
use hvlogic::vmx_global::VmxGlobalData;
use log::{error, info};

use super::instructions::vmread;

/// VMREAD of every field in the table up to the CPU's highest index; a
/// field the CPU does not support fails its VMREAD and stays absent.
pub fn take(vmcs_enum: u64) -> Snapshot {
    // SAFETY: in VMX root operation with a current VMCS (the callers' condition);
    // VMREAD of an unsupported field fails with VMfailValid and changes nothing.
    Snapshot::read(vmcs_enum, |field| unsafe { vmread(field) }.ok())
}

/// The current-VMCS pointer (SDM Vol. 3C "VMPTRST—Store Pointer to
/// Virtual-Machine Control Structure").
pub fn current_vmcs() -> u64 {
    let mut pointer: u64 = 0;
    // SAFETY: VMPTRST stores 8 bytes to the given address; called in VMX root operation.
    unsafe { asm!("vmptrst qword ptr [{p}]", p = in(reg) &mut pointer, options(nostack)) };
    pointer
}

/// What the checker must know of this CPU besides its capability MSRs.
pub fn facts(maxphyaddr: u32) -> CpuFacts {
    let ext = raw_cpuid::cpuid!(0x8000_0000).eax;
    let widths = if ext >= 0x8000_0008 { raw_cpuid::cpuid!(0x8000_0008).eax } else { 0x3024 };
    let ext1_edx = if ext >= 0x8000_0001 { raw_cpuid::cpuid!(0x8000_0001).edx } else { 0 };
    let max = raw_cpuid::cpuid!(0).eax;
    let perf = if max >= 0xa {
        let a = raw_cpuid::cpuid!(0xa);
        CpuFacts::perf_global_ctrl_valid_from_cpuid(a.eax, a.edx)
    } else {
        0
    };
    let leaf7_ebx = if max >= 7 { raw_cpuid::cpuid!(7, 0).ebx } else { 0 };
    CpuFacts {
        maxphyaddr: maxphyaddr as u8,
        linear_width: ((widths >> 8) & 0xff) as u8,
        efer_valid: CpuFacts::efer_valid_from_cpuid(ext1_edx),
        perf_global_ctrl_valid: perf,
        debugctl_valid: DEBUGCTL_DEFINED,
        ia32e_mode: true,
        sgx: leaf7_ebx & (1 << 2) != 0,
        rtm: leaf7_ebx & (1 << 11) != 0,
        current_vmcs: current_vmcs(),
    }
}

/// Run the checker on a snapshot.
pub fn check(v: &Snapshot, caps: &VmxGlobalData, cpu: CpuFacts) -> Vec<Violation> {
    check_skipping(v, caps, cpu, &[])
}

/// Run the checker without the rules in `skip` (for the known Bochs departures).
pub fn check_skipping(v: &Snapshot, caps: &VmxGlobalData, cpu: CpuFacts, skip: &[&str]) -> Vec<Violation> {
    let input = Input {
        vmcs: v,
        caps,
        cpu,
        memory: &crate::memory::read_physical,
        msr_writable: &hvlogic::entry_fuzz::msr_writable,
        skip,
    };
    entry_check::check(&input)
}

/// This CPU's capability fields and physical-address width.
fn this_cpu() -> (VmxGlobalData, u32) {
    let own = pcb::this_cpu().own();
    (own.vmx, own.maxphyaddr)
}

/// Check the current VMCS; returns the violations and the checker's verdict.
pub fn check_current() -> (Vec<Violation>, Verdict) {
    let (caps, maxphyaddr) = this_cpu();
    let v = take(caps.vmcs_enum);
    let violations = check(&v, &caps, facts(maxphyaddr));
    let verdict = Verdict::from_violations(&violations);
    (violations, verdict)
}

/// After a failed VM entry: every rule the VMCS breaks, one ERROR line each.
pub fn explain_failure() {
    let (violations, verdict) = check_current();
    if violations.is_empty() {
        error!("entry check: the VMCS breaks no rule the checker knows (it predicts the entry succeeds)");
        return;
    }
    for v in &violations {
        error!("{v}");
    }
    error!("entry check: {} broken, the checker predicts {verdict}", Rules(violations.len()));
}

/// `vmcheck`: check before VMLAUNCH, so a mistake is named before the CPU sees it.
pub fn vmcheck() {
    let (violations, verdict) = check_current();
    if violations.is_empty() {
        info!("vmcheck: the VMCS passes every entry check");
        return;
    }
    for v in &violations {
        error!("vmcheck: {v}");
    }
    error!("vmcheck: {} broken, the checker predicts {verdict}", Rules(violations.len()));
}

struct Rules(usize);

impl core::fmt::Display for Rules {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} rule{}", self.0, if self.0 == 1 { "" } else { "s" })
    }
}
