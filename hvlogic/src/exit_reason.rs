//! VM-exit reasons.
//!
//! Field format: SDM Vol. 3C §25.9.1 "Basic VM-Exit Information" (the
//! exit-reason field of the VMCS) and §28.2.1 "Basic VM-Exit Information"
//! (what a VM exit stores there). Basic exit-reason numbers: SDM Vol. 3D
//! Table C-1 "Basic Exit Reasons".

/// Basic exit reasons (bits 15:0 of the exit-reason field), SDM Vol. 3D Table
/// C-1 "Basic Exit Reasons". Numbers 35, 38, 42, 82 and 83 are not assigned.
pub mod basic {
    pub const EXCEPTION_OR_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INIT_SIGNAL: u16 = 3;
    pub const SIPI: u16 = 4;
    pub const IO_SMI: u16 = 5;
    pub const OTHER_SMI: u16 = 6;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const INVLPG: u16 = 14;
    pub const RDPMC: u16 = 15;
    pub const RDTSC: u16 = 16;
    pub const RSM: u16 = 17;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMLAUNCH: u16 = 20;
    pub const VMPTRLD: u16 = 21;
    pub const VMPTRST: u16 = 22;
    pub const VMREAD: u16 = 23;
    pub const VMRESUME: u16 = 24;
    pub const VMWRITE: u16 = 25;
    pub const VMXOFF: u16 = 26;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const MOV_DR: u16 = 29;
    pub const IO_INSTRUCTION: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    /// VM-entry failure due to invalid guest state.
    pub const INVALID_GUEST_STATE: u16 = 33;
    /// VM-entry failure due to MSR loading.
    pub const MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR_TRAP_FLAG: u16 = 37;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    /// VM-entry failure due to machine-check event.
    pub const MACHINE_CHECK: u16 = 41;
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    pub const APIC_ACCESS: u16 = 44;
    pub const VIRTUALIZED_EOI: u16 = 45;
    pub const GDTR_IDTR_ACCESS: u16 = 46;
    pub const LDTR_TR_ACCESS: u16 = 47;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIGURATION: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const RDTSCP: u16 = 51;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const INVVPID: u16 = 53;
    /// WBINVD or WBNOINVD.
    pub const WBINVD: u16 = 54;
    pub const XSETBV: u16 = 55;
    pub const APIC_WRITE: u16 = 56;
    pub const RDRAND: u16 = 57;
    pub const INVPCID: u16 = 58;
    pub const VMFUNC: u16 = 59;
    pub const ENCLS: u16 = 60;
    pub const RDSEED: u16 = 61;
    pub const PML_FULL: u16 = 62;
    pub const XSAVES: u16 = 63;
    pub const XRSTORS: u16 = 64;
    pub const PCONFIG: u16 = 65;
    pub const SPP_EVENT: u16 = 66;
    pub const UMWAIT: u16 = 67;
    pub const TPAUSE: u16 = 68;
    pub const LOADIWKEY: u16 = 69;
    pub const ENCLV: u16 = 70;
    pub const SGX_CONFLICT: u16 = 71;
    pub const ENQCMD_PASID_FAILURE: u16 = 72;
    pub const ENQCMDS_PASID_FAILURE: u16 = 73;
    pub const BUS_LOCK: u16 = 74;
    /// "Instruction timeout" (called "notify VM exit" in some sources).
    pub const INSTRUCTION_TIMEOUT: u16 = 75;
    pub const SEAMCALL: u16 = 76;
    pub const TDCALL: u16 = 77;
    pub const RDMSRLIST: u16 = 78;
    pub const WRMSRLIST: u16 = 79;
    pub const URDMSR: u16 = 80;
    pub const UWRMSR: u16 = 81;
    /// RDMSR with an immediate MSR index (newest editions / ISE manual).
    pub const RDMSR_IMM: u16 = 84;
    /// WRMSRNS with an immediate MSR index (newest editions / ISE manual).
    pub const WRMSRNS_IMM: u16 = 85;
}

