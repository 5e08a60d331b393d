//! Checks on the host-state area: SDM Vol. 3C §27.2.2 "Checks on Host Control
//! Registers, MSRs, and SSP", §27.2.3 "Checks on Host Segment and
//! Descriptor-Table Registers", §27.2.4 "Checks Related to Address-Space
//! Size". A failure is VMfailValid with VM-instruction error 8.

use super::fields::enc;
use super::{rule_def, Ctx, Out, Rule};
use super::{SEC_HOST_ADDRESS_SPACE as ASZ, SEC_HOST_CR_MSR as CR, SEC_HOST_SEGMENTS as SEG};
use crate::controls::{entry, exit};

rule_def!(
    CR0_FIXED,
    "host.cr0.fixed",
    CR,
    Host,
    "The host CR0 must have every bit IA32_VMX_CR0_FIXED0 sets and none IA32_VMX_CR0_FIXED1 clears"
);
rule_def!(
    CR4_FIXED,
    "host.cr4.fixed",
    CR,
    Host,
    "The host CR4 must have every bit IA32_VMX_CR4_FIXED0 sets and none IA32_VMX_CR4_FIXED1 clears"
);
rule_def!(CR3_WIDTH, "host.cr3.width", CR, Host, "Host CR3 bits beyond the physical-address width must be 0");
rule_def!(
    SYSENTER_CANONICAL,
    "host.sysenter.canonical",
    CR,
    Host,
    "The host IA32_SYSENTER_ESP and IA32_SYSENTER_EIP fields must be canonical"
);
rule_def!(
    PERF_GLOBAL_CTRL,
    "host.perf_global_ctrl.reserved",
    CR,
    Host,
    "If \"load IA32_PERF_GLOBAL_CTRL\" (exit) is 1, reserved bits of the host IA32_PERF_GLOBAL_CTRL must be 0"
);
rule_def!(
    PAT,
    "host.pat.memory_types",
    CR,
    Host,
    "If \"load IA32_PAT\" (exit) is 1, each byte of the host IA32_PAT must be a valid memory type (0, 1, 4, 5, 6, 7)"
);
rule_def!(
    EFER_RESERVED,
    "host.efer.reserved",
    CR,
    Host,
    "If \"load IA32_EFER\" (exit) is 1, reserved bits of the host IA32_EFER must be 0"
);
rule_def!(
    EFER_LMA_LME,
    "host.efer.lma_lme",
    CR,
    Host,
    "If \"load IA32_EFER\" (exit) is 1, host IA32_EFER.LMA and LME must each equal \"host address-space size\""
);
rule_def!(
    SELECTOR_RPL_TI,
    "host.selector.rpl_ti",
    SEG,
    Host,
    "In the host ES, CS, SS, DS, FS, GS and TR selectors, RPL (bits 1:0) and TI (bit 2) must be 0"
);
rule_def!(CS_NULL, "host.cs.null", SEG, Host, "The host CS selector must not be 0000H");
rule_def!(TR_NULL, "host.tr.null", SEG, Host, "The host TR selector must not be 0000H");
rule_def!(
    SS_NULL,
    "host.ss.null",
    SEG,
    Host,
    "The host SS selector must not be 0000H if \"host address-space size\" is 0"
);
rule_def!(
    BASE_CANONICAL,
    "host.base.canonical",
    SEG,
    Host,
    "The host FS, GS, GDTR, IDTR and TR base addresses must be canonical"
);
rule_def!(
    IA32E_HOST_SIZE,
    "host.address_space.size",
    ASZ,
    Host,
    "\"Host address-space size\" must be 1 on a logical processor in IA-32e mode, and 0 outside it"
);
rule_def!(
    HOST_SIZE_PAE,
    "host.address_space.pae",
    ASZ,
    Host,
    "If \"host address-space size\" is 1, the host CR4.PAE must be 1"
);
rule_def!(
    HOST_SIZE_RIP,
    "host.address_space.rip",
    ASZ,
    Host,
    "If \"host address-space size\" is 1 the host RIP must be canonical; if 0, RIP bits 63:32 must be 0"
);
rule_def!(
    HOST_SIZE_0,
    "host.address_space.legacy",
    ASZ,
    Host,
    "If \"host address-space size\" is 0, \"IA-32e mode guest\" and the host CR4.PCIDE must be 0"
);

pub static RULES: &[&Rule] = &[
    &CR0_FIXED,
    &CR4_FIXED,
    &CR3_WIDTH,
    &SYSENTER_CANONICAL,
    &PERF_GLOBAL_CTRL,
    &PAT,
    &EFER_RESERVED,
    &EFER_LMA_LME,
    &SELECTOR_RPL_TI,
    &CS_NULL,
    &TR_NULL,
    &SS_NULL,
    &BASE_CANONICAL,
    &IA32E_HOST_SIZE,
    &HOST_SIZE_PAE,
    &HOST_SIZE_RIP,
    &HOST_SIZE_0,
];

