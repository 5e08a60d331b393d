//! `guest=fuzz` under SVM: random guest programs against the SVM proof
//! guest's #VMEXIT handler (`proof_vcpu::dispatch`, and entry.s's CPUID fast
//! path), `fuzz-runs` per CPU, each from fresh guest memory and a fresh VMCB
//! state; `vmx/fuzz_guest.rs`'s counterpart.
//!
//! hvlogic::guest_fuzz generates each run's memory and start (mode,
//! registers, IDT or none); this file writes the VMCB's state save area from
//! it over the proof guest's controls (`proof_guest::configure`), runs the
//! guest to its end with a time budget (the local-APIC timer, whose interrupt
//! the INTR intercept turns into a #VMEXIT whatever the guest's RFLAGS.IF:
//! V_INTR_MASKING) and an exit budget, and checks after every run that the
//! host is unharmed: its control registers, EFER, system MSRs, GS base,
//! VM_HSAVE_PA, TR and LDTR, task priority, GIF set, nothing left in service
//! at the local APIC. Anything else is a host failure, reported with the
//! run's replay words; an exception in the host names the run it happened
//! in. What both backends' fuzzers share (seed, replay, watchdog, host
//! state) is `virt::fuzz`'s.

use super::dump;
use super::proof_guest;
use super::proof_vcpu::{self, ProofVcpu};
use super::vcpu::Vcpu;
use super::vmcb::Vmcb;
use crate::pcb::{Pcb, CPU_STATUS_VMXON, MAX_CPUS};
use crate::virt::fuzz::{self as vfuzz, HostState, HostTables, HANG_US, HOST_CLOCK_DEADLINE_US, RUN_DEADLINE_US};
use crate::virt::nested::{self, Format, Tables};
use crate::virt::proof::{AddressSpace, Proof};
use crate::{apic, memory, tsc};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use hvlogic::cmdline::GuestKind;
use hvlogic::guest_fuzz::{self as gf, cr4, efer, Caps, Mode, Plan, StartModes, Tally};
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::summary::Virt;
use hvlogic::svm::exit_code::{self as code, NpfInfo};
use hvlogic::svm::features::edx;
use hvlogic::svm::vmcb::{control, intercept1 as i1, save, tlb, Vmcb as Image, PAT_RESET};
use hvlogic::svm::vmrun_check::departures::Emulator;
use hvlogic::svm::EFER_SVME;
use log::{info, warn, Level};

/// Guest time per run, in microseconds of TSC time (the local-APIC timer,
/// calibrated against the TSC: SVM has no preemption timer).
const TIME_BUDGET_US: u64 = 200;
/// Exits per run: a guest that loops on exiting instructions ends here.
const EXIT_BUDGET: u64 = 500;
/// RFLAGS.IF (APM Vol. 2 §3.1.6 "Flags Register").
const RFLAGS_IF: u64 = 1 << 9;
/// INTERCEPT_CR: writes of CR3 and CR4 (bits 16 + 3, 16 + 4); INTERCEPT_DR:
/// writes of DR7, and of DR5, its alias while CR4.DE is 0 (bits 16 + 7,
/// 16 + 5) (APM Vol. 2 Table B-1 "VMCB Layout, Control Area", §13.1.1.4
/// "Debug-Control Register").
const INTERCEPT_CR3_CR4_WRITE: u32 = 1 << 19 | 1 << 20;
const INTERCEPT_DR7_WRITE: u32 = 1 << 23 | 1 << 21;
/// DR7 at reset: every breakpoint disabled (APM Vol. 2 §13.1.1.5 "Debug-Control Register (DR7)").
const DR7_RESET: u64 = 0x400;

/// Stage work with `guest=fuzz`, in place of the proof guest.
pub fn run(pcb: &Pcb) {
    vfuzz::stage_guest_fuzz(pcb, fuzz)
}

