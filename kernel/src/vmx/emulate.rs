//! What every guest's exit handler shares: CPUID as guests see it, stepping
//! over an instruction, injecting an exception, and lifting NMI blocking.

use super::instructions::vmread_unchecked;
use super::vcpu::GuestRegs;
use super::vmcs::{self, VmcsError};
use hvlogic::exit_qual::{crosses_4gib, next_rip, Interruption};
use hvlogic::os_guest::Hidden;
use x86::vmx::vmcs::{control as ctl, guest, ro};

/// Answer the guest's CPUID (leaf in EAX, subleaf in ECX) as
/// `virt::cpuid::answer` does for every guest.
#[inline(always)]
pub fn cpuid(regs: &mut GuestRegs, processor_index: u32, hidden: Hidden) {
    let [a, b, c, d] = crate::virt::cpuid::answer(regs.rax as u32, regs.rcx as u32, processor_index, hidden, || {
        vmcs::read(guest::CR4)
    });
    regs.rax = a as u64;
    regs.rbx = b as u64;
    regs.rcx = c as u64;
    regs.rdx = d as u64;
}

/// Interruptibility state: blocking by STI and by MOV SS (SDM Vol. 3C
/// Table 25-3 "Format of Interruptibility State").
const BLOCKING_BY_STI_OR_MOV_SS: u64 = 0b11;
/// Blocking by SMI: VM entry requires it 0 outside SMM (SDM Vol. 3C §27.3.1.5
/// "Checks on Guest Non-Register State"), where these guests always run.
/// Bochs 2.7 reports it set after a wait-for-SIPI state (its SIPI exit leaves
/// SMIs masked), so it is cleared with the others.
const BLOCKING_BY_SMI: u64 = 1 << 2;

/// Step over the instruction that exited (its length from the VMCS, SDM Vol.
/// 3C §28.2.5 "Information for VM Exits Due to Instruction Execution"), as
/// `advance` does.
#[inline(always)]
pub fn skip_instruction() -> Result<(), VmcsError> {
    // SAFETY: this CPU's VMCS is current during every VM exit; the field exists.
    advance(unsafe { vmread_unchecked(ro::VMEXIT_INSTRUCTION_LEN) })
}

/// RFLAGS.RF: set, it suppresses the instruction breakpoint of the next
/// instruction, and the processor clears it once an instruction completes
/// (SDM Vol. 3B §18.3.1.1 "Instruction-Breakpoint Exception Condition").
const RFLAGS_RF: u64 = 1 << 16;

/// Step over `len` bytes of instruction (for exits whose instruction length
/// the VMCS does not give, the hypervisor decoded it), and do what the
/// instruction's completion does:
/// - end RFLAGS.RF, and blocking by STI and MOV SS (they last one instruction);
/// - with RFLAGS.TF set, the single-step #DB the instruction would have
///   raised, made pending (pending debug exceptions BS, SDM Vol. 3C §25.4.2
///   "Guest Non-Register State").
///
/// Outside 64-bit code EIP wraps at 4 GiB (`hvlogic::exit_qual::next_rip`;
/// the guest fuzzer's wrap template found the RIP of 1_0000_0000 this wrote
/// before, which VM entry refuses).
#[inline(always)]
pub fn advance(len: u64) -> Result<(), VmcsError> {
    // SAFETY: this CPU's VMCS is current during every VM exit; the fields exist.
    let (rip, blocking) = unsafe { (vmread_unchecked(guest::RIP), vmread_unchecked(guest::INTERRUPTIBILITY_STATE)) };
    let next = if crosses_4gib(rip, len) { next_rip(rip, len, code64()) } else { rip + len };
    vmcs::write(guest::RIP, next)?;
    end_blocking(blocking)?;
    // SAFETY: as above.
    let rflags = unsafe { vmread_unchecked(guest::RFLAGS) };
    if rflags & RFLAGS_RF != 0 {
        vmcs::write(guest::RFLAGS, rflags & !RFLAGS_RF)?;
    }
    single_step_trap(rflags)
}

/// The guest runs 64-bit code: IA-32e mode guest and CS.L (access rights bit 13).
fn code64() -> bool {
    const CS_L: u64 = 1 << 13;
    vmcs::read(ctl::VMENTRY_CONTROLS) & hvlogic::controls::entry::IA32E_MODE_GUEST as u64 != 0
        && vmcs::read(guest::CS_ACCESS_RIGHTS) & CS_L != 0
}

