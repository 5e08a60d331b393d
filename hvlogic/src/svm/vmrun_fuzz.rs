//! The SVM entry fuzzer's pure half, `entry_fuzz`'s counterpart: a seeded
//! generator of VMCB mutations biased toward the VMRUN checks' boundaries
//! (EFER, CR0, CR3, CR4 and the mode combinations, DR6/DR7's upper halves,
//! CS.L/CS.D, the VMRUN intercept, the permission maps at the top of the
//! physical-address width, the ASID, event injection, nested paging, NMI
//! virtualization, CET), plus fields no check reads; and the policy that
//! decides which mutations may really be executed.
//!
//! A mutation changes one to three fields of a valid VMCB. The kernel asks
//! `vmrun_check` for a verdict (and `departures` for the emulator's), runs
//! VMRUN and compares. Executing is only safe when whatever the guest does,
//! it stays confined and stops: see `Policy::allows`.

use super::vmcb::{control, intercept1, np, save, vintr, ProofAddresses, Vmcb};
use super::vmrun_check::{cr, efer, Cpu};
use crate::entry_fuzz::Rng;
use core::fmt;

/// A VMCB field: where it is and how wide (1, 2, 4 or 8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub width: usize,
}

const fn f(name: &'static str, offset: usize, width: usize) -> Field {
    Field { name, offset, width }
}

const fn seg(name: &'static str, at: usize, part: usize, width: usize) -> Field {
    Field { name, offset: at + part, width }
}

pub mod fields {
    use super::{f, seg, Field};
    use crate::svm::vmcb::{control as c, save as s};
    pub const INTERCEPT_CR: Field = f("INTERCEPT_CR", c::INTERCEPT_CR, 4);
    pub const INTERCEPT_DR: Field = f("INTERCEPT_DR", c::INTERCEPT_DR, 4);
    pub const INTERCEPT_EXCEPTIONS: Field = f("INTERCEPT_EXCEPTIONS", c::INTERCEPT_EXCEPTIONS, 4);
    pub const INTERCEPT1: Field = f("INTERCEPT1", c::INTERCEPT1, 4);
    pub const INTERCEPT2: Field = f("INTERCEPT2", c::INTERCEPT2, 4);
    pub const INTERCEPT3: Field = f("INTERCEPT3", c::INTERCEPT3, 4);
    pub const IOPM_BASE_PA: Field = f("IOPM_BASE_PA", c::IOPM_BASE_PA, 8);
    pub const MSRPM_BASE_PA: Field = f("MSRPM_BASE_PA", c::MSRPM_BASE_PA, 8);
    pub const TSC_OFFSET: Field = f("TSC_OFFSET", c::TSC_OFFSET, 8);
    pub const GUEST_ASID: Field = f("GUEST_ASID", c::GUEST_ASID, 4);
    pub const TLB_CONTROL: Field = f("TLB_CONTROL", c::TLB_CONTROL, 1);
    pub const VINTR: Field = f("VINTR", c::VINTR, 8);
    pub const INTERRUPT_SHADOW: Field = f("INTERRUPT_SHADOW", c::INTERRUPT_SHADOW, 8);
    pub const NP_CONTROL: Field = f("NP_CONTROL", c::NP_CONTROL, 8);
    pub const EVENTINJ: Field = f("EVENTINJ", c::EVENTINJ, 8);
    pub const N_CR3: Field = f("N_CR3", c::N_CR3, 8);
    pub const ES_SEL: Field = seg("ES.sel", s::ES, s::SEL, 2);
    pub const CS_SEL: Field = seg("CS.sel", s::CS, s::SEL, 2);
    pub const SS_SEL: Field = seg("SS.sel", s::SS, s::SEL, 2);
    pub const DS_SEL: Field = seg("DS.sel", s::DS, s::SEL, 2);
    pub const ES_ATTRIB: Field = seg("ES.attrib", s::ES, s::ATTRIB, 2);
    pub const CS_ATTRIB: Field = seg("CS.attrib", s::CS, s::ATTRIB, 2);
    pub const SS_ATTRIB: Field = seg("SS.attrib", s::SS, s::ATTRIB, 2);
    pub const DS_ATTRIB: Field = seg("DS.attrib", s::DS, s::ATTRIB, 2);
    pub const CS_LIMIT: Field = seg("CS.limit", s::CS, s::LIMIT, 4);
    pub const SS_LIMIT: Field = seg("SS.limit", s::SS, s::LIMIT, 4);
    pub const ES_BASE: Field = seg("ES.base", s::ES, s::BASE, 8);
    pub const CS_BASE: Field = seg("CS.base", s::CS, s::BASE, 8);
    pub const SS_BASE: Field = seg("SS.base", s::SS, s::BASE, 8);
    pub const DS_BASE: Field = seg("DS.base", s::DS, s::BASE, 8);
    pub const FS_BASE: Field = seg("FS.base", s::FS, s::BASE, 8);
    pub const GS_BASE: Field = seg("GS.base", s::GS, s::BASE, 8);
    pub const GDTR_BASE: Field = seg("GDTR.base", s::GDTR, s::BASE, 8);
    pub const GDTR_LIMIT: Field = seg("GDTR.limit", s::GDTR, s::LIMIT, 4);
    pub const IDTR_BASE: Field = seg("IDTR.base", s::IDTR, s::BASE, 8);
    pub const IDTR_LIMIT: Field = seg("IDTR.limit", s::IDTR, s::LIMIT, 4);
    pub const LDTR_ATTRIB: Field = seg("LDTR.attrib", s::LDTR, s::ATTRIB, 2);
    pub const TR_ATTRIB: Field = seg("TR.attrib", s::TR, s::ATTRIB, 2);
    pub const CPL: Field = f("CPL", s::CPL, 1);
    pub const EFER: Field = f("EFER", s::EFER, 8);
    pub const CR0: Field = f("CR0", s::CR0, 8);
    pub const CR3: Field = f("CR3", s::CR3, 8);
    pub const CR4: Field = f("CR4", s::CR4, 8);
    pub const DR6: Field = f("DR6", s::DR6, 8);
    pub const DR7: Field = f("DR7", s::DR7, 8);
    pub const RFLAGS: Field = f("RFLAGS", s::RFLAGS, 8);
    pub const RIP: Field = f("RIP", s::RIP, 8);
    pub const RSP: Field = f("RSP", s::RSP, 8);
    pub const RAX: Field = f("RAX", s::RAX, 8);
    pub const S_CET: Field = f("S_CET", s::S_CET, 8);
    pub const G_PAT: Field = f("G_PAT", s::G_PAT, 8);
    pub const DBGCTL: Field = f("DBGCTL", s::DBGCTL, 8);
}

