//! The backend for a CPU whose extension this kernel was built without (a
//! flash payload for the other vendor's boards: `make payload`,
//! docs/coreboot.md#size). Every CPU ends its enter stage NO_VMX with the
//! reason on the boot CPU's log, so the run goes on as on a machine without
//! hardware virtualization: SUMMARY `result=NO_VMX`, and an OS boots natively.

use super::{kind, record_enter, Backend, Kind, NotEntered};
use crate::linux::Handoff;
use crate::pcb::Pcb;
use hvlogic::memmap::Range;
use hvlogic::power::Ports;

pub struct Unbuilt;

/// What the log calls the missing backend, and the kernel feature that builds it.
fn missing() -> (&'static str, &'static str) {
    match kind() {
        Kind::Vmx => ("VMX", "vmx"),
        Kind::Svm => ("SVM", "svm"),
    }
}

impl Backend for Unbuilt {
    const ENTER_STAGE: &'static str = "virt-enter";
    const LEAVE_STAGE: &'static str = "virt-leave";

    fn enter(pcb: &Pcb) {
        if pcb.is_bsp {
            let (name, feature) = missing();
            let offered = if super::offered() { "offers" } else { "does not offer" };
            log::error!(
                "virt: this CPU {offered} {name}, and this kernel was built without its {name} backend (the `{feature}` feature): no hardware virtualization"
            );
        }
        record_enter(pcb, Err(NotEntered::Unavailable));
    }

    fn leave(_: &Pcb) {}

    fn run_guest(_: &Pcb) {}

    fn os_unsupported(_: &Pcb) -> Option<&'static str> {
        Some(match super::offered() {
            true => "this kernel was built without the backend this CPU needs",
            false => "this CPU has no hardware virtualization (and this kernel was built without its backend)",
        })
    }

    fn prepare_os(_: &Pcb, _: &[Range], _: &[Range], _: Ports, _: u64) {}

    fn arm_os_ap(_: &Pcb) {}

    fn launch_os(_: &'static Pcb, _: &Handoff) -> ! {
        crate::run::fail_and_end("no backend in this build can run the OS as a guest")
    }

    fn restart_os(_: &'static Pcb, _: u8) -> ! {
        crate::run::fail_and_end("no backend in this build can restart the OS's processor")
    }

    fn nmi_in_host(_: &Pcb) {}
}
