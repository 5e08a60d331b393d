//! The proof guest on each CPU: its memory, EPT, VMCS, launch, and how it ended.

use super::dump;
use super::instructions::vmclear;
use super::proof_vcpu::{self, Proof, ProofVcpu};
use super::proof_vmcs::{self, GuestStart};
use super::vcpu::{GuestRegs, Return, Vcpu};
use super::vmcs::{self, Controls, VmcsError};
use crate::memory;
use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_VMXON};
use crate::virt::layout::*;
use crate::virt::nested::Format;
use crate::virt::{guest_image, proof};
use crate::{run, tsc};
use alloc::string::String;
use core::fmt;
use hvlogic::cmdline::{GuestKind, Inject};
use hvlogic::controls::{exit, pin, proc2};
use hvlogic::exit_qual::{CrAccess, EptViolation};
use hvlogic::exit_reason::basic;
use hvlogic::guest_plan::{Ending, GuestMode};
use hvlogic::summary::Virt;
use hvlogic::vmx_global::VmxGlobalData;
use log::{error, info};
use x86::vmx::vmcs::{control as ctl, guest};

/// Time budget per launch, in microseconds of TSC time.
const TIME_BUDGET_US: u64 = 250_000;

/// Stage work: launch this CPU's guest, run it to its end, report.
pub fn run(pcb: &Pcb) {
    if !pcb.has(CPU_STATUS_VMXON) {
        return;
    }
    let kind = run::options().guest;
    match launch_all(pcb, kind) {
        Ok(true) => pcb.set(CPU_STATUS_GUEST_OK),
        Ok(false) => pcb.set(CPU_STATUS_FAILED),
        Err(e) => {
            error!("guest: {e}");
            pcb.set(CPU_STATUS_FAILED);
        }
    }
}

pub(super) fn choose_mode(d: &VmxGlobalData) -> GuestMode {
    GuestMode::choose(d.ept_usable(), hvlogic::controls::can_set(d.processor_based_ctls2, proc2::UNRESTRICTED_GUEST))
}

