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
use super::vcpu::{Return, Vcpu};
use super::vmcs::{self, Controls, Segment, VmcsError, AR_CODE_32, AR_DATA_32, AR_TSS_BUSY_32, AR_UNUSABLE, PAT_RESET};
use crate::pcb::{Pcb, CPU_STATUS_VMXON};
use crate::virt::fuzz::{self as vfuzz, HostState, HostTables, HANG_US, RUN_DEADLINE_US};
use crate::virt::nested::{self as ept, Format, Tables as Ept};
use crate::{apic, memory, tsc};
use core::fmt;
use hvlogic::cmdline::GuestKind;
use hvlogic::controls::{entry, exit, pin, proc1};
use hvlogic::fixed::{Fixed, CR0_KEPT_BY_VM_EXIT};
use hvlogic::guest_fuzz::{self as gf, cr0, cr4, efer, Caps, Mode, Plan, StartModes, Tally};
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::summary::Virt;
use hvlogic::vmx_global::VmxGlobalData;
use log::{info, warn, Level};
use x86::vmx::vmcs::{control as ctl, guest};

/// Guest time per run, in microseconds of TSC time (the VMX-preemption
/// timer, or the local-APIC timer calibrated against the TSC).
const TIME_BUDGET_US: u64 = 200;
/// Exits per run: a guest that loops on exiting instructions ends here.
const EXIT_BUDGET: u64 = 500;

/// Stage work with `guest=fuzz`, in place of the proof guest.
pub fn run(pcb: &Pcb) {
    vfuzz::stage_guest_fuzz(pcb, fuzz)
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

fn fuzz(pcb: &Pcb) -> Result<bool, VmcsError> {
    let (d, maxphyaddr) = {
        let own = pcb.own();
        (own.vmx, own.maxphyaddr)
    };
    let cpu = pcb.processor_index;
    let vfuzz::Start { seed, cpu_seed, runs, skip } = vfuzz::Start::new(cpu);

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
    let mut tally = Tally::default();
    for k in skip..skip.saturating_add(runs) {
        record.enter(k);
        let plan = gf::generate(gf::run_seed(cpu_seed, k), caps, mem);
        record.start();
        let outcome = f.run(vcpu, &plan);
        record.stop();
        // Report a host failure (the tally has counted it).
        let failure = |tally: &Tally, what: fmt::Arguments, exits: u64| {
            vfuzz::host_failure(cpu, k, plan.mode, cpu_seed, tally, what, || {
                dump::guest_state(&vcpu.regs, exits, Level::Error)
            })
        };
        match outcome {
            Err(e) => {
                tally.runs += 1;
                tally.host_failure();
                failure(&tally, format_args!("a VMX instruction failed in the host: {e}"), 0);
            }
            Ok(o) => {
                let nmi_exit = o.ending == Ending::Unexpected(hvlogic::exit_reason::basic::EXCEPTION_OR_NMI);
                // Bochs 2.7 holds external interrupts back from a guest with
                // RFLAGS.IF 0 although "external-interrupt exiting" is 1
                // (RFLAGS.IF does not block them then: SDM Vol. 3C §26.2
                // "Other Causes of VM Exits"), so a guest spinning with IF 0
                // outlives the local-APIC timer: the watchdog's ending.
                let if_clear = vmcs::read(guest::RFLAGS) & RFLAGS_IF == 0;
                // Only Bochs: on a CPU the SDM describes the timer's
                // interrupt exits whatever the guest's IF.
                let bochs = crate::run::options().exit == hvlogic::cmdline::ExitMode::Bochs;
                let judged = vfuzz::Judged {
                    virt: Virt::Vmx,
                    watchdog_sent: record.watchdog_sent_for(k),
                    nmi_exit,
                    watchdog_nmi: nmi_exit && record.take_pending_nmi(),
                    masked_timer: bochs && matches!(f.clock, Clock::Apic(_)) && if_clear,
                    deadline_us: RUN_DEADLINE_US,
                    hang_us: HANG_US,
                    note: &super::proof_guest::Note(vcpu),
                };
                vfuzz::judge(&mut tally, plan.mode, &o, &judged, &failure);
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
                    0,
                );
            }
        }
        let after = vfuzz::After { cpu, k, skip, runs, hang_us: HANG_US, host: &host };
        vfuzz::after_run(&mut tally, &after, &failure);
    }
    let passed = vfuzz::finish(&record, cpu, HANG_US, &tally, seed);
    // SAFETY: in VMX root operation; the VMCS is this CPU's (not left current or active).
    let _ = unsafe { vmclear(f.vmcs) };
    Ok(passed)
}

impl Fuzzer<'_> {
    /// Launch one run from a fresh VMCS and run it to its end.
    fn run(&self, vcpu: &mut ProofVcpu, plan: &Plan) -> Result<vfuzz::Outcome, VmcsError> {
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
        vfuzz::start_run(&mut vcpu.guest, &mut vcpu.regs, &mut vcpu.exits, plan);
        if !vcpu.flush_vpid() {
            return Err(VmcsError::Flush);
        }
        let apic_timer = match self.clock {
            Clock::Apic(count) => Some(count),
            Clock::Preemption(_) => None,
        };
        let (result, ticks, tpr) = vfuzz::timed(apic_timer, || vcpu.run());
        if let Return::EntryFailed { instruction, fail } = result {
            dump::vm_instruction_failure(instruction, fail);
            vcpu.guest.ending = Some(Ending::EntryFailed);
        }
        Ok(vfuzz::Outcome { ending: vcpu.guest.ending.unwrap_or(Ending::EntryFailed), exits: vcpu.exits, ticks, tpr })
    }

    /// The guest state of the plan (SDM Vol. 3C §27.3.1 "Checks on the Guest State Area").
    fn write_guest_state(&self, c: &Controls, plan: &Plan) -> Result<(), VmcsError> {
        use vmcs::write;
        let d = &self.d;
        let m = plan.mode;
        let cr0 = plan.cr0();
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
