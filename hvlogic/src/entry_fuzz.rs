//! The entry fuzzer's pure half: a seeded generator of VMCS mutations biased
//! toward the SDM's boundaries (reserved bits, mode mixes, segment
//! access-rights combinations, canonical addresses, alignment), and the
//! policy that decides which mutations may really be executed.
//!
//! A mutation changes one to three fields of a valid VMCS. The kernel asks
//! `entry_check` for a verdict, executes VMLAUNCH and compares
//! (`kernel/src/vmx/entry_fuzz.rs`). Executing is only safe when a VM exit
//! cannot load a broken host state and an entered guest stops at once; see
//! `Policy::allows`.

use crate::controls::{pin, proc1};
use crate::entry_check::fields::{self, enc::*, Snapshot};
use crate::entry_check::{CpuFacts, Verdict};
use crate::vmx_global::VmxGlobalData;
use core::fmt;

/// splitmix64: small, seedable, good enough to spread mutations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Memory the kernel prepared for the mutations to point at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Places {
    /// A VM-entry MSR-load area of `MSR_AREA` entries.
    pub msr_area: u64,
    /// A page holding this CPU's VMCS revision identifier (a valid link target).
    pub revision_page: u64,
    /// A page holding the revision identifier with bit 31 set (a shadow VMCS).
    pub shadow_page: u64,
    /// A zeroed page.
    pub zero_page: u64,
    /// The current VMCS.
    pub current_vmcs: u64,
    /// The VMXON region.
    pub vmxon_region: u64,
}

/// The entries of the MSR-load area the kernel prepares, in order: every
/// prefix up to a bad entry is harmless to load (the host state puts
/// IA32_SYSENTER_* back on the VM exit), and the last entry always fails, so
/// the CPU never reads past the area.
pub const MSR_AREA: [(u64, u64); 8] = [
    (0x174, 0x10),                  // IA32_SYSENTER_CS
    (0x176, 0xffff_8000_0000_1000), // IA32_SYSENTER_EIP, canonical
    (0x175, 0x0000_8000_0000_0000), // IA32_SYSENTER_ESP, not canonical: WRMSR #GP
    (0xc000_0100, 0),               // IA32_FS_BASE
    (0x808, 0),                     // x2APIC TPR
    (0x1_0000_0174, 0),             // reserved bits 63:32
    (0x9b, 0),                      // IA32_SMM_MONITOR_CTL
    (0xc000_0101, 0),               // IA32_GS_BASE
];

/// What WRMSR at CPL 0 does with the MSRs of `MSR_AREA` (SDM Vol. 4 Table 2-2
/// "IA-32 Architectural MSRs": IA32_SYSENTER_ESP and _EIP take canonical
/// addresses only); None for any other MSR.
pub fn msr_writable(index: u32, value: u64) -> Option<bool> {
    match index {
        0x174 => Some(true),
        0x175 | 0x176 => Some(crate::entry_check::canonical(value, 48)),
        _ => None,
    }
}

/// Up to three field changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutation {
    pub changes: [(u32, u64); 3],
    pub len: usize,
}

impl Mutation {
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.changes[..self.len].iter().copied()
    }
    /// Add a change; the value is cut to the field's width as VMWRITE does
    /// (SDM Vol. 3C §25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields":
    /// bits 14:13 of the encoding give the width).
    fn push(&mut self, field: u32, value: u64) {
        let value = match (field >> 13) & 3 {
            0 => value & 0xffff,
            2 => value & 0xffff_ffff,
            _ => value,
        };
        if let Some(c) = self.changes[..self.len].iter_mut().find(|c| c.0 == field) {
            c.1 = value;
        } else if self.len < 3 {
            self.changes[self.len] = (field, value);
            self.len += 1;
        }
    }
    pub fn touches(&self, field: u32) -> bool {
        self.iter().any(|(f, _)| f == field)
    }
    /// The snapshot with this mutation applied.
    pub fn apply(&self, base: &Snapshot) -> Snapshot {
        let mut s = base.clone();
        for (f, v) in self.iter() {
            s.set(f, v);
        }
        s
    }
    /// Shown with the original values: `guest CR0=0x30 (was 0x10)`.
    pub fn describe<'a>(&'a self, base: &'a Snapshot) -> Describe<'a> {
        Describe(self, base)
    }
}

pub struct Describe<'a>(&'a Mutation, &'a Snapshot);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, value)) in self.0.iter().enumerate() {
            let name = fields::name(field).unwrap_or("?");
            write!(f, "{}{name}={value:#x} (was {:#x})", if i > 0 { ", " } else { "" }, self.1.get(field))?;
        }
        Ok(())
    }
}

