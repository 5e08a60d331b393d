//! VMX: global data, VMX root operation, the guest.

use crate::pcb::{Pcb, CPU_STATUS_NO_VMX};
use log::error;

/// CPUID.01H:ECX[5] (SDM Vol. 3C 24.6 "Discovering Support for VMX").
const CPUID_01_ECX_VMX: u32 = 1 << 5;

/// Stage work: enter VMX root operation on this CPU.
pub fn enter(pcb: &mut Pcb) {
    if pcb.feature_ecx & CPUID_01_ECX_VMX == 0 {
        error!("VMX not supported (CPUID.01H:ECX[5]=0)");
        pcb.set(CPU_STATUS_NO_VMX);
    }
}

/// Leave VMX operation on a CPU that is being parked at the end of a run.
pub fn leave_for_park() {}