/// The single-step #DB the emulated instruction would have raised, made
/// pending: with RFLAGS.TF set, unless IA32_DEBUGCTL.BTF asks for single steps
/// on branches only (SDM Vol. 3B §18.4.3 "Single-Stepping on Branches"; no
/// instruction this hypervisor emulates is a branch).
#[inline(always)]
fn single_step_trap(rflags: u64) -> Result<(), VmcsError> {
    const RFLAGS_TF: u64 = 1 << 8;
    const DEBUGCTL_BTF: u64 = 1 << 1;
    const PENDING_BS: u64 = 1 << 14;
    if rflags & RFLAGS_TF != 0 && vmcs::read(guest::IA32_DEBUGCTL_FULL) & DEBUGCTL_BTF == 0 {
        vmcs::write(guest::PENDING_DBG_EXCEPTIONS, vmcs::read(guest::PENDING_DBG_EXCEPTIONS) | PENDING_BS)?;
    }
    Ok(())
}

/// Clear blocking by SMI if the CPU reported it (see BLOCKING_BY_SMI), before
/// resuming a guest after an exit that did not step over an instruction.
pub fn clear_smi_blocking() -> Result<(), VmcsError> {
    let blocking = vmcs::read(guest::INTERRUPTIBILITY_STATE);
    if blocking & BLOCKING_BY_SMI != 0 {
        vmcs::write(guest::INTERRUPTIBILITY_STATE, blocking & !BLOCKING_BY_SMI)?;
    }
    Ok(())
}

/// Exception vectors injected into guests (SDM Vol. 3A Table 6-1
/// "Protected-Mode Exceptions and Interrupts").
pub const DB: u8 = 1;
pub const UD: u8 = 6;
pub const GP: u8 = 13;
pub const AC: u8 = 17;

/// The exceptions a proof guest's exception bitmap intercepts, to give them
/// straight back: a guest can make the delivery of #DB or #AC raise the
/// same exception again (a data breakpoint on the stack or the IVT, a
/// misaligned stack with alignment checking), a loop with no instruction
/// boundary in which neither the VMX-preemption timer nor an interrupt ever
/// exits: the host would hang (KVM's CVE-2015-8104 and CVE-2015-5307; the
/// guest fuzzer found the #DB loop, seed=11 run 404 on skylake). Intercepted,
/// each delivery is a VM exit and a VM entry, where the guest's budgets apply.
pub const REFLECTED_EXCEPTIONS: u32 = 1 << DB | 1 << AC;

/// Give the guest the #DB or #AC its exception bitmap intercepted, as the
/// CPU would have delivered it. An intercepted #DB leaves DR6 and DR7 as they
/// were (SDM Vol. 3C §28.1 "Architectural State Before a VM Exit"), and the
/// delivery would have written DR6 and cleared DR7.GD (SDM Vol. 3B §18.2.3
/// "Debug Status Register (DR6)", §18.2.4 "Debug Control Register (DR7)"):
/// DR6 gets the exit qualification (`hvlogic::exit_qual::dr6_for_debug_exit`)
/// and GD is cleared here (IA32_DEBUGCTL.LBR too, which delivery clears;
/// Vol. 3B §18.4.1 "IA32_DEBUGCTL MSR"). The error code (#AC's) is the one
/// the exit gave. INT1 (ICEBP, a privileged software exception) exits with
/// RIP at the instruction (SDM Vol. 3C §28.3.3 "Saving RIP, RSP, RFLAGS, and
/// SSP"), so it goes back as what it was, with its length, and returns past it.
pub fn reflect(info: Interruption, qualification: u64) -> Result<(), VmcsError> {
    const DELIVER_ERROR_CODE: u32 = 1 << 11;
    const DR7_GD: u64 = 1 << 13;
    const DEBUGCTL_LBR: u64 = 1 << 0;
    const PRIVILEGED_SOFTWARE_EXCEPTION: u8 = 5;
    if info.vector() == DB && info.kind() == PRIVILEGED_SOFTWARE_EXCEPTION {
        const VALID_INT1: u64 = 1 << 31 | (PRIVILEGED_SOFTWARE_EXCEPTION as u64) << 8 | DB as u64;
        end_one_instruction_blocking()?;
        vmcs::write(ctl::VMENTRY_INSTRUCTION_LEN, vmcs::read(ro::VMEXIT_INSTRUCTION_LEN))?;
        return vmcs::write(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, VALID_INT1);
    }
    if info.vector() == DB {
        let dr6: u64;
        // SAFETY: reading DR6 at CPL 0 has no side effect.
        unsafe { core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack, preserves_flags)) };
        let dr6 = hvlogic::exit_qual::dr6_for_debug_exit(dr6, qualification);
        // SAFETY: the host uses no debug register; DR6 is the guest's (VM
        // entry and exit leave it alone) and this value has its fixed bits.
        unsafe { core::arch::asm!("mov dr6, {}", in(reg) dr6, options(nomem, nostack, preserves_flags)) };
        let dr7 = vmcs::read(guest::DR7);
        if dr7 & DR7_GD != 0 {
            vmcs::write(guest::DR7, dr7 & !DR7_GD)?;
        }
        let debugctl = vmcs::read(guest::IA32_DEBUGCTL_FULL);
        if debugctl & DEBUGCTL_LBR != 0 {
            vmcs::write(guest::IA32_DEBUGCTL_FULL, debugctl & !DEBUGCTL_LBR)?;
        }
    }
    let code = info.0 & DELIVER_ERROR_CODE != 0;
    inject(info.vector(), code.then(|| vmcs::read(ro::VMEXIT_INTERRUPTION_ERR_CODE) as u32))
}

