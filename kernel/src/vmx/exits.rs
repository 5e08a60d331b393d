//! The VM-exit dispatcher. CPUID is the fast path: no allocation, no lock, no
//! logging, a handful of VMREAD/VMWRITEs. Everything else goes through
//! `slow_path`, which matches on named exit reasons.

use super::guest::Vcpu;
use super::instructions::vmread_unchecked;
use super::layout::*;
use super::vmcs;
use crate::run;
use hvlogic::exit_qual::{CrAccess, CrAccessKind, Interruption, IoAccess};
use hvlogic::exit_reason::{basic, ExitReason};
use hvlogic::guest_plan::{Ending, GuestMode};
use log::{error, info, warn};
use x86::vmx::vmcs::{control as ctl, guest, ro};

/// The dispatcher's "resume the guest".
const RESUME: u64 = 0;

/// Exits beyond this end the guest: the VMX-preemption timer bounds time
/// without exits, this bounds a guest that exits forever.
const EXIT_BUDGET: u64 = 1_000_000;

const COM1: u16 = 0x3f8;
const COM1_LSR: u16 = COM1 + 5;
/// LSR: transmitter holding register empty, transmitter empty.
const LSR_IDLE: u64 = 0x60;
const CPUID_01_ECX_VMX: u32 = 1 << 5;
const CPUID_01_ECX_HYPERVISOR: u32 = 1 << 31;

/// Called by vm_exit_stub on this CPU's exit stack with the guest registers saved.
#[no_mangle]
extern "C" fn vmexit_dispatch(vcpu: &mut Vcpu) -> u64 {
    vcpu.exits += 1;
    // SAFETY: this CPU's VMCS is current during every VM exit; the field exists.
    let reason = unsafe { vmread_unchecked(ro::EXIT_REASON) } as u32;
    if reason == basic::CPUID as u32 && vcpu.exits <= EXIT_BUDGET {
        cpuid(vcpu);
        return next_instruction(vcpu);
    }
    slow_path(vcpu, ExitReason(reason))
}

/// CPUID, answered by the hypervisor: the host's values with VMX hidden and
/// the "hypervisor present" bit set; leaves 0x40000000.. describe this hypervisor.
#[inline(always)]
fn cpuid(vcpu: &mut Vcpu) {
    let leaf = vcpu.regs.rax as u32;
    let [a, b, c, d] = match leaf {
        CPUID_HV_BASE => [CPUID_HV_CPU_INDEX, CPUID_HV_SIGNATURE[0], CPUID_HV_SIGNATURE[1], CPUID_HV_SIGNATURE[2]],
        CPUID_HV_CPU_INDEX => [vcpu.processor_index, 0, 0, 0],
        0x4000_0002..=0x4fff_ffff => [0; 4],
        _ => {
            let r = raw_cpuid::cpuid!(leaf, vcpu.regs.rcx as u32);
            let ecx = if leaf == 1 { (r.ecx & !CPUID_01_ECX_VMX) | CPUID_01_ECX_HYPERVISOR } else { r.ecx };
            [r.eax, r.ebx, ecx, r.edx]
        }
    };
    vcpu.regs.rax = a as u64;
    vcpu.regs.rbx = b as u64;
    vcpu.regs.rcx = c as u64;
    vcpu.regs.rdx = d as u64;
}

/// Step over the instruction that exited (its length from the VMCS, SDM
/// 28.2.5). Blocking by STI and by MOV SS lasts one instruction: skipping the
/// instruction ends it too (SDM Vol. 3C 25.4.2, Table 25-3).
#[inline(always)]
fn next_instruction(vcpu: &mut Vcpu) -> u64 {
    const BLOCKING_BY_STI_OR_MOV_SS: u64 = 0b11;
    // SAFETY: this CPU's VMCS is current during every VM exit; the fields exist.
    let (len, rip, blocking) = unsafe {
        (
            vmread_unchecked(ro::VMEXIT_INSTRUCTION_LEN),
            vmread_unchecked(guest::RIP),
            vmread_unchecked(guest::INTERRUPTIBILITY_STATE),
        )
    };
    let mut written = vmcs::write(guest::RIP, rip + len);
    if blocking & BLOCKING_BY_STI_OR_MOV_SS != 0 {
        written =
            written.and_then(|()| vmcs::write(guest::INTERRUPTIBILITY_STATE, blocking & !BLOCKING_BY_STI_OR_MOV_SS));
    }
    match written {
        Ok(()) => RESUME,
        Err(e) => {
            error!("guest: {e}");
            vcpu.end(Ending::EntryFailed)
        }
    }
}

