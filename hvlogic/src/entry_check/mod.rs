//! A software VM-entry checker: the checks of SDM Vol. 3C Chapter 27 "VM
//! Entries" (§27.2 "Checks on VMX Controls and Host-State Area", §27.3
//! "Checking and Loading Guest State", §27.4 "Loading MSRs"), as a pure
//! function of a VMCS snapshot, the VMX capability MSRs and a few CPU facts.
//!
//! A real CPU says only "VMfailValid, error 7" or "exit reason 33"; `check`
//! names every rule the VMCS breaks, each with a stable id and a one-line
//! paraphrase of the SDM, and `Verdict` says what the CPU must do with it.
//! Section numbers are those of the SDM edition the crate docs name, which
//! this project cites throughout (Vol. 3C Chapter 25 "Virtual Machine
//! Control Structures", Chapter 27 "VM Entries", Chapter 31 "VMX Instruction
//! Reference").
//!
//! Files: `fields` (every field encoding, the snapshot), `controls`
//! (§27.2.1 "Checks on VMX Controls"), `host` (§27.2.2 "Checks on Host
//! Control Registers, MSRs, and SSP" to §27.2.4 "Checks Related to
//! Address-Space Size"), `guest_regs` (§27.3.1.1 "Checks on Guest Control
//! Registers, Debug Registers, and MSRs"), `guest_segments` (§27.3.1.2
//! "Checks on Guest Segment Registers"), `guest_other` (§27.3.1.3 "Checks on
//! Guest Descriptor-Table Registers" to §27.3.1.6 "Checks on Guest
//! Page-Directory-Pointer-Table Entries"), `msr_load` (§27.4), `verdict`
//! (what the CPU reports).

pub mod controls;
pub mod departures;
pub mod fields;
pub mod guest_other;
pub mod guest_regs;
pub mod guest_segments;
pub mod host;
pub mod msr_load;
pub mod verdict;

#[cfg(test)]
mod tests;

use crate::controls as ctl;
use crate::vmx_global::VmxGlobalData;
use alloc::vec::Vec;
use core::fmt;
use fields::{enc, Snapshot};

pub use verdict::{Outcome, Verdict};

/// Where a rule sits in the SDM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub number: &'static str,
    pub title: &'static str,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SDM Vol. 3C §{} \"{}\"", self.number, self.title)
    }
}

pub const SEC_EXEC_CONTROLS: Section = Section { number: "27.2.1.1", title: "VM-Execution Control Fields" };
pub const SEC_EXIT_CONTROLS: Section = Section { number: "27.2.1.2", title: "VM-Exit Control Fields" };
pub const SEC_ENTRY_CONTROLS: Section = Section { number: "27.2.1.3", title: "VM-Entry Control Fields" };
pub const SEC_HOST_CR_MSR: Section =
    Section { number: "27.2.2", title: "Checks on Host Control Registers, MSRs, and SSP" };
pub const SEC_HOST_SEGMENTS: Section =
    Section { number: "27.2.3", title: "Checks on Host Segment and Descriptor-Table Registers" };
pub const SEC_HOST_ADDRESS_SPACE: Section = Section { number: "27.2.4", title: "Checks Related to Address-Space Size" };
pub const SEC_GUEST_CR_MSR: Section =
    Section { number: "27.3.1.1", title: "Checks on Guest Control Registers, Debug Registers, and MSRs" };
pub const SEC_GUEST_SEGMENTS: Section = Section { number: "27.3.1.2", title: "Checks on Guest Segment Registers" };
pub const SEC_GUEST_DESCRIPTOR_TABLES: Section =
    Section { number: "27.3.1.3", title: "Checks on Guest Descriptor-Table Registers" };
pub const SEC_GUEST_RIP_RFLAGS: Section = Section { number: "27.3.1.4", title: "Checks on Guest RIP, RFLAGS, and SSP" };
pub const SEC_GUEST_NON_REGISTER: Section = Section { number: "27.3.1.5", title: "Checks on Guest Non-Register State" };
pub const SEC_GUEST_PDPTES: Section =
    Section { number: "27.3.1.6", title: "Checks on Guest Page-Directory-Pointer-Table Entries" };
