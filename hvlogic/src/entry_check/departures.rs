//! Where Bochs 2.7 (the independent implementation the entry fuzzer compares
//! with) departs from the SDM. The checker follows the SDM; a fuzz mutation
//! whose disagreement one of these explains counts as "known", not as a
//! disagreement. Each entry quotes the SDM text Bochs does not follow; the
//! list and the measured counts are in docs/entry-checker.md.

use super::fields::{enc, Snapshot};
use super::verdict::{Outcome, Verdict};
use super::{Stage, Violation};
use alloc::vec::Vec;

/// A check Bochs makes that the SDM does not, on the VMCS.
pub type ExtraCheck = fn(&Snapshot) -> bool;

/// One known departure.
#[derive(Debug)]
pub struct Departure {
    /// Stable id, e.g. `bochs.hlt_events`.
    pub id: &'static str,
    /// Rules Bochs does not check (their violations are dropped).
    pub ignores: &'static [&'static str],
    /// A rule Bochs reports with another exit qualification: (rule, stage it uses).
    pub reports_as: Option<(&'static str, Stage)>,
    /// A check Bochs makes that the SDM does not: when it holds, Bochs fails
    /// the entry at that stage.
    pub adds: Option<(ExtraCheck, Stage)>,
    /// The SDM's words Bochs departs from.
    pub sdm: &'static str,
    /// What Bochs does instead.
    pub bochs: &'static str,
}

pub static BOCHS: &[Departure] = &[
    Departure {
        id: "bochs.hlt_events",
        ignores: &["guest.activity.event"],
        reports_as: None,
        adds: None,
        sdm: "SDM Vol. 3C §27.3.1.5 \"Checks on Guest Non-Register State\": the injected event must not be one that would normally be blocked in the activity state; in HLT only external interrupts, NMIs, #DB, #MC and MTF may be injected",
        bochs: "checks the wait-for-SIPI and shutdown states only, so it enters HLT with any event",
    },
    Departure {
        id: "bochs.pending_debug_bs",
        ignores: &["guest.pending_debug.bs_set", "guest.pending_debug.bs_clear"],
        reports_as: None,
        adds: None,
        sdm: "SDM Vol. 3C §27.3.1.5 \"Checks on Guest Non-Register State\": with blocking by STI or MOV SS or the HLT state, BS must be 1 if RFLAGS.TF is 1 and IA32_DEBUGCTL.BTF is 0, and 0 otherwise",
        bochs: "checks only the reserved bits of the pending-debug-exceptions field",
    },
    Departure {
        id: "bochs.nmi_sti_qualification",
        ignores: &[],
        reports_as: Some(("guest.interruptibility.nmi_sti", Stage::Guest)),
        adds: None,
        sdm: "SDM Vol. 3C §27.8 \"VM-Entry Failures During or After Loading Guest State\": exit qualification 3 means the VM entry failed on an attempt to inject an NMI into a guest blocking events by STI",
        bochs: "fails that entry with exit qualification 0",
    },
    Departure {
        id: "bochs.debugctl",
        ignores: &["guest.debugctl.reserved"],
        reports_as: None,
        adds: None,
        sdm: "SDM Vol. 3C §27.3.1.1 \"Checks on Guest Control Registers, Debug Registers, and MSRs\": if \"load debug controls\" is 1, bits reserved in the IA32_DEBUGCTL MSR must be 0 in the field for that register",
        bochs: "loads the guest IA32_DEBUGCTL field without checking it",
    },
    Departure {
        id: "bochs.entry_to_smm",
        ignores: &[],
        reports_as: Some(("ctl.entry.smm", Stage::Guest)),
        adds: None,
        sdm: "SDM Vol. 3C §27.2.1.3 \"VM-Entry Control Fields\": the \"entry to SMM\" VM-entry control must be 0 if VM entry is not commencing in SMM (a control check: VMfailValid, error 7)",
        bochs: "does not check the control; it fails such an entry later, on the guest's SMI blocking (exit reason 33)",
    },
    Departure {
        id: "bochs.data_dpl",
        ignores: &["guest.data.dpl"],
        reports_as: None,
        adds: Some((data_dpl_below_11, Stage::Guest)),
        sdm: "SDM Vol. 3C §27.3.1.2 \"Checks on Guest Segment Registers\": the DS, ES, FS, GS DPL cannot be less than the RPL if the register is usable, unrestricted guest is 0 and the type is in the range 0 - 11",
        bochs: "applies the rule to types 0 - 10 only, so a readable non-conforming code segment (type 11) with DPL < RPL enters",
    },
    Departure {
        id: "bochs.tsc_multiplier",
        ignores: &[],
        reports_as: None,
        adds: Some((tsc_multiplier_zero, Stage::Control)),
        sdm: "SDM Vol. 3C §27.2.1.1 \"VM-Execution Control Fields\" lists no check on the TSC multiplier",
        bochs: "fails VM entry with error 7 when \"use TSC scaling\" is 1 and the TSC multiplier is 0",
    },
    Departure {
        id: "bochs.msr_load_smm_monitor_ctl",
        ignores: &["msr_load.smm_only"],
        reports_as: None,
        adds: None,
        sdm: "SDM Vol. 3C §27.4 \"Loading MSRs\": VM entry fails if an MSR-load entry names an MSR that can be written only in SMM (IA32_SMM_MONITOR_CTL) and the entry is not in SMM",
        bochs: "passes the entry to WRMSR, which (with its default ignore_bad_msrs) accepts it",
    },
    Departure {
        id: "bochs.msr_load_x2apic",
        ignores: &["msr_load.x2apic"],
        reports_as: None,
        adds: None,
        sdm: "SDM Vol. 3C §27.4 \"Loading MSRs\": VM entry fails if bits 31:8 of an MSR-load entry's index are 000008H (an x2APIC MSR)",
        bochs: "refuses the x2APIC range only on CPU models with x2APIC; elsewhere WRMSR accepts it",
    },
    Departure {
        id: "bochs.cs_dpl",
        ignores: &["guest.cs.dpl"],
        reports_as: None,
        adds: Some((cs_rpl_dpl, Stage::Guest)),
        sdm: "SDM Vol. 3C §27.3.1.2 \"Checks on Guest Segment Registers\": for a non-conforming code segment (type 9 or 11) the CS DPL must equal the DPL in the access-rights field for SS; for a conforming one it cannot be greater than it",
        bochs: "compares the CS DPL with the RPL of the CS selector instead (the rule of older SDM editions), also under unrestricted guest",
    },
];

