//! The proof guest's vCPU: what it carries, and its VM-exit handler. CPUID is
//! the fast path: no allocation, no lock, no logging, a handful of
//! VMREAD/VMWRITEs. Everything else goes through `slow_path`, which matches on
//! named exit reasons and either emulates, injects, or ends the guest.

use super::emulate::{self, inject, inject_gp, unblock_nmis, UD};
use super::instructions::vmread_unchecked;
use super::vcpu::{Rsp, Vcpu, RESUME, STOP};
use super::vmcs;
use crate::virt::proof::{self, note, Action};
use hvlogic::exit_qual::{CrAccess, CrAccessKind, Interruption, IoAccess};
use hvlogic::exit_reason::{basic, ExitReason};
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::os_guest::Hidden;
use log::{error, warn};
use x86::vmx::vmcs::{guest, ro};

pub use crate::virt::proof::Proof;

pub type ProofVcpu = Vcpu<Proof>;

/// End the guest with `ending` (the handler's stop).
fn end(vcpu: &mut ProofVcpu, ending: Ending) -> u64 {
    vcpu.guest.ending = Some(ending);
    STOP
}

/// The exit handler (`Vcpu::dispatch`), on this CPU's exit stack with the guest registers saved.
pub extern "C" fn dispatch(vcpu: &mut ProofVcpu) -> u64 {
    vcpu.exits += 1;
    // SAFETY: this CPU's VMCS is current during every VM exit; the field exists.
    let reason = unsafe { vmread_unchecked(ro::EXIT_REASON) } as u32;
    if reason == basic::CPUID as u32 && vcpu.exits <= vcpu.guest.exit_budget {
        emulate::cpuid(&mut vcpu.regs, vcpu.processor_index, Hidden::default());
        return next_instruction(vcpu);
    }
    slow_path(vcpu, ExitReason(reason))
}

/// Step over the instruction that exited, with the single-step trap it would
/// have raised; a VMCS that cannot take it ends the guest.
#[inline(always)]
fn next_instruction(vcpu: &mut ProofVcpu) -> u64 {
    match emulate::skip_instruction() {
        Ok(()) => RESUME,
        Err(e) => {
            error!("guest: {e}");
            end(vcpu, Ending::EntryFailed)
        }
    }
}

/// Resume after an injection, or end the guest if the VMCS refused it.
fn injected(vcpu: &mut ProofVcpu, r: Result<(), vmcs::VmcsError>) -> u64 {
    match r {
        Ok(()) => RESUME,
        Err(e) => {
            error!("guest: {e}");
            end(vcpu, Ending::EntryFailed)
        }
    }
}

#[cold]
#[inline(never)]
fn slow_path(vcpu: &mut ProofVcpu, reason: ExitReason) -> u64 {
    // An external interrupt this exit acknowledged (the "acknowledge interrupt
    // on exit" control) is in service at the local APIC until EOI, whatever
    // ends the guest: left there, it would hold back its class for good. The
    // exit-budget check used to come first and skip the EOI (seen in review
    // while chasing a hang of guest=fuzz on penryn; the fuzzer now checks
    // that no vector is left in service after each run).
    let interrupt = (reason.basic() == basic::EXTERNAL_INTERRUPT && !reason.entry_failure()).then(|| {
        crate::apic::end_of_interrupt();
        Interruption(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u32).vector()
    });
    if vcpu.exits > vcpu.guest.exit_budget {
        return end(vcpu, Ending::ExitBudget);
    }
    let qualification = vmcs::read(ro::EXIT_QUALIFICATION);
    vcpu.guest.ending_qualification = qualification;
    if reason.entry_failure() {
        super::dump::entry_failure(reason, qualification);
        return end(vcpu, Ending::EntryFailed);
    }
    match reason.basic() {
        basic::IO_INSTRUCTION => {
            let a = proof::io(&mut vcpu.guest, &mut vcpu.regs, IoAccess::decode(qualification));
            act(vcpu, a)
        }
        basic::VMCALL => {
            let a = proof::hypercall(&mut vcpu.guest, &mut vcpu.regs);
            act(vcpu, a)
        }
        basic::RDMSR => {
            let a = proof::rdmsr(&mut vcpu.guest, &mut vcpu.regs);
            act(vcpu, a)
        }
        basic::WRMSR => {
            let a = proof::wrmsr(&mut vcpu.guest, &vcpu.regs);
            act(vcpu, a)
        }
        basic::CR_ACCESS => cr_access(vcpu, CrAccess::decode(qualification)),
        basic::HLT => end(vcpu, Ending::Hlt),
        basic::TRIPLE_FAULT => end(vcpu, Ending::TripleFault),
        basic::EPT_VIOLATION => {
            vcpu.guest.ending_value = vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL);
            end(vcpu, Ending::EptViolation)
        }
        basic::PREEMPTION_TIMER => end(vcpu, Ending::PreemptionTimer),
        basic::VMXON
        | basic::VMXOFF
        | basic::VMCLEAR
        | basic::VMPTRLD
        | basic::VMPTRST
        | basic::VMREAD
        | basic::VMWRITE
        | basic::VMLAUNCH
        | basic::VMRESUME
        | basic::INVEPT
        | basic::INVVPID
        | basic::VMFUNC => {
            note!(vcpu.guest, info, "guest executed {}: VMX is hidden from guests, #UD injected", reason.name());
            injected(vcpu, inject(UD, None))
        }
        basic::EXCEPTION_OR_NMI => {
            let info = Interruption(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u32);
            if !info.is_nmi() && emulate::REFLECTED_EXCEPTIONS & 1 << info.vector() != 0 {
                return injected(vcpu, emulate::reflect(info, vmcs::read(ro::EXIT_QUALIFICATION)));
            }
            if info.is_nmi() {
                proof::park_if_ending();
                note!(vcpu.guest, error, "guest: an NMI arrived while the guest ran (none is expected)");
                unblock_nmis();
            }
            vcpu.guest.ending_value = info.vector() as u64;
            end(vcpu, Ending::Unexpected(basic::EXCEPTION_OR_NMI))
        }
        basic::EXTERNAL_INTERRUPT => {
            // Acknowledged on exit and ended above: dismiss it and go on,
            // unless it is the host's timer ending the guest's time.
            if interrupt.is_some() && vcpu.guest.timer_vector == interrupt {
                return end(vcpu, Ending::HostTimer);
            }
            warn!(
                "guest: external interrupt, vector {}, acknowledged and dismissed (the host uses no interrupts)",
                interrupt.unwrap_or(0)
            );
            RESUME
        }
        other => end(vcpu, Ending::Unexpected(other)),
    }
}

