//! #VMEXIT exit codes (APM Vol. 2 Appendix C "SVM Intercept Exit Codes") and
//! the EXITINFO decoding of the exits the hypervisor handles.

use crate::exit_qual::IoAccess;

pub const CR0_READ: u64 = 0x00;
pub const CR0_WRITE: u64 = 0x10;
pub const CR3_WRITE: u64 = 0x13;
pub const CR4_WRITE: u64 = 0x14;
pub const CR8_WRITE: u64 = 0x18;
pub const DR0_READ: u64 = 0x20;
pub const DR0_WRITE: u64 = 0x30;
/// EXCP0-31: 40h + vector.
pub const EXCEPTION_BASE: u64 = 0x40;
pub const DB: u64 = EXCEPTION_BASE + 1;
pub const AC: u64 = EXCEPTION_BASE + 17;
pub const INTR: u64 = 0x60;
pub const NMI: u64 = 0x61;
pub const SMI: u64 = 0x62;
pub const INIT: u64 = 0x63;
pub const VINTR: u64 = 0x64;
pub const CR0_SEL_WRITE: u64 = 0x65;
/// LTR (the TR write intercept).
pub const TR_WRITE: u64 = 0x6d;
pub const RDTSC: u64 = 0x6e;
pub const RDPMC: u64 = 0x6f;
pub const CPUID: u64 = 0x72;
pub const RSM: u64 = 0x73;
pub const IRET: u64 = 0x74;
pub const SWINT: u64 = 0x75;
pub const INVD: u64 = 0x76;
pub const PAUSE: u64 = 0x77;
pub const HLT: u64 = 0x78;
pub const INVLPG: u64 = 0x79;
pub const INVLPGA: u64 = 0x7a;
pub const IOIO: u64 = 0x7b;
/// IOIO as `Ending::UnexpectedSvm` holds it.
pub const IOIO_U16: u16 = IOIO as u16;
pub const MSR: u64 = 0x7c;
pub const TASK_SWITCH: u64 = 0x7d;
pub const FERR_FREEZE: u64 = 0x7e;
pub const SHUTDOWN: u64 = 0x7f;
pub const VMRUN: u64 = 0x80;
pub const VMMCALL: u64 = 0x81;
pub const VMLOAD: u64 = 0x82;
pub const VMSAVE: u64 = 0x83;
pub const STGI: u64 = 0x84;
pub const CLGI: u64 = 0x85;
pub const SKINIT: u64 = 0x86;
pub const RDTSCP: u64 = 0x87;
pub const ICEBP: u64 = 0x88;
pub const WBINVD: u64 = 0x89;
pub const MONITOR: u64 = 0x8a;
pub const MWAIT: u64 = 0x8b;
pub const MWAIT_CONDITIONAL: u64 = 0x8c;
pub const XSETBV: u64 = 0x8d;
pub const RDPRU: u64 = 0x8e;
pub const EFER_WRITE_TRAP: u64 = 0x8f;
pub const CR0_WRITE_TRAP: u64 = 0x90;
pub const INVLPGB: u64 = 0xa0;
pub const INVLPGB_ILLEGAL: u64 = 0xa1;
pub const INVPCID: u64 = 0xa2;
pub const MCOMMIT: u64 = 0xa3;
pub const TLBSYNC: u64 = 0xa4;
pub const BUSLOCK: u64 = 0xa5;
/// Nested page fault.
pub const NPF: u64 = 0x400;
pub const AVIC_INCOMPLETE_IPI: u64 = 0x401;
pub const AVIC_NOACCEL: u64 = 0x402;
pub const VMGEXIT: u64 = 0x403;
/// VMRUN refused the VMCB: an illegal state combination (APM Vol. 2 §15.5.1
/// "Basic Operation").
pub const INVALID: u64 = u64::MAX;
/// VMRUN found the VMSA busy (SEV-ES).
pub const BUSY: u64 = u64::MAX - 1;

/// The exit code a #VMEXIT stored, with the negative codes sign-extended:
/// EXITCODE is 64 bits and VMEXIT_INVALID is -1 (APM Vol. 2 Appendix C
/// "SVM Intercept Exit Codes"), but QEMU 7.2's TCG stores -1 and -2 as
/// 32-bit values, FFFF_FFFFh and FFFF_FFFEh (its #VMEXIT takes the code as a
/// 32-bit argument). No real exit code comes near them.
pub const fn normalize(code: u64) -> u64 {
    match code {
        0xffff_ffff => INVALID,
        0xffff_fffe => BUSY,
        c => c,
    }
}

/// Exit codes counted per CPU: 00h-A5h by code, then NPF and INVALID in two
/// slots of their own (`counter_index`).
pub const COUNTERS: usize = 0xa8;

