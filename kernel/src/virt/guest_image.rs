//! The proof guest's program (guest.s), assembled once for both backends
//! with the layout's constants, and copied into each guest's memory.

use super::layout::*;
use core::mem::offset_of;
use hvlogic::guest_plan::HostileStep;
use hvlogic::summary::Virt;

core::arch::global_asm!(
    include_str!("guest.s"),
    IMAGE = const IMAGE,
    STACK_TOP = const STACK_TOP,
    PARAMS = const PARAMS,
    P_KIND = const offset_of!(GuestParams, kind),
    P_STEP = const offset_of!(GuestParams, step),
    P_MSR = const offset_of!(GuestParams, msr),
    P_MSR_VALUE = const offset_of!(GuestParams, msr_value),
    SAMPLES = const SAMPLES,
    BENCH_ITERATIONS = const BENCH_ITERATIONS,
    GUEST_CS = const GUEST_CS,
    GUEST_DS = const GUEST_DS,
    HC_DONE = const HC_DONE,
    HC_REPORT_SAMPLES = const HC_REPORT_SAMPLES,
    KIND_NORMAL = const KIND_NORMAL,
    KIND_HOSTILE = const KIND_HOSTILE,
    KIND_BENCH = const KIND_BENCH,
    CPUID_HV_CPU_INDEX = const CPUID_HV_CPU_INDEX,
    HC_REFUSED_32 = const HC_REFUSED as u32,
    PASS_THROUGH_MSR = const PASS_THROUGH_MSR,
    VM_HSAVE_PA = const hvlogic::svm::VM_HSAVE_PA,
    VM_CR = const hvlogic::svm::vm_cr::VM_CR,
    VM_CR_GUEST_VIEW = const hvlogic::svm::vm_cr::GUEST_VIEW,
    STEP_READ_OUTSIDE = const HostileStep::ReadOutside.number(),
    STEP_WRITE_OUTSIDE = const HostileStep::WriteOutside.number(),
    STEP_VMXON = const HostileStep::Vmxon.number(),
    STEP_BAD_VMCALL = const HostileStep::BadVmcall.number(),
    STEP_GARBAGE_CR3 = const HostileStep::GarbageCr3.number(),
    STEP_TRIPLE_FAULT = const HostileStep::TripleFault.number(),
    STEP_NEVER_ENDS = const HostileStep::NeverEnds.number(),
    STEP_VMRUN = const HostileStep::Vmrun.number(),
    STEP_VMLOAD = const HostileStep::Vmload.number(),
    STEP_VMSAVE = const HostileStep::Vmsave.number(),
    STEP_STGI = const HostileStep::Stgi.number(),
    STEP_CLGI = const HostileStep::Clgi.number(),
    STEP_SKINIT = const HostileStep::Skinit.number(),
    STEP_EFER_SVME = const HostileStep::EferSvme.number(),
    STEP_HSAVE_PA = const HostileStep::HsavePa.number(),
    STEP_VM_CR = const HostileStep::VmCr.number(),
    options(att_syntax)
);

extern "C" {
    static guest_image_start: u8;
    static guest_image_end: u8;
    static guest_pm_entry_offset: u32;
    static guest_gdt_offset: u32;
    static guest_hypercall_offset: u32;
}

/// VMMCALL (APM Vol. 3 "VMMCALL"): SVM's hypercall, in place of VMCALL.
const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];

/// Copy the guest image to guest address IMAGE of `memory` (the guest's
/// memory from guest address 0), with the hypercall instruction of `virt`.
pub fn load(memory: &mut [u8], virt: Virt) {
    // SAFETY: the symbols delimit the guest image in .rodata and give offsets inside it.
    let (image, hypercall) = unsafe {
        let start = &guest_image_start as *const u8;
        let image = core::slice::from_raw_parts(start, &guest_image_end as *const u8 as usize - start as usize);
        (image, guest_hypercall_offset as usize)
    };
    let at = IMAGE as usize;
    memory[at..at + image.len()].copy_from_slice(image);
    if virt == Virt::Svm {
        memory[at + hypercall..at + hypercall + 3].copy_from_slice(&VMMCALL);
    }
}

/// Guest addresses of the 32-bit entry (for a guest started in protected
/// mode) and of the guest's GDT.
pub fn protected_mode_entry() -> (u64, u64) {
    // SAFETY: symbols emitted by guest.s.
    unsafe { (IMAGE + guest_pm_entry_offset as u64, IMAGE + guest_gdt_offset as u64) }
}

/// Write the parameter block the program reads (guest memory at `memory`).
pub fn write_params(memory: u64, kind: u32, step: u32, virt: Virt) {
    let (msr, value) = trapped_msr(virt);
    let params = (memory + PARAMS) as *mut GuestParams;
    // SAFETY: the parameter block lies inside the guest's memory, which the hypervisor owns.
    unsafe { params.write_volatile(GuestParams { kind, step, msr, msr_value: value as u32 }) };
}