/// The fields the mutator changes. Not the VMX-preemption timer value, the
/// exception bitmap or the guest RIP's target page contents: those keep an
/// entered guest stopping at once.
pub const TARGETS: &[u32] = &[
    // Controls.
    PIN_BASED_CONTROLS,
    PRIMARY_PROC_CONTROLS,
    SECONDARY_PROC_CONTROLS,
    EXIT_CONTROLS,
    ENTRY_CONTROLS,
    CR3_TARGET_COUNT,
    IO_BITMAP_A,
    IO_BITMAP_B,
    MSR_BITMAPS,
    EPT_POINTER,
    VPID,
    VIRTUAL_APIC_ADDR,
    TPR_THRESHOLD,
    APIC_ACCESS_ADDR,
    POSTED_INTR_NOTIFICATION_VECTOR,
    POSTED_INTR_DESC_ADDR,
    PML_ADDRESS,
    VM_FUNCTION_CONTROLS,
    EPTP_LIST_ADDR,
    VMREAD_BITMAP,
    VMWRITE_BITMAP,
    VE_INFO_ADDR,
    EXIT_MSR_STORE_COUNT,
    EXIT_MSR_STORE_ADDR,
    EXIT_MSR_LOAD_COUNT,
    EXIT_MSR_LOAD_ADDR,
    ENTRY_MSR_LOAD_COUNT,
    ENTRY_MSR_LOAD_ADDR,
    ENTRY_INTERRUPTION_INFO,
    ENTRY_EXCEPTION_ERROR_CODE,
    ENTRY_INSTRUCTION_LENGTH,
    // Host state.
    HOST_CR0,
    HOST_CR3,
    HOST_CR4,
    HOST_ES_SELECTOR,
    HOST_CS_SELECTOR,
    HOST_SS_SELECTOR,
    HOST_DS_SELECTOR,
    HOST_FS_SELECTOR,
    HOST_GS_SELECTOR,
    HOST_TR_SELECTOR,
    HOST_FS_BASE,
    HOST_GS_BASE,
    HOST_TR_BASE,
    HOST_GDTR_BASE,
    HOST_IDTR_BASE,
    HOST_IA32_SYSENTER_ESP,
    HOST_IA32_SYSENTER_EIP,
    HOST_IA32_EFER,
    HOST_IA32_PAT,
    HOST_RIP,
    // Guest state.
    GUEST_CR0,
    GUEST_CR3,
    GUEST_CR4,
    GUEST_DR7,
    GUEST_IA32_DEBUGCTL,
    GUEST_IA32_EFER,
    GUEST_IA32_PAT,
    GUEST_IA32_SYSENTER_ESP,
    GUEST_IA32_SYSENTER_EIP,
    GUEST_ES_SELECTOR,
    GUEST_CS_SELECTOR,
    GUEST_SS_SELECTOR,
    GUEST_DS_SELECTOR,
    GUEST_FS_SELECTOR,
    GUEST_GS_SELECTOR,
    GUEST_LDTR_SELECTOR,
    GUEST_TR_SELECTOR,
    GUEST_ES_BASE,
    GUEST_CS_BASE,
    GUEST_SS_BASE,
    GUEST_DS_BASE,
    GUEST_FS_BASE,
    GUEST_GS_BASE,
    GUEST_LDTR_BASE,
    GUEST_TR_BASE,
    GUEST_ES_LIMIT,
    GUEST_CS_LIMIT,
    GUEST_SS_LIMIT,
    GUEST_DS_LIMIT,
    GUEST_FS_LIMIT,
    GUEST_GS_LIMIT,
    GUEST_LDTR_LIMIT,
    GUEST_TR_LIMIT,
    GUEST_ES_AR,
    GUEST_CS_AR,
    GUEST_SS_AR,
    GUEST_DS_AR,
    GUEST_FS_AR,
    GUEST_GS_AR,
    GUEST_LDTR_AR,
    GUEST_TR_AR,
    GUEST_GDTR_BASE,
    GUEST_IDTR_BASE,
    GUEST_GDTR_LIMIT,
    GUEST_IDTR_LIMIT,
    GUEST_RIP,
    GUEST_RFLAGS,
    GUEST_ACTIVITY_STATE,
    GUEST_INTERRUPTIBILITY,
    GUEST_PENDING_DBG_EXCEPTIONS,
    VMCS_LINK_POINTER,
    GUEST_PDPTE0,
    GUEST_PDPTE1,
];