/// The counter slot of an exit code.
pub const fn counter_index(code: u64) -> usize {
    match code {
        0..=0xa5 => code as usize,
        NPF => 0xa6,
        _ => 0xa7,
    }
}

/// The exit code a counter slot stands for (the inverse of `counter_index`;
/// slot A7h collects every other code, INVALID among them).
pub const fn code_of_counter(index: usize) -> u64 {
    match index {
        0..=0xa5 => index as u64,
        0xa6 => NPF,
        _ => INVALID,
    }
}

/// The APM's name of an exit code (`VMEXIT_` left off).
pub fn name(code: u64) -> &'static str {
    const CR: [&str; 16] = [
        "CR0", "CR1", "CR2", "CR3", "CR4", "CR5", "CR6", "CR7", "CR8", "CR9", "CR10", "CR11", "CR12", "CR13", "CR14",
        "CR15",
    ];
    const EXCP: [&str; 32] = [
        "EXCP0 (#DE)",
        "EXCP1 (#DB)",
        "EXCP2 (NMI vector)",
        "EXCP3 (#BP)",
        "EXCP4 (#OF)",
        "EXCP5 (#BR)",
        "EXCP6 (#UD)",
        "EXCP7 (#NM)",
        "EXCP8 (#DF)",
        "EXCP9",
        "EXCP10 (#TS)",
        "EXCP11 (#NP)",
        "EXCP12 (#SS)",
        "EXCP13 (#GP)",
        "EXCP14 (#PF)",
        "EXCP15",
        "EXCP16 (#MF)",
        "EXCP17 (#AC)",
        "EXCP18 (#MC)",
        "EXCP19 (#XF)",
        "EXCP20",
        "EXCP21 (#CP)",
        "EXCP22",
        "EXCP23",
        "EXCP24",
        "EXCP25",
        "EXCP26",
        "EXCP27",
        "EXCP28 (#HV)",
        "EXCP29 (#VC)",
        "EXCP30 (#SX)",
        "EXCP31",
    ];
    match code {
        0x00..=0x0f => CR[code as usize],
        0x10..=0x1f => [
            "CR0_WRITE",
            "CR1_WRITE",
            "CR2_WRITE",
            "CR3_WRITE",
            "CR4_WRITE",
            "CR5_WRITE",
            "CR6_WRITE",
            "CR7_WRITE",
            "CR8_WRITE",
            "CR9_WRITE",
            "CR10_WRITE",
            "CR11_WRITE",
            "CR12_WRITE",
            "CR13_WRITE",
            "CR14_WRITE",
            "CR15_WRITE",
        ][code as usize - 0x10],
        0x20..=0x2f => "DR_READ",
        0x30..=0x3f => "DR_WRITE",
        0x40..=0x5f => EXCP[code as usize - 0x40],
        INTR => "INTR",
        NMI => "NMI",
        SMI => "SMI",
        INIT => "INIT",
        VINTR => "VINTR",
        CR0_SEL_WRITE => "CR0_SEL_WRITE",
        0x66 => "IDTR_READ",
        0x67 => "GDTR_READ",
        0x68 => "LDTR_READ",
        0x69 => "TR_READ",
        0x6a => "IDTR_WRITE",
        0x6b => "GDTR_WRITE",
        0x6c => "LDTR_WRITE",
        TR_WRITE => "TR_WRITE",
        RDTSC => "RDTSC",
        RDPMC => "RDPMC",
        0x70 => "PUSHF",
        0x71 => "POPF",
        CPUID => "CPUID",
        RSM => "RSM",
        IRET => "IRET",
        SWINT => "SWINT",
        INVD => "INVD",
        PAUSE => "PAUSE",
        HLT => "HLT",
        INVLPG => "INVLPG",
        INVLPGA => "INVLPGA",
        IOIO => "IOIO",
        MSR => "MSR",
        TASK_SWITCH => "TASK_SWITCH",
        FERR_FREEZE => "FERR_FREEZE",
        SHUTDOWN => "SHUTDOWN",
        VMRUN => "VMRUN",
        VMMCALL => "VMMCALL",
        VMLOAD => "VMLOAD",
        VMSAVE => "VMSAVE",
        STGI => "STGI",
        CLGI => "CLGI",
        SKINIT => "SKINIT",
        RDTSCP => "RDTSCP",
        ICEBP => "ICEBP",
        WBINVD => "WBINVD",
        MONITOR => "MONITOR",
        MWAIT => "MWAIT",
        MWAIT_CONDITIONAL => "MWAIT_CONDITIONAL",
        XSETBV => "XSETBV",
        RDPRU => "RDPRU",
        EFER_WRITE_TRAP => "EFER_WRITE_TRAP",
        0x90..=0x9f => "CR_WRITE_TRAP",
        INVLPGB => "INVLPGB",
        INVLPGB_ILLEGAL => "INVLPGB_ILLEGAL",
        INVPCID => "INVPCID",
        MCOMMIT => "MCOMMIT",
        TLBSYNC => "TLBSYNC",
        BUSLOCK => "BUSLOCK",
        NPF => "NPF",
        AVIC_INCOMPLETE_IPI => "AVIC_INCOMPLETE_IPI",
        AVIC_NOACCEL => "AVIC_NOACCEL",
        VMGEXIT => "VMGEXIT",
        INVALID => "INVALID",
        BUSY => "BUSY",
        _ => "(unknown)",
    }
}

