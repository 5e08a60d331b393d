//! Every rule fires alone: a valid VMCB with one change makes that rule, and
//! only that rule, fire. The valid VMCBs are the proof guest's two images
//! (real mode at the reset vector, 64-bit mode) and a 32-bit PAE guest
//! without nested paging (for the PDPE check).

use super::host::{self, Host, HostMode};
use super::notes::notes;
use super::verdict::{Outcome, Verdict};
use super::*;
use crate::svm::exit_code;
use crate::svm::features::edx;
use crate::svm::vmcb::{intercept1, intercept2, tlb, vintr, ProofAddresses, Segment, PAT_RESET};
use std::collections::BTreeMap;
use std::string::ToString;
use std::vec::Vec;

pub(super) struct Env {
    pub v: Vmcb,
    pub cpu: Cpu,
    pub mem: BTreeMap<u64, u64>,
}

impl Env {
    pub fn run(&self) -> Vec<Violation> {
        let read = |a: u64| self.mem.get(&a).copied();
        check_with(&Input { vmcb: &self.v, cpu: &self.cpu, memory: &read, skip: &[] })
    }
    pub fn or(&mut self, at: usize, bits: u64) {
        let v = self.v.read_u64(at);
        self.v.write_u64(at, v | bits);
    }
    pub fn clear(&mut self, at: usize, bits: u64) {
        let v = self.v.read_u64(at);
        self.v.write_u64(at, v & !bits);
    }
    pub fn set(&mut self, at: usize, value: u64) {
        self.v.write_u64(at, value);
    }
    pub fn cs_attrib(&mut self, a: u16) {
        self.v.write_u16(save::CS + save::ATTRIB, a);
    }
}

/// The CPUID of a Zen-like CPU with everything the rules gate on: long mode,
/// NX, FFXSR, PCID, shadow stacks, nested paging, VNMI, AVIC, FlushByAsid;
/// 40 physical and 48 linear address bits; LMSLE unsupported.
pub(super) fn zen() -> Cpuid {
    let l1_edx = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 13) | (1 << 24) | (1 << 25);
    Cpuid {
        l1_ecx: (1 << 17) | (1 << 26),
        l1_edx,
        l7_ebx: 1 | (1 << 7) | (1 << 20),
        l7_ecx: 1 << 7,
        e1_ecx: 1 << 2,
        e1_edx: (1 << 11) | (1 << 20) | (1 << 25) | (1 << 29),
        e8_eax: 40 | (48 << 8),
        e8_ebx: 1 << 20,
        ea_eax: 1,
        ea_ebx: 16,
        ea_edx: edx::NP | edx::NRIPS | edx::FLUSH_BY_ASID | edx::VNMI | edx::AVIC,
        e1f_eax: 0,
        e21_eax: 0,
    }
}

pub(super) fn cpu() -> Cpu {
    Cpu::from_cpuid(&zen())
}

pub(super) fn real() -> Env {
    Env { v: Vmcb::proof_guest_real_mode(&ProofAddresses::EXAMPLE), cpu: cpu(), mem: BTreeMap::new() }
}

pub(super) fn long() -> Env {
    Env { v: Vmcb::proof_guest_long_mode(&ProofAddresses::EXAMPLE), cpu: cpu(), mem: BTreeMap::new() }
}

/// 32-bit protected mode with PAE paging and nested paging off: VMRUN reads
/// the PDPEs at CR3 = 3000h.
pub(super) fn pae() -> Env {
    let mut e = long();
    e.clear(control::NP_CONTROL, np::ENABLE);
    e.set(save::EFER, efer::SVME);
    e.set(save::CR0, 0x8001_0033);
    e.set(save::CR4, cr::CR4_PAE);
    e.set(save::CR3, 0x3000);
    e.cs_attrib(0xc9b);
    for i in 0..4 {
        e.mem.insert(0x3000 + 8 * i, 0x4001 + 0x1000 * i);
    }
    e
}

fn ids(v: &[Violation]) -> Vec<&'static str> {
    v.iter().map(|x| x.rule.id).collect()
}

fn one_rule(id: &str, base: fn() -> Env, change: impl Fn(&mut Env)) {
    assert!(rule(id).is_some(), "{id} is not a rule");
    let mut e = base();
    assert_eq!(ids(&e.run()), Vec::<&str>::new(), "the base for {id} is not valid");
    change(&mut e);
    let v = e.run();
    assert!(!v.is_empty() && v.iter().all(|x| x.rule.id == id), "{id}: fired {:?}", ids(&v));
    assert_eq!(Verdict::from_violations(&v), Verdict::Invalid);
}

macro_rules! cases {
    ($($name:ident: $id:literal, $base:ident, |$e:ident| $body:block)*) => {
        $(
            #[test]
            fn $name() {
                one_rule($id, $base, |$e: &mut Env| $body);
            }
        )*
        const CASE_IDS: &[&str] = &[$($id),*];
    };
}

const fn exception(vector: u8) -> u64 {
    ev::exception(vector, None)
}

