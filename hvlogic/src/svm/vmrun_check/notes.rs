//! What VMRUN does with a VMCB without failing, where a reader might expect
//! a failure, and the extensions whose checks the checker does not model.
//! None of these changes the verdict: they are printed beside it (`vmcheck`)
//! so a surprising success has a name too.
//!
//! - VMRUN canonicalizes (sign-extends) the segment bases it loads, and
//!   loads CR0.PG = 1 with CR0.PE = 0 as paged real mode (APM Vol. 2
//!   §15.5.1 "Basic Operation", §15.19 "Paged Real Mode").
//! - A RIP outside CS's limit, or non-canonical in 64-bit mode, is not
//!   illegal state: the guest takes #GP (§15.5.1).
//! - The APM lists no check for: NP_ENABLE without nested paging, EV that
//!   disagrees with the vector, EVENTINJ bits 30:12 ("Reserved, SBZ"), a
//!   reserved TLB_CONTROL encoding, an ASID at or beyond NASID, and EFER.LMA
//!   that differs from EFER.LME and CR0.PG.
//! - Not modeled: AVIC (§15.29), SEV and SEV-ES (§15.34, §15.35), and the
//!   U_CET.SS check of §15.5.1 (U_CET is in the VMCB only for SEV-ES guests).

use super::event::ERROR_CODE_VECTORS;
use super::{
    canonical, cr, efer, Cpu, Ctx, Section, SEC_AVIC, SEC_BASIC, SEC_EVENT, SEC_NP_ENABLE, SEC_PAGED_REAL_MODE,
    SEC_SEV, SEC_TLB,
};
use crate::svm::features::edx;
use crate::svm::vmcb::{control, event as ev, np, save, tlb, vintr, Vmcb};
use alloc::vec::Vec;
use core::fmt;

/// Something VMRUN does silently, or does not check, or the checker does not model.
#[derive(Debug, PartialEq, Eq)]
pub struct Note {
    /// Stable id, e.g. `svm.note.canonicalized`.
    pub id: &'static str,
    pub section: Section,
    pub text: &'static str,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vmrun note {}: {} ({})", self.id, self.text, self.section)
    }
}

macro_rules! note {
    ($name:ident, $id:literal, $sec:expr, $text:literal) => {
        pub static $name: Note = Note { id: $id, section: $sec, text: $text };
    };
}

note!(
    CANONICALIZED,
    "svm.note.canonicalized",
    SEC_BASIC,
    "A non-canonical ES, CS, SS or DS base is sign-extended by VMRUN, not refused"
);
note!(
    PAGED_REAL_MODE,
    "svm.note.paged_real_mode",
    SEC_PAGED_REAL_MODE,
    "CR0.PG = 1 with CR0.PE = 0 is loaded as paged real mode, not refused"
);
note!(
    RIP,
    "svm.note.rip",
    SEC_BASIC,
    "A RIP beyond the CS limit, or non-canonical in 64-bit mode, makes #GP in the guest, not VMEXIT_INVALID"
);
note!(
    NP_UNSUPPORTED,
    "svm.note.np_unsupported",
    SEC_NP_ENABLE,
    "NP_ENABLE on a CPU without nested paging: no check is listed; the bit is taken as ignored"
);
note!(
    EVENT_ERROR_CODE,
    "svm.note.event_error_code",
    SEC_EVENT,
    "EV disagrees with whether the event pushes an error code: no check is listed; EV decides what is pushed"
);
note!(
    EVENT_RESERVED,
    "svm.note.event_reserved",
    SEC_EVENT,
    "EVENTINJ bits 30:12 are \"Reserved, SBZ\": no check is listed"
);
note!(
    TLB_CONTROL,
    "svm.note.tlb_control",
    SEC_TLB,
    "TLB_CONTROL is a reserved encoding, or 3/7 without FlushByAsid: no check is listed"
);
note!(
    ASID_RANGE,
    "svm.note.asid_range",
    SEC_BASIC,
    "The ASID is at or beyond the number of ASIDs (CPUID Fn8000_000A_EBX): no check is listed"
);
note!(LMA, "svm.note.lma", SEC_BASIC, "EFER.LMA differs from EFER.LME and CR0.PG: no check is listed");
note!(AVIC, "svm.note.avic_not_modeled", SEC_AVIC, "AVIC is enabled: its VMRUN checks are not modeled");
note!(SEV, "svm.note.sev_not_modeled", SEC_SEV, "SEV or SEV-ES is enabled: their VMRUN checks are not modeled");
note!(
    U_CET,
    "svm.note.u_cet_not_modeled",
    SEC_BASIC,
    "CR4.CET with RFLAGS.VM: the U_CET.SS check needs U_CET, in the VMCB only for SEV-ES guests: not modeled"
);