/// Bochs's CS rule: non-conforming code needs CS.RPL = CS.DPL, conforming
/// code CS.RPL >= CS.DPL (outside virtual-8086 mode).
fn cs_rpl_dpl(v: &Snapshot) -> bool {
    if v.get(enc::GUEST_RFLAGS) & (1 << 17) != 0 {
        return false;
    }
    let ar = v.get(enc::GUEST_CS_AR);
    let (kind, dpl, rpl) = (ar & 0xf, (ar >> 5) & 3, v.get(enc::GUEST_CS_SELECTOR) & 3);
    match kind {
        9 | 11 => rpl != dpl,
        13 | 15 => rpl < dpl,
        _ => false,
    }
}

/// Bochs's data-segment rule: DPL >= RPL only for types 0-10 (the SDM: 0-11).
fn data_dpl_below_11(v: &Snapshot) -> bool {
    let ug = v.get(enc::SECONDARY_PROC_CONTROLS) & (1 << 7) != 0 && v.get(enc::PRIMARY_PROC_CONTROLS) & (1 << 31) != 0;
    if ug || v.get(enc::GUEST_RFLAGS) & (1 << 17) != 0 {
        return false;
    }
    [
        (enc::GUEST_DS_SELECTOR, enc::GUEST_DS_AR),
        (enc::GUEST_ES_SELECTOR, enc::GUEST_ES_AR),
        (enc::GUEST_FS_SELECTOR, enc::GUEST_FS_AR),
        (enc::GUEST_GS_SELECTOR, enc::GUEST_GS_AR),
    ]
    .iter()
    .any(|&(sel, ar)| {
        let (a, rpl) = (v.get(ar), v.get(sel) & 3);
        a & (1 << 16) == 0 && a & 0xf < 11 && rpl > (a >> 5) & 3
    })
}