cases! {
    // APM Vol. 2 §15.5.1 "Basic Operation": guest state.
    efer_svme: "svm.efer.svme", real, |e| { e.clear(save::EFER, efer::SVME) }
    cr0_nw_without_cd: "svm.cr0.nw_without_cd", real, |e| { e.or(save::CR0, cr::CR0_NW) }
    cr0_high: "svm.cr0.high", real, |e| { e.or(save::CR0, 1 << 32) }
    cr3_mbz_width: "svm.cr3.mbz", long, |e| { e.or(save::CR3, 1 << 40) }
    cr3_mbz_top: "svm.cr3.mbz", long, |e| { e.or(save::CR3, 1 << 63) }
    cr4_mbz_vmxe: "svm.cr4.mbz", real, |e| { e.or(save::CR4, 1 << 13) }
    cr4_mbz_unsupported: "svm.cr4.mbz", real, |e| { e.or(save::CR4, 1 << 12) }
    cr4_mbz_high: "svm.cr4.mbz", real, |e| { e.or(save::CR4, 1 << 32) }
    dr6_high: "svm.dr6.high", real, |e| { e.or(save::DR6, 1 << 32) }
    dr7_high: "svm.dr7.high", long, |e| { e.or(save::DR7, 1 << 63) }
    efer_mbz: "svm.efer.mbz", real, |e| { e.or(save::EFER, 1 << 1) }
    efer_mbz_lmsle_unsupported: "svm.efer.mbz", real, |e| { e.or(save::EFER, efer::LMSLE) }
    efer_mbz_high: "svm.efer.mbz", long, |e| { e.or(save::EFER, 1 << 40) }
    efer_long_mode_unsupported: "svm.efer.long_mode_unsupported", real, |e| {
        e.cpu.long_mode = false;
        e.or(save::EFER, efer::LMA);
    }
    efer_lme_without_long_mode: "svm.efer.long_mode_unsupported", real, |e| {
        e.cpu.long_mode = false;
        e.or(save::EFER, efer::LME);
    }
    lme_pg_without_pae: "svm.efer.lme_pg_without_pae", long, |e| { e.clear(save::CR4, cr::CR4_PAE) }
    lme_pg_without_pe: "svm.efer.lme_pg_without_pe", long, |e| { e.clear(save::CR0, cr::CR0_PE) }
    cs_l_and_d: "svm.cs.l_and_d", long, |e| { e.cs_attrib(0xe9b) }
    s_cet_reserved: "svm.cet.s_cet_reserved", long, |e| { e.set(save::S_CET, 1 << 2) }
    cet_without_wp: "svm.cet.without_wp", long, |e| {
        e.or(save::CR4, cr::CR4_CET);
        e.clear(save::CR0, cr::CR0_WP);
    }
    pdpe_reserved: "svm.pdpe.reserved", pae, |e| { e.mem.insert(0x3008, 0x5003); }
    pdpe_beyond_width: "svm.pdpe.reserved", pae, |e| { e.mem.insert(0x3018, 0x7001 | (1 << 45)); }
    // The controls: §15.5.1, §15.10.1, §15.11, §15.21.10, §15.25.3, §15.25.4.
    intercept_vmrun: "svm.intercept.vmrun", real, |e| {
        e.v.write_u32(control::INTERCEPT2, intercept2::VMMCALL)
    }
    msrpm_top: "svm.msrpm.address", real, |e| { e.set(control::MSRPM_BASE_PA, (1 << 40) - 0x2000) }
    msrpm_beyond: "svm.msrpm.address", real, |e| { e.set(control::MSRPM_BASE_PA, 1 << 40) }
    iopm_top: "svm.iopm.address", real, |e| { e.set(control::IOPM_BASE_PA, (1 << 40) - 0x3000) }
    iopm_wraps: "svm.iopm.address", real, |e| { e.set(control::IOPM_BASE_PA, u64::MAX) }
    asid_zero: "svm.asid.zero", real, |e| { e.v.write_u32(control::GUEST_ASID, 0) }
    vnmi_without_nmi_intercept: "svm.vnmi.nmi_intercept", real, |e| { e.or(control::VINTR, vintr::V_NMI_ENABLE) }
    np_host_paging: "svm.np.host_paging", real, |e| { e.cpu.host_paging = false }
    ncr3_mbz: "svm.np.ncr3_mbz", real, |e| { e.or(control::N_CR3, 1 << 40) }
    g_pat_type: "svm.np.g_pat", real, |e| { e.set(save::G_PAT, 0x0007_0406_0007_0402) }
    g_pat_reserved: "svm.np.g_pat", long, |e| { e.set(save::G_PAT, PAT_RESET | (0x10 << 56)) }
    // §15.20 "Event Injection".
    event_type_1: "svm.event.type", real, |e| { e.set(control::EVENTINJ, ev::VALID | (1 << 8)) }
    event_type_7: "svm.event.type", real, |e| { e.set(control::EVENTINJ, ev::VALID | (7 << 8) | 13) }
    exception_vector_nmi: "svm.event.exception_vector", real, |e| { e.set(control::EVENTINJ, exception(2)) }
    exception_vector_reserved: "svm.event.exception_vector", real, |e| { e.set(control::EVENTINJ, exception(15)) }
    exception_vector_9: "svm.event.exception_vector", real, |e| { e.set(control::EVENTINJ, exception(9)) }
    exception_vector_31: "svm.event.exception_vector", real, |e| { e.set(control::EVENTINJ, exception(31)) }
    exception_vector_32: "svm.event.exception_vector", long, |e| { e.set(control::EVENTINJ, exception(32)) }
    exception_vector_vc: "svm.event.exception_vector", real, |e| { e.set(control::EVENTINJ, exception(29)) }
    br_in_64bit_mode: "svm.event.br_in_64bit_mode", long, |e| { e.set(control::EVENTINJ, exception(5)) }
    of_in_64bit_mode: "svm.event.of_in_64bit_mode", long, |e| { e.set(control::EVENTINJ, exception(4)) }
}

