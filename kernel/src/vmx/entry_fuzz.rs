//! `entryfuzz=N seed=S`: differential test of the software entry checker
//! (hvlogic::entry_check) against the CPU's own VM-entry checks.
//!
//! The base is this CPU's proof-guest VMCS (the same controls, host and
//! guest state as `guest.rs` writes, through `vmcs.rs`), with every
//! exception exiting and the guest stopped before its first instruction
//! (VMX-preemption timer 0, or interrupt-window exiting with RFLAGS.IF 1
//! where there is no timer); its memory is full of HLT. N times: mutate one
//! to three fields (hvlogic::entry_fuzz), ask the checker for its verdict,
//! VMLAUNCH, compare, and restore every field. Host-side mutations run only
//! when the checker predicts VMfailValid, so no VM exit loads them
//! (`Policy::allows`); the VM exit itself lands in `fuzz_exit`, which
//! trusts nothing but HOST_RSP.

use super::instructions::{vmclear, vmptrld, vmwrite};
use super::proof_vmcs::{self, GuestStart};
use super::snapshot;
use super::vmcs::{self, VmcsError};
use crate::memory;
use crate::pcb::Pcb;
use crate::virt::layout::*;
use crate::virt::nested::{self as ept, Format, Tables as Ept};
use alloc::vec::Vec;
use hvlogic::controls::{pin, proc2};
use hvlogic::entry_check::fields::{self, enc, Snapshot};
use hvlogic::entry_check::{self as checker, departures, Outcome, Verdict};
use hvlogic::entry_fuzz::{Mutator, Places, Policy, Refusal, Rng, MSR_AREA};
use hvlogic::guest_plan::GuestMode;
use log::{error, info};

core::arch::global_asm!(
    ".section .text.vmx, \"ax\"",
    // u64 fuzz_launch(u64 *slot [rdi]): HOST_RSP is `slot`.
    ".global fuzz_launch",
    "fuzz_launch:",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi], rsp",
    "    vmlaunch",
    // Fell through: VMfailInvalid (CF) or VMfailValid (ZF).
    "    pushfq",
    "    pop rax",
    "    and eax, 0x41",
    "    bts rax, 63",
    "    jmp 2f",
    // HOST_RIP: any VM exit, entry failures (exit reasons 33, 34) included.
    ".global fuzz_exit",
    "fuzz_exit:",
    "    mov rsp, [rsp]",
    "    xor eax, eax",
    "2:  pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    ret",
);

extern "C" {
    fn fuzz_launch(slot: *mut u64) -> u64;
    fn fuzz_exit();
}

const FAILED: u64 = 1 << 63;
/// Disagreements printed in full; later ones are only counted.
const PRINT_LIMIT: u32 = 20;

/// Stage work with `entryfuzz=N`, in place of the guest.
pub fn run(pcb: &Pcb, n: u32, seed: Option<u64>) {
    crate::virt::fuzz::stage(pcb, "entry-fuzz", |pcb| fuzz(pcb, n, seed))
}

/// Why the fuzzer cannot run on this CPU.
enum FuzzError {
    Vmcs(VmcsError),
    /// Neither a VMX-preemption timer nor interrupt-window exiting.
    NoStop,
    /// The unmutated VMCS already breaks a rule (each printed).
    BaseInvalid,
}

impl From<VmcsError> for FuzzError {
    fn from(e: VmcsError) -> FuzzError {
        FuzzError::Vmcs(e)
    }
}

impl core::fmt::Display for FuzzError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FuzzError::Vmcs(e) => write!(f, "{e}"),
            FuzzError::NoStop => f.write_str(
                "neither a VMX-preemption timer nor interrupt-window exiting: no way to stop a guest at once",
            ),
            FuzzError::BaseInvalid => f.write_str("the base VMCS is not valid"),
        }
    }
}

fn write(field: u32, value: u64) -> Result<(), FuzzError> {
    Ok(vmcs::write(field, value)?)
}

