//! The run as a whole: its options, what it counted, and how it ends.
//!
//! Every run, success or failure, ends in `end`: the SUMMARY line, then the
//! exit chosen by `exit=` (QEMU's isa-debug-exit, Bochs's shutdown port, or
//! halting every CPU, the bare-metal default).

use crate::pcb::{
    self, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_NO_VMX, CPU_STATUS_ONLINE, CPU_STATUS_UNRESPONSIVE,
    CPU_STATUS_VMXON, CPU_STATUS_VMX_ROOT_REACHED,
};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use hvlogic::cmdline::{ExitMode, Options};
use hvlogic::summary::Counts;
use spin::Once;
use x86_64::instructions::port::Port;

pub static OPTIONS: Once<Options> = Once::new();
/// Processors enumerated (MADT, or the boot CPU alone).
pub static CPUS_ENUMERATED: AtomicU32 = AtomicU32::new(1);
/// Set by any failure that is not tied to one CPU's status (e.g. an AP that never answered).
static FAILED: AtomicBool = AtomicBool::new(false);
static ENDING: AtomicBool = AtomicBool::new(false);

/// QEMU's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
/// Bochs ends the simulation when "Shutdown" is written to this port.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

pub fn options() -> &'static Options {
    OPTIONS.get().expect("options are parsed before use")
}

pub fn mark_failed() {
    FAILED.store(true, Ordering::Release);
}

pub fn is_ending() -> bool {
    ENDING.load(Ordering::Acquire)
}

/// Count what the run reached, from every CPU's status word.
pub fn counts() -> Counts {
    let mut c = Counts { cpus: CPUS_ENUMERATED.load(Ordering::Acquire), ..Counts::default() };
    for p in pcb::all() {
        let has = |flag| p.has(flag);
        c.online += has(CPU_STATUS_ONLINE) as u32;
        c.vmx_root += has(CPU_STATUS_VMX_ROOT_REACHED) as u32;
        c.guests_ok += has(CPU_STATUS_GUEST_OK) as u32;
        c.no_vmx += has(CPU_STATUS_NO_VMX) as u32;
        c.failed |= has(CPU_STATUS_FAILED) || has(CPU_STATUS_UNRESPONSIVE);
    }
    c.failed |= FAILED.load(Ordering::Acquire);
    c
}

/// A failure on this CPU: mark it, then end the run from here.
pub fn fail_and_end(why: impl core::fmt::Display) -> ! {
    if pcb::has_pcb() {
        pcb::this_cpu().set(CPU_STATUS_FAILED);
    }
    mark_failed();
    log::error!("run ends early: {why}");
    end()
}

/// Print the SUMMARY line and end the run as `exit=` says. The first CPU to
/// get here does it; any other parks.
pub fn end() -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        park();
    }
    let counts = counts();
    let result = counts.result();
    crate::console::report();
    crate::console::summary(&counts);
    crate::serial::flush();
    let exit = OPTIONS.get().map_or(ExitMode::Halt, |o| o.exit);
    match exit {
        ExitMode::Qemu => {
            // SAFETY: isa-debug-exit ends QEMU; on anything else the write is ignored.
            unsafe { Port::<u32>::new(QEMU_DEBUG_EXIT_PORT).write(result.qemu_exit_value()) };
        }
        ExitMode::Bochs => {
            for b in b"Shutdown" {
                // SAFETY: Bochs's shutdown port; on anything else the writes are ignored.
                unsafe { Port::<u8>::new(BOCHS_SHUTDOWN_PORT).write(*b) };
            }
        }
        ExitMode::Halt => {}
    }
    if exit != ExitMode::Halt {
        crate::tsc::delay_us(100_000);
        log::warn!("exit={exit:?} did not end the emulator: halting every CPU instead");
    }
    let me = pcb::this_cpu_index();
    for p in pcb::all().filter(|p| p.processor_index != me && p.has(CPU_STATUS_ONLINE)) {
        crate::apic::send_nmi(p.apic_id());
    }
    park()
}

/// Stop this CPU for good: leave VMX operation if in it, then halt with
/// interrupts off (only NMI, INIT or reset wake it; the NMI handler parks again).
pub fn park() -> ! {
    // A CPU parked in the middle of a line must not keep COM1 from the others.
    crate::serial::release_if_held();
    crate::console::release_if_held();
    if pcb::has_pcb() && pcb::this_cpu().has(CPU_STATUS_VMXON) {
        crate::vmx::leave_for_park();
    }
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