use fields::*;

/// The fields the mutator changes. Not the VMCB clean bits (a CPU that
/// honors them would run cached state instead of the mutation), the
/// AVIC/SEV pointers, or the exit information VMRUN does not read.
pub const TARGETS: &[Field] = &[
    INTERCEPT_CR,
    INTERCEPT_DR,
    INTERCEPT_EXCEPTIONS,
    INTERCEPT1,
    INTERCEPT2,
    INTERCEPT3,
    IOPM_BASE_PA,
    MSRPM_BASE_PA,
    TSC_OFFSET,
    GUEST_ASID,
    TLB_CONTROL,
    VINTR,
    INTERRUPT_SHADOW,
    NP_CONTROL,
    EVENTINJ,
    N_CR3,
    ES_SEL,
    CS_SEL,
    SS_SEL,
    DS_SEL,
    ES_ATTRIB,
    CS_ATTRIB,
    SS_ATTRIB,
    DS_ATTRIB,
    CS_LIMIT,
    SS_LIMIT,
    ES_BASE,
    CS_BASE,
    SS_BASE,
    DS_BASE,
    FS_BASE,
    GS_BASE,
    GDTR_BASE,
    GDTR_LIMIT,
    IDTR_BASE,
    IDTR_LIMIT,
    LDTR_ATTRIB,
    TR_ATTRIB,
    CPL,
    EFER,
    CR0,
    CR3,
    CR4,
    DR6,
    DR7,
    RFLAGS,
    RIP,
    RSP,
    RAX,
    S_CET,
    G_PAT,
    DBGCTL,
];

/// Fields that rules combine: a mutation draws from one group 40% of the time.
pub const GROUPS: &[&[Field]] = &[
    // Modes: EFER.LME with CR0.PG, CR0.PE, CR4.PAE, CS.L and CS.D; CR3 in long mode.
    &[EFER, CR0, CR4, CS_ATTRIB, CR3],
    // Event injection against the mode (#BR, #OF in 64-bit mode).
    &[EVENTINJ, EFER, CR0, CS_ATTRIB],
    // Controls: intercepts, NMI virtualization, nested paging.
    &[INTERCEPT1, INTERCEPT2, VINTR, NP_CONTROL, N_CR3, G_PAT, GUEST_ASID],
    // The permission maps.
    &[IOPM_BASE_PA, MSRPM_BASE_PA],
    // CET.
    &[CR4, CR0, S_CET],
];

/// Up to three field changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub changes: [(Field, u64); 3],
    pub len: usize,
}

impl Default for Mutation {
    fn default() -> Mutation {
        Mutation { changes: [(TSC_OFFSET, 0); 3], len: 0 }
    }
}

impl Mutation {
    pub fn iter(&self) -> impl Iterator<Item = (Field, u64)> + '_ {
        self.changes[..self.len].iter().copied()
    }

    /// Add a change, cut to the field's width; a second change of a field replaces the first.
    pub fn push(&mut self, field: Field, value: u64) {
        let value = if field.width >= 8 { value } else { value & ((1u64 << (8 * field.width)) - 1) };
        if let Some(c) = self.changes[..self.len].iter_mut().find(|c| c.0 == field) {
            c.1 = value;
        } else if self.len < 3 {
            self.changes[self.len] = (field, value);
            self.len += 1;
        }
    }

    pub fn touches(&self, field: Field) -> bool {
        self.iter().any(|(f, _)| f == field)
    }

    /// The VMCB with this mutation applied.
    pub fn apply(&self, base: &Vmcb) -> Vmcb {
        let mut v = base.clone();
        for (f, value) in self.iter() {
            v.write(f.offset, f.width, value);
        }
        v
    }

    /// Shown with the original values: `CR0=0x30 (was 0x10)`.
    pub fn describe<'a>(&'a self, base: &'a Vmcb) -> Describe<'a> {
        Describe(self, base)
    }
}

