//! Hosting an OS: the identity EPT and the bitmaps (built once, shared by
//! every CPU), each CPU's VMCS for a pass-through guest, and the launch: the
//! boot CPU at the OS's 32-bit entry; every other CPU out of VMX operation in
//! the processor's own wait-for-SIPI state, from which the OS's start-up
//! IPI, sent to the hypervisor's trampoline instead, brings it back here,
//! into VMX root operation and into the OS at the vector the OS chose
//! (`virt::os`).

use super::instructions::invept;
use super::instructions::vmptrld;
use super::os_vcpu::{self, Os, OsVcpu};
use super::vcpu::{Return, Vcpu};
use super::vmcs::{self, Controls, Segment, VmcsError, AR_CODE_32, AR_DATA_32, AR_TSS_BUSY_32, AR_UNUSABLE, PAT_RESET};
use crate::linux::{Handoff, BOOT_CS, BOOT_DS};
use crate::memory;
use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_OS, CPU_STATUS_VMXON, MAX_CPUS};
use crate::run;
use crate::virt::nested::{Format, Identity, Tables as Ept};
use crate::virt::os_memory;
use core::sync::atomic::{AtomicPtr, Ordering};
use hvlogic::controls::{self, entry, exit, pin, proc2};
use hvlogic::exit_reason::basic;
use hvlogic::fixed::{cr0, cr4, Fixed};
use hvlogic::memmap::Range;
use hvlogic::mtrr::Mtrrs;
use hvlogic::os_guest;
use hvlogic::power::Ports;
use hvlogic::vmx_global::{ept_vpid, VmxGlobalData};
use log::{error, info};
use spin::Once;
use x86::vmx::vmcs::{control as ctl, guest};

/// The XSS-exiting bitmap (SDM Vol. 3D §B.2.1 "64-Bit Control Fields",
/// encoding 202CH).
const XSS_EXITING_BITMAP: u32 = 0x202c;

/// What every CPU's VMCS for the OS points at.
struct Shared {
    eptp: u64,
    /// The xAPIC register page, write-protected in EPT.
    apic_page: u64,
    msr_bitmap: u64,
    io_bitmaps: [u64; 2],
    ports: Ports,
    /// Hide the TSC-deadline mode (`tsc_deadline_erratum`).
    hide_tsc_deadline: bool,
}

static SHARED: Once<Shared> = Once::new();
/// Each CPU's OS vCPU, for its restart through the trampoline.
static OS_VCPUS: [AtomicPtr<OsVcpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// MSRs whose reads and writes exit: IA32_FEATURE_CONTROL and the VMX
/// capability MSRs (IA32_VMX_BASIC .. IA32_VMX_EXIT_CTLS2, SDM Vol. 4 Table
/// 2-2 "IA-32 Architectural MSRs"): VMX is hidden.
const TRAPPED_MSRS: [core::ops::RangeInclusive<u32>; 2] = [0x3a..=0x3a, 0x480..=0x493];
/// MSRs whose writes alone exit: the x2APIC ICR (the OS's INIT IPIs are
/// filtered) and IA32_APIC_BASE (the APIC page must stay where EPT
/// write-protects it).
const WRITE_TRAPPED_MSRS: [u32; 2] = [hvlogic::icr::X2APIC_ICR_MSR, x86::msr::IA32_APIC_BASE];

/// Why this CPU cannot host the OS as a guest, if it cannot (the OS then
/// boots natively): VMX root operation on every CPU, and what the OS guest
/// needs (`hvlogic::os_guest::missing`).
pub fn unsupported(bsp: &Pcb) -> Option<&'static str> {
    if !bsp.has(CPU_STATUS_VMXON) {
        return Some("VMX is unavailable");
    }
    if crate::pcb::all().any(|p| p.has(crate::pcb::CPU_STATUS_ONLINE) && !p.has(CPU_STATUS_VMXON)) {
        return Some("a CPU is not in VMX root operation");
    }
    let d = bsp.own().vmx;
    os_guest::missing(&d)
}

