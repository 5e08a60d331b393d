//! What the guest fuzzers of both backends share (`vmx/fuzz_guest.rs`,
//! `svm/fuzz_guest.rs`): the seed, the replay words, the record of which run
//! each CPU is in (for the report of an exception in the host), the watchdog
//! that sends a hung CPU an NMI, and the host state a guest must not change.
//! The runs themselves, and how each backend's guest ends, are the backends'.

use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_VMXON, MAX_CPUS};
use crate::virt::proof::Proof;
use crate::virt::regs::GuestRegs;
use crate::{apic, memory, run, tsc};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hvlogic::cmdline::Inject;
use hvlogic::guest_fuzz::{self as gf, Class, Line, Mode, ModesLine, Plan, Tally};
use hvlogic::guest_plan::Ending;
use hvlogic::summary::Virt;
use log::{error, info};

/// A run that takes longer than this (host time included) did not end as it
/// should: a host failure.
pub const RUN_DEADLINE_US: u64 = 50_000;
/// Host failures whose guest state is dumped in full; later ones get one line.
pub const DUMP_LIMIT: u64 = 5;
/// A progress line every this many runs.
pub const PROGRESS_EVERY: u64 = 1_000;
/// A run still going after this long has hung: a CPU done with its own runs
/// sends the hung one an NMI, which exits its guest (VMX: NMI exiting; SVM:
/// the NMI intercept). Each fuzzer passes its bound to `watch`.
pub const HANG_US: u64 = RUN_DEADLINE_US;
/// Both bounds under QEMU's TCG, whose TSC follows the host's clock: with
/// more virtual CPUs than host cores, a virtual CPU waits for its turn in
/// the middle of a run, and tens of milliseconds pass (a 4-CPU run on this
/// 2-core machine saw runs of 50-55 ms between exits of an ordinary guest;
/// with four other 4-CPU QEMUs beside it, runs of over 2 s). A hang is still
/// a hang at 10 s; a host too busy to run a virtual CPU for 10 s is not a
/// host failure of this hypervisor.
pub const HOST_CLOCK_DEADLINE_US: u64 = 10_000_000;
/// How long a watcher waits after its NMI before it leaves a CPU that still
/// does not finish its run to the stage timeout.
const GIVE_UP_US: u64 = 5_000_000;

/// The run each CPU is in (index + 1; 0 when none) and its stream's seed,
/// for the report of an exception in the host.
static ACTIVE_RUN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CPU_SEED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The TSC at the start of each CPU's current run (0 between runs), the run a
/// watchdog NMI was sent for (index + 1), and whether the CPU is done with its runs.
static RUN_START: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static NMI_SENT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A watchdog NMI is on its way to the CPU and has not been taken yet: it may
/// arrive after the run it was sent for has ended, in the host or in a later run.
static NMI_PENDING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A watchdog NMI for a run still going landed in the host, between two of
/// its exits, and was dropped: the watcher sends another.
static NMI_AGAIN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// SVM: an NMI exited the guest and stays pending (the #VMEXIT does not take
/// it, APM Vol. 2 §15.13.2 "NMI Intercept"; GIF 0 holds it, §15.17 "Global
/// Interrupt Flag, STGI and CLGI"), so the host takes it at the STGI that
/// follows: its run has dealt with it.
static NMI_EXITED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A random seed, chosen once by whichever CPU comes first (bit 63 marks it set).
static RANDOM_SEED: AtomicU64 = AtomicU64::new(0);
const SEED_SET: u64 = 1 << 63;

/// A 64-bit seed from RDRAND where the CPU has it (CPUID.01H:ECX[30]), else the TSC.
pub fn random_seed() -> (u64, &'static str) {
    if raw_cpuid::cpuid!(1).ecx & (1 << 30) != 0 {
        for _ in 0..10 {
            let (value, ok): (u64, u8);
            // SAFETY: RDRAND exists (CPUID); it only writes its operand and CF.
            unsafe { core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok) };
            if ok != 0 {
                return (value, "RDRAND");
            }
        }
    }
    // SAFETY: RDTSC is available in every mode this kernel runs in.
    (unsafe { core::arch::x86_64::_rdtsc() }, "RDTSC")
}