/// Fields that rules combine: a mutation draws from one group 40% of the time.
pub const GROUPS: &[&[u32]] = &[
    // Non-register state and event injection (SDM Vol. 3C §27.2.1.3 "VM-Entry
    // Control Fields", §27.3.1.5 "Checks on Guest Non-Register State").
    &[
        GUEST_ACTIVITY_STATE,
        GUEST_INTERRUPTIBILITY,
        GUEST_RFLAGS,
        GUEST_PENDING_DBG_EXCEPTIONS,
        ENTRY_INTERRUPTION_INFO,
        ENTRY_EXCEPTION_ERROR_CODE,
        ENTRY_INSTRUCTION_LENGTH,
        GUEST_SS_AR,
        GUEST_IA32_DEBUGCTL,
        PIN_BASED_CONTROLS,
    ],
    // Modes: IA-32e, paging, PAE, virtual-8086 (SDM Vol. 3C §27.3.1.1 "Checks on
    // Guest Control Registers, Debug Registers, and MSRs", §27.3.1.4 "Checks on
    // Guest RIP, RFLAGS, and SSP", §27.3.1.6 "Checks on Guest
    // Page-Directory-Pointer-Table Entries").
    &[
        ENTRY_CONTROLS,
        GUEST_IA32_EFER,
        GUEST_CR0,
        GUEST_CR4,
        GUEST_CS_AR,
        GUEST_RFLAGS,
        GUEST_RIP,
        GUEST_PDPTE0,
        GUEST_PDPTE1,
    ],
    // Segments (SDM Vol. 3C §27.3.1.2 "Checks on Guest Segment Registers").
    &[
        GUEST_CS_SELECTOR,
        GUEST_CS_AR,
        GUEST_SS_SELECTOR,
        GUEST_SS_AR,
        GUEST_DS_SELECTOR,
        GUEST_DS_AR,
        GUEST_DS_LIMIT,
        GUEST_LDTR_AR,
        GUEST_LDTR_SELECTOR,
        GUEST_TR_AR,
        GUEST_TR_LIMIT,
    ],
    // Controls and the structures they enable (SDM Vol. 3C §27.2.1.1
    // "VM-Execution Control Fields").
    &[
        PIN_BASED_CONTROLS,
        PRIMARY_PROC_CONTROLS,
        SECONDARY_PROC_CONTROLS,
        EXIT_CONTROLS,
        TPR_THRESHOLD,
        VM_FUNCTION_CONTROLS,
    ],
    // MSR loading (SDM Vol. 3C §27.2.1.3 "VM-Entry Control Fields", §27.4
    // "Loading MSRs").
    &[ENTRY_MSR_LOAD_COUNT, ENTRY_MSR_LOAD_ADDR],
];

/// Fields whose mutation is executed only when the checker says VMfailValid:
/// the host state (a VM exit loads it, so a wrong value that passes could
/// break the host) and the VM-exit MSR areas (a VM exit writes and loads them).
pub fn host_side(field: u32) -> bool {
    fields::kind(field) == fields::KIND_HOST
        || matches!(field, EXIT_MSR_STORE_COUNT | EXIT_MSR_STORE_ADDR | EXIT_MSR_LOAD_COUNT | EXIT_MSR_LOAD_ADDR)
}

/// The generator: a valid base, what the CPU allows, and the prepared memory.
pub struct Mutator<'a> {
    pub base: &'a Snapshot,
    pub caps: &'a VmxGlobalData,
    pub cpu: CpuFacts,
    pub places: Places,
}

const NONCANONICAL: [u64; 4] =
    [0x0000_8000_0000_0000, 0xffff_7fff_ffff_f000, 0x8000_0000_0000_0000, 0x0001_0000_0000_0000];

