//! `guest=fuzz`: random guest programs against the proof guest's exit
//! handler (`proof_vcpu::dispatch`), `fuzz-runs` per CPU, each from fresh
//! guest memory and a fresh VMCS launch.
//!
//! hvlogic::guest_fuzz generates each run's memory and start (mode, registers,
//! IDT or none); this file writes the VMCS from it, runs the guest to its end
//! with a time budget (the VMX-preemption timer, or where the CPU has none the
//! local-APIC timer) and an exit budget, and checks after every run that the
//! host is unharmed: no VMX instruction failed, the VMCS is still current,
//! and the host's control registers, task priority and system MSRs are
//! unchanged. Anything else is a host failure, reported with the run's
//! replay words; an exception in the host names the run it happened in.

use super::dump;
use super::instructions::{vmclear, vmptrld, vmptrst};
use super::proof_guest::{choose_mode, Bitmaps};
use super::proof_vcpu::{self, Proof, ProofVcpu};
use super::proof_vmcs;
use super::vcpu::{GuestRegs, Return, Vcpu};
use super::vmcs::{self, Controls, Segment, VmcsError, AR_CODE_32, AR_DATA_32, AR_TSS_BUSY_32, AR_UNUSABLE, PAT_RESET};
use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_VMXON};
use crate::virt::fuzz::{
    self as vfuzz, HostState, HostTables, Replay, DUMP_LIMIT, HANG_US, PROGRESS_EVERY, RUN_DEADLINE_US,
};
use crate::virt::nested::{self as ept, Format, Tables as Ept};
use crate::{apic, memory, run, tsc};
use core::fmt;
use hvlogic::cmdline::{GuestKind, Inject};
use hvlogic::controls::{entry, exit, pin, proc1};
use hvlogic::fixed::{Fixed, CR0_KEPT_BY_VM_EXIT};
use hvlogic::guest_fuzz::{self as gf, cr0, cr4, efer, Caps, Class, Line, Mode, ModesLine, Plan, StartModes, Tally};
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::vmx_global::VmxGlobalData;
use log::{error, info, warn, Level};
use x86::vmx::vmcs::{control as ctl, guest};

/// Guest time per run, in microseconds of TSC time (the VMX-preemption
/// timer, or the local-APIC timer calibrated against the TSC).
const TIME_BUDGET_US: u64 = 200;
/// Exits per run: a guest that loops on exiting instructions ends here.
const EXIT_BUDGET: u64 = 500;
/// Task-priority class while a guest runs on a CPU timed by the local-APIC
/// timer: below TIMER_VECTOR's class 15, so the timer's interrupt reaches
/// the CPU (and exits the guest) even on an AP that works at class 15.
const TPR_TIMED_GUEST: u8 = 14;

/// Stage work with `guest=fuzz`, in place of the proof guest.
pub fn run(pcb: &Pcb) {
    if !pcb.has(CPU_STATUS_VMXON) {
        return;
    }
    let result = fuzz(pcb);
    // However the runs ended (a set-up error returns early), no watcher waits on this CPU.
    vfuzz::done(pcb.processor_index);
    match result {
        Ok(true) => pcb.set(CPU_STATUS_GUEST_OK),
        Ok(false) => pcb.set(CPU_STATUS_FAILED),
        Err(e) => {
            error!("fuzz: {e}");
            pcb.set(CPU_STATUS_FAILED);
        }
    }
}

/// How this CPU's runs are bounded in time.
#[derive(Clone, Copy)]
enum Clock {
    /// The VMX-preemption timer, with this value per run.
    Preemption(u64),
    /// The local-APIC timer, one-shot with this count per run.
    Apic(u32),
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::Preemption(v) => write!(f, "VMX-preemption timer, {v}"),
            Clock::Apic(n) => write!(f, "local-APIC timer, {n} ticks; no VMX-preemption timer on this CPU"),
        }
    }
}