/// Bochs requires a non-zero TSC multiplier when "use TSC scaling" is 1.
fn tsc_multiplier_zero(v: &Snapshot) -> bool {
    v.get(enc::PRIMARY_PROC_CONTROLS) & (1 << 31) != 0
        && v.get(enc::SECONDARY_PROC_CONTROLS) & (1 << 25) != 0
        && v.get(enc::TSC_MULTIPLIER) == 0
}

static BOCHS_EXTRA_CONTROL: super::Rule = super::Rule {
    id: "bochs.extra_check",
    section: super::SEC_EXEC_CONTROLS,
    text: "A control check Bochs makes that the SDM does not",
    stage: Stage::Control,
};
static BOCHS_EXTRA_GUEST: super::Rule = super::Rule {
    id: "bochs.extra_check",
    section: super::SEC_GUEST_SEGMENTS,
    text: "A guest-state check Bochs makes that the SDM does not",
    stage: Stage::Guest,
};

/// The violations as Bochs sees them under departure `d`: `recheck(skip)`
/// runs the checker without the rules Bochs does not check.
fn adjusted(
    violations: &[Violation],
    d: &Departure,
    vmcs: &Snapshot,
    recheck: &dyn Fn(&[&str]) -> Vec<Violation>,
) -> Vec<Violation> {
    let base = if d.ignores.iter().any(|id| violations.iter().any(|v| v.rule.id == *id)) {
        recheck(d.ignores)
    } else {
        violations.to_vec()
    };
    let mut out: Vec<Violation> = base
        .iter()
        .map(|v| match d.reports_as {
            Some((id, stage)) if id == v.rule.id => Violation { rule: restage(v.rule, stage), ..*v },
            _ => *v,
        })
        .collect();
    if let Some((check, stage)) = d.adds {
        if check(vmcs) {
            let rule = if stage == Stage::Control { &BOCHS_EXTRA_CONTROL } else { &BOCHS_EXTRA_GUEST };
            out.push(Violation { rule, what: d.id, entry: 0 });
        }
    }
    out
}