/// The run's seed: `seed=`, or one random 32-bit seed shared by every CPU.
pub fn shared_seed() -> (u64, &'static str) {
    if let Some(s) = run::options().seed {
        return (s, "given");
    }
    let (random, source) = random_seed();
    let candidate = SEED_SET | (random & 0xffff_ffff);
    let seed = match RANDOM_SEED.compare_exchange(0, candidate, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => candidate,
        Err(first) => first,
    };
    (seed & !SEED_SET, source)
}

/// The words that replay run `k` of a stream on one CPU.
pub struct Replay(pub u64, pub u64);

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest=fuzz seed={} fuzz-runs=1 fuzz-skip={}", self.0, self.1)
    }
}

/// The first line of a fuzzing run, on the boot CPU.
pub fn announce(seed: u64, source: &str, runs: u64, skip: u64) {
    info!(
        "fuzz: seed={seed} ({source}); {runs} runs per CPU from run {skip}; cpu i replays run k alone with `guest=fuzz seed=<seed+i> fuzz-runs=1 fuzz-skip=<k>`"
    );
}

/// One CPU's record, for the watchdog and the exception handler.
#[derive(Clone, Copy)]
pub struct Runs(usize);

impl Runs {
    /// CPU `cpu` fuzzes with stream seed `cpu_seed`.
    pub fn new(cpu: u32, cpu_seed: u64) -> Runs {
        CPU_SEED[cpu as usize].store(cpu_seed, Ordering::Release);
        Runs(cpu as usize)
    }

    /// Run `k` is being prepared (an exception from here on names it).
    pub fn enter(&self, k: u64) {
        ACTIVE_RUN[self.0].store(k + 1, Ordering::Release);
    }

    /// Run `k`'s guest starts: the watchdog's clock runs.
    pub fn start(&self) {
        RUN_START[self.0].store(tsc::rdtsc().max(1), Ordering::Release);
    }

    /// The guest has stopped.
    pub fn stop(&self) {
        RUN_START[self.0].store(0, Ordering::Release);
    }

    /// Whether another CPU's watchdog sent an NMI for run `k`.
    pub fn watchdog_sent_for(&self, k: u64) -> bool {
        NMI_SENT[self.0].load(Ordering::Acquire) == k + 1
    }

    /// Take the note that a watchdog NMI is on its way (true if one was).
    pub fn take_pending_nmi(&self) -> bool {
        NMI_PENDING[self.0].swap(false, Ordering::AcqRel)
    }

    /// Done with its runs: no watcher waits on this CPU any more.
    pub fn finish(&self) {
        ACTIVE_RUN[self.0].store(0, Ordering::Release);
        RUN_START[self.0].store(0, Ordering::Release);
        done(self.0 as u32);
    }
}

/// SVM, from the #VMEXIT handler: an NMI exited CPU `cpu`'s guest, and the
/// host takes it at the STGI that ends the run; the exception handler then
/// drops it (`watchdog_nmi_in_host`).
pub fn nmi_exited(cpu: u32) {
    if let Some(e) = NMI_EXITED.get(cpu as usize) {
        e.store(true, Ordering::Release);
    }
}

/// However a CPU's runs ended (a set-up error returns early), no watcher
/// waits on it any more.
pub fn done(cpu: u32) {
    DONE[cpu as usize].store(true, Ordering::Release);
}

/// From the exception handler: if this CPU was in a fuzz run, name it.
pub fn note_host_exception(cpu: u32) {
    let Some(active) = ACTIVE_RUN.get(cpu as usize) else { return };
    let run = active.load(Ordering::Acquire);
    if run != 0 {
        let seed = CPU_SEED[cpu as usize].load(Ordering::Acquire);
        error!(
            "fuzz: host failure on cpu{cpu} run {}: an exception in the host; replay: {}",
            run - 1,
            Replay(seed, run - 1)
        );
    }
}

