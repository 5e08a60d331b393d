//! A software VMRUN checker: the consistency checks of AMD64 APM Vol. 2
//! §15.5.1 "Basic Operation" ("Canonicalization and Consistency Checks")
//! and the sections it points to (§15.10.1 "I/O Permissions Map", §15.11
//! "MSR Intercepts", §15.20 "Event Injection", §15.21.10 "NMI
//! Virtualization", §15.25.3 "Enabling Nested Paging", §15.25.4 "Nested
//! Paging and VMRUN/#VMEXIT"), as a pure function of a VMCB image and a few
//! CPU facts; the VMX entry checker's counterpart (`crate::entry_check`).
//!
//! A real CPU answers a bad VMCB with EXITCODE = VMEXIT_INVALID (-1) and no
//! more. `check` names every rule the VMCB breaks, each with a stable id, a
//! one-line paraphrase of the APM and its `Section`; `Verdict` says what the
//! CPU must do: VMRUN runs the guest, or exits at once with VMEXIT_INVALID
//! (SVM has no VMfail). The two other ways VMRUN ends, #UD and #GP(0) before
//! anything is loaded, depend on the host and the VMCB's address, not on the
//! VMCB: `host::check` (the host-side preconditions).
//!
//! Files: `state` (the guest-state checks of §15.5.1, the CET checks and the
//! PDPE check), `controls` (the VMRUN intercept, the permission maps, the
//! ASID, NMI virtualization, nested paging), `event` (§15.20), `host` (#UD
//! and #GP), `notes` (what VMRUN does silently instead of failing: it
//! canonicalizes, loads paged real mode, ignores reserved fields; and the
//! extensions not modeled), `verdict`, `departures` (QEMU TCG 7.2 and Bochs
//! 2.7, read from their source), `tests` (one test per rule).
//!
//! Readings of the APM's words, where they leave room:
//! - "Any MBZ bit of CR3": the APM marks MBZ bits of CR3 only in long mode
//!   (Figure 3-6: bits 63:52 "Reserved, MBZ", and the physical-address bits
//!   the CPU does not implement "must be cleared to 0"); the legacy and PAE
//!   formats have reserved bits that software "should" clear, not MBZ bits.
//!   So the rule is: with EFER.LME and CR0.PG set, CR3 bits 63:MAXPHYADDR
//!   are 0; outside long mode nothing of CR3 is checked.
//! - "The MSR or IOIO intercept tables extend to a physical address that is
//!   greater than or equal to the maximum supported physical address":
//!   VMRUN ignores bits 11:0 of the base (§15.10.1, §15.11), the maps are
//!   8 KiB and 12 KiB, and the maximum supported physical address is
//!   2^MAXPHYADDR - 1. So the last byte of a map must be below 2^MAXPHYADDR - 1.
//! - "Illegal event injection": §15.20 lists reserved TYPEs and a TYPE 3
//!   vector that is not an exception, and (in its list of differences from
//!   normal delivery) an event "impossible for the guest mode (e.g., a #BR
//!   exception when the guest is in 64-bit mode)". The checker names #BR and
//!   #OF in 64-bit mode (BOUND and INTO are both invalid there); other
//!   impossible events are not modeled. An EV bit that disagrees with the
//!   vector, and bits 30:12 ("Reserved, SBZ"), are not listed: notes only.
//! - NP_ENABLE on a CPU without nested paging: no check is listed (Bochs
//!   ignores the bit, as does KVM); the nested-paging checks apply only when
//!   the CPU has NP and NP_ENABLE is set.

pub mod controls;
pub mod departures;
pub mod event;
pub mod host;
pub mod notes;
pub mod state;
pub mod verdict;

#[cfg(test)]
mod tests;

use super::features::SvmFeatures;
use super::vmcb::{attrib, control, event as ev, np, save, Vmcb};
use alloc::vec::Vec;
use core::fmt;

pub use host::{check as check_host, Fault, Host, HostMode, HostViolation};
pub use verdict::{Outcome, Verdict};

/// Where a rule sits in the APM: `APM Vol. 2 §15.5.1 "Basic Operation"`, or
/// for an instruction page `APM Vol. 3 Chapter 4 "VMRUN"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub volume: u8,
    /// A section number ("15.5.1", printed with §) or another place ("Chapter 4").
    pub number: &'static str,
    pub title: &'static str,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = self.number.starts_with(|c: char| c.is_ascii_digit());
        write!(f, "APM Vol. {} {}{} \"{}\"", self.volume, if section { "§" } else { "" }, self.number, self.title)
    }
}

