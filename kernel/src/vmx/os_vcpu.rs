//! The OS guest's vCPU and its VM-exit handler. The OS runs pass-through, so
//! few things exit: CPUID, XSETBV, INVD, GETSEC and the VMX instructions
//! (unconditionally), MOV to CR0/CR4 that touches a bit the host owns, the
//! MSRs that would reveal VMX, the ports that power off or reset the machine,
//! writes to the local APIC's ICR (its page is write-protected in EPT; the
//! x2APIC ICR MSR exits), and INIT. An AP the OS sends INIT leaves VMX
//! operation for the processor's own wait-for-SIPI state; the OS's SIPI
//! brings it back through the hypervisor's trampoline (`virt::os`).
//! After the handoff nothing here logs below ERROR: COM1 is the OS's.

use super::emulate::{self, inject, inject_gp, UD};
use super::instructions::{vmread_unchecked, VmFail};
use super::vcpu::{Rsp, Vcpu, RESUME};
use super::vmcs::{self, VmcsError, AR_CODE_16, AR_DATA_16, AR_TSS_BUSY_32, AR_UNUSABLE};
use crate::pcb::Pcb;
use crate::run;
use crate::virt::os::{self, PortError};
use core::sync::atomic::{AtomicU32, Ordering};
use hvlogic::controls::{entry, pin};
use hvlogic::cr::{self, Outcome};
use hvlogic::exit_qual::{CrAccess, CrAccessKind, IoAccess};
use hvlogic::exit_reason::{basic, ExitReason};
use hvlogic::fixed::{self, Fixed};
use hvlogic::guest_mem::{Paging, Source};
use hvlogic::icr;
use hvlogic::os_guest::Hidden;
use hvlogic::power::Ports;
use log::error;
use x86::vmx::vmcs::{control as ctl, guest, ro};

/// What the OS guest's vCPU carries besides the registers.
pub struct Os {
    pub pcb: &'static Pcb,
    pub hidden: Hidden,
    /// The fixed bits the real CR0 and CR4 keep (PE and PG freed for CR0).
    pub cr0_fixed: Fixed,
    pub cr4_fixed: Fixed,
    /// CR4 bits the guest may not set: VMXE and SMXE (VMX and SMX are hidden).
    pub cr4_hidden: u64,
    /// CPUID.(EAX=0DH,ECX=0):EDX:EAX, the XCR0 bits the CPU supports.
    pub xcr0_supported: u64,
    pub ports: Ports,
    /// The xAPIC register page (write-protected in EPT).
    pub apic_page: u64,
    /// This CPU's VMCS (physical address), made current again at each restart.
    pub vmcs: u64,
    /// The OS ran on this vCPU (its CR0.CD and NW are the guest's since).
    pub ran: bool,
    /// Where entry.s's CPUID fast path counts (this CPU's CPUID exits), or
    /// None where it stays off; `deliver_pending_nmi` turns it off while an
    /// NMI waits.
    pub fast_cpuids: Option<&'static AtomicU32>,
    /// The timer's next retry for a waiting NMI (`NMI_RETRY_FIRST` doubling).
    pub nmi_retry: u64,
}

pub type OsVcpu = Vcpu<Os>;

/// The active activity state (SDM Vol. 3C §25.4.2 "Guest Non-Register State").
pub const ACTIVE: u64 = 0;
/// What IA32_FEATURE_CONTROL reads as: locked, VMX off (VMX is hidden).
const FEATURE_CONTROL_LOCKED_OFF: u64 = hvlogic::feature_control::LOCK;

/// Why the OS cannot go on: the run ends with GUEST-END how=failure.
enum Fatal {
    Vmcs(VmcsError),
    /// VMCLEAR or VMXOFF, leaving VMX for wait-for-SIPI, failed.
    Leave(VmFail),
    /// An exit this handler does not handle.
    Unhandled(ExitReason),
    /// A VM-entry failure reported as an exit (reason with bit 31 set).
    EntryFailure(ExitReason),
    /// A sleep state other than S5.
    Sleep(u8),
    /// String I/O to a trapped port.
    StringIo(IoAccess),
    /// A write to the APIC page by an instruction this hypervisor does not decode.
    Undecodable(u64),
    /// The OS moved its local APIC (IA32_APIC_BASE with a new base).
    ApicMoved(u64),
}

