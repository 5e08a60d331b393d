//! Where the two emulators the SVM entry fuzzer compares with depart from
//! the APM, as read from their source: QEMU 7.2 TCG as Debian 12 ships it
//! (7.2.22: the 7.2.0 tarball plus the stable patches; 7.2.10 added the #GP
//! for a misaligned or too wide VMCB address, which 7.2.0 lacked)
//! (`target/i386/tcg/sysemu/svm_helper.c`: `helper_vmrun`,
//! `is_efer_invalid_state`; `target/i386/cpu.h`: `MSR_EFER_RESERVED`,
//! `cr4_reserved_bits`; `target/i386/tcg/translate.c`: the VMRUN opcode) and
//! Bochs 2.7 with the `ryzen` model (`bochs/cpu/svm.cc`: `VMRUN`,
//! `SvmEnterLoadCheckControls`, `SvmEnterLoadCheckGuestState`,
//! `SvmInjectEvents`; `bochs/cpu/crregs.cc`: `check_CR0`, `check_CR4`;
//! `bochs/cpu/init.cc`: `efer_suppmask`).
//!
//! `Status::Confirmed` marks those the entry fuzzer met against the running
//! emulator (10,000 mutations each on QEMU's `-cpu max`, `EPYC` and
//! `qemu64` and on Bochs's `ryzen`, docs/entry-checker.md); the others are
//! read from source and not reached there. The checker follows
//! the APM; a fuzz mutation whose disagreement one of these explains counts
//! as "known". Each entry quotes the APM text it departs from.
//!
//! A departure says two things about a case (a VMCB, the CPU, the rules the
//! checker found broken): which of those violations the emulator does not
//! detect (`misses`), and whether the emulator refuses the VMCB on a check
//! the APM does not make (`adds`).

use super::controls::pat_valid;
use super::host::{Host, HostMode, HostViolation};
use super::verdict::{Outcome, Verdict};
use super::{cr, efer, Cpu, Violation};
use crate::svm::vmcb::{attrib, control, event as ev, np, save, Vmcb};
use alloc::vec::Vec;

/// Which emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// QEMU 7.2 (7.2.22), TCG (`-cpu max`, `-cpu EPYC`).
    Qemu,
    /// Bochs 2.7, `cpu: model=ryzen`.
    Bochs,
}

impl Emulator {
    /// The emulator a hypervisor signature names (CPUID leaf 4000_0000h's
    /// EBX, ECX, EDX): QEMU's TCG answers `TCGTCGTCGTCG` (its CPUID leaf
    /// 4000_0000h under TCG, `expose-tcg` on by default). Bochs has no
    /// signature: its CPU models copy real CPUs' CPUID.
    pub fn from_hypervisor_signature(ebx: u32, ecx: u32, edx: u32) -> Option<Emulator> {
        let mut s = [0u8; 12];
        s[..4].copy_from_slice(&ebx.to_le_bytes());
        s[4..8].copy_from_slice(&ecx.to_le_bytes());
        s[8..].copy_from_slice(&edx.to_le_bytes());
        (&s == b"TCGTCGTCGTCG").then_some(Emulator::Qemu)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Emulator::Qemu => "QEMU",
            Emulator::Bochs => "Bochs",
        }
    }
}

/// How a departure is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Read from the emulator's source, not yet seen in a run.
    ReadFromSource,
    /// Seen by the entry fuzzer against the running emulator.
    Confirmed,
}

/// What a departure is given: the VMCB, the CPU, and the violations the
/// checker found.
#[derive(Clone, Copy)]
pub struct Case<'a> {
    pub vmcb: &'a Vmcb,
    pub cpu: &'a Cpu,
    pub violations: &'a [Violation],
}

/// What a departure predicts the emulator does where the APM says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The emulator runs a VMCB the APM refuses.
    Accepts,
    /// The emulator refuses (VMEXIT_INVALID) a VMCB the APM runs.
    Refuses,
}

