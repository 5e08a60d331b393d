//! Waking the application processors, all at once, and handing them work.
//!
//! The boot CPU builds every AP's PCB and stack first and lists them, by APIC
//! ID, in a table the trampoline reads (ap_trampoline::ApSlot). Then INIT goes
//! to every AP, then (after 10 ms only on CPU families that need it, as
//! Linux's smp_quirk_init_udelay decides) a SIPI to every AP, and 200 us later
//! a second SIPI to each AP that has not reached the trampoline yet (SDM Vol.
//! 3A §9.4.4.1 "Typical BSP Initialization Sequence"; a processor that left
//! wait-for-SIPI ignores another SIPI, ibid.). Each AP finds its own slot
//! from its APIC ID, so none waits for another.
//!
//! An AP checks in by a compare-exchange on its slot's `claim`; at the
//! deadline (10 s, as Linux) the boot CPU withdraws every AP that has not, by
//! the same compare-exchange, then sends it INIT. Exactly one side wins, so a
//! late AP either counts as online or stops before it touched anything shared
//! (it has logged nothing, holds nothing); the count cannot go wrong and
//! nothing is left locked.
//!
//! Between pieces of work an AP halts (`sti; hlt`) until a wake-up IPI, so
//! waiting CPUs leave the host's cores to the others. While it works, its task
//! priority (CR8 = 15) holds a wake-up IPI pending, so none reaches a guest.

use crate::pcb::{self, Pcb, Work, CPU_STATUS_ONLINE, CPU_STATUS_UNRESPONSIVE, CPU_STATUS_VMX_ROOT_REACHED};
use crate::{apic, logger, run, tsc};
use alloc::vec::Vec;
use ap_trampoline::{ApSlot, FarPtr32, Gdtr32, TrampolineParams};
use core::sync::atomic::{AtomicU32, Ordering};
use hvlogic::cmdline::Inject;
use hvlogic::madt::{Plan, Processor};
use hvlogic::startup::{self, Vendor};
use log::{error, info, warn};

/// How long a stage may take on one CPU before the boot CPU reports it.
const STAGE_TIMEOUT_US: u64 = 30_000_000;
/// The check-in deadline under inject=ap-late and ap-no-sipi, so their tests stay quick.
const INJECTED_DEADLINE_US: u64 = 2_000_000;

/// `ApSlot::claim`: who decided about this AP.
const CLAIM_OPEN: u32 = 0;
const CLAIM_CHECKED_IN: u32 = 1;
const CLAIM_WITHDRAWN: u32 = 2;

/// Task priority while a CPU works (every vector held back) and while it idles.
const TPR_WORKING: u8 = 15;
const TPR_IDLE: u8 = 0;

/// The APs of this run, by processor index - 1.
static SLOTS: spin::Once<&'static [ApSlot]> = spin::Once::new();
/// The trampoline's page (0 before the APs were started).
static TRAMPOLINE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The page the APs were started from, if any were.
pub fn trampoline_page() -> Option<u64> {
    match TRAMPOLINE.load(Ordering::Acquire) {
        0 => None,
        page => Some(page),
    }
}

/// Point the trampoline at `entry`, for processors that an OS starts again
/// through it: they arrive in `entry(pcb, apic_id)` on their own kernel
/// stack, found by APIC ID in the same table. On the boot CPU, while no AP
/// runs the trampoline.
pub fn retarget_trampoline(entry: extern "C" fn(*const Pcb, u64) -> !) {
    let Some(page) = trampoline_page() else { return };
    let at = (page as usize + ap_trampoline::params_offset()) as *mut TrampolineParams;
    // SAFETY: the parameter block lies inside the trampoline page, which the
    // hypervisor keeps; no AP runs the trampoline now.
    unsafe {
        let mut params = at.read_volatile();
        params.entry = entry as *const () as u64;
        at.write_volatile(params);
    }
}

/// Result of bringing up the APs.
pub struct Started {
    pub online: u32,
    pub failed: u32,
    pub micros: u64,
}