/// IOIO's EXITINFO1 (APM Vol. 2 §15.10.2 "IN and OUT Behavior", Figure 15-2
/// "EXITINFO1 for IOIO Intercept"): bit 0 TYPE (1 = IN), bit 2 STR, bit 3
/// REP, bits 6:4 SZ32/SZ16/SZ8, bits 9:7 the address size, bits 12:10 the
/// effective segment, bits 31:16 the port. EXITINFO2 holds the next RIP.
pub const fn ioio(info1: u64) -> IoAccess {
    IoAccess {
        size: if info1 & (1 << 6) != 0 {
            4
        } else if info1 & (1 << 5) != 0 {
            2
        } else {
            1
        },
        is_in: info1 & 1 != 0,
        string: info1 & (1 << 2) != 0,
        rep: info1 & (1 << 3) != 0,
        port: (info1 >> 16) as u16,
    }
}

/// A nested page fault's EXITINFO1 (APM Vol. 2 §15.25.6 "Nested versus Guest
/// Page Faults, Fault Ordering"): the #PF error code bits, with bit 32 set
/// when the fault was on the final guest-physical address and bit 33 when it
/// was on a guest page-table access.
pub mod npf {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    pub const PAGE_TABLES: u64 = 1 << 33;
}

/// A nested page fault, for people.
pub struct NpfInfo(pub u64);

impl core::fmt::Display for NpfInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let e = self.0;
        let access = if e & npf::FETCH != 0 {
            "fetch"
        } else if e & npf::WRITE != 0 {
            "write"
        } else {
            "read"
        };
        write!(
            f,
            "{access}, {}{}",
            if e & npf::PRESENT != 0 { "not permitted" } else { "not mapped" },
            if e & npf::PAGE_TABLES != 0 { ", during a guest page walk" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn names() {
        assert_eq!(name(CPUID), "CPUID");
        assert_eq!(name(NPF), "NPF");
        assert_eq!(name(INVALID), "INVALID");
        assert_eq!(name(0x4d), "EXCP13 (#GP)");
        assert_eq!(name(0x13), "CR3_WRITE");
        assert_eq!(name(0x3), "CR3");
        assert_eq!(name(0x999), "(unknown)");
    }

    #[test]
    fn negative_codes_sign_extended() {
        assert_eq!(normalize(0xffff_ffff), INVALID, "QEMU 7.2's VMEXIT_INVALID");
        assert_eq!(normalize(u64::MAX), INVALID);
        assert_eq!(normalize(0xffff_fffe), BUSY);
        assert_eq!(normalize(NPF), NPF);
    }

    #[test]
    fn counters_cover_every_code_once() {
        assert_eq!(counter_index(CPUID), 0x72);
        assert_eq!(counter_index(NPF), 0xa6);
        assert_eq!(counter_index(INVALID), 0xa7);
        for i in 0..COUNTERS {
            assert_eq!(counter_index(code_of_counter(i)), i);
        }
    }

    #[test]
    fn ioio_decoding() {
        // OUT DX, AL to 3F8h: port 3F8h, SZ8, 16-bit... address size A32.
        let q = ioio(0x03f8_0000 | 1 << 4 | 1 << 8);
        assert_eq!((q.port, q.size, q.is_in, q.string, q.rep), (0x3f8, 1, false, false, false));
        let q = ioio(0x0064_0000 | 1 << 6 | 1);
        assert_eq!((q.port, q.size, q.is_in), (0x64, 4, true));
        let q = ioio(0x0060_0000 | 1 << 5 | 1 << 2 | 1 << 3);
        assert_eq!((q.size, q.string, q.rep), (2, true, true));
    }

    #[test]
    fn npf_text() {
        assert_eq!(format!("{}", NpfInfo(npf::WRITE | npf::PRESENT | npf::FINAL_ADDRESS)), "write, not permitted");
        assert_eq!(format!("{}", NpfInfo(npf::FINAL_ADDRESS)), "read, not mapped");
        assert_eq!(
            format!("{}", NpfInfo(npf::FETCH | npf::PAGE_TABLES)),
            "fetch, not mapped, during a guest page walk"
        );
    }
}