/// One known departure on the VMCB.
pub struct Departure {
    /// Stable id, e.g. `qemu.ncr3_unchecked`.
    pub id: &'static str,
    pub emulator: Emulator,
    pub status: Status,
    /// The APM's words the emulator departs from, with their citation.
    pub apm: &'static str,
    /// What the emulator does instead.
    pub emulator_does: &'static str,
    /// The emulator does not detect this violation.
    pub misses: fn(&Case, &Violation) -> bool,
    /// The emulator refuses the VMCB on a check the APM does not make.
    pub adds: fn(&Case) -> bool,
}

impl core::fmt::Debug for Departure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Departure").field("id", &self.id).field("status", &self.status).finish()
    }
}

impl Departure {
    /// What this departure alone predicts for the case, if anything: the
    /// emulator refuses (an added check holds), or it accepts (every broken
    /// rule is one it misses).
    pub fn predicts(&self, c: &Case) -> Option<Prediction> {
        if (self.adds)(c) {
            Some(Prediction::Refuses)
        } else if !c.violations.is_empty() && c.violations.iter().all(|v| (self.misses)(c, v)) {
            Some(Prediction::Accepts)
        } else {
            None
        }
    }
}

fn never(_: &Case) -> bool {
    false
}

fn rule_is(v: &Violation, ids: &[&str]) -> bool {
    ids.contains(&v.rule.id)
}

fn efer_of(c: &Case) -> u64 {
    c.vmcb.read_u64(save::EFER)
}
fn cr0_of(c: &Case) -> u64 {
    c.vmcb.read_u64(save::CR0)
}
fn cr4_of(c: &Case) -> u64 {
    c.vmcb.read_u64(save::CR4)
}
fn long_mode(c: &Case) -> bool {
    efer_of(c) & efer::LME != 0 && cr0_of(c) & cr::CR0_PG != 0
}
fn event_vector(c: &Case) -> u32 {
    ev::vector(c.vmcb.read_u64(control::EVENTINJ)) as u32
}

/// CR4 bits QEMU 7.2 allows whatever CPUID says: VME, PVI, TSD, DE, PSE,
/// PAE, MCE, PGE, PCE, OSFXSR, OSXMMEXCPT, PCIDE (`CR4_RESERVED_MASK`).
pub const QEMU_CR4_ALWAYS: u64 = 0x7ff | cr::CR4_PCIDE;
/// CR4 bits QEMU 7.2 allows when CPUID has the feature: UMIP, LA57,
/// FSGSBASE, OSXSAVE, SMEP, SMAP, PKE (`cr4_reserved_bits`), each an AMD64
/// CR4 bit `Cpu::cr4_valid` follows; and PKS, below.
pub const QEMU_CR4_GATED: u64 = (1 << 11) | (1 << 12) | (1 << 16) | (1 << 18) | (1 << 20) | (1 << 21) | (1 << 22);
/// CR4 bit 24, PKS: QEMU 7.2 allows it where its CPUID reports Intel's PKS
/// (`Cpu::intel_pks`); AMD64 reserves it.
pub const QEMU_CR4_PKS: u64 = 1 << 24;
/// QEMU 7.2's only valid EFER bits (`MSR_EFER_RESERVED` is their complement).
pub const QEMU_EFER: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME | efer::FFXSR;
/// The EFER bits Bochs 2.7 implements (`efer_suppmask`): no LMSLE,
/// MCOMMIT, UAIE or AIBRSE, and no TCE either: `efer_suppmask` has TCE only
/// with the TCE ISA extension, which no Bochs 2.7 model enables (ryzen's and
/// trinity_apu's CPUID report TCE all the same).
pub const BOCHS_EFER: u64 = QEMU_EFER;

fn qemu_cr4_allowed(cpu: &Cpu) -> u64 {
    let pks = if cpu.intel_pks { QEMU_CR4_PKS } else { 0 };
    QEMU_CR4_ALWAYS | (cpu.cr4_valid & QEMU_CR4_GATED) | pks
}

