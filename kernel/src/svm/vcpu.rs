//! A virtual CPU under SVM: the guest's general registers, its VMCB, the
//! host's way back, and the glue to entry.s. Every SVM guest (the proof
//! guest, the OS) is a `Vcpu<G>`: `G` holds what that kind of guest needs,
//! and `dispatch` is its #VMEXIT handler, which entry.s calls with the
//! registers saved and GIF clear.

use super::vmcb::Vmcb;
use crate::virt::regs::GuestRegs;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use hvlogic::svm::exit_code;
use hvlogic::svm::vmcb::{control, event, save};

core::arch::global_asm!(
    include_str!("../virt/gprs.s"),
    include_str!("entry.s"),
    HOST_RSP_SAVE = const offset_of!(Vcpu<()>, host_rsp_save),
    EXIT_STACK_TOP = const offset_of!(Vcpu<()>, exit_stack_top),
    DISPATCH = const offset_of!(Vcpu<()>, dispatch),
    FAST_CPUID = const offset_of!(Vcpu<()>, fast_cpuid),
    FAST_UNTIL = const offset_of!(Vcpu<()>, fast_until),
    VMCB_PA = const offset_of!(Vcpu<()>, vmcb_pa),
    HOST_STATE_PA = const offset_of!(Vcpu<()>, host_state_pa),
    EXITS = const offset_of!(Vcpu<()>, exits),
    REGS_SIZE = const size_of::<GuestRegs>(),
    REG_RAX = const offset_of!(GuestRegs, rax),
    REG_RBX = const offset_of!(GuestRegs, rbx),
    REG_RDX = const offset_of!(GuestRegs, rdx),
    REG_RSI = const offset_of!(GuestRegs, rsi),
    SAVE_RAX = const save::RAX,
    SAVE_RIP = const save::RIP,
    SAVE_RFLAGS = const save::RFLAGS,
    EXITCODE = const control::EXITCODE,
    INTERRUPT_SHADOW = const control::INTERRUPT_SHADOW,
    NRIP = const control::NRIP,
    TLB_CONTROL = const control::TLB_CONTROL,
    EXITCODE_CPUID = const exit_code::CPUID,
    options(att_syntax)
);

extern "C" {
    fn svm_run(vcpu: *mut core::ffi::c_void) -> u64;
    fn svm_vmexit_first();
    fn svm_vmexit_host_loaded();
}

/// Single-step traps taken in the host after a #VMEXIT (`leaked_single_step`).
static LEAKED_SINGLE_STEPS: AtomicU64 = AtomicU64::new(0);

/// From the exception handler, before it touches GS: whether a #DB at `rip`
/// is a single-step trap the guest's RFLAGS.TF scheduled that an emulator
/// delivered to the host after the #VMEXIT, between VMRUN and the host's
/// VMLOAD (GS is still the guest's there). Bochs 2.7 does that: its #VMEXIT
/// keeps the trap pending (its VMX VM exit clears it), although the
/// instruction it was for was intercepted, or the #DB it raised was. The
/// host never sets RFLAGS.TF, so such a #DB is the guest's; it is counted and
/// the host goes on (the handler returns to `rip`, the next instruction).
pub fn leaked_single_step(vector: u64, rip: u64, rflags: u64) -> bool {
    const DB: u64 = 1;
    const RFLAGS_TF: u64 = 1 << 8;
    let window = svm_vmexit_first as *const () as u64..=svm_vmexit_host_loaded as *const () as u64;
    if vector != DB || rflags & RFLAGS_TF != 0 || !window.contains(&rip) {
        return false;
    }
    LEAKED_SINGLE_STEPS.fetch_add(1, Ordering::Relaxed);
    true
}

/// How many single-step traps `leaked_single_step` has let go, on every CPU.
pub fn leaked_single_steps() -> u64 {
    LEAKED_SINGLE_STEPS.load(Ordering::Relaxed)
}

/// What an exit handler returns: resume the guest, or stop and return to
/// whoever called `Vcpu::run` with this code.
pub const RESUME: u64 = 0;
/// The guest ended; the handler recorded how.
pub const STOP: u64 = 1;

/// A #VMEXIT handler: RESUME, or a stop code.
pub type Dispatch<G> = extern "C" fn(&mut Vcpu<G>) -> u64;

/// One virtual CPU. `regs` must stay first (entry.s pushes into it), and the
/// fields up to `exits` are at the same offsets whatever `G` is (repr(C),
/// `G` last), which entry.s relies on. `regs.rax` is the guest's RAX while a
/// handler runs; entry.s moves it to and from the VMCB.
#[repr(C)]
pub struct Vcpu<G> {
    pub regs: GuestRegs,
    /// RSP for the exit handler (top of this vCPU's exit stack).
    exit_stack_top: u64,
    /// svm_run's own RSP while the guest runs.
    host_rsp_save: u64,
    dispatch: Dispatch<G>,
    /// Where entry.s's CPUID fast path counts the exits it answers; null
    /// while the fast path is off (`set_fast_cpuid`).
    fast_cpuid: *const AtomicU32,
    /// The fast path answers only while `exits` is below this; the exit
    /// that reaches it goes to `dispatch`, which keeps the exit budget
    /// (`set_fast_until`).
    fast_until: u64,
    vmcb_pa: u64,
    /// The VMCB-format page the host's FS, GS, TR, LDTR and system-call MSRs
    /// are kept in (this CPU's `Own::host_state`).
    host_state_pa: u64,
    /// #VMEXITs since the last launch.
    pub exits: u64,
    pub vmcb: Vmcb,
    pub processor_index: u32,
    /// The CPU saves the next RIP on #VMEXIT (NRIP save).
    pub nrips: bool,
    pub guest: G,
}

