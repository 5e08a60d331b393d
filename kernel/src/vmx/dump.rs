//! Explaining failures: VM-instruction errors by name, VM-entry failures with
//! their qualification, and a guest's state when it ended.

use super::instructions::VmFail;
use super::vcpu::GuestRegs;
use super::vmcs::read;
use hvlogic::exit_qual::{entry_failure_qualification, GPR_NAMES};
use hvlogic::exit_reason::ExitReason;
use log::{error, log, Level};
use x86::vmx::vmcs::{control as ctl, guest, ro};

/// VMLAUNCH/VMRESUME fell through with VMfailInvalid or VMfailValid.
pub fn vm_instruction_failure(instruction: &str, fail: VmFail) {
    error!("VM entry failed: {instruction}: {fail}");
    error!(
        "  controls: pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}",
        read(ctl::PINBASED_EXEC_CONTROLS),
        read(ctl::PRIMARY_PROCBASED_EXEC_CONTROLS),
        read(ctl::SECONDARY_PROCBASED_EXEC_CONTROLS),
        read(ctl::VMEXIT_CONTROLS),
        read(ctl::VMENTRY_CONTROLS)
    );
    super::snapshot::explain_failure();
}

/// A VM exit with bit 31 set: VM entry failed while loading guest state (SDM
/// Vol. 3C §27.8 "VM-Entry Failures During or After Loading Guest State").
pub fn entry_failure(reason: ExitReason, qualification: u64) {
    error!(
        "VM entry failed: {} (exit reason {} with bit 31 set), exit qualification {qualification:#x}: {}",
        reason.name(),
        reason.basic(),
        entry_failure_qualification(reason.basic(), qualification)
    );
    super::snapshot::explain_failure();
}

/// The guest's state from the VMCS and the saved registers.
pub fn guest_state(r: &GuestRegs, exits: u64, level: Level) {
    log!(
        level,
        "  guest RIP={:#x} RSP={:#x} RFLAGS={:#x} CR0={:#x} CR3={:#x} CR4={:#x}",
        read(guest::RIP),
        read(guest::RSP),
        read(guest::RFLAGS),
        read(guest::CR0),
        read(guest::CR3),
        read(guest::CR4)
    );
    log!(
        level,
        "  guest CS={:#06x} base={:#x} limit={:#x} AR={:#x}; SS={:#06x} AR={:#x}; DS={:#06x} AR={:#x}",
        read(guest::CS_SELECTOR),
        read(guest::CS_BASE),
        read(guest::CS_LIMIT),
        read(guest::CS_ACCESS_RIGHTS),
        read(guest::SS_SELECTOR),
        read(guest::SS_ACCESS_RIGHTS),
        read(guest::DS_SELECTOR),
        read(guest::DS_ACCESS_RIGHTS)
    );
    log!(
        level,
        "  guest {}={:#x} {}={:#x} {}={:#x} {}={:#x} {}={:#x} {}={:#x} {}={:#x}",
        GPR_NAMES[0],
        r.rax,
        GPR_NAMES[3],
        r.rbx,
        GPR_NAMES[1],
        r.rcx,
        GPR_NAMES[2],
        r.rdx,
        GPR_NAMES[6],
        r.rsi,
        GPR_NAMES[7],
        r.rdi,
        GPR_NAMES[5],
        r.rbp
    );
    log!(level, "  exit qualification={:#x} guest-physical={:#x} guest-linear={:#x} interruptibility={:#x} activity={} exits={}",
        read(ro::EXIT_QUALIFICATION), read(ro::GUEST_PHYSICAL_ADDR_FULL), read(ro::GUEST_LINEAR_ADDR),
        read(guest::INTERRUPTIBILITY_STATE), read(guest::ACTIVITY_STATE), exits);
}
