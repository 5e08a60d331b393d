//! `vmxcap` on the command line: every VMX capability MSR, decoded, on the boot CPU.

use alloc::string::String;
use hvlogic::vmxcap::{write_vmxcap, VmxCapMsrs};
use log::info;

pub fn print(msrs: &VmxCapMsrs) {
    let mut text = String::new();
    let _ = write_vmxcap(&mut text, msrs);
    for line in text.lines() {
        info!("vmxcap: {line}");
    }
}