/// `v` has the bits FIXED0 sets and none FIXED1 clears (SDM Vol. 3D §A.7
/// "VMX-Fixed Bits in CR0", §A.8 "VMX-Fixed Bits in CR4").
pub fn fixed_ok(v: u64, fixed0: u64, fixed1: u64) -> bool {
    v & fixed0 == fixed0 && v & !fixed1 == 0
}

/// Every byte of a PAT value is a valid memory type (SDM Vol. 3A §12.12.2
/// "IA32_PAT MSR").
pub fn pat_ok(pat: u64) -> bool {
    (0..8).all(|i| matches!((pat >> (i * 8)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7))
}

pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PCIDE: u64 = 1 << 17;

pub(crate) fn check(c: &Ctx, out: &mut Out<'_>) {
    let caps = c.caps;
    let cr4 = c.get(enc::HOST_CR4);
    out.check(fixed_ok(c.get(enc::HOST_CR0), caps.cr0_fixed0, caps.cr0_fixed1), &CR0_FIXED, "");
    out.check(fixed_ok(cr4, caps.cr4_fixed0, caps.cr4_fixed1), &CR4_FIXED, "");
    out.check(c.within_width(c.get(enc::HOST_CR3)), &CR3_WIDTH, "");
    out.check(c.canonical(c.get(enc::HOST_IA32_SYSENTER_ESP)), &SYSENTER_CANONICAL, "IA32_SYSENTER_ESP");
    out.check(c.canonical(c.get(enc::HOST_IA32_SYSENTER_EIP)), &SYSENTER_CANONICAL, "IA32_SYSENTER_EIP");
    if c.exit_has(exit::LOAD_PERF_GLOBAL_CTRL) {
        let v = c.get(enc::HOST_IA32_PERF_GLOBAL_CTRL);
        out.check(v & !c.cpu.perf_global_ctrl_valid == 0, &PERF_GLOBAL_CTRL, "");
    }
    if c.exit_has(exit::LOAD_PAT) {
        out.check(pat_ok(c.get(enc::HOST_IA32_PAT)), &PAT, "");
    }
    let size = c.exit_has(exit::HOST_ADDRESS_SPACE_SIZE);
    if c.exit_has(exit::LOAD_EFER) {
        let efer = c.get(enc::HOST_IA32_EFER);
        out.check(efer & !c.cpu.efer_valid == 0, &EFER_RESERVED, "");
        out.check((efer & EFER_LMA != 0) == size && (efer & EFER_LME != 0) == size, &EFER_LMA_LME, "");
    }

    // SDM Vol. 3C §27.2.3 "Checks on Host Segment and Descriptor-Table Registers".
    for (e, name) in [
        (enc::HOST_ES_SELECTOR, "ES"),
        (enc::HOST_CS_SELECTOR, "CS"),
        (enc::HOST_SS_SELECTOR, "SS"),
        (enc::HOST_DS_SELECTOR, "DS"),
        (enc::HOST_FS_SELECTOR, "FS"),
        (enc::HOST_GS_SELECTOR, "GS"),
        (enc::HOST_TR_SELECTOR, "TR"),
    ] {
        out.check(c.get(e) & 7 == 0, &SELECTOR_RPL_TI, name);
    }
    out.check(c.get(enc::HOST_CS_SELECTOR) != 0, &CS_NULL, "");
    out.check(c.get(enc::HOST_TR_SELECTOR) != 0, &TR_NULL, "");
    if !size {
        out.check(c.get(enc::HOST_SS_SELECTOR) != 0, &SS_NULL, "");
    }
    for (e, name) in [
        (enc::HOST_FS_BASE, "FS"),
        (enc::HOST_GS_BASE, "GS"),
        (enc::HOST_GDTR_BASE, "GDTR"),
        (enc::HOST_IDTR_BASE, "IDTR"),
        (enc::HOST_TR_BASE, "TR"),
    ] {
        out.check(c.canonical(c.get(e)), &BASE_CANONICAL, name);
    }

    // SDM Vol. 3C §27.2.4 "Checks Related to Address-Space Size".
    if c.cpu.ia32e_mode {
        out.check(size, &IA32E_HOST_SIZE, "");
    } else {
        // Outside IA-32e mode "IA-32e mode guest" must be 0 too: HOST_SIZE_0 says so once size is 0.
        out.check(!size, &IA32E_HOST_SIZE, "");
    }
    let rip = c.get(enc::HOST_RIP);
    if size {
        out.check(cr4 & CR4_PAE != 0, &HOST_SIZE_PAE, "");
        out.check(c.canonical(rip), &HOST_SIZE_RIP, "");
    } else {
        out.check(!c.entry_has(entry::IA32E_MODE_GUEST) && cr4 & CR4_PCIDE == 0, &HOST_SIZE_0, "");
        out.check(rip >> 32 == 0, &HOST_SIZE_RIP, "");
    }
}
