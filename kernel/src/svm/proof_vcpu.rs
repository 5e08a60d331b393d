//! The proof guest's #VMEXIT handler under SVM. CPUID is the fast path
//! (entry.s answers passed-through leaves itself where the CPU saves the
//! next RIP); everything else goes through `slow_path`, which matches on
//! exit codes and hands what VMX and SVM share to `virt::proof`.

use super::emulate::{self, AC, DB, GP, UD};
use super::vcpu::{Vcpu, RESUME, STOP};
use crate::virt::proof::{self, note, Action, Proof};
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::os_guest::Hidden;
use hvlogic::svm::exit_code::{self as code, ioio};
use hvlogic::svm::vmcb::{control, save};
use log::warn;

pub type ProofVcpu = Vcpu<Proof>;

/// IA32_EFER's MSR number.
const EFER: u32 = 0xc000_0080;

/// End the guest with `ending` (the handler's stop).
fn end(vcpu: &mut ProofVcpu, ending: Ending) -> u64 {
    vcpu.guest.ending = Some(ending);
    STOP
}

/// The #VMEXIT handler (`Vcpu::dispatch`), on this CPU's exit stack, GIF clear.
pub extern "C" fn dispatch(vcpu: &mut ProofVcpu) -> u64 {
    vcpu.exits += 1;
    let vmcb = vcpu.vmcb;
    // An event queued for the last VMRUN was delivered or is in EXITINTINFO
    // (#VMEXIT clears EVENTINJ's valid bit; cleared here too, so no emulator
    // can deliver it twice).
    vmcb.set_u64(control::EVENTINJ, 0);
    let exit = vcpu.exit_code();
    if exit == code::CPUID && vcpu.exits <= vcpu.guest.exit_budget {
        let r = crate::virt::cpuid::answer(
            vcpu.regs.rax as u32,
            vcpu.regs.rcx as u32,
            vcpu.processor_index,
            Hidden::default(),
            || vmcb.u64(save::CR4),
        );
        let r = r.map(|v| v as u64);
        (vcpu.regs.rax, vcpu.regs.rbx, vcpu.regs.rcx, vcpu.regs.rdx) = (r[0], r[1], r[2], r[3]);
        return next_instruction(vcpu, None);
    }
    slow_path(vcpu, exit)
}

/// Step over the instruction that exited (to `next` where the exit gave it)
/// and resume; a guest whose instruction cannot be measured ends.
fn next_instruction(vcpu: &mut ProofVcpu, next: Option<u64>) -> u64 {
    let next = next.ok_or(()).or_else(|()| {
        let p = &vcpu.guest;
        let nested = p.mode.uses_ept();
        let vmcb = vcpu.vmcb;
        let mut read = |linear: u64| read_guest(p, &vmcb, nested, linear);
        emulate::next_instruction(&vmcb, vcpu.nrips, &mut read)
    });
    match next {
        Ok(rip) => {
            emulate::advance_to(&vcpu.vmcb, rip);
            resume(vcpu)
        }
        // Unreadable through the guest's page tables as they are now (the
        // guest changed them after its TLB mapped the instruction: seed=1 run
        // 934 on QEMU's `-cpu max`, whose FNSTCW overwrote its own PDPTE): the
        // guest's doing, a named ending. Readable but not an instruction the
        // handler measures: the handler's gap, the exit unexpected.
        Err(why) => {
            let rip = vcpu.vmcb.u64(save::RIP);
            let exit = vcpu.exit_code();
            let what = match why {
                emulate::Unstepped::Unreadable => "it cannot be read",
                emulate::Unstepped::Unmeasured => "it is not one this handler measures",
            };
            note!(
                vcpu.guest,
                error,
                "guest: cannot step over the instruction at RIP {rip:#x} (#VMEXIT {}; no NRIP save, and {what})",
                code::name(exit)
            );
            match why {
                emulate::Unstepped::Unreadable => end(vcpu, Ending::InsnUnreadable),
                emulate::Unstepped::Unmeasured => end(vcpu, Ending::UnexpectedSvm(exit as u16)),
            }
        }
    }
}

/// Resume the guest, delivering again an event the #VMEXIT interrupted.
fn resume(vcpu: &mut ProofVcpu) -> u64 {
    vcpu.redeliver_interrupted_event();
    RESUME
}

