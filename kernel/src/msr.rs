//! MSR accesses that may fault: for an MSR a CPU is expected to have but an
//! emulator may not (Bochs 2.7 has no IA32_BIOS_SIGN_ID), or one whose
//! existence CPUID does not promise (QEMU's VM_CR). The instruction's #GP is
//! caught by the exception handler (`fixup`), which resumes at the probe's
//! failure path instead of ending the run; every other fault still does.

core::arch::global_asm!(
    ".section .text.msr_probe, \"ax\"",
    ".code64",
    // u64 msr_probe_read(u32 msr [edi], u64 *value [rsi]): 1 and *value, or 0 on #GP.
    ".global msr_probe_read",
    "msr_probe_read:",
    "    mov     %edi, %ecx",
    ".global msr_probe_read_insn",
    "msr_probe_read_insn:",
    "    rdmsr",
    "    shl     $32, %rdx",
    "    or      %rdx, %rax",
    "    mov     %rax, (%rsi)",
    "    mov     $1, %eax",
    "    ret",
    // u64 msr_probe_write(u32 msr [edi], u64 value [rsi]): 1, or 0 on #GP.
    ".global msr_probe_write",
    "msr_probe_write:",
    "    mov     %edi, %ecx",
    "    mov     %rsi, %rax",
    "    mov     %rsi, %rdx",
    "    shr     $32, %rdx",
    ".global msr_probe_write_insn",
    "msr_probe_write_insn:",
    "    wrmsr",
    "    mov     $1, %eax",
    "    ret",
    ".global msr_probe_failed",
    "msr_probe_failed:",
    "    xor     %eax, %eax",
    "    ret",
    options(att_syntax)
);

extern "C" {
    fn msr_probe_read(msr: u32, value: *mut u64) -> u64;
    fn msr_probe_write(msr: u32, value: u64) -> u64;
    fn msr_probe_read_insn();
    fn msr_probe_write_insn();
    fn msr_probe_failed();
}

/// RDMSR, or None where it raises #GP (the MSR does not exist here).
///
/// # Safety
/// Reading `msr` must have no side effect the caller does not expect.
pub unsafe fn read(msr: u32) -> Option<u64> {
    let mut value = 0;
    // SAFETY: the probe touches only `value`; a #GP of its RDMSR resumes at
    // msr_probe_failed (`fixup`), which returns 0; the caller vouches for the read.
    (unsafe { msr_probe_read(msr, &mut value) } != 0).then_some(value)
}

/// WRMSR; false where it raises #GP.
///
/// # Safety
/// Writing `value` to `msr` must be what the caller wants, if it succeeds.
pub unsafe fn write(msr: u32, value: u64) -> bool {
    // SAFETY: as in `read`; the caller vouches for the write.
    unsafe { msr_probe_write(msr, value) != 0 }
}

/// Where a #GP at `rip` resumes: the probe's failure path, if `rip` is a
/// probe's RDMSR or WRMSR (the only faults this kernel survives).
pub fn fixup(vector: u64, rip: u64) -> Option<u64> {
    const GP: u64 = 13;
    let probes = [msr_probe_read_insn as *const () as u64, msr_probe_write_insn as *const () as u64];
    (vector == GP && probes.contains(&rip)).then_some(msr_probe_failed as *const () as u64)
}