/// From the NMI handler: whether this NMI is a fuzzer's, to be dropped.
/// Under SVM the NMI that exited a guest is taken in the host at the STGI
/// that follows (`Runs::nmi_exited`): its run has dealt with it. Otherwise a
/// watchdog NMI arrived in the host: if the run it was sent for has ended,
/// that run's own check (RUN_DEADLINE_US) reports a run that went on too
/// long; if the run goes on (the NMI came between two of its exits), the
/// watcher sends another.
pub fn watchdog_nmi_in_host(cpu: u32) -> bool {
    let i = cpu as usize;
    if NMI_EXITED.get(i).is_some_and(|e| e.swap(false, Ordering::AcqRel)) {
        return true;
    }
    if !NMI_PENDING.get(i).is_some_and(|p| p.swap(false, Ordering::AcqRel)) {
        return false;
    }
    let running = RUN_START[i].load(Ordering::Acquire) != 0;
    if running && ACTIVE_RUN[i].load(Ordering::Acquire) == NMI_SENT[i].load(Ordering::Acquire) {
        NMI_AGAIN[i].store(true, Ordering::Release);
    }
    true
}

/// Until every other fuzzing CPU is done (or WATCH_US passed): send an NMI
/// to one whose run has gone on for HANG_US, once per run. In its guest the
/// NMI exits (the handler ends the run, which counts as a host failure);
/// in its host it is reported as an exception with the run's replay words.
pub fn watch_others(me: u32, hang_us: u64) {
    loop {
        crate::logger::poll();
        match watch(me, hang_us) {
            Watch::AllDone => return,
            Watch::GaveUp => {
                error!("fuzz: a run did not end even after an NMI: cpu{me} stops watching");
                return;
            }
            Watch::Running => core::hint::spin_loop(),
        }
    }
}

pub enum Watch {
    AllDone,
    Running,
    GaveUp,
}

/// One look at the other fuzzing CPUs: an NMI to one whose run has gone on
/// for `hang_us` (once per run).
pub fn watch(me: u32, hang_us: u64) -> Watch {
    let others = || crate::pcb::all().filter(move |p| p.processor_index != me && p.has(CPU_STATUS_VMXON));
    let (hang, give_up) = (tsc::micros_to_ticks(hang_us), tsc::micros_to_ticks(hang_us + GIVE_UP_US));
    let mut all_done = true;
    for p in others() {
        let i = p.processor_index as usize;
        if DONE[i].load(Ordering::Acquire) {
            continue;
        }
        all_done = false;
        // A consistent pair: the run read between two equal reads of its
        // start (a new run stores ACTIVE_RUN before its RUN_START, and the
        // TSC never repeats a start).
        let start = RUN_START[i].load(Ordering::Acquire);
        let run = ACTIVE_RUN[i].load(Ordering::Acquire);
        if RUN_START[i].load(Ordering::Acquire) != start {
            continue;
        }
        let elapsed = if start == 0 { 0 } else { tsc::rdtsc().saturating_sub(start) };
        if elapsed <= hang {
            continue;
        }
        let sent = NMI_SENT[i].load(Ordering::Acquire);
        if sent != run {
            if NMI_SENT[i].compare_exchange(sent, run, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                info!(
                    "fuzz: cpu{i} run {} has not ended after {} ms: cpu{me} sends it an NMI",
                    run - 1,
                    hang_us / 1000
                );
                NMI_PENDING[i].store(true, Ordering::Release);
                apic::send_nmi(p.apic_id());
            }
        } else if NMI_AGAIN[i].swap(false, Ordering::AcqRel) {
            NMI_PENDING[i].store(true, Ordering::Release);
            apic::send_nmi(p.apic_id());
        } else if elapsed > give_up {
            return Watch::GaveUp;
        }
    }
    if all_done {
        Watch::AllDone
    } else {
        Watch::Running
    }
}

/// The host state a guest must not change (what VM exits and #VMEXITs do not
/// load, and what they do, as a check on the host-state area or the host
/// save area).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    values: [u64; HOST_STATE_NAMES.len()],
}

