//! Checks on the VMX controls: SDM Vol. 3C §27.2.1.1 "VM-Execution Control
//! Fields", §27.2.1.2 "VM-Exit Control Fields", §27.2.1.3 "VM-Entry Control
//! Fields". A failure is VMfailValid with VM-instruction error 7.

use super::fields::enc;
use super::{rule_def, Ctx, Event, Out, Rule};
use super::{SEC_ENTRY_CONTROLS as ENTRY, SEC_EXEC_CONTROLS as EXEC, SEC_EXIT_CONTROLS as EXIT};
use crate::controls::{entry, exit, pin, proc1, proc2};
use crate::vmx_global::ept_vpid;

rule_def!(
    PIN_RESERVED,
    "ctl.pin.reserved",
    EXEC,
    Control,
    "Reserved bits in the pin-based VM-execution controls must be set as IA32_VMX_(TRUE_)PINBASED_CTLS allows"
);
rule_def!(PROC_RESERVED, "ctl.proc.reserved", EXEC, Control,
    "Reserved bits in the primary processor-based VM-execution controls must be set as IA32_VMX_(TRUE_)PROCBASED_CTLS allows");
rule_def!(PROC2_RESERVED, "ctl.proc2.reserved", EXEC, Control,
    "If \"activate secondary controls\" is 1, reserved bits in the secondary processor-based controls must be cleared (IA32_VMX_PROCBASED_CTLS2)");
rule_def!(
    CR3_TARGET_COUNT,
    "ctl.cr3_target_count",
    EXEC,
    Control,
    "The CR3-target count must not be greater than the number IA32_VMX_MISC[24:16] reports (4)"
);
rule_def!(IO_BITMAPS, "ctl.io_bitmaps", EXEC, Control,
    "If \"use I/O bitmaps\" is 1, each I/O-bitmap address must be 4-KByte aligned and within the physical-address width");
rule_def!(
    MSR_BITMAPS,
    "ctl.msr_bitmaps",
    EXEC,
    Control,
    "If \"use MSR bitmaps\" is 1, the MSR-bitmap address must be 4-KByte aligned and within the physical-address width"
);
rule_def!(VIRTUAL_APIC, "ctl.tpr_shadow.virtual_apic", EXEC, Control,
    "If \"use TPR shadow\" is 1, the virtual-APIC address must be 4-KByte aligned and within the physical-address width");
rule_def!(
    TPR_THRESHOLD_RESERVED,
    "ctl.tpr_shadow.threshold_reserved",
    EXEC,
    Control,
    "If \"use TPR shadow\" is 1 and \"virtual-interrupt delivery\" is 0, bits 31:4 of the TPR threshold must be 0"
);
rule_def!(TPR_THRESHOLD_VTPR, "ctl.tpr_shadow.threshold_vtpr", EXEC, Control,
    "If \"use TPR shadow\" is 1 and \"virtual-interrupt delivery\" and \"virtualize APIC accesses\" are 0, TPR threshold bits 3:0 must not exceed VTPR bits 7:4");
rule_def!(TPR_SHADOW_REQUIRED, "ctl.tpr_shadow.required", EXEC, Control,
    "If \"use TPR shadow\" is 0, \"virtualize x2APIC mode\", \"APIC-register virtualization\" and \"virtual-interrupt delivery\" must be 0");
rule_def!(VIRTUAL_NMIS, "ctl.nmi.virtual_nmis", EXEC, Control, "If \"NMI exiting\" is 0, \"virtual NMIs\" must be 0");
rule_def!(NMI_WINDOW, "ctl.nmi.window", EXEC, Control, "If \"virtual NMIs\" is 0, \"NMI-window exiting\" must be 0");
rule_def!(APIC_ACCESS, "ctl.apic_access", EXEC, Control,
    "If \"virtualize APIC accesses\" is 1, the APIC-access address must be 4-KByte aligned and within the physical-address width");