pub struct Describe<'a>(&'a Mutation, &'a Vmcb);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, value)) in self.0.iter().enumerate() {
            let was = self.1.read(field.offset, field.width);
            write!(f, "{}{}={value:#x} (was {was:#x})", if i > 0 { ", " } else { "" }, field.name)?;
        }
        Ok(())
    }
}

const NONCANONICAL: [u64; 4] =
    [0x0000_8000_0000_0000, 0xffff_7fff_ffff_f000, 0x8000_0000_0000_0000, 0x0001_0000_0000_0000];

/// The generator: a valid base, the CPU, and a spare page the kernel keeps
/// for mutated map addresses to point at.
pub struct Mutator<'a> {
    pub base: &'a Vmcb,
    pub cpu: Cpu,
    pub spare_page: u64,
}

impl Mutator<'_> {
    /// One to three field changes.
    pub fn mutate(&self, rng: &mut Rng) -> Mutation {
        let mut m = Mutation::default();
        let n = 1 + rng.below(3) as usize;
        let pool = if rng.chance(40) { rng.pick(GROUPS) } else { TARGETS };
        let mut tries = 0;
        while m.len < n && tries < 20 {
            tries += 1;
            let field = rng.pick(pool);
            let current = m.iter().find(|c| c.0 == field).map_or(self.base.read(field.offset, field.width), |c| c.1);
            let value = self.value(field, current, rng);
            m.push(field, value);
        }
        m
    }

    fn width_bit(&self) -> u64 {
        1u64 << self.cpu.maxphyaddr.min(63)
    }

    /// A permission map's base: low bits (ignored), the highest base that
    /// fits and the next page up, beyond the width, or the spare page.
    fn map(&self, v: u64, size: u64, rng: &mut Rng) -> u64 {
        match rng.below(7) {
            0 => v | 0xfff,
            1 => self.width_bit() - size,
            2 => self.width_bit() - size - 0x1000,
            3 => v | self.width_bit(),
            4 => v | (1 << 63),
            5 => self.spare_page,
            _ => !0xfff,
        }
    }

    fn value(&self, field: Field, v: u64, rng: &mut Rng) -> u64 {
        let flip = |v: u64, bits: &[u64], rng: &mut Rng| v ^ (1 << rng.pick(bits));
        match field {
            INTERCEPT2 if rng.chance(50) => v ^ 1,
            INTERCEPT2 => v ^ (1 << rng.below(16)),
            INTERCEPT3 => v ^ (1 << rng.below(8)),
            INTERCEPT_CR | INTERCEPT_DR | INTERCEPT_EXCEPTIONS | INTERCEPT1 => v ^ (1 << rng.below(32)),
            IOPM_BASE_PA => self.map(v, 0x3000, rng),
            MSRPM_BASE_PA => self.map(v, 0x2000, rng),
            GUEST_ASID => {
                let n = self.cpu.svm.nasid as u64;
                rng.pick(&[0, 1, 2, n.saturating_sub(1), n, 0xffff_ffff])
            }
            TLB_CONTROL => rng.pick(&[0, 1, 2, 3, 7, 0xff]),
            VINTR if rng.chance(20) => (v & !0xff) | rng.below(256),
            VINTR => flip(v, &[8, 9, 11, 12, 16, 19, 20, 24, 25, 26, 31], rng),
            INTERRUPT_SHADOW => rng.pick(&[0, 1, 2, 3]),
            NP_CONTROL => v ^ (1 << rng.below(8)),
            EVENTINJ => self.event(rng),
            N_CR3 => match rng.below(4) {
                0 => v | (1 << (52 + rng.below(12))),
                1 => v | self.width_bit(),
                2 => v | 0x18,
                _ => v ^ (1 << (12 + rng.below(40))),
            },
            ES_SEL | CS_SEL | SS_SEL | DS_SEL => rng.pick(&[0, v ^ 1, v ^ 3, v ^ 4, 0x8, 0x10, 0xf000]),
            ES_ATTRIB | CS_ATTRIB | SS_ATTRIB | DS_ATTRIB | LDTR_ATTRIB | TR_ATTRIB => self.attrib(v, rng),
            CS_LIMIT | SS_LIMIT | GDTR_LIMIT | IDTR_LIMIT => rng.pick(&[0, 0xffff, 0x1_0000, 0xf_ffff, 0xffff_ffff]),
            ES_BASE | CS_BASE | SS_BASE | DS_BASE | FS_BASE | GS_BASE | GDTR_BASE | IDTR_BASE => match rng.below(4) {
                0 => rng.pick(&NONCANONICAL),
                1 => v | (1 << 32),
                2 => 0xffff_0000,
                _ => 0,
            },
            CPL => rng.below(4),
            EFER if rng.chance(15) => v ^ (efer::LME | efer::LMA),
            EFER => flip(v, &[0, 1, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 32, 63], rng),
            CR0 if rng.chance(15) => v ^ (cr::CR0_PE | cr::CR0_PG),
            CR0 => flip(v, &[0, 1, 2, 3, 4, 5, 6, 16, 18, 29, 30, 31, 32, 63], rng),
            CR3 => match rng.below(6) {
                0 => v | self.width_bit(),
                1 => v | (1 << 63),
                2 => v | (1 << 52),
                3 => v | 0xfff,
                4 => v ^ (1 << 32),
                _ => v ^ (1 << rng.below(64)),
            },
            CR4 => {
                v ^ (1
                    << rng.pick(&[
                        0u64, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 31, 32,
                    ]))
            }
            DR6 | DR7 => rng.pick(&[v | (1 << 32), v | (1 << 63), 0, 0xffff_ffff, v ^ 1]),
            RFLAGS => flip(v, &[1, 3, 5, 8, 9, 14, 15, 16, 17, 18, 19, 20, 21, 22, 31, 63], rng),
            RIP => rng.pick(&[v | (1 << 32), NONCANONICAL[0], 0xfff0, 0, 0xffff_ffff, 0x1_0000]),
            S_CET => rng.pick(&[0, 1, 2, 3, 4, 1 << 10, 1 << 63]),
            G_PAT => {
                let byte = rng.below(8) * 8;
                (v & !(0xff << byte)) | (rng.pick(&[0u64, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0xff]) << byte)
            }
            DBGCTL => rng.pick(&[0, 1, 2, 1 << 63]),
            _ => v ^ (1 << rng.below(64)),
        }
    }

    /// Segment attributes: a well-known value (code, data, 64-bit code with
    /// and without D, TSS, LDT, null) or a flipped bit (type, S, DPL, P, AVL,
    /// L, D/B, G, the unused 15:12).
    fn attrib(&self, v: u64, rng: &mut Rng) -> u64 {
        if rng.chance(50) {
            rng.pick(&[0x9b, 0x93, 0xa9b, 0xc9b, 0xe9b, 0x29b, 0x69b, 0xc93, 0x8b, 0x83, 0x82, 0xf3, 0])
        } else {
            v ^ (1 << rng.below(16))
        }
    }

    /// An EVENTINJ value: usually valid, any TYPE, vectors around the
    /// exceptions (reserved ones, #BR, #OF, NMI, above 31), EV sometimes,
    /// a reserved bit sometimes.
    fn event(&self, rng: &mut Rng) -> u64 {
        if rng.chance(10) {
            return 0;
        }
        let kind = rng.below(8);
        let vector = rng.pick(&[0u64, 1, 2, 3, 4, 5, 6, 8, 9, 13, 14, 15, 17, 20, 21, 22, 28, 29, 30, 31, 32, 0xff]);
        let mut e = (1 << 31) | (kind << 8) | vector;
        if rng.chance(40) {
            e |= (1 << 11) | (rng.below(0x1_0000) << 32);
        }
        if rng.chance(10) {
            e |= 1 << (12 + rng.below(19));
        }
        e
    }
}

