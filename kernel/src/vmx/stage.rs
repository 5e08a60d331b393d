//! The guest stage: what each CPU in VMX root runs, by `guest=`.

use crate::pcb::Pcb;
use hvlogic::cmdline::GuestKind;

/// Stage work: this CPU's guest (the proof guest, the entry fuzzer with
/// `entryfuzz=`, or with `guest=fuzz` the guest fuzzer's runs).
/// A kernel built without its `fuzz` feature has neither fuzzer (its
/// options refuse them; `cfg!` leaves their code out of the image).
pub fn run_guest(pcb: &Pcb) {
    let options = crate::run::options();
    if cfg!(feature = "fuzz") && options.guest == GuestKind::Fuzz && options.entryfuzz.is_none() {
        super::fuzz_guest::run(pcb)
    } else {
        super::proof_guest::run(pcb)
    }
}