/// IA32_APIC_BASE bits 51:12, the APIC's register page (SDM Vol. 3A §11.4.4
/// "Local APIC Status and Location").
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

impl From<VmcsError> for Fatal {
    fn from(e: VmcsError) -> Fatal {
        Fatal::Vmcs(e)
    }
}

/// The exit handler (`Vcpu::dispatch`), on this CPU's exit stack with the
/// guest registers saved. CPUID is the fast path.
pub extern "C" fn dispatch(vcpu: &mut OsVcpu) -> u64 {
    let start = crate::tsc::rdtsc();
    vcpu.exits += 1;
    // SAFETY: this CPU's VMCS is current during every VM exit; the field exists.
    let reason = unsafe { vmread_unchecked(ro::EXIT_REASON) } as u32;
    vcpu.guest.pcb.count_exit(reason & 0xffff);
    let done = if reason == basic::CPUID as u32 {
        emulate::cpuid(&mut vcpu.regs, vcpu.processor_index, vcpu.guest.hidden);
        emulate::skip_instruction().map_err(Fatal::from)
    } else {
        handle(vcpu, ExitReason(reason)).and_then(|()| Ok(emulate::clear_smi_blocking()?))
    };
    match done.and_then(|()| deliver_pending_nmi(vcpu)) {
        Ok(()) => {
            vcpu.guest.pcb.count_exit_ticks(crate::tsc::rdtsc().wrapping_sub(start));
            RESUME
        }
        Err(fatal) => fail(vcpu, ExitReason(reason), fatal),
    }
}

#[cold]
#[inline(never)]
fn handle(vcpu: &mut OsVcpu, reason: ExitReason) -> Result<(), Fatal> {
    if reason.entry_failure() {
        return Err(Fatal::EntryFailure(reason));
    }
    let qualification = vmcs::read(ro::EXIT_QUALIFICATION);
    match reason.basic() {
        basic::INIT_SIGNAL => init_signal(vcpu),
        basic::TRIPLE_FAULT => os::triple_fault(vcpu.processor_index, || {
            super::dump::guest_state(&vcpu.regs, vcpu.exits, log::Level::Error)
        }),
        basic::CR_ACCESS => cr_access(vcpu, CrAccess::decode(qualification)),
        basic::RDMSR | basic::WRMSR => msr(vcpu, reason.basic() == basic::WRMSR),
        basic::EPT_VIOLATION => ept_violation(vcpu, qualification),
        basic::IO_INSTRUCTION => io(vcpu, IoAccess::decode(qualification)),
        basic::XSETBV => xsetbv(vcpu),
        basic::PREEMPTION_TIMER => Ok(disarm_nmi_timer()?),
        // Hidden from the guest: on a CPU without VMX or SMX these raise #UD.
        basic::GETSEC
        | basic::VMCALL
        | basic::VMCLEAR
        | basic::VMLAUNCH
        | basic::VMPTRLD
        | basic::VMPTRST
        | basic::VMREAD
        | basic::VMRESUME
        | basic::VMWRITE
        | basic::VMXOFF
        | basic::VMXON
        | basic::INVEPT
        | basic::INVVPID
        | basic::VMFUNC => Ok(inject(UD, None)?),
        basic::INVD => {
            // INVD would drop the host's dirty lines too: write them back instead.
            // SAFETY: WBINVD only writes back and invalidates caches.
            unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
            Ok(emulate::skip_instruction()?)
        }
        // Exit only where the CPU forces these controls on: behave as a NOP.
        basic::MONITOR | basic::MWAIT => Ok(emulate::skip_instruction()?),
        _ => Err(Fatal::Unhandled(reason)),
    }
}

/// Interruptibility state (SDM Vol. 3C Table 25-3 "Format of Interruptibility
/// State").
const BLOCKING_BY_STI: u64 = 1 << 0;
const BLOCKING_BY_MOV_SS: u64 = 1 << 1;
const BLOCKING_BY_NMI: u64 = 1 << 3;