/// The INTERCEPT1 bits a mutation may never clear where the base sets them:
/// the physical interrupts (the watchdog, the host's own IPIs), INIT and SMI,
/// VINTR (the base may use it to stop the guest at once), HLT and shutdown
/// (a guest that halts or triple-faults must come back), and the I/O and MSR
/// intercepts (the guest must not reach a port or an MSR of the host).
pub const SAFETY_INTERCEPTS: &[(u32, &str)] = &[
    (intercept1::INTR, "INTR"),
    (intercept1::NMI, "NMI"),
    (intercept1::SMI, "SMI"),
    (intercept1::INIT, "INIT"),
    (intercept1::VINTR, "VINTR"),
    (intercept1::HLT, "HLT"),
    (intercept1::IOIO_PROT, "IOIO"),
    (intercept1::MSR_PROT, "MSR"),
    (intercept1::SHUTDOWN, "SHUTDOWN"),
];

/// Why a mutation is not executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It clears an intercept the base relies on (`SAFETY_INTERCEPTS`, or an
    /// exception intercept).
    LosesIntercept(&'static str),
    /// It clears NP_ENABLE: the guest's page tables would map host memory.
    NestedPagingOff,
    /// It changes nCR3's table address (bits 51:12): a walker that ignores
    /// the MBZ bits, or a departure, would use other memory as nested tables.
    NestedRootMoved,
    /// It clears V_INTR_MASKING: the guest's RFLAGS.IF would mask the host's
    /// interrupts, the watchdog's among them.
    InterruptMaskingOff,
    /// It enables AVIC, SEV or SEV-ES, whose checks are not modeled and
    /// whose tables the kernel has not prepared.
    NotModeled,
    /// An ASID at or beyond NASID: a CPU might alias it with another ASID
    /// (the host's 0 among them).
    AsidOutOfRange,
    /// Without nested paging the guest's paging is the host's protection:
    /// the guest runs on page tables the hypervisor owns, so CR0, CR3, CR4,
    /// EFER, NP_CONTROL and N_CR3 stay as the base has them (a guest with
    /// paging off, or on other tables, would reach host memory).
    GuestPaging,
}