#[cold]
#[inline(never)]
fn slow_path(vcpu: &mut Vcpu, reason: ExitReason) -> u64 {
    if vcpu.exits > EXIT_BUDGET {
        return vcpu.end(Ending::ExitBudget);
    }
    let qualification = vmcs::read(ro::EXIT_QUALIFICATION);
    vcpu.ending_qualification = qualification;
    if reason.entry_failure() {
        super::dump::entry_failure(reason, qualification);
        return vcpu.end(Ending::EntryFailed);
    }
    match reason.basic() {
        basic::IO_INSTRUCTION => io(vcpu, IoAccess::decode(qualification)),
        basic::VMCALL => vmcall(vcpu),
        basic::RDMSR => rdmsr(vcpu),
        basic::WRMSR => {
            warn!("guest: WRMSR {:#x}: not allowed, #GP injected", vcpu.regs.rcx as u32);
            inject_gp()
        }
        basic::CR_ACCESS => cr_access(vcpu, CrAccess::decode(qualification)),
        basic::HLT => vcpu.end(Ending::Hlt),
        basic::TRIPLE_FAULT => vcpu.end(Ending::TripleFault),
        basic::EPT_VIOLATION => {
            vcpu.ending_value = vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL);
            vcpu.end(Ending::EptViolation)
        }
        basic::PREEMPTION_TIMER => vcpu.end(Ending::PreemptionTimer),
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
            info!("guest executed {}: VMX is hidden from guests, #UD injected", reason.name());
            inject(6, None)
        }
        basic::EXCEPTION_OR_NMI => {
            let info = Interruption(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u32);
            if info.is_nmi() {
                if run::is_ending() {
                    run::park();
                }
                error!("guest: an NMI arrived while the guest ran (none is expected)");
                unblock_nmis();
            }
            vcpu.ending_value = info.vector() as u64;
            vcpu.end(Ending::Unexpected(basic::EXCEPTION_OR_NMI))
        }
        basic::EXTERNAL_INTERRUPT => {
            // Acknowledged on exit (the exit control): dismiss it and go on.
            let info = Interruption(vmcs::read(ro::VMEXIT_INTERRUPTION_INFO) as u32);
            crate::apic::end_of_interrupt();
            warn!(
                "guest: external interrupt, vector {}, acknowledged and dismissed (the host uses no interrupts)",
                info.vector()
            );
            RESUME
        }
        other => vcpu.end(Ending::Unexpected(other)),
    }
}

/// Port I/O: the guest's own COM1 (a 16550 that is always ready); each line it
/// writes goes to the real COM1 with this CPU's prefix. Any other port, or
/// string I/O, ends the guest.
fn io(vcpu: &mut Vcpu, q: IoAccess) -> u64 {
    if q.string || !(COM1..COM1 + 8).contains(&q.port) {
        vcpu.ending_value = q.port as u64;
        warn!("guest: {q}: refused (only COM1 is emulated)");
        return vcpu.end(Ending::Unexpected(basic::IO_INSTRUCTION));
    }
    if q.is_in {
        let value = if q.port == COM1_LSR { LSR_IDLE } else { 0 };
        let mask = (1u64 << (8 * q.size as u32)) - 1;
        vcpu.regs.rax = (vcpu.regs.rax & !mask) | value;
    } else if q.port == COM1 {
        put_char(vcpu, vcpu.regs.rax as u8);
    }
    next_instruction(vcpu)
}

fn put_char(vcpu: &mut Vcpu, byte: u8) {
    if byte == b'\n' || vcpu.line_len == vcpu.line.len() {
        flush_line(vcpu);
    }
    if byte != b'\n' && byte != b'\r' {
        vcpu.line[vcpu.line_len] = byte;
        vcpu.line_len += 1;
    }
}

/// Forward what the guest wrote since its last newline.
pub fn flush_line(vcpu: &mut Vcpu) {
    if vcpu.line_len > 0 {
        let text = core::str::from_utf8(&vcpu.line[..vcpu.line_len]).unwrap_or("<not UTF-8>");
        info!("guest: {text}");
        vcpu.line_len = 0;
    }
}

