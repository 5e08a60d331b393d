//! SDM Vol. 3C §27.3.1.3 "Checks on Guest Descriptor-Table Registers",
//! §27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP", §27.3.1.5 "Checks on
//! Guest Non-Register State" and §27.3.1.6 "Checks on Guest
//! Page-Directory-Pointer-Table Entries". A failure is a VM exit with reason
//! 33; its exit qualification is 2 for the PDPTEs, 3 for an NMI injected
//! under blocking by STI and 4 for the VMCS link pointer (SDM Vol. 3C §27.8
//! "VM-Entry Failures During or After Loading Guest State").

use super::controls::misc;
use super::fields::enc;
use super::guest_regs::{CR0_PE, CR0_PG};
use super::guest_segments::RFLAGS_VM;
use super::host::CR4_PAE;
use super::{rule_def, Ctx, Event, Out, Rule};
use super::{
    SEC_GUEST_DESCRIPTOR_TABLES as DT, SEC_GUEST_NON_REGISTER as NR, SEC_GUEST_PDPTES as PDPTE,
    SEC_GUEST_RIP_RFLAGS as RIP,
};
use crate::controls::{pin, proc2};

rule_def!(DT_CANONICAL, "guest.gdtr_idtr.canonical", DT, Guest, "The guest GDTR and IDTR bases must be canonical");
rule_def!(DT_LIMIT, "guest.gdtr_idtr.limit", DT, Guest, "Bits 31:16 of the guest GDTR and IDTR limits must be 0");
rule_def!(
    RIP_HIGH,
    "guest.rip.high",
    RIP,
    Guest,
    "Guest RIP bits 63:32 must be 0 unless the guest is IA-32e mode with CS.L 1"
);
rule_def!(
    RIP_CANONICAL,
    "guest.rip.canonical",
    RIP,
    Guest,
    "For an IA-32e mode guest with CS.L 1, guest RIP must be canonical for the linear-address width"
);
rule_def!(
    RFLAGS_RESERVED,
    "guest.rflags.reserved",
    RIP,
    Guest,
    "Guest RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1"
);
rule_def!(
    RFLAGS_VM_MODE,
    "guest.rflags.vm",
    RIP,
    Guest,
    "Guest RFLAGS.VM must be 0 for an IA-32e mode guest or when guest CR0.PE is 0"
);
rule_def!(
    RFLAGS_IF_INJECT,
    "guest.rflags.if_for_external_interrupt",
    RIP,
    Guest,
    "Guest RFLAGS.IF must be 1 when an external interrupt is injected"
);
rule_def!(
    ACTIVITY_STATE,
    "guest.activity.state",
    NR,
    Guest,
    "The activity state must be 0-3 and one IA32_VMX_MISC[8:6] reports as supported"
);
rule_def!(
    ACTIVITY_HLT_DPL,
    "guest.activity.hlt_ss_dpl",
    NR,
    Guest,
    "The activity state must not be HLT if SS DPL is not 0"
);
rule_def!(
    ACTIVITY_BLOCKING,
    "guest.activity.blocking",
    NR,
    Guest,
    "The activity state must be active if the interruptibility state shows blocking by STI or by MOV SS"
);
rule_def!(ACTIVITY_EVENT, "guest.activity.event", NR, Guest,
    "An injected event must be one the activity state allows (HLT: external interrupt, NMI, #DB, #MC, MTF; shutdown: NMI, #MC; wait-for-SIPI: none)");
