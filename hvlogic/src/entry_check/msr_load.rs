//! SDM Vol. 3C §27.4 "Loading MSRs": the VM-entry MSR-load area, entry by
//! entry (16 bytes each: bits 31:0 the MSR index, 63:32 reserved, 127:64
//! the value; SDM Vol. 3C §25.8.2 "VM-Entry Controls for MSRs", Table 25-15
//! "Format of an MSR Entry"). The first bad entry fails the VM entry with
//! exit reason 34 and its index, counted from 1, as the exit qualification.

use super::fields::enc;
use super::{rule_def, Ctx, Out, Rule, Violation, SEC_MSR_LOADING as SEC};

rule_def!(
    FS_GS_BASE,
    "msr_load.fs_gs_base",
    SEC,
    MsrLoad,
    "An MSR-load entry must not name IA32_FS_BASE (C0000100H) or IA32_GS_BASE (C0000101H)"
);
rule_def!(
    X2APIC,
    "msr_load.x2apic",
    SEC,
    MsrLoad,
    "An MSR-load entry must not name an x2APIC MSR (bits 31:8 = 000008H)"
);
rule_def!(
    SMM_ONLY,
    "msr_load.smm_only",
    SEC,
    MsrLoad,
    "Outside SMM, an MSR-load entry must not name an MSR writable only in SMM (IA32_SMM_MONITOR_CTL, 9BH)"
);
rule_def!(RESERVED, "msr_load.reserved", SEC, MsrLoad, "Bits 63:32 of an MSR-load entry must be 0");
rule_def!(
    WRMSR_GP,
    "msr_load.wrmsr_faults",
    SEC,
    MsrLoad,
    "An MSR-load entry must not hold a value whose WRMSR at CPL 0 would raise #GP (for example an MSR the CPU lacks)"
);
rule_def!(
    UNREADABLE,
    "msr_load.unreadable",
    SEC,
    MsrLoad,
    "The MSR-load area must be readable memory (the checker could not read this entry)"
);

pub static RULES: &[&Rule] = &[&FS_GS_BASE, &X2APIC, &SMM_ONLY, &RESERVED, &WRMSR_GP, &UNREADABLE];

pub const IA32_FS_BASE: u32 = 0xc000_0100;
pub const IA32_GS_BASE: u32 = 0xc000_0101;
pub const IA32_SMM_MONITOR_CTL: u32 = 0x9b;

/// The first bad entry decides the failure; entries after it are never loaded.
pub(crate) fn check(c: &Ctx, out: &mut Out<'_>) {
    let count = c.get(enc::ENTRY_MSR_LOAD_COUNT);
    let base = c.get(enc::ENTRY_MSR_LOAD_ADDR);
    // A long area is bounded here only to keep the check's time bounded.
    for i in 0..count.min(4096) {
        let at = base + i * 16;
        let (Some(head), Some(value)) = ((c.memory)(at), (c.memory)(at + 8)) else {
            out.list.push(Violation { rule: &UNREADABLE, what: "", entry: i as u32 + 1 });
            return;
        };
        let index = head as u32;
        let bad: Option<&'static Rule> = if index == IA32_FS_BASE || index == IA32_GS_BASE {
            Some(&FS_GS_BASE)
        } else if index >> 8 == 0x8 {
            Some(&X2APIC)
        } else if index == IA32_SMM_MONITOR_CTL {
            Some(&SMM_ONLY)
        } else if head >> 32 != 0 {
            Some(&RESERVED)
        } else if (c.msr_writable)(index, value) == Some(false) {
            Some(&WRMSR_GP)
        } else {
            None
        };
        if let Some(rule) = bad.filter(|r| !out.skips(r)) {
            out.list.push(Violation { rule, what: "", entry: i as u32 + 1 });
            return;
        }
    }
}
