//! Every VMCS field encoding with a stable name (SDM Vol. 3D Appendix B
//! "Field Encoding in VMCS"), and a snapshot of a VMCS: the value of each
//! field the CPU supports.
//!
//! Encodings (SDM Vol. 3C §25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS
//! Fields"): bit 0 access type (only the "full" encodings are listed: in
//! 64-bit mode they read the whole 64-bit field), bits 9:1 index, bits 11:10
//! type (control, VM-exit information, guest state, host state), bits 14:13
//! width (16-bit, 64-bit, 32-bit, natural).

/// Field encodings, named as in SDM Vol. 3D Appendix B "Field Encoding in
/// VMCS".
pub mod enc {
    // SDM Vol. 3D §B.1.1 "16-Bit Control Fields".
    pub const VPID: u32 = 0x0000;
    pub const POSTED_INTR_NOTIFICATION_VECTOR: u32 = 0x0002;
    pub const EPTP_INDEX: u32 = 0x0004;
    // SDM Vol. 3D §B.1.2 "16-Bit Guest-State Fields".
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    pub const GUEST_SS_SELECTOR: u32 = 0x0804;
    pub const GUEST_DS_SELECTOR: u32 = 0x0806;
    pub const GUEST_FS_SELECTOR: u32 = 0x0808;
    pub const GUEST_GS_SELECTOR: u32 = 0x080a;
    pub const GUEST_LDTR_SELECTOR: u32 = 0x080c;
    pub const GUEST_TR_SELECTOR: u32 = 0x080e;
    pub const GUEST_INTERRUPT_STATUS: u32 = 0x0810;
    pub const PML_INDEX: u32 = 0x0812;
    // SDM Vol. 3D §B.1.3 "16-Bit Host-State Fields".
    pub const HOST_ES_SELECTOR: u32 = 0x0c00;
    pub const HOST_CS_SELECTOR: u32 = 0x0c02;
    pub const HOST_SS_SELECTOR: u32 = 0x0c04;
    pub const HOST_DS_SELECTOR: u32 = 0x0c06;
    pub const HOST_FS_SELECTOR: u32 = 0x0c08;
    pub const HOST_GS_SELECTOR: u32 = 0x0c0a;
    pub const HOST_TR_SELECTOR: u32 = 0x0c0c;
    // SDM Vol. 3D §B.2.1 "64-Bit Control Fields".
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAPS: u32 = 0x2004;
    pub const EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const EXIT_MSR_LOAD_ADDR: u32 = 0x2008;
    pub const ENTRY_MSR_LOAD_ADDR: u32 = 0x200a;
    pub const EXECUTIVE_VMCS_POINTER: u32 = 0x200c;
    pub const PML_ADDRESS: u32 = 0x200e;
    pub const TSC_OFFSET: u32 = 0x2010;
    pub const VIRTUAL_APIC_ADDR: u32 = 0x2012;
    pub const APIC_ACCESS_ADDR: u32 = 0x2014;
    pub const POSTED_INTR_DESC_ADDR: u32 = 0x2016;
    pub const VM_FUNCTION_CONTROLS: u32 = 0x2018;
    pub const EPT_POINTER: u32 = 0x201a;
    pub const EOI_EXIT_BITMAP_0: u32 = 0x201c;
    pub const EOI_EXIT_BITMAP_1: u32 = 0x201e;
    pub const EOI_EXIT_BITMAP_2: u32 = 0x2020;
    pub const EOI_EXIT_BITMAP_3: u32 = 0x2022;
    pub const EPTP_LIST_ADDR: u32 = 0x2024;
    pub const VMREAD_BITMAP: u32 = 0x2026;
    pub const VMWRITE_BITMAP: u32 = 0x2028;
    pub const VE_INFO_ADDR: u32 = 0x202a;
    pub const XSS_EXITING_BITMAP: u32 = 0x202c;
    pub const ENCLS_EXITING_BITMAP: u32 = 0x202e;
    pub const SPPT_POINTER: u32 = 0x2030;
    pub const TSC_MULTIPLIER: u32 = 0x2032;
    pub const TERTIARY_PROC_CONTROLS: u32 = 0x2034;
    pub const ENCLV_EXITING_BITMAP: u32 = 0x2036;
    // SDM Vol. 3D §B.2.2 "64-Bit Read-Only Data Field".
    pub const GUEST_PHYSICAL_ADDR: u32 = 0x2400;
    // SDM Vol. 3D §B.2.3 "64-Bit Guest-State Fields".
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_PAT: u32 = 0x2804;
    pub const GUEST_IA32_EFER: u32 = 0x2806;
    pub const GUEST_IA32_PERF_GLOBAL_CTRL: u32 = 0x2808;
    pub const GUEST_PDPTE0: u32 = 0x280a;
    pub const GUEST_PDPTE1: u32 = 0x280c;
    pub const GUEST_PDPTE2: u32 = 0x280e;
    pub const GUEST_PDPTE3: u32 = 0x2810;
    pub const GUEST_IA32_BNDCFGS: u32 = 0x2812;
    pub const GUEST_IA32_RTIT_CTL: u32 = 0x2814;
    pub const GUEST_IA32_LBR_CTL: u32 = 0x2816;
    pub const GUEST_IA32_PKRS: u32 = 0x2818;
    // SDM Vol. 3D §B.2.4 "64-Bit Host-State Fields".
    pub const HOST_IA32_PAT: u32 = 0x2c00;
    pub const HOST_IA32_EFER: u32 = 0x2c02;
    pub const HOST_IA32_PERF_GLOBAL_CTRL: u32 = 0x2c04;
    pub const HOST_IA32_PKRS: u32 = 0x2c06;
    // SDM Vol. 3D §B.3.1 "32-Bit Control Fields".
    pub const PIN_BASED_CONTROLS: u32 = 0x4000;
    pub const PRIMARY_PROC_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
    pub const PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    pub const EXIT_CONTROLS: u32 = 0x400c;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const ENTRY_INSTRUCTION_LENGTH: u32 = 0x401a;
    pub const TPR_THRESHOLD: u32 = 0x401c;
    pub const SECONDARY_PROC_CONTROLS: u32 = 0x401e;
    pub const PLE_GAP: u32 = 0x4020;
    pub const PLE_WINDOW: u32 = 0x4022;
    // SDM Vol. 3D §B.3.2 "32-Bit Read-Only Data Fields".
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTERRUPTION_INFO: u32 = 0x4404;
    pub const EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440a;
    pub const EXIT_INSTRUCTION_LENGTH: u32 = 0x440c;
    pub const EXIT_INSTRUCTION_INFO: u32 = 0x440e;
    // SDM Vol. 3D §B.3.3 "32-Bit Guest-State Fields".
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_CS_LIMIT: u32 = 0x4802;
    pub const GUEST_SS_LIMIT: u32 = 0x4804;
    pub const GUEST_DS_LIMIT: u32 = 0x4806;
    pub const GUEST_FS_LIMIT: u32 = 0x4808;
    pub const GUEST_GS_LIMIT: u32 = 0x480a;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480c;
    pub const GUEST_TR_LIMIT: u32 = 0x480e;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_AR: u32 = 0x4814;
    pub const GUEST_CS_AR: u32 = 0x4816;
    pub const GUEST_SS_AR: u32 = 0x4818;
    pub const GUEST_DS_AR: u32 = 0x481a;
    pub const GUEST_FS_AR: u32 = 0x481c;
    pub const GUEST_GS_AR: u32 = 0x481e;
    pub const GUEST_LDTR_AR: u32 = 0x4820;
    pub const GUEST_TR_AR: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SMBASE: u32 = 0x4828;
    pub const GUEST_IA32_SYSENTER_CS: u32 = 0x482a;
    pub const PREEMPTION_TIMER_VALUE: u32 = 0x482e;
    // SDM Vol. 3D §B.3.4 "32-Bit Host-State Field".
    pub const HOST_IA32_SYSENTER_CS: u32 = 0x4c00;
    // SDM Vol. 3D §B.4.1 "Natural-Width Control Fields".
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    pub const CR3_TARGET_VALUE0: u32 = 0x6008;
    pub const CR3_TARGET_VALUE1: u32 = 0x600a;
    pub const CR3_TARGET_VALUE2: u32 = 0x600c;
    pub const CR3_TARGET_VALUE3: u32 = 0x600e;
    // SDM Vol. 3D §B.4.2 "Natural-Width Read-Only Data Fields".
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const IO_RCX: u32 = 0x6402;
    pub const IO_RSI: u32 = 0x6404;
    pub const IO_RDI: u32 = 0x6406;
    pub const IO_RIP: u32 = 0x6408;
    pub const GUEST_LINEAR_ADDR: u32 = 0x640a;
    // SDM Vol. 3D §B.4.3 "Natural-Width Guest-State Fields".
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_SS_BASE: u32 = 0x680a;
    pub const GUEST_DS_BASE: u32 = 0x680c;
    pub const GUEST_FS_BASE: u32 = 0x680e;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681a;
    pub const GUEST_RSP: u32 = 0x681c;
    pub const GUEST_RIP: u32 = 0x681e;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG_EXCEPTIONS: u32 = 0x6822;
    pub const GUEST_IA32_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_IA32_SYSENTER_EIP: u32 = 0x6826;
    pub const GUEST_IA32_S_CET: u32 = 0x6828;
    pub const GUEST_SSP: u32 = 0x682a;
    pub const GUEST_INTR_SSP_TABLE_ADDR: u32 = 0x682c;
    // SDM Vol. 3D §B.4.4 "Natural-Width Host-State Fields".
    pub const HOST_CR0: u32 = 0x6c00;
    pub const HOST_CR3: u32 = 0x6c02;
    pub const HOST_CR4: u32 = 0x6c04;
    pub const HOST_FS_BASE: u32 = 0x6c06;
    pub const HOST_GS_BASE: u32 = 0x6c08;
    pub const HOST_TR_BASE: u32 = 0x6c0a;
    pub const HOST_GDTR_BASE: u32 = 0x6c0c;
    pub const HOST_IDTR_BASE: u32 = 0x6c0e;
    pub const HOST_IA32_SYSENTER_ESP: u32 = 0x6c10;
    pub const HOST_IA32_SYSENTER_EIP: u32 = 0x6c12;
    pub const HOST_RSP: u32 = 0x6c14;
    pub const HOST_RIP: u32 = 0x6c16;
    pub const HOST_IA32_S_CET: u32 = 0x6c18;
    pub const HOST_SSP: u32 = 0x6c1a;
    pub const HOST_INTR_SSP_TABLE_ADDR: u32 = 0x6c1c;
}

