//! The host's operating mode, which both VMXON and VMRUN require: 64-bit
//! mode (EFER.LMA and CS.L: not compatibility mode), not virtual-8086, CPL 0
//! (SDM Vol. 3C "VMXON—Enter VMX Operation"; APM Vol. 2 §15.5.1 "Basic
//! Operation": VMRUN is a CPL-0 instruction of protected mode).

use x86::msr::{rdmsr, IA32_EFER};

/// IA32_EFER.LMA: IA-32e (long) mode active.
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS.VM: virtual-8086 mode.
const RFLAGS_VM: u64 = 1 << 17;
/// A code-segment descriptor's L bit (64-bit code).
const DESCRIPTOR_L: u64 = 1 << 53;

/// What the mode check reads.
#[derive(Clone, Copy, Debug)]
pub struct HostMode {
    pub efer: u64,
    pub cs: u16,
    /// CS's descriptor L bit.
    pub cs_l: bool,
    pub v86: bool,
    pub cpl: u16,
}

impl HostMode {
    pub fn read() -> HostMode {
        // SAFETY: IA32_EFER exists on every x86-64 CPU.
        let efer = unsafe { rdmsr(IA32_EFER) };
        let cs = {
            use x86_64::instructions::segmentation::{Segment, CS};
            CS::get_reg().0
        };
        let gdt = x86_64::instructions::tables::sgdt();
        // SAFETY: CS indexes a descriptor inside the loaded GDT.
        let descriptor = unsafe { *(gdt.base.as_u64() as *const u64).add((cs >> 3) as usize) };
        HostMode {
            efer,
            cs,
            cs_l: descriptor & DESCRIPTOR_L != 0,
            v86: x86_64::registers::rflags::read_raw() & RFLAGS_VM != 0,
            cpl: cs & 3,
        }
    }

    pub fn lma(&self) -> bool {
        self.efer & EFER_LMA != 0
    }

    /// 64-bit mode at CPL 0, outside virtual-8086 mode.
    pub fn ok(&self) -> bool {
        self.lma() && self.cs_l && !self.v86 && self.cpl == 0
    }
}
