//! Illegal event injection (APM Vol. 2 §15.20 "Event Injection"): "VMRUN
//! exits with VMEXIT_INVALID error code if either: Reserved values of TYPE
//! have been specified, or TYPE = 3 (exception) has been specified with a
//! vector that does not correspond to an exception (this includes vector 2,
//! which is an NMI, not an exception)", and an event "impossible for the
//! guest mode (e.g., a #BR exception when the guest is in 64-bit mode)".
//!
//! Not checks (the APM lists none; `notes` names them): an NMI's vector
//! ("ignored"), EV with a vector that pushes no error code or EV clear with
//! one that does, bits 30:12 ("Reserved, SBZ").

use super::{rule_def, Ctx, Out, Rule, SEC_EVENT};
use crate::svm::vmcb::event as ev;

rule_def!(
    TYPE,
    "svm.event.type",
    SEC_EVENT,
    "An injected event's TYPE must be 0 (INTR), 2 (NMI), 3 (exception) or 4 (software interrupt); 1, 5, 6, 7 are reserved"
);
rule_def!(
    EXCEPTION_VECTOR,
    "svm.event.exception_vector",
    SEC_EVENT,
    "An injected exception (TYPE 3) must have a vector that is an exception on this CPU: not 2 (NMI), 9, 15, 20, 22-27, 31 or above"
);
rule_def!(
    BR_64BIT,
    "svm.event.br_in_64bit_mode",
    SEC_EVENT,
    "An exception #BR (vector 5) is impossible in 64-bit mode (EFER.LME, CR0.PG, CS.L) and must not be injected there"
);
rule_def!(
    OF_64BIT,
    "svm.event.of_in_64bit_mode",
    SEC_EVENT,
    "An exception #OF (vector 4) is impossible in 64-bit mode (INTO, like BOUND, is invalid there) and must not be injected there"
);

pub static RULES: &[&Rule] = &[&TYPE, &EXCEPTION_VECTOR, &BR_64BIT, &OF_64BIT];

/// Vectors whose exceptions push an error code (APM Vol. 2 Table 8-1
/// "Interrupt Vector Source and Cause"): #DF, #TS, #NP, #SS, #GP, #PF, #AC,
/// #CP, #VC, #SX.
pub const ERROR_CODE_VECTORS: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);

pub(crate) fn check(c: &Ctx, out: &mut Out) {
    let Some(e) = c.event() else { return };
    let kind = ev::kind(e);
    let vector = ev::vector(e) as u32;
    out.check(matches!(kind, ev::TYPE_INTR | ev::TYPE_NMI | ev::TYPE_EXCEPTION | ev::TYPE_SOFT_INT), &TYPE, "");
    if kind != ev::TYPE_EXCEPTION {
        return;
    }
    out.check(vector < 32 && c.cpu.exception_vectors & (1 << vector) != 0, &EXCEPTION_VECTOR, "");
    out.check(!(vector == 5 && c.sixty_four_bit()), &BR_64BIT, "");
    out.check(!(vector == 4 && c.sixty_four_bit()), &OF_64BIT, "");
}
