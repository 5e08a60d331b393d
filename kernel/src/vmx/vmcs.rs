//! The VMCS: field access, its errors, the control fields and the host state
//! (what every guest shares), and the guest-state encodings both guests use.

use super::instructions::{vmread, vmwrite, VmFail};
use crate::pcb::Pcb;
use core::fmt;
use hvlogic::controls::{exit, proc1};
use x86::msr::{
    rdmsr, IA32_EFER, IA32_FS_BASE, IA32_GS_BASE, IA32_PAT, IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_SYSENTER_ESP,
};
use x86::vmx::vmcs::{control as ctl, host};
use x86_64::registers::control::{Cr0, Cr3, Cr4};

/// Why a VMCS could not be set up or a guest not be (re)started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsError {
    /// A VMWRITE failed.
    Write { field: u32, fail: VmFail },
    /// VMCLEAR or VMPTRLD of a fresh VMCS failed.
    Load(VmFail),
    /// A control the guest needs is not available (each was named in the log).
    MissingControl,
    /// INVVPID or INVEPT before a launch failed.
    Flush,
    /// 32-bit guest paging needs its tables and memory below 4 GiB.
    Above4GiB,
}

impl fmt::Display for VmcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmcsError::Write { field, fail } => write!(f, "VMWRITE of field {field:#06x} failed: {fail}"),
            VmcsError::Load(fail) => write!(f, "VMCLEAR/VMPTRLD of a new VMCS failed: {fail}"),
            VmcsError::MissingControl => f.write_str("a required VMX control is not available"),
            VmcsError::Flush => f.write_str("INVVPID/INVEPT before the launch failed"),
            VmcsError::Above4GiB => f.write_str("32-bit guest paging needs its tables and memory below 4 GiB"),
        }
    }
}

pub fn write(field: u32, value: u64) -> Result<(), VmcsError> {
    // SAFETY: called with this CPU's VMCS current (after VMPTRLD).
    unsafe { vmwrite(field, value) }.map_err(|fail| VmcsError::Write { field, fail })
}

/// Read a VMCS field; 0 if the read fails (only used for reports and known fields).
pub fn read(field: u32) -> u64 {
    // SAFETY: called with this CPU's VMCS current.
    unsafe { vmread(field) }.unwrap_or(0)
}

/// The five control fields, each `(wanted | allowed-0) & allowed-1`.
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    pub pin: u32,
    pub proc1: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

pub fn write_controls(c: &Controls) -> Result<(), VmcsError> {
    write(ctl::PINBASED_EXEC_CONTROLS, c.pin as u64)?;
    write(ctl::PRIMARY_PROCBASED_EXEC_CONTROLS, c.proc1 as u64)?;
    if c.proc1 & proc1::ACTIVATE_SECONDARY != 0 {
        write(ctl::SECONDARY_PROCBASED_EXEC_CONTROLS, c.proc2 as u64)?;
    }
    write(ctl::VMEXIT_CONTROLS, c.exit as u64)?;
    write(ctl::VMENTRY_CONTROLS, c.entry as u64)?;
    write(ctl::EXCEPTION_BITMAP, 0)?;
    // With the bitmap's #PF bit clear, no page fault exits only if mask and
    // match are both 0 (SDM Vol. 3C §25.6.3 "Exception Bitmap"); VMCLEAR does
    // not promise zeros.
    write(ctl::PAGE_FAULT_ERR_CODE_MASK, 0)?;
    write(ctl::PAGE_FAULT_ERR_CODE_MATCH, 0)?;
    write(ctl::TSC_OFFSET_FULL, 0)?;
    write(ctl::CR3_TARGET_COUNT, 0)?;
    write(ctl::VMEXIT_MSR_STORE_COUNT, 0)?;
    write(ctl::VMEXIT_MSR_LOAD_COUNT, 0)?;
    write(ctl::VMENTRY_MSR_LOAD_COUNT, 0)?;
    write(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, 0)
}