/// Short human-readable name of a basic exit reason (SDM Vol. 3D Table C-1
/// "Basic Exit Reasons").
pub fn name(basic: u16) -> &'static str {
    use basic::*;
    match basic {
        EXCEPTION_OR_NMI => "exception or NMI",
        EXTERNAL_INTERRUPT => "external interrupt",
        TRIPLE_FAULT => "triple fault",
        INIT_SIGNAL => "INIT signal",
        SIPI => "start-up IPI (SIPI)",
        IO_SMI => "I/O SMI",
        OTHER_SMI => "other SMI",
        INTERRUPT_WINDOW => "interrupt window",
        NMI_WINDOW => "NMI window",
        TASK_SWITCH => "task switch",
        CPUID => "CPUID",
        GETSEC => "GETSEC",
        HLT => "HLT",
        INVD => "INVD",
        INVLPG => "INVLPG",
        RDPMC => "RDPMC",
        RDTSC => "RDTSC",
        RSM => "RSM",
        VMCALL => "VMCALL",
        VMCLEAR => "VMCLEAR",
        VMLAUNCH => "VMLAUNCH",
        VMPTRLD => "VMPTRLD",
        VMPTRST => "VMPTRST",
        VMREAD => "VMREAD",
        VMRESUME => "VMRESUME",
        VMWRITE => "VMWRITE",
        VMXOFF => "VMXOFF",
        VMXON => "VMXON",
        CR_ACCESS => "control-register access",
        MOV_DR => "MOV DR",
        IO_INSTRUCTION => "I/O instruction",
        RDMSR => "RDMSR",
        WRMSR => "WRMSR",
        INVALID_GUEST_STATE => "VM-entry failure: invalid guest state",
        MSR_LOADING => "VM-entry failure: MSR loading",
        MWAIT => "MWAIT",
        MONITOR_TRAP_FLAG => "monitor trap flag",
        MONITOR => "MONITOR",
        PAUSE => "PAUSE",
        MACHINE_CHECK => "VM-entry failure: machine-check event",
        TPR_BELOW_THRESHOLD => "TPR below threshold",
        APIC_ACCESS => "APIC access",
        VIRTUALIZED_EOI => "virtualized EOI",
        GDTR_IDTR_ACCESS => "access to GDTR or IDTR",
        LDTR_TR_ACCESS => "access to LDTR or TR",
        EPT_VIOLATION => "EPT violation",
        EPT_MISCONFIGURATION => "EPT misconfiguration",
        INVEPT => "INVEPT",
        RDTSCP => "RDTSCP",
        PREEMPTION_TIMER => "VMX-preemption timer expired",
        INVVPID => "INVVPID",
        WBINVD => "WBINVD or WBNOINVD",
        XSETBV => "XSETBV",
        APIC_WRITE => "APIC write",
        RDRAND => "RDRAND",
        INVPCID => "INVPCID",
        VMFUNC => "VMFUNC",
        ENCLS => "ENCLS",
        RDSEED => "RDSEED",
        PML_FULL => "page-modification log full",
        XSAVES => "XSAVES",
        XRSTORS => "XRSTORS",
        PCONFIG => "PCONFIG",
        SPP_EVENT => "SPP-related event",
        UMWAIT => "UMWAIT",
        TPAUSE => "TPAUSE",
        LOADIWKEY => "LOADIWKEY",
        ENCLV => "ENCLV",
        SGX_CONFLICT => "SGX conflict",
        ENQCMD_PASID_FAILURE => "ENQCMD PASID translation failure",
        ENQCMDS_PASID_FAILURE => "ENQCMDS PASID translation failure",
        BUS_LOCK => "bus lock",
        INSTRUCTION_TIMEOUT => "instruction timeout",
        SEAMCALL => "SEAMCALL",
        TDCALL => "TDCALL",
        RDMSRLIST => "RDMSRLIST",
        WRMSRLIST => "WRMSRLIST",
        URDMSR => "URDMSR",
        UWRMSR => "UWRMSR",
        RDMSR_IMM => "RDMSR (immediate form)",
        WRMSRNS_IMM => "WRMSRNS (immediate form)",
        _ => "unknown exit reason",
    }
}

/// The 32-bit exit-reason VMCS field (SDM Vol. 3C §25.9.1 "Basic VM-Exit
/// Information").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExitReason(pub u32);

impl ExitReason {
    /// Bits 15:0: basic exit reason.
    pub fn basic(self) -> u16 {
        self.0 as u16
    }

    /// Bit 31: VM-entry failure (0 = true VM exit, 1 = VM-entry failure).
    pub fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }

    /// Name of the basic exit reason.
    pub fn name(self) -> &'static str {
        name(self.basic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names() {
        assert_eq!(name(basic::CPUID), "CPUID");
        assert_eq!(name(basic::HLT), "HLT");
        assert_eq!(name(basic::TRIPLE_FAULT), "triple fault");
        assert_eq!(name(basic::EPT_VIOLATION), "EPT violation");
        assert_eq!(name(basic::PREEMPTION_TIMER), "VMX-preemption timer expired");
        assert_eq!(name(33), "VM-entry failure: invalid guest state");
        assert_eq!(name(34), "VM-entry failure: MSR loading");
        assert_eq!(name(41), "VM-entry failure: machine-check event");
        assert_eq!(name(18), "VMCALL");
        assert_eq!(name(27), "VMXON");
        assert_eq!(name(30), "I/O instruction");
        assert_eq!(name(49), "EPT misconfiguration");
    }

    #[test]
    fn gaps_are_unknown() {
        for gap in [35u16, 38, 42, 82, 83, 86, 100, 0xffff] {
            assert_eq!(name(gap), "unknown exit reason", "reason {gap}");
        }
        // Everything else from 0 to 85 has a name.
        for r in 0u16..=85 {
            if ![35, 38, 42, 82, 83].contains(&r) {
                assert_ne!(name(r), "unknown exit reason", "reason {r}");
            }
        }
    }

    #[test]
    fn field_decoding() {
        let e = ExitReason(0x8000_0021);
        assert!(e.entry_failure());
        assert_eq!(e.basic(), basic::INVALID_GUEST_STATE);
        assert_eq!(e.name(), "VM-entry failure: invalid guest state");

        // Bits 16..30 (e.g. bit 27 "enclave mode") do not disturb the basic reason.
        let e = ExitReason((1 << 27) | basic::CPUID as u32);
        assert!(!e.entry_failure());
        assert_eq!(e.basic(), basic::CPUID);
        assert_eq!(e.name(), "CPUID");
    }
}