use enc::*;

/// A VMCS field: its encoding and a stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub encoding: u32,
    pub name: &'static str,
}

const fn f(encoding: u32, name: &'static str) -> Field {
    Field { encoding, name }
}

/// Every field, sorted by encoding (a test checks the order).
pub const FIELDS: &[Field] = &[
    f(VPID, "VPID"),
    f(POSTED_INTR_NOTIFICATION_VECTOR, "posted-interrupt notification vector"),
    f(EPTP_INDEX, "EPTP index"),
    f(GUEST_ES_SELECTOR, "guest ES selector"),
    f(GUEST_CS_SELECTOR, "guest CS selector"),
    f(GUEST_SS_SELECTOR, "guest SS selector"),
    f(GUEST_DS_SELECTOR, "guest DS selector"),
    f(GUEST_FS_SELECTOR, "guest FS selector"),
    f(GUEST_GS_SELECTOR, "guest GS selector"),
    f(GUEST_LDTR_SELECTOR, "guest LDTR selector"),
    f(GUEST_TR_SELECTOR, "guest TR selector"),
    f(GUEST_INTERRUPT_STATUS, "guest interrupt status"),
    f(PML_INDEX, "PML index"),
    f(HOST_ES_SELECTOR, "host ES selector"),
    f(HOST_CS_SELECTOR, "host CS selector"),
    f(HOST_SS_SELECTOR, "host SS selector"),
    f(HOST_DS_SELECTOR, "host DS selector"),
    f(HOST_FS_SELECTOR, "host FS selector"),
    f(HOST_GS_SELECTOR, "host GS selector"),
    f(HOST_TR_SELECTOR, "host TR selector"),
    f(IO_BITMAP_A, "I/O bitmap A address"),
    f(IO_BITMAP_B, "I/O bitmap B address"),
    f(MSR_BITMAPS, "MSR-bitmap address"),
    f(EXIT_MSR_STORE_ADDR, "VM-exit MSR-store address"),
    f(EXIT_MSR_LOAD_ADDR, "VM-exit MSR-load address"),
    f(ENTRY_MSR_LOAD_ADDR, "VM-entry MSR-load address"),
    f(EXECUTIVE_VMCS_POINTER, "executive-VMCS pointer"),
    f(PML_ADDRESS, "PML address"),
    f(TSC_OFFSET, "TSC offset"),
    f(VIRTUAL_APIC_ADDR, "virtual-APIC address"),
    f(APIC_ACCESS_ADDR, "APIC-access address"),
    f(POSTED_INTR_DESC_ADDR, "posted-interrupt descriptor address"),
    f(VM_FUNCTION_CONTROLS, "VM-function controls"),
    f(EPT_POINTER, "EPT pointer"),
    f(EOI_EXIT_BITMAP_0, "EOI-exit bitmap 0"),
    f(EOI_EXIT_BITMAP_1, "EOI-exit bitmap 1"),
    f(EOI_EXIT_BITMAP_2, "EOI-exit bitmap 2"),
    f(EOI_EXIT_BITMAP_3, "EOI-exit bitmap 3"),
    f(EPTP_LIST_ADDR, "EPTP-list address"),
    f(VMREAD_BITMAP, "VMREAD-bitmap address"),
    f(VMWRITE_BITMAP, "VMWRITE-bitmap address"),
    f(VE_INFO_ADDR, "virtualization-exception information address"),
    f(XSS_EXITING_BITMAP, "XSS-exiting bitmap"),
    f(ENCLS_EXITING_BITMAP, "ENCLS-exiting bitmap"),
    f(SPPT_POINTER, "sub-page-permission-table pointer"),
    f(TSC_MULTIPLIER, "TSC multiplier"),
    f(TERTIARY_PROC_CONTROLS, "tertiary processor-based controls"),
    f(ENCLV_EXITING_BITMAP, "ENCLV-exiting bitmap"),
    f(GUEST_PHYSICAL_ADDR, "guest-physical address"),
    f(VMCS_LINK_POINTER, "VMCS link pointer"),
    f(GUEST_IA32_DEBUGCTL, "guest IA32_DEBUGCTL"),
    f(GUEST_IA32_PAT, "guest IA32_PAT"),
    f(GUEST_IA32_EFER, "guest IA32_EFER"),
    f(GUEST_IA32_PERF_GLOBAL_CTRL, "guest IA32_PERF_GLOBAL_CTRL"),
    f(GUEST_PDPTE0, "guest PDPTE0"),
    f(GUEST_PDPTE1, "guest PDPTE1"),
    f(GUEST_PDPTE2, "guest PDPTE2"),
    f(GUEST_PDPTE3, "guest PDPTE3"),
    f(GUEST_IA32_BNDCFGS, "guest IA32_BNDCFGS"),
    f(GUEST_IA32_RTIT_CTL, "guest IA32_RTIT_CTL"),
    f(GUEST_IA32_LBR_CTL, "guest IA32_LBR_CTL"),
    f(GUEST_IA32_PKRS, "guest IA32_PKRS"),
    f(HOST_IA32_PAT, "host IA32_PAT"),
    f(HOST_IA32_EFER, "host IA32_EFER"),
    f(HOST_IA32_PERF_GLOBAL_CTRL, "host IA32_PERF_GLOBAL_CTRL"),
    f(HOST_IA32_PKRS, "host IA32_PKRS"),
    f(PIN_BASED_CONTROLS, "pin-based VM-execution controls"),
    f(PRIMARY_PROC_CONTROLS, "primary processor-based VM-execution controls"),
    f(EXCEPTION_BITMAP, "exception bitmap"),
    f(PAGE_FAULT_ERROR_CODE_MASK, "page-fault error-code mask"),
    f(PAGE_FAULT_ERROR_CODE_MATCH, "page-fault error-code match"),
    f(CR3_TARGET_COUNT, "CR3-target count"),
    f(EXIT_CONTROLS, "VM-exit controls"),
    f(EXIT_MSR_STORE_COUNT, "VM-exit MSR-store count"),
    f(EXIT_MSR_LOAD_COUNT, "VM-exit MSR-load count"),
    f(ENTRY_CONTROLS, "VM-entry controls"),
    f(ENTRY_MSR_LOAD_COUNT, "VM-entry MSR-load count"),
    f(ENTRY_INTERRUPTION_INFO, "VM-entry interruption-information field"),
    f(ENTRY_EXCEPTION_ERROR_CODE, "VM-entry exception error code"),
    f(ENTRY_INSTRUCTION_LENGTH, "VM-entry instruction length"),
    f(TPR_THRESHOLD, "TPR threshold"),
    f(SECONDARY_PROC_CONTROLS, "secondary processor-based VM-execution controls"),
    f(PLE_GAP, "PLE_Gap"),
    f(PLE_WINDOW, "PLE_Window"),
    f(VM_INSTRUCTION_ERROR, "VM-instruction error"),
    f(EXIT_REASON, "exit reason"),
    f(EXIT_INTERRUPTION_INFO, "VM-exit interruption information"),
    f(EXIT_INTERRUPTION_ERROR_CODE, "VM-exit interruption error code"),
    f(IDT_VECTORING_INFO, "IDT-vectoring information"),
    f(IDT_VECTORING_ERROR_CODE, "IDT-vectoring error code"),
    f(EXIT_INSTRUCTION_LENGTH, "VM-exit instruction length"),
    f(EXIT_INSTRUCTION_INFO, "VM-exit instruction information"),
    f(GUEST_ES_LIMIT, "guest ES limit"),
    f(GUEST_CS_LIMIT, "guest CS limit"),
    f(GUEST_SS_LIMIT, "guest SS limit"),
    f(GUEST_DS_LIMIT, "guest DS limit"),
    f(GUEST_FS_LIMIT, "guest FS limit"),
    f(GUEST_GS_LIMIT, "guest GS limit"),
    f(GUEST_LDTR_LIMIT, "guest LDTR limit"),
    f(GUEST_TR_LIMIT, "guest TR limit"),
    f(GUEST_GDTR_LIMIT, "guest GDTR limit"),
    f(GUEST_IDTR_LIMIT, "guest IDTR limit"),
    f(GUEST_ES_AR, "guest ES access rights"),
    f(GUEST_CS_AR, "guest CS access rights"),
    f(GUEST_SS_AR, "guest SS access rights"),
    f(GUEST_DS_AR, "guest DS access rights"),
    f(GUEST_FS_AR, "guest FS access rights"),
    f(GUEST_GS_AR, "guest GS access rights"),
    f(GUEST_LDTR_AR, "guest LDTR access rights"),
    f(GUEST_TR_AR, "guest TR access rights"),
    f(GUEST_INTERRUPTIBILITY, "guest interruptibility state"),
    f(GUEST_ACTIVITY_STATE, "guest activity state"),
    f(GUEST_SMBASE, "guest SMBASE"),
    f(GUEST_IA32_SYSENTER_CS, "guest IA32_SYSENTER_CS"),
    f(PREEMPTION_TIMER_VALUE, "VMX-preemption timer value"),
    f(HOST_IA32_SYSENTER_CS, "host IA32_SYSENTER_CS"),
    f(CR0_GUEST_HOST_MASK, "CR0 guest/host mask"),
    f(CR4_GUEST_HOST_MASK, "CR4 guest/host mask"),
    f(CR0_READ_SHADOW, "CR0 read shadow"),
    f(CR4_READ_SHADOW, "CR4 read shadow"),
    f(CR3_TARGET_VALUE0, "CR3-target value 0"),
    f(CR3_TARGET_VALUE1, "CR3-target value 1"),
    f(CR3_TARGET_VALUE2, "CR3-target value 2"),
    f(CR3_TARGET_VALUE3, "CR3-target value 3"),
    f(EXIT_QUALIFICATION, "exit qualification"),
    f(IO_RCX, "I/O RCX"),
    f(IO_RSI, "I/O RSI"),
    f(IO_RDI, "I/O RDI"),
    f(IO_RIP, "I/O RIP"),
    f(GUEST_LINEAR_ADDR, "guest-linear address"),
    f(GUEST_CR0, "guest CR0"),
    f(GUEST_CR3, "guest CR3"),
    f(GUEST_CR4, "guest CR4"),
    f(GUEST_ES_BASE, "guest ES base"),
    f(GUEST_CS_BASE, "guest CS base"),
    f(GUEST_SS_BASE, "guest SS base"),
    f(GUEST_DS_BASE, "guest DS base"),
    f(GUEST_FS_BASE, "guest FS base"),
    f(GUEST_GS_BASE, "guest GS base"),
    f(GUEST_LDTR_BASE, "guest LDTR base"),
    f(GUEST_TR_BASE, "guest TR base"),
    f(GUEST_GDTR_BASE, "guest GDTR base"),
    f(GUEST_IDTR_BASE, "guest IDTR base"),
    f(GUEST_DR7, "guest DR7"),
    f(GUEST_RSP, "guest RSP"),
    f(GUEST_RIP, "guest RIP"),
    f(GUEST_RFLAGS, "guest RFLAGS"),
    f(GUEST_PENDING_DBG_EXCEPTIONS, "guest pending debug exceptions"),
    f(GUEST_IA32_SYSENTER_ESP, "guest IA32_SYSENTER_ESP"),
    f(GUEST_IA32_SYSENTER_EIP, "guest IA32_SYSENTER_EIP"),
    f(GUEST_IA32_S_CET, "guest IA32_S_CET"),
    f(GUEST_SSP, "guest SSP"),
    f(GUEST_INTR_SSP_TABLE_ADDR, "guest IA32_INTERRUPT_SSP_TABLE_ADDR"),
    f(HOST_CR0, "host CR0"),
    f(HOST_CR3, "host CR3"),
    f(HOST_CR4, "host CR4"),
    f(HOST_FS_BASE, "host FS base"),
    f(HOST_GS_BASE, "host GS base"),
    f(HOST_TR_BASE, "host TR base"),
    f(HOST_GDTR_BASE, "host GDTR base"),
    f(HOST_IDTR_BASE, "host IDTR base"),
    f(HOST_IA32_SYSENTER_ESP, "host IA32_SYSENTER_ESP"),
    f(HOST_IA32_SYSENTER_EIP, "host IA32_SYSENTER_EIP"),
    f(HOST_RSP, "host RSP"),
    f(HOST_RIP, "host RIP"),
    f(HOST_IA32_S_CET, "host IA32_S_CET"),
    f(HOST_SSP, "host SSP"),
    f(HOST_INTR_SSP_TABLE_ADDR, "host IA32_INTERRUPT_SSP_TABLE_ADDR"),
];