/// On the boot CPU, before any CPU launches the OS: the identity EPT with
/// `holes` (the hypervisor's own RAM, rounded out to whole pages) mapped to a
/// blank page, and the bitmaps. `ram` is the memory map's available RAM and
/// `memory_top` the end of its highest entry.
pub fn prepare(bsp: &Pcb, holes: &[Range], ram: &[Range], ports: Ports, memory_top: u64) {
    let holes: alloc::vec::Vec<Range> =
        holes.iter().map(|h| Range::new(h.start & !0xfff, h.end.next_multiple_of(0x1000))).collect();
    let holes = &holes[..];
    let (d, maxphyaddr, mtrr) = {
        let own = bsp.own();
        (own.vmx, own.maxphyaddr, own.feature_edx & (1 << 12) != 0)
    };
    let mtrrs = if mtrr {
        // SAFETY: CPUID.01H:EDX[12] says the MTRR MSRs exist; Mtrrs::read reads only those IA32_MTRRCAP lists.
        Mtrrs::read(maxphyaddr, |msr| unsafe { x86::msr::rdmsr(msr) })
    } else {
        Mtrrs::none(maxphyaddr)
    };
    let pages_1g = d.ept_vpid_cap & ept_vpid::PAGE_1G != 0;
    // With 1 GiB pages the whole physical address space costs little; without,
    // the memory map's extent and at least 64 GiB (or all of it, if less), for
    // MMIO above RAM (64-bit PCI windows): 2 MiB of tables at most.
    let physical = 1u64 << maxphyaddr.min(48);
    let limit = if pages_1g { physical } else { memory_top.max(physical.min(64 << 30)).next_multiple_of(1 << 30) };
    let blank = memory::alloc_pages(1).as_ptr() as u64;
    os_memory::set(holes, blank, ram);
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC.
    let apic_page = unsafe { x86::msr::rdmsr(x86::msr::IA32_APIC_BASE) } & 0x000f_ffff_ffff_f000;
    let write_protected = [apic_page];
    let (ept, leaves) = Ept::identity(
        Format::Ept,
        &Identity { limit, holes, blank, write_protected: &write_protected, mtrrs: &mtrrs, pages_1g },
    );
    info!(
        "os guest: EPT maps {} GiB 1:1 ({} 1 GiB, {} 2 MiB, {} 4 KiB leaves; memory types from the MTRRs); the hypervisor's {} ranges read as a blank page",
        limit >> 30,
        leaves[0],
        leaves[1],
        leaves[2],
        holes.len()
    );
    let msr = memory::alloc_pages(1);
    for index in TRAPPED_MSRS.into_iter().flatten() {
        // Read bitmap for low MSRs at 0, write bitmap for low MSRs at 2048 (SDM Vol. 3C §25.6.9
        // "MSR-Bitmap Address").
        for base in [0, 2048] {
            msr[base + index as usize / 8] |= 1 << (index % 8);
        }
    }
    for index in WRITE_TRAPPED_MSRS {
        msr[2048 + index as usize / 8] |= 1 << (index % 8);
    }
    let io = memory::alloc_pages(2);
    for port in ports.trapped() {
        io[port as usize / 8] |= 1 << (port % 8);
    }
    let io_a = io.as_ptr() as u64;
    let hide_tsc_deadline = tsc_deadline_erratum();
    SHARED.call_once(|| Shared {
        eptp: ept.eptp(d.ept_memory_type),
        apic_page,
        msr_bitmap: msr.as_ptr() as u64,
        io_bitmaps: [io_a, io_a + memory::PAGE_SIZE as u64],
        ports,
        hide_tsc_deadline,
    });
}

/// IA32_BIOS_SIGN_ID (SDM Vol. 4 Table 2-2 "IA-32 Architectural MSRs"): the
/// microcode revision in bits 63:32, after a write of 0 and CPUID leaf 1.
const IA32_BIOS_SIGN_ID: u32 = 0x8b;