/// Host state: the running CPU as it is now (SDM Vol. 3C §25.5 "Host-State
/// Area", §27.2.2 "Checks on Host Control Registers, MSRs, and SSP").
pub fn write_host_state(pcb: &Pcb, exit_controls: u32, host_rsp: u64, host_rip: u64) -> Result<(), VmcsError> {
    use crate::pcb::{KERNEL_CS, KERNEL_DS, KERNEL_TR};
    let gdt = x86_64::instructions::tables::sgdt();
    let idt = x86_64::instructions::tables::sidt();
    write(host::CR0, Cr0::read_raw())?;
    write(host::CR3, Cr3::read_raw().0.start_address().as_u64())?;
    write(host::CR4, Cr4::read_raw())?;
    write(host::CS_SELECTOR, KERNEL_CS as u64)?;
    write(host::SS_SELECTOR, KERNEL_DS as u64)?;
    write(host::DS_SELECTOR, KERNEL_DS as u64)?;
    write(host::ES_SELECTOR, KERNEL_DS as u64)?;
    write(host::FS_SELECTOR, 0)?;
    write(host::GS_SELECTOR, 0)?;
    write(host::TR_SELECTOR, KERNEL_TR as u64)?;
    // SAFETY: these architectural MSRs exist on every CPU with VMX.
    let msr = |n| unsafe { rdmsr(n) };
    write(host::FS_BASE, msr(IA32_FS_BASE))?;
    write(host::GS_BASE, msr(IA32_GS_BASE))?;
    write(host::TR_BASE, &pcb.tss as *const _ as u64)?;
    write(host::GDTR_BASE, gdt.base.as_u64())?;
    write(host::IDTR_BASE, idt.base.as_u64())?;
    write(host::IA32_SYSENTER_CS, msr(IA32_SYSENTER_CS))?;
    write(host::IA32_SYSENTER_ESP, msr(IA32_SYSENTER_ESP))?;
    write(host::IA32_SYSENTER_EIP, msr(IA32_SYSENTER_EIP))?;
    if exit_controls & exit::LOAD_EFER != 0 {
        write(host::IA32_EFER_FULL, msr(IA32_EFER))?;
    }
    if exit_controls & exit::LOAD_PAT != 0 {
        write(host::IA32_PAT_FULL, msr(IA32_PAT))?;
    }
    write(host::RSP, host_rsp)?;
    write(host::RIP, host_rip)
}

/// Access rights (SDM Vol. 3C Table 25-2 "Format of Access Rights").
pub const AR_CODE_16: u64 = 0x9b; // present, S, execute/read, accessed
pub const AR_DATA_16: u64 = 0x93; // present, S, read/write, accessed
pub const AR_CODE_32: u64 = 0xc09b; // ... with D/B and G
pub const AR_DATA_32: u64 = 0xc093;
pub const AR_TSS_BUSY_32: u64 = 0x8b;
pub const AR_UNUSABLE: u64 = 1 << 16;
pub use hvlogic::mtrr::PAT_RESET;

/// The guest's segment registers, with their four VMCS fields each (SDM Vol.
/// 3C §25.4.1 "Guest Register State").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl Segment {
    /// Selector, base, limit and access-rights fields.
    const fn fields(self) -> [u32; 4] {
        use x86::vmx::vmcs::guest as g;
        match self {
            Segment::Es => [g::ES_SELECTOR, g::ES_BASE, g::ES_LIMIT, g::ES_ACCESS_RIGHTS],
            Segment::Cs => [g::CS_SELECTOR, g::CS_BASE, g::CS_LIMIT, g::CS_ACCESS_RIGHTS],
            Segment::Ss => [g::SS_SELECTOR, g::SS_BASE, g::SS_LIMIT, g::SS_ACCESS_RIGHTS],
            Segment::Ds => [g::DS_SELECTOR, g::DS_BASE, g::DS_LIMIT, g::DS_ACCESS_RIGHTS],
            Segment::Fs => [g::FS_SELECTOR, g::FS_BASE, g::FS_LIMIT, g::FS_ACCESS_RIGHTS],
            Segment::Gs => [g::GS_SELECTOR, g::GS_BASE, g::GS_LIMIT, g::GS_ACCESS_RIGHTS],
            Segment::Ldtr => [g::LDTR_SELECTOR, g::LDTR_BASE, g::LDTR_LIMIT, g::LDTR_ACCESS_RIGHTS],
            Segment::Tr => [g::TR_SELECTOR, g::TR_BASE, g::TR_LIMIT, g::TR_ACCESS_RIGHTS],
        }
    }
}

/// The data segment registers, which a flat or real-mode start loads alike.
pub const DATA_SEGMENTS: [Segment; 5] = [Segment::Es, Segment::Ss, Segment::Ds, Segment::Fs, Segment::Gs];

/// Write one guest segment register: selector, base, limit, access rights.
pub fn write_segment(s: Segment, selector: u16, base: u64, limit: u32, access_rights: u64) -> Result<(), VmcsError> {
    let [sel, b, l, ar] = s.fields();
    write(sel, selector as u64)?;
    write(b, base)?;
    write(l, limit as u64)?;
    write(ar, access_rights)
}
