//! The guest-state checks of APM Vol. 2 §15.5.1 "Basic Operation"
//! ("Canonicalization and Consistency Checks"): EFER, CR0, CR3, CR4, DR6,
//! DR7, the long-mode combinations with CS, the CET items; and the PDPEs
//! VMRUN loads for a PAE guest without nested paging (same section, "Loading
//! Guest State").

use super::{cr, efer, rule_def, Ctx, Out, Rule, SEC_BASIC};
use crate::svm::vmcb::{attrib, save};

rule_def!(EFER_SVME, "svm.efer.svme", SEC_BASIC, "EFER.SVME must be 1");
rule_def!(CR0_NW_CD, "svm.cr0.nw_without_cd", SEC_BASIC, "CR0.NW must be 0 when CR0.CD is 0");
rule_def!(CR0_HIGH, "svm.cr0.high", SEC_BASIC, "CR0[63:32] must be 0");
rule_def!(
    CR3_MBZ,
    "svm.cr3.mbz",
    SEC_BASIC,
    "In long mode (EFER.LME and CR0.PG), CR3 bits 63:MAXPHYADDR must be 0 (63:52 MBZ, the rest unimplemented address bits)"
);
rule_def!(CR4_MBZ, "svm.cr4.mbz", SEC_BASIC, "CR4 bits the CPU does not support (and bits 63:32) must be 0");
rule_def!(DR6_HIGH, "svm.dr6.high", SEC_BASIC, "DR6[63:32] must be 0");
rule_def!(DR7_HIGH, "svm.dr7.high", SEC_BASIC, "DR7[63:32] must be 0");
rule_def!(
    EFER_MBZ,
    "svm.efer.mbz",
    SEC_BASIC,
    "EFER bits the CPU does not implement must be 0 (LME and LMA: svm.efer.long_mode_unsupported)"
);
rule_def!(
    EFER_LONG_MODE,
    "svm.efer.long_mode_unsupported",
    SEC_BASIC,
    "EFER.LMA and EFER.LME must be 0 on a CPU without long mode"
);
rule_def!(LME_PG_PAE, "svm.efer.lme_pg_without_pae", SEC_BASIC, "With EFER.LME and CR0.PG set, CR4.PAE must be 1");
rule_def!(LME_PG_PE, "svm.efer.lme_pg_without_pe", SEC_BASIC, "With EFER.LME and CR0.PG set, CR0.PE must be 1");
rule_def!(
    CS_L_D,
    "svm.cs.l_and_d",
    SEC_BASIC,
    "EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D must not all be 1 (a 64-bit CS has D = 0)"
);
rule_def!(
    S_CET,
    "svm.cet.s_cet_reserved",
    SEC_BASIC,
    "On a CPU with shadow stacks, reserved bits of S_CET (63:2: AMD64 has no indirect-branch tracking) must be 0"
);
rule_def!(CET_WP, "svm.cet.without_wp", SEC_BASIC, "CR4.CET must be 0 when CR0.WP is 0");
rule_def!(
    PDPE,
    "svm.pdpe.reserved",
    SEC_BASIC,
    "For a PAE guest (CR0.PG, CR4.PAE, not EFER.LME) without nested paging, present PDPEs at CR3 must have bits 2:1, 8:5, 63:MAXPHYADDR 0"
);

pub static RULES: &[&Rule] = &[
    &EFER_SVME,
    &CR0_NW_CD,
    &CR0_HIGH,
    &CR3_MBZ,
    &CR4_MBZ,
    &DR6_HIGH,
    &DR7_HIGH,
    &EFER_MBZ,
    &EFER_LONG_MODE,
    &LME_PG_PAE,
    &LME_PG_PE,
    &CS_L_D,
    &S_CET,
    &CET_WP,
    &PDPE,
];

/// Reserved bits of a legacy-mode PAE PDPE below the physical-address width
/// (APM Vol. 2 §5.3.3 "PAE Paging", Figure 5-10 "4-Kbyte PDPE—Legacy Mode").
pub const PDPE_RESERVED_LOW: u64 = 0b1_1110_0110;

/// The S_CET bits AMD64 defines: SH_STK_EN (0) and WR_SHSTK_EN (1).
pub const S_CET_DEFINED: u64 = 0b11;

pub(crate) fn check(c: &Ctx, out: &mut Out) {
    let cet = c.cpu.cr4_valid & cr::CR4_CET != 0;
    out.check(c.efer & efer::SVME != 0, &EFER_SVME, "");
    out.check(c.cr0 & cr::CR0_CD != 0 || c.cr0 & cr::CR0_NW == 0, &CR0_NW_CD, "");
    out.check(c.cr0 >> 32 == 0, &CR0_HIGH, "");
    out.check(!c.long_mode() || c.cr3 & c.cpu.beyond_width() == 0, &CR3_MBZ, "");
    out.check(c.cr4 & !(c.cpu.cr4_valid & 0xffff_ffff) == 0, &CR4_MBZ, "");
    out.check(c.v.read_u64(save::DR6) >> 32 == 0, &DR6_HIGH, "");
    out.check(c.v.read_u64(save::DR7) >> 32 == 0, &DR7_HIGH, "");
    // LME and LMA are MBZ exactly when the CPU lacks long mode: their own rule.
    out.check(c.efer & !(c.cpu.efer_valid | efer::LME | efer::LMA) == 0, &EFER_MBZ, "");
    out.check(c.cpu.long_mode || c.efer & (efer::LME | efer::LMA) == 0, &EFER_LONG_MODE, "");
    out.check(!c.long_mode() || c.cr4 & cr::CR4_PAE != 0, &LME_PG_PAE, "");
    out.check(!c.long_mode() || c.cr0 & cr::CR0_PE != 0, &LME_PG_PE, "");
    let l_and_d = c.cs & attrib::L != 0 && c.cs & attrib::DB != 0;
    out.check(!(c.long_mode() && c.cr4 & cr::CR4_PAE != 0 && l_and_d), &CS_L_D, "");
    out.check(!cet || c.v.read_u64(save::S_CET) & !S_CET_DEFINED == 0, &S_CET, "");
    out.check(!cet || c.cr4 & cr::CR4_CET == 0 || c.cr0 & cr::CR0_WP != 0, &CET_WP, "");
    pdpes(c, out);
}

/// VMRUN reads the four PDPEs of a PAE guest (without nested paging) from
/// CR3 bits 31:5.
fn pdpes(c: &Ctx, out: &mut Out) {
    let pae = c.cr0 & cr::CR0_PG != 0 && c.cr4 & cr::CR4_PAE != 0 && c.efer & efer::LME == 0;
    if !pae || c.nested_paging() {
        return;
    }
    let table = c.cr3 & 0xffff_ffe0;
    let reserved = PDPE_RESERVED_LOW | c.cpu.beyond_width();
    const NAMES: [&str; 4] = ["PDPE0", "PDPE1", "PDPE2", "PDPE3"];
    for (i, name) in NAMES.iter().enumerate() {
        if let Some(e) = (c.memory)(table + 8 * i as u64) {
            out.check(e & 1 == 0 || e & reserved == 0, &PDPE, name);
        }
    }
}
