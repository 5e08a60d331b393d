//! Hosting an OS under SVM: the identity nested page tables and the
//! permission maps (built once, shared by every CPU), each CPU's VMCB for a
//! pass-through guest, and the launch: the boot CPU at the OS's 32-bit entry;
//! every other CPU in the processor's own wait-for-SIPI state, from which
//! the OS's start-up IPI, sent to the hypervisor's trampoline instead, brings
//! it back here and into the OS at the vector the OS chose (`virt::os`).
use super::os_vcpu::{self, Os, OsVcpu};
use super::vcpu::Vcpu;
use crate::linux::{Handoff, BOOT_CS, BOOT_DS};
use crate::pcb::{self, Pcb, CPU_STATUS_FAILED, CPU_STATUS_ONLINE, CPU_STATUS_OS, CPU_STATUS_VMXON, MAX_CPUS};
use crate::virt::nested::{Format, Identity, Tables};
use crate::{memory, run};
use core::sync::atomic::{AtomicPtr, Ordering};
use hvlogic::memmap::Range;
use hvlogic::mtrr::Mtrrs;
use hvlogic::os_guest::Hidden;
use hvlogic::power::Ports;
use hvlogic::svm::exit_code::{counter_index, CPUID};
use hvlogic::svm::vmcb::{control, intercept1 as i1, intercept2 as i2, iopm, msrpm, np, save, tlb};
use hvlogic::svm::{vm_cr, EFER_SVME, SVM_KEY, VM_HSAVE_PA};
use log::{error, info};
use spin::Once;

/// What every CPU's VMCB for the OS points at.
struct Shared {
    /// The nested page tables' root (nCR3).
    ncr3: u64,
    /// The xAPIC register page, write-protected in the nested page tables.
    apic_page: u64,
    msrpm: u64,
    iopm: u64,
    ports: Ports,
}

static SHARED: Once<Shared> = Once::new();
/// Each CPU's OS vCPU, for its restart through the trampoline.
static OS_VCPUS: [AtomicPtr<OsVcpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// MSRs whose reads and writes exit: EFER (SVME hidden), VM_CR, VM_HSAVE_PA,
/// SVM_KEY, IGNNE, SMM_CTL (SVM's own). Writes alone: IA32_APIC_BASE (the
/// APIC page must stay where the nested tables write-protect it) and the
/// x2APIC ICR (the OS's INIT and SIPI IPIs are filtered).
const TRAPPED_MSRS: [u32; 6] = [0xc000_0080, vm_cr::VM_CR, 0xc001_0115, 0xc001_0116, VM_HSAVE_PA, SVM_KEY];
const WRITE_TRAPPED_MSRS: [u32; 2] = [x86::msr::IA32_APIC_BASE, hvlogic::icr::X2APIC_ICR_MSR];

/// CPUID Fn8000_0001_EDX[26]: 1 GiB pages.
const CPUID_80000001_EDX_PAGE1GB: u32 = 1 << 26;

/// Why the OS cannot run as the guest of every CPU, if it cannot.
pub fn unsupported(bsp: &Pcb) -> Option<&'static str> {
    if !bsp.has(CPU_STATUS_VMXON) {
        return Some("SVM is unavailable");
    }
    let online = || pcb::all().filter(|p| p.has(CPU_STATUS_ONLINE));
    if online().any(|p| !p.has(CPU_STATUS_VMXON)) {
        return Some("a CPU does not have SVM on");
    }
    if !bsp.own().svm.nested_paging() {
        return Some(
            "no nested paging (CPUID Fn8000_000A_EDX[0]): the hypervisor's memory could not be kept from the OS",
        );
    }
    None
}

