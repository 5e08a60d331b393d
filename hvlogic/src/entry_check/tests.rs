//! Every rule fires alone: a valid snapshot with one change makes that rule,
//! and only that rule, fire. The valid snapshots are the ones this
//! hypervisor builds (real mode with unrestricted guest, 32-bit protected
//! mode with paging) plus an IA-32e mode and a virtual-8086 mode guest.

use super::fields::{enc::*, Snapshot};
use super::verdict::{Outcome, Verdict};
use super::*;
use crate::controls::{entry, exit, pin, proc1, proc2};
use std::collections::BTreeMap;
use std::string::ToString;
use std::vec::Vec;

struct Env {
    v: Snapshot,
    caps: VmxGlobalData,
    cpu: CpuFacts,
    mem: BTreeMap<u64, u64>,
}

impl Env {
    fn set(&mut self, e: u32, value: u64) {
        self.v.set(e, value);
    }
    fn or(&mut self, e: u32, bits: u64) {
        self.v.set(e, self.v.get(e) | bits);
    }
    fn clear(&mut self, e: u32, bits: u64) {
        self.v.set(e, self.v.get(e) & !bits);
    }
    fn run(&self) -> Vec<Violation> {
        let read = |a: u64| self.mem.get(&a).copied();
        let writable = |index: u32, _value: u64| match index {
            0x174..=0x176 => Some(true),
            0x1234 => Some(false),
            _ => None,
        };
        check(&Input {
            vmcs: &self.v,
            caps: &self.caps,
            cpu: self.cpu,
            memory: &read,
            msr_writable: &writable,
            skip: &[],
        })
    }
}

/// A CPU that offers every control (TRUE MSRs of a Bochs Skylake-X, widened).
fn caps() -> VmxGlobalData {
    VmxGlobalData {
        vmx_basic: 0x00da_0400_0000_0004,
        pin_based_ctls: 0x0000_00ff_0000_0016,
        processor_based_ctls: 0xffff_fffe_0400_6172,
        exit_ctls: 0xffff_ffff_0003_6dfb,
        entry_ctls: 0xffff_ffff_0000_11fb,
        misc: 0x7004_c1e7,
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x00ff_ffff,
        vmcs_enum: 0x2e,
        processor_based_ctls2: 0xffff_ffff_0000_0000,
        ept_vpid_cap: 0x0000_0f01_0673_4141,
        vm_function: 1,
        true_flag: true,
        ..VmxGlobalData::default()
    }
}

fn facts() -> CpuFacts {
    CpuFacts {
        maxphyaddr: 40,
        linear_width: 48,
        efer_valid: 0xd01,
        perf_global_ctrl_valid: 0xf | (7 << 32),
        debugctl_valid: DEBUGCTL_DEFINED,
        ia32e_mode: true,
        sgx: false,
        rtm: false,
        current_vmcs: 0x22000,
    }
}

const NONCANONICAL: u64 = 0x0000_8000_0000_0000;
const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// Controls and host state as this hypervisor writes them.
fn common() -> Env {
    let mut e = Env { v: Snapshot::default(), caps: caps(), cpu: facts(), mem: BTreeMap::new() };
    e.mem.insert(0x20000, 4); // a page holding this CPU's VMCS revision identifier
    e.mem.insert(0x22000, 4); // the current VMCS
    let pins = 0x16 | pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING | pin::PREEMPTION_TIMER;
    e.set(PIN_BASED_CONTROLS, pins as u64);
    let p1 =
        0x0400_6172 | proc1::HLT_EXITING | proc1::USE_IO_BITMAPS | proc1::USE_MSR_BITMAPS | proc1::ACTIVATE_SECONDARY;
    e.set(PRIMARY_PROC_CONTROLS, p1 as u64);
    e.set(SECONDARY_PROC_CONTROLS, (proc2::ENABLE_EPT | proc2::ENABLE_VPID) as u64);
    let x = 0x3_6dfb | exit::HOST_ADDRESS_SPACE_SIZE | exit::ACK_INTERRUPT_ON_EXIT | exit::SAVE_EFER | exit::LOAD_EFER;
    e.set(EXIT_CONTROLS, (x | exit::SAVE_PAT | exit::LOAD_PAT) as u64);
    e.set(ENTRY_CONTROLS, (0x11fb | entry::LOAD_EFER | entry::LOAD_PAT) as u64);
    for f in [EXCEPTION_BITMAP, CR3_TARGET_COUNT, EXIT_MSR_STORE_COUNT, EXIT_MSR_LOAD_COUNT, ENTRY_MSR_LOAD_COUNT] {
        e.set(f, 0);
    }
    e.set(ENTRY_INTERRUPTION_INFO, 0);
    e.set(IO_BITMAP_A, 0x10000);
    e.set(IO_BITMAP_B, 0x11000);
    e.set(MSR_BITMAPS, 0x12000);
    e.set(EPT_POINTER, 0x13000 | 6 | (3 << 3));
    e.set(VPID, 1);
    e.set(HOST_CR0, 0x8005_0033);
    e.set(HOST_CR3, 0x1000);
    e.set(HOST_CR4, 0x2020);
    e.set(HOST_CS_SELECTOR, 0x8);
    for f in [HOST_SS_SELECTOR, HOST_DS_SELECTOR, HOST_ES_SELECTOR] {
        e.set(f, 0x10);
    }
    e.set(HOST_FS_SELECTOR, 0);
    e.set(HOST_GS_SELECTOR, 0);
    e.set(HOST_TR_SELECTOR, 0x18);
    e.set(HOST_FS_BASE, 0);
    e.set(HOST_GS_BASE, 0);
    e.set(HOST_TR_BASE, 0x5000);
    e.set(HOST_GDTR_BASE, 0x6000);
    e.set(HOST_IDTR_BASE, 0x7000);
    e.set(HOST_IA32_SYSENTER_ESP, 0);
    e.set(HOST_IA32_SYSENTER_EIP, 0);
    e.set(HOST_IA32_EFER, 0xd00);
    e.set(HOST_IA32_PAT, PAT_RESET);
    e.set(HOST_RSP, 0x8000);
    e.set(HOST_RIP, 0x20_0000);
    // Guest non-register state and MSRs.
    e.set(GUEST_DR7, 0x400);
    e.set(GUEST_RFLAGS, 2);
    e.set(GUEST_INTERRUPTIBILITY, 0);
    e.set(GUEST_ACTIVITY_STATE, 0);
    e.set(GUEST_PENDING_DBG_EXCEPTIONS, 0);
    e.set(VMCS_LINK_POINTER, u64::MAX);
    e.set(GUEST_IA32_DEBUGCTL, 0);
    e.set(GUEST_IA32_SYSENTER_ESP, 0);
    e.set(GUEST_IA32_SYSENTER_EIP, 0);
    e.set(GUEST_IA32_EFER, 0);
    e.set(GUEST_IA32_PAT, PAT_RESET);
    e.set(PREEMPTION_TIMER_VALUE, 0);
    e.set(GUEST_LDTR_SELECTOR, 0);
    e.set(GUEST_LDTR_BASE, 0);
    e.set(GUEST_LDTR_LIMIT, 0);
    e.set(GUEST_LDTR_AR, 0x1_0000);
    e.set(GUEST_TR_SELECTOR, 0);
    e.set(GUEST_TR_BASE, 0);
    e.set(GUEST_TR_LIMIT, 0x67);
    e.set(GUEST_TR_AR, 0x8b);
    e
}