/// RFLAGS.IF (SDM Vol. 1 §3.4.3.3 "System Flags and IOPL Field").
const RFLAGS_IF: u64 = 1 << 9;

/// Everything the runs of one CPU share.
struct Fuzzer<'a> {
    pcb: &'a Pcb,
    d: VmxGlobalData,
    caps: Caps,
    controls: Controls,
    clock: Clock,
    eptp: Option<u64>,
    host_tables: Option<HostTables>,
    bitmaps: Bitmaps,
    vmcs: u64,
}

/// One run's outcome.
struct Outcome {
    ending: Ending,
    exits: u64,
    ticks: u64,
    /// The task priority (CR8) after the run, if the guest changed it: the
    /// host's local APIC is the host's.
    tpr: Option<(u8, u8)>,
}

fn fuzz(pcb: &Pcb) -> Result<bool, VmcsError> {
    let (d, maxphyaddr) = {
        let own = pcb.own();
        (own.vmx, own.maxphyaddr)
    };
    let cpu = pcb.processor_index;
    let opts = run::options();
    let (seed, source) = vfuzz::shared_seed();
    let cpu_seed = gf::cpu_seed(seed, cpu);
    let (runs, skip) = (opts.fuzz_runs as u64, opts.fuzz_skip);
    if cpu == 0 {
        vfuzz::announce(seed, source, runs, skip);
    }

    let mode = choose_mode(&d);
    // IA32_EFER.NXE exists where CPUID.80000001H:EDX[20] (XD) says so; the
    // long-mode entry in boot.s has checked that the leaf exists.
    let nx = raw_cpuid::cpuid!(0x8000_0001).edx & (1 << 20) != 0;
    let caps =
        Caps { unrestricted: mode == GuestMode::RealFromReset, ept: mode.uses_ept(), ia32e: false, nx, svm: false };
    let vpid = d.invvpid_type().map(|flush| (cpu as u16 + 1, flush));
    let controls = proof_vmcs::choose_controls(&d, mode, vpid.is_some())?;
    // 64-bit code only where CR8 accesses exit (proof_vmcs::choose_controls).
    let cr8_exiting = proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING;
    let caps = Caps {
        ia32e: hvlogic::controls::can_set(d.entry_ctls, entry::IA32E_MODE_GUEST)
            && controls.proc1 & cr8_exiting == cr8_exiting,
        ..caps
    };
    let mem: &mut [u8] = memory::alloc_pages((gf::MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    let base = mem.as_ptr() as u64;
    let (eptp, host_tables) = if caps.ept {
        let mut e = Ept::new(Format::Ept);
        e.map(0, base, gf::MEM_SIZE, ept::RWX);
        (Some(e.eptp(d.ept_memory_type)), None)
    } else {
        (None, Some(HostTables::build(base).ok_or(VmcsError::Above4GiB)?))
    };
    let clock = if controls.pin & pin::PREEMPTION_TIMER != 0 {
        // The timer counts down every 2^IA32_VMX_MISC[4:0] TSC ticks
        // (SDM Vol. 3C §26.5.1 "VMX-Preemption Timer").
        Clock::Preemption((tsc::micros_to_ticks(TIME_BUDGET_US) >> (d.misc & 0x1f)).max(1))
    } else {
        Clock::Apic(apic::timer_count_for(TIME_BUDGET_US))
    };
    let vcpu = Vcpu::new(
        cpu,
        vpid,
        proof_vcpu::dispatch,
        Proof::new(hvlogic::summary::Virt::Vmx, mode, GuestKind::Fuzz, base, maxphyaddr),
    );
    vcpu.guest.quiet = true;
    vcpu.guest.mem_size = gf::MEM_SIZE;
    vcpu.guest.exit_budget = EXIT_BUDGET;
    match clock {
        // As for the proof guest: the fast path only where the timer bounds
        // the guest, which needs the timer saved on exit.
        Clock::Preemption(_) if controls.exit & exit::SAVE_PREEMPTION_TIMER != 0 => {
            vcpu.set_fast_cpuid(Some(vcpu.guest.fast_cpuids))
        }
        Clock::Preemption(_) => {}
        Clock::Apic(_) => vcpu.guest.timer_vector = Some(apic::TIMER_VECTOR),
    }
    info!(
        "fuzz: cpu={cpu} modes {}; time budget {TIME_BUDGET_US} us per run ({clock}), {EXIT_BUDGET} exits",
        StartModes(caps)
    );
    let fuzzing_cpus = crate::pcb::all().filter(|p| p.has(CPU_STATUS_VMXON)).count();
    if matches!(clock, Clock::Apic(_)) && fuzzing_cpus == 1 {
        warn!("fuzz: one CPU and no VMX-preemption timer: no watchdog; under Bochs 2.7 a guest that spins with RFLAGS.IF 0 is not stopped (docs/fuzz.md)");
    }
    let f = Fuzzer {
        pcb,
        d,
        caps,
        controls,
        clock,
        eptp,
        host_tables,
        bitmaps: Bitmaps::new(),
        vmcs: super::new_region(&d),
    };

    let record = vfuzz::Runs::new(cpu, cpu_seed);
    let host = HostState::read();
    let deadline = tsc::micros_to_ticks(RUN_DEADLINE_US);
    let mut tally = Tally::default();
    for k in skip..skip.saturating_add(runs) {
        record.enter(k);
        let plan = gf::generate(gf::run_seed(cpu_seed, k), caps, mem);
        record.start();
        // Report a host failure (the tally has counted it).
        let failure = |tally: &Tally, what: fmt::Arguments, vcpu: &ProofVcpu, exits: u64| {
            error!(
                "fuzz: host failure on cpu{cpu} run {k} ({} mode): {what}; replay: {}",
                plan.mode,
                Replay(cpu_seed, k)
            );
            if tally.host_failures <= DUMP_LIMIT {
                dump::guest_state(&vcpu.regs, exits, Level::Error);
            }
        };
        let outcome = f.run(vcpu, &plan);
        record.stop();
        let nmi_exit = |o: &Outcome| o.ending == Ending::Unexpected(hvlogic::exit_reason::basic::EXCEPTION_OR_NMI);
        let watchdog_nmi = matches!(&outcome, Ok(o) if nmi_exit(o)) && record.take_pending_nmi();
        match outcome {
            Err(e) => {
                tally.runs += 1;
                tally.host_failure();
                failure(&tally, format_args!("a VMX instruction failed in the host: {e}"), vcpu, 0);
            }
            Ok(o) if record.watchdog_sent_for(k) => {
                // Stopped by another CPU's watchdog NMI. Bochs 2.7 holds
                // external interrupts back from a guest with RFLAGS.IF 0
                // although "external-interrupt exiting" is 1 (RFLAGS.IF does
                // not block them then: SDM Vol. 3C §26.2 "Other Causes of VM Exits"), so a guest
                // spinning with IF 0 outlives the local-APIC timer: that
                // departure is the watchdog's ending. Anything else that
                // needed the watchdog is a host failure.
                let if_clear = vmcs::read(guest::RFLAGS) & RFLAGS_IF == 0;
                if matches!(f.clock, Clock::Apic(_)) && if_clear && nmi_exit(&o) {
                    tally.count_named(plan.mode, "watchdog", o.exits);
                } else {
                    tally.runs += 1;
                    tally.host_failure();
                    failure(
                        &tally,
                        format_args!(
                            "the run had not ended after {} ms: a watchdog NMI stopped it ({})",
                            HANG_US / 1000,
                            o.ending
                        ),
                        vcpu,
                        o.exits,
                    );
                }
            }
            Ok(o) if watchdog_nmi => {
                // A watchdog NMI sent for an earlier run that ended meanwhile
                // (judged by its own checks) stopped this one: the watchdog's ending.
                tally.count_named(plan.mode, "watchdog", o.exits);
            }
            Ok(o) => {
                if let Class::HostFailure(what) = tally.count(plan.mode, o.ending, o.exits) {
                    failure(
                        &tally,
                        format_args!("{what}: {}{}", o.ending, super::proof_guest::Note(vcpu)),
                        vcpu,
                        o.exits,
                    );
                }
                if let Some((before, after)) = o.tpr {
                    tally.host_failure();
                    failure(
                        &tally,
                        format_args!("the guest changed the host's task priority (CR8) from {before:#x} to {after:#x}"),
                        vcpu,
                        o.exits,
                    );
                }
                if o.ticks > deadline {
                    tally.host_failure();
                    failure(
                        &tally,
                        format_args!(
                            "the run took {} us, beyond its bound of {RUN_DEADLINE_US} us ({} exits, ended by {})",
                            tsc::ticks_to_micros(o.ticks),
                            o.exits,
                            o.ending
                        ),
                        vcpu,
                        o.exits,
                    );
                }
            }
        }
        // SAFETY: in VMX root operation.
        match unsafe { vmptrst() } {
            Ok(p) if p == f.vmcs => {}
            other => {
                tally.host_failure();
                failure(
                    &tally,
                    format_args!("the VMCS is no longer current after the run: VMPTRST gave {other:x?}"),
                    vcpu,
                    0,
                );
            }
        }
        if k == skip && opts.inject == Some(Inject::FuzzHostState) {
            let tpr = apic::task_priority();
            info!("inject: the host's task priority (CR8) changed from {tpr:#x} to {:#x} after run {k}", tpr ^ 1);
            apic::set_task_priority(tpr ^ 1);
        }
        if let Some(vector) = apic::in_service() {
            tally.host_failure();
            failure(
                &tally,
                format_args!("vector {vector:#x} left in service at the local APIC (no EOI): its class is blocked"),
                vcpu,
                0,
            );
            apic::end_of_interrupt();
        }
        let now = HostState::read();
        if now != host {
            for (name, before, after) in now.changes(&host) {
                tally.host_failure();
                failure(&tally, format_args!("host {name} changed: {before:#x} -> {after:#x}"), vcpu, 0);
            }
            host.restore();
        }
        // Let the log reach COM1 while the runs go on (never waits), and
        // watch the other CPUs' runs.
        crate::logger::poll();
        vfuzz::watch(cpu, HANG_US);
        if (k + 1 - skip) % PROGRESS_EVERY == 0 && k + 1 - skip < runs {
            info!("fuzz: cpu={cpu} {} of {runs} runs, {} host failures so far", k + 1 - skip, tally.host_failures);
        }
    }
    record.finish();
    vfuzz::watch_others(cpu, HANG_US);
    // SAFETY: in VMX root operation; the VMCS is this CPU's (not left current or active).
    let _ = unsafe { vmclear(f.vmcs) };
    info!("{}", ModesLine(cpu, &tally));
    info!("{}", Line { cpu, tally: &tally, seed });
    Ok(tally.host_failures == 0)
}

impl Fuzzer<'_> {
    /// Launch one run from a fresh VMCS and run it to its end.
    fn run(&self, vcpu: &mut ProofVcpu, plan: &Plan) -> Result<Outcome, VmcsError> {
        // SAFETY: in VMX root operation; the region is this CPU's VMCS.
        unsafe { vmclear(self.vmcs).and_then(|()| vmptrld(self.vmcs)) }.map_err(VmcsError::Load)?;
        vcpu.launched = false;
        let mut c = self.controls;
        if plan.mode.ia32e() {
            c.entry |= entry::IA32E_MODE_GUEST;
        }
        vmcs::write_controls(&c)?;
        vmcs::write(ctl::EXCEPTION_BITMAP, super::emulate::REFLECTED_EXCEPTIONS as u64)?;
        self.bitmaps.write()?;
        if let Some(eptp) = self.eptp {
            vmcs::write(ctl::EPTP_FULL, eptp)?;
        }
        if let Some((id, _)) = vcpu.vpid {
            vmcs::write(ctl::VPID, id as u64)?;
        }
        vmcs::write_host_state(self.pcb, c.exit, vcpu.host_rsp(), Vcpu::<Proof>::host_rip())?;
        self.write_guest_state(&c, plan)?;
        if let Clock::Preemption(value) = self.clock {
            vmcs::write(guest::VMX_PREEMPTION_TIMER_VALUE, value)?;
        }
        let r = plan.regs;
        vcpu.regs = GuestRegs {
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
        vcpu.guest.ending = None;
        vcpu.guest.ending_value = 0;
        vcpu.guest.ending_qualification = 0;
        vcpu.guest.line_len = 0;
        vcpu.guest.cr8 = 0;
        vcpu.exits = 0;
        vfuzz::clear_debug_registers();
        if !vcpu.flush_vpid() {
            return Err(VmcsError::Flush);
        }

        let host_tpr = apic::task_priority();
        if let Clock::Apic(count) = self.clock {
            apic::set_task_priority(TPR_TIMED_GUEST);
            apic::timer_one_shot(count);
        }
        let during = apic::task_priority();
        let begin = tsc::rdtsc();
        let result = vcpu.run();
        let ticks = tsc::rdtsc() - begin;
        let after = apic::task_priority();
        if let Clock::Apic(_) = self.clock {
            apic::timer_stop();
            apic::take_pending_timer();
        }
        apic::set_task_priority(host_tpr);
        let tpr = (after != during).then_some((during, after));
        if let Return::EntryFailed { instruction, fail } = result {
            dump::vm_instruction_failure(instruction, fail);
            vcpu.guest.ending = Some(Ending::EntryFailed);
        }
        Ok(Outcome { ending: vcpu.guest.ending.unwrap_or(Ending::EntryFailed), exits: vcpu.exits, ticks, tpr })
    }

    /// The guest state of the plan (SDM Vol. 3C §27.3.1 "Checks on the Guest State Area").
    fn write_guest_state(&self, c: &Controls, plan: &Plan) -> Result<(), VmcsError> {
        use vmcs::write;
        let d = &self.d;
        let m = plan.mode;
        let mut cr0 = cr0::ET | cr0::NE | plan.cr0_extra;
        if m.protected() {
            cr0 |= cr0::PE;
        }
        if m.paging() {
            cr0 |= cr0::PG;
        }
        // Unrestricted guest frees CR0.PE and CR0.PG from the fixed bits (SDM Vol. 3C
        // §27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and MSRs").
        let free = if self.caps.unrestricted { cr0::PE | cr0::PG } else { 0 };
        let cr0_fixed = Fixed { fixed0: d.cr0_fixed0 & !free, fixed1: d.cr0_fixed1 };
        // A CD or NW the plan asks for is only shown to the guest: the real
        // CR0 never has them, since a VM exit would leave them in the host
        // (CR0_KEPT_BY_VM_EXIT; run 11 of seed 1 on skylake found that).
        let real = cr0_fixed.apply(cr0 & !CR0_KEPT_BY_VM_EXIT).value;
        write(guest::CR0, real)?;
        write(ctl::CR0_GUEST_HOST_MASK, (cr0_fixed.constrained() | CR0_KEPT_BY_VM_EXIT) & 0xffff_ffff)?;
        write(ctl::CR0_READ_SHADOW, real | (cr0 & CR0_KEPT_BY_VM_EXIT))?;
        let mut cr4 = plan.cr4_extra;
        if m.pae() {
            cr4 |= cr4::PAE;
        }
        let cr4 = Fixed { fixed0: d.cr4_fixed0, fixed1: d.cr4_fixed1 }.apply(cr4).value;
        write(guest::CR4, cr4)?;
        write(ctl::CR4_GUEST_HOST_MASK, 0xffff_ffff)?;
        write(ctl::CR4_READ_SHADOW, cr4 & !hvlogic::fixed::cr4::VMXE)?;
        let cr3 = match (&self.host_tables, m.paging()) {
            (_, false) => 0,
            (Some(t), true) => t.cr3(m),
            (None, true) => m.guest_cr3(),
        };
        write(guest::CR3, cr3)?;
        if m == Mode::Pae && self.caps.ept {
            // With EPT, VM entry takes the PDPTEs from these fields (SDM Vol. 3C
            // §27.3.2.4 "Loading Page-Directory-Pointer-Table Entries").
            for (field, value) in [guest::PDPTE0_FULL, guest::PDPTE1_FULL, guest::PDPTE2_FULL, guest::PDPTE3_FULL]
                .into_iter()
                .zip(plan.pdptes)
            {
                write(field, value)?;
            }
        }
        write(guest::DR7, plan.dr7)?;
        // Where the local-APIC timer bounds the run, the guest starts with
        // RFLAGS.IF 1: Bochs 2.7 holds back external interrupts from a guest
        // with IF 0 although "external-interrupt exiting" is 1 (RFLAGS.IF does
        // not block them then: SDM Vol. 3C §26.2 "Other Causes of VM Exits"), so a guest spinning
        // from such a start outlived its time budget (seed=3 run 42 on
        // penryn; the same program with IF 1 ends by the timer). A guest
        // that clears IF itself and spins needs the watchdog.
        let rflags = if matches!(self.clock, Clock::Apic(_)) { plan.rflags | RFLAGS_IF } else { plan.rflags };
        write(guest::RFLAGS, rflags)?;
        write(guest::RIP, plan.rip)?;
        write(guest::RSP, plan.rsp)?;

        // Segments (SDM Vol. 3C §27.3.1.2 "Checks on Guest Segment Registers"): real-mode ones under unrestricted
        // guest, else the flat ones of the guest's GDT.
        let (cs, cs_base, cs_limit, cs_ar, data, data_limit, data_ar) = match m {
            Mode::Real => (plan.real_cs, (plan.real_cs as u64) << 4, 0xffff, 0x9b, 0, 0xffff, 0x93),
            // L = 1 (bit 13), D = 0: 64-bit code.
            Mode::Long64 => (gf::SEL_CODE64, 0, 0xffff_ffff, 0xa09b, gf::SEL_DATA, 0xffff_ffff, AR_DATA_32),
            _ => (gf::SEL_CODE32, 0, 0xffff_ffff, AR_CODE_32, gf::SEL_DATA, 0xffff_ffff, AR_DATA_32),
        };
        vmcs::write_segment(Segment::Cs, cs, cs_base, cs_limit, cs_ar)?;
        for s in vmcs::DATA_SEGMENTS {
            vmcs::write_segment(s, data, 0, data_limit, data_ar)?;
        }
        write(guest::GDTR_BASE, gf::GDT)?;
        write(guest::GDTR_LIMIT, gf::GDT_ENTRIES * 8 - 1)?;
        write(guest::IDTR_BASE, if m == Mode::Real { gf::IVT } else { gf::IDT })?;
        write(guest::IDTR_LIMIT, plan.idtr_limit as u64)?;
        vmcs::write_segment(Segment::Ldtr, 0, 0, 0, AR_UNUSABLE)?;
        vmcs::write_segment(Segment::Tr, gf::SEL_TSS, gf::TSS, 0x67, AR_TSS_BUSY_32)?;

        proof_vmcs::write_fresh_state()?;
        if c.entry & entry::LOAD_EFER != 0 {
            let long = if m.ia32e() { efer::LME | efer::LMA } else { 0 };
            write(guest::IA32_EFER_FULL, long | plan.efer_extra)?;
        }
        if c.entry & entry::LOAD_PAT != 0 {
            write(guest::IA32_PAT_FULL, PAT_RESET)?;
        }
        Ok(())
    }
}