rule_def!(
    X2APIC_AND_APIC_ACCESS,
    "ctl.x2apic_and_apic_access",
    EXEC,
    Control,
    "If \"virtualize x2APIC mode\" is 1, \"virtualize APIC accesses\" must be 0"
);
rule_def!(
    VID_EXTERNAL_INTERRUPT,
    "ctl.vid.external_interrupt_exiting",
    EXEC,
    Control,
    "If \"virtual-interrupt delivery\" is 1, \"external-interrupt exiting\" must be 1"
);
rule_def!(
    POSTED_VID,
    "ctl.posted.vid",
    EXEC,
    Control,
    "If \"process posted interrupts\" is 1, \"virtual-interrupt delivery\" must be 1"
);
rule_def!(
    POSTED_ACK,
    "ctl.posted.ack_on_exit",
    EXEC,
    Control,
    "If \"process posted interrupts\" is 1, the \"acknowledge interrupt on exit\" VM-exit control must be 1"
);
rule_def!(
    POSTED_VECTOR,
    "ctl.posted.vector",
    EXEC,
    Control,
    "If \"process posted interrupts\" is 1, bits 15:8 of the posted-interrupt notification vector must be 0"
);
rule_def!(POSTED_DESCRIPTOR, "ctl.posted.descriptor", EXEC, Control,
    "If \"process posted interrupts\" is 1, the posted-interrupt descriptor address must be 64-byte aligned and within the physical-address width");
rule_def!(VPID_ZERO, "ctl.vpid.zero", EXEC, Control, "If \"enable VPID\" is 1, the VPID must not be 0000H");
rule_def!(
    EPTP_MEMORY_TYPE,
    "ctl.ept.memory_type",
    EXEC,
    Control,
    "If \"enable EPT\" is 1, EPTP bits 2:0 must be a memory type IA32_VMX_EPT_VPID_CAP allows (UC bit 8, WB bit 14)"
);
rule_def!(EPTP_WALK_LENGTH, "ctl.ept.walk_length", EXEC, Control,
    "If \"enable EPT\" is 1, EPTP bits 5:3 must be one less than a supported page-walk length (4 levels: bit 6 of IA32_VMX_EPT_VPID_CAP)");
rule_def!(
    EPTP_ACCESSED_DIRTY,
    "ctl.ept.accessed_dirty",
    EXEC,
    Control,
    "If \"enable EPT\" is 1, EPTP bit 6 (accessed and dirty flags) must be 0 unless IA32_VMX_EPT_VPID_CAP[21] is 1"
);
rule_def!(
    EPTP_RESERVED,
    "ctl.ept.reserved",
    EXEC,
    Control,
    "If \"enable EPT\" is 1, EPTP reserved bits 11:7 and bits beyond the physical-address width must be 0"
);
rule_def!(PML_EPT, "ctl.pml.ept", EXEC, Control, "If \"enable PML\" is 1, \"enable EPT\" must be 1");
rule_def!(
    PML_ADDRESS,
    "ctl.pml.address",
    EXEC,
    Control,
    "If \"enable PML\" is 1, the PML address must be 4-KByte aligned and within the physical-address width"
);
rule_def!(
    UNRESTRICTED_EPT,
    "ctl.unrestricted_guest.ept",
    EXEC,
    Control,
    "If \"unrestricted guest\" is 1, \"enable EPT\" must be 1"
);
rule_def!(
    MODE_BASED_EPT,
    "ctl.mode_based_execute.ept",
    EXEC,
    Control,
    "If \"mode-based execute control for EPT\" is 1, \"enable EPT\" must be 1"
);
rule_def!(
    SPP_EPT,
    "ctl.spp.ept",
    EXEC,
    Control,
    "If \"sub-page write permissions for EPT\" is 1, \"enable EPT\" must be 1"
);
rule_def!(SPP_POINTER, "ctl.spp.pointer", EXEC, Control,
    "If \"sub-page write permissions for EPT\" is 1, the SPPTP must be 4-KByte aligned and within the physical-address width");