/// Hypercalls: EAX = function, arguments in EBX and ECX, result in EAX.
fn vmcall(vcpu: &mut Vcpu) -> u64 {
    let (function, b, c) = (vcpu.regs.rax as u32 as u64, vcpu.regs.rbx as u32 as u64, vcpu.regs.rcx as u32 as u64);
    match function {
        HC_DONE => {
            return vcpu.end(if b == 0 { Ending::Success } else { Ending::GuestReportedFailure(b as u32) });
        }
        HC_REPORT_SAMPLES => {
            let room = vcpu.samples.capacity() as u64;
            let taken = if c <= room && b % 4 == 0 { vcpu.guest_slice(b, c * 4) } else { None };
            match taken {
                Some(bytes) => {
                    // Within the capacity reserved at set-up: no allocation here.
                    vcpu.samples.clear();
                    vcpu.samples.extend(bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
                    vcpu.regs.rax = HC_OK;
                }
                None => {
                    warn!("guest: VMCALL report-samples({b:#x}, {c}) refused: not inside guest memory, or more than {room} samples");
                    vcpu.regs.rax = HC_REFUSED;
                }
            }
        }
        _ => {
            warn!("guest: VMCALL function {function:#x} unknown: refused");
            vcpu.regs.rax = HC_REFUSED;
        }
    }
    next_instruction(vcpu)
}

fn rdmsr(vcpu: &mut Vcpu) -> u64 {
    let msr = vcpu.regs.rcx as u32;
    match msr {
        TRAPPED_MSR => {
            vcpu.regs.rax = TRAPPED_MSR_VALUE;
            vcpu.regs.rdx = 0;
            next_instruction(vcpu)
        }
        _ => {
            warn!("guest: RDMSR {msr:#x}: not emulated, #GP injected");
            inject_gp()
        }
    }
}

/// MOV to/from CR3 is emulated where EPT makes CR3 the guest's own; without
/// EPT a CR3 load is refused (the page tables are the hypervisor's). Any
/// other access that exits touches host-owned CR0/CR4 bits and is refused.
fn cr_access(vcpu: &mut Vcpu, q: CrAccess) -> u64 {
    match (q.cr, q.kind) {
        (3, CrAccessKind::MovToCr) => {
            let value = vcpu.regs.get(q.gpr);
            if value >> vcpu.maxphyaddr != 0 {
                warn!("guest: {q} = {value:#x}: beyond the physical-address width, #GP injected");
                return inject_gp();
            }
            if vcpu.mode == GuestMode::ProtectedNoEpt {
                vcpu.ending_value = value;
                info!("guest: {q} = {value:#x}: refused, the guest's page tables belong to the hypervisor");
                return vcpu.end(Ending::CrWriteRefused);
            }
            // A real MOV to CR3 flushes this VPID's translations; VMWRITE does not.
            match vmcs::write(guest::CR3, value) {
                Ok(()) if vcpu.flush_vpid() => next_instruction(vcpu),
                _ => vcpu.end(Ending::CrWriteRefused),
            }
        }
        (3, CrAccessKind::MovFromCr) => {
            let cr3 = vmcs::read(guest::CR3);
            match vcpu.regs.set(q.gpr, cr3) {
                Ok(()) => next_instruction(vcpu),
                Err(_) => vcpu.end(Ending::CrWriteRefused),
            }
        }
        _ => {
            vcpu.ending_value = if q.kind == CrAccessKind::MovToCr { vcpu.regs.get(q.gpr) } else { 0 };
            info!("guest: {q}: changes host-owned bits, refused");
            vcpu.end(Ending::CrWriteRefused)
        }
    }
}

/// After a VM exit caused by an NMI, NMIs stay blocked until the next IRET
/// (SDM Vol. 3C, "VMX Non-Root Operation": an NMI that causes a VM exit blocks
/// later NMIs once the exit completes). The host took no NMI through its IDT,
/// so it executes an IRET to itself to lift the blocking.
fn unblock_nmis() {
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

fn inject_gp() -> u64 {
    // #GP pushes an error code, except in real mode (SDM Vol. 3C 27.2.1.3).
    let protected = vmcs::read(guest::CR0) & 1 != 0;
    inject(13, protected.then_some(0))
}

/// Inject a hardware exception on the next VM entry (SDM Vol. 3C 25.8.3); the
/// instruction is not skipped (a fault).
fn inject(vector: u8, error_code: Option<u32>) -> u64 {
    const VALID: u64 = 1 << 31;
    const HARDWARE_EXCEPTION: u64 = 3 << 8;
    const DELIVER_ERROR_CODE: u64 = 1 << 11;
    let mut info = VALID | HARDWARE_EXCEPTION | vector as u64;
    if let Some(code) = error_code {
        info |= DELIVER_ERROR_CODE;
        let _ = vmcs::write(ctl::VMENTRY_EXCEPTION_ERR_CODE, code as u64);
    }
    let _ = vmcs::write(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, info);
    RESUME
}
