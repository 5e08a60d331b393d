//! The proof guest's vCPU: what it carries, and its VM-exit handler. CPUID is
//! the fast path: no allocation, no lock, no logging, a handful of
//! VMREAD/VMWRITEs. Everything else goes through `slow_path`, which matches on
//! named exit reasons and either emulates, injects, or ends the guest.

use super::emulate::{self, inject, inject_gp, unblock_nmis, UD};
use super::instructions::vmread_unchecked;
use super::layout::*;
use super::vcpu::{Vcpu, RESUME, STOP};
use super::vmcs;
use crate::run;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use hvlogic::cmdline::GuestKind;
use hvlogic::exit_qual::{CrAccess, CrAccessKind, Interruption, IoAccess};
use hvlogic::exit_reason::{basic, ExitReason};
use hvlogic::guest_plan::median_min;
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::os_guest::{passes_through, Hidden};
use log::{error, info, warn};
use x86::vmx::vmcs::{guest, ro};

/// Exits beyond this end the guest: the VMX-preemption timer bounds time
/// without exits, this bounds a guest that exits forever.
pub const EXIT_BUDGET: u64 = 1_000_000;

/// A message about what the guest did, unless the vCPU is quiet (the guest
/// fuzzer's thousands of runs would flood the log).
macro_rules! note {
    ($vcpu:expr, $level:ident, $($arg:tt)*) => {
        if !$vcpu.guest.quiet {
            $level!($($arg)*);
        }
    };
}

const COM1: u16 = 0x3f8;
const COM1_LSR: u16 = COM1 + 5;
/// LSR: transmitter holding register empty, transmitter empty.
const LSR_IDLE: u64 = 0x60;

/// What the proof guest's vCPU carries besides the registers.
pub struct Proof {
    pub mode: GuestMode,
    pub kind: GuestKind,
    /// Guest memory: guest address X is at `memory + X`.
    pub memory: u64,
    /// The physical-address width (PCB `Own::maxphyaddr`).
    pub maxphyaddr: u32,
    pub ending: Option<Ending>,
    /// The guest's COM1 line being assembled.
    pub line: [u8; 120],
    pub line_len: usize,
    /// Samples handed over by HC_REPORT_SAMPLES (allocated up front), and
    /// how many sets the bench guest reported.
    pub samples: Vec<u32>,
    pub bench_reports: u32,
    /// CPUID exits entry.s's fast path answered (`Vcpu::set_fast_cpuid`).
    pub fast_cpuids: &'static AtomicU32,
    /// The exit qualification and a value (GPA, CR value, port) of the exit
    /// that ended the guest, for the report.
    pub ending_qualification: u64,
    pub ending_value: u64,
    /// Bytes of guest memory (guest addresses [0, mem_size)).
    pub mem_size: u64,
    /// Exits after which the guest ends (EXIT_BUDGET, or the fuzzer's).
    pub exit_budget: u64,
    /// No message per exit, and the guest's COM1 output dropped (guest=fuzz).
    pub quiet: bool,
    /// The local-APIC timer vector the host armed as this guest's time budget, if any.
    pub timer_vector: Option<u8>,
    /// The guest's CR8 (its task priority), which CR8-load and -store exiting
    /// keep apart from the host's local APIC.
    pub cr8: u64,
}

pub type ProofVcpu = Vcpu<Proof>;

impl Proof {
    pub fn new(mode: GuestMode, kind: GuestKind, memory: u64, maxphyaddr: u32) -> Proof {
        Proof {
            mode,
            kind,
            memory,
            maxphyaddr,
            ending: None,
            line: [0; 120],
            line_len: 0,
            samples: Vec::with_capacity(if kind == GuestKind::Bench { BENCH_ITERATIONS as usize } else { 0 }),
            bench_reports: 0,
            fast_cpuids: alloc::boxed::Box::leak(alloc::boxed::Box::new(AtomicU32::new(0))),
            ending_qualification: 0,
            ending_value: 0,
            mem_size: GUEST_MEM_SIZE,
            exit_budget: EXIT_BUDGET,
            quiet: false,
            timer_vector: None,
            cr8: 0,
        }
    }