pub static DEPARTURES: &[Departure] = &[
    Departure {
        id: "qemu.cr3_host_mode",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"Any MBZ bit of CR3 is set\" is illegal; CR3 has MBZ bits only in long mode (§3.1.2 \"CR3 Register\", Figure 3-6)",
        emulator_does: "tests the guest CR3 against the physical-address width before it loads the guest's EFER, with the host's EFER.LMA (1 on this 64-bit host): refuses CR3 bits at or above MAXPHYADDR in every guest mode",
        misses: |_, _| false,
        adds: |c| !long_mode(c) && c.vmcb.read_u64(save::CR3) & c.cpu.beyond_width() != 0,
    },
    Departure {
        id: "qemu.cr4_fixed_mask",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"Any MBZ bit of CR4 is set\" is illegal; a CR4 bit is MBZ where the CPU does not support its feature",
        emulator_does: "takes CR4's reserved bits from a fixed list: always allows VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, OSFXSR, OSXMMEXCPT and PCIDE whatever CPUID says, never CET, and PKS (bit 24, which AMD64 reserves) where its CPUID reports Intel's PKS (Fn0000_0007_ECX[31], set for -cpu max)",
        misses: |c, v| {
            let bad = cr4_of(c) & !(c.cpu.cr4_valid & 0xffff_ffff);
            rule_is(v, &["svm.cr4.mbz"]) && bad & !qemu_cr4_allowed(c.cpu) == 0
        },
        adds: |c| cr4_of(c) & c.cpu.cr4_valid & !qemu_cr4_allowed(c.cpu) != 0,
    },
    Departure {
        id: "qemu.efer_fixed_mask",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"Any MBZ bit of EFER is set\" is illegal; an EFER bit is MBZ where the CPU does not implement it",
        emulator_does: "takes EFER's reserved bits from a fixed list (MSR_EFER_RESERVED): allows SCE, LME, LMA, NXE, SVME and FFXSR whatever CPUID says, refuses every other bit (LMSLE, TCE, ...)",
        misses: |c, v| rule_is(v, &["svm.efer.mbz"]) && efer_of(c) & !c.cpu.efer_valid & !QEMU_EFER == 0,
        adds: |c| efer_of(c) & c.cpu.efer_valid & !QEMU_EFER != 0,
    },
    Departure {
        id: "qemu.exception_vectors",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.20 \"Event Injection\": VMRUN exits with VMEXIT_INVALID if \"TYPE = 3 (exception) has been specified with a vector that does not correspond to an exception\"",
        emulator_does: "refuses an injected exception only for vector 2 or vectors 31 and above: accepts the reserved vectors 9, 15, 20, 22-27 (and #CP, #VC where CPUID lacks their feature)",
        misses: |c, v| rule_is(v, &["svm.event.exception_vector"]) && event_vector(c) < 31 && event_vector(c) != 2,
        adds: never,
    },
    Departure {
        id: "qemu.impossible_events",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.20 \"Event Injection\": \"If the VMM attempts to inject an event that is impossible for the guest mode (e.g., a #BR exception when the guest is in 64-bit mode), the event injection will fail ... VMRUN will immediately exit with an error code of VMEXIT_INVALID\"",
        emulator_does: "does not check the guest mode: delivers #BR and #OF in 64-bit mode",
        misses: |_, v| rule_is(v, &["svm.event.br_in_64bit_mode", "svm.event.of_in_64bit_mode"]),
        adds: never,
    },
    Departure {
        id: "qemu.pdpe_unchecked",
        emulator: Emulator::Qemu,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"If the guest is in PAE paging mode ... and nested paging is not enabled, the processor will also read the four PDPEs pointed to by the newly loaded CR3 value; setting any reserved bits in the PDPEs also causes a #VMEXIT\"",
        emulator_does: "does not read the PDPEs at VMRUN (a reserved bit faults later, on a walk)",
        misses: |_, v| rule_is(v, &["svm.pdpe.reserved"]),
        adds: never,
    },
    Departure {
        id: "qemu.iopm_size",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.10.1 \"I/O Permissions Map\": the IOPM occupies 12 Kbytes of contiguous physical memory; §15.5.1 \"Basic Operation\": \"The MSR or IOIO intercept tables extend to a physical address that is greater than or equal to the maximum supported physical address\" is illegal",
        emulator_does: "bounds the IOPM as 8 KiB + 1 byte (SVM_IOPM_SIZE, the bits of 65,536 ports and the byte an access at the top port spills into): accepts an IOPM whose 12 KiB end in the top page of the physical-address space",
        misses: |c, v| {
            let base = c.vmcb.read_u64(control::IOPM_BASE_PA) & !0xfff;
            v.rule.id == "svm.iopm.address" && (base as u128) < (1u128 << c.cpu.maxphyaddr.min(64)) - 0x2001
        },
        adds: never,
    },
    Departure {
        id: "qemu.ncr3_unchecked",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.25.4 \"Nested Paging and VMRUN/#VMEXIT\": with NP_ENABLE = 1, \"Any MBZ bit of nCR3 is set\" is an illegal state combination",
        emulator_does: "loads nCR3 without a check",
        misses: |_, v| rule_is(v, &["svm.np.ncr3_mbz"]),
        adds: never,
    },
    Departure {
        id: "qemu.g_pat_unchecked",
        emulator: Emulator::Qemu,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.25.4 \"Nested Paging and VMRUN/#VMEXIT\": with NP_ENABLE = 1, \"Any G_PAT.PA field has an unsupported type encoding or any reserved field in G_PAT has a non-zero value\" is illegal",
        emulator_does: "does not read G_PAT at VMRUN",
        misses: |_, v| rule_is(v, &["svm.np.g_pat"]),
        adds: never,
    },
    Departure {
        id: "qemu.np_host_paging_unchecked",
        emulator: Emulator::Qemu,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 §15.25.3 \"Enabling Nested Paging\": \"If VMRUN is executed with hCR0.PG cleared to zero and NP_ENABLE set to 1, VMRUN terminates with #VMEXIT(VMEXIT_INVALID)\"",
        emulator_does: "does not look at the host's CR0.PG (unobservable from this 64-bit host)",
        misses: |_, v| rule_is(v, &["svm.np.host_paging"]),
        adds: never,
    },
    Departure {
        id: "bochs.cr3_unchecked",
        emulator: Emulator::Bochs,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"Any MBZ bit of CR3 is set\" is illegal (in long mode, bits 63:52 and the unimplemented address bits)",
        emulator_does: "loads the guest CR3 without a check",
        misses: |_, v| rule_is(v, &["svm.cr3.mbz"]),
        adds: never,
    },
    Departure {
        id: "bochs.cs_l_and_d",
        emulator: Emulator::Bochs,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": illegal only when \"EFER.LME, CR0.PG, CR4.PAE, CS.L, and CS.D are all non-zero\"",
        emulator_does: "refuses CS.L and CS.D both set in every mode (for a code or data CS, or one not present; a present system-segment CS leaves L undefined)",
        misses: |_, _| false,
        adds: |c| {
            let a = c.vmcb.read_u16(save::CS + save::ATTRIB);
            let descriptor = a & attrib::S != 0 || a & attrib::P == 0;
            let apm = long_mode(c) && cr4_of(c) & cr::CR4_PAE != 0;
            a & attrib::L != 0 && a & attrib::DB != 0 && descriptor && !apm
        },
    },
    Departure {
        id: "bochs.pcide_outside_long_mode",
        emulator: Emulator::Bochs,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\" lists no check of CR4.PCIDE against the mode (only \"Any MBZ bit of CR4\")",
        emulator_does: "applies its MOV-to-CR4 check: refuses CR4.PCIDE outside long mode (on a model with PCID; ryzen has none)",
        misses: |_, _| false,
        adds: |c| cr4_of(c) & c.cpu.cr4_valid & cr::CR4_PCIDE != 0 && !long_mode(c),
    },
    Departure {
        id: "bochs.permission_map_base",
        emulator: Emulator::Bochs,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.11 \"MSR Intercepts\", §15.10.1 \"I/O Permissions Map\": \"if the address of the last byte in the table is greater than or equal to the maximum supported physical address, this is treated as illegal VMCB state\"",
        emulator_does: "checks only the map's base page against the physical-address width, not its last byte",
        misses: |c, v| {
            let base = |at| c.vmcb.read_u64(at) & !0xfff;
            match v.rule.id {
                "svm.msrpm.address" => base(control::MSRPM_BASE_PA) & c.cpu.beyond_width() == 0,
                "svm.iopm.address" => base(control::IOPM_BASE_PA) & c.cpu.beyond_width() == 0,
                _ => false,
            }
        },
        adds: never,
    },
    Departure {
        id: "bochs.exception_vectors",
        emulator: Emulator::Bochs,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.20 \"Event Injection\": VMRUN exits with VMEXIT_INVALID if \"TYPE = 3 (exception) has been specified with a vector that does not correspond to an exception\"",
        emulator_does: "refuses an injected exception only for vector 2 or vectors above 31: accepts the reserved vectors 9, 15, 20, 22-27 and 31",
        misses: |c, v| rule_is(v, &["svm.event.exception_vector"]) && event_vector(c) <= 31 && event_vector(c) != 2,
        adds: never,
    },
    Departure {
        id: "bochs.impossible_events",
        emulator: Emulator::Bochs,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.20 \"Event Injection\": \"If the VMM attempts to inject an event that is impossible for the guest mode (e.g., a #BR exception when the guest is in 64-bit mode) ... VMRUN will immediately exit with an error code of VMEXIT_INVALID\"",
        emulator_does: "does not check the guest mode: delivers #BR and #OF in 64-bit mode",
        misses: |_, v| rule_is(v, &["svm.event.br_in_64bit_mode", "svm.event.of_in_64bit_mode"]),
        adds: never,
    },
    Departure {
        id: "bochs.np_enable_byte",
        emulator: Emulator::Bochs,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 Table B-1 \"VMCB Layout, Control Area\": NP_ENABLE is bit 0 of offset 090h; §15.25.4 \"Nested Paging and VMRUN/#VMEXIT\" checks nCR3 and G_PAT only \"with nested paging enabled (NP_ENABLE = 1)\"",
        emulator_does: "reads all of byte 090h as NP_ENABLE: with bit 0 clear and another of bits 7:1 set (SEV, GMET, ...) it enables nested paging and makes its checks",
        misses: |_, _| false,
        adds: |c| {
            let n = c.vmcb.read_u64(control::NP_CONTROL);
            let on = n & np::ENABLE == 0 && n & 0xfe != 0 && c.cpu.svm.nested_paging();
            let bad = !c.cpu.host_paging
                || !pat_valid(c.vmcb.read_u64(save::G_PAT))
                || c.vmcb.read_u64(control::N_CR3) & c.cpu.beyond_width() != 0;
            on && bad
        },
    },
    Departure {
        id: "bochs.efer_bits",
        emulator: Emulator::Bochs,
        status: Status::Confirmed,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"Any MBZ bit of EFER is set\" is illegal; LMSLE (bit 13) is implemented unless CPUID Fn8000_0008_EBX[20] (EferLmsleUnsupported) is 1, TCE (bit 15) where CPUID Fn8000_0001_ECX[17] (TCE) is 1 (§3.1.7 \"Extended Feature Enable Register (EFER)\")",
        emulator_does: "implements at most SCE, LME, LMA, NXE, SVME and FFXSR: refuses LMSLE though its ryzen CPUID does not report it unsupported, and TCE though its ryzen CPUID reports TCE (no Bochs 2.7 model enables the TCE extension its EFER mask needs)",
        misses: |_, _| false,
        adds: |c| efer_of(c) & c.cpu.efer_valid & !BOCHS_EFER != 0,
    },
];