pub const SEC_MSR_LOADING: Section = Section { number: "27.4", title: "Loading MSRs" };

/// How the CPU reports a broken rule (SDM Vol. 3C §27.2 "Checks on VMX Controls
/// and Host-State Area", §27.8 "VM-Entry Failures During or After Loading Guest
/// State", Table 31-1 "VM-Instruction Error Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// VMfailValid, VM-instruction error 7 (invalid control fields).
    Control,
    /// VMfailValid, VM-instruction error 8 (invalid host-state fields).
    Host,
    /// VM exit with reason 33 (invalid guest state), exit qualification 0.
    Guest,
    /// Exit reason 33, qualification 2: loading the PDPTEs failed.
    GuestPdpte,
    /// Exit reason 33, qualification 3: NMI injection with blocking by STI.
    GuestNmiSti,
    /// Exit reason 33, qualification 4: invalid VMCS link pointer.
    GuestLinkPointer,
    /// VM exit with reason 34 (MSR loading); qualification: the entry's index from 1.
    MsrLoad,
}

/// One SDM rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, e.g. `guest.rflags.reserved`.
    pub id: &'static str,
    pub section: Section,
    /// One line paraphrasing the SDM's words.
    pub text: &'static str,
    pub stage: Stage,
}

/// A rule the VMCS breaks, with what broke it (a register name, a field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static Rule,
    /// Which register or field, where the rule covers several ("" otherwise).
    pub what: &'static str,
    /// For MSR loading: the entry's index counted from 1 (the exit qualification).
    pub entry: u32,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry check {}: {}", self.rule.id, self.rule.text)?;
        if !self.what.is_empty() {
            write!(f, " [{}]", self.what)?;
        }
        if self.rule.stage == Stage::MsrLoad {
            write!(f, " [entry {}]", self.entry)?;
        }
        write!(f, " ({})", self.rule.section)
    }
}

/// What the checker must know of the CPU besides its capability MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFacts {
    /// Physical-address width, CPUID.80000008H:EAX[7:0].
    pub maxphyaddr: u8,
    /// Linear-address width, CPUID.80000008H:EAX[15:8] (48, or 57 with 5-level paging).
    pub linear_width: u8,
    /// IA32_EFER bits the CPU implements (the others are reserved).
    pub efer_valid: u64,
    /// IA32_PERF_GLOBAL_CTRL bits the CPU implements (CPUID leaf 0AH).
    pub perf_global_ctrl_valid: u64,
    /// IA32_DEBUGCTL bits the CPU implements.
    pub debugctl_valid: u64,
    /// The logical processor is in IA-32e mode (always, for this 64-bit kernel).
    pub ia32e_mode: bool,
    /// SGX (interruptibility bit 4 may be 1), RTM (pending-debug bit 16 may be 1).
    pub sgx: bool,
    pub rtm: bool,
    /// Physical address of the current VMCS (0: unknown, the check is skipped).
    pub current_vmcs: u64,
}

impl CpuFacts {
    /// IA32_EFER: SCE (0), LME (8), LMA (10), NXE (11), from
    /// CPUID.80000001H:EDX bits 11 (SYSCALL), 29 (Intel 64) and 20 (XD) (SDM
    /// Vol. 3A §2.2.1 "Extended Feature Enable Register", Table 2-1 "IA32_EFER
    /// MSR Information").
    pub fn efer_valid_from_cpuid(ext1_edx: u32) -> u64 {
        let mut v = 0;
        if ext1_edx & (1 << 11) != 0 {
            v |= 1;
        }
        if ext1_edx & (1 << 29) != 0 {
            v |= (1 << 8) | (1 << 10);
        }
        if ext1_edx & (1 << 20) != 0 {
            v |= 1 << 11;
        }
        v
    }

