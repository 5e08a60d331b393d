//! Hosting an OS, as both backends do it: the ports that power off or
//! reset the machine, XSETBV on the guest's behalf, the guest's writes
//! to its local APIC's register page (write-protected in the nested page
//! tables so that its INIT and SIPI IPIs are seen), decoded from the
//! instruction at its RIP through its own paging and the nested view, and
//! how the OS starts the application processors: each waits in the
//! processor's own wait-for-SIPI state, and the OS's start-up IPI brings it
//! through the hypervisor's trampoline into the OS at the OS's vector.

use super::os_memory;
use super::regs::GuestRegs;
use crate::pcb::{Pcb, CPU_STATUS_OS, CPU_STATUS_OS_WAITING};
use crate::run::{self, How};
use core::sync::atomic::Ordering;
use hvlogic::exit_qual::IoAccess;
use hvlogic::guest_mem::{self, Paging, Source, Store};
use hvlogic::icr;
use hvlogic::memmap::Range;
use hvlogic::power::{Ports, Request};

/// Why a trapped port access cannot be carried out.
#[derive(Clone, Copy, Debug)]
pub enum PortError {
    /// String I/O to a trapped port.
    StringIo(IoAccess),
    /// A sleep state other than S5.
    Sleep(u8),
}

/// A trapped port access: the PM1 control blocks, 0xCF9, the keyboard
/// controller's command port and the FADT reset register. A write that
/// powers off or resets ends the run with GUEST-END, then is carried out
/// for real; anything else is passed on to the port as the guest asked.
/// `rax` is the guest's RAX; the caller steps over the instruction.
pub fn port_io(ports: &Ports, q: IoAccess, rax: &mut u64) -> Result<(), PortError> {
    if q.string {
        return Err(PortError::StringIo(q));
    }
    let mask = u64::MAX >> (64 - 8 * q.size as u32);
    if q.is_in {
        let value = crate::platform::port_in(q.port, q.size) as u64;
        // A 32-bit destination zero-extends into RAX (SDM Vol. 1 §3.4.1.1
        // "General-Purpose Registers in 64-Bit Mode"); 8 and 16 bits leave the
        // rest of the register alone.
        *rax = if q.size == 4 { value & mask } else { (*rax & !mask) | (value & mask) };
        return Ok(());
    }
    let value = *rax & mask;
    match ports.classify(q.port, q.size, value) {
        Request::PowerOff => {
            run::guest_end(How::PowerOff);
        }
        Request::Reset => {
            run::guest_end(How::Reset);
            // A platform reset the OS asked for (0xCF9 with SYS_RST, the
            // FADT's reset register) is done as asked. A warm one (the
            // keyboard controller's pulse, port 92H, 0xCF9 without SYS_RST)
            // reaches the processors as INIT, which VMX root operation blocks
            // (SDM Vol. 3C §24.8 "Restrictions on VMX Operation") and SVM
            // intercepts, and INIT leaves IA32_FEATURE_CONTROL locked for the
            // firmware that runs next (which Bochs 2.7's BIOS does not
            // survive): it becomes a full reset.
            if !hvlogic::power::is_cold_reset(ports, q.port, value) {
                crate::platform::reset(ports);
            }
        }
        Request::Sleep(typ) => return Err(PortError::Sleep(typ)),
        Request::None => {}
    }
    crate::platform::port_out(q.port, q.size, value as u32);
    Ok(())
}

/// XSETBV for the guest (ECX, EDX:EAX), executed when the CPU would accept
/// it; false when the guest must get #GP instead.
pub fn xsetbv(regs: &GuestRegs, xcr0_supported: u64) -> bool {
    let index = regs.rcx as u32;
    let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
    if !hvlogic::xsetbv::allowed(index, value, xcr0_supported) {
        return false;
    }
    // SAFETY: the value passed the checks the CPU makes (hvlogic::xsetbv), and
    // the host runs with CR4.OSXSAVE (enable_host_xsave); the host uses no XSAVE state.
    unsafe { core::arch::asm!("xsetbv", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32) };
    true
}