rule_def!(
    INTR_RESERVED,
    "guest.interruptibility.reserved",
    NR,
    Guest,
    "Interruptibility-state bits 31:5 must be 0 (and bit 4 without SGX)"
);
rule_def!(
    INTR_STI_MOV_SS,
    "guest.interruptibility.sti_and_mov_ss",
    NR,
    Guest,
    "The interruptibility state must not show blocking by both STI and MOV SS"
);
rule_def!(
    INTR_STI_IF,
    "guest.interruptibility.sti_without_if",
    NR,
    Guest,
    "Blocking by STI must be 0 if guest RFLAGS.IF is 0"
);
rule_def!(
    INTR_EXTERNAL,
    "guest.interruptibility.external_interrupt",
    NR,
    Guest,
    "Blocking by STI and by MOV SS must be 0 when an external interrupt is injected"
);
rule_def!(
    INTR_NMI_MOV_SS,
    "guest.interruptibility.nmi_mov_ss",
    NR,
    Guest,
    "Blocking by MOV SS must be 0 when an NMI is injected"
);
rule_def!(
    INTR_NMI_STI,
    "guest.interruptibility.nmi_sti",
    NR,
    GuestNmiSti,
    "Injecting an NMI while blocking by STI is shown fails VM entry (exit qualification 3)"
);
rule_def!(INTR_SMI, "guest.interruptibility.smi", NR, Guest, "Blocking by SMI (bit 2) must be 0 outside SMM");
rule_def!(
    INTR_VIRTUAL_NMI,
    "guest.interruptibility.virtual_nmi",
    NR,
    Guest,
    "Blocking by NMI (bit 3) must be 0 when \"virtual NMIs\" is 1 and an NMI is injected"
);
rule_def!(
    INTR_ENCLAVE,
    "guest.interruptibility.enclave",
    NR,
    Guest,
    "If enclave interruption (bit 4) is 1, blocking by MOV SS must be 0"
);
rule_def!(
    PENDING_RESERVED,
    "guest.pending_debug.reserved",
    NR,
    Guest,
    "Pending-debug-exceptions bits 11:4, 13, 15 and 63:17 must be 0 (and bit 16 without RTM)"
);
rule_def!(PENDING_BS_SET, "guest.pending_debug.bs_set", NR, Guest,
    "With blocking by STI or MOV SS or activity HLT: BS (bit 14) must be 1 if RFLAGS.TF is 1 and IA32_DEBUGCTL.BTF is 0");
rule_def!(
    PENDING_BS_CLEAR,
    "guest.pending_debug.bs_clear",
    NR,
    Guest,
    "With blocking by STI or MOV SS or activity HLT: BS (bit 14) must be 0 if RFLAGS.TF is 0 or IA32_DEBUGCTL.BTF is 1"
);
rule_def!(
    PENDING_RTM,
    "guest.pending_debug.rtm",
    NR,
    Guest,
    "If pending-debug bit 16 (RTM) is 1, bits 11:0 and 14 must be 0 and blocking by MOV SS must be 0"
);
rule_def!(
    LINK_ADDRESS,
    "guest.link_pointer.address",
    NR,
    GuestLinkPointer,
    "A VMCS link pointer other than FFFFFFFF_FFFFFFFFH must be 4-KByte aligned and within the physical-address width"
);
rule_def!(LINK_REVISION, "guest.link_pointer.revision", NR, GuestLinkPointer,
    "The VMCS the link pointer references must hold this CPU's VMCS revision identifier, with bit 31 equal to \"VMCS shadowing\"");
rule_def!(
    LINK_CURRENT,
    "guest.link_pointer.current_vmcs",
    NR,
    GuestLinkPointer,
    "Outside SMM, the VMCS link pointer must not be the current-VMCS pointer"
);
rule_def!(PDPTE_RESERVED, "guest.pdpte.reserved", PDPTE, GuestPdpte,
    "With PAE paging (CR0.PG 1, CR4.PAE 1, not IA-32e mode), each present PDPTE must have bits 2:1, 8:5 and beyond the physical-address width 0");

pub static RULES: &[&Rule] = &[
    &DT_CANONICAL,
    &DT_LIMIT,
    &RIP_HIGH,
    &RIP_CANONICAL,
    &RFLAGS_RESERVED,
    &RFLAGS_VM_MODE,
    &RFLAGS_IF_INJECT,
    &ACTIVITY_STATE,
    &ACTIVITY_HLT_DPL,
    &ACTIVITY_BLOCKING,
    &ACTIVITY_EVENT,
    &INTR_RESERVED,
    &INTR_STI_MOV_SS,
    &INTR_STI_IF,
    &INTR_EXTERNAL,
    &INTR_NMI_MOV_SS,
    &INTR_NMI_STI,
    &INTR_SMI,
    &INTR_VIRTUAL_NMI,
    &INTR_ENCLAVE,
    &PENDING_RESERVED,
    &PENDING_BS_SET,
    &PENDING_BS_CLEAR,
    &PENDING_RTM,
    &LINK_ADDRESS,
    &LINK_REVISION,
    &LINK_CURRENT,
    &PDPTE_RESERVED,
];