/// One page holding `words` at its start.
fn page_with(words: &[u64]) -> u64 {
    let page = memory::alloc_pages(1);
    for (i, w) in words.iter().enumerate() {
        page[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    page.as_ptr() as u64
}

/// 32-bit paging: a directory at `pd` whose entry 0 points at the table
/// `pt_address` (as the guest sees it); the table at host address `pt` maps
/// guest-linear [0, GUEST_MEM_SIZE) to `base` (SDM Vol. 3A §4.3 "32-Bit
/// Paging").
fn page_tables(pd: u64, pt: u64, pt_address: u64, base: u64) {
    // SAFETY: both are zeroed pages this module allocated (identity-mapped).
    unsafe {
        (pd as *mut u32).write(pt_address as u32 | 3);
        for i in 0..GUEST_MEM_SIZE / memory::PAGE_SIZE as u64 {
            (pt as *mut u32).add(i as usize).write((base + i * memory::PAGE_SIZE as u64) as u32 | 3);
        }
    }
}

/// The base VMCS, current and complete; returns its address, the policy and
/// the prepared places.
fn build(pcb: &Pcb, slot: u64) -> Result<(u64, Policy, Places, bool), FuzzError> {
    let (d, vmxon) = {
        let own = pcb.own();
        (own.vmx, own.vmxon_region)
    };
    let mode = GuestMode::choose(
        d.ept_usable(),
        hvlogic::controls::can_set(d.processor_based_ctls2, proc2::UNRESTRICTED_GUEST),
    );
    let vpid = d.invvpid_type().map(|_| pcb.processor_index as u16 + 1);
    let controls = proof_vmcs::choose_controls(&d, mode, vpid.is_some())?;
    let timer = controls.pin & pin::PREEMPTION_TIMER != 0;

    // Guest memory full of HLT: whatever a guest that runs executes, it exits.
    let guest = memory::alloc_pages((GUEST_MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    guest.fill(0xf4);
    let mem = guest.as_ptr() as u64;
    let mut cr3 = 0;
    let mut eptp = None;
    if mode.uses_ept() {
        let mut e = Ept::new(Format::Ept);
        e.map(0, mem, GUEST_MEM_SIZE, ept::RWX);
        if mode == GuestMode::RealFromReset {
            let reset = memory::alloc_pages(1);
            reset.fill(0xf4);
            e.map(RESET_PAGE_GPA, reset.as_ptr() as u64, memory::PAGE_SIZE as u64, ept::READ | ept::EXECUTE);
        } else {
            page_tables(mem + PAGE_DIRECTORY, mem + PAGE_TABLE, PAGE_TABLE, 0);
            cr3 = PAGE_DIRECTORY;
        }
        eptp = Some(e.eptp(d.ept_memory_type));
    } else {
        let pd = memory::alloc_pages(1).as_ptr() as u64;
        let pt = memory::alloc_pages(1).as_ptr() as u64;
        if pt >> 32 != 0 || mem >> 32 != 0 {
            return Err(VmcsError::Above4GiB.into());
        }
        page_tables(pd, pt, pt, mem);
        cr3 = pd;
    }

    let vmcs = super::load_new_vmcs(&d).map_err(VmcsError::Load)?;
    vmcs::write_controls(&controls)?;
    let io = memory::alloc_pages(2);
    io.fill(0xff);
    let msr = memory::alloc_pages(1);
    msr.fill(0xff);
    write(enc::IO_BITMAP_A, io.as_ptr() as u64)?;
    write(enc::IO_BITMAP_B, io.as_ptr() as u64 + memory::PAGE_SIZE as u64)?;
    write(enc::MSR_BITMAPS, msr.as_ptr() as u64)?;
    if let Some(eptp) = eptp {
        write(enc::EPT_POINTER, eptp)?;
    }
    if let Some(id) = vpid {
        write(enc::VPID, id as u64)?;
    }
    vmcs::write_host_state(pcb, controls.exit, slot, fuzz_exit as *const () as u64)?;
    proof_vmcs::write_guest_state(&d, &controls, mode, &GuestStart { cr3, pm_entry: IMAGE, gdt: IMAGE })?;

    // Stop an entered guest at once, and let every exception exit.
    write(enc::EXCEPTION_BITMAP, 0xffff_ffff)?;
    let (window, _) = hvlogic::entry_fuzz::stop_controls(&d, timer);
    if timer {
        write(enc::PREEMPTION_TIMER_VALUE, 0)?;
    } else if window != 0 {
        write(enc::PRIMARY_PROC_CONTROLS, (controls.proc1 | window) as u64)?;
        write(enc::GUEST_RFLAGS, 0x202)?;
    } else {
        return Err(FuzzError::NoStop);
    }

    let revision = hvlogic::vmx_global::basic::revision_id(d.vmx_basic) as u64;
    let area: Vec<u64> = MSR_AREA.iter().flat_map(|(head, value)| [*head, *value]).collect();
    let places = Places {
        msr_area: page_with(&area),
        revision_page: page_with(&[revision]),
        shadow_page: page_with(&[revision | (1 << 31)]),
        zero_page: page_with(&[]),
        current_vmcs: vmcs,
        vmxon_region: vmxon,
    };
    let mtf = hvlogic::controls::can_set(d.processor_based_ctls, hvlogic::controls::proc1::MONITOR_TRAP_FLAG);
    // Every pointer the controls may enable points at a valid page, so that
    // turning a control on alone is valid, and the MSR-load area is in place
    // (count 0) so that a count alone loads it.
    for field in [
        enc::VIRTUAL_APIC_ADDR,
        enc::APIC_ACCESS_ADDR,
        enc::POSTED_INTR_DESC_ADDR,
        enc::PML_ADDRESS,
        enc::EPTP_LIST_ADDR,
        enc::VMREAD_BITMAP,
        enc::VMWRITE_BITMAP,
        enc::VE_INFO_ADDR,
    ] {
        // A field this CPU lacks fails its VMWRITE: that is fine to skip.
        // SAFETY: the VMCS is current.
        let _ = unsafe { vmwrite(field, places.zero_page) };
    }
    write(enc::ENTRY_MSR_LOAD_ADDR, places.msr_area)?;
    Ok((vmcs, Policy { ept: mode.uses_ept(), mtf }, places, timer))
}

/// VMLAUNCH the current VMCS and say what happened.
fn execute(slot: *mut u64) -> Outcome {
    // SAFETY: the VMCS is current and launchable; a VM exit lands in fuzz_exit
    // with HOST_RSP = slot, which holds the stack pointer saved here.
    let r = unsafe { fuzz_launch(slot) };
    if r & FAILED != 0 {
        if r & 1 != 0 {
            return Outcome::VmFailInvalid;
        }
        return Outcome::VmFailValid { error: vmcs::read(enc::VM_INSTRUCTION_ERROR) as u32 };
    }
    let reason = vmcs::read(enc::EXIT_REASON);
    if reason & (1 << 31) != 0 {
        Outcome::EntryFailure { reason: reason as u16, qualification: vmcs::read(enc::EXIT_QUALIFICATION) }
    } else {
        Outcome::Entered { reason: reason as u16 }
    }
}

/// Write every control, guest and host field of `base` back (a VM exit
/// changed the guest state, an entry failure some of it).
fn restore_all(base: &Snapshot) -> Result<(), FuzzError> {
    for (field, value) in base.iter() {
        if fields::kind(field) != fields::KIND_READ_ONLY {
            write(field, value)?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    agree: u32,
    known: u32,
    disagree: u32,
    refused: [u32; 4],
    entered: u32,
    vmfail: [u32; 2],
    exit33: u32,
    exit34: u32,
    exit_reasons: [(u16, u32); 8],
}

impl Tally {
    fn outcome(&mut self, o: &Outcome) {
        match *o {
            Outcome::Entered { reason } => {
                self.entered += 1;
                if let Some(slot) = self.exit_reasons.iter_mut().find(|(r, n)| *r == reason || *n == 0) {
                    *slot = (reason, slot.1 + 1);
                }
            }
            Outcome::VmFailValid { error: 7 } => self.vmfail[0] += 1,
            Outcome::VmFailValid { .. } | Outcome::VmFailInvalid => self.vmfail[1] += 1,
            Outcome::EntryFailure { reason: 33, .. } => self.exit33 += 1,
            Outcome::EntryFailure { .. } => self.exit34 += 1,
        }
    }
}

fn fuzz(pcb: &Pcb, n: u32, seed: Option<u64>) -> Result<bool, FuzzError> {
    let (caps, maxphyaddr) = {
        let own = pcb.own();
        (own.vmx, own.maxphyaddr)
    };
    let (seed, source) = crate::virt::fuzz::entry_seed(pcb, seed);
    let slot = memory::alloc_pages(1).as_mut_ptr() as *mut u64;
    let (vmcs_address, policy, places, timer) = build(pcb, slot as u64)?;
    let facts = snapshot::facts(maxphyaddr);
    let base = snapshot::take(caps.vmcs_enum);
    info!(
        "entry-fuzz: {n} mutations, seed={seed} (from {source}); {} VMCS fields; the guest stops at once by {}",
        base.len(),
        if timer { "the VMX-preemption timer (value 0)" } else { "interrupt-window exiting (no VMX-preemption timer)" }
    );
    let broken = snapshot::check(&base, &caps, facts);
    if !broken.is_empty() {
        for v in &broken {
            error!("entry-fuzz: the base VMCS breaks {v}");
        }
        return Err(FuzzError::BaseInvalid);
    }
    let relaunch = || -> Result<(), FuzzError> {
        // SAFETY: in VMX root operation; the VMCS is this CPU's. VMCLEAR makes it
        // "clear" again so the next VMLAUNCH is allowed; the data stays.
        unsafe { vmclear(vmcs_address).and_then(|()| vmptrld(vmcs_address)) }
            .map_err(|e| FuzzError::Vmcs(VmcsError::Load(e)))
    };
    let first = execute(slot);
    relaunch()?;
    restore_all(&base)?;
    if !matches!(first, Outcome::Entered { .. }) {
        error!("entry-fuzz: the base VMCS does not enter: {first}");
        return Ok(false);
    }

    let mutator = Mutator { base: &base, caps: &caps, cpu: facts, places };
    let mut rng = Rng::new(seed);
    let mut t = Tally::default();
    let mut reached: Vec<&'static str> = Vec::new();
    let mut known_by: Vec<(&'static str, u32)> = Vec::new();
    for i in 0..n {
        // Draw until the policy allows executing the mutation.
        let (m, after, violations, verdict) = loop {
            let m = mutator.mutate(&mut rng);
            let after = m.apply(&base);
            let violations = snapshot::check(&after, &caps, facts);
            let verdict = Verdict::from_violations(&violations);
            match policy.allows(&m, &after, &verdict) {
                Ok(()) => break (m, after, violations, verdict),
                Err(r) => {
                    t.refused[match r {
                        Refusal::HostSide => 0,
                        Refusal::MayNotStop => 1,
                        Refusal::GuestPaging => 2,
                        Refusal::OtherEventWithoutMtf => 3,
                    }] += 1
                }
            }
        };
        for (field, value) in m.iter() {
            // SAFETY: the VMCS is current; a field the CPU lacks was never picked.
            if let Err(e) = unsafe { vmwrite(field, value) } {
                error!("entry-fuzz: #{i}: VMWRITE {} failed: {e}", fields::name(field).unwrap_or("?"));
                return Ok(false);
            }
        }
        log::trace!("entry-fuzz: #{i}: {}", m.describe(&base));
        let outcome = execute(slot);
        t.outcome(&outcome);
        if !matches!(outcome, Outcome::VmFailValid { .. }) {
            relaunch()?;
        }
        for v in &violations {
            if !reached.contains(&v.rule.id) {
                reached.push(v.rule.id);
            }
        }
        if verdict.agrees(&outcome) {
            t.agree += 1;
        } else if let Some(d) = departures::explain(&violations, &outcome, &after, &|skip: &[&str]| {
            snapshot::check_skipping(&after, &caps, facts, skip)
        }) {
            t.known += 1;
            crate::virt::fuzz::count_by_name(&mut known_by, d.id);
        } else {
            t.disagree += 1;
            if t.disagree <= PRINT_LIMIT {
                error!("entry-fuzz: disagreement #{i}: {}", m.describe(&base));
                error!("entry-fuzz:   checker: {verdict}; CPU: {outcome}");
                for v in &violations {
                    error!("entry-fuzz:   {v}");
                }
            }
        }
        // Every field back as it was.
        if matches!(outcome, Outcome::VmFailValid { .. } | Outcome::VmFailInvalid) {
            for (field, _) in m.iter() {
                write(field, base.get(field))?;
            }
        } else {
            restore_all(&base)?;
        }
    }

    // The VMCS must be the base again.
    let end = snapshot::take(caps.vmcs_enum);
    let mut same = true;
    for (field, value) in base.iter() {
        if fields::kind(field) != fields::KIND_READ_ONLY && end.get(field) != value {
            error!(
                "entry-fuzz: {} is {:#x} after the run, {value:#x} before",
                fields::name(field).unwrap_or("?"),
                end.get(field)
            );
            same = false;
        }
    }
    let total = checker::all_rules().count();
    let mut missing: Vec<&str> = checker::all_rules().map(|r| r.id).filter(|id| !reached.contains(id)).collect();
    missing.sort_unstable();
    info!(
        "entry-fuzz: outcomes: entered={} (exit reasons {}), VMfailValid 7={} other={}, exit 33={}, exit 34={}; refused draws: host-side={} may-not-stop={} guest-paging={} event-type-7={}",
        t.entered,
        Reasons(&t.exit_reasons),
        t.vmfail[0],
        t.vmfail[1],
        t.exit33,
        t.exit34,
        t.refused[0],
        t.refused[1],
        t.refused[2],
        t.refused[3]
    );
    info!("entry-fuzz: rules reached={} of {total}; not reached: {}", reached.len(), Ids(&missing));
    for (id, count) in &known_by {
        info!("entry-fuzz: known Bochs departure {id}: {count}");
    }
    crate::virt::fuzz::entry_result(n, t.agree, t.known, t.disagree, seed, same, "VMCS");
    // SAFETY: in VMX root operation; the VMCS is not left current or active.
    let _ = unsafe { vmclear(vmcs_address) };
    Ok(t.disagree == 0 && same)
}

struct Reasons<'a>(&'a [(u16, u32)]);

impl core::fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (reason, count) in self.0.iter().filter(|(_, n)| *n > 0) {
            write!(f, "{}{reason}x{count}", if first { "" } else { " " })?;
            first = false;
        }
        if first {
            write!(f, "none")?;
        }
        Ok(())
    }
}

struct Ids<'a>(&'a [&'a str]);

impl core::fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        for (i, id) in self.0.iter().enumerate() {
            write!(f, "{}{id}", if i > 0 { " " } else { "" })?;
        }
        Ok(())
    }
}