const fn vol2(number: &'static str, title: &'static str) -> Section {
    Section { volume: 2, number, title }
}

pub const SEC_BASIC: Section = vol2("15.5.1", "Basic Operation");
pub const SEC_IOPM: Section = vol2("15.10.1", "I/O Permissions Map");
pub const SEC_MSRPM: Section = vol2("15.11", "MSR Intercepts");
pub const SEC_TLB: Section = vol2("15.16.1", "TLB Flush");
pub const SEC_PAGED_REAL_MODE: Section = vol2("15.19", "Paged Real Mode");
pub const SEC_EVENT: Section = vol2("15.20", "Event Injection");
pub const SEC_VNMI: Section = vol2("15.21.10", "NMI Virtualization");
pub const SEC_NP_ENABLE: Section = vol2("15.25.3", "Enabling Nested Paging");
pub const SEC_NP_VMRUN: Section = vol2("15.25.4", "Nested Paging and VMRUN/#VMEXIT");
pub const SEC_AVIC: Section = vol2("15.29", "Advanced Virtual Interrupt Controller");
pub const SEC_HSAVE: Section = vol2("15.30.4", "VM_HSAVE_PA MSR");
pub const SEC_SEV: Section = vol2("15.34", "Secure Encrypted Virtualization");
/// The VMRUN page of the instruction reference (publication 24594).
pub const SEC_VMRUN_INSN: Section = Section { volume: 3, number: "Chapter 4", title: "VMRUN" };

/// One APM rule VMRUN checks; breaking it ends VMRUN with VMEXIT_INVALID.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, e.g. `svm.efer.svme`.
    pub id: &'static str,
    pub section: Section,
    /// One line paraphrasing the APM's words.
    pub text: &'static str,
}

/// A rule the VMCB breaks, with what broke it where the rule covers several
/// registers or fields ("" otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static Rule,
    pub what: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vmrun check {}: {}", self.rule.id, self.rule.text)?;
        if !self.what.is_empty() {
            write!(f, " [{}]", self.what)?;
        }
        write!(f, " ({})", self.rule.section)
    }
}

/// EFER bits (APM Vol. 2 §3.1.7 "Extended Feature Enable Register (EFER)").
pub mod efer {
    /// System call extensions (SYSCALL/SYSRET).
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// Secure virtual machine enable.
    pub const SVME: u64 = 1 << 12;
    /// Long mode segment limit enable.
    pub const LMSLE: u64 = 1 << 13;
    /// Fast FXSAVE/FXRSTOR.
    pub const FFXSR: u64 = 1 << 14;
    /// Translation cache extension.
    pub const TCE: u64 = 1 << 15;
    /// MCOMMIT instruction enable.
    pub const MCOMMIT: u64 = 1 << 17;
    /// Interruptible WBINVD/WBNOINVD enable.
    pub const INTWB: u64 = 1 << 18;
    /// Upper address ignore enable.
    pub const UAIE: u64 = 1 << 20;
    /// Automatic IBRS enable.
    pub const AIBRSE: u64 = 1 << 21;
}

/// CR0 and CR4 bits the checks name.
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const CR4_CET: u64 = 1 << 23;
}

/// The CPUID leaves the CPU facts come from (APM Vol. 3 Appendix E
/// "Obtaining Processor Information Via the CPUID Instruction"); a leaf the
/// CPU lacks reads as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    /// Fn0000_0001 ECX and EDX.
    pub l1_ecx: u32,
    pub l1_edx: u32,
    /// Fn0000_0007 (ECX=0) EBX and ECX.
    pub l7_ebx: u32,
    pub l7_ecx: u32,
    /// Fn8000_0001 ECX and EDX.
    pub e1_ecx: u32,
    pub e1_edx: u32,
    /// Fn8000_0008 EAX (address sizes) and EBX.
    pub e8_eax: u32,
    pub e8_ebx: u32,
    /// Fn8000_000A EAX, EBX, EDX (SVM).
    pub ea_eax: u32,
    pub ea_ebx: u32,
    pub ea_edx: u32,
    /// Fn8000_001F EAX (encrypted memory).
    pub e1f_eax: u32,
    /// Fn8000_0021 EAX (extended features 2).
    pub e21_eax: u32,
}