/// VMX-preemption timer units before a VM exit looks again at an NMI the
/// guest was not ready for, doubling while it stays unready (a CPU halted
/// with NMIs blocked is asked ever more rarely). The timer counts down at the
/// TSC rate divided by 2^IA32_VMX_MISC[4:0], and only in C-states up to C2
/// (SDM Vol. 3C §26.5.1 "VMX-Preemption Timer"): a guest in a deeper C-state
/// gets the NMI when it wakes.
pub const NMI_RETRY_FIRST: u64 = 1 << 10;
const NMI_RETRY_MAX: u64 = 1 << 24;
/// NMIs a CPU holds: one being delivered, one latched behind it.
const NMI_HELD_MAX: u8 = 2;

/// An NMI reached the host while this CPU runs the OS guest: NMIs do not
/// exit, so it arrived while an exit was handled, and it was meant for the
/// OS. It is set aside for `deliver_pending_nmi`; where the CPU has the
/// VMX-preemption timer, the timer is armed at 0 too, so that an NMI arriving
/// after the exit handler last looked still makes the coming VM entry exit at
/// once (before any guest instruction, after any injected event) and is
/// delivered, not left until some later exit. Called from the NMI handler,
/// on this CPU, with its VMCS current.
pub fn nmi_in_host(pcb: &Pcb) {
    let _ = pcb.nmi_pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some((n + 1).min(NMI_HELD_MAX)));
    if pcb.nmi_timer.load(Ordering::Acquire) {
        // A VMWRITE to a field of the current VMCS does not fail; if it did,
        // the NMI would still go in at the next exit.
        let _ = arm_nmi_timer(0);
    }
}

/// Arm the timer (a read-modify-write of the pin-based controls that the NMI
/// handler may interrupt; what it sets survives, and whatever is lost
/// `deliver_pending_nmi`, which runs after, does again).
fn arm_nmi_timer(value: u64) -> Result<(), VmcsError> {
    vmcs::write(guest::VMX_PREEMPTION_TIMER_VALUE, value)?;
    let pin = vmcs::read(ctl::PINBASED_EXEC_CONTROLS);
    vmcs::write(ctl::PINBASED_EXEC_CONTROLS, pin | pin::PREEMPTION_TIMER as u64)
}

/// The timer only ever brings NMIs back: off once none waits.
fn disarm_nmi_timer() -> Result<(), VmcsError> {
    let pin = vmcs::read(ctl::PINBASED_EXEC_CONTROLS);
    if pin & pin::PREEMPTION_TIMER as u64 != 0 {
        vmcs::write(ctl::PINBASED_EXEC_CONTROLS, pin & !(pin::PREEMPTION_TIMER as u64))?;
    }
    Ok(())
}

/// An NMI set aside by the host's NMI handler goes to the guest now, unless
/// the guest cannot take one on this entry: it blocks NMIs, it is in a
/// MOV-SS or STI shadow (an injected NMI fails VM entry under MOV SS, SDM
/// Vol. 3C §27.3.1.5 "Checks on Guest Non-Register State", and under STI on
/// some processors, Bochs among them), or another event is being injected.
/// While one waits, the VMX-preemption timer (where there is one) asks again
/// later, and every exit comes here: the CPUID fast path is off, as each of
/// its VM entries would restart the timer's countdown.
fn deliver_pending_nmi(vcpu: &mut OsVcpu) -> Result<(), Fatal> {
    const VALID: u64 = 1 << 31;
    let pcb = vcpu.guest.pcb;
    if pcb.nmi_pending.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let blocking = BLOCKING_BY_STI | BLOCKING_BY_MOV_SS | BLOCKING_BY_NMI;
    let blocked = vmcs::read(guest::INTERRUPTIBILITY_STATE) & blocking != 0
        || vmcs::read(ctl::VMENTRY_INTERRUPTION_INFO_FIELD) & VALID != 0;
    if !blocked {
        emulate::inject_nmi()?;
        pcb.nmi_pending.fetch_sub(1, Ordering::AcqRel);
        vcpu.guest.nmi_retry = NMI_RETRY_FIRST;
    }
    let waiting = pcb.nmi_pending.load(Ordering::Acquire) != 0;
    if pcb.nmi_timer.load(Ordering::Acquire) {
        if waiting {
            arm_nmi_timer(vcpu.guest.nmi_retry)?;
            vcpu.guest.nmi_retry = (vcpu.guest.nmi_retry * 2).min(NMI_RETRY_MAX);
        } else {
            disarm_nmi_timer()?;
        }
    }
    vcpu.set_fast_cpuid(if waiting { None } else { vcpu.guest.fast_cpuids });
    Ok(())
}