/// XSETBV runs in the host on the guest's behalf, and needs CR4.OSXSAVE there
/// (SDM Vol. 2C "XSETBV—Set Extended Control Register": #UD without it). The
/// host uses no XSAVE state itself. Returns the XCR0 bits the CPU supports
/// (CPUID.(EAX=0DH,ECX=0):EDX:EAX), 0 without XSAVE.
pub fn enable_host_xsave() -> u64 {
    const CPUID_01_ECX_XSAVE: u32 = 1 << 26;
    const CR4_OSXSAVE: u64 = 1 << 18;
    if raw_cpuid::cpuid!(1).ecx & CPUID_01_ECX_XSAVE == 0 {
        return 0;
    }
    use x86_64::registers::control::Cr4;
    // SAFETY: CPUID says XSAVE exists, so CR4.OSXSAVE may be set.
    unsafe { Cr4::write_raw(Cr4::read_raw() | CR4_OSXSAVE) };
    let r = raw_cpuid::cpuid!(0xd, 0);
    r.eax as u64 | (r.edx as u64) << 32
}

/// The store instruction at the guest's CS:RIP, read through its own page
/// tables and the nested view (os_memory): one walk per page the
/// instruction touches. `long`: 64-bit code.
pub fn decode_store(paging: &Paging, cs_base: u64, rip: u64, long: bool) -> Option<Store> {
    let linear = cs_base.wrapping_add(rip);
    let mut read = |gpa: u64| os_memory::read_u64(gpa).unwrap_or(0);
    let mut code = [0u8; 15];
    let mut page: Option<(u64, u64)> = None; // (linear page, guest-physical page)
    for (i, byte) in code.iter_mut().enumerate() {
        let at = linear.wrapping_add(i as u64);
        let physical_page = match page {
            Some((l, p)) if l == at & !0xfff => p,
            _ => {
                let p = guest_mem::translate(paging, at & !0xfff, &mut read)?;
                page = Some((at & !0xfff, p));
                p
            }
        };
        let physical = physical_page | (at & 0xfff);
        *byte = os_memory::read_u64(physical)?.to_le_bytes()[(physical & 7) as usize];
    }
    guest_mem::decode_store(&code, long)
}

/// What a carried-out store to the APIC page leaves for the caller: for
/// XCHG, the guest register that receives the APIC register's old value.
pub struct ApicStore {
    pub exchange: Option<(u8, u32)>,
}

/// Carry out the guest's `store` (its source register's value `source`) to
/// its local APIC page at `apic_page`, offset `gpa & 0xfff`. A write of the
/// ICR's low half goes through `ipi(low, destination)`, which returns what
/// reaches the APIC (the value, another, or nothing). None: not a 32-bit
/// store, which this hypervisor does not emulate.
pub fn apic_store(
    apic_page: u64,
    gpa: u64,
    store: &Store,
    source: u64,
    ipi: impl FnOnce(u32, u32) -> Option<u32>,
) -> Option<ApicStore> {
    let value = match store.source {
        Source::Register(_) => source as u32,
        Source::Immediate(v) => v,
    };
    if store.size != 4 {
        return None;
    }
    let apic = |offset: u64| (apic_page + offset) as *mut u32;
    let offset = gpa & 0xfff & !3;
    let write = if offset == icr::XAPIC_ICR_LOW {
        // SAFETY: the local APIC's registers, identity-mapped (uncached by the
        // MTRRs); the OS wrote this register of its own APIC.
        let high = unsafe { core::ptr::read_volatile(apic(icr::XAPIC_ICR_HIGH)) };
        ipi(value, icr::xapic_destination(high))
    } else {
        Some(value)
    };
    let exchange = match (store.exchange, store.source) {
        // XCHG also loads the register's old value into the register (32 bits: zero-extended).
        // SAFETY: as above; a read of the register the OS is exchanging with.
        (true, Source::Register(n)) => Some((n, unsafe { core::ptr::read_volatile(apic(offset)) })),
        _ => None,
    };
    if let Some(v) = write {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(apic(offset), v) };
    }
    Some(ApicStore { exchange })
}