/// Why the fuzzer cannot run on this CPU.
enum FuzzError {
    /// Host-owned page tables need the guest's memory below 4 GiB.
    Above4GiB,
}

impl fmt::Display for FuzzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FuzzError::Above4GiB => f.write_str("host-owned guest page tables need their memory below 4 GiB"),
        }
    }
}

/// The #VMEXIT handler of the fuzz runs: the proof guest's, after noting an
/// NMI's #VMEXIT. The intercept leaves the NMI pending and GIF 0 holds it
/// (APM Vol. 2 §15.13.2 "NMI Intercept", §15.17 "Global Interrupt Flag,
/// STGI and CLGI"): the host takes it at the STGI that ends the run, and the
/// exception handler drops it (`virt::fuzz::watchdog_nmi_in_host`).
///
/// It also keeps the VMCB as the handler resumes the guest with
/// (`RESUMED`): a VMRUN that refuses it may overwrite the state save area
/// (QEMU 7.2 stores the host's state there when a check before its guest
/// state load fails), and the failure report checks the copy.
///
/// And under Bochs 2.7 it keeps at most one CPU's guest resumed with
/// RFLAGS.IF 0 at a time (`IF_CLEAR`): Bochs loads the guest's RFLAGS at
/// VMRUN before it is in guest mode, so such a guest has the host's
/// interrupts masked, the time budget's timer with them, until it sets IF
/// or exits, and only another CPU's watchdog NMI stops it if it spins.
/// Were two CPUs' guests stuck so at once, nobody would watch; a CPU whose
/// guest would be the second ends the run instead (`not-resumed`).
extern "C" fn dispatch(vcpu: &mut ProofVcpu) -> u64 {
    let me = vcpu.processor_index + 1;
    // An exit ends this CPU's guest's masked stretch.
    let _ = IF_CLEAR.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
    if vcpu.exit_code() == code::NMI {
        vfuzz::nmi_exited(vcpu.processor_index);
    }
    let r = proof_vcpu::dispatch(vcpu);
    if r != super::vcpu::RESUME {
        return r;
    }
    if BOCHS.load(Ordering::Relaxed)
        && vcpu.vmcb.u64(save::RFLAGS) & RFLAGS_IF == 0
        && IF_CLEAR.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire).is_err()
    {
        vcpu.guest.ending = Some(Ending::NotResumed);
        return super::vcpu::STOP;
    }
    if let Some(copy) = resumed(vcpu.processor_index) {
        *copy = dump::image(&vcpu.vmcb);
    }
    r
}

/// Bochs 2.7: the CPU (index + 1) whose guest was resumed with RFLAGS.IF 0
/// and has not exited since; 0 for none (`dispatch`).
static IF_CLEAR: AtomicU32 = AtomicU32::new(0);
/// The runs are under Bochs (set before the first run).
static BOCHS: AtomicBool = AtomicBool::new(false);

/// Each CPU's copy of the VMCB its last resume ran with (allocated at set-up).
static RESUMED: [AtomicPtr<Image>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// This CPU's copy of the VMCB it last resumed its guest with.
fn resumed(cpu: u32) -> Option<&'static mut Image> {
    let p = RESUMED.get(cpu as usize)?.load(Ordering::Acquire);
    // SAFETY: a leaked allocation only this CPU uses (set up in `fuzz`,
    // written by this CPU's #VMEXIT handler and read by its fuzz loop, never
    // both at once).
    (!p.is_null()).then(|| unsafe { &mut *p })
}

/// Everything the runs of one CPU share.
struct Fuzzer {
    /// The VMCB's control area as `proof_guest::configure` wrote it (the
    /// state save area is written per run).
    template: alloc::boxed::Box<Image>,
    host_tables: Option<HostTables>,
    /// The CR4 and EFER bits the CPU implements (`vmrun_check::Cpu`): a
    /// plan's extra bits are kept to them, the others would fail VMRUN.
    cr4_valid: u64,
    efer_valid: u64,
    /// The TLB flush at each fresh start.
    flush: u8,
    /// QEMU's TCG, whose departures the runs work around (`write_guest_state`).
    qemu: bool,
    /// Bochs: a guest that spins with RFLAGS.IF 0 needs the watchdog.
    bochs: bool,
    /// Local-APIC timer ticks per run.
    timer: u32,
}

