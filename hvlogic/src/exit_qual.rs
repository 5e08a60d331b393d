//! Decoding the exit qualification of the VM exits the hypervisor handles
//! (SDM Vol. 3C §28.2.1 "Basic VM-Exit Information"; each decoder below names
//! its table) and of failed VM entries (SDM Vol. 3C §27.8 "VM-Entry Failures
//! During or After Loading Guest State").

use core::fmt;

/// I/O instruction (exit reason 30), SDM Vol. 3C Table 28-5 "Exit
/// Qualification for I/O Instructions".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IoAccess {
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub is_in: bool,
    /// INS/OUTS.
    pub string: bool,
    pub rep: bool,
    pub port: u16,
}

impl IoAccess {
    pub const fn decode(q: u64) -> IoAccess {
        IoAccess {
            size: (q & 0x7) as u8 + 1,
            is_in: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            port: (q >> 16) as u16,
        }
    }
}

impl fmt::Display for IoAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{} port {:#x}, {} byte(s)",
            if self.rep { "REP " } else { "" },
            if self.is_in { "IN" } else { "OUT" },
            if self.string { "S" } else { "" },
            self.port,
            self.size
        )
    }
}

/// Control-register access (exit reason 28), SDM Vol. 3C Table 28-3 "Exit
/// Qualification for Control-Register Accesses".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CrAccess {
    pub cr: u8,
    pub kind: CrAccessKind,
    /// General-purpose register operand (0 = RAX ... 15 = R15) for MOV.
    pub gpr: u8,
    /// LMSW source data.
    pub lmsw_data: u16,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CrAccessKind {
    MovToCr,
    MovFromCr,
    Clts,
    Lmsw,
}

impl CrAccess {
    pub const fn decode(q: u64) -> CrAccess {
        CrAccess {
            cr: (q & 0xf) as u8,
            kind: match (q >> 4) & 3 {
                0 => CrAccessKind::MovToCr,
                1 => CrAccessKind::MovFromCr,
                2 => CrAccessKind::Clts,
                _ => CrAccessKind::Lmsw,
            },
            gpr: ((q >> 8) & 0xf) as u8,
            lmsw_data: (q >> 16) as u16,
        }
    }
}

impl fmt::Display for CrAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CrAccessKind::MovToCr => write!(f, "MOV to CR{} from {}", self.cr, GPR_NAMES[self.gpr as usize]),
            CrAccessKind::MovFromCr => write!(f, "MOV from CR{} to {}", self.cr, GPR_NAMES[self.gpr as usize]),
            CrAccessKind::Clts => write!(f, "CLTS"),
            CrAccessKind::Lmsw => write!(f, "LMSW {:#x}", self.lmsw_data),
        }
    }
}

/// Register numbering of the exit qualifications (SDM Vol. 3C Table 28-3
/// "Exit Qualification for Control-Register Accesses").
pub const GPR_NAMES: [&str; 16] =
    ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"];

/// EPT violation (exit reason 48), SDM Vol. 3C Table 28-7 "Exit
/// Qualification for EPT Violations".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EptViolation(pub u64);

impl EptViolation {
    pub const fn read(self) -> bool {
        self.0 & 1 != 0
    }
    pub const fn write(self) -> bool {
        self.0 & 2 != 0
    }
    pub const fn fetch(self) -> bool {
        self.0 & 4 != 0
    }
    /// Bits 5:3: the permissions the EPT entry granted (all clear: not mapped).
    pub const fn mapped(self) -> bool {
        self.0 & 0x38 != 0
    }
    /// Bit 7: the guest linear-address field is valid.
    pub const fn linear_valid(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Bit 8 (with bit 7): the access was to the translated address, not to a
    /// paging structure during the guest's own page walk.
    pub const fn during_page_walk(self) -> bool {
        self.linear_valid() && self.0 & (1 << 8) == 0
    }
}

impl fmt::Display for EptViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = if self.fetch() {
            "instruction fetch"
        } else if self.write() {
            "write"
        } else {
            "read"
        };
        write!(f, "{access}, {}", if self.mapped() { "not permitted" } else { "not mapped" })?;
        if self.during_page_walk() {
            write!(f, ", during the guest's page walk")?;
        }
        Ok(())
    }
}

/// What the exit qualification of a VM-entry failure means (SDM Vol. 3C §27.8
/// "VM-Entry Failures During or After Loading Guest State").
pub fn entry_failure_qualification(basic_reason: u16, q: u64) -> &'static str {
    use crate::exit_reason::basic::{INVALID_GUEST_STATE, MACHINE_CHECK, MSR_LOADING};
    match (basic_reason, q) {
        (INVALID_GUEST_STATE, 0) => "a guest-state check failed (no further detail)",
        (INVALID_GUEST_STATE, 2) => "loading a PDPTE failed",
        (INVALID_GUEST_STATE, 3) => "NMI injection blocked",
        (INVALID_GUEST_STATE, 4) => "invalid VMCS link pointer",
        (INVALID_GUEST_STATE, _) => "unknown qualification",
        (MSR_LOADING, _) => "the qualification is the 1-based index of the failing MSR-load entry",
        (MACHINE_CHECK, _) => "machine-check event during VM entry",
        _ => "not a VM-entry failure",
    }
}

/// VM-exit interruption information (SDM Vol. 3C §25.9.2 "Information for VM
/// Exits Due to Vectored Events", Table 25-19 "Format of the VM-Exit
/// Interruption-Information Field").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Interruption(pub u32);

