//! `vmx_operation_enter` of the book (lib/VMX/VmxInit.asm), in the order of the
//! seed: CPUID, get_vmx_global_data, IA32_FEATURE_CONTROL, the preconditions of
//! VMXON, the fixed CR0/CR4 bits, the VMXON region, VMXON.

use super::instructions::{self, VmFail};
use crate::memory;
use crate::pcb::{Own, Pcb, CPU_STATUS_FAILED, CPU_STATUS_VMXON, CPU_STATUS_VMX_ROOT_REACHED};
use crate::run;
use crate::virt::NotEntered;
use core::fmt;
use hvlogic::cmdline::Inject;
use hvlogic::feature_control::{self, Decision, IA32_FEATURE_CONTROL};
use hvlogic::fixed::{self, cr4::VMXE, Fixed};
use hvlogic::vmx_global::{self, basic, from_capabilities, VmxGlobalData};
use hvlogic::vmxcap::VmxCapMsrs;
use hvlogic::vmxcap::{cr0_bit_name, cr4_bit_name};
use log::{debug, error, info, warn};
use x86::msr::{rdmsr, wrmsr};
use x86_64::registers::control::{Cr0, Cr4};

/// CPUID.01H:ECX (SDM Vol. 2A Table 3-10 "More on Feature Information Returned
/// in the ECX Register").
const CPUID_01_ECX_VMX: u32 = 1 << 5;
const CPUID_01_ECX_SMX: u32 = 1 << 6;
/// TXT public space register TXT.STS, bit 0 SENTER.DONE.STS (Intel TXT MLE
/// Developer's Guide, Appendix B.1): the platform ran GETSEC[SENTER].
const TXT_STS: u64 = 0xfed3_0000;

static FEATURE_CONTROL_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Stage work: enter VMX root operation on this CPU.
pub fn enter(pcb: &Pcb) {
    crate::virt::record_enter(pcb, try_enter(pcb))
}

