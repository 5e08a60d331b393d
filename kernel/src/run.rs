//! The run as a whole: its options, what it counted, and how it ends.
//!
//! Every run prints exactly one SUMMARY line. A run without an OS then ends
//! as `exit=` says (QEMU's isa-debug-exit, Bochs's shutdown port, or halting
//! every CPU, the bare-metal default). A run that hands the machine to an OS
//! prints a `handoff:` line after the SUMMARY, and when the OS is done, one
//! `GUEST-END` line with the VM exits of every CPU; what the OS asked for
//! (poweroff, reset) is then carried out by the caller. A failure after the
//! handoff ends with `GUEST-END ... how=failure` and `exit=`.

use crate::pcb::{
    self, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_NO_VMX, CPU_STATUS_ONLINE, CPU_STATUS_OS,
    CPU_STATUS_UNRESPONSIVE, CPU_STATUS_VMXON, CPU_STATUS_VMX_ROOT_REACHED, EXIT_REASONS,
};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use hvlogic::cmdline::{ExitMode, Options};
use hvlogic::summary::{Counts, RunResult};
use spin::Once;
use x86_64::instructions::port::Port;

pub static OPTIONS: Once<Options> = Once::new();
/// Processors enumerated (MADT, or the boot CPU alone).
pub static CPUS_ENUMERATED: AtomicU32 = AtomicU32::new(1);
/// Set by any failure that is not tied to one CPU's status (e.g. an AP that never answered).
static FAILED: AtomicBool = AtomicBool::new(false);
static ENDING: AtomicBool = AtomicBool::new(false);
static SUMMARY_PRINTED: Once<RunResult> = Once::new();
/// The OS the machine was handed to, once it was.
static HANDED_OFF: Once<&'static str> = Once::new();
static GUEST_ENDED: AtomicBool = AtomicBool::new(false);

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
    let mut c = Counts {
        cpus: CPUS_ENUMERATED.load(Ordering::Acquire),
        virt: crate::virt::summary_virt(),
        ..Counts::default()
    };
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

/// Print the SUMMARY line (once: later calls return the first result),
/// behind everything logged so far, with the heap's and the log's own
/// accounting just before it.
pub fn summary() -> RunResult {
    *SUMMARY_PRINTED.call_once(|| {
        let (heap, used, grown) = crate::memory::usage();
        log::debug!(
            "memory: heap {:#x}-{:#x}, {} KiB of {} KiB in use",
            heap.start,
            heap.end,
            used / 1024,
            heap.len() / 1024
        );
        let lost = crate::logger::lost_total();
        if lost > 0 {
            log::warn!("log: {lost} lines lost in this run (the log ring was full; see the `log:` lines above)");
        }
        if grown > 0 {
            log::warn!("memory: the heap grew {} KiB past its estimate (memory::size_for)", grown / 1024);
        }
        let counts = counts();
        crate::console::report();
        crate::logger::flush();
        crate::logger::raw_line(format_args!("{counts}"));
        crate::logger::flush();
        counts.result()
    })
}

/// The machine now belongs to `os`: from here on the log shows errors only
/// (COM1 is the OS's), and a failure ends with GUEST-END.
pub fn handed_off(os: &'static str) {
    HANDED_OFF.call_once(|| os);
    crate::logger::flush();
    crate::serial::set_quiet(true);
}

/// How the OS ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    PowerOff,
    Reset,
    TripleFault,
    Failure,
}

impl How {
    const fn as_str(self) -> &'static str {
        match self {
            How::PowerOff => "poweroff",
            How::Reset => "reset",
            How::TripleFault => "triple-fault",
            How::Failure => "failure",
        }
    }
}