    /// Guest memory `[gpa, gpa + len)` as host memory, if it lies inside the guest.
    pub fn guest_slice(&self, gpa: u64, len: u64) -> Option<&'static [u8]> {
        let end = gpa.checked_add(len)?;
        if end > self.mem_size {
            return None;
        }
        // SAFETY: inside this guest's memory, which the hypervisor owns and keeps mapped.
        Some(unsafe { core::slice::from_raw_parts((self.memory + gpa) as *const u8, len as usize) })
    }
}

/// End the guest with `ending` (the handler's stop).
fn end(vcpu: &mut ProofVcpu, ending: Ending) -> u64 {
    vcpu.guest.ending = Some(ending);
    STOP
}

/// The exit handler (`Vcpu::dispatch`), on this CPU's exit stack with the guest registers saved.
pub extern "C" fn dispatch(vcpu: &mut ProofVcpu) -> u64 {
    vcpu.exits += 1;
    // SAFETY: this CPU's VMCS is current during every VM exit; the field exists.
    let reason = unsafe { vmread_unchecked(ro::EXIT_REASON) } as u32;
    if reason == basic::CPUID as u32 && vcpu.exits <= vcpu.guest.exit_budget {
        emulate::cpuid(&mut vcpu.regs, vcpu.processor_index, Hidden::default());
        return next_instruction(vcpu);
    }
    slow_path(vcpu, ExitReason(reason))
}

/// Step over the instruction that exited, with the single-step trap it would
/// have raised; a VMCS that cannot take it ends the guest.
#[inline(always)]
fn next_instruction(vcpu: &mut ProofVcpu) -> u64 {
    match emulate::skip_instruction() {
        Ok(()) => RESUME,
        Err(e) => {
            error!("guest: {e}");
            end(vcpu, Ending::EntryFailed)
        }
    }
}

/// Resume after an injection, or end the guest if the VMCS refused it.
fn injected(vcpu: &mut ProofVcpu, r: Result<(), vmcs::VmcsError>) -> u64 {
    match r {
        Ok(()) => RESUME,
        Err(e) => {
            error!("guest: {e}");
            end(vcpu, Ending::EntryFailed)
        }
    }
}

#[cold]
#[inline(never)]
fn slow_path(vcpu: &mut ProofVcpu, reason: ExitReason) -> u64 {
    // An external interrupt this exit acknowledged (the "acknowledge interrupt
    // on exit" control) is in service at the local APIC until EOI, whatever
    // ends the guest: left there, it would hold back its class for good. The
    // exit-budget check used to come first and skip the EOI (seen in review
    // while chasing a hang of guest=fuzz on penryn; the fuzzer now checks
    // that no vector is left in service after each run).
    let interrupt = (reason.basic() == basic::EXTERNAL_INTERRUPT && !reason.entry_failure()).then(|| {
        crate::apic::end_of_interrupt();
        Interruption(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u32).vector()
    });
    if vcpu.exits > vcpu.guest.exit_budget {
        return end(vcpu, Ending::ExitBudget);
    }
    let qualification = vmcs::read(ro::EXIT_QUALIFICATION);
    vcpu.guest.ending_qualification = qualification;
    if reason.entry_failure() {
        super::dump::entry_failure(reason, qualification);
        return end(vcpu, Ending::EntryFailed);
    }
    match reason.basic() {
        basic::IO_INSTRUCTION => io(vcpu, IoAccess::decode(qualification)),
        basic::VMCALL => vmcall(vcpu),
        basic::RDMSR => rdmsr(vcpu),
        basic::WRMSR => {
            note!(vcpu, warn, "guest: WRMSR {:#x}: not allowed, #GP injected", vcpu.regs.rcx as u32);
            injected(vcpu, inject_gp())
        }
        basic::CR_ACCESS => cr_access(vcpu, CrAccess::decode(qualification)),
        basic::HLT => end(vcpu, Ending::Hlt),
        basic::TRIPLE_FAULT => end(vcpu, Ending::TripleFault),
        basic::EPT_VIOLATION => {
            vcpu.guest.ending_value = vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL);
            end(vcpu, Ending::EptViolation)
        }
        basic::PREEMPTION_TIMER => end(vcpu, Ending::PreemptionTimer),
        basic::VMXON
        | basic::VMXOFF
        | basic::VMCLEAR
        | basic::VMPTRLD
        | basic::VMPTRST
        | basic::VMREAD
        | basic::VMWRITE
        | basic::VMLAUNCH
        | basic::VMRESUME
        | basic::INVEPT
        | basic::INVVPID
        | basic::VMFUNC => {
            note!(vcpu, info, "guest executed {}: VMX is hidden from guests, #UD injected", reason.name());
            injected(vcpu, inject(UD, None))
        }
        basic::EXCEPTION_OR_NMI => {
            let info = Interruption(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u32);
            if !info.is_nmi() && emulate::REFLECTED_EXCEPTIONS & 1 << info.vector() != 0 {
                return injected(vcpu, emulate::reflect(info, vmcs::read(ro::EXIT_QUALIFICATION)));
            }
            if info.is_nmi() {
                if run::is_ending() {
                    run::park();
                }
                note!(vcpu, error, "guest: an NMI arrived while the guest ran (none is expected)");
                unblock_nmis();
            }
            vcpu.guest.ending_value = info.vector() as u64;
            end(vcpu, Ending::Unexpected(basic::EXCEPTION_OR_NMI))
        }
        basic::EXTERNAL_INTERRUPT => {
            // Acknowledged on exit and ended above: dismiss it and go on,
            // unless it is the host's timer ending the guest's time.
            if interrupt.is_some() && vcpu.guest.timer_vector == interrupt {
                return end(vcpu, Ending::HostTimer);
            }
            warn!(
                "guest: external interrupt, vector {}, acknowledged and dismissed (the host uses no interrupts)",
                interrupt.unwrap_or(0)
            );
            RESUME
        }
        other => end(vcpu, Ending::Unexpected(other)),
    }
}