const DATA: [(u32, u32, u32, u32); 5] = [
    (GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR),
    (GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR),
    (GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR),
    (GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR),
    (GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR),
];

/// Real mode from the reset vector, with unrestricted guest (Bochs Skylake-X).
fn real() -> Env {
    let mut e = common();
    e.or(SECONDARY_PROC_CONTROLS, proc2::UNRESTRICTED_GUEST as u64);
    e.set(GUEST_CR0, 0x30);
    e.set(GUEST_CR4, 0x2000);
    e.set(GUEST_CR3, 0);
    e.set(GUEST_CS_SELECTOR, 0xf000);
    e.set(GUEST_CS_BASE, 0xffff_0000);
    e.set(GUEST_CS_LIMIT, 0xffff);
    e.set(GUEST_CS_AR, 0x9b);
    for (s, b, l, a) in DATA {
        e.set(s, 0);
        e.set(b, 0);
        e.set(l, 0xffff);
        e.set(a, 0x93);
    }
    e.set(GUEST_GDTR_BASE, 0);
    e.set(GUEST_GDTR_LIMIT, 0xffff);
    e.set(GUEST_IDTR_BASE, 0);
    e.set(GUEST_IDTR_LIMIT, 0xffff);
    e.set(GUEST_RIP, 0xfff0);
    e.set(GUEST_RSP, 0);
    e
}

/// 32-bit protected mode with paging, EPT without unrestricted guest (Bochs Lynnfield).
fn prot() -> Env {
    let mut e = common();
    e.set(GUEST_CR0, 0x8000_0031);
    e.set(GUEST_CR4, 0x2000);
    e.set(GUEST_CR3, 0x3000);
    e.set(GUEST_CS_SELECTOR, 0x8);
    e.set(GUEST_CS_BASE, 0);
    e.set(GUEST_CS_LIMIT, 0xffff_ffff);
    e.set(GUEST_CS_AR, 0xc09b);
    for (s, b, l, a) in DATA {
        e.set(s, 0x10);
        e.set(b, 0);
        e.set(l, 0xffff_ffff);
        e.set(a, 0xc093);
    }
    e.set(GUEST_GDTR_BASE, 0x4000);
    e.set(GUEST_GDTR_LIMIT, 23);
    e.set(GUEST_IDTR_BASE, 0);
    e.set(GUEST_IDTR_LIMIT, 0);
    e.set(GUEST_RIP, 0x1000);
    e.set(GUEST_RSP, 0x8000);
    e
}

/// 64-bit mode.
fn long() -> Env {
    let mut e = prot();
    e.or(ENTRY_CONTROLS, entry::IA32E_MODE_GUEST as u64);
    e.set(GUEST_CR4, 0x2020);
    e.set(GUEST_IA32_EFER, 0x500);
    e.set(GUEST_CS_AR, 0xa09b);
    e
}

fn v86_segments(e: &mut Env) {
    for (s, b, l, a) in DATA.into_iter().chain([(GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR)]) {
        e.set(s, 0x1000);
        e.set(b, 0x10000);
        e.set(l, 0xffff);
        e.set(a, 0xf3);
    }
}

/// Virtual-8086 mode inside 32-bit protected mode.
fn v86() -> Env {
    let mut e = prot();
    v86_segments(&mut e);
    e.or(GUEST_RFLAGS, 1 << 17);
    e
}

fn ids(v: &[Violation]) -> Vec<&'static str> {
    v.iter().map(|x| x.rule.id).collect()
}

fn one_rule(id: &str, base: fn() -> Env, change: impl Fn(&mut Env)) {
    assert!(rule(id).is_some(), "{id} is not a rule");
    let mut e = base();
    assert_eq!(ids(&e.run()), Vec::<&str>::new(), "the base for {id} is not valid");
    change(&mut e);
    let v = e.run();
    assert!(!v.is_empty() && v.iter().all(|x| x.rule.id == id), "{id}: fired {:?}", ids(&v));
}

macro_rules! cases {
    ($($name:ident: $id:literal, $base:ident, |$e:ident| $body:block)*) => {
        $(
            #[test]
            fn $name() {
                one_rule($id, $base, |$e: &mut Env| $body);
            }
        )*
        const CASE_IDS: &[&str] = &[$($id),*];
    };
}

const TPR: u64 = proc1::USE_TPR_SHADOW as u64;
const VID: u64 = proc2::VIRTUAL_INTERRUPT_DELIVERY as u64;
const NMI: u64 = 0x8000_0202;
const EXT_INT: u64 = 0x8000_0020;

fn tpr_shadow(e: &mut Env) {
    e.or(PRIMARY_PROC_CONTROLS, TPR);
    e.set(VIRTUAL_APIC_ADDR, 0x14000);
    e.set(TPR_THRESHOLD, 0);
}

