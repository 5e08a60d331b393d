//! The guest's memory layout and its calls to the hypervisor: one definition,
//! used by the Rust side and, through `const` operands, by guest.s.

/// Bytes of guest memory, mapped at guest-physical (or, without EPT,
/// guest-linear) address 0.
pub const GUEST_MEM_SIZE: u64 = 256 * 1024;
/// Where the guest image is copied.
pub const IMAGE: u64 = 0x8000;
/// Top of the guest's stack.
pub const STACK_TOP: u64 = 0x7000;
/// The parameter block the hypervisor fills before each launch.
pub const PARAMS: u64 = 0x7f00;
/// The bench's samples: BENCH_ITERATIONS u32s.
pub const SAMPLES: u64 = 0x1_0000;
pub const BENCH_ITERATIONS: u64 = 10_000;
/// Page tables for the modes that need guest paging (ProtectedEpt: used by
/// the guest through EPT; ProtectedNoEpt: host-owned copies elsewhere).
pub const PAGE_DIRECTORY: u64 = 0x1000;
pub const PAGE_TABLE: u64 = 0x2000;
/// The reset vector page (guest-physical 4 GiB - 4 KiB).
pub const RESET_PAGE_GPA: u64 = 0xffff_f000;

/// Guest selectors of the guest's own GDT (guest.s).
pub const GUEST_CS: u16 = 0x08;
pub const GUEST_DS: u16 = 0x10;

/// VMCALL functions (EAX); results in EAX.
pub const HC_DONE: u64 = 1;
pub const HC_REPORT_SAMPLES: u64 = 2;
pub const HC_OK: u64 = 0;
/// -1: as the 32-bit guest sees it in EAX, 0xffffffff.
pub const HC_REFUSED: u64 = u64::MAX;

/// The MSR the guest reads through the MSR bitmap (trapped, answered by the
/// hypervisor): the one that says whether firmware allows hardware
/// virtualization, reading "locked, off" (it is hidden from guests):
/// IA32_FEATURE_CONTROL for VMX, VM_CR (SVMDIS and LOCK) for SVM. The
/// hypervisor writes which one into the parameter block.
pub const fn trapped_msr(virt: hvlogic::summary::Virt) -> (u32, u64) {
    match virt {
        hvlogic::summary::Virt::Svm => (hvlogic::svm::vm_cr::VM_CR, hvlogic::svm::vm_cr::GUEST_VIEW),
        _ => (hvlogic::feature_control::IA32_FEATURE_CONTROL, hvlogic::feature_control::LOCK),
    }
}
/// The MSR the bitmap lets the guest read directly: IA32_APIC_BASE, the
/// real one (it reads the same twice, with the APIC enabled). Not IA32_TSC:
/// QEMU 7.2's TCG reads it as 0 (its RDMSR has no case for it;
/// docs/proof-guest.md).
pub const PASS_THROUGH_MSR: u32 = 0x1b;

/// What the guest program does (`GuestParams::kind`).
pub const KIND_NORMAL: u32 = 1;
pub const KIND_HOSTILE: u32 = 2;
pub const KIND_BENCH: u32 = 3;

/// CPUID leaves the hypervisor answers (cpuid.rs), which guest.s reads.
pub use super::cpuid::CPUID_HV_CPU_INDEX;

#[repr(C)]
pub struct GuestParams {
    pub kind: u32,
    /// The hostile step (HostileStep::number), 0 otherwise.
    pub step: u32,
    /// The trapped MSR and the low half of what it must read (`trapped_msr`).
    pub msr: u32,
    pub msr_value: u32,
}
