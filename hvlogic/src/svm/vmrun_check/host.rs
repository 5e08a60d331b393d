//! The host-side preconditions of VMRUN: what makes it fault (#UD, #GP(0))
//! before it saves or loads anything, so no VMCB check runs (APM Vol. 2
//! §15.5.1 "Basic Operation": "VMRUN is available only at CPL 0. A #GP(0)
//! exception is raised if the CPL is greater than 0. Furthermore, the
//! processor must be in protected mode and EFER.SVME must be set to 1,
//! otherwise, a #UD exception is raised"; §15.30.4 "VM_HSAVE_PA MSR": "a
//! VMRUN that is attempted while the HSAVE_PA is 0 will fail with a #GP(0)
//! exception"; the VMRUN instruction page: #GP(0) when rAX is not 4 KiB
//! aligned or lies above the maximum supported physical address).
//!
//! Real and virtual-8086 mode are not protected mode (APM Vol. 2 §1.2
//! "Modes of Operation": legacy mode's sub-modes are protected,
//! virtual-8086 and real mode). #UD comes before #GP: the instruction is not
//! recognized before its privilege is checked.

use super::{Section, SEC_BASIC, SEC_HSAVE, SEC_VMRUN_INSN};
use alloc::vec::Vec;
use core::fmt;

/// The exception VMRUN raises instead of running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// #UD: SVM not enabled, or not in protected mode.
    Ud,
    /// #GP(0): CPL > 0, a bad VMCB address, VM_HSAVE_PA 0.
    Gp,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Ud => "#UD",
            Fault::Gp => "#GP(0)",
        })
    }
}

/// The host's operating mode at VMRUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMode {
    Real,
    Virtual8086,
    /// Protected mode, or long mode (64-bit or compatibility).
    Protected,
}

/// What the host-side preconditions look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub mode: HostMode,
    pub cpl: u8,
    /// The host's EFER.SVME.
    pub svme: bool,
    /// rAX: the VMCB's physical address (as the effective address size cut it).
    pub vmcb_pa: u64,
    /// The VM_HSAVE_PA MSR.
    pub hsave_pa: u64,
    /// Physical-address width, CPUID Fn8000_0008_EAX[7:0].
    pub maxphyaddr: u8,
}

/// One host-side rule.
#[derive(Debug, PartialEq, Eq)]
pub struct HostRule {
    /// Stable id, e.g. `svm.host.cpl`.
    pub id: &'static str,
    pub section: Section,
    pub text: &'static str,
    pub fault: Fault,
}

/// A host-side rule the VMRUN breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostViolation {
    pub rule: &'static HostRule,
}

impl fmt::Display for HostViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.rule;
        write!(f, "vmrun check {}: {} ({}, {})", r.id, r.text, r.fault, r.section)
    }
}

macro_rules! host_rule {
    ($name:ident, $id:literal, $sec:expr, $fault:ident, $text:literal) => {
        pub static $name: HostRule = HostRule { id: $id, section: $sec, text: $text, fault: Fault::$fault };
    };
}

host_rule!(SVME, "svm.host.svme", SEC_BASIC, Ud, "VMRUN needs the host's EFER.SVME = 1");
host_rule!(
    PROTECTED_MODE,
    "svm.host.protected_mode",
    SEC_BASIC,
    Ud,
    "VMRUN needs protected or long mode (not real or virtual-8086 mode)"
);
host_rule!(CPL, "svm.host.cpl", SEC_BASIC, Gp, "VMRUN needs CPL 0");
host_rule!(
    VMCB_ALIGNMENT,
    "svm.host.vmcb_alignment",
    SEC_VMRUN_INSN,
    Gp,
    "The VMCB address in rAX must be 4 KiB aligned"
);
host_rule!(
    VMCB_WIDTH,
    "svm.host.vmcb_width",
    SEC_VMRUN_INSN,
    Gp,
    "The VMCB address in rAX must lie within the physical-address width"
);
host_rule!(HSAVE_ZERO, "svm.host.hsave_zero", SEC_HSAVE, Gp, "VM_HSAVE_PA must not be 0");

pub static RULES: &[&HostRule] = &[&SVME, &PROTECTED_MODE, &CPL, &VMCB_ALIGNMENT, &VMCB_WIDTH, &HSAVE_ZERO];

/// A host rule by its id.
pub fn rule(id: &str) -> Option<&'static HostRule> {
    RULES.iter().copied().find(|r| r.id == id)
}

/// Every host-side precondition VMRUN breaks, #UD ones first.
pub fn check(h: &Host) -> Vec<HostViolation> {
    let width_ok = h.maxphyaddr >= 64 || h.vmcb_pa >> h.maxphyaddr == 0;
    [
        (h.svme, &SVME),
        (h.mode == HostMode::Protected, &PROTECTED_MODE),
        (h.cpl == 0, &CPL),
        (h.vmcb_pa & 0xfff == 0, &VMCB_ALIGNMENT),
        (width_ok, &VMCB_WIDTH),
        (h.hsave_pa != 0, &HSAVE_ZERO),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, rule)| HostViolation { rule })
    .collect()
}

/// The fault the violations make VMRUN raise: #UD before #GP.
pub fn fault(violations: &[HostViolation]) -> Option<Fault> {
    let has = |f| violations.iter().any(|v| v.rule.fault == f);
    if has(Fault::Ud) {
        Some(Fault::Ud)
    } else if has(Fault::Gp) {
        Some(Fault::Gp)
    } else {
        None
    }
}