impl Interruption {
    pub const fn valid(self) -> bool {
        self.0 & (1 << 31) != 0
    }
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    /// Bits 10:8: 0 external interrupt, 2 NMI, 3 hardware exception, 4 software interrupt, ...
    pub const fn kind(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    pub const fn is_nmi(self) -> bool {
        self.valid() && self.kind() == 2
    }
}

/// The RIP after an instruction of `len` bytes at `rip` that the hypervisor
/// emulated: outside 64-bit mode EIP is 32 bits wide and wraps at 4 GiB, and
/// VM entry requires RIP bits 63:32 to be 0 unless the guest is in IA-32e
/// mode with CS.L 1 (SDM Vol. 3C §27.3.1.4 "Checks on Guest RIP, RFLAGS, and
/// SSP"). `code64`: IA-32e mode guest and CS.L 1.
pub const fn next_rip(rip: u64, len: u64, code64: bool) -> u64 {
    let next = rip.wrapping_add(len);
    if code64 {
        next
    } else {
        next & 0xffff_ffff
    }
}

/// Whether stepping `len` bytes from `rip` crosses a 4 GiB boundary: only
/// then does `next_rip` need to know the code size.
pub const fn crosses_4gib(rip: u64, len: u64) -> bool {
    (rip ^ rip.wrapping_add(len)) >> 32 != 0
}

/// DR6 as the processor would have left it on delivering the #DB that a VM
/// exit intercepted. Such an exit does not write DR6; its exit qualification
/// holds what would have been written: B3-B0 (bits 3:0), BLD (11), BD (13),
/// BS (14) and RTM (16) (SDM Vol. 3C Table 28-1 "Exit Qualification for Debug
/// Exceptions"). B3-B0 are replaced; BD and BS are added to what DR6 held (the
/// processor never clears them); BLD and RTM are active low in DR6, so a set
/// qualification bit clears them; the other reserved bits read 1.
pub const fn dr6_for_debug_exit(dr6: u64, qualification: u64) -> u64 {
    const B3_B0: u64 = 0xf;
    const BD_BS: u64 = 3 << 13;
    const ACTIVE_LOW: u64 = 1 << 11 | 1 << 16;
    const FIXED_1: u64 = 0xffff_0ff0;
    let dr6 = (dr6 & !B3_B0) | (qualification & (B3_B0 | BD_BS)) | FIXED_1;
    (dr6 & !(qualification & ACTIVE_LOW)) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr6_takes_the_debug_exit_qualification() {
        // A data breakpoint on DR1 after a single step: B1 replaces B0, BS stays.
        assert_eq!(dr6_for_debug_exit(0xffff_4ff1, 0x2), 0xffff_4ff2);
        // General detect: BD added; the reserved bits forced to 1.
        assert_eq!(dr6_for_debug_exit(0, 1 << 13), 0xffff_2ff0);
        // RTM and BLD are active low in DR6; bit 12 is not the qualification's to set.
        assert_eq!(dr6_for_debug_exit(0xffff_0ff0, 1 << 16 | 1 << 12 | 1), 0xfffe_0ff1);
        assert_eq!(dr6_for_debug_exit(0xffff_0ff0, 1 << 11), 0xffff_07f0);
    }

    #[test]
    fn rip_wraps_at_4gib_outside_64_bit_code() {
        // A 2-byte CPUID at EIP FFFFFFFE: the next EIP is 0, not 1_0000_0000.
        assert_eq!(next_rip(0xffff_fffe, 2, false), 0);
        assert!(crosses_4gib(0xffff_fffe, 2));
        assert_eq!(next_rip(0xffff_fffe, 2, true), 0x1_0000_0000);
        assert_eq!(next_rip(0x8000, 3, false), 0x8003);
        assert!(!crosses_4gib(0x8000, 3));
        assert_eq!(next_rip(0xffff_ffff_ffff_ffff, 1, true), 0);
    }
    use alloc::format;

    #[test]
    fn io() {
        // OUT DX, AL to 0x3f8.
        let io = IoAccess::decode(0x03f8_0000);
        assert_eq!(io, IoAccess { size: 1, is_in: false, string: false, rep: false, port: 0x3f8 });
        // IN AL, DX from 0x3fd.
        let io = IoAccess::decode(0x03fd_0008);
        assert!(io.is_in && io.port == 0x3fd);
        assert_eq!(format!("{}", IoAccess::decode(0x0060_0033)), "REP OUTS port 0x60, 4 byte(s)");
    }

    #[test]
    fn cr_access() {
        // MOV CR3, RAX.
        let c = CrAccess::decode(0x3);
        assert_eq!((c.cr, c.kind, c.gpr), (3, CrAccessKind::MovToCr, 0));
        assert_eq!(format!("{c}"), "MOV to CR3 from RAX");
        let c = CrAccess::decode(0x0000_0b14);
        assert_eq!(format!("{c}"), "MOV from CR4 to R11");
        assert_eq!(CrAccess::decode(0x0001_0030).kind, CrAccessKind::Lmsw);
    }

    #[test]
    fn ept_violation() {
        assert_eq!(format!("{}", EptViolation(0x181)), "read, not mapped");
        assert_eq!(format!("{}", EptViolation(0x182)), "write, not mapped");
        assert_eq!(format!("{}", EptViolation(0x81)), "read, not mapped, during the guest's page walk");
        assert_eq!(format!("{}", EptViolation(0x18c)), "instruction fetch, not permitted");
    }

    #[test]
    fn entry_failures() {
        assert_eq!(entry_failure_qualification(33, 4), "invalid VMCS link pointer");
        assert!(entry_failure_qualification(34, 2).contains("1-based index"));
    }

    #[test]
    fn interruption_info() {
        let nmi = Interruption(0x8000_0202);
        assert!(nmi.valid() && nmi.is_nmi() && nmi.vector() == 2);
        assert!(!Interruption(0x0000_0202).is_nmi());
    }
}
