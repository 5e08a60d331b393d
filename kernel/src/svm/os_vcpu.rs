//! The OS guest's #VMEXIT handler under SVM. The OS runs pass-through, so
//! few things exit: CPUID, XSETBV, INVD, SVM's instructions, the MSRs that
//! would reveal SVM (EFER's SVME, VM_CR, VM_HSAVE_PA, SVM_KEY), the ports
//! that power off or reset the machine, writes to the local APIC's ICR (its
//! page is write-protected in the nested page tables; the x2APIC ICR MSR
//! exits), INIT, and a shutdown. Interrupts, NMIs, HLT and exceptions do
//! not exit. After the handoff nothing here logs below ERROR: COM1 is the OS's.
//!
//! Application processors: AMD has no wait-for-SIPI state in a guest. An AP
//! of the OS waits in the real one: INIT (intercepted) resets it, and the
//! OS's start-up IPIs to it are sent to the hypervisor's own trampoline
//! instead, which brings it back into the hypervisor, where it enters the OS
//! in real mode at the vector the OS asked for (`os_guest::restart`).

use super::emulate::{self, GP, UD};
use super::vcpu::{Vcpu, RESUME};
use crate::pcb::Pcb;
use crate::run;
use crate::virt::os::{self, PortError};
use hvlogic::guest_mem::{Paging, Source};
use hvlogic::icr;
use hvlogic::os_guest::Hidden;
use hvlogic::power::Ports;
use hvlogic::svm::exit_code::{self as code, counter_index, ioio, npf};
use hvlogic::svm::vmcb::{control, save};
use hvlogic::svm::{vm_cr, EFER_SVME, SVM_KEY, VM_HSAVE_PA};
use log::error;

/// What the OS guest's vCPU carries besides the registers.
pub struct Os {
    pub pcb: &'static Pcb,
    pub hidden: Hidden,
    /// CPUID.(EAX=0DH,ECX=0):EDX:EAX, the XCR0 bits the CPU supports.
    pub xcr0_supported: u64,
    /// The EFER bits the CPU implements (SVME among them, hidden from the OS).
    pub efer_valid: u64,
    pub ports: Ports,
    /// The xAPIC register page (write-protected in the nested page tables).
    pub apic_page: u64,
    /// The OS ran on this vCPU (its CR0.CD and NW are the guest's since).
    pub ran: bool,
}

pub type OsVcpu = Vcpu<Os>;

/// MSR numbers (APM Vol. 2 §15.30 "SVM Related MSRs"; IGNNE and SMM_CTL are
/// SVM's too, C001_0115h and C001_0116h).
const EFER: u32 = 0xc000_0080;
const IGNNE: u32 = 0xc001_0115;
const SMM_CTL: u32 = 0xc001_0116;
/// IA32_APIC_BASE bits 51:12, the APIC's register page.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// EFER.LME and EFER.LMA; CR0.PG.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR0_PG: u64 = 1 << 31;

/// Why the OS cannot go on: the run ends with GUEST-END how=failure.
enum Fatal {
    /// An exit this handler does not handle.
    Unhandled(u64),
    /// VMRUN refused the VMCB.
    Invalid,
    Port(PortError),
    /// A write to the APIC page by an instruction this hypervisor does not decode.
    Undecodable(u64),
    /// The OS moved its local APIC (IA32_APIC_BASE with a new base).
    ApicMoved(u64),
    /// No NRIP and an instruction this handler cannot measure.
    Unmeasured,
}

/// The #VMEXIT handler (`Vcpu::dispatch`), on this CPU's exit stack with the
/// guest registers saved and GIF clear (an NMI for the OS waits for VMRUN,
/// which delivers it to the OS).
pub extern "C" fn dispatch(vcpu: &mut OsVcpu) -> u64 {
    let start = crate::tsc::rdtsc();
    vcpu.exits += 1;
    let vmcb = vcpu.vmcb;
    // #VMEXIT clears EVENTINJ's valid bit (an event it interrupted is in
    // EXITINTINFO); cleared here too, so no emulator can deliver it twice.
    vmcb.set_u64(control::EVENTINJ, 0);
    let exit = vcpu.exit_code();
    vcpu.guest.pcb.count_exit(counter_index(exit) as u32);
    let done = if exit == code::CPUID {
        let r = crate::virt::cpuid::answer(
            vcpu.regs.rax as u32,
            vcpu.regs.rcx as u32,
            vcpu.processor_index,
            vcpu.guest.hidden,
            || vmcb.u64(save::CR4),
        )
        .map(|v| v as u64);
        (vcpu.regs.rax, vcpu.regs.rbx, vcpu.regs.rcx, vcpu.regs.rdx) = (r[0], r[1], r[2], r[3]);
        next(vcpu, None)
    } else {
        handle(vcpu, exit)
    };
    match done {
        Ok(()) => {
            vcpu.redeliver_interrupted_event();
            vcpu.guest.pcb.count_exit_ticks(crate::tsc::rdtsc().wrapping_sub(start));
            RESUME
        }
        Err(fatal) => fail(vcpu, exit, fatal),
    }
}

