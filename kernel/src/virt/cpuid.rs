//! CPUID as every guest sees it, under either backend: the CPU's answer as
//! `hvlogic::os_guest::cpuid` adjusts it (VMX, SMX and SVM hidden, the
//! hypervisor bit set, what the guest cannot use hidden), with OSXSAVE and
//! OSPKE from the guest's CR4, and the hypervisor's own leaves.

use hvlogic::os_guest::{self, Hidden};

/// CPUID leaves the hypervisor answers (0x40000000-0x4FFFFFFF are reserved
/// for software by SDM Vol. 2A "CPUID—CPU Identification"; every hypervisor
/// uses them).
pub const CPUID_HV_BASE: u32 = 0x4000_0000;
pub const CPUID_HV_CPU_INDEX: u32 = 0x4000_0001;
/// "VMXbringupHV" in EBX, ECX, EDX.
pub const CPUID_HV_SIGNATURE: [u32; 3] = [0x6258_4d56, 0x676e_6972, 0x5648_7075];

/// The guest's CPUID answer (EAX, EBX, ECX, EDX) for `leaf`/`subleaf` on
/// processor `processor_index`; `guest_cr4` is asked only for leaves 1 and 7.
#[inline(always)]
pub fn answer(
    leaf: u32,
    subleaf: u32,
    processor_index: u32,
    hidden: Hidden,
    guest_cr4: impl FnOnce() -> u64,
) -> [u32; 4] {
    match leaf {
        CPUID_HV_BASE => [CPUID_HV_CPU_INDEX, CPUID_HV_SIGNATURE[0], CPUID_HV_SIGNATURE[1], CPUID_HV_SIGNATURE[2]],
        CPUID_HV_CPU_INDEX => [processor_index, 0, 0, 0],
        0x4000_0002..=0x4fff_ffff => [0; 4],
        _ => {
            let r = raw_cpuid::cpuid!(leaf, subleaf);
            let v = os_guest::cpuid(leaf, subleaf, [r.eax, r.ebx, r.ecx, r.edx], hidden);
            // OSXSAVE and OSPKE mirror CR4.OSXSAVE and CR4.PKE: the guest's, not the host's.
            if leaf == 1 || leaf == 7 {
                os_guest::mirror_cr4(leaf, subleaf, v, guest_cr4())
            } else {
                v
            }
        }
    }
}
