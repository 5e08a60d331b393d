//! The seed's `vmx_operation_enter` in AMD's terms (APM Vol. 2 §15.4
//! "Enabling SVM"): CPUID Fn8000_0001_ECX.SVM; CPUID Fn8000_000A, SVM's
//! features, into the PCB (what `get_vmx_global_data` gathers for VMX);
//! VM_CR in place of IA32_FEATURE_CONTROL; the host's mode; a host save area
//! for VM_HSAVE_PA in place of the VMXON region; EFER.SVME in place of VMXON.

use super::instructions;
use crate::pcb::{Pcb, CPU_STATUS_VMXON, CPU_STATUS_VMX_ROOT_REACHED};
use crate::run;
use crate::virt::NotEntered;
use hvlogic::cmdline::Inject;
use hvlogic::svm::features::{write_svmcap, SvmFeatures};
use hvlogic::svm::vm_cr::{self, Decision, VM_CR};
use hvlogic::svm::{EFER_SVME, VM_HSAVE_PA};
use log::{debug, error, info, warn};
use x86::msr::{rdmsr, wrmsr, IA32_EFER};

/// Stage work: turn SVM on on this CPU.
pub fn enter(pcb: &Pcb) {
    crate::virt::record_enter(pcb, try_enter(pcb))
}

fn try_enter(pcb: &Pcb) -> Result<(), NotEntered> {
    // 1. CPUID Fn8000_0001_ECX[2]. Without it no SVM MSR is touched.
    if !crate::virt::svm_offered() {
        error!("SVM not supported (CPUID Fn8000_0001_ECX[2]=0)");
        return Err(NotEntered::Unavailable);
    }
    // 2. CPUID Fn8000_000A: the revision, the ASIDs, the features.
    let features = if raw_cpuid::cpuid!(0x8000_0000).eax >= 0x8000_000a {
        let r = raw_cpuid::cpuid!(0x8000_000a);
        SvmFeatures::from_cpuid(r.eax, r.ebx, r.edx)
    } else {
        SvmFeatures::default()
    };
    let mut own = pcb.own();
    own.svm = features;
    debug!("svm: CPUID Fn8000_000A: {}", features.summary());

    // 3. VM_CR, as the seed treats IA32_FEATURE_CONTROL (hvlogic::svm::vm_cr).
    // SAFETY: VM_CR exists on every CPU with SVM; a read that faults (an
    // emulator without it) is caught and read as 0, SVM allowed.
    let found = unsafe { crate::msr::read(VM_CR) };
    if found.is_none() {
        warn!("svm: VM_CR (MSR C001_0114h) cannot be read; taken as 0 (SVM allowed, unlocked)");
    }
    let found = found.unwrap_or(0);
    let vm_cr = match run::options().inject {
        Some(Inject::SvmLockedOff) => {
            let off = found | vm_cr::LOCK | vm_cr::SVMDIS;
            info!("inject: VM_CR={found:#x}; simulating firmware that disabled SVM and locked it at {off:#x}");
            off
        }
        _ => found,
    };
    own.vm_cr = vm_cr;
    if pcb.is_bsp && run::options().svmcap {
        let mut text = alloc::string::String::new();
        let _ = write_svmcap(&mut text, &features, vm_cr);
        for line in text.lines() {
            info!("svmcap: {line}");
        }
    }
    match vm_cr::decide(vm_cr, features.has(hvlogic::svm::features::edx::SVML)) {
        Decision::Enabled { locked } => {
            debug!("svm: VM_CR={vm_cr:#x}: SVMDIS clear{}", if locked { ", locked by firmware" } else { ", unlocked" })
        }
        Decision::Write(new) => {
            // SAFETY: VM_CR is unlocked, so SVMDIS may be written; only it changes.
            unsafe { wrmsr(VM_CR, new) };
            own.vm_cr = new;
            debug!("svm: VM_CR {vm_cr:#x} -> {new:#x}: SVMDIS cleared (unlocked)");
        }
        Decision::LockedOff { key } => {
            error!(
                "SVM disabled by firmware (VM_CR={vm_cr:#x}): locked with SVMDIS set; setting EFER.SVME would raise #GP{}",
                if key { " (the CPU has SVM-Lock: only firmware's SVM_KEY unlocks it)" } else { "" }
            );
            return Err(NotEntered::Unavailable);
        }
    }

    // 4. The host's mode: VMRUN runs at CPL 0 in protected mode; this kernel is in 64-bit mode.
    let m = crate::virt::mode::HostMode::read();
    if !m.ok() {
        error!(
            "SVM needs 64-bit mode at CPL 0 here: EFER={:#x} CS={:#x} (L={}) RFLAGS.VM={} CPL={}",
            m.efer, m.cs, m.cs_l as u8, m.v86 as u8, m.cpl
        );
        return Err(NotEntered::Failed);
    }

    // 5. The host save area (VM_HSAVE_PA, 4 KiB aligned, within the
    // physical-address width), then EFER.SVME.
    let area = crate::memory::alloc_pages(1).as_ptr() as u64;
    if area >> own.maxphyaddr != 0 {
        error!("host save area at {area:#x} is beyond the {}-bit physical-address width", own.maxphyaddr);
        return Err(NotEntered::Failed);
    }
    // SAFETY: VM_HSAVE_PA takes a 4 KiB-aligned physical address; the page is
    // this CPU's for as long as SVM is on.
    unsafe {
        wrmsr(VM_HSAVE_PA, area);
        wrmsr(IA32_EFER, rdmsr(IA32_EFER) | EFER_SVME);
    }
    own.host_save_area = area;
    // The host's FS, GS, TR, LDTR and system-call MSRs, kept for VMLOAD after
    // every #VMEXIT (a guest's VMLOAD replaces them).
    let host_state = crate::memory::alloc_pages(1).as_ptr() as u64;
    // SAFETY: EFER.SVME is set, CPL 0, and the page is this CPU's.
    unsafe { instructions::vmsave(host_state) };
    own.host_state = host_state;
    pcb.set(CPU_STATUS_VMXON | CPU_STATUS_VMX_ROOT_REACHED);
    info!("svm on (EFER.SVME set; SVM revision {}, {} ASIDs)", features.revision, features.nasid);
    debug!("svm: host save area (VM_HSAVE_PA) at {area:#x}, host state (VMSAVE) at {host_state:#x}");
    Ok(())
}

/// Stage work: clear EFER.SVME and VM_HSAVE_PA, so a later loader finds a clean CPU.
pub fn leave(pcb: &Pcb) {
    if !pcb.has(CPU_STATUS_VMXON) {
        return;
    }
    // SAFETY: no guest runs on this CPU any more; EFER.SVME and VM_HSAVE_PA may be cleared.
    unsafe {
        wrmsr(IA32_EFER, rdmsr(IA32_EFER) & !EFER_SVME);
        wrmsr(VM_HSAVE_PA, 0);
    }
    pcb.clear(CPU_STATUS_VMXON);
    info!("svm off, EFER.SVME cleared");
}