/// Step over the instruction that exited (to `next` where the exit gave it).
fn next(vcpu: &mut OsVcpu, next: Option<u64>) -> Result<(), Fatal> {
    let vmcb = vcpu.vmcb;
    let rip = match next {
        Some(rip) => rip,
        None => {
            let mut read = |linear: u64| read_guest(&vmcb, linear);
            emulate::next_instruction(&vmcb, vcpu.nrips, &mut read).map_err(|_| Fatal::Unmeasured)?
        }
    };
    emulate::advance_to(&vmcb, rip);
    Ok(())
}

/// A byte of the OS at guest-linear `linear`, through its paging and the nested view.
fn read_guest(vmcb: &super::vmcb::Vmcb, linear: u64) -> Option<u8> {
    let mut read8 = |gpa: u64| crate::virt::os_memory::read_u64(gpa).unwrap_or(0);
    let gpa = if vmcb.u64(save::CR0) & CR0_PG != 0 {
        emulate::linear_to_physical(vmcb, linear, &mut read8)?
    } else {
        linear & 0xffff_ffff
    };
    crate::virt::os_memory::read_u64(gpa).map(|q| q.to_le_bytes()[(gpa & 7) as usize])
}

#[cold]
#[inline(never)]
fn handle(vcpu: &mut OsVcpu, exit: u64) -> Result<(), Fatal> {
    let vmcb = vcpu.vmcb;
    let info1 = vmcb.u64(control::EXITINFO1);
    match exit {
        code::INIT => init_signal(vcpu),
        code::SHUTDOWN => os::triple_fault(vcpu.processor_index, || {
            super::dump::guest_state(&vmcb, &vcpu.regs, vcpu.exits, log::Level::Error)
        }),
        code::MSR => msr(vcpu, info1 != 0),
        code::NPF => apic_write(vcpu, info1),
        code::IOIO => {
            os::port_io(&vcpu.guest.ports, ioio(info1), &mut vcpu.regs.rax).map_err(Fatal::Port)?;
            next(vcpu, Some(vmcb.u64(control::EXITINFO2)))
        }
        code::XSETBV => {
            if os::xsetbv(&vcpu.regs, vcpu.guest.xcr0_supported) {
                next(vcpu, None)
            } else {
                vmcb.inject_exception(GP, Some(0));
                Ok(())
            }
        }
        // SVM is hidden: on a CPU without it these raise #UD (APM Vol. 3
        // "VMRUN", "VMMCALL", ...: #UD when EFER.SVME is 0).
        code::VMRUN
        | code::VMMCALL
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA => {
            vmcb.inject_exception(UD, None);
            Ok(())
        }
        code::INVD => {
            // INVD would drop the host's dirty lines too: write them back instead.
            // SAFETY: WBINVD only writes back and invalidates caches.
            unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
            next(vcpu, None)
        }
        code::INVALID => Err(Fatal::Invalid),
        other => Err(Fatal::Unhandled(other)),
    }
}

/// INIT, which the OS sends before it starts (or restarts) an application
/// processor. The boot CPU's INIT is a reset of the machine. An AP goes
/// into the processor's wait-for-SIPI state (`virt::os::wait_for_sipi`):
/// GIF set first, so that where the CPU held the INIT pending (Bochs) it is
/// taken there. QEMU's TCG resets the CPU at the #VMEXIT itself, before this
/// handler runs (docs/svm.md).
fn init_signal(vcpu: &mut OsVcpu) -> Result<(), Fatal> {
    let pcb = vcpu.guest.pcb;
    os::init_received(pcb, &vcpu.guest.ports);
    // SAFETY: EFER.SVME is set; the guest is not running. Interrupts stay off;
    // an NMI for the OS meets the host's handler, which drops it.
    unsafe { super::instructions::stgi() };
    os::wait_for_sipi(pcb)
}

