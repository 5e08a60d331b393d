//! A bare-metal Type-1 hypervisor: brings up every processor, enters VMX root
//! operation on each, launches a guest on each as proof, and reports.
//!
//! The boot flow below reads in the order of the book's stages:
//! boot info -> memory -> per-CPU PCB -> APs -> VMX -> guest -> summary.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi_tables;
mod apic;
mod boot;
mod bootinfo;
mod console;
mod exceptions;
mod idt;
mod logger;
mod memory;
mod paging;
mod pcb;
mod run;
mod serial;
mod smp;
mod tsc;
mod vmx;

use hvlogic::cmdline::{Inject, Options};
use hvlogic::madt::{self, Plan};
use hvlogic::memmap::Range;
use log::{debug, error, info, warn};
use pcb::CPU_STATUS_ONLINE;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entered from boot.s in long mode on the boot stack, with the physical
/// address of the multiboot2 boot information.
#[no_mangle]
extern "C" fn kernel_main(boot_info_addr: usize) -> ! {
    pcb::init_early_gs();
    serial::init();
    logger::init();
    // The boot CPU's PCB with its GDT, TSS and IDT: exceptions are reported from here on.
    let bsp = pcb::init_bsp();
    bsp.set(CPU_STATUS_ONLINE);

    // Boot information.
    let boot = match bootinfo::parse(boot_info_addr) {
        Ok(boot) => boot,
        Err(e) => run::fail_and_end(e),
    };
    console::init(boot.framebuffer);
    info!("boot: hypervisor {VERSION}, loaded by {}, command line `{}`", boot.bootloader, boot.cmdline);
    for m in boot.modules() {
        info!("boot: module {:#x}-{:#x} `{}`", m.range.start, m.range.end, m.cmdline);
    }
    for a in boot.areas() {
        debug!("memory map: {:#x}-{:#x} type {}", a.range.start, a.range.end, a.kind);
    }

    // Memory.
    let image = boot::kernel_image();
    // The image, the boot information and every module stay where they are:
    // the heap goes around them.
    let mut reserved = [Range::default(); 2 + bootinfo::MAX_MODULES];
    reserved[0] = image;
    reserved[1] = boot.range;
    for (slot, module) in reserved[2..].iter_mut().zip(boot.modules()) {
        *slot = module.range;
    }
    let reserved = &reserved[..2 + boot.modules().count()];
    let Some(heap) = memory::init(boot.available(), reserved) else {
        run::fail_and_end("memory: no free memory above 1 MiB for the heap");
    };
    info!(
        "memory: kernel {:#x}-{:#x}, boot info {:#x}-{:#x}, heap {:#x}-{:#x} ({} KiB)",
        image.start,
        image.end,
        boot.range.start,
        boot.range.end,
        heap.start,
        heap.end,
        heap.len() / 1024
    );

    let options = run::OPTIONS.call_once(|| Options::parse(boot.cmdline));
    logger::set_level(options.loglevel);
    console::start(options.console);
    for w in &options.warnings {
        warn!("{w}");
    }
    if options.inject == Some(Inject::Ud2) {
        info!("inject: executing UD2 on purpose");
        // SAFETY: raises #UD, which the exception handler reports before ending the run.
        unsafe { core::arch::asm!("ud2") };
    }

    match tsc::calibrate() {
        Some((hz, source)) => info!("tsc: {} kHz (from {source:?})", hz / 1000),
        None => run::fail_and_end("tsc: no PIT answered and CPUID leaves 0x15/0x16 give no frequency"),
    }

    // Per-CPU PCB: the boot CPU's, with its local APIC.
    let mode = apic::init_bsp();
    bsp.set_apic_id(apic::id());
    bsp.own().x2apic = mode == apic::Mode::X2Apic;
    match mode {
        apic::Mode::X2Apic => info!("apic: x2APIC mode"),
        apic::Mode::XApic { base } => info!("apic: xAPIC mode, registers at {base:#x}"),
    }
    info!("online: cpu0 APIC ID {} (initial APIC ID {}) boot processor", bsp.apic_id(), bsp.own().initial_apic_id);

    // Application processors.
    start_application_processors(&boot, reserved, bsp, options);

    // VMX root operation on every CPU.
    smp::run_on_all("vmx-enter", bsp, vmx::enter);

    // A guest on every CPU in VMX root, all at once; the boot CPU gathers them.
    smp::run_on_all("guest", bsp, vmx::run_guest);

    // Every CPU leaves VMX operation before the summary.
    smp::run_on_all("vmx-leave", bsp, vmx::leave);

    run::end()
}

fn start_application_processors(boot: &bootinfo::BootInfo, reserved: &[Range], bsp: &pcb::Pcb, options: &Options) {
    let entries = match acpi_tables::read_madt(boot.rsdp) {
        Ok(m) => {
            info!("acpi: MADT via {}: {} processor entries", m.source, m.processors.len());
            m.processors
        }
        Err(e) => {
            warn!("acpi: {e}; running on the boot CPU alone");
            return;
        }
    };
    let plan = madt::plan(&entries, bsp.apic_id(), bsp.own().x2apic, options.maxcpus);
    let enumerated = madt::enumerated(&plan);
    run::CPUS_ENUMERATED.store(enumerated, core::sync::atomic::Ordering::Release);
    for p in &plan {
        match p.plan {
            Plan::OnlineCapable => info!("smp: APIC ID {} is online-capable: reported, not started", p.apic_id),
            Plan::CappedByMaxcpus => {
                info!("smp: APIC ID {} not started (maxcpus={})", p.apic_id, options.maxcpus.unwrap_or(0))
            }
            Plan::Unreachable => {
                error!("smp: APIC ID {} needs x2APIC mode, which this CPU lacks: not started", p.apic_id);
                run::mark_failed();
            }
            Plan::Boot | Plan::Start => {}
        }
    }
    if !plan.iter().any(|p| p.plan == Plan::Start) {
        return;
    }
    let Some(page) = hvlogic::memmap::choose_trampoline_page(boot.available(), reserved) else {
        error!("smp: no free 4 KiB page below 1 MiB for the AP trampoline; running on the boot CPU alone");
        run::mark_failed();
        return;
    };
    info!("smp: trampoline at {page:#x} (SIPI vector {:#04x})", page >> 12);
    let started = smp::start_aps(&plan, page);
    info!(
        "smp: {} of {} processors online ({} failed); AP bring-up took {} us",
        started.online, enumerated, started.failed, started.micros
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    error!("PANIC: {info}");
    run::fail_and_end("panic")
}