/// What the checker must know of the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// CPUID Fn8000_000A: nested paging, VNMI, AVIC, NASID.
    pub svm: SvmFeatures,
    /// Physical-address width, CPUID Fn8000_0008_EAX[7:0].
    pub maxphyaddr: u8,
    /// Linear-address width, CPUID Fn8000_0008_EAX[15:8] (48, or 57 with LA57).
    pub linear_width: u8,
    /// Long mode, CPUID Fn8000_0001_EDX[29].
    pub long_mode: bool,
    /// The EFER bits the CPU implements; the others are MBZ (`efer_valid_from_cpuid`).
    pub efer_valid: u64,
    /// The CR4 bits the CPU supports; the others are MBZ (`cr4_valid_from_cpuid`).
    pub cr4_valid: u64,
    /// Bit n: vector n is an exception on this CPU (`exception_vectors`).
    pub exception_vectors: u32,
    /// The host's CR0.PG at VMRUN (always 1 for this 64-bit kernel).
    pub host_paging: bool,
    /// CPUID Fn0000_0007_ECX[31]: protection keys for supervisor pages, an
    /// Intel feature (SDM CR4.PKS, bit 24) that AMD64 reserves; a CPU model
    /// that mixes the two (QEMU's `-cpu max`) may report it. The APM's rules
    /// ignore it; only `departures` reads it.
    pub intel_pks: bool,
}

impl Cpu {
    /// The facts CPUID gives, for a host running VMRUN with paging on.
    pub fn from_cpuid(c: &Cpuid) -> Cpu {
        let width = (c.e8_eax & 0xff) as u8;
        let linear = ((c.e8_eax >> 8) & 0xff) as u8;
        Cpu {
            svm: SvmFeatures::from_cpuid(c.ea_eax, c.ea_ebx, c.ea_edx),
            maxphyaddr: if width == 0 { 36 } else { width },
            linear_width: if linear == 0 { 48 } else { linear },
            long_mode: c.e1_edx & (1 << 29) != 0,
            efer_valid: Cpu::efer_valid_from_cpuid(c.e1_ecx, c.e1_edx, c.e8_ebx, c.e21_eax),
            cr4_valid: Cpu::cr4_valid_from_cpuid(c.l1_ecx, c.l1_edx, c.l7_ebx, c.l7_ecx),
            exception_vectors: Cpu::exception_vectors(c.l7_ecx & (1 << 7) != 0, c.e1f_eax & (1 << 3) != 0),
            host_paging: true,
            intel_pks: c.l7_ecx & (1 << 31) != 0,
        }
    }

    /// The EFER bits of APM Vol. 2 §3.1.7 "Extended Feature Enable Register
    /// (EFER)" this CPU implements, by their CPUID features: SCE (bit 0,
    /// Fn8000_0001_EDX[11] SysCallSysRet), LME and LMA (8, 10, EDX[29] LM),
    /// NXE (11, EDX[20] NX), SVME (12, ECX[2] SVM), LMSLE (13, long mode
    /// unless Fn8000_0008_EBX[20] EferLmsleUnsupported), FFXSR (14, EDX[25]
    /// FFXSR), TCE (15, ECX[17] TCE), MCOMMIT (17, Fn8000_0008_EBX[8]
    /// MCOMMIT), UAIE (20, Fn8000_0021_EAX[7] UpperAddressIgnore), AIBRSE
    /// (21, Fn8000_0021_EAX[8] AutomaticIBRS). INTWB (18) is left out: add it
    /// where the CPU has it. Every other bit is reserved, MBZ.
    pub fn efer_valid_from_cpuid(e1_ecx: u32, e1_edx: u32, e8_ebx: u32, e21_eax: u32) -> u64 {
        let lm = e1_edx & (1 << 29) != 0;
        let mut v = 0;
        for (on, bits) in [
            (e1_edx & (1 << 11) != 0, efer::SCE),
            (lm, efer::LME | efer::LMA),
            (e1_edx & (1 << 20) != 0, efer::NXE),
            (e1_ecx & (1 << 2) != 0, efer::SVME),
            (lm && e8_ebx & (1 << 20) == 0, efer::LMSLE),
            (e1_edx & (1 << 25) != 0, efer::FFXSR),
            (e1_ecx & (1 << 17) != 0, efer::TCE),
            (e8_ebx & (1 << 8) != 0, efer::MCOMMIT),
            (e21_eax & (1 << 7) != 0, efer::UAIE),
            (e21_eax & (1 << 8) != 0, efer::AIBRSE),
        ] {
            if on {
                v |= bits;
            }
        }
        v
    }