/// The MSRs that exit (the MSR permissions map, os_guest.rs): EFER reads
/// without SVME and refuses it set (a reserved bit on a CPU without SVM);
/// VM_CR reads "SVM disabled, locked" and refuses writes (as a locked MSR);
/// VM_HSAVE_PA, SVM_KEY, IGNNE and SMM_CTL give #GP; IA32_APIC_BASE may
/// change the APIC's mode but not move it; the x2APIC ICR goes through the
/// IPI filter.
fn msr(vcpu: &mut OsVcpu, write: bool) -> Result<(), Fatal> {
    let vmcb = vcpu.vmcb;
    let index = vcpu.regs.rcx as u32;
    let value = (vcpu.regs.rdx << 32) | (vcpu.regs.rax & 0xffff_ffff);
    let gp = || {
        vmcb.inject_exception(GP, Some(0));
        Ok(())
    };
    match (index, write) {
        (EFER, false) => {
            let efer = vmcb.u64(save::EFER) & !EFER_SVME;
            (vcpu.regs.rax, vcpu.regs.rdx) = (efer & 0xffff_ffff, efer >> 32);
        }
        (EFER, true) => {
            let old = vmcb.u64(save::EFER);
            let paging = vmcb.u64(save::CR0) & CR0_PG != 0;
            // Reserved bits (SVME among them, SVM being hidden), or LME
            // changed while paging is on: #GP (APM Vol. 2 §3.1.7 "Extended
            // Feature Enable Register (EFER)", §14.6.1 "Activating Long Mode").
            let reserved = value & !(vcpu.guest.efer_valid & !EFER_SVME) != 0;
            if reserved || (paging && (value ^ old) & EFER_LME != 0) {
                return gp();
            }
            // LMA is the CPU's to set; SVME stays on underneath.
            vmcb.set_u64(save::EFER, (value & !EFER_LMA) | (old & EFER_LMA) | EFER_SVME);
        }
        (vm_cr::VM_CR, false) => (vcpu.regs.rax, vcpu.regs.rdx) = (vm_cr::GUEST_VIEW, 0),
        (vm_cr::VM_CR | VM_HSAVE_PA | SVM_KEY | IGNNE | SMM_CTL, _) => return gp(),
        (x86::msr::IA32_APIC_BASE, true) => {
            if value & ADDRESS_MASK != vcpu.guest.apic_page {
                return Err(Fatal::ApicMoved(value));
            }
            // SAFETY: the OS's own write of its APIC's mode bits; a value the CPU
            // refuses faults here as it would in the guest: the OS asked for it.
            unsafe { x86::msr::wrmsr(index, value) };
        }
        (icr::X2APIC_ICR_MSR, true) => os::x2apic_icr_write(value),
        _ => return gp(),
    }
    next(vcpu, None)
}

/// A nested page fault: a write to the local APIC's page, emulated
/// (`virt::os::apic_store`); anything else cannot be handled (the identity
/// map covers all memory).
fn apic_write(vcpu: &mut OsVcpu, info1: u64) -> Result<(), Fatal> {
    let vmcb = vcpu.vmcb;
    let gpa = vmcb.u64(control::EXITINFO2);
    if gpa & !0xfff != vcpu.guest.apic_page || info1 & npf::WRITE == 0 || info1 & npf::PAGE_TABLES != 0 {
        return Err(Fatal::Unhandled(code::NPF));
    }
    let paging = Paging {
        cr0: vmcb.u64(save::CR0),
        cr3: vmcb.u64(save::CR3),
        cr4: vmcb.u64(save::CR4),
        efer: vmcb.u64(save::EFER),
    };
    let store = os::decode_store(&paging, vmcb.u64(save::CS + save::BASE), vmcb.u64(save::RIP), emulate::code64(&vmcb))
        .ok_or(Fatal::Undecodable(gpa))?;
    let source = match store.source {
        Source::Register(4) => vmcb.u64(save::RSP),
        Source::Register(n) => vcpu.regs.gpr(n),
        Source::Immediate(_) => 0,
    };
    let done =
        os::apic_store(vcpu.guest.apic_page, gpa, &store, source, os::filter_ipi).ok_or(Fatal::Undecodable(gpa))?;
    match done.exchange {
        Some((4, old)) => vmcb.set_u64(save::RSP, old as u64),
        Some((n, old)) => vcpu.regs.set_gpr(n, old as u64),
        None => {}
    }
    let rip = hvlogic::exit_qual::next_rip(vmcb.u64(save::RIP), store.len as u64, emulate::code64(&vmcb));
    next(vcpu, Some(rip))
}

/// The OS cannot go on: say why, dump its state, and end the run (GUEST-END
/// how=failure, then as `exit=` says).
#[cold]
fn fail(vcpu: &mut OsVcpu, exit: u64, fatal: Fatal) -> ! {
    let vmcb = vcpu.vmcb;
    match fatal {
        Fatal::Unhandled(c) => error!(
            "os guest: unhandled #VMEXIT {c:#x} ({}), EXITINFO1 {:#x}, EXITINFO2 {:#x}",
            code::name(c),
            vmcb.u64(control::EXITINFO1),
            vmcb.u64(control::EXITINFO2)
        ),
        Fatal::Invalid => super::dump::vmrun_failure(vcpu),
        Fatal::Port(PortError::Sleep(typ)) => {
            error!("os guest: sleep state SLP_TYP={typ} requested; only S5 (poweroff) is supported")
        }
        Fatal::Port(PortError::StringIo(q)) => error!("os guest: string I/O to a trapped port ({q}) is not emulated"),
        Fatal::ApicMoved(value) => error!(
            "os guest: IA32_APIC_BASE written with {value:#x}: moving the local APIC from {:#x} is not supported",
            vcpu.guest.apic_page
        ),
        Fatal::Undecodable(gpa) => error!(
            "os guest: a write to the local APIC at {gpa:#x} by an instruction this hypervisor does not decode (RIP {:#x})",
            vmcb.u64(save::RIP)
        ),
        Fatal::Unmeasured => error!(
            "os guest: #VMEXIT {exit:#x} ({}) at RIP {:#x}: no NRIP save, and the instruction cannot be read or is not one this hypervisor measures",
            code::name(exit),
            vmcb.u64(save::RIP)
        ),
    }
    super::dump::guest_state(&vmcb, &vcpu.regs, vcpu.exits, log::Level::Error);
    run::fail_and_end("the OS guest cannot go on")
}
