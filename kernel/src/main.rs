//! A bare-metal Type-1 hypervisor: brings up every processor, enters VMX root
//! operation on each, launches a guest on each as proof, and reports.
//!
//! The boot flow below reads in the order of the book's stages:
//! boot info -> memory -> per-CPU PCB -> APs -> VMX -> guest -> summary.
//!
//! Section, table and figure numbers follow the Intel 64 and IA-32
//! Architectures Software Developer's Manual, order number 325462-081US
//! (September 2023), the edition whose Vol. 3C numbers the VMX chapters 24
//! to 31 (Chapter 27 "VM Entries", Chapter 31 "VMX Instruction Reference";
//! later editions renumber them). Citations read `SDM Vol. 3C §27.3.1.5 "Checks on
//! Guest Non-Register State"` (tables and figures likewise, by number and
//! title), `SDM Vol. 2A "CPUID—CPU Identification"` for an instruction's
//! page, and `SDM Vol. 4 Table 2-2 "IA-32 Architectural MSRs"`.
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
mod linux;
mod logger;
mod memory;
mod msr;
mod paging;
mod pcb;
mod platform;
mod run;
mod serial;
mod smp;
mod svm;
mod tsc;
mod virt;
mod vmx;

use hvlogic::cmdline::{Inject, LinuxMode, Options};
use hvlogic::linux::zeropage::ScreenInfo;
use hvlogic::madt::{self, Plan};
use hvlogic::memmap::Range;
use hvlogic::power::Ports;
use hvlogic::summary::RunResult;
use log::{debug, error, info, warn};
use pcb::CPU_STATUS_ONLINE;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entered from boot.s in long mode on the boot stack, with what the loader
/// left: EAX, EBX (a multiboot2 loader's magic and boot information) and
/// the cdecl argument on its stack (coreboot's tables).
#[no_mangle]
extern "C" fn kernel_main(eax: u32, ebx: u32, arg: u32) -> ! {
    pcb::init_early_gs();
    serial::init();
    logger::init();
    // The boot CPU's PCB with its GDT, TSS and IDT: exceptions are reported from here on.
    let bsp = pcb::init_bsp();
    bsp.set(CPU_STATUS_ONLINE);

    // Boot information, from a multiboot2 loader or from coreboot.
    let boot = match bootinfo::gather(bootinfo::Entry { eax, ebx, arg }) {
        Ok(boot) => boot,
        Err(e) => run::fail_and_end(e),
    };
    if let Some(port) = boot.serial_port() {
        serial::move_to(port);
    }
    console::init(boot.framebuffer);
    logger::add_sink(console::sink);
    info!("boot: hypervisor {VERSION}, loaded by {}, command line `{}`", boot.loader, boot.cmdline);
    if let Some(facts) = &boot.coreboot {
        info!("boot: {facts}");
    }
    for m in boot.modules() {
        info!("boot: module {:#x}-{:#x} `{}`", m.range.start, m.range.end, m.cmdline);
    }
    for a in boot.areas() {
        debug!("memory map: {:#x}-{:#x} type {}", a.range.start, a.range.end, a.kind);
    }

    // Memory. The image, the boot information and every module stay where
    // they are; so does the place of the OS's kernel, if the modules hold
    // one: the heap goes around them.
    let image = boot::kernel_image();
    let mut reserved = [Range::default(); 2 + bootinfo::MAX_MODULES + 3];
    reserved[0] = image;
    reserved[1] = boot.range;
    for (slot, module) in reserved[2..].iter_mut().zip(boot.modules()) {
        *slot = module.range;
    }
    let mut count = 2 + boot.modules().count();
    let os = match linux::plan(&boot, &reserved[..count]) {
        Ok(os) => os,
        Err(e) => {
            error!("linux: {e}; no handoff");
            run::mark_failed();
            None
        }
    };
    for r in os.iter().flat_map(|p| p.ranges()) {
        reserved[count] = r;
        count += 1;
    }
    let reserved = &reserved[..count];
    let Some((heap, heap_limit)) = memory::init(boot.available(), reserved) else {
        run::fail_and_end("memory: no free memory above 1 MiB for the heap");
    };
    info!(
        "memory: kernel {:#x}-{:#x}, boot info {:#x}-{:#x}, heap {:#x}-{:#x} ({} KiB, grows by need up to {:#x})",
        image.start,
        image.end,
        boot.range.start,
        boot.range.end,
        heap.start,
        heap.end,
        heap.len() / 1024,
        heap_limit
    );

    let options = run::OPTIONS.call_once(|| Options::parse_for(boot.cmdline, cfg!(feature = "fuzz")));
    logger::set_level(options.loglevel);
    console::start(options.console);
    for w in &options.warnings {
        warn!("{w}");
    }
    if options.inject == Some(Inject::LogFlood) {
        logger::inject_flood();
    }
    if options.inject == Some(Inject::Ud2) {
        info!("inject: executing UD2 on purpose");
        // SAFETY: raises #UD, which the exception handler reports before ending the run.
        unsafe { core::arch::asm!("ud2") };
    }

    match tsc::calibrate() {
        Some(calibration) => info!("tsc: {calibration}"),
        None => run::fail_and_end("tsc: no PIT answered and CPUID leaves 0x15/0x16 give no frequency"),
    }

    // Per-CPU PCB: the boot CPU's, with its local APIC.
    let (mode, firmware_apic_base) = apic::init_bsp(os.is_some());
    bsp.own().firmware_apic_base = firmware_apic_base;
    bsp.set_apic_id(apic::id());
    bsp.own().x2apic = mode == apic::Mode::X2Apic;
    match mode {
        apic::Mode::X2Apic => {
            info!("apic: x2APIC mode{}", if os.is_some() { " (as firmware left it, for the OS)" } else { "" })
        }
        apic::Mode::XApic { base } => info!(
            "apic: xAPIC mode, registers at {base:#x}{}",
            if os.is_some() { " (as firmware left it, for the OS)" } else { "" }
        ),
    }
    info!("online: cpu0 APIC ID {} (initial APIC ID {}) boot processor", bsp.apic_id(), bsp.own().initial_apic_id);

    // Application processors.
    let power = start_application_processors(&boot, reserved, bsp, options);

    // Hardware virtualization on every CPU: VMX root operation on Intel,
    // EFER.SVME with a host save area on AMD.
    smp::run_on_all(virt::backend::enter_stage(), bsp, virt::backend::enter);
    smp::report_vmx_root_bench();

    // A guest on every CPU, all at once; the boot CPU gathers them.
    smp::run_on_all("guest", bsp, virt::backend::run_guest);

    // The OS, if there is one; otherwise every CPU leaves VMX operation and
    // the run ends with the summary.
    if let Some(os) = &os {
        hand_off(os, &boot, bsp, image, power, options);
    }
    smp::run_on_all(virt::backend::leave_stage(), bsp, virt::backend::leave);
    run::end()
}