    /// The CR4 bits of APM Vol. 2 §3.1.3 "CR4 Register" this CPU supports:
    /// VME and PVI (bits 0, 1: Fn0000_0001_EDX[1] VME), TSD (2, EDX[4] TSC),
    /// DE (3, EDX[2]), PSE (4, EDX[3]), PAE (5, EDX[6]), MCE (6, EDX[7]), PGE
    /// (7, EDX[13]), PCE (8, always), OSFXSR (9, EDX[24] FXSR), OSXMMEXCPT
    /// (10, EDX[25] SSE), UMIP (11, Fn0000_0007_ECX[2]), LA57 (12, ECX[16]),
    /// FSGSBASE (16, Fn0000_0007_EBX[0]), PCIDE (17, Fn0000_0001_ECX[17]),
    /// OSXSAVE (18, ECX[26] XSAVE), SMEP (20, Fn0000_0007_EBX[7]), SMAP (21,
    /// EBX[20]), PKE (22, Fn0000_0007_ECX[3]), CET (23, ECX[7] CET_SS). Bits
    /// 13-15, 19, 24-63 are reserved, MBZ, on AMD64 (VMXE and SMXE are Intel's).
    pub fn cr4_valid_from_cpuid(l1_ecx: u32, l1_edx: u32, l7_ebx: u32, l7_ecx: u32) -> u64 {
        let mut v = 1 << 8;
        for (on, bits) in [
            (l1_edx & (1 << 1) != 0, 0b11),
            (l1_edx & (1 << 4) != 0, 1 << 2),
            (l1_edx & (1 << 2) != 0, 1 << 3),
            (l1_edx & (1 << 3) != 0, 1 << 4),
            (l1_edx & (1 << 6) != 0, 1 << 5),
            (l1_edx & (1 << 7) != 0, 1 << 6),
            (l1_edx & (1 << 13) != 0, 1 << 7),
            (l1_edx & (1 << 24) != 0, 1 << 9),
            (l1_edx & (1 << 25) != 0, 1 << 10),
            (l7_ecx & (1 << 2) != 0, 1 << 11),
            (l7_ecx & (1 << 16) != 0, 1 << 12),
            (l7_ebx & (1 << 0) != 0, 1 << 16),
            (l1_ecx & (1 << 17) != 0, 1 << 17),
            (l1_ecx & (1 << 26) != 0, 1 << 18),
            (l7_ebx & (1 << 7) != 0, 1 << 20),
            (l7_ebx & (1 << 20) != 0, 1 << 21),
            (l7_ecx & (1 << 3) != 0, 1 << 22),
            (l7_ecx & (1 << 7) != 0, 1 << 23),
        ] {
            if on {
                v |= bits;
            }
        }
        v
    }

    /// The vectors that are exceptions (APM Vol. 2 Table 8-1 "Interrupt
    /// Vector Source and Cause"): #DE 0, #DB 1, #BP 3, #OF 4, #BR 5, #UD 6,
    /// #NM 7, #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #MF 16, #AC 17,
    /// #MC 18, #XF 19, #HV 28, #SX 30; #CP 21 with shadow stacks
    /// (Fn0000_0007_ECX[7]), #VC 29 with SEV-ES (Fn8000_001F_EAX[3]). Vector
    /// 2 is the NMI; 9 (the old coprocessor segment overrun), 15, 20, 22-27
    /// and 31 are reserved.
    pub const fn exception_vectors(shadow_stack: bool, sev_es: bool) -> u32 {
        let mut v: u32 = 0b0101_0000_0000_1111_0111_1101_1111_1011;
        if shadow_stack {
            v |= 1 << 21;
        }
        if sev_es {
            v |= 1 << 29;
        }
        v
    }

    /// Nested paging is on for this VMCB: NP_ENABLE set on a CPU with NP.
    pub fn nested_paging(&self, v: &Vmcb) -> bool {
        self.svm.nested_paging() && v.read_u64(control::NP_CONTROL) & np::ENABLE != 0
    }