fn slot_of(pcb: &Pcb) -> Option<&'static ApSlot> {
    SLOTS.get()?.get((pcb.processor_index as usize).checked_sub(1)?)
}

/// Start every processor the plan says to start, all at once.
pub fn start_aps(plan: &[Processor], trampoline_page: u64) -> Started {
    let image = ap_trampoline::image();
    assert!(
        image.len() <= ap_trampoline::PAGE_SIZE && trampoline_page < 0x10_0000 && trampoline_page.is_multiple_of(4096)
    );
    // PCBs, stacks and the table the trampoline searches, before any SIPI.
    let starts: Vec<&Processor> = plan.iter().filter(|p| p.plan == Plan::Start).collect();
    let table: Vec<ApSlot> = starts
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let ap = pcb::new_ap(k as u32 + 1, p.apic_id);
            ApSlot {
                apic_id: p.apic_id,
                arrived: AtomicU32::new(0),
                pcb: ap as *const Pcb as u64,
                stack_top: ap.kernel_stack_top,
                claim: AtomicU32::new(CLAIM_OPEN),
            }
        })
        .collect();
    let slots: &'static [ApSlot] = table.leak();
    SLOTS.call_once(|| slots);

    // SAFETY: the page is free memory below 1 MiB chosen from the memory map,
    // identity-mapped, and used by nothing else; the image fits in it.
    unsafe { core::ptr::copy_nonoverlapping(image.as_ptr(), trampoline_page as *mut u8, image.len()) };
    // SAFETY: BOOT_GDT is a 'static table emitted by boot.s.
    let gdt = unsafe { &crate::boot::BOOT_GDT };
    let params = TrampolineParams {
        gdtr: Gdtr32 { limit: (core::mem::size_of_val(gdt) - 1) as u16, base: gdt.as_ptr() as u32 },
        to_pm32: FarPtr32 { offset: (trampoline_page as usize + ap_trampoline::pm32_offset()) as u32, selector: 0x18 },
        to_lm64: FarPtr32 { offset: (trampoline_page as usize + ap_trampoline::lm64_offset()) as u32, selector: 0x08 },
        cr3: crate::boot::boot_cr3(),
        entry: ap_entry as *const () as u64,
        table: slots.as_ptr() as u64,
        count: slots.len() as u64,
    };
    let at = (trampoline_page as usize + ap_trampoline::params_offset()) as *mut TrampolineParams;
    // SAFETY: the parameter block lies inside the trampoline page; no AP runs yet.
    unsafe { at.write_volatile(params) };
    TRAMPOLINE.store(trampoline_page, Ordering::Release);

    let inject = run::options().inject;
    // inject=ap-no-sipi: the last AP gets INIT but no SIPI.
    let silent = (inject == Some(Inject::ApNoSipi)).then(|| slots.len() - 1);
    if let Some(k) = silent {
        info!("inject: no SIPI for APIC ID {}, as if it never answered", slots[k].apic_id);
    }
    let deadline_us = match inject {
        Some(Inject::ApNoSipi | Inject::ApLate) => INJECTED_DEADLINE_US,
        _ => startup::CHECK_IN_DEADLINE_US,
    };
    let vector = (trampoline_page >> 12) as u8;
    let init_delay = init_delay_us();

    let begin = tsc::rdtsc();
    for s in slots {
        apic::send_init(s.apic_id);
    }
    if init_delay > 0 {
        logger::delay_us(init_delay);
    }
    let sipi_targets = || slots.iter().enumerate().filter(|(k, _)| Some(*k) != silent).map(|(_, s)| s);
    for s in sipi_targets() {
        apic::send_startup(s.apic_id, vector);
    }
    logger::wait_until(startup::SIPI_DELAY_US, || sipi_targets().all(|s| s.arrived.load(Ordering::Acquire) != 0));
    for s in sipi_targets().filter(|s| s.arrived.load(Ordering::Acquire) == 0) {
        apic::send_startup(s.apic_id, vector);
    }
    logger::wait_until(deadline_us, || slots.iter().all(|s| s.claim.load(Ordering::Acquire) != CLAIM_OPEN));
    let last_check_in = tsc::rdtsc();

    let mut started = Started { online: 1, failed: 0, micros: tsc::ticks_to_micros(last_check_in - begin) };
    for s in slots {
        // SAFETY: `pcb` points at the 'static PCB built above.
        let ap = unsafe { &*(s.pcb as *const Pcb) };
        match s.claim.compare_exchange(CLAIM_OPEN, CLAIM_WITHDRAWN, Ordering::AcqRel, Ordering::Acquire) {
            Err(CLAIM_CHECKED_IN) => {
                ap.set(CPU_STATUS_ONLINE);
                started.online += 1;
            }
            _ => {
                // Withdrawn: it will not check in now; INIT puts it back into
                // wait-for-SIPI, whatever it was doing.
                apic::send_init(s.apic_id);
                let seen = if s.arrived.load(Ordering::Acquire) != 0 {
                    "reached the trampoline but did not check in"
                } else {
                    "did not answer INIT-SIPI-SIPI"
                };
                error!(
                    "smp: AP with APIC ID {} {seen} within {} ms; withdrawn with INIT, going on without it",
                    s.apic_id,
                    deadline_us / 1000
                );
                started.failed += 1;
                run::mark_failed();
            }
        }
    }
    started
}