impl Refusal {
    /// A short name for the refusal counts.
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::LosesIntercept(_) => "intercept",
            Refusal::NestedPagingOff => "nested-paging-off",
            Refusal::NestedRootMoved => "ncr3-moved",
            Refusal::InterruptMaskingOff => "v-intr-masking-off",
            Refusal::NotModeled => "not-modeled",
            Refusal::AsidOutOfRange => "asid-range",
            Refusal::GuestPaging => "guest-paging",
        }
    }

    /// Every refusal's name, in the order of the refusal counts.
    pub const NAMES: [&'static str; 7] = [
        "intercept",
        "nested-paging-off",
        "ncr3-moved",
        "v-intr-masking-off",
        "not-modeled",
        "asid-range",
        "guest-paging",
    ];
}

/// The fields that make up the guest's paging where the hypervisor owns it
/// (no nested paging): `Refusal::GuestPaging`.
pub const PAGING_FIELDS: [Field; 6] = [CR0, CR3, CR4, EFER, NP_CONTROL, N_CR3];

/// Which mutations may be executed on this CPU.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// CPUID Fn8000_000A_EBX: the number of ASIDs.
    pub nasid: u32,
    /// The base runs its guest with nested paging; without, the guest's own
    /// paging (on host-owned tables) is what confines it.
    pub nested_paging: bool,
}

impl Policy {
    /// The policy for mutations of `base` on `cpu`.
    pub fn new(cpu: &Cpu, base: &Vmcb) -> Policy {
        Policy { nasid: cpu.svm.nasid, nested_paging: cpu.nested_paging(base) }
    }

    /// A mutated VMCB may be executed if, whatever VMRUN does with it, a
    /// guest that runs stays inside its nested page tables and comes back:
    /// - every safety intercept and exception intercept the base sets stays
    ///   set (with all guest memory HLT and every exception intercepted, the
    ///   guest exits within one instruction; the INTR intercept keeps the
    ///   watchdog);
    /// - nested paging stays on, at the same nested tables (nCR3 bits 51:12),
    ///   and V_INTR_MASKING stays set where the base sets it;
    /// - nothing the checker does not model is enabled (AVIC, SEV, SEV-ES);
    /// - the ASID is 0 (which every implementation refuses) or below NASID;
    /// - without nested paging, the guest's paging is the base's (CR0, CR3,
    ///   CR4, EFER, NP_CONTROL, N_CR3 unchanged): the host-owned tables map
    ///   only guest memory.
    ///
    /// Clearing the VMRUN intercept is fine: VMRUN must then fail, and a
    /// guest that ran would still meet HLT first. The verdict plays no part:
    /// a departure or a checker mistake may run any VMCB.
    pub fn allows(&self, base: &Vmcb, after: &Vmcb) -> Result<(), Refusal> {
        let same = |f: &Field| base.read(f.offset, f.width) == after.read(f.offset, f.width);
        if !self.nested_paging && !PAGING_FIELDS.iter().all(same) {
            return Err(Refusal::GuestPaging);
        }
        let one = (base.read_u32(control::INTERCEPT1), after.read_u32(control::INTERCEPT1));
        for (bit, name) in SAFETY_INTERCEPTS {
            if one.0 & bit != 0 && one.1 & bit == 0 {
                return Err(Refusal::LosesIntercept(name));
            }
        }
        let x = (base.read_u32(control::INTERCEPT_EXCEPTIONS), after.read_u32(control::INTERCEPT_EXCEPTIONS));
        if x.0 & !x.1 != 0 {
            return Err(Refusal::LosesIntercept("exception"));
        }
        let n = (base.read_u64(control::NP_CONTROL), after.read_u64(control::NP_CONTROL));
        if n.0 & np::ENABLE != 0 && n.1 & np::ENABLE == 0 {
            return Err(Refusal::NestedPagingOff);
        }
        const ROOT: u64 = 0x000f_ffff_ffff_f000;
        if (base.read_u64(control::N_CR3) ^ after.read_u64(control::N_CR3)) & ROOT != 0 {
            return Err(Refusal::NestedRootMoved);
        }
        let i = (base.read_u64(control::VINTR), after.read_u64(control::VINTR));
        if i.0 & vintr::V_INTR_MASKING != 0 && i.1 & vintr::V_INTR_MASKING == 0 {
            return Err(Refusal::InterruptMaskingOff);
        }
        let sev = np::SEV | np::SEV_ES;
        if (i.1 & !i.0 & vintr::AVIC_ENABLE) != 0 || (n.1 & !n.0 & sev) != 0 {
            return Err(Refusal::NotModeled);
        }
        let asid = after.read_u32(control::GUEST_ASID);
        if asid != 0 && self.nasid != 0 && asid >= self.nasid {
            return Err(Refusal::AsidOutOfRange);
        }
        Ok(())
    }
}