/// Port I/O: the guest's own COM1 (a 16550 that is always ready); each line it
/// writes goes to the real COM1 with this CPU's prefix. Any other port, or
/// string I/O, ends the guest.
fn io(vcpu: &mut ProofVcpu, q: IoAccess) -> u64 {
    if q.string || !(COM1..COM1 + 8).contains(&q.port) {
        vcpu.guest.ending_value = q.port as u64;
        note!(vcpu, warn, "guest: {q}: refused (only COM1 is emulated)");
        return end(vcpu, Ending::Unexpected(basic::IO_INSTRUCTION));
    }
    if q.is_in {
        let value = if q.port == COM1_LSR { LSR_IDLE } else { 0 };
        let mask = (1u64 << (8 * q.size as u32)) - 1;
        vcpu.regs.rax = (vcpu.regs.rax & !mask) | value;
    } else if q.port == COM1 && !vcpu.guest.quiet {
        put_char(vcpu, vcpu.regs.rax as u8);
    }
    next_instruction(vcpu)
}

fn put_char(vcpu: &mut ProofVcpu, byte: u8) {
    if byte == b'\n' || vcpu.guest.line_len == vcpu.guest.line.len() {
        flush_line(vcpu);
    }
    if byte != b'\n' && byte != b'\r' {
        vcpu.guest.line[vcpu.guest.line_len] = byte;
        vcpu.guest.line_len += 1;
    }
}

/// Forward what the guest wrote since its last newline.
pub fn flush_line(vcpu: &mut ProofVcpu) {
    if vcpu.guest.line_len > 0 {
        let text = core::str::from_utf8(&vcpu.guest.line[..vcpu.guest.line_len]).unwrap_or("<not UTF-8>");
        info!("guest: {text}");
        vcpu.guest.line_len = 0;
    }
}

