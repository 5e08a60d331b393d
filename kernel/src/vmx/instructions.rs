//! The VMX instructions, each with its outcome read from RFLAGS inside the same
//! `asm!` block (SDM Vol. 3C §31.2 "Conventions": CF=1 VMfailInvalid, ZF=1
//! VMfailValid with the error number in the VM-instruction error field).
//! Reading RFLAGS in a separate block, as some crates do, lets the compiler
//! clobber the flags in between.

use core::arch::asm;
use x86::vmx::vmcs::ro::VM_INSTRUCTION_ERROR;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmFail {
    /// CF=1: no current VMCS to hold an error number.
    Invalid,
    /// ZF=1: the VM-instruction error number (SDM Vol. 3C §31.4 "VM Instruction
    /// Error Numbers").
    Valid(u32),
}

impl core::fmt::Display for VmFail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            VmFail::Invalid => write!(f, "VMfailInvalid (CF=1, no current VMCS)"),
            VmFail::Valid(n) => {
                write!(f, "VMfailValid (ZF=1), VM-instruction error {n}: {}", hvlogic::vm_error::name(n))
            }
        }
    }
}

/// Turn the CF/ZF pair captured after a VMX instruction into a result.
#[inline(always)]
fn outcome(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // SAFETY: VMfailValid means there is a current VMCS whose error field is readable.
        Err(VmFail::Valid(unsafe { vmread(VM_INSTRUCTION_ERROR) }.unwrap_or(0) as u32))
    } else {
        Ok(())
    }
}

macro_rules! vmx_op {
    ($(#[$m:meta])* $name:ident, $insn:literal) => {
        $(#[$m])*
        pub unsafe fn $name(physical: u64) -> Result<(), VmFail> {
            let (cf, zf): (u8, u8);
            // SAFETY: the caller upholds the instruction's requirements.
            unsafe {
                asm!(concat!($insn, " qword ptr [{p}]"), "setc {cf}", "setz {zf}",
                     p = in(reg) &physical, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
                     options(nostack));
            }
            outcome(cf, zf)
        }
    };
}

vmx_op!(
    /// Enter VMX root operation with the VMXON region at `physical`.
    ///
    /// # Safety
    /// CPL 0, CR4.VMXE set, the region holds the revision identifier.
    vmxon, "vmxon");
vmx_op!(
    /// Initialise the VMCS at `physical` and make it not current.
    ///
    /// # Safety
    /// In VMX root operation; the region is a VMCS of this CPU.
    vmclear, "vmclear");
vmx_op!(
    /// Make the VMCS at `physical` current.
    ///
    /// # Safety
    /// In VMX root operation; the region holds the revision identifier.
    vmptrld, "vmptrld");

/// The current-VMCS pointer (VMPTRST; SDM Vol. 3C §31.3 "VMX Instructions"): FFFFFFFF_FFFFFFFFH when none.
///
/// # Safety
/// In VMX root operation.
pub unsafe fn vmptrst() -> Result<u64, VmFail> {
    let mut pointer = 0u64;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller is in VMX root operation; VMPTRST stores 8 bytes at the operand.
    unsafe {
        asm!("vmptrst qword ptr [{p}]", "setc {cf}", "setz {zf}",
             p = in(reg) &mut pointer, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf).map(|()| pointer)
}

/// Leave VMX operation.
///
/// # Safety
/// In VMX root operation; nothing may use VMX afterwards.
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: upheld by the caller.
    unsafe { asm!("vmxoff", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack)) };
    outcome(cf, zf)
}

/// Read a field of the current VMCS.
///
/// # Safety
/// In VMX root operation with a current VMCS.
#[inline(always)]
pub unsafe fn vmread(field: u32) -> Result<u64, VmFail> {
    let (value, cf, zf): (u64, u8, u8);
    // SAFETY: upheld by the caller.
    unsafe {
        asm!("vmread {v}, {f}", "setc {cf}", "setz {zf}", f = in(reg) field as u64, v = out(reg) value,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    if cf | zf != 0 {
        // Not `outcome`: reading the error field could recurse.
        return Err(if cf != 0 { VmFail::Invalid } else { VmFail::Valid(0) });
    }
    Ok(value)
}

/// Read a field of the current VMCS without checking the outcome, for the
/// exit fast path: VMREAD of a supported field with a current VMCS in VMX
/// root operation cannot fail (SDM Vol. 3C "VMREAD—Read Field from
/// Virtual-Machine Control Structure").
///
/// # Safety
/// In VMX root operation with a current VMCS; `field` is a supported field.
#[inline(always)]
pub unsafe fn vmread_unchecked(field: u32) -> u64 {
    let value: u64;
    // SAFETY: upheld by the caller.
    unsafe { asm!("vmread {v}, {f}", f = in(reg) field as u64, v = out(reg) value, options(nostack)) };
    value
}

/// Write a field of the current VMCS.
///
/// # Safety
/// In VMX root operation with a current VMCS; the value must be valid for the field.
#[inline(always)]
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: upheld by the caller.
    unsafe {
        asm!("vmwrite {f}, {v}", "setc {cf}", "setz {zf}", f = in(reg) field as u64, v = in(reg) value,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    outcome(cf, zf)
}

macro_rules! invalidate {
    ($(#[$m:meta])* $name:ident, $insn:literal) => {
        $(#[$m])*
        pub unsafe fn $name(kind: u64, descriptor: [u64; 2]) -> Result<(), VmFail> {
            let (cf, zf): (u8, u8);
            // SAFETY: upheld by the caller.
            unsafe {
                asm!(concat!($insn, " {t}, [{d}]"), "setc {cf}", "setz {zf}", t = in(reg) kind,
                     d = in(reg) &descriptor, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
            };
            outcome(cf, zf)
        }
    };
}

invalidate!(
    /// INVEPT (SDM Vol. 3C "INVEPT—Invalidate Translations Derived from
    /// EPT"): descriptor = [EPTP, 0].
    ///
    /// # Safety
    /// In VMX root operation; the CPU supports INVEPT with this type.
    invept, "invept");
invalidate!(
    /// INVVPID (SDM Vol. 3C "INVVPID—Invalidate Translations Based on
    /// VPID"): descriptor = [VPID, linear address].
    ///
    /// # Safety
    /// In VMX root operation; the CPU supports INVVPID with this type.
    invvpid, "invvpid");