    /// IA32_PERF_GLOBAL_CTRL: one enable per general counter
    /// (CPUID.0AH:EAX[15:8]) in bits 0.., one per fixed counter
    /// (CPUID.0AH:EDX[4:0]) in bits 32.. (SDM Vol. 3B §20.2.2 "Architectural
    /// Performance Monitoring Version 2"); none without architectural
    /// performance monitoring v2.
    pub fn perf_global_ctrl_valid_from_cpuid(leaf_a_eax: u32, leaf_a_edx: u32) -> u64 {
        if leaf_a_eax & 0xff < 2 {
            return 0;
        }
        let general = (leaf_a_eax >> 8) & 0xff;
        let fixed = leaf_a_edx & 0x1f;
        let mask = |n: u32| if n >= 32 { 0xffff_ffff } else { (1u64 << n) - 1 };
        mask(general) | (mask(fixed) << 32)
    }
}

/// IA32_DEBUGCTL bits defined on processors with VMX (SDM Vol. 4 Table 2-2
/// "IA-32 Architectural MSRs": LBR 0, BTF 1, TR 6, BTS 7, BTINT 8, BTS_OFF_OS
/// 9, BTS_OFF_USR 10, FREEZE_LBRS_ON_PMI 11, FREEZE_PERFMON_ON_PMI 12,
/// ENABLE_UNCORE_PMI 13, FREEZE_WHILE_SMM 14, RTM_DEBUG 15).
pub const DEBUGCTL_DEFINED: u64 = 0xffc3;

/// Everything the checker looks at.
pub struct Input<'a> {
    pub vmcs: &'a Snapshot,
    pub caps: &'a VmxGlobalData,
    pub cpu: CpuFacts,
    /// Reads 8 bytes of physical memory (the MSR-load area, the VMCS link
    /// pointer's revision identifier, the PDPTEs without EPT); None when the
    /// address is not readable, and then the check that needs it is skipped.
    pub memory: &'a dyn Fn(u64) -> Option<u64>,
    /// Whether WRMSR of `value` to MSR `index` at CPL 0 succeeds (Some(false):
    /// it would raise #GP); None when the caller does not know.
    pub msr_writable: &'a dyn Fn(u32, u64) -> Option<bool>,
    /// Rule ids not to check (empty for the SDM; `departures` uses it to see
    /// the VMCS as an implementation that skips some checks does).
    pub skip: &'a [&'a str],
}

/// The collected violations.
pub(crate) struct Out<'a> {
    pub list: Vec<Violation>,
    pub skip: &'a [&'a str],
}

impl Out<'_> {
    pub fn fail(&mut self, rule: &'static Rule, what: &'static str) {
        if !self.skip.contains(&rule.id) {
            self.list.push(Violation { rule, what, entry: 0 });
        }
    }
    pub fn skips(&self, rule: &Rule) -> bool {
        self.skip.contains(&rule.id)
    }
    pub fn check(&mut self, ok: bool, rule: &'static Rule, what: &'static str) {
        if !ok {
            self.fail(rule, what);
        }
    }
}

/// Values the checks share, decoded once.
pub(crate) struct Ctx<'a> {
    pub v: &'a Snapshot,
    pub caps: &'a VmxGlobalData,
    pub cpu: CpuFacts,
    pub memory: &'a dyn Fn(u64) -> Option<u64>,
    pub msr_writable: &'a dyn Fn(u32, u64) -> Option<bool>,
    pub pin: u32,
    pub proc1: u32,
    /// The secondary controls as the CPU sees them: 0 unless "activate
    /// secondary controls" is 1 (SDM Vol. 3C §25.6.2 "Processor-Based
    /// VM-Execution Controls").
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

