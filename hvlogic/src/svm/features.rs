//! What CPUID Fn8000_000A says about SVM (APM Vol. 3 Appendix E.4.9
//! "Function 8000_000Ah—SVM Features"): the revision in EAX[7:0], the number
//! of address space identifiers (ASIDs) in EBX, the feature flags in EDX.
//! The PCB keeps it, and `svmcap` prints it decoded.

use core::fmt::{self, Write};

/// Fn8000_000A_EDX feature bits, by name.
pub mod edx {
    /// Nested paging.
    pub const NP: u32 = 1 << 0;
    /// LBR virtualization.
    pub const LBR_VIRT: u32 = 1 << 1;
    /// SVM-Lock (SVM_KEY can unlock VM_CR.LOCK).
    pub const SVML: u32 = 1 << 2;
    /// The next sequential RIP is saved on #VMEXIT (VMCB offset 0C8h).
    pub const NRIPS: u32 = 1 << 3;
    pub const TSC_RATE_MSR: u32 = 1 << 4;
    /// VMCB clean bits.
    pub const VMCB_CLEAN: u32 = 1 << 5;
    /// TLB_CONTROL can flush one ASID's entries.
    pub const FLUSH_BY_ASID: u32 = 1 << 6;
    /// Decode assists (instruction bytes, CR/DR/INVLPG operands).
    pub const DECODE_ASSISTS: u32 = 1 << 7;
    pub const PAUSE_FILTER: u32 = 1 << 10;
    pub const PAUSE_FILTER_THRESHOLD: u32 = 1 << 12;
    pub const AVIC: u32 = 1 << 13;
    pub const VMSAVE_VIRT: u32 = 1 << 15;
    pub const VGIF: u32 = 1 << 16;
    pub const GMET: u32 = 1 << 17;
    pub const X2AVIC: u32 = 1 << 18;
    pub const SSS_CHECK: u32 = 1 << 19;
    pub const SPEC_CTRL: u32 = 1 << 20;
    pub const ROGPT: u32 = 1 << 21;
    pub const HOST_MCE_OVERRIDE: u32 = 1 << 23;
    pub const TLBI_CTL: u32 = 1 << 24;
    pub const VNMI: u32 = 1 << 25;
    pub const IBS_VIRT: u32 = 1 << 26;
    pub const EXT_LVT_AVIC_ACCESS_CHG: u32 = 1 << 27;
    pub const VMCB_ADDR_CHK: u32 = 1 << 28;
    pub const BUS_LOCK_THRESHOLD: u32 = 1 << 29;
    pub const IDLE_HLT_INTERCEPT: u32 = 1 << 30;
}

/// Every named Fn8000_000A_EDX bit, with the APM's name and what it means here.
pub const EDX_BITS: &[(u32, &str, &str)] = &[
    (edx::NP, "NP", "nested paging"),
    (edx::LBR_VIRT, "LbrVirt", "LBR virtualization"),
    (edx::SVML, "SVML", "SVM-Lock: SVM_KEY can unlock VM_CR.LOCK"),
    (edx::NRIPS, "NRIPS", "next RIP saved on #VMEXIT"),
    (edx::TSC_RATE_MSR, "TscRateMsr", "TSC ratio MSR"),
    (edx::VMCB_CLEAN, "VmcbClean", "VMCB clean bits"),
    (edx::FLUSH_BY_ASID, "FlushByAsid", "TLB flush by ASID"),
    (edx::DECODE_ASSISTS, "DecodeAssists", "decode assists"),
    (edx::PAUSE_FILTER, "PauseFilter", "PAUSE intercept filter"),
    (edx::PAUSE_FILTER_THRESHOLD, "PauseFilterThreshold", "PAUSE filter cycle threshold"),
    (edx::AVIC, "AVIC", "advanced virtual interrupt controller"),
    (edx::VMSAVE_VIRT, "VMSAVEvirt", "virtualized VMSAVE/VMLOAD"),
    (edx::VGIF, "VGIF", "virtualized global interrupt flag"),
    (edx::GMET, "GMET", "guest mode execute trap"),
    (edx::X2AVIC, "x2AVIC", "AVIC in x2APIC mode"),
    (edx::SSS_CHECK, "SSSCheck", "supervisor shadow stack restrictions"),
    (edx::SPEC_CTRL, "SpecCtrl", "SPEC_CTRL virtualization"),
    (edx::ROGPT, "ROGPT", "read-only guest page tables"),
    (edx::HOST_MCE_OVERRIDE, "HOST_MCE_OVERRIDE", "host #MC while CR4.MCE is 0 in the guest"),
    (edx::TLBI_CTL, "TlbiCtl", "INVLPGB/TLBSYNC enable and intercept"),
    (edx::VNMI, "VNMI", "virtual NMI"),
    (edx::IBS_VIRT, "IbsVirt", "IBS virtualization"),
    (edx::EXT_LVT_AVIC_ACCESS_CHG, "ExtLvtAvicAccessChg", "extended LVT AVIC access changes"),
    (edx::VMCB_ADDR_CHK, "NestedVirtVmcbAddrChk", "guest VMCB address check"),
    (edx::BUS_LOCK_THRESHOLD, "BusLockThreshold", "bus lock threshold"),
    (edx::IDLE_HLT_INTERCEPT, "IdleHltIntercept", "idle HLT intercept"),
];

