//! The proof guest on each CPU: its memory, EPT, VMCS, launch, and how it ended.

use super::dump;
use super::ept::{self, Ept};
use super::instructions::vmclear;
use super::layout::*;
use super::proof_vcpu::{self, Proof, ProofVcpu};
use super::proof_vmcs::{self, GuestStart};
use super::vcpu::{GuestRegs, Return, Vcpu};
use super::vmcs::{self, Controls, VmcsError};
use crate::memory;
use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_VMXON};
use crate::{run, tsc};
use core::fmt;
use core::mem::offset_of;
use hvlogic::cmdline::{GuestKind, Inject};
use hvlogic::controls::{exit, pin, proc2};
use hvlogic::exit_qual::{CrAccess, EptViolation};
use hvlogic::exit_reason::basic;
use hvlogic::guest_plan::{Ending, GuestMode, HostileStep};
use hvlogic::vmx_global::VmxGlobalData;
use log::{debug, error, info};
use x86::vmx::vmcs::{control as ctl, guest};

core::arch::global_asm!(
    include_str!("../guest.s"),
    IMAGE = const IMAGE,
    STACK_TOP = const STACK_TOP,
    PARAMS = const PARAMS,
    P_KIND = const offset_of!(GuestParams, kind),
    P_STEP = const offset_of!(GuestParams, step),
    SAMPLES = const SAMPLES,
    BENCH_ITERATIONS = const BENCH_ITERATIONS,
    GUEST_CS = const GUEST_CS,
    GUEST_DS = const GUEST_DS,
    HC_DONE = const HC_DONE,
    HC_REPORT_SAMPLES = const HC_REPORT_SAMPLES,
    KIND_NORMAL = const KIND_NORMAL,
    KIND_HOSTILE = const KIND_HOSTILE,
    KIND_BENCH = const KIND_BENCH,
    CPUID_HV_CPU_INDEX = const CPUID_HV_CPU_INDEX,
    HC_REFUSED_32 = const HC_REFUSED as u32,
    TRAPPED_MSR = const TRAPPED_MSR,
    TRAPPED_MSR_VALUE = const TRAPPED_MSR_VALUE,
    PASS_THROUGH_MSR = const PASS_THROUGH_MSR,
    STEP_READ_OUTSIDE = const HostileStep::ReadOutside.number(),
    STEP_WRITE_OUTSIDE = const HostileStep::WriteOutside.number(),
    STEP_VMXON = const HostileStep::Vmxon.number(),
    STEP_BAD_VMCALL = const HostileStep::BadVmcall.number(),
    STEP_GARBAGE_CR3 = const HostileStep::GarbageCr3.number(),
    STEP_TRIPLE_FAULT = const HostileStep::TripleFault.number(),
    STEP_NEVER_ENDS = const HostileStep::NeverEnds.number(),
    options(att_syntax)
);

extern "C" {
    static guest_image_start: u8;
    static guest_image_end: u8;
    static guest_pm_entry_offset: u32;
    static guest_gdt_offset: u32;
}

/// Time budget per launch, in microseconds of TSC time.
const TIME_BUDGET_US: u64 = 250_000;

