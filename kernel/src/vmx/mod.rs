//! VMX: global data, VMX root operation, the guest.

mod dump;
mod enter;
mod ept;
mod exits;
mod guest;
mod instructions;
mod layout;
mod vmcs;
mod vmxcap;

pub use enter::{enter, leave};
pub use guest::run as run_guest;

/// Leave VMX operation on a CPU that is being parked at the end of a failed
/// run (best effort: the CPU halts right after).
pub fn leave_for_park() {
    // SAFETY: only called when this CPU's status says it is in VMX root operation.
    let _ = unsafe { instructions::vmxoff() };
}