pub static NOTES: &[&Note] = &[
    &CANONICALIZED,
    &PAGED_REAL_MODE,
    &RIP,
    &NP_UNSUPPORTED,
    &EVENT_ERROR_CODE,
    &EVENT_RESERVED,
    &TLB_CONTROL,
    &ASID_RANGE,
    &LMA,
    &AVIC,
    &SEV,
    &U_CET,
];

/// Every note that applies to this VMCB on this CPU.
pub fn notes(vmcb: &Vmcb, cpu: &Cpu) -> Vec<&'static Note> {
    let c = Ctx::new(vmcb, cpu, &|_| None);
    let v = vmcb;
    let mut out = Vec::new();
    let mut note = |on: bool, n: &'static Note| {
        if on {
            out.push(n);
        }
    };
    let bases = [save::ES, save::CS, save::SS, save::DS].map(|s| v.segment(s).base);
    note(bases.iter().any(|b| !canonical(*b, cpu.linear_width)), &CANONICALIZED);
    note(c.cr0 & cr::CR0_PG != 0 && c.cr0 & cr::CR0_PE == 0, &PAGED_REAL_MODE);
    let cs = v.segment(save::CS);
    let rip = v.read_u64(save::RIP);
    let limit_ok = c.sixty_four_bit() || rip <= cs.limit as u64;
    note(!limit_ok || (c.sixty_four_bit() && !canonical(rip, cpu.linear_width)), &RIP);
    let np_control = v.read_u64(control::NP_CONTROL);
    note(np_control & np::ENABLE != 0 && !cpu.svm.nested_paging(), &NP_UNSUPPORTED);
    if let Some(e) = c.event() {
        let kind = ev::kind(e);
        let pushes =
            kind == ev::TYPE_EXCEPTION && (ev::vector(e) as u32) < 32 && ERROR_CODE_VECTORS & (1 << ev::vector(e)) != 0;
        note((e & ev::ERROR_CODE_VALID != 0) != pushes, &EVENT_ERROR_CODE);
        note(e & 0x7fff_f000 != 0, &EVENT_RESERVED);
    }
    let t = v.read_u8(control::TLB_CONTROL);
    let by_asid = cpu.svm.has(edx::FLUSH_BY_ASID);
    let tlb_ok = matches!(t, tlb::DO_NOTHING | tlb::FLUSH_ALL)
        || (by_asid && matches!(t, tlb::FLUSH_ASID | tlb::FLUSH_ASID_NON_GLOBAL));
    note(!tlb_ok, &TLB_CONTROL);
    let asid = v.read_u32(control::GUEST_ASID);
    note(asid != 0 && cpu.svm.nasid != 0 && asid >= cpu.svm.nasid, &ASID_RANGE);
    note((c.efer & efer::LMA != 0) != c.long_mode(), &LMA);
    note(v.read_u64(control::VINTR) & vintr::AVIC_ENABLE != 0 && cpu.svm.has(edx::AVIC), &AVIC);
    note(np_control & (np::SEV | np::SEV_ES) != 0, &SEV);
    let vm = v.read_u64(save::RFLAGS) & (1 << 17) != 0;
    note(c.cr4 & cr::CR4_CET != 0 && vm, &U_CET);
    out
}