/// The departures of one emulator.
pub fn of(emulator: Emulator) -> impl Iterator<Item = &'static Departure> {
    DEPARTURES.iter().filter(move |d| d.emulator == emulator)
}

/// A departure by its id.
pub fn departure(id: &str) -> Option<&'static Departure> {
    DEPARTURES.iter().find(|d| d.id == id)
}

/// The violations this emulator detects (every departure applied).
pub fn seen_by(emulator: Emulator, c: &Case) -> Vec<Violation> {
    c.violations.iter().filter(|v| !of(emulator).any(|d| (d.misses)(c, v))).copied().collect()
}

/// What the emulator is predicted to do with the VMCB, every departure applied.
pub fn verdict(emulator: Emulator, c: &Case) -> Verdict {
    if !seen_by(emulator, c).is_empty() || of(emulator).any(|d| (d.adds)(c)) {
        Verdict::Invalid
    } else {
        Verdict::Runs
    }
}

/// The departure that explains why the emulator's outcome differs from the
/// APM's verdict, if one does: one departure alone, else all of that
/// emulator's together (then the first that changed anything is named).
pub fn explain(emulator: Emulator, c: &Case, outcome: &Outcome) -> Option<&'static Departure> {
    if Verdict::from_violations(c.violations).agrees(outcome) {
        return None;
    }
    let alone = |d: &Departure| match d.predicts(c) {
        Some(Prediction::Accepts) => Verdict::Runs,
        Some(Prediction::Refuses) => Verdict::Invalid,
        None => Verdict::from_violations(c.violations),
    };
    if let Some(d) = of(emulator).find(|d| alone(d).agrees(outcome)) {
        return Some(d);
    }
    if verdict(emulator, c).agrees(outcome) {
        return of(emulator).find(|d| (d.adds)(c) || c.violations.iter().any(|v| (d.misses)(c, v)));
    }
    None
}