fn posted(e: &mut Env) {
    tpr_shadow(e);
    e.or(SECONDARY_PROC_CONTROLS, VID);
    e.or(PIN_BASED_CONTROLS, pin::POSTED_INTERRUPTS as u64);
    e.set(POSTED_INTR_NOTIFICATION_VECTOR, 0xf2);
    e.set(POSTED_INTR_DESC_ADDR, 0x16000);
}

fn msr_area(e: &mut Env, entries: &[(u64, u64)]) {
    for (i, (head, value)) in entries.iter().enumerate() {
        e.mem.insert(0x30000 + 16 * i as u64, *head);
        e.mem.insert(0x30008 + 16 * i as u64, *value);
    }
    e.set(ENTRY_MSR_LOAD_ADDR, 0x30000);
    e.set(ENTRY_MSR_LOAD_COUNT, entries.len() as u64);
}

fn dpl3_stack(e: &mut Env) {
    e.set(GUEST_CS_SELECTOR, 0x1b);
    e.set(GUEST_CS_AR, 0xc0fb);
    e.set(GUEST_SS_SELECTOR, 0x23);
    e.set(GUEST_SS_AR, 0xc0f3);
}

cases! {
    // SDM Vol. 3C §27.2.1.1 "VM-Execution Control Fields"
    pin_reserved: "ctl.pin.reserved", real, |e| { e.clear(PIN_BASED_CONTROLS, 2) }
    proc_reserved: "ctl.proc.reserved", real, |e| { e.clear(PRIMARY_PROC_CONTROLS, 2) }
    proc2_reserved: "ctl.proc2.reserved", real, |e| {
        e.caps.processor_based_ctls2 &= !(1 << (32 + 3));
        e.or(SECONDARY_PROC_CONTROLS, 1 << 3);
    }
    cr3_target_count: "ctl.cr3_target_count", real, |e| { e.set(CR3_TARGET_COUNT, 5) }
    io_bitmaps: "ctl.io_bitmaps", real, |e| { e.set(IO_BITMAP_B, 0x11001) }
    msr_bitmaps: "ctl.msr_bitmaps", real, |e| { e.set(MSR_BITMAPS, 1 << 40) }
    virtual_apic: "ctl.tpr_shadow.virtual_apic", real, |e| { tpr_shadow(e); e.set(VIRTUAL_APIC_ADDR, 0x14010) }
    threshold_reserved: "ctl.tpr_shadow.threshold_reserved", real, |e| { tpr_shadow(e); e.set(TPR_THRESHOLD, 0x10) }
    threshold_vtpr: "ctl.tpr_shadow.threshold_vtpr", real, |e| {
        tpr_shadow(e);
        e.mem.insert(0x14080, 0x20);
        e.set(TPR_THRESHOLD, 3);
    }
    tpr_shadow_required: "ctl.tpr_shadow.required", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::VIRTUALIZE_X2APIC_MODE as u64)
    }
    virtual_nmis: "ctl.nmi.virtual_nmis", real, |e| {
        e.clear(PIN_BASED_CONTROLS, pin::NMI_EXITING as u64);
        e.or(PIN_BASED_CONTROLS, pin::VIRTUAL_NMIS as u64);
    }
    nmi_window: "ctl.nmi.window", real, |e| { e.or(PRIMARY_PROC_CONTROLS, proc1::NMI_WINDOW_EXITING as u64) }
    apic_access: "ctl.apic_access", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::VIRTUALIZE_APIC_ACCESSES as u64);
        e.set(APIC_ACCESS_ADDR, 0x15800);
    }
    x2apic_and_apic_access: "ctl.x2apic_and_apic_access", real, |e| {
        tpr_shadow(e);
        e.or(SECONDARY_PROC_CONTROLS, (proc2::VIRTUALIZE_X2APIC_MODE | proc2::VIRTUALIZE_APIC_ACCESSES) as u64);
        e.set(APIC_ACCESS_ADDR, 0x15000);
    }
    vid_external_interrupt: "ctl.vid.external_interrupt_exiting", real, |e| {
        tpr_shadow(e);
        e.or(SECONDARY_PROC_CONTROLS, VID);
        e.clear(PIN_BASED_CONTROLS, pin::EXTERNAL_INTERRUPT_EXITING as u64);
    }
    posted_vid: "ctl.posted.vid", real, |e| { posted(e); e.clear(SECONDARY_PROC_CONTROLS, VID) }
    posted_ack: "ctl.posted.ack_on_exit", real, |e| {
        posted(e);
        e.clear(EXIT_CONTROLS, exit::ACK_INTERRUPT_ON_EXIT as u64);
    }
    posted_vector: "ctl.posted.vector", real, |e| { posted(e); e.set(POSTED_INTR_NOTIFICATION_VECTOR, 0x1f2) }
    posted_descriptor: "ctl.posted.descriptor", real, |e| { posted(e); e.set(POSTED_INTR_DESC_ADDR, 0x16020) }
    vpid_zero: "ctl.vpid.zero", real, |e| { e.set(VPID, 0) }
    eptp_memory_type: "ctl.ept.memory_type", real, |e| { e.set(EPT_POINTER, 0x13000 | 1 | (3 << 3)) }
    eptp_walk_length: "ctl.ept.walk_length", real, |e| { e.set(EPT_POINTER, 0x13000 | 6 | (2 << 3)) }
    eptp_accessed_dirty: "ctl.ept.accessed_dirty", real, |e| {
        e.caps.ept_vpid_cap &= !(1 << 21);
        e.or(EPT_POINTER, 1 << 6);
    }
    eptp_reserved: "ctl.ept.reserved", real, |e| { e.or(EPT_POINTER, 1 << 8) }
    eptp_width: "ctl.ept.reserved", real, |e| { e.or(EPT_POINTER, 1 << 45) }
    pml_ept: "ctl.pml.ept", prot, |e| {
        e.clear(SECONDARY_PROC_CONTROLS, proc2::ENABLE_EPT as u64);
        e.or(SECONDARY_PROC_CONTROLS, proc2::ENABLE_PML as u64);
        e.set(PML_ADDRESS, 0x17000);
    }
    pml_address: "ctl.pml.address", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::ENABLE_PML as u64);
        e.set(PML_ADDRESS, 0x17001);
    }
    unrestricted_ept: "ctl.unrestricted_guest.ept", real, |e| {
        e.clear(SECONDARY_PROC_CONTROLS, proc2::ENABLE_EPT as u64)
    }
    mode_based_ept: "ctl.mode_based_execute.ept", prot, |e| {
        e.clear(SECONDARY_PROC_CONTROLS, proc2::ENABLE_EPT as u64);
        e.or(SECONDARY_PROC_CONTROLS, proc2::MODE_BASED_EPT_EXECUTE as u64);
    }
    spp_ept: "ctl.spp.ept", prot, |e| {
        e.clear(SECONDARY_PROC_CONTROLS, proc2::ENABLE_EPT as u64);
        e.or(SECONDARY_PROC_CONTROLS, proc2::SUB_PAGE_WRITE_PERMISSIONS as u64);
        e.set(SPPT_POINTER, 0x18000);
    }
    spp_pointer: "ctl.spp.pointer", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::SUB_PAGE_WRITE_PERMISSIONS as u64);
        e.set(SPPT_POINTER, 0x18004);
    }
    vmfunc_reserved: "ctl.vmfunc.reserved", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::ENABLE_VMFUNC as u64);
        e.set(VM_FUNCTION_CONTROLS, 2);
    }
    vmfunc_eptp_switching_ept: "ctl.vmfunc.eptp_switching_ept", prot, |e| {
        e.clear(SECONDARY_PROC_CONTROLS, proc2::ENABLE_EPT as u64);
        e.or(SECONDARY_PROC_CONTROLS, proc2::ENABLE_VMFUNC as u64);
        e.set(VM_FUNCTION_CONTROLS, 1);
        e.set(EPTP_LIST_ADDR, 0x19000);
    }
    vmfunc_eptp_list: "ctl.vmfunc.eptp_list", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::ENABLE_VMFUNC as u64);
        e.set(VM_FUNCTION_CONTROLS, 1);
        e.set(EPTP_LIST_ADDR, 0x19800);
    }
    shadowing_bitmaps: "ctl.vmcs_shadowing.bitmaps", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::VMCS_SHADOWING as u64);
        e.set(VMREAD_BITMAP, 0x1a000);
        e.set(VMWRITE_BITMAP, 0x1b001);
    }
    ve_address: "ctl.ept_violation_ve.address", real, |e| {
        e.or(SECONDARY_PROC_CONTROLS, proc2::EPT_VIOLATION_VE as u64);
        e.set(VE_INFO_ADDR, 0x1c008);
    }
    // SDM Vol. 3C §27.2.1.2 "VM-Exit Control Fields"
    exit_reserved: "ctl.exit.reserved", real, |e| { e.clear(EXIT_CONTROLS, 1) }
    exit_save_timer: "ctl.exit.save_preemption_timer", real, |e| {
        e.or(EXIT_CONTROLS, exit::SAVE_PREEMPTION_TIMER as u64);
        e.clear(PIN_BASED_CONTROLS, pin::PREEMPTION_TIMER as u64);
    }
    exit_msr_store: "ctl.exit.msr_store_area", real, |e| {
        e.set(EXIT_MSR_STORE_COUNT, 1);
        e.set(EXIT_MSR_STORE_ADDR, 0x1d008);
    }
    exit_msr_load: "ctl.exit.msr_load_area", real, |e| {
        e.set(EXIT_MSR_LOAD_COUNT, 2);
        e.set(EXIT_MSR_LOAD_ADDR, (1 << 40) - 16);
    }
    // SDM Vol. 3C §27.2.1.3 "VM-Entry Control Fields"
    entry_reserved: "ctl.entry.reserved", real, |e| { e.clear(ENTRY_CONTROLS, 1) }
    event_type: "ctl.event.type", real, |e| { e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0100) }
    event_type_mtf: "ctl.event.type", real, |e| {
        e.caps.processor_based_ctls &= !((proc1::MONITOR_TRAP_FLAG as u64) << 32);
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0700);
    }
    event_nmi_vector: "ctl.event.nmi_vector", real, |e| { e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0203) }
    event_exception_vector: "ctl.event.exception_vector", real, |e| { e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0320) }
    event_other_vector: "ctl.event.other_vector", real, |e| { e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0701) }
    event_error_code_flag_real: "ctl.event.deliver_error_code", real, |e| {
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0b0d)
    }
    event_error_code_flag_missing: "ctl.event.deliver_error_code", prot, |e| {
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_030e)
    }
    event_reserved: "ctl.event.reserved", real, |e| { e.set(ENTRY_INTERRUPTION_INFO, 0x8000_1306) }
    event_error_code: "ctl.event.error_code", prot, |e| {
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0b0d);
        e.set(ENTRY_EXCEPTION_ERROR_CODE, 0x1_0000);
    }
    event_instruction_length: "ctl.event.instruction_length", real, |e| {
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0403);
        e.set(ENTRY_INSTRUCTION_LENGTH, 16);
    }
    event_instruction_length_zero: "ctl.event.instruction_length", real, |e| {
        e.caps.misc &= !(1 << 30);
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0603);
        e.set(ENTRY_INSTRUCTION_LENGTH, 0);
    }
    entry_msr_load: "ctl.entry.msr_load_area", real, |e| {
        e.set(ENTRY_MSR_LOAD_COUNT, 1);
        e.set(ENTRY_MSR_LOAD_ADDR, 0x1d004);
    }
    entry_smm: "ctl.entry.smm", real, |e| { e.or(ENTRY_CONTROLS, entry::ENTRY_TO_SMM as u64) }
    entry_dual_monitor: "ctl.entry.deactivate_dual_monitor", real, |e| {
        e.or(ENTRY_CONTROLS, entry::DEACTIVATE_DUAL_MONITOR as u64)
    }
    // SDM Vol. 3C §27.2.2 "Checks on Host Control Registers, MSRs, and SSP"
    host_cr0: "host.cr0.fixed", real, |e| { e.clear(HOST_CR0, 1 << 5) }
    host_cr4: "host.cr4.fixed", real, |e| { e.clear(HOST_CR4, 0x2000) }
    host_cr3: "host.cr3.width", real, |e| { e.set(HOST_CR3, 1 << 40) }
    host_sysenter: "host.sysenter.canonical", real, |e| { e.set(HOST_IA32_SYSENTER_EIP, NONCANONICAL) }
    host_perf: "host.perf_global_ctrl.reserved", real, |e| {
        e.or(EXIT_CONTROLS, exit::LOAD_PERF_GLOBAL_CTRL as u64);
        e.set(HOST_IA32_PERF_GLOBAL_CTRL, 0x10);
    }
    host_pat: "host.pat.memory_types", real, |e| { e.set(HOST_IA32_PAT, 0x0007_0406_0007_0402) }
    host_efer_reserved: "host.efer.reserved", real, |e| { e.or(HOST_IA32_EFER, 2) }
    host_efer_lma: "host.efer.lma_lme", real, |e| { e.clear(HOST_IA32_EFER, 0x400) }
    // SDM Vol. 3C §27.2.3 "Checks on Host Segment and Descriptor-Table Registers"
    host_rpl_ti: "host.selector.rpl_ti", real, |e| { e.set(HOST_DS_SELECTOR, 0x13) }
    host_tr_ti: "host.selector.rpl_ti", real, |e| { e.set(HOST_TR_SELECTOR, 0x1c) }
    host_cs_null: "host.cs.null", real, |e| { e.set(HOST_CS_SELECTOR, 0) }
    host_tr_null: "host.tr.null", real, |e| { e.set(HOST_TR_SELECTOR, 0) }
    host_ss_null: "host.ss.null", real, |e| {
        e.cpu.ia32e_mode = false;
        e.clear(EXIT_CONTROLS, exit::HOST_ADDRESS_SPACE_SIZE as u64);
        e.set(HOST_IA32_EFER, 0);
        e.set(HOST_SS_SELECTOR, 0);
    }
    host_base: "host.base.canonical", real, |e| { e.set(HOST_GS_BASE, NONCANONICAL) }
    // SDM Vol. 3C §27.2.4 "Checks Related to Address-Space Size"
    host_size: "host.address_space.size", real, |e| {
        e.clear(EXIT_CONTROLS, (exit::HOST_ADDRESS_SPACE_SIZE | exit::LOAD_EFER) as u64)
    }
    host_size_outside_ia32e: "host.address_space.size", real, |e| { e.cpu.ia32e_mode = false }
    host_pae: "host.address_space.pae", real, |e| { e.clear(HOST_CR4, 0x20) }
    host_rip: "host.address_space.rip", real, |e| { e.set(HOST_RIP, NONCANONICAL) }
    host_legacy: "host.address_space.legacy", real, |e| {
        e.cpu.ia32e_mode = false;
        e.clear(EXIT_CONTROLS, (exit::HOST_ADDRESS_SPACE_SIZE | exit::LOAD_EFER) as u64);
        e.or(HOST_CR4, 1 << 17);
    }
    // SDM Vol. 3C §27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and MSRs"
    guest_cr0: "guest.cr0.fixed", prot, |e| { e.clear(GUEST_CR0, 0x20) }
    guest_cr0_pe_without_ug: "guest.cr0.fixed", prot, |e| {
        e.clear(GUEST_CR0, 0x8000_0001);
        e.set(GUEST_SS_AR, 0xc093);
    }
    guest_pg_pe: "guest.cr0.pg_without_pe", real, |e| { e.or(GUEST_CR0, 1 << 31) }
    guest_cr4: "guest.cr4.fixed", real, |e| { e.clear(GUEST_CR4, 0x2000) }
    guest_cet_wp: "guest.cr4.cet_without_wp", real, |e| { e.or(GUEST_CR4, 1 << 23) }
    guest_debugctl: "guest.debugctl.reserved", real, |e| {
        e.or(ENTRY_CONTROLS, entry::LOAD_DEBUG_CONTROLS as u64);
        e.set(GUEST_IA32_DEBUGCTL, 1 << 2);
    }
    guest_ia32e_paging: "guest.ia32e.paging", long, |e| { e.clear(GUEST_CR4, 0x20) }
    guest_pcide: "guest.cr4.pcide_outside_ia32e", prot, |e| { e.or(GUEST_CR4, 1 << 17) }
    guest_cr3: "guest.cr3.width", prot, |e| { e.set(GUEST_CR3, 1 << 40) }
    guest_dr7: "guest.dr7.high", real, |e| {
        e.or(ENTRY_CONTROLS, entry::LOAD_DEBUG_CONTROLS as u64);
        e.set(GUEST_DR7, (1 << 32) | 0x400);
    }
    guest_sysenter: "guest.sysenter.canonical", real, |e| { e.set(GUEST_IA32_SYSENTER_ESP, NONCANONICAL) }
    guest_perf: "guest.perf_global_ctrl.reserved", real, |e| {
        e.or(ENTRY_CONTROLS, entry::LOAD_PERF_GLOBAL_CTRL as u64);
        e.set(GUEST_IA32_PERF_GLOBAL_CTRL, 0x10);
    }
    guest_pat: "guest.pat.memory_types", real, |e| { e.set(GUEST_IA32_PAT, 0x0007_0406_0007_0403) }
    guest_efer_reserved: "guest.efer.reserved", real, |e| { e.or(GUEST_IA32_EFER, 2) }
    guest_efer_lma: "guest.efer.lma", real, |e| { e.or(GUEST_IA32_EFER, 0x400) }
    guest_efer_lma_long: "guest.efer.lma", long, |e| { e.clear(GUEST_IA32_EFER, 0x400) }
    guest_efer_lme: "guest.efer.lme", prot, |e| { e.or(GUEST_IA32_EFER, 0x100) }
    guest_bndcfgs: "guest.bndcfgs", real, |e| {
        e.or(ENTRY_CONTROLS, entry::LOAD_BNDCFGS as u64);
        e.set(GUEST_IA32_BNDCFGS, 4);
    }
    // SDM Vol. 3C §27.3.1.2 "Checks on Guest Segment Registers"
    tr_ti: "guest.tr.ti", real, |e| { e.set(GUEST_TR_SELECTOR, 4) }
    ldtr_ti: "guest.ldtr.ti", real, |e| {
        e.set(GUEST_LDTR_AR, 0x82);
        e.set(GUEST_LDTR_SELECTOR, 4);
    }
    ss_rpl: "guest.ss.rpl", prot, |e| { e.set(GUEST_CS_SELECTOR, 0xb) }
    v86_base: "guest.v8086.base", v86, |e| { e.set(GUEST_ES_BASE, 0x10010) }
    base_canonical: "guest.base.canonical", real, |e| { e.set(GUEST_FS_BASE, NONCANONICAL) }
    ldtr_base_canonical: "guest.base.canonical", real, |e| {
        e.set(GUEST_LDTR_AR, 0x82);
        e.set(GUEST_LDTR_BASE, NONCANONICAL);
    }
    base_high: "guest.base.high", real, |e| { e.set(GUEST_DS_BASE, 1 << 32) }
    v86_limit: "guest.v8086.limit", v86, |e| { e.set(GUEST_DS_LIMIT, 0xf_ffff) }
    v86_ar: "guest.v8086.access_rights", v86, |e| { e.set(GUEST_DS_AR, 0xf2) }
    cs_type: "guest.cs.type", prot, |e| { e.set(GUEST_CS_AR, 0xc093) }
    ss_type: "guest.ss.type", prot, |e| { e.set(GUEST_SS_AR, 0xc091) }
    data_type: "guest.data.type", prot, |e| { e.set(GUEST_DS_AR, 0xc092) }
    data_type_code: "guest.data.type", prot, |e| { e.set(GUEST_GS_AR, 0xc099) }
    segment_s: "guest.segment.s", prot, |e| { e.set(GUEST_DS_AR, 0xc083) }
    cs_dpl: "guest.cs.dpl", prot, |e| { e.set(GUEST_CS_AR, 0xc0bb) }
    cs_dpl_conforming: "guest.cs.dpl", prot, |e| { e.set(GUEST_CS_AR, 0xc0bf) }
    ss_dpl_rpl: "guest.ss.dpl_rpl", prot, |e| {
        e.set(GUEST_SS_AR, 0xc0b3);
        e.set(GUEST_CS_AR, 0xc0bb);
    }
    ss_dpl_zero: "guest.ss.dpl_zero", real, |e| {
        e.set(GUEST_SS_AR, 0xb3);
        e.set(GUEST_CS_AR, 0xbb);
    }
    data_dpl: "guest.data.dpl", prot, |e| { e.set(GUEST_DS_SELECTOR, 0x13) }
    segment_p: "guest.segment.p", prot, |e| { e.set(GUEST_DS_AR, 0xc013) }
    segment_reserved: "guest.segment.reserved", prot, |e| { e.set(GUEST_DS_AR, 0xc193) }
    segment_reserved_high: "guest.segment.reserved", prot, |e| { e.set(GUEST_CS_AR, 0x2_c09b) }
    cs_db_l: "guest.cs.db_with_l", long, |e| { e.set(GUEST_CS_AR, 0xe09b) }
    segment_g: "guest.segment.granularity", prot, |e| { e.set(GUEST_DS_LIMIT, 0xf_fff0) }
    segment_g_big: "guest.segment.granularity", real, |e| { e.set(GUEST_ES_LIMIT, 0x10_ffff) }
    tr_type: "guest.tr.type", prot, |e| { e.set(GUEST_TR_AR, 0x89) }
    tr_type_long: "guest.tr.type", long, |e| { e.set(GUEST_TR_AR, 0x83) }
    tr_s: "guest.tr.s", prot, |e| { e.set(GUEST_TR_AR, 0x9b) }
    tr_p: "guest.tr.p", prot, |e| { e.set(GUEST_TR_AR, 0x0b) }
    tr_reserved: "guest.tr.reserved", prot, |e| { e.set(GUEST_TR_AR, 0x18b) }
    tr_g: "guest.tr.granularity", prot, |e| { e.set(GUEST_TR_AR, 0x808b) }
    tr_unusable: "guest.tr.unusable", prot, |e| { e.set(GUEST_TR_AR, 0x1_008b) }
    ldtr_type: "guest.ldtr.type", prot, |e| { e.set(GUEST_LDTR_AR, 0x83) }
    ldtr_s: "guest.ldtr.s", prot, |e| { e.set(GUEST_LDTR_AR, 0x92) }
    ldtr_p: "guest.ldtr.p", prot, |e| { e.set(GUEST_LDTR_AR, 0x02) }
    ldtr_reserved: "guest.ldtr.reserved", prot, |e| { e.set(GUEST_LDTR_AR, 0x182) }
    ldtr_g: "guest.ldtr.granularity", prot, |e| { e.set(GUEST_LDTR_AR, 0x8082) }
    // SDM Vol. 3C §27.3.1.3 "Checks on Guest Descriptor-Table Registers"
    dt_canonical: "guest.gdtr_idtr.canonical", prot, |e| { e.set(GUEST_GDTR_BASE, NONCANONICAL) }
    dt_limit: "guest.gdtr_idtr.limit", prot, |e| { e.set(GUEST_IDTR_LIMIT, 0x1_0000) }
    // SDM Vol. 3C §27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP"
    rip_high: "guest.rip.high", prot, |e| { e.set(GUEST_RIP, 1 << 32) }
    rip_high_compatibility: "guest.rip.high", long, |e| {
        e.set(GUEST_CS_AR, 0xc09b);
        e.set(GUEST_RIP, 1 << 32);
    }
    rip_canonical: "guest.rip.canonical", long, |e| { e.set(GUEST_RIP, NONCANONICAL) }
    rflags_bit1: "guest.rflags.reserved", real, |e| { e.set(GUEST_RFLAGS, 0) }
    rflags_reserved: "guest.rflags.reserved", real, |e| { e.set(GUEST_RFLAGS, 2 | (1 << 15)) }
    rflags_vm: "guest.rflags.vm", long, |e| {
        v86_segments(e);
        e.or(GUEST_RFLAGS, 1 << 17);
    }
    rflags_if: "guest.rflags.if_for_external_interrupt", real, |e| { e.set(ENTRY_INTERRUPTION_INFO, EXT_INT) }
    // SDM Vol. 3C §27.3.1.5 "Checks on Guest Non-Register State"
    activity_state: "guest.activity.state", real, |e| { e.set(GUEST_ACTIVITY_STATE, 4) }
    activity_unsupported: "guest.activity.state", real, |e| {
        e.caps.misc &= !(1 << 8);
        e.set(GUEST_ACTIVITY_STATE, 3);
    }
    activity_hlt_dpl: "guest.activity.hlt_ss_dpl", prot, |e| {
        dpl3_stack(e);
        e.set(GUEST_ACTIVITY_STATE, 1);
    }
    activity_blocking: "guest.activity.blocking", real, |e| {
        e.set(GUEST_INTERRUPTIBILITY, 2);
        e.set(GUEST_ACTIVITY_STATE, 2);
    }
    activity_event: "guest.activity.event", prot, |e| {
        e.set(GUEST_ACTIVITY_STATE, 1);
        e.set(ENTRY_INTERRUPTION_INFO, 0x8000_0b0d);
    }
    activity_event_sipi: "guest.activity.event", prot, |e| {
        e.set(GUEST_ACTIVITY_STATE, 3);
        e.set(ENTRY_INTERRUPTION_INFO, NMI);
    }
    intr_reserved: "guest.interruptibility.reserved", real, |e| { e.set(GUEST_INTERRUPTIBILITY, 0x20) }
    intr_enclave_without_sgx: "guest.interruptibility.reserved", real, |e| { e.set(GUEST_INTERRUPTIBILITY, 0x10) }
    intr_sti_mov_ss: "guest.interruptibility.sti_and_mov_ss", real, |e| {
        e.set(GUEST_RFLAGS, 0x202);
        e.set(GUEST_INTERRUPTIBILITY, 3);
    }
    intr_sti_if: "guest.interruptibility.sti_without_if", real, |e| { e.set(GUEST_INTERRUPTIBILITY, 1) }
    intr_external: "guest.interruptibility.external_interrupt", real, |e| {
        e.set(GUEST_RFLAGS, 0x202);
        e.set(GUEST_INTERRUPTIBILITY, 2);
        e.set(ENTRY_INTERRUPTION_INFO, EXT_INT);
    }
    intr_nmi_mov_ss: "guest.interruptibility.nmi_mov_ss", real, |e| {
        e.set(GUEST_INTERRUPTIBILITY, 2);
        e.set(ENTRY_INTERRUPTION_INFO, NMI);
    }
    intr_nmi_sti: "guest.interruptibility.nmi_sti", real, |e| {
        e.set(GUEST_RFLAGS, 0x202);
        e.set(GUEST_INTERRUPTIBILITY, 1);
        e.set(ENTRY_INTERRUPTION_INFO, NMI);
    }
    intr_smi: "guest.interruptibility.smi", real, |e| { e.set(GUEST_INTERRUPTIBILITY, 4) }
    intr_virtual_nmi: "guest.interruptibility.virtual_nmi", real, |e| {
        e.or(PIN_BASED_CONTROLS, pin::VIRTUAL_NMIS as u64);
        e.set(GUEST_INTERRUPTIBILITY, 8);
        e.set(ENTRY_INTERRUPTION_INFO, NMI);
    }
    intr_enclave: "guest.interruptibility.enclave", real, |e| {
        e.cpu.sgx = true;
        e.set(GUEST_INTERRUPTIBILITY, 0x12);
    }
    pending_reserved: "guest.pending_debug.reserved", real, |e| { e.set(GUEST_PENDING_DBG_EXCEPTIONS, 0x10) }
    pending_rtm_unsupported: "guest.pending_debug.reserved", real, |e| {
        e.set(GUEST_PENDING_DBG_EXCEPTIONS, 1 << 16)
    }
    pending_bs_set: "guest.pending_debug.bs_set", real, |e| {
        e.set(GUEST_INTERRUPTIBILITY, 2);
        e.set(GUEST_RFLAGS, 0x102);
    }
    pending_bs_clear: "guest.pending_debug.bs_clear", real, |e| {
        e.set(GUEST_INTERRUPTIBILITY, 2);
        e.set(GUEST_PENDING_DBG_EXCEPTIONS, 1 << 14);
    }
    pending_bs_clear_btf: "guest.pending_debug.bs_clear", real, |e| {
        e.set(GUEST_ACTIVITY_STATE, 1);
        e.set(GUEST_RFLAGS, 0x102);
        e.set(GUEST_IA32_DEBUGCTL, 2);
        e.set(GUEST_PENDING_DBG_EXCEPTIONS, 1 << 14);
    }
    pending_rtm: "guest.pending_debug.rtm", real, |e| {
        e.cpu.rtm = true;
        e.set(GUEST_PENDING_DBG_EXCEPTIONS, (1 << 16) | 1);
    }
    link_address: "guest.link_pointer.address", real, |e| { e.set(VMCS_LINK_POINTER, 0x20001) }
    link_revision: "guest.link_pointer.revision", real, |e| {
        e.mem.insert(0x21000, 5);
        e.set(VMCS_LINK_POINTER, 0x21000);
    }
    link_shadow_bit: "guest.link_pointer.revision", real, |e| {
        e.mem.insert(0x21000, 4 | (1 << 31));
        e.set(VMCS_LINK_POINTER, 0x21000);
    }
    link_current: "guest.link_pointer.current_vmcs", real, |e| { e.set(VMCS_LINK_POINTER, 0x22000) }
    // SDM Vol. 3C §27.3.1.6 "Checks on Guest Page-Directory-Pointer-Table Entries"
    pdpte_fields: "guest.pdpte.reserved", prot, |e| {
        e.or(GUEST_CR4, 0x20);
        e.set(GUEST_PDPTE0, 0x3003);
    }
    pdpte_from_cr3: "guest.pdpte.reserved", prot, |e| {
        e.clear(SECONDARY_PROC_CONTROLS, proc2::ENABLE_EPT as u64);
        e.or(GUEST_CR4, 0x20);
        e.set(GUEST_CR3, 0x3020);
        e.mem.insert(0x3020, 0x4001);
        e.mem.insert(0x3028, 0);
        e.mem.insert(0x3030, 0x4001 | (1 << 50));
        e.mem.insert(0x3038, 0);
    }
    // SDM Vol. 3C §27.4 "Loading MSRs"
    msr_fs_base: "msr_load.fs_gs_base", real, |e| { msr_area(e, &[(0xc000_0100, 0)]) }
    msr_x2apic: "msr_load.x2apic", real, |e| { msr_area(e, &[(0x174, 0), (0x808, 0)]) }
    msr_smm: "msr_load.smm_only", real, |e| { msr_area(e, &[(0x9b, 0)]) }
    msr_reserved: "msr_load.reserved", real, |e| { msr_area(e, &[(0x1_0000_0174, 0)]) }
    msr_gp: "msr_load.wrmsr_faults", real, |e| { msr_area(e, &[(0x1234, 0)]) }
    msr_unreadable: "msr_load.unreadable", real, |e| {
        e.set(ENTRY_MSR_LOAD_ADDR, 0x31000);
        e.set(ENTRY_MSR_LOAD_COUNT, 1);
    }
}