/// On the boot CPU, before any CPU launches the OS: the identity nested page
/// tables with `holes` (the hypervisor's own RAM and trampoline, rounded out
/// to whole pages) mapped to a blank page and the APIC page write-protected,
/// and the permission maps.
pub fn prepare(bsp: &Pcb, holes: &[Range], ram: &[Range], ports: Ports, memory_top: u64) {
    let holes: alloc::vec::Vec<Range> =
        holes.iter().map(|h| Range::new(h.start & !0xfff, h.end.next_multiple_of(0x1000))).collect();
    let holes = &holes[..];
    let (maxphyaddr, mtrr) = {
        let own = bsp.own();
        (own.maxphyaddr, own.feature_edx & (1 << 12) != 0)
    };
    let mtrrs = if mtrr {
        // SAFETY: CPUID.01H:EDX[12] says the MTRR MSRs exist; Mtrrs::read reads only those IA32_MTRRCAP lists.
        Mtrrs::read(maxphyaddr, |msr| unsafe { x86::msr::rdmsr(msr) })
    } else {
        Mtrrs::none(maxphyaddr)
    };
    let pages_1g = raw_cpuid::cpuid!(0x8000_0001).edx & CPUID_80000001_EDX_PAGE1GB != 0;
    let physical = 1u64 << maxphyaddr.min(48);
    let limit = if pages_1g { physical } else { memory_top.max(physical.min(64 << 30)).next_multiple_of(1 << 30) };
    let blank = memory::alloc_pages(1).as_ptr() as u64;
    crate::virt::os_memory::set(holes, blank, ram);
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC.
    let apic_page = unsafe { x86::msr::rdmsr(x86::msr::IA32_APIC_BASE) } & 0x000f_ffff_ffff_f000;
    let write_protected = [apic_page];
    let identity = Identity { limit, holes, blank, write_protected: &write_protected, mtrrs: &mtrrs, pages_1g };
    let (tables, leaves) = Tables::identity(Format::Npt, &identity);
    info!(
        "os guest: nested paging maps {} GiB 1:1 ({} 1 GiB, {} 2 MiB, {} 4 KiB leaves; memory types from the MTRRs); the hypervisor's {} ranges read as a blank page",
        limit >> 30,
        leaves[0],
        leaves[1],
        leaves[2],
        holes.len()
    );
    // The MSR permissions map: two bits per MSR, read then write (APM Vol. 2
    // §15.11 "MSR Intercepts"); the I/O permissions map: one bit per port.
    let msr = memory::alloc_pages(msrpm::SIZE / memory::PAGE_SIZE);
    let mut trap = |index: u32, write_only: bool| {
        if let Some(bit) = msrpm::read_bit(index) {
            let bit = if write_only { bit + 1 } else { bit };
            msr[bit / 8] |= 1 << (bit % 8);
            if !write_only {
                msr[(bit + 1) / 8] |= 1 << ((bit + 1) % 8);
            }
        }
    };
    for index in TRAPPED_MSRS {
        trap(index, false);
    }
    for index in WRITE_TRAPPED_MSRS {
        trap(index, true);
    }
    let io = memory::alloc_pages(iopm::SIZE / memory::PAGE_SIZE);
    for port in ports.trapped() {
        io[port as usize / 8] |= 1 << (port % 8);
    }
    SHARED.call_once(|| Shared {
        ncr3: tables.root(),
        apic_page,
        msrpm: msr.as_ptr() as u64,
        iopm: io.as_ptr() as u64,
        ports,
    });
}