impl Ctx<'_> {
    pub fn get(&self, e: u32) -> u64 {
        self.v.get(e)
    }
    pub fn pin_has(&self, b: u32) -> bool {
        self.pin & b != 0
    }
    pub fn proc1_has(&self, b: u32) -> bool {
        self.proc1 & b != 0
    }
    pub fn proc2_has(&self, b: u32) -> bool {
        self.proc2 & b != 0
    }
    pub fn exit_has(&self, b: u32) -> bool {
        self.exit & b != 0
    }
    pub fn entry_has(&self, b: u32) -> bool {
        self.entry & b != 0
    }
    /// Physical address within the CPU's physical-address width.
    pub fn within_width(&self, a: u64) -> bool {
        self.cpu.maxphyaddr >= 64 || a >> self.cpu.maxphyaddr == 0
    }
    /// 4-KByte aligned and within the physical-address width.
    pub fn page_address_ok(&self, a: u64) -> bool {
        a & 0xfff == 0 && self.within_width(a)
    }
    /// Canonical for the CPU's linear-address width.
    pub fn canonical(&self, a: u64) -> bool {
        canonical(a, self.cpu.linear_width)
    }
    pub fn unrestricted_guest(&self) -> bool {
        self.proc2_has(ctl::proc2::UNRESTRICTED_GUEST)
    }
    pub fn ia32e_guest(&self) -> bool {
        self.entry_has(ctl::entry::IA32E_MODE_GUEST)
    }
    /// The VM-entry interruption-information field, if its valid bit is set.
    pub fn injected_event(&self) -> Option<Event> {
        let info = self.get(enc::ENTRY_INTERRUPTION_INFO) as u32;
        (info & (1 << 31) != 0).then_some(Event { info })
    }
}

/// An event to inject (SDM Vol. 3C §25.8.3 "VM-Entry Controls for Event
/// Injection", Table 25-17 "Format of the VM-Entry Interruption-Information
/// Field").
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub info: u32,
}

impl Event {
    pub const EXTERNAL_INTERRUPT: u32 = 0;
    pub const NMI: u32 = 2;
    pub const HARDWARE_EXCEPTION: u32 = 3;
    pub const SOFTWARE_INTERRUPT: u32 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
    pub const SOFTWARE_EXCEPTION: u32 = 6;
    pub const OTHER_EVENT: u32 = 7;
    pub fn vector(&self) -> u32 {
        self.info & 0xff
    }
    pub fn kind(&self) -> u32 {
        (self.info >> 8) & 7
    }
    pub fn deliver_error_code(&self) -> bool {
        self.info & (1 << 11) != 0
    }
}

/// `a` is canonical for a `width`-bit linear address space: bits 63:width-1 all equal.
pub fn canonical(a: u64, width: u8) -> bool {
    let shift = 64 - width as u32;
    (((a << shift) as i64) >> shift) as u64 == a
}

/// Run every check. The order of the list follows the SDM's sections.
pub fn check(input: &Input) -> Vec<Violation> {
    let v = input.vmcs;
    let proc1 = v.get(enc::PRIMARY_PROC_CONTROLS) as u32;
    let ctx = Ctx {
        v,
        caps: input.caps,
        cpu: input.cpu,
        memory: input.memory,
        msr_writable: input.msr_writable,
        pin: v.get(enc::PIN_BASED_CONTROLS) as u32,
        proc1,
        proc2: if proc1 & ctl::proc1::ACTIVATE_SECONDARY != 0 { v.get(enc::SECONDARY_PROC_CONTROLS) as u32 } else { 0 },
        exit: v.get(enc::EXIT_CONTROLS) as u32,
        entry: v.get(enc::ENTRY_CONTROLS) as u32,
    };
    let mut out = Out { list: Vec::new(), skip: input.skip };
    controls::check(&ctx, &mut out);
    host::check(&ctx, &mut out);
    guest_regs::check(&ctx, &mut out);
    guest_segments::check(&ctx, &mut out);
    guest_other::check(&ctx, &mut out);
    // MSR loading happens only once the guest state is loaded (SDM Vol. 3C
    // §27.4 "Loading MSRs").
    if out.list.is_empty() {
        msr_load::check(&ctx, &mut out);
    }
    out.list
}

/// Every rule, for the documentation and the tests.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    controls::RULES
        .iter()
        .chain(host::RULES)
        .chain(guest_regs::RULES)
        .chain(guest_segments::RULES)
        .chain(guest_other::RULES)
        .chain(msr_load::RULES)
        .copied()
}

/// A rule by its id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    all_rules().find(|r| r.id == id)
}

/// Declare a rule constant tersely.
macro_rules! rule_def {
    ($name:ident, $id:literal, $sec:expr, $stage:ident, $text:literal) => {
        pub static $name: $crate::entry_check::Rule = $crate::entry_check::Rule {
            id: $id,
            section: $sec,
            text: $text,
            stage: $crate::entry_check::Stage::$stage,
        };
    };
}
pub(crate) use rule_def;