#[test]
fn every_rule_has_a_case_and_ids_are_unique() {
    let rules: Vec<&Rule> = all_rules().collect();
    for r in &rules {
        assert!(CASE_IDS.contains(&r.id), "no test makes {} fire", r.id);
        assert_eq!(rules.iter().filter(|o| o.id == r.id).count(), 1, "{} twice", r.id);
        assert!(r.id.starts_with("svm.") && !r.id.starts_with("svm.host.") && !r.id.starts_with("svm.note."));
        assert!(!r.text.is_empty() && r.text.len() < 200, "{}: one line", r.id);
        assert_eq!(r.section.volume, 2, "{}", r.id);
    }
    assert_eq!(rules.len(), 27);
}

#[test]
fn the_bases_are_valid_run_and_carry_no_notes() {
    for (name, base) in [("real", real as fn() -> Env), ("long", long), ("pae", pae)] {
        let e = base();
        let v = e.run();
        assert!(v.is_empty(), "{name}: {:?}", ids(&v));
        assert_eq!(Verdict::from_violations(&v), Verdict::Runs);
        assert_eq!(notes(&e.v, &e.cpu), Vec::<&notes::Note>::new(), "{name}");
    }
}

#[test]
fn the_proof_images_hold_what_the_proof_guest_starts_with() {
    let v = Vmcb::proof_guest_real_mode(&ProofAddresses::EXAMPLE);
    assert_eq!(v.segment(save::CS), Segment::new(0xf000, 0x9b, 0xffff, 0xffff_0000));
    assert_eq!(v.read_u64(save::RIP), 0xfff0);
    assert_eq!(v.read_u64(save::CR0), 0x10);
    assert_eq!(v.read_u64(save::EFER), efer::SVME);
    assert_eq!(v.read_u64(save::RFLAGS), 2);
    assert_eq!(v.read_u64(save::DR6), 0xffff_0ff0);
    assert_eq!(v.read_u64(save::DR7), 0x400);
    assert_eq!(v.read_u64(save::G_PAT), 0x0007_0406_0007_0406);
    assert_eq!(v.read_u32(control::GUEST_ASID), 1);
    assert_eq!(v.read_u64(control::NP_CONTROL), np::ENABLE);
    assert_eq!(v.read_u64(control::N_CR3), ProofAddresses::EXAMPLE.n_cr3);
    let i1 = intercept1::HLT | intercept1::CPUID | intercept1::SHUTDOWN | intercept1::IOIO_PROT | intercept1::MSR_PROT;
    assert_eq!(v.read_u32(control::INTERCEPT1), i1);
    assert_eq!(v.read_u32(control::INTERCEPT2), intercept2::VMRUN | intercept2::VMMCALL);
    assert!(v.read_u64(control::IOPM_BASE_PA) < 1 << 32 && v.read_u64(control::MSRPM_BASE_PA) < 1 << 32);
    let l = Vmcb::proof_guest_long_mode(&ProofAddresses::EXAMPLE);
    assert_eq!(l.read_u64(save::EFER), efer::SVME | efer::LME | efer::LMA);
    assert_eq!(l.segment(save::CS).attrib & (attrib::L | attrib::DB), attrib::L);
    assert_eq!(l.read_u32(control::INTERCEPT1), i1);
}

#[test]
fn vmcb_fields_are_little_endian_at_their_offsets() {
    let mut v = Vmcb::zeroed();
    v.write_u64(save::RIP, 0x1122_3344_5566_7788);
    assert_eq!(v.bytes()[save::RIP], 0x88);
    assert_eq!(v.bytes()[save::RIP + 7], 0x11);
    assert_eq!(v.read_u32(save::RIP), 0x5566_7788);
    assert_eq!(v.read(save::RIP + 1, 2), 0x6677);
    v.write(control::TLB_CONTROL, 1, 0x1ff);
    assert_eq!(v.read_u8(control::TLB_CONTROL), 0xff);
    assert_eq!(v.read_u8(control::TLB_CONTROL + 1), 0, "only the field's width is written");
    let s = Segment::new(0x10, 0xc93, 0xffff_ffff, 0x1234_5678_9abc);
    v.set_segment(save::SS, s);
    assert_eq!(v.segment(save::SS), s);
    assert_eq!(Vmcb::from_bytes(v.bytes()), v);
    assert!(std::format!("{v:?}").contains("rip: 1234605616436508552"));
}