fn fuzz(pcb: &Pcb) -> Result<bool, FuzzError> {
    let (features, maxphyaddr, host_state) = {
        let own = pcb.own();
        (own.svm, own.maxphyaddr, own.host_state)
    };
    let cpu = pcb.processor_index;
    let vfuzz::Start { seed, cpu_seed, runs, skip } = vfuzz::Start::new(cpu);

    let nested_paging = features.nested_paging();
    let mode = GuestMode::choose_svm(nested_paging);
    // EFER.NXE and long mode where CPUID Fn8000_0001_EDX[20] (NX) and [29]
    // (LM) say so (APM Vol. 3 Appendix E.4.2).
    let e1 = raw_cpuid::cpuid!(0x8000_0001).edx;
    let caps = Caps::svm(nested_paging, e1 & (1 << 29) != 0, e1 & (1 << 20) != 0);
    let mem: &mut [u8] = memory::alloc_pages((gf::MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    let base = mem.as_ptr() as u64;
    let (space, host_tables) = if nested_paging {
        let mut t = Tables::new(Format::Npt);
        t.map(0, base, gf::MEM_SIZE, nested::RWX);
        (AddressSpace { nested: Some(t), cr3: 0, pm_entry: 0, gdt: 0 }, None)
    } else {
        let h = HostTables::build(base).ok_or(FuzzError::Above4GiB)?;
        (AddressSpace { nested: None, cr3: h.cr3(Mode::Paged32), pm_entry: 0, gdt: 0 }, Some(h))
    };
    let asid = features.asid_for(cpu);
    let vcpu = Vcpu::new(
        cpu,
        host_state,
        features.nrip_save(),
        dispatch,
        Proof::new(Virt::Svm, mode, GuestKind::Fuzz, base, maxphyaddr),
    );
    vcpu.guest.quiet = true;
    vcpu.guest.mem_size = gf::MEM_SIZE;
    vcpu.guest.exit_budget = EXIT_BUDGET;
    vcpu.guest.timer_vector = Some(apic::TIMER_VECTOR);
    // As for the proof guest: the APIC timer bounds a guest that loops on a
    // passed-through CPUID leaf the fast path answers.
    vcpu.set_fast_cpuid(Some(vcpu.guest.fast_cpuids));
    // ... and the exit budget ends it even where the timer cannot (Bochs
    // 2.7 masks it for a guest with RFLAGS.IF 0).
    vcpu.set_fast_until(EXIT_BUDGET);
    proof_guest::configure(&vcpu.vmcb, asid, mode, &space, &proof_guest::Maps::new());
    let bochs = dump::emulator() == Some(Emulator::Bochs);
    let facts = dump::cpu_facts();
    let f = Fuzzer {
        template: alloc::boxed::Box::new(dump::image(&vcpu.vmcb)),
        host_tables,
        cr4_valid: facts.cr4_valid,
        efer_valid: facts.efer_valid,
        flush: if features.has(edx::FLUSH_BY_ASID) { tlb::FLUSH_ASID } else { tlb::FLUSH_ALL },
        qemu: dump::emulator() == Some(Emulator::Qemu),
        bochs,
        timer: apic::timer_count_for(TIME_BUDGET_US),
    };
    info!(
        "fuzz: cpu={cpu} modes {}; time budget {TIME_BUDGET_US} us per run (local-APIC timer, {} ticks; SVM has no preemption timer), {EXIT_BUDGET} exits",
        StartModes(caps),
        f.timer
    );
    let fuzzing_cpus = crate::pcb::all().filter(|p| p.has(CPU_STATUS_VMXON)).count();
    if f.bochs && fuzzing_cpus == 1 {
        warn!("fuzz: one CPU: no watchdog; under Bochs 2.7 a guest that spins with RFLAGS.IF 0 is not stopped (docs/fuzz.md)");
    }
    if f.qemu && cpu == 0 {
        info!(
            "fuzz: QEMU's TCG: its TSC is the host's clock, so a run's bound and the watchdog's are {} ms (virt::fuzz)",
            HOST_CLOCK_DEADLINE_US / 1000
        );
    }

    BOCHS.store(f.bochs, Ordering::Relaxed);
    RESUMED[cpu as usize].store(alloc::boxed::Box::leak(alloc::boxed::Box::new(Image::zeroed())), Ordering::Release);
    let record = vfuzz::Runs::new(cpu, cpu_seed);
    let host = HostState::read();
    let host_segments = segments();
    // The bounds of a run: under QEMU the TSC is the host's clock, and a
    // virtual CPU's waits for a host core count (virt::fuzz).
    let (deadline_us, hang_us) =
        if f.qemu { (HOST_CLOCK_DEADLINE_US, HOST_CLOCK_DEADLINE_US) } else { (RUN_DEADLINE_US, HANG_US) };
    let mut longest = (0u64, 0u64);
    let mut tally = Tally::default();
    for k in skip..skip.saturating_add(runs) {
        record.enter(k);
        let plan = gf::generate(gf::run_seed(cpu_seed, k), caps, mem);
        if log::log_enabled!(Level::Trace) {
            log::trace!("fuzz: cpu={cpu} run {k} ({} mode, RIP {:#x})", plan.mode, plan.rip);
            crate::logger::flush();
        }
        record.start();
        let o = f.run(vcpu, &plan);
        record.stop();
        let _ = IF_CLEAR.compare_exchange(cpu + 1, 0, Ordering::AcqRel, Ordering::Acquire);
        if o.ticks > longest.0 {
            longest = (o.ticks, k);
        }
        // Report a host failure (the tally has counted it).
        let failure = |tally: &Tally, what: fmt::Arguments, exits: u64| {
            vfuzz::host_failure(cpu, k, plan.mode, cpu_seed, tally, what, || {
                dump::guest_state(&vcpu.vmcb, &vcpu.regs, exits, Level::Error)
            })
        };
        // The last #VMEXIT was an NMI's, whatever ending the handler gave it
        // (the exit budget, when the NMI's exit was one too many: seed=4 run
        // 783 on Bochs's `ryzen`, a guest with RFLAGS.IF 0 whose 513 exits
        // took longer than the watchdog's 50 ms).
        let nmi_exit = vcpu.exit_code() == code::NMI;
        // With V_INTR_MASKING the timer's interrupt exits a guest whatever
        // its IF (APM Vol. 2 §15.21.1 "Physical (INTR) Interrupt Masking in
        // EFLAGS"), but Bochs 2.7 loads the guest's RFLAGS at VMRUN before it
        // is in guest mode, so a VMRUN (a resume too) with IF 0 masks the
        // host's interrupts until the guest sets IF (docs/fuzz.md).
        let if_clear = vcpu.vmcb.u64(save::RFLAGS) & RFLAGS_IF == 0;
        let judged = vfuzz::Judged {
            virt: Virt::Svm,
            watchdog_sent: record.watchdog_sent_for(k),
            nmi_exit,
            watchdog_nmi: nmi_exit && record.take_pending_nmi(),
            masked_timer: f.bochs && if_clear,
            deadline_us,
            hang_us,
            note: &Note(vcpu),
        };
        let failures = tally.host_failures;
        vfuzz::judge(&mut tally, plan.mode, &o, &judged, &failure);
        if tally.host_failures > failures && o.ending == Ending::EntryFailed && o.exits > 1 {
            if let Some(copy) = resumed(cpu) {
                dump::explain_image(copy, "the VMCB the handler resumed the guest with");
            }
        }
        if !gif_set() {
            tally.host_failure();
            failure(&tally, format_args!("GIF is clear after the run: the host's interrupts are held"), 0);
        }
        let now = segments();
        if now != host_segments {
            tally.host_failure();
            failure(
                &tally,
                format_args!("host TR, LDTR changed: {host_segments:#x?} -> {now:#x?} (the host's VMLOAD did not run)"),
                0,
            );
        }
        let after = vfuzz::After { cpu, k, skip, runs, hang_us, host: &host };
        vfuzz::after_run(&mut tally, &after, &failure);
    }
    info!("fuzz: cpu={cpu} longest run: run {} took {} us", longest.1, tsc::ticks_to_micros(longest.0));
    let leaked = super::vcpu::leaked_single_steps();
    if leaked > 0 && cpu == 0 {
        info!("fuzz: single-step traps of a guest taken in the host after #VMEXIT (the Bochs 2.7 departure), let go, on every CPU so far: {leaked}");
    }
    Ok(vfuzz::finish(&record, cpu, hang_us, &tally, seed))
}

/// The host's TR and LDTR selectors (VMLOAD restores both after every #VMEXIT).
pub(super) fn segments() -> (u16, u16) {
    let (tr, ldtr): (u16, u16);
    // SAFETY: STR and SLDT only read the selectors.
    unsafe {
        core::arch::asm!("str {0:x}", "sldt {1:x}", out(reg) tr, out(reg) ldtr, options(nomem, nostack, preserves_flags))
    };
    (tr, ldtr)
}

/// Whether GIF is set: a fixed self-IPI (TIMER_VECTOR, whose handler sends
/// EOI) must be taken when RFLAGS.IF opens for one instruction with the task
/// priority at 0; with GIF clear it stays requested (APM Vol. 2 §15.17
/// "Global Interrupt Flag, STGI and CLGI"). Taken either way before this
/// returns (an STGI first if GIF was clear), and the task priority restored.
pub(super) fn gif_set() -> bool {
    let priority = apic::task_priority();
    apic::set_task_priority(0);
    apic::send_fixed(apic::id(), apic::TIMER_VECTOR);
    let begin = tsc::rdtsc();
    while !apic::requested(apic::TIMER_VECTOR) && tsc::rdtsc() - begin < tsc::micros_to_ticks(1_000) {
        core::hint::spin_loop();
    }
    // SAFETY: interrupts open for one instruction; the IDT has a gate for
    // TIMER_VECTOR (EOI only), and nothing else is pending above class 0.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
    let set = !apic::requested(apic::TIMER_VECTOR);
    if !set {
        // SAFETY: EFER.SVME is set; GIF set again, then the IPI taken as above.
        unsafe {
            super::instructions::stgi();
            core::arch::asm!("sti", "nop", "cli", options(nomem, nostack));
        }
    }
    apic::set_task_priority(priority);
    set
}

/// The detail of a run's ending, for a host failure's line.
struct Note<'a>(&'a ProofVcpu);

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.0.guest;
        match p.ending {
            Some(Ending::NestedPageFault) => {
                write!(f, " at GPA {:#x} ({})", p.ending_value, NpfInfo(p.ending_qualification))
            }
            Some(Ending::UnexpectedSvm(code::IOIO_U16)) => write!(f, " (port {:#x})", p.ending_value),
            Some(Ending::UnexpectedSvm(c)) => write!(f, " (#VMEXIT {c:#x}, EXITINFO1 {:#x})", p.ending_qualification),
            _ => Ok(()),
        }
    }
}