/// CPUID Fn8000_000A, as the PCB keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmFeatures {
    /// EAX[7:0]: SVM revision.
    pub revision: u8,
    /// EBX: number of ASIDs (ASID 0 is the host's, so NASID - 1 guests).
    pub nasid: u32,
    /// EDX: the feature flags (`edx::*`).
    pub edx: u32,
}

impl SvmFeatures {
    pub const fn from_cpuid(eax: u32, ebx: u32, edx: u32) -> SvmFeatures {
        SvmFeatures { revision: eax as u8, nasid: ebx, edx }
    }

    pub const fn has(&self, bit: u32) -> bool {
        self.edx & bit != 0
    }

    pub const fn nested_paging(&self) -> bool {
        self.has(edx::NP)
    }

    pub const fn nrip_save(&self) -> bool {
        self.has(edx::NRIPS)
    }

    /// The ASID for processor `index`'s guest: never 0 (the host's, which
    /// VMRUN refuses: APM Vol. 2 §15.5.1 "Basic Operation"), below NASID; a
    /// CPU with fewer ASIDs than processors shares them (each CPU has its
    /// own TLB, so the same ASID on two CPUs never meets).
    pub const fn asid_for(&self, index: u32) -> u32 {
        if self.nasid <= 1 {
            1
        } else {
            index % (self.nasid - 1) + 1
        }
    }

    /// The one-line summary the `svm:` debug line and the PCB report.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

pub struct Summary<'a>(&'a SvmFeatures);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "revision {}, {} ASIDs", s.revision, s.nasid)?;
        for (bit, name, _) in EDX_BITS {
            if s.edx & bit != 0 {
                write!(f, ", {name}")?;
            }
        }
        Ok(())
    }
}

/// `svmcap`: every Fn8000_000A field decoded, a line each, as `vmxcap` does
/// for the VMX capability MSRs; `vm_cr` is VM_CR as read.
pub fn write_svmcap(out: &mut impl Write, s: &SvmFeatures, vm_cr: u64) -> fmt::Result {
    use super::vm_cr as cr;
    writeln!(out, "CPUID Fn8000_000A_EAX = {:#010x}: SVM revision {}", s.revision, s.revision)?;
    writeln!(out, "CPUID Fn8000_000A_EBX = {:#010x}: {} address space identifiers (ASIDs)", s.nasid, s.nasid)?;
    writeln!(out, "CPUID Fn8000_000A_EDX = {:#010x}", s.edx)?;
    for (bit, name, what) in EDX_BITS {
        writeln!(out, "  {:<22} {:<3} {what}", name, if s.edx & bit != 0 { "yes" } else { "no" })?;
    }
    let known: u32 = EDX_BITS.iter().map(|(b, _, _)| b).fold(0, |a, b| a | b);
    if s.edx & !known != 0 {
        writeln!(out, "  other bits set: {:#010x}", s.edx & !known)?;
    }
    writeln!(out, "VM_CR (MSR C001_0114h) = {vm_cr:#x}")?;
    for (bit, name, what) in [
        (cr::DPD, "DPD", "debug port disabled"),
        (cr::R_INIT, "R_INIT", "INIT translated to #SX"),
        (cr::DIS_A20M, "DIS_A20M", "A20 masking disabled"),
        (cr::LOCK, "LOCK", "SVMDIS and LOCK locked"),
        (cr::SVMDIS, "SVMDIS", "EFER.SVME cannot be set"),
    ] {
        writeln!(out, "  {:<22} {:<3} {what}", name, if vm_cr & bit != 0 { "yes" } else { "no" })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn qemu_max_and_bochs_ryzen() {
        // QEMU 7.2 TCG -cpu max: NP, VGIF, NestedVirtVmcbAddrChk; 16 ASIDs.
        let qemu = SvmFeatures::from_cpuid(1, 16, edx::NP | edx::VGIF | edx::VMCB_ADDR_CHK);
        assert!(qemu.nested_paging() && !qemu.nrip_save());
        assert_eq!(alloc::format!("{}", qemu.summary()), "revision 1, 16 ASIDs, NP, VGIF, NestedVirtVmcbAddrChk");
        assert_eq!(qemu.asid_for(0), 1);
        assert_eq!(qemu.asid_for(14), 15);
        assert_eq!(qemu.asid_for(15), 1, "15 guest ASIDs, shared beyond");
        let one = SvmFeatures::from_cpuid(1, 1, 0);
        assert_eq!(one.asid_for(7), 1, "never the host's ASID 0");
    }

    #[test]
    fn svmcap_lists_every_bit() {
        let mut out = String::new();
        let s = SvmFeatures::from_cpuid(1, 64, edx::NP | edx::NRIPS | 1 << 31);
        write_svmcap(&mut out, &s, crate::svm::vm_cr::LOCK).unwrap();
        assert!(out.contains("CPUID Fn8000_000A_EBX = 0x00000040: 64 address space identifiers (ASIDs)"));
        assert!(out.contains("  NP                     yes nested paging"));
        assert!(out.contains("  FlushByAsid            no  TLB flush by ASID"));
        assert!(out.contains("  other bits set: 0x80000000"));
        assert!(out.contains("  LOCK                   yes SVMDIS and LOCK locked"));
        assert_eq!(out.lines().count(), 3 + EDX_BITS.len() + 1 + 1 + 5);
    }
}