/// The last entry is SVM's own (read as 0 under VMX).
const HOST_STATE_NAMES: [&str; 20] = [
    "CR0",
    "CR3",
    "CR4",
    "CR8",
    "DR7",
    "IA32_EFER",
    "IA32_PAT",
    "IA32_SYSENTER_CS",
    "IA32_SYSENTER_ESP",
    "IA32_SYSENTER_EIP",
    "IA32_FS_BASE",
    "IA32_GS_BASE",
    "IA32_KERNEL_GS_BASE",
    "IA32_STAR",
    "IA32_LSTAR",
    "IA32_FMASK",
    "IA32_DEBUGCTL",
    "GDTR base",
    "IDTR base",
    "VM_HSAVE_PA",
];

impl HostState {
    pub fn read() -> HostState {
        let dr7: u64;
        // SAFETY: reading DR7 at CPL 0 has no side effect.
        unsafe { core::arch::asm!("mov {}, dr7", out(reg) dr7, options(nomem, nostack, preserves_flags)) };
        // SAFETY: architectural MSRs of every x86-64 CPU with VMX or SVM (SDM Vol. 4
        // Table 2-2 "IA-32 Architectural MSRs"; APM Vol. 2 Appendix A "MSR Cross-Reference").
        let msr = |n| unsafe { x86::msr::rdmsr(n) };
        let hsave = match super::kind() {
            // SAFETY: VM_HSAVE_PA exists on every CPU with SVM (APM Vol. 2 §15.30.4 "VM_HSAVE_PA MSR").
            super::Kind::Svm => unsafe { x86::msr::rdmsr(hvlogic::svm::VM_HSAVE_PA) },
            super::Kind::Vmx => 0,
        };
        let gdt = x86_64::instructions::tables::sgdt();
        let idt = x86_64::instructions::tables::sidt();
        HostState {
            values: [
                x86_64::registers::control::Cr0::read_raw(),
                x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(),
                x86_64::registers::control::Cr4::read_raw(),
                apic::task_priority() as u64,
                dr7,
                msr(0xc000_0080),
                msr(0x277),
                msr(0x174),
                msr(0x175),
                msr(0x176),
                msr(0xc000_0100),
                msr(0xc000_0101),
                msr(0xc000_0102),
                msr(0xc000_0081),
                msr(0xc000_0082),
                msr(0xc000_0084),
                // Not under SVM: VMRUN and #VMEXIT switch DBGCTL only with LBR
                // virtualization, which this hypervisor leaves off, and Bochs
                // 2.7's AMD models have no MSR 1D9h.
                if hsave == 0 { msr(0x1d9) } else { 0 },
                // Every VM exit sets both limits to FFFFH (SDM Vol. 3C §28.5.2
                // "Loading Host Segment and Descriptor-Table Registers"); the
                // IDT covers every vector for that reason (idt.rs).
                gdt.base.as_u64(),
                idt.base.as_u64(),
                hsave,
            ],
        }
    }

    /// What changed from `before`, as `name before -> after`.
    pub fn changes<'a>(&'a self, before: &'a HostState) -> impl Iterator<Item = (&'static str, u64, u64)> + 'a {
        (0..HOST_STATE_NAMES.len())
            .filter(|&i| self.values[i] != before.values[i])
            .map(|i| (HOST_STATE_NAMES[i], before.values[i], self.values[i]))
    }

    /// Put back what a guest can leave changed, so later runs check against
    /// a sane host: CR0 (CD and NW survive a VM exit), the task priority,
    /// IA32_KERNEL_GS_BASE.
    pub fn restore(&self) {
        // SAFETY: the CR0 the host had before the run.
        unsafe { core::arch::asm!("mov cr0, {}", in(reg) self.values[0], options(nostack, preserves_flags)) };
        apic::set_task_priority(self.values[3] as u8);
        // SAFETY: IA32_KERNEL_GS_BASE takes any canonical address; this is the host's own value.
        unsafe { x86::msr::wrmsr(0xc000_0102, self.values[12]) };
    }
}