/// Number of fields in `FIELDS`.
pub const FIELD_COUNT: usize = FIELDS.len();

/// Bits 9:1 of an encoding: the index IA32_VMX_VMCS_ENUM bounds (SDM Vol. 3D
/// §A.9 "VMCS Enumeration").
pub const fn index(encoding: u32) -> u32 {
    (encoding >> 1) & 0x1ff
}

/// The highest index IA32_VMX_VMCS_ENUM reports (bits 9:1, SDM Vol. 3D §A.9
/// "VMCS Enumeration").
pub const fn highest_index(vmcs_enum: u64) -> u32 {
    ((vmcs_enum >> 1) & 0x1ff) as u32
}

/// Bits 11:10: 0 control, 1 VM-exit information (read-only), 2 guest state, 3 host state.
pub const fn kind(encoding: u32) -> u32 {
    (encoding >> 10) & 3
}

/// Field type "VM-exit information" (read-only data).
pub const KIND_READ_ONLY: u32 = 1;
pub const KIND_CONTROL: u32 = 0;
pub const KIND_GUEST: u32 = 2;
pub const KIND_HOST: u32 = 3;

/// Position of `encoding` in `FIELDS`.
pub fn position(encoding: u32) -> Option<usize> {
    FIELDS.binary_search_by_key(&encoding, |f| f.encoding).ok()
}