/// Whether the OS must not see the TSC-deadline mode: this CPU's microcode
/// has the deadline erratum (`hvlogic::os_guest::tsc_deadline_erratum`; the
/// OS would turn the mode off itself, but not under a hypervisor). The
/// revision reads as 0 where IA32_BIOS_SIGN_ID faults (Bochs), as an OS
/// reads it there. Decided before the OS runs: microcode the OS loads later
/// does not bring the mode back (it then uses the APIC timer's one-shot mode).
fn tsc_deadline_erratum() -> bool {
    // SAFETY: IA32_BIOS_SIGN_ID is architectural on family 6; writing 0 only
    // asks the CPU to report its revision at the next CPUID; a fault is caught.
    let revision = unsafe {
        crate::msr::write(IA32_BIOS_SIGN_ID, 0);
        let signature = raw_cpuid::cpuid!(1).eax;
        (signature, crate::msr::read(IA32_BIOS_SIGN_ID).map_or(0, |v| (v >> 32) as u32))
    };
    let (signature, revision) = revision;
    match os_guest::tsc_deadline_erratum(signature, revision) {
        Some(fixed) => {
            info!(
                "os guest: TSC-deadline timer mode hidden: microcode revision {revision:#x} is older than {fixed:#x}, which this CPU's deadline erratum needs (CPUID.01H:EAX={signature:#x})"
            );
            true
        }
        None => false,
    }
}