#[test]
fn readings_of_the_apm_words() {
    // CR3 has MBZ bits only in long mode.
    let mut e = real();
    e.or(save::CR3, (1 << 63) | (1 << 45) | 0xfff);
    assert!(e.run().is_empty(), "no MBZ bits in a legacy-mode CR3");
    let mut e = long();
    e.or(save::CR3, (1 << 39) | 0xfff);
    assert!(e.run().is_empty(), "bits below MAXPHYADDR and 11:0 are not MBZ");

    // The maps: bits 11:0 ignored; the last byte must lie below 2^MAXPHYADDR - 1.
    let mut e = real();
    e.set(control::MSRPM_BASE_PA, (1 << 40) - 0x3000 + 0xfff);
    e.set(control::IOPM_BASE_PA, (1 << 40) - 0x4000 + 0x123);
    assert!(e.run().is_empty(), "the highest maps that fit, low bits ignored");

    // Nested paging without the NP feature: no nested-paging check, a note.
    let mut e = real();
    e.cpu.svm.edx &= !edx::NP;
    e.or(control::N_CR3, 1 << 63);
    e.set(save::G_PAT, 0x0202_0202_0202_0202);
    assert!(e.run().is_empty());
    assert!(notes(&e.v, &e.cpu).iter().any(|n| n.id == "svm.note.np_unsupported"));
    // G_PAT is not checked with nested paging off.
    let mut e = real();
    e.clear(control::NP_CONTROL, np::ENABLE);
    e.set(save::G_PAT, 0x0202_0202_0202_0202);
    assert!(e.run().is_empty());

    // An NMI's vector is ignored; a software interrupt or INTR may use any vector.
    let mut e = long();
    e.set(control::EVENTINJ, ev::VALID | (2 << 8) | 0x77);
    assert!(e.run().is_empty());
    for kind in [ev::TYPE_INTR, ev::TYPE_SOFT_INT] {
        e.set(control::EVENTINJ, ev::VALID | (kind << 8) | 5);
        assert!(e.run().is_empty());
    }
    // #BR and #OF are fine outside 64-bit mode (compatibility mode too).
    let mut e = long();
    e.cs_attrib(0xc9b);
    e.set(control::EVENTINJ, exception(5));
    assert!(e.run().is_empty());
    // #CP with shadow stacks; #VC with SEV-ES only.
    let mut e = real();
    e.set(control::EVENTINJ, exception(21));
    assert!(e.run().is_empty());
    e.cpu.exception_vectors = Cpu::exception_vectors(false, true);
    e.set(control::EVENTINJ, exception(29));
    assert!(e.run().is_empty());
    // EV against the vector, and bits 30:12, are notes only.
    let mut e = real();
    e.set(control::EVENTINJ, ev::exception(6, Some(0)) | (1 << 20));
    assert!(e.run().is_empty());
    let n: Vec<&str> = notes(&e.v, &e.cpu).iter().map(|n| n.id).collect();
    assert_eq!(n, ["svm.note.event_error_code", "svm.note.event_reserved"]);

    // The CET checks need a CPU with shadow stacks (without, CR4.CET is MBZ).
    let mut e = long();
    e.cpu.cr4_valid &= !cr::CR4_CET;
    e.set(save::S_CET, 1 << 2);
    assert!(e.run().is_empty());
    e.or(save::CR4, cr::CR4_CET);
    e.clear(save::CR0, cr::CR0_WP);
    assert_eq!(ids(&e.run()), ["svm.cr4.mbz"]);

    // Without VNMI, V_NMI_ENABLE is not looked at.
    let mut e = real();
    e.cpu.svm.edx &= !edx::VNMI;
    e.or(control::VINTR, vintr::V_NMI_ENABLE);
    assert!(e.run().is_empty());
    e.cpu = cpu();
    e.or(control::INTERCEPT1, intercept1::NMI as u64);
    assert!(e.run().is_empty(), "VNMI with the NMI intercept");

    // PDPEs: only present entries; unreadable ones are skipped; nested paging skips them all.
    let mut e = pae();
    e.mem.insert(0x3010, 0x0000_0000_0000_01e6);
    e.mem.remove(&0x3018);
    assert!(e.run().is_empty());
    e.mem.insert(0x3000, 0x4003);
    e.or(control::NP_CONTROL, np::ENABLE);
    e.set(control::N_CR3, 0x30_0000);
    assert!(e.run().is_empty());
}

#[test]
fn what_vmrun_does_silently_has_a_note() {
    let ids = |e: &Env| notes(&e.v, &e.cpu).iter().map(|n| n.id).collect::<Vec<_>>();
    let mut e = real();
    e.or(save::CR0, cr::CR0_PG);
    assert!(e.run().is_empty(), "paged real mode is legal");
    assert_eq!(ids(&e), ["svm.note.paged_real_mode"]);
    let mut e = long();
    e.v.write_u64(save::DS + save::BASE, 0x0000_8000_0000_0000);
    e.set(save::RIP, 0x0000_8000_0000_1000);
    assert!(e.run().is_empty());
    assert_eq!(ids(&e), ["svm.note.canonicalized", "svm.note.rip"]);
    let mut e = real();
    e.set(save::RIP, 0x1_0000);
    e.v.write_u8(control::TLB_CONTROL, 2);
    e.v.write_u32(control::GUEST_ASID, 16);
    e.or(save::EFER, efer::LMA);
    e.or(control::VINTR, vintr::AVIC_ENABLE);
    e.or(control::NP_CONTROL, np::SEV);
    assert!(e.run().is_empty());
    assert_eq!(
        ids(&e),
        [
            "svm.note.rip",
            "svm.note.tlb_control",
            "svm.note.asid_range",
            "svm.note.lma",
            "svm.note.avic_not_modeled",
            "svm.note.sev_not_modeled"
        ]
    );
    let mut e = long();
    e.v.write_u8(control::TLB_CONTROL, tlb::FLUSH_ASID_NON_GLOBAL);
    e.or(save::CR4, cr::CR4_CET);
    e.or(save::RFLAGS, 1 << 17);
    assert_eq!(ids(&e), ["svm.note.u_cet_not_modeled"]);
    for n in notes::NOTES {
        assert!(n.id.starts_with("svm.note.") && n.text.len() < 200, "{}", n.id);
        assert_eq!(notes::NOTES.iter().filter(|o| o.id == n.id).count(), 1);
    }
}

#[test]
fn skipped_rules_are_not_reported() {
    let mut e = real();
    e.clear(save::EFER, efer::SVME);
    e.v.write_u32(control::GUEST_ASID, 0);
    assert_eq!(ids(&e.run()), ["svm.efer.svme", "svm.asid.zero"]);
    let read = |_| None;
    let v = check_with(&Input { vmcb: &e.v, cpu: &e.cpu, memory: &read, skip: &["svm.asid.zero"] });
    assert_eq!(ids(&v), ["svm.efer.svme"]);
    assert_eq!(ids(&check(&e.v, &e.cpu)), ["svm.efer.svme", "svm.asid.zero"]);
}