/// The stable name of a field ("guest CR0"), or None for an encoding not in the table.
pub fn name(encoding: u32) -> Option<&'static str> {
    position(encoding).map(|i| FIELDS[i].name)
}

/// The values of a VMCS's fields, each present only if the CPU supports it.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    values: [u64; FIELD_COUNT],
    present: [bool; FIELD_COUNT],
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot { values: [0; FIELD_COUNT], present: [false; FIELD_COUNT] }
    }
}

impl core::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut m = f.debug_map();
        for (i, field) in FIELDS.iter().enumerate() {
            if self.present[i] {
                m.entry(&field.name, &format_args!("{:#x}", self.values[i]));
            }
        }
        m.finish()
    }
}

impl Snapshot {
    /// Fill a snapshot with `read(encoding)` for every field with an index at
    /// most the CPU's highest index; a read that returns None (VMREAD failed:
    /// the CPU does not support the field) leaves the field absent.
    pub fn read(vmcs_enum: u64, mut read: impl FnMut(u32) -> Option<u64>) -> Snapshot {
        let mut s = Snapshot::default();
        let top = highest_index(vmcs_enum);
        for (i, field) in FIELDS.iter().enumerate() {
            if index(field.encoding) <= top {
                if let Some(v) = read(field.encoding) {
                    s.values[i] = v;
                    s.present[i] = true;
                }
            }
        }
        s
    }

