//! The proof guest's VMCS: the controls it asks for, from the PCB's
//! capability fields, and its reset-like start state.

use super::vmcs::*;
use crate::virt::layout::*;
use hvlogic::controls::{self, entry, exit, pin, proc1, proc2, Control};
use hvlogic::fixed::{cr0, Fixed, CR0_KEPT_BY_VM_EXIT};
use hvlogic::guest_plan::GuestMode;
use hvlogic::vmx_global::VmxGlobalData;
use log::{debug, error};
use x86::vmx::vmcs::{control as ctl, guest};

/// What the guest needs, adjusted to what the CPU allows (TRUE MSRs when
/// TrueFlag). A wanted control the CPU cannot give is reported by name.
pub fn choose_controls(d: &VmxGlobalData, mode: GuestMode, vpid: bool) -> Result<Controls, VmcsError> {
    let timer = controls::can_set(d.pin_based_ctls, pin::PREEMPTION_TIMER);
    let optional = |cap: u64, bits: u32| if controls::can_set(cap, bits) { bits } else { 0 };

    let mut wanted_proc2 = 0;
    if mode.uses_ept() {
        wanted_proc2 |= proc2::ENABLE_EPT;
    }
    if mode == GuestMode::RealFromReset {
        wanted_proc2 |= proc2::UNRESTRICTED_GUEST;
    }
    if vpid {
        wanted_proc2 |= proc2::ENABLE_VPID;
    }
    // MWAIT could put the CPU in a C-state deeper than C2, where the
    // VMX-preemption timer stops (SDM Vol. 3C §26.5.1 "VMX-Preemption Timer"):
    // it exits, and MONITOR with it.
    let mut wanted_proc1 = proc1::HLT_EXITING
        | proc1::MWAIT_EXITING
        | proc1::MONITOR_EXITING
        | proc1::USE_IO_BITMAPS
        | proc1::USE_MSR_BITMAPS;
    if wanted_proc2 != 0 {
        wanted_proc1 |= proc1::ACTIVATE_SECONDARY;
    }
    if !mode.uses_ept() {
        // The guest's page tables are the hypervisor's: it may not switch them.
        wanted_proc1 |= proc1::CR3_LOAD_EXITING;
    }
    // 64-bit code's MOV to/from CR8 would reach the host's local APIC (its
    // task priority; SDM Vol. 3A §11.8.6.1 "Interaction of Task Priorities
    // between CR8 and APIC"): both exit, and the handler keeps
    // the guest's own CR8 (guest=fuzz, seed=1 run 646 on skylake, found a
    // guest changing the host's). A CPU without them runs no 64-bit guest.
    wanted_proc1 |= optional(d.processor_based_ctls, proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING);
    let wanted = [
        (
            Control::PinBased,
            pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING | if timer { pin::PREEMPTION_TIMER } else { 0 },
            d.pin_based_ctls,
        ),
        (Control::PrimaryProcBased, wanted_proc1, d.processor_based_ctls),
        (Control::SecondaryProcBased, wanted_proc2, d.processor_based_ctls2),
        (
            Control::Exit,
            // DR7 and IA32_DEBUGCTL are the guest's own: loaded on entry and
            // saved on exit (a VM exit sets DR7 to 400H, SDM Vol. 3C §28.5.1
            // "Loading Host Control Registers, Debug Registers, MSRs").
            exit::HOST_ADDRESS_SPACE_SIZE
                | exit::ACK_INTERRUPT_ON_EXIT
                | optional(d.exit_ctls, exit::SAVE_DEBUG_CONTROLS)
                | optional(d.exit_ctls, exit::SAVE_EFER | exit::LOAD_EFER)
                | optional(d.exit_ctls, exit::SAVE_PAT | exit::LOAD_PAT)
                | if timer { optional(d.exit_ctls, exit::SAVE_PREEMPTION_TIMER) } else { 0 },
            d.exit_ctls,
        ),
        (
            Control::Entry,
            optional(d.entry_ctls, entry::LOAD_DEBUG_CONTROLS)
                | optional(d.entry_ctls, entry::LOAD_EFER)
                | optional(d.entry_ctls, entry::LOAD_PAT),
            d.entry_ctls,
        ),
    ];
    let mut values = [0u32; 5];
    let mut missing_any = false;
    for (i, (control, want, cap)) in wanted.into_iter().enumerate() {
        let adj = controls::adjust(want, cap);
        if adj.missing != 0 {
            missing_any = true;
            for name in controls::names(control, adj.missing) {
                error!("guest: this CPU cannot give the {} control \"{name}\" (allowed-1 clear)", control.label());
            }
        }
        if adj.forced != 0 {
            // Reserved bits that must be 1 are the usual "default1" class; name only real controls.
            for name in controls::names(control, adj.forced).filter(|n| *n != "reserved bit") {
                debug!("guest: {} control \"{name}\" is forced on by the CPU (allowed-0 set)", control.label());
            }
        }
        values[i] = adj.value;
    }
    if missing_any {
        return Err(VmcsError::MissingControl);
    }
    let [pin, proc1, proc2, exit, entry] = values;
    Ok(Controls { pin, proc1, proc2, exit, entry })
}

