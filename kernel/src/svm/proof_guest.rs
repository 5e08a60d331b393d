//! The proof guest on each CPU under SVM: its memory and nested paging (or
//! host-owned page tables without it), its VMCB, its launches, and how it
//! ended. The program, the verdicts and the report are `virt::proof`'s.

use super::proof_vcpu::{self, ProofVcpu};
use super::vcpu::Vcpu;
use super::vmcb::Vmcb;
use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_VMXON};
use crate::virt::guest_image;
use crate::virt::layout::*;
use crate::virt::nested::Format;
use crate::virt::proof::{self, AddressSpace, Proof};
use crate::{apic, memory, run};
use alloc::string::String;
use core::fmt;
use hvlogic::cmdline::{GuestKind, Inject};
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::summary::Virt;
use hvlogic::svm::exit_code::NpfInfo;
use hvlogic::svm::features::SvmFeatures;
use hvlogic::svm::vmcb::{control, intercept1 as i1, intercept2 as i2, iopm, msrpm, np, save, tlb, vintr};
use hvlogic::svm::EFER_SVME;
use log::{error, info};

/// Time budget per launch, in microseconds of TSC time (the local-APIC
/// timer: SVM has no preemption timer). Longer than VMX's 250 ms: QEMU's TCG
/// runs many virtual CPUs on few host cores, and its TSC follows the host's
/// clock, so a guest's budget there covers the time its CPU is not scheduled
/// at all (64 CPUs on 2 host cores ran out of 250 ms after 2 exits).
const TIME_BUDGET_US: u64 = 2_000_000;

/// Why the guest could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum SetupError {
    /// 32-bit host-owned page tables need the guest's memory below 4 GiB.
    Above4GiB,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Above4GiB => f.write_str("32-bit guest paging needs its tables and memory below 4 GiB"),
        }
    }
}

/// Stage work: launch this CPU's guest, run it to its end, report.
pub fn run(pcb: &Pcb) {
    if !pcb.has(CPU_STATUS_VMXON) {
        return;
    }
    match launch_all(pcb, run::options().guest) {
        Ok(true) => pcb.set(CPU_STATUS_GUEST_OK),
        Ok(false) => pcb.set(CPU_STATUS_FAILED),
        Err(e) => {
            error!("guest: {e}");
            pcb.set(CPU_STATUS_FAILED);
        }
    }
}