impl Fuzzer {
    /// One run from the plan: the proof guest's controls, the plan's state,
    /// VMRUN until the handler stops.
    fn run(&self, vcpu: &mut ProofVcpu, plan: &Plan) -> vfuzz::Outcome {
        let vmcb = vcpu.vmcb;
        vmcb.load(&self.template);
        self.write_guest_state(&vmcb, plan);
        vfuzz::start_run(&mut vcpu.guest, &mut vcpu.regs, &mut vcpu.exits, plan);
        let (_, ticks, tpr) = vfuzz::timed(Some(self.timer), || vcpu.run());
        vfuzz::Outcome { ending: vcpu.guest.ending.unwrap_or(Ending::EntryFailed), exits: vcpu.exits, ticks, tpr }
    }

    /// The plan's state in the VMCB's state save area (APM Vol. 2 Table B-2
    /// "VMCB Layout, State Save Area"), and the per-run controls.
    fn write_guest_state(&self, vmcb: &Vmcb, plan: &Plan) {
        let m = plan.mode;
        let cr0 = plan.cr0();
        let mut cr4 = plan.cr4_extra & self.cr4_valid;
        if m.pae() {
            cr4 |= cr4::PAE;
        }
        let long = if m.ia32e() { efer::LME | efer::LMA } else { 0 };
        let cr3 = match (&self.host_tables, m.paging()) {
            (_, false) => 0,
            (Some(t), true) => t.cr3(m),
            (None, true) => m.guest_cr3(),
        };
        vmcb.set_u64(save::CR0, cr0);
        vmcb.set_u64(save::CR3, cr3);
        vmcb.set_u64(save::CR4, cr4);
        vmcb.set_u64(save::EFER, EFER_SVME | long | (plan.efer_extra & self.efer_valid));
        vmcb.set_u64(save::CR2, 0);
        vmcb.set_u64(save::DR6, 0xffff_0ff0);
        // QEMU 7.2 aborts the whole emulator when a data breakpoint matches a
        // read it makes while it delivers an interrupt or exception (its
        // watchpoint check takes the iothread lock its interrupt delivery
        // already holds): under QEMU the guest's breakpoints stay disabled,
        // and its writes of DR7 (and of DR5, which is DR7 while CR4.DE is 0)
        // are intercepted and end the run (`mov-dr`)
        // (`qemu.watchpoint_in_delivery`, docs/fuzz.md).
        let dr7 = if self.qemu { DR7_RESET } else { plan.dr7 };
        vmcb.set_u64(save::DR7, dr7);
        if self.qemu {
            vmcb.set_u32(control::INTERCEPT_DR, vmcb.u32(control::INTERCEPT_DR) | INTERCEPT_DR7_WRITE);
        }
        // Every guest starts with RFLAGS.IF 1: V_INTR_MASKING makes it the
        // guest's own (it masks only virtual interrupts), but Bochs 2.7 loads
        // the guest's RFLAGS before it is in guest mode, so a guest entered
        // with IF 0 has the host's interrupts masked, the time budget's timer
        // with them, until it sets IF itself (docs/fuzz.md).
        vmcb.set_u64(save::RFLAGS, plan.rflags | RFLAGS_IF);
        vmcb.set_u64(save::RIP, plan.rip);
        vmcb.set_u64(save::RSP, plan.rsp);
        vmcb.set_u64(save::G_PAT, PAT_RESET);
        vmcb.set_u64(save::DBGCTL, 0);
        for s in [save::STAR, save::LSTAR, save::CSTAR, save::SFMASK, save::KERNEL_GS_BASE, save::SYSENTER_CS] {
            vmcb.set_u64(s, 0);
        }
        vmcb.set_u64(save::SYSENTER_ESP, 0);
        vmcb.set_u64(save::SYSENTER_EIP, 0);
        // Segments: real-mode ones, or the flat ones of the guest's GDT; the
        // attributes in the VMCB's 12-bit form (APM Vol. 2 Table B-2).
        const CODE16: u16 = 0x9b;
        const DATA16: u16 = 0x93;
        const CODE32: u16 = 0xc9b;
        const CODE64: u16 = 0xa9b;
        const DATA32: u16 = 0xc93;
        const TSS_BUSY: u16 = 0x8b;
        const TSS_AVAILABLE: u16 = 0x89;
        let (cs, cs_base, cs_limit, cs_attrib, data, data_limit, data_attrib) = match m {
            Mode::Real => (plan.real_cs, (plan.real_cs as u64) << 4, 0xffff, CODE16, 0, 0xffff, DATA16),
            Mode::Long64 => (gf::SEL_CODE64, 0, 0xffff_ffff, CODE64, gf::SEL_DATA, 0xffff_ffff, DATA32),
            _ => (gf::SEL_CODE32, 0, 0xffff_ffff, CODE32, gf::SEL_DATA, 0xffff_ffff, DATA32),
        };
        vmcb.set_segment(save::CS, cs, cs_attrib, cs_limit, cs_base);
        for s in [save::ES, save::SS, save::DS, save::FS, save::GS] {
            vmcb.set_segment(s, data, data_attrib, data_limit, 0);
        }
        vmcb.set_segment(save::GDTR, 0, 0, (gf::GDT_ENTRIES * 8 - 1) as u32, gf::GDT);
        let idt = if m == Mode::Real { gf::IVT } else { gf::IDT };
        vmcb.set_segment(save::IDTR, 0, 0, plan.idtr_limit as u32, idt);
        vmcb.set_segment(save::LDTR, 0, 0, 0, 0);
        // TR holds a busy TSS, as LTR leaves it. QEMU 7.2 keeps its TR cache
        // with the type the descriptor had before LTR set it busy (available)
        // and aborts the whole emulator ("invalid tss type") when a stack
        // switch finds a busy one: under QEMU the guest's TR says available
        // (`qemu.vmload_busy_tr`, docs/fuzz.md).
        let tr = if self.qemu { TSS_AVAILABLE } else { TSS_BUSY };
        vmcb.set_segment(save::TR, gf::SEL_TSS, tr, 0x67, gf::TSS);
        vmcb.write::<u8>(save::CPL, 0);
        // A fresh start: nothing cached for this ASID from the last run.
        vmcb.write(control::TLB_CONTROL, self.flush);
        // Under QEMU 7.2 the guest's writes of CR0 (but for TS and MP), CR3 and
        // CR4 are intercepted and end the run (`cr-refused`): its MOV to CR4
        // with a reserved bit, and to CR3 with bits beyond MAXPHYADDR in long
        // mode, make a #VMEXIT(VMEXIT_INVALID) instead of the guest's #GP(0),
        // and its MOV to CR0 takes NW without CD, which the next VMRUN refuses
        // (`qemu.mov_cr_checks`); and its #VMEXIT loses the host's CR0 after a
        // guest with EFER.LME set and neither CR0.PG nor CR4.PAE
        // (`qemu.vmexit_host_cr0`), a state a guest started in long mode
        // reaches by clearing PG in compatibility mode, then PAE.
        if self.qemu {
            vmcb.set_u32(control::INTERCEPT_CR, vmcb.u32(control::INTERCEPT_CR) | INTERCEPT_CR3_CR4_WRITE);
            vmcb.set_u32(control::INTERCEPT1, vmcb.u32(control::INTERCEPT1) | i1::CR0_SEL_WRITE);
        }
        // Under QEMU 7.2 LTR is intercepted and ends the run (`ltr`): LTR with
        // a null selector loads a not-present TR instead of raising #GP(0),
        // and the next stack switch through it aborts the emulator ("invalid
        // tss") (`qemu.ltr_null`).
        if self.qemu {
            vmcb.set_u32(control::INTERCEPT1, vmcb.u32(control::INTERCEPT1) | i1::TR_WRITE);
        }
    }
}