/// A rule with another stage: the checker's rules are statics, so the few
/// restaged ones are statics too.
fn restage(rule: &'static super::Rule, stage: Stage) -> &'static super::Rule {
    static ENTRY_SMM_AS_GUEST: super::Rule = super::Rule {
        id: "ctl.entry.smm",
        section: super::SEC_ENTRY_CONTROLS,
        text: "Outside SMM, the \"entry to SMM\" VM-entry control must be 0 (Bochs: exit reason 33)",
        stage: Stage::Guest,
    };
    if rule.id == ENTRY_SMM_AS_GUEST.id && stage == Stage::Guest {
        return &ENTRY_SMM_AS_GUEST;
    }
    static NMI_STI_AS_GUEST: super::Rule = super::Rule {
        id: "guest.interruptibility.nmi_sti",
        section: super::SEC_GUEST_NON_REGISTER,
        text: "Injecting an NMI while blocking by STI is shown fails VM entry (Bochs: exit qualification 0)",
        stage: Stage::Guest,
    };
    if rule.id == NMI_STI_AS_GUEST.id && stage == Stage::Guest {
        &NMI_STI_AS_GUEST
    } else {
        rule
    }
}

/// The departure that explains why the CPU's outcome differs from the
/// checker's verdict, if one does (one at a time, then all together).
pub fn explain(
    violations: &[Violation],
    outcome: &Outcome,
    vmcs: &Snapshot,
    recheck: &dyn Fn(&[&str]) -> Vec<Violation>,
) -> Option<&'static Departure> {
    for d in BOCHS {
        let a = adjusted(violations, d, vmcs, recheck);
        if a != violations && Verdict::from_violations(&a).agrees(outcome) {
            return Some(d);
        }
    }
    // Several at once: skip every ignored rule, then restage and add.
    let skip: Vec<&str> = BOCHS.iter().flat_map(|d| d.ignores.iter().copied()).collect();
    let mut all = recheck(&skip);
    let mut used = None;
    for d in BOCHS {
        let next = adjusted(&all, d, vmcs, &|_| all.clone());
        if next != all || d.ignores.iter().any(|id| violations.iter().any(|v| v.rule.id == *id)) {
            used = used.or(Some(d));
        }
        all = next;
    }
    if used.is_some() && Verdict::from_violations(&all).agrees(outcome) {
        used
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::rule;
    use super::*;

    /// Without a VMCS to recheck: the rechecked list is the old one minus the skipped rules.
    fn explain(violations: &[Violation], outcome: &Outcome) -> Option<&'static Departure> {
        let recheck = |skip: &[&str]| violations.iter().filter(|v| !skip.contains(&v.rule.id)).copied().collect();
        super::explain(violations, outcome, &Snapshot::default(), &recheck)
    }

    fn v(id: &str) -> Violation {
        Violation { rule: rule(id).unwrap(), what: "", entry: 0 }
    }

    #[test]
    fn every_departure_names_real_rules() {
        for d in BOCHS {
            for id in d.ignores {
                assert!(rule(id).is_some(), "{}: {id}", d.id);
            }
            if let Some((id, _)) = d.reports_as {
                assert!(rule(id).is_some(), "{}: {id}", d.id);
            }
            // The citation form: SDM Vol. 3C §<number> "<title>".
            let (number, title) = d.sdm["SDM Vol. 3C §".len()..].split_once(' ').unwrap_or_default();
            assert!(d.sdm.starts_with("SDM Vol. 3C §"), "{}", d.id);
            assert!(number.split('.').all(|n| n.parse::<u32>().is_ok()), "{}", d.id);
            assert!(title.starts_with('"') && title[1..].contains('"'), "{}", d.id);
        }
    }

    #[test]
    fn a_departure_explains_only_its_own_disagreement() {
        let entered = Outcome::Entered { reason: 52 };
        let q0 = Outcome::EntryFailure { reason: 33, qualification: 0 };
        assert_eq!(explain(&[v("ctl.entry.smm")], &q0).map(|d| d.id), Some("bochs.entry_to_smm"));
        assert_eq!(explain(&[v("guest.activity.event")], &entered).map(|d| d.id), Some("bochs.hlt_events"));
        assert!(explain(&[v("guest.activity.event")], &q0).is_none(), "the SDM verdict: nothing to explain");
        assert!(explain(&[v("guest.rflags.reserved")], &entered).is_none());
        assert_eq!(
            explain(&[v("guest.interruptibility.nmi_sti")], &q0).map(|d| d.id),
            Some("bochs.nmi_sti_qualification")
        );
        assert!(explain(&[v("guest.interruptibility.nmi_sti")], &entered).is_none());
        // Two departures at once.
        let both = [v("guest.activity.event"), v("guest.pending_debug.bs_set")];
        assert!(explain(&both, &entered).is_some());
        // A real failure next to a departure is still a failure.
        let mixed = [v("guest.activity.event"), v("guest.rflags.reserved")];
        assert!(explain(&mixed, &entered).is_none());
    }

    #[test]
    fn bochs_cs_rule_is_the_selector_rpl() {
        let mut s = Snapshot::default();
        s.set(enc::GUEST_CS_AR, 0x9b);
        s.set(enc::GUEST_CS_SELECTOR, 0xf003);
        let q0 = Outcome::EntryFailure { reason: 33, qualification: 0 };
        let none = |_: &[&str]| Vec::new();
        assert_eq!(super::explain(&[], &q0, &s, &none).map(|d| d.id), Some("bochs.cs_dpl"));
        s.set(enc::GUEST_CS_SELECTOR, 0xf000);
        assert!(super::explain(&[], &q0, &s, &none).is_none());
        s.set(enc::GUEST_CS_AR, 0xdf);
        s.set(enc::GUEST_CS_SELECTOR, 0xf003);
        assert!(!cs_rpl_dpl(&s), "conforming: RPL 3 >= DPL 2");
        s.set(enc::GUEST_RFLAGS, 1 << 17);
        s.set(enc::GUEST_CS_AR, 0x9b);
        assert!(!cs_rpl_dpl(&s), "not in virtual-8086 mode");
    }
}