/// The INIT-to-SIPI delay this CPU family needs (0 or the 10 ms of SDM Vol. 3A
/// §9.4.4.1 "Typical BSP Initialization Sequence").
fn init_delay_us() -> u64 {
    let v = raw_cpuid::cpuid!(0);
    let vendor = Vendor::from_cpuid0(v.ebx, v.edx, v.ecx);
    let family = startup::display_family(raw_cpuid::cpuid!(1).eax);
    let needed = startup::init_delay_needed(vendor, family);
    info!(
        "smp: {vendor:?} family {family:#x}: {}",
        if needed { "10 ms from INIT to SIPI" } else { "no INIT-to-SIPI delay (as Linux)" }
    );
    if needed {
        startup::INIT_DELAY_US
    } else {
        0
    }
}

/// Where each AP arrives in Rust from the trampoline, on its own stack, with
/// the APIC ID it read.
extern "C" fn ap_entry(pcb: *const Pcb, apic_id_seen: u64) -> ! {
    // SAFETY: the boot CPU built this PCB for this AP alone and passed it
    // through the slot the trampoline found by APIC ID; it is 'static.
    let pcb = pcb::activate(unsafe { &*pcb });
    pcb.own().firmware_apic_base = apic::init_this_cpu();
    apic::set_task_priority(TPR_WORKING);
    let Some(slot) = slot_of(pcb) else { stop_silently() };
    if run::options().inject == Some(Inject::ApLate)
        && SLOTS.get().is_some_and(|s| s.len() == pcb.processor_index as usize)
    {
        // The last AP waits, reading its slot only (no log, no drain), until
        // the boot CPU has given up on it.
        let begin = tsc::rdtsc();
        while slot.claim.load(Ordering::Acquire) == CLAIM_OPEN
            && tsc::rdtsc() - begin < tsc::timeout_ticks(2 * INJECTED_DEADLINE_US)
        {
            core::hint::spin_loop();
        }
    }
    if slot.claim.compare_exchange(CLAIM_OPEN, CLAIM_CHECKED_IN, Ordering::AcqRel, Ordering::Acquire).is_err() {
        // Withdrawn before it checked in: INIT is on its way. Touch nothing shared.
        stop_silently();
    }
    pcb.set(CPU_STATUS_ONLINE);
    let id = apic::id();
    if id != pcb.apic_id() || id as u64 != apic_id_seen {
        warn!("smp: expected APIC ID {} but this AP has {id} (the trampoline read {apic_id_seen})", pcb.apic_id());
        pcb.set_apic_id(id);
    }
    let initial_apic_id = {
        let mut own = pcb.own();
        own.x2apic = matches!(apic::mode_now(), Some(apic::Mode::X2Apic));
        own.initial_apic_id
    };
    info!("online: cpu{} APIC ID {} (initial APIC ID {initial_apic_id})", pcb.processor_index, pcb.apic_id());
    if pcb.processor_index == 1 && run::options().inject == Some(Inject::ApUd2) {
        info!("inject: executing UD2 on purpose");
        // SAFETY: raises #UD, which the exception handler reports before ending the run.
        unsafe { core::arch::asm!("ud2") };
    }
    serve(pcb)
}