rule_def!(
    VMFUNC_RESERVED,
    "ctl.vmfunc.reserved",
    EXEC,
    Control,
    "If \"enable VM functions\" is 1, VM-function controls the CPU does not support (IA32_VMX_VMFUNC) must be 0"
);
rule_def!(
    VMFUNC_EPTP_SWITCHING_EPT,
    "ctl.vmfunc.eptp_switching_ept",
    EXEC,
    Control,
    "If the \"EPTP switching\" VM function is enabled, \"enable EPT\" must be 1"
);
rule_def!(VMFUNC_EPTP_LIST, "ctl.vmfunc.eptp_list", EXEC, Control,
    "If the \"EPTP switching\" VM function is enabled, the EPTP-list address must be 4-KByte aligned and within the physical-address width");
rule_def!(SHADOWING_BITMAPS, "ctl.vmcs_shadowing.bitmaps", EXEC, Control,
    "If \"VMCS shadowing\" is 1, the VMREAD- and VMWRITE-bitmap addresses must be 4-KByte aligned and within the physical-address width");
rule_def!(VE_ADDRESS, "ctl.ept_violation_ve.address", EXEC, Control,
    "If \"EPT-violation #VE\" is 1, the virtualization-exception information address must be 4-KByte aligned and within the physical-address width");

rule_def!(
    EXIT_RESERVED,
    "ctl.exit.reserved",
    EXIT,
    Control,
    "Reserved bits in the primary VM-exit controls must be set as IA32_VMX_(TRUE_)EXIT_CTLS allows"
);
rule_def!(
    EXIT_SAVE_TIMER,
    "ctl.exit.save_preemption_timer",
    EXIT,
    Control,
    "If \"activate VMX-preemption timer\" is 0, \"save VMX-preemption timer value\" must be 0"
);
rule_def!(EXIT_MSR_STORE, "ctl.exit.msr_store_area", EXIT, Control,
    "If the VM-exit MSR-store count is not 0, its address must be 16-byte aligned and the whole area within the physical-address width");
rule_def!(EXIT_MSR_LOAD, "ctl.exit.msr_load_area", EXIT, Control,
    "If the VM-exit MSR-load count is not 0, its address must be 16-byte aligned and the whole area within the physical-address width");

rule_def!(
    ENTRY_RESERVED,
    "ctl.entry.reserved",
    ENTRY,
    Control,
    "Reserved bits in the VM-entry controls must be set as IA32_VMX_(TRUE_)ENTRY_CTLS allows"
);
rule_def!(EVENT_TYPE, "ctl.event.type", ENTRY, Control,
    "An injected event's type must not be 1 (reserved), nor 7 (other event) unless the CPU supports the monitor trap flag");
rule_def!(EVENT_NMI_VECTOR, "ctl.event.nmi_vector", ENTRY, Control, "An injected NMI (type 2) must have vector 2");
rule_def!(
    EVENT_EXCEPTION_VECTOR,
    "ctl.event.exception_vector",
    ENTRY,
    Control,
    "An injected hardware exception (type 3) must have a vector of at most 31"
);
rule_def!(
    EVENT_OTHER_VECTOR,
    "ctl.event.other_vector",
    ENTRY,
    Control,
    "An injected other event (type 7, pending MTF VM exit) must have vector 0"
);
rule_def!(EVENT_ERROR_CODE_FLAG, "ctl.event.deliver_error_code", ENTRY, Control,
    "Deliver-error-code must be 1 exactly for a hardware exception #DF, #TS, #NP, #SS, #GP, #PF or #AC injected in protected mode (unrestricted guest 0 or CR0.PE 1)");
rule_def!(
    EVENT_RESERVED,
    "ctl.event.reserved",
    ENTRY,
    Control,
    "Bits 30:12 of the VM-entry interruption-information field must be 0"
);
rule_def!(
    EVENT_ERROR_CODE,
    "ctl.event.error_code",
    ENTRY,
    Control,
    "When deliver-error-code is 1, bits 31:16 of the VM-entry exception error code must be 0"
);
rule_def!(EVENT_INSTRUCTION_LENGTH, "ctl.event.instruction_length", ENTRY, Control,
    "For an injected software interrupt or (privileged) software exception the VM-entry instruction length must be 1-15 (0 too if IA32_VMX_MISC[30])");