#[test]
fn every_rule_has_a_case_and_ids_are_unique() {
    let rules: Vec<&Rule> = all_rules().collect();
    for r in &rules {
        assert!(CASE_IDS.contains(&r.id), "no test makes {} fire", r.id);
        assert_eq!(rules.iter().filter(|o| o.id == r.id).count(), 1, "{} twice", r.id);
        assert!(!r.text.is_empty() && r.text.len() < 200, "{}: one line", r.id);
    }
}

#[test]
fn the_bases_are_valid_and_enter() {
    for (name, base) in [("real", real as fn() -> Env), ("prot", prot), ("long", long), ("v86", v86)] {
        let e = base();
        let v = e.run();
        assert!(v.is_empty(), "{name}: {:?}", ids(&v));
        assert_eq!(Verdict::from_violations(&v), Verdict::Enters);
    }
}

#[test]
fn msr_loading_names_the_first_bad_entry_and_only_after_the_guest_checks() {
    let mut e = real();
    msr_area(&mut e, &[(0x174, 0), (0x175, 0), (0x808, 0), (0xc000_0100, 0)]);
    let v = e.run();
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].rule.id, v[0].entry), ("msr_load.x2apic", 3));
    assert_eq!(Verdict::from_violations(&v), Verdict::MsrLoading { entry: 3 });
    e.set(GUEST_RFLAGS, 0);
    assert_eq!(ids(&e.run()), ["guest.rflags.reserved"], "a guest failure comes first");
}

