//! The guest stage under SVM: what each CPU with EFER.SVME runs, by
//! `entryfuzz=` and `guest=` (`vmx/stage.rs`'s counterpart).

use crate::pcb::Pcb;
use hvlogic::cmdline::GuestKind;

/// Stage work: this CPU's guest (the proof guest, the entry fuzzer with
/// `entryfuzz=`, or with `guest=fuzz` the guest fuzzer's runs).
/// A kernel built without its `fuzz` feature has neither fuzzer (its
/// options refuse them; `cfg!` leaves their code out of the image).
pub fn run_guest(pcb: &Pcb) {
    let options = crate::run::options();
    let fuzzers = cfg!(feature = "fuzz");
    match options.entryfuzz {
        Some(n) if fuzzers => super::entry_fuzz::run(pcb, n, options.seed),
        _ if fuzzers && options.guest == GuestKind::Fuzz => super::fuzz_guest::run(pcb),
        _ => super::proof_guest::run(pcb),
    }
}