rule_def!(ENTRY_MSR_LOAD, "ctl.entry.msr_load_area", ENTRY, Control,
    "If the VM-entry MSR-load count is not 0, its address must be 16-byte aligned and the whole area within the physical-address width");
rule_def!(ENTRY_SMM, "ctl.entry.smm", ENTRY, Control, "Outside SMM, the \"entry to SMM\" VM-entry control must be 0");
rule_def!(
    ENTRY_DUAL_MONITOR,
    "ctl.entry.deactivate_dual_monitor",
    ENTRY,
    Control,
    "Outside SMM, the \"deactivate dual-monitor treatment\" VM-entry control must be 0"
);

pub static RULES: &[&Rule] = &[
    &PIN_RESERVED,
    &PROC_RESERVED,
    &PROC2_RESERVED,
    &CR3_TARGET_COUNT,
    &IO_BITMAPS,
    &MSR_BITMAPS,
    &VIRTUAL_APIC,
    &TPR_THRESHOLD_RESERVED,
    &TPR_THRESHOLD_VTPR,
    &TPR_SHADOW_REQUIRED,
    &VIRTUAL_NMIS,
    &NMI_WINDOW,
    &APIC_ACCESS,
    &X2APIC_AND_APIC_ACCESS,
    &VID_EXTERNAL_INTERRUPT,
    &POSTED_VID,
    &POSTED_ACK,
    &POSTED_VECTOR,
    &POSTED_DESCRIPTOR,
    &VPID_ZERO,
    &EPTP_MEMORY_TYPE,
    &EPTP_WALK_LENGTH,
    &EPTP_ACCESSED_DIRTY,
    &EPTP_RESERVED,
    &PML_EPT,
    &PML_ADDRESS,
    &UNRESTRICTED_EPT,
    &MODE_BASED_EPT,
    &SPP_EPT,
    &SPP_POINTER,
    &VMFUNC_RESERVED,
    &VMFUNC_EPTP_SWITCHING_EPT,
    &VMFUNC_EPTP_LIST,
    &SHADOWING_BITMAPS,
    &VE_ADDRESS,
    &EXIT_RESERVED,
    &EXIT_SAVE_TIMER,
    &EXIT_MSR_STORE,
    &EXIT_MSR_LOAD,
    &ENTRY_RESERVED,
    &EVENT_TYPE,
    &EVENT_NMI_VECTOR,
    &EVENT_EXCEPTION_VECTOR,
    &EVENT_OTHER_VECTOR,
    &EVENT_ERROR_CODE_FLAG,
    &EVENT_RESERVED,
    &EVENT_ERROR_CODE,
    &EVENT_INSTRUCTION_LENGTH,
    &ENTRY_MSR_LOAD,
    &ENTRY_SMM,
    &ENTRY_DUAL_MONITOR,
];

/// `value` has every bit allowed-0 (low half of `cap`) requires and none
/// allowed-1 (high half) forbids (SDM Vol. 3D §A.3 "VM-Execution Controls").
pub fn allowed(value: u32, cap: u64) -> bool {
    let must_be_1 = cap as u32;
    let may_be_1 = (cap >> 32) as u32;
    value & must_be_1 == must_be_1 && value & !may_be_1 == 0
}

/// IA32_VMX_MISC bits (SDM Vol. 3D §A.6 "Miscellaneous Data").
pub mod misc {
    /// Bits 24:16: the number of CR3-target values supported.
    pub const fn cr3_targets(misc: u64) -> u64 {
        (misc >> 16) & 0x1ff
    }
    /// Bit 30: VM entry allows injection of a software interrupt, software
    /// exception or privileged software exception with instruction length 0.
    pub const fn zero_length_injection(misc: u64) -> bool {
        misc & (1 << 30) != 0
    }
    /// Bits 8:6: activity states HLT (6), shutdown (7), wait-for-SIPI (8) supported.
    pub const fn activity_state_supported(misc: u64, state: u64) -> bool {
        state == 0 || (state <= 3 && misc & (1 << (5 + state)) != 0)
    }
}