#[test]
fn verdicts() {
    let mut e = real();
    e.set(CR3_TARGET_COUNT, 9);
    e.set(HOST_CS_SELECTOR, 0);
    e.set(GUEST_RFLAGS, 0);
    let v = Verdict::from_violations(&e.run());
    assert_eq!(v, Verdict::VmFailValid { errors: (1 << 7) | (1 << 8) });
    assert!(v.agrees(&Outcome::VmFailValid { error: 7 }) && v.agrees(&Outcome::VmFailValid { error: 8 }));
    assert!(!v.agrees(&Outcome::VmFailValid { error: 26 }));
    assert!(!v.agrees(&Outcome::EntryFailure { reason: 33, qualification: 0 }));
    assert_eq!(v.to_string(), "VMfailValid error 7 or 8");

    let mut e = real();
    e.set(GUEST_RFLAGS, 0);
    e.set(VMCS_LINK_POINTER, 0x20001);
    let v = Verdict::from_violations(&e.run());
    assert_eq!(v, Verdict::InvalidGuestState { qualifications: 1 | (1 << 4) });
    assert!(v.agrees(&Outcome::EntryFailure { reason: 33, qualification: 4 }));
    assert!(v.agrees(&Outcome::EntryFailure { reason: 33, qualification: 0 }));
    assert!(!v.agrees(&Outcome::EntryFailure { reason: 33, qualification: 2 }));
    assert!(!v.agrees(&Outcome::Entered { reason: 52 }));
    assert_eq!(v.to_string(), "exit 33 qualification 0 or 4");

    let enters = Verdict::Enters;
    assert!(enters.agrees(&Outcome::Entered { reason: 52 }));
    assert!(!enters.agrees(&Outcome::EntryFailure { reason: 34, qualification: 1 }));
    assert!(Verdict::MsrLoading { entry: 2 }.agrees(&Outcome::EntryFailure { reason: 34, qualification: 2 }));
    assert!(!Verdict::MsrLoading { entry: 2 }.agrees(&Outcome::EntryFailure { reason: 34, qualification: 1 }));
}