/// What a shared handler (`virt::proof`) asked for, done the VMX way.
fn act(vcpu: &mut ProofVcpu, action: Action) -> u64 {
    match action {
        Action::Next => next_instruction(vcpu),
        Action::Gp => injected(vcpu, inject_gp()),
        Action::End(ending) => end(vcpu, ending),
    }
}

/// MOV to/from CR3 is emulated where EPT makes CR3 the guest's own; without
/// EPT a CR3 load is refused (the page tables are the hypervisor's). CR8 is
/// the guest's own task priority, kept in the vCPU. Any other access that
/// exits touches host-owned CR0/CR4 bits and is refused.
fn cr_access(vcpu: &mut ProofVcpu, q: CrAccess) -> u64 {
    match (q.cr, q.kind) {
        (3, CrAccessKind::MovToCr) => {
            let value = vcpu.regs.get(q.gpr);
            if value >> vcpu.guest.maxphyaddr != 0 {
                note!(vcpu.guest, warn, "guest: {q} = {value:#x}: beyond the physical-address width, #GP injected");
                return injected(vcpu, inject_gp());
            }
            if vcpu.guest.mode == GuestMode::ProtectedNoEpt {
                vcpu.guest.ending_value = value;
                note!(
                    vcpu.guest,
                    info,
                    "guest: {q} = {value:#x}: refused, the guest's page tables belong to the hypervisor"
                );
                return end(vcpu, Ending::CrWriteRefused);
            }
            // A real MOV to CR3 flushes this VPID's translations; VMWRITE does not.
            match vmcs::write(guest::CR3, value) {
                Ok(()) if vcpu.flush_vpid() => next_instruction(vcpu),
                _ => end(vcpu, Ending::CrWriteRefused),
            }
        }
        (8, CrAccessKind::MovToCr) => {
            // MOV to CR8 with bits 63:4 set is #GP(0) (SDM Vol. 2B
            // "MOV—Move to/from Control Registers").
            let value = vcpu.regs.get(q.gpr);
            if value >> 4 != 0 {
                return injected(vcpu, inject_gp());
            }
            vcpu.guest.cr8 = value;
            next_instruction(vcpu)
        }
        (8, CrAccessKind::MovFromCr) => match vcpu.regs.set(q.gpr, vcpu.guest.cr8) {
            Ok(()) => next_instruction(vcpu),
            Err(_) => end(vcpu, Ending::CrWriteRefused),
        },
        (3, CrAccessKind::MovFromCr) => {
            let cr3 = vmcs::read(guest::CR3);
            match vcpu.regs.set(q.gpr, cr3) {
                Ok(()) => next_instruction(vcpu),
                Err(_) => end(vcpu, Ending::CrWriteRefused),
            }
        }
        _ => {
            vcpu.guest.ending_value = if q.kind == CrAccessKind::MovToCr { vcpu.regs.get(q.gpr) } else { 0 };
            note!(vcpu.guest, info, "guest: {q}: changes host-owned bits, refused");
            end(vcpu, Ending::CrWriteRefused)
        }
    }
}