    /// Bits at and above the physical-address width.
    pub fn beyond_width(&self) -> u64 {
        if self.maxphyaddr >= 64 {
            0
        } else {
            !0u64 << self.maxphyaddr
        }
    }
}

/// Everything the checker looks at.
pub struct Input<'a> {
    pub vmcb: &'a Vmcb,
    pub cpu: &'a Cpu,
    /// Reads 8 bytes of physical memory (the PDPEs VMRUN loads for a PAE guest
    /// without nested paging); None when the address is not readable, and then
    /// that check is skipped.
    pub memory: &'a dyn Fn(u64) -> Option<u64>,
    /// Rule ids not to check (empty for the APM; `departures` uses it to see
    /// the VMCB as an emulator that skips some checks does).
    pub skip: &'a [&'a str],
}

/// The collected violations.
pub(crate) struct Out<'a> {
    pub list: Vec<Violation>,
    pub skip: &'a [&'a str],
}

impl Out<'_> {
    pub fn check(&mut self, ok: bool, rule: &'static Rule, what: &'static str) {
        if !ok && !self.skip.contains(&rule.id) {
            self.list.push(Violation { rule, what });
        }
    }
}

/// The VMCB's values the rules share, decoded once.
pub(crate) struct Ctx<'a> {
    pub v: &'a Vmcb,
    pub cpu: &'a Cpu,
    pub memory: &'a dyn Fn(u64) -> Option<u64>,
    pub efer: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cs: u16,
}

impl Ctx<'_> {
    pub fn new<'a>(v: &'a Vmcb, cpu: &'a Cpu, memory: &'a dyn Fn(u64) -> Option<u64>) -> Ctx<'a> {
        Ctx {
            v,
            cpu,
            memory,
            efer: v.read_u64(save::EFER),
            cr0: v.read_u64(save::CR0),
            cr3: v.read_u64(save::CR3),
            cr4: v.read_u64(save::CR4),
            cs: v.read_u16(save::CS + save::ATTRIB),
        }
    }
    /// EFER.LME and CR0.PG both set: the guest runs in long mode.
    pub fn long_mode(&self) -> bool {
        self.efer & efer::LME != 0 && self.cr0 & cr::CR0_PG != 0
    }
    /// Long mode with CS.L: 64-bit mode.
    pub fn sixty_four_bit(&self) -> bool {
        self.long_mode() && self.cs & attrib::L != 0
    }
    pub fn nested_paging(&self) -> bool {
        self.cpu.nested_paging(self.v)
    }
    /// The injected event, if EVENTINJ.V is set.
    pub fn event(&self) -> Option<u64> {
        let e = self.v.read_u64(control::EVENTINJ);
        (e & ev::VALID != 0).then_some(e)
    }
}

/// `a` is canonical for a `width`-bit linear address space.
pub fn canonical(a: u64, width: u8) -> bool {
    crate::entry_check::canonical(a, width)
}

/// Run every check with no memory to read (the PDPE check is skipped).
pub fn check(vmcb: &Vmcb, cpu: &Cpu) -> Vec<Violation> {
    check_with(&Input { vmcb, cpu, memory: &|_| None, skip: &[] })
}

/// Run every check. The list follows the APM's order: §15.5.1's list
/// (guest state, then the controls), then event injection, then nested paging.
pub fn check_with(input: &Input) -> Vec<Violation> {
    let ctx = Ctx::new(input.vmcb, input.cpu, input.memory);
    let mut out = Out { list: Vec::new(), skip: input.skip };
    state::check(&ctx, &mut out);
    controls::check(&ctx, &mut out);
    event::check(&ctx, &mut out);
    out.list
}

/// Every rule, for the documentation and the tests.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    state::RULES.iter().chain(controls::RULES).chain(event::RULES).copied()
}

/// A rule by its id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    all_rules().find(|r| r.id == id)
}

/// Declare a rule constant tersely.
macro_rules! rule_def {
    ($name:ident, $id:literal, $sec:expr, $text:literal) => {
        pub static $name: $crate::svm::vmrun_check::Rule =
            $crate::svm::vmrun_check::Rule { id: $id, section: $sec, text: $text };
    };
}
pub(crate) use rule_def;
