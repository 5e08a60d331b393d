//! The guest on each CPU: its memory, EPT, VMCS, launch, and how it ended.

use super::ept::{self, Ept};
use super::instructions::{invvpid, vmclear};
use super::layout::*;
use super::vmcs::{self, Controls, GuestStart, SetupError};
use super::{dump, exits};
use crate::memory;
use crate::pcb::{Pcb, CPU_STATUS_FAILED, CPU_STATUS_GUEST_OK, CPU_STATUS_VMXON};
use crate::{run, tsc};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::mem::{offset_of, size_of};
use hvlogic::cmdline::{GuestKind, Inject};
use hvlogic::controls::{pin, proc2};
use hvlogic::guest_plan::{median_min, Ending, GuestMode, HostileStep};
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
    CPUID_HV_BASE = const CPUID_HV_BASE,
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

core::arch::global_asm!(
    include_str!("entry.s"),
    HOST_RSP_SAVE = const offset_of!(Vcpu, host_rsp_save),
    EXIT_STACK_TOP = const offset_of!(Vcpu, exit_stack_top),
    REGS_SIZE = const size_of::<GuestRegs>(),
    options(att_syntax)
);

extern "C" {
    static guest_image_start: u8;
    static guest_image_end: u8;
    static guest_pm_entry_offset: u32;
    static guest_gdt_offset: u32;
    fn vm_run(vcpu: *mut core::ffi::c_void, launched: u64) -> u64;
    fn vm_exit_stub();
}

/// `vm_run` result bit 63: VM entry failed; bits 0 and 6 then hold CF and ZF.
const ENTRY_FAILED: u64 = 1 << 63;
/// The dispatcher's stop code: the guest ended (see `Vcpu::ending`).
pub const STOP: u64 = 1;

/// Time budget per launch, in microseconds of TSC time.
const TIME_BUDGET_US: u64 = 250_000;
const EXIT_STACK_SIZE: usize = 16 * 1024;

/// The guest's general registers, in the order vm_exit_stub pushes them
/// (lowest address first; the numbering of SDM Table 28-3, RSP excepted).
#[repr(C)]
#[derive(Default)]
pub struct GuestRegs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl GuestRegs {
    /// Register `n` of an exit qualification (0 RAX ... 15 R15); RSP lives in the VMCS.
    pub fn get(&self, n: u8) -> u64 {
        match n {
            4 => vmcs::read(guest::RSP),
            _ => *self.slot(n),
        }
    }

    pub fn set(&mut self, n: u8, value: u64) -> Result<(), SetupError> {
        match n {
            4 => vmcs::write(guest::RSP, value),
            _ => {
                *self.slot_mut(n) = value;
                Ok(())
            }
        }
    }

    fn slot(&self, n: u8) -> &u64 {
        let i = if n > 4 { n - 1 } else { n } as usize;
        // SAFETY: GuestRegs is 15 consecutive u64s and i < 15.
        unsafe { &*(self as *const GuestRegs as *const u64).add(i) }
    }

    fn slot_mut(&mut self, n: u8) -> &mut u64 {
        let i = if n > 4 { n - 1 } else { n } as usize;
        // SAFETY: as in `slot`.
        unsafe { &mut *(self as *mut GuestRegs as *mut u64).add(i) }
    }
}

/// One CPU's virtual CPU. `regs` must stay first: HOST_RSP points at its end.
#[repr(C)]
pub struct Vcpu {
    pub regs: GuestRegs,
    /// RSP for the exit dispatcher (top of this CPU's exit stack).
    exit_stack_top: u64,
    /// vm_run's own RSP while the guest runs.
    host_rsp_save: u64,
    pub processor_index: u32,
    pub mode: GuestMode,
    pub kind: GuestKind,
    /// Guest memory: guest address X is at `memory + X`.
    pub memory: u64,
    pub exits: u64,
    /// VMLAUNCH succeeded on this VMCS: later entries use VMRESUME.
    pub launched: bool,
    /// The physical-address width (PCB `Own::maxphyaddr`).
    pub maxphyaddr: u32,
    /// The VPID and the INVVPID type that flushes it, where VPID is on.
    pub vpid: Option<(u16, u64)>,
    pub ending: Option<Ending>,
    /// The guest's COM1 line being assembled.
    pub line: [u8; 120],
    pub line_len: usize,
    /// Samples handed over by HC_REPORT_SAMPLES (allocated up front).
    pub samples: Vec<u32>,
    /// The exit qualification and a value (GPA, CR value, port) of the exit
    /// that ended the guest, for the report.
    pub ending_qualification: u64,
    pub ending_value: u64,
}

