//! The proof guest, as both backends run it: what its vCPU carries, the
//! exits whose handling is the same under VMX and SVM (its COM1, its
//! hypercalls, the MSR it reads, the bench's samples), and the launch loop
//! that runs it (once, or once per hostile step) and gives the verdict.
//!
//! A backend decodes its exit (an exit reason and qualification, or an exit
//! code and EXITINFO) into the calls below, and carries out the `Action` each
//! returns in its own terms (the next instruction, an injected exception, or
//! the end of the guest).

use super::layout::*;
use super::nested::{self, Format, Tables};
use super::regs::GuestRegs;
use crate::{memory, run};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use hvlogic::cmdline::GuestKind;
use hvlogic::exit_qual::IoAccess;
use hvlogic::guest_plan::{median_min, Ending, GuestMode, HostileStep};
use hvlogic::os_guest::passes_through;
use hvlogic::summary::Virt;
use log::{debug, error, info};

/// Exits beyond this end the guest: the time budget bounds time without
/// exits, this bounds a guest that exits forever.
pub const EXIT_BUDGET: u64 = 1_000_000;

/// A message about what the guest did, unless the guest is quiet (the guest
/// fuzzer's thousands of runs would flood the log).
macro_rules! note {
    ($proof:expr, $level:ident, $($arg:tt)*) => {
        if !$proof.quiet {
            log::$level!($($arg)*);
        }
    };
}
pub(crate) use note;

const COM1: u16 = 0x3f8;
const COM1_LSR: u16 = COM1 + 5;
/// LSR: transmitter holding register empty, transmitter empty.
const LSR_IDLE: u64 = 0x60;

/// What the proof guest's vCPU carries besides the registers.
pub struct Proof {
    pub virt: Virt,
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
    /// CPUID exits the backend's fast path answered.
    pub fast_cpuids: &'static AtomicU32,
    /// The exit qualification (EXITINFO1) and a value (GPA, CR value, port)
    /// of the exit that ended the guest, for the report.
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
    /// The guest's CR8 (its task priority), kept apart from the host's local
    /// APIC (VMX: CR8-load and -store exiting; SVM: V_TPR).
    pub cr8: u64,
}

impl Proof {
    pub fn new(virt: Virt, mode: GuestMode, kind: GuestKind, memory: u64, maxphyaddr: u32) -> Proof {
        Proof {
            virt,
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

    /// The hypercall instruction's name on this host.
    pub const fn hypercall(&self) -> &'static str {
        match self.virt {
            Virt::Svm => "VMMCALL",
            _ => "VMCALL",
        }
    }

    /// The ending of an exit the handler refuses: VMX's exit reason, or
    /// SVM's exit code, of `vmx`/`svm`.
    pub const fn unexpected(&self, vmx: u16, svm: u64) -> Ending {
        match self.virt {
            Virt::Svm => Ending::UnexpectedSvm(svm as u16),
            _ => Ending::Unexpected(vmx),
        }
    }
}

/// What the backend does after a shared handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Step over the instruction that exited.
    Next,
    /// Inject #GP(0).
    Gp,
    /// End the guest.
    End(Ending),
}

/// Port I/O: the guest's own COM1 (a 16550 that is always ready); each line it
/// writes goes to the real COM1 with this CPU's prefix. Any other port, or
/// string I/O, ends the guest.
pub fn io(p: &mut Proof, regs: &mut GuestRegs, q: IoAccess) -> Action {
    if q.string || !(COM1..COM1 + 8).contains(&q.port) {
        p.ending_value = q.port as u64;
        note!(p, warn, "guest: {q}: refused (only COM1 is emulated)");
        return Action::End(p.unexpected(hvlogic::exit_reason::basic::IO_INSTRUCTION, hvlogic::svm::exit_code::IOIO));
    }
    if q.is_in {
        let value = if q.port == COM1_LSR { LSR_IDLE } else { 0 };
        let mask = (1u64 << (8 * q.size as u32)) - 1;
        regs.rax = (regs.rax & !mask) | value;
    } else if q.port == COM1 && !p.quiet {
        put_char(p, regs.rax as u8);
    }
    Action::Next
}

fn put_char(p: &mut Proof, byte: u8) {
    if byte == b'\n' || p.line_len == p.line.len() {
        flush_line(p);
    }
    if byte != b'\n' && byte != b'\r' {
        p.line[p.line_len] = byte;
        p.line_len += 1;
    }
}

/// Forward what the guest wrote since its last newline.
pub fn flush_line(p: &mut Proof) {
    if p.line_len > 0 {
        let text = core::str::from_utf8(&p.line[..p.line_len]).unwrap_or("<not UTF-8>");
        info!("guest: {text}");
        p.line_len = 0;
    }
}