#[test]
fn violation_lines_name_the_rule_and_the_section() {
    let mut e = real();
    e.clear(save::EFER, efer::SVME);
    let v = e.run();
    assert_eq!(
        v[0].to_string(),
        "vmrun check svm.efer.svme: EFER.SVME must be 1 (APM Vol. 2 §15.5.1 \"Basic Operation\")"
    );
    let mut e = pae();
    e.mem.insert(0x3008, 0x5003);
    assert!(e.run()[0].to_string().contains(" [PDPE1] (APM Vol. 2 §15.5.1 \"Basic Operation\")"));
    assert_eq!(SEC_NP_VMRUN.to_string(), "APM Vol. 2 §15.25.4 \"Nested Paging and VMRUN/#VMEXIT\"");
    assert_eq!(SEC_VMRUN_INSN.to_string(), "APM Vol. 3 Chapter 4 \"VMRUN\"");
}

#[test]
fn verdicts_and_outcomes() {
    let mut e = real();
    e.v.write_u32(control::GUEST_ASID, 0);
    let v = e.run();
    let invalid = Outcome::Exited { code: exit_code::INVALID };
    let hlt = Outcome::Exited { code: exit_code::HLT };
    assert_eq!(Verdict::from_violations(&v), Verdict::Invalid);
    assert!(Verdict::Invalid.agrees(&invalid) && !Verdict::Invalid.agrees(&hlt));
    assert!(Verdict::Runs.agrees(&hlt) && !Verdict::Runs.agrees(&invalid));
    assert!(!Verdict::Runs.agrees(&Outcome::Exited { code: exit_code::BUSY }));
    assert!(!Verdict::Runs.agrees(&Outcome::Fault(Fault::Gp)));
    assert!(Verdict::Faults(Fault::Gp).agrees(&Outcome::Fault(Fault::Gp)));
    assert!(!Verdict::Faults(Fault::Gp).agrees(&Outcome::Fault(Fault::Ud)));
    assert!(Verdict::Runs.runs() && !Verdict::Invalid.runs());
    assert_eq!(Verdict::Invalid.to_string(), "#VMEXIT(VMEXIT_INVALID)");
    assert_eq!(Verdict::Faults(Fault::Ud).to_string(), "#UD");
    assert_eq!(invalid.to_string(), "#VMEXIT(VMEXIT_INVALID)");
    assert_eq!(hlt.to_string(), "ran (then #VMEXIT 0x78)");
    assert_eq!(Outcome::Fault(Fault::Gp).to_string(), "#GP(0)");
    // A host fault comes before any VMCB check.
    let h = host::check(&Host { cpl: 3, ..good_host() });
    assert_eq!(Verdict::with_host(&h, &v), Verdict::Faults(Fault::Gp));
    assert_eq!(Verdict::with_host(&[], &v), Verdict::Invalid);
    assert_eq!(Verdict::with_host(&[], &[]), Verdict::Runs);
}

pub(super) fn good_host() -> Host {
    Host { mode: HostMode::Protected, cpl: 0, svme: true, vmcb_pa: 0x12_3000, hsave_pa: 0x12_4000, maxphyaddr: 40 }
}

#[test]
fn host_preconditions_each_alone() {
    assert!(host::check(&good_host()).is_empty());
    let cases: [(&str, Host); 7] = [
        ("svm.host.svme", Host { svme: false, ..good_host() }),
        ("svm.host.protected_mode", Host { mode: HostMode::Real, ..good_host() }),
        ("svm.host.cpl", Host { cpl: 1, ..good_host() }),
        ("svm.host.vmcb_alignment", Host { vmcb_pa: 0x12_3010, ..good_host() }),
        ("svm.host.vmcb_width", Host { vmcb_pa: 1 << 40, ..good_host() }),
        ("svm.host.vmcb_width", Host { vmcb_pa: 1 << 63, ..good_host() }),
        ("svm.host.hsave_zero", Host { hsave_pa: 0, ..good_host() }),
    ];
    for (id, h) in cases {
        let v = host::check(&h);
        assert_eq!(v.len(), 1, "{id}: {v:?}");
        assert_eq!(v[0].rule.id, id);
        let want = if id == "svm.host.svme" || id == "svm.host.protected_mode" { Fault::Ud } else { Fault::Gp };
        assert_eq!(host::fault(&v), Some(want), "{id}");
    }
    for r in host::RULES {
        assert!(cases.iter().any(|(id, _)| *id == r.id), "no test for {}", r.id);
        assert_eq!(host::rule(r.id).map(|x| x.id), Some(r.id));
    }
    // Virtual-8086 mode: #UD (not protected mode) wins over #GP (CPL 3).
    let v = host::check(&Host { mode: HostMode::Virtual8086, cpl: 3, ..good_host() });
    assert_eq!(host::fault(&v), Some(Fault::Ud));
    assert_eq!(v.len(), 2);
    assert_eq!(
        v[1].to_string(),
        "vmrun check svm.host.cpl: VMRUN needs CPL 0 (#GP(0), APM Vol. 2 §15.5.1 \"Basic Operation\")"
    );
}

