//! SDM Vol. 3C §27.3.1.1 "Checks on Guest Control Registers, Debug
//! Registers, and MSRs". A failure is a VM exit with reason 33.

use super::fields::enc;
use super::host::{self, fixed_ok, pat_ok, CR4_PAE, CR4_PCIDE};
use super::{rule_def, Ctx, Out, Rule, SEC_GUEST_CR_MSR as SEC};
use crate::controls::entry;

rule_def!(CR0_FIXED, "guest.cr0.fixed", SEC, Guest,
    "The guest CR0 must have every bit IA32_VMX_CR0_FIXED0 sets (PE and PG exempt under unrestricted guest) and none IA32_VMX_CR0_FIXED1 clears");
rule_def!(CR0_PG_PE, "guest.cr0.pg_without_pe", SEC, Guest, "If guest CR0.PG is 1, CR0.PE must be 1");
rule_def!(
    CR4_FIXED,
    "guest.cr4.fixed",
    SEC,
    Guest,
    "The guest CR4 must have every bit IA32_VMX_CR4_FIXED0 sets and none IA32_VMX_CR4_FIXED1 clears"
);
rule_def!(CR4_CET_WP, "guest.cr4.cet_without_wp", SEC, Guest, "If guest CR4.CET is 1, CR0.WP must be 1");
rule_def!(
    DEBUGCTL,
    "guest.debugctl.reserved",
    SEC,
    Guest,
    "If \"load debug controls\" is 1, reserved bits of the guest IA32_DEBUGCTL must be 0"
);
rule_def!(
    IA32E_PG_PAE,
    "guest.ia32e.paging",
    SEC,
    Guest,
    "If \"IA-32e mode guest\" is 1, guest CR0.PG and CR4.PAE must be 1"
);
rule_def!(
    PCIDE,
    "guest.cr4.pcide_outside_ia32e",
    SEC,
    Guest,
    "If \"IA-32e mode guest\" is 0, guest CR4.PCIDE must be 0"
);
rule_def!(CR3_WIDTH, "guest.cr3.width", SEC, Guest, "Guest CR3 bits beyond the physical-address width must be 0");
rule_def!(
    DR7_HIGH,
    "guest.dr7.high",
    SEC,
    Guest,
    "If \"load debug controls\" is 1, bits 63:32 of the guest DR7 must be 0"
);
rule_def!(
    SYSENTER_CANONICAL,
    "guest.sysenter.canonical",
    SEC,
    Guest,
    "The guest IA32_SYSENTER_ESP and IA32_SYSENTER_EIP fields must be canonical"
);
rule_def!(
    PERF_GLOBAL_CTRL,
    "guest.perf_global_ctrl.reserved",
    SEC,
    Guest,
    "If \"load IA32_PERF_GLOBAL_CTRL\" (entry) is 1, reserved bits of the guest IA32_PERF_GLOBAL_CTRL must be 0"
);
rule_def!(
    PAT,
    "guest.pat.memory_types",
    SEC,
    Guest,
    "If \"load IA32_PAT\" (entry) is 1, each byte of the guest IA32_PAT must be a valid memory type (0, 1, 4, 5, 6, 7)"
);
rule_def!(
    EFER_RESERVED,
    "guest.efer.reserved",
    SEC,
    Guest,
    "If \"load IA32_EFER\" (entry) is 1, reserved bits of the guest IA32_EFER must be 0"
);
rule_def!(
    EFER_LMA,
    "guest.efer.lma",
    SEC,
    Guest,
    "If \"load IA32_EFER\" (entry) is 1, guest IA32_EFER.LMA must equal \"IA-32e mode guest\""
);
rule_def!(
    EFER_LME,
    "guest.efer.lme",
    SEC,
    Guest,
    "If \"load IA32_EFER\" (entry) is 1 and guest CR0.PG is 1, IA32_EFER.LME must equal \"IA-32e mode guest\""
);
rule_def!(
    BNDCFGS,
    "guest.bndcfgs",
    SEC,
    Guest,
    "If \"load IA32_BNDCFGS\" is 1, guest IA32_BNDCFGS bits 11:2 must be 0 and bits 63:12 a canonical address"
);

