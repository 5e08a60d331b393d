//! Waking the application processors (INIT-SIPI-SIPI through the real-mode
//! trampoline, SDM Vol. 3A 9.4.4 "MP Initialization Example") and handing
//! them work.
//!
//! APs start one at a time, each on its own stack with its own PCB: the boot
//! CPU fills the trampoline's parameter block, sends INIT, waits 10 ms, sends
//! SIPI, waits 200 us, sends the second SIPI, then waits up to 100 ms for the
//! AP to check in. One at a time, because they share the parameter block.

use crate::pcb::{self, Pcb, Work, CPU_STATUS_ONLINE, CPU_STATUS_UNRESPONSIVE};
use crate::{apic, run, tsc};
use ap_trampoline::{Gdtr32, TrampolineParams};
use core::sync::atomic::{AtomicU32, Ordering};
use hvlogic::cmdline::Inject;
use hvlogic::madt::{Plan, Processor};
use log::{error, info, warn};

/// How long an AP has to check in after its SIPIs.
const CHECK_IN_TIMEOUT_US: u64 = 100_000;
/// How long a stage may take on one CPU before the boot CPU reports it.
const STAGE_TIMEOUT_US: u64 = 30_000_000;

/// Result of bringing up the APs.
pub struct Started {
    pub online: u32,
    pub failed: u32,
    pub micros: u64,
}

/// Start every processor the plan says to start.
pub fn start_aps(plan: &[Processor], trampoline_page: u64) -> Started {
    let image = ap_trampoline::image();
    assert!(
        image.len() <= ap_trampoline::PAGE_SIZE && trampoline_page < 0x10_0000 && trampoline_page.is_multiple_of(4096)
    );
    // SAFETY: the page is free memory below 1 MiB chosen from the memory map,
    // identity-mapped, and used by nothing else; the image fits in it.
    unsafe { core::ptr::copy_nonoverlapping(image.as_ptr(), trampoline_page as *mut u8, image.len()) };
    let params = (trampoline_page as usize + ap_trampoline::params_offset()) as *mut TrampolineParams;
    // SAFETY: BOOT_GDT is a 'static table emitted by boot.s.
    let gdt = unsafe { &crate::boot::BOOT_GDT };
    let gdtr = Gdtr32 { limit: (core::mem::size_of_val(gdt) - 1) as u16, base: gdt.as_ptr() as u32 };

    // inject=ap-no-sipi: the last AP to start gets no SIPI.
    let silent_ap = match run::options().inject {
        Some(Inject::ApNoSipi) => plan.iter().rfind(|p| p.plan == Plan::Start).map(|p| p.apic_id),
        _ => None,
    };
    let begin = tsc::rdtsc();
    let mut started = Started { online: 1, failed: 0, micros: 0 };
    let mut index = 1u32;
    for p in plan.iter().filter(|p| p.plan == Plan::Start) {
        if index as usize >= pcb::MAX_CPUS {
            warn!("smp: more than {} processors: APIC ID {} and later are not started", pcb::MAX_CPUS, p.apic_id);
            break;
        }
        let ap = pcb::new_ap(index, p.apic_id);
        let fill = TrampolineParams {
            gdtr,
            cr3: crate::boot::boot_cr3(),
            stack_top: ap.kernel_stack_top,
            entry: ap_entry as *const () as u64,
            arg: ap as *const Pcb as u64,
            cpu_index: index as u64,
        };
        // SAFETY: the parameter block lies inside the trampoline page; no AP reads it
        // until the SIPI below.
        unsafe { params.write_volatile(fill) };
        let silent = silent_ap == Some(p.apic_id);
        if silent {
            info!("inject: no SIPI for APIC ID {}, as if it never answered", p.apic_id);
        }
        if wake(p.apic_id, trampoline_page, ap, !silent) {
            started.online += 1;
            index += 1;
        } else {
            error!(
                "smp: AP with APIC ID {} did not answer INIT-SIPI-SIPI within {} ms; going on without it",
                p.apic_id,
                CHECK_IN_TIMEOUT_US / 1000
            );
            // Put it back into wait-for-SIPI, so it cannot wake later on stale
            // parameters; then forget it, even if it checked in at the last moment.
            apic::send_init(p.apic_id);
            tsc::delay_us(10_000);
            pcb::unpublish(index);
            ap.clear(CPU_STATUS_ONLINE);
            started.failed += 1;
            run::mark_failed();
        }
    }
    started.micros = tsc::ticks_to_micros(tsc::rdtsc() - begin);
    started
}

/// INIT, 10 ms, SIPI, 200 us, SIPI (SDM Vol. 3A 9.4.4.1: a processor that
/// already left wait-for-SIPI ignores the second one); true once the AP checked in.
fn wake(apic_id: u32, page: u64, ap: &Pcb, sipi: bool) -> bool {
    let vector = (page >> 12) as u8;
    apic::send_init(apic_id);
    tsc::delay_us(10_000);
    if sipi {
        apic::send_startup(apic_id, vector);
        tsc::delay_us(200);
        apic::send_startup(apic_id, vector);
    }
    tsc::wait_until(CHECK_IN_TIMEOUT_US, || ap.has(CPU_STATUS_ONLINE))
}

/// Where each AP arrives in Rust from the trampoline, on its own stack.
extern "C" fn ap_entry(pcb: *const Pcb, cpu_index: u64) -> ! {
    // SAFETY: the boot CPU built this PCB for this AP alone and passed it
    // through the parameter block; it is 'static.
    let pcb = pcb::activate(unsafe { &*pcb });
    apic::init_this_cpu();
    if pcb.processor_index as u64 != cpu_index {
        run::fail_and_end(format_args!("smp: trampoline says cpu{cpu_index}, the PCB says cpu{}", pcb.processor_index));
    }
    let id = apic::id();
    if id != pcb.apic_id() {
        warn!("smp: expected APIC ID {} but this AP has {id}", pcb.apic_id());
        pcb.set_apic_id(id);
    }
    let initial_apic_id = {
        let mut own = pcb.own();
        own.x2apic = matches!(apic::mode_now(), Some(apic::Mode::X2Apic));
        own.initial_apic_id
    };
    pcb.set(CPU_STATUS_ONLINE);
    info!("online: cpu{} APIC ID {} (initial APIC ID {initial_apic_id})", pcb.processor_index, pcb.apic_id());
    if pcb.processor_index == 1 && run::options().inject == Some(Inject::ApUd2) {
        info!("inject: executing UD2 on purpose");
        // SAFETY: raises #UD, which the exception handler reports before ending the run.
        unsafe { core::arch::asm!("ud2") };
    }
    serve(pcb)
}

/// An AP's life after check-in: run each piece of work the boot CPU sends.
fn serve(pcb: &Pcb) -> ! {
    let mut seen = 0;
    loop {
        match pcb.mailbox.take(seen) {
            Some((work, generation)) => {
                seen = generation;
                work(pcb);
                pcb.mailbox.finish(generation);
            }
            None => core::hint::spin_loop(),
        }
    }
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
    }
    work(bsp);
    for ap in aps() {
        let done = || ap.mailbox.is_done(generation);
        if !tsc::wait_until(STAGE_TIMEOUT_US, done) {
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