#[test]
fn facts_from_cpuid() {
    let c = cpu();
    assert_eq!(c.maxphyaddr, 40);
    assert_eq!(c.linear_width, 48);
    assert!(c.long_mode && c.host_paging && c.svm.nested_paging());
    let e = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME | efer::FFXSR;
    assert_eq!(c.efer_valid, e, "no LMSLE: Fn8000_0008_EBX[20] says unsupported");
    assert_eq!(Cpu::efer_valid_from_cpuid(0, 1 << 29, 0, 0), efer::LME | efer::LMA | efer::LMSLE);
    assert_eq!(
        Cpu::efer_valid_from_cpuid(1 << 17, 0, 1 << 8, 0x180),
        efer::TCE | efer::MCOMMIT | efer::UAIE | efer::AIBRSE
    );
    assert_eq!(c.cr4_valid, 0x7ff | (1 << 16) | (1 << 17) | (1 << 18) | (1 << 20) | (1 << 21) | (1 << 23));
    assert_eq!(Cpu::cr4_valid_from_cpuid(0, 0, 0, 0), 1 << 8, "PCE alone");
    assert_eq!(
        Cpu::cr4_valid_from_cpuid(0, 0, 0, (1 << 2) | (1 << 16) | (1 << 3)),
        (1 << 8) | (1 << 11) | (1 << 12) | (1 << 22)
    );
    let x = Cpu::exception_vectors(false, false);
    let listed = [0u32, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 28, 30];
    assert_eq!(x, listed.iter().fold(0, |a, v| a | (1 << v)));
    assert_eq!(c.exception_vectors, x | (1 << 21), "shadow stacks: #CP");
    assert_eq!(Cpu::exception_vectors(true, true), x | (1 << 21) | (1 << 29));
    assert_eq!(Cpu::from_cpuid(&Cpuid::default()).maxphyaddr, 36, "no leaf 8000_0008: 36 bits");
    assert_eq!(c.beyond_width(), !0 << 40);
}

#[test]
fn pat_and_map_helpers() {
    assert!(controls::pat_valid(PAT_RESET) && controls::pat_valid(0x0706_0504_0100_0706));
    assert!(!controls::pat_valid(0x0000_0000_0000_0003) && !controls::pat_valid(0x0800_0000_0000_0000));
    let c = cpu();
    assert!(controls::map_fits(&c, (1 << 40) - 0x3000, 0x2000));
    assert!(!controls::map_fits(&c, (1 << 40) - 0x2000, 0x2000));
    let mut wide = c;
    wide.maxphyaddr = 64;
    assert!(controls::map_fits(&wide, 0xffff_ffff_ffff_c000, 0x3000));
    assert!(!controls::map_fits(&wide, 0xffff_ffff_ffff_d000, 0x3000));
}

mod departure_cases {
    use super::super::departures::{self, Case, Emulator, Prediction, Status};
    use super::*;

    fn predicted(p: Prediction) -> Outcome {
        match p {
            Prediction::Accepts => Outcome::Exited { code: exit_code::HLT },
            Prediction::Refuses => Outcome::Exited { code: exit_code::INVALID },
        }
    }