/// Forget the NMIs set aside for this CPU (it waits for SIPI, or INIT reset it).
fn drop_pending_nmis(vcpu: &mut OsVcpu) -> Result<(), VmcsError> {
    vcpu.guest.pcb.nmi_pending.store(0, Ordering::Release);
    vcpu.guest.nmi_retry = NMI_RETRY_FIRST;
    if vcpu.guest.pcb.nmi_timer.load(Ordering::Acquire) {
        disarm_nmi_timer()?;
    }
    vcpu.set_fast_cpuid(vcpu.guest.fast_cpuids);
    Ok(())
}

/// INIT, which the OS sends before it starts (or restarts) an application
/// processor (SDM Vol. 3C §26.2 "Other Causes of VM Exits": INIT signals
/// exit). The boot CPU's is a reset of the machine. An AP leaves VMX
/// operation for the processor's own wait-for-SIPI state
/// (`virt::os::wait_for_sipi`), from which the OS's SIPI restarts it
/// (`os_guest::restart`): VMCLEAR first, so that its VMCS is in memory to
/// load again, then VMXOFF, where an INIT the CPU kept pending is taken (Bochs
/// 2.7 keeps the INIT whose exit it took: docs/linux-guest.md).
fn init_signal(vcpu: &mut OsVcpu) -> Result<(), Fatal> {
    let pcb = vcpu.guest.pcb;
    // From here NMIs are dropped (the VMCS is about to go).
    os::init_received(pcb, &vcpu.guest.ports);
    pcb.nmi_pending.store(0, Ordering::Release);
    leave_vmx(vcpu).map_err(Fatal::Leave)?;
    os::wait_for_sipi(pcb)
}

/// This CPU's VMCS written back to memory and no longer current (VMCLEAR,
/// SDM Vol. 3C §25.11.3 "Initializing a VMCS"), so that `restart` can load
/// it again after INIT, then VMX operation left.
pub fn leave_vmx(vcpu: &mut OsVcpu) -> Result<(), VmFail> {
    // SAFETY: in VMX root operation; the region is this vCPU's VMCS.
    unsafe { super::instructions::vmclear(vcpu.guest.vmcs) }?;
    super::enter::leave_quietly(vcpu.guest.pcb)
}

/// The start-up IPI's state: the state INIT leaves, active, in real mode
/// at vector:0000 (SDM Vol. 3A §9.4.4.1 "Typical BSP Initialization
/// Sequence"; the AP starts at physical 000VV000H).
pub fn start_up(vcpu: &mut OsVcpu, vector: u8) -> Result<(), VmcsError> {
    reset_to_init(vcpu)?;
    vmcs::write_segment(vmcs::Segment::Cs, (vector as u16) << 8, (vector as u64) << 12, 0xffff, AR_CODE_16)?;
    vmcs::write(guest::RIP, 0)
}

/// The guest as INIT leaves a processor, active: registers and VMCS state.
fn reset_to_init(vcpu: &mut OsVcpu) -> Result<(), VmcsError> {
    // CD and NW survive INIT: the guest's own (the host does not own them,
    // so the guest CR0 field holds them), or (before it ever ran) this CPU's,
    // which runs cached.
    let cd_nw = if vcpu.guest.ran { vmcs::read(guest::CR0) } else { 0 };
    write_init_state(&vcpu.guest, cd_nw)?;
    vcpu.regs = Default::default();
    // EDX holds the processor signature after INIT (SDM Vol. 3A §10.1.3 "Model
    // and Stepping Information").
    vcpu.regs.rdx = raw_cpuid::cpuid!(1).eax as u64;
    vcpu.flush_vpid();
    drop_pending_nmis(vcpu)
}