impl Mutator<'_> {
    /// One to three field changes (a base field that the CPU lacks is skipped).
    pub fn mutate(&self, rng: &mut Rng) -> Mutation {
        let mut m = Mutation::default();
        let n = 1 + rng.below(3) as usize;
        // Often the fields of one group: the rules that need two changes at once.
        let pool = if rng.chance(40) { rng.pick(GROUPS) } else { TARGETS };
        let mut tries = 0;
        while m.len < n && tries < 20 {
            tries += 1;
            let field = rng.pick(pool);
            if !self.base.has(field) {
                continue;
            }
            let current = m.iter().find(|c| c.0 == field).map_or(self.base.get(field), |c| c.1);
            let value = self.value(field, current, rng);
            m.push(field, value);
        }
        m
    }

    fn width_bit(&self) -> u64 {
        1u64 << self.cpu.maxphyaddr.min(63)
    }

    /// A physical address pointer: kept, misaligned, beyond the width, or elsewhere.
    fn pointer(&self, v: u64, rng: &mut Rng) -> u64 {
        match rng.below(7) {
            0 => v | 1,
            1 => v | 0x800,
            2 => v | self.width_bit(),
            3 => v | (1 << 63),
            4 => 0,
            5 => self.places.zero_page,
            _ => v ^ (1 << rng.below(12)),
        }
    }

    /// A control field: flip a bit (often one the capability MSR fixes), or
    /// jump to the allowed-0 or allowed-1 setting.
    fn control(&self, v: u64, cap: u64, rng: &mut Rng) -> u64 {
        let must1 = cap & 0xffff_ffff;
        let may1 = cap >> 32;
        match rng.below(8) {
            0 => must1,
            1 => may1,
            2 => v | (!may1 & 0xffff_ffff & (1 << rng.below(32))),
            3 => {
                // Clear a bit that must be 1, if there is one.
                let bits = must1 & v;
                if bits == 0 {
                    v
                } else {
                    v & !(1 << pick_bit(bits, rng))
                }
            }
            _ => {
                // Flip a bit the CPU allows either way: the interesting combinations.
                let free = may1 & !must1;
                if free == 0 {
                    v ^ (1 << rng.below(32))
                } else {
                    v ^ (1 << pick_bit(free, rng))
                }
            }
        }
    }

    fn value(&self, field: u32, v: u64, rng: &mut Rng) -> u64 {
        let c = self.caps;
        let p = self.places;
        match field {
            PIN_BASED_CONTROLS => self.control(v, c.pin_based_ctls, rng),
            PRIMARY_PROC_CONTROLS => self.control(v, c.processor_based_ctls, rng),
            SECONDARY_PROC_CONTROLS => self.control(v, c.processor_based_ctls2, rng),
            EXIT_CONTROLS => self.control(v, c.exit_ctls, rng),
            ENTRY_CONTROLS => self.control(v, c.entry_ctls, rng),
            CR3_TARGET_COUNT => rng.pick(&[0, 1, 3, 4, 5, 8, 0xff, 0x1_0000]),
            VPID => rng.pick(&[0, 1, 2, 0xffff]),
            TPR_THRESHOLD => rng.pick(&[0, 1, 0xf, 0x10, 0xff, 0x8000_0000]),
            POSTED_INTR_NOTIFICATION_VECTOR => rng.pick(&[0, 0x20, 0xf2, 0xff, 0x100, 0xffff]),
            POSTED_INTR_DESC_ADDR => rng.pick(&[p.zero_page, p.zero_page + 0x20, p.zero_page + 0x40, self.width_bit()]),
            VM_FUNCTION_CONTROLS => rng.pick(&[0, 1, 2, 3, 1 << 63]),
            EPT_POINTER => self.eptp(v, rng),
            EXIT_MSR_STORE_COUNT | EXIT_MSR_LOAD_COUNT => rng.pick(&[0, 1, 2, 0x200]),
            EXIT_MSR_STORE_ADDR | EXIT_MSR_LOAD_ADDR => {
                rng.pick(&[p.msr_area + 8, p.msr_area | self.width_bit(), self.width_bit() - 16, 0xf])
            }
            ENTRY_MSR_LOAD_COUNT => rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            ENTRY_MSR_LOAD_ADDR => match rng.below(4) {
                0 => p.msr_area + 8,
                1 => p.msr_area | self.width_bit(),
                2 => self.width_bit() - 16,
                _ => p.msr_area + 16 * rng.below(MSR_AREA.len() as u64),
            },
            ENTRY_INTERRUPTION_INFO => self.event(rng),
            ENTRY_EXCEPTION_ERROR_CODE => rng.pick(&[0, 0x7fff, 0x8000, 0xffff, 0x1_0000, 0xffff_ffff]),
            ENTRY_INSTRUCTION_LENGTH => rng.pick(&[0, 1, 2, 15, 16, 0xff]),
            IO_BITMAP_A | IO_BITMAP_B | MSR_BITMAPS | VIRTUAL_APIC_ADDR | APIC_ACCESS_ADDR | PML_ADDRESS
            | EPTP_LIST_ADDR | VMREAD_BITMAP | VMWRITE_BITMAP | VE_INFO_ADDR => {
                let v = if v == 0 { p.zero_page } else { v };
                self.pointer(v, rng)
            }
            HOST_CR0 | GUEST_CR0 => self.cr0(v, rng),
            HOST_CR4 | GUEST_CR4 => self.cr4(v, rng),
            HOST_CR3 | GUEST_CR3 => match rng.below(4) {
                0 => v | self.width_bit(),
                1 => v | (1 << 63),
                2 => v | 0x18, // PWT/PCD, or a PDPT 8-byte offset
                _ => v ^ (1 << rng.below(64)),
            },
            HOST_ES_SELECTOR | HOST_CS_SELECTOR | HOST_SS_SELECTOR | HOST_DS_SELECTOR | HOST_FS_SELECTOR
            | HOST_GS_SELECTOR | HOST_TR_SELECTOR => rng.pick(&[0, v | 1, v | 3, v | 4, v ^ 8]),
            HOST_FS_BASE
            | HOST_GS_BASE
            | HOST_TR_BASE
            | HOST_GDTR_BASE
            | HOST_IDTR_BASE
            | HOST_IA32_SYSENTER_ESP
            | HOST_IA32_SYSENTER_EIP
            | HOST_RIP
            | GUEST_IA32_SYSENTER_ESP
            | GUEST_IA32_SYSENTER_EIP => rng.pick(&NONCANONICAL),
            HOST_IA32_EFER | GUEST_IA32_EFER => {
                v ^ rng.pick(&[1, 2, 1 << 8, 1 << 10, 1 << 11, 1 << 12, 1 << 14, 0x500])
            }
            HOST_IA32_PAT | GUEST_IA32_PAT => {
                let byte = rng.below(8) * 8;
                (v & !(0xff << byte)) | (rng.pick(&[0u64, 1, 2, 3, 4, 5, 6, 7, 8, 0xff]) << byte)
            }
            GUEST_DR7 => rng.pick(&[0x400, 0, 0x401, v | (1 << 32), v | (1 << 63), 0xffff_ffff]),
            GUEST_IA32_DEBUGCTL => rng.pick(&[0, 1, 2, 3, 1 << 2, 1 << 5, 1 << 6, 1 << 11, 1 << 15, 1 << 16, 1 << 63]),
            GUEST_ES_SELECTOR | GUEST_CS_SELECTOR | GUEST_SS_SELECTOR | GUEST_DS_SELECTOR | GUEST_FS_SELECTOR
            | GUEST_GS_SELECTOR | GUEST_LDTR_SELECTOR | GUEST_TR_SELECTOR => {
                rng.pick(&[0, v ^ 1, v ^ 2, v ^ 3, v ^ 4, v ^ 8, 0x1000, 0xf000, 0xffff])
            }
            GUEST_ES_BASE | GUEST_CS_BASE | GUEST_SS_BASE | GUEST_DS_BASE | GUEST_FS_BASE | GUEST_GS_BASE
            | GUEST_LDTR_BASE | GUEST_TR_BASE | GUEST_GDTR_BASE | GUEST_IDTR_BASE => match rng.below(5) {
                0 => rng.pick(&NONCANONICAL),
                1 => v | (1 << 32),
                2 => 0x10000,
                3 => 0xffff_0000,
                _ => 0,
            },
            GUEST_ES_LIMIT | GUEST_CS_LIMIT | GUEST_SS_LIMIT | GUEST_DS_LIMIT | GUEST_FS_LIMIT | GUEST_GS_LIMIT
            | GUEST_LDTR_LIMIT | GUEST_TR_LIMIT => {
                rng.pick(&[0, 0x67, 0xfff, 0xffff, 0xf_ffff, 0xff_ffff, 0xffff_f000, 0xffff_ffff, 0x1000_0fff])
            }
            GUEST_GDTR_LIMIT | GUEST_IDTR_LIMIT => rng.pick(&[0, 0x17, 0xffff, 0x1_0000, 0xffff_ffff]),
            GUEST_ES_AR | GUEST_CS_AR | GUEST_SS_AR | GUEST_DS_AR | GUEST_FS_AR | GUEST_GS_AR | GUEST_LDTR_AR
            | GUEST_TR_AR => self.access_rights(v, rng),
            GUEST_RIP => rng.pick(&[v | (1 << 32), NONCANONICAL[0], 0xffff_8000_0000_0000, 0xfff0, 0, 0xffff_ffff]),
            GUEST_RFLAGS => {
                let bit = rng.pick(&[1u64, 3, 5, 8, 9, 14, 15, 16, 17, 18, 19, 20, 21, 22, 31, 63]);
                v ^ (1 << bit)
            }
            GUEST_ACTIVITY_STATE => rng.pick(&[0, 1, 2, 3, 4]),
            GUEST_INTERRUPTIBILITY => rng.pick(&[0, 1, 2, 3, 4, 8, 0x10, 0x20, 0x12, 9]),
            GUEST_PENDING_DBG_EXCEPTIONS => {
                rng.pick(&[0, 1, 0xf, 0x10, 1 << 12, 1 << 13, 1 << 14, 1 << 15, 1 << 16, 1 << 17, 0x4001])
            }
            VMCS_LINK_POINTER => rng.pick(&[
                u64::MAX,
                0,
                p.revision_page,
                p.shadow_page,
                p.zero_page,
                p.revision_page + 8,
                p.revision_page | self.width_bit(),
                p.current_vmcs,
                p.vmxon_region,
            ]),
            GUEST_PDPTE0 | GUEST_PDPTE1 => {
                rng.pick(&[0, 1, 0x1001, 0x1003, 0x1021, 0x1101, 1 | self.width_bit(), 1 | (1 << 63)])
            }
            _ => v ^ (1 << rng.below(32)),
        }
    }

    fn cr0(&self, v: u64, rng: &mut Rng) -> u64 {
        // PE, MP, EM, TS, ET, NE, WP, AM, NW, CD, PG, and a reserved bit.
        let bit = rng.pick(&[0u64, 1, 2, 3, 4, 5, 16, 18, 29, 30, 31, 6, 32]);
        v ^ (1 << bit)
    }

    fn cr4(&self, v: u64, rng: &mut Rng) -> u64 {
        // VME, PVI, PSE, PAE, PGE, VMXE, SMXE, FSGSBASE, PCIDE, OSXSAVE, SMEP, CET, LA57, a reserved bit.
        let bit = rng.pick(&[0u64, 1, 4, 5, 7, 13, 14, 16, 17, 18, 20, 23, 12, 15, 31]);
        v ^ (1 << bit)
    }

    fn eptp(&self, v: u64, rng: &mut Rng) -> u64 {
        match rng.below(5) {
            0 => (v & !7) | rng.below(8),
            1 => (v & !0x38) | (rng.below(8) << 3),
            2 => v ^ (1 << 6),
            3 => v ^ (1 << (7 + rng.below(5))),
            _ => v | self.width_bit(),
        }
    }

    /// Type, S, DPL, P, L, D/B, G, unusable and reserved bits, or a whole
    /// well-known value (virtual-8086, 16/32/64-bit code, data, busy TSS, LDT).
    fn access_rights(&self, v: u64, rng: &mut Rng) -> u64 {
        match rng.below(4) {
            0 => rng.pick(&[0xf3, 0x93, 0x9b, 0xc093, 0xc09b, 0xa09b, 0xe09b, 0x8b, 0x83, 0x82, 0x1_0000, 0x1_0093]),
            1 => (v & !0xf) | rng.below(16),
            2 => (v & !0x60) | (rng.below(4) << 5),
            _ => v ^ (1 << rng.pick(&[4u64, 7, 8, 11, 12, 13, 14, 15, 16, 17, 31])),
        }
    }

    /// A VM-entry interruption-information value: the valid bit, a type, a
    /// vector around the ones with error codes, and sometimes a reserved bit.
    fn event(&self, rng: &mut Rng) -> u64 {
        if rng.chance(10) {
            return 0;
        }
        let kind = rng.below(8);
        let vector = rng.pick(&[0u64, 1, 2, 3, 6, 8, 13, 14, 17, 18, 21, 31, 32, 0xff]);
        let mut info = (1 << 31) | (kind << 8) | vector;
        if rng.chance(40) {
            info |= 1 << 11;
        }
        if rng.chance(10) {
            info |= 1 << (12 + rng.below(19));
        }
        info
    }
}

