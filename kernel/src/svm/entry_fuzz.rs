//! `entryfuzz=N seed=S` under SVM: differential test of the software VMRUN
//! checker (hvlogic::svm::vmrun_check) against the CPU's own VMRUN checks,
//! `vmx/entry_fuzz.rs`'s counterpart.
//!
//! The base is this CPU's proof-guest VMCB (the intercepts, maps, ASID,
//! nested paging and start state `proof_guest` writes), with every exception
//! intercepted and the guest stopped before its first instruction: a pending
//! virtual interrupt (V_IRQ, V_IGN_TPR, RFLAGS.IF) with the VINTR intercept
//! (`vmrun_fuzz::stops_at_once`). Its memory, and the reset vector's page,
//! are full of HLT, which is intercepted. N times: mutate one to three fields
//! (hvlogic::svm::vmrun_fuzz), ask the checker for its verdict, VMRUN,
//! compare, and copy the base back over the whole VMCB (a #VMEXIT writes the
//! guest state, VMSAVE the rest). A mutation runs only when `Policy::allows`
//! says that whatever VMRUN does with it, a guest that runs stays confined
//! and comes back. SVM has no VMfail: VMRUN runs the guest, or exits at once
//! with VMEXIT_INVALID (APM Vol. 2 §15.5.1 "Basic Operation").
//!
//! Where the checker (the APM) and the CPU disagree, a known departure of
//! the emulator may explain it (`departures::explain`): QEMU's TCG is known
//! by its CPUID signature, Bochs by `exit=bochs` on the command line (its
//! models copy real CPUs' CPUID). On anything else no departure applies.

use super::dump;
use super::vcpu::{Vcpu, STOP};
use crate::pcb::Pcb;
use crate::virt::fuzz::HostState;
use crate::virt::layout::*;
use crate::virt::nested::{self, Format, Tables};
use crate::virt::proof::AddressSpace;
use crate::{apic, memory};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use hvlogic::entry_fuzz::Rng;
use hvlogic::guest_plan::GuestMode;
use hvlogic::svm::exit_code;
use hvlogic::svm::vmcb::{control, intercept1 as i1, save, tlb, vintr, ProofAddresses, Vmcb as Image};
use hvlogic::svm::vmrun_check::departures::{self, Case, Emulator};
use hvlogic::svm::vmrun_check::{self, Outcome, Verdict};
use hvlogic::svm::vmrun_fuzz::{in_long_mode, stops_at_once, Mutator, Policy, Refusal};
use log::{error, info};

/// Disagreements printed in full; later ones are only counted.
const PRINT_LIMIT: u32 = 20;
/// A bound on each VMRUN, in microseconds of TSC time: the local-APIC timer,
/// whose interrupt the INTR intercept turns into a #VMEXIT. A guest that
/// stops at once never meets it; one that reaches it ran where HLT should
/// have stopped it, and the mutation is reported.
const TIME_BOUND_US: u64 = 20_000;
/// RFLAGS.IF (APM Vol. 2 §3.1.6 "Flags Register").
const RFLAGS_IF: u64 = 1 << 9;

/// Stage work with `entryfuzz=N`, in place of the guest.
pub fn run(pcb: &Pcb, n: u32, seed: Option<u64>) {
    crate::virt::fuzz::stage(pcb, "entry-fuzz", |pcb| fuzz(pcb, n, seed))
}

/// Why the fuzzer cannot run on this CPU.
enum FuzzError {
    /// 32-bit host-owned page tables need the guest's memory below 4 GiB.
    Above4GiB,
    /// The unmutated VMCB already breaks a rule (each printed).
    BaseInvalid,
    /// The unmutated VMCB does not stop its guest at once.
    BaseRuns,
}

impl fmt::Display for FuzzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FuzzError::Above4GiB => f.write_str("32-bit guest paging needs its tables and memory below 4 GiB"),
            FuzzError::BaseInvalid => f.write_str("the base VMCB is not valid"),
            FuzzError::BaseRuns => f.write_str("the base VMCB does not stop its guest before the first instruction"),
        }
    }
}