/// End blocking by STI and MOV SS (and by SMI, see BLOCKING_BY_SMI) before an
/// event is injected: the delivery ends them anyway, and left set with
/// RFLAGS.TF 1 they would make VM entry demand a pending single-step trap
/// that an exit caused by #DB saved as none (SDM Vol. 3C §27.3.1.5 "Checks on
/// Guest Non-Register State", §28.3.4 "Saving Non-Register State").
fn end_one_instruction_blocking() -> Result<(), VmcsError> {
    end_blocking(vmcs::read(guest::INTERRUPTIBILITY_STATE))
}

/// Write the interruptibility state `blocking` without blocking by STI, MOV
/// SS and SMI, if it had any.
#[inline(always)]
fn end_blocking(blocking: u64) -> Result<(), VmcsError> {
    const ENDED: u64 = BLOCKING_BY_STI_OR_MOV_SS | BLOCKING_BY_SMI;
    if blocking & ENDED != 0 {
        vmcs::write(guest::INTERRUPTIBILITY_STATE, blocking & !ENDED)?;
    }
    Ok(())
}

/// The fault-class exceptions (SDM Vol. 3A Table 6-1 "Protected-Mode
/// Exceptions and Interrupts"), #DB aside: it is a fault or a trap by cause.
const FAULTS: u32 = {
    // #DE #BR #UD #NM #TS #NP #SS #GP #PF #MF #AC #XM #VE #CP
    let vectors = [0u8, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21];
    let (mut mask, mut i) = (0, 0);
    while i < vectors.len() {
        mask |= 1 << vectors[i];
        i += 1;
    }
    mask
};

/// Inject hardware exception `vector` on the next VM entry (SDM Vol. 3C
/// §25.8.3 "VM-Entry Controls for Event Injection"); the instruction is not
/// skipped (a fault). A fault delivered by the CPU pushes RFLAGS with RF set,
/// so that the handler's IRET does not hit an instruction breakpoint on the
/// faulting instruction again (SDM Vol. 3B §18.3.1.1 "Instruction-Breakpoint
/// Exception Condition"); injection pushes the guest's RFLAGS as they are,
/// so RF is set here.
pub fn inject(vector: u8, error_code: Option<u32>) -> Result<(), VmcsError> {
    const VALID: u64 = 1 << 31;
    const HARDWARE_EXCEPTION: u64 = 3 << 8;
    const DELIVER_ERROR_CODE: u64 = 1 << 11;
    end_one_instruction_blocking()?;
    if FAULTS & 1 << vector != 0 {
        let rflags = vmcs::read(guest::RFLAGS);
        if rflags & RFLAGS_RF == 0 {
            vmcs::write(guest::RFLAGS, rflags | RFLAGS_RF)?;
        }
    }
    let mut info = VALID | HARDWARE_EXCEPTION | vector as u64;
    if let Some(code) = error_code {
        info |= DELIVER_ERROR_CODE;
        vmcs::write(ctl::VMENTRY_EXCEPTION_ERR_CODE, code as u64)?;
    }
    vmcs::write(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, info)
}

/// #GP(0): with an error code in protected mode, without one in real mode
/// (SDM Vol. 3C §27.2.1.3 "VM-Entry Control Fields": a real-mode guest must
/// not be given one).
pub fn inject_gp() -> Result<(), VmcsError> {
    let protected = vmcs::read(guest::CR0) & 1 != 0;
    inject(GP, protected.then_some(0))
}

/// Inject an NMI on the next VM entry (SDM Vol. 3C §25.8.3 "VM-Entry Controls
/// for Event Injection", type 2).
pub fn inject_nmi() -> Result<(), VmcsError> {
    const VALID_NMI: u64 = 1 << 31 | 2 << 8 | 2;
    vmcs::write(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, VALID_NMI)
}

/// After a VM exit caused by an NMI, NMIs stay blocked until the next IRET
/// (SDM Vol. 3C §28.1 "Architectural State Before a VM Exit": an NMI that
/// causes a VM exit blocks later NMIs once the exit completes). The host took
/// no NMI through its IDT, so it executes an IRET to itself to lift the
/// blocking.
pub fn unblock_nmis() {
    // SAFETY: builds an interrupt frame for the next instruction on the current
    // stack (SS, RSP, RFLAGS, CS, RIP) and returns to it with IRETQ.
    unsafe {
        core::arch::asm!(
            "mov {tmp}, rsp",
            "push {ss}",
            "push {tmp}",
            "pushfq",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
            ss = const crate::pcb::KERNEL_DS as u64,
            cs = const crate::pcb::KERNEL_CS as u64,
        );
    }
}