/// A random set bit of `bits` (non-zero).
fn pick_bit(bits: u64, rng: &mut Rng) -> u64 {
    let n = bits.count_ones() as u64;
    let mut k = rng.below(n);
    for b in 0..64 {
        if bits & (1 << b) != 0 {
            if k == 0 {
                return b;
            }
            k -= 1;
        }
    }
    0
}

/// Which mutations may be executed on this CPU.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The CPU has EPT in use: the guest's memory is confined by it.
    pub ept: bool,
    /// The CPU supports the monitor trap flag (so event type 7 is defined).
    pub mtf: bool,
}

/// Why a mutation is not executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A host-side field with a verdict other than VMfailValid.
    HostSide,
    /// The guest would enter and might not stop at once.
    MayNotStop,
    /// Without EPT, a guest that may run must keep the host-owned page tables.
    GuestPaging,
    /// Event type 7 without MTF support: the SDM says VMfailValid, but Bochs
    /// 2.7 lets it through and then stops the emulator ("unsupported event
    /// injection type 7").
    OtherEventWithoutMtf,
}

impl Policy {
    /// A mutated VMCS may be executed if:
    /// - every host-side field it changes makes the checker predict
    ///   VMfailValid (so no VM exit loads it);
    /// - when the checker says it enters, the guest stops before its first
    ///   instruction: the VMX-preemption timer active with value 0, or
    ///   interrupt-window exiting with RFLAGS.IF 1, no blocking and the
    ///   active state (SDM Vol. 3C §26.5.1 "VMX-Preemption Timer", §27.7.5
    ///   "Interrupt-Window Exiting and Virtual-Interrupt Delivery");
    /// - without EPT, when the guest may run, CR0, CR3 and CR4 are unchanged
    ///   (the guest's paging is the host's protection).
    pub fn allows(&self, m: &Mutation, after: &Snapshot, verdict: &Verdict) -> Result<(), Refusal> {
        let fails_early = matches!(verdict, Verdict::VmFailValid { .. });
        if !fails_early && m.iter().any(|(f, _)| host_side(f)) {
            return Err(Refusal::HostSide);
        }
        if verdict.enters() && !stops_at_once(after) {
            return Err(Refusal::MayNotStop);
        }
        // A predicted guest-state or MSR-loading failure that the CPU enters
        // anyway (a departure) must stop too: without the timer only the
        // interrupt window can stop it, and not from HLT (Bochs never wakes).
        if !fails_early && !timer_stops(after) && !stops_at_once(after) {
            return Err(Refusal::MayNotStop);
        }
        // No mutation may enter the wait-for-SIPI state, whatever the checker
        // predicts (a departure or a checker mistake would enter it): the
        // timer counts down there but causes no VM exit (SDM Vol. 3C §26.5.1
        // "VMX-Preemption Timer"), and nothing else would end the wait (seed 1
        // mutation 5138 on skylake: activity state 3 with a reserved
        // IA32_DEBUGCTL bit, which Bochs 2.7 does not check, hung the CPU).
        if after.get(GUEST_ACTIVITY_STATE) == ACTIVITY_WAIT_FOR_SIPI {
            return Err(Refusal::MayNotStop);
        }
        let info = after.get(ENTRY_INTERRUPTION_INFO);
        if !self.mtf && info & (1 << 31) != 0 && (info >> 8) & 7 == 7 {
            return Err(Refusal::OtherEventWithoutMtf);
        }
        if !self.ept && !fails_early && m.iter().any(|(f, _)| matches!(f, GUEST_CR0 | GUEST_CR3 | GUEST_CR4)) {
            return Err(Refusal::GuestPaging);
        }
        Ok(())
    }
}