impl Vcpu {
    /// Guest memory `[gpa, gpa + len)` as host memory, if it lies inside the guest.
    pub fn guest_slice(&self, gpa: u64, len: u64) -> Option<&'static [u8]> {
        let end = gpa.checked_add(len)?;
        if end > GUEST_MEM_SIZE {
            return None;
        }
        // SAFETY: inside this guest's memory, which the hypervisor owns and keeps mapped.
        Some(unsafe { core::slice::from_raw_parts((self.memory + gpa) as *const u8, len as usize) })
    }

    /// Flush this guest's VPID-tagged translations, as a MOV to CR3 or a
    /// fresh start would; false if INVVPID failed.
    pub fn flush_vpid(&self) -> bool {
        match self.vpid {
            // SAFETY: in VMX root operation; the type is one IA32_VMX_EPT_VPID_CAP reports.
            Some((vpid, kind)) => unsafe { invvpid(kind, [vpid as u64, 0]) }.is_ok(),
            None => true,
        }
    }

    pub fn end(&mut self, ending: Ending) -> u64 {
        self.ending = Some(ending);
        STOP
    }
}

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

fn choose_mode(d: &VmxGlobalData) -> GuestMode {
    GuestMode::choose(d.ept_usable(), hvlogic::controls::can_set(d.processor_based_ctls2, proc2::UNRESTRICTED_GUEST))
}