pub const RFLAGS_TF: u64 = 1 << 8;
pub const RFLAGS_IF: u64 = 1 << 9;
pub const ACTIVITY_ACTIVE: u64 = 0;
pub const ACTIVITY_HLT: u64 = 1;
pub const ACTIVITY_SHUTDOWN: u64 = 2;
pub const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;
pub const BLOCKING_BY_STI: u64 = 1 << 0;
pub const BLOCKING_BY_MOV_SS: u64 = 1 << 1;
pub const BLOCKING_BY_SMI: u64 = 1 << 2;
pub const BLOCKING_BY_NMI: u64 = 1 << 3;
pub const ENCLAVE_INTERRUPTION: u64 = 1 << 4;
pub const PENDING_BS: u64 = 1 << 14;
pub const PENDING_RTM_BIT: u64 = 1 << 16;
pub const DEBUGCTL_BTF: u64 = 1 << 1;
pub const LINK_POINTER_NONE: u64 = u64::MAX;
/// PAE PDPTE reserved bits below bit 12: 2:1 and 8:5 (SDM Vol. 3A §4.4.1 "PDPTE
/// Registers", Table 4-8 "Format of a PAE Page-Directory-Pointer-Table Entry
/// (PDPTE)").
pub const PDPTE_LOW_RESERVED: u64 = 0x1e6;

pub(crate) fn check(c: &Ctx, out: &mut Out<'_>) {
    descriptor_tables(c, out);
    rip_rflags(c, out);
    non_register(c, out);
    pdptes(c, out);
}

fn descriptor_tables(c: &Ctx, out: &mut Out<'_>) {
    out.check(c.canonical(c.get(enc::GUEST_GDTR_BASE)), &DT_CANONICAL, "GDTR");
    out.check(c.canonical(c.get(enc::GUEST_IDTR_BASE)), &DT_CANONICAL, "IDTR");
    out.check(c.get(enc::GUEST_GDTR_LIMIT) >> 16 == 0, &DT_LIMIT, "GDTR");
    out.check(c.get(enc::GUEST_IDTR_LIMIT) >> 16 == 0, &DT_LIMIT, "IDTR");
}

fn rip_rflags(c: &Ctx, out: &mut Out<'_>) {
    let rip = c.get(enc::GUEST_RIP);
    let long = c.ia32e_guest() && c.get(enc::GUEST_CS_AR) & (1 << 13) != 0;
    if long {
        out.check(c.canonical(rip), &RIP_CANONICAL, "");
    } else {
        out.check(rip >> 32 == 0, &RIP_HIGH, "");
    }
    let rflags = c.get(enc::GUEST_RFLAGS);
    let reserved = !0x3f_ffffu64 | (1 << 15) | (1 << 5) | (1 << 3);
    out.check(rflags & reserved == 0 && rflags & 2 != 0, &RFLAGS_RESERVED, "");
    if c.ia32e_guest() || c.get(enc::GUEST_CR0) & CR0_PE == 0 {
        out.check(rflags & RFLAGS_VM == 0, &RFLAGS_VM_MODE, "");
    }
    if c.injected_event().is_some_and(|e| e.kind() == Event::EXTERNAL_INTERRUPT) {
        out.check(rflags & RFLAGS_IF != 0, &RFLAGS_IF_INJECT, "");
    }
}