/// What every start of the OS guest writes: CR0 as the guest sees it `cr0`
/// (the real one with the fixed bits the host keeps), CR3 0, CR4 0 as the
/// guest sees it, DR7 and RFLAGS at their reset values, RIP `rip`, RSP 0,
/// EFER, DEBUGCTL and the SYSENTER MSRs 0, no interruptibility blocking or
/// pending debug exceptions, and the activity state active.
pub fn write_start_registers(os: &Os, cr0: u64, rip: u64) -> Result<(), VmcsError> {
    vmcs::write(guest::CR0, os.cr0_fixed.apply(cr0).value)?;
    vmcs::write(ctl::CR0_READ_SHADOW, cr0)?;
    vmcs::write(guest::CR3, 0)?;
    vmcs::write(guest::CR4, os.cr4_fixed.apply(0).value)?;
    vmcs::write(ctl::CR4_READ_SHADOW, 0)?;
    vmcs::write(guest::DR7, 0x400)?;
    vmcs::write(guest::RFLAGS, 0x2)?;
    vmcs::write(guest::RIP, rip)?;
    vmcs::write(guest::RSP, 0)?;
    vmcs::write(guest::IA32_EFER_FULL, 0)?;
    vmcs::write(guest::IA32_DEBUGCTL_FULL, 0)?;
    vmcs::write(guest::IA32_SYSENTER_CS, 0)?;
    vmcs::write(guest::IA32_SYSENTER_ESP, 0)?;
    vmcs::write(guest::IA32_SYSENTER_EIP, 0)?;
    vmcs::write(guest::INTERRUPTIBILITY_STATE, 0)?;
    vmcs::write(guest::PENDING_DBG_EXCEPTIONS, 0)?;
    vmcs::write(guest::ACTIVITY_STATE, ACTIVE)
}

/// The state INIT leaves (SDM Vol. 3A Table 10-1 "IA-32 and Intel 64 Processor
/// States Following Power-up, Reset, or INIT", "INIT" column):
/// real mode at F000:FFF0 with CS base FFFF0000, CR0.ET set and CD/NW as
/// `cd_nw` has them (NE kept in the real register, hidden by the read
/// shadow), everything else reset.
pub fn write_init_state(os: &Os, cd_nw: u64) -> Result<(), VmcsError> {
    // "CD and NW unchanged, bit 4 set to 1, all other bits cleared" (SDM Vol.
    // 3A Table 10-1 "IA-32 and Intel 64 Processor States Following Power-up,
    // Reset, or INIT", INIT column).
    let cr0 = 0x10 | (cd_nw & (fixed::cr0::CD | fixed::cr0::NW));
    write_start_registers(os, cr0, 0xfff0)?;
    vmcs::write_segment(vmcs::Segment::Cs, 0xf000, 0xffff_0000, 0xffff, AR_CODE_16)?;
    for s in [vmcs::Segment::Ss, vmcs::Segment::Ds, vmcs::Segment::Es, vmcs::Segment::Fs, vmcs::Segment::Gs] {
        vmcs::write_segment(s, 0, 0, 0xffff, AR_DATA_16)?;
    }
    vmcs::write_segment(vmcs::Segment::Ldtr, 0, 0, 0xffff, AR_UNUSABLE)?;
    vmcs::write_segment(vmcs::Segment::Tr, 0, 0, 0xffff, AR_TSS_BUSY_32)?;
    vmcs::write(guest::GDTR_BASE, 0)?;
    vmcs::write(guest::GDTR_LIMIT, 0xffff)?;
    vmcs::write(guest::IDTR_BASE, 0)?;
    vmcs::write(guest::IDTR_LIMIT, 0xffff)?;
    vmcs::write(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, 0)?;
    set_ia32e_mode(false)
}

/// The "IA-32e mode guest" entry control follows IA32_EFER.LMA.
fn set_ia32e_mode(on: bool) -> Result<(), VmcsError> {
    let controls = vmcs::read(ctl::VMENTRY_CONTROLS) as u32;
    let new = if on { controls | entry::IA32E_MODE_GUEST } else { controls & !entry::IA32E_MODE_GUEST };
    if new != controls {
        vmcs::write(ctl::VMENTRY_CONTROLS, new as u64)?;
    }
    Ok(())
}

