//! The guest stage: what each CPU in VMX root runs, by `guest=`.

use crate::pcb::Pcb;
use hvlogic::cmdline::GuestKind;

/// Stage work: this CPU's guest (the proof guest, the entry fuzzer with
/// `entryfuzz=`, or with `guest=fuzz` the guest fuzzer's runs).
pub fn run_guest(pcb: &Pcb) {
    let options = crate::run::options();
    if options.guest == GuestKind::Fuzz && options.entryfuzz.is_none() {
        super::fuzz_guest::run(pcb)
    } else {
        super::proof_guest::run(pcb)
    }
}
