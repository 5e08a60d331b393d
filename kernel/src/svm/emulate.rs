//! What every SVM exit handler shares: stepping over the instruction that
//! exited (from the saved next RIP, or by reading it where the CPU has no
//! NRIP save), injecting an exception, and the guest's code and paging as
//! the VMCB describes them.

use super::vmcb::Vmcb;
use hvlogic::exit_qual::next_rip;
use hvlogic::guest_mem::{self, Paging};
use hvlogic::svm::insn;
use hvlogic::svm::vmcb::{attrib, control, save};

/// Exception vectors (APM Vol. 2 §8.2 "Vectors").
pub const DB: u8 = 1;
pub const UD: u8 = 6;
pub const GP: u8 = 13;
pub const AC: u8 = 17;

const EFER_LMA: u64 = 1 << 10;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
/// DR6.BS: the #DB was a single step.
const DR6_BS: u64 = 1 << 14;

/// The guest runs 64-bit code: EFER.LMA and CS.L.
pub fn code64(vmcb: &Vmcb) -> bool {
    vmcb.u64(save::EFER) & EFER_LMA != 0 && vmcb.read::<u16>(save::CS + save::ATTRIB) & attrib::L != 0
}

/// The guest's paging registers, for a walk of its page tables.
pub fn paging(vmcb: &Vmcb) -> Paging {
    Paging { cr0: vmcb.u64(save::CR0), cr3: vmcb.u64(save::CR3), cr4: vmcb.u64(save::CR4), efer: vmcb.u64(save::EFER) }
}

/// The bytes at the guest's CS:RIP, read through `read_linear` (a guest
/// linear address to the byte there, or None): CS's base does not count in
/// 64-bit mode, and outside it linear addresses are 32 bits. With them, how
/// many could be read (the rest are 0).
pub fn code_at_rip(vmcb: &Vmcb, read_linear: &mut dyn FnMut(u64) -> Option<u8>) -> ([u8; insn::MAX_LENGTH], usize) {
    let rip = vmcb.u64(save::RIP);
    let code64 = code64(vmcb);
    let linear = if code64 { rip } else { vmcb.u64(save::CS + save::BASE).wrapping_add(rip) };
    let mut code = [0u8; insn::MAX_LENGTH];
    let mut readable = 0;
    for (i, byte) in code.iter_mut().enumerate() {
        let at = linear.wrapping_add(i as u64);
        match read_linear(if code64 { at } else { at & 0xffff_ffff }) {
            Some(b) => *byte = b,
            None => break,
        }
        readable = i + 1;
    }
    (code, readable)
}

/// The guest runs 16-bit code: not 64-bit, and CS.D clear (real mode, or a
/// 16-bit segment); its IP wraps at 64 KiB.
fn code16(vmcb: &Vmcb) -> bool {
    !code64(vmcb) && vmcb.read::<u16>(save::CS + save::ATTRIB) & attrib::DB == 0
}

/// A guest-linear address to guest-physical through the guest's own page
/// tables, read with `read_gpa` (8 bytes at a guest-physical address).
pub fn linear_to_physical(vmcb: &Vmcb, linear: u64, read_gpa: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
    let p = paging(vmcb);
    guest_mem::translate(&p, linear, read_gpa)
}

/// Where the instruction that exited ends: the saved next RIP where the CPU
/// has NRIP save (APM Vol. 2 §15.7.1 "State Saved on Exit"), else the
/// instruction read at CS:RIP and measured (`hvlogic::svm::insn`).
pub fn next_instruction(
    vmcb: &Vmcb,
    nrips: bool,
    read_linear: &mut dyn FnMut(u64) -> Option<u8>,
) -> Result<u64, Unstepped> {
    if nrips {
        return Ok(vmcb.u64(control::NRIP));
    }
    let (code, readable) = code_at_rip(vmcb, read_linear);
    let len = match insn::length(&code, code64(vmcb)) {
        Some(len) if len <= readable => len as u64,
        // Measured on bytes that could not be read, or the bytes that could
        // end before an instruction does: the guest's memory, not the handler.
        Some(_) => return Err(Unstepped::Unreadable),
        None if readable < insn::MAX_LENGTH => return Err(Unstepped::Unreadable),
        // All there, and an instruction the handler does not measure.
        None => return Err(Unstepped::Unmeasured),
    };
    let rip = vmcb.u64(save::RIP);
    if code16(vmcb) {
        return Ok((rip.wrapping_add(len)) & 0xffff);
    }
    Ok(next_rip(rip, len, code64(vmcb)))
}

/// Why `next_instruction` could not step over the instruction that exited.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unstepped {
    /// Its bytes cannot be read through the guest's paging as it is now.
    Unreadable,
    /// Its bytes are there, and it is not an instruction the handler measures
    /// (a gap in `insn::length`: the hypervisor's, not the guest's).
    Unmeasured,
}

/// Continue at `next` as the instruction's completion would: the interrupt
/// shadow and RFLAGS.RF end, and with RFLAGS.TF the single-step #DB the
/// instruction would have raised is injected (DR6.BS set).
pub fn advance_to(vmcb: &Vmcb, next: u64) {
    vmcb.set_u64(save::RIP, next);
    let shadow = vmcb.u64(control::INTERRUPT_SHADOW);
    if shadow & 1 != 0 {
        vmcb.set_u64(control::INTERRUPT_SHADOW, shadow & !1);
    }
    let rflags = vmcb.u64(save::RFLAGS);
    if rflags & RFLAGS_RF != 0 {
        vmcb.set_u64(save::RFLAGS, rflags & !RFLAGS_RF);
    }
    if rflags & RFLAGS_TF != 0 {
        vmcb.set_u64(save::DR6, vmcb.u64(save::DR6) | DR6_BS);
        vmcb.inject_exception(DB, None);
    }
}