    /// (departure, base, change, what it predicts).
    type Row = (&'static str, fn() -> Env, fn(&mut Env), Option<Prediction>);

    const ROWS: &[Row] = &[
        ("qemu.cr3_host_mode", real, |e| e.or(save::CR3, 1 << 40), Some(Prediction::Refuses)),
        (
            "qemu.cr4_fixed_mask",
            real,
            |e| {
                e.cpu.cr4_valid &= !cr::CR4_PCIDE;
                e.or(save::CR4, cr::CR4_PCIDE);
            },
            Some(Prediction::Accepts),
        ),
        ("qemu.cr4_fixed_mask", long, |e| e.or(save::CR4, cr::CR4_CET), Some(Prediction::Refuses)),
        (
            "qemu.cr4_fixed_mask",
            real,
            |e| {
                e.cpu.intel_pks = true;
                e.or(save::CR4, 1 << 24);
            },
            Some(Prediction::Accepts),
        ),
        ("qemu.cr4_fixed_mask", real, |e| e.or(save::CR4, 1 << 24), None),
        ("qemu.iopm_size", real, |e| e.set(control::IOPM_BASE_PA, (1 << 40) - 0x3000), Some(Prediction::Accepts)),
        ("qemu.iopm_size", real, |e| e.set(control::IOPM_BASE_PA, (1 << 40) - 0x2000), None),
        (
            "qemu.efer_fixed_mask",
            real,
            |e| {
                e.cpu.efer_valid &= !efer::FFXSR;
                e.or(save::EFER, efer::FFXSR);
            },
            Some(Prediction::Accepts),
        ),
        (
            "qemu.efer_fixed_mask",
            long,
            |e| {
                e.cpu.efer_valid |= efer::LMSLE;
                e.or(save::EFER, efer::LMSLE);
            },
            Some(Prediction::Refuses),
        ),
        ("qemu.exception_vectors", real, |e| e.set(control::EVENTINJ, exception(15)), Some(Prediction::Accepts)),
        ("qemu.exception_vectors", real, |e| e.set(control::EVENTINJ, exception(31)), None),
        ("qemu.impossible_events", long, |e| e.set(control::EVENTINJ, exception(5)), Some(Prediction::Accepts)),
        (
            "qemu.pdpe_unchecked",
            pae,
            |e| {
                e.mem.insert(0x3000, 0x4003);
            },
            Some(Prediction::Accepts),
        ),
        ("qemu.ncr3_unchecked", real, |e| e.or(control::N_CR3, 1 << 40), Some(Prediction::Accepts)),
        ("qemu.g_pat_unchecked", real, |e| e.set(save::G_PAT, 0x0303), Some(Prediction::Accepts)),
        ("qemu.np_host_paging_unchecked", real, |e| e.cpu.host_paging = false, Some(Prediction::Accepts)),
        ("bochs.cr3_unchecked", long, |e| e.or(save::CR3, 1 << 40), Some(Prediction::Accepts)),
        ("bochs.cs_l_and_d", real, |e| e.cs_attrib(0x69b), Some(Prediction::Refuses)),
        ("bochs.cs_l_and_d", long, |e| e.cs_attrib(0xe9b), None),
        ("bochs.cs_l_and_d", real, |e| e.cs_attrib(0x68b), None),
        ("bochs.pcide_outside_long_mode", real, |e| e.or(save::CR4, cr::CR4_PCIDE), Some(Prediction::Refuses)),
        (
            "bochs.permission_map_base",
            real,
            |e| e.set(control::MSRPM_BASE_PA, (1 << 40) - 0x2000),
            Some(Prediction::Accepts),
        ),
        ("bochs.permission_map_base", real, |e| e.set(control::IOPM_BASE_PA, 1 << 40), None),
        ("bochs.exception_vectors", real, |e| e.set(control::EVENTINJ, exception(31)), Some(Prediction::Accepts)),
        ("bochs.exception_vectors", real, |e| e.set(control::EVENTINJ, exception(40)), None),
        ("bochs.impossible_events", long, |e| e.set(control::EVENTINJ, exception(4)), Some(Prediction::Accepts)),
        (
            "bochs.np_enable_byte",
            real,
            |e| {
                e.set(control::NP_CONTROL, np::GMET);
                e.set(save::G_PAT, 0x0303);
            },
            Some(Prediction::Refuses),
        ),
        ("bochs.np_enable_byte", real, |e| e.set(control::NP_CONTROL, np::GMET), None),
        (
            "bochs.efer_bits",
            long,
            |e| {
                e.cpu.efer_valid |= efer::LMSLE;
                e.or(save::EFER, efer::LMSLE);
            },
            Some(Prediction::Refuses),
        ),
        (
            "bochs.efer_bits",
            real,
            |e| {
                e.cpu.efer_valid |= efer::TCE;
                e.or(save::EFER, efer::TCE);
            },
            Some(Prediction::Refuses),
        ),
    ];

    #[test]
    fn each_departure_predicts_its_own_case_and_explains_it() {
        for (i, (id, base, change, want)) in ROWS.iter().enumerate() {
            let d = departures::departure(id).unwrap_or_else(|| panic!("{id} is not a departure"));
            let mut e = base();
            assert!(e.run().is_empty(), "row {i}: the base is not valid");
            change(&mut e);
            let v = e.run();
            let case = Case { vmcb: &e.v, cpu: &e.cpu, violations: &v };
            assert_eq!(d.predicts(&case), *want, "row {i} {id}: violations {:?}", ids(&v));
            let Some(p) = want else { continue };
            let outcome = predicted(*p);
            assert!(!Verdict::from_violations(&v).agrees(&outcome), "row {i}: the APM verdict is the other one");
            assert_eq!(departures::explain(d.emulator, &case, &outcome).map(|d| d.id), Some(*id), "row {i}");
            assert!(departures::verdict(d.emulator, &case).agrees(&outcome), "row {i}: all departures together");
            let other = if d.emulator == Emulator::Qemu { Emulator::Bochs } else { Emulator::Qemu };
            let apm = Verdict::from_violations(&v);
            let outcome_apm = if apm.runs() { predicted(Prediction::Accepts) } else { predicted(Prediction::Refuses) };
            assert!(departures::explain(other, &case, &outcome_apm).is_none(), "row {i}: nothing to explain");
        }
    }

    /// The departures the SVM entry fuzzer has seen against the running
    /// emulators (docs/entry-checker.md, \"Measured\").
    const CONFIRMED: &[&str] = &[
        "qemu.cr3_host_mode",
        "qemu.cr4_fixed_mask",
        "qemu.efer_fixed_mask",
        "qemu.exception_vectors",
        "qemu.impossible_events",
        "qemu.iopm_size",
        "qemu.ncr3_unchecked",
        "qemu.g_pat_unchecked",
        "bochs.cr3_unchecked",
        "bochs.cs_l_and_d",
        "bochs.permission_map_base",
        "bochs.exception_vectors",
        "bochs.impossible_events",
        "bochs.efer_bits",
    ];

    #[test]
    fn every_departure_has_a_case_a_citation_and_its_emulator_prefix() {
        for d in departures::DEPARTURES {
            assert!(ROWS.iter().any(|r| r.0 == d.id && r.3.is_some()), "no case for {}", d.id);
            let prefix = if d.emulator == Emulator::Qemu { "qemu." } else { "bochs." };
            assert!(d.id.starts_with(prefix), "{}", d.id);
            assert!(d.status == Status::ReadFromSource || CONFIRMED.contains(&d.id), "{}: status", d.id);
            assert_eq!(d.status == Status::Confirmed, CONFIRMED.contains(&d.id), "{}: status", d.id);
            assert!(d.apm.starts_with("APM Vol. 2 §") || d.apm.starts_with("APM Vol. 2 Table"), "{}", d.id);
            assert!(d.apm.contains('"') && !d.emulator_does.is_empty(), "{}", d.id);
            assert_eq!(departures::DEPARTURES.iter().filter(|o| o.id == d.id).count(), 1);
        }
        for d in departures::HOST_DEPARTURES {
            assert!(d.apm.starts_with("APM Vol. "), "{}", d.id);
            assert_eq!(d.status, Status::ReadFromSource);
        }
    }

    #[test]
    fn a_real_failure_next_to_a_departure_is_still_a_failure() {
        let mut e = real();
        e.or(control::N_CR3, 1 << 40);
        e.v.write_u32(control::GUEST_ASID, 0);
        let v = e.run();
        let case = Case { vmcb: &e.v, cpu: &e.cpu, violations: &v };
        let ran = Outcome::Exited { code: exit_code::HLT };
        assert!(departures::explain(Emulator::Qemu, &case, &ran).is_none());
        assert_eq!(departures::verdict(Emulator::Qemu, &case), Verdict::Invalid);
        assert_eq!(departures::seen_by(Emulator::Qemu, &case).len(), 1);
    }

    #[test]
    fn two_departures_at_once() {
        let mut e = real();
        e.or(control::N_CR3, 1 << 40);
        e.set(save::G_PAT, 0x0303);
        let v = e.run();
        let case = Case { vmcb: &e.v, cpu: &e.cpu, violations: &v };
        assert_eq!(ids(&v), ["svm.np.ncr3_mbz", "svm.np.g_pat"]);
        let ran = Outcome::Exited { code: exit_code::HLT };
        assert!(departures::DEPARTURES.iter().all(|d| d.predicts(&case) != Some(Prediction::Accepts)));
        assert_eq!(departures::verdict(Emulator::Qemu, &case), Verdict::Runs);
        assert_eq!(departures::explain(Emulator::Qemu, &case, &ran).map(|d| d.id), Some("qemu.ncr3_unchecked"));
        assert_eq!(departures::verdict(Emulator::Bochs, &case), Verdict::Invalid);
    }

    #[test]
    fn qemu_tcg_is_known_by_its_signature() {
        let w = |s: &[u8; 4]| u32::from_le_bytes(*s);
        let tcg = Emulator::from_hypervisor_signature(w(b"TCGT"), w(b"CGTC"), w(b"GTCG"));
        assert_eq!(tcg, Some(Emulator::Qemu));
        assert_eq!(Emulator::from_hypervisor_signature(w(b"KVMK"), w(b"VMKV"), w(b"M\0\0\0")), None);
        assert_eq!(Emulator::from_hypervisor_signature(0, 0, 0), None);
        assert_eq!((Emulator::Qemu.name(), Emulator::Bochs.name()), ("QEMU", "Bochs"));
    }

    #[test]
    fn qemu_loses_the_host_cr0_after_a_guest_with_lme_and_neither_pg_nor_pae() {
        let mut e = real();
        assert!(departures::host_hazard(Emulator::Qemu, &e.v).is_none());
        e.or(save::EFER, efer::LME);
        assert!(e.run().is_empty(), "a legal state");
        assert_eq!(departures::host_hazard(Emulator::Qemu, &e.v).map(|h| h.id), Some("qemu.vmexit_host_cr0"));
        assert!(departures::host_hazard(Emulator::Bochs, &e.v).is_none());
        e.or(save::CR4, cr::CR4_PAE);
        assert!(departures::host_hazard(Emulator::Qemu, &e.v).is_none(), "with PAE the host comes back");
        let l = long();
        assert!(departures::host_hazard(Emulator::Qemu, &l.v).is_none(), "long mode itself is fine");
        assert!(departures::host_hazard(Emulator::Bochs, &l.v).is_none(), "long mode itself is fine");
    }

    #[test]
    fn bochs_panics_on_paged_real_mode_with_lme_and_pae() {
        let mut e = long();
        e.clear(save::CR0, cr::CR0_PE);
        assert_eq!(ids(&e.run()), ["svm.efer.lme_pg_without_pe"]);
        assert_eq!(departures::host_hazard(Emulator::Bochs, &e.v).map(|h| h.id), Some("bochs.lme_pg_without_pe"));
        assert!(departures::host_hazard(Emulator::Qemu, &e.v).is_none());
        e.clear(save::CR4, cr::CR4_PAE);
        assert!(departures::host_hazard(Emulator::Bochs, &e.v).is_none(), "its CR4 check refuses it first");
    }

    #[test]
    fn host_departures() {
        let misaligned = Host { vmcb_pa: 0x12_3008, ..good_host() };
        assert_eq!(departures::host_fault(Emulator::Qemu, &misaligned), Some(Fault::Gp), "since 7.2.10");
        assert_eq!(departures::host_fault(Emulator::Bochs, &misaligned), Some(Fault::Gp));
        let beyond = Host { vmcb_pa: 1 << 45, ..good_host() };
        assert_eq!(departures::host_fault(Emulator::Qemu, &beyond), Some(Fault::Gp));
        let v86 = Host { mode: HostMode::Virtual8086, cpl: 3, ..good_host() };
        assert_eq!(departures::host_fault(Emulator::Qemu, &v86), Some(Fault::Gp));
        assert_eq!(departures::host_fault(Emulator::Bochs, &v86), Some(Fault::Ud));
        let real_mode = Host { mode: HostMode::Real, ..good_host() };
        assert_eq!(departures::host_fault(Emulator::Qemu, &real_mode), Some(Fault::Ud));
        let no_hsave = Host { hsave_pa: 0, ..good_host() };
        assert_eq!(host::fault(&host::check(&no_hsave)), Some(Fault::Gp));
        assert_eq!(departures::host_fault(Emulator::Qemu, &no_hsave), None);
        assert_eq!(departures::host_fault(Emulator::Bochs, &no_hsave), None);
        assert_eq!(departures::host_fault(Emulator::Bochs, &good_host()), None);
    }
}