/// Set up the guest and run it (once, or once per hostile step). Ok(true)
/// when it ended as intended.
fn launch_all(pcb: &Pcb, kind: GuestKind) -> Result<bool, VmcsError> {
    let (d, maxphyaddr) = {
        let own = pcb.own();
        (own.vmx, own.maxphyaddr)
    };
    let mode = choose_mode(&d);
    // VPID n+1 for processor n (0 is the host's), where INVVPID can flush it.
    let vpid = d.invvpid_type().map(|flush| (pcb.processor_index as u16 + 1, flush));
    let controls = proof_vmcs::choose_controls(&d, mode, vpid.is_some())?;
    let budget = (controls.pin & pin::PREEMPTION_TIMER != 0).then(|| preemption_timer_value(&d));
    info!("guest: mode {}; protection: {}", mode.describe(Virt::Vmx), mode.protection(Virt::Vmx));
    if let Some((id, _)) = vpid {
        info!("guest: VPID {id} tags its TLB entries");
    }
    if budget.is_none() {
        info!("guest: no VMX-preemption timer on this CPU: only the exit budget bounds the guest");
    }

    let memory = memory::alloc_pages((GUEST_MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    let mem = memory.as_mut_ptr() as u64;
    guest_image::load(memory, Virt::Vmx);
    let start = build_address_space(mode, mem, &d)?;
    let vmcs = super::load_new_vmcs(&d).map_err(VmcsError::Load)?;

    let proof = Proof::new(Virt::Vmx, mode, kind, mem, maxphyaddr);
    let vcpu = Vcpu::new(pcb.processor_index, vpid, proof_vcpu::dispatch, proof);
    // The dispatcher answers a passed-through CPUID leaf with nothing else to
    // do; only the exit budget, which bounds a guest where no timer does,
    // needs every exit to reach it. The timer bounds it only if it is saved
    // on exit: otherwise each VM entry starts it from the full budget again.
    if budget.is_some() && controls.exit & exit::SAVE_PREEMPTION_TIMER != 0 {
        vcpu.set_fast_cpuid(Some(vcpu.guest.fast_cpuids));
    }
    let launch = Launch { d: &d, controls, start, budget };
    let result = launch.configure(pcb, vcpu).and_then(|()| proof::run_to_end(&mut Running { launch: &launch, vcpu }));
    // Whatever happened, the VMCS is not left current or active (SDM Vol. 3C
    // §25.11.1 "Software Use of Virtual-Machine Control Structures").
    // SAFETY: in VMX root operation; `vmcs` is this CPU's VMCS.
    let _ = unsafe { vmclear(vmcs) };
    result
}

/// What every launch of this CPU's guest shares.
struct Launch<'a> {
    d: &'a VmxGlobalData,
    controls: Controls,
    start: Start,
    /// The VMX-preemption timer value per launch; None without the timer.
    budget: Option<u64>,
}

impl Launch<'_> {
    /// The parts of the current VMCS that stay the same across launches.
    fn configure(&self, pcb: &Pcb, vcpu: &mut ProofVcpu) -> Result<(), VmcsError> {
        vmcs::write_controls(&self.controls)?;
        vmcs::write(ctl::EXCEPTION_BITMAP, super::emulate::REFLECTED_EXCEPTIONS as u64)?;
        Bitmaps::new().write()?;
        if let Some(eptp) = self.start.eptp {
            vmcs::write(ctl::EPTP_FULL, eptp)?;
        }
        if let Some((id, _)) = vcpu.vpid {
            vmcs::write(ctl::VPID, id as u64)?;
        }
        vmcs::write_host_state(pcb, self.controls.exit, vcpu.host_rsp(), Vcpu::<Proof>::host_rip())
    }

    /// Write the guest state and the parameter block, enter, and run until the guest ends.
    fn launch(&self, vcpu: &mut ProofVcpu, step: u32) -> Result<Ending, VmcsError> {
        let kind = match vcpu.guest.kind {
            GuestKind::Normal => KIND_NORMAL,
            GuestKind::Hostile => KIND_HOSTILE,
            GuestKind::Bench => KIND_BENCH,
            GuestKind::Fuzz => unreachable!("guest=fuzz runs in fuzz_guest"),
        };
        guest_image::write_params(vcpu.guest.memory, kind, step, Virt::Vmx);
        vcpu.regs = GuestRegs::default();
        vcpu.guest.ending = None;
        vcpu.exits = 0;
        proof_vmcs::write_guest_state(self.d, &self.controls, vcpu.guest.mode, &self.start.guest)?;
        if let Some(value) = self.budget {
            vmcs::write(guest::VMX_PREEMPTION_TIMER_VALUE, value)?;
        }
        inject_entry_failure()?;
        // A fresh start: nothing the last launch cached under this VPID may survive.
        if !vcpu.flush_vpid() {
            return Err(VmcsError::Flush);
        }
        if run::options().vmcheck && !vcpu.launched {
            super::snapshot::vmcheck();
        }
        if let Return::EntryFailed { instruction, fail } = vcpu.run() {
            dump::vm_instruction_failure(instruction, fail);
            vcpu.guest.ending = Some(Ending::EntryFailed);
        }
        proof::flush_line(&mut vcpu.guest);
        Ok(vcpu.guest.ending.unwrap_or(Ending::EntryFailed))
    }
}

/// One CPU's guest as `virt::proof` runs it.
struct Running<'a, 'b> {
    launch: &'a Launch<'b>,
    vcpu: &'a mut ProofVcpu,
}

impl proof::Launch for Running<'_, '_> {
    type Error = VmcsError;

    fn proof(&mut self) -> &mut Proof {
        &mut self.vcpu.guest
    }

    fn launch(&mut self, step: u32) -> Result<Ending, VmcsError> {
        self.launch.launch(self.vcpu, step)
    }

    fn note(&mut self) -> String {
        alloc::format!("{}", Note(self.vcpu))
    }

    fn dump(&mut self, level: log::Level) {
        dump::guest_state(&self.vcpu.regs, self.vcpu.exits, level);
    }

    fn timed(&self) -> bool {
        self.launch.budget.is_some()
    }

    fn exits(&mut self) -> u64 {
        self.vcpu.exits
    }
}