/// What reaches the APIC of an IPI the OS sends (None: dropped). Every AP
/// the OS has waits in the processor's own wait-for-SIPI state (neither VMX
/// nor SVM can leave a guest there that INIT-SIPI-SIPI restarts on every
/// CPU and emulator alike: `wait_for_sipi`), so:
/// - INIT to a processor the hypervisor runs the OS on goes out (a running
///   one exits into the real wait-for-SIPI state; the boot CPU's is a reset);
/// - a start-up IPI to such a processor goes to the hypervisor's trampoline,
///   the OS's vector recorded for the processor to start at (`restart`);
/// - INIT and SIPI to a processor the hypervisor does not run (online-capable,
///   beyond `maxcpus=`, or one that failed) are dropped: it would run the OS
///   natively, outside the nested page tables, with VMX or SVM visible and
///   the hypervisor's memory open to it; the OS reports it as not
///   responding. So are INIT and SIPI by shorthand or logical destination,
///   which could reach such a processor (Linux sends none);
/// - everything else goes out as written.
pub fn filter_ipi(low: u32, dest: u32) -> Option<u32> {
    let hosted = |dest: u32| crate::pcb::all().find(|p| p.apic_id() == dest && p.has(CPU_STATUS_OS));
    match icr::decode(low, dest) {
        icr::Ipi::Init { dest } => {
            let p = hosted(dest)?;
            let _ = p.os_wait_since.compare_exchange(RUNNING, INIT_SENT, Ordering::AcqRel, Ordering::Acquire);
            Some(low)
        }
        icr::Ipi::Startup { dest, vector } => {
            let p = hosted(dest)?;
            let trampoline = crate::smp::trampoline_page()?;
            until_waiting_for_sipi(p);
            p.os_sipi.store(OS_SIPI_VALID | vector as u32, Ordering::Release);
            Some(icr::with_vector(low, (trampoline >> 12) as u8))
        }
        icr::Ipi::Many => None,
        icr::Ipi::Other => Some(low),
    }
}

/// `Pcb::os_wait_since`: running the OS; an INIT sent to it (else: the TSC
/// when it left virtualization for wait-for-SIPI).
const RUNNING: u64 = 0;
const INIT_SENT: u64 = 1;
/// How long an AP may take from the INIT exit to leaving virtualization
/// (its exit handler, VMCLEAR; a bound: QEMU's TCG resets the CPU at the
/// INIT #VMEXIT itself, so its AP never says it left, docs/svm.md).
const LEAVING_US: u64 = 1000;
/// From leaving virtualization to the processor's wait-for-SIPI state:
/// VMXOFF or STGI, and its INIT to itself delivered.
const SETTLE_US: u64 = 10;

/// Natively the OS's INIT takes effect at once, and Linux sends its SIPI a
/// few microseconds behind it (no delay on CPUs it calls modern, or under a
/// hypervisor); an AP that ran the OS first takes an INIT exit and leaves
/// virtualization, and a SIPI that meets it before it waits for SIPI is
/// lost (SDM Vol. 3A §9.4.4.1: a processor not in wait-for-SIPI ignores it).
/// So the sender's SIPI waits, bounded, until the AP has had time to get there.
fn until_waiting_for_sipi(p: &Pcb) {
    crate::tsc::wait_until(LEAVING_US, || p.os_wait_since.load(Ordering::Acquire) != INIT_SENT);
    let since = p.os_wait_since.load(Ordering::Acquire);
    if since > INIT_SENT {
        let settled = since.wrapping_add(crate::tsc::micros_to_ticks(SETTLE_US));
        crate::tsc::wait_until(SETTLE_US, || crate::tsc::rdtsc() >= settled);
    }
}

/// The OS's INIT reached this CPU (an INIT exit). While the run is ending
/// the CPU parks; the boot CPU's INIT is a reset of the machine (GUEST-END
/// how=reset, then a real reset); an AP returns, marked as leaving for
/// wait-for-SIPI (`leaving_for_wait_for_sipi`), for its backend to leave
/// virtualization.
pub fn init_received(pcb: &Pcb, ports: &Ports) {
    if run::is_ending() {
        run::park();
    }
    if pcb.is_bsp {
        run::guest_end(How::Reset);
        crate::platform::reset(ports);
    }
    leaving_for_wait_for_sipi(pcb);
}

/// The OS triple-faulted on `cpu` (VMX TRIPLE_FAULT, SVM SHUTDOWN): a
/// crash of the OS, named with its state (`dump`, at ERROR) unless the run
/// is already ending, then GUEST-END how=triple-fault and a shutdown carried
/// out for real (a PC resets).
pub fn triple_fault(cpu: u32, dump: impl FnOnce()) -> ! {
    if !run::is_ending() {
        log::error!("os guest: triple fault on cpu{cpu}: the processor shuts down, which resets the machine");
        dump();
    }
    run::guest_end(How::TripleFault);
    crate::platform::triple_fault()
}

/// On an AP about to leave virtualization for wait-for-SIPI (before VMXOFF
/// or STGI, where a pending INIT may strike at once): NMIs from here on are
/// dropped, and the OS's SIPI may follow once it has settled (`filter_ipi`).
pub fn leaving_for_wait_for_sipi(pcb: &Pcb) {
    pcb.set(CPU_STATUS_OS_WAITING);
    pcb.os_wait_since.store(crate::tsc::rdtsc().max(INIT_SENT + 1), Ordering::Release);
}