/// DR0-DR3 and DR6 as at reset: the guest writes them directly (VM entry and
/// exit, VMRUN and #VMEXIT switch only DR7 and, under SVM, DR6), and a run
/// must not find the last run's breakpoints.
pub fn clear_debug_registers() {
    // SAFETY: the host uses no debug register (DR7 is 400H after every exit);
    // these are the values of SDM Vol. 3A Table 10-1 "IA-32 and Intel 64
    // Processor States Following Power-up, Reset, or INIT".
    unsafe {
        core::arch::asm!(
            "mov dr0, {z}", "mov dr1, {z}", "mov dr2, {z}", "mov dr3, {z}", "mov dr6, {dr6}",
            z = in(reg) 0u64, dr6 = in(reg) 0xffff_0ff0u64,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Page tables the hypervisor owns for a guest without EPT or nested paging:
/// guest-linear [0, MEM_SIZE) to the guest's memory, for 32-bit, PAE and
/// 4-level paging (SDM Vol. 3A §4.3 "32-Bit Paging", §4.4 "PAE Paging", §4.5
/// "4-Level Paging and 5-Level Paging"; AMD64's legacy and long-mode paging,
/// APM Vol. 2 Chapter 5 "Page Translation and Protection"). The PAE and 4-level maps share their PD and PT.
pub struct HostTables {
    pd32: u64,
    pdpt: u64,
    pml4: u64,
}

impl HostTables {
    /// The tables for guest memory at host `mem`; None where any of it lies
    /// above 4 GiB (a 32-bit table cannot reach it).
    pub fn build(mem: u64) -> Option<HostTables> {
        const P: u64 = 1;
        const P_RW_US: u64 = 0b111;
        let page = || memory::alloc_pages(1).as_ptr() as u64;
        let (pd32, pt32, pdpt, pd, pt, pml4, pdpt4) = (page(), page(), page(), page(), page(), page(), page());
        if [pd32, pt32, pdpt, pd, pt, pml4, pdpt4, mem + gf::MEM_SIZE].iter().any(|a| a >> 32 != 0) {
            return None;
        }
        // SAFETY: zeroed pages this function allocated (identity-mapped); every index is below 512.
        unsafe {
            (pd32 as *mut u32).write((pt32 | P_RW_US) as u32);
            for i in 0..gf::MEM_SIZE / 4096 {
                let frame = mem + i * 4096;
                (pt32 as *mut u32).add(i as usize).write((frame | P_RW_US) as u32);
                (pt as *mut u64).add(i as usize).write(frame | P_RW_US);
            }
            // PAE PDPTEs have no R/W or U/S bit (bits 2:1 are reserved).
            (pdpt as *mut u64).write(pd | P);
            (pd as *mut u64).write(pt | P_RW_US);
            (pml4 as *mut u64).write(pdpt4 | P_RW_US);
            (pdpt4 as *mut u64).write(pd | P_RW_US);
        }
        Some(HostTables { pd32, pdpt, pml4 })
    }

    /// The CR3 of a start in `mode`.
    pub fn cr3(&self, mode: Mode) -> u64 {
        match mode {
            Mode::Pae => self.pdpt,
            Mode::Long64 | Mode::Compat => self.pml4,
            _ => self.pd32,
        }
    }
}

/// Task-priority class while a run's guest is bounded by the local-APIC
/// timer: below TIMER_VECTOR's class 15, so the timer's interrupt is pending
/// for the exit (VMX's external-interrupt exiting, SVM's INTR intercept)
/// even on an AP that works at class 15.
const TPR_TIMED_GUEST: u8 = 14;

/// One run's outcome, as both backends judge it.
pub struct Outcome {
    pub ending: Ending,
    pub exits: u64,
    pub ticks: u64,
    /// The task priority (CR8) after the run, if the guest changed it: the
    /// host's local APIC is the host's (VMX's TPR shadow and SVM's
    /// V_INTR_MASKING give the guest its own).
    pub tpr: Option<(u8, u8)>,
}

/// Set up the proof guest's handler state for a fresh run of `plan`: its
/// registers, no ending, no exits, no debug registers left by the last run.
pub fn start_run(proof: &mut Proof, regs: &mut GuestRegs, exits: &mut u64, plan: &Plan) {
    let r = plan.regs;
    *regs = GuestRegs {
        rax: r[0],
        rcx: r[1],
        rdx: r[2],
        rbx: r[3],
        rbp: r[4],
        rsi: r[5],
        rdi: r[6],
        r8: r[7],
        r9: r[8],
        r10: r[9],
        r11: r[10],
        r12: r[11],
        r13: r[12],
        r14: r[13],
        r15: r[14],
    };
    proof.ending = None;
    proof.ending_value = 0;
    proof.ending_qualification = 0;
    proof.line_len = 0;
    proof.cr8 = 0;
    *exits = 0;
    clear_debug_registers();
}

/// Run `guest` with the local-APIC timer armed for `apic_timer` ticks (None:
/// another clock bounds the run), the task priority at TPR_TIMED_GUEST while
/// it runs; its result, its TSC ticks, and the task priority it left if it
/// changed it.
pub fn timed<R>(apic_timer: Option<u32>, guest: impl FnOnce() -> R) -> (R, u64, Option<(u8, u8)>) {
    let host_tpr = apic::task_priority();
    if let Some(count) = apic_timer {
        apic::set_task_priority(TPR_TIMED_GUEST);
        apic::timer_one_shot(count);
    }
    let during = apic::task_priority();
    let begin = tsc::rdtsc();
    let result = guest();
    let ticks = tsc::rdtsc() - begin;
    let after = apic::task_priority();
    if apic_timer.is_some() {
        apic::timer_stop();
        apic::take_pending_timer();
    }
    apic::set_task_priority(host_tpr);
    (result, ticks, (after != during).then_some((during, after)))
}

/// Report a host failure of the run (the tally has counted it): the
/// backend's line with the replay words and, within DUMP_LIMIT, the guest's
/// state; `exits` is the run's exit count (0: not the guest's doing).
pub type Failure<'a> = &'a dyn Fn(&Tally, fmt::Arguments, u64);

/// How a run ended, judged the same under VMX and SVM.
pub struct Judged<'a> {
    pub virt: Virt,
    /// Another CPU's watchdog sent this run an NMI (`Runs::watchdog_sent_for`).
    pub watchdog_sent: bool,
    /// The run ended by an NMI's exit.
    pub nmi_exit: bool,
    /// An NMI the watchdog sent for an earlier run was pending (`Runs::take_pending_nmi`).
    pub watchdog_nmi: bool,
    /// Bochs 2.7's departure: the guest had RFLAGS.IF 0 under the
    /// local-APIC timer, which its interrupts then cannot end (docs/fuzz.md).
    pub masked_timer: bool,
    pub deadline_us: u64,
    pub hang_us: u64,
    /// The detail of the ending for a host failure's line.
    pub note: &'a dyn fmt::Display,
}

/// Count the run's outcome in `tally`: a watchdog's ending, a named one, or
/// a host failure (the guest changed the host's task priority, outlived its
/// bound, needed the watchdog, or ended in a way no guest should make the
/// handler end).
pub fn judge(tally: &mut Tally, mode: Mode, o: &Outcome, j: &Judged, failure: Failure) {
    let ending = o.ending.named(j.virt);
    if j.watchdog_sent && j.masked_timer && j.nmi_exit {
        // Stopped by another CPU's watchdog NMI, a guest spinning with
        // RFLAGS.IF 0 under the local-APIC timer: the Bochs 2.7 departure.
        tally.count_named(mode, "watchdog", o.exits);
        return;
    }
    if j.watchdog_sent {
        tally.runs += 1;
        tally.host_failure();
        failure(
            tally,
            format_args!("the run had not ended after {} ms: a watchdog NMI stopped it ({ending})", j.hang_us / 1000),
            o.exits,
        );
        return;
    }
    if j.nmi_exit && j.watchdog_nmi {
        // A watchdog NMI sent for an earlier run that ended meanwhile (judged
        // by its own checks) stopped this one: the watchdog's ending.
        tally.count_named(mode, "watchdog", o.exits);
        return;
    }
    if let Class::HostFailure(what) = tally.count(mode, o.ending, o.exits) {
        failure(tally, format_args!("{what}: {ending}{}", j.note), o.exits);
    }
    if let Some((before, after)) = o.tpr {
        tally.host_failure();
        failure(
            tally,
            format_args!("the guest changed the host's task priority (CR8) from {before:#x} to {after:#x}"),
            o.exits,
        );
    }
    // A guest the local-APIC timer could not end (Bochs 2.7, RFLAGS.IF 0:
    // the departure above) runs until its exit budget or the watchdog, which
    // may take longer than the bound (seed=3 run 8322 on `ryzen`: 501 exits
    // in 58 ms); on a CPU as the manuals describe it the timer ends it.
    if o.ticks > tsc::micros_to_ticks(j.deadline_us) && !j.masked_timer {
        tally.host_failure();
        failure(
            tally,
            format_args!(
                "the run took {} us, beyond its bound of {} us ({} exits, ended by {ending})",
                tsc::ticks_to_micros(o.ticks),
                j.deadline_us,
                o.exits
            ),
            o.exits,
        );
    }
}

/// After run `k`: the host's checks both backends make (nothing left in
/// service at the local APIC, the host state unchanged, and restored if it
/// changed), with `inject=fuzz-host-state` changing the task priority after
/// the first run; then the log flushed, the other CPUs watched, progress.
pub struct After<'a> {
    pub cpu: u32,
    pub k: u64,
    pub skip: u64,
    pub runs: u64,
    pub hang_us: u64,
    pub host: &'a HostState,
}

pub fn after_run(tally: &mut Tally, a: &After, failure: Failure) {
    if a.k == a.skip && run::options().inject == Some(Inject::FuzzHostState) {
        let tpr = apic::task_priority();
        info!("inject: the host's task priority (CR8) changed from {tpr:#x} to {:#x} after run {}", tpr ^ 1, a.k);
        apic::set_task_priority(tpr ^ 1);
    }
    if let Some(vector) = apic::in_service() {
        tally.host_failure();
        failure(
            tally,
            format_args!("vector {vector:#x} left in service at the local APIC (no EOI): its class is blocked"),
            0,
        );
        apic::end_of_interrupt();
    }
    let now = HostState::read();
    if now != *a.host {
        for (name, before, after) in now.changes(a.host) {
            tally.host_failure();
            failure(tally, format_args!("host {name} changed: {before:#x} -> {after:#x}"), 0);
        }
        a.host.restore();
    }
    // Let the log reach COM1 while the runs go on (never waits), and watch
    // the other CPUs' runs.
    crate::logger::poll();
    watch(a.cpu, a.hang_us);
    let done = a.k + 1 - a.skip;
    if done.is_multiple_of(PROGRESS_EVERY) && done < a.runs {
        info!("fuzz: cpu={} {done} of {} runs, {} host failures so far", a.cpu, a.runs, tally.host_failures);
    }
}

/// The end of a CPU's runs: wait for the other CPUs' (watching them), then
/// the modes line and the result line.
pub fn finish(record: &Runs, cpu: u32, hang_us: u64, tally: &Tally, seed: u64) -> bool {
    record.finish();
    watch_others(cpu, hang_us);
    info!("{}", ModesLine(cpu, tally));
    info!("{}", Line { cpu, tally, seed });
    tally.host_failures == 0
}

/// Stage work of a fuzzer in place of the guest (`entryfuzz=`, `guest=fuzz`),
/// on a CPU whose virtualization is on: the CPU passes where `fuzz` gives
/// Ok(true), fails otherwise, a set-up error printed after `what`.
pub fn stage<E: fmt::Display>(pcb: &Pcb, what: &str, fuzz: impl FnOnce(&Pcb) -> Result<bool, E>) {
    if !pcb.has(CPU_STATUS_VMXON) {
        return;
    }
    match fuzz(pcb) {
        Ok(true) => pcb.set(CPU_STATUS_GUEST_OK),
        Ok(false) => pcb.set(CPU_STATUS_FAILED),
        Err(e) => {
            error!("{what}: {e}");
            pcb.set(CPU_STATUS_FAILED);
        }
    }
}

/// A backend's guest stage (`Backend::run_guest`), by `entryfuzz=` and
/// `guest=`: its entry fuzzer, its guest fuzzer, or its proof guest. A kernel
/// built without its `fuzz` feature has neither fuzzer (its options refuse
/// them; `cfg!` leaves their code out of the image).
pub fn run_guest(pcb: &Pcb, entry_fuzz: fn(&Pcb, u32, Option<u64>), fuzz_guest: fn(&Pcb), proof_guest: fn(&Pcb)) {
    let options = run::options();
    let fuzzers = cfg!(feature = "fuzz");
    match options.entryfuzz {
        Some(n) if fuzzers => entry_fuzz(pcb, n, options.seed),
        _ if fuzzers && options.guest == hvlogic::cmdline::GuestKind::Fuzz => fuzz_guest(pcb),
        _ => proof_guest(pcb),
    }
}

/// `guest=fuzz`'s stage work: `fuzz` as `stage` runs it, and then (however
/// the runs ended: a set-up error returns early) no watcher waits on this CPU.
pub fn stage_guest_fuzz<E: fmt::Display>(pcb: &Pcb, fuzz: impl FnOnce(&Pcb) -> Result<bool, E>) {
    stage(pcb, "fuzz", |pcb| {
        let result = fuzz(pcb);
        done(pcb.processor_index);
        result
    })
}

/// The entry fuzzer's seed on this CPU: the option's plus the CPU's index,
/// or a random one; and where it came from.
pub fn entry_seed(pcb: &Pcb, option: Option<u64>) -> (u64, &'static str) {
    match option {
        Some(s) => (s.wrapping_add(pcb.processor_index as u64), "option"),
        None => random_seed(),
    }
}

/// One more of `id` in a list of counts by name (the entry fuzzers' known
/// departures, in the order first met).
pub fn count_by_name(counts: &mut Vec<(&'static str, u32)>, id: &'static str) {
    match counts.iter_mut().find(|(name, _)| *name == id) {
        Some(c) => c.1 += 1,
        None => counts.push((id, 1)),
    }
}

/// What a CPU's guest fuzzer starts from: the shared seed and this CPU's,
/// the runs to make and the runs to skip (`fuzz-runs=`, `fuzz-skip=`); CPU 0
/// announces them.
pub struct Start {
    pub seed: u64,
    pub cpu_seed: u64,
    pub runs: u64,
    pub skip: u64,
}

impl Start {
    pub fn new(cpu: u32) -> Start {
        let opts = run::options();
        let (seed, source) = shared_seed();
        let (runs, skip) = (opts.fuzz_runs as u64, opts.fuzz_skip);
        if cpu == 0 {
            announce(seed, source, runs, skip);
        }
        Start { seed, cpu_seed: gf::cpu_seed(seed, cpu), runs, skip }
    }
}

/// The host-failure line of CPU `cpu`'s run `k` (the tally has counted it):
/// what went wrong and the run's replay words; `dump` shows the guest's state
/// for the first DUMP_LIMIT failures.
pub fn host_failure(
    cpu: u32,
    k: u64,
    mode: Mode,
    cpu_seed: u64,
    tally: &Tally,
    what: fmt::Arguments,
    dump: impl FnOnce(),
) {
    error!("fuzz: host failure on cpu{cpu} run {k} ({mode} mode): {what}; replay: {}", Replay(cpu_seed, k));
    if tally.host_failures <= DUMP_LIMIT {
        dump();
    }
}

/// The entry fuzzer's result line (both backends), with an ERROR line for
/// disagreements and for a base `what` (VMCS, VMCB) the runs left changed.
pub fn entry_result(n: u32, agree: u32, known: u32, disagree: u32, seed: u64, restored: bool, what: &str) {
    info!("entry-fuzz: mutations={n} agree={agree} known={known} disagree={disagree} seed={seed}");
    if disagree > 0 {
        error!("entry-fuzz: {disagree} disagreement(s) between the checker and the CPU");
    }
    if !restored {
        error!("entry-fuzz: the {what} was not restored");
    }
}