/// Halt for good without a word: an AP that lost its check-in to the deadline.
fn stop_silently() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// An AP's life after check-in: run each piece of work the boot CPU sends,
/// halted in between.
fn serve(pcb: &Pcb) -> ! {
    let mut seen = 0;
    loop {
        match pcb.mailbox.take(seen) {
            Some((work, generation)) => {
                seen = generation;
                work(pcb);
                pcb.mailbox.finish(generation);
            }
            None => idle(pcb, seen),
        }
    }
}

/// Halt until the wake-up IPI. CR8 = 0 lets it through; with interrupts still
/// off, one that is already pending waits for STI, and STI's one-instruction
/// shadow means it is taken in the HLT, ending it: no wake-up is lost
/// (SDM Vol. 2B "STI—Set Interrupt Flag"). Back to CR8 = 15 before any work.
fn idle(pcb: &Pcb, seen: u32) {
    apic::set_task_priority(TPR_IDLE);
    if pcb.mailbox.take(seen).is_none() {
        // SAFETY: interrupts are on only for the HLT; the IDT has a gate for the
        // wake-up vector and for the spurious vector, the only ones that can come.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    apic::set_task_priority(TPR_WORKING);
}

static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The APs that take work: online, and not given up on.
fn serving_aps() -> impl Iterator<Item = &'static Pcb> {
    pcb::all().filter(|p| !p.is_bsp && p.has(CPU_STATUS_ONLINE) && !p.has(CPU_STATUS_UNRESPONSIVE))
}

/// Post `work` to every serving AP and return without waiting: for work that
/// does not come back (running an OS); the caller watches the CPUs' status.
pub fn post_to_aps(work: Work) -> impl Iterator<Item = &'static Pcb> {
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    for ap in serving_aps() {
        ap.mailbox.post(work, generation);
        apic::send_fixed(ap.apic_id(), apic::WAKE_VECTOR);
    }
    serving_aps()
}

/// Run `work` on every online CPU, the boot CPU included, and wait for all.
/// A CPU that does not finish in time is reported and counted as failed.
pub fn run_on_all(stage: &str, bsp: &Pcb, work: Work) {
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    let aps = serving_aps;
    for ap in aps() {
        ap.mailbox.post(work, generation);
        apic::send_fixed(ap.apic_id(), apic::WAKE_VECTOR);
    }
    work(bsp);
    bsp.mailbox.finish(generation);
    for ap in aps() {
        let done = || ap.mailbox.is_done(generation);
        if !logger::wait_until(STAGE_TIMEOUT_US, done) {
            error!(
                "smp: cpu{} (APIC ID {}) did not finish stage `{stage}` within {} s",
                ap.processor_index,
                ap.apic_id(),
                STAGE_TIMEOUT_US / 1_000_000
            );
            ap.set(CPU_STATUS_UNRESPONSIVE);
        }
    }
}

/// `bench: vmx-root ticks=N` (`bench: svm-on ticks=N` on SVM): TSC ticks
/// from the kernel's entry to the end of the last CPU's enter stage (it
/// reached VMX root, or set EFER.SVME, just before), when any CPU did.
pub fn report_vmx_root_bench() {
    let last = pcb::all().filter(|p| p.has(CPU_STATUS_VMX_ROOT_REACHED)).map(|p| p.mailbox.done_tsc()).max();
    let name = match crate::virt::kind() {
        crate::virt::Kind::Vmx => "vmx-root",
        crate::virt::Kind::Svm => "svm-on",
    };
    if let Some(last) = last {
        info!("bench: {name} ticks={}", last.saturating_sub(crate::boot::entry_tsc()));
    }
}