/// A byte of the guest at `linear`, as the guest sees it: through its own
/// paging and nested paging, or (without nested paging) through the
/// host-owned tables, which map guest-linear X to guest memory + X.
fn read_guest(p: &Proof, vmcb: &super::vmcb::Vmcb, nested: bool, linear: u64) -> Option<u8> {
    let gpa = if nested && vmcb.u64(save::CR0) & (1 << 31) != 0 {
        let mut read8 =
            |gpa: u64| p.guest_slice(gpa & !7, 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        emulate::linear_to_physical(vmcb, linear, &mut read8)?
    } else {
        linear & if vmcb.u64(save::CR0) & 1 == 0 { 0xf_ffff } else { u64::MAX }
    };
    p.guest_slice(gpa, 1).map(|b| b[0])
}

/// Inject an exception and resume.
fn inject(vcpu: &mut ProofVcpu, vector: u8, error_code: Option<u32>) -> u64 {
    vcpu.vmcb.inject_exception(vector, error_code);
    RESUME
}

/// What a shared handler asked for, done the SVM way; `next` is the next
/// RIP where the exit gave it (IOIO's EXITINFO2).
fn act(vcpu: &mut ProofVcpu, action: Action, next: Option<u64>) -> u64 {
    match action {
        Action::Next => next_instruction(vcpu, next),
        Action::Gp => inject(vcpu, GP, Some(0)),
        Action::End(ending) => end(vcpu, ending),
    }
}

#[cold]
#[inline(never)]
fn slow_path(vcpu: &mut ProofVcpu, exit: u64) -> u64 {
    if vcpu.exits > vcpu.guest.exit_budget {
        return end(vcpu, Ending::ExitBudget);
    }
    let vmcb = vcpu.vmcb;
    let info1 = vmcb.u64(control::EXITINFO1);
    vcpu.guest.ending_qualification = info1;
    match exit {
        code::IOIO => {
            let a = proof::io(&mut vcpu.guest, &mut vcpu.regs, ioio(info1));
            act(vcpu, a, Some(vmcb.u64(control::EXITINFO2)))
        }
        code::VMMCALL => {
            let a = proof::hypercall(&mut vcpu.guest, &mut vcpu.regs);
            act(vcpu, a, None)
        }
        // EFER is the guest's own (in the VMCB) and reads as on a CPU without
        // SVM: SVME clear. Writes are refused, as every other MSR's.
        code::MSR if info1 == 0 && vcpu.regs.rcx as u32 == EFER => {
            let efer = vmcb.u64(save::EFER) & !hvlogic::svm::EFER_SVME;
            (vcpu.regs.rax, vcpu.regs.rdx) = (efer & 0xffff_ffff, efer >> 32);
            next_instruction(vcpu, None)
        }
        code::MSR if info1 == 0 => {
            let a = proof::rdmsr(&mut vcpu.guest, &mut vcpu.regs);
            act(vcpu, a, None)
        }
        code::MSR => {
            let a = proof::wrmsr(&mut vcpu.guest, &vcpu.regs);
            act(vcpu, a, None)
        }
        code::HLT => end(vcpu, Ending::Hlt),
        code::SHUTDOWN => end(vcpu, Ending::TripleFault),
        code::NPF => {
            vcpu.guest.ending_value = vmcb.u64(control::EXITINFO2);
            end(vcpu, Ending::NestedPageFault)
        }
        code::VMRUN | code::VMLOAD | code::VMSAVE | code::STGI | code::CLGI | code::SKINIT | code::INVLPGA => {
            note!(vcpu.guest, info, "guest executed {}: SVM is hidden from guests, #UD injected", code::name(exit));
            inject(vcpu, UD, None)
        }
        // Given straight back (a delivery that raises the same exception again
        // is a loop without an instruction boundary: each one now exits).
        code::DB => inject(vcpu, DB, None),
        code::AC => inject(vcpu, AC, Some(0)),
        code::INTR => {
            // A physical interrupt is pending; the intercept leaves it pending.
            if let Some(v) = vcpu.guest.timer_vector.filter(|&v| crate::apic::requested(v)) {
                vcpu.guest.ending_value = v as u64;
                return end(vcpu, Ending::HostTimer);
            }
            warn!("guest: an external interrupt is pending (the host uses none): taken in the host and dismissed");
            // SAFETY: GIF and RFLAGS.IF open for one instruction: the IDT has a
            // gate for every vector the host expects (an unexpected one is
            // reported as the #NP of its missing gate).
            unsafe { core::arch::asm!("stgi", "sti", "nop", "cli", "clgi", options(nomem, nostack)) };
            resume(vcpu)
        }
        // An SMI (routine on real boards: USB legacy, thermal, power) is held
        // while GIF is 0: open GIF for SMM to run in the host, then go on.
        code::SMI => {
            // SAFETY: GIF is opened with RFLAGS.IF clear: only SMM (and a
            // pending NMI, which the host's handler takes) runs.
            unsafe { core::arch::asm!("stgi", "clgi", options(nomem, nostack)) };
            resume(vcpu)
        }
        code::NMI => {
            proof::park_if_ending();
            note!(vcpu.guest, error, "guest: an NMI arrived while the guest ran (none is expected)");
            end(vcpu, Ending::UnexpectedSvm(exit as u16))
        }
        code::CR3_WRITE | code::CR4_WRITE | code::CR0_SEL_WRITE => {
            let m = if vcpu.guest.mode == GuestMode::ProtectedNoEpt {
                "refused, the guest's page tables and paging mode belong to the hypervisor"
            } else {
                "refused"
            };
            note!(vcpu.guest, info, "guest: {}: {m}", code::name(exit));
            end(vcpu, Ending::CrWriteRefused)
        }
        code::INVALID => {
            super::dump::vmrun_failure(vcpu);
            end(vcpu, Ending::EntryFailed)
        }
        other => end(vcpu, Ending::UnexpectedSvm(other as u16)),
    }
}
