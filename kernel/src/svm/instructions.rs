//! SVM's instructions the Rust side executes (APM Vol. 3 "STGI", "VMSAVE").
//! VMRUN, CLGI and VMLOAD are in entry.s, which owns the registers around them.

/// STGI: GIF = 1 (APM Vol. 2 §15.17 "Global Interrupt Flag, STGI and CLGI").
///
/// # Safety
/// EFER.SVME must be set.
pub unsafe fn stgi() {
    // SAFETY: the caller vouches for EFER.SVME; STGI changes no memory.
    unsafe { core::arch::asm!("stgi", options(nomem, nostack, preserves_flags)) };
}

/// VMSAVE: store FS, GS, TR and LDTR with their hidden state, KernelGsBase,
/// STAR, LSTAR, CSTAR, SFMASK and the SYSENTER MSRs into the VMCB-format
/// area at `pa` (APM Vol. 2 §15.5.2 "VMSAVE and VMLOAD Instructions").
///
/// # Safety
/// EFER.SVME set, CPL 0, `pa` a 4 KiB-aligned page the caller owns.
pub unsafe fn vmsave(pa: u64) {
    // SAFETY: the caller vouches for the page; VMSAVE writes only it.
    unsafe { core::arch::asm!("vmsave rax", in("rax") pa, options(nostack, preserves_flags)) };
}

/// A CPU being parked: GIF set (a handler may have stopped with it clear),
/// then EFER.SVME cleared. Nothing where SVM is already off (STGI would be
/// #UD: a CPU parked twice, by its own end and by the ending CPU's NMI).
///
/// # Safety
/// No guest runs on this CPU any more.
pub unsafe fn leave() {
    // SAFETY: EFER exists on every x86-64 CPU; STGI only with EFER.SVME set;
    // clearing SVME only turns SVM off.
    unsafe {
        let efer = x86::msr::rdmsr(x86::msr::IA32_EFER);
        if efer & hvlogic::svm::EFER_SVME != 0 {
            stgi();
            x86::msr::wrmsr(x86::msr::IA32_EFER, efer & !hvlogic::svm::EFER_SVME);
        }
    }
}