/// Hypercalls: EAX = function, arguments in EBX and ECX, result in EAX.
fn vmcall(vcpu: &mut ProofVcpu) -> u64 {
    let (function, b, c) = (vcpu.regs.rax as u32 as u64, vcpu.regs.rbx as u32 as u64, vcpu.regs.rcx as u32 as u64);
    match function {
        HC_DONE => {
            return end(vcpu, if b == 0 { Ending::Success } else { Ending::GuestReportedFailure(b as u32) });
        }
        HC_REPORT_SAMPLES => {
            let room = vcpu.guest.samples.capacity() as u64;
            let taken = if c <= room && b % 4 == 0 { vcpu.guest.guest_slice(b, c * 4) } else { None };
            match taken {
                Some(bytes) => {
                    // Within the capacity reserved at set-up: no allocation here.
                    vcpu.guest.samples.clear();
                    vcpu.guest
                        .samples
                        .extend(bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
                    vcpu.regs.rax = HC_OK;
                    if vcpu.guest.kind == GuestKind::Bench {
                        report_bench(vcpu, vcpu.regs.rdx as u32);
                    }
                }
                None => {
                    note!(vcpu, warn, "guest: VMCALL report-samples({b:#x}, {c}) refused: not inside guest memory, or more than {room} samples");
                    vcpu.regs.rax = HC_REFUSED;
                }
            }
        }
        _ => {
            note!(vcpu, warn, "guest: VMCALL function {function:#x} unknown: refused");
            vcpu.regs.rax = HC_REFUSED;
        }
    }
    next_instruction(vcpu)
}

/// `bench: cpuid-exit ...` for a leaf that passes through (the round trip
/// through entry.s's fast path, where the CPU has it), `bench:
/// cpuid-exit-adjusted ...` for one the dispatcher adjusts; with how many of
/// the set's exits the fast path answered.
fn report_bench(vcpu: &mut ProofVcpu, leaf: u32) {
    let fast = vcpu.guest.fast_cpuids.swap(0, Ordering::Relaxed);
    let name = if passes_through(leaf) { "cpuid-exit" } else { "cpuid-exit-adjusted" };
    if let Some((median, min)) = median_min(&mut vcpu.guest.samples) {
        info!("bench: {name} median={median} min={min} leaf={leaf:#x} fast-path={fast}");
        vcpu.guest.bench_reports += 1;
    }
}

fn rdmsr(vcpu: &mut ProofVcpu) -> u64 {
    let msr = vcpu.regs.rcx as u32;
    match msr {
        TRAPPED_MSR => {
            vcpu.regs.rax = TRAPPED_MSR_VALUE;
            vcpu.regs.rdx = 0;
            next_instruction(vcpu)
        }
        _ => {
            note!(vcpu, warn, "guest: RDMSR {msr:#x}: not emulated, #GP injected");
            injected(vcpu, inject_gp())
        }
    }
}

/// MOV to/from CR3 is emulated where EPT makes CR3 the guest's own; without
/// EPT a CR3 load is refused (the page tables are the hypervisor's). CR8 is
/// the guest's own task priority, kept in the vCPU. Any other access that
/// exits touches host-owned CR0/CR4 bits and is refused.
fn cr_access(vcpu: &mut ProofVcpu, q: CrAccess) -> u64 {
    match (q.cr, q.kind) {
        (3, CrAccessKind::MovToCr) => {
            let value = vcpu.regs.get(q.gpr);
            if value >> vcpu.guest.maxphyaddr != 0 {
                note!(vcpu, warn, "guest: {q} = {value:#x}: beyond the physical-address width, #GP injected");
                return injected(vcpu, inject_gp());
            }
            if vcpu.guest.mode == GuestMode::ProtectedNoEpt {
                vcpu.guest.ending_value = value;
                note!(vcpu, info, "guest: {q} = {value:#x}: refused, the guest's page tables belong to the hypervisor");
                return end(vcpu, Ending::CrWriteRefused);
            }
            // A real MOV to CR3 flushes this VPID's translations; VMWRITE does not.
            match vmcs::write(guest::CR3, value) {
                Ok(()) if vcpu.flush_vpid() => next_instruction(vcpu),
                _ => end(vcpu, Ending::CrWriteRefused),
            }
        }
        (8, CrAccessKind::MovToCr) => {
            // MOV to CR8 with bits 63:4 set is #GP(0) (SDM Vol. 2B
            // "MOV—Move to/from Control Registers").
            let value = vcpu.regs.get(q.gpr);
            if value >> 4 != 0 {
                return injected(vcpu, inject_gp());
            }
            vcpu.guest.cr8 = value;
            next_instruction(vcpu)
        }
        (8, CrAccessKind::MovFromCr) => match vcpu.regs.set(q.gpr, vcpu.guest.cr8) {
            Ok(()) => next_instruction(vcpu),
            Err(_) => end(vcpu, Ending::CrWriteRefused),
        },
        (3, CrAccessKind::MovFromCr) => {
            let cr3 = vmcs::read(guest::CR3);
            match vcpu.regs.set(q.gpr, cr3) {
                Ok(()) => next_instruction(vcpu),
                Err(_) => end(vcpu, Ending::CrWriteRefused),
            }
        }
        _ => {
            vcpu.guest.ending_value = if q.kind == CrAccessKind::MovToCr { vcpu.regs.get(q.gpr) } else { 0 };
            note!(vcpu, info, "guest: {q}: changes host-owned bits, refused");
            end(vcpu, Ending::CrWriteRefused)
        }
    }
}