/// The guest's memory and nested tables (or host-owned page tables): like the
/// proof guest's, but every byte HLT, the reset vector's page included.
fn address_space(mode: GuestMode) -> Result<AddressSpace, FuzzError> {
    let guest = memory::alloc_pages((GUEST_MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    guest.fill(0xf4);
    let mem = guest.as_ptr() as u64;
    if mode.uses_ept() {
        let mut t = Tables::new(Format::Npt);
        t.map(0, mem, GUEST_MEM_SIZE, nested::RWX);
        let reset = memory::alloc_pages(1);
        reset.fill(0xf4);
        t.map(RESET_PAGE_GPA, reset.as_ptr() as u64, memory::PAGE_SIZE as u64, nested::READ | nested::EXECUTE);
        return Ok(AddressSpace { nested: Some(t), cr3: 0, pm_entry: IMAGE, gdt: IMAGE });
    }
    // 32-bit paging on tables outside guest memory, guest-linear X at mem + X.
    let pd = memory::alloc_pages(1);
    let pt = memory::alloc_pages(1);
    let (pd, pt) = (pd.as_mut_ptr() as u64, pt.as_mut_ptr() as u64);
    if pt >> 32 != 0 || pd >> 32 != 0 || (mem + GUEST_MEM_SIZE) >> 32 != 0 {
        return Err(FuzzError::Above4GiB);
    }
    // SAFETY: two zeroed pages this function allocated (identity-mapped);
    // every index is below 1024 (SDM Vol. 3A §4.3 "32-Bit Paging", the format
    // AMD64's legacy paging shares: APM Vol. 2 §5.3 "Legacy-Mode Page Translation").
    unsafe {
        (pd as *mut u32).write(pt as u32 | 3);
        for i in 0..GUEST_MEM_SIZE / memory::PAGE_SIZE as u64 {
            (pt as *mut u32).add(i as usize).write((mem + i * memory::PAGE_SIZE as u64) as u32 | 3);
        }
    }
    Ok(AddressSpace { nested: None, cr3: pd, pm_entry: IMAGE, gdt: IMAGE })
}

/// The entry fuzzer's #VMEXIT handler: every exit stops the run; the caller
/// reads the exit code.
extern "C" fn stop_at_exit(_: &mut Vcpu<()>) -> u64 {
    STOP
}

/// Counts over the run.
#[derive(Default)]
struct Tally {
    agree: u32,
    known: u32,
    disagree: u32,
    refused: [u32; Refusal::NAMES.len()],
    invalid: u32,
    /// Exit codes of the mutations that ran (first eight codes seen).
    ran: [(u64, u32); 8],
    ran_other: u32,
    /// Mutations whose guest ran until the time bound.
    unstopped: u32,
    /// Mutations after whose VMRUN the host's state had changed.
    host_broken: u32,
    /// Draws refused because the emulator's #VMEXIT breaks the host there
    /// (`departures::HOST_HAZARDS`), by hazard.
    hazards: Vec<(&'static str, u32)>,
}

impl Tally {
    fn outcome(&mut self, o: &Outcome) {
        match *o {
            Outcome::Exited { code: exit_code::INVALID } => self.invalid += 1,
            Outcome::Exited { code } => match self.ran.iter_mut().find(|(c, n)| *c == code || *n == 0) {
                Some(slot) => *slot = (code, slot.1 + 1),
                None => self.ran_other += 1,
            },
            Outcome::Fault(_) => {}
        }
    }

    fn hazard(&mut self, id: &'static str) {
        crate::virt::fuzz::count_by_name(&mut self.hazards, id);
    }

    fn refused(&mut self, r: Refusal) {
        if let Some(i) = Refusal::NAMES.iter().position(|n| *n == r.name()) {
            self.refused[i] += 1;
        }
    }
}

fn fuzz(pcb: &Pcb, n: u32, seed: Option<u64>) -> Result<bool, FuzzError> {
    let (features, host_state) = {
        let own = pcb.own();
        (own.svm, own.host_state)
    };
    let (seed, source) = crate::virt::fuzz::entry_seed(pcb, seed);
    let mode = GuestMode::choose_svm(features.nested_paging());
    let space = address_space(mode)?;
    let asid = features.asid_for(pcb.processor_index);
    let vcpu = Vcpu::new(pcb.processor_index, host_state, features.nrip_save(), stop_at_exit, ());
    let vmcb = vcpu.vmcb;
    super::proof_guest::configure(&vmcb, asid, mode, &space, &super::proof_guest::Maps::new());
    super::proof_guest::write_start(&vmcb, mode, &space);
    // Every exception intercepted; a pending virtual interrupt nothing masks,
    // with the VINTR intercept: the guest exits before its first instruction
    // (APM Vol. 2 §15.21.4 "Injecting Virtual (INTR) Interrupts", §15.21.6
    // "Virtual Interrupt Intercept"). The TLB flushed at every VMRUN.
    vmcb.set_u32(control::INTERCEPT_EXCEPTIONS, 0xffff_ffff);
    vmcb.set_u32(control::INTERCEPT1, vmcb.u32(control::INTERCEPT1) | i1::VINTR);
    vmcb.set_u64(control::VINTR, vmcb.u64(control::VINTR) | vintr::V_IRQ | vintr::V_IGN_TPR);
    vmcb.set_u64(save::RFLAGS, vmcb.u64(save::RFLAGS) | RFLAGS_IF);
    vmcb.write(control::TLB_CONTROL, tlb::FLUSH_ALL);

    let cpu = dump::cpu_facts();
    let proof: Box<Image> = Box::new(dump::image(&vmcb));
    // With nested paging, every other mutation starts from the same VMCB in
    // 64-bit mode (CR3 at the guest's PAGE_DIRECTORY: HLT bytes, so the first
    // fetch's walk faults, and #PF is intercepted): the long-mode rules are
    // one or two changes away from it. Without nested paging the guest's
    // paging is the host's protection, and only the proof guest's start runs.
    let mut bases = Vec::from([proof]);
    if mode.uses_ept() {
        let at = ProofAddresses { guest_cr3: PAGE_DIRECTORY, gdt: IMAGE, entry: IMAGE, ..ProofAddresses::EXAMPLE };
        bases.push(Box::new(in_long_mode(&bases[0], &at)));
    }
    let emulator = dump::emulator();
    info!(
        "entry-fuzz: {n} mutations, seed={seed} (from {source}); bases: the proof guest's VMCB{}; the guest stops at once by a pending virtual interrupt (VINTR intercept); departures: {}",
        if bases.len() > 1 { " and the same in 64-bit mode, in turn" } else { "" },
        match emulator {
            Some(Emulator::Qemu) => "QEMU TCG's (CPUID 4000_0000h: TCGTCGTCGTCG)",
            Some(Emulator::Bochs) => "Bochs's (exit=bochs)",
            None => "none (no emulator named)",
        }
    );
    // Each base passes every check and runs, stopping at its first
    // instruction boundary: VINTR (QEMU 7.2 takes the virtual interrupt only
    // after the first instruction; HLT or the first fetch's #PF exits then).
    let timer = apic::timer_count_for(TIME_BOUND_US);
    for base in &bases {
        let broken = dump::violations(base, &cpu);
        if !broken.is_empty() {
            for v in &broken {
                error!("entry-fuzz: the base VMCB breaks {v}");
            }
            return Err(FuzzError::BaseInvalid);
        }
        if !stops_at_once(base) {
            return Err(FuzzError::BaseRuns);
        }
        let first = execute(vcpu, base, timer);
        if !Verdict::Runs.agrees(&first) {
            error!("entry-fuzz: the base VMCB does not run: {first}");
            return Ok(false);
        }
        info!("entry-fuzz: the base VMCB (CR0={:#x}) runs and stops at once: {first}", base.read_u64(save::CR0));
    }

    let host = HostState::read();
    let host_segments = super::fuzz_guest::segments();
    let spare_page = memory::alloc_pages(3).as_ptr() as u64;
    let mutators: Vec<Mutator> = bases.iter().map(|b| Mutator { base: b, cpu, spare_page }).collect();
    let policies: Vec<Policy> = bases.iter().map(|b| Policy::new(&cpu, b)).collect();
    let mut rng = Rng::new(seed);
    let mut t = Tally::default();
    let mut reached: Vec<&'static str> = Vec::new();
    let mut known_by: Vec<(&'static str, u32)> = Vec::new();
    for i in 0..n {
        let which = i as usize % bases.len();
        let (base, mutator, policy) = (&bases[which], &mutators[which], &policies[which]);
        // Draw until the policy allows executing the mutation.
        let (m, after) = loop {
            let m = mutator.mutate(&mut rng);
            let after = Box::new(m.apply(base));
            match policy.allows(base, &after) {
                // A state the emulator's #VMEXIT cannot come back from.
                Ok(()) => match emulator.and_then(|e| departures::host_hazard(e, &after)) {
                    Some(h) => t.hazard(h.id),
                    None => break (m, after),
                },
                Err(r) => t.refused(r),
            }
        };
        let violations = dump::violations(&after, &cpu);
        let verdict = Verdict::from_violations(&violations);
        log::trace!("entry-fuzz: #{i}: {}", m.describe(base));
        if log::log_enabled!(log::Level::Trace) {
            crate::logger::flush();
        }
        let outcome = execute(vcpu, &after, timer);
        t.outcome(&outcome);
        let now = HostState::read();
        if now != host {
            t.host_broken += 1;
            for (name, before, after) in now.changes(&host) {
                error!("entry-fuzz: #{i} changed the host's {name}: {before:#x} -> {after:#x} ({})", m.describe(base));
            }
            host.restore();
        }
        // SVM's own host state: GIF set again, and the host's TR and LDTR
        // back (VMLOAD), as the guest fuzzer checks after every run.
        if !super::fuzz_guest::gif_set() {
            t.host_broken += 1;
            error!("entry-fuzz: #{i} left GIF clear: the host's interrupts are held ({})", m.describe(base));
        }
        let segments = super::fuzz_guest::segments();
        if segments != host_segments {
            t.host_broken += 1;
            error!(
                "entry-fuzz: #{i} changed the host's TR, LDTR: {host_segments:#x?} -> {segments:#x?} ({})",
                m.describe(base)
            );
        }
        if outcome == (Outcome::Exited { code: exit_code::INTR }) {
            t.unstopped += 1;
            error!(
                "entry-fuzz: #{i} ran until the time bound ({TIME_BOUND_US} us) instead of stopping at once: {}",
                m.describe(base)
            );
        }
        for v in &violations {
            if !reached.contains(&v.rule.id) {
                reached.push(v.rule.id);
            }
        }
        let case = Case { vmcb: &after, cpu: &cpu, violations: &violations };
        if verdict.agrees(&outcome) {
            t.agree += 1;
        } else if let Some(d) = emulator.and_then(|e| departures::explain(e, &case, &outcome)) {
            t.known += 1;
            crate::virt::fuzz::count_by_name(&mut known_by, d.id);
        } else {
            t.disagree += 1;
            if t.disagree <= PRINT_LIMIT {
                error!("entry-fuzz: disagreement #{i}: {}", m.describe(base));
                error!("entry-fuzz:   checker: {verdict}; CPU: {outcome}");
                for v in &violations {
                    error!("entry-fuzz:   {v}");
                }
            }
        }
    }
    // The VMCB is the proof guest's again (every run copies its base in
    // before VMRUN; the last #VMEXIT wrote into it).
    vmcb.load(&bases[0]);
    let same = dump::image(&vmcb) == *bases[0];

    let total = vmrun_check::all_rules().count();
    let mut missing: Vec<&str> = vmrun_check::all_rules().map(|r| r.id).filter(|id| !reached.contains(id)).collect();
    missing.sort_unstable();
    info!(
        "entry-fuzz: outcomes: ran={} (exit codes {}), VMEXIT_INVALID={}; refused draws: {}",
        n - t.invalid,
        Codes(&t.ran, t.ran_other),
        t.invalid,
        Refused(&t.refused, &t.hazards)
    );
    info!("entry-fuzz: rules reached={} of {total}; not reached: {}", reached.len(), Ids(&missing));
    for (id, count) in &known_by {
        let who = departures::departure(id).map_or("", |d| d.emulator.name());
        info!("entry-fuzz: known {who} departure {id}: {count}");
    }
    let leaked = super::vcpu::leaked_single_steps();
    if leaked > 0 {
        info!("entry-fuzz: single-step traps of a guest taken in the host after #VMEXIT (the Bochs 2.7 departure), let go: {leaked}");
    }
    crate::virt::fuzz::entry_result(n, t.agree, t.known, t.disagree, seed, same, "VMCB");
    Ok(t.disagree == 0 && same && t.unstopped == 0 && t.host_broken == 0)
}

/// VMRUN with `image` as the VMCB, bounded by the local-APIC timer
/// (`timer` ticks); what it did.
fn execute(vcpu: &mut Vcpu<()>, image: &Image, timer: u32) -> Outcome {
    vcpu.vmcb.load(image);
    vcpu.regs = Default::default();
    vcpu.regs.rax = image.read_u64(save::RAX);
    let _ = crate::virt::fuzz::timed(Some(timer), || vcpu.run());
    Outcome::Exited { code: vcpu.exit_code() }
}

struct Codes<'a>(&'a [(u64, u32)], u32);

impl fmt::Display for Codes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (code, count) in self.0.iter().filter(|(_, n)| *n > 0) {
            write!(f, "{}{}x{count}", if first { "" } else { " " }, exit_code::name(*code))?;
            first = false;
        }
        if self.1 > 0 {
            write!(f, "{}otherx{}", if first { "" } else { " " }, self.1)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

struct Refused<'a>(&'a [u32], &'a [(&'static str, u32)]);

impl fmt::Display for Refused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, count)) in Refusal::NAMES.iter().zip(self.0).enumerate() {
            write!(f, "{}{name}={count}", if i > 0 { " " } else { "" })?;
        }
        for (id, count) in self.1 {
            write!(f, " {id}={count}")?;
        }
        Ok(())
    }
}

struct Ids<'a>(&'a [&'a str]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, id) in self.0.iter().enumerate() {
            write!(f, "{}{id}", if i > 0 { " " } else { "" })?;
        }
        Ok(())
    }
}