/// Build this CPU's VMCS for the OS (after `prepare`) and its vCPU (a new,
/// leaked allocation: the `&mut` does not come from `pcb`).
#[allow(clippy::mut_from_ref)]
fn set_up(pcb: &'static Pcb) -> Result<&'static mut OsVcpu, VmcsError> {
    let d: VmxGlobalData = pcb.own().vmx;
    // The OS finds this CPU's local APIC as firmware left it: its mode, and a
    // task priority of 0 (the hypervisor raises it while a CPU works).
    crate::apic::restore_firmware_mode(pcb.own().firmware_apic_base);
    crate::apic::set_task_priority(0);
    let shared = SHARED.get().expect("os_guest::prepare runs first");
    let xcr0_supported = crate::virt::os::enable_host_xsave();
    let vmcs_pa = super::load_new_vmcs(&d).map_err(VmcsError::Load)?;
    let vpid = d.invvpid_type().map(|flush| (pcb.processor_index as u16 + 1, flush));
    let c = os_guest::controls(&d, vpid.is_some());
    let nmi_timer = controls::can_set(d.pin_based_ctls, pin::PREEMPTION_TIMER);
    pcb.nmi_timer.store(nmi_timer, Ordering::Release);
    vmcs::write_controls(&Controls { pin: c.pin, proc1: c.proc1, proc2: c.proc2, exit: c.exit, entry: c.entry })?;
    vmcs::write(ctl::MSR_BITMAPS_ADDR_FULL, shared.msr_bitmap)?;
    vmcs::write(ctl::IO_BITMAP_A_ADDR_FULL, shared.io_bitmaps[0])?;
    vmcs::write(ctl::IO_BITMAP_B_ADDR_FULL, shared.io_bitmaps[1])?;
    vmcs::write(ctl::EPTP_FULL, shared.eptp)?;
    if let Some((id, _)) = vpid {
        vmcs::write(ctl::VPID, id as u64)?;
    }
    if c.proc2 & proc2::ENABLE_XSAVES_XRSTORS != 0 {
        // XSAVES/XRSTORS exit for the components set here (SDM Vol. 3C
        // §25.6.20 "XSS-Exiting Bitmap"): none; VMCLEAR does not promise a
        // zero.
        vmcs::write(XSS_EXITING_BITMAP, 0)?;
    }
    // CR0: the host owns what the fixed bits constrain, PE and PG excepted
    // (unrestricted guest, SDM Vol. 3C §27.3.1.1 "Checks on Guest Control
    // Registers, Debug Registers, and MSRs"). CR4: the fixed bits, and VMXE
    // and SMXE, which the guest may not set (VMX and SMX are hidden).
    let cr0_fixed = Fixed { fixed0: d.cr0_fixed0 & !(cr0::PE | cr0::PG), fixed1: d.cr0_fixed1 };
    let cr4_fixed = Fixed { fixed0: d.cr4_fixed0, fixed1: d.cr4_fixed1 };
    let cr4_hidden = cr4::VMXE | cr4::SMXE;
    vmcs::write(ctl::CR0_GUEST_HOST_MASK, cr0_fixed.constrained() & 0xffff_ffff)?;
    vmcs::write(ctl::CR4_GUEST_HOST_MASK, cr4_fixed.constrained() | cr4_hidden)?;
    let os = Os {
        pcb,
        hidden: os_guest::Hidden { tsc_deadline: shared.hide_tsc_deadline, ..c.hidden },
        cr0_fixed,
        cr4_fixed,
        cr4_hidden,
        xcr0_supported,
        ports: shared.ports,
        apic_page: shared.apic_page,
        vmcs: vmcs_pa,
        ran: false,
        // A passed-through CPUID leaf needs nothing of the dispatcher but its
        // count, where the VMX-preemption timer brings back the NMIs it would
        // otherwise deliver at that exit (`os_vcpu::nmi_in_host`).
        fast_cpuids: nmi_timer.then_some(&pcb.exits[basic::CPUID as usize]),
        nmi_retry: os_vcpu::NMI_RETRY_FIRST,
    };
    let vcpu = Vcpu::new(pcb.processor_index, vpid, os_vcpu::dispatch, os);
    vcpu.set_fast_cpuid(vcpu.guest.fast_cpuids);
    vmcs::write_host_state(pcb, c.exit, vcpu.host_rsp(), Vcpu::<Os>::host_rip())?;
    vmcs::write(guest::LINK_PTR_FULL, u64::MAX)?;
    if c.entry & entry::LOAD_PAT != 0 {
        vmcs::write(guest::IA32_PAT_FULL, PAT_RESET)?;
    }
    debug_assert!(c.exit & exit::SAVE_EFER != 0);
    // Nothing cached for this EPT or VPID from earlier guests may survive.
    if let Some(kind) = d.invept_all_contexts() {
        // SAFETY: in VMX root operation; the type is one IA32_VMX_EPT_VPID_CAP reports.
        unsafe { invept(kind, [0, 0]) }.map_err(|_| VmcsError::Flush)?;
    }
    if !vcpu.flush_vpid() {
        return Err(VmcsError::Flush);
    }
    OS_VCPUS[pcb.processor_index as usize].store(vcpu as *mut OsVcpu, Ordering::Release);
    Ok(vcpu)
}

/// Stage work for an application processor: its VMCS, then out of VMX
/// operation (INIT is blocked in VMX root operation, SDM Vol. 3C §24.8
/// "Restrictions on VMX Operation"), halted for the boot CPU's INIT
/// (`launch_bsp`) into the processor's wait-for-SIPI state, from which the
/// OS starts it (`restart`). Never returns; a CPU that cannot is marked
/// failed and returns.
pub fn arm_ap(_: &Pcb) {
    // The 'static PCB of this CPU (the one the stage was posted to).
    let pcb = crate::pcb::this_cpu();
    let armed = set_up(pcb).map_err(|e| alloc::format!("{e}"));
    let left = armed.and_then(|vcpu| {
        crate::virt::os::leaving_for_wait_for_sipi(pcb);
        os_vcpu::leave_vmx(vcpu).map_err(|e| alloc::format!("leaving VMX operation: {e}"))
    });
    if let Err(e) = left {
        error!("os guest: {e}");
        pcb.set(CPU_STATUS_FAILED);
        return;
    }
    pcb.set(CPU_STATUS_OS);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The boot CPU: its VMCS with the state the boot protocol's 32-bit entry
/// asks for, every AP that armed sent to wait-for-SIPI (INIT), then
/// VMLAUNCH. Returns only if the set-up failed.
pub fn launch_bsp(pcb: &'static Pcb, h: &Handoff) -> VmcsError {
    let vcpu = match set_up(pcb) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if let Err(e) = write_entry_state(&vcpu.guest, h) {
        return e;
    }
    vcpu.regs.rsi = h.boot_params as u64;
    crate::virt::os::send_aps_to_wait_for_sipi();
    run_os(pcb, vcpu)
}

/// An AP the OS started (`virt::os::restart`): VMX root operation again
/// (INIT cleared CR4.VMXE), its VMCS current again with this kernel's host
/// state (rebuilt by the trampoline), not launched (VMCLEAR), then the OS in
/// real mode at `vector`:0000.
pub fn restart(pcb: &'static Pcb, vector: u8) -> ! {
    let vcpu = OS_VCPUS[pcb.processor_index as usize].load(Ordering::Acquire);
    // SAFETY: set_up stored this CPU's leaked vCPU; only this CPU uses it.
    let Some(vcpu) = (unsafe { vcpu.as_mut() }) else {
        error!("os guest: cpu{} has no OS guest to restart", pcb.processor_index);
        run::fail_and_end("an AP restarted that never armed")
    };
    let entered = super::enter::reenter(pcb).map_err(|e| alloc::format!("VMXON again failed: {e}"));
    // SAFETY: in VMX root operation; the region is this vCPU's VMCS, cleared by leave_vmx.
    let loaded = entered.and_then(|()| unsafe { vmptrld(vcpu.guest.vmcs) }.map_err(|e| alloc::format!("VMPTRLD: {e}")));
    let started = loaded.and_then(|()| {
        crate::virt::os::running_os(pcb);
        let exit_controls = vmcs::read(ctl::VMEXIT_CONTROLS) as u32;
        vmcs::write_host_state(pcb, exit_controls, vcpu.host_rsp(), Vcpu::<Os>::host_rip())
            .and_then(|()| os_vcpu::start_up(vcpu, vector))
            .map_err(|e| alloc::format!("{e}"))
    });
    if let Err(e) = started {
        error!("os guest: cpu{} could not restart: {e}", pcb.processor_index);
        run::fail_and_end("an AP the OS started could not enter the OS guest")
    }
    vcpu.launched = false;
    run_os(pcb, vcpu)
}

/// 32-bit protected mode with paging off, flat __BOOT_CS/__BOOT_DS, the
/// protocol's GDT, interrupts off, at the kernel's 32-bit entry (the kernel's
/// Documentation/arch/x86/boot.rst, "32-bit Boot Protocol").
fn write_entry_state(os: &Os, h: &Handoff) -> Result<(), VmcsError> {
    const CR0_PE_ET: u64 = cr0::PE | 1 << 4;
    os_vcpu::write_start_registers(os, CR0_PE_ET, h.entry as u64)?;
    vmcs::write_segment(Segment::Cs, BOOT_CS, 0, 0xffff_ffff, AR_CODE_32)?;
    for s in [Segment::Ss, Segment::Ds, Segment::Es, Segment::Fs, Segment::Gs] {
        vmcs::write_segment(s, BOOT_DS, 0, 0xffff_ffff, AR_DATA_32)?;
    }
    vmcs::write_segment(Segment::Ldtr, 0, 0, 0, AR_UNUSABLE)?;
    vmcs::write_segment(Segment::Tr, 0, 0, 0x67, AR_TSS_BUSY_32)?;
    vmcs::write(guest::GDTR_BASE, h.gdt)?;
    vmcs::write(guest::GDTR_LIMIT, h.gdt_limit as u64)?;
    vmcs::write(guest::IDTR_BASE, 0)?;
    vmcs::write(guest::IDTR_LIMIT, 0)
}

/// Run the OS on this CPU for good. The exit handler ends the run itself
/// when the OS is done or cannot go on; a failed VM entry ends it here.
fn run_os(pcb: &Pcb, vcpu: &mut OsVcpu) -> ! {
    pcb.set(CPU_STATUS_OS);
    vcpu.guest.ran = true;
    match vcpu.run() {
        Return::EntryFailed { instruction, fail } => {
            super::dump::vm_instruction_failure(instruction, fail);
            super::dump::guest_state(&vcpu.regs, vcpu.exits, log::Level::Error);
            run::fail_and_end("VM entry of the OS guest failed")
        }
        Return::Stopped(code) => run::fail_and_end(format_args!("the OS guest's exit handler stopped ({code})")),
    }
}
