//! A virtual CPU: the guest's general registers, the host's way back, and the
//! glue to entry.s. Every guest this hypervisor runs (the proof guest, the OS)
//! is a `Vcpu<G>`: `G` holds what that kind of guest needs, and `dispatch` is
//! its VM-exit handler, which vm_exit_stub calls with the registers saved.

use super::instructions::{invvpid, VmFail};
use super::vmcs;
use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU32;
use x86::vmx::vmcs::{guest, ro};

core::arch::global_asm!(
    include_str!("../virt/gprs.s"),
    include_str!("entry.s"),
    HOST_RSP_SAVE = const offset_of!(Vcpu<()>, host_rsp_save),
    EXIT_STACK_TOP = const offset_of!(Vcpu<()>, exit_stack_top),
    DISPATCH = const offset_of!(Vcpu<()>, dispatch),
    FAST_CPUID = const offset_of!(Vcpu<()>, fast_cpuid),
    EXITS = const offset_of!(Vcpu<()>, exits),
    REGS_SIZE = const size_of::<GuestRegs>(),
    REG_RBX = const offset_of!(GuestRegs, rbx),
    REG_RDX = const offset_of!(GuestRegs, rdx),
    EXIT_REASON = const ro::EXIT_REASON,
    EXIT_INSTRUCTION_LEN = const ro::VMEXIT_INSTRUCTION_LEN,
    GUEST_RIP = const guest::RIP,
    GUEST_RFLAGS = const guest::RFLAGS,
    GUEST_INTERRUPTIBILITY = const guest::INTERRUPTIBILITY_STATE,
    BASIC_CPUID = const hvlogic::exit_reason::basic::CPUID,
    options(att_syntax)
);

extern "C" {
    fn vm_run(vcpu: *mut core::ffi::c_void, launched: u64) -> u64;
    fn vm_exit_stub();
}

/// What an exit handler returns: resume the guest, or stop and return to
/// whoever called `Vcpu::run` with this code.
pub const RESUME: u64 = 0;
/// The guest ended; the handler recorded how.
pub const STOP: u64 = 1;
/// `vm_run` result bit 63: VM entry failed; bits 0 and 6 then hold CF and ZF.
const ENTRY_FAILED: u64 = 1 << 63;

pub use crate::virt::regs::GuestRegs;

/// RSP, register 4 of an exit qualification, lives in the VMCS.
pub trait Rsp {
    /// Register `n` of an exit qualification (0 RAX ... 15 R15).
    fn get(&self, n: u8) -> u64;
    fn set(&mut self, n: u8, value: u64) -> Result<(), vmcs::VmcsError>;
}

impl Rsp for GuestRegs {
    fn get(&self, n: u8) -> u64 {
        match n {
            4 => vmcs::read(guest::RSP),
            _ => self.gpr(n),
        }
    }

    fn set(&mut self, n: u8, value: u64) -> Result<(), vmcs::VmcsError> {
        match n {
            4 => vmcs::write(guest::RSP, value),
            _ => {
                self.set_gpr(n, value);
                Ok(())
            }
        }
    }
}

/// A VM-exit handler: RESUME, or a stop code.
pub type Dispatch<G> = extern "C" fn(&mut Vcpu<G>) -> u64;

/// One virtual CPU. `regs` must stay first (HOST_RSP points at its end and
/// vm_exit_stub pushes into it), and the fields up to `dispatch` are at the
/// same offsets whatever `G` is (repr(C), `G` last), which entry.s relies on.
#[repr(C)]
pub struct Vcpu<G> {
    pub regs: GuestRegs,
    /// RSP for the exit handler (top of this vCPU's exit stack).
    exit_stack_top: u64,
    /// vm_run's own RSP while the guest runs.
    host_rsp_save: u64,
    dispatch: Dispatch<G>,
    /// Where entry.s's CPUID fast path counts the exits it answers; null
    /// while the fast path is off (`set_fast_cpuid`).
    fast_cpuid: *const AtomicU32,
    pub processor_index: u32,
    /// VM exits since the last launch.
    pub exits: u64,
    /// VMLAUNCH succeeded on this VMCS: later entries use VMRESUME.
    pub launched: bool,
    /// The VPID and the INVVPID type that flushes it, where VPID is on.
    pub vpid: Option<(u16, u64)>,
    pub guest: G,
}