/// IA32_VMX_EPT_VPID_CAP bit 21: accessed and dirty flags for EPT (SDM Vol. 3D
/// §A.10 "VPID and EPT Capabilities").
pub const EPT_ACCESSED_DIRTY: u64 = 1 << 21;
/// IA32_VMX_EPT_VPID_CAP bit 7: 5-level EPT page walks.
pub const EPT_PAGE_WALK_5: u64 = 1 << 7;
/// VM-function control bit 0: EPTP switching (SDM Vol. 3C §25.6.14 "VM-Function
/// Controls").
pub const VMFUNC_EPTP_SWITCHING: u64 = 1;

/// An area of `count` 16-byte MSR entries at `addr`: 16-byte aligned, and its
/// first and last byte within the physical-address width (SDM Vol. 3C §27.2.1.2
/// "VM-Exit Control Fields").
fn msr_area_ok(c: &Ctx, addr: u64, count: u64) -> bool {
    count == 0 || (addr & 0xf == 0 && c.within_width(addr) && c.within_width(addr.wrapping_add(count * 16 - 1)))
}

pub(crate) fn check(c: &Ctx, out: &mut Out<'_>) {
    execution(c, out);
    exit_controls(c, out);
    entry_controls(c, out);
}

fn execution(c: &Ctx, out: &mut Out<'_>) {
    let caps = c.caps;
    out.check(allowed(c.pin, caps.pin_based_ctls), &PIN_RESERVED, "");
    out.check(allowed(c.proc1, caps.processor_based_ctls), &PROC_RESERVED, "");
    if c.proc1_has(proc1::ACTIVATE_SECONDARY) {
        out.check(allowed(c.proc2, caps.processor_based_ctls2), &PROC2_RESERVED, "");
    }
    out.check(c.get(enc::CR3_TARGET_COUNT) <= misc::cr3_targets(caps.misc), &CR3_TARGET_COUNT, "");
    if c.proc1_has(proc1::USE_IO_BITMAPS) {
        out.check(c.page_address_ok(c.get(enc::IO_BITMAP_A)), &IO_BITMAPS, "I/O bitmap A");
        out.check(c.page_address_ok(c.get(enc::IO_BITMAP_B)), &IO_BITMAPS, "I/O bitmap B");
    }
    if c.proc1_has(proc1::USE_MSR_BITMAPS) {
        out.check(c.page_address_ok(c.get(enc::MSR_BITMAPS)), &MSR_BITMAPS, "");
    }
    let vid = c.proc2_has(proc2::VIRTUAL_INTERRUPT_DELIVERY);
    let apic_accesses = c.proc2_has(proc2::VIRTUALIZE_APIC_ACCESSES);
    if c.proc1_has(proc1::USE_TPR_SHADOW) {
        let vapic = c.get(enc::VIRTUAL_APIC_ADDR);
        out.check(c.page_address_ok(vapic), &VIRTUAL_APIC, "");
        let threshold = c.get(enc::TPR_THRESHOLD);
        if !vid {
            out.check(threshold & 0xffff_fff0 == 0, &TPR_THRESHOLD_RESERVED, "");
        }
        if !vid && !apic_accesses && c.page_address_ok(vapic) {
            // VTPR is byte 80H of the virtual-APIC page (SDM Vol. 3C §30.1.1
            // "Virtualized APIC Registers").
            if let Some(q) = (c.memory)(vapic + 0x80) {
                out.check(threshold & 0xf <= (q & 0xff) >> 4, &TPR_THRESHOLD_VTPR, "");
            }
        }
    } else {
        let needs =
            proc2::VIRTUALIZE_X2APIC_MODE | proc2::APIC_REGISTER_VIRTUALIZATION | proc2::VIRTUAL_INTERRUPT_DELIVERY;
        out.check(c.proc2 & needs == 0, &TPR_SHADOW_REQUIRED, "");
    }
    if !c.pin_has(pin::NMI_EXITING) {
        out.check(!c.pin_has(pin::VIRTUAL_NMIS), &VIRTUAL_NMIS, "");
    }
    if !c.pin_has(pin::VIRTUAL_NMIS) {
        out.check(!c.proc1_has(proc1::NMI_WINDOW_EXITING), &NMI_WINDOW, "");
    }
    if apic_accesses {
        out.check(c.page_address_ok(c.get(enc::APIC_ACCESS_ADDR)), &APIC_ACCESS, "");
    }
    if c.proc2_has(proc2::VIRTUALIZE_X2APIC_MODE) {
        out.check(!apic_accesses, &X2APIC_AND_APIC_ACCESS, "");
    }
    if vid {
        out.check(c.pin_has(pin::EXTERNAL_INTERRUPT_EXITING), &VID_EXTERNAL_INTERRUPT, "");
    }
    if c.pin_has(pin::POSTED_INTERRUPTS) {
        out.check(vid, &POSTED_VID, "");
        out.check(c.exit_has(exit::ACK_INTERRUPT_ON_EXIT), &POSTED_ACK, "");
        out.check(c.get(enc::POSTED_INTR_NOTIFICATION_VECTOR) & 0xff00 == 0, &POSTED_VECTOR, "");
        let d = c.get(enc::POSTED_INTR_DESC_ADDR);
        out.check(d & 0x3f == 0 && c.within_width(d), &POSTED_DESCRIPTOR, "");
    }
    if c.proc2_has(proc2::ENABLE_VPID) {
        out.check(c.get(enc::VPID) != 0, &VPID_ZERO, "");
    }
    let ept = c.proc2_has(proc2::ENABLE_EPT);
    if ept {
        let eptp = c.get(enc::EPT_POINTER);
        let cap = caps.ept_vpid_cap;
        let type_ok = match eptp & 7 {
            0 => cap & ept_vpid::EPTP_UC != 0,
            6 => cap & ept_vpid::EPTP_WB != 0,
            _ => false,
        };
        out.check(type_ok, &EPTP_MEMORY_TYPE, "");
        let walk_ok = match (eptp >> 3) & 7 {
            3 => cap & ept_vpid::PAGE_WALK_4 != 0,
            4 => cap & EPT_PAGE_WALK_5 != 0,
            _ => false,
        };
        out.check(walk_ok, &EPTP_WALK_LENGTH, "");
        out.check(eptp & (1 << 6) == 0 || cap & EPT_ACCESSED_DIRTY != 0, &EPTP_ACCESSED_DIRTY, "");
        out.check(eptp & 0xf80 == 0 && c.within_width(eptp), &EPTP_RESERVED, "");
    }
    if c.proc2_has(proc2::ENABLE_PML) {
        out.check(ept, &PML_EPT, "");
        out.check(c.page_address_ok(c.get(enc::PML_ADDRESS)), &PML_ADDRESS, "");
    }
    if c.unrestricted_guest() {
        out.check(ept, &UNRESTRICTED_EPT, "");
    }
    if c.proc2_has(proc2::MODE_BASED_EPT_EXECUTE) {
        out.check(ept, &MODE_BASED_EPT, "");
    }
    if c.proc2_has(proc2::SUB_PAGE_WRITE_PERMISSIONS) {
        out.check(ept, &SPP_EPT, "");
        out.check(c.page_address_ok(c.get(enc::SPPT_POINTER)), &SPP_POINTER, "");
    }
    if c.proc2_has(proc2::ENABLE_VMFUNC) {
        let f = c.get(enc::VM_FUNCTION_CONTROLS);
        out.check(f & !caps.vm_function == 0, &VMFUNC_RESERVED, "");
        if f & VMFUNC_EPTP_SWITCHING != 0 {
            out.check(ept, &VMFUNC_EPTP_SWITCHING_EPT, "");
            out.check(c.page_address_ok(c.get(enc::EPTP_LIST_ADDR)), &VMFUNC_EPTP_LIST, "");
        }
    }
    if c.proc2_has(proc2::VMCS_SHADOWING) {
        out.check(c.page_address_ok(c.get(enc::VMREAD_BITMAP)), &SHADOWING_BITMAPS, "VMREAD bitmap");
        out.check(c.page_address_ok(c.get(enc::VMWRITE_BITMAP)), &SHADOWING_BITMAPS, "VMWRITE bitmap");
    }
    if c.proc2_has(proc2::EPT_VIOLATION_VE) {
        out.check(c.page_address_ok(c.get(enc::VE_INFO_ADDR)), &VE_ADDRESS, "");
    }
}