/// Stage work: launch this CPU's guest, run it to its end, report.
pub fn run(pcb: &Pcb) {
    if let Some(n) = run::options().entryfuzz {
        return super::entry_fuzz::run(pcb, n, run::options().seed);
    }
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
    info!("guest: mode {mode}; protection: {}", mode.protection());
    if let Some((id, _)) = vpid {
        info!("guest: VPID {id} tags its TLB entries");
    }
    if budget.is_none() {
        info!("guest: no VMX-preemption timer on this CPU: only the exit budget bounds the guest");
    }

    let memory = memory::alloc_pages((GUEST_MEM_SIZE / memory::PAGE_SIZE as u64) as usize);
    let mem = memory.as_mut_ptr() as u64;
    load_image(memory);
    let start = build_address_space(mode, mem, &d)?;
    let vmcs = super::load_new_vmcs(&d).map_err(VmcsError::Load)?;

    let vcpu = Vcpu::new(pcb.processor_index, vpid, proof_vcpu::dispatch, Proof::new(mode, kind, mem, maxphyaddr));
    // The dispatcher answers a passed-through CPUID leaf with nothing else to
    // do; only the exit budget, which bounds a guest where no timer does,
    // needs every exit to reach it. The timer bounds it only if it is saved
    // on exit: otherwise each VM entry starts it from the full budget again.
    if budget.is_some() && controls.exit & exit::SAVE_PREEMPTION_TIMER != 0 {
        vcpu.set_fast_cpuid(Some(vcpu.guest.fast_cpuids));
    }
    let launch = Launch { d: &d, controls, start, budget };
    let result = launch.configure(pcb, vcpu).and_then(|()| launch.run_to_end(vcpu));
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

    /// Run the guest to its end (each hostile step in turn); true if it ended as intended.
    fn run_to_end(&self, vcpu: &mut ProofVcpu) -> Result<bool, VmcsError> {
        if vcpu.guest.kind != GuestKind::Hostile {
            let ending = self.launch(vcpu, 0)?;
            return Ok(report_single(vcpu, ending));
        }
        let mut contained = 0;
        for step in HostileStep::ALL {
            if step == HostileStep::NeverEnds && self.budget.is_none() {
                info!("hostile step {} ({}): skipped, no VMX-preemption timer", step.number(), step.describe());
                contained += 1;
                continue;
            }
            let ending = self.launch(vcpu, step.number())?;
            if ending == Ending::EntryFailed {
                error!("hostile step {} ({}): VM entry failed; no further steps", step.number(), step.describe());
                break;
            }
            let expected = step.expected(vcpu.guest.mode);
            if ending == expected {
                info!("hostile step {} ({}): contained: {ending}{}", step.number(), step.describe(), note(vcpu));
                if ending != Ending::Success {
                    dump::guest_state(&vcpu.regs, vcpu.exits, log::Level::Info);
                }
                contained += 1;
            } else {
                error!(
                    "hostile step {} ({}): ended by {ending}{}, expected {expected}",
                    step.number(),
                    step.describe(),
                    note(vcpu)
                );
                dump::guest_state(&vcpu.regs, vcpu.exits, log::Level::Error);
            }
        }
        let all = HostileStep::ALL.len();
        if contained == all {
            info!("guest ok: hostile guest contained ({contained} of {all} attempts)");
        } else {
            error!("guest failed: hostile guest contained only {contained} of {all} attempts");
        }
        Ok(contained == all)
    }

    /// Write the guest state and the parameter block, enter, and run until the guest ends.
    fn launch(&self, vcpu: &mut ProofVcpu, step: u32) -> Result<Ending, VmcsError> {
        let kind = match vcpu.guest.kind {
            GuestKind::Normal => KIND_NORMAL,
            GuestKind::Hostile => KIND_HOSTILE,
            GuestKind::Bench => KIND_BENCH,
            GuestKind::Fuzz => unreachable!("guest=fuzz runs in fuzz_guest"),
        };
        let params = (vcpu.guest.memory + PARAMS) as *mut GuestParams;
        // SAFETY: the parameter block lies inside this guest's memory.
        unsafe { params.write_volatile(GuestParams { kind, step }) };
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
        proof_vcpu::flush_line(vcpu);
        Ok(vcpu.guest.ending.unwrap_or(Ending::EntryFailed))
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

/// Report a normal or bench guest's end; true if it ended as intended.
fn report_single(vcpu: &mut ProofVcpu, ending: Ending) -> bool {
    debug!("guest: {} VM exits", vcpu.exits);
    match ending {
        Ending::Success => {
            if vcpu.guest.kind == GuestKind::Bench && vcpu.guest.bench_reports == 0 {
                error!("bench: the guest reported no samples");
                return false;
            }
            info!("guest ok: ended with VMCALL success");
            true
        }
        other => {
            error!("guest failed: {other}{}", note(vcpu));
            dump::guest_state(&vcpu.regs, vcpu.exits, log::Level::Error);
            false
        }
    }
}

/// The addresses the guest state needs, and the EPT pointer if EPT is on.
pub struct Start {
    pub guest: GuestStart,
    pub eptp: Option<u64>,
}

/// Copy the guest image to guest address IMAGE.
fn load_image(memory: &mut [u8]) {
    // SAFETY: the two symbols delimit the guest image in .rodata.
    let image = unsafe {
        let start = &guest_image_start as *const u8;
        core::slice::from_raw_parts(start, &guest_image_end as *const u8 as usize - start as usize)
    };
    memory[IMAGE as usize..IMAGE as usize + image.len()].copy_from_slice(image);
}

/// EPT (mapping the guest's memory and, for the real-mode start, the reset
/// vector page) or, without EPT, host-owned 32-bit page tables.
fn build_address_space(mode: GuestMode, mem: u64, d: &VmxGlobalData) -> Result<Start, VmcsError> {
    // SAFETY: symbols emitted by guest.s.
    let (pm_entry, gdt) = unsafe { (IMAGE + guest_pm_entry_offset as u64, IMAGE + guest_gdt_offset as u64) };
    let mut cr3 = 0;
    let mut eptp = None;
    match mode {
        GuestMode::RealFromReset | GuestMode::ProtectedEpt => {
            let mut ept = Ept::new();
            ept.map(0, mem, GUEST_MEM_SIZE, ept::RWX);
            if mode == GuestMode::RealFromReset {
                // The reset vector: F000:FFF0 is guest-physical FFFFFFF0; a far jump to IMAGE.
                let page = memory::alloc_pages(1);
                page[0xff0..0xff5].copy_from_slice(&[0xea, IMAGE as u8, (IMAGE >> 8) as u8, 0, 0]);
                ept.map(RESET_PAGE_GPA, page.as_ptr() as u64, memory::PAGE_SIZE as u64, ept::READ | ept::EXECUTE);
            } else {
                // 32-bit paging inside guest memory, identity over the guest's memory.
                write_page_tables(mem + PAGE_DIRECTORY, mem + PAGE_TABLE, PAGE_TABLE, 0);
                cr3 = PAGE_DIRECTORY;
            }
            eptp = Some(ept.eptp(d.ept_memory_type));
        }
        GuestMode::ProtectedNoEpt => {
            // Tables outside guest memory: the guest can neither see nor change them.
            let pd = memory::alloc_pages(1).as_ptr() as u64;
            let pt = memory::alloc_pages(1).as_ptr() as u64;
            if pt >> 32 != 0 || mem >> 32 != 0 {
                return Err(VmcsError::Above4GiB);
            }
            write_page_tables(pd, pt, pt, mem);
            cr3 = pd;
        }
    }
    Ok(Start { guest: GuestStart { cr3, pm_entry, gdt }, eptp })
}

/// A 32-bit page directory at host address `pd` whose entry 0 points at the
/// table `pt_address` (as the guest sees it); the table at host address `pt`
/// maps guest-linear [0, GUEST_MEM_SIZE) to `base + linear` (SDM Vol. 3A §4.3
/// "32-Bit Paging").
fn write_page_tables(pd: u64, pt: u64, pt_address: u64, base: u64) {
    const PRESENT_WRITABLE: u32 = 0x3;
    // SAFETY: both are zeroed, page-aligned pages the hypervisor owns.
    unsafe {
        (pd as *mut u32).write(pt_address as u32 | PRESENT_WRITABLE);
        for i in 0..GUEST_MEM_SIZE / memory::PAGE_SIZE as u64 {
            (pt as *mut u32).add(i as usize).write((base + i * memory::PAGE_SIZE as u64) as u32 | PRESENT_WRITABLE);
        }
    }
}

/// I/O bitmaps A and B: every port exits. MSR bitmap: every MSR access exits,
/// except reads of IA32_TSC (SDM Vol. 3C §25.6.4 "I/O-Bitmap
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
pub fn note(vcpu: &ProofVcpu) -> Note<'_> {
    Note(vcpu)
}

pub struct Note<'a>(&'a ProofVcpu);

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