/// One known departure on the host-side preconditions.
pub struct HostDeparture {
    pub id: &'static str,
    pub emulator: Emulator,
    pub status: Status,
    pub apm: &'static str,
    pub emulator_does: &'static str,
    /// The emulator does not raise the fault this violation calls for.
    pub misses: fn(&Host, &HostViolation) -> bool,
}

impl core::fmt::Debug for HostDeparture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostDeparture").field("id", &self.id).field("status", &self.status).finish()
    }
}

pub static HOST_DEPARTURES: &[HostDeparture] = &[
    HostDeparture {
        id: "qemu.hsave_zero",
        emulator: Emulator::Qemu,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 §15.30.4 \"VM_HSAVE_PA MSR\": \"a VMRUN that is attempted while the HSAVE_PA is 0 will fail with a #GP(0) exception\"",
        emulator_does: "saves the host state at physical address 0",
        misses: |_, v| v.rule.id == "svm.host.hsave_zero",
    },
    HostDeparture {
        id: "qemu.vmrun_in_v86",
        emulator: Emulator::Qemu,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"the processor must be in protected mode and EFER.SVME must be set to 1, otherwise, a #UD exception is raised\"",
        emulator_does: "recognizes VMRUN whenever CR0.PE is 1, so in virtual-8086 mode (CPL 3) it raises #GP(0)",
        misses: |h, v| v.rule.id == "svm.host.protected_mode" && h.mode == HostMode::Virtual8086,
    },
    HostDeparture {
        id: "bochs.hsave_zero",
        emulator: Emulator::Bochs,
        status: Status::ReadFromSource,
        apm: "APM Vol. 2 §15.30.4 \"VM_HSAVE_PA MSR\": \"a VMRUN that is attempted while the HSAVE_PA is 0 will fail with a #GP(0) exception\"",
        emulator_does: "checks VM_HSAVE_PA on WRMSR only; VMRUN saves the host state at physical address 0",
        misses: |_, v| v.rule.id == "svm.host.hsave_zero",
    },
];