/// Where the guest starts, given its mode.
pub struct GuestStart {
    pub cr3: u64,
    /// Guest address of guest_pm_entry and of the guest's GDT.
    pub pm_entry: u64,
    pub gdt: u64,
}

/// The guest's state at launch: reset-like real mode at F000:FFF0 with
/// unrestricted guest, else 32-bit protected mode with paging at guest_pm_entry.
/// CR4 is fully host-owned (every bit in the guest/host mask); CR0 bits the VMX
/// fixed-bit MSRs constrain are host-owned, PE and PG excepted under
/// unrestricted guest, and so are CD and NW, which a VM exit leaves as the
/// guest had them.
pub fn write_guest_state(
    d: &VmxGlobalData,
    c: &Controls,
    mode: GuestMode,
    start: &GuestStart,
) -> Result<(), VmcsError> {
    let real = mode == GuestMode::RealFromReset;
    const ET: u64 = 1 << 4;
    // Unrestricted guest frees CR0.PE and CR0.PG from the fixed bits (SDM Vol.
    // 3C §27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and
    // MSRs").
    let free = if real { cr0::PE | cr0::PG } else { 0 };
    let cr0_fixed = Fixed { fixed0: d.cr0_fixed0 & !free, fixed1: d.cr0_fixed1 };
    let cr0_value = cr0_fixed.apply(if real { ET } else { ET | cr0::PE | cr0::PG }).value;
    // The guest sees the reset value of what the host owns (NE clear) in real
    // mode, and the truth in protected mode.
    write(guest::CR0, cr0_value)?;
    // CD and NW are the host's too: a VM exit would not reload them (CR0_KEPT_BY_VM_EXIT).
    write(ctl::CR0_GUEST_HOST_MASK, (cr0_fixed.constrained() | CR0_KEPT_BY_VM_EXIT) & 0xffff_ffff)?;
    write(ctl::CR0_READ_SHADOW, if real { ET } else { cr0_value })?;
    write(guest::CR4, Fixed { fixed0: d.cr4_fixed0, fixed1: d.cr4_fixed1 }.apply(0).value)?;
    write(ctl::CR4_GUEST_HOST_MASK, 0xffff_ffff)?;
    write(ctl::CR4_READ_SHADOW, 0)?;
    write(guest::CR3, start.cr3)?;
    write(guest::DR7, 0x400)?;
    write(guest::RFLAGS, 0x2)?;

    // SDM Vol. 3A Table 10-1 "IA-32 and Intel 64 Processor States Following
    // Power-up, Reset, or INIT": after reset CS = F000 with base FFFF0000,
    // limit FFFF, EIP = FFF0; the data segments are 0 with limit FFFF.
    let (cs, cs_base, data, limit, code_ar, data_ar, rip, rsp, gdt, idt_limit) = if real {
        (0xf000, 0xffff_0000, 0, 0xffff, AR_CODE_16, AR_DATA_16, 0xfff0, 0, (0, 0xffff), 0xffff)
    } else {
        (GUEST_CS, 0, GUEST_DS, 0xffff_ffff, AR_CODE_32, AR_DATA_32, start.pm_entry, STACK_TOP, (start.gdt, 23), 0)
    };
    write_segment(Segment::Cs, cs, cs_base, limit, code_ar)?;
    for s in DATA_SEGMENTS {
        write_segment(s, data, 0, limit, data_ar)?;
    }
    write(guest::GDTR_BASE, gdt.0)?;
    write(guest::GDTR_LIMIT, gdt.1)?;
    write(guest::IDTR_BASE, 0)?;
    write(guest::IDTR_LIMIT, idt_limit)?;
    write(guest::RIP, rip)?;
    write(guest::RSP, rsp)?;
    write_segment(Segment::Ldtr, 0, 0, 0, AR_UNUSABLE)?;
    write_segment(Segment::Tr, 0, 0, 0x67, AR_TSS_BUSY_32)?;

    write_fresh_state()?;
    if c.entry & entry::LOAD_EFER != 0 {
        write(guest::IA32_EFER_FULL, 0)?;
    }
    if c.entry & entry::LOAD_PAT != 0 {
        write(guest::IA32_PAT_FULL, PAT_RESET)?;
    }
    Ok(())
}

/// The non-register state and MSRs of a guest that starts afresh: active,
/// nothing blocked or pending, no VMCS link (SDM Vol. 3C §25.4.2 "Guest
/// Non-Register State"), IA32_DEBUGCTL and the SYSENTER MSRs 0.
pub(super) fn write_fresh_state() -> Result<(), VmcsError> {
    write(guest::INTERRUPTIBILITY_STATE, 0)?;
    write(guest::ACTIVITY_STATE, 0)?;
    write(guest::PENDING_DBG_EXCEPTIONS, 0)?;
    write(guest::LINK_PTR_FULL, u64::MAX)?;
    write(guest::IA32_DEBUGCTL_FULL, 0)?;
    write(guest::IA32_SYSENTER_CS, 0)?;
    write(guest::IA32_SYSENTER_ESP, 0)?;
    write(guest::IA32_SYSENTER_EIP, 0)
}