/// How `Vcpu::run` came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    /// The handler stopped with this code.
    Stopped(u64),
    /// VMLAUNCH or VMRESUME fell through: VMfailInvalid or VMfailValid.
    EntryFailed { instruction: &'static str, fail: VmFail },
}

impl<G> Vcpu<G> {
    /// A vCPU with its own exit stack, for the VMCS current on this CPU.
    pub fn new(processor_index: u32, vpid: Option<(u16, u64)>, dispatch: Dispatch<G>, guest: G) -> &'static mut Self {
        const EXIT_STACK_SIZE: usize = 16 * 1024;
        alloc::boxed::Box::leak(alloc::boxed::Box::new(Vcpu {
            regs: GuestRegs::default(),
            exit_stack_top: crate::memory::alloc_stack(EXIT_STACK_SIZE),
            host_rsp_save: 0,
            dispatch,
            fast_cpuid: core::ptr::null(),
            processor_index,
            exits: 0,
            launched: false,
            vpid,
            guest,
        }))
    }

    /// With `Some(count)`, let entry.s answer CPUID exits for leaves that
    /// pass through unchanged, counting them in `count` and in `exits`,
    /// without calling `dispatch`; with None, every exit reaches `dispatch`.
    /// Only for a guest whose handler would do exactly that for such an exit
    /// and, while it is on, needs no other work at every exit.
    pub fn set_fast_cpuid(&mut self, count: Option<&'static AtomicU32>) {
        self.fast_cpuid = count.map_or(core::ptr::null(), |c| c as *const AtomicU32);
    }

    /// HOST_RSP: the end of `regs`, where vm_exit_stub starts pushing.
    pub fn host_rsp(&self) -> u64 {
        &self.regs as *const GuestRegs as u64 + size_of::<GuestRegs>() as u64
    }

    /// HOST_RIP.
    pub fn host_rip() -> u64 {
        vm_exit_stub as *const () as u64
    }

    /// Enter the guest (VMLAUNCH the first time, VMRESUME after) and handle
    /// its exits until the handler stops or an entry fails.
    pub fn run(&mut self) -> Return {
        let resuming = self.launched;
        let exits_before = self.exits;
        // SAFETY: this CPU's VMCS is current and complete, with HOST_RSP/HOST_RIP
        // pointing at this vCPU and vm_exit_stub; the vCPU is 'static.
        let r = unsafe { vm_run(self as *mut Self as *mut core::ffi::c_void, resuming as u64) };
        // An exit other than a VM-entry failure means VM entry succeeded: the
        // VMCS is launched (SDM Vol. 3C §25.1 "Overview": the launch state),
        // and a later failure came from the exit path's VMRESUME.
        let exits = self.exits - exits_before;
        let exited = exits > 0;
        let last_was_entry_failure = vmcs::read(x86::vmx::vmcs::ro::EXIT_REASON) & 1 << 31 != 0;
        if exits > 1 || (exits == 1 && !last_was_entry_failure) {
            self.launched = true;
        }
        if r & ENTRY_FAILED == 0 {
            return Return::Stopped(r);
        }
        let fail = if r & 1 != 0 {
            VmFail::Invalid
        } else {
            VmFail::Valid(vmcs::read(x86::vmx::vmcs::ro::VM_INSTRUCTION_ERROR) as u32)
        };
        Return::EntryFailed { instruction: if resuming || exited { "VMRESUME" } else { "VMLAUNCH" }, fail }
    }

    /// Flush this guest's VPID-tagged translations, as a MOV to CR3 or a
    /// fresh start would; false if INVVPID failed.
    pub fn flush_vpid(&self) -> bool {
        match self.vpid {
            // SAFETY: in VMX root operation; the type is one IA32_VMX_EPT_VPID_CAP reports.
            Some((vpid, kind)) => unsafe { invvpid(kind, [vpid as u64, 0]) }.is_ok(),
            None => true,
        }
    }
}