fn exit_controls(c: &Ctx, out: &mut Out<'_>) {
    out.check(allowed(c.exit, c.caps.exit_ctls), &EXIT_RESERVED, "");
    if !c.pin_has(pin::PREEMPTION_TIMER) {
        out.check(!c.exit_has(exit::SAVE_PREEMPTION_TIMER), &EXIT_SAVE_TIMER, "");
    }
    let store = (c.get(enc::EXIT_MSR_STORE_ADDR), c.get(enc::EXIT_MSR_STORE_COUNT));
    out.check(msr_area_ok(c, store.0, store.1), &EXIT_MSR_STORE, "");
    let load = (c.get(enc::EXIT_MSR_LOAD_ADDR), c.get(enc::EXIT_MSR_LOAD_COUNT));
    out.check(msr_area_ok(c, load.0, load.1), &EXIT_MSR_LOAD, "");
}

fn entry_controls(c: &Ctx, out: &mut Out<'_>) {
    out.check(allowed(c.entry, c.caps.entry_ctls), &ENTRY_RESERVED, "");
    if let Some(e) = c.injected_event() {
        event(c, e, out);
    }
    let load = (c.get(enc::ENTRY_MSR_LOAD_ADDR), c.get(enc::ENTRY_MSR_LOAD_COUNT));
    out.check(msr_area_ok(c, load.0, load.1), &ENTRY_MSR_LOAD, "");
    // This hypervisor never runs in SMM.
    out.check(!c.entry_has(entry::ENTRY_TO_SMM), &ENTRY_SMM, "");
    out.check(!c.entry_has(entry::DEACTIVATE_DUAL_MONITOR), &ENTRY_DUAL_MONITOR, "");
}