/// The OS is done: print `GUEST-END os=<os> how=<how> exits=<n>` and the
/// table of VM exits by reason and CPU. Only the first call prints; it
/// returns whether this one did.
pub fn guest_end(how: How) -> bool {
    if GUEST_ENDED.swap(true, Ordering::AcqRel) {
        return false;
    }
    let os = HANDED_OFF.get().copied().unwrap_or("none");
    let cpus: alloc::vec::Vec<&pcb::Pcb> = pcb::all().filter(|p| p.has(CPU_STATUS_OS)).collect();
    let per_cpu = |p: &pcb::Pcb, r: usize| p.exits[r].load(Ordering::Relaxed) as u64;
    let total: u64 = cpus.iter().map(|p| (0..EXIT_REASONS).map(|r| per_cpu(p, r)).sum::<u64>()).sum();
    crate::logger::raw_line(format_args!("GUEST-END os={os} how={} exits={total}", how.as_str()));
    let mut line = alloc::string::String::new();
    let _ = write!(line, "  {:<34}", "VM exits by reason");
    for p in &cpus {
        let _ = write!(line, " {:>10}", alloc::format!("cpu{}", p.processor_index));
    }
    crate::logger::raw_line(format_args!("{line}"));
    for r in (0..EXIT_REASONS).filter(|&r| cpus.iter().any(|p| per_cpu(p, r) != 0)) {
        line.clear();
        let (number, name) = crate::virt::exit_label(r);
        let _ = write!(line, "  {number:>2} {name:<31}");
        for p in &cpus {
            let _ = write!(line, " {:>10}", per_cpu(p, r));
        }
        crate::logger::raw_line(format_args!("{line}"));
    }
    // Time in the exit handlers, by CPU: what the hypervisor's own code cost
    // the OS (the world switches themselves are not in it). None where no
    // CPU ran the OS as its guest (a native handoff that failed).
    if !cpus.is_empty() {
        line.clear();
        for (i, p) in cpus.iter().enumerate() {
            let ms = crate::tsc::ticks_to_micros(p.exit_ticks.load(Ordering::Relaxed)) / 1000;
            let _ = write!(line, "{}{ms}", if i == 0 { "" } else { "/" });
        }
        crate::logger::raw_line(format_args!("exit-handler ms={line}"));
    }
    crate::logger::flush();
    true
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

/// End the run: the SUMMARY line (or, once an OS has the machine,
/// GUEST-END how=failure), then as `exit=` says. The first CPU to get here
/// does it; any other parks.
pub fn end() -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        park();
    }
    let result = if HANDED_OFF.get().is_some() {
        guest_end(How::Failure);
        RunResult::Fail
    } else {
        summary()
    };
    finish(result)
}

/// Leave the machine as `exit=` says, with `result` for the emulators' exit codes.
fn finish(result: RunResult) -> ! {
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
        crate::logger::delay_us(100_000);
        log::warn!("exit={exit:?} did not end the emulator: halting every CPU instead");
        crate::logger::flush();
    }
    stop_other_cpus();
    park()
}

/// Stop every other CPU this kernel runs: an NMI parks it (its NMI handler
/// sees the run ending); a CPU running the OS guest gets INIT instead, since
/// NMIs go to the OS: its INIT-signal exit parks it.
fn stop_other_cpus() {
    let me = pcb::this_cpu_index();
    for p in pcb::all().filter(|p| p.processor_index != me && p.has(CPU_STATUS_ONLINE)) {
        if p.has(CPU_STATUS_OS) {
            crate::apic::send_init(p.apic_id());
        } else {
            crate::apic::send_nmi(p.apic_id());
        }
    }
}

/// Stop this CPU for good: leave VMX operation if in it, then halt with
/// interrupts off (only NMI, INIT or reset wake it; the NMI handler parks again).
pub fn park() -> ! {
    // A CPU parked while draining the log must not keep the others from it.
    crate::logger::release_if_held();
    crate::console::release_if_held();
    if pcb::has_pcb() && pcb::this_cpu().has(CPU_STATUS_VMXON) {
        crate::virt::leave_for_park();
    }
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