/// MOV to CR0 or CR4 that changed a bit the host owns (NE; VMXE, SMXE and
/// reserved CR4 bits): the CPU's checks, then the register, its shadow and,
/// for paging changes, IA32_EFER.LMA, the IA-32e entry control and the PDPTEs.
fn cr_access(vcpu: &mut OsVcpu, q: CrAccess) -> Result<(), Fatal> {
    let os = &vcpu.guest;
    let (value, shadow_field) = match (q.cr, q.kind) {
        (0 | 4, CrAccessKind::MovToCr) => {
            (vcpu.regs.get(q.gpr), if q.cr == 0 { ctl::CR0_READ_SHADOW } else { ctl::CR4_READ_SHADOW })
        }
        _ => return Err(Fatal::Unhandled(ExitReason(basic::CR_ACCESS as u32))),
    };
    const CS_L: u64 = 1 << 13;
    let state = cr::State {
        cr0: vmcs::read(guest::CR0),
        cr4: vmcs::read(guest::CR4),
        efer: vmcs::read(guest::IA32_EFER_FULL),
        cs_l: vmcs::read(guest::CS_ACCESS_RIGHTS) & CS_L != 0,
    };
    let outcome = if q.cr == 0 {
        cr::mov_to_cr0(&state, value, os.cr0_fixed)
    } else {
        cr::mov_to_cr4(&state, value, os.cr4_fixed, os.cr4_hidden)
    };
    match outcome {
        Outcome::Fault => Ok(inject_gp()?),
        Outcome::Write { value, shadow, efer, ia32e, load_pdptes } => {
            vmcs::write(if q.cr == 0 { guest::CR0 } else { guest::CR4 }, value)?;
            vmcs::write(shadow_field, shadow)?;
            vmcs::write(guest::IA32_EFER_FULL, efer)?;
            set_ia32e_mode(ia32e)?;
            if load_pdptes {
                load_guest_pdptes()?;
            }
            // A MOV to CR0/CR4 that changes paging flushes this VPID's translations.
            vcpu.flush_vpid();
            Ok(emulate::skip_instruction()?)
        }
    }
}

/// PAE paging: the four PDPTEs at CR3 (bits 31:5) go into the VMCS, as the
/// CPU loads them on a MOV to CR0/CR4 (SDM Vol. 3A §4.4.1 "PDPTE Registers").
/// Guest-physical is host-physical for an OS guest.
fn load_guest_pdptes() -> Result<(), VmcsError> {
    let base = vmcs::read(guest::CR3) & 0xffff_ffe0;
    for (i, field) in
        [guest::PDPTE0_FULL, guest::PDPTE1_FULL, guest::PDPTE2_FULL, guest::PDPTE3_FULL].into_iter().enumerate()
    {
        // SAFETY: the first 4 GiB are identity-mapped; the guest owns this memory.
        let pdpte = unsafe { core::ptr::read_volatile((base + 8 * i as u64) as *const u64) };
        vmcs::write(field, pdpte)?;
    }
    Ok(())
}

/// The MSRs that exit (the MSR bitmap, os_guest.rs): IA32_FEATURE_CONTROL
/// reads as locked with VMX off and refuses writes (#GP, as a locked MSR
/// does); the VMX capability MSRs do not exist for a guest without VMX (#GP).
fn msr(vcpu: &mut OsVcpu, write: bool) -> Result<(), Fatal> {
    let index = vcpu.regs.rcx as u32;
    if write && index == x86::msr::IA32_APIC_BASE {
        // Mode changes pass (xAPIC to x2APIC and back); the register page may
        // not move, since EPT write-protects it where it is.
        let value = (vcpu.regs.rdx << 32) | (vcpu.regs.rax & 0xffff_ffff);
        if value & ADDRESS_MASK != vcpu.guest.apic_page {
            return Err(Fatal::ApicMoved(value));
        }
        // SAFETY: the OS's own write of its APIC's mode bits; a value the CPU
        // refuses faults here as it would in the guest: the OS asked for it.
        unsafe { x86::msr::wrmsr(index, value) };
        return Ok(emulate::skip_instruction()?);
    }
    if write && index == icr::X2APIC_ICR_MSR {
        os::x2apic_icr_write((vcpu.regs.rdx << 32) | (vcpu.regs.rax & 0xffff_ffff));
        return Ok(emulate::skip_instruction()?);
    }
    if !write && index == hvlogic::feature_control::IA32_FEATURE_CONTROL {
        vcpu.regs.rax = FEATURE_CONTROL_LOCKED_OFF;
        vcpu.regs.rdx = 0;
        return Ok(emulate::skip_instruction()?);
    }
    Ok(inject_gp()?)
}

