//! The SUMMARY line: the contract every run ends with, read by CI, scripts and people.
//!
//! `SUMMARY cpus=<enumerated> online=<running> vmx_root=<CPUs in VMX root>
//!  guests_ok=<guests that ended as intended> result=<PASS|NO_VMX|FAIL>
//!  virt=<vmx|svm|none>`
//!
//! The field names predate the AMD backend and stay, because CI scripts
//! parse them: `vmx_root` counts CPUs where hardware virtualization was on
//! (VMX root operation, or EFER.SVME with a host save area), `NO_VMX` means
//! neither VMX nor SVM was usable, and `virt` says which one ran.

use core::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunResult {
    Pass,
    NoVmx,
    Fail,
}

impl RunResult {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunResult::Pass => "PASS",
            RunResult::NoVmx => "NO_VMX",
            RunResult::Fail => "FAIL",
        }
    }

    /// The value written to QEMU's isa-debug-exit port; QEMU then exits with
    /// status `(value << 1) | 1`: 33 for PASS, 35 for NO_VMX, 37 for FAIL.
    pub const fn qemu_exit_value(self) -> u32 {
        match self {
            RunResult::Pass => 0x10,
            RunResult::NoVmx => 0x11,
            RunResult::Fail => 0x12,
        }
    }
}

/// What the run counted on its way to the end.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Counts {
    /// Processors enumerated (MADT, or the boot CPU alone).
    pub cpus: u32,
    /// Processors running this kernel (checked in).
    pub online: u32,
    /// Processors that reached VMX root operation.
    pub vmx_root: u32,
    /// Guests that ended as intended.
    pub guests_ok: u32,
    /// Processors that found VMX unavailable: not in CPUID, or locked off by firmware.
    pub no_vmx: u32,
    /// Something failed: an exception, a panic, an AP that never answered, a
    /// VMX or guest failure.
    pub failed: bool,
    /// Which hardware virtualization the CPUs use.
    pub virt: Virt,
}

/// Which hardware virtualization a run uses: the `virt=` field.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Virt {
    /// Intel VMX (and any other vendor's VMX).
    Vmx,
    /// AMD SVM.
    Svm,
    #[default]
    None,
}

impl Virt {
    pub const fn as_str(self) -> &'static str {
        match self {
            Virt::Vmx => "vmx",
            Virt::Svm => "svm",
            Virt::None => "none",
        }
    }
}

impl Counts {
    pub fn result(&self) -> RunResult {
        if self.failed || self.online == 0 {
            RunResult::Fail
        } else if self.no_vmx == self.online && self.vmx_root == 0 {
            RunResult::NoVmx
        } else if self.vmx_root == self.online && self.guests_ok == self.online {
            RunResult::Pass
        } else {
            RunResult::Fail
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SUMMARY cpus={} online={} vmx_root={} guests_ok={} result={} virt={}",
            self.cpus,
            self.online,
            self.vmx_root,
            self.guests_ok,
            self.result().as_str(),
            if self.vmx_root > 0 { self.virt.as_str() } else { "none" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn c(cpus: u32, online: u32, vmx_root: u32, guests_ok: u32, no_vmx: u32, failed: bool) -> Counts {
        Counts { cpus, online, vmx_root, guests_ok, no_vmx, failed, virt: Virt::Vmx }
    }

    #[test]
    fn line_format_is_exact() {
        assert_eq!(
            format!("{}", c(4, 4, 4, 4, 0, false)),
            "SUMMARY cpus=4 online=4 vmx_root=4 guests_ok=4 result=PASS virt=vmx"
        );
        assert_eq!(
            format!("{}", Counts { virt: Virt::Svm, ..c(2, 2, 2, 2, 0, false) }),
            "SUMMARY cpus=2 online=2 vmx_root=2 guests_ok=2 result=PASS virt=svm"
        );
        assert_eq!(
            format!("{}", Counts { virt: Virt::Svm, ..c(2, 2, 0, 0, 2, false) }),
            "SUMMARY cpus=2 online=2 vmx_root=0 guests_ok=0 result=NO_VMX virt=none",
            "no CPU had it on"
        );
    }

    #[test]
    fn results() {
        assert_eq!(c(4, 2, 2, 2, 0, false).result(), RunResult::Pass, "maxcpus leaves CPUs offline");
        assert_eq!(c(1, 1, 0, 0, 1, false).result(), RunResult::NoVmx);
        assert_eq!(c(8, 8, 0, 0, 8, false).result(), RunResult::NoVmx);
        assert_eq!(c(2, 2, 0, 0, 1, false).result(), RunResult::Fail, "one CPU without VMX, one failed otherwise");
        assert_eq!(c(4, 4, 4, 3, 0, false).result(), RunResult::Fail, "a guest did not end as intended");
        assert_eq!(c(4, 4, 3, 3, 0, false).result(), RunResult::Fail);
        assert_eq!(c(1, 1, 1, 1, 0, true).result(), RunResult::Fail, "an exception always fails");
        assert_eq!(c(1, 1, 0, 0, 1, true).result(), RunResult::Fail);
        assert_eq!(c(0, 0, 0, 0, 0, false).result(), RunResult::Fail);
    }

    #[test]
    fn qemu_exit_values_are_distinct() {
        let v = [RunResult::Pass, RunResult::NoVmx, RunResult::Fail].map(RunResult::qemu_exit_value);
        assert!(v[0] != v[1] && v[1] != v[2] && v[0] != v[2]);
        assert!(v.iter().all(|x| (x << 1) | 1 != 1), "never QEMU's own exit status 1");
    }
}