fn non_register(c: &Ctx, out: &mut Out<'_>) {
    let activity = c.get(enc::GUEST_ACTIVITY_STATE);
    let intr = c.get(enc::GUEST_INTERRUPTIBILITY);
    let rflags = c.get(enc::GUEST_RFLAGS);
    let event = c.injected_event();
    let ss_dpl = (c.get(enc::GUEST_SS_AR) >> 5) & 3;

    // Activity state.
    out.check(misc::activity_state_supported(c.caps.misc, activity), &ACTIVITY_STATE, "");
    if activity == ACTIVITY_HLT {
        out.check(ss_dpl == 0, &ACTIVITY_HLT_DPL, "");
    }
    if intr & (BLOCKING_BY_STI | BLOCKING_BY_MOV_SS) != 0 {
        out.check(activity == ACTIVITY_ACTIVE, &ACTIVITY_BLOCKING, "");
    }
    if let Some(e) = event {
        let (kind, vector) = (e.kind(), e.vector());
        let allowed = match activity {
            ACTIVITY_HLT => {
                matches!(kind, Event::EXTERNAL_INTERRUPT | Event::NMI)
                    || (kind == Event::HARDWARE_EXCEPTION && matches!(vector, 1 | 18))
                    || (kind == Event::OTHER_EVENT && vector == 0)
            }
            ACTIVITY_SHUTDOWN => kind == Event::NMI || (kind == Event::HARDWARE_EXCEPTION && vector == 18),
            ACTIVITY_WAIT_FOR_SIPI => false,
            _ => true,
        };
        out.check(allowed, &ACTIVITY_EVENT, "");
    }

    // Interruptibility state.
    let reserved = !0x1fu64 | if c.cpu.sgx { 0 } else { ENCLAVE_INTERRUPTION };
    out.check(intr & reserved & 0xffff_ffff == 0, &INTR_RESERVED, "");
    out.check(intr & 3 != 3, &INTR_STI_MOV_SS, "");
    if rflags & RFLAGS_IF == 0 {
        out.check(intr & BLOCKING_BY_STI == 0, &INTR_STI_IF, "");
    }
    if let Some(e) = event {
        if e.kind() == Event::EXTERNAL_INTERRUPT {
            out.check(intr & 3 == 0, &INTR_EXTERNAL, "");
        }
        if e.kind() == Event::NMI {
            out.check(intr & BLOCKING_BY_MOV_SS == 0, &INTR_NMI_MOV_SS, "");
            out.check(intr & BLOCKING_BY_STI == 0, &INTR_NMI_STI, "");
            if c.pin_has(pin::VIRTUAL_NMIS) {
                out.check(intr & BLOCKING_BY_NMI == 0, &INTR_VIRTUAL_NMI, "");
            }
        }
    }
    out.check(intr & BLOCKING_BY_SMI == 0, &INTR_SMI, "");
    if intr & ENCLAVE_INTERRUPTION != 0 {
        out.check(intr & BLOCKING_BY_MOV_SS == 0, &INTR_ENCLAVE, "");
    }

    // Pending debug exceptions.
    let pending = c.get(enc::GUEST_PENDING_DBG_EXCEPTIONS);
    let reserved = 0xff0 | (1 << 13) | (1 << 15) | !0x1_ffffu64 | if c.cpu.rtm { 0 } else { PENDING_RTM_BIT };
    out.check(pending & reserved == 0, &PENDING_RESERVED, "");
    if intr & (BLOCKING_BY_STI | BLOCKING_BY_MOV_SS) != 0 || activity == ACTIVITY_HLT {
        let tf = rflags & RFLAGS_TF != 0;
        let btf = c.get(enc::GUEST_IA32_DEBUGCTL) & DEBUGCTL_BTF != 0;
        let bs = pending & PENDING_BS != 0;
        if tf && !btf {
            out.check(bs, &PENDING_BS_SET, "");
        } else {
            out.check(!bs, &PENDING_BS_CLEAR, "");
        }
    }
    if c.cpu.rtm && pending & PENDING_RTM_BIT != 0 {
        out.check(pending & (0xfff | PENDING_BS) == 0 && intr & BLOCKING_BY_MOV_SS == 0, &PENDING_RTM, "");
    }

    // VMCS link pointer.
    let link = c.get(enc::VMCS_LINK_POINTER);
    if link != LINK_POINTER_NONE {
        let address_ok = c.page_address_ok(link);
        out.check(address_ok, &LINK_ADDRESS, "");
        if address_ok {
            if let Some(word) = (c.memory)(link) {
                let revision = crate::vmx_global::basic::revision_id(c.caps.vmx_basic);
                let shadow = c.proc2_has(proc2::VMCS_SHADOWING);
                let ok = word as u32 & 0x7fff_ffff == revision && (word as u32 & (1 << 31) != 0) == shadow;
                out.check(ok, &LINK_REVISION, "");
            }
        }
        if c.cpu.current_vmcs != 0 {
            out.check(link != c.cpu.current_vmcs, &LINK_CURRENT, "");
        }
    }
}

/// PAE paging's four PDPTEs: from the VMCS with EPT, else from guest CR3.
fn pdptes(c: &Ctx, out: &mut Out<'_>) {
    let cr0 = c.get(enc::GUEST_CR0);
    let cr4 = c.get(enc::GUEST_CR4);
    if cr0 & CR0_PG == 0 || cr4 & CR4_PAE == 0 || c.ia32e_guest() {
        return;
    }
    let entries: [Option<u64>; 4] = if c.proc2_has(proc2::ENABLE_EPT) {
        [enc::GUEST_PDPTE0, enc::GUEST_PDPTE1, enc::GUEST_PDPTE2, enc::GUEST_PDPTE3].map(|e| Some(c.get(e)))
    } else {
        // Bits 31:5 of CR3 locate the PDPT (SDM Vol. 3A §4.4.1 "PDPTE Registers").
        let pdpt = c.get(enc::GUEST_CR3) & 0xffff_ffe0;
        [0u64, 8, 16, 24].map(|o| (c.memory)(pdpt + o))
    };
    const NAMES: [&str; 4] = ["PDPTE0", "PDPTE1", "PDPTE2", "PDPTE3"];
    for (i, e) in entries.into_iter().enumerate() {
        if let Some(e) = e {
            if e & 1 != 0 {
                out.check(
                    e & PDPTE_LOW_RESERVED == 0 && c.within_width(e & !(1 << 63)) && e >> 63 == 0,
                    &PDPTE_RESERVED,
                    NAMES[i],
                );
            }
        }
    }
}