/// On an AP entering the OS from the trampoline, its VMCS or VMCB in use
/// again: NMIs are the OS's again.
pub fn running_os(pcb: &Pcb) {
    pcb.os_wait_since.store(RUNNING, Ordering::Release);
    pcb.clear(CPU_STATUS_OS_WAITING);
}

/// A write to the x2APIC ICR (MSR 830H) the OS made, through `filter_ipi`.
pub fn x2apic_icr_write(value: u64) {
    if let Some(low) = filter_ipi(value as u32, (value >> 32) as u32) {
        // WRMSR to the x2APIC ICR does not wait for earlier stores (SDM Vol.
        // 3A §11.12.3): the recorded vector must be visible before the SIPI.
        // SAFETY: MFENCE and LFENCE only order memory and instructions.
        unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
        // SAFETY: the x2APIC ICR exists (the guest's APIC is in x2APIC mode, or
        // its WRMSR would have faulted before exiting); the OS asked for this IPI.
        unsafe { x86::msr::wrmsr(icr::X2APIC_ICR_MSR, (value & !0xffff_ffff) | low as u64) };
    }
}

/// `Pcb::os_sipi`: a start-up IPI came, with its vector in bits 7:0.
const OS_SIPI_VALID: u32 = 0x100;

/// Why the OS cannot run as the guest of `online` CPUs, whatever the
/// backend: its APs start through the trampoline, which must exist.
pub fn unsupported(online: usize) -> Option<&'static str> {
    (online > 1 && crate::smp::trampoline_page().is_none())
        .then_some("no trampoline page to start the application processors through")
}

/// The page the OS must not have besides the hypervisor's RAM: the
/// trampoline the APs come back through (none with one CPU).
pub fn kept() -> Option<Range> {
    crate::smp::trampoline_page().map(|p| Range::new(p, p + crate::memory::PAGE_SIZE as u64))
}

/// On the boot CPU before the OS starts: start-up IPIs the OS sends come
/// back into the hypervisor (`restart`).
pub fn prepare_restarts() {
    crate::smp::retarget_trampoline(restart);
}

/// The boot CPU, before it enters the OS: INIT to every AP that armed
/// (`Backend::arm_os_ap`, which called `leaving_for_wait_for_sipi`), so each
/// waits for the OS's start-up IPI in the processor's own wait-for-SIPI
/// state, as firmware leaves an AP.
pub fn send_aps_to_wait_for_sipi() {
    for ap in crate::pcb::all().filter(|p| !p.is_bsp && p.has(CPU_STATUS_OS)) {
        crate::apic::send_init(ap.apic_id());
    }
}

/// Leave this AP in the processor's wait-for-SIPI state, its backend
/// already off (`leaving_for_wait_for_sipi`, then VMXOFF or STGI, where an
/// INIT the CPU held pending is taken: SVM holds the intercepted one while
/// GIF is clear, Bochs 2.7 also VMX's): else an INIT to itself (physical
/// destination, which INIT allows). NMIs meanwhile are dropped: natively a
/// CPU the OS resets takes none.
pub fn wait_for_sipi(pcb: &Pcb) -> ! {
    crate::apic::send_init(pcb.apic_id());
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Where an AP arrives from the trampoline when the OS's start-up IPI (sent
/// there by `filter_ipi`) woke it from wait-for-SIPI: its PCB again, then
/// the backend turns virtualization on again (INIT cleared CR4.VMXE or
/// EFER.SVME) and enters the OS in real mode at the vector the OS chose.
/// Writes nothing to COM1 (the OS's) unless it fails.
extern "C" fn restart(pcb: *const Pcb, _apic_id: u64) -> ! {
    // SAFETY: the trampoline found this CPU's own 'static PCB by its APIC ID.
    let pcb = crate::pcb::reactivate(unsafe { &*pcb });
    // INIT took this CPU out of VMX operation or cleared EFER.SVME.
    pcb.clear(crate::pcb::CPU_STATUS_VMXON);
    let sipi = pcb.os_sipi.load(Ordering::Acquire);
    if sipi & OS_SIPI_VALID == 0 || !pcb.has(CPU_STATUS_OS) {
        log::error!("os guest: cpu{} came through the trampoline with no OS start to run", pcb.processor_index);
        run::fail_and_end("an AP restarted without a start-up IPI from the OS")
    }
    enable_host_xsave();
    super::backend::restart_os(pcb, sipi as u8)
}