/// The wait-for-SIPI activity state (SDM Vol. 3C §25.4.2 "Guest Non-Register State").
const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;

/// The VMX-preemption timer is active with value 0.
pub fn timer_stops(v: &Snapshot) -> bool {
    v.get(PIN_BASED_CONTROLS) as u32 & pin::PREEMPTION_TIMER != 0 && v.get(PREEMPTION_TIMER_VALUE) == 0
}

/// A guest entered with this VMCS takes a VM exit before its first instruction.
pub fn stops_at_once(v: &Snapshot) -> bool {
    let pins = v.get(PIN_BASED_CONTROLS) as u32;
    let procs = v.get(PRIMARY_PROC_CONTROLS) as u32;
    let active = v.get(GUEST_ACTIVITY_STATE) == 0;
    let timer = pins & pin::PREEMPTION_TIMER != 0 && v.get(PREEMPTION_TIMER_VALUE) == 0;
    let window = procs & proc1::INTERRUPT_WINDOW_EXITING != 0
        && v.get(GUEST_RFLAGS) & (1 << 9) != 0
        && v.get(GUEST_INTERRUPTIBILITY) & 3 == 0;
    active && (timer || window)
}

/// Controls an entry-fuzz base needs on top of the proof guest's: every
/// exception exits, and without a VMX-preemption timer interrupt-window
/// exiting with RFLAGS.IF 1 stops the guest at once.
pub fn stop_controls(caps: &VmxGlobalData, timer: bool) -> (u32, bool) {
    let window = !timer && crate::controls::can_set(caps.processor_based_ctls, proc1::INTERRUPT_WINDOW_EXITING);
    (if window { proc1::INTERRUPT_WINDOW_EXITING } else { 0 }, window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry_check::fields::KIND_HOST;

    fn base() -> Snapshot {
        let mut s = Snapshot::default();
        for f in TARGETS {
            s.set(*f, 0x1000);
        }
        s.set(PREEMPTION_TIMER_VALUE, 0);
        s.set(PIN_BASED_CONTROLS, pin::PREEMPTION_TIMER as u64);
        s.set(GUEST_ACTIVITY_STATE, 0);
        s
    }

    fn caps() -> VmxGlobalData {
        VmxGlobalData {
            pin_based_ctls: 0x0000_007f_0000_0016,
            processor_based_ctls: 0xfff9_fffe_0400_6172,
            processor_based_ctls2: 0x0055_1cfe_0000_0000,
            exit_ctls: 0x01ff_ffff_0003_6dfb,
            entry_ctls: 0x0003_ffff_0000_11fb,
            ..VmxGlobalData::default()
        }
    }

    fn facts() -> CpuFacts {
        CpuFacts {
            maxphyaddr: 40,
            linear_width: 48,
            efer_valid: 0xd01,
            perf_global_ctrl_valid: 0,
            debugctl_valid: 0,
            ia32e_mode: true,
            sgx: false,
            rtm: false,
            current_vmcs: 0x5000,
        }
    }

    #[test]
    fn same_seed_same_mutations_and_one_to_three_fields() {
        let b = base();
        let c = caps();
        let m = Mutator { base: &b, caps: &c, cpu: facts(), places: Places::default() };
        let (mut r1, mut r2) = (Rng::new(42), Rng::new(42));
        let mut lens = [0; 4];
        for _ in 0..2000 {
            let a = m.mutate(&mut r1);
            assert_eq!(a, m.mutate(&mut r2));
            assert!((1..=3).contains(&a.len));
            lens[a.len] += 1;
            for (f, _) in a.iter() {
                assert!(TARGETS.contains(&f));
            }
        }
        assert!(lens[1] > 300 && lens[2] > 300 && lens[3] > 300, "{lens:?}");
        let mut r3 = Rng::new(43);
        assert_ne!(m.mutate(&mut Rng::new(42)), m.mutate(&mut r3));
    }

    #[test]
    fn every_target_gets_mutated_and_fields_absent_from_the_cpu_do_not() {
        let mut b = base();
        let c = caps();
        let mut b2 = Snapshot::default();
        for f in TARGETS.iter().filter(|f| **f != GUEST_PDPTE0) {
            b2.set(*f, b.get(*f));
        }
        b = b2;
        let m = Mutator { base: &b, caps: &c, cpu: facts(), places: Places::default() };
        let mut rng = Rng::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            for (f, _) in m.mutate(&mut rng).iter() {
                seen.insert(f);
            }
        }
        assert!(!seen.contains(&GUEST_PDPTE0));
        assert_eq!(seen.len(), TARGETS.len() - 1);
    }

    #[test]
    fn describe_shows_old_and_new_values() {
        let b = base();
        let mut m = Mutation::default();
        m.push(GUEST_CR0, 0x31);
        m.push(GUEST_CR0, 0x33);
        m.push(HOST_RIP, 0);
        assert_eq!(m.len, 2);
        assert_eq!(std::format!("{}", m.describe(&b)), "guest CR0=0x33 (was 0x1000), host RIP=0x0 (was 0x1000)");
        assert_eq!(m.apply(&b).get(GUEST_CR0), 0x33);
        let mut w = Mutation::default();
        w.push(VPID, 0x1_0001);
        w.push(CR3_TARGET_COUNT, 0x1_0000_0005);
        w.push(GUEST_RIP, 1 << 40);
        assert_eq!(&w.changes, &[(VPID, 1), (CR3_TARGET_COUNT, 5), (GUEST_RIP, 1 << 40)], "cut to the field width");
    }

    #[test]
    fn policy_refuses_what_could_hurt_the_host_or_not_stop() {
        let b = base();
        let p = Policy { ept: true, mtf: true };
        let mut host = Mutation::default();
        host.push(HOST_RIP, 0);
        let enters = Verdict::Enters;
        let fails = Verdict::VmFailValid { errors: 1 << 8 };
        let guest_fail = Verdict::InvalidGuestState { qualifications: 1 };
        assert_eq!(p.allows(&host, &host.apply(&b), &enters), Err(Refusal::HostSide));
        assert_eq!(p.allows(&host, &host.apply(&b), &guest_fail), Err(Refusal::HostSide));
        assert_eq!(p.allows(&host, &host.apply(&b), &fails), Ok(()));
        let mut exit_area = Mutation::default();
        exit_area.push(EXIT_MSR_LOAD_COUNT, 1);
        assert_eq!(p.allows(&exit_area, &exit_area.apply(&b), &enters), Err(Refusal::HostSide));

        let mut hlt = Mutation::default();
        hlt.push(GUEST_ACTIVITY_STATE, 1);
        assert_eq!(p.allows(&hlt, &hlt.apply(&b), &enters), Err(Refusal::MayNotStop));
        assert_eq!(p.allows(&hlt, &hlt.apply(&b), &guest_fail), Ok(()), "the timer stops it even in HLT");
        let mut hlt_no_timer = hlt;
        hlt_no_timer.push(PIN_BASED_CONTROLS, 0);
        assert_eq!(p.allows(&hlt_no_timer, &hlt_no_timer.apply(&b), &guest_fail), Err(Refusal::MayNotStop));
        assert_eq!(p.allows(&hlt_no_timer, &hlt_no_timer.apply(&b), &fails), Ok(()));
        // The timer causes no VM exit in wait-for-SIPI: a departure there would never end.
        let mut sipi = Mutation::default();
        sipi.push(GUEST_ACTIVITY_STATE, 3);
        assert_eq!(p.allows(&sipi, &sipi.apply(&b), &guest_fail), Err(Refusal::MayNotStop));
        assert_eq!(p.allows(&sipi, &sipi.apply(&b), &enters), Err(Refusal::MayNotStop));
        assert_eq!(p.allows(&sipi, &sipi.apply(&b), &fails), Err(Refusal::MayNotStop));
        let mut no_timer = Mutation::default();
        no_timer.push(PIN_BASED_CONTROLS, 0);
        assert_eq!(p.allows(&no_timer, &no_timer.apply(&b), &enters), Err(Refusal::MayNotStop));

        let mut cr3 = Mutation::default();
        cr3.push(GUEST_CR3, 0x9000);
        assert_eq!(p.allows(&cr3, &cr3.apply(&b), &enters), Ok(()));
        assert_eq!(Policy { ept: false, mtf: true }.allows(&cr3, &cr3.apply(&b), &enters), Err(Refusal::GuestPaging));
        let mut other = Mutation::default();
        other.push(ENTRY_INTERRUPTION_INFO, 0x8000_0700);
        let no_mtf = Policy { ept: true, mtf: false };
        assert_eq!(no_mtf.allows(&other, &other.apply(&b), &fails), Err(Refusal::OtherEventWithoutMtf));
        assert_eq!(p.allows(&other, &other.apply(&b), &enters), Ok(()));
        assert!(host_side(HOST_CR3) && fields::kind(HOST_CR3) == KIND_HOST && !host_side(GUEST_CR3));
    }

    #[test]
    fn interrupt_window_stops_a_guest_without_timer() {
        let mut s = base();
        s.set(PIN_BASED_CONTROLS, 0);
        s.set(PRIMARY_PROC_CONTROLS, proc1::INTERRUPT_WINDOW_EXITING as u64);
        s.set(GUEST_RFLAGS, 0x202);
        s.set(GUEST_INTERRUPTIBILITY, 0);
        assert!(stops_at_once(&s));
        s.set(GUEST_INTERRUPTIBILITY, 1);
        assert!(!stops_at_once(&s));
        s.set(GUEST_INTERRUPTIBILITY, 0);
        s.set(GUEST_RFLAGS, 2);
        assert!(!stops_at_once(&s));
        assert_eq!(stop_controls(&caps(), false), (proc1::INTERRUPT_WINDOW_EXITING, true));
        assert_eq!(stop_controls(&caps(), true), (0, false));
    }

    #[test]
    fn the_msr_area_ends_with_an_entry_that_always_fails() {
        let last = MSR_AREA[MSR_AREA.len() - 1].0 as u32;
        assert!(last == crate::entry_check::msr_load::IA32_GS_BASE);
        assert_eq!(msr_writable(0x175, 0x0000_8000_0000_0000), Some(false));
        assert_eq!(msr_writable(0x176, 0xffff_8000_0000_1000), Some(true));
        assert_eq!(msr_writable(0x10, 0), None);
    }
}