    /// The field's value; 0 when the CPU lacks it (or it is not in the table).
    pub fn get(&self, encoding: u32) -> u64 {
        position(encoding).filter(|&i| self.present[i]).map_or(0, |i| self.values[i])
    }

    pub fn has(&self, encoding: u32) -> bool {
        position(encoding).is_some_and(|i| self.present[i])
    }

    /// Set a field (it becomes present). Panics on an encoding not in the table.
    pub fn set(&mut self, encoding: u32, value: u64) {
        let i = position(encoding).unwrap_or_else(|| panic!("VMCS field {encoding:#06x} is not in the table"));
        self.values[i] = value;
        self.present[i] = true;
    }

    /// Every present field as (encoding, value).
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        FIELDS.iter().enumerate().filter(|(i, _)| self.present[*i]).map(|(i, f)| (f.encoding, self.values[i]))
    }

    /// How many fields are present.
    pub fn len(&self) -> usize {
        self.present.iter().filter(|p| **p).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_full_encodings_only() {
        for w in FIELDS.windows(2) {
            assert!(w[0].encoding < w[1].encoding, "{:#x} before {:#x}", w[0].encoding, w[1].encoding);
        }
        for f in FIELDS {
            assert_eq!(f.encoding & 1, 0, "{}: a high-half encoding", f.name);
            assert_eq!(f.encoding & 0x9000, 0, "{}: bits 15 and 12 are reserved", f.name);
        }
    }

    #[test]
    fn read_honours_the_highest_index_and_absent_fields() {
        // Highest index 0x17 (VMCS_ENUM = 0x2e), and the CPU lacks PML index.
        let s = Snapshot::read(0x2e, |e| (e != PML_INDEX).then_some(e as u64 + 1));
        assert_eq!(s.get(GUEST_CR0), GUEST_CR0 as u64 + 1);
        assert!(!s.has(PML_INDEX) && s.get(PML_INDEX) == 0);
        assert!(s.has(HOST_RIP), "index 0xb");
        assert!(!s.has(TSC_MULTIPLIER), "index 0x19 is above 0x17");
        assert_eq!(name(GUEST_RFLAGS), Some("guest RFLAGS"));
        assert_eq!(name(0x7777), None);
    }
}