#[test]
fn violation_lines_name_the_rule_and_the_section() {
    let mut e = real();
    e.set(GUEST_RFLAGS, 0);
    let v = e.run();
    assert_eq!(
        v[0].to_string(),
        "entry check guest.rflags.reserved: Guest RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1 \
         (SDM Vol. 3C §27.3.1.4 \"Checks on Guest RIP, RFLAGS, and SSP\")"
    );
    let mut e = real();
    e.set(HOST_DS_SELECTOR, 3);
    assert!(e.run()[0]
        .to_string()
        .contains(" [DS] (SDM Vol. 3C §27.2.3 \"Checks on Host Segment and Descriptor-Table Registers\")"));
}

#[test]
fn facts_from_cpuid() {
    // SYSCALL, NX, Intel 64.
    assert_eq!(CpuFacts::efer_valid_from_cpuid((1 << 11) | (1 << 20) | (1 << 29)), 0xd01);
    assert_eq!(CpuFacts::efer_valid_from_cpuid(0), 0);
    // Version 2, 4 general counters, 3 fixed.
    assert_eq!(CpuFacts::perf_global_ctrl_valid_from_cpuid(0x0704_0402, 3), 0xf | (7 << 32));
    assert_eq!(CpuFacts::perf_global_ctrl_valid_from_cpuid(0x0704_0401, 3), 0, "version 1 has no global control");
}

#[test]
fn canonical_addresses() {
    assert!(canonical(0x0000_7fff_ffff_ffff, 48) && canonical(0xffff_8000_0000_0000, 48));
    assert!(!canonical(NONCANONICAL, 48) && canonical(NONCANONICAL, 57));
}