/// `inject=entry-bad-guest` / `inject=entry-bad-control`: break the VMCS on
/// purpose so the VM-entry failure reports can be seen and tested.
fn inject_entry_failure() -> Result<(), VmcsError> {
    match run::options().inject {
        Some(Inject::EntryBadGuest) => {
            info!(
                "inject: guest RFLAGS bit 1 cleared (it must be 1, SDM Vol. 3C §27.3.1.4 \
                 \"Checks on Guest RIP, RFLAGS, and SSP\")"
            );
            vmcs::write(guest::RFLAGS, 0)
        }
        Some(Inject::EntryBadControl) => {
            info!(
                "inject: CR3-target count 255, above the CPU's limit (SDM Vol. 3C §27.2.1.1 \
                 \"VM-Execution Control Fields\")"
            );
            vmcs::write(ctl::CR3_TARGET_COUNT, 255)
        }
        _ => Ok(()),
    }
}

/// The addresses the guest state needs, and the EPT pointer if EPT is on.
pub struct Start {
    pub guest: GuestStart,
    pub eptp: Option<u64>,
}

/// The guest's address space (`virt::proof::address_space`): EPT, or
/// host-owned page tables.
fn build_address_space(mode: GuestMode, mem: u64, d: &VmxGlobalData) -> Result<Start, VmcsError> {
    let space = proof::address_space(mode, mem, Format::Ept).ok_or(VmcsError::Above4GiB)?;
    Ok(Start {
        guest: GuestStart { cr3: space.cr3, pm_entry: space.pm_entry, gdt: space.gdt },
        eptp: space.nested.map(|t| t.eptp(d.ept_memory_type)),
    })
}

/// I/O bitmaps A and B: every port exits. MSR bitmap: every MSR access exits,
/// except reads of IA32_APIC_BASE (SDM Vol. 3C §25.6.4 "I/O-Bitmap
/// Addresses", §25.6.9 "MSR-Bitmap Address").
pub(super) struct Bitmaps {
    io: u64,
    msr: u64,
}

impl Bitmaps {
    pub(super) fn new() -> Bitmaps {
        let io = memory::alloc_pages(2);
        io.fill(0xff);
        let msr = memory::alloc_pages(1);
        msr.fill(0xff);
        let pass = PASS_THROUGH_MSR as usize;
        msr[pass / 8] &= !(1 << (pass % 8)); // the read bitmap for low MSRs is at offset 0
        Bitmaps { io: io.as_ptr() as u64, msr: msr.as_ptr() as u64 }
    }

    /// Point the current VMCS at them.
    pub(super) fn write(&self) -> Result<(), VmcsError> {
        vmcs::write(ctl::IO_BITMAP_A_ADDR_FULL, self.io)?;
        vmcs::write(ctl::IO_BITMAP_B_ADDR_FULL, self.io + memory::PAGE_SIZE as u64)?;
        vmcs::write(ctl::MSR_BITMAPS_ADDR_FULL, self.msr)
    }
}

/// TIME_BUDGET_US of TSC time in preemption-timer units: the timer counts
/// down every 2^IA32_VMX_MISC[4:0] TSC ticks (SDM Vol. 3C §26.5.1
/// "VMX-Preemption Timer").
fn preemption_timer_value(d: &VmxGlobalData) -> u64 {
    let rate = d.misc & 0x1f;
    (tsc::micros_to_ticks(TIME_BUDGET_US) >> rate).min(u32::MAX as u64)
}

/// Detail of how the guest ended, appended to the report line.
pub struct Note<'a>(pub &'a ProofVcpu);

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        match v.guest.ending {
            Some(Ending::EptViolation) => {
                write!(f, " at GPA {:#x} ({})", v.guest.ending_value, EptViolation(v.guest.ending_qualification))
            }
            Some(Ending::CrWriteRefused) => {
                write!(f, " ({} = {:#x})", CrAccess::decode(v.guest.ending_qualification), v.guest.ending_value)
            }
            Some(Ending::Unexpected(basic::IO_INSTRUCTION)) => write!(f, " (port {:#x})", v.guest.ending_value),
            Some(Ending::Unexpected(basic::EXCEPTION_OR_NMI)) => write!(f, " (vector {})", v.guest.ending_value),
            _ => Ok(()),
        }
    }
}