/// Hand the machine to Linux: as the guest of every CPU where they can host
/// it, natively otherwise (or with `linux=native`). The SUMMARY line comes
/// first, then the `handoff:` line, then Linux. A run that failed, or a
/// kernel that cannot be loaded, gets no handoff.
fn hand_off(
    os: &linux::Plan,
    boot: &bootinfo::BootInfo,
    bsp: &'static pcb::Pcb,
    image: Range,
    power: Ports,
    options: &Options,
) {
    if run::counts().result() == RunResult::Fail {
        error!("linux: no handoff: the run failed");
        return;
    }
    // The hypervisor's RAM: its image, the heap (stopped from growing, with
    // room for the OS guest's EPT and every CPU's VMCS), the boot information.
    let online = pcb::all().filter(|p| p.has(CPU_STATUS_ONLINE)).count();
    let heap = memory::freeze(OS_SETUP_BYTES + online as u64 * OS_PER_CPU_BYTES);
    let unsupported = virt::backend::os_unsupported(bsp).or_else(|| virt::os::unsupported(online));
    let guest = match (options.linux, unsupported) {
        (LinuxMode::Native, _) => {
            info!("linux: runs natively (linux=native)");
            false
        }
        (LinuxMode::Guest, Some(why)) => {
            info!("linux: runs natively, not as a guest: {why}");
            false
        }
        (LinuxMode::Guest, None) => true,
    };
    // And, for a guest, the trampoline the OS's application processors come
    // back through.
    let kept = if guest { virt::os::kept() } else { None };
    let mut hypervisor = alloc::vec![image, heap, boot.range];
    hypervisor.extend(kept);
    let hypervisor = &hypervisor[..];
    let handoff = match linux::load(os, boot, hypervisor, boot.framebuffer.and_then(ScreenInfo::from_framebuffer)) {
        Ok(h) => h,
        Err(e) => {
            error!("linux: {e}; no handoff");
            run::mark_failed();
            return;
        }
    };
    let nested = match virt::kind() {
        virt::Kind::Vmx => ", and EPT maps a blank page there",
        virt::Kind::Svm => ", and nested paging maps a blank page there",
    };
    info!(
        "linux: kept from the OS (e820 reserved{}): image {:#x}-{:#x}, heap {:#x}-{:#x}, boot information {:#x}-{:#x}{}",
        if guest { nested } else { "" },
        hypervisor[0].start,
        hypervisor[0].end,
        hypervisor[1].start,
        hypervisor[1].end,
        hypervisor[2].start,
        hypervisor[2].end,
        kept.map_or(alloc::string::String::new(), |k| alloc::format!(", trampoline {:#x}-{:#x}", k.start, k.end))
    );
    if guest {
        let top = boot.areas().iter().map(|a| a.range.end).max().unwrap_or(0);
        virt::backend::prepare_os(bsp, hypervisor, boot.available(), power, top);
        virt::os::prepare_restarts();
        // Every AP sets up its OS guest and waits, before the OS starts, for
        // the boot CPU's INIT (`launch_os`) and then the OS's SIPI.
        for ap in smp::post_to_aps(virt::backend::arm_os_ap) {
            let armed = || ap.has(pcb::CPU_STATUS_OS) || ap.has(pcb::CPU_STATUS_FAILED);
            if !tsc::wait_until(OS_ARM_TIMEOUT_US, armed) {
                error!(
                    "linux: cpu{} did not enter the OS guest within {} ms",
                    ap.processor_index,
                    OS_ARM_TIMEOUT_US / 1000
                );
                run::mark_failed();
            }
        }
    } else {
        smp::run_on_all(virt::backend::leave_stage(), bsp, virt::backend::leave);
        smp::run_on_all("apic-restore", bsp, |p| apic::restore_firmware_mode(p.own().firmware_apic_base));
        // As firmware leaves them: every AP in wait-for-SIPI, for the OS to start.
        for ap in pcb::all().filter(|p| !p.is_bsp && p.has(CPU_STATUS_ONLINE)) {
            apic::send_init(ap.apic_id());
        }
    }
    if run::summary() == RunResult::Fail {
        run::end();
    }
    info!("handoff: linux {}, {online} CPUs, {}", handoff.version, if guest { "guest" } else { "native" });
    run::handed_off("linux");
    if guest {
        virt::backend::launch_os(bsp, &handoff);
    }
    linux::enter_native(&handoff)
}