/// A guest state an emulator's #VMEXIT cannot come back from: it leaves the
/// host's own state broken. Not a VMRUN check the emulator gets wrong (the
/// VMCB is valid, or refused either way), but a reason never to VMRUN it
/// there: the entry fuzzer refuses such a mutation, and the guest fuzzer
/// keeps its guests out of the state (docs/entry-checker.md).
pub struct HostHazard {
    pub id: &'static str,
    pub emulator: Emulator,
    pub status: Status,
    /// What the APM says the #VMEXIT does.
    pub apm: &'static str,
    /// What the emulator does instead.
    pub emulator_does: &'static str,
    /// The VMCB's guest state is (or may become, once loaded) the hazard.
    pub applies: fn(&Vmcb) -> bool,
}

impl core::fmt::Debug for HostHazard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostHazard").field("id", &self.id).field("status", &self.status).finish()
    }
}

/// Guest EFER.LME set with CR0.PG and CR4.PAE clear: a legal state (the
/// first step of activating long mode), in which QEMU 7.2's #VMEXIT loses
/// the host's CR0.
pub fn lme_without_pg_and_pae(v: &Vmcb) -> bool {
    v.read_u64(save::EFER) & efer::LME != 0
        && v.read_u64(save::CR0) & cr::CR0_PG == 0
        && v.read_u64(save::CR4) & cr::CR4_PAE == 0
}

