//! The guest stage under SVM: what each CPU with EFER.SVME runs, by
//! `entryfuzz=` and `guest=` (`vmx/stage.rs`'s counterpart).

use crate::pcb::Pcb;
use hvlogic::cmdline::GuestKind;

/// Stage work: this CPU's guest (the proof guest, the entry fuzzer with
/// `entryfuzz=`, or with `guest=fuzz` the guest fuzzer's runs).
pub fn run_guest(pcb: &Pcb) {
    let options = crate::run::options();
    if let Some(n) = options.entryfuzz {
        super::entry_fuzz::run(pcb, n, options.seed)
    } else if options.guest == GuestKind::Fuzz {
        super::fuzz_guest::run(pcb)
    } else {
        super::proof_guest::run(pcb)
    }
}