/// How long an AP may take to set up its VMCS and enter the OS guest.
const OS_ARM_TIMEOUT_US: u64 = 2_000_000;
/// Heap kept for setting up the OS guest: its EPT (the identity map's tables:
/// with 2 MiB leaves up to 512 GiB, 2 MiB of tables) and bitmaps, and what each
/// CPU allocates for it (VMCS, vCPU, exit stack).
const OS_SETUP_BYTES: u64 = 4 << 20;
const OS_PER_CPU_BYTES: u64 = 64 << 10;

/// Start the processors the MADT lists; returns the FADT's power ports.
fn start_application_processors(
    boot: &bootinfo::BootInfo,
    reserved: &[Range],
    bsp: &pcb::Pcb,
    options: &Options,
) -> Ports {
    let (entries, power) = match acpi_tables::read_madt(boot.rsdp, boot.rsdp_source) {
        Ok(m) => {
            info!("acpi: MADT via {}: {} processor entries", m.source, m.processors.len());
            (m.processors, m.power)
        }
        Err(e) => {
            warn!("acpi: {e}; running on the boot CPU alone");
            return Ports::default();
        }
    };
    let plan = madt::plan(&entries, bsp.apic_id(), bsp.own().x2apic, options.maxcpus, pcb::MAX_CPUS as u32);
    let enumerated = madt::enumerated(&plan);
    run::CPUS_ENUMERATED.store(enumerated, core::sync::atomic::Ordering::Release);
    for p in &plan {
        match p.plan {
            Plan::OnlineCapable => info!("smp: APIC ID {} is online-capable: reported, not started", p.apic_id),
            Plan::CappedByMaxcpus => {
                info!("smp: APIC ID {} not started (maxcpus={})", p.apic_id, options.maxcpus.unwrap_or(0))
            }
            Plan::BeyondLimit => {
                warn!("smp: APIC ID {} not started: this kernel runs at most {} processors", p.apic_id, pcb::MAX_CPUS)
            }
            Plan::Unreachable => {
                error!("smp: APIC ID {} needs x2APIC mode, which this CPU lacks: not started", p.apic_id);
                run::mark_failed();
            }
            Plan::Boot | Plan::Start => {}
        }
    }
    let to_start = plan.iter().filter(|p| matches!(p.plan, Plan::Boot | Plan::Start)).count() as u64;
    let vmx = virt::offered();
    let heap = memory::size_for(to_start, pcb::PER_CPU_BYTES, vmx);
    info!(
        "memory: heap {:#x}-{:#x} ({} KiB) for {to_start} processors{}",
        heap.start,
        heap.end,
        heap.len() / 1024,
        if vmx { " with hardware virtualization" } else { "" }
    );
    if to_start == 1 {
        return power;
    }
    let Some(page) = hvlogic::memmap::choose_trampoline_page(boot.available(), reserved) else {
        error!("smp: no free 4 KiB page below 1 MiB for the AP trampoline; running on the boot CPU alone");
        run::mark_failed();
        return power;
    };
    info!("smp: trampoline at {page:#x} (SIPI vector {:#04x})", page >> 12);
    let started = smp::start_aps(&plan, page);
    info!(
        "smp: {} of {} processors online ({} failed); AP bring-up took {} us",
        started.online, enumerated, started.failed, started.micros
    );
    info!("bench: ap-bringup cpus={} us={}", started.online, started.micros);
    power
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    error!("PANIC: {info}");
    run::fail_and_end("panic")
}