pub static HOST_HAZARDS: &[HostHazard] = &[HostHazard {
    id: "qemu.vmexit_host_cr0",
    emulator: Emulator::Qemu,
    status: Status::Confirmed,
    apm: "APM Vol. 2 §15.6 \"#VMEXIT\": the #VMEXIT reloads the host state VMRUN saved in the host save area (CR0, CR4, CR3, EFER, the segment registers, RIP, RSP, RAX, ...), whatever state the guest left",
    emulator_does: "reloads the host's CR0 through its MOV-to-CR0 path while the guest's EFER (LME set) and CR4 (PAE clear) are still loaded; turning paging on with LME and without PAE is refused there, so the host keeps the guest's CR0 (paging off) and the host's code runs on from RIP with garbage: the emulator hangs or resets",
    applies: lme_without_pg_and_pae,
},
HostHazard {
    id: "bochs.lme_pg_without_pe",
    emulator: Emulator::Bochs,
    status: Status::Confirmed,
    apm: "APM Vol. 2 §15.5.1 \"Basic Operation\": \"EFER.LME and CR0.PG are both non-zero and CR0.PE is zero\" is an illegal state combination: VMRUN exits with VMEXIT_INVALID",
    emulator_does: "computes EFER.LMA = LME & PG, takes CR0.PE = 0 with PG = 1 as paged real mode (PG set aside for its CR0 checks, put back after), passes CR4 with PAE, and then its mode switch finds LMA with PE clear and panics (\"change_cpu_mode: EFER.LMA is set when CR0.PE=0 !\"): the emulator stops; with CR4.PAE clear its CR4 check refuses the VMCB first",
    applies: lme_pg_pae_without_pe,
}];

/// Guest EFER.LME, CR0.PG and CR4.PAE set with CR0.PE clear: illegal (APM
/// Vol. 2 §15.5.1 "Basic Operation"), and Bochs 2.7 panics on it.
pub fn lme_pg_pae_without_pe(v: &Vmcb) -> bool {
    let cr0 = v.read_u64(save::CR0);
    v.read_u64(save::EFER) & efer::LME != 0
        && cr0 & cr::CR0_PG != 0
        && cr0 & cr::CR0_PE == 0
        && v.read_u64(save::CR4) & cr::CR4_PAE != 0
}

/// The hazard, if any, of running `vmcb` on `emulator`.
pub fn host_hazard(emulator: Emulator, vmcb: &Vmcb) -> Option<&'static HostHazard> {
    HOST_HAZARDS.iter().find(|h| h.emulator == emulator && (h.applies)(vmcb))
}

/// The fault the emulator is predicted to raise, every host departure applied.
pub fn host_fault(emulator: Emulator, h: &Host) -> Option<super::Fault> {
    let all = super::host::check(h);
    let seen: Vec<HostViolation> = all
        .iter()
        .filter(|v| !HOST_DEPARTURES.iter().any(|d| d.emulator == emulator && (d.misses)(h, v)))
        .copied()
        .collect();
    super::host::fault(&seen)
}