fn try_enter(pcb: &Pcb) -> Result<(), NotEntered> {
    let mut own = pcb.own();
    // 1. CPUID.01H:ECX[5], cached in PCB.FeatureEcx. Without it no VMX MSR is touched.
    if own.feature_ecx & CPUID_01_ECX_VMX == 0 {
        error!("VMX not supported (CPUID.01H:ECX[5]=0)");
        return Err(NotEntered::Unavailable);
    }
    let smx = own.feature_ecx & CPUID_01_ECX_SMX != 0;
    debug!("vmx: CPUID.01H:ECX={:#010x}: VMX supported, SMX {}", own.feature_ecx, yes_no(smx));

    // 2. get_vmx_global_data, steps 1-6 and 8-9.
    // SAFETY: CPUID says VMX exists; `read` touches only the capability MSRs
    // that the values read before them say exist.
    let capabilities = VmxCapMsrs::read(|msr| unsafe { rdmsr(msr) });
    own.vmx = from_capabilities(&capabilities);
    log_global_data(&own.vmx);
    if pcb.is_bsp && run::options().vmxcap {
        super::vmxcap::print(&capabilities);
    }

    // 3. IA32_FEATURE_CONTROL, as the seed does it.
    let inside_smx = smx && Cr4::read_raw() & fixed::cr4::SMXE != 0 && txt_senter_done();
    // One CPU at a time: where the MSR is shared by a core's threads, two
    // read-modify-writes would race and the second WRMSR would hit the lock (#GP).
    let serialized = FEATURE_CONTROL_LOCK.lock();
    let simulated_fc = match run::options().inject {
        Some(Inject::FcLockedOff) => inject_feature_control_locked_off(),
        _ => None,
    };
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX or SMX (SDM Vol. 4 Table 2-2 "IA-32
    // Architectural MSRs").
    let fc = simulated_fc.unwrap_or_else(|| unsafe { rdmsr(IA32_FEATURE_CONTROL) });
    let fc_now = match feature_control::decide(fc, smx, inside_smx) {
        Decision::Write(new) => {
            // SAFETY: unlocked, so the write is allowed; only the lock and VMX enable bits change.
            unsafe { wrmsr(IA32_FEATURE_CONTROL, new) };
            debug!(
                "vmx: IA32_FEATURE_CONTROL {fc:#x} -> {new:#x}: locked, VMX outside SMX on{}",
                if new & feature_control::VMX_INSIDE_SMX != 0 { ", VMX inside SMX on" } else { "" }
            );
            new
        }
        Decision::LockedOn => {
            debug!("vmx: IA32_FEATURE_CONTROL={fc:#x}: locked by firmware with VMX enabled");
            fc
        }
        Decision::LockedOff { missing } => {
            error!("VMX disabled by firmware (IA32_FEATURE_CONTROL={fc:#x}): locked with bit {} ({}) clear; VMXON would raise #GP",
                missing.trailing_zeros(),
                if missing == feature_control::VMX_INSIDE_SMX { "enable VMX inside SMX" } else { "enable VMX outside SMX" });
            return Err(NotEntered::Unavailable);
        }
    };
    drop(serialized);
    // Step 7, only with ENABLE_VMX_INSIDE_SMX: SMX mode must then be on for VMXON.
    if cfg!(feature = "enable-vmx-inside-smx") && fc_now & feature_control::VMX_INSIDE_SMX != 0 {
        own.vmx.cr4_fixed_mask |= fixed::cr4::SMXE;
        debug!("vmx: ENABLE_VMX_INSIDE_SMX: CR4.SMXE joins Cr4FixedMask");
    }

    // 4. Preconditions of VMXON, then CR0/CR4 with the fixed bits applied.
    check_operating_mode()?;
    apply_fixed_bits(&own)?;

    // 5. The VMXON region, then VMXON.
    let region = vmxon_region(&own.vmx, own.maxphyaddr)?;
    // SAFETY: CPL 0 in 64-bit mode, CR4.VMXE set, fixed bits applied, IA32_FEATURE_CONTROL
    // locked with VMX on, and the region is a 4 KiB-aligned WB page with the revision identifier.
    match unsafe { instructions::vmxon(region) } {
        Ok(()) => {}
        Err(e) => {
            error!("VMXON failed: {e}");
            return Err(NotEntered::Failed);
        }
    }
    own.vmxon_region = region;
    pcb.set(CPU_STATUS_VMXON | CPU_STATUS_VMX_ROOT_REACHED);
    info!("vmxon ok (revision identifier {:#x})", basic::revision_id(own.vmx.vmx_basic));
    debug!("vmx: VMXON region at {region:#x}");
    invalidate_ept_and_vpid(&own.vmx);

    if run::options().inject == Some(Inject::VmxonTwice) {
        inject_vmxon_twice(&own);
    }
    Ok(())
}

/// `inject=fc-locked-off`: lock IA32_FEATURE_CONTROL with VMX off, as firmware
/// that disables VMX does. Where the MSR is already locked (Bochs's BIOS locks
/// it with VMX on), it cannot be changed until reset, so the lock-off is
/// simulated: the returned value stands in for the MSR, and everything after
/// runs as it would on such a machine.
fn inject_feature_control_locked_off() -> Option<u64> {
    // SAFETY: IA32_FEATURE_CONTROL exists (CPUID says VMX); written only while unlocked.
    let fc = unsafe { rdmsr(IA32_FEATURE_CONTROL) };
    let off = (fc | feature_control::LOCK) & !(feature_control::VMX_OUTSIDE_SMX | feature_control::VMX_INSIDE_SMX);
    if fc & feature_control::LOCK != 0 {
        info!("inject: IA32_FEATURE_CONTROL={fc:#x} is already locked; simulating firmware that locked it at {off:#x}");
        return Some(off);
    }
    // SAFETY: unlocked; this only locks the MSR with the VMX enable bits clear.
    unsafe { wrmsr(IA32_FEATURE_CONTROL, off) };
    info!("inject: IA32_FEATURE_CONTROL locked with VMX off ({fc:#x} -> {off:#x})");
    None
}

fn log_global_data(d: &VmxGlobalData) {
    debug!(
        "vmx: IA32_VMX_BASIC={:#x}: revision {:#x}, region {} bytes, VMCS memory type {}, TRUE controls {}",
        d.vmx_basic,
        basic::revision_id(d.vmx_basic),
        basic::region_size(d.vmx_basic),
        d.vmcs_memory_type,
        yes_no(d.true_flag)
    );
    debug!(
        "vmx: controls{}: pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}",
        if d.true_flag { " (TRUE MSRs)" } else { "" },
        d.pin_based_ctls,
        d.processor_based_ctls,
        d.processor_based_ctls2,
        d.exit_ctls,
        d.entry_ctls
    );
    debug!(
        "vmx: misc {:#x}, EPT/VPID cap {:#x}, VMFUNC {:#x}, VMCS enum {:#x}",
        d.misc, d.ept_vpid_cap, d.vm_function, d.vmcs_enum
    );
    debug!("vmx: Cr0FixedMask {:#x} (fixed0 {:#x}, fixed1 {:#x}), Cr4FixedMask {:#x} (fixed0 {:#x}, fixed1 {:#x}), EPT memory type {}",
        d.cr0_fixed_mask, d.cr0_fixed0, d.cr0_fixed1, d.cr4_fixed_mask, d.cr4_fixed0, d.cr4_fixed1, d.ept_memory_type);
}

/// 64-bit mode at CPL 0 (`crate::virt::mode`; SDM Vol. 3C "VMXON—Enter VMX
/// Operation": #UD outside 64-bit/protected mode, #GP at CPL > 0).
fn check_operating_mode() -> Result<(), NotEntered> {
    let m = crate::virt::mode::HostMode::read();
    debug!(
        "vmx: mode check: IA32_EFER.LMA={} CS.L={} RFLAGS.VM={} CPL={}",
        m.lma() as u8,
        m.cs_l as u8,
        m.v86 as u8,
        m.cpl
    );
    if !m.ok() {
        error!(
            "VMXON needs 64-bit mode at CPL 0: IA32_EFER={:#x} CS={:#x} (L={}) RFLAGS.VM={} CPL={}",
            m.efer, m.cs, m.cs_l as u8, m.v86 as u8, m.cpl
        );
        return Err(NotEntered::Failed);
    }
    Ok(())
}

/// CR0 = (CR0 | Cr0Fixed0) & Cr0Fixed1; CR4 = (CR4 | Cr4FixedMask | VMXE) & Cr4Fixed1
/// (SDM Vol. 3C §24.8 "Restrictions on VMX Operation"), refusing changes a running
/// 64-bit host cannot make, each by name.
fn apply_fixed_bits(own: &Own) -> Result<(), NotEntered> {
    let d = &own.vmx;
    let cr0_fixed = Fixed { fixed0: d.cr0_fixed0, fixed1: d.cr0_fixed1 };
    let cr4_fixed = Fixed { fixed0: d.cr4_fixed0 | d.cr4_fixed_mask | VMXE, fixed1: d.cr4_fixed1 };
    let (leaf7_ebx, leaf7_ecx) = {
        let r = raw_cpuid::cpuid!(7, 0);
        (r.ebx, r.ecx)
    };
    let supported = fixed::cr4_supported(own.feature_ecx, own.feature_edx, leaf7_ebx, leaf7_ecx);

    let cr0 = Cr0::read_raw();
    let cr4 = Cr4::read_raw();
    let adj0 = cr0_fixed.apply(cr0);
    let adj4 = cr4_fixed.apply(cr4);
    let bad0 = cr0_fixed.contradictions() | fixed::cr0_refusals(&adj0);
    let bad4 = cr4_fixed.contradictions() | fixed::cr4_refusals(&adj4, supported);
    if bad0 != 0 || bad4 != 0 {
        if bad0 != 0 {
            error!(
                "CR0 cannot take the VMX fixed bits (CR0={cr0:#x}, FIXED0={:#x}, FIXED1={:#x}): {}",
                d.cr0_fixed0,
                d.cr0_fixed1,
                Names(bad0, cr0_bit_name)
            );
        }
        if bad4 != 0 {
            error!(
                "CR4 cannot take the VMX fixed bits (CR4={cr4:#x}, FIXED0={:#x}, FIXED1={:#x}): {}",
                d.cr4_fixed0,
                d.cr4_fixed1,
                Names(bad4, cr4_bit_name)
            );
        }
        return Err(NotEntered::Failed);
    }
    // SAFETY: the new values differ only in bits checked above (none of PE, PG,
    // PAE, LA57; only CR4 bits this CPU implements).
    unsafe {
        Cr0::write_raw(adj0.value);
        Cr4::write_raw(adj4.value);
    }
    debug!(
        "vmx: CR0 {cr0:#x} -> {:#x} (set: {}; cleared: {})",
        adj0.value,
        Names(adj0.set, cr0_bit_name),
        Names(adj0.cleared, cr0_bit_name)
    );
    debug!(
        "vmx: CR4 {cr4:#x} -> {:#x} (set: {}; cleared: {})",
        adj4.value,
        Names(adj4.set, cr4_bit_name),
        Names(adj4.cleared, cr4_bit_name)
    );
    Ok(())
}

/// The VMXON region (`super::new_region`), checked against IA32_VMX_BASIC:
/// its size, its memory type, and the physical-address width (SDM Vol. 3D §A.1
/// "Basic VMX Information").
fn vmxon_region(d: &VmxGlobalData, maxphyaddr: u32) -> Result<u64, NotEntered> {
    let size = basic::region_size(d.vmx_basic) as usize;
    if size == 0 || size > memory::PAGE_SIZE {
        error!("IA32_VMX_BASIC={:#x} asks for a {size}-byte VMXON region; this kernel provides 4096", d.vmx_basic);
        return Err(NotEntered::Failed);
    }
    if d.vmcs_memory_type != vmx_global::MEMORY_TYPE_WB {
        error!("IA32_VMX_BASIC[53:50]={}: the CPU wants VMX regions of that memory type, but this kernel's memory is write-back",
            d.vmcs_memory_type);
        return Err(NotEntered::Failed);
    }
    let address = super::new_region(d);
    let limit = if basic::addresses_32bit_only(d.vmx_basic) { 32 } else { maxphyaddr };
    if address >> limit != 0 {
        error!("VMXON region at {address:#x} is beyond the {limit}-bit physical-address width (IA32_VMX_BASIC[48], CPUID.80000008H)");
        return Err(NotEntered::Failed);
    }
    Ok(address)
}

/// After VMXON: flush EPT- and VPID-tagged translations a previous user left,
/// but only with the instruction types IA32_VMX_EPT_VPID_CAP reports (the book
/// runs both unconditionally).
fn invalidate_ept_and_vpid(d: &VmxGlobalData) {
    match d.invept_all_contexts() {
        // SAFETY: in VMX root operation; INVEPT supports this type.
        Some(kind) => match unsafe { instructions::invept(kind, [0; 2]) } {
            Ok(()) => debug!("vmx: INVEPT (all contexts) done"),
            Err(e) => warn!("vmx: INVEPT (all contexts) failed: {e}"),
        },
        None => debug!("vmx: INVEPT skipped: not supported with the all-context type"),
    }
    match d.invvpid_all_contexts() {
        // SAFETY: in VMX root operation; INVVPID supports this type.
        Some(kind) => match unsafe { instructions::invvpid(kind, [0; 2]) } {
            Ok(()) => debug!("vmx: INVVPID (all contexts) done"),
            Err(e) => warn!("vmx: INVVPID (all contexts) failed: {e}"),
        },
        None => debug!("vmx: INVVPID skipped: not supported with the all-context type"),
    }
}

/// `inject=vmxon-twice`: VMXON again in VMX root operation. With a current VMCS
/// the CPU reports VMfailValid, error 15 (SDM Vol. 3C "VMXON—Enter VMX
/// Operation"); without one it could only say VMfailInvalid, so one is made
/// current first.
fn inject_vmxon_twice(own: &Own) {
    let vmcs = match super::load_new_vmcs(&own.vmx) {
        Ok(vmcs) => vmcs,
        Err(e) => {
            error!("inject: could not make a VMCS current: {e}");
            return;
        }
    };
    // SAFETY: VMXON in VMX root operation fails without side effects (SDM Vol. 3C "VMXON—Enter VMX
    // Operation").
    let second = unsafe { instructions::vmxon(own.vmxon_region) };
    match second {
        Err(e @ VmFail::Valid(_)) => info!("inject: second VMXON failed as the SDM says: {e}"),
        Err(e) => error!("inject: second VMXON failed, but not with VMfailValid: {e}"),
        Ok(()) => error!("inject: second VMXON succeeded in VMX root operation"),
    }
    // Still in VMX root: VMX instructions keep working.
    // SAFETY: in VMX root operation; `vmcs` is current.
    match unsafe { instructions::vmclear(vmcs) } {
        Ok(()) => info!("inject: still in VMX root operation (VMCLEAR succeeds)"),
        Err(e) => error!("inject: VMCLEAR after the second VMXON failed: {e}"),
    }
}

/// Stage work: leave VMX operation and clear CR4.VMXE, so a later loader finds a clean CPU.
pub fn leave(pcb: &Pcb) {
    if !pcb.has(CPU_STATUS_VMXON) {
        return;
    }
    // SAFETY: in VMX root operation; no VMCS is in use any more on this CPU.
    match unsafe { instructions::vmxoff() } {
        Ok(()) => {
            pcb.clear(CPU_STATUS_VMXON);
            // SAFETY: outside VMX operation CR4.VMXE may be cleared.
            unsafe { Cr4::write_raw(Cr4::read_raw() & !VMXE) };
            info!("vmxoff ok, CR4.VMXE cleared");
        }
        Err(e) => {
            error!("VMXOFF failed: {e}");
            pcb.set(CPU_STATUS_FAILED);
        }
    }
}

/// VMX root operation again on a CPU that INIT took out of it (an AP the OS
/// restarted, `os_guest::restart`): the fixed CR0/CR4 bits and VMXON with this
/// CPU's own region, as `enter` left them (IA32_FEATURE_CONTROL survives
/// INIT), then the flushes. Logs nothing (COM1 is the OS's); the caller
/// names a failure.
pub fn reenter(pcb: &Pcb) -> Result<(), VmFail> {
    // Copied out: an INIT before VMXON resets this CPU, which must not leave
    // the PCB's private state borrowed for its next start.
    let (d, region) = {
        let own = pcb.own();
        (own.vmx, own.vmxon_region)
    };
    let d = &d;
    let cr0 = Fixed { fixed0: d.cr0_fixed0, fixed1: d.cr0_fixed1 }.apply(Cr0::read_raw()).value;
    let cr4 =
        Fixed { fixed0: d.cr4_fixed0 | d.cr4_fixed_mask | VMXE, fixed1: d.cr4_fixed1 }.apply(Cr4::read_raw()).value;
    // SAFETY: the same fixed bits this CPU accepted at `enter` (checked there),
    // on the same kernel state, which the trampoline and `pcb::reactivate` rebuilt.
    unsafe {
        Cr0::write_raw(cr0);
        Cr4::write_raw(cr4);
    }
    // SAFETY: CPL 0 in 64-bit mode, CR4.VMXE and the fixed bits set,
    // IA32_FEATURE_CONTROL still locked with VMX on; the region `enter` checked.
    unsafe { instructions::vmxon(region) }?;
    pcb.set(CPU_STATUS_VMXON);
    if let Some(kind) = d.invept_all_contexts() {
        // SAFETY: in VMX root operation; INVEPT supports this type.
        unsafe { instructions::invept(kind, [0; 2]) }?;
    }
    if let Some(kind) = d.invvpid_all_contexts() {
        // SAFETY: in VMX root operation; INVVPID supports this type.
        unsafe { instructions::invvpid(kind, [0; 2]) }?;
    }
    Ok(())
}

/// Leave VMX operation on the way to wait-for-SIPI (`os_guest::leave_vmx`),
/// quietly: VMXOFF, CR4.VMXE cleared.
pub fn leave_quietly(pcb: &Pcb) -> Result<(), VmFail> {
    // SAFETY: in VMX root operation; the caller cleared its VMCS.
    unsafe { instructions::vmxoff() }?;
    pcb.clear(CPU_STATUS_VMXON);
    // SAFETY: outside VMX operation CR4.VMXE may be cleared.
    unsafe { Cr4::write_raw(Cr4::read_raw() & !VMXE) };
    Ok(())
}

/// Whether the platform completed GETSEC[SENTER] (only asked when CR4.SMXE=1).
fn txt_senter_done() -> bool {
    // SAFETY: the TXT public space is identity-mapped MMIO, readable on TXT
    // platforms; only read when CR4.SMXE shows SMX is in use.
    unsafe { core::ptr::read_volatile(TXT_STS as *const u64) & 1 != 0 }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The names of the bits set in a mask, for the log.
struct Names(u64, fn(u8) -> &'static str);

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut first = true;
        for bit in (0..64).filter(|b| self.0 & (1 << b) != 0) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}", (self.1)(bit))?;
        }
        Ok(())
    }
}