/// The VM-entry interruption-information checks (SDM Vol. 3C §27.2.1.3
/// "VM-Entry Control Fields", Table 25-17 "Format of the VM-Entry
/// Interruption-Information Field").
fn event(c: &Ctx, e: Event, out: &mut Out<'_>) {
    let mtf = crate::controls::can_set(c.caps.processor_based_ctls, proc1::MONITOR_TRAP_FLAG);
    let kind = e.kind();
    let vector = e.vector();
    out.check(kind != 1 && (kind != Event::OTHER_EVENT || mtf), &EVENT_TYPE, "");
    match kind {
        Event::NMI => out.check(vector == 2, &EVENT_NMI_VECTOR, ""),
        Event::HARDWARE_EXCEPTION => out.check(vector <= 31, &EVENT_EXCEPTION_VECTOR, ""),
        Event::OTHER_EVENT => out.check(vector == 0, &EVENT_OTHER_VECTOR, ""),
        _ => {}
    }
    let protected = !c.unrestricted_guest() || c.get(enc::GUEST_CR0) & 1 != 0;
    let has_error_code = matches!(vector, 8 | 10..=14 | 17);
    let should = protected && kind == Event::HARDWARE_EXCEPTION && has_error_code;
    out.check(e.deliver_error_code() == should, &EVENT_ERROR_CODE_FLAG, "");
    out.check(e.info & 0x7fff_f000 == 0, &EVENT_RESERVED, "");
    if e.deliver_error_code() {
        out.check(c.get(enc::ENTRY_EXCEPTION_ERROR_CODE) & 0xffff_0000 == 0, &EVENT_ERROR_CODE, "");
    }
    if matches!(kind, Event::SOFTWARE_INTERRUPT | Event::PRIVILEGED_SOFTWARE_EXCEPTION | Event::SOFTWARE_EXCEPTION) {
        let len = c.get(enc::ENTRY_INSTRUCTION_LENGTH);
        let min = if misc::zero_length_injection(c.caps.misc) { 0 } else { 1 };
        out.check((min..=15).contains(&len), &EVENT_INSTRUCTION_LENGTH, "");
    }
}