/// Room below a vCPU, for a stack that runs into it. From VMRUN to the
/// host's VMLOAD, RSP is the end of `regs` (entry.s), and Bochs 2.7
/// delivers a guest's single-step trap there, in the host
/// (`leaked_single_step`): the exception's frame, the registers its entry
/// pushes and `exception_dispatch`'s own frame go below `regs`. Without this
/// room they overwrote what the heap had put before the vCPU (another CPU's
/// vCPU, or a free block's header): guest=fuzz seed=3 runs 10..19 on Bochs's
/// `ryzen` with 2 CPUs broke the heap's free list and the other CPU's
/// handler state.
const STACK_BELOW: usize = 8 * 1024;

/// A vCPU with STACK_BELOW bytes before it (`Vcpu::new`).
#[repr(C)]
struct Slot<G> {
    below: [u8; STACK_BELOW],
    vcpu: Vcpu<G>,
}

impl<G> Vcpu<G> {
    /// A vCPU with its own exit stack and a fresh VMCB; `host_state` holds
    /// this CPU's VMSAVE'd host state.
    pub fn new(
        processor_index: u32,
        host_state: u64,
        nrips: bool,
        dispatch: Dispatch<G>,
        guest: G,
    ) -> &'static mut Self {
        const EXIT_STACK_SIZE: usize = 16 * 1024;
        let vmcb = Vmcb::new();
        let slot = alloc::boxed::Box::leak(alloc::boxed::Box::new(Slot {
            below: [0; STACK_BELOW],
            vcpu: Vcpu {
                regs: GuestRegs::default(),
                exit_stack_top: crate::memory::alloc_stack(EXIT_STACK_SIZE),
                host_rsp_save: 0,
                dispatch,
                fast_cpuid: core::ptr::null(),
                fast_until: u64::MAX,
                vmcb_pa: vmcb.pa(),
                host_state_pa: host_state,
                exits: 0,
                vmcb,
                processor_index,
                nrips,
                guest,
            },
        }));
        &mut slot.vcpu
    }

    /// With `Some(count)`, let entry.s answer CPUID exits for leaves that
    /// pass through unchanged, counting them in `count` and in `exits`,
    /// without calling `dispatch`; with None, every exit reaches `dispatch`.
    /// Only where the CPU saves the next RIP, and only for a guest whose
    /// handler would do exactly that for such an exit.
    pub fn set_fast_cpuid(&mut self, count: Option<&'static AtomicU32>) {
        let on = count.filter(|_| self.nrips);
        self.fast_cpuid = on.map_or(core::ptr::null(), |c| c as *const AtomicU32);
    }

    /// Hand every exit from the `exits`-th on to `dispatch`, the fast
    /// path's too: a handler with an exit budget sees the exit that exceeds
    /// it (a guest looping on a passed-through CPUID leaf with interrupts
    /// masked would otherwise never reach it).
    pub fn set_fast_until(&mut self, exits: u64) {
        self.fast_until = exits;
    }

    /// Enter the guest and handle its exits until the handler stops; the
    /// handler's code. VMRUN's own refusals arrive as exits (VMEXIT_INVALID).
    pub fn run(&mut self) -> u64 {
        // SAFETY: EFER.SVME is set on this CPU, the VMCB and the host state area
        // are this CPU's pages, and the vCPU is 'static.
        unsafe { svm_run(self as *mut Self as *mut core::ffi::c_void) }
    }

    /// The #VMEXIT's code (`hvlogic::svm::exit_code`). QEMU 7.2's TCG
    /// stores VMEXIT_INVALID (-1) and VMEXIT_BUSY (-2) as 32-bit values
    /// (`exit_code::normalize`).
    #[inline(always)]
    pub fn exit_code(&self) -> u64 {
        exit_code::normalize(self.vmcb.u64(control::EXITCODE))
    }

    /// Before resuming: an event whose delivery the #VMEXIT interrupted
    /// (EXITINTINFO) is delivered again, unless the handler injected one
    /// (APM Vol. 2 §15.7.2 "Intercepts During IDT Interrupt Delivery"). A
    /// software interrupt (INTn) or software exception (INT3, INTO) is not:
    /// RIP still points at its instruction, which runs again and raises it
    /// anew (as KVM does it for the exceptions).
    #[inline(always)]
    pub fn redeliver_interrupted_event(&self) {
        let interrupted = self.vmcb.u64(control::EXITINTINFO);
        if interrupted & event::VALID == 0 || self.vmcb.u64(control::EVENTINJ) & event::VALID != 0 {
            return;
        }
        let software = match event::kind(interrupted) {
            event::TYPE_SOFT_INT => true,
            event::TYPE_EXCEPTION => matches!(event::vector(interrupted), 3 | 4),
            _ => false,
        };
        if !software {
            self.vmcb.set_u64(control::EVENTINJ, interrupted);
        }
    }
}