/// Set up the guest and run it (once, or once per hostile step). Ok(true)
/// when it ended as intended.
fn launch_all(pcb: &Pcb, kind: GuestKind) -> Result<bool, SetupError> {
    let (d, maxphyaddr) = {
        let own = pcb.own();
        (own.vmx, own.maxphyaddr)
    };
    let mode = choose_mode(&d);
    // VPID n+1 for processor n (0 is the host's), where INVVPID can flush it.
    let vpid = d.invvpid_type().map(|flush| (pcb.processor_index as u16 + 1, flush));
    let controls = vmcs::choose_controls(&d, mode, vpid.is_some())?;
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
    let vmcs = super::load_new_vmcs(&d).map_err(|e| SetupError {
        what: "VMCLEAR/VMPTRLD of the VMCS",
        field: 0,
        error: Some(e),
    })?;

    let vcpu = Box::leak(Box::new(Vcpu {
        regs: GuestRegs::default(),
        exit_stack_top: memory::alloc_stack(EXIT_STACK_SIZE),
        host_rsp_save: 0,
        processor_index: pcb.processor_index,
        mode,
        kind,
        memory: mem,
        exits: 0,
        launched: false,
        maxphyaddr,
        vpid,
        ending: None,
        line: [0; 120],
        line_len: 0,
        samples: Vec::with_capacity(if kind == GuestKind::Bench { BENCH_ITERATIONS as usize } else { 0 }),
        ending_qualification: 0,
        ending_value: 0,
    }));
    let launch = Launch { d: &d, controls, start, budget };
    let result = launch.configure(pcb, vcpu).and_then(|()| launch.run_to_end(vcpu));
    // Whatever happened, the VMCS is not left current or active (SDM Vol. 3C 25.11.1).
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
    fn configure(&self, pcb: &Pcb, vcpu: &mut Vcpu) -> Result<(), SetupError> {
        vmcs::write_controls(&self.controls)?;
        write_bitmaps()?;
        if let Some(eptp) = self.start.eptp {
            vmcs::write(ctl::EPTP_FULL, eptp)?;
        }
        if let Some((id, _)) = vcpu.vpid {
            vmcs::write(ctl::VPID, id as u64)?;
        }
        let host_rsp = vcpu as *mut Vcpu as u64 + size_of::<GuestRegs>() as u64;
        vmcs::write_host_state(pcb, &self.controls, host_rsp, vm_exit_stub as *const () as u64)
    }

    /// Run the guest to its end (each hostile step in turn); true if it ended as intended.
    fn run_to_end(&self, vcpu: &mut Vcpu) -> Result<bool, SetupError> {
        if vcpu.kind != GuestKind::Hostile {
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
            let expected = step.expected(vcpu.mode);
            if ending == expected {
                info!("hostile step {} ({}): contained: {ending}{}", step.number(), step.describe(), dump::note(vcpu));
                if ending != Ending::Success {
                    dump::guest_state(vcpu, log::Level::Info);
                }
                contained += 1;
            } else {
                error!(
                    "hostile step {} ({}): ended by {ending}{}, expected {expected}",
                    step.number(),
                    step.describe(),
                    dump::note(vcpu)
                );
                dump::guest_state(vcpu, log::Level::Error);
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
    fn launch(&self, vcpu: &mut Vcpu, step: u32) -> Result<Ending, SetupError> {
        let kind = match vcpu.kind {
            GuestKind::Normal => KIND_NORMAL,
            GuestKind::Hostile => KIND_HOSTILE,
            GuestKind::Bench => KIND_BENCH,
        };
        let params = (vcpu.memory + PARAMS) as *mut GuestParams;
        // SAFETY: the parameter block lies inside this guest's memory.
        unsafe { params.write_volatile(GuestParams { kind, step }) };
        vcpu.regs = GuestRegs::default();
        vcpu.ending = None;
        vcpu.exits = 0;
        vmcs::write_guest_state(self.d, &self.controls, vcpu.mode, &self.start.guest)?;
        if let Some(value) = self.budget {
            vmcs::write(guest::VMX_PREEMPTION_TIMER_VALUE, value)?;
        }
        inject_entry_failure()?;
        // A fresh start: nothing the last launch cached under this VPID may survive.
        if !vcpu.flush_vpid() {
            return Err(SetupError { what: "INVVPID before launch failed", field: 0, error: None });
        }
        let resuming = vcpu.launched;
        if run::options().vmcheck && !resuming {
            super::snapshot::vmcheck();
        }
        // SAFETY: the VMCS is current and complete; vcpu is 'static with its exit stack.
        let r = unsafe { vm_run(vcpu as *mut Vcpu as *mut core::ffi::c_void, resuming as u64) };
        // An exit means VM entry succeeded once: the VMCS is "launched" (SDM Vol.
        // 3C 25.11.3), and a later failure came from the exit path's VMRESUME.
        if vcpu.exits > 0 && vcpu.ending != Some(Ending::EntryFailed) {
            vcpu.launched = true;
        }
        if r & ENTRY_FAILED != 0 {
            dump::vm_instruction_failure(if resuming || vcpu.exits > 0 { "VMRESUME" } else { "VMLAUNCH" }, r);
            vcpu.ending = Some(Ending::EntryFailed);
        }
        exits::flush_line(vcpu);
        Ok(vcpu.ending.unwrap_or(Ending::EntryFailed))
    }
}

/// `inject=entry-bad-guest` / `inject=entry-bad-control`: break the VMCS on
/// purpose so the VM-entry failure reports can be seen and tested.
fn inject_entry_failure() -> Result<(), SetupError> {
    match run::options().inject {
        Some(Inject::EntryBadGuest) => {
            info!("inject: guest RFLAGS bit 1 cleared (it must be 1, SDM Vol. 3C 27.3.1.4)");
            vmcs::write(guest::RFLAGS, 0)
        }
        Some(Inject::EntryBadControl) => {
            info!("inject: CR3-target count 255, above the CPU's limit (SDM Vol. 3C 27.2.1.1)");
            vmcs::write(ctl::CR3_TARGET_COUNT, 255)
        }
        _ => Ok(()),
    }
}

/// Report a normal or bench guest's end; true if it ended as intended.
fn report_single(vcpu: &mut Vcpu, ending: Ending) -> bool {
    debug!("guest: {} VM exits", vcpu.exits);
    match ending {
        Ending::Success => {
            if vcpu.kind == GuestKind::Bench {
                match median_min(&mut vcpu.samples) {
                    Some((median, min)) => info!("bench: cpuid-exit median={median} min={min}"),
                    None => {
                        error!("bench: the guest reported no samples");
                        return false;
                    }
                }
            }
            info!("guest ok: ended with VMCALL success");
            true
        }
        other => {
            error!("guest failed: {other}{}", dump::note(vcpu));
            dump::guest_state(vcpu, log::Level::Error);
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
fn build_address_space(mode: GuestMode, mem: u64, d: &VmxGlobalData) -> Result<Start, SetupError> {
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
                return Err(SetupError {
                    what: "32-bit guest paging needs its tables and memory below 4 GiB",
                    field: 0,
                    error: None,
                });
            }
            write_page_tables(pd, pt, pt, mem);
            cr3 = pd;
        }
    }
    Ok(Start { guest: GuestStart { cr3, pm_entry, gdt }, eptp })
}

/// A 32-bit page directory at host address `pd` whose entry 0 points at the
/// table `pt_address` (as the guest sees it); the table at host address `pt`
/// maps guest-linear [0, GUEST_MEM_SIZE) to `base + linear` (SDM Vol. 3A 5.3).
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
/// except reads of IA32_TSC (SDM Vol. 3C 25.6.4, 25.6.9).
fn write_bitmaps() -> Result<(), SetupError> {
    let io = memory::alloc_pages(2);
    io.fill(0xff);
    let msr = memory::alloc_pages(1);
    msr.fill(0xff);
    let pass = PASS_THROUGH_MSR as usize;
    msr[pass / 8] &= !(1 << (pass % 8)); // the read bitmap for low MSRs is at offset 0
    vmcs::write(ctl::IO_BITMAP_A_ADDR_FULL, io.as_ptr() as u64)?;
    vmcs::write(ctl::IO_BITMAP_B_ADDR_FULL, io.as_ptr() as u64 + memory::PAGE_SIZE as u64)?;
    vmcs::write(ctl::MSR_BITMAPS_ADDR_FULL, msr.as_ptr() as u64)
}

/// TIME_BUDGET_US of TSC time in preemption-timer units: the timer counts
/// down every 2^IA32_VMX_MISC[4:0] TSC ticks (SDM Vol. 3C 26.5.1).
fn preemption_timer_value(d: &VmxGlobalData) -> u64 {
    let rate = d.misc & 0x1f;
    (tsc::micros_to_ticks(TIME_BUDGET_US) >> rate).min(u32::MAX as u64)
}