/// `base` in 64-bit mode: the state save area of `Vmcb::proof_guest_long_mode`
/// (the segments, CPL, EFER, CR0, CR3, CR4, RIP, RSP; CR3, the GDT and the
/// entry at `at`'s guest addresses) over `base`'s controls and its other
/// state. The entry fuzzer's second base: the long-mode rules (CS.L with
/// CS.D, #BR and #OF in 64-bit mode, CR3 in long mode) need four or more
/// changes from a real-mode start, one or two from this one.
pub fn in_long_mode(base: &Vmcb, at: &ProofAddresses) -> Vmcb {
    let long = Vmcb::proof_guest_long_mode(at);
    let mut v = base.clone();
    for (seg, _) in save::SEGMENTS {
        v.set_segment(seg, long.segment(seg));
    }
    for (offset, width) in [
        (save::CPL, 1),
        (save::EFER, 8),
        (save::CR0, 8),
        (save::CR3, 8),
        (save::CR4, 8),
        (save::RIP, 8),
        (save::RSP, 8),
    ] {
        v.write(offset, width, long.read(offset, width));
    }
    v
}

/// A guest entered with this VMCB takes a #VMEXIT before its first
/// instruction: a virtual interrupt is pending that nothing masks (V_IRQ with
/// V_IGN_TPR, RFLAGS.IF, no interrupt shadow) and VINTR is intercepted (APM
/// Vol. 2 §15.21.4 "Injecting Virtual (INTR) Interrupts", §15.21.6 "Virtual
/// Interrupt Intercept"). No event may be injected (it is delivered first).
pub fn stops_at_once(v: &Vmcb) -> bool {
    let i = v.read_u64(control::VINTR);
    v.has_intercept1(intercept1::VINTR)
        && i & vintr::V_IRQ != 0
        && i & vintr::V_IGN_TPR != 0
        && v.read_u64(save::RFLAGS) & (1 << 9) != 0
        && v.read_u64(control::INTERRUPT_SHADOW) & 1 == 0
        && v.read_u64(control::EVENTINJ) & (1 << 31) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svm::vmcb::{event as ev, intercept2};
    use crate::svm::vmrun_check::efer;
    use crate::svm::vmrun_check::{self, Cpuid};
    use std::collections::BTreeSet;

    fn cpu() -> Cpu {
        let mut c = Cpuid {
            l1_edx: (1 << 1) | (1 << 6) | (1 << 24) | (1 << 25),
            l1_ecx: 1 << 17,
            l7_ecx: 1 << 7,
            e1_ecx: 1 << 2,
            e1_edx: (1 << 11) | (1 << 20) | (1 << 29),
            e8_eax: 40 | (48 << 8),
            ea_ebx: 16,
            ..Cpuid::default()
        };
        c.ea_edx = crate::svm::features::edx::NP | crate::svm::features::edx::VNMI;
        Cpu::from_cpuid(&c)
    }

    fn base() -> Vmcb {
        let mut v = Vmcb::proof_guest_real_mode(&ProofAddresses::EXAMPLE);
        let one = v.read_u32(control::INTERCEPT1) | intercept1::INTR | intercept1::NMI | intercept1::VINTR;
        v.write_u32(control::INTERCEPT1, one);
        v.write_u32(control::INTERCEPT_EXCEPTIONS, 0xffff_ffff);
        v.write_u64(control::VINTR, vintr::V_INTR_MASKING | vintr::V_IRQ | vintr::V_IGN_TPR);
        v.write_u64(save::RFLAGS, 0x202);
        v
    }

    fn mutator(b: &Vmcb) -> Mutator<'_> {
        Mutator { base: b, cpu: cpu(), spare_page: 0x40_0000 }
    }

    #[test]
    fn the_fuzz_base_is_valid_and_stops_at_once() {
        let b = base();
        assert!(vmrun_check::check(&b, &cpu()).is_empty());
        assert!(stops_at_once(&b));
        let mut v = b.clone();
        v.write_u64(control::INTERRUPT_SHADOW, 1);
        assert!(!stops_at_once(&v));
        let mut v = b.clone();
        v.write_u64(control::EVENTINJ, ev::NMI);
        assert!(!stops_at_once(&v));
        assert!(!stops_at_once(&Vmcb::proof_guest_real_mode(&ProofAddresses::EXAMPLE)));
    }

    #[test]
    fn the_long_mode_base_is_valid_stops_at_once_and_reaches_the_long_mode_rules() {
        let c = cpu();
        let b = in_long_mode(&base(), &ProofAddresses::EXAMPLE);
        assert!(vmrun_check::check(&b, &c).is_empty(), "{:?}", vmrun_check::check(&b, &c));
        assert!(stops_at_once(&b));
        assert_eq!(b.read_u32(control::INTERCEPT_EXCEPTIONS), 0xffff_ffff, "the controls are the base's");
        assert_eq!(b.read_u64(save::EFER), crate::svm::EFER_SVME | efer::LMA | efer::LME);
        let m = Mutator { base: &b, cpu: c, spare_page: 0x40_0000 };
        let mut rng = Rng::new(5);
        let mut reached = BTreeSet::new();
        for _ in 0..20_000 {
            for v in vmrun_check::check(&m.mutate(&mut rng).apply(&b), &c) {
                reached.insert(v.rule.id);
            }
        }
        for id in ["svm.cs.l_and_d", "svm.event.br_in_64bit_mode", "svm.event.of_in_64bit_mode", "svm.cr3.mbz"] {
            assert!(reached.contains(id), "{id}");
        }
    }

    #[test]
    fn same_seed_same_mutations_and_one_to_three_fields() {
        let b = base();
        let m = mutator(&b);
        let (mut r1, mut r2) = (Rng::new(42), Rng::new(42));
        let mut lens = [0; 4];
        for _ in 0..2000 {
            let a = m.mutate(&mut r1);
            assert_eq!(a, m.mutate(&mut r2));
            assert!((1..=3).contains(&a.len));
            lens[a.len] += 1;
            for (f, v) in a.iter() {
                assert!(TARGETS.contains(&f));
                assert!(f.width == 8 || v >> (8 * f.width) == 0, "{} cut to its width", f.name);
            }
        }
        assert!(lens[1] > 300 && lens[2] > 300 && lens[3] > 300, "{lens:?}");
        assert_ne!(m.mutate(&mut Rng::new(42)), m.mutate(&mut Rng::new(43)));
    }

    #[test]
    fn every_target_gets_mutated_and_fields_do_not_overlap() {
        let b = base();
        let m = mutator(&b);
        let mut rng = Rng::new(7);
        let mut seen = BTreeSet::new();
        for _ in 0..20_000 {
            for (f, _) in m.mutate(&mut rng).iter() {
                seen.insert(f.name);
            }
        }
        assert_eq!(seen.len(), TARGETS.len());
        for (i, a) in TARGETS.iter().enumerate() {
            assert!(a.offset + a.width <= crate::svm::vmcb::SIZE && [1, 2, 4, 8].contains(&a.width));
            for b in &TARGETS[i + 1..] {
                assert!(a.offset + a.width <= b.offset || b.offset + b.width <= a.offset, "{} {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn mutations_reach_most_rules() {
        let c = cpu();
        let mut reached = BTreeSet::new();
        for (seed, b) in [(1, base()), (2, Vmcb::proof_guest_long_mode(&ProofAddresses::EXAMPLE))] {
            let m = Mutator { base: &b, cpu: c, spare_page: 0x40_0000 };
            let mut rng = Rng::new(seed);
            for _ in 0..10_000 {
                let after = m.mutate(&mut rng).apply(&b);
                for v in vmrun_check::check(&after, &c) {
                    reached.insert(v.rule.id);
                }
            }
        }
        // Not reached without memory or another CPU: the PDPEs (nested
        // paging is on), host paging, a CPU without long mode.
        let unreachable = ["svm.pdpe.reserved", "svm.np.host_paging", "svm.efer.long_mode_unsupported"];
        for r in vmrun_check::all_rules() {
            assert_eq!(reached.contains(r.id), !unreachable.contains(&r.id), "{}", r.id);
        }
    }

    #[test]
    fn describe_shows_old_and_new_values() {
        let b = base();
        let mut m = Mutation::default();
        m.push(CR0, 0x31);
        m.push(CR0, 0x11);
        m.push(TLB_CONTROL, 0x1ff);
        assert_eq!(m.len, 2);
        assert_eq!(std::format!("{}", m.describe(&b)), "CR0=0x11 (was 0x10), TLB_CONTROL=0xff (was 0x0)");
        let after = m.apply(&b);
        assert_eq!(after.read_u64(save::CR0), 0x11);
        assert_eq!(after.read_u8(control::TLB_CONTROL), 0xff);
        assert_eq!(after.read_u32(control::GUEST_ASID), 1, "the neighbour untouched");
        assert!(m.touches(CR0) && !m.touches(CR4));
        let mut w = Mutation::default();
        w.push(CS_ATTRIB, 0x1_0a9b);
        w.push(GUEST_ASID, 0x1_0000_0001);
        w.push(CPL, 0x103);
        w.push(CR4, 1);
        assert_eq!(w.len, 3, "three at most");
        assert_eq!(w.iter().map(|c| c.1).collect::<std::vec::Vec<_>>(), [0xa9b, 1, 3], "cut to the field width");
    }

    #[test]
    fn policy_refuses_what_could_escape_or_not_come_back() {
        let b = base();
        let p = Policy::new(&cpu(), &b);
        let with = |f: Field, value: u64| {
            let mut m = Mutation::default();
            m.push(f, value);
            m.apply(&b)
        };
        let one = b.read_u32(control::INTERCEPT1) as u64;
        assert_eq!(p.allows(&b, &b), Ok(()));
        assert_eq!(p.allows(&b, &with(INTERCEPT2, intercept2::VMMCALL as u64)), Ok(()), "VMRUN intercept off: fine");
        let mut kept = 0;
        for (bit, name) in SAFETY_INTERCEPTS.iter().filter(|(bit, _)| one & *bit as u64 != 0) {
            assert_eq!(p.allows(&b, &with(INTERCEPT1, one & !(*bit as u64))), Err(Refusal::LosesIntercept(name)));
            kept += 1;
        }
        assert_eq!(kept, 7, "INTR, NMI, VINTR, HLT, IOIO, MSR, SHUTDOWN");
        assert_eq!(p.allows(&b, &with(INTERCEPT1, one | intercept1::PAUSE as u64)), Ok(()));
        assert_eq!(p.allows(&b, &with(INTERCEPT1, one & !(intercept1::CPUID as u64))), Ok(()));
        assert_eq!(p.allows(&b, &with(INTERCEPT_EXCEPTIONS, 0xffff_fffe)), Err(Refusal::LosesIntercept("exception")));
        assert_eq!(p.allows(&b, &with(NP_CONTROL, 0)), Err(Refusal::NestedPagingOff));
        assert_eq!(p.allows(&b, &with(NP_CONTROL, np::ENABLE | np::GMET)), Ok(()));
        assert_eq!(p.allows(&b, &with(NP_CONTROL, np::ENABLE | np::SEV)), Err(Refusal::NotModeled));
        let ncr3 = b.read_u64(control::N_CR3);
        assert_eq!(p.allows(&b, &with(N_CR3, ncr3 | (1 << 63) | (1 << 52) | 0x18)), Ok(()));
        assert_eq!(p.allows(&b, &with(N_CR3, ncr3 | (1 << 40))), Err(Refusal::NestedRootMoved));
        assert_eq!(p.allows(&b, &with(N_CR3, ncr3 ^ 0x1000)), Err(Refusal::NestedRootMoved));
        let i = b.read_u64(control::VINTR);
        assert_eq!(p.allows(&b, &with(VINTR, i & !vintr::V_INTR_MASKING)), Err(Refusal::InterruptMaskingOff));
        assert_eq!(p.allows(&b, &with(VINTR, i | vintr::AVIC_ENABLE)), Err(Refusal::NotModeled));
        assert_eq!(p.allows(&b, &with(VINTR, i | vintr::V_NMI_ENABLE)), Ok(()));
        assert_eq!(p.allows(&b, &with(GUEST_ASID, 0)), Ok(()), "every implementation refuses ASID 0");
        assert_eq!(p.allows(&b, &with(GUEST_ASID, 15)), Ok(()));
        assert_eq!(p.allows(&b, &with(GUEST_ASID, 16)), Err(Refusal::AsidOutOfRange));
        for f in [EFER, CR0, CR3, CR4, EVENTINJ, IOPM_BASE_PA, MSRPM_BASE_PA, CS_ATTRIB, G_PAT, RIP] {
            assert_eq!(p.allows(&b, &with(f, !0)), Ok(()), "{}", f.name);
        }
        // A base without the optional intercepts loses nothing by their absence.
        let plain = Vmcb::proof_guest_real_mode(&ProofAddresses::EXAMPLE);
        let mut m = Mutation::default();
        m.push(VINTR, 0);
        m.push(INTERCEPT_EXCEPTIONS, 0);
        assert_eq!(p.allows(&plain, &m.apply(&plain)), Ok(()));
    }

    #[test]
    fn without_nested_paging_the_guest_paging_stays() {
        // The proof guest's start without nested paging: 32-bit paging on
        // host-owned tables (CR0 = PE|ET|PG, CR3 the host's page directory).
        let mut b = base();
        b.write_u64(control::NP_CONTROL, 0);
        b.write_u64(control::N_CR3, 0);
        b.write_u64(save::CR0, 0x8000_0011);
        b.write_u64(save::CR3, 0x30_0000);
        let mut c = cpu();
        c.svm.edx &= !crate::svm::features::edx::NP;
        let p = Policy::new(&c, &b);
        assert!(!p.nested_paging);
        let with = |f: Field, value: u64| {
            let mut m = Mutation::default();
            m.push(f, value);
            m.apply(&b)
        };
        assert_eq!(p.allows(&b, &b), Ok(()));
        for (f, v) in [(CR0, 0x11), (CR3, 0x40_0000), (CR4, 0x20), (EFER, 0x1100), (NP_CONTROL, 1), (N_CR3, 0x1000)] {
            assert_eq!(p.allows(&b, &with(f, v)), Err(Refusal::GuestPaging), "{}", f.name);
        }
        for f in [EVENTINJ, CS_ATTRIB, RIP, RFLAGS, IDTR_BASE, GUEST_ASID] {
            assert_eq!(p.allows(&b, &with(f, 1)), Ok(()), "{}", f.name);
        }
        // With nested paging, the same changes are the checker's to judge.
        let n = Policy::new(&cpu(), &base());
        assert!(n.nested_paging);
        assert_eq!(
            n.allows(&base(), &{
                let mut v = base();
                v.write_u64(save::CR0, 0x11);
                v
            }),
            Ok(())
        );
        assert_eq!(Refusal::NAMES.len(), 7);
        assert!(Refusal::NAMES.contains(&Refusal::GuestPaging.name()));
    }

    #[test]
    fn most_draws_are_allowed() {
        let b = base();
        let m = mutator(&b);
        let p = Policy::new(&cpu(), &b);
        let mut rng = Rng::new(3);
        let allowed = (0..10_000).filter(|_| p.allows(&b, &m.mutate(&mut rng).apply(&b)).is_ok()).count();
        assert!(allowed > 8_000, "{allowed}");
    }
}
