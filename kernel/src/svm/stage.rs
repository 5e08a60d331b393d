//! The guest stage under SVM: what each CPU with EFER.SVME runs, by
//! `entryfuzz=` and `guest=` (`vmx/stage.rs`'s counterpart).

use crate::pcb::Pcb;

/// Stage work: this CPU's guest (the proof guest, or the entry fuzzer with
/// `entryfuzz=`).
pub fn run_guest(pcb: &Pcb) {
    let options = crate::run::options();
    if let Some(n) = options.entryfuzz {
        super::entry_fuzz::run(pcb, n, options.seed)
    } else {
        super::proof_guest::run(pcb)
    }
}