/// An EPT violation: a write to the local APIC's page (write-protected so
/// that the OS's INIT IPIs can be seen), emulated (`virt::os::apic_store`);
/// anything else cannot be handled (the identity map covers all memory).
fn ept_violation(vcpu: &mut OsVcpu, qualification: u64) -> Result<(), Fatal> {
    const WRITE: u64 = 1 << 1;
    const CS_L: u64 = 1 << 13;
    let gpa = vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL);
    if gpa & !0xfff != vcpu.guest.apic_page || qualification & WRITE == 0 {
        return Err(Fatal::Unhandled(ExitReason(basic::EPT_VIOLATION as u32)));
    }
    let paging = Paging {
        cr0: vmcs::read(guest::CR0),
        cr3: vmcs::read(guest::CR3),
        cr4: vmcs::read(guest::CR4),
        efer: vmcs::read(guest::IA32_EFER_FULL),
    };
    let long = paging.efer & cr::EFER_LMA != 0 && vmcs::read(guest::CS_ACCESS_RIGHTS) & CS_L != 0;
    let store = os::decode_store(&paging, vmcs::read(guest::CS_BASE), vmcs::read(guest::RIP), long)
        .ok_or(Fatal::Undecodable(gpa))?;
    let source = match store.source {
        Source::Register(n) => vcpu.regs.get(n),
        Source::Immediate(_) => 0,
    };
    let done =
        os::apic_store(vcpu.guest.apic_page, gpa, &store, source, os::filter_ipi).ok_or(Fatal::Undecodable(gpa))?;
    if let Some((n, old)) = done.exchange {
        vcpu.regs.set(n, old as u64)?;
    }
    Ok(emulate::advance(store.len as u64)?)
}

/// The trapped ports (`virt::os::port_io`).
fn io(vcpu: &mut OsVcpu, q: IoAccess) -> Result<(), Fatal> {
    os::port_io(&vcpu.guest.ports, q, &mut vcpu.regs.rax).map_err(|e| match e {
        PortError::StringIo(q) => Fatal::StringIo(q),
        PortError::Sleep(typ) => Fatal::Sleep(typ),
    })?;
    Ok(emulate::skip_instruction()?)
}

/// XSETBV, executed for the guest when the CPU would accept it; #GP otherwise.
fn xsetbv(vcpu: &mut OsVcpu) -> Result<(), Fatal> {
    if !os::xsetbv(&vcpu.regs, vcpu.guest.xcr0_supported) {
        return Ok(inject_gp()?);
    }
    Ok(emulate::skip_instruction()?)
}

/// The OS cannot go on: say why, dump its state, and end the run (GUEST-END
/// how=failure, then as `exit=` says).
#[cold]
fn fail(vcpu: &mut OsVcpu, reason: ExitReason, fatal: Fatal) -> ! {
    let qualification = vmcs::read(ro::EXIT_QUALIFICATION);
    match fatal {
        Fatal::Vmcs(e) => error!("os guest: {e}"),
        Fatal::Leave(e) => error!("os guest: leaving VMX operation for wait-for-SIPI failed: {e}"),
        Fatal::Unhandled(r) => error!(
            "os guest: unhandled VM exit {} ({}), exit qualification {qualification:#x}, guest-physical {:#x}",
            r.basic(),
            r.name(),
            vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL)
        ),
        Fatal::EntryFailure(r) => super::dump::entry_failure(r, qualification),
        Fatal::Sleep(typ) => error!("os guest: sleep state SLP_TYP={typ} requested; only S5 (poweroff) is supported"),
        Fatal::StringIo(q) => error!("os guest: string I/O to a trapped port ({q}) is not emulated"),
        Fatal::ApicMoved(value) => error!(
            "os guest: IA32_APIC_BASE written with {value:#x}: moving the local APIC from {:#x} is not supported",
            vcpu.guest.apic_page
        ),
        Fatal::Undecodable(gpa) => error!(
            "os guest: a write to the local APIC at {gpa:#x} by an instruction this hypervisor does not decode (RIP {:#x})",
            vmcs::read(guest::RIP)
        ),
    }
    let _ = reason;
    super::dump::guest_state(&vcpu.regs, vcpu.exits, log::Level::Error);
    run::fail_and_end("the OS guest cannot go on")
}
