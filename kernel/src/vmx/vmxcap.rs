//! `vmxcap` on the command line: every VMX capability MSR, decoded, on the boot CPU.

use alloc::string::String;
use hvlogic::vmxcap::{write_vmxcap, VmxCapMsrs};
use log::info;

pub fn print() {
    // SAFETY: called only when CPUID.01H:ECX[5]=1; `read` touches only MSRs that
    // the SDM says exist given the values read before them.
    let msrs = VmxCapMsrs::read(|msr| unsafe { x86::msr::rdmsr(msr) });
    let mut text = String::new();
    let _ = write_vmxcap(&mut text, &msrs);
    for line in text.lines() {
        info!("vmxcap: {line}");
    }
}
