//! SVM's instructions (APM Vol. 3 "CLGI", "STGI", "VMLOAD", "VMSAVE"). VMRUN
//! itself is in entry.s, which owns the registers around it.

/// CLGI: GIF = 0; interrupts, NMIs, SMIs and INIT are held pending (APM Vol. 2
/// §15.17 "Global Interrupt Flag, STGI and CLGI").
///
/// # Safety
/// EFER.SVME must be set.
pub unsafe fn clgi() {
    // SAFETY: the caller vouches for EFER.SVME; CLGI changes no memory.
    unsafe { core::arch::asm!("clgi", options(nomem, nostack, preserves_flags)) };
}

/// STGI: GIF = 1.
///
/// # Safety
/// EFER.SVME must be set.
pub unsafe fn stgi() {
    // SAFETY: as for `clgi`.
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

/// VMLOAD: load what VMSAVE stores, from the area at `pa`.
///
/// # Safety
/// As for `vmsave`, and the area must hold state the CPU may run with.
pub unsafe fn vmload(pa: u64) {
    // SAFETY: the caller vouches for the area's contents.
    unsafe { core::arch::asm!("vmload rax", in("rax") pa, options(nostack, preserves_flags)) };
}