/// Set up the guest and run it (once, or once per hostile step). Ok(true)
/// when it ended as intended.
fn launch_all(pcb: &Pcb, kind: GuestKind) -> Result<bool, SetupError> {
    let (features, maxphyaddr, host_state) = {
        let own = pcb.own();
        (own.svm, own.maxphyaddr, own.host_state)
    };
    let mode = GuestMode::choose_svm(features.nested_paging());
    let asid = features.asid_for(pcb.processor_index);
    info!("guest: mode {}; protection: {}", mode.describe(Virt::Svm), mode.protection(Virt::Svm));
    info!("guest: ASID {asid} tags its TLB entries; time budget: the local-APIC timer");
    let memory = memory::alloc_pages((GUEST_MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    let mem = memory.as_mut_ptr() as u64;
    guest_image::load(memory, Virt::Svm);
    let space = proof::address_space(mode, mem, Format::Npt).ok_or(SetupError::Above4GiB)?;
    let proof = Proof::new(Virt::Svm, mode, kind, mem, maxphyaddr);
    let vcpu = Vcpu::new(pcb.processor_index, host_state, features.nrip_save(), proof_vcpu::dispatch, proof);
    // A passed-through CPUID leaf needs nothing of the dispatcher but its
    // count; the APIC timer bounds a guest that loops on it.
    vcpu.set_fast_cpuid(Some(vcpu.guest.fast_cpuids));
    let maps = Maps::new();
    let timer = apic::timer_count_for(TIME_BUDGET_US);
    proof::run_to_end(&mut Running { vcpu, space: &space, features, asid, maps, timer })
}

/// The I/O and MSR permissions maps: every port and every MSR exits, but
/// reads of IA32_APIC_BASE (APM Vol. 2 §15.10.1 "I/O Permissions Map",
/// §15.11 "MSR Intercepts").
pub(super) struct Maps {
    iopm: u64,
    msrpm: u64,
}

impl Maps {
    pub(super) fn new() -> Maps {
        let io = memory::alloc_pages(iopm::SIZE / memory::PAGE_SIZE);
        io.fill(0xff);
        let msr = memory::alloc_pages(msrpm::SIZE / memory::PAGE_SIZE);
        msr.fill(0xff);
        if let Some(bit) = msrpm::read_bit(PASS_THROUGH_MSR) {
            msr[bit / 8] &= !(1 << (bit % 8));
        }
        Maps { iopm: io.as_ptr() as u64, msrpm: msr.as_ptr() as u64 }
    }
}

/// The VMCB's control area, written whole at every launch (a VMCB is
/// undefined after a SHUTDOWN intercept, and a hostile guest's steps follow
/// one another: KVM rebuilds it likewise): the intercepts and their maps,
/// the ASID, nested paging.
pub(super) fn configure(vmcb: &Vmcb, asid: u32, mode: GuestMode, space: &AddressSpace, maps: &Maps) {
    vmcb.clear();
    let nested = mode.uses_ept();
    // Exceptions: #DB and #AC, given straight back (virt::proof: a delivery
    // that raises the same exception again would loop with no boundary);
    // #MC, so that a machine check is reported as one, not as the triple
    // fault the IDT-less guest would make of it.
    vmcb.set_u32(control::INTERCEPT_EXCEPTIONS, 1 << 1 | 1 << 17 | 1 << 18);
    let mut one = i1::INTR
        | i1::NMI
        | i1::SMI
        | i1::INIT
        | i1::CPUID
        | i1::HLT
        | i1::INVD
        | i1::INVLPGA
        | i1::IOIO_PROT
        | i1::MSR_PROT
        | i1::RSM
        | i1::SHUTDOWN;
    if !nested {
        // The guest's page tables and paging mode are the hypervisor's: CR3
        // and CR4 loads, CR0 changes beyond TS and MP, and task switches
        // (which load CR3) are refused.
        one |= i1::CR0_SEL_WRITE | i1::TASK_SWITCH;
        vmcb.set_u32(control::INTERCEPT_CR, (1 << 3 | 1 << 4) << 16);
    }
    vmcb.set_u32(control::INTERCEPT1, one);
    vmcb.set_u32(
        control::INTERCEPT2,
        i2::VMRUN
            | i2::VMMCALL
            | i2::VMLOAD
            | i2::VMSAVE
            | i2::STGI
            | i2::CLGI
            | i2::SKINIT
            | i2::MONITOR
            | i2::MWAIT
            | i2::MWAIT_ARMED
            | i2::XSETBV,
    );
    vmcb.set_u64(control::IOPM_BASE_PA, maps.iopm);
    vmcb.set_u64(control::MSRPM_BASE_PA, maps.msrpm);
    vmcb.set_u32(control::GUEST_ASID, asid);
    // The guest's RFLAGS.IF and CR8 govern only its own virtual interrupts;
    // the host's timer interrupt exits it whatever the guest does.
    vmcb.set_u64(control::VINTR, vintr::V_INTR_MASKING);
    if let Some(tables) = &space.nested {
        vmcb.set_u64(control::NP_CONTROL, np::ENABLE);
        vmcb.set_u64(control::N_CR3, tables.root());
    }
}

/// The guest's start: real mode at F000:FFF0 as out of reset (with nested
/// paging), or 32-bit protected mode with paging at the program's 32-bit
/// entry on host-owned tables; RFLAGS, DR6, DR7 and PAT at their reset
/// values; EFER.SVME, which VMRUN requires of every guest (APM Vol. 2
/// §15.5.1 "Basic Operation").
pub(super) fn write_start(vmcb: &Vmcb, mode: GuestMode, space: &AddressSpace) {
    use hvlogic::svm::vmcb::save::*;
    const CODE16: u16 = 0x9b;
    const DATA16: u16 = 0x93;
    const CODE32: u16 = 0xc9b;
    const DATA32: u16 = 0xc93;
    const LDT: u16 = 0x82;
    const TSS_BUSY: u16 = 0x8b;
    match mode {
        GuestMode::RealFromReset | GuestMode::ProtectedEpt => {
            vmcb.set_segment(CS, 0xf000, CODE16, 0xffff, 0xffff_0000);
            for s in [ES, SS, DS, FS, GS] {
                vmcb.set_segment(s, 0, DATA16, 0xffff, 0);
            }
            vmcb.set_segment(GDTR, 0, 0, 0xffff, 0);
            vmcb.set_segment(IDTR, 0, 0, 0xffff, 0);
            vmcb.set_u64(CR0, 0x10);
            vmcb.set_u64(CR3, 0);
            vmcb.set_u64(RIP, 0xfff0);
            vmcb.set_u64(RSP, 0);
        }
        GuestMode::ProtectedNoEpt => {
            vmcb.set_segment(CS, GUEST_CS, CODE32, 0xffff_ffff, 0);
            for s in [ES, SS, DS, FS, GS] {
                vmcb.set_segment(s, GUEST_DS, DATA32, 0xffff_ffff, 0);
            }
            vmcb.set_segment(GDTR, 0, 0, 0x17, space.gdt);
            vmcb.set_segment(IDTR, 0, 0, 0, 0);
            // PE, ET, PG: 32-bit paging on the host's tables.
            vmcb.set_u64(CR0, 0x8000_0011);
            vmcb.set_u64(CR3, space.cr3);
            vmcb.set_u64(RIP, space.pm_entry);
            vmcb.set_u64(RSP, STACK_TOP);
        }
    }
    vmcb.set_segment(LDTR, 0, LDT, 0xffff, 0);
    vmcb.set_segment(TR, 0, TSS_BUSY, 0xffff, 0);
    vmcb.write::<u8>(CPL, 0);
    vmcb.set_u64(CR4, 0);
    vmcb.set_u64(CR2, 0);
    vmcb.set_u64(EFER, EFER_SVME);
    vmcb.set_u64(RFLAGS, 0x2);
    vmcb.set_u64(DR6, 0xffff_0ff0);
    vmcb.set_u64(DR7, 0x400);
    vmcb.set_u64(G_PAT, hvlogic::mtrr::PAT_RESET);
    vmcb.set_u64(DBGCTL, 0);
    for s in [STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP] {
        vmcb.set_u64(s, 0);
    }
}

/// One CPU's guest as `virt::proof` runs it.
struct Running<'a> {
    vcpu: &'static mut ProofVcpu,
    space: &'a AddressSpace,
    features: SvmFeatures,
    asid: u32,
    maps: Maps,
    /// Local-APIC timer ticks per launch.
    timer: u32,
}

impl proof::Launch for Running<'_> {
    type Error = SetupError;

    fn proof(&mut self) -> &mut Proof {
        &mut self.vcpu.guest
    }

    fn launch(&mut self, step: u32) -> Result<Ending, SetupError> {
        let vcpu = &mut *self.vcpu;
        let kind = match vcpu.guest.kind {
            GuestKind::Normal => KIND_NORMAL,
            GuestKind::Hostile => KIND_HOSTILE,
            GuestKind::Bench => KIND_BENCH,
            GuestKind::Fuzz => unreachable!("guest=fuzz runs in its own module"),
        };
        guest_image::write_params(vcpu.guest.memory, kind, step, Virt::Svm);
        vcpu.regs = Default::default();
        vcpu.guest.ending = None;
        vcpu.exits = 0;
        let vmcb = vcpu.vmcb;
        configure(&vmcb, self.asid, vcpu.guest.mode, self.space, &self.maps);
        write_start(&vmcb, vcpu.guest.mode, self.space);
        // A fresh start: nothing cached for this ASID from the last launch may survive.
        let flush = if self.features.has(hvlogic::svm::features::edx::FLUSH_BY_ASID) {
            tlb::FLUSH_ASID
        } else {
            tlb::FLUSH_ALL
        };
        vmcb.write(control::TLB_CONTROL, flush);
        inject_vmrun_failure(&vmcb);
        if run::options().vmcheck {
            super::dump::vmcheck(&vmcb);
        }
        vcpu.guest.timer_vector = Some(apic::TIMER_VECTOR);
        let _ = crate::virt::fuzz::timed(Some(self.timer), || vcpu.run());
        proof::flush_line(&mut vcpu.guest);
        Ok(vcpu.guest.ending.unwrap_or(Ending::EntryFailed))
    }

    fn note(&mut self) -> String {
        let p = &self.vcpu.guest;
        match p.ending {
            Some(Ending::NestedPageFault) => {
                alloc::format!(" at GPA {:#x} ({})", p.ending_value, NpfInfo(p.ending_qualification))
            }
            Some(Ending::UnexpectedSvm(hvlogic::svm::exit_code::IOIO_U16)) => {
                alloc::format!(" (port {:#x})", p.ending_value)
            }
            _ => String::new(),
        }
    }

    fn dump(&mut self, level: log::Level) {
        super::dump::guest_state(&self.vcpu.vmcb, &self.vcpu.regs, self.vcpu.exits, level);
    }

    fn timed(&self) -> bool {
        true
    }

    fn exits(&mut self) -> u64 {
        self.vcpu.exits
    }
}

/// `inject=entry-bad-guest` / `inject=entry-bad-control`: break the VMCB on
/// purpose so the VMRUN failure report can be seen and tested.
fn inject_vmrun_failure(vmcb: &Vmcb) {
    match run::options().inject {
        Some(Inject::EntryBadGuest) => {
            info!("inject: guest EFER.SVME cleared (it must be 1, APM Vol. 2 §15.5.1 \"Basic Operation\")");
            vmcb.set_u64(save::EFER, vmcb.u64(save::EFER) & !EFER_SVME);
        }
        Some(Inject::EntryBadControl) => {
            info!("inject: the VMRUN intercept cleared (it must be set, APM Vol. 2 §15.5.1 \"Basic Operation\")");
            vmcb.set_u32(control::INTERCEPT2, vmcb.u32(control::INTERCEPT2) & !i2::VMRUN);
        }
        _ => {}
    }
}