/// Hypercalls (VMCALL, VMMCALL): EAX = function, arguments in EBX and ECX,
/// result in EAX.
pub fn hypercall(p: &mut Proof, regs: &mut GuestRegs) -> Action {
    let (function, b, c) = (regs.rax as u32 as u64, regs.rbx as u32 as u64, regs.rcx as u32 as u64);
    let name = p.hypercall();
    match function {
        HC_DONE => {
            return Action::End(if b == 0 { Ending::Success } else { Ending::GuestReportedFailure(b as u32) });
        }
        HC_REPORT_SAMPLES => {
            let room = p.samples.capacity() as u64;
            let taken = if c <= room && b % 4 == 0 { p.guest_slice(b, c * 4) } else { None };
            match taken {
                Some(bytes) => {
                    // Within the capacity reserved at set-up: no allocation here.
                    p.samples.clear();
                    p.samples.extend(bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
                    regs.rax = HC_OK;
                    if p.kind == GuestKind::Bench {
                        report_bench(p, regs.rdx as u32);
                    }
                }
                None => {
                    note!(p, warn, "guest: {name} report-samples({b:#x}, {c}) refused: not inside guest memory, or more than {room} samples");
                    regs.rax = HC_REFUSED;
                }
            }
        }
        _ => {
            note!(p, warn, "guest: {name} function {function:#x} unknown: refused");
            regs.rax = HC_REFUSED;
        }
    }
    Action::Next
}

/// `bench: cpuid-exit ...` for a leaf that passes through (the round trip
/// through the backend's fast path, where it has one), `bench:
/// cpuid-exit-adjusted ...` for one the dispatcher adjusts; with how many of
/// the set's exits the fast path answered. SVM's figures carry `-svm`.
fn report_bench(p: &mut Proof, leaf: u32) {
    let fast = p.fast_cpuids.swap(0, Ordering::Relaxed);
    let name = match (passes_through(leaf), p.virt) {
        (true, Virt::Svm) => "cpuid-exit-svm",
        (false, Virt::Svm) => "cpuid-exit-adjusted-svm",
        (true, _) => "cpuid-exit",
        (false, _) => "cpuid-exit-adjusted",
    };
    if let Some((median, min)) = median_min(&mut p.samples) {
        info!("bench: {name} median={median} min={min} leaf={leaf:#x} fast-path={fast}");
        p.bench_reports += 1;
    }
}

/// RDMSR: the trapped MSR reads "locked, off"; any other is refused (#GP).
pub fn rdmsr(p: &mut Proof, regs: &mut GuestRegs) -> Action {
    let msr = regs.rcx as u32;
    let (trapped, value) = trapped_msr(p.virt);
    if msr == trapped {
        regs.rax = value;
        regs.rdx = 0;
        return Action::Next;
    }
    note!(p, warn, "guest: RDMSR {msr:#x}: not emulated, #GP injected");
    Action::Gp
}

/// WRMSR: refused (#GP).
pub fn wrmsr(p: &mut Proof, regs: &GuestRegs) -> Action {
    note!(p, warn, "guest: WRMSR {:#x}: not allowed, #GP injected", regs.rcx as u32);
    Action::Gp
}

/// Where the guest runs: its nested page tables (mapping the guest's memory
/// and, for the real-mode start, the reset vector's page) or, without
/// nested paging, host-owned 32-bit page tables (CR3); and where the 32-bit
/// entry and the GDT are, for a start in protected mode.
pub struct AddressSpace {
    pub nested: Option<Tables>,
    pub cr3: u64,
    pub pm_entry: u64,
    pub gdt: u64,
}

/// The address space for `mode`, the guest's memory at host `mem`, nested
/// tables in `format`. None where 32-bit host-owned tables cannot reach the
/// guest's memory (above 4 GiB).
pub fn address_space(mode: GuestMode, mem: u64, format: Format) -> Option<AddressSpace> {
    let (pm_entry, gdt) = super::guest_image::protected_mode_entry();
    let mut cr3 = 0;
    let mut nested = None;
    match mode {
        GuestMode::RealFromReset | GuestMode::ProtectedEpt => {
            let mut tables = Tables::new(format);
            tables.map(0, mem, GUEST_MEM_SIZE, nested::RWX);
            if mode == GuestMode::RealFromReset {
                // The reset vector: F000:FFF0 is guest-physical FFFFFFF0; a far jump to IMAGE.
                let page = memory::alloc_pages(1);
                page[0xff0..0xff5].copy_from_slice(&[0xea, IMAGE as u8, (IMAGE >> 8) as u8, 0, 0]);
                let reset = page.as_ptr() as u64;
                tables.map(RESET_PAGE_GPA, reset, memory::PAGE_SIZE as u64, nested::READ | nested::EXECUTE);
            } else {
                // 32-bit paging inside guest memory, identity over the guest's memory.
                write_page_tables(mem + PAGE_DIRECTORY, mem + PAGE_TABLE, PAGE_TABLE, 0);
                cr3 = PAGE_DIRECTORY;
            }
            nested = Some(tables);
        }
        GuestMode::ProtectedNoEpt => {
            // Tables outside guest memory: the guest can neither see nor change them.
            let pd = memory::alloc_pages(1).as_ptr() as u64;
            let pt = memory::alloc_pages(1).as_ptr() as u64;
            if pd >> 32 != 0 || pt >> 32 != 0 || mem >> 32 != 0 {
                return None;
            }
            write_page_tables(pd, pt, pt, mem);
            cr3 = pd;
        }
    }
    Some(AddressSpace { nested, cr3, pm_entry, gdt })
}

/// A 32-bit page directory at host address `pd` whose entry 0 points at the
/// table `pt_address` (as the guest sees it); the table at host address `pt`
/// maps guest-linear [0, GUEST_MEM_SIZE) to `base + linear` (SDM Vol. 3A §4.3
/// "32-Bit Paging").
fn write_page_tables(pd: u64, pt: u64, pt_address: u64, base: u64) {
    const PRESENT_WRITABLE: u32 = 0x3;
    // SAFETY: both are zeroed, page-aligned pages the hypervisor owns.
    unsafe {
        (pd as *mut u32).write(pt_address as u32 | PRESENT_WRITABLE);
        for i in 0..GUEST_MEM_SIZE / memory::PAGE_SIZE as u64 {
            (pt as *mut u32).add(i as usize).write((base + i * memory::PAGE_SIZE as u64) as u32 | PRESENT_WRITABLE);
        }
    }
}

/// One CPU's proof guest as its backend runs it.
pub trait Launch {
    type Error: fmt::Display;
    /// The guest's shared state.
    fn proof(&mut self) -> &mut Proof;
    /// Start the guest afresh (`step` in its parameter block) and run it to its end.
    fn launch(&mut self, step: u32) -> Result<Ending, Self::Error>;
    /// The detail of how the last launch ended, appended to its report line.
    fn note(&mut self) -> alloc::string::String;
    /// The guest's registers and state, for a guest that did not end as intended.
    fn dump(&mut self, level: log::Level);
    /// Whether a time budget stops a guest that never exits (else the
    /// never-ending hostile step is skipped).
    fn timed(&self) -> bool;
    /// Exits since the last launch.
    fn exits(&mut self) -> u64;
}

/// Run the guest to its end (each hostile step in turn); true if it ended as intended.
pub fn run_to_end<L: Launch>(l: &mut L) -> Result<bool, L::Error> {
    let (virt, mode, kind) = {
        let p = l.proof();
        (p.virt, p.mode, p.kind)
    };
    if kind != GuestKind::Hostile {
        let ending = l.launch(0)?;
        return Ok(report_single(l, ending));
    }
    let steps = HostileStep::steps(virt);
    let mut contained = 0;
    for &step in steps {
        if step == HostileStep::NeverEnds && !l.timed() {
            info!("hostile step {} ({}): skipped, no VMX-preemption timer", step.number(), step.describe());
            contained += 1;
            continue;
        }
        let ending = l.launch(step.number())?;
        if ending == Ending::EntryFailed {
            error!("hostile step {} ({}): VM entry failed; no further steps", step.number(), step.describe());
            break;
        }
        let expected = step.expected(mode, virt);
        let note = l.note();
        if ending == expected {
            info!("hostile step {} ({}): contained: {}{note}", step.number(), step.describe(), ending.named(virt));
            if ending != Ending::Success {
                l.dump(log::Level::Info);
            }
            contained += 1;
        } else {
            error!(
                "hostile step {} ({}): ended by {}{note}, expected {}",
                step.number(),
                step.describe(),
                ending.named(virt),
                expected.named(virt)
            );
            l.dump(log::Level::Error);
        }
    }
    let all = steps.len();
    if contained == all {
        info!("guest ok: hostile guest contained ({contained} of {all} attempts)");
    } else {
        error!("guest failed: hostile guest contained only {contained} of {all} attempts");
    }
    Ok(contained == all)
}

/// Report a normal or bench guest's end; true if it ended as intended.
fn report_single<L: Launch>(l: &mut L, ending: Ending) -> bool {
    let virt = l.proof().virt;
    let kind = l.proof().kind;
    debug!("guest: {} VM exits", l.exits());
    match ending {
        Ending::Success => {
            if kind == GuestKind::Bench && l.proof().bench_reports == 0 {
                error!("bench: the guest reported no samples");
                return false;
            }
            info!("guest ok: ended with {}", ending.named(virt));
            true
        }
        other => {
            let note = l.note();
            error!("guest failed: {}{note}", other.named(virt));
            l.dump(log::Level::Error);
            false
        }
    }
}

/// Whether the run is ending: an NMI that reaches a guest's exit handler
/// then parks the CPU.
pub fn park_if_ending() {
    if run::is_ending() {
        run::park();
    }
}
