//! The control-area checks: the VMRUN intercept and the ASID (APM Vol. 2
//! §15.5.1 "Basic Operation"), the permission maps (§15.10.1 "I/O
//! Permissions Map", §15.11 "MSR Intercepts"), NMI virtualization
//! (§15.21.10 "NMI Virtualization") and nested paging (§15.25.3 "Enabling
//! Nested Paging", §15.25.4 "Nested Paging and VMRUN/#VMEXIT").

use super::{rule_def, Cpu, Ctx, Out, Rule, SEC_BASIC, SEC_IOPM, SEC_MSRPM, SEC_NP_ENABLE, SEC_NP_VMRUN, SEC_VNMI};
use crate::svm::features::edx;
use crate::svm::vmcb::{control, intercept1, intercept2, iopm, msrpm, save, vintr};

rule_def!(VMRUN_INTERCEPT, "svm.intercept.vmrun", SEC_BASIC, "The VMRUN intercept bit must be set");
rule_def!(
    MSRPM_ADDRESS,
    "svm.msrpm.address",
    SEC_MSRPM,
    "The last byte of the 8 KiB MSR permissions map (MSRPM_BASE_PA, bits 11:0 ignored) must lie below 2^MAXPHYADDR - 1"
);
rule_def!(
    IOPM_ADDRESS,
    "svm.iopm.address",
    SEC_IOPM,
    "The last byte of the 12 KiB I/O permissions map (IOPM_BASE_PA, bits 11:0 ignored) must lie below 2^MAXPHYADDR - 1"
);
rule_def!(ASID_ZERO, "svm.asid.zero", SEC_BASIC, "The guest ASID must not be 0 (the host's)");
rule_def!(
    VNMI_INTERCEPT,
    "svm.vnmi.nmi_intercept",
    SEC_VNMI,
    "With NMI virtualization (V_NMI_ENABLE on a CPU with VNMI), the NMI intercept must be set"
);
rule_def!(
    NP_HOST_PAGING,
    "svm.np.host_paging",
    SEC_NP_ENABLE,
    "With nested paging (NP_ENABLE on a CPU with NP), the host's CR0.PG must be 1"
);
rule_def!(
    NCR3_MBZ,
    "svm.np.ncr3_mbz",
    SEC_NP_VMRUN,
    "With nested paging, nCR3 bits 63:MAXPHYADDR must be 0 (the host's long-mode CR3 format)"
);
rule_def!(
    G_PAT,
    "svm.np.g_pat",
    SEC_NP_VMRUN,
    "With nested paging, every G_PAT field must be a supported memory type (0, 1, 4, 5, 6, 7) with bits 7:3 0"
);

pub static RULES: &[&Rule] =
    &[&VMRUN_INTERCEPT, &MSRPM_ADDRESS, &IOPM_ADDRESS, &ASID_ZERO, &VNMI_INTERCEPT, &NP_HOST_PAGING, &NCR3_MBZ, &G_PAT];

/// A permission map of `size` bytes at `base` (bits 11:0 ignored): its last
/// byte lies below the maximum supported physical address, 2^MAXPHYADDR - 1.
pub fn map_fits(cpu: &Cpu, base: u64, size: usize) -> bool {
    let last = (base & !0xfff) as u128 + size as u128 - 1;
    last < (1u128 << cpu.maxphyaddr.min(64)) - 1
}

/// A PAT value every field of which is a memory type the PAT supports: UC
/// (0), WC (1), WT (4), WP (5), WB (6), UC- (7); 2, 3 and bits 7:3 are
/// reserved (APM Vol. 2 §7.8.1 "PAT Register").
pub fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

pub(crate) fn check(c: &Ctx, out: &mut Out) {
    let v = c.v;
    out.check(v.has_intercept2(intercept2::VMRUN), &VMRUN_INTERCEPT, "");
    out.check(map_fits(c.cpu, v.read_u64(control::MSRPM_BASE_PA), msrpm::SIZE), &MSRPM_ADDRESS, "");
    out.check(map_fits(c.cpu, v.read_u64(control::IOPM_BASE_PA), iopm::SIZE), &IOPM_ADDRESS, "");
    out.check(v.read_u32(control::GUEST_ASID) != 0, &ASID_ZERO, "");
    let vnmi = c.cpu.svm.has(edx::VNMI) && v.read_u64(control::VINTR) & vintr::V_NMI_ENABLE != 0;
    out.check(!vnmi || v.has_intercept1(intercept1::NMI), &VNMI_INTERCEPT, "");
    if c.nested_paging() {
        out.check(c.cpu.host_paging, &NP_HOST_PAGING, "");
        out.check(v.read_u64(control::N_CR3) & c.cpu.beyond_width() == 0, &NCR3_MBZ, "");
        out.check(pat_valid(v.read_u64(save::G_PAT)), &G_PAT, "");
    }
}