/// Build this CPU's VMCB for the OS (after `prepare`) and its vCPU (a new,
/// leaked allocation), kept for its restarts.
fn set_up(pcb: &'static Pcb) -> &'static mut OsVcpu {
    // The OS finds this CPU's local APIC as firmware left it: its mode, and a
    // task priority of 0 (the hypervisor raises it while a CPU works).
    crate::apic::restore_firmware_mode(pcb.own().firmware_apic_base);
    crate::apic::set_task_priority(0);
    let shared = SHARED.get().expect("os_guest::prepare runs first");
    let xcr0_supported = crate::virt::os::enable_host_xsave();
    let (features, host_state) = {
        let own = pcb.own();
        (own.svm, own.host_state)
    };
    let os = Os {
        pcb,
        hidden: Hidden::default(),
        xcr0_supported,
        efer_valid: super::dump::cpu_facts().efer_valid,
        ports: shared.ports,
        apic_page: shared.apic_page,
        ran: false,
    };
    let vcpu = Vcpu::new(pcb.processor_index, host_state, features.nrip_save(), os_vcpu::dispatch, os);
    let vmcb = vcpu.vmcb;
    // Pass-through: no interrupt, NMI, HLT or exception exits; V_INTR_MASKING
    // clear, so the OS's RFLAGS.IF and CR8 are the real ones.
    vmcb.set_u32(
        control::INTERCEPT1,
        i1::INIT | i1::CPUID | i1::INVD | i1::INVLPGA | i1::IOIO_PROT | i1::MSR_PROT | i1::SHUTDOWN,
    );
    vmcb.set_u32(
        control::INTERCEPT2,
        i2::VMRUN | i2::VMMCALL | i2::VMLOAD | i2::VMSAVE | i2::STGI | i2::CLGI | i2::SKINIT | i2::XSETBV,
    );
    vmcb.set_u64(control::IOPM_BASE_PA, shared.iopm);
    vmcb.set_u64(control::MSRPM_BASE_PA, shared.msrpm);
    vmcb.set_u32(control::GUEST_ASID, features.asid_for(pcb.processor_index));
    vmcb.set_u64(control::NP_CONTROL, np::ENABLE);
    vmcb.set_u64(control::N_CR3, shared.ncr3);
    // The guest's PAT at its power-up value; INIT leaves it alone (APM Vol. 2
    // Table 14-1), so a restart keeps what the OS set.
    vmcb.set_u64(save::G_PAT, hvlogic::mtrr::PAT_RESET);
    // A passed-through CPUID leaf needs nothing of the dispatcher but its count.
    vcpu.set_fast_cpuid(Some(&pcb.exits[counter_index(CPUID)]));
    OS_VCPUS[pcb.processor_index as usize].store(vcpu as *mut OsVcpu, Ordering::Release);
    vcpu
}

/// The state every start writes: RFLAGS, DR6, DR7 at their reset
/// values, EFER.SVME (VMRUN requires it; the OS reads EFER without it),
/// nothing pending, this ASID's translations flushed, the general registers
/// zero.
fn write_common(vcpu: &mut OsVcpu) {
    let vmcb = vcpu.vmcb;
    vmcb.write::<u8>(save::CPL, 0);
    vmcb.set_u64(save::EFER, EFER_SVME);
    vmcb.set_u64(save::CR2, 0);
    vmcb.set_u64(save::CR3, 0);
    vmcb.set_u64(save::CR4, 0);
    vmcb.set_u64(save::RFLAGS, 0x2);
    vmcb.set_u64(save::RSP, 0);
    vmcb.set_u64(save::DR6, 0xffff_0ff0);
    vmcb.set_u64(save::DR7, 0x400);
    vmcb.set_u64(save::DBGCTL, 0);
    for s in [
        save::STAR,
        save::LSTAR,
        save::CSTAR,
        save::SFMASK,
        save::KERNEL_GS_BASE,
        save::SYSENTER_CS,
        save::SYSENTER_ESP,
        save::SYSENTER_EIP,
    ] {
        vmcb.set_u64(s, 0);
    }
    vmcb.set_u64(control::EVENTINJ, 0);
    vmcb.set_u64(control::INTERRUPT_SHADOW, 0);
    vmcb.write(control::TLB_CONTROL, tlb::FLUSH_ALL);
    vcpu.regs = Default::default();
}

/// The state INIT leaves, started by a SIPI with `vector`: real mode at
/// vector:0000, CS base vector << 12 (APM Vol. 2 §14.1.5 "Fetching the
/// First Instruction", Table 14-1 "Initial Processor State"), CR0.ET set
/// and CD and NW as INIT leaves them (the guest's own once it ran; before,
/// this CPU's, which runs cached), EDX the processor signature.
fn write_started_by_sipi(vcpu: &mut OsVcpu, vector: u8) {
    const CD_NW: u64 = 3 << 29;
    let cd_nw = if vcpu.guest.ran { vcpu.vmcb.u64(save::CR0) & CD_NW } else { 0 };
    write_common(vcpu);
    let vmcb = vcpu.vmcb;
    vmcb.set_segment(save::CS, (vector as u16) << 8, 0x9b, 0xffff, (vector as u64) << 12);
    for s in [save::ES, save::SS, save::DS, save::FS, save::GS] {
        vmcb.set_segment(s, 0, 0x93, 0xffff, 0);
    }
    vmcb.set_segment(save::GDTR, 0, 0, 0xffff, 0);
    vmcb.set_segment(save::IDTR, 0, 0, 0xffff, 0);
    vmcb.set_segment(save::LDTR, 0, 0x82, 0xffff, 0);
    vmcb.set_segment(save::TR, 0, 0x8b, 0xffff, 0);
    vmcb.set_u64(save::CR0, 0x10 | cd_nw);
    vmcb.set_u64(save::RIP, 0);
    vcpu.regs.rdx = raw_cpuid::cpuid!(1).eax as u64;
}

/// 32-bit protected mode with paging off, flat __BOOT_CS/__BOOT_DS, the
/// protocol's GDT, interrupts off, at the kernel's 32-bit entry, ESI the
/// zero page (the kernel's Documentation/arch/x86/boot.rst, "32-bit Boot
/// Protocol").
fn write_entry_state(vcpu: &mut OsVcpu, h: &Handoff) {
    write_common(vcpu);
    let vmcb = vcpu.vmcb;
    vmcb.set_segment(save::CS, BOOT_CS, 0xc9b, 0xffff_ffff, 0);
    for s in [save::ES, save::SS, save::DS, save::FS, save::GS] {
        vmcb.set_segment(s, BOOT_DS, 0xc93, 0xffff_ffff, 0);
    }
    vmcb.set_segment(save::GDTR, 0, 0, h.gdt_limit as u32, h.gdt);
    vmcb.set_segment(save::IDTR, 0, 0, 0, 0);
    vmcb.set_segment(save::LDTR, 0, 0, 0, 0);
    vmcb.set_segment(save::TR, 0, 0x8b, 0x67, 0);
    vmcb.set_u64(save::CR0, 0x11);
    vmcb.set_u64(save::RIP, h.entry as u64);
    vcpu.regs.rsi = h.boot_params as u64;
}

/// Stage work for an application processor: its VMCB, then halted for the
/// boot CPU's INIT (`launch_bsp`) into the processor's wait-for-SIPI state,
/// from which the OS starts it (`restart`). Never returns.
pub fn arm_ap(_: &Pcb) {
    let pcb = crate::pcb::this_cpu();
    set_up(pcb);
    // GIF is set: the boot CPU's INIT resets this CPU at once.
    crate::virt::os::leaving_for_wait_for_sipi(pcb);
    pcb.set(CPU_STATUS_OS);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The boot CPU: every AP that armed goes to wait-for-SIPI (INIT), then the
/// boot CPU enters the OS at its entry. Never returns.
pub fn launch_bsp(pcb: &'static Pcb, h: &Handoff) -> ! {
    let vcpu = set_up(pcb);
    write_entry_state(vcpu, h);
    crate::virt::os::send_aps_to_wait_for_sipi();
    run_os(pcb, vcpu)
}

/// An AP the OS started (`virt::os::restart`): SVM on again (INIT cleared
/// EFER.SVME), then the OS in real mode at `vector`:0000.
pub fn restart(pcb: &'static Pcb, vector: u8) -> ! {
    let (hsave, host_state) = {
        let own = pcb.own();
        (own.host_save_area, own.host_state)
    };
    // SAFETY: this CPU turned SVM on before (its save areas are its own pages);
    // INIT cleared EFER.SVME; VMSAVE stores the host state just set up.
    unsafe {
        x86::msr::wrmsr(VM_HSAVE_PA, hsave);
        x86::msr::wrmsr(x86::msr::IA32_EFER, x86::msr::rdmsr(x86::msr::IA32_EFER) | EFER_SVME);
        super::instructions::vmsave(host_state);
    }
    pcb.set(CPU_STATUS_VMXON);
    let vcpu = OS_VCPUS[pcb.processor_index as usize].load(Ordering::Acquire);
    // SAFETY: set_up stored this CPU's leaked vCPU; only this CPU uses it.
    let Some(vcpu) = (unsafe { vcpu.as_mut() }) else {
        error!("os guest: cpu{} has no OS guest to restart", pcb.processor_index);
        run::fail_and_end("an AP restarted that never armed")
    };
    write_started_by_sipi(vcpu, vector);
    crate::virt::os::running_os(pcb);
    run_os(pcb, vcpu)
}

/// Run the OS on this CPU until the exit handler ends the run.
fn run_os(pcb: &Pcb, vcpu: &mut OsVcpu) -> ! {
    pcb.set(CPU_STATUS_OS);
    vcpu.guest.ran = true;
    let code = vcpu.run();
    pcb.set(CPU_STATUS_FAILED);
    run::fail_and_end(format_args!("the OS guest's exit handler stopped ({code})"))
}