pub static RULES: &[&Rule] = &[
    &CR0_FIXED,
    &CR0_PG_PE,
    &CR4_FIXED,
    &CR4_CET_WP,
    &DEBUGCTL,
    &IA32E_PG_PAE,
    &PCIDE,
    &CR3_WIDTH,
    &DR7_HIGH,
    &SYSENTER_CANONICAL,
    &PERF_GLOBAL_CTRL,
    &PAT,
    &EFER_RESERVED,
    &EFER_LMA,
    &EFER_LME,
    &BNDCFGS,
];

pub const CR0_PE: u64 = 1;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_CET: u64 = 1 << 23;

pub(crate) fn check(c: &Ctx, out: &mut Out<'_>) {
    let caps = c.caps;
    let cr0 = c.get(enc::GUEST_CR0);
    let cr4 = c.get(enc::GUEST_CR4);
    let ia32e = c.ia32e_guest();
    let exempt = if c.unrestricted_guest() { CR0_PE | CR0_PG } else { 0 };
    out.check(fixed_ok(cr0, caps.cr0_fixed0 & !exempt, caps.cr0_fixed1), &CR0_FIXED, "");
    out.check(cr0 & CR0_PG == 0 || cr0 & CR0_PE != 0, &CR0_PG_PE, "");
    out.check(fixed_ok(cr4, caps.cr4_fixed0, caps.cr4_fixed1), &CR4_FIXED, "");
    out.check(cr4 & CR4_CET == 0 || cr0 & CR0_WP != 0, &CR4_CET_WP, "");
    let debug = c.entry_has(entry::LOAD_DEBUG_CONTROLS);
    if debug {
        out.check(c.get(enc::GUEST_IA32_DEBUGCTL) & !c.cpu.debugctl_valid == 0, &DEBUGCTL, "");
    }
    if ia32e {
        out.check(cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0, &IA32E_PG_PAE, "");
    } else {
        out.check(cr4 & CR4_PCIDE == 0, &PCIDE, "");
    }
    out.check(c.within_width(c.get(enc::GUEST_CR3)), &CR3_WIDTH, "");
    if debug {
        out.check(c.get(enc::GUEST_DR7) >> 32 == 0, &DR7_HIGH, "");
    }
    out.check(c.canonical(c.get(enc::GUEST_IA32_SYSENTER_ESP)), &SYSENTER_CANONICAL, "IA32_SYSENTER_ESP");
    out.check(c.canonical(c.get(enc::GUEST_IA32_SYSENTER_EIP)), &SYSENTER_CANONICAL, "IA32_SYSENTER_EIP");
    if c.entry_has(entry::LOAD_PERF_GLOBAL_CTRL) {
        let v = c.get(enc::GUEST_IA32_PERF_GLOBAL_CTRL);
        out.check(v & !c.cpu.perf_global_ctrl_valid == 0, &PERF_GLOBAL_CTRL, "");
    }
    if c.entry_has(entry::LOAD_PAT) {
        out.check(pat_ok(c.get(enc::GUEST_IA32_PAT)), &PAT, "");
    }
    if c.entry_has(entry::LOAD_EFER) {
        let efer = c.get(enc::GUEST_IA32_EFER);
        out.check(efer & !c.cpu.efer_valid == 0, &EFER_RESERVED, "");
        out.check((efer & host::EFER_LMA != 0) == ia32e, &EFER_LMA, "");
        if cr0 & CR0_PG != 0 {
            out.check((efer & host::EFER_LME != 0) == ia32e, &EFER_LME, "");
        }
    }
    if c.entry_has(entry::LOAD_BNDCFGS) {
        let b = c.get(enc::GUEST_IA32_BNDCFGS);
        out.check(b & 0xffc == 0 && c.canonical(b & !0xfff), &BNDCFGS, "");
    }
}
