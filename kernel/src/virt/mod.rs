//! Hardware virtualization, whichever kind the CPU has: Intel's VMX (`vmx/`)
//! or AMD's SVM (`svm/`), behind one small interface (`Backend`). The boot
//! flow in main.rs calls only this module; what differs between the two
//! lives in the backends, and what does not (the proof guest's program and
//! verdicts, the CPUID guests see, the OS guest's memory view, the nested
//! page tables' shape, exit statistics and the SUMMARY) is written once,
//! here and in `hvlogic`.
//!
//! The backend is chosen once, on the boot CPU: the extension CPUID offers
//! (VMX in CPUID.01H:ECX[5], SVM in Fn8000_0001_ECX[2]); where it offers
//! neither, the vendor's (CPUID leaf 0: SVM on AMD and Hygon, VMX on every
//! other), so that NO_VMX is named in that vendor's terms. No real CPU offers
//! both; one that did would get VMX.

pub mod cpuid;
pub mod fuzz;
pub mod guest_image;
pub mod layout;
pub mod mode;
pub mod nested;
pub mod os;
pub mod os_memory;
pub mod proof;
pub mod regs;
mod unbuilt;

pub mod backend;

use crate::linux::Handoff;
use crate::pcb::Pcb;
use hvlogic::memmap::Range;
use hvlogic::power::Ports;
use hvlogic::startup::Vendor;
use hvlogic::summary::Virt;
use spin::Once;

/// What a backend provides: the seed's steps in its terms, and the guests.
/// Every function runs on the CPU whose PCB it is given (or, for the OS
/// set-up, on the boot CPU), as a stage of `smp::run_on_all` or from the
/// exception handler.
pub trait Backend {
    /// The stage names the boot flow's log and timeouts use.
    const ENTER_STAGE: &'static str;
    const LEAVE_STAGE: &'static str;
    /// Turn hardware virtualization on (VMXON; EFER.SVME with a host save
    /// area), or mark the CPU NO_VMX or failed, with the reason logged.
    fn enter(pcb: &Pcb);
    /// Turn it off again, so a later loader or OS finds a clean CPU.
    fn leave(pcb: &Pcb);
    /// This CPU's guest stage: the proof guest, or `guest=`/`entryfuzz=`'s.
    fn run_guest(pcb: &Pcb);
    /// Why the OS cannot run as the guest of every CPU, if it cannot.
    fn os_unsupported(bsp: &Pcb) -> Option<&'static str>;
    /// On the boot CPU, before any CPU runs the OS: what every CPU's OS guest
    /// shares (the nested page tables with `holes` blanked, the intercept maps).
    fn prepare_os(bsp: &Pcb, holes: &[Range], ram: &[Range], ports: Ports, memory_top: u64);
    /// Stage work for an application processor: its OS guest set up, then
    /// virtualization off and `CPU_STATUS_OS` set, halted for the boot CPU's
    /// INIT (`os::send_aps_to_wait_for_sipi`); marked failed if set-up fails.
    fn arm_os_ap(pcb: &Pcb);
    /// The boot CPU enters the OS at its entry; never returns.
    fn launch_os(bsp: &'static Pcb, h: &Handoff) -> !;
    /// An AP the OS started (`os::restart`): virtualization on again, then
    /// the OS in real mode at `vector`:0000 with the state INIT leaves.
    fn restart_os(pcb: &'static Pcb, vector: u8) -> !;
    /// An NMI reached the host while this CPU runs the OS guest.
    fn nmi_in_host(pcb: &Pcb);
}

/// Why a CPU did not turn hardware virtualization on.
pub enum NotEntered {
    /// Absent or locked off by firmware: result NO_VMX.
    Unavailable,
    /// Anything else: result FAIL.
    Failed,
}

/// A backend's enter stage, recorded in this CPU's status.
pub fn record_enter(pcb: &Pcb, result: Result<(), NotEntered>) {
    match result {
        Ok(()) => {}
        Err(NotEntered::Unavailable) => pcb.set(crate::pcb::CPU_STATUS_NO_VMX),
        Err(NotEntered::Failed) => pcb.set(crate::pcb::CPU_STATUS_FAILED),
    }
}

/// Which backend this machine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vmx,
    Svm,
}

static KIND: Once<Kind> = Once::new();

/// The backend, from the boot CPU's vendor (decided at the first call, on the boot CPU).
pub fn kind() -> Kind {
    *KIND.call_once(|| {
        let r = raw_cpuid::cpuid!(0);
        let vmx = raw_cpuid::cpuid!(1).ecx & (1 << 5) != 0;
        match (Vendor::from_cpuid0(r.ebx, r.edx, r.ecx), vmx, svm_offered()) {
            (_, true, _) => Kind::Vmx,
            (_, false, true) | (Vendor::Amd | Vendor::Hygon, false, false) => Kind::Svm,
            (Vendor::Intel | Vendor::Other, false, false) => Kind::Vmx,
        }
    })
}

/// SUMMARY's `virt=` for this backend (shown where a CPU had it on).
pub fn summary_virt() -> Virt {
    match KIND.get() {
        Some(Kind::Vmx) => Virt::Vmx,
        Some(Kind::Svm) => Virt::Svm,
        None => Virt::None,
    }
}

/// Whether CPUID offers SVM (Fn8000_0001_ECX[2]).
pub fn svm_offered() -> bool {
    raw_cpuid::cpuid!(0x8000_0000).eax >= 0x8000_0001
        && raw_cpuid::cpuid!(0x8000_0001).ecx & hvlogic::svm::CPUID_80000001_ECX_SVM != 0
}

/// Whether the boot CPU's CPUID offers this backend's extension (for the heap
/// estimate, before any CPU has looked closer).
pub fn offered() -> bool {
    match kind() {
        Kind::Vmx => raw_cpuid::cpuid!(1).ecx & (1 << 5) != 0,
        Kind::Svm => svm_offered(),
    }
}

/// Turn hardware virtualization off on a CPU that is being parked (best
/// effort: the CPU halts right after), once: only where this CPU's status
/// says it is on, which this clears (a CPU can be parked twice: by its own
/// end, then by the ending CPU's NMI; VMXOFF or STGI a second time is #UD).
pub fn leave_for_park() {
    let pcb = crate::pcb::this_cpu();
    if !pcb.has(crate::pcb::CPU_STATUS_VMXON) {
        return;
    }
    pcb.clear(crate::pcb::CPU_STATUS_VMXON);
    match kind() {
        Kind::Vmx => {
            // SAFETY: this CPU is in VMX root operation (its status said so).
            let _ = unsafe { crate::vmx::instructions::vmxoff() };
        }
        // SAFETY: no guest runs on this CPU any more (it is being parked).
        Kind::Svm => unsafe { crate::svm::instructions::leave() },
    }
}

/// How GUEST-END's table names counter slot `slot` of `Pcb::exits`: VMX's
/// basic exit reason in decimal and its SDM name, or SVM's exit code in hex
/// and its APM name.
pub fn exit_label(slot: usize) -> (alloc::string::String, &'static str) {
    use hvlogic::svm::exit_code;
    match kind() {
        Kind::Vmx => (alloc::format!("{slot}"), hvlogic::exit_reason::ExitReason(slot as u32).name()),
        Kind::Svm => {
            let code = exit_code::code_of_counter(slot);
            (alloc::format!("{code:#x}"), exit_code::name(code))
        }
    }
}
