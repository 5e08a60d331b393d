//! AMD's Secure Virtual Machine (SVM, "AMD-V"): the names, layouts and
//! decisions the SVM backend needs, without touching hardware.
//!
//! Section, table and figure numbers follow the AMD64 Architecture
//! Programmer's Manual, Volume 2: System Programming, publication 24593,
//! revision 3.41 (June 2023), Chapter 15 "Secure Virtual Machine" and
//! Appendix B "Layout of VMCB" and C "SVM Intercept Exit Codes"; CPUID
//! functions follow Volume 3, publication 24594, Appendix E "Obtaining
//! Processor Information Via the CPUID Instruction". Citations read
//! `APM Vol. 2 §15.5.1 "Basic Operation"`, `APM Vol. 2 Table B-1 "VMCB
//! Layout, Control Area"` and `APM Vol. 3 Appendix E.4.9 "Function
//! 8000_000Ah—SVM Features"`.
//!
//! The seed's VMX steps have these AMD counterparts:
//! CPUID.01H:ECX.VMX -> CPUID Fn8000_0001_ECX.SVM; IA32_FEATURE_CONTROL ->
//! VM_CR (SVMDIS, LOCK); CR4.VMXE and VMXON -> EFER.SVME and VM_HSAVE_PA;
//! the VMCS -> the VMCB; VMLAUNCH/VMRESUME -> VMRUN; EPT -> nested paging.

pub mod exit_code;
pub mod features;
pub mod insn;
pub mod vm_cr;
pub mod vmcb;
pub mod vmrun_check;
pub mod vmrun_fuzz;

/// CPUID Fn8000_0001_ECX bit 2, SVM (APM Vol. 3 Appendix E.4.2 "Function
/// 8000_0001h—Extended Processor and Processor Feature Identifiers").
pub const CPUID_80000001_ECX_SVM: u32 = 1 << 2;

/// EFER.SVME, bit 12 (APM Vol. 2 §15.4 "Enabling SVM").
pub const EFER_SVME: u64 = 1 << 12;

/// VM_HSAVE_PA, MSR C001_0117h: the physical address of the host save area
/// VMRUN stores the host's state in (APM Vol. 2 §15.30.4 "VM_HSAVE_PA MSR").
/// 4 KiB aligned; bits 11:0 must be zero.
pub const VM_HSAVE_PA: u32 = 0xc001_0117;

/// SVM_KEY, MSR C001_0118h: with the SVM-Lock feature, the key that unlocks
/// VM_CR.LOCK (APM Vol. 2 §15.31 "SVM-Lock").
pub const SVM_KEY: u32 = 0xc001_0118;
